//! The bootstrap socket: a Unix `SOCK_SEQPACKET` connection over which control hands the
//! datapath the region's memfd and the two eventfds (`SCM_RIGHTS`), and which afterwards only
//! serves to notice that the peer is gone (hang-up).
//!
//! # Handshake (each a single packet, little-endian)
//!
//! ```text
//! control  -> datapath   hello: "BSLTHELO", version u32 (1), reserved u32, epoch u64
//!                        + SCM_RIGHTS [region memfd, eventfd to datapath, eventfd to control]
//! datapath -> control    answer: "BSLTANSR", status u32 (0 ok, else a refusal code), pid u32,
//!                        epoch u64
//! ```
//!
//! Nothing else is sent on the socket after that. When either process exits or is killed, the
//! kernel closes its end and the other sees `POLLHUP` / end of file at once, whatever the
//! rings hold: that is the liveness signal. (A `pidfd` would add nothing while the socket is
//! close-on-exec and never handed on; the peer's PID is available from `SO_PEERCRED`.)

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

use crate::error::BootstrapError;

/// Version of the handshake packets.
pub const BOOTSTRAP_VERSION: u32 = 1;

const HELLO_MAGIC: &[u8; 8] = b"BSLTHELO";
const ANSWER_MAGIC: &[u8; 8] = b"BSLTANSR";
const PACKET_LEN: usize = 24;

/// Refusal codes of the answer.
pub(crate) const REFUSE_BAD_HELLO: u32 = 1;
pub(crate) const REFUSE_BAD_REGION: u32 = 2;
pub(crate) const REFUSE_EPOCH: u32 = 3;

fn sock(step: &'static str) -> impl FnOnce(rustix::io::Errno) -> BootstrapError {
    move |e| BootstrapError::Socket {
        step,
        source: e.into(),
    }
}

/// A connected pair of `SOCK_SEQPACKET` sockets (close-on-exec), for peers in one process or
/// a parent and a child.
///
/// # Errors
///
/// [`BootstrapError::Socket`].
pub fn socketpair() -> Result<(OwnedFd, OwnedFd), BootstrapError> {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(sock("socketpair"))
}

/// A listening `SOCK_SEQPACKET` socket at a path (control listens, the datapath connects).
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    path: PathBuf,
}

impl Listener {
    /// Binds and listens at `path` (which must not exist).
    ///
    /// # Errors
    ///
    /// [`BootstrapError::Socket`].
    pub fn bind(path: &Path) -> Result<Listener, BootstrapError> {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(sock("socket"))?;
        let addr = SocketAddrUnix::new(path).map_err(sock("socket path"))?;
        rustix::net::bind(&fd, &addr).map_err(sock("bind"))?;
        rustix::net::listen(&fd, 4).map_err(sock("listen"))?;
        Ok(Listener {
            fd,
            path: path.to_owned(),
        })
    }

    /// The path it listens at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts one connection, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`BootstrapError::Timeout`], [`BootstrapError::Socket`].
    pub fn accept(&self, timeout: Duration) -> Result<OwnedFd, BootstrapError> {
        wait_readable(self.fd.as_fd(), timeout, "connect")?;
        rustix::net::accept_with(&self.fd, SocketFlags::CLOEXEC).map_err(sock("accept"))
    }
}

/// Connects to a [`Listener`] at `path`.
///
/// # Errors
///
/// [`BootstrapError::Socket`].
pub fn connect(path: &Path) -> Result<OwnedFd, BootstrapError> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(sock("socket"))?;
    let addr = SocketAddrUnix::new(path).map_err(sock("socket path"))?;
    rustix::net::connect(&fd, &addr).map_err(sock("connect"))?;
    Ok(fd)
}

/// Waits until `fd` is readable (or hung up).
fn wait_readable(
    fd: BorrowedFd<'_>,
    timeout: Duration,
    step: &'static str,
) -> Result<(), BootstrapError> {
    let start = Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        let ts = rustix::event::Timespec::try_from(left).unwrap_or(rustix::event::Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) => {
                return Err(BootstrapError::Timeout {
                    step,
                    waited: timeout,
                });
            }
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                return Err(BootstrapError::Socket {
                    step: "poll",
                    source: e.into(),
                });
            }
        }
    }
}

fn packet(magic: &[u8; 8], a: u32, b: u32, epoch: u64) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[..8].copy_from_slice(magic);
    p[8..12].copy_from_slice(&a.to_le_bytes());
    p[12..16].copy_from_slice(&b.to_le_bytes());
    p[16..24].copy_from_slice(&epoch.to_le_bytes());
    p
}

fn unpack(magic: &[u8; 8], p: &[u8]) -> Result<(u32, u32, u64), BootstrapError> {
    if p.len() != PACKET_LEN {
        return Err(BootstrapError::BadMessage {
            what: "wrong length",
        });
    }
    if &p[..8] != magic {
        return Err(BootstrapError::BadMessage {
            what: "wrong magic",
        });
    }
    let u32_at = |at: usize| u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
    let mut e = [0u8; 8];
    e.copy_from_slice(&p[16..24]);
    Ok((u32_at(8), u32_at(12), u64::from_le_bytes(e)))
}

/// Sends the hello with the three descriptors.
pub(crate) fn send_hello(
    socket: BorrowedFd<'_>,
    epoch: u64,
    fds: [BorrowedFd<'_>; 3],
) -> Result<(), BootstrapError> {
    let p = packet(HELLO_MAGIC, BOOTSTRAP_VERSION, 0, epoch);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !anc.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(BootstrapError::BadMessage {
            what: "no room for the descriptors",
        });
    }
    rustix::net::sendmsg(socket, &[IoSlice::new(&p)], &mut anc, SendFlags::NOSIGNAL)
        .map_err(sock("sendmsg(hello)"))?;
    Ok(())
}

/// A received hello: its epoch and every descriptor that came with it.
pub(crate) struct Hello {
    pub(crate) epoch: u64,
    pub(crate) fds: Vec<OwnedFd>,
}

/// Receives the hello (at most `timeout`).
pub(crate) fn recv_hello(
    socket: BorrowedFd<'_>,
    timeout: Duration,
) -> Result<Hello, BootstrapError> {
    wait_readable(socket, timeout, "send its hello")?;
    let mut buf = [0u8; 64];
    // Room for more descriptors than expected, so extra ones are received (and closed).
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut buf)],
        &mut anc,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(sock("recvmsg(hello)"))?;
    let mut fds = Vec::new();
    for msg in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    if got.bytes == 0 {
        return Err(BootstrapError::Closed);
    }
    if got.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(BootstrapError::MissingFds { got: fds.len() });
    }
    let (version, _, epoch) = unpack(HELLO_MAGIC, &buf[..got.bytes])?;
    if version != BOOTSTRAP_VERSION {
        return Err(BootstrapError::BadMessage {
            what: "unsupported bootstrap version",
        });
    }
    Ok(Hello { epoch, fds })
}

/// Sends the answer.
pub(crate) fn send_answer(
    socket: BorrowedFd<'_>,
    status: u32,
    epoch: u64,
) -> Result<(), BootstrapError> {
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    let p = packet(ANSWER_MAGIC, status, pid, epoch);
    rustix::net::send(socket, &p, SendFlags::NOSIGNAL).map_err(sock("send(answer)"))?;
    Ok(())
}

/// Receives the answer: `(pid, epoch)` when accepted.
pub(crate) fn recv_answer(
    socket: BorrowedFd<'_>,
    timeout: Duration,
) -> Result<(u32, u64), BootstrapError> {
    wait_readable(socket, timeout, "answer the hello")?;
    let mut buf = [0u8; 64];
    let (n, _) =
        rustix::net::recv(socket, &mut buf, RecvFlags::empty()).map_err(sock("recv(answer)"))?;
    if n == 0 {
        return Err(BootstrapError::Closed);
    }
    let (status, pid, epoch) = unpack(ANSWER_MAGIC, &buf[..n])?;
    if status != 0 {
        return Err(BootstrapError::Refused { code: status });
    }
    Ok((pid, epoch))
}

/// Whether the peer closed its end (non-blocking). Any stray bytes are read and dropped.
pub(crate) fn hung_up(socket: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(&socket, PollFlags::IN)];
    match rustix::event::poll(
        &mut fds,
        Some(&rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        }),
    ) {
        Ok(0) | Err(rustix::io::Errno::INTR) => return false,
        Ok(_) => {}
        Err(_) => return true,
    }
    let revents = fds[0].revents();
    if revents.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
        return true;
    }
    let mut buf = [0u8; 64];
    match rustix::net::recv(socket, &mut buf, RecvFlags::DONTWAIT) {
        Ok((0, _)) => true,
        Ok(_) | Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => false,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_carries_descriptors() {
        let (a, b) = socketpair().expect("pair");
        let e1 = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).expect("efd");
        send_hello(a.as_fd(), 9, [e1.as_fd(), e1.as_fd(), e1.as_fd()]).expect("send");
        let h = recv_hello(b.as_fd(), Duration::from_secs(1)).expect("recv");
        assert_eq!(h.epoch, 9);
        assert_eq!(h.fds.len(), 3);
        send_answer(b.as_fd(), 0, 9).expect("answer");
        assert_eq!(
            recv_answer(a.as_fd(), Duration::from_secs(1)).expect("ok"),
            (std::process::id(), 9)
        );
        send_answer(b.as_fd(), REFUSE_EPOCH, 9).expect("answer");
        assert!(matches!(
            recv_answer(a.as_fd(), Duration::from_secs(1)),
            Err(BootstrapError::Refused { code: 3 })
        ));
        assert!(!hung_up(a.as_fd()));
        drop(b);
        assert!(hung_up(a.as_fd()));
    }

    #[test]
    fn junk_and_silence_are_errors() {
        let (a, b) = socketpair().expect("pair");
        assert!(matches!(
            recv_hello(b.as_fd(), Duration::from_millis(10)),
            Err(BootstrapError::Timeout { .. })
        ));
        rustix::net::send(&a, b"hello?", SendFlags::empty()).expect("send");
        assert!(matches!(
            recv_hello(b.as_fd(), Duration::from_secs(1)),
            Err(BootstrapError::BadMessage { .. })
        ));
        drop(a);
        assert!(matches!(
            recv_hello(b.as_fd(), Duration::from_secs(1)),
            Err(BootstrapError::Closed)
        ));
    }

    #[test]
    fn listener_and_connect() {
        let dir = std::env::temp_dir().join(format!("basalt-ring-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("listen.sock");
        let _ = std::fs::remove_file(&path);
        let l = Listener::bind(&path).expect("bind");
        assert!(matches!(
            l.accept(Duration::from_millis(5)),
            Err(BootstrapError::Timeout { .. })
        ));
        let c = connect(l.path()).expect("connect");
        let s = l.accept(Duration::from_secs(1)).expect("accept");
        rustix::net::send(&c, b"x", SendFlags::empty()).expect("send");
        let mut buf = [0u8; 4];
        assert_eq!(
            rustix::net::recv(&s, &mut buf, RecvFlags::empty())
                .expect("recv")
                .0,
            1
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
