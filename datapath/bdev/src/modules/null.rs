//! `null`: a device that stores nothing. Writes succeed and vanish; reads return zeros (never
//! stale pool memory). For measuring everything above the device.

use std::rc::Rc;

use crate::io::{ChannelImpl, IoKind, IoSlot};
use crate::{Bdev, BdevError, Geometry, check_block_size};

/// See the module documentation.
#[derive(Debug)]
pub struct NullBdev {
    name: String,
    geometry: Geometry,
}

impl NullBdev {
    /// A null device of `num_blocks` blocks of `block_size` bytes.
    ///
    /// # Errors
    /// An unsupported block size or zero blocks.
    pub fn new(name: &str, block_size: u32, num_blocks: u64) -> Result<NullBdev, BdevError> {
        check_block_size(block_size)?;
        if num_blocks == 0 {
            return Err(BdevError::Empty);
        }
        Ok(NullBdev {
            name: name.to_owned(),
            geometry: Geometry {
                block_size,
                num_blocks,
                supports_unmap: true,
                supports_write_zeroes: true,
                volatile_cache: false,
            },
        })
    }
}

struct NullChannel;

impl ChannelImpl for NullChannel {
    fn submit(&self, slot: IoSlot) {
        slot.with(|req| {
            if req.kind == IoKind::Read {
                for b in req.bufs.iter_mut() {
                    b.fill(0);
                }
            }
        });
        slot.complete(Ok(()));
    }
}

impl Bdev for NullBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn geometry(&self) -> Geometry {
        self.geometry.clone()
    }

    fn open_channel(&self) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        Ok(Rc::new(NullChannel))
    }
}
