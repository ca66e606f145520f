//! The filters: each looks at one candidate pool and the request and says yes or no
//! (`cinder/scheduler/filters/`). Basalt runs Cinder's defaults, in Cinder's order:
//! availability zone, capacity, capabilities; plus the retry filter that skips pools already
//! tried for this request.

use crate::pool::{Capacity, PoolId};
use crate::specs;
use crate::{Candidate, Request};

/// A filter of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `IgnoreAttemptedHostsFilter`: a pool that already failed this request is skipped.
    IgnoreAttempted,
    /// `AvailabilityZoneFilter`.
    AvailabilityZone,
    /// `CapacityFilter`, thin over-subscription and reserved percentage included.
    Capacity,
    /// `CapabilitiesFilter`: the volume type's extra specs against the pool's capabilities.
    Capabilities,
}

impl Filter {
    /// Cinder's name for the filter (shown in "no valid backend" messages).
    pub fn name(self) -> &'static str {
        match self {
            Filter::IgnoreAttempted => "IgnoreAttemptedHostsFilter",
            Filter::AvailabilityZone => "AvailabilityZoneFilter",
            Filter::Capacity => "CapacityFilter",
            Filter::Capabilities => "CapabilitiesFilter",
        }
    }

    /// Does `c` pass this filter for `req`?
    pub fn passes(self, c: &Candidate<'_>, req: &Request) -> bool {
        match self {
            Filter::IgnoreAttempted => !req.attempted.contains(c.id),
            Filter::AvailabilityZone => availability_zone(c, req),
            Filter::Capacity => capacity(c, req),
            Filter::Capabilities => capabilities(c, req),
        }
    }
}

/// The default pipeline.
pub const DEFAULT_FILTERS: [Filter; 4] = [
    Filter::IgnoreAttempted,
    Filter::AvailabilityZone,
    Filter::Capacity,
    Filter::Capabilities,
];

fn availability_zone(c: &Candidate<'_>, req: &Request) -> bool {
    // The type's RESKEY:availability_zones (a comma-separated list) wins over the request's
    // own zone, as in Cinder.
    if let Some(list) = req.extra_specs.get("RESKEY:availability_zones") {
        return list
            .split(',')
            .map(str::trim)
            .any(|z| z == c.availability_zone);
    }
    match &req.availability_zone {
        Some(z) => *z == c.availability_zone,
        None => true,
    }
}

/// Whether a volume of `req` is thin on this pool: the pool supports thin provisioning and the
/// type does not ask for thick.
pub(crate) fn thin_for(c: &Candidate<'_>, req: &Request) -> bool {
    let thick_asked = req
        .extra_specs
        .get("provisioning:type")
        .is_some_and(|v| v.trim() == "thick");
    c.pool.thin_provisioning_support && !thick_asked
}

/// Cinder's capacity factors (`sched_utils.calculate_capacity_factors`), in GiB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityFactors {
    /// `total - reserved`.
    pub total_reserved_available: f64,
    /// What may be promised: `total_reserved_available`, times the over-subscription ratio
    /// when thin.
    pub total_available: f64,
    /// What is left to promise.
    pub virtual_free: f64,
}

/// The factors, or `None` when the pool reports `infinite` or `unknown` capacity.
pub fn capacity_factors(c: &Candidate<'_>, thin: bool) -> Option<CapacityFactors> {
    let total = c.pool.total_capacity_gb.gb()?;
    let free = c.pool.free_capacity_gb.gb()?;
    let reserved = (total * c.pool.reserved_percentage / 100.0).floor();
    let total_reserved_available = total - reserved;
    let provisioned = c.pool.provisioned_capacity_gb;
    if thin {
        let total_available = total_reserved_available * c.pool.max_over_subscription_ratio;
        Some(CapacityFactors {
            total_reserved_available,
            total_available,
            virtual_free: total_available - provisioned,
        })
    } else {
        // Thick volumes take real space: never more than is free outside the reserve.
        Some(CapacityFactors {
            total_reserved_available,
            total_available: total_reserved_available,
            virtual_free: (free - reserved).min(total_reserved_available - provisioned),
        })
    }
}

fn capacity(c: &Candidate<'_>, req: &Request) -> bool {
    #[allow(clippy::cast_precision_loss)] // sizes in GiB are far below 2^53
    let requested = req.size_gb as f64;
    if requested == 0.0 {
        return true;
    }
    if matches!(
        c.pool.free_capacity_gb,
        Capacity::Infinite | Capacity::Unknown
    ) || matches!(
        c.pool.total_capacity_gb,
        Capacity::Infinite | Capacity::Unknown
    ) {
        return true;
    }
    let total = c.pool.total_capacity_gb.gb().unwrap_or(0.0);
    if total <= 0.0 {
        return false;
    }
    let thin = thin_for(c, req);
    if !thin && !c.pool.thick_provisioning_support {
        return false;
    }
    let Some(f) = capacity_factors(c, thin) else {
        return true;
    };
    if thin {
        let mosr = c.pool.max_over_subscription_ratio;
        if mosr < 1.0 {
            return false;
        }
        let ratio = (c.pool.provisioned_capacity_gb + requested) / total;
        if ratio > mosr {
            return false;
        }
    }
    f.virtual_free >= requested
}

fn capabilities(c: &Candidate<'_>, req: &Request) -> bool {
    for (key, want) in &req.extra_specs {
        let mut scope: Vec<&str> = key.split(':').collect();
        if scope.len() > 1 {
            if scope[0] != "capabilities" {
                // vendor:..., RESKEY:..., provisioning:..., qos: ... are not capabilities.
                continue;
            }
            scope.remove(0);
        }
        if scope == ["storage_protocol"] {
            // A node may serve several protocols (`iSCSI/NVMe-oF`), and Cinder matches a
            // protocol by any of its spellings (`STORAGE_PROTOCOL_VARIANTS`).
            let served = c.capability(&scope).unwrap_or_default();
            let ok = served
                .split('/')
                .flat_map(protocol_variants)
                .any(|v| specs::matches(Some(v), want));
            if !ok {
                return false;
            }
            continue;
        }
        let have = c.capability(&scope);
        if !specs::matches(have.as_deref(), want) {
            return false;
        }
    }
    true
}

/// The spellings of a storage protocol Cinder accepts for it.
fn protocol_variants(p: &str) -> Vec<&str> {
    match p.trim() {
        "iSCSI" | "iscsi" => vec!["iSCSI", "iscsi"],
        "NVMe-oF" | "nvmeof" | "NVMeOF" => vec!["NVMe-oF", "nvmeof", "NVMeOF"],
        "NBD" | "nbd" => vec!["NBD", "nbd"],
        other => vec![other],
    }
}

/// The pool a filter chain saw, for messages.
pub(crate) fn describe(id: &PoolId) -> String {
    id.to_string()
}
