//! SCSI logical units (SPC-4 / SBC-3) over Basalt block devices.
//!
//! Transport independent: the iSCSI target (and later others) hands each command's CDB, its
//! data-out bytes and its expected transfer length to a [`LuChannel`] on the reactor that owns
//! the connection, and gets back a [`Response`] (status, sense, data-in, residual).
//!
//! * [`cdb`]: the CDB decoder (pure; fuzzed) and the table of supported commands.
//! * [`sense`]: sense data (fixed and descriptor formats) and the ASC/ASCQ catalogue used here.
//! * [`LogicalUnit`]: one per exported block device, shared by every core (`Send + Sync`): its
//!   identity, mode pages, reservations (SPC-2 RESERVE/RELEASE and persistent reservations),
//!   unit attentions per I_T nexus and sanitize state. See [`lu`] for what is shared how.
//! * [`LuChannel`]: the per-core handle (`Rc`) that executes commands with the core's bdev
//!   [`basalt_bdev::IoChannel`] and the core's registered buffer pool. See [`exec`] for the
//!   order in which a command is checked.
//! * [`report_luns`] and [`no_such_lun`]: the answers that belong to the target.
//!
//! # The data path
//! READ and WRITE (6/10/12/16) take no lock and allocate nothing besides their registered
//! buffers when no unit attention, reservation, sanitize or COMPARE AND WRITE is pending: those
//! are announced by atomics of the logical unit, read once per command. Reads return the
//! buffers the bdev filled ([`DataIn::Bufs`]); writes copy the data-out bytes into pool buffers
//! and write them in one request. COMPARE AND WRITE and ORWRITE are atomic against writes from
//! every core through the protocol described in [`atomic`].
//!
//! # What a transport must do
//! * Call [`LogicalUnit::nexus_added`] when a session can address the LU and
//!   [`LogicalUnit::nexus_removed`] when it ends; [`LogicalUnit::reset`] and
//!   [`LogicalUnit::task_set_cleared`] after the matching task management functions.
//! * Deliver every data-out byte up to the expected transfer length in [`Command::data_out`]
//!   and set [`Command::read`] / [`Command::write`] from the command's flags: data-in is
//!   produced only with `read`, data-out is used only with `write`.
//! * Answer REPORT LUNS itself with [`report_luns`], and commands to unknown LUNs with
//!   [`no_such_lun`].
//!
//! ```
//! use std::sync::Arc;
//! use basalt_bdev::modules::malloc::MallocBdev;
//! use basalt_engine::{Engine, EngineConfig};
//! use basalt_scsi::{Command, LogicalUnit, LuConfig, Nexus, TaskAttr};
//!
//! let mut cfg = EngineConfig::with_cores(1);
//! cfg.pin = false;
//! let engine = Engine::start(&cfg).expect("io_uring available");
//! let lu = LogicalUnit::new(LuConfig {
//!     bdev: Arc::new(MallocBdev::new("ram0", 512, 2048).expect("valid geometry")),
//!     uuid: [7; 16],
//!     serial: "0001".into(),
//!     vendor: "BASALT".into(),
//!     product: "BDEV".into(),
//!     revision: "0.1".into(),
//!     read_only: false,
//!     thin: true,
//!     unmap_granularity: 1,
//! });
//! let status = engine.reactor(0).block_on(move || async move {
//!     let ch = lu.open().expect("channel");
//!     let nexus = Nexus {
//!         id: 1,
//!         initiator_name: "iqn.2024-01.example:host".into(),
//!         initiator_port: "iqn.2024-01.example:host,i,0x000000000001".into(),
//!         target_port: "iqn.2024-01.example:target,t,0x0001".into(),
//!         relative_port: 1,
//!     };
//!     let cdb = [0x00, 0, 0, 0, 0, 0]; // TEST UNIT READY
//!     let cmd = Command {
//!         nexus: &nexus,
//!         cdb: &cdb,
//!         attr: TaskAttr::Simple,
//!         expected_len: 0,
//!         read: false,
//!         write: false,
//!         data_out: Vec::new(),
//!     };
//!     ch.execute(cmd).await.status
//! }).expect("reactor running");
//! assert_eq!(status, 0x00);
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod atomic;
mod bufs;
pub mod cdb;
pub mod exec;
pub mod inquiry;
pub mod limits;
pub mod lu;
mod luns;
pub mod mode;
pub mod pr;
pub mod reply;
mod rsoc;
mod sanitize;
pub mod sense;
mod xcopy;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use basalt_bdev::Bdev;

pub use exec::LuChannel;
pub use lu::{CopyTargets, LogicalUnit, TaskAborter};
pub use luns::{encode_lun, no_such_lun, report_luns};

/// SCSI status byte values (SAM-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// GOOD.
    Good = 0x00,
    /// CHECK CONDITION (sense data follows).
    CheckCondition = 0x02,
    /// CONDITION MET (PRE-FETCH).
    ConditionMet = 0x04,
    /// BUSY.
    Busy = 0x08,
    /// RESERVATION CONFLICT.
    ReservationConflict = 0x18,
    /// TASK SET FULL.
    TaskSetFull = 0x28,
    /// TASK ABORTED.
    TaskAborted = 0x40,
}

/// Task attribute of a command (SAM-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskAttr {
    /// SIMPLE (and untagged).
    #[default]
    Simple,
    /// ORDERED.
    Ordered,
    /// HEAD OF QUEUE.
    HeadOfQueue,
    /// ACA.
    Aca,
}

/// One I_T nexus (an initiator port talking to a target port), as the transport names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nexus {
    /// Unique for the life of the process (the transport allocates it; never reused).
    pub id: u64,
    /// The initiator's SCSI name (iSCSI: the InitiatorName, e.g. `iqn.1994-05.com.redhat:abc`).
    pub initiator_name: String,
    /// The initiator port identifier (iSCSI: `<InitiatorName>,i,0x<ISID as 12 hex digits>`).
    pub initiator_port: String,
    /// The target port identifier (iSCSI: `<TargetName>,t,0x<TPGT as 4 hex digits>`).
    pub target_port: String,
    /// RELATIVE TARGET PORT IDENTIFIER (iSCSI: the portal group tag), reported in VPD 0x83.
    pub relative_port: u16,
}

/// What a logical unit reports about itself.
#[derive(Debug, Clone)]
pub struct LuConfig {
    /// The block device behind the LU.
    pub bdev: Arc<dyn Bdev>,
    /// Stable identity: NAA/EUI/UUID designators in VPD 0x83 derive from it (a volume's UUID;
    /// for raw bdevs a name-based UUID chosen by the caller).
    pub uuid: [u8; 16],
    /// Unit serial number (VPD 0x80), printable ASCII.
    pub serial: String,
    /// T10 vendor identification (8 bytes, padded): `BASALT`.
    pub vendor: String,
    /// Product identification (16 bytes, padded), e.g. `VOLUME` or `BDEV`.
    pub product: String,
    /// Product revision level (4 bytes, padded).
    pub revision: String,
    /// Writes (and unmaps, write-same, ...) fail with DATA PROTECT / WRITE PROTECTED.
    pub read_only: bool,
    /// Thin provisioned: READ CAPACITY(16) LBPME=1, VPD 0xB2 reports it; UNMAP and WRITE SAME
    /// with UNMAP deallocate. (True when the bdev supports unmap.)
    pub thin: bool,
    /// Optimal unmap granularity in logical blocks (VPD 0xB0), e.g. a volume's 16 KiB
    /// subcluster; 1 when the device has none. Also reported as the OPTIMAL TRANSFER LENGTH
    /// GRANULARITY.
    pub unmap_granularity: u32,
}

/// Data the initiator sent with a command (iSCSI: immediate, unsolicited and solicited data,
/// gathered in order). Exactly the bytes received, at most the expected transfer length.
pub type DataOut = Vec<u8>;

/// A command as the transport delivers it.
#[derive(Debug)]
pub struct Command<'a> {
    /// The nexus it arrived on.
    pub nexus: &'a Nexus,
    /// The CDB (6 to 16 bytes; iSCSI extended CDBs arrive concatenated up to 260 bytes).
    pub cdb: &'a [u8],
    /// Task attribute.
    pub attr: TaskAttr,
    /// Expected data transfer length from the transport (iSCSI EDTL), in bytes.
    pub expected_len: u32,
    /// True when the transport says data flows to the initiator (iSCSI R bit).
    pub read: bool,
    /// True when the transport says data flows from the initiator (iSCSI W bit).
    pub write: bool,
    /// Data-out bytes (empty unless `write`).
    pub data_out: DataOut,
}

/// Residual reporting (SAM-5 / RFC 7143 §11.4.5): the transport sets its flags from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Residual {
    /// The command moved exactly the expected length.
    #[default]
    None,
    /// The command wanted to move more than the expected length; this many bytes were not moved.
    Overflow(u32),
    /// The command moved less than the expected length by this many bytes.
    Underflow(u32),
}

/// The outcome of a command.
#[derive(Debug, Default)]
pub struct Response {
    /// Status byte.
    pub status: u8,
    /// Sense data (already encoded, fixed or descriptor format) when status is CHECK
    /// CONDITION; empty otherwise.
    pub sense: Vec<u8>,
    /// Data-in for the initiator, already truncated to the expected length.
    pub data_in: DataIn,
    /// Residual to report.
    pub residual: Residual,
}

/// Data-in produced by a command: either bytes built by the LU (INQUIRY, MODE SENSE, ...) or
/// the registered buffers a read filled (no copy on the read path).
#[derive(Debug)]
pub enum DataIn {
    /// Bytes built in memory.
    Bytes(Vec<u8>),
    /// Buffers filled by the block device, in order; only the first `len` bytes count.
    Bufs(basalt_bdev::IoVecs, usize),
}

impl Default for DataIn {
    fn default() -> Self {
        DataIn::Bytes(Vec::new())
    }
}

impl DataIn {
    /// Bytes of data-in.
    pub fn len(&self) -> usize {
        match self {
            DataIn::Bytes(v) => v.len(),
            DataIn::Bufs(_, len) => *len,
        }
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, as slices in order (exactly `len()` bytes in all).
    pub fn slices(&self) -> Vec<&[u8]> {
        match self {
            DataIn::Bytes(v) => vec![v.as_slice()],
            DataIn::Bufs(bufs, len) => {
                let mut left = *len;
                let mut out = Vec::with_capacity(bufs.len());
                for b in bufs.iter() {
                    if left == 0 {
                        break;
                    }
                    let n = left.min(b.len());
                    out.push(&b[..n]);
                    left -= n;
                }
                out
            }
        }
    }
}

/// Kinds of reset a transport's task management asks for (SAM-5 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetKind {
    /// LOGICAL UNIT RESET.
    LogicalUnit,
    /// TARGET WARM RESET (every LU of the target).
    TargetWarm,
    /// TARGET COLD RESET (every LU of the target; power-on semantics).
    TargetCold,
}
