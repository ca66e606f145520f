//! What basalt-bench drives: a target, opened once, with one queue per core.
//!
//! A target is a block device of this process (`file:`, `malloc:`, `null:`, and `lvol:`, a
//! volume of a volume store), driven in-process on the engine like SPDK's bdevperf, or a remote
//! device reached by an initiator of our own on the same engine: `nvmf:` (NVMe/TCP, see
//! [`crate::nvmf`]) and `iscsi://` (see [`crate::iscsi`]). A worker only ever sees byte offsets
//! and buffers ([`Queue`]), so the jobs, verify mode and reports are the same for every target.
//!
//! Remote targets connect once the engine runs ([`Target::attach`]), and each core opens its own
//! queue (connections) on its reactor ([`Target::queue`]).

use std::path::PathBuf;
use std::sync::Arc;

use basalt_bdev::modules::malloc::MallocBdev;
use basalt_bdev::modules::null::NullBdev;
use basalt_bdev::modules::uring::{UringBdev, UringConfig};
use basalt_bdev::{Bdev, ByteSize, IoChannel, IoError, IoVecs, Lba};
use basalt_engine::Engine;

use crate::iscsi::error::ScsiError;
use crate::iscsi::{IscsiLink, IscsiQueue, IscsiSpec};
use crate::lvol::{LvolSpec, LvolTarget};
use crate::nvmf::{NvmfLink, NvmfQueue, NvmfSession, NvmfSpec};

/// A target as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// `file:PATH` — a regular file or block device through io_uring (O_DIRECT unless
    /// `buffered`).
    File {
        /// The file or device.
        path: PathBuf,
        /// Logical block size to use (512 or 4096; default: the device's).
        block_size: Option<u32>,
        /// Go through the page cache.
        buffered: bool,
    },
    /// `malloc:SIZE` — RAM.
    Malloc {
        /// Capacity.
        size: u64,
        /// 512 or 4096.
        block_size: u32,
    },
    /// `null:SIZE` — discards writes, reads zeros: measures the stack above the device.
    Null {
        /// Capacity.
        size: u64,
        /// 512 or 4096.
        block_size: u32,
    },
    /// `lvol:PATH[,option...]` — a volume of a volume store on a file or device (see
    /// [`crate::lvol`]).
    Lvol(LvolSpec),
    /// `nvmf:HOST[:PORT]/SUBNQN[,option...]` — a namespace over NVMe/TCP (see [`crate::nvmf`]).
    Nvmf(NvmfSpec),
    /// `iscsi://[USER%SECRET@]HOST[:PORT]/IQN/LUN` — a LUN over iSCSI (see [`crate::iscsi`]).
    Iscsi(IscsiSpec),
}

const EXPECTED: &str = "expected file:PATH, malloc:SIZE, null:SIZE, lvol:PATH, nvmf:HOST:PORT/NQN or iscsi://HOST/IQN/LUN";

impl std::str::FromStr for TargetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: {EXPECTED}"))?;
        let size = |r: &str| {
            r.parse::<ByteSize>()
                .map(|b| b.0)
                .map_err(|e| format!("{s:?}: {e}"))
        };
        match scheme {
            "file" if !rest.is_empty() => Ok(TargetSpec::File {
                path: rest.into(),
                block_size: None,
                buffered: false,
            }),
            "malloc" => Ok(TargetSpec::Malloc {
                size: size(rest)?,
                block_size: 512,
            }),
            "null" => Ok(TargetSpec::Null {
                size: size(rest)?,
                block_size: 512,
            }),
            "lvol" => Ok(TargetSpec::Lvol(rest.parse()?)),
            "nvmf" => Ok(TargetSpec::Nvmf(rest.parse()?)),
            "iscsi" => Ok(TargetSpec::Iscsi(s.parse()?)),
            _ => Err(format!("{s:?}: unknown target; {EXPECTED}")),
        }
    }
}

impl TargetSpec {
    /// Sets the logical block size of the target.
    pub fn with_block_size(mut self, bs: Option<u32>) -> TargetSpec {
        if let Some(v) = bs {
            match &mut self {
                TargetSpec::File { block_size, .. } => *block_size = Some(v),
                TargetSpec::Malloc { block_size, .. } | TargetSpec::Null { block_size, .. } => {
                    *block_size = v;
                }
                TargetSpec::Lvol(_) | TargetSpec::Nvmf(_) | TargetSpec::Iscsi(_) => {}
            }
        }
        self
    }

    /// Turns O_DIRECT off for file targets.
    pub fn with_buffered(mut self, on: bool) -> TargetSpec {
        if let TargetSpec::File { buffered, .. } = &mut self {
            *buffered = on;
        }
        self
    }

    /// Opens the target. A remote target connects later, in [`Target::attach`].
    ///
    /// # Errors
    /// The device cannot be opened or sized as asked.
    pub fn open(&self) -> Result<Target, basalt_bdev::BdevError> {
        let remote = match self {
            TargetSpec::Nvmf(spec) => Some(Backend::Nvmf {
                spec: spec.clone(),
                link: None,
            }),
            TargetSpec::Iscsi(spec) => Some(Backend::Iscsi {
                spec: spec.clone(),
                link: None,
            }),
            _ => None,
        };
        if let Some(backend) = remote {
            return Ok(Target {
                backend,
                description: self.to_string(),
                lvol: None,
            });
        }
        if let TargetSpec::Malloc { size, block_size } | TargetSpec::Null { size, block_size } =
            self
            && !size.is_multiple_of(u64::from(*block_size))
        {
            return Err(basalt_bdev::BdevError::Config(format!(
                "size {size} is not a multiple of the block size {block_size}"
            )));
        }
        let mut lvol = None;
        let bdev: Arc<dyn Bdev> = match self {
            TargetSpec::Lvol(spec) => {
                let (bdev, t) = crate::lvol::setup(spec).map_err(basalt_bdev::BdevError::Config)?;
                lvol = Some(t);
                bdev
            }
            TargetSpec::File {
                path,
                block_size,
                buffered,
            } => Arc::new(UringBdev::open(
                "bench",
                &UringConfig {
                    path: path.clone(),
                    block_size: *block_size,
                    direct: !buffered,
                },
            )?),
            TargetSpec::Malloc { size, block_size } => Arc::new(MallocBdev::new(
                "bench",
                *block_size,
                size / u64::from(*block_size),
            )?),
            TargetSpec::Null { size, block_size } => Arc::new(NullBdev::new(
                "bench",
                *block_size,
                size / u64::from(*block_size),
            )?),
            TargetSpec::Nvmf(_) | TargetSpec::Iscsi(_) => unreachable!("handled above"),
        };
        Ok(Target {
            backend: Backend::Bdev(bdev),
            description: self.to_string(),
            lvol,
        })
    }
}

impl std::fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetSpec::File {
                path,
                block_size,
                buffered,
            } => {
                write!(f, "file:{}", path.display())?;
                if let Some(bs) = block_size {
                    write!(f, " (block size {bs})")?;
                }
                if *buffered {
                    write!(f, " (buffered)")?;
                }
                Ok(())
            }
            TargetSpec::Malloc { size, block_size } => {
                write!(f, "malloc:{size} (block size {block_size})")
            }
            TargetSpec::Null { size, block_size } => {
                write!(f, "null:{size} (block size {block_size})")
            }
            TargetSpec::Lvol(spec) => write!(f, "{spec}"),
            TargetSpec::Nvmf(spec) => write!(f, "{spec}"),
            TargetSpec::Iscsi(spec) => write!(f, "{spec}"),
        }
    }
}

/// How a target is reached.
#[derive(Debug, Clone)]
enum Backend {
    /// A block device of this process.
    Bdev(Arc<dyn Bdev>),
    /// NVMe/TCP; `link` once attached.
    Nvmf {
        spec: NvmfSpec,
        link: Option<Arc<NvmfLink>>,
    },
    /// iSCSI; `link` once attached.
    Iscsi {
        spec: IscsiSpec,
        link: Option<Arc<IscsiLink>>,
    },
}

/// An opened target, shareable across cores.
#[derive(Debug, Clone)]
pub struct Target {
    backend: Backend,
    description: String,
    lvol: Option<LvolTarget>,
}

/// What keeps a remote target connected during a run; [`Attachment::close`] ends it.
#[derive(Debug)]
pub enum Attachment {
    /// Nothing to keep (a local device, or iSCSI, whose sessions are per core).
    None,
    /// The NVMe/TCP controller (admin queue) on the first reactor.
    Nvmf(NvmfSession),
}

impl Attachment {
    /// Disconnects (for NVMe/TCP: a controller shutdown).
    pub fn close(self) {
        match self {
            Attachment::None => {}
            Attachment::Nvmf(s) => s.close(),
        }
    }
}

impl Target {
    /// Bytes addressable (0 for a remote target not yet attached).
    pub fn capacity(&self) -> u64 {
        match &self.backend {
            Backend::Bdev(b) => b.geometry().bytes(),
            Backend::Nvmf { link, .. } => link.as_ref().map_or(0, |l| {
                l.ns.blocks.saturating_mul(u64::from(l.ns.block_size))
            }),
            Backend::Iscsi { link, .. } => link.as_ref().map_or(0, |l| l.capacity),
        }
    }

    /// The unit every offset and length must be a multiple of.
    pub fn block_size(&self) -> u32 {
        match &self.backend {
            Backend::Bdev(b) => b.geometry().block_size,
            Backend::Nvmf { link, .. } => link.as_ref().map_or(512, |l| l.ns.block_size),
            Backend::Iscsi { link, .. } => link.as_ref().map_or(512, |l| l.block_size),
        }
    }

    /// Largest I/O the target takes in one command, if it has a limit.
    pub fn max_io(&self) -> Option<u64> {
        match &self.backend {
            Backend::Nvmf { link, .. } => link.as_ref().and_then(|l| l.max_transfer),
            Backend::Bdev(_) | Backend::Iscsi { .. } => None,
        }
    }

    /// Whether reads of this target skip copying their data into the buffers (`nvmf:`'s
    /// `nocopy`), which makes verify meaningless.
    pub fn drops_read_data(&self) -> bool {
        matches!(&self.backend, Backend::Nvmf { spec, .. } if spec.nocopy)
    }

    /// The store behind an `lvol:` target.
    pub fn lvol(&self) -> Option<&LvolTarget> {
        self.lvol.as_ref()
    }

    /// How the target was named.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Connects a remote target with the engine's reactors (a local device needs nothing):
    /// returns the target, now sized, and what keeps it connected.
    ///
    /// # Errors
    /// The remote target cannot be reached, refuses us, or has no usable device.
    pub fn attach(&self, engine: &Engine) -> Result<(Target, Attachment), String> {
        let mut t = self.clone();
        let att = match &mut t.backend {
            Backend::Bdev(_) => Attachment::None,
            Backend::Nvmf { spec, link } => {
                let (l, session) = crate::nvmf::attach(spec, engine)?;
                *link = Some(l);
                Attachment::Nvmf(session)
            }
            Backend::Iscsi { spec, link } => {
                *link = Some(crate::iscsi::attach(spec, engine)?);
                Attachment::None
            }
        };
        Ok((t, att))
    }

    /// Opens this core's queue for `qd` I/Os in flight. Call on a reactor, after
    /// [`Target::attach`].
    ///
    /// # Errors
    /// The device refused a channel on this core, or the remote target a connection.
    pub async fn queue(&self, qd: usize) -> Result<Queue, String> {
        match &self.backend {
            Backend::Bdev(b) => Ok(Queue::Bdev(b.open().map_err(|e| e.to_string())?)),
            Backend::Nvmf { link: Some(l), .. } => Ok(Queue::Nvmf(NvmfQueue::open(l, qd).await?)),
            Backend::Iscsi { link: Some(l), .. } => {
                Ok(Queue::Iscsi(IscsiQueue::open(l, qd).await?))
            }
            Backend::Nvmf { link: None, .. } | Backend::Iscsi { link: None, .. } => {
                Err("the target is not attached".into())
            }
        }
    }
}

/// Why one I/O failed.
#[derive(Debug, displaydoc::Display, thiserror::Error)]
pub enum QueueError {
    /// {0}
    Device(#[from] IoError),
    /// NVMe/TCP: {0}
    Nvme(basalt_nvmf::host::HostError),
    /// iSCSI: {0}
    Scsi(#[from] ScsiError),
    /// {0}
    Request(String),
}

/// One core's path to the target.
#[derive(Debug)]
pub enum Queue {
    /// A block device of this process.
    Bdev(IoChannel),
    /// NVMe/TCP I/O queues of this core.
    Nvmf(NvmfQueue),
    /// An iSCSI session of this core.
    Iscsi(IscsiQueue),
}

impl Queue {
    /// Reads `bufs`' total length at byte `offset`.
    pub async fn read(&self, offset: u64, bufs: IoVecs) -> (IoVecs, Result<(), QueueError>) {
        match self {
            Queue::Bdev(ch) => {
                let lba = offset / u64::from(ch.geometry().block_size);
                let (b, r) = ch.read(Lba(lba), bufs).await;
                (b, r.map_err(QueueError::from))
            }
            Queue::Nvmf(q) => q.read(offset, bufs).await,
            Queue::Iscsi(q) => {
                let (b, r) = q.read(offset, bufs).await;
                (b, r.map_err(QueueError::from))
            }
        }
    }

    /// Writes `bufs` at byte `offset`.
    pub async fn write(&self, offset: u64, bufs: IoVecs) -> (IoVecs, Result<(), QueueError>) {
        match self {
            Queue::Bdev(ch) => {
                let lba = offset / u64::from(ch.geometry().block_size);
                let (b, r) = ch.write(Lba(lba), bufs, false).await;
                (b, r.map_err(QueueError::from))
            }
            Queue::Nvmf(q) => q.write(offset, bufs).await,
            Queue::Iscsi(q) => {
                let (b, r) = q.write(offset, bufs).await;
                (b, r.map_err(QueueError::from))
            }
        }
    }

    /// Closes the queue's connections (a logout for iSCSI); nothing for a local device.
    pub async fn close(&self) {
        match self {
            Queue::Bdev(_) => {}
            Queue::Nvmf(q) => q.close(),
            Queue::Iscsi(q) => q.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        assert_eq!(
            "malloc:64M".parse::<TargetSpec>(),
            Ok(TargetSpec::Malloc {
                size: 64 << 20,
                block_size: 512
            })
        );
        let f: TargetSpec = "file:/tmp/x".parse().expect("parses");
        assert_eq!(f.to_string(), "file:/tmp/x");
        assert!("tape:/dev/st0".parse::<TargetSpec>().is_err());
        assert!("file:".parse::<TargetSpec>().is_err());
        assert!("null:lots".parse::<TargetSpec>().is_err());
        let n: TargetSpec = "nvmf:127.0.0.1:4420/nqn.2026-11.org.basalt:a,queues=2"
            .parse()
            .expect("parses");
        assert!(matches!(&n, TargetSpec::Nvmf(s) if s.queues == 2));
        assert_eq!(
            n.to_string(),
            "nvmf:127.0.0.1:4420/nqn.2026-11.org.basalt:a,queues=2"
        );
        let i: TargetSpec = "iscsi://u%secret12@localhost/iqn.2026-11.org.basalt:a/1"
            .parse()
            .expect("parses");
        assert_eq!(
            i.to_string(),
            "iscsi://u%***@localhost:3260/iqn.2026-11.org.basalt:a/1"
        );
        assert!("nvmf:host".parse::<TargetSpec>().is_err());
    }
}
