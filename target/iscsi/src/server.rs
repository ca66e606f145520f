//! The iSCSI portal on the engine's reactors.
//!
//! One reactor accepts; each accepted connection is handed, round robin, to a reactor where it
//! lives until it closes (a session's connections, and the sessions of one target, spread over
//! every core). On its reactor a connection is three small tasks around one
//! [`Connection`] state machine: a reader (bytes from the socket into
//! [`Connection::receive`]), a writer (bytes from [`Connection::transmit`] to the socket) and a
//! ticker (timers). Every SCSI command runs in a task of its own against the core's
//! [`LuChannel`], so a slow command never holds up the connection.
//!
//! [`IscsiTarget`] is the registry of target nodes and their LUNs, shared by every reactor. It is
//! the state machines' [`Directory`]; exports are added and removed while connections run.
//! Task management that reaches beyond one connection (CLEAR TASK SET, LU and target resets) is
//! carried to the other connections on their own reactors.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use basalt_engine::{ReactorHandle, Signal, TcpStream};
use basalt_scsi::{Command, LogicalUnit, LuChannel, Nexus, ResetKind};

use crate::conn::{ConnConfig, Connection, Event, Limits, Task, TmfFunction, TmfResponse};
use crate::session::{Session, SessionTable};
use crate::{Access, Directory, Portal, TargetNode};

/// Why an export change was refused.
#[derive(Debug, displaydoc::Display, thiserror::Error, PartialEq, Eq)]
pub enum ExportError {
    /// target {0} already exists
    TargetExists(String),
    /// no target {0}
    NoTarget(String),
    /// target {target} already has LUN {lun}
    LunExists {
        /// The target.
        target: String,
        /// The LUN.
        lun: u64,
    },
    /// target {target} has no LUN {lun}
    NoLun {
        /// The target.
        target: String,
        /// The LUN.
        lun: u64,
    },
    /// invalid iSCSI name {0:?}: expected iqn.YYYY-MM.reverse.domain[:anything] or eui.<16 hex digits>
    BadName(String),
    /// LUN {0} is out of range (0 to 16383)
    BadLun(u64),
}

/// Checks an iSCSI name (RFC 3720 §3.2.6 / RFC 3722): `iqn.` with a date and a reversed domain,
/// `eui.` with 16 hex digits, or `naa.` with 16 or 32 hex digits; at most 223 bytes; lower case
/// after normalisation, no spaces or control characters.
pub fn valid_iscsi_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 223 {
        return false;
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    if !ok_chars {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("iqn.") {
        // yyyy-mm.<reversed domain>[:...]
        let b = rest.as_bytes();
        b.len() > 8
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && b[5..7].iter().all(u8::is_ascii_digit)
            && b[7] == b'.'
            && b[8].is_ascii_alphanumeric()
    } else if let Some(hex) = lower.strip_prefix("eui.") {
        hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    } else if let Some(hex) = lower.strip_prefix("naa.") {
        (hex.len() == 16 || hex.len() == 32) && hex.bytes().all(|b| b.is_ascii_hexdigit())
    } else {
        false
    }
}

/// One exported target node and its LUs.
#[derive(Debug, Clone)]
struct Export {
    node: Arc<TargetNode>,
    luns: BTreeMap<u64, Arc<LogicalUnit>>,
}

/// A live session of some target, for unit attentions when LUNs come and go.
#[derive(Debug, Clone)]
struct LiveSession {
    target: String,
    nexus: Nexus,
}

/// Where a connection runs, for task management and logout requests from elsewhere.
#[derive(Debug, Clone)]
struct LiveConn {
    reactor: usize,
    target: Option<String>,
    /// The id of its session's nexus, once logged in.
    nexus: Option<u64>,
}

/// What a target node looks like to an admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSummary {
    /// The node.
    pub node: TargetNode,
    /// LUN → backing block device name.
    pub luns: Vec<(u64, String)>,
    /// Sessions logged in now.
    pub sessions: usize,
}

/// The iSCSI target: every node, LUN and live connection of this daemon.
#[derive(Debug)]
pub struct IscsiTarget {
    portal: Portal,
    limits: Limits,
    sessions: Arc<SessionTable>,
    exports: RwLock<BTreeMap<String, Export>>,
    /// Bumped on every export change; connections refresh their LUN view when it moves.
    generation: AtomicU64,
    discovery: RwLock<Access>,
    live_sessions: Mutex<HashMap<u64, LiveSession>>,
    live_conns: Mutex<HashMap<u64, LiveConn>>,
    next_conn: AtomicU64,
    reactors: Vec<ReactorHandle>,
    counters: PortalCounters,
}

/// Operator counters of the portal.
#[derive(Debug, Default)]
pub struct PortalCounters {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections closed.
    pub closed: AtomicU64,
    /// SCSI commands completed.
    pub commands: AtomicU64,
    /// Task management requests handled.
    pub task_management: AtomicU64,
}

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

impl IscsiTarget {
    /// A target with no nodes yet, serving `portal` from `reactors`.
    pub fn new(portal: Portal, limits: Limits, reactors: Vec<ReactorHandle>) -> Arc<IscsiTarget> {
        Arc::new(IscsiTarget {
            portal,
            limits,
            sessions: Arc::new(SessionTable::new()),
            exports: RwLock::new(BTreeMap::new()),
            generation: AtomicU64::new(1),
            discovery: RwLock::new(Access::default()),
            live_sessions: Mutex::new(HashMap::new()),
            live_conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            reactors,
            counters: PortalCounters::default(),
        })
    }

    /// The portal group this target serves.
    pub fn portal(&self) -> &Portal {
        &self.portal
    }

    /// Operator counters.
    pub fn counters(&self) -> &PortalCounters {
        &self.counters
    }

    /// Sets who may open discovery sessions.
    pub fn set_discovery_access(&self, access: Access) {
        *self.discovery.write().expect("discovery lock") = access;
    }

    /// Adds a target node with its LUs (`node.luns` is filled in from `luns`).
    ///
    /// # Errors
    /// A bad name, a taken name, or a LUN out of range.
    pub fn add_target(
        self: &Arc<Self>,
        mut node: TargetNode,
        luns: Vec<(u64, Arc<LogicalUnit>)>,
    ) -> Result<(), ExportError> {
        if !valid_iscsi_name(&node.name) {
            return Err(ExportError::BadName(node.name));
        }
        let mut map = BTreeMap::new();
        for (lun, lu) in luns {
            if lun > 16383 {
                return Err(ExportError::BadLun(lun));
            }
            if map.insert(lun, lu).is_some() {
                return Err(ExportError::LunExists {
                    target: node.name,
                    lun,
                });
            }
        }
        node.luns = map.keys().copied().collect();
        let mut ex = self.exports.write().expect("exports lock");
        let k = key(&node.name);
        if ex.contains_key(&k) {
            return Err(ExportError::TargetExists(node.name));
        }
        for lu in map.values() {
            self.hook(lu);
        }
        tracing::info!(target_name = %node.name, luns = node.luns.len(), "iSCSI target added");
        ex.insert(
            k,
            Export {
                node: Arc::new(node),
                luns: map,
            },
        );
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Removes a target node: its sessions are asked to log out and closed.
    ///
    /// # Errors
    /// No such target.
    pub fn remove_target(self: &Arc<Self>, name: &str) -> Result<(), ExportError> {
        let removed = self
            .exports
            .write()
            .expect("exports lock")
            .remove(&key(name))
            .ok_or_else(|| ExportError::NoTarget(name.to_owned()))?;
        self.generation.fetch_add(1, Ordering::Release);
        tracing::info!(target_name = %removed.node.name, "iSCSI target removed");
        let k = key(name);
        let conns: Vec<(u64, usize)> = self
            .live_conns
            .lock()
            .expect("conns lock")
            .iter()
            .filter(|(_, c)| c.target.as_deref() == Some(k.as_str()))
            .map(|(id, c)| (*id, c.reactor))
            .collect();
        for (id, reactor) in conns {
            self.on_conn(id, reactor, |st| {
                st.conn.borrow_mut().request_logout(Instant::now());
                st.kick();
            });
        }
        self.sweep();
        Ok(())
    }

    /// Adds LUN `lun` to target `name`; live sessions see it (with a unit attention on it).
    ///
    /// # Errors
    /// No such target, a taken or out-of-range LUN.
    pub fn add_lun(
        self: &Arc<Self>,
        name: &str,
        lun: u64,
        lu: Arc<LogicalUnit>,
    ) -> Result<(), ExportError> {
        if lun > 16383 {
            return Err(ExportError::BadLun(lun));
        }
        {
            let mut ex = self.exports.write().expect("exports lock");
            let e = ex
                .get_mut(&key(name))
                .ok_or_else(|| ExportError::NoTarget(name.to_owned()))?;
            if e.luns.contains_key(&lun) {
                return Err(ExportError::LunExists {
                    target: name.to_owned(),
                    lun,
                });
            }
            e.luns.insert(lun, lu.clone());
            self.hook(&lu);
            let mut node = (*e.node).clone();
            node.luns = e.luns.keys().copied().collect();
            e.node = Arc::new(node);
        }
        for s in self.sessions_of(name) {
            lu.nexus_added(&s.nexus);
        }
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Removes LUN `lun` from target `name`. Commands in flight on it finish; new ones get
    /// LOGICAL UNIT NOT SUPPORTED.
    ///
    /// # Errors
    /// No such target or LUN.
    pub fn remove_lun(
        self: &Arc<Self>,
        name: &str,
        lun: u64,
    ) -> Result<Arc<LogicalUnit>, ExportError> {
        let lu = {
            let mut ex = self.exports.write().expect("exports lock");
            let e = ex
                .get_mut(&key(name))
                .ok_or_else(|| ExportError::NoTarget(name.to_owned()))?;
            let lu = e.luns.remove(&lun).ok_or_else(|| ExportError::NoLun {
                target: name.to_owned(),
                lun,
            })?;
            let mut node = (*e.node).clone();
            node.luns = e.luns.keys().copied().collect();
            e.node = Arc::new(node);
            lu
        };
        self.generation.fetch_add(1, Ordering::Release);
        for s in self.sessions_of(name) {
            lu.nexus_removed(&s.nexus);
        }
        self.sweep();
        Ok(lu)
    }

    /// Replaces the login policy of target `name` (sessions already logged in stay).
    ///
    /// # Errors
    /// No such target.
    pub fn set_access(&self, name: &str, access: Access) -> Result<(), ExportError> {
        let mut ex = self.exports.write().expect("exports lock");
        let e = ex
            .get_mut(&key(name))
            .ok_or_else(|| ExportError::NoTarget(name.to_owned()))?;
        let mut node = (*e.node).clone();
        node.access = access;
        e.node = Arc::new(node);
        drop(ex);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The LU behind `lun` of target `name`.
    pub fn lu(&self, name: &str, lun: u64) -> Option<Arc<LogicalUnit>> {
        self.exports
            .read()
            .expect("exports lock")
            .get(&key(name))
            .and_then(|e| e.luns.get(&lun).cloned())
    }

    /// Every target node, with its LUNs and session count.
    pub fn summary(&self) -> Vec<TargetSummary> {
        let sessions = self.live_sessions.lock().expect("sessions lock").clone();
        self.exports
            .read()
            .expect("exports lock")
            .iter()
            .map(|(k, e)| TargetSummary {
                node: (*e.node).clone(),
                luns: e
                    .luns
                    .iter()
                    .map(|(l, lu)| (*l, lu.config().bdev.name().to_owned()))
                    .collect(),
                sessions: sessions.values().filter(|s| &s.target == k).count(),
            })
            .collect()
    }

    fn sessions_of(&self, name: &str) -> Vec<LiveSession> {
        let k = key(name);
        self.live_sessions
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|s| s.target == k)
            .cloned()
            .collect()
    }

    fn export(&self, name: &str) -> Option<Export> {
        self.exports
            .read()
            .expect("exports lock")
            .get(&key(name))
            .cloned()
    }

    /// Runs `f` on the connection's reactor with its state, if it still lives.
    fn on_conn(&self, id: u64, reactor: usize, f: impl FnOnce(&Rc<ConnState>) + Send + 'static) {
        let Some(r) = self.reactors.get(reactor) else {
            return;
        };
        let _ = r.send(move || {
            let st = LOCAL_CONNS.with(|m| m.borrow().get(&id).and_then(Weak::upgrade));
            if let Some(st) = st {
                f(&st);
            }
        });
    }

    /// Other connections logged in to target `name`, except `except`.
    fn conns_of(&self, name: &str, except: u64) -> Vec<(u64, usize)> {
        let k = key(name);
        self.live_conns
            .lock()
            .expect("conns lock")
            .iter()
            .filter(|(id, c)| **id != except && c.target.as_deref() == Some(k.as_str()))
            .map(|(id, c)| (*id, c.reactor))
            .collect()
    }

    /// Lets `lu` reach the transport: PREEMPT AND ABORT aborts other sessions' tasks, EXTENDED
    /// COPY finds the other LUs of this daemon. The hooks hold the target weakly.
    fn hook(self: &Arc<Self>, lu: &Arc<LogicalUnit>) {
        let hooks = Arc::new(LuHooks(Arc::downgrade(self)));
        lu.set_task_aborter(hooks.clone());
        lu.set_copy_targets(hooks);
    }

    /// True when some target exports `lu`.
    fn exports_lu(&self, lu: &Arc<LogicalUnit>) -> bool {
        self.exports
            .read()
            .expect("exports lock")
            .values()
            .any(|e| e.luns.values().any(|l| Arc::ptr_eq(l, lu)))
    }

    /// After an export went away: every reactor drops its channels to LUs no longer exported
    /// and every connection rebuilds its LUN view, so the LU (and the device under it) is
    /// released.
    fn sweep(self: &Arc<Self>) {
        for r in &self.reactors {
            let me = self.clone();
            let _ = r.send(move || {
                let conns: Vec<Rc<ConnState>> =
                    LOCAL_CONNS.with(|m| m.borrow().values().filter_map(Weak::upgrade).collect());
                for c in conns {
                    c.refresh_view();
                }
                LOCAL_LUS.with(|m| m.borrow_mut().retain(|_, ch| me.exports_lu(ch.lu())));
            });
        }
    }

    /// Asks every connection to log out (the daemon is stopping).
    pub fn request_logout_all(&self) {
        let conns: Vec<(u64, usize)> = self
            .live_conns
            .lock()
            .expect("conns lock")
            .iter()
            .map(|(id, c)| (*id, c.reactor))
            .collect();
        for (id, reactor) in conns {
            self.on_conn(id, reactor, |st| {
                st.conn.borrow_mut().request_logout(Instant::now());
                st.kick();
            });
        }
    }

    /// Connections open now.
    pub fn connection_count(&self) -> usize {
        self.live_conns.lock().expect("conns lock").len()
    }
}

/// The transport services a logical unit asks for (see [`IscsiTarget::hook`]).
#[derive(Debug)]
struct LuHooks(std::sync::Weak<IscsiTarget>);

impl basalt_scsi::TaskAborter for LuHooks {
    fn abort_tasks(&self, lu: &LogicalUnit, nexus_ids: &[u64]) {
        let Some(t) = self.0.upgrade() else { return };
        // Where `lu` is exported: (target key, LUN).
        let places: Vec<(String, u64)> = t
            .exports
            .read()
            .expect("exports lock")
            .iter()
            .flat_map(|(k, e)| {
                e.luns
                    .iter()
                    .filter(|(_, l)| std::ptr::eq(Arc::as_ptr(l), lu))
                    .map(|(n, _)| (k.clone(), *n))
                    .collect::<Vec<_>>()
            })
            .collect();
        let conns: Vec<(u64, usize, u64)> = t
            .live_conns
            .lock()
            .expect("conns lock")
            .iter()
            .filter_map(|(id, c)| {
                let nexus = c.nexus?;
                if !nexus_ids.contains(&nexus) {
                    return None;
                }
                let target = c.target.as_deref()?;
                let lun = places.iter().find(|(k, _)| k == target)?.1;
                Some((*id, c.reactor, lun))
            })
            .collect();
        for (id, reactor, lun) in conns {
            t.on_conn(id, reactor, move |st| {
                st.conn.borrow_mut().abort_tasks(Some(lun));
                st.fire_aborts();
                st.kick();
            });
        }
    }
}

impl basalt_scsi::CopyTargets for LuHooks {
    fn find(&self, designator: &[u8]) -> Option<Arc<LogicalUnit>> {
        let t = self.0.upgrade()?;
        let ex = t.exports.read().expect("exports lock");
        ex.values()
            .flat_map(|e| e.luns.values())
            .find(|l| l.naa_designator()[..] == *designator)
            .cloned()
    }
}

impl Directory for IscsiTarget {
    fn target(&self, name: &str) -> Option<Arc<TargetNode>> {
        self.exports
            .read()
            .expect("exports lock")
            .get(&key(name))
            .map(|e| e.node.clone())
    }

    fn targets(&self) -> Vec<Arc<TargetNode>> {
        self.exports
            .read()
            .expect("exports lock")
            .values()
            .map(|e| e.node.clone())
            .collect()
    }

    fn discovery_access(&self) -> Access {
        self.discovery.read().expect("discovery lock").clone()
    }
}

thread_local! {
    /// The connections living on this reactor, by id.
    static LOCAL_CONNS: RefCell<HashMap<u64, Weak<ConnState>>> = RefCell::new(HashMap::new());
    /// LU channels opened on this reactor, by LU address (shared by its connections). They
    /// hold their LU: [`IscsiTarget::sweep`] drops those no longer exported.
    static LOCAL_LUS: RefCell<HashMap<usize, LuChannel>> = RefCell::new(HashMap::new());
}

/// The core's channel to `lu`, opened on first use.
fn lu_channel(lu: &Arc<LogicalUnit>) -> Option<LuChannel> {
    let k = Arc::as_ptr(lu) as usize;
    LOCAL_LUS.with(|m| {
        let mut m = m.borrow_mut();
        if let Some(ch) = m.get(&k)
            && Arc::ptr_eq(ch.lu(), lu)
        {
            return Some(ch.clone());
        }
        match lu.open() {
            Ok(ch) => {
                m.insert(k, ch.clone());
                Some(ch)
            }
            Err(e) => {
                tracing::warn!(bdev = lu.config().bdev.name(), error = %e, "cannot open an LU channel");
                None
            }
        }
    })
}

/// The LUs a connection's session can address, as of an export generation.
#[derive(Default)]
struct LunView {
    generation: u64,
    luns: Vec<u64>,
    channels: HashMap<u64, LuChannel>,
}

/// One connection on its reactor.
struct ConnState {
    id: u64,
    conn: RefCell<Connection>,
    target: Arc<IscsiTarget>,
    /// The writer has something to send (or the connection closes).
    out: Signal,
    session: RefCell<Option<Arc<Session>>>,
    nexus: RefCell<Option<Rc<Nexus>>>,
    view: RefCell<LunView>,
    closing: Cell<bool>,
    /// The connection's tasks are done: the ticker stops.
    stopped: Cell<bool>,
    /// Commands executing, with the signal that stops them when task management aborts them.
    inflight: RefCell<HashMap<u64, Rc<Signal>>>,
}

impl ConnState {
    /// Handles every pending event, then wakes the writer.
    fn kick(self: &Rc<Self>) {
        loop {
            let ev = self.conn.borrow_mut().poll_event();
            let Some(ev) = ev else { break };
            self.handle(ev);
        }
        if self.conn.borrow().is_closed() {
            self.closing.set(true);
        }
        self.out.notify();
    }

    fn handle(self: &Rc<Self>, ev: Event) {
        match ev {
            Event::SessionStarted { session } => {
                let nexus = session.nexus().clone();
                let target_name = session.target().name.clone();
                self.attach(&session);
                if let Some(e) = self.target.export(&target_name) {
                    for lu in e.luns.values() {
                        lu.nexus_added(&nexus);
                    }
                }
                self.target
                    .live_sessions
                    .lock()
                    .expect("sessions lock")
                    .insert(
                        nexus.id,
                        LiveSession {
                            target: key(&target_name),
                            nexus,
                        },
                    );
            }
            Event::ConnectionJoined { session } => self.attach(&session),
            Event::Execute(task) => self.execute(task),
            Event::TaskManagement { id, function, lun } => {
                self.fire_aborts();
                self.task_management(id, function, lun);
            }
            Event::SessionEnded { session } => {
                let nexus = session.nexus().clone();
                self.target
                    .live_sessions
                    .lock()
                    .expect("sessions lock")
                    .remove(&nexus.id);
                if let Some(e) = self.target.export(&session.target().name) {
                    for lu in e.luns.values() {
                        lu.nexus_removed(&nexus);
                    }
                }
            }
            Event::Close => self.closing.set(true),
        }
    }

    fn attach(&self, session: &Arc<Session>) {
        let target_key = key(&session.target().name);
        *self.nexus.borrow_mut() = Some(Rc::new(session.nexus().clone()));
        *self.session.borrow_mut() = Some(session.clone());
        if let Some(c) = self
            .target
            .live_conns
            .lock()
            .expect("conns lock")
            .get_mut(&self.id)
        {
            c.target = Some(target_key);
            c.nexus = Some(session.nexus().id);
        }
        self.view.borrow_mut().generation = 0;
    }

    /// Refreshes the LUN view if the exports changed since it was built.
    fn refresh_view(&self) {
        let generation = self.target.generation.load(Ordering::Acquire);
        let mut view = self.view.borrow_mut();
        if view.generation == generation {
            return;
        }
        view.generation = generation;
        view.channels.clear();
        view.luns.clear();
        let Some(session) = self.session.borrow().clone() else {
            return;
        };
        if let Some(e) = self.target.export(&session.target().name) {
            view.luns = e.luns.keys().copied().collect();
            for (lun, lu) in &e.luns {
                if let Some(ch) = lu_channel(lu) {
                    view.channels.insert(*lun, ch);
                }
            }
        }
    }

    fn execute(self: &Rc<Self>, task: Task) {
        self.refresh_view();
        let Some(nexus) = self.nexus.borrow().clone() else {
            // A command before a session: the state machine does not emit this.
            self.finish(task.id, basalt_scsi::Response::default());
            return;
        };
        let (channel, luns) = {
            let view = self.view.borrow();
            let luns = if task.cdb.first() == Some(&0xA0) {
                Some(view.luns.clone())
            } else {
                None
            };
            (view.channels.get(&task.lun).cloned(), luns)
        };
        let me = self.clone();
        let abort = Rc::new(Signal::default());
        self.inflight.borrow_mut().insert(task.id, abort.clone());
        basalt_engine::spawn(async move {
            let id = task.id;
            let cmd = Command {
                nexus: &nexus,
                cdb: &task.cdb,
                attr: task.attr,
                expected_len: task.expected_len,
                read: task.read,
                write: task.write,
                data_out: task.data_out,
            };
            let resp = match (luns, channel) {
                (Some(luns), _) => basalt_scsi::report_luns(&cmd, &luns),
                (None, Some(ch)) => {
                    // An aborted command stops here: dropping `execute` is safe (I/O already
                    // submitted completes into its orphaned slot), and the TMF response need
                    // not wait for a long command such as SANITIZE.
                    let run = std::pin::pin!(ch.execute(cmd));
                    let stop = std::pin::pin!(abort.wait());
                    match select(run, stop).await {
                        Some(resp) => resp,
                        None => basalt_scsi::Response {
                            status: basalt_scsi::Status::TaskAborted as u8,
                            ..Default::default()
                        },
                    }
                }
                (None, None) => basalt_scsi::no_such_lun(&cmd),
            };
            me.inflight.borrow_mut().remove(&id);
            me.finish(id, resp);
        });
    }

    /// Stops the executing commands task management aborted.
    fn fire_aborts(&self) {
        let ids = self.conn.borrow().aborted_executing();
        let inflight = self.inflight.borrow();
        for id in ids {
            if let Some(s) = inflight.get(&id) {
                s.notify();
            }
        }
    }

    fn finish(self: &Rc<Self>, id: u64, resp: basalt_scsi::Response) {
        self.target
            .counters
            .commands
            .fetch_add(1, Ordering::Relaxed);
        let slices = resp.data_in.slices();
        self.conn
            .borrow_mut()
            .complete(id, resp.status, &resp.sense, &slices, resp.residual);
        self.kick();
    }

    fn task_management(self: &Rc<Self>, id: u64, function: TmfFunction, lun: u64) {
        self.target
            .counters
            .task_management
            .fetch_add(1, Ordering::Relaxed);
        let Some(session) = self.session.borrow().clone() else {
            self.conn
                .borrow_mut()
                .tmf_complete(id, TmfResponse::Rejected);
            return;
        };
        let nexus = session.nexus().clone();
        let target_name = session.target().name.clone();
        let export = self.target.export(&target_name);
        let lu = export.as_ref().and_then(|e| e.luns.get(&lun).cloned());
        let others = || self.target.conns_of(&target_name, self.id);
        let response = match function {
            TmfFunction::AbortTask | TmfFunction::AbortTaskSet => TmfResponse::Complete,
            TmfFunction::ClearAca => TmfResponse::NotSupported,
            TmfFunction::TaskReassign => TmfResponse::ReassignNotSupported,
            TmfFunction::ClearTaskSet | TmfFunction::LogicalUnitReset => match lu {
                None => TmfResponse::LunDoesNotExist,
                Some(lu) => {
                    for (cid, reactor) in others() {
                        self.target.on_conn(cid, reactor, move |st| {
                            st.conn.borrow_mut().abort_tasks(Some(lun));
                            st.fire_aborts();
                            st.kick();
                        });
                    }
                    if function == TmfFunction::ClearTaskSet {
                        lu.task_set_cleared(&nexus);
                    } else {
                        lu.reset(&nexus, ResetKind::LogicalUnit);
                    }
                    TmfResponse::Complete
                }
            },
            TmfFunction::TargetWarmReset | TmfFunction::TargetColdReset => {
                let kind = if function == TmfFunction::TargetWarmReset {
                    ResetKind::TargetWarm
                } else {
                    ResetKind::TargetCold
                };
                for (cid, reactor) in others() {
                    self.target.on_conn(cid, reactor, move |st| {
                        st.conn.borrow_mut().abort_tasks(None);
                        st.fire_aborts();
                        st.kick();
                    });
                }
                if let Some(e) = &export {
                    for lu in e.luns.values() {
                        lu.reset(&nexus, kind);
                    }
                }
                TmfResponse::Complete
            }
        };
        tracing::info!(
            initiator = %nexus.initiator_port,
            target_name = %target_name,
            lun,
            ?function,
            ?response,
            "task management"
        );
        self.conn.borrow_mut().tmf_complete(id, response);
    }
}

/// Listens on `listener` (accepting on the first reactor) and serves `target` from every
/// reactor until the engine stops.
///
/// # Errors
/// The engine has stopped.
pub fn serve(
    target: Arc<IscsiTarget>,
    listener: std::net::TcpListener,
) -> Result<(), basalt_engine::EngineError> {
    let reactors = target.reactors.clone();
    basalt_engine::serve_spread(
        reactors,
        listener,
        "iSCSI portal",
        move |reactor, stream, peer| {
            let id = target.next_conn.fetch_add(1, Ordering::Relaxed);
            target.counters.accepted.fetch_add(1, Ordering::Relaxed);
            target.live_conns.lock().expect("conns lock").insert(
                id,
                LiveConn {
                    reactor,
                    target: None,
                    nexus: None,
                },
            );
            basalt_engine::spawn(run_connection(target.clone(), id, stream, peer));
        },
    )
}

/// Largest receive per call: a whole maximal data segment plus headers.
const RECV_CHUNK: usize = 256 * 1024 + 1024;

async fn run_connection(
    target: Arc<IscsiTarget>,
    id: u64,
    stream: std::net::TcpStream,
    peer: SocketAddr,
) {
    let stream = TcpStream::from_std(stream);
    let _ = stream.set_nodelay(true);
    let cfg = ConnConfig {
        portal: target.portal.clone(),
        directory: target.clone(),
        sessions: target.sessions.clone(),
        limits: target.limits.clone(),
    };
    let st = Rc::new(ConnState {
        id,
        conn: RefCell::new(Connection::new(cfg, peer, Instant::now())),
        target: target.clone(),
        out: Signal::default(),
        session: RefCell::new(None),
        nexus: RefCell::new(None),
        view: RefCell::new(LunView::default()),
        closing: Cell::new(false),
        stopped: Cell::new(false),
        inflight: RefCell::new(HashMap::new()),
    });
    LOCAL_CONNS.with(|m| m.borrow_mut().insert(id, Rc::downgrade(&st)));
    tracing::debug!(%peer, conn = id, "iSCSI connection");

    let writer = basalt_engine::spawn(write_loop(st.clone(), stream.clone()));
    let ticker = basalt_engine::spawn(tick_loop(st.clone()));
    let mut buf: Vec<u8> = Vec::with_capacity(RECV_CHUNK);
    loop {
        if st.closing.get() {
            break;
        }
        let (b, res) = stream.recv_into_vec(buf, RECV_CHUNK).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let used = st.conn.borrow_mut().receive(&buf, Instant::now());
        buf.drain(..used.min(buf.len()));
        st.kick();
    }
    // Reader done: let the writer flush what is queued (a final reject or logout response),
    // then stop everything. Tasks in flight finish on their own and find the connection closed.
    st.closing.set(true);
    st.out.notify();
    let _ = writer.await;
    st.stopped.set(true);
    let _ = ticker.await;
    // A connection lost without logout still ends its session (if it was the last one).
    st.conn.borrow_mut().connection_lost(Instant::now());
    st.kick();
    LOCAL_CONNS.with(|m| m.borrow_mut().remove(&id));
    target.live_conns.lock().expect("conns lock").remove(&id);
    target.counters.closed.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, conn = id, "iSCSI connection closed");
}

async fn write_loop(st: Rc<ConnState>, stream: TcpStream) {
    basalt_engine::write_loop(&stream, &st.out, &st.closing, |out| {
        st.conn.borrow_mut().transmit(out);
    })
    .await;
}

async fn tick_loop(st: Rc<ConnState>) {
    while !st.stopped.get() {
        let now = Instant::now();
        let next = st.conn.borrow_mut().tick(now);
        st.kick();
        // The state machine's deadlines are seconds apart (login, NOP-In, logout grace); waking
        // at least every 200 ms keeps them honest without a wake-up per command.
        let cap = now + Duration::from_millis(200);
        let until = next.map_or(cap, |t| t.min(cap));
        basalt_engine::sleep(until.saturating_duration_since(Instant::now())).await;
    }
}

/// Runs `a` unless `stop` completes first: `Some(a's output)` or `None`.
async fn select<A: std::future::Future>(
    mut a: std::pin::Pin<&mut A>,
    mut stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Option<A::Output> {
    poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}
