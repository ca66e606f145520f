//! What a datapath node reports about its pools, in Cinder's vocabulary.
//!
//! A node (one datapath process and its volume manager) reports every `stats_interval` a
//! [`NodeReport`]: backend-level capabilities and one [`PoolReport`] per volume store. The
//! field names and units are those of a Cinder driver's `get_volume_stats()`, so the API's
//! `scheduler-stats/get_pools` can show them as they are and volume types written for Cinder
//! (`volume_backend_name=...`, `capabilities:thin_provisioning_support='<is> True'`) select
//! Basalt pools unchanged.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A pool's address, `host@backend#pool` as Cinder writes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolId {
    /// The node (the datapath's host name in Cinder's terms).
    pub host: String,
    /// The backend on that node (Basalt: one per datapath, `basalt` unless configured).
    pub backend: String,
    /// The pool (a volume store).
    pub pool: String,
}

impl PoolId {
    /// Builds an address from its parts.
    pub fn new(host: &str, backend: &str, pool: &str) -> PoolId {
        PoolId {
            host: host.to_owned(),
            backend: backend.to_owned(),
            pool: pool.to_owned(),
        }
    }

    /// `host@backend`, the service a volume manager runs as.
    pub fn backend_address(&self) -> String {
        format!("{}@{}", self.host, self.backend)
    }
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.host, self.backend, self.pool)
    }
}

/// Why a pool address did not parse.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum PoolIdError {
    /// {0:?} is not a pool address of the form host@backend#pool
    Malformed(String),
}

impl FromStr for PoolId {
    type Err = PoolIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PoolIdError::Malformed(s.to_owned());
        let (hb, pool) = s.split_once('#').ok_or_else(bad)?;
        let (host, backend) = hb.split_once('@').ok_or_else(bad)?;
        let ok =
            |p: &str| !p.is_empty() && !p.contains(['@', '#']) && !p.contains(char::is_whitespace);
        if !(ok(host) && ok(backend) && ok(pool)) {
            return Err(bad());
        }
        Ok(PoolId::new(host, backend, pool))
    }
}

impl Serialize for PoolId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PoolId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A capacity in GiB, or one of the two words a Cinder driver may report instead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Capacity {
    /// So many GiB (Cinder's "GB" are GiB).
    Gb(f64),
    /// `"infinite"`: the backend sets no limit.
    Infinite,
    /// `"unknown"`: the backend cannot tell.
    Unknown,
}

impl Capacity {
    /// The number, when there is one.
    pub fn gb(self) -> Option<f64> {
        match self {
            Capacity::Gb(v) => Some(v),
            Capacity::Infinite | Capacity::Unknown => None,
        }
    }

    /// From a byte count, in GiB rounded down to 1/100 GiB as Cinder's drivers report.
    pub fn from_bytes(bytes: u64) -> Capacity {
        #[allow(clippy::cast_precision_loss)] // capacities far below 2^53 bytes are exact
        let gib = bytes as f64 / f64::from(1u32 << 30);
        Capacity::Gb((gib * 100.0).floor() / 100.0)
    }
}

impl Serialize for Capacity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Capacity::Gb(v) => s.serialize_f64(*v),
            Capacity::Infinite => s.serialize_str("infinite"),
            Capacity::Unknown => s.serialize_str("unknown"),
        }
    }
}

impl<'de> Deserialize<'de> for Capacity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(v) if v.is_finite() && v >= 0.0 => Ok(Capacity::Gb(v)),
                _ => Err(serde::de::Error::custom("a capacity must be a number >= 0")),
            },
            serde_json::Value::String(s) if s.eq_ignore_ascii_case("infinite") => {
                Ok(Capacity::Infinite)
            }
            serde_json::Value::String(s) if s.eq_ignore_ascii_case("unknown") => {
                Ok(Capacity::Unknown)
            }
            other => Err(serde::de::Error::custom(format!(
                "a capacity is a number of GiB, \"infinite\" or \"unknown\", not {other}"
            ))),
        }
    }
}

/// One pool's figures and capabilities, as a node reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolReport {
    /// The pool's name on its node (the volume store's name).
    pub pool_name: String,
    /// Usable size of the pool.
    pub total_capacity_gb: Capacity,
    /// Space not yet allocated to any volume or snapshot.
    pub free_capacity_gb: Capacity,
    /// Space allocated (written) by volumes placed here.
    #[serde(default)]
    pub allocated_capacity_gb: f64,
    /// Sum of the sizes of the volumes placed here (what thin provisioning promises).
    #[serde(default)]
    pub provisioned_capacity_gb: f64,
    /// Percentage of the total kept free (never scheduled).
    #[serde(default)]
    pub reserved_percentage: f64,
    /// How far thin volumes may promise beyond the pool's real size.
    #[serde(default = "default_mosr")]
    pub max_over_subscription_ratio: f64,
    /// The pool can hold thin volumes.
    #[serde(default)]
    pub thin_provisioning_support: bool,
    /// The pool can hold thick (fully allocated) volumes.
    #[serde(default)]
    pub thick_provisioning_support: bool,
    /// Volumes here may attach to several hosts at once.
    #[serde(default)]
    pub multiattach: bool,
    /// Number of volumes placed here.
    #[serde(default)]
    pub total_volumes: u64,
    /// Further capabilities, matched by the capabilities filter (`capabilities:<key>`).
    #[serde(default, flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn default_mosr() -> f64 {
    20.0
}

impl PoolReport {
    /// A pool with `total` and `free` GiB, thin provisioning, Cinder's default ratio (20) and
    /// no reserve.
    pub fn thin(name: &str, total: f64, free: f64) -> PoolReport {
        PoolReport {
            pool_name: name.to_owned(),
            total_capacity_gb: Capacity::Gb(total),
            free_capacity_gb: Capacity::Gb(free),
            allocated_capacity_gb: total - free,
            provisioned_capacity_gb: 0.0,
            reserved_percentage: 0.0,
            max_over_subscription_ratio: default_mosr(),
            thin_provisioning_support: true,
            thick_provisioning_support: true,
            multiattach: true,
            total_volumes: 0,
            extra: BTreeMap::new(),
        }
    }
}

/// Everything one node reports at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeReport {
    /// The node's host name (`host` of `host@backend#pool`).
    pub host: String,
    /// `volume_backend_name`: the backend's name, which volume types may ask for.
    pub volume_backend_name: String,
    /// The node's availability zone.
    pub availability_zone: String,
    /// `storage_protocol`: `iSCSI`, `NVMe-oF` or both (`iSCSI/NVMe-oF`).
    #[serde(default)]
    pub storage_protocol: String,
    /// `vendor_name`.
    #[serde(default)]
    pub vendor_name: String,
    /// `driver_version`.
    #[serde(default)]
    pub driver_version: String,
    /// Backend-level capabilities beyond the named ones.
    #[serde(default)]
    pub capabilities: BTreeMap<String, serde_json::Value>,
    /// The pools.
    pub pools: Vec<PoolReport>,
}

impl NodeReport {
    /// A Basalt node named `host` in availability zone `az` with the given pools.
    pub fn basalt(host: &str, az: &str, pools: Vec<PoolReport>) -> NodeReport {
        NodeReport {
            host: host.to_owned(),
            volume_backend_name: "basalt".to_owned(),
            availability_zone: az.to_owned(),
            storage_protocol: "iSCSI/NVMe-oF".to_owned(),
            vendor_name: "Basalt".to_owned(),
            driver_version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: BTreeMap::new(),
            pools,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids_parse_and_print() {
        let id: PoolId = "node1@basalt#pool".parse().expect("parses");
        assert_eq!(id, PoolId::new("node1", "basalt", "pool"));
        assert_eq!(id.to_string(), "node1@basalt#pool");
        assert_eq!(id.backend_address(), "node1@basalt");
        for bad in [
            "",
            "node1",
            "node1@basalt",
            "node1#pool",
            "@b#p",
            "h@#p",
            "h@b#",
            "h@b#p#q",
            "h @b#p",
        ] {
            assert!(bad.parse::<PoolId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn capacities_read_cinder_words_and_refuse_junk() {
        let c: Capacity = serde_json::from_str("12.5").expect("number");
        assert_eq!(c, Capacity::Gb(12.5));
        let c: Capacity = serde_json::from_str("\"infinite\"").expect("word");
        assert_eq!(c, Capacity::Infinite);
        let c: Capacity = serde_json::from_str("\"Unknown\"").expect("word");
        assert_eq!(c, Capacity::Unknown);
        for bad in ["-1", "\"lots\"", "null", "[]"] {
            assert!(serde_json::from_str::<Capacity>(bad).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::to_string(&Capacity::Infinite).expect("json"),
            "\"infinite\""
        );
        assert_eq!(Capacity::from_bytes(10 << 30), Capacity::Gb(10.0));
        assert_eq!(
            Capacity::from_bytes((1 << 30) + (1 << 29)),
            Capacity::Gb(1.5)
        );
    }

    #[test]
    fn reports_round_trip_through_json_with_extra_capabilities() {
        let mut p = PoolReport::thin("pool", 100.0, 80.0);
        p.extra
            .insert("compression".into(), serde_json::json!(true));
        let r = NodeReport::basalt("n1", "nova", vec![p]);
        let text = serde_json::to_string(&r).expect("json");
        assert!(text.contains("\"compression\":true"), "{text}");
        let back: NodeReport = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, r);
        assert!(serde_json::from_str::<NodeReport>(r#"{"host":"h"}"#).is_err());
    }
}
