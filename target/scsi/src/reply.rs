//! Building a [`Response`]: status, encoded sense, data-in cut to the expected length, and the
//! residual.
//!
//! # Residuals
//! The residual compares the transfer the CDB implies (in bytes: READ's blocks, an allocation
//! length cut to the data available, WRITE's blocks, a parameter list length) with the
//! transport's expected data transfer length (SAM-5 §5.4.3, RFC 7143 §11.4.5.2):
//!
//! * implied > expected: overflow by the difference; data-in is cut to the expected length and
//!   a write uses only the whole blocks that arrived;
//! * implied < expected: underflow by the difference;
//! * a command with no data and a non-zero expected length underflows by all of it.
//!
//! A command that fails keeps the residual of the transfer its CDB implied; one that fails
//! before its CDB is understood underflows by the whole expected length.

use crate::sense::Sense;
use crate::{Command, DataIn, Residual, Response, Status};

/// The transfer a command's CDB implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Xfer {
    /// No data.
    None,
    /// This many bytes to the initiator.
    In(u64),
    /// This many bytes from the initiator.
    Out(u64),
}

impl Xfer {
    fn bytes(self) -> u64 {
        match self {
            Xfer::None => 0,
            Xfer::In(n) | Xfer::Out(n) => n,
        }
    }
}

/// The residual for an implied transfer of `implied` bytes against `expected`.
pub fn residual(expected: u32, implied: u64) -> Residual {
    let expected = u64::from(expected);
    if implied > expected {
        Residual::Overflow(u32::try_from(implied - expected).unwrap_or(u32::MAX))
    } else if implied < expected {
        // expected fits u32, so the difference does too.
        Residual::Underflow(u32::try_from(expected - implied).unwrap_or(u32::MAX))
    } else {
        Residual::None
    }
}

/// A command's outcome before it becomes a [`Response`].
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: Status,
    /// Sense data for CHECK CONDITION (or for GOOD REQUEST SENSE-style answers: never).
    pub sense: Option<Sense>,
    /// Data-in, not yet cut to the expected length.
    pub data: DataIn,
    /// The transfer the CDB implies.
    pub xfer: Xfer,
}

impl Reply {
    /// GOOD with no data.
    pub fn good(xfer: Xfer) -> Reply {
        Reply {
            status: Status::Good,
            sense: None,
            data: DataIn::default(),
            xfer,
        }
    }

    /// GOOD with data-in bytes (already cut to the allocation length).
    pub fn data(bytes: Vec<u8>) -> Reply {
        let n = bytes.len() as u64;
        Reply {
            status: Status::Good,
            sense: None,
            data: DataIn::Bytes(bytes),
            xfer: Xfer::In(n),
        }
    }

    /// GOOD with data-in bytes cut to `alloc_len`.
    pub fn data_alloc(mut bytes: Vec<u8>, alloc_len: u32) -> Reply {
        bytes.truncate(usize::try_from(alloc_len).unwrap_or(usize::MAX));
        Reply::data(bytes)
    }

    /// CHECK CONDITION.
    pub fn check(sense: Sense, xfer: Xfer) -> Reply {
        Reply {
            status: Status::CheckCondition,
            sense: Some(sense),
            data: DataIn::default(),
            xfer,
        }
    }

    /// RESERVATION CONFLICT.
    pub fn conflict(xfer: Xfer) -> Reply {
        Reply {
            status: Status::ReservationConflict,
            sense: None,
            data: DataIn::default(),
            xfer,
        }
    }

    /// The response for `cmd`; `descriptor` picks the sense format.
    pub fn into_response(self, cmd: &Command<'_>, descriptor: bool) -> Response {
        let residual = residual(cmd.expected_len, self.xfer.bytes());
        let mut data = self.data;
        let moved = match self.xfer {
            Xfer::In(n) if cmd.read && self.status != Status::CheckCondition => {
                let cap = n.min(u64::from(cmd.expected_len));
                usize::try_from(cap).unwrap_or(usize::MAX)
            }
            _ => 0,
        };
        match &mut data {
            DataIn::Bytes(v) => v.truncate(moved),
            DataIn::Bufs(_, len) => *len = (*len).min(moved),
        }
        Response {
            status: self.status as u8,
            sense: self.sense.map(|s| s.encode(descriptor)).unwrap_or_default(),
            data_in: data,
            residual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Nexus;

    fn cmd(nexus: &Nexus, expected_len: u32, read: bool) -> Command<'_> {
        Command {
            nexus,
            cdb: &[0x12, 0, 0, 0, 0xFF, 0],
            attr: crate::TaskAttr::Simple,
            expected_len,
            read,
            write: false,
            data_out: Vec::new(),
        }
    }

    fn nexus() -> Nexus {
        Nexus {
            id: 1,
            initiator_name: "i".into(),
            initiator_port: "i,i,0x1".into(),
            target_port: "t,t,0x1".into(),
            relative_port: 1,
        }
    }

    #[test]
    fn residuals() {
        assert_eq!(residual(512, 512), Residual::None);
        assert_eq!(residual(0, 512), Residual::Overflow(512));
        assert_eq!(residual(200, 512), Residual::Overflow(312));
        assert_eq!(residual(10000, 512), Residual::Underflow(9488));
        assert_eq!(residual(7, 0), Residual::Underflow(7));
        assert_eq!(residual(0, u64::MAX), Residual::Overflow(u32::MAX));
    }

    #[test]
    fn data_in_is_cut_to_the_expected_length() {
        let n = nexus();
        let r = Reply::data(vec![1; 96]).into_response(&cmd(&n, 36, true), false);
        assert_eq!(r.data_in.len(), 36);
        assert_eq!(r.residual, Residual::Overflow(60));
        let r = Reply::data(vec![1; 96]).into_response(&cmd(&n, 255, true), false);
        assert_eq!(r.data_in.len(), 96);
        assert_eq!(r.residual, Residual::Underflow(159));
        let r = Reply::data(vec![1; 96]).into_response(&cmd(&n, 255, false), false);
        assert_eq!(r.data_in.len(), 0, "no R bit, no data-in");
    }

    #[test]
    fn check_condition_carries_encoded_sense_and_no_data() {
        let n = nexus();
        let r = Reply::check(Sense::lba_out_of_range(), Xfer::In(512))
            .into_response(&cmd(&n, 512, true), false);
        assert_eq!(r.status, 0x02);
        assert_eq!(r.sense.len(), 18);
        assert_eq!(r.sense[12], 0x21);
        assert!(r.data_in.is_empty());
        assert_eq!(r.residual, Residual::None);
        let r = Reply::check(Sense::lba_out_of_range(), Xfer::None)
            .into_response(&cmd(&n, 0, true), true);
        assert_eq!(r.sense[0], 0x72);
    }
}
