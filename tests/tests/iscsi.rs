//! The iSCSI target against real initiators: libiscsi's conformance suite (`iscsi-test-cu`)
//! and QEMU's iSCSI block driver (`qemu-img`), on a running `basalt datapath`.
//!
//! These need `iscsi-test-cu` and `qemu-img` with its iscsi driver (scripts/install-test-deps.sh
//! installs them); without them a test says so on stderr and passes, so a developer machine
//! without the packages still runs the rest.
#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test crate

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use basalt_tests::{Daemon, bin};
use rustix::process::Signal;

const IQN: &str = "iqn.2026-11.org.basalt";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A datapath serving iSCSI on a free loopback port: a raw file LU, a volume LU, a CHAP target
/// and an allow-listed target.
struct Target {
    daemon: Daemon,
    port: u16,
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

fn sparse(path: &Path, len: u64) {
    std::fs::File::create(path)
        .expect("create")
        .set_len(len)
        .expect("size");
}

fn start_target() -> Target {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_owned();
    let port = free_port();
    sparse(&dir.join("disk0.img"), 1 << 30);
    sparse(&dir.join("disk1.img"), 256 << 20);
    sparse(&dir.join("disk2.img"), 64 << 20);
    sparse(&dir.join("pool.img"), 2 << 30);
    let conf = format!(
        r#"[engine]
cores = 2
pin = false

[[bdev]]
module = "uring"
name = "disk0"
path = "{d}/disk0.img"

[[bdev]]
module = "uring"
name = "disk1"
path = "{d}/disk1.img"

[[bdev]]
module = "uring"
name = "disk2"
path = "{d}/disk2.img"

[[bdev]]
module = "uring"
name = "pool0"
path = "{d}/pool.img"

[[lvs]]
bdev = "pool0"
name = "pool"
create = true

[[volume]]
lvs = "pool"
name = "vol0"
size = "1G"

[iscsi]
listen = ["127.0.0.1:{port}"]

[[iscsi.target]]
name = "{IQN}:disk0"
[[iscsi.target.lun]]
lun = 0
bdev = "disk0"

[[iscsi.target]]
name = "{IQN}:vol0"
[[iscsi.target.lun]]
lun = 0
volume = "pool/vol0"

[[iscsi.target]]
name = "{IQN}:chap"
chap = {{ user = "alice", secret = "alice-secret-42" }}
[[iscsi.target.lun]]
lun = 0
bdev = "disk1"

[[iscsi.target]]
name = "{IQN}:acl"
initiators = ["iqn.2026-11.test:allowed"]

[[iscsi.target]]
name = "{IQN}:ro"
[[iscsi.target.lun]]
lun = 0
bdev = "disk2"
read_only = true

[admin]
socket = "{d}/admin.sock"
"#,
        d = dir.display()
    );
    let path = dir.join("datapath.toml");
    std::fs::write(&path, conf).expect("config");
    let mut cmd = Command::new(bin("basalt"));
    cmd.args(["datapath", "--config"]).arg(&path);
    let mut daemon = Daemon::spawn(cmd);
    daemon.wait_for("iSCSI portal up", Duration::from_secs(60));
    Target {
        daemon,
        port,
        _dir: tmp,
        dir,
    }
}

impl Target {
    fn url(&self, target: &str, lun: u32) -> String {
        format!("iscsi://127.0.0.1:{}/{IQN}:{target}/{lun}", self.port)
    }

    fn stop(mut self) {
        let (code, log) = self.daemon.stop(Signal::TERM);
        assert_eq!(code, Some(0), "clean exit; log:\n{}", log.join("\n"));
    }
}

/// One `iscsi-test-cu` run: the tests that failed, and the summary line of tests.
struct SuiteRun {
    failed: Vec<String>,
    skipped: Vec<String>,
    summary: String,
    output: String,
}

fn run_suite(args: &[&str], urls: &[String]) -> SuiteRun {
    let out = Command::new("iscsi-test-cu")
        .args(args)
        .args(urls)
        .output()
        .expect("iscsi-test-cu runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // CUnit's basic mode prints "Suite: X", then "  Test: Y ..." followed by the test's own
    // messages ("[FAILED] ..." and "[SKIPPED] ..." lines are the test's commentary) and a final
    // "passed" or "FAILED" token.
    let mut suite = String::new();
    let mut test = String::new();
    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    let outcome = |suite: &str, test: &str, line: &str, failed: &mut Vec<String>| {
        let t = line.trim_end();
        let verdict = t
            .strip_suffix("FAILED")
            .is_some_and(|head| !head.ends_with('['));
        let name = format!("{suite}.{test}");
        if verdict && !test.is_empty() && failed.last() != Some(&name) {
            failed.push(name);
        }
    };
    for line in text.lines() {
        let t = line.trim();
        if let Some(s) = t.strip_prefix("Suite: ") {
            suite = s.trim().to_owned();
            test.clear();
            continue;
        }
        let body = if let Some(rest) = t.strip_prefix("Test: ") {
            test = rest.split("...").next().unwrap_or(rest).trim().to_owned();
            rest.split_once("...").map_or("", |(_, b)| b)
        } else {
            t
        };
        if let Some((_, why)) = body.split_once("[SKIPPED]") {
            skipped.push(format!("{suite}.{test}: {}", why.trim()));
        }
        outcome(&suite, &test, body, &mut failed);
    }
    let summary = text
        .lines()
        .find(|l| l.trim_start().starts_with("tests "))
        .unwrap_or("")
        .trim()
        .to_owned();
    SuiteRun {
        failed,
        skipped,
        summary,
        output: text,
    }
}

/// Tests known to fail today, each with the reason; the suite must fail nothing else. The
/// list only shrinks.
fn known_failures() -> Vec<String> {
    let text = include_str!("iscsi-known-failures.txt");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap_or(l).to_owned())
        .collect()
}

fn check_suite(name: &str, run: &SuiteRun) {
    eprintln!("iscsi-test-cu {name}: {}", run.summary);
    assert!(
        !run.summary.is_empty(),
        "no CUnit summary from iscsi-test-cu {name}:\n{}",
        run.output
    );
    let known = known_failures();
    let unexpected: Vec<&String> = run
        .failed
        .iter()
        .filter(|f| !known.iter().any(|k| f.ends_with(k.as_str())))
        .collect();
    for f in &run.failed {
        eprintln!("  failed: {f}");
    }
    for s in &run.skipped {
        eprintln!("  skipped: {s}");
    }
    assert!(
        unexpected.is_empty(),
        "iscsi-test-cu {name}: unexpected failures {unexpected:?}\n{}",
        run.output
    );
}

#[test]
fn libiscsi_conformance_suite() {
    if !have("iscsi-test-cu") {
        eprintln!("SKIPPED: iscsi-test-cu is not installed (scripts/install-test-deps.sh)");
        return;
    }
    let t = start_target();
    // The SCSI and iSCSI families on a raw file LU ...
    let url = t.url("disk0", 0);
    for family in ["SCSI", "iSCSI"] {
        let run = run_suite(&["-d", "-S", "-t", family], std::slice::from_ref(&url));
        check_suite(&format!("{family} (raw file)"), &run);
    }
    // The tests that need a write-protected LU (they skip on a writable one).
    let run = run_suite(&["-d", "-t", "SCSI.ReadOnly"], &[t.url("ro", 0)]);
    check_suite("SCSI.ReadOnly (read-only LU)", &run);
    assert!(
        run.skipped.is_empty(),
        "the read-only tests ran: {:?}",
        run.skipped
    );
    // The sanitize tests again on a volume (a thin LU: BLOCK ERASE is offered there, not on a
    // raw file), one URL, with -S.
    let run = run_suite(&["-d", "-S", "-t", "SCSI.Sanitize"], &[t.url("vol0", 0)]);
    check_suite("SCSI.Sanitize (volume)", &run);
    // ... and ALL (every test of both) on a volume, with a second URL so that the multipath
    // tests (two sessions on one LU) run too. Without -S here: with two URLs, libiscsi
    // 1.19.0's Sanitize.Reservations leaves the second session's RESERVE(6) in place (its
    // second session outlives the test), so the next sanitize test meets a RESERVATION
    // CONFLICT on any conforming target. The sanitize tests ran with -S above.
    let url = t.url("vol0", 0);
    let run = run_suite(&["-d", "-t", "ALL"], &[url.clone(), url]);
    check_suite("ALL multipath (volume)", &run);
    t.stop();
}

fn qemu_img(args: &[&str]) -> (bool, String) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// 256 MiB of random bytes through `qemu-img convert` into the target and `qemu-img compare`
/// back, on a volume, and on a CHAP target with the right secret.
#[test]
fn qemu_img_round_trips_a_random_image() {
    if !have("qemu-img") {
        eprintln!("SKIPPED: qemu-img is not installed (scripts/install-test-deps.sh)");
        return;
    }
    let t = start_target();
    let src = t.dir.join("src.raw");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&src).expect("create");
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..256 {
            for chunk in block.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            f.write_all(&block).expect("write");
        }
    }
    let src = src.to_str().expect("utf-8").to_owned();
    let chap_url = format!(
        "iscsi://alice%alice-secret-42@127.0.0.1:{}/{IQN}:chap/0",
        t.port
    );
    for url in [t.url("vol0", 0), chap_url] {
        let (ok, out) = qemu_img(&["convert", "-n", "-f", "raw", "-O", "raw", &src, &url]);
        assert!(ok, "convert into {url}: {out}");
        let (ok, out) = qemu_img(&["compare", "-f", "raw", "-F", "raw", &src, &url]);
        assert!(ok, "compare with {url}: {out}");
    }
    // The wrong secret is refused.
    let bad = format!(
        "iscsi://alice%not-the-secret@127.0.0.1:{}/{IQN}:chap/0",
        t.port
    );
    let (ok, out) = qemu_img(&["info", &bad]);
    assert!(!ok, "a wrong CHAP secret logged in: {out}");
    t.stop();
}

use basalt_tests::iscsi::{Initiator, LoginStatus};

fn addr(t: &Target) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], t.port))
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn refused(t: &Target, initiator: &str, target: &str, chap: Option<(&str, &str)>) -> LoginStatus {
    match Initiator::login(addr(t), initiator, target, chap, 1) {
        Ok(_) => panic!("{initiator} logged in to {target} with {chap:?}"),
        Err(Ok(status)) => status,
        Err(Err(e)) => panic!("login to {target} failed without a status: {e}"),
    }
}

#[test]
fn logins_are_refused_with_the_right_status() {
    let t = start_target();
    let chap = format!("{IQN}:chap");
    let acl = format!("{IQN}:acl");
    let ini = "iqn.2026-11.test:someone";
    // RFC 7143 §11.13.5: 0x0201 authentication failure, 0x0202 authorization failure,
    // 0x0203 not found.
    let auth = LoginStatus {
        class: 2,
        detail: 1,
    };
    assert_eq!(
        refused(&t, ini, &chap, Some(("alice", "wrong-secret-123"))),
        auth
    );
    assert_eq!(
        refused(&t, ini, &chap, Some(("mallory", "alice-secret-42"))),
        auth
    );
    assert_eq!(refused(&t, ini, &chap, None), auth, "CHAP is required");
    assert_eq!(
        refused(&t, ini, &acl, None),
        LoginStatus {
            class: 2,
            detail: 2
        }
    );
    assert_eq!(
        refused(&t, ini, &format!("{IQN}:nonexistent"), None),
        LoginStatus {
            class: 2,
            detail: 3
        }
    );
    // The right credentials and the allowed initiator get in.
    let mut s = Initiator::login(addr(&t), ini, &chap, Some(("alice", "alice-secret-42")), 1)
        .expect("CHAP login");
    assert_eq!(s.clear_unit_attentions(0).expect("TUR"), 0);
    s.logout().expect("logout");
    let s = Initiator::login(addr(&t), "iqn.2026-11.test:allowed", &acl, None, 1)
        .expect("allowed initiator");
    s.logout().expect("logout");
    t.stop();
}

/// Hostile PDUs on some connections while another session does verified I/O: each gets a
/// Reject, is ignored as RFC 7143 says, or loses its connection; the bystander never notices.
#[test]
fn hostile_pdus_leave_other_sessions_working() {
    use std::io::{Read, Write};
    let t = start_target();
    let target = format!("{IQN}:disk0");
    let mut good =
        Initiator::login(addr(&t), "iqn.2026-11.test:good", &target, None, 1).expect("login");
    good.clear_unit_attentions(0).expect("TUR");
    let mut round = 0u64;
    let mut check = |good: &mut Initiator| {
        round += 1;
        let data = pattern(round, 64 * 1024);
        let w = good.write16(0, 4096, &data).expect("write");
        assert_eq!(w.status, 0, "write: {:?}", w.sense);
        let r = good.read16(0, 4096, 128).expect("read");
        assert_eq!(r.status, 0);
        assert_eq!(r.data, data, "bystander's data");
    };
    check(&mut good);
    let hostile = |isid: u16| {
        Initiator::login(addr(&t), "iqn.2026-11.test:hostile", &target, None, isid).expect("login")
    };

    // 1. A truncated PDU, then the peer vanishes.
    let mut h = hostile(2);
    h.socket()
        .write_all(&[0x01, 0x81, 0, 0, 0, 0])
        .expect("send");
    drop(h);
    check(&mut good);

    // 2. A data segment longer than the target's MaxRecvDataSegmentLength: dropped.
    let mut h = hostile(3);
    let mut bhs = [0u8; 48];
    bhs[0] = 0x00; // NOP-Out
    bhs[1] = 0x80;
    bhs[5..8].copy_from_slice(&[0x10, 0, 0]); // 1 MiB
    bhs[16..20].copy_from_slice(&7u32.to_be_bytes());
    h.socket().write_all(&bhs).expect("send");
    let mut rest = Vec::new();
    h.socket()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let n = h.socket().read_to_end(&mut rest);
    assert!(n.is_ok() || n.is_err(), "the connection ends");
    check(&mut good);

    // 3. An unknown opcode: Reject (reason 0x04 protocol error or 0x05 command not supported).
    let mut h = hostile(4);
    let mut bhs = [0u8; 48];
    bhs[0] = 0x1c;
    bhs[1] = 0x80;
    h.socket().write_all(&bhs).expect("send");
    let (pdu, _) = basalt_tests::iscsi::read_pdu(h.socket()).expect("a reply");
    match pdu {
        basalt_iscsi::pdu::Bhs::Reject(r) => {
            assert!(matches!(r.reason, 0x04 | 0x05), "reason {:#x}", r.reason);
        }
        other => panic!("expected a Reject, got {other:?}"),
    }
    check(&mut good);

    // 4. A command beyond MaxCmdSN is ignored (RFC 7143 §4.2.2.1); the session goes on.
    let mut h = hostile(5);
    h.clear_unit_attentions(0).expect("TUR");
    let mut bhs = [0u8; 48];
    bhs[0] = 0x01;
    bhs[1] = 0x81;
    bhs[16..20].copy_from_slice(&99u32.to_be_bytes());
    let far = h.cmd_sn().wrapping_add(100_000);
    bhs[24..28].copy_from_slice(&far.to_be_bytes());
    h.socket().write_all(&bhs).expect("send");
    let r = h.read16(0, 0, 8).expect("a later command still works");
    assert_eq!(r.status, 0);
    h.logout().expect("logout");
    check(&mut good);
    good.logout().expect("logout");
    t.stop();
}

/// 64 sessions at once, each writing and verifying its own region of one volume.
#[test]
fn sixty_four_concurrent_sessions_do_verified_io() {
    let t = start_target();
    let a = addr(&t);
    let target = format!("{IQN}:vol0");
    let threads: Vec<_> = (0..64u16)
        .map(|i| {
            let target = target.clone();
            std::thread::spawn(move || {
                let name = format!("iqn.2026-11.test:host-{i}");
                let mut s = Initiator::login(a, &name, &target, None, i + 1)
                    .unwrap_or_else(|e| panic!("session {i}: {e:?}"));
                s.clear_unit_attentions(0).expect("TUR");
                let base = u64::from(i) * 2048; // 1 MiB apart
                for round in 0..8u64 {
                    let len = 4096 * (1 + (round as usize * 7 + usize::from(i)) % 32);
                    let data = pattern(u64::from(i) << 8 | round, len);
                    let lba = base + round * 128;
                    let w = s.write16(0, lba, &data).expect("write");
                    assert_eq!(w.status, 0, "session {i} write: {:?}", w.sense);
                    let r = s.read16(0, lba, (len / 512) as u32).expect("read");
                    assert_eq!(r.status, 0, "session {i} read: {:?}", r.sense);
                    assert!(r.data == data, "session {i} round {round}: data differs");
                }
                s.logout().expect("logout");
            })
        })
        .collect();
    for (i, th) in threads.into_iter().enumerate() {
        th.join().unwrap_or_else(|_| panic!("session {i} failed"));
    }
    t.stop();
}

/// Exports change on a running daemon: a target added over the admin socket is reachable, a
/// resize shows up as CAPACITY DATA HAS CHANGED and a new capacity, a removed target is gone.
#[test]
fn exports_change_live_through_the_admin_socket() {
    let t = start_target();
    let sock = t.dir.join("admin.sock");
    let admin = |json: &str| {
        let (code, out, err) = basalt_tests::run(
            "basalt",
            &["admin", "--socket", sock.to_str().expect("utf-8"), json],
        );
        (code, format!("{out}{err}"))
    };
    let (code, out) = admin(r#"{"op":"volume_create","lvs":"pool","name":"live","size":"64M"}"#);
    assert_eq!(code, Some(0), "{out}");
    let name = format!("{IQN}:live");
    let add = format!(
        r#"{{"op":"iscsi_target_add","name":"{name}","lun":[{{"lun":0,"volume":"pool/live"}}]}}"#
    );
    let (code, out) = admin(&add);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = admin(&add);
    assert_eq!(code, Some(1), "a second add is refused: {out}");
    assert!(out.contains("already exists"), "{out}");

    let mut s = Initiator::login(addr(&t), "iqn.2026-11.test:live", &name, None, 1)
        .expect("login to the new target");
    s.clear_unit_attentions(0).expect("TUR");
    let cap16 = |s: &mut Initiator| {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x9e;
        cdb[1] = 0x10;
        cdb[13] = 32;
        s.command(0, &cdb, 32, &[]).expect("READ CAPACITY(16)")
    };
    let c = cap16(&mut s);
    assert_eq!(c.status, 0);
    let last = u64::from_be_bytes(c.data[..8].try_into().expect("8 bytes"));
    assert_eq!((last + 1) * 512, 64 << 20);

    let (code, out) = admin(r#"{"op":"volume_resize","lvs":"pool","name":"live","size":"128M"}"#);
    assert_eq!(code, Some(0), "{out}");
    let c = cap16(&mut s);
    assert_eq!(c.status, 2, "CHECK CONDITION after a resize");
    assert_eq!(c.sense[2] & 0x0f, 6, "UNIT ATTENTION: {:?}", c.sense);
    assert_eq!(
        (c.sense[12], c.sense[13]),
        (0x2a, 0x09),
        "CAPACITY DATA HAS CHANGED"
    );
    let c = cap16(&mut s);
    assert_eq!(c.status, 0);
    let last = u64::from_be_bytes(c.data[..8].try_into().expect("8 bytes"));
    assert_eq!((last + 1) * 512, 128 << 20, "the new size");

    let (code, out) = admin(&format!(
        r#"{{"op":"iscsi_target_remove","name":"{name}"}}"#
    ));
    assert_eq!(code, Some(0), "{out}");
    drop(s);
    match Initiator::login(addr(&t), "iqn.2026-11.test:live", &name, None, 2) {
        Err(Ok(st)) => assert_eq!((st.class, st.detail), (2, 3), "not found"),
        other => panic!("login to a removed target: {:?}", other.map(|_| ())),
    }
    let (code, out) = admin(r#"{"op":"volume_delete","lvs":"pool","name":"live"}"#);
    assert_eq!(code, Some(0), "the volume is free once unexported: {out}");
    t.stop();
}
