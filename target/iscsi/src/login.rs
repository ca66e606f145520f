//! The login phase (RFC 7143 §6.3, §11.12, §11.13, §13), target side, one connection.
//!
//! [`Login`] consumes Login Requests and produces Login Responses. It walks the stages
//! (security `0` → operational `1` → full feature `3`, or skipping a stage as the initiator
//! chooses and the rules allow), joins text split with the C bit, splits long answers the same
//! way, authenticates (AuthMethod None or CHAP, one-way or mutual), negotiates the operational
//! keys, and at the end creates the session (or joins one, for a further connection with
//! TSIH != 0, or reinstates one). Every failure ends in one Login Response with a status class
//! other than 0, after which the connection closes.
//!
//! Key handling, as RFC 7143 §6 and §13 define it:
//!
//! | key | result |
//! | --- | --- |
//! | HeaderDigest, DataDigest | first of the initiator's list that is `None` or `CRC32C` |
//! | MaxRecvDataSegmentLength | declarative (each side's own); ours is declared in the operational stage |
//! | MaxBurstLength, FirstBurstLength, MaxOutstandingR2T, MaxConnections | minimum with our limit |
//! | InitialR2T, DataPDUInOrder, DataSequenceInOrder | OR (we answer `Yes` for the last two) |
//! | ImmediateData | AND (we accept `Yes`) |
//! | DefaultTime2Wait | maximum (we accept any) ; DefaultTime2Retain: minimum with 0 |
//! | ErrorRecoveryLevel | minimum with 0 |
//! | IFMarker, OFMarker, RDMAExtensions | `No`; IFMarkInt, OFMarkInt: `Irrelevant` |
//! | session-wide keys in a discovery session | `Irrelevant` |
//! | leading-only keys on a further connection | `Irrelevant` |
//! | X-*, X#*, unknown keys | `NotUnderstood` |
//!
//! A numerical value out of its range is answered `Reject` and the default stays. A key
//! negotiated twice in one login, or a key twice in one text, fails the login (0x0200).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::chap::TargetChap;
use crate::conn::{ConnConfig, Limits};
use crate::pdu::{Cid, CmdSn, Isid, Itt, LoginRequest, LoginResponse, StatSn, Tsih};
use crate::session::{
    CmdWindow, ConnParams, JoinError, NewSession, Session, SessionParams, SessionTable,
};
use crate::text::{self, KeyValue};
use crate::{Access, Directory, Portal, TargetNode};

/// Stage numbers (CSG/NSG).
pub const STAGE_SECURITY: u8 = 0;
/// Operational negotiation stage.
pub const STAGE_OPERATIONAL: u8 = 1;
/// Full feature phase.
pub const STAGE_FULL_FEATURE: u8 = 3;

/// Most data bytes the target puts in one Login Response (the initiator's
/// MaxRecvDataSegmentLength is not known before the login ends; 8192 is its default).
pub const LOGIN_SEGMENT: usize = 8192;

/// Largest MaxRecvDataSegmentLength / burst lengths RFC 7143 allows (2^24 - 1).
const MAX_LEN_VALUE: u64 = 0x00ff_ffff;

/// Login failure statuses (RFC 7143 §11.13.5): class in the high byte, detail in the low one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginStatus {
    /// 0x0200: miscellaneous initiator error.
    InitiatorError,
    /// 0x0201: authentication failed.
    AuthenticationFailure,
    /// 0x0202: the initiator may not access the target.
    AuthorizationFailure,
    /// 0x0203: no such target.
    TargetNotFound,
    /// 0x0204: the target was removed.
    TargetRemoved,
    /// 0x0205: unsupported version.
    UnsupportedVersion,
    /// 0x0206: too many connections on this session.
    TooManyConnections,
    /// 0x0207: a required key is missing.
    MissingParameter,
    /// 0x0208: cannot include the connection in the session.
    CantIncludeInSession,
    /// 0x0209: session type not supported.
    SessionTypeNotSupported,
    /// 0x020a: the session to join does not exist.
    SessionDoesNotExist,
    /// 0x020b: a request that is not valid during login.
    InvalidDuringLogin,
    /// 0x0300: target error.
    TargetError,
    /// 0x0301: service unavailable.
    ServiceUnavailable,
    /// 0x0302: out of resources.
    OutOfResources,
}

impl LoginStatus {
    /// Status-Class and Status-Detail.
    pub fn code(self) -> (u8, u8) {
        match self {
            LoginStatus::InitiatorError => (0x02, 0x00),
            LoginStatus::AuthenticationFailure => (0x02, 0x01),
            LoginStatus::AuthorizationFailure => (0x02, 0x02),
            LoginStatus::TargetNotFound => (0x02, 0x03),
            LoginStatus::TargetRemoved => (0x02, 0x04),
            LoginStatus::UnsupportedVersion => (0x02, 0x05),
            LoginStatus::TooManyConnections => (0x02, 0x06),
            LoginStatus::MissingParameter => (0x02, 0x07),
            LoginStatus::CantIncludeInSession => (0x02, 0x08),
            LoginStatus::SessionTypeNotSupported => (0x02, 0x09),
            LoginStatus::SessionDoesNotExist => (0x02, 0x0a),
            LoginStatus::InvalidDuringLogin => (0x02, 0x0b),
            LoginStatus::TargetError => (0x03, 0x00),
            LoginStatus::ServiceUnavailable => (0x03, 0x01),
            LoginStatus::OutOfResources => (0x03, 0x02),
        }
    }
}

/// SessionType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionType {
    /// Normal: SCSI commands to one target.
    Normal,
    /// Discovery: SendTargets only.
    Discovery,
}

/// How a login ended successfully.
#[derive(Debug)]
pub enum EstablishedKind {
    /// A normal session.
    Normal {
        /// The session (new, reinstated or joined).
        session: Arc<Session>,
        /// True for the leading connection of a new session.
        leading: bool,
    },
    /// A discovery session (not in the session table).
    Discovery {
        /// Its TSIH.
        tsih: Tsih,
        /// Its command window.
        window: CmdWindow,
    },
}

/// A connection that reached full feature phase.
#[derive(Debug)]
pub struct Established {
    /// Negotiated connection parameters (digests, segment lengths).
    pub conn: ConnParams,
    /// The connection's CID.
    pub cid: Cid,
    /// Set by others to ask this connection to close (reinstatement, logout, shutdown).
    pub close: Arc<AtomicBool>,
    /// The StatSN of the connection's next response.
    pub next_stat_sn: StatSn,
    /// InitiatorName.
    pub initiator_name: String,
    /// Session or discovery details.
    pub kind: EstablishedKind,
}

/// What a Login Request led to.
#[derive(Debug)]
pub enum LoginOutcome {
    /// Send the response; more Login Requests follow.
    Continue,
    /// Send the response; the connection is now in full feature phase.
    Established(Box<Established>),
    /// Send the response (a failure status); then close the connection.
    Failed(LoginStatus),
}

/// One Login Response and what follows it.
#[derive(Debug)]
pub struct LoginStep {
    /// The response header.
    pub response: LoginResponse,
    /// Its data segment (key=value text).
    pub data: Vec<u8>,
    /// What follows.
    pub outcome: LoginOutcome,
}

#[derive(Debug)]
enum Auth {
    /// No AuthMethod agreed yet.
    Pending,
    /// AuthMethod=CHAP agreed; waiting for CHAP_A.
    ChapAlgorithm,
    /// Challenge sent; waiting for CHAP_N/CHAP_R.
    ChapResponse(TargetChap),
    /// Authenticated (or AuthMethod=None).
    Done,
}

#[derive(Debug, Clone, Copy)]
struct First {
    isid: Isid,
    tsih: Tsih,
    cid: Cid,
    cmd_sn: CmdSn,
}

#[derive(Debug)]
struct PendingOut {
    text: Vec<u8>,
    offset: usize,
    transit: bool,
    nsg: u8,
}

/// The login state machine of one connection.
#[derive(Debug)]
pub struct Login {
    portal: Portal,
    directory: Arc<dyn Directory>,
    sessions: Arc<SessionTable>,
    limits: Limits,
    close: Arc<AtomicBool>,
    stage: u8,
    first: Option<First>,
    stat_sn: StatSn,
    initiator_name: Option<String>,
    initiator_alias: Option<String>,
    target_name: Option<String>,
    session_type: SessionType,
    target: Option<Arc<TargetNode>>,
    access: Access,
    join: Option<Arc<Session>>,
    auth: Auth,
    answered: HashSet<String>,
    params: SessionParams,
    conn: ConnParams,
    mrdsl_declared: bool,
    pending_in: Vec<u8>,
    pending_out: Option<PendingOut>,
    finished: bool,
}

type Step<T> = Result<T, LoginStatus>;

fn stage_ok(csg: u8) -> bool {
    csg == STAGE_SECURITY || csg == STAGE_OPERATIONAL
}

fn leading_only(key: &str) -> bool {
    matches!(
        key,
        "MaxConnections"
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
    )
}

fn irrelevant_for_discovery(key: &str) -> bool {
    matches!(
        key,
        "MaxConnections"
            | "InitialR2T"
            | "ImmediateData"
            | "MaxBurstLength"
            | "FirstBurstLength"
            | "MaxOutstandingR2T"
            | "DataPDUInOrder"
            | "DataSequenceInOrder"
    )
}

fn security_key(key: &str) -> bool {
    key == "AuthMethod" || key.starts_with("CHAP_")
}

fn number_in(value: &str, lo: u64, hi: u64) -> Option<u64> {
    text::parse_number(value).filter(|v| (lo..=hi).contains(v))
}

/// The first digest of an offered list that we support.
fn pick_digest(offer: &str) -> Option<bool> {
    text::list(offer).find_map(|d| match d {
        "None" => Some(false),
        "CRC32C" => Some(true),
        _ => None,
    })
}

fn u32_of(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn u16_of(v: u64) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

impl Login {
    /// A login state machine for a new connection. `close` becomes the connection's close flag.
    pub fn new(cfg: &ConnConfig, close: Arc<AtomicBool>) -> Login {
        Login {
            portal: cfg.portal.clone(),
            directory: Arc::clone(&cfg.directory),
            sessions: Arc::clone(&cfg.sessions),
            limits: cfg.limits.clone(),
            close,
            stage: STAGE_SECURITY,
            first: None,
            stat_sn: StatSn(0),
            initiator_name: None,
            initiator_alias: None,
            target_name: None,
            session_type: SessionType::Normal,
            target: None,
            access: Access::default(),
            join: None,
            auth: Auth::Pending,
            answered: HashSet::new(),
            params: SessionParams::default(),
            conn: ConnParams {
                target_mrdsl: cfg.limits.max_recv_data_segment_length,
                ..ConnParams::default()
            },
            mrdsl_declared: false,
            pending_in: Vec::new(),
            pending_out: None,
            finished: false,
        }
    }

    /// The InitiatorName, once the first request declared it.
    pub fn initiator_name(&self) -> Option<&str> {
        self.initiator_name.as_deref()
    }

    /// Handles one Login Request (header and data segment).
    pub fn handle(&mut self, req: &LoginRequest, data: &[u8]) -> LoginStep {
        match self.step(req, data) {
            Ok(step) => step,
            Err(status) => self.failure(req.itt, req.csg, req.isid, req.tsih, status),
        }
    }

    /// The failure response to a request that is not a Login Request during login
    /// (status 0x020b, "invalid during login").
    pub fn invalid_request(&mut self, itt: Itt) -> LoginStep {
        let (isid, tsih) = self.first.map(|f| (f.isid, f.tsih)).unwrap_or_default();
        self.failure(itt, self.stage, isid, tsih, LoginStatus::InvalidDuringLogin)
    }

    fn failure(
        &mut self,
        itt: Itt,
        csg: u8,
        isid: Isid,
        tsih: Tsih,
        status: LoginStatus,
    ) -> LoginStep {
        self.finished = true;
        let (class, detail) = status.code();
        let (exp, max) = self.window();
        let response = LoginResponse {
            transit: false,
            cont: false,
            csg: csg & 3,
            nsg: 0,
            version_max: 0,
            version_active: 0,
            isid,
            tsih,
            itt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: exp,
            max_cmd_sn: max,
            status_class: class,
            status_detail: detail,
        };
        LoginStep {
            response,
            data: Vec::new(),
            outcome: LoginOutcome::Failed(status),
        }
    }

    fn next_stat_sn(&mut self) -> StatSn {
        let s = self.stat_sn;
        self.stat_sn = s.next();
        s
    }

    fn window(&self) -> (CmdSn, CmdSn) {
        if let Some(s) = &self.join {
            return s.window();
        }
        let first = self.first.map(|f| f.cmd_sn).unwrap_or_default();
        let w = CmdWindow::new(first, self.limits.queue_depth);
        (w.exp_cmd_sn(), w.max_cmd_sn())
    }

    fn step(&mut self, req: &LoginRequest, data: &[u8]) -> Step<LoginStep> {
        if self.finished {
            return Err(LoginStatus::InitiatorError);
        }
        match self.first {
            None => {
                if req.version_min > 0 || req.version_max < req.version_min {
                    return Err(LoginStatus::UnsupportedVersion);
                }
                if !stage_ok(req.csg) {
                    return Err(LoginStatus::InitiatorError);
                }
                self.first = Some(First {
                    isid: req.isid,
                    tsih: req.tsih,
                    cid: req.cid,
                    cmd_sn: req.cmd_sn,
                });
                self.stage = req.csg;
                self.stat_sn = req.exp_stat_sn;
            }
            Some(f) => {
                if f.isid != req.isid || f.tsih != req.tsih || f.cid != req.cid {
                    return Err(LoginStatus::InitiatorError);
                }
            }
        }
        if req.csg != self.stage || (req.transit && req.cont) {
            return Err(LoginStatus::InitiatorError);
        }
        if req.transit && (req.nsg <= req.csg || req.nsg == 2) {
            return Err(LoginStatus::InitiatorError);
        }

        if self.pending_out.is_some() {
            // The initiator acknowledges each part of a long answer with an empty request.
            if !data.is_empty() || req.cont {
                return Err(LoginStatus::InitiatorError);
            }
            return self.emit(req, Vec::new(), false, 0);
        }

        if self.pending_in.len() + data.len() > text::MAX_TEXT_LEN {
            return Err(LoginStatus::OutOfResources);
        }
        self.pending_in.extend_from_slice(data);
        if req.cont {
            return Ok(self.response(req, false, false, 0, Vec::new(), LoginOutcome::Continue));
        }
        let whole = std::mem::take(&mut self.pending_in);
        let pairs = text::parse(&whole).map_err(|_| LoginStatus::InitiatorError)?;
        if text::first_duplicate(&pairs).is_some() {
            return Err(LoginStatus::InitiatorError);
        }

        let mut out = Vec::new();
        if self.initiator_name.is_none() {
            self.identify(&pairs)?;
            if self.session_type == SessionType::Normal {
                text::push(
                    &mut out,
                    "TargetPortalGroupTag",
                    &self.portal.tpgt.to_string(),
                );
                if let Some(alias) = self.target.as_ref().and_then(|t| t.alias.clone()) {
                    text::push(&mut out, "TargetAlias", &alias);
                }
            }
        } else {
            self.check_declarations(&pairs)?;
        }
        self.negotiate(&pairs, &mut out)?;

        let mut transit = false;
        let mut nsg = 0;
        if req.transit {
            let may = match self.stage {
                STAGE_SECURITY => self.auth_complete()?,
                _ => true,
            };
            if may {
                transit = true;
                nsg = req.nsg;
            }
        }
        if self.stage == STAGE_OPERATIONAL && !self.mrdsl_declared {
            self.mrdsl_declared = true;
            text::push(
                &mut out,
                "MaxRecvDataSegmentLength",
                &self.limits.max_recv_data_segment_length.to_string(),
            );
        }
        self.emit(req, out, transit, nsg)
    }

    /// Sends `text` (or what remains of an earlier long answer), splitting it with the C bit.
    fn emit(
        &mut self,
        req: &LoginRequest,
        text: Vec<u8>,
        transit: bool,
        nsg: u8,
    ) -> Step<LoginStep> {
        let mut p = match self.pending_out.take() {
            Some(p) => p,
            None => PendingOut {
                text,
                offset: 0,
                transit,
                nsg,
            },
        };
        let end = p.text.len().min(p.offset + LOGIN_SEGMENT);
        let chunk = p.text.get(p.offset..end).unwrap_or_default().to_vec();
        if end < p.text.len() {
            p.offset = end;
            self.pending_out = Some(p);
            return Ok(self.response(req, false, true, 0, chunk, LoginOutcome::Continue));
        }
        let mut outcome = LoginOutcome::Continue;
        if p.transit {
            if p.nsg == STAGE_FULL_FEATURE {
                outcome = LoginOutcome::Established(Box::new(self.finish()?));
            }
            self.stage = p.nsg;
        }
        Ok(self.response(req, p.transit, false, p.nsg, chunk, outcome))
    }

    fn response(
        &mut self,
        req: &LoginRequest,
        transit: bool,
        cont: bool,
        nsg: u8,
        data: Vec<u8>,
        outcome: LoginOutcome,
    ) -> LoginStep {
        let tsih = match &outcome {
            LoginOutcome::Established(e) => match &e.kind {
                EstablishedKind::Normal { session, .. } => session.tsih(),
                EstablishedKind::Discovery { tsih, .. } => *tsih,
            },
            _ => req.tsih,
        };
        let (exp, max) = match &outcome {
            LoginOutcome::Established(e) => match &e.kind {
                EstablishedKind::Normal { session, .. } => session.window(),
                EstablishedKind::Discovery { window, .. } => {
                    (window.exp_cmd_sn(), window.max_cmd_sn())
                }
            },
            _ => self.window(),
        };
        let stat_sn = self.next_stat_sn();
        let mut outcome = outcome;
        if let LoginOutcome::Established(e) = &mut outcome {
            e.next_stat_sn = self.stat_sn;
            self.finished = true;
        }
        LoginStep {
            response: LoginResponse {
                transit,
                cont,
                csg: req.csg,
                nsg: if transit { nsg } else { 0 },
                version_max: 0,
                version_active: 0,
                isid: req.isid,
                tsih,
                itt: req.itt,
                stat_sn,
                exp_cmd_sn: exp,
                max_cmd_sn: max,
                status_class: 0,
                status_detail: 0,
            },
            data,
            outcome,
        }
    }

    /// The first request: who is logging in, to what, and may they.
    fn identify(&mut self, pairs: &[KeyValue<'_>]) -> Step<()> {
        let get = |k: &str| pairs.iter().find(|kv| kv.key == k).map(|kv| kv.value);
        let name = get("InitiatorName").ok_or(LoginStatus::MissingParameter)?;
        if name.is_empty() || name.len() > 223 {
            return Err(LoginStatus::InitiatorError);
        }
        self.session_type = match get("SessionType") {
            None | Some("Normal") => SessionType::Normal,
            Some("Discovery") => SessionType::Discovery,
            Some(_) => return Err(LoginStatus::SessionTypeNotSupported),
        };
        self.initiator_alias = get("InitiatorAlias").map(str::to_string);
        let first = self.first.ok_or(LoginStatus::InitiatorError)?;
        match self.session_type {
            SessionType::Discovery => {
                if first.tsih != Tsih(0) {
                    return Err(LoginStatus::SessionDoesNotExist);
                }
                self.access = self.directory.discovery_access();
            }
            SessionType::Normal => {
                let tname = get("TargetName").ok_or(LoginStatus::MissingParameter)?;
                let target = self
                    .directory
                    .target(tname)
                    .ok_or(LoginStatus::TargetNotFound)?;
                self.target_name = Some(tname.to_string());
                self.access = target.access.clone();
                if first.tsih != Tsih(0) {
                    let s = self
                        .sessions
                        .lookup(first.tsih)
                        .ok_or(LoginStatus::SessionDoesNotExist)?;
                    if s.isid() != first.isid
                        || !s.initiator_name().eq_ignore_ascii_case(name)
                        || !s.target().name.eq_ignore_ascii_case(&target.name)
                        || s.close_requested()
                    {
                        return Err(LoginStatus::SessionDoesNotExist);
                    }
                    self.params = *s.params();
                    self.join = Some(s);
                }
                self.target = Some(target);
            }
        }
        if !self.access.allows(name) {
            return Err(LoginStatus::AuthorizationFailure);
        }
        if self.access.chap.is_some() && self.stage != STAGE_SECURITY {
            return Err(LoginStatus::AuthenticationFailure);
        }
        self.initiator_name = Some(name.to_string());
        Ok(())
    }

    /// Later requests may repeat the declarations of the first one (libiscsi does), unchanged.
    fn check_declarations(&self, pairs: &[KeyValue<'_>]) -> Step<()> {
        for kv in pairs {
            let same = match kv.key {
                "InitiatorName" => self.initiator_name.as_deref() == Some(kv.value),
                "TargetName" => match self.session_type {
                    SessionType::Normal => self.target_name.as_deref() == Some(kv.value),
                    SessionType::Discovery => true,
                },
                "SessionType" => {
                    let t = match self.session_type {
                        SessionType::Normal => "Normal",
                        SessionType::Discovery => "Discovery",
                    };
                    kv.value == t
                }
                _ => true,
            };
            if !same {
                return Err(LoginStatus::InitiatorError);
            }
        }
        Ok(())
    }

    fn auth_complete(&self) -> Step<bool> {
        match self.auth {
            Auth::Done => Ok(true),
            Auth::Pending if self.access.chap.is_none() => Ok(true),
            Auth::Pending => Err(LoginStatus::AuthenticationFailure),
            Auth::ChapAlgorithm | Auth::ChapResponse(_) => Ok(false),
        }
    }

    fn negotiate(&mut self, pairs: &[KeyValue<'_>], out: &mut Vec<u8>) -> Step<()> {
        let discovery = self.session_type == SessionType::Discovery;
        let leading = self.join.is_none();
        // FirstBurstLength may not exceed MaxBurstLength: settle MaxBurstLength first.
        let offered_max_burst = pairs
            .iter()
            .find(|kv| kv.key == "MaxBurstLength")
            .and_then(|kv| number_in(kv.value, 512, MAX_LEN_VALUE));
        let mut chap_keys = false;
        for kv in pairs {
            let key = kv.key;
            if matches!(
                key,
                "InitiatorName" | "TargetName" | "SessionType" | "InitiatorAlias"
            ) {
                continue;
            }
            if security_key(key) && self.stage != STAGE_SECURITY {
                return Err(LoginStatus::InitiatorError);
            }
            if matches!(key, "CHAP_N" | "CHAP_R" | "CHAP_I" | "CHAP_C") {
                chap_keys = true;
                continue;
            }
            if !self.answered.insert(key.to_string()) {
                return Err(LoginStatus::InitiatorError);
            }
            if key == "AuthMethod" {
                let answer = self.auth_method(kv.value)?;
                text::push(out, key, answer);
                continue;
            }
            if key == "CHAP_A" {
                if !matches!(self.auth, Auth::ChapAlgorithm) {
                    return Err(LoginStatus::InitiatorError);
                }
                let chap =
                    TargetChap::start(kv.value).map_err(|_| LoginStatus::AuthenticationFailure)?;
                for (k, v) in chap.offer() {
                    text::push(out, k, &v);
                }
                self.auth = Auth::ChapResponse(chap);
                continue;
            }
            if (discovery && irrelevant_for_discovery(key)) || (!leading && leading_only(key)) {
                text::push(out, key, text::IRRELEVANT);
                continue;
            }
            let answer = self.operational(key, kv.value, offered_max_burst)?;
            if let Some(a) = answer {
                text::push(out, key, &a);
            }
        }
        if chap_keys {
            self.chap_response(pairs, out)?;
        }
        Ok(())
    }

    fn auth_method(&mut self, offer: &str) -> Step<&'static str> {
        if !matches!(self.auth, Auth::Pending) {
            return Err(LoginStatus::InitiatorError);
        }
        let mut offers = text::list(offer);
        if self.access.chap.is_some() {
            if offers.any(|m| m == "CHAP") {
                self.auth = Auth::ChapAlgorithm;
                Ok("CHAP")
            } else {
                Err(LoginStatus::AuthenticationFailure)
            }
        } else if offers.any(|m| m == "None") {
            self.auth = Auth::Done;
            Ok("None")
        } else {
            Err(LoginStatus::AuthenticationFailure)
        }
    }

    fn chap_response(&mut self, pairs: &[KeyValue<'_>], out: &mut Vec<u8>) -> Step<()> {
        let Auth::ChapResponse(chap) = &self.auth else {
            return Err(LoginStatus::InitiatorError);
        };
        let get = |k: &str| pairs.iter().find(|kv| kv.key == k).map(|kv| kv.value);
        let expected = self
            .access
            .chap
            .as_ref()
            .ok_or(LoginStatus::AuthenticationFailure)?;
        let answer = chap
            .verify(
                expected,
                self.access.mutual_chap.as_ref(),
                get("CHAP_N"),
                get("CHAP_R"),
                get("CHAP_I"),
                get("CHAP_C"),
            )
            .map_err(|e| {
                tracing::info!(error = %e, "CHAP authentication failed");
                LoginStatus::AuthenticationFailure
            })?;
        if let Some(m) = answer {
            text::push(out, "CHAP_N", &m.name);
            text::push(out, "CHAP_R", &m.response);
        }
        self.auth = Auth::Done;
        Ok(())
    }

    /// Answers one operational (or unknown) key; `None` for declarative keys.
    fn operational(
        &mut self,
        key: &str,
        value: &str,
        offered_max_burst: Option<u64>,
    ) -> Step<Option<String>> {
        let l = &self.limits;
        let reject = || Ok(Some(text::REJECT.to_string()));
        Ok(Some(match key {
            "HeaderDigest" | "DataDigest" => match pick_digest(value) {
                Some(on) => {
                    if key == "HeaderDigest" {
                        self.conn.header_digest = on;
                    } else {
                        self.conn.data_digest = on;
                    }
                    if on { "CRC32C" } else { "None" }.to_string()
                }
                None => return reject(),
            },
            "MaxRecvDataSegmentLength" => {
                let v = number_in(value, 512, MAX_LEN_VALUE).ok_or(LoginStatus::InitiatorError)?;
                self.conn.initiator_mrdsl = u32_of(v);
                return Ok(None);
            }
            "MaxConnections" => match number_in(value, 1, 65535) {
                Some(v) => {
                    let r = v.min(u64::from(l.max_connections.max(1)));
                    self.params.max_connections = u16_of(r);
                    r.to_string()
                }
                None => return reject(),
            },
            "InitialR2T" => match text::parse_bool(value) {
                Some(v) => {
                    self.params.initial_r2t = v;
                    text::bool_str(v).to_string()
                }
                None => return reject(),
            },
            "ImmediateData" => match text::parse_bool(value) {
                Some(v) => {
                    self.params.immediate_data = v;
                    text::bool_str(v).to_string()
                }
                None => return reject(),
            },
            "DataPDUInOrder" | "DataSequenceInOrder" => match text::parse_bool(value) {
                Some(_) => "Yes".to_string(),
                None => return reject(),
            },
            "MaxBurstLength" => match number_in(value, 512, MAX_LEN_VALUE) {
                Some(v) => {
                    let r = u32_of(v).min(l.max_burst_length.max(512));
                    self.params.max_burst_length = r;
                    self.params.first_burst_length = self.params.first_burst_length.min(r);
                    r.to_string()
                }
                None => return reject(),
            },
            "FirstBurstLength" => match number_in(value, 512, MAX_LEN_VALUE) {
                Some(v) => {
                    let max_burst = offered_max_burst
                        .map(|m| u32_of(m).min(l.max_burst_length.max(512)))
                        .unwrap_or(self.params.max_burst_length);
                    let r = u32_of(v).min(l.first_burst_length.max(512)).min(max_burst);
                    self.params.first_burst_length = r;
                    r.to_string()
                }
                None => return reject(),
            },
            "MaxOutstandingR2T" => match number_in(value, 1, 65535) {
                Some(v) => {
                    let r = u32_of(v).min(l.max_outstanding_r2t.max(1));
                    self.params.max_outstanding_r2t = r;
                    r.to_string()
                }
                None => return reject(),
            },
            "DefaultTime2Wait" => match number_in(value, 0, 3600) {
                Some(v) => {
                    self.params.default_time2wait = u16_of(v);
                    v.to_string()
                }
                None => return reject(),
            },
            "DefaultTime2Retain" => match number_in(value, 0, 3600) {
                Some(_) => {
                    self.params.default_time2retain = 0;
                    "0".to_string()
                }
                None => return reject(),
            },
            "ErrorRecoveryLevel" => match number_in(value, 0, 2) {
                Some(_) => {
                    self.params.error_recovery_level = 0;
                    "0".to_string()
                }
                None => return reject(),
            },
            "IFMarker" | "OFMarker" | "RDMAExtensions" => "No".to_string(),
            "IFMarkInt"
            | "OFMarkInt"
            | "SendTargets"
            | "TargetAlias"
            | "TargetAddress"
            | "TargetPortalGroupTag" => text::IRRELEVANT.to_string(),
            _ => text::NOT_UNDERSTOOD.to_string(),
        }))
    }

    /// The final step: create, reinstate or join the session.
    fn finish(&mut self) -> Step<Established> {
        let first = self.first.ok_or(LoginStatus::InitiatorError)?;
        let initiator_name = self
            .initiator_name
            .clone()
            .ok_or(LoginStatus::MissingParameter)?;
        let kind = match self.session_type {
            SessionType::Discovery => {
                let tsih = self
                    .sessions
                    .allocate_tsih()
                    .ok_or(LoginStatus::OutOfResources)?;
                EstablishedKind::Discovery {
                    tsih,
                    window: CmdWindow::new(first.cmd_sn, self.limits.queue_depth),
                }
            }
            SessionType::Normal => match &self.join {
                Some(session) => {
                    session
                        .add_connection(first.cid, Arc::clone(&self.close))
                        .map_err(|e| match e {
                            JoinError::TooManyConnections => LoginStatus::TooManyConnections,
                            JoinError::Closing => LoginStatus::SessionDoesNotExist,
                        })?;
                    EstablishedKind::Normal {
                        session: Arc::clone(session),
                        leading: false,
                    }
                }
                None => {
                    let target = self.target.clone().ok_or(LoginStatus::TargetNotFound)?;
                    let (session, old) = self
                        .sessions
                        .create(NewSession {
                            isid: first.isid,
                            initiator_name: initiator_name.clone(),
                            initiator_alias: self.initiator_alias.clone(),
                            target,
                            tpgt: self.portal.tpgt,
                            params: self.params,
                            first_cmd_sn: first.cmd_sn,
                            queue_depth: self.limits.queue_depth,
                            cid: first.cid,
                            close: Arc::clone(&self.close),
                        })
                        .map_err(|_| LoginStatus::OutOfResources)?;
                    if let Some(old) = old {
                        tracing::info!(
                            tsih = old.tsih().0,
                            initiator = %initiator_name,
                            "session reinstated"
                        );
                    }
                    EstablishedKind::Normal {
                        session,
                        leading: true,
                    }
                }
            },
        };
        Ok(Established {
            conn: self.conn,
            cid: first.cid,
            close: Arc::clone(&self.close),
            next_stat_sn: self.stat_sn,
            initiator_name,
            kind,
        })
    }
}

#[cfg(test)]
mod tests;
