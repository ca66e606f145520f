//! `/v3/{project_id}/snapshots`: CRUD, detail, metadata and actions
//! (`cinder/api/v3/snapshots.py`, `contrib/snapshot_actions.py`, `contrib/admin_actions.py`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use basalt_db::{NewSnapshot, Snapshot, SnapshotChange};
use basalt_manager::Accepted;
use serde_json::{Value, json};

use crate::body::{self, Body};
use crate::ctx::Ctx;
use crate::fault::ApiError;
use crate::paging::{self, Kind};
use crate::views::View;
use crate::volumes::{arg_object, run_accepted, visible_volume};
use crate::{ApiState, blocking, views};

type St = State<Arc<ApiState>>;
type Pairs = Query<Vec<(String, String)>>;

/// The snapshot routes.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v3/snapshots", get(list).post(create))
        .route("/v3/snapshots/detail", get(list_detail))
        .route("/v3/snapshots/{id}", get(show).put(update).delete(delete))
        .route("/v3/snapshots/{id}/action", post(action))
        .merge(crate::meta::routes::<SnapshotMeta>("/v3/snapshots/{id}"))
}

/// A snapshot the caller may see, or 404.
///
/// # Errors
/// 404.
pub fn visible_snapshot(state: &ApiState, ctx: &Ctx, id: &str) -> Result<Snapshot, ApiError> {
    ctx.visible("Snapshot", id, state.db().get_snapshot(id), |s| {
        &s.project_id
    })
}

async fn list(State(state): St, ctx: Ctx, Query(q): Pairs) -> Result<Response, ApiError> {
    list_snapshots(state, ctx, q, false).await
}

async fn list_detail(State(state): St, ctx: Ctx, Query(q): Pairs) -> Result<Response, ApiError> {
    list_snapshots(state, ctx, q, true).await
}

async fn list_snapshots(
    state: Arc<ApiState>,
    ctx: Ctx,
    q: Vec<(String, String)>,
    detailed: bool,
) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "volume:get_all_snapshots")?;
    let p = paging::parse(&ctx, &q, Kind::Snapshot)?;
    blocking(&state, move |state| {
        let page = if p.empty {
            basalt_db::Page {
                items: Vec::new(),
                count: 0,
            }
        } else {
            state.db().list_snapshots(&p.query)?
        };
        let items: Vec<Value> = page
            .items
            .iter()
            .map(|s| {
                let view = if detailed {
                    View::Extended
                } else {
                    View::Summary
                };
                views::snapshot(&ctx, state, s, view)
            })
            .collect();
        let path = if detailed {
            "snapshots/detail"
        } else {
            "snapshots"
        };
        let mut out = json!({ "snapshots": items });
        if let Some(l) = paging::next_link(
            &ctx,
            &p,
            path,
            page.items.len(),
            page.items.last().map(|s| s.id.as_str()),
        ) {
            out["snapshots_links"] = l;
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
        let s = visible_snapshot(state, &ctx, &id)?;
        ctx.authorize(
            state,
            "volume:get_snapshot",
            &s.project_id,
            Some(&s.user_id),
        )?;
        let view = views::snapshot(&ctx, state, &s, View::Extended);
        Ok(axum::Json(json!({ "snapshot": view })).into_response())
    })
    .await
}

async fn create(State(state): St, ctx: Ctx, Body(b): Body) -> Result<Response, ApiError> {
    let m = body::section(&b, "snapshot")?.clone();
    body::only(
        &m,
        &[
            "volume_id",
            "name",
            "description",
            "display_name",
            "display_description",
            "force",
            "metadata",
        ],
    )?;
    // `volume_id` is required but may be null (Cinder's `uuid_allow_null`); a null one is a
    // volume that cannot be found.
    let vid = match m.get("volume_id") {
        Some(Value::Null) => None,
        _ => Some(body::uuid(
            &body::req_str(&m, "volume_id", 36)?,
            "volume_id",
        )?),
    };
    let name = match body::opt_str(&m, "name", 255)? {
        Some(n) => Some(n),
        None => body::opt_str(&m, "display_name", 255)?,
    };
    let description = match body::opt_str(&m, "description", 255)? {
        Some(d) => Some(d),
        None => body::opt_str(&m, "display_description", 255)?,
    };
    let force = body::opt_bool(&m, "force")?.unwrap_or(false);
    let metadata = match m.get("metadata") {
        None | Some(Value::Null) => Default::default(),
        Some(v) => body::metadata(v, "metadata")?,
    };
    let Some(vid) = vid else {
        return Err(ApiError::not_found("Volume None could not be found."));
    };
    let v = {
        let ctx = ctx.clone();
        blocking(&state, move |state| visible_volume(state, &ctx, &vid)).await?
    };
    ctx.authorize(&state, "volume:create_snapshot", &v.project_id, None)?;
    let expected: &'static [&'static str] = if force || ctx.version.at_least(66) {
        &["available", "in-use"]
    } else {
        &["available"]
    };
    if !expected.contains(&v.status.as_str()) {
        return Err(ApiError::bad_request(format!(
            "Invalid volume: Volume {} status must be {}, but current status is: {}.",
            v.id,
            expected.join(" or "),
            v.status
        )));
    }
    let new = NewSnapshot {
        id: basalt_db::new_uuid().map_err(|e| ApiError::internal(e.to_string()))?,
        project_id: v.project_id.clone(),
        user_id: ctx.auth.user_id.clone(),
        volume_id: v.id.clone(),
        name,
        description,
        use_quota: true,
        metadata,
    };
    let a = run_accepted(&state, &ctx, "snapshot create", move |state, accepted| {
        state
            .control
            .create_snapshot_with(&new, expected, accepted)
            .map(|_| ())
    })
    .await?;
    let Accepted::Snapshot(s) = a else {
        return Err(ApiError::internal(
            "snapshot create accepted something else",
        ));
    };
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"snapshot": views::snapshot(&ctx, &state, &s, View::Detail)})),
    )
        .into_response())
}

async fn update(
    State(state): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(b): Body,
) -> Result<Response, ApiError> {
    let m = body::section(&b, "snapshot")?.clone();
    body::only(
        &m,
        &["name", "description", "display_name", "display_description"],
    )?;
    if m.is_empty() {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute snapshot. Value: {}. {} does not have enough properties",
        ));
    }
    let has_name = m.contains_key("name") || m.contains_key("display_name");
    let has_desc = m.contains_key("description") || m.contains_key("display_description");
    let name = match body::opt_str(&m, "name", 255)? {
        Some(n) => Some(n),
        None => body::opt_str(&m, "display_name", 255)?,
    };
    let description = match body::opt_str(&m, "description", 255)? {
        Some(d) => Some(d),
        None => body::opt_str(&m, "display_description", 255)?,
    };
    blocking(&state, move |state| {
        let s = visible_snapshot(state, &ctx, &id)?;
        ctx.authorize(
            state,
            "volume:update_snapshot",
            &s.project_id,
            Some(&s.user_id),
        )?;
        let s = state.db().update_snapshot(
            &id,
            &[],
            &SnapshotChange {
                name: has_name.then_some(name),
                description: has_desc.then_some(description),
                ..SnapshotChange::default()
            },
        )?;
        let view = views::snapshot(&ctx, state, &s, View::Detail);
        Ok(axum::Json(json!({ "snapshot": view })).into_response())
    })
    .await
}

async fn delete(State(state): St, ctx: Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    let s = {
        let ctx = ctx.clone();
        let id = id.clone();
        blocking(&state, move |state| visible_snapshot(state, &ctx, &id)).await?
    };
    ctx.authorize(
        &state,
        "volume:delete_snapshot",
        &s.project_id,
        Some(&s.user_id),
    )?;
    if !["available", "error"].contains(&s.status.as_str()) {
        return Err(ApiError::bad_request(format!(
            "Invalid snapshot: Snapshot {id} status must be available or error, but current status is: {}.",
            s.status
        )));
    }
    run_accepted(&state, &ctx, "snapshot delete", move |state, accepted| {
        state
            .control
            .delete_snapshot_with(&id, &["available", "error"], accepted)
    })
    .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Snapshot statuses (Cinder's `SnapshotStatus`).
const STATUSES: &[&str] = &[
    "creating",
    "available",
    "deleting",
    "error",
    "error_deleting",
    "unmanaging",
    "backing-up",
    "restoring",
];

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
    let Some((name, arg)) = m.iter().next().filter(|_| m.len() == 1) else {
        return Err(ApiError::bad_request(
            "Malformed request body: an action body holds exactly one action",
        ));
    };
    let (name, arg) = (name.clone(), arg.clone());
    let s = {
        let ctx = ctx.clone();
        let id = id.clone();
        blocking(&state, move |state| visible_snapshot(state, &ctx, &id)).await?
    };
    match name.as_str() {
        "os-reset_status" => {
            ctx.authorize(
                &state,
                "volume_extension:snapshot_admin_actions:reset_status",
                &s.project_id,
                None,
            )?;
            let a = arg_object(&arg, &name)?;
            let status = body::req_str(&a, "status", 255)?.to_ascii_lowercase();
            if !STATUSES.contains(&status.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "Must specify a valid status: {status}"
                )));
            }
            set_status(&state, s, status, None).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-update_snapshot_status" => {
            ctx.authorize(
                &state,
                "snapshot_extension:snapshot_actions:update_snapshot_status",
                &s.project_id,
                None,
            )?;
            let a = arg_object(&arg, &name)?;
            let status = body::req_str(&a, "status", 255)?.to_ascii_lowercase();
            let progress = body::opt_str(&a, "progress", 255)?;
            // Cinder's allowed transitions for Nova-assisted snapshots.
            let ok = match s.status.as_str() {
                "creating" => ["creating", "available", "error"].contains(&status.as_str()),
                "deleting" => ["deleting", "error_deleting"].contains(&status.as_str()),
                _ => false,
            };
            if !ok {
                return Err(ApiError::bad_request(format!(
                    "Provided snapshot status {status} not allowed for snapshot with status {}.",
                    s.status
                )));
            }
            set_status(&state, s, status, progress).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-force_delete" => {
            ctx.authorize(
                &state,
                "volume_extension:snapshot_admin_actions:force_delete",
                &s.project_id,
                None,
            )?;
            run_accepted(
                &state,
                &ctx,
                "snapshot force delete",
                move |state, accepted| state.control.delete_snapshot_with(&id, &[], accepted),
            )
            .await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-unmanage" => Err(ApiError::bad_request(
            "os-unmanage is not supported by Basalt yet.",
        )),
        other => Err(ApiError::bad_request(format!(
            "There is no such action: {other}"
        ))),
    }
}

async fn set_status(
    state: &Arc<ApiState>,
    s: Snapshot,
    status: String,
    progress: Option<String>,
) -> Result<(), ApiError> {
    blocking(state, move |state| {
        state.db().update_snapshot(
            &s.id,
            &[],
            &SnapshotChange {
                status: Some(status),
                progress,
                ..SnapshotChange::default()
            },
        )?;
        Ok(())
    })
    .await
}

/// Snapshot metadata (see [`crate::meta`]).
#[derive(Debug)]
pub struct SnapshotMeta;

impl crate::meta::Owner for SnapshotMeta {
    const KIND: &'static str = "Snapshot";
    const RULES: [&'static str; 4] = [
        "volume:get_snapshot_metadata",
        "volume:update_snapshot_metadata",
        "volume:update_snapshot_metadata",
        "volume:delete_snapshot_metadata",
    ];

    fn load(
        state: &ApiState,
        ctx: &Ctx,
        id: &str,
        rule: &str,
        _write: bool,
    ) -> Result<basalt_db::Metadata, ApiError> {
        let s = visible_snapshot(state, ctx, id)?;
        ctx.authorize(state, rule, &s.project_id, Some(&s.user_id))?;
        Ok(s.metadata)
    }

    fn store(
        state: &ApiState,
        id: &str,
        meta: &basalt_db::Metadata,
        replace: bool,
    ) -> Result<basalt_db::Metadata, ApiError> {
        Ok(state.db().set_snapshot_metadata(id, meta, replace)?)
    }

    fn remove(
        state: &ApiState,
        id: &str,
        key: &str,
        all: &basalt_db::Metadata,
    ) -> Result<(), ApiError> {
        let mut rest = all.clone();
        rest.remove(key);
        state.db().set_snapshot_metadata(id, &rest, true)?;
        Ok(())
    }
}
