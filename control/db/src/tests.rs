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
        assert_eq!(
            s.schema_version().expect("version"),
            SqliteStore::known_schema_version()
        );
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
            known: 3,
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

fn available_vol(s: &SqliteStore, project: &str, size: u64, multiattach: bool) -> Volume {
    let mut nv = new_vol(project, size);
    nv.multiattach = multiattach;
    let v = s.create_volume(&nv).expect("created");
    s.update_volume(&v.id, &["creating"], &to("available"))
        .expect("available")
}

fn reserve(s: &SqliteStore, v: &Volume, instance: Option<&str>) -> Result<Attachment, DbError> {
    let expected: &[&str] = if v.multiattach {
        &[
            "available",
            "downloading",
            "in-use",
            "reserved",
            "attaching",
        ]
    } else {
        &["available", "downloading"]
    };
    s.reserve_attachment(
        &NewAttachment {
            id: new_uuid().expect("uuid"),
            volume_id: v.id.clone(),
            instance_uuid: instance.map(str::to_owned),
            attach_mode: "rw".into(),
            ..NewAttachment::default()
        },
        expected,
    )
}

fn status_of(s: &SqliteStore, id: &str) -> (String, String) {
    let v = s.get_volume(id).expect("volume");
    (v.status, v.attach_status)
}

fn att(status: &str) -> AttachmentChange {
    AttachmentChange {
        attach_status: Some(status.to_owned()),
        ..AttachmentChange::default()
    }
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

#[test]
fn the_attach_flow_moves_the_volume_through_its_states() {
    let s = store();
    let v = available_vol(&s, "p", 1, false);
    let instance = new_uuid().expect("uuid");
    let a = reserve(&s, &v, Some(&instance)).expect("reserved");
    assert_eq!(
        (a.attach_status.as_str(), a.project_id.as_str()),
        ("reserved", "p")
    );
    assert_eq!(a.connector, None);
    assert_eq!(status_of(&s, &v.id), pair("reserved", "reserved"));

    // The connector arrives: exported, attaching.
    let connector =
        serde_json::json!({"host": "compute1", "initiator": "iqn.1994-05.com.redhat:c1"});
    let info = serde_json::json!({"driver_volume_type": "iscsi", "data": {"target_lun": 0}});
    let a = s
        .update_attachment(
            &a.id,
            &["reserved"],
            &AttachmentChange {
                attach_status: Some("attaching".into()),
                connector: Some(Some(connector.clone())),
                connection_info: Some(Some(info.clone())),
                attached_host: Some(Some("compute1".into())),
                mountpoint: Some(Some("/dev/vdb".into())),
                ..AttachmentChange::default()
            },
        )
        .expect("attaching");
    assert_eq!(a.connector.as_ref(), Some(&connector));
    assert_eq!(a.connection_info.as_ref(), Some(&info));
    assert_eq!(a.attach_time, None);
    assert_eq!(status_of(&s, &v.id), pair("attaching", "attaching"));
    // Compare-and-swap on the attachment's status.
    assert!(matches!(
        s.update_attachment(&a.id, &["reserved"], &att("attached")),
        Err(DbError::Conflict { .. })
    ));
    assert!(matches!(
        s.update_attachment(&a.id, &[], &att("bogus")),
        Err(DbError::Invalid(_))
    ));
    // os-complete.
    let a = s
        .update_attachment(&a.id, &["attaching"], &att("attached"))
        .expect("attached");
    assert!(a.attach_time.is_some());
    assert_eq!(status_of(&s, &v.id), pair("in-use", "attached"));
    assert_eq!(s.get_attachment(&a.id).expect("get"), a);
    assert_eq!(s.attachments_of(&v.id).expect("of"), vec![a.clone()]);

    // Attached: a second attachment and the volume's deletion are refused.
    assert!(matches!(
        reserve(&s, &v, Some(&new_uuid().expect("uuid"))),
        Err(DbError::Conflict { .. })
    ));
    let e = s.destroy_volume(&v.id, &[]).expect_err("attached");
    assert!(
        matches!(e, DbError::InUse { .. }) && e.to_string().contains(&a.id),
        "{e}"
    );

    // Detach.
    s.update_attachment(&a.id, &["attached"], &att("detaching"))
        .expect("detaching");
    assert_eq!(status_of(&s, &v.id), pair("detaching", "detaching"));
    let after = s
        .delete_attachment(&a.id, &["detaching", "attached"])
        .expect("deleted");
    assert_eq!(
        (after.status.as_str(), after.attach_status.as_str()),
        ("available", "detached")
    );
    assert!(matches!(
        s.get_attachment(&a.id),
        Err(DbError::NotFound { .. })
    ));
    assert!(s.attachments_of(&v.id).expect("of").is_empty());
    assert!(matches!(
        s.delete_attachment(&a.id, &[]),
        Err(DbError::NotFound { .. })
    ));
    s.destroy_volume(&v.id, &["available"])
        .expect("destroyed once detached");
}

#[test]
fn multiattach_volumes_take_several_attachments_and_others_one() {
    let s = store();
    let v = available_vol(&s, "p", 1, true);
    let a1 = reserve(&s, &v, Some(&new_uuid().expect("uuid"))).expect("first");
    s.update_attachment(&a1.id, &[], &att("attaching"))
        .expect("attaching");
    s.update_attachment(&a1.id, &[], &att("attached"))
        .expect("attached");
    assert_eq!(status_of(&s, &v.id), pair("in-use", "attached"));
    // A second reservation: the attached one still decides.
    let a2 = reserve(&s, &v, Some(&new_uuid().expect("uuid"))).expect("second");
    assert_eq!(status_of(&s, &v.id), pair("in-use", "attached"));
    // The first goes: the reserved one decides.
    s.delete_attachment(&a1.id, &[]).expect("first gone");
    assert_eq!(status_of(&s, &v.id), pair("reserved", "reserved"));
    // Failed attachments hold nothing.
    s.update_attachment(&a2.id, &["reserved"], &att("error_attaching"))
        .expect("failed");
    assert_eq!(status_of(&s, &v.id), pair("available", "detached"));
    let page = s
        .list_attachments(&ListQuery::project("p").filter(
            Field::VolumeId,
            FilterOp::Eq,
            Val::Text(v.id.clone()),
        ))
        .expect("list");
    assert_eq!(page.count, 1);
    assert_eq!(page.items[0].attach_status, "error_attaching");
    // ... and do not stop the volume's deletion, which takes them along.
    s.destroy_volume(&v.id, &["available"]).expect("destroyed");
    assert!(s.attachments_of(&v.id).expect("of").is_empty());
    assert!(matches!(
        s.get_attachment(&a2.id),
        Err(DbError::NotFound { .. })
    ));

    // Not multiattach: a second holder is refused even when the caller's statuses allow it,
    // unless it is for the same instance (Nova moving it).
    let w = available_vol(&s, "p", 1, false);
    let instance = new_uuid().expect("uuid");
    let b1 = reserve(&s, &w, Some(&instance)).expect("first");
    let wide = ["available", "in-use", "reserved", "attaching"];
    let other = NewAttachment {
        id: new_uuid().expect("uuid"),
        volume_id: w.id.clone(),
        instance_uuid: Some(new_uuid().expect("uuid")),
        attach_mode: "ro".into(),
        ..NewAttachment::default()
    };
    let e = s.reserve_attachment(&other, &wide).expect_err("second");
    assert!(
        matches!(e, DbError::InUse { .. }) && e.to_string().contains("not multiattach"),
        "{e}"
    );
    let same = NewAttachment {
        instance_uuid: Some(instance.clone()),
        ..other.clone()
    };
    let b2 = s.reserve_attachment(&same, &wide).expect("same instance");
    assert_eq!(b2.attach_mode, "ro");
    assert_eq!(s.attachments_of(&w.id).expect("of").len(), 2);
    assert_eq!(
        s.list_attachments(&ListQuery::default().filter(
            Field::InstanceUuid,
            FilterOp::Eq,
            Val::Text(instance),
        ))
        .expect("by instance")
        .count,
        2
    );
    assert_eq!(
        s.list_attachments(&ListQuery::project("q"))
            .expect("other project")
            .count,
        0
    );
    let _ = b1;
    // Bad input.
    let mut bad = other.clone();
    bad.id = new_uuid().expect("uuid");
    bad.attach_mode = "rx".into();
    assert!(matches!(
        s.reserve_attachment(&bad, &[]),
        Err(DbError::Invalid(_))
    ));
    bad.attach_mode = "rw".into();
    bad.instance_uuid = Some("not-a-uuid".into());
    assert!(matches!(
        s.reserve_attachment(&bad, &[]),
        Err(DbError::Invalid(_))
    ));
    assert!(matches!(
        s.reserve_attachment(&same, &wide),
        Err(DbError::Duplicate { .. })
    ));
}

#[test]
fn attachments_refuse_error_and_busy_volumes_and_spare_other_operations() {
    let s = store();
    let v = available_vol(&s, "p", 1, false);
    for status in ["error", "error_extending", "extending", "maintenance"] {
        s.update_volume(&v.id, &[], &to(status)).expect("status");
        match reserve(&s, &v, None) {
            Err(DbError::Conflict { current, .. }) => assert_eq!(current, status),
            other => panic!("{status}: expected a conflict, got {other:?}"),
        }
        // Not even with any status accepted, for the error ones.
        if status.contains("error") {
            let any = s.reserve_attachment(
                &NewAttachment {
                    id: new_uuid().expect("uuid"),
                    volume_id: v.id.clone(),
                    attach_mode: "rw".into(),
                    ..NewAttachment::default()
                },
                &[],
            );
            assert!(matches!(any, Err(DbError::Conflict { .. })), "{any:?}");
        }
    }
    assert!(s.attachments_of(&v.id).expect("of").is_empty());
    assert!(matches!(
        reserve(
            &s,
            &Volume {
                id: new_uuid().expect("uuid"),
                ..v.clone()
            },
            None
        ),
        Err(DbError::NotFound { .. })
    ));

    // An extend of an attached volume: its status is the extend's, and what the extend
    // restores follows the attachments.
    s.update_volume(&v.id, &[], &to("available"))
        .expect("available");
    let a = reserve(&s, &v, None).expect("reserved");
    s.update_attachment(&a.id, &[], &att("attached"))
        .expect("attached");
    let r = s.begin_extend(&v.id, &["in-use"], 2).expect("extending");
    let after = s.delete_attachment(&a.id, &[]).expect("detached");
    assert_eq!(
        (
            after.status.as_str(),
            after.attach_status.as_str(),
            after.previous_status.as_deref()
        ),
        ("extending", "detached", Some("available"))
    );
    s.finish_extend(&v.id, &r, Some(2), "available")
        .expect("extended");
    // A migration under way keeps its status when the last attachment goes.
    let b = reserve(&s, &v, None).expect("reserved");
    s.update_volume(
        &v.id,
        &[],
        &VolumeChange {
            migration_status: Some(Some("migrating".into())),
            ..VolumeChange::default()
        },
    )
    .expect("migrating");
    let after = s.delete_attachment(&b.id, &["reserved"]).expect("gone");
    assert_eq!(
        (after.status.as_str(), after.attach_status.as_str()),
        ("reserved", "detached")
    );
}

fn transfer_of(v: &Volume, no_snapshots: bool) -> NewTransfer {
    NewTransfer {
        id: new_uuid().expect("uuid"),
        volume_id: v.id.clone(),
        name: Some("gift".into()),
        salt: "s4lts4lt".into(),
        crypt_hash: "0123456789abcdef0123456789abcdef01234567".into(),
        source_project_id: v.project_id.clone(),
        no_snapshots,
    }
}

fn snapshot_of(s: &SqliteStore, v: &Volume) -> Snapshot {
    let snap = s
        .create_snapshot(
            &NewSnapshot {
                id: new_uuid().expect("uuid"),
                project_id: v.project_id.clone(),
                user_id: "u".into(),
                volume_id: v.id.clone(),
                use_quota: true,
                ..NewSnapshot::default()
            },
            &["available"],
        )
        .expect("snapshot");
    s.update_snapshot(&snap.id, &["creating"], &{
        SnapshotChange {
            status: Some("available".into()),
            ..SnapshotChange::default()
        }
    })
    .expect("available")
}

#[test]
fn transfers_move_the_volume_its_snapshots_and_their_quota() {
    let s = store();
    let t = s
        .create_volume_type("fast", None, true, &BTreeMap::new())
        .expect("type");
    let mut nv = new_vol("src", 4);
    nv.volume_type_id = Some(t.id.clone());
    let v = s.create_volume(&nv).expect("created");
    // Only available volumes.
    assert!(matches!(
        s.create_transfer(&transfer_of(&v, false)),
        Err(DbError::Conflict { .. })
    ));
    let v = s
        .update_volume(&v.id, &[], &to("available"))
        .expect("available");
    let snap = snapshot_of(&s, &v);
    // A snapshot that is not available stops it, unless the snapshots stay.
    s.update_snapshot(
        &snap.id,
        &[],
        &SnapshotChange {
            status: Some("creating".into()),
            ..SnapshotChange::default()
        },
    )
    .expect("busy");
    match s.create_transfer(&transfer_of(&v, false)) {
        Err(DbError::Conflict { kind, id, .. }) => {
            assert_eq!((kind, id), ("snapshot", snap.id.clone()))
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(status_of(&s, &v.id).0, "available");
    s.update_snapshot(
        &snap.id,
        &[],
        &SnapshotChange {
            status: Some("available".into()),
            ..SnapshotChange::default()
        },
    )
    .expect("available");
    // Someone else's volume is not found.
    let mut foreign = transfer_of(&v, false);
    foreign.source_project_id = "dst".into();
    assert!(matches!(
        s.create_transfer(&foreign),
        Err(DbError::NotFound { .. })
    ));

    // Offer, withdraw.
    let tr = s.create_transfer(&transfer_of(&v, false)).expect("offered");
    assert_eq!(status_of(&s, &v.id).0, "awaiting-transfer");
    assert!(!tr.accepted && tr.destination_project_id.is_none());
    assert_eq!(s.get_transfer(&tr.id).expect("get"), tr);
    assert!(matches!(
        s.create_transfer(&transfer_of(&v, false)),
        Err(DbError::Conflict { .. })
    ));
    assert_eq!(
        s.list_transfers(&ListQuery::project("src"))
            .expect("list")
            .items,
        vec![tr.clone()]
    );
    assert_eq!(
        s.list_transfers(&ListQuery::project("dst"))
            .expect("list")
            .count,
        0
    );
    s.delete_transfer(&tr.id).expect("withdrawn");
    assert_eq!(status_of(&s, &v.id).0, "available");
    assert!(matches!(
        s.get_transfer(&tr.id),
        Err(DbError::NotFound { .. })
    ));
    assert!(matches!(
        s.accept_transfer(&tr.id, "dst", "u2"),
        Err(DbError::NotFound { .. })
    ));

    // Over the destination's quota: nothing changes.
    let tr = s.create_transfer(&transfer_of(&v, false)).expect("offered");
    s.set_quota_limit("dst", "gigabytes", 7).expect("limit");
    let e = s
        .accept_transfer(&tr.id, "dst", "u2")
        .expect_err("4 + 4 > 7");
    assert!(
        matches!(&e, DbError::OverQuota { resource, requested: 8, .. } if resource == "gigabytes"),
        "{e}"
    );
    assert_eq!(status_of(&s, &v.id).0, "awaiting-transfer");
    assert_eq!(s.get_volume(&v.id).expect("volume").project_id, "src");
    assert_eq!(s.get_snapshot(&snap.id).expect("snap").project_id, "src");
    assert_eq!(used(&s, "src", "gigabytes"), (8, 0));
    assert_eq!(used(&s, "dst", "gigabytes"), (0, 0));
    assert_eq!(s.get_transfer(&tr.id).expect("still offered"), tr);

    // Within it: everything moves.
    s.set_quota_limit("dst", "gigabytes", 8).expect("limit");
    let (done, moved) = s.accept_transfer(&tr.id, "dst", "u2").expect("accepted");
    assert!(done.accepted);
    assert_eq!(done.destination_project_id.as_deref(), Some("dst"));
    assert_eq!(
        (
            moved.status.as_str(),
            moved.project_id.as_str(),
            moved.user_id.as_str()
        ),
        ("available", "dst", "u2")
    );
    let snap = s.get_snapshot(&snap.id).expect("snap");
    assert_eq!(
        (snap.project_id.as_str(), snap.user_id.as_str()),
        ("dst", "u2")
    );
    for (r, n) in [
        ("volumes", 1),
        ("gigabytes", 8),
        ("snapshots", 1),
        ("volumes_fast", 1),
        ("gigabytes_fast", 8),
        ("snapshots_fast", 1),
    ] {
        assert_eq!(used(&s, "dst", r), (n, 0), "{r}");
        assert_eq!(used(&s, "src", r), (0, 0), "{r}");
    }
    assert!(matches!(
        s.get_transfer(&tr.id),
        Err(DbError::NotFound { .. })
    ));
    for p in ["src", "dst"] {
        assert!(s.audit_usage(p).expect("audit").is_empty(), "{p}");
    }

    // Without its snapshots: only the volume moves; they stay with their project.
    let tr = s
        .create_transfer(&{
            let mut n = transfer_of(&moved, true);
            n.name = None;
            n
        })
        .expect("offered");
    assert!(tr.no_snapshots);
    let (_, back) = s.accept_transfer(&tr.id, "third", "u3").expect("accepted");
    assert_eq!(back.project_id, "third");
    assert_eq!(s.get_snapshot(&snap.id).expect("snap").project_id, "dst");
    assert_eq!(used(&s, "third", "volumes"), (1, 0));
    assert_eq!(used(&s, "third", "gigabytes"), (4, 0));
    assert_eq!(used(&s, "dst", "gigabytes"), (4, 0));
    assert_eq!(used(&s, "dst", "snapshots"), (1, 0));
    // A later transfer does not take snapshots its project does not own.
    let tr = s
        .create_transfer(&transfer_of(&back, false))
        .expect("offered");
    s.accept_transfer(&tr.id, "fourth", "u4").expect("accepted");
    assert_eq!(s.get_snapshot(&snap.id).expect("snap").project_id, "dst");
    for p in ["src", "dst", "third", "fourth"] {
        assert!(s.audit_usage(p).expect("audit").is_empty(), "{p}");
    }
    // A destroyed volume withdraws its transfer.
    let w = available_vol(&s, "src", 1, false);
    let tr = s.create_transfer(&transfer_of(&w, false)).expect("offered");
    s.destroy_volume(&w.id, &[]).expect("force-destroyed");
    assert!(matches!(
        s.get_transfer(&tr.id),
        Err(DbError::NotFound { .. })
    ));
    let e = s.accept_transfer(&tr.id, "dst", "u").expect_err("gone");
    assert!(matches!(e, DbError::NotFound { .. }), "{e}");
}

fn message(project: &str, resource: &str, event: &str, expires: Timestamp) -> NewMessage {
    NewMessage {
        id: new_uuid().expect("uuid"),
        project_id: project.to_owned(),
        request_id: Some(format!("req-{}", new_uuid().expect("uuid"))),
        resource_type: "VOLUME".into(),
        resource_uuid: Some(resource.to_owned()),
        event_id: event.to_owned(),
        message_level: "ERROR".into(),
        user_message: "schedule allocate volume: Could not find any available weighted backend."
            .into(),
        expires_at: expires,
    }
}

#[test]
fn messages_are_listed_filtered_paged_and_reaped() {
    let s = store();
    let now = Timestamp::now();
    let (r1, r2) = (new_uuid().expect("uuid"), new_uuid().expect("uuid"));
    let mut ids = Vec::new();
    for i in 0..7 {
        let r = if i % 2 == 0 { &r1 } else { &r2 };
        let ev = if i < 5 {
            "VOLUME_000001"
        } else {
            "VOLUME_000002"
        };
        // Two of them expire within the hour, the others in 30 days.
        let ttl = if i < 2 { 3600 } else { 2_592_000 };
        let m = s
            .create_message(&message("p", r, ev, now.plus_secs(ttl)))
            .expect("created");
        ids.push(m.id);
    }
    s.create_message(&message("q", &r1, "VOLUME_000001", now.plus_secs(60)))
        .expect("another project's");
    let m = s.get_message(&ids[0]).expect("get");
    assert_eq!(
        (
            m.project_id.as_str(),
            m.resource_uuid.as_deref(),
            m.event_id.as_str()
        ),
        ("p", Some(r1.as_str()), "VOLUME_000001")
    );
    assert!(m.created_at >= now && m.expires_at == now.plus_secs(3600));
    let count = |q: ListQuery| s.list_messages(&q).expect("list").count;
    assert_eq!(count(ListQuery::project("p")), 7);
    assert_eq!(count(ListQuery::default()), 8);
    assert_eq!(
        count(ListQuery::project("p").filter(
            Field::ResourceUuid,
            FilterOp::Eq,
            Val::Text(r1.clone())
        )),
        4
    );
    assert_eq!(
        count(ListQuery::project("p").filter(
            Field::EventId,
            FilterOp::Eq,
            Val::Text("VOLUME_000002".into())
        )),
        2
    );
    assert_eq!(
        count(
            ListQuery::project("p")
                .filter(
                    Field::ResourceType,
                    FilterOp::Eq,
                    Val::Text("VOLUME".into())
                )
                .filter(Field::MessageLevel, FilterOp::Eq, Val::Text("ERROR".into()))
        ),
        7
    );
    assert_eq!(
        count(ListQuery::project("p").filter(
            Field::RequestId,
            FilterOp::Eq,
            Val::Text(m.request_id.clone().expect("request"))
        )),
        1
    );
    assert!(matches!(
        s.list_messages(&ListQuery::project("p").filter(
            Field::Status,
            FilterOp::Eq,
            Val::Text("x".into())
        )),
        Err(DbError::Invalid(_))
    ));
    assert!(matches!(
        s.list_messages(&ListQuery::project("p").filter(
            Field::Metadata("k".into()),
            FilterOp::Eq,
            Val::Text("x".into())
        )),
        Err(DbError::Invalid(_))
    ));
    // Pages, newest first by default.
    let mut seen = Vec::new();
    let mut marker = None;
    loop {
        let mut q = ListQuery::project("p");
        q.limit = Some(3);
        q.marker = marker.clone();
        let page = s.list_messages(&q).expect("page");
        if page.items.is_empty() {
            break;
        }
        marker = page.items.last().map(|m| m.id.clone());
        seen.extend(page.items.into_iter().map(|m| m.id));
    }
    let all: Vec<String> = s
        .list_messages(&ListQuery::project("p"))
        .expect("all")
        .items
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(seen, all);
    assert_eq!(seen.len(), 7);
    // Delete, reap.
    s.delete_message(&ids[6]).expect("deleted");
    assert!(matches!(
        s.get_message(&ids[6]),
        Err(DbError::NotFound { .. })
    ));
    assert!(matches!(
        s.delete_message(&ids[6]),
        Err(DbError::NotFound { .. })
    ));
    assert_eq!(count(ListQuery::project("p")), 6);
    assert_eq!(s.reap_messages(now).expect("reap"), 0);
    assert_eq!(s.reap_messages(now.plus_secs(7200)).expect("reap"), 3);
    assert_eq!(count(ListQuery::project("p")), 4);
    assert_eq!(count(ListQuery::project("q")), 0);
    // Bad input.
    let mut bad = message("p", &r1, "VOLUME_000001", now);
    bad.event_id = String::new();
    assert!(matches!(s.create_message(&bad), Err(DbError::Invalid(_))));
    let dup = message("p", &r1, "VOLUME_000001", now.plus_secs(10));
    s.create_message(&dup).expect("created");
    assert!(matches!(
        s.create_message(&dup),
        Err(DbError::Duplicate { .. })
    ));
}

#[test]
fn projects_have_default_types_that_cannot_be_deleted() {
    let s = store();
    let fast = s
        .create_volume_type("fast", None, true, &BTreeMap::new())
        .expect("type");
    let slow = s
        .create_volume_type("slow", None, true, &BTreeMap::new())
        .expect("type");
    assert_eq!(s.get_default_type("p").expect("none"), None);
    assert_eq!(s.set_default_type("p", "fast").expect("by name"), fast.id);
    assert_eq!(s.set_default_type("q", &slow.id).expect("by id"), slow.id);
    assert_eq!(
        s.get_default_type("p").expect("get").as_deref(),
        Some(fast.id.as_str())
    );
    // Replaced.
    s.set_default_type("p", &slow.id).expect("replaced");
    assert_eq!(
        s.list_default_types().expect("list"),
        vec![
            ("p".to_owned(), slow.id.clone()),
            ("q".to_owned(), slow.id.clone())
        ]
    );
    assert!(matches!(
        s.set_default_type("p", "nope"),
        Err(DbError::NotFound { .. })
    ));
    assert!(matches!(
        s.set_default_type("", &slow.id),
        Err(DbError::Invalid(_))
    ));
    // Some project's default: not deletable.
    let e = s.delete_volume_type(&slow.id).expect_err("default");
    assert!(
        matches!(e, DbError::InUse { .. }) && e.to_string().contains("default type of 2"),
        "{e}"
    );
    s.delete_volume_type(&fast.id).expect("nobody's default");
    assert!(s.unset_default_type("p").expect("unset"));
    assert!(!s.unset_default_type("p").expect("again"));
    assert!(s.delete_volume_type(&slow.id).is_err());
    assert!(s.unset_default_type("q").expect("unset"));
    s.delete_volume_type(&slow.id).expect("deleted");
    assert!(s.list_default_types().expect("list").is_empty());
}

#[test]
fn a_version_1_database_migrates_and_keeps_its_rows() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("basalt.db");
    let id = new_uuid().expect("uuid");
    {
        let s = SqliteStore::open_at_version(&path, 1).expect("open at 1");
        assert_eq!(s.schema_version().expect("version"), 1);
        drop(s);
        // A row as version 1 wrote it (this code's queries name newer columns).
        let c = rusqlite::Connection::open(&path).expect("raw");
        c.execute(
            "INSERT INTO volumes (id, project_id, user_id, size_gb, status, attach_status, \
             availability_zone, bootable, multiattach, readonly, use_quota, created_at) \
             VALUES (?1, 'p', 'u', 3, 'available', 'detached', 'nova', 0, 0, 1, 1, 1)",
            [&id],
        )
        .expect("v1 row");
        c.execute_batch(
            "INSERT INTO quota_usages (project_id, resource, in_use, reserved) VALUES \
             ('p', 'volumes', 1, 0), ('p', 'gigabytes', 3, 0)",
        )
        .expect("v1 usage");
        assert!(
            c.prepare("SELECT readonly_set FROM volumes").is_err(),
            "version 1 has no readonly_set"
        );
    }
    let s = SqliteStore::open(&path).expect("migrated");
    assert_eq!(
        s.schema_version().expect("version"),
        SqliteStore::known_schema_version()
    );
    let v = s.get_volume(&id).expect("kept");
    assert_eq!((v.size_gb, v.readonly, v.readonly_set), (3, true, false));
    assert_eq!(status_of(&s, &v.id), pair("available", "detached"));
    // Setting the flag records that it was set.
    let v = s
        .update_volume(
            &id,
            &[],
            &VolumeChange {
                readonly: Some(false),
                ..VolumeChange::default()
            },
        )
        .expect("flag");
    assert_eq!((v.readonly, v.readonly_set), (false, true));
    let a = reserve(&s, &v, None).expect("attachments now");
    s.set_default_type(
        "p",
        &s.create_volume_type("t", None, true, &BTreeMap::new())
            .expect("type")
            .id,
    )
    .expect("default types now");
    drop(s);
    // Reopened at the newest version: nothing to do, everything there.
    let s = SqliteStore::open(&path).expect("reopened");
    assert_eq!(
        s.schema_version().expect("version"),
        SqliteStore::known_schema_version()
    );
    assert_eq!(s.get_attachment(&a.id).expect("kept"), a);
    assert_eq!(status_of(&s, &v.id), pair("reserved", "reserved"));
    assert!(s.get_default_type("p").expect("default").is_some());
    assert!(s.audit_usage("p").expect("audit").is_empty());
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

#[test]
fn retype_moves_the_per_type_quota_or_changes_nothing() {
    let s = SqliteStore::in_memory().expect("store");
    let silver = s
        .create_volume_type("silver", None, true, &BTreeMap::new())
        .expect("silver");
    let gold = s
        .create_volume_type("gold", None, true, &BTreeMap::new())
        .expect("gold");
    let mut nv = new_vol("p", 4);
    nv.volume_type_id = Some(silver.id.clone());
    let v = s.create_volume(&nv).expect("created");
    let v = s
        .update_volume(&v.id, &["creating"], &to("available"))
        .expect("available");
    assert_eq!(used(&s, "p", "volumes_silver"), (1, 0));
    assert_eq!(used(&s, "p", "gigabytes_silver"), (4, 0));
    // Over the new type's limit: refused, nothing moved.
    s.set_quota_limit("p", "gigabytes_gold", 3).expect("limit");
    assert!(matches!(
        s.retype_volume(&v.id, &["available"], &gold.id, false),
        Err(DbError::OverQuota { .. })
    ));
    assert_eq!(
        s.get_volume(&v.id).expect("v").volume_type_id,
        Some(silver.id.clone())
    );
    assert_eq!(used(&s, "p", "gigabytes_silver"), (4, 0));
    s.set_quota_limit("p", "gigabytes_gold", 10).expect("limit");
    // Wrong state: refused.
    assert!(matches!(
        s.retype_volume(&v.id, &["in-use"], &gold.id, false),
        Err(DbError::Conflict { .. })
    ));
    let r = s
        .retype_volume(&v.id, &["available"], &gold.id, true)
        .expect("retyped");
    assert_eq!(r.volume_type_id, Some(gold.id.clone()));
    assert!(r.multiattach);
    assert_eq!(used(&s, "p", "volumes_silver"), (0, 0));
    assert_eq!(used(&s, "p", "gigabytes_gold"), (4, 0));
    assert_eq!(used(&s, "p", "volumes"), (1, 0));
    assert_eq!(used(&s, "p", "gigabytes"), (4, 0));
    assert!(s.audit_usage("p").expect("audit").is_empty());
}
