//! The `iscsi://` target: a LUN of a remote iSCSI target, driven by a compact initiator of our
//! own on the engine (TCP through the reactor's ring), with `basalt_iscsi`'s PDU codec.
//!
//! ```text
//! iscsi://[USER[%SECRET]@]HOST[:PORT]/TARGET-IQN/LUN
//! ```
//!
//! The URL form is libiscsi's. CHAP (one-way, MD5) credentials come from the URL or, when it
//! has none, from `BASALT_ISCSI_CHAP_USER` and `BASALT_ISCSI_CHAP_SECRET`;
//! `BASALT_ISCSI_INITIATOR` overrides the initiator name ([`DEFAULT_INITIATOR`]).
//!
//! A run opens a short probe session on the first reactor (TEST UNIT READY, READ CAPACITY(16)),
//! then one session per core, each on its core's reactor with its own ISID, carrying that
//! core's `--qd` commands: READ(16) and WRITE(16) with immediate data up to FirstBurstLength,
//! unsolicited Data-Out when InitialR2T=No, and Data-Out on R2T for the rest. Data-In lands
//! straight in the worker's registered buffers and Data-Out is encoded straight from them, so
//! the initiator makes no copy of its own beyond the socket buffers'. Each phase ends with a
//! logout.
//!
//! Modules: [`login`] (the login state machine, no I/O), [`session`] (the full-feature phase on
//! a socket), [`error`] (errors and sense data).

pub mod error;
pub mod login;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use basalt_bdev::IoVecs;
use basalt_engine::Engine;
use basalt_iscsi::pdu::{CmdSn, Isid, Lun};

use self::error::{ScsiError, SessionError, UNIT_ATTENTION};
use self::login::{Chap, LoginParams};
use self::session::{Dir, Session};

/// The default iSCSI port.
pub const DEFAULT_PORT: u16 = 3260;

/// Initiator name unless `BASALT_ISCSI_INITIATOR` says otherwise.
pub const DEFAULT_INITIATOR: &str = "iqn.2026-11.org.basalt:bench";

/// An `iscsi://` target as written on the command line.
#[derive(Clone, PartialEq, Eq)]
pub struct IscsiSpec {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Target name.
    pub target: String,
    /// LUN.
    pub lun: u64,
    /// CHAP credentials from the URL.
    pub chap: Option<Chap>,
}

impl std::fmt::Debug for IscsiSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::str::FromStr for IscsiSpec {
    type Err = String;

    /// Parses a whole `iscsi://` URL.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = "expected iscsi://[USER[%SECRET]@]HOST[:PORT]/TARGET-IQN/LUN";
        let rest = s
            .strip_prefix("iscsi://")
            .ok_or_else(|| format!("{s:?}: {usage}"))?;
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: {usage}"))?;
        let (chap, hostport) = match authority.rsplit_once('@') {
            Some((cred, hp)) => {
                let (user, secret) = cred
                    .split_once('%')
                    .ok_or_else(|| format!("{s:?}: CHAP credentials are written USER%SECRET@"))?;
                if user.is_empty() || secret.is_empty() {
                    return Err(format!("{s:?}: empty CHAP user or secret"));
                }
                (
                    Some(Chap {
                        user: user.to_owned(),
                        secret: secret.to_owned(),
                    }),
                    hp,
                )
            }
            None => (None, authority),
        };
        let (host, port) = crate::nvmf::split_host_port(hostport, DEFAULT_PORT)?;
        let (target, lun) = path
            .rsplit_once('/')
            .ok_or_else(|| format!("{s:?}: the LUN is missing; {usage}"))?;
        if !basalt_iscsi::server::valid_iscsi_name(target) {
            return Err(format!("{s:?}: {target:?} is not an iSCSI name"));
        }
        let lun = lun
            .parse::<u64>()
            .ok()
            .filter(|&l| l < 16384)
            .ok_or_else(|| format!("{s:?}: bad LUN {lun:?}"))?;
        Ok(IscsiSpec {
            host,
            port,
            target: target.to_owned(),
            lun,
            chap,
        })
    }
}

impl std::fmt::Display for IscsiSpec {
    /// The URL, with the secret left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "iscsi://")?;
        if let Some(c) = &self.chap {
            write!(f, "{}%***@", c.user)?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", self.host)?;
        }
        write!(f, ":{}/{}/{}", self.port, self.target, self.lun)
    }
}

/// What every core needs to open its session (`Send + Sync`).
#[derive(Debug)]
pub struct IscsiLink {
    addr: SocketAddr,
    initiator: String,
    target: String,
    chap: Option<Chap>,
    lun: Lun,
    /// Bytes of the LUN.
    pub capacity: u64,
    /// Its logical block size.
    pub block_size: u32,
    isid: [u8; 3],
    next_session: AtomicU16,
}

impl IscsiLink {
    fn params(&self) -> LoginParams {
        let n = self
            .next_session
            .fetch_add(1, Ordering::Relaxed)
            .to_be_bytes();
        LoginParams {
            initiator: self.initiator.clone(),
            target: self.target.clone(),
            isid: Isid([
                0x80 | (self.isid[0] & 0x3f),
                self.isid[1],
                self.isid[2],
                0,
                n[0],
                n[1],
            ]),
            chap: self.chap.clone(),
            cmd_sn: CmdSn(1),
        }
    }

    /// Opens a session and clears the unit attentions a new nexus may start with.
    async fn session(&self, slots: usize) -> Result<Session, SessionError> {
        let s = Session::login(self.addr, self.params(), slots).await?;
        for tries in 0.. {
            let (_, r) = s
                .command(self.lun, cdb6(0x00), Dir::None, IoVecs::new(), 0)
                .await;
            match r {
                Ok(()) => break,
                Err(ScsiError::CheckCondition {
                    key: UNIT_ATTENTION,
                    ..
                }) if tries < 8 => {}
                Err(error) => {
                    s.logout().await;
                    return Err(SessionError::Command {
                        what: "TEST UNIT READY",
                        error,
                    });
                }
            }
        }
        Ok(s)
    }
}

fn cdb6(op: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op;
    c
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Resolves the target, logs in once on the first reactor to read the LUN's capacity, and
/// logs out.
///
/// # Errors
/// The address does not resolve, the login fails, or the LUN does not answer.
pub fn attach(spec: &IscsiSpec, engine: &Engine) -> Result<Arc<IscsiLink>, String> {
    let addr = crate::nvmf::resolve(&spec.host, spec.port)?;
    let chap = spec.chap.clone().or_else(|| {
        match (
            env("BASALT_ISCSI_CHAP_USER"),
            env("BASALT_ISCSI_CHAP_SECRET"),
        ) {
            (Some(user), Some(secret)) => Some(Chap { user, secret }),
            _ => None,
        }
    });
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos()
        ^ std::process::id().rotate_left(16);
    let s = seed.to_le_bytes();
    let mut link = IscsiLink {
        addr,
        initiator: env("BASALT_ISCSI_INITIATOR").unwrap_or_else(|| DEFAULT_INITIATOR.to_owned()),
        target: spec.target.clone(),
        chap,
        lun: Lun::from_number(spec.lun),
        capacity: 0,
        block_size: 0,
        isid: [s[0] ^ s[3], s[1], s[2]],
        next_session: AtomicU16::new(0),
    };
    let what = spec.to_string();
    let probe = engine
        .reactor(0)
        .block_on({
            let link = IscsiLinkProbe::of(&link);
            move || async move { link.probe().await }
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{what}: {}", chain(&e)))?;
    link.capacity = probe.0;
    link.block_size = probe.1;
    link.next_session = AtomicU16::new(1);
    Ok(Arc::new(link))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// The probe session's copy of the link (the link is not finished yet).
struct IscsiLinkProbe(IscsiLink);

impl IscsiLinkProbe {
    fn of(l: &IscsiLink) -> IscsiLinkProbe {
        IscsiLinkProbe(IscsiLink {
            addr: l.addr,
            initiator: l.initiator.clone(),
            target: l.target.clone(),
            chap: l.chap.clone(),
            lun: l.lun,
            capacity: 0,
            block_size: 0,
            isid: l.isid,
            next_session: AtomicU16::new(0),
        })
    }

    /// READ CAPACITY(16): (bytes, block size).
    async fn probe(self) -> Result<(u64, u32), SessionError> {
        let s = self.0.session(2).await?;
        let reactor = basalt_engine::current();
        let mut bufs = IoVecs::new();
        bufs.push(reactor.pool().alloc(32).expect("a small buffer").await);
        let mut cdb = cdb6(0x9e);
        cdb[1] = 0x10;
        cdb[10..14].copy_from_slice(&32u32.to_be_bytes());
        let (bufs, r) = s.command(self.0.lun, cdb, Dir::Read, bufs, 32).await;
        s.logout().await;
        r.map_err(|error| SessionError::Command {
            what: "READ CAPACITY(16)",
            error,
        })?;
        let d = &bufs[0];
        let last = u64::from_be_bytes(d[0..8].try_into().expect("8 bytes"));
        let bs = u32::from_be_bytes(d[8..12].try_into().expect("4 bytes"));
        if !(512..=65536).contains(&bs) || !bs.is_power_of_two() {
            return Err(SessionError::Command {
                what: "READ CAPACITY(16)",
                error: ScsiError::Request("the LUN reports an unusable block size"),
            });
        }
        Ok((last.saturating_add(1).saturating_mul(u64::from(bs)), bs))
    }
}

/// One core's session to the LUN. Open and use it on one reactor.
#[derive(Debug)]
pub struct IscsiQueue {
    session: Session,
    lun: Lun,
    block_size: u32,
}

impl IscsiQueue {
    /// Logs in a session for `qd` commands in flight.
    ///
    /// # Errors
    /// The login failed or the LUN does not answer.
    pub async fn open(link: &IscsiLink, qd: usize) -> Result<IscsiQueue, String> {
        let session = link
            .session(qd + 1)
            .await
            .map_err(|e| format!("iSCSI session: {}", chain(&e)))?;
        Ok(IscsiQueue {
            session,
            lun: link.lun,
            block_size: link.block_size,
        })
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Logs out.
    pub async fn close(&self) {
        self.session.logout().await;
    }

    async fn rw(&self, write: bool, offset: u64, bufs: IoVecs) -> (IoVecs, Result<(), ScsiError>) {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let bs = u64::from(self.block_size);
        let blocks = len as u64 / bs;
        if !offset.is_multiple_of(bs) || blocks == 0 || blocks > u64::from(u32::MAX) {
            return (
                bufs,
                Err(ScsiError::Request("not a whole number of blocks")),
            );
        }
        let mut cdb = cdb6(if write { 0x8a } else { 0x88 });
        cdb[2..10].copy_from_slice(&(offset / bs).to_be_bytes());
        cdb[10..14].copy_from_slice(&(blocks as u32).to_be_bytes());
        let dir = if write { Dir::Write } else { Dir::Read };
        let mut bufs = bufs;
        for attempt in 0.. {
            let (b, r) = self
                .session
                .command(self.lun, cdb, dir, bufs, len as u32)
                .await;
            bufs = b;
            match r {
                // A unit attention reports an event (a LUN added, a reset); the command did not
                // run: retry it, as every initiator does.
                Err(ScsiError::CheckCondition {
                    key: UNIT_ATTENTION,
                    ..
                }) if attempt < 3 => {}
                r => return (bufs, r),
            }
        }
        unreachable!("the loop returns")
    }

    /// READ(16) of `bufs`' total length at byte `offset`.
    pub async fn read(&self, offset: u64, bufs: IoVecs) -> (IoVecs, Result<(), ScsiError>) {
        self.rw(false, offset, bufs).await
    }

    /// WRITE(16) of `bufs` at byte `offset`.
    pub async fn write(&self, offset: u64, bufs: IoVecs) -> (IoVecs, Result<(), ScsiError>) {
        self.rw(true, offset, bufs).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use basalt_iscsi::conn::Limits;
    use basalt_iscsi::server::IscsiTarget;
    use basalt_iscsi::{Access, ChapCredentials, Portal, TargetNode};
    use basalt_scsi::{LogicalUnit, LuConfig};

    use super::*;
    use crate::testutil;
    use crate::{Pattern, TargetSpec};

    const IQN: &str = "iqn.2026-11.org.basalt:bench-test";

    /// A Basalt iSCSI target with one RAM LUN, served by this process.
    fn serve(access: Access, limits: Limits) -> (Engine, u16) {
        let engine = testutil::server_engine(1);
        let (l, port) = testutil::listener();
        let portal = Portal {
            tpgt: 1,
            addresses: vec![l.local_addr().expect("addr")],
        };
        let target = IscsiTarget::new(portal, limits, engine.reactors().to_vec());
        let lu = LogicalUnit::new(LuConfig {
            bdev: testutil::ram(16),
            uuid: [5; 16],
            serial: "B0001".into(),
            vendor: "BASALT".into(),
            product: "BDEV".into(),
            revision: "0.1".into(),
            read_only: false,
            thin: true,
            unmap_granularity: 1,
        });
        let node = TargetNode {
            name: IQN.into(),
            alias: None,
            luns: Vec::new(),
            access,
        };
        target.add_target(node, vec![(0, lu)]).expect("target");
        basalt_iscsi::server::serve(target, l).expect("serve");
        (engine, port)
    }

    #[test]
    fn verify_jobs_over_iscsi() {
        let (server, port) = serve(Access::default(), Limits::default());
        let target = format!("iscsi://127.0.0.1:{port}/{IQN}/0")
            .parse::<TargetSpec>()
            .expect("spec")
            .open()
            .expect("open");
        // 4 KiB: immediate data; 512 KiB: immediate, unsolicited or R2T-solicited Data-Out
        // beyond the first burst, Data-In over several PDUs and buffers.
        for (bs, qd, cores) in [(4096, 16, 2), (512 * 1024, 3, 1)] {
            let job = testutil::job(Pattern::Randrw, bs, qd, cores, 400, true);
            let r = crate::run(&job, &target).expect("run");
            assert!(r.ok(), "{}", r.table());
            let v = r.verify.as_ref().expect("verify report");
            assert!(v.read_back_units > 0 && r.read.ios > 0 && r.write.ios > 0);
            assert_eq!(r.total.ios, r.read.ios + r.write.ios);
        }
        server.shutdown();
    }

    #[test]
    fn chap_sense_and_nop_in() {
        let creds = ChapCredentials {
            user: "bench".into(),
            secret: "bench-secret-1".into(),
        };
        let limits = Limits {
            nop_interval: Duration::from_millis(100),
            nop_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let access = Access {
            chap: Some(creds),
            ..Access::default()
        };
        let (server, port) = serve(access, limits);
        let client = testutil::server_engine(1);
        let url = |cred: &str| -> IscsiSpec {
            format!("iscsi://{cred}127.0.0.1:{port}/{IQN}/0")
                .parse()
                .expect("url")
        };
        let e = attach(&url("bench%wrong-secret@"), &client).expect_err("wrong secret");
        assert!(e.contains("authentication failed"), "{e}");
        let e = attach(&url(""), &client).expect_err("no credentials");
        assert!(e.contains("requires CHAP"), "{e}");
        let link = attach(&url("bench%bench-secret-1@"), &client).expect("login with CHAP");
        assert_eq!((link.capacity, link.block_size), (16 << 20, 512));
        let cap = link.capacity;
        let out = client
            .reactor(0)
            .block_on(move || async move {
                let q = IscsiQueue::open(&link, 4).await.expect("session");
                let n = q.session().negotiated();
                // Idle past several NOP-In pings: each must be answered or the target drops us.
                basalt_engine::sleep(Duration::from_millis(700)).await;
                let reactor = basalt_engine::current();
                let mut bufs = IoVecs::new();
                bufs.push(reactor.pool().alloc(4096).expect("size").await);
                let (bufs, ok) = q.read(0, bufs).await;
                let (_, beyond) = q.read(cap, bufs).await;
                q.close().await;
                (n, ok, beyond)
            })
            .expect("reactor");
        let (n, ok, beyond) = out;
        assert!(n.immediate_data && n.first_burst > 0);
        assert_eq!(ok, Ok(()), "the session survived the pings");
        let e = beyond.expect_err("out of range");
        assert!(
            e.to_string().contains("ILLEGAL REQUEST") && e.to_string().contains("0x21"),
            "{e}"
        );
        client.shutdown();
        server.shutdown();
    }

    #[test]
    fn urls_parse_and_print() {
        let u: IscsiSpec = "iscsi://127.0.0.1:3270/iqn.2026-11.org.basalt:raw/0"
            .parse()
            .expect("parses");
        assert_eq!((u.host.as_str(), u.port, u.lun), ("127.0.0.1", 3270, 0));
        assert_eq!(u.target, "iqn.2026-11.org.basalt:raw");
        assert_eq!(
            u.to_string(),
            "iscsi://127.0.0.1:3270/iqn.2026-11.org.basalt:raw/0"
        );
        let c: IscsiSpec = "iscsi://alice%s3cret-s3cret@[::1]/iqn.2026-11.org.basalt:t/3"
            .parse()
            .expect("parses");
        assert_eq!((c.host.as_str(), c.port, c.lun), ("::1", DEFAULT_PORT, 3));
        let chap = c.chap.clone().expect("credentials");
        assert_eq!(
            (chap.user.as_str(), chap.secret.as_str()),
            ("alice", "s3cret-s3cret")
        );
        assert_eq!(
            c.to_string(),
            "iscsi://alice%***@[::1]:3260/iqn.2026-11.org.basalt:t/3"
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        for bad in [
            "iscsi:/host/iqn.2026-11.org.basalt:t/0",
            "iscsi://host/iqn.2026-11.org.basalt:t",
            "iscsi://host/iqn.2026-11.org.basalt:t/x",
            "iscsi://host/iqn.2026-11.org.basalt:t/16384",
            "iscsi://host/not an iqn/0",
            "iscsi://alice@host/iqn.2026-11.org.basalt:t/0",
            "iscsi://%x@host/iqn.2026-11.org.basalt:t/0",
            "iscsi://host:0/iqn.2026-11.org.basalt:t/0",
            "iscsi:///iqn.2026-11.org.basalt:t/0",
        ] {
            assert!(bad.parse::<IscsiSpec>().is_err(), "{bad} should not parse");
        }
    }
}
