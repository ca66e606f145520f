//! `delay`: stacks on another bdev and holds each I/O for a configured latency before passing
//! it down, for testing timeouts, queueing and shutdown with I/O in flight.
//!
//! Each core's channel keeps a deadline-ordered queue and one task that sleeps until the
//! earliest deadline. Latencies can be changed while I/O runs. Closing the channel sends queued
//! I/Os down at once; if the engine stops first, queued I/Os complete as aborted.

use std::cell::{Cell, RefCell};
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::future::Future;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::io::{ChannelImpl, IoKind, IoSlot};
use crate::{Bdev, BdevError, Geometry};

/// Latencies added per operation, in microseconds.
#[derive(Debug, Default)]
pub struct Latencies {
    /// Added to reads.
    pub read_us: AtomicU64,
    /// Added to writes.
    pub write_us: AtomicU64,
    /// Added to flushes, unmaps and write-zeroes.
    pub other_us: AtomicU64,
}

impl Latencies {
    fn for_kind(&self, kind: IoKind) -> Duration {
        let us = match kind {
            IoKind::Read => &self.read_us,
            IoKind::Write => &self.write_us,
            IoKind::Flush | IoKind::Unmap | IoKind::WriteZeroes => &self.other_us,
        };
        Duration::from_micros(us.load(Ordering::Relaxed))
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct DelayBdev {
    name: String,
    base: Arc<dyn Bdev>,
    latencies: Arc<Latencies>,
}

impl DelayBdev {
    /// Stacks a delay named `name` on `base` with the given latencies in microseconds.
    pub fn new(
        name: &str,
        base: Arc<dyn Bdev>,
        read_us: u64,
        write_us: u64,
        other_us: u64,
    ) -> DelayBdev {
        let latencies = Latencies {
            read_us: AtomicU64::new(read_us),
            write_us: AtomicU64::new(write_us),
            other_us: AtomicU64::new(other_us),
        };
        DelayBdev {
            name: name.to_owned(),
            base,
            latencies: Arc::new(latencies),
        }
    }

    /// The live latencies (store new values to change them).
    pub fn latencies(&self) -> &Latencies {
        &self.latencies
    }
}

struct Held {
    deadline: Instant,
    seq: u64,
    slot: IoSlot,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // Reversed: BinaryHeap is a max-heap and the earliest deadline must come out first.
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

struct DelayChannel {
    inner: Rc<dyn ChannelImpl>,
    latencies: Arc<Latencies>,
    held: RefCell<BinaryHeap<Held>>,
    seq: Cell<u64>,
    waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
}

impl DelayChannel {
    fn release_due(&self, now: Instant) {
        loop {
            let due = {
                let mut held = self.held.borrow_mut();
                match held.peek() {
                    Some(h) if h.deadline <= now || self.closed.get() => held.pop(),
                    _ => None,
                }
            };
            match due {
                Some(h) => self.inner.submit(h.slot),
                None => return,
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.held.borrow().peek().map(|h| h.deadline)
    }
}

/// Runs on the channel's core until the channel closes: sleeps until the earliest deadline and
/// sends due I/Os down. Submissions with an earlier deadline wake it to re-arm.
async fn pump(ch: Weak<DelayChannel>) {
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let mut sleep = basalt_engine::sleep_until(far);
    std::future::poll_fn(|cx| {
        loop {
            let Some(c) = ch.upgrade() else {
                return Poll::Ready(());
            };
            c.release_due(Instant::now());
            if c.closed.get() {
                return Poll::Ready(());
            }
            *c.waker.borrow_mut() = Some(cx.waker().clone());
            let Some(deadline) = c.next_deadline() else {
                return Poll::Pending;
            };
            if sleep.deadline() != deadline {
                sleep.reset(deadline);
            }
            if std::pin::Pin::new(&mut sleep).poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    })
    .await;
}

impl ChannelImpl for DelayChannel {
    fn submit(&self, slot: IoSlot) {
        let kind = slot.with(|r| r.kind);
        let delay = self.latencies.for_kind(kind);
        if delay.is_zero() || self.closed.get() {
            self.inner.submit(slot);
            return;
        }
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        let deadline = Instant::now() + delay;
        let earliest = self.next_deadline().is_none_or(|d| deadline < d);
        self.held.borrow_mut().push(Held {
            deadline,
            seq,
            slot,
        });
        if earliest && let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    fn close(&self) {
        self.closed.set(true);
        self.release_due(Instant::now());
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
        self.inner.close();
    }
}

impl Bdev for DelayBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn geometry(&self) -> Geometry {
        self.base.geometry()
    }

    fn open_channel(&self) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        let ch = Rc::new(DelayChannel {
            inner: self.base.open_channel()?,
            latencies: self.latencies.clone(),
            held: RefCell::new(BinaryHeap::new()),
            seq: Cell::new(0),
            waker: RefCell::new(None),
            closed: Cell::new(false),
        });
        basalt_engine::spawn(pump(Rc::downgrade(&ch)));
        Ok(ch)
    }
}
