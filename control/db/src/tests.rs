use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

fn store() -> SqliteStore {
    SqliteStore::in_memory().expect("store")
}

fn new_vol(project: &str, size: u64) -> NewVolume {
    NewVolume {
        id: new_uuid().expect("uuid"),
        project_id: project.to_owned(),
        user_id: "u".to_owned(),
        size_gb: size,
        availability_zone: "nova".to_owned(),
        use_quota: true,
        ..NewVolume::default()
    }
}

fn used(s: &SqliteStore, project: &str, resource: &str) -> (i64, i64) {
    let u = s.quota_usage(project).expect("usage")[resource];
    (u.in_use, u.reserved)
}

fn to(status: &str) -> VolumeChange {
    VolumeChange {
        status: Some(status.to_owned()),
        ..VolumeChange::default()
    }
}

#[test]
fn a_volume_charges_its_quota_and_gives_it_back() {
    let s = store();
    let mut nv = new_vol("p1", 5);
    nv.name = Some("v1".into());
    nv.metadata.insert("k".into(), "v".into());
    let v = s.create_volume(&nv).expect("created");
    assert_eq!(
        (v.status.as_str(), v.attach_status.as_str()),
        ("creating", "detached")
    );
    assert_eq!(v.metadata["k"], "v");
    assert_eq!(used(&s, "p1", "volumes"), (1, 0));
    assert_eq!(used(&s, "p1", "gigabytes"), (5, 0));
    assert_eq!(used(&s, "p2", "volumes"), (0, 0));

    // Compare-and-swap: only from the expected state.
    let v = s
        .update_volume(&v.id, &["creating"], &to("available"))
        .expect("creating -> available");
    assert_eq!(v.status, "available");
    assert!(v.updated_at.is_some());
    match s.update_volume(&v.id, &["creating"], &to("error")) {
        Err(DbError::Conflict {
            current, expected, ..
        }) => {
            assert_eq!(
                (current.as_str(), expected.as_str()),
                ("available", "creating")
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        s.destroy_volume(&v.id, &["error"]),
        Err(DbError::Conflict { .. })
    ));
    let gone = s
        .destroy_volume(&v.id, &["available", "error"])
        .expect("destroyed");
    assert_eq!(gone.status, "deleted");
    assert!(matches!(s.get_volume(&v.id), Err(DbError::NotFound { .. })));
    assert_eq!(used(&s, "p1", "volumes"), (0, 0));
    assert_eq!(used(&s, "p1", "gigabytes"), (0, 0));
    assert!(s.audit_usage("p1").expect("audit").is_empty());
    // The id stays taken.
    assert!(matches!(
        s.create_volume(&nv),
        Err(DbError::Duplicate { .. })
    ));
}

#[test]
fn quotas_refuse_the_volume_that_does_not_fit_and_create_nothing() {
    let s = store();
    for _ in 0..10 {
        s.create_volume(&new_vol("p", 1)).expect("within quota");
    }
    match s.create_volume(&new_vol("p", 1)) {
        Err(DbError::OverQuota {
            resource,
            limit,
            in_use,
            ..
        }) => {
            assert_eq!((resource.as_str(), limit, in_use), ("volumes", 10, 10));
        }
        other => panic!("expected over quota, got {other:?}"),
    }
    assert_eq!(
        s.list_volumes(&ListQuery::project("p"))
            .expect("list")
            .count,
        10
    );
    // Gigabytes.
    s.set_quota_limit("q", "gigabytes", 100).expect("limit");
    s.create_volume(&new_vol("q", 60)).expect("fits");
    let e = s.create_volume(&new_vol("q", 41)).expect_err("over");
    assert!(e.to_string().contains("gigabytes"), "{e}");
    s.create_volume(&new_vol("q", 40)).expect("fits exactly");
    // Per-volume limit.
    s.set_default_quota("per_volume_gigabytes", 50)
        .expect("default");
    let e = s.create_volume(&new_vol("r", 51)).expect_err("too big");
    assert!(e.to_string().contains("per_volume_gigabytes"), "{e}");
    // Internal volumes do not count.
    let mut internal = new_vol("p", 1);
    internal.use_quota = false;
    s.create_volume(&internal).expect("not counted");
    assert_eq!(used(&s, "p", "volumes"), (10, 0));
    // Limits cannot go below usage; -1 is unlimited.
    assert!(matches!(
        s.set_quota_limit("p", "volumes", 9),
        Err(DbError::Invalid(_))
    ));
    assert!(matches!(
        s.set_quota_limit("p", "volumes", -2),
        Err(DbError::Invalid(_))
    ));
    s.set_quota_limit("p", "volumes", -1).expect("unlimited");
    s.create_volume(&new_vol("p", 1)).expect("unlimited now");
    s.delete_project_quotas("p").expect("reset");
    assert_eq!(s.quota_usage("p").expect("usage")["volumes"].limit, 10);
    for p in ["p", "q", "r"] {
        assert!(s.audit_usage(p).expect("audit").is_empty(), "{p}");
    }
}

#[test]
fn racing_creates_never_exceed_the_quota() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Arc::new(SqliteStore::open(&dir.path().join("basalt.db")).expect("open"));
    s.set_quota_limit("p", "volumes", 25).expect("limit");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut ok = 0;
                for _ in 0..20 {
                    match s.create_volume(&new_vol("p", 1)) {
                        Ok(_) => ok += 1,
                        Err(DbError::OverQuota { .. }) => {}
                        Err(e) => panic!("unexpected: {e}"),
                    }
                }
                ok
            })
        })
        .collect();
    let total: i32 = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    assert_eq!(total, 25);
    assert_eq!(used(&s, "p", "volumes"), (25, 0));
    assert!(s.audit_usage("p").expect("audit").is_empty());
}

#[test]
fn extends_reserve_then_commit_or_roll_back() {
    let s = store();
    s.set_quota_limit("p", "gigabytes", 20).expect("limit");
    let v = s.create_volume(&new_vol("p", 5)).expect("created");
    s.update_volume(&v.id, &[], &to("available"))
        .expect("available");
    assert!(matches!(
        s.begin_extend(&v.id, &["available"], 5),
        Err(DbError::Invalid(_))
    ));
    assert!(matches!(
        s.begin_extend(&v.id, &["available"], 26),
        Err(DbError::OverQuota { .. })
    ));
    assert_eq!(s.pending_extend(&v.id).expect("pending"), None);
    let r = s.begin_extend(&v.id, &["available"], 15).expect("reserved");
    assert_eq!(s.get_volume(&v.id).expect("get").status, "extending");
    assert_eq!(
        s.pending_extend(&v.id).expect("pending"),
        Some((r.clone(), 15))
    );
    assert_eq!(used(&s, "p", "gigabytes"), (5, 10));
    // The reservation counts against new volumes.
    assert!(s.create_volume(&new_vol("p", 6)).is_err());
    // A second extend cannot start.
    assert!(matches!(
        s.begin_extend(&v.id, &["available"], 16),
        Err(DbError::Conflict { .. })
    ));
    let v2 = s
        .finish_extend(&v.id, &r, Some(15), "available")
        .expect("done");
    assert_eq!((v2.size_gb, v2.status.as_str()), (15, "available"));
    assert_eq!(s.pending_extend(&v.id).expect("pending"), None);
    assert_eq!(used(&s, "p", "gigabytes"), (15, 0));
    // A failed extend gives the reservation back.
    let r = s.begin_extend(&v.id, &["available"], 20).expect("reserved");
    let v3 = s
        .finish_extend(&v.id, &r, None, "error_extending")
        .expect("failed");
    assert_eq!((v3.size_gb, v3.status.as_str()), (15, "error_extending"));
    assert_eq!(used(&s, "p", "gigabytes"), (15, 0));
    // A reservation left behind (the manager died) expires.
    s.update_volume(&v.id, &[], &to("available"))
        .expect("reset");
    let r = s.begin_extend(&v.id, &["available"], 18).expect("reserved");
    assert_eq!(s.expire_reservations(Timestamp::now()).expect("sweep"), 0);
    assert_eq!(
        s.expire_reservations(Timestamp::now().plus_secs(2 * 86_400))
            .expect("sweep"),
        1
    );
    assert_eq!(used(&s, "p", "gigabytes"), (15, 0));
    // ... and if the extend finishes after all, the growth is charged anyway.
    s.finish_extend(&v.id, &r, Some(18), "available")
        .expect("late finish");
    assert_eq!(used(&s, "p", "gigabytes"), (18, 0));
    assert!(s.audit_usage("p").expect("audit").is_empty());
}

#[test]
fn snapshots_need_their_volume_and_hold_it() {
    let s = store();
    let v = s.create_volume(&new_vol("p", 3)).expect("created");
    let ns = NewSnapshot {
        id: new_uuid().expect("uuid"),
        project_id: "p".into(),
        user_id: "u".into(),
        volume_id: v.id.clone(),
        use_quota: true,
        ..NewSnapshot::default()
    };
    assert!(matches!(
        s.create_snapshot(&ns, &["available"]),
        Err(DbError::Conflict { .. })
    ));
    s.update_volume(&v.id, &[], &to("available"))
        .expect("available");
    // Another project's volume is invisible.
    let mut foreign = ns.clone();
    foreign.project_id = "other".into();
    assert!(matches!(
        s.create_snapshot(&foreign, &["available"]),
        Err(DbError::NotFound { .. })
    ));
    let snap = s.create_snapshot(&ns, &["available"]).expect("snapshot");
    assert_eq!((snap.size_gb, snap.status.as_str()), (3, "creating"));
    assert_eq!(used(&s, "p", "snapshots"), (1, 0));
    assert_eq!(used(&s, "p", "gigabytes"), (6, 0));
    let e = s.destroy_volume(&v.id, &[]).expect_err("has a snapshot");
    assert!(matches!(e, DbError::InUse { .. }), "{e}");
    let snap = s
        .update_snapshot(
            &snap.id,
            &["creating"],
            &SnapshotChange {
                status: Some("available".into()),
                progress: Some("100%".into()),
                name: Some(Some("s1".into())),
                ..SnapshotChange::default()
            },
        )
        .expect("available");
    assert_eq!(
        (
            snap.status.as_str(),
            snap.progress.as_str(),
            snap.name.as_deref()
        ),
        ("available", "100%", Some("s1"))
    );
    let mut meta = Metadata::new();
    meta.insert("a".into(), "1".into());
    assert_eq!(
        s.set_snapshot_metadata(&snap.id, &meta, false)
            .expect("meta")
            .len(),
        1
    );
    let page = s
        .list_snapshots(&ListQuery::project("p").filter(
            Field::VolumeId,
            FilterOp::Eq,
            Val::Text(v.id.clone()),
        ))
        .expect("list");
    assert_eq!(page.count, 1);
    s.destroy_snapshot(&snap.id, &["available", "error"])
        .expect("gone");
    s.destroy_volume(&v.id, &[]).expect("now it goes");
    assert_eq!(used(&s, "p", "gigabytes"), (0, 0));
    assert!(s.audit_usage("p").expect("audit").is_empty());
}

#[test]
fn volume_types_specs_access_and_per_type_quotas() {
    let s = store();
    let mut specs = BTreeMap::new();
    specs.insert("volume_backend_name".to_owned(), "basalt".to_owned());
    let t = s
        .create_volume_type("fast", Some("NVMe"), true, &specs)
        .expect("type");
    assert!(matches!(
        s.create_volume_type("fast", None, true, &BTreeMap::new()),
        Err(DbError::Duplicate { .. })
    ));
    assert!(
        s.create_volume_type("  ", None, true, &BTreeMap::new())
            .is_err()
    );
    assert_eq!(s.get_volume_type("fast").expect("by name").id, t.id);
    assert_eq!(s.get_volume_type(&t.id).expect("by id").extra_specs, specs);
    let mut more = BTreeMap::new();
    more.insert("provisioning:type".to_owned(), "thin".to_owned());
    assert_eq!(
        s.set_extra_specs(&t.id, &more)
            .expect("specs")
            .extra_specs
            .len(),
        2
    );
    s.unset_extra_spec(&t.id, "provisioning:type")
        .expect("unset");
    assert!(s.unset_extra_spec(&t.id, "provisioning:type").is_err());

    // Per-type quota, renamed with the type.
    s.set_quota_limit("p", "volumes_fast", 1).expect("limit");
    let mut nv = new_vol("p", 1);
    nv.volume_type_id = Some(t.id.clone());
    let v = s.create_volume(&nv).expect("first of its type");
    let mut nv2 = new_vol("p", 1);
    nv2.volume_type_id = Some(t.id.clone());
    let e = s.create_volume(&nv2).expect_err("per-type limit");
    assert!(e.to_string().contains("volumes_fast"), "{e}");
    s.update_volume_type(&t.id, Some("faster"), None, None)
        .expect("rename");
    let u = s.quota_usage("p").expect("usage");
    assert_eq!(
        (u["volumes_faster"].limit, u["volumes_faster"].in_use),
        (1, 1)
    );
    assert!(!u.contains_key("volumes_fast"));
    assert!(s.audit_usage("p").expect("audit").is_empty());

    // In use: not deletable.
    assert!(matches!(
        s.delete_volume_type(&t.id),
        Err(DbError::InUse { .. })
    ));
    s.destroy_volume(&v.id, &[]).expect("destroyed");
    s.delete_volume_type(&t.id).expect("deleted");
    assert!(s.get_volume_type("faster").is_err());
    // An unknown type cannot be used.
    let mut nv3 = new_vol("p", 1);
    nv3.volume_type_id = Some(t.id.clone());
    assert!(matches!(
        s.create_volume(&nv3),
        Err(DbError::NotFound { .. })
    ));

    // Private types and access.
    let private = s
        .create_volume_type("gold", None, false, &BTreeMap::new())
        .expect("type");
    assert!(s.list_volume_types(Some("p")).expect("list").is_empty());
    s.set_type_access(&private.id, "p", true).expect("grant");
    assert!(s.set_type_access(&private.id, "p", true).is_err());
    assert_eq!(s.list_volume_types(Some("p")).expect("list").len(), 1);
    assert!(s.list_volume_types(Some("q")).expect("list").is_empty());
    assert_eq!(s.list_volume_types(None).expect("all").len(), 1);
    s.set_type_access(&private.id, "p", false).expect("revoke");
    assert!(s.set_type_access(&private.id, "p", false).is_err());
}

#[test]
fn pages_visit_every_row_once_in_order() {
    let s = store();
    s.set_quota_limit("p", "volumes", -1).expect("limit");
    let mut ids = Vec::new();
    for i in 0..25 {
        let mut nv = new_vol("p", 1 + i % 3);
        // Repeated names: the id must break ties.
        nv.name = Some(format!("vol-{}", i % 7));
        if i % 5 == 0 {
            nv.metadata.insert("tier".into(), "gold".into());
        }
        ids.push(s.create_volume(&nv).expect("created").id);
    }
    s.create_volume(&new_vol("other", 1))
        .expect("another project");
    for (sort, dir) in [
        (SortKey::Name, Dir::Asc),
        (SortKey::Size, Dir::Desc),
        (SortKey::CreatedAt, Dir::Desc),
        (SortKey::Id, Dir::Asc),
    ] {
        let all = s
            .list_volumes(&ListQuery::project("p").sort_by(sort, dir))
            .expect("all");
        assert_eq!(all.count, 25);
        let mut seen = Vec::new();
        let mut marker = None;
        loop {
            let mut q = ListQuery::project("p").sort_by(sort, dir);
            q.limit = Some(4);
            q.marker = marker.clone();
            let page = s.list_volumes(&q).expect("page");
            assert_eq!(page.count, 25);
            if page.items.is_empty() {
                break;
            }
            marker = page.items.last().map(|v| v.id.clone());
            seen.extend(page.items.into_iter().map(|v| v.id));
        }
        let expect: Vec<String> = all.items.into_iter().map(|v| v.id).collect();
        assert_eq!(seen, expect, "{sort:?} {dir:?}");
    }
    // Offset.
    let mut q = ListQuery::project("p").sort_by(SortKey::Id, Dir::Asc);
    q.offset = Some(20);
    assert_eq!(s.list_volumes(&q).expect("offset").items.len(), 5);
    // Filters.
    let like = s
        .list_volumes(&ListQuery::project("p").filter(
            Field::Name,
            FilterOp::Like,
            Val::Text("ol-3".into()),
        ))
        .expect("like");
    assert!(
        like.count > 0
            && like
                .items
                .iter()
                .all(|v| v.name.as_deref() == Some("vol-3"))
    );
    // `%` and `_` in a pattern are literal.
    let none = s
        .list_volumes(&ListQuery::project("p").filter(
            Field::Name,
            FilterOp::Like,
            Val::Text("%".into()),
        ))
        .expect("like %");
    assert_eq!(none.count, 0);
    let gold = s
        .list_volumes(&ListQuery::project("p").filter(
            Field::Metadata("tier".into()),
            FilterOp::Eq,
            Val::Text("gold".into()),
        ))
        .expect("metadata");
    assert_eq!(gold.count, 5);
    let big = s
        .list_volumes(&ListQuery::project("p").filter(Field::Size, FilterOp::Ge, Val::Int(3)))
        .expect("size");
    assert!(big.items.iter().all(|v| v.size_gb >= 3));
    // Every project (admin).
    assert_eq!(
        s.list_volumes(&ListQuery::default()).expect("all").count,
        26
    );
    // A marker from another project, or unknown, is not found.
    let other = s
        .list_volumes(&ListQuery::project("other"))
        .expect("other")
        .items[0]
        .id
        .clone();
    let mut q = ListQuery::project("p");
    q.marker = Some(other);
    assert!(matches!(s.list_volumes(&q), Err(DbError::NotFound { .. })));
    // Snapshots cannot be filtered by host.
    let q = ListQuery::project("p").filter(Field::Host, FilterOp::Eq, Val::Text("h".into()));
    assert!(matches!(s.list_snapshots(&q), Err(DbError::Invalid(_))));
    let _ = ids;
}

#[test]
fn the_database_survives_reopening_and_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("basalt.db");
    let id = {
        let s = SqliteStore::open(&path).expect("open");
        assert_eq!(s.schema_version().expect("version"), 1);
        s.service_heartbeat("n1@basalt", "cinder-volume", "nova")
            .expect("beat");
        s.create_volume(&new_vol("p", 2)).expect("created").id
    };
    let s = SqliteStore::open(&path).expect("reopen");
    assert_eq!(s.get_volume(&id).expect("still there").size_gb, 2);
    let svc = s
        .service_heartbeat("n1@basalt", "cinder-volume", "nova")
        .expect("beat");
    assert_eq!(svc.report_count, 2);
    let svc = s
        .set_service_disabled("n1@basalt", "cinder-volume", true, Some("maintenance"))
        .expect("disable");
    assert!(svc.disabled);
    assert_eq!(s.list_services().expect("list").len(), 1);
    assert!(
        s.set_service_disabled("nope", "cinder-volume", true, None)
            .is_err()
    );
    drop(s);
    {
        let c = rusqlite::Connection::open(&path).expect("raw");
        c.pragma_update(None, "user_version", 99).expect("bump");
    }
    match SqliteStore::open(&path) {
        Err(DbError::SchemaTooNew {
            found: 99,
            known: 1,
        }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Not a database at all.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x5a; 8192]).expect("junk");
    assert!(SqliteStore::open(&junk).is_err());
}

#[test]
fn exports_are_recorded_per_volume_and_protocol() {
    let s = store();
    let v = s.create_volume(&new_vol("p", 1)).expect("created");
    let w = s.create_volume(&new_vol("p", 1)).expect("created");
    s.update_volume(
        &v.id,
        &[],
        &VolumeChange {
            host: Some(Some("n1@basalt#pool".into())),
            ..VolumeChange::default()
        },
    )
    .expect("placed");
    s.update_volume(
        &w.id,
        &[],
        &VolumeChange {
            host: Some(Some("n2@basalt#pool".into())),
            ..VolumeChange::default()
        },
    )
    .expect("placed");
    let e = Export {
        volume_id: v.id.clone(),
        protocol: "iscsi".into(),
        target: format!("iqn.2026-11.org.basalt:volume-{}", v.id),
        hosts: vec!["iqn.1994-05.com.redhat:h1".into()],
        chap_user: Some("u".into()),
        chap_secret: Some("s3cr3t-s3cr3t".into()),
    };
    s.put_export(&e).expect("put");
    let mut e2 = e.clone();
    e2.hosts.push("iqn.1994-05.com.redhat:h2".into());
    s.put_export(&e2).expect("replace");
    let mut n = e.clone();
    n.volume_id = w.id.clone();
    n.protocol = "nvmeof".into();
    s.put_export(&n).expect("put");
    assert_eq!(s.list_exports(None).expect("all").len(), 2);
    assert_eq!(s.list_exports(Some("n1@basalt")).expect("n1"), vec![e2]);
    assert_eq!(s.list_exports(Some("n3@basalt")).expect("n3"), vec![]);
    let mut bad = e.clone();
    bad.volume_id = new_uuid().expect("uuid");
    assert!(matches!(s.put_export(&bad), Err(DbError::NotFound { .. })));
    assert_eq!(s.exports_of(&w.id).expect("of w"), vec![n.clone()]);
    assert!(
        s.exports_of(&new_uuid().expect("uuid"))
            .expect("none")
            .is_empty()
    );
    assert!(s.remove_export(&v.id, "iscsi").expect("remove"));
    assert!(!s.remove_export(&v.id, "iscsi").expect("again"));
    // A destroyed volume's exports go with it.
    s.destroy_volume(&w.id, &[]).expect("destroyed");
    assert!(s.list_exports(None).expect("all").is_empty());
}

/// The child side of [`acknowledged_writes_survive_kill_9`]: creates volumes forever, printing
/// each id once its transaction has committed.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var("BASALT_DB_CRASH_CHILD") else {
        return;
    };
    let s = SqliteStore::open(std::path::Path::new(&path)).expect("open");
    s.set_quota_limit("p", "volumes", -1).expect("limit");
    s.set_quota_limit("p", "gigabytes", -1).expect("limit");
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    loop {
        let v = s.create_volume(&new_vol("p", 1)).expect("created");
        writeln!(out, "ACK {}", v.id).expect("stdout");
        out.flush().expect("flush");
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("basalt.db");
    let mut acked = Vec::new();
    for round in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "tests::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("BASALT_DB_CRASH_CHILD", &path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("child");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let want = 40 + round * 13;
        let mut n = 0;
        while n < want {
            let line = lines.next().expect("child ended early").expect("line");
            if let Some(id) = line.strip_prefix("ACK ") {
                acked.push(id.to_owned());
                n += 1;
            }
        }
        child.kill().expect("kill -9");
        let _ = child.wait();
    }
    let s = SqliteStore::open(&path).expect("reopen after crashes");
    for id in &acked {
        s.get_volume(id).expect("an acknowledged volume was lost");
    }
    assert!(s.audit_usage("p").expect("audit").is_empty());
    let n = s
        .list_volumes(&ListQuery::project("p"))
        .expect("list")
        .count;
    assert!(n >= acked.len() as u64);
}

#[derive(Debug, Clone)]
enum Op {
    Create { size: u64, typed: bool },
    Snapshot(usize),
    DestroySnapshot(usize),
    Destroy(usize),
    Extend(usize, u64, bool),
    Limit(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..50, any::<bool>()).prop_map(|(size, typed)| Op::Create { size, typed }),
        2 => (0usize..16).prop_map(Op::Snapshot),
        1 => (0usize..16).prop_map(Op::DestroySnapshot),
        2 => (0usize..16).prop_map(Op::Destroy),
        2 => (0usize..16, 1u64..40, any::<bool>()).prop_map(|(i, g, ok)| Op::Extend(i, g, ok)),
        1 => (-1i64..400).prop_map(Op::Limit),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Whatever succeeds or fails, committed usage equals what the live rows cost, nothing
    /// stays reserved, and the gigabytes limit holds whenever it was set before the charge.
    #[test]
    fn quota_usage_never_leaks(ops in proptest::collection::vec(op(), 1..60)) {
        let s = store();
        let t = s.create_volume_type("t1", None, true, &BTreeMap::new()).expect("type");
        s.set_quota_limit("p", "volumes", -1).expect("limit");
        s.set_quota_limit("p", "snapshots", -1).expect("limit");
        let mut vols: Vec<String> = Vec::new();
        let mut snaps: Vec<String> = Vec::new();
        for op in ops {
            match op {
                Op::Create { size, typed } => {
                    let mut nv = new_vol("p", size);
                    if typed {
                        nv.volume_type_id = Some(t.id.clone());
                    }
                    if let Ok(v) = s.create_volume(&nv) {
                        s.update_volume(&v.id, &[], &to("available")).expect("available");
                        vols.push(v.id);
                    }
                }
                Op::Snapshot(i) if !vols.is_empty() => {
                    let ns = NewSnapshot {
                        id: new_uuid().expect("uuid"),
                        project_id: "p".into(),
                        user_id: "u".into(),
                        volume_id: vols[i % vols.len()].clone(),
                        use_quota: true,
                        ..NewSnapshot::default()
                    };
                    if let Ok(sn) = s.create_snapshot(&ns, &["available"]) {
                        snaps.push(sn.id);
                    }
                }
                Op::DestroySnapshot(i) if !snaps.is_empty() => {
                    let id = snaps.remove(i % snaps.len());
                    s.destroy_snapshot(&id, &[]).expect("snapshot destroyed");
                }
                Op::Destroy(i) if !vols.is_empty() => {
                    let id = vols[i % vols.len()].clone();
                    if s.destroy_volume(&id, &[]).is_ok() {
                        vols.retain(|v| *v != id);
                    }
                }
                Op::Extend(i, g, ok) if !vols.is_empty() => {
                    let id = vols[i % vols.len()].clone();
                    let size = s.get_volume(&id).expect("get").size_gb;
                    if let Ok(r) = s.begin_extend(&id, &["available"], size + g) {
                        let (n, st) = if ok { (Some(size + g), "available") } else { (None, "available") };
                        s.finish_extend(&id, &r, n, st).expect("finished");
                    }
                }
                Op::Limit(l) => {
                    let _ = s.set_quota_limit("p", "gigabytes", l);
                }
                _ => {}
            }
            prop_assert!(s.audit_usage("p").expect("audit").is_empty());
            let u = s.quota_usage("p").expect("usage");
            prop_assert!(u.values().all(|q| q.reserved == 0));
        }
    }
}
