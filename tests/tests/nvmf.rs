//! NVMe/TCP served by a running `basalt datapath`, reached with Basalt's userspace NVMe/TCP
//! host: discovery filtered by host NQN, a volume namespace with verified I/O, host refusal,
//! a subsystem added over the admin socket, and a resize the host sees.
#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test crate

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use basalt_engine::{Engine, EngineConfig};
use basalt_nvmf::host::{Controller, HostConfig};
use basalt_tests::{Daemon, bin};
use rustix::process::Signal;

const SUB: &str = "nqn.2026-11.org.basalt:volume-vol0";
const HOST_OK: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";
const HOST_OTHER: &str = "nqn.2014-08.org.nvmexpress:uuid:99999999-2222-3333-4444-555555555555";

fn host(nqn: &str) -> HostConfig {
    HostConfig {
        hostnqn: nqn.into(),
        ..HostConfig::default()
    }
}

#[test]
fn nvme_tcp_from_the_daemon() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::File::create(dir.join("pool.img"))
        .expect("create")
        .set_len(1 << 30)
        .expect("size");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let conf = format!(
        r#"[engine]
cores = 2
pin = false
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
size = "64M"
[[volume]]
lvs = "pool"
name = "vol1"
size = "32M"
[nvmf]
listen = ["127.0.0.1:{port}"]
[[nvmf.subsystem]]
nqn = "{SUB}"
hosts = ["{HOST_OK}"]
[[nvmf.subsystem.namespace]]
nsid = 1
volume = "pool/vol0"
[admin]
socket = "{d}/admin.sock"
"#,
        d = dir.display()
    );
    std::fs::write(dir.join("dp.toml"), conf).expect("config");
    let mut cmd = Command::new(bin("basalt"));
    cmd.args(["datapath", "--config"]).arg(dir.join("dp.toml"));
    let mut d = Daemon::spawn(cmd);
    d.wait_for("NVMe/TCP port up", Duration::from_secs(60));
    let sock = dir.join("admin.sock");
    let admin = |json: &str| {
        let (code, out, err) = basalt_tests::run(
            "basalt",
            &["admin", "--socket", sock.to_str().expect("utf-8"), json],
        );
        assert_eq!(code, Some(0), "{json}: {out}{err}");
    };

    let mut cfg = EngineConfig::with_cores(1);
    cfg.pin = false;
    let engine = Engine::start(&cfg).expect("engine");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let on = |f: Box<
        dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> + Send,
    >| {
        engine.reactor(0).block_on(f).expect("ran");
    };

    // Discovery lists the subsystem to the allowed host only; the other host is refused.
    on(Box::new(move || {
        Box::pin(async move {
            let disc =
                Controller::connect(addr, "nqn.2014-08.org.nvmexpress.discovery", &host(HOST_OK))
                    .await
                    .expect("discovery connect");
            let (_, entries) = disc.discovery_log().await.expect("log");
            assert!(entries.iter().any(|e| e.subnqn == SUB), "{entries:?}");
            let disc = Controller::connect(
                addr,
                "nqn.2014-08.org.nvmexpress.discovery",
                &host(HOST_OTHER),
            )
            .await
            .expect("discovery connect");
            let (_, entries) = disc.discovery_log().await.expect("log");
            assert!(
                !entries.iter().any(|e| e.subnqn == SUB),
                "filtered: {entries:?}"
            );
            assert!(
                Controller::connect(addr, SUB, &host(HOST_OTHER))
                    .await
                    .is_err(),
                "a host not on the list is refused"
            );
        })
    }));

    // Verified I/O on the volume namespace, across two queues.
    on(Box::new(move || {
        Box::pin(async move {
            let c = Controller::connect(addr, SUB, &host(HOST_OK))
                .await
                .expect("connect");
            let (ns, _) = c.identify_namespace(1).await.expect("identify");
            assert_eq!(u64::from(ns.block_size) * ns.blocks, 64 << 20);
            let q1 = c.create_io_queue(1, 32).await.expect("queue 1");
            let q2 = c.create_io_queue(2, 32).await.expect("queue 2");
            for i in 0..32u64 {
                let q = if i % 2 == 0 { &q1 } else { &q2 };
                let data: Vec<u8> = (0..65536u32).map(|b| (b as u64 * 31 + i) as u8).collect();
                q.write(&ns, i * 256, &data, false).await.expect("write");
                let back = q.read(&ns, i * 256, 128).await.expect("read");
                assert!(back == data, "block run {i} differs");
            }
            q1.flush(1).await.expect("flush");
        })
    }));

    // A subsystem added live, then a resize the host sees.
    admin(
        r#"{"op":"nvmf_subsystem_add","nqn":"nqn.2026-11.org.basalt:volume-vol1","namespace":[{"nsid":1,"volume":"pool/vol1"}]}"#,
    );
    on(Box::new(move || {
        Box::pin(async move {
            let c = Controller::connect(
                addr,
                "nqn.2026-11.org.basalt:volume-vol1",
                &host(HOST_OTHER),
            )
            .await
            .expect("any host may connect when no list is set");
            let (ns, _) = c.identify_namespace(1).await.expect("identify");
            assert_eq!(u64::from(ns.block_size) * ns.blocks, 32 << 20);
        })
    }));
    admin(r#"{"op":"volume_resize","lvs":"pool","name":"vol1","size":"48M"}"#);
    on(Box::new(move || {
        Box::pin(async move {
            let c = Controller::connect(
                addr,
                "nqn.2026-11.org.basalt:volume-vol1",
                &host(HOST_OTHER),
            )
            .await
            .expect("connect");
            let (ns, _) = c.identify_namespace(1).await.expect("identify");
            assert_eq!(
                u64::from(ns.block_size) * ns.blocks,
                48 << 20,
                "the new size"
            );
        })
    }));
    admin(r#"{"op":"nvmf_subsystem_remove","nqn":"nqn.2026-11.org.basalt:volume-vol1"}"#);
    engine.shutdown();
    let (code, log) = d.stop(Signal::TERM);
    assert_eq!(code, Some(0), "clean exit; log:\n{}", log.join("\n"));
}
