//! Small read-only resources: availability zones, absolute limits, extensions.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::ctx::Ctx;
use crate::fault::ApiError;
use crate::{ApiState, blocking};

type St = State<Arc<ApiState>>;

/// The misc routes.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v3/os-availability-zone", get(zones_index))
        .route("/v3/limits", get(limits))
        .route("/v3/extensions", get(extensions))
}

/// Every availability zone and whether a node in it is up to take volumes.
pub fn zones(state: &ApiState) -> Vec<(String, bool)> {
    let now = Instant::now();
    let mut out: Vec<(String, bool)> = Vec::new();
    for p in state.control.scheduler().pools(now) {
        match out.iter_mut().find(|(z, _)| *z == p.availability_zone) {
            Some(e) => e.1 |= p.schedulable,
            None => out.push((p.availability_zone.clone(), p.schedulable)),
        }
    }
    for s in state.db().list_services().unwrap_or_default() {
        if s.binary == "cinder-volume" && !out.iter().any(|(z, _)| *z == s.availability_zone) {
            out.push((s.availability_zone, false));
        }
    }
    if out.is_empty() {
        out.push((state.cfg.default_availability_zone.clone(), false));
    }
    out
}

async fn zones_index(State(state): St, ctx: Ctx) -> Result<Response, ApiError> {
    // Cinder's availability-zone list has no policy check: every authenticated user sees it.
    let _ = &ctx;
    blocking(&state, move |state| {
        let items: Vec<Value> = zones(state)
            .into_iter()
            .map(|(z, up)| json!({"zoneName": z, "zoneState": {"available": up}}))
            .collect();
        Ok(axum::Json(json!({"availabilityZoneInfo": items})).into_response())
    })
    .await
}

async fn limits(
    State(state): St,
    ctx: Ctx,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "limits_extension:used_limits")?;
    let mut project = ctx.project().to_owned();
    if let Some((_, p)) = q.iter().find(|(k, _)| k == "project_id")
        && ctx.version.at_least(39)
        && ctx.is_admin()
    {
        project = p.clone();
    }
    blocking(&state, move |state| {
        let u = state.db().quota_usage(&project)?;
        let limit = |r: &str| u.get(r).map_or(-1, |q| q.limit);
        let used = |r: &str| u.get(r).map_or(0, |q| q.in_use);
        Ok(axum::Json(json!({"limits": {"rate": [], "absolute": {
            "maxTotalVolumes": limit("volumes"),
            "maxTotalSnapshots": limit("snapshots"),
            "maxTotalVolumeGigabytes": limit("gigabytes"),
            "maxTotalBackups": limit("backups"),
            "maxTotalBackupGigabytes": limit("backup_gigabytes"),
            "totalVolumesUsed": used("volumes"),
            "totalGigabytesUsed": used("gigabytes"),
            "totalSnapshotsUsed": used("snapshots"),
            "totalBackupsUsed": used("backups"),
            "totalBackupGigabytesUsed": used("backup_gigabytes"),
        }}}))
        .into_response())
    })
    .await
}

/// The extensions Basalt serves, by Cinder's alias and name.
const EXTENSIONS: &[(&str, &str, &str)] = &[
    ("os-admin-actions", "AdminActions", "Enable admin actions."),
    (
        "os-availability-zone",
        "AvailabilityZones",
        "Describe Availability Zones.",
    ),
    ("capabilities", "Capabilities", "Capabilities support."),
    (
        "os-extended-snapshot-attributes",
        "ExtendedSnapshotAttributes",
        "Extended SnapshotAttributes support.",
    ),
    (
        "os-extended-services",
        "ExtendedServices",
        "Extended services support.",
    ),
    ("os-hosts", "Hosts", "Admin-only host administration."),
    (
        "os-quota-class-sets",
        "QuotaClasses",
        "Quota classes management support.",
    ),
    ("os-quota-sets", "Quotas", "Quota management support."),
    (
        "scheduler-stats",
        "Scheduler_stats",
        "Scheduler stats support.",
    ),
    ("os-services", "Services", "Services support."),
    (
        "os-snapshot-actions",
        "SnapshotActions",
        "Enable snapshot manager actions.",
    ),
    (
        "os-types-extra-specs",
        "TypesExtraSpecs",
        "Type extra specs support.",
    ),
    ("os-types-manage", "TypesManage", "Types manage support."),
    (
        "os-used-limits",
        "UsedLimits",
        "Provide data on limited resources that are being used.",
    ),
    (
        "os-vol-host-attr",
        "VolumeHostAttribute",
        "Expose host as an attribute of a volume.",
    ),
    (
        "os-vol-mig-status-attr",
        "VolumeMigStatusAttribute",
        "Expose migration_status as an attribute of a volume.",
    ),
    (
        "os-vol-tenant-attr",
        "VolumeTenantAttribute",
        "Expose the internal project_id as an attribute of a volume.",
    ),
    (
        "os-volume-actions",
        "VolumeActions",
        "Enable volume actions.",
    ),
    (
        "os-volume-type-access",
        "VolumeTypeAccess",
        "Volume type access support.",
    ),
];

async fn extensions(State(state): St, ctx: Ctx) -> Result<Response, ApiError> {
    let _ = (&state, &ctx);
    let items: Vec<Value> = EXTENSIONS
        .iter()
        .map(|(alias, name, description)| {
            json!({
                "alias": alias,
                "name": name,
                "description": description,
                "links": [],
                "updated": "2026-12-04T00:00:00+00:00",
            })
        })
        .collect();
    Ok(axum::Json(json!({"extensions": items})).into_response())
}
