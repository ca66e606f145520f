//! `basalt up` in a scratch data directory on its own ports, as the API and client tests use
//! it: a file-backed pool, one node, iSCSI and NVMe/TCP on free loopback ports, the API with
//! the asked authentication, and a wait until the node takes volumes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::http::request;
use crate::{Daemon, bin};

/// A free TCP port on loopback (free when asked; bound later by the daemon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running `basalt up`.
#[derive(Debug)]
pub struct Cloud {
    /// The data directory.
    pub dir: PathBuf,
    /// The API's address.
    pub api: SocketAddr,
    /// The iSCSI port.
    pub iscsi: u16,
    /// The NVMe/TCP port.
    pub nvmf: u16,
    _daemon: Daemon,
    _tmp: tempfile::TempDir,
}

impl Cloud {
    /// Starts `basalt up` with `[api] auth_strategy = auth` and waits until its node reports.
    ///
    /// # Panics
    /// When it does not start or the node does not come up within a minute.
    pub fn start(auth: &str) -> Cloud {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(&dir).expect("dir");
        let (api, iscsi, nvmf) = (free_port(), free_port(), free_port());
        let d = dir.display();
        std::fs::write(
            dir.join("datapath.toml"),
            format!(
                r#"[engine]
cores = 1
pin = false

[[bdev]]
module = "uring"
name = "pool0"
path = "{d}/pool.img"

[[lvs]]
bdev = "pool0"
name = "pool"
create = true
cluster_size = "256K"

[iscsi]
listen = ["127.0.0.1:{iscsi}"]

[nvmf]
listen = ["127.0.0.1:{nvmf}"]

[admin]
socket = "{d}/datapath.sock"

[ring]
socket = "{d}/ring.sock"
"#
            ),
        )
        .expect("datapath.toml");
        std::fs::write(
            dir.join("control.toml"),
            format!(
                r#"[control]
database = "{d}/basalt.db"
stats_interval_secs = 1

[[node]]
host = "node1"
ring_socket = "{d}/ring.sock"
iscsi_portal = "127.0.0.1:{iscsi}"
nvmf_portal = "127.0.0.1:{nvmf}"

[api]
listen = "127.0.0.1:{api}"
auth_strategy = "{auth}"
"#
            ),
        )
        .expect("control.toml");
        let mut cmd = Command::new(bin("basalt"));
        cmd.args(["up", "--pool-size", "8G", "--data-dir"])
            .arg(&dir);
        let mut daemon = Daemon::spawn(cmd);
        daemon.wait_for("basalt up: Ctrl-C to stop", Duration::from_secs(60));
        let c = Cloud {
            dir,
            api: SocketAddr::from(([127, 0, 0, 1], api)),
            iscsi,
            nvmf,
            _daemon: daemon,
            _tmp: tmp,
        };
        c.wait_for_the_node();
        c
    }

    /// The node reports within a stats interval; until then nothing can be placed.
    fn wait_for_the_node(&self) {
        let token = self.admin_token();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = request(
                self.api,
                "GET",
                "/v3/os-availability-zone",
                &[("X-Auth-Token", &token)],
                None,
            )
            .expect("az");
            if r.json["availabilityZoneInfo"][0]["zoneState"]["available"] == json!(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the node never came up: {}",
                r.json
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The variables `admin-openrc` exports (what `source admin-openrc` would set); empty
    /// without the built-in identity.
    pub fn openrc(&self) -> BTreeMap<String, String> {
        let Ok(text) = std::fs::read_to_string(self.dir.join("admin-openrc")) else {
            return BTreeMap::new();
        };
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("export "))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), shell_unquote(v)))
            .collect()
    }

    /// The bootstrap admin's token: a password token from the built-in identity, or
    /// `admin:admin` without it (noauth).
    pub fn admin_token(&self) -> String {
        match self.openrc().get("OS_PASSWORD") {
            Some(p) => self.token("admin", p, "admin").0,
            None => "admin:admin".into(),
        }
    }

    /// A project-scoped token from the built-in identity: (token, project id).
    ///
    /// # Panics
    /// When the identity refuses.
    pub fn token(&self, user: &str, password: &str, project: &str) -> (String, String) {
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"id": "default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}}}});
        let r = request(
            self.api,
            "POST",
            "/identity/v3/auth/tokens",
            &[],
            Some(body.to_string().as_bytes()),
        )
        .expect("token");
        assert_eq!(r.status, 201, "token for {user}: {:?}", r.json);
        (
            r.header("x-subject-token")
                .expect("token header")
                .to_owned(),
            r.json["token"]["project"]["id"]
                .as_str()
                .expect("project")
                .to_owned(),
        )
    }

    /// Runs `basalt identity ARGS --database <data-dir>/identity.db`; its output.
    ///
    /// # Panics
    /// When the command fails.
    pub fn identity(&self, args: &[&str]) -> String {
        let out = Command::new(bin("basalt"))
            .arg("identity")
            .args(args)
            .arg("--database")
            .arg(self.dir.join("identity.db"))
            .output()
            .expect("basalt identity");
        assert!(
            out.status.success(),
            "basalt identity {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A shell word from `admin-openrc`: single-quoted, with `'\''` for a quote.
pub fn shell_unquote(v: &str) -> String {
    v.strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .map_or_else(|| v.to_owned(), |s| s.replace("'\\''", "'"))
}
