//! Interoperability checks against libiscsi's tools (`iscsi-test-cu`, `iscsi-ls`, `iscsi-inq`),
//! over loopback TCP. Ignored by default (they need the tools installed); run with
//! `cargo test -p basalt-iscsi -- --ignored interop --nocapture`.
//!
//! The server here is a test fixture, not the real driver: one blocking thread per connection
//! around [`Connection`], serving a small RAM disk through a minimal SCSI emulation (enough
//! commands for the tools' setup and the iSCSI test family).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use basalt_scsi::Residual;

use super::testkit::{TestDir, creds, directory};
use super::{ConnConfig, Connection, Event, Limits, Task, TmfResponse, fixed_sense};
use crate::session::SessionTable;
use crate::{Access, Portal, TargetNode};

const BLOCK: usize = 512;
const BLOCKS: usize = 8192;

#[derive(Debug)]
struct Disk {
    data: Mutex<Vec<u8>>,
}

fn be16(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 2)
        .map_or(0, |x| u64::from(u16::from_be_bytes([x[0], x[1]])))
}

fn be32(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 4).map_or(0, |x| {
        u64::from(u32::from_be_bytes([x[0], x[1], x[2], x[3]]))
    })
}

fn be64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |x| {
        let mut a = [0u8; 8];
        a.copy_from_slice(x);
        u64::from_be_bytes(a)
    })
}

struct Outcome {
    status: u8,
    sense: Vec<u8>,
    data: Vec<u8>,
    residual: Residual,
}

fn check(key: u8, asc: u8, ascq: u8) -> Outcome {
    Outcome {
        status: 2,
        sense: fixed_sense(key, asc, ascq).to_vec(),
        data: Vec::new(),
        residual: Residual::None,
    }
}

/// GOOD with `data` of which the command wanted `wanted` bytes, against EDTL.
fn good(mut data: Vec<u8>, wanted: usize, edtl: usize) -> Outcome {
    data.truncate(wanted.min(edtl));
    let residual = if wanted > edtl {
        Residual::Overflow((wanted - edtl) as u32)
    } else if wanted < edtl {
        Residual::Underflow((edtl - wanted) as u32)
    } else {
        Residual::None
    };
    Outcome {
        status: 0,
        sense: Vec::new(),
        data,
        residual,
    }
}

impl Disk {
    fn execute(&self, t: &Task) -> Outcome {
        let c = &t.cdb;
        let edtl = t.expected_len as usize;
        let op = c.first().copied().unwrap_or(0xff);
        if op == 0xa0 {
            let mut d = vec![0, 0, 0, 8, 0, 0, 0, 0];
            d.extend_from_slice(&[0; 8]);
            let alloc = be32(c, 6) as usize;
            return good(d, alloc.min(16), edtl);
        }
        if t.lun != 0 {
            return check(0x05, 0x25, 0x00);
        }
        match op {
            0x00 | 0x35 | 0x91 => good(Vec::new(), 0, edtl),
            0x12 => {
                let alloc = be16(c, 3) as usize;
                let d = if c[1] & 1 == 0 {
                    let mut d = vec![0, 0, 6, 2, 31, 0, 0, 0x02];
                    d.extend_from_slice(b"BASALT  RAMDISK         0001");
                    d
                } else {
                    match c[2] {
                        0x00 => vec![0, 0, 0, 3, 0x00, 0x80, 0x83],
                        0x80 => {
                            let mut d = vec![0, 0x80, 0, 8];
                            d.extend_from_slice(b"SERIAL01");
                            d
                        }
                        0x83 => {
                            let mut d = vec![0, 0x83, 0, 16, 2, 1, 0, 12];
                            d.extend_from_slice(b"BASALT  ram0");
                            d
                        }
                        _ => return check(0x05, 0x24, 0x00),
                    }
                };
                let n = d.len().min(alloc);
                good(d, n, edtl)
            }
            0x1a => good(vec![3, 0, 0, 0], (c[4] as usize).min(4), edtl),
            0x25 => {
                let mut d = ((BLOCKS - 1) as u32).to_be_bytes().to_vec();
                d.extend_from_slice(&(BLOCK as u32).to_be_bytes());
                good(d, 8, edtl)
            }
            0x9e if c[1] & 0x1f == 0x10 => {
                let mut d = ((BLOCKS - 1) as u64).to_be_bytes().to_vec();
                d.extend_from_slice(&(BLOCK as u32).to_be_bytes());
                d.resize(32, 0);
                let alloc = be32(c, 10) as usize;
                good(d, alloc.min(32), edtl)
            }
            0x08 | 0x28 | 0xa8 | 0x88 | 0x0a | 0x2a | 0xaa | 0x8a => {
                let (lba, len) = match op {
                    0x08 | 0x0a => {
                        let lba = (be32(c, 0) & 0x1f_ffff) as usize;
                        let n = c[4] as usize;
                        (lba, if n == 0 { 256 } else { n })
                    }
                    0x28 | 0x2a => (be32(c, 2) as usize, be16(c, 7) as usize),
                    0xa8 | 0xaa => (be32(c, 2) as usize, be32(c, 6) as usize),
                    _ => (be64(c, 2) as usize, be32(c, 10) as usize),
                };
                if lba.saturating_add(len) > BLOCKS {
                    return check(0x05, 0x21, 0x00);
                }
                let bytes = len * BLOCK;
                let mut disk = self.data.lock().expect("disk");
                let range = lba * BLOCK..lba * BLOCK + bytes.min(edtl);
                if matches!(op, 0x08 | 0x28 | 0xa8 | 0x88) {
                    good(disk[range].to_vec(), bytes, edtl)
                } else {
                    let n = range.len().min(t.data_out.len());
                    disk[range.start..range.start + n].copy_from_slice(&t.data_out[..n]);
                    good(Vec::new(), bytes, edtl)
                }
            }
            _ => check(0x05, 0x20, 0x00),
        }
    }
}

fn handle(mut stream: TcpStream, cfg: ConnConfig, disk: Arc<Disk>) {
    let peer = stream.peer_addr().expect("peer");
    stream
        .set_read_timeout(Some(Duration::from_millis(2)))
        .expect("timeout");
    let _ = stream.set_nodelay(true);
    let mut conn = Connection::new(cfg, peer, Instant::now());
    let mut input = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut out = Vec::new();
    let mut closing = false;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => conn.connection_lost(Instant::now()),
            Ok(n) => input.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => conn.connection_lost(Instant::now()),
        }
        let now = Instant::now();
        let used = conn.receive(&input, now);
        input.drain(..used);
        conn.tick(now);
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Execute(t) => {
                    let o = disk.execute(&t);
                    conn.complete(t.id, o.status, &o.sense, &[&o.data], o.residual);
                }
                Event::TaskManagement { id, .. } => conn.tmf_complete(id, TmfResponse::Complete),
                Event::Close => closing = true,
                _ => {}
            }
        }
        out.clear();
        conn.transmit(&mut out);
        if !out.is_empty() && stream.write_all(&out).is_err() {
            conn.connection_lost(Instant::now());
            closing = true;
        }
        if closing {
            let _ = stream.flush();
            return;
        }
    }
}

struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(dir: Arc<TestDir>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    let cfg = ConnConfig {
        portal: Portal {
            tpgt: 1,
            addresses: vec![addr],
        },
        directory: dir,
        sessions: Arc::new(SessionTable::new()),
        limits: Limits::default(),
    };
    let disk = Arc::new(Disk {
        data: Mutex::new(vec![0u8; BLOCK * BLOCKS]),
    });
    let s = Arc::clone(&stop);
    thread::spawn(move || {
        for stream in listener.incoming() {
            if s.load(Ordering::Acquire) {
                return;
            }
            let Ok(stream) = stream else { continue };
            let cfg = cfg.clone();
            let disk = Arc::clone(&disk);
            thread::spawn(move || handle(stream, cfg, disk));
        }
    });
    Server {
        port: addr.port(),
        stop,
    }
}

const IQN: &str = "iqn.2026-11.org.basalt:interop";

fn node(name: &str, access: Access) -> Arc<TargetNode> {
    Arc::new(TargetNode {
        name: name.into(),
        alias: None,
        luns: vec![0],
        access,
    })
}

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd).args(args).output().expect("run tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// CUnit's "tests" summary line: (run, passed, failed).
fn cunit_tests(output: &str) -> (u32, u32, u32) {
    let line = output
        .lines()
        .find(|l| l.trim_start().starts_with("tests"))
        .unwrap_or_default();
    let n: Vec<u32> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (
        n.get(1).copied().unwrap_or(0),
        n.get(2).copied().unwrap_or(0),
        n.get(3).copied().unwrap_or(0),
    )
}

#[test]
#[ignore = "needs libiscsi's iscsi-test-cu"]
fn interop_iscsi_test_cu() {
    let server = serve(directory(vec![node(IQN, Access::default())]));
    let url = format!("iscsi://127.0.0.1:{}/{IQN}/0", server.port);
    let mpath = url.clone();
    for (test, multipath) in [
        ("iSCSI", false),
        ("SCSI.TestUnitReady", false),
        ("SCSI.Read10.Simple", false),
        ("SCSI.Read10.BeyondEol", false),
        ("SCSI.Read10.Async", false),
        ("SCSI.Read16.Simple", false),
        ("SCSI.Write10.Simple", false),
        ("SCSI.Write10.BeyondEol", false),
        ("SCSI.Write10.Async", false),
        ("SCSI.Write16.Simple", false),
        ("ALL.MultipathIO.Simple", true),
    ] {
        let mut args = vec!["-d", "-s", "--test", test, url.as_str()];
        if multipath {
            args.push(mpath.as_str());
        }
        let (_, out) = run("iscsi-test-cu", &args);
        println!("== {test}\n{out}");
        let (ran, passed, failed) = cunit_tests(&out);
        assert!(ran > 0, "{test}: nothing ran");
        assert_eq!(failed, 0, "{test}: {passed}/{ran} passed");
    }
    // Header digests.
    let url = format!("{url}?header_digest=crc32c");
    let (_, out) = run(
        "iscsi-test-cu",
        &["-d", "-s", "--test", "SCSI.Write10.Simple", &url],
    );
    let (ran, _, failed) = cunit_tests(&out);
    assert!(ran > 0 && failed == 0, "{out}");
}

#[test]
#[ignore = "needs libiscsi's iscsi-ls and iscsi-inq"]
fn interop_discovery_and_chap() {
    let open = node(IQN, Access::default());
    let hidden = node(
        "iqn.2026-11.org.basalt:hidden",
        Access {
            initiators: Some(vec!["iqn.nobody".into()]),
            ..Access::default()
        },
    );
    let chap = node(
        "iqn.2026-11.org.basalt:chap",
        Access {
            initiators: None,
            chap: Some(creds("alice", "alice-secret-12")),
            mutual_chap: Some(creds("tgt", "target-secret-12")),
        },
    );
    let server = serve(directory(vec![open, hidden, chap]));
    let port = server.port;
    let (ok, out) = run("iscsi-ls", &[&format!("iscsi://127.0.0.1:{port}")]);
    println!("{out}");
    assert!(ok, "{out}");
    assert!(out.contains(IQN) && out.contains("iqn.2026-11.org.basalt:chap"));
    assert!(!out.contains("hidden"));
    assert!(out.contains(&format!("127.0.0.1:{port},1")));

    let base = format!("127.0.0.1:{port}/iqn.2026-11.org.basalt:chap/0");
    let (ok, out) = run(
        "iscsi-inq",
        &[&format!("iscsi://alice%alice-secret-12@{base}")],
    );
    println!("{out}");
    assert!(ok && out.contains("BASALT"), "one-way CHAP: {out}");
    let (ok, out) = run(
        "iscsi-inq",
        &[&format!(
            "iscsi://alice%alice-secret-12@{base}?target_user=tgt&target_password=target-secret-12"
        )],
    );
    assert!(ok && out.contains("BASALT"), "mutual CHAP: {out}");
    let (ok, out) = run(
        "iscsi-inq",
        &[&format!(
            "iscsi://alice%alice-secret-12@{base}?target_user=tgt&target_password=wrong-secret-1"
        )],
    );
    assert!(
        !ok,
        "the initiator must refuse a wrong target response: {out}"
    );
    let (ok, out) = run(
        "iscsi-inq",
        &[&format!("iscsi://alice%wrong-secret-12@{base}")],
    );
    assert!(!ok, "wrong secret: {out}");
    let (ok, out) = run("iscsi-inq", &[&format!("iscsi://{base}")]);
    assert!(!ok, "no CHAP: {out}");
}
