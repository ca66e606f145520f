//! The metadata sub-resources of volumes and snapshots, one implementation for both:
//! `GET|POST|PUT .../{id}/metadata` (POST merges, PUT replaces) and
//! `GET|PUT|DELETE .../{id}/metadata/{key}`, as Cinder's `volume_metadata.py` and
//! `snapshot_metadata.py` answer them.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use basalt_db::Metadata;
use serde_json::{Value, json};

use crate::body::{self, Body};
use crate::ctx::Ctx;
use crate::fault::ApiError;
use crate::{ApiState, blocking};

/// What owns metadata: how to load it (visibility, policy, state) and store it.
pub trait Owner: Send + Sync + 'static {
    /// `Volume` or `Snapshot`, for messages.
    const KIND: &'static str;
    /// The policy rules: read, merge (POST), replace or set one key (PUT), delete.
    const RULES: [&'static str; 4];

    /// The owner's metadata, after checking `rule`; `write` also checks the owner's state
    /// allows a change.
    ///
    /// # Errors
    /// 404 (not visible), 403, 400 (state).
    fn load(
        state: &ApiState,
        ctx: &Ctx,
        id: &str,
        rule: &str,
        write: bool,
    ) -> Result<Metadata, ApiError>;

    /// Stores `meta` (all of it when `replace`); returns the whole metadata after.
    ///
    /// # Errors
    /// The store failed.
    fn store(
        state: &ApiState,
        id: &str,
        meta: &Metadata,
        replace: bool,
    ) -> Result<Metadata, ApiError>;

    /// Removes one key the owner has.
    ///
    /// # Errors
    /// The store failed.
    fn remove(state: &ApiState, id: &str, key: &str, all: &Metadata) -> Result<(), ApiError>;
}

/// The metadata routes under `base` (`/v3/volumes/{id}`).
pub fn routes<O: Owner>(base: &str) -> Router<Arc<ApiState>> {
    Router::new()
        .route(
            &format!("{base}/metadata"),
            get(index::<O>).post(merge::<O>).put(replace::<O>),
        )
        .route(
            &format!("{base}/metadata/{{key}}"),
            get(show::<O>).put(put::<O>).delete(delete::<O>),
        )
}

type St = State<Arc<ApiState>>;

fn missing<O: Owner>(id: &str, key: &str) -> ApiError {
    ApiError::not_found(format!("{} {id} has no metadata with key {key}.", O::KIND))
}

async fn index<O: Owner>(
    State(state): St,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    blocking(&state, move |state| {
        let m = O::load(state, &ctx, &id, O::RULES[0], false)?;
        Ok(axum::Json(json!({"metadata": m})).into_response())
    })
    .await
}

async fn set<O: Owner>(
    state: Arc<ApiState>,
    ctx: Ctx,
    id: String,
    b: Value,
    replace: bool,
) -> Result<Response, ApiError> {
    let Some(meta) = b.get("metadata") else {
        return Err(ApiError::bad_request(
            "Malformed request body: 'metadata' is a required property",
        ));
    };
    let meta = body::metadata(meta, "metadata")?;
    blocking(&state, move |state| {
        let rule = if replace { O::RULES[2] } else { O::RULES[1] };
        O::load(state, &ctx, &id, rule, true)?;
        let all = O::store(state, &id, &meta, replace)?;
        Ok(axum::Json(json!({"metadata": if replace { meta } else { all }})).into_response())
    })
    .await
}

async fn merge<O: Owner>(
    State(state): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(b): Body,
) -> Result<Response, ApiError> {
    set::<O>(state, ctx, id, b, false).await
}

async fn replace<O: Owner>(
    State(state): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(b): Body,
) -> Result<Response, ApiError> {
    set::<O>(state, ctx, id, b, true).await
}

async fn show<O: Owner>(
    State(state): St,
    ctx: Ctx,
    Path((id, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    blocking(&state, move |state| {
        let m = O::load(state, &ctx, &id, O::RULES[0], false)?;
        match m.get(&key) {
            Some(v) => Ok(axum::Json(json!({"meta": {key: v}})).into_response()),
            None => Err(missing::<O>(&id, &key)),
        }
    })
    .await
}

async fn put<O: Owner>(
    State(state): St,
    ctx: Ctx,
    Path((id, key)): Path<(String, String)>,
    Body(b): Body,
) -> Result<Response, ApiError> {
    let Some(meta) = b.get("meta") else {
        return Err(ApiError::bad_request(
            "Malformed request body: 'meta' is a required property",
        ));
    };
    let meta = body::metadata(meta, "meta")?;
    if meta.len() != 1 {
        return Err(ApiError::bad_request(
            "Request body contains too many items",
        ));
    }
    if !meta.contains_key(&key) {
        return Err(ApiError::bad_request("Request body and URI mismatch"));
    }
    blocking(&state, move |state| {
        O::load(state, &ctx, &id, O::RULES[2], true)?;
        O::store(state, &id, &meta, false)?;
        Ok(axum::Json(json!({"meta": meta})).into_response())
    })
    .await
}

async fn delete<O: Owner>(
    State(state): St,
    ctx: Ctx,
    Path((id, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    blocking(&state, move |state| {
        let m = O::load(state, &ctx, &id, O::RULES[3], true)?;
        if !m.contains_key(&key) {
            return Err(missing::<O>(&id, &key));
        }
        O::remove(state, &id, &key, &m)?;
        Ok(StatusCode::OK.into_response())
    })
    .await
}
