//! The local executor: `!Send` tasks on one reactor.
//!
//! Tasks are `async-task` cells. A task's `Runnable` goes onto its reactor's run queue when it is
//! woken, from whichever thread wakes it; only the reactor's thread runs it. The reactor keeps
//! every live task in a [`TaskSet`] so that shutdown can cancel them all on their own thread
//! (dropping their futures there, which parks any buffer the kernel still owns).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use crate::reactor::{Reactor, current};

/// The live tasks of one reactor.
#[derive(Debug, Default)]
pub(crate) struct TaskSet {
    live: RefCell<Slab<async_task::Task<()>>>,
    finished: RefCell<Vec<usize>>,
}

impl TaskSet {
    /// Drops the handles of tasks that have completed.
    pub(crate) fn reap_finished(&self) {
        let mut finished = self.finished.borrow_mut();
        if finished.is_empty() {
            return;
        }
        let mut live = self.live.borrow_mut();
        for key in finished.drain(..) {
            if live.contains(key) {
                // Completed already: dropping the handle only frees the cell.
                drop(live.remove(key));
            }
        }
    }

    /// Cancels every live task (drops its future now, on this thread).
    pub(crate) fn cancel_all(&self) {
        loop {
            let tasks: Vec<_> = self.live.borrow_mut().drain().collect();
            if tasks.is_empty() {
                break;
            }
            // Dropping may run destructors that spawn; loop until nothing is left.
            drop(tasks);
        }
        self.finished.borrow_mut().clear();
    }

    /// Number of live tasks.
    pub(crate) fn len(&self) -> usize {
        self.live.borrow().len()
    }
}

struct JoinState<T> {
    value: Option<T>,
    waker: Option<Waker>,
    cancelled: bool,
}

/// Awaits the output of a task spawned on the current reactor. Dropping it detaches the task.
pub struct JoinHandle<T> {
    state: Rc<RefCell<JoinState<T>>>,
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle").finish_non_exhaustive()
    }
}

/// A spawned task was cancelled (its reactor shut down) or panicked before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub struct Cancelled;

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.state.borrow_mut();
        if let Some(v) = st.value.take() {
            return Poll::Ready(Ok(v));
        }
        if st.cancelled {
            return Poll::Ready(Err(Cancelled));
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Marks the join state cancelled if the task's future is dropped before finishing (shutdown,
/// or a panic while polling), and in every case queues the task's slot for reaping.
struct CancelGuard<T> {
    state: Rc<RefCell<JoinState<T>>>,
    done: bool,
    key: usize,
    reactor: std::rc::Weak<Reactor>,
}

impl<T> CancelGuard<T> {
    fn disarm(&mut self) {
        self.done = true;
    }
}

impl<T> Drop for CancelGuard<T> {
    fn drop(&mut self) {
        if !self.done {
            let waker = {
                let mut st = self.state.borrow_mut();
                st.cancelled = true;
                st.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
        if let Some(r) = self.reactor.upgrade() {
            r.tasks.finished.borrow_mut().push(self.key);
        }
    }
}

/// Spawns `fut` on the current reactor.
///
/// # Panics
/// Outside a reactor thread.
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    spawn_on(&current(), fut)
}

pub(crate) fn spawn_on<F>(reactor: &Rc<Reactor>, fut: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let state = Rc::new(RefCell::new(JoinState {
        value: None,
        waker: None,
        cancelled: false,
    }));
    let key = reactor.tasks.live.borrow().vacant_key();
    let mut guard = CancelGuard {
        state: state.clone(),
        done: false,
        key,
        reactor: Rc::downgrade(reactor),
    };
    let wrapped = async move {
        let out = fut.await;
        let waker = {
            let mut st = guard.state.borrow_mut();
            st.value = Some(out);
            st.waker.take()
        };
        guard.disarm();
        if let Some(w) = waker {
            w.wake();
        }
    };
    let shared = reactor.shared.clone();
    let (runnable, task) = async_task::spawn_local(wrapped, move |r| shared.schedule(r));
    let inserted = reactor.tasks.live.borrow_mut().insert(task);
    debug_assert_eq!(inserted, key);
    runnable.schedule();
    JoinHandle { state }
}

/// Yields once to the other tasks of this reactor.
pub async fn yield_now() {
    struct YieldNow(bool);
    impl Future for YieldNow {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                Poll::Ready(())
            } else {
                self.0 = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
    YieldNow(false).await
}
