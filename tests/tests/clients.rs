//! The Cinder v3 API driven by the real OpenStack clients, as users run them: `openstack`
//! (python3-openstackclient) and `cinder` (python3-cinderclient) against `basalt up` in a
//! scratch data directory on its own ports, with the built-in identity (credentials from
//! `admin-openrc`) and with `noauth`; then an attachment's `connection_info` used by libiscsi
//! (`iscsi-inq`) and QEMU (`qemu-img`) to reach the volume over iSCSI with CHAP.
//!
//! The tools come from scripts/install-test-deps.sh (CI runs it); a missing one fails the test.
#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test crate

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use basalt_tests::cloud::Cloud;
use serde_json::{Value, json};

/// How long one client command may take before it counts as hung.
const COMMAND_LIMIT_SECS: u32 = 90;
/// How long a volume or snapshot may take to reach a state.
const SETTLE: Duration = Duration::from_secs(60);
/// The initiator the attachment's connector names (and the only one the export admits).
const INITIATOR: &str = "iqn.1994-05.com.redhat:client";
/// A Nova instance id, for the attachment.
const INSTANCE: &str = "5d0c4b8f-6f53-4f7e-9d2a-8a5f1c7f0e11";

fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{tool}` is not installed: run scripts/install-test-deps.sh (CI does)"
    );
}

/// What the client tests add to the shared `basalt up` harness.
trait Clients {
    /// A client authenticating as `admin-openrc` says (password auth against the built-in
    /// identity, the endpoint from its catalog).
    fn sourced(&self, program: &'static str) -> Client;
    /// The v3 endpoint without a project, for `--os-endpoint`.
    fn v3(&self) -> String;
}

impl Clients for Cloud {
    fn sourced(&self, program: &'static str) -> Client {
        let env = self.openrc();
        for k in [
            "OS_AUTH_URL",
            "OS_USERNAME",
            "OS_PASSWORD",
            "OS_PROJECT_NAME",
        ] {
            assert!(env.contains_key(k), "admin-openrc lacks {k}: {env:?}");
        }
        Client {
            program,
            env: env.into_iter().collect(),
            args: Vec::new(),
        }
    }

    fn v3(&self) -> String {
        format!("http://{}/v3", self.api)
    }
}

/// What a command printed.
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// A client command line: the program, its environment (nothing else of the parent's
/// `OS_*`/`CINDER_*` leaks in) and the arguments that precede every subcommand.
#[derive(Clone)]
struct Client {
    program: &'static str,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl Client {
    fn with_args(&self, more: &[&str]) -> Client {
        let mut c = self.clone();
        c.args.extend(more.iter().map(|s| (*s).to_owned()));
        c
    }

    fn with_env(&self, k: &str, v: &str) -> Client {
        let mut c = self.clone();
        c.env.push((k.to_owned(), v.to_owned()));
        c
    }

    fn run(&self, args: &[&str]) -> Out {
        // `timeout` so that a hung client fails the test instead of hanging it.
        let mut cmd = Command::new("timeout");
        cmd.arg(COMMAND_LIMIT_SECS.to_string()).arg(self.program);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("OS_") || k.starts_with("CINDER_") {
                cmd.env_remove(&*k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .args(&self.args)
            .args(args);
        let out = cmd.output().unwrap_or_else(|e| {
            panic!(
                "{} cannot be run ({e}): run scripts/install-test-deps.sh",
                self.program
            )
        });
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn line(&self, args: &[&str]) -> String {
        format!(
            "{} {} {}",
            self.program,
            self.args.join(" "),
            args.join(" ")
        )
    }

    /// Runs and insists on success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.ok,
            "`{}` failed:\n{}{}",
            self.line(args),
            o.stdout,
            o.stderr
        );
        o.stdout
    }

    /// Runs and insists on failure; returns everything it printed.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            !o.ok,
            "`{}` succeeded but should not have:\n{}",
            self.line(args),
            o.stdout
        );
        format!("{}{}", o.stdout, o.stderr)
    }

    /// An `openstack` command with `-f json`, parsed.
    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-f", "json"]);
        let out = self.ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("`{}` printed no JSON ({e}):\n{out}", self.line(&a)))
    }

    /// A `cinder` command whose output is one `| Property | Value |` table.
    fn props(&self, args: &[&str]) -> BTreeMap<String, String> {
        let out = self.ok(args);
        let t = tables(&out);
        assert!(
            !t.is_empty(),
            "`{}` printed no table:\n{out}",
            self.line(args)
        );
        properties(&t[0])
    }

    /// Polls `openstack <what> show <name> -f json` until `status` is `want`.
    fn os_wait(&self, what: &[&str], name: &str, want: &str) -> Value {
        let mut args = what.to_vec();
        args.extend(["show", name]);
        let deadline = Instant::now() + SETTLE;
        loop {
            let v = self.json(&args);
            if v["status"] == want {
                return v;
            }
            assert!(
                !(v["status"].as_str().is_some_and(|s| s.starts_with("error"))),
                "{name} went to {}: {v}",
                v["status"]
            );
            assert!(Instant::now() < deadline, "{name} never {want}: {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls `cinder <show> <id>` until `status` is `want`.
    fn cinder_wait(&self, show: &str, id: &str, want: &str) -> BTreeMap<String, String> {
        let deadline = Instant::now() + SETTLE;
        loop {
            let p = self.props(&[show, id]);
            let status = p.get("status").cloned().unwrap_or_default();
            if status == want {
                return p;
            }
            assert!(!status.starts_with("error"), "{id} went to {status}: {p:?}");
            assert!(Instant::now() < deadline, "{id} never {want}: {p:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls until `list` (an `openstack ... list` or a `cinder` list) shows nothing.
    fn wait_empty(&self, list: &[&str]) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let empty = if self.program == "openstack" {
                self.json(list).as_array().is_some_and(Vec::is_empty)
            } else {
                tables(&self.ok(list))
                    .first()
                    .is_some_and(|t| t.rows.is_empty())
            };
            if empty {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{}` never empty",
                self.line(list)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// One prettytable table as cinderclient prints it.
#[derive(Debug)]
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// The rows whose `column` is `value`, as column → cell maps.
    fn find(&self, column: &str, value: &str) -> Vec<BTreeMap<String, String>> {
        let Some(i) = self.header.iter().position(|h| h == column) else {
            panic!("no column {column} in {self:?}");
        };
        self.rows
            .iter()
            .filter(|r| r.get(i).is_some_and(|c| c == value))
            .map(|r| self.header.iter().cloned().zip(r.iter().cloned()).collect())
            .collect()
    }
}

/// Every table in `out`, in order. A table is a border, a header row, a border, the rows
/// and a closing border.
fn tables(out: &str) -> Vec<Table> {
    let mut done = Vec::new();
    let mut cur: Option<(usize, Table)> = None;
    for line in out.lines().map(str::trim) {
        if line.starts_with('+') && line.ends_with('+') {
            match cur.take() {
                Some((1, t)) => done.push(t),
                Some((n, t)) => cur = Some((n + 1, t)),
                None => {
                    cur = Some((
                        0,
                        Table {
                            header: Vec::new(),
                            rows: Vec::new(),
                        },
                    ));
                }
            }
        } else if line.starts_with('|') && line.ends_with('|') {
            let cells: Vec<String> = line[1..line.len() - 1]
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect();
            match &mut cur {
                Some((0, t)) => t.header = cells,
                Some((_, t)) => t.rows.push(cells),
                None => {}
            }
        }
    }
    done
}

/// A `| Property | Value |` table as a map; a row with an empty key continues the value
/// above it.
fn properties(t: &Table) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut last = String::new();
    for r in &t.rows {
        let (k, v) = (
            r.first().cloned().unwrap_or_default(),
            r.get(1).cloned().unwrap_or_default(),
        );
        if k.is_empty() {
            if let Some(prev) = m.get_mut(&last) {
                let prev: &mut String = prev;
                prev.push('\n');
                prev.push_str(&v);
            }
        } else {
            m.insert(k.clone(), v);
            last = k;
        }
    }
    m
}

/// A Python literal as cinderclient prints a dict or list cell (`{'a': False, 'b': None}`),
/// as JSON. Good for the values here: no quotes or `True`/`False`/`None` inside strings.
fn python_literal(s: &str) -> Value {
    let j = s
        .replace('\'', "\"")
        .replace("True", "true")
        .replace("False", "false")
        .replace("None", "null");
    serde_json::from_str(&j).unwrap_or_else(|e| panic!("not a Python literal ({e}): {s}"))
}

/// A cinderclient property table as a JSON object: dict and list cells parsed.
fn table_json(p: &BTreeMap<String, String>) -> Value {
    Value::Object(
        p.iter()
            .map(|(k, v)| {
                let v = if v.starts_with('{') || v.starts_with('[') {
                    python_literal(v)
                } else {
                    Value::String(v.clone())
                };
                (k.clone(), v)
            })
            .collect(),
    )
}

/// The iSCSI target a `connection_info` names.
#[derive(Debug, PartialEq)]
struct IscsiTarget {
    portal: String,
    iqn: String,
    lun: String,
    user: String,
    secret: String,
}

impl IscsiTarget {
    /// From an attachment's `connection_info`: flat, as Cinder's attachments API returns it
    /// (the driver's `data` keys beside `driver_volume_type`; Nova's
    /// `_translate_attachment_ref` puts `data` back for os-brick).
    fn from_connection_info(ci: &Value) -> IscsiTarget {
        assert_eq!(ci["driver_volume_type"], "iscsi", "connection_info: {ci}");
        assert!(ci.get("data").is_none(), "nested connection_info: {ci}");
        let d = ci;
        let s = |k: &str| match &d[k] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => panic!("connection_info {k} is {other}: {ci}"),
        };
        assert_eq!(s("auth_method"), "CHAP", "{ci}");
        let t = IscsiTarget {
            portal: s("target_portal"),
            iqn: s("target_iqn"),
            lun: s("target_lun"),
            user: s("auth_username"),
            secret: s("auth_password"),
        };
        // They go into URLs and QEMU option strings unescaped.
        for v in [&t.portal, &t.iqn, &t.lun, &t.user, &t.secret] {
            assert!(
                !v.is_empty() && !v.contains([',', '%', '@', '/', ' ']),
                "unexpected characters in {t:?}"
            );
        }
        t
    }

    fn url(&self, secret: &str) -> String {
        format!(
            "iscsi://{}%{}@{}/{}/{}",
            self.user, secret, self.portal, self.iqn, self.lun
        )
    }

    /// QEMU's iscsi driver options (`--image-opts`): the URL form cannot carry the initiator
    /// name, and the export admits only the connector's initiator. The CHAP secret comes
    /// from the `--object secret,id=chap` that [`IscsiTarget::secret_object`] makes.
    fn qemu_opts(&self) -> String {
        format!(
            "driver=iscsi,transport=tcp,portal={},target={},lun={},user={},password-secret=chap,initiator-name={INITIATOR}",
            self.portal, self.iqn, self.lun, self.user
        )
    }

    fn secret_object(secret: &str) -> String {
        format!("secret,id=chap,data={secret}")
    }
}

fn tool(program: &str, args: &[&str]) -> Out {
    let out = Command::new("timeout")
        .arg(COMMAND_LIMIT_SECS.to_string())
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} cannot be run ({e})"));
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `len` bytes of xorshift noise in a file.
fn random_file(path: &Path, len: usize) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..len / block.len() {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        f.write_all(&block).expect("write");
    }
    f.flush().expect("flush");
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

#[test]
fn openstackclient_with_the_builtin_identity() {
    require("openstack");
    let c = Cloud::start("builtin");
    let os = c.sourced("openstack");
    let v1 = os.json(&["volume", "create", "--size", "1", "v1"]);
    let v1_id = s(&v1["id"]);
    let shown = os.os_wait(&["volume"], "v1", "available");
    assert_eq!(shown["id"], json!(v1_id));
    assert_eq!(shown["size"], 1);
    assert_eq!(shown["type"], "__DEFAULT__");
    let project = s(&shown["os-vol-tenant-attr:tenant_id"]);
    let listed = os.json(&["volume", "list"]);
    assert!(
        listed
            .as_array()
            .expect("list")
            .iter()
            .any(|v| v["ID"] == json!(v1_id) && v["Name"] == "v1" && v["Status"] == "available"),
        "{listed}"
    );
    // Extend.
    os.ok(&["volume", "set", "--size", "2", "v1"]);
    assert_eq!(os.os_wait(&["volume"], "v1", "available")["size"], 2);
    // Snapshot, a volume from it, a clone.
    let s1 = os.json(&["volume", "snapshot", "create", "--volume", "v1", "s1"]);
    let s1_id = s(&s1["id"]);
    let snap = os.os_wait(&["volume", "snapshot"], "s1", "available");
    assert_eq!(snap["volume_id"], json!(v1_id));
    assert_eq!(snap["size"], 2);
    os.json(&["volume", "create", "--snapshot", "s1", "v2"]);
    let v2 = os.os_wait(&["volume"], "v2", "available");
    assert_eq!(v2["snapshot_id"], json!(s1_id));
    assert_eq!(v2["size"], 2);
    os.json(&["volume", "create", "--source", "v1", "v3"]);
    let v3 = os.os_wait(&["volume"], "v3", "available");
    assert_eq!(v3["source_volid"], json!(v1_id));
    // Metadata.
    os.ok(&["volume", "set", "--property", "k=v", "v1"]);
    assert_eq!(os.json(&["volume", "show", "v1"])["properties"]["k"], "v");
    // A type whose extra spec names this backend, and a volume of it.
    let t = os.json(&[
        "volume",
        "type",
        "create",
        "fast",
        "--property",
        "volume_backend_name=basalt",
    ]);
    assert_eq!(t["name"], "fast");
    let t = os.json(&["volume", "type", "show", "fast"]);
    assert_eq!(t["properties"]["volume_backend_name"], "basalt", "{t}");
    os.json(&["volume", "create", "--type", "fast", "--size", "1", "v4"]);
    assert_eq!(os.os_wait(&["volume"], "v4", "available")["type"], "fast");
    // Quota: four volumes exist; a limit of four makes the fifth a 413. openstackclient 6.0's
    // `quota set` builds a compute client before looking at its options, and that needs a
    // compute endpoint the catalog (rightly) lacks; an override that is never called
    // satisfies it (openstack.config reads `compute_endpoint_override` from clouds.yaml).
    let clouds = c.dir.join("clouds.yaml");
    std::fs::write(
        &clouds,
        "clouds:\n  basalt:\n    compute_endpoint_override: http://127.0.0.1:9/unused\n",
    )
    .expect("clouds.yaml");
    let quota = os
        .with_env("OS_CLIENT_CONFIG_FILE", clouds.to_str().expect("utf-8"))
        .with_env("OS_CLOUD", "basalt");
    let too_low = quota.fails(&["quota", "set", "--volumes", "3", "admin"]);
    assert!(too_low.contains("HTTP 400"), "{too_low}");
    quota.ok(&["quota", "set", "--volumes", "4", "admin"]);
    let over = os.fails(&["volume", "create", "--size", "1", "v5"]);
    assert!(over.contains("413"), "an over-quota create: {over}");
    assert!(over.contains("VolumeLimitExceeded"), "{over}");
    // The project by id as well as by name.
    quota.ok(&["quota", "set", "--volumes", "10", &project]);
    // Delete: the snapshot's children, the snapshot, then its volume.
    os.ok(&["volume", "delete", "v2", "v3", "v4"]);
    os.ok(&["volume", "snapshot", "delete", "s1"]);
    os.wait_empty(&["volume", "snapshot", "list"]);
    os.ok(&["volume", "delete", "v1"]);
    os.wait_empty(&["volume", "list"]);
}

#[test]
fn cinderclient_with_the_builtin_identity() {
    require("cinder");
    let c = Cloud::start("builtin");
    let cinder = c.sourced("cinder");
    let c1 = cinder.props(&["create", "--name", "c1", "1"]);
    let c1_id = c1["id"].clone();
    let shown = cinder.cinder_wait("show", &c1_id, "available");
    assert_eq!(shown["name"], "c1");
    assert_eq!(shown["size"], "1");
    let project = shown["os-vol-tenant-attr:tenant_id"].clone();
    let list = tables(&cinder.ok(&["list"]));
    let row = list[0].find("ID", &c1_id);
    assert_eq!(row.len(), 1, "{list:?}");
    assert_eq!(row[0]["Status"], "available");
    assert_eq!(row[0]["Name"], "c1");
    // Extend.
    cinder.ok(&["extend", &c1_id, "2"]);
    assert_eq!(cinder.cinder_wait("show", &c1_id, "available")["size"], "2");
    // Snapshot, a volume from it, a clone.
    let cs1 = cinder.props(&["snapshot-create", "--name", "cs1", &c1_id]);
    let cs1_id = cs1["id"].clone();
    let snap = cinder.cinder_wait("snapshot-show", &cs1_id, "available");
    assert_eq!(snap["volume_id"], c1_id);
    let c2 = cinder.props(&["create", "--snapshot-id", &cs1_id, "--name", "c2"]);
    let c2 = cinder.cinder_wait("show", &c2["id"], "available");
    assert_eq!(c2["snapshot_id"], cs1_id);
    assert_eq!(c2["size"], "2");
    let c3 = cinder.props(&["create", "--source-volid", &c1_id, "--name", "c3"]);
    let c3 = cinder.cinder_wait("show", &c3["id"], "available");
    assert_eq!(c3["source_volid"], c1_id);
    // Metadata.
    cinder.ok(&["metadata", &c1_id, "set", "k=v"]);
    let md = cinder.props(&["show", &c1_id])["metadata"].clone();
    assert!(md.contains("k : v"), "metadata {md:?}");
    // A type, its extra spec, a volume of it.
    let types = tables(&cinder.ok(&["type-create", "fastc"]));
    assert_eq!(types[0].find("Name", "fastc").len(), 1, "{types:?}");
    cinder.ok(&["type-key", "fastc", "set", "volume_backend_name=basalt"]);
    let specs = tables(&cinder.ok(&["extra-specs-list"]));
    let fastc = specs[0].find("Name", "fastc");
    assert_eq!(
        python_literal(&fastc[0]["extra_specs"]),
        json!({"volume_backend_name": "basalt"})
    );
    let c4 = cinder.props(&["create", "--volume-type", "fastc", "--name", "c4", "1"]);
    let c4 = cinder.cinder_wait("show", &c4["id"], "available");
    assert_eq!(c4["volume_type"], "fastc");
    // Quota: four volumes; a limit of four makes the fifth a 413.
    let q = cinder.props(&["quota-update", "--volumes", "4", &project]);
    assert_eq!(q["volumes"], "4");
    assert_eq!(cinder.props(&["quota-show", &project])["volumes"], "4");
    let over = cinder.fails(&["create", "--name", "c5", "1"]);
    assert!(over.contains("HTTP 413"), "an over-quota create: {over}");
    assert!(over.contains("VolumeLimitExceeded"), "{over}");
    // Delete.
    cinder.ok(&["delete", &c2["id"], &c3["id"], &c4["id"]]);
    cinder.ok(&["snapshot-delete", &cs1_id]);
    cinder.wait_empty(&["snapshot-list"]);
    cinder.ok(&["delete", &c1_id]);
    cinder.wait_empty(&["list"]);
}

#[test]
fn both_clients_without_keystone_in_noauth_mode() {
    require("cinder");
    require("openstack");
    let c = Cloud::start("noauth");
    let (project, user) = (
        "6f1c2b3a4d5e4f60a1b2c3d4e5f60718",
        "0a1b2c3d4e5f40718293a4b5c6d7e8f9",
    );
    let bare = Client {
        program: "cinder",
        env: Vec::new(),
        args: Vec::new(),
    };
    let v3 = c.v3();
    // cinderclient's noauth plugin: X-Auth-Token user:project, endpoint <v3>/<project>.
    let cinder = bare.with_args(&[
        "--os-auth-type",
        "noauth",
        "--os-endpoint",
        &v3,
        "--os-project-id",
        project,
        "--os-user-id",
        user,
    ]);
    // openstackclient's admin_token: the same token, sent to the endpoint as given.
    let token = format!("{user}:{project}");
    let project_url = format!("{v3}/{project}");
    let os = Client {
        program: "openstack",
        ..bare.clone()
    }
    .with_args(&[
        "--os-auth-type",
        "admin_token",
        "--os-token",
        &token,
        "--os-endpoint",
        &project_url,
    ]);
    let n1 = cinder.props(&["create", "--name", "n1", "1"]);
    // Cinder's extension fields (tenant, host) are on show and the detailed list only.
    let n1 = cinder.cinder_wait("show", &n1["id"], "available");
    assert_eq!(n1["os-vol-tenant-attr:tenant_id"], project);
    assert_eq!(n1["user_id"], user);
    let list = tables(&cinder.ok(&["list"]));
    assert_eq!(list[0].find("Name", "n1").len(), 1, "{list:?}");
    os.json(&["volume", "create", "--size", "1", "o1"]);
    let o1 = os.os_wait(&["volume"], "o1", "available");
    assert_eq!(o1["os-vol-tenant-attr:tenant_id"], project);
    // Each client sees what the other made.
    let listed = os.json(&["volume", "list"]);
    let names: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|v| v["Name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{listed}");
    assert!(names.contains(&"n1") && names.contains(&"o1"), "{listed}");
    assert_eq!(
        cinder.props(&["show", &s(&o1["id"])])["status"],
        "available"
    );
    assert_eq!(os.json(&["volume", "show", "n1"])["size"], 1);
    // `--os-auth-type none` sends no token: noauth's default user and project.
    let anon = Client {
        program: "openstack",
        ..bare.clone()
    }
    .with_args(&[
        "--os-auth-type",
        "none",
        "--os-endpoint",
        &format!("{v3}/admin"),
    ]);
    assert_eq!(anon.json(&["volume", "list"]), json!([]));
    // Delete each with the other client.
    os.ok(&["volume", "delete", "n1"]);
    cinder.ok(&["delete", &s(&o1["id"])]);
    cinder.wait_empty(&["list"]);
    os.wait_empty(&["volume", "list"]);
}

#[test]
fn an_attachment_connector_gives_libiscsi_and_qemu_the_volume() {
    require("cinder");
    require("openstack");
    require("iscsi-inq");
    require("qemu-img");
    let c = Cloud::start("builtin");
    let cinder = c
        .sourced("cinder")
        .with_args(&["--os-volume-api-version", "3.54"]);
    let os = c
        .sourced("openstack")
        .with_args(&["--os-volume-api-version", "3.54"]);
    let vol = cinder.props(&["create", "--name", "attach-me", "1"])["id"].clone();
    cinder.cinder_wait("show", &vol, "available");
    let out = cinder.ok(&[
        "attachment-create",
        &vol,
        INSTANCE,
        "--connect",
        "True",
        "--initiator",
        INITIATOR,
        "--ip",
        "127.0.0.1",
        "--host",
        "client",
        "--platform",
        "x86_64",
        "--ostype",
        "linux",
    ]);
    // Two tables: the attachment, then its connection_info.
    let t = tables(&out);
    assert_eq!(t.len(), 2, "attachment-create printed:\n{out}");
    let att = properties(&t[0]);
    let aid = att["id"].clone();
    assert_eq!(att["status"], "attaching", "{att:?}");
    assert_eq!(att["instance"], INSTANCE);
    assert_eq!(att["volume_id"], vol);
    let target = IscsiTarget::from_connection_info(&table_json(&properties(&t[1])));
    assert_eq!(target.portal, format!("127.0.0.1:{}", c.iscsi));
    // openstackclient reads the same attachment, as JSON.
    let shown = os.json(&["volume", "attachment", "show", &aid]);
    assert_eq!(shown["Volume ID"], json!(vol), "{shown}");
    assert_eq!(
        IscsiTarget::from_connection_info(&shown["Properties"]),
        target
    );
    // libiscsi: INQUIRY with the attachment's CHAP credentials and the connector's initiator.
    let url = target.url(&target.secret);
    let inq = tool("iscsi-inq", &["-i", INITIATOR, &url]);
    assert!(inq.ok, "iscsi-inq {url}: {}{}", inq.stdout, inq.stderr);
    assert!(
        inq.stdout.contains("Peripheral Device Type:DIRECT_ACCESS"),
        "{}",
        inq.stdout
    );
    assert!(inq.stdout.contains("Vendor:BASALT"), "{}", inq.stdout);
    let wrong = target.url("not-the-secret");
    let inq = tool("iscsi-inq", &["-i", INITIATOR, &wrong]);
    assert!(!inq.ok, "a wrong CHAP secret logged in: {}", inq.stdout);
    assert!(
        format!("{}{}", inq.stdout, inq.stderr).contains("Authentication failure"),
        "{}",
        inq.stderr
    );
    let inq = tool("iscsi-inq", &["-i", "iqn.2000-01.org.example:other", &url]);
    assert!(!inq.ok, "another initiator logged in: {}", inq.stdout);
    // QEMU: 64 MiB of noise in, compared back.
    let src = c.dir.join("noise.raw");
    random_file(&src, 64 << 20);
    let src = src.to_str().expect("utf-8");
    let (opts, secret) = (
        target.qemu_opts(),
        IscsiTarget::secret_object(&target.secret),
    );
    let started = Instant::now();
    let conv = tool(
        "qemu-img",
        &[
            "convert",
            "--object",
            &secret,
            "-n",
            "-f",
            "raw",
            "--target-image-opts",
            src,
            &opts,
        ],
    );
    assert!(conv.ok, "qemu-img convert into {opts}: {}", conv.stderr);
    let file_opts = format!("driver=file,filename={src}");
    let cmp = tool(
        "qemu-img",
        &[
            "compare",
            "--object",
            &secret,
            "--image-opts",
            &file_opts,
            &opts,
        ],
    );
    // The volume is larger than the file: the rest must read as zeroes.
    assert!(
        cmp.ok && cmp.stdout.contains("Images are identical"),
        "qemu-img compare: {}{}",
        cmp.stdout,
        cmp.stderr
    );
    eprintln!(
        "qemu-img: 64 MiB in and compared in {:?}",
        started.elapsed()
    );
    let bad_secret = IscsiTarget::secret_object("not-the-secret");
    let bad = tool(
        "qemu-img",
        &["info", "--object", &bad_secret, "--image-opts", &opts],
    );
    assert!(
        !bad.ok,
        "qemu-img logged in with a wrong secret: {}",
        bad.stdout
    );
    // The URL form logs in as QEMU's default initiator, which the export does not admit.
    let bad = tool("qemu-img", &["info", &url]);
    assert!(
        !bad.ok,
        "qemu-img logged in as another initiator: {}",
        bad.stdout
    );
    // Complete: in-use; delete the attachment: available, and the export is gone.
    cinder.ok(&["attachment-complete", &aid]);
    let v = cinder.props(&["show", &vol]);
    assert_eq!(v["status"], "in-use", "{v:?}");
    assert!(v["attachment_ids"].contains(&aid), "{v:?}");
    assert!(v["attached_servers"].contains(INSTANCE), "{v:?}");
    let listed = tables(&cinder.ok(&["attachment-list"]));
    assert_eq!(listed[0].find("ID", &aid)[0]["Status"], "attached");
    cinder.ok(&["attachment-delete", &aid]);
    let v = cinder.props(&["show", &vol]);
    assert_eq!(v["status"], "available", "{v:?}");
    assert_eq!(v["attachment_ids"], "[]", "{v:?}");
    let inq = tool("iscsi-inq", &["-i", INITIATOR, &url]);
    assert!(
        !inq.ok,
        "the export outlived its attachment: {}",
        inq.stdout
    );
    // openstackclient's complete and delete on a second attachment (its `volume attachment
    // create` needs the server to exist in Nova, so cinderclient makes it).
    let t = tables(&cinder.ok(&["attachment-create", &vol, INSTANCE]));
    let aid2 = properties(&t[0])["id"].clone();
    assert_eq!(
        cinder.props(&["show", &vol])["status"],
        "reserved",
        "an attachment without a connector reserves"
    );
    os.ok(&["volume", "attachment", "complete", &aid2]);
    assert_eq!(os.json(&["volume", "show", &vol])["status"], "in-use");
    os.ok(&["volume", "attachment", "delete", &aid2]);
    assert_eq!(os.json(&["volume", "show", &vol])["status"], "available");
    cinder.ok(&["delete", &vol]);
    cinder.wait_empty(&["list"]);
}
