//! The control plane's datapath operations on the rings.
//!
//! A request is one [`KIND_OP`] message whose payload is the answer slot control lends
//! ([`SlotSpan`]) and the operation as JSON, the same objects the datapath's admin socket takes
//! (`{"op":"volume_create",...}`; `datapath/daemon/src/admin.rs` lists them). The answer is a
//! [`KIND_OP`] message with the same request id: the answer's JSON inline when it fits the
//! frame, or the length of the JSON the datapath wrote into the lent slot (a listing of
//! thousands of volumes does not fit a 4 KiB frame).
//!
//! Events ([`KIND_EVENT`]) travel the other way on the events ring, unasked: a JSON object.
//!
//! ```text
//! request payload:  slot span (u32 slot, u32 offset, u32 len) | bytes(json)
//! answer payload:   u8 0 | bytes(json)            inline
//!                   u8 1 | u32 len                in the lent slot, from its start
//! ```

use crate::error::FieldError;
use crate::msg::{FieldReader, FieldWriter};
use crate::slots::SlotSpan;

/// Message kind of a JSON operation and of its answer.
pub const KIND_OP: u16 = 1;

/// Message kind of an event the datapath sends on its own (events ring, request id 0): one
/// JSON object with an `"event"` field, e.g.
/// `{"event":"store_nearly_full","lvs":"pool","free_bytes":...,"total_bytes":...}`.
pub const KIND_EVENT: u16 = 2;

const INLINE: u8 = 0;
const IN_SLOT: u8 = 1;

/// Encodes a request: the lent answer slot and the operation's JSON.
pub fn encode_request(buf: &mut Vec<u8>, answer_slot: SlotSpan, json: &[u8]) {
    buf.clear();
    let mut w = FieldWriter::new(buf);
    answer_slot.encode(&mut w);
    w.bytes(json);
}

/// Decodes a request payload.
///
/// # Errors
/// The payload is not a request.
pub fn decode_request(payload: &[u8]) -> Result<(SlotSpan, &[u8]), FieldError> {
    let mut r = FieldReader::new(payload);
    let span = SlotSpan::decode(&mut r)?;
    let json = r.bytes()?;
    r.finish()?;
    Ok((span, json))
}

/// Where an answer's JSON is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'a> {
    /// In the message.
    Inline(&'a [u8]),
    /// In the lent slot: this many bytes from its start.
    InSlot(u32),
}

/// Encodes an answer whose JSON is in the message.
pub fn encode_inline(buf: &mut Vec<u8>, json: &[u8]) {
    buf.clear();
    FieldWriter::new(buf).u8(INLINE).bytes(json);
}

/// Encodes an answer whose JSON the datapath wrote into the lent slot.
pub fn encode_in_slot(buf: &mut Vec<u8>, len: u32) {
    buf.clear();
    FieldWriter::new(buf).u8(IN_SLOT).u32(len);
}

/// Decodes an answer payload.
///
/// # Errors
/// The payload is not an answer.
pub fn decode_answer(payload: &[u8]) -> Result<Answer<'_>, FieldError> {
    let mut r = FieldReader::new(payload);
    let a = match r.u8()? {
        INLINE => Answer::Inline(r.bytes()?),
        IN_SLOT => Answer::InSlot(r.u32()?),
        tag => {
            return Err(FieldError::UnknownTag {
                what: "answer form",
                tag,
            });
        }
    };
    r.finish()?;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::SlotId;

    #[test]
    fn requests_and_answers_round_trip() {
        let mut b = Vec::new();
        let span = SlotSpan::new(SlotId(3), 1 << 20);
        encode_request(&mut b, span, br#"{"op":"ping"}"#);
        assert_eq!(
            decode_request(&b).expect("request"),
            (span, &br#"{"op":"ping"}"#[..])
        );
        encode_inline(&mut b, b"{}");
        assert_eq!(decode_answer(&b).expect("answer"), Answer::Inline(b"{}"));
        encode_in_slot(&mut b, 777);
        assert_eq!(decode_answer(&b).expect("answer"), Answer::InSlot(777));
        // Junk is refused, never a panic.
        for junk in [&b""[..], &[2u8][..], &[0u8, 9, 0, 0, 0][..], &[1u8, 1][..]] {
            assert!(decode_answer(junk).is_err(), "{junk:?}");
            assert!(decode_request(junk).is_err(), "{junk:?}");
        }
        encode_inline(&mut b, b"x");
        b.push(0);
        assert!(decode_answer(&b).is_err(), "trailing bytes");
    }
}
