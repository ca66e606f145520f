//! A rough loopback throughput probe (ignored by default; run with
//! `cargo test --release -p basalt-nvmf --test perf -- --ignored --nocapture`). The target runs
//! on reactor 0 and the host on reactor 1; 4 KiB random reads and writes against a null device
//! at QD 32 and 128 on one queue. Not the benchmark: `basalt-bench` owns the real figures.
#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test crate

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_bdev::modules::null::NullBdev;
use basalt_engine::{Engine, EngineConfig};
use basalt_nvmf::host::{Controller, HostConfig};
use basalt_nvmf::spec::cmd::{Sqe, nvm};
use basalt_nvmf::{NvmfTarget, SubsystemConfig, TargetConfig, serve};

const SUB: &str = "nqn.2026-11.org.basalt:perf";

#[test]
#[ignore = "throughput probe, run by hand in release mode"]
fn loopback_4k_iops() {
    let mut cfg = EngineConfig::with_cores(2);
    cfg.pin = false;
    let engine = Engine::start(&cfg).expect("engine");
    let target = NvmfTarget::new(TargetConfig::default(), vec![engine.reactor(0).clone()]);
    let mut sc = SubsystemConfig::new(SUB, "PERF");
    sc.allow_any_host = true;
    target.add_subsystem(sc).expect("subsystem");
    target
        .add_namespace(
            SUB,
            1,
            Arc::new(NullBdev::new("null", 512, 1 << 24).expect("null")),
            [1; 16],
        )
        .expect("ns");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    serve(target, listener).expect("serve");
    for write in [false, true] {
        for qd in [32u16, 128] {
            let iops = engine
                .reactor(1)
                .block_on(move || async move {
                    let c = Controller::connect(addr, SUB, &HostConfig::default())
                        .await
                        .expect("connect");
                    let q = Rc::new(c.create_io_queue(1, qd).await.expect("queue"));
                    let deadline = Instant::now() + Duration::from_secs(2);
                    let done = Rc::new(std::cell::Cell::new(0u64));
                    let mut tasks = Vec::new();
                    for i in 0..u64::from(qd) {
                        let q = q.clone();
                        let done = done.clone();
                        tasks.push(basalt_engine::spawn(async move {
                            let data = vec![0u8; 4096];
                            let mut rbuf = Vec::with_capacity(4096);
                            let mut lba = i * 7919;
                            while Instant::now() < deadline {
                                lba = lba.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1)
                                    % ((1 << 24) - 8);
                                let mut sqe = Sqe::default();
                                sqe.set_opcode(if write { nvm::WRITE } else { nvm::READ });
                                sqe.set_nsid(1);
                                sqe.set_cdw(10, lba as u32);
                                sqe.set_cdw(12, 7);
                                let r = if write {
                                    q.submit(sqe, &data, 0).await
                                } else {
                                    q.queue().submit_with(sqe, &[], rbuf, 4096).await
                                };
                                rbuf = r.expect("io").ok().expect("status").data;
                                done.set(done.get() + 1);
                            }
                        }));
                    }
                    for t in tasks {
                        let _ = t.await;
                    }
                    c.disconnect();
                    done.get() / 2
                })
                .expect("run");
            println!(
                "4 KiB {} QD{qd} one queue: {iops} IOPS",
                if write { "randwrite" } else { "randread" }
            );
        }
    }
}
