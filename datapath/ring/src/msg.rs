//! Message frames: a versioned, length-checked header and an opaque payload.
//!
//! # Wire format (little-endian, 32-byte header)
//!
//! ```text
//! 0  version    u16   MSG_VERSION
//! 2  kind       u16   what the payload is; 0xff00.. are reserved for this crate
//! 4  flags      u16   FLAG_* bits; unknown bits are refused
//! 6  header_len u16   32 (room to grow the header in a later version)
//! 8  length     u32   payload bytes; must equal the bytes that follow exactly
//! 12 reserved   u32   0
//! 16 request_id u64   ties a completion to its command; the idempotency key
//! 24 epoch      u64   the pairing the sender believes in (see `Epoch`)
//! 32 payload
//! ```
//!
//! The payload of an operation is the control plane's business; this module carries it as
//! opaque bytes and offers [`FieldWriter`] / [`FieldReader`] for a simple length-prefixed
//! encoding. [`decode`] is the fuzz entry point: it never panics, whatever the bytes.

use crate::error::{DecodeError, FieldError};

/// Message format version. One line per version:
///
/// - 1: 32-byte header (version, kind, flags, header_len, length, reserved, request id, epoch).
pub const MSG_VERSION: u16 = 1;

/// Size of the message header.
pub const HEADER_LEN: usize = 32;

/// The message is an error reply: its payload is a [`Reject`] (kind [`KIND_REJECT`]) or an
/// operation-defined error.
pub const FLAG_ERROR: u16 = 1 << 0;
/// Every flag this version knows.
pub const KNOWN_FLAGS: u16 = FLAG_ERROR;

/// First kind reserved for the ring itself; operation kinds are below.
pub const RESERVED_KINDS: u16 = 0xff00;
/// A refusal of a malformed, out-of-epoch or unknown message; the payload is a [`Reject`].
pub const KIND_REJECT: u16 = 0xffff;

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message kind.
    pub kind: u16,
    /// `FLAG_*` bits.
    pub flags: u16,
    /// Request id.
    pub request_id: u64,
    /// Epoch of the sender.
    pub epoch: u64,
}

impl Header {
    /// The 32 header bytes for a payload of `len` bytes.
    pub fn encode(&self, len: u32) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..2].copy_from_slice(&MSG_VERSION.to_le_bytes());
        h[2..4].copy_from_slice(&self.kind.to_le_bytes());
        h[4..6].copy_from_slice(&self.flags.to_le_bytes());
        h[6..8].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h[16..24].copy_from_slice(&self.request_id.to_le_bytes());
        h[24..32].copy_from_slice(&self.epoch.to_le_bytes());
        h
    }
}

/// A decoded message: its header and a view of its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header.
    pub header: Header,
    /// Exactly `length` bytes.
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Whether [`FLAG_ERROR`] is set.
    pub fn is_error(&self) -> bool {
        self.header.flags & FLAG_ERROR != 0
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Decodes one message.
///
/// # Errors
///
/// A [`DecodeError`] for a message shorter than a header, of another version, with another
/// header length, a non-zero reserved field, unknown flags, or a payload length that is not
/// exactly the bytes present. Never panics.
pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::TooShort { len: bytes.len() });
    }
    let version = u16_at(bytes, 0);
    if version != MSG_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            found: version,
            supported: MSG_VERSION,
        });
    }
    let header_len = u16_at(bytes, 6);
    if usize::from(header_len) != HEADER_LEN {
        return Err(DecodeError::BadHeaderLen { found: header_len });
    }
    let flags = u16_at(bytes, 4);
    if flags & !KNOWN_FLAGS != 0 {
        return Err(DecodeError::UnknownFlags { flags });
    }
    if u32_at(bytes, 12) != 0 {
        return Err(DecodeError::ReservedNotZero);
    }
    let declared = u32_at(bytes, 8);
    let actual = bytes.len() - HEADER_LEN;
    if usize::try_from(declared).ok() != Some(actual) {
        return Err(DecodeError::LengthMismatch { declared, actual });
    }
    Ok(Frame {
        header: Header {
            kind: u16_at(bytes, 2),
            flags,
            request_id: u64_at(bytes, 16),
            epoch: u64_at(bytes, 24),
        },
        payload: &bytes[HEADER_LEN..],
    })
}

/// The request id of a message that may not decode, so a refusal can name it: the id field if
/// at least a header's worth of bytes is there.
pub fn peek_request_id(bytes: &[u8]) -> Option<u64> {
    (bytes.len() >= HEADER_LEN).then(|| u64_at(bytes, 16))
}

/// Why a message was refused (the payload of a [`KIND_REJECT`] reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCode {
    /// The message did not decode.
    Malformed,
    /// The message carried another epoch.
    StaleEpoch,
    /// The receiver does not know this kind.
    UnknownKind,
    /// The payload did not decode for its kind.
    BadPayload,
    /// A code this version does not know (a newer peer).
    Other(u16),
}

impl RejectCode {
    fn to_u16(self) -> u16 {
        match self {
            RejectCode::Malformed => 1,
            RejectCode::StaleEpoch => 2,
            RejectCode::UnknownKind => 3,
            RejectCode::BadPayload => 4,
            RejectCode::Other(c) => c,
        }
    }
    fn from_u16(c: u16) -> Self {
        match c {
            1 => RejectCode::Malformed,
            2 => RejectCode::StaleEpoch,
            3 => RejectCode::UnknownKind,
            4 => RejectCode::BadPayload,
            c => RejectCode::Other(c),
        }
    }
}

/// Payload of a [`KIND_REJECT`] reply: a code and one number of detail (the offending
/// epoch, kind, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    /// Why.
    pub code: RejectCode,
    /// Code-specific detail.
    pub detail: u64,
}

impl Reject {
    /// Encoded length.
    pub const LEN: usize = 10;

    /// The payload bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..2].copy_from_slice(&self.code.to_u16().to_le_bytes());
        b[2..].copy_from_slice(&self.detail.to_le_bytes());
        b
    }

    /// Decodes a reject payload.
    ///
    /// # Errors
    ///
    /// [`FieldError`] if the payload is not exactly [`Reject::LEN`] bytes.
    pub fn decode(payload: &[u8]) -> Result<Reject, FieldError> {
        let mut r = FieldReader::new(payload);
        let code = RejectCode::from_u16(r.u16()?);
        let detail = r.u64()?;
        r.finish()?;
        Ok(Reject { code, detail })
    }
}

/// Appends little-endian fields to a buffer (reuse the buffer: `clear` it between messages).
#[derive(Debug)]
pub struct FieldWriter<'a>(&'a mut Vec<u8>);

impl<'a> FieldWriter<'a> {
    /// Writes after what `buf` already holds.
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        FieldWriter(buf)
    }
    /// Appends a `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    /// Appends a `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a `u32` length, then the bytes.
    ///
    /// # Panics
    ///
    /// If `v` is 4 GiB or longer (no frame is that large).
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(u32::try_from(v.len()).expect("field shorter than 4 GiB"));
        self.0.extend_from_slice(v);
        self
    }
    /// Appends a length-prefixed UTF-8 string.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
}

/// Reads the fields [`FieldWriter`] wrote; every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct FieldReader<'a> {
    rest: &'a [u8],
    at: usize,
}

impl<'a> FieldReader<'a> {
    /// Reads `payload` from its start.
    pub fn new(payload: &'a [u8]) -> Self {
        FieldReader {
            rest: payload,
            at: 0,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], FieldError> {
        if self.rest.len() < n {
            return Err(FieldError::Truncated {
                at: self.at,
                need: n,
                have: self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        self.at += n;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FieldError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    /// Reads a `u8`.
    ///
    /// # Errors
    ///
    /// [`FieldError::Truncated`] past the end (so for every read below).
    pub fn u8(&mut self) -> Result<u8, FieldError> {
        Ok(self.array::<1>()?[0])
    }
    /// Reads a `u16`.
    ///
    /// # Errors
    ///
    /// [`FieldError::Truncated`].
    pub fn u16(&mut self) -> Result<u16, FieldError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// Reads a `u32`.
    ///
    /// # Errors
    ///
    /// [`FieldError::Truncated`].
    pub fn u32(&mut self) -> Result<u32, FieldError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// Reads a `u64`.
    ///
    /// # Errors
    ///
    /// [`FieldError::Truncated`].
    pub fn u64(&mut self) -> Result<u64, FieldError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// Reads a length-prefixed byte string.
    ///
    /// # Errors
    ///
    /// [`FieldError::Truncated`] if the length runs past the end.
    pub fn bytes(&mut self) -> Result<&'a [u8], FieldError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// Reads a length-prefixed UTF-8 string.
    ///
    /// # Errors
    ///
    /// [`FieldError::Truncated`], or [`FieldError::NotUtf8`].
    pub fn str(&mut self) -> Result<&'a str, FieldError> {
        let at = self.at;
        std::str::from_utf8(self.bytes()?).map_err(|_| FieldError::NotUtf8 { at })
    }
    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }
    /// Checks that everything was read.
    ///
    /// # Errors
    ///
    /// [`FieldError::Trailing`] if bytes are left.
    pub fn finish(&self) -> Result<(), FieldError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(FieldError::Trailing {
                at: self.at,
                left: self.rest.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(h: Header, payload: &[u8]) -> Vec<u8> {
        let mut v = h.encode(payload.len() as u32).to_vec();
        v.extend_from_slice(payload);
        v
    }

    const H: Header = Header {
        kind: 7,
        flags: 0,
        request_id: 42,
        epoch: 3,
    };

    #[test]
    fn roundtrip() {
        let m = msg(H, b"hello");
        let f = decode(&m).expect("valid");
        assert_eq!(f.header, H);
        assert_eq!(f.payload, b"hello");
        assert!(!f.is_error());
        assert_eq!(peek_request_id(&m), Some(42));
    }

    #[test]
    fn every_field_is_checked() {
        let good = msg(H, b"abc");
        let bad = |at: usize, v: u8| {
            let mut m = good.clone();
            m[at] = v;
            decode(&m).expect_err("refused")
        };
        assert_eq!(
            bad(0, 2),
            DecodeError::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        );
        assert_eq!(bad(6, 33), DecodeError::BadHeaderLen { found: 33 });
        assert_eq!(bad(4, 0x80), DecodeError::UnknownFlags { flags: 0x80 });
        assert_eq!(bad(13, 1), DecodeError::ReservedNotZero);
        assert_eq!(
            bad(8, 4),
            DecodeError::LengthMismatch {
                declared: 4,
                actual: 3
            }
        );
        assert_eq!(decode(&good[..31]), Err(DecodeError::TooShort { len: 31 }));
        assert_eq!(
            decode(&good[..34]),
            Err(DecodeError::LengthMismatch {
                declared: 3,
                actual: 2
            })
        );
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            decode(&long),
            Err(DecodeError::LengthMismatch { .. })
        ));
        assert_eq!(peek_request_id(&good[..31]), None);
    }

    #[test]
    fn reject_roundtrip() {
        for code in [
            RejectCode::Malformed,
            RejectCode::StaleEpoch,
            RejectCode::UnknownKind,
            RejectCode::BadPayload,
            RejectCode::Other(999),
        ] {
            let r = Reject { code, detail: 77 };
            assert_eq!(Reject::decode(&r.encode()), Ok(r));
        }
        assert!(Reject::decode(&[1, 0]).is_err());
        assert!(Reject::decode(&[0; 11]).is_err());
    }

    #[test]
    fn fields_roundtrip_and_check_bounds() {
        let mut buf = Vec::new();
        FieldWriter::new(&mut buf)
            .u8(1)
            .u16(2)
            .u32(3)
            .u64(4)
            .bytes(b"xy")
            .str("vol-1");
        let mut r = FieldReader::new(&buf);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(2));
        assert_eq!(r.u32(), Ok(3));
        assert_eq!(r.u64(), Ok(4));
        assert_eq!(r.bytes(), Ok(&b"xy"[..]));
        assert_eq!(r.str(), Ok("vol-1"));
        assert_eq!(r.finish(), Ok(()));
        assert!(matches!(r.u8(), Err(FieldError::Truncated { .. })));
        let mut r = FieldReader::new(&[0xff, 0xff, 0xff, 0xff, 1]);
        assert!(matches!(
            r.bytes(),
            Err(FieldError::Truncated { at: 4, .. })
        ));
        let mut r = FieldReader::new(&[1, 0, 0, 0, 0xff]);
        assert_eq!(r.str(), Err(FieldError::NotUtf8 { at: 0 }));
        assert!(matches!(
            FieldReader::new(&[1]).finish(),
            Err(FieldError::Trailing { .. })
        ));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
            if let Ok(f) = decode(&bytes) {
                prop_assert_eq!(f.payload.len() + HEADER_LEN, bytes.len());
                let again = msg(f.header, f.payload);
                prop_assert_eq!(again, bytes);
            }
        }

        #[test]
        fn encode_decode(kind in any::<u16>(), err in any::<bool>(), id in any::<u64>(),
                         epoch in any::<u64>(), payload in prop::collection::vec(any::<u8>(), 0..64)) {
            let h = Header { kind, flags: if err { FLAG_ERROR } else { 0 }, request_id: id, epoch };
            let m = msg(h, &payload);
            let f = decode(&m).expect("valid");
            prop_assert_eq!(f.header, h);
            prop_assert_eq!(f.payload, &payload[..]);
        }
    }
}
