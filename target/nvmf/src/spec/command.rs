//! The command decoder: a submission entry (and its host data) into a typed command.
//!
//! [`decode_io`] and [`decode_admin`] are the command decoder's fuzzing entry points; they
//! never panic and check every field a command's execution relies on (ranges that overflow,
//! DSM range lists shorter than announced, unknown opcodes).

use super::cmd::{Sqe, StatusCode, admin, nvm};
use super::fabrics::{
    ConnectCmd, ConnectData, FCTYPE_CONNECT, FCTYPE_PROPERTY_GET, FCTYPE_PROPERTY_SET, PropertyCmd,
};

/// Most ranges in one Dataset Management command.
pub const DSM_MAX_RANGES: usize = 256;

/// One Dataset Management range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DsmRange {
    /// Context attributes.
    pub cattr: u32,
    /// Length in blocks (a count, not 0-based).
    pub blocks: u32,
    /// Starting LBA.
    pub slba: u64,
}

/// An NVM command set I/O command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoCommand {
    /// Flush.
    Flush {
        /// Namespace.
        nsid: u32,
    },
    /// Read `blocks` blocks at `slba`.
    Read {
        /// Namespace.
        nsid: u32,
        /// Starting LBA.
        slba: u64,
        /// Number of blocks (a count).
        blocks: u32,
    },
    /// Write.
    Write {
        /// Namespace.
        nsid: u32,
        /// Starting LBA.
        slba: u64,
        /// Number of blocks.
        blocks: u32,
        /// Force unit access.
        fua: bool,
    },
    /// Compare the host's data with the blocks.
    Compare {
        /// Namespace.
        nsid: u32,
        /// Starting LBA.
        slba: u64,
        /// Number of blocks.
        blocks: u32,
    },
    /// Write Zeroes.
    WriteZeroes {
        /// Namespace.
        nsid: u32,
        /// Starting LBA.
        slba: u64,
        /// Number of blocks.
        blocks: u32,
        /// Deallocate where possible.
        deac: bool,
    },
    /// Dataset Management.
    Dsm {
        /// Namespace.
        nsid: u32,
        /// Deallocate attribute.
        deallocate: bool,
        /// Ranges.
        ranges: smallvec::SmallVec<[DsmRange; 4]>,
    },
}

impl IoCommand {
    /// The namespace the command addresses.
    pub fn nsid(&self) -> u32 {
        match self {
            IoCommand::Flush { nsid }
            | IoCommand::Read { nsid, .. }
            | IoCommand::Write { nsid, .. }
            | IoCommand::Compare { nsid, .. }
            | IoCommand::WriteZeroes { nsid, .. }
            | IoCommand::Dsm { nsid, .. } => *nsid,
        }
    }
}

/// Decodes an I/O command; `data` is its host data (used for DSM ranges).
///
/// # Errors
/// The status to complete the command with: Invalid Opcode, or Data SGL Length Invalid for a
/// DSM range list shorter than announced.
pub fn decode_io(sqe: &Sqe, data: &[u8]) -> Result<IoCommand, StatusCode> {
    // Fused operations (compare and write) are not supported.
    if sqe.flags() & 3 != 0 {
        return Err(StatusCode::InvalidField);
    }
    let nsid = sqe.nsid();
    let slba = sqe.slba();
    let blocks = sqe.nlb();
    Ok(match sqe.opcode() {
        nvm::FLUSH => IoCommand::Flush { nsid },
        nvm::READ => IoCommand::Read { nsid, slba, blocks },
        nvm::WRITE => IoCommand::Write {
            nsid,
            slba,
            blocks,
            fua: sqe.cdw(12) & (1 << 30) != 0,
        },
        nvm::COMPARE => IoCommand::Compare { nsid, slba, blocks },
        nvm::WRITE_ZEROES => IoCommand::WriteZeroes {
            nsid,
            slba,
            blocks,
            deac: sqe.cdw(12) & (1 << 25) != 0,
        },
        nvm::DSM => {
            let nr = (sqe.cdw(10) & 0xFF) as usize + 1;
            let bytes = data
                .get(..nr * 16)
                .ok_or(StatusCode::DataSglLengthInvalid)?;
            let ranges = bytes
                .chunks_exact(16)
                .map(|r| {
                    let mut s = [0u8; 8];
                    s.copy_from_slice(&r[8..16]);
                    DsmRange {
                        cattr: u32::from_le_bytes([r[0], r[1], r[2], r[3]]),
                        blocks: u32::from_le_bytes([r[4], r[5], r[6], r[7]]),
                        slba: u64::from_le_bytes(s),
                    }
                })
                .collect();
            IoCommand::Dsm {
                nsid,
                deallocate: sqe.cdw(11) & (1 << 2) != 0,
                ranges,
            }
        }
        _ => return Err(StatusCode::InvalidOpcode),
    })
}

/// An admin or fabrics command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// Fabrics Connect.
    Connect(ConnectCmd, ConnectData),
    /// Fabrics Property Get.
    PropertyGet(PropertyCmd),
    /// Fabrics Property Set.
    PropertySet(PropertyCmd),
    /// Identify.
    Identify {
        /// Controller or namespace structure.
        cns: u8,
        /// Namespace.
        nsid: u32,
    },
    /// Get Log Page.
    GetLogPage {
        /// Log page id.
        lid: u8,
        /// Retain asynchronous event.
        rae: bool,
        /// Bytes asked for.
        len: u64,
        /// Byte offset.
        offset: u64,
    },
    /// Get Features.
    GetFeatures {
        /// Feature id.
        fid: u8,
        /// Select (current, default, saved, capabilities).
        sel: u8,
        /// Dword 11.
        cdw11: u32,
    },
    /// Set Features.
    SetFeatures {
        /// Feature id.
        fid: u8,
        /// Save.
        save: bool,
        /// Dword 11.
        cdw11: u32,
    },
    /// Keep Alive.
    KeepAlive,
    /// Asynchronous Event Request.
    AsyncEventRequest,
    /// Abort.
    Abort {
        /// Queue of the command.
        sqid: u16,
        /// Command id.
        cid: u16,
    },
}

/// Decodes an admin (or fabrics) command; `data` is its host data (Connect data).
///
/// # Errors
/// The status to complete the command with (Invalid Opcode; Connect Invalid Parameters for
/// unreadable Connect data, whose DW0 callers build from [`ConnectData::decode`]'s error).
pub fn decode_admin(sqe: &Sqe, data: &[u8]) -> Result<AdminCommand, StatusCode> {
    let cdw10 = sqe.cdw(10);
    Ok(match sqe.opcode() {
        admin::FABRICS => match sqe.fctype() {
            FCTYPE_CONNECT => AdminCommand::Connect(
                ConnectCmd::parse(sqe),
                ConnectData::decode(data).map_err(|_| StatusCode::ConnectInvalidParameters)?,
            ),
            FCTYPE_PROPERTY_GET => AdminCommand::PropertyGet(PropertyCmd::parse(sqe)),
            FCTYPE_PROPERTY_SET => AdminCommand::PropertySet(PropertyCmd::parse(sqe)),
            _ => return Err(StatusCode::InvalidOpcode),
        },
        admin::IDENTIFY => AdminCommand::Identify {
            cns: (cdw10 & 0xFF) as u8,
            nsid: sqe.nsid(),
        },
        admin::GET_LOG_PAGE => {
            let numd = (u64::from(sqe.cdw(11) & 0xFFFF) << 16 | u64::from(cdw10 >> 16)) + 1;
            AdminCommand::GetLogPage {
                lid: (cdw10 & 0xFF) as u8,
                rae: cdw10 & (1 << 15) != 0,
                len: numd * 4,
                offset: u64::from(sqe.cdw(12)) | (u64::from(sqe.cdw(13)) << 32),
            }
        }
        admin::GET_FEATURES => AdminCommand::GetFeatures {
            fid: (cdw10 & 0xFF) as u8,
            sel: ((cdw10 >> 8) & 7) as u8,
            cdw11: sqe.cdw(11),
        },
        admin::SET_FEATURES => AdminCommand::SetFeatures {
            fid: (cdw10 & 0xFF) as u8,
            save: cdw10 & (1 << 31) != 0,
            cdw11: sqe.cdw(11),
        },
        admin::KEEP_ALIVE => AdminCommand::KeepAlive,
        admin::ASYNC_EVENT => AdminCommand::AsyncEventRequest,
        admin::ABORT => AdminCommand::Abort {
            sqid: (cdw10 & 0xFFFF) as u16,
            cid: (cdw10 >> 16) as u16,
        },
        _ => return Err(StatusCode::InvalidOpcode),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_io_commands() {
        let mut sqe = Sqe::default();
        sqe.set_opcode(nvm::WRITE);
        sqe.set_nsid(2);
        sqe.set_cdw(10, 5);
        sqe.set_cdw(12, (1 << 30) | 7);
        assert_eq!(
            decode_io(&sqe, &[]),
            Ok(IoCommand::Write {
                nsid: 2,
                slba: 5,
                blocks: 8,
                fua: true
            })
        );
        sqe.set_opcode(nvm::DSM);
        sqe.set_cdw(10, 1); // two ranges
        sqe.set_cdw(11, 4);
        let mut data = Vec::new();
        for (n, s) in [(3u32, 10u64), (1, 99)] {
            data.extend_from_slice(&0u32.to_le_bytes());
            data.extend_from_slice(&n.to_le_bytes());
            data.extend_from_slice(&s.to_le_bytes());
        }
        let Ok(IoCommand::Dsm {
            deallocate, ranges, ..
        }) = decode_io(&sqe, &data)
        else {
            panic!("DSM decodes")
        };
        assert!(deallocate);
        assert_eq!(ranges[1].slba, 99);
        assert_eq!(ranges[0].blocks, 3);
        assert_eq!(
            decode_io(&sqe, &data[..20]),
            Err(StatusCode::DataSglLengthInvalid)
        );
        sqe.set_opcode(0x7E);
        assert_eq!(decode_io(&sqe, &[]), Err(StatusCode::InvalidOpcode));
        sqe.set_opcode(nvm::COMPARE);
        sqe.set_flags(1); // first command of a fused pair
        assert_eq!(decode_io(&sqe, &[]), Err(StatusCode::InvalidField));
    }

    #[test]
    fn decodes_admin_commands() {
        let mut sqe = Sqe::default();
        sqe.set_opcode(admin::GET_LOG_PAGE);
        sqe.set_cdw(10, 0x02 | (1 << 15) | (127 << 16));
        sqe.set_cdw(12, 8);
        assert_eq!(
            decode_admin(&sqe, &[]),
            Ok(AdminCommand::GetLogPage {
                lid: 2,
                rae: true,
                len: 512,
                offset: 8
            })
        );
        sqe.set_opcode(admin::FABRICS);
        sqe.0[4] = FCTYPE_CONNECT;
        assert_eq!(
            decode_admin(&sqe, &[0; 10]),
            Err(StatusCode::ConnectInvalidParameters)
        );
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 64..=64),
                                data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1100)) {
            let mut s = [0u8; 64];
            s.copy_from_slice(&raw);
            let sqe = Sqe(s);
            let _ = decode_io(&sqe, &data);
            let _ = decode_admin(&sqe, &data);
        }
    }
}
