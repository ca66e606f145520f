//! A volume store served by the engine: open and create on a base bdev, group commit, and
//! every management operation, callable from any reactor.
//!
//! [`LvStore`] is a cheap, `Send + Sync` handle. The store's metadata ([`Store`]) sits behind
//! one reader-writer lock: the I/O path takes it shared for a map lookup (a few hundred
//! nanoseconds) and exclusively only to change a map entry; nothing holds it across an await.
//! Base-device I/O for metadata runs on the reactor that asks for it, through that core's
//! channel on the base.
//!
//! # Commits
//! A flush from any volume, a FUA write that changed the maps, and every management
//! operation end in [`LvStore::commit`]. Commits are grouped: one runs at a time, and a caller
//! that arrives while one runs waits for the next, which covers everything up to its own
//! arrival. A commit with no metadata change is a flush of the base.
//!
//! # Failure
//! If a metadata write or flush fails, memory and disk no longer agree. The store then
//! refuses every further operation with [`StoreError::Failed`] until it is reopened, which
//! brings back the last durable commit.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use basalt_bdev::{Bdev, ChannelImpl, IoChannel, IoError, IoVecs, Lba};

use crate::format::{
    MapEntry, MapNode, PAGE_SIZE, PageNo, PropertiesPage, StoreBounds, Superblock,
    VOLUME_READ_ONLY, VOLUME_SNAPSHOT, VOLUME_THICK, VolumeTablePage,
};
use crate::store::{CheckReport, MetaDisk, Store, StoreError};
use crate::sync::{Epochs, KeyedLock, WaitList};
use crate::volume::VolumeBdev;

/// Bits of a map entry with every subcluster set.
pub(crate) const ALL_SUBCLUSTERS: u64 = u64::MAX;

/// Metadata reads and writes kept in flight at once when opening or committing.
const META_QUEUE_DEPTH: usize = 256;

/// Mutable state of a store, behind [`Shared::state`].
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) store: Store,
    /// Set when the store stopped after an I/O error.
    pub(crate) failed: Option<String>,
    /// Volumes whose new writes wait (a snapshot, clone or revert is being taken).
    pub(crate) frozen: HashSet<u64>,
    /// Open [`VolumeBdev`]s per volume.
    pub(crate) open: HashMap<u64, usize>,
}

impl State {
    pub(crate) fn check_failed(&self) -> Result<(), StoreError> {
        match &self.failed {
            Some(why) => Err(StoreError::Failed(why.clone())),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Default)]
struct CommitCtl {
    /// A commit is running (from capture to the release of its space).
    running: bool,
    /// Commits started.
    started: u64,
    /// Commits durable.
    durable: u64,
}

/// Counters for operators (monotonic since open).
#[derive(Debug, Default)]
pub struct LvsCounters {
    /// Commits that wrote metadata.
    pub commits: AtomicU64,
    /// Commits that only flushed the base (nothing changed).
    pub flush_only_commits: AtomicU64,
    /// Data clusters allocated by writes.
    pub clusters_allocated: AtomicU64,
    /// Subclusters copied from a shared cluster on a first write (copy-on-write).
    pub cow_subclusters: AtomicU64,
    /// Partially written subclusters completed with old data or zeros.
    pub fills: AtomicU64,
    /// I/Os that took the slow path (allocation, copy, split or mixed sources).
    pub slow_ios: AtomicU64,
}

/// What the store and everything serving it share.
pub(crate) struct Shared {
    /// Process-unique, for the per-core base channel cache.
    key: u64,
    pub(crate) base: Arc<dyn Bdev>,
    pub(crate) name: String,
    pub(crate) block_size: u32,
    pub(crate) cluster_size: u64,
    pub(crate) sub_size: u64,
    pub(crate) state: RwLock<State>,
    pub(crate) epochs: Epochs,
    /// Cluster locks: (volume id, cluster index) for writes that change an entry.
    pub(crate) clusters: KeyedLock<(u64, u64)>,
    pub(crate) unfrozen: WaitList,
    commits: Mutex<CommitCtl>,
    commit_done: WaitList,
    /// Serializes [`Epochs::synchronize`].
    grace: KeyedLock<()>,
    pub(crate) counters: LvsCounters,
    /// Per-volume I/O counters, one set per channel (each written by its core only).
    pub(crate) io_stats: Mutex<HashMap<u64, Vec<Arc<ChannelIoStats>>>>,
}

/// One channel's I/O counters: written by its core alone (a load and a store, no atomic
/// read-modify-write on the I/O path), read by anyone.
#[derive(Debug, Default)]
pub(crate) struct ChannelIoStats {
    reads: AtomicU64,
    writes: AtomicU64,
    read_bytes: AtomicU64,
    write_bytes: AtomicU64,
    other: AtomicU64,
}

impl ChannelIoStats {
    /// Counts one I/O of `bytes` (call on the channel's core only).
    pub(crate) fn count(&self, kind: basalt_bdev::IoKind, bytes: u64) {
        let bump = |c: &AtomicU64, n: u64| {
            c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed)
        };
        match kind {
            basalt_bdev::IoKind::Read => {
                bump(&self.reads, 1);
                bump(&self.read_bytes, bytes);
            }
            basalt_bdev::IoKind::Write => {
                bump(&self.writes, 1);
                bump(&self.write_bytes, bytes);
            }
            _ => bump(&self.other, 1),
        }
    }
}

/// A volume's I/O since the store was opened, summed over every core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeIoStats {
    /// Reads submitted.
    pub reads: u64,
    /// Writes submitted.
    pub writes: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Flushes, unmaps and write-zeroes.
    pub other: u64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LvStore")
            .field("name", &self.name)
            .field("base", &self.base.name())
            .field("cluster_size", &self.cluster_size)
            .finish_non_exhaustive()
    }
}

/// A core's channel on a store's base device, shared by every volume of the store there.
pub(crate) struct BaseChannel {
    /// The module's channel, for passing a volume's request down as is.
    pub(crate) inner: Rc<dyn ChannelImpl>,
    /// A validating channel, for the volume layer's own requests.
    pub(crate) io: IoChannel,
    owner: Weak<Shared>,
}

thread_local! {
    static BASES: RefCell<HashMap<u64, Rc<BaseChannel>>> = RefCell::new(HashMap::new());
}

fn store_io(e: &IoError) -> StoreError {
    StoreError::Io(e.to_string())
}

impl Shared {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// This core's channel on the base (opened on first use).
    pub(crate) fn base_channel(self: &Arc<Self>) -> Result<Rc<BaseChannel>, StoreError> {
        if let Some(ch) = BASES.with(|b| b.borrow().get(&self.key).cloned()) {
            return Ok(ch);
        }
        let inner = self
            .base
            .open_channel()
            .map_err(|e| StoreError::Io(format!("cannot open the base device: {e}")))?;
        let io = IoChannel::new(inner.clone(), self.base.geometry());
        let ch = Rc::new(BaseChannel {
            inner,
            io,
            owner: Arc::downgrade(self),
        });
        BASES.with(|b| {
            let mut b = b.borrow_mut();
            // Channels of stores closed since are dropped here, on their own core.
            b.retain(|_, c| c.owner.strong_count() > 0);
            b.insert(self.key, ch.clone());
        });
        Ok(ch)
    }

    /// Whether every metadata change so far is durable (nothing uncommitted, no commit being
    /// written). `st` is the caller's view of the state.
    pub(crate) fn settled(&self, st: &State) -> bool {
        let c = self.commits.lock().unwrap_or_else(|e| e.into_inner());
        !st.store.is_dirty() && c.durable == c.started
    }

    /// Marks the store failed after an I/O error during a commit.
    fn fail(&self, why: String) -> StoreError {
        tracing::error!(store = %self.name, error = %why, "volume store stopped; reopen it");
        let mut st = self.write();
        st.failed.get_or_insert(why.clone());
        StoreError::Failed(why)
    }

    /// Makes everything acknowledged so far durable (group commit; see the module docs).
    pub(crate) async fn commit(self: &Arc<Self>) -> Result<(), StoreError> {
        fn lock(s: &Shared) -> std::sync::MutexGuard<'_, CommitCtl> {
            s.commits.lock().unwrap_or_else(|e| e.into_inner())
        }
        let target = lock(self).started + 1;
        loop {
            let mine = {
                let mut c = lock(self);
                if c.durable >= target {
                    drop(c);
                    return self.read().check_failed();
                }
                if c.running {
                    None
                } else {
                    c.running = true;
                    c.started += 1;
                    Some(c.started)
                }
            };
            match mine {
                Some(n) => {
                    let r = self.run_commit().await;
                    let grace = matches!(r, Ok(true));
                    {
                        let mut c = lock(self);
                        c.durable = n;
                        c.running = grace;
                    }
                    self.commit_done.wake_all();
                    if grace {
                        // The space the commit released is reused only once no I/O that
                        // looked it up before the capture is still running. Nobody waits
                        // for that but the next commit.
                        let sh = self.clone();
                        basalt_engine::spawn(async move {
                            sh.synchronize().await;
                            sh.write().store.release_committed_space();
                            lock(&sh).running = false;
                            sh.commit_done.wake_all();
                        });
                    }
                    r?;
                }
                None => {
                    self.commit_done
                        .wait(|| {
                            let c = lock(self);
                            c.durable >= target || !c.running
                        })
                        .await;
                }
            }
        }
    }

    /// One commit: capture, write the pages, flush (covering the data the pages point at, all
    /// written before the capture), write the superblock, flush. Returns whether metadata was
    /// written (and space may await release).
    async fn run_commit(self: &Arc<Self>) -> Result<bool, StoreError> {
        let base = self.base_channel()?;
        let plan = {
            let mut st = self.write();
            st.check_failed()?;
            if st.store.is_dirty() {
                match st.store.begin_commit() {
                    Ok(plan) => Some(plan),
                    Err(e) => {
                        drop(st);
                        return Err(self.fail(format!("capturing a commit: {e}")));
                    }
                }
            } else {
                None
            }
        };
        let Some(plan) = plan else {
            let (_, r) = base.io.flush().await;
            if let Err(e) = r {
                return Err(self.fail(format!("flushing the base device: {e}")));
            }
            self.counters
                .flush_only_commits
                .fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        };
        let pages: Vec<(PageNo, &[u8])> = plan.pages.iter().map(|(p, b)| (*p, &b[..])).collect();
        if let Err(e) = self.write_pages(&base.io, &pages).await {
            return Err(self.fail(format!("writing metadata pages: {e}")));
        }
        let (_, r) = base.io.flush().await;
        if let Err(e) = r {
            return Err(self.fail(format!("flushing data and metadata pages: {e}")));
        }
        if let Err(e) = self
            .write_pages(&base.io, &[(plan.slot, &plan.superblock[..])])
            .await
        {
            return Err(self.fail(format!("writing the superblock: {e}")));
        }
        let (_, r) = base.io.flush().await;
        if let Err(e) = r {
            return Err(self.fail(format!("flushing the superblock: {e}")));
        }
        self.write().store.finish_commit(plan);
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Waits until no I/O registered before now is in flight.
    pub(crate) async fn synchronize(&self) {
        let _g = self.grace.lock(()).await;
        self.epochs.synchronize().await;
    }

    async fn write_pages(&self, ch: &IoChannel, pages: &[(PageNo, &[u8])]) -> Result<(), IoError> {
        let pool = basalt_engine::current().pool().clone();
        let bs = u64::from(self.base.geometry().block_size);
        for chunk in pages.chunks(META_QUEUE_DEPTH) {
            let mut futs = Vec::with_capacity(chunk.len());
            for (p, bytes) in chunk {
                let mut buf = pool.alloc(PAGE_SIZE).map_err(|_| IoError::Aborted)?.await;
                buf.copy_from_slice(bytes);
                let lba = Lba(p.0 * PAGE_SIZE as u64 / bs);
                futs.push(ch.write(lba, [buf].into_iter().collect(), false));
            }
            for f in futs {
                f.await.1?;
            }
        }
        Ok(())
    }

    /// Stops new writes to `id` and waits for those in flight.
    async fn freeze(self: &Arc<Self>, id: u64) -> Result<(), StoreError> {
        loop {
            {
                let mut st = self.write();
                st.check_failed()?;
                st.store.volume(id)?;
                if st.frozen.insert(id) {
                    break;
                }
            }
            self.unfrozen
                .wait(|| !self.read().frozen.contains(&id))
                .await;
        }
        self.synchronize().await;
        Ok(())
    }

    fn unfreeze(&self, id: u64) {
        self.write().frozen.remove(&id);
        self.unfrozen.wake_all();
    }
}

async fn read_pages(
    ch: &IoChannel,
    pages: &[PageNo],
    size: u64,
    out: &mut HashMap<PageNo, Vec<u8>>,
) -> Result<(), IoError> {
    let pool = basalt_engine::current().pool().clone();
    let bs = u64::from(ch.geometry().block_size);
    let wanted: Vec<PageNo> = pages
        .iter()
        .copied()
        .filter(|p| !out.contains_key(p) && (p.0 + 1) * PAGE_SIZE as u64 <= size)
        .collect();
    for chunk in wanted.chunks(META_QUEUE_DEPTH) {
        let mut futs = Vec::with_capacity(chunk.len());
        for p in chunk {
            let buf = pool.alloc(PAGE_SIZE).map_err(|_| IoError::Aborted)?.await;
            futs.push((
                *p,
                ch.read(
                    Lba(p.0 * PAGE_SIZE as u64 / bs),
                    [buf].into_iter().collect(),
                ),
            ));
        }
        for (p, f) in futs {
            let (bufs, r) = f.await;
            r?;
            out.insert(p, bufs[0].to_vec());
        }
    }
    Ok(())
}

/// Pages read ahead of [`Store::open`], which then runs without I/O.
struct PageCache {
    pages: HashMap<PageNo, Vec<u8>>,
    size: u64,
}

impl MetaDisk for PageCache {
    fn size_bytes(&self) -> u64 {
        self.size
    }

    fn read_page(&mut self, page: PageNo) -> Result<Vec<u8>, String> {
        self.pages
            .get(&page)
            .cloned()
            .ok_or_else(|| format!("{page} lies beyond the device or was not read"))
    }

    fn write_page(&mut self, _: PageNo, _: &[u8]) -> Result<(), String> {
        Err("read-only".into())
    }

    fn flush(&mut self) -> Result<(), String> {
        Err("read-only".into())
    }
}

/// Reads every page the newest valid commit references, level by level with many reads in
/// flight. Decoding stops at the first bad page of a chain; [`Store::open`] then reports it.
async fn prefetch(ch: &IoChannel, size: u64) -> Result<HashMap<PageNo, Vec<u8>>, IoError> {
    let mut pages = HashMap::new();
    read_pages(ch, &[PageNo(0), PageNo(1)], size, &mut pages).await?;
    let sb = |p: u64, pages: &HashMap<PageNo, Vec<u8>>| {
        pages
            .get(&PageNo(p))
            .and_then(|b| Superblock::decode(b).ok())
    };
    let sb = match (sb(0, &pages), sb(1, &pages)) {
        (Some(a), Some(b)) => {
            if b.generation > a.generation {
                b
            } else {
                a
            }
        }
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => return Ok(pages),
    };
    let bounds = StoreBounds::from(&sb);
    let mut frontier: Vec<(PageNo, u8)> = Vec::new();
    let mut table = sb.volume_table;
    while table.is_some() && !pages.contains_key(&table) {
        read_pages(ch, &[table], size, &mut pages).await?;
        let Some(Ok(t)) = pages
            .get(&table)
            .map(|b| VolumeTablePage::decode(b, table, &bounds))
        else {
            break;
        };
        for r in &t.volumes {
            let mut p = r.properties;
            while p.is_some() && !pages.contains_key(&p) {
                read_pages(ch, &[p], size, &mut pages).await?;
                let Some(Ok(pp)) = pages.get(&p).map(|b| PropertiesPage::decode(b, p, &bounds))
                else {
                    break;
                };
                p = pp.next;
            }
            if r.map_root.is_some() && r.map_height > 0 {
                frontier.push((r.map_root, r.map_height - 1));
            }
        }
        table = t.next;
    }
    while !frontier.is_empty() {
        let wanted: Vec<PageNo> = frontier.iter().map(|(p, _)| *p).collect();
        read_pages(ch, &wanted, size, &mut pages).await?;
        let mut next = Vec::new();
        let mut seen = HashSet::new();
        for (p, level) in frontier {
            if level == 0 || !seen.insert(p) {
                continue;
            }
            if let Some(Ok(node)) = pages.get(&p).map(|b| MapNode::decode(b, p, &bounds)) {
                next.extend(
                    node.children
                        .iter()
                        .filter(|c| c.is_some() && !pages.contains_key(c))
                        .map(|&c| (c, level - 1)),
                );
            }
        }
        frontier = next;
    }
    Ok(pages)
}

/// A volume as the control plane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Store-unique id (never reused).
    pub id: u64,
    /// Volume UUID.
    pub uuid: [u8; 16],
    /// Name, unique in the store.
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Writes are refused.
    pub read_only: bool,
    /// A snapshot (read-only point in time of `parent_id`).
    pub snapshot: bool,
    /// Every cluster was allocated at creation.
    pub thick: bool,
    /// The volume this one was snapshotted or cloned from (0: none); lineage only.
    pub parent_id: u64,
    /// Properties.
    pub properties: Vec<(String, Vec<u8>)>,
}

/// Space accounting of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceInfo {
    /// Cluster size in bytes.
    pub cluster_size: u64,
    /// Clusters in the store.
    pub total_clusters: u64,
    /// Clusters in use (data and metadata, including space a commit in progress frees).
    pub used_clusters: u64,
    /// Clusters free for allocation now.
    pub free_clusters: u64,
    /// Sum of volume sizes.
    pub provisioned_bytes: u64,
}

/// A volume store on a base bdev; see the module documentation.
#[derive(Debug, Clone)]
pub struct LvStore(pub(crate) Arc<Shared>);

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

impl LvStore {
    fn wrap(base: Arc<dyn Bdev>, store: Store) -> LvStore {
        let sb = store.superblock();
        let cluster_size = u64::from(sb.cluster_size);
        LvStore(Arc::new(Shared {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            name: sb.name.clone(),
            block_size: sb.block_size,
            cluster_size,
            sub_size: cluster_size / u64::from(crate::format::SUBCLUSTERS),
            base,
            state: RwLock::new(State {
                store,
                failed: None,
                frozen: HashSet::new(),
                open: HashMap::new(),
            }),
            epochs: Epochs::default(),
            clusters: KeyedLock::new(),
            unfrozen: WaitList::default(),
            commits: Mutex::new(CommitCtl::default()),
            commit_done: WaitList::default(),
            grace: KeyedLock::new(),
            counters: LvsCounters::default(),
            io_stats: Mutex::new(HashMap::new()),
        }))
    }

    fn check_base(base: &dyn Bdev, block_size: u32) -> Result<(), StoreError> {
        let g = base.geometry();
        if g.block_size > block_size {
            return Err(StoreError::Invalid(format!(
                "the base device has {}-byte blocks, larger than the store's {block_size}",
                g.block_size
            )));
        }
        Ok(())
    }

    /// Writes a new store named `name` on `base` (whatever was there is forgotten). Call on a
    /// reactor.
    ///
    /// # Errors
    /// A bad name or cluster size, a device too small, or an I/O error.
    pub async fn create(
        base: Arc<dyn Bdev>,
        name: &str,
        cluster_size: u32,
    ) -> Result<LvStore, StoreError> {
        let g = base.geometry();
        let ch = base
            .open()
            .map_err(|e| StoreError::Io(format!("cannot open the base device: {e}")))?;
        // Store::create writes two pages and flushes: collect them, then write them here.
        let mut disk = Recorder {
            size: g.bytes(),
            writes: Vec::new(),
        };
        let store = Store::create(&mut disk, name, cluster_size, g.block_size.max(512))?;
        let shared = LvStore::wrap(base.clone(), store);
        let pages: Vec<(PageNo, &[u8])> = disk.writes.iter().map(|(p, b)| (*p, &b[..])).collect();
        shared
            .0
            .write_pages(&ch, &pages)
            .await
            .map_err(|e| store_io(&e))?;
        ch.flush().await.1.map_err(|e| store_io(&e))?;
        tracing::info!(
            store = name,
            base = base.name(),
            cluster_size,
            "volume store created"
        );
        Ok(shared)
    }

    /// Opens the store on `base` at its last durable commit. Call on a reactor.
    ///
    /// # Errors
    /// No valid superblock, inconsistent metadata (reported precisely), or an I/O error.
    pub async fn open(base: Arc<dyn Bdev>) -> Result<LvStore, StoreError> {
        let started = std::time::Instant::now();
        let g = base.geometry();
        let ch = base
            .open()
            .map_err(|e| StoreError::Io(format!("cannot open the base device: {e}")))?;
        let pages = prefetch(&ch, g.bytes()).await.map_err(|e| store_io(&e))?;
        let read = pages.len();
        let mut cache = PageCache {
            pages,
            size: g.bytes(),
        };
        let store = Store::open(&mut cache)?;
        LvStore::check_base(&*base, store.superblock().block_size)?;
        let lvs = LvStore::wrap(base.clone(), store);
        tracing::info!(
            store = %lvs.0.name,
            base = base.name(),
            pages = read,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "volume store opened"
        );
        Ok(lvs)
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The committed superblock.
    pub fn superblock(&self) -> Superblock {
        self.0.read().store.superblock().clone()
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.0.cluster_size
    }

    /// Counters for operators.
    pub fn counters(&self) -> &LvsCounters {
        &self.0.counters
    }

    /// I/Os in flight that looked at the maps, and cluster locks held (writes changing an
    /// entry): both zero when the store is idle.
    pub fn activity(&self) -> (u64, usize) {
        (self.0.epochs.in_flight(), self.0.clusters.held())
    }

    /// Volume `id`'s I/O since the store was opened (all its channels, every core).
    pub fn io_stats(&self, id: u64) -> VolumeIoStats {
        let map = self
            .0
            .io_stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut t = VolumeIoStats::default();
        for c in map.get(&id).into_iter().flatten() {
            t.reads += c.reads.load(Ordering::Relaxed);
            t.writes += c.writes.load(Ordering::Relaxed);
            t.read_bytes += c.read_bytes.load(Ordering::Relaxed);
            t.write_bytes += c.write_bytes.load(Ordering::Relaxed);
            t.other += c.other.load(Ordering::Relaxed);
        }
        t
    }

    /// Why the store stopped, if it did (an I/O error on its metadata: it must be reopened).
    pub fn failure(&self) -> Option<String> {
        self.0.read().failed.clone()
    }

    /// Space accounting now.
    pub fn space(&self) -> SpaceInfo {
        let st = self.0.read();
        let s = st.store.forest().space();
        SpaceInfo {
            cluster_size: self.0.cluster_size,
            total_clusters: s.total_clusters(),
            used_clusters: s.used_clusters(),
            free_clusters: s.free_clusters(),
            provisioned_bytes: st
                .store
                .volumes()
                .map(|v| v.record.size_bytes)
                .fold(0u64, u64::saturating_add),
        }
    }

    /// Every volume, by id.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        self.0.read().store.volumes().map(info).collect()
    }

    /// The volume named `name`.
    pub fn find(&self, name: &str) -> Option<VolumeInfo> {
        self.0.read().store.find(name).map(info)
    }

    /// One volume.
    ///
    /// # Errors
    /// [`StoreError::NoVolume`].
    pub fn volume(&self, id: u64) -> Result<VolumeInfo, StoreError> {
        Ok(info(self.0.read().store.volume(id)?))
    }

    /// Verifies the store's metadata in memory (see [`Store::check`]).
    pub fn check(&self) -> CheckReport {
        self.0.read().store.check()
    }

    /// Takes in the space the base device gained since the store was created or last grown.
    /// Returns the store's clusters.
    ///
    /// # Errors
    /// A base device smaller than the store, or an I/O error.
    pub async fn grow(&self) -> Result<u64, StoreError> {
        let bytes = self.0.base.geometry().bytes();
        self.change(|s| s.store.grow_store(bytes)).await
    }

    /// Makes every write acknowledged so far durable, with the metadata it changed.
    ///
    /// # Errors
    /// An I/O error; the store then has to be reopened.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.0.commit().await
    }

    /// Waits until no commit is running, including the release of the space the last one
    /// freed (which follows its durability by a grace period).
    pub async fn idle(&self) {
        self.0
            .commit_done
            .wait(|| {
                !self
                    .0
                    .commits
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .running
            })
            .await;
    }

    async fn change<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let out = {
            let mut st = self.0.write();
            st.check_failed()?;
            f(&mut st)?
        };
        self.0.commit().await?;
        Ok(out)
    }

    /// Creates a volume of `size_bytes`: thin (space taken on first write), or thick (every
    /// cluster allocated and zeroed now, so writes never run out of space until a snapshot
    /// shares them).
    ///
    /// # Errors
    /// A bad or taken name, a bad size, no space (thick), or an I/O error.
    pub async fn create_volume(
        &self,
        name: &str,
        size_bytes: u64,
        thick: bool,
    ) -> Result<u64, StoreError> {
        if !thick {
            return self
                .change(|s| s.store.create_volume(name, size_bytes))
                .await;
        }
        let sh = &self.0;
        let id = {
            let mut st = sh.write();
            st.check_failed()?;
            let id = st.store.create_thick_volume(name, size_bytes)?;
            // Nobody may open it before it is complete.
            st.open.insert(id, usize::MAX / 2);
            id
        };
        let r = self.fill_thick(id).await;
        {
            let mut st = sh.write();
            st.open.remove(&id);
            if r.is_err() {
                // Gives every cluster back.
                let _ = st.store.delete(id);
            }
        }
        r?;
        sh.commit().await?;
        Ok(id)
    }

    async fn fill_thick(&self, id: u64) -> Result<(), StoreError> {
        let sh = &self.0;
        let base = sh.base_channel()?;
        let clusters = sh.read().store.volume_clusters(id)?;
        let zeroes = base.io.geometry().supports_write_zeroes;
        let bs = u64::from(base.io.geometry().block_size);
        for i in 0..clusters {
            let c = sh.write().store.alloc_cluster()?;
            let addr = c * sh.cluster_size;
            let r = if zeroes {
                base.io
                    .write_zeroes(Lba(addr / bs), sh.cluster_size / bs)
                    .await
                    .1
            } else {
                crate::volume::write_zero_range(&base.io, addr, sh.cluster_size, false).await
            };
            let mut st = sh.write();
            if let Err(e) = r {
                st.store.abandon_cluster(c);
                return Err(store_io(&e));
            }
            let entry = MapEntry {
                own: c,
                own_bits: ALL_SUBCLUSTERS,
                back: 0,
                back_bits: 0,
            };
            if let Err(e) = st.store.set_entry(id, i, entry) {
                st.store.abandon_cluster(c);
                return Err(e);
            }
        }
        Ok(())
    }

    /// A read-only, point-in-time snapshot of volume `id` named `name`: O(1). Writes to the
    /// volume pause while it is taken; writes in flight finish first and are in it.
    ///
    /// # Errors
    /// No such volume, a bad or taken name, or an I/O error.
    pub async fn snapshot(&self, id: u64, name: &str) -> Result<u64, StoreError> {
        let t0 = std::time::Instant::now();
        self.0.freeze(id).await?;
        let frozen = t0.elapsed();
        let r = self.0.write().store.snapshot(id, name);
        self.0.unfreeze(id);
        let snap = r?;
        self.0.commit().await?;
        tracing::info!(
            store = %self.0.name,
            volume = id,
            snapshot = snap,
            freeze_ms = frozen.as_secs_f64() * 1e3,
            total_ms = t0.elapsed().as_secs_f64() * 1e3,
            "snapshot taken"
        );
        Ok(snap)
    }

    /// A writable volume named `name` with the contents of volume or snapshot `id`: O(1).
    ///
    /// # Errors
    /// No such volume, a bad or taken name, or an I/O error.
    pub async fn clone_volume(&self, id: u64, name: &str) -> Result<u64, StoreError> {
        self.0.freeze(id).await?;
        let r = self.0.write().store.clone_volume(id, name);
        self.0.unfreeze(id);
        let clone = r?;
        self.0.commit().await?;
        Ok(clone)
    }

    /// Makes volume `id` hold snapshot `snap`'s contents again: O(1).
    ///
    /// # Errors
    /// No such volume, a read-only target, sizes that differ, or an I/O error.
    pub async fn revert(&self, id: u64, snap: u64) -> Result<(), StoreError> {
        self.0.freeze(id).await?;
        let r = self.0.write().store.revert(id, snap);
        self.0.unfreeze(id);
        r?;
        self.0.commit().await
    }

    /// Deletes volume or snapshot `id` (whatever clones share its data); its space is free
    /// once the deletion is durable.
    ///
    /// # Errors
    /// No such volume, the volume is open ([`StoreError::Busy`]), or an I/O error.
    pub async fn delete(&self, id: u64) -> Result<(), StoreError> {
        self.change(|s| {
            if s.open.get(&id).is_some_and(|&n| n > 0) {
                return Err(StoreError::Busy(id));
            }
            s.store.delete(id)
        })
        .await?;
        tracing::info!(store = %self.0.name, volume = id, "volume deleted");
        Ok(())
    }

    /// Grows volume `id` to `size_bytes` (shrinking is refused). Channels opened before see the
    /// old size until reopened.
    ///
    /// # Errors
    /// No such volume, read-only, a smaller size, or an I/O error.
    pub async fn resize(&self, id: u64, size_bytes: u64) -> Result<(), StoreError> {
        self.change(|s| s.store.resize(id, size_bytes)).await
    }

    /// Renames volume `id`.
    ///
    /// # Errors
    /// No such volume, a bad or taken name, or an I/O error.
    pub async fn rename(&self, id: u64, name: &str) -> Result<(), StoreError> {
        self.change(|s| s.store.rename(id, name)).await
    }

    /// Sets or clears volume `id`'s read-only flag.
    ///
    /// # Errors
    /// No such volume, clearing it on a snapshot, or an I/O error.
    pub async fn set_read_only(&self, id: u64, on: bool) -> Result<(), StoreError> {
        self.change(|s| s.store.set_read_only(id, on)).await
    }

    /// Sets (`Some`) or removes (`None`) property `key` of volume `id`.
    ///
    /// # Errors
    /// No such volume, a bad key or value, or an I/O error.
    pub async fn set_property(
        &self,
        id: u64,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        self.change(|s| s.store.set_property(id, key, value)).await
    }

    /// Copies everything volume `id` shares (with snapshots, clones or its origin) into
    /// clusters of its own, so that it depends on nothing else.
    ///
    /// # Errors
    /// No such volume, no space, or an I/O error.
    pub async fn inflate(&self, id: u64) -> Result<(), StoreError> {
        let clusters = self.0.read().store.volume_clusters(id)?;
        for i in 0..clusters {
            crate::volume::inflate_cluster(&self.0, id, i).await?;
        }
        self.0.commit().await
    }

    /// Opens volume `id` as a bdev usable from every reactor. The volume cannot be deleted
    /// while the bdev exists.
    ///
    /// # Errors
    /// No such volume.
    pub fn open_volume(&self, id: u64) -> Result<Arc<VolumeBdev>, StoreError> {
        let mut st = self.0.write();
        st.check_failed()?;
        let name = format!("{}/{}", self.0.name, st.store.volume(id)?.record.name);
        *st.open.entry(id).or_insert(0) += 1;
        Ok(Arc::new(VolumeBdev::new(self.0.clone(), id, name)))
    }
}

fn info(v: &crate::store::Volume) -> VolumeInfo {
    let r = &v.record;
    VolumeInfo {
        id: r.id,
        uuid: r.uuid,
        name: r.name.clone(),
        size_bytes: r.size_bytes,
        read_only: r.flags & VOLUME_READ_ONLY != 0,
        snapshot: r.flags & VOLUME_SNAPSHOT != 0,
        thick: r.flags & VOLUME_THICK != 0,
        parent_id: r.parent_id,
        properties: v
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Collects the writes of [`Store::create`] so they can be issued asynchronously.
struct Recorder {
    size: u64,
    writes: Vec<(PageNo, Vec<u8>)>,
}

impl MetaDisk for Recorder {
    fn size_bytes(&self) -> u64 {
        self.size
    }

    fn read_page(&mut self, page: PageNo) -> Result<Vec<u8>, String> {
        Err(format!("{page}: no reads while creating"))
    }

    fn write_page(&mut self, page: PageNo, bytes: &[u8]) -> Result<(), String> {
        self.writes.push((page, bytes.to_vec()));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Copies buffer bytes out of a request's buffers, from byte `offset` of the request.
pub(crate) fn gather(bufs: &IoVecs, mut offset: usize, dst: &mut [u8]) {
    let mut done = 0;
    for b in bufs {
        if done == dst.len() {
            break;
        }
        if offset >= b.len() {
            offset -= b.len();
            continue;
        }
        let n = (b.len() - offset).min(dst.len() - done);
        dst[done..done + n].copy_from_slice(&b[offset..offset + n]);
        done += n;
        offset = 0;
    }
}

/// Copies bytes into a request's buffers, at byte `offset` of the request.
pub(crate) fn scatter(bufs: &mut IoVecs, mut offset: usize, src: &[u8]) {
    let mut done = 0;
    for b in bufs.iter_mut() {
        if done == src.len() {
            break;
        }
        if offset >= b.len() {
            offset -= b.len();
            continue;
        }
        let n = (b.len() - offset).min(src.len() - done);
        b[offset..offset + n].copy_from_slice(&src[done..done + n]);
        done += n;
        offset = 0;
    }
}
