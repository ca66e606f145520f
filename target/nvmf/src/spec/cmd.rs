//! Submission and completion queue entries (NVMe Base 2.0, §4.2, §4.6), SGL descriptors, opcodes
//! and status codes.

/// A 64-byte submission queue entry, kept as raw little-endian bytes with typed accessors.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sqe(pub [u8; 64]);

const _: () = assert!(size_of::<Sqe>() == 64);

impl Default for Sqe {
    fn default() -> Sqe {
        Sqe([0; 64])
    }
}

impl std::fmt::Debug for Sqe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqe")
            .field("opc", &format_args!("{:#04x}", self.opcode()))
            .field("cid", &self.cid())
            .field("nsid", &self.nsid())
            .finish_non_exhaustive()
    }
}

impl Sqe {
    fn u32_at(&self, at: usize) -> u32 {
        let mut v = [0u8; 4];
        v.copy_from_slice(&self.0[at..at + 4]);
        u32::from_le_bytes(v)
    }

    fn set_u32_at(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Opcode (byte 0).
    pub fn opcode(&self) -> u8 {
        self.0[0]
    }

    /// Sets the opcode.
    pub fn set_opcode(&mut self, opc: u8) {
        self.0[0] = opc;
    }

    /// Flags: FUSE (bits 0-1) and PSDT (bits 6-7).
    pub fn flags(&self) -> u8 {
        self.0[1]
    }

    /// Sets the flags byte.
    pub fn set_flags(&mut self, f: u8) {
        self.0[1] = f;
    }

    /// Command identifier.
    pub fn cid(&self) -> u16 {
        u16::from_le_bytes([self.0[2], self.0[3]])
    }

    /// Sets the command identifier.
    pub fn set_cid(&mut self, cid: u16) {
        self.0[2..4].copy_from_slice(&cid.to_le_bytes());
    }

    /// Namespace identifier (dword 1).
    pub fn nsid(&self) -> u32 {
        self.u32_at(4)
    }

    /// Sets the namespace identifier.
    pub fn set_nsid(&mut self, nsid: u32) {
        self.set_u32_at(4, nsid);
    }

    /// Fabrics command type (byte 4 of a fabrics command).
    pub fn fctype(&self) -> u8 {
        self.0[4]
    }

    /// Command dword `n` (0..=15).
    pub fn cdw(&self, n: usize) -> u32 {
        self.u32_at((n & 15) * 4)
    }

    /// Sets command dword `n` (0..=15).
    pub fn set_cdw(&mut self, n: usize, v: u32) {
        self.set_u32_at((n & 15) * 4, v);
    }

    /// The data pointer as an SGL descriptor (bytes 24..40).
    pub fn sgl(&self) -> SglDesc {
        let mut a = [0u8; 8];
        a.copy_from_slice(&self.0[24..32]);
        SglDesc {
            addr: u64::from_le_bytes(a),
            len: self.u32_at(32),
            sgl_type: self.0[39],
        }
    }

    /// Sets the data pointer SGL descriptor (and PSDT = SGL).
    pub fn set_sgl(&mut self, d: SglDesc) {
        self.0[24..32].copy_from_slice(&d.addr.to_le_bytes());
        self.set_u32_at(32, d.len);
        self.0[36..39].fill(0);
        self.0[39] = d.sgl_type;
        self.0[1] = (self.0[1] & 0x3F) | 0x40;
    }

    /// Starting LBA of an NVM command (dwords 10-11).
    pub fn slba(&self) -> u64 {
        u64::from(self.cdw(10)) | (u64::from(self.cdw(11)) << 32)
    }

    /// Number of logical blocks of an NVM command (dword 12 bits 0-15, 0-based), as a count.
    pub fn nlb(&self) -> u32 {
        (self.cdw(12) & 0xFFFF) + 1
    }

    /// Data transfer direction from the opcode's low two bits.
    pub fn direction(&self) -> Direction {
        match self.opcode() & 3 {
            1 => Direction::HostToController,
            2 => Direction::ControllerToHost,
            3 => Direction::Bidirectional,
            _ => Direction::None,
        }
    }
}

/// Data transfer direction of an opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// No data.
    None,
    /// Write-like.
    HostToController,
    /// Read-like.
    ControllerToHost,
    /// Both (not used by this implementation).
    Bidirectional,
}

/// SGL descriptor type byte: data block, offset subtype (in-capsule data).
pub const SGL_INCAPSULE: u8 = 0x01;
/// SGL descriptor type byte: transport data block, transport-specific subtype (R2T/C2H).
pub const SGL_TRANSPORT: u8 = 0x5A;

/// A 16-byte SGL descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SglDesc {
    /// Address (offset into the capsule for in-capsule data).
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Type (high nibble) and subtype (low nibble).
    pub sgl_type: u8,
}

/// A 16-byte completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cqe {
    /// Command specific dword 0.
    pub dw0: u32,
    /// Command specific dword 1.
    pub dw1: u32,
    /// Submission queue head pointer.
    pub sqhd: u16,
    /// Submission queue identifier.
    pub sqid: u16,
    /// Command identifier.
    pub cid: u16,
    /// Status field (bits 1-15 of the last word; the phase bit is always 0 on fabrics).
    pub status: Status,
}

impl Cqe {
    /// The 16 wire bytes.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.dw0.to_le_bytes());
        b[4..8].copy_from_slice(&self.dw1.to_le_bytes());
        b[8..10].copy_from_slice(&self.sqhd.to_le_bytes());
        b[10..12].copy_from_slice(&self.sqid.to_le_bytes());
        b[12..14].copy_from_slice(&self.cid.to_le_bytes());
        b[14..16].copy_from_slice(&self.status.to_raw().to_le_bytes());
        b
    }

    /// Decodes 16 wire bytes.
    pub fn decode(b: &[u8; 16]) -> Cqe {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Cqe {
            dw0: u32_at(0),
            dw1: u32_at(4),
            sqhd: u16_at(8),
            sqid: u16_at(10),
            cid: u16_at(12),
            status: Status::from_raw(u16_at(14)),
        }
    }
}

/// A completion status: status code type, status code, and the More and Do Not Retry bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// Status code type (3 bits).
    pub sct: u8,
    /// Status code.
    pub sc: u8,
    /// More status information in the error log.
    pub more: bool,
    /// Do not retry.
    pub dnr: bool,
}

impl Status {
    /// Success.
    pub const SUCCESS: Status = Status {
        sct: 0,
        sc: 0,
        more: false,
        dnr: false,
    };

    /// The status word's bits 0..16 (phase 0).
    pub fn to_raw(self) -> u16 {
        (u16::from(self.sc) << 1)
            | (u16::from(self.sct & 7) << 9)
            | (u16::from(self.more) << 14)
            | (u16::from(self.dnr) << 15)
    }

    /// From the status word (the phase bit is ignored).
    pub fn from_raw(v: u16) -> Status {
        Status {
            sc: ((v >> 1) & 0xFF) as u8,
            sct: ((v >> 9) & 7) as u8,
            more: v & (1 << 14) != 0,
            dnr: v & (1 << 15) != 0,
        }
    }

    /// Whether this is success.
    pub fn is_success(self) -> bool {
        self.sct == 0 && self.sc == 0
    }

    /// The typed code, if this implementation knows it.
    pub fn code(self) -> Option<StatusCode> {
        StatusCode::ALL
            .iter()
            .copied()
            .find(|c| c.sct_sc() == (self.sct, self.sc))
    }
}

macro_rules! status_codes {
    ($( $(#[$m:meta])* $name:ident = ($sct:expr, $sc:expr, $dnr:expr), )*) => {
        /// Status codes this implementation sends or understands, typed by (SCT, SC).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum StatusCode { $( $(#[$m])* $name, )* }

        impl StatusCode {
            /// Every code.
            pub const ALL: &'static [StatusCode] = &[ $(StatusCode::$name,)* ];

            /// (status code type, status code).
            pub fn sct_sc(self) -> (u8, u8) {
                match self { $( StatusCode::$name => ($sct, $sc), )* }
            }

            /// The status word this code completes with (DNR set where a retry cannot help).
            pub fn status(self) -> Status {
                match self { $( StatusCode::$name => Status { sct: $sct, sc: $sc, more: false, dnr: $dnr }, )* }
            }
        }
    };
}

status_codes! {
    /// Successful completion.
    Success = (0, 0x00, false),
    /// Invalid command opcode.
    InvalidOpcode = (0, 0x01, true),
    /// Invalid field in command.
    InvalidField = (0, 0x02, true),
    /// Command ID conflict.
    CidConflict = (0, 0x03, true),
    /// Data transfer error.
    DataTransferError = (0, 0x04, false),
    /// Internal error.
    InternalError = (0, 0x06, false),
    /// Command abort requested.
    AbortRequested = (0, 0x07, false),
    /// Invalid namespace or format.
    InvalidNamespace = (0, 0x0B, true),
    /// Command sequence error.
    CommandSequenceError = (0, 0x0C, true),
    /// Data SGL length invalid.
    DataSglLengthInvalid = (0, 0x0F, true),
    /// SGL descriptor type invalid.
    SglDescriptorTypeInvalid = (0, 0x11, true),
    /// SGL offset invalid.
    SglOffsetInvalid = (0, 0x16, true),
    /// Namespace is write protected.
    NamespaceWriteProtected = (0, 0x20, true),
    /// LBA out of range.
    LbaOutOfRange = (0, 0x80, true),
    /// Capacity exceeded.
    CapacityExceeded = (0, 0x81, true),
    /// Namespace not ready.
    NamespaceNotReady = (0, 0x82, false),
    /// Invalid queue identifier.
    InvalidQueueId = (1, 0x01, true),
    /// Asynchronous event request limit exceeded.
    AerLimitExceeded = (1, 0x05, true),
    /// Invalid log page.
    InvalidLogPage = (1, 0x09, true),
    /// Feature identifier not saveable.
    FeatureNotSaveable = (1, 0x0D, true),
    /// Feature not changeable.
    FeatureNotChangeable = (1, 0x0E, true),
    /// Connect: incompatible format.
    ConnectIncompatibleFormat = (1, 0x80, true),
    /// Connect: controller busy.
    ConnectControllerBusy = (1, 0x81, false),
    /// Connect: invalid parameters.
    ConnectInvalidParameters = (1, 0x82, true),
    /// Connect: invalid host.
    ConnectInvalidHost = (1, 0x84, true),
    /// Write fault.
    WriteFault = (2, 0x80, false),
    /// Unrecovered read error.
    UnrecoveredReadError = (2, 0x81, false),
    /// Compare failure.
    CompareFailure = (2, 0x85, true),
    /// Access denied.
    AccessDenied = (2, 0x86, true),
}

/// Admin command opcodes.
pub mod admin {
    /// Get Log Page.
    pub const GET_LOG_PAGE: u8 = 0x02;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Abort.
    pub const ABORT: u8 = 0x08;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
    /// Get Features.
    pub const GET_FEATURES: u8 = 0x0A;
    /// Asynchronous Event Request.
    pub const ASYNC_EVENT: u8 = 0x0C;
    /// Keep Alive.
    pub const KEEP_ALIVE: u8 = 0x18;
    /// Fabrics commands (Connect, Property Get/Set).
    pub const FABRICS: u8 = 0x7F;
}

/// NVM command set I/O opcodes.
pub mod nvm {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
    /// Compare.
    pub const COMPARE: u8 = 0x05;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// Dataset Management.
    pub const DSM: u8 = 0x09;
}

/// Feature identifiers.
pub mod feature {
    /// Arbitration.
    pub const ARBITRATION: u8 = 0x01;
    /// Power Management.
    pub const POWER_MGMT: u8 = 0x02;
    /// Temperature Threshold.
    pub const TEMP_THRESHOLD: u8 = 0x04;
    /// Error Recovery.
    pub const ERROR_RECOVERY: u8 = 0x05;
    /// Volatile Write Cache.
    pub const VOLATILE_WC: u8 = 0x06;
    /// Number of Queues.
    pub const NUM_QUEUES: u8 = 0x07;
    /// Interrupt Coalescing.
    pub const INT_COALESCING: u8 = 0x08;
    /// Interrupt Vector Configuration.
    pub const INT_VECTOR_CONFIG: u8 = 0x09;
    /// Write Atomicity Normal.
    pub const WRITE_ATOMICITY: u8 = 0x0A;
    /// Asynchronous Event Configuration.
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0B;
    /// Keep Alive Timer.
    pub const KEEP_ALIVE_TIMER: u8 = 0x0F;
    /// Host Identifier.
    pub const HOST_ID: u8 = 0x81;
}

/// Log page identifiers.
pub mod log {
    /// Error Information.
    pub const ERROR: u8 = 0x01;
    /// SMART / Health Information.
    pub const SMART: u8 = 0x02;
    /// Firmware Slot Information.
    pub const FIRMWARE_SLOT: u8 = 0x03;
    /// Changed Namespace List.
    pub const CHANGED_NS_LIST: u8 = 0x04;
    /// Commands Supported and Effects.
    pub const CMD_EFFECTS: u8 = 0x05;
    /// Discovery.
    pub const DISCOVERY: u8 = 0x70;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cqe_known_bytes() {
        let cqe = Cqe {
            dw0: 0x0102_0304,
            dw1: 0,
            sqhd: 5,
            sqid: 1,
            cid: 0xBEEF,
            status: StatusCode::LbaOutOfRange.status(),
        };
        let b = cqe.encode();
        assert_eq!(
            b,
            [4, 3, 2, 1, 0, 0, 0, 0, 5, 0, 1, 0, 0xEF, 0xBE, 0x00, 0x81]
        );
        assert_eq!(Cqe::decode(&b), cqe);
        assert_eq!(cqe.status.code(), Some(StatusCode::LbaOutOfRange));
    }

    #[test]
    fn status_word_layout() {
        // SCT 1, SC 0x84 (Connect Invalid Host), DNR.
        let s = StatusCode::ConnectInvalidHost.status();
        assert_eq!(s.to_raw(), (0x84 << 1) | (1 << 9) | (1 << 15));
        assert_eq!(Status::from_raw(s.to_raw() | 1), s);
    }

    #[test]
    fn sqe_accessors() {
        let mut sqe = Sqe::default();
        sqe.set_opcode(nvm::READ);
        sqe.set_cid(9);
        sqe.set_nsid(1);
        sqe.set_cdw(10, 0x1000);
        sqe.set_cdw(11, 1);
        sqe.set_cdw(12, 7);
        sqe.set_sgl(SglDesc {
            addr: 0,
            len: 4096,
            sgl_type: SGL_TRANSPORT,
        });
        assert_eq!(sqe.0[0], 2);
        assert_eq!(sqe.0[1], 0x40);
        assert_eq!(&sqe.0[2..8], &[9, 0, 1, 0, 0, 0]);
        assert_eq!(sqe.slba(), 0x1_0000_1000);
        assert_eq!(sqe.nlb(), 8);
        assert_eq!(sqe.0[39], 0x5A);
        assert_eq!(&sqe.0[32..36], &4096u32.to_le_bytes());
        assert_eq!(sqe.direction(), Direction::ControllerToHost);
    }
}
