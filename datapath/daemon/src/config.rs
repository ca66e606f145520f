//! The datapath's TOML configuration.
//!
//! ```toml
//! [engine]
//! cores = 2            # reactors on CPUs 0 and 1; or `cpus = [2, 3]`
//! pin = true
//! busy_poll = false
//! ring_entries = 512
//! completion_batch = 4 # completions handled before their follow-up I/O is submitted
//!
//! [engine.buffers]     # per reactor, registered with its ring
//! small_count = 2048   # 8 KiB buffers
//! large_count = 256    # 128 KiB buffers
//!
//! [[bdev]]
//! module = "uring"
//! name = "pool0"
//! path = "/var/lib/basalt/pool.img"
//! ```
//!
//! Unknown keys are errors, so a misspelt setting is never silently ignored.

use std::path::Path;

use basalt_bdev::{BdevConfig, ByteSize};
use basalt_engine::{BufPoolConfig, EngineConfig, ReactorConfig};

use crate::DatapathError;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatapathConfig {
    /// Reactors and their resources.
    #[serde(default)]
    pub engine: EngineSection,
    /// Block devices, in order (a stacked bdev names a base declared above it).
    #[serde(default, rename = "bdev")]
    pub bdevs: Vec<BdevConfig>,
    /// Volume stores opened (or created) on block devices.
    #[serde(default, rename = "lvs")]
    pub stores: Vec<LvsConfig>,
    /// Volumes that must exist (created when missing).
    #[serde(default, rename = "volume")]
    pub volumes: Vec<VolumeConfig>,
    /// The iSCSI target (off when absent).
    #[serde(default)]
    pub iscsi: Option<IscsiConfig>,
    /// The NVMe-oF/TCP target (off when absent).
    #[serde(default)]
    pub nvmf: Option<NvmfConfig>,
    /// The NBD target (off when absent).
    #[serde(default)]
    pub nbd: Option<NbdConfig>,
    /// The local admin socket (off when absent).
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// The control plane's shared-memory rings (off when absent).
    #[serde(default)]
    pub ring: Option<RingConfig>,
}

/// `[ring]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingConfig {
    /// Unix socket the control plane connects to and hands the shared-memory region over
    /// (`SOCK_SEQPACKET`; see `docs/ring.md`).
    pub socket: std::path::PathBuf,
}

/// `[nvmf]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmfConfig {
    /// Addresses to listen on.
    #[serde(default = "default_nvmf_listen")]
    pub listen: Vec<std::net::SocketAddr>,
    /// NVM subsystems.
    #[serde(default, rename = "subsystem")]
    pub subsystems: Vec<NvmfSubsystemConfig>,
}

fn default_nvmf_listen() -> Vec<std::net::SocketAddr> {
    vec![std::net::SocketAddr::from(([127, 0, 0, 1], 4420))]
}

/// `[[nvmf.subsystem]]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmfSubsystemConfig {
    /// The subsystem NQN (`nqn.2026-11.org.basalt:...`).
    pub nqn: String,
    /// Host NQNs allowed to connect (every host when absent).
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Serial number (derived from the NQN when absent).
    #[serde(default)]
    pub serial: Option<String>,
    /// Namespaces.
    #[serde(default, rename = "namespace")]
    pub namespaces: Vec<NamespaceConfig>,
}

/// `[[nvmf.subsystem.namespace]]`: exactly one of `bdev` and `volume`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Namespace id (1 and up).
    pub nsid: u32,
    /// A block device by name.
    #[serde(default)]
    pub bdev: Option<String>,
    /// A volume as `<store>/<volume>`.
    #[serde(default)]
    pub volume: Option<String>,
}

/// `[nbd]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NbdConfig {
    /// Addresses to listen on. NBD has no authentication without TLS, which Basalt does not
    /// offer: keep these on loopback.
    #[serde(default = "default_nbd_listen")]
    pub listen: Vec<std::net::SocketAddr>,
    /// Exports.
    #[serde(default, rename = "export")]
    pub exports: Vec<NbdExportConfig>,
}

fn default_nbd_listen() -> Vec<std::net::SocketAddr> {
    vec![std::net::SocketAddr::from(([127, 0, 0, 1], 10809))]
}

/// `[[nbd.export]]`: exactly one of `bdev` and `volume`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NbdExportConfig {
    /// The export name clients ask for (`nbd://host:port/<name>`).
    pub name: String,
    /// A block device by name.
    #[serde(default)]
    pub bdev: Option<String>,
    /// A volume as `<store>/<volume>`.
    #[serde(default)]
    pub volume: Option<String>,
    /// Refuse writes.
    #[serde(default)]
    pub read_only: bool,
    /// Shown to clients (`nbdinfo`); the backing device's name when absent.
    #[serde(default)]
    pub description: Option<String>,
}

/// `[[lvs]]`: a volume store on a block device.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LvsConfig {
    /// The block device holding the store.
    pub bdev: String,
    /// The store's name (checked against the one on disk; used to create it).
    pub name: String,
    /// Create the store when the device is blank (its first 64 KiB are zeros). A device that
    /// holds something else is never formatted.
    #[serde(default)]
    pub create: bool,
    /// Cluster size for a new store (default 1 MiB).
    #[serde(default)]
    pub cluster_size: Option<ByteSize>,
}

/// `[[volume]]`: a volume that must exist in a store.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// The store's name.
    pub lvs: String,
    /// The volume's name.
    pub name: String,
    /// Its size when created (an existing volume keeps its size).
    pub size: ByteSize,
    /// Allocate every cluster up front.
    #[serde(default)]
    pub thick: bool,
}

/// CHAP credentials in the configuration.
#[derive(Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChapConfig {
    /// CHAP name.
    pub user: String,
    /// The secret (at least 12 bytes).
    pub secret: String,
}

impl std::fmt::Debug for ChapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapConfig")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// `[iscsi]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IscsiConfig {
    /// Portal addresses to listen on.
    #[serde(default = "default_iscsi_listen")]
    pub listen: Vec<std::net::SocketAddr>,
    /// Target portal group tag of those portals.
    #[serde(default = "default_tpgt")]
    pub tpgt: u16,
    /// Seconds of silence before the target pings the initiator (0: never).
    #[serde(default)]
    pub nop_interval_secs: Option<u64>,
    /// Seconds an unanswered ping waits before the connection is dropped.
    #[serde(default)]
    pub nop_timeout_secs: Option<u64>,
    /// Commands outstanding per session (the CmdSN window).
    #[serde(default)]
    pub queue_depth: Option<u32>,
    /// CHAP for discovery sessions (none when absent).
    #[serde(default)]
    pub discovery_chap: Option<ChapConfig>,
    /// Target nodes.
    #[serde(default, rename = "target")]
    pub targets: Vec<IscsiTargetConfig>,
}

fn default_iscsi_listen() -> Vec<std::net::SocketAddr> {
    vec![std::net::SocketAddr::from(([127, 0, 0, 1], 3260))]
}

fn default_tpgt() -> u16 {
    1
}

/// `[[iscsi.target]]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IscsiTargetConfig {
    /// iSCSI name (`iqn.2026-11.org.basalt:...`).
    pub name: String,
    /// TargetAlias.
    #[serde(default)]
    pub alias: Option<String>,
    /// Initiator names allowed to log in (every initiator when absent).
    #[serde(default)]
    pub initiators: Option<Vec<String>>,
    /// CHAP the initiator must pass.
    #[serde(default)]
    pub chap: Option<ChapConfig>,
    /// Mutual CHAP: how the target proves itself (needs `chap`).
    #[serde(default)]
    pub mutual_chap: Option<ChapConfig>,
    /// Logical units.
    #[serde(default, rename = "lun")]
    pub luns: Vec<LunConfig>,
}

/// `[[iscsi.target.lun]]`: exactly one of `bdev` and `volume`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LunConfig {
    /// LUN (0 to 16383).
    pub lun: u64,
    /// A block device by name.
    #[serde(default)]
    pub bdev: Option<String>,
    /// A volume as `<store>/<volume>`.
    #[serde(default)]
    pub volume: Option<String>,
    /// Refuse writes.
    #[serde(default)]
    pub read_only: bool,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Unix socket path for the local admin interface (JSON lines; see `docs/operations.md`).
    pub socket: std::path::PathBuf,
}

/// `[engine]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// Number of reactors, on CPUs `0..cores`. Exclusive with `cpus`.
    pub cores: Option<usize>,
    /// The CPUs to run reactors on, one reactor each. Exclusive with `cores`.
    pub cpus: Option<Vec<usize>>,
    /// Pin each reactor thread to its CPU.
    pub pin: bool,
    /// Spin instead of sleeping when idle: lowest latency, one busy core per reactor.
    pub busy_poll: bool,
    /// Submission-queue entries per ring (a power of two).
    pub ring_entries: u32,
    /// Completions handled per loop pass before the I/O they trigger is submitted.
    pub completion_batch: usize,
    /// Registered buffers per reactor.
    pub buffers: BuffersSection,
}

impl Default for EngineSection {
    fn default() -> Self {
        let r = ReactorConfig::default();
        EngineSection {
            cores: None,
            cpus: None,
            pin: true,
            busy_poll: r.busy_poll,
            ring_entries: r.ring_entries,
            completion_batch: r.completion_batch,
            buffers: BuffersSection::default(),
        }
    }
}

/// `[engine.buffers]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuffersSection {
    /// Number of small (8 KiB) buffers per reactor.
    pub small_count: usize,
    /// Number of large (128 KiB) buffers per reactor.
    pub large_count: usize,
}

impl Default for BuffersSection {
    fn default() -> Self {
        let b = BufPoolConfig::default();
        BuffersSection {
            small_count: b.small_count,
            large_count: b.large_count,
        }
    }
}

impl DatapathConfig {
    /// Parses TOML text.
    ///
    /// # Errors
    /// [`DatapathError::Parse`] with the line and column of the problem.
    pub fn parse(text: &str) -> Result<DatapathConfig, DatapathError> {
        toml::from_str(text).map_err(|e| DatapathError::Parse(e.to_string()))
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    /// The file cannot be read or does not parse.
    pub fn load(path: &Path) -> Result<DatapathConfig, DatapathError> {
        let text = std::fs::read_to_string(path).map_err(|source| DatapathError::Read {
            path: path.to_owned(),
            source,
        })?;
        DatapathConfig::parse(&text).map_err(|e| match e {
            DatapathError::Parse(msg) => DatapathError::ParseFile {
                path: path.to_owned(),
                msg,
            },
            other => other,
        })
    }

    /// The engine settings this configuration asks for, checked.
    ///
    /// # Errors
    /// [`DatapathError::Config`] naming the first problem.
    pub fn engine_config(&self) -> Result<EngineConfig, DatapathError> {
        let e = &self.engine;
        let asked = e.cores.or(e.cpus.as_ref().map(Vec::len)).unwrap_or(1);
        if asked > MAX_REACTORS {
            return Err(DatapathError::Config(format!(
                "{asked} reactors asked for; at most {MAX_REACTORS} are supported"
            )));
        }
        let cpus = match (e.cores, &e.cpus) {
            (Some(_), Some(_)) => {
                return Err(DatapathError::Config(
                    "engine.cores and engine.cpus are exclusive; set one".into(),
                ));
            }
            (Some(0), None) => {
                return Err(DatapathError::Config(
                    "engine.cores must be at least 1".into(),
                ));
            }
            (Some(n), None) => {
                // The first n CPUs this process may run on (taskset, cgroup cpusets).
                let allowed = allowed_cpus();
                if e.pin && n > allowed.len() {
                    return Err(DatapathError::Config(format!(
                        "engine.cores = {n}, but this process may run on only {} cpus ({allowed:?})",
                        allowed.len()
                    )));
                }
                if e.pin {
                    allowed[..n].to_vec()
                } else {
                    (0..n).collect()
                }
            }
            (None, Some(list)) => list.clone(),
            (None, None) => allowed_cpus().first().map_or(vec![0], |&c| vec![c]),
        };
        if e.pin {
            let allowed = allowed_cpus();
            if let Some(&cpu) = cpus.iter().find(|c| !allowed.contains(c)) {
                return Err(DatapathError::Config(format!(
                    "cpu {cpu} is not available to this process (allowed: {allowed:?}); change \
                     engine.cores or engine.cpus, or set engine.pin = false"
                )));
            }
        }
        let cfg = EngineConfig {
            cpus,
            pin: e.pin,
            reactor: ReactorConfig {
                ring_entries: e.ring_entries,
                busy_poll: e.busy_poll,
                completion_batch: e.completion_batch,
                buffers: BufPoolConfig {
                    small_count: e.buffers.small_count,
                    large_count: e.buffers.large_count,
                    ..BufPoolConfig::default()
                },
                ..ReactorConfig::default()
            },
        };
        cfg.validate()
            .map_err(|err| DatapathError::Config(err.to_string()))?;
        if e.completion_batch == 0 {
            return Err(DatapathError::Config(
                "engine.completion_batch must be at least 1".into(),
            ));
        }
        if e.buffers.small_count == 0 || e.buffers.large_count == 0 {
            return Err(DatapathError::Config(
                "engine.buffers counts must be at least 1".into(),
            ));
        }
        Ok(cfg)
    }
}

/// More reactors than this is a configuration mistake, not a machine.
pub const MAX_REACTORS: usize = 1024;

/// The CPUs this process may run on, ascending.
pub fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, usize::from)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_means_defaults() {
        let cfg = DatapathConfig::parse("").expect("parses");
        assert_eq!(cfg, DatapathConfig::default());
        let e = cfg.engine_config().expect("valid");
        assert_eq!(e.cpus, vec![allowed_cpus()[0]]);
        assert!(e.pin);
    }

    #[test]
    fn full_example_parses() {
        let cfg = DatapathConfig::parse(
            r#"
            [engine]
            cores = 1
            pin = false
            busy_poll = true
            ring_entries = 256
            [engine.buffers]
            small_count = 64
            large_count = 8

            [[bdev]]
            module = "malloc"
            name = "ram0"
            size = "64M"
            block_size = 4096

            [[bdev]]
            module = "delay"
            name = "slow"
            base = "ram0"
            read_us = 100
            "#,
        )
        .expect("parses");
        let e = cfg.engine_config().expect("valid");
        assert_eq!(e.reactor.ring_entries, 256);
        assert!(e.reactor.busy_poll);
        assert_eq!(e.reactor.buffers.large_count, 8);
        assert_eq!(cfg.bdevs.len(), 2);
    }

    #[test]
    fn nbd_section_parses_with_defaults() {
        let cfg = DatapathConfig::parse(
            "[nbd]\n[[nbd.export]]\nname = \"v\"\nvolume = \"pool/v\"\nread_only = true\n",
        )
        .expect("parses");
        let nbd = cfg.nbd.expect("nbd");
        assert_eq!(nbd.listen, default_nbd_listen());
        assert_eq!(nbd.exports.len(), 1);
        assert!(nbd.exports[0].read_only && nbd.exports[0].description.is_none());
        assert!(DatapathConfig::parse("[nbd]\nport = 1\n").is_err());
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| {
            DatapathConfig::parse(text)
                .expect_err("refused")
                .to_string()
        };
        assert!(err("[engine]\ncore = 2\n").contains("unknown field `core`"));
        assert!(err("[[bdev]]\nmodule = \"floppy\"\nname = \"a\"\n").contains("floppy"));
        assert!(err("[engine]\ncores = \"two\"\n").contains("invalid type"));
        let cfg = |text: &str| {
            DatapathConfig::parse(text)
                .expect("parses")
                .engine_config()
                .expect_err("refused")
                .to_string()
        };
        assert!(cfg("[engine]\ncores = 1\ncpus = [0]\n").contains("exclusive"));
        assert!(cfg("[engine]\ncores = 0\n").contains("at least 1"));
        assert!(cfg("[engine]\ncpus = [100000]\n").contains("not available"));
        assert!(cfg("[engine]\ncores = 1000\n").contains("may run on only"));
        assert!(cfg("[engine]\ncores = 9223372036854775807\npin = false\n").contains("at most"));
        assert!(cfg("[engine]\nring_entries = 100\n").contains("power of two"));
        assert!(cfg("[engine.buffers]\nlarge_count = 0\n").contains("at least 1"));
    }
}
