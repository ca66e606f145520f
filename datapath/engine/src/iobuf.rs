//! Per-core pools of aligned buffers registered with the reactor's ring.
//!
//! # Model
//! Each reactor owns one [`BufPool`] with two size classes (small for headers, 4 KiB I/O and
//! PDUs; large for big transfers), each a single page-aligned arena carved into equal chunks and
//! registered with the ring as one fixed buffer, so disk reads and writes can use
//! `READ_FIXED`/`WRITE_FIXED` (no page pinning per I/O).
//!
//! The pool never falls back to the heap: when a class is empty, [`BufPool::alloc`] waits, in
//! FIFO order, and a freed chunk is handed straight to the oldest waiter. A request larger than
//! the large class is refused; callers split big transfers into several buffers (the bdev layer
//! takes vectors of buffers).
//!
//! # Ownership
//! An [`IoBuf`] is the only owner of its chunk. It is `!Send`: buffers stay on their core. While
//! an I/O is in flight, the I/O request (not the caller) owns the buffer; if the caller gives up,
//! the buffer waits for the kernel's completion before it returns to the pool.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::error::EngineError;
use crate::sys::arena::Arena;

/// Sizes of a reactor's buffer pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufPoolConfig {
    /// Bytes per small buffer (a power of two, at least 4096).
    pub small_size: usize,
    /// Number of small buffers.
    pub small_count: usize,
    /// Bytes per large buffer (a power of two, larger than `small_size`).
    pub large_size: usize,
    /// Number of large buffers.
    pub large_count: usize,
}

impl Default for BufPoolConfig {
    fn default() -> Self {
        BufPoolConfig {
            small_size: 8192,
            small_count: 2048,
            large_size: 128 * 1024,
            large_count: 256,
        }
    }
}

impl BufPoolConfig {
    fn validate(&self) -> Result<(), EngineError> {
        let ok = |s: usize| s >= 4096 && s.is_power_of_two();
        if !ok(self.small_size) || !ok(self.large_size) || self.large_size <= self.small_size {
            return Err(EngineError::Config(
                "buffer sizes must be powers of two >= 4096, large > small",
            ));
        }
        if self.small_count == 0 || self.large_count == 0 {
            return Err(EngineError::Config("buffer counts must be positive"));
        }
        if self.small_count > u32::MAX as usize || self.large_count > u32::MAX as usize {
            return Err(EngineError::Config("buffer counts too large"));
        }
        Ok(())
    }
}

/// A buffer request the pool can never satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub struct TooLarge {
    /// Bytes asked for.
    pub asked: usize,
    /// Largest buffer the pool has.
    pub max: usize,
}

/// Counters of one size class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Chunk size.
    pub size: usize,
    /// Chunks in the class.
    pub total: usize,
    /// Chunks handed out now.
    pub in_use: usize,
    /// Allocations served at once.
    pub hits: u64,
    /// Allocations that had to wait for a free chunk.
    pub waits: u64,
}

struct Waiter {
    chunk: Cell<Option<u32>>,
    waker: RefCell<Option<Waker>>,
}

struct Class {
    arena: Arena,
    size: usize,
    free: RefCell<Vec<u32>>,
    waiters: RefCell<VecDeque<Rc<Waiter>>>,
    hits: Cell<u64>,
    waits: Cell<u64>,
}

impl Class {
    fn new(size: usize, count: usize) -> Result<Class, EngineError> {
        let bytes = size * count;
        let arena = Arena::map(bytes).map_err(|source| EngineError::ArenaMap { bytes, source })?;
        let count = u32::try_from(count).expect("validated");
        Ok(Class {
            arena,
            size,
            free: RefCell::new((0..count).rev().collect()),
            waiters: RefCell::new(VecDeque::new()),
            hits: Cell::new(0),
            waits: Cell::new(0),
        })
    }

    fn release(&self, chunk: u32) {
        loop {
            let waiter = self.waiters.borrow_mut().pop_front();
            match waiter {
                // The queue and the waiting `Alloc` each hold a reference; a waiter whose `Alloc`
                // was dropped is skipped.
                Some(w) if Rc::strong_count(&w) > 1 => {
                    w.chunk.set(Some(chunk));
                    if let Some(waker) = w.waker.borrow_mut().take() {
                        waker.wake();
                    }
                    return;
                }
                Some(_) => continue,
                None => {
                    self.free.borrow_mut().push(chunk);
                    return;
                }
            }
        }
    }
}

pub(crate) struct PoolInner {
    classes: [Class; 2],
}

/// A reactor's registered buffer pool. Cloning is cheap (shared handle).
#[derive(Clone)]
pub struct BufPool(Rc<PoolInner>);

impl std::fmt::Debug for BufPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufPool")
            .field("stats", &self.stats())
            .finish()
    }
}

impl BufPool {
    /// Maps the arenas of a new pool.
    ///
    /// # Errors
    /// Invalid sizes, or the kernel refusing the mapping.
    pub fn new(cfg: &BufPoolConfig) -> Result<BufPool, EngineError> {
        cfg.validate()?;
        Ok(BufPool(Rc::new(PoolInner {
            classes: [
                Class::new(cfg.small_size, cfg.small_count)?,
                Class::new(cfg.large_size, cfg.large_count)?,
            ],
        })))
    }

    /// The arenas as iovecs, in registered-buffer index order.
    pub(crate) fn iovecs(&self) -> Vec<libc::iovec> {
        self.0
            .classes
            .iter()
            .map(|c| libc::iovec {
                iov_base: c.arena.base().as_ptr().cast(),
                iov_len: c.arena.len(),
            })
            .collect()
    }

    /// Largest buffer this pool hands out.
    pub fn max_size(&self) -> usize {
        self.0.classes[1].size
    }

    fn class_for(&self, len: usize) -> Result<u8, TooLarge> {
        if len <= self.0.classes[0].size {
            Ok(0)
        } else if len <= self.0.classes[1].size {
            Ok(1)
        } else {
            Err(TooLarge {
                asked: len,
                max: self.max_size(),
            })
        }
    }

    /// Takes a buffer of `len` bytes (length set to `len`) if one is free now.
    ///
    /// # Errors
    /// `Ok(None)` when the class is empty; [`TooLarge`] when no class fits.
    pub fn try_alloc(&self, len: usize) -> Result<Option<IoBuf>, TooLarge> {
        let class = self.class_for(len)?;
        let c = &self.0.classes[usize::from(class)];
        let chunk = c.free.borrow_mut().pop();
        Ok(chunk.map(|chunk| {
            c.hits.set(c.hits.get() + 1);
            IoBuf {
                pool: self.0.clone(),
                class,
                chunk,
                len,
            }
        }))
    }

    /// Takes a buffer of `len` bytes, waiting (never allocating) while the class is empty.
    ///
    /// # Errors
    /// [`TooLarge`] when no class fits.
    pub fn alloc(&self, len: usize) -> Result<Alloc, TooLarge> {
        let class = self.class_for(len)?;
        Ok(Alloc {
            pool: self.clone(),
            class,
            len,
            waiter: None,
        })
    }

    /// Counters per class (small, large).
    pub fn stats(&self) -> [ClassStats; 2] {
        let s = |c: &Class| {
            let total = c.arena.len() / c.size;
            ClassStats {
                size: c.size,
                total,
                in_use: total - c.free.borrow().len(),
                hits: c.hits.get(),
                waits: c.waits.get(),
            }
        };
        [s(&self.0.classes[0]), s(&self.0.classes[1])]
    }
}

/// Future of [`BufPool::alloc`].
pub struct Alloc {
    pool: BufPool,
    class: u8,
    len: usize,
    waiter: Option<Rc<Waiter>>,
}

impl std::fmt::Debug for Alloc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alloc")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Future for Alloc {
    type Output = IoBuf;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoBuf> {
        let this = &mut *self;
        let c = &this.pool.0.classes[usize::from(this.class)];
        if let Some(w) = &this.waiter {
            if let Some(chunk) = w.chunk.take() {
                this.waiter = None;
                return Poll::Ready(IoBuf {
                    pool: this.pool.0.clone(),
                    class: this.class,
                    chunk,
                    len: this.len,
                });
            }
            *w.waker.borrow_mut() = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if let Some(chunk) = c.free.borrow_mut().pop() {
            c.hits.set(c.hits.get() + 1);
            return Poll::Ready(IoBuf {
                pool: this.pool.0.clone(),
                class: this.class,
                chunk,
                len: this.len,
            });
        }
        c.waits.set(c.waits.get() + 1);
        let w = Rc::new(Waiter {
            chunk: Cell::new(None),
            waker: RefCell::new(Some(cx.waker().clone())),
        });
        c.waiters.borrow_mut().push_back(w.clone());
        this.waiter = Some(w);
        Poll::Pending
    }
}

impl Drop for Alloc {
    fn drop(&mut self) {
        // A chunk handed to us after we stopped caring goes back to the pool.
        if let Some(chunk) = self.waiter.take().and_then(|w| w.chunk.take()) {
            self.pool.0.classes[usize::from(self.class)].release(chunk);
        }
    }
}

/// One chunk of a registered pool, with a length (bytes in use) up to its capacity.
pub struct IoBuf {
    pool: Rc<PoolInner>,
    class: u8,
    chunk: u32,
    len: usize,
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf")
            .field("class", &self.class)
            .field("chunk", &self.chunk)
            .field("len", &self.len)
            .finish()
    }
}

impl IoBuf {
    fn class(&self) -> &Class {
        &self.pool.classes[usize::from(self.class)]
    }

    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size of the chunk.
    pub fn capacity(&self) -> usize {
        self.class().size
    }

    /// Sets the bytes in use.
    ///
    /// # Panics
    /// When `len` exceeds the capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity(),
            "IoBuf length {len} over capacity {}",
            self.capacity()
        );
        self.len = len;
    }

    /// Index of the registered buffer (for `READ_FIXED`/`WRITE_FIXED`).
    pub fn buf_index(&self) -> u16 {
        u16::from(self.class)
    }

    /// Start of the chunk. Valid for `capacity()` bytes while this `IoBuf` lives.
    pub fn as_ptr(&self) -> *const u8 {
        self.as_mut_ptr_inner().cast_const()
    }

    /// Start of the chunk, writable. Valid for `capacity()` bytes while this `IoBuf` lives.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr_inner()
    }

    fn as_mut_ptr_inner(&self) -> *mut u8 {
        let offset = self.chunk as usize * self.class().size;
        // `wrapping_add` keeps this free of unsafe; the offset is within the arena by
        // construction (chunk < count).
        self.class().arena.base().as_ptr().wrapping_add(offset)
    }
}

impl std::ops::Deref for IoBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the chunk lies within the arena, which outlives `self` (we hold an Rc to the
        // pool); this IoBuf is the chunk's only owner, so no mutable alias exists while `&self`
        // is borrowed; `len <= capacity` is kept by `set_len`. The memory is initialised (mmap
        // zero-fills).
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`, and `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr(), self.len) }
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        self.class().release(self.chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_pool() -> BufPool {
        BufPool::new(&BufPoolConfig {
            small_size: 4096,
            small_count: 2,
            large_size: 65536,
            large_count: 1,
        })
        .expect("pool")
    }

    #[test]
    fn buffers_are_aligned_and_sized() {
        let pool = small_pool();
        let a = pool.try_alloc(512).expect("fits").expect("free");
        assert_eq!(a.len(), 512);
        assert_eq!(a.capacity(), 4096);
        assert_eq!(a.as_ptr() as usize % 4096, 0);
        let b = pool.try_alloc(5000).expect("fits").expect("free");
        assert_eq!(b.capacity(), 65536);
        assert_eq!(b.buf_index(), 1);
        assert!(pool.try_alloc(65537).is_err());
    }

    #[test]
    fn exhaustion_is_reported_and_release_refills() {
        let pool = small_pool();
        let a = pool.try_alloc(4096).expect("fits").expect("free");
        let _b = pool.try_alloc(4096).expect("fits").expect("free");
        assert!(pool.try_alloc(4096).expect("fits").is_none());
        assert_eq!(pool.stats()[0].in_use, 2);
        drop(a);
        assert!(pool.try_alloc(4096).expect("fits").is_some());
    }

    #[test]
    fn writes_stay_in_their_chunk() {
        let pool = small_pool();
        let mut a = pool.try_alloc(4096).expect("fits").expect("free");
        let mut b = pool.try_alloc(4096).expect("fits").expect("free");
        a.fill(0xaa);
        b.fill(0x55);
        assert!(a.iter().all(|&x| x == 0xaa));
        assert!(b.iter().all(|&x| x == 0x55));
    }
}
