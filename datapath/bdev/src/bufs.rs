//! Registered buffers for a command's data, for every target on a core (SCSI, NBD, ...).
//!
//! A command takes all its buffers at once: [`alloc`] first tries to take every buffer without
//! waiting. If the pool is short, it gives back what it took and queues behind this core's
//! allocation gate, which lets one command at a time wait for buffers piecemeal. Without the
//! gate, several large commands could each hold part of the pool while waiting for the rest,
//! and none would finish. The gate is one per core for all targets, so commands of different
//! protocols on one core cannot deadlock each other either.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::IoVecs;
use basalt_engine::BufPool;

thread_local! {
    static GATE_HELD: Cell<bool> = const { Cell::new(false) };
    static GATE_WAITERS: RefCell<VecDeque<Waker>> = const { RefCell::new(VecDeque::new()) };
}

struct Gate;

impl Future for Gate {
    type Output = GateGuard;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<GateGuard> {
        if !GATE_HELD.with(Cell::get) {
            GATE_HELD.with(|h| h.set(true));
            return Poll::Ready(GateGuard);
        }
        GATE_WAITERS.with(|w| {
            let mut w = w.borrow_mut();
            if !w.iter().any(|x| x.will_wake(cx.waker())) {
                w.push_back(cx.waker().clone());
            }
        });
        Poll::Pending
    }
}

struct GateGuard;

impl Drop for GateGuard {
    fn drop(&mut self) {
        GATE_HELD.with(|h| h.set(false));
        let next = GATE_WAITERS.with(|w| w.borrow_mut().pop_front());
        if let Some(w) = next {
            w.wake();
        }
    }
}

fn sizes(bytes: usize, max: usize) -> impl Iterator<Item = usize> {
    let max = max.max(1);
    let n = bytes.div_ceil(max);
    (0..n).map(move |i| (bytes - i * max).min(max))
}

/// Buffers holding `bytes` bytes in all (each at most the pool's largest size; `bytes` should
/// be a multiple of the block size so every buffer is too).
pub async fn alloc(pool: &BufPool, bytes: usize) -> IoVecs {
    let max = pool.max_size();
    let mut v = IoVecs::new();
    let mut short = false;
    for len in sizes(bytes, max) {
        match pool.try_alloc(len) {
            Ok(Some(b)) => v.push(b),
            _ => {
                short = true;
                break;
            }
        }
    }
    if !short {
        return v;
    }
    drop(v);
    let _gate = Gate.await;
    let mut v = IoVecs::new();
    for len in sizes(bytes, max) {
        match pool.alloc(len) {
            Ok(a) => v.push(a.await),
            Err(_) => break, // cannot happen: every size is at most max_size
        }
    }
    v
}

/// Buffers filled with `data` (whose length should be a multiple of the block size).
pub async fn alloc_copy(pool: &BufPool, data: &[u8]) -> IoVecs {
    let mut v = alloc(pool, data.len()).await;
    let mut at = 0;
    for b in v.iter_mut() {
        let n = b.len();
        b.copy_from_slice(&data[at..at + n]);
        at += n;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_split_at_the_pool_maximum() {
        assert_eq!(sizes(0, 128).collect::<Vec<_>>(), Vec::<usize>::new());
        assert_eq!(sizes(100, 128).collect::<Vec<_>>(), vec![100]);
        assert_eq!(sizes(128, 128).collect::<Vec<_>>(), vec![128]);
        assert_eq!(sizes(300, 128).collect::<Vec<_>>(), vec![128, 128, 44]);
    }
}
