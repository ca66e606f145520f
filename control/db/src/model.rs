//! The records the control plane keeps, in Cinder's vocabulary and units (sizes in GiB).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time, microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Now, from the system clock.
    pub fn now() -> Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }

    /// Parses ISO 8601 (`2026-12-04T03:30:00[.ffffff][Z|+hh:mm]`, or a date alone) to a
    /// [`Timestamp`]; `None` when it is not one.
    pub fn parse(t: &str) -> Option<Timestamp> {
        let t = t.trim();
        let (date, rest) = match t.split_once(['T', ' ']) {
            Some((d, r)) => (d, r),
            None => (t, "00:00:00"),
        };
        let mut dp = date.split('-');
        let y: i64 = dp.next()?.parse().ok()?;
        let m: i64 = dp.next()?.parse().ok()?;
        let d: i64 = dp.next()?.parse().ok()?;
        if dp.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return None;
        }
        // Zone suffix.
        let (time, offset_secs) = if let Some(s) = rest.strip_suffix('Z') {
            (s, 0)
        } else if let Some(i) = rest.rfind(['+', '-']) {
            let (tm, z) = rest.split_at(i);
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (zh, zm) = z[1..].split_once(':').unwrap_or((&z[1..], "0"));
            (
                tm,
                sign * (zh.parse::<i64>().ok()? * 3600 + zm.parse::<i64>().ok()? * 60),
            )
        } else {
            (rest, 0)
        };
        let (hms, frac) = match time.split_once('.') {
            Some((a, f)) => (a, f),
            None => (time, ""),
        };
        let mut tp = hms.split(':');
        let hh: i64 = tp.next()?.parse().ok()?;
        let mm: i64 = tp.next().unwrap_or("0").parse().ok()?;
        let ss: i64 = tp.next().unwrap_or("0").parse().ok()?;
        if hh > 23 || mm > 59 || ss > 60 {
            return None;
        }
        let mut micros = 0i64;
        if !frac.is_empty() {
            if !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let f: String = frac.chars().chain("000000".chars()).take(6).collect();
            micros = f.parse().ok()?;
        }
        let days = days_from_civil(y, m, d);
        let secs = days * 86_400 + hh * 3600 + mm * 60 + ss - offset_secs;
        Some(Timestamp(secs * 1_000_000 + micros))
    }

    /// This many seconds later.
    pub fn plus_secs(self, secs: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs.saturating_mul(1_000_000)))
    }
}

impl fmt::Display for Timestamp {
    /// Cinder's format: `2026-12-04T03:30:00.000000` (UTC, no zone suffix).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.rem_euclid(1_000_000);
        let secs = self.0.div_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let tod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}",
            tod / 3600,
            tod / 60 % 60,
            tod % 60
        )
    }
}

/// (year, month, day) to days since 1970-01-01 (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 1..=12, 1..=31
    (y, m as u32, d as u32)
}

/// A new random (version 4) UUID in its usual text form.
///
/// # Errors
/// The operating system's random source failed.
pub fn new_uuid() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// Whether `s` is a UUID in its canonical text form (any case).
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Metadata: string keys and values, as Cinder's `metadata` objects.
pub type Metadata = BTreeMap<String, String>;

/// A volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Its UUID.
    pub id: String,
    /// Owning project.
    pub project_id: String,
    /// Creating user.
    pub user_id: String,
    /// Display name.
    pub name: Option<String>,
    /// Display description.
    pub description: Option<String>,
    /// Size in GiB.
    pub size_gb: u64,
    /// `creating`, `available`, `in-use`, ... (Cinder's volume states).
    pub status: String,
    /// The status before a transitional one, where an operation restores it.
    pub previous_status: Option<String>,
    /// `detached`, `attaching`, `attached`, ...
    pub attach_status: String,
    /// `migration_status`, when a migration ran.
    pub migration_status: Option<String>,
    /// The volume type's id.
    pub volume_type_id: Option<String>,
    /// Availability zone.
    pub availability_zone: String,
    /// Where it lives: `host@backend#pool`, once scheduled.
    pub host: Option<String>,
    /// Bootable flag.
    pub bootable: bool,
    /// May attach to several hosts at once.
    pub multiattach: bool,
    /// Read-only flag (`os-update_readonly_flag`).
    pub readonly: bool,
    /// Whether the read-only flag was ever set: Cinder then shows `readonly` ("True" or
    /// "False") in the volume's metadata, from its admin metadata.
    pub readonly_set: bool,
    /// Source volume, for a clone.
    pub source_volid: Option<String>,
    /// Source snapshot.
    pub snapshot_id: Option<String>,
    /// Whether it counts against quotas.
    pub use_quota: bool,
    /// The manager's last user-facing message for a failure.
    pub user_message: Option<String>,
    /// User metadata.
    pub metadata: Metadata,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Option<Timestamp>,
    /// Became available for the first time.
    pub launched_at: Option<Timestamp>,
}

/// What a new volume is made of; the store fills in the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewVolume {
    /// Its UUID (callers make it, so a retried request can be recognised).
    pub id: String,
    /// Owning project.
    pub project_id: String,
    /// Creating user.
    pub user_id: String,
    /// Display name.
    pub name: Option<String>,
    /// Display description.
    pub description: Option<String>,
    /// Size in GiB.
    pub size_gb: u64,
    /// Volume type id.
    pub volume_type_id: Option<String>,
    /// Availability zone.
    pub availability_zone: String,
    /// Bootable flag.
    pub bootable: bool,
    /// Multi-attach.
    pub multiattach: bool,
    /// Source volume.
    pub source_volid: Option<String>,
    /// Source snapshot.
    pub snapshot_id: Option<String>,
    /// Whether it counts against quotas (false for internal temporary volumes).
    pub use_quota: bool,
    /// User metadata.
    pub metadata: Metadata,
}

/// Fields a compare-and-swap may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeChange {
    /// New status.
    pub status: Option<String>,
    /// New previous status (`Some(None)` clears it).
    pub previous_status: Option<Option<String>>,
    /// New attach status.
    pub attach_status: Option<String>,
    /// New migration status.
    pub migration_status: Option<Option<String>>,
    /// New host.
    pub host: Option<Option<String>>,
    /// New size (an extend; quota is the caller's, through a reservation).
    pub size_gb: Option<u64>,
    /// New name.
    pub name: Option<Option<String>>,
    /// New description.
    pub description: Option<Option<String>>,
    /// New bootable flag.
    pub bootable: Option<bool>,
    /// New read-only flag.
    pub readonly: Option<bool>,
    /// New user message.
    pub user_message: Option<Option<String>>,
    /// Sets `launched_at` (first time available).
    pub launched_at: Option<Timestamp>,
}

/// A snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Its UUID.
    pub id: String,
    /// Owning project.
    pub project_id: String,
    /// Creating user.
    pub user_id: String,
    /// The volume it is a snapshot of.
    pub volume_id: String,
    /// Display name.
    pub name: Option<String>,
    /// Display description.
    pub description: Option<String>,
    /// The volume's size when taken, GiB.
    pub size_gb: u64,
    /// `creating`, `available`, `deleting`, `error`, ...
    pub status: String,
    /// Progress text, e.g. `100%`.
    pub progress: String,
    /// Whether it counts against quotas.
    pub use_quota: bool,
    /// User metadata.
    pub metadata: Metadata,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Option<Timestamp>,
}

/// What a new snapshot is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewSnapshot {
    /// Its UUID.
    pub id: String,
    /// Owning project.
    pub project_id: String,
    /// Creating user.
    pub user_id: String,
    /// The volume.
    pub volume_id: String,
    /// Display name.
    pub name: Option<String>,
    /// Display description.
    pub description: Option<String>,
    /// Whether it counts against quotas.
    pub use_quota: bool,
    /// User metadata.
    pub metadata: Metadata,
}

/// Fields a snapshot compare-and-swap may change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotChange {
    /// New status.
    pub status: Option<String>,
    /// New progress.
    pub progress: Option<String>,
    /// New name.
    pub name: Option<Option<String>>,
    /// New description.
    pub description: Option<Option<String>>,
}

/// A volume type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeType {
    /// Its UUID.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Visible to every project.
    pub is_public: bool,
    /// Extra specs (scheduler capabilities, `provisioning:type`, ...).
    pub extra_specs: BTreeMap<String, String>,
    /// Projects given access to a private type.
    pub access: Vec<String>,
    /// Created.
    pub created_at: Timestamp,
}

/// A project-scoped quota resource: `volumes`, `gigabytes`, `snapshots`, `backups`,
/// `backup_gigabytes`, `groups`, `per_volume_gigabytes`, or a per-type `volumes_<type>` ...
pub type Resource = String;

/// One resource's limit and usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUsage {
    /// The limit (−1: unlimited).
    pub limit: i64,
    /// Committed use.
    pub in_use: i64,
    /// Reserved by operations under way.
    pub reserved: i64,
}

/// Cinder's default quota limits (the `default` class).
pub const DEFAULT_QUOTAS: [(&str, i64); 7] = [
    ("volumes", 10),
    ("snapshots", 10),
    ("gigabytes", 1000),
    ("backups", 10),
    ("backup_gigabytes", 1000),
    ("groups", 10),
    ("per_volume_gigabytes", -1),
];

/// How a volume is reachable: one per volume and protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    /// The volume.
    pub volume_id: String,
    /// `iscsi` or `nvmeof`.
    pub protocol: String,
    /// The iSCSI target IQN or NVMe subsystem NQN.
    pub target: String,
    /// Initiator IQNs or host NQNs allowed in.
    pub hosts: Vec<String>,
    /// CHAP user (iSCSI).
    pub chap_user: Option<String>,
    /// CHAP secret (iSCSI).
    pub chap_secret: Option<String>,
}

/// A datapath node's volume service, as its heartbeats leave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// `host@backend` (volume) or the host (scheduler, api).
    pub host: String,
    /// `cinder-volume`, `cinder-scheduler`, ...
    pub binary: String,
    /// Availability zone.
    pub availability_zone: String,
    /// Administratively disabled.
    pub disabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Heartbeats seen.
    pub report_count: u64,
    /// Last heartbeat.
    pub updated_at: Timestamp,
}

/// The attachment statuses that hold a volume, strongest first: the first one present among a
/// volume's live attachments gives the volume's `attach_status` (Cinder's
/// `_get_statuses_from_attachments`), and the volume status it maps to.
pub const HOLDING_ATTACH_STATUSES: [(&str, &str); 4] = [
    ("attached", "in-use"),
    ("attaching", "attaching"),
    ("detaching", "detaching"),
    ("reserved", "reserved"),
];

/// Every attachment status an attachment may be given (`deleted` ones are gone).
pub const ATTACH_STATUSES: [&str; 7] = [
    "reserved",
    "attaching",
    "attached",
    "detaching",
    "error_attaching",
    "error_detaching",
    "detached",
];

/// A volume's attachment to a host or instance (Cinder's `volume_attachment`, API 3.27+).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Its UUID.
    pub id: String,
    /// The volume.
    pub volume_id: String,
    /// The volume's project (it follows the volume through a transfer).
    pub project_id: String,
    /// The instance (Nova server) it is for.
    pub instance_uuid: Option<String>,
    /// The host it is attached to (the connector's `host`).
    pub attached_host: Option<String>,
    /// The device path on that host.
    pub mountpoint: Option<String>,
    /// `rw` or `ro`.
    pub attach_mode: String,
    /// `reserved`, `attaching`, `attached`, `detaching`, `error_attaching`,
    /// `error_detaching` or `detached`.
    pub attach_status: String,
    /// The host's connector (initiator IQN, NQN, host, ...), once given.
    pub connector: Option<serde_json::Value>,
    /// What the host connects to (`driver_volume_type` and `data`), once exported.
    pub connection_info: Option<serde_json::Value>,
    /// When it became attached.
    pub attach_time: Option<Timestamp>,
    /// When it was detached.
    pub detach_time: Option<Timestamp>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Option<Timestamp>,
}

/// What a new attachment is made of; it starts `reserved`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewAttachment {
    /// Its UUID (callers make it).
    pub id: String,
    /// The volume.
    pub volume_id: String,
    /// The instance it is for.
    pub instance_uuid: Option<String>,
    /// The host, when known already (legacy `os-attach` with `host_name`).
    pub attached_host: Option<String>,
    /// The device path, when known already.
    pub mountpoint: Option<String>,
    /// `rw` or `ro`.
    pub attach_mode: String,
}

/// Fields an attachment compare-and-swap may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachmentChange {
    /// New attachment status (one of [`ATTACH_STATUSES`]).
    pub attach_status: Option<String>,
    /// New connector (`Some(None)` clears it).
    pub connector: Option<Option<serde_json::Value>>,
    /// New connection info (`Some(None)` clears it).
    pub connection_info: Option<Option<serde_json::Value>>,
    /// New mountpoint.
    pub mountpoint: Option<Option<String>>,
    /// New attached host.
    pub attached_host: Option<Option<String>>,
    /// New instance.
    pub instance_uuid: Option<Option<String>>,
    /// New mode, `rw` or `ro`.
    pub attach_mode: Option<String>,
    /// Sets `attach_time` (otherwise it is set to now when the status becomes `attached` and
    /// none was recorded).
    pub attach_time: Option<Timestamp>,
    /// Sets `detach_time`.
    pub detach_time: Option<Timestamp>,
}

/// A volume offered by its project to another one (Cinder's `transfers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Its UUID.
    pub id: String,
    /// The volume.
    pub volume_id: String,
    /// Display name.
    pub name: Option<String>,
    /// The salt of `crypt_hash`.
    pub salt: String,
    /// The hash of the auth key with `salt` (the key itself is shown once, at creation).
    pub crypt_hash: String,
    /// The project giving the volume.
    pub source_project_id: String,
    /// The project that accepted it.
    pub destination_project_id: Option<String>,
    /// Accepted (API 3.57).
    pub accepted: bool,
    /// The volume's snapshots stay behind (API 3.55).
    pub no_snapshots: bool,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Option<Timestamp>,
}

/// What a new transfer is made of; the API computes the salt and hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTransfer {
    /// Its UUID (callers make it).
    pub id: String,
    /// The volume.
    pub volume_id: String,
    /// Display name.
    pub name: Option<String>,
    /// The salt.
    pub salt: String,
    /// The hash of the auth key with the salt.
    pub crypt_hash: String,
    /// The volume's project.
    pub source_project_id: String,
    /// Leave the snapshots behind.
    pub no_snapshots: bool,
}

/// A message for users about an asynchronous failure (Cinder's `messages`, API 3.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Its UUID.
    pub id: String,
    /// The project that may read it.
    pub project_id: String,
    /// The request that failed (`req-...`).
    pub request_id: Option<String>,
    /// `VOLUME`, `SNAPSHOT`, `BACKUP`, ...
    pub resource_type: String,
    /// The resource it is about.
    pub resource_uuid: Option<String>,
    /// `VOLUME_000002`, ...
    pub event_id: String,
    /// `ERROR`, ...
    pub message_level: String,
    /// The text users see.
    pub user_message: String,
    /// Created.
    pub created_at: Timestamp,
    /// Kept at least until then (`guaranteed_until`); reaped after.
    pub expires_at: Timestamp,
}

/// What a new message is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Its UUID (callers make it).
    pub id: String,
    /// The project that may read it.
    pub project_id: String,
    /// The request that failed.
    pub request_id: Option<String>,
    /// `VOLUME`, ...
    pub resource_type: String,
    /// The resource it is about.
    pub resource_uuid: Option<String>,
    /// The event id.
    pub event_id: String,
    /// The level.
    pub message_level: String,
    /// The text.
    pub user_message: String,
    /// When it may be reaped (created + `message_ttl`, 30 days in Cinder).
    pub expires_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_cinder_does() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000000");
        // 2026-12-04T03:30:15.123456Z
        assert_eq!(
            Timestamp(1_796_355_015_123_456).to_string(),
            "2026-12-04T03:30:15.123456"
        );
        assert_eq!(
            Timestamp(951_782_400_000_000).to_string(),
            "2000-02-29T00:00:00.000000"
        );
        assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59.999999");
    }

    #[test]
    fn times_parse_back_to_what_cinder_prints() {
        for t in [
            "2026-12-04T03:30:15.123456",
            "2000-02-29T00:00:00.000000",
            "1970-01-01T00:00:00.000000",
        ] {
            assert_eq!(
                Timestamp::parse(t).map(|ts| ts.to_string()).as_deref(),
                Some(t)
            );
        }
        assert_eq!(
            Timestamp::parse("2026-12-04T04:30:15+01:00").map(|t| t.to_string()),
            Some("2026-12-04T03:30:15.000000".into())
        );
        assert_eq!(
            Timestamp::parse("2026-12-04").map(|t| t.to_string()),
            Some("2026-12-04T00:00:00.000000".into())
        );
        assert!(Timestamp::parse("2026-13-01").is_none());
        assert!(Timestamp::parse("yesterday").is_none());
    }

    #[test]
    fn uuids_are_version_4_and_recognised() {
        let a = new_uuid().expect("random");
        let b = new_uuid().expect("random");
        assert_ne!(a, b);
        assert!(is_uuid(&a), "{a}");
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert!(!is_uuid("not-a-uuid"));
        assert!(!is_uuid("0123456789abcdef0123456789abcdef0123"));
        assert!(is_uuid("0123ABCD-4567-89ab-cdef-0123456789ab"));
    }
}
