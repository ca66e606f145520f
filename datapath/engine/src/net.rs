//! TCP sockets on the reactor's ring: accept, connect, recv and send are io_uring operations,
//! so a target's connections and its block I/O share one ring and one thread.
//!
//! Sockets are created and bound with ordinary (non-blocking, instant) syscalls; everything
//! that waits goes through the ring. Sends use `MSG_NOSIGNAL`: a vanished peer yields `EPIPE`,
//! never `SIGPIPE`.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;

use io_uring::{opcode, types};

use crate::iobuf::IoBuf;
use crate::op::Op;
use crate::reactor::cqe_result;

/// A listening TCP socket.
#[derive(Debug)]
pub struct TcpListener {
    inner: Rc<StdListener>,
}

impl TcpListener {
    /// Binds and listens (backlog 1024).
    ///
    /// # Errors
    /// The address is in use, not local, or not permitted.
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        let inner = StdListener::bind(addr)?;
        Ok(TcpListener {
            inner: Rc::new(inner),
        })
    }

    /// Wraps a listener bound elsewhere (for example on the daemon's main thread).
    pub fn from_std(listener: StdListener) -> TcpListener {
        TcpListener {
            inner: Rc::new(listener),
        }
    }

    /// The bound address (with the port the kernel chose for port 0).
    ///
    /// # Errors
    /// The kernel's answer.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Waits for the next connection.
    ///
    /// # Errors
    /// The kernel's answer; `ECANCELED` when the reactor shuts down.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let mut addr = Box::new((
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
            unsafe { std::mem::zeroed::<libc::sockaddr_storage>() },
            std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        ));
        let sqe = opcode::Accept::new(
            types::Fd(self.inner.as_raw_fd()),
            (&raw mut addr.0).cast(),
            &raw mut addr.1,
        )
        .flags(libc::SOCK_CLOEXEC)
        .build();
        // SAFETY: the address buffer is boxed and moved into the op's data (the heap memory
        // does not move); the listener is kept open by the Rc in the data.
        let ((addr, _l), res, _) = unsafe { Op::submit(sqe, (addr, self.inner.clone())) }.await;
        let fd = cqe_result(res)? as i32;
        // SAFETY: a successful accept returns a new descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let peer = sockaddr_to_std(&addr.0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "peer is not IP"))?;
        Ok((TcpStream::from_fd(owned), peer))
    }
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in, which it is big and
            // aligned enough for.
            let a = unsafe { &*std::ptr::from_ref(ss).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((
                u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*std::ptr::from_ref(ss).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::from((
                a.sin6_addr.s6_addr,
                u16::from_be(a.sin6_port),
            )))
        }
        _ => None,
    }
}

/// A connected TCP socket. Clones share the connection.
#[derive(Debug, Clone)]
pub struct TcpStream {
    inner: Rc<StdStream>,
}

impl TcpStream {
    fn from_fd(fd: OwnedFd) -> TcpStream {
        TcpStream {
            inner: Rc::new(StdStream::from(fd)),
        }
    }

    /// Connects to `addr`.
    ///
    /// # Errors
    /// The kernel's answer (refused, unreachable, ...).
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let domain = if addr.is_ipv4() {
            rustix::net::AddressFamily::INET
        } else {
            rustix::net::AddressFamily::INET6
        };
        let fd = rustix::net::socket_with(
            domain,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        let stream = Rc::new(StdStream::from(fd));
        let (storage, len) = std_to_sockaddr(addr);
        let storage = Box::new(storage);
        let sqe = opcode::Connect::new(
            types::Fd(stream.as_raw_fd()),
            std::ptr::from_ref(&*storage).cast(),
            len,
        )
        .build();
        // SAFETY: the address is boxed in the op's data; the socket is kept open by the Rc.
        let ((_addr, stream), res, _) = unsafe { Op::submit(sqe, (storage, stream)) }.await;
        cqe_result(res)?;
        Ok(TcpStream { inner: stream })
    }

    /// Wraps a connected std stream.
    pub fn from_std(stream: StdStream) -> TcpStream {
        TcpStream {
            inner: Rc::new(stream),
        }
    }

    /// The std stream, to move the connection to another thread; `None` while clones exist
    /// (or operations hold it).
    pub fn into_std(self) -> Option<StdStream> {
        Rc::try_unwrap(self.inner).ok()
    }

    /// Disables Nagle's algorithm (storage protocols want every PDU out at once).
    ///
    /// # Errors
    /// The kernel's answer.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.inner.set_nodelay(on)
    }

    /// The peer's address.
    ///
    /// # Errors
    /// The kernel's answer.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// Receives up to `buf.len()` bytes into `buf`. `Ok(0)` means the peer closed its side.
    ///
    /// # Errors
    /// The kernel's answer (`ECONNRESET` when the peer vanished).
    pub async fn recv(&self, mut buf: IoBuf) -> (IoBuf, io::Result<usize>) {
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let sqe =
            opcode::Recv::new(types::Fd(self.inner.as_raw_fd()), buf.as_mut_ptr(), len).build();
        // SAFETY: the buffer (a pool chunk that does not move) and the socket are held by the
        // op until completion.
        let ((buf, _s), res, _) = unsafe { Op::submit(sqe, (buf, self.inner.clone())) }.await;
        (buf, cqe_result(res).map(|n| n as usize))
    }

    /// Sends `buf[..len]` (one `send`; may be short).
    ///
    /// # Errors
    /// The kernel's answer (`EPIPE` or `ECONNRESET` when the peer vanished).
    pub async fn send(&self, buf: IoBuf, len: usize) -> (IoBuf, io::Result<usize>) {
        let len = u32::try_from(len.min(buf.len())).unwrap_or(u32::MAX);
        let sqe = opcode::Send::new(types::Fd(self.inner.as_raw_fd()), buf.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        // SAFETY: as for `recv`; the kernel only reads the buffer.
        let ((buf, _s), res, _) = unsafe { Op::submit(sqe, (buf, self.inner.clone())) }.await;
        (buf, cqe_result(res).map(|n| n as usize))
    }

    /// Sends all of `buf[..len]`, looping over short sends. After a short send the unsent tail
    /// is moved to the front of `buf`, so its contents are unspecified afterwards.
    ///
    /// # Errors
    /// The first failed send; `WriteZero` if the kernel accepts nothing.
    pub async fn send_all(&self, mut buf: IoBuf, len: usize) -> (IoBuf, io::Result<()>) {
        let mut left = len.min(buf.len());
        while left > 0 {
            let (b, res) = self.send(buf, left).await;
            buf = b;
            match res {
                Ok(0) => return (buf, Err(io::ErrorKind::WriteZero.into())),
                Ok(n) if n < left => {
                    buf.copy_within(n..left, 0);
                    left -= n;
                }
                Ok(_) => left = 0,
                Err(e) => return (buf, Err(e)),
            }
        }
        (buf, Ok(()))
    }

    /// Receives into the spare capacity of `buf` (at most `max` bytes), appending to it.
    /// `Ok(0)` means the peer closed its side. For protocol front ends that parse from a
    /// growable buffer; the heap block does not move while the kernel writes into it.
    ///
    /// # Errors
    /// The kernel's answer.
    pub async fn recv_into_vec(
        &self,
        mut buf: Vec<u8>,
        max: usize,
    ) -> (Vec<u8>, io::Result<usize>) {
        buf.reserve(max);
        let spare = buf.spare_capacity_mut();
        let len = u32::try_from(spare.len().min(max)).unwrap_or(u32::MAX);
        let ptr = spare.as_mut_ptr().cast::<u8>();
        let sqe = opcode::Recv::new(types::Fd(self.inner.as_raw_fd()), ptr, len).build();
        // SAFETY: the Vec's heap block does not move while the Vec is owned by the op (it is
        // not resized until the op hands it back), and the socket is held open by the Rc.
        let ((mut buf, _s), res, _) = unsafe { Op::submit(sqe, (buf, self.inner.clone())) }.await;
        let res = cqe_result(res).map(|n| n as usize);
        if let Ok(n) = res {
            let new_len = buf.len() + n.min(len as usize);
            // SAFETY: the kernel initialised `n` bytes of the spare capacity (n <= len).
            unsafe { buf.set_len(new_len) };
        }
        (buf, res)
    }

    /// Sends all of `buf[from..]`, looping over short sends; hands the Vec back for reuse.
    ///
    /// # Errors
    /// The first failed send; `WriteZero` if the kernel accepts nothing.
    pub async fn send_all_vec(&self, buf: Vec<u8>, mut from: usize) -> (Vec<u8>, io::Result<()>) {
        let mut buf = buf;
        while from < buf.len() {
            let left = u32::try_from(buf.len() - from).unwrap_or(u32::MAX);
            let sqe = opcode::Send::new(
                types::Fd(self.inner.as_raw_fd()),
                buf[from..].as_ptr(),
                left,
            )
            .flags(libc::MSG_NOSIGNAL)
            .build();
            // SAFETY: the Vec is owned by the op until completion and not resized, so the
            // bytes stay put; the kernel only reads them. The socket is held by the Rc.
            let ((b, _s), res, _) = unsafe { Op::submit(sqe, (buf, self.inner.clone())) }.await;
            buf = b;
            match cqe_result(res) {
                Ok(0) => return (buf, Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => from += n as usize,
                Err(e) => return (buf, Err(e)),
            }
        }
        (buf, Ok(()))
    }

    /// Shuts down both directions: the peer reads end-of-stream and a receive pending here
    /// completes with 0 bytes.
    ///
    /// # Errors
    /// The kernel's answer.
    pub fn shutdown(&self) -> io::Result<()> {
        self.inner.shutdown(std::net::Shutdown::Both)
    }

    /// Shuts down the write side (the peer reads end-of-stream).
    ///
    /// # Errors
    /// The kernel's answer.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.inner.shutdown(std::net::Shutdown::Write)
    }
}

fn std_to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let sin = unsafe { &mut *std::ptr::from_mut(&mut ss).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_be_bytes(a.ip().octets()).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *std::ptr::from_mut(&mut ss).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Accepts connections on `listener` from the first of `reactors` and hands each, round robin,
/// to the next reactor, where `handle` runs with the stream (as a std stream: wrap it with
/// [`TcpStream::from_std`] there). Protocol front ends use this so that their connections
/// spread over every core. Returns once the accept loop is spawned; it runs until the engine
/// stops.
///
/// # Errors
/// [`EngineError::Stopped`] when there is no reactor or the first has stopped.
pub fn serve_spread<F>(
    reactors: Vec<crate::ReactorHandle>,
    listener: StdListener,
    what: &'static str,
    handle: F,
) -> Result<(), crate::EngineError>
where
    F: Fn(usize, StdStream, SocketAddr) + Send + Sync + 'static,
{
    let first = reactors
        .first()
        .cloned()
        .ok_or(crate::EngineError::Stopped(0))?;
    let handle = std::sync::Arc::new(handle);
    first.send(move || {
        crate::spawn(async move {
            let addr = listener.local_addr().ok();
            let listener = TcpListener::from_std(listener);
            tracing::info!(addr = ?addr, "{what} listening");
            let mut next = 0usize;
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "{what}: accept failed");
                        crate::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(std_stream) = stream.into_std() else {
                    continue;
                };
                let index = next % reactors.len();
                next = next.wrapping_add(1);
                let h = handle.clone();
                let sent = reactors[index].send(move || h(index, std_stream, peer));
                if sent.is_err() {
                    tracing::warn!(
                        "{what}: connection from {peer} dropped: reactor {index} stopped"
                    );
                }
            }
        });
    })
}

/// The writer half of a protocol connection: whenever `wake` fires, asks `fill` for the bytes
/// ready to go (appended to an empty Vec) and sends them, until `closing` is set and nothing is
/// left, or a send fails (then `closing` is set). Shuts the socket down both ways at the end, so
/// a reader blocked on a peer that will never speak again wakes up too.
pub async fn write_loop(
    stream: &TcpStream,
    wake: &crate::Signal,
    closing: &std::cell::Cell<bool>,
    mut fill: impl FnMut(&mut Vec<u8>),
) {
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        out.clear();
        fill(&mut out);
        if out.is_empty() {
            if closing.get() {
                break;
            }
            wake.wait().await;
            continue;
        }
        let (b, res) = stream.send_all_vec(out, 0).await;
        out = b;
        if res.is_err() {
            closing.set(true);
            break;
        }
    }
    let _ = stream.shutdown();
}
