//! `malloc`: a RAM-backed device shared by every core.
//!
//! The store is an array of `AtomicU64` words accessed with relaxed loads and stores, so cores
//! writing the same blocks at once race the way they would on a disk (the last writer wins,
//! word by word) without undefined behaviour. Fresh and unmapped blocks read as zeros.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::io::{ChannelImpl, IoKind, IoSlot};
use crate::{Bdev, BdevError, Geometry, check_block_size};

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct MallocBdev {
    name: String,
    geometry: Geometry,
    words: Arc<[AtomicU64]>,
}

impl MallocBdev {
    /// A RAM device of `num_blocks` blocks of `block_size` bytes, all zero.
    ///
    /// # Errors
    /// An unsupported block size, zero blocks, or a size that does not fit in memory.
    pub fn new(name: &str, block_size: u32, num_blocks: u64) -> Result<MallocBdev, BdevError> {
        check_block_size(block_size)?;
        if num_blocks == 0 {
            return Err(BdevError::Empty);
        }
        let words = num_blocks
            .checked_mul(u64::from(block_size) / 8)
            .and_then(|w| usize::try_from(w).ok())
            .ok_or_else(|| {
                BdevError::Config(format!("{num_blocks} blocks do not fit in memory"))
            })?;
        let words: Arc<[AtomicU64]> = (0..words).map(|_| AtomicU64::new(0)).collect();
        Ok(MallocBdev {
            name: name.to_owned(),
            geometry: Geometry {
                block_size,
                num_blocks,
                supports_unmap: true,
                supports_write_zeroes: true,
                volatile_cache: false,
            },
            words,
        })
    }
}

struct MallocChannel {
    words: Arc<[AtomicU64]>,
    block_words: usize,
}

impl MallocChannel {
    fn word_range(&self, lba: u64, blocks: u64) -> std::ops::Range<usize> {
        // In range: the channel front validated lba + blocks against the geometry, which was
        // sized from this array.
        let start = usize::try_from(lba).expect("validated") * self.block_words;
        let len = usize::try_from(blocks).expect("validated") * self.block_words;
        start..start + len
    }
}

impl ChannelImpl for MallocChannel {
    fn submit(&self, slot: IoSlot) {
        slot.with(|req| {
            let range = self.word_range(req.lba.0, req.blocks);
            let words = &self.words[range];
            match req.kind {
                IoKind::Read => {
                    let mut w = words.iter();
                    for buf in req.bufs.iter_mut() {
                        for chunk in buf.chunks_exact_mut(8) {
                            let v = w.next().expect("lengths validated").load(Ordering::Relaxed);
                            chunk.copy_from_slice(&v.to_ne_bytes());
                        }
                    }
                }
                IoKind::Write => {
                    let mut w = words.iter();
                    for buf in req.bufs.iter() {
                        for chunk in buf.chunks_exact(8) {
                            let v = u64::from_ne_bytes(chunk.try_into().expect("8-byte chunk"));
                            w.next()
                                .expect("lengths validated")
                                .store(v, Ordering::Relaxed);
                        }
                    }
                }
                IoKind::Unmap | IoKind::WriteZeroes => {
                    for w in words {
                        w.store(0, Ordering::Relaxed);
                    }
                }
                IoKind::Flush => {}
            }
        });
        slot.complete(Ok(()));
    }
}

impl Bdev for MallocBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn geometry(&self) -> Geometry {
        self.geometry.clone()
    }

    fn open_channel(&self) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        Ok(Rc::new(MallocChannel {
            words: self.words.clone(),
            block_words: self.geometry.block_size as usize / 8,
        }))
    }
}
