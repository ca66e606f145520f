//! Shared-memory rings between `basalt control` and `basalt datapath`.
//!
//! Control and the datapath talk through one memory region that both map: no socket, no
//! copy through the kernel on the way. The region is a sealed memfd, created by control
//! ([`Endpoint::create`]), handed to the datapath over a Unix `SOCK_SEQPACKET` socket with
//! `SCM_RIGHTS` together with two eventfds, and validated by the datapath before use
//! ([`Endpoint::attach`], [`Region::open`]). `docs/ring.md` is the short tour.
//!
//! # Layout
//!
//! ```text
//! +--------------------+  0
//! | RegionHeader 256 B |  magic "BSLTRING", layout version, geometry, total length,
//! |                    |  epoch, creator/attacher PIDs, one waiting flag per direction
//! +--------------------+  256
//! | commands ring      |  head line | tail line | frames × frame_size   control → datapath
//! | completions ring   |  head line | tail line | frames × frame_size   datapath → control
//! | events ring        |  head line | tail line | frames × frame_size   datapath → control
//! +--------------------+  page aligned
//! | data slots         |  slot_count × slot_size (page aligned, O_DIRECT-able)
//! +--------------------+
//! ```
//!
//! Nothing in the region is a pointer; everything is an offset computed by each side from the
//! validated geometry, and each side keeps its own copy of that geometry ([`region`]).
//!
//! # Rings and ordering
//!
//! Each ring has one producer and one consumer ([`spsc`]). The producer writes a frame and
//! publishes it with a `Release` store of `tail`; the consumer `Acquire`s `tail`, copies the
//! frame out, and releases it with a `Release` store of `head`. No locks are in shared
//! memory, so a peer that dies mid-operation cannot leave anything held. Each side keeps its
//! own counter privately and checks the peer's on every load: an impossible counter is an
//! error ([`RingError::Corrupt`]), never an out-of-bounds access.
//!
//! # Messages
//!
//! A frame carries one message ([`msg`]): a 32-byte header (version, kind, flags, length,
//! request id, epoch) and an opaque payload, decoded from a private copy with every field
//! checked. Bad messages are refused one by one ([`RecvError::Malformed`],
//! [`RecvError::StaleEpoch`]) and answered with a [`msg::Reject`]; the ring goes on.
//!
//! # Data slots and ownership
//!
//! Bulk bytes go through fixed-size slots ([`slots`]). Control owns all of them in a private
//! bitmap ([`SlotPool`]), lends one by naming it in a command ([`SlotSpan`]) and takes it back
//! with the completion. The datapath reads or writes a slot in place (even by io_uring,
//! [`Slots::as_ptr`]) only while it works on that command.
//!
//! # Wake-ups
//!
//! One eventfd per direction. A consumer about to sleep sets its direction's waiting flag and
//! re-checks its rings; a producer signals the eventfd only when it finds the flag set. So a
//! busy pair exchanges messages with no syscalls, and an idle side sleeps in the kernel
//! ([`Endpoint::wait`], or [`Endpoint::wake_fd`] under tokio's `AsyncFd` or an io_uring READ).
//! There is no busy waiting anywhere.
//!
//! # Epochs, peer death and re-driving
//!
//! Every pairing has an [`Epoch`]; control bumps it for each datapath it pairs with, creates a
//! fresh region, and every message carries it. Either side notices the other's death at once
//! through the hang-up of the bootstrap socket ([`Endpoint::wait`] returns
//! [`WaitError::PeerGone`]). Control's [`Pending`] table then fails every request in flight
//! ([`RequestError::PeerGone`], or [`RequestError::TimedOut`] for a peer that hangs without
//! dying), and control re-drives them, with the same request ids, in the next epoch.
//! Operations must therefore be idempotent; see [`pending`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use basalt_ring::{Endpoint, Epoch, Geometry, bootstrap};
//!
//! let (control_sock, datapath_sock) = bootstrap::socketpair()?;
//! let datapath = std::thread::spawn(move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//!     let mut dp = Endpoint::attach(datapath_sock, Duration::from_secs(5))?;
//!     dp.wait(Some(Duration::from_secs(5)))?;
//!     let cmd = dp.try_recv()?.expect("a command");
//!     let (kind, id) = (cmd.frame.header.kind, cmd.frame.header.request_id);
//!     dp.send(kind, id, b"done")?;
//!     Ok(())
//! });
//! let mut control = Endpoint::create(control_sock, &Geometry::default(), Epoch::FIRST,
//!                                    Duration::from_secs(5))?;
//! control.send(1, 42, b"hello")?;
//! control.wait(Some(Duration::from_secs(5)))?;
//! let done = control.try_recv()?.expect("a completion");
//! assert_eq!((done.frame.header.request_id, done.frame.payload), (42, &b"done"[..]));
//! datapath.join().expect("no panic").expect("datapath ok");
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```
//!
//! # Tests
//!
//! - `cargo test -p basalt-ring`: unit and property tests, and a cross-process test that
//!   SIGKILLs a datapath child with requests in flight.
//! - `RUSTFLAGS="--cfg loom" cargo test -p basalt-ring --release --lib loom`: the loom models
//!   of the ring indices and of the wake-up protocol (`loom_tests.rs`); use a separate
//!   `CARGO_TARGET_DIR`, since the flag rebuilds everything.
//! - The `ring_msg` target of the fuzz crate (`fuzz/`) feeds arbitrary bytes to [`decode`]
//!   and arbitrary region images to both sides.

#![deny(missing_docs)]

pub mod bootstrap;
mod channel;
mod error;
pub mod msg;
pub mod ops;
pub mod pending;
pub mod region;
mod shm;
pub mod slots;
pub mod spsc;

#[cfg(test)]
#[cfg(loom)]
mod loom_tests;
#[cfg(test)]
#[cfg(not(loom))]
mod tests;

pub use channel::{Endpoint, Lane, Mailbox, Received, Role, Stats};
pub use error::{
    BootstrapError, DecodeError, FieldError, PendingError, RecvError, RegionError, RequestError,
    RingError, SendError, SlotError, WaitError,
};
pub use msg::{Frame, Header, decode};
pub use pending::{Failed, Pending, RequestIds};
pub use region::{Epoch, Geometry, Region, RingGeometry};
pub use slots::{SlotId, SlotPool, SlotSpan, Slots};
