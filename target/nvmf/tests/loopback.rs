//! Conformance tests: this crate's host against this crate's target over loopback TCP, on a
//! real engine with malloc block devices.
#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test crate

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use basalt_bdev::modules::malloc::MallocBdev;
use basalt_bdev::{Bdev, BdevError, ChannelImpl, Geometry};
use basalt_engine::{Engine, EngineConfig};
use basalt_nvmf::host::{Controller, HostConfig, HostError, NsInfo, Queue};
use basalt_nvmf::spec::cmd::{Sqe, StatusCode, admin, feature, log, nvm};
use basalt_nvmf::spec::identify::{self, nidt};
use basalt_nvmf::{NvmfTarget, SubsystemConfig, TargetConfig, serve};

const SUB: &str = "nqn.2026-11.org.basalt:volume-1";
const HOST1: &str = "nqn.2014-08.org.nvmexpress:uuid:host-1";
const HOST2: &str = "nqn.2014-08.org.nvmexpress:uuid:host-2";
const UUID1: [u8; 16] = [
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF, 0x01,
];

type R = Result<(), String>;

macro_rules! ensure {
    ($c:expr) => {
        if !$c {
            return Err(format!("line {}: {}", line!(), stringify!($c)));
        }
    };
}

macro_rules! ensure_eq {
    ($a:expr, $b:expr) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!(
                "line {}: {} = {:?}, expected {:?}",
                line!(),
                stringify!($a),
                a,
                b
            ));
        }
    }};
}

fn e<E: std::fmt::Display>(line: u32) -> impl Fn(E) -> String {
    move |e| format!("line {line}: {e}")
}

macro_rules! t {
    ($x:expr) => {
        $x.map_err(e(line!()))?
    };
}

/// A malloc device whose visible size can grow up to its real size.
#[derive(Debug)]
struct Resizable {
    inner: MallocBdev,
    blocks: AtomicU64,
}

impl Bdev for Resizable {
    fn name(&self) -> &str {
        "resizable"
    }
    fn geometry(&self) -> Geometry {
        let mut g = self.inner.geometry();
        g.num_blocks = self.blocks.load(Ordering::SeqCst);
        g
    }
    fn open_channel(&self) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        self.inner.open_channel()
    }
}

struct Setup {
    engine: Engine,
    target: Arc<NvmfTarget>,
    addr: SocketAddr,
}

fn setup(cores: usize) -> Setup {
    let mut cfg = EngineConfig::with_cores(cores);
    cfg.pin = false;
    let engine = Engine::start(&cfg).expect("engine starts");
    let target = NvmfTarget::new(TargetConfig::default(), engine.reactors().to_vec());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    serve(target.clone(), listener).expect("serve");
    Setup {
        engine,
        target,
        addr,
    }
}

fn add_sub(t: &NvmfTarget, nqn: &str, hosts: &[&str], any: bool) {
    let mut c = SubsystemConfig::new(nqn, "BSLT0001");
    c.allow_any_host = any;
    c.hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
    t.add_subsystem(c).expect("add subsystem");
}

fn malloc(blocks: u64) -> Arc<dyn Bdev> {
    Arc::new(MallocBdev::new("m", 512, blocks).expect("malloc"))
}

fn host(nqn: &str) -> HostConfig {
    HostConfig {
        hostnqn: nqn.to_owned(),
        ..HostConfig::default()
    }
}

fn run<F, Fut>(s: &Setup, reactor: usize, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R> + 'static,
{
    let r = s
        .engine
        .reactor(reactor)
        .block_on(f)
        .expect("test task ran to the end");
    if let Err(msg) = r {
        panic!("{msg}");
    }
}

fn status_of(r: Result<basalt_nvmf::host::Completion, HostError>) -> Option<StatusCode> {
    match r {
        Ok(c) => c.cqe.status.code(),
        Err(e) => e.status_code(),
    }
}

#[test]
fn connect_identify_properties() {
    let s = setup(1);
    add_sub(&s.target, SUB, &[HOST1], false);
    s.target
        .add_namespace(SUB, 1, malloc(2048), UUID1)
        .expect("ns 1");
    s.target
        .add_namespace(SUB, 3, malloc(1024), [7; 16])
        .expect("ns 3");
    let addr = s.addr;
    run(&s, 0, move || async move {
        let c = t!(Controller::connect(addr, SUB, &host(HOST1)).await);
        ensure!(c.cntlid != 0 && c.cntlid != 0xFFFF);
        let id = &c.identify;
        ensure_eq!(id.cntlid, c.cntlid);
        ensure_eq!(id.subnqn.as_str(), SUB);
        ensure_eq!(id.serial.as_str(), "BSLT0001");
        ensure_eq!(id.cntrltype, identify::CNTRLTYPE_IO);
        ensure_eq!(id.ver, 0x0001_0300);
        ensure_eq!(id.mdts, 5);
        ensure_eq!(id.oncs & 0b1101, 0b1101);
        ensure_eq!(id.ioccsz, (64 + 8192) / 16);
        ensure_eq!(id.icdoff, 0);
        ensure_eq!(id.oaes & (1 << 8), 1 << 8);
        // Properties.
        let cap = t!(c.property_get(0, true).await);
        ensure_eq!(cap & 0xFFFF, 127);
        ensure_eq!((cap >> 37) & 1, 1);
        ensure_eq!(t!(c.property_get(8, false).await), 0x0001_0300);
        ensure_eq!(t!(c.property_get(0x1C, false).await) & 1, 1);
        // CAP read as 4 bytes is an invalid field.
        ensure_eq!(
            c.property_get(0, false)
                .await
                .err()
                .and_then(|e| e.status_code()),
            Some(StatusCode::InvalidField)
        );
        // Namespaces.
        let (info, idns) = t!(c.identify_namespace(1).await);
        ensure_eq!(
            info,
            NsInfo {
                nsid: 1,
                block_size: 512,
                blocks: 2048
            }
        );
        ensure_eq!(idns.nguid, UUID1);
        ensure_eq!(idns.eui64[..], UUID1[..8]);
        ensure_eq!(idns.dlfeat, 0x09);
        ensure_eq!(t!(c.active_namespaces(0).await), vec![1, 3]);
        ensure_eq!(t!(c.active_namespaces(1).await), vec![3]);
        let d = t!(c.ns_descriptors(1).await);
        ensure!(d.contains(&(nidt::UUID, UUID1.to_vec())));
        ensure!(d.contains(&(nidt::NGUID, UUID1.to_vec())));
        ensure!(d.contains(&(nidt::EUI64, UUID1[..8].to_vec())));
        // Inactive NSID reads zeros; NSID 0 and unknown CNS are refused.
        let z = t!(c
            .identify_raw(identify::CNS_NAMESPACE, 2)
            .await
            .and_then(|c| c.ok()));
        ensure!(z.data.iter().all(|&b| b == 0));
        ensure_eq!(
            status_of(c.identify_raw(identify::CNS_NAMESPACE, 0).await),
            Some(StatusCode::InvalidNamespace)
        );
        ensure_eq!(
            status_of(c.identify_raw(0x10, 0).await),
            Some(StatusCode::InvalidField)
        );
        ensure_eq!(
            status_of(c.identify_raw(identify::CNS_NS_DESC_LIST, 9).await),
            Some(StatusCode::InvalidNamespace)
        );
        // Unknown admin opcode.
        let mut sqe = Sqe::default();
        sqe.set_opcode(0xC1);
        ensure_eq!(
            status_of(c.admin(sqe, &[], 0).await),
            Some(StatusCode::InvalidOpcode)
        );
        t!(c.shutdown().await);
        Ok(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        s.target.controller_count(),
        0,
        "admin queue gone: controller gone"
    );
}

#[test]
fn log_pages_features_keep_alive_abort() {
    let s = setup(1);
    add_sub(&s.target, SUB, &[], true);
    s.target
        .add_namespace(SUB, 1, malloc(256), UUID1)
        .expect("ns");
    let addr = s.addr;
    run(&s, 0, move || async move {
        let mut cfg = host(HOST1);
        cfg.hostid = [0x5A; 16];
        let c = t!(Controller::connect(addr, SUB, &cfg).await);
        let smart = t!(c
            .get_log_page(log::SMART, 512, 0, false)
            .await
            .and_then(|c| c.ok()));
        ensure_eq!(smart.data.len(), 512);
        ensure_eq!(smart.data[3], 100);
        let fw = t!(c
            .get_log_page(log::FIRMWARE_SLOT, 512, 0, false)
            .await
            .and_then(|c| c.ok()));
        ensure_eq!(fw.data[0], 1);
        let eff = t!(c
            .get_log_page(log::CMD_EFFECTS, 4096, 0, false)
            .await
            .and_then(|c| c.ok()));
        let io = |opc: u8| {
            u32::from_le_bytes(
                eff.data[1024 + 4 * opc as usize..][..4]
                    .try_into()
                    .expect("4"),
            )
        };
        ensure_eq!(io(nvm::WRITE), 3);
        ensure_eq!(io(nvm::READ), 1);
        ensure_eq!(io(0x7E), 0);
        let err = t!(c
            .get_log_page(log::ERROR, 64, 0, false)
            .await
            .and_then(|c| c.ok()));
        ensure_eq!(err.data.len(), 64);
        // Offset into a page; a page the I/O controller does not have.
        let part = t!(c
            .get_log_page(log::CMD_EFFECTS, 8, 1024, false)
            .await
            .and_then(|c| c.ok()));
        ensure_eq!(part.data, eff.data[1024..1032].to_vec());
        ensure_eq!(
            status_of(c.get_log_page(0xC0, 512, 0, false).await),
            Some(StatusCode::InvalidLogPage)
        );
        ensure_eq!(
            status_of(c.get_log_page(log::DISCOVERY, 1024, 0, false).await),
            Some(StatusCode::InvalidLogPage)
        );
        // Features.
        ensure_eq!(t!(c.set_num_queues(4).await), 4);
        let nq = t!(c
            .get_features(feature::NUM_QUEUES, 0, 0, 0)
            .await
            .and_then(|c| c.ok()));
        ensure_eq!(nq.cqe.dw0, 3 | (3 << 16));
        for (fid, v) in [
            (feature::ARBITRATION, 0x0303_0303u32),
            (feature::POWER_MGMT, 0),
            (feature::TEMP_THRESHOLD, 350),
            (feature::ERROR_RECOVERY, 10),
            (feature::VOLATILE_WC, 0),
            (feature::INT_COALESCING, 0x0101),
            (feature::WRITE_ATOMICITY, 1),
            (feature::ASYNC_EVENT_CONFIG, 1 << 8),
            (feature::KEEP_ALIVE_TIMER, 0),
        ] {
            t!(c.set_features(fid, v, &[]).await.and_then(|c| c.ok()));
            let g = t!(c.get_features(fid, 0, 0, 0).await.and_then(|c| c.ok()));
            ensure_eq!((fid, g.cqe.dw0), (fid, v));
            let cap = t!(c.get_features(fid, 3, 0, 0).await.and_then(|c| c.ok()));
            ensure_eq!(cap.cqe.dw0 & 4, 4);
        }
        let def = t!(c
            .get_features(feature::TEMP_THRESHOLD, 1, 0, 0)
            .await
            .and_then(|c| c.ok()));
        ensure_eq!(def.cqe.dw0, 343);
        let hid = t!(c
            .get_features(feature::HOST_ID, 0, 1, 16)
            .await
            .and_then(|c| c.ok()));
        ensure_eq!(hid.data, vec![0x5A; 16]);
        ensure_eq!(
            status_of(c.get_features(feature::HOST_ID, 0, 0, 8).await),
            Some(StatusCode::InvalidField)
        );
        ensure_eq!(
            status_of(c.set_features(feature::HOST_ID, 1, &[0; 16]).await),
            Some(StatusCode::CommandSequenceError)
        );
        ensure_eq!(
            status_of(c.get_features(0x7D, 0, 0, 0).await),
            Some(StatusCode::InvalidField)
        );
        // Save bit.
        let mut sqe = Sqe::default();
        sqe.set_opcode(admin::SET_FEATURES);
        sqe.set_cdw(10, u32::from(feature::ARBITRATION) | (1 << 31));
        ensure_eq!(
            status_of(c.admin(sqe, &[], 0).await),
            Some(StatusCode::FeatureNotSaveable)
        );
        // Keep Alive and Abort ("not aborted").
        t!(c.keep_alive().await);
        let mut sqe = Sqe::default();
        sqe.set_opcode(admin::ABORT);
        sqe.set_cdw(10, 1 | (5 << 16));
        let a = t!(c.admin(sqe, &[], 0).await.and_then(|c| c.ok()));
        ensure_eq!(a.cqe.dw0 & 1, 1);
        // Number of queues cannot change once an I/O queue exists.
        let _q = t!(c.create_io_queue(1, 16).await);
        ensure_eq!(
            status_of(
                c.set_features(feature::NUM_QUEUES, 1 | (1 << 16), &[])
                    .await
            ),
            Some(StatusCode::CommandSequenceError)
        );
        // qid beyond the granted count is refused.
        ensure_eq!(
            c.create_io_queue(9, 16)
                .await
                .err()
                .and_then(|e| e.status_code()),
            Some(StatusCode::ConnectInvalidParameters)
        );
        Ok(())
    });
}

async fn io_suite(addr: SocketAddr, digests: bool) -> R {
    let mut cfg = host(HOST1);
    cfg.header_digest = digests;
    cfg.data_digest = digests;
    let c = t!(Controller::connect(addr, SUB, &cfg).await);
    ensure_eq!(c.admin_queue().digests().header, digests);
    let (ns, _) = t!(c.identify_namespace(1).await);
    let q = t!(c.create_io_queue(1, 64).await);
    ensure_eq!(q.queue().digests().data, digests);
    // Small write (in-capsule) and read back.
    let small: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    t!(q.write(&ns, 10, &small, false).await);
    ensure_eq!(t!(q.read(&ns, 10, 8).await), small);
    // Large writes go through R2T/H2CData; 128 KiB is the MDTS.
    for len in [12 * 1024usize, 64 * 1024, 128 * 1024] {
        let big: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ len as u8).collect();
        t!(q.write(&ns, 100, &big, true).await);
        ensure_eq!(t!(q.read(&ns, 100, (len / 512) as u32).await), big);
    }
    t!(q.flush(1).await);
    // Compare: equal, then different.
    t!(q.compare(&ns, 10, &small).await);
    let mut other = small.clone();
    other[5] ^= 1;
    ensure_eq!(
        q.compare(&ns, 10, &other)
            .await
            .err()
            .and_then(|e| e.status_code()),
        Some(StatusCode::CompareFailure)
    );
    // Write zeroes with and without deallocate, and DSM deallocate.
    t!(q.write_zeroes(&ns, 10, 4, false).await);
    let r = t!(q.read(&ns, 10, 8).await);
    ensure!(r[..2048].iter().all(|&b| b == 0));
    ensure_eq!(r[2048..], small[2048..]);
    t!(q.write_zeroes(&ns, 14, 4, true).await);
    ensure!(t!(q.read(&ns, 10, 8).await).iter().all(|&b| b == 0));
    t!(q.write(&ns, 500, &small, false).await);
    t!(q.deallocate(1, &[(500, 4), (506, 2)]).await);
    let r = t!(q.read(&ns, 500, 8).await);
    ensure!(r[..2048].iter().all(|&b| b == 0));
    ensure_eq!(r[2048..3072], small[2048..3072]);
    ensure!(r[3072..].iter().all(|&b| b == 0));
    // Error paths.
    let last = ns.blocks;
    ensure_eq!(
        q.read(&ns, last - 1, 2)
            .await
            .err()
            .and_then(|e| e.status_code()),
        Some(StatusCode::LbaOutOfRange)
    );
    ensure_eq!(
        q.write(&ns, last, &small[..512], false)
            .await
            .err()
            .and_then(|e| e.status_code()),
        Some(StatusCode::LbaOutOfRange)
    );
    ensure_eq!(
        q.deallocate(1, &[(last, 1)])
            .await
            .err()
            .and_then(|e| e.status_code()),
        Some(StatusCode::LbaOutOfRange)
    );
    let bad_ns = NsInfo { nsid: 9, ..ns };
    ensure_eq!(
        q.read(&bad_ns, 0, 1)
            .await
            .err()
            .and_then(|e| e.status_code()),
        Some(StatusCode::InvalidNamespace)
    );
    let mut sqe = Sqe::default();
    sqe.set_opcode(0x7C);
    sqe.set_nsid(1);
    ensure_eq!(
        status_of(q.submit(sqe, &[], 0).await),
        Some(StatusCode::InvalidOpcode)
    );
    // More than MDTS: the transport refuses a write, the controller a read.
    let huge = vec![0u8; 256 * 1024];
    ensure_eq!(
        q.write(&ns, 0, &huge, false)
            .await
            .err()
            .and_then(|e| e.status_code()),
        Some(StatusCode::DataSglLengthInvalid)
    );
    ensure_eq!(
        q.read(&ns, 0, 512)
            .await
            .err()
            .and_then(|e| e.status_code()),
        Some(StatusCode::InvalidField)
    );
    // The queue still works after all that.
    ensure_eq!(t!(q.read(&ns, 100, 1).await).len(), 512);
    // SMART counts what succeeded on this controller's I/O queues.
    let smart = t!(c
        .get_log_page(log::SMART, 512, 0, false)
        .await
        .and_then(|c| c.ok()));
    let u128_at = |o: usize| u128::from_le_bytes(smart.data[o..o + 16].try_into().expect("16"));
    ensure_eq!(u128_at(80), 5); // host writes that succeeded: 4, 12, 64, 128 and 4 KiB
    ensure_eq!(u128_at(64), 8); // host reads that succeeded (compares are not reads)
    // 212 992 bytes = 416 units of 512 bytes: one data unit (1000 units), rounded up.
    ensure_eq!(u128_at(48), 1);
    Ok(())
}

#[test]
fn io_commands_without_digests() {
    let s = setup(2);
    add_sub(&s.target, SUB, &[HOST1], false);
    s.target
        .add_namespace(SUB, 1, malloc(4096), UUID1)
        .expect("ns");
    let addr = s.addr;
    run(&s, 1, move || io_suite(addr, false));
}

#[test]
fn io_commands_with_digests() {
    let s = setup(2);
    add_sub(&s.target, SUB, &[HOST1], false);
    s.target
        .add_namespace(SUB, 1, malloc(4096), UUID1)
        .expect("ns");
    let addr = s.addr;
    run(&s, 1, move || io_suite(addr, true));
}

#[test]
fn host_nqn_refusal_and_discovery_filtering() {
    let s = setup(1);
    let a = "nqn.2026-11.org.basalt:volume-a";
    let b = "nqn.2026-11.org.basalt:volume-b";
    let open = "nqn.2026-11.org.basalt:volume-open";
    add_sub(&s.target, a, &[HOST1], false);
    add_sub(&s.target, b, &[HOST2], false);
    add_sub(&s.target, open, &[], true);
    let addr = s.addr;
    run(&s, 0, move || async move {
        let d = t!(Controller::connect(addr, identify_discovery(), &host(HOST1)).await);
        ensure_eq!(d.identify.cntrltype, identify::CNTRLTYPE_DISCOVERY);
        let (_, entries) = t!(d.discovery_log().await);
        let nqns: BTreeSet<&str> = entries.iter().map(|e| e.subnqn.as_str()).collect();
        ensure_eq!(nqns, BTreeSet::from([a, open]));
        for e in &entries {
            ensure_eq!(e.trtype, identify::TRTYPE_TCP);
            ensure_eq!(e.adrfam, identify::ADRFAM_IPV4);
            ensure_eq!(e.subtype, identify::SUBTYPE_NVM);
            ensure_eq!(e.traddr.as_str(), "127.0.0.1");
            ensure_eq!(e.trsvcid, addr.port().to_string());
            ensure_eq!(e.cntlid, 0xFFFF);
            ensure_eq!(e.sectype, 0);
        }
        // The discovery controller refuses other commands.
        ensure_eq!(
            status_of(d.identify_raw(identify::CNS_NAMESPACE, 1).await),
            Some(StatusCode::InvalidField)
        );
        ensure_eq!(
            status_of(d.get_log_page(log::SMART, 512, 0, false).await),
            Some(StatusCode::InvalidLogPage)
        );
        let d2 = t!(Controller::connect(addr, identify_discovery(), &host(HOST2)).await);
        let (_, e2) = t!(d2.discovery_log().await);
        let nqns: BTreeSet<&str> = e2.iter().map(|e| e.subnqn.as_str()).collect();
        ensure_eq!(nqns, BTreeSet::from([b, open]));
        // Refusals.
        ensure_eq!(
            Controller::connect(addr, b, &host(HOST1))
                .await
                .err()
                .and_then(|e| e.status_code()),
            Some(StatusCode::ConnectInvalidHost)
        );
        match Controller::connect(addr, "nqn.2026-11.org.basalt:nope", &host(HOST1)).await {
            Err(HostError::Status {
                sct: 1,
                sc: 0x82,
                dw0,
            }) => ensure_eq!(dw0, 1 | (256 << 16)),
            other => return Err(format!("unknown subsystem: {other:?}")),
        }
        t!(Controller::connect(addr, a, &host(HOST1)).await);
        t!(Controller::connect(addr, open, &host(HOST2)).await);
        Ok(())
    });
}

fn identify_discovery() -> &'static str {
    basalt_nvmf::spec::fabrics::DISCOVERY_NQN
}

#[test]
fn keep_alive_expiry_tears_the_controller_down() {
    let s = setup(2);
    add_sub(&s.target, SUB, &[], true);
    s.target
        .add_namespace(SUB, 1, malloc(256), UUID1)
        .expect("ns");
    let addr = s.addr;
    run(&s, 1, move || async move {
        let mut cfg = host(HOST1);
        cfg.kato_ms = 600;
        // With keep-alives the controller lives on.
        let live = t!(Controller::connect(addr, SUB, &cfg).await);
        live.start_keep_alive();
        // Without, it dies and takes its I/O queue with it.
        let dead = t!(Controller::connect(addr, SUB, &cfg).await);
        let (ns, _) = t!(dead.identify_namespace(1).await);
        let q = t!(dead.create_io_queue(1, 8).await);
        t!(q.read(&ns, 0, 1).await);
        basalt_engine::sleep(Duration::from_millis(1500)).await;
        ensure!(dead.admin_queue().is_closed());
        ensure!(q.queue().is_closed());
        ensure!(matches!(q.read(&ns, 0, 1).await, Err(HostError::Closed)));
        ensure!(!live.admin_queue().is_closed());
        t!(live.identify_namespace(1).await);
        Ok(())
    });
    assert_eq!(s.target.controller_count(), 1);
}

#[test]
fn resize_raises_a_namespace_attribute_event() {
    let s = setup(1);
    add_sub(&s.target, SUB, &[], true);
    let dev = Arc::new(Resizable {
        inner: MallocBdev::new("r", 512, 4096).expect("malloc"),
        blocks: AtomicU64::new(1024),
    });
    s.target
        .add_namespace(SUB, 1, dev.clone(), UUID1)
        .expect("ns");
    let addr = s.addr;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let target = s.target.clone();
    let resizer = std::thread::spawn(move || {
        rx.recv().expect("go");
        dev.blocks.store(4096, Ordering::SeqCst);
        target.namespace_resized(SUB, 1).expect("resized");
    });
    run(&s, 0, move || async move {
        let c = t!(Controller::connect(addr, SUB, &host(HOST1)).await);
        t!(c.set_features(feature::ASYNC_EVENT_CONFIG, 1 << 8, &[])
            .await
            .and_then(|c| c.ok()));
        let (ns, _) = t!(c.identify_namespace(1).await);
        ensure_eq!(ns.blocks, 1024);
        let q = t!(c.create_io_queue(1, 8).await);
        ensure_eq!(
            q.read(&ns, 2000, 1)
                .await
                .err()
                .and_then(|e| e.status_code()),
            Some(StatusCode::LbaOutOfRange)
        );
        let admin_q: Queue = c.admin_queue();
        let aer = basalt_engine::spawn(async move {
            let mut sqe = Sqe::default();
            sqe.set_opcode(admin::ASYNC_EVENT);
            admin_q.submit(sqe, &[], 0).await
        });
        basalt_engine::sleep(Duration::from_millis(50)).await;
        tx.send(()).map_err(e(line!()))?;
        let done = t!(basalt_engine::timeout(Duration::from_secs(5), aer).await);
        let done = t!(t!(done));
        ensure_eq!(done.cqe.dw0, 0x0004_0002);
        let l = t!(c
            .get_log_page(log::CHANGED_NS_LIST, 4096, 0, false)
            .await
            .and_then(|c| c.ok()));
        ensure_eq!(identify::decode_nsid_list(&l.data), vec![1]);
        // Read once: empty now.
        let l = t!(c
            .get_log_page(log::CHANGED_NS_LIST, 4096, 0, false)
            .await
            .and_then(|c| c.ok()));
        ensure!(identify::decode_nsid_list(&l.data).is_empty());
        let (ns, _) = t!(c.identify_namespace(1).await);
        ensure_eq!(ns.blocks, 4096);
        t!(q.write(&ns, 4000, &[9u8; 512], false).await);
        ensure_eq!(t!(q.read(&ns, 4000, 1).await), vec![9u8; 512]);
        // Too many outstanding AERs.
        for _ in 0..4 {
            let aq = c.admin_queue();
            basalt_engine::spawn(async move {
                let mut sqe = Sqe::default();
                sqe.set_opcode(admin::ASYNC_EVENT);
                let _ = aq.submit(sqe, &[], 0).await;
            });
        }
        basalt_engine::sleep(Duration::from_millis(50)).await;
        let mut sqe = Sqe::default();
        sqe.set_opcode(admin::ASYNC_EVENT);
        ensure_eq!(
            status_of(c.admin(sqe, &[], 0).await),
            Some(StatusCode::AerLimitExceeded)
        );
        Ok(())
    });
    resizer.join().expect("resizer");
}

#[test]
fn qd128_on_two_queues_with_verification() {
    let s = setup(2);
    add_sub(&s.target, SUB, &[], true);
    s.target
        .add_namespace(SUB, 1, malloc(128 * 1024), UUID1)
        .expect("ns");
    let addr = s.addr;
    let cntlid = Arc::new(AtomicU64::new(0));
    // The admin queue on reactor 0; I/O queues 1 and 2 on reactors 0 and 1.
    let (ctl_tx, ctl_rx) = std::sync::mpsc::channel::<()>();
    let admin = s.engine.reactor(0).spawn({
        let cntlid = cntlid.clone();
        move || async move {
            let c = Controller::connect(addr, SUB, &host(HOST1))
                .await
                .expect("connect");
            c.set_num_queues(2).await.expect("queues");
            cntlid.store(u64::from(c.cntlid), Ordering::SeqCst);
            // Keep the controller alive until both queues are done.
            while ctl_rx.try_recv().is_err() {
                basalt_engine::sleep(Duration::from_millis(20)).await;
            }
            c.disconnect();
        }
    });
    let admin = admin.expect("spawn");
    while cntlid.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let id = cntlid.load(Ordering::SeqCst) as u16;
    let mut handles = Vec::new();
    for qid in 1..=2u16 {
        let h = s
            .engine
            .reactor(usize::from(qid - 1))
            .spawn(move || async move { qd128(addr, id, qid).await });
        handles.push(h.expect("spawn"));
    }
    for h in handles {
        if let Err(m) = h.wait().expect("queue task") {
            panic!("{m}");
        }
    }
    ctl_tx.send(()).expect("release admin");
    admin.wait().expect("admin task");
}

async fn qd128(addr: SocketAddr, cntlid: u16, qid: u16) -> R {
    // A second Controller handle is not needed: connect the I/O queue by hand.
    let cfg = host(HOST1);
    let q = t!(Queue::open(addr, &cfg, qid, 128).await);
    let mut sqe = Sqe::default();
    basalt_nvmf::spec::fabrics::ConnectCmd {
        recfmt: 0,
        qid,
        sqsize: 127,
        cattr: basalt_nvmf::spec::fabrics::CATTR_DISABLE_SQFLOW,
        kato: 0,
    }
    .write(&mut sqe);
    let data = basalt_nvmf::spec::fabrics::ConnectData {
        hostid: cfg.hostid,
        cntlid,
        subnqn: SUB.into(),
        hostnqn: cfg.hostnqn.clone(),
    }
    .encode();
    t!(q.submit(sqe, &data, 0).await.and_then(|c| c.ok()));
    let q = Rc::new(q);
    let ns = NsInfo {
        nsid: 1,
        block_size: 512,
        blocks: 128 * 1024,
    };
    let base = u64::from(qid) * 32 * 1024;
    let mut tasks = Vec::new();
    for i in 0..128u64 {
        let q = q.clone();
        tasks.push(basalt_engine::spawn(async move {
            // Each task owns 32 blocks; 16 KiB writes go through R2T.
            let lba = base + i * 32;
            for round in 0..4u8 {
                let pat: Vec<u8> = (0..16384usize)
                    .map(|j| (j as u8).wrapping_mul(31) ^ (i as u8) ^ round ^ (qid as u8))
                    .collect();
                let mut sqe = Sqe::default();
                sqe.set_opcode(nvm::WRITE);
                sqe.set_nsid(1);
                sqe.set_cdw(10, lba as u32);
                sqe.set_cdw(12, 31);
                q.submit(sqe, &pat, 0)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok()
                    .map_err(|e| e.to_string())?;
                let mut sqe = Sqe::default();
                sqe.set_opcode(nvm::READ);
                sqe.set_nsid(1);
                sqe.set_cdw(10, lba as u32);
                sqe.set_cdw(12, 31);
                let c = q
                    .submit(sqe, &[], 16384)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok()
                    .map_err(|e| e.to_string())?;
                if c.data != pat {
                    return Err(format!("queue {qid} task {i} round {round}: data mismatch"));
                }
            }
            let _ = ns;
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|_| "task cancelled".to_owned())??;
    }
    Ok(())
}

#[test]
fn malformed_pdu_gets_a_termination_request() {
    let s = setup(1);
    add_sub(&s.target, SUB, &[], true);
    let addr = s.addr;
    run(&s, 0, move || async move {
        let cfg = host(HOST1);
        let q = t!(Queue::open(addr, &cfg, 0, 4).await);
        // A capsule response is never valid from a host.
        q.send_raw(&[
            0x05, 0, 24, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]);
        basalt_engine::sleep(Duration::from_millis(200)).await;
        ensure!(q.is_closed());
        // Commands before Connect are refused with a sequence error.
        let q = t!(Queue::open(addr, &cfg, 0, 4).await);
        let mut sqe = Sqe::default();
        sqe.set_opcode(admin::IDENTIFY);
        ensure_eq!(
            status_of(q.submit(sqe, &[], 4096).await),
            Some(StatusCode::CommandSequenceError)
        );
        // Garbage bytes.
        q.send_raw(&[0xEE; 100]);
        basalt_engine::sleep(Duration::from_millis(200)).await;
        ensure!(q.is_closed());
        Ok(())
    });
}

#[test]
fn live_registry_changes() {
    let s = setup(2);
    add_sub(&s.target, SUB, &[HOST1], false);
    s.target
        .add_namespace(SUB, 1, malloc(256), UUID1)
        .expect("ns");
    let addr = s.addr;
    let (tx, rx) = std::sync::mpsc::channel::<u32>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let target = s.target.clone();
    let admin_thread = std::thread::spawn(move || {
        // Step 1: a namespace appears; step 2: it goes; step 3: host access is revoked and
        // the subsystem removed.
        for step in rx {
            match step {
                1 => target
                    .add_namespace(SUB, 2, malloc(128), [2; 16])
                    .expect("add"),
                2 => drop(target.remove_namespace(SUB, 2).expect("remove")),
                3 => {
                    target
                        .set_allowed_hosts(SUB, false, BTreeSet::new())
                        .expect("hosts");
                    target.remove_subsystem(SUB).expect("remove subsystem");
                }
                _ => break,
            }
            done_tx.send(()).expect("ack");
        }
    });
    run(&s, 1, move || async move {
        let c = t!(Controller::connect(addr, SUB, &host(HOST1)).await);
        t!(c.set_features(feature::ASYNC_EVENT_CONFIG, 1 << 8, &[])
            .await
            .and_then(|c| c.ok()));
        let q = t!(c.create_io_queue(1, 8).await);
        // Never block the reactor: poll for the admin thread's acknowledgement.
        let step = async |n: u32| -> R {
            tx.send(n).map_err(e(line!()))?;
            for _ in 0..500 {
                if done_rx.try_recv().is_ok() {
                    return Ok(());
                }
                basalt_engine::sleep(Duration::from_millis(10)).await;
            }
            Err(format!("step {n} not acknowledged"))
        };
        let aq = c.admin_queue();
        let aer = basalt_engine::spawn(async move {
            let mut sqe = Sqe::default();
            sqe.set_opcode(admin::ASYNC_EVENT);
            aq.submit(sqe, &[], 0).await
        });
        basalt_engine::sleep(Duration::from_millis(20)).await;
        step(1).await?;
        let ev = t!(t!(t!(
            basalt_engine::timeout(Duration::from_secs(5), aer).await
        )));
        ensure_eq!(ev.cqe.dw0, 0x0004_0002);
        ensure_eq!(t!(c.active_namespaces(0).await), vec![1, 2]);
        let (ns2, _) = t!(c.identify_namespace(2).await);
        t!(q.write(&ns2, 0, &[5u8; 512], false).await);
        ensure_eq!(t!(q.read(&ns2, 0, 1).await), vec![5u8; 512]);
        step(2).await?;
        ensure_eq!(t!(c.active_namespaces(0).await), vec![1]);
        ensure_eq!(
            q.read(&ns2, 0, 1).await.err().and_then(|e| e.status_code()),
            Some(StatusCode::InvalidNamespace)
        );
        step(3).await?;
        basalt_engine::sleep(Duration::from_millis(400)).await;
        ensure!(c.admin_queue().is_closed());
        ensure!(q.queue().is_closed());
        ensure_eq!(
            Controller::connect(addr, SUB, &host(HOST1))
                .await
                .err()
                .and_then(|e| e.status_code()),
            Some(StatusCode::ConnectInvalidParameters)
        );
        tx.send(0).map_err(e(line!()))?;
        Ok(())
    });
    admin_thread.join().expect("admin thread");
    assert_eq!(s.target.controller_count(), 0);
}

#[test]
fn controller_reset_deletes_io_queues() {
    let s = setup(1);
    add_sub(&s.target, SUB, &[], true);
    s.target
        .add_namespace(SUB, 1, malloc(256), UUID1)
        .expect("ns");
    let addr = s.addr;
    run(&s, 0, move || async move {
        let c = t!(Controller::connect(addr, SUB, &host(HOST1)).await);
        let (ns, _) = t!(c.identify_namespace(1).await);
        let q = t!(c.create_io_queue(1, 8).await);
        t!(q.read(&ns, 0, 1).await);
        let cc = t!(c.property_get(0x14, false).await);
        t!(c.property_set(0x14, cc & !1, false).await);
        ensure_eq!(t!(c.property_get(0x1C, false).await) & 1, 0);
        basalt_engine::sleep(Duration::from_millis(300)).await;
        ensure!(q.queue().is_closed());
        // Admin commands other than fabrics need an enabled controller.
        ensure_eq!(
            status_of(c.identify_raw(identify::CNS_CONTROLLER, 0).await),
            Some(StatusCode::CommandSequenceError)
        );
        // An I/O queue cannot connect to a disabled controller.
        ensure_eq!(
            c.create_io_queue(1, 8)
                .await
                .err()
                .and_then(|e| e.status_code()),
            Some(StatusCode::ConnectInvalidParameters)
        );
        t!(c.property_set(0x14, cc, false).await);
        let q = t!(c.create_io_queue(1, 8).await);
        t!(q.read(&ns, 0, 1).await);
        Ok(())
    });
}
