//! Mode parameters (SPC-4 §7.5, SBC-3 §6.4): MODE SENSE data and MODE SELECT validation.
//!
//! A logical unit has three pages:
//!
//! | Page | Length | Changeable |
//! |---|---|---|
//! | 08h Caching | 12h | WCE (clearing it makes every write FUA) |
//! | 0Ah Control | 0Ah | D_SENSE (descriptor sense data), SWP (software write protect) |
//! | 1Ch Informational Exceptions Control | 0Ah | nothing (DEXCPT=1: none are reported) |
//!
//! Saved values are not implemented: page control 11b is SAVING PARAMETERS NOT SUPPORTED and a
//! MODE SELECT with SP set is INVALID FIELD IN CDB. MODE SELECT checks every byte of every page
//! against the changeable mask (a non-changeable field must keep its current value) and the
//! block descriptor against the device's geometry.

use crate::sense::{Asc, Sense, SenseKey};

/// Caching mode page code.
pub const CACHING: u8 = 0x08;
/// Control mode page code.
pub const CONTROL: u8 = 0x0A;
/// Informational exceptions control mode page code.
pub const INFO_EXCEPTIONS: u8 = 0x1C;
/// "Return all pages" page code.
pub const ALL_PAGES: u8 = 0x3F;

/// The pages in the order MODE SENSE returns them.
pub const PAGES: [u8; 3] = [CACHING, CONTROL, INFO_EXCEPTIONS];

/// Current values of the changeable mode parameters of one logical unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeParams {
    /// Write cache enabled (caching page WCE).
    pub wce: bool,
    /// Descriptor-format sense data (control page D_SENSE).
    pub d_sense: bool,
    /// Software write protect (control page SWP).
    pub swp: bool,
}

impl Default for ModeParams {
    fn default() -> Self {
        ModeParams {
            wce: true,
            d_sense: false,
            swp: false,
        }
    }
}

/// Which values a MODE SENSE reports (the PC field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageControl {
    /// Current values.
    Current,
    /// Changeable mask.
    Changeable,
    /// Default values.
    Default,
}

impl PageControl {
    /// From the PC field; `None` for saved values (11b), which are not supported.
    pub fn from_pc(pc: u8) -> Option<PageControl> {
        match pc {
            0 => Some(PageControl::Current),
            1 => Some(PageControl::Changeable),
            2 => Some(PageControl::Default),
            _ => None,
        }
    }
}

fn page_len(page: u8) -> usize {
    match page {
        CACHING => 0x12,
        _ => 0x0A,
    }
}

/// Appends one page (header included) for `pc`.
pub fn write_page(out: &mut Vec<u8>, page: u8, pc: PageControl, p: &ModeParams) {
    let len = page_len(page);
    let start = out.len();
    out.resize(start + 2 + len, 0);
    let b = &mut out[start..];
    b[0] = page;
    b[1] = len as u8;
    let values = match pc {
        PageControl::Current => *p,
        PageControl::Default => ModeParams::default(),
        PageControl::Changeable => ModeParams {
            wce: true,
            d_sense: true,
            swp: true,
        },
    };
    let changeable = pc == PageControl::Changeable;
    match page {
        CACHING if values.wce => b[2] |= 0x04,
        CONTROL => {
            if values.d_sense {
                b[2] |= 0x04;
            }
            if values.swp {
                b[4] |= 0x08;
            }
            if !changeable {
                // GLTSD: no log parameters are saved. QUEUE ALGORITHM MODIFIER 1: unrestricted
                // reordering. BUSY TIMEOUT PERIOD: unlimited.
                b[2] |= 0x02;
                b[3] = 0x10;
                b[8] = 0xFF;
                b[9] = 0xFF;
            }
        }
        INFO_EXCEPTIONS if !changeable => b[2] = 0x08, // DEXCPT
        _ => {}
    }
}

/// Block limits the mode parameter block descriptor describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockDescriptor {
    /// Number of logical blocks.
    pub blocks: u64,
    /// Logical block length.
    pub block_len: u32,
}

/// Builds MODE SENSE (6 or 10) parameter data for `page` / `subpage` (before allocation-length
/// truncation).
///
/// # Errors
/// INVALID FIELD IN CDB for an unknown page or subpage, SAVING PARAMETERS NOT SUPPORTED for page
/// control 11b.
#[allow(clippy::too_many_arguments)]
pub fn mode_sense(
    ten: bool,
    dbd: bool,
    llbaa: bool,
    pc: u8,
    page: u8,
    subpage: u8,
    params: &ModeParams,
    write_protect: bool,
    desc: BlockDescriptor,
) -> Result<Vec<u8>, Sense> {
    let Some(control) = PageControl::from_pc(pc) else {
        return Err(Sense::new(
            SenseKey::IllegalRequest,
            Asc::SAVING_PARAMETERS_NOT_SUPPORTED,
        ));
    };
    let pages: &[u8] = match (page, subpage) {
        (ALL_PAGES, 0x00 | 0xFF) => &PAGES,
        (p, 0x00) if PAGES.contains(&p) => PAGES
            .iter()
            .position(|&q| q == p)
            .map(|i| &PAGES[i..=i])
            .unwrap_or(&[]),
        (p, _) if p == ALL_PAGES || PAGES.contains(&p) => {
            return Err(Sense::invalid_field_in_cdb(3, Some(7)));
        }
        _ => return Err(Sense::invalid_field_in_cdb(2, Some(5))),
    };
    let header_len = if ten { 8 } else { 4 };
    let mut out = vec![0u8; header_len];
    let dev_specific = 0x10 | if write_protect { 0x80 } else { 0 }; // DPOFUA, WP
    let long = ten && llbaa;
    if !dbd {
        if long {
            let mut d = [0u8; 16];
            if control != PageControl::Changeable {
                d[..8].copy_from_slice(&desc.blocks.to_be_bytes());
                d[12..].copy_from_slice(&desc.block_len.to_be_bytes());
            }
            out.extend_from_slice(&d);
        } else {
            let mut d = [0u8; 8];
            if control != PageControl::Changeable {
                let n = u32::try_from(desc.blocks).unwrap_or(u32::MAX);
                d[..4].copy_from_slice(&n.to_be_bytes());
                d[5..].copy_from_slice(&desc.block_len.to_be_bytes()[1..]);
            }
            out.extend_from_slice(&d);
        }
    }
    let bd_len = out.len() - header_len;
    for &p in pages {
        write_page(&mut out, p, control, params);
    }
    if ten {
        let len = u16::try_from(out.len() - 2).unwrap_or(u16::MAX);
        out[0..2].copy_from_slice(&len.to_be_bytes());
        out[3] = dev_specific;
        out[4] = u8::from(long);
        out[6..8].copy_from_slice(&(bd_len as u16).to_be_bytes());
    } else {
        // At most 4 + 8 + 20 + 12 + 12 bytes: fits the one-byte length.
        out[0] = (out.len() - 1) as u8;
        out[2] = dev_specific;
        out[3] = bd_len as u8;
    }
    Ok(out)
}

/// Applies a MODE SELECT parameter list to `current`, returning the new values.
///
/// `data` is the parameter list (already cut to the PARAMETER LIST LENGTH).
///
/// # Errors
/// PARAMETER LIST LENGTH ERROR for a truncated header, descriptor or page; INVALID FIELD IN
/// PARAMETER LIST (with a field pointer) for an unknown page, a wrong page length, a changed
/// non-changeable field or a block descriptor that does not match the device.
pub fn mode_select(
    ten: bool,
    data: &[u8],
    current: &ModeParams,
    desc: BlockDescriptor,
) -> Result<ModeParams, Sense> {
    let header_len = if ten { 8 } else { 4 };
    if data.is_empty() {
        return Ok(*current);
    }
    if data.len() < header_len {
        return Err(Sense::parameter_list_length());
    }
    let (bd_len, long) = if ten {
        (
            usize::from(u16::from_be_bytes([data[6], data[7]])),
            data[4] & 0x01 != 0,
        )
    } else {
        (usize::from(data[3]), false)
    };
    let desc_size = if long { 16 } else { 8 };
    if bd_len % desc_size != 0 {
        return Err(Sense::invalid_field_in_param(if ten { 6 } else { 3 }, None));
    }
    let pages_at = header_len + bd_len;
    if data.len() < pages_at {
        return Err(Sense::parameter_list_length());
    }
    let mut at = header_len;
    while at < pages_at {
        let d = &data[at..at + desc_size];
        let (blocks, len_at) = if long {
            let mut v = [0u8; 8];
            v.copy_from_slice(&d[..8]);
            (u64::from_be_bytes(v), 12)
        } else {
            (u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]])), 5)
        };
        let block_len = u32::from_be_bytes(if long {
            [d[12], d[13], d[14], d[15]]
        } else {
            [0, d[5], d[6], d[7]]
        });
        let max_short = u64::from(u32::MAX);
        let blocks_ok = blocks == 0
            || blocks == desc.blocks
            || (!long && blocks == max_short && desc.blocks >= max_short);
        if !blocks_ok {
            return Err(Sense::invalid_field_in_param(at as u16, None));
        }
        if block_len != desc.block_len {
            return Err(Sense::invalid_field_in_param((at + len_at) as u16, None));
        }
        at += desc_size;
    }
    let mut new = *current;
    let mut changeable = Vec::with_capacity(32);
    let mut cur = Vec::with_capacity(32);
    while at < data.len() {
        let code = data[at];
        if code & 0x40 != 0 {
            // Subpage format: none of our pages has subpages.
            return Err(Sense::invalid_field_in_param(at as u16, Some(6)));
        }
        let page = code & 0x3F;
        if !PAGES.contains(&page) {
            return Err(Sense::invalid_field_in_param(at as u16, Some(5)));
        }
        if code & 0x80 != 0 {
            // PS is reserved in MODE SELECT.
            return Err(Sense::invalid_field_in_param(at as u16, Some(7)));
        }
        let Some(&len) = data.get(at + 1) else {
            return Err(Sense::parameter_list_length());
        };
        if usize::from(len) != page_len(page) {
            return Err(Sense::invalid_field_in_param((at + 1) as u16, None));
        }
        let end = at + 2 + usize::from(len);
        let Some(body) = data.get(at..end) else {
            return Err(Sense::parameter_list_length());
        };
        changeable.clear();
        cur.clear();
        write_page(&mut changeable, page, PageControl::Changeable, &new);
        write_page(&mut cur, page, PageControl::Current, &new);
        for i in 2..body.len() {
            let diff = (body[i] ^ cur[i]) & !changeable[i];
            if diff != 0 {
                return Err(Sense::invalid_field_in_param(
                    (at + i) as u16,
                    Some(7 - diff.leading_zeros() as u8),
                ));
            }
        }
        match page {
            CACHING => new.wce = body[2] & 0x04 != 0,
            CONTROL => {
                new.d_sense = body[2] & 0x04 != 0;
                new.swp = body[4] & 0x08 != 0;
            }
            _ => {}
        }
        at = end;
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESC: BlockDescriptor = BlockDescriptor {
        blocks: 1000,
        block_len: 512,
    };

    fn sense6_all(p: &ModeParams) -> Vec<u8> {
        mode_sense(false, false, false, 0, ALL_PAGES, 0, p, false, DESC).expect("valid")
    }

    #[test]
    fn mode_sense_6_all_pages_layout() {
        let d = sense6_all(&ModeParams::default());
        // header 4 + descriptor 8 + caching 20 + control 12 + IEC 12
        assert_eq!(d.len(), 56);
        assert_eq!(d[0], 55);
        assert_eq!(d[2], 0x10, "DPOFUA set, WP clear");
        assert_eq!(d[3], 8);
        assert_eq!(&d[4..12], &[0, 0, 0x03, 0xE8, 0, 0, 0x02, 0x00]);
        assert_eq!(&d[12..16], &[0x08, 0x12, 0x04, 0x00]);
        assert_eq!(
            &d[32..44],
            &[0x0A, 0x0A, 0x02, 0x10, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0]
        );
        assert_eq!(&d[44..48], &[0x1C, 0x0A, 0x08, 0x00]);
    }

    #[test]
    fn mode_sense_10_long_descriptor_and_dbd() {
        let p = ModeParams::default();
        let d = mode_sense(true, false, true, 0, CONTROL, 0, &p, true, DESC).expect("valid");
        assert_eq!(d.len(), 8 + 16 + 12);
        assert_eq!(u16::from_be_bytes([d[0], d[1]]), 34);
        assert_eq!(d[3], 0x90, "WP and DPOFUA");
        assert_eq!(d[4], 1, "LONGLBA");
        assert_eq!(u16::from_be_bytes([d[6], d[7]]), 16);
        assert_eq!(&d[8..16], &1000u64.to_be_bytes());
        assert_eq!(&d[20..24], &512u32.to_be_bytes());
        let d = mode_sense(true, true, false, 0, CACHING, 0, &p, false, DESC).expect("valid");
        assert_eq!(d.len(), 8 + 20);
        assert_eq!(&d[6..8], &[0, 0]);
    }

    #[test]
    fn changeable_values_are_the_masks() {
        let p = ModeParams::default();
        let d = mode_sense(false, true, false, 1, CONTROL, 0, &p, false, DESC).expect("valid");
        assert_eq!(&d[4..16], &[0x0A, 0x0A, 0x04, 0, 0x08, 0, 0, 0, 0, 0, 0, 0]);
        let d = mode_sense(false, true, false, 1, CACHING, 0, &p, false, DESC).expect("valid");
        assert_eq!(d[6], 0x04);
    }

    #[test]
    fn bad_page_control_page_and_subpage() {
        let p = ModeParams::default();
        let e =
            mode_sense(false, true, false, 3, CONTROL, 0, &p, false, DESC).expect_err("refused");
        assert_eq!(e.asc, Asc::SAVING_PARAMETERS_NOT_SUPPORTED);
        let e = mode_sense(false, true, false, 0, 0x19, 0, &p, false, DESC).expect_err("refused");
        assert_eq!(e, Sense::invalid_field_in_cdb(2, Some(5)));
        let e =
            mode_sense(false, true, false, 0, CONTROL, 1, &p, false, DESC).expect_err("refused");
        assert_eq!(e, Sense::invalid_field_in_cdb(3, Some(7)));
        assert!(mode_sense(false, true, false, 0, ALL_PAGES, 0xFF, &p, false, DESC).is_ok());
    }

    fn select6(page: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 0];
        v.extend_from_slice(page);
        v
    }

    #[test]
    fn mode_select_round_trips_a_sensed_page_with_swp_set() {
        let p = ModeParams::default();
        let sensed = mode_sense(false, true, false, 0, CONTROL, 0, &p, false, DESC).expect("ok");
        let mut page = sensed[4..].to_vec();
        page[4] |= 0x08;
        let new = mode_select(false, &select6(&page), &p, DESC).expect("valid");
        assert!(new.swp);
        assert!(!new.d_sense);
        page[2] |= 0x04;
        let new = mode_select(false, &select6(&page), &p, DESC).expect("valid");
        assert!(new.d_sense && new.swp);
    }

    #[test]
    fn mode_select_refuses_changes_to_fixed_fields() {
        let p = ModeParams::default();
        let sensed = mode_sense(false, true, false, 0, CONTROL, 0, &p, false, DESC).expect("ok");
        let mut page = sensed[4..].to_vec();
        page[3] = 0x12; // QERR 01b
        let e = mode_select(false, &select6(&page), &p, DESC).expect_err("refused");
        assert_eq!(e, Sense::invalid_field_in_param(7, Some(1)));
        let mut page = sensed[4..].to_vec();
        page[1] = 0x0B;
        let e = mode_select(false, &select6(&page), &p, DESC).expect_err("refused");
        assert_eq!(e, Sense::invalid_field_in_param(5, None));
        let mut page = sensed[4..].to_vec();
        page[0] |= 0x80;
        let e = mode_select(false, &select6(&page), &p, DESC).expect_err("refused");
        assert_eq!(e, Sense::invalid_field_in_param(4, Some(7)));
        let e = mode_select(false, &select6(&[0x19, 0x06, 0, 0, 0, 0, 0, 0]), &p, DESC)
            .expect_err("refused");
        assert_eq!(e, Sense::invalid_field_in_param(4, Some(5)));
    }

    #[test]
    fn mode_select_clears_wce() {
        let p = ModeParams::default();
        let mut page = vec![0u8; 20];
        page[0] = CACHING;
        page[1] = 0x12;
        let new = mode_select(false, &select6(&page), &p, DESC).expect("valid");
        assert!(!new.wce);
    }

    #[test]
    fn mode_select_truncation_is_a_length_error() {
        let p = ModeParams::default();
        let e = mode_select(false, &[0, 0], &p, DESC).expect_err("refused");
        assert_eq!(e.asc, Asc::PARAMETER_LIST_LENGTH_ERROR);
        let e = mode_select(false, &select6(&[0x0A, 0x0A, 0, 0]), &p, DESC).expect_err("refused");
        assert_eq!(e.asc, Asc::PARAMETER_LIST_LENGTH_ERROR);
        let e = mode_select(false, &[0, 0, 0, 8, 0, 0, 0], &p, DESC).expect_err("refused");
        assert_eq!(e.asc, Asc::PARAMETER_LIST_LENGTH_ERROR);
    }

    #[test]
    fn mode_select_checks_the_block_descriptor() {
        let p = ModeParams::default();
        let ok = [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x02, 0x00];
        assert_eq!(mode_select(false, &ok, &p, DESC), Ok(p));
        let bad_len = [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x10, 0x00];
        assert_eq!(
            mode_select(false, &bad_len, &p, DESC),
            Err(Sense::invalid_field_in_param(9, None))
        );
        let bad_count = [0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0x02, 0x00];
        assert_eq!(
            mode_select(false, &bad_count, &p, DESC),
            Err(Sense::invalid_field_in_param(4, None))
        );
        let odd = [0, 0, 0, 4, 0, 0, 0, 0];
        assert_eq!(
            mode_select(false, &odd, &p, DESC),
            Err(Sense::invalid_field_in_param(3, None))
        );
    }
}
