//! The per-core reactor: one thread, one io_uring, one local executor.
//!
//! # State
//! A [`Reactor`] lives on exactly one thread (it is `!Send`) and is reachable there through
//! [`current`]. It owns:
//! - the io_uring, created `SINGLE_ISSUER | DEFER_TASKRUN`: only this thread submits, and the
//!   kernel runs completion work only when this thread enters the ring;
//! - the table of in-flight engine operations ([`crate::op::Op`]) and of registered completion
//!   handlers (zero-allocation I/O paths such as the uring bdev route their completions through
//!   a handler instead of an `Op` future);
//! - the local task executor (tasks are `!Send` futures; `async-task` provides the task cells);
//! - the timer heap, the registered buffer pool and the fixed-file table.
//!
//! The [`Shared`] half is `Send + Sync` and is what other threads hold (via
//! [`crate::ReactorHandle`]): the run queue (a task may be woken from anywhere), the message
//! inbox, and the sleep flag used for wake-ups.
//!
//! # Sleeping and waking
//! When nothing is runnable the reactor publishes `sleeping = true`, re-checks its queues and
//! then waits inside `io_uring_enter` (with the next timer as timeout). A waker pushes its item,
//! then claims the flag with a swap; only the claimer rings the doorbell, so a busy reactor is
//! never sent a needless wake-up. The doorbell is ring-level: another reactor posts a CQE into
//! the sleeper's ring with `IORING_OP_MSG_RING`; any other thread writes the reactor's eventfd,
//! on which a read is always pending in the ring. Both sides issue a SeqCst fence between their
//! store and their load, so either the sleeper sees the item or the waker sees the flag.
//!
//! # User data
//! Every SQE's `user_data` says where its completion goes: the top byte is the kind, the rest
//! an op index or a handler id and token. See the `KIND_*` constants.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::task::Waker;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;
use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{IoUring, opcode, squeue, types};
use slab::Slab;

use crate::error::EngineError;
use crate::iobuf::{BufPool, BufPoolConfig};
use crate::task::{JoinHandle, TaskSet};
use crate::timer::Timers;

const KIND_SHIFT: u32 = 56;
/// An engine [`crate::op::Op`]: the low 32 bits index the op table.
const KIND_OP: u64 = 1;
/// The always-pending read on the reactor's eventfd.
const KIND_EVENTFD: u64 = 2;
/// A MSG_RING doorbell posted by another reactor.
const KIND_WAKE: u64 = 3;
/// A registered completion handler: bits 40..56 are the handler id, 0..40 the token.
const KIND_HANDLER: u64 = 4;
/// Completions nobody waits for (cancel requests, the sender side of MSG_RING).
const KIND_IGNORE: u64 = 5;

const HANDLER_SHIFT: u32 = 40;
/// Largest token a handler may attach to a submission.
pub const MAX_HANDLER_TOKEN: u64 = (1 << HANDLER_SHIFT) - 1;

/// How long a stopping reactor waits for the kernel to return in-flight I/O before giving up.
const SHUTDOWN_DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// A message run on a reactor's thread: the unit of cross-core communication.
pub(crate) type Message = Box<dyn FnOnce() + Send + 'static>;

/// Settings of one reactor.
#[derive(Debug, Clone)]
pub struct ReactorConfig {
    /// Submission queue entries (the completion queue gets four times as many).
    pub ring_entries: u32,
    /// Spin instead of sleeping in the kernel when idle (burns a core; lowest latency).
    pub busy_poll: bool,
    /// Completions delivered per pass of the loop before the reactor submits the I/O they
    /// triggered. Small batches keep requests flowing to the device in a steady stream instead
    /// of convoys: with 32 writes in flight on a virtio disk, a batch of 4 gave ~20% more IOPS
    /// than delivering everything at once (docs/engine.md). At least 1.
    pub completion_batch: usize,
    /// Registered buffer pool of this reactor.
    pub buffers: BufPoolConfig,
    /// Size of the fixed-file table.
    pub fixed_files: u32,
}

impl Default for ReactorConfig {
    fn default() -> Self {
        ReactorConfig {
            ring_entries: 512,
            busy_poll: false,
            completion_batch: 4,
            buffers: BufPoolConfig::default(),
            fixed_files: 1024,
        }
    }
}

/// Counters of one reactor, readable from any thread.
#[derive(Debug, Default)]
pub struct ReactorStats {
    /// Loop iterations.
    pub iterations: AtomicU64,
    /// Times the reactor slept in the kernel.
    pub sleeps: AtomicU64,
    /// Completions reaped.
    pub completions: AtomicU64,
    /// Task polls.
    pub polls: AtomicU64,
    /// Cross-core messages run.
    pub messages: AtomicU64,
    /// Doorbells rung for this reactor (eventfd writes and MSG_RINGs).
    pub wakeups: AtomicU64,
    /// Tasks and messages that panicked (and were dropped).
    pub task_panics: AtomicU64,
}

/// The thread-safe half of a reactor.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) index: usize,
    runq: SegQueue<async_task::Runnable>,
    inbox: SegQueue<Message>,
    sleeping: AtomicBool,
    stop: AtomicBool,
    stopped: AtomicBool,
    eventfd: OwnedFd,
    ring_fd: std::sync::atomic::AtomicI32,
    pub(crate) stats: ReactorStats,
}

impl Shared {
    pub(crate) fn new(index: usize) -> Result<Shared, EngineError> {
        let eventfd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .map_err(|e| EngineError::EventFd(e.into()))?;
        Ok(Shared {
            index,
            runq: SegQueue::new(),
            inbox: SegQueue::new(),
            sleeping: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            eventfd,
            ring_fd: std::sync::atomic::AtomicI32::new(-1),
            stats: ReactorStats::default(),
        })
    }

    pub(crate) fn schedule(&self, runnable: async_task::Runnable) {
        self.runq.push(runnable);
        self.notify();
    }

    pub(crate) fn post(&self, msg: Message) -> Result<(), EngineError> {
        if self.stop.load(Ordering::Acquire) {
            return Err(EngineError::Stopped(self.index));
        }
        self.inbox.push(msg);
        // Pairs with the fence in `Reactor::run` after `stopped` is set: either the reactor's
        // final drain sees this message, or this load sees `stopped` and drains it here.
        // Either way the message is run or dropped, and dropping it closes its reply channel.
        fence(Ordering::SeqCst);
        if self.stopped.load(Ordering::SeqCst) {
            self.drop_inbox();
            return Err(EngineError::Stopped(self.index));
        }
        self.notify();
        Ok(())
    }

    /// Drops every queued message unrun (their reply channels close).
    fn drop_inbox(&self) {
        while let Some(msg) = self.inbox.pop() {
            drop(msg);
        }
    }

    /// Whether a stop was requested.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.notify();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Rings the doorbell if (and only if) the reactor is asleep.
    fn notify(&self) {
        fence(Ordering::SeqCst);
        if !self.sleeping.load(Ordering::Relaxed) || !self.sleeping.swap(false, Ordering::AcqRel) {
            return;
        }
        self.stats.wakeups.fetch_add(1, Ordering::Relaxed);
        let ring_fd = self.ring_fd.load(Ordering::Acquire);
        let sent = ring_fd >= 0
            && CURRENT.with(|c| match &*c.borrow() {
                Some(r) if r.shared.index != self.index => r.msg_ring_wake(ring_fd),
                _ => false,
            });
        if !sent {
            // A full counter (EAGAIN) already means "wake up"; nothing else can fail here.
            let _ = rustix::io::write(&self.eventfd, &1u64.to_ne_bytes());
        }
    }
}

/// A completion consumer for zero-allocation I/O paths.
///
/// Instead of one future per operation, a module (the uring bdev, later the network targets)
/// registers itself once per reactor and tags each submission with a token; the reactor calls
/// [`CompletionHandler::complete`] with that token when the CQE arrives.
pub trait CompletionHandler {
    /// One completion: the token given at submission, the CQE's result (negative errno on
    /// failure) and flags.
    fn complete(&self, token: u64, result: i32, flags: u32);
}

/// Identifies a registered [`CompletionHandler`] on one reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerId(u16);

struct HandlerEntry {
    handler: Rc<dyn CompletionHandler>,
    inflight: usize,
    retired: bool,
}

/// A slot of the fixed-file table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedFile(pub u32);

impl FixedFile {
    /// The io_uring target naming this slot.
    pub fn target(self) -> types::Fixed {
        types::Fixed(self.0)
    }
}

pub(crate) enum OpState {
    /// Submitted; the waker (if any) of the future waiting for it.
    Pending(Option<Waker>),
    /// The CQE arrived: result and flags.
    Done(i32, u32),
    /// The future was dropped before completion; its resources wait here for the CQE.
    Orphan(#[allow(dead_code)] Box<dyn Any>),
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Reactor>>> = const { RefCell::new(None) };
}

/// The reactor of the calling thread.
///
/// # Panics
/// When called outside a reactor thread.
pub fn current() -> Rc<Reactor> {
    try_current().expect("basalt_engine::current() called outside a reactor thread")
}

/// The reactor of the calling thread, if it is one.
pub fn try_current() -> Option<Rc<Reactor>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// One core's event loop. See the module documentation.
pub struct Reactor {
    // Field order is drop order: the ring (which unregisters buffers and files) goes before the
    // buffer pool whose memory it pinned.
    ring: RefCell<IoUring>,
    pool: BufPool,
    pub(crate) shared: Arc<Shared>,
    ops: RefCell<Slab<OpState>>,
    handlers: RefCell<Slab<HandlerEntry>>,
    pub(crate) tasks: TaskSet,
    pub(crate) timers: Timers,
    fixed_files: RefCell<FixedFiles>,
    /// Completions whose consumer has not been told yet (drained from a full CQ during push).
    backlog: RefCell<VecDeque<(u64, i32, u32)>>,
    /// Reusable buffer for reaped completions.
    batch: Cell<Vec<(u64, i32, u32)>>,
    /// Target of the pending eventfd read; boxed so its address stays put.
    eventfd_buf: Box<Cell<u64>>,
    eventfd_armed: Cell<bool>,
    inflight: Cell<usize>,
    stopping: Cell<bool>,
    busy_poll: bool,
    completion_batch: usize,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("index", &self.shared.index)
            .field("inflight", &self.inflight.get())
            .field("stopping", &self.stopping.get())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct FixedFiles {
    free: Vec<u32>,
    size: u32,
}

impl Reactor {
    /// Builds a reactor for the calling thread and installs it as [`current`].
    pub(crate) fn install(
        shared: Arc<Shared>,
        cfg: &ReactorConfig,
    ) -> Result<Rc<Reactor>, EngineError> {
        if cfg.ring_entries == 0 || !cfg.ring_entries.is_power_of_two() {
            return Err(EngineError::Config("ring_entries must be a power of two"));
        }
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_submit_all()
            .setup_cqsize(cfg.ring_entries * 4)
            .build(cfg.ring_entries)
            .map_err(|source| EngineError::RingSetup {
                entries: cfg.ring_entries,
                source,
            })?;
        let pool = BufPool::new(&cfg.buffers)?;
        // SAFETY: the iovecs describe the pool's arenas, which the pool keeps mapped for as long
        // as the reactor lives; the ring is declared before the pool in `Reactor`, so it is
        // dropped (and the registration released) first.
        unsafe { ring.submitter().register_buffers(&pool.iovecs()) }
            .map_err(EngineError::RegisterBuffers)?;
        if cfg.fixed_files > 0 {
            ring.submitter()
                .register_files_sparse(cfg.fixed_files)
                .map_err(EngineError::RegisterFiles)?;
        }
        shared.ring_fd.store(ring.as_raw_fd(), Ordering::Release);
        let reactor = Rc::new(Reactor {
            ring: RefCell::new(ring),
            pool,
            shared,
            ops: RefCell::new(Slab::with_capacity(cfg.ring_entries as usize)),
            handlers: RefCell::new(Slab::new()),
            tasks: TaskSet::default(),
            timers: Timers::default(),
            fixed_files: RefCell::new(FixedFiles {
                free: (0..cfg.fixed_files).rev().collect(),
                size: cfg.fixed_files,
            }),
            backlog: RefCell::new(VecDeque::new()),
            batch: Cell::new(Vec::with_capacity(cfg.ring_entries as usize * 4)),
            eventfd_buf: Box::new(Cell::new(0)),
            eventfd_armed: Cell::new(false),
            inflight: Cell::new(0),
            stopping: Cell::new(false),
            busy_poll: cfg.busy_poll,
            completion_batch: cfg.completion_batch.max(1),
        });
        CURRENT.with(|c| *c.borrow_mut() = Some(reactor.clone()));
        Ok(reactor)
    }

    /// Index of this reactor within its engine (0-based).
    pub fn index(&self) -> usize {
        self.shared.index
    }

    /// The registered buffer pool of this reactor.
    pub fn pool(&self) -> &BufPool {
        &self.pool
    }

    /// Counters of this reactor.
    pub fn stats(&self) -> &ReactorStats {
        &self.shared.stats
    }

    /// Operations submitted to the kernel and not yet completed.
    pub fn inflight(&self) -> usize {
        self.inflight.get()
    }

    /// Tasks spawned on this reactor that have not finished.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the reactor is shutting down (no new work should start).
    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Spawns a task on this reactor.
    pub fn spawn<F>(self: &Rc<Self>, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        crate::task::spawn_on(self, fut)
    }

    /// Queues an SQE. The caller encodes `user_data`.
    ///
    /// # Safety
    /// Every buffer, iovec, path or other memory the SQE points to must stay valid (and not be
    /// otherwise written, for buffers the kernel writes) until its completion is delivered.
    unsafe fn push_raw(&self, sqe: &squeue::Entry) {
        let mut ring = self.ring.borrow_mut();
        loop {
            // SAFETY: forwarded from this function's contract.
            if unsafe { ring.submission().push(sqe) }.is_ok() {
                return;
            }
            // The SQ is full: hand what is queued to the kernel to make room.
            match ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // The CQ is full as well: park completions in the backlog (dispatched on the
                    // next reap) so the kernel can take more submissions.
                    let mut backlog = self.backlog.borrow_mut();
                    for cqe in ring.completion() {
                        backlog.push_back((cqe.user_data(), cqe.result(), cqe.flags()));
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => panic!("io_uring submit failed unexpectedly: {e}"),
            }
        }
    }

    /// Queues an SQE for an engine op and returns its op index.
    ///
    /// # Safety
    /// As for [`Reactor::push_raw`].
    pub(crate) unsafe fn push_op(&self, sqe: squeue::Entry) -> usize {
        let index = self.ops.borrow_mut().insert(OpState::Pending(None));
        let sqe = sqe.user_data((KIND_OP << KIND_SHIFT) | index as u64);
        // SAFETY: forwarded from this function's contract.
        unsafe { self.push_raw(&sqe) };
        self.inflight.set(self.inflight.get() + 1);
        index
    }

    /// Polls the state of an engine op: `Some((result, flags))` once complete (the entry is then
    /// freed), `None` while pending (the waker is stored).
    pub(crate) fn poll_op(&self, index: usize, waker: &Waker) -> Option<(i32, u32)> {
        let mut ops = self.ops.borrow_mut();
        match ops.get_mut(index) {
            Some(OpState::Done(res, flags)) => {
                let out = (*res, *flags);
                ops.remove(index);
                Some(out)
            }
            Some(OpState::Pending(w)) => {
                match w {
                    Some(old) if old.will_wake(waker) => {}
                    _ => *w = Some(waker.clone()),
                }
                None
            }
            Some(OpState::Orphan(_)) | None => {
                panic!("engine op {index} polled after it was orphaned or freed")
            }
        }
    }

    /// Called when an op future is dropped: parks its resources until the CQE arrives, or frees
    /// the entry if the CQE is already there. Also asks the kernel to cancel the operation.
    pub(crate) fn orphan_op(&self, index: usize, data: Box<dyn Any>) {
        let mut ops = self.ops.borrow_mut();
        let Some(state) = ops.get_mut(index) else {
            return;
        };
        match state {
            OpState::Done(..) => {
                ops.remove(index);
            }
            _ => {
                *state = OpState::Orphan(data);
                drop(ops);
                let cancel = opcode::AsyncCancel::new((KIND_OP << KIND_SHIFT) | index as u64)
                    .build()
                    .user_data(KIND_IGNORE << KIND_SHIFT);
                // SAFETY: a cancel request references no memory.
                unsafe { self.push_raw(&cancel) };
            }
        }
    }

    /// Registers a completion handler on this reactor.
    ///
    /// # Panics
    /// When 65,536 handlers are registered at once.
    pub fn register_handler(&self, handler: Rc<dyn CompletionHandler>) -> HandlerId {
        let mut handlers = self.handlers.borrow_mut();
        let id = handlers.insert(HandlerEntry {
            handler,
            inflight: 0,
            retired: false,
        });
        HandlerId(u16::try_from(id).expect("more than 65536 completion handlers on one reactor"))
    }

    /// Unregisters a handler once its in-flight submissions have completed.
    pub fn retire_handler(&self, id: HandlerId) {
        let mut handlers = self.handlers.borrow_mut();
        let Some(entry) = handlers.get_mut(usize::from(id.0)) else {
            return;
        };
        if entry.inflight == 0 {
            handlers.remove(usize::from(id.0));
        } else {
            entry.retired = true;
        }
    }

    /// Queues an SQE whose completion goes to handler `id` with `token`.
    ///
    /// # Safety
    /// As for any SQE: the memory it references must stay valid until the handler is called
    /// with this token.
    ///
    /// # Panics
    /// When `token` exceeds [`MAX_HANDLER_TOKEN`] or `id` is not registered.
    pub unsafe fn submit_for(&self, id: HandlerId, token: u64, sqe: squeue::Entry) {
        assert!(
            token <= MAX_HANDLER_TOKEN,
            "handler token {token} too large"
        );
        {
            let mut handlers = self.handlers.borrow_mut();
            let entry = handlers
                .get_mut(usize::from(id.0))
                .expect("submit to unknown handler");
            entry.inflight += 1;
        }
        let ud = (KIND_HANDLER << KIND_SHIFT) | (u64::from(id.0) << HANDLER_SHIFT) | token;
        // SAFETY: forwarded from this function's contract.
        unsafe { self.push_raw(&sqe.user_data(ud)) };
        self.inflight.set(self.inflight.get() + 1);
    }

    /// Installs `fd` in this reactor's fixed-file table. The table holds its own reference to
    /// the file until [`Reactor::unregister_file`].
    ///
    /// # Errors
    /// [`EngineError::FixedFilesFull`] when every slot is taken; [`EngineError::RegisterFiles`]
    /// when the kernel refuses.
    pub fn register_file(&self, fd: RawFd) -> Result<FixedFile, EngineError> {
        let mut files = self.fixed_files.borrow_mut();
        let slot = files
            .free
            .pop()
            .ok_or(EngineError::FixedFilesFull(files.size))?;
        let ring = self.ring.borrow();
        if let Err(e) = ring.submitter().register_files_update(slot, &[fd]) {
            files.free.push(slot);
            return Err(EngineError::RegisterFiles(e));
        }
        Ok(FixedFile(slot))
    }

    /// Releases a fixed-file slot. In-flight operations keep the file alive until they finish.
    pub fn unregister_file(&self, file: FixedFile) {
        let ring = self.ring.borrow();
        match ring.submitter().register_files_update(file.0, &[-1]) {
            Ok(_) => self.fixed_files.borrow_mut().free.push(file.0),
            Err(e) => tracing::warn!(slot = file.0, error = %e, "could not release fixed file"),
        }
    }

    /// Posts a doorbell CQE into another reactor's ring. Returns false if the SQ was unusable.
    /// Queues a MSG_RING that posts a wake-up CQE into another reactor's ring; it goes out
    /// with this reactor's next `io_uring_enter`, in the same loop iteration. It can fail only
    /// when the target's ring is gone (the reactor exited, so no wake-up is needed) or its
    /// completion queue is full (so it has completions to reap and is not asleep); the
    /// completion is therefore ignored.
    fn msg_ring_wake(&self, target_ring_fd: RawFd) -> bool {
        if self.ring.try_borrow_mut().is_err() {
            return false;
        }
        let sqe =
            opcode::MsgRingData::new(types::Fd(target_ring_fd), 0, KIND_WAKE << KIND_SHIFT, None)
                .build()
                .user_data(KIND_IGNORE << KIND_SHIFT);
        // SAFETY: MSG_RING references no memory of ours.
        unsafe { self.push_raw(&sqe) };
        true
    }

    fn arm_eventfd(&self) {
        if self.eventfd_armed.get() {
            return;
        }
        let sqe = opcode::Read::new(
            types::Fd(self.shared.eventfd.as_raw_fd()),
            self.eventfd_buf.as_ptr().cast::<u8>(),
            8,
        )
        .build()
        .user_data(KIND_EVENTFD << KIND_SHIFT);
        // SAFETY: `eventfd_buf` is a boxed field of the reactor; the reactor drains all
        // operations, this read included, before it is dropped.
        unsafe { self.push_raw(&sqe) };
        self.eventfd_armed.set(true);
    }

    /// Submits queued SQEs and collects completions; waits for at least one if `wait`.
    fn enter(&self, wait: bool, timeout: Option<Duration>) {
        let mut ring = self.ring.borrow_mut();
        let res = if wait {
            match timeout {
                Some(t) => {
                    let ts = Timespec::from(t);
                    let args = SubmitArgs::new().timespec(&ts);
                    ring.submitter().submit_with_args(1, &args)
                }
                None => ring.submitter().submit_and_wait(1),
            }
        } else {
            let to_submit = u32::try_from(ring.submission().len()).unwrap_or(u32::MAX);
            // SAFETY: no argument is passed; GETEVENTS with min_complete 0 only runs deferred
            // completion work without blocking.
            unsafe {
                ring.submitter().enter::<libc::sigset_t>(
                    to_submit,
                    0,
                    io_uring::EnterFlags::GETEVENTS.bits(),
                    None,
                )
            }
        };
        match res {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => {
                tracing::error!(reactor = self.shared.index, error = %e, "io_uring_enter failed")
            }
        }
    }

    /// Delivers up to `completion_batch` available completions. Returns how many.
    fn reap(&self) -> usize {
        let mut batch = self.batch.take();
        let cap = self.completion_batch;
        {
            let mut backlog = self.backlog.borrow_mut();
            let n = backlog.len().min(cap);
            batch.extend(backlog.drain(..n));
        }
        if batch.len() < cap {
            let mut ring = self.ring.borrow_mut();
            let room = cap - batch.len();
            batch.extend(
                ring.completion()
                    .take(room)
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
        }
        let n = batch.len();
        for &(ud, res, flags) in &batch {
            self.dispatch(ud, res, flags);
        }
        batch.clear();
        self.batch.set(batch);
        if n > 0 {
            self.shared
                .stats
                .completions
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        n
    }

    fn dispatch(&self, ud: u64, res: i32, flags: u32) {
        match ud >> KIND_SHIFT {
            KIND_OP => {
                self.inflight.set(self.inflight.get() - 1);
                let index = (ud & 0xffff_ffff) as usize;
                let mut ops = self.ops.borrow_mut();
                match ops.get_mut(index) {
                    Some(state @ OpState::Pending(_)) => {
                        let OpState::Pending(waker) =
                            std::mem::replace(state, OpState::Done(res, flags))
                        else {
                            unreachable!("matched Pending above")
                        };
                        drop(ops);
                        if let Some(w) = waker {
                            w.wake();
                        }
                    }
                    Some(OpState::Orphan(_)) => {
                        let orphan = ops.remove(index);
                        drop(ops);
                        drop(orphan);
                    }
                    Some(OpState::Done(..)) | None => {
                        tracing::error!(index, "completion for an op that is not pending");
                    }
                }
            }
            KIND_HANDLER => {
                self.inflight.set(self.inflight.get() - 1);
                let id = ((ud >> HANDLER_SHIFT) & 0xffff) as usize;
                let token = ud & MAX_HANDLER_TOKEN;
                let handler = {
                    let mut handlers = self.handlers.borrow_mut();
                    let Some(entry) = handlers.get_mut(id) else {
                        tracing::error!(id, "completion for an unknown handler");
                        return;
                    };
                    entry.inflight -= 1;
                    let h = entry.handler.clone();
                    if entry.retired && entry.inflight == 0 {
                        handlers.remove(id);
                    }
                    h
                };
                handler.complete(token, res, flags);
            }
            KIND_EVENTFD => {
                self.eventfd_armed.set(false);
                if !self.stopping.get() {
                    self.arm_eventfd();
                }
            }
            KIND_WAKE => {}
            KIND_IGNORE => {
                if res < 0 && res != -libc::ENOENT && res != -libc::EALREADY {
                    tracing::debug!(res, "auxiliary io_uring request failed");
                }
            }
            kind => tracing::error!(kind, "completion of unknown kind"),
        }
    }

    /// Runs the tasks that are ready now. Returns how many polls ran.
    fn run_tasks(&self) -> usize {
        let budget = self.shared.runq.len();
        let mut ran = 0;
        while ran < budget {
            let Some(runnable) = self.shared.runq.pop() else {
                break;
            };
            // A panicking task is a bug, but one connection's bug must not take every volume
            // on this core down with it: the task is dropped (its join handle reports
            // `Cancelled`), the panic is logged and counted, and the reactor goes on.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runnable.run())).is_err() {
                self.shared
                    .stats
                    .task_panics
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    reactor = self.shared.index,
                    "a task panicked; it was dropped"
                );
            }
            ran += 1;
        }
        if ran > 0 {
            self.shared
                .stats
                .polls
                .fetch_add(ran as u64, Ordering::Relaxed);
        }
        self.tasks.reap_finished();
        ran
    }

    fn run_messages(&self) -> usize {
        if self.stopping.get() {
            // Shutting down: no new work starts. Dropping a message closes its reply channel.
            self.shared.drop_inbox();
            return 0;
        }
        let mut ran = 0;
        while let Some(msg) = self.shared.inbox.pop() {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(msg)).is_err() {
                self.shared
                    .stats
                    .task_panics
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(reactor = self.shared.index, "a cross-core message panicked");
            }
            ran += 1;
        }
        if ran > 0 {
            self.shared
                .stats
                .messages
                .fetch_add(ran as u64, Ordering::Relaxed);
        }
        ran
    }

    /// The event loop. Returns after a stop request once in-flight I/O has drained.
    pub(crate) fn run(self: &Rc<Self>) {
        self.arm_eventfd();
        let mut drain_started: Option<Instant> = None;
        loop {
            self.shared.stats.iterations.fetch_add(1, Ordering::Relaxed);
            let mut work = self.run_messages();
            work += self.timers.fire(Instant::now());
            work += self.run_tasks();

            if self.shared.stop.load(Ordering::Acquire) && !self.stopping.get() {
                self.begin_shutdown();
                drain_started = Some(Instant::now());
            }
            if let Some(started) = drain_started {
                if self.inflight.get() == 0 && !self.eventfd_armed.get() {
                    break;
                }
                if started.elapsed() > SHUTDOWN_DRAIN_LIMIT {
                    tracing::error!(
                        reactor = self.shared.index,
                        inflight = self.inflight.get(),
                        "in-flight I/O did not finish during shutdown; exiting anyway"
                    );
                    break;
                }
            }

            let ready = !self.shared.runq.is_empty()
                || !self.shared.inbox.is_empty()
                || !self.backlog.borrow().is_empty()
                || !self.ring.borrow_mut().completion().is_empty();
            if work > 0 || ready || self.busy_poll {
                self.enter(false, None);
            } else {
                self.sleep();
            }
            self.reap();
        }
        self.shared.stopped.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // Messages that raced with the stop are dropped unrun; their oneshot senders tell the
        // waiting side that the reactor is gone. `Shared::post` drains too if it loses the
        // race, so nothing stays queued.
        self.shared.drop_inbox();
        CURRENT.with(|c| *c.borrow_mut() = None);
    }

    fn sleep(&self) {
        let mut timeout = self
            .timers
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        if self.stopping.get() {
            // While draining, poll the kernel periodically for the limit check.
            timeout = Some(timeout.map_or(Duration::from_millis(100), |t| {
                t.min(Duration::from_millis(100))
            }));
        }
        if timeout == Some(Duration::ZERO) {
            self.enter(false, None);
            return;
        }
        self.shared.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !self.shared.runq.is_empty()
            || !self.shared.inbox.is_empty()
            || self.shared.stop.load(Ordering::SeqCst) && !self.stopping.get()
        {
            self.shared.sleeping.store(false, Ordering::SeqCst);
            self.enter(false, None);
            return;
        }
        self.shared.stats.sleeps.fetch_add(1, Ordering::Relaxed);
        self.enter(true, timeout);
        self.shared.sleeping.store(false, Ordering::SeqCst);
    }

    /// Cancels every task and asks the kernel to cancel every in-flight request.
    fn begin_shutdown(&self) {
        tracing::debug!(
            reactor = self.shared.index,
            inflight = self.inflight.get(),
            "reactor stopping"
        );
        self.stopping.set(true);
        // Cancelling a task drops its future here, on its own thread; dropped op futures park
        // their buffers in the op table until the kernel returns them.
        self.tasks.cancel_all();
        while let Some(r) = self.shared.runq.pop() {
            drop(r);
        }
        self.timers.clear();
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(KIND_IGNORE << KIND_SHIFT);
        // SAFETY: a cancel request references no memory.
        unsafe { self.push_raw(&cancel) };
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        if self.inflight.get() > 0 || self.eventfd_armed.get() {
            // The kernel may still own buffers: keep their memory (leak it) rather than free it
            // under the device. Only reached when the drain limit expired.
            let ops = std::mem::take(&mut *self.ops.borrow_mut());
            std::mem::forget(ops);
            let buf = std::mem::replace(&mut self.eventfd_buf, Box::new(Cell::new(0)));
            std::mem::forget(buf);
            // Buffers parked elsewhere (a bdev's slot table, dropped at thread exit) return to
            // the pool; an extra, leaked reference keeps the pool's arenas mapped for good.
            std::mem::forget(self.pool.clone());
        }
    }
}

/// Converts a CQE result into an `io::Result` of the byte count.
pub fn cqe_result(res: i32) -> io::Result<u32> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res.unsigned_abs())
    }
}
