//! One iSCSI connection as a sans-I/O state machine: bytes in ([`Connection::receive`]), bytes
//! out ([`Connection::transmit`]), events for the driver ([`Connection::poll_event`]), answers
//! from the driver ([`Connection::complete`], [`Connection::tmf_complete`]) and time
//! ([`Connection::tick`]; callers pass `Instant`s, there is no clock here).
//!
//! # Life of a connection
//!
//! Login ([`crate::login`]) until full feature phase, then PDUs of the full feature phase:
//!
//! * SCSI Command: checked (ITT unique, R/W bits against the data, immediate data allowed and
//!   within FirstBurstLength, EDTL within [`Limits::max_command_bytes`]), then its data-out is
//!   gathered: immediate data, unsolicited Data-Out up to FirstBurstLength (InitialR2T=No), and
//!   R2Ts for the rest (each at most MaxBurstLength, at most MaxOutstandingR2T at a time, R2TSN
//!   per command). Data-Out PDUs are checked (DataSN per sequence, buffer offsets in order, F
//!   bit, sequence lengths). With every byte in, the driver gets [`Event::Execute`].
//! * [`Connection::complete`] builds Data-In PDUs (at most the initiator's
//!   MaxRecvDataSegmentLength each, F at every MaxBurstLength, status in the last one when GOOD
//!   without sense) or a SCSI Response (sense, residuals).
//! * Non-immediate commands pass through the session's CmdSN window
//!   ([`crate::session::CmdWindow`]): in-window commands ahead of ExpCmdSN wait (also for gaps
//!   another connection of the session fills; they are re-checked on every `receive` and
//!   `tick`, and `tick` asks to run again within 10 ms while any wait), out-of-window ones are
//!   ignored silently (RFC 7143 §4.2.2.1). A waiting SCSI command still gathers its data
//!   (immediate, unsolicited, R2Ts); only its execution waits. Immediate commands (I bit) skip
//!   the window and never move ExpCmdSN.
//! * StatSN (per connection) advances for every response with status: SCSI Response, Data-In
//!   with S, NOP-In answering a NOP-Out, Text, Logout and TMF responses, Reject and Async
//!   Message; R2T, Data-In without S and target NOP-In pings carry it without advancing it.
//! * NOP-Out (answered, data echoed), target NOP-In pings on idle connections, Text Requests
//!   (SendTargets, with C-bit continuation both ways), Task Management (see [`Event`]), Logout,
//!   SNACK (rejected: ERL 0), Reject for malformed but delimitable PDUs.
//!
//! # Errors at ERL 0
//!
//! * Header digest error, a data segment over our MaxRecvDataSegmentLength, or a PDU that
//!   cannot be delimited: [`Event::Close`] (the length is untrusted).
//! * Data digest error (any PDU): Reject (reason 0x02) with the header, then [`Event::Close`]
//!   (the command or data is lost; at ERL 0 only session recovery remains).
//! * Data-Out sequence errors (DataSN, buffer offset, overrun, F bit): Reject (reason 0x04,
//!   protocol error) with the header, and the task ends with CHECK CONDITION, ABORTED COMMAND,
//!   DATA PHASE ERROR (RFC 7143 §11.17.1: a Reject never ends a task by itself). Data-Out PDUs
//!   for tasks that no longer exist are dropped silently.
//! * Malformed PDUs of other kinds: Reject (0x04 protocol error, 0x05 command not supported,
//!   0x06 too many immediate commands, 0x07 ITT in use, 0x09 invalid PDU field).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use basalt_scsi::{Residual, TaskAttr};

use crate::login::{EstablishedKind, Login, LoginOutcome, LoginStep};
use crate::pdu::{
    self, Ahs, Bhs, Cid, CmdSn, DataSn, Digests, Frame, Itt, Lun, Pdu, PduError, R2tSn, StatSn,
    Ttt, reject_reason,
};
use crate::session::{Arrival, CmdWindow, ConnParams, Session, SessionParams};
use crate::text;
use crate::{Directory, Portal};

/// Resource limits and timers of a portal's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// What the target declares as its MaxRecvDataSegmentLength (default 256 KiB).
    pub max_recv_data_segment_length: u32,
    /// Most the target accepts as MaxBurstLength (default 1 MiB).
    pub max_burst_length: u32,
    /// Most the target accepts as FirstBurstLength (default 64 KiB).
    pub first_burst_length: u32,
    /// Most the target accepts as MaxOutstandingR2T (default 8; RFC default 1 if not
    /// negotiated).
    pub max_outstanding_r2t: u32,
    /// Connections per session (MaxConnections), default 8.
    pub max_connections: u16,
    /// Command window per session, default 128.
    pub queue_depth: u32,
    /// Largest EDTL accepted, default 8 MiB.
    pub max_command_bytes: u32,
    /// Idle time before a NOP-In ping, default 30 s (SPDK's default); zero disables pings.
    pub nop_interval: Duration,
    /// An unanswered ping closes the connection after this long, default 60 s (SPDK's default).
    /// Shorter values drop initiators that are alive but do not read their socket for a while
    /// (libiscsi's synchronous API while its caller sleeps), whose reconnection then starts
    /// with a fresh unit attention.
    pub nop_timeout: Duration,
    /// The login must reach full feature phase within this, default 15 s.
    pub login_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_recv_data_segment_length: 256 * 1024,
            max_burst_length: 1024 * 1024,
            first_burst_length: 64 * 1024,
            max_outstanding_r2t: 8,
            max_connections: 8,
            queue_depth: 128,
            max_command_bytes: 8 * 1024 * 1024,
            nop_interval: Duration::from_secs(30),
            nop_timeout: Duration::from_secs(60),
            login_timeout: Duration::from_secs(15),
        }
    }
}

/// What a connection needs from its portal.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// The portal group the connection arrived on.
    pub portal: Portal,
    /// The targets it serves.
    pub directory: Arc<dyn Directory>,
    /// Every live session.
    pub sessions: Arc<crate::session::SessionTable>,
    /// Limits and timers.
    pub limits: Limits,
}

/// A task's id, unique within the connection (not the ITT).
pub type TaskId = u64;

/// A SCSI command with all its data-out gathered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Id to answer with in [`Connection::complete`].
    pub id: TaskId,
    /// LUN, decoded from the 8-byte field (SAM-5 peripheral/flat addressing).
    pub lun: u64,
    /// CDB, including any extended-CDB AHS bytes.
    pub cdb: Vec<u8>,
    /// Task attribute.
    pub attr: TaskAttr,
    /// Expected data transfer length.
    pub expected_len: u32,
    /// R bit.
    pub read: bool,
    /// W bit.
    pub write: bool,
    /// Immediate, unsolicited and solicited data, in order: `expected_len` bytes for writes.
    pub data_out: Vec<u8>,
}

/// Task management functions (RFC 7143 §11.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TmfFunction {
    /// ABORT TASK.
    AbortTask,
    /// ABORT TASK SET.
    AbortTaskSet,
    /// CLEAR ACA.
    ClearAca,
    /// CLEAR TASK SET.
    ClearTaskSet,
    /// LOGICAL UNIT RESET.
    LogicalUnitReset,
    /// TARGET WARM RESET.
    TargetWarmReset,
    /// TARGET COLD RESET.
    TargetColdReset,
    /// TASK REASSIGN (answered by the connection itself: not supported at ERL 0).
    TaskReassign,
}

impl TmfFunction {
    /// The function for a request's function code.
    pub fn from_code(code: u8) -> Option<TmfFunction> {
        Some(match code {
            1 => TmfFunction::AbortTask,
            2 => TmfFunction::AbortTaskSet,
            3 => TmfFunction::ClearAca,
            4 => TmfFunction::ClearTaskSet,
            5 => TmfFunction::LogicalUnitReset,
            6 => TmfFunction::TargetWarmReset,
            7 => TmfFunction::TargetColdReset,
            8 => TmfFunction::TaskReassign,
            _ => return None,
        })
    }
}

/// Task management responses (RFC 7143 §11.6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TmfResponse {
    /// Function complete (0).
    Complete,
    /// Task does not exist (1).
    TaskDoesNotExist,
    /// LUN does not exist (2).
    LunDoesNotExist,
    /// Task still allegiant (3).
    TaskStillAllegiant,
    /// Task allegiance reassignment not supported (4).
    ReassignNotSupported,
    /// Task management function not supported (5).
    NotSupported,
    /// Function authorization failed (6).
    AuthorizationFailed,
    /// Function rejected (255).
    Rejected,
}

impl TmfResponse {
    /// The response code on the wire.
    pub fn code(self) -> u8 {
        match self {
            TmfResponse::Complete => 0,
            TmfResponse::TaskDoesNotExist => 1,
            TmfResponse::LunDoesNotExist => 2,
            TmfResponse::TaskStillAllegiant => 3,
            TmfResponse::ReassignNotSupported => 4,
            TmfResponse::NotSupported => 5,
            TmfResponse::AuthorizationFailed => 6,
            TmfResponse::Rejected => 255,
        }
    }
}

/// What the driver must act on.
#[derive(Debug)]
pub enum Event {
    /// The leading connection of a normal session reached full feature phase.
    SessionStarted {
        /// The session.
        session: Arc<Session>,
    },
    /// A further connection joined `session` (MC/S) and reached full feature phase.
    ConnectionJoined {
        /// The session.
        session: Arc<Session>,
    },
    /// Run this command; answer with [`Connection::complete`].
    Execute(Task),
    /// Task management for the driver to carry out on the LUs (unit attentions, reservations,
    /// other connections' and sessions' tasks). This connection has already marked its own
    /// affected tasks aborted (ABORT TASK: the referenced one, if present; ABORT TASK SET: this
    /// session's tasks on the LUN; CLEAR TASK SET / LU RESET: every task on the LUN; target
    /// resets: every task). The driver answers with [`Connection::tmf_complete`]; the TMF
    /// response goes out only after that AND after every task this connection aborted has
    /// completed (their `complete` calls are swallowed, nothing is sent for them, per RFC 7143
    /// §4.2.3 / TAS=0). ABORT TASK for a task already answered or unknown is answered by the
    /// connection itself (RFC 7143 §11.5.1 rules with RefCmdSN) without an event.
    TaskManagement {
        /// Id to answer with in [`Connection::tmf_complete`].
        id: TaskId,
        /// The function.
        function: TmfFunction,
        /// The LUN (decoded).
        lun: u64,
    },
    /// The session this connection belonged to is over (logout, last connection lost,
    /// reinstated, closed): the driver detaches the nexus from the LUs. Emitted once per
    /// session (by its last connection).
    SessionEnded {
        /// The session.
        session: Arc<Session>,
    },
    /// Close the socket after sending what `transmit` returns now.
    Close,
}

/// How long the initiator has to log out after an Async Message asks it to.
pub const LOGOUT_GRACE: Duration = Duration::from_secs(10);
/// Immediate SCSI commands a connection runs at once; more are rejected (reason 0x06).
pub const MAX_IMMEDIATE_TASKS: usize = 16;
/// How soon `tick` wants to run again while commands wait for a CmdSN gap that another
/// connection of the session may fill.
const HELD_RECHECK: Duration = Duration::from_millis(10);

const STATUS_CHECK_CONDITION: u8 = 0x02;
const SENSE_ILLEGAL_REQUEST: u8 = 0x05;
const SENSE_ABORTED_COMMAND: u8 = 0x0b;

/// Fixed-format sense data (SPC-4 §4.5.3) with a sense key and ASC/ASCQ.
fn fixed_sense(key: u8, asc: u8, ascq: u8) -> [u8; 18] {
    let mut s = [0u8; 18];
    s[0] = 0x70;
    s[2] = key;
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    s
}

#[derive(Debug)]
struct R2tState {
    ttt: Ttt,
    offset: u32,
    len: u32,
    received: u32,
    next_data_sn: DataSn,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Unsolicited Data-Out may still come (up to `limit` bytes in all).
    Unsolicited { next_data_sn: DataSn, limit: u32 },
    /// Waiting for solicited data.
    Solicited,
    /// Every byte is in, but the command waits for a CmdSN gap before it may run.
    Ready,
    /// Handed to the driver.
    Executing,
}

#[derive(Debug)]
struct TaskState {
    itt: Itt,
    lun: Lun,
    counted: bool,
    /// Its CmdSN while the window holds it (data transfer goes on; execution waits).
    held: Option<CmdSn>,
    immediate: bool,
    read: bool,
    write: bool,
    edtl: u32,
    attr: TaskAttr,
    cdb: Vec<u8>,
    data: Vec<u8>,
    received: u32,
    next_r2t_offset: u32,
    r2t_sn: R2tSn,
    r2ts: Vec<R2tState>,
    phase: Phase,
    aborted: bool,
}

#[derive(Debug)]
struct PendingTmf {
    id: TaskId,
    itt: Itt,
    counted: bool,
    waiting: Vec<TaskId>,
    answer: Option<TmfResponse>,
    cold_reset: bool,
}

#[derive(Debug)]
struct OwnedPdu {
    bhs: Bhs,
    raw: [u8; pdu::BHS_LEN],
    ahs: Vec<u8>,
    data: Vec<u8>,
}

#[derive(Debug)]
struct Held {
    cmd_sn: CmdSn,
    pdu: OwnedPdu,
}

/// A text exchange in progress (RFC 7143 §11.10: continuation with the C bit and TTT).
#[derive(Debug)]
struct TextExchange {
    itt: Itt,
    ttt: Ttt,
    /// Request text still arriving (the initiator set C).
    request: Vec<u8>,
    /// Response text still to send, from `offset`.
    response: Vec<u8>,
    offset: usize,
}

#[derive(Debug)]
enum SessionRef {
    Normal(Arc<Session>),
    Discovery { window: CmdWindow },
}

#[derive(Debug)]
enum State {
    Login(Box<Login>),
    Full,
    Closed,
}

/// One TCP connection's protocol state.
#[derive(Debug)]
pub struct Connection {
    cfg: ConnConfig,
    peer: SocketAddr,
    state: State,
    out: Vec<u8>,
    events: VecDeque<Event>,
    close: Arc<AtomicBool>,
    login_deadline: Instant,
    // Full feature phase.
    session: Option<SessionRef>,
    params: SessionParams,
    conn: ConnParams,
    cid: Cid,
    initiator_name: String,
    stat_sn: StatSn,
    tasks: HashMap<TaskId, TaskState>,
    by_itt: HashMap<Itt, TaskId>,
    by_ttt: HashMap<Ttt, TaskId>,
    next_id: TaskId,
    next_ttt: u32,
    immediate_tasks: usize,
    tmfs: Vec<PendingTmf>,
    held: Vec<Held>,
    text: Option<TextExchange>,
    last_rx: Instant,
    ping: Option<(Ttt, Instant)>,
    logout_deadline: Option<Instant>,
}

impl Connection {
    /// A connection that just arrived from `peer`, starting in login.
    pub fn new(cfg: ConnConfig, peer: SocketAddr, now: Instant) -> Connection {
        let close = Arc::new(AtomicBool::new(false));
        let login = Box::new(Login::new(&cfg, Arc::clone(&close)));
        let login_deadline = now + cfg.limits.login_timeout;
        Connection {
            cfg,
            peer,
            state: State::Login(login),
            out: Vec::new(),
            events: VecDeque::new(),
            close,
            login_deadline,
            session: None,
            params: SessionParams::default(),
            conn: ConnParams::default(),
            cid: Cid(0),
            initiator_name: String::new(),
            stat_sn: StatSn(0),
            tasks: HashMap::new(),
            by_itt: HashMap::new(),
            by_ttt: HashMap::new(),
            next_id: 1,
            next_ttt: 1,
            immediate_tasks: 0,
            tmfs: Vec::new(),
            held: Vec::new(),
            text: None,
            last_rx: now,
            ping: None,
            logout_deadline: None,
        }
    }

    /// The peer address given at creation.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// True once the connection has asked to be closed (or was closed).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The normal session this connection belongs to, once in full feature phase.
    pub fn session(&self) -> Option<&Arc<Session>> {
        match &self.session {
            Some(SessionRef::Normal(s)) => Some(s),
            _ => None,
        }
    }

    /// True when `transmit` would append something.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Appends every PDU ready to send to `out` (digests applied).
    pub fn transmit(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.out);
        } else {
            out.extend_from_slice(&self.out);
            self.out.clear();
        }
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn digests(&self) -> Digests {
        match self.state {
            State::Full => Digests {
                header: self.conn.header_digest,
                data: self.conn.data_digest,
            },
            _ => Digests::default(),
        }
    }

    fn max_recv(&self) -> u32 {
        match self.state {
            State::Full => self.conn.target_mrdsl,
            _ => self.cfg.limits.max_recv_data_segment_length.max(8192),
        }
    }

    /// Consumes as many whole PDUs as `input` holds; returns the bytes consumed (the caller
    /// keeps the rest and calls again with more). Malformed input: Reject PDU (RFC 7143 §11.17
    /// reasons, with the offending header in the data segment) where the PDU can be delimited
    /// and the session can continue; otherwise Close. Never panics.
    pub fn receive(&mut self, input: &[u8], now: Instant) -> usize {
        let mut used = 0;
        while !self.is_closed() {
            let rest = input.get(used..).unwrap_or_default();
            match pdu::frame(rest, self.digests(), self.max_recv()) {
                Frame::Need(_) => break,
                Frame::Malformed(e) => {
                    tracing::info!(peer = %self.peer, error = %e, "undelimitable PDU: closing");
                    self.shutdown();
                }
                Frame::Complete(n) => {
                    let one = rest.get(..n).unwrap_or_default();
                    used += n;
                    self.last_rx = now;
                    self.one_pdu(one, now);
                }
            }
        }
        if self.is_closed() {
            return input.len();
        }
        self.check_close_requests();
        self.release_held();
        used
    }

    fn one_pdu(&mut self, bytes: &[u8], now: Instant) {
        let parsed = pdu::parse_pdu(bytes, self.digests(), self.max_recv());
        if matches!(self.state, State::Login(_)) {
            self.login_pdu(parsed, now);
            return;
        }
        let raw = bytes.first_chunk::<{ pdu::BHS_LEN }>().copied();
        match parsed {
            Ok(p) => self.dispatch(&p, None),
            Err(e) => {
                let Some(raw) = raw else {
                    self.shutdown();
                    return;
                };
                match e {
                    PduError::DataDigest { .. } => {
                        tracing::info!(peer = %self.peer, "data digest error: reject and close");
                        self.send_reject(reject_reason::DATA_DIGEST_ERROR, &raw);
                        self.shutdown();
                    }
                    PduError::UnknownOpcode(_) => {
                        self.send_reject(reject_reason::COMMAND_NOT_SUPPORTED, &raw)
                    }
                    PduError::ReservedValue { .. } | PduError::BadAhs => {
                        self.send_reject(reject_reason::INVALID_PDU_FIELD, &raw)
                    }
                    _ => self.shutdown(),
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Login phase
    // -----------------------------------------------------------------------------------------

    fn login_pdu(&mut self, parsed: Result<Pdu<'_>, PduError>, now: Instant) {
        let State::Login(login) = &mut self.state else {
            return;
        };
        let step = match parsed {
            Ok(Pdu {
                bhs: Bhs::LoginRequest(req),
                data,
                ..
            }) => login.handle(&req, data),
            Ok(p) => {
                let itt = match p.bhs {
                    Bhs::NopOut(x) => x.itt,
                    Bhs::ScsiCommand(x) => x.itt,
                    Bhs::TmfRequest(x) => x.itt,
                    Bhs::TextRequest(x) => x.itt,
                    Bhs::DataOut(x) => x.itt,
                    Bhs::LogoutRequest(x) => x.itt,
                    Bhs::Snack(x) => x.itt,
                    _ => Itt::RESERVED,
                };
                login.invalid_request(itt)
            }
            Err(e) => {
                tracing::info!(peer = %self.peer, error = %e, "malformed PDU during login");
                self.shutdown();
                return;
            }
        };
        self.login_step(step, now);
    }

    fn login_step(&mut self, step: LoginStep, now: Instant) {
        let LoginStep {
            response,
            data,
            outcome,
        } = step;
        pdu::encode_pdu(
            &mut self.out,
            &Bhs::LoginResponse(response),
            &[],
            &[&data],
            Digests::default(),
        );
        match outcome {
            LoginOutcome::Continue => {}
            LoginOutcome::Failed(status) => {
                tracing::info!(peer = %self.peer, ?status, "login failed");
                self.shutdown();
            }
            LoginOutcome::Established(est) => {
                let est = *est;
                self.conn = est.conn;
                self.cid = est.cid;
                self.stat_sn = est.next_stat_sn;
                self.initiator_name = est.initiator_name;
                self.last_rx = now;
                self.state = State::Full;
                match est.kind {
                    EstablishedKind::Normal { session, leading } => {
                        self.params = *session.params();
                        self.session = Some(SessionRef::Normal(Arc::clone(&session)));
                        self.events.push_back(if leading {
                            Event::SessionStarted { session }
                        } else {
                            Event::ConnectionJoined { session }
                        });
                    }
                    EstablishedKind::Discovery { window, .. } => {
                        self.session = Some(SessionRef::Discovery { window });
                    }
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Output helpers
    // -----------------------------------------------------------------------------------------

    fn with_window<R>(&mut self, f: impl FnOnce(&mut CmdWindow) -> R) -> Option<R> {
        match &mut self.session {
            Some(SessionRef::Normal(s)) => Some(s.with_window(f)),
            Some(SessionRef::Discovery { window }) => Some(f(window)),
            None => None,
        }
    }

    fn serials(&mut self) -> (CmdSn, CmdSn) {
        self.with_window(|w| (w.exp_cmd_sn(), w.max_cmd_sn()))
            .unwrap_or_default()
    }

    fn take_stat_sn(&mut self) -> StatSn {
        let s = self.stat_sn;
        self.stat_sn = s.next();
        s
    }

    fn send(&mut self, bhs: Bhs, data: &[&[u8]]) {
        let digests = self.digests();
        pdu::encode_pdu(&mut self.out, &bhs, &[], data, digests);
    }

    fn send_reject(&mut self, reason: u8, raw: &[u8; pdu::BHS_LEN]) {
        let (exp, max) = self.serials();
        let stat_sn = self.take_stat_sn();
        self.send(
            Bhs::Reject(pdu::Reject {
                reason,
                stat_sn,
                exp_cmd_sn: exp,
                max_cmd_sn: max,
                data_sn: DataSn(0),
            }),
            &[raw],
        );
    }

    fn complete_counted(&mut self, counted: bool) {
        if counted {
            self.with_window(|w| w.complete());
        }
    }

    fn alloc_ttt(&mut self) -> Ttt {
        loop {
            let t = Ttt(self.next_ttt);
            self.next_ttt = self.next_ttt.wrapping_add(1);
            if !t.is_reserved()
                && !self.by_ttt.contains_key(&t)
                && self.ping.map(|p| p.0) != Some(t)
            {
                return t;
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Full feature phase: dispatch and the CmdSN window
    // -----------------------------------------------------------------------------------------

    /// `accepted`: the PDU was held and has been released by the window (so it counts).
    fn dispatch(&mut self, p: &Pdu<'_>, accepted: Option<bool>) {
        let numbered = match p.bhs {
            Bhs::NopOut(x) => Some((x.immediate || x.itt.is_reserved(), x.cmd_sn)),
            Bhs::ScsiCommand(x) => Some((x.immediate, x.cmd_sn)),
            Bhs::TmfRequest(x) => Some((x.immediate, x.cmd_sn)),
            Bhs::TextRequest(x) => Some((x.immediate, x.cmd_sn)),
            Bhs::LogoutRequest(x) => Some((x.immediate, x.cmd_sn)),
            _ => None,
        };
        let counted = match (numbered, accepted) {
            (None, _) => false,
            (Some(_), Some(c)) => c,
            (Some((true, _)), None) => false,
            (Some((false, sn)), None) => match self.with_window(|w| w.arrive(sn)) {
                Some(Arrival::Accept) => true,
                Some(Arrival::Hold) => {
                    if let Bhs::ScsiCommand(x) = p.bhs {
                        // Gather its data now; only execution waits for the gap.
                        self.scsi_command(&x, p, false, Some(sn));
                    } else if let Some(held) = self.own(p) {
                        self.held.push(Held {
                            cmd_sn: sn,
                            pdu: held,
                        });
                    } else {
                        self.with_window(|w| w.withdraw(sn));
                    }
                    return;
                }
                Some(Arrival::Ignore) | None => {
                    tracing::debug!(peer = %self.peer, cmd_sn = sn.0, "CmdSN outside the window: ignored");
                    return;
                }
            },
        };
        match p.bhs {
            Bhs::NopOut(x) => self.nop_out(&x, p.data, counted),
            Bhs::ScsiCommand(x) => self.scsi_command(&x, p, counted, None),
            Bhs::TmfRequest(x) => self.tmf_request(&x, p.raw_bhs, counted),
            Bhs::TextRequest(x) => self.text_request(&x, p, counted),
            Bhs::LogoutRequest(x) => self.logout_request(&x, p.raw_bhs, counted),
            Bhs::DataOut(x) => self.data_out(&x, p),
            Bhs::Snack(_) | Bhs::LoginRequest(_) => {
                self.send_reject(reject_reason::PROTOCOL_ERROR, p.raw_bhs)
            }
            _ => self.send_reject(reject_reason::PROTOCOL_ERROR, p.raw_bhs),
        }
    }

    fn own(&self, p: &Pdu<'_>) -> Option<OwnedPdu> {
        let limit = usize::try_from(self.cfg.limits.queue_depth).unwrap_or(usize::MAX);
        (self.held.len() < limit).then(|| OwnedPdu {
            bhs: p.bhs,
            raw: *p.raw_bhs,
            ahs: p.ahs.to_vec(),
            data: p.data.to_vec(),
        })
    }

    /// Runs held commands whose CmdSN gap has filled, in CmdSN order.
    fn release_held(&mut self) {
        let mut released: Vec<(CmdSn, TaskId)> = Vec::new();
        for (id, t) in &self.tasks {
            if let Some(sn) = t.held
                && self.with_window_ref(|w| w.released(sn)).unwrap_or(false)
            {
                released.push((sn, *id));
            }
        }
        released.sort_by(|a, b| {
            if a.0.lt(b.0) {
                std::cmp::Ordering::Less
            } else if a.0 == b.0 {
                std::cmp::Ordering::Equal
            } else {
                std::cmp::Ordering::Greater
            }
        });
        for (_, id) in released {
            let ready = match self.tasks.get_mut(&id) {
                Some(t) => {
                    t.held = None;
                    t.counted = true;
                    t.phase == Phase::Ready
                }
                None => false,
            };
            if ready {
                self.execute(id);
            }
        }
        while !self.is_closed() && !self.held.is_empty() {
            let mut ready: Option<usize> = None;
            for (i, h) in self.held.iter().enumerate() {
                let released = self
                    .with_window_ref(|w| w.released(h.cmd_sn))
                    .unwrap_or(false);
                if released && ready.is_none_or(|r: usize| h.cmd_sn.lt(self.held[r].cmd_sn)) {
                    ready = Some(i);
                }
            }
            let Some(i) = ready else {
                return;
            };
            let h = self.held.swap_remove(i);
            let o = h.pdu;
            let p = Pdu {
                bhs: o.bhs,
                raw_bhs: &o.raw,
                ahs: &o.ahs,
                data: &o.data,
            };
            self.dispatch(&p, Some(true));
        }
    }

    fn with_window_ref<R>(&self, f: impl FnOnce(&CmdWindow) -> R) -> Option<R> {
        match &self.session {
            Some(SessionRef::Normal(s)) => Some(s.with_window(|w| f(w))),
            Some(SessionRef::Discovery { window }) => Some(f(window)),
            None => None,
        }
    }

    // -----------------------------------------------------------------------------------------
    // NOP
    // -----------------------------------------------------------------------------------------

    fn nop_out(&mut self, x: &pdu::NopOut, data: &[u8], counted: bool) {
        if x.itt.is_reserved() {
            if !x.ttt.is_reserved() && self.ping.map(|p| p.0) == Some(x.ttt) {
                self.ping = None;
            }
        } else {
            let (exp, max) = self.serials();
            let stat_sn = self.take_stat_sn();
            let n = data.len().min(self.conn.initiator_mrdsl as usize);
            let echo = data.get(..n).unwrap_or_default();
            self.send(
                Bhs::NopIn(pdu::NopIn {
                    lun: x.lun,
                    itt: x.itt,
                    ttt: Ttt::RESERVED,
                    stat_sn,
                    exp_cmd_sn: exp,
                    max_cmd_sn: max,
                }),
                &[echo],
            );
        }
        self.complete_counted(counted);
    }

    fn send_ping(&mut self, now: Instant) {
        let ttt = self.alloc_ttt();
        self.ping = Some((ttt, now + self.cfg.limits.nop_timeout));
        let (exp, max) = self.serials();
        let stat_sn = self.stat_sn; // not advanced by an unsolicited NOP-In
        self.send(
            Bhs::NopIn(pdu::NopIn {
                lun: Lun(0),
                itt: Itt::RESERVED,
                ttt,
                stat_sn,
                exp_cmd_sn: exp,
                max_cmd_sn: max,
            }),
            &[],
        );
    }

    // -----------------------------------------------------------------------------------------
    // SCSI commands and data-out
    // -----------------------------------------------------------------------------------------

    /// `held`: the window holds this command's CmdSN (it may gather data, not run yet).
    fn scsi_command(
        &mut self,
        x: &pdu::ScsiCommand,
        p: &Pdu<'_>,
        counted: bool,
        held: Option<CmdSn>,
    ) {
        let reject = |me: &mut Connection, reason: u8| {
            me.send_reject(reason, p.raw_bhs);
            me.complete_counted(counted);
            if let Some(sn) = held {
                me.with_window(|w| w.withdraw(sn));
            }
        };
        if matches!(self.session, Some(SessionRef::Discovery { .. })) {
            return reject(self, reject_reason::COMMAND_NOT_SUPPORTED);
        }
        if self.by_itt.contains_key(&x.itt) || x.itt.is_reserved() {
            return reject(self, reject_reason::TASK_IN_PROGRESS);
        }
        if x.immediate && self.immediate_tasks >= MAX_IMMEDIATE_TASKS {
            return reject(self, reject_reason::IMMEDIATE_COMMAND_REJECT);
        }
        let mut cdb = x.cdb.to_vec();
        match pdu::parse_ahs(p.ahs) {
            Ok(list) => {
                for a in list {
                    if let Ahs::ExtendedCdb(extra) = a {
                        cdb.extend_from_slice(extra);
                    }
                }
            }
            Err(_) => return reject(self, reject_reason::INVALID_PDU_FIELD),
        }
        let imm = p.data;
        let imm_len = u32::try_from(imm.len()).unwrap_or(u32::MAX);
        let params = self.params;
        if (x.edtl != 0 && !x.read && !x.write)
            || (!x.write && !imm.is_empty())
            || (!x.final_ && !x.write)
        {
            return reject(self, reject_reason::INVALID_PDU_FIELD);
        }
        if imm_len > x.edtl
            || (!imm.is_empty() && !params.immediate_data)
            || imm_len > params.first_burst_length
            || (!x.final_ && params.initial_r2t)
        {
            return reject(self, reject_reason::PROTOCOL_ERROR);
        }
        let attr = match x.attr {
            2 => TaskAttr::Ordered,
            3 => TaskAttr::HeadOfQueue,
            4 => TaskAttr::Aca,
            _ => TaskAttr::Simple,
        };
        let id = self.next_id;
        self.next_id += 1;
        let mut t = TaskState {
            itt: x.itt,
            lun: x.lun,
            counted,
            held,
            immediate: x.immediate,
            read: x.read,
            write: x.write,
            edtl: x.edtl,
            attr,
            cdb,
            data: Vec::new(),
            received: 0,
            next_r2t_offset: 0,
            r2t_sn: R2tSn(0),
            r2ts: Vec::new(),
            phase: Phase::Solicited,
            aborted: false,
        };
        if x.immediate {
            self.immediate_tasks += 1;
        }
        let sense = if x.edtl > self.cfg.limits.max_command_bytes || (x.read && x.write) {
            // Too large to gather, or bidirectional (not supported): INVALID FIELD IN CDB.
            Some(fixed_sense(SENSE_ILLEGAL_REQUEST, 0x24, 0x00))
        } else {
            None
        };
        self.by_itt.insert(x.itt, id);
        if let Some(sense) = sense {
            t.phase = Phase::Executing;
            self.tasks.insert(id, t);
            self.complete(id, STATUS_CHECK_CONDITION, &sense, &[], Residual::None);
            return;
        }
        if x.write && x.edtl > 0 {
            t.data = vec![0u8; x.edtl as usize];
            if let Some(dst) = t.data.get_mut(..imm.len()) {
                dst.copy_from_slice(imm);
            }
            t.received = imm_len;
            t.next_r2t_offset = imm_len;
            let limit = params.first_burst_length.min(x.edtl);
            if !x.final_ && imm_len < limit {
                t.phase = Phase::Unsolicited {
                    next_data_sn: DataSn(0),
                    limit,
                };
            }
        }
        self.tasks.insert(id, t);
        self.advance_task(id);
    }

    /// Moves a write forward after its unsolicited phase: R2Ts for what is missing, or
    /// execution once everything is in.
    fn advance_task(&mut self, id: TaskId) {
        let max_burst = self.params.max_burst_length.max(512);
        let max_r2t = usize::try_from(self.params.max_outstanding_r2t.max(1)).unwrap_or(1);
        let Some(t) = self.tasks.get(&id) else {
            return;
        };
        if matches!(
            t.phase,
            Phase::Unsolicited { .. } | Phase::Ready | Phase::Executing
        ) {
            return;
        }
        if t.write && t.received < t.edtl {
            let mut new = Vec::new();
            while let Some(t) = self.tasks.get(&id) {
                if t.r2ts.len() >= max_r2t || t.next_r2t_offset >= t.edtl {
                    break;
                }
                let ttt = self.alloc_ttt();
                let Some(t) = self.tasks.get_mut(&id) else {
                    break;
                };
                let len = (t.edtl - t.next_r2t_offset).min(max_burst);
                let r = R2tState {
                    ttt,
                    offset: t.next_r2t_offset,
                    len,
                    received: 0,
                    next_data_sn: DataSn(0),
                };
                t.next_r2t_offset += len;
                let sn = t.r2t_sn;
                t.r2t_sn = sn.next();
                new.push((ttt, t.itt, t.lun, sn, r.offset, len));
                t.r2ts.push(r);
                self.by_ttt.insert(ttt, id);
            }
            for (ttt, itt, lun, r2t_sn, offset, len) in new {
                let (exp, max) = self.serials();
                let stat_sn = self.stat_sn;
                self.send(
                    Bhs::R2t(pdu::R2t {
                        lun,
                        itt,
                        ttt,
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                        r2t_sn,
                        buffer_offset: offset,
                        desired_len: len,
                    }),
                    &[],
                );
            }
            return;
        }
        let Some(t) = self.tasks.get_mut(&id) else {
            return;
        };
        if t.held.is_some() {
            t.phase = Phase::Ready;
            return;
        }
        self.execute(id);
    }

    /// Hands a task with all its data to the driver.
    fn execute(&mut self, id: TaskId) {
        let Some(t) = self.tasks.get_mut(&id) else {
            return;
        };
        t.phase = Phase::Executing;
        let task = Task {
            id,
            lun: t.lun.number(),
            cdb: std::mem::take(&mut t.cdb),
            attr: t.attr,
            expected_len: t.edtl,
            read: t.read,
            write: t.write,
            data_out: std::mem::take(&mut t.data),
        };
        self.events.push_back(Event::Execute(task));
    }

    fn data_out(&mut self, x: &pdu::DataOut, p: &Pdu<'_>) {
        let Some(&id) = self.by_itt.get(&x.itt) else {
            tracing::debug!(peer = %self.peer, itt = %x.itt, "Data-Out for no task: dropped");
            return;
        };
        match self.accept_data_out(id, x, p.data) {
            Ok(()) => self.advance_task(id),
            Err(()) => {
                tracing::info!(peer = %self.peer, itt = %x.itt, "Data-Out sequence error");
                self.send_reject(reject_reason::PROTOCOL_ERROR, p.raw_bhs);
                let sense = fixed_sense(SENSE_ABORTED_COMMAND, 0x4b, 0x00);
                self.fail_collecting(id, &sense);
            }
        }
    }

    fn accept_data_out(&mut self, id: TaskId, x: &pdu::DataOut, data: &[u8]) -> Result<(), ()> {
        let len = u32::try_from(data.len()).map_err(|_| ())?;
        let by_ttt = self.by_ttt.get(&x.ttt).copied();
        let t = self.tasks.get_mut(&id).ok_or(())?;
        if !t.write || matches!(t.phase, Phase::Ready | Phase::Executing) {
            return Err(());
        }
        let end = x.buffer_offset.checked_add(len).ok_or(())?;
        if x.ttt.is_reserved() {
            let Phase::Unsolicited {
                next_data_sn,
                limit,
            } = t.phase
            else {
                return Err(());
            };
            if x.data_sn != next_data_sn || x.buffer_offset != t.received || end > limit {
                return Err(());
            }
            let (s, e) = (x.buffer_offset as usize, end as usize);
            t.data.get_mut(s..e).ok_or(())?.copy_from_slice(data);
            t.received = end;
            t.next_r2t_offset = end;
            t.phase = if x.final_ || end == limit {
                Phase::Solicited
            } else {
                Phase::Unsolicited {
                    next_data_sn: next_data_sn.next(),
                    limit,
                }
            };
            return Ok(());
        }
        if by_ttt != Some(id) {
            return Err(());
        }
        let i = t.r2ts.iter().position(|r| r.ttt == x.ttt).ok_or(())?;
        let r = &mut t.r2ts[i];
        if x.data_sn != r.next_data_sn
            || x.buffer_offset != r.offset + r.received
            || end > r.offset + r.len
        {
            return Err(());
        }
        let done = end == r.offset + r.len;
        if x.final_ && !done {
            return Err(());
        }
        let (s, e) = (x.buffer_offset as usize, end as usize);
        t.data.get_mut(s..e).ok_or(())?.copy_from_slice(data);
        r.received += len;
        r.next_data_sn = r.next_data_sn.next();
        t.received += len;
        if done {
            t.r2ts.swap_remove(i);
            self.by_ttt.remove(&x.ttt);
        }
        Ok(())
    }

    /// Ends a task that never reached the driver with CHECK CONDITION and `sense`.
    fn fail_collecting(&mut self, id: TaskId, sense: &[u8]) {
        if let Some(t) = self.tasks.get_mut(&id) {
            t.phase = Phase::Executing;
            for r in std::mem::take(&mut t.r2ts) {
                self.by_ttt.remove(&r.ttt);
            }
        }
        self.complete(id, STATUS_CHECK_CONDITION, sense, &[], Residual::None);
    }

    fn forget_task(&mut self, id: TaskId) -> Option<TaskState> {
        let t = self.tasks.remove(&id)?;
        if self.by_itt.get(&t.itt) == Some(&id) {
            self.by_itt.remove(&t.itt);
        }
        for r in &t.r2ts {
            self.by_ttt.remove(&r.ttt);
        }
        if t.immediate {
            self.immediate_tasks = self.immediate_tasks.saturating_sub(1);
        }
        match t.held {
            Some(sn) => {
                self.with_window(|w| w.withdraw(sn));
            }
            None => self.complete_counted(t.counted),
        }
        Some(t)
    }

    /// A command finished. `data_in` slices are the data-in bytes in order (already truncated
    /// to EDTL by the SCSI layer). Builds Data-In PDUs no bigger than the initiator's
    /// MaxRecvDataSegmentLength, DataSN per task, buffer offsets, F bit, A bit never (ERL 0),
    /// status piggy-backed in the final Data-In (S bit, with U/O residual flags) when GOOD and
    /// no sense, else a SCSI Response with the sense (2-byte SenseLength + sense) and residual
    /// counts; writes get a SCSI Response. ExpCmdSN/MaxCmdSN/StatSN set on every PDU as RFC
    /// says.
    pub fn complete(
        &mut self,
        task: TaskId,
        status: u8,
        sense: &[u8],
        data_in: &[&[u8]],
        residual: Residual,
    ) {
        if self.is_closed() {
            return;
        }
        let Some(t) = self.forget_task(task) else {
            return;
        };
        if t.aborted {
            self.tmf_task_done(task);
            return;
        }
        let (overflow, underflow, count) = match residual {
            Residual::None => (false, false, 0),
            Residual::Overflow(n) => (true, false, n),
            Residual::Underflow(n) => (false, true, n),
        };
        // Data-In only for reads, never beyond EDTL.
        let mut budget = if t.read { t.edtl as usize } else { 0 };
        let mut pieces: Vec<&[u8]> = Vec::new();
        for d in data_in {
            if budget == 0 {
                break;
            }
            let n = d.len().min(budget);
            if n > 0 {
                pieces.push(&d[..n]);
                budget -= n;
            }
        }
        let total: usize = pieces.iter().map(|d| d.len()).sum();
        let piggyback = status == 0 && sense.is_empty() && total > 0;
        let seg = (self.conn.initiator_mrdsl.max(512)) as usize;
        let burst = (self.params.max_burst_length.max(512)) as usize;
        let mut data_sn = DataSn(0);
        let mut offset = 0usize;
        let mut piece = 0usize;
        let mut within = 0usize;
        while offset < total {
            let burst_left = burst - offset % burst;
            let n = seg.min(total - offset).min(burst_left);
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut need = n;
            while need > 0 {
                let Some(p) = pieces.get(piece) else {
                    break;
                };
                let take = (p.len() - within).min(need);
                parts.push(&p[within..within + take]);
                within += take;
                need -= take;
                if within == p.len() {
                    piece += 1;
                    within = 0;
                }
            }
            let last = offset + n == total;
            let final_ = last || n == burst_left;
            let with_status = last && piggyback;
            let (exp, max) = self.serials();
            let stat_sn = if with_status {
                self.take_stat_sn()
            } else {
                StatSn(0)
            };
            let bhs = Bhs::DataIn(pdu::DataIn {
                final_,
                ack: false,
                overflow: with_status && overflow,
                underflow: with_status && underflow,
                status: with_status.then_some(status),
                lun: t.lun,
                itt: t.itt,
                ttt: Ttt::RESERVED,
                stat_sn,
                exp_cmd_sn: exp,
                max_cmd_sn: max,
                data_sn,
                buffer_offset: u32::try_from(offset).unwrap_or(u32::MAX),
                residual: if with_status { count } else { 0 },
            });
            self.send(bhs, &parts);
            data_sn = data_sn.next();
            offset += n;
        }
        if piggyback {
            return;
        }
        let (exp, max) = self.serials();
        let stat_sn = self.take_stat_sn();
        let bhs = Bhs::ScsiResponse(pdu::ScsiResponse {
            bidi_overflow: false,
            bidi_underflow: false,
            overflow,
            underflow,
            response: 0,
            status,
            itt: t.itt,
            snack_tag: 0,
            stat_sn,
            exp_cmd_sn: exp,
            max_cmd_sn: max,
            exp_data_sn: data_sn,
            bidi_residual: 0,
            residual: count,
        });
        if sense.is_empty() {
            self.send(bhs, &[]);
        } else {
            let n = sense.len().min(usize::from(u16::MAX));
            let len = u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes();
            self.send(bhs, &[&len, &sense[..n]]);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Task management
    // -----------------------------------------------------------------------------------------

    fn send_tmf_response(&mut self, itt: Itt, response: TmfResponse) {
        let (exp, max) = self.serials();
        let stat_sn = self.take_stat_sn();
        self.send(
            Bhs::TmfResponse(pdu::TmfResponse {
                response: response.code(),
                itt,
                stat_sn,
                exp_cmd_sn: exp,
                max_cmd_sn: max,
            }),
            &[],
        );
    }

    /// Tasks at the driver (after [`Event::Execute`]) that task management has aborted and that
    /// have not completed yet: the driver may stop them early (their `complete` is swallowed,
    /// and the TMF response waits for it).
    pub fn aborted_executing(&self) -> Vec<TaskId> {
        self.tasks
            .iter()
            .filter(|(_, t)| t.aborted && t.phase == Phase::Executing)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Marks matching tasks aborted: those at the driver are waited for (returned), those still
    /// gathering data are dropped at once.
    fn abort_matching(&mut self, pred: impl Fn(&TaskState) -> bool) -> Vec<TaskId> {
        let ids: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.aborted && pred(t))
            .map(|(id, _)| *id)
            .collect();
        let mut waiting = Vec::new();
        for id in ids {
            let executing = self
                .tasks
                .get(&id)
                .is_some_and(|t| t.phase == Phase::Executing);
            if executing {
                if let Some(t) = self.tasks.get_mut(&id) {
                    t.aborted = true;
                }
                waiting.push(id);
            } else {
                self.forget_task(id);
            }
        }
        waiting
    }

    fn tmf_request(&mut self, x: &pdu::TmfRequest, raw: &[u8; pdu::BHS_LEN], counted: bool) {
        let Some(SessionRef::Normal(session)) = &self.session else {
            self.send_reject(reject_reason::COMMAND_NOT_SUPPORTED, raw);
            self.complete_counted(counted);
            return;
        };
        let luns = session.target().luns.clone();
        let lun = x.lun.number();
        let Some(function) = TmfFunction::from_code(x.function) else {
            self.send_tmf_response(x.itt, TmfResponse::NotSupported);
            self.complete_counted(counted);
            return;
        };
        let lu_scoped = matches!(
            function,
            TmfFunction::AbortTaskSet
                | TmfFunction::ClearAca
                | TmfFunction::ClearTaskSet
                | TmfFunction::LogicalUnitReset
        );
        if lu_scoped && !luns.contains(&lun) {
            self.send_tmf_response(x.itt, TmfResponse::LunDoesNotExist);
            self.complete_counted(counted);
            return;
        }
        let waiting = match function {
            TmfFunction::TaskReassign => {
                self.send_tmf_response(x.itt, TmfResponse::ReassignNotSupported);
                self.complete_counted(counted);
                return;
            }
            TmfFunction::AbortTask => {
                let found = self.by_itt.get(&x.ref_itt).copied();
                match found {
                    Some(id) if self.tasks.get(&id).is_some_and(|t| !t.aborted) => {
                        let executing = self
                            .tasks
                            .get(&id)
                            .is_some_and(|t| t.phase == Phase::Executing);
                        if !executing {
                            self.forget_task(id);
                            self.send_tmf_response(x.itt, TmfResponse::Complete);
                            self.complete_counted(counted);
                            return;
                        }
                        if let Some(t) = self.tasks.get_mut(&id) {
                            t.aborted = true;
                        }
                        vec![id]
                    }
                    _ => {
                        let answer = self.abort_unknown(x);
                        self.send_tmf_response(x.itt, answer);
                        self.complete_counted(counted);
                        return;
                    }
                }
            }
            TmfFunction::ClearAca => Vec::new(),
            TmfFunction::AbortTaskSet
            | TmfFunction::ClearTaskSet
            | TmfFunction::LogicalUnitReset => self.abort_matching(|t| t.lun.number() == lun),
            TmfFunction::TargetWarmReset | TmfFunction::TargetColdReset => {
                self.abort_matching(|_| true)
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        self.tmfs.push(PendingTmf {
            id,
            itt: x.itt,
            counted,
            waiting,
            answer: None,
            cold_reset: function == TmfFunction::TargetColdReset,
        });
        self.events
            .push_back(Event::TaskManagement { id, function, lun });
    }

    /// ABORT TASK for a task this connection does not have (RFC 7143 §11.5.1).
    fn abort_unknown(&mut self, x: &pdu::TmfRequest) -> TmfResponse {
        // A held command (waiting for a CmdSN gap) has not started: drop it.
        if let Some(i) = self.held.iter().position(|h| match h.pdu.bhs {
            Bhs::ScsiCommand(c) => c.itt == x.ref_itt,
            _ => false,
        }) {
            let h = self.held.swap_remove(i);
            self.with_window(|w| w.withdraw(h.cmd_sn));
            return TmfResponse::Complete;
        }
        let ref_sn = x.ref_cmd_sn;
        let in_window = self
            .with_window(|w| {
                let ok = w.in_window(ref_sn) && ref_sn.lt(x.cmd_sn);
                if ok {
                    w.consume(ref_sn);
                }
                ok
            })
            .unwrap_or(false);
        if in_window {
            TmfResponse::Complete
        } else {
            TmfResponse::TaskDoesNotExist
        }
    }

    fn tmf_task_done(&mut self, task: TaskId) {
        for t in &mut self.tmfs {
            t.waiting.retain(|&w| w != task);
        }
        self.flush_tmfs();
    }

    fn flush_tmfs(&mut self) {
        while let Some(i) = self
            .tmfs
            .iter()
            .position(|t| t.waiting.is_empty() && t.answer.is_some())
        {
            let t = self.tmfs.remove(i);
            let answer = t.answer.unwrap_or(TmfResponse::Complete);
            self.send_tmf_response(t.itt, answer);
            self.complete_counted(t.counted);
            if t.cold_reset {
                self.shutdown();
                return;
            }
        }
    }

    /// The driver carried out a [`Event::TaskManagement`].
    pub fn tmf_complete(&mut self, id: TaskId, response: TmfResponse) {
        if self.is_closed() {
            return;
        }
        if let Some(t) = self.tmfs.iter_mut().find(|t| t.id == id) {
            t.answer = Some(response);
        }
        self.flush_tmfs();
    }

    /// Another connection's TMF (CLEAR TASK SET, LU RESET, target reset) affects this
    /// connection's tasks on `lun` (None: all LUNs): mark them aborted, swallow their
    /// completions.
    pub fn abort_tasks(&mut self, lun: Option<u64>) {
        if self.is_closed() {
            return;
        }
        self.abort_matching(|t| lun.is_none_or(|l| t.lun.number() == l));
    }

    // -----------------------------------------------------------------------------------------
    // Text
    // -----------------------------------------------------------------------------------------

    fn text_request(&mut self, x: &pdu::TextRequest, p: &Pdu<'_>, counted: bool) {
        let continuing = !x.ttt.is_reserved();
        let exchange = match self.text.take() {
            Some(e) if continuing && e.ttt == x.ttt && e.itt == x.itt => Some(e),
            Some(_) | None if continuing => {
                self.send_reject(reject_reason::INVALID_PDU_FIELD, p.raw_bhs);
                self.complete_counted(counted);
                return;
            }
            _ => None,
        };
        let mut ex = exchange.unwrap_or(TextExchange {
            itt: x.itt,
            ttt: Ttt::RESERVED,
            request: Vec::new(),
            response: Vec::new(),
            offset: 0,
        });
        if ex.offset < ex.response.len() {
            // The initiator asks for the next part of a long answer.
            self.send_text_part(x, ex, counted);
            return;
        }
        if ex.request.len() + p.data.len() > text::MAX_TEXT_LEN {
            self.send_reject(reject_reason::OUT_OF_RESOURCES, p.raw_bhs);
            self.complete_counted(counted);
            return;
        }
        ex.request.extend_from_slice(p.data);
        if x.cont {
            // More request text follows: an empty answer with a TTT to continue on.
            if ex.ttt.is_reserved() {
                ex.ttt = self.alloc_ttt();
            }
            let ttt = ex.ttt;
            self.text = Some(ex);
            self.send_text(x, false, false, ttt, &[]);
            self.complete_counted(counted);
            return;
        }
        let request = std::mem::take(&mut ex.request);
        let answer = match text::parse(&request) {
            Ok(pairs) => self.text_answer(&pairs),
            Err(_) => {
                self.send_reject(reject_reason::PROTOCOL_ERROR, p.raw_bhs);
                self.complete_counted(counted);
                return;
            }
        };
        ex.response = answer;
        ex.offset = 0;
        self.send_text_part(x, ex, counted);
    }

    fn send_text_part(&mut self, x: &pdu::TextRequest, mut ex: TextExchange, counted: bool) {
        let seg = (self.conn.initiator_mrdsl.max(512)) as usize;
        let end = ex.response.len().min(ex.offset + seg);
        let part = ex.response.get(ex.offset..end).unwrap_or_default().to_vec();
        ex.offset = end;
        if end < ex.response.len() {
            if ex.ttt.is_reserved() {
                ex.ttt = self.alloc_ttt();
            }
            let ttt = ex.ttt;
            self.text = Some(ex);
            self.send_text(x, false, true, ttt, &part);
        } else {
            self.send_text(x, true, false, Ttt::RESERVED, &part);
        }
        self.complete_counted(counted);
    }

    fn send_text(&mut self, x: &pdu::TextRequest, final_: bool, cont: bool, ttt: Ttt, data: &[u8]) {
        let (exp, max) = self.serials();
        let stat_sn = self.take_stat_sn();
        self.send(
            Bhs::TextResponse(pdu::TextResponse {
                final_,
                cont,
                lun: x.lun,
                itt: x.itt,
                ttt,
                stat_sn,
                exp_cmd_sn: exp,
                max_cmd_sn: max,
            }),
            &[data],
        );
    }

    fn text_answer(&mut self, pairs: &[text::KeyValue<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for kv in pairs {
            match kv.key {
                "SendTargets" => self.send_targets(kv.value, &mut out),
                "MaxRecvDataSegmentLength" => {
                    if let Some(v) =
                        text::parse_number(kv.value).filter(|v| (512..=0xff_ffff).contains(v))
                    {
                        self.conn.initiator_mrdsl = u32::try_from(v).unwrap_or(u32::MAX);
                    } else {
                        text::push(&mut out, kv.key, text::REJECT);
                    }
                }
                "HeaderDigest"
                | "DataDigest"
                | "MaxConnections"
                | "InitialR2T"
                | "ImmediateData"
                | "MaxBurstLength"
                | "FirstBurstLength"
                | "DefaultTime2Wait"
                | "DefaultTime2Retain"
                | "MaxOutstandingR2T"
                | "DataPDUInOrder"
                | "DataSequenceInOrder"
                | "ErrorRecoveryLevel"
                | "SessionType"
                | "InitiatorName"
                | "TargetName"
                | "AuthMethod"
                | "IFMarker"
                | "OFMarker"
                | "IFMarkInt"
                | "OFMarkInt" => {
                    text::push(&mut out, kv.key, text::REJECT);
                }
                k if k.starts_with("CHAP_") => text::push(&mut out, kv.key, text::REJECT),
                _ => text::push(&mut out, kv.key, text::NOT_UNDERSTOOD),
            }
        }
        out
    }

    /// SendTargets (RFC 7143 Appendix C): the targets this initiator may log in to, with a
    /// TargetAddress per portal address.
    fn send_targets(&self, value: &str, out: &mut Vec<u8>) {
        let own = match &self.session {
            Some(SessionRef::Normal(s)) => Some(Arc::clone(s.target())),
            _ => None,
        };
        let targets = match value {
            "All" => self.cfg.directory.targets(),
            "" => own.into_iter().collect(),
            name => self.cfg.directory.target(name).into_iter().collect(),
        };
        for t in targets {
            if !t.access.allows(&self.initiator_name) {
                continue;
            }
            text::push(out, "TargetName", &t.name);
            for a in &self.cfg.portal.addresses {
                text::push(
                    out,
                    "TargetAddress",
                    &format!("{a},{}", self.cfg.portal.tpgt),
                );
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Logout, async messages, closing
    // -----------------------------------------------------------------------------------------

    fn logout_request(&mut self, x: &pdu::LogoutRequest, raw: &[u8; pdu::BHS_LEN], counted: bool) {
        let (response, close_me) = match x.reason {
            0 => {
                if let Some(SessionRef::Normal(s)) = &self.session {
                    s.request_close();
                }
                (0, true)
            }
            1 if x.cid == self.cid => (0, true),
            1 => match &self.session {
                Some(SessionRef::Normal(s)) if s.close_connection(x.cid) => (0, false),
                _ => (1, false),
            },
            2 => (2, false),
            _ => {
                self.send_reject(reject_reason::INVALID_PDU_FIELD, raw);
                self.complete_counted(counted);
                return;
            }
        };
        self.complete_counted(counted);
        let (exp, max) = self.serials();
        let stat_sn = self.take_stat_sn();
        self.send(
            Bhs::LogoutResponse(pdu::LogoutResponse {
                response,
                itt: x.itt,
                stat_sn,
                exp_cmd_sn: exp,
                max_cmd_sn: max,
                time2wait: 0,
                time2retain: 0,
            }),
            &[],
        );
        if close_me {
            self.shutdown();
        }
    }

    /// The daemon is stopping or the export went away: Async Message (AsyncEvent 1, target
    /// requests logout, Parameter3 = seconds to logout), then close after that time.
    pub fn request_logout(&mut self, now: Instant) {
        match self.state {
            State::Closed => {}
            State::Login(_) => self.shutdown(),
            State::Full => {
                if self.logout_deadline.is_some() {
                    return;
                }
                self.logout_deadline = Some(now + LOGOUT_GRACE);
                let (exp, max) = self.serials();
                let stat_sn = self.take_stat_sn();
                self.send(
                    Bhs::AsyncMessage(pdu::AsyncMessage {
                        lun: Lun(0),
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                        event: 1,
                        vcode: 0,
                        param1: 0,
                        param2: 0,
                        param3: u16::try_from(LOGOUT_GRACE.as_secs()).unwrap_or(u16::MAX),
                    }),
                    &[],
                );
            }
        }
    }

    fn check_close_requests(&mut self) {
        if !matches!(self.state, State::Full) {
            return;
        }
        let session_closing = match &self.session {
            Some(SessionRef::Normal(s)) => s.close_requested(),
            _ => false,
        };
        if session_closing || self.close.load(Ordering::Acquire) {
            self.shutdown();
        }
    }

    /// The socket failed or the peer closed it: end the connection (and the session, when this
    /// was its last connection). Queues [`Event::SessionEnded`] where due and [`Event::Close`].
    /// Idempotent; dropping a connection without calling this (or reaching [`Event::Close`])
    /// still leaves its session, but without the event.
    pub fn connection_lost(&mut self, now: Instant) {
        let _ = now; // no timer starts here: at ERL 0 nothing waits for a reconnection
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.is_closed() {
            return;
        }
        let was_full = matches!(self.state, State::Full);
        self.state = State::Closed;
        self.detach(was_full);
        self.events.push_back(Event::Close);
    }

    /// Gives back this connection's share of the session: window slots of unanswered commands,
    /// held CmdSNs, its place in the session (ending it when last).
    fn detach(&mut self, emit: bool) {
        let counted = self.tasks.values().filter(|t| t.counted).count()
            + self.tmfs.iter().filter(|t| t.counted).count();
        let mut held: Vec<CmdSn> = self.held.drain(..).map(|h| h.cmd_sn).collect();
        held.extend(self.tasks.values().filter_map(|t| t.held));
        self.tasks.clear();
        self.by_itt.clear();
        self.by_ttt.clear();
        self.tmfs.clear();
        self.text = None;
        let session = match &self.session {
            Some(SessionRef::Normal(s)) => Some(Arc::clone(s)),
            _ => None,
        };
        if let Some(s) = session {
            s.with_window(|w| {
                for _ in 0..counted {
                    w.complete();
                }
                for sn in held {
                    w.withdraw(sn);
                }
            });
            if s.remove_connection(&self.close) {
                self.cfg.sessions.remove(&s);
                if emit {
                    self.events.push_back(Event::SessionEnded { session: s });
                }
            }
        }
    }

    /// Timers: login timeout, NOP-In keep-alive (target-initiated ping with a TTT; a missing
    /// NOP-Out answer within nop_timeout closes), session close requests (reinstatement), the
    /// logout grace period. Returns the next instant it wants to be called (the driver also
    /// calls it at least once a second).
    pub fn tick(&mut self, now: Instant) -> Option<Instant> {
        match self.state {
            State::Closed => return None,
            State::Login(_) => {
                if now >= self.login_deadline {
                    tracing::info!(peer = %self.peer, "login timed out");
                    self.shutdown();
                    return None;
                }
                return Some(self.login_deadline);
            }
            State::Full => {}
        }
        self.check_close_requests();
        self.release_held();
        if self.is_closed() {
            return None;
        }
        if self.logout_deadline.is_some_and(|d| now >= d) {
            self.shutdown();
            return None;
        }
        if let Some((_, deadline)) = self.ping {
            if now >= deadline {
                tracing::info!(peer = %self.peer, "NOP-In ping unanswered: closing");
                self.shutdown();
                return None;
            }
        } else if !self.cfg.limits.nop_interval.is_zero()
            && now >= self.last_rx + self.cfg.limits.nop_interval
        {
            self.send_ping(now);
        }
        let mut next: Vec<Instant> = Vec::new();
        if let Some(d) = self.logout_deadline {
            next.push(d);
        }
        match self.ping {
            Some((_, d)) => next.push(d),
            None if !self.cfg.limits.nop_interval.is_zero() => {
                next.push(self.last_rx + self.cfg.limits.nop_interval)
            }
            None => {}
        }
        if !self.held.is_empty() || self.tasks.values().any(|t| t.held.is_some()) {
            next.push(now + HELD_RECHECK);
        }
        next.into_iter().min()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !self.is_closed() {
            self.state = State::Closed;
            self.detach(false);
        }
    }
}

#[cfg(test)]
pub(crate) mod testkit;

#[cfg(test)]
mod interop;

#[cfg(test)]
mod tests;
