//! User messages (3.3+, `cinder/api/v3/messages.py`): what failed after a request was
//! accepted, told to the project that asked. Kept for 30 days (Cinder's `message_ttl`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use basalt_db::{Field, FilterOp, ListQuery, Message, NewMessage, Timestamp, Val};
use serde_json::{Value, json};

use crate::ctx::Ctx;
use crate::fault::ApiError;
use crate::{ApiState, blocking};

type St = State<Arc<ApiState>>;

/// How long a message is kept (Cinder's `message_ttl`, 30 days).
pub const TTL_SECS: i64 = 2_592_000;

/// The message routes.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v3/messages", get(list))
        .route("/v3/messages/{id}", get(show).delete(delete))
}

/// Records a user message about `resource_uuid` for `project` (errors are logged, not
/// returned: a message is never worth failing the work for).
pub fn record(
    state: &ApiState,
    project: &str,
    request_id: Option<&str>,
    resource_type: &str,
    resource_uuid: &str,
    event_id: &str,
    text: &str,
) {
    let Ok(id) = basalt_db::new_uuid() else {
        return;
    };
    let m = NewMessage {
        id,
        project_id: project.to_owned(),
        request_id: request_id.map(str::to_owned),
        resource_type: resource_type.to_owned(),
        resource_uuid: Some(resource_uuid.to_owned()),
        event_id: event_id.to_owned(),
        message_level: "ERROR".into(),
        user_message: text.to_owned(),
        expires_at: Timestamp::now().plus_secs(TTL_SECS),
    };
    if let Err(e) = state.db().create_message(&m) {
        tracing::warn!(error = %e, resource = resource_uuid, "could not record a user message");
    }
}

fn view(ctx: &Ctx, m: &Message) -> Value {
    json!({
        "id": m.id,
        "event_id": m.event_id,
        "message_level": m.message_level,
        "resource_type": m.resource_type,
        "resource_uuid": m.resource_uuid,
        "request_id": m.request_id,
        "user_message": m.user_message,
        "created_at": m.created_at.to_string(),
        "guaranteed_until": m.expires_at.to_string(),
        "links": ctx.links("messages", &m.id),
    })
}

fn need_3(ctx: &Ctx) -> Result<(), ApiError> {
    if ctx.version.at_least(3) {
        Ok(())
    } else {
        Err(ApiError::not_found("The resource could not be found."))
    }
}

fn visible(state: &ApiState, ctx: &Ctx, id: &str) -> Result<Message, ApiError> {
    ctx.visible("Message", id, state.db().get_message(id), |m| &m.project_id)
}

async fn list(
    State(state): St,
    ctx: Ctx,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    need_3(&ctx)?;
    ctx.authorize_own(&state, "message:get_all")?;
    let mut lq = ListQuery::project(ctx.project());
    let mut limit = crate::paging::MAX_LIMIT;
    for (k, v) in &q {
        let text = Val::Text(v.clone());
        match k.as_str() {
            "resource_uuid" => lq.filters.push((Field::ResourceUuid, FilterOp::Eq, text)),
            "resource_type" => lq.filters.push((Field::ResourceType, FilterOp::Eq, text)),
            "event_id" => lq.filters.push((Field::EventId, FilterOp::Eq, text)),
            "request_id" => lq.filters.push((Field::RequestId, FilterOp::Eq, text)),
            "message_level" => lq.filters.push((Field::MessageLevel, FilterOp::Eq, text)),
            "limit" | "marker" | "offset" if ctx.version.at_least(5) => match k.as_str() {
                "limit" => {
                    limit = v
                        .parse::<u64>()
                        .map_err(|_| ApiError::bad_request("limit param must be an integer"))?
                        .min(crate::paging::MAX_LIMIT);
                }
                "marker" => lq.marker = Some(v.clone()),
                _ => {
                    lq.offset =
                        Some(v.parse().map_err(|_| {
                            ApiError::bad_request("offset param must be an integer")
                        })?);
                }
            },
            "sort" | "sort_key" | "sort_dir" | "all_tenants" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "Invalid filters {other} are found in query options."
                )));
            }
        }
    }
    if ctx.is_admin() && q.iter().any(|(k, _)| k == "all_tenants") {
        lq.project_id = None;
    }
    lq.limit = Some(limit);
    blocking(&state, move |state| {
        let page = state.db().list_messages(&lq)?;
        let items: Vec<Value> = page.items.iter().map(|m| view(&ctx, m)).collect();
        Ok(axum::Json(json!({"messages": items})).into_response())
    })
    .await
}

async fn show(State(state): St, ctx: Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    need_3(&ctx)?;
    blocking(&state, move |state| {
        let m = visible(state, &ctx, &id)?;
        ctx.authorize(state, "message:get", &m.project_id, None)?;
        Ok(axum::Json(json!({"message": view(&ctx, &m)})).into_response())
    })
    .await
}

async fn delete(State(state): St, ctx: Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    need_3(&ctx)?;
    blocking(&state, move |state| {
        let m = visible(state, &ctx, &id)?;
        ctx.authorize(state, "message:delete", &m.project_id, None)?;
        state.db().delete_message(&id)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// Drops expired messages; returns how many.
pub fn reap(state: &ApiState) -> usize {
    state.db().reap_messages(Timestamp::now()).unwrap_or(0)
}
