//! `lvol-crash`: the volume store's crash loop, one side at a time.
//!
//! `write` runs a verifying write load on volume `crash` of a store on a file until it is
//! killed, and appends to a journal what it issued and what became durable. `verify` reopens
//! the store, runs its checker, and reads every block of the volume (and of the snapshots the
//! writer took) back against the journal. `tests/tests/lvol_crash.rs` alternates the two with a
//! `kill -9` in between.
//!
//! Journal records, one a line, each written whole with one `write()` before the I/O it
//! describes is issued (or after the completion it reports):
//! - `s G SEED`: a writer with seed `SEED` starts at generation `G`;
//! - `w G B...`: generation `G` writes blocks `B...` (4 KiB each);
//! - `d G B`: the FUA write of block `B` in generation `G` completed (durable);
//! - `u G START LEN`: generation `G` unmaps blocks `START..START+LEN` (after its writes);
//! - `flushed G`: the flush after generation `G` completed: all of `G` is durable.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, anyhow, bail, ensure};
use basalt_bdev::modules::uring::{UringBdev, UringConfig};
use basalt_bdev::{Bdev, ByteSize, Lba};
use basalt_engine::{BufPoolConfig, Engine, EngineConfig, current};
use basalt_lvol::{LvStore, VolumeBdev};
use clap::{Parser, Subcommand};

/// Bytes per self-describing block.
const BLOCK: usize = 4096;
const MAGIC: &[u8; 8] = b"BSLTCRSH";
/// The volume under load.
const VOLUME: &str = "crash";
/// Writes in flight per reactor (two reactors).
const DEPTH: usize = 16;
/// Snapshots kept; the oldest beyond this are deleted.
const KEEP_SNAPSHOTS: usize = 4;
/// Reads in flight when verifying, of [`READ_BLOCKS`] blocks each.
const READ_DEPTH: usize = 8;
const READ_BLOCKS: u64 = 16;
/// Findings printed in full.
const SAMPLES: u64 = 20;

#[derive(Debug, Parser)]
#[command(about = "Crash loop for the volume store: a verifying writer and its checker")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, clap::Args)]
struct Files {
    /// The store's base file.
    #[arg(long)]
    file: PathBuf,
    /// The journal.
    #[arg(long)]
    journal: PathBuf,
}

#[derive(Debug, clap::Args)]
struct WriteArgs {
    #[command(flatten)]
    files: Files,
    /// Seed of this run's choices and block contents.
    #[arg(long)]
    seed: u64,
    /// Size of the volume.
    #[arg(long, default_value = "64M")]
    size: ByteSize,
    /// Cluster size of a new store.
    #[arg(long, default_value = "64K")]
    cluster: ByteSize,
    /// Percentage of writes with FUA.
    #[arg(long, default_value_t = 5)]
    fua_percent: u64,
    /// Create the store (and a new journal) instead of opening it.
    #[arg(long)]
    create: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write self-describing blocks to volume `crash` until killed, journaling durability.
    Write(WriteArgs),
    /// Reopen, check and read everything back against the journal; exit 0 only if clean.
    Verify(Files),
}

fn main() -> ExitCode {
    let r = match Cli::parse().cmd {
        Cmd::Write(args) => write(&args).map(|()| true),
        Cmd::Verify(files) => verify(&files),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("lvol-crash: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// splitmix64: small, seedable, good enough for choices and fill.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Fills `buf` (one block): magic, block index, generation, seed, PRNG bytes, CRC-32C of the
/// rest in the last four bytes.
fn fill_block(buf: &mut [u8], block: u64, generation: u64, seed: u64) {
    buf[..8].copy_from_slice(MAGIC);
    buf[8..16].copy_from_slice(&block.to_le_bytes());
    buf[16..24].copy_from_slice(&generation.to_le_bytes());
    buf[24..32].copy_from_slice(&seed.to_le_bytes());
    let mut rng =
        Rng(seed ^ generation.rotate_left(29) ^ block.wrapping_mul(0xA24B_AED4_963E_E407));
    for c in buf[32..BLOCK - 4].chunks_mut(8) {
        c.copy_from_slice(&rng.next().to_le_bytes()[..c.len()]);
    }
    let crc = crc32c::crc32c(&buf[..BLOCK - 4]);
    buf[BLOCK - 4..].copy_from_slice(&crc.to_le_bytes());
}

/// What a block read back holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Zeros,
    /// Block index, generation, seed.
    Written(u64, u64, u64),
    Garbage(&'static str),
}

fn decode(buf: &[u8]) -> Content {
    if &buf[..8] != MAGIC {
        // memcmp: fast in debug builds too.
        return if buf == &[0; BLOCK][..] {
            Content::Zeros
        } else {
            Content::Garbage("no magic")
        };
    }
    let crc = u32::from_le_bytes(buf[BLOCK - 4..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&buf[..BLOCK - 4]) != crc {
        return Content::Garbage("bad CRC");
    }
    let word = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
    Content::Written(word(8), word(16), word(24))
}

/// One issued change to a block.
#[derive(Debug, Clone, Copy)]
struct Event {
    generation: u64,
    write: bool,
}

/// The journal, parsed.
#[derive(Debug, Default)]
struct Journal {
    /// (first generation, seed) of each writer run, in order.
    seeds: Vec<(u64, u64)>,
    /// Per block, every write and unmap in issue order.
    events: HashMap<u64, Vec<Event>>,
    flushed: HashSet<u64>,
    fua: HashSet<(u64, u64)>,
    max_generation: u64,
    /// Length of the journal up to its last whole line.
    whole_bytes: u64,
}

impl Journal {
    /// Reads `path` (missing: empty), ignoring a torn last line.
    fn load(path: &Path) -> anyhow::Result<Journal> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let whole = text.rfind('\n').map_or("", |i| &text[..=i]);
        let mut j = Journal {
            whole_bytes: whole.len() as u64,
            ..Journal::default()
        };
        for (n, line) in whole.lines().enumerate() {
            j.apply(line)
                .with_context(|| format!("journal line {}: {line:?}", n + 1))?;
        }
        Ok(j)
    }

    fn apply(&mut self, line: &str) -> anyhow::Result<()> {
        let mut fields = line.split_ascii_whitespace();
        let tag = fields.next().context("empty line")?;
        let nums = fields
            .map(str::parse)
            .collect::<Result<Vec<u64>, _>>()
            .context("not a number")?;
        let (&g, rest) = nums.split_first().context("no generation")?;
        self.max_generation = self.max_generation.max(g);
        let mut add = |block: u64, write: bool| {
            let generation = g;
            self.events
                .entry(block)
                .or_default()
                .push(Event { generation, write });
        };
        match (tag, rest) {
            ("s", &[seed]) => self.seeds.push((g, seed)),
            ("w", blocks) => blocks.iter().for_each(|&b| add(b, true)),
            ("u", &[start, len]) => (start..start + len).for_each(|b| add(b, false)),
            ("d", &[b]) => _ = self.fua.insert((g, b)),
            ("flushed", []) => _ = self.flushed.insert(g),
            _ => bail!("unknown record"),
        }
        Ok(())
    }

    /// Judges what block `b` holds against the events up to generation `upto`: the last
    /// durable event, or any event issued after it, may show. Returns the finding (if any) and
    /// whether a durable event constrained the block.
    fn judge(&self, b: u64, got: Content, upto: u64) -> (Option<(&'static str, String)>, bool) {
        let all = self.events.get(&b).map_or(&[][..], Vec::as_slice);
        let evs = &all[..all.partition_point(|e| e.generation <= upto)];
        let durable = |e: &Event| {
            self.flushed.contains(&e.generation)
                || (e.write && self.fua.contains(&(e.generation, b)))
        };
        let last = evs.iter().rposition(durable);
        let (before, tail) = evs.split_at(last.unwrap_or(0));
        // A write durable through FUA alone: its generation was never flushed.
        let fua_only = last.is_some_and(|i| !self.flushed.contains(&evs[i].generation));
        let what = last.map_or("nothing durable".into(), |i| {
            let kind = match (evs[i].write, fua_only) {
                (false, _) => "unmap",
                (true, false) => "flushed write",
                (true, true) => "FUA write",
            };
            format!("last durable: {kind} of generation {}", evs[i].generation)
        });
        let lost = if fua_only { "lost-fua" } else { "lost" };
        let seed_of = |g| self.seeds.iter().rev().find(|s| s.0 <= g).map(|s| s.1);
        let issued = |evs: &[Event], g| evs.iter().any(|e| e.write && e.generation == g);
        let finding = match got {
            Content::Zeros if last.is_none() || tail.iter().any(|e| !e.write) => {
                return (None, last.is_some());
            }
            Content::Zeros => (lost, "zeros".to_owned()),
            Content::Garbage(why) => ("corrupt", why.to_owned()),
            Content::Written(block, ..) if block != b => {
                ("corrupt", format!("holds block {block}"))
            }
            Content::Written(_, g, seed) if seed_of(g) != Some(seed) => {
                ("corrupt", format!("generation {g} with seed {seed}"))
            }
            Content::Written(_, g, _) if issued(tail, g) => return (None, last.is_some()),
            Content::Written(_, g, _) if issued(before, g) => {
                (lost, format!("stale generation {g}"))
            }
            Content::Written(_, g, _) => ("corrupt", format!("generation {g} never wrote it")),
        };
        let (kind, why) = finding;
        (Some((kind, format!("{why}; {what}"))), last.is_some())
    }
}

/// Two unpinned reactors with a modest buffer pool.
fn engine() -> anyhow::Result<Engine> {
    let mut cfg = EngineConfig::with_cores(2);
    cfg.pin = false;
    cfg.reactor.buffers = BufPoolConfig {
        small_size: 8192,
        small_count: 256,
        large_size: 128 * 1024,
        large_count: 128,
    };
    Engine::start(&cfg).map_err(|e| anyhow!("starting the engine: {e}"))
}

/// Runs `f` on reactor `core` and waits for its result.
fn on<F, Fut, T>(e: &Engine, core: usize, f: F) -> anyhow::Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>> + 'static,
    T: Send + 'static,
{
    e.reactor(core)
        .block_on(f)
        .map_err(|e| anyhow!("reactor {core}: {e}"))?
}

fn open_base(file: &Path) -> anyhow::Result<Arc<dyn Bdev>> {
    let cfg = UringConfig {
        path: file.to_owned(),
        block_size: None,
        direct: true,
    };
    Ok(Arc::new(UringBdev::open("crash-base", &cfg)?))
}

/// Appends one whole line (a single `write()`; the page cache outlives `kill -9`).
fn append(journal: &File, line: &str) -> anyhow::Result<()> {
    let mut f = journal;
    f.write_all(line.as_bytes())
        .context("appending to the journal")
}

fn write(args: &WriteArgs) -> anyhow::Result<()> {
    let (jpath, seed, size, create) = (&args.files.journal, args.seed, args.size.0, args.create);
    ensure!(size > 0 && size.is_multiple_of(BLOCK as u64), "bad --size");
    let cluster = u32::try_from(args.cluster.0).context("bad --cluster")?;
    if create {
        File::create(jpath).context("creating the journal")?;
    }
    let journal = Journal::load(jpath)?;
    let jf = Arc::new(OpenOptions::new().append(true).create(true).open(jpath)?);
    // A line torn by the last kill goes: what it described was not issued or is not relied on.
    jf.set_len(journal.whole_bytes)?;
    let engine = engine()?;
    let base = open_base(&args.files.file)?;
    let lvs = on(&engine, 0, move || async move {
        let lvs = if create {
            LvStore::create(base, "crashpool", cluster).await?
        } else {
            LvStore::open(base).await?
        };
        let id = match lvs.find(VOLUME) {
            Some(v) => v.id,
            None => lvs.create_volume(VOLUME, size, false).await?,
        };
        anyhow::Ok((lvs, id))
    })?;
    let (lvs, id) = lvs;
    let vol = lvs.open_volume(id)?;
    let blocks = vol.geometry().bytes() / BLOCK as u64;
    let mut g = journal.max_generation + 1;
    append(&jf, &format!("s {g} {seed}\n"))?;
    let mut rng = Rng(seed);
    loop {
        // Runs of 1-4 adjacent blocks, so that writes share clusters and subclusters.
        let mut picked = HashSet::new();
        let mut batch = Vec::new();
        for _ in 0..8 + rng.below(17) {
            let start = rng.below(blocks);
            for b in start..(start + 1 + rng.below(4)).min(blocks) {
                if picked.insert(b) {
                    batch.push((b, rng.below(100) < args.fua_percent));
                }
            }
        }
        let list: Vec<String> = batch.iter().map(|(b, _)| b.to_string()).collect();
        append(&jf, &format!("w {g} {}\n", list.join(" ")))?;
        let mut waits = Vec::new();
        for core in 0..2 {
            let mine: Vec<(u64, bool)> = batch.iter().copied().skip(core).step_by(2).collect();
            let (vol, jf) = (vol.clone(), jf.clone());
            waits.push(
                engine
                    .reactor(core)
                    .spawn(move || write_blocks(vol, mine, g, seed, jf))
                    .map_err(|e| anyhow!("reactor {core}: {e}"))?,
            );
        }
        for w in waits {
            w.wait().map_err(|_| anyhow!("a writer task was lost"))??;
        }
        // Every 7th generation unmaps a range too, after its writes and before its flush.
        let unmap = (g % 7 == 0).then(|| {
            let start = rng.below(blocks);
            (start, (1 + rng.below(64)).min(blocks - start))
        });
        if let Some((start, len)) = unmap {
            append(&jf, &format!("u {g} {start} {len}\n"))?;
        }
        let v = vol.clone();
        on(&engine, (g % 2) as usize, move || async move {
            let ch = v.open()?;
            let per = BLOCK as u64 / u64::from(ch.geometry().block_size);
            if let Some((start, len)) = unmap {
                ch.unmap(Lba(start * per), len * per).await.1?;
            }
            ch.flush().await.1?;
            anyhow::Ok(())
        })?;
        append(&jf, &format!("flushed {g}\n"))?;
        if g % 10 == 0 {
            let l = lvs.clone();
            on(&engine, 0, move || async move {
                l.snapshot(id, &format!("g{g}")).await?;
                let mut snaps: Vec<(u64, u64)> = l
                    .volumes()
                    .iter()
                    .filter(|v| v.snapshot)
                    .filter_map(|v| Some((v.name.strip_prefix('g')?.parse().ok()?, v.id)))
                    .collect();
                snaps.sort_unstable();
                for &(_, old) in snaps.iter().rev().skip(KEEP_SNAPSHOTS) {
                    l.delete(old).await?;
                }
                anyhow::Ok(())
            })?;
        }
        g += 1;
    }
}

/// Writes `blocks` of generation `g` from this reactor, [`DEPTH`] at a time; journals each
/// FUA write once it completes.
async fn write_blocks(
    vol: Arc<VolumeBdev>,
    blocks: Vec<(u64, bool)>,
    g: u64,
    seed: u64,
    jf: Arc<File>,
) -> anyhow::Result<()> {
    let ch = vol.open()?;
    let per = BLOCK as u64 / u64::from(ch.geometry().block_size);
    let pool = current().pool().clone();
    let mut queue = VecDeque::new();
    let finish = |(b, fua, io): (u64, bool, basalt_bdev::IoFuture)| {
        let jf = jf.clone();
        async move {
            io.await.1.with_context(|| format!("writing block {b}"))?;
            if fua {
                append(&jf, &format!("d {g} {b}\n"))?;
            }
            anyhow::Ok(())
        }
    };
    for (b, fua) in blocks {
        let mut buf = pool.alloc(BLOCK)?.await;
        fill_block(&mut buf, b, g, seed);
        let io = ch.write(Lba(b * per), [buf].into_iter().collect(), fua);
        queue.push_back((b, fua, io));
        if queue.len() >= DEPTH {
            finish(queue.pop_front().expect("queued")).await?;
        }
    }
    while let Some(q) = queue.pop_front() {
        finish(q).await?;
    }
    Ok(())
}

/// Counts of one read-back.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    blocks: u64,
    durable: u64,
    lost: u64,
    /// Of `lost`, blocks whose last durable write was a FUA write of an unflushed generation.
    lost_fua: u64,
    corrupt: u64,
}

/// Reads every block of `vol` and judges it against the journal up to generation `upto`;
/// prints the first findings.
async fn scan(
    vol: Arc<VolumeBdev>,
    journal: Arc<Journal>,
    upto: u64,
    name: String,
) -> anyhow::Result<Tally> {
    let ch = vol.open()?;
    let per = BLOCK as u64 / u64::from(ch.geometry().block_size);
    let total = ch.geometry().bytes() / BLOCK as u64;
    let pool = current().pool().clone();
    let mut t = Tally::default();
    let (mut queue, mut next) = (VecDeque::new(), 0);
    while next < total || !queue.is_empty() {
        if next < total && queue.len() < READ_DEPTH {
            let n = READ_BLOCKS.min(total - next);
            let buf = pool.alloc(n as usize * BLOCK)?.await;
            let io = ch.read(Lba(next * per), [buf].into_iter().collect());
            queue.push_back((next, io));
            next += n;
            continue;
        }
        let (first, io) = queue.pop_front().expect("queued");
        let (bufs, r) = io.await;
        r.with_context(|| format!("reading {name} at block {first}"))?;
        for (b, blk) in (first..).zip(bufs[0].chunks(BLOCK)) {
            let (finding, durable) = journal.judge(b, decode(blk), upto);
            t.blocks += 1;
            t.durable += u64::from(durable);
            let Some((kind, why)) = finding else { continue };
            t.lost += u64::from(kind.starts_with("lost"));
            t.lost_fua += u64::from(kind == "lost-fua");
            t.corrupt += u64::from(kind == "corrupt");
            if t.lost + t.corrupt <= SAMPLES {
                eprintln!("{kind}: {name} block {b}: {why}");
            }
        }
    }
    Ok(t)
}

fn verify(files: &Files) -> anyhow::Result<bool> {
    let journal = Arc::new(Journal::load(&files.journal)?);
    let engine = engine()?;
    let base = open_base(&files.file)?;
    let started = Instant::now();
    let open = move || async move { anyhow::Ok(LvStore::open(base).await?) };
    let lvs = on(&engine, 0, open)?;
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let report = lvs.check();
    for p in &report.problems {
        eprintln!("check problem: {p}");
    }
    let live = lvs.find(VOLUME).context("volume `crash` is missing")?;
    let mut targets = vec![(VOLUME.to_owned(), live.id, u64::MAX)];
    for v in lvs.volumes().into_iter().filter(|v| v.snapshot) {
        let g = v.name.strip_prefix('g').and_then(|g| g.parse().ok());
        let g = g.with_context(|| format!("unexpected snapshot {:?}", v.name))?;
        targets.push((v.name, v.id, g));
    }
    let mut tallies = Vec::new();
    for (name, id, upto) in targets {
        let (vol, j) = (lvs.open_volume(id)?, journal.clone());
        tallies.push(on(&engine, 0, move || scan(vol, j, upto, name))?);
    }
    let sum = |f: fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    let (lost, corrupt) = (sum(|t| t.lost), sum(|t| t.corrupt));
    let line = serde_json::json!({
        "open_ms": open_ms,
        "blocks": tallies[0].blocks,
        "durable_blocks": tallies[0].durable,
        "snapshots": tallies.len() - 1,
        "snapshot_blocks": sum(|t| t.blocks) - tallies[0].blocks,
        "lost": lost,
        "lost_fua": sum(|t| t.lost_fua),
        "corrupt": corrupt,
        "check_problems": report.problems.len(),
        "used_clusters": lvs.space().used_clusters,
        "total_clusters": lvs.space().total_clusters,
        "generations_flushed": journal.flushed.len(),
        "max_generation": journal.max_generation,
    });
    println!("{line}");
    Ok(lost == 0 && corrupt == 0 && report.problems.is_empty())
}
