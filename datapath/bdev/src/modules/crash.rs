//! `crash`: stacks on another bdev and simulates a disk with a volatile write cache, so that
//! tests of crash safety can cut the power at any point and check what survives.
//!
//! # Model
//! A completed write is held in this device's cache, one record per write (its blocks, its
//! bytes and a sequence number), and is not durable yet. Reads see the newest data: the base
//! overlaid with the cached records in sequence order. Unmap and write-zeroes are cached the
//! same way and read back as zeros (offered only where the base offers them). A flush makes
//! every write completed before it durable; a FUA write is durable when it completes.
//!
//! [`CrashBdev::crash`] cuts the power: each write that is not durable yet lands or is lost as
//! the [`CrashMode`] says, the cache is emptied, and the device goes on working like a disk
//! after power returns (the caller normally reopens whatever sits on it).
//!
//! # Write-back
//! Durable records are written to the base, in sequence order and one write-back at a time over
//! all cores, before the flush or FUA write that made them durable completes (the base is
//! flushed after them). Records that a crash lets land are durable at once but reach the base
//! with the next flush or FUA write; until then only reads through this device see them.
//!
//! A FUA write also makes durable every older cached write that it overlaps (and, in turn,
//! older ones that those overlap). A real disk may persist cached writes at any time, and this
//! way no older write can land over the FUA data in a later crash.
//!
//! One mutex guards the cache, shared by every core: this is a test device, not a fast one.

use std::future::{Future, poll_fn};
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use basalt_engine::IoBuf;

use crate::io::{ChannelImpl, IoChannel, IoKind, IoSlot, IoVecs};
use crate::{Bdev, BdevError, Geometry, IoError, Lba};

/// Writes tear at sector boundaries, also inside a 4 KiB logical block.
const SECTOR: u64 = 512;

/// What a power cut does with the writes still in the volatile cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// None lands: the whole cache was lost.
    DropAll,
    /// All land, in order: the disk managed to destage its whole cache.
    KeepAll,
    /// Each lands whole or not at all, a seeded coin toss per write, applied in order: a cache
    /// that destages in any order may have persisted any subset.
    Random,
    /// As [`CrashMode::Random`] for all but the newest cached write, which lands torn: a
    /// non-empty proper prefix of it, cut at a 512-byte sector boundary (power lost
    /// mid-transfer). A newest write of a single sector cannot tear and is lost instead.
    TornLast,
}

/// What a crash did with the cached writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CrashReport {
    /// Cached writes lost whole.
    pub dropped: usize,
    /// Cached writes that landed whole.
    pub landed: usize,
    /// Cached writes that landed in part (0 or 1).
    pub torn: usize,
    /// Bytes of the torn write that landed, from its start (a multiple of 512).
    pub torn_bytes: u64,
}

#[derive(Debug, Clone)]
enum Payload {
    Data(Arc<[u8]>),
    /// An unmap or a write-zeroes.
    Zeros(IoKind),
}

#[derive(Debug, Clone)]
struct Record {
    seq: u64,
    /// First byte on the device (block aligned).
    start: u64,
    /// Bytes: a multiple of the block size, except for a torn write (a multiple of 512).
    len: u64,
    payload: Payload,
    /// Survives a crash (flushed, FUA, or landed in one); not yet written back to the base.
    durable: bool,
}

impl Record {
    fn end(&self) -> u64 {
        self.start + self.len
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end()
    }
}

#[derive(Debug, Default)]
struct State {
    /// The cache, in sequence order.
    records: Vec<Record>,
    next_seq: u64,
    /// A write-back to the base runs (on some core).
    writing_back: bool,
    /// Write-backs waiting for their turn.
    waiters: Vec<Waker>,
}

#[derive(Debug)]
struct Shared {
    block_size: u64,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Caches a record; a durable one makes older writes it overlaps durable too.
    fn push(&self, start: u64, len: u64, payload: Payload, durable: bool) {
        let mut st = self.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        st.records.push(Record {
            seq,
            start,
            len,
            payload,
            durable,
        });
        if durable {
            // Walk newest to oldest, collecting the ranges that will be written back: an older
            // cached write under any of them must not land over them later.
            let mut covered: Vec<(u64, u64)> = Vec::new();
            for r in st.records.iter_mut().rev() {
                if !r.durable && covered.iter().any(|&(s, e)| r.overlaps(s, e)) {
                    r.durable = true;
                }
                if r.durable {
                    covered.push((r.start, r.end()));
                }
            }
        }
    }
}

/// Splitmix64: a tiny seeded generator, so that crashes replay exactly.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn coin(&mut self) -> bool {
        self.next() >> 63 == 1
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct CrashBdev {
    name: String,
    base: Arc<dyn Bdev>,
    shared: Arc<Shared>,
}

impl CrashBdev {
    /// Stacks a crash simulator named `name` on `base`, with an empty cache.
    pub fn new(name: &str, base: Arc<dyn Bdev>) -> CrashBdev {
        let block_size = u64::from(base.geometry().block_size);
        CrashBdev {
            name: name.to_owned(),
            base,
            shared: Arc::new(Shared {
                block_size,
                state: Mutex::default(),
            }),
        }
    }

    /// Writes, unmaps and write-zeroes completed but not durable yet (a crash may lose them).
    pub fn cached_writes(&self) -> usize {
        let st = self.shared.lock();
        st.records.iter().filter(|r| !r.durable).count()
    }

    /// Cuts the power: every cached write that is not durable yet lands or is lost as `mode`
    /// says (`seed` drives the random modes; the same cache, mode and seed give the same
    /// outcome), and the cache is emptied. I/O may go on afterwards. An I/O in flight across
    /// the crash sees the device from before it or after it.
    pub fn crash(&self, mode: CrashMode, seed: u64) -> CrashReport {
        let mut rng = SplitMix64(seed);
        let mut report = CrashReport::default();
        let mut st = self.shared.lock();
        let newest = st.records.iter().rposition(|r| !r.durable);
        let records = std::mem::take(&mut st.records);
        for (i, mut r) in records.into_iter().enumerate() {
            if !r.durable {
                if mode == CrashMode::TornLast && Some(i) == newest {
                    let sectors = r.len / SECTOR;
                    if sectors < 2 {
                        report.dropped += 1;
                        continue;
                    }
                    r.len = SECTOR * (1 + rng.next() % (sectors - 1));
                    report.torn = 1;
                    report.torn_bytes = r.len;
                } else {
                    let lands = match mode {
                        CrashMode::DropAll => false,
                        CrashMode::KeepAll => true,
                        CrashMode::Random | CrashMode::TornLast => rng.coin(),
                    };
                    if !lands {
                        report.dropped += 1;
                        continue;
                    }
                    report.landed += 1;
                }
                r.durable = true;
            }
            st.records.push(r);
        }
        report
    }
}

impl Bdev for CrashBdev {
    fn name(&self) -> &str {
        &self.name
    }

    /// The base's geometry, with a volatile cache.
    fn geometry(&self) -> Geometry {
        Geometry {
            volatile_cache: true,
            ..self.base.geometry()
        }
    }

    fn open_channel(&self) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        Ok(Rc::new(CrashChannel {
            shared: self.shared.clone(),
            base: Rc::new(self.base.open()?),
        }))
    }
}

struct CrashChannel {
    shared: Arc<Shared>,
    /// Closes the base's channel once the last task using it is done.
    base: Rc<IoChannel>,
}

/// Runs `make(slot)` as a task on this core; off a reactor the I/O is aborted.
fn spawn<F: Future<Output = ()> + 'static>(slot: IoSlot, make: impl FnOnce(IoSlot) -> F) {
    match basalt_engine::try_current() {
        Some(reactor) => drop(reactor.spawn(make(slot))),
        None => slot.complete(Err(IoError::Aborted)),
    }
}

impl ChannelImpl for CrashChannel {
    fn submit(&self, slot: IoSlot) {
        let (kind, lba, blocks, fua) = slot.with(|r| (r.kind, r.lba, r.blocks, r.fua));
        let bs = self.shared.block_size;
        let (start, len) = (lba.0 * bs, blocks * bs);
        let shared = self.shared.clone();
        let base = self.base.clone();
        match kind {
            IoKind::Read => {
                // Taken before the base read starts: a write-back racing with the read then
                // cannot leave it with old base data and no record over it.
                let over: Vec<Record> = (shared.lock().records.iter())
                    .filter(|r| r.overlaps(start, start + len))
                    .cloned()
                    .collect();
                spawn(slot, |slot| async move {
                    let bufs = slot.with(|r| std::mem::take(&mut r.bufs));
                    let (mut bufs, res) = base.read(lba, bufs).await;
                    if res.is_ok() {
                        overlay(&mut bufs, start, &over);
                    }
                    slot.with(|r| r.bufs = bufs);
                    slot.complete(res);
                });
            }
            IoKind::Write => {
                let mut data = Vec::with_capacity(len as usize);
                slot.with(|r| r.bufs.iter().for_each(|b| data.extend_from_slice(b)));
                shared.push(start, len, Payload::Data(data.into()), fua);
                if fua {
                    spawn(slot, |slot| async move {
                        slot.complete(write_back(shared, base).await);
                    });
                } else {
                    slot.complete(Ok(()));
                }
            }
            IoKind::Unmap | IoKind::WriteZeroes => {
                shared.push(start, len, Payload::Zeros(kind), false);
                slot.complete(Ok(()));
            }
            IoKind::Flush => {
                for r in &mut shared.lock().records {
                    r.durable = true;
                }
                spawn(slot, |slot| async move {
                    slot.complete(write_back(shared, base).await);
                });
            }
        }
    }
}

/// Copies the records (in sequence order) over the bytes read from `start` on.
fn overlay(bufs: &mut IoVecs, start: u64, records: &[Record]) {
    for r in records {
        let mut pos = start;
        for b in bufs.iter_mut() {
            let (b_start, b_end) = (pos, pos + b.len() as u64);
            pos = b_end;
            let (s, e) = (r.start.max(b_start), r.end().min(b_end));
            if s >= e {
                continue;
            }
            let dst = &mut b[(s - b_start) as usize..(e - b_start) as usize];
            match &r.payload {
                Payload::Data(d) => {
                    dst.copy_from_slice(&d[(s - r.start) as usize..(e - r.start) as usize]);
                }
                Payload::Zeros(_) => dst.fill(0),
            }
        }
    }
}

/// The one write-back running at a time over all cores; dropping it lets the next one run.
struct Turn<'a>(&'a Shared);

impl<'a> Turn<'a> {
    async fn take(shared: &'a Shared) -> Turn<'a> {
        poll_fn(|cx| {
            let mut st = shared.lock();
            if st.writing_back {
                st.waiters.push(cx.waker().clone());
                Poll::Pending
            } else {
                st.writing_back = true;
                Poll::Ready(())
            }
        })
        .await;
        Turn(shared)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let waiters = {
            let mut st = self.0.lock();
            st.writing_back = false;
            std::mem::take(&mut st.waiters)
        };
        waiters.into_iter().for_each(Waker::wake);
    }
}

/// Writes every durable record to the base in sequence order, flushes the base, and drops the
/// records from the cache. Records that were durable when this was called are written back
/// when it returns `Ok` (by this call or by the one before it).
async fn write_back(shared: Arc<Shared>, base: Rc<IoChannel>) -> Result<(), IoError> {
    let _turn = Turn::take(&shared).await;
    let claimed: Vec<Record> = (shared.lock().records.iter())
        .filter(|r| r.durable)
        .cloned()
        .collect();
    for r in &claimed {
        apply(&base, shared.block_size, r).await?;
    }
    base.flush().await.1?;
    // Claimed records stay durable (a crash keeps them), so they are all still there.
    let mut st = shared.lock();
    st.records
        .retain(|r| claimed.binary_search_by_key(&r.seq, |c| c.seq).is_err());
    Ok(())
}

async fn alloc(len: u64) -> Result<IoBuf, IoError> {
    match basalt_engine::current().pool().alloc(len as usize) {
        Ok(a) => Ok(a.await),
        // Lengths asked for are at most a block or the small class: this cannot happen.
        Err(_) => Err(IoError::Aborted),
    }
}

fn one(buf: IoBuf) -> IoVecs {
    std::iter::once(buf).collect()
}

/// Writes one record to the base: whole blocks as they are, a torn tail block read, patched
/// and written back.
async fn apply(base: &IoChannel, bs: u64, r: &Record) -> Result<(), IoError> {
    let lba = r.start / bs;
    let full = r.len - r.len % bs;
    match &r.payload {
        Payload::Data(d) => {
            let chunk = basalt_engine::current().pool().stats()[0].size as u64;
            let mut off = 0;
            while off < full {
                let n = chunk.min(full - off);
                let mut buf = alloc(n).await?;
                buf.copy_from_slice(&d[off as usize..(off + n) as usize]);
                base.write(Lba(lba + off / bs), one(buf), false).await.1?;
                off += n;
            }
        }
        Payload::Zeros(IoKind::Unmap) => base.unmap(Lba(lba), full / bs).await.1?,
        Payload::Zeros(_) => base.write_zeroes(Lba(lba), full / bs).await.1?,
    }
    let tail = (r.len - full) as usize;
    if tail > 0 {
        let at = Lba(lba + full / bs);
        let (mut bufs, res) = base.read(at, one(alloc(bs).await?)).await;
        res?;
        match &r.payload {
            Payload::Data(d) => bufs[0][..tail].copy_from_slice(&d[full as usize..][..tail]),
            Payload::Zeros(_) => bufs[0][..tail].fill(0),
        }
        base.write(at, bufs, false).await.1?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use basalt_engine::{Engine, EngineConfig};
    use proptest::prelude::*;

    use super::*;
    use crate::IoFuture;
    use crate::modules::malloc::MallocBdev;

    /// Runs `f` on a fresh one-reactor engine.
    fn run<T: Send + 'static, Fut: Future<Output = T> + 'static>(
        f: impl FnOnce() -> Fut + Send + 'static,
    ) -> T {
        let mut cfg = EngineConfig::with_cores(1);
        cfg.pin = false;
        (
            cfg.reactor.buffers.small_count,
            cfg.reactor.buffers.large_count,
        ) = (256, 16);
        let engine = Engine::start(&cfg).expect("engine starts");
        engine.reactor(0).block_on(f).expect("the test ran")
    }

    /// A crash device over 64 blocks of RAM: the device, its channel, a channel on the RAM.
    fn rig(bs: usize) -> (Arc<CrashBdev>, IoChannel, IoChannel) {
        let ram: Arc<dyn Bdev> = Arc::new(MallocBdev::new("ram", bs as u32, 64).expect("ram"));
        let crash = Arc::new(CrashBdev::new("crash", ram.clone()));
        let ch = crash.open().expect("channel");
        (crash, ch, ram.open().expect("channel"))
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| seed.wrapping_add((i / 7) as u8)).collect()
    }

    async fn bufs(data: &[u8]) -> IoVecs {
        let mut v = IoVecs::new();
        for c in data.chunks(4096) {
            let mut b = alloc(c.len() as u64).await.expect("buffer");
            b.copy_from_slice(c);
            v.push(b);
        }
        v
    }

    async fn ok(io: IoFuture) {
        io.await.1.expect("I/O succeeds");
    }

    async fn write(ch: &IoChannel, lba: u64, data: &[u8], fua: bool) {
        ok(ch.write(Lba(lba), bufs(data).await, fua)).await;
    }

    async fn read(ch: &IoChannel, lba: u64, blocks: u64) -> Vec<u8> {
        let dirty = vec![0xee; blocks as usize * ch.geometry().block_size as usize];
        let (b, res) = ch.read(Lba(lba), bufs(&dirty).await).await;
        res.expect("read");
        b.iter().flat_map(|b| b.to_vec()).collect()
    }

    #[test]
    fn unflushed_write_is_lost_and_flushed_one_kept() {
        run(|| async {
            let (crash, ch, ram) = rig(512);
            assert!(ch.geometry().volatile_cache && ch.geometry().supports_unmap);
            let (a, b) = (pattern(1024, 1), pattern(1024, 2));
            write(&ch, 4, &a, false).await;
            ok(ch.flush()).await;
            write(&ch, 4, &b, false).await;
            assert_eq!(read(&ch, 4, 2).await, b, "reads see the cache");
            assert_eq!(read(&ram, 4, 2).await, a, "the base does not");
            assert_eq!(crash.cached_writes(), 1);
            let r = crash.crash(CrashMode::DropAll, 0);
            assert_eq!((r.dropped, r.landed, crash.cached_writes()), (1, 0, 0));
            assert_eq!(read(&ch, 4, 2).await, a);
            write(&ch, 4, &b, false).await;
            ok(ch.flush()).await;
            assert_eq!(crash.crash(CrashMode::DropAll, 0), CrashReport::default());
            assert_eq!(read(&ch, 4, 2).await, b);
            assert_eq!(read(&ram, 4, 2).await, b, "the flush wrote it back");
        });
    }

    #[test]
    fn fua_write_wins_over_older_cached_writes_in_every_mode() {
        use CrashMode::*;
        run(|| async {
            for mode in [DropAll, KeepAll, Random, TornLast] {
                for seed in 0..4 {
                    let (crash, ch, ram) = rig(4096);
                    let (x, z, y) = (pattern(4 * 4096, 1), pattern(3 * 4096, 2), pattern(4096, 3));
                    write(&ch, 0, &x, false).await;
                    write(&ch, 3, &z, false).await;
                    write(&ch, 5, &y, true).await;
                    write(&ch, 8, &x, false).await;
                    assert_eq!(read(&ram, 5, 1).await, y, "on the base at completion");
                    assert_eq!(crash.cached_writes(), 1, "x and z became durable with y");
                    crash.crash(mode, seed);
                    let got = read(&ch, 0, 6).await;
                    assert_eq!(got[5 * 4096..], y, "{mode:?} {seed}");
                    assert_eq!(got[3 * 4096..5 * 4096], z[..2 * 4096]);
                    assert_eq!(got[..3 * 4096], x[..3 * 4096]);
                }
            }
        });
    }

    #[test]
    fn keep_all_lands_everything_in_order() {
        run(|| async {
            let (crash, ch, ram) = rig(512);
            let mut model = vec![0u8; 8 * 512];
            for (lba, blocks, seed) in [(0, 4, 1), (2, 3, 2), (1, 1, 3)] {
                let d = pattern(blocks * 512, seed);
                write(&ch, lba as u64, &d, false).await;
                model[lba * 512..][..d.len()].copy_from_slice(&d);
            }
            ok(ch.write_zeroes(Lba(3), 1)).await;
            model[3 * 512..4 * 512].fill(0);
            let r = crash.crash(CrashMode::KeepAll, 9);
            assert_eq!((r.landed, r.dropped, r.torn), (4, 0, 0));
            assert_eq!(read(&ch, 0, 8).await, model);
            assert_eq!(
                read(&ram, 0, 8).await,
                [0; 8 * 512],
                "written at next flush"
            );
            ok(ch.flush()).await;
            assert_eq!(read(&ram, 0, 8).await, model);
        });
    }

    #[test]
    fn random_crash_is_seeded_and_lands_whole_writes() {
        let image = |seed| {
            run(move || async move {
                let (crash, ch, _) = rig(512);
                write(&ch, 0, &pattern(64 * 512, 1), false).await;
                ok(ch.flush()).await;
                for i in 0..32 {
                    write(&ch, 2 * i, &pattern(1024, 2), false).await;
                }
                (crash.crash(CrashMode::Random, seed), read(&ch, 0, 64).await)
            })
        };
        let (r, img) = image(7);
        assert_eq!(image(7), (r, img.clone()), "same seed, same outcome");
        let (old, new) = (pattern(64 * 512, 1), pattern(1024, 2));
        let mut landed = 0;
        for (got, old) in img.chunks(1024).zip(old.chunks(1024)) {
            assert!(got == new || got == old, "lands whole or not at all");
            landed += usize::from(got == new);
        }
        assert_eq!((r.landed, r.dropped, r.torn), (landed, 32 - landed, 0));
        assert!(landed > 0 && landed < 32, "{landed} of 32 landed");
        assert_ne!(image(8).1, img, "another seed, another subset");
    }

    #[test]
    fn torn_last_lands_a_sector_prefix_of_the_newest_write() {
        for bs in [512, 4096] {
            run(move || async move {
                for seed in 0..8 {
                    let (crash, ch, ram) = rig(bs);
                    let (old, new) = (pattern(3 * bs, 1), pattern(3 * bs, 2));
                    write(&ch, 0, &old, false).await;
                    ok(ch.flush()).await;
                    write(&ch, 10, &pattern(bs, 3), false).await;
                    write(&ch, 0, &new, false).await;
                    let r = crash.crash(CrashMode::TornLast, seed);
                    assert_eq!((r.torn, r.landed + r.dropped), (1, 1));
                    let cut = r.torn_bytes as usize;
                    assert!(cut.is_multiple_of(512) && (1..3 * bs).contains(&cut));
                    let want = [&new[..cut], &old[cut..]].concat();
                    assert_eq!(read(&ch, 0, 3).await, want);
                    ok(ch.flush()).await;
                    assert_eq!(read(&ram, 0, 3).await, want, "torn block patched");
                }
            });
        }
    }

    #[test]
    fn unmap_and_write_zeroes_are_cached_like_writes() {
        run(|| async {
            let (crash, ch, ram) = rig(4096);
            let d = pattern(4 * 4096, 5);
            write(&ch, 0, &d, false).await;
            ok(ch.flush()).await;
            ok(ch.unmap(Lba(0), 2)).await;
            ok(ch.write_zeroes(Lba(2), 1)).await;
            assert!(read(&ch, 0, 3).await.iter().all(|&b| b == 0));
            assert_eq!(crash.crash(CrashMode::DropAll, 0).dropped, 2);
            assert_eq!(read(&ch, 0, 4).await, d);
            ok(ch.unmap(Lba(1), 2)).await;
            crash.crash(CrashMode::KeepAll, 0);
            ok(ch.flush()).await;
            let want = [&d[..4096], &[0; 2 * 4096], &d[3 * 4096..]].concat();
            assert_eq!(read(&ram, 0, 4).await, want);
        });
    }

    #[test]
    fn concurrent_writes_and_flushes_take_turns_writing_back() {
        run(|| async {
            let (crash, ch, ram) = rig(512);
            let ch = Rc::new(ch);
            let tasks: Vec<_> = (0..16u8)
                .map(|i| {
                    let ch = ch.clone();
                    basalt_engine::spawn(async move {
                        write(&ch, u64::from(i) * 4, &pattern(2048, i), i % 3 == 0).await;
                        ok(ch.flush()).await;
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("task finished");
            }
            assert_eq!(crash.crash(CrashMode::DropAll, 0), CrashReport::default());
            for i in 0..16u8 {
                assert_eq!(read(&ram, u64::from(i) * 4, 4).await, pattern(2048, i));
            }
        });
    }

    /// Random writes (some FUA), flushes and random or torn crashes, with every write filling
    /// its blocks with its own byte: after a crash each block holds one whole write that is not
    /// older than the block's last durable one.
    #[test]
    fn random_crashes_never_undo_durable_writes() {
        run(|| async {
            let mut rng = SplitMix64(12345);
            for _ in 0..100 {
                let (crash, ch, _) = rig(512);
                // Per block: the values it had since the last crash, and the first durable one.
                let (mut hist, mut floor) = (vec![vec![0u8]; 64], vec![0; 64]);
                for k in 1..=60u8 {
                    match rng.next() % 8 {
                        0..5 => {
                            let (lba, n, fua) = (rng.next() % 60, 1 + rng.next() % 4, rng.coin());
                            write(&ch, lba, &vec![k; n as usize * 512], fua).await;
                            for b in lba as usize..(lba + n) as usize {
                                hist[b].push(k);
                                floor[b] = if fua { hist[b].len() - 1 } else { floor[b] };
                            }
                        }
                        5 => {
                            ok(ch.flush()).await;
                            (0..64).for_each(|b| floor[b] = hist[b].len() - 1);
                        }
                        m => {
                            let mode = [CrashMode::Random, CrashMode::TornLast][m as usize - 6];
                            crash.crash(mode, rng.next());
                            let img = read(&ch, 0, 64).await;
                            for (b, blk) in img.chunks(512).enumerate() {
                                assert!(blk.iter().all(|&x| x == blk[0]), "sectors are atomic");
                                assert!(hist[b][floor[b]..].contains(&blk[0]), "block {b}");
                                (hist[b], floor[b]) = (vec![blk[0]], 0);
                            }
                        }
                    }
                }
            }
        });
    }

    #[derive(Debug, Clone)]
    enum Step {
        Write(u64, u64, u8),
        Unmap(u64, u64),
        Read(u64, u64),
        Flush,
        Crash { keep: bool },
    }

    fn step() -> impl Strategy<Value = Step> {
        let range = (0..32u64).prop_flat_map(|lba| (Just(lba), 1..=(32 - lba).min(8)));
        prop_oneof![
            4 => (range.clone(), any::<u8>()).prop_map(|((l, n), s)| Step::Write(l, n, s)),
            1 => range.clone().prop_map(|(l, n)| Step::Unmap(l, n)),
            2 => range.prop_map(|(l, n)| Step::Read(l, n)),
            1 => Just(Step::Flush),
            1 => any::<bool>().prop_map(|keep| Step::Crash { keep }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Against a model of the durable and the current contents.
        #[test]
        fn matches_a_durable_and_current_model(
            steps in proptest::collection::vec(step(), 1..40),
            bs in prop_oneof![Just(512usize), Just(4096)],
        ) {
            run(move || async move {
                let (crash, ch, ram) = rig(bs);
                let (mut durable, mut current) = (vec![0u8; 32 * bs], vec![0u8; 32 * bs]);
                for s in steps {
                    match s {
                        Step::Write(l, n, seed) => {
                            let d = pattern(n as usize * bs, seed);
                            write(&ch, l, &d, false).await;
                            current[l as usize * bs..][..d.len()].copy_from_slice(&d);
                        }
                        Step::Unmap(l, n) => {
                            ok(ch.unmap(Lba(l), n)).await;
                            current[l as usize * bs..][..n as usize * bs].fill(0);
                        }
                        Step::Read(l, n) => {
                            let want = &current[l as usize * bs..][..n as usize * bs];
                            assert_eq!(read(&ch, l, n).await, want, "read {l}+{n}");
                        }
                        Step::Flush => {
                            ok(ch.flush()).await;
                            durable.clone_from(&current);
                        }
                        Step::Crash { keep: true } => {
                            crash.crash(CrashMode::KeepAll, 0);
                            durable.clone_from(&current);
                        }
                        Step::Crash { keep: false } => {
                            crash.crash(CrashMode::DropAll, 0);
                            current.clone_from(&durable);
                        }
                    }
                }
                assert_eq!(read(&ch, 0, 32).await, current);
                ok(ch.flush()).await;
                assert_eq!(read(&ram, 0, 32).await, current, "the flush wrote all back");
            });
        }
    }
}
