//! Space allocation: which clusters hold data or metadata, which metadata pages are in use.
//!
//! The [`SpaceMap`] lives in memory only. Open rebuilds it by walking the committed trees and
//! [`SpaceMap::claim_cluster`]/[`SpaceMap::claim_page`]ing everything they reference. A second
//! claim of the same cluster or page is an error the checker reports ("owned twice"), and
//! whatever is not claimed is free, so nothing can leak across a crash.
//!
//! Shadow paging needs one more rule: space released by a commit may be reused only once that
//! commit's superblock is durable, because until then a crash brings back the previous tree,
//! which still references it. Releases therefore go to a pending list. When a commit is
//! captured, [`SpaceMap::seal`] moves that list aside, and once the commit is durable
//! [`SpaceMap::commit_durable`] hands exactly those releases back to the free pool (releases
//! made while the commit was being written wait for the next one).
//!
//! Metadata pages are carved out of metadata clusters: cluster 0 (whose first two pages are
//! the superblock slots) and clusters taken on demand. A metadata cluster whose last page is
//! released goes back to the cluster pool.

use std::collections::BTreeMap;

use crate::format::{PAGE_SIZE, PageNo};

/// A fixed-size bit set.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bits {
    words: Vec<u64>,
    len: u64,
    ones: u64,
}

impl Bits {
    fn new(len: u64) -> Bits {
        Bits {
            words: vec![0; len.div_ceil(64) as usize],
            len,
            ones: 0,
        }
    }

    fn get(&self, i: u64) -> bool {
        self.words[(i / 64) as usize] >> (i % 64) & 1 == 1
    }

    fn set(&mut self, i: u64) {
        debug_assert!(!self.get(i));
        self.words[(i / 64) as usize] |= 1 << (i % 64);
        self.ones += 1;
    }

    fn clear(&mut self, i: u64) {
        debug_assert!(self.get(i));
        self.words[(i / 64) as usize] &= !(1 << (i % 64));
        self.ones -= 1;
    }

    /// The first clear bit at or after `from`, wrapping around once.
    fn next_clear(&self, from: u64) -> Option<u64> {
        if self.ones == self.len {
            return None;
        }
        let n = self.words.len();
        let start = (from.min(self.len.saturating_sub(1)) / 64) as usize;
        for k in 0..=n {
            let w = (start + k) % n;
            let mut word = !self.words[w];
            if k == 0 {
                // Skip bits below `from` in the first word (they are seen on wrap-around).
                word &= u64::MAX << (from % 64);
            }
            while word != 0 {
                let bit = w as u64 * 64 + u64::from(word.trailing_zeros());
                if bit < self.len {
                    return Some(bit);
                }
                word &= word - 1;
            }
        }
        None
    }

    fn grow(&mut self, len: u64) {
        self.words.resize(len.div_ceil(64) as usize, 0);
        self.len = len;
    }
}

/// What went wrong claiming space while rebuilding the map.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum SpaceError {
    /// cluster {0} is referenced twice
    ClusterTwice(u64),
    /// {0} is referenced twice
    PageTwice(PageNo),
    /// cluster {0} holds both data and metadata pages
    Mixed(u64),
    /// cluster {cluster} is outside the store ({total} clusters)
    OutOfRange {
        /// The cluster named.
        cluster: u64,
        /// Clusters in the store.
        total: u64,
    },
}

/// Per metadata cluster: which of its pages are in use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MetaCluster {
    pages: Bits,
}

/// The store's space: clusters and metadata pages in use, and releases awaiting a durable
/// commit.
#[derive(Debug, Clone)]
pub struct SpaceMap {
    pages_per_cluster: u64,
    clusters: Bits,
    meta: BTreeMap<u64, MetaCluster>,
    cursor: u64,
    pending_clusters: Vec<u64>,
    pending_pages: Vec<PageNo>,
    /// Releases made before the commit in progress was captured: free once it is durable.
    sealed_clusters: Vec<u64>,
    sealed_pages: Vec<PageNo>,
}

impl SpaceMap {
    /// An empty store of `total_clusters` clusters of `cluster_size` bytes: cluster 0 is a
    /// metadata cluster with the two superblock pages in use.
    ///
    /// # Panics
    /// With fewer than two clusters or a cluster smaller than two pages.
    pub fn new(total_clusters: u64, cluster_size: u32) -> SpaceMap {
        let pages_per_cluster = u64::from(cluster_size) / PAGE_SIZE as u64;
        assert!(
            total_clusters >= 2 && pages_per_cluster >= 2,
            "a store of two clusters at least"
        );
        let mut s = SpaceMap {
            pages_per_cluster,
            clusters: Bits::new(total_clusters),
            meta: BTreeMap::new(),
            cursor: 1,
            pending_clusters: Vec::new(),
            pending_pages: Vec::new(),
            sealed_clusters: Vec::new(),
            sealed_pages: Vec::new(),
        };
        s.clusters.set(0);
        let mut pages = Bits::new(pages_per_cluster);
        pages.set(0);
        pages.set(1);
        s.meta.insert(0, MetaCluster { pages });
        s
    }

    /// Clusters in the store.
    pub fn total_clusters(&self) -> u64 {
        self.clusters.len
    }

    /// Clusters in use (data and metadata, pending releases included).
    pub fn used_clusters(&self) -> u64 {
        self.clusters.ones
    }

    /// Clusters free for allocation now.
    pub fn free_clusters(&self) -> u64 {
        self.clusters.len - self.clusters.ones
    }

    /// Metadata pages in use (superblock slots and pending releases included).
    pub fn used_pages(&self) -> u64 {
        self.meta.values().map(|m| m.pages.ones).sum()
    }

    /// Whether `cluster` is in use (as data or metadata).
    pub fn cluster_in_use(&self, cluster: u64) -> bool {
        cluster < self.clusters.len && self.clusters.get(cluster)
    }

    /// Whether `page` is an allocated metadata page.
    pub fn page_in_use(&self, page: PageNo) -> bool {
        let (c, i) = (
            page.0 / self.pages_per_cluster,
            page.0 % self.pages_per_cluster,
        );
        self.meta.get(&c).is_some_and(|m| m.pages.get(i))
    }

    /// Takes a free cluster for data, near the last one taken (sequential writes stay
    /// sequential on the device). `None` when the store is full.
    pub fn alloc_cluster(&mut self) -> Option<u64> {
        let c = self.clusters.next_clear(self.cursor)?;
        self.clusters.set(c);
        self.cursor = c + 1;
        Some(c)
    }

    /// Takes a free metadata page, from a metadata cluster with room or a new one. `None` when
    /// the store is full.
    pub fn alloc_page(&mut self) -> Option<PageNo> {
        let ppc = self.pages_per_cluster;
        let room = self
            .meta
            .iter()
            .find(|(_, m)| m.pages.ones < ppc)
            .map(|(&c, _)| c);
        let c = match room {
            Some(c) => c,
            None => {
                let c = self.alloc_cluster()?;
                self.meta.insert(
                    c,
                    MetaCluster {
                        pages: Bits::new(ppc),
                    },
                );
                c
            }
        };
        let m = self.meta.get_mut(&c).expect("present");
        let i = m.pages.next_clear(0).expect("has room");
        m.pages.set(i);
        Some(PageNo(c * ppc + i))
    }

    /// Releases a data cluster; it becomes free once the next commit is durable.
    ///
    /// # Panics
    /// If the cluster is not an allocated data cluster (a bug in the caller).
    pub fn release_cluster(&mut self, cluster: u64) {
        assert!(
            self.cluster_in_use(cluster) && !self.meta.contains_key(&cluster),
            "releasing cluster {cluster}, which is not an allocated data cluster"
        );
        self.pending_clusters.push(cluster);
    }

    /// Releases a metadata page; it becomes free once the next commit is durable.
    ///
    /// # Panics
    /// If the page is not allocated, or is a superblock slot (a bug in the caller).
    pub fn release_page(&mut self, page: PageNo) {
        assert!(
            page.0 >= 2 && self.page_in_use(page),
            "releasing {page}, which is not an allocated metadata page"
        );
        self.pending_pages.push(page);
    }

    /// Clusters that will be in use once every release so far is free: what a superblock
    /// written now should record.
    pub fn used_clusters_after_commit(&self) -> u64 {
        let ppc = self.pages_per_cluster;
        let mut emptied: BTreeMap<u64, u64> = BTreeMap::new();
        for p in self.pending_pages.iter().chain(&self.sealed_pages) {
            *emptied.entry(p.0 / ppc).or_insert(0) += 1;
        }
        let freed_meta = emptied
            .iter()
            .filter(|&(&c, &n)| c != 0 && self.meta.get(&c).is_some_and(|m| m.pages.ones == n))
            .count() as u64;
        let released = self.pending_clusters.len() + self.sealed_clusters.len();
        self.clusters.ones - released as u64 - freed_meta
    }

    /// Space released and not yet reusable: (clusters, pages).
    pub fn pending(&self) -> (usize, usize) {
        (
            self.pending_clusters.len() + self.sealed_clusters.len(),
            self.pending_pages.len() + self.sealed_pages.len(),
        )
    }

    /// A commit is being captured: the releases so far become free when it is durable
    /// ([`SpaceMap::commit_durable`]); later ones wait for the commit after it.
    pub fn seal(&mut self) {
        self.sealed_clusters.append(&mut self.pending_clusters);
        self.sealed_pages.append(&mut self.pending_pages);
    }

    /// The commit sealed last is durable: the space it released is free. Metadata clusters
    /// left without pages (other than cluster 0) return to the cluster pool.
    pub fn commit_durable(&mut self) {
        for c in std::mem::take(&mut self.sealed_clusters) {
            self.clusters.clear(c);
        }
        let ppc = self.pages_per_cluster;
        for p in std::mem::take(&mut self.sealed_pages) {
            let c = p.0 / ppc;
            let m = self
                .meta
                .get_mut(&c)
                .expect("released pages are in metadata clusters");
            m.pages.clear(p.0 % ppc);
            if m.pages.ones == 0 && c != 0 {
                self.meta.remove(&c);
                self.clusters.clear(c);
            }
        }
    }

    /// Rebuilding at open: records that a committed tree references data cluster `cluster`.
    ///
    /// # Errors
    /// The cluster is outside the store, already claimed, or a metadata cluster.
    pub fn claim_cluster(&mut self, cluster: u64) -> Result<(), SpaceError> {
        self.check_range(cluster)?;
        if self.meta.contains_key(&cluster) {
            return Err(SpaceError::Mixed(cluster));
        }
        if self.clusters.get(cluster) {
            return Err(SpaceError::ClusterTwice(cluster));
        }
        self.clusters.set(cluster);
        Ok(())
    }

    /// Rebuilding at open: records that a committed tree references metadata page `page`.
    ///
    /// # Errors
    /// The page is outside the store, already claimed, a superblock slot, or in a cluster
    /// claimed for data.
    pub fn claim_page(&mut self, page: PageNo) -> Result<(), SpaceError> {
        let ppc = self.pages_per_cluster;
        let c = page.0 / ppc;
        self.check_range(c)?;
        if page.0 < 2 {
            return Err(SpaceError::PageTwice(page));
        }
        if !self.meta.contains_key(&c) {
            if self.clusters.get(c) {
                return Err(SpaceError::Mixed(c));
            }
            self.clusters.set(c);
            self.meta.insert(
                c,
                MetaCluster {
                    pages: Bits::new(ppc),
                },
            );
        }
        let m = self.meta.get_mut(&c).expect("present");
        if m.pages.get(page.0 % ppc) {
            return Err(SpaceError::PageTwice(page));
        }
        m.pages.set(page.0 % ppc);
        Ok(())
    }

    fn check_range(&self, cluster: u64) -> Result<(), SpaceError> {
        if cluster >= self.clusters.len {
            return Err(SpaceError::OutOfRange {
                cluster,
                total: self.clusters.len,
            });
        }
        Ok(())
    }

    /// The base device grew: the store now has `total_clusters` clusters.
    ///
    /// # Panics
    /// If asked to shrink (refused earlier, with a message, by the store).
    pub fn grow(&mut self, total_clusters: u64) {
        assert!(
            total_clusters >= self.clusters.len,
            "the store never shrinks"
        );
        self.clusters.grow(total_clusters);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_new_store_reserves_the_superblocks() {
        let s = SpaceMap::new(16, 64 * 1024);
        assert_eq!(s.used_clusters(), 1);
        assert_eq!(s.used_pages(), 2);
        assert!(s.page_in_use(PageNo(0)) && s.page_in_use(PageNo(1)));
        assert!(!s.page_in_use(PageNo(2)));
    }

    #[test]
    fn metadata_pages_fill_cluster_zero_first_then_take_clusters() {
        let mut s = SpaceMap::new(8, 64 * 1024); // 16 pages per cluster
        let pages: Vec<_> = (0..14).map(|_| s.alloc_page().expect("room")).collect();
        assert_eq!(pages.first(), Some(&PageNo(2)));
        assert_eq!(pages.last(), Some(&PageNo(15)));
        assert_eq!(s.used_clusters(), 1);
        let p = s.alloc_page().expect("room");
        assert_eq!(s.used_clusters(), 2);
        assert_eq!(p.0 / 16, 1, "a fresh metadata cluster");
        // Releasing its only page returns the cluster after the commit, not before.
        s.release_page(p);
        assert_eq!(s.used_clusters(), 2);
        s.seal();
        s.commit_durable();
        assert_eq!(s.used_clusters(), 1);
        assert!(!s.page_in_use(p));
    }

    #[test]
    fn released_space_is_reused_only_after_the_commit_is_durable() {
        let mut s = SpaceMap::new(3, 64 * 1024);
        let a = s.alloc_cluster().expect("free");
        let b = s.alloc_cluster().expect("free");
        assert_eq!(s.alloc_cluster(), None, "full");
        s.release_cluster(a);
        assert_eq!(s.alloc_cluster(), None, "not before the commit");
        s.seal();
        s.commit_durable();
        assert_eq!(s.alloc_cluster(), Some(a));
        assert_ne!(a, b);
    }

    #[test]
    fn rebuilding_catches_double_references() {
        let mut s = SpaceMap::new(8, 64 * 1024);
        s.claim_cluster(3).expect("first claim");
        assert_eq!(s.claim_cluster(3), Err(SpaceError::ClusterTwice(3)));
        s.claim_page(PageNo(5 * 16 + 2))
            .expect("page in a new metadata cluster");
        assert_eq!(
            s.claim_page(PageNo(5 * 16 + 2)),
            Err(SpaceError::PageTwice(PageNo(82)))
        );
        assert_eq!(s.claim_cluster(5), Err(SpaceError::Mixed(5)));
        assert_eq!(s.claim_page(PageNo(3 * 16)), Err(SpaceError::Mixed(3)));
        assert_eq!(
            s.claim_page(PageNo(1)),
            Err(SpaceError::PageTwice(PageNo(1)))
        );
        assert!(matches!(
            s.claim_cluster(8),
            Err(SpaceError::OutOfRange { .. })
        ));
    }

    #[test]
    fn growing_adds_free_clusters() {
        let mut s = SpaceMap::new(2, 64 * 1024);
        assert!(s.alloc_cluster().is_some());
        assert_eq!(s.alloc_cluster(), None);
        s.grow(200);
        assert_eq!(s.free_clusters(), 198);
        assert!(s.alloc_cluster().is_some());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Cluster,
        Page,
        ReleaseCluster(usize),
        ReleasePage(usize),
        Commit,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Cluster),
            3 => Just(Op::Page),
            2 => any::<usize>().prop_map(Op::ReleaseCluster),
            2 => any::<usize>().prop_map(Op::ReleasePage),
            1 => Just(Op::Commit),
        ]
    }

    proptest! {
        /// Against a model: nothing is handed out twice, pending space is not reused before
        /// the commit, and the counts agree.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec(op(), 1..300)) {
            let mut s = SpaceMap::new(40, 64 * 1024);
            let mut data: BTreeSet<u64> = BTreeSet::new();
            let mut pages: BTreeSet<u64> = BTreeSet::new();
            let mut pending_c: Vec<u64> = Vec::new();
            let mut pending_p: Vec<u64> = Vec::new();
            for op in ops {
                match op {
                    Op::Cluster => {
                        if let Some(c) = s.alloc_cluster() {
                            prop_assert!(data.insert(c), "cluster {} handed out twice", c);
                            prop_assert!(!pending_c.contains(&c), "pending cluster {} reused", c);
                            prop_assert!(pages.iter().all(|p| p / 16 != c), "data in a metadata cluster");
                        }
                    }
                    Op::Page => {
                        if let Some(p) = s.alloc_page() {
                            prop_assert!(p.0 >= 2);
                            prop_assert!(pages.insert(p.0), "page {} handed out twice", p.0);
                            prop_assert!(!pending_p.contains(&p.0), "pending page reused");
                            prop_assert!(!data.contains(&(p.0 / 16)), "page in a data cluster");
                        }
                    }
                    Op::ReleaseCluster(i) if !data.is_empty() => {
                        let c = *data.iter().nth(i % data.len()).expect("non-empty");
                        data.remove(&c);
                        s.release_cluster(c);
                        pending_c.push(c);
                    }
                    Op::ReleasePage(i) if !pages.is_empty() => {
                        let p = *pages.iter().nth(i % pages.len()).expect("non-empty");
                        pages.remove(&p);
                        s.release_page(PageNo(p));
                        pending_p.push(p);
                    }
                    Op::Commit => {
                        s.seal();
        s.commit_durable();
                        pending_c.clear();
                        pending_p.clear();
                    }
                    _ => {}
                }
                prop_assert_eq!(s.used_pages(), 2 + pages.len() as u64 + pending_p.len() as u64);
                let meta_clusters: BTreeSet<u64> = pages.iter().chain(&pending_p).map(|p| p / 16).chain([0]).collect();
                prop_assert!(s.used_clusters() >= (data.len() + pending_c.len() + meta_clusters.len()) as u64);
            }
            let predicted = s.used_clusters_after_commit();
            s.seal();
        s.commit_durable();
            prop_assert_eq!(s.used_clusters(), predicted, "the prediction a superblock records");
            let meta_clusters: BTreeSet<u64> = pages.iter().map(|p| p / 16).chain([0]).collect();
            prop_assert_eq!(s.used_clusters(), (data.len() + meta_clusters.len()) as u64, "no leak after a commit");
        }
    }
}
