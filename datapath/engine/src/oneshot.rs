//! A one-value channel between threads, awaitable on a reactor and blockable elsewhere.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
    closed: bool,
}

#[derive(Debug)]
struct Inner<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

/// The sending half; dropping it unsent tells the receiver the value will never come.
#[derive(Debug)]
pub struct Sender<T> {
    inner: Option<Arc<Inner<T>>>,
}

/// The receiving half: a future, or [`Receiver::wait`] from a plain thread.
#[derive(Debug)]
pub struct Receiver<T> {
    inner: Arc<Inner<T>>,
}

/// The sender went away without sending (its reactor stopped, or the task was cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub struct Closed;

/// A new channel.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            value: None,
            waker: None,
            closed: false,
        }),
        ready: Condvar::new(),
    });
    (
        Sender {
            inner: Some(inner.clone()),
        },
        Receiver { inner },
    )
}

fn lock<T>(inner: &Inner<T>) -> std::sync::MutexGuard<'_, State<T>> {
    // A panic while holding this lock leaves only plain data behind; keep going.
    inner
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<T> Sender<T> {
    /// Delivers the value.
    pub fn send(mut self, value: T) {
        if let Some(inner) = self.inner.take() {
            let waker = {
                let mut st = lock(&inner);
                st.value = Some(value);
                st.waker.take()
            };
            inner.ready.notify_all();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let waker = {
                let mut st = lock(&inner);
                st.closed = true;
                st.waker.take()
            };
            inner.ready.notify_all();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl<T> Receiver<T> {
    /// Blocks the calling thread until the value arrives. Never call this on a reactor thread.
    ///
    /// # Errors
    /// [`Closed`] if the sender was dropped unsent.
    pub fn wait(self) -> Result<T, Closed> {
        let mut st = lock(&self.inner);
        loop {
            if let Some(v) = st.value.take() {
                return Ok(v);
            }
            if st.closed {
                return Err(Closed);
            }
            st = self
                .inner
                .ready
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Like [`Receiver::wait`], giving up after `timeout` (`Ok(None)`).
    ///
    /// # Errors
    /// [`Closed`] if the sender was dropped unsent.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<T>, Closed> {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.inner);
        loop {
            if let Some(v) = st.value.take() {
                return Ok(Some(v));
            }
            if st.closed {
                return Err(Closed);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            st = self
                .inner
                .ready
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, Closed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = lock(&self.inner);
        if let Some(v) = st.value.take() {
            return Poll::Ready(Ok(v));
        }
        if st.closed {
            return Poll::Ready(Err(Closed));
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
