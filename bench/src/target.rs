//! What basalt-bench drives: a target, opened once, with one queue per core.
//!
//! Today every target is a block device of this process (`file:`, `malloc:`, `null:`, and
//! `lvol:`, a volume of a volume store), driven
//! in-process on the engine, like SPDK's bdevperf. Network initiators (iSCSI, NVMe/TCP, NBD)
//! become further [`TargetSpec`] and [`Queue`] variants: a worker only ever sees byte offsets
//! and buffers, so the jobs, verify mode and reports stay the same for every target.

use std::path::PathBuf;
use std::sync::Arc;

use basalt_bdev::modules::malloc::MallocBdev;
use basalt_bdev::modules::null::NullBdev;
use basalt_bdev::modules::uring::{UringBdev, UringConfig};
use basalt_bdev::{Bdev, ByteSize, IoChannel, IoError, IoVecs, Lba};

use crate::lvol::{LvolSpec, LvolTarget};

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
}

impl std::str::FromStr for TargetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s.split_once(':').ok_or_else(|| {
            format!("{s:?}: expected file:PATH, malloc:SIZE, null:SIZE or lvol:PATH")
        })?;
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
            _ => Err(format!(
                "{s:?}: unknown target; expected file:PATH, malloc:SIZE, null:SIZE or lvol:PATH"
            )),
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
                TargetSpec::Lvol(_) => {}
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

    /// Opens the target.
    ///
    /// # Errors
    /// The device cannot be opened or sized as asked.
    pub fn open(&self) -> Result<Target, basalt_bdev::BdevError> {
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
        };
        Ok(Target {
            bdev,
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
        }
    }
}

/// An opened target, shareable across cores.
#[derive(Debug, Clone)]
pub struct Target {
    bdev: Arc<dyn Bdev>,
    description: String,
    lvol: Option<LvolTarget>,
}

impl Target {
    /// Bytes addressable.
    pub fn capacity(&self) -> u64 {
        self.bdev.geometry().bytes()
    }

    /// The unit every offset and length must be a multiple of.
    pub fn block_size(&self) -> u32 {
        self.bdev.geometry().block_size
    }

    /// The store behind an `lvol:` target.
    pub fn lvol(&self) -> Option<&LvolTarget> {
        self.lvol.as_ref()
    }

    /// How the target was named.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Opens this core's queue. Call on a reactor.
    ///
    /// # Errors
    /// The device refused a channel on this core.
    pub fn queue(&self) -> Result<Queue, basalt_bdev::BdevError> {
        Ok(Queue::Bdev(self.bdev.open()?))
    }
}

/// One core's path to the target.
#[derive(Debug)]
pub enum Queue {
    /// A block device of this process.
    Bdev(IoChannel),
}

impl Queue {
    /// Reads `bufs`' total length at byte `offset`.
    pub async fn read(&self, offset: u64, bufs: IoVecs) -> (IoVecs, Result<(), IoError>) {
        match self {
            Queue::Bdev(ch) => {
                let lba = offset / u64::from(ch.geometry().block_size);
                ch.read(Lba(lba), bufs).await
            }
        }
    }

    /// Writes `bufs` at byte `offset`.
    pub async fn write(&self, offset: u64, bufs: IoVecs) -> (IoVecs, Result<(), IoError>) {
        match self {
            Queue::Bdev(ch) => {
                let lba = offset / u64::from(ch.geometry().block_size);
                ch.write(Lba(lba), bufs, false).await
            }
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
    }
}
