//! The `nvmf:` target: a remote namespace over NVMe/TCP, driven with `basalt_nvmf::host`.
//!
//! ```text
//! nvmf:HOST[:PORT]/SUBNQN[,nsid=N][,queues=N][,digest|,hdgst|,ddgst][,hostnqn=NQN][,nocopy]
//! ```
//!
//! The run connects one controller (the admin queue lives on the first reactor for the whole
//! run), then every core opens `queues` I/O queues of its own on its reactor: one TCP
//! connection each, with a reader and a writer task. A core's workers spread their I/O over
//! its queues, each I/O going to the queue with the fewest commands in flight.
//!
//! Buffers: a write of one registered buffer goes straight from it into the host's send
//! buffer (the host copies it once while encoding the PDU, as it must); a read's data lands in
//! a recycled `Vec` (the host copies it there from its receive buffer) and is then copied into
//! the worker's registered buffers: one extra copy of `bs` bytes per read. `nocopy` skips that
//! last copy (the data is dropped: not with `--verify`) to measure what it costs.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use basalt_bdev::IoVecs;
use basalt_engine::{Engine, Remote, oneshot};
use basalt_nvmf::host::{Completion, Controller, HostConfig, HostError, NsInfo, Queue};
use basalt_nvmf::spec::cmd::{Sqe, nvm};
use basalt_nvmf::spec::fabrics::{CATTR_DISABLE_SQFLOW, ConnectCmd, ConnectData, prop};

use crate::target::QueueError;

/// The default NVMe/TCP port.
pub const DEFAULT_PORT: u16 = 4420;

/// Largest `queues=` value.
const MAX_QUEUES_PER_CORE: u16 = 16;

/// An `nvmf:` target as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmfSpec {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Namespace id (default: the first active namespace).
    pub nsid: Option<u32>,
    /// I/O queues per core.
    pub queues: u16,
    /// Ask for header digests.
    pub header_digest: bool,
    /// Ask for data digests.
    pub data_digest: bool,
    /// Host NQN (default: the host library's).
    pub hostnqn: Option<String>,
    /// Do not copy read data into the worker's buffers (measurement aid).
    pub nocopy: bool,
}

/// Splits `HOST[:PORT]` (IPv6 literals in brackets).
pub(crate) fn split_host_port(s: &str, default: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: unclosed '[' in the address"))?;
        match after {
            "" => (h, None),
            p => (
                h,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("{s:?}: expected ':' after ']'"))?,
                ),
            ),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{s:?}: the host is missing"));
    }
    let port = match port {
        None => default,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{s:?}: bad port {p:?}"))?,
    };
    Ok((host.to_owned(), port))
}

/// Resolves a host and port to the first address it names.
pub(crate) fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

impl std::str::FromStr for NvmfSpec {
    type Err = String;

    /// Parses what follows `nvmf:`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = "expected nvmf:HOST[:PORT]/SUBNQN[,nsid=N][,queues=N][,digest]";
        let (addr, rest) = s
            .split_once('/')
            .ok_or_else(|| format!("nvmf:{s}: {usage}"))?;
        let (host, port) = split_host_port(addr, DEFAULT_PORT)?;
        let mut parts = rest.split(',');
        let subnqn = parts.next().unwrap_or_default();
        if subnqn.is_empty() || subnqn.len() > 223 || !subnqn.bytes().all(|c| c.is_ascii_graphic())
        {
            return Err(format!(
                "nvmf:{s}: the subsystem NQN is missing or malformed"
            ));
        }
        let mut spec = NvmfSpec {
            host,
            port,
            subnqn: subnqn.to_owned(),
            nsid: None,
            queues: 1,
            header_digest: false,
            data_digest: false,
            hostnqn: None,
            nocopy: false,
        };
        for opt in parts {
            let (k, v) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            let num = |v: Option<&str>| {
                v.and_then(|v| v.parse::<u32>().ok())
                    .ok_or_else(|| format!("nvmf:{s}: {k}= needs a number"))
            };
            match (k, v) {
                ("nsid", _) => {
                    let n = num(v)?;
                    if n == 0 || n == u32::MAX {
                        return Err(format!("nvmf:{s}: nsid must be 1 or more"));
                    }
                    spec.nsid = Some(n);
                }
                ("queues", _) => {
                    let n = num(v)?;
                    if n == 0 || n > u32::from(MAX_QUEUES_PER_CORE) {
                        return Err(format!(
                            "nvmf:{s}: queues must be 1..={MAX_QUEUES_PER_CORE}"
                        ));
                    }
                    spec.queues = n as u16;
                }
                ("digest", None) => {
                    spec.header_digest = true;
                    spec.data_digest = true;
                }
                ("hdgst", None) => spec.header_digest = true,
                ("ddgst", None) => spec.data_digest = true,
                ("nocopy", None) => spec.nocopy = true,
                ("hostnqn", Some(n)) if !n.is_empty() => spec.hostnqn = Some(n.to_owned()),
                _ => {
                    return Err(format!(
                        "nvmf:{s}: unknown option {opt:?} (nsid=N, queues=N, digest, hdgst, \
                         ddgst, hostnqn=NQN, nocopy)"
                    ));
                }
            }
        }
        Ok(spec)
    }
}

impl std::fmt::Display for NvmfSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "nvmf:[{}]:{}/{}", self.host, self.port, self.subnqn)?;
        } else {
            write!(f, "nvmf:{}:{}/{}", self.host, self.port, self.subnqn)?;
        }
        if let Some(n) = self.nsid {
            write!(f, ",nsid={n}")?;
        }
        if self.queues != 1 {
            write!(f, ",queues={}", self.queues)?;
        }
        match (self.header_digest, self.data_digest) {
            (true, true) => write!(f, ",digest")?,
            (true, false) => write!(f, ",hdgst")?,
            (false, true) => write!(f, ",ddgst")?,
            (false, false) => {}
        }
        if let Some(h) = &self.hostnqn {
            write!(f, ",hostnqn={h}")?;
        }
        if self.nocopy {
            write!(f, ",nocopy")?;
        }
        Ok(())
    }
}

/// A connected controller, as every core needs it to open its queues (`Send + Sync`).
#[derive(Debug)]
pub struct NvmfLink {
    addr: SocketAddr,
    cfg: HostConfig,
    subnqn: String,
    cntlid: u16,
    /// The namespace driven.
    pub ns: NsInfo,
    queues_per_core: u16,
    next_qid: AtomicU16,
    max_qid: u16,
    /// Most entries of one queue (CAP.MQES + 1).
    max_depth: u32,
    /// Largest transfer of one command (MDTS), bytes; `None`: no limit.
    pub max_transfer: Option<u64>,
    nocopy: bool,
}

/// Keeps the controller of a run connected on the first reactor until [`NvmfSession::close`].
#[derive(Debug)]
pub struct NvmfSession {
    stop: oneshot::Sender<()>,
    done: Remote<()>,
}

impl NvmfSession {
    /// Shuts the controller down (CC.SHN) and closes its admin queue.
    pub fn close(self) {
        self.stop.send(());
        let _ = self.done.wait();
    }
}

/// I/O queues a run opens: every core's `queues`, for the timed phase and for the read-back.
fn queues_wanted(spec: &NvmfSpec, cores: usize) -> u16 {
    let n = usize::from(spec.queues) * cores.max(1) * 2;
    u16::try_from(n).unwrap_or(u16::MAX).min(0xFFFE)
}

/// Connects the controller on the engine's first reactor and identifies the namespace.
///
/// # Errors
/// The address does not resolve, the controller refuses the connection, or the namespace is
/// missing.
pub fn attach(spec: &NvmfSpec, engine: &Engine) -> Result<(Arc<NvmfLink>, NvmfSession), String> {
    let addr = resolve(&spec.host, spec.port)?;
    let mut cfg = HostConfig {
        header_digest: spec.header_digest,
        data_digest: spec.data_digest,
        ..HostConfig::default()
    };
    if let Some(h) = &spec.hostnqn {
        cfg.hostnqn.clone_from(h);
    }
    let want = queues_wanted(spec, engine.reactors().len());
    let (info_tx, info_rx) = oneshot::channel::<Result<Arc<NvmfLink>, String>>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let spec = spec.clone();
    let done = engine
        .reactor(0)
        .spawn(move || async move {
            let what = format!("{}:{}", spec.host, spec.port);
            let ctrl = match Controller::connect(addr, &spec.subnqn, &cfg).await {
                Ok(c) => c,
                Err(e) => {
                    info_tx.send(Err(format!("cannot connect to {what}: {e}")));
                    return;
                }
            };
            match identify(&ctrl, &spec, addr, cfg, want).await {
                Ok(link) => info_tx.send(Ok(Arc::new(link))),
                Err(e) => {
                    info_tx.send(Err(format!("{what}: {e}")));
                    ctrl.disconnect();
                    return;
                }
            }
            let _ = stop_rx.await;
            if let Err(e) = ctrl.shutdown().await {
                tracing::warn!(error = %e, "NVMe/TCP controller shutdown failed");
            }
        })
        .map_err(|e| e.to_string())?;
    let link = info_rx
        .wait()
        .map_err(|_| "the reactor stopped while connecting".to_owned())??;
    Ok((
        link,
        NvmfSession {
            stop: stop_tx,
            done,
        },
    ))
}

async fn identify(
    ctrl: &Controller,
    spec: &NvmfSpec,
    addr: SocketAddr,
    cfg: HostConfig,
    want: u16,
) -> Result<NvmfLink, HostError> {
    let granted = ctrl.set_num_queues(want).await?;
    let nsid = match spec.nsid {
        Some(n) => n,
        None => *ctrl
            .active_namespaces(0)
            .await?
            .first()
            .ok_or(HostError::Protocol("the subsystem has no active namespace"))?,
    };
    let (ns, _) = ctrl.identify_namespace(nsid).await?;
    if ns.blocks == 0 || ns.block_size < 512 {
        return Err(HostError::Protocol(
            "the namespace is not active or has no blocks",
        ));
    }
    let mdts = ctrl.identify.mdts;
    let cap = ctrl.property_get(prop::CAP, true).await?;
    Ok(NvmfLink {
        addr,
        cfg,
        subnqn: spec.subnqn.clone(),
        cntlid: ctrl.cntlid,
        ns,
        queues_per_core: spec.queues,
        next_qid: AtomicU16::new(1),
        max_qid: granted,
        max_depth: (cap & 0xffff) as u32 + 1,
        // MDTS is a power of two in units of CAP.MPSMIN (4 KiB on every target we know).
        max_transfer: (mdts != 0).then(|| 4096u64 << mdts.min(20)),
        nocopy: spec.nocopy,
    })
}

/// One I/O queue and its commands in flight.
#[derive(Debug)]
struct Lane {
    q: Queue,
    inflight: Cell<usize>,
}

/// One core's queues. Call [`NvmfQueue::open`] on the core's reactor.
#[derive(Debug)]
pub struct NvmfQueue {
    lanes: Vec<Lane>,
    ns: NsInfo,
    nocopy: bool,
    /// Recycled receive and gather vectors.
    spare: RefCell<Vec<Vec<u8>>>,
}

impl NvmfQueue {
    /// Opens this core's queues, `qd` commands deep in all.
    ///
    /// # Errors
    /// The controller refused a queue (for example: more queues than it grants).
    pub async fn open(link: &NvmfLink, qd: usize) -> Result<NvmfQueue, String> {
        let n = usize::from(link.queues_per_core);
        // The least-loaded choice keeps each queue at most ceil(qd / n) deep.
        let need = qd.div_ceil(n).max(2);
        let depth = u16::try_from(need)
            .ok()
            .filter(|&d| u32::from(d) <= link.max_depth)
            .ok_or_else(|| {
                format!(
                    "--qd {qd} over {n} queue(s) needs {need} entries per queue; the controller \
                     allows {} (use more queues=)",
                    link.max_depth
                )
            })?;
        let mut lanes = Vec::with_capacity(n);
        for _ in 0..n {
            let qid = link.next_qid.fetch_add(1, Ordering::Relaxed);
            if qid == 0 || qid > link.max_qid {
                return Err(format!(
                    "the controller grants {} I/O queues; this run needs more (fewer cores or \
                     queues=)",
                    link.max_qid
                ));
            }
            let q = open_io_queue(link, qid, depth)
                .await
                .map_err(|e| format!("cannot open I/O queue {qid}: {e}"))?;
            lanes.push(Lane {
                q,
                inflight: Cell::new(0),
            });
        }
        Ok(NvmfQueue {
            lanes,
            ns: link.ns,
            nocopy: link.nocopy,
            spare: RefCell::new(Vec::new()),
        })
    }

    /// Closes the queues (their connections).
    pub fn close(&self) {
        for l in &self.lanes {
            l.q.close();
        }
    }

    fn lane(&self) -> &Lane {
        self.lanes
            .iter()
            .min_by_key(|l| l.inflight.get())
            .expect("at least one queue")
    }

    fn sqe(&self, opc: u8, offset: u64, len: usize) -> Result<Sqe, QueueError> {
        let bs = u64::from(self.ns.block_size);
        let blocks = len as u64 / bs;
        if blocks == 0 || blocks > 65536 || !offset.is_multiple_of(bs) {
            return Err(QueueError::Request(format!(
                "{len} bytes at {offset} do not fit one NVMe command"
            )));
        }
        let slba = offset / bs;
        let mut sqe = Sqe::default();
        sqe.set_opcode(opc);
        sqe.set_nsid(self.ns.nsid);
        sqe.set_cdw(10, slba as u32);
        sqe.set_cdw(11, (slba >> 32) as u32);
        sqe.set_cdw(12, (blocks - 1) as u32);
        Ok(sqe)
    }

    async fn submit(
        &self,
        sqe: Sqe,
        write: &[u8],
        read_buf: Vec<u8>,
        read_len: usize,
    ) -> Result<Completion, QueueError> {
        let lane = self.lane();
        lane.inflight.set(lane.inflight.get() + 1);
        let r = lane.q.submit_with(sqe, write, read_buf, read_len).await;
        lane.inflight.set(lane.inflight.get() - 1);
        let c = r.map_err(QueueError::Nvme)?;
        if c.cqe.status.is_success() {
            Ok(c)
        } else {
            let e = QueueError::Nvme(HostError::Status {
                sct: c.cqe.status.sct,
                sc: c.cqe.status.sc,
                dw0: c.cqe.dw0,
            });
            self.spare.borrow_mut().push(c.data);
            Err(e)
        }
    }

    /// Reads `bufs`' total length at byte `offset`.
    pub async fn read(&self, offset: u64, mut bufs: IoVecs) -> (IoVecs, Result<(), QueueError>) {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let sqe = match self.sqe(nvm::READ, offset, len) {
            Ok(s) => s,
            Err(e) => return (bufs, Err(e)),
        };
        let spare = self.spare.borrow_mut().pop().unwrap_or_default();
        let c = match self.submit(sqe, &[], spare, len).await {
            Ok(c) => c,
            Err(e) => return (bufs, Err(e)),
        };
        let res = if c.data.len() != len {
            Err(QueueError::Request(format!(
                "the controller sent {} of {len} bytes",
                c.data.len()
            )))
        } else {
            if !self.nocopy {
                let mut at = 0;
                for b in bufs.iter_mut() {
                    let n = b.len();
                    b.copy_from_slice(&c.data[at..at + n]);
                    at += n;
                }
            }
            Ok(())
        };
        self.spare.borrow_mut().push(c.data);
        (bufs, res)
    }

    /// Writes `bufs` at byte `offset`.
    pub async fn write(&self, offset: u64, bufs: IoVecs) -> (IoVecs, Result<(), QueueError>) {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let sqe = match self.sqe(nvm::WRITE, offset, len) {
            Ok(s) => s,
            Err(e) => return (bufs, Err(e)),
        };
        let res = if let [one] = bufs.as_slice() {
            // One buffer: the host encodes straight from it.
            self.submit(sqe, &one[..], Vec::new(), 0).await
        } else {
            // Several: gather them (the host takes one slice).
            let mut g = self.spare.borrow_mut().pop().unwrap_or_default();
            g.clear();
            for b in &bufs {
                g.extend_from_slice(b);
            }
            let r = self.submit(sqe, &g, Vec::new(), 0).await;
            self.spare.borrow_mut().push(g);
            r
        };
        match res {
            Ok(c) => {
                self.spare.borrow_mut().push(c.data);
                (bufs, Ok(()))
            }
            Err(e) => (bufs, Err(e)),
        }
    }
}

/// Opens I/O queue `qid` on the calling reactor: what `Controller::create_io_queue` does, for a
/// reactor other than the controller's (the controller is not `Send`).
async fn open_io_queue(link: &NvmfLink, qid: u16, depth: u16) -> Result<Queue, HostError> {
    let q = Queue::open(link.addr, &link.cfg, qid, depth).await?;
    let mut sqe = Sqe::default();
    ConnectCmd {
        recfmt: 0,
        qid,
        sqsize: depth.max(2) - 1,
        cattr: if link.cfg.disable_sqflow {
            CATTR_DISABLE_SQFLOW
        } else {
            0
        },
        kato: 0,
    }
    .write(&mut sqe);
    let data = ConnectData {
        hostid: link.cfg.hostid,
        cntlid: link.cntlid,
        subnqn: link.subnqn.clone(),
        hostnqn: link.cfg.hostnqn.clone(),
    }
    .encode();
    if let Err(e) = q.submit(sqe, &data, 0).await.and_then(Completion::ok) {
        q.close();
        return Err(e);
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use basalt_nvmf::{NvmfTarget, SubsystemConfig, TargetConfig};

    use super::*;
    use crate::testutil;
    use crate::{Pattern, TargetSpec};

    const NQN: &str = "nqn.2026-11.org.basalt:bench-test";

    /// A Basalt NVMe/TCP target on a RAM namespace, served by this process.
    fn serve() -> (Engine, u16) {
        let engine = testutil::server_engine(1);
        let target = NvmfTarget::new(TargetConfig::default(), engine.reactors().to_vec());
        let mut sc = SubsystemConfig::new(NQN, "BENCH");
        sc.allow_any_host = true;
        target.add_subsystem(sc).expect("subsystem");
        target
            .add_namespace(NQN, 1, testutil::ram(16), [3; 16])
            .expect("namespace");
        let (l, port) = testutil::listener();
        basalt_nvmf::serve(target, l).expect("serve");
        (engine, port)
    }

    #[test]
    fn verify_job_over_nvmf_with_two_cores_and_two_queues_each() {
        let (server, port) = serve();
        let spec: TargetSpec = format!("nvmf:127.0.0.1:{port}/{NQN},queues=2")
            .parse()
            .expect("spec");
        let target = spec.open().expect("open");
        // 4 KiB in capsule, 192 KiB beyond MDTS is refused, 64 KiB through R2T.
        for (bs, qd) in [(4096, 16), (64 * 1024, 4)] {
            let job = testutil::job(Pattern::Randrw, bs, qd, 2, 400, true);
            let r = crate::run(&job, &target).expect("run");
            assert!(r.ok(), "{}", r.table());
            let v = r.verify.as_ref().expect("verify report");
            assert!(v.read_back_units > 0 && r.read.ios > 0 && r.write.ios > 0);
            assert!(r.target.starts_with("nvmf:127.0.0.1:"), "{}", r.target);
        }
        let one = format!("nvmf:127.0.0.1:{port}/{NQN}")
            .parse::<TargetSpec>()
            .expect("spec")
            .open()
            .expect("open");
        let full = testutil::job(Pattern::Randread, 4096, 128, 1, 100, false);
        assert!(crate::run(&full, &one).expect("run").ok());
        let deep = testutil::job(Pattern::Randread, 4096, 129, 1, 100, false);
        let e = crate::run(&deep, &one).expect_err("beyond MQES");
        assert!(e.to_string().contains("use more queues="), "{e}");
        let big = testutil::job(Pattern::Randread, 256 * 1024, 1, 1, 100, false);
        let e = crate::run(&big, &target).expect_err("beyond MDTS");
        assert!(e.to_string().contains("largest transfer"), "{e}");
        server.shutdown();
    }

    #[test]
    fn connection_errors_are_reported() {
        let (server, port) = serve();
        let job = testutil::job(Pattern::Randread, 4096, 1, 1, 100, false);
        let wrong: TargetSpec = format!("nvmf:127.0.0.1:{port}/nqn.2026-11.org.basalt:nope")
            .parse()
            .expect("spec");
        let e = crate::run(&job, &wrong.open().expect("open")).expect_err("no subsystem");
        assert!(e.to_string().contains("cannot connect"), "{e}");
        let ns: TargetSpec = format!("nvmf:127.0.0.1:{port}/{NQN},nsid=9")
            .parse()
            .expect("spec");
        assert!(crate::run(&job, &ns.open().expect("open")).is_err());
        server.shutdown();
    }

    #[test]
    fn specs_parse_and_print() {
        let s: NvmfSpec = "127.0.0.1:4430/nqn.2026-11.org.basalt:null,queues=2,nsid=3"
            .parse()
            .expect("parses");
        assert_eq!(s.host, "127.0.0.1");
        assert_eq!(s.port, 4430);
        assert_eq!(s.subnqn, "nqn.2026-11.org.basalt:null");
        assert_eq!((s.queues, s.nsid), (2, Some(3)));
        assert_eq!(
            s.to_string(),
            "nvmf:127.0.0.1:4430/nqn.2026-11.org.basalt:null,nsid=3,queues=2"
        );
        let d: NvmfSpec = "[::1]/nqn.x:y,digest,nocopy".parse().expect("parses");
        assert_eq!((d.host.as_str(), d.port), ("::1", DEFAULT_PORT));
        assert!(d.header_digest && d.data_digest && d.nocopy);
        assert_eq!(d.to_string(), "nvmf:[::1]:4420/nqn.x:y,digest,nocopy");
        let h: NvmfSpec = "host/nqn.x:y,hdgst,hostnqn=nqn.h:1"
            .parse()
            .expect("parses");
        assert!(h.header_digest && !h.data_digest);
        assert_eq!(h.hostnqn.as_deref(), Some("nqn.h:1"));
        for bad in [
            "127.0.0.1:4420",
            "127.0.0.1:4420/",
            ":4420/nqn.x",
            "127.0.0.1:0/nqn.x",
            "127.0.0.1:port/nqn.x",
            "[::1/nqn.x",
            "h/nqn.x,queues=0",
            "h/nqn.x,queues=99",
            "h/nqn.x,nsid=0",
            "h/nqn.x,nsid",
            "h/nqn.x,fast",
            "h/nqn.x,digest=1",
        ] {
            assert!(bad.parse::<NvmfSpec>().is_err(), "{bad} should not parse");
        }
    }
}
