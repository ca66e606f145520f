//! EXTENDED COPY (LID1, SPC-4 §6.4) and RECEIVE COPY RESULTS (COPY STATUS, OPERATING
//! PARAMETERS).
//!
//! The copy manager supports identification descriptor target descriptors (E4h) naming a
//! logical unit by its NAA designator, and block device to block device segment descriptors
//! (02h). A target descriptor names this logical unit, or another logical unit of the target
//! when the transport installed a [`crate::CopyTargets`] resolver. Copies run in 1 MiB chunks
//! on the receiving core, through a channel opened on this core for the other logical unit.
//! Every segment is validated before the first block moves. Inline data, held data, stream
//! devices and the other descriptor types are not supported.

use basalt_bdev::IoKind;

use crate::exec::{LuChannel, io_sense, param_bytes};
use crate::limits;
use crate::lu::{CopyResult, LogicalUnit};
use crate::reply::{Reply, Xfer};
use crate::sense::{Asc, Sense, SenseKey};
use crate::{Command, Nexus};

const TARGET_IDENT: u8 = 0xE4;
const SEGMENT_B2B: u8 = 0x02;
const TARGET_LEN: usize = 32;
const SEGMENT_LEN: usize = 28;

fn copy_aborted(asc: Asc) -> Sense {
    Sense::new(SenseKey::CopyAborted, asc)
}

struct Segment {
    src: usize,
    dst: usize,
    blocks: u64,
    src_lba: u64,
    dst_lba: u64,
}

/// The parsed parameter list.
struct CopyList {
    list_id: u8,
    hold: bool,
    targets: Vec<(Vec<u8>, u32)>,
    segments: Vec<Segment>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

fn parse(p: &[u8], param_len: u32) -> Result<CopyList, Sense> {
    if (p.len() as u64) < u64::from(param_len) || p.len() < 16 {
        return Err(Sense::parameter_list_length());
    }
    let usage = (p[1] >> 3) & 0x03;
    if usage == 1 {
        return Err(Sense::invalid_field_in_param(1, Some(4)));
    }
    if usage == 3 && p[0] != 0 {
        return Err(Sense::invalid_field_in_param(0, None));
    }
    if p[1] & 0x20 != 0 {
        return Err(Sense::invalid_field_in_param(1, Some(5)));
    }
    let tgt_len = usize::from(be16(p, 2));
    let seg_len = be32(p, 8) as usize;
    let inline = be32(p, 12);
    if inline != 0 {
        return Err(Sense::invalid_field_in_param(12, None));
    }
    let total = 16usize
        .checked_add(tgt_len)
        .and_then(|t| t.checked_add(seg_len));
    if total != Some(p.len()) {
        return Err(Sense::parameter_list_length());
    }
    if tgt_len as u64 + seg_len as u64 > u64::from(limits::XCOPY_MAX_DESCRIPTOR_LIST_BYTES) {
        return Err(Sense::parameter_list_length());
    }
    let mut targets = Vec::new();
    let mut at = 16;
    let end = 16 + tgt_len;
    while at < end {
        if p[at] != TARGET_IDENT {
            return Err(Sense::new(
                SenseKey::IllegalRequest,
                Asc::UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE,
            ));
        }
        if at + TARGET_LEN > end {
            return Err(Sense::parameter_list_length());
        }
        if targets.len() >= usize::from(limits::XCOPY_MAX_TARGET_DESCRIPTORS) {
            return Err(Sense::new(
                SenseKey::IllegalRequest,
                Asc::TOO_MANY_TARGET_DESCRIPTORS,
            ));
        }
        let d = &p[at..at + TARGET_LEN];
        if d[1] & 0x1F != 0 {
            // Only block devices (peripheral device type 0).
            return Err(Sense::invalid_field_in_param((at + 1) as u16, Some(4)));
        }
        let dlen = usize::from(d[7]);
        if dlen > 20 {
            return Err(Sense::invalid_field_in_param((at + 7) as u16, None));
        }
        let designator = d[4..8 + dlen].to_vec();
        let block_len = u32::from_be_bytes([0, d[29], d[30], d[31]]);
        targets.push((designator, block_len));
        at += TARGET_LEN;
    }
    let mut segments = Vec::new();
    let end = p.len();
    while at < end {
        if at + 4 > end {
            return Err(Sense::parameter_list_length());
        }
        if p[at] != SEGMENT_B2B {
            return Err(Sense::new(
                SenseKey::IllegalRequest,
                Asc::UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE,
            ));
        }
        if usize::from(be16(p, at + 2)) != SEGMENT_LEN - 4 {
            return Err(Sense::invalid_field_in_param((at + 2) as u16, None));
        }
        if at + SEGMENT_LEN > end {
            return Err(Sense::parameter_list_length());
        }
        if segments.len() >= usize::from(limits::XCOPY_MAX_SEGMENT_DESCRIPTORS) {
            return Err(Sense::new(
                SenseKey::IllegalRequest,
                Asc::TOO_MANY_SEGMENT_DESCRIPTORS,
            ));
        }
        let d = &p[at..at + SEGMENT_LEN];
        segments.push(Segment {
            src: usize::from(be16(d, 4)),
            dst: usize::from(be16(d, 6)),
            blocks: u64::from(be16(d, 10)),
            src_lba: be64(d, 12),
            dst_lba: be64(d, 20),
        });
        at += SEGMENT_LEN;
    }
    Ok(CopyList {
        list_id: p[0],
        hold: usage == 0,
        targets,
        segments,
    })
}

/// Matches a designation descriptor against a logical unit's NAA designator: code set,
/// association and type, length and value (PIV and protocol identifier ignored).
fn names(lu: &LogicalUnit, designator: &[u8]) -> bool {
    let mine = lu.naa_designator();
    designator.len() == mine.len()
        && designator[0] & 0x0F == mine[0] & 0x0F
        && designator[1] & 0x3F == mine[1] & 0x3F
        && designator[3..] == mine[3..]
}

fn record(lu: &LogicalUnit, nexus: u64, list_id: u8, failed: bool, segments: u16, bytes: u64) {
    let mut st = lu.lock();
    st.copies
        .retain(|c| !(c.nexus == nexus && c.list_id == list_id));
    if st.copies.len() >= limits::XCOPY_HELD_RESULTS {
        st.copies.pop_front();
    }
    st.copies.push_back(CopyResult {
        nexus,
        list_id,
        failed,
        segments,
        bytes,
    });
}

/// Runs EXTENDED COPY (LID1).
pub(crate) async fn extended_copy(ch: &LuChannel, cmd: &Command<'_>, param_len: u32) -> Reply {
    let x = Xfer::Out(u64::from(param_len));
    if param_len == 0 {
        return Reply::good(x);
    }
    let list = match parse(param_bytes(cmd, param_len), param_len) {
        Ok(l) => l,
        Err(s) => return Reply::check(s, x),
    };
    let mut segments_done = 0u16;
    let mut bytes = 0u64;
    let result = run(ch, &list, &mut segments_done, &mut bytes).await;
    if list.hold {
        record(
            &ch.0.lu,
            cmd.nexus.id,
            list.list_id,
            result.is_err(),
            segments_done,
            bytes,
        );
    }
    match result {
        Ok(()) => Reply::good(x),
        Err(s) => Reply::check(s, x),
    }
}

async fn run(
    ch: &LuChannel,
    list: &CopyList,
    segments_done: &mut u16,
    bytes: &mut u64,
) -> Result<(), Sense> {
    let me = &ch.0.lu;
    // Resolve every target descriptor to a channel on this core.
    let resolver = me
        .copy_targets
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut chans: Vec<Option<LuChannel>> = Vec::with_capacity(list.targets.len());
    for (designator, block_len) in &list.targets {
        let lu = if names(me, designator) {
            Some(me.clone())
        } else {
            resolver.as_ref().and_then(|r| r.find(designator))
        };
        let chan = match lu {
            Some(lu) if std::sync::Arc::ptr_eq(&lu, me) => Some(ch.clone()),
            Some(lu) => match lu.open() {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "EXTENDED COPY cannot open a target");
                    None
                }
            },
            None => None,
        };
        if let Some(c) = &chan
            && *block_len != 0
            && *block_len != c.0.lu.block_size
        {
            return Err(copy_aborted(Asc::COPY_TARGET_DEVICE_NOT_REACHABLE));
        }
        chans.push(chan);
    }
    // Validate every segment before copying anything.
    for s in &list.segments {
        let src = chans.get(s.src).and_then(Option::as_ref);
        let dst = chans.get(s.dst).and_then(Option::as_ref);
        let (Some(src), Some(dst)) = (src, dst) else {
            return Err(copy_aborted(Asc::UNREACHABLE_COPY_TARGET));
        };
        let bs = src.0.block_size();
        if s.blocks * bs > u64::from(limits::XCOPY_MAX_SEGMENT_BYTES) {
            return Err(copy_aborted(Asc::NO_ADDITIONAL_SENSE));
        }
        if src.0.check_lba(s.src_lba, s.blocks).is_err()
            || dst.0.check_lba(s.dst_lba, s.blocks).is_err()
        {
            return Err(copy_aborted(Asc::NO_ADDITIONAL_SENSE));
        }
        dst.0.check_writable()?;
    }
    for s in &list.segments {
        let (Some(Some(src)), Some(Some(dst))) = (chans.get(s.src), chans.get(s.dst)) else {
            return Err(copy_aborted(Asc::UNREACHABLE_COPY_TARGET));
        };
        let bs = src.0.block_size();
        let per = (u64::from(limits::CHUNK_BYTES) / bs).max(1);
        let mut done = 0;
        while done < s.blocks {
            let n = per.min(s.blocks - done);
            let bufs = src.0.read_blocks(s.src_lba + done, n).await?;
            let lba = s.dst_lba + done;
            let fua = dst.0.write_through();
            let (_, res) = dst
                .0
                .guarded(lba, n, |io| io.write(basalt_bdev::Lba(lba), bufs, fua))
                .await;
            res.map_err(|e| io_sense(&e, IoKind::Write, lba))?;
            done += n;
            *bytes += n * bs;
        }
        *segments_done += 1;
    }
    Ok(())
}

/// RECEIVE COPY RESULTS: COPY STATUS or OPERATING PARAMETERS.
pub(crate) fn receive_copy_results(
    lu: &LogicalUnit,
    nexus: &Nexus,
    operating_parameters: bool,
    list_id: u8,
    alloc_len: u32,
) -> Result<Reply, Sense> {
    if operating_parameters {
        let mut d = vec![0u8; 44];
        d[4] = 0x01; // SNLID
        d[8..10].copy_from_slice(&limits::XCOPY_MAX_TARGET_DESCRIPTORS.to_be_bytes());
        d[10..12].copy_from_slice(&limits::XCOPY_MAX_SEGMENT_DESCRIPTORS.to_be_bytes());
        d[12..16].copy_from_slice(&limits::XCOPY_MAX_DESCRIPTOR_LIST_BYTES.to_be_bytes());
        d[16..20].copy_from_slice(&limits::XCOPY_MAX_SEGMENT_BYTES.to_be_bytes());
        d[34..36].copy_from_slice(&1u16.to_be_bytes()); // total concurrent copies
        d[36] = 1; // maximum concurrent copies
        d[43] = 2;
        d.extend_from_slice(&[SEGMENT_B2B, TARGET_IDENT]);
        let len = u32::try_from(d.len() - 4).unwrap_or(u32::MAX);
        d[..4].copy_from_slice(&len.to_be_bytes());
        return Ok(Reply::data_alloc(d, alloc_len));
    }
    let st = lu.lock();
    let Some(r) = st
        .copies
        .iter()
        .rev()
        .find(|c| c.nexus == nexus.id && c.list_id == list_id)
    else {
        return Err(Sense::invalid_field_in_cdb(2, None));
    };
    let mut d = vec![0u8; 12];
    d[3] = 8;
    d[4] = u8::from(r.failed);
    d[5..7].copy_from_slice(&r.segments.to_be_bytes());
    // Transfer count in KiB (units F1h).
    d[7] = 0xF1;
    d[8..12].copy_from_slice(
        &u32::try_from(r.bytes / 1024)
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    Ok(Reply::data_alloc(d, alloc_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(list_id: u8, usage: u8, tgt: u16, seg: u32) -> Vec<u8> {
        let mut h = vec![0u8; 16];
        h[0] = list_id;
        h[1] = usage << 3;
        h[2..4].copy_from_slice(&tgt.to_be_bytes());
        h[8..12].copy_from_slice(&seg.to_be_bytes());
        h
    }

    fn target(designator: &[u8; 12], block_len: u32) -> Vec<u8> {
        let mut t = vec![0u8; 32];
        t[0] = TARGET_IDENT;
        t[4..16].copy_from_slice(designator);
        t[29..32].copy_from_slice(&block_len.to_be_bytes()[1..]);
        t
    }

    fn segment(src: u16, dst: u16, blocks: u16, src_lba: u64, dst_lba: u64) -> Vec<u8> {
        let mut s = vec![0u8; 28];
        s[0] = SEGMENT_B2B;
        s[3] = 0x18;
        s[4..6].copy_from_slice(&src.to_be_bytes());
        s[6..8].copy_from_slice(&dst.to_be_bytes());
        s[10..12].copy_from_slice(&blocks.to_be_bytes());
        s[12..20].copy_from_slice(&src_lba.to_be_bytes());
        s[20..28].copy_from_slice(&dst_lba.to_be_bytes());
        s
    }

    #[test]
    fn parses_a_valid_list() {
        let d = [0x01u8, 0x03, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut p = header(7, 0, 32, 28);
        p.extend(target(&d, 512));
        p.extend(segment(0, 0, 16, 1, 100));
        let l = parse(&p, p.len() as u32).expect("valid");
        assert_eq!(l.list_id, 7);
        assert!(l.hold);
        assert_eq!(l.targets.len(), 1);
        assert_eq!(l.targets[0].0, d[..].to_vec());
        assert_eq!(l.targets[0].1, 512);
        assert_eq!(l.segments.len(), 1);
        assert_eq!(
            (
                l.segments[0].blocks,
                l.segments[0].src_lba,
                l.segments[0].dst_lba
            ),
            (16, 1, 100)
        );
    }

    #[test]
    fn rejects_malformed_lists() {
        let d = [0x01u8, 0x03, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut p = header(1, 0, 32, 28);
        p.extend(target(&d, 512));
        p.extend(segment(0, 0, 16, 1, 100));
        let n = p.len() as u32;
        assert_eq!(
            parse(&p[..p.len() - 1], n).err(),
            Some(Sense::parameter_list_length())
        );
        let mut q = p.clone();
        q[16] = 0xE0;
        assert_eq!(
            parse(&q, n).err().map(|s| s.asc),
            Some(Asc::UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE)
        );
        let mut q = p.clone();
        q[48] = 0x03;
        assert_eq!(
            parse(&q, n).err().map(|s| s.asc),
            Some(Asc::UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE)
        );
        let mut q = p.clone();
        q[12] = 1;
        assert_eq!(
            parse(&q, n).err(),
            Some(Sense::invalid_field_in_param(12, None))
        );
        let count = usize::from(limits::XCOPY_MAX_TARGET_DESCRIPTORS) + 1;
        let mut q = header(1, 0, (32 * count) as u16, 28);
        for _ in 0..count {
            q.extend(target(&d, 512));
        }
        q.extend(segment(0, 0, 1, 0, 1));
        assert_eq!(
            parse(&q, q.len() as u32).err().map(|s| s.asc),
            Some(Asc::TOO_MANY_TARGET_DESCRIPTORS)
        );
        let count = usize::from(limits::XCOPY_MAX_SEGMENT_DESCRIPTORS) + 1;
        let mut q = header(1, 0, 32, (28 * count) as u32);
        q.extend(target(&d, 512));
        for _ in 0..count {
            q.extend(segment(0, 0, 1, 0, 1));
        }
        assert_eq!(
            parse(&q, q.len() as u32).err().map(|s| s.asc),
            Some(Asc::TOO_MANY_SEGMENT_DESCRIPTORS)
        );
        let mut q = header(1, 0, 32, 28 * 200);
        q.extend(target(&d, 512));
        for _ in 0..200 {
            q.extend(segment(0, 0, 1, 0, 1));
        }
        assert_eq!(
            parse(&q, q.len() as u32).err(),
            Some(Sense::parameter_list_length())
        );
    }
}
