//! Basalt's thread-per-core engine.
//!
//! The data path runs one [`Reactor`] per configured core, each a pinned thread that owns one
//! io_uring. The same ring carries socket I/O and block I/O, so a request that arrives on a
//! connection and goes to disk never leaves its core. Each reactor has:
//!
//! - a local executor for `!Send` tasks ([`spawn`]);
//! - engine operations as futures that own their buffers until the kernel is done with them
//!   ([`op`]), and completion handlers for allocation-free I/O paths ([`CompletionHandler`]);
//! - timers ([`sleep`], [`timeout`]) whose earliest deadline bounds the kernel wait;
//! - a pool of aligned buffers registered with the ring ([`BufPool`]), which waits rather than
//!   allocates when empty;
//! - a cross-core message inbox ([`ReactorHandle::send`]) with a ring-level doorbell.
//!
//! An idle reactor sleeps inside `io_uring_enter`; it costs no CPU until a completion, a timer or
//! a message arrives. At start the engine probes the kernel ([`probe`]) and refuses to run below
//! its baseline. `docs/engine.md` describes the threading model and buffer ownership in detail.
//!
//! ```
//! use basalt_engine::{Engine, EngineConfig};
//!
//! let mut cfg = EngineConfig::with_cores(1);
//! cfg.pin = false;
//! let engine = Engine::start(&cfg).expect("kernel supports io_uring");
//! let answer = engine
//!     .reactor(0)
//!     .block_on(|| async {
//!         basalt_engine::sleep(std::time::Duration::from_millis(1)).await;
//!         40 + 2
//!     })
//!     .expect("reactor running");
//! assert_eq!(answer, 42);
//! engine.shutdown();
//! ```

#![deny(missing_docs)]

mod engine;
mod error;
pub mod iobuf;
pub mod net;
pub mod oneshot;
pub mod op;
pub mod probe;
mod reactor;
mod signal;
mod sys;
mod task;
mod timer;

#[cfg(test)]
mod tests;

pub use engine::{Engine, EngineConfig, ReactorHandle, Remote};
pub use error::EngineError;
pub use iobuf::{BufPool, BufPoolConfig, IoBuf};
pub use net::{TcpListener, TcpStream, serve_spread, write_loop};
pub use reactor::{
    CompletionHandler, FixedFile, HandlerId, MAX_HANDLER_TOKEN, Reactor, ReactorConfig,
    ReactorStats, cqe_result, current, try_current,
};
pub use signal::Signal;
pub use task::{Cancelled, JoinHandle, spawn, yield_now};
pub use timer::{Elapsed, Sleep, sleep, sleep_until, timeout};

/// Re-export of the io_uring crate for modules that build their own SQEs.
pub use io_uring;
