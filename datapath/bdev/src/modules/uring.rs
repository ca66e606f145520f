//! `uring`: a regular file or a block device, through the reactor's io_uring.
//!
//! Opened `O_DIRECT` by default, so data moves between the registered buffers and the device
//! without the page cache. Each core registers the file in its ring's fixed-file table and
//! routes completions through a [`CompletionHandler`], so an I/O costs one SQE and no
//! allocation: a single buffer goes out as `READ_FIXED`/`WRITE_FIXED`, several as
//! `READV`/`WRITEV` over the slot's iovec array.
//!
//! | operation | regular file | block device |
//! |---|---|---|
//! | write with FUA | `RWF_DSYNC` on the write | same |
//! | flush | `fdatasync` | same (the device's cache flush) |
//! | unmap | `fallocate(PUNCH_HOLE)`: space is freed, blocks read zeros | `fallocate(PUNCH_HOLE)`: write-zeroes with unmap, no fallback |
//! | write-zeroes | `fallocate(ZERO_RANGE)` | `fallocate(ZERO_RANGE)`: zero-out; the kernel writes zeros where the device cannot |

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use basalt_engine::io_uring::{opcode, types};
use basalt_engine::{CompletionHandler, FixedFile, HandlerId, Reactor};

use crate::io::{ChannelImpl, IoKind, IoSlot};
use crate::{Bdev, BdevError, Geometry, IoError, check_block_size};

/// Settings of a uring bdev.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UringConfig {
    /// Regular file or block device.
    pub path: PathBuf,
    /// Logical block size to expose (512 or 4096); default: the device's, 512 for files.
    #[serde(default)]
    pub block_size: Option<u32>,
    /// Bypass the page cache (`O_DIRECT`). Turn off only for file systems without direct I/O
    /// (tmpfs); the durability contract then rests on flushes alone.
    #[serde(default = "default_true")]
    pub direct: bool,
}

fn default_true() -> bool {
    true
}

/// See the module documentation.
#[derive(Debug)]
pub struct UringBdev {
    name: String,
    path: PathBuf,
    file: Arc<File>,
    geometry: Geometry,
    is_block_device: bool,
}

impl UringBdev {
    /// Opens `cfg.path` read-write and works out its geometry.
    ///
    /// # Errors
    /// The path cannot be opened (or not with `O_DIRECT`), is not a file or block device, is
    /// smaller than one block, or the block size is unusable.
    pub fn open(name: &str, cfg: &UringConfig) -> Result<UringBdev, BdevError> {
        let path = cfg.path.clone();
        let open_err = |source| BdevError::Open {
            path: path.clone(),
            source,
        };
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if cfg.direct {
            opts.custom_flags(libc::O_DIRECT);
        }
        let mut file = opts.open(&path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        let is_block_device = meta.file_type().is_block_device();
        if !is_block_device && !meta.is_file() {
            return Err(BdevError::NotABlockTarget { path });
        }
        let device_block = if is_block_device {
            rustix::fs::ioctl_blksszget(&file).map_err(|e| open_err(e.into()))?
        } else {
            512
        };
        let block_size = cfg.block_size.unwrap_or(device_block);
        check_block_size(block_size)?;
        if block_size < device_block {
            return Err(BdevError::BlockSizeBelowDevice {
                asked: block_size,
                device: device_block,
            });
        }
        let bytes = if is_block_device {
            file.seek(SeekFrom::End(0)).map_err(open_err)?
        } else {
            meta.len()
        };
        let num_blocks = bytes / u64::from(block_size);
        if num_blocks == 0 {
            return Err(BdevError::TooSmall { path, block_size });
        }
        tracing::info!(
            bdev = name,
            path = %path.display(),
            block_size,
            num_blocks,
            block_device = is_block_device,
            direct = cfg.direct,
            "uring bdev opened"
        );
        Ok(UringBdev {
            name: name.to_owned(),
            path,
            file: Arc::new(file),
            geometry: Geometry {
                block_size,
                num_blocks,
                supports_unmap: true,
                supports_write_zeroes: true,
                volatile_cache: true,
            },
            is_block_device,
        })
    }

    /// The path this device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the backing object is a block device (as opposed to a regular file).
    pub fn is_block_device(&self) -> bool {
        self.is_block_device
    }
}

impl Bdev for UringBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn geometry(&self) -> Geometry {
        self.geometry.clone()
    }

    fn open_channel(&self) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        let reactor = basalt_engine::current();
        let fixed = reactor.register_file(self.file.as_raw_fd())?;
        let ch = Rc::new(UringChannel {
            reactor: reactor.clone(),
            fixed,
            handler: Cell::new(None),
            inflight: Cell::new(0),
            closing: Cell::new(false),
            released: Cell::new(false),
            block_size: u64::from(self.geometry.block_size),
            _file: self.file.clone(),
        });
        let id = reactor.register_handler(ch.clone());
        ch.handler.set(Some(id));
        Ok(ch)
    }
}

struct UringChannel {
    reactor: Rc<Reactor>,
    fixed: FixedFile,
    handler: Cell<Option<HandlerId>>,
    inflight: Cell<usize>,
    closing: Cell<bool>,
    released: Cell<bool>,
    block_size: u64,
    /// Keeps the descriptor open for as long as this core may use it.
    _file: Arc<File>,
}

impl UringChannel {
    /// Gives the fixed-file slot back once nothing in flight can name it.
    fn release_if_idle(&self) {
        if self.closing.get() && self.inflight.get() == 0 && !self.released.get() {
            self.released.set(true);
            self.reactor.unregister_file(self.fixed);
        }
    }
}

fn len_u32(bytes: u64) -> u32 {
    u32::try_from(bytes).expect("a pool buffer is far below 4 GiB")
}

impl ChannelImpl for UringChannel {
    fn submit(&self, slot: IoSlot) {
        let Some(handler) = self.handler.get() else {
            slot.complete(Err(IoError::Aborted));
            return;
        };
        if self.closing.get() {
            slot.complete(Err(IoError::Aborted));
            return;
        }
        let fd = self.fixed.target();
        let bs = self.block_size;
        let sqe = slot.with_iovecs(|req, iovecs| {
            let offset = req.lba.0 * bs;
            let len = req.blocks * bs;
            let dsync = if req.fua { libc::RWF_DSYNC } else { 0 };
            match req.kind {
                IoKind::Read if req.bufs.len() == 1 => {
                    let b = &mut req.bufs[0];
                    opcode::ReadFixed::new(fd, b.as_mut_ptr(), len_u32(len), b.buf_index())
                        .offset(offset)
                        .build()
                }
                IoKind::Write if req.bufs.len() == 1 => {
                    let b = &req.bufs[0];
                    opcode::WriteFixed::new(fd, b.as_ptr(), len_u32(len), b.buf_index())
                        .offset(offset)
                        .rw_flags(dsync)
                        .build()
                }
                IoKind::Read | IoKind::Write => {
                    iovecs.clear();
                    iovecs.extend(req.bufs.iter_mut().map(|b| libc::iovec {
                        iov_base: b.as_mut_ptr().cast(),
                        iov_len: b.len(),
                    }));
                    let n = u32::try_from(iovecs.len()).expect("few buffers per request");
                    if req.kind == IoKind::Read {
                        opcode::Readv::new(fd, iovecs.as_ptr(), n)
                            .offset(offset)
                            .build()
                    } else {
                        opcode::Writev::new(fd, iovecs.as_ptr(), n)
                            .offset(offset)
                            .rw_flags(dsync)
                            .build()
                    }
                }
                IoKind::Flush => opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build(),
                IoKind::Unmap => opcode::Fallocate::new(fd, len)
                    .offset(offset)
                    .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                    .build(),
                IoKind::WriteZeroes => opcode::Fallocate::new(fd, len)
                    .offset(offset)
                    .mode(libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE)
                    .build(),
            }
        });
        self.inflight.set(self.inflight.get() + 1);
        // SAFETY: the SQE points at the request's buffers and the slot's iovec array; both stay
        // in the slot, unmoved, until this handler completes the slot. The fixed file stays
        // registered until `inflight` drops to zero.
        unsafe { self.reactor.submit_for(handler, slot.into_token(), sqe) };
    }

    fn close(&self) {
        self.closing.set(true);
        if let Some(id) = self.handler.take() {
            self.reactor.retire_handler(id);
        }
        self.release_if_idle();
    }
}

impl CompletionHandler for UringChannel {
    fn complete(&self, token: u64, result: i32, _flags: u32) {
        self.inflight.set(self.inflight.get() - 1);
        let slot = IoSlot::from_token(token);
        let (kind, expected) = slot.with(|r| (r.kind, r.blocks * self.block_size));
        let outcome = if result < 0 {
            Err(IoError::from_errno(kind, -result))
        } else {
            match kind {
                IoKind::Read | IoKind::Write if u64::from(result.unsigned_abs()) != expected => {
                    Err(IoError::ShortTransfer {
                        done: u64::from(result.unsigned_abs()),
                        expected,
                    })
                }
                _ => Ok(()),
            }
        };
        slot.complete(outcome);
        self.release_if_idle();
    }
}
