//! The control plane's core against real datapath processes: two `basalt datapath` nodes, each
//! with its own pool file, iSCSI portal and admin socket; the metadata store in a SQLite file;
//! the scheduler and the volume managers in this process (or, for the crash test, in a child
//! process that is killed).
#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test crate

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_db::{ListQuery, MetadataStore, NewSnapshot, NewVolume, SqliteStore, new_uuid};
use basalt_manager::{AdminSocket, Control, Datapath, NodeConfig, RingDatapath, VolumeManager};
use basalt_scheduler::SchedulerConfig;
use basalt_tests::iscsi::Initiator;
use basalt_tests::{Daemon, bin};
use serde_json::json;

const INITIATOR: &str = "iqn.1994-05.com.redhat:compute-1";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One datapath node.
struct Node {
    name: String,
    dir: PathBuf,
    port: u16,
    daemon: Option<Daemon>,
}

impl Node {
    fn new(root: &Path, name: &str, pool_bytes: u64) -> Node {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::File::create(dir.join("pool.img"))
            .expect("pool")
            .set_len(pool_bytes)
            .expect("size");
        // A blank device for stores made on the running datapath.
        std::fs::File::create(dir.join("spare.img"))
            .expect("spare")
            .set_len(256 << 20)
            .expect("size");
        let port = free_port();
        let conf = format!(
            r#"[engine]
cores = 1
pin = false

[[bdev]]
module = "uring"
name = "pool0"
path = "{d}/pool.img"

[[bdev]]
module = "uring"
name = "spare0"
path = "{d}/spare.img"

[[lvs]]
bdev = "pool0"
name = "pool"
create = true
cluster_size = "256K"

[iscsi]
listen = ["127.0.0.1:{port}"]

[admin]
socket = "{d}/datapath.sock"

[ring]
socket = "{d}/ring.sock"
"#,
            d = dir.display()
        );
        std::fs::write(dir.join("datapath.toml"), conf).expect("config");
        let mut n = Node {
            name: name.to_owned(),
            dir,
            port,
            daemon: None,
        };
        n.start();
        n
    }

    fn start(&mut self) {
        let mut cmd = Command::new(bin("basalt"));
        cmd.args(["datapath", "--config"])
            .arg(self.dir.join("datapath.toml"));
        let mut d = Daemon::spawn(cmd);
        d.wait_for("ring socket listening", Duration::from_secs(60));
        self.daemon = Some(d);
    }

    fn kill9(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop(rustix::process::Signal::KILL);
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("datapath.sock")
    }

    fn dp(&self) -> AdminSocket {
        AdminSocket::new(&self.socket(), Duration::from_secs(30))
    }

    fn config(&self) -> NodeConfig {
        NodeConfig {
            host: self.name.clone(),
            backend: "basalt".into(),
            availability_zone: "nova".into(),
            lvs: "pool".into(),
            reserved_percentage: 0.0,
            max_over_subscription_ratio: 20.0,
            iscsi_portal: Some(format!("127.0.0.1:{}", self.port)),
            nvmf_portal: None,
            nbd_portal: None,
        }
    }

    /// The node's volume manager, over the rings (the admin socket is the tests' own view).
    fn manager(&self, db: &Arc<dyn MetadataStore>) -> VolumeManager {
        VolumeManager::new(
            self.config(),
            db.clone(),
            Arc::new(RingDatapath::new(&self.ring(), Duration::from_secs(30))),
        )
    }

    fn ring(&self) -> PathBuf {
        self.dir.join("ring.sock")
    }

    /// The datapath's volume and snapshot names with their sizes.
    fn volumes(&self) -> Vec<(String, u64, bool)> {
        let a = self
            .dp()
            .call(&json!({"op": "volume_list", "lvs": "pool"}))
            .expect("volume_list");
        a["volumes"]
            .as_array()
            .expect("list")
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().expect("name").to_owned(),
                    v["size"].as_u64().expect("size"),
                    v["snapshot"].as_bool().expect("snapshot"),
                )
            })
            .collect()
    }

    fn has(&self, name: &str) -> bool {
        self.volumes().iter().any(|(n, _, _)| n == name)
    }
}

fn new_volume(size: u64) -> NewVolume {
    NewVolume {
        id: new_uuid().expect("uuid"),
        project_id: "demo".into(),
        user_id: "alice".into(),
        size_gb: size,
        availability_zone: "nova".into(),
        use_quota: true,
        ..NewVolume::default()
    }
}

fn control(db: &Arc<dyn MetadataStore>, nodes: &[&Node], down_after: Duration) -> Control {
    let c = Control::new(
        db.clone(),
        SchedulerConfig {
            service_down_time: down_after,
            ..SchedulerConfig::default()
        },
    );
    for n in nodes {
        c.add_node(n.manager(db));
    }
    c
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn login(node: &Node, e: &basalt_db::Export) -> Initiator {
    let chap = e.chap_user.as_deref().zip(e.chap_secret.as_deref());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], node.port));
    let mut i = match Initiator::login(addr, INITIATOR, &e.target, chap, 1) {
        Ok(i) => i,
        Err(e) => panic!("login failed: {e:?}"),
    };
    i.clear_unit_attentions(0).expect("TUR");
    i
}

#[test]
fn operations_land_on_the_datapath_and_data_follows_snapshots() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = Node::new(tmp.path(), "node1", 8 << 30);
    let db: Arc<dyn MetadataStore> =
        Arc::new(SqliteStore::open(&tmp.path().join("basalt.db")).expect("db"));
    let c = control(&db, &[&node], Duration::from_secs(60));
    let now = Instant::now();
    assert_eq!(c.refresh(now), ["node1"]);
    let pools = c.scheduler().pools(now);
    assert_eq!(pools.len(), 1);
    assert!(pools[0].pool.total_capacity_gb.gb().expect("gb") > 7.0);

    // Create.
    let v = c.create_volume(&new_volume(2), now).expect("create");
    assert_eq!(v.status, "available", "{:?}", v.user_message);
    assert_eq!(v.host.as_deref(), Some("node1@basalt#pool"));
    let vname = format!("volume-{}", v.id);
    assert!(node.volumes().contains(&(vname.clone(), 2 << 30, false)));

    // Export with CHAP and write a pattern.
    let e = c.export_volume(&v.id, "iscsi", INITIATOR).expect("export");
    assert!(e.target.ends_with(&v.id));
    let mut i = login(&node, &e);
    let a = pattern(1, 64 * 1024);
    assert_eq!(i.write16(0, 0, &a).expect("write").status, 0);

    // Snapshot, then overwrite.
    let s = c
        .create_snapshot(&NewSnapshot {
            id: new_uuid().expect("uuid"),
            project_id: "demo".into(),
            user_id: "alice".into(),
            volume_id: v.id.clone(),
            use_quota: true,
            ..NewSnapshot::default()
        })
        .expect("snapshot");
    assert_eq!(s.status, "available");
    assert!(node.has(&format!("snapshot-{}", s.id)));
    let b = pattern(2, 64 * 1024);
    assert_eq!(i.write16(0, 0, &b).expect("write").status, 0);
    // The datapath counted both writes of the volume (and the initiator's reads, if any).
    let st = c.volume_stats(&v.id).expect("stats");
    assert!(st["writes"].as_u64().expect("writes") >= 2, "{st}");
    assert!(
        st["write_bytes"].as_u64().expect("bytes") >= 128 * 1024,
        "{st}"
    );

    // A volume from the snapshot holds the old bytes; a clone of the volume the new ones.
    let mut from_snap = new_volume(3);
    from_snap.snapshot_id = Some(s.id.clone());
    let fs = c.create_volume(&from_snap, now).expect("from snapshot");
    assert_eq!(fs.status, "available", "{:?}", fs.user_message);
    let mut clone = new_volume(2);
    clone.source_volid = Some(v.id.clone());
    let cl = c.create_volume(&clone, now).expect("clone");
    assert_eq!(cl.status, "available", "{:?}", cl.user_message);
    assert!(
        node.volumes()
            .contains(&(format!("volume-{}", fs.id), 3 << 30, false))
    );
    // The clone's temporary snapshot is gone.
    assert!(
        !node
            .volumes()
            .iter()
            .any(|(n, _, _)| n.starts_with("clonesrc-"))
    );
    for (vol, want) in [(&fs, &a), (&cl, &b)] {
        let e = c
            .export_volume(&vol.id, "iscsi", INITIATOR)
            .expect("export");
        let mut j = login(&node, &e);
        let r = j.read16(0, 0, 128).expect("read");
        assert_eq!(r.status, 0);
        assert_eq!(&r.data, want, "volume {}", vol.id);
        j.logout().expect("logout");
        c.unexport_volume(&vol.id, "iscsi", INITIATOR)
            .expect("unexport");
    }

    // Revert needs the volume unexported (the store refuses to revert an open volume).
    i.logout().expect("logout");
    c.unexport_volume(&v.id, "iscsi", INITIATOR)
        .expect("unexport");
    let rv = c.revert_volume(&v.id, &s.id).expect("revert");
    assert_eq!(rv.status, "available");
    let e = c
        .export_volume(&v.id, "iscsi", INITIATOR)
        .expect("export again");
    let mut i = login(&node, &e);
    assert_eq!(i.read16(0, 0, 128).expect("read").data, a);

    // Extend while exported: the initiator sees the new capacity.
    let x = c.extend_volume(&v.id, 4, now).expect("extend");
    assert_eq!((x.size_gb, x.status.as_str()), (4, "available"));
    assert!(node.volumes().contains(&(vname.clone(), 4 << 30, false)));
    i.logout().expect("logout");

    // Quota: the project has 1000 GB by default; 10 volumes. Over quota is refused whole.
    db.set_quota_limit("demo", "gigabytes", 12).expect("limit");
    assert!(c.create_volume(&new_volume(5), now).is_err());
    assert_eq!(
        db.list_volumes(&ListQuery::project("demo"))
            .expect("list")
            .count,
        3
    );

    // Delete: refused with a snapshot; then snapshot, volumes and exports go.
    assert!(c.delete_volume(&v.id).is_err());
    c.delete_snapshot(&s.id).expect("delete snapshot");
    assert!(!node.has(&format!("snapshot-{}", s.id)));
    // The volume made from the deleted snapshot keeps its data.
    let e = c.export_volume(&fs.id, "iscsi", INITIATOR).expect("export");
    let mut j = login(&node, &e);
    assert_eq!(j.read16(0, 0, 128).expect("read").data, a);
    j.logout().expect("logout");
    for id in [&v.id, &fs.id, &cl.id] {
        c.delete_volume(id).expect("delete");
    }
    assert!(node.volumes().is_empty(), "{:?}", node.volumes());
    let targets = node
        .dp()
        .call(&json!({"op": "iscsi_target_list"}))
        .expect("targets");
    assert_eq!(targets["targets"].as_array().expect("list").len(), 0);
    let u = db.quota_usage("demo").expect("usage");
    assert_eq!((u["volumes"].in_use, u["gigabytes"].in_use), (0, 0));
}

#[test]
fn volumes_spread_over_two_nodes_and_avoid_a_stopped_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut n1 = Node::new(tmp.path(), "node1", 4 << 30);
    let n2 = Node::new(tmp.path(), "node2", 4 << 30);
    let db: Arc<dyn MetadataStore> =
        Arc::new(SqliteStore::open(&tmp.path().join("basalt.db")).expect("db"));
    let down_after = Duration::from_secs(5);
    let c = control(&db, &[&n1, &n2], down_after);
    let t0 = Instant::now();
    assert_eq!(c.refresh(t0).len(), 2);
    let mut hosts = Vec::new();
    for _ in 0..4 {
        let v = c.create_volume(&new_volume(1), t0).expect("create");
        assert_eq!(v.status, "available");
        hosts.push(v.host.expect("placed"));
    }
    hosts.sort();
    assert_eq!(
        hosts,
        [
            "node1@basalt#pool",
            "node1@basalt#pool",
            "node2@basalt#pool",
            "node2@basalt#pool"
        ]
    );
    assert_eq!(n1.volumes().len(), 2);
    assert_eq!(n2.volumes().len(), 2);

    // Node 1 stops. Before the scheduler notices, a create that lands there is rescheduled
    // to node 2 (the datapath is unreachable).
    n1.kill9();
    for _ in 0..2 {
        let v = c.create_volume(&new_volume(1), t0).expect("create");
        assert_eq!(v.status, "available", "{:?}", v.user_message);
        assert_eq!(v.host.as_deref(), Some("node2@basalt#pool"));
    }
    // Once it has been silent for service_down_time, it is not scheduled on at all.
    let later = t0 + down_after + Duration::from_secs(1);
    assert_eq!(c.refresh(later), ["node2"]);
    assert!(!c.scheduler().is_up("node1", later));
    for _ in 0..2 {
        let v = c.create_volume(&new_volume(1), later).expect("create");
        assert_eq!(v.host.as_deref(), Some("node2@basalt#pool"));
    }
    assert_eq!(n2.volumes().len(), 6);
    // Node 1 comes back with its volumes (the store is crash-safe) and is scheduled on again.
    n1.start();
    assert_eq!(n1.volumes().len(), 2);
    let back = later + Duration::from_secs(1);
    assert_eq!(c.refresh(back).len(), 2);
    let v = c.create_volume(&new_volume(1), back).expect("create");
    assert_eq!(v.host.as_deref(), Some("node1@basalt#pool"));
}

#[test]
fn a_killed_datapath_gets_its_exports_back_and_interrupted_operations_finish() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut node = Node::new(tmp.path(), "node1", 4 << 30);
    let db: Arc<dyn MetadataStore> =
        Arc::new(SqliteStore::open(&tmp.path().join("basalt.db")).expect("db"));
    let c = control(&db, &[&node], Duration::from_secs(60));
    let now = Instant::now();
    c.refresh(now);
    let v = c.create_volume(&new_volume(1), now).expect("create");
    let e = c.export_volume(&v.id, "iscsi", INITIATOR).expect("export");
    let mut i = login(&node, &e);
    let data = pattern(7, 32 * 1024);
    assert_eq!(i.write16(0, 8, &data).expect("write").status, 0);
    // SYNCHRONIZE CACHE(10): the write is durable before the crash.
    let sync = [0x35u8, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(i.command(0, &sync, 0, &[]).expect("sync").status, 0);

    // Operations interrupted by the crash: a delete and an extend in flight, as a control
    // plane that died between its database step and the datapath's answer leaves them.
    let doomed = c.create_volume(&new_volume(1), now).expect("create");
    db.update_volume(
        &doomed.id,
        &["available"],
        &basalt_db::VolumeChange {
            status: Some("deleting".into()),
            ..Default::default()
        },
    )
    .expect("deleting");
    let grown = c.create_volume(&new_volume(1), now).expect("create");
    db.begin_extend(&grown.id, &["available"], 3)
        .expect("extending");
    // A create scheduled but never sent.
    let mut pending = new_volume(2);
    pending.id = new_uuid().expect("uuid");
    db.create_volume(&pending).expect("row");
    db.update_volume(
        &pending.id,
        &["creating"],
        &basalt_db::VolumeChange {
            host: Some(Some("node1@basalt#pool".into())),
            ..Default::default()
        },
    )
    .expect("placed");

    node.kill9();
    drop(i);
    node.start();
    // The restarted datapath serves no live-added export.
    let t = node
        .dp()
        .call(&json!({"op": "iscsi_target_list"}))
        .expect("targets");
    assert!(t["targets"].as_array().expect("list").is_empty());

    // A fresh control plane (as after its own restart) recovers.
    let c2 = control(&db, &[&node], Duration::from_secs(60));
    assert_eq!(c2.recover(), 3);
    for (id, status, size) in [
        (&grown.id, "available", 3u64),
        (&pending.id, "available", 2),
    ] {
        let v = db.get_volume(id).expect("volume");
        assert_eq!((v.status.as_str(), v.size_gb), (status, size), "{id}");
        assert!(
            node.volumes()
                .contains(&(format!("volume-{id}"), size << 30, false))
        );
    }
    assert!(db.get_volume(&doomed.id).is_err());
    assert!(!node.has(&format!("volume-{}", doomed.id)));
    let stuck = db
        .list_volumes(&ListQuery::default())
        .expect("list")
        .items
        .into_iter()
        .filter(|v| !["available", "in-use", "error"].contains(&v.status.as_str()))
        .count();
    assert_eq!(stuck, 0);
    // The export is back, with the same credentials, and the data survived.
    let mut i = login(&node, &e);
    let r = i.read16(0, 8, 64).expect("read");
    assert_eq!(r.data, data);
    i.logout().expect("logout");
    // Reconciling again changes nothing; a stray Basalt target is removed. (The datapath
    // serves one control plane's rings at a time: c2 leaves first.)
    drop(c2);
    let m = node.manager(&db);
    assert_eq!(m.reconcile_exports().expect("reconcile"), (0, 0));
    node.dp()
        .call(
            &json!({"op": "iscsi_target_add", "name": "iqn.2026-11.org.basalt:volume-stray",
            "lun": [{"lun": 0, "volume": format!("pool/volume-{}", v.id)}]}),
        )
        .expect("stray");
    assert_eq!(m.reconcile_exports().expect("reconcile"), (0, 1));
}

/// The child side of [`a_control_plane_killed_mid_operation_recovers`]: runs create,
/// snapshot, extend and delete in a loop against the node until killed.
#[test]
fn control_child() {
    let Ok(dir) = std::env::var("BASALT_CONTROL_CHILD") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let db: Arc<dyn MetadataStore> =
        Arc::new(SqliteStore::open(&dir.join("basalt.db")).expect("db"));
    db.set_quota_limit("demo", "volumes", -1).expect("limit");
    db.set_quota_limit("demo", "snapshots", -1).expect("limit");
    db.set_quota_limit("demo", "gigabytes", -1).expect("limit");
    let node = NodeConfig {
        host: "node1".into(),
        backend: "basalt".into(),
        availability_zone: "nova".into(),
        lvs: "pool".into(),
        reserved_percentage: 0.0,
        max_over_subscription_ratio: 20.0,
        iscsi_portal: Some("127.0.0.1:1".into()),
        nvmf_portal: None,
        nbd_portal: None,
    };
    let sock = std::env::var("BASALT_CONTROL_SOCKET").expect("socket");
    let c = Control::new(db.clone(), SchedulerConfig::default());
    c.add_node(VolumeManager::new(
        node,
        db.clone(),
        Arc::new(RingDatapath::new(Path::new(&sock), Duration::from_secs(30))),
    ));
    let now = Instant::now();
    c.refresh(now);
    let mut n = 0u64;
    loop {
        let v = c.create_volume(&new_volume(1), now).expect("create");
        let s = c
            .create_snapshot(&NewSnapshot {
                id: new_uuid().expect("uuid"),
                project_id: "demo".into(),
                user_id: "alice".into(),
                volume_id: v.id.clone(),
                use_quota: true,
                ..NewSnapshot::default()
            })
            .expect("snapshot");
        c.extend_volume(&v.id, 2, now).expect("extend");
        if n.is_multiple_of(2) {
            c.delete_snapshot(&s.id).expect("delete snapshot");
            c.delete_volume(&v.id).expect("delete");
        }
        n += 1;
        println!("ROUND {n}");
    }
}

#[test]
fn a_control_plane_killed_mid_operation_recovers() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().expect("tmp");
    let node = Node::new(tmp.path(), "node1", 16 << 30);
    let mut recovered = 0;
    for round in 0..4u64 {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "control_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("BASALT_CONTROL_CHILD", tmp.path())
            .env("BASALT_CONTROL_SOCKET", node.ring())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("child");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        // Let it finish a few rounds, then kill it at a moment that differs by round.
        let want = 1 + round;
        let mut seen = 0;
        while seen < want {
            let l = lines.next().expect("child ended").expect("line");
            if l.starts_with("ROUND") {
                seen += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(7 * round + 3));
        child.kill().expect("kill -9");
        let _ = child.wait();

        let db: Arc<dyn MetadataStore> =
            Arc::new(SqliteStore::open(&tmp.path().join("basalt.db")).expect("db"));
        let c = control(&db, &[&node], Duration::from_secs(60));
        let touched = c.recover();
        eprintln!("round {round}: recovery finished or undid {touched} operation(s)");
        recovered += touched;
        let vols = db.list_volumes(&ListQuery::default()).expect("list").items;
        let snaps = db
            .list_snapshots(&ListQuery::default())
            .expect("list")
            .items;
        for v in &vols {
            assert!(
                ["available", "error"].contains(&v.status.as_str()),
                "round {round}: volume {} left {}",
                v.id,
                v.status
            );
            if v.status == "available" {
                assert!(
                    node.volumes()
                        .contains(&(format!("volume-{}", v.id), v.size_gb << 30, false)),
                    "round {round}: volume {} missing or wrong size on the datapath",
                    v.id
                );
            }
        }
        for s in &snaps {
            assert!(
                ["available", "error"].contains(&s.status.as_str()),
                "round {round}: snapshot {} left {}",
                s.id,
                s.status
            );
        }
        // Nothing on the datapath that the database does not know.
        for (name, _, _) in node.volumes() {
            let known = vols.iter().any(|v| name == format!("volume-{}", v.id))
                || snaps.iter().any(|s| name == format!("snapshot-{}", s.id));
            assert!(known, "round {round}: orphan {name} on the datapath");
        }
        let store = SqliteStore::open(&tmp.path().join("basalt.db")).expect("db");
        assert!(store.audit_usage("demo").expect("audit").is_empty());
        assert!(!vols.is_empty());
    }
    eprintln!("{recovered} interrupted operation(s) recovered over 4 kills");
}

#[test]
fn ring_requests_fail_fast_when_the_datapath_dies_and_resume_after_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut node = Node::new(tmp.path(), "node1", 2 << 30);
    let ring = RingDatapath::new(&node.ring(), Duration::from_secs(10));
    assert_eq!(ring.call(&json!({"op": "ping"})).expect("ping")["ok"], true);
    assert_eq!(ring.stats().epoch, 1);
    // Requests that do not fit one frame come back through a data slot.
    for i in 0..60 {
        ring.call(&json!({"op": "volume_create", "lvs": "pool", "name": format!("a-rather-long-volume-name-for-listing-{i:04}"), "size": 1 << 20}))
            .expect("create");
    }
    let list = ring
        .call(&json!({"op": "volume_list", "lvs": "pool"}))
        .expect("list");
    assert_eq!(list["volumes"].as_array().expect("volumes").len(), 60);
    assert!(
        list.to_string().len() > 4096,
        "the listing must need the slot"
    );
    // Refusals keep their code.
    let e = ring
        .call(&json!({"op": "volume_delete", "lvs": "pool", "name": "nope"}))
        .expect_err("no such volume");
    assert!(e.is_not_found(), "{e}");
    let e = ring
        .call(&json!({"op": "no_such_op"}))
        .expect_err("bad request");
    assert!(e.to_string().contains("bad_request"), "{e}");

    // Volume data comes through the data slot: write a pattern over iSCSI, read it back.
    ring.call(&json!({"op": "volume_create", "lvs": "pool", "name": "data", "size": 8 << 20}))
        .expect("create");
    node.dp()
        .call(
            &json!({"op": "iscsi_target_add", "name": "iqn.2026-11.org.basalt:data",
            "lun": [{"lun": 0, "volume": "pool/data"}]}),
        )
        .expect("export");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], node.port));
    let mut i = match Initiator::login(addr, INITIATOR, "iqn.2026-11.org.basalt:data", None, 1) {
        Ok(i) => i,
        Err(e) => panic!("login: {e:?}"),
    };
    i.clear_unit_attentions(0).expect("TUR");
    let want = pattern(9, 256 * 1024);
    assert_eq!(i.write16(0, 2048, &want).expect("write").status, 0);
    // SYNCHRONIZE CACHE(10): durable before the crash below (a volume is a disk with a
    // volatile write cache).
    let sync = [0x35u8, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(i.command(0, &sync, 0, &[]).expect("sync").status, 0);
    i.logout().expect("logout");
    let mut got = Vec::new();
    ring.read_volume("pool", "data", 2048 * 512, 256 * 1024, &mut got)
        .expect("read");
    assert!(got == want, "read back other bytes than written");
    assert!(
        ring.read_volume("pool", "data", 1, 512, &mut got).is_err(),
        "misaligned"
    );
    assert!(
        ring.read_volume("pool", "data", 8 << 20, 4096, &mut got)
            .is_err(),
        "past the end"
    );
    assert!(
        ring.read_volume("pool", "data", 0, ring.slot_size() + 4096, &mut got)
            .is_err(),
        "larger than the slot"
    );

    // A second store, made on the running datapath; asking again is harmless, a device or a
    // name in use is refused.
    let add = json!({"op": "lvs_add", "bdev": "spare0", "name": "second", "create": true});
    ring.call(&add).expect("lvs_add");
    ring.call(&add).expect("lvs_add again");
    assert!(
        ring.call(&json!({"op": "lvs_add", "bdev": "spare0", "name": "third", "create": true}))
            .is_err()
    );
    assert!(
        ring.call(&json!({"op": "lvs_add", "bdev": "pool0", "name": "second"}))
            .is_err()
    );
    let stores = ring.call(&json!({"op": "lvs_list"})).expect("lvs_list");
    let stores = stores["stores"].as_array().expect("stores");
    assert_eq!(stores.len(), 2);
    assert!(
        stores
            .iter()
            .any(|s| s["name"] == "second" && s["bdev"] == "spare0"),
        "{stores:?}"
    );
    // Filling it raises an event on the events ring; emptying it another.
    let events_for = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            ring.call(&json!({"op": "ping"})).expect("ping");
            let evs = ring.take_events();
            if let Some(e) = evs
                .iter()
                .find(|e| e["event"] == want && e["lvs"] == "second")
            {
                return e.clone();
            }
            assert!(Instant::now() < deadline, "no {want} event");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let free = stores
        .iter()
        .find(|s| s["name"] == "second")
        .expect("second")["free_bytes"]
        .as_u64()
        .expect("free");
    let big = free / (1 << 20) * (1 << 20) - (4 << 20);
    ring.call(
        &json!({"op": "volume_create", "lvs": "second", "name": "big", "size": big, "thick": true}),
    )
    .expect("thick volume");
    let e = events_for("store_nearly_full");
    assert!(e["free_bytes"].as_u64().expect("free") < free / 10, "{e}");
    ring.call(&json!({"op": "volume_delete", "lvs": "second", "name": "big"}))
        .expect("delete");
    events_for("store_space_ok");

    // Kill the datapath: the next request fails within a bounded time, not at the deadline.
    node.kill9();
    let t = Instant::now();
    let e = ring
        .call(&json!({"op": "ping"}))
        .expect_err("datapath gone");
    assert!(matches!(e, basalt_manager::DpError::Unreachable(_)), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    // Restarted: a new pairing with the next epoch, and the volumes are still there.
    node.start();
    assert_eq!(ring.call(&json!({"op": "ping"})).expect("ping")["ok"], true);
    assert!(ring.stats().epoch >= 2);
    let list = ring
        .call(&json!({"op": "volume_list", "lvs": "pool"}))
        .expect("list");
    assert_eq!(list["volumes"].as_array().expect("volumes").len(), 61);
    // And the data.
    ring.read_volume("pool", "data", 2048 * 512, 256 * 1024, &mut got)
        .expect("read");
    assert!(got == want, "the synced data did not survive the restart");
}
