//! Answers that belong to the target rather than to one logical unit: REPORT LUNS and commands
//! addressed to a LUN the target does not have.

use crate::cdb::{self, Cdb};
use crate::reply::{Reply, Xfer};
use crate::sense::{Asc, Sense, SenseKey};
use crate::{Command, Response};

/// Encodes a LUN for REPORT LUNS (SAM-5 §4.7): peripheral device addressing below 256, flat
/// space addressing up to 16383. `None` for larger LUNs, which this encoding cannot carry.
pub fn encode_lun(lun: u64) -> Option<[u8; 8]> {
    let mut b = [0u8; 8];
    if lun < 256 {
        b[1] = lun as u8;
    } else if lun < 0x4000 {
        b[0] = 0x40 | (lun >> 8) as u8;
        b[1] = (lun & 0xFF) as u8;
    } else {
        return None;
    }
    Some(b)
}

/// REPORT LUNS for a target with `luns` (in the order given; LUNs above 16383 are left out).
///
/// SELECT REPORT 00h and 02h list every LUN, 01h (well-known LUs only) returns an empty list;
/// any other value is INVALID FIELD IN CDB. Data are cut to the allocation length and the
/// expected length. Any other CDB gets what [`no_such_lun`] would answer.
pub fn report_luns(cmd: &Command<'_>, luns: &[u64]) -> Response {
    let reply = match cdb::decode(cmd.cdb) {
        Ok(Cdb::ReportLuns { select, alloc_len }) => report_luns_reply(select, alloc_len, luns),
        Ok(_) => return no_such_lun(cmd),
        Err(s) => Reply::check(s, Xfer::None),
    };
    reply.into_response(cmd, false)
}

/// REPORT LUNS parameter data (or the INVALID FIELD IN CDB for a bad SELECT REPORT).
pub(crate) fn report_luns_reply(select: u8, alloc_len: u32, luns: &[u64]) -> Reply {
    match select {
        0x00 | 0x02 => {
            let list: Vec<[u8; 8]> = luns.iter().filter_map(|&l| encode_lun(l)).collect();
            let mut d = Vec::with_capacity(8 + 8 * list.len());
            let len = u32::try_from(8 * list.len()).unwrap_or(u32::MAX);
            d.extend_from_slice(&len.to_be_bytes());
            d.extend_from_slice(&[0, 0, 0, 0]);
            for l in &list {
                d.extend_from_slice(l);
            }
            Reply::data_alloc(d, alloc_len)
        }
        0x01 => Reply::data_alloc(vec![0; 8], alloc_len),
        _ => Reply::check(Sense::invalid_field_in_cdb(2, Some(7)), Xfer::None),
    }
}

/// The answer of a LUN the target does not have (SPC-4 §6.6.2): INQUIRY returns
/// peripheral qualifier 011b / device type 1Fh (standard data, or an empty VPD page),
/// REQUEST SENSE returns LOGICAL UNIT NOT SUPPORTED sense data with GOOD, anything else is
/// CHECK CONDITION ILLEGAL REQUEST / LOGICAL UNIT NOT SUPPORTED. Sense data are fixed format
/// (there is no control mode page to ask).
pub fn no_such_lun(cmd: &Command<'_>) -> Response {
    let not_supported = Sense::new(SenseKey::IllegalRequest, Asc::LOGICAL_UNIT_NOT_SUPPORTED);
    let reply = match cdb::decode(cmd.cdb) {
        Ok(Cdb::Inquiry {
            evpd,
            page,
            alloc_len,
        }) => {
            let d = if evpd {
                vec![0x7F, page, 0, 0]
            } else {
                let mut d = vec![0u8; 36];
                d[0] = 0x7F;
                d[2] = 0x06;
                d[3] = 0x02;
                d[4] = 31;
                d
            };
            Reply::data_alloc(d, alloc_len)
        }
        Ok(Cdb::RequestSense { desc, alloc_len }) => {
            Reply::data_alloc(not_supported.encode(desc), alloc_len)
        }
        Ok(_) => Reply::check(not_supported, Xfer::None),
        Err(s) if s.asc == Asc::INVALID_COMMAND_OPERATION_CODE => {
            Reply::check(not_supported, Xfer::None)
        }
        Err(s) => Reply::check(s, Xfer::None),
    };
    reply.into_response(cmd, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Nexus, Residual, TaskAttr};

    fn nexus() -> Nexus {
        Nexus {
            id: 1,
            initiator_name: "i".into(),
            initiator_port: "i,i,0x000000000001".into(),
            target_port: "t,t,0x0001".into(),
            relative_port: 1,
        }
    }

    fn cmd<'a>(n: &'a Nexus, cdb: &'a [u8], expected_len: u32) -> Command<'a> {
        Command {
            nexus: n,
            cdb,
            attr: TaskAttr::Simple,
            expected_len,
            read: expected_len > 0,
            write: false,
            data_out: Vec::new(),
        }
    }

    fn bytes(r: &Response) -> Vec<u8> {
        r.data_in.slices().concat()
    }

    #[test]
    fn lun_encoding() {
        assert_eq!(encode_lun(0), Some([0; 8]));
        assert_eq!(encode_lun(5), Some([0, 5, 0, 0, 0, 0, 0, 0]));
        assert_eq!(encode_lun(256), Some([0x41, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(encode_lun(0x3FFF), Some([0x7F, 0xFF, 0, 0, 0, 0, 0, 0]));
        assert_eq!(encode_lun(0x4000), None);
    }

    #[test]
    fn report_luns_lists_and_truncates() {
        let n = nexus();
        let cdb = [0xA0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0];
        let r = report_luns(&cmd(&n, &cdb, 4096), &[0, 1, 300]);
        assert_eq!(r.status, 0);
        let d = bytes(&r);
        assert_eq!(d.len(), 32);
        assert_eq!(&d[..8], &[0, 0, 0, 24, 0, 0, 0, 0]);
        assert_eq!(&d[16..18], &[0, 1]);
        assert_eq!(&d[24..26], &[0x41, 0x2C]);
        assert_eq!(r.residual, Residual::Underflow(4096 - 32));
        let r = report_luns(&cmd(&n, &cdb, 16), &[0, 1, 300]);
        assert_eq!(bytes(&r).len(), 16);
        assert_eq!(r.residual, Residual::Overflow(16));
        let bad = [0xA0, 0, 0x03, 0, 0, 0, 0, 0, 0x10, 0, 0, 0];
        let r = report_luns(&cmd(&n, &bad, 4096), &[0]);
        assert_eq!(r.status, 2);
        assert_eq!((r.sense[12], r.sense[13]), (0x24, 0));
        let wk = [0xA0, 0, 0x01, 0, 0, 0, 0, 0, 0x10, 0, 0, 0];
        assert_eq!(bytes(&report_luns(&cmd(&n, &wk, 4096), &[0])), vec![0; 8]);
    }

    #[test]
    fn missing_lun_answers() {
        let n = nexus();
        let r = no_such_lun(&cmd(&n, &[0x12, 0, 0, 0, 0xFF, 0], 255));
        assert_eq!(r.status, 0);
        assert_eq!(bytes(&r)[0], 0x7F);
        let r = no_such_lun(&cmd(&n, &[0x03, 0, 0, 0, 0xFF, 0], 255));
        assert_eq!(r.status, 0);
        let d = bytes(&r);
        assert_eq!((d[2], d[12], d[13]), (0x05, 0x25, 0x00));
        let r = no_such_lun(&cmd(&n, &[0x00, 0, 0, 0, 0, 0], 0));
        assert_eq!(r.status, 2);
        assert_eq!((r.sense[2], r.sense[12]), (0x05, 0x25));
        let r = no_such_lun(&cmd(&n, &[0xFB, 0, 0, 0, 0, 0], 0));
        assert_eq!((r.sense[2], r.sense[12]), (0x05, 0x25));
    }
}
