//! Errors of block devices: opening one, and individual I/Os.

use std::io;
use std::path::PathBuf;

use crate::io::IoKind;

/// Opening or configuring a block device failed.
#[derive(Debug, displaydoc::Display, thiserror::Error)]
pub enum BdevError {
    /// cannot open {path}
    Open {
        /// What was opened.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// {path} is neither a regular file nor a block device
    NotABlockTarget {
        /// What was opened.
        path: PathBuf,
    },
    /// {path} is smaller than one block of {block_size} bytes
    TooSmall {
        /// What was opened.
        path: PathBuf,
        /// The block size asked for.
        block_size: u32,
    },
    /// block size {0} is not supported (use 512 or 4096)
    BlockSize(u32),
    /// block size {asked} is below the device's logical block size {device}
    BlockSizeBelowDevice {
        /// The block size asked for.
        asked: u32,
        /// The device's logical block size.
        device: u32,
    },
    /// a block device needs at least one block
    Empty,
    /// invalid setting: {0}
    Config(String),
    /// no block device named {0}
    NotFound(String),
    /// a block device named {0} exists already
    Exists(String),
    /// the engine refused
    Engine(#[from] basalt_engine::EngineError),
}

/// One I/O failed. Each variant maps to exactly one status on every wire protocol.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum IoError {
    /// blocks {lba}..+{blocks} lie beyond the device's {capacity} blocks
    OutOfRange {
        /// First block asked for.
        lba: u64,
        /// Number of blocks asked for.
        blocks: u64,
        /// Blocks in the device.
        capacity: u64,
    },
    /// buffer of {len} bytes is not a multiple of the {block_size}-byte block
    Misaligned {
        /// Offending buffer length.
        len: usize,
        /// The device's block size.
        block_size: u32,
    },
    /// buffers hold {bytes} bytes but the request covers {expected}
    LengthMismatch {
        /// Bytes in the buffers.
        bytes: u64,
        /// Bytes the request covers.
        expected: u64,
    },
    /// {0:?} is not supported by this device
    Unsupported(IoKind),
    /// the device failed the {kind:?} (errno {errno})
    Media {
        /// The operation.
        kind: IoKind,
        /// The kernel's errno.
        errno: i32,
    },
    /// the device transferred {done} of {expected} bytes
    ShortTransfer {
        /// Bytes transferred.
        done: u64,
        /// Bytes asked for.
        expected: u64,
    },
    /// the backing store is out of space
    NoSpace,
    /// the device is read-only
    ReadOnly,
    /// injected failure of a {0:?}
    Injected(IoKind),
    /// the I/O was abandoned before completion (device closing or engine stopping)
    Aborted,
}

impl IoError {
    /// Converts a kernel errno for operation `kind`; the one place errnos become I/O errors.
    pub fn from_errno(kind: IoKind, errno: i32) -> IoError {
        match errno {
            libc::ENOSPC | libc::EDQUOT => IoError::NoSpace,
            libc::EOPNOTSUPP | libc::EINVAL
                if matches!(kind, IoKind::Unmap | IoKind::WriteZeroes) =>
            {
                IoError::Unsupported(kind)
            }
            libc::ECANCELED | libc::EINTR => IoError::Aborted,
            errno => IoError::Media { kind, errno },
        }
    }
}
