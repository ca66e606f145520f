//! What the datapath exports: volume stores opened on its block devices, volumes, the logical
//! units that iSCSI targets put in front of them, NVMe-oF subsystems and NBD exports.
//!
//! One [`LogicalUnit`] exists per backing device, whichever targets list it, so reservations and
//! unit attentions are the device's, as SCSI requires. Changes made while the daemon runs (the
//! admin socket, later the control plane's rings) go through [`Exports`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use basalt_bdev::{Bdev, BdevSet, IoVecs};
use basalt_engine::ReactorHandle;
use basalt_iscsi::server::IscsiTarget;
use basalt_iscsi::{Access, ChapCredentials, TargetNode};
use basalt_lvol::{LvStore, VolumeInfo};
use basalt_nvmf::NvmfTarget;
use basalt_scsi::{LogicalUnit, LuConfig};

use crate::DatapathError;
use crate::config::{
    ChapConfig, IscsiTargetConfig, LunConfig, LvsConfig, NbdExportConfig, NvmfSubsystemConfig,
    VolumeConfig,
};

/// Rate of a SANITIZE overwrite or block erase, bytes per second.
const SANITIZE_BYTES_PER_SEC: u64 = 128 << 20;

/// Default cluster size of a store the daemon creates.
const DEFAULT_CLUSTER: u64 = 1 << 20;

/// A logical unit's backing device, by how the configuration names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Backing {
    Bdev(String),
    Volume { store: String, volume: String },
}

/// Stores, volumes and logical units of a running datapath.
#[derive(Debug)]
pub struct Exports {
    bdevs: BdevSet,
    stores: Mutex<BTreeMap<String, LvStore>>,
    /// The block device under each store, by store name: one store per device.
    store_bdevs: Mutex<BTreeMap<String, String>>,
    lus: Mutex<BTreeMap<Backing, Weak<LogicalUnit>>>,
    iscsi: Option<Arc<IscsiTarget>>,
    nvmf: Option<Arc<NvmfTarget>>,
    /// NVMe namespaces by backing device: (subsystem NQN, NSID), for resize events.
    namespaces: Mutex<BTreeMap<Backing, Vec<(String, u32)>>>,
    nbd: Option<Arc<basalt_nbd::NbdTarget>>,
    /// NBD exports as asked for, by name (for idempotent adds and the list).
    nbd_exports: Mutex<BTreeMap<String, NbdExportConfig>>,
    /// Where async store operations run.
    reactor: ReactorHandle,
}

fn fail(msg: impl Into<String>) -> DatapathError {
    DatapathError::Config(msg.into())
}

/// A create of `name` found it there already: fine if it is of the kind asked for.
fn idempotent(
    store: &str,
    name: &str,
    v: &VolumeInfo,
    snapshot: bool,
) -> Result<u64, DatapathError> {
    if v.snapshot == snapshot {
        Ok(v.id)
    } else {
        Err(DatapathError::Store {
            what: format!("{store}/{name}"),
            source: basalt_lvol::StoreError::NameTaken(name.to_owned()),
        })
    }
}

/// A stable UUID for a raw block device, from its name (FNV-1a, 128 bits, with the RFC 9562
/// version 8 and variant bits), so its SCSI identity survives restarts.
pub fn bdev_uuid(name: &str) -> [u8; 16] {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h = OFFSET;
    for b in b"basalt-bdev:".iter().chain(name.as_bytes()) {
        h ^= u128::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    let mut u = h.to_be_bytes();
    u[6] = (u[6] & 0x0f) | 0x80;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn chap(c: &Option<ChapConfig>) -> Option<ChapCredentials> {
    c.as_ref().map(|c| ChapCredentials {
        user: c.user.clone(),
        secret: c.secret.clone(),
    })
}

/// Checks CHAP settings: RFC 7143 §12.1.3 asks for secrets of at least 96 bits, and mutual CHAP
/// needs one-way CHAP with a different secret.
fn check_chap(
    what: &str,
    one: &Option<ChapConfig>,
    mutual: &Option<ChapConfig>,
) -> Result<(), DatapathError> {
    for c in one.iter().chain(mutual.iter()) {
        if c.user.is_empty() || c.secret.len() < 12 || c.secret.len() > 255 {
            return Err(fail(format!(
                "{what}: CHAP needs a user name and a secret of 12 to 255 bytes"
            )));
        }
    }
    match (one, mutual) {
        (None, Some(_)) => Err(fail(format!("{what}: mutual_chap needs chap as well"))),
        (Some(a), Some(b)) if a.secret == b.secret => Err(fail(format!(
            "{what}: the mutual CHAP secret must differ from the initiator's"
        ))),
        _ => Ok(()),
    }
}

impl Exports {
    /// Opens (or creates) the configured stores and volumes, on `reactor`.
    ///
    /// # Errors
    /// A store that cannot be opened, a device that is not blank where a store is to be
    /// created, or a volume that cannot be created.
    pub fn open(
        bdevs: BdevSet,
        stores: &[LvsConfig],
        volumes: &[VolumeConfig],
        iscsi: Option<Arc<IscsiTarget>>,
        nvmf: Option<Arc<NvmfTarget>>,
        nbd: Option<Arc<basalt_nbd::NbdTarget>>,
        reactor: ReactorHandle,
    ) -> Result<Exports, DatapathError> {
        let ex = Exports {
            bdevs,
            stores: Mutex::new(BTreeMap::new()),
            store_bdevs: Mutex::new(BTreeMap::new()),
            lus: Mutex::new(BTreeMap::new()),
            iscsi,
            nvmf,
            namespaces: Mutex::new(BTreeMap::new()),
            nbd,
            nbd_exports: Mutex::new(BTreeMap::new()),
            reactor,
        };
        for s in stores {
            ex.add_store(s)?;
        }
        for v in volumes {
            ex.ensure_volume(v)?;
        }
        Ok(ex)
    }

    fn open_store(&self, cfg: &LvsConfig) -> Result<LvStore, DatapathError> {
        let base = self
            .bdevs
            .get(&cfg.bdev)
            .ok_or_else(|| fail(format!("lvs {}: no block device {}", cfg.name, cfg.bdev)))?;
        let cluster = cfg.cluster_size.map_or(DEFAULT_CLUSTER, |c| c.0);
        let cluster = u32::try_from(cluster)
            .map_err(|_| fail(format!("lvs {}: cluster_size too large", cfg.name)))?;
        let (name, create) = (cfg.name.clone(), cfg.create);
        let lvs = self
            .reactor
            .block_on(move || async move {
                match LvStore::open(base.clone()).await {
                    Ok(lvs) => Ok(lvs),
                    Err(open_err) if create => {
                        if !device_is_blank(&base).await? {
                            return Err(format!(
                                "no volume store on {} ({open_err}), and the device is not \
                                 blank, so it is not formatted",
                                base.name()
                            ));
                        }
                        LvStore::create(base, &name, cluster)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                }
            })
            .map_err(DatapathError::Engine)?
            .map_err(|e| fail(format!("lvs {}: {e}", cfg.name)))?;
        if lvs.name() != cfg.name {
            return Err(fail(format!(
                "lvs {}: the store on {} is called {}",
                cfg.name,
                cfg.bdev,
                lvs.name()
            )));
        }
        let space = lvs.space();
        tracing::info!(
            store = lvs.name(),
            bdev = %cfg.bdev,
            volumes = lvs.volumes().len(),
            total_clusters = space.total_clusters,
            used_clusters = space.used_clusters,
            "volume store ready"
        );
        Ok(lvs)
    }

    /// Opens (or, with `create`, makes on a blank device) the store `cfg` on a running
    /// datapath. Asking again for a store that is open on the same device is answered as done;
    /// a name or a device already in use by another store is refused.
    ///
    /// # Errors
    /// As above, or the store cannot be opened or made.
    pub fn add_store(&self, cfg: &LvsConfig) -> Result<(), DatapathError> {
        {
            let bdevs = self.store_bdevs.lock().expect("store bdevs lock");
            if let Some(b) = bdevs.get(&cfg.name) {
                return if *b == cfg.bdev {
                    Ok(())
                } else {
                    Err(fail(format!(
                        "lvs {}: a store of that name is open on {b}",
                        cfg.name
                    )))
                };
            }
            if let Some((other, _)) = bdevs.iter().find(|(_, b)| **b == cfg.bdev) {
                return Err(fail(format!(
                    "lvs {}: block device {} holds store {other} already",
                    cfg.name, cfg.bdev
                )));
            }
        }
        let lvs = self.open_store(cfg)?;
        let mut bdevs = self.store_bdevs.lock().expect("store bdevs lock");
        // Two callers racing on the same device: the second one's store is dropped unused.
        if bdevs.values().any(|b| *b == cfg.bdev) || bdevs.contains_key(&cfg.name) {
            return Err(fail(format!(
                "lvs {}: block device {} was taken meanwhile",
                cfg.name, cfg.bdev
            )));
        }
        bdevs.insert(cfg.name.clone(), cfg.bdev.clone());
        self.stores
            .lock()
            .expect("stores lock")
            .insert(cfg.name.clone(), lvs);
        Ok(())
    }

    /// The block device under store `name`.
    pub fn store_bdev(&self, name: &str) -> Option<String> {
        self.store_bdevs
            .lock()
            .expect("store bdevs lock")
            .get(name)
            .cloned()
    }

    /// The store called `name`.
    pub fn store(&self, name: &str) -> Option<LvStore> {
        self.stores.lock().expect("stores lock").get(name).cloned()
    }

    /// Every store.
    pub fn stores(&self) -> Vec<LvStore> {
        self.stores
            .lock()
            .expect("stores lock")
            .values()
            .cloned()
            .collect()
    }

    /// The iSCSI target, if configured.
    pub fn iscsi(&self) -> Option<&Arc<IscsiTarget>> {
        self.iscsi.as_ref()
    }

    /// Creates volume `cfg` unless it exists; returns its id.
    ///
    /// # Errors
    /// No such store, or the store refused.
    pub fn ensure_volume(&self, cfg: &VolumeConfig) -> Result<u64, DatapathError> {
        let lvs = self.store(&cfg.lvs).ok_or_else(|| {
            DatapathError::NotFound(format!("store {} (for volume {})", cfg.lvs, cfg.name))
        })?;
        if let Some(v) = lvs.find(&cfg.name) {
            return idempotent(&cfg.lvs, &cfg.name, &v, false);
        }
        let (name, size, thick) = (cfg.name.clone(), cfg.size.0, cfg.thick);
        let id = self
            .reactor
            .block_on(move || async move { lvs.create_volume(&name, size, thick).await })
            .map_err(DatapathError::Engine)?
            .map_err(|source| DatapathError::Store {
                what: format!("volume {}/{}", cfg.lvs, cfg.name),
                source,
            })?;
        tracing::info!(store = %cfg.lvs, volume = %cfg.name, size = cfg.size.0, thick = cfg.thick, "volume created");
        Ok(id)
    }

    /// Grows volume `<store>/<name>` to `size` bytes and tells every LU on it (the initiators
    /// get CAPACITY DATA HAS CHANGED).
    ///
    /// # Errors
    /// No such store or volume, a shrink, or an I/O error.
    pub fn resize_volume(&self, store: &str, name: &str, size: u64) -> Result<(), DatapathError> {
        let (lvs, v) = self.volume(store, name)?;
        let l = lvs.clone();
        self.reactor
            .block_on(move || async move { l.resize(v.id, size).await })
            .map_err(DatapathError::Engine)?
            .map_err(|source| DatapathError::Store {
                what: format!("volume {store}/{name}"),
                source,
            })?;
        let key = Backing::Volume {
            store: store.to_owned(),
            volume: name.to_owned(),
        };
        if let Some(lu) = self.live_lu(&key) {
            lu.capacity_changed();
        }
        if let Some(nvmf) = &self.nvmf {
            let places = self
                .namespaces
                .lock()
                .expect("namespaces lock")
                .get(&key)
                .cloned()
                .unwrap_or_default();
            for (nqn, nsid) in places {
                // A namespace removed since is no longer there to tell.
                let _ = nvmf.namespace_resized(&nqn, nsid);
            }
        }
        tracing::info!(store, volume = name, size, "volume resized");
        Ok(())
    }

    /// Deletes volume `<store>/<name>` (refused while exported or open).
    ///
    /// # Errors
    /// No such store or volume, the volume is in use, or an I/O error.
    pub fn delete_volume(&self, store: &str, name: &str) -> Result<(), DatapathError> {
        let (lvs, v) = self.volume(store, name)?;
        self.reactor
            .block_on(move || async move { lvs.delete(v.id).await })
            .map_err(DatapathError::Engine)?
            .map_err(|source| DatapathError::Store {
                what: format!("volume {store}/{name}"),
                source,
            })?;
        tracing::info!(store, volume = name, "volume deleted");
        Ok(())
    }

    /// The store `store` and its volume (or snapshot) `name`.
    ///
    /// # Errors
    /// [`DatapathError::NotFound`] for either.
    pub fn volume(&self, store: &str, name: &str) -> Result<(LvStore, VolumeInfo), DatapathError> {
        let lvs = self
            .store(store)
            .ok_or_else(|| DatapathError::NotFound(format!("store {store}")))?;
        let v = lvs
            .find(name)
            .ok_or_else(|| DatapathError::NotFound(format!("volume {store}/{name}")))?;
        Ok((lvs, v))
    }

    /// Reads `len` bytes of volume (or snapshot) `<store>/<name>` at byte `offset`: several
    /// block-device reads of the pool's largest buffer in flight on the store's reactor. What
    /// the control rings' `volume_read` hands out through a data slot (backups, copies).
    ///
    /// # Errors
    /// No such store or volume, a range that is not block-aligned or runs past the end, or an
    /// I/O error.
    pub fn read_volume(
        &self,
        store: &str,
        name: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, DatapathError> {
        let (lvs, v) = self.volume(store, name)?;
        let what = format!("read of {store}/{name}");
        let bdev = lvs
            .open_volume(v.id)
            .map_err(|source| DatapathError::Store {
                what: what.clone(),
                source,
            })?;
        let bs = u64::from(basalt_bdev::Bdev::geometry(bdev.as_ref()).block_size);
        let end = offset.checked_add(len as u64);
        if !offset.is_multiple_of(bs)
            || !(len as u64).is_multiple_of(bs)
            || end.is_none_or(|e| e > v.size_bytes)
        {
            return Err(DatapathError::Config(format!(
                "{what}: {len} bytes at {offset} is not a block-aligned range inside its {} bytes",
                v.size_bytes
            )));
        }
        self.reactor
            .block_on(move || async move {
                let ch = basalt_bdev::Bdev::open(bdev.as_ref())
                    .map_err(|e| format!("cannot open a channel: {e}"))?;
                let ch = std::rc::Rc::new(ch);
                let pool = basalt_engine::current().pool().clone();
                let chunk = pool.max_size().min(len.max(1));
                let mut parts = Vec::new();
                let mut at = 0usize;
                while at < len {
                    let n = chunk.min(len - at);
                    let (ch, pool) = (ch.clone(), pool.clone());
                    let lba = basalt_bdev::Lba((offset + at as u64) / bs);
                    parts.push(basalt_engine::spawn(async move {
                        let buf = pool.alloc(n).map_err(|e| format!("buffer: {e}"))?.await;
                        let mut v = IoVecs::new();
                        v.push(buf);
                        let (v, r) = ch.read(lba, v).await;
                        r.map_err(|e| e.to_string())?;
                        Ok::<IoVecs, String>(v)
                    }));
                    at += n;
                }
                let mut out = Vec::with_capacity(len);
                for p in parts {
                    match p.await {
                        Ok(Ok(bufs)) => {
                            for b in bufs.iter() {
                                out.extend_from_slice(b);
                            }
                        }
                        Ok(Err(e)) => return Err(e),
                        Err(_) => return Err("the read was cancelled".to_owned()),
                    }
                }
                Ok(out)
            })
            .map_err(DatapathError::Engine)?
            .map_err(|e| DatapathError::Config(format!("{what}: {e}")))
    }

    /// Takes snapshot `snap` of volume `<store>/<name>`, unless a snapshot of that name exists
    /// already (then its id is returned: a re-driven request is harmless).
    ///
    /// # Errors
    /// No such store or volume, the name is taken by a volume that is not a snapshot, or the
    /// store refused.
    pub fn snapshot_volume(
        &self,
        store: &str,
        name: &str,
        snap: &str,
    ) -> Result<u64, DatapathError> {
        let (lvs, v) = self.volume(store, name)?;
        if let Some(existing) = lvs.find(snap) {
            return idempotent(store, snap, &existing, true);
        }
        let s = snap.to_owned();
        let id = self
            .reactor
            .block_on(move || async move { lvs.snapshot(v.id, &s).await })
            .map_err(DatapathError::Engine)?
            .map_err(|source| DatapathError::Store {
                what: format!("snapshot {store}/{snap} of {name}"),
                source,
            })?;
        tracing::info!(store, volume = name, snapshot = snap, "snapshot taken");
        Ok(id)
    }

    /// Makes volume `clone` from snapshot `<store>/<snap>`, unless a volume of that name exists
    /// already (then its id is returned).
    ///
    /// # Errors
    /// No such store or snapshot, the name is taken by a snapshot, or the store refused.
    pub fn clone_snapshot(
        &self,
        store: &str,
        snap: &str,
        clone: &str,
    ) -> Result<u64, DatapathError> {
        let (lvs, s) = self.volume(store, snap)?;
        if let Some(existing) = lvs.find(clone) {
            return idempotent(store, clone, &existing, false);
        }
        let c = clone.to_owned();
        let id = self
            .reactor
            .block_on(move || async move { lvs.clone_volume(s.id, &c).await })
            .map_err(DatapathError::Engine)?
            .map_err(|source| DatapathError::Store {
                what: format!("clone {store}/{clone} of {snap}"),
                source,
            })?;
        tracing::info!(store, snapshot = snap, clone, "clone made");
        Ok(id)
    }

    /// Reverts volume `<store>/<name>` to its snapshot `snap` (refused while the volume is
    /// open: exported or in use).
    ///
    /// # Errors
    /// No such store, volume or snapshot, the volume is open, or the store refused.
    pub fn revert_volume(&self, store: &str, name: &str, snap: &str) -> Result<(), DatapathError> {
        let (lvs, v) = self.volume(store, name)?;
        let (_, s) = self.volume(store, snap)?;
        self.reactor
            .block_on(move || async move { lvs.revert(v.id, s.id).await })
            .map_err(DatapathError::Engine)?
            .map_err(|source| DatapathError::Store {
                what: format!("revert {store}/{name} to {snap}"),
                source,
            })?;
        tracing::info!(store, volume = name, snapshot = snap, "volume reverted");
        Ok(())
    }

    fn live_lu(&self, key: &Backing) -> Option<Arc<LogicalUnit>> {
        self.lus
            .lock()
            .expect("lus lock")
            .get(key)
            .and_then(Weak::upgrade)
    }

    /// The logical unit for a LUN entry: the existing one for its device, or a new one.
    ///
    /// # Errors
    /// Neither or both of `bdev` and `volume`, or a device that does not exist.
    pub fn logical_unit(&self, lun: &LunConfig) -> Result<Arc<LogicalUnit>, DatapathError> {
        let backing = backing(&format!("LUN {}", lun.lun), &lun.bdev, &lun.volume)?;
        let mut lus = self.lus.lock().expect("lus lock");
        if let Some(lu) = lus.get(&backing).and_then(Weak::upgrade) {
            if lun.read_only && !lu.config().read_only {
                return Err(fail(format!(
                    "LUN {}: its device is already exported writable; one logical unit per \
                     device, so it cannot also be read-only",
                    lun.lun
                )));
            }
            return Ok(lu);
        }
        let what = format!("LUN {}", lun.lun);
        let (bdev, uuid) = self.device(&what, &backing)?;
        let g = bdev.geometry();
        let bs = u64::from(g.block_size);
        let (product, thin, granularity, read_only) = match &backing {
            Backing::Bdev(_) => ("BDEV", g.supports_unmap, (4096 / bs).max(1), false),
            Backing::Volume { store, volume } => {
                let lvs = self
                    .store(store)
                    .ok_or_else(|| fail(format!("{what}: no store {store}")))?;
                let ro = lvs.find(volume).is_some_and(|v| v.read_only);
                // A volume allocates by 1/64 cluster (its subcluster).
                ("VOLUME", true, (lvs.cluster_size() / 64 / bs).max(1), ro)
            }
        };
        let version = env!("CARGO_PKG_VERSION");
        let cfg = LuConfig {
            bdev,
            uuid,
            serial: hex(&uuid),
            vendor: "BASALT".into(),
            product: product.into(),
            revision: version.split('.').take(2).collect::<Vec<_>>().join("."),
            read_only: lun.read_only || read_only,
            thin,
            unmap_granularity: u32::try_from(granularity).unwrap_or(1),
        };
        let lu = LogicalUnit::new(cfg);
        // SANITIZE runs in the background; capped so that it does not starve the LU's (and
        // its neighbours') I/O, as a sanitize on a shared pool must not.
        lu.set_sanitize_bandwidth(Some(SANITIZE_BYTES_PER_SEC));
        lus.retain(|_, w| w.strong_count() > 0);
        lus.insert(backing, Arc::downgrade(&lu));
        Ok(lu)
    }

    /// The block device behind `backing` and its identity (a volume's UUID, or one derived
    /// from the bdev's name).
    fn device(&self, what: &str, b: &Backing) -> Result<(Arc<dyn Bdev>, [u8; 16]), DatapathError> {
        match b {
            Backing::Bdev(name) => {
                let bdev = self
                    .bdevs
                    .get(name)
                    .ok_or_else(|| fail(format!("{what}: no block device {name}")))?;
                Ok((bdev, bdev_uuid(name)))
            }
            Backing::Volume { store, volume } => {
                let lvs = self
                    .store(store)
                    .ok_or_else(|| fail(format!("{what}: no store {store}")))?;
                let info = lvs
                    .find(volume)
                    .ok_or_else(|| fail(format!("{what}: no volume {store}/{volume}")))?;
                let bdev: Arc<dyn Bdev> = lvs
                    .open_volume(info.id)
                    .map_err(|e| fail(format!("{what}: {e}")))?;
                Ok((bdev, info.uuid))
            }
        }
    }

    /// The NVMe/TCP target, if configured.
    pub fn nvmf(&self) -> Option<&Arc<NvmfTarget>> {
        self.nvmf.as_ref()
    }

    /// Adds an NVM subsystem with its namespaces.
    ///
    /// # Errors
    /// No NVMe/TCP target configured, a bad NQN, a taken NQN, or a missing device.
    pub fn add_nvmf_subsystem(&self, s: &NvmfSubsystemConfig) -> Result<(), DatapathError> {
        let nvmf = self
            .nvmf
            .as_ref()
            .ok_or_else(|| fail("NVMe/TCP is not enabled (no [nvmf] section)"))?;
        let mut devices = Vec::new();
        for n in &s.namespaces {
            let what = format!("{} namespace {}", s.nqn, n.nsid);
            let b = backing(&what, &n.bdev, &n.volume)?;
            let (bdev, uuid) = self.device(&what, &b)?;
            devices.push((n.nsid, b, bdev, uuid));
        }
        let serial = s.serial.clone().unwrap_or_else(|| {
            // 20 characters from the NQN's hash: stable across restarts.
            hex(&bdev_uuid(&s.nqn)[..10])
        });
        let mut cfg = basalt_nvmf::SubsystemConfig::new(&s.nqn, &serial);
        match &s.hosts {
            None => cfg.allow_any_host = true,
            Some(h) => cfg.hosts = h.iter().cloned().collect(),
        }
        nvmf.add_subsystem(cfg).map_err(|e| fail(e.to_string()))?;
        for (nsid, b, bdev, uuid) in devices {
            if let Err(e) = nvmf.add_namespace(&s.nqn, nsid, bdev, uuid) {
                let _ = nvmf.remove_subsystem(&s.nqn);
                return Err(fail(format!("{} namespace {nsid}: {e}", s.nqn)));
            }
            self.namespaces
                .lock()
                .expect("namespaces lock")
                .entry(b)
                .or_default()
                .push((s.nqn.clone(), nsid));
        }
        tracing::info!(nqn = %s.nqn, namespaces = s.namespaces.len(), "NVMe subsystem added");
        Ok(())
    }

    /// Removes an NVM subsystem (its controllers are torn down).
    ///
    /// # Errors
    /// No NVMe/TCP target, or no such subsystem.
    pub fn remove_nvmf_subsystem(&self, nqn: &str) -> Result<(), DatapathError> {
        let nvmf = self
            .nvmf
            .as_ref()
            .ok_or_else(|| fail("NVMe/TCP is not enabled (no [nvmf] section)"))?;
        nvmf.remove_subsystem(nqn)
            .map_err(|e| fail(e.to_string()))?;
        for v in self
            .namespaces
            .lock()
            .expect("namespaces lock")
            .values_mut()
        {
            v.retain(|(n, _)| n != nqn);
        }
        tracing::info!(nqn, "NVMe subsystem removed");
        Ok(())
    }

    /// The NBD target, if configured.
    pub fn nbd(&self) -> Option<&Arc<basalt_nbd::NbdTarget>> {
        self.nbd.as_ref()
    }

    fn nbd_target(&self) -> Result<&Arc<basalt_nbd::NbdTarget>, DatapathError> {
        self.nbd
            .as_ref()
            .ok_or_else(|| fail("NBD is not enabled (no [nbd] section)"))
    }

    /// Adds an NBD export. Asking again for an export that exists with the same settings is
    /// answered as done; the name in use otherwise is `exists`, a missing device `not_found`.
    ///
    /// # Errors
    /// No NBD target configured, a bad name or settings, a missing device, or a name in use.
    pub fn add_nbd_export(&self, e: &NbdExportConfig) -> Result<(), DatapathError> {
        let nbd = self.nbd_target()?;
        basalt_nbd::valid_name(&e.name).map_err(|err| fail(err.to_string()))?;
        let what = format!("NBD export {}", e.name);
        let b = backing(&what, &e.bdev, &e.volume)?;
        let mut asked = self.nbd_exports.lock().expect("nbd exports lock");
        if let Some(have) = asked.get(&e.name) {
            return if have == e {
                Ok(())
            } else {
                Err(DatapathError::Exists(format!(
                    "{what} (with other settings)"
                )))
            };
        }
        let (read_only, thin) = match &b {
            Backing::Bdev(name) => {
                if self.bdevs.get(name).is_none() {
                    return Err(DatapathError::NotFound(format!("block device {name}")));
                }
                (false, false)
            }
            Backing::Volume { store, volume } => {
                let (_, v) = self.volume(store, volume)?;
                // A snapshot is read-only whatever was asked.
                (v.read_only, true)
            }
        };
        let (bdev, _) = self.device(&what, &b)?;
        let description = e.description.clone().unwrap_or_else(|| match &b {
            Backing::Bdev(name) => format!("block device {name}"),
            Backing::Volume { store, volume } => format!("volume {store}/{volume}"),
        });
        let cfg = basalt_nbd::ExportConfig {
            name: e.name.clone(),
            description,
            read_only: e.read_only || read_only,
            thin,
        };
        nbd.add_export(cfg, bdev).map_err(|err| match err {
            basalt_nbd::NbdError::Exists(_) => DatapathError::Exists(what.clone()),
            other => fail(other.to_string()),
        })?;
        asked.insert(e.name.clone(), e.clone());
        Ok(())
    }

    /// Removes an NBD export; its connections are closed (this waits, up to a few seconds,
    /// until they have let go of the device, so the volume can be deleted next).
    ///
    /// # Errors
    /// No NBD target, or no such export (`not_found`).
    pub fn remove_nbd_export(&self, name: &str) -> Result<(), DatapathError> {
        let nbd = self.nbd_target()?;
        let mut asked = self.nbd_exports.lock().expect("nbd exports lock");
        let gone = nbd.remove_export(name).map_err(|err| match err {
            basalt_nbd::NbdError::NotFound(_) => {
                DatapathError::NotFound(format!("NBD export {name}"))
            }
            other => fail(other.to_string()),
        })?;
        asked.remove(name);
        drop(asked);
        if !gone.wait_closed(std::time::Duration::from_secs(5)) {
            tracing::warn!(
                export = name,
                connections = gone.connections(),
                "NBD export removed, but connections still hold its device"
            );
        }
        Ok(())
    }

    /// The NBD exports: settings as asked for, and each export's live state.
    ///
    /// # Errors
    /// No NBD target.
    pub fn nbd_exports(
        &self,
    ) -> Result<Vec<(NbdExportConfig, Arc<basalt_nbd::Export>)>, DatapathError> {
        let nbd = self.nbd_target()?;
        let asked = self.nbd_exports.lock().expect("nbd exports lock");
        Ok(nbd
            .exports()
            .into_iter()
            .filter_map(|x| asked.get(&x.config.name).map(|c| (c.clone(), x)))
            .collect())
    }

    /// Adds an iSCSI target node with its LUNs.
    ///
    /// # Errors
    /// No iSCSI target configured, bad settings, missing devices, or a name in use.
    pub fn add_iscsi_target(&self, t: &IscsiTargetConfig) -> Result<(), DatapathError> {
        let iscsi = self
            .iscsi
            .as_ref()
            .ok_or_else(|| fail("iSCSI is not enabled (no [iscsi] section)"))?;
        check_chap(&t.name, &t.chap, &t.mutual_chap)?;
        let mut luns = Vec::new();
        for l in &t.luns {
            luns.push((l.lun, self.logical_unit(l)?));
        }
        let node = TargetNode {
            name: t.name.clone(),
            alias: t.alias.clone(),
            luns: Vec::new(),
            access: Access {
                initiators: t.initiators.clone(),
                chap: chap(&t.chap),
                mutual_chap: chap(&t.mutual_chap),
            },
        };
        iscsi
            .add_target(node, luns)
            .map_err(|e| fail(e.to_string()))
    }

    /// Sets discovery CHAP.
    ///
    /// # Errors
    /// A bad secret.
    pub fn set_discovery_chap(&self, c: &Option<ChapConfig>) -> Result<(), DatapathError> {
        check_chap("discovery", c, &None)?;
        if let Some(iscsi) = &self.iscsi {
            iscsi.set_discovery_access(Access {
                initiators: None,
                chap: chap(c),
                mutual_chap: None,
            });
        }
        Ok(())
    }

    /// Makes every store's metadata durable (at shutdown).
    pub fn flush_stores(&self) {
        for lvs in self.stores() {
            let name = lvs.name().to_owned();
            match self
                .reactor
                .block_on(move || async move { lvs.flush().await })
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(store = %name, error = %e, "flush at shutdown failed")
                }
                Err(e) => tracing::error!(store = %name, error = %e, "flush at shutdown failed"),
            }
        }
    }
}

/// The device a LUN or namespace names: exactly one of a bdev and a `<store>/<volume>`.
fn backing(
    what: &str,
    bdev: &Option<String>,
    volume: &Option<String>,
) -> Result<Backing, DatapathError> {
    match (bdev, volume) {
        (Some(b), None) => Ok(Backing::Bdev(b.clone())),
        (None, Some(v)) => {
            let (store, volume) = v
                .split_once('/')
                .ok_or_else(|| fail(format!("{what}: volume must be <store>/<volume>")))?;
            Ok(Backing::Volume {
                store: store.to_owned(),
                volume: volume.to_owned(),
            })
        }
        _ => Err(fail(format!("{what}: set exactly one of bdev and volume"))),
    }
}

/// True when the first 64 KiB of `bdev` are zeros (never written: safe to format).
async fn device_is_blank(bdev: &Arc<dyn Bdev>) -> Result<bool, String> {
    let ch = bdev.open().map_err(|e| e.to_string())?;
    let len = (64 * 1024).min(bdev.geometry().bytes()) as usize;
    if len == 0 {
        return Ok(true);
    }
    let pool = basalt_engine::current().pool().clone();
    let buf = pool.alloc(len).map_err(|e| e.to_string())?.await;
    let (bufs, res) = ch
        .read(basalt_bdev::Lba(0), [buf].into_iter().collect())
        .await;
    res.map_err(|e| e.to_string())?;
    Ok(bufs.iter().all(|b| b.iter().all(|&x| x == 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdev_uuids_are_stable_distinct_and_rfc9562_v8() {
        let a = bdev_uuid("pool0");
        assert_eq!(a, bdev_uuid("pool0"));
        assert_ne!(a, bdev_uuid("pool1"));
        assert_eq!(a[6] >> 4, 8, "version 8");
        assert_eq!(a[8] >> 6, 0b10, "RFC variant");
    }

    #[test]
    fn chap_settings_are_checked() {
        let c = |s: &str| {
            Some(ChapConfig {
                user: "u".into(),
                secret: s.into(),
            })
        };
        assert!(check_chap("t", &c("short"), &None).is_err());
        assert!(check_chap("t", &c("twelve-bytes"), &None).is_ok());
        assert!(check_chap("t", &None, &c("twelve-bytes")).is_err());
        assert!(check_chap("t", &c("twelve-bytes"), &c("twelve-bytes")).is_err());
        assert!(check_chap("t", &c("twelve-bytes"), &c("another-secret")).is_ok());
    }
}
