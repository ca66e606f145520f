//! NVMe/TCP PDUs (NVMe/TCP transport binding, TP 8000 / NVMe TCP Transport Specification 1.0).
//!
//! Every PDU starts with an 8-byte common header: type, flags, HLEN (header length), PDO (PDU
//! data offset) and PLEN (total length). After the PDU-specific header come an optional header
//! digest (CRC32C of the header), padding up to PDO, the data, and an optional data digest
//! (CRC32C of the data). [`decode_pdu`] frames and checks one PDU from a byte stream and never
//! panics; the `encode_*` functions append one PDU to a `Vec<u8>`.

use super::cmd::{Cqe, Sqe};

/// Length of the common header.
pub const CH_LEN: usize = 8;
/// Length of ICReq and ICResp (the whole PDU).
pub const IC_LEN: usize = 128;
/// Header length of a capsule command (common header + SQE).
pub const CAPSULE_CMD_HLEN: usize = 72;
/// Header length of a capsule response (common header + CQE).
pub const CAPSULE_RESP_HLEN: usize = 24;
/// Header length of H2CData, C2HData and R2T.
pub const DATA_HLEN: usize = 24;
/// Header length of H2CTermReq and C2HTermReq.
pub const TERM_HLEN: usize = 24;
/// Largest PDU this implementation accepts (a 128 KiB data PDU plus headers, with room).
pub const MAX_PDU_LEN: usize = 256 * 1024 + 512;
/// Most header bytes a termination request echoes back.
pub const TERM_MAX_DATA: usize = 152;

/// Header digest present.
pub const FLAG_HDGSTF: u8 = 0x01;
/// Data digest present.
pub const FLAG_DDGSTF: u8 = 0x02;
/// Last data PDU of a transfer (H2CData, C2HData).
pub const FLAG_DATA_LAST: u8 = 0x04;
/// C2HData: the command completed successfully, no CapsuleResp follows.
pub const FLAG_DATA_SUCCESS: u8 = 0x08;

/// PDU types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PduType {
    /// Initialize Connection Request.
    IcReq = 0x00,
    /// Initialize Connection Response.
    IcResp = 0x01,
    /// Host to controller termination request.
    H2CTermReq = 0x02,
    /// Controller to host termination request.
    C2HTermReq = 0x03,
    /// Command capsule.
    CapsuleCmd = 0x04,
    /// Response capsule.
    CapsuleResp = 0x05,
    /// Host to controller data.
    H2CData = 0x06,
    /// Controller to host data.
    C2HData = 0x07,
    /// Ready to transfer.
    R2T = 0x09,
}

impl PduType {
    /// The type for a raw byte.
    pub fn from_u8(v: u8) -> Option<PduType> {
        Some(match v {
            0x00 => PduType::IcReq,
            0x01 => PduType::IcResp,
            0x02 => PduType::H2CTermReq,
            0x03 => PduType::C2HTermReq,
            0x04 => PduType::CapsuleCmd,
            0x05 => PduType::CapsuleResp,
            0x06 => PduType::H2CData,
            0x07 => PduType::C2HData,
            0x09 => PduType::R2T,
            _ => return None,
        })
    }

    fn hlen(self) -> usize {
        match self {
            PduType::IcReq | PduType::IcResp => IC_LEN,
            PduType::CapsuleCmd => CAPSULE_CMD_HLEN,
            PduType::CapsuleResp => CAPSULE_RESP_HLEN,
            PduType::H2CData | PduType::C2HData | PduType::R2T => DATA_HLEN,
            PduType::H2CTermReq | PduType::C2HTermReq => TERM_HLEN,
        }
    }

    /// Whether header and data digests apply to this type once negotiated.
    fn digested(self) -> bool {
        !matches!(
            self,
            PduType::IcReq | PduType::IcResp | PduType::H2CTermReq | PduType::C2HTermReq
        )
    }

    fn may_carry_data(self) -> bool {
        matches!(
            self,
            PduType::CapsuleCmd
                | PduType::H2CData
                | PduType::C2HData
                | PduType::H2CTermReq
                | PduType::C2HTermReq
        )
    }
}

/// Fatal error status of a termination request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum FatalError {
    /// A header field is invalid (FEI is the byte offset of the field).
    InvalidHeaderField = 0x01,
    /// A PDU arrived that is not allowed in this state.
    PduSequenceError = 0x02,
    /// Header digest mismatch.
    HeaderDigestError = 0x03,
    /// Data offset or length out of the command's range.
    DataTransferOutOfRange = 0x04,
    /// More data or R2Ts than allowed.
    DataTransferLimitExceeded = 0x05,
    /// An ICReq parameter is not supported (FEI is its offset).
    UnsupportedParameter = 0x06,
}

impl FatalError {
    /// The value for a raw field.
    pub fn from_u16(v: u16) -> Option<FatalError> {
        Some(match v {
            0x01 => FatalError::InvalidHeaderField,
            0x02 => FatalError::PduSequenceError,
            0x03 => FatalError::HeaderDigestError,
            0x04 => FatalError::DataTransferOutOfRange,
            0x05 => FatalError::DataTransferLimitExceeded,
            0x06 => FatalError::UnsupportedParameter,
            _ => return None,
        })
    }
}

/// A malformed PDU: what a termination request reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
/// malformed PDU: {fes:?} at byte {fei}
pub struct PduError {
    /// Fatal error status.
    pub fes: FatalError,
    /// Fatal error information (usually the offending byte offset).
    pub fei: u32,
}

impl PduError {
    fn field(fei: u32) -> PduError {
        PduError {
            fes: FatalError::InvalidHeaderField,
            fei,
        }
    }
}

/// Which digests are on for a connection (after ICReq/ICResp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digests {
    /// CRC32C over each PDU header.
    pub header: bool,
    /// CRC32C over each PDU's data.
    pub data: bool,
}

/// Initialize Connection Request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcReq {
    /// PDU format version (0).
    pub pfv: u16,
    /// Host PDU data alignment (0-based, in dwords) for C2H data.
    pub hpda: u8,
    /// Digests the host asks for.
    pub digests: Digests,
    /// Maximum outstanding R2Ts per command (0-based).
    pub maxr2t: u32,
}

/// Initialize Connection Response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcResp {
    /// PDU format version (0).
    pub pfv: u16,
    /// Controller PDU data alignment (0-based, in dwords) for H2C data.
    pub cpda: u8,
    /// Digests enabled.
    pub digests: Digests,
    /// Largest H2CData PDU data the controller accepts, in bytes.
    pub maxh2cdata: u32,
}

/// The header of H2CData and C2HData PDUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHdr {
    /// Command capsule CID.
    pub cccid: u16,
    /// Transfer tag (from the R2T; 0 for C2H).
    pub ttag: u16,
    /// Offset of this PDU's data in the command's data.
    pub datao: u32,
    /// Length of this PDU's data.
    pub datal: u32,
}

/// Ready to transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2t {
    /// Command capsule CID.
    pub cccid: u16,
    /// Transfer tag the host echoes in H2CData.
    pub ttag: u16,
    /// Offset of the data asked for.
    pub r2to: u32,
    /// Length of the data asked for.
    pub r2tl: u32,
}

/// A termination request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermReq {
    /// Fatal error status (raw).
    pub fes: u16,
    /// Fatal error information.
    pub fei: u32,
}

/// One decoded PDU; data borrows the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu<'a> {
    /// ICReq.
    IcReq(IcReq),
    /// ICResp.
    IcResp(IcResp),
    /// A command capsule with its in-capsule data.
    CapsuleCmd {
        /// The submission queue entry.
        sqe: Sqe,
        /// In-capsule data (may be empty).
        data: &'a [u8],
    },
    /// A response capsule.
    CapsuleResp(Cqe),
    /// Host to controller data.
    H2CData {
        /// Header.
        hdr: DataHdr,
        /// Flags (LAST).
        flags: u8,
        /// Data.
        data: &'a [u8],
    },
    /// Controller to host data.
    C2HData {
        /// Header.
        hdr: DataHdr,
        /// Flags (LAST, SUCCESS).
        flags: u8,
        /// Data.
        data: &'a [u8],
    },
    /// Ready to transfer.
    R2T(R2t),
    /// Host to controller termination request.
    H2CTermReq(TermReq),
    /// Controller to host termination request.
    C2HTermReq(TermReq),
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    let mut v = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        v.copy_from_slice(s);
    }
    u16::from_le_bytes(v)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

/// Frames and checks one PDU at the start of `buf`. `Ok(None)` means more bytes are needed;
/// `Ok(Some((pdu, len)))` gives the PDU and how many bytes it took. Digests must match what
/// `digests` says was negotiated (ICReq/ICResp and termination requests never carry them).
/// This is the PDU decoder's fuzzing entry point: it never panics.
///
/// # Errors
/// A malformed header, a length out of bounds, or a digest mismatch (header digest errors are
/// [`FatalError::HeaderDigestError`]; a data digest error is reported as
/// [`FatalError::InvalidHeaderField`] with FEI = PLEN offset, which callers may turn into a
/// command status instead).
pub fn decode_pdu(buf: &[u8], digests: Digests) -> Result<Option<(Pdu<'_>, usize)>, PduError> {
    if buf.len() < CH_LEN {
        return Ok(None);
    }
    let ty = PduType::from_u8(buf[0]).ok_or(PduError::field(0))?;
    let flags = buf[1];
    let hlen = usize::from(buf[2]);
    let pdo = usize::from(buf[3]);
    let plen = u32_at(buf, 4) as usize;
    if hlen != ty.hlen() {
        return Err(PduError::field(2));
    }
    if plen < hlen || plen > MAX_PDU_LEN {
        return Err(PduError::field(4));
    }
    let hd = ty.digested() && digests.header;
    if ty.digested() && (flags & FLAG_HDGSTF != 0) != digests.header {
        return Err(PduError::field(1));
    }
    let hdlen = if hd { 4 } else { 0 };
    let has_data = plen > hlen + hdlen;
    let dd = ty.digested() && digests.data && has_data;
    if ty.digested() && (flags & FLAG_DDGSTF != 0) != dd {
        return Err(PduError::field(1));
    }
    let ddlen = if dd { 4 } else { 0 };
    let data_range = if has_data {
        if !ty.may_carry_data() {
            return Err(PduError::field(4));
        }
        // Termination requests carry their data right after the header (PDO is reserved).
        let start = if matches!(ty, PduType::H2CTermReq | PduType::C2HTermReq) {
            hlen
        } else {
            if pdo < hlen + hdlen || pdo > plen {
                return Err(PduError::field(3));
            }
            pdo
        };
        let end = plen.checked_sub(ddlen).ok_or(PduError::field(4))?;
        if end < start {
            return Err(PduError::field(4));
        }
        start..end
    } else {
        if plen != hlen + hdlen {
            return Err(PduError::field(4));
        }
        plen..plen
    };
    if buf.len() < plen {
        return Ok(None);
    }
    let pdu = &buf[..plen];
    if hd {
        let want = u32_at(pdu, hlen);
        if crc32c::crc32c(&pdu[..hlen]) != want {
            return Err(PduError {
                fes: FatalError::HeaderDigestError,
                fei: 0,
            });
        }
    }
    let data = &pdu[data_range.clone()];
    if dd {
        let want = u32_at(pdu, data_range.end);
        if crc32c::crc32c(data) != want {
            return Err(PduError::field(
                u32::try_from(data_range.end).unwrap_or(u32::MAX),
            ));
        }
    }
    let h = &pdu[..hlen];
    let out = match ty {
        PduType::IcReq | PduType::IcResp => {
            let pfv = u16_at(h, 8);
            let pda = h[10];
            let dgst = h[11];
            let d = Digests {
                header: dgst & 1 != 0,
                data: dgst & 2 != 0,
            };
            let last = u32_at(h, 12);
            if ty == PduType::IcReq {
                Pdu::IcReq(IcReq {
                    pfv,
                    hpda: pda,
                    digests: d,
                    maxr2t: last,
                })
            } else {
                Pdu::IcResp(IcResp {
                    pfv,
                    cpda: pda,
                    digests: d,
                    maxh2cdata: last,
                })
            }
        }
        PduType::CapsuleCmd => {
            let mut raw = [0u8; 64];
            raw.copy_from_slice(&h[8..72]);
            Pdu::CapsuleCmd {
                sqe: Sqe(raw),
                data,
            }
        }
        PduType::CapsuleResp => {
            let mut raw = [0u8; 16];
            raw.copy_from_slice(&h[8..24]);
            Pdu::CapsuleResp(Cqe::decode(&raw))
        }
        PduType::H2CData | PduType::C2HData => {
            let hdr = DataHdr {
                cccid: u16_at(h, 8),
                ttag: u16_at(h, 10),
                datao: u32_at(h, 12),
                datal: u32_at(h, 16),
            };
            if hdr.datal as usize != data.len() {
                return Err(PduError::field(16));
            }
            if ty == PduType::H2CData {
                Pdu::H2CData { hdr, flags, data }
            } else {
                Pdu::C2HData { hdr, flags, data }
            }
        }
        PduType::R2T => Pdu::R2T(R2t {
            cccid: u16_at(h, 8),
            ttag: u16_at(h, 10),
            r2to: u32_at(h, 12),
            r2tl: u32_at(h, 16),
        }),
        PduType::H2CTermReq | PduType::C2HTermReq => {
            let t = TermReq {
                fes: u16_at(h, 8),
                fei: u32_at(h, 10),
            };
            if data.len() > TERM_MAX_DATA {
                return Err(PduError::field(4));
            }
            if ty == PduType::H2CTermReq {
                Pdu::H2CTermReq(t)
            } else {
                Pdu::C2HTermReq(t)
            }
        }
    };
    Ok(Some((out, plen)))
}

/// Appends one PDU: `specific` is the header after the common header (`hlen - 8` bytes),
/// `data` the data pieces in order; `pda` the receiver's data alignment (0-based dwords).
#[allow(clippy::too_many_arguments)]
fn put_pdu(
    out: &mut Vec<u8>,
    ty: PduType,
    mut flags: u8,
    specific: &[u8],
    data: &[&[u8]],
    digests: Digests,
    pda: u8,
) {
    let hlen = CH_LEN + specific.len();
    let hd = ty.digested() && digests.header;
    let data_len: usize = data.iter().map(|d| d.len()).sum();
    let dd = ty.digested() && digests.data && data_len > 0;
    if hd {
        flags |= FLAG_HDGSTF;
    }
    if dd {
        flags |= FLAG_DDGSTF;
    }
    let after_hdr = hlen + if hd { 4 } else { 0 };
    let pdo = if data_len > 0 {
        if matches!(ty, PduType::H2CTermReq | PduType::C2HTermReq) {
            0
        } else {
            let align = (usize::from(pda) + 1) * 4;
            after_hdr.div_ceil(align) * align
        }
    } else {
        0
    };
    let data_start = if pdo == 0 { after_hdr } else { pdo };
    let plen = if data_len > 0 {
        data_start + data_len + if dd { 4 } else { 0 }
    } else {
        after_hdr
    };
    let base = out.len();
    out.push(ty as u8);
    out.push(flags);
    out.push(u8::try_from(hlen).expect("headers are at most 128 bytes"));
    out.push(u8::try_from(pdo).unwrap_or(u8::MAX));
    out.extend_from_slice(&u32::try_from(plen).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(specific);
    if hd {
        let crc = crc32c::crc32c(&out[base..base + hlen]);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    out.resize(base + data_start, 0);
    if data_len > 0 {
        let mut crc = 0u32;
        for d in data {
            out.extend_from_slice(d);
            if dd {
                crc = crc32c::crc32c_append(crc, d);
            }
        }
        if dd {
            out.extend_from_slice(&crc.to_le_bytes());
        }
    }
}

/// Appends an ICReq.
pub fn encode_ic_req(out: &mut Vec<u8>, req: &IcReq) {
    let mut s = [0u8; IC_LEN - CH_LEN];
    s[0..2].copy_from_slice(&req.pfv.to_le_bytes());
    s[2] = req.hpda;
    s[3] = u8::from(req.digests.header) | (u8::from(req.digests.data) << 1);
    s[4..8].copy_from_slice(&req.maxr2t.to_le_bytes());
    put_pdu(out, PduType::IcReq, 0, &s, &[], Digests::default(), 0);
}

/// Appends an ICResp.
pub fn encode_ic_resp(out: &mut Vec<u8>, resp: &IcResp) {
    let mut s = [0u8; IC_LEN - CH_LEN];
    s[0..2].copy_from_slice(&resp.pfv.to_le_bytes());
    s[2] = resp.cpda;
    s[3] = u8::from(resp.digests.header) | (u8::from(resp.digests.data) << 1);
    s[4..8].copy_from_slice(&resp.maxh2cdata.to_le_bytes());
    put_pdu(out, PduType::IcResp, 0, &s, &[], Digests::default(), 0);
}

/// Appends a command capsule with in-capsule `data` (`cpda`: the controller's alignment).
pub fn encode_capsule_cmd(
    out: &mut Vec<u8>,
    sqe: &Sqe,
    data: &[&[u8]],
    digests: Digests,
    cpda: u8,
) {
    put_pdu(out, PduType::CapsuleCmd, 0, &sqe.0, data, digests, cpda);
}

/// Appends a response capsule.
pub fn encode_capsule_resp(out: &mut Vec<u8>, cqe: &Cqe, digests: Digests) {
    put_pdu(out, PduType::CapsuleResp, 0, &cqe.encode(), &[], digests, 0);
}

fn data_specific(h: &DataHdr) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[0..2].copy_from_slice(&h.cccid.to_le_bytes());
    s[2..4].copy_from_slice(&h.ttag.to_le_bytes());
    s[4..8].copy_from_slice(&h.datao.to_le_bytes());
    s[8..12].copy_from_slice(&h.datal.to_le_bytes());
    s
}

/// Appends a C2HData PDU (`flags`: [`FLAG_DATA_LAST`], [`FLAG_DATA_SUCCESS`]); `hdr.datal`
/// must equal the data's total length.
pub fn encode_c2h_data(
    out: &mut Vec<u8>,
    hdr: &DataHdr,
    flags: u8,
    data: &[&[u8]],
    digests: Digests,
    hpda: u8,
) {
    put_pdu(
        out,
        PduType::C2HData,
        flags & (FLAG_DATA_LAST | FLAG_DATA_SUCCESS),
        &data_specific(hdr),
        data,
        digests,
        hpda,
    );
}

/// Appends an H2CData PDU.
pub fn encode_h2c_data(
    out: &mut Vec<u8>,
    hdr: &DataHdr,
    last: bool,
    data: &[&[u8]],
    digests: Digests,
    cpda: u8,
) {
    let flags = if last { FLAG_DATA_LAST } else { 0 };
    put_pdu(
        out,
        PduType::H2CData,
        flags,
        &data_specific(hdr),
        data,
        digests,
        cpda,
    );
}

/// Appends an R2T.
pub fn encode_r2t(out: &mut Vec<u8>, r2t: &R2t, digests: Digests) {
    let mut s = [0u8; 16];
    s[0..2].copy_from_slice(&r2t.cccid.to_le_bytes());
    s[2..4].copy_from_slice(&r2t.ttag.to_le_bytes());
    s[4..8].copy_from_slice(&r2t.r2to.to_le_bytes());
    s[8..12].copy_from_slice(&r2t.r2tl.to_le_bytes());
    put_pdu(out, PduType::R2T, 0, &s, &[], digests, 0);
}

/// Appends a termination request (`c2h`: from the controller) echoing up to 152 bytes of the
/// offending PDU's header.
pub fn encode_term_req(out: &mut Vec<u8>, c2h: bool, err: PduError, offending: &[u8]) {
    let mut s = [0u8; 16];
    s[0..2].copy_from_slice(&(err.fes as u16).to_le_bytes());
    s[2..6].copy_from_slice(&err.fei.to_le_bytes());
    let n = offending.len().min(TERM_MAX_DATA);
    let ty = if c2h {
        PduType::C2HTermReq
    } else {
        PduType::H2CTermReq
    };
    put_pdu(out, ty, 0, &s, &[&offending[..n]], Digests::default(), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_standard_crc32c_little_endian() {
        // The CRC-32C check value (RFC 3720 appendix B.4 uses the same polynomial).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        let mut out = Vec::new();
        encode_capsule_resp(
            &mut out,
            &Cqe::default(),
            Digests {
                header: true,
                data: false,
            },
        );
        assert_eq!(out.len(), 28);
        assert_eq!(out[1], FLAG_HDGSTF);
        assert_eq!(out[4], 28);
        assert_eq!(&out[24..28], &crc32c::crc32c(&out[..24]).to_le_bytes());
    }

    #[test]
    fn ic_req_known_bytes() {
        let mut out = Vec::new();
        encode_ic_req(
            &mut out,
            &IcReq {
                pfv: 0,
                hpda: 0,
                digests: Digests {
                    header: true,
                    data: false,
                },
                maxr2t: 0,
            },
        );
        assert_eq!(out.len(), 128);
        assert_eq!(&out[..8], &[0x00, 0x00, 128, 0, 128, 0, 0, 0]);
        assert_eq!(out[11], 1);
        let (pdu, n) = decode_pdu(&out, Digests::default())
            .expect("valid")
            .expect("whole");
        assert_eq!(n, 128);
        assert!(matches!(pdu, Pdu::IcReq(r) if r.digests.header && !r.digests.data));
    }

    #[test]
    fn capsule_with_data_and_digests_round_trips() {
        let mut sqe = Sqe::default();
        sqe.set_opcode(0x01);
        sqe.set_cid(7);
        let d = Digests {
            header: true,
            data: true,
        };
        let mut out = Vec::new();
        encode_capsule_cmd(&mut out, &sqe, &[b"abc", b"defg"], d, 0);
        // 72 header + 4 hdgst, PDO 76, 7 data, 4 ddgst.
        assert_eq!(out[1], FLAG_HDGSTF | FLAG_DDGSTF);
        assert_eq!(out[3], 76);
        assert_eq!(out.len(), 87);
        assert_eq!(&out[72..76], &crc32c::crc32c(&out[..72]).to_le_bytes());
        assert_eq!(&out[83..87], &crc32c::crc32c(b"abcdefg").to_le_bytes());
        for cut in 0..out.len() {
            assert_eq!(decode_pdu(&out[..cut], d), Ok(None));
        }
        let (pdu, n) = decode_pdu(&out, d).expect("valid").expect("whole");
        assert_eq!(n, 87);
        match pdu {
            Pdu::CapsuleCmd { sqe: s, data } => {
                assert_eq!(s.cid(), 7);
                assert_eq!(data, b"abcdefg");
            }
            other => panic!("{other:?}"),
        }
        // A flipped header bit is a header digest error.
        let mut bad = out.clone();
        bad[10] ^= 1;
        assert_eq!(
            decode_pdu(&bad, d).map(|_| ()).expect_err("bad digest").fes,
            FatalError::HeaderDigestError
        );
        // Flags that disagree with the negotiation are refused.
        assert!(decode_pdu(&out, Digests::default()).is_err());
    }

    #[test]
    fn c2h_data_alignment_and_known_header() {
        let mut out = Vec::new();
        let hdr = DataHdr {
            cccid: 0x1234,
            ttag: 0,
            datao: 4096,
            datal: 4,
        };
        encode_c2h_data(
            &mut out,
            &hdr,
            FLAG_DATA_LAST | FLAG_DATA_SUCCESS,
            &[b"wxyz"],
            Digests::default(),
            7, // 32-byte alignment
        );
        assert_eq!(&out[..8], &[0x07, 0x0C, 24, 32, 36, 0, 0, 0]);
        assert_eq!(&out[8..12], &[0x34, 0x12, 0, 0]);
        assert_eq!(&out[12..16], &4096u32.to_le_bytes());
        assert_eq!(&out[32..], b"wxyz");
        let (pdu, _) = decode_pdu(&out, Digests::default())
            .expect("ok")
            .expect("whole");
        assert!(matches!(pdu, Pdu::C2HData { hdr: h, data, .. } if h == hdr && data == b"wxyz"));
    }

    #[test]
    fn malformed_headers_are_errors() {
        // Unknown type.
        assert_eq!(
            decode_pdu(&[0x08, 0, 24, 0, 24, 0, 0, 0], Digests::default()),
            Err(PduError::field(0))
        );
        // Wrong HLEN for a capsule response.
        assert_eq!(
            decode_pdu(&[0x05, 0, 23, 0, 24, 0, 0, 0], Digests::default()),
            Err(PduError::field(2))
        );
        // PLEN below HLEN, and absurdly large.
        assert!(decode_pdu(&[0x05, 0, 24, 0, 8, 0, 0, 0], Digests::default()).is_err());
        assert!(decode_pdu(&[0x04, 0, 72, 0, 0, 0, 0, 1], Digests::default()).is_err());
        // PDO inside the header.
        let mut out = Vec::new();
        encode_capsule_cmd(&mut out, &Sqe::default(), &[b"x"], Digests::default(), 0);
        out[3] = 8;
        assert_eq!(
            decode_pdu(&out, Digests::default()),
            Err(PduError::field(3))
        );
    }

    #[test]
    fn term_req_carries_header_copy() {
        let mut out = Vec::new();
        let err = PduError {
            fes: FatalError::PduSequenceError,
            fei: 0,
        };
        encode_term_req(&mut out, true, err, &[0xAA; 200]);
        assert_eq!(out.len(), 24 + 152);
        assert_eq!(out[0], 0x03);
        assert_eq!(&out[8..10], &2u16.to_le_bytes());
        let (pdu, _) = decode_pdu(&out, Digests::default())
            .expect("ok")
            .expect("whole");
        assert_eq!(pdu, Pdu::C2HTermReq(TermReq { fes: 2, fei: 0 }));
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
                                h in proptest::prelude::any::<bool>(), d in proptest::prelude::any::<bool>()) {
            let _ = decode_pdu(&bytes, Digests { header: h, data: d });
        }
    }
}
