//! NVMe over Fabrics on TCP: a target serving Basalt block devices, and a userspace host.
//!
//! # Model
//!
//! The layers, bottom up:
//!
//! - [`spec`]: wire types only. PDUs of the TCP transport binding, submission and completion
//!   entries, typed status codes, fabrics commands, Identify data and log pages. Decoders take
//!   bytes and return typed values or errors; they never panic ([`spec::decode_pdu`],
//!   [`spec::decode_io`], [`spec::decode_admin`] are the fuzzing entry points).
//! - [`conn`]: one queue pair's connection as a state machine without I/O: bytes in, commands
//!   (with their host data gathered from the capsule or through R2T/H2CData) out; completions
//!   and read data in, bytes out. ICReq negotiation (digests, data alignment, MAXH2CDATA) and
//!   termination on malformed PDUs live here.
//! - [`ctrl`]: a controller in the dynamic model, created by an admin-queue Connect and shared
//!   (`Arc`) by the queues that name it, possibly on different cores. Properties (CAP, VS, CC,
//!   CSTS), features, keep-alive, asynchronous events and the admin command set. Its slow state
//!   is behind one `Mutex`; the I/O path reads two atomics.
//! - [`subsystem`]: the registry [`NvmfTarget`] (`Send + Sync`): NVM subsystems, namespaces,
//!   host allow-lists, the discovery subsystem and live controllers.
//! - [`io`]: NVM I/O commands against a namespace's block device channel on the calling
//!   reactor; block-device errors map to NVMe status in one exhaustive match.
//! - [`server`]: the driver on the engine's reactors: accept on one, hand each connection to
//!   the next reactor round robin; per queue, a reader, a writer and a ticker task.
//! - [`host`]: an NVMe/TCP initiator on the same engine, for tests and benchmarks.
//!
//! # Data copies (today)
//!
//! Write data is copied from the socket buffer into a recycled `Vec<u8>` and then into the
//! pool's `IoBuf`s; read data is copied from the `IoBuf`s the device filled into the
//! connection's send buffer, one copy per PDU. I/O commands run on per-queue worker tasks
//! started at Connect, so the I/O path itself allocates nothing once warm.
//!
//! ```no_run
//! use std::sync::Arc;
//! use basalt_engine::{Engine, EngineConfig};
//! use basalt_nvmf::{NvmfTarget, SubsystemConfig, TargetConfig};
//!
//! let engine = Engine::start(&EngineConfig::with_cores(2)).expect("engine");
//! let target = NvmfTarget::new(TargetConfig::default(), engine.reactors().to_vec());
//! let nqn = "nqn.2026-11.org.basalt:volume-0";
//! let mut sub = SubsystemConfig::new(nqn, "BSLT0000");
//! sub.allow_any_host = true;
//! target.add_subsystem(sub).expect("new subsystem");
//! let bdev = basalt_bdev::modules::malloc::MallocBdev::new("m0", 512, 2048).expect("malloc");
//! target.add_namespace(nqn, 1, Arc::new(bdev), [0x11; 16]).expect("namespace");
//! let listener = std::net::TcpListener::bind("0.0.0.0:4420").expect("bind");
//! basalt_nvmf::serve(target, listener).expect("serving");
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod conn;
pub mod ctrl;
pub mod host;
pub mod io;
pub mod server;
pub mod spec;
pub mod subsystem;

pub use server::serve;
pub use subsystem::{
    Namespace, NvmfError, NvmfTarget, Subsystem, SubsystemConfig, TargetConfig, valid_nqn,
};
