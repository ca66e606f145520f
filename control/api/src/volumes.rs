//! `/v3/{project_id}/volumes`: CRUD, detail, summary (3.12), metadata and the volume actions
//! (`cinder/api/v3/volumes.py`, `contrib/volume_actions.py`, `contrib/admin_actions.py`).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use basalt_db::{DbError, NewVolume, Volume, VolumeChange};
use basalt_manager::{Accepted, ManagerError, OnAccept};
use serde_json::{Map, Value, json};

use crate::body::{self, Body};
use crate::ctx::Ctx;
use crate::fault::ApiError;
use crate::paging::{self, Kind};
use crate::views::{self, TypeNames, View};
use crate::{ApiState, blocking};

type St = State<Arc<ApiState>>;
type Pairs = Query<Vec<(String, String)>>;

/// The volume routes.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v3/volumes", get(list).post(create))
        .route("/v3/volumes/detail", get(list_detail))
        .route("/v3/volumes/summary", get(summary))
        .route("/v3/volumes/{id}", get(show).put(update).delete(delete))
        .route("/v3/volumes/{id}/action", post(action))
        .merge(crate::meta::routes::<VolumeMeta>("/v3/volumes/{id}"))
}

/// A volume the caller may see, or 404 (another project's volume is not there for it).
///
/// # Errors
/// 404.
pub fn visible_volume(state: &ApiState, ctx: &Ctx, id: &str) -> Result<Volume, ApiError> {
    ctx.visible("Volume", id, state.db().get_volume(id), |v| &v.project_id)
}

/// The `attachments` items of a volume's view (attached ones).
pub fn attachment_items(state: &ApiState, ctx: &Ctx, v: &Volume) -> Vec<Value> {
    crate::attachments::volume_items(state, ctx, v)
}

fn detail(state: &ApiState, ctx: &Ctx, v: &Volume, types: &TypeNames, view: View) -> Value {
    views::volume_detail(ctx, state, v, attachment_items(state, ctx, v), types, view)
}

async fn list(State(state): St, ctx: Ctx, Query(q): Pairs) -> Result<Response, ApiError> {
    list_volumes(state, ctx, q, false).await
}

async fn list_detail(State(state): St, ctx: Ctx, Query(q): Pairs) -> Result<Response, ApiError> {
    list_volumes(state, ctx, q, true).await
}

async fn list_volumes(
    state: Arc<ApiState>,
    ctx: Ctx,
    q: Vec<(String, String)>,
    detailed: bool,
) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "volume:get_all")?;
    let p = paging::parse(&ctx, &q, Kind::Volume)?;
    blocking(&state, move |state| {
        let page = if p.empty {
            basalt_db::Page {
                items: Vec::new(),
                count: 0,
            }
        } else {
            state.db().list_volumes(&p.query)?
        };
        let types = TypeNames::load(state);
        let items: Vec<Value> = page
            .items
            .iter()
            .map(|v| {
                if detailed {
                    detail(state, &ctx, v, &types, View::Extended)
                } else {
                    views::volume_summary(&ctx, v)
                }
            })
            .collect();
        let path = if detailed {
            "volumes/detail"
        } else {
            "volumes"
        };
        let mut out = json!({ "volumes": items });
        if let Some(l) = paging::next_link(
            &ctx,
            &p,
            path,
            page.items.len(),
            page.items.last().map(|v| v.id.as_str()),
        ) {
            out["volumes_links"] = l;
        }
        if p.with_count {
            out["count"] = json!(page.count);
        }
        Ok(axum::Json(out).into_response())
    })
    .await
}

async fn show(State(state): St, ctx: Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    blocking(&state, move |state| {
        let v = visible_volume(state, &ctx, &id)?;
        ctx.authorize(state, "volume:get", &v.project_id, Some(&v.user_id))?;
        let types = TypeNames::load(state);
        let view = detail(state, &ctx, &v, &types, View::Extended);
        Ok(axum::Json(json!({ "volume": view })).into_response())
    })
    .await
}

async fn summary(State(state): St, ctx: Ctx, Query(q): Pairs) -> Result<Response, ApiError> {
    if !ctx.version.at_least(12) {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    ctx.authorize_own(&state, "volume:get_all")?;
    let mut p = paging::parse(&ctx, &q, Kind::Volume)?;
    p.query.limit = None;
    blocking(&state, move |state| {
        let page = state.db().list_volumes(&p.query)?;
        let total: u64 = page.items.iter().map(|v| v.size_gb).sum();
        let mut s = json!({"total_size": total, "total_count": page.items.len()});
        if ctx.version.at_least(36) {
            let mut meta: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for v in &page.items {
                for (k, val) in &v.metadata {
                    let e = meta.entry(k.clone()).or_default();
                    if !e.contains(val) {
                        e.push(val.clone());
                    }
                }
            }
            s["metadata"] = json!(meta);
        }
        Ok(axum::Json(json!({"volume-summary": s})).into_response())
    })
    .await
}

/// Keys a volume create body may hold at 3.53+ (Cinder's strict schema).
const CREATE_KEYS: &[&str] = &[
    "name",
    "description",
    "display_name",
    "display_description",
    "size",
    "availability_zone",
    "source_volid",
    "snapshot_id",
    "backup_id",
    "imageRef",
    "image_id",
    "volume_type",
    "metadata",
    "consistencygroup_id",
    "group_id",
    "multiattach",
    "scheduler_hints",
];

fn name_and_description(
    m: &Map<String, Value>,
) -> Result<(Option<String>, Option<String>), ApiError> {
    let name = match body::opt_str(m, "name", 255)? {
        Some(n) => Some(n),
        None => body::opt_str(m, "display_name", 255)?,
    };
    let description = match body::opt_str(m, "description", 255)? {
        Some(d) => Some(d),
        None => body::opt_str(m, "display_description", 255)?,
    };
    Ok((name, description))
}

/// Whether a type's extra specs make its volumes multi-attachable (`multiattach="<is> True"`).
pub fn type_multiattach(t: &basalt_db::VolumeType) -> bool {
    t.extra_specs
        .get("multiattach")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("<is> true"))
}

async fn create(State(state): St, ctx: Ctx, Body(b): Body) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "volume:create")?;
    let m = body::section(&b, "volume")?.clone();
    if let Value::Object(top) = &b
        && ctx.version.at_least(53)
    {
        body::only(top, &["volume", "OS-SCH-HNT:scheduler_hints"])?;
    }
    if ctx.version.at_least(53) {
        body::only(&m, CREATE_KEYS)?;
    }
    let (name, description) = name_and_description(&m)?;
    let size = body::opt_size(&m, "size")?;
    let snapshot_id = body::opt_str(&m, "snapshot_id", 36)?
        .map(|s| body::uuid(&s, "snapshot_id"))
        .transpose()?;
    let source_volid = body::opt_str(&m, "source_volid", 36)?
        .map(|s| body::uuid(&s, "source_volid"))
        .transpose()?;
    if snapshot_id.is_some() && source_volid.is_some() {
        return Err(ApiError::invalid_input(
            "only one of snapshot_id and source_volid may be given",
        ));
    }
    for (k, what) in [
        ("imageRef", "an image"),
        ("image_id", "an image"),
        ("backup_id", "a backup"),
    ] {
        if m.get(k).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::bad_request(format!(
                "Creating a volume from {what} ({k}) is not supported by this Basalt deployment."
            )));
        }
    }
    for k in ["consistencygroup_id", "group_id"] {
        if let Some(v) = m.get(k).filter(|v| !v.is_null()) {
            return Err(ApiError::not_found(format!(
                "Group {} could not be found.",
                v.as_str().unwrap_or("?")
            )));
        }
    }
    if body::opt_bool(&m, "multiattach")? == Some(true) {
        return Err(ApiError::bad_request(
            "The multiattach parameter is not supported; use a volume type with the extra spec multiattach=\"<is> True\".",
        ));
    }
    let metadata = match m.get("metadata") {
        None | Some(Value::Null) => Default::default(),
        Some(v) => body::metadata(v, "metadata")?,
    };
    let az = body::opt_str(&m, "availability_zone", 255)?;
    let vtype = body::opt_str(&m, "volume_type", 255)?;
    let bctx = ctx.clone();
    let pending = blocking(&state, move |state| {
        let ctx = bctx;
        let db = state.db();
        // The source decides size and zone when they are not given.
        let (mut size_gb, mut zone, mut type_id) = (size, az.clone(), None);
        if let Some(sid) = &snapshot_id {
            let s = crate::snapshots::visible_snapshot(state, &ctx, sid)?;
            let src = db.get_volume(&s.volume_id)?;
            size_gb.get_or_insert(s.size_gb);
            zone.get_or_insert(src.availability_zone.clone());
            type_id = src.volume_type_id.clone();
        }
        if let Some(vid) = &source_volid {
            let src = visible_volume(state, &ctx, vid)?;
            size_gb.get_or_insert(src.size_gb);
            zone.get_or_insert(src.availability_zone.clone());
            type_id = src.volume_type_id.clone();
        }
        let Some(size_gb) = size_gb else {
            return Err(ApiError::bad_request(
                "Invalid input for field/attribute size. 'size' is a required property",
            ));
        };
        let t = match (&vtype, &type_id) {
            (Some(t), _) => db.get_volume_type(t).map_err(|e| match e {
                DbError::NotFound { .. } => {
                    ApiError::not_found(format!("Volume type {t} could not be found."))
                }
                o => o.into(),
            })?,
            (None, Some(id)) => db.get_volume_type(id)?,
            (None, None) => default_type(state, &ctx)?,
        };
        if !t.is_public && !ctx.is_admin() && !t.access.iter().any(|p| p == ctx.project()) {
            return Err(ApiError::not_found(format!(
                "Volume type {} could not be found.",
                vtype.as_deref().unwrap_or(&t.id)
            )));
        }
        let zone = zone.unwrap_or_else(|| state.cfg.default_availability_zone.clone());
        let zones = crate::misc::zones(state);
        if !zones.iter().any(|(z, _)| *z == zone) {
            return Err(ApiError::invalid_input(format!(
                "Availability zone '{zone}' is invalid."
            )));
        }
        let new = NewVolume {
            id: basalt_db::new_uuid().map_err(|e| ApiError::internal(e.to_string()))?,
            project_id: ctx.project().to_owned(),
            user_id: ctx.auth.user_id.clone(),
            name,
            description,
            size_gb,
            volume_type_id: Some(t.id.clone()),
            availability_zone: zone,
            bootable: false,
            multiattach: type_multiattach(&t),
            source_volid: source_volid.clone(),
            snapshot_id: snapshot_id.clone(),
            use_quota: true,
            metadata,
        };
        let pending = state.control.accept_volume(&new)?;
        let types = TypeNames::load(state);
        let view = detail(state, &ctx, &pending.volume, &types, View::Detail);
        Ok((pending, view))
    })
    .await?;
    let (pending, view) = pending;
    let id = pending.volume.id.clone();
    tracing::info!(volume = %id, size_gb = pending.volume.size_gb, "volume accepted");
    let s = state.clone();
    let (project, rid) = (ctx.project().to_owned(), ctx.request_id.clone());
    tokio::task::spawn_blocking(
        move || match s.control.place_volume(pending, Instant::now()) {
            Ok(v) if v.status == "error" => {
                tracing::warn!(volume = %v.id, message = ?v.user_message, "volume could not be placed");
                crate::messages::record(
                    &s,
                    &project,
                    Some(&rid),
                    "VOLUME",
                    &v.id,
                    "VOLUME_VOLUME_001_002",
                    &format!(
                        "schedule allocate volume:Could not find any available weighted backend. {}",
                        v.user_message.as_deref().unwrap_or("")
                    ),
                );
            }
            Ok(v) => {
                tracing::info!(volume = %v.id, status = %v.status, host = ?v.host, "volume placed")
            }
            Err(e) => tracing::error!(volume = %id, error = %e, "placing the volume failed"),
        },
    );
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"volume": view}))).into_response())
}

/// The type a volume gets when none is asked for: the project's default (3.62), else the
/// configured default.
///
/// # Errors
/// The store failed, or the default type is missing.
pub fn default_type(state: &ApiState, ctx: &Ctx) -> Result<basalt_db::VolumeType, ApiError> {
    if let Some(t) = state.db().get_default_type(ctx.project())?
        && let Ok(t) = state.db().get_volume_type(&t)
    {
        return Ok(t);
    }
    Ok(state.db().get_volume_type(&state.cfg.default_volume_type)?)
}

async fn update(
    State(state): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(b): Body,
) -> Result<Response, ApiError> {
    let m = body::section(&b, "volume")?.clone();
    if ctx.version.at_least(53) {
        body::only(
            &m,
            &[
                "name",
                "description",
                "display_name",
                "display_description",
                "metadata",
            ],
        )?;
    }
    if m.is_empty() {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute volume. Value: {}. {} does not have enough properties",
        ));
    }
    let has_name = m.contains_key("name") || m.contains_key("display_name");
    let has_desc = m.contains_key("description") || m.contains_key("display_description");
    let (name, description) = name_and_description(&m)?;
    let metadata = match m.get("metadata") {
        None => None,
        Some(v) => Some(body::metadata(v, "metadata")?),
    };
    blocking(&state, move |state| {
        let v = visible_volume(state, &ctx, &id)?;
        ctx.authorize(state, "volume:update", &v.project_id, Some(&v.user_id))?;
        if v.status == "maintenance" {
            return Err(ApiError::bad_request(format!(
                "Invalid volume: Volume {id} is in maintenance; it cannot be updated."
            )));
        }
        let change = VolumeChange {
            name: has_name.then_some(name),
            description: has_desc.then_some(description),
            ..VolumeChange::default()
        };
        let mut v = state.db().update_volume(&id, &[], &change)?;
        if let Some(meta) = metadata {
            v.metadata = state.db().set_volume_metadata(&id, &meta, true)?;
        }
        let types = TypeNames::load(state);
        let view = detail(state, &ctx, &v, &types, View::Detail);
        Ok(axum::Json(json!({ "volume": view })).into_response())
    })
    .await
}

/// Runs a control-plane operation on a blocking thread and returns as soon as it is accepted
/// (or refused); the rest of it goes on after the answer.
///
/// # Errors
/// The operation's refusal.
pub async fn run_accepted<F>(
    state: &Arc<ApiState>,
    ctx: &Ctx,
    what: &'static str,
    f: F,
) -> Result<Accepted, ApiError>
where
    F: FnOnce(&ApiState, OnAccept<'_>) -> Result<(), ManagerError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel::<Result<Accepted, ApiError>>();
    let s = state.clone();
    let rid = ctx.request_id.clone();
    tokio::task::spawn_blocking(move || {
        let mut slot = Some(tx);
        let mut seen: Option<Accepted> = None;
        let mut hook = |a: Accepted| {
            seen = Some(a.clone());
            if let Some(t) = slot.take() {
                let _ = t.send(Ok(a));
            }
        };
        let r = f(&s, &mut hook);
        match (r, slot.take()) {
            (Err(e), Some(t)) => {
                let _ = t.send(Err(e.into()));
            }
            (Err(e), None) => {
                tracing::error!(operation = what, error = %e, "failed after it was accepted");
                let (kind, project, id) = match &seen {
                    Some(Accepted::Volume(v)) => ("VOLUME", v.project_id.clone(), v.id.clone()),
                    Some(Accepted::Snapshot(sn)) => {
                        ("SNAPSHOT", sn.project_id.clone(), sn.id.clone())
                    }
                    None => return,
                };
                crate::messages::record(
                    &s,
                    &project,
                    Some(&rid),
                    kind,
                    &id,
                    &format!("VOLUME_{kind}_{}_001", event_action(what)),
                    &format!("{what}:{e}"),
                );
            }
            (Ok(()), Some(t)) => {
                let _ = t.send(Err(ApiError::internal(format!(
                    "{what} ended without being accepted"
                ))));
            }
            (Ok(()), None) => tracing::info!(operation = what, "done"),
        }
    });
    rx.await
        .map_err(|_| ApiError::internal(format!("{what} failed")))?
}

/// Cinder's message action id for an operation.
fn event_action(what: &str) -> &'static str {
    match what {
        "volume extend" => "007",
        "snapshot create" => "009",
        "snapshot delete" | "snapshot force delete" => "010",
        "volume revert" => "018",
        "volume delete" => "020",
        _ => "000",
    }
}

async fn delete(
    State(state): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Pairs,
) -> Result<Response, ApiError> {
    let flag = |k: &str| -> Result<bool, ApiError> {
        match q.iter().rev().find(|(a, _)| a == k) {
            None => Ok(false),
            Some((_, v)) => body::str_bool(v)
                .ok_or_else(|| ApiError::invalid_input(format!("{k} must be a boolean, not {v}"))),
        }
    };
    let cascade = flag("cascade")?;
    let force = flag("force")?;
    if force && !ctx.version.at_least(23) {
        return Err(ApiError::invalid_input("force needs microversion 3.23"));
    }
    let v = {
        let id = id.clone();
        let ctx = ctx.clone();
        blocking(&state, move |state| visible_volume(state, &ctx, &id)).await?
    };
    ctx.authorize(&state, "volume:delete", &v.project_id, Some(&v.user_id))?;
    if force {
        ctx.authorize(&state, "volume:force_delete", &v.project_id, None)?;
    }
    delete_volume(&state, &ctx, v, cascade, force).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Deletes a volume (with its snapshots when `cascade`; from any state but attached when
/// `force`), answering once it is `deleting`.
///
/// # Errors
/// Wrong state, snapshots left (without cascade), attached.
pub async fn delete_volume(
    state: &Arc<ApiState>,
    ctx: &Ctx,
    v: Volume,
    cascade: bool,
    force: bool,
) -> Result<(), ApiError> {
    run_accepted(state, ctx, "volume delete", move |state, accepted| {
        let db = state.db();
        if !db.attachments_of(&v.id)?.is_empty() {
            return Err(ManagerError::Invalid(format!(
                "Invalid volume: Volume {} is attached; detach it first.",
                v.id
            )));
        }
        if force && !basalt_manager::DELETABLE.contains(&v.status.as_str()) {
            // An admin's force delete: from any state, as Cinder's os-force_delete.
            db.update_volume(
                &v.id,
                &[],
                &VolumeChange {
                    status: Some("error".into()),
                    ..VolumeChange::default()
                },
            )?;
        }
        if cascade {
            let snaps = db.list_snapshots(&basalt_db::ListQuery::default().filter(
                basalt_db::Field::VolumeId,
                basalt_db::FilterOp::Eq,
                basalt_db::Val::Text(v.id.clone()),
            ))?;
            if let Some(s) = snaps
                .items
                .iter()
                .find(|s| !["available", "error"].contains(&s.status.as_str()))
            {
                return Err(ManagerError::Invalid(format!(
                    "Invalid volume: Snapshot {} of the volume is {}; all must be available or error for a cascade delete.",
                    s.id, s.status
                )));
            }
            for s in &snaps.items {
                state.control.delete_snapshot(&s.id)?;
            }
        }
        state.control.delete_volume_with(&v.id, accepted)
    })
    .await?;
    Ok(())
}

async fn action(
    State(state): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(b): Body,
) -> Result<Response, ApiError> {
    let Value::Object(m) = &b else {
        return Err(ApiError::bad_request(
            "Malformed request body: not an object",
        ));
    };
    if m.len() != 1 {
        return Err(ApiError::bad_request(
            "Malformed request body: an action body holds exactly one action",
        ));
    }
    let Some((name, arg)) = m.iter().next().map(|(k, v)| (k.clone(), v.clone())) else {
        return Err(ApiError::bad_request("Malformed request body"));
    };
    let v = {
        let id = id.clone();
        let ctx = ctx.clone();
        blocking(&state, move |state| visible_volume(state, &ctx, &id)).await?
    };
    match name.as_str() {
        "os-extend" => extend(&state, &ctx, v, &arg).await,
        "revert" => revert(&state, &ctx, v, &arg).await,
        "os-reset_status" => reset_status(&state, &ctx, v, &arg).await,
        "os-force_delete" => {
            ctx.authorize(
                &state,
                "volume_extension:volume_admin_actions:force_delete",
                &v.project_id,
                None,
            )?;
            delete_volume(&state, &ctx, v, false, true).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-set_bootable" => {
            ctx.authorize(&state, "volume:update", &v.project_id, Some(&v.user_id))?;
            let a = arg_object(&arg, &name)?;
            let Some(bootable) = body::opt_bool(&a, "bootable")? else {
                return Err(ApiError::bad_request(
                    "Invalid input for field/attribute bootable. 'bootable' is a required property",
                ));
            };
            change_flag(
                &state,
                v,
                VolumeChange {
                    bootable: Some(bootable),
                    ..VolumeChange::default()
                },
            )
            .await?;
            Ok(StatusCode::OK.into_response())
        }
        "os-update_readonly_flag" => {
            ctx.authorize(
                &state,
                "volume:update_readonly_flag",
                &v.project_id,
                Some(&v.user_id),
            )?;
            let a = arg_object(&arg, &name)?;
            let Some(readonly) = body::opt_bool(&a, "readonly")? else {
                return Err(ApiError::bad_request(
                    "Invalid input for field/attribute readonly. 'readonly' is a required property",
                ));
            };
            if !["available", "in-use"].contains(&v.status.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "Invalid volume: Volume {} is {}; its read-only flag changes only when available or in-use.",
                    v.id, v.status
                )));
            }
            change_flag(
                &state,
                v,
                VolumeChange {
                    readonly: Some(readonly),
                    ..VolumeChange::default()
                },
            )
            .await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-reserve"
        | "os-unreserve"
        | "os-begin_detaching"
        | "os-roll_detaching"
        | "os-attach"
        | "os-detach"
        | "os-initialize_connection"
        | "os-terminate_connection"
        | "os-force_detach" => {
            crate::attachments::legacy_action(&state, &ctx, v, &name, &arg).await
        }
        "os-volume_upload_image"
        | "os-set_image_metadata"
        | "os-unset_image_metadata"
        | "os-show_image_metadata"
        | "os-reimage" => Err(ApiError::bad_request(format!(
            "{name} needs an image service; this Basalt deployment has none."
        ))),
        "os-retype" => retype(&state, &ctx, v, &arg).await,
        "os-extend_volume_completion" => {
            if !ctx.version.at_least(71) {
                return Err(ApiError::not_found(
                    "There is no such action: os-extend_volume_completion",
                ));
            }
            ctx.authorize(
                &state,
                "volume_extension:volume_admin_actions:extend_volume_completion",
                &v.project_id,
                None,
            )?;
            // Basalt's extends finish on their own (the datapath grows the volume and the
            // targets announce the new capacity); none ever waits for Nova's report.
            Err(ApiError::bad_request(format!(
                "Invalid volume: Volume {} is {}; it has no extend waiting for a completion report.",
                v.id, v.status
            )))
        }
        "os-migrate_volume" | "os-migrate_volume_completion" | "os-unmanage" => Err(
            ApiError::bad_request(format!("{name} is not supported by Basalt yet.")),
        ),
        other => Err(ApiError::bad_request(format!(
            "There is no such action: {other}"
        ))),
    }
}

/// `os-retype`: a new type the volume's backend satisfies is applied in place (its per-type
/// quota moves with it); one it does not satisfy would need a migration, which Basalt does
/// not do, so it is refused.
async fn retype(
    state: &Arc<ApiState>,
    ctx: &Ctx,
    v: Volume,
    arg: &Value,
) -> Result<Response, ApiError> {
    ctx.authorize(state, "volume:retype", &v.project_id, Some(&v.user_id))?;
    let a = arg_object(arg, "os-retype")?;
    let wanted = body::req_str(&a, "new_type", 255)?;
    let policy = body::opt_str(&a, "migration_policy", 255)?.unwrap_or_else(|| "never".into());
    if policy != "never" && policy != "on-demand" {
        return Err(ApiError::invalid_input(format!(
            "migration_policy must be 'on-demand' or 'never', not {policy}"
        )));
    }
    if !["available", "in-use"].contains(&v.status.as_str()) {
        return Err(ApiError::bad_request(format!(
            "Invalid volume: Volume {} status must be available or in-use, but current status is: {}.",
            v.id, v.status
        )));
    }
    let ctx = ctx.clone();
    blocking(state, move |state| {
        let db = state.db();
        let t = db.get_volume_type(&wanted).map_err(|e| match e {
            DbError::NotFound { .. } => {
                ApiError::not_found(format!("Volume type {wanted} could not be found."))
            }
            o => o.into(),
        })?;
        if !t.is_public && !ctx.is_admin() && !t.access.iter().any(|p| p == ctx.project()) {
            return Err(ApiError::not_found(format!(
                "Volume type {wanted} could not be found."
            )));
        }
        if v.volume_type_id.as_deref() == Some(t.id.as_str()) {
            return Err(ApiError::invalid_input(
                "Retype requires a volume type different from the volume's.",
            ));
        }
        let pool: basalt_scheduler::PoolId = v
            .host
            .as_deref()
            .ok_or_else(|| {
                ApiError::bad_request(format!("Invalid volume: Volume {} has no host.", v.id))
            })?
            .parse()
            .map_err(|e: basalt_scheduler::PoolIdError| ApiError::internal(e.to_string()))?;
        let req = basalt_scheduler::Request {
            size_gb: 0,
            availability_zone: Some(v.availability_zone.clone()),
            extra_specs: t.extra_specs.clone(),
            ..basalt_scheduler::Request::default()
        };
        if let Err(e) = state
            .control
            .scheduler()
            .backend_passes_filters(&pool, &req, Instant::now())
        {
            return Err(ApiError::bad_request(format!(
                "No valid backend for volume type {}: the volume's backend {pool} does not satisfy it ({e}), and Basalt does not migrate volumes{}.",
                t.name,
                if policy == "on-demand" {
                    " (migration_policy on-demand is not supported)"
                } else {
                    ""
                }
            )));
        }
        let r = db.retype_volume(&v.id, &["available", "in-use"], &t.id, type_multiattach(&t))?;
        tracing::info!(volume = %r.id, to = %t.name, "retyped in place");
        Ok(StatusCode::ACCEPTED.into_response())
    })
    .await
}

/// An action's argument as an object (`{}` for a null argument).
///
/// # Errors
/// 400 when it is another type.
pub fn arg_object(arg: &Value, action: &str) -> Result<Map<String, Value>, ApiError> {
    match arg {
        Value::Object(m) => Ok(m.clone()),
        Value::Null => Ok(Map::new()),
        _ => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute {action}. Value: must be an object."
        ))),
    }
}

async fn change_flag(
    state: &Arc<ApiState>,
    v: Volume,
    change: VolumeChange,
) -> Result<(), ApiError> {
    blocking(state, move |state| {
        state.db().update_volume(&v.id, &[], &change)?;
        Ok(())
    })
    .await
}

async fn extend(
    state: &Arc<ApiState>,
    ctx: &Ctx,
    v: Volume,
    arg: &Value,
) -> Result<Response, ApiError> {
    ctx.authorize(state, "volume:extend", &v.project_id, Some(&v.user_id))?;
    let a = arg_object(arg, "os-extend")?;
    let Some(new_size) = body::opt_size(&a, "new_size")? else {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute new_size. 'new_size' is a required property",
        ));
    };
    match v.status.as_str() {
        "available" => {}
        "in-use" if ctx.version.at_least(42) => {
            ctx.authorize(
                state,
                "volume:extend_attached_volume",
                &v.project_id,
                Some(&v.user_id),
            )?;
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid volume: Volume {} status must be '{}' to extend, currently {other}.",
                v.id,
                if ctx.version.at_least(42) {
                    "available' or 'in-use"
                } else {
                    "available"
                }
            )));
        }
    }
    if new_size <= v.size_gb {
        return Err(ApiError::invalid_input(format!(
            "New size for extend must be greater than current size. (current: {}, extended: {new_size}).",
            v.size_gb
        )));
    }
    run_accepted(state, ctx, "volume extend", move |state, accepted| {
        state
            .control
            .extend_volume_with(&v.id, new_size, Instant::now(), accepted)
            .map(|_| ())
    })
    .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn revert(
    state: &Arc<ApiState>,
    ctx: &Ctx,
    v: Volume,
    arg: &Value,
) -> Result<Response, ApiError> {
    if !ctx.version.at_least(40) {
        return Err(ApiError::not_found("There is no such action: revert"));
    }
    ctx.authorize(
        state,
        "volume:revert_to_snapshot",
        &v.project_id,
        Some(&v.user_id),
    )?;
    let a = arg_object(arg, "revert")?;
    let sid = body::req_str(&a, "snapshot_id", 36)?;
    let sid = body::uuid(&sid, "snapshot_id")?;
    {
        let sid = sid.clone();
        let ctx = ctx.clone();
        blocking(state, move |state| {
            crate::snapshots::visible_snapshot(state, &ctx, &sid).map(|_| ())
        })
        .await?;
    }
    run_accepted(state, ctx, "volume revert", move |state, accepted| {
        state
            .control
            .revert_volume_with(&v.id, &sid, accepted)
            .map(|_| ())
    })
    .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Statuses an admin may reset a volume to (Cinder's `VolumeStatus` enum).
const VOLUME_STATUSES: &[&str] = &[
    "creating",
    "available",
    "deleting",
    "error",
    "error_deleting",
    "error_managing",
    "managing",
    "attaching",
    "in-use",
    "detaching",
    "maintenance",
    "restoring-backup",
    "error_restoring",
    "reserved",
    "awaiting-transfer",
    "backing-up",
    "error_backing-up",
    "error_extending",
    "downloading",
    "uploading",
    "retyping",
    "extending",
];

async fn reset_status(
    state: &Arc<ApiState>,
    ctx: &Ctx,
    v: Volume,
    arg: &Value,
) -> Result<Response, ApiError> {
    ctx.authorize(
        state,
        "volume_extension:volume_admin_actions:reset_status",
        &v.project_id,
        None,
    )?;
    let a = arg_object(arg, "os-reset_status")?;
    let status = body::opt_str(&a, "status", 255)?.map(|s| s.to_ascii_lowercase());
    let attach_status = body::opt_str(&a, "attach_status", 255)?.map(|s| s.to_ascii_lowercase());
    let migration_status =
        body::opt_str(&a, "migration_status", 255)?.map(|s| s.to_ascii_lowercase());
    if status.is_none() && attach_status.is_none() && migration_status.is_none() {
        return Err(ApiError::bad_request(
            "Must specify 'status', 'attach_status' or 'migration_status' for update.",
        ));
    }
    if let Some(s) = &status
        && !VOLUME_STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "Must specify a valid status: {s}"
        )));
    }
    if let Some(s) = &attach_status
        && !["attached", "detached"].contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "Must specify a valid attach status: {s}"
        )));
    }
    if let Some(s) = &migration_status
        && ![
            "migrating",
            "error",
            "success",
            "completing",
            "none",
            "starting",
        ]
        .contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "Must specify a valid migration status: {s}"
        )));
    }
    let change = VolumeChange {
        status,
        attach_status,
        migration_status: migration_status.map(|m| (m != "none").then_some(m)),
        ..VolumeChange::default()
    };
    change_flag(state, v, change).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Volume metadata (see [`crate::meta`]).
#[derive(Debug)]
pub struct VolumeMeta;

impl crate::meta::Owner for VolumeMeta {
    const KIND: &'static str = "Volume";
    const RULES: [&'static str; 4] = [
        "volume:get_volume_metadata",
        "volume:create_volume_metadata",
        "volume:update_volume_metadata",
        "volume:delete_volume_metadata",
    ];

    fn load(
        state: &ApiState,
        ctx: &Ctx,
        id: &str,
        rule: &str,
        write: bool,
    ) -> Result<basalt_db::Metadata, ApiError> {
        let v = visible_volume(state, ctx, id)?;
        ctx.authorize(state, rule, &v.project_id, Some(&v.user_id))?;
        if write && (v.status == "maintenance" || v.status == "uploading") {
            return Err(ApiError::bad_request(format!(
                "Invalid volume: Volume {} is {}; its metadata cannot change now.",
                v.id, v.status
            )));
        }
        Ok(v.metadata)
    }

    fn store(
        state: &ApiState,
        id: &str,
        meta: &basalt_db::Metadata,
        replace: bool,
    ) -> Result<basalt_db::Metadata, ApiError> {
        Ok(state.db().set_volume_metadata(id, meta, replace)?)
    }

    fn remove(
        state: &ApiState,
        id: &str,
        key: &str,
        _all: &basalt_db::Metadata,
    ) -> Result<(), ApiError> {
        Ok(state.db().delete_volume_metadata(id, key)?)
    }
}
