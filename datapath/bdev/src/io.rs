//! I/O requests, the per-core slot table and the channel front end.
//!
//! # Model
//! Every I/O lives in a slot of its core's [`IoTable`] from submission to completion. The caller
//! gets an [`IoFuture`] naming the slot; the module gets an [`IoSlot`] naming the same slot and
//! must complete it exactly once. Stacked modules (error, delay, later the volume store) rewrite
//! the request in place and pass the same slot down, so a request crosses the whole stack
//! without allocating: the table's storage is reused once it has grown to the core's peak
//! concurrency.
//!
//! # Ownership of buffers
//! The request (and its buffers) sits in the slot while the I/O is in flight. A completed I/O
//! hands the buffers back through the future. If the future is dropped first, the slot is
//! marked orphaned and freed, buffers and all, when the module completes it: the device never
//! writes into memory that was given back to the pool.
//!
//! # Always completed
//! Dropping an [`IoSlot`] without completing it completes the I/O with [`IoError::Aborted`], so
//! a module that bails out cannot strand a caller.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use basalt_engine::IoBuf;
use smallvec::SmallVec;

use crate::error::IoError;
use crate::{Geometry, Lba};

/// The operations a block device performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoKind {
    /// Read blocks into the buffers.
    Read,
    /// Write the buffers to blocks.
    Write,
    /// Make every completed write durable.
    Flush,
    /// Deallocate blocks; they read back as zeros.
    Unmap,
    /// Write zeros without sending a buffer (may deallocate).
    WriteZeroes,
}

/// Buffers of one request, in order. Up to four ride inline without allocating.
pub type IoVecs = SmallVec<[IoBuf; 4]>;

/// One I/O request as it travels down a stack of modules.
#[derive(Debug)]
pub struct IoRequest {
    /// What to do.
    pub kind: IoKind,
    /// First block.
    pub lba: Lba,
    /// Number of blocks (0 for flush).
    pub blocks: u64,
    /// Data buffers (reads and writes only); their lengths add up to `blocks * block_size`.
    pub bufs: IoVecs,
    /// Force unit access: the write is durable when it completes.
    pub fua: bool,
}

impl IoRequest {
    /// Bytes in the buffers.
    pub fn buf_bytes(&self) -> u64 {
        self.bufs.iter().map(|b| b.len() as u64).sum()
    }
}

enum SlotState {
    Free,
    Pending,
    Done(Result<(), IoError>),
    Orphaned,
}

struct Slot {
    req: Option<IoRequest>,
    state: SlotState,
    waker: Option<Waker>,
    /// Scratch iovec array for vectored submissions; its heap storage is stable while the slot
    /// is pending and is reused by later requests in this slot.
    iovecs: Vec<libc::iovec>,
    /// Completion hooks of the modules this request passed through, innermost last.
    hooks: SmallVec<[(Rc<dyn CompletionHook>, u64); 1]>,
}

/// The slots of one core. See the module documentation.
struct IoTable {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    pending: Cell<usize>,
}

thread_local! {
    static TABLE: IoTable = const {
        IoTable { slots: RefCell::new(Vec::new()), free: RefCell::new(Vec::new()), pending: Cell::new(0) }
    };
}

fn alloc_slot(req: IoRequest, state: SlotState) -> u32 {
    TABLE.with(|t| {
        if matches!(state, SlotState::Pending) {
            t.pending.set(t.pending.get() + 1);
        }
        let mut slots = t.slots.borrow_mut();
        match t.free.borrow_mut().pop() {
            Some(i) => {
                let s = &mut slots[i as usize];
                s.req = Some(req);
                s.state = state;
                i
            }
            None => {
                let i = u32::try_from(slots.len()).expect("fewer than 4G concurrent I/Os per core");
                slots.push(Slot {
                    req: Some(req),
                    state,
                    waker: None,
                    iovecs: Vec::new(),
                    hooks: SmallVec::new(),
                });
                i
            }
        }
    })
}

fn free_slot(t: &IoTable, slots: &mut [Slot], index: u32) -> Option<IoRequest> {
    let s = &mut slots[index as usize];
    s.state = SlotState::Free;
    s.waker = None;
    s.hooks.clear();
    t.free.borrow_mut().push(index);
    s.req.take()
}

/// I/Os submitted on this core and not yet completed by their module.
pub fn pending_on_this_core() -> usize {
    TABLE.with(|t| t.pending.get())
}

/// A module's handle on one in-flight I/O. Complete it exactly once with [`IoSlot::complete`];
/// dropping it completes the I/O with [`IoError::Aborted`].
#[derive(Debug)]
pub struct IoSlot {
    index: u32,
    /// Slots index this core's table: an `IoSlot` must not move to another thread.
    _core_local: PhantomData<*const ()>,
}

impl IoSlot {
    /// Runs `f` on the request (to read it or rewrite it before passing the slot on).
    pub fn with<R>(&self, f: impl FnOnce(&mut IoRequest) -> R) -> R {
        TABLE.with(|t| {
            let mut slots = t.slots.borrow_mut();
            let req = slots[self.index as usize]
                .req
                .as_mut()
                .expect("pending slot holds its request");
            f(req)
        })
    }

    /// Runs `f` on the request and the slot's scratch iovec array. Pointers into the array stay
    /// valid until the slot is completed.
    pub fn with_iovecs<R>(&self, f: impl FnOnce(&mut IoRequest, &mut Vec<libc::iovec>) -> R) -> R {
        TABLE.with(|t| {
            let mut slots = t.slots.borrow_mut();
            let slot = &mut slots[self.index as usize];
            let req = slot.req.as_mut().expect("pending slot holds its request");
            f(req, &mut slot.iovecs)
        })
    }

    /// Asks to see this I/O's completion before the layer above: when the module below
    /// completes the slot, `hook` gets it back (with `cookie`) and must complete it in turn.
    /// A stacked module that passes the slot down uses this to account for, or post-process,
    /// the I/O without allocating.
    pub fn push_hook(&self, hook: Rc<dyn CompletionHook>, cookie: u64) {
        TABLE.with(|t| {
            t.slots.borrow_mut()[self.index as usize]
                .hooks
                .push((hook, cookie))
        });
    }

    /// Finishes the I/O: hands it to the innermost [`CompletionHook`] if one is pushed,
    /// otherwise wakes the waiting future, or frees the slot if nobody waits any more.
    pub fn complete(self, result: Result<(), IoError>) {
        let index = self.index;
        std::mem::forget(self);
        complete_index(index, result);
    }

    /// Turns the slot into a token for a completion handler; [`IoSlot::from_token`] turns it back.
    pub fn into_token(self) -> u64 {
        let index = self.index;
        std::mem::forget(self);
        u64::from(index)
    }

    /// Rebuilds the slot from [`IoSlot::into_token`]'s token, on the same core. Each token must
    /// be redeemed exactly once.
    ///
    /// # Panics
    /// When the token does not name a slot of this core.
    pub fn from_token(token: u64) -> IoSlot {
        let index = u32::try_from(token).expect("token from into_token");
        let in_flight = TABLE.with(|t| {
            matches!(
                t.slots.borrow().get(index as usize).map(|s| &s.state),
                Some(SlotState::Pending | SlotState::Orphaned)
            )
        });
        assert!(
            in_flight,
            "token {token} names no in-flight I/O of this core"
        );
        IoSlot {
            index,
            _core_local: PhantomData,
        }
    }
}

impl Drop for IoSlot {
    fn drop(&mut self) {
        complete_index(self.index, Err(IoError::Aborted));
    }
}

fn complete_index(index: u32, result: Result<(), IoError>) {
    let hook = TABLE.with(|t| t.slots.borrow_mut()[index as usize].hooks.pop());
    if let Some((hook, cookie)) = hook {
        let slot = IoSlot {
            index,
            _core_local: PhantomData,
        };
        hook.completed(slot, cookie, result);
        return;
    }
    let (waker, orphan) = TABLE.with(|t| {
        t.pending.set(t.pending.get() - 1);
        let mut slots = t.slots.borrow_mut();
        let slot = &mut slots[index as usize];
        match slot.state {
            SlotState::Pending => {
                slot.state = SlotState::Done(result);
                (slot.waker.take(), None)
            }
            SlotState::Orphaned => (None, free_slot(t, &mut slots, index)),
            SlotState::Free | SlotState::Done(_) => panic!("I/O slot {index} completed twice"),
        }
    });
    // Buffers of an orphaned request go back to the pool outside the table borrow.
    drop(orphan);
    if let Some(w) = waker {
        w.wake();
    }
}

/// The caller's side of an I/O: resolves to the request's buffers and the result.
#[derive(Debug)]
#[must_use = "an I/O future does nothing visible unless awaited"]
pub struct IoFuture {
    index: u32,
    done: bool,
    stats: Option<Rc<ChannelStats>>,
}

impl Future for IoFuture {
    type Output = (IoVecs, Result<(), IoError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let index = self.index;
        let ready = TABLE.with(|t| {
            let mut slots = t.slots.borrow_mut();
            let slot = &mut slots[index as usize];
            match &slot.state {
                SlotState::Done(_) => {
                    let SlotState::Done(result) =
                        std::mem::replace(&mut slot.state, SlotState::Free)
                    else {
                        unreachable!("matched Done above")
                    };
                    let req = free_slot(t, &mut slots, index).expect("done slot holds its request");
                    Some((req.bufs, result))
                }
                SlotState::Pending => {
                    match &slot.waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => slot.waker = Some(cx.waker().clone()),
                    }
                    None
                }
                SlotState::Free | SlotState::Orphaned => panic!("IoFuture polled after completion"),
            }
        });
        match ready {
            Some(out) => {
                self.done = true;
                if out.1.is_err()
                    && let Some(s) = &self.stats
                {
                    s.errors.set(s.errors.get() + 1);
                }
                Poll::Ready(out)
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for IoFuture {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let orphan = TABLE.with(|t| {
            let mut slots = t.slots.borrow_mut();
            let slot = &mut slots[self.index as usize];
            match slot.state {
                SlotState::Pending => {
                    slot.state = SlotState::Orphaned;
                    slot.waker = None;
                    None
                }
                SlotState::Done(_) => free_slot(t, &mut slots, self.index),
                SlotState::Free | SlotState::Orphaned => None,
            }
        });
        drop(orphan);
    }
}

/// Sees I/Os complete on their way up a stack of modules; see [`IoSlot::push_hook`].
pub trait CompletionHook {
    /// The module below completed `slot` with `result`. Complete the slot in turn (with this
    /// result or another), now or later; dropping it completes it as aborted.
    fn completed(&self, slot: IoSlot, cookie: u64, result: Result<(), IoError>);
}

/// What a module implements per core: take a slot, complete it (now or later).
pub trait ChannelImpl {
    /// Starts the I/O in `slot`. The request has been validated against the geometry.
    fn submit(&self, slot: IoSlot);

    /// The channel's owner is done with it. Modules release per-core resources here (once their
    /// in-flight I/O has completed).
    fn close(&self) {}
}

/// Per-channel counters (this core only).
#[derive(Debug, Default)]
pub struct ChannelStats {
    /// Reads submitted.
    pub reads: Cell<u64>,
    /// Writes submitted.
    pub writes: Cell<u64>,
    /// Bytes read.
    pub bytes_read: Cell<u64>,
    /// Bytes written.
    pub bytes_written: Cell<u64>,
    /// Flushes, unmaps and write-zeroes submitted.
    pub other: Cell<u64>,
    /// I/Os that completed with an error (validation failures included).
    pub errors: Cell<u64>,
}

/// A core's handle on a block device: validates requests and submits them to the module.
pub struct IoChannel {
    inner: Rc<dyn ChannelImpl>,
    geometry: Geometry,
    stats: Rc<ChannelStats>,
}

impl std::fmt::Debug for IoChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoChannel")
            .field("geometry", &self.geometry)
            .finish_non_exhaustive()
    }
}

impl IoChannel {
    /// Wraps a module channel.
    pub fn new(inner: Rc<dyn ChannelImpl>, geometry: Geometry) -> IoChannel {
        IoChannel {
            inner,
            geometry,
            stats: Rc::default(),
        }
    }

    /// The device's geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Counters of this channel.
    pub fn stats(&self) -> &ChannelStats {
        &self.stats
    }

    /// Reads `bufs`' total length starting at `lba`.
    pub fn read(&self, lba: Lba, bufs: IoVecs) -> IoFuture {
        let blocks = self.blocks_of(&bufs);
        self.submit(IoRequest {
            kind: IoKind::Read,
            lba,
            blocks,
            bufs,
            fua: false,
        })
    }

    /// Writes `bufs` starting at `lba`; with `fua`, durable on completion.
    pub fn write(&self, lba: Lba, bufs: IoVecs, fua: bool) -> IoFuture {
        let blocks = self.blocks_of(&bufs);
        self.submit(IoRequest {
            kind: IoKind::Write,
            lba,
            blocks,
            bufs,
            fua,
        })
    }

    /// Makes every write completed before this call durable.
    pub fn flush(&self) -> IoFuture {
        self.submit(IoRequest {
            kind: IoKind::Flush,
            lba: Lba(0),
            blocks: 0,
            bufs: IoVecs::new(),
            fua: false,
        })
    }

    /// Deallocates `blocks` blocks at `lba`; they read back as zeros.
    pub fn unmap(&self, lba: Lba, blocks: u64) -> IoFuture {
        self.submit(IoRequest {
            kind: IoKind::Unmap,
            lba,
            blocks,
            bufs: IoVecs::new(),
            fua: false,
        })
    }

    /// Zeroes `blocks` blocks at `lba`.
    pub fn write_zeroes(&self, lba: Lba, blocks: u64) -> IoFuture {
        self.submit(IoRequest {
            kind: IoKind::WriteZeroes,
            lba,
            blocks,
            bufs: IoVecs::new(),
            fua: false,
        })
    }

    fn blocks_of(&self, bufs: &IoVecs) -> u64 {
        let bytes: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        bytes / u64::from(self.geometry.block_size)
    }

    /// Validates and submits any request.
    pub fn submit(&self, req: IoRequest) -> IoFuture {
        let stats = Some(self.stats.clone());
        if let Err(e) = self.validate(&req) {
            self.stats.errors.set(self.stats.errors.get() + 1);
            let index = alloc_slot(req, SlotState::Done(Err(e)));
            return IoFuture {
                index,
                done: false,
                stats: None,
            };
        }
        let s = &self.stats;
        match req.kind {
            IoKind::Read => {
                s.reads.set(s.reads.get() + 1);
                s.bytes_read
                    .set(s.bytes_read.get() + req.blocks * u64::from(self.geometry.block_size));
            }
            IoKind::Write => {
                s.writes.set(s.writes.get() + 1);
                s.bytes_written
                    .set(s.bytes_written.get() + req.blocks * u64::from(self.geometry.block_size));
            }
            IoKind::Flush | IoKind::Unmap | IoKind::WriteZeroes => s.other.set(s.other.get() + 1),
        }
        let empty = req.blocks == 0 && req.kind != IoKind::Flush;
        if empty {
            // A zero-length transfer is a no-op that succeeds (as in SCSI and NVMe).
            let index = alloc_slot(req, SlotState::Done(Ok(())));
            return IoFuture {
                index,
                done: false,
                stats,
            };
        }
        let index = alloc_slot(req, SlotState::Pending);
        self.inner.submit(IoSlot {
            index,
            _core_local: PhantomData,
        });
        IoFuture {
            index,
            done: false,
            stats,
        }
    }

    fn validate(&self, req: &IoRequest) -> Result<(), IoError> {
        let g = &self.geometry;
        let bs = g.block_size;
        if req.kind != IoKind::Flush {
            let end = req.lba.0.checked_add(req.blocks);
            if end.is_none_or(|end| end > g.num_blocks) {
                return Err(IoError::OutOfRange {
                    lba: req.lba.0,
                    blocks: req.blocks,
                    capacity: g.num_blocks,
                });
            }
        }
        match req.kind {
            IoKind::Read | IoKind::Write => {
                for b in &req.bufs {
                    if b.len() % bs as usize != 0 {
                        return Err(IoError::Misaligned {
                            len: b.len(),
                            block_size: bs,
                        });
                    }
                }
                let bytes = req.buf_bytes();
                let expected = req.blocks * u64::from(bs);
                if bytes != expected {
                    return Err(IoError::LengthMismatch { bytes, expected });
                }
            }
            IoKind::Unmap if !g.supports_unmap => return Err(IoError::Unsupported(IoKind::Unmap)),
            IoKind::WriteZeroes if !g.supports_write_zeroes => {
                return Err(IoError::Unsupported(IoKind::WriteZeroes));
            }
            IoKind::Flush | IoKind::Unmap | IoKind::WriteZeroes => {}
        }
        Ok(())
    }
}

impl Drop for IoChannel {
    fn drop(&mut self) {
        self.inner.close();
    }
}
