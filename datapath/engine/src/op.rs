//! Engine operations as futures, in the "rent" model.
//!
//! An [`Op`] owns everything its SQE points at (buffers, file handles) until the kernel's
//! completion arrives. Awaiting it returns those resources with the result. Dropping it early
//! parks the resources in the reactor's op table and asks the kernel to cancel; they are freed
//! only when the completion comes back, so the kernel never writes into freed memory.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use io_uring::{opcode, squeue, types};

use crate::iobuf::IoBuf;
use crate::reactor::{Reactor, cqe_result, current};

/// An in-flight operation owning resources `T`. Resolves to `(T, result, cqe flags)`.
pub struct Op<T: 'static> {
    reactor: Rc<Reactor>,
    index: usize,
    data: Option<T>,
}

impl<T: 'static> std::fmt::Debug for Op<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl<T: 'static> Op<T> {
    /// Queues `sqe` on the current reactor; `data` is kept alive until the completion.
    ///
    /// # Safety
    /// Every pointer in `sqe` must point into memory owned by `data` (whose heap contents do not
    /// move when `data` moves) or into memory that outlives the operation, and file descriptors
    /// it names must stay open until the completion (hold them in `data`).
    ///
    /// # Panics
    /// Outside a reactor thread.
    pub unsafe fn submit(sqe: squeue::Entry, data: T) -> Op<T> {
        let reactor = current();
        // SAFETY: forwarded from this function's contract.
        let index = unsafe { reactor.push_op(sqe) };
        Op {
            reactor,
            index,
            data: Some(data),
        }
    }
}

impl<T: Unpin + 'static> Future for Op<T> {
    type Output = (T, i32, u32);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.reactor.poll_op(self.index, cx.waker()) {
            Some((res, flags)) => {
                let data = self.data.take().expect("Op polled after completion");
                Poll::Ready((data, res, flags))
            }
            None => Poll::Pending,
        }
    }
}

impl<T: 'static> Drop for Op<T> {
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            self.reactor.orphan_op(self.index, Box::new(data));
        }
    }
}

/// A no-op round trip through the ring.
///
/// # Errors
/// The kernel's answer (never fails in practice).
pub async fn nop() -> io::Result<()> {
    // SAFETY: NOP references no memory.
    let ((), res, _) = unsafe { Op::submit(opcode::Nop::new().build(), ()) }.await;
    cqe_result(res).map(|_| ())
}

fn checked_len(buf: &IoBuf) -> u32 {
    u32::try_from(buf.len()).expect("pool buffers are far below 4 GiB")
}

/// Reads `buf.len()` bytes at `offset` into a registered buffer. Returns the buffer and the
/// number of bytes read.
///
/// # Errors
/// The kernel's answer.
pub async fn read_fixed(
    file: &Rc<File>,
    mut buf: IoBuf,
    offset: u64,
) -> (IoBuf, io::Result<usize>) {
    let sqe = opcode::ReadFixed::new(
        types::Fd(file.as_raw_fd()),
        buf.as_mut_ptr(),
        checked_len(&buf),
        buf.buf_index(),
    )
    .offset(offset)
    .build();
    // SAFETY: the buffer and the file are moved into the op's data and kept until completion;
    // the buffer's memory is a pool chunk that does not move with the `IoBuf`.
    let ((buf, _file), res, _) = unsafe { Op::submit(sqe, (buf, file.clone())) }.await;
    (buf, cqe_result(res).map(|n| n as usize))
}

/// Writes `buf` at `offset` from a registered buffer. Returns the buffer and the bytes written.
///
/// # Errors
/// The kernel's answer.
pub async fn write_fixed(file: &Rc<File>, buf: IoBuf, offset: u64) -> (IoBuf, io::Result<usize>) {
    let sqe = opcode::WriteFixed::new(
        types::Fd(file.as_raw_fd()),
        buf.as_ptr(),
        checked_len(&buf),
        buf.buf_index(),
    )
    .offset(offset)
    .build();
    // SAFETY: as for `read_fixed`; the kernel only reads the buffer.
    let ((buf, _file), res, _) = unsafe { Op::submit(sqe, (buf, file.clone())) }.await;
    (buf, cqe_result(res).map(|n| n as usize))
}

/// Flushes a file's data (and metadata unless `datasync`) to stable storage.
///
/// # Errors
/// The kernel's answer.
pub async fn fsync(file: &Rc<File>, datasync: bool) -> io::Result<()> {
    let mut op = opcode::Fsync::new(types::Fd(file.as_raw_fd()));
    if datasync {
        op = op.flags(types::FsyncFlags::DATASYNC);
    }
    // SAFETY: the file is kept in the op's data until completion; nothing else is referenced.
    let (_file, res, _) = unsafe { Op::submit(op.build(), file.clone()) }.await;
    cqe_result(res).map(|_| ())
}
