//! CDB decoding.
//!
//! [`decode`] turns the bytes of a CDB into a [`Cdb`] or the sense data that rejects it. It is
//! pure (no I/O, no allocation) and total: every input, of any length, gives one or the other.
//!
//! Every command this crate implements has an entry in [`COMMANDS`] with its CDB length and its
//! CDB USAGE DATA bit map (SPC-4 §6.35): the bits the device server looks at. The decoder first
//! checks the CDB against that map, so any bit set outside it (a reserved field, an unsupported
//! option such as RDPROTECT, NACA or an ANCHOR bit) is INVALID FIELD IN CDB with a field pointer
//! at the offending bit, and REPORT SUPPORTED OPERATION CODES reports exactly what the decoder
//! accepts. Field values that are invalid although their bits are in use (a reserved service
//! action, a BYTCHK of 10b, a page code with EVPD clear, ...) are checked per command after that.
//!
//! Bytes past the command's CDB length are ignored: transports pad CDBs (iSCSI carries 16 bytes).

use crate::sense::{Asc, Sense, SenseKey};

/// Which logical units offer a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Every logical unit.
    Always,
    /// Thin-provisioned logical units (UNMAP).
    Thin,
    /// Logical units that can deallocate every block and report it (SANITIZE BLOCK ERASE).
    BlockErase,
}

/// One supported command (or command and service action) and its CDB usage data.
#[derive(Debug)]
pub struct OpInfo {
    /// Operation code.
    pub opcode: u8,
    /// Service action, for commands that have one.
    pub sa: Option<u16>,
    /// CDB USAGE DATA: byte 0 is the operation code; the service action field holds the
    /// service action; every other bit is set when the device server uses it.
    pub usage: &'static [u8],
    /// Nominal command processing timeout, seconds (0: not specified).
    pub nominal_timeout: u32,
    /// Recommended command timeout, seconds.
    pub recommended_timeout: u32,
    /// Which logical units support it.
    pub needs: Needs,
}

impl OpInfo {
    /// CDB length in bytes.
    pub fn cdb_len(&self) -> usize {
        self.usage.len()
    }
}

const fn op(opcode: u8, usage: &'static [u8]) -> OpInfo {
    OpInfo {
        opcode,
        sa: None,
        usage,
        nominal_timeout: 0,
        recommended_timeout: 30,
        needs: Needs::Always,
    }
}

const fn op_sa(opcode: u8, sa: u16, usage: &'static [u8]) -> OpInfo {
    OpInfo {
        opcode,
        sa: Some(sa),
        usage,
        nominal_timeout: 0,
        recommended_timeout: 30,
        needs: Needs::Always,
    }
}

const fn needs(mut o: OpInfo, n: Needs) -> OpInfo {
    o.needs = n;
    o
}

const fn slow(mut o: OpInfo, nominal: u32, recommended: u32) -> OpInfo {
    o.nominal_timeout = nominal;
    o.recommended_timeout = recommended;
    o
}

/// Operation codes used here.
#[allow(missing_docs)]
pub mod opcode {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0A;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const MODE_SENSE_6: u8 = 0x1A;
    pub const START_STOP_UNIT: u8 = 0x1B;
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1E;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2A;
    pub const WRITE_AND_VERIFY_10: u8 = 0x2E;
    pub const VERIFY_10: u8 = 0x2F;
    pub const PRE_FETCH_10: u8 = 0x34;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const READ_DEFECT_DATA_10: u8 = 0x37;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const SANITIZE: u8 = 0x48;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const RESERVE_10: u8 = 0x56;
    pub const RELEASE_10: u8 = 0x57;
    pub const MODE_SENSE_10: u8 = 0x5A;
    pub const PERSISTENT_RESERVE_IN: u8 = 0x5E;
    pub const PERSISTENT_RESERVE_OUT: u8 = 0x5F;
    pub const EXTENDED_COPY: u8 = 0x83;
    pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
    pub const READ_16: u8 = 0x88;
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    pub const WRITE_16: u8 = 0x8A;
    pub const ORWRITE: u8 = 0x8B;
    pub const WRITE_AND_VERIFY_16: u8 = 0x8E;
    pub const VERIFY_16: u8 = 0x8F;
    pub const PRE_FETCH_16: u8 = 0x90;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
    pub const REPORT_LUNS: u8 = 0xA0;
    pub const MAINTENANCE_IN: u8 = 0xA3;
    pub const READ_12: u8 = 0xA8;
    pub const WRITE_12: u8 = 0xAA;
    pub const WRITE_AND_VERIFY_12: u8 = 0xAE;
    pub const VERIFY_12: u8 = 0xAF;
    pub const READ_DEFECT_DATA_12: u8 = 0xB7;
}

/// Service actions used here.
#[allow(missing_docs)]
pub mod service_action {
    pub const READ_CAPACITY_16: u16 = 0x10;
    pub const GET_LBA_STATUS: u16 = 0x12;
    pub const REPORT_SUPPORTED_OPCODES: u16 = 0x0C;
    pub const EXTENDED_COPY_LID1: u16 = 0x00;
    pub const COPY_STATUS: u16 = 0x00;
    pub const OPERATING_PARAMETERS: u16 = 0x03;
    pub const SANITIZE_OVERWRITE: u16 = 0x01;
    pub const SANITIZE_BLOCK_ERASE: u16 = 0x02;
    pub const SANITIZE_EXIT_FAILURE_MODE: u16 = 0x1F;
}

use opcode as o;
use service_action as sa;

const L4: u8 = 0xFF;

/// Every command and service action this crate implements, in operation code order.
pub static COMMANDS: &[OpInfo] = &[
    op(o::TEST_UNIT_READY, &[0x00, 0, 0, 0, 0, 0]),
    op(o::REQUEST_SENSE, &[0x03, 0x01, 0, 0, 0xFF, 0]),
    op(o::READ_6, &[0x08, 0x1F, 0xFF, 0xFF, 0xFF, 0]),
    op(o::WRITE_6, &[0x0A, 0x1F, 0xFF, 0xFF, 0xFF, 0]),
    op(o::INQUIRY, &[0x12, 0x01, 0xFF, 0xFF, 0xFF, 0]),
    op(o::MODE_SELECT_6, &[0x15, 0x11, 0, 0, 0xFF, 0]),
    op(o::RESERVE_6, &[0x16, 0, 0, 0, 0, 0]),
    op(o::RELEASE_6, &[0x17, 0, 0, 0, 0, 0]),
    op(o::MODE_SENSE_6, &[0x1A, 0x08, 0xFF, 0xFF, 0xFF, 0]),
    op(o::START_STOP_UNIT, &[0x1B, 0x01, 0, 0x0F, 0xF7, 0]),
    op(o::PREVENT_ALLOW_MEDIUM_REMOVAL, &[0x1E, 0, 0, 0, 0x03, 0]),
    op(
        o::READ_CAPACITY_10,
        &[0x25, 0, L4, L4, L4, L4, 0, 0, 0x01, 0],
    ),
    op(
        o::READ_10,
        &[0x28, 0x1A, L4, L4, L4, L4, 0x3F, 0xFF, 0xFF, 0],
    ),
    op(
        o::WRITE_10,
        &[0x2A, 0x1A, L4, L4, L4, L4, 0x3F, 0xFF, 0xFF, 0],
    ),
    op(
        o::WRITE_AND_VERIFY_10,
        &[0x2E, 0x12, L4, L4, L4, L4, 0x3F, 0xFF, 0xFF, 0],
    ),
    op(
        o::VERIFY_10,
        &[0x2F, 0x16, L4, L4, L4, L4, 0x3F, 0xFF, 0xFF, 0],
    ),
    op(
        o::PRE_FETCH_10,
        &[0x34, 0x02, L4, L4, L4, L4, 0x3F, 0xFF, 0xFF, 0],
    ),
    op(
        o::SYNCHRONIZE_CACHE_10,
        &[0x35, 0x06, L4, L4, L4, L4, 0x3F, 0xFF, 0xFF, 0],
    ),
    op(
        o::READ_DEFECT_DATA_10,
        &[0x37, 0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0],
    ),
    op(
        o::WRITE_SAME_10,
        &[0x41, 0x08, L4, L4, L4, L4, 0x3F, 0xFF, 0xFF, 0],
    ),
    needs(
        op(o::UNMAP, &[0x42, 0, 0, 0, 0, 0, 0x3F, 0xFF, 0xFF, 0]),
        Needs::Thin,
    ),
    slow(
        op_sa(
            o::SANITIZE,
            sa::SANITIZE_OVERWRITE,
            &[0x48, 0xA1, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0],
        ),
        3600,
        36000,
    ),
    slow(
        needs(
            op_sa(
                o::SANITIZE,
                sa::SANITIZE_BLOCK_ERASE,
                &[0x48, 0xA2, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0],
            ),
            Needs::BlockErase,
        ),
        60,
        3600,
    ),
    op_sa(
        o::SANITIZE,
        sa::SANITIZE_EXIT_FAILURE_MODE,
        &[0x48, 0xBF, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0],
    ),
    op(
        o::MODE_SELECT_10,
        &[0x55, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0],
    ),
    op(o::RESERVE_10, &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    op(o::RELEASE_10, &[0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    op(
        o::MODE_SENSE_10,
        &[0x5A, 0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0],
    ),
    op_sa(
        o::PERSISTENT_RESERVE_IN,
        0x00,
        &[0x5E, 0x00, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0],
    ),
    op_sa(
        o::PERSISTENT_RESERVE_IN,
        0x01,
        &[0x5E, 0x01, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0],
    ),
    op_sa(
        o::PERSISTENT_RESERVE_IN,
        0x02,
        &[0x5E, 0x02, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0],
    ),
    op_sa(
        o::PERSISTENT_RESERVE_IN,
        0x03,
        &[0x5E, 0x03, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0],
    ),
    op_sa(
        o::PERSISTENT_RESERVE_OUT,
        0x00,
        &[0x5F, 0x00, 0xFF, 0, 0, L4, L4, L4, L4, 0],
    ),
    op_sa(
        o::PERSISTENT_RESERVE_OUT,
        0x01,
        &[0x5F, 0x01, 0xFF, 0, 0, L4, L4, L4, L4, 0],
    ),
    op_sa(
        o::PERSISTENT_RESERVE_OUT,
        0x02,
        &[0x5F, 0x02, 0xFF, 0, 0, L4, L4, L4, L4, 0],
    ),
    op_sa(
        o::PERSISTENT_RESERVE_OUT,
        0x03,
        &[0x5F, 0x03, 0xFF, 0, 0, L4, L4, L4, L4, 0],
    ),
    op_sa(
        o::PERSISTENT_RESERVE_OUT,
        0x04,
        &[0x5F, 0x04, 0xFF, 0, 0, L4, L4, L4, L4, 0],
    ),
    op_sa(
        o::PERSISTENT_RESERVE_OUT,
        0x05,
        &[0x5F, 0x05, 0xFF, 0, 0, L4, L4, L4, L4, 0],
    ),
    op_sa(
        o::PERSISTENT_RESERVE_OUT,
        0x06,
        &[0x5F, 0x06, 0xFF, 0, 0, L4, L4, L4, L4, 0],
    ),
    op_sa(
        o::PERSISTENT_RESERVE_OUT,
        0x07,
        &[0x5F, 0x07, 0xFF, 0, 0, L4, L4, L4, L4, 0],
    ),
    op_sa(
        o::EXTENDED_COPY,
        sa::EXTENDED_COPY_LID1,
        &[0x83, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, L4, L4, L4, L4, 0, 0],
    ),
    op_sa(
        o::RECEIVE_COPY_RESULTS,
        sa::COPY_STATUS,
        &[0x84, 0x00, 0xFF, 0, 0, 0, 0, 0, 0, 0, L4, L4, L4, L4, 0, 0],
    ),
    op_sa(
        o::RECEIVE_COPY_RESULTS,
        sa::OPERATING_PARAMETERS,
        &[0x84, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, L4, L4, L4, L4, 0, 0],
    ),
    op(
        o::READ_16,
        &[
            0x88, 0x1A, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, 0x3F, 0,
        ],
    ),
    op(
        o::COMPARE_AND_WRITE,
        &[
            0x89, 0x1A, L4, L4, L4, L4, L4, L4, L4, L4, 0, 0, 0, 0xFF, 0x3F, 0,
        ],
    ),
    op(
        o::WRITE_16,
        &[
            0x8A, 0x1A, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, 0x3F, 0,
        ],
    ),
    op(
        o::ORWRITE,
        &[
            0x8B, 0x1A, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, 0x3F, 0,
        ],
    ),
    op(
        o::WRITE_AND_VERIFY_16,
        &[
            0x8E, 0x12, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, 0x3F, 0,
        ],
    ),
    op(
        o::VERIFY_16,
        &[
            0x8F, 0x16, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, 0x3F, 0,
        ],
    ),
    op(
        o::PRE_FETCH_16,
        &[
            0x90, 0x02, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, 0x3F, 0,
        ],
    ),
    op(
        o::SYNCHRONIZE_CACHE_16,
        &[
            0x91, 0x06, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, 0x3F, 0,
        ],
    ),
    op(
        o::WRITE_SAME_16,
        &[
            0x93, 0x09, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, 0x3F, 0,
        ],
    ),
    op_sa(
        o::SERVICE_ACTION_IN_16,
        sa::READ_CAPACITY_16,
        &[0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, L4, L4, L4, L4, 0, 0],
    ),
    op_sa(
        o::SERVICE_ACTION_IN_16,
        sa::GET_LBA_STATUS,
        &[
            0x9E, 0x12, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, L4, 0, 0,
        ],
    ),
    op(
        o::REPORT_LUNS,
        &[0xA0, 0, 0xFF, 0, 0, 0, L4, L4, L4, L4, 0, 0],
    ),
    op_sa(
        o::MAINTENANCE_IN,
        sa::REPORT_SUPPORTED_OPCODES,
        &[0xA3, 0x0C, 0x87, 0xFF, 0xFF, 0xFF, L4, L4, L4, L4, 0, 0],
    ),
    op(
        o::READ_12,
        &[0xA8, 0x1A, L4, L4, L4, L4, L4, L4, L4, L4, 0x3F, 0],
    ),
    op(
        o::WRITE_12,
        &[0xAA, 0x1A, L4, L4, L4, L4, L4, L4, L4, L4, 0x3F, 0],
    ),
    op(
        o::WRITE_AND_VERIFY_12,
        &[0xAE, 0x12, L4, L4, L4, L4, L4, L4, L4, L4, 0x3F, 0],
    ),
    op(
        o::VERIFY_12,
        &[0xAF, 0x16, L4, L4, L4, L4, L4, L4, L4, L4, 0x3F, 0],
    ),
    op(
        o::READ_DEFECT_DATA_12,
        &[0xB7, 0x1F, L4, L4, L4, L4, L4, L4, L4, L4, 0, 0],
    ),
];

/// How an operation code selects its service action.
fn sa_field(opcode: u8) -> Option<(usize, bool)> {
    // (byte, 16-bit) of the SERVICE ACTION field; 5-bit fields live in bits 4:0 of byte 1.
    match opcode {
        o::SANITIZE
        | o::PERSISTENT_RESERVE_IN
        | o::PERSISTENT_RESERVE_OUT
        | o::EXTENDED_COPY
        | o::RECEIVE_COPY_RESULTS
        | o::SERVICE_ACTION_IN_16
        | o::MAINTENANCE_IN => Some((1, false)),
        _ => None,
    }
}

/// True when `opcode` is a command that has service actions.
pub fn has_service_actions(opcode: u8) -> bool {
    sa_field(opcode).is_some()
}

/// The table entry for an operation code (and service action, for commands that have one).
pub fn lookup(opcode: u8, sa: Option<u16>) -> Option<&'static OpInfo> {
    COMMANDS
        .iter()
        .find(|c| c.opcode == opcode && (c.sa.is_none() || c.sa == sa))
}

/// Persistent reservation types (SPC-4 table 169).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrType {
    /// Write Exclusive.
    WriteExclusive,
    /// Exclusive Access.
    ExclusiveAccess,
    /// Write Exclusive – Registrants Only.
    WriteExclusiveRegistrantsOnly,
    /// Exclusive Access – Registrants Only.
    ExclusiveAccessRegistrantsOnly,
    /// Write Exclusive – All Registrants.
    WriteExclusiveAllRegistrants,
    /// Exclusive Access – All Registrants.
    ExclusiveAccessAllRegistrants,
}

impl PrType {
    /// The TYPE field value.
    pub fn code(self) -> u8 {
        match self {
            PrType::WriteExclusive => 1,
            PrType::ExclusiveAccess => 3,
            PrType::WriteExclusiveRegistrantsOnly => 5,
            PrType::ExclusiveAccessRegistrantsOnly => 6,
            PrType::WriteExclusiveAllRegistrants => 7,
            PrType::ExclusiveAccessAllRegistrants => 8,
        }
    }

    /// The type for a TYPE field value.
    pub fn from_code(v: u8) -> Option<PrType> {
        Some(match v {
            1 => PrType::WriteExclusive,
            3 => PrType::ExclusiveAccess,
            5 => PrType::WriteExclusiveRegistrantsOnly,
            6 => PrType::ExclusiveAccessRegistrantsOnly,
            7 => PrType::WriteExclusiveAllRegistrants,
            8 => PrType::ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }

    /// Every registrant holds the reservation.
    pub fn all_registrants(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusiveAllRegistrants | PrType::ExclusiveAccessAllRegistrants
        )
    }

    /// Registrants only or all registrants: registered I_T nexuses have access.
    pub fn registrants_have_access(self) -> bool {
        !matches!(self, PrType::WriteExclusive | PrType::ExclusiveAccess)
    }

    /// Exclusive access: reads conflict too.
    pub fn exclusive_access(self) -> bool {
        matches!(
            self,
            PrType::ExclusiveAccess
                | PrType::ExclusiveAccessRegistrantsOnly
                | PrType::ExclusiveAccessAllRegistrants
        )
    }
}

/// PERSISTENT RESERVE IN service actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrIn {
    /// READ KEYS.
    ReadKeys,
    /// READ RESERVATION.
    ReadReservation,
    /// REPORT CAPABILITIES.
    ReportCapabilities,
    /// READ FULL STATUS.
    ReadFullStatus,
}

/// PERSISTENT RESERVE OUT service actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrOut {
    /// REGISTER.
    Register,
    /// RESERVE.
    Reserve,
    /// RELEASE.
    Release,
    /// CLEAR.
    Clear,
    /// PREEMPT.
    Preempt,
    /// PREEMPT AND ABORT.
    PreemptAndAbort,
    /// REGISTER AND IGNORE EXISTING KEY.
    RegisterAndIgnoreExistingKey,
    /// REGISTER AND MOVE.
    RegisterAndMove,
}

/// SANITIZE service actions this crate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanitizeAction {
    /// OVERWRITE.
    Overwrite,
    /// BLOCK ERASE.
    BlockErase,
    /// EXIT FAILURE MODE.
    ExitFailureMode,
}

/// A READ or WRITE (6, 10, 12 or 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rw {
    /// First block.
    pub lba: u64,
    /// Number of blocks.
    pub blocks: u32,
    /// Force unit access.
    pub fua: bool,
    /// Byte offset of the TRANSFER LENGTH field (for field pointers).
    pub len_field: u8,
}

/// A decoded CDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cdb {
    /// TEST UNIT READY.
    TestUnitReady,
    /// REQUEST SENSE.
    RequestSense {
        /// Descriptor format requested.
        desc: bool,
        /// Allocation length.
        alloc_len: u32,
    },
    /// INQUIRY.
    Inquiry {
        /// Vital product data requested.
        evpd: bool,
        /// VPD page code.
        page: u8,
        /// Allocation length.
        alloc_len: u32,
    },
    /// MODE SENSE (6) or (10).
    ModeSense {
        /// MODE SENSE (10).
        ten: bool,
        /// Disable block descriptors.
        dbd: bool,
        /// Long LBA block descriptors accepted (10 only).
        llbaa: bool,
        /// Page control: 0 current, 1 changeable, 2 default, 3 saved.
        pc: u8,
        /// Page code.
        page: u8,
        /// Subpage code.
        subpage: u8,
        /// Allocation length.
        alloc_len: u32,
    },
    /// MODE SELECT (6) or (10).
    ModeSelect {
        /// MODE SELECT (10).
        ten: bool,
        /// Page format.
        pf: bool,
        /// Save pages.
        sp: bool,
        /// Parameter list length.
        param_len: u32,
    },
    /// START STOP UNIT.
    StartStopUnit {
        /// Immediate.
        immed: bool,
        /// Power condition.
        power_condition: u8,
        /// Do not flush before stopping.
        no_flush: bool,
        /// Load/eject.
        loej: bool,
        /// Start.
        start: bool,
    },
    /// PREVENT ALLOW MEDIUM REMOVAL.
    PreventAllow {
        /// Prevent (true) or allow.
        prevent: bool,
    },
    /// READ CAPACITY (10).
    ReadCapacity10,
    /// READ CAPACITY (16).
    ReadCapacity16 {
        /// Allocation length.
        alloc_len: u32,
    },
    /// READ (6, 10, 12, 16).
    Read(Rw),
    /// WRITE (6, 10, 12, 16).
    Write(Rw),
    /// WRITE AND VERIFY (10, 12, 16).
    WriteAndVerify {
        /// The write.
        rw: Rw,
        /// Byte-by-byte compare after the write.
        bytchk: bool,
    },
    /// VERIFY (10, 12, 16).
    Verify {
        /// The range (FUA unused).
        rw: Rw,
        /// BYTCHK: 0 medium only, 1 compare every block, 3 compare one block against each.
        bytchk: u8,
    },
    /// WRITE SAME (10, 16).
    WriteSame {
        /// First block.
        lba: u64,
        /// Number of blocks; 0 means up to the last block.
        blocks: u32,
        /// Deallocate when possible.
        unmap: bool,
        /// No data-out buffer: write zeros (16 only).
        ndob: bool,
        /// WRITE SAME (16).
        sixteen: bool,
    },
    /// UNMAP.
    Unmap {
        /// Parameter list length.
        param_len: u32,
    },
    /// GET LBA STATUS.
    GetLbaStatus {
        /// Starting LBA.
        lba: u64,
        /// Allocation length.
        alloc_len: u32,
    },
    /// COMPARE AND WRITE.
    CompareAndWrite {
        /// First block.
        lba: u64,
        /// Number of blocks (compare and write each).
        blocks: u8,
        /// Force unit access for the write.
        fua: bool,
    },
    /// ORWRITE (16).
    OrWrite(Rw),
    /// SYNCHRONIZE CACHE (10, 16).
    SynchronizeCache {
        /// First block.
        lba: u64,
        /// Number of blocks; 0 means up to the last block.
        blocks: u32,
        /// Return before the flush completes.
        immed: bool,
    },
    /// PRE-FETCH (10, 16).
    PreFetch {
        /// First block.
        lba: u64,
        /// Number of blocks; 0 means up to the last block.
        blocks: u32,
    },
    /// READ DEFECT DATA (10, 12).
    ReadDefectData {
        /// READ DEFECT DATA (12).
        twelve: bool,
        /// Primary list requested.
        plist: bool,
        /// Grown list requested.
        glist: bool,
        /// Defect list format.
        format: u8,
        /// Allocation length.
        alloc_len: u32,
    },
    /// REPORT SUPPORTED OPERATION CODES.
    ReportSupportedOpcodes {
        /// Return command timeouts descriptors.
        rctd: bool,
        /// Reporting options.
        options: u8,
        /// Requested operation code.
        opcode: u8,
        /// Requested service action.
        sa: u16,
        /// Allocation length.
        alloc_len: u32,
    },
    /// REPORT LUNS (answered by the transport with [`crate::report_luns`]).
    ReportLuns {
        /// SELECT REPORT.
        select: u8,
        /// Allocation length.
        alloc_len: u32,
    },
    /// RESERVE (6) or (10).
    Reserve,
    /// RELEASE (6) or (10).
    Release,
    /// PERSISTENT RESERVE IN.
    PersistentReserveIn {
        /// Service action.
        action: PrIn,
        /// Allocation length.
        alloc_len: u32,
    },
    /// PERSISTENT RESERVE OUT.
    PersistentReserveOut {
        /// Service action.
        action: PrOut,
        /// SCOPE field.
        scope: u8,
        /// TYPE field (raw; checked by the service actions that use it).
        pr_type: u8,
        /// Parameter list length.
        param_len: u32,
    },
    /// SANITIZE.
    Sanitize {
        /// Return before the sanitize completes.
        immed: bool,
        /// Allow unrestricted sanitize exit.
        ause: bool,
        /// Service action.
        action: SanitizeAction,
        /// Parameter list length.
        param_len: u32,
    },
    /// EXTENDED COPY (LID1).
    ExtendedCopy {
        /// Parameter list length.
        param_len: u32,
    },
    /// RECEIVE COPY RESULTS.
    ReceiveCopyResults {
        /// Operating parameters (true) or copy status.
        operating_parameters: bool,
        /// List identifier.
        list_id: u8,
        /// Allocation length.
        alloc_len: u32,
    },
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be24(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([0, b[at], b[at + 1], b[at + 2]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

fn highest_bit(v: u8) -> u8 {
    7 - v.leading_zeros() as u8
}

/// Checks `cdb` (at least `info.cdb_len()` bytes) against the usage map: every bit outside
/// it must be clear. The service action field is validated by the lookup, the control byte's
/// vendor-specific bits are ignored.
fn check_usage(cdb: &[u8], info: &OpInfo) -> Result<(), Sense> {
    let len = info.cdb_len();
    for (i, (&byte, &usage)) in cdb.iter().zip(info.usage).enumerate().skip(1) {
        let mut allowed = usage;
        if i == 1 && info.sa.is_some() {
            allowed |= 0x1F;
        }
        if i == len - 1 {
            allowed |= 0xC0;
        }
        let bad = byte & !allowed;
        if bad != 0 {
            return Err(Sense::invalid_field_in_cdb(
                i as u16,
                Some(highest_bit(bad)),
            ));
        }
    }
    Ok(())
}

/// Decodes a CDB. See the module documentation.
///
/// # Errors
/// The sense data to return: INVALID COMMAND OPERATION CODE for an operation code this crate
/// does not implement, INVALID FIELD IN CDB (with a field pointer) for a bad field.
pub fn decode(cdb: &[u8]) -> Result<Cdb, Sense> {
    let Some(&opcode) = cdb.first() else {
        return Err(Sense::invalid_opcode());
    };
    let sa = match sa_field(opcode) {
        Some((at, false)) => Some(u16::from(cdb.get(at).copied().unwrap_or(0) & 0x1F)),
        Some((at, true)) => cdb.get(at..at + 2).map(|b| be16(b, 0)),
        None => None,
    };
    let Some(info) = lookup(opcode, sa) else {
        if COMMANDS.iter().any(|c| c.opcode == opcode) {
            // A known command with a service action it does not offer.
            return Err(Sense::invalid_field_in_cdb(1, Some(4)));
        }
        return Err(Sense::invalid_opcode());
    };
    let len = info.cdb_len();
    if cdb.len() < len {
        return Err(Sense::invalid_field_in_cdb(
            u16::try_from(cdb.len()).unwrap_or(u16::MAX),
            None,
        ));
    }
    let c = &cdb[..len];
    check_usage(c, info)?;
    decode_fields(c, opcode)
}

fn rw(c: &[u8], lba: u64, blocks: u32, len_field: u8) -> Rw {
    Rw {
        lba,
        blocks,
        fua: c[1] & 0x08 != 0,
        len_field,
    }
}

fn rw10(c: &[u8]) -> Rw {
    rw(c, u64::from(be32(c, 2)), u32::from(be16(c, 7)), 7)
}

fn rw12(c: &[u8]) -> Rw {
    rw(c, u64::from(be32(c, 2)), be32(c, 6), 6)
}

fn rw16(c: &[u8]) -> Rw {
    rw(c, be64(c, 2), be32(c, 10), 10)
}

fn rw6(c: &[u8]) -> Rw {
    let lba = u64::from(be24(c, 1) & 0x1F_FFFF);
    let blocks = match c[4] {
        0 => 256,
        n => u32::from(n),
    };
    Rw {
        lba,
        blocks,
        fua: false,
        len_field: 4,
    }
}

fn verify_bytchk(c: &[u8]) -> Result<u8, Sense> {
    let bytchk = (c[1] >> 1) & 0x03;
    if bytchk == 2 {
        return Err(Sense::invalid_field_in_cdb(1, Some(2)));
    }
    Ok(bytchk)
}

fn decode_fields(c: &[u8], opcode: u8) -> Result<Cdb, Sense> {
    Ok(match opcode {
        o::TEST_UNIT_READY => Cdb::TestUnitReady,
        o::REQUEST_SENSE => Cdb::RequestSense {
            desc: c[1] & 0x01 != 0,
            alloc_len: u32::from(c[4]),
        },
        o::INQUIRY => {
            let evpd = c[1] & 0x01 != 0;
            if !evpd && c[2] != 0 {
                return Err(Sense::invalid_field_in_cdb(2, Some(7)));
            }
            Cdb::Inquiry {
                evpd,
                page: c[2],
                alloc_len: u32::from(be16(c, 3)),
            }
        }
        o::MODE_SENSE_6 | o::MODE_SENSE_10 => {
            let ten = opcode == o::MODE_SENSE_10;
            Cdb::ModeSense {
                ten,
                dbd: c[1] & 0x08 != 0,
                llbaa: c[1] & 0x10 != 0,
                pc: c[2] >> 6,
                page: c[2] & 0x3F,
                subpage: c[3],
                alloc_len: if ten {
                    u32::from(be16(c, 7))
                } else {
                    u32::from(c[4])
                },
            }
        }
        o::MODE_SELECT_6 | o::MODE_SELECT_10 => {
            let ten = opcode == o::MODE_SELECT_10;
            Cdb::ModeSelect {
                ten,
                pf: c[1] & 0x10 != 0,
                sp: c[1] & 0x01 != 0,
                param_len: if ten {
                    u32::from(be16(c, 7))
                } else {
                    u32::from(c[4])
                },
            }
        }
        o::START_STOP_UNIT => Cdb::StartStopUnit {
            immed: c[1] & 0x01 != 0,
            power_condition: c[4] >> 4,
            no_flush: c[4] & 0x04 != 0,
            loej: c[4] & 0x02 != 0,
            start: c[4] & 0x01 != 0,
        },
        o::PREVENT_ALLOW_MEDIUM_REMOVAL => match c[4] & 0x03 {
            0 => Cdb::PreventAllow { prevent: false },
            1 => Cdb::PreventAllow { prevent: true },
            _ => return Err(Sense::invalid_field_in_cdb(4, Some(1))),
        },
        o::READ_CAPACITY_10 => {
            // With PMI clear the LBA field must be zero; PMI itself is obsolete and ignored.
            if c[8] & 0x01 == 0 && be32(c, 2) != 0 {
                return Err(Sense::invalid_field_in_cdb(2, Some(7)));
            }
            Cdb::ReadCapacity10
        }
        o::READ_6 => Cdb::Read(rw6(c)),
        o::WRITE_6 => Cdb::Write(rw6(c)),
        o::READ_10 => Cdb::Read(rw10(c)),
        o::WRITE_10 => Cdb::Write(rw10(c)),
        o::READ_12 => Cdb::Read(rw12(c)),
        o::WRITE_12 => Cdb::Write(rw12(c)),
        o::READ_16 => Cdb::Read(rw16(c)),
        o::WRITE_16 => Cdb::Write(rw16(c)),
        o::WRITE_AND_VERIFY_10 | o::WRITE_AND_VERIFY_12 | o::WRITE_AND_VERIFY_16 => {
            let rw = match opcode {
                o::WRITE_AND_VERIFY_10 => rw10(c),
                o::WRITE_AND_VERIFY_12 => rw12(c),
                _ => rw16(c),
            };
            Cdb::WriteAndVerify {
                rw,
                bytchk: c[1] & 0x02 != 0,
            }
        }
        o::VERIFY_10 | o::VERIFY_12 | o::VERIFY_16 => {
            let bytchk = verify_bytchk(c)?;
            let rw = match opcode {
                o::VERIFY_10 => rw10(c),
                o::VERIFY_12 => rw12(c),
                _ => rw16(c),
            };
            Cdb::Verify { rw, bytchk }
        }
        o::ORWRITE => Cdb::OrWrite(rw16(c)),
        o::WRITE_SAME_10 => Cdb::WriteSame {
            lba: u64::from(be32(c, 2)),
            blocks: u32::from(be16(c, 7)),
            unmap: c[1] & 0x08 != 0,
            ndob: false,
            sixteen: false,
        },
        o::WRITE_SAME_16 => Cdb::WriteSame {
            lba: be64(c, 2),
            blocks: be32(c, 10),
            unmap: c[1] & 0x08 != 0,
            ndob: c[1] & 0x01 != 0,
            sixteen: true,
        },
        o::UNMAP => Cdb::Unmap {
            param_len: u32::from(be16(c, 7)),
        },
        o::COMPARE_AND_WRITE => Cdb::CompareAndWrite {
            lba: be64(c, 2),
            blocks: c[13],
            fua: c[1] & 0x08 != 0,
        },
        o::SYNCHRONIZE_CACHE_10 => Cdb::SynchronizeCache {
            lba: u64::from(be32(c, 2)),
            blocks: u32::from(be16(c, 7)),
            immed: c[1] & 0x02 != 0,
        },
        o::SYNCHRONIZE_CACHE_16 => Cdb::SynchronizeCache {
            lba: be64(c, 2),
            blocks: be32(c, 10),
            immed: c[1] & 0x02 != 0,
        },
        o::PRE_FETCH_10 => Cdb::PreFetch {
            lba: u64::from(be32(c, 2)),
            blocks: u32::from(be16(c, 7)),
        },
        o::PRE_FETCH_16 => Cdb::PreFetch {
            lba: be64(c, 2),
            blocks: be32(c, 10),
        },
        o::READ_DEFECT_DATA_10 | o::READ_DEFECT_DATA_12 => {
            let twelve = opcode == o::READ_DEFECT_DATA_12;
            let (flags, alloc_len) = if twelve {
                (c[1], be32(c, 6))
            } else {
                (c[2], u32::from(be16(c, 7)))
            };
            let format = flags & 0x07;
            if matches!(format, 1 | 2 | 7) {
                return Err(Sense::invalid_field_in_cdb(
                    if twelve { 1 } else { 2 },
                    Some(2),
                ));
            }
            Cdb::ReadDefectData {
                twelve,
                plist: flags & 0x10 != 0,
                glist: flags & 0x08 != 0,
                format,
                alloc_len,
            }
        }
        o::SERVICE_ACTION_IN_16 => match u16::from(c[1] & 0x1F) {
            sa::READ_CAPACITY_16 => Cdb::ReadCapacity16 {
                alloc_len: be32(c, 10),
            },
            _ => Cdb::GetLbaStatus {
                lba: be64(c, 2),
                alloc_len: be32(c, 10),
            },
        },
        o::MAINTENANCE_IN => {
            let options = c[2] & 0x07;
            if options > 3 {
                return Err(Sense::invalid_field_in_cdb(2, Some(2)));
            }
            Cdb::ReportSupportedOpcodes {
                rctd: c[2] & 0x80 != 0,
                options,
                opcode: c[3],
                sa: be16(c, 4),
                alloc_len: be32(c, 6),
            }
        }
        o::REPORT_LUNS => Cdb::ReportLuns {
            select: c[2],
            alloc_len: be32(c, 6),
        },
        o::RESERVE_6 | o::RESERVE_10 => Cdb::Reserve,
        o::RELEASE_6 | o::RELEASE_10 => Cdb::Release,
        o::PERSISTENT_RESERVE_IN => Cdb::PersistentReserveIn {
            action: match c[1] & 0x1F {
                0 => PrIn::ReadKeys,
                1 => PrIn::ReadReservation,
                2 => PrIn::ReportCapabilities,
                _ => PrIn::ReadFullStatus,
            },
            alloc_len: u32::from(be16(c, 7)),
        },
        o::PERSISTENT_RESERVE_OUT => Cdb::PersistentReserveOut {
            action: match c[1] & 0x1F {
                0 => PrOut::Register,
                1 => PrOut::Reserve,
                2 => PrOut::Release,
                3 => PrOut::Clear,
                4 => PrOut::Preempt,
                5 => PrOut::PreemptAndAbort,
                6 => PrOut::RegisterAndIgnoreExistingKey,
                _ => PrOut::RegisterAndMove,
            },
            scope: c[2] >> 4,
            pr_type: c[2] & 0x0F,
            param_len: be32(c, 5),
        },
        o::SANITIZE => {
            let action = match u16::from(c[1] & 0x1F) {
                sa::SANITIZE_OVERWRITE => SanitizeAction::Overwrite,
                sa::SANITIZE_BLOCK_ERASE => SanitizeAction::BlockErase,
                _ => SanitizeAction::ExitFailureMode,
            };
            let param_len = u32::from(be16(c, 7));
            let param_ok = match action {
                SanitizeAction::Overwrite => param_len >= 5,
                SanitizeAction::BlockErase | SanitizeAction::ExitFailureMode => param_len == 0,
            };
            if !param_ok {
                return Err(Sense::invalid_field_in_cdb(7, None));
            }
            Cdb::Sanitize {
                immed: c[1] & 0x80 != 0,
                ause: c[1] & 0x20 != 0,
                action,
                param_len,
            }
        }
        o::EXTENDED_COPY => Cdb::ExtendedCopy {
            param_len: be32(c, 10),
        },
        o::RECEIVE_COPY_RESULTS => Cdb::ReceiveCopyResults {
            operating_parameters: c[1] & 0x1F == 0x03,
            list_id: c[2],
            alloc_len: be32(c, 10),
        },
        // Every table entry is handled above.
        _ => return Err(Sense::invalid_opcode()),
    })
}

impl Cdb {
    /// True for commands that a pending unit attention does not block (SAM-5 §5.14): INQUIRY,
    /// REPORT LUNS and REQUEST SENSE (which reports it).
    pub fn ignores_unit_attention(opcode: u8) -> bool {
        matches!(opcode, o::INQUIRY | o::REPORT_LUNS | o::REQUEST_SENSE)
    }
}

/// True for the two senses [`decode`] returns (INVALID COMMAND OPERATION CODE, INVALID FIELD IN
/// CDB); tests and fuzzers check that nothing else comes out.
pub fn is_decode_error(s: &Sense) -> bool {
    s.key == SenseKey::IllegalRequest
        && matches!(
            s.asc,
            Asc::INVALID_COMMAND_OPERATION_CODE | Asc::INVALID_FIELD_IN_CDB
        )
}

#[cfg(test)]
mod tests;
