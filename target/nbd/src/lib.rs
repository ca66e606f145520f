//! The NBD (Network Block Device) target: Basalt block devices and volumes served over the
//! NBD protocol, so that QEMU (`nbd://`), `qemu-img`, libnbd's tools (`nbdinfo`, `nbdcopy`)
//! and fio's `nbd` engine reach them without a kernel initiator.
//!
//! # Model
//!
//! - [`spec`]: wire types only: magics, flags, option, reply, command and error codes, the
//!   fixed-size messages and their encoders and strict decoders.
//! - [`conn`]: one connection as a state machine without I/O: the fixed newstyle handshake
//!   (options, exports, structured replies, the `base:allocation` metadata context) and the
//!   transmission phase (requests checked and handed out as [`conn::Command`]s, replies
//!   encoded, simple or structured). The fuzzing entry point.
//! - [`export`]: the registry [`NbdTarget`] (`Send + Sync`): exports by name, live changes,
//!   the connections of each export.
//! - [`io`]: commands' block I/O on the calling reactor, in registered buffers; block-device
//!   errors map to NBD error values in one exhaustive match.
//! - [`server`]: the driver on the engine's reactors: accept on one, hand each connection to
//!   the next reactor round robin; per connection a reader, a writer and worker tasks.
//!
//! # Security
//!
//! NBD without TLS has no authentication and no access control: anyone who can reach the port
//! can read and write every export. Basalt offers no TLS (`NBD_OPT_STARTTLS` is refused with
//! `NBD_REP_ERR_POLICY`), so an NBD port belongs on the loopback interface, for clients on the
//! same host.
//!
//! # Data copies (today)
//!
//! Write data is copied from the socket buffer into a recycled `Vec<u8>`, then into the
//! pool's registered buffers; read data is copied from the buffers the device filled into the
//! connection's send buffer.
//!
//! ```no_run
//! use std::sync::Arc;
//! use basalt_engine::{Engine, EngineConfig};
//! use basalt_nbd::{ConnConfig, ExportConfig, NbdTarget};
//!
//! let engine = Engine::start(&EngineConfig::with_cores(2)).expect("engine");
//! let target = NbdTarget::new(ConnConfig::default(), engine.reactors().to_vec());
//! let bdev = basalt_bdev::modules::malloc::MallocBdev::new("m0", 512, 2048).expect("malloc");
//! let cfg = ExportConfig {
//!     name: "m0".into(),
//!     description: "RAM".into(),
//!     read_only: false,
//!     thin: false,
//! };
//! target.add_export(cfg, Arc::new(bdev)).expect("export");
//! let listener = std::net::TcpListener::bind("127.0.0.1:10809").expect("bind");
//! basalt_nbd::serve(target, listener).expect("serving");
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod conn;
mod error;
pub mod export;
pub mod io;
pub mod server;
pub mod spec;

pub use conn::{Catalog, ConnConfig, Connection, Event, ExportInfo};
pub use error::NbdError;
pub use export::{Export, ExportConfig, NbdTarget, valid_name};
pub use server::serve;

/// The IANA port of NBD.
pub const DEFAULT_PORT: u16 = 10809;
