//! The Basalt datapath daemon: reads its configuration, starts one reactor per configured core,
//! opens the block devices, and runs until SIGINT or SIGTERM, then shuts down cleanly (tasks
//! cancelled, in-flight I/O drained, files closed).
//!
//! The `basalt` binary's `datapath` and `up` subcommands are thin shells over [`Datapath`],
//! which also opens the volume stores, the exports, the iSCSI, NVMe/TCP and NBD targets, the
//! admin socket and the control rings.

#![deny(missing_docs)]

pub mod admin;
pub mod config;
pub mod exports;
pub mod ring;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use basalt_bdev::{BdevError, BdevSet};
use basalt_engine::{Engine, EngineError};
use basalt_iscsi::server::IscsiTarget;

use crate::exports::Exports;

pub use config::DatapathConfig;

/// Why the datapath could not start.
#[derive(Debug, displaydoc::Display, thiserror::Error)]
pub enum DatapathError {
    /// cannot read the configuration file {path}
    Read {
        /// The file.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// {path}: {msg}
    ParseFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        msg: String,
    },
    /// configuration: {0}
    Parse(String),
    /// configuration: {0}
    Config(String),
    /// cannot start the engine
    Engine(#[from] EngineError),
    /// cannot set up the block devices
    Bdev(#[from] BdevError),
    /// cannot install signal handlers
    Signals(#[source] std::io::Error),
    /// {0} does not exist
    NotFound(String),
    /// {0} exists already
    Exists(String),
    /// {what}: {source}
    Store {
        /// What was being done.
        what: String,
        /// The volume store's answer.
        #[source]
        source: basalt_lvol::StoreError,
    },
}

impl DatapathError {
    /// A short machine-readable class of the error, for the control plane: `not_found`,
    /// `exists`, `no_space`, `busy`, `read_only`, `invalid`, `io` or `error`.
    pub fn code(&self) -> &'static str {
        use basalt_lvol::StoreError as S;
        match self {
            DatapathError::NotFound(_) => "not_found",
            DatapathError::Exists(_) => "exists",
            DatapathError::Store { source, .. } => match source {
                S::NoVolume(_) => "not_found",
                S::NameTaken(_) => "exists",
                S::NoSpace => "no_space",
                S::Busy(_) => "busy",
                S::ReadOnly(_) => "read_only",
                S::Shrink { .. } | S::Invalid(_) => "invalid",
                S::Io(_) | S::Failed(_) | S::NoSuperblock { .. } | S::Format(_) | S::Load(_) => {
                    "io"
                }
            },
            DatapathError::Parse(_)
            | DatapathError::Config(_)
            | DatapathError::ParseFile { .. } => "invalid",
            DatapathError::Read { .. }
            | DatapathError::Engine(_)
            | DatapathError::Bdev(_)
            | DatapathError::Signals(_) => "error",
        }
    }
}

/// A running datapath.
#[derive(Debug)]
pub struct Datapath {
    engine: Engine,
    bdevs: BdevSet,
    exports: Arc<Exports>,
    admin: Option<admin::AdminSocket>,
    ring: Option<ring::RingServer>,
}

impl Datapath {
    /// Opens the block devices, starts the engine, and checks that every reactor can open an
    /// I/O channel to every block device.
    ///
    /// # Errors
    /// A bad configuration, a kernel below the engine's baseline, or a block device that
    /// cannot be opened.
    pub fn start(cfg: &DatapathConfig) -> Result<Datapath, DatapathError> {
        let engine_cfg = cfg.engine_config()?;
        let bdevs = BdevSet::build(&cfg.bdevs)?;
        let engine = Engine::start(&engine_cfg)?;
        for r in engine.reactors() {
            let set = bdevs.clone();
            r.block_on(move || async move {
                for b in set.iter() {
                    b.open()?;
                }
                Ok::<(), BdevError>(())
            })??;
        }
        tracing::info!(
            reactors = engine.reactors().len(),
            cpus = ?engine_cfg.cpus,
            pinned = engine_cfg.pin,
            busy_poll = engine_cfg.reactor.busy_poll,
            bdevs = bdevs.len(),
            "datapath running"
        );
        for b in bdevs.iter() {
            let g = b.geometry();
            tracing::info!(
                bdev = b.name(),
                block_size = g.block_size,
                blocks = g.num_blocks,
                bytes = g.bytes(),
                "block device ready"
            );
        }
        let iscsi = cfg.iscsi.as_ref().map(|ic| {
            let mut limits = basalt_iscsi::conn::Limits::default();
            if let Some(s) = ic.nop_interval_secs {
                limits.nop_interval = Duration::from_secs(s);
            }
            if let Some(s) = ic.nop_timeout_secs {
                limits.nop_timeout = Duration::from_secs(s);
            }
            if let Some(q) = ic.queue_depth {
                limits.queue_depth = q.clamp(1, 4096);
            }
            let portal = basalt_iscsi::Portal {
                tpgt: ic.tpgt,
                addresses: ic.listen.clone(),
            };
            IscsiTarget::new(portal, limits, engine.reactors().to_vec())
        });
        let nvmf = cfg.nvmf.as_ref().map(|_| {
            basalt_nvmf::NvmfTarget::new(
                basalt_nvmf::TargetConfig::default(),
                engine.reactors().to_vec(),
            )
        });
        let nbd = cfg.nbd.as_ref().map(|_| {
            basalt_nbd::NbdTarget::new(
                basalt_nbd::ConnConfig::default(),
                engine.reactors().to_vec(),
            )
        });
        let exports = Arc::new(Exports::open(
            bdevs.clone(),
            &cfg.stores,
            &cfg.volumes,
            iscsi.clone(),
            nvmf.clone(),
            nbd.clone(),
            engine.reactor(0).clone(),
        )?);
        if let (Some(nc), Some(target)) = (&cfg.nbd, &nbd) {
            for e in &nc.exports {
                exports.add_nbd_export(e)?;
            }
            for addr in &nc.listen {
                if !addr.ip().is_loopback() {
                    tracing::warn!(%addr, "NBD has no authentication (no TLS): anyone who reaches this address can read and write every export");
                }
                let listener = std::net::TcpListener::bind(addr).map_err(|e| {
                    DatapathError::Config(format!("cannot listen for NBD on {addr}: {e}"))
                })?;
                basalt_nbd::serve(target.clone(), listener)?;
                tracing::info!(%addr, exports = nc.exports.len(), "NBD port up");
            }
        }
        if let (Some(nc), Some(target)) = (&cfg.nvmf, &nvmf) {
            for s in &nc.subsystems {
                exports.add_nvmf_subsystem(s)?;
            }
            for addr in &nc.listen {
                let listener = std::net::TcpListener::bind(addr).map_err(|e| {
                    DatapathError::Config(format!("cannot listen for NVMe/TCP on {addr}: {e}"))
                })?;
                basalt_nvmf::serve(target.clone(), listener)?;
                tracing::info!(%addr, subsystems = nc.subsystems.len(), "NVMe/TCP port up");
            }
        }
        if let (Some(ic), Some(target)) = (&cfg.iscsi, &iscsi) {
            exports.set_discovery_chap(&ic.discovery_chap)?;
            for t in &ic.targets {
                exports.add_iscsi_target(t)?;
            }
            for addr in &ic.listen {
                let listener = std::net::TcpListener::bind(addr).map_err(|e| {
                    DatapathError::Config(format!("cannot listen for iSCSI on {addr}: {e}"))
                })?;
                basalt_iscsi::server::serve(target.clone(), listener)?;
                tracing::info!(%addr, tpgt = ic.tpgt, targets = ic.targets.len(), "iSCSI portal up");
            }
        }
        let admin = match &cfg.admin {
            Some(a) => Some(admin::start(&a.socket, exports.clone())?),
            None => None,
        };
        let ring = match &cfg.ring {
            Some(r) => Some(ring::start(&r.socket, exports.clone())?),
            None => None,
        };
        Ok(Datapath {
            engine,
            bdevs,
            exports,
            admin,
            ring,
        })
    }

    /// Stores, volumes and exports.
    pub fn exports(&self) -> &Arc<Exports> {
        &self.exports
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The block devices.
    pub fn bdevs(&self) -> &BdevSet {
        &self.bdevs
    }

    /// Stops every reactor (cancelling tasks and draining in-flight I/O), then closes the block
    /// devices. Logs each reactor's counters.
    pub fn shutdown(self) {
        drop(self.ring);
        drop(self.admin);
        if let Some(iscsi) = self.exports.iscsi() {
            // Ask initiators to log out, and give them a moment to do so cleanly.
            iscsi.request_logout_all();
            let deadline = Instant::now() + Duration::from_secs(2);
            while iscsi.connection_count() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.exports.flush_stores();
        let handles = self.engine.reactors().to_vec();
        self.engine.shutdown();
        for r in &handles {
            let s = r.stats();
            tracing::info!(
                reactor = r.index(),
                iterations = s.iterations.load(Ordering::Relaxed),
                sleeps = s.sleeps.load(Ordering::Relaxed),
                completions = s.completions.load(Ordering::Relaxed),
                polls = s.polls.load(Ordering::Relaxed),
                messages = s.messages.load(Ordering::Relaxed),
                wakeups = s.wakeups.load(Ordering::Relaxed),
                task_panics = s.task_panics.load(Ordering::Relaxed),
                "reactor counters"
            );
        }
        drop(self.exports);
        drop(self.bdevs);
        tracing::info!("datapath stopped");
    }
}

/// SIGINT and SIGTERM, caught. Install before starting anything, so a signal during start-up
/// is not lost to the default action.
#[derive(Debug)]
pub struct ShutdownSignals(signal_hook::iterator::Signals);

impl ShutdownSignals {
    /// Installs the handlers.
    ///
    /// # Errors
    /// The kernel refused.
    pub fn install() -> Result<ShutdownSignals, DatapathError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
            .map(ShutdownSignals)
            .map_err(DatapathError::Signals)
    }

    /// Blocks (in the kernel, costing nothing) until a signal arrives; returns its number.
    pub fn wait(&mut self) -> i32 {
        self.0
            .forever()
            .next()
            .unwrap_or(signal_hook::consts::SIGTERM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_serves_and_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("pool.img");
        std::fs::File::create(&img)
            .expect("create")
            .set_len(8 << 20)
            .expect("size");
        let cfg = DatapathConfig::parse(&format!(
            "[engine]\ncores = 2\npin = false\n[engine.buffers]\nsmall_count = 16\nlarge_count = 4\n\
             [[bdev]]\nmodule = \"uring\"\nname = \"pool0\"\npath = \"{}\"\n\
             [[bdev]]\nmodule = \"malloc\"\nname = \"ram0\"\nsize = \"1M\"\n",
            img.display()
        ))
        .expect("parses");
        let dp = Datapath::start(&cfg).expect("starts");
        assert_eq!(dp.engine().reactors().len(), 2);
        assert_eq!(dp.bdevs().len(), 2);
        let pool = dp.bdevs().get("pool0").expect("declared");
        assert_eq!(pool.geometry().num_blocks, (8 << 20) / 512);
        dp.shutdown();
    }

    #[test]
    fn nbd_exports_are_added_listed_and_removed_with_codes() {
        let cfg = DatapathConfig::parse(
            "[engine]\npin = false\n[engine.buffers]\nsmall_count = 16\nlarge_count = 4\n\
             [[bdev]]\nmodule = \"malloc\"\nname = \"ram0\"\nsize = \"1M\"\n\
             [nbd]\nlisten = [\"127.0.0.1:0\"]\n\
             [[nbd.export]]\nname = \"ram\"\nbdev = \"ram0\"\n",
        )
        .expect("parses");
        let dp = Datapath::start(&cfg).expect("starts");
        let ex = dp.exports();
        let call = |j: &str| admin::dispatch(j.as_bytes(), ex);
        let add = r#"{"op":"nbd_export_add","name":"ram","bdev":"ram0"}"#;
        assert_eq!(call(add)["ok"], true, "the same settings again: done");
        let v = call(r#"{"op":"nbd_export_add","name":"ram","bdev":"ram0","read_only":true}"#);
        assert_eq!(v["code"], "exists", "{v}");
        let v = call(r#"{"op":"nbd_export_add","name":"x","bdev":"nope"}"#);
        assert_eq!(v["code"], "not_found", "{v}");
        let v = call(r#"{"op":"nbd_export_list"}"#);
        assert_eq!(v["exports"][0]["name"], "ram", "{v}");
        assert_eq!(v["exports"][0]["size"], 1 << 20, "{v}");
        assert_eq!(v["exports"][0]["description"], "block device ram0", "{v}");
        assert_eq!(
            call(r#"{"op":"nbd_export_remove","name":"ram"}"#)["ok"],
            true
        );
        let v = call(r#"{"op":"nbd_export_remove","name":"ram"}"#);
        assert_eq!(v["code"], "not_found", "{v}");
        assert_eq!(call(add)["ok"], true, "added again");
        dp.shutdown();
        // Without [nbd] the operations are refused as invalid.
        let cfg = DatapathConfig::parse(
            "[engine]\npin = false\n[engine.buffers]\nsmall_count = 16\nlarge_count = 4\n",
        )
        .expect("parses");
        let dp = Datapath::start(&cfg).expect("starts");
        let v = admin::dispatch(br#"{"op":"nbd_export_list"}"#, dp.exports());
        assert_eq!(v["code"], "invalid", "{v}");
        dp.shutdown();
    }

    #[test]
    fn a_missing_file_is_named() {
        let cfg = DatapathConfig::parse(
            "[engine]\npin = false\n[[bdev]]\nmodule = \"uring\"\nname = \"p\"\npath = \"/nonexistent/pool.img\"\n",
        )
        .expect("parses");
        let err = Datapath::start(&cfg).expect_err("refused");
        assert!(err.to_string().contains("block device"), "{err}");
        let chain = format!("{:?}", err);
        assert!(chain.contains("/nonexistent/pool.img"), "{chain}");
    }
}
