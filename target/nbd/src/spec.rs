//! The NBD wire format: magics, flags, option, reply and command codes, and the fixed-size
//! messages of the handshake and transmission phases (the protocol document is
//! `doc/proto.md` of the NBD project).
//!
//! Every number on the wire is big-endian. Decoders take bytes and return a value, `Ok(None)`
//! when more bytes are needed, or a [`DecodeError`]; they never panic. Encoders append to a
//! `Vec<u8>`. Codes are newtypes with named constants, so a reply type can never be sent as an
//! option code by mistake.

/// `NBDMAGIC`: the first eight bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the server's newstyle greeting, and the magic of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// The magic of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// The magic of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// The magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// The magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Bytes of the server's greeting: magic, `IHAVEOPT`, handshake flags.
pub const GREETING_LEN: usize = 18;
/// Bytes of the client's flags.
pub const CLIENT_FLAGS_LEN: usize = 4;
/// Bytes of an option header: magic, option, length.
pub const OPTION_HEADER_LEN: usize = 16;
/// Bytes of an option reply header: magic, option, type, length.
pub const OPTION_REPLY_HEADER_LEN: usize = 20;
/// Bytes of a transmission request header.
pub const REQUEST_LEN: usize = 28;
/// Bytes of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Bytes of a structured reply chunk header.
pub const CHUNK_HEADER_LEN: usize = 20;
/// Zero bytes after the `NBD_OPT_EXPORT_NAME` answer unless the client asked for none.
pub const EXPORT_NAME_PADDING: usize = 124;

/// Handshake flags (sent by the server after its greeting magic).
pub mod handshake {
    /// The server speaks fixed newstyle negotiation.
    pub const FIXED_NEWSTYLE: u16 = 1 << 0;
    /// The server can leave out the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
    pub const NO_ZEROES: u16 = 1 << 1;
}

/// Client flags (the client's first four bytes).
pub mod client {
    /// The client speaks fixed newstyle negotiation.
    pub const FIXED_NEWSTYLE: u32 = 1 << 0;
    /// The client wants no zero padding after `NBD_OPT_EXPORT_NAME`.
    pub const NO_ZEROES: u32 = 1 << 1;
    /// Every flag a client may set.
    pub const KNOWN: u32 = FIXED_NEWSTYLE | NO_ZEROES;
}

/// Transmission flags (16 bits, sent with the export's size).
pub mod tx {
    /// Always set.
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// The export refuses writes.
    pub const READ_ONLY: u16 = 1 << 1;
    /// `NBD_CMD_FLUSH` is understood.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `NBD_CMD_FLAG_FUA` is understood.
    pub const SEND_FUA: u16 = 1 << 3;
    /// The medium is rotational (never set by Basalt).
    pub const ROTATIONAL: u16 = 1 << 4;
    /// `NBD_CMD_TRIM` is understood.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `NBD_CMD_WRITE_ZEROES` (and its `NO_HOLE` flag) is understood.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// `NBD_CMD_FLAG_DF` is understood on reads (structured replies only).
    pub const SEND_DF: u16 = 1 << 7;
    /// Several connections to the export see each other's flushed writes.
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    /// `NBD_CMD_CACHE` is understood.
    pub const SEND_CACHE: u16 = 1 << 10;
    /// `NBD_CMD_FLAG_FAST_ZERO` is understood (never set by Basalt).
    pub const SEND_FAST_ZERO: u16 = 1 << 11;
}

/// Command flags (16 bits of each request).
pub mod cmd_flags {
    /// Force unit access: reply only once the data is durable.
    pub const FUA: u16 = 1 << 0;
    /// `NBD_CMD_WRITE_ZEROES`: leave the range allocated (no hole).
    pub const NO_HOLE: u16 = 1 << 1;
    /// `NBD_CMD_READ`: at most one content chunk.
    pub const DF: u16 = 1 << 2;
    /// `NBD_CMD_BLOCK_STATUS`: one extent per context.
    pub const REQ_ONE: u16 = 1 << 3;
    /// `NBD_CMD_WRITE_ZEROES`: fail at once unless fast.
    pub const FAST_ZERO: u16 = 1 << 4;
}

/// Structured reply chunk flags.
pub mod reply_flags {
    /// The last chunk of a reply.
    pub const DONE: u16 = 1 << 0;
}

/// `base:allocation` status flags.
pub mod state {
    /// Not allocated in the backing store.
    pub const HOLE: u32 = 1 << 0;
    /// Reads back as zeros.
    pub const ZERO: u32 = 1 << 1;
}

macro_rules! codes {
    ($(#[$m:meta])* $name:ident($ty:ty) { $($(#[$cm:meta])* $c:ident = $v:expr,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $ty);

        impl $name {
            $($(#[$cm])* pub const $c: $name = $name($v);)*

            /// The protocol's name for the code, if it is one Basalt knows.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $($name::$c => Some(stringify!($c)),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// An option code (`NBD_OPT_*`).
    Opt(u32) {
        /// Choose an export and enter transmission (no error can be returned).
        EXPORT_NAME = 1,
        /// End the negotiation.
        ABORT = 2,
        /// List the exports.
        LIST = 3,
        /// Withdrawn `PEEK_EXPORT`.
        PEEK_EXPORT = 4,
        /// Upgrade to TLS.
        STARTTLS = 5,
        /// Describe an export.
        INFO = 6,
        /// Describe an export and enter transmission.
        GO = 7,
        /// Use structured replies.
        STRUCTURED_REPLY = 8,
        /// List metadata contexts.
        LIST_META_CONTEXT = 9,
        /// Select metadata contexts.
        SET_META_CONTEXT = 10,
        /// The experimental extended headers.
        EXTENDED_HEADERS = 11,
    }
}

codes! {
    /// An option reply type (`NBD_REP_*`); errors have bit 31 set.
    Rep(u32) {
        /// Done; no data.
        ACK = 1,
        /// One export of a list.
        SERVER = 2,
        /// One piece of information about an export.
        INFO = 3,
        /// One metadata context.
        META_CONTEXT = 4,
        /// The option is unknown here.
        ERR_UNSUP = (1 << 31) + 1,
        /// The option is known but refused by policy.
        ERR_POLICY = (1 << 31) + 2,
        /// The option is malformed or invalid now.
        ERR_INVALID = (1 << 31) + 3,
        /// Not supported on this platform.
        ERR_PLATFORM = (1 << 31) + 4,
        /// TLS is required first.
        ERR_TLS_REQD = (1 << 31) + 5,
        /// No such export.
        ERR_UNKNOWN = (1 << 31) + 6,
        /// The server is shutting down.
        ERR_SHUTDOWN = (1 << 31) + 7,
        /// The client must ask for block sizes.
        ERR_BLOCK_SIZE_REQD = (1 << 31) + 8,
        /// The request or the answer is too large.
        ERR_TOO_BIG = (1 << 31) + 9,
    }
}

impl Rep {
    /// Whether this is an error reply.
    pub fn is_error(self) -> bool {
        self.0 & (1 << 31) != 0
    }
}

codes! {
    /// An information type of `NBD_OPT_INFO` / `NBD_OPT_GO` (`NBD_INFO_*`).
    Info(u16) {
        /// Size and transmission flags.
        EXPORT = 0,
        /// The canonical name.
        NAME = 1,
        /// A description for people.
        DESCRIPTION = 2,
        /// Minimum, preferred and maximum block sizes.
        BLOCK_SIZE = 3,
    }
}

codes! {
    /// A transmission command (`NBD_CMD_*`).
    Cmd(u16) {
        /// Read.
        READ = 0,
        /// Write (the data follows the header).
        WRITE = 1,
        /// Disconnect (no reply).
        DISC = 2,
        /// Make completed writes durable.
        FLUSH = 3,
        /// Discard.
        TRIM = 4,
        /// Prefetch hint.
        CACHE = 5,
        /// Write zeros without a payload.
        WRITE_ZEROES = 6,
        /// Query metadata contexts.
        BLOCK_STATUS = 7,
        /// The experimental resize.
        RESIZE = 8,
    }
}

codes! {
    /// A structured reply chunk type (`NBD_REPLY_TYPE_*`); errors have bit 15 set.
    Chunk(u16) {
        /// No payload; ends a reply.
        NONE = 0,
        /// Data at an offset.
        OFFSET_DATA = 1,
        /// Zeros at an offset.
        OFFSET_HOLE = 2,
        /// Extents of one metadata context.
        BLOCK_STATUS = 5,
        /// An error for the whole request.
        ERROR = (1 << 15) + 1,
        /// An error at an offset.
        ERROR_OFFSET = (1 << 15) + 2,
    }
}

codes! {
    /// An error value of a reply (`NBD_E*`).
    Errno(u32) {
        /// Success (only in simple replies).
        OK = 0,
        /// Operation not permitted (a write to a read-only export).
        EPERM = 1,
        /// Input/output error.
        EIO = 5,
        /// Cannot allocate memory.
        ENOMEM = 12,
        /// Invalid argument.
        EINVAL = 22,
        /// No space left on device (also a write beyond the end).
        ENOSPC = 28,
        /// Value too large.
        EOVERFLOW = 75,
        /// Operation not supported.
        ENOTSUP = 95,
        /// The server is shutting down.
        ESHUTDOWN = 108,
    }
}

/// A client's opaque request tag, echoed in every reply to that request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cookie(pub u64);

/// A malformed message.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum DecodeError {
    /// wrong magic {found:#x}
    BadMagic {
        /// What was there instead.
        found: u64,
    },
    /// malformed option data: {0}
    Malformed(&'static str),
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// An option's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option.
    pub option: Opt,
    /// Bytes of option data that follow.
    pub length: u32,
}

impl OptionHeader {
    /// Decodes an option header from the start of `b`.
    ///
    /// # Errors
    /// [`DecodeError::BadMagic`] when the magic is not `IHAVEOPT`.
    pub fn decode(b: &[u8]) -> Result<Option<OptionHeader>, DecodeError> {
        if b.len() < OPTION_HEADER_LEN {
            return Ok(None);
        }
        let magic = be_u64(b);
        if magic != IHAVEOPT {
            return Err(DecodeError::BadMagic { found: magic });
        }
        Ok(Some(OptionHeader {
            option: Opt(be_u32(&b[8..])),
            length: be_u32(&b[12..]),
        }))
    }

    /// Appends this header (for clients and tests).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&IHAVEOPT.to_be_bytes());
        out.extend_from_slice(&self.option.0.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }
}

/// A transmission request's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Command flags ([`cmd_flags`]).
    pub flags: u16,
    /// The command.
    pub cmd: Cmd,
    /// The client's tag.
    pub cookie: Cookie,
    /// Byte offset in the export.
    pub offset: u64,
    /// Byte length (the payload's, for a write).
    pub length: u32,
}

impl RequestHeader {
    /// Decodes a request header from the start of `b`.
    ///
    /// # Errors
    /// [`DecodeError::BadMagic`] when the magic is not `NBD_REQUEST_MAGIC`.
    pub fn decode(b: &[u8]) -> Result<Option<RequestHeader>, DecodeError> {
        if b.len() < REQUEST_LEN {
            return Ok(None);
        }
        let magic = be_u32(b);
        if magic != REQUEST_MAGIC {
            return Err(DecodeError::BadMagic {
                found: u64::from(magic),
            });
        }
        Ok(Some(RequestHeader {
            flags: be_u16(&b[4..]),
            cmd: Cmd(be_u16(&b[6..])),
            cookie: Cookie(be_u64(&b[8..])),
            offset: be_u64(&b[16..]),
            length: be_u32(&b[24..]),
        }))
    }

    /// Appends this header (for clients and tests).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&self.cmd.0.to_be_bytes());
        out.extend_from_slice(&self.cookie.0.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }
}

/// The data of `NBD_OPT_INFO` and `NBD_OPT_GO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    /// The export's name.
    pub name: &'a str,
    /// Information the client asks for.
    pub requests: smallvec::SmallVec<[Info; 4]>,
}

impl<'a> InfoRequest<'a> {
    /// Decodes the option data of `NBD_OPT_INFO` / `NBD_OPT_GO`.
    ///
    /// # Errors
    /// Lengths that do not add up, or a name that is not UTF-8.
    pub fn decode(d: &'a [u8]) -> Result<InfoRequest<'a>, DecodeError> {
        let short = DecodeError::Malformed("INFO/GO data shorter than its lengths");
        if d.len() < 6 {
            return Err(short);
        }
        let name_len = be_u32(d) as usize;
        let rest = &d[4..];
        if name_len > rest.len().saturating_sub(2) {
            return Err(short);
        }
        let name = std::str::from_utf8(&rest[..name_len])
            .map_err(|_| DecodeError::Malformed("export name is not UTF-8"))?;
        let rest = &rest[name_len..];
        let n = usize::from(be_u16(rest));
        let list = &rest[2..];
        if list.len() != 2 * n {
            return Err(DecodeError::Malformed(
                "INFO/GO information request count does not match the length",
            ));
        }
        Ok(InfoRequest {
            name,
            requests: list.chunks_exact(2).map(|c| Info(be_u16(c))).collect(),
        })
    }

    /// Appends this request as option data (for clients and tests).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&u32::try_from(self.name.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(
            &u16::try_from(self.requests.len())
                .unwrap_or(0)
                .to_be_bytes(),
        );
        for r in &self.requests {
            out.extend_from_slice(&r.0.to_be_bytes());
        }
    }
}

/// The data of `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRequest<'a> {
    /// The export's name.
    pub name: &'a str,
    /// The queries (`namespace:leaf`).
    pub queries: Vec<&'a str>,
}

/// Most queries Basalt reads from one meta-context option.
pub const MAX_META_QUERIES: usize = 256;

impl<'a> MetaRequest<'a> {
    /// Decodes the option data of the two meta-context options.
    ///
    /// # Errors
    /// Lengths that do not add up, strings that are not UTF-8, or more than
    /// [`MAX_META_QUERIES`] queries.
    pub fn decode(d: &'a [u8]) -> Result<MetaRequest<'a>, DecodeError> {
        let short = DecodeError::Malformed("meta context data shorter than its lengths");
        let take_str = |d: &'a [u8]| -> Result<(&'a str, &'a [u8]), DecodeError> {
            if d.len() < 4 {
                return Err(short.clone());
            }
            let n = be_u32(d) as usize;
            let rest = &d[4..];
            if n > rest.len() {
                return Err(short.clone());
            }
            let s = std::str::from_utf8(&rest[..n])
                .map_err(|_| DecodeError::Malformed("meta context string is not UTF-8"))?;
            Ok((s, &rest[n..]))
        };
        let (name, rest) = take_str(d)?;
        if rest.len() < 4 {
            return Err(short);
        }
        let count = be_u32(rest) as usize;
        if count > MAX_META_QUERIES {
            return Err(DecodeError::Malformed("too many meta context queries"));
        }
        let mut rest = &rest[4..];
        let mut queries = Vec::with_capacity(count);
        for _ in 0..count {
            let (q, r) = take_str(rest)?;
            queries.push(q);
            rest = r;
        }
        if !rest.is_empty() {
            return Err(DecodeError::Malformed(
                "meta context data longer than its queries",
            ));
        }
        Ok(MetaRequest { name, queries })
    }

    /// Appends this request as option data (for clients and tests).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let put = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        };
        put(out, self.name);
        out.extend_from_slice(&u32::try_from(self.queries.len()).unwrap_or(0).to_be_bytes());
        for q in &self.queries {
            put(out, q);
        }
    }
}

/// Appends the server's greeting.
pub fn encode_greeting(out: &mut Vec<u8>, flags: u16) {
    out.extend_from_slice(&NBDMAGIC.to_be_bytes());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
}

/// Appends an option reply whose data is the concatenation of `data`.
pub fn encode_option_reply(out: &mut Vec<u8>, option: Opt, rep: Rep, data: &[&[u8]]) {
    let len: usize = data.iter().map(|d| d.len()).sum();
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.0.to_be_bytes());
    out.extend_from_slice(&rep.0.to_be_bytes());
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    for d in data {
        out.extend_from_slice(d);
    }
}

/// Appends the answer to `NBD_OPT_EXPORT_NAME`: size, transmission flags, and the zero padding
/// unless the client negotiated `NO_ZEROES`.
pub fn encode_export_name_reply(out: &mut Vec<u8>, size: u64, flags: u16, padding: bool) {
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    if padding {
        out.resize(out.len() + EXPORT_NAME_PADDING, 0);
    }
}

/// Appends a simple reply header (read data, if any, follows it).
pub fn encode_simple_reply(out: &mut Vec<u8>, error: Errno, cookie: Cookie) {
    out.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&error.0.to_be_bytes());
    out.extend_from_slice(&cookie.0.to_be_bytes());
}

/// Appends a structured reply chunk header announcing `len` bytes of payload.
pub fn encode_chunk_header(out: &mut Vec<u8>, flags: u16, kind: Chunk, cookie: Cookie, len: u32) {
    out.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&kind.0.to_be_bytes());
    out.extend_from_slice(&cookie.0.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
}

/// Longest error message Basalt puts in a reply (the protocol allows 4096 bytes).
pub const MAX_MESSAGE: usize = 512;

/// Cuts `msg` to at most [`MAX_MESSAGE`] bytes on a character boundary.
pub fn clip_message(msg: &str) -> &str {
    if msg.len() <= MAX_MESSAGE {
        return msg;
    }
    let mut end = MAX_MESSAGE;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    &msg[..end]
}

/// Appends an error chunk (`NBD_REPLY_TYPE_ERROR`, or `_ERROR_OFFSET` when `offset` is given)
/// ending the reply.
pub fn encode_error_chunk(
    out: &mut Vec<u8>,
    cookie: Cookie,
    error: Errno,
    msg: &str,
    offset: Option<u64>,
) {
    let msg = clip_message(msg);
    let kind = if offset.is_some() {
        Chunk::ERROR_OFFSET
    } else {
        Chunk::ERROR
    };
    let len = 6 + msg.len() + if offset.is_some() { 8 } else { 0 };
    encode_chunk_header(
        out,
        reply_flags::DONE,
        kind,
        cookie,
        u32::try_from(len).unwrap_or(u32::MAX),
    );
    out.extend_from_slice(&error.0.to_be_bytes());
    out.extend_from_slice(&u16::try_from(msg.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(msg.as_bytes());
    if let Some(o) = offset {
        out.extend_from_slice(&o.to_be_bytes());
    }
}

/// One `base:allocation` extent: `length` bytes with status `flags` ([`state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Bytes (nonzero).
    pub length: u32,
    /// Status flags.
    pub flags: u32,
}

const _: () = assert!(GREETING_LEN == 8 + 8 + 2);
const _: () = assert!(OPTION_HEADER_LEN == 8 + 4 + 4);
const _: () = assert!(OPTION_REPLY_HEADER_LEN == 8 + 4 + 4 + 4);
const _: () = assert!(REQUEST_LEN == 4 + 2 + 2 + 8 + 8 + 4);
const _: () = assert!(SIMPLE_REPLY_LEN == 4 + 4 + 8);
const _: () = assert!(CHUNK_HEADER_LEN == 4 + 2 + 2 + 8 + 4);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let h = RequestHeader {
            flags: cmd_flags::FUA,
            cmd: Cmd::WRITE,
            cookie: Cookie(0x0102_0304_0506_0708),
            offset: 4096,
            length: 512,
        };
        let mut b = Vec::new();
        h.encode(&mut b);
        assert_eq!(b.len(), REQUEST_LEN);
        assert_eq!(&b[..4], &[0x25, 0x60, 0x95, 0x13]);
        assert_eq!(RequestHeader::decode(&b), Ok(Some(h)));
        assert_eq!(RequestHeader::decode(&b[..27]), Ok(None));
        b[0] ^= 1;
        assert!(matches!(
            RequestHeader::decode(&b),
            Err(DecodeError::BadMagic { .. })
        ));
        let o = OptionHeader {
            option: Opt::GO,
            length: 9,
        };
        let mut b = Vec::new();
        o.encode(&mut b);
        assert_eq!(&b[..8], b"IHAVEOPT");
        assert_eq!(OptionHeader::decode(&b), Ok(Some(o)));
    }

    #[test]
    fn greeting_and_replies_have_the_documented_bytes() {
        let mut b = Vec::new();
        encode_greeting(&mut b, handshake::FIXED_NEWSTYLE | handshake::NO_ZEROES);
        assert_eq!(&b[..8], b"NBDMAGIC");
        assert_eq!(&b[8..16], b"IHAVEOPT");
        assert_eq!(&b[16..], &[0, 3]);
        let mut b = Vec::new();
        encode_option_reply(&mut b, Opt::LIST, Rep::ACK, &[]);
        assert_eq!(
            b,
            [
                0, 3, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0
            ]
        );
        let mut b = Vec::new();
        encode_error_chunk(&mut b, Cookie(7), Errno::EINVAL, "no", Some(512));
        assert_eq!(b.len(), CHUNK_HEADER_LEN + 6 + 2 + 8);
        assert_eq!(&b[6..8], &0x8002u16.to_be_bytes());
        assert_eq!(Rep::ERR_UNSUP.name(), Some("ERR_UNSUP"));
        assert!(Rep::ERR_POLICY.is_error() && !Rep::ACK.is_error());
        assert_eq!(Errno(12345).name(), None);
    }

    #[test]
    fn info_and_meta_requests_decode_strictly() {
        let r = InfoRequest {
            name: "vol",
            requests: [Info::NAME, Info::BLOCK_SIZE].into_iter().collect(),
        };
        let mut b = Vec::new();
        r.encode(&mut b);
        assert_eq!(InfoRequest::decode(&b), Ok(r));
        assert!(InfoRequest::decode(&b[..b.len() - 1]).is_err());
        assert!(InfoRequest::decode(&[0, 0, 0, 9, 0, 0]).is_err());
        assert!(InfoRequest::decode(&[0xff, 0xff, 0xff, 0xff, 0, 0]).is_err());
        let m = MetaRequest {
            name: "vol",
            queries: vec!["base:allocation", "qemu:"],
        };
        let mut b = Vec::new();
        m.encode(&mut b);
        assert_eq!(MetaRequest::decode(&b), Ok(m));
        for cut in 0..b.len() {
            assert!(MetaRequest::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        b.push(0);
        assert!(MetaRequest::decode(&b).is_err(), "trailing bytes");
    }

    #[test]
    fn messages_are_clipped_on_character_boundaries() {
        let long = "é".repeat(400);
        let c = clip_message(&long);
        assert!(c.len() <= MAX_MESSAGE && c.len().is_multiple_of(2));
        assert_eq!(clip_message("short"), "short");
    }
}
