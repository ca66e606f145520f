//! iSCSI PDUs (RFC 7143 §11): the 48-byte basic header segment (BHS) of every opcode, additional
//! header segments (AHS), the data segment with its padding, and CRC32C digests.
//!
//! A PDU on the wire is
//!
//! ```text
//! +-----+-----------+----------------+---------------------+--------------------+
//! | BHS | AHS (4n)  | header digest? | data segment + pad  | data digest?       |
//! | 48  | 0..1020   | 4              | 0..2^24-1, to 4     | 4 (only with data) |
//! +-----+-----------+----------------+---------------------+--------------------+
//! ```
//!
//! * [`frame`] delimits one PDU in a receive buffer without copying ("need N more bytes", "one PDU
//!   of N bytes", or "malformed"), checking the header digest before it trusts the lengths.
//! * [`decode_bhs`] turns the 48 header bytes into a typed [`Bhs`]; [`parse_pdu`] does a whole
//!   delimited PDU (header, AHS, data, digests). Both are pure and never panic: they are fuzzed.
//! * [`encode_pdu`] appends a PDU (header, optional AHS, data, padding, digests) to a buffer.
//!
//! Sequence numbers and tags are newtypes. Sequence numbers compare with RFC 1982 serial-number
//! arithmetic (32 bits), which is a partial order: use [`CmdSn::lt`] and friends, never `<`.

use std::fmt;

/// Bytes in a basic header segment.
pub const BHS_LEN: usize = 48;
/// Bytes in a CRC32C digest.
pub const DIGEST_LEN: usize = 4;
/// The largest DataSegmentLength the 24-bit field can hold.
pub const MAX_DATA_SEGMENT: u32 = 0x00ff_ffff;
/// The reserved tag value (`0xffffffff`): "no ITT" / "no TTT".
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// Errors found while delimiting or decoding a PDU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum PduError {
    /// the buffer holds {0} bytes, fewer than the PDU needs
    Truncated(usize),
    /// unknown opcode {0:#04x}
    UnknownOpcode(u8),
    /// header digest mismatch: received {received:#010x}, computed {computed:#010x}
    HeaderDigest {
        /// Digest in the PDU.
        received: u32,
        /// Digest computed over the header.
        computed: u32,
    },
    /// data digest mismatch: received {received:#010x}, computed {computed:#010x}
    DataDigest {
        /// Digest in the PDU.
        received: u32,
        /// Digest computed over the data segment and its padding.
        computed: u32,
    },
    /// data segment of {len} bytes exceeds the limit of {max} bytes
    DataSegmentTooLong {
        /// DataSegmentLength from the header.
        len: u32,
        /// The negotiated MaxRecvDataSegmentLength.
        max: u32,
    },
    /// the PDU is {actual} bytes but its header says {expected}
    LengthMismatch {
        /// Length computed from the header.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// malformed additional header segment
    BadAhs,
    /// reserved value {value:#x} in field {field}
    ReservedValue {
        /// Field name.
        field: &'static str,
        /// The value found.
        value: u32,
    },
}

/// RFC 1982 serial-number "less than" for 32-bit sequence numbers. Values exactly 2^31 apart
/// are incomparable (neither is less).
pub fn serial_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

macro_rules! seq_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub u32);

        impl $name {
            /// RFC 1982 serial-number `self < other`.
            pub fn lt(self, other: Self) -> bool {
                serial_lt(self.0, other.0)
            }
            /// RFC 1982 serial-number `self <= other`.
            pub fn le(self, other: Self) -> bool {
                self == other || serial_lt(self.0, other.0)
            }
            /// RFC 1982 serial-number `self > other`.
            pub fn gt(self, other: Self) -> bool {
                serial_lt(other.0, self.0)
            }
            /// RFC 1982 serial-number `self >= other`.
            pub fn ge(self, other: Self) -> bool {
                self == other || serial_lt(other.0, self.0)
            }
            /// `self + n`, wrapping at 2^32 (serial-number addition).
            pub fn wrapping_add(self, n: u32) -> Self {
                Self(self.0.wrapping_add(n))
            }
            /// `self - n`, wrapping at 2^32.
            pub fn wrapping_sub(self, n: u32) -> Self {
                Self(self.0.wrapping_sub(n))
            }
            /// The next number (wrapping).
            pub fn next(self) -> Self {
                self.wrapping_add(1)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

seq_newtype!(
    /// Command sequence number (session-wide command numbering).
    CmdSn
);
seq_newtype!(
    /// Status sequence number (per connection).
    StatSn
);
seq_newtype!(
    /// Data (or R2T) sequence number within a command.
    DataSn
);
seq_newtype!(
    /// R2T sequence number within a command.
    R2tSn
);

macro_rules! tag_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub u32);

        impl $name {
            /// The reserved value `0xffffffff`.
            pub const RESERVED: Self = Self(RESERVED_TAG);

            /// True for the reserved value `0xffffffff`.
            pub fn is_reserved(self) -> bool {
                self.0 == RESERVED_TAG
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#010x}", self.0)
            }
        }
    };
}

tag_newtype!(
    /// Initiator task tag.
    Itt
);
tag_newtype!(
    /// Target transfer tag.
    Ttt
);

/// Connection ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cid(pub u16);

/// Target session identifying handle (0: "new session").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tsih(pub u16);

/// Initiator session ID (6 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Isid(pub [u8; 6]);

impl fmt::Display for Isid {
    /// 12 lowercase hex digits, as in the SCSI initiator port name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The 8-byte LUN field, as it travels (big-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lun(pub u64);

impl Lun {
    /// Decodes SAM-5 single-level peripheral (00b) and flat (01b) addressing to a LUN number.
    /// Other address methods (and multi-level LUNs) decode to the raw 64-bit field, which names
    /// no logical unit.
    pub fn number(self) -> u64 {
        let b = self.0.to_be_bytes();
        let rest_zero = b[2..].iter().all(|&x| x == 0);
        match b[0] >> 6 {
            0b00 if b[0] & 0x3f == 0 && rest_zero => u64::from(b[1]),
            0b01 if rest_zero => (u64::from(b[0] & 0x3f) << 8) | u64::from(b[1]),
            _ => self.0,
        }
    }

    /// Encodes a LUN number: peripheral addressing below 256, flat addressing below 16384.
    pub fn from_number(n: u64) -> Lun {
        if n < 256 {
            Lun(n << 48)
        } else if n < 0x4000 {
            Lun((0x4000 | n) << 48)
        } else {
            Lun(n)
        }
    }
}

/// PDU opcodes (RFC 7143 §11.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// NOP-Out.
    NopOut = 0x00,
    /// SCSI Command.
    ScsiCommand = 0x01,
    /// SCSI Task Management Function Request.
    TmfRequest = 0x02,
    /// Login Request.
    LoginRequest = 0x03,
    /// Text Request.
    TextRequest = 0x04,
    /// SCSI Data-Out.
    DataOut = 0x05,
    /// Logout Request.
    LogoutRequest = 0x06,
    /// SNACK Request.
    Snack = 0x10,
    /// NOP-In.
    NopIn = 0x20,
    /// SCSI Response.
    ScsiResponse = 0x21,
    /// SCSI Task Management Function Response.
    TmfResponse = 0x22,
    /// Login Response.
    LoginResponse = 0x23,
    /// Text Response.
    TextResponse = 0x24,
    /// SCSI Data-In.
    DataIn = 0x25,
    /// Logout Response.
    LogoutResponse = 0x26,
    /// Ready To Transfer.
    R2t = 0x31,
    /// Asynchronous Message.
    AsyncMessage = 0x32,
    /// Reject.
    Reject = 0x3f,
}

impl Opcode {
    /// The opcode for the low six bits of byte 0, if defined.
    pub fn from_u8(v: u8) -> Option<Opcode> {
        Some(match v & 0x3f {
            0x00 => Opcode::NopOut,
            0x01 => Opcode::ScsiCommand,
            0x02 => Opcode::TmfRequest,
            0x03 => Opcode::LoginRequest,
            0x04 => Opcode::TextRequest,
            0x05 => Opcode::DataOut,
            0x06 => Opcode::LogoutRequest,
            0x10 => Opcode::Snack,
            0x20 => Opcode::NopIn,
            0x21 => Opcode::ScsiResponse,
            0x22 => Opcode::TmfResponse,
            0x23 => Opcode::LoginResponse,
            0x24 => Opcode::TextResponse,
            0x25 => Opcode::DataIn,
            0x26 => Opcode::LogoutResponse,
            0x31 => Opcode::R2t,
            0x32 => Opcode::AsyncMessage,
            0x3f => Opcode::Reject,
            _ => return None,
        })
    }
}

/// Reject reasons (RFC 7143 §11.17.1).
pub mod reject_reason {
    /// Data (payload) digest error.
    pub const DATA_DIGEST_ERROR: u8 = 0x02;
    /// SNACK Reject.
    pub const SNACK_REJECT: u8 = 0x03;
    /// Protocol error (e.g., SNACK Request for a status that was already acknowledged).
    pub const PROTOCOL_ERROR: u8 = 0x04;
    /// Command not supported.
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x05;
    /// Immediate command reject: too many immediate commands.
    pub const IMMEDIATE_COMMAND_REJECT: u8 = 0x06;
    /// Task in progress.
    pub const TASK_IN_PROGRESS: u8 = 0x07;
    /// Invalid data ack.
    pub const INVALID_DATA_ACK: u8 = 0x08;
    /// Invalid PDU field.
    pub const INVALID_PDU_FIELD: u8 = 0x09;
    /// Long operation reject: cannot generate a Target Transfer Tag; out of resources.
    pub const OUT_OF_RESOURCES: u8 = 0x0a;
    /// Waiting for Logout.
    pub const WAITING_FOR_LOGOUT: u8 = 0x0c;
}

/// NOP-Out (RFC 7143 §11.18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NopOut {
    /// I bit.
    pub immediate: bool,
    /// LUN (meaningful with a TTT).
    pub lun: Lun,
    /// ITT; reserved when the NOP-Out answers a NOP-In or wants no answer.
    pub itt: Itt,
    /// TTT: echoes a target NOP-In's TTT, else reserved.
    pub ttt: Ttt,
    /// CmdSN.
    pub cmd_sn: CmdSn,
    /// ExpStatSN.
    pub exp_stat_sn: StatSn,
}

/// SCSI Command (RFC 7143 §11.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiCommand {
    /// I bit.
    pub immediate: bool,
    /// F bit: no unsolicited Data-Out PDUs follow.
    pub final_: bool,
    /// R bit.
    pub read: bool,
    /// W bit.
    pub write: bool,
    /// ATTR (0 untagged, 1 simple, 2 ordered, 3 head of queue, 4 ACA).
    pub attr: u8,
    /// LUN.
    pub lun: Lun,
    /// ITT.
    pub itt: Itt,
    /// Expected Data Transfer Length.
    pub edtl: u32,
    /// CmdSN.
    pub cmd_sn: CmdSn,
    /// ExpStatSN.
    pub exp_stat_sn: StatSn,
    /// The first 16 CDB bytes.
    pub cdb: [u8; 16],
}

/// Task Management Function Request (RFC 7143 §11.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TmfRequest {
    /// I bit.
    pub immediate: bool,
    /// Function code (1 ABORT TASK ... 8 TASK REASSIGN).
    pub function: u8,
    /// LUN.
    pub lun: Lun,
    /// ITT of this request.
    pub itt: Itt,
    /// Referenced Task Tag.
    pub ref_itt: Itt,
    /// CmdSN.
    pub cmd_sn: CmdSn,
    /// ExpStatSN.
    pub exp_stat_sn: StatSn,
    /// RefCmdSN.
    pub ref_cmd_sn: CmdSn,
    /// ExpDataSN.
    pub exp_data_sn: DataSn,
}

/// Login Request (RFC 7143 §11.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRequest {
    /// T bit.
    pub transit: bool,
    /// C bit.
    pub cont: bool,
    /// Current stage (0 security, 1 operational, 3 full feature).
    pub csg: u8,
    /// Next stage.
    pub nsg: u8,
    /// Version-max.
    pub version_max: u8,
    /// Version-min.
    pub version_min: u8,
    /// ISID.
    pub isid: Isid,
    /// TSIH.
    pub tsih: Tsih,
    /// ITT.
    pub itt: Itt,
    /// CID.
    pub cid: Cid,
    /// CmdSN.
    pub cmd_sn: CmdSn,
    /// ExpStatSN.
    pub exp_stat_sn: StatSn,
}

/// Text Request (RFC 7143 §11.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRequest {
    /// I bit.
    pub immediate: bool,
    /// F bit.
    pub final_: bool,
    /// C bit.
    pub cont: bool,
    /// LUN (reserved).
    pub lun: Lun,
    /// ITT.
    pub itt: Itt,
    /// TTT (reserved for a new request; echoes the target's for continuation).
    pub ttt: Ttt,
    /// CmdSN.
    pub cmd_sn: CmdSn,
    /// ExpStatSN.
    pub exp_stat_sn: StatSn,
}

/// SCSI Data-Out (RFC 7143 §11.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataOut {
    /// F bit: last PDU of the sequence.
    pub final_: bool,
    /// LUN.
    pub lun: Lun,
    /// ITT of the command.
    pub itt: Itt,
    /// TTT of the R2T answered, reserved for unsolicited data.
    pub ttt: Ttt,
    /// ExpStatSN.
    pub exp_stat_sn: StatSn,
    /// DataSN within the sequence.
    pub data_sn: DataSn,
    /// Buffer offset.
    pub buffer_offset: u32,
}

/// Logout Request (RFC 7143 §11.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutRequest {
    /// I bit.
    pub immediate: bool,
    /// Reason code (0 close session, 1 close connection, 2 remove for recovery).
    pub reason: u8,
    /// ITT.
    pub itt: Itt,
    /// CID of the connection to close (reasons 1 and 2).
    pub cid: Cid,
    /// CmdSN.
    pub cmd_sn: CmdSn,
    /// ExpStatSN.
    pub exp_stat_sn: StatSn,
}

/// SNACK Request (RFC 7143 §11.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snack {
    /// Type (0 Data/R2T, 1 status, 2 DataACK, 3 R-Data).
    pub kind: u8,
    /// LUN.
    pub lun: Lun,
    /// ITT.
    pub itt: Itt,
    /// TTT or SNACK Tag.
    pub ttt: Ttt,
    /// ExpStatSN.
    pub exp_stat_sn: StatSn,
    /// BegRun.
    pub beg_run: u32,
    /// RunLength.
    pub run_length: u32,
}

/// NOP-In (RFC 7143 §11.19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NopIn {
    /// LUN.
    pub lun: Lun,
    /// ITT (reserved for a target-initiated ping).
    pub itt: Itt,
    /// TTT (set when the target wants an answer).
    pub ttt: Ttt,
    /// StatSN.
    pub stat_sn: StatSn,
    /// ExpCmdSN.
    pub exp_cmd_sn: CmdSn,
    /// MaxCmdSN.
    pub max_cmd_sn: CmdSn,
}

/// SCSI Response (RFC 7143 §11.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiResponse {
    /// o bit: bidirectional read residual overflow.
    pub bidi_overflow: bool,
    /// u bit: bidirectional read residual underflow.
    pub bidi_underflow: bool,
    /// O bit: residual overflow.
    pub overflow: bool,
    /// U bit: residual underflow.
    pub underflow: bool,
    /// iSCSI response (0 command completed at target, 1 target failure).
    pub response: u8,
    /// SCSI status.
    pub status: u8,
    /// ITT.
    pub itt: Itt,
    /// SNACK Tag.
    pub snack_tag: u32,
    /// StatSN.
    pub stat_sn: StatSn,
    /// ExpCmdSN.
    pub exp_cmd_sn: CmdSn,
    /// MaxCmdSN.
    pub max_cmd_sn: CmdSn,
    /// ExpDataSN: Data-In PDUs sent for the command.
    pub exp_data_sn: DataSn,
    /// Bidirectional read residual count.
    pub bidi_residual: u32,
    /// Residual count.
    pub residual: u32,
}

/// Task Management Function Response (RFC 7143 §11.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TmfResponse {
    /// Response code.
    pub response: u8,
    /// ITT of the request.
    pub itt: Itt,
    /// StatSN.
    pub stat_sn: StatSn,
    /// ExpCmdSN.
    pub exp_cmd_sn: CmdSn,
    /// MaxCmdSN.
    pub max_cmd_sn: CmdSn,
}

/// Login Response (RFC 7143 §11.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginResponse {
    /// T bit.
    pub transit: bool,
    /// C bit.
    pub cont: bool,
    /// Current stage.
    pub csg: u8,
    /// Next stage.
    pub nsg: u8,
    /// Version-max.
    pub version_max: u8,
    /// Version-active.
    pub version_active: u8,
    /// ISID.
    pub isid: Isid,
    /// TSIH.
    pub tsih: Tsih,
    /// ITT.
    pub itt: Itt,
    /// StatSN.
    pub stat_sn: StatSn,
    /// ExpCmdSN.
    pub exp_cmd_sn: CmdSn,
    /// MaxCmdSN.
    pub max_cmd_sn: CmdSn,
    /// Status-Class.
    pub status_class: u8,
    /// Status-Detail.
    pub status_detail: u8,
}

/// Text Response (RFC 7143 §11.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextResponse {
    /// F bit.
    pub final_: bool,
    /// C bit.
    pub cont: bool,
    /// LUN.
    pub lun: Lun,
    /// ITT.
    pub itt: Itt,
    /// TTT (set while more text follows).
    pub ttt: Ttt,
    /// StatSN.
    pub stat_sn: StatSn,
    /// ExpCmdSN.
    pub exp_cmd_sn: CmdSn,
    /// MaxCmdSN.
    pub max_cmd_sn: CmdSn,
}

/// SCSI Data-In (RFC 7143 §11.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataIn {
    /// F bit: last PDU of a sequence.
    pub final_: bool,
    /// A bit (acknowledge request; never set at ERL 0).
    pub ack: bool,
    /// O bit (with S).
    pub overflow: bool,
    /// U bit (with S).
    pub underflow: bool,
    /// S bit with the SCSI status, when status rides in this PDU.
    pub status: Option<u8>,
    /// LUN.
    pub lun: Lun,
    /// ITT.
    pub itt: Itt,
    /// TTT (reserved unless A).
    pub ttt: Ttt,
    /// StatSN (valid with S).
    pub stat_sn: StatSn,
    /// ExpCmdSN.
    pub exp_cmd_sn: CmdSn,
    /// MaxCmdSN.
    pub max_cmd_sn: CmdSn,
    /// DataSN.
    pub data_sn: DataSn,
    /// Buffer offset.
    pub buffer_offset: u32,
    /// Residual count (with S).
    pub residual: u32,
}

/// Logout Response (RFC 7143 §11.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutResponse {
    /// Response (0 closed, 1 CID not found, 2 recovery not supported, 3 cleanup failed).
    pub response: u8,
    /// ITT.
    pub itt: Itt,
    /// StatSN.
    pub stat_sn: StatSn,
    /// ExpCmdSN.
    pub exp_cmd_sn: CmdSn,
    /// MaxCmdSN.
    pub max_cmd_sn: CmdSn,
    /// Time2Wait.
    pub time2wait: u16,
    /// Time2Retain.
    pub time2retain: u16,
}

/// Ready To Transfer (RFC 7143 §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2t {
    /// LUN.
    pub lun: Lun,
    /// ITT of the command.
    pub itt: Itt,
    /// TTT the Data-Out PDUs must echo.
    pub ttt: Ttt,
    /// StatSN (next, not advanced).
    pub stat_sn: StatSn,
    /// ExpCmdSN.
    pub exp_cmd_sn: CmdSn,
    /// MaxCmdSN.
    pub max_cmd_sn: CmdSn,
    /// R2TSN.
    pub r2t_sn: R2tSn,
    /// Buffer offset.
    pub buffer_offset: u32,
    /// Desired Data Transfer Length.
    pub desired_len: u32,
}

/// Asynchronous Message (RFC 7143 §11.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncMessage {
    /// LUN.
    pub lun: Lun,
    /// StatSN.
    pub stat_sn: StatSn,
    /// ExpCmdSN.
    pub exp_cmd_sn: CmdSn,
    /// MaxCmdSN.
    pub max_cmd_sn: CmdSn,
    /// AsyncEvent.
    pub event: u8,
    /// AsyncVCode.
    pub vcode: u8,
    /// Parameter1.
    pub param1: u16,
    /// Parameter2.
    pub param2: u16,
    /// Parameter3.
    pub param3: u16,
}

/// Reject (RFC 7143 §11.17). The data segment carries the rejected PDU's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    /// Reason (see [`reject_reason`]).
    pub reason: u8,
    /// StatSN.
    pub stat_sn: StatSn,
    /// ExpCmdSN.
    pub exp_cmd_sn: CmdSn,
    /// MaxCmdSN.
    pub max_cmd_sn: CmdSn,
    /// DataSN/R2TSN (only for rejected Data/R2T SNACKs).
    pub data_sn: DataSn,
}

/// A decoded basic header segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // each variant is the PDU of the same name
pub enum Bhs {
    NopOut(NopOut),
    ScsiCommand(ScsiCommand),
    TmfRequest(TmfRequest),
    LoginRequest(LoginRequest),
    TextRequest(TextRequest),
    DataOut(DataOut),
    LogoutRequest(LogoutRequest),
    Snack(Snack),
    NopIn(NopIn),
    ScsiResponse(ScsiResponse),
    TmfResponse(TmfResponse),
    LoginResponse(LoginResponse),
    TextResponse(TextResponse),
    DataIn(DataIn),
    LogoutResponse(LogoutResponse),
    R2t(R2t),
    AsyncMessage(AsyncMessage),
    Reject(Reject),
}

impl Bhs {
    /// The opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Bhs::NopOut(_) => Opcode::NopOut,
            Bhs::ScsiCommand(_) => Opcode::ScsiCommand,
            Bhs::TmfRequest(_) => Opcode::TmfRequest,
            Bhs::LoginRequest(_) => Opcode::LoginRequest,
            Bhs::TextRequest(_) => Opcode::TextRequest,
            Bhs::DataOut(_) => Opcode::DataOut,
            Bhs::LogoutRequest(_) => Opcode::LogoutRequest,
            Bhs::Snack(_) => Opcode::Snack,
            Bhs::NopIn(_) => Opcode::NopIn,
            Bhs::ScsiResponse(_) => Opcode::ScsiResponse,
            Bhs::TmfResponse(_) => Opcode::TmfResponse,
            Bhs::LoginResponse(_) => Opcode::LoginResponse,
            Bhs::TextResponse(_) => Opcode::TextResponse,
            Bhs::DataIn(_) => Opcode::DataIn,
            Bhs::LogoutResponse(_) => Opcode::LogoutResponse,
            Bhs::R2t(_) => Opcode::R2t,
            Bhs::AsyncMessage(_) => Opcode::AsyncMessage,
            Bhs::Reject(_) => Opcode::Reject,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Field access. `get32(b, 20)` etc. take a fixed 48-byte array and constant offsets below 48, so
// they cannot go out of range.
// ---------------------------------------------------------------------------------------------

fn get16(b: &[u8; BHS_LEN], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn get32(b: &[u8; BHS_LEN], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn get64(b: &[u8; BHS_LEN], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

fn put16(b: &mut [u8; BHS_LEN], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn put32(b: &mut [u8; BHS_LEN], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8; BHS_LEN], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn bit(b: u8, mask: u8) -> bool {
    b & mask != 0
}

fn flag(on: bool, mask: u8) -> u8 {
    if on { mask } else { 0 }
}

/// TotalAHSLength in bytes (byte 4, in 4-byte words).
pub fn bhs_ahs_len(b: &[u8; BHS_LEN]) -> usize {
    usize::from(b[4]) * 4
}

/// DataSegmentLength (bytes 5..8).
pub fn bhs_data_len(b: &[u8; BHS_LEN]) -> u32 {
    u32::from_be_bytes([0, b[5], b[6], b[7]])
}

/// The ITT field (bytes 16..20) of any PDU.
pub fn bhs_itt(b: &[u8; BHS_LEN]) -> Itt {
    Itt(get32(b, 16))
}

/// Bytes of padding after a data segment of `len` bytes.
pub fn pad_len(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Decodes a basic header segment. Reserved fields are ignored (RFC 7143 §11: receivers
/// ignore them); reserved code values in defined fields are errors where the PDU layer can tell
/// (opcode, task attribute, login stages); the state machines check the rest.
///
/// # Errors
///
/// [`PduError::UnknownOpcode`] and [`PduError::ReservedValue`].
pub fn decode_bhs(b: &[u8; BHS_LEN]) -> Result<Bhs, PduError> {
    let op = Opcode::from_u8(b[0]).ok_or(PduError::UnknownOpcode(b[0] & 0x3f))?;
    let immediate = bit(b[0], 0x40);
    let f = b[1];
    let lun = Lun(get64(b, 8));
    let itt = Itt(get32(b, 16));
    Ok(match op {
        Opcode::NopOut => Bhs::NopOut(NopOut {
            immediate,
            lun,
            itt,
            ttt: Ttt(get32(b, 20)),
            cmd_sn: CmdSn(get32(b, 24)),
            exp_stat_sn: StatSn(get32(b, 28)),
        }),
        Opcode::ScsiCommand => {
            let attr = f & 0x07;
            if attr > 4 {
                return Err(PduError::ReservedValue {
                    field: "ATTR",
                    value: u32::from(attr),
                });
            }
            let mut cdb = [0u8; 16];
            cdb.copy_from_slice(&b[32..48]);
            Bhs::ScsiCommand(ScsiCommand {
                immediate,
                final_: bit(f, 0x80),
                read: bit(f, 0x40),
                write: bit(f, 0x20),
                attr,
                lun,
                itt,
                edtl: get32(b, 20),
                cmd_sn: CmdSn(get32(b, 24)),
                exp_stat_sn: StatSn(get32(b, 28)),
                cdb,
            })
        }
        Opcode::TmfRequest => Bhs::TmfRequest(TmfRequest {
            immediate,
            function: f & 0x7f,
            lun,
            itt,
            ref_itt: Itt(get32(b, 20)),
            cmd_sn: CmdSn(get32(b, 24)),
            exp_stat_sn: StatSn(get32(b, 28)),
            ref_cmd_sn: CmdSn(get32(b, 32)),
            exp_data_sn: DataSn(get32(b, 36)),
        }),
        Opcode::LoginRequest => {
            let mut isid = [0u8; 6];
            isid.copy_from_slice(&b[8..14]);
            Bhs::LoginRequest(LoginRequest {
                transit: bit(f, 0x80),
                cont: bit(f, 0x40),
                csg: (f >> 2) & 3,
                nsg: f & 3,
                version_max: b[2],
                version_min: b[3],
                isid: Isid(isid),
                tsih: Tsih(get16(b, 14)),
                itt,
                cid: Cid(get16(b, 20)),
                cmd_sn: CmdSn(get32(b, 24)),
                exp_stat_sn: StatSn(get32(b, 28)),
            })
        }
        Opcode::TextRequest => Bhs::TextRequest(TextRequest {
            immediate,
            final_: bit(f, 0x80),
            cont: bit(f, 0x40),
            lun,
            itt,
            ttt: Ttt(get32(b, 20)),
            cmd_sn: CmdSn(get32(b, 24)),
            exp_stat_sn: StatSn(get32(b, 28)),
        }),
        Opcode::DataOut => Bhs::DataOut(DataOut {
            final_: bit(f, 0x80),
            lun,
            itt,
            ttt: Ttt(get32(b, 20)),
            exp_stat_sn: StatSn(get32(b, 28)),
            data_sn: DataSn(get32(b, 36)),
            buffer_offset: get32(b, 40),
        }),
        Opcode::LogoutRequest => Bhs::LogoutRequest(LogoutRequest {
            immediate,
            reason: f & 0x7f,
            itt,
            cid: Cid(get16(b, 20)),
            cmd_sn: CmdSn(get32(b, 24)),
            exp_stat_sn: StatSn(get32(b, 28)),
        }),
        Opcode::Snack => Bhs::Snack(Snack {
            kind: f & 0x0f,
            lun,
            itt,
            ttt: Ttt(get32(b, 20)),
            exp_stat_sn: StatSn(get32(b, 28)),
            beg_run: get32(b, 40),
            run_length: get32(b, 44),
        }),
        Opcode::NopIn => Bhs::NopIn(NopIn {
            lun,
            itt,
            ttt: Ttt(get32(b, 20)),
            stat_sn: StatSn(get32(b, 24)),
            exp_cmd_sn: CmdSn(get32(b, 28)),
            max_cmd_sn: CmdSn(get32(b, 32)),
        }),
        Opcode::ScsiResponse => Bhs::ScsiResponse(ScsiResponse {
            bidi_overflow: bit(f, 0x10),
            bidi_underflow: bit(f, 0x08),
            overflow: bit(f, 0x04),
            underflow: bit(f, 0x02),
            response: b[2],
            status: b[3],
            itt,
            snack_tag: get32(b, 20),
            stat_sn: StatSn(get32(b, 24)),
            exp_cmd_sn: CmdSn(get32(b, 28)),
            max_cmd_sn: CmdSn(get32(b, 32)),
            exp_data_sn: DataSn(get32(b, 36)),
            bidi_residual: get32(b, 40),
            residual: get32(b, 44),
        }),
        Opcode::TmfResponse => Bhs::TmfResponse(TmfResponse {
            response: b[2],
            itt,
            stat_sn: StatSn(get32(b, 24)),
            exp_cmd_sn: CmdSn(get32(b, 28)),
            max_cmd_sn: CmdSn(get32(b, 32)),
        }),
        Opcode::LoginResponse => {
            let mut isid = [0u8; 6];
            isid.copy_from_slice(&b[8..14]);
            Bhs::LoginResponse(LoginResponse {
                transit: bit(f, 0x80),
                cont: bit(f, 0x40),
                csg: (f >> 2) & 3,
                nsg: f & 3,
                version_max: b[2],
                version_active: b[3],
                isid: Isid(isid),
                tsih: Tsih(get16(b, 14)),
                itt,
                stat_sn: StatSn(get32(b, 24)),
                exp_cmd_sn: CmdSn(get32(b, 28)),
                max_cmd_sn: CmdSn(get32(b, 32)),
                status_class: b[36],
                status_detail: b[37],
            })
        }
        Opcode::TextResponse => Bhs::TextResponse(TextResponse {
            final_: bit(f, 0x80),
            cont: bit(f, 0x40),
            lun,
            itt,
            ttt: Ttt(get32(b, 20)),
            stat_sn: StatSn(get32(b, 24)),
            exp_cmd_sn: CmdSn(get32(b, 28)),
            max_cmd_sn: CmdSn(get32(b, 32)),
        }),
        Opcode::DataIn => Bhs::DataIn(DataIn {
            final_: bit(f, 0x80),
            ack: bit(f, 0x40),
            overflow: bit(f, 0x04),
            underflow: bit(f, 0x02),
            status: if bit(f, 0x01) { Some(b[3]) } else { None },
            lun,
            itt,
            ttt: Ttt(get32(b, 20)),
            stat_sn: StatSn(get32(b, 24)),
            exp_cmd_sn: CmdSn(get32(b, 28)),
            max_cmd_sn: CmdSn(get32(b, 32)),
            data_sn: DataSn(get32(b, 36)),
            buffer_offset: get32(b, 40),
            residual: get32(b, 44),
        }),
        Opcode::LogoutResponse => Bhs::LogoutResponse(LogoutResponse {
            response: b[2],
            itt,
            stat_sn: StatSn(get32(b, 24)),
            exp_cmd_sn: CmdSn(get32(b, 28)),
            max_cmd_sn: CmdSn(get32(b, 32)),
            time2wait: get16(b, 40),
            time2retain: get16(b, 42),
        }),
        Opcode::R2t => Bhs::R2t(R2t {
            lun,
            itt,
            ttt: Ttt(get32(b, 20)),
            stat_sn: StatSn(get32(b, 24)),
            exp_cmd_sn: CmdSn(get32(b, 28)),
            max_cmd_sn: CmdSn(get32(b, 32)),
            r2t_sn: R2tSn(get32(b, 36)),
            buffer_offset: get32(b, 40),
            desired_len: get32(b, 44),
        }),
        Opcode::AsyncMessage => Bhs::AsyncMessage(AsyncMessage {
            lun,
            stat_sn: StatSn(get32(b, 24)),
            exp_cmd_sn: CmdSn(get32(b, 28)),
            max_cmd_sn: CmdSn(get32(b, 32)),
            event: b[36],
            vcode: b[37],
            param1: get16(b, 38),
            param2: get16(b, 40),
            param3: get16(b, 42),
        }),
        Opcode::Reject => Bhs::Reject(Reject {
            reason: b[2],
            stat_sn: StatSn(get32(b, 24)),
            exp_cmd_sn: CmdSn(get32(b, 28)),
            max_cmd_sn: CmdSn(get32(b, 32)),
            data_sn: DataSn(get32(b, 36)),
        }),
    })
}

/// Encodes a basic header segment with the given TotalAHSLength (in 4-byte words) and
/// DataSegmentLength (masked to 24 bits; callers keep it within [`MAX_DATA_SEGMENT`]).
pub fn encode_bhs(bhs: &Bhs, ahs_words: u8, data_len: u32) -> [u8; BHS_LEN] {
    debug_assert!(data_len <= MAX_DATA_SEGMENT);
    let mut b = [0u8; BHS_LEN];
    b[0] = bhs.opcode() as u8;
    b[4] = ahs_words;
    let dl = (data_len & MAX_DATA_SEGMENT).to_be_bytes();
    b[5..8].copy_from_slice(&dl[1..4]);
    match bhs {
        Bhs::NopOut(p) => {
            b[0] |= flag(p.immediate, 0x40);
            b[1] = 0x80;
            put64(&mut b, 8, p.lun.0);
            put32(&mut b, 16, p.itt.0);
            put32(&mut b, 20, p.ttt.0);
            put32(&mut b, 24, p.cmd_sn.0);
            put32(&mut b, 28, p.exp_stat_sn.0);
        }
        Bhs::ScsiCommand(p) => {
            b[0] |= flag(p.immediate, 0x40);
            b[1] =
                flag(p.final_, 0x80) | flag(p.read, 0x40) | flag(p.write, 0x20) | (p.attr & 0x07);
            put64(&mut b, 8, p.lun.0);
            put32(&mut b, 16, p.itt.0);
            put32(&mut b, 20, p.edtl);
            put32(&mut b, 24, p.cmd_sn.0);
            put32(&mut b, 28, p.exp_stat_sn.0);
            b[32..48].copy_from_slice(&p.cdb);
        }
        Bhs::TmfRequest(p) => {
            b[0] |= flag(p.immediate, 0x40);
            b[1] = 0x80 | (p.function & 0x7f);
            put64(&mut b, 8, p.lun.0);
            put32(&mut b, 16, p.itt.0);
            put32(&mut b, 20, p.ref_itt.0);
            put32(&mut b, 24, p.cmd_sn.0);
            put32(&mut b, 28, p.exp_stat_sn.0);
            put32(&mut b, 32, p.ref_cmd_sn.0);
            put32(&mut b, 36, p.exp_data_sn.0);
        }
        Bhs::LoginRequest(p) => {
            b[0] |= 0x40;
            b[1] = flag(p.transit, 0x80) | flag(p.cont, 0x40) | ((p.csg & 3) << 2) | (p.nsg & 3);
            b[2] = p.version_max;
            b[3] = p.version_min;
            b[8..14].copy_from_slice(&p.isid.0);
            put16(&mut b, 14, p.tsih.0);
            put32(&mut b, 16, p.itt.0);
            put16(&mut b, 20, p.cid.0);
            put32(&mut b, 24, p.cmd_sn.0);
            put32(&mut b, 28, p.exp_stat_sn.0);
        }
        Bhs::TextRequest(p) => {
            b[0] |= flag(p.immediate, 0x40);
            b[1] = flag(p.final_, 0x80) | flag(p.cont, 0x40);
            put64(&mut b, 8, p.lun.0);
            put32(&mut b, 16, p.itt.0);
            put32(&mut b, 20, p.ttt.0);
            put32(&mut b, 24, p.cmd_sn.0);
            put32(&mut b, 28, p.exp_stat_sn.0);
        }
        Bhs::DataOut(p) => {
            b[1] = flag(p.final_, 0x80);
            put64(&mut b, 8, p.lun.0);
            put32(&mut b, 16, p.itt.0);
            put32(&mut b, 20, p.ttt.0);
            put32(&mut b, 28, p.exp_stat_sn.0);
            put32(&mut b, 36, p.data_sn.0);
            put32(&mut b, 40, p.buffer_offset);
        }
        Bhs::LogoutRequest(p) => {
            b[0] |= flag(p.immediate, 0x40);
            b[1] = 0x80 | (p.reason & 0x7f);
            put32(&mut b, 16, p.itt.0);
            put16(&mut b, 20, p.cid.0);
            put32(&mut b, 24, p.cmd_sn.0);
            put32(&mut b, 28, p.exp_stat_sn.0);
        }
        Bhs::Snack(p) => {
            b[1] = 0x80 | (p.kind & 0x0f);
            put64(&mut b, 8, p.lun.0);
            put32(&mut b, 16, p.itt.0);
            put32(&mut b, 20, p.ttt.0);
            put32(&mut b, 28, p.exp_stat_sn.0);
            put32(&mut b, 40, p.beg_run);
            put32(&mut b, 44, p.run_length);
        }
        Bhs::NopIn(p) => {
            b[1] = 0x80;
            put64(&mut b, 8, p.lun.0);
            put32(&mut b, 16, p.itt.0);
            put32(&mut b, 20, p.ttt.0);
            put32(&mut b, 24, p.stat_sn.0);
            put32(&mut b, 28, p.exp_cmd_sn.0);
            put32(&mut b, 32, p.max_cmd_sn.0);
        }
        Bhs::ScsiResponse(p) => {
            b[1] = 0x80
                | flag(p.bidi_overflow, 0x10)
                | flag(p.bidi_underflow, 0x08)
                | flag(p.overflow, 0x04)
                | flag(p.underflow, 0x02);
            b[2] = p.response;
            b[3] = p.status;
            put32(&mut b, 16, p.itt.0);
            put32(&mut b, 20, p.snack_tag);
            put32(&mut b, 24, p.stat_sn.0);
            put32(&mut b, 28, p.exp_cmd_sn.0);
            put32(&mut b, 32, p.max_cmd_sn.0);
            put32(&mut b, 36, p.exp_data_sn.0);
            put32(&mut b, 40, p.bidi_residual);
            put32(&mut b, 44, p.residual);
        }
        Bhs::TmfResponse(p) => {
            b[1] = 0x80;
            b[2] = p.response;
            put32(&mut b, 16, p.itt.0);
            put32(&mut b, 24, p.stat_sn.0);
            put32(&mut b, 28, p.exp_cmd_sn.0);
            put32(&mut b, 32, p.max_cmd_sn.0);
        }
        Bhs::LoginResponse(p) => {
            b[1] = flag(p.transit, 0x80) | flag(p.cont, 0x40) | ((p.csg & 3) << 2) | (p.nsg & 3);
            b[2] = p.version_max;
            b[3] = p.version_active;
            b[8..14].copy_from_slice(&p.isid.0);
            put16(&mut b, 14, p.tsih.0);
            put32(&mut b, 16, p.itt.0);
            put32(&mut b, 24, p.stat_sn.0);
            put32(&mut b, 28, p.exp_cmd_sn.0);
            put32(&mut b, 32, p.max_cmd_sn.0);
            b[36] = p.status_class;
            b[37] = p.status_detail;
        }
        Bhs::TextResponse(p) => {
            b[1] = flag(p.final_, 0x80) | flag(p.cont, 0x40);
            put64(&mut b, 8, p.lun.0);
            put32(&mut b, 16, p.itt.0);
            put32(&mut b, 20, p.ttt.0);
            put32(&mut b, 24, p.stat_sn.0);
            put32(&mut b, 28, p.exp_cmd_sn.0);
            put32(&mut b, 32, p.max_cmd_sn.0);
        }
        Bhs::DataIn(p) => {
            b[1] = flag(p.final_, 0x80)
                | flag(p.ack, 0x40)
                | flag(p.overflow, 0x04)
                | flag(p.underflow, 0x02)
                | flag(p.status.is_some(), 0x01);
            b[3] = p.status.unwrap_or(0);
            put64(&mut b, 8, p.lun.0);
            put32(&mut b, 16, p.itt.0);
            put32(&mut b, 20, p.ttt.0);
            put32(&mut b, 24, p.stat_sn.0);
            put32(&mut b, 28, p.exp_cmd_sn.0);
            put32(&mut b, 32, p.max_cmd_sn.0);
            put32(&mut b, 36, p.data_sn.0);
            put32(&mut b, 40, p.buffer_offset);
            put32(&mut b, 44, p.residual);
        }
        Bhs::LogoutResponse(p) => {
            b[1] = 0x80;
            b[2] = p.response;
            put32(&mut b, 16, p.itt.0);
            put32(&mut b, 24, p.stat_sn.0);
            put32(&mut b, 28, p.exp_cmd_sn.0);
            put32(&mut b, 32, p.max_cmd_sn.0);
            put16(&mut b, 40, p.time2wait);
            put16(&mut b, 42, p.time2retain);
        }
        Bhs::R2t(p) => {
            b[1] = 0x80;
            put64(&mut b, 8, p.lun.0);
            put32(&mut b, 16, p.itt.0);
            put32(&mut b, 20, p.ttt.0);
            put32(&mut b, 24, p.stat_sn.0);
            put32(&mut b, 28, p.exp_cmd_sn.0);
            put32(&mut b, 32, p.max_cmd_sn.0);
            put32(&mut b, 36, p.r2t_sn.0);
            put32(&mut b, 40, p.buffer_offset);
            put32(&mut b, 44, p.desired_len);
        }
        Bhs::AsyncMessage(p) => {
            b[1] = 0x80;
            put64(&mut b, 8, p.lun.0);
            put32(&mut b, 16, RESERVED_TAG);
            put32(&mut b, 24, p.stat_sn.0);
            put32(&mut b, 28, p.exp_cmd_sn.0);
            put32(&mut b, 32, p.max_cmd_sn.0);
            b[36] = p.event;
            b[37] = p.vcode;
            put16(&mut b, 38, p.param1);
            put16(&mut b, 40, p.param2);
            put16(&mut b, 42, p.param3);
        }
        Bhs::Reject(p) => {
            b[1] = 0x80;
            b[2] = p.reason;
            put32(&mut b, 16, RESERVED_TAG);
            put32(&mut b, 24, p.stat_sn.0);
            put32(&mut b, 28, p.exp_cmd_sn.0);
            put32(&mut b, 32, p.max_cmd_sn.0);
            put32(&mut b, 36, p.data_sn.0);
        }
    }
    b
}

/// Which digests a connection uses (negotiated at login; both off during login).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digests {
    /// CRC32C header digest.
    pub header: bool,
    /// CRC32C data digest.
    pub data: bool,
}

/// The result of [`frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// At least this many more bytes are needed before anything can be said.
    Need(usize),
    /// The buffer starts with one whole PDU of this many bytes (header digest verified).
    Complete(usize),
    /// The buffer starts with bytes that cannot be a PDU (length untrusted: close).
    Malformed(PduError),
}

/// Delimits the PDU at the start of `buf` without copying. Checks the header digest (when
/// negotiated) as soon as the header is in, and the DataSegmentLength against
/// `max_data_segment` (our MaxRecvDataSegmentLength), before asking for the data.
pub fn frame(buf: &[u8], digests: Digests, max_data_segment: u32) -> Frame {
    let Some(bhs) = buf.first_chunk::<BHS_LEN>() else {
        return Frame::Need(BHS_LEN - buf.len());
    };
    let ahs = bhs_ahs_len(bhs);
    let hd = if digests.header { DIGEST_LEN } else { 0 };
    let header_len = BHS_LEN + ahs + hd;
    let dlen = bhs_data_len(bhs);
    if dlen > max_data_segment {
        return Frame::Malformed(PduError::DataSegmentTooLong {
            len: dlen,
            max: max_data_segment,
        });
    }
    if buf.len() < header_len {
        return Frame::Need(header_len - buf.len());
    }
    if digests.header {
        let computed = crc32c::crc32c(&buf[..BHS_LEN + ahs]);
        let received = read_digest(&buf[BHS_LEN + ahs..header_len]);
        if computed != received {
            return Frame::Malformed(PduError::HeaderDigest { received, computed });
        }
    }
    // dlen < 2^24, so none of this overflows a usize.
    let dlen = dlen as usize;
    let data_total = if dlen == 0 {
        0
    } else {
        dlen + pad_len(dlen) + if digests.data { DIGEST_LEN } else { 0 }
    };
    let total = header_len + data_total;
    if buf.len() < total {
        Frame::Need(total - buf.len())
    } else {
        Frame::Complete(total)
    }
}

fn read_digest(b: &[u8]) -> u32 {
    // Digests travel in the CRC's own (little-endian) byte order, as RFC 7143 §13.1 and
    // Appendix B (examples) show and every initiator implements.
    match b.first_chunk::<4>() {
        Some(d) => u32::from_le_bytes(*d),
        None => 0,
    }
}

/// One whole PDU, borrowed from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pdu<'a> {
    /// The decoded header.
    pub bhs: Bhs,
    /// The raw 48 header bytes (for Reject).
    pub raw_bhs: &'a [u8; BHS_LEN],
    /// The additional header segments (a multiple of 4 bytes).
    pub ahs: &'a [u8],
    /// The data segment, without padding or digest.
    pub data: &'a [u8],
}

/// Parses one whole PDU (as delimited by [`frame`]): header digest, AHS, data segment, padding
/// and data digest. Pure and total: the fuzzing entry point for the PDU layer.
///
/// # Errors
///
/// Any [`PduError`]: wrong length for the header's fields, digests that do not match, an
/// unknown opcode, reserved values.
pub fn parse_pdu(buf: &[u8], digests: Digests, max_data_segment: u32) -> Result<Pdu<'_>, PduError> {
    let total = match frame(buf, digests, max_data_segment) {
        Frame::Need(_) => return Err(PduError::Truncated(buf.len())),
        Frame::Malformed(e) => return Err(e),
        Frame::Complete(n) => n,
    };
    if total != buf.len() {
        return Err(PduError::LengthMismatch {
            expected: total,
            actual: buf.len(),
        });
    }
    let raw_bhs = buf
        .first_chunk::<BHS_LEN>()
        .ok_or(PduError::Truncated(buf.len()))?;
    let ahs_len = bhs_ahs_len(raw_bhs);
    let dlen = bhs_data_len(raw_bhs) as usize;
    let ahs = buf
        .get(BHS_LEN..BHS_LEN + ahs_len)
        .ok_or(PduError::Truncated(buf.len()))?;
    let data_start = BHS_LEN + ahs_len + if digests.header { DIGEST_LEN } else { 0 };
    let data = buf
        .get(data_start..data_start + dlen)
        .ok_or(PduError::Truncated(buf.len()))?;
    if dlen > 0 && digests.data {
        let padded_end = data_start + dlen + pad_len(dlen);
        let padded = buf
            .get(data_start..padded_end)
            .ok_or(PduError::Truncated(buf.len()))?;
        let computed = crc32c::crc32c(padded);
        let received = read_digest(buf.get(padded_end..).unwrap_or_default());
        if computed != received {
            return Err(PduError::DataDigest { received, computed });
        }
    }
    let bhs = decode_bhs(raw_bhs)?;
    Ok(Pdu {
        bhs,
        raw_bhs,
        ahs,
        data,
    })
}

/// An additional header segment (RFC 7143 §11.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ahs<'a> {
    /// Type 1: the CDB bytes beyond the first 16.
    ExtendedCdb(&'a [u8]),
    /// Type 2: Bidirectional Read Expected Data Transfer Length.
    BidiReadLength(u32),
    /// Another type (reserved or vendor).
    Other {
        /// AHSType.
        kind: u8,
        /// AHS-Specific bytes.
        data: &'a [u8],
    },
}

/// Splits the AHS area of a PDU into its segments.
///
/// # Errors
///
/// [`PduError::BadAhs`] when a segment's length runs past the area or a type-2 segment has the
/// wrong length.
pub fn parse_ahs(mut area: &[u8]) -> Result<Vec<Ahs<'_>>, PduError> {
    let mut out = Vec::new();
    while !area.is_empty() {
        let Some(head) = area.first_chunk::<3>() else {
            return Err(PduError::BadAhs);
        };
        let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
        let kind = head[2];
        let body = area.get(3..3 + len).ok_or(PduError::BadAhs)?;
        let whole = 3 + len + pad_len(3 + len);
        area = area.get(whole..).ok_or(PduError::BadAhs)?;
        out.push(match kind {
            1 => Ahs::ExtendedCdb(body.get(1..).ok_or(PduError::BadAhs)?),
            2 => {
                if len != 5 {
                    return Err(PduError::BadAhs);
                }
                Ahs::BidiReadLength(u32::from_be_bytes([body[1], body[2], body[3], body[4]]))
            }
            _ => Ahs::Other { kind, data: body },
        });
    }
    Ok(out)
}

/// Encodes an extended-CDB AHS for the CDB bytes beyond the first 16 (initiator side; tests).
pub fn encode_extended_cdb_ahs(extra: &[u8]) -> Vec<u8> {
    let len = extra.len() + 1;
    let mut v = Vec::with_capacity(3 + len + 3);
    v.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    v.push(1);
    v.push(0);
    v.extend_from_slice(extra);
    v.resize(v.len() + pad_len(v.len()), 0);
    v
}

/// Appends one PDU to `out`: the header (with `ahs`, a multiple of 4 bytes, and the total length
/// of `data`), its digest, the data segment gathered from `data`, padding and the data digest.
/// The caller keeps the data within [`MAX_DATA_SEGMENT`] and the peer's
/// MaxRecvDataSegmentLength, and `ahs` within 1020 bytes.
pub fn encode_pdu(out: &mut Vec<u8>, bhs: &Bhs, ahs: &[u8], data: &[&[u8]], digests: Digests) {
    let dlen: usize = data.iter().map(|d| d.len()).sum();
    let ahs_words = u8::try_from(ahs.len() / 4).unwrap_or(u8::MAX);
    let dlen32 = u32::try_from(dlen).unwrap_or(MAX_DATA_SEGMENT);
    let header = encode_bhs(bhs, ahs_words, dlen32);
    let start = out.len();
    out.extend_from_slice(&header);
    out.extend_from_slice(ahs);
    if digests.header {
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    if dlen > 0 {
        let dstart = out.len();
        for d in data {
            out.extend_from_slice(d);
        }
        out.resize(out.len() + pad_len(dlen), 0);
        if digests.data {
            let crc = crc32c::crc32c(&out[dstart..]);
            out.extend_from_slice(&crc.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests;
