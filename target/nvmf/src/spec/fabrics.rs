//! Fabrics commands (NVMe over Fabrics 1.1 §3): Connect and its 1024-byte data, Property Get and
//! Property Set, and the controller properties.

use super::cmd::Sqe;

/// Fabrics command type: Property Set.
pub const FCTYPE_PROPERTY_SET: u8 = 0x00;
/// Fabrics command type: Connect.
pub const FCTYPE_CONNECT: u8 = 0x01;
/// Fabrics command type: Property Get.
pub const FCTYPE_PROPERTY_GET: u8 = 0x04;

/// Length of the Connect command's data.
pub const CONNECT_DATA_LEN: usize = 1024;

/// Connect attribute: disable SQ flow control.
pub const CATTR_DISABLE_SQFLOW: u8 = 0x04;

/// The well-known discovery subsystem NQN.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// Property offsets.
pub mod prop {
    /// Controller Capabilities (8 bytes).
    pub const CAP: u32 = 0x00;
    /// Version (4 bytes).
    pub const VS: u32 = 0x08;
    /// Controller Configuration (4 bytes).
    pub const CC: u32 = 0x14;
    /// Controller Status (4 bytes).
    pub const CSTS: u32 = 0x1C;
    /// NVM Subsystem Reset (4 bytes).
    pub const NSSR: u32 = 0x20;
}

/// The Connect command's fields (SQE dwords 10-12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectCmd {
    /// Record format (0).
    pub recfmt: u16,
    /// Queue id (0 = admin).
    pub qid: u16,
    /// Submission queue size (0-based).
    pub sqsize: u16,
    /// Connect attributes.
    pub cattr: u8,
    /// Keep-alive timeout in milliseconds (admin queue only).
    pub kato: u32,
}

impl ConnectCmd {
    /// Reads the fields from an SQE.
    pub fn parse(sqe: &Sqe) -> ConnectCmd {
        let b = &sqe.0;
        ConnectCmd {
            recfmt: u16::from_le_bytes([b[40], b[41]]),
            qid: u16::from_le_bytes([b[42], b[43]]),
            sqsize: u16::from_le_bytes([b[44], b[45]]),
            cattr: b[46],
            kato: sqe.cdw(12),
        }
    }

    /// Writes the fields into an SQE (and the fabrics opcode and type).
    pub fn write(&self, sqe: &mut Sqe) {
        sqe.set_opcode(super::cmd::admin::FABRICS);
        sqe.0[4] = FCTYPE_CONNECT;
        sqe.0[40..42].copy_from_slice(&self.recfmt.to_le_bytes());
        sqe.0[42..44].copy_from_slice(&self.qid.to_le_bytes());
        sqe.0[44..46].copy_from_slice(&self.sqsize.to_le_bytes());
        sqe.0[46] = self.cattr;
        sqe.set_cdw(12, self.kato);
    }
}

/// Why Connect data could not be read.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum ConnectDataError {
    /// connect data is {0} bytes, expected 1024
    Length(usize),
    /// the NQN at byte {0} is not NUL-terminated printable ASCII
    BadNqn(u32),
}

/// The Connect command's 1024-byte data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectData {
    /// Host identifier.
    pub hostid: [u8; 16],
    /// Controller id (0xFFFF: any, for the admin queue in the dynamic model).
    pub cntlid: u16,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Host NQN.
    pub hostnqn: String,
}

fn nqn_at(b: &[u8], at: usize) -> Result<String, ConnectDataError> {
    let bad = || ConnectDataError::BadNqn(u32::try_from(at).unwrap_or(u32::MAX));
    let field = b.get(at..at + 256).ok_or_else(bad)?;
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    let s = &field[..end];
    if s.is_empty() || !s.iter().all(|c| c.is_ascii_graphic()) {
        return Err(bad());
    }
    String::from_utf8(s.to_vec()).map_err(|_| bad())
}

impl ConnectData {
    /// Decodes Connect data; the command decoder's fuzzing entry point for it.
    ///
    /// # Errors
    /// Wrong length, or an NQN that is empty or not printable ASCII.
    pub fn decode(b: &[u8]) -> Result<ConnectData, ConnectDataError> {
        if b.len() != CONNECT_DATA_LEN {
            return Err(ConnectDataError::Length(b.len()));
        }
        let mut hostid = [0u8; 16];
        hostid.copy_from_slice(&b[..16]);
        Ok(ConnectData {
            hostid,
            cntlid: u16::from_le_bytes([b[16], b[17]]),
            subnqn: nqn_at(b, 256)?,
            hostnqn: nqn_at(b, 512)?,
        })
    }

    /// The 1024 wire bytes (NQNs longer than 255 bytes are cut).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; CONNECT_DATA_LEN];
        b[..16].copy_from_slice(&self.hostid);
        b[16..18].copy_from_slice(&self.cntlid.to_le_bytes());
        let n = self.subnqn.len().min(255);
        b[256..256 + n].copy_from_slice(&self.subnqn.as_bytes()[..n]);
        let n = self.hostnqn.len().min(255);
        b[512..512 + n].copy_from_slice(&self.hostnqn.as_bytes()[..n]);
        b
    }
}

/// Property Get / Set fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyCmd {
    /// 8-byte property (ATTRIB bits 0-2 = 1) rather than 4.
    pub eight: bool,
    /// Property offset.
    pub offset: u32,
    /// Value (Set only).
    pub value: u64,
}

impl PropertyCmd {
    /// Reads the fields from an SQE.
    pub fn parse(sqe: &Sqe) -> PropertyCmd {
        PropertyCmd {
            eight: sqe.0[40] & 7 == 1,
            offset: sqe.cdw(11),
            value: u64::from(sqe.cdw(12)) | (u64::from(sqe.cdw(13)) << 32),
        }
    }

    /// Writes a Property Get (`set == false`) or Set into an SQE.
    pub fn write(&self, sqe: &mut Sqe, set: bool) {
        sqe.set_opcode(super::cmd::admin::FABRICS);
        sqe.0[4] = if set {
            FCTYPE_PROPERTY_SET
        } else {
            FCTYPE_PROPERTY_GET
        };
        sqe.0[40] = u8::from(self.eight);
        sqe.set_cdw(11, self.offset);
        if set {
            sqe.set_cdw(12, self.value as u32);
            sqe.set_cdw(13, (self.value >> 32) as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_known_layout() {
        let mut sqe = Sqe::default();
        ConnectCmd {
            recfmt: 0,
            qid: 3,
            sqsize: 127,
            cattr: CATTR_DISABLE_SQFLOW,
            kato: 15000,
        }
        .write(&mut sqe);
        assert_eq!(sqe.0[0], 0x7F);
        assert_eq!(sqe.0[4], 0x01);
        assert_eq!(&sqe.0[40..48], &[0, 0, 3, 0, 127, 0, 4, 0]);
        assert_eq!(&sqe.0[48..52], &15000u32.to_le_bytes());
        let c = ConnectCmd::parse(&sqe);
        assert_eq!((c.qid, c.sqsize, c.kato), (3, 127, 15000));
    }

    #[test]
    fn connect_data_round_trip_and_errors() {
        let d = ConnectData {
            hostid: [7; 16],
            cntlid: 0xFFFF,
            subnqn: DISCOVERY_NQN.into(),
            hostnqn: "nqn.2014-08.org.nvmexpress:uuid:1".into(),
        };
        let b = d.encode();
        assert_eq!(&b[16..18], &[0xFF, 0xFF]);
        assert_eq!(&b[256..260], b"nqn.");
        assert_eq!(ConnectData::decode(&b), Ok(d));
        assert_eq!(
            ConnectData::decode(&b[..100]),
            Err(ConnectDataError::Length(100))
        );
        let mut bad = b.clone();
        bad[512] = 0;
        assert_eq!(
            ConnectData::decode(&bad),
            Err(ConnectDataError::BadNqn(512))
        );
    }

    #[test]
    fn property_layout() {
        let mut sqe = Sqe::default();
        PropertyCmd {
            eight: false,
            offset: prop::CC,
            value: 0x0046_0001,
        }
        .write(&mut sqe, true);
        assert_eq!(sqe.0[4], 0);
        assert_eq!(&sqe.0[44..48], &0x14u32.to_le_bytes());
        assert_eq!(&sqe.0[48..52], &0x0046_0001u32.to_le_bytes());
        assert_eq!(PropertyCmd::parse(&sqe).value, 0x0046_0001);
    }
}
