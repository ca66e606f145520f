//! Running a job: one reactor per core, `qd` workers per reactor, each keeping one I/O in
//! flight; then, in verify mode, a read-back of everything written.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use basalt_bdev::IoVecs;
use basalt_engine::{BufPoolConfig, Engine, EngineConfig, ReactorConfig, current};
use hdrhistogram::Histogram;

use crate::cpu::CpuTime;
use crate::job::{Job, Pattern, Region};
use crate::report::{ErrorSample, OpStats, Report, VerifyReport};
use crate::target::{Queue, QueueError, Target};
use crate::verify::{self, Header, Mismatch};

/// Why a run could not start.
#[derive(Debug, displaydoc::Display, thiserror::Error)]
pub enum RunError {
    /// {0}
    Job(String),
    /// cannot start the engine
    Engine(#[from] basalt_engine::EngineError),
    /// the target refused a queue: {0}
    Queue(String),
    /// {0}
    Connect(String),
}

/// Latency histograms in nanoseconds, 1 ns to 1 hour at 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("static bounds are valid")
}

/// Size of one verify header's unit within an I/O.
fn verify_unit(bs: u64) -> usize {
    if bs.is_multiple_of(4096) { 4096 } else { 512 }
}

/// Generation marking a unit whose last write failed: its content is unknown.
const UNKNOWN: u32 = u32::MAX;

/// Counters of one core for one direction.
#[derive(Debug)]
struct Dir {
    ios: u64,
    bytes: u64,
    hist: Histogram<u64>,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            ios: 0,
            bytes: 0,
            hist: histogram(),
        }
    }
}

/// What a core sends back from the timed phase.
#[derive(Debug)]
struct CoreResult {
    read: Dir,
    write: Dir,
    errors: u64,
    error_samples: Vec<ErrorSample>,
    mismatches: u64,
    mismatch_samples: Vec<ErrorSample>,
    verified: u64,
    elapsed: Duration,
    /// Generation per unit (verify mode).
    gens: Vec<u32>,
}

/// One core's shared state, used by its workers.
struct Core {
    job: Job,
    region: Region,
    queue: Queue,
    run_id: u64,
    rng: Cell<u64>,
    cursor: Cell<u64>,
    left: Cell<Option<u64>>,
    deadline: Option<Instant>,
    stop: Cell<bool>,
    read: RefCell<Dir>,
    write: RefCell<Dir>,
    errors: Cell<u64>,
    error_samples: RefCell<Vec<ErrorSample>>,
    mismatches: Cell<u64>,
    mismatch_samples: RefCell<Vec<ErrorSample>>,
    verified: Cell<u64>,
    gens: RefCell<Vec<u32>>,
    busy: RefCell<Vec<bool>>,
}

const SAMPLES: usize = 10;

impl Core {
    /// A core with zeroed counters, no limits and no unit marked busy.
    fn new(job: Job, region: Region, queue: Queue, run_id: u64, gens: Vec<u32>) -> Core {
        Core {
            job,
            region,
            queue,
            run_id,
            rng: Cell::new(run_id),
            cursor: Cell::new(0),
            left: Cell::new(None),
            deadline: None,
            stop: Cell::new(false),
            read: RefCell::new(Dir::new()),
            write: RefCell::new(Dir::new()),
            errors: Cell::new(0),
            error_samples: RefCell::default(),
            mismatches: Cell::new(0),
            mismatch_samples: RefCell::default(),
            verified: Cell::new(0),
            gens: RefCell::new(gens),
            busy: RefCell::new(Vec::new()),
        }
    }

    fn next_random(&self) -> u64 {
        // wyrand: fast, good enough for offsets and the read/write mix.
        let s = self.rng.get().wrapping_add(0xa076_1d64_78bd_642f);
        self.rng.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_random()) * u128::from(n)) >> 64) as u64
    }

    /// Picks the next I/O: direction and unit. `None` when the core is done.
    fn next_op(&self) -> Option<(bool, u64)> {
        if self.stop.get() {
            return None;
        }
        if let Some(left) = self.left.get() {
            if left == 0 {
                return None;
            }
            self.left.set(Some(left - 1));
        }
        let write = match self.job.rw {
            Pattern::Read | Pattern::Randread => false,
            Pattern::Write | Pattern::Randwrite => true,
            Pattern::Randrw => self.below(100) >= u64::from(self.job.rwmixread),
        };
        let units = self.region.units;
        let mut unit = self.pick(units);
        if self.job.verify {
            // Never two I/Os on one unit at once: their order would be undefined.
            let mut busy = self.busy.borrow_mut();
            let mut tries = 0;
            while busy[unit as usize] {
                tries += 1;
                if tries > 64 && !self.job.rw.random() {
                    // Sequential wrap-around onto an I/O still in flight: take the next free one.
                    match busy.iter().position(|b| !b) {
                        Some(u) => unit = u as u64,
                        None => return None,
                    }
                    break;
                }
                unit = self.pick(units);
            }
            busy[unit as usize] = true;
        }
        Some((write, unit))
    }

    fn pick(&self, units: u64) -> u64 {
        if self.job.rw.random() {
            self.below(units)
        } else {
            let u = self.cursor.get();
            self.cursor.set((u + 1) % units);
            u
        }
    }

    fn record_error(&self, offset: u64, what: String) {
        self.errors.set(self.errors.get() + 1);
        let mut s = self.error_samples.borrow_mut();
        if s.len() < SAMPLES {
            s.push(ErrorSample { offset, what });
        }
        if !self.job.continue_on_error {
            self.stop.set(true);
        }
    }

    fn record_mismatch(&self, offset: u64, m: &Mismatch) {
        self.mismatches.set(self.mismatches.get() + 1);
        let mut s = self.mismatch_samples.borrow_mut();
        if s.len() < SAMPLES {
            s.push(ErrorSample {
                offset,
                what: m.to_string(),
            });
        }
    }

    /// Checks every verify unit of a read of `unit`.
    fn check_read(&self, unit: u64, bufs: &IoVecs, generation: u32) {
        let vu = verify_unit(self.job.bs);
        let base = self.region.start + unit * self.job.bs;
        let mut at = base;
        for b in bufs {
            for chunk in b.chunks(vu) {
                let expected = Header {
                    offset: at,
                    run_id: self.run_id,
                    generation,
                };
                if let Err(m) = verify::check(chunk, expected) {
                    self.record_mismatch(at, &m);
                }
                at += chunk.len() as u64;
            }
        }
        self.verified.set(self.verified.get() + 1);
    }

    fn fill_write(&self, unit: u64, bufs: &mut IoVecs, generation: u32) {
        let vu = verify_unit(self.job.bs);
        let mut at = self.region.start + unit * self.job.bs;
        for b in bufs.iter_mut() {
            for chunk in b.chunks_mut(vu) {
                verify::fill(
                    chunk,
                    Header {
                        offset: at,
                        run_id: self.run_id,
                        generation,
                    },
                );
                at += chunk.len() as u64;
            }
        }
    }
}

/// Allocates the buffers of one I/O of `bs` bytes (several when `bs` exceeds the largest pool
/// buffer).
async fn io_buffers(bs: u64) -> IoVecs {
    let reactor = current();
    let pool = reactor.pool();
    let max = pool.max_size() as u64;
    let mut v = IoVecs::new();
    let mut left = bs;
    while left > 0 {
        let n = left.min(max);
        v.push(
            pool.alloc(n as usize)
                .expect("within the pool's largest size")
                .await,
        );
        left -= n;
    }
    v
}

fn fill_random(bufs: &mut IoVecs, mut seed: u64) {
    for b in bufs.iter_mut() {
        for chunk in b.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let v = seed.to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

async fn worker(core: Rc<Core>, id: u64) {
    let mut bufs = io_buffers(core.job.bs).await;
    if core.job.rw.writes() && !core.job.verify {
        // Incompressible data, as fio writes by default.
        fill_random(
            &mut bufs,
            core.run_id ^ (id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
    }
    let bs = core.job.bs;
    while let Some((write, unit)) = core.next_op() {
        let offset = core.region.start + unit * bs;
        let generation = if core.job.verify {
            let mut gens = core.gens.borrow_mut();
            let g = &mut gens[unit as usize];
            if write {
                *g = if *g == UNKNOWN - 1 { 1 } else { *g + 1 };
                core.fill_write(unit, &mut bufs, *g);
            }
            *g
        } else {
            0
        };
        let started = Instant::now();
        let (back, res) = if write {
            core.queue.write(offset, bufs).await
        } else {
            core.queue.read(offset, bufs).await
        };
        let now = Instant::now();
        bufs = back;
        let ns = u64::try_from((now - started).as_nanos()).unwrap_or(u64::MAX);
        match res {
            Ok(()) => {
                let mut d = if write {
                    core.write.borrow_mut()
                } else {
                    core.read.borrow_mut()
                };
                d.ios += 1;
                d.bytes += bs;
                d.hist.saturating_record(ns.max(1));
                drop(d);
                if core.job.verify && !write && generation != 0 && generation != UNKNOWN {
                    core.check_read(unit, &bufs, generation);
                }
            }
            Err(e) => {
                if core.job.verify && write {
                    core.gens.borrow_mut()[unit as usize] = UNKNOWN;
                }
                core.record_error(offset, describe(write, &e));
            }
        }
        if core.job.verify {
            core.busy.borrow_mut()[unit as usize] = false;
        }
        if core.deadline.is_some_and(|d| now >= d) {
            core.stop.set(true);
        }
    }
}

fn describe(write: bool, e: &QueueError) -> String {
    format!("{}: {e}", if write { "write" } else { "read" })
}

/// The timed phase on one core.
async fn core_main(
    job: Job,
    region: Region,
    target: Target,
    run_id: u64,
    core_index: u64,
    start_at: Instant,
) -> Result<CoreResult, RunError> {
    let queue = target.queue(job.qd).await.map_err(RunError::Queue)?;
    let units = region.units as usize;
    let (gens, busy) = if job.verify {
        (vec![0; units], vec![false; units])
    } else {
        (Vec::new(), Vec::new())
    };
    let deadline = job.time.map(|t| start_at + t);
    let left = job.ios_per_core(region);
    let mut core = Core::new(job, region, queue, run_id, gens);
    core.left.set(left);
    core.deadline = deadline;
    core.rng
        .set(run_id ^ (core_index + 1).wrapping_mul(0xd1b5_4a32_d192_ed03));
    core.busy = RefCell::new(busy);
    let core = Rc::new(core);
    basalt_engine::sleep_until(start_at).await;
    let t0 = Instant::now();
    let mut workers = Vec::with_capacity(core.job.qd);
    for id in 0..core.job.qd as u64 {
        workers.push(basalt_engine::spawn(worker(core.clone(), id)));
    }
    for w in workers {
        // A worker is only cancelled if the reactor shuts down under us.
        let _ = w.await;
    }
    let elapsed = t0.elapsed();
    core.queue.close().await;
    let core = Rc::try_unwrap(core).unwrap_or_else(|_| unreachable!("all workers have finished"));
    Ok(CoreResult {
        read: core.read.into_inner(),
        write: core.write.into_inner(),
        errors: core.errors.get(),
        error_samples: core.error_samples.into_inner(),
        mismatches: core.mismatches.get(),
        mismatch_samples: core.mismatch_samples.into_inner(),
        verified: core.verified.get(),
        elapsed,
        gens: core.gens.into_inner(),
    })
}

/// The read-back phase on one core: every unit written with a known outcome is read and
/// checked, `qd` at a time.
async fn core_verify(
    job: Job,
    region: Region,
    target: Target,
    run_id: u64,
    gens: Vec<u32>,
) -> Result<(u64, u64, Vec<ErrorSample>), RunError> {
    let queue = target.queue(job.qd).await.map_err(RunError::Queue)?;
    let todo: Vec<u64> = gens
        .iter()
        .enumerate()
        .filter(|&(_, &g)| g != 0 && g != UNKNOWN)
        .map(|(u, _)| u as u64)
        .collect();
    let job = Job {
        continue_on_error: true,
        ..job
    };
    let core = Rc::new(Core::new(job, region, queue, run_id, gens));
    let todo = Rc::new(todo);
    let next = Rc::new(Cell::new(0usize));
    let mut workers = Vec::new();
    for _ in 0..core.job.qd {
        let (core, todo, next) = (core.clone(), todo.clone(), next.clone());
        workers.push(basalt_engine::spawn(async move {
            let mut bufs = io_buffers(core.job.bs).await;
            loop {
                let i = next.get();
                let Some(&unit) = todo.get(i) else { break };
                next.set(i + 1);
                let offset = core.region.start + unit * core.job.bs;
                let (back, res) = core.queue.read(offset, bufs).await;
                bufs = back;
                match res {
                    Ok(()) => {
                        let g = core.gens.borrow()[unit as usize];
                        core.check_read(unit, &bufs, g);
                    }
                    Err(e) => core.record_error(offset, describe(false, &e)),
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    core.queue.close().await;
    let mut samples = core.mismatch_samples.borrow().clone();
    samples.extend(core.error_samples.borrow().iter().cloned());
    Ok((
        core.verified.get(),
        core.mismatches.get() + core.errors.get(),
        samples,
    ))
}

fn engine_for(job: &Job) -> Result<Engine, RunError> {
    let defaults = BufPoolConfig::default();
    let per_io_large = job.bs.div_ceil(defaults.large_size as u64) as usize;
    let cfg = EngineConfig {
        cpus: job.cpus.clone(),
        pin: job.pin,
        reactor: ReactorConfig {
            busy_poll: job.busy_poll,
            completion_batch: job.completion_batch.max(1),
            ring_entries: (job.qd * 2).next_power_of_two().clamp(256, 4096) as u32,
            buffers: BufPoolConfig {
                small_count: defaults.small_count.max(job.qd + 16),
                large_count: defaults.large_count.max(job.qd * per_io_large + 16),
                ..defaults
            },
            ..ReactorConfig::default()
        },
    };
    Ok(Engine::start(&cfg)?)
}

fn run_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    (t ^ u64::from(std::process::id()).rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Runs `job` against `target` and reports.
///
/// # Errors
/// A job that does not fit the target, or an engine or target that fails to start. I/O errors
/// and verify mismatches are results, reported in the [`Report`].
pub fn run(job: &Job, target: &Target) -> Result<Report, RunError> {
    let remote = target.capacity() == 0;
    // A remote target's size is known once connected; check the rest of the job first.
    let early = job
        .plan(
            if remote { 1 << 62 } else { target.capacity() },
            target.block_size(),
        )
        .map_err(RunError::Job)?;
    let engine = engine_for(job)?;
    let (target, attachment) = target.attach(&engine).map_err(RunError::Connect)?;
    let target = &target;
    let checked = if remote {
        job.plan(target.capacity(), target.block_size())
    } else {
        Ok(early)
    }
    .and_then(|r| match target.max_io() {
        Some(max) if job.bs > max => Err(format!(
            "--bs {} exceeds the largest transfer the target takes ({max} bytes)",
            job.bs
        )),
        _ if job.verify && target.drops_read_data() => {
            Err("nocopy drops the data read; it cannot be combined with --verify".into())
        }
        _ => Ok(r),
    });
    let regions = match checked {
        Ok(r) => r,
        Err(e) => {
            attachment.close();
            engine.shutdown();
            return Err(RunError::Job(e));
        }
    };
    let run_id = run_id();
    // Remote targets: every core connects its queue before the start.
    let start_at = Instant::now() + Duration::from_millis(if remote { 500 } else { 50 });
    let mut pending = Vec::new();
    for (i, (r, &region)) in engine.reactors().iter().zip(&regions).enumerate() {
        let (job, target) = (job.clone(), target.clone());
        pending.push(r.spawn(move || core_main(job, region, target, run_id, i as u64, start_at))?);
    }
    let lvol_before = target.lvol().map(crate::lvol::LvolRunStats::now);
    let stop = Arc::new(AtomicBool::new(false));
    let snapshots = match target.lvol() {
        Some(t) if t.snapshot_every.is_some() => {
            let (t, stop) = (t.clone(), stop.clone());
            let every = t.snapshot_every.unwrap_or_default();
            Some(engine.reactors()[0].spawn(move || async move {
                basalt_engine::sleep_until(start_at).await;
                crate::lvol::snapshot_loop(t, every, stop).await
            })?)
        }
        _ => None,
    };
    std::thread::sleep(start_at.saturating_duration_since(Instant::now()));
    let cpu0 = CpuTime::process();
    let mut results = Vec::new();
    for p in pending {
        let r = p
            .wait()
            .map_err(|_| RunError::Job("a core stopped before finishing its job".into()))??;
        results.push(r);
    }
    let cpu = CpuTime::process().since(cpu0);
    stop.store(true, Ordering::Relaxed);
    let snapshots = match snapshots {
        Some(p) => Some(crate::lvol::SnapshotStats::new(
            p.wait()
                .map_err(|_| RunError::Job("the snapshot task stopped".into()))?
                .map_err(RunError::Job)?,
        )),
        None => None,
    };

    let verify = if job.verify {
        let mut pending = Vec::new();
        for ((r, &region), res) in engine.reactors().iter().zip(&regions).zip(&mut results) {
            let (job, target, gens) = (job.clone(), target.clone(), std::mem::take(&mut res.gens));
            pending.push(r.spawn(move || core_verify(job, region, target, run_id, gens))?);
        }
        let mut v = VerifyReport::default();
        for (p, res) in pending.into_iter().zip(&results) {
            let (checked, bad, samples) = p
                .wait()
                .map_err(|_| RunError::Job("a core stopped during read-back".into()))??;
            v.read_back_units += checked;
            v.read_back_failures += bad;
            v.inline_checks += res.verified;
            v.inline_mismatches += res.mismatches;
            v.samples.extend(res.mismatch_samples.iter().cloned());
            v.samples.extend(samples);
        }
        v.samples.truncate(SAMPLES);
        Some(v)
    } else {
        None
    };
    attachment.close();
    engine.shutdown();
    let mut report = summarise(job, target, &results, cpu, verify);
    report.snapshots = snapshots;
    report.lvol = target
        .lvol()
        .zip(lvol_before)
        .map(|(t, before)| crate::lvol::LvolRunStats::now(t).since(&before));
    Ok(report)
}

fn summarise(
    job: &Job,
    target: &Target,
    results: &[CoreResult],
    cpu: CpuTime,
    verify: Option<VerifyReport>,
) -> Report {
    let elapsed = results.iter().map(|r| r.elapsed).max().unwrap_or_default();
    let merge = |pick: &dyn Fn(&CoreResult) -> &Dir| {
        let mut h = histogram();
        let (mut ios, mut bytes) = (0, 0);
        for r in results {
            let d = pick(r);
            h.add(&d.hist).expect("same bounds");
            ios += d.ios;
            bytes += d.bytes;
        }
        (ios, bytes, h)
    };
    let (rio, rbytes, rh) = merge(&|r| &r.read);
    let (wio, wbytes, wh) = merge(&|r| &r.write);
    let mut all = histogram();
    all.add(&rh).expect("same bounds");
    all.add(&wh).expect("same bounds");
    let secs = elapsed.as_secs_f64().max(1e-9);
    let ios = rio + wio;
    let mut errors = Vec::new();
    for r in results {
        errors.extend(r.error_samples.iter().cloned());
    }
    errors.truncate(SAMPLES);
    Report {
        target: target.description().to_owned(),
        job: job.clone(),
        elapsed_s: secs,
        read: OpStats::new(rio, rbytes, &rh, secs),
        write: OpStats::new(wio, wbytes, &wh, secs),
        total: OpStats::new(ios, rbytes + wbytes, &all, secs),
        cpu_user_s: cpu.user.as_secs_f64(),
        cpu_system_s: cpu.system.as_secs_f64(),
        cpu_us_per_io: if ios == 0 {
            0.0
        } else {
            cpu.total().as_secs_f64() * 1e6 / ios as f64
        },
        io_errors: results.iter().map(|r| r.errors).sum(),
        error_samples: errors,
        verify,
        snapshots: None,
        lvol: None,
    }
}
