//! The requester's table of requests in flight, and how they fail when the peer goes away.
//!
//! Control registers each command it sends ([`Pending::insert`]) with a deadline and its own
//! context (the caller waiting for the answer, the slot it lent, the operation to re-drive).
//! A completion takes the entry out ([`Pending::complete`]) after its epoch is checked. When
//! the peer dies or is replaced, [`Pending::fail_all_peer_gone`] / [`Pending::fail_all_restarted`] hand every entry back with
//! [`RequestError::PeerGone`] or [`RequestError::Restarted`]; [`Pending::expire`] does the same
//! for entries whose deadline passed ([`RequestError::TimedOut`]), which bounds the wait even
//! for a peer that hangs without dying.
//!
//! # Re-driving and idempotency
//!
//! A failed request may or may not have been carried out: the peer may have died before it
//! read the command, while it worked on it, or after it finished but before its completion
//! was read. So re-driving a request means sending it again, with the **same request id**, in
//! the new epoch, and every operation must be idempotent: applying it twice has the effect of
//! applying it once ("create volume X if absent", "write these bytes at this offset", "export
//! X" rather than "create a volume", "append"). The datapath that comes back after a restart
//! has no memory of old request ids, so the idempotency lies in the operation itself; the id
//! ties the answer to the question and lets the datapath collapse duplicates within an epoch.
//! That is the control plane's job, not this crate's: it only guarantees that every request
//! is answered exactly once: by a completion, or by an error from this table.
//!
//! # Capacity is credit
//!
//! The table holds at most `capacity` entries; choose `capacity <= min(commands.frames,
//! completions.frames)` ([`Pending::for_geometry`]). Then neither ring can overflow: each
//! request takes at most one command frame until the datapath reads it and exactly one
//! completion frame later, so a `send` of a registered request always finds room.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::error::{PendingError, RequestError};
use crate::region::{Epoch, Geometry};

/// Hands out request ids: unique for the life of the requester, across epochs.
#[derive(Debug, Clone)]
pub struct RequestIds(u64);

impl RequestIds {
    /// Ids from 1 up (0 is never used, so a zeroed message names no request).
    pub fn new() -> Self {
        RequestIds(0)
    }

    /// The next id.
    pub fn next_id(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1).max(1);
        self.0
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
struct Entry<T> {
    ctx: T,
    sent: Instant,
    deadline: Instant,
}

/// A request that failed, handed back to be re-driven or reported.
#[derive(Debug)]
pub struct Failed<T> {
    /// Its id (re-drive with the same one).
    pub request_id: u64,
    /// What the caller registered.
    pub ctx: T,
    /// Why it failed.
    pub error: RequestError,
}

/// Requests in flight, by id.
#[derive(Debug)]
pub struct Pending<T> {
    entries: HashMap<u64, Entry<T>>,
    capacity: usize,
    epoch: Epoch,
}

impl<T> Pending<T> {
    /// A table for `capacity` requests in `epoch`.
    pub fn new(capacity: usize, epoch: Epoch) -> Self {
        Pending {
            entries: HashMap::with_capacity(capacity),
            capacity,
            epoch,
        }
    }

    /// A table sized so the rings of `geometry` can never overflow (see the module docs).
    pub fn for_geometry(geometry: &Geometry, epoch: Epoch) -> Self {
        let n = geometry.commands.frames.min(geometry.completions.frames);
        Self::new(n as usize, epoch)
    }

    /// The epoch completions must carry.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Requests in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether another request fits.
    pub fn has_room(&self) -> bool {
        self.entries.len() < self.capacity
    }

    /// Registers a request before it is sent; it must be answered within `timeout`.
    ///
    /// # Errors
    ///
    /// [`PendingError::Full`] at capacity, [`PendingError::Duplicate`] for an id in flight.
    /// The context comes back with the error.
    pub fn insert(
        &mut self,
        request_id: u64,
        ctx: T,
        timeout: Duration,
    ) -> Result<(), (PendingError, T)> {
        if self.entries.len() >= self.capacity {
            return Err((
                PendingError::Full {
                    capacity: self.capacity,
                },
                ctx,
            ));
        }
        if self.entries.contains_key(&request_id) {
            return Err((PendingError::Duplicate { request_id }, ctx));
        }
        let sent = Instant::now();
        self.entries.insert(
            request_id,
            Entry {
                ctx,
                sent,
                deadline: sent + timeout,
            },
        );
        Ok(())
    }

    /// Takes the request a completion answers.
    ///
    /// # Errors
    ///
    /// [`PendingError::StaleEpoch`] for a completion from another epoch (the entry stays),
    /// [`PendingError::Unknown`] for an id not in flight (already answered, failed, or never
    /// sent: the completion must be dropped).
    pub fn complete(&mut self, request_id: u64, epoch: u64) -> Result<T, PendingError> {
        if epoch != self.epoch.0 {
            return Err(PendingError::StaleEpoch {
                request_id,
                found: epoch,
                current: self.epoch.0,
            });
        }
        self.entries
            .remove(&request_id)
            .map(|e| e.ctx)
            .ok_or(PendingError::Unknown { request_id })
    }

    /// Fails every request whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Failed<T>> {
        let due: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        let mut out: Vec<Failed<T>> = due
            .into_iter()
            .filter_map(|id| {
                let e = self.entries.remove(&id)?;
                let after = now.saturating_duration_since(e.sent);
                Some(Failed {
                    request_id: id,
                    ctx: e.ctx,
                    error: RequestError::TimedOut { after },
                })
            })
            .collect();
        out.sort_by_key(|f| f.request_id);
        out
    }

    /// The earliest deadline, to bound the next wait.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.deadline).min()
    }

    /// The peer is gone (hang-up, exit): fails every request with [`RequestError::PeerGone`],
    /// in id order.
    pub fn fail_all_peer_gone(&mut self) -> Vec<Failed<T>> {
        let epoch = self.epoch.0;
        self.drain_with(|| RequestError::PeerGone { epoch })
    }

    /// A new peer (or a restarted one) took over in `new` epoch: fails every request with
    /// [`RequestError::Restarted`], in id order, and expects `new` from now on.
    pub fn fail_all_restarted(&mut self, new: Epoch) -> Vec<Failed<T>> {
        let old = self.epoch.0;
        self.epoch = new;
        self.drain_with(|| RequestError::Restarted { old, new: new.0 })
    }

    /// Moves to epoch `new` with nothing in flight (after `fail_all_peer_gone`).
    pub fn set_epoch(&mut self, new: Epoch) {
        self.epoch = new;
    }

    fn drain_with(&mut self, error: impl Fn() -> RequestError) -> Vec<Failed<T>> {
        let mut out: Vec<Failed<T>> = self
            .entries
            .drain()
            .map(|(request_id, e)| Failed {
                request_id,
                ctx: e.ctx,
                error: error(),
            })
            .collect();
        out.sort_by_key(|f| f.request_id);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_checks_epoch_and_id() {
        let mut p = Pending::new(2, Epoch(3));
        p.insert(1, "a", Duration::from_secs(5)).expect("room");
        p.insert(2, "b", Duration::from_secs(5)).expect("room");
        assert!(matches!(
            p.insert(3, "c", Duration::from_secs(5)),
            Err((PendingError::Full { .. }, "c"))
        ));
        assert_eq!(
            p.complete(1, 2),
            Err(PendingError::StaleEpoch {
                request_id: 1,
                found: 2,
                current: 3
            })
        );
        assert_eq!(p.complete(1, 3), Ok("a"));
        assert_eq!(
            p.complete(1, 3),
            Err(PendingError::Unknown { request_id: 1 })
        );
        assert!(matches!(
            p.insert(2, "x", Duration::from_secs(1)),
            Err((PendingError::Duplicate { .. }, _))
        ));
    }

    #[test]
    fn peer_loss_fails_everything_in_id_order() {
        let mut p = Pending::new(8, Epoch(1));
        for id in [5, 3, 9] {
            p.insert(id, id * 10, Duration::from_secs(60))
                .expect("room");
        }
        let failed = p.fail_all_peer_gone();
        assert_eq!(
            failed.iter().map(|f| f.request_id).collect::<Vec<_>>(),
            [3, 5, 9]
        );
        assert!(
            failed
                .iter()
                .all(|f| f.error == RequestError::PeerGone { epoch: 1 })
        );
        assert!(p.is_empty());
        p.insert(3, 30, Duration::from_secs(60)).expect("re-driven");
        let failed = p.fail_all_restarted(Epoch(2));
        assert_eq!(failed[0].error, RequestError::Restarted { old: 1, new: 2 });
        assert_eq!(p.epoch(), Epoch(2));
        assert!(!failed[0].error.to_string().is_empty());
    }

    #[test]
    fn deadlines_bound_the_wait() {
        let mut p = Pending::new(8, Epoch(1));
        p.insert(1, (), Duration::ZERO).expect("room");
        p.insert(2, (), Duration::from_secs(3600)).expect("room");
        assert!(p.next_deadline().expect("some") <= Instant::now());
        let failed = p.expire(Instant::now());
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].request_id, 1);
        assert!(matches!(failed[0].error, RequestError::TimedOut { .. }));
        assert_eq!(p.len(), 1);
        let mut ids = RequestIds::new();
        assert_eq!((ids.next_id(), ids.next_id()), (1, 2));
    }
}
