//! How an iSCSI command or session fails, and SCSI sense data.

use super::login::LoginError;

/// SCSI status CHECK CONDITION.
pub const CHECK_CONDITION: u8 = 0x02;

/// Sense key UNIT ATTENTION.
pub const UNIT_ATTENTION: u8 = 0x06;

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum ScsiError {
    /// CHECK CONDITION: sense key {key:#x} {name}, ASC/ASCQ {asc:#04x}/{ascq:#04x}
    CheckCondition {
        /// Sense key.
        key: u8,
        /// Its name.
        name: &'static str,
        /// Additional sense code.
        asc: u8,
        /// Additional sense code qualifier.
        ascq: u8,
    },
    /// SCSI status {status:#04x} ({name})
    Status {
        /// The status byte.
        status: u8,
        /// Its name.
        name: &'static str,
    },
    /// the target could not complete the command (iSCSI response {0:#04x})
    TargetFailure(u8),
    /// the target rejected the command (reason {0:#04x})
    Rejected(u8),
    /// the target sent {got} of {expected} bytes
    Short {
        /// Bytes received.
        got: u32,
        /// Bytes asked for.
        expected: u32,
    },
    /// the command does not fit: {0}
    Request(&'static str),
    /// the session is closed: {0}
    Closed(String),
}

/// Why a session could not be set up.
#[derive(Debug, displaydoc::Display, thiserror::Error)]
pub enum SessionError {
    /// cannot connect: {0}
    Connect(#[source] std::io::Error),
    /// socket error during login: {0}
    Io(#[source] std::io::Error),
    /// login failed: {0}
    Login(#[from] LoginError),
    /// the target closed the connection during login
    ClosedDuringLogin,
    /// the target sent a malformed PDU during login: {0}
    Pdu(#[from] basalt_iscsi::pdu::PduError),
    /// the target sent a {0:?} PDU during login
    UnexpectedPdu(basalt_iscsi::pdu::Opcode),
    /// {what} failed: {error}
    Command {
        /// The command.
        what: &'static str,
        /// Why.
        #[source]
        error: ScsiError,
    },
}

/// The name of a sense key (SPC-5 table 54).
pub fn sense_key_name(key: u8) -> &'static str {
    match key {
        0x0 => "NO SENSE",
        0x1 => "RECOVERED ERROR",
        0x2 => "NOT READY",
        0x3 => "MEDIUM ERROR",
        0x4 => "HARDWARE ERROR",
        0x5 => "ILLEGAL REQUEST",
        0x6 => "UNIT ATTENTION",
        0x7 => "DATA PROTECT",
        0x8 => "BLANK CHECK",
        0x9 => "VENDOR SPECIFIC",
        0xa => "COPY ABORTED",
        0xb => "ABORTED COMMAND",
        0xd => "VOLUME OVERFLOW",
        0xe => "MISCOMPARE",
        _ => "RESERVED",
    }
}

/// The name of a SCSI status byte (SAM-5).
pub fn status_name(status: u8) -> &'static str {
    match status {
        0x00 => "GOOD",
        0x02 => "CHECK CONDITION",
        0x04 => "CONDITION MET",
        0x08 => "BUSY",
        0x18 => "RESERVATION CONFLICT",
        0x28 => "TASK SET FULL",
        0x30 => "ACA ACTIVE",
        0x40 => "TASK ABORTED",
        _ => "unknown",
    }
}

/// The error for a CHECK CONDITION with this sense data (fixed or descriptor format; key 0
/// with ASC 0 when the sense data is missing or of an unknown format).
pub fn check_condition(sense: &[u8]) -> ScsiError {
    let at = |i: usize| sense.get(i).copied().unwrap_or(0);
    let (key, asc, ascq) = match at(0) & 0x7f {
        0x70 | 0x71 => (at(2) & 0xf, at(12), at(13)),
        0x72 | 0x73 => (at(1) & 0xf, at(2), at(3)),
        _ => (0, 0, 0),
    };
    ScsiError::CheckCondition {
        key,
        name: sense_key_name(key),
        asc,
        ascq,
    }
}

/// The error for a SCSI Response's status and data segment (`SenseLength` then sense data).
pub fn from_status(status: u8, data: &[u8]) -> ScsiError {
    if status == CHECK_CONDITION {
        let len = data
            .first_chunk::<2>()
            .map_or(0, |b| usize::from(u16::from_be_bytes(*b)));
        let sense = data.get(2..2 + len).unwrap_or_default();
        check_condition(sense)
    } else {
        ScsiError::Status {
            status,
            name: status_name(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sense_formats() {
        // Fixed format: ILLEGAL REQUEST, LBA OUT OF RANGE.
        let mut fixed = vec![0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0x00];
        let mut data = (fixed.len() as u16).to_be_bytes().to_vec();
        data.append(&mut fixed);
        let e = from_status(CHECK_CONDITION, &data);
        assert_eq!(
            e.to_string(),
            "CHECK CONDITION: sense key 0x5 ILLEGAL REQUEST, ASC/ASCQ 0x21/0x00"
        );
        // Descriptor format: UNIT ATTENTION, POWER ON.
        let desc = [0x72, 0x06, 0x29, 0x00, 0, 0, 0, 0];
        assert!(matches!(
            check_condition(&desc),
            ScsiError::CheckCondition {
                key: UNIT_ATTENTION,
                asc: 0x29,
                ..
            }
        ));
        assert!(matches!(
            from_status(CHECK_CONDITION, &[]),
            ScsiError::CheckCondition { key: 0, .. }
        ));
        assert_eq!(
            from_status(0x28, &[]).to_string(),
            "SCSI status 0x28 (TASK SET FULL)"
        );
    }
}
