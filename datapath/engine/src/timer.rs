//! Timers: a per-reactor heap of deadlines; the reactor sleeps in the kernel until the earliest.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::reactor::{Reactor, current};

/// Deadlines of the sleeping futures of one reactor.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: RefCell<BinaryHeap<Reverse<(Instant, u64)>>>,
    wakers: RefCell<HashMap<u64, Waker>>,
    next_id: Cell<u64>,
}

impl Timers {
    fn register(&self, deadline: Instant, waker: Waker) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.heap.borrow_mut().push(Reverse((deadline, id)));
        self.wakers.borrow_mut().insert(id, waker);
        id
    }

    fn update(&self, id: u64, waker: &Waker) {
        if let Some(w) = self.wakers.borrow_mut().get_mut(&id)
            && !w.will_wake(waker)
        {
            *w = waker.clone();
        }
    }

    fn cancel(&self, id: u64) {
        self.wakers.borrow_mut().remove(&id);
    }

    /// Wakes every timer due at `now`. Returns how many fired.
    pub(crate) fn fire(&self, now: Instant) -> usize {
        let mut fired = 0;
        loop {
            let id = {
                let mut heap = self.heap.borrow_mut();
                match heap.peek() {
                    Some(Reverse((deadline, id))) if *deadline <= now => {
                        let id = *id;
                        heap.pop();
                        id
                    }
                    _ => break,
                }
            };
            let waker = self.wakers.borrow_mut().remove(&id);
            if let Some(w) = waker {
                w.wake();
                fired += 1;
            }
        }
        fired
    }

    /// The earliest live deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let mut heap = self.heap.borrow_mut();
        let wakers = self.wakers.borrow();
        while let Some(Reverse((deadline, id))) = heap.peek() {
            if wakers.contains_key(id) {
                return Some(*deadline);
            }
            heap.pop();
        }
        None
    }

    pub(crate) fn clear(&self) {
        self.heap.borrow_mut().clear();
        self.wakers.borrow_mut().clear();
    }
}

/// Completes at a deadline. Created by [`sleep`] or [`sleep_until`].
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
    reactor: Rc<Reactor>,
    id: Option<u64>,
}

/// Sleeps for `duration` on the current reactor.
///
/// # Panics
/// Outside a reactor thread.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(Instant::now() + duration)
}

/// Sleeps until `deadline` on the current reactor.
///
/// # Panics
/// Outside a reactor thread.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        reactor: current(),
        id: None,
    }
}

impl Sleep {
    /// When this sleep completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline (earlier or later); the sleep is pending again until then.
    pub fn reset(&mut self, deadline: Instant) {
        if let Some(id) = self.id.take() {
            self.reactor.timers.cancel(id);
        }
        self.deadline = deadline;
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            if let Some(id) = self.id.take() {
                self.reactor.timers.cancel(id);
            }
            return Poll::Ready(());
        }
        match self.id {
            Some(id) => self.reactor.timers.update(id, cx.waker()),
            None => {
                let id = self
                    .reactor
                    .timers
                    .register(self.deadline, cx.waker().clone());
                self.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.reactor.timers.cancel(id);
        }
    }
}

/// The future did not finish within the allotted time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub struct Elapsed;

/// Runs `fut`, giving up after `duration`.
///
/// # Errors
/// [`Elapsed`] if the deadline passes first (the future is dropped).
pub async fn timeout<F: Future>(duration: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let mut sleep = std::pin::pin!(sleep(duration));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Elapsed));
        }
        Poll::Pending
    })
    .await
}
