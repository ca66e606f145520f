//! The Cinder v3 API end to end: `basalt up` in a scratch data directory (its own ports), real
//! HTTP, the built-in identity, the datapath making the volumes, and an iSCSI login with the
//! connection_info an attachment returns.
#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test crate

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use basalt_tests::cloud::Cloud;
use basalt_tests::http::{Reply, request};
use basalt_tests::iscsi::Initiator;
use serde_json::{Value, json};

/// A client: token, project, microversion.
struct Client<'a> {
    cloud: &'a Cloud,
    token: String,
    project: String,
    version: String,
}

impl Client<'_> {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/v3/{}/{path}", self.project)
        };
        let v = format!("volume {}", self.version);
        let b = body.map(|b| b.to_string());
        request(
            self.cloud.api,
            method,
            &path,
            &[("X-Auth-Token", &self.token), ("OpenStack-API-Version", &v)],
            b.as_deref().map(str::as_bytes),
        )
        .expect("request")
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>, want: u16) -> Value {
        let r = self.call(method, path, body);
        assert_eq!(
            r.status,
            want,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json
    }

    fn wait_volume(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.ok("GET", &format!("volumes/{id}"), None, 200);
            if v["volume"]["status"] == status {
                return v["volume"].clone();
            }
            assert!(
                !(v["volume"]["status"] == "error" && status != "error"),
                "volume {id} went to error: {v}"
            );
            assert!(Instant::now() < deadline, "volume {id} never {status}: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_snapshot(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.ok("GET", &format!("snapshots/{id}"), None, 200);
            if s["snapshot"]["status"] == status {
                return s["snapshot"].clone();
            }
            assert!(
                Instant::now() < deadline,
                "snapshot {id} never {status}: {s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn create_volume(&self, body: Value) -> String {
        let v = self.ok("POST", "volumes", Some(json!({"volume": body})), 202);
        let id = v["volume"]["id"].as_str().expect("id").to_owned();
        self.wait_volume(&id, "available");
        id
    }

    fn fault(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        want: u16,
        name: &str,
    ) -> String {
        let r = self.call(method, path, body);
        assert_eq!(
            r.status,
            want,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json[name]["code"], json!(want), "fault body: {}", r.json);
        r.json[name]["message"].as_str().unwrap_or("").to_owned()
    }
}

fn admin(c: &Cloud) -> Client<'_> {
    let p = c.openrc().get("OS_PASSWORD").cloned().expect("openrc");
    let (token, project) = c.token("admin", &p, "admin");
    Client {
        cloud: c,
        token,
        project,
        version: "3.60".into(),
    }
}

#[test]
fn versions_microversions_and_faults_follow_cinder() {
    let c = Cloud::start("builtin");
    let r = request(c.api, "GET", "/", &[], None).expect("versions");
    assert_eq!(r.status, 300);
    let v = &r.json["versions"][0];
    for k in [
        "status",
        "updated",
        "id",
        "links",
        "min_version",
        "version",
        "media-types",
    ] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }
    assert_eq!(v["min_version"], "3.0");
    let a = admin(&c);
    // No header: 3.0, echoed with Vary.
    let r = request(
        c.api,
        "GET",
        &format!("/v3/{}/volumes", a.project),
        &[("X-Auth-Token", &a.token)],
        None,
    )
    .expect("list");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("openstack-api-version"), Some("volume 3.0"));
    assert_eq!(r.header("vary"), Some("OpenStack-API-Version"));
    assert!(
        r.header("x-openstack-request-id")
            .is_some_and(|h| h.starts_with("req-"))
    );
    for (ver, want) in [
        ("volume 3.999", 406),
        ("volume 3.x", 400),
        ("volume latest", 200),
    ] {
        let r = request(
            c.api,
            "GET",
            "/v3/volumes",
            &[("X-Auth-Token", &a.token), ("OpenStack-API-Version", ver)],
            None,
        )
        .expect("list");
        assert_eq!(r.status, want, "{ver}");
    }
    // No token: 401 with the Keystone challenge.
    let r = request(c.api, "GET", "/v3/volumes", &[], None).expect("401");
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|w| w.starts_with("Keystone"))
    );
    // Fault bodies.
    a.fault(
        "GET",
        "volumes/0b5ed1f1-9a4c-4b5e-9a52-5d8a6e2e4f11",
        None,
        404,
        "itemNotFound",
    );
    let r = request(
        c.api,
        "POST",
        &format!("/v3/{}/volumes", a.project),
        &[("X-Auth-Token", &a.token)],
        Some(b"{not json"),
    )
    .expect("bad json");
    assert_eq!(r.status, 400);
    assert_eq!(r.json["badRequest"]["code"], 400);
    a.fault(
        "POST",
        "volumes",
        Some(json!({"volume": {"size": 0}})),
        400,
        "badRequest",
    );
    a.fault(
        "POST",
        "volumes",
        Some(json!({"volume": {"size": "big"}})),
        400,
        "badRequest",
    );
    a.fault(
        "POST",
        "volumes",
        Some(json!({"volume": {"size": 1, "bogus": 1}})),
        400,
        "badRequest",
    );
    a.fault(
        "POST",
        "volumes",
        Some(json!({"volume": {"size": 1, "volume_type": "nope"}})),
        404,
        "itemNotFound",
    );
    a.fault(
        "POST",
        "volumes",
        Some(json!({"volume": {"size": 1, "availability_zone": "mars"}})),
        400,
        "badRequest",
    );
    a.fault(
        "POST",
        "volumes",
        Some(json!({"volume": {"size": 1, "snapshot_id": "x"}})),
        400,
        "badRequest",
    );
    a.fault(
        "POST",
        "volumes",
        Some(json!(["volume"])),
        400,
        "badRequest",
    );
    let huge = json!({"volume": {"size": 1, "description": "x".repeat(200_000)}});
    let r = a.call("POST", "volumes", Some(huge));
    assert_eq!(r.status, 413);
    a.fault(
        "POST",
        "volumes/0b5ed1f1-9a4c-4b5e-9a52-5d8a6e2e4f11/action",
        Some(json!({"os-extend": {"new_size": 2}})),
        404,
        "itemNotFound",
    );
    // A method the resource does not have: 405 with a fault body.
    a.fault("PATCH", "volumes/detail", None, 405, "badMethod");
    // Project-less URLs reach the same resources.
    a.ok("GET", "/v3/volumes/detail", None, 200);
}

#[test]
fn volumes_snapshots_and_clones_through_the_api() {
    let c = Cloud::start("builtin");
    let a = admin(&c);
    let v1 = a.create_volume(json!({"size": 1, "name": "v1", "metadata": {"k": "v"}}));
    let shown = a.ok("GET", &format!("volumes/{v1}"), None, 200)["volume"].clone();
    assert_eq!(shown["bootable"], "false");
    assert_eq!(shown["metadata"]["k"], "v");
    assert_eq!(shown["volume_type"], "__DEFAULT__");
    assert!(
        shown["os-vol-host-attr:host"]
            .as_str()
            .is_some_and(|h| h.starts_with("node1@basalt#pool"))
    );
    // Extend.
    a.ok(
        "POST",
        &format!("volumes/{v1}/action"),
        Some(json!({"os-extend": {"new_size": 2}})),
        202,
    );
    let v = a.wait_volume(&v1, "available");
    assert_eq!(v["size"], 2);
    a.fault(
        "POST",
        &format!("volumes/{v1}/action"),
        Some(json!({"os-extend": {"new_size": 1}})),
        400,
        "badRequest",
    );
    // Snapshot, create from it, clone.
    let s = a.ok(
        "POST",
        "snapshots",
        Some(json!({"snapshot": {"volume_id": v1, "name": "s1"}})),
        202,
    );
    let s1 = s["snapshot"]["id"].as_str().expect("id").to_owned();
    let s = a.wait_snapshot(&s1, "available");
    assert_eq!(s["size"], 2);
    let v2 = a.create_volume(json!({"snapshot_id": s1, "name": "from-snap"}));
    let v3 = a.create_volume(json!({"source_volid": v1, "size": 3, "name": "clone"}));
    assert_eq!(
        a.ok("GET", &format!("volumes/{v3}"), None, 200)["volume"]["source_volid"],
        json!(v1)
    );
    // A volume with a snapshot cannot be deleted; a snapshot's source can be reverted to it
    // (3.40).
    a.fault("DELETE", &format!("volumes/{v1}"), None, 400, "badRequest");
    let mut a40 = Client {
        version: "3.40".into(),
        ..admin(&c)
    };
    a40.ok(
        "POST",
        &format!("volumes/{v1}/action"),
        Some(json!({"revert": {"snapshot_id": s1}})),
        202,
    );
    a40.wait_volume(&v1, "available");
    a40.version = "3.39".into();
    a40.fault(
        "POST",
        &format!("volumes/{v1}/action"),
        Some(json!({"revert": {"snapshot_id": s1}})),
        404,
        "itemNotFound",
    );
    // Lists: pagination with next links, with_count (3.45), sort, filters.
    let mut a45 = Client {
        version: "3.45".into(),
        ..admin(&c)
    };
    let page = a45.ok(
        "GET",
        "volumes?limit=1&sort=name:asc&with_count=true",
        None,
        200,
    );
    assert_eq!(page["volumes"].as_array().expect("list").len(), 1);
    assert_eq!(page["count"], 3);
    assert_eq!(page["volumes"][0]["name"], "clone");
    let next = page["volumes_links"][0]["href"]
        .as_str()
        .expect("next link")
        .to_owned();
    let next = next
        .split_once("/v3/")
        .map(|(_, p)| format!("/v3/{p}"))
        .expect("path");
    let page2 = a45.ok("GET", &next, None, 200);
    assert_eq!(page2["volumes"][0]["name"], "from-snap");
    let named = a45.ok("GET", "volumes/detail?name=v1", None, 200);
    assert_eq!(named["volumes"].as_array().expect("list").len(), 1);
    a45.version = "3.34".into();
    let like = a45.ok("GET", "volumes?name~=from", None, 200);
    assert_eq!(like["volumes"].as_array().expect("list").len(), 1);
    a45.version = "3.12".into();
    let sum = a45.ok("GET", "volumes/summary", None, 200);
    assert_eq!(sum["volume-summary"]["total_count"], 3);
    assert_eq!(sum["volume-summary"]["total_size"], 2 + 2 + 3);
    // Metadata.
    a.ok(
        "POST",
        &format!("volumes/{v2}/metadata"),
        Some(json!({"metadata": {"a": "1"}})),
        200,
    );
    let m = a.ok(
        "PUT",
        &format!("volumes/{v2}/metadata/a"),
        Some(json!({"meta": {"a": "2"}})),
        200,
    );
    assert_eq!(m["meta"]["a"], "2");
    a.fault(
        "PUT",
        &format!("volumes/{v2}/metadata/a"),
        Some(json!({"meta": {"b": "2"}})),
        400,
        "badRequest",
    );
    a.ok("DELETE", &format!("volumes/{v2}/metadata/a"), None, 200);
    a.fault(
        "GET",
        &format!("volumes/{v2}/metadata/a"),
        None,
        404,
        "itemNotFound",
    );
    // Update, bootable, read-only.
    let u = a.ok(
        "PUT",
        &format!("volumes/{v2}"),
        Some(json!({"volume": {"name": "renamed"}})),
        200,
    );
    assert_eq!(u["volume"]["name"], "renamed");
    a.ok(
        "POST",
        &format!("volumes/{v2}/action"),
        Some(json!({"os-set_bootable": {"bootable": true}})),
        200,
    );
    assert_eq!(
        a.ok("GET", &format!("volumes/{v2}"), None, 200)["volume"]["bootable"],
        "true"
    );
    // Delete: cascade takes the snapshot along.
    a.ok("DELETE", &format!("volumes/{v1}?cascade=true"), None, 202);
    a.ok("DELETE", &format!("volumes/{v2}"), None, 202);
    a.ok("DELETE", &format!("volumes/{v3}"), None, 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.ok("GET", "volumes", None, 200)["volumes"]
        .as_array()
        .is_some_and(|l| !l.is_empty())
    {
        assert!(Instant::now() < deadline, "volumes never went");
        std::thread::sleep(Duration::from_millis(50));
    }
    a.fault("GET", &format!("snapshots/{s1}"), None, 404, "itemNotFound");
}

#[test]
fn tenants_are_isolated_and_policy_holds() {
    let c = Cloud::start("builtin");
    let a = admin(&c);
    c.identity(&["project", "create", "demo"]);
    c.identity(&["project", "create", "other"]);
    c.identity(&[
        "user",
        "create",
        "alice",
        "--password",
        "alice-pw",
        "--project",
        "demo",
    ]);
    c.identity(&[
        "user",
        "create",
        "bob",
        "--password",
        "bob-pw",
        "--project",
        "other",
    ]);
    c.identity(&[
        "user",
        "create",
        "rita",
        "--password",
        "rita-pw",
        "--project",
        "demo",
    ]);
    c.identity(&["role", "add", "alice", "demo", "member"]);
    c.identity(&["role", "add", "bob", "other", "member"]);
    c.identity(&["role", "add", "rita", "demo", "reader"]);
    let client = |u: &str, p: &str, proj: &str| {
        let (token, project) = c.token(u, p, proj);
        Client {
            cloud: &c,
            token,
            project,
            version: "3.60".into(),
        }
    };
    let alice = client("alice", "alice-pw", "demo");
    let bob = client("bob", "bob-pw", "other");
    let rita = client("rita", "rita-pw", "demo");
    let v = alice.create_volume(json!({"size": 1, "name": "alice-vol"}));
    // Another project's member: not there at all.
    bob.fault("GET", &format!("volumes/{v}"), None, 404, "itemNotFound");
    bob.fault("DELETE", &format!("volumes/{v}"), None, 404, "itemNotFound");
    bob.fault(
        "POST",
        "snapshots",
        Some(json!({"snapshot": {"volume_id": v}})),
        404,
        "itemNotFound",
    );
    bob.fault(
        "POST",
        &format!("volumes/{v}/action"),
        Some(json!({"os-extend": {"new_size": 2}})),
        404,
        "itemNotFound",
    );
    assert_eq!(bob.ok("GET", "volumes", None, 200)["volumes"], json!([]));
    // Non-admins filter only on Cinder's allow-list (3.31+); admins may filter on anything.
    bob.fault("GET", "volumes?bogus_filter=1", None, 400, "badRequest");
    // Bob's token in Alice's project URL.
    let r = request(
        c.api,
        "GET",
        &format!("/v3/{}/volumes", alice.project),
        &[("X-Auth-Token", &bob.token)],
        None,
    )
    .expect("req");
    assert_eq!(r.status, 400, "{}", r.json);
    // A reader reads but does not write.
    assert_eq!(
        rita.ok("GET", "volumes", None, 200)["volumes"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    rita.fault(
        "POST",
        "volumes",
        Some(json!({"volume": {"size": 1}})),
        403,
        "forbidden",
    );
    rita.fault("DELETE", &format!("volumes/{v}"), None, 403, "forbidden");
    // Members cannot do admin things; the admin sees the host attribute, members do not.
    alice.fault(
        "POST",
        &format!("volumes/{v}/action"),
        Some(json!({"os-reset_status": {"status": "error"}})),
        403,
        "forbidden",
    );
    assert!(
        alice.ok("GET", &format!("volumes/{v}"), None, 200)["volume"]
            .get("os-vol-host-attr:host")
            .is_none()
    );
    let all = a.ok("GET", "volumes/detail?all_tenants=1", None, 200);
    assert!(
        all["volumes"]
            .as_array()
            .expect("list")
            .iter()
            .any(|x| x["id"] == json!(v))
    );
    // Quota: the admin limits demo to one volume; the second create is 413 overLimit.
    a.ok(
        "PUT",
        &format!("os-quota-sets/{}", alice.project),
        Some(json!({"quota_set": {"volumes": 1}})),
        200,
    );
    let r = alice.call("POST", "volumes", Some(json!({"volume": {"size": 1}})));
    assert_eq!(r.status, 413, "{}", r.json);
    assert_eq!(r.json["overLimit"]["code"], 413);
    assert_eq!(r.header("retry-after"), Some("0"));
    let q = alice.ok(
        "GET",
        &format!("os-quota-sets/{}?usage=true", alice.project),
        None,
        200,
    );
    assert_eq!(q["quota_set"]["volumes"]["in_use"], 1);
    // Transfers: Alice gives the volume to Bob.
    let a57 = Client {
        version: "3.57".into(),
        ..client("alice", "alice-pw", "demo")
    };
    let t = a57.ok(
        "POST",
        "volume-transfers",
        Some(json!({"transfer": {"volume_id": v, "name": "gift"}})),
        202,
    );
    let (tid, key) = (
        t["transfer"]["id"].as_str().expect("id").to_owned(),
        t["transfer"]["auth_key"].as_str().expect("key").to_owned(),
    );
    assert_eq!(
        alice.ok("GET", &format!("volumes/{v}"), None, 200)["volume"]["status"],
        "awaiting-transfer"
    );
    let b57 = Client {
        version: "3.57".into(),
        ..client("bob", "bob-pw", "other")
    };
    b57.fault(
        "POST",
        &format!("volume-transfers/{tid}/accept"),
        Some(json!({"accept": {"auth_key": "wrong-key-123456"}})),
        400,
        "badRequest",
    );
    b57.ok(
        "POST",
        &format!("volume-transfers/{tid}/accept"),
        Some(json!({"accept": {"auth_key": key}})),
        202,
    );
    assert_eq!(
        bob.ok("GET", &format!("volumes/{v}"), None, 200)["volume"]["status"],
        "available"
    );
    alice.fault("GET", &format!("volumes/{v}"), None, 404, "itemNotFound");
    let q = alice.ok(
        "GET",
        &format!("os-quota-sets/{}?usage=true", alice.project),
        None,
        200,
    );
    assert_eq!(q["quota_set"]["volumes"]["in_use"], 0);
}

#[test]
fn attachments_give_connection_info_an_initiator_logs_in_with() {
    let c = Cloud::start("builtin");
    let a = Client {
        version: "3.54".into(),
        ..admin(&c)
    };
    let v = a.create_volume(json!({"size": 1, "name": "attach-me"}));
    let iqn = "iqn.1994-05.com.redhat:compute-7";
    let connector = json!({"initiator": iqn, "ip": "127.0.0.1", "host": "compute-7", "platform": "x86_64", "os_type": "linux", "multipath": false});
    let inst = "5d0c4b8f-6f53-4f7e-9d2a-8a5f1c7f0e11";
    let at = a.ok(
        "POST",
        "attachments",
        Some(json!({"attachment": {"volume_uuid": v, "instance_uuid": inst}})),
        200,
    );
    let aid = at["attachment"]["id"].as_str().expect("id").to_owned();
    assert_eq!(at["attachment"]["status"], "reserved");
    assert_eq!(
        a.ok("GET", &format!("volumes/{v}"), None, 200)["volume"]["status"],
        "reserved"
    );
    let at = a.ok(
        "PUT",
        &format!("attachments/{aid}"),
        Some(json!({"attachment": {"connector": connector}})),
        200,
    );
    let ci = at["attachment"]["connection_info"].clone();
    assert_eq!(ci["driver_volume_type"], "iscsi", "{ci}");
    // Flat, as Cinder's attachments API gives it.
    assert!(ci.get("data").is_none(), "{ci}");
    assert_eq!(ci["attachment_id"], json!(aid));
    let d = &ci;
    assert_eq!(d["target_portal"], json!(format!("127.0.0.1:{}", c.iscsi)));
    assert_eq!(d["auth_method"], "CHAP");
    let (target, user, secret) = (
        d["target_iqn"].as_str().expect("iqn").to_owned(),
        d["auth_username"].as_str().expect("user").to_owned(),
        d["auth_password"].as_str().expect("secret").to_owned(),
    );
    a.ok(
        "POST",
        &format!("attachments/{aid}/action"),
        Some(json!({"os-complete": {}})),
        204,
    );
    let shown = a.ok("GET", &format!("volumes/{v}"), None, 200)["volume"].clone();
    assert_eq!(shown["status"], "in-use");
    assert_eq!(shown["attachments"][0]["attachment_id"], json!(aid));
    assert_eq!(shown["attachments"][0]["server_id"], inst);
    // The initiator logs in with those credentials and the data round-trips.
    let addr = SocketAddr::from(([127, 0, 0, 1], c.iscsi));
    let mut i = Initiator::login(addr, iqn, &target, Some((&user, &secret)), 1)
        .expect("login with the attachment's CHAP");
    i.clear_unit_attentions(0).expect("TUR");
    let data: Vec<u8> = (0..8192u32).map(|x| (x * 7 % 251) as u8).collect();
    assert_eq!(i.write16(0, 100, &data).expect("write").status, 0);
    let r = i.read16(0, 100, 16).expect("read");
    assert_eq!(r.data, data);
    i.logout().expect("logout");
    // A wrong secret and another initiator are refused.
    assert!(Initiator::login(addr, iqn, &target, Some((&user, "not-the-secret")), 2).is_err());
    assert!(
        Initiator::login(
            addr,
            "iqn.2000-01.org.evil:x",
            &target,
            Some((&user, &secret)),
            3
        )
        .is_err()
    );
    // Deleting the volume is refused while attached; deleting the attachment detaches.
    a.fault("DELETE", &format!("volumes/{v}"), None, 400, "badRequest");
    let rest = a.ok("DELETE", &format!("attachments/{aid}"), None, 200);
    assert_eq!(rest["attachments"], json!([]));
    assert_eq!(
        a.ok("GET", &format!("volumes/{v}"), None, 200)["volume"]["status"],
        "available"
    );
    assert!(
        Initiator::login(addr, iqn, &target, Some((&user, &secret)), 4).is_err(),
        "the export is gone"
    );
    // The legacy flow: initialize_connection gives the same shape.
    let ci = a.ok(
        "POST",
        &format!("volumes/{v}/action"),
        Some(json!({"os-initialize_connection": {"connector": connector}})),
        200,
    );
    assert_eq!(ci["connection_info"]["driver_volume_type"], "iscsi");
    a.ok(
        "POST",
        &format!("volumes/{v}/action"),
        Some(json!({"os-terminate_connection": {"connector": connector}})),
        202,
    );
    a.ok(
        "POST",
        &format!("volumes/{v}/action"),
        Some(json!({"os-reserve": {}})),
        202,
    );
    assert_eq!(
        a.ok("GET", &format!("volumes/{v}"), None, 200)["volume"]["status"],
        "attaching"
    );
    a.ok(
        "POST",
        &format!("volumes/{v}/action"),
        Some(json!({"os-unreserve": {}})),
        202,
    );
    assert_eq!(
        a.ok("GET", &format!("volumes/{v}"), None, 200)["volume"]["status"],
        "available"
    );
}

#[test]
fn nvmeof_attachments_connect_the_userspace_host_and_extend_in_use() {
    use basalt_engine::{Engine, EngineConfig};
    use basalt_nvmf::host::{Controller, HostConfig};

    let c = Cloud::start("builtin");
    let a = Client {
        version: "3.54".into(),
        ..admin(&c)
    };
    let v = a.create_volume(json!({"size": 1, "name": "nvme-me"}));
    let hostnqn = "nqn.2014-08.org.nvmexpress:uuid:7b0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d";
    // A connector with a host NQN and no IQN gets NVMe-oF.
    let connector = json!({"nqn": hostnqn, "host": "compute-9", "ip": "127.0.0.1", "platform": "x86_64", "os_type": "linux"});
    let at = a.ok(
        "POST",
        "attachments",
        Some(json!({"attachment": {"volume_uuid": v, "connector": connector, "mode": "rw"}})),
        200,
    );
    let aid = at["attachment"]["id"].as_str().expect("id").to_owned();
    assert_eq!(at["attachment"]["status"], "attaching");
    let ci = at["attachment"]["connection_info"].clone();
    assert_eq!(ci["driver_volume_type"], "nvmeof", "{ci}");
    let d = &ci;
    assert_eq!(d["vol_uuid"], json!(v));
    let port: u16 = d["portals"][0][1]
        .as_str()
        .expect("port")
        .parse()
        .expect("port number");
    assert_eq!(d["portals"][0][2], "tcp");
    let nqn = d["target_nqn"].as_str().expect("nqn").to_owned();
    a.ok(
        "POST",
        &format!("attachments/{aid}/action"),
        Some(json!({"os-complete": {}})),
        204,
    );
    // Extend while in use (3.42).
    let mut a42 = Client {
        version: "3.41".into(),
        ..admin(&c)
    };
    a42.fault(
        "POST",
        &format!("volumes/{v}/action"),
        Some(json!({"os-extend": {"new_size": 2}})),
        400,
        "badRequest",
    );
    a42.version = "3.42".into();
    a42.ok(
        "POST",
        &format!("volumes/{v}/action"),
        Some(json!({"os-extend": {"new_size": 2}})),
        202,
    );
    let shown = a42.wait_volume(&v, "in-use");
    assert_eq!(shown["size"], 2);

    let mut cfg = EngineConfig::with_cores(1);
    cfg.pin = false;
    let engine = Engine::start(&cfg).expect("engine");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let allowed = HostConfig {
        hostnqn: hostnqn.into(),
        ..HostConfig::default()
    };
    let other = HostConfig {
        hostnqn: "nqn.2014-08.org.nvmexpress:uuid:00000000-dead-4bee-8f00-000000000000".into(),
        ..HostConfig::default()
    };
    let target = nqn.clone();
    engine
        .reactor(0)
        .block_on(move || {
            Box::pin(async move {
                assert!(
                    Controller::connect(addr, &target, &other).await.is_err(),
                    "another host got in"
                );
                let ctrl = Controller::connect(addr, &target, &allowed)
                    .await
                    .expect("connect");
                let (ns, _) = ctrl.identify_namespace(1).await.expect("identify");
                assert_eq!(
                    u64::from(ns.block_size) * ns.blocks,
                    2 << 30,
                    "the extend is visible"
                );
                let q = ctrl.create_io_queue(1, 32).await.expect("queue");
                let data: Vec<u8> = (0..16384u32).map(|x| (x % 253) as u8).collect();
                q.write(&ns, 2048, &data, false).await.expect("write");
                assert!(q.read(&ns, 2048, 32).await.expect("read") == data);
                ctrl.disconnect();
            })
        })
        .expect("ran");
    a.ok("DELETE", &format!("attachments/{aid}"), None, 200);
    assert_eq!(
        a.ok("GET", &format!("volumes/{v}"), None, 200)["volume"]["status"],
        "available"
    );
}

#[test]
fn disabled_services_get_no_volumes_and_failures_become_user_messages() {
    let c = Cloud::start("builtin");
    let a = admin(&c);
    let svcs = a.ok("GET", "os-services?binary=cinder-volume", None, 200);
    let host = svcs["services"][0]["host"]
        .as_str()
        .expect("host")
        .to_owned();
    assert_eq!(svcs["services"][0]["state"], "up");
    a.ok(
        "PUT",
        "os-services/disable-log-reason",
        Some(json!({"host": host, "binary": "cinder-volume", "disabled_reason": "maintenance"})),
        200,
    );
    // Wait for a stats interval so the scheduler has seen the flag from the store.
    std::thread::sleep(Duration::from_millis(1500));
    let v = a.ok(
        "POST",
        "volumes",
        Some(json!({"volume": {"size": 1, "name": "nowhere"}})),
        202,
    );
    let id = v["volume"]["id"].as_str().expect("id").to_owned();
    a.wait_volume(&id, "error");
    let a3 = Client {
        version: "3.3".into(),
        ..admin(&c)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let msgs = loop {
        let m = a3.ok("GET", &format!("messages?resource_uuid={id}"), None, 200);
        if m["messages"].as_array().is_some_and(|l| !l.is_empty()) {
            break m;
        }
        assert!(Instant::now() < deadline, "no user message for {id}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let m = &msgs["messages"][0];
    assert_eq!(m["resource_type"], "VOLUME");
    assert_eq!(m["message_level"], "ERROR");
    assert!(
        m["user_message"]
            .as_str()
            .is_some_and(|t| t.contains("schedule allocate volume")),
        "{m}"
    );
    let mid = m["id"].as_str().expect("id").to_owned();
    a3.ok("DELETE", &format!("messages/{mid}"), None, 204);
    a3.fault("GET", &format!("messages/{mid}"), None, 404, "itemNotFound");
    // The error volume deletes; once enabled again the node takes volumes.
    a.ok("DELETE", &format!("volumes/{id}"), None, 202);
    a.ok(
        "PUT",
        "os-services/enable",
        Some(json!({"host": host, "binary": "cinder-volume"})),
        200,
    );
    std::thread::sleep(Duration::from_millis(1500));
    a.create_volume(json!({"size": 1, "name": "somewhere"}));
}

#[test]
fn types_specs_access_admin_views_and_version_edges() {
    let c = Cloud::start("builtin");
    let a = admin(&c);
    c.identity(&["project", "create", "demo"]);
    c.identity(&[
        "user",
        "create",
        "alice",
        "--password",
        "alice-pw",
        "--project",
        "demo",
    ]);
    c.identity(&["role", "add", "alice", "demo", "member"]);
    let (token, project) = c.token("alice", "alice-pw", "demo");
    let alice = Client {
        cloud: &c,
        token,
        project,
        version: "3.62".into(),
    };

    // Types: create, specs, private access, defaults.
    let t = a.ok("POST", "types", Some(json!({"volume_type": {"name": "gold", "extra_specs": {"volume_backend_name": "basalt"}}})), 200);
    let gold = t["volume_type"]["id"].as_str().expect("id").to_owned();
    a.fault(
        "POST",
        "types",
        Some(json!({"volume_type": {"name": "gold"}})),
        409,
        "conflictingRequest",
    );
    a.ok(
        "POST",
        &format!("types/{gold}/extra_specs"),
        Some(json!({"extra_specs": {"capabilities:thin_provisioning_support": "<is> True"}})),
        200,
    );
    let specs = a.ok("GET", &format!("types/{gold}/extra_specs"), None, 200);
    assert_eq!(specs["extra_specs"]["volume_backend_name"], "basalt");
    alice.fault(
        "POST",
        "types",
        Some(json!({"volume_type": {"name": "mine"}})),
        403,
        "forbidden",
    );
    let p = a.ok(
        "POST",
        "types",
        Some(json!({"volume_type": {"name": "secret", "os-volume-type-access:is_public": false}})),
        200,
    );
    let secret = p["volume_type"]["id"].as_str().expect("id").to_owned();
    alice.fault(
        "POST",
        "volumes",
        Some(json!({"volume": {"size": 1, "volume_type": "secret"}})),
        404,
        "itemNotFound",
    );
    a.ok(
        "POST",
        &format!("types/{secret}/action"),
        Some(json!({"addProjectAccess": {"project": alice.project}})),
        202,
    );
    let acc = a.ok(
        "GET",
        &format!("types/{secret}/os-volume-type-access"),
        None,
        200,
    );
    assert_eq!(
        acc["volume_type_access"][0]["project_id"],
        json!(alice.project)
    );
    let v = alice.create_volume(json!({"size": 1, "volume_type": "secret"}));
    assert_eq!(
        alice.ok("GET", &format!("volumes/{v}"), None, 200)["volume"]["volume_type"],
        "secret"
    );
    // A type in use cannot be deleted; a project's default type applies to its creates.
    a.fault(
        "DELETE",
        &format!("types/{secret}"),
        None,
        400,
        "badRequest",
    );
    let mut a62 = Client {
        version: "3.62".into(),
        ..admin(&c)
    };
    a62.ok(
        "PUT",
        &format!("/v3/default-types/{}", alice.project),
        Some(json!({"default_type": {"volume_type": "gold"}})),
        200,
    );
    let v2 = alice.create_volume(json!({"size": 1}));
    assert_eq!(
        alice.ok("GET", &format!("volumes/{v2}"), None, 200)["volume"]["volume_type"],
        "gold"
    );
    // Retype in place: the node satisfies "secret"; a type naming another backend would need a
    // migration, which is refused.
    alice.ok(
        "POST",
        &format!("volumes/{v2}/action"),
        Some(json!({"os-retype": {"new_type": "secret"}})),
        202,
    );
    assert_eq!(
        alice.ok("GET", &format!("volumes/{v2}"), None, 200)["volume"]["volume_type"],
        "secret"
    );
    a.ok("POST", "types", Some(json!({"volume_type": {"name": "elsewhere", "extra_specs": {"volume_backend_name": "other"}}})), 200);
    alice.fault(
        "POST",
        &format!("volumes/{v2}/action"),
        Some(json!({"os-retype": {"new_type": "elsewhere", "migration_policy": "on-demand"}})),
        400,
        "badRequest",
    );
    alice.fault(
        "POST",
        &format!("volumes/{v2}/action"),
        Some(json!({"os-retype": {"new_type": "secret"}})),
        400,
        "badRequest",
    );
    // 3.71's extend completion: no Basalt extend waits for one.
    let mut a71 = Client {
        version: "3.70".into(),
        ..admin(&c)
    };
    a71.fault(
        "POST",
        &format!("volumes/{v2}/action"),
        Some(json!({"os-extend_volume_completion": {"error": false}})),
        404,
        "itemNotFound",
    );
    a71.version = "3.71".into();
    a71.fault(
        "POST",
        &format!("volumes/{v2}/action"),
        Some(json!({"os-extend_volume_completion": {"error": false}})),
        400,
        "badRequest",
    );
    a62.version = "3.61".into();
    a62.fault(
        "GET",
        &format!("/v3/default-types/{}", alice.project),
        None,
        404,
        "itemNotFound",
    );

    // Admin views.
    let pools = a.ok("GET", "scheduler-stats/get_pools?detail=true", None, 200);
    let pool = &pools["pools"][0];
    assert_eq!(pool["name"], "node1@basalt#pool");
    assert!(
        pool["capabilities"]["total_capacity_gb"]
            .as_f64()
            .is_some_and(|g| g > 7.0),
        "{pool}"
    );
    alice.fault("GET", "scheduler-stats/get_pools", None, 403, "forbidden");
    a.ok("GET", "capabilities/node1@basalt", None, 200);
    a.ok("GET", "os-hosts", None, 200);
    let ext = a.ok("GET", "extensions", None, 200);
    assert!(
        ext["extensions"]
            .as_array()
            .expect("list")
            .iter()
            .any(|e| e["name"] == "Hosts")
    );
    let lim = alice.ok("GET", "limits", None, 200);
    assert_eq!(lim["limits"]["absolute"]["totalVolumesUsed"], 2);
    assert_eq!(lim["limits"]["absolute"]["maxTotalVolumes"], 10);

    // Snapshots: metadata, actions, lists.
    let s = alice.ok(
        "POST",
        "snapshots",
        Some(json!({"snapshot": {"volume_id": v, "name": "s", "metadata": {"a": "1"}}})),
        202,
    );
    let sid = s["snapshot"]["id"].as_str().expect("id").to_owned();
    alice.wait_snapshot(&sid, "available");
    let m = alice.ok(
        "PUT",
        &format!("snapshots/{sid}/metadata"),
        Some(json!({"metadata": {"b": "2"}})),
        200,
    );
    assert_eq!(m["metadata"], json!({"b": "2"}));
    alice.ok("DELETE", &format!("snapshots/{sid}/metadata/b"), None, 200);
    alice.fault(
        "POST",
        &format!("snapshots/{sid}/action"),
        Some(json!({"os-reset_status": {"status": "error"}})),
        403,
        "forbidden",
    );
    a.ok(
        "POST",
        &format!("snapshots/{sid}/action"),
        Some(json!({"os-reset_status": {"status": "error"}})),
        202,
    );
    assert_eq!(
        alice.ok("GET", &format!("snapshots/{sid}"), None, 200)["snapshot"]["status"],
        "error"
    );
    let mut al = Client {
        version: "3.40".into(),
        ..Client {
            cloud: &c,
            token: alice.token.clone(),
            project: alice.project.clone(),
            version: String::new(),
        }
    };
    al.fault(
        "POST",
        &format!("volumes/{v}/action"),
        Some(json!({"revert": {"snapshot_id": sid}})),
        400,
        "badRequest",
    );
    al.version = "3.45".into();
    let listed = al.ok(
        "GET",
        "snapshots/detail?with_count=true&sort_key=name&sort_dir=asc",
        None,
        200,
    );
    assert_eq!(listed["count"], 1);
    al.fault(
        "GET",
        "snapshots?sort=name&sort_key=name",
        None,
        400,
        "badRequest",
    );
    al.ok("DELETE", &format!("snapshots/{sid}"), None, 202);

    // Version edges: attachments need 3.27; strict bodies from 3.53 only; time filters 3.60.
    let mut e = Client {
        cloud: &c,
        token: alice.token.clone(),
        project: alice.project.clone(),
        version: "3.26".into(),
    };
    e.fault("GET", "attachments", None, 404, "itemNotFound");
    e.version = "3.52".into();
    let lenient = e.ok(
        "POST",
        "volumes",
        Some(json!({"volume": {"size": 1, "unknown_key": true}})),
        202,
    );
    let v3 = lenient["volume"]["id"].as_str().expect("id").to_owned();
    e.wait_volume(&v3, "available");
    e.version = "3.53".into();
    e.fault(
        "POST",
        "volumes",
        Some(json!({"volume": {"size": 1, "unknown_key": true}})),
        400,
        "badRequest",
    );
    e.fault(
        "GET",
        "volumes?created_at=gt:2020-01-01T00:00:00",
        None,
        400,
        "badRequest",
    );
    e.version = "3.60".into();
    let recent = e.ok(
        "GET",
        "volumes?created_at=gt:2020-01-01T00:00:00",
        None,
        200,
    );
    assert_eq!(recent["volumes"].as_array().map(Vec::len), Some(3));
    let none = e.ok(
        "GET",
        "volumes?created_at=lt:2020-01-01T00:00:00",
        None,
        200,
    );
    assert_eq!(none["volumes"], json!([]));
    let off = e.ok("GET", "volumes?sort=created_at:asc&offset=2", None, 200);
    assert_eq!(off["volumes"][0]["id"], json!(v3));

    // Read-only flag, legacy attach and detach.
    let ro = e.ok(
        "POST",
        &format!("volumes/{v3}/action"),
        Some(json!({"os-update_readonly_flag": {"readonly": true}})),
        202,
    );
    assert_eq!(ro, Value::Null);
    // From now on the flag shows in the metadata, as Cinder's admin metadata.
    let shown = e.ok("GET", &format!("volumes/{v3}"), None, 200);
    assert_eq!(shown["volume"]["metadata"]["readonly"], "True");
    e.fault("POST", &format!("volumes/{v3}/action"), Some(json!({"os-attach": {"instance_uuid": "8f1c8d0e-6d1b-4f0e-9f44-2a6b9c1d7e21", "mountpoint": "/dev/vdb", "mode": "rw"}})), 400, "badRequest");
    e.ok(
        "POST",
        &format!("volumes/{v3}/action"),
        Some(json!({"os-reserve": {}})),
        202,
    );
    e.ok("POST", &format!("volumes/{v3}/action"), Some(json!({"os-attach": {"instance_uuid": "8f1c8d0e-6d1b-4f0e-9f44-2a6b9c1d7e21", "mountpoint": "/dev/vdb", "mode": "ro"}})), 202);
    let att = e.ok("GET", &format!("volumes/{v3}"), None, 200)["volume"].clone();
    assert_eq!(att["status"], "in-use");
    assert_eq!(att["attachments"][0]["device"], "/dev/vdb");
    e.ok(
        "POST",
        &format!("volumes/{v3}/action"),
        Some(json!({"os-begin_detaching": {}})),
        202,
    );
    assert_eq!(
        e.ok("GET", &format!("volumes/{v3}"), None, 200)["volume"]["status"],
        "detaching"
    );
    e.ok(
        "POST",
        &format!("volumes/{v3}/action"),
        Some(json!({"os-roll_detaching": {}})),
        202,
    );
    e.ok(
        "POST",
        &format!("volumes/{v3}/action"),
        Some(json!({"os-detach": {}})),
        202,
    );
    assert_eq!(
        e.ok("GET", &format!("volumes/{v3}"), None, 200)["volume"]["status"],
        "available"
    );
    // An admin's force delete from an odd state.
    a.ok(
        "POST",
        &format!("volumes/{v3}/action"),
        Some(json!({"os-reset_status": {"status": "maintenance"}})),
        202,
    );
    e.fault("DELETE", &format!("volumes/{v3}"), None, 400, "badRequest");
    a.ok(
        "POST",
        &format!("volumes/{v3}/action"),
        Some(json!({"os-force_delete": {}})),
        202,
    );
}

#[test]
fn quota_classes_legacy_transfers_and_the_remaining_endpoints() {
    let c = Cloud::start("builtin");
    let a = admin(&c);
    c.identity(&["project", "create", "demo"]);
    c.identity(&[
        "user",
        "create",
        "alice",
        "--password",
        "alice-pw",
        "--project",
        "demo",
    ]);
    c.identity(&["role", "add", "alice", "demo", "member"]);
    let (token, project) = c.token("alice", "alice-pw", "demo");
    let alice = Client {
        cloud: &c,
        token,
        project,
        version: "3.0".into(),
    };

    // Quota classes and defaults: a new default applies to projects without overrides.
    let qc = a.ok("GET", "os-quota-class-sets/default", None, 200);
    assert_eq!(qc["quota_class_set"]["volumes"], 10);
    a.ok(
        "PUT",
        "os-quota-class-sets/default",
        Some(json!({"quota_class_set": {"snapshots": 12}})),
        200,
    );
    let d = alice.ok(
        "GET",
        &format!("os-quota-sets/{}/defaults", alice.project),
        None,
        200,
    );
    assert_eq!(d["quota_set"]["snapshots"], 12);
    alice.fault(
        "PUT",
        "os-quota-class-sets/default",
        Some(json!({"quota_class_set": {"volumes": 99}})),
        403,
        "forbidden",
    );
    a.fault(
        "PUT",
        &format!("os-quota-sets/{}", alice.project),
        Some(json!({"quota_set": {"volumes": -2}})),
        400,
        "badRequest",
    );
    a.fault(
        "PUT",
        &format!("os-quota-sets/{}", alice.project),
        Some(json!({"quota_set": {"bogus": 1}})),
        400,
        "badRequest",
    );
    a.ok(
        "PUT",
        &format!("os-quota-sets/{}", alice.project),
        Some(json!({"quota_set": {"volumes": 3}})),
        200,
    );
    a.ok(
        "DELETE",
        &format!("os-quota-sets/{}", alice.project),
        None,
        200,
    );
    let q = alice.ok(
        "GET",
        &format!("os-quota-sets/{}", alice.project),
        None,
        200,
    );
    assert_eq!(q["quota_set"]["volumes"], 10);

    // The legacy transfer API (no microversion needed).
    let v = alice.create_volume(json!({"size": 1, "name": "legacy"}));
    let t = alice.ok(
        "POST",
        "os-volume-transfer",
        Some(json!({"transfer": {"volume_id": v, "name": "t"}})),
        202,
    );
    let tid = t["transfer"]["id"].as_str().expect("id").to_owned();
    assert_eq!(t["transfer"]["auth_key"].as_str().map(str::len), Some(16));
    assert_eq!(
        alice.ok("GET", "os-volume-transfer", None, 200)["transfers"][0]["id"],
        json!(tid)
    );
    let det = alice.ok("GET", "os-volume-transfer/detail", None, 200);
    assert!(det["transfers"][0]["created_at"].is_string());
    alice.ok("GET", &format!("os-volume-transfer/{tid}"), None, 200);
    // The new endpoint needs 3.55.
    alice.fault("GET", "volume-transfers", None, 404, "itemNotFound");
    alice.ok("DELETE", &format!("os-volume-transfer/{tid}"), None, 202);
    assert_eq!(
        alice.ok("GET", &format!("volumes/{v}"), None, 200)["volume"]["status"],
        "available"
    );
    let t = alice.ok(
        "POST",
        "os-volume-transfer",
        Some(json!({"transfer": {"volume_id": v}})),
        202,
    );
    let (tid, key) = (
        t["transfer"]["id"].as_str().expect("id").to_owned(),
        t["transfer"]["auth_key"].as_str().expect("key").to_owned(),
    );
    a.ok(
        "POST",
        &format!("os-volume-transfer/{tid}/accept"),
        Some(json!({"accept": {"auth_key": key}})),
        202,
    );
    alice.fault("GET", &format!("volumes/{v}"), None, 404, "itemNotFound");
    assert_eq!(
        a.ok("GET", &format!("volumes/{v}"), None, 200)["volume"]["os-vol-tenant-attr:tenant_id"],
        json!(a.project)
    );

    // Types: update, spec show/put/delete, delete; hosts and zones.
    let t = a.ok(
        "POST",
        "types",
        Some(json!({"volume_type": {"name": "bronze", "extra_specs": {"k": "v"}}})),
        200,
    );
    let bronze = t["volume_type"]["id"].as_str().expect("id").to_owned();
    let u = a.ok(
        "PUT",
        &format!("types/{bronze}"),
        Some(json!({"volume_type": {"description": "cheap"}})),
        200,
    );
    assert_eq!(u["volume_type"]["description"], "cheap");
    assert_eq!(
        a.ok("GET", &format!("types/{bronze}/extra_specs/k"), None, 200)["k"],
        "v"
    );
    a.ok(
        "PUT",
        &format!("types/{bronze}/extra_specs/k"),
        Some(json!({"k": "w"})),
        200,
    );
    a.fault(
        "PUT",
        &format!("types/{bronze}/extra_specs/k"),
        Some(json!({"other": "w"})),
        400,
        "badRequest",
    );
    a.ok(
        "DELETE",
        &format!("types/{bronze}/extra_specs/k"),
        None,
        202,
    );
    a.fault(
        "GET",
        &format!("types/{bronze}/extra_specs/k"),
        None,
        404,
        "itemNotFound",
    );
    assert_eq!(
        alice.ok("GET", "types/default", None, 200)["volume_type"]["name"],
        "__DEFAULT__"
    );
    a.ok("DELETE", &format!("types/{bronze}"), None, 202);
    a.fault("GET", &format!("types/{bronze}"), None, 404, "itemNotFound");
    let hosts = a.ok("GET", "os-hosts", None, 200);
    let h = hosts["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["service"] == "cinder-volume")
        .expect("volume host")["host_name"]
        .as_str()
        .expect("name")
        .to_owned();
    a.ok("GET", &format!("os-hosts/{h}"), None, 200);
    alice.fault("GET", "os-hosts", None, 403, "forbidden");
    let az = alice.ok("GET", "os-availability-zone", None, 200);
    assert_eq!(az["availabilityZoneInfo"][0]["zoneName"], "nova");

    // Snapshot update and the detailed list; a message list at 3.5 pages.
    let v2 = a.create_volume(json!({"size": 1}));
    let s = a.ok(
        "POST",
        "snapshots",
        Some(json!({"snapshot": {"volume_id": v2}})),
        202,
    );
    let sid = s["snapshot"]["id"].as_str().expect("id").to_owned();
    a.wait_snapshot(&sid, "available");
    let su = a.ok(
        "PUT",
        &format!("snapshots/{sid}"),
        Some(json!({"snapshot": {"name": "renamed"}})),
        200,
    );
    assert_eq!(su["snapshot"]["name"], "renamed");
    let sd = a.ok("GET", "snapshots/detail?name=renamed", None, 200);
    assert_eq!(
        sd["snapshots"][0]["os-extended-snapshot-attributes:progress"],
        "100%"
    );
    let m5 = Client {
        version: "3.5".into(),
        ..admin(&c)
    };
    assert_eq!(
        m5.ok("GET", "messages?limit=1", None, 200)["messages"],
        json!([])
    );
}
