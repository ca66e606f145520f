//! One NVMe/TCP queue pair's connection, without I/O.
//!
//! Bytes from the socket go into [`Connection::receive`]; complete commands come out of
//! [`Connection::next_event`] with their host data already gathered (in-capsule, or pulled in
//! with R2T/H2CData for larger writes); responses go in through [`Connection::complete`] and
//! [`Connection::send_data`]; bytes for the socket come out of [`Connection::transmit`]. The
//! first PDU must be an ICReq, answered with an ICResp that fixes the digests, the controller's
//! data alignment and MAXH2CDATA. Any malformed PDU queues a C2HTermReq and ends the
//! connection: the caller sends what is queued and closes.
//!
//! Data buffers (`Vec<u8>`) are recycled: give a command's data back with
//! [`Connection::recycle`] and the next command reuses its heap block.

use std::collections::VecDeque;

use crate::spec::cmd::{Cqe, Direction, SGL_INCAPSULE, SGL_TRANSPORT, Sqe, StatusCode};
use crate::spec::pdu::{
    self, DataHdr, Digests, FLAG_DATA_LAST, FLAG_DATA_SUCCESS, FatalError, IcResp, Pdu, PduError,
    R2t,
};

/// Connection limits and offers.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// In-capsule data accepted, bytes (at least 8 KiB).
    pub in_capsule: u32,
    /// Largest H2CData PDU data, bytes.
    pub maxh2cdata: u32,
    /// Largest data transfer of one command, bytes (MDTS).
    pub max_transfer: u32,
    /// Whether header digests are granted when asked for.
    pub header_digest: bool,
    /// Whether data digests are granted when asked for.
    pub data_digest: bool,
    /// Controller PDU data alignment offered (0-based dwords).
    pub cpda: u8,
}

impl Default for ConnConfig {
    fn default() -> ConnConfig {
        ConnConfig {
            in_capsule: 8192,
            maxh2cdata: 128 * 1024,
            max_transfer: 128 * 1024,
            header_digest: true,
            data_digest: true,
            cpda: 0,
        }
    }
}

/// What the connection asks its driver to do.
#[derive(Debug)]
pub enum Event {
    /// A command to execute, with all its host-to-controller data (empty when none).
    Command {
        /// The submission entry.
        sqe: Sqe,
        /// Host data: in-capsule data or everything the R2Ts pulled in.
        data: Vec<u8>,
    },
    /// A command the transport refuses (bad SGL, too much data): complete it with `status`.
    Reject {
        /// The submission entry.
        sqe: Sqe,
        /// The status to complete it with.
        status: StatusCode,
    },
    /// The connection is over (termination request sent or received): flush and close.
    Close,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum State {
    AwaitIcReq,
    Ready,
    Closed,
}

#[derive(Debug)]
struct Xfer {
    sqe: Sqe,
    data: Vec<u8>,
    expected: u32,
}

/// Most R2T transfers in flight on one connection (queue depth 128, with room).
const MAX_XFERS: usize = 256;

/// See the module documentation.
#[derive(Debug)]
pub struct Connection {
    cfg: ConnConfig,
    state: State,
    digests: Digests,
    hpda: u8,
    sqflow_disabled: bool,
    qid: u16,
    sqsize: u16,
    sqhd: u16,
    /// Commands received and not yet completed.
    outstanding: u32,
    out: Vec<u8>,
    events: VecDeque<Event>,
    xfers: Vec<Option<Xfer>>,
    free_ttags: Vec<u16>,
    spare: Vec<Vec<u8>>,
}

impl Connection {
    /// A connection waiting for its ICReq.
    pub fn new(cfg: ConnConfig) -> Connection {
        Connection {
            cfg,
            state: State::AwaitIcReq,
            digests: Digests::default(),
            hpda: 0,
            sqflow_disabled: false,
            qid: 0,
            sqsize: 31,
            sqhd: 0,
            outstanding: 0,
            out: Vec::with_capacity(64 * 1024),
            events: VecDeque::with_capacity(64),
            xfers: (0..MAX_XFERS).map(|_| None).collect(),
            free_ttags: (0..MAX_XFERS as u16).rev().collect(),
            spare: Vec::new(),
        }
    }

    /// The digests in force.
    pub fn digests(&self) -> Digests {
        self.digests
    }

    /// Whether the connection has ended (nothing more will be accepted).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Records the queue this connection serves, once Connect succeeded: SQHD wraps at
    /// `sqsize + 1`; with `sqflow_disabled`, successful reads complete with C2HData SUCCESS.
    pub fn set_queue(&mut self, qid: u16, sqsize: u16, sqflow_disabled: bool) {
        self.qid = qid;
        self.sqsize = sqsize;
        self.sqflow_disabled = sqflow_disabled;
    }

    /// Feeds received bytes; returns how many were consumed (whole PDUs only). The rest must
    /// be offered again with more bytes appended.
    pub fn receive(&mut self, buf: &[u8]) -> usize {
        let mut used = 0usize;
        while self.state != State::Closed {
            let rest = &buf[used..];
            match pdu::decode_pdu(rest, self.digests) {
                Ok(None) => break,
                Ok(Some((p, n))) => {
                    if let Err(e) = self.on_pdu(p) {
                        self.fail(e, &rest[..n.min(pdu::TERM_MAX_DATA)]);
                    }
                    used += n;
                }
                Err(e) => {
                    let hdr = &rest[..rest.len().min(pdu::TERM_MAX_DATA)];
                    self.fail(e, hdr);
                    used = buf.len();
                }
            }
        }
        if self.state == State::Closed {
            buf.len()
        } else {
            used
        }
    }

    fn fail(&mut self, e: PduError, hdr: &[u8]) {
        tracing::debug!(error = %e, "NVMe/TCP fatal transport error");
        pdu::encode_term_req(&mut self.out, true, e, hdr);
        self.close();
    }

    fn close(&mut self) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.events.push_back(Event::Close);
        }
    }

    fn take_vec(&mut self, cap: usize) -> Vec<u8> {
        let mut v = self.spare.pop().unwrap_or_default();
        v.clear();
        v.reserve(cap);
        v
    }

    /// Gives a command's data buffer back for reuse.
    pub fn recycle(&mut self, v: Vec<u8>) {
        if self.spare.len() < 256 && v.capacity() > 0 {
            self.spare.push(v);
        }
    }

    fn on_pdu(&mut self, p: Pdu<'_>) -> Result<(), PduError> {
        let seq = PduError {
            fes: FatalError::PduSequenceError,
            fei: 0,
        };
        match (self.state, p) {
            (State::AwaitIcReq, Pdu::IcReq(req)) => {
                if req.pfv != 0 {
                    return Err(PduError {
                        fes: FatalError::UnsupportedParameter,
                        fei: 8,
                    });
                }
                if req.hpda > 31 {
                    return Err(PduError {
                        fes: FatalError::UnsupportedParameter,
                        fei: 10,
                    });
                }
                self.hpda = req.hpda;
                let granted = Digests {
                    header: req.digests.header && self.cfg.header_digest,
                    data: req.digests.data && self.cfg.data_digest,
                };
                pdu::encode_ic_resp(
                    &mut self.out,
                    &IcResp {
                        pfv: 0,
                        cpda: self.cfg.cpda,
                        digests: granted,
                        maxh2cdata: self.cfg.maxh2cdata,
                    },
                );
                self.digests = granted;
                self.state = State::Ready;
                Ok(())
            }
            (State::AwaitIcReq, _) | (State::Ready, Pdu::IcReq(_)) => Err(seq),
            (State::Ready, Pdu::CapsuleCmd { sqe, data }) => {
                // A host may not have more commands outstanding than its queue holds.
                if self.outstanding > u32::from(self.sqsize) {
                    return Err(seq);
                }
                self.outstanding += 1;
                self.sqhd = if self.sqhd >= self.sqsize {
                    0
                } else {
                    self.sqhd + 1
                };
                self.on_capsule(sqe, data);
                Ok(())
            }
            (State::Ready, Pdu::H2CData { hdr, flags, data }) => self.on_h2c(hdr, flags, data),
            (State::Ready, Pdu::H2CTermReq(t)) => {
                tracing::debug!(fes = t.fes, fei = t.fei, "host terminated the connection");
                self.close();
                Ok(())
            }
            (State::Ready, _) => Err(PduError {
                fes: FatalError::InvalidHeaderField,
                fei: 0,
            }),
            (State::Closed, _) => Ok(()),
        }
    }

    fn on_capsule(&mut self, sqe: Sqe, data: &[u8]) {
        let sgl = sqe.sgl();
        let reject = |s: &mut Connection, status| s.events.push_back(Event::Reject { sqe, status });
        if !data.is_empty() {
            // In-capsule data: an offset descriptor at offset 0 covering exactly this data.
            if sgl.sgl_type != SGL_INCAPSULE || sgl.addr != 0 {
                return reject(self, StatusCode::SglDescriptorTypeInvalid);
            }
            if data.len() > self.cfg.in_capsule as usize || sgl.len as usize != data.len() {
                return reject(self, StatusCode::DataSglLengthInvalid);
            }
            let mut v = self.take_vec(data.len());
            v.extend_from_slice(data);
            self.events.push_back(Event::Command { sqe, data: v });
            return;
        }
        if sgl.sgl_type == SGL_INCAPSULE && sgl.len != 0 {
            return reject(self, StatusCode::DataSglLengthInvalid);
        }
        let wants_data = matches!(sqe.direction(), Direction::HostToController)
            && sgl.sgl_type == SGL_TRANSPORT
            && sgl.len > 0;
        if !wants_data {
            self.events.push_back(Event::Command {
                sqe,
                data: Vec::new(),
            });
            return;
        }
        if sgl.len > self.cfg.max_transfer {
            return reject(self, StatusCode::DataSglLengthInvalid);
        }
        let Some(ttag) = self.free_ttags.pop() else {
            return reject(self, StatusCode::InternalError);
        };
        let data = self.take_vec(sgl.len as usize);
        self.xfers[usize::from(ttag)] = Some(Xfer {
            sqe,
            data,
            expected: sgl.len,
        });
        pdu::encode_r2t(
            &mut self.out,
            &R2t {
                cccid: sqe.cid(),
                ttag,
                r2to: 0,
                r2tl: sgl.len,
            },
            self.digests,
        );
    }

    fn on_h2c(&mut self, hdr: DataHdr, flags: u8, data: &[u8]) -> Result<(), PduError> {
        let field = |fei| PduError {
            fes: FatalError::InvalidHeaderField,
            fei,
        };
        let slot = self.xfers.get_mut(usize::from(hdr.ttag)).ok_or(field(10))?;
        let x = slot.as_mut().ok_or(field(10))?;
        if x.sqe.cid() != hdr.cccid {
            return Err(field(8));
        }
        if hdr.datal > self.cfg.maxh2cdata {
            return Err(PduError {
                fes: FatalError::DataTransferLimitExceeded,
                fei: 16,
            });
        }
        let end = hdr.datao.checked_add(hdr.datal);
        if hdr.datao as usize != x.data.len() || end.is_none_or(|e| e > x.expected) {
            return Err(PduError {
                fes: FatalError::DataTransferOutOfRange,
                fei: 12,
            });
        }
        x.data.extend_from_slice(data);
        let done = x.data.len() == x.expected as usize;
        if done != (flags & FLAG_DATA_LAST != 0) {
            return Err(field(1));
        }
        if done {
            let x = slot.take().expect("checked above");
            self.free_ttags.push(hdr.ttag);
            self.events.push_back(Event::Command {
                sqe: x.sqe,
                data: x.data,
            });
        }
        Ok(())
    }

    /// The next thing to do, if any.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Queues a response capsule for `cqe` (SQHD and SQID are filled in here).
    pub fn complete(&mut self, mut cqe: Cqe) {
        if self.state == State::Closed {
            return;
        }
        cqe.sqhd = self.sqhd;
        cqe.sqid = self.qid;
        self.outstanding = self.outstanding.saturating_sub(1);
        pdu::encode_capsule_resp(&mut self.out, &cqe, self.digests);
    }

    /// Queues read data for command `cid` (one C2HData PDU per 128 KiB), then the completion:
    /// folded into the last PDU's SUCCESS flag when SQ flow control is off and the status is
    /// success, otherwise as a response capsule.
    pub fn send_data(&mut self, cqe: Cqe, data: &[&[u8]]) {
        if self.state == State::Closed {
            return;
        }
        let total: usize = data.iter().map(|d| d.len()).sum();
        let success = self.sqflow_disabled && cqe.status.is_success();
        // Split into PDUs of at most 128 KiB along the given pieces.
        const PDU_MAX: usize = 128 * 1024;
        let mut off = 0usize;
        let mut pieces: smallvec::SmallVec<[&[u8]; 8]> = smallvec::SmallVec::new();
        let mut cur = 0usize;
        for (i, d) in data.iter().enumerate() {
            let mut d: &[u8] = d;
            while !d.is_empty() {
                let take = d.len().min(PDU_MAX - cur);
                pieces.push(&d[..take]);
                cur += take;
                d = &d[take..];
                let last_piece = d.is_empty() && i + 1 == data.len();
                if cur == PDU_MAX || last_piece {
                    let last = off + cur == total;
                    let mut flags = if last { FLAG_DATA_LAST } else { 0 };
                    if last && success {
                        flags |= FLAG_DATA_SUCCESS;
                    }
                    pdu::encode_c2h_data(
                        &mut self.out,
                        &DataHdr {
                            cccid: cqe.cid,
                            ttag: 0,
                            datao: u32::try_from(off).unwrap_or(u32::MAX),
                            datal: u32::try_from(cur).unwrap_or(u32::MAX),
                        },
                        flags,
                        &pieces,
                        self.digests,
                        self.hpda,
                    );
                    off += cur;
                    cur = 0;
                    pieces.clear();
                }
            }
        }
        if success && total > 0 {
            self.outstanding = self.outstanding.saturating_sub(1);
        } else {
            self.complete(cqe);
        }
    }

    /// Moves queued bytes for the socket into `out` (appending).
    pub fn transmit(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.out);
        } else {
            out.append(&mut self.out);
        }
    }

    /// Whether bytes are queued for the socket.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::cmd::{SglDesc, StatusCode, nvm};
    use crate::spec::pdu::{IcReq, encode_capsule_cmd, encode_h2c_data, encode_ic_req};

    fn ready(d: Digests) -> Connection {
        let mut c = Connection::new(ConnConfig::default());
        let mut b = Vec::new();
        encode_ic_req(
            &mut b,
            &IcReq {
                pfv: 0,
                hpda: 0,
                digests: d,
                maxr2t: 0,
            },
        );
        assert_eq!(c.receive(&b), 128);
        let mut out = Vec::new();
        c.transmit(&mut out);
        let (p, _) = pdu::decode_pdu(&out, Digests::default())
            .expect("ok")
            .expect("whole");
        match p {
            Pdu::IcResp(r) => {
                assert_eq!(r.digests, d);
                assert_eq!(r.maxh2cdata, 128 * 1024);
                assert_eq!(r.cpda, 0);
            }
            other => panic!("{other:?}"),
        }
        c
    }

    fn write_sqe(cid: u16, len: u32, sgl_type: u8) -> Sqe {
        let mut sqe = Sqe::default();
        sqe.set_opcode(nvm::WRITE);
        sqe.set_cid(cid);
        sqe.set_nsid(1);
        sqe.set_sgl(SglDesc {
            addr: 0,
            len,
            sgl_type,
        });
        sqe
    }

    #[test]
    fn in_capsule_write_is_one_event() {
        let d = Digests {
            header: true,
            data: true,
        };
        let mut c = ready(d);
        let mut b = Vec::new();
        encode_capsule_cmd(&mut b, &write_sqe(3, 4, SGL_INCAPSULE), &[b"data"], d, 0);
        // Byte by byte: nothing until the PDU is whole.
        for i in 0..b.len() - 1 {
            assert_eq!(c.receive(&b[..=i]), 0);
        }
        assert_eq!(c.receive(&b), b.len());
        match c.next_event() {
            Some(Event::Command { sqe, data }) => {
                assert_eq!(sqe.cid(), 3);
                assert_eq!(data, b"data");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn large_write_goes_through_r2t() {
        let d = Digests::default();
        let mut c = ready(d);
        let mut b = Vec::new();
        encode_capsule_cmd(&mut b, &write_sqe(9, 20000, SGL_TRANSPORT), &[], d, 0);
        c.receive(&b);
        assert!(c.next_event().is_none());
        let mut out = Vec::new();
        c.transmit(&mut out);
        let (p, _) = pdu::decode_pdu(&out, d).expect("ok").expect("whole");
        let Pdu::R2T(r2t) = p else { panic!("{p:?}") };
        assert_eq!((r2t.cccid, r2t.r2to, r2t.r2tl), (9, 0, 20000));
        let payload: Vec<u8> = (0..20000u32).map(|i| i as u8).collect();
        let mut b = Vec::new();
        for (i, chunk) in payload.chunks(8192).enumerate() {
            encode_h2c_data(
                &mut b,
                &DataHdr {
                    cccid: 9,
                    ttag: r2t.ttag,
                    datao: (i * 8192) as u32,
                    datal: chunk.len() as u32,
                },
                (i + 1) * 8192 >= 20000,
                &[chunk],
                d,
                0,
            );
        }
        assert_eq!(c.receive(&b), b.len());
        match c.next_event() {
            Some(Event::Command { sqe, data }) => {
                assert_eq!(sqe.cid(), 9);
                assert_eq!(data, payload);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn out_of_order_h2c_terminates() {
        let d = Digests::default();
        let mut c = ready(d);
        let mut b = Vec::new();
        encode_capsule_cmd(&mut b, &write_sqe(1, 8192, SGL_TRANSPORT), &[], d, 0);
        c.receive(&b);
        let mut out = Vec::new();
        c.transmit(&mut out);
        let mut b = Vec::new();
        encode_h2c_data(
            &mut b,
            &DataHdr {
                cccid: 1,
                ttag: 0,
                datao: 4096,
                datal: 4,
            },
            false,
            &[b"abcd"],
            d,
            0,
        );
        c.receive(&b);
        assert!(matches!(c.next_event(), Some(Event::Close)));
        assert!(c.is_closed());
        let mut out = Vec::new();
        c.transmit(&mut out);
        let (p, _) = pdu::decode_pdu(&out, d).expect("ok").expect("whole");
        assert!(
            matches!(p, Pdu::C2HTermReq(t) if t.fes == FatalError::DataTransferOutOfRange as u16)
        );
    }

    #[test]
    fn garbage_before_icreq_terminates() {
        let mut c = Connection::new(ConnConfig::default());
        let mut b = Vec::new();
        encode_capsule_cmd(&mut b, &Sqe::default(), &[], Digests::default(), 0);
        assert_eq!(c.receive(&b), b.len());
        assert!(matches!(c.next_event(), Some(Event::Close)));
        let mut out = Vec::new();
        c.transmit(&mut out);
        assert_eq!(out[0], 0x03);
        assert_eq!(&out[8..10], &2u16.to_le_bytes());
        // Random junk is a termination too.
        let mut c = ready(Digests::default());
        c.receive(&[0xFF; 64]);
        assert!(matches!(c.next_event(), Some(Event::Close)));
    }

    #[test]
    fn more_commands_than_the_queue_holds_terminate() {
        let d = Digests::default();
        let mut c = ready(d);
        c.set_queue(1, 3, false); // 4 entries
        let mut b = Vec::new();
        for cid in 0..4 {
            let mut sqe = Sqe::default();
            sqe.set_opcode(nvm::FLUSH);
            sqe.set_cid(cid);
            encode_capsule_cmd(&mut b, &sqe, &[], d, 0);
        }
        c.receive(&b);
        for _ in 0..4 {
            assert!(matches!(c.next_event(), Some(Event::Command { .. })));
        }
        // One completes: one more fits, a second does not.
        c.complete(Cqe::default());
        let mut one = Vec::new();
        encode_capsule_cmd(&mut one, &Sqe::default(), &[], d, 0);
        c.receive(&one);
        assert!(matches!(c.next_event(), Some(Event::Command { .. })));
        c.receive(&one);
        assert!(matches!(c.next_event(), Some(Event::Close)));
    }

    #[test]
    fn oversized_transfer_is_rejected_with_status() {
        let d = Digests::default();
        let mut c = ready(d);
        let mut b = Vec::new();
        encode_capsule_cmd(&mut b, &write_sqe(2, 1 << 20, SGL_TRANSPORT), &[], d, 0);
        c.receive(&b);
        assert!(matches!(
            c.next_event(),
            Some(Event::Reject {
                status: StatusCode::DataSglLengthInvalid,
                ..
            })
        ));
    }

    /// A valid session: ICReq, an in-capsule write, a large write with its H2CData.
    fn session(d: Digests) -> Vec<u8> {
        let mut b = Vec::new();
        encode_ic_req(
            &mut b,
            &IcReq {
                pfv: 0,
                hpda: 0,
                digests: d,
                maxr2t: 0,
            },
        );
        encode_capsule_cmd(&mut b, &write_sqe(1, 4, SGL_INCAPSULE), &[b"abcd"], d, 0);
        encode_capsule_cmd(&mut b, &write_sqe(2, 9000, SGL_TRANSPORT), &[], d, 0);
        encode_h2c_data(
            &mut b,
            &DataHdr {
                cccid: 2,
                ttag: 0,
                datao: 0,
                datal: 9000,
            },
            true,
            &[&[7u8; 9000]],
            d,
            0,
        );
        b
    }

    #[test]
    fn whole_session_in_random_pieces() {
        let d = Digests {
            header: true,
            data: true,
        };
        let bytes = session(d);
        for step in [1usize, 7, 100, 4096] {
            let mut c = Connection::new(ConnConfig::default());
            let mut buf = Vec::new();
            for chunk in bytes.chunks(step) {
                buf.extend_from_slice(chunk);
                let used = c.receive(&buf);
                buf.drain(..used);
            }
            assert!(buf.is_empty());
            let mut cmds = 0;
            while let Some(ev) = c.next_event() {
                assert!(matches!(ev, Event::Command { .. }), "{ev:?}");
                cmds += 1;
            }
            assert_eq!(cmds, 2);
        }
    }

    proptest::proptest! {
        /// Any corruption of a valid session ends in commands, rejects or a close: never a
        /// panic, and nothing after the close.
        #[test]
        fn corrupted_sessions_never_panic(
            flips in proptest::collection::vec((0usize..9400, proptest::prelude::any::<u8>()), 1..8),
            h in proptest::prelude::any::<bool>(),
            dd in proptest::prelude::any::<bool>(),
        ) {
            let mut bytes = session(Digests { header: h, data: dd });
            for (at, v) in flips {
                let n = bytes.len();
                bytes[at % n] ^= v | 1;
            }
            let mut c = Connection::new(ConnConfig::default());
            let used = c.receive(&bytes);
            proptest::prop_assert!(used <= bytes.len());
            let mut closed = false;
            while let Some(ev) = c.next_event() {
                proptest::prop_assert!(!closed, "event after close");
                closed = matches!(ev, Event::Close);
            }
        }
    }

    #[test]
    fn read_data_with_success_flag_when_sqflow_disabled() {
        let d = Digests::default();
        let mut c = ready(d);
        c.set_queue(1, 127, true);
        let cqe = Cqe {
            cid: 5,
            ..Default::default()
        };
        c.send_data(cqe, &[b"ab", b"cd"]);
        let mut out = Vec::new();
        c.transmit(&mut out);
        let (p, n) = pdu::decode_pdu(&out, d).expect("ok").expect("whole");
        assert_eq!(n, out.len(), "no response capsule follows");
        assert!(
            matches!(p, Pdu::C2HData { flags, data, .. } if flags == FLAG_DATA_LAST | FLAG_DATA_SUCCESS && data == b"abcd")
        );
        // With flow control on, a response capsule follows.
        c.set_queue(1, 127, false);
        c.send_data(cqe, &[b"ab"]);
        let mut out = Vec::new();
        c.transmit(&mut out);
        let (_, n) = pdu::decode_pdu(&out, d).expect("ok").expect("whole");
        let (p, _) = pdu::decode_pdu(&out[n..], d).expect("ok").expect("whole");
        assert!(matches!(p, Pdu::CapsuleResp(r) if r.cid == 5 && r.sqid == 1));
    }
}
