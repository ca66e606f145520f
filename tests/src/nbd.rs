//! A small blocking NBD client for end-to-end tests, written from the protocol document and
//! independent of the target's own codec (so the two cannot share a mistake): the fixed
//! newstyle handshake with `NBD_OPT_GO`, optional structured replies and the `base:allocation`
//! context, requests and both kinds of replies. It also sends raw bytes, so tests can send
//! what no real client would.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_MAGIC: u32 = 0x6744_6698;
const STRUCTURED_MAGIC: u32 = 0x668e_33ef;

/// `NBD_OPT_GO`.
pub const OPT_GO: u32 = 7;
/// `NBD_OPT_STRUCTURED_REPLY`.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// `NBD_OPT_SET_META_CONTEXT`.
pub const OPT_SET_META_CONTEXT: u32 = 10;
/// `NBD_REP_ACK`.
pub const REP_ACK: u32 = 1;
/// `NBD_REP_ERR_UNKNOWN`.
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;

/// `NBD_CMD_READ`.
pub const CMD_READ: u16 = 0;
/// `NBD_CMD_WRITE`.
pub const CMD_WRITE: u16 = 1;
/// `NBD_CMD_DISC`.
pub const CMD_DISC: u16 = 2;
/// `NBD_CMD_FLUSH`.
pub const CMD_FLUSH: u16 = 3;
/// `NBD_CMD_TRIM`.
pub const CMD_TRIM: u16 = 4;
/// `NBD_CMD_WRITE_ZEROES`.
pub const CMD_WRITE_ZEROES: u16 = 6;
/// `NBD_CMD_BLOCK_STATUS`.
pub const CMD_BLOCK_STATUS: u16 = 7;

/// `NBD_FLAG_READ_ONLY` (transmission flags).
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// `NBD_EPERM`.
pub const EPERM: u32 = 1;
/// `NBD_EINVAL`.
pub const EINVAL: u32 = 22;
/// `NBD_ENOSPC`.
pub const ENOSPC: u32 = 28;

/// A connection in the transmission phase.
#[derive(Debug)]
pub struct Client {
    s: TcpStream,
    /// The export's size.
    pub size: u64,
    /// Its transmission flags.
    pub flags: u16,
    /// Whether structured replies were negotiated.
    pub structured: bool,
}

/// One reply (or one chunk of a structured reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A simple reply; `data` holds read data when the error is zero.
    Simple {
        /// The error value.
        error: u32,
        /// The request's cookie.
        cookie: u64,
        /// Read data.
        data: Vec<u8>,
    },
    /// A structured reply chunk.
    Chunk {
        /// Chunk flags (bit 0: done).
        flags: u16,
        /// Chunk type.
        kind: u16,
        /// The request's cookie.
        cookie: u64,
        /// The payload.
        payload: Vec<u8>,
    },
}

impl Reply {
    /// The error this reply carries (zero for success or data).
    pub fn error(&self) -> u32 {
        match self {
            Reply::Simple { error, .. } => *error,
            Reply::Chunk { kind, payload, .. } if kind & 0x8000 != 0 && payload.len() >= 4 => {
                u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
            }
            Reply::Chunk { .. } => 0,
        }
    }

    /// The cookie it answers.
    pub fn cookie(&self) -> u64 {
        match self {
            Reply::Simple { cookie, .. } | Reply::Chunk { cookie, .. } => *cookie,
        }
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn read_n(s: &mut TcpStream, n: usize) -> io::Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b)?;
    Ok(b)
}

fn send_option(s: &mut TcpStream, option: u32, data: &[u8]) -> io::Result<()> {
    let mut b = Vec::with_capacity(16 + data.len());
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    s.write_all(&b)
}

/// Reads one option reply: (type, data).
fn option_reply(s: &mut TcpStream, option: u32) -> io::Result<(u32, Vec<u8>)> {
    let h = read_n(s, 20)?;
    if be64(&h) != OPT_REPLY_MAGIC || be32(&h[8..]) != option {
        return Err(io::Error::other(format!(
            "bad option reply header {h:02x?}"
        )));
    }
    let len = be32(&h[16..]) as usize;
    Ok((be32(&h[12..]), read_n(s, len)?))
}

/// Connects to `addr` and does the greeting and client flags (fixed newstyle, no zeroes).
///
/// # Errors
/// The socket failed or the greeting was wrong.
pub fn greet(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_nodelay(true)?;
    let g = read_n(&mut s, 18)?;
    if &g[..8] != b"NBDMAGIC" || &g[8..16] != b"IHAVEOPT" {
        return Err(io::Error::other("not an NBD newstyle server"));
    }
    s.write_all(&3u32.to_be_bytes())?;
    Ok(s)
}

impl Client {
    /// Connects and enters transmission on export `name` with `NBD_OPT_GO`, after structured
    /// replies and `base:allocation` when `structured`. `Ok(Err(rep))` when the server refused
    /// the GO with option reply `rep`.
    ///
    /// # Errors
    /// The socket failed or the server broke the protocol.
    pub fn connect(
        addr: SocketAddr,
        name: &str,
        structured: bool,
    ) -> io::Result<Result<Client, u32>> {
        let mut s = greet(addr)?;
        if structured {
            send_option(&mut s, OPT_STRUCTURED_REPLY, &[])?;
            let (rep, _) = option_reply(&mut s, OPT_STRUCTURED_REPLY)?;
            if rep != REP_ACK {
                return Ok(Err(rep));
            }
            let mut d = Vec::new();
            d.extend_from_slice(&(name.len() as u32).to_be_bytes());
            d.extend_from_slice(name.as_bytes());
            d.extend_from_slice(&1u32.to_be_bytes());
            d.extend_from_slice(&15u32.to_be_bytes());
            d.extend_from_slice(b"base:allocation");
            send_option(&mut s, OPT_SET_META_CONTEXT, &d)?;
            loop {
                let (rep, _) = option_reply(&mut s, OPT_SET_META_CONTEXT)?;
                if rep == REP_ACK {
                    break;
                }
                if rep & (1 << 31) != 0 {
                    return Ok(Err(rep));
                }
            }
        }
        let mut d = Vec::new();
        d.extend_from_slice(&(name.len() as u32).to_be_bytes());
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&0u16.to_be_bytes());
        send_option(&mut s, OPT_GO, &d)?;
        let mut size_flags = None;
        loop {
            let (rep, data) = option_reply(&mut s, OPT_GO)?;
            match rep {
                REP_ACK => break,
                3 if data.len() == 12 && data[..2] == [0, 0] => {
                    size_flags = Some((be64(&data[2..]), u16::from_be_bytes([data[10], data[11]])));
                }
                3 => {}
                other => return Ok(Err(other)),
            }
        }
        let (size, flags) =
            size_flags.ok_or_else(|| io::Error::other("GO succeeded without NBD_INFO_EXPORT"))?;
        Ok(Ok(Client {
            s,
            size,
            flags,
            structured,
        }))
    }

    /// The socket, for raw bytes.
    pub fn socket(&mut self) -> &mut TcpStream {
        &mut self.s
    }

    /// Sends one request (with `data` after it for a write).
    ///
    /// # Errors
    /// The socket failed.
    pub fn send(
        &mut self,
        cmd: u16,
        flags: u16,
        cookie: u64,
        offset: u64,
        length: u32,
        data: &[u8],
    ) -> io::Result<()> {
        let mut b = Vec::with_capacity(28 + data.len());
        b.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&cmd.to_be_bytes());
        b.extend_from_slice(&cookie.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&length.to_be_bytes());
        b.extend_from_slice(data);
        self.s.write_all(&b)
    }

    /// Reads one reply or chunk; a successful simple reply is followed by `read_len` bytes of
    /// data (the caller knows which request it answers: give 0 for anything but a read).
    ///
    /// # Errors
    /// The socket failed or the reply is malformed.
    pub fn reply(&mut self, read_len: usize) -> io::Result<Reply> {
        let m = read_n(&mut self.s, 4)?;
        match be32(&m) {
            SIMPLE_MAGIC => {
                let h = read_n(&mut self.s, 12)?;
                let error = be32(&h);
                let data = if error == 0 {
                    read_n(&mut self.s, read_len)?
                } else {
                    Vec::new()
                };
                Ok(Reply::Simple {
                    error,
                    cookie: be64(&h[4..]),
                    data,
                })
            }
            STRUCTURED_MAGIC => {
                let h = read_n(&mut self.s, 16)?;
                let len = be32(&h[12..]) as usize;
                Ok(Reply::Chunk {
                    flags: u16::from_be_bytes([h[0], h[1]]),
                    kind: u16::from_be_bytes([h[2], h[3]]),
                    cookie: be64(&h[4..]),
                    payload: read_n(&mut self.s, len)?,
                })
            }
            other => Err(io::Error::other(format!("bad reply magic {other:#x}"))),
        }
    }

    /// Writes `data` at `offset` and waits for the answer; returns its error value.
    ///
    /// # Errors
    /// The socket failed.
    pub fn write(&mut self, cookie: u64, offset: u64, data: &[u8]) -> io::Result<u32> {
        self.send(CMD_WRITE, 0, cookie, offset, data.len() as u32, data)?;
        Ok(self.reply(0)?.error())
    }

    /// Reads `len` bytes at `offset` (whole, gathering structured chunks); the error value or
    /// the data.
    ///
    /// # Errors
    /// The socket failed or the reply is malformed.
    pub fn read(&mut self, cookie: u64, offset: u64, len: u32) -> io::Result<Result<Vec<u8>, u32>> {
        self.send(CMD_READ, 0, cookie, offset, len, &[])?;
        if !self.structured {
            return Ok(match self.reply(len as usize)? {
                Reply::Simple { error: 0, data, .. } => Ok(data),
                r => Err(r.error()),
            });
        }
        let mut out = vec![0u8; len as usize];
        loop {
            let r = self.reply(0)?;
            let Reply::Chunk {
                flags,
                kind,
                payload,
                ..
            } = &r
            else {
                return Err(io::Error::other("a simple reply to a structured read"));
            };
            if kind & 0x8000 != 0 {
                return Ok(Err(r.error()));
            }
            if *kind == 1 {
                let at = (be64(payload) - offset) as usize;
                out[at..at + payload.len() - 8].copy_from_slice(&payload[8..]);
            }
            if flags & 1 != 0 {
                return Ok(Ok(out));
            }
        }
    }
}
