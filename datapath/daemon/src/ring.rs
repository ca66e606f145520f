//! The control rings, datapath side: a bootstrap socket the control plane connects to, then
//! its requests served from the shared-memory rings (see `basalt_ring` and `docs/ring.md`).
//!
//! One control plane at a time. Each request is a JSON operation ([`basalt_ring::ops`]),
//! carried out by the same dispatcher as the admin socket ([`crate::admin::dispatch`]), and
//! answered inline or, when large, through the data slot control lent with it. A malformed
//! message, one from an old epoch, or one of an unknown kind is answered with a reject; the
//! ring goes on. When control goes away (its socket hangs up), the datapath waits for the
//! next one, which brings a fresh region and the next epoch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use basalt_ring::msg::{Reject, RejectCode};
use basalt_ring::ops::{self, KIND_EVENT, KIND_OP};
use basalt_ring::{BootstrapError, Endpoint, RecvError, WaitError, bootstrap};

use crate::DatapathError;
use crate::exports::Exports;

/// How often the serving thread looks at the stop flag while idle.
const TICK: Duration = Duration::from_millis(200);

/// The ring server; stops and removes its socket when dropped.
#[derive(Debug)]
pub struct RingServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the bootstrap socket at `path` and serves control planes on a thread of its own.
///
/// # Errors
/// The socket cannot be bound.
pub fn start(path: &Path, exports: Arc<Exports>) -> Result<RingServer, DatapathError> {
    if path.exists() {
        // A live datapath accepts; a stale socket file refuses.
        if bootstrap::connect(path).is_ok() {
            return Err(DatapathError::Config(format!(
                "ring socket {} is in use by a running datapath",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = bootstrap::Listener::bind(path).map_err(|e| {
        DatapathError::Config(format!("cannot bind ring socket {}: {e}", path.display()))
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::Builder::new()
        .name("basalt-ring".into())
        .spawn(move || {
            while !s.load(Ordering::Acquire) {
                let sock = match listener.accept(TICK) {
                    Ok(sock) => sock,
                    Err(BootstrapError::Timeout { .. }) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "ring socket accept failed");
                        std::thread::sleep(TICK);
                        continue;
                    }
                };
                match Endpoint::attach(sock, Duration::from_secs(5)) {
                    Ok(ep) => {
                        tracing::info!(epoch = %ep.epoch(), control_pid = ep.peer_pid(), "control plane attached to the rings");
                        serve(ep, &exports, &s);
                    }
                    Err(e) => tracing::warn!(error = %e, "refused a control plane's region"),
                }
            }
        })
        .map_err(|e| DatapathError::Config(format!("cannot start the ring thread: {e}")))?;
    tracing::info!(socket = %path.display(), "ring socket listening");
    Ok(RingServer {
        path: path.to_owned(),
        stop,
        thread: Some(thread),
    })
}

/// A store is "nearly full" below this share of free space, and clear again above the next.
const NEARLY_FULL: f64 = 0.10;
const CLEAR: f64 = 0.15;

/// What the datapath has told this pairing's control plane, so each condition is reported
/// once when it starts and once when it ends.
#[derive(Debug, Default)]
struct Told {
    nearly_full: std::collections::BTreeSet<String>,
    failed: std::collections::BTreeSet<String>,
}

/// Sends the events due: a store that crossed the nearly-full mark either way, or stopped
/// after an I/O error. An event the ring has no room for is sent at a later look.
fn send_events(ep: &mut Endpoint, ex: &Exports, told: &mut Told) {
    for s in ex.stores() {
        let name = s.name().to_owned();
        if let Some(why) = s.failure()
            && !told.failed.contains(&name)
        {
            let ev = serde_json::json!({"event": "store_failed", "lvs": name, "error": why});
            if ep.send_event(KIND_EVENT, ev.to_string().as_bytes()).is_ok() {
                told.failed.insert(name.clone());
            }
        }
        let sp = s.space();
        if sp.total_clusters == 0 {
            continue;
        }
        #[allow(clippy::cast_precision_loss)] // a ratio
        let free = sp.free_clusters as f64 / sp.total_clusters as f64;
        let was = told.nearly_full.contains(&name);
        let event = if !was && free < NEARLY_FULL {
            "store_nearly_full"
        } else if was && free > CLEAR {
            "store_space_ok"
        } else {
            continue;
        };
        let ev = serde_json::json!({"event": event, "lvs": name,
            "free_bytes": sp.free_clusters * sp.cluster_size,
            "total_bytes": sp.total_clusters * sp.cluster_size});
        if ep.send_event(KIND_EVENT, ev.to_string().as_bytes()).is_ok() {
            tracing::info!(store = %name, event, "event sent to the control plane");
            if was {
                told.nearly_full.remove(&name);
            } else {
                told.nearly_full.insert(name);
            }
        }
    }
}

fn serve(mut ep: Endpoint, ex: &Exports, stop: &AtomicBool) {
    let mut out = Vec::with_capacity(4096);
    let mut answer_json = Vec::new();
    let mut told = Told::default();
    let mut looked = std::time::Instant::now() - TICK;
    while !stop.load(Ordering::Acquire) {
        // Once a tick, not once per request batch: it reads every store's space.
        if looked.elapsed() >= TICK {
            send_events(&mut ep, ex, &mut told);
            looked = std::time::Instant::now();
        }
        match ep.wait(Some(TICK)) {
            Ok(_) => {}
            Err(WaitError::PeerGone) => {
                tracing::info!(epoch = %ep.epoch(), "control plane left the rings");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "ring broken; waiting for a new pairing");
                return;
            }
        }
        loop {
            // Copy out what is needed, so the endpoint is free to answer.
            let (kind, id, payload) = match ep.try_recv() {
                Ok(Some(r)) => (
                    r.frame.header.kind,
                    r.frame.header.request_id,
                    r.frame.payload.to_vec(),
                ),
                Ok(None) => break,
                Err(RecvError::Malformed { request_id, source }) => {
                    tracing::warn!(error = %source, "malformed ring message");
                    if let Some(id) = request_id {
                        let _ = ep.reject(
                            id,
                            Reject {
                                code: RejectCode::Malformed,
                                detail: 0,
                            },
                        );
                    }
                    continue;
                }
                Err(RecvError::StaleEpoch {
                    request_id, found, ..
                }) => {
                    let _ = ep.reject(
                        request_id,
                        Reject {
                            code: RejectCode::StaleEpoch,
                            detail: found,
                        },
                    );
                    continue;
                }
                Err(RecvError::Ring(e)) => {
                    tracing::warn!(error = %e, "ring broken; waiting for a new pairing");
                    return;
                }
            };
            if kind != KIND_OP {
                let _ = ep.reject(
                    id,
                    Reject {
                        code: RejectCode::UnknownKind,
                        detail: u64::from(kind),
                    },
                );
                continue;
            }
            let Ok((span, json)) = ops::decode_request(&payload) else {
                let _ = ep.reject(
                    id,
                    Reject {
                        code: RejectCode::BadPayload,
                        detail: 0,
                    },
                );
                continue;
            };
            let answer = match read_request(json) {
                // Volume data goes into the lent slot, not through JSON.
                Some(r) => read_into_slot(&ep, ex, &r, span),
                None => crate::admin::dispatch(json, ex),
            };
            answer_json.clear();
            answer_json.extend_from_slice(answer.to_string().as_bytes());
            // Inline when it fits the frame; otherwise into the lent slot.
            if answer_json.len() + 16 <= ep.max_payload() {
                ops::encode_inline(&mut out, &answer_json);
            } else {
                let fits = u32::try_from(answer_json.len())
                    .ok()
                    .filter(|n| *n <= span.len)
                    .map(|n| basalt_ring::SlotSpan { len: n, ..span });
                match fits.map(|s| (s, ep.slots().write(s, &answer_json))) {
                    Some((s, Ok(()))) => ops::encode_in_slot(&mut out, s.len),
                    _ => {
                        let msg = serde_json::json!({"ok": false, "code": "error",
                            "error": format!("the answer ({} bytes) does not fit the slot lent with the request", answer_json.len())});
                        ops::encode_inline(&mut out, msg.to_string().as_bytes());
                    }
                }
            }
            if let Err(e) = ep.send(KIND_OP, id, &out) {
                tracing::warn!(error = %e, "cannot answer on the ring");
                return;
            }
        }
    }
}

/// `{"op":"volume_read","lvs":...,"name":...,"offset":...,"len":...}`: only on the rings,
/// since the bytes travel in the data slot lent with the request.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadRequest {
    op: String,
    lvs: String,
    name: String,
    offset: u64,
    len: u32,
}

fn read_request(json: &[u8]) -> Option<ReadRequest> {
    // Cheap test first: most requests are not reads.
    if !json.windows(11).any(|w| w == b"volume_read") {
        return None;
    }
    serde_json::from_slice::<ReadRequest>(json)
        .ok()
        .filter(|r| r.op == "volume_read")
}

fn read_into_slot(
    ep: &Endpoint,
    ex: &Exports,
    r: &ReadRequest,
    span: basalt_ring::SlotSpan,
) -> serde_json::Value {
    if r.len > span.len {
        return serde_json::json!({"ok": false, "code": "invalid",
            "error": format!("read of {} bytes does not fit the {}-byte slot lent with it", r.len, span.len)});
    }
    match ex.read_volume(&r.lvs, &r.name, r.offset, r.len as usize) {
        Ok(data) => match ep
            .slots()
            .write(basalt_ring::SlotSpan { len: r.len, ..span }, &data)
        {
            Ok(()) => serde_json::json!({"ok": true, "len": r.len}),
            Err(e) => serde_json::json!({"ok": false, "code": "invalid", "error": e.to_string()}),
        },
        Err(e) => serde_json::json!({"ok": false, "code": e.code(), "error": e.to_string()}),
    }
}
