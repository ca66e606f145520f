//! `lvol:` targets: a volume of a Basalt volume store on a file or device, set up the way a
//! measurement needs it (fully written, N snapshots deep, freshly snapshotted) before the run.
//!
//! `lvol:PATH[,OPTION...]`, options:
//! - `cluster=SIZE`: cluster size for a new store (default 1M); an existing store must match;
//! - `size=SIZE`: size of the volume when it is created (default: 90% of the free space);
//! - `thick`: create the volume thick (allocated and zeroed up front);
//! - `no-prefill`: do not write the new volume once over (it stays thin and empty);
//! - `snapshots=N`: make sure the volume has at least N snapshots, each followed by 4
//!   random 64 KiB writes so that every level holds data of its own;
//! - `fresh-snapshot`: take a snapshot just before the run (first writes are copy-on-write);
//! - `drop-fresh`: delete that snapshot again, and `inflate`: make the volume own every
//!   cluster it reads (together: a volume back to pure overwrites);
//! - `snapshot-every=DURATION`: take a snapshot this often during the run and report how long
//!   each took (older ones are deleted so that four at most exist).
//!
//! The store is created on PATH if PATH holds none, and reused otherwise: the volume is named
//! `bench`, snapshots `bench-snap-N`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use basalt_bdev::modules::uring::{UringBdev, UringConfig};
use basalt_bdev::{Bdev, ByteSize, IoVecs, Lba};
use basalt_engine::{Engine, EngineConfig};
use basalt_lvol::{LvStore, StoreError};

const VOLUME: &str = "bench";
const PREFILLED: &str = "bench.prefilled";

/// How an `lvol:` target is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvolSpec {
    /// File or device holding the store.
    pub path: PathBuf,
    /// Cluster size for a new store (and to check an existing one against).
    pub cluster: Option<u64>,
    /// Volume size at creation.
    pub size: Option<u64>,
    /// Thick volume.
    pub thick: bool,
    /// Write the new volume once over.
    pub prefill: bool,
    /// Snapshots the volume must have.
    pub snapshots: u32,
    /// Snapshot just before the run.
    pub fresh_snapshot: bool,
    /// Delete the fresh snapshot before the run.
    pub drop_fresh: bool,
    /// Inflate the volume before the run.
    pub inflate: bool,
    /// Snapshot this often during the run.
    pub snapshot_every: Option<Duration>,
}

impl std::str::FromStr for LvolSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(',');
        let path = parts.next().unwrap_or_default();
        if path.is_empty() {
            return Err("lvol: needs a path: lvol:PATH[,option...]".into());
        }
        let mut spec = LvolSpec {
            path: path.into(),
            cluster: None,
            size: None,
            thick: false,
            prefill: true,
            snapshots: 0,
            fresh_snapshot: false,
            drop_fresh: false,
            inflate: false,
            snapshot_every: None,
        };
        let bytes = |k: &str, v: &str| {
            v.parse::<ByteSize>()
                .map(|b| b.0)
                .map_err(|e| format!("lvol option {k}: {e}"))
        };
        for opt in parts {
            match opt.split_once('=') {
                Some(("cluster", v)) => spec.cluster = Some(bytes("cluster", v)?),
                Some(("size", v)) => spec.size = Some(bytes("size", v)?),
                Some(("snapshots", v)) => {
                    spec.snapshots = v
                        .parse()
                        .map_err(|_| format!("lvol option snapshots: {v:?} is not a count"))?;
                }
                Some(("snapshot-every", v)) => {
                    let ms: u64 = v
                        .strip_suffix("ms")
                        .ok_or_else(|| {
                            format!("snapshot-every: {v:?}: give milliseconds, e.g. 100ms")
                        })?
                        .parse()
                        .map_err(|_| format!("snapshot-every: {v:?} is not a number of ms"))?;
                    spec.snapshot_every = Some(Duration::from_millis(ms.max(1)));
                }
                None if opt == "thick" => spec.thick = true,
                None if opt == "no-prefill" => spec.prefill = false,
                None if opt == "fresh-snapshot" => spec.fresh_snapshot = true,
                None if opt == "drop-fresh" => spec.drop_fresh = true,
                None if opt == "inflate" => spec.inflate = true,
                _ => {
                    return Err(format!(
                        "unknown lvol option {opt:?} (cluster=, size=, thick, no-prefill, \
                         snapshots=, fresh-snapshot, drop-fresh, inflate, snapshot-every=)"
                    ));
                }
            }
        }
        Ok(spec)
    }
}

impl std::fmt::Display for LvolSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lvol:{}", self.path.display())?;
        if let Some(c) = self.cluster {
            write!(f, ",cluster={c}")?;
        }
        if let Some(s) = self.size {
            write!(f, ",size={s}")?;
        }
        if self.thick {
            write!(f, ",thick")?;
        }
        if !self.prefill {
            write!(f, ",no-prefill")?;
        }
        if self.snapshots > 0 {
            write!(f, ",snapshots={}", self.snapshots)?;
        }
        if self.fresh_snapshot {
            write!(f, ",fresh-snapshot")?;
        }
        if self.drop_fresh {
            write!(f, ",drop-fresh")?;
        }
        if self.inflate {
            write!(f, ",inflate")?;
        }
        if let Some(d) = self.snapshot_every {
            write!(f, ",snapshot-every={}ms", d.as_millis())?;
        }
        Ok(())
    }
}

/// The store and volume behind an opened `lvol:` target.
#[derive(Debug, Clone)]
pub struct LvolTarget {
    /// The store.
    pub store: LvStore,
    /// The volume's id.
    pub volume: u64,
    /// Snapshot this often during the run.
    pub snapshot_every: Option<Duration>,
}

fn store_err(what: &str) -> impl Fn(StoreError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Opens (creating if needed) the store and volume, and prepares them as `spec` asks, on a
/// short-lived engine of its own. Returns the volume as a bdev.
///
/// # Errors
/// As text: the device, the store or the preparation failed.
pub fn setup(spec: &LvolSpec) -> Result<(Arc<dyn Bdev>, LvolTarget), String> {
    let base: Arc<dyn Bdev> = Arc::new(
        UringBdev::open(
            "lvol-base",
            &UringConfig {
                path: spec.path.clone(),
                block_size: None,
                direct: true,
            },
        )
        .map_err(|e| format!("{}: {e}", spec.path.display()))?,
    );
    let mut cfg = EngineConfig::with_cores(1);
    cfg.pin = false;
    let engine = Engine::start(&cfg).map_err(|e| format!("engine: {e}"))?;
    let spec2 = spec.clone();
    let r = engine
        .reactor(0)
        .block_on(move || async move { prepare(base, &spec2).await })
        .map_err(|e| format!("engine: {e}"))?;
    engine.shutdown();
    r
}

async fn prepare(
    base: Arc<dyn Bdev>,
    spec: &LvolSpec,
) -> Result<(Arc<dyn Bdev>, LvolTarget), String> {
    let cluster = spec.cluster.unwrap_or(1 << 20);
    let lvs = match LvStore::open(base.clone()).await {
        Ok(l) => l,
        Err(StoreError::NoSuperblock { .. }) => {
            let c = u32::try_from(cluster).map_err(|_| "cluster size too large".to_string())?;
            eprintln!(
                "basalt-bench: creating a volume store on {}",
                spec.path.display()
            );
            LvStore::create(base, "bench", c)
                .await
                .map_err(store_err("creating the store"))?
        }
        Err(e) => return Err(format!("opening the store: {e}")),
    };
    if spec.cluster.is_some_and(|c| c != lvs.cluster_size()) {
        return Err(format!(
            "the store on {} has {}-byte clusters, not {cluster}; use another file",
            spec.path.display(),
            lvs.cluster_size()
        ));
    }
    let id = match lvs.find(VOLUME) {
        Some(v) => v.id,
        None => {
            let free = lvs.space().free_clusters * lvs.cluster_size();
            let size = spec.size.unwrap_or(free / 10 * 9 / (1 << 20) * (1 << 20));
            eprintln!("basalt-bench: creating volume {VOLUME} of {size} bytes");
            lvs.create_volume(VOLUME, size, spec.thick)
                .await
                .map_err(store_err("creating the volume"))?
        }
    };
    let info = lvs.volume(id).map_err(store_err("volume"))?;
    let bdev = lvs
        .open_volume(id)
        .map_err(store_err("opening the volume"))?;
    let prefilled = info.properties.iter().any(|(k, _)| k == PREFILLED);
    if spec.prefill && !prefilled {
        eprintln!(
            "basalt-bench: writing the volume once over ({} bytes)",
            info.size_bytes
        );
        fill(&*bdev, 0, info.size_bytes, 1 << 20).await?;
        lvs.set_property(id, PREFILLED, Some(b"1"))
            .await
            .map_err(store_err("marking the volume"))?;
    }
    let mut have = lvs
        .volumes()
        .iter()
        .filter(|v| v.snapshot && v.name.starts_with("bench-snap-"))
        .count() as u32;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ u64::from(have);
    while have < spec.snapshots {
        lvs.snapshot(id, &format!("bench-snap-{have}"))
            .await
            .map_err(store_err("snapshot"))?;
        for _ in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let off = seed % (info.size_bytes / 65536) * 65536;
            fill(&*bdev, off, 65536, 65536).await?;
        }
        have += 1;
    }
    if spec.fresh_snapshot || spec.drop_fresh {
        for v in lvs.volumes() {
            if v.name.starts_with("bench-fresh") {
                lvs.delete(v.id).await.map_err(store_err("deleting"))?;
            }
        }
    }
    if spec.inflate {
        lvs.inflate(id).await.map_err(store_err("inflate"))?;
    }
    if spec.fresh_snapshot {
        lvs.snapshot(id, "bench-fresh")
            .await
            .map_err(store_err("snapshot"))?;
    }
    lvs.flush().await.map_err(store_err("flush"))?;
    Ok((
        bdev,
        LvolTarget {
            store: lvs,
            volume: id,
            snapshot_every: spec.snapshot_every,
        },
    ))
}

/// Writes `[off, off + len)` with a non-zero pattern, `chunk` bytes per I/O, 8 in flight.
async fn fill(bdev: &dyn Bdev, off: u64, len: u64, chunk: u64) -> Result<(), String> {
    let ch = bdev.open().map_err(|e| format!("channel: {e}"))?;
    let pool = basalt_engine::current().pool().clone();
    let bs = u64::from(ch.geometry().block_size);
    let piece = pool.max_size() as u64;
    let mut pos = off;
    let mut inflight = Vec::new();
    while pos < off + len {
        let n = chunk.min(off + len - pos);
        let mut v = IoVecs::new();
        let mut done = 0;
        while done < n {
            let k = piece.min(n - done);
            let mut b = pool.alloc(k as usize).map_err(|e| e.to_string())?.await;
            b.fill(((pos + done) >> 16) as u8 | 1);
            v.push(b);
            done += k;
        }
        inflight.push(ch.write(Lba(pos / bs), v, false));
        if inflight.len() == 8 {
            for f in inflight.drain(..) {
                f.await.1.map_err(|e| format!("prefill: {e}"))?;
            }
        }
        pos += n;
    }
    for f in inflight {
        f.await.1.map_err(|e| format!("prefill: {e}"))?;
    }
    Ok(())
}

/// What the volume store did during a run (counter differences).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LvolRunStats {
    /// Data clusters allocated by writes.
    pub clusters_allocated: u64,
    /// Subclusters copied from shared clusters (copy-on-write).
    pub cow_subclusters: u64,
    /// Partially written subclusters completed with old data or zeros.
    pub fills: u64,
    /// I/Os that took the slow path.
    pub slow_ios: u64,
    /// Commits that wrote metadata.
    pub commits: u64,
}

impl LvolRunStats {
    /// The counters now.
    pub fn now(t: &LvolTarget) -> LvolRunStats {
        let c = t.store.counters();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        LvolRunStats {
            clusters_allocated: get(&c.clusters_allocated),
            cow_subclusters: get(&c.cow_subclusters),
            fills: get(&c.fills),
            slow_ios: get(&c.slow_ios),
            commits: get(&c.commits),
        }
    }

    /// `self - before`.
    pub fn since(&self, before: &LvolRunStats) -> LvolRunStats {
        LvolRunStats {
            clusters_allocated: self.clusters_allocated - before.clusters_allocated,
            cow_subclusters: self.cow_subclusters - before.cow_subclusters,
            fills: self.fills - before.fills,
            slow_ios: self.slow_ios - before.slow_ios,
            commits: self.commits - before.commits,
        }
    }
}

/// Snapshot latencies measured during a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SnapshotStats {
    /// Snapshots taken.
    pub count: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

impl SnapshotStats {
    /// Summarises latencies.
    pub fn new(mut v: Vec<Duration>) -> SnapshotStats {
        v.sort();
        let at = |q: f64| {
            if v.is_empty() {
                0.0
            } else {
                let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
                v[i].as_secs_f64() * 1e3
            }
        };
        SnapshotStats {
            count: v.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// Takes a snapshot of the target's volume every `every` until `stop`, deleting older ones
/// (at most four kept, all deleted at the end). Returns each snapshot's latency.
pub async fn snapshot_loop(
    t: LvolTarget,
    every: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<Vec<Duration>, String> {
    let mut taken = std::collections::VecDeque::new();
    let mut lat = Vec::new();
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        basalt_engine::sleep(every).await;
        let t0 = std::time::Instant::now();
        let id = t
            .store
            .snapshot(t.volume, &format!("bench-load-{n}"))
            .await
            .map_err(store_err("snapshot under load"))?;
        lat.push(t0.elapsed());
        taken.push_back(id);
        n += 1;
        if taken.len() > 4
            && let Some(old) = taken.pop_front()
        {
            t.store.delete(old).await.map_err(store_err("delete"))?;
        }
    }
    for id in taken {
        t.store.delete(id).await.map_err(store_err("delete"))?;
    }
    Ok(lat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        let s: LvolSpec = "/tmp/x,cluster=256K,snapshots=64,fresh-snapshot,snapshot-every=100ms"
            .parse()
            .expect("parses");
        assert_eq!(s.cluster, Some(256 << 10));
        assert_eq!(s.snapshots, 64);
        assert!(s.fresh_snapshot && s.prefill && !s.thick);
        assert_eq!(s.snapshot_every, Some(Duration::from_millis(100)));
        assert_eq!(
            s.to_string(),
            "lvol:/tmp/x,cluster=262144,snapshots=64,fresh-snapshot,snapshot-every=100ms"
        );
        assert!("".parse::<LvolSpec>().is_err());
        assert!("/x,colour=blue".parse::<LvolSpec>().is_err());
        assert!("/x,snapshot-every=1s".parse::<LvolSpec>().is_err());
    }
}
