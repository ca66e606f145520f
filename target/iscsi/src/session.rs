//! Sessions: the state every connection of one iSCSI session shares, and the table of live
//! sessions every connection of every reactor shares.
//!
//! # State
//!
//! A [`Session`] (`Send + Sync`, always behind an `Arc`) holds what does not change after login
//! (TSIH, ISID, initiator name, target, [`Nexus`], negotiated [`SessionParams`]) and, behind one
//! `std::sync::Mutex` held only for a few field updates, the command window and the list of its
//! connections. A [`SessionTable`] maps TSIHs to sessions; it is consulted at login only.
//!
//! # The command window
//!
//! [`CmdWindow`] numbers non-immediate commands session-wide (RFC 7143 §4.2.2.1). A command
//! whose CmdSN equals ExpCmdSN is *accepted* (ExpCmdSN advances); one inside
//! `(ExpCmdSN, MaxCmdSN]` is *held* by the connection that received it until the commands before
//! it arrive (possibly on other connections of the session); one outside the window is ignored
//! silently. Policy that bounds memory: MaxCmdSN = ExpCmdSN - 1 + (queue_depth - accepted), where
//! `accepted` counts commands accepted and not yet answered, so accepted plus held commands never
//! exceed `queue_depth` per session. MaxCmdSN never moves backwards: accepting a command moves
//! ExpCmdSN and `accepted` up together, and answering one moves MaxCmdSN up.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use basalt_scsi::Nexus;

use crate::TargetNode;
use crate::pdu::{Cid, CmdSn, Isid, Tsih};

/// Session-wide parameters negotiated at login (RFC 7143 §13); [`Default`] gives the RFC
/// defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionParams {
    /// InitialR2T.
    pub initial_r2t: bool,
    /// ImmediateData.
    pub immediate_data: bool,
    /// MaxBurstLength.
    pub max_burst_length: u32,
    /// FirstBurstLength (never above MaxBurstLength).
    pub first_burst_length: u32,
    /// MaxOutstandingR2T.
    pub max_outstanding_r2t: u32,
    /// MaxConnections.
    pub max_connections: u16,
    /// DefaultTime2Wait.
    pub default_time2wait: u16,
    /// DefaultTime2Retain.
    pub default_time2retain: u16,
    /// DataPDUInOrder.
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder.
    pub data_sequence_in_order: bool,
    /// ErrorRecoveryLevel (always 0 here).
    pub error_recovery_level: u8,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            initial_r2t: true,
            immediate_data: true,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            max_outstanding_r2t: 1,
            max_connections: 1,
            default_time2wait: 2,
            default_time2retain: 20,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }
}

/// Connection-scoped parameters negotiated at login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnParams {
    /// HeaderDigest=CRC32C.
    pub header_digest: bool,
    /// DataDigest=CRC32C.
    pub data_digest: bool,
    /// The initiator's MaxRecvDataSegmentLength: the largest data segment we may send.
    pub initiator_mrdsl: u32,
    /// Ours: the largest data segment we accept.
    pub target_mrdsl: u32,
}

impl Default for ConnParams {
    fn default() -> Self {
        ConnParams {
            header_digest: false,
            data_digest: false,
            initiator_mrdsl: 8192,
            target_mrdsl: 8192,
        }
    }
}

/// What became of a command's CmdSN on arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// CmdSN == ExpCmdSN: run it now (it counts as outstanding until answered).
    Accept,
    /// In the window but ahead of ExpCmdSN: keep it until [`CmdWindow::released`] says so.
    Hold,
    /// Outside the window, or a duplicate: drop it silently.
    Ignore,
}

/// The CmdSN window (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdWindow {
    exp: CmdSn,
    queue_depth: u32,
    accepted: u32,
    /// Held CmdSNs; `true` marks a placeholder (a RefCmdSN a TMF declared received) that
    /// counts for nothing once released.
    held: BTreeMap<u32, bool>,
}

impl CmdWindow {
    /// A window whose first expected CmdSN is `first` (the CmdSN of the leading Login Request).
    pub fn new(first: CmdSn, queue_depth: u32) -> CmdWindow {
        CmdWindow {
            exp: first,
            queue_depth: queue_depth.max(1),
            accepted: 0,
            held: BTreeMap::new(),
        }
    }

    /// ExpCmdSN.
    pub fn exp_cmd_sn(&self) -> CmdSn {
        self.exp
    }

    /// MaxCmdSN.
    pub fn max_cmd_sn(&self) -> CmdSn {
        let room = self.queue_depth.saturating_sub(self.accepted);
        self.exp.wrapping_add(room).wrapping_sub(1)
    }

    /// Commands accepted and not yet answered.
    pub fn outstanding(&self) -> u32 {
        self.accepted
    }

    /// True when `sn` lies in `[ExpCmdSN, MaxCmdSN]`.
    pub fn in_window(&self, sn: CmdSn) -> bool {
        sn.ge(self.exp) && sn.le(self.max_cmd_sn())
    }

    fn advance(&mut self) {
        self.exp = self.exp.next();
        while let Some(placeholder) = self.held.remove(&self.exp.0) {
            if !placeholder {
                self.accepted = self.accepted.saturating_add(1);
            }
            self.exp = self.exp.next();
        }
    }

    /// A non-immediate command numbered `sn` arrived.
    pub fn arrive(&mut self, sn: CmdSn) -> Arrival {
        if !self.in_window(sn) {
            Arrival::Ignore
        } else if sn == self.exp {
            self.accepted = self.accepted.saturating_add(1);
            self.advance();
            Arrival::Accept
        } else if let Entry::Vacant(e) = self.held.entry(sn.0) {
            e.insert(false);
            Arrival::Hold
        } else {
            Arrival::Ignore
        }
    }

    /// True when a held `sn` has since been accepted (the gap before it filled).
    pub fn released(&self, sn: CmdSn) -> bool {
        !self.held.contains_key(&sn.0) && sn.lt(self.exp)
    }

    /// A command accepted earlier has been answered (or dropped): MaxCmdSN moves up.
    pub fn complete(&mut self) {
        self.accepted = self.accepted.saturating_sub(1);
    }

    /// A command numbered `sn` ends without running (its connection went away, it was
    /// rejected or aborted). Still held: it keeps its place, so the gap before later commands
    /// can fill, but counts for nothing once released. Already released: it counts as answered.
    pub fn withdraw(&mut self, sn: CmdSn) {
        match self.held.get_mut(&sn.0) {
            Some(placeholder) => *placeholder = true,
            None if sn.lt(self.exp) => self.complete(),
            None => {}
        }
    }

    /// RFC 7143 §11.5.1 (ABORT TASK, case b): a referenced CmdSN in the window that never
    /// arrived is considered received; a later command with it is ignored.
    pub fn consume(&mut self, sn: CmdSn) {
        if !self.in_window(sn) {
            return;
        }
        if sn == self.exp {
            self.advance();
        } else {
            self.held.entry(sn.0).or_insert(true);
        }
    }
}

static NEXT_NEXUS_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique nexus id (never reused).
pub fn next_nexus_id() -> u64 {
    NEXT_NEXUS_ID.fetch_add(1, Ordering::Relaxed)
}

/// Builds the I_T nexus of a session.
pub fn make_nexus(initiator_name: &str, isid: Isid, target_name: &str, tpgt: u16) -> Nexus {
    Nexus {
        id: next_nexus_id(),
        initiator_name: initiator_name.to_string(),
        initiator_port: format!("{initiator_name},i,0x{isid}"),
        target_port: format!("{target_name},t,0x{tpgt:04x}"),
        relative_port: tpgt,
    }
}

/// Why a connection cannot join a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum JoinError {
    /// the session already has its MaxConnections connections
    TooManyConnections,
    /// the session is closing
    Closing,
}

/// Why the table cannot create a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum TableError {
    /// no TSIH is free (or the session limit is reached)
    OutOfResources,
}

#[derive(Debug)]
struct ConnEntry {
    cid: Cid,
    close: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Shared {
    window: CmdWindow,
    connections: Vec<ConnEntry>,
    ended: bool,
}

/// One iSCSI session (normal sessions only; discovery sessions live in their connection).
#[derive(Debug)]
pub struct Session {
    tsih: Tsih,
    isid: Isid,
    initiator_name: String,
    initiator_alias: Option<String>,
    target: Arc<TargetNode>,
    nexus: Nexus,
    params: SessionParams,
    close_requested: AtomicBool,
    shared: Mutex<Shared>,
}

/// What the table needs to create a session.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// ISID.
    pub isid: Isid,
    /// InitiatorName.
    pub initiator_name: String,
    /// InitiatorAlias, if declared.
    pub initiator_alias: Option<String>,
    /// The target logged in to.
    pub target: Arc<TargetNode>,
    /// The portal group's tag.
    pub tpgt: u16,
    /// Negotiated parameters.
    pub params: SessionParams,
    /// CmdSN of the leading Login Request (the first ExpCmdSN).
    pub first_cmd_sn: CmdSn,
    /// Command window size.
    pub queue_depth: u32,
    /// The leading connection's CID.
    pub cid: Cid,
    /// The leading connection's close flag.
    pub close: Arc<AtomicBool>,
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding this lock cannot leave the plain counters inconsistent in a
        // way worse than a lost command, so a poisoned lock is used as is.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// TSIH.
    pub fn tsih(&self) -> Tsih {
        self.tsih
    }

    /// ISID.
    pub fn isid(&self) -> Isid {
        self.isid
    }

    /// InitiatorName.
    pub fn initiator_name(&self) -> &str {
        &self.initiator_name
    }

    /// InitiatorAlias, if the initiator declared one.
    pub fn initiator_alias(&self) -> Option<&str> {
        self.initiator_alias.as_deref()
    }

    /// The target node.
    pub fn target(&self) -> &Arc<TargetNode> {
        &self.target
    }

    /// The I_T nexus the SCSI layer knows this session by.
    pub fn nexus(&self) -> &Nexus {
        &self.nexus
    }

    /// Negotiated session-wide parameters.
    pub fn params(&self) -> &SessionParams {
        &self.params
    }

    /// (ExpCmdSN, MaxCmdSN) now.
    pub fn window(&self) -> (CmdSn, CmdSn) {
        let s = self.lock();
        (s.window.exp_cmd_sn(), s.window.max_cmd_sn())
    }

    /// Runs `f` on the command window under the session lock.
    pub fn with_window<R>(&self, f: impl FnOnce(&mut CmdWindow) -> R) -> R {
        f(&mut self.lock().window)
    }

    /// Asks every connection of the session to close (reinstatement, logout, shutdown).
    pub fn request_close(&self) {
        self.close_requested.store(true, Ordering::Release);
        for c in &self.lock().connections {
            c.close.store(true, Ordering::Release);
        }
    }

    /// True once [`Session::request_close`] was called.
    pub fn close_requested(&self) -> bool {
        self.close_requested.load(Ordering::Acquire)
    }

    /// Connections currently in the session.
    pub fn connection_count(&self) -> usize {
        self.lock().connections.len()
    }

    /// CIDs of the connections currently in the session.
    pub fn cids(&self) -> Vec<Cid> {
        self.lock().connections.iter().map(|c| c.cid).collect()
    }

    /// Adds a connection. A connection with the same CID is reinstated: it is told to close
    /// and replaced (RFC 7143 §6.3.4).
    ///
    /// # Errors
    ///
    /// [`JoinError::TooManyConnections`] beyond MaxConnections, [`JoinError::Closing`] for a
    /// closing session.
    pub fn add_connection(&self, cid: Cid, close: Arc<AtomicBool>) -> Result<(), JoinError> {
        if self.close_requested() {
            return Err(JoinError::Closing);
        }
        let mut s = self.lock();
        if s.ended {
            return Err(JoinError::Closing);
        }
        if let Some(pos) = s.connections.iter().position(|c| c.cid == cid) {
            let old = s.connections.remove(pos);
            old.close.store(true, Ordering::Release);
        } else if s.connections.len() >= usize::from(self.params.max_connections) {
            return Err(JoinError::TooManyConnections);
        }
        s.connections.push(ConnEntry { cid, close });
        Ok(())
    }

    /// Asks the connection `cid` to close (Logout with reason "close the connection" received on
    /// another connection). False when no such connection is in the session.
    pub fn close_connection(&self, cid: Cid) -> bool {
        let s = self.lock();
        match s.connections.iter().find(|c| c.cid == cid) {
            Some(c) => {
                c.close.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Removes the connection owning `close`. True exactly once per session: when this leaves
    /// the session without connections (the caller then reports the session ended).
    pub fn remove_connection(&self, close: &Arc<AtomicBool>) -> bool {
        let mut s = self.lock();
        s.connections.retain(|c| !Arc::ptr_eq(&c.close, close));
        if s.connections.is_empty() && !s.ended {
            s.ended = true;
            true
        } else {
            false
        }
    }

    /// True once the last connection left.
    pub fn ended(&self) -> bool {
        self.lock().ended
    }
}

#[derive(Debug, Default)]
struct Table {
    by_tsih: HashMap<u16, Arc<Session>>,
    next_tsih: u16,
}

/// Every live normal session of the process (`Send + Sync`; share it as `Arc<SessionTable>`).
#[derive(Debug)]
pub struct SessionTable {
    inner: Mutex<Table>,
    max_sessions: usize,
}

impl Default for SessionTable {
    fn default() -> Self {
        SessionTable::new()
    }
}

impl SessionTable {
    /// An empty table (up to 65535 sessions).
    pub fn new() -> SessionTable {
        SessionTable::with_limit(usize::from(u16::MAX))
    }

    /// An empty table that refuses sessions beyond `max_sessions` (login status 0x0302).
    pub fn with_limit(max_sessions: usize) -> SessionTable {
        SessionTable {
            inner: Mutex::new(Table {
                by_tsih: HashMap::new(),
                next_tsih: 1,
            }),
            max_sessions,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_free(t: &mut Table) -> Option<Tsih> {
        for _ in 0..=u16::MAX {
            let candidate = t.next_tsih;
            t.next_tsih = t.next_tsih.wrapping_add(1);
            if t.next_tsih == 0 {
                t.next_tsih = 1;
            }
            if candidate != 0 && !t.by_tsih.contains_key(&candidate) {
                return Some(Tsih(candidate));
            }
        }
        None
    }

    /// A TSIH for a discovery session (not registered: discovery sessions cannot be joined).
    pub fn allocate_tsih(&self) -> Option<Tsih> {
        Self::next_free(&mut self.lock())
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.lock().by_tsih.len()
    }

    /// True when no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session with this TSIH.
    pub fn lookup(&self, tsih: Tsih) -> Option<Arc<Session>> {
        self.lock().by_tsih.get(&tsih.0).cloned()
    }

    /// Every live session.
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.lock().by_tsih.values().cloned().collect()
    }

    /// The live session of this initiator port (InitiatorName + ISID) with this target.
    pub fn find(
        &self,
        initiator_name: &str,
        isid: Isid,
        target_name: &str,
    ) -> Option<Arc<Session>> {
        self.lock()
            .by_tsih
            .values()
            .find(|s| {
                s.isid == isid
                    && s.initiator_name.eq_ignore_ascii_case(initiator_name)
                    && s.target.name.eq_ignore_ascii_case(target_name)
            })
            .cloned()
    }

    /// Creates and registers a session. A live session of the same initiator port with the same
    /// target is reinstated (RFC 7143 §6.3.5): removed from the table and told to close; it is
    /// returned too so the caller can log it.
    ///
    /// # Errors
    ///
    /// [`TableError::OutOfResources`] when no TSIH is free or the session limit is reached.
    pub fn create(
        &self,
        spec: NewSession,
    ) -> Result<(Arc<Session>, Option<Arc<Session>>), TableError> {
        let mut t = self.lock();
        let old_tsih = t
            .by_tsih
            .iter()
            .find(|(_, s)| {
                s.isid == spec.isid
                    && s.initiator_name.eq_ignore_ascii_case(&spec.initiator_name)
                    && s.target.name.eq_ignore_ascii_case(&spec.target.name)
            })
            .map(|(k, _)| *k);
        let old = old_tsih.and_then(|k| t.by_tsih.remove(&k));
        if let Some(o) = &old {
            o.request_close();
        }
        if t.by_tsih.len() >= self.max_sessions {
            return Err(TableError::OutOfResources);
        }
        let tsih = Self::next_free(&mut t).ok_or(TableError::OutOfResources)?;
        let nexus = make_nexus(
            &spec.initiator_name,
            spec.isid,
            &spec.target.name,
            spec.tpgt,
        );
        let session = Arc::new(Session {
            tsih,
            isid: spec.isid,
            initiator_name: spec.initiator_name,
            initiator_alias: spec.initiator_alias,
            target: spec.target,
            nexus,
            params: spec.params,
            close_requested: AtomicBool::new(false),
            shared: Mutex::new(Shared {
                window: CmdWindow::new(spec.first_cmd_sn, spec.queue_depth),
                connections: vec![ConnEntry {
                    cid: spec.cid,
                    close: spec.close,
                }],
                ended: false,
            }),
        });
        t.by_tsih.insert(tsih.0, Arc::clone(&session));
        Ok((session, old))
    }

    /// Removes `session` if it is still the one registered under its TSIH.
    pub fn remove(&self, session: &Arc<Session>) {
        let mut t = self.lock();
        if t.by_tsih
            .get(&session.tsih.0)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            t.by_tsih.remove(&session.tsih.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Access;

    fn target(name: &str) -> Arc<TargetNode> {
        Arc::new(TargetNode {
            name: name.into(),
            alias: None,
            luns: vec![0],
            access: Access::default(),
        })
    }

    fn spec(name: &str, isid: u8, t: &Arc<TargetNode>) -> NewSession {
        NewSession {
            isid: Isid([0x80, 0, 0, 0, 0, isid]),
            initiator_name: name.into(),
            initiator_alias: None,
            target: Arc::clone(t),
            tpgt: 1,
            params: SessionParams {
                max_connections: 2,
                ..SessionParams::default()
            },
            first_cmd_sn: CmdSn(100),
            queue_depth: 4,
            cid: Cid(0),
            close: Arc::new(AtomicBool::new(false)),
        }
    }

    #[test]
    fn window_accepts_in_order_and_bounds_outstanding() {
        let mut w = CmdWindow::new(CmdSn(10), 4);
        assert_eq!((w.exp_cmd_sn(), w.max_cmd_sn()), (CmdSn(10), CmdSn(13)));
        assert_eq!(w.arrive(CmdSn(10)), Arrival::Accept);
        assert_eq!((w.exp_cmd_sn(), w.max_cmd_sn()), (CmdSn(11), CmdSn(13)));
        assert_eq!(w.arrive(CmdSn(11)), Arrival::Accept);
        assert_eq!(w.arrive(CmdSn(12)), Arrival::Accept);
        assert_eq!(w.arrive(CmdSn(13)), Arrival::Accept);
        // Four outstanding: the window is closed (MaxCmdSN = ExpCmdSN - 1).
        assert_eq!((w.exp_cmd_sn(), w.max_cmd_sn()), (CmdSn(14), CmdSn(13)));
        assert_eq!(w.arrive(CmdSn(14)), Arrival::Ignore);
        w.complete();
        assert_eq!(w.max_cmd_sn(), CmdSn(14));
        assert_eq!(w.arrive(CmdSn(14)), Arrival::Accept);
        assert_eq!(w.outstanding(), 4);
    }

    #[test]
    fn window_ignores_too_low_and_too_high() {
        let mut w = CmdWindow::new(CmdSn(10), 4);
        assert_eq!(w.arrive(CmdSn(9)), Arrival::Ignore);
        assert_eq!(w.arrive(CmdSn(14)), Arrival::Ignore);
        assert_eq!(w.arrive(CmdSn(10 + 0x8000_0000)), Arrival::Ignore);
        assert_eq!((w.exp_cmd_sn(), w.outstanding()), (CmdSn(10), 0));
    }

    #[test]
    fn window_holds_until_gap_fills() {
        let mut w = CmdWindow::new(CmdSn(10), 8);
        assert_eq!(w.arrive(CmdSn(12)), Arrival::Hold);
        assert_eq!(w.arrive(CmdSn(12)), Arrival::Ignore, "duplicate");
        assert_eq!(w.arrive(CmdSn(11)), Arrival::Hold);
        assert!(!w.released(CmdSn(11)));
        assert_eq!(w.max_cmd_sn(), CmdSn(17));
        assert_eq!(w.arrive(CmdSn(10)), Arrival::Accept);
        assert!(w.released(CmdSn(11)) && w.released(CmdSn(12)));
        assert_eq!((w.exp_cmd_sn(), w.outstanding()), (CmdSn(13), 3));
        assert_eq!(w.max_cmd_sn(), CmdSn(17), "MaxCmdSN never moves back");
    }

    #[test]
    fn window_wraps() {
        let mut w = CmdWindow::new(CmdSn(u32::MAX), 4);
        assert_eq!(w.max_cmd_sn(), CmdSn(2));
        assert_eq!(w.arrive(CmdSn(1)), Arrival::Hold);
        assert_eq!(w.arrive(CmdSn(u32::MAX)), Arrival::Accept);
        assert_eq!(w.arrive(CmdSn(0)), Arrival::Accept);
        assert!(w.released(CmdSn(1)));
        assert_eq!(w.exp_cmd_sn(), CmdSn(2));
    }

    #[test]
    fn withdraw_and_consume() {
        let mut w = CmdWindow::new(CmdSn(10), 8);
        assert_eq!(w.arrive(CmdSn(11)), Arrival::Hold);
        w.withdraw(CmdSn(11));
        assert_eq!(w.arrive(CmdSn(10)), Arrival::Accept);
        assert_eq!(
            (w.exp_cmd_sn(), w.outstanding()),
            (CmdSn(12), 1),
            "a withdrawn command still fills its gap but counts for nothing"
        );
        // A TMF declared 13 received: when 12 arrives, ExpCmdSN jumps past 13 and only 12 counts.
        w.consume(CmdSn(13));
        assert_eq!(w.arrive(CmdSn(12)), Arrival::Accept);
        assert_eq!((w.exp_cmd_sn(), w.outstanding()), (CmdSn(14), 2));
        assert_eq!(w.arrive(CmdSn(13)), Arrival::Ignore);
        w.consume(CmdSn(14));
        assert_eq!(w.exp_cmd_sn(), CmdSn(15));
        // A released command that ends without an answer counts as answered.
        w.withdraw(CmdSn(12));
        assert_eq!(w.outstanding(), 1);
        // Outside the window: nothing.
        w.withdraw(CmdSn(1000));
        assert_eq!(w.outstanding(), 1);
    }

    #[test]
    fn nexus_names() {
        let n = make_nexus("iqn.i", Isid([0x80, 1, 2, 3, 0, 0xab]), "iqn.t", 0x12);
        assert_eq!(n.initiator_port, "iqn.i,i,0x8001020300ab");
        assert_eq!(n.target_port, "iqn.t,t,0x0012");
        assert_eq!(n.relative_port, 0x12);
        let m = make_nexus("iqn.i", Isid::default(), "iqn.t", 1);
        assert_ne!(n.id, m.id);
    }

    #[test]
    fn table_creates_reinstates_and_removes() {
        let table = SessionTable::new();
        let t = target("iqn.t");
        let (a, old) = table.create(spec("iqn.i", 1, &t)).expect("room");
        assert!(old.is_none());
        let (b, _) = table.create(spec("iqn.i", 2, &t)).expect("room");
        assert_ne!(a.tsih(), b.tsih());
        assert_eq!(table.len(), 2);
        assert!(Arc::ptr_eq(&table.lookup(a.tsih()).expect("a"), &a));
        assert!(Arc::ptr_eq(
            &table.find("IQN.I", a.isid(), "iqn.t").expect("found"),
            &a
        ));
        // Same initiator port and target: reinstatement closes `a`.
        let (c, old) = table.create(spec("iqn.i", 1, &t)).expect("room");
        assert!(Arc::ptr_eq(&old.expect("reinstated"), &a));
        assert!(a.close_requested());
        assert!(table.lookup(a.tsih()).is_none());
        assert_eq!(table.len(), 2);
        table.remove(&a); // no longer registered: no effect
        assert_eq!(table.len(), 2);
        table.remove(&c);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn table_limit() {
        let table = SessionTable::with_limit(1);
        let t = target("iqn.t");
        table.create(spec("iqn.i", 1, &t)).expect("room");
        assert_eq!(
            table.create(spec("iqn.i", 2, &t)).map(|_| ()),
            Err(TableError::OutOfResources)
        );
    }

    #[test]
    fn connections_join_reinstate_and_leave() {
        let table = SessionTable::new();
        let t = target("iqn.t");
        let s0 = spec("iqn.i", 1, &t);
        let first = Arc::clone(&s0.close);
        let (s, _) = table.create(s0).expect("room");
        let second = Arc::new(AtomicBool::new(false));
        s.add_connection(Cid(1), Arc::clone(&second)).expect("room");
        assert_eq!(
            s.add_connection(Cid(2), Arc::new(AtomicBool::new(false))),
            Err(JoinError::TooManyConnections)
        );
        // Same CID: the old connection is told to close and replaced.
        let third = Arc::new(AtomicBool::new(false));
        s.add_connection(Cid(1), Arc::clone(&third))
            .expect("reinstate");
        assert!(second.load(Ordering::Acquire));
        assert_eq!(s.connection_count(), 2);
        assert!(s.close_connection(Cid(1)));
        assert!(third.load(Ordering::Acquire));
        assert!(!s.close_connection(Cid(7)));
        assert!(!s.remove_connection(&second), "already replaced");
        assert!(!s.remove_connection(&third));
        assert!(s.remove_connection(&first), "last one out");
        assert!(!s.remove_connection(&first), "reported once");
        assert!(s.ended());
        assert_eq!(
            s.add_connection(Cid(3), Arc::new(AtomicBool::new(false))),
            Err(JoinError::Closing)
        );
    }
}
