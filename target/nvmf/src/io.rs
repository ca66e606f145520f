//! NVM command set I/O commands against a namespace's block device, on the calling reactor.
//!
//! Buffers come from the reactor's pool (`IoBuf`s of at most the pool's largest class). Write
//! data arrives in a `Vec<u8>` from the connection and is copied into the `IoBuf`s once; read
//! data is handed back in the `IoBuf`s the device filled, which the connection copies into its
//! send buffer (one copy per PDU).

use std::sync::Arc;

use basalt_bdev::{Geometry, IoChannel, IoError, IoKind, IoVecs, Lba};

use crate::spec::cmd::{Sqe, Status, StatusCode};
use crate::spec::command::{IoCommand, decode_io};
use crate::subsystem::Namespace;

/// Largest data transfer of one command, bytes (2^MDTS pages of 4 KiB).
pub const MAX_TRANSFER: u64 = 4096 << crate::ctrl::MDTS;

/// The NVMe status for a block-device error: the one place the two meet.
pub fn io_status(e: &IoError) -> StatusCode {
    match e {
        IoError::OutOfRange { .. } => StatusCode::LbaOutOfRange,
        IoError::Misaligned { .. } | IoError::LengthMismatch { .. } => {
            StatusCode::DataSglLengthInvalid
        }
        IoError::Unsupported(_) => StatusCode::InvalidOpcode,
        IoError::Media { kind, .. } | IoError::Injected(kind) => match kind {
            IoKind::Read => StatusCode::UnrecoveredReadError,
            IoKind::Write | IoKind::Flush | IoKind::Unmap | IoKind::WriteZeroes => {
                StatusCode::WriteFault
            }
        },
        IoError::ShortTransfer { .. } => StatusCode::DataTransferError,
        IoError::NoSpace => StatusCode::CapacityExceeded,
        IoError::ReadOnly => StatusCode::NamespaceWriteProtected,
        IoError::Aborted => StatusCode::AbortRequested,
    }
}

/// A namespace opened on this reactor.
#[derive(Debug)]
pub struct NsChannel {
    /// The namespace.
    pub ns: Arc<Namespace>,
    /// The device channel on this reactor.
    pub chan: IoChannel,
}

impl NsChannel {
    /// Opens `ns` on the calling reactor.
    ///
    /// # Errors
    /// The device could not open a channel here.
    pub fn open(ns: Arc<Namespace>) -> Result<NsChannel, basalt_bdev::BdevError> {
        let chan = ns.bdev.open()?;
        Ok(NsChannel { ns, chan })
    }

    fn geometry(&self) -> &Geometry {
        self.chan.geometry()
    }
}

/// What an I/O command produced: its status and, for a successful read, the data.
#[derive(Debug)]
pub struct IoOutcome {
    /// Completion status.
    pub status: Status,
    /// Read data, in order.
    pub data: Option<IoVecs>,
}

impl IoOutcome {
    fn status(code: StatusCode) -> IoOutcome {
        IoOutcome {
            status: code.status(),
            data: None,
        }
    }
}

async fn alloc_bufs(len: u64) -> IoVecs {
    let reactor = basalt_engine::current();
    let pool = reactor.pool().clone();
    let max = pool.max_size() as u64;
    let mut bufs = IoVecs::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(max);
        let alloc = pool
            .alloc(usize::try_from(n).expect("at most the pool's largest class"))
            .expect("chunk fits the largest class");
        bufs.push(alloc.await);
        left -= n;
    }
    bufs
}

fn range(g: &Geometry, slba: u64, nlb: u64) -> Result<(), StatusCode> {
    match slba.checked_add(nlb) {
        Some(end) if end <= g.num_blocks => Ok(()),
        _ => Err(StatusCode::LbaOutOfRange),
    }
}

fn done(r: Result<(), IoError>) -> StatusCode {
    match r {
        Ok(()) => StatusCode::Success,
        Err(e) => io_status(&e),
    }
}

/// Executes one I/O command. `data` is the host's data (writes, compare, DSM ranges).
pub async fn execute(nsc: &NsChannel, sqe: &Sqe, data: &[u8]) -> IoOutcome {
    let cmd = match decode_io(sqe, data) {
        Ok(c) => c,
        Err(code) => return IoOutcome::status(code),
    };
    let g = nsc.geometry().clone();
    let bs = u64::from(g.block_size);
    match cmd {
        IoCommand::Flush { .. } => {
            let (_, r) = nsc.chan.flush().await;
            IoOutcome::status(done(r))
        }
        IoCommand::Read { slba, blocks, .. } | IoCommand::Compare { slba, blocks, .. } => {
            let is_read = matches!(cmd, IoCommand::Read { .. });
            let nlb = u64::from(blocks);
            let bytes = nlb * bs;
            if let Err(c) = range(&g, slba, nlb) {
                return IoOutcome::status(c);
            }
            if bytes > MAX_TRANSFER {
                return IoOutcome::status(StatusCode::InvalidField);
            }
            if is_read && u64::from(sqe.sgl().len) < bytes {
                return IoOutcome::status(StatusCode::DataSglLengthInvalid);
            }
            if !is_read && data.len() as u64 != bytes {
                return IoOutcome::status(StatusCode::DataSglLengthInvalid);
            }
            let bufs = alloc_bufs(bytes).await;
            let (bufs, r) = nsc.chan.read(Lba(slba), bufs).await;
            if let Err(e) = r {
                return IoOutcome::status(io_status(&e));
            }
            if is_read {
                return IoOutcome {
                    status: Status::SUCCESS,
                    data: Some(bufs),
                };
            }
            let mut off = 0usize;
            for b in &bufs {
                let end = off + b.len();
                if data.get(off..end) != Some(&b[..]) {
                    return IoOutcome::status(StatusCode::CompareFailure);
                }
                off = end;
            }
            IoOutcome::status(StatusCode::Success)
        }
        IoCommand::Write {
            slba, blocks, fua, ..
        } => {
            let nlb = u64::from(blocks);
            let bytes = nlb * bs;
            if let Err(c) = range(&g, slba, nlb) {
                return IoOutcome::status(c);
            }
            if bytes > MAX_TRANSFER {
                return IoOutcome::status(StatusCode::InvalidField);
            }
            if data.len() as u64 != bytes {
                return IoOutcome::status(StatusCode::DataSglLengthInvalid);
            }
            let mut bufs = alloc_bufs(bytes).await;
            let mut off = 0usize;
            for b in bufs.iter_mut() {
                let n = b.len();
                b.copy_from_slice(&data[off..off + n]);
                off += n;
            }
            let (_, r) = nsc.chan.write(Lba(slba), bufs, fua).await;
            IoOutcome::status(done(r))
        }
        IoCommand::WriteZeroes {
            slba, blocks, deac, ..
        } => {
            let nlb = u64::from(blocks);
            if let Err(c) = range(&g, slba, nlb) {
                return IoOutcome::status(c);
            }
            let r = if deac && g.supports_unmap {
                nsc.chan.unmap(Lba(slba), nlb).await.1
            } else if g.supports_write_zeroes {
                nsc.chan.write_zeroes(Lba(slba), nlb).await.1
            } else {
                write_zero_buffers(nsc, slba, nlb, bs).await
            };
            IoOutcome::status(done(r))
        }
        IoCommand::Dsm {
            deallocate, ranges, ..
        } => {
            for r in &ranges {
                if let Err(c) = range(&g, r.slba, u64::from(r.blocks)) {
                    return IoOutcome::status(c);
                }
            }
            // Deallocation is advisory: a device that cannot unmap keeps the data.
            if deallocate && g.supports_unmap {
                for r in ranges.iter().filter(|r| r.blocks > 0) {
                    let (_, res) = nsc.chan.unmap(Lba(r.slba), u64::from(r.blocks)).await;
                    if let Err(e) = res {
                        return IoOutcome::status(io_status(&e));
                    }
                }
            }
            IoOutcome::status(StatusCode::Success)
        }
    }
}

async fn write_zero_buffers(nsc: &NsChannel, slba: u64, nlb: u64, bs: u64) -> Result<(), IoError> {
    let mut lba = slba;
    let end = slba + nlb;
    while lba < end {
        let blocks = (end - lba).min(MAX_TRANSFER / bs);
        let mut bufs = alloc_bufs(blocks * bs).await;
        for b in bufs.iter_mut() {
            b.fill(0);
        }
        let (_, r) = nsc.chan.write(Lba(lba), bufs, false).await;
        r?;
        lba += blocks;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_io_error_has_an_nvme_status() {
        let cases = [
            (
                IoError::OutOfRange {
                    lba: 1,
                    blocks: 1,
                    capacity: 1,
                },
                (0, 0x80),
            ),
            (
                IoError::Media {
                    kind: IoKind::Read,
                    errno: 5,
                },
                (2, 0x81),
            ),
            (
                IoError::Media {
                    kind: IoKind::Write,
                    errno: 5,
                },
                (2, 0x80),
            ),
            (IoError::Injected(IoKind::Read), (2, 0x81)),
            (IoError::NoSpace, (0, 0x81)),
            (IoError::ReadOnly, (0, 0x20)),
            (IoError::Aborted, (0, 0x07)),
            (IoError::Unsupported(IoKind::Unmap), (0, 0x01)),
            (
                IoError::ShortTransfer {
                    done: 1,
                    expected: 2,
                },
                (0, 0x04),
            ),
        ];
        for (e, want) in cases {
            assert_eq!(io_status(&e).sct_sc(), want, "{e}");
        }
    }
}
