//! Cluster maps as copy-on-write radix trees whose pages and clusters are shared by reference.
//!
//! A [`Forest`] holds every volume's map pages in memory (metadata is small: about 32 KiB of map
//! per GiB written with 1 MiB clusters), with a reference count per page and per cluster. The
//! counts are not stored on disk: [`Forest::load`] rebuilds them by walking every map from its
//! root, descending into a shared page only the first time it is met.
//!
//! Updates follow shadow paging. A page that the committed state (on disk) contains is never
//! modified: the first change after a commit writes a copy to a fresh page and releases the
//! old one, which becomes free once the next commit is durable. A page shared by several maps
//! is copied on write (path copying), and the copy takes a reference on every page or cluster
//! it names. A snapshot or clone therefore costs one reference on a root page, and deleting any
//! volume just drops its root reference.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::alloc::{SpaceError, SpaceMap};
use crate::format::{
    FormatError, LEAF_FANOUT, MapEntry, MapLeaf, MapNode, NODE_FANOUT, PAGE_SIZE, PageNo,
    StoreBounds, map_capacity,
};

/// A volume's map: its root page and height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Map {
    /// Root page ([`PageNo::NONE`]: nothing mapped).
    pub root: PageNo,
    /// Levels, leaves included (at least 1).
    pub height: u8,
}

impl Map {
    /// An empty map of `height` levels.
    pub fn empty(height: u8) -> Map {
        Map {
            root: PageNo::NONE,
            height,
        }
    }

    /// Clusters this map can address.
    pub fn capacity(&self) -> u64 {
        map_capacity(self.height)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Leaf(Box<[MapEntry; LEAF_FANOUT]>),
    Interior {
        level: u8,
        children: Box<[PageNo; NODE_FANOUT]>,
    },
}

/// The store ran out of clusters or pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub struct NoSpace;

/// Why committed metadata could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum LoadError {
    /// cannot read {page}: {detail}
    Read {
        /// The page.
        page: PageNo,
        /// The reader's error.
        detail: String,
    },
    /// {0}
    Format(#[from] FormatError),
    /// {0}
    Space(#[from] SpaceError),
    /// {page}: map page at level {found} where level {expected} was expected
    Level {
        /// The page.
        page: PageNo,
        /// Level expected from the parent.
        expected: u8,
        /// Level found.
        found: u8,
    },
}

/// Every volume's map pages, their reference counts and the clusters they name.
#[derive(Debug)]
pub struct Forest {
    space: SpaceMap,
    generation: u64,
    nodes: HashMap<PageNo, Node>,
    page_refs: HashMap<PageNo, u32>,
    cluster_refs: HashMap<u64, u32>,
    /// Pages written since the last commit (not on disk yet): modified in place.
    fresh: BTreeSet<PageNo>,
    /// Clusters and pages that lost a reference but not their last since the last capture
    /// ([`Forest::seal`]), and those of the capture being written. The durable tree may still
    /// share them, so they are not written in place until that is no longer so.
    fragile: Fragile,
    fragile_sealed: Fragile,
    /// Clusters taken by [`Forest::alloc_cluster`] that no entry names yet (their data is
    /// being written): in use, but not what a superblock should count.
    loose: HashSet<u64>,
}

#[derive(Debug, Default)]
struct Fragile {
    clusters: HashSet<u64>,
    pages: HashSet<PageNo>,
}

impl Fragile {
    fn is_empty(&self) -> bool {
        self.clusters.is_empty() && self.pages.is_empty()
    }
}

/// A map entry and whether the volume may overwrite its `own` cluster in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    /// The entry.
    pub entry: MapEntry,
    /// `own` is named by no other entry or map, here or in the durable tree: a write may go to
    /// it in place.
    pub own_exclusive: bool,
}

impl Forest {
    /// A forest without maps over `space`; the next commit has generation `generation`.
    pub fn new(space: SpaceMap, generation: u64) -> Forest {
        Forest {
            space,
            generation,
            nodes: HashMap::new(),
            page_refs: HashMap::new(),
            cluster_refs: HashMap::new(),
            fresh: BTreeSet::new(),
            fragile: Fragile::default(),
            fragile_sealed: Fragile::default(),
            loose: HashSet::new(),
        }
    }

    /// The space map.
    pub fn space(&self) -> &SpaceMap {
        &self.space
    }

    /// The space map, for metadata outside the maps (volume table, properties).
    pub fn space_mut(&mut self) -> &mut SpaceMap {
        &mut self.space
    }

    /// Takes a free data cluster (not yet referenced: hand it to [`Forest::set`], or give it
    /// back with [`Forest::abandon_cluster`]).
    ///
    /// # Errors
    /// [`NoSpace`].
    pub fn alloc_cluster(&mut self) -> Result<u64, NoSpace> {
        let c = self.space.alloc_cluster().ok_or(NoSpace)?;
        self.loose.insert(c);
        Ok(c)
    }

    /// Returns a cluster from [`Forest::alloc_cluster`] that was never referenced.
    pub fn abandon_cluster(&mut self, cluster: u64) {
        debug_assert!(!self.cluster_refs.contains_key(&cluster));
        self.loose.remove(&cluster);
        self.space.release_cluster(cluster);
    }

    /// Clusters taken by [`Forest::alloc_cluster`] that no entry names yet.
    pub fn loose_clusters(&self) -> u64 {
        self.loose.len() as u64
    }

    /// Clusters that will be in use once every release so far is free, counting only those
    /// the maps or metadata reference: what a superblock written now should record.
    pub fn allocated_after_commit(&self) -> u64 {
        self.space.used_clusters_after_commit() - self.loose.len() as u64
    }

    /// Map entries naming `cluster` (0 when unreferenced). More than one means shared: a write
    /// must not go to it in place.
    pub fn cluster_refs(&self, cluster: u64) -> u32 {
        self.cluster_refs.get(&cluster).copied().unwrap_or(0)
    }

    /// The entry for cluster `index` of `map`.
    ///
    /// # Panics
    /// If `index` is beyond the map's capacity.
    pub fn get(&self, map: &Map, index: u64) -> MapEntry {
        assert!(index < map.capacity(), "cluster {index} beyond the map");
        let mut page = map.root;
        let mut level = map.height - 1;
        loop {
            if !page.is_some() {
                return MapEntry::default();
            }
            match &self.nodes[&page] {
                Node::Leaf(entries) => return entries[(index % LEAF_FANOUT as u64) as usize],
                Node::Interior { children, .. } => {
                    page = children[child_slot(index, level)];
                    level -= 1;
                }
            }
        }
    }

    /// The entry for cluster `index` of `map`, and whether its `own` cluster may be written in
    /// place: every page on the path and the cluster itself have one reference, and none of
    /// them lost a reference since the last durable commit (the durable tree may share them).
    ///
    /// # Panics
    /// If `index` is beyond the map's capacity.
    pub fn lookup(&self, map: &Map, index: u64) -> Lookup {
        assert!(index < map.capacity(), "cluster {index} beyond the map");
        let calm = self.fragile.is_empty() && self.fragile_sealed.is_empty();
        let fragile_page = |p: &PageNo| {
            !calm && (self.fragile.pages.contains(p) || self.fragile_sealed.pages.contains(p))
        };
        let mut exclusive = true;
        let mut page = map.root;
        let mut level = map.height - 1;
        loop {
            if !page.is_some() {
                return Lookup {
                    entry: MapEntry::default(),
                    own_exclusive: false,
                };
            }
            exclusive &= self.page_refs.get(&page) == Some(&1) && !fragile_page(&page);
            match &self.nodes[&page] {
                Node::Leaf(entries) => {
                    let entry = entries[(index % LEAF_FANOUT as u64) as usize];
                    let c = entry.own;
                    let own_exclusive = exclusive
                        && c != 0
                        && self.cluster_refs(c) == 1
                        && (calm
                            || !(self.fragile.clusters.contains(&c)
                                || self.fragile_sealed.clusters.contains(&c)));
                    return Lookup {
                        entry,
                        own_exclusive,
                    };
                }
                Node::Interior { children, .. } => {
                    page = children[child_slot(index, level)];
                    level -= 1;
                }
            }
        }
    }

    /// Sets the entry for cluster `index` of `map`, copying shared or committed pages on the
    /// path, and adjusts cluster references (a cluster whose last reference goes is released).
    ///
    /// # Errors
    /// [`NoSpace`] when no page is left for a copy; the map is then unchanged.
    ///
    /// # Panics
    /// If `index` is beyond the map's capacity.
    pub fn set(&mut self, map: &mut Map, index: u64, entry: MapEntry) -> Result<(), NoSpace> {
        assert!(index < map.capacity(), "cluster {index} beyond the map");
        if self.get(map, index) == entry {
            return Ok(());
        }
        // Make every page on the path private and writable, top-down.
        let mut parent: Option<(PageNo, usize)> = None;
        let mut page = map.root;
        let mut level = map.height - 1;
        loop {
            let own = if page.is_some() {
                self.make_private(page)?
            } else {
                self.new_node(level)?
            };
            match parent {
                None => map.root = own,
                Some((p, slot)) => self.set_child(p, slot, own),
            }
            if level == 0 {
                page = own;
                break;
            }
            let slot = child_slot(index, level);
            let Some(Node::Interior { children, .. }) = self.nodes.get(&own) else {
                unreachable!("interior page above level 0")
            };
            parent = Some((own, slot));
            page = children[slot];
            level -= 1;
        }
        let Some(Node::Leaf(entries)) = self.nodes.get_mut(&page) else {
            unreachable!("leaf at level 0")
        };
        let slot = (index % LEAF_FANOUT as u64) as usize;
        let old = std::mem::replace(&mut entries[slot], entry);
        // Only clusters that enter or leave the entry change counts: one that stays (an
        // update of its bits, or own becoming back) keeps its reference as it is.
        let (was, now) = ([old.own, old.back], [entry.own, entry.back]);
        for c in now {
            if c != 0 && !was.contains(&c) {
                *self.cluster_refs.entry(c).or_insert(0) += 1;
                self.loose.remove(&c);
            }
        }
        for c in was {
            if c != 0 && !now.contains(&c) {
                self.unref_cluster(c);
            }
        }
        Ok(())
    }

    /// A second map sharing everything with `map` (a snapshot or a clone): O(1).
    pub fn share(&mut self, map: &Map) -> Map {
        if map.root.is_some() {
            *self.page_refs.get_mut(&map.root).expect("root is loaded") += 1;
        }
        *map
    }

    /// Drops a map; pages and clusters nothing else references are released.
    pub fn drop_map(&mut self, map: Map) {
        if map.root.is_some() {
            self.unref_page(map.root);
        }
    }

    /// Makes `map` address at least `clusters` clusters, adding levels above the root.
    ///
    /// # Errors
    /// [`NoSpace`] for the new root pages.
    pub fn grow(&mut self, map: &mut Map, clusters: u64) -> Result<(), NoSpace> {
        while map.capacity() < clusters {
            if map.root.is_some() {
                let root = self.new_node(map.height)?;
                // The old root's reference moves from the volume record to the new root: its
                // count does not change.
                self.set_child(root, 0, map.root);
                map.root = root;
            }
            map.height += 1;
        }
        Ok(())
    }

    /// Whether anything changed since the last capture.
    pub fn has_changes(&self) -> bool {
        let (c, p) = self.space.pending();
        !self.fresh.is_empty() || c + p > 0
    }

    /// Captures a commit: encodes every page written since the last capture (to be written
    /// before the superblock of the commit), treats them as committed from now on (a later
    /// change copies them), and seals the space released so far. Then
    /// [`Forest::commit_durable`] once the commit's superblock is durable.
    pub fn seal(&mut self, uuid: &[u8; 16]) -> Vec<(PageNo, Box<[u8; PAGE_SIZE]>)> {
        let pages = self
            .fresh
            .iter()
            .filter_map(|&p| {
                let bytes = match self.nodes.get(&p)? {
                    Node::Leaf(entries) => MapLeaf {
                        generation: self.generation,
                        entries: entries.clone(),
                    }
                    .encode(p, uuid),
                    Node::Interior { level, children } => MapNode {
                        generation: self.generation,
                        level: *level,
                        children: children.clone(),
                    }
                    .encode(p, uuid),
                };
                Some((p, bytes))
            })
            .collect();
        self.fresh.clear();
        self.space.seal();
        let f = std::mem::take(&mut self.fragile);
        self.fragile_sealed.clusters.extend(f.clusters);
        self.fragile_sealed.pages.extend(f.pages);
        self.generation += 1;
        pages
    }

    /// The commit captured last by [`Forest::seal`] is durable: the space it released becomes
    /// free, and what it no longer shares may be written in place.
    pub fn commit_durable(&mut self) {
        self.commit_durable_shares();
        self.release_sealed();
    }

    /// The commit captured last is durable: what it no longer shares may be written in place.
    /// (The first half of [`Forest::commit_durable`], for callers that must wait before
    /// reusing space.)
    pub fn commit_durable_shares(&mut self) {
        self.fragile_sealed = Fragile::default();
    }

    /// The space the durable commit released becomes free (the second half of
    /// [`Forest::commit_durable`]).
    pub fn release_sealed(&mut self) {
        self.space.commit_durable();
    }

    /// Rebuilds the forest from committed metadata: `maps` are the volumes' maps, `read`
    /// returns a page's bytes. Every page and cluster reached is claimed in `space`.
    ///
    /// # Errors
    /// A page that cannot be read or decoded, a level that does not match its parent, or a
    /// reference the space map refuses.
    pub fn load(
        mut space: SpaceMap,
        generation: u64,
        bounds: &StoreBounds,
        maps: &[Map],
        mut read: impl FnMut(PageNo) -> Result<Vec<u8>, String>,
    ) -> Result<Forest, LoadError> {
        let mut nodes = HashMap::new();
        let mut page_refs: HashMap<PageNo, u32> = HashMap::new();
        let mut cluster_refs: HashMap<u64, u32> = HashMap::new();
        let mut stack: Vec<(PageNo, u8)> = maps
            .iter()
            .filter(|m| m.root.is_some())
            .map(|m| (m.root, m.height - 1))
            .collect();
        while let Some((page, level)) = stack.pop() {
            let refs = page_refs.entry(page).or_insert(0);
            *refs += 1;
            if *refs > 1 {
                // Met before: the same page must sit at the same level on every path (this
                // also rules out cycles, since levels fall by one per step).
                let found = match nodes.get(&page) {
                    Some(Node::Interior { level, .. }) => *level,
                    _ => 0,
                };
                if found != level {
                    return Err(LoadError::Level {
                        page,
                        expected: level,
                        found,
                    });
                }
                continue;
            }
            space.claim_page(page)?;
            let bytes = read(page).map_err(|detail| LoadError::Read { page, detail })?;
            let node = if level == 0 {
                let leaf = MapLeaf::decode(&bytes, page, bounds)?;
                for e in leaf.entries.iter() {
                    for c in [e.own, e.back] {
                        if c != 0 {
                            let r = cluster_refs.entry(c).or_insert(0);
                            if *r == 0 {
                                space.claim_cluster(c)?;
                            }
                            *r += 1;
                        }
                    }
                }
                Node::Leaf(leaf.entries)
            } else {
                let node = MapNode::decode(&bytes, page, bounds)?;
                if node.level != level {
                    return Err(LoadError::Level {
                        page,
                        expected: level,
                        found: node.level,
                    });
                }
                for &c in node.children.iter().filter(|c| c.is_some()) {
                    stack.push((c, level - 1));
                }
                Node::Interior {
                    level,
                    children: node.children,
                }
            };
            nodes.insert(page, node);
        }
        Ok(Forest {
            space,
            generation,
            nodes,
            page_refs,
            cluster_refs,
            fresh: BTreeSet::new(),
            fragile: Fragile::default(),
            fragile_sealed: Fragile::default(),
            loose: HashSet::new(),
        })
    }

    fn new_node(&mut self, level: u8) -> Result<PageNo, NoSpace> {
        let page = self.space.alloc_page().ok_or(NoSpace)?;
        let node = if level == 0 {
            Node::Leaf(Box::new([MapEntry::default(); LEAF_FANOUT]))
        } else {
            Node::Interior {
                level,
                children: Box::new([PageNo::NONE; NODE_FANOUT]),
            }
        };
        self.nodes.insert(page, node);
        self.page_refs.insert(page, 1);
        self.fresh.insert(page);
        Ok(page)
    }

    /// Returns a page with the same contents that only the caller references and that may be
    /// modified: `page` itself if it is fresh and unshared; a copy that takes over its
    /// references if it is committed and unshared; otherwise a copy that takes a reference on
    /// everything it names while the shared `page` loses the caller's reference.
    fn make_private(&mut self, page: PageNo) -> Result<PageNo, NoSpace> {
        if self.page_refs[&page] == 1 && self.fresh.contains(&page) {
            return Ok(page);
        }
        if self.page_refs[&page] == 1 {
            // Committed but not shared: the copy takes over the page's references (shadow
            // paging moves a page; nothing below gains or loses a sharer).
            let copy = self.space.alloc_page().ok_or(NoSpace)?;
            let node = self.nodes.remove(&page).expect("loaded");
            self.page_refs.remove(&page);
            self.nodes.insert(copy, node);
            self.page_refs.insert(copy, 1);
            self.fresh.insert(copy);
            self.space.release_page(page);
            return Ok(copy);
        }
        let copy = self.space.alloc_page().ok_or(NoSpace)?;
        let node = self.nodes[&page].clone();
        match &node {
            Node::Leaf(entries) => {
                for e in entries.iter() {
                    for c in [e.own, e.back] {
                        if c != 0 {
                            *self.cluster_refs.entry(c).or_insert(0) += 1;
                        }
                    }
                }
            }
            Node::Interior { children, .. } => {
                for &c in children.iter().filter(|c| c.is_some()) {
                    *self.page_refs.get_mut(&c).expect("child loaded") += 1;
                }
            }
        }
        self.nodes.insert(copy, node);
        self.page_refs.insert(copy, 1);
        self.fresh.insert(copy);
        self.unref_page(page);
        Ok(copy)
    }

    fn set_child(&mut self, parent: PageNo, slot: usize, child: PageNo) {
        let Some(Node::Interior { children, .. }) = self.nodes.get_mut(&parent) else {
            unreachable!("parent is interior")
        };
        children[slot] = child;
    }

    fn unref_cluster(&mut self, c: u64) {
        let r = self.cluster_refs.get_mut(&c).expect("referenced cluster");
        *r -= 1;
        if *r == 0 {
            self.cluster_refs.remove(&c);
            self.space.release_cluster(c);
        } else {
            self.fragile.clusters.insert(c);
        }
    }

    /// Drops one reference to `page`; at zero, releases it and everything only it referenced.
    fn unref_page(&mut self, page: PageNo) {
        let mut stack = vec![page];
        while let Some(p) = stack.pop() {
            let r = self.page_refs.get_mut(&p).expect("referenced page");
            *r -= 1;
            if *r > 0 {
                self.fragile.pages.insert(p);
                continue;
            }
            self.page_refs.remove(&p);
            self.fresh.remove(&p);
            match self.nodes.remove(&p).expect("loaded") {
                Node::Leaf(entries) => {
                    for e in entries.iter() {
                        for c in [e.own, e.back] {
                            if c != 0 {
                                self.unref_cluster(c);
                            }
                        }
                    }
                }
                Node::Interior { children, .. } => {
                    stack.extend(children.iter().copied().filter(|c| c.is_some()));
                }
            }
            self.space.release_page(p);
        }
    }
}

/// Which child of an interior page at `level` leads to cluster `index`.
fn child_slot(index: u64, level: u8) -> usize {
    let below = map_capacity(level);
    ((index / below) % NODE_FANOUT as u64) as usize
}

#[cfg(test)]
mod tests;
