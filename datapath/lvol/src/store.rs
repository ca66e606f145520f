//! The store's metadata: superblocks, the volume table, properties and the cluster maps, with
//! create, open and commit over a [`MetaDisk`].
//!
//! This layer is synchronous and owns no data I/O. The offline tools (`basalt lvol`, the
//! checker) use it directly on a file or device; the datapath drives the same logic from its
//! reactors. Data writes (copy-on-write of subclusters) sit above it, in the volume layer.
//!
//! Every management operation changes memory only. [`Store::commit`] makes the changes
//! durable in the order the shadow-paging design needs (docs/lvstore.md, "Commits"):
//! 1. flush (the data the new metadata points at is stable);
//! 2. write new map, table and property pages;
//! 3. flush;
//! 4. write the superblock into the other slot;
//! 5. flush.

use std::collections::BTreeMap;

use crate::alloc::SpaceMap;
use crate::format::{
    FormatError, MapEntry, PAGE_SIZE, PageNo, PropertiesPage, StoreBounds, Superblock,
    VOLUME_READ_ONLY, VOLUME_SNAPSHOT, VOLUME_THICK, VOLUMES_PER_PAGE, VolumeRecord,
    VolumeTablePage, check_name, map_height_for,
};
use crate::tree::{Forest, LoadError, Lookup, Map, NoSpace};

/// Page-granular access to the base device, for metadata.
pub trait MetaDisk {
    /// Bytes addressable.
    fn size_bytes(&self) -> u64;
    /// Reads one 4 KiB page.
    ///
    /// # Errors
    /// The device's error, as text.
    fn read_page(&mut self, page: PageNo) -> Result<Vec<u8>, String>;
    /// Writes one 4 KiB page (durable only after a later [`MetaDisk::flush`]).
    ///
    /// # Errors
    /// The device's error, as text.
    fn write_page(&mut self, page: PageNo, bytes: &[u8]) -> Result<(), String>;
    /// Makes every completed write durable.
    ///
    /// # Errors
    /// The device's error, as text.
    fn flush(&mut self) -> Result<(), String>;
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum StoreError {
    /// the base device failed: {0}
    Io(String),
    /// no valid superblock: slot 0: {slot0}; slot 1: {slot1}
    NoSuperblock {
        /// Why slot 0 was refused.
        slot0: FormatError,
        /// Why slot 1 was refused.
        slot1: FormatError,
    },
    /// {0}
    Format(#[from] FormatError),
    /// metadata is inconsistent: {0}
    Load(#[from] LoadError),
    /// the store is full
    NoSpace,
    /// no volume with id {0}
    NoVolume(u64),
    /// a volume named {0:?} exists already
    NameTaken(String),
    /// volume {0} is read-only
    ReadOnly(u64),
    /// volume sizes only grow ({from} bytes asked to become {to})
    Shrink {
        /// The current size.
        from: u64,
        /// The size asked for.
        to: u64,
    },
    /// volume {0} is open; close it first
    Busy(u64),
    /// the store stopped after an I/O error and must be reopened: {0}
    Failed(String),
    /// {0}
    Invalid(String),
}

impl From<NoSpace> for StoreError {
    fn from(_: NoSpace) -> StoreError {
        StoreError::NoSpace
    }
}

/// One volume: its record, map and properties.
#[derive(Debug, Clone)]
pub struct Volume {
    /// The record as it will be committed (map root and height follow `map`).
    pub record: VolumeRecord,
    /// The cluster map.
    pub map: Map,
    /// Key/value properties.
    pub properties: BTreeMap<String, Vec<u8>>,
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    sb: Superblock,
    /// Which superblock slot holds the current commit.
    slot: u64,
    volumes: BTreeMap<u64, Volume>,
    forest: Forest,
    /// Pages of the committed volume table and property chains (released at the next commit).
    table_pages: Vec<PageNo>,
    /// The volume table or properties changed since the last capture.
    dirty: bool,
}

/// A captured commit: see [`Store::begin_commit`].
#[derive(Debug)]
pub struct CommitPlan {
    /// Metadata pages to write, after a flush of the data and before the superblock.
    pub pages: Vec<(PageNo, Box<[u8; PAGE_SIZE]>)>,
    /// The encoded superblock, written once the pages are durable.
    pub superblock: Box<[u8; PAGE_SIZE]>,
    /// The slot (page 0 or 1) the superblock goes to.
    pub slot: PageNo,
    sb: Superblock,
}

fn io(e: String) -> StoreError {
    StoreError::Io(e)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn new_uuid(salt: u64) -> [u8; 16] {
    // Random enough to tell stores and volumes apart: time, pid, a counter, a hash mix.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut out = [0u8; 16];
    let mut x = now_ns() ^ u64::from(std::process::id()) << 32 ^ salt ^ n.rotate_left(17);
    for chunk in out.chunks_mut(8) {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}

impl Store {
    /// Writes a new, empty store on `disk` (whatever was there is forgotten).
    ///
    /// # Errors
    /// A bad name, cluster or block size, a device smaller than two clusters, or an I/O error.
    pub fn create(
        disk: &mut dyn MetaDisk,
        name: &str,
        cluster_size: u32,
        block_size: u32,
    ) -> Result<Store, StoreError> {
        let total_clusters = disk.size_bytes() / u64::from(cluster_size.max(1));
        let now = now_ns();
        let sb = Superblock {
            flags: 0,
            uuid: new_uuid(total_clusters),
            name: name.to_owned(),
            generation: 1,
            block_size,
            cluster_size,
            total_clusters,
            volume_table: PageNo::NONE,
            allocated_clusters: 1,
            provisioned_bytes: 0,
            next_volume_id: 1,
            created_ns: now,
            committed_ns: now,
        };
        sb.validate()?;
        // Slot 1 is cleared so that a superblock of an earlier store there cannot win.
        disk.write_page(PageNo(1), &[0u8; PAGE_SIZE]).map_err(io)?;
        disk.write_page(PageNo(0), &*sb.encode()).map_err(io)?;
        disk.flush().map_err(io)?;
        let space = SpaceMap::new(total_clusters, cluster_size);
        Ok(Store {
            forest: Forest::new(space, 2),
            sb,
            slot: 0,
            volumes: BTreeMap::new(),
            table_pages: Vec::new(),
            dirty: true,
        })
    }

    /// Opens the store on `disk` at its last commit.
    ///
    /// # Errors
    /// No valid superblock, metadata that does not decode or is inconsistent, or an I/O error.
    pub fn open(disk: &mut dyn MetaDisk) -> Result<Store, StoreError> {
        let read_sb = |disk: &mut dyn MetaDisk, p| -> Result<Superblock, FormatError> {
            let bytes = disk
                .read_page(PageNo(p))
                .map_err(|e| FormatError::Invalid {
                    what: "superblock",
                    detail: e,
                })?;
            Superblock::decode(&bytes)
        };
        let (sb, slot) = match (read_sb(disk, 0), read_sb(disk, 1)) {
            (Ok(a), Ok(b)) if b.generation > a.generation => (b, 1),
            (Ok(a), _) => (a, 0),
            (Err(_), Ok(b)) => (b, 1),
            (Err(slot0), Err(slot1)) => return Err(StoreError::NoSuperblock { slot0, slot1 }),
        };
        let needed = sb.total_clusters * u64::from(sb.cluster_size);
        if disk.size_bytes() < needed {
            return Err(StoreError::Invalid(format!(
                "the device holds {} bytes but the store spans {needed}: it was truncated or \
                 is not the device the store was made on",
                disk.size_bytes()
            )));
        }
        let bounds = StoreBounds::from(&sb);
        let mut space = SpaceMap::new(sb.total_clusters, sb.cluster_size);
        let mut volumes = BTreeMap::new();
        let mut table_pages = Vec::new();
        let mut page = sb.volume_table;
        while page.is_some() {
            space.claim_page(page).map_err(LoadError::from)?;
            table_pages.push(page);
            let bytes = disk.read_page(page).map_err(io)?;
            let t = VolumeTablePage::decode(&bytes, page, &bounds)?;
            for record in t.volumes {
                let mut properties = BTreeMap::new();
                let mut p = record.properties;
                while p.is_some() {
                    space.claim_page(p).map_err(LoadError::from)?;
                    table_pages.push(p);
                    let bytes = disk.read_page(p).map_err(io)?;
                    let pp = PropertiesPage::decode(&bytes, p, &bounds)?;
                    for (k, v) in pp.pairs {
                        if properties.insert(k.clone(), v).is_some() {
                            return Err(StoreError::Invalid(format!(
                                "volume {}: property {k:?} appears twice",
                                record.id
                            )));
                        }
                    }
                    p = pp.next;
                }
                if record.id >= sb.next_volume_id {
                    return Err(StoreError::Invalid(format!(
                        "volume id {} is not below the next id {}",
                        record.id, sb.next_volume_id
                    )));
                }
                let map = Map {
                    root: record.map_root,
                    height: record.map_height,
                };
                let id = record.id;
                let v = Volume {
                    record,
                    map,
                    properties,
                };
                if volumes.insert(id, v).is_some() {
                    return Err(StoreError::Invalid(format!("volume id {id} appears twice")));
                }
            }
            page = t.next;
        }
        let maps: Vec<Map> = volumes.values().map(|v| v.map).collect();
        let forest = Forest::load(space, sb.generation + 1, &bounds, &maps, |p| {
            disk.read_page(p)
        })?;
        let mut names = std::collections::HashSet::new();
        for v in volumes.values() {
            if !names.insert(v.record.name.as_str()) {
                return Err(StoreError::Invalid(format!(
                    "two volumes are named {:?}",
                    v.record.name
                )));
            }
        }
        Ok(Store {
            sb,
            slot,
            volumes,
            forest,
            table_pages,
            dirty: false,
        })
    }

    /// Makes every change since the last commit durable, in the order of the module
    /// documentation. The asynchronous volume layer runs the same steps itself around
    /// [`Store::begin_commit`] and [`Store::finish_commit`].
    ///
    /// # Errors
    /// An I/O error (the store is then as of the last commit on disk; reopen it), or no space
    /// for the new metadata pages.
    pub fn commit(&mut self, disk: &mut dyn MetaDisk) -> Result<(), StoreError> {
        disk.flush().map_err(io)?;
        let plan = self.begin_commit()?;
        for (p, bytes) in &plan.pages {
            disk.write_page(*p, &**bytes).map_err(io)?;
        }
        disk.flush().map_err(io)?;
        disk.write_page(plan.slot, &*plan.superblock).map_err(io)?;
        disk.flush().map_err(io)?;
        self.finish_commit(plan);
        self.release_committed_space();
        Ok(())
    }

    /// Whether anything changed since the last captured commit.
    pub fn is_dirty(&self) -> bool {
        self.dirty || self.forest.has_changes()
    }

    /// Captures a commit: encodes every new or changed metadata page and the superblock that
    /// will point at them. The caller then writes the pages (after flushing the data that
    /// they point at), flushes, writes the superblock into [`CommitPlan::slot`], flushes, and
    /// calls [`Store::finish_commit`]. Changes made meanwhile belong to the next commit. If
    /// any of those writes fails, the store must be reopened: its memory already treats the
    /// captured pages as committed.
    ///
    /// # Errors
    /// No space for the new metadata pages.
    pub fn begin_commit(&mut self) -> Result<CommitPlan, StoreError> {
        // The volume table and properties are small: rewrite them whole, to fresh pages.
        for p in std::mem::take(&mut self.table_pages) {
            self.forest.space_mut().release_page(p);
        }
        let generation = self.sb.generation + 1;
        let uuid = self.sb.uuid;
        let mut writes: Vec<(PageNo, Box<[u8; PAGE_SIZE]>)> = Vec::new();
        for v in self.volumes.values_mut() {
            v.record.map_root = v.map.root;
            v.record.map_height = v.map.height;
            v.record.properties = PageNo::NONE;
            let pairs: Vec<(String, Vec<u8>)> = v.properties.clone().into_iter().collect();
            // Pack pairs into as few pages as they fit, chained back to front.
            let mut chunks: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
            for pair in pairs {
                match chunks.last_mut() {
                    Some(c)
                        if PropertiesPage::encoded_len(c) + 4 + pair.0.len() + pair.1.len()
                            <= crate::format::BODY_LEN =>
                    {
                        c.push(pair)
                    }
                    _ => chunks.push(vec![pair]),
                }
            }
            let mut next = PageNo::NONE;
            for chunk in chunks.into_iter().rev() {
                let page = self
                    .forest
                    .space_mut()
                    .alloc_page()
                    .ok_or(StoreError::NoSpace)?;
                let pp = PropertiesPage {
                    generation,
                    next,
                    pairs: chunk,
                };
                writes.push((page, pp.encode(page, &uuid)?));
                self.table_pages.push(page);
                next = page;
            }
            v.record.properties = next;
        }
        let records: Vec<VolumeRecord> = self.volumes.values().map(|v| v.record.clone()).collect();
        let mut next = PageNo::NONE;
        for chunk in records.chunks(VOLUMES_PER_PAGE).rev() {
            let page = self
                .forest
                .space_mut()
                .alloc_page()
                .ok_or(StoreError::NoSpace)?;
            let t = VolumeTablePage {
                generation,
                next,
                volumes: chunk.to_vec(),
            };
            writes.push((page, t.encode(page, &uuid)));
            self.table_pages.push(page);
            next = page;
        }
        let mut sb = self.sb.clone();
        sb.generation = generation;
        sb.volume_table = next;
        sb.committed_ns = now_ns();
        sb.provisioned_bytes = self
            .volumes
            .values()
            .map(|v| v.record.size_bytes)
            .fold(0u64, u64::saturating_add);
        // Counted before sealing, which does not change the prediction.
        sb.allocated_clusters = self.forest.allocated_after_commit();
        writes.extend(self.forest.seal(&uuid));
        self.dirty = false;
        Ok(CommitPlan {
            pages: writes,
            superblock: sb.encode(),
            slot: PageNo(1 - self.slot),
            sb,
        })
    }

    /// The superblock of `plan` is durable: it becomes the store's current commit. The space
    /// its changes released becomes free with [`Store::release_committed_space`], which the
    /// volume layer calls once no I/O can still use that space; the next
    /// [`Store::begin_commit`] must come after it.
    pub fn finish_commit(&mut self, plan: CommitPlan) {
        self.sb = plan.sb;
        self.slot = plan.slot.0;
        self.forest.commit_durable_shares();
    }

    /// Frees the space released by the commit finished last.
    pub fn release_committed_space(&mut self) {
        self.forest.release_sealed();
    }

    /// The committed superblock (as of the last commit or open).
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The cluster maps.
    pub fn forest(&self) -> &Forest {
        &self.forest
    }

    /// The cluster maps, for the volume layer.
    pub fn forest_mut(&mut self) -> &mut Forest {
        &mut self.forest
    }

    /// Every volume, by id.
    pub fn volumes(&self) -> impl Iterator<Item = &Volume> {
        self.volumes.values()
    }

    /// One volume.
    ///
    /// # Errors
    /// [`StoreError::NoVolume`].
    pub fn volume(&self, id: u64) -> Result<&Volume, StoreError> {
        self.volumes.get(&id).ok_or(StoreError::NoVolume(id))
    }

    /// The volume named `name`.
    pub fn find(&self, name: &str) -> Option<&Volume> {
        self.volumes.values().find(|v| v.record.name == name)
    }

    fn check_new_name(&self, name: &str) -> Result<(), StoreError> {
        check_name("volume", name)?;
        if self.find(name).is_some() {
            return Err(StoreError::NameTaken(name.to_owned()));
        }
        Ok(())
    }

    fn add(&mut self, name: &str, size_bytes: u64, flags: u32, parent_id: u64, map: Map) -> u64 {
        let id = self.sb.next_volume_id;
        self.sb.next_volume_id += 1;
        let record = VolumeRecord {
            id,
            uuid: new_uuid(id),
            name: name.to_owned(),
            flags,
            map_height: map.height,
            size_bytes,
            map_root: map.root,
            parent_id,
            created_ns: now_ns(),
            properties: PageNo::NONE,
        };
        self.dirty = true;
        self.volumes.insert(
            id,
            Volume {
                record,
                map,
                properties: BTreeMap::new(),
            },
        );
        id
    }

    fn clusters_for(&self, size_bytes: u64) -> u64 {
        size_bytes.div_ceil(u64::from(self.sb.cluster_size))
    }

    /// Creates an empty thin volume of `size_bytes` (a multiple of the block size).
    ///
    /// # Errors
    /// A bad or taken name, or a bad size.
    pub fn create_volume(&mut self, name: &str, size_bytes: u64) -> Result<u64, StoreError> {
        self.check_new_name(name)?;
        self.check_size(size_bytes)?;
        let map = Map::empty(map_height_for(self.clusters_for(size_bytes)));
        Ok(self.add(name, size_bytes, 0, 0, map))
    }

    /// Creates a volume flagged thick, with nothing mapped yet: the volume layer then
    /// allocates and zeroes every cluster ([`Store::set_entry`]) before committing.
    ///
    /// # Errors
    /// A bad or taken name, a bad size, or fewer free clusters than the volume needs.
    pub fn create_thick_volume(&mut self, name: &str, size_bytes: u64) -> Result<u64, StoreError> {
        self.check_new_name(name)?;
        self.check_size(size_bytes)?;
        let clusters = self.clusters_for(size_bytes);
        if clusters > self.forest.space().free_clusters() {
            return Err(StoreError::NoSpace);
        }
        let map = Map::empty(map_height_for(clusters));
        Ok(self.add(name, size_bytes, VOLUME_THICK, 0, map))
    }

    /// The base device grew to `device_bytes`: the store takes the whole clusters added.
    /// Returns the store's clusters after growing.
    ///
    /// # Errors
    /// A device smaller than the store (stores never shrink).
    pub fn grow_store(&mut self, device_bytes: u64) -> Result<u64, StoreError> {
        let total = device_bytes / u64::from(self.sb.cluster_size);
        if total < self.sb.total_clusters {
            return Err(StoreError::Invalid(format!(
                "the device holds {device_bytes} bytes, less than the store's {} clusters",
                self.sb.total_clusters
            )));
        }
        if total > self.sb.total_clusters {
            self.forest.space_mut().grow(total);
            self.sb.total_clusters = total;
            self.dirty = true;
        }
        Ok(total)
    }

    /// Clusters of `cluster_size` bytes that volume `id` spans.
    ///
    /// # Errors
    /// [`StoreError::NoVolume`].
    pub fn volume_clusters(&self, id: u64) -> Result<u64, StoreError> {
        Ok(self.clusters_for(self.volume(id)?.record.size_bytes))
    }

    /// The map entry for cluster `index` of volume `id` (see [`Forest::lookup`]).
    ///
    /// # Errors
    /// No such volume, or an index beyond its size.
    pub fn lookup(&self, id: u64, index: u64) -> Result<Lookup, StoreError> {
        let v = self.volume(id)?;
        if index >= self.clusters_for(v.record.size_bytes) {
            return Err(StoreError::Invalid(format!(
                "cluster {index} lies beyond volume {id}"
            )));
        }
        Ok(self.forest.lookup(&v.map, index))
    }

    /// Sets the map entry for cluster `index` of volume `id` (the volume layer, after the
    /// data the entry points at was written).
    ///
    /// # Errors
    /// No such volume, an index beyond its size, or no space for a page copy.
    pub fn set_entry(&mut self, id: u64, index: u64, entry: MapEntry) -> Result<(), StoreError> {
        let clusters = self.volume_clusters(id)?;
        if index >= clusters {
            return Err(StoreError::Invalid(format!(
                "cluster {index} lies beyond volume {id}"
            )));
        }
        let v = self.volumes.get_mut(&id).expect("checked");
        self.forest.set(&mut v.map, index, entry)?;
        Ok(())
    }

    /// Takes a free data cluster for [`Store::set_entry`].
    ///
    /// # Errors
    /// [`StoreError::NoSpace`].
    pub fn alloc_cluster(&mut self) -> Result<u64, StoreError> {
        Ok(self.forest.alloc_cluster()?)
    }

    /// Gives back a cluster from [`Store::alloc_cluster`] that no entry names.
    pub fn abandon_cluster(&mut self, cluster: u64) {
        self.forest.abandon_cluster(cluster);
    }

    fn check_size(&self, size_bytes: u64) -> Result<(), StoreError> {
        let bs = u64::from(self.sb.block_size);
        if size_bytes == 0 || !size_bytes.is_multiple_of(bs) {
            return Err(StoreError::Invalid(format!(
                "size {size_bytes} is not a positive multiple of the block size {bs}"
            )));
        }
        if size_bytes > crate::format::MAX_VOLUME_BYTES {
            return Err(StoreError::Invalid(format!(
                "size {size_bytes} is beyond the largest volume, {} bytes (1 PiB)",
                crate::format::MAX_VOLUME_BYTES
            )));
        }
        Ok(())
    }

    /// A read-only, point-in-time snapshot of volume `id`, named `name`: O(1).
    ///
    /// # Errors
    /// No such volume, or a bad or taken name.
    pub fn snapshot(&mut self, id: u64, name: &str) -> Result<u64, StoreError> {
        self.check_new_name(name)?;
        let v = self.volume(id)?;
        let (size, map) = (v.record.size_bytes, v.map);
        let shared = self.forest.share(&map);
        Ok(self.add(name, size, VOLUME_SNAPSHOT | VOLUME_READ_ONLY, id, shared))
    }

    /// A writable volume named `name` with the contents of volume or snapshot `id`: O(1).
    ///
    /// # Errors
    /// No such volume, or a bad or taken name.
    pub fn clone_volume(&mut self, id: u64, name: &str) -> Result<u64, StoreError> {
        self.check_new_name(name)?;
        let v = self.volume(id)?;
        let (size, map) = (v.record.size_bytes, v.map);
        let shared = self.forest.share(&map);
        Ok(self.add(name, size, 0, id, shared))
    }

    /// Deletes volume or snapshot `id`, whatever shares its clusters; space nothing else
    /// references is freed at the next commit.
    ///
    /// # Errors
    /// [`StoreError::NoVolume`].
    pub fn delete(&mut self, id: u64) -> Result<(), StoreError> {
        let v = self.volumes.remove(&id).ok_or(StoreError::NoVolume(id))?;
        self.dirty = true;
        self.forest.drop_map(v.map);
        Ok(())
    }

    /// Makes volume `id` hold the contents of snapshot `snap` again.
    ///
    /// # Errors
    /// No such volume, a source that is not a snapshot, a read-only target, or sizes that
    /// differ (the volume was resized since the snapshot; Cinder refuses that revert too).
    pub fn revert(&mut self, id: u64, snap: u64) -> Result<(), StoreError> {
        let s = self.volume(snap)?;
        if s.record.flags & VOLUME_SNAPSHOT == 0 {
            return Err(StoreError::Invalid(format!(
                "volume {snap} is not a snapshot: revert refused"
            )));
        }
        let (s_size, s_map) = (s.record.size_bytes, s.map);
        let v = self.volume(id)?;
        if v.record.flags & VOLUME_READ_ONLY != 0 {
            return Err(StoreError::ReadOnly(id));
        }
        if v.record.size_bytes != s_size {
            return Err(StoreError::Invalid(format!(
                "volume {id} is {} bytes, snapshot {snap} {s_size}: revert refused",
                v.record.size_bytes
            )));
        }
        let shared = self.forest.share(&s_map);
        self.dirty = true;
        let v = self.volumes.get_mut(&id).expect("checked");
        let old = std::mem::replace(&mut v.map, shared);
        self.forest.drop_map(old);
        Ok(())
    }

    /// Grows volume `id` to `size_bytes`.
    ///
    /// # Errors
    /// No such volume, a read-only volume, a smaller size, or no space for map pages.
    pub fn resize(&mut self, id: u64, size_bytes: u64) -> Result<(), StoreError> {
        self.check_size(size_bytes)?;
        let clusters = self.clusters_for(size_bytes);
        let v = self.volumes.get_mut(&id).ok_or(StoreError::NoVolume(id))?;
        if v.record.flags & VOLUME_READ_ONLY != 0 {
            return Err(StoreError::ReadOnly(id));
        }
        if size_bytes < v.record.size_bytes {
            return Err(StoreError::Shrink {
                from: v.record.size_bytes,
                to: size_bytes,
            });
        }
        self.forest.grow(&mut v.map, clusters)?;
        v.record.size_bytes = size_bytes;
        self.dirty = true;
        Ok(())
    }

    /// Renames volume `id`.
    ///
    /// # Errors
    /// No such volume, or a bad or taken name.
    pub fn rename(&mut self, id: u64, name: &str) -> Result<(), StoreError> {
        if self.volume(id)?.record.name == name {
            return Ok(());
        }
        self.check_new_name(name)?;
        self.volumes.get_mut(&id).expect("checked").record.name = name.to_owned();
        self.dirty = true;
        Ok(())
    }

    /// Sets or clears volume `id`'s read-only flag (snapshots stay read-only).
    ///
    /// # Errors
    /// No such volume, or clearing it on a snapshot.
    pub fn set_read_only(&mut self, id: u64, on: bool) -> Result<(), StoreError> {
        let v = self.volumes.get_mut(&id).ok_or(StoreError::NoVolume(id))?;
        if !on && v.record.flags & VOLUME_SNAPSHOT != 0 {
            return Err(StoreError::Invalid(format!("volume {id} is a snapshot")));
        }
        self.dirty = true;
        if on {
            v.record.flags |= VOLUME_READ_ONLY;
        } else {
            v.record.flags &= !VOLUME_READ_ONLY;
        }
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) a property of volume `id`.
    ///
    /// # Errors
    /// No such volume, an empty or over-long key, or a value over 4000 bytes.
    pub fn set_property(
        &mut self,
        id: u64,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        if key.is_empty() || key.len() > crate::format::MAX_PROPERTY_KEY {
            return Err(StoreError::Invalid(
                "property keys are 1 to 255 bytes".into(),
            ));
        }
        if value.is_some_and(|v| 8 + 4 + key.len() + v.len() > crate::format::BODY_LEN) {
            return Err(StoreError::Invalid(format!(
                "property {key:?}: the value does not fit one page"
            )));
        }
        let v = self.volumes.get_mut(&id).ok_or(StoreError::NoVolume(id))?;
        self.dirty = true;
        match value {
            Some(val) => v.properties.insert(key.to_owned(), val.to_vec()),
            None => v.properties.remove(key),
        };
        Ok(())
    }
}

/// What [`Store::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Inconsistencies, each precise enough to act on. Empty for a healthy store.
    pub problems: Vec<String>,
    /// Facts worth knowing that are not problems.
    pub notes: Vec<String>,
}

impl Store {
    /// Verifies an opened store beyond what opening checks (on a store in use: meaningful
    /// right after a commit, with nothing changed since) (every page decoded and bounded,
    /// no page referenced twice, no cluster used as both data and metadata, levels and
    /// names consistent): the superblock's space accounting against the maps, and lineage.
    pub fn check(&self) -> CheckReport {
        let mut r = CheckReport::default();
        // Clusters being written for an entry not set yet are not the maps' (yet), and space
        // released is counted as free, as the superblock counts it.
        let used = self.forest.allocated_after_commit();
        if self.sb.allocated_clusters != used {
            r.problems.push(format!(
                "superblock counts {} allocated clusters, the maps and metadata use {used}",
                self.sb.allocated_clusters
            ));
        }
        let provisioned: u64 = self
            .volumes
            .values()
            .map(|v| v.record.size_bytes)
            .fold(0u64, u64::saturating_add);
        if self.sb.provisioned_bytes != provisioned {
            r.problems.push(format!(
                "superblock counts {} provisioned bytes, the volumes add up to {provisioned}",
                self.sb.provisioned_bytes
            ));
        }
        for v in self.volumes.values() {
            let p = v.record.parent_id;
            if p != 0 && !self.volumes.contains_key(&p) {
                r.notes.push(format!(
                    "volume {} ({}): its parent {p} has been deleted (its data is kept by reference)",
                    v.record.id, v.record.name
                ));
            }
        }
        r
    }
}

#[cfg(test)]
mod tests;
