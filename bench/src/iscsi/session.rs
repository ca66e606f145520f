//! One iSCSI session of one connection on the calling reactor: login, then SCSI commands from
//! any number of tasks of that reactor at once, with a reader and a writer task on the socket
//! (the pattern of `basalt_nvmf::host`).
//!
//! # State
//!
//! A command owns a slot (its ITT is the slot index and a generation) from submission to
//! completion; its buffers live in the slot meanwhile, so the reader copies Data-In straight
//! into them and R2Ts are answered from them, with no copy of our own. CmdSN is taken when the
//! command is encoded, in the same borrow, so commands go out in CmdSN order; a command waits
//! while CmdSN is beyond MaxCmdSN.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use basalt_bdev::IoVecs;
use basalt_engine::{Signal, TcpStream};
use basalt_iscsi::pdu::{
    self, Bhs, CmdSn, DataOut, DataSn, Digests, Frame, Itt, LogoutRequest, Lun, NopOut,
    ScsiCommand, StatSn, Ttt,
};

use super::error::{ScsiError, SessionError, from_status};
use super::login::{Login, LoginParams, MAX_RECV_SEGMENT, Negotiated, Step};

/// Largest receive per call: one maximal data segment and its header.
const RECV_CHUNK: usize = MAX_RECV_SEGMENT as usize + 4096;

/// ITT of the Logout Request (outside the slot range).
const LOGOUT_ITT: Itt = Itt(0xffff_fffe);

/// How long a logout waits for its response.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(3);

/// Direction of a command's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// No data.
    None,
    /// Data-In into the buffers.
    Read,
    /// Data-Out from the buffers.
    Write,
}

#[derive(Debug, Default)]
struct Slot {
    busy: bool,
    generation: u16,
    dir: Option<Dir>,
    bufs: Option<IoVecs>,
    len: u32,
    received: u32,
    done: Option<Result<(), ScsiError>>,
    waker: Option<Waker>,
}

#[derive(Debug)]
struct State {
    out: Vec<u8>,
    slots: Vec<Slot>,
    free: Vec<u16>,
    cmd_sn: CmdSn,
    max_cmd_sn: CmdSn,
    exp_stat_sn: StatSn,
    /// Tasks waiting for the command window or a slot.
    waiting: Vec<Waker>,
    closed: Option<String>,
    neg: Negotiated,
    /// The Logout Response's code, once it came.
    logout: Option<u8>,
    logout_waker: Option<Waker>,
}

#[derive(Debug)]
struct Inner {
    st: RefCell<State>,
    out: Signal,
    stream: TcpStream,
    closing: Cell<bool>,
}

/// A logged-in session. Clones share it.
#[derive(Debug, Clone)]
pub struct Session {
    inner: Rc<Inner>,
}

fn itt_of(idx: u16, generation: u16) -> Itt {
    Itt((u32::from(generation) << 16) | u32::from(idx))
}

/// Appends one PDU whose data segment is `bufs[from..from + len]` (no digests).
fn push_pdu(out: &mut Vec<u8>, bhs: &Bhs, bufs: Option<&IoVecs>, from: usize, len: usize) {
    out.extend_from_slice(&pdu::encode_bhs(bhs, 0, len as u32));
    if len == 0 {
        return;
    }
    let mut skip = from;
    let mut left = len;
    for b in bufs.into_iter().flatten() {
        if left == 0 {
            break;
        }
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        let n = (b.len() - skip).min(left);
        out.extend_from_slice(&b[skip..skip + n]);
        skip = 0;
        left -= n;
    }
    out.resize(out.len() + pdu::pad_len(len), 0);
}

/// Copies `data` into `bufs` at byte `at`.
fn copy_in(bufs: &mut IoVecs, mut at: usize, mut data: &[u8]) {
    for b in bufs.iter_mut() {
        if data.is_empty() {
            break;
        }
        if at >= b.len() {
            at -= b.len();
            continue;
        }
        let n = (b.len() - at).min(data.len());
        b[at..at + n].copy_from_slice(&data[..n]);
        data = &data[n..];
        at = 0;
    }
}

/// Appends the Data-Out PDUs for `[start, end)` of a write (one sequence).
fn push_data_out(st: &mut State, idx: usize, itt: Itt, ttt: Ttt, start: u32, end: u32) {
    let max = st.neg.target_max_segment.max(512);
    let exp_stat_sn = st.exp_stat_sn;
    let State { out, slots, .. } = st;
    let bufs = slots[idx].bufs.as_ref();
    let mut off = start;
    let mut sn = 0u32;
    while off < end {
        let n = (end - off).min(max);
        let bhs = Bhs::DataOut(DataOut {
            final_: off + n == end,
            lun: Lun::default(),
            itt,
            ttt,
            exp_stat_sn,
            data_sn: DataSn(sn),
            buffer_offset: off,
        });
        push_pdu(out, &bhs, bufs, off as usize, n as usize);
        off += n;
        sn += 1;
    }
}

impl State {
    /// Takes the target's ExpCmdSN and MaxCmdSN; true when the window grew.
    fn window(&mut self, exp: CmdSn, max: CmdSn) -> bool {
        // RFC 7143 §4.2.2.1: a MaxCmdSN below ExpCmdSN - 1 is ignored with its ExpCmdSN.
        if max.wrapping_add(1).lt(exp) {
            return false;
        }
        if max.gt(self.max_cmd_sn) {
            self.max_cmd_sn = max;
            return true;
        }
        false
    }

    fn stat(&mut self, sn: StatSn) {
        if sn.next().gt(self.exp_stat_sn) {
            self.exp_stat_sn = sn.next();
        }
    }

    fn slot_of(&self, itt: Itt) -> Option<usize> {
        let idx = (itt.0 & 0xffff) as usize;
        let generation = (itt.0 >> 16) as u16;
        self.slots
            .get(idx)
            .filter(|s| s.busy && s.generation == generation && s.done.is_none())
            .map(|_| idx)
    }

    fn complete(&mut self, idx: usize, r: Result<(), ScsiError>) -> Option<Waker> {
        let s = &mut self.slots[idx];
        s.done = Some(r);
        s.waker.take()
    }
}

/// Handles one PDU from the target; returns the wakers to wake, or why the session ends.
fn on_pdu(st: &mut State, p: &pdu::Pdu<'_>, wake: &mut Vec<Waker>) -> Result<(), String> {
    let mut opened = false;
    match p.bhs {
        Bhs::DataIn(d) => {
            opened = st.window(d.exp_cmd_sn, d.max_cmd_sn);
            let idx = st
                .slot_of(d.itt)
                .ok_or_else(|| format!("Data-In for unknown task {}", d.itt))?;
            let s = &mut st.slots[idx];
            let end = d.buffer_offset as usize + p.data.len();
            if s.dir != Some(Dir::Read) || d.buffer_offset != s.received || end > s.len as usize {
                return Err(format!(
                    "Data-In out of order or range (offset {}, {} bytes, task of {} bytes)",
                    d.buffer_offset,
                    p.data.len(),
                    s.len
                ));
            }
            if let Some(b) = s.bufs.as_mut() {
                copy_in(b, d.buffer_offset as usize, p.data);
            }
            s.received = end as u32;
            if let Some(status) = d.status {
                st.stat(d.stat_sn);
                let s = &st.slots[idx];
                let r = if status != 0 {
                    Err(from_status(status, &[]))
                } else if s.received < s.len {
                    Err(ScsiError::Short {
                        got: s.received,
                        expected: s.len,
                    })
                } else {
                    Ok(())
                };
                wake.extend(st.complete(idx, r));
            }
        }
        Bhs::ScsiResponse(r) => {
            opened = st.window(r.exp_cmd_sn, r.max_cmd_sn);
            st.stat(r.stat_sn);
            let idx = st
                .slot_of(r.itt)
                .ok_or_else(|| format!("SCSI Response for unknown task {}", r.itt))?;
            let s = &st.slots[idx];
            let res = if r.response != 0 {
                Err(ScsiError::TargetFailure(r.response))
            } else if r.status != 0 {
                Err(from_status(r.status, p.data))
            } else if s.dir == Some(Dir::Read) && s.received < s.len {
                Err(ScsiError::Short {
                    got: s.received,
                    expected: s.len,
                })
            } else if s.dir == Some(Dir::Write) && r.underflow && r.residual > 0 {
                Err(ScsiError::Short {
                    got: s.len - r.residual.min(s.len),
                    expected: s.len,
                })
            } else {
                Ok(())
            };
            wake.extend(st.complete(idx, res));
        }
        Bhs::R2t(r) => {
            opened = st.window(r.exp_cmd_sn, r.max_cmd_sn);
            let idx = st
                .slot_of(r.itt)
                .ok_or_else(|| format!("R2T for unknown task {}", r.itt))?;
            let s = &st.slots[idx];
            let end = u64::from(r.buffer_offset) + u64::from(r.desired_len);
            if s.dir != Some(Dir::Write) || r.desired_len == 0 || end > u64::from(s.len) {
                return Err(format!(
                    "R2T out of range (offset {}, {} bytes, task of {} bytes)",
                    r.buffer_offset, r.desired_len, s.len
                ));
            }
            push_data_out(st, idx, r.itt, r.ttt, r.buffer_offset, end as u32);
        }
        Bhs::NopIn(n) => {
            opened = st.window(n.exp_cmd_sn, n.max_cmd_sn);
            if !n.itt.is_reserved() {
                st.stat(n.stat_sn);
            }
            if !n.ttt.is_reserved() {
                // A ping from the target: answer it (immediate, CmdSN not advanced).
                let bhs = Bhs::NopOut(NopOut {
                    immediate: true,
                    lun: n.lun,
                    itt: Itt::RESERVED,
                    ttt: n.ttt,
                    cmd_sn: st.cmd_sn,
                    exp_stat_sn: st.exp_stat_sn,
                });
                push_pdu(&mut st.out, &bhs, None, 0, 0);
            }
        }
        Bhs::LogoutResponse(r) => {
            st.window(r.exp_cmd_sn, r.max_cmd_sn);
            st.stat(r.stat_sn);
            st.logout = Some(r.response);
            wake.extend(st.logout_waker.take());
        }
        Bhs::Reject(r) => {
            opened = st.window(r.exp_cmd_sn, r.max_cmd_sn);
            st.stat(r.stat_sn);
            let itt = p
                .data
                .get(16..20)
                .map(|b| Itt(u32::from_be_bytes([b[0], b[1], b[2], b[3]])));
            match itt.and_then(|i| st.slot_of(i)) {
                Some(idx) => wake.extend(st.complete(idx, Err(ScsiError::Rejected(r.reason)))),
                None => {
                    return Err(format!(
                        "the target rejected a PDU (reason {:#04x})",
                        r.reason
                    ));
                }
            }
        }
        Bhs::AsyncMessage(a) => {
            opened = st.window(a.exp_cmd_sn, a.max_cmd_sn);
            st.stat(a.stat_sn);
            tracing::warn!(
                event = a.event,
                "iSCSI asynchronous message from the target"
            );
        }
        other => return Err(format!("unexpected {:?} PDU", other.opcode())),
    }
    if opened {
        wake.append(&mut st.waiting);
    }
    Ok(())
}

fn fail_all(inner: &Inner, why: String) {
    let wakers: Vec<Waker> = {
        let mut st = inner.st.borrow_mut();
        if st.closed.is_none() {
            st.closed = Some(why);
        }
        let mut w: Vec<Waker> = st.slots.iter_mut().filter_map(|s| s.waker.take()).collect();
        w.append(&mut st.waiting);
        w.extend(st.logout_waker.take());
        w
    };
    for w in wakers {
        w.wake();
    }
    inner.out.notify();
}

async fn reader(inner: Rc<Inner>, mut buf: Vec<u8>) {
    let mut wake: Vec<Waker> = Vec::new();
    let why = 'outer: loop {
        let mut used = 0usize;
        let mut failed = None;
        {
            let mut st = inner.st.borrow_mut();
            loop {
                match pdu::frame(&buf[used..], Digests::default(), MAX_RECV_SEGMENT) {
                    Frame::Need(_) => break,
                    Frame::Malformed(e) => {
                        failed = Some(format!("malformed PDU: {e}"));
                        break;
                    }
                    Frame::Complete(n) => {
                        let r = pdu::parse_pdu(
                            &buf[used..used + n],
                            Digests::default(),
                            MAX_RECV_SEGMENT,
                        )
                        .map_err(|e| format!("malformed PDU: {e}"))
                        .and_then(|p| on_pdu(&mut st, &p, &mut wake));
                        used += n;
                        if let Err(e) = r {
                            failed = Some(e);
                            break;
                        }
                    }
                }
            }
        }
        buf.drain(..used);
        for w in wake.drain(..) {
            w.wake();
        }
        inner.out.notify();
        if let Some(f) = failed {
            break f;
        }
        let (b, r) = inner.stream.recv_into_vec(buf, RECV_CHUNK).await;
        buf = b;
        match r {
            Ok(0) => break 'outer "closed by the target".to_owned(),
            Err(e) => break e.to_string(),
            Ok(_) => {}
        }
    };
    if !inner.closing.get() {
        tracing::debug!(reason = %why, "iSCSI session closed");
    }
    fail_all(&inner, why);
    let _ = inner.stream.shutdown();
}

async fn writer(inner: Rc<Inner>) {
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        out.clear();
        std::mem::swap(&mut out, &mut inner.st.borrow_mut().out);
        if out.is_empty() {
            if inner.closing.get() || inner.st.borrow().closed.is_some() {
                break;
            }
            inner.out.wait().await;
            continue;
        }
        let (b, r) = inner.stream.send_all_vec(out, 0).await;
        out = b;
        if r.is_err() {
            break;
        }
    }
}

/// Receives Login Responses until the login completes; returns the parameters and any bytes
/// received after the last response.
async fn login(
    stream: &TcpStream,
    params: LoginParams,
) -> Result<(Negotiated, Vec<u8>), SessionError> {
    let (mut l, first) = Login::start(params);
    let (_, r) = stream.send_all_vec(first, 0).await;
    r.map_err(SessionError::Io)?;
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let n = match pdu::frame(&buf, Digests::default(), MAX_RECV_SEGMENT) {
            Frame::Complete(n) => n,
            Frame::Malformed(e) => return Err(e.into()),
            Frame::Need(_) => {
                let (b, r) = stream.recv_into_vec(buf, 16 * 1024).await;
                buf = b;
                if r.map_err(SessionError::Io)? == 0 {
                    return Err(SessionError::ClosedDuringLogin);
                }
                continue;
            }
        };
        let step = {
            let p = pdu::parse_pdu(&buf[..n], Digests::default(), MAX_RECV_SEGMENT)?;
            match p.bhs {
                Bhs::LoginResponse(r) => l.on_response(&r, p.data)?,
                other => return Err(SessionError::UnexpectedPdu(other.opcode())),
            }
        };
        buf.drain(..n);
        match step {
            Step::Send(req) => {
                let (_, r) = stream.send_all_vec(req, 0).await;
                r.map_err(SessionError::Io)?;
            }
            Step::Done(neg) => return Ok((neg, buf)),
        }
    }
}

impl Session {
    /// Connects to `addr` and logs in; `slots` commands may be in flight at once.
    ///
    /// # Errors
    /// The connection or the login failed.
    pub async fn login(
        addr: SocketAddr,
        params: LoginParams,
        slots: usize,
    ) -> Result<Session, SessionError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(SessionError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (neg, rest) = match login(&stream, params).await {
            Ok(x) => x,
            Err(e) => {
                let _ = stream.shutdown();
                return Err(e);
            }
        };
        let slots = slots.clamp(1, 0xff00);
        let inner = Rc::new(Inner {
            st: RefCell::new(State {
                out: Vec::with_capacity(64 * 1024),
                slots: (0..slots).map(|_| Slot::default()).collect(),
                free: (0..slots as u16).rev().collect(),
                cmd_sn: neg.cmd_sn,
                max_cmd_sn: neg.max_cmd_sn,
                exp_stat_sn: neg.exp_stat_sn,
                waiting: Vec::new(),
                closed: None,
                neg,
                logout: None,
                logout_waker: None,
            }),
            out: Signal::default(),
            stream,
            closing: Cell::new(false),
        });
        basalt_engine::spawn(reader(inner.clone(), rest));
        basalt_engine::spawn(writer(inner.clone()));
        Ok(Session { inner })
    }

    /// The parameters negotiated at login.
    pub fn negotiated(&self) -> Negotiated {
        self.inner.st.borrow().neg
    }

    /// Runs one SCSI command on `lun`: `len` bytes of data in `dir`, into or from `bufs`
    /// (which hold at least `len` bytes), and hands the buffers back.
    pub async fn command(
        &self,
        lun: Lun,
        cdb: [u8; 16],
        dir: Dir,
        bufs: IoVecs,
        len: u32,
    ) -> (IoVecs, Result<(), ScsiError>) {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total < len as usize {
            return (
                bufs,
                Err(ScsiError::Request("buffers shorter than the transfer")),
            );
        }
        let inner = &self.inner;
        let mut bufs = Some(bufs);
        let submitted = std::future::poll_fn(|cx| {
            let mut st = inner.st.borrow_mut();
            if let Some(why) = &st.closed {
                return Poll::Ready(Err(ScsiError::Closed(why.clone())));
            }
            if st.cmd_sn.gt(st.max_cmd_sn) || st.free.is_empty() {
                st.waiting.push(cx.waker().clone());
                return Poll::Pending;
            }
            let idx = st.free.pop().expect("checked non-empty");
            let st = &mut *st;
            let slot = &mut st.slots[usize::from(idx)];
            slot.busy = true;
            slot.dir = Some(dir);
            slot.bufs = bufs.take();
            slot.len = len;
            slot.received = 0;
            slot.done = None;
            let itt = itt_of(idx, slot.generation);
            let neg = st.neg;
            let write = dir == Dir::Write;
            let immediate = if write && neg.immediate_data {
                len.min(neg.first_burst).min(neg.target_max_segment)
            } else {
                0
            };
            let unsolicited = if write && !neg.initial_r2t {
                len.min(neg.first_burst)
            } else {
                immediate
            };
            let cmd = Bhs::ScsiCommand(ScsiCommand {
                immediate: false,
                final_: unsolicited == immediate,
                read: dir == Dir::Read,
                write,
                attr: 1,
                lun,
                itt,
                edtl: len,
                cmd_sn: st.cmd_sn,
                exp_stat_sn: st.exp_stat_sn,
                cdb,
            });
            st.cmd_sn = st.cmd_sn.next();
            push_pdu(
                &mut st.out,
                &cmd,
                st.slots[usize::from(idx)].bufs.as_ref(),
                0,
                immediate as usize,
            );
            if unsolicited > immediate {
                push_data_out(
                    st,
                    usize::from(idx),
                    itt,
                    Ttt::RESERVED,
                    immediate,
                    unsolicited,
                );
            }
            Poll::Ready(Ok(idx))
        })
        .await;
        let idx = match submitted {
            Ok(i) => usize::from(i),
            Err(e) => return (bufs.take().unwrap_or_default(), Err(e)),
        };
        inner.out.notify();
        std::future::poll_fn(|cx| {
            let mut st = inner.st.borrow_mut();
            let closed = st.closed.clone();
            let slot = &mut st.slots[idx];
            let result = match slot.done.take() {
                Some(r) => r,
                None => match closed {
                    Some(why) => Err(ScsiError::Closed(why)),
                    None => {
                        slot.waker = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                },
            };
            let b = slot.bufs.take().unwrap_or_default();
            slot.busy = false;
            slot.dir = None;
            slot.generation = slot.generation.wrapping_add(1);
            st.free.push(idx as u16);
            let waiting = std::mem::take(&mut st.waiting);
            drop(st);
            for w in waiting {
                w.wake();
            }
            Poll::Ready((b, result))
        })
        .await
    }

    /// Logs out (closing the session) and closes the connection. Commands still in flight
    /// fail.
    pub async fn logout(&self) {
        let inner = &self.inner;
        {
            let mut st = inner.st.borrow_mut();
            if st.closed.is_none() {
                let bhs = Bhs::LogoutRequest(LogoutRequest {
                    immediate: true,
                    reason: 0,
                    itt: LOGOUT_ITT,
                    cid: pdu::Cid(0),
                    cmd_sn: st.cmd_sn,
                    exp_stat_sn: st.exp_stat_sn,
                });
                push_pdu(&mut st.out, &bhs, None, 0, 0);
            }
        }
        inner.out.notify();
        let wait = std::future::poll_fn(|cx| {
            let mut st = inner.st.borrow_mut();
            if st.logout.is_some() || st.closed.is_some() {
                return Poll::Ready(());
            }
            st.logout_waker = Some(cx.waker().clone());
            Poll::Pending
        });
        if basalt_engine::timeout(LOGOUT_TIMEOUT, wait).await.is_err() {
            tracing::warn!("no Logout Response within {LOGOUT_TIMEOUT:?}");
        }
        inner.closing.set(true);
        let _ = inner.stream.shutdown();
        inner.out.notify();
    }
}

#[cfg(test)]
mod tests {
    use basalt_engine::{Engine, EngineConfig};
    use basalt_iscsi::pdu::BHS_LEN as HEADER;

    use super::*;

    #[test]
    fn gather_and_scatter_across_buffers() {
        let mut cfg = EngineConfig::with_cores(1);
        cfg.pin = false;
        let engine = Engine::start(&cfg).expect("engine");
        engine
            .reactor(0)
            .block_on(|| async {
                let reactor = basalt_engine::current();
                let mut bufs = IoVecs::new();
                for _ in 0..3 {
                    bufs.push(reactor.pool().alloc(8).expect("size").await);
                }
                let data: Vec<u8> = (0..20).collect();
                copy_in(&mut bufs, 2, &data[..20]);
                let mut out = Vec::new();
                let bhs = Bhs::NopOut(NopOut {
                    immediate: true,
                    lun: Lun::default(),
                    itt: Itt(1),
                    ttt: Ttt::RESERVED,
                    cmd_sn: CmdSn(0),
                    exp_stat_sn: StatSn(0),
                });
                push_pdu(&mut out, &bhs, Some(&bufs), 2, 19);
                assert_eq!(out.len(), HEADER + 20, "19 bytes padded to 20");
                assert_eq!(&out[HEADER..HEADER + 19], &data[..19]);
                let p = pdu::parse_pdu(&out, Digests::default(), 1 << 20).expect("parses");
                assert_eq!(p.data, &data[..19]);
            })
            .expect("reactor");
        engine.shutdown();
    }
}
