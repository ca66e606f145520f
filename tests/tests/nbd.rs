//! NBD served by a running `basalt datapath`, reached with real clients and with the tests'
//! own NBD client (`basalt_tests::nbd`): QEMU (`qemu-img convert`/`compare`, `qemu-io`) over
//! `nbd://`, libnbd's `nbdinfo`, fio's `nbd` engine with verification, exports added and
//! removed live through `basalt admin`, a read-only export, hostile clients beside a working
//! one, and the control plane exporting volumes over NBD through the control rings.
//!
//! The real clients come from scripts/install-test-deps.sh (`qemu-utils`, `libnbd-bin`, `fio`);
//! a test whose tool is missing says SKIPPED and passes.
#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test crate

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_db::{MetadataStore, NewVolume, SqliteStore, new_uuid};
use basalt_manager::{AdminSocket, Control, NodeConfig, RingDatapath, VolumeManager};
use basalt_scheduler::SchedulerConfig;
use basalt_tests::nbd::{self, Client, Reply};
use basalt_tests::{Daemon, bin};
use rustix::process::Signal;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn skip(what: &str) {
    eprintln!("SKIPPED: {what} is not installed (scripts/install-test-deps.sh)");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A datapath serving NBD: volumes `vol0` (64 MiB, exported as `vol0`), `vol1` (32 MiB,
/// exported read-only as `ro`), `spare` (32 MiB, not exported), and a raw 64 MiB file
/// (`raw0`, exported as `raw`).
struct Dp {
    tmp: tempfile::TempDir,
    port: u16,
    daemon: Daemon,
}

impl Dp {
    fn start() -> Dp {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path();
        std::fs::File::create(d.join("pool.img"))
            .expect("pool")
            .set_len(1 << 30)
            .expect("size");
        std::fs::File::create(d.join("raw.img"))
            .expect("raw")
            .set_len(64 << 20)
            .expect("size");
        let port = free_port();
        let conf = format!(
            r#"[engine]
cores = 2
pin = false
[[bdev]]
module = "uring"
name = "pool0"
path = "{d}/pool.img"
[[bdev]]
module = "uring"
name = "raw0"
path = "{d}/raw.img"
[[lvs]]
bdev = "pool0"
name = "pool"
create = true
cluster_size = "256K"
[[volume]]
lvs = "pool"
name = "vol0"
size = "64M"
[[volume]]
lvs = "pool"
name = "vol1"
size = "32M"
[[volume]]
lvs = "pool"
name = "spare"
size = "32M"
[nbd]
listen = ["127.0.0.1:{port}"]
[[nbd.export]]
name = "vol0"
volume = "pool/vol0"
[[nbd.export]]
name = "ro"
volume = "pool/vol1"
read_only = true
description = "read-only volume"
[[nbd.export]]
name = "raw"
bdev = "raw0"
[admin]
socket = "{d}/admin.sock"
[ring]
socket = "{d}/ring.sock"
"#,
            d = d.display()
        );
        std::fs::write(d.join("dp.toml"), conf).expect("config");
        let mut cmd = Command::new(bin("basalt"));
        cmd.args(["datapath", "--config"]).arg(d.join("dp.toml"));
        let mut daemon = Daemon::spawn(cmd);
        daemon.wait_for("ring socket listening", Duration::from_secs(60));
        Dp { tmp, port, daemon }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn url(&self, export: &str) -> String {
        format!("nbd://127.0.0.1:{}/{export}", self.port)
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn socket(&self) -> PathBuf {
        self.dir().join("admin.sock")
    }

    /// `basalt admin` with `json`: (exit code, answer).
    fn admin(&self, json: &str) -> (Option<i32>, serde_json::Value) {
        let sock = self.socket();
        let (code, out, err) = basalt_tests::run(
            "basalt",
            &["admin", "--socket", sock.to_str().expect("utf-8"), json],
        );
        let v = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("{json}: not JSON ({e}): {out}{err}"));
        (code, v)
    }

    fn admin_ok(&self, json: &str) -> serde_json::Value {
        let (code, v) = self.admin(json);
        assert_eq!(code, Some(0), "{json}: {v}");
        v
    }

    fn stop(mut self) {
        let (code, log) = self.daemon.stop(Signal::TERM);
        assert_eq!(code, Some(0), "clean exit; log:\n{}", log.join("\n"));
        assert!(
            !log.iter().any(|l| l.contains("panicked")),
            "no panic; log:\n{}",
            log.join("\n")
        );
    }
}

/// `len` pseudo-random bytes (xorshift, fixed seed): the same on every run.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn run_tool(tool: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} runs: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn qemu_img_round_trips_a_random_image_and_qemu_io_checks_pass() {
    if !have("qemu-img") || !have("qemu-io") {
        return skip("qemu-img or qemu-io");
    }
    let dp = Dp::start();
    let src = dp.dir().join("src.raw");
    std::fs::write(&src, random_bytes(64 << 20, 0x5eed)).expect("image");
    let src = src.to_str().expect("utf-8");
    for export in ["vol0", "raw"] {
        let url = dp.url(export);
        let (ok, out) = run_tool(
            "qemu-img",
            &["convert", "-n", "-f", "raw", "-O", "raw", src, &url],
        );
        assert!(ok, "convert into {url}: {out}");
        let (ok, out) = run_tool(
            "qemu-img",
            &["compare", "-f", "raw", "-F", "raw", src, &url],
        );
        assert!(ok && out.contains("identical"), "compare {url}: {out}");
    }
    // Pattern write, verified read, discard (which reads back as zeros on both devices).
    for export in ["vol0", "raw"] {
        let url = dp.url(export);
        let (ok, out) = run_tool(
            "qemu-io",
            &[
                "-f",
                "raw",
                "-c",
                "write -P 0xab 0 1M",
                "-c",
                "read -P 0xab 0 1M",
                "-c",
                "discard 0 1M",
                "-c",
                "read -P 0 0 1M",
                "-c",
                "write -z 1M 1M",
                "-c",
                "read -P 0 1M 1M",
                "-c",
                "flush",
                &url,
            ],
        );
        assert!(ok, "qemu-io on {url}: {out}");
        for bad in ["failed", "error", "Pattern verification"] {
            assert!(!out.contains(bad), "qemu-io on {url}: {out}");
        }
        assert_eq!(
            out.matches("read 1048576/1048576 bytes").count(),
            3,
            "{out}"
        );
    }
    // QEMU sees the discarded megabyte of the volume as a hole through base:allocation.
    let (ok, out) = run_tool(
        "qemu-img",
        &["map", "--output=json", "-f", "raw", &dp.url("vol0")],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains(r#""start": 0, "length": 1048576, "depth": 0, "present": true, "zero": true, "data": false"#),
        "{out}"
    );
    dp.stop();
}

#[test]
fn nbdinfo_lists_the_exports_with_their_sizes_and_flags() {
    if !have("nbdinfo") {
        return skip("nbdinfo (libnbd-bin)");
    }
    let dp = Dp::start();
    let (ok, out) = run_tool(
        "nbdinfo",
        &["--json", "--list", &format!("nbd://127.0.0.1:{}", dp.port)],
    );
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("nbdinfo JSON");
    assert_eq!(v["protocol"], "newstyle-fixed", "{v}");
    assert_eq!(v["TLS"], false);
    assert_eq!(v["structured"], true);
    let exports = v["exports"].as_array().expect("exports");
    let names: Vec<&str> = exports
        .iter()
        .map(|e| e["export-name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["raw", "ro", "vol0"]);
    let get = |n: &str| {
        exports
            .iter()
            .find(|e| e["export-name"] == n)
            .expect("listed")
    };
    let vol0 = get("vol0");
    assert_eq!(vol0["export-size"], 64 << 20);
    assert_eq!(vol0["description"], "volume pool/vol0");
    for (flag, want) in [
        ("is_read_only", false),
        ("can_flush", true),
        ("can_fua", true),
        ("can_trim", true),
        ("can_zero", true),
        ("can_multi_conn", true),
        ("can_cache", true),
        ("can_df", true),
        ("can_fast_zero", false),
        ("is_rotational", false),
    ] {
        assert_eq!(vol0[flag], want, "vol0 {flag}: {vol0}");
    }
    assert_eq!(vol0["block_size_minimum"], 512);
    assert_eq!(vol0["block_size_maximum"], 32 << 20);
    assert_eq!(vol0["contexts"][0], "base:allocation");
    let ro = get("ro");
    assert_eq!(ro["is_read_only"], true);
    assert_eq!(ro["can_trim"], false);
    assert_eq!(ro["export-size"], 32 << 20);
    assert_eq!(ro["description"], "read-only volume");
    assert_eq!(get("raw")["export-size"], 64 << 20);
    // One export by URL, and the size alone.
    let (ok, out) = run_tool("nbdinfo", &["--size", &dp.url("vol0")]);
    assert!(ok && out.trim() == "67108864", "{out}");
    let (ok, out) = run_tool("nbdinfo", &[&dp.url("nope")]);
    assert!(!ok, "an unknown export fails: {out}");
    dp.stop();
}

#[test]
fn fio_nbd_engine_writes_and_verifies_crc32c_over_two_connections() {
    if !have("fio") {
        return skip("fio");
    }
    let (ok, out) = run_tool("fio", &["--enghelp=nbd"]);
    if !ok || !out.contains("uri") {
        return skip("fio's nbd engine (libnbd)");
    }
    let dp = Dp::start();
    for (export, rw) in [("vol0", "randwrite"), ("raw", "write")] {
        let uri = format!("--uri={}", dp.url(export));
        let (ok, out) = run_tool(
            "fio",
            &[
                "--name=nbdcheck",
                "--ioengine=nbd",
                &uri,
                &format!("--rw={rw}"),
                "--bs=4k",
                "--iodepth=32",
                "--numjobs=2",
                "--size=16M",
                "--offset_increment=16M",
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                // No verify state files in the working directory.
                "--verify_state_save=0",
                "--group_reporting",
            ],
        );
        assert!(ok, "fio on {export}: {out}");
        assert!(out.contains("err= 0"), "fio on {export}: {out}");
        for bad in ["verify failed", "bad magic", "bad header"] {
            assert!(!out.contains(bad), "no verify failure: {out}");
        }
    }
    dp.stop();
}

#[test]
fn exports_change_live_and_removed_ones_refuse_clients() {
    let dp = Dp::start();
    // Added live, idempotently; other settings under the same name are `exists`.
    let add = r#"{"op":"nbd_export_add","name":"spare","volume":"pool/spare"}"#;
    dp.admin_ok(add);
    dp.admin_ok(add);
    let (code, v) = dp
        .admin(r#"{"op":"nbd_export_add","name":"spare","volume":"pool/spare","read_only":true}"#);
    assert_eq!((code, v["code"].as_str()), (Some(1), Some("exists")), "{v}");
    let (code, v) = dp.admin(r#"{"op":"nbd_export_add","name":"x","volume":"pool/none"}"#);
    assert_eq!(
        (code, v["code"].as_str()),
        (Some(1), Some("not_found")),
        "{v}"
    );
    let (_, v) = dp.admin(r#"{"op":"nbd_export_add","name":"x","bdev":"nope"}"#);
    assert_eq!(v["code"], "not_found", "{v}");
    let (_, v) = dp.admin(r#"{"op":"nbd_export_add","name":"","bdev":"raw0"}"#);
    assert_eq!(v["code"], "invalid", "{v}");
    let (_, v) =
        dp.admin(r#"{"op":"nbd_export_add","name":"y","bdev":"raw0","volume":"pool/spare"}"#);
    assert_eq!(v["code"], "invalid", "{v}");

    let list = dp.admin_ok(r#"{"op":"nbd_export_list"}"#);
    let spare = list["exports"]
        .as_array()
        .expect("exports")
        .iter()
        .find(|e| e["name"] == "spare")
        .expect("listed")
        .clone();
    assert_eq!(spare["volume"], "pool/spare");
    assert_eq!(spare["size"], 32 << 20);
    assert_eq!(spare["connections"], 0);

    // A client uses it; the list counts it.
    let mut c = Client::connect(dp.addr(), "spare", false)
        .expect("connect")
        .expect("GO");
    assert_eq!(c.size, 32 << 20);
    let data = random_bytes(65536, 7);
    assert_eq!(c.write(1, 0, &data).expect("write"), 0);
    assert_eq!(c.read(2, 0, 65536).expect("read"), Ok(data));
    let list = dp.admin_ok(r#"{"op":"nbd_export_list"}"#);
    assert!(
        list["exports"]
            .as_array()
            .expect("exports")
            .iter()
            .any(|e| e["name"] == "spare" && e["connections"] == 1),
        "{list}"
    );
    // While exported, the volume cannot be deleted.
    let (code, v) = dp.admin(r#"{"op":"volume_delete","lvs":"pool","name":"spare"}"#);
    assert_eq!(code, Some(1), "{v}");

    // Removed: the connection is closed, new clients are refused, the volume is free.
    let t = Instant::now();
    dp.admin_ok(r#"{"op":"nbd_export_remove","name":"spare"}"#);
    assert!(t.elapsed() < Duration::from_secs(5));
    c.socket()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut b = [0u8; 1];
    let n = c.socket().read(&mut b);
    assert!(matches!(n, Ok(0) | Err(_)), "connection closed: {n:?}");
    match Client::connect(dp.addr(), "spare", true).expect("negotiates") {
        Err(rep) => assert_eq!(rep, nbd::REP_ERR_UNKNOWN),
        Ok(_) => panic!("a removed export was served"),
    }
    let (code, v) = dp.admin(r#"{"op":"nbd_export_remove","name":"spare"}"#);
    assert_eq!(
        (code, v["code"].as_str()),
        (Some(1), Some("not_found")),
        "{v}"
    );
    dp.admin_ok(r#"{"op":"volume_delete","lvs":"pool","name":"spare"}"#);

    // A resize is seen by new connections.
    dp.admin_ok(r#"{"op":"volume_resize","lvs":"pool","name":"vol0","size":"80M"}"#);
    let c = Client::connect(dp.addr(), "vol0", false)
        .expect("connect")
        .expect("GO");
    assert_eq!(c.size, 80 << 20);
    dp.stop();
}

#[test]
fn a_read_only_export_refuses_writes_with_eperm() {
    let dp = Dp::start();
    for structured in [false, true] {
        let mut c = Client::connect(dp.addr(), "ro", structured)
            .expect("connect")
            .expect("GO");
        assert!(c.flags & nbd::FLAG_READ_ONLY != 0, "{:#x}", c.flags);
        // The payload is consumed: the next request is understood.
        assert_eq!(c.write(1, 0, &[0x11; 4096]).expect("write"), nbd::EPERM);
        for cmd in [nbd::CMD_TRIM, nbd::CMD_WRITE_ZEROES] {
            c.send(cmd, 0, 2, 0, 4096, &[]).expect("send");
            let r = c.reply(0).expect("reply");
            assert_eq!((r.cookie(), r.error()), (2, nbd::EPERM), "{r:?}");
        }
        assert_eq!(
            c.read(3, 0, 4096).expect("read"),
            Ok(vec![0; 4096]),
            "reads work"
        );
        c.send(nbd::CMD_FLUSH, 0, 4, 0, 0, &[]).expect("flush");
        assert_eq!(c.reply(0).expect("reply").error(), 0);
    }
    if have("qemu-io") {
        let (_, out) = run_tool(
            "qemu-io",
            &["-f", "raw", "-c", "write -P 1 0 4k", &dp.url("ro")],
        );
        assert!(
            [
                "not permitted",
                "Permission denied",
                "read-only",
                "Read-only"
            ]
            .iter()
            .any(|m| out.contains(m)),
            "{out}"
        );
    }
    dp.stop();
}

#[test]
fn spec_errors_pipelining_and_structured_replies_over_a_socket() {
    let dp = Dp::start();
    let mut c = Client::connect(dp.addr(), "vol0", true)
        .expect("connect")
        .expect("GO");
    let size = c.size;
    // Past the end: EINVAL for reads, ENOSPC for writes; unaligned: EINVAL.
    c.send(nbd::CMD_READ, 0, 1, size, 512, &[]).expect("send");
    assert_eq!(c.reply(0).expect("reply").error(), nbd::EINVAL);
    assert_eq!(c.write(2, size - 512, &[0; 1024]).expect("w"), nbd::ENOSPC);
    c.send(nbd::CMD_READ, 0, 3, 100, 512, &[]).expect("send");
    assert_eq!(c.reply(0).expect("reply").error(), nbd::EINVAL);

    // 64 writes in one go, then 64 reads: every cookie answered once, data where it was put.
    let mut batch = Vec::new();
    for i in 0..64u64 {
        let mut h = Vec::new();
        h.extend_from_slice(&0x2560_9513u32.to_be_bytes());
        h.extend_from_slice(&0u16.to_be_bytes());
        h.extend_from_slice(&nbd::CMD_WRITE.to_be_bytes());
        h.extend_from_slice(&(1000 + i).to_be_bytes());
        h.extend_from_slice(&(i * 65536).to_be_bytes());
        h.extend_from_slice(&8192u32.to_be_bytes());
        batch.extend(h);
        batch.extend(vec![i as u8; 8192]);
    }
    c.socket().write_all(&batch).expect("batch");
    let mut seen: Vec<u64> = (0..64)
        .map(|_| {
            let r = c.reply(0).expect("reply");
            assert_eq!(r.error(), 0);
            r.cookie()
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1000..1064).collect::<Vec<_>>());
    for i in 0..64u64 {
        c.send(nbd::CMD_READ, 0, 2000 + i, i * 65536, 8192, &[])
            .expect("send");
    }
    for _ in 0..64 {
        match c.reply(0).expect("reply") {
            Reply::Chunk {
                flags,
                kind: 1,
                cookie,
                payload,
            } => {
                assert_eq!(flags & 1, 1, "one chunk, done");
                let i = cookie - 2000;
                assert_eq!(
                    u64::from_be_bytes(payload[..8].try_into().expect("8")),
                    i * 65536
                );
                assert!(payload[8..].iter().all(|&b| b == i as u8) && payload.len() == 8200);
            }
            other => panic!("{other:?}"),
        }
    }
    // A 32 MiB read comes back whole, in several chunks.
    let big = c.read(9, 0, 32 << 20).expect("read").expect("data");
    assert_eq!(&big[..8192], &[0u8; 8192][..]);
    assert!(big[65536..65536 + 8192].iter().all(|&b| b == 1));
    // Block status: written megabytes are data, the rest of a fresh volume is a hole.
    c.send(nbd::CMD_BLOCK_STATUS, 0, 10, 0, 16 << 20, &[])
        .expect("bs");
    match c.reply(0).expect("reply") {
        Reply::Chunk {
            kind: 5, payload, ..
        } => {
            let first_len = u32::from_be_bytes(payload[4..8].try_into().expect("4"));
            let first_flags = u32::from_be_bytes(payload[8..12].try_into().expect("4"));
            assert_eq!(first_flags, 0, "data first");
            assert!(first_len >= 8192);
            let n = (payload.len() - 4) / 8;
            assert!(n >= 2, "data then holes: {payload:?}");
        }
        other => panic!("{other:?}"),
    }
    // DISC: the server closes.
    c.send(nbd::CMD_DISC, 0, 11, 0, 0, &[]).expect("disc");
    let mut b = [0u8; 1];
    assert!(matches!(c.socket().read(&mut b), Ok(0) | Err(_)));
    dp.stop();
}

#[test]
fn hostile_clients_do_not_disturb_another_connection() {
    let dp = Dp::start();
    let mut good = Client::connect(dp.addr(), "vol0", false)
        .expect("connect")
        .expect("GO");
    let round = |c: &mut Client, i: u64| {
        let data = random_bytes(16384, i + 1);
        assert_eq!(c.write(i, i * 16384, &data).expect("write"), 0);
        assert_eq!(c.read(i, i * 16384, 16384).expect("read"), Ok(data));
    };
    round(&mut good, 0);
    let closed = |s: &mut std::net::TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut sink = Vec::new();
        // Whatever the server still had to say, then the end (a reset when it left our
        // bytes unread); a timeout means it is still open.
        match s.read_to_end(&mut sink) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    };
    // Garbage after the handshake: the connection ends.
    let mut bad = Client::connect(dp.addr(), "vol0", false)
        .expect("connect")
        .expect("GO");
    bad.socket()
        .write_all(&random_bytes(4096, 99))
        .expect("garbage");
    assert!(closed(bad.socket()), "garbage ends the connection");
    round(&mut good, 1);
    // Garbage instead of the client flags and options.
    let mut s = nbd::greet(dp.addr()).expect("greet");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("http");
    assert!(closed(&mut s));
    let mut s = std::net::TcpStream::connect(dp.addr()).expect("connect");
    s.write_all(&[0xff; 64]).expect("junk");
    assert!(closed(&mut s));
    round(&mut good, 2);
    // An oversized write: an error, then the end, without reading 64 MiB of payload.
    let mut big = Client::connect(dp.addr(), "vol0", true)
        .expect("connect")
        .expect("GO");
    big.send(nbd::CMD_WRITE, 0, 5, 0, 64 << 20, &[])
        .expect("send");
    let r = big.reply(0).expect("reply");
    assert_eq!((r.cookie(), r.error()), (5, nbd::EINVAL), "{r:?}");
    assert!(closed(big.socket()));
    // Hundreds of requests that are never read back, then a vanishing client.
    let mut flood = Client::connect(dp.addr(), "vol0", false)
        .expect("connect")
        .expect("GO");
    for i in 0..512u64 {
        flood
            .send(nbd::CMD_READ, 0, i, 0, 65536, &[])
            .expect("flood");
    }
    drop(flood);
    round(&mut good, 3);
    // The good connection is still fine, and new ones are served.
    let mut again = Client::connect(dp.addr(), "vol0", true)
        .expect("connect")
        .expect("GO");
    round(&mut again, 4);
    dp.stop();
}

#[test]
fn the_control_plane_exports_volumes_over_nbd_on_loopback_only() {
    let dp = Dp::start();
    let db: Arc<dyn MetadataStore> =
        Arc::new(SqliteStore::open(&dp.dir().join("basalt.db")).expect("db"));
    let node = |portal: Option<String>| NodeConfig {
        host: "node1".into(),
        backend: "basalt".into(),
        availability_zone: "nova".into(),
        lvs: "pool".into(),
        reserved_percentage: 0.0,
        max_over_subscription_ratio: 20.0,
        iscsi_portal: None,
        nvmf_portal: None,
        nbd_portal: portal,
    };
    let transport = || Arc::new(AdminSocket::new(&dp.socket(), Duration::from_secs(30)));
    let c = Control::new(db.clone(), SchedulerConfig::default());
    // The manager drives the datapath over the control rings, as `basalt control` does.
    let mgr = c.add_node(VolumeManager::new(
        node(Some(format!("127.0.0.1:{}", dp.port))),
        db.clone(),
        Arc::new(RingDatapath::new(
            &dp.dir().join("ring.sock"),
            Duration::from_secs(30),
        )),
    ));
    let now = Instant::now();
    assert_eq!(c.refresh(now), ["node1"]);
    let v = c
        .create_volume(
            &NewVolume {
                id: new_uuid().expect("uuid"),
                project_id: "demo".into(),
                user_id: "alice".into(),
                size_gb: 1,
                availability_zone: "nova".into(),
                use_quota: true,
                ..NewVolume::default()
            },
            now,
        )
        .expect("create");
    assert_eq!(v.status, "available", "{:?}", v.user_message);

    let e = c.export_volume(&v.id, "nbd", "host-a").expect("export");
    assert_eq!(e.protocol, "nbd");
    assert_eq!(e.target, format!("volume-{}", v.id));
    assert!(e.chap_user.is_none());
    let mut a = Client::connect(dp.addr(), &e.target, false)
        .expect("connect")
        .expect("GO");
    assert_eq!(a.size, 1 << 30);
    assert_eq!(a.write(1, 0, &[7; 4096]).expect("write"), 0);
    // A second host: the export is not replaced (A's connection goes on).
    let e2 = c.export_volume(&v.id, "nbd", "host-b").expect("export");
    assert_eq!(e2.hosts, ["host-a", "host-b"]);
    assert_eq!(a.read(2, 0, 4096).expect("read"), Ok(vec![7; 4096]));
    c.unexport_volume(&v.id, "nbd", "host-a")
        .expect("unexport a");
    assert_eq!(a.read(3, 0, 4096).expect("read"), Ok(vec![7; 4096]));
    drop(a);

    // Reconcile: a Basalt-named export the database does not know goes, a recorded one
    // that vanished comes back.
    dp.admin_ok(r#"{"op":"nbd_export_add","name":"volume-stray","volume":"pool/vol1"}"#);
    dp.admin_ok(&format!(
        r#"{{"op":"nbd_export_remove","name":"{}"}}"#,
        e.target
    ));
    assert_eq!(mgr.reconcile_exports().expect("reconcile"), (1, 1));
    let names: Vec<String> = dp.admin_ok(r#"{"op":"nbd_export_list"}"#)["exports"]
        .as_array()
        .expect("exports")
        .iter()
        .map(|x| x["name"].as_str().expect("name").to_owned())
        .collect();
    assert!(
        names.contains(&e.target) && !names.contains(&"volume-stray".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"vol0".to_owned()),
        "exports without the prefix are left alone"
    );

    // The last host gone: the export goes, clients are refused.
    c.unexport_volume(&v.id, "nbd", "host-b")
        .expect("unexport b");
    assert!(matches!(
        Client::connect(dp.addr(), &e.target, false).expect("negotiates"),
        Err(nbd::REP_ERR_UNKNOWN)
    ));

    // No NBD address, or one off loopback: refused.
    for portal in [
        None,
        Some("10.0.0.7:10809".to_owned()),
        Some("0.0.0.0:10809".into()),
    ] {
        let m = VolumeManager::new(node(portal.clone()), db.clone(), transport());
        let err = m.export(&v, "nbd", "host-c").expect_err("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("does not serve nbd") || msg.contains("loopback"),
            "{portal:?}: {msg}"
        );
    }
    dp.stop();
}
