//! The admin views of the deployment: `/v3/{project_id}/os-services` (`cinder/api/v3/services.py`),
//! `/scheduler-stats/get_pools` (`contrib/scheduler_stats.py`), `/capabilities/{host}`
//! (`contrib/capabilities.py`) and `/os-hosts` (`contrib/hosts.py`).
//!
//! Services come from the store's heartbeats (`cinder-volume` on `node@backend`, one per
//! datapath node); the control plane itself is listed as `cinder-scheduler` on this host, up
//! while it answers. Disabling a `cinder-volume` service also tells the scheduler to place
//! nothing more on its node. Pools and capabilities come from the scheduler's latest reports.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use basalt_db::{DbError, Field, FilterOp, ListQuery, Service, Timestamp, Val};
use basalt_scheduler::{NodeReport, PoolView, Request};
use serde_json::{Map, Value, json};

use crate::body::{self, Body};
use crate::ctx::Ctx;
use crate::fault::ApiError;
use crate::version::Version;
use crate::{ApiState, blocking};

type St = State<Arc<ApiState>>;
type Pairs = Query<Vec<(String, String)>>;

/// Seconds without a heartbeat after which a service is down (Cinder's `service_down_time`).
pub const SERVICE_DOWN_TIME_SECS: i64 = 60;

/// The volume service's binary.
pub const VOLUME_BINARY: &str = "cinder-volume";

/// The scheduler's binary: what the control plane is listed as.
pub const SCHEDULER_BINARY: &str = "cinder-scheduler";

/// The service, pool, capability and host routes.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v3/os-services", get(index))
        .route("/v3/os-services/{action}", put(update))
        .route("/v3/scheduler-stats/get_pools", get(get_pools))
        .route("/v3/capabilities/{host}", get(capabilities))
        .route("/v3/os-hosts", get(hosts_index))
        .route("/v3/os-hosts/{host}", get(host_show))
}

/// The name of the machine the control plane runs on.
pub fn control_host() -> String {
    for p in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(s) = std::fs::read_to_string(p) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_owned();
            }
        }
    }
    "localhost".to_owned()
}

/// Whether a service last heard of at `updated` is up at `now`.
pub fn is_up(updated: Timestamp, now: Timestamp) -> bool {
    (now.0 - updated.0).abs() <= SERVICE_DOWN_TIME_SECS * 1_000_000
}

/// The node of a `cinder-volume` service's `node@backend` host.
pub fn node_of(host: &str) -> &str {
    host.split(['@', '#']).next().unwrap_or(host)
}

/// Every service: the store's, with the control plane's own scheduler entry (up, heard of
/// now) whether or not it has a row.
fn all_services(state: &ApiState, now: Timestamp) -> Result<Vec<Service>, ApiError> {
    let mut list = state.db().list_services()?;
    let me = control_host();
    match list
        .iter_mut()
        .find(|s| s.binary == SCHEDULER_BINARY && s.host == me)
    {
        Some(s) => s.updated_at = now,
        None => list.push(Service {
            host: me,
            binary: SCHEDULER_BINARY.to_owned(),
            availability_zone: state.cfg.default_availability_zone.clone(),
            disabled: false,
            disabled_reason: None,
            report_count: 1,
            updated_at: now,
        }),
    }
    list.sort_by(|a, b| (&a.binary, &a.host).cmp(&(&b.binary, &b.host)));
    Ok(list)
}

/// One `os-services` item at microversion `mv`; `backend_state` is the volume service's
/// (3.49).
pub fn service_view(s: &Service, now: Timestamp, mv: Version, backend_state: &str) -> Value {
    let mut o = Map::new();
    o.insert("binary".into(), json!(s.binary));
    o.insert("host".into(), json!(s.host));
    o.insert("zone".into(), json!(s.availability_zone));
    o.insert(
        "status".into(),
        json!(if s.disabled { "disabled" } else { "enabled" }),
    );
    o.insert(
        "state".into(),
        json!(if is_up(s.updated_at, now) {
            "up"
        } else {
            "down"
        }),
    );
    o.insert("updated_at".into(), json!(s.updated_at.to_string()));
    let volume = s.binary == VOLUME_BINARY;
    if mv.at_least(49) && volume {
        o.insert("backend_state".into(), json!(backend_state));
    }
    if mv.at_least(7) {
        o.insert("cluster".into(), Value::Null);
    }
    o.insert("disabled_reason".into(), json!(s.disabled_reason));
    if volume {
        o.insert("replication_status".into(), json!("not-capable"));
        o.insert("active_backend_id".into(), Value::Null);
        o.insert("frozen".into(), json!(false));
    }
    Value::Object(o)
}

async fn index(State(state): St, ctx: Ctx, Query(q): Pairs) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "volume_extension:services:index")?;
    let get = |k: &str| q.iter().rev().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    let (host, binary) = (get("host"), get("binary"));
    blocking(&state, move |state| {
        let now = Timestamp::now();
        let inst = Instant::now();
        let services = all_services(state, now)?;
        let sched = state.control.scheduler();
        let items: Vec<Value> = services
            .iter()
            .filter(|s| {
                host.as_ref()
                    .is_none_or(|h| h.is_empty() || filter_host(&s.host, h))
            })
            .filter(|s| binary.as_ref().is_none_or(|b| *b == s.binary))
            .map(|s| {
                let up = sched.is_up(node_of(&s.host), inst);
                service_view(s, now, ctx.version, if up { "up" } else { "down" })
            })
            .collect();
        drop(sched);
        Ok(axum::Json(json!({ "services": items })).into_response())
    })
    .await
}

/// An `enable`, `disable` or `disable-log-reason` body, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceChange {
    /// The host.
    pub host: String,
    /// `binary`, as given (empty when absent).
    pub binary: String,
    /// `service` (the deprecated name of `binary`), as given.
    pub service: String,
    /// Why (`disable-log-reason`).
    pub reason: Option<String>,
}

impl ServiceChange {
    /// The binary meant: `binary`, else `service`.
    pub fn binary_key(&self) -> &str {
        if self.binary.is_empty() {
            &self.service
        } else {
            &self.binary
        }
    }
}

fn host_ok(h: &str) -> bool {
    !h.is_empty()
        && h.chars().count() <= 255
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._#@:/+[]".contains(c))
}

/// Validates a service enable/disable body (`with_reason`: `disable-log-reason`'s).
///
/// # Errors
/// 400 naming the field.
pub fn parse_change(b: &Value, with_reason: bool) -> Result<ServiceChange, ApiError> {
    let Value::Object(m) = b else {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute body. Value: not an object.",
        ));
    };
    let mut allowed = vec!["binary", "host", "cluster", "service"];
    if with_reason {
        allowed.push("disabled_reason");
    }
    body::only(m, &allowed)?;
    let binary = body::opt_str(m, "binary", 255)?;
    let service = body::opt_str(m, "service", 255)?;
    for (k, v) in [("binary", &binary), ("service", &service)] {
        if v.as_deref() == Some("") {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute {k}. Value: \"\". should be non-empty"
            )));
        }
    }
    if binary.is_none() && service.is_none() {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute body. 'binary' is a required property",
        ));
    }
    if let Some(c) = m.get("cluster")
        && !c.is_null()
        && !c.is_string()
    {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute cluster. Value: {c}. is not of type 'string', 'null'"
        )));
    }
    let host = body::opt_str(m, "host", 255)?;
    if let Some(h) = &host
        && !host_ok(h)
    {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute host. Value: {h}. is not a valid host"
        )));
    }
    let Some(host) = host else {
        return Err(ApiError::invalid_input("Host field is missing."));
    };
    if with_reason && m.get("disabled_reason") == Some(&Value::Null) {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute disabled_reason. Value: None. None is not of type 'string'",
        ));
    }
    let reason = if with_reason {
        match body::opt_str(m, "disabled_reason", 255)? {
            Some(r) if r.trim().is_empty() => {
                return Err(ApiError::invalid_input(
                    "disabled_reason has a length less than 1 characters.",
                ));
            }
            Some(r) => Some(r.trim().to_owned()),
            None => None,
        }
    } else {
        None
    };
    Ok(ServiceChange {
        host,
        binary: binary.unwrap_or_default(),
        service: service.unwrap_or_default(),
        reason,
    })
}

async fn update(
    State(state): St,
    ctx: Ctx,
    Path(action): Path<String>,
    Body(b): Body,
) -> Result<Response, ApiError> {
    let (disable, with_reason) = match action.as_str() {
        "enable" => (false, false),
        "disable" => (true, false),
        "disable-log-reason" => (true, true),
        "freeze" | "thaw" | "failover_host" => {
            ctx.authorize_own(&state, "volume_extension:services:update")?;
            return Err(ApiError::invalid_input(format!(
                "{action} is not supported: Basalt back ends are not replicated."
            )));
        }
        "failover" if ctx.version.at_least(26) => {
            ctx.authorize_own(&state, "volume_extension:services:update")?;
            return Err(ApiError::invalid_input(
                "failover is not supported: Basalt back ends are not replicated.",
            ));
        }
        _ => return Err(ApiError::not_found("The resource could not be found.")),
    };
    ctx.authorize_own(&state, "volume_extension:services:update")?;
    let c = parse_change(&b, with_reason)?;
    blocking(&state, move |state| {
        let binary = c.binary_key().to_owned();
        let gone = || {
            ApiError::not_found(format!(
                "Service {binary} could not be found on host {}.",
                c.host
            ))
        };
        let existing = state
            .db()
            .list_services()?
            .into_iter()
            .find(|s| s.host == c.host && s.binary == binary);
        if existing.is_none() {
            if binary == SCHEDULER_BINARY && c.host == control_host() {
                // The control plane's own entry gets a row the first time it is changed.
                state.db().service_heartbeat(
                    &c.host,
                    SCHEDULER_BINARY,
                    &state.cfg.default_availability_zone,
                )?;
            } else {
                return Err(gone());
            }
        }
        // A plain disable keeps the reason given before; enabling clears it.
        let reason = if with_reason {
            c.reason.clone()
        } else {
            existing.and_then(|s| s.disabled_reason)
        };
        state
            .db()
            .set_service_disabled(&c.host, &binary, disable, reason.as_deref())
            .map_err(|e| match e {
                DbError::NotFound { .. } => gone(),
                other => other.into(),
            })?;
        if binary == VOLUME_BINARY {
            let known = state
                .control
                .scheduler()
                .set_disabled(node_of(&c.host), disable);
            if !known {
                tracing::info!(host = %c.host, "service changed; its node has not reported yet");
            }
        }
        let mut out = json!({
            "host": c.host,
            "service": c.service,
            "binary": c.binary,
            "status": if disable { "disabled" } else { "enabled" },
            "disabled": disable,
        });
        if with_reason {
            out["disabled_reason"] = json!(c.reason);
        }
        Ok(axum::Json(out).into_response())
    })
    .await
}

// --- pools ---

/// The `storage_protocol` Cinder shows: its first variant (`iSCSI` when a node serves both).
pub fn storage_protocol(reported: &str) -> &str {
    let lower = reported.to_ascii_lowercase();
    if lower.contains("iscsi") {
        "iSCSI"
    } else if lower.contains("nvme") {
        "NVMe-oF"
    } else if reported.is_empty() {
        "iSCSI"
    } else {
        reported
    }
}

fn vendor(b: &NodeReport) -> &str {
    if b.vendor_name.is_empty() {
        "Basalt"
    } else {
        &b.vendor_name
    }
}

fn driver_version(b: &NodeReport) -> &str {
    if b.driver_version.is_empty() {
        env!("CARGO_PKG_VERSION")
    } else {
        &b.driver_version
    }
}

/// A pool's `capabilities` as Cinder's host manager keeps them: the pool's report with the
/// backend's names filled in and the report's `timestamp`.
pub fn pool_capabilities(p: &PoolView, timestamp: Option<Timestamp>) -> Value {
    let mut caps = match serde_json::to_value(&p.pool) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    // Cinder's schemas want an integer here.
    #[allow(clippy::cast_possible_truncation)] // a percentage
    let reserved = p.pool.reserved_percentage.round() as i64;
    caps.insert("reserved_percentage".into(), json!(reserved));
    caps.insert("QoS_support".into(), json!(false));
    caps.insert(
        "volume_backend_name".into(),
        json!(p.backend.volume_backend_name),
    );
    caps.insert(
        "storage_protocol".into(),
        json!(storage_protocol(&p.backend.storage_protocol)),
    );
    caps.insert("vendor_name".into(), json!(vendor(&p.backend)));
    caps.insert("driver_version".into(), json!(driver_version(&p.backend)));
    caps.insert(
        "timestamp".into(),
        timestamp.map_or(Value::Null, |t| json!(t.to_string())),
    );
    Value::Object(caps)
}

/// Whether capability `cap` equals the query value `v` (Cinder's `_equal_after_convert`).
fn cap_equals(cap: Option<&Value>, v: &str) -> bool {
    match cap {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => s == v,
        Some(Value::Bool(b)) => body::str_bool(v) == Some(*b),
        Some(Value::Number(n)) => match (n.as_f64(), v.parse::<f64>()) {
            (Some(a), Ok(b)) => (a - b).abs() < f64::EPSILON,
            _ => false,
        },
        Some(_) => false,
    }
}

/// A parsed `get_pools` query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolQuery {
    /// `detail=true`.
    pub detail: bool,
    /// `name=` (3.28): the pool's `host@backend#pool`.
    pub name: Option<String>,
    /// `volume_type=` (3.35): pools that type may be placed on.
    pub volume_type: Option<String>,
    /// Capability filters (3.28 to 3.32).
    pub capabilities: Vec<(String, String)>,
}

/// Parses a `get_pools` query at microversion `mv`.
///
/// # Errors
/// 400 for a bad `detail`, or (3.33+) filters other than `name` and `volume_type`.
pub fn parse_pools(pairs: &[(String, String)], mv: Version) -> Result<PoolQuery, ApiError> {
    let mut q = PoolQuery::default();
    let mut filters: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in pairs {
        if k == "detail" {
            q.detail = body::str_bool(v).ok_or_else(|| {
                ApiError::bad_request(format!("Value '{v}' for detail is not a boolean-like"))
            })?;
        } else {
            filters.insert(k.clone(), v.clone());
        }
    }
    if !mv.at_least(28) {
        return Ok(q);
    }
    if mv.at_least(33) {
        let bad: Vec<&str> = filters
            .keys()
            .map(String::as_str)
            .filter(|k| !["name", "volume_type"].contains(k))
            .collect();
        if !bad.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Invalid filters {} are found in query options.",
                bad.join(",")
            )));
        }
    }
    q.name = filters.remove("name");
    let vt = filters.remove("volume_type");
    if mv.at_least(35) {
        q.volume_type = vt;
    }
    q.capabilities = filters.into_iter().collect();
    Ok(q)
}

/// The `cinder-volume` heartbeat times by `host@backend`.
fn heartbeats(state: &ApiState) -> Result<BTreeMap<String, Timestamp>, ApiError> {
    Ok(state
        .db()
        .list_services()?
        .into_iter()
        .filter(|s| s.binary == VOLUME_BINARY)
        .map(|s| (s.host, s.updated_at))
        .collect())
}

async fn get_pools(State(state): St, ctx: Ctx, Query(pairs): Pairs) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "scheduler_extension:scheduler_stats:get_pools")?;
    let q = parse_pools(&pairs, ctx.version)?;
    blocking(&state, move |state| {
        let specs = match &q.volume_type {
            Some(t) => match state.db().get_volume_type(t) {
                Ok(t) => Some(t.extra_specs),
                Err(DbError::NotFound { .. }) => {
                    return Err(ApiError::not_found(format!(
                        "Volume type with name {t} could not be found."
                    )));
                }
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let beats = heartbeats(state)?;
        let now = Instant::now();
        let (pools, passing) = {
            let sched = state.control.scheduler();
            let pools = sched.pools(now);
            let passing: Option<BTreeSet<String>> = specs.map(|extra_specs| {
                let req = Request {
                    extra_specs,
                    ..Request::default()
                };
                sched
                    .weighed(&req, now)
                    .map(|ps| ps.into_iter().map(|p| p.pool.to_string()).collect())
                    .unwrap_or_default()
            });
            (pools, passing)
        };
        let mut items = Vec::new();
        // As Cinder's host manager: only the pools of services that are up and enabled.
        for p in pools.iter().filter(|p| p.schedulable) {
            let name = p.id.to_string();
            if q.name.as_ref().is_some_and(|n| *n != name) {
                continue;
            }
            if passing.as_ref().is_some_and(|s| !s.contains(&name)) {
                continue;
            }
            let caps = pool_capabilities(p, beats.get(&p.id.backend_address()).copied());
            if !q
                .capabilities
                .iter()
                .all(|(k, v)| cap_equals(caps.get(k), v))
            {
                continue;
            }
            items.push(if q.detail {
                json!({"name": name, "capabilities": caps})
            } else {
                json!({"name": name})
            });
        }
        Ok(axum::Json(json!({ "pools": items })).into_response())
    })
    .await
}

// --- capabilities ---

/// Cinder's standard capability properties, as every driver declares them.
fn standard_properties() -> Value {
    let prop = |title: &str, description: &str| json!({"title": title, "description": description, "type": "boolean"});
    json!({
        "thin_provisioning": prop("Thin Provisioning", "Sets thin provisioning."),
        "compression": prop("Compression", "Enables compression."),
        "qos": prop("QoS", "Enables QoS."),
        "replication_enabled": prop("Replication", "Enables replication."),
    })
}

/// `GET /capabilities/{host}` for the volume service on `service_host` (`node@backend`),
/// from its node's latest report when there is one.
pub fn capabilities_view(service_host: &str, backend: Option<&NodeReport>) -> Value {
    let backend_name = service_host
        .split_once('@')
        .map_or("basalt", |(_, b)| b.split('#').next().unwrap_or(b));
    let (name, protocol, vendor_name, version) = match backend {
        Some(b) => (
            b.volume_backend_name.as_str(),
            storage_protocol(&b.storage_protocol),
            vendor(b),
            driver_version(b),
        ),
        None => (backend_name, "iSCSI", "Basalt", env!("CARGO_PKG_VERSION")),
    };
    json!({
        "namespace": format!("OS::Storage::Capabilities::{service_host}"),
        "vendor_name": vendor_name,
        "volume_backend_name": name,
        "pool_name": null,
        "driver_version": version,
        "storage_protocol": protocol,
        "display_name": null,
        "description": null,
        "visibility": null,
        "replication_targets": [],
        "properties": standard_properties(),
    })
}

/// Cinder's `_filter_host` (`cinder/db/api.py`), the services list's `host` filter: a value
/// with `#` matches exactly; one with `@` also its pools (`value#*`); a bare host also its
/// backends and pools (`value@*`, `value#*`).
fn filter_host(service_host: &str, value: &str) -> bool {
    if service_host == value {
        return true;
    }
    if value.contains('#') {
        return false;
    }
    let rest = service_host.strip_prefix(value).unwrap_or_default();
    rest.starts_with('#') || (!value.contains('@') && rest.starts_with('@'))
}

/// Whether a service's host is what `wanted` names: the same, or (without a backend) its
/// node (Cinder's `host_or_cluster` filter).
fn host_matches(service_host: &str, wanted: &str) -> bool {
    if service_host == wanted {
        return true;
    }
    !wanted.contains('@')
        && service_host
            .strip_prefix(wanted)
            .is_some_and(|rest| rest.starts_with('@'))
}

async fn capabilities(
    State(state): St,
    ctx: Ctx,
    Path(host): Path<String>,
) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "volume_extension:capabilities")?;
    blocking(&state, move |state| {
        let svc = state
            .db()
            .list_services()?
            .into_iter()
            .find(|s| s.binary == VOLUME_BINARY && host_matches(&s.host, &host))
            .ok_or_else(|| ApiError::not_found(format!("Can't find service: {host}")))?;
        let node = node_of(&svc.host).to_owned();
        let backend = state
            .control
            .scheduler()
            .pools(Instant::now())
            .into_iter()
            .find(|p| p.id.host == node)
            .map(|p| p.backend);
        Ok(axum::Json(capabilities_view(&svc.host, backend.as_ref())).into_response())
    })
    .await
}

// --- hosts ---

/// One `os-hosts` item.
pub fn host_entry(s: &Service, now: Timestamp) -> Value {
    json!({
        "host_name": s.host,
        "service": s.binary,
        "zone": s.availability_zone,
        "service-status": if is_up(s.updated_at, now) { "available" } else { "unavailable" },
        "service-state": if s.disabled { "disabled" } else { "enabled" },
        "last-update": s.updated_at.to_string(),
    })
}

async fn hosts_index(State(state): St, ctx: Ctx, Query(q): Pairs) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "volume_extension:hosts")?;
    let zone = q
        .iter()
        .rev()
        .find(|(k, _)| k == "zone")
        .map(|(_, v)| v.clone())
        .filter(|z| !z.is_empty());
    blocking(&state, move |state| {
        let now = Timestamp::now();
        let items: Vec<Value> = all_services(state, now)?
            .iter()
            .filter(|s| !s.disabled)
            .filter(|s| zone.as_ref().is_none_or(|z| *z == s.availability_zone))
            .map(|s| host_entry(s, now))
            .collect();
        Ok(axum::Json(json!({ "hosts": items })).into_response())
    })
    .await
}

/// Whether a volume's `host@backend#pool` lives on service host `host` (`host` itself, or a
/// pool of it).
fn on_host(volume_host: &str, host: &str) -> bool {
    volume_host == host
        || volume_host.strip_prefix(host).is_some_and(|rest| {
            rest.starts_with('#') || (!host.contains('@') && rest.starts_with('@'))
        })
}

/// Per-project usage on a host: `(project, volumes, volume GiB, snapshots, snapshot GiB)`.
pub type HostUsage = (String, u64, u64, u64, u64);

/// `{"host": [{"resource": {...}}]}`: the total first (project `(total)`), then each project's;
/// counts and sizes as strings, as Cinder sends them.
pub fn host_view(host: &str, per_project: &[HostUsage]) -> Value {
    let item = |project: &str, vc: u64, vg: u64, sc: u64, sg: u64| {
        json!({"resource": {
            "host": host,
            "project": project,
            "volume_count": vc.to_string(),
            "total_volume_gb": vg.to_string(),
            "snapshot_count": sc.to_string(),
            "total_snapshot_gb": sg.to_string(),
        }})
    };
    let sum = |f: fn(&HostUsage) -> u64| per_project.iter().map(f).sum::<u64>();
    let mut out = vec![item(
        "(total)",
        sum(|u| u.1),
        sum(|u| u.2),
        sum(|u| u.3),
        sum(|u| u.4),
    )];
    out.extend(
        per_project
            .iter()
            .map(|(p, vc, vg, sc, sg)| item(p, *vc, *vg, *sc, *sg)),
    );
    json!({ "host": out })
}

async fn host_show(
    State(state): St,
    ctx: Ctx,
    Path(host): Path<String>,
) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "volume_extension:hosts")?;
    blocking(&state, move |state| {
        let db = state.db();
        if !db
            .list_services()?
            .iter()
            .any(|s| s.binary == VOLUME_BINARY && s.host == host)
        {
            return Err(ApiError::not_found(format!(
                "Host {host} could not be found."
            )));
        }
        let vq = ListQuery::default().filter(Field::Host, FilterOp::Like, Val::Text(host.clone()));
        let vols: Vec<_> = db
            .list_volumes(&vq)?
            .items
            .into_iter()
            .filter(|v| v.host.as_deref().is_some_and(|h| on_host(h, &host)))
            .collect();
        let mut usage: BTreeMap<String, (u64, u64, u64, u64)> = BTreeMap::new();
        for v in &vols {
            let e = usage.entry(v.project_id.clone()).or_default();
            e.0 += 1;
            e.1 += v.size_gb;
        }
        if !vols.is_empty() {
            let ids: BTreeSet<&str> = vols.iter().map(|v| v.id.as_str()).collect();
            for s in db.list_snapshots(&ListQuery::default())?.items {
                if ids.contains(s.volume_id.as_str()) {
                    let e = usage.entry(s.project_id.clone()).or_default();
                    e.2 += 1;
                    e.3 += s.size_gb;
                }
            }
        }
        let per: Vec<HostUsage> = usage
            .into_iter()
            .map(|(p, (vc, vg, sc, sg))| (p, vc, vg, sc, sg))
            .collect();
        Ok(axum::Json(host_view(&host, &per)).into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_scheduler::{PoolId, PoolReport};

    fn svc(host: &str, binary: &str, disabled: bool, updated: Timestamp) -> Service {
        Service {
            host: host.into(),
            binary: binary.into(),
            availability_zone: "nova".into(),
            disabled,
            disabled_reason: disabled.then(|| "maintenance".to_owned()),
            report_count: 3,
            updated_at: updated,
        }
    }

    #[test]
    fn services_show_state_and_version_fields() {
        let now = Timestamp(1_000_000_000_000);
        let s = svc("n1@basalt", VOLUME_BINARY, true, now.plus_secs(-30));
        let v = service_view(&s, now, Version::new(3, 0), "up");
        assert_eq!(v["state"], "up");
        assert_eq!(v["status"], "disabled");
        assert_eq!(v["disabled_reason"], "maintenance");
        assert_eq!(v["frozen"], false);
        assert!(v.get("cluster").is_none() && v.get("backend_state").is_none());
        let v = service_view(&s, now.plus_secs(61), Version::new(3, 49), "down");
        assert_eq!(v["state"], "down");
        assert_eq!(v["cluster"], Value::Null);
        assert_eq!(v["backend_state"], "down");
        let sch = service_view(
            &svc("ctl", SCHEDULER_BINARY, false, now),
            now,
            Version::new(3, 49),
            "up",
        );
        assert!(sch.get("backend_state").is_none() && sch.get("frozen").is_none());
        assert_eq!(sch["status"], "enabled");
        assert_eq!(node_of("n1@basalt"), "n1");
        assert_eq!(node_of("n1"), "n1");
        let h = host_entry(&s, now.plus_secs(120));
        assert_eq!(h["service-status"], "unavailable");
        assert_eq!(h["service-state"], "disabled");
    }

    #[test]
    fn service_bodies_are_checked() {
        let c = parse_change(
            &json!({"host": "n1@basalt", "binary": "cinder-volume"}),
            false,
        )
        .expect("valid");
        assert_eq!(c.binary_key(), "cinder-volume");
        let c = parse_change(
            &json!({"host": "n1@basalt", "service": "cinder-volume"}),
            false,
        )
        .expect("valid");
        assert_eq!(c.binary_key(), "cinder-volume");
        let c = parse_change(
            &json!({"host": "h", "binary": "b", "disabled_reason": " why "}),
            true,
        )
        .expect("valid");
        assert_eq!(c.reason.as_deref(), Some("why"));
        for (bad, reason) in [
            (json!({"host": "h"}), false),
            (json!({"binary": "b"}), false),
            (json!({"host": "h", "binary": ""}), false),
            (json!({"host": "bad host", "binary": "b"}), false),
            (
                json!({"host": "h", "binary": "b", "disabled_reason": "x"}),
                false,
            ),
            (
                json!({"host": "h", "binary": "b", "disabled_reason": "  "}),
                true,
            ),
            (
                json!({"host": "h", "binary": "b", "disabled_reason": null}),
                true,
            ),
            (json!({"host": "h", "binary": "b", "extra": 1}), false),
            (json!(["h"]), false),
        ] {
            assert!(parse_change(&bad, reason).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_host_filter_is_cinders() {
        assert!(filter_host("n1@basalt", "n1"));
        assert!(filter_host("n1", "n1"));
        assert!(filter_host("n1@basalt", "n1@basalt"));
        assert!(filter_host("n1@basalt#pool", "n1@basalt"));
        assert!(filter_host("n1#pool", "n1"));
        assert!(!filter_host("n10@basalt", "n1"));
        assert!(!filter_host("n1@basalt2", "n1@basalt"));
        assert!(!filter_host("n1@basalt#pool", "n1@basalt#pool2"));
    }

    fn view() -> PoolView {
        let mut r = NodeReport::basalt("n1", "nova", vec![]);
        r.driver_version = "1.2.3".into();
        PoolView {
            id: PoolId::new("n1", "basalt", "pool"),
            availability_zone: "nova".into(),
            backend: r,
            pool: PoolReport::thin("pool", 100.0, 80.0),
            schedulable: true,
        }
    }

    #[test]
    fn pools_look_like_cinder_pools() {
        let c = pool_capabilities(&view(), Some(Timestamp(0)));
        assert_eq!(c["storage_protocol"], "iSCSI");
        assert_eq!(c["vendor_name"], "Basalt");
        assert_eq!(c["volume_backend_name"], "basalt");
        assert_eq!(c["driver_version"], "1.2.3");
        assert_eq!(c["QoS_support"], false);
        assert!(c["reserved_percentage"].is_i64());
        assert_eq!(c["total_capacity_gb"], 100.0);
        assert_eq!(c["free_capacity_gb"], 80.0);
        assert_eq!(c["thin_provisioning_support"], true);
        assert_eq!(c["timestamp"], "1970-01-01T00:00:00.000000");
        assert_eq!(storage_protocol("NVMe-oF"), "NVMe-oF");
        assert_eq!(storage_protocol("iSCSI/NVMe-oF"), "iSCSI");
        assert!(cap_equals(c.get("thin_provisioning_support"), "True"));
        assert!(cap_equals(c.get("total_capacity_gb"), "100"));
        assert!(!cap_equals(c.get("vendor_name"), "Other"));
    }

    #[test]
    fn pool_queries_follow_the_microversion() {
        let p = |q: &[(&str, &str)]| -> Vec<(String, String)> {
            q.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
        };
        let q = parse_pools(&p(&[("detail", "True"), ("name", "x")]), Version::new(3, 0))
            .expect("parses");
        assert!(q.detail);
        assert_eq!(q.name, None);
        let q = parse_pools(
            &p(&[
                ("name", "x"),
                ("volume_type", "t"),
                ("vendor_name", "Basalt"),
            ]),
            Version::new(3, 30),
        )
        .expect("parses");
        assert_eq!(q.name.as_deref(), Some("x"));
        assert_eq!(q.volume_type, None);
        assert_eq!(
            q.capabilities,
            [("vendor_name".to_owned(), "Basalt".to_owned())]
        );
        assert!(parse_pools(&p(&[("vendor_name", "B")]), Version::new(3, 35)).is_err());
        let q = parse_pools(&p(&[("volume_type", "t")]), Version::new(3, 35)).expect("parses");
        assert_eq!(q.volume_type.as_deref(), Some("t"));
        assert!(parse_pools(&p(&[("detail", "sure")]), Version::new(3, 0)).is_err());
    }

    #[test]
    fn capabilities_and_hosts_views() {
        let c = capabilities_view("n1@basalt", Some(&view().backend));
        assert_eq!(c["namespace"], "OS::Storage::Capabilities::n1@basalt");
        assert_eq!(c["storage_protocol"], "iSCSI");
        assert_eq!(c["replication_targets"], json!([]));
        assert_eq!(c["properties"]["thin_provisioning"]["type"], "boolean");
        let c = capabilities_view("n2@fast", None);
        assert_eq!(c["volume_backend_name"], "fast");
        assert!(host_matches("n1@basalt", "n1"));
        assert!(host_matches("n1@basalt", "n1@basalt"));
        assert!(!host_matches("n10@basalt", "n1"));
        assert!(!host_matches("n1@basalt", "n1@other"));
        assert!(on_host("n1@basalt#pool", "n1@basalt"));
        assert!(!on_host("n1@basalt2#pool", "n1@basalt"));
        let h = host_view(
            "n1@basalt",
            &[("p1".into(), 2, 3, 1, 1), ("p2".into(), 1, 5, 0, 0)],
        );
        assert_eq!(h["host"][0]["resource"]["project"], "(total)");
        assert_eq!(h["host"][0]["resource"]["volume_count"], "3");
        assert_eq!(h["host"][0]["resource"]["total_volume_gb"], "8");
        assert_eq!(h["host"][0]["resource"]["snapshot_count"], "1");
        assert_eq!(h["host"][2]["resource"]["project"], "p2");
    }
}
