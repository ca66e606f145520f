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
