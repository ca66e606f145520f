//! [`RingDatapath`]: a datapath node reached over the shared-memory rings.
//!
//! The first request connects to the node's ring socket and pairs with it (a fresh region and
//! the next epoch). Each request lends one data slot for a large answer, and waits for the
//! answer with its request id. When the datapath dies while a request is in flight, the
//! request fails over to a new pairing, if the datapath is back, and is sent again with the
//! same request id: the datapath's operations are idempotent, so doing it twice is harmless.
//! Past the deadline, or when no datapath answers the socket, the call fails as unreachable.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use basalt_ring::msg::{KIND_REJECT, Reject};
use basalt_ring::ops::{self, Answer, KIND_EVENT, KIND_OP};
use basalt_ring::{
    Endpoint, Epoch, Geometry, Lane, RecvError, RequestIds, SlotPool, SlotSpan, WaitError,
    bootstrap,
};

use crate::datapath::{Datapath, DpError, parse_answer};

/// A node's datapath over the rings.
#[derive(Debug)]
pub struct RingDatapath {
    socket: PathBuf,
    timeout: Duration,
    geometry: Geometry,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    pairing: Option<Pairing>,
    next_epoch: Epoch,
    ids: RequestIds,
    /// Events received and not yet taken (bounded: the oldest are dropped).
    events: std::collections::VecDeque<serde_json::Value>,
}

/// Events kept for [`Datapath::take_events`] at most.
const MAX_EVENTS: usize = 1024;

#[derive(Debug)]
struct Pairing {
    ep: Endpoint,
    slots: SlotPool,
}

/// Counters of a ring client, for tests and operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingClientStats {
    /// The epoch of the current pairing (0: not paired).
    pub epoch: u64,
}

impl RingDatapath {
    /// A client of the ring socket at `socket`; each request gives up after `timeout`.
    pub fn new(socket: &Path, timeout: Duration) -> RingDatapath {
        // Small rings: control requests are few and serial; the slots carry large answers.
        let mut geometry = Geometry::default();
        geometry.commands.frames = 16;
        geometry.completions.frames = 16;
        geometry.events.frames = 16;
        geometry.slot_count = 4;
        RingDatapath {
            socket: socket.to_owned(),
            timeout,
            geometry,
            state: Mutex::new(State {
                pairing: None,
                next_epoch: Epoch::FIRST,
                ids: RequestIds::new(),
                events: std::collections::VecDeque::new(),
            }),
        }
    }

    /// The current pairing's epoch (0 when not paired).
    pub fn stats(&self) -> RingClientStats {
        let st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        RingClientStats {
            epoch: st.pairing.as_ref().map_or(0, |p| p.ep.epoch().0),
        }
    }

    fn pair(&self, st: &mut State) -> Result<(), DpError> {
        if st.pairing.is_some() {
            return Ok(());
        }
        let unreachable = |e: &dyn std::fmt::Display| {
            DpError::Unreachable(format!("{}: {e}", self.socket.display()))
        };
        let sock = bootstrap::connect(&self.socket).map_err(|e| unreachable(&e))?;
        let epoch = st.next_epoch;
        st.next_epoch = epoch.next();
        let ep = Endpoint::create(sock, &self.geometry, epoch, Duration::from_secs(5))
            .map_err(|e| unreachable(&e))?;
        tracing::info!(socket = %self.socket.display(), %epoch, datapath_pid = ep.peer_pid(), "paired with the datapath's rings");
        let slots = SlotPool::new(ep.slots().count());
        st.pairing = Some(Pairing { ep, slots });
        Ok(())
    }

    /// One attempt on the current pairing: `Ok(None)` when the peer went away (pair again).
    fn attempt(
        &self,
        p: &mut Pairing,
        events: &mut std::collections::VecDeque<serde_json::Value>,
        id: u64,
        json: &[u8],
        deadline: Instant,
        sink: &mut Option<&mut Vec<u8>>,
    ) -> Result<Option<serde_json::Value>, DpError> {
        let slot = p
            .slots
            .alloc()
            .ok_or_else(|| DpError::Unreachable("no free data slot".into()))?;
        let span = SlotSpan::new(slot, p.ep.slots().slot_size());
        let r = self.exchange(p, events, span, id, json, deadline, sink);
        // The datapath is done with the slot once it answered, or gone.
        let _ = p.slots.release(slot);
        r
    }

    #[allow(clippy::too_many_arguments)] // one request's whole context
    fn exchange(
        &self,
        p: &mut Pairing,
        events: &mut std::collections::VecDeque<serde_json::Value>,
        span: SlotSpan,
        id: u64,
        json: &[u8],
        deadline: Instant,
        sink: &mut Option<&mut Vec<u8>>,
    ) -> Result<Option<serde_json::Value>, DpError> {
        let mut buf = Vec::with_capacity(json.len() + 32);
        ops::encode_request(&mut buf, span, json);
        if buf.len() > p.ep.max_payload() {
            return Err(DpError::BadAnswer(format!(
                "request of {} bytes exceeds the ring's {} byte messages",
                buf.len(),
                p.ep.max_payload()
            )));
        }
        match p.ep.send(KIND_OP, id, &buf) {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, "ring send failed; pairing again");
                return Ok(None);
            }
        }
        loop {
            // Drain whatever arrived; answers to requests of an abandoned attempt are dropped.
            loop {
                let r = match p.ep.try_recv() {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(RecvError::Ring(e)) => {
                        // A broken ring stays broken: pair again rather than spin on it.
                        tracing::warn!(error = %e, "the datapath broke a ring; pairing again");
                        return Ok(None);
                    }
                    Err(e) => {
                        // One bad message, consumed: the answer may still come.
                        tracing::warn!(error = %e, "bad message from the datapath");
                        continue;
                    }
                };
                let h = r.frame.header;
                if r.lane == Lane::Events {
                    if h.kind == KIND_EVENT
                        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(r.frame.payload)
                    {
                        if events.len() == MAX_EVENTS {
                            events.pop_front();
                        }
                        events.push_back(v);
                    }
                    continue;
                }
                if h.request_id != id {
                    continue;
                }
                if h.kind == KIND_REJECT {
                    let why = Reject::decode(r.frame.payload)
                        .map(|j| format!("{:?} ({})", j.code, j.detail))
                        .unwrap_or_else(|e| e.to_string());
                    return Err(DpError::BadAnswer(format!(
                        "the datapath rejected the request: {why}"
                    )));
                }
                let json = match ops::decode_answer(r.frame.payload) {
                    Ok(Answer::Inline(j)) => j.to_vec(),
                    Ok(Answer::InSlot(n)) => {
                        let mut v = vec![0u8; n as usize];
                        p.ep.slots()
                            .read(SlotSpan { len: n, ..span }, &mut v)
                            .map_err(|e| DpError::BadAnswer(e.to_string()))?;
                        v
                    }
                    Err(e) => return Err(DpError::BadAnswer(e.to_string())),
                };
                let v = parse_answer(&json)?;
                // Data the datapath left in the slot (volume_read).
                if let Some(out) = sink.as_mut() {
                    let n = v["len"]
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            DpError::BadAnswer("a data answer without its length".into())
                        })?;
                    out.resize(n as usize, 0);
                    p.ep.slots()
                        .read(SlotSpan { len: n, ..span }, out)
                        .map_err(|e| DpError::BadAnswer(e.to_string()))?;
                }
                return Ok(Some(v));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DpError::Unreachable(format!(
                    "{}: no answer within {:?}",
                    self.socket.display(),
                    self.timeout
                )));
            }
            match p.ep.wait(Some(left.min(Duration::from_millis(200)))) {
                Ok(_) => {}
                Err(WaitError::PeerGone) => return Ok(None),
                Err(e) => {
                    tracing::warn!(error = %e, "ring wait failed; pairing again");
                    return Ok(None);
                }
            }
        }
    }
}

impl RingDatapath {
    /// Reads `len` bytes of volume `<lvs>/<name>` at `offset` into `out`, through a data slot
    /// (`len` at most the slot size, 1 MiB by default).
    ///
    /// # Errors
    /// As [`Datapath::call`].
    pub fn read_volume(
        &self,
        lvs: &str,
        name: &str,
        offset: u64,
        len: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), DpError> {
        let req = serde_json::json!({"op": "volume_read", "lvs": lvs, "name": name, "offset": offset, "len": len});
        self.request(&req, Some(out)).map(|_| ())
    }

    /// The largest `volume_read`.
    pub fn slot_size(&self) -> u32 {
        self.geometry.slot_size
    }

    fn request(
        &self,
        request: &serde_json::Value,
        mut sink: Option<&mut Vec<u8>>,
    ) -> Result<serde_json::Value, DpError> {
        let json = request.to_string();
        let deadline = Instant::now() + self.timeout;
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = st.ids.next_id();
        // Two pairings at most: the current one, and one more if the datapath went away with
        // the request in flight and is already back (then the request is sent again, with the
        // same id). Otherwise the caller hears of it at once, not after the deadline.
        for _ in 0..2 {
            self.pair(&mut st)?;
            let State {
                pairing, events, ..
            } = &mut *st;
            let Some(p) = pairing.as_mut() else {
                break;
            };
            match self.attempt(p, events, id, json.as_bytes(), deadline, &mut sink) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {
                    tracing::warn!(
                        request = id,
                        "the datapath went away with a request in flight"
                    );
                    st.pairing = None;
                }
                Err(e) => {
                    if matches!(e, DpError::Unreachable(_)) {
                        // A hung peer: start afresh next time.
                        st.pairing = None;
                    }
                    return Err(e);
                }
            }
        }
        Err(DpError::Unreachable(format!(
            "{}: the datapath went away with the request in flight",
            self.socket.display()
        )))
    }
}

impl Datapath for RingDatapath {
    fn call(&self, request: &serde_json::Value) -> Result<serde_json::Value, DpError> {
        self.request(request, None)
    }

    fn take_events(&self) -> Vec<serde_json::Value> {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.events.drain(..).collect()
    }
}
