//! Data slots: fixed-size buffers in the region for bulk bytes (backup reads, restore writes,
//! volume copies).
//!
//! # Ownership
//!
//! Control owns every slot. It allocates one from its [`SlotPool`] (a bitmap in its own,
//! private memory), names it in a command ([`SlotSpan`]: slot, offset, length), and gets it
//! back when the matching completion arrives, or when the request fails because the peer went
//! away. The datapath touches a slot only while it works on a command that names it, and
//! checks the span against the geometry before it does.
//!
//! Why a bitmap owned by one side rather than a free-list ring per direction:
//!
//! - every bulk transfer is started by control (backup, restore, copy are control-plane
//!   operations), so one side allocating is enough, and lending a slot is just an index in a
//!   message that already exists: no second ring to keep in step;
//! - the allocator is not in shared memory at all, so a crashed or hostile datapath cannot
//!   corrupt it, leak slots into it, or hand control a slot twice; after a peer dies, control
//!   frees the slots of the failed requests itself ([`SlotPool::release`]) and a new region
//!   starts with a fresh pool;
//! - slots in flight are bounded by the pool, which is the back-pressure on bulk transfers.
//!
//! Shared memory gives no protection between the processes: the datapath *can* write any slot.
//! The ownership is a protocol rule that control enforces on what it reads back (it only
//! accepts a completion for a slot it lent to that request).

use std::ptr::NonNull;
use std::sync::Arc;

use crate::error::FieldError;
use crate::error::SlotError;
use crate::msg::{FieldReader, FieldWriter};
use crate::region::Region;
use crate::shm::Shm;

/// Index of a data slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotId(pub u32);

/// A byte range of one slot, as named in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSpan {
    /// The slot.
    pub slot: SlotId,
    /// First byte within the slot.
    pub offset: u32,
    /// Bytes.
    pub len: u32,
}

impl SlotSpan {
    /// The whole of `slot`, `len` bytes from its start.
    pub fn new(slot: SlotId, len: u32) -> Self {
        SlotSpan {
            slot,
            offset: 0,
            len,
        }
    }

    /// Appends the span as three `u32` fields.
    pub fn encode(&self, w: &mut FieldWriter<'_>) {
        w.u32(self.slot.0).u32(self.offset).u32(self.len);
    }

    /// Reads a span written by [`SlotSpan::encode`] (not yet checked against a region: see
    /// [`Slots::check`]).
    ///
    /// # Errors
    ///
    /// [`FieldError::Truncated`].
    pub fn decode(r: &mut FieldReader<'_>) -> Result<Self, FieldError> {
        Ok(SlotSpan {
            slot: SlotId(r.u32()?),
            offset: r.u32()?,
            len: r.u32()?,
        })
    }
}

/// Bounds-checked access to the data slots of a region (both sides).
#[derive(Debug, Clone)]
pub struct Slots {
    shm: Arc<Shm>,
    base: usize,
    size: u32,
    count: u32,
}

impl Slots {
    /// The slots of `region`.
    pub fn new(region: &Region) -> Self {
        let g = region.geometry();
        Slots {
            shm: region.shm().clone(),
            base: region.layout().slots,
            size: g.slot_size,
            count: g.slot_count,
        }
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> u32 {
        self.size
    }

    /// Number of slots.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Checks that `span` lies inside one slot; returns its offset in the region.
    ///
    /// # Errors
    ///
    /// [`SlotError::NoSuchSlot`] or [`SlotError::OutOfSlot`].
    pub fn check(&self, span: SlotSpan) -> Result<usize, SlotError> {
        if span.slot.0 >= self.count {
            return Err(SlotError::NoSuchSlot {
                slot: span.slot.0,
                count: self.count,
            });
        }
        let end = u64::from(span.offset) + u64::from(span.len);
        if end > u64::from(self.size) {
            return Err(SlotError::OutOfSlot {
                offset: span.offset,
                len: span.len,
                size: self.size,
            });
        }
        Ok(self.base + span.slot.0 as usize * self.size as usize + span.offset as usize)
    }

    /// Copies `src` into the slot at `span.offset` (`span.len` must equal `src.len()`).
    ///
    /// # Errors
    ///
    /// As [`Slots::check`], and [`SlotError::LengthMismatch`].
    pub fn write(&self, span: SlotSpan, src: &[u8]) -> Result<(), SlotError> {
        let at = self.check(span)?;
        if src.len() != span.len as usize {
            return Err(SlotError::LengthMismatch {
                span: span.len,
                buf: src.len(),
            });
        }
        self.shm.copy_in(at, src);
        Ok(())
    }

    /// Copies the span out of the slot into `dst` (`span.len` must equal `dst.len()`).
    ///
    /// # Errors
    ///
    /// As [`Slots::write`].
    pub fn read(&self, span: SlotSpan, dst: &mut [u8]) -> Result<(), SlotError> {
        let at = self.check(span)?;
        if dst.len() != span.len as usize {
            return Err(SlotError::LengthMismatch {
                span: span.len,
                buf: dst.len(),
            });
        }
        self.shm.copy_out(at, dst);
        Ok(())
    }

    /// The address of the span in this process, for I/O straight into or out of the slot
    /// (an io_uring READ into a slot, with no copy). The pointer is valid while this `Slots`
    /// (or any clone of its region) lives. Using it is `unsafe`: the caller must respect the
    /// ownership rules above, and keep in mind that the peer may change the bytes.
    ///
    /// # Errors
    ///
    /// As [`Slots::check`].
    pub fn as_ptr(&self, span: SlotSpan) -> Result<NonNull<u8>, SlotError> {
        let at = self.check(span)?;
        Ok(self.shm.ptr(at, span.len as usize))
    }
}

/// Control's allocator of slots: one bit per slot, in private memory.
#[derive(Debug, Clone)]
pub struct SlotPool {
    /// Bit set: the slot is lent out.
    used: Vec<u64>,
    count: u32,
    free: u32,
    /// Where the next search starts (round robin, so a just-freed slot is reused last).
    next: u32,
}

impl SlotPool {
    /// A pool of `count` free slots.
    pub fn new(count: u32) -> Self {
        SlotPool {
            used: vec![0; count.div_ceil(64) as usize],
            count,
            free: count,
            next: 0,
        }
    }

    /// Slots free now.
    pub fn free(&self) -> u32 {
        self.free
    }

    /// Slots in all.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Takes a free slot, or `None` when all are lent out (back-pressure: wait for a
    /// completion).
    pub fn alloc(&mut self) -> Option<SlotId> {
        if self.free == 0 {
            return None;
        }
        for k in 0..self.count {
            let i = (self.next + k) % self.count;
            let (w, b) = ((i / 64) as usize, i % 64);
            if self.used[w] & (1 << b) == 0 {
                self.used[w] |= 1 << b;
                self.free -= 1;
                self.next = (i + 1) % self.count;
                return Some(SlotId(i));
            }
        }
        unreachable!("free count says a slot is free")
    }

    /// Returns a slot.
    ///
    /// # Errors
    ///
    /// [`SlotError::NoSuchSlot`], or [`SlotError::NotLent`] for a slot that is already free
    /// (a double release: a bug, or a peer naming a slot it was not given).
    pub fn release(&mut self, slot: SlotId) -> Result<(), SlotError> {
        if slot.0 >= self.count {
            return Err(SlotError::NoSuchSlot {
                slot: slot.0,
                count: self.count,
            });
        }
        let (w, b) = ((slot.0 / 64) as usize, slot.0 % 64);
        if self.used[w] & (1 << b) == 0 {
            return Err(SlotError::NotLent { slot: slot.0 });
        }
        self.used[w] &= !(1 << b);
        self.free += 1;
        Ok(())
    }

    /// Whether `slot` is lent out.
    pub fn is_lent(&self, slot: SlotId) -> bool {
        slot.0 < self.count && self.used[(slot.0 / 64) as usize] & (1 << (slot.0 % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::{Epoch, Geometry, RingGeometry};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn region() -> Region {
        let ring = RingGeometry {
            frames: 2,
            frame_size: 64,
        };
        let g = Geometry {
            commands: ring,
            completions: ring,
            events: ring,
            slot_size: 8192,
            slot_count: 3,
        };
        Region::create(&g, Epoch(1)).expect("create")
    }

    #[test]
    fn slots_are_separate_and_bounded() {
        let r = region();
        let s = Slots::new(&r);
        let other =
            Slots::new(&Region::open(r.fd().try_clone_to_owned().expect("dup")).expect("open"));
        for i in 0..3 {
            s.write(SlotSpan::new(SlotId(i), 8192), &vec![i as u8 + 1; 8192])
                .expect("in range");
        }
        let mut buf = vec![0u8; 100];
        other
            .read(
                SlotSpan {
                    slot: SlotId(1),
                    offset: 8092,
                    len: 100,
                },
                &mut buf,
            )
            .expect("read");
        assert!(buf.iter().all(|&b| b == 2));
        let bad = [
            SlotSpan {
                slot: SlotId(3),
                offset: 0,
                len: 1,
            },
            SlotSpan {
                slot: SlotId(u32::MAX),
                offset: 0,
                len: 0,
            },
            SlotSpan {
                slot: SlotId(0),
                offset: 8192,
                len: 1,
            },
            SlotSpan {
                slot: SlotId(0),
                offset: u32::MAX,
                len: u32::MAX,
            },
        ];
        for span in bad {
            assert!(s.check(span).is_err(), "{span:?}");
            assert!(s.as_ptr(span).is_err());
        }
        assert!(matches!(
            s.write(SlotSpan::new(SlotId(0), 10), b"short"),
            Err(SlotError::LengthMismatch { .. })
        ));
        let p = s.as_ptr(SlotSpan::new(SlotId(2), 1)).expect("ptr");
        assert_eq!(p.as_ptr() as usize % 4096, 0, "slots are page aligned");
    }

    #[test]
    fn span_fields_roundtrip() {
        let span = SlotSpan {
            slot: SlotId(5),
            offset: 4096,
            len: 512,
        };
        let mut buf = Vec::new();
        span.encode(&mut FieldWriter::new(&mut buf));
        assert_eq!(SlotSpan::decode(&mut FieldReader::new(&buf)), Ok(span));
        assert!(SlotSpan::decode(&mut FieldReader::new(&buf[..11])).is_err());
    }

    #[test]
    fn pool_lends_each_slot_once() {
        let mut p = SlotPool::new(3);
        let a = p.alloc().expect("free");
        let b = p.alloc().expect("free");
        let c = p.alloc().expect("free");
        assert_eq!(p.alloc(), None);
        assert_eq!(BTreeSet::from([a, b, c]).len(), 3);
        p.release(b).expect("lent");
        assert_eq!(p.release(b), Err(SlotError::NotLent { slot: b.0 }));
        assert!(matches!(
            p.release(SlotId(3)),
            Err(SlotError::NoSuchSlot { .. })
        ));
        assert_eq!(p.alloc(), Some(b));
        assert_eq!(SlotPool::new(0).alloc(), None);
    }

    proptest! {
        #[test]
        fn pool_matches_a_set(count in 0u32..200, ops in prop::collection::vec(any::<(bool, u32)>(), 0..400)) {
            let mut p = SlotPool::new(count);
            let mut lent = BTreeSet::new();
            for (alloc, pick) in ops {
                if alloc {
                    match p.alloc() {
                        Some(s) => prop_assert!(lent.insert(s) && s.0 < count),
                        None => prop_assert_eq!(lent.len() as u32, count),
                    }
                } else {
                    let s = SlotId(pick % (count + 1));
                    let want = lent.remove(&s);
                    prop_assert_eq!(p.release(s).is_ok(), want);
                }
                prop_assert_eq!(p.free() as usize, count as usize - lent.len());
            }
        }
    }
}
