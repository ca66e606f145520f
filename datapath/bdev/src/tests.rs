//! Bdev tests on real reactors: the same conformance checks on a file, a loop device (a real
//! block device), RAM and null; error and latency injection; orphaned I/O; a property test of
//! random operation sequences against a byte-array model.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_engine::{BufPoolConfig, Engine, EngineConfig, IoBuf, current};
use proptest::prelude::*;

use crate::io::pending_on_this_core;
use crate::modules::delay::DelayBdev;
use crate::modules::error::{ErrorBdev, ErrorRule, InjectedError};
use crate::modules::malloc::MallocBdev;
use crate::modules::null::NullBdev;
use crate::modules::uring::{UringBdev, UringConfig};
use crate::*;

/// Each test gets its own two-reactor engine (with small pools), so per-core counters such as
/// [`pending_on_this_core`] see only that test's I/O.
fn engine() -> Engine {
    let mut cfg = EngineConfig::with_cores(2);
    cfg.pin = false;
    cfg.reactor.buffers = BufPoolConfig {
        small_size: 8192,
        small_count: 256,
        large_size: 128 * 1024,
        large_count: 16,
    };
    Engine::start(&cfg).expect("engine starts")
}

fn on_core<F, Fut, T>(e: &Engine, core: usize, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    e.reactor(core)
        .block_on(f)
        .expect("the test future ran to completion")
}

async fn buf(len: usize) -> IoBuf {
    current().pool().alloc(len).expect("fits the pool").await
}

async fn pattern(len: usize, seed: u8) -> IoBuf {
    let mut b = buf(len).await;
    for (i, x) in b.iter_mut().enumerate() {
        *x = seed.wrapping_add((i / 7) as u8);
    }
    b
}

fn one(b: IoBuf) -> IoVecs {
    let mut v = IoVecs::new();
    v.push(b);
    v
}

/// Reads `blocks` blocks into as many 64 KiB buffers as it takes (one vectored read).
async fn read_blocks(ch: &IoChannel, lba: u64, blocks: u64) -> Vec<u8> {
    let bs = ch.geometry().block_size as usize;
    let mut left = blocks as usize * bs;
    let mut v = IoVecs::new();
    while left > 0 {
        let n = left.min(64 * 1024);
        v.push(buf(n).await);
        left -= n;
    }
    let (bufs, res) = ch.read(Lba(lba), v).await;
    res.expect("read");
    bufs.iter().flat_map(|b| b.iter().copied()).collect()
}

/// The checks every data-holding bdev must pass.
async fn conformance(bdev: Arc<dyn Bdev>) {
    let ch = bdev.open().expect("channel");
    let g = ch.geometry().clone();
    let bs = g.block_size as usize;
    assert!(g.num_blocks >= 64);

    // Single-buffer write and read back.
    let w = pattern(8 * bs, 3).await;
    let expect = w.to_vec();
    let (_, res) = ch.write(Lba(16), one(w), false).await;
    res.expect("write");
    assert_eq!(read_blocks(&ch, 16, 8).await, expect);

    // Vectored write, read back with another split.
    let mut v = IoVecs::new();
    let mut expect = Vec::new();
    for s in 0..3u8 {
        let b = pattern(bs, 40 + s).await;
        expect.extend_from_slice(&b);
        v.push(b);
    }
    let (_, res) = ch.write(Lba(30), v, true).await;
    res.expect("vectored FUA write");
    let mut r = IoVecs::new();
    r.push(buf(bs).await);
    r.push(buf(2 * bs).await);
    let (r, res) = ch.read(Lba(30), r).await;
    res.expect("vectored read");
    let got: Vec<u8> = r.iter().flat_map(|b| b.iter().copied()).collect();
    assert_eq!(got, expect);

    let (_, res) = ch.flush().await;
    res.expect("flush");

    // Last block is usable; one past it is not.
    let last = g.num_blocks - 1;
    let (_, res) = ch.write(Lba(last), one(pattern(bs, 9).await), false).await;
    res.expect("write last block");
    let (_, res) = ch.read(Lba(g.num_blocks), one(buf(bs).await)).await;
    assert_eq!(
        res,
        Err(IoError::OutOfRange {
            lba: g.num_blocks,
            blocks: 1,
            capacity: g.num_blocks
        })
    );
    let (_, res) = ch.read(Lba(last), one(buf(2 * bs).await)).await;
    assert!(matches!(res, Err(IoError::OutOfRange { .. })));
    let (_, res) = ch.unmap(Lba(u64::MAX), 2).await;
    assert!(
        matches!(res, Err(IoError::OutOfRange { .. })),
        "overflowing range refused"
    );

    // Bad buffers.
    let (_, res) = ch.read(Lba(0), one(buf(bs + 100).await)).await;
    assert!(matches!(res, Err(IoError::Misaligned { .. })), "{res:?}");
    let req = IoRequest {
        kind: IoKind::Write,
        lba: Lba(0),
        blocks: 2,
        bufs: one(buf(bs).await),
        fua: false,
    };
    let (_, res) = ch.submit(req).await;
    assert_eq!(
        res,
        Err(IoError::LengthMismatch {
            bytes: bs as u64,
            expected: 2 * bs as u64
        })
    );

    // Unmap and write-zeroes read back as zeros; neighbours untouched.
    if g.supports_unmap {
        let (_, res) = ch.unmap(Lba(17), 2).await;
        res.expect("unmap");
        let data = read_blocks(&ch, 16, 4).await;
        assert!(
            data[bs..3 * bs].iter().all(|&b| b == 0),
            "unmapped blocks read zeros"
        );
        assert!(
            data[..bs].iter().any(|&b| b != 0),
            "block before the range kept"
        );
        assert!(
            data[3 * bs..].iter().any(|&b| b != 0),
            "block after the range kept"
        );
    }
    if g.supports_write_zeroes {
        let (_, res) = ch.write_zeroes(Lba(30), 3).await;
        res.expect("write zeroes");
        assert!(read_blocks(&ch, 30, 3).await.iter().all(|&b| b == 0));
    }

    // Zero-length transfers are no-ops.
    let (_, res) = ch.read(Lba(0), IoVecs::new()).await;
    res.expect("empty read");

    // Concurrency: 32 tasks, each on its own block.
    let ch = Rc::new(ch);
    let mut joins = Vec::new();
    for t in 0..32u64 {
        let ch = ch.clone();
        joins.push(basalt_engine::spawn(async move {
            let lba = 64.min(g.num_blocks - 33) + t;
            let w = pattern(bs, t as u8).await;
            let expect = w.to_vec();
            let (_, res) = ch.write(Lba(lba), one(w), false).await;
            res.expect("concurrent write");
            assert_eq!(read_blocks(&ch, lba, 1).await, expect);
        }));
    }
    for j in joins {
        j.await.expect("task completed");
    }
    assert_eq!(pending_on_this_core(), 0);
}

fn file_bdev(dir: &tempfile::TempDir, mib: u64, block_size: Option<u32>) -> Arc<dyn Bdev> {
    let path = dir.path().join("disk.img");
    let f = std::fs::File::create(&path).expect("create");
    f.set_len(mib << 20).expect("size");
    Arc::new(
        UringBdev::open(
            "file0",
            &UringConfig {
                path,
                block_size,
                direct: true,
            },
        )
        .expect("open"),
    )
}

#[test]
fn uring_file_512() {
    let e = engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let b = file_bdev(&dir, 16, None);
    assert_eq!(b.geometry().block_size, 512);
    on_core(&e, 0, move || conformance(b));
}

#[test]
fn uring_file_4k() {
    let e = engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let b = file_bdev(&dir, 16, Some(4096));
    assert_eq!(b.geometry().num_blocks, 4096);
    on_core(&e, 1, move || conformance(b));
}

#[test]
fn uring_file_unmap_frees_space() {
    let e = engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk.img");
    let b = file_bdev(&dir, 16, Some(4096));
    on_core(&e, 0, move || async move {
        let ch = b.open().expect("channel");
        for i in 0..64u64 {
            let (_, res) = ch.write(Lba(i), one(pattern(4096, 1).await), false).await;
            res.expect("write");
        }
        let (_, res) = ch.flush().await;
        res.expect("flush");
    });
    let allocated = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).expect("stat").blocks() * 512
    };
    let before = allocated(&path);
    assert!(before >= 256 * 1024);
    let b = Arc::new(
        UringBdev::open(
            "again",
            &UringConfig {
                path: path.clone(),
                block_size: Some(4096),
                direct: true,
            },
        )
        .expect("open"),
    );
    on_core(&e, 0, move || async move {
        let ch = b.open().expect("channel");
        let (_, res) = ch.unmap(Lba(0), 64).await;
        res.expect("unmap");
    });
    assert!(allocated(&path) < before, "punching holes returns space");
}

#[test]
fn uring_rejects_what_it_cannot_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tiny = dir.path().join("tiny");
    std::fs::write(&tiny, [0u8; 100]).expect("write");
    let cfg = |path: &std::path::Path, bs| UringConfig {
        path: path.to_owned(),
        block_size: bs,
        direct: true,
    };
    assert!(matches!(
        UringBdev::open("t", &cfg(&tiny, None)),
        Err(BdevError::TooSmall { .. })
    ));
    assert!(matches!(
        UringBdev::open("t", &cfg(&dir.path().join("missing"), None)),
        Err(BdevError::Open { .. })
    ));
    assert!(matches!(
        UringBdev::open("t", &cfg(dir.path(), None)),
        Err(BdevError::Open { .. } | BdevError::NotABlockTarget { .. })
    ));
    std::fs::write(&tiny, vec![0u8; 8192]).expect("write");
    assert!(matches!(
        UringBdev::open("t", &cfg(&tiny, Some(1024))),
        Err(BdevError::BlockSize(1024))
    ));
}

/// A loop device over a file: a real block device. Skips with the reason where losetup is
/// impossible (no loop driver, not root).
#[test]
fn uring_loop_device() {
    let e = engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("loop.img");
    std::fs::File::create(&img)
        .expect("create")
        .set_len(32 << 20)
        .expect("size");
    let out = std::process::Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output();
    let dev = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        Ok(o) => {
            eprintln!(
                "SKIP uring_loop_device: losetup failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("SKIP uring_loop_device: cannot run losetup: {e}");
            return;
        }
    };
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.0])
                .status();
        }
    }
    let _detach = Detach(dev.clone());
    let b = UringBdev::open(
        "loop",
        &UringConfig {
            path: dev.into(),
            block_size: None,
            direct: true,
        },
    )
    .expect("open loop device");
    assert!(b.is_block_device());
    assert_eq!(b.geometry().bytes(), 32 << 20);
    let b: Arc<dyn Bdev> = Arc::new(b);
    on_core(&e, 0, move || conformance(b));
}

#[test]
fn malloc_both_block_sizes() {
    let e = engine();
    for bs in [512, 4096] {
        let b: Arc<dyn Bdev> = Arc::new(MallocBdev::new("ram", bs, 1024).expect("malloc"));
        on_core(&e, 0, move || conformance(b));
    }
}

#[test]
fn null_reads_zeros_and_accepts_everything() {
    let e = engine();
    let b: Arc<dyn Bdev> = Arc::new(NullBdev::new("null", 4096, 1 << 20).expect("null"));
    on_core(&e, 1, move || async move {
        let ch = b.open().expect("channel");
        let (_, res) = ch.write(Lba(5), one(pattern(4096, 1).await), true).await;
        res.expect("write");
        let mut dirty = buf(4096).await;
        dirty.fill(0xee);
        let (r, res) = ch.read(Lba(5), one(dirty)).await;
        res.expect("read");
        assert!(
            r[0].iter().all(|&b| b == 0),
            "null never returns stale pool bytes"
        );
        let (_, res) = ch.read(Lba(1 << 20), one(buf(4096).await)).await;
        assert!(matches!(res, Err(IoError::OutOfRange { .. })));
    });
}

#[test]
fn one_file_shared_by_two_cores() {
    let e = engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let b = file_bdev(&dir, 8, None);
    let b2 = b.clone();
    on_core(&e, 0, move || async move {
        let ch = b.open().expect("channel");
        let (_, res) = ch
            .write(Lba(100), one(pattern(4096, 77).await), false)
            .await;
        res.expect("write on core 0");
    });
    let expect = on_core(&e, 0, || async { pattern(4096, 77).await.to_vec() });
    let got = on_core(&e, 1, move || async move {
        let ch = b2.open().expect("channel");
        read_blocks(&ch, 100, 8).await
    });
    assert_eq!(got, expect);
}

#[test]
fn error_injection_by_op_range_count_and_probability() {
    let e = engine();
    let ram: Arc<dyn Bdev> = Arc::new(MallocBdev::new("ram", 512, 4096).expect("malloc"));
    let rules = vec![ErrorRule {
        lba_start: 100,
        lba_end: Some(200),
        ..ErrorRule::always(&[IoKind::Write])
    }];
    let err = Arc::new(ErrorBdev::new("err", ram, rules, 1).expect("error bdev"));
    let e2 = err.clone();
    on_core(&e, 0, move || async move {
        let err = e2;
        let ch = err.open().expect("channel");
        let (_, res) = ch.write(Lba(150), one(pattern(512, 1).await), false).await;
        assert_eq!(
            res,
            Err(IoError::Media {
                kind: IoKind::Write,
                errno: libc::EIO
            })
        );
        let (_, res) = ch.write(Lba(99), one(pattern(1024, 1).await), false).await;
        assert!(res.is_err(), "a request overlapping the range fails");
        let (_, res) = ch.write(Lba(200), one(pattern(512, 1).await), false).await;
        res.expect("outside the range");
        let (_, res) = ch.read(Lba(150), one(buf(512).await)).await;
        res.expect("reads are not selected");

        // Limited count, other error kind.
        err.set_rules(vec![ErrorRule {
            count: Some(2),
            error: InjectedError::NoSpace,
            ..ErrorRule::always(&[])
        }])
        .expect("valid rules");
        let mut failures = Vec::new();
        for _ in 0..5 {
            let (_, res) = ch.flush().await;
            failures.push(res.err());
        }
        assert_eq!(
            failures,
            vec![
                Some(IoError::NoSpace),
                Some(IoError::NoSpace),
                None,
                None,
                None
            ]
        );

        // Probability: about half of 2000 reads fail.
        err.set_rules(vec![ErrorRule {
            probability: 0.5,
            ..ErrorRule::always(&[IoKind::Read])
        }])
        .expect("valid");
        let mut failed = 0;
        for i in 0..2000u64 {
            let (_, res) = ch.read(Lba(i % 4096), one(buf(512).await)).await;
            failed += u32::from(res.is_err());
        }
        assert!(
            (800..1200).contains(&failed),
            "{failed} of 2000 failed at p=0.5"
        );
        assert!(
            err.set_rules(vec![ErrorRule {
                probability: 1.5,
                ..ErrorRule::always(&[])
            }])
            .is_err()
        );
    });
    assert!(err.injected() >= 2 + 2 + 800);
}

/// A stacking channel that passes every request down in its own slot, with a completion hook
/// that counts completions and can turn a success into an error on the way up.
struct Hooked {
    inner: Rc<dyn ChannelImpl>,
    hook: Rc<Counter>,
}

#[derive(Default)]
struct Counter {
    seen: std::cell::Cell<u64>,
    fail_next: std::cell::Cell<bool>,
}

impl CompletionHook for Counter {
    fn completed(&self, slot: IoSlot, cookie: u64, result: Result<(), IoError>) {
        assert_eq!(cookie, 42, "the cookie comes back");
        self.seen.set(self.seen.get() + 1);
        if self.fail_next.replace(false) {
            slot.complete(Err(IoError::Injected(IoKind::Write)));
        } else {
            slot.complete(result);
        }
    }
}

impl ChannelImpl for Hooked {
    fn submit(&self, slot: IoSlot) {
        slot.push_hook(self.hook.clone(), 42);
        self.inner.submit(slot);
    }
}

#[test]
fn completion_hooks_see_every_io_on_its_way_up() {
    let e = engine();
    on_core(&e, 0, || async {
        let ram = MallocBdev::new("ram", 512, 2048).expect("geometry");
        let hook = Rc::new(Counter::default());
        let inner = ram.open_channel().expect("channel");
        let ch = IoChannel::new(
            Rc::new(Hooked {
                inner,
                hook: hook.clone(),
            }),
            ram.geometry(),
        );
        let (_, r) = ch.write(Lba(0), one(pattern(4096, 3).await), false).await;
        r.expect("write");
        assert_eq!(
            read_blocks(&ch, 0, 8).await,
            pattern(4096, 3).await.to_vec()
        );
        assert_eq!(hook.seen.get(), 2, "one completion per I/O");
        hook.fail_next.set(true);
        let (bufs, r) = ch.write(Lba(0), one(pattern(512, 4).await), false).await;
        assert_eq!(
            r,
            Err(IoError::Injected(IoKind::Write)),
            "the hook's result wins"
        );
        assert_eq!(bufs.len(), 1, "buffers come back through the hook");
        // A dropped future: the hook still runs when the module completes the I/O.
        drop(ch.write(Lba(8), one(pattern(512, 5).await), false));
        assert_eq!(hook.seen.get(), 4);
        assert_eq!(pending_on_this_core(), 0);
    });
}

#[test]
fn delay_adds_latency_and_dropped_futures_keep_buffers_until_completion() {
    let e = engine();
    let ram: Arc<dyn Bdev> = Arc::new(MallocBdev::new("ram", 512, 4096).expect("malloc"));
    let slow = Arc::new(DelayBdev::new("slow", ram, 30_000, 0, 0));
    let s2 = slow.clone();
    on_core(&e, 0, move || async move {
        let slow = s2;
        let ch = slow.open().expect("channel");
        let t = Instant::now();
        let (_, res) = ch.read(Lba(0), one(buf(512).await)).await;
        res.expect("read");
        assert!(
            t.elapsed() >= Duration::from_millis(30),
            "read took {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        let (_, res) = ch.write(Lba(0), one(pattern(512, 1).await), false).await;
        res.expect("write");
        assert!(
            t.elapsed() < Duration::from_millis(30),
            "writes are not delayed"
        );

        // An earlier deadline submitted later still completes first.
        slow.latencies()
            .read_us
            .store(200_000, std::sync::atomic::Ordering::Relaxed);
        let long = ch.read(Lba(0), one(buf(512).await));
        slow.latencies()
            .read_us
            .store(1_000, std::sync::atomic::Ordering::Relaxed);
        let t = Instant::now();
        let (_, res) = ch.read(Lba(1), one(buf(512).await)).await;
        res.expect("short read");
        assert!(
            t.elapsed() < Duration::from_millis(150),
            "short read waited {:?}",
            t.elapsed()
        );

        // Drop the long one in flight: its buffer stays out of the pool until it completes.
        let in_use = current().pool().stats()[0].in_use;
        drop(long);
        assert_eq!(
            current().pool().stats()[0].in_use,
            in_use,
            "buffer still owned by the I/O"
        );
        basalt_engine::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            current().pool().stats()[0].in_use,
            in_use - 1,
            "returned after completion"
        );
        assert_eq!(pending_on_this_core(), 0);
    });
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Step {
    Write {
        lba: u64,
        blocks: u64,
        seed: u8,
        split: bool,
    },
    Read {
        lba: u64,
        blocks: u64,
    },
    Unmap {
        lba: u64,
        blocks: u64,
    },
    Zero {
        lba: u64,
        blocks: u64,
    },
    Flush,
}

const MODEL_BLOCKS: u64 = 256;

fn step() -> impl Strategy<Value = Step> {
    let range =
        (0..MODEL_BLOCKS).prop_flat_map(|lba| (Just(lba), 1..=(MODEL_BLOCKS - lba).min(16)));
    prop_oneof![
        4 => (range.clone(), any::<u8>(), any::<bool>())
            .prop_map(|((lba, blocks), seed, split)| Step::Write { lba, blocks, seed, split }),
        4 => range.clone().prop_map(|(lba, blocks)| Step::Read { lba, blocks }),
        1 => range.clone().prop_map(|(lba, blocks)| Step::Unmap { lba, blocks }),
        1 => range.prop_map(|(lba, blocks)| Step::Zero { lba, blocks }),
        1 => Just(Step::Flush),
    ]
}

async fn run_model(bdev: Arc<dyn Bdev>, steps: Vec<Step>) -> Result<(), String> {
    let ch = bdev.open().map_err(|e| e.to_string())?;
    let bs = ch.geometry().block_size as usize;
    let mut model = vec![0u8; MODEL_BLOCKS as usize * bs];
    // Start from zeros on every device.
    let (_, res) = ch.write_zeroes(Lba(0), MODEL_BLOCKS).await;
    res.map_err(|e| e.to_string())?;
    for s in steps {
        match s {
            Step::Write {
                lba,
                blocks,
                seed,
                split,
            } => {
                let len = blocks as usize * bs;
                let mut v = IoVecs::new();
                if split && blocks > 1 {
                    v.push(pattern(bs, seed).await);
                    v.push(pattern(len - bs, seed.wrapping_add(1)).await);
                } else {
                    v.push(pattern(len, seed).await);
                }
                let bytes: Vec<u8> = v.iter().flat_map(|b| b.iter().copied()).collect();
                let (_, res) = ch.write(Lba(lba), v, false).await;
                res.map_err(|e| e.to_string())?;
                model[lba as usize * bs..][..len].copy_from_slice(&bytes);
            }
            Step::Read { lba, blocks } => {
                let got = read_blocks(&ch, lba, blocks).await;
                let want = &model[lba as usize * bs..][..blocks as usize * bs];
                if got != want {
                    return Err(format!("read {lba}+{blocks} differs from the model"));
                }
            }
            Step::Unmap { lba, blocks } | Step::Zero { lba, blocks } => {
                let (_, res) = if matches!(s, Step::Unmap { .. }) {
                    ch.unmap(Lba(lba), blocks).await
                } else {
                    ch.write_zeroes(Lba(lba), blocks).await
                };
                res.map_err(|e| e.to_string())?;
                model[lba as usize * bs..][..blocks as usize * bs].fill(0);
            }
            Step::Flush => {
                let (_, res) = ch.flush().await;
                res.map_err(|e| e.to_string())?;
            }
        }
    }
    let all = read_blocks(&ch, 0, MODEL_BLOCKS).await;
    if all != model {
        return Err("final image differs from the model".into());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn malloc_matches_model(steps in proptest::collection::vec(step(), 1..40), bs in prop_oneof![Just(512u32), Just(4096)]) {
        let e = engine();
        let b: Arc<dyn Bdev> = Arc::new(MallocBdev::new("ram", bs, MODEL_BLOCKS).expect("malloc"));
        on_core(&e, 0, move || run_model(b, steps)).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn uring_file_matches_model(steps in proptest::collection::vec(step(), 1..40), bs in prop_oneof![Just(512u32), Just(4096)]) {
        let e = engine();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.img");
        std::fs::File::create(&path).expect("create").set_len(MODEL_BLOCKS * u64::from(bs)).expect("size");
        let b: Arc<dyn Bdev> = Arc::new(UringBdev::open("m", &UringConfig { path, block_size: Some(bs), direct: true }).expect("open"));
        on_core(&e, 1, move || run_model(b, steps)).map_err(TestCaseError::fail)?;
    }
}
