//! Controllers (dynamic model): properties, features, keep-alive, asynchronous events and the
//! admin command set.
//!
//! A [`Controller`] is created by an admin-queue Connect and shared (`Arc`) by the connections
//! of its queues, which may live on different reactors. Its slow admin state sits behind one
//! `Mutex`; the I/O path reads only the two atomics `ready` and `dead`. The admin queue's
//! connection polls [`Controller::poll`] on its ticker: that delivers asynchronous event
//! completions and enforces the keep-alive timeout, which kills the controller (every queue's
//! connection then closes).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::spec::cmd::{Cqe, Sqe, Status, StatusCode, admin, feature, log};
use crate::spec::command::{AdminCommand, decode_admin};
use crate::spec::fabrics::{ConnectData, PropertyCmd, prop};
use crate::spec::identify::{
    self, ADRFAM_IPV4, ADRFAM_IPV6, CNTRLTYPE_DISCOVERY, CNTRLTYPE_IO, DiscoveryEntry,
    IdentifyController, IdentifyNamespace, SUBTYPE_NVM, TRTYPE_TCP,
};
use crate::subsystem::{Namespace, NvmfTarget};

/// NVMe version reported in VS and Identify: 1.3.
pub const NVME_VERSION: u32 = 0x0001_0300;
/// Largest transfer: 2^MDTS pages of 4 KiB.
pub const MDTS: u8 = 5;
/// Asynchronous event requests outstanding at most (AERL + 1).
pub const AER_LIMIT: usize = 4;
/// Queue entries supported (CAP.MQES + 1).
pub const MAX_QUEUE_ENTRIES: u16 = 128;

/// AEN completion dword 0: notice (type 2), namespace attribute changed (info 0), log page 04h.
pub const AEN_NS_CHANGED: u32 = 0x02 | (0x04 << 16);
/// Async event configuration bit: namespace attribute notices.
const AEC_NS_ATTR: u32 = 1 << 8;

/// What an admin command produced.
#[derive(Debug)]
pub enum AdminOutcome {
    /// Complete now with this status, dwords and data (controller to host).
    Done {
        /// Status.
        status: Status,
        /// Completion dword 0.
        dw0: u32,
        /// Completion dword 1.
        dw1: u32,
        /// Data for the host (empty when none).
        data: Vec<u8>,
    },
    /// Held by the controller (an Asynchronous Event Request); completed later by
    /// [`Controller::poll`].
    Deferred,
}

impl AdminOutcome {
    fn ok(dw0: u32) -> AdminOutcome {
        AdminOutcome::Done {
            status: Status::SUCCESS,
            dw0,
            dw1: 0,
            data: Vec::new(),
        }
    }

    fn data(data: Vec<u8>) -> AdminOutcome {
        AdminOutcome::Done {
            status: Status::SUCCESS,
            dw0: 0,
            dw1: 0,
            data,
        }
    }

    fn err(code: StatusCode) -> AdminOutcome {
        AdminOutcome::Done {
            status: code.status(),
            dw0: 0,
            dw1: 0,
            data: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct Features {
    arbitration: u32,
    power_mgmt: u32,
    temp_threshold: u32,
    error_recovery: u32,
    volatile_wc: u32,
    num_queues: Option<u16>,
    int_coalescing: u32,
    write_atomicity: u32,
    async_event_config: u32,
}

#[derive(Debug)]
struct AdminState {
    cc: u32,
    csts: u32,
    features: Features,
    kato: u32,
    last_keep_alive: Instant,
    aers: Vec<u16>,
    events: VecDeque<u32>,
    ns_notice_outstanding: bool,
    changed_ns: BTreeSet<u32>,
    io_queues: BTreeMap<u16, Arc<QueueStats>>,
    /// Counters of I/O queues that have closed.
    retired: [u64; 4],
    ready_completions: Vec<Cqe>,
}

/// Per-I/O-queue counters for the SMART / health log. Each queue's reactor is the only writer,
/// so the atomics are never contended.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Read commands completed successfully.
    pub reads: AtomicU64,
    /// Write commands completed successfully.
    pub writes: AtomicU64,
    /// Bytes read.
    pub read_bytes: AtomicU64,
    /// Bytes written.
    pub write_bytes: AtomicU64,
}

impl QueueStats {
    fn snapshot(&self) -> [u64; 4] {
        [
            self.reads.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
            self.read_bytes.load(Ordering::Relaxed),
            self.write_bytes.load(Ordering::Relaxed),
        ]
    }
}

/// One controller: see the module documentation.
#[derive(Debug)]
pub struct Controller {
    /// Controller id.
    pub cntlid: u16,
    /// The subsystem's NQN.
    pub subnqn: String,
    /// The host's NQN.
    pub hostnqn: String,
    /// The host identifier from Connect.
    pub hostid: [u8; 16],
    /// A discovery controller.
    pub discovery: bool,
    /// Successful reads may end with C2HData SUCCESS on the admin queue.
    pub admin_sqflow_disabled: bool,
    max_io_queues: u16,
    ready: AtomicBool,
    dead: AtomicBool,
    /// Bumped by every controller reset (CC.EN 1 to 0); I/O queues of an older epoch close.
    epoch: AtomicU64,
    state: Mutex<AdminState>,
}

impl Controller {
    pub(crate) fn new(
        cntlid: u16,
        data: &ConnectData,
        discovery: bool,
        kato: u32,
        max_io_queues: u16,
        admin_sqflow_disabled: bool,
        now: Instant,
    ) -> Controller {
        Controller {
            cntlid,
            subnqn: data.subnqn.clone(),
            hostnqn: data.hostnqn.clone(),
            hostid: data.hostid,
            discovery,
            admin_sqflow_disabled,
            max_io_queues,
            ready: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            state: Mutex::new(AdminState {
                cc: 0,
                csts: 0,
                features: Features {
                    arbitration: 0,
                    power_mgmt: 0,
                    temp_threshold: 343,
                    error_recovery: 0,
                    volatile_wc: 0,
                    num_queues: None,
                    int_coalescing: 0,
                    write_atomicity: 0,
                    async_event_config: 0,
                },
                kato,
                last_keep_alive: now,
                aers: Vec::new(),
                events: VecDeque::new(),
                ns_notice_outstanding: false,
                changed_ns: BTreeSet::new(),
                io_queues: BTreeMap::new(),
                retired: [0; 4],
                ready_completions: Vec::new(),
            }),
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, AdminState> {
        self.state.lock().expect("controller lock")
    }

    /// CSTS.RDY: the controller accepts I/O.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The controller has been torn down (keep-alive expiry, admin queue gone, subsystem
    /// removed); its queues must close.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// The reset epoch: an I/O queue connected in an earlier epoch must close.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        self.ready.store(false, Ordering::Release);
    }

    pub(crate) fn attach_io_queue(&self, qid: u16) -> Result<Arc<QueueStats>, ()> {
        let mut st = self.st();
        let allowed = st.features.num_queues.map_or(self.max_io_queues, |n| n + 1);
        if self.is_dead() || !self.is_ready() || qid > allowed || st.io_queues.contains_key(&qid) {
            return Err(());
        }
        let stats = Arc::new(QueueStats::default());
        st.io_queues.insert(qid, stats.clone());
        Ok(stats)
    }

    /// The counters of I/O queue `qid`, while it is connected.
    pub fn queue_stats(&self, qid: u16) -> Option<Arc<QueueStats>> {
        self.st().io_queues.get(&qid).cloned()
    }

    pub(crate) fn detach_io_queue(&self, qid: u16) {
        let mut st = self.st();
        if let Some(q) = st.io_queues.remove(&qid) {
            let snap = q.snapshot();
            for (r, v) in st.retired.iter_mut().zip(snap) {
                *r = r.saturating_add(v);
            }
        }
    }

    fn io_totals(&self) -> [u64; 4] {
        let st = self.st();
        let mut t = st.retired;
        for q in st.io_queues.values() {
            for (a, v) in t.iter_mut().zip(q.snapshot()) {
                *a = a.saturating_add(v);
            }
        }
        t
    }

    /// Keep-alive timeout in milliseconds (0: none).
    pub fn kato(&self) -> u32 {
        self.st().kato
    }

    pub(crate) fn namespace_changed(&self, nsid: u32) {
        let mut st = self.st();
        st.changed_ns.insert(nsid);
        if st.features.async_event_config & AEC_NS_ATTR != 0 && !st.ns_notice_outstanding {
            st.ns_notice_outstanding = true;
            st.events.push_back(AEN_NS_CHANGED);
            Self::match_events(&mut st);
        }
    }

    fn match_events(st: &mut AdminState) {
        while !st.aers.is_empty() && !st.events.is_empty() {
            let cid = st.aers.remove(0);
            let dw0 = st.events.pop_front().expect("checked non-empty");
            st.ready_completions.push(Cqe {
                dw0,
                cid,
                ..Default::default()
            });
        }
    }

    /// Ticker work for the admin queue: asynchronous event completions to send, or `None`
    /// once the keep-alive timer has expired (the controller is then dead).
    pub fn poll(&self, now: Instant) -> Option<Vec<Cqe>> {
        if self.is_dead() {
            return None;
        }
        let mut st = self.st();
        if st.kato != 0 {
            let limit = st.last_keep_alive + Duration::from_millis(u64::from(st.kato));
            if now > limit {
                drop(st);
                tracing::info!(
                    cntlid = self.cntlid,
                    "keep-alive timeout: controller torn down"
                );
                self.kill();
                return None;
            }
        }
        Some(std::mem::take(&mut st.ready_completions))
    }

    /// Property Get / Set.
    pub fn property(&self, cmd: &PropertyCmd, set: bool) -> AdminOutcome {
        let mut st = self.st();
        if !set {
            let (v, eight) = match cmd.offset {
                prop::CAP => {
                    let cap = u64::from(MAX_QUEUE_ENTRIES - 1)
                        | (1 << 16) // CQR
                        | (30 << 24) // TO: 15 s
                        | (1 << 37); // CSS: NVM command set
                    (cap, true)
                }
                prop::VS => (u64::from(NVME_VERSION), false),
                prop::CC => (u64::from(st.cc), false),
                prop::CSTS => (u64::from(st.csts), false),
                _ => return AdminOutcome::err(StatusCode::InvalidField),
            };
            if eight != cmd.eight {
                return AdminOutcome::err(StatusCode::InvalidField);
            }
            return AdminOutcome::Done {
                status: Status::SUCCESS,
                dw0: v as u32,
                dw1: (v >> 32) as u32,
                data: Vec::new(),
            };
        }
        match cmd.offset {
            prop::CC if !cmd.eight => {
                let new = cmd.value as u32;
                let old = st.cc;
                st.cc = new;
                let en = new & 1 != 0;
                let was = old & 1 != 0;
                if en && !was {
                    let iosqes = (new >> 16) & 0xF;
                    let iocqes = (new >> 20) & 0xF;
                    let mps = (new >> 7) & 0xF;
                    let css = (new >> 4) & 7;
                    let ok =
                        mps == 0 && css == 0 && (self.discovery || (iosqes == 6 && iocqes == 4));
                    if ok {
                        st.csts = 1;
                        self.ready.store(true, Ordering::Release);
                    } else {
                        st.csts |= 2; // CFS
                    }
                } else if !en && was {
                    // Controller reset: not ready; I/O queues are deleted (their connections
                    // close) and must be connected again after the next enable.
                    st.csts = 0;
                    self.ready.store(false, Ordering::Release);
                    self.epoch.fetch_add(1, Ordering::AcqRel);
                }
                let shn = (new >> 14) & 3;
                if shn != 0 {
                    // Shutdown completes at once: nothing is cached above the bdevs.
                    st.csts = (st.csts & !(3 << 2)) | (2 << 2);
                    self.ready.store(false, Ordering::Release);
                } else if (old >> 14) & 3 != 0 {
                    st.csts &= !(3 << 2);
                }
                AdminOutcome::ok(0)
            }
            prop::NSSR if !cmd.eight => AdminOutcome::err(StatusCode::InvalidField),
            _ => AdminOutcome::err(StatusCode::InvalidField),
        }
    }

    /// Runs one admin command (not a fabrics command). `local` is the address the host
    /// reached us at, for discovery log entries.
    pub fn admin(
        &self,
        target: &NvmfTarget,
        sqe: &Sqe,
        data: &[u8],
        local: Option<SocketAddr>,
        now: Instant,
    ) -> AdminOutcome {
        let mut st = self.st();
        st.last_keep_alive = now;
        let enabled = st.csts & 1 != 0;
        drop(st);
        if !enabled {
            return AdminOutcome::err(StatusCode::CommandSequenceError);
        }
        let cmd = match decode_admin(sqe, data) {
            Ok(c) => c,
            Err(code) => return AdminOutcome::err(code),
        };
        match cmd {
            AdminCommand::Identify { cns, nsid } => self.identify(target, cns, nsid),
            AdminCommand::GetLogPage {
                lid,
                rae,
                len,
                offset,
            } => self.get_log_page(target, lid, rae, len, offset, local),
            AdminCommand::SetFeatures { fid, save, cdw11 } => self.set_features(fid, save, cdw11),
            AdminCommand::GetFeatures { fid, sel, cdw11 } => {
                self.get_features(target, fid, sel, cdw11)
            }
            AdminCommand::KeepAlive => AdminOutcome::ok(0),
            AdminCommand::AsyncEventRequest => {
                let mut st = self.st();
                if st.aers.len() >= AER_LIMIT {
                    return AdminOutcome::err(StatusCode::AerLimitExceeded);
                }
                st.aers.push(sqe.cid());
                Self::match_events(&mut st);
                AdminOutcome::Deferred
            }
            // Commands complete too quickly to abort: report "not aborted" (DW0 bit 0).
            AdminCommand::Abort { .. } => AdminOutcome::ok(1),
            // Fabrics commands are the queue's business, not the controller's.
            AdminCommand::Connect(..)
            | AdminCommand::PropertyGet(_)
            | AdminCommand::PropertySet(_) => AdminOutcome::err(StatusCode::CommandSequenceError),
        }
    }

    fn namespaces(&self, target: &NvmfTarget) -> Vec<std::sync::Arc<Namespace>> {
        target
            .subsystem(&self.subnqn)
            .map(|s| s.namespaces.values().cloned().collect())
            .unwrap_or_default()
    }

    fn identify_controller(&self, target: &NvmfTarget) -> IdentifyController {
        let conn = &target.config.conn;
        if self.discovery {
            return IdentifyController {
                serial: String::new(),
                model: "Basalt discovery".into(),
                firmware: env!("CARGO_PKG_VERSION").into(),
                mdts: MDTS,
                cntlid: self.cntlid,
                ver: NVME_VERSION,
                cntrltype: CNTRLTYPE_DISCOVERY,
                aerl: (AER_LIMIT - 1) as u8,
                lpa: 1 << 2, // extended data for Get Log Page
                kas: 1,
                maxcmd: MAX_QUEUE_ENTRIES,
                sgls: 1 | (1 << 20),
                subnqn: crate::spec::fabrics::DISCOVERY_NQN.into(),
                ioccsz: 4,
                iorcsz: 1,
                msdbd: 1,
                ..Default::default()
            };
        }
        let sub = target.subsystem(&self.subnqn);
        let (serial, model, firmware) = sub
            .as_ref()
            .map(|s| {
                (
                    s.config.serial.clone(),
                    s.config.model.clone(),
                    s.config.firmware.clone(),
                )
            })
            .unwrap_or_default();
        let nss = self.namespaces(target);
        let vwc = nss.iter().any(|n| n.bdev.geometry().volatile_cache);
        IdentifyController {
            vid: 0,
            serial,
            model,
            firmware,
            mdts: MDTS,
            cntlid: self.cntlid,
            ver: NVME_VERSION,
            oaes: 1 << 8,
            cntrltype: CNTRLTYPE_IO,
            acl: 3,
            aerl: (AER_LIMIT - 1) as u8,
            frmw: 0x03,               // slot 1 read-only, one slot
            lpa: (1 << 1) | (1 << 2), // commands supported and effects, extended data
            elpe: 0,
            kas: 1,
            maxcmd: MAX_QUEUE_ENTRIES,
            nn: 1024,
            oncs: (1 << 0) | (1 << 2) | (1 << 3), // compare, DSM, write zeroes
            vwc: u8::from(vwc),
            sgls: 1 | (1 << 20), // SGLs supported, byte aligned; SGL offset (in-capsule)
            subnqn: self.subnqn.clone(),
            ioccsz: (64 + conn.in_capsule) / 16,
            iorcsz: 1,
            icdoff: 0,
            msdbd: 1,
        }
    }

    fn identify(&self, target: &NvmfTarget, cns: u8, nsid: u32) -> AdminOutcome {
        if self.discovery && cns != identify::CNS_CONTROLLER {
            return AdminOutcome::err(StatusCode::InvalidField);
        }
        match cns {
            identify::CNS_CONTROLLER => {
                AdminOutcome::data(self.identify_controller(target).encode())
            }
            identify::CNS_NAMESPACE => {
                if nsid == 0 || nsid == u32::MAX {
                    return AdminOutcome::err(StatusCode::InvalidNamespace);
                }
                match target.namespace(&self.subnqn, nsid) {
                    Some(ns) => AdminOutcome::data(identify_namespace(&ns).encode()),
                    // An inactive (allocatable) NSID reads as zeros.
                    None if nsid <= 1024 => AdminOutcome::data(vec![0; identify::IDENTIFY_LEN]),
                    None => AdminOutcome::err(StatusCode::InvalidNamespace),
                }
            }
            identify::CNS_ACTIVE_NS_LIST => {
                if nsid >= 0xFFFF_FFFE {
                    return AdminOutcome::err(StatusCode::InvalidNamespace);
                }
                let ids: Vec<u32> = self
                    .namespaces(target)
                    .iter()
                    .map(|n| n.nsid)
                    .filter(|&id| id > nsid)
                    .collect();
                AdminOutcome::data(identify::encode_nsid_list(&ids))
            }
            identify::CNS_NS_DESC_LIST => match target.namespace(&self.subnqn, nsid) {
                Some(ns) => {
                    let eui = ns.eui64();
                    AdminOutcome::data(identify::encode_ns_descriptors(&[
                        (identify::nidt::EUI64, &eui),
                        (identify::nidt::NGUID, &ns.uuid),
                        (identify::nidt::UUID, &ns.uuid),
                        (identify::nidt::CSI, &[0]),
                    ]))
                }
                None => AdminOutcome::err(StatusCode::InvalidNamespace),
            },
            _ => AdminOutcome::err(StatusCode::InvalidField),
        }
    }

    fn get_log_page(
        &self,
        target: &NvmfTarget,
        lid: u8,
        rae: bool,
        len: u64,
        offset: u64,
        local: Option<SocketAddr>,
    ) -> AdminOutcome {
        if !offset.is_multiple_of(4) || len > 1 << 20 {
            return AdminOutcome::err(StatusCode::InvalidField);
        }
        let page: Vec<u8> = match (self.discovery, lid) {
            (true, log::DISCOVERY) => self.discovery_log(target, local),
            (_, log::ERROR) => vec![0; 64],
            (false, log::SMART) => {
                let mut b = vec![0u8; 512];
                b[1..3].copy_from_slice(&313u16.to_le_bytes()); // 40 °C
                b[3] = 100; // available spare
                b[4] = 10; // threshold
                let [reads, writes, rbytes, wbytes] = self.io_totals();
                // Data units are thousands of 512-byte units, rounded up.
                let units = |bytes: u64| (bytes / 512).div_ceil(1000);
                b[32..48].copy_from_slice(&u128::from(units(rbytes)).to_le_bytes());
                b[48..64].copy_from_slice(&u128::from(units(wbytes)).to_le_bytes());
                b[64..80].copy_from_slice(&u128::from(reads).to_le_bytes());
                b[80..96].copy_from_slice(&u128::from(writes).to_le_bytes());
                b[112..128].copy_from_slice(&1u128.to_le_bytes()); // power cycles
                b
            }
            (false, log::FIRMWARE_SLOT) => {
                let mut b = vec![0u8; 512];
                b[0] = 1; // slot 1 active
                let fw = target
                    .subsystem(&self.subnqn)
                    .map(|s| s.config.firmware)
                    .unwrap_or_default();
                let f = &mut b[8..16];
                f.fill(b' ');
                let n = fw.len().min(8);
                f[..n].copy_from_slice(&fw.as_bytes()[..n]);
                b
            }
            (false, log::CHANGED_NS_LIST) => {
                let mut st = self.st();
                let ids: Vec<u32> = std::mem::take(&mut st.changed_ns).into_iter().collect();
                if !rae {
                    st.ns_notice_outstanding = false;
                }
                identify::encode_nsid_list(&ids)
            }
            (false, log::CMD_EFFECTS) => {
                let mut b = vec![0u8; 4096];
                let csupp = 1u32;
                let lbcc = 1u32 << 1;
                for opc in [
                    admin::GET_LOG_PAGE,
                    admin::IDENTIFY,
                    admin::ABORT,
                    admin::SET_FEATURES,
                    admin::GET_FEATURES,
                    admin::ASYNC_EVENT,
                    admin::KEEP_ALIVE,
                ] {
                    let o = usize::from(opc) * 4;
                    b[o..o + 4].copy_from_slice(&csupp.to_le_bytes());
                }
                use crate::spec::cmd::nvm;
                for (opc, e) in [
                    (nvm::FLUSH, csupp),
                    (nvm::WRITE, csupp | lbcc),
                    (nvm::READ, csupp),
                    (nvm::COMPARE, csupp),
                    (nvm::WRITE_ZEROES, csupp | lbcc),
                    (nvm::DSM, csupp | lbcc),
                ] {
                    let o = 1024 + usize::from(opc) * 4;
                    b[o..o + 4].copy_from_slice(&e.to_le_bytes());
                }
                b
            }
            _ => return AdminOutcome::err(StatusCode::InvalidLogPage),
        };
        if offset > page.len() as u64 {
            return AdminOutcome::err(StatusCode::InvalidField);
        }
        let start = offset as usize;
        let mut out = page[start..].to_vec();
        out.resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
        AdminOutcome::data(out)
    }

    fn discovery_log(&self, target: &NvmfTarget, local: Option<SocketAddr>) -> Vec<u8> {
        let (adrfam, traddr, trsvcid) = match target.config.advertised_addr.or(local) {
            Some(SocketAddr::V4(a)) => (ADRFAM_IPV4, a.ip().to_string(), a.port().to_string()),
            Some(SocketAddr::V6(a)) => (ADRFAM_IPV6, a.ip().to_string(), a.port().to_string()),
            None => (ADRFAM_IPV4, String::new(), String::new()),
        };
        let entries: Vec<DiscoveryEntry> = target
            .accessible_subsystems(&self.hostnqn)
            .into_iter()
            .map(|subnqn| DiscoveryEntry {
                trtype: TRTYPE_TCP,
                adrfam,
                subtype: SUBTYPE_NVM,
                treq: 0x02, // secure channel not required
                portid: target.config.port_id,
                cntlid: 0xFFFF,
                asqsz: MAX_QUEUE_ENTRIES,
                trsvcid: trsvcid.clone(),
                subnqn,
                traddr: traddr.clone(),
                sectype: 0,
            })
            .collect();
        identify::encode_discovery_log(target.discovery_genctr(), &entries)
    }

    fn set_features(&self, fid: u8, save: bool, v: u32) -> AdminOutcome {
        if save {
            return AdminOutcome::err(StatusCode::FeatureNotSaveable);
        }
        let mut st = self.st();
        let f = &mut st.features;
        match fid {
            feature::ARBITRATION => f.arbitration = v,
            feature::POWER_MGMT => {
                if v & 0x1F != 0 {
                    return AdminOutcome::err(StatusCode::InvalidField);
                }
                f.power_mgmt = v;
            }
            feature::TEMP_THRESHOLD => {
                // Only the composite sensor's over-temperature threshold is kept.
                if (v >> 16) & 0xF != 0 || (v >> 20) & 3 != 0 {
                    return AdminOutcome::err(StatusCode::InvalidField);
                }
                f.temp_threshold = v & 0xFFFF;
            }
            feature::ERROR_RECOVERY => f.error_recovery = v & 0xFFFF,
            feature::VOLATILE_WC => f.volatile_wc = v & 1,
            feature::NUM_QUEUES => {
                let nsq = v & 0xFFFF;
                let ncq = v >> 16;
                if nsq == 0xFFFF || ncq == 0xFFFF {
                    return AdminOutcome::err(StatusCode::InvalidField);
                }
                if !st.io_queues.is_empty() {
                    return AdminOutcome::err(StatusCode::CommandSequenceError);
                }
                let max = u32::from(self.max_io_queues - 1);
                let granted = nsq.max(ncq).min(max) as u16;
                st.features.num_queues = Some(granted);
                let g = u32::from(granted);
                return AdminOutcome::ok(g | (g << 16));
            }
            feature::INT_COALESCING => f.int_coalescing = v & 0xFFFF,
            feature::WRITE_ATOMICITY => f.write_atomicity = v & 1,
            feature::ASYNC_EVENT_CONFIG => f.async_event_config = v,
            feature::KEEP_ALIVE_TIMER => st.kato = v,
            feature::HOST_ID => return AdminOutcome::err(StatusCode::CommandSequenceError),
            feature::INT_VECTOR_CONFIG => return AdminOutcome::err(StatusCode::InvalidField),
            _ => return AdminOutcome::err(StatusCode::InvalidField),
        }
        AdminOutcome::ok(0)
    }

    fn get_features(&self, target: &NvmfTarget, fid: u8, sel: u8, cdw11: u32) -> AdminOutcome {
        // Read the registry before taking the controller lock (one lock at a time).
        let vwc_present = fid == feature::VOLATILE_WC
            && self
                .namespaces(target)
                .iter()
                .any(|n| n.bdev.geometry().volatile_cache);
        let st = self.st();
        let current = sel == 0;
        if sel == 3 {
            // Supported capabilities: changeable, not saveable, not namespace specific.
            let known = matches!(
                fid,
                feature::ARBITRATION
                    | feature::POWER_MGMT
                    | feature::TEMP_THRESHOLD
                    | feature::ERROR_RECOVERY
                    | feature::VOLATILE_WC
                    | feature::NUM_QUEUES
                    | feature::INT_COALESCING
                    | feature::WRITE_ATOMICITY
                    | feature::ASYNC_EVENT_CONFIG
                    | feature::KEEP_ALIVE_TIMER
                    | feature::HOST_ID
            );
            return if known {
                AdminOutcome::ok(1 << 2)
            } else {
                AdminOutcome::err(StatusCode::InvalidField)
            };
        }
        if sel > 3 {
            return AdminOutcome::err(StatusCode::InvalidField);
        }
        let f = &st.features;
        let pick = |cur: u32, def: u32| if current { cur } else { def };
        let v = match fid {
            feature::ARBITRATION => pick(f.arbitration, 0),
            feature::POWER_MGMT => pick(f.power_mgmt, 0),
            feature::TEMP_THRESHOLD => {
                if (cdw11 >> 16) & 0xF != 0 {
                    return AdminOutcome::err(StatusCode::InvalidField);
                }
                pick(f.temp_threshold, 343)
            }
            feature::ERROR_RECOVERY => pick(f.error_recovery, 0),
            feature::VOLATILE_WC => {
                if vwc_present {
                    pick(f.volatile_wc, 0)
                } else {
                    0
                }
            }
            feature::NUM_QUEUES => {
                let g = u32::from(f.num_queues.unwrap_or(self.max_io_queues - 1));
                let d = u32::from(self.max_io_queues - 1);
                let g = pick(g, d);
                g | (g << 16)
            }
            feature::INT_COALESCING => pick(f.int_coalescing, 0),
            feature::INT_VECTOR_CONFIG => pick(cdw11 & 0xFFFF, cdw11 & 0xFFFF),
            feature::WRITE_ATOMICITY => pick(f.write_atomicity, 0),
            feature::ASYNC_EVENT_CONFIG => pick(f.async_event_config, 0),
            feature::KEEP_ALIVE_TIMER => pick(st.kato, 0),
            feature::HOST_ID => {
                // Fabrics use the 128-bit host identifier only.
                if cdw11 & 1 == 0 {
                    return AdminOutcome::err(StatusCode::InvalidField);
                }
                return AdminOutcome::data(self.hostid.to_vec());
            }
            _ => return AdminOutcome::err(StatusCode::InvalidField),
        };
        AdminOutcome::ok(v)
    }
}

/// Identify Namespace for a namespace's current geometry.
pub fn identify_namespace(ns: &Namespace) -> IdentifyNamespace {
    let g = ns.bdev.geometry();
    IdentifyNamespace {
        nsze: g.num_blocks,
        ncap: g.num_blocks,
        nuse: g.num_blocks,
        nsfeat: 0,
        // Deallocated blocks read as zeros; Write Zeroes may deallocate.
        dlfeat: if g.supports_unmap { 0x09 } else { 0 },
        nguid: ns.uuid,
        eui64: ns.eui64(),
        lbads: g.block_size.trailing_zeros() as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subsystem::TargetConfig;

    fn ctrl(kato: u32, now: Instant) -> Controller {
        let data = ConnectData {
            hostid: [1; 16],
            cntlid: 0xFFFF,
            subnqn: "nqn.2026-11.org.basalt:t".into(),
            hostnqn: "nqn.2014-08.org.nvmexpress:h".into(),
        };
        Controller::new(1, &data, false, kato, 8, false, now)
    }

    fn prop_get(c: &Controller, offset: u32, eight: bool) -> (Status, u64) {
        match c.property(
            &PropertyCmd {
                eight,
                offset,
                value: 0,
            },
            false,
        ) {
            AdminOutcome::Done {
                status, dw0, dw1, ..
            } => (status, u64::from(dw0) | (u64::from(dw1) << 32)),
            AdminOutcome::Deferred => panic!("property get deferred"),
        }
    }

    fn cc(c: &Controller, value: u32) {
        let out = c.property(
            &PropertyCmd {
                eight: false,
                offset: prop::CC,
                value: u64::from(value),
            },
            true,
        );
        assert!(matches!(out, AdminOutcome::Done { status, .. } if status.is_success()));
    }

    const GOOD_CC: u32 = (6 << 16) | (4 << 20) | 1;

    #[test]
    fn enable_reset_and_shutdown_sequences() {
        let c = ctrl(0, Instant::now());
        let (_, cap) = prop_get(&c, prop::CAP, true);
        assert_eq!(cap & 0xFFFF, 127);
        assert_eq!((cap >> 24) & 0xFF, 30);
        assert_eq!(prop_get(&c, prop::VS, false).1, 0x0001_0300);
        assert_eq!(prop_get(&c, prop::CSTS, false).1, 0);
        // Wrong entry sizes: CFS, not ready.
        cc(&c, 1);
        assert_eq!(prop_get(&c, prop::CSTS, false).1 & 3, 2);
        assert!(!c.is_ready());
        cc(&c, 0);
        assert_eq!(prop_get(&c, prop::CSTS, false).1, 0);
        let e = c.epoch();
        cc(&c, GOOD_CC);
        cc(&c, 0);
        assert_eq!(c.epoch(), e + 1, "a reset deletes the I/O queues");
        assert!(!c.is_ready());
        cc(&c, GOOD_CC);
        assert_eq!(prop_get(&c, prop::CSTS, false).1, 1);
        assert!(c.is_ready());
        assert_eq!(prop_get(&c, prop::CC, false).1, u64::from(GOOD_CC));
        // Normal shutdown: SHST complete, no longer ready for I/O.
        cc(&c, GOOD_CC | (1 << 14));
        assert_eq!((prop_get(&c, prop::CSTS, false).1 >> 2) & 3, 2);
        assert!(!c.is_ready());
        // Unknown property, wrong width.
        assert_eq!(
            prop_get(&c, 0x40, false).0.code(),
            Some(StatusCode::InvalidField)
        );
        assert_eq!(
            prop_get(&c, prop::VS, true).0.code(),
            Some(StatusCode::InvalidField)
        );
    }

    #[test]
    fn keep_alive_expiry_kills() {
        let t0 = Instant::now();
        let c = ctrl(1000, t0);
        assert_eq!(c.poll(t0 + Duration::from_millis(900)), Some(vec![]));
        assert!(!c.is_dead());
        assert_eq!(c.poll(t0 + Duration::from_millis(1100)), None);
        assert!(c.is_dead());
        // No timeout when KATO is 0.
        let c = ctrl(0, t0);
        assert!(c.poll(t0 + Duration::from_secs(3600)).is_some());
    }

    #[test]
    fn namespace_events_wait_for_an_aer_and_the_log_read() {
        let t0 = Instant::now();
        let target = NvmfTarget::new(TargetConfig::default(), Vec::new());
        let c = ctrl(0, t0);
        cc(&c, GOOD_CC);
        // Notices disabled: only the changed list grows.
        c.namespace_changed(3);
        assert!(c.st().events.is_empty());
        let mut sqe = Sqe::default();
        sqe.set_opcode(admin::SET_FEATURES);
        sqe.set_cdw(10, u32::from(feature::ASYNC_EVENT_CONFIG));
        sqe.set_cdw(11, AEC_NS_ATTR);
        assert!(matches!(
            c.admin(&target, &sqe, &[], None, t0),
            AdminOutcome::Done { .. }
        ));
        c.namespace_changed(1);
        c.namespace_changed(2); // masked until the log is read
        let mut aer = Sqe::default();
        aer.set_opcode(admin::ASYNC_EVENT);
        aer.set_cid(77);
        assert!(matches!(
            c.admin(&target, &aer, &[], None, t0),
            AdminOutcome::Deferred
        ));
        let done = c.poll(t0).expect("alive");
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].cid, done[0].dw0), (77, AEN_NS_CHANGED));
        assert_eq!(AEN_NS_CHANGED, 0x0004_0002);
        let mut glp = Sqe::default();
        glp.set_opcode(admin::GET_LOG_PAGE);
        glp.set_cdw(10, u32::from(log::CHANGED_NS_LIST) | (1023 << 16));
        match c.admin(&target, &glp, &[], None, t0) {
            AdminOutcome::Done { data, .. } => {
                assert_eq!(identify::decode_nsid_list(&data), vec![1, 2, 3]);
            }
            AdminOutcome::Deferred => panic!("log deferred"),
        }
        // Unmasked again: the next change raises a new event.
        assert!(matches!(
            c.admin(&target, &aer, &[], None, t0),
            AdminOutcome::Deferred
        ));
        c.namespace_changed(4);
        assert_eq!(c.poll(t0).expect("alive").len(), 1);
    }

    #[test]
    fn discovery_log_uses_the_advertised_address_and_filters_hosts() {
        let cfg = TargetConfig {
            advertised_addr: Some("[fd00::7]:4421".parse().expect("addr")),
            ..TargetConfig::default()
        };
        let target = NvmfTarget::new(cfg, Vec::new());
        let mut open = crate::subsystem::SubsystemConfig::new("nqn.2026-11.org.basalt:o", "S");
        open.allow_any_host = true;
        target.add_subsystem(open).expect("add");
        target
            .add_subsystem(crate::subsystem::SubsystemConfig::new(
                "nqn.2026-11.org.basalt:closed",
                "S",
            ))
            .expect("add");
        let data = ConnectData {
            hostid: [1; 16],
            cntlid: 0xFFFF,
            subnqn: crate::spec::fabrics::DISCOVERY_NQN.into(),
            hostnqn: "nqn.2014-08.org.nvmexpress:h".into(),
        };
        let now = Instant::now();
        let c = Controller::new(9, &data, true, 0, 8, false, now);
        cc(&c, 1); // a discovery controller needs no I/O queue entry sizes
        let mut glp = Sqe::default();
        glp.set_opcode(admin::GET_LOG_PAGE);
        glp.set_cdw(10, u32::from(log::DISCOVERY) | (511 << 16));
        let local = Some("127.0.0.1:4420".parse().expect("addr"));
        let AdminOutcome::Done { status, data, .. } = c.admin(&target, &glp, &[], local, now)
        else {
            panic!("deferred")
        };
        assert!(status.is_success());
        let (_, n, entries) = identify::decode_discovery_log(&data);
        assert_eq!(n, 1);
        assert_eq!(entries[0].subnqn, "nqn.2026-11.org.basalt:o");
        assert_eq!(entries[0].adrfam, ADRFAM_IPV6);
        assert_eq!(entries[0].traddr, "fd00::7");
        assert_eq!(entries[0].trsvcid, "4421");
    }

    #[test]
    fn admin_commands_need_an_enabled_controller() {
        let target = NvmfTarget::new(TargetConfig::default(), Vec::new());
        let c = ctrl(0, Instant::now());
        let mut sqe = Sqe::default();
        sqe.set_opcode(admin::IDENTIFY);
        sqe.set_cdw(10, 1);
        assert!(matches!(
            c.admin(&target, &sqe, &[], None, Instant::now()),
            AdminOutcome::Done { status, .. } if status.code() == Some(StatusCode::CommandSequenceError)
        ));
    }
}
