//! Cross-process tests: the datapath is a child process (this test binary, re-run with an
//! environment variable) that is SIGKILLed with requests in flight, then replaced.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::msg::{FieldReader, FieldWriter, KIND_REJECT, Reject, RejectCode};
use crate::{
    Endpoint, Epoch, Geometry, Pending, RecvError, RequestError, RequestIds, RingGeometry,
    SlotPool, SlotSpan, WaitError, bootstrap,
};

const CHILD_SOCKET: &str = "BASALT_RING_TEST_SOCKET";
const CHILD_MODE: &str = "BASALT_RING_TEST_MODE";
const T: Duration = Duration::from_secs(10);

/// Echo: reply with the payload reversed.
const KIND_ECHO: u16 = 1;
/// Fill the slot span in the payload with the request id's low byte, reply empty.
const KIND_FILL: u16 = 2;

fn geometry() -> Geometry {
    Geometry {
        commands: RingGeometry {
            frames: 16,
            frame_size: 256,
        },
        completions: RingGeometry {
            frames: 16,
            frame_size: 256,
        },
        events: RingGeometry {
            frames: 4,
            frame_size: 128,
        },
        slot_size: 8192,
        slot_count: 4,
    }
}

/// The datapath child. A no-op unless started by the parent test below.
#[test]
fn datapath_child() {
    let Ok(path) = std::env::var(CHILD_SOCKET) else {
        return;
    };
    // "stall": answer only odd request ids, keep the even ones in flight.
    let stall = std::env::var(CHILD_MODE).is_ok_and(|m| m == "stall");
    let sock = bootstrap::connect(Path::new(&path)).expect("connect");
    let mut dp = Endpoint::attach(sock, T).expect("attach");
    loop {
        match dp.wait(Some(T)) {
            Ok(true) => {}
            Ok(false) | Err(WaitError::PeerGone) => std::process::exit(0),
            Err(e) => panic!("child wait: {e}"),
        }
        loop {
            let (kind, id, payload) = match dp.try_recv() {
                Ok(None) => break,
                Ok(Some(m)) => {
                    let h = m.frame.header;
                    (h.kind, h.request_id, m.frame.payload.to_vec())
                }
                Err(RecvError::StaleEpoch {
                    request_id, found, ..
                }) => {
                    dp.reject(
                        request_id,
                        Reject {
                            code: RejectCode::StaleEpoch,
                            detail: found,
                        },
                    )
                    .expect("reply");
                    continue;
                }
                Err(e) => panic!("child recv: {e}"),
            };
            if stall && id % 2 == 0 {
                continue;
            }
            match kind {
                KIND_ECHO => {
                    let reply: Vec<u8> = payload.iter().rev().copied().collect();
                    dp.send(kind, id, &reply).expect("reply");
                }
                KIND_FILL => {
                    let span = SlotSpan::decode(&mut FieldReader::new(&payload)).expect("span");
                    let fill = vec![id as u8; span.len as usize];
                    dp.slots().write(span, &fill).expect("span in range");
                    dp.send(kind, id, b"").expect("reply");
                }
                _ => dp
                    .reject(
                        id,
                        Reject {
                            code: RejectCode::UnknownKind,
                            detail: u64::from(kind),
                        },
                    )
                    .expect("reply"),
            }
        }
    }
}

struct Harness {
    dir: PathBuf,
    listener: bootstrap::Listener,
}

impl Harness {
    fn new(name: &str) -> Harness {
        let dir = std::env::temp_dir().join(format!("basalt-ring-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let listener = bootstrap::Listener::bind(&dir.join("ring.sock")).expect("bind");
        Harness { dir, listener }
    }

    fn spawn(&self, mode: &str, epoch: Epoch) -> (Child, Endpoint) {
        let exe = std::env::current_exe().expect("test binary");
        let child = Command::new(exe)
            .args([
                "--exact",
                "tests::datapath_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_SOCKET, self.listener.path())
            .env(CHILD_MODE, mode)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn child");
        let sock = self.listener.accept(T).expect("child connects");
        let ep = Endpoint::create(sock, &geometry(), epoch, T).expect("child attaches");
        assert_eq!(ep.peer_pid(), child.id());
        (child, ep)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn reap(mut child: Child) {
    let start = Instant::now();
    while start.elapsed() < T {
        if child.try_wait().expect("wait").is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    panic!("child did not exit after control hung up");
}

/// Waits for and checks completions until `pending` holds `left` requests.
fn collect(ep: &mut Endpoint, pending: &mut Pending<Vec<u8>>, left: usize) {
    let deadline = Instant::now() + T;
    while pending.len() > left {
        assert!(Instant::now() < deadline, "completions did not arrive");
        ep.wait(Some(T)).expect("peer alive");
        while let Some(m) = ep.try_recv().expect("well-formed") {
            let h = m.frame.header;
            let sent = pending.complete(h.request_id, h.epoch).expect("in flight");
            if h.kind == KIND_ECHO {
                let want: Vec<u8> = sent.iter().rev().copied().collect();
                assert_eq!(m.frame.payload, &want[..]);
            }
        }
    }
}

#[test]
fn killed_datapath_fails_in_flight_requests_and_a_new_one_takes_over() {
    let h = Harness::new("kill");
    let mut epoch = Epoch::FIRST;
    let (child, mut ep) = h.spawn("stall", epoch);
    let mut pending: Pending<Vec<u8>> = Pending::for_geometry(&geometry(), epoch);
    let mut ids = RequestIds::new();
    for _ in 0..8 {
        let id = ids.next_id();
        let payload = format!("request {id}").into_bytes();
        ep.send(KIND_ECHO, id, &payload).expect("room");
        pending.insert(id, payload, T).expect("room");
    }
    // The child answers the odd ids and sits on the even ones.
    collect(&mut ep, &mut pending, 4);

    let mut child = child;
    let killed = Instant::now();
    child.kill().expect("SIGKILL");
    loop {
        match ep.wait(Some(T)) {
            Err(WaitError::PeerGone) => break,
            Ok(_) => assert!(
                ep.try_recv().expect("ok").is_none(),
                "no answers from the dead"
            ),
            Err(e) => panic!("{e}"),
        }
        assert!(killed.elapsed() < T, "peer death not noticed");
    }
    let failed = pending.fail_all_peer_gone();
    let noticed = killed.elapsed();
    eprintln!("SIGKILLed datapath noticed, 4 requests failed, after {noticed:?}");
    assert!(noticed < Duration::from_secs(2), "took {noticed:?}");
    assert_eq!(
        failed.iter().map(|f| f.request_id).collect::<Vec<_>>(),
        [2, 4, 6, 8]
    );
    assert!(
        failed
            .iter()
            .all(|f| f.error == RequestError::PeerGone { epoch: 1 })
    );
    assert!(matches!(
        ep.send(KIND_ECHO, 99, b""),
        Err(crate::SendError::PeerGone)
    ));
    child.wait().expect("reaped");
    drop(ep);

    // A new datapath, a new region, the next epoch; the failed requests are re-driven with
    // their ids.
    epoch = epoch.next();
    pending.set_epoch(epoch);
    let (child, mut ep) = h.spawn("echo", epoch);
    assert_eq!(ep.epoch(), Epoch(2));
    for f in failed {
        ep.send(KIND_ECHO, f.request_id, &f.ctx).expect("room");
        pending.insert(f.request_id, f.ctx, T).expect("room");
    }
    collect(&mut ep, &mut pending, 0);

    // A command from the old epoch is refused, with a reply naming it.
    let stale = crate::Header {
        kind: KIND_ECHO,
        flags: 0,
        request_id: 50,
        epoch: 1,
    };
    ep.send_header(stale, b"old").expect("room");
    ep.wait(Some(T)).expect("alive");
    let m = ep.try_recv().expect("ok").expect("a reply");
    assert_eq!(
        (m.frame.header.kind, m.frame.header.request_id),
        (KIND_REJECT, 50)
    );
    assert_eq!(
        Reject::decode(m.frame.payload),
        Ok(Reject {
            code: RejectCode::StaleEpoch,
            detail: 1
        })
    );

    // Bulk bytes through a lent slot.
    let mut pool = SlotPool::new(ep.slots().count());
    let slot = pool.alloc().expect("free slot");
    let span = SlotSpan {
        slot,
        offset: 100,
        len: 5000,
    };
    let mut payload = Vec::new();
    span.encode(&mut FieldWriter::new(&mut payload));
    let id = ids.next_id();
    ep.send(KIND_FILL, id, &payload).expect("room");
    pending.insert(id, payload, T).expect("room");
    collect(&mut ep, &mut pending, 0);
    let mut out = vec![0u8; 5000];
    ep.slots().read(span, &mut out).expect("in range");
    assert!(out.iter().all(|&b| b == id as u8));
    pool.release(slot).expect("lent");

    // Control goes away: the child notices and exits.
    drop(ep);
    reap(child);
}
