//! Block I/O for NBD commands on the calling reactor: registered buffers, chunking, and the
//! one mapping of block-device errors to NBD error values.
//!
//! A command's data moves in chunks of at most [`chunk_size`] bytes (1 MiB with the default
//! pool, less with a small one), each in registered buffers taken all at once
//! ([`basalt_bdev::bufs`]: when the pool is short, a command queues behind the core's
//! allocation gate, shared with the other targets on the core).

use basalt_bdev::{IoChannel, IoError, IoKind, IoVecs, Lba};
use basalt_engine::BufPool;

use crate::spec::Errno;

/// The NBD error for a block-device error during `kind`: the one place the two meet.
pub fn errno(e: &IoError, kind: IoKind) -> Errno {
    match e {
        IoError::OutOfRange { .. } => match kind {
            IoKind::Write | IoKind::WriteZeroes => Errno::ENOSPC,
            IoKind::Read | IoKind::Flush | IoKind::Unmap => Errno::EINVAL,
        },
        IoError::Misaligned { .. } | IoError::LengthMismatch { .. } => Errno::EINVAL,
        IoError::Unsupported(_) => Errno::EINVAL,
        IoError::Media { .. } | IoError::Injected(_) | IoError::ShortTransfer { .. } => Errno::EIO,
        IoError::NoSpace => Errno::ENOSPC,
        IoError::ReadOnly => Errno::EPERM,
        IoError::Aborted => Errno::ESHUTDOWN,
    }
}

/// A failed I/O of a command: what failed, and at which byte of the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The device's error.
    pub error: IoError,
    /// The operation.
    pub kind: IoKind,
    /// Byte offset of the failed piece.
    pub offset: u64,
}

impl Failure {
    /// The NBD error value.
    pub fn errno(&self) -> Errno {
        errno(&self.error, self.kind)
    }
}

/// Largest piece of one command's data in flight at once: 1 MiB, or less when the pool's
/// large class is small (an eighth of it), a multiple of `block_size`.
pub fn chunk_size(pool: &BufPool, block_size: u32) -> usize {
    let large = pool.stats()[1];
    let bs = (block_size as usize).max(1);
    let fit = large.size * (large.total / 8).max(1);
    let chunk = fit.min(1 << 20);
    (chunk / bs * bs).max(bs)
}

pub use basalt_bdev::bufs::alloc;

fn pool() -> BufPool {
    basalt_engine::current().pool().clone()
}

/// Writes `data` at byte `offset` (block-aligned), chunk by chunk.
///
/// # Errors
/// The first chunk the device failed.
pub async fn write(
    chan: &IoChannel,
    offset: u64,
    data: &[u8],
    fua: bool,
    chunk: usize,
) -> Result<(), Failure> {
    let pool = pool();
    let bs = u64::from(chan.geometry().block_size);
    let mut at = 0usize;
    while at < data.len() {
        let n = (data.len() - at).min(chunk);
        let mut bufs = alloc(&pool, n).await;
        let mut from = at;
        for b in bufs.iter_mut() {
            let len = b.len();
            b.copy_from_slice(&data[from..from + len]);
            from += len;
        }
        let off = offset + at as u64;
        let (_, r) = chan.write(Lba(off / bs), bufs, fua).await;
        r.map_err(|error| Failure {
            error,
            kind: IoKind::Write,
            offset: off,
        })?;
        at += n;
    }
    Ok(())
}

/// Reads `len` bytes at byte `offset` (block-aligned, `len` at most a chunk) into registered
/// buffers.
///
/// # Errors
/// The device failed the read.
pub async fn read(chan: &IoChannel, offset: u64, len: usize) -> Result<IoVecs, Failure> {
    let pool = pool();
    let bs = u64::from(chan.geometry().block_size);
    let bufs = alloc(&pool, len).await;
    let (bufs, r) = chan.read(Lba(offset / bs), bufs).await;
    r.map(|()| bufs).map_err(|error| Failure {
        error,
        kind: IoKind::Read,
        offset,
    })
}

async fn flush_after(chan: &IoChannel, fua: bool, offset: u64) -> Result<(), Failure> {
    if !fua {
        return Ok(());
    }
    let (_, r) = chan.flush().await;
    r.map_err(|error| Failure {
        error,
        kind: IoKind::Flush,
        offset,
    })
}

/// Makes completed writes durable.
///
/// # Errors
/// The device failed the flush.
pub async fn flush(chan: &IoChannel) -> Result<(), Failure> {
    flush_after(chan, true, 0).await
}

/// Discards `length` bytes at `offset` where the device can (a hint: a device without unmap
/// keeps the data and the command succeeds).
///
/// # Errors
/// The device failed the unmap (or the flush a FUA asked for).
pub async fn trim(chan: &IoChannel, offset: u64, length: u64, fua: bool) -> Result<(), Failure> {
    let g = chan.geometry();
    if !g.supports_unmap {
        return Ok(());
    }
    let bs = u64::from(g.block_size);
    let (_, r) = chan.unmap(Lba(offset / bs), length / bs).await;
    r.map_err(|error| Failure {
        error,
        kind: IoKind::Unmap,
        offset,
    })?;
    flush_after(chan, fua, offset).await
}

/// Makes `length` bytes at `offset` read as zeros. Without `no_hole`, a device that can
/// unmap (unmapped blocks read back as zeros) deallocates the range. With it, the range must
/// stay allocated: the device's write-zeroes when that keeps blocks allocated (not `thin`),
/// else zero buffers written chunk by chunk.
///
/// # Errors
/// The first piece the device failed.
pub async fn write_zeroes(
    chan: &IoChannel,
    offset: u64,
    length: u64,
    no_hole: bool,
    thin: bool,
    fua: bool,
    chunk: usize,
) -> Result<(), Failure> {
    let g = chan.geometry().clone();
    let bs = u64::from(g.block_size);
    let fail = |kind| {
        move |error| Failure {
            error,
            kind,
            offset,
        }
    };
    if !no_hole && g.supports_unmap {
        let (_, r) = chan.unmap(Lba(offset / bs), length / bs).await;
        r.map_err(fail(IoKind::Unmap))?;
    } else if g.supports_write_zeroes && !thin {
        let (_, r) = chan.write_zeroes(Lba(offset / bs), length / bs).await;
        r.map_err(fail(IoKind::WriteZeroes))?;
    } else {
        let pool = pool();
        let mut at = 0u64;
        while at < length {
            let n = (length - at).min(chunk as u64);
            let mut bufs = alloc(&pool, usize::try_from(n).unwrap_or(chunk)).await;
            for b in bufs.iter_mut() {
                b.fill(0);
            }
            let off = offset + at;
            let (_, r) = chan.write(Lba(off / bs), bufs, false).await;
            r.map_err(|error| Failure {
                error,
                kind: IoKind::WriteZeroes,
                offset: off,
            })?;
            at += n;
        }
    }
    flush_after(chan, fua, offset).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_io_error_has_an_nbd_errno() {
        let cases = [
            (
                IoError::OutOfRange {
                    lba: 1,
                    blocks: 1,
                    capacity: 1,
                },
                IoKind::Write,
                Errno::ENOSPC,
            ),
            (
                IoError::OutOfRange {
                    lba: 1,
                    blocks: 1,
                    capacity: 1,
                },
                IoKind::Read,
                Errno::EINVAL,
            ),
            (
                IoError::Media {
                    kind: IoKind::Read,
                    errno: 5,
                },
                IoKind::Read,
                Errno::EIO,
            ),
            (IoError::Injected(IoKind::Write), IoKind::Write, Errno::EIO),
            (IoError::NoSpace, IoKind::Write, Errno::ENOSPC),
            (IoError::ReadOnly, IoKind::Write, Errno::EPERM),
            (IoError::Aborted, IoKind::Read, Errno::ESHUTDOWN),
            (
                IoError::Unsupported(IoKind::Unmap),
                IoKind::Unmap,
                Errno::EINVAL,
            ),
            (
                IoError::ShortTransfer {
                    done: 1,
                    expected: 2,
                },
                IoKind::Read,
                Errno::EIO,
            ),
            (
                IoError::Misaligned {
                    len: 3,
                    block_size: 512,
                },
                IoKind::Write,
                Errno::EINVAL,
            ),
        ];
        for (e, kind, want) in cases {
            assert_eq!(errno(&e, kind), want, "{e}");
        }
    }
}
