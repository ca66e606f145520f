//! INQUIRY data: the standard page (SPC-4 §6.6.2) and the vital product data pages (SPC-4
//! §7.8, SBC-3 §6.6).
//!
//! | Page | Content |
//! |---|---|
//! | 00h | supported pages |
//! | 80h | unit serial number ([`crate::LuConfig::serial`]) |
//! | 83h | device identification: NAA locally assigned (3h) and T10 vendor ID derived from the LU's UUID, a SCSI name string for the LU (`naa.`), and for the target port the command came through: relative target port, target port group, SCSI name strings of the port and of the target device |
//! | 86h | extended INQUIRY data (simple task attribute, volatile cache) |
//! | B0h | block limits (see [`crate::limits`]) |
//! | B1h | block device characteristics (non-rotating) |
//! | B2h | logical block provisioning (thin: LBPU, LBPWS, LBPWS10, LBPRZ) |

use crate::limits;
use crate::sense::Sense;
use crate::{LuConfig, Nexus};

/// Version descriptors claimed in standard INQUIRY data: SAM-5, SPC-4, SBC-3, iSCSI.
pub const VERSION_DESCRIPTORS: [u16; 4] = [0x00A0, 0x0460, 0x04C0, 0x0960];

/// Supported VPD pages, in ascending order.
pub const VPD_PAGES: [u8; 7] = [0x00, 0x80, 0x83, 0x86, 0xB0, 0xB1, 0xB2];

/// What the INQUIRY pages need to know about a logical unit.
#[derive(Debug, Clone, Copy)]
pub struct LuFacts<'a> {
    /// The configuration.
    pub cfg: &'a LuConfig,
    /// Logical block size.
    pub block_size: u32,
    /// Thin provisioned and able to unmap.
    pub thin: bool,
    /// SANITIZE BLOCK ERASE is offered.
    pub block_erase: bool,
}

fn ascii_field(out: &mut Vec<u8>, s: &str, len: usize) {
    let start = out.len();
    out.extend(
        s.bytes()
            .take(len)
            .map(|c| if (0x20..0x7F).contains(&c) { c } else { b' ' }),
    );
    out.resize(start + len, b' ');
}

/// Standard INQUIRY data (96 bytes) for a direct-access block device.
pub fn standard(cfg: &LuConfig, three_pc: bool) -> Vec<u8> {
    let mut d = Vec::with_capacity(96);
    d.push(0x00); // peripheral qualifier 000b, direct access block device
    d.push(0x00); // not removable
    d.push(0x06); // SPC-4
    d.push(0x12); // HISUP, response data format 2
    d.push(91); // additional length
    d.push(if three_pc { 0x08 } else { 0x00 });
    d.push(0x00);
    d.push(0x02); // CMDQUE
    ascii_field(&mut d, &cfg.vendor, 8);
    ascii_field(&mut d, &cfg.product, 16);
    ascii_field(&mut d, &cfg.revision, 4);
    d.resize(58, 0);
    for v in VERSION_DESCRIPTORS {
        d.extend_from_slice(&v.to_be_bytes());
    }
    d.resize(96, 0);
    d
}

/// The 64-bit NAA locally assigned (3h) identifier derived from a UUID.
pub fn naa(uuid: &[u8; 16]) -> u64 {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&uuid[..8]);
    lo.copy_from_slice(&uuid[8..]);
    let folded = u64::from_be_bytes(hi) ^ u64::from_be_bytes(lo).rotate_left(29);
    (0x3 << 60) | (folded & 0x0FFF_FFFF_FFFF_FFFF)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Appends one designation descriptor.
fn designator(out: &mut Vec<u8>, b0: u8, b1: u8, body: &[u8]) {
    let len = body.len().min(255);
    out.extend_from_slice(&[b0, b1, 0, len as u8]);
    out.extend_from_slice(&body[..len]);
}

/// A SCSI name string: UTF-8, NUL terminated, padded with NULs to a multiple of 4 bytes.
fn name_string(s: &str) -> Vec<u8> {
    let mut v: Vec<u8> = s.bytes().take(251).collect();
    let len = (v.len() + 1).div_ceil(4) * 4;
    v.resize(len, 0);
    v
}

const ISCSI: u8 = 0x5;
const BINARY: u8 = 0x1;
const ASCII: u8 = 0x2;
const UTF8: u8 = 0x3;

/// The logical unit's own NAA designation descriptor (code set, type/association, length,
/// value), as EXTENDED COPY identification target descriptors carry it.
pub fn naa_designator(uuid: &[u8; 16]) -> [u8; 12] {
    let mut d = [0u8; 12];
    d[0] = BINARY;
    d[1] = 0x03;
    d[3] = 8;
    d[4..].copy_from_slice(&naa(uuid).to_be_bytes());
    d
}

fn device_identification(facts: &LuFacts<'_>, nexus: &Nexus) -> Vec<u8> {
    let cfg = facts.cfg;
    let mut d = vec![0x00, 0x83, 0, 0];
    let id = naa(&cfg.uuid);
    designator(&mut d, BINARY, 0x03, &id.to_be_bytes());
    let mut t10 = Vec::with_capacity(40);
    ascii_field(&mut t10, &cfg.vendor, 8);
    t10.extend_from_slice(hex(&cfg.uuid).as_bytes());
    designator(&mut d, ASCII, 0x01, &t10);
    designator(&mut d, UTF8, 0x08, &name_string(&format!("naa.{id:016x}")));
    // Target port designators. iSCSI names the port `<target>,t,0x<TPGT>`.
    let lower = nexus.target_port.to_ascii_lowercase();
    let iscsi_at = lower.find(",t,0x");
    let (piv, proto) = if iscsi_at.is_some() {
        (0x80, ISCSI << 4)
    } else {
        (0x00, 0)
    };
    let mut rel = [0u8; 4];
    rel[2..].copy_from_slice(&nexus.relative_port.to_be_bytes());
    designator(&mut d, proto | BINARY, piv | 0x10 | 0x04, &rel);
    designator(&mut d, proto | BINARY, piv | 0x10 | 0x05, &[0, 0, 0, 1]);
    designator(
        &mut d,
        proto | UTF8,
        piv | 0x10 | 0x08,
        &name_string(&nexus.target_port),
    );
    if let Some(at) = iscsi_at {
        designator(
            &mut d,
            proto | UTF8,
            piv | 0x20 | 0x08,
            &name_string(&nexus.target_port[..at]),
        );
    }
    let len = u16::try_from(d.len() - 4).unwrap_or(u16::MAX);
    d[2..4].copy_from_slice(&len.to_be_bytes());
    d
}

fn block_limits(facts: &LuFacts<'_>) -> Vec<u8> {
    let bs = facts.block_size.max(1);
    let mut d = vec![0u8; 64];
    d[1] = 0xB0;
    d[3] = 0x3C;
    d[5] = limits::MAX_COMPARE_AND_WRITE;
    let gran = u16::try_from(facts.cfg.unmap_granularity.max(1)).unwrap_or(u16::MAX);
    d[6..8].copy_from_slice(&gran.to_be_bytes());
    d[8..12].copy_from_slice(&(limits::MAX_TRANSFER_BYTES / bs).to_be_bytes());
    d[12..16].copy_from_slice(&(limits::OPTIMAL_TRANSFER_BYTES / bs).to_be_bytes());
    if facts.thin {
        d[20..24].copy_from_slice(&limits::MAX_UNMAP_BLOCKS.to_be_bytes());
        d[24..28].copy_from_slice(&limits::MAX_UNMAP_DESCRIPTORS.to_be_bytes());
        d[28..32].copy_from_slice(&facts.cfg.unmap_granularity.max(1).to_be_bytes());
        d[32] = 0x80; // UGAVALID, alignment 0
    }
    d[36..44].copy_from_slice(&limits::MAX_WRITE_SAME_BLOCKS.to_be_bytes());
    d
}

fn characteristics(facts: &LuFacts<'_>) -> Vec<u8> {
    let mut d = vec![0u8; 64];
    d[1] = 0xB1;
    d[3] = 0x3C;
    d[5] = 0x01; // non-rotating medium
    if facts.block_erase {
        d[7] = 0x40; // WABEREQ 01b: reads after BLOCK ERASE succeed
    }
    d
}

fn provisioning(facts: &LuFacts<'_>) -> Vec<u8> {
    let mut d = vec![0u8, 0xB2, 0, 4, 0, 0, 0, 0];
    if facts.thin {
        d[5] = 0x80 | 0x40 | 0x20 | 0x04; // LBPU, LBPWS, LBPWS10, LBPRZ 001b
        d[6] = 0x02; // thin provisioned
    }
    d
}

/// A VPD page, before allocation-length truncation.
///
/// # Errors
/// INVALID FIELD IN CDB for a page this logical unit does not have.
pub fn vpd(page: u8, facts: &LuFacts<'_>, nexus: &Nexus) -> Result<Vec<u8>, Sense> {
    Ok(match page {
        0x00 => {
            let mut d = vec![0x00, 0x00, 0x00, VPD_PAGES.len() as u8];
            d.extend_from_slice(&VPD_PAGES);
            d
        }
        0x80 => {
            let mut d = vec![0x00, 0x80, 0x00, 0x00];
            d.extend(
                facts
                    .cfg
                    .serial
                    .bytes()
                    .take(251)
                    .map(|c| if (0x20..0x7F).contains(&c) { c } else { b'_' }),
            );
            d[3] = (d.len() - 4) as u8;
            d
        }
        0x83 => device_identification(facts, nexus),
        0x86 => {
            let mut d = vec![0u8; 64];
            d[1] = 0x86;
            d[3] = 0x3C;
            d[5] = 0x01; // SIMPSUP
            d[6] = 0x01; // V_SUP: volatile cache
            d
        }
        0xB0 => block_limits(facts),
        0xB1 => characteristics(facts),
        0xB2 => provisioning(facts),
        _ => return Err(Sense::invalid_field_in_cdb(2, Some(7))),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use basalt_bdev::modules::null::NullBdev;

    use super::*;

    pub(crate) fn cfg() -> LuConfig {
        LuConfig {
            bdev: Arc::new(NullBdev::new("n", 512, 1000).expect("valid")),
            uuid: [
                0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x80, 0x11, 0x22, 0x33, 0x44, 0x55,
                0x66, 0x77,
            ],
            serial: "SER\u{7}IAL".into(),
            vendor: "BASALT".into(),
            product: "VOLUME".into(),
            revision: "0.1".into(),
            read_only: false,
            thin: true,
            unmap_granularity: 32,
        }
    }

    fn nexus() -> Nexus {
        Nexus {
            id: 1,
            initiator_name: "iqn.i".into(),
            initiator_port: "iqn.i,i,0x000000000001".into(),
            target_port: "iqn.t,t,0x0002".into(),
            relative_port: 2,
        }
    }

    #[test]
    fn standard_inquiry_fields() {
        let d = standard(&cfg(), true);
        assert_eq!(d.len(), 96);
        assert_eq!(&d[..8], &[0, 0, 6, 0x12, 91, 0x08, 0, 0x02]);
        assert_eq!(&d[8..16], b"BASALT  ");
        assert_eq!(&d[16..32], b"VOLUME          ");
        assert_eq!(&d[32..36], b"0.1 ");
        assert_eq!(
            &d[58..66],
            &[0x00, 0xA0, 0x04, 0x60, 0x04, 0xC0, 0x09, 0x60]
        );
        assert!(d[66..].iter().all(|&b| b == 0));
    }

    #[test]
    fn naa_is_locally_assigned_and_stable() {
        let u = cfg().uuid;
        assert_eq!(naa(&u) >> 60, 3);
        assert_eq!(naa(&u), naa(&u));
        let mut v = u;
        v[15] ^= 1;
        assert_ne!(naa(&u), naa(&v));
    }

    #[test]
    fn device_identification_lists_lu_and_port_designators() {
        let c = cfg();
        let f = LuFacts {
            cfg: &c,
            block_size: 512,
            thin: true,
            block_erase: false,
        };
        let d = vpd(0x83, &f, &nexus()).expect("page");
        assert_eq!(usize::from(u16::from_be_bytes([d[2], d[3]])), d.len() - 4);
        // Walk the designators: (byte0, byte1, body)
        let mut found = Vec::new();
        let mut at = 4;
        while at < d.len() {
            let len = usize::from(d[at + 3]);
            found.push((d[at], d[at + 1], d[at + 4..at + 4 + len].to_vec()));
            at += 4 + len;
        }
        assert_eq!(at, d.len());
        assert_eq!(found[0].0, 0x01);
        assert_eq!(found[0].1, 0x03);
        assert_eq!(found[0].2, naa(&c.uuid).to_be_bytes().to_vec());
        assert_eq!(found[1].1, 0x01);
        assert_eq!(&found[1].2[..8], b"BASALT  ");
        assert_eq!(found[1].2.len(), 40);
        assert_eq!(found[2].1, 0x08);
        assert_eq!(found[2].2.len() % 4, 0);
        assert!(found[2].2.starts_with(b"naa.3"));
        assert_eq!((found[3].0, found[3].1), (0x51, 0x94));
        assert_eq!(found[3].2, vec![0, 0, 0, 2]);
        assert_eq!((found[4].0, found[4].1), (0x51, 0x95));
        assert_eq!((found[5].0, found[5].1), (0x53, 0x98));
        assert!(found[5].2.starts_with(b"iqn.t,t,0x0002\0"));
        assert_eq!((found[6].0, found[6].1), (0x53, 0xA8));
        assert!(found[6].2.starts_with(b"iqn.t\0"));
        assert_eq!(&naa_designator(&c.uuid)[..], &d[4..16]);
    }

    #[test]
    fn block_limits_and_provisioning_for_a_thin_lu() {
        let c = cfg();
        let f = LuFacts {
            cfg: &c,
            block_size: 512,
            thin: true,
            block_erase: true,
        };
        let d = vpd(0xB0, &f, &nexus()).expect("page");
        assert_eq!(d.len(), 64);
        assert_eq!(d[3], 0x3C);
        assert_eq!(d[5], limits::MAX_COMPARE_AND_WRITE);
        assert_eq!(&d[6..8], &[0, 32]);
        assert_eq!(&d[8..12], &(16384u32).to_be_bytes());
        assert_eq!(&d[20..24], &limits::MAX_UNMAP_BLOCKS.to_be_bytes());
        assert_eq!(&d[24..28], &limits::MAX_UNMAP_DESCRIPTORS.to_be_bytes());
        assert_eq!(&d[28..32], &32u32.to_be_bytes());
        assert_eq!(d[32], 0x80);
        let d = vpd(0xB2, &f, &nexus()).expect("page");
        assert_eq!(d, vec![0, 0xB2, 0, 4, 0, 0xE4, 0x02, 0]);
        let d = vpd(0xB1, &f, &nexus()).expect("page");
        assert_eq!(&d[4..8], &[0, 1, 0, 0x40]);
        let thick = LuFacts {
            thin: false,
            block_erase: false,
            ..f
        };
        let d = vpd(0xB0, &thick, &nexus()).expect("page");
        assert_eq!(&d[20..36], &[0u8; 16]);
        assert_eq!(vpd(0xB2, &thick, &nexus()).expect("page")[5], 0);
    }

    #[test]
    fn serial_is_printable_and_unknown_pages_fail() {
        let c = cfg();
        let f = LuFacts {
            cfg: &c,
            block_size: 512,
            thin: false,
            block_erase: false,
        };
        assert_eq!(
            vpd(0x80, &f, &nexus()).expect("page"),
            b"\0\x80\0\x07SER_IAL".to_vec()
        );
        assert_eq!(
            vpd(0x89, &f, &nexus()),
            Err(Sense::invalid_field_in_cdb(2, Some(7)))
        );
        let d = vpd(0x00, &f, &nexus()).expect("page");
        assert_eq!(&d[4..], &VPD_PAGES);
    }
}
