//! Block devices ("bdevs") with per-core I/O channels.
//!
//! A [`Bdev`] is shared by every core (`Send + Sync`); each core that does I/O on it opens its
//! own [`IoChannel`] there, so the I/O path takes no lock and never hops cores. A channel takes
//! reads and writes (scatter-gather over registered [`basalt_engine::IoBuf`]s), flushes, unmaps
//! and write-zeroes, validates them against the device's [`Geometry`] (512-byte or 4 KiB logical
//! blocks), and hands them to the module. Misaligned or out-of-range requests complete with a
//! clear [`IoError`]; nothing on the I/O path panics on bad input.
//!
//! Modules ([`modules`]): `uring` (a file or block device through the reactor's io_uring,
//! O_DIRECT), `malloc` (RAM), `null` (discards), and two that stack on another bdev for testing:
//! `error` (injects failures) and `delay` (injects latency). The slot model that lets a request
//! cross the stack without allocating is described in [`io`].
//!
//! ```
//! use basalt_bdev::{Bdev, Lba, modules::malloc::MallocBdev};
//! use basalt_engine::{Engine, EngineConfig};
//!
//! let mut cfg = EngineConfig::with_cores(1);
//! cfg.pin = false;
//! let engine = Engine::start(&cfg).expect("io_uring available");
//! let ram = MallocBdev::new("ram0", 512, 2048).expect("valid geometry");
//! let byte = engine.reactor(0).block_on(move || async move {
//!     let ch = ram.open().expect("channel");
//!     let pool = basalt_engine::current().pool().clone();
//!     let mut buf = pool.alloc(4096).expect("fits").await;
//!     buf.fill(7);
//!     let (_, res) = ch.write(Lba(8), [buf].into_iter().collect(), false).await;
//!     res.expect("write");
//!     let buf = pool.alloc(512).expect("fits").await;
//!     let (bufs, res) = ch.read(Lba(9), [buf].into_iter().collect()).await;
//!     res.expect("read");
//!     bufs[0][0]
//! }).expect("reactor running");
//! assert_eq!(byte, 7);
//! ```

#![deny(missing_docs)]

pub mod bufs;
pub mod config;
mod error;
pub mod io;
pub mod modules;

use std::rc::Rc;

pub use config::{BdevConfig, BdevSet, ByteSize};
pub use error::{BdevError, IoError};
pub use io::{ChannelImpl, CompletionHook, IoChannel, IoFuture, IoKind, IoRequest, IoSlot, IoVecs};

/// A logical block address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lba(pub u64);

/// Shape and abilities of a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    /// Logical block size in bytes (512 or 4096).
    pub block_size: u32,
    /// Number of logical blocks.
    pub num_blocks: u64,
    /// Unmap is supported (and unmapped blocks read back as zeros).
    pub supports_unmap: bool,
    /// Write-zeroes is supported.
    pub supports_write_zeroes: bool,
    /// Completed writes may sit in a volatile cache until a flush (or FUA).
    pub volatile_cache: bool,
}

impl Geometry {
    /// Capacity in bytes.
    pub fn bytes(&self) -> u64 {
        self.num_blocks * u64::from(self.block_size)
    }
}

/// Checks that a block size is one Basalt serves.
///
/// # Errors
/// [`BdevError::BlockSize`] for anything but 512 and 4096.
pub fn check_block_size(block_size: u32) -> Result<(), BdevError> {
    match block_size {
        512 | 4096 => Ok(()),
        other => Err(BdevError::BlockSize(other)),
    }
}

/// A block device module instance, shared by all cores.
pub trait Bdev: Send + Sync + std::fmt::Debug {
    /// Unique name.
    fn name(&self) -> &str;

    /// Shape and abilities.
    fn geometry(&self) -> Geometry;

    /// Opens the module's channel for the calling reactor's core.
    ///
    /// # Errors
    /// Module specific (for example the fixed-file table being full).
    fn open_channel(&self) -> Result<Rc<dyn ChannelImpl>, BdevError>;

    /// Opens a validating [`IoChannel`] on the calling reactor's core.
    ///
    /// # Errors
    /// As [`Bdev::open_channel`].
    fn open(&self) -> Result<IoChannel, BdevError> {
        Ok(IoChannel::new(self.open_channel()?, self.geometry()))
    }

    /// Provisioning status of the blocks from `lba`: whether they are mapped (hold data) or
    /// deallocated (read back as zeros), and for how many blocks (at most `max_blocks`, at least
    /// one) that answer holds. `None` when the device does not track it (every block counts as
    /// mapped). Answers from memory; never does I/O.
    fn block_status(&self, lba: Lba, max_blocks: u64) -> Option<BlockStatus> {
        let _ = (lba, max_blocks);
        None
    }
}

/// One run of blocks with the same provisioning status (see [`Bdev::block_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockStatus {
    /// The blocks hold data (false: deallocated, they read back as zeros).
    pub mapped: bool,
    /// How many blocks, from the asked-for one, share this status.
    pub blocks: u64,
}

#[cfg(test)]
mod tests;
