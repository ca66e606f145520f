//! Loom models of the ring's index protocol and of the wake-up protocol.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p basalt-ring --release --lib loom` (a
//! separate `CARGO_TARGET_DIR` avoids rebuilding the normal one). The frames are loom
//! `UnsafeCell`s, so loom reports a data race if the acquire/release pairs on `head` and
//! `tail` ever let the producer and the consumer touch the same frame at once; the
//! assertions check order, content, and that a sleeping consumer is always signalled.

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use loom::thread;

use crate::error::RingError;
use crate::spsc::{Consumer, Producer, RingMem, WaitFlag, arm, needs_wake};

#[derive(Debug)]
struct LoomRing {
    frames: u64,
    frame_size: usize,
    head: AtomicU64,
    tail: AtomicU64,
    data: Vec<UnsafeCell<Vec<u8>>>,
}

fn ring(frames: u64, frame_size: usize, start: u64) -> Arc<LoomRing> {
    Arc::new(LoomRing {
        frames,
        frame_size,
        head: AtomicU64::new(start),
        tail: AtomicU64::new(start),
        data: (0..frames)
            .map(|_| UnsafeCell::new(vec![0; frame_size]))
            .collect(),
    })
}

impl RingMem for Arc<LoomRing> {
    fn frames(&self) -> u64 {
        self.frames
    }
    fn frame_size(&self) -> usize {
        self.frame_size
    }
    fn load_head(&self, order: Ordering) -> u64 {
        self.head.load(order)
    }
    fn store_head(&self, value: u64, order: Ordering) {
        self.head.store(value, order);
    }
    fn load_tail(&self, order: Ordering) -> u64 {
        self.tail.load(order)
    }
    fn store_tail(&self, value: u64, order: Ordering) {
        self.tail.store(value, order);
    }
    fn write(&self, index: usize, offset: usize, src: &[u8]) {
        self.data[index].with_mut(|p| {
            // SAFETY: loom tracks this access: `with_mut` panics (a reported race) if any
            // other access to this frame is not ordered before it. No other reference to the
            // frame's Vec exists during the closure.
            let frame = unsafe { &mut *p };
            frame[offset..offset + src.len()].copy_from_slice(src);
        });
    }
    fn read(&self, index: usize, offset: usize, dst: &mut [u8]) {
        self.data[index].with(|p| {
            // SAFETY: as in `write`: loom reports any unordered concurrent write; we only read.
            let frame = unsafe { &*p };
            dst.copy_from_slice(&frame[offset..offset + dst.len()]);
        });
    }
}

impl WaitFlag for AtomicU32 {
    fn swap(&self, value: u32, order: Ordering) -> u32 {
        AtomicU32::swap(self, value, order)
    }
    fn store(&self, value: u32, order: Ordering) {
        AtomicU32::store(self, value, order);
    }
}

fn builder() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b
}

/// Producer and consumer run concurrently through a 2-frame ring with more messages than
/// frames (so the producer waits on a full ring), starting at `start` (to cross the u64 wrap).
fn transfer(start: u64, messages: u8) {
    builder().check(move || {
        let mem = ring(2, 8, start);
        let mut p = Producer::new(mem.clone()).expect("sane");
        let mut c = Consumer::new(mem.clone()).expect("sane");
        let producer = thread::spawn(move || {
            for i in 0..messages {
                loop {
                    match p.try_push(&[&[i, i.wrapping_mul(3)]]) {
                        Ok(()) => break,
                        Err(RingError::Full) => thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        });
        let mut buf = [0u8; 4];
        for i in 0..messages {
            loop {
                match c.try_pop(&mut buf).expect("sane") {
                    Some(n) => {
                        assert_eq!(&buf[..n], &[i, i.wrapping_mul(3)]);
                        break;
                    }
                    None => thread::yield_now(),
                }
            }
        }
        producer.join().expect("producer");
        assert_eq!(c.try_pop(&mut buf), Ok(None));
    });
}

#[test]
fn loom_spsc_transfers_in_order() {
    transfer(0, 3);
}

#[test]
fn loom_spsc_transfers_across_the_wrap() {
    transfer(u64::MAX - 1, 3);
}

/// The consumer either finds the message, or goes to sleep only after the producer is bound
/// to signal it: a wake-up is never lost.
#[test]
fn loom_wakeup_is_never_lost() {
    builder().check(|| {
        let mem = ring(2, 8, 0);
        let flag = Arc::new(AtomicU32::new(0));
        let signalled = Arc::new(AtomicBool::new(false));
        let mut p = Producer::new(mem.clone()).expect("sane");
        let mut c = Consumer::new(mem.clone()).expect("sane");
        let producer = {
            let flag = flag.clone();
            let signalled = signalled.clone();
            thread::spawn(move || {
                p.try_push(&[b"wake"]).expect("room");
                if needs_wake(&*flag) {
                    signalled.store(true, Ordering::Release);
                }
            })
        };
        let mut buf = [0u8; 4];
        let mut got = c.try_pop(&mut buf).expect("sane").is_some();
        let mut slept = false;
        if !got {
            let ready = arm(&*flag, || c.has_frame().expect("sane"));
            if ready {
                got = c.try_pop(&mut buf).expect("sane").is_some();
                assert!(got, "arm said ready, so the frame is visible");
            } else {
                slept = true;
            }
        }
        producer.join().expect("producer");
        if slept {
            assert!(
                signalled.load(Ordering::Acquire),
                "the consumer slept and the producer did not signal: lost wake-up"
            );
            // Woken, it finds the message.
            flag.store(0, Ordering::Relaxed);
            assert!(c.try_pop(&mut buf).expect("sane").is_some());
        } else {
            assert!(got);
        }
    });
}

/// Two producers (completions and events) share one waiting flag: at least one signals.
#[test]
fn loom_wakeup_with_two_producers() {
    builder().check(|| {
        let a = ring(2, 8, 0);
        let b = ring(2, 8, 0);
        let flag = Arc::new(AtomicU32::new(0));
        let signals = Arc::new(AtomicU32::new(0));
        let spawn = |mem: Arc<LoomRing>| {
            let flag = flag.clone();
            let signals = signals.clone();
            let mut p = Producer::new(mem).expect("sane");
            thread::spawn(move || {
                p.try_push(&[b"x"]).expect("room");
                if needs_wake(&*flag) {
                    signals.fetch_add(1, Ordering::Release);
                }
            })
        };
        let ta = spawn(a.clone());
        let tb = spawn(b.clone());
        let mut ca = Consumer::new(a).expect("sane");
        let mut cb = Consumer::new(b).expect("sane");
        let ready = arm(&*flag, || {
            ca.has_frame().expect("sane") || cb.has_frame().expect("sane")
        });
        ta.join().expect("a");
        tb.join().expect("b");
        if !ready {
            assert!(signals.load(Ordering::Acquire) >= 1, "lost wake-up");
        }
    });
}
