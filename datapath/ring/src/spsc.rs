//! Lock-free single-producer single-consumer rings of fixed-size frames.
//!
//! # State
//!
//! A ring is `frames` (a power of two) frames of `frame_size` bytes, and two counters on their
//! own cache lines: `head`, written only by the consumer (frames read so far), and `tail`,
//! written only by the producer (frames written so far). Frame `n` lives at index
//! `n % frames`. Both counters are free-running `u64`s; all arithmetic on them wraps, so the
//! ring keeps working across 2^64 (tests start near `u64::MAX`). The ring holds
//! `tail - head` frames, and a sane ring always has `0 <= tail - head <= frames`.
//!
//! Each frame is a 4-byte little-endian length `n` and then `n` bytes (`n <= frame_size - 4`).
//!
//! # Ordering
//!
//! - The producer writes a frame, then stores `tail` with `Release`. The consumer loads `tail`
//!   with `Acquire` before it reads the frame, so it sees the bytes.
//! - The consumer reads a frame, then stores `head` with `Release`. The producer loads `head`
//!   with `Acquire` before it overwrites that frame, so the consumer's reads are done.
//!
//! Each side keeps its own counter in private memory and never reads it back from the region:
//! the peer cannot move our counter. Each side caches the peer's counter and reloads it only
//! when the cached value says the ring is full (producer) or empty (consumer).
//!
//! # A hostile peer
//!
//! The peer's counter is checked on every load: a `head` or `tail` that puts more than `frames`
//! frames in the ring, or a negative number, is [`RingError::Corrupt`]. A frame length beyond
//! the frame is [`RingError::BadFrameLength`] (the frame is skipped). Every frame is copied
//! out before it is looked at. Nothing the peer writes can make this code index outside the
//! ring or panic.
//!
//! # Wake-ups
//!
//! `arm` and `needs_wake` are the two halves of the sleep protocol: a consumer about to
//! sleep swaps its direction's waiting flag to 1 and re-checks its rings; a producer, after
//! publishing, swaps the flag back to 0 and signals the eventfd if it was 1. Both are
//! read-modify-writes of the same word, so one of them is ordered after the other: either the
//! producer sees the flag (and signals) or the consumer sees the new tail (and does not
//! sleep). No message is left behind by a sleeping consumer. The loom models in
//! `loom_tests.rs` check exactly this, and the index protocol above.
//!
//! The index logic is generic over [`RingMem`], the storage of one ring: the shared region in
//! production ([`ShmRing`]), loom's atomics and cells in the models.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::RingError;
use crate::region::{RingIndices, RingLayout};
use crate::shm::Shm;

/// Bytes of the length word at the start of each frame.
pub const FRAME_PREFIX: usize = 4;

/// Storage of one ring: its two counters and its frames. [`ShmRing`] in production; the
/// loom models and unit tests bring their own. All methods are safe: a wrong implementation
/// gives wrong messages, never undefined behaviour.
pub trait RingMem {
    /// Number of frames, a power of two.
    fn frames(&self) -> u64;
    /// Bytes per frame.
    fn frame_size(&self) -> usize;
    /// Loads the consumer's counter.
    fn load_head(&self, order: Ordering) -> u64;
    /// Stores the consumer's counter.
    fn store_head(&self, value: u64, order: Ordering);
    /// Loads the producer's counter.
    fn load_tail(&self, order: Ordering) -> u64;
    /// Stores the producer's counter.
    fn store_tail(&self, value: u64, order: Ordering);
    /// Writes `src` at `offset` in frame `index` (`offset + src.len() <= frame_size`).
    fn write(&self, index: usize, offset: usize, src: &[u8]);
    /// Reads `dst.len()` bytes at `offset` of frame `index`.
    fn read(&self, index: usize, offset: usize, dst: &mut [u8]);
}

/// A waiting flag of one direction (see [`arm`]).
pub(crate) trait WaitFlag {
    fn swap(&self, value: u32, order: Ordering) -> u32;
    fn store(&self, value: u32, order: Ordering);
}

impl WaitFlag for AtomicU32 {
    fn swap(&self, value: u32, order: Ordering) -> u32 {
        AtomicU32::swap(self, value, order)
    }
    fn store(&self, value: u32, order: Ordering) {
        AtomicU32::store(self, value, order);
    }
}

/// Consumer side, before it sleeps: sets the waiting flag, then runs `ready` (which re-checks
/// the rings). Returns true when something is ready: then the flag is cleared again and the
/// caller must not sleep. Returns false when the caller may sleep: a producer that publishes
/// from now on will see the flag and signal.
pub(crate) fn arm<F: WaitFlag>(flag: &F, ready: impl FnOnce() -> bool) -> bool {
    flag.swap(1, Ordering::AcqRel);
    if ready() {
        flag.store(0, Ordering::Relaxed);
        true
    } else {
        false
    }
}

/// Producer side, after it published: true if the consumer is (about to be) asleep and must
/// be signalled. Clears the flag, so several producers signal once.
pub(crate) fn needs_wake<F: WaitFlag>(flag: &F) -> bool {
    flag.swap(0, Ordering::AcqRel) != 0
}

/// Checks that `tail - head` is a possible fill level.
fn fill(head: u64, tail: u64, frames: u64) -> Result<u64, RingError> {
    let n = tail.wrapping_sub(head);
    if n > frames {
        return Err(RingError::Corrupt { head, tail, frames });
    }
    Ok(n)
}

/// The writing end of a ring.
#[derive(Debug)]
pub struct Producer<M: RingMem = ShmRing> {
    mem: M,
    tail: u64,
    cached_head: u64,
}

impl<M: RingMem> Producer<M> {
    /// Takes the producer end; its counter starts where the region's says.
    pub(crate) fn new(mem: M) -> Result<Self, RingError> {
        let tail = mem.load_tail(Ordering::Relaxed);
        let head = mem.load_head(Ordering::Acquire);
        fill(head, tail, mem.frames())?;
        Ok(Producer {
            mem,
            tail,
            cached_head: head,
        })
    }

    /// Largest message a frame holds.
    pub fn max_message(&self) -> usize {
        self.mem.frame_size() - FRAME_PREFIX
    }

    /// Frames free for writing now (reloads the consumer's counter).
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the consumer's counter is impossible.
    pub fn free(&mut self) -> Result<u64, RingError> {
        self.cached_head = self.mem.load_head(Ordering::Acquire);
        Ok(self.mem.frames() - fill(self.cached_head, self.tail, self.mem.frames())?)
    }

    /// Writes one frame made of `parts` (concatenated) and publishes it.
    ///
    /// # Errors
    ///
    /// [`RingError::TooLarge`] if the parts exceed [`Producer::max_message`],
    /// [`RingError::Full`] if there is no free frame, [`RingError::Corrupt`] if the
    /// consumer's counter is impossible. Nothing is published on error.
    pub fn try_push(&mut self, parts: &[&[u8]]) -> Result<(), RingError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > self.max_message() {
            return Err(RingError::TooLarge {
                len,
                max: self.max_message(),
            });
        }
        let frames = self.mem.frames();
        if self.tail.wrapping_sub(self.cached_head) >= frames {
            self.cached_head = self.mem.load_head(Ordering::Acquire);
            if fill(self.cached_head, self.tail, frames)? == frames {
                return Err(RingError::Full);
            }
        }
        let index = (self.tail & (frames - 1)) as usize;
        let len32 = u32::try_from(len).expect("below the 64 KiB frame limit");
        self.mem.write(index, 0, &len32.to_le_bytes());
        let mut at = FRAME_PREFIX;
        for p in parts {
            self.mem.write(index, at, p);
            at += p.len();
        }
        self.tail = self.tail.wrapping_add(1);
        self.mem.store_tail(self.tail, Ordering::Release);
        Ok(())
    }
}

/// The reading end of a ring.
#[derive(Debug)]
pub struct Consumer<M: RingMem = ShmRing> {
    mem: M,
    head: u64,
    cached_tail: u64,
}

impl<M: RingMem> Consumer<M> {
    /// Takes the consumer end; its counter starts where the region's says.
    pub(crate) fn new(mem: M) -> Result<Self, RingError> {
        let head = mem.load_head(Ordering::Relaxed);
        let tail = mem.load_tail(Ordering::Acquire);
        fill(head, tail, mem.frames())?;
        Ok(Consumer {
            mem,
            head,
            cached_tail: tail,
        })
    }

    /// Largest message a frame holds (the size of buffer [`Consumer::try_pop`] needs at most).
    pub fn max_message(&self) -> usize {
        self.mem.frame_size() - FRAME_PREFIX
    }

    /// Whether a frame is waiting (reloads the producer's counter when the cached one says
    /// empty).
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the producer's counter is impossible.
    pub fn has_frame(&mut self) -> Result<bool, RingError> {
        if self.head != self.cached_tail {
            return Ok(true);
        }
        let tail = self.mem.load_tail(Ordering::Acquire);
        fill(self.head, tail, self.mem.frames())?;
        self.cached_tail = tail;
        Ok(self.head != tail)
    }

    /// Copies the next frame into `buf` and releases it; returns its length, or `None` if
    /// the ring is empty.
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the producer's counter is impossible (nothing is consumed);
    /// [`RingError::BadFrameLength`] if the frame's length word is beyond the frame (the frame
    /// is consumed and skipped); [`RingError::BufferTooSmall`] if `buf` is shorter than the
    /// frame's message (nothing is consumed: retry with a buffer of `max_message` bytes).
    pub fn try_pop(&mut self, buf: &mut [u8]) -> Result<Option<usize>, RingError> {
        if !self.has_frame()? {
            return Ok(None);
        }
        let index = (self.head & (self.mem.frames() - 1)) as usize;
        let mut len = [0u8; FRAME_PREFIX];
        self.mem.read(index, 0, &mut len);
        let len = u32::from_le_bytes(len) as usize;
        if len > self.max_message() {
            self.release();
            return Err(RingError::BadFrameLength {
                len,
                max: self.max_message(),
            });
        }
        let Some(dst) = buf.get_mut(..len) else {
            return Err(RingError::BufferTooSmall {
                need: len,
                have: buf.len(),
            });
        };
        self.mem.read(index, FRAME_PREFIX, dst);
        self.release();
        Ok(Some(len))
    }

    fn release(&mut self) {
        self.head = self.head.wrapping_add(1);
        self.mem.store_head(self.head, Ordering::Release);
    }
}

/// A ring inside a mapped region.
#[derive(Debug, Clone)]
pub struct ShmRing {
    shm: Arc<Shm>,
    layout: RingLayout,
}

impl ShmRing {
    pub(crate) fn new(shm: Arc<Shm>, layout: RingLayout) -> Self {
        ShmRing { shm, layout }
    }

    fn indices(&self) -> &RingIndices {
        self.shm.view::<RingIndices>(self.layout.indices)
    }

    fn frame_at(&self, index: usize, offset: usize, len: usize) -> usize {
        let size = self.layout.geometry.frame_size as usize;
        assert!(
            index < self.layout.geometry.frames as usize && offset + len <= size,
            "frame access out of the frame"
        );
        self.layout.frames + index * size + offset
    }
}

impl RingMem for ShmRing {
    fn frames(&self) -> u64 {
        u64::from(self.layout.geometry.frames)
    }
    fn frame_size(&self) -> usize {
        self.layout.geometry.frame_size as usize
    }
    fn load_head(&self, order: Ordering) -> u64 {
        self.indices().head.0.load(order)
    }
    fn store_head(&self, value: u64, order: Ordering) {
        self.indices().head.0.store(value, order);
    }
    fn load_tail(&self, order: Ordering) -> u64 {
        self.indices().tail.0.load(order)
    }
    fn store_tail(&self, value: u64, order: Ordering) {
        self.indices().tail.0.store(value, order);
    }
    fn write(&self, index: usize, offset: usize, src: &[u8]) {
        self.shm
            .copy_in(self.frame_at(index, offset, src.len()), src);
    }
    fn read(&self, index: usize, offset: usize, dst: &mut [u8]) {
        self.shm
            .copy_out(self.frame_at(index, offset, dst.len()), dst);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;

    /// Single-threaded storage, with counters the test can set to anything.
    #[derive(Debug)]
    pub(crate) struct HeapRing {
        frames: u64,
        frame_size: usize,
        pub(crate) head: Cell<u64>,
        pub(crate) tail: Cell<u64>,
        pub(crate) data: RefCell<Vec<u8>>,
    }

    impl HeapRing {
        pub(crate) fn new(frames: u64, frame_size: usize, start: u64) -> std::rc::Rc<Self> {
            std::rc::Rc::new(HeapRing {
                frames,
                frame_size,
                head: Cell::new(start),
                tail: Cell::new(start),
                data: RefCell::new(vec![0; frames as usize * frame_size]),
            })
        }
    }

    impl RingMem for std::rc::Rc<HeapRing> {
        fn frames(&self) -> u64 {
            self.frames
        }
        fn frame_size(&self) -> usize {
            self.frame_size
        }
        fn load_head(&self, _: Ordering) -> u64 {
            self.head.get()
        }
        fn store_head(&self, v: u64, _: Ordering) {
            self.head.set(v);
        }
        fn load_tail(&self, _: Ordering) -> u64 {
            self.tail.get()
        }
        fn store_tail(&self, v: u64, _: Ordering) {
            self.tail.set(v);
        }
        fn write(&self, index: usize, offset: usize, src: &[u8]) {
            let at = index * self.frame_size + offset;
            self.data.borrow_mut()[at..at + src.len()].copy_from_slice(src);
        }
        fn read(&self, index: usize, offset: usize, dst: &mut [u8]) {
            let at = index * self.frame_size + offset;
            dst.copy_from_slice(&self.data.borrow()[at..at + dst.len()]);
        }
    }

    #[test]
    fn push_pop_in_order_until_full() {
        let mem = HeapRing::new(4, 16, 0);
        let mut p = Producer::new(mem.clone()).expect("sane");
        let mut c = Consumer::new(mem.clone()).expect("sane");
        let mut buf = [0u8; 12];
        assert_eq!(c.try_pop(&mut buf), Ok(None));
        for i in 0..4u8 {
            p.try_push(&[&[i], &[i, i]]).expect("room");
        }
        assert_eq!(p.try_push(&[b"x"]), Err(RingError::Full));
        assert_eq!(p.free(), Ok(0));
        for i in 0..4u8 {
            assert_eq!(c.try_pop(&mut buf), Ok(Some(3)));
            assert_eq!(&buf[..3], &[i, i, i]);
        }
        assert_eq!(c.try_pop(&mut buf), Ok(None));
        assert_eq!(p.free(), Ok(4));
        assert_eq!(
            p.try_push(&[&[0; 13]]),
            Err(RingError::TooLarge { len: 13, max: 12 })
        );
        p.try_push(&[&[7; 12]]).expect("exactly the max");
        assert_eq!(
            c.try_pop(&mut buf[..5]),
            Err(RingError::BufferTooSmall { need: 12, have: 5 })
        );
        assert_eq!(c.try_pop(&mut buf), Ok(Some(12)));
    }

    #[test]
    fn hostile_counters_are_errors() {
        let mem = HeapRing::new(4, 16, 10);
        let mut c = Consumer::new(mem.clone()).expect("sane");
        let mut p = Producer::new(mem.clone()).expect("sane");
        let mut buf = [0u8; 12];
        // The producer claims 5 frames in a 4-frame ring.
        mem.tail.set(15);
        assert!(matches!(
            c.try_pop(&mut buf),
            Err(RingError::Corrupt { .. })
        ));
        // ... or a tail behind the head.
        mem.tail.set(9);
        assert!(matches!(
            c.try_pop(&mut buf),
            Err(RingError::Corrupt { .. })
        ));
        mem.tail.set(10);
        // The consumer claims to be ahead of the producer.
        mem.head.set(u64::MAX);
        for _ in 0..4 {
            let _ = p.try_push(&[b"a"]);
        }
        assert!(matches!(
            p.try_push(&[b"a"]),
            Err(RingError::Corrupt { .. })
        ));
        assert!(matches!(p.free(), Err(RingError::Corrupt { .. })));
        // Constructors check too.
        assert!(matches!(
            Consumer::new(mem.clone()),
            Err(RingError::Corrupt { .. })
        ));
    }

    #[test]
    fn hostile_frame_length_is_skipped() {
        let mem = HeapRing::new(2, 16, 0);
        let mut p = Producer::new(mem.clone()).expect("sane");
        let mut c = Consumer::new(mem.clone()).expect("sane");
        p.try_push(&[b"one"]).expect("room");
        p.try_push(&[b"two"]).expect("room");
        mem.data.borrow_mut()[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut buf = [0u8; 12];
        assert!(matches!(
            c.try_pop(&mut buf),
            Err(RingError::BadFrameLength { .. })
        ));
        assert_eq!(c.try_pop(&mut buf), Ok(Some(3)));
        assert_eq!(&buf[..3], b"two");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(Vec<u8>),
        Pop,
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                3 => prop::collection::vec(any::<u8>(), 0..=20).prop_map(Op::Push),
                2 => Just(Op::Pop),
            ],
            0..200,
        )
    }

    proptest! {
        /// The ring behaves as a bounded VecDeque of byte strings, from any starting counter
        /// (including across the u64 wrap).
        #[test]
        fn matches_vecdeque_model(
            log2 in 1u32..5,
            start in prop_oneof![Just(0u64), Just(u64::MAX - 3), any::<u64>()],
            ops in ops(),
        ) {
            let frames = 1u64 << log2;
            let mem = HeapRing::new(frames, 20, start);
            let mut p = Producer::new(mem.clone()).expect("sane");
            let mut c = Consumer::new(mem.clone()).expect("sane");
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut buf = [0u8; 16];
            for op in ops {
                match op {
                    Op::Push(bytes) => {
                        let got = p.try_push(&[&bytes]);
                        if bytes.len() > 16 {
                            prop_assert!(matches!(got, Err(RingError::TooLarge { .. })), "{got:?}");
                        } else if model.len() as u64 == frames {
                            prop_assert_eq!(got, Err(RingError::Full));
                        } else {
                            prop_assert_eq!(got, Ok(()));
                            model.push_back(bytes);
                        }
                    }
                    Op::Pop => {
                        let got = c.try_pop(&mut buf).expect("sane");
                        match model.pop_front() {
                            None => prop_assert_eq!(got, None),
                            Some(want) => {
                                prop_assert_eq!(got, Some(want.len()));
                                prop_assert_eq!(&buf[..want.len()], &want[..]);
                            }
                        }
                    }
                }
                let fill = mem.tail.get().wrapping_sub(mem.head.get());
                prop_assert_eq!(fill, model.len() as u64);
                prop_assert_eq!(p.free().expect("sane"), frames - fill);
            }
        }

        /// Any pair of counters is either a sane fill level or an error, never a panic.
        #[test]
        fn any_counters_are_checked(head in any::<u64>(), tail in any::<u64>(), len in any::<u32>()) {
            let mem = HeapRing::new(8, 16, 0);
            let mut c = Consumer::new(mem.clone()).expect("sane");
            mem.tail.set(tail);
            mem.head.set(head);
            let mut buf = [0u8; 12];
            mem.data.borrow_mut()[..4].copy_from_slice(&len.to_le_bytes());
            let got = c.try_pop(&mut buf);
            if tail > 8 {
                prop_assert!(matches!(got, Err(RingError::Corrupt { .. })), "{got:?}");
            } else if tail == 0 {
                prop_assert_eq!(got, Ok(None));
            } else if len > 12 {
                prop_assert!(matches!(got, Err(RingError::BadFrameLength { .. })), "{got:?}");
            } else {
                prop_assert_eq!(got, Ok(Some(len as usize)));
            }
            let fresh = HeapRing::new(8, 16, 0);
            fresh.head.set(head);
            fresh.tail.set(tail);
            let sane = tail.wrapping_sub(head) <= 8;
            prop_assert_eq!(Producer::new(fresh.clone()).is_ok(), sane);
            prop_assert_eq!(Consumer::new(fresh).is_ok(), sane);
        }
    }

    #[test]
    fn wake_protocol_single_threaded() {
        let flag = AtomicU32::new(0);
        // Nothing ready: armed, and the next publish must signal once.
        assert!(!arm(&flag, || false));
        assert!(needs_wake(&flag));
        assert!(!needs_wake(&flag));
        // Ready on re-check: no sleep, no signal needed.
        assert!(arm(&flag, || true));
        assert!(!needs_wake(&flag));
    }
}
