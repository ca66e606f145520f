//! A minimal NVMe/TCP target for manual interoperability runs (for example against the Linux
//! kernel host in a guest): one subsystem open to any host, one malloc namespace that shows
//! 64 MiB at first and grows to 128 MiB after `RESIZE_AFTER` seconds (raising a namespace
//! attribute changed event).
//!
//! `cargo run --example nvmf_tgt -p basalt-nvmf -- [ADDR] [SECONDS] [RESIZE_AFTER]` (defaults:
//! 127.0.0.1:4420, 300, never). Set `RUST_LOG=basalt_nvmf=debug` for a protocol trace.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use basalt_bdev::modules::malloc::MallocBdev;
use basalt_bdev::{Bdev, BdevError, ChannelImpl, Geometry};
use basalt_engine::{Engine, EngineConfig};
use basalt_nvmf::{NvmfTarget, SubsystemConfig, TargetConfig, serve};

/// A malloc device whose visible size can grow up to its real size.
#[derive(Debug)]
struct Growable {
    inner: MallocBdev,
    blocks: AtomicU64,
}

impl Bdev for Growable {
    fn name(&self) -> &str {
        "growable"
    }
    fn geometry(&self) -> Geometry {
        let mut g = self.inner.geometry();
        g.num_blocks = self.blocks.load(Ordering::SeqCst);
        g
    }
    fn open_channel(&self) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        self.inner.open_channel()
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:4420".into());
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(300);
    let resize_after: Option<u64> = args.next().and_then(|s| s.parse().ok());
    let mut cfg = EngineConfig::with_cores(2);
    cfg.pin = false;
    let engine = Engine::start(&cfg).expect("engine starts");
    let target = NvmfTarget::new(TargetConfig::default(), engine.reactors().to_vec());
    let nqn = "nqn.2026-11.org.basalt:volume-e2e";
    let mut sub = SubsystemConfig::new(nqn, "BSLTE2E0001");
    sub.allow_any_host = true;
    target.add_subsystem(sub).expect("subsystem");
    let dev = Arc::new(Growable {
        inner: MallocBdev::new("m0", 512, 256 * 1024).expect("128 MiB malloc"),
        blocks: AtomicU64::new(128 * 1024),
    });
    target
        .add_namespace(nqn, 1, dev.clone(), *b"basalt-e2e-uuid!")
        .expect("namespace");
    let listener = std::net::TcpListener::bind(&addr).expect("bind");
    println!("serving {nqn} on {addr} for {secs} s");
    serve(target.clone(), listener).expect("serve");
    match resize_after {
        Some(r) if r < secs => {
            std::thread::sleep(Duration::from_secs(r));
            dev.blocks.store(256 * 1024, Ordering::SeqCst);
            target.namespace_resized(nqn, 1).expect("resized");
            println!("namespace 1 grown to 128 MiB");
            std::thread::sleep(Duration::from_secs(secs - r));
        }
        _ => std::thread::sleep(Duration::from_secs(secs)),
    }
    engine.shutdown();
}
