//! Cross-core coordination for the volume layer: wait lists, keyed locks and I/O epochs.
//!
//! Volumes are served from every reactor at once, so the primitives here are `Send + Sync` and
//! wake tasks on other cores through their wakers (the engine's wakers are thread-safe: waking
//! queues the task on its own reactor). None of them is ever held across a blocking call, and
//! critical sections are a few instructions long.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Tasks waiting for a condition another core will announce with [`WaitList::wake_all`].
#[derive(Debug, Default)]
pub(crate) struct WaitList {
    wakers: Mutex<Vec<Waker>>,
}

impl WaitList {
    /// Waits until `ready` holds. `ready` is checked after registering, so a wake-up between
    /// the check and the registration is never lost.
    pub(crate) fn wait<F: Fn() -> bool>(&self, ready: F) -> WaitUntil<'_, F> {
        WaitUntil { list: self, ready }
    }

    /// Wakes every waiter (each rechecks its condition).
    pub(crate) fn wake_all(&self) {
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers {
            w.wake();
        }
    }
}

/// The future of [`WaitList::wait`].
pub(crate) struct WaitUntil<'a, F> {
    list: &'a WaitList,
    ready: F,
}

impl<F: Fn() -> bool> Future for WaitUntil<'_, F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if (self.ready)() {
            return Poll::Ready(());
        }
        self.list
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cx.waker().clone());
        if (self.ready)() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Exclusive locks on keys (a volume's cluster), taken by tasks on any core.
#[derive(Debug)]
pub(crate) struct KeyedLock<K> {
    held: Mutex<HashMap<K, Vec<Waker>>>,
    /// Keys held: lets [`KeyedLock::is_held`] answer without the mutex when none is.
    count: std::sync::atomic::AtomicUsize,
}

impl<K: Hash + Eq + Copy> KeyedLock<K> {
    pub(crate) fn new() -> KeyedLock<K> {
        KeyedLock {
            held: Mutex::new(HashMap::new()),
            count: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Waits for `key` and holds it until the guard drops.
    pub(crate) async fn lock(&self, key: K) -> KeyGuard<'_, K> {
        std::future::poll_fn(|cx| {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            match held.get_mut(&key) {
                None => {
                    held.insert(key, Vec::new());
                    self.count.fetch_add(1, Ordering::SeqCst);
                    Poll::Ready(())
                }
                Some(waiters) => {
                    waiters.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
        KeyGuard { lock: self, key }
    }

    /// Keys held now.
    pub(crate) fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether `key` is held now (one atomic load when no key is).
    pub(crate) fn is_held(&self, key: K) -> bool {
        self.count.load(Ordering::SeqCst) != 0
            && self
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&key)
    }
}

/// Holds one key of a [`KeyedLock`].
pub(crate) struct KeyGuard<'a, K: Hash + Eq + Copy> {
    lock: &'a KeyedLock<K>,
    key: K,
}

impl<K: Hash + Eq + Copy> Drop for KeyGuard<'_, K> {
    fn drop(&mut self) {
        let waiters = {
            let mut held = self.lock.held.lock().unwrap_or_else(|e| e.into_inner());
            self.lock.count.fetch_sub(1, Ordering::SeqCst);
            held.remove(&self.key)
        };
        // Every waiter retries; one wins, the others wait again.
        for w in waiters.into_iter().flatten() {
            w.wake();
        }
    }
}

/// Slots of in-flight counters, spread so that cores rarely share a cache line.
const EPOCH_SLOTS: usize = 16;

#[derive(Debug, Default)]
#[repr(align(128))]
struct EpochSlot([AtomicU64; 2]);

/// I/O epochs: a grace-period mechanism. Every I/O that looks at the maps is counted in the
/// current epoch from before its lookup until its last base I/O completes.
/// [`Epochs::synchronize`] opens a new epoch and waits until the previous one is empty: after
/// it, no I/O still uses what the maps named before it began. Space released by a commit is
/// reused only after such a wait, so a late write can never land in a reused cluster, and a
/// snapshot waits the same way for writes in flight to its volume.
#[derive(Debug, Default)]
pub(crate) struct Epochs {
    current: AtomicU64,
    slots: [EpochSlot; EPOCH_SLOTS],
}

/// One I/O's registration in an epoch; call [`Epochs::leave`] with it exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EpochToken(u64);

impl EpochToken {
    /// The token as a completion-hook cookie.
    pub(crate) fn cookie(self) -> u64 {
        self.0
    }

    /// Back from [`EpochToken::cookie`].
    pub(crate) fn from_cookie(c: u64) -> EpochToken {
        EpochToken(c)
    }
}

impl Epochs {
    /// Registers an I/O starting on core `core`.
    pub(crate) fn enter(&self, core: usize) -> EpochToken {
        let slot = core % EPOCH_SLOTS;
        loop {
            let e = self.current.load(Ordering::SeqCst);
            let parity = (e & 1) as usize;
            self.slots[slot].0[parity].fetch_add(1, Ordering::SeqCst);
            if self.current.load(Ordering::SeqCst) == e {
                return EpochToken((slot as u64) << 1 | e & 1);
            }
            // The epoch moved between the load and the count: count in the new one instead.
            self.slots[slot].0[parity].fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Ends an I/O's registration.
    pub(crate) fn leave(&self, token: EpochToken) {
        let slot = (token.0 >> 1) as usize % EPOCH_SLOTS;
        self.slots[slot].0[(token.0 & 1) as usize].fetch_sub(1, Ordering::SeqCst);
    }

    fn count(&self, parity: usize) -> u64 {
        self.slots
            .iter()
            .map(|s| s.0[parity].load(Ordering::SeqCst))
            .sum()
    }

    /// I/Os registered now.
    pub(crate) fn in_flight(&self) -> u64 {
        self.count(0) + self.count(1)
    }

    /// Opens a new epoch and waits (on the calling reactor) until every I/O registered before
    /// it has left. Callers must not overlap (the store serializes them).
    pub(crate) async fn synchronize(&self) {
        let old = (self.current.fetch_add(1, Ordering::SeqCst) & 1) as usize;
        let mut pause = Duration::from_micros(20);
        while self.count(old) != 0 {
            basalt_engine::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_leave_the_epoch_they_entered() {
        let e = Epochs::default();
        let a = e.enter(3);
        assert_eq!(e.count(0), 1);
        e.current.fetch_add(1, Ordering::SeqCst);
        let b = e.enter(19);
        assert_eq!((e.count(0), e.count(1)), (1, 1));
        e.leave(EpochToken::from_cookie(a.cookie()));
        assert_eq!(e.count(0), 0, "the old epoch drained");
        e.leave(b);
        assert_eq!(e.in_flight(), 0);
    }
}
