//! `lvol-reopen`: how long a volume store takes to open after a crash, at scale (goal: a store
//! of 1,000 volumes with 64 GiB written opens in under 2 s).
//!
//! # What is built
//! A sparse file holds a store made with the synchronous metadata API ([`Store`] over a
//! [`FileDisk`]): `--volumes` thin volumes, `--written` bytes mapped in all (spread evenly,
//! at random cluster indices of volumes `1/--fill` times larger than their share, or of
//! `--volume-size` each, which scatters the data over many more map pages), written
//! round-robin across the volumes and committed every `--commit-every` entries, as a busy store
//! would. Then `--snapshots` volumes get a snapshot followed by overwrites of a quarter of their
//! clusters (half whole-cluster, half partial with the rest kept in the snapshot's cluster as
//! the backing one), so that volumes and snapshots share map pages as they do in real use.
//! Every cluster taken is counted in `--written`.
//!
//! Only metadata is written: clusters are allocated and mapped (`own_bits = u64::MAX`, every
//! subcluster holds data) but their bytes never are. Opening a store reads metadata pages
//! only, never data, so the data bytes do not change what is measured; writing 64 GiB (or
//! 256 GiB) would not fit this machine's disk, nor the time budget of a benchmark.
//!
//! # The crash
//! After the last commit the store is never closed (the format has no clean-close flag in
//! use). To model a crash in the middle of work, more changes are made in memory (writes to
//! new clusters, new volumes, a snapshot, a delete) and a commit of them is captured; its
//! metadata pages reach the disk but every eighth is replaced by garbage, the superblock slot
//! it was going to is overwritten with garbage (a torn superblock write), and garbage goes
//! into the data clusters those uncommitted writes had taken. Then the store is dropped.
//! Open must bring back the last commit and ignore all of that.
//!
//! # What is measured
//! Each run drops the page cache first (`sync; echo 3 > /proc/sys/vm/drop_caches`):
//! - `datapath`: [`LvStore::open`] on a `uring` bdev (`O_DIRECT`) in a one-core engine, the way
//!   the daemon opens a store: prefetch of every referenced metadata page (up to 64 reads in
//!   flight), then [`Store::open`] from memory;
//! - `offline`: [`Store::open`] over a [`FileDisk`] (buffered, one synchronous read per page),
//!   what the offline tools do;
//! - `in-memory`: [`Store::open`] over the same pages already in memory: the decoding and
//!   map building alone;
//! - `replay`: the reads the datapath's prefetch issues, in the same order and stages, on the
//!   `uring` bdev without decoding anything: the I/O alone, as `lvs.rs` issues it (chunks of
//!   64, each waited for whole) and with a sliding window of 64 and 256 for comparison.
//!
//! Next to the wall time, the opening thread's time on a CPU and time waiting for one (run
//! queue, from `/proc/thread-self/schedstat`) are reported: the machine this was written on
//! is shared, and the rest of the wall time is spent asleep, waiting for the device.
//!
//! Every open is verified against what was committed: generation, volume count, clusters in
//! use (and metadata pages in use, for the [`Store`] opens) and [`Store::check`] without
//! problems. The maps are also decoded from the pages on disk, independently of [`Store`],
//! and must name exactly the data clusters and entries that were populated.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use basalt_bdev::modules::uring::{UringBdev, UringConfig};
use basalt_bdev::{Bdev, ByteSize, IoFuture, Lba};
use basalt_engine::{Engine, EngineConfig};
use basalt_lvol::LvStore;
use basalt_lvol::disk::FileDisk;
use basalt_lvol::format::{
    MapEntry, MapLeaf, MapNode, PAGE_SIZE, PageNo, PropertiesPage, StoreBounds, Superblock,
    VolumeTablePage,
};
use basalt_lvol::store::{MetaDisk, Store};
use clap::Parser;

/// Reads kept in flight by the datapath's prefetch (`META_QUEUE_DEPTH` in `lvs.rs`).
const PREFETCH_DEPTH: usize = 64;

/// Times the reopen of a volume store after a crash (see the module documentation).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Sparse file that holds the store (created, then removed at the end).
    #[arg(long, default_value = "/tmp/basalt-reopen.img", value_name = "PATH")]
    file: PathBuf,

    /// Thin volumes to create.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    volumes: u64,

    /// Bytes mapped in all (clusters allocated, snapshot overwrites included).
    #[arg(long, default_value = "64G", value_name = "SIZE")]
    written: ByteSize,

    /// Cluster size.
    #[arg(long, default_value = "1M", value_name = "SIZE")]
    cluster: ByteSize,

    /// Volumes that get a snapshot followed by overwrites of a quarter of their clusters.
    #[arg(long, default_value_t = 200, value_name = "N")]
    snapshots: u64,

    /// Share of each volume that is mapped (its size is its share of `--written` / fill).
    #[arg(long, default_value_t = 0.5, value_name = "FRACTION")]
    fill: f64,

    /// Size of every volume instead of `--fill` (data then lies scattered over it).
    #[arg(long, value_name = "SIZE")]
    volume_size: Option<ByteSize>,

    /// Map entries set between two commits while populating.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    commit_every: u64,

    /// Timed opens of each kind.
    #[arg(long, default_value_t = 5, value_name = "N")]
    runs: usize,

    /// Seed of the placement of clusters.
    #[arg(long, default_value_t = 1, value_name = "N")]
    seed: u64,

    /// Keep the file at the end.
    #[arg(long)]
    keep: bool,
}

type Res<T> = Result<T, String>;

fn err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// splitmix64: reproducible placement without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// `k` distinct values below `n`, in random order (Floyd's sampling, then a shuffle).
    fn sample(&mut self, n: u64, k: u64) -> Vec<u64> {
        let mut set = HashSet::with_capacity(k as usize);
        let mut out = Vec::with_capacity(k as usize);
        for j in n - k..n {
            let t = self.below(j + 1);
            let v = if set.insert(t) { t } else { j };
            set.insert(v);
            out.push(v);
        }
        for i in (1..out.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            out.swap(i, j);
        }
        out
    }

    fn garbage(&mut self) -> Vec<u8> {
        (0..PAGE_SIZE / 8)
            .flat_map(|_| self.next().to_le_bytes())
            .collect()
    }
}

/// What the last commit holds, to verify every open against.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expect {
    generation: u64,
    volumes: usize,
    used_clusters: u64,
    metadata_pages: u64,
}

fn expect_of(store: &Store) -> Expect {
    let space = store.forest().space();
    Expect {
        generation: store.superblock().generation,
        volumes: store.volumes().count(),
        used_clusters: space.used_clusters(),
        metadata_pages: space.used_pages(),
    }
}

/// Checks a store opened by [`Store::open`] against `want`.
fn verify_store(store: &Store, want: &Expect, what: &str) -> Res<()> {
    let problems = store.check().problems;
    if !problems.is_empty() {
        return Err(format!("{what}: check found problems: {problems:?}"));
    }
    let got = expect_of(store);
    if &got != want {
        return Err(format!(
            "{what}: opened store differs from the last commit: got {got:?}, want {want:?}"
        ));
    }
    Ok(())
}

/// The newer valid superblock among the two slots in `pages`.
fn superblock(pages: &HashMap<PageNo, Vec<u8>>) -> Res<Superblock> {
    let sb = |p| {
        pages
            .get(&PageNo(p))
            .and_then(|b| Superblock::decode(b).ok())
    };
    match (sb(0), sb(1)) {
        (Some(a), Some(b)) if b.generation > a.generation => Ok(b),
        (Some(a), _) => Ok(a),
        (None, Some(b)) => Ok(b),
        (None, None) => Err("no valid superblock".into()),
    }
}

/// Decodes the maps of the committed store in `pages` independently of [`Store`]: (distinct
/// data clusters named by entries, non-empty entries summed over every volume).
fn walk_pages(pages: &HashMap<PageNo, Vec<u8>>) -> Res<(u64, u64)> {
    let sb = superblock(pages)?;
    let bounds = StoreBounds::from(&sb);
    let get = |p: PageNo| pages.get(&p).ok_or_else(|| format!("{p} was not read"));
    let mut clusters: HashSet<u64> = HashSet::new();
    // Non-empty entries below a page (pages shared by snapshots are decoded once).
    let mut below: HashMap<PageNo, u64> = HashMap::new();
    let mut entries = 0;
    let mut table = sb.volume_table;
    while table.is_some() {
        let t = VolumeTablePage::decode(get(table)?, table, &bounds).map_err(err("table"))?;
        for r in &t.volumes {
            if r.map_root.is_some() {
                entries += count(r.map_root, r.map_height - 1, &mut below, &mut |p, level| {
                    let bytes = get(p)?;
                    if level == 0 {
                        let leaf = MapLeaf::decode(bytes, p, &bounds).map_err(err("leaf"))?;
                        let used: Vec<&MapEntry> =
                            leaf.entries.iter().filter(|e| !e.is_empty()).collect();
                        clusters.extend(
                            used.iter()
                                .flat_map(|e| [e.own, e.back])
                                .filter(|&c| c != 0),
                        );
                        Ok(Err(used.len() as u64))
                    } else {
                        let node = MapNode::decode(bytes, p, &bounds).map_err(err("node"))?;
                        Ok(Ok(node
                            .children
                            .iter()
                            .copied()
                            .filter(|c| c.is_some())
                            .collect()))
                    }
                })?;
            }
        }
        table = t.next;
    }
    Ok((clusters.len() as u64, entries))
}

/// What a map page holds: its children (interior) or its count of non-empty entries (leaf).
type Decoded = Result<Vec<PageNo>, u64>;

fn count(
    page: PageNo,
    level: u8,
    below: &mut HashMap<PageNo, u64>,
    decode: &mut dyn FnMut(PageNo, u8) -> Res<Decoded>,
) -> Res<u64> {
    if let Some(&n) = below.get(&page) {
        return Ok(n);
    }
    let n = match decode(page, level)? {
        Err(n) => n,
        Ok(children) => {
            let mut n = 0;
            for c in children {
                n += count(c, level - 1, below, decode)?;
            }
            n
        }
    };
    below.insert(page, n);
    Ok(n)
}

/// Checks a store opened by [`LvStore::open`] against `want` (its maps are not public: the
/// clusters in use stand for them, and [`Store::check`] compares them with the superblock).
fn verify_lvs(lvs: &LvStore, want: &Expect) -> Res<()> {
    let problems = lvs.check().problems;
    if !problems.is_empty() {
        return Err(format!("datapath open: check found problems: {problems:?}"));
    }
    let (volumes, used, generation) = (
        lvs.volumes().len(),
        lvs.space().used_clusters,
        lvs.superblock().generation,
    );
    if (volumes, used, generation) != (want.volumes, want.used_clusters, want.generation) {
        return Err(format!(
            "datapath open: {volumes} volumes, {used} clusters in use, generation {generation}; \
             the last commit has {}, {} and {}",
            want.volumes, want.used_clusters, want.generation
        ));
    }
    Ok(())
}

/// Metadata pages held in memory; with `disk`, pages not held yet are read from it and kept.
struct RamDisk<'a> {
    disk: Option<&'a mut FileDisk>,
    pages: HashMap<PageNo, Vec<u8>>,
    size: u64,
}

impl MetaDisk for RamDisk<'_> {
    fn size_bytes(&self) -> u64 {
        self.size
    }

    fn read_page(&mut self, page: PageNo) -> Result<Vec<u8>, String> {
        if let Some(b) = self.pages.get(&page) {
            return Ok(b.clone());
        }
        let disk = self
            .disk
            .as_mut()
            .ok_or_else(|| format!("{page} not held"))?;
        let b = disk.read_page(page)?;
        self.pages.insert(page, b.clone());
        Ok(b)
    }

    fn write_page(&mut self, _: PageNo, _: &[u8]) -> Result<(), String> {
        Err("read-only".into())
    }

    fn flush(&mut self) -> Result<(), String> {
        Err("read-only".into())
    }
}

/// The datapath's prefetch over `pages`, replayed without I/O: the groups of reads it
/// issues one after the other. Each volume table and property page is read alone (a chain);
/// each level of the maps is one group, which `lvs.rs` issues in chunks of 64, waiting for a
/// whole chunk before the next.
fn prefetch_stages(pages: &HashMap<PageNo, Vec<u8>>) -> Res<Vec<Vec<PageNo>>> {
    let sb = superblock(pages)?;
    let bounds = StoreBounds::from(&sb);
    let get = |p: PageNo| pages.get(&p).ok_or_else(|| format!("{p} was not read"));
    let mut stages = vec![vec![PageNo(0), PageNo(1)]];
    let mut seen: HashSet<PageNo> = HashSet::new();
    let mut frontier: Vec<(PageNo, u8)> = Vec::new();
    let mut table = sb.volume_table;
    while table.is_some() {
        stages.push(vec![table]);
        let t = VolumeTablePage::decode(get(table)?, table, &bounds).map_err(err("table"))?;
        for r in &t.volumes {
            let mut p = r.properties;
            while p.is_some() {
                stages.push(vec![p]);
                p = PropertiesPage::decode(get(p)?, p, &bounds)
                    .map_err(err("properties"))?
                    .next;
            }
            if r.map_root.is_some() && r.map_height > 0 {
                frontier.push((r.map_root, r.map_height - 1));
            }
        }
        table = t.next;
    }
    while !frontier.is_empty() {
        let mut wanted = Vec::new();
        for (p, _) in &frontier {
            if seen.insert(*p) {
                wanted.push(*p);
            }
        }
        stages.push(wanted);
        let mut next = Vec::new();
        let mut done = HashSet::new();
        for (p, level) in frontier {
            if level == 0 || !done.insert(p) {
                continue;
            }
            let node = MapNode::decode(get(p)?, p, &bounds).map_err(err("map node"))?;
            next.extend(
                node.children
                    .iter()
                    .filter(|c| c.is_some() && !seen.contains(c))
                    .map(|&c| (c, level - 1)),
            );
        }
        frontier = next;
    }
    Ok(stages)
}

/// How a replay keeps reads in flight.
#[derive(Debug, Clone, Copy)]
enum Window {
    /// Chunks of N, each waited for whole before the next (what `lvs.rs` does).
    Chunked(usize),
    /// Up to N at once, a new read as soon as the oldest completes.
    Sliding(usize),
}

/// Reads the pages of `stages` on an `O_DIRECT` uring bdev, stage after stage, without
/// decoding anything: the I/O part of the datapath's open alone.
fn replay(engine: &Engine, path: &Path, stages: &[Vec<PageNo>], window: Window) -> Res<Timed> {
    let (path, stages) = (path.to_path_buf(), stages.to_vec());
    engine
        .reactor(0)
        .block_on(move || async move {
            let base = UringBdev::open(
                "reopen-replay",
                &UringConfig {
                    path,
                    block_size: None,
                    direct: true,
                },
            )
            .map_err(err("uring bdev"))?;
            let bs = u64::from(base.geometry().block_size);
            let ch = base.open().map_err(err("channel"))?;
            let pool = basalt_engine::current().pool().clone();
            let t = Timed::start();
            for stage in &stages {
                let mut inflight: VecDeque<IoFuture> = VecDeque::new();
                for (k, p) in stage.iter().enumerate() {
                    let full = match window {
                        Window::Chunked(n) => k % n == 0,
                        Window::Sliding(n) => inflight.len() >= n,
                    };
                    if full {
                        while let Some(f) = inflight.pop_front() {
                            f.await.1.map_err(err("read"))?;
                            if matches!(window, Window::Sliding(_)) {
                                break;
                            }
                        }
                    }
                    let buf = pool.alloc(PAGE_SIZE).map_err(err("buffer"))?.await;
                    let lba = Lba(p.0 * PAGE_SIZE as u64 / bs);
                    inflight.push_back(ch.read(lba, [buf].into_iter().collect()));
                }
                for f in inflight {
                    f.await.1.map_err(err("read"))?;
                }
            }
            Ok(Timed::since(t))
        })
        .map_err(err("engine"))?
}

/// (time on a CPU, time runnable but waiting for a CPU) of the calling thread, in
/// milliseconds, from `/proc/thread-self/schedstat` (NaN where it cannot be read).
fn sched_ms() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut f = text
        .split_whitespace()
        .map(|x| x.parse::<f64>().map_or(f64::NAN, |ns| ns / 1e6));
    (f.next().unwrap_or(f64::NAN), f.next().unwrap_or(f64::NAN))
}

/// Wall time of one open, and how much of it the opening thread spent on a CPU and waiting
/// for one, in milliseconds; the rest it slept (waiting for the device).
#[derive(Debug, Clone, Copy)]
struct Timed {
    wall: f64,
    cpu: f64,
    queued: f64,
}

impl Timed {
    fn start() -> (Instant, (f64, f64)) {
        (Instant::now(), sched_ms())
    }

    fn since((t, (c, q)): (Instant, (f64, f64))) -> Timed {
        let wall = t.elapsed().as_secs_f64() * 1e3;
        let (c2, q2) = sched_ms();
        Timed {
            wall,
            cpu: c2 - c,
            queued: q2 - q,
        }
    }
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`.
fn drop_caches() -> Res<()> {
    let s = std::process::Command::new("sync")
        .status()
        .map_err(err("sync"))?;
    if !s.success() {
        return Err(format!("sync: {s}"));
    }
    std::fs::write("/proc/sys/vm/drop_caches", "3").map_err(err("/proc/sys/vm/drop_caches"))
}

struct Populated {
    expect: Expect,
    /// Distinct data clusters the maps name, by construction.
    clusters_mapped: u64,
    /// Non-empty map entries over every volume and snapshot, by construction.
    map_entries: u64,
    file_bytes: u64,
    commits: u64,
    populate_s: f64,
    crash_pages: usize,
}

fn populate(a: &Args) -> Res<Populated> {
    let started = Instant::now();
    let cs = a.cluster.0;
    let cs32 = u32::try_from(cs).map_err(|_| "cluster size too large".to_string())?;
    let budget = a.written.0 / cs;
    let (nv, ns) = (a.volumes, a.snapshots.min(a.volumes));
    if nv == 0 || budget < nv {
        return Err("need at least one volume and one cluster per volume".into());
    }
    // Base clusters b per volume and a quarter of them overwritten after a snapshot:
    // nv * b + ns * b / 4 = budget; what rounding leaves over goes to the base round-robin.
    let b = budget * 4 / (4 * nv + ns);
    let snapped: HashSet<u64> = (0..ns).map(|k| k * nv / ns).collect();
    let rewrite: Vec<u64> = (0..nv)
        .map(|i| if snapped.contains(&i) { b / 4 } else { 0 })
        .collect();
    let mut base = vec![b; nv as usize];
    let mut left = budget - nv * b - rewrite.iter().sum::<u64>();
    for i in (0..nv as usize).cycle() {
        if left == 0 {
            break;
        }
        base[i] += 1;
        left -= 1;
    }
    let sizes: Vec<u64> = match a.volume_size {
        Some(s) => {
            let c = s.0.div_ceil(cs);
            if base.iter().any(|&n| n > c) {
                return Err(format!(
                    "--volume-size {} holds fewer clusters than a volume's share",
                    s.0
                ));
            }
            vec![c; nv as usize]
        }
        None => {
            if !(a.fill > 0.0 && a.fill <= 1.0) {
                return Err("--fill must lie in (0, 1]".into());
            }
            base.iter()
                .map(|&n| ((n as f64 / a.fill).ceil() as u64).max(n).max(1))
                .collect()
        }
    };
    // Data, then metadata (generously: 1/8 of the data plus 256 clusters), then margin.
    let total_clusters = budget + budget / 8 + 256;
    let file_bytes = total_clusters * cs;
    let _ = std::fs::remove_file(&a.file);
    let f = std::fs::File::create(&a.file).map_err(err("creating the file"))?;
    f.set_len(file_bytes).map_err(err("sizing the file"))?;
    drop(f);
    let mut disk = FileDisk::open(&a.file, true).map_err(err("opening the file"))?;
    let mut store = Store::create(&mut disk, "reopen", cs32, 512).map_err(err("create"))?;
    let mut rng = Rng(a.seed);
    let mut ids = Vec::with_capacity(nv as usize);
    let mut picks = Vec::with_capacity(nv as usize);
    for i in 0..nv as usize {
        let id = store
            .create_volume(&format!("vol-{i:05}"), sizes[i] * cs)
            .map_err(err("create_volume"))?;
        ids.push(id);
        picks.push(rng.sample(sizes[i], base[i]));
    }
    // (commits made, entries set since the last one)
    let mut counts = (0u64, 0u64);
    let commit =
        |store: &mut Store, disk: &mut FileDisk, counts: &mut (u64, u64), force: bool| -> Res<()> {
            if force || counts.1 >= a.commit_every {
                store.commit(disk).map_err(err("commit"))?;
                *counts = (counts.0 + 1, 0);
            }
            Ok(())
        };
    commit(&mut store, &mut disk, &mut counts, true)?;
    // Round-robin, eight clusters of a volume at a time, as concurrent writers would.
    let full = |c| MapEntry {
        own: c,
        own_bits: u64::MAX,
        back: 0,
        back_bits: 0,
    };
    let mut pos = vec![0usize; nv as usize];
    loop {
        let mut any = false;
        for i in 0..nv as usize {
            let end = (pos[i] + 8).min(picks[i].len());
            for &index in &picks[i][pos[i]..end] {
                let c = store.alloc_cluster().map_err(err("alloc_cluster"))?;
                store
                    .set_entry(ids[i], index, full(c))
                    .map_err(err("set_entry"))?;
                counts.1 += 1;
                any = true;
            }
            pos[i] = end;
            commit(&mut store, &mut disk, &mut counts, false)?;
        }
        if !any {
            break;
        }
    }
    commit(&mut store, &mut disk, &mut counts, true)?;
    for &i in &snapped {
        store
            .snapshot(ids[i as usize], &format!("vol-{i:05}-snap"))
            .map_err(err("snapshot"))?;
    }
    commit(&mut store, &mut disk, &mut counts, true)?;
    // Overwrites after the snapshots: whole clusters, or half of one with the rest kept in
    // the snapshot's cluster (the volume layer's copy-on-write entry).
    let mut pos = vec![0usize; nv as usize];
    let mut n = 0u64;
    loop {
        let mut any = false;
        for i in 0..nv as usize {
            let end = (pos[i] + 8).min(rewrite[i] as usize);
            for &index in &picks[i][pos[i]..end] {
                let old = store.lookup(ids[i], index).map_err(err("lookup"))?.entry;
                let c = store.alloc_cluster().map_err(err("alloc_cluster"))?;
                let e = if n.is_multiple_of(2) {
                    full(c)
                } else {
                    MapEntry {
                        own: c,
                        own_bits: u64::from(u32::MAX),
                        back: old.own,
                        back_bits: !u64::from(u32::MAX),
                    }
                };
                n += 1;
                store
                    .set_entry(ids[i], index, e)
                    .map_err(err("set_entry"))?;
                counts.1 += 1;
                any = true;
            }
            pos[i] = end;
            commit(&mut store, &mut disk, &mut counts, false)?;
        }
        if !any {
            break;
        }
    }
    commit(&mut store, &mut disk, &mut counts, true)?;
    let expect = expect_of(&store);
    // Every snapshot shares all the entries its volume had; overwrites replace entries.
    let map_entries =
        base.iter().sum::<u64>() + snapped.iter().map(|&i| base[i as usize]).sum::<u64>();

    // The crash: uncommitted work in memory, a commit torn half-way, garbage in free space.
    let mut crash_clusters = Vec::new();
    for _ in 0..256 {
        let i = rng.below(nv) as usize;
        let c = store.alloc_cluster().map_err(err("alloc_cluster"))?;
        store
            .set_entry(ids[i], rng.below(sizes[i]), full(c))
            .map_err(err("set_entry"))?;
        crash_clusters.push(c);
    }
    for k in 0..3 {
        store
            .create_volume(&format!("crash-new-{k}"), 64 * cs)
            .map_err(err("create_volume"))?;
    }
    store
        .snapshot(ids[1 % ids.len()], "crash-snap")
        .map_err(err("snapshot"))?;
    if let Some(v) = store.find("vol-00000-snap") {
        let id = v.record.id;
        store.delete(id).map_err(err("delete"))?;
    }
    let plan = store.begin_commit().map_err(err("begin_commit"))?;
    let ppc = cs / PAGE_SIZE as u64;
    for (k, (p, bytes)) in plan.pages.iter().enumerate() {
        let w = if k % 8 == 3 {
            rng.garbage()
        } else {
            bytes.to_vec()
        };
        disk.write_page(*p, &w).map_err(err("torn commit"))?;
    }
    disk.write_page(plan.slot, &rng.garbage())
        .map_err(err("torn superblock"))?;
    for &c in crash_clusters.iter().take(32) {
        disk.write_page(PageNo(c * ppc), &rng.garbage())
            .map_err(err("garbage"))?;
    }
    disk.flush().map_err(err("flush"))?;
    let crash_pages = plan.pages.len();
    // No finish_commit, no further commit: the process "dies" here.
    drop(plan);
    drop(store);
    drop(disk);
    Ok(Populated {
        expect,
        clusters_mapped: budget,
        map_entries,
        file_bytes,
        commits: counts.0,
        populate_s: started.elapsed().as_secs_f64(),
        crash_pages,
    })
}

fn open_datapath(engine: &Engine, path: &Path, want: &Expect) -> Res<Timed> {
    let (path, want) = (path.to_path_buf(), want.clone());
    engine
        .reactor(0)
        .block_on(move || async move {
            let base: Arc<dyn Bdev> = Arc::new(
                UringBdev::open(
                    "reopen-base",
                    &UringConfig {
                        path,
                        block_size: None,
                        direct: true,
                    },
                )
                .map_err(err("uring bdev"))?,
            );
            let t = Timed::start();
            let lvs = LvStore::open(base).await.map_err(err("LvStore::open"))?;
            let timed = Timed::since(t);
            verify_lvs(&lvs, &want)?;
            Ok(timed)
        })
        .map_err(err("engine"))?
}

fn open_offline(path: &Path, want: &Expect) -> Res<Timed> {
    let t = Timed::start();
    let mut disk = FileDisk::open(path, false).map_err(err("opening the file"))?;
    let store = Store::open(&mut disk).map_err(err("Store::open"))?;
    let timed = Timed::since(t);
    verify_store(&store, want, "offline open")?;
    Ok(timed)
}

fn stats(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let median = if s.is_empty() {
        0.0
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    (median, s.last().copied().unwrap_or(0.0))
}

fn gib(b: u64) -> f64 {
    b as f64 / f64::from(1u32 << 30)
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let r = run(&args);
    if !args.keep {
        let _ = std::fs::remove_file(&args.file);
    }
    if let Err(e) = r {
        eprintln!("lvol-reopen: {e}");
        std::process::exit(1);
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

fn run(a: &Args) -> Res<()> {
    println!(
        "lvol-reopen: {} volumes, {:.1} GiB mapped in {} KiB clusters, {} snapshots \
         (each followed by overwrites of a quarter of the volume), volume size {}, file {}",
        a.volumes,
        gib(a.written.0),
        a.cluster.0 / 1024,
        a.snapshots.min(a.volumes),
        match a.volume_size {
            Some(s) => format!("{:.1} GiB each", gib(s.0)),
            None => format!("share / {} (fill)", a.fill),
        },
        a.file.display()
    );
    println!(
        "note: metadata only. Clusters are allocated and mapped but their data is never \
         written: open reads metadata pages only, so the data bytes do not change what is \
         measured, and writing {:.0} GiB would not fit this machine's disk or time budget.",
        gib(a.written.0)
    );
    let load_before = loadavg();
    let p = populate(a)?;
    let e = &p.expect;
    println!(
        "populated in {:.1} s ({} commits); last commit: generation {}, {} volumes and \
         snapshots, {} data clusters, {} map entries, {} metadata pages ({:.1} MiB), {} \
         clusters in use; file {:.1} GiB (sparse)",
        p.populate_s,
        p.commits,
        e.generation,
        e.volumes,
        p.clusters_mapped,
        p.map_entries,
        e.metadata_pages,
        e.metadata_pages as f64 * PAGE_SIZE as f64 / f64::from(1u32 << 20),
        e.used_clusters,
        gib(p.file_bytes),
    );
    println!(
        "crash: uncommitted changes dropped; a torn commit of {} pages (1 in 8 garbage), a \
         garbage superblock in the next slot and 32 garbage pages in uncommitted clusters",
        p.crash_pages
    );

    let mut dropped = Ok(());
    let mut drop_cache = || {
        if let Err(e) = drop_caches() {
            if dropped.is_ok() {
                println!("WARNING: cannot drop the page cache ({e}): runs may be warm");
            }
            dropped = Err(e);
        }
    };

    // Every page Store::open reads, read once from the file and kept; the maps are checked
    // by decoding those pages independently of Store.
    drop_cache();
    let mut fd = FileDisk::open(&a.file, false).map_err(err("opening the file"))?;
    let size = fd.size_bytes();
    let mut ram = RamDisk {
        disk: Some(&mut fd),
        pages: HashMap::new(),
        size,
    };
    let store = Store::open(&mut ram).map_err(err("Store::open (loading pages)"))?;
    verify_store(&store, e, "first open")?;
    drop(store);
    let mut ram = RamDisk {
        disk: None,
        pages: ram.pages,
        size,
    };
    let walked = walk_pages(&ram.pages)?;
    if walked != (p.clusters_mapped, p.map_entries) {
        return Err(format!(
            "the maps on disk name {} data clusters in {} entries; populated {} in {}",
            walked.0, walked.1, p.clusters_mapped, p.map_entries
        ));
    }
    let stages = prefetch_stages(&ram.pages)?;
    let prefetch_pages: usize = stages.iter().map(Vec::len).sum();
    let rounds: usize = stages
        .iter()
        .map(|s| s.len().div_ceil(PREFETCH_DEPTH))
        .sum();
    let chains = stages.iter().filter(|s| s.len() == 1).count();
    let levels = stages.len() - 1 - chains;
    let held_pages = ram.pages.len();

    let mut cfg = EngineConfig::with_cores(1);
    cfg.pin = false;
    let engine = Engine::start(&cfg).map_err(err("engine"))?;
    let windows = [
        ("replay chunked 64", Window::Chunked(PREFETCH_DEPTH)),
        ("replay sliding 64", Window::Sliding(PREFETCH_DEPTH)),
        ("replay sliding 256", Window::Sliding(256)),
    ];
    // The kinds take turns within each run, so that a change in background load touches
    // all of them alike.
    let (mut datapath, mut offline, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    let mut replays = vec![Vec::new(); windows.len()];
    for _ in 0..a.runs {
        drop_cache();
        datapath.push(open_datapath(&engine, &a.file, e)?);
        drop_cache();
        offline.push(open_offline(&a.file, e)?);
        let t = Timed::start();
        let store = Store::open(&mut ram).map_err(err("Store::open (memory)"))?;
        cpu.push(Timed::since(t));
        verify_store(&store, e, "in-memory open")?;
        drop(store);
        for (k, (_, w)) in windows.iter().enumerate() {
            drop_cache();
            replays[k].push(replay(&engine, &a.file, &stages, *w)?);
        }
    }
    engine.shutdown();
    let load_after = loadavg();

    let wall = |v: &[Timed]| v.iter().map(|t| t.wall).collect::<Vec<f64>>();
    let busy = |v: &[Timed]| v.iter().map(|t| t.cpu).collect::<Vec<f64>>();
    let queued = |v: &[Timed]| v.iter().map(|t| t.queued).collect::<Vec<f64>>();
    let (dp_cpu, off_cpu, mem_cpu) = (busy(&datapath), busy(&offline), busy(&cpu));
    let (dp_q, off_q) = (queued(&datapath), queued(&offline));
    let (datapath, offline, cpu) = (wall(&datapath), wall(&offline), wall(&cpu));
    let (dm, dx) = stats(&datapath);
    let (om, ox) = stats(&offline);
    let (cm, cx) = stats(&cpu);
    let (dcm, ocm, mcm) = (stats(&dp_cpu).0, stats(&off_cpu).0, stats(&mem_cpu).0);
    let (dqm, oqm) = (stats(&dp_q).0, stats(&off_q).0);
    let replay_cpu: Vec<Vec<f64>> = replays.iter().map(|r| busy(r)).collect();
    let replays: Vec<Vec<f64>> = replays.iter().map(|r| wall(r)).collect();
    let rstats: Vec<(f64, f64)> = replays.iter().map(|r| stats(r)).collect();
    let rcm = stats(&replay_cpu[0]).0;
    println!(
        "page cache dropped before each run: {}; load average before {load_before}, after \
         {load_after} (2 cores)",
        match &dropped {
            Ok(()) => "yes".to_string(),
            Err(e) => format!("NO ({e})"),
        }
    );
    println!(
        "verified every open: generation, volume count, clusters in use, metadata pages, \
         check() clean; maps decoded from disk: {} data clusters, {} entries",
        walked.0, walked.1
    );
    println!(
        "prefetch: {prefetch_pages} pages (Store::open uses {held_pages}) in {} stages: \
         {chains} chained single reads (superblocks, volume table, properties) and {levels} \
         map levels; {rounds} rounds of up to {PREFETCH_DEPTH} reads",
        stages.len()
    );
    println!();
    let mut head = format!(
        "{:>6}  {:>12}  {:>12}  {:>12}",
        "run", "datapath ms", "offline ms", "in-memory ms"
    );
    for (name, _) in &windows {
        head += &format!("  {name:>19}");
    }
    println!("{head}");
    let row = |label: String, d: f64, o: f64, c: f64, r: Vec<f64>| {
        let mut line = format!("{label:>6}  {d:>12.1}  {o:>12.1}  {c:>12.1}");
        for x in r {
            line += &format!("  {x:>19.1}");
        }
        println!("{line}");
    };
    for i in 0..a.runs {
        row(
            (i + 1).to_string(),
            datapath[i],
            offline[i],
            cpu[i],
            replays.iter().map(|r| r[i]).collect(),
        );
    }
    row(
        "median".into(),
        dm,
        om,
        cm,
        rstats.iter().map(|s| s.0).collect(),
    );
    row(
        "max".into(),
        dx,
        ox,
        cx,
        rstats.iter().map(|s| s.1).collect(),
    );
    println!();
    println!(
        "opening thread (medians): datapath (reactor) {dcm:.1} ms on a CPU, {dqm:.1} ms \
         waiting for one, the rest asleep on the device; offline {ocm:.1} ms on a CPU, \
         {oqm:.1} ms waiting for one; in-memory {mcm:.1} ms on a CPU"
    );
    println!(
        "datapath open: median {dm:.1} ms, max {dx:.1} ms: goal (< 2000 ms) {}",
        if dx < 2000.0 { "met" } else { "NOT met" },
    );
    println!(
        "where the datapath's time goes (medians): {dcm:.1} ms on a CPU, {dqm:.1} ms waiting \
         for one, {:.1} ms asleep on the device. On the CPU: Store::open from memory \
         ~{mcm:.1} ms; issuing and completing the reads (engine and kernel: O_DIRECT \
         submission, virtio kicks) ~{rcm:.1} ms, measured by the replay; the prefetch's \
         decoding, page copies and hash maps the remaining ~{:.1} ms. The reads alone, \
         issued as the prefetch issues them: {:.1} ms ({rounds} rounds, {:.3} ms each); with \
         a sliding window of 64: {:.1} ms, of 256: {:.1} ms.",
        dm - dcm - dqm,
        dcm - mcm - rcm,
        rstats[0].0,
        rstats[0].0 / rounds.max(1) as f64,
        rstats[1].0,
        rstats[2].0,
    );
    let round = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| (x * 100.0).round() / 100.0).collect() };
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    let json = serde_json::json!({
        "bench": "lvol-reopen",
        "volumes": a.volumes,
        "snapshots": a.snapshots.min(a.volumes),
        "volumes_and_snapshots": e.volumes,
        "volume_size_bytes": a.volume_size.map(|s| s.0),
        "cluster_bytes": a.cluster.0,
        "written_bytes": a.written.0,
        "clusters_mapped": p.clusters_mapped,
        "map_entries": p.map_entries,
        "metadata_pages": e.metadata_pages,
        "clusters_in_use": e.used_clusters,
        "file_bytes": p.file_bytes,
        "generation": e.generation,
        "populate_s": (p.populate_s * 10.0).round() / 10.0,
        "prefetch_pages": prefetch_pages,
        "prefetch_stages": stages.len(),
        "prefetch_rounds": rounds,
        "page_cache_dropped": dropped.is_ok(),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "datapath_ms": round(&datapath),
        "datapath_median_ms": r2(dm),
        "datapath_max_ms": r2(dx),
        "offline_ms": round(&offline),
        "offline_median_ms": r2(om),
        "offline_max_ms": r2(ox),
        "in_memory_ms": round(&cpu),
        "in_memory_median_ms": r2(cm),
        "datapath_thread_cpu_ms": round(&dp_cpu),
        "datapath_thread_runqueue_ms": round(&dp_q),
        "offline_thread_runqueue_ms": round(&off_q),
        "offline_thread_cpu_ms": round(&off_cpu),
        "in_memory_thread_cpu_ms": round(&mem_cpu),
        "replay_chunked64_ms": round(&replays[0]),
        "replay_chunked64_thread_cpu_ms": round(&replay_cpu[0]),
        "replay_sliding64_ms": round(&replays[1]),
        "replay_sliding256_ms": round(&replays[2]),
        "goal_ms": 2000,
        "goal_met": dx < 2000.0,
    });
    println!("{json}");
    Ok(())
}
