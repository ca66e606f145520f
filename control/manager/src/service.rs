//! `basalt control`: the control plane as a service. Opens the metadata store, takes on the
//! configured datapath nodes, recovers what a restart interrupted, then every stats interval
//! gathers the nodes' pool reports for the scheduler, records heartbeats, rolls back expired
//! quota reservations and, when a node comes back after being unreachable, recovers it and
//! restores its exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use basalt_db::{MetadataStore, SqliteStore, Timestamp};
use basalt_scheduler::SchedulerConfig;
use serde::Deserialize;

use crate::datapath::{AdminSocket, Datapath};
use crate::ring::RingDatapath;
use crate::{Control, ManagerError, NodeConfig, VolumeManager};

/// The control plane's configuration file (`control.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// `[control]`.
    #[serde(default)]
    pub control: ControlSection,
    /// `[[node]]`: the datapath nodes.
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeSection>,
    /// `[api]`: the Cinder v3 REST API (served by the `basalt` binary).
    #[serde(default)]
    pub api: ApiSection,
}

/// `[api]`: where and how the Cinder v3 API is served.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Serve the API at all.
    pub enabled: bool,
    /// `address:port` to listen on.
    pub listen: String,
    /// The URL clients reach the API on (links and the identity catalog); by default
    /// `http://<listen>`.
    pub public_url: Option<String>,
    /// `noauth`, `builtin` (Basalt's own Keystone v3 subset at `/identity`) or `keystone`.
    pub auth_strategy: String,
    /// The built-in identity's database (default: `identity.db` beside the metadata store).
    pub identity_database: Option<PathBuf>,
    /// A policy file (YAML or JSON) overriding Cinder's default rules.
    pub policy_file: Option<PathBuf>,
    /// Protocol attachments use when a connector allows both: `iscsi` or `nvmeof`.
    pub default_protocol: String,
    /// Seconds a built-in identity token lives.
    pub token_ttl_secs: u64,
    /// `[api.keystone]`: the external Keystone, for `auth_strategy = "keystone"`.
    pub keystone: Option<KeystoneSection>,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            enabled: true,
            listen: "127.0.0.1:8776".into(),
            public_url: None,
            auth_strategy: "builtin".into(),
            identity_database: None,
            policy_file: None,
            default_protocol: "iscsi".into(),
            token_ttl_secs: 3600,
            keystone: None,
        }
    }
}

/// `[api.keystone]`: the service credentials tokens are validated with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoneSection {
    /// Keystone's v3 URL, e.g. `http://keystone/identity/v3`.
    pub auth_url: String,
    /// Service user.
    pub username: String,
    /// Its password.
    pub password: String,
    /// Its project.
    pub project_name: String,
    /// The user's domain (name).
    #[serde(default = "default_domain")]
    pub user_domain: String,
    /// The project's domain (name).
    #[serde(default = "default_domain")]
    pub project_domain: String,
    /// Seconds a validated token is cached.
    #[serde(default = "default_cache")]
    pub cache_ttl_secs: u64,
}

fn default_domain() -> String {
    "Default".into()
}
fn default_cache() -> u64 {
    300
}

/// `[control]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSection {
    /// The metadata store (SQLite file).
    pub database: PathBuf,
    /// Seconds between pool reports (Cinder: 60; Basalt's nodes are cheap to ask).
    pub stats_interval_secs: u64,
    /// Seconds of silence after which a node gets no new volumes (Cinder: 60).
    pub service_down_time_secs: u64,
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection {
            database: PathBuf::from("basalt-data/basalt.db"),
            stats_interval_secs: 10,
            service_down_time_secs: 60,
        }
    }
}

fn default_backend() -> String {
    "basalt".into()
}
fn default_az() -> String {
    "nova".into()
}
fn default_lvs() -> String {
    "pool".into()
}
fn default_mosr() -> f64 {
    20.0
}

/// `[[node]]`: one datapath node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Host name (unique).
    pub host: String,
    /// Backend name (`volume_backend_name`).
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Availability zone.
    #[serde(default = "default_az")]
    pub availability_zone: String,
    /// The volume store that is the node's pool.
    #[serde(default = "default_lvs")]
    pub lvs: String,
    /// The node's ring socket (`[ring] socket` of its datapath): requests go over the
    /// shared-memory rings.
    #[serde(default)]
    pub ring_socket: Option<PathBuf>,
    /// The node's admin socket, used when no ring socket is given.
    #[serde(default)]
    pub admin_socket: Option<PathBuf>,
    /// iSCSI portal (`host:port`) initiators are told, if the node serves iSCSI.
    #[serde(default)]
    pub iscsi_portal: Option<String>,
    /// NVMe/TCP portal, if the node serves NVMe/TCP.
    #[serde(default)]
    pub nvmf_portal: Option<String>,
    /// NBD address (`host:port`), if the node serves NBD. NBD has no authentication without
    /// TLS, so NBD exports are refused unless this is a loopback address.
    #[serde(default)]
    pub nbd_portal: Option<String>,
    /// Percentage of the pool never scheduled.
    #[serde(default)]
    pub reserved_percentage: f64,
    /// Thin over-subscription ratio.
    #[serde(default = "default_mosr")]
    pub max_over_subscription_ratio: f64,
}

impl ControlConfig {
    /// Parses a configuration text.
    ///
    /// # Errors
    /// Bad TOML, unknown keys, no node, duplicate hosts, impossible numbers.
    pub fn parse(text: &str) -> Result<ControlConfig, ManagerError> {
        let cfg: ControlConfig =
            toml::from_str(text).map_err(|e| ManagerError::Invalid(e.to_string()))?;
        let mut hosts = BTreeSet::new();
        for n in &cfg.nodes {
            if n.ring_socket.is_some() == n.admin_socket.is_some() {
                return Err(ManagerError::Invalid(format!(
                    "node {}: give exactly one of ring_socket and admin_socket",
                    n.host
                )));
            }
            if !hosts.insert(n.host.clone()) {
                return Err(ManagerError::Invalid(format!(
                    "node {} is listed twice",
                    n.host
                )));
            }
            if !(0.0..100.0).contains(&n.reserved_percentage) {
                return Err(ManagerError::Invalid(format!(
                    "node {}: reserved_percentage must be in [0, 100)",
                    n.host
                )));
            }
            if n.max_over_subscription_ratio.is_nan() || n.max_over_subscription_ratio < 1.0 {
                return Err(ManagerError::Invalid(format!(
                    "node {}: max_over_subscription_ratio must be at least 1",
                    n.host
                )));
            }
        }
        if !["noauth", "builtin", "keystone"].contains(&cfg.api.auth_strategy.as_str()) {
            return Err(ManagerError::Invalid(format!(
                "[api] auth_strategy must be noauth, builtin or keystone, not {:?}",
                cfg.api.auth_strategy
            )));
        }
        if cfg.api.auth_strategy == "keystone" && cfg.api.keystone.is_none() {
            return Err(ManagerError::Invalid(
                "[api] auth_strategy = \"keystone\" needs an [api.keystone] table".into(),
            ));
        }
        if !["iscsi", "nvmeof"].contains(&cfg.api.default_protocol.as_str()) {
            return Err(ManagerError::Invalid(format!(
                "[api] default_protocol must be iscsi or nvmeof, not {:?}",
                cfg.api.default_protocol
            )));
        }
        if cfg.control.stats_interval_secs == 0 {
            return Err(ManagerError::Invalid(
                "stats_interval_secs must be at least 1".into(),
            ));
        }
        Ok(cfg)
    }

    /// Reads and parses `path`.
    ///
    /// # Errors
    /// The file cannot be read, or as [`ControlConfig::parse`].
    pub fn load(path: &Path) -> Result<ControlConfig, ManagerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ManagerError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        ControlConfig::parse(&text)
            .map_err(|e| ManagerError::Invalid(format!("{}: {e}", path.display())))
    }
}

/// A running control plane; stops (and joins its thread) when dropped or stopped.
#[derive(Debug)]
pub struct ControlService {
    control: Arc<Control>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlService {
    /// Opens the store, takes on the nodes, recovers, and starts the periodic loop.
    ///
    /// # Errors
    /// The metadata store cannot be opened.
    pub fn start(cfg: &ControlConfig) -> Result<ControlService, ManagerError> {
        if let Some(dir) = cfg.control.database.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                ManagerError::Invalid(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let db: Arc<dyn MetadataStore> = Arc::new(SqliteStore::open(&cfg.control.database)?);
        let control = Arc::new(Control::new(
            db.clone(),
            SchedulerConfig {
                service_down_time: Duration::from_secs(cfg.control.service_down_time_secs),
                ..SchedulerConfig::default()
            },
        ));
        for n in &cfg.nodes {
            let dp: Arc<dyn Datapath> = match (&n.ring_socket, &n.admin_socket) {
                (Some(r), _) => Arc::new(RingDatapath::new(r, Duration::from_secs(30))),
                (None, Some(a)) => Arc::new(AdminSocket::new(a, Duration::from_secs(30))),
                (None, None) => unreachable!("checked when parsed"),
            };
            control.add_node(VolumeManager::new(
                NodeConfig {
                    host: n.host.clone(),
                    backend: n.backend.clone(),
                    availability_zone: n.availability_zone.clone(),
                    lvs: n.lvs.clone(),
                    reserved_percentage: n.reserved_percentage,
                    max_over_subscription_ratio: n.max_over_subscription_ratio,
                    iscsi_portal: n.iscsi_portal.clone(),
                    nvmf_portal: n.nvmf_portal.clone(),
                    nbd_portal: n.nbd_portal.clone(),
                },
                db.clone(),
                dp,
            ));
        }
        tracing::info!(
            database = %cfg.control.database.display(),
            nodes = cfg.nodes.len(),
            "control plane starting"
        );
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let interval = Duration::from_secs(cfg.control.stats_interval_secs);
        let (c, s) = (control.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("basalt-control".into())
            .spawn(move || run(&c, &s, interval))
            .map_err(|e| ManagerError::Invalid(format!("cannot start the control thread: {e}")))?;
        Ok(ControlService {
            control,
            stop,
            thread: Some(thread),
        })
    }

    /// The operations (what the API calls).
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Stops the loop and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        tracing::info!("control plane stopped");
    }
}

impl Drop for ControlService {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.halt();
        }
    }
}

fn run(c: &Control, stop: &(Mutex<bool>, Condvar), interval: Duration) {
    let mut up_before: BTreeSet<String> = BTreeSet::new();
    let mut recovered: BTreeSet<String> = BTreeSet::new();
    loop {
        let now = Instant::now();
        let up: BTreeSet<String> = c.refresh(now).into_iter().collect();
        for host in &up {
            // A node seen for the first time, or back after being unreachable: finish what
            // was interrupted and put its exports back.
            if !recovered.contains(host) {
                match c.recover_node(host) {
                    Ok(n) => {
                        tracing::info!(node = %host, recovered = n, "node up");
                        recovered.insert(host.clone());
                    }
                    Err(e) => tracing::warn!(node = %host, error = %e, "node recovery failed"),
                }
            }
        }
        for host in up_before.difference(&up) {
            tracing::warn!(node = %host, "node stopped answering");
            recovered.remove(host);
        }
        up_before = up;
        if let Err(e) = c.db().expire_reservations(Timestamp::now()) {
            tracing::warn!(error = %e, "reservation expiry failed");
        }
        let (lock, cv) = stop;
        let guard = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (guard, _) = cv
            .wait_timeout_while(guard, interval, |stopped| !*stopped)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *guard {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_with_defaults_and_refuse_mistakes() {
        let cfg = ControlConfig::parse(
            r#"
[control]
database = "/tmp/x.db"
[[node]]
host = "n1"
ring_socket = "/tmp/n1.ring"
iscsi_portal = "127.0.0.1:3260"
"#,
        )
        .expect("parses");
        assert_eq!(cfg.control.stats_interval_secs, 10);
        let n = &cfg.nodes[0];
        assert!(n.nbd_portal.is_none(), "no NBD unless asked for");
        assert_eq!(
            (
                n.backend.as_str(),
                n.lvs.as_str(),
                n.availability_zone.as_str()
            ),
            ("basalt", "pool", "nova")
        );
        for bad in [
            "[control]\nbogus = 1\n",
            "[[node]]\nhost = \"a\"\nadmin_socket = \"s\"\n[[node]]\nhost = \"a\"\nadmin_socket = \"t\"\n",
            "[[node]]\nhost = \"a\"\nadmin_socket = \"s\"\nmax_over_subscription_ratio = 0.5\n",
            "[[node]]\nhost = \"a\"\nadmin_socket = \"s\"\nreserved_percentage = 100\n",
            "[control]\nstats_interval_secs = 0\n",
            "[api]\nauth_strategy = \"magic\"\n",
            "[api]\nauth_strategy = \"keystone\"\n",
            "[api]\ndefault_protocol = \"fc\"\n",
            "[[node]]\nhost = \"a\"\n",
            "[[node]]\nhost = \"a\"\nadmin_socket = \"s\"\nring_socket = \"r\"\n",
        ] {
            assert!(ControlConfig::parse(bad).is_err(), "{bad}");
        }
    }
}
