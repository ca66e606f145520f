//! NVM subsystems, their namespaces and host allow-lists, and the registry every reactor reads
//! ([`NvmfTarget`]).
//!
//! The registry is `Send + Sync`: subsystems sit behind an `RwLock` read only at Connect, at
//! admin commands and when a queue refreshes its namespace view (after a change bumps the
//! generation counter). Controllers are created at admin-queue Connect (dynamic model) and
//! live in the registry until their admin queue closes or their keep-alive timer expires.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use basalt_bdev::Bdev;
use basalt_engine::ReactorHandle;

use crate::ctrl::Controller;
use crate::spec::StatusCode;
use crate::spec::fabrics::{CATTR_DISABLE_SQFLOW, ConnectCmd, ConnectData, DISCOVERY_NQN};

/// Why a registry change was refused.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum NvmfError {
    /// subsystem {0} already exists
    SubsystemExists(String),
    /// no subsystem {0}
    NoSubsystem(String),
    /// subsystem {nqn} already has namespace {nsid}
    NamespaceExists {
        /// The subsystem.
        nqn: String,
        /// The namespace id.
        nsid: u32,
    },
    /// subsystem {nqn} has no namespace {nsid}
    NoNamespace {
        /// The subsystem.
        nqn: String,
        /// The namespace id.
        nsid: u32,
    },
    /// invalid NQN {0:?}: expected nqn.YYYY-MM.reverse.domain:name, at most 223 bytes
    BadNqn(String),
    /// namespace id {0} is out of range (1 to 1024)
    BadNsid(u32),
    /// the discovery subsystem cannot be changed
    Discovery,
}

/// Checks an NQN: `nqn.yyyy-mm.` followed by a reversed domain, at most 223 bytes of printable
/// ASCII (NVMe Base 2.0 §4.5).
pub fn valid_nqn(nqn: &str) -> bool {
    let b = nqn.as_bytes();
    b.len() > 12
        && b.len() <= 223
        && b.iter().all(|c| c.is_ascii_graphic())
        && nqn.starts_with("nqn.")
        && b[4..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..11].iter().all(u8::is_ascii_digit)
        && b[11] == b'.'
}

/// One namespace: a block device with identifiers derived from a 16-byte UUID.
#[derive(Debug)]
pub struct Namespace {
    /// Namespace id (1-based).
    pub nsid: u32,
    /// Backing device.
    pub bdev: Arc<dyn Bdev>,
    /// UUID; the NGUID is the same 16 bytes and the EUI-64 its first 8.
    pub uuid: [u8; 16],
}

impl Namespace {
    /// The EUI-64: the UUID's first 8 bytes.
    pub fn eui64(&self) -> [u8; 8] {
        let mut e = [0u8; 8];
        e.copy_from_slice(&self.uuid[..8]);
        e
    }
}

/// What an NVM subsystem is created with.
#[derive(Debug, Clone)]
pub struct SubsystemConfig {
    /// The NQN, e.g. `nqn.2026-11.org.basalt:volume-<uuid>`.
    pub nqn: String,
    /// Serial number (20 ASCII characters at most).
    pub serial: String,
    /// Model number (40 ASCII characters at most).
    pub model: String,
    /// Firmware revision (8 ASCII characters at most).
    pub firmware: String,
    /// Any host may connect (the allow-list is ignored).
    pub allow_any_host: bool,
    /// Host NQNs allowed to connect.
    pub hosts: BTreeSet<String>,
}

impl SubsystemConfig {
    /// A subsystem with Basalt's model and firmware strings, open to no host yet.
    pub fn new(nqn: &str, serial: &str) -> SubsystemConfig {
        SubsystemConfig {
            nqn: nqn.to_owned(),
            serial: serial.to_owned(),
            model: "Basalt NVMe-oF volume".to_owned(),
            firmware: env!("CARGO_PKG_VERSION").to_owned(),
            allow_any_host: false,
            hosts: BTreeSet::new(),
        }
    }
}

/// A subsystem and its namespaces.
#[derive(Debug, Clone)]
pub struct Subsystem {
    /// Configuration.
    pub config: SubsystemConfig,
    /// Namespaces by id.
    pub namespaces: BTreeMap<u32, Arc<Namespace>>,
}

impl Subsystem {
    /// Whether `hostnqn` may connect.
    pub fn allows(&self, hostnqn: &str) -> bool {
        self.config.allow_any_host || self.config.hosts.contains(hostnqn)
    }
}

/// Target-wide settings.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Transport limits offered to every connection.
    pub conn: crate::conn::ConnConfig,
    /// Most I/O queues per controller.
    pub max_io_queues: u16,
    /// Largest queue size (entries) of any queue.
    pub max_queue_depth: u16,
    /// Port id reported in discovery log entries.
    pub port_id: u16,
    /// Address reported in discovery log entries (TRADDR, TRSVCID); `None`: the address the
    /// host's connection reached (wrong behind NAT or a proxy).
    pub advertised_addr: Option<std::net::SocketAddr>,
}

impl Default for TargetConfig {
    fn default() -> TargetConfig {
        TargetConfig {
            conn: crate::conn::ConnConfig::default(),
            max_io_queues: 128,
            max_queue_depth: 128,
            port_id: 1,
            advertised_addr: None,
        }
    }
}

/// A Connect that failed: the status and, for invalid parameters, DW0 (IATTR and IPO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectRefused {
    /// The status code.
    pub status: StatusCode,
    /// Completion dword 0.
    pub dw0: u32,
}

impl ConnectRefused {
    fn param(in_data: bool, offset: u16) -> ConnectRefused {
        ConnectRefused {
            status: StatusCode::ConnectInvalidParameters,
            dw0: u32::from(in_data) | (u32::from(offset) << 16),
        }
    }
}

/// The NVMe-oF target: every subsystem, namespace and live controller of this daemon.
#[derive(Debug)]
pub struct NvmfTarget {
    pub(crate) config: TargetConfig,
    subsystems: RwLock<BTreeMap<String, Subsystem>>,
    controllers: Mutex<HashMap<u16, Arc<Controller>>>,
    next_cntlid: AtomicU16,
    /// Bumped on every namespace change; queues refresh their view when it moves.
    generation: AtomicU64,
    /// Discovery log generation counter.
    discovery_genctr: AtomicU64,
    pub(crate) reactors: Vec<ReactorHandle>,
}

impl NvmfTarget {
    /// A target with no subsystems, served from `reactors`.
    pub fn new(config: TargetConfig, reactors: Vec<ReactorHandle>) -> Arc<NvmfTarget> {
        Arc::new(NvmfTarget {
            config,
            subsystems: RwLock::new(BTreeMap::new()),
            controllers: Mutex::new(HashMap::new()),
            next_cntlid: AtomicU16::new(1),
            generation: AtomicU64::new(1),
            discovery_genctr: AtomicU64::new(1),
            reactors,
        })
    }

    /// The namespace generation (bumped on every namespace change).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The discovery log generation counter.
    pub fn discovery_genctr(&self) -> u64 {
        self.discovery_genctr.load(Ordering::Acquire)
    }

    fn changed(&self, discovery: bool) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if discovery {
            self.discovery_genctr.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Adds an NVM subsystem with no namespaces.
    ///
    /// # Errors
    /// A bad or taken NQN, or the discovery NQN.
    pub fn add_subsystem(&self, config: SubsystemConfig) -> Result<(), NvmfError> {
        if config.nqn == DISCOVERY_NQN {
            return Err(NvmfError::Discovery);
        }
        if !valid_nqn(&config.nqn) {
            return Err(NvmfError::BadNqn(config.nqn));
        }
        let mut subs = self.subsystems.write().expect("subsystem lock");
        if subs.contains_key(&config.nqn) {
            return Err(NvmfError::SubsystemExists(config.nqn));
        }
        subs.insert(
            config.nqn.clone(),
            Subsystem {
                config,
                namespaces: BTreeMap::new(),
            },
        );
        drop(subs);
        self.changed(true);
        Ok(())
    }

    /// Removes a subsystem; its controllers are torn down.
    ///
    /// # Errors
    /// No such subsystem.
    pub fn remove_subsystem(&self, nqn: &str) -> Result<(), NvmfError> {
        let removed = self.subsystems.write().expect("subsystem lock").remove(nqn);
        if removed.is_none() {
            return Err(NvmfError::NoSubsystem(nqn.to_owned()));
        }
        for c in self.controllers_of(nqn) {
            c.kill();
            self.drop_controller(c.cntlid);
        }
        self.changed(true);
        Ok(())
    }

    /// Adds namespace `nsid` backed by `bdev`, identified by `uuid`; raises a namespace
    /// attribute changed event on the subsystem's controllers.
    ///
    /// # Errors
    /// No such subsystem, a taken or out-of-range NSID.
    pub fn add_namespace(
        &self,
        nqn: &str,
        nsid: u32,
        bdev: Arc<dyn Bdev>,
        uuid: [u8; 16],
    ) -> Result<(), NvmfError> {
        if nsid == 0 || nsid > 1024 {
            return Err(NvmfError::BadNsid(nsid));
        }
        {
            let mut subs = self.subsystems.write().expect("subsystem lock");
            let sub = subs
                .get_mut(nqn)
                .ok_or_else(|| NvmfError::NoSubsystem(nqn.to_owned()))?;
            if sub.namespaces.contains_key(&nsid) {
                return Err(NvmfError::NamespaceExists {
                    nqn: nqn.to_owned(),
                    nsid,
                });
            }
            sub.namespaces
                .insert(nsid, Arc::new(Namespace { nsid, bdev, uuid }));
        }
        self.changed(false);
        self.notify_ns_change(nqn, nsid);
        Ok(())
    }

    /// Removes a namespace (raising a namespace attribute changed event).
    ///
    /// # Errors
    /// No such subsystem or namespace.
    pub fn remove_namespace(&self, nqn: &str, nsid: u32) -> Result<Arc<Namespace>, NvmfError> {
        let ns = {
            let mut subs = self.subsystems.write().expect("subsystem lock");
            let sub = subs
                .get_mut(nqn)
                .ok_or_else(|| NvmfError::NoSubsystem(nqn.to_owned()))?;
            sub.namespaces
                .remove(&nsid)
                .ok_or_else(|| NvmfError::NoNamespace {
                    nqn: nqn.to_owned(),
                    nsid,
                })?
        };
        self.changed(false);
        self.notify_ns_change(nqn, nsid);
        Ok(ns)
    }

    /// Sets who may connect to a subsystem (controllers already connected stay).
    ///
    /// # Errors
    /// No such subsystem.
    pub fn set_allowed_hosts(
        &self,
        nqn: &str,
        allow_any_host: bool,
        hosts: BTreeSet<String>,
    ) -> Result<(), NvmfError> {
        let mut subs = self.subsystems.write().expect("subsystem lock");
        let sub = subs
            .get_mut(nqn)
            .ok_or_else(|| NvmfError::NoSubsystem(nqn.to_owned()))?;
        sub.config.allow_any_host = allow_any_host;
        sub.config.hosts = hosts;
        drop(subs);
        self.changed(true);
        Ok(())
    }

    /// The namespace's block device changed size: queues re-read the geometry and every
    /// controller of the subsystem gets a namespace attribute changed event.
    ///
    /// # Errors
    /// No such subsystem or namespace.
    pub fn namespace_resized(&self, nqn: &str, nsid: u32) -> Result<(), NvmfError> {
        {
            let subs = self.subsystems.read().expect("subsystem lock");
            let sub = subs
                .get(nqn)
                .ok_or_else(|| NvmfError::NoSubsystem(nqn.to_owned()))?;
            if !sub.namespaces.contains_key(&nsid) {
                return Err(NvmfError::NoNamespace {
                    nqn: nqn.to_owned(),
                    nsid,
                });
            }
        }
        self.changed(false);
        self.notify_ns_change(nqn, nsid);
        Ok(())
    }

    fn notify_ns_change(&self, nqn: &str, nsid: u32) {
        for c in self.controllers_of(nqn) {
            c.namespace_changed(nsid);
        }
    }

    fn controllers_of(&self, nqn: &str) -> Vec<Arc<Controller>> {
        self.controllers
            .lock()
            .expect("controller lock")
            .values()
            .filter(|c| c.subnqn == nqn)
            .cloned()
            .collect()
    }

    /// Copies of every subsystem, in NQN order.
    pub fn subsystems(&self) -> Vec<Subsystem> {
        self.subsystems
            .read()
            .expect("subsystem lock")
            .values()
            .cloned()
            .collect()
    }

    /// A copy of a subsystem.
    pub fn subsystem(&self, nqn: &str) -> Option<Subsystem> {
        self.subsystems
            .read()
            .expect("subsystem lock")
            .get(nqn)
            .cloned()
    }

    /// A namespace of a subsystem.
    pub fn namespace(&self, nqn: &str, nsid: u32) -> Option<Arc<Namespace>> {
        self.subsystems
            .read()
            .expect("subsystem lock")
            .get(nqn)
            .and_then(|s| s.namespaces.get(&nsid).cloned())
    }

    /// The NQNs of the subsystems `hostnqn` may access.
    pub fn accessible_subsystems(&self, hostnqn: &str) -> Vec<String> {
        self.subsystems
            .read()
            .expect("subsystem lock")
            .values()
            .filter(|s| s.allows(hostnqn))
            .map(|s| s.config.nqn.clone())
            .collect()
    }

    /// Live controllers (for operators and tests).
    pub fn controller_count(&self) -> usize {
        self.controllers.lock().expect("controller lock").len()
    }

    pub(crate) fn controller(&self, cntlid: u16) -> Option<Arc<Controller>> {
        self.controllers
            .lock()
            .expect("controller lock")
            .get(&cntlid)
            .cloned()
    }

    pub(crate) fn drop_controller(&self, cntlid: u16) {
        self.controllers
            .lock()
            .expect("controller lock")
            .remove(&cntlid);
    }

    fn alloc_cntlid(&self) -> Option<u16> {
        let ctrls = self.controllers.lock().expect("controller lock");
        for _ in 0..0xFFEF {
            let id = self.next_cntlid.fetch_add(1, Ordering::Relaxed);
            let id = (id % 0xFFEF).max(1);
            if !ctrls.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    /// Handles a Connect: creates a controller (admin queue) or attaches an I/O queue to one.
    ///
    /// # Errors
    /// The Connect status to return.
    pub(crate) fn connect(
        &self,
        cmd: &ConnectCmd,
        data: &ConnectData,
        now: Instant,
    ) -> Result<Arc<Controller>, ConnectRefused> {
        if cmd.recfmt != 0 {
            return Err(ConnectRefused {
                status: StatusCode::ConnectIncompatibleFormat,
                dw0: 0,
            });
        }
        let max_sq = self.config.max_queue_depth.saturating_sub(1);
        if cmd.sqsize == 0 || cmd.sqsize > max_sq {
            return Err(ConnectRefused::param(false, 44));
        }
        let discovery = data.subnqn == DISCOVERY_NQN;
        if !discovery {
            let subs = self.subsystems.read().expect("subsystem lock");
            let sub = subs
                .get(&data.subnqn)
                .ok_or(ConnectRefused::param(true, 256))?;
            if !sub.allows(&data.hostnqn) {
                return Err(ConnectRefused {
                    status: StatusCode::ConnectInvalidHost,
                    dw0: 0,
                });
            }
        }
        let sqflow_off = cmd.cattr & CATTR_DISABLE_SQFLOW != 0;
        if cmd.qid == 0 {
            if data.cntlid != 0xFFFF {
                return Err(ConnectRefused::param(true, 16));
            }
            let cntlid = self.alloc_cntlid().ok_or(ConnectRefused {
                status: StatusCode::ConnectControllerBusy,
                dw0: 0,
            })?;
            let ctrl = Arc::new(Controller::new(
                cntlid,
                data,
                discovery,
                cmd.kato,
                self.config.max_io_queues,
                sqflow_off,
                now,
            ));
            self.controllers
                .lock()
                .expect("controller lock")
                .insert(cntlid, ctrl.clone());
            return Ok(ctrl);
        }
        if discovery {
            return Err(ConnectRefused::param(false, 42));
        }
        let ctrl = self
            .controller(data.cntlid)
            .ok_or(ConnectRefused::param(true, 16))?;
        if ctrl.subnqn != data.subnqn || ctrl.hostnqn != data.hostnqn || ctrl.hostid != data.hostid
        {
            return Err(ConnectRefused::param(true, 16));
        }
        ctrl.attach_io_queue(cmd.qid)
            .map_err(|()| ConnectRefused::param(false, 42))?;
        Ok(ctrl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_bdev::modules::malloc::MallocBdev;

    fn dev() -> Arc<dyn Bdev> {
        Arc::new(MallocBdev::new("m", 512, 8).expect("malloc"))
    }

    #[test]
    fn nqn_rules() {
        assert!(valid_nqn("nqn.2026-11.org.basalt:volume-1"));
        assert!(valid_nqn(DISCOVERY_NQN));
        assert!(!valid_nqn("iqn.2026-11.org.basalt:x"));
        assert!(!valid_nqn("nqn.26-11.org"));
        assert!(!valid_nqn("nqn.2026-11.org.basalt:has space"));
        assert!(!valid_nqn(&format!("nqn.2026-11.org.{}", "a".repeat(220))));
    }

    #[test]
    fn registry_changes_and_refusals() {
        let t = NvmfTarget::new(TargetConfig::default(), Vec::new());
        let nqn = "nqn.2026-11.org.basalt:v";
        let g0 = t.discovery_genctr();
        t.add_subsystem(SubsystemConfig::new(nqn, "S"))
            .expect("add");
        assert_eq!(t.discovery_genctr(), g0 + 1);
        assert_eq!(
            t.add_subsystem(SubsystemConfig::new(nqn, "S")),
            Err(NvmfError::SubsystemExists(nqn.into()))
        );
        assert_eq!(
            t.add_subsystem(SubsystemConfig::new(DISCOVERY_NQN, "S")),
            Err(NvmfError::Discovery)
        );
        assert!(matches!(
            t.add_subsystem(SubsystemConfig::new("bad", "S")),
            Err(NvmfError::BadNqn(_))
        ));
        let gen0 = t.generation();
        t.add_namespace(nqn, 1, dev(), [1; 16]).expect("ns");
        assert!(t.generation() > gen0);
        assert!(matches!(
            t.add_namespace(nqn, 1, dev(), [1; 16]),
            Err(NvmfError::NamespaceExists { nsid: 1, .. })
        ));
        assert_eq!(
            t.add_namespace(nqn, 0, dev(), [1; 16]),
            Err(NvmfError::BadNsid(0))
        );
        assert!(matches!(
            t.namespace_resized(nqn, 2),
            Err(NvmfError::NoNamespace { nsid: 2, .. })
        ));
        assert_eq!(t.namespace(nqn, 1).map(|n| n.eui64()), Some([1; 8]));
        // Access control.
        assert!(
            t.accessible_subsystems("nqn.2014-08.org.nvmexpress:h")
                .is_empty()
        );
        t.set_allowed_hosts(
            nqn,
            false,
            BTreeSet::from(["nqn.2014-08.org.nvmexpress:h".to_owned()]),
        )
        .expect("hosts");
        assert_eq!(
            t.accessible_subsystems("nqn.2014-08.org.nvmexpress:h"),
            vec![nqn.to_owned()]
        );
        t.remove_namespace(nqn, 1).expect("remove ns");
        assert!(t.namespace(nqn, 1).is_none());
        t.remove_subsystem(nqn).expect("remove");
        assert_eq!(
            t.remove_subsystem(nqn),
            Err(NvmfError::NoSubsystem(nqn.into()))
        );
    }

    #[test]
    fn connect_checks() {
        let t = NvmfTarget::new(TargetConfig::default(), Vec::new());
        let nqn = "nqn.2026-11.org.basalt:v";
        let mut c = SubsystemConfig::new(nqn, "S");
        c.hosts.insert("nqn.2014-08.org.nvmexpress:ok".into());
        t.add_subsystem(c).expect("add");
        let cmd = ConnectCmd {
            recfmt: 0,
            qid: 0,
            sqsize: 31,
            cattr: 0,
            kato: 0,
        };
        let data = |host: &str, cntlid| ConnectData {
            hostid: [0; 16],
            cntlid,
            subnqn: nqn.into(),
            hostnqn: host.into(),
        };
        let now = Instant::now();
        let err = |r: Result<Arc<Controller>, ConnectRefused>| r.map(|_| ()).expect_err("refused");
        assert_eq!(
            err(t.connect(&cmd, &data("nqn.2014-08.org.nvmexpress:no", 0xFFFF), now)).status,
            StatusCode::ConnectInvalidHost
        );
        let bad_sq = ConnectCmd { sqsize: 128, ..cmd };
        assert_eq!(
            err(t.connect(&bad_sq, &data("nqn.2014-08.org.nvmexpress:ok", 0xFFFF), now)),
            ConnectRefused::param(false, 44)
        );
        assert_eq!(
            err(t.connect(&cmd, &data("nqn.2014-08.org.nvmexpress:ok", 5), now)),
            ConnectRefused::param(true, 16)
        );
        let bad_fmt = ConnectCmd { recfmt: 1, ..cmd };
        assert_eq!(
            err(t.connect(
                &bad_fmt,
                &data("nqn.2014-08.org.nvmexpress:ok", 0xFFFF),
                now
            ))
            .status,
            StatusCode::ConnectIncompatibleFormat
        );
        let ctrl = t
            .connect(&cmd, &data("nqn.2014-08.org.nvmexpress:ok", 0xFFFF), now)
            .expect("admin connect");
        // I/O queues need an enabled controller and a known controller id.
        let io = ConnectCmd { qid: 1, ..cmd };
        assert_eq!(
            err(t.connect(
                &io,
                &data("nqn.2014-08.org.nvmexpress:ok", ctrl.cntlid),
                now
            )),
            ConnectRefused::param(false, 42)
        );
        assert_eq!(t.controller_count(), 1);
    }
}
