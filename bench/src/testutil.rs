//! Helpers for the in-process tests against real Basalt targets.

use std::sync::Arc;
use std::time::Duration;

use basalt_bdev::modules::malloc::MallocBdev;
use basalt_engine::{Engine, EngineConfig};

use crate::{Job, Pattern};

/// An unpinned engine of `cores` reactors, for a target served in this process.
pub fn server_engine(cores: usize) -> Engine {
    let mut cfg = EngineConfig::with_cores(cores);
    cfg.pin = false;
    Engine::start(&cfg).expect("engine")
}

/// A RAM device of `mib` MiB in 512-byte blocks.
pub fn ram(mib: u64) -> Arc<MallocBdev> {
    Arc::new(MallocBdev::new("ram", 512, mib * 2048).expect("malloc"))
}

/// A short job on unpinned cores.
pub fn job(rw: Pattern, bs: u64, qd: usize, cores: usize, ms: u64, verify: bool) -> Job {
    Job {
        rw,
        rwmixread: 50,
        bs,
        qd,
        cpus: (0..cores).collect(),
        pin: false,
        busy_poll: false,
        completion_batch: 4,
        time: Some(Duration::from_millis(ms)),
        size: None,
        offset: 0,
        span: None,
        verify,
        continue_on_error: false,
    }
}

/// A listener on a free loopback port.
pub fn listener() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}
