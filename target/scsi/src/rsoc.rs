//! REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35), from the command table in [`crate::cdb`].

use crate::cdb::{self, COMMANDS, Needs, OpInfo};
use crate::lu::LogicalUnit;
use crate::sense::Sense;

/// True when `lu` offers the command.
pub fn supported(lu: &LogicalUnit, info: &OpInfo) -> bool {
    match info.needs {
        Needs::Always => true,
        Needs::Thin => lu.thin,
        Needs::BlockErase => lu.block_erase,
    }
}

fn timeouts(info: &OpInfo, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x00, 0x0A, 0x00, 0x00]);
    out.extend_from_slice(&info.nominal_timeout.to_be_bytes());
    out.extend_from_slice(&info.recommended_timeout.to_be_bytes());
}

/// The parameter data (before allocation-length truncation).
///
/// # Errors
/// INVALID FIELD IN CDB when REPORTING OPTIONS 001b names an operation code that has service
/// actions, or 010b one that has none.
pub fn report(
    lu: &LogicalUnit,
    rctd: bool,
    options: u8,
    opcode: u8,
    sa: u16,
) -> Result<Vec<u8>, Sense> {
    if options == 0 {
        let mut d = vec![0u8; 4];
        for info in COMMANDS.iter().filter(|i| supported(lu, i)) {
            d.push(info.opcode);
            d.push(0);
            d.extend_from_slice(&info.sa.unwrap_or(0).to_be_bytes());
            d.push(0);
            d.push(if rctd { 0x02 } else { 0 } | u8::from(info.sa.is_some()));
            d.extend_from_slice(&(info.cdb_len() as u16).to_be_bytes());
            if rctd {
                timeouts(info, &mut d);
            }
        }
        let len = u32::try_from(d.len() - 4).unwrap_or(u32::MAX);
        d[..4].copy_from_slice(&len.to_be_bytes());
        return Ok(d);
    }
    let has_sa = cdb::has_service_actions(opcode);
    if (options == 1 && has_sa) || (options == 2 && !has_sa) {
        return Err(Sense::invalid_field_in_cdb(2, Some(2)));
    }
    let info = cdb::lookup(opcode, has_sa.then_some(sa)).filter(|i| supported(lu, i));
    let Some(info) = info else {
        return Ok(vec![0, 0x01, 0, 0]);
    };
    let mut d = Vec::with_capacity(4 + 16 + 12);
    d.push(0);
    d.push(if rctd { 0x80 } else { 0 } | 0x03);
    d.extend_from_slice(&(info.cdb_len() as u16).to_be_bytes());
    let start = d.len();
    d.extend_from_slice(info.usage);
    if !lu.thin
        && matches!(
            info.opcode,
            cdb::opcode::WRITE_SAME_10 | cdb::opcode::WRITE_SAME_16
        )
    {
        // The UNMAP bit is refused on a fully provisioned logical unit.
        d[start + 1] &= !0x08;
    }
    if rctd {
        timeouts(info, &mut d);
    }
    Ok(d)
}
