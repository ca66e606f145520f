//! Volume transfers: `/volume-transfers` (3.55+) and the legacy `/os-volume-transfer`
//! (`cinder/api/v3/volume_transfer.py`, `cinder/transfer/api.py`). A transfer hands a volume
//! (and, unless `no_snapshots`, its snapshots) to whichever project presents the transfer's
//! id and its one-time auth key; the key is shown once, at creation, and only a salted hash
//! is kept.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use basalt_db::{DbError, ListQuery, NewTransfer, Transfer};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::body::{self, Body};
use crate::ctx::Ctx;
use crate::fault::ApiError;
use crate::volumes::visible_volume;
use crate::{ApiState, blocking};

type St = State<Arc<ApiState>>;

/// Length of the auth key (Cinder's `volume_transfer_key_length`).
pub const KEY_LEN: usize = 16;
const SALT_LEN: usize = 8;

/// The transfer routes, new and legacy.
pub fn routes() -> Router<Arc<ApiState>> {
    let mut r = Router::new();
    for base in ["/v3/volume-transfers", "/v3/os-volume-transfer"] {
        r = r
            .route(base, get(list).post(create))
            .route(&format!("{base}/detail"), get(list_detail))
            .route(&format!("{base}/{{id}}"), get(show).delete(delete))
            .route(&format!("{base}/{{id}}/accept"), post(accept));
    }
    r
}

fn random_text(n: usize) -> Result<String, ApiError> {
    // Cinder's alphabet leaves out look-alike characters.
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

fn hash(salt: &str, key: &str) -> String {
    let d = Sha256::digest(format!("{salt}{key}").as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn is_new(path: &str) -> bool {
    path.contains("/volume-transfers")
}

fn collection(new: bool) -> &'static str {
    if new {
        "volume-transfers"
    } else {
        "os-volume-transfer"
    }
}

fn view(ctx: &Ctx, t: &Transfer, new: bool, detailed: bool) -> Value {
    let mut o = json!({
        "id": t.id,
        "name": t.name,
        "volume_id": t.volume_id,
        "links": ctx.links(collection(new), &t.id),
    });
    if detailed && let Some(m) = o.as_object_mut() {
        m.insert("created_at".into(), json!(t.created_at.to_string()));
        if ctx.version.at_least(55) {
            m.insert("no_snapshots".into(), json!(t.no_snapshots));
        }
        if ctx.version.at_least(57) {
            m.insert("source_project_id".into(), json!(t.source_project_id));
            m.insert(
                "destination_project_id".into(),
                json!(t.destination_project_id),
            );
            m.insert("accepted".into(), json!(t.accepted));
        }
    }
    o
}

fn check_version(ctx: &Ctx, new: bool) -> Result<(), ApiError> {
    if new && !ctx.version.at_least(55) {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    Ok(())
}

fn visible(state: &ApiState, ctx: &Ctx, id: &str) -> Result<Transfer, ApiError> {
    ctx.visible("Transfer", id, state.db().get_transfer(id), |t| {
        &t.source_project_id
    })
}

async fn create(
    State(state): St,
    ctx: Ctx,
    uri: axum::http::Uri,
    Body(b): Body,
) -> Result<Response, ApiError> {
    let new = is_new(uri.path());
    check_version(&ctx, new)?;
    let m = body::section(&b, "transfer")?.clone();
    body::only(&m, &["volume_id", "name", "no_snapshots"])?;
    let vid = body::uuid(&body::req_str(&m, "volume_id", 36)?, "volume_id")?;
    let name = body::opt_str(&m, "name", 255)?;
    let no_snapshots = match body::opt_bool(&m, "no_snapshots")? {
        Some(_) if !new => {
            return Err(ApiError::bad_request(
                "no_snapshots needs /volume-transfers (3.55)",
            ));
        }
        v => v.unwrap_or(false),
    };
    blocking(&state, move |state| {
        let v = visible_volume(state, &ctx, &vid)?;
        ctx.authorize(state, "volume:create_transfer", &v.project_id, None)?;
        let key = random_text(KEY_LEN)?;
        let salt = random_text(SALT_LEN)?;
        let t = state.db().create_transfer(&NewTransfer {
            id: basalt_db::new_uuid().map_err(|e| ApiError::internal(e.to_string()))?,
            volume_id: v.id.clone(),
            name,
            crypt_hash: hash(&salt, &key),
            salt,
            source_project_id: v.project_id.clone(),
            no_snapshots,
        })?;
        tracing::info!(transfer = %t.id, volume = %t.volume_id, "transfer created");
        let mut out = view(&ctx, &t, new, true);
        out["auth_key"] = json!(key);
        Ok((StatusCode::ACCEPTED, axum::Json(json!({"transfer": out}))).into_response())
    })
    .await
}

async fn accept(
    State(state): St,
    ctx: Ctx,
    uri: axum::http::Uri,
    Path(id): Path<String>,
    Body(b): Body,
) -> Result<Response, ApiError> {
    let new = is_new(uri.path());
    check_version(&ctx, new)?;
    let m = body::section(&b, "accept")?.clone();
    let key = body::req_str(&m, "auth_key", 255)?;
    blocking(&state, move |state| {
        ctx.authorize_own(state, "volume:accept_transfer")?;
        let gone = || ApiError::not_found(format!("Transfer {id} could not be found."));
        // The accepting project does not own the transfer: it proves itself with the key.
        let t = state.db().get_transfer(&id).map_err(|e| match e {
            DbError::NotFound { .. } => gone(),
            o => o.into(),
        })?;
        if !same(&hash(&t.salt, &key), &t.crypt_hash) {
            return Err(ApiError::bad_request(format!(
                "Invalid auth key: Attempt to transfer {id} with invalid auth key."
            )));
        }
        let (t, v) = state
            .db()
            .accept_transfer(&id, ctx.project(), &ctx.auth.user_id)?;
        tracing::info!(transfer = %t.id, volume = %v.id, to = %v.project_id, "transfer accepted");
        Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({"transfer": {
                "id": t.id, "name": t.name, "volume_id": t.volume_id,
                "links": ctx.links(collection(new), &t.id),
            }})),
        )
            .into_response())
    })
    .await
}

async fn show(
    State(state): St,
    ctx: Ctx,
    uri: axum::http::Uri,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let new = is_new(uri.path());
    check_version(&ctx, new)?;
    blocking(&state, move |state| {
        let t = visible(state, &ctx, &id)?;
        ctx.authorize(state, "volume:get_transfer", &t.source_project_id, None)?;
        Ok(axum::Json(json!({"transfer": view(&ctx, &t, new, true)})).into_response())
    })
    .await
}

async fn delete(
    State(state): St,
    ctx: Ctx,
    uri: axum::http::Uri,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let new = is_new(uri.path());
    check_version(&ctx, new)?;
    blocking(&state, move |state| {
        let t = visible(state, &ctx, &id)?;
        ctx.authorize(state, "volume:delete_transfer", &t.source_project_id, None)?;
        state.db().delete_transfer(&id)?;
        Ok(StatusCode::ACCEPTED.into_response())
    })
    .await
}

async fn list(
    State(state): St,
    ctx: Ctx,
    uri: axum::http::Uri,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    list_any(state, ctx, is_new(uri.path()), q, false).await
}

async fn list_detail(
    State(state): St,
    ctx: Ctx,
    uri: axum::http::Uri,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    list_any(state, ctx, is_new(uri.path()), q, true).await
}

async fn list_any(
    state: Arc<ApiState>,
    ctx: Ctx,
    new: bool,
    q: Vec<(String, String)>,
    detailed: bool,
) -> Result<Response, ApiError> {
    check_version(&ctx, new)?;
    ctx.authorize_own(&state, "volume:get_all_transfers")?;
    let mut lq = ListQuery::project(ctx.project());
    if ctx.is_admin()
        && q.iter()
            .any(|(k, v)| k == "all_tenants" && body::str_bool(v) != Some(false))
    {
        lq.project_id = None;
    }
    let mut limit = crate::paging::MAX_LIMIT;
    for (k, v) in &q {
        match k.as_str() {
            // Pagination of transfers came with 3.59.
            "limit" if ctx.version.at_least(59) => {
                limit = v
                    .parse::<u64>()
                    .map_err(|_| ApiError::bad_request("limit param must be an integer"))?
                    .min(crate::paging::MAX_LIMIT);
            }
            "marker" if ctx.version.at_least(59) => lq.marker = Some(v.clone()),
            "offset" if ctx.version.at_least(59) => {
                lq.offset = Some(
                    v.parse()
                        .map_err(|_| ApiError::bad_request("offset param must be an integer"))?,
                );
            }
            _ => {}
        }
    }
    lq.limit = Some(limit);
    blocking(&state, move |state| {
        let page = state.db().list_transfers(&lq)?;
        let items: Vec<Value> = page
            .items
            .iter()
            .map(|t| view(&ctx, t, new, detailed))
            .collect();
        Ok(axum::Json(json!({"transfers": items})).into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashes_compare() {
        let a = random_text(KEY_LEN).expect("random");
        let b = random_text(KEY_LEN).expect("random");
        assert_eq!(a.len(), KEY_LEN);
        assert_ne!(a, b);
        let h = hash("salt1234", &a);
        assert!(same(&h, &hash("salt1234", &a)));
        assert!(!same(&h, &hash("salt1234", &b)));
        assert!(!same(&h, &hash("salt4321", &a)));
    }
}
