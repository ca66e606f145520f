//! Sense data (SPC-4 §4.5): the sense keys, the ASC/ASCQ pairs this crate reports, and the two
//! encodings, fixed (response code 70h) and descriptor (72h).
//!
//! A [`Sense`] is built where an error is found and encoded once, when the response is built:
//! the D_SENSE bit of the logical unit's control mode page picks the format (REQUEST SENSE picks
//! it with its DESC bit). Both encodings carry the INFORMATION field (VALID set) and the SENSE
//! KEY SPECIFIC field (a field pointer for ILLEGAL REQUEST, a progress indication for NOT READY)
//! when the sense has them. [`Sense::parse`] reads either format back (tests, and the fuzzer's
//! round trip).

/// Sense keys (SPC-4 table 48).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SenseKey {
    /// NO SENSE.
    NoSense = 0x0,
    /// RECOVERED ERROR.
    RecoveredError = 0x1,
    /// NOT READY.
    NotReady = 0x2,
    /// MEDIUM ERROR.
    MediumError = 0x3,
    /// HARDWARE ERROR.
    HardwareError = 0x4,
    /// ILLEGAL REQUEST.
    IllegalRequest = 0x5,
    /// UNIT ATTENTION.
    UnitAttention = 0x6,
    /// DATA PROTECT.
    DataProtect = 0x7,
    /// BLANK CHECK.
    BlankCheck = 0x8,
    /// Vendor specific.
    VendorSpecific = 0x9,
    /// COPY ABORTED.
    CopyAborted = 0xA,
    /// ABORTED COMMAND.
    AbortedCommand = 0xB,
    /// VOLUME OVERFLOW.
    VolumeOverflow = 0xD,
    /// MISCOMPARE.
    Miscompare = 0xE,
}

impl SenseKey {
    /// The key for a 4-bit value; `None` for the reserved values 0Ch and 0Fh.
    pub fn from_u8(v: u8) -> Option<SenseKey> {
        Some(match v {
            0x0 => SenseKey::NoSense,
            0x1 => SenseKey::RecoveredError,
            0x2 => SenseKey::NotReady,
            0x3 => SenseKey::MediumError,
            0x4 => SenseKey::HardwareError,
            0x5 => SenseKey::IllegalRequest,
            0x6 => SenseKey::UnitAttention,
            0x7 => SenseKey::DataProtect,
            0x8 => SenseKey::BlankCheck,
            0x9 => SenseKey::VendorSpecific,
            0xA => SenseKey::CopyAborted,
            0xB => SenseKey::AbortedCommand,
            0xD => SenseKey::VolumeOverflow,
            0xE => SenseKey::Miscompare,
            _ => return None,
        })
    }
}

/// An ADDITIONAL SENSE CODE and its QUALIFIER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Asc(pub u8, pub u8);

#[allow(missing_docs)] // each constant is named after its SPC-4 Annex D text
impl Asc {
    pub const NO_ADDITIONAL_SENSE: Asc = Asc(0x00, 0x00);
    pub const LUN_NOT_READY: Asc = Asc(0x04, 0x00);
    pub const SANITIZE_IN_PROGRESS: Asc = Asc(0x04, 0x1B);
    pub const UNREACHABLE_COPY_TARGET: Asc = Asc(0x08, 0x04);
    pub const WRITE_ERROR: Asc = Asc(0x0C, 0x00);
    pub const COPY_TARGET_DEVICE_NOT_REACHABLE: Asc = Asc(0x0D, 0x02);
    pub const INVALID_FIELD_IN_INFORMATION_UNIT: Asc = Asc(0x0E, 0x03);
    pub const UNRECOVERED_READ_ERROR: Asc = Asc(0x11, 0x00);
    pub const PARAMETER_LIST_LENGTH_ERROR: Asc = Asc(0x1A, 0x00);
    pub const MISCOMPARE_DURING_VERIFY: Asc = Asc(0x1D, 0x00);
    pub const INVALID_COMMAND_OPERATION_CODE: Asc = Asc(0x20, 0x00);
    pub const LBA_OUT_OF_RANGE: Asc = Asc(0x21, 0x00);
    pub const INVALID_FIELD_IN_CDB: Asc = Asc(0x24, 0x00);
    pub const LOGICAL_UNIT_NOT_SUPPORTED: Asc = Asc(0x25, 0x00);
    pub const INVALID_FIELD_IN_PARAMETER_LIST: Asc = Asc(0x26, 0x00);
    pub const INVALID_RELEASE_OF_PERSISTENT_RESERVATION: Asc = Asc(0x26, 0x04);
    pub const TOO_MANY_TARGET_DESCRIPTORS: Asc = Asc(0x26, 0x06);
    pub const UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE: Asc = Asc(0x26, 0x07);
    pub const TOO_MANY_SEGMENT_DESCRIPTORS: Asc = Asc(0x26, 0x08);
    pub const UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE: Asc = Asc(0x26, 0x09);
    pub const WRITE_PROTECTED: Asc = Asc(0x27, 0x00);
    pub const SPACE_ALLOCATION_FAILED_WRITE_PROTECT: Asc = Asc(0x27, 0x07);
    pub const POWER_ON_RESET_OR_BUS_DEVICE_RESET: Asc = Asc(0x29, 0x00);
    pub const POWER_ON_OCCURRED: Asc = Asc(0x29, 0x01);
    pub const SCSI_BUS_RESET_OCCURRED: Asc = Asc(0x29, 0x02);
    pub const BUS_DEVICE_RESET_FUNCTION_OCCURRED: Asc = Asc(0x29, 0x03);
    pub const MODE_PARAMETERS_CHANGED: Asc = Asc(0x2A, 0x01);
    pub const RESERVATIONS_PREEMPTED: Asc = Asc(0x2A, 0x03);
    pub const RESERVATIONS_RELEASED: Asc = Asc(0x2A, 0x04);
    pub const REGISTRATIONS_PREEMPTED: Asc = Asc(0x2A, 0x05);
    pub const CAPACITY_DATA_HAS_CHANGED: Asc = Asc(0x2A, 0x09);
    pub const COMMANDS_CLEARED_BY_ANOTHER_INITIATOR: Asc = Asc(0x2F, 0x00);
    pub const SANITIZE_COMMAND_FAILED: Asc = Asc(0x31, 0x03);
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: Asc = Asc(0x39, 0x00);
    pub const INTERNAL_TARGET_FAILURE: Asc = Asc(0x44, 0x00);
    pub const DATA_PHASE_ERROR: Asc = Asc(0x4B, 0x00);
    pub const MEDIUM_REMOVAL_PREVENTED: Asc = Asc(0x53, 0x02);
}

/// The SENSE KEY SPECIFIC field (SPC-4 §4.5.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenseKeySpecific {
    /// ILLEGAL REQUEST: which byte (and bit) of the CDB or parameter list is wrong.
    FieldPointer {
        /// True: the CDB (C/D = 1); false: the parameter data.
        cdb: bool,
        /// Byte offset of the field.
        byte: u16,
        /// Bit of that byte (the field's most significant bit), if given.
        bit: Option<u8>,
    },
    /// NOT READY (for example a sanitize in progress): fraction done, in 65536ths.
    Progress(u16),
}

impl SenseKeySpecific {
    fn encode(&self) -> [u8; 3] {
        match *self {
            SenseKeySpecific::FieldPointer { cdb, byte, bit } => {
                let mut b0 = 0x80;
                if cdb {
                    b0 |= 0x40;
                }
                if let Some(bit) = bit {
                    b0 |= 0x08 | (bit & 0x07);
                }
                let [hi, lo] = byte.to_be_bytes();
                [b0, hi, lo]
            }
            SenseKeySpecific::Progress(p) => {
                let [hi, lo] = p.to_be_bytes();
                [0x80, hi, lo]
            }
        }
    }

    fn decode(key: SenseKey, b: [u8; 3]) -> Option<SenseKeySpecific> {
        if b[0] & 0x80 == 0 {
            return None;
        }
        let v = u16::from_be_bytes([b[1], b[2]]);
        Some(match key {
            SenseKey::NotReady | SenseKey::NoSense => SenseKeySpecific::Progress(v),
            _ => SenseKeySpecific::FieldPointer {
                cdb: b[0] & 0x40 != 0,
                byte: v,
                bit: (b[0] & 0x08 != 0).then_some(b[0] & 0x07),
            },
        })
    }
}

/// One sense datum, before encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    /// Sense key.
    pub key: SenseKey,
    /// ASC and ASCQ.
    pub asc: Asc,
    /// INFORMATION field (an LBA, or a miscompare offset), reported with VALID set.
    pub information: Option<u64>,
    /// SENSE KEY SPECIFIC field.
    pub specific: Option<SenseKeySpecific>,
}

/// Length of fixed-format sense data as this crate builds it.
pub const FIXED_LEN: usize = 18;

impl Sense {
    /// A sense with only key and ASC/ASCQ.
    pub const fn new(key: SenseKey, asc: Asc) -> Sense {
        Sense {
            key,
            asc,
            information: None,
            specific: None,
        }
    }

    /// ILLEGAL REQUEST / INVALID FIELD IN CDB pointing at `byte` (and `bit`).
    pub const fn invalid_field_in_cdb(byte: u16, bit: Option<u8>) -> Sense {
        Sense {
            key: SenseKey::IllegalRequest,
            asc: Asc::INVALID_FIELD_IN_CDB,
            information: None,
            specific: Some(SenseKeySpecific::FieldPointer {
                cdb: true,
                byte,
                bit,
            }),
        }
    }

    /// ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST pointing at `byte` (and `bit`).
    pub const fn invalid_field_in_param(byte: u16, bit: Option<u8>) -> Sense {
        Sense {
            key: SenseKey::IllegalRequest,
            asc: Asc::INVALID_FIELD_IN_PARAMETER_LIST,
            information: None,
            specific: Some(SenseKeySpecific::FieldPointer {
                cdb: false,
                byte,
                bit,
            }),
        }
    }

    /// ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE (field pointer at byte 0).
    pub const fn invalid_opcode() -> Sense {
        Sense {
            key: SenseKey::IllegalRequest,
            asc: Asc::INVALID_COMMAND_OPERATION_CODE,
            information: None,
            specific: Some(SenseKeySpecific::FieldPointer {
                cdb: true,
                byte: 0,
                bit: Some(7),
            }),
        }
    }

    /// ILLEGAL REQUEST / LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const fn lba_out_of_range() -> Sense {
        Sense::new(SenseKey::IllegalRequest, Asc::LBA_OUT_OF_RANGE)
    }

    /// ILLEGAL REQUEST / PARAMETER LIST LENGTH ERROR.
    pub const fn parameter_list_length() -> Sense {
        Sense::new(SenseKey::IllegalRequest, Asc::PARAMETER_LIST_LENGTH_ERROR)
    }

    /// DATA PROTECT / WRITE PROTECTED.
    pub const fn write_protected() -> Sense {
        Sense::new(SenseKey::DataProtect, Asc::WRITE_PROTECTED)
    }

    /// MISCOMPARE / MISCOMPARE DURING VERIFY OPERATION, INFORMATION = byte offset of the first
    /// byte that differs.
    pub const fn miscompare(offset: u64) -> Sense {
        Sense {
            key: SenseKey::Miscompare,
            asc: Asc::MISCOMPARE_DURING_VERIFY,
            information: Some(offset),
            specific: None,
        }
    }

    /// UNIT ATTENTION with `asc`.
    pub const fn unit_attention(asc: Asc) -> Sense {
        Sense::new(SenseKey::UnitAttention, asc)
    }

    /// The same sense with the INFORMATION field set.
    pub const fn with_information(mut self, information: u64) -> Sense {
        self.information = Some(information);
        self
    }

    /// Encodes in descriptor format (72h) when `descriptor`, else fixed format (70h).
    pub fn encode(&self, descriptor: bool) -> Vec<u8> {
        if descriptor {
            self.encode_descriptor()
        } else {
            self.encode_fixed().to_vec()
        }
    }

    /// Fixed format, 18 bytes. An INFORMATION value above 32 bits does not fit: VALID stays 0
    /// and the field is zero (SPC-4 §4.5.3).
    pub fn encode_fixed(&self) -> [u8; FIXED_LEN] {
        let mut b = [0u8; FIXED_LEN];
        b[0] = 0x70;
        b[2] = self.key as u8;
        if let Some(info) = self.information
            && let Ok(info) = u32::try_from(info)
        {
            b[0] |= 0x80;
            b[3..7].copy_from_slice(&info.to_be_bytes());
        }
        b[7] = (FIXED_LEN - 8) as u8;
        b[12] = self.asc.0;
        b[13] = self.asc.1;
        if let Some(s) = &self.specific {
            b[15..18].copy_from_slice(&s.encode());
        }
        b
    }

    /// Descriptor format: header, then an information descriptor (00h) and a sense key specific
    /// descriptor (02h) when present.
    pub fn encode_descriptor(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + 12 + 8);
        b.extend_from_slice(&[0x72, self.key as u8, self.asc.0, self.asc.1, 0, 0, 0, 0]);
        if let Some(info) = self.information {
            b.extend_from_slice(&[0x00, 0x0A, 0x80, 0x00]);
            b.extend_from_slice(&info.to_be_bytes());
        }
        if let Some(s) = &self.specific {
            b.extend_from_slice(&[0x02, 0x06, 0x00, 0x00]);
            b.extend_from_slice(&s.encode());
            b.push(0);
        }
        b[7] = (b.len() - 8) as u8;
        b
    }

    /// Parses fixed or descriptor sense data (current or deferred). `None` for anything else
    /// or for truncated data.
    pub fn parse(b: &[u8]) -> Option<Sense> {
        let code = b.first()? & 0x7F;
        match code {
            0x70 | 0x71 => {
                let key = SenseKey::from_u8(b.get(2)? & 0x0F)?;
                let asc = Asc(*b.get(12)?, *b.get(13)?);
                let information = (b[0] & 0x80 != 0)
                    .then(|| u64::from(u32::from_be_bytes([b[3], b[4], b[5], b[6]])));
                let specific = match b.get(15..18) {
                    Some(s) => SenseKeySpecific::decode(key, [s[0], s[1], s[2]]),
                    None => None,
                };
                Some(Sense {
                    key,
                    asc,
                    information,
                    specific,
                })
            }
            0x72 | 0x73 => {
                let key = SenseKey::from_u8(b.get(1)? & 0x0F)?;
                let asc = Asc(*b.get(2)?, *b.get(3)?);
                let add = usize::from(*b.get(7)?);
                let end = 8usize.checked_add(add)?;
                let descs = b.get(8..end)?;
                let mut sense = Sense::new(key, asc);
                let mut at = 0usize;
                while at < descs.len() {
                    let ty = descs[at];
                    let len = usize::from(*descs.get(at + 1)?);
                    let body = descs.get(at + 2..at + 2 + len)?;
                    match ty {
                        0x00 if len >= 10 && body[0] & 0x80 != 0 => {
                            let mut v = [0u8; 8];
                            v.copy_from_slice(&body[2..10]);
                            sense.information = Some(u64::from_be_bytes(v));
                        }
                        0x02 if len >= 5 => {
                            sense.specific =
                                SenseKeySpecific::decode(key, [body[2], body[3], body[4]]);
                        }
                        _ => {}
                    }
                    at += 2 + len;
                }
                Some(sense)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format_bytes_match_spc4() {
        let s = Sense::invalid_field_in_cdb(2, Some(5));
        let b = s.encode_fixed();
        assert_eq!(
            b,
            [
                0x70,
                0,
                0x05,
                0,
                0,
                0,
                0,
                10,
                0,
                0,
                0,
                0,
                0x24,
                0x00,
                0,
                0xC8 | 5,
                0x00,
                0x02
            ]
        );
        assert_eq!(Sense::parse(&b), Some(s));
    }

    #[test]
    fn fixed_format_information_sets_valid() {
        let s = Sense::miscompare(0x1234_5678);
        let b = s.encode_fixed();
        assert_eq!(b[0], 0xF0);
        assert_eq!(b[2], 0x0E);
        assert_eq!(&b[3..7], &[0x12, 0x34, 0x56, 0x78]);
        assert_eq!((b[12], b[13]), (0x1D, 0x00));
        assert_eq!(Sense::parse(&b), Some(s));
    }

    #[test]
    fn fixed_format_drops_a_64_bit_information() {
        let s = Sense::lba_out_of_range().with_information(1 << 40);
        let b = s.encode_fixed();
        assert_eq!(b[0], 0x70, "VALID must stay clear");
        assert_eq!(&b[3..7], &[0, 0, 0, 0]);
    }

    #[test]
    fn descriptor_format_carries_information_and_field_pointer() {
        let s = Sense {
            key: SenseKey::IllegalRequest,
            asc: Asc::INVALID_FIELD_IN_PARAMETER_LIST,
            information: Some(1 << 40),
            specific: Some(SenseKeySpecific::FieldPointer {
                cdb: false,
                byte: 20,
                bit: None,
            }),
        };
        let b = s.encode_descriptor();
        assert_eq!(&b[..8], &[0x72, 0x05, 0x26, 0x00, 0, 0, 0, 20]);
        assert_eq!(&b[8..20], &[0x00, 0x0A, 0x80, 0x00, 0, 0, 1, 0, 0, 0, 0, 0]);
        assert_eq!(&b[20..28], &[0x02, 0x06, 0, 0, 0x80, 0x00, 20, 0]);
        assert_eq!(Sense::parse(&b), Some(s));
    }

    #[test]
    fn descriptor_format_without_descriptors_is_eight_bytes() {
        let b = Sense::write_protected().encode(true);
        assert_eq!(b, vec![0x72, 0x07, 0x27, 0x00, 0, 0, 0, 0]);
    }

    #[test]
    fn progress_indication_round_trips() {
        let s = Sense {
            key: SenseKey::NotReady,
            asc: Asc::SANITIZE_IN_PROGRESS,
            information: None,
            specific: Some(SenseKeySpecific::Progress(0x8000)),
        };
        let b = s.encode_fixed();
        assert_eq!(&b[15..18], &[0x80, 0x80, 0x00]);
        assert_eq!(Sense::parse(&b), Some(s));
        assert_eq!(Sense::parse(&s.encode_descriptor()), Some(s));
    }

    #[test]
    fn parse_rejects_garbage_without_panicking() {
        assert_eq!(Sense::parse(&[]), None);
        assert_eq!(Sense::parse(&[0x70, 0, 5]), None);
        assert_eq!(Sense::parse(&[0x72, 5, 0x24, 0, 0, 0, 0, 200]), None);
        assert_eq!(
            Sense::parse(&[0x72, 5, 0x24, 0, 0, 0, 0, 3, 0x00, 0x0A, 0x80]),
            None
        );
        assert_eq!(Sense::parse(&[0x10; 18]), None);
    }
}
