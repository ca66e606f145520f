//! [`Signal`]: a wake-up flag between tasks of one reactor.
//!
//! One task waits; any task of the same reactor notifies. A notification that arrives before
//! the wait is kept (the flag), so none is lost; several notifications before a wait count as
//! one. For "there is something to send" between a connection's event handling and its writer,
//! and for stopping one command early.

use std::cell::{Cell, RefCell};
use std::task::{Poll, Waker};

/// A one-waiter wake-up flag (not `Send`: both sides live on one reactor).
#[derive(Debug, Default)]
pub struct Signal {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    /// Sets the flag and wakes the waiter, if any.
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Waits until the flag is set, then clears it.
    pub async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}
