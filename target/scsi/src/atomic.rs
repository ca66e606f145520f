//! Atomicity for COMPARE AND WRITE and ORWRITE against writes from any core.
//!
//! # Protocol
//! Plain writes must not take a lock. Each [`crate::LuChannel`] owns an [`Inflight`] counter
//! (its own cache line) registered with the logical unit. A plain write increments its counter,
//! then reads the logical unit's `atomic_active` count (both `SeqCst`):
//!
//! * zero: the write proceeds and decrements its counter when the I/O completes;
//! * non-zero: it decrements its counter again and takes the logical unit's [`RangeLock`] for
//!   its blocks instead (the slow path).
//!
//! An atomic command increments `atomic_active` (`SeqCst`), waits until every registered
//! counter has been zero at least once, takes the range lock for its blocks, reads, compares or
//! merges, writes, and releases. Either the write sees `atomic_active` or the atomic command sees
//! the write's counter (both orders are sequentially consistent), so no plain write overlaps the
//! atomic command's read-modify-write unnoticed. New plain writes divert to the range lock while
//! any atomic command is active, so the drain only waits for writes that were already in flight.
//!
//! # Range lock
//! A `Mutex`-protected list of held block ranges with a list of wakers; acquiring waits until no
//! held range overlaps. Only the slow paths use it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// One channel's count of plain writes in flight, alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Inflight(pub AtomicU64);

#[derive(Debug, Default)]
struct Ranges {
    held: Vec<(u64, u64, u64)>,
    waiters: Vec<Waker>,
    next: u64,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct RangeLock {
    inner: Mutex<Ranges>,
}

fn lock(m: &Mutex<Ranges>) -> MutexGuard<'_, Ranges> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RangeLock {
    /// Waits until `start..end` overlaps no held range, then holds it until the guard drops.
    pub fn lock(&self, start: u64, end: u64) -> Acquire<'_> {
        Acquire {
            lock: self,
            start,
            end: end.max(start.saturating_add(1)),
        }
    }

    /// Number of ranges held (tests).
    pub fn held(&self) -> usize {
        lock(&self.inner).held.len()
    }
}

/// Future of [`RangeLock::lock`].
#[derive(Debug)]
pub struct Acquire<'a> {
    lock: &'a RangeLock,
    start: u64,
    end: u64,
}

impl<'a> Future for Acquire<'a> {
    type Output = RangeGuard<'a>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RangeGuard<'a>> {
        let mut r = lock(&self.lock.inner);
        let overlaps = r
            .held
            .iter()
            .any(|&(s, e, _)| s < self.end && self.start < e);
        if overlaps {
            if !r.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                r.waiters.push(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let token = r.next;
        r.next = r.next.wrapping_add(1);
        r.held.push((self.start, self.end, token));
        Poll::Ready(RangeGuard {
            lock: self.lock,
            token,
        })
    }
}

/// A held range; dropping it releases the range and wakes every waiter to re-check.
#[derive(Debug)]
pub struct RangeGuard<'a> {
    lock: &'a RangeLock,
    token: u64,
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let waiters = {
            let mut r = lock(&self.lock.inner);
            r.held.retain(|&(_, _, t)| t != self.token);
            std::mem::take(&mut r.waiters)
        };
        for w in waiters {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::Wake;

    use std::sync::atomic::Ordering;

    use super::*;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn overlapping_ranges_wait_and_disjoint_ones_do_not() {
        let l = RangeLock::default();
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut a = Box::pin(l.lock(10, 20));
        let Poll::Ready(ga) = a.as_mut().poll(&mut cx) else {
            panic!("free range must be granted");
        };
        let mut b = Box::pin(l.lock(19, 30));
        assert!(b.as_mut().poll(&mut cx).is_pending());
        let mut c = Box::pin(l.lock(20, 30));
        let Poll::Ready(gc) = c.as_mut().poll(&mut cx) else {
            panic!("adjacent range must be granted");
        };
        assert_eq!(l.held(), 2);
        drop(ga);
        assert!(flag.0.load(Ordering::SeqCst), "release wakes waiters");
        assert!(
            b.as_mut().poll(&mut cx).is_pending(),
            "still overlaps 20..30"
        );
        drop(gc);
        assert!(b.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn empty_ranges_still_lock_one_block() {
        let l = RangeLock::default();
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag);
        let mut cx = Context::from_waker(&waker);
        let mut a = Box::pin(l.lock(5, 5));
        let Poll::Ready(_g) = a.as_mut().poll(&mut cx) else {
            panic!("granted");
        };
        assert!(Box::pin(l.lock(5, 6)).as_mut().poll(&mut cx).is_pending());
    }
}
