//! A read-only, empty Image service v2 catalog at `/image`.
//!
//! Basalt has no image store, but openstackclient builds an image client for every
//! `volume create` (even without `--image`) and fails when the catalog has no image
//! endpoint. This answers Glance's version discovery and lists no images, so clients work
//! and nobody is told an image exists; creating a volume from an image is refused by the
//! volume API.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::sync::Arc;

use crate::ApiState;

/// The image routes.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/image", get(versions))
        .route("/image/", get(versions))
        .route("/image/versions", get(versions))
        .route("/image/v2/images", get(images))
        .route("/image/v2/images/{id}", get(no_image))
}

async fn versions(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    let base = crate::ctx::base_url(&state, &headers);
    axum::Json(json!({"versions": [{
        "id": "v2.9",
        "status": "CURRENT",
        "links": [{"rel": "self", "href": format!("{base}/image/v2/")}],
    }]}))
    .into_response()
}

async fn images() -> Response {
    axum::Json(json!({"images": [], "first": "/v2/images", "schema": "/v2/schemas/images"}))
        .into_response()
}

async fn no_image() -> Response {
    (
        StatusCode::NOT_FOUND,
        "404 Not Found\n\nThis Basalt deployment has no images.\n",
    )
        .into_response()
}
