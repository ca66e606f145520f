//! The Cinder Block Storage v3 REST API over Basalt's control plane.
//!
//! ```text
//!   GET /                  versions (300)        /identity/...   built-in Keystone subset
//!   /v3/{project_id}/... ┐                                       (basalt-identity)
//!   /v3/...              ┴─► ctx::pipeline: request id, project segment, microversion,
//!                            authentication ─► handler: policy, validation, store / Control
//!                            (on blocking threads) ─► view at the microversion ─► echo headers
//! ```
//!
//! Handlers follow Cinder's controllers: the same status codes, the same fields per
//! microversion, the same fault bodies. Long work (placing a volume, datapath calls) runs
//! after the 202 on a blocking thread; the row's status tells the client where it is.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod attachments;
pub mod body;
pub mod ctx;
pub mod fault;
pub mod image;
pub mod messages;
pub mod meta;
pub mod misc;
pub mod openapi;
pub mod paging;
pub mod quotas;
pub mod service;
pub mod services;
pub mod snapshots;
pub mod transfers;
pub mod types;
pub mod version;
pub mod views;
pub mod volumes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use basalt_db::MetadataStore;
use basalt_identity::{Auth, Identity};
use basalt_manager::Control;
use basalt_policy::Enforcer;
use serde_json::json;

pub use fault::ApiError;
pub use service::{ApiService, StartError};
pub use version::Version;

/// The API's settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The URL clients reach the API on (links, catalog), e.g. `http://127.0.0.1:8776`;
    /// `None`: taken from each request's `Host`.
    pub public_url: Option<String>,
    /// The availability zone volumes get when none is asked for.
    pub default_availability_zone: String,
    /// The volume type volumes get when none is asked for (created at start if missing).
    pub default_volume_type: String,
    /// The protocol attachments use when the connector allows both (`iscsi` or `nvmeof`).
    pub default_protocol: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            public_url: None,
            default_availability_zone: "nova".into(),
            default_volume_type: "__DEFAULT__".into(),
            default_protocol: "iscsi".into(),
        }
    }
}

/// What every handler shares.
#[derive(Debug)]
pub struct ApiState {
    /// The control plane.
    pub control: Arc<Control>,
    /// How requests are authenticated.
    pub auth: Auth,
    /// The policy rules.
    pub policy: Enforcer,
    /// Settings.
    pub cfg: ApiConfig,
    /// The built-in identity, when it is the one in use (served at `/identity`).
    pub identity: Option<Arc<Identity>>,
}

impl ApiState {
    /// The metadata store.
    pub fn db(&self) -> &Arc<dyn MetadataStore> {
        self.control.db()
    }

    /// Makes sure the default volume type exists (Cinder creates `__DEFAULT__` with its
    /// database).
    ///
    /// # Errors
    /// The store failed.
    pub fn ensure_default_type(&self) -> Result<(), ApiError> {
        match self.db().get_volume_type(&self.cfg.default_volume_type) {
            Ok(_) => Ok(()),
            Err(basalt_db::DbError::NotFound { .. }) => {
                match self.db().create_volume_type(
                    &self.cfg.default_volume_type,
                    Some("Default Volume Type"),
                    true,
                    &std::collections::BTreeMap::new(),
                ) {
                    Ok(_) | Err(basalt_db::DbError::Duplicate { .. }) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Runs blocking control-plane work off the async threads.
///
/// # Errors
/// What `f` returns, or 500 if the task panicked.
pub async fn blocking<T, F>(state: &Arc<ApiState>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&ApiState) -> Result<T, ApiError> + Send + 'static,
{
    let s = state.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|e| ApiError::internal(format!("the operation failed: {e}")))?
}

/// The whole API as a router.
pub fn router(state: Arc<ApiState>) -> Router {
    let v3 = Router::new()
        .merge(volumes::routes())
        .merge(snapshots::routes())
        .merge(attachments::routes())
        .merge(misc::routes())
        .merge(messages::routes())
        .merge(transfers::routes())
        .merge(types::routes())
        .merge(quotas::routes())
        .merge(services::routes())
        .method_not_allowed_fallback(bad_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ctx::pipeline,
        ));
    let mut inner = Router::new()
        .route("/", get(versions))
        .route("/v3", get(v3_version))
        .route("/v3/", get(v3_version))
        .route("/healthcheck", get(|| async { "OK" }))
        .route("/openapi.json", get(openapi::serve))
        .merge(image::routes())
        .merge(v3)
        .layer(DefaultBodyLimit::max(body::MAX_BODY))
        .with_state(state.clone());
    if let Some(id) = &state.identity {
        inner = inner.merge(basalt_identity::mount(id.clone()));
    }
    let inner = inner
        .method_not_allowed_fallback(bad_method)
        .fallback(not_found);
    // The project segment must come off before routing, so the rewrite wraps the router.
    Router::new().fallback_service(tower::Layer::layer(
        &axum::middleware::from_fn(ctx::rewrite),
        inner,
    ))
}

async fn bad_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "The method is not allowed for the requested URL.",
    )
}

async fn not_found() -> ApiError {
    ApiError::not_found("The resource could not be found.")
}

fn version_entry(base: &str) -> serde_json::Value {
    json!({
        "id": "v3.0",
        "status": "CURRENT",
        "version": version::MAX.to_string(),
        "min_version": version::MIN.to_string(),
        "updated": version::UPDATED,
        "links": [
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
            {"rel": "self", "href": format!("{base}/v3/")},
        ],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"},
        ],
    })
}

async fn versions(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    let base = ctx::base_url(&state, &headers);
    (
        StatusCode::MULTIPLE_CHOICES,
        axum::Json(json!({"versions": [version_entry(&base)]})),
    )
        .into_response()
}

async fn v3_version(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    let base = ctx::base_url(&state, &headers);
    axum::Json(json!({"versions": [version_entry(&base)]})).into_response()
}

/// Serves the API on `listener` until `shutdown` resolves, then lets requests in flight end.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// How long [`serve`]'s callers should wait for requests in flight after a shutdown.
pub const DRAIN: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    /// Every policy rule the handlers name is one Cinder registers (an unregistered name
    /// would make its endpoint answer 500).
    #[test]
    fn every_rule_the_handlers_name_is_registered() {
        let e = basalt_policy::Enforcer::cinder_defaults();
        let sources = [
            include_str!("attachments.rs"),
            include_str!("messages.rs"),
            include_str!("meta.rs"),
            include_str!("misc.rs"),
            include_str!("quotas.rs"),
            include_str!("services.rs"),
            include_str!("snapshots.rs"),
            include_str!("transfers.rs"),
            include_str!("types.rs"),
            include_str!("views.rs"),
            include_str!("volumes.rs"),
        ];
        let prefixes = [
            "volume:",
            "volume_extension:",
            "snapshot_extension:",
            "message:",
            "limits_extension:",
            "scheduler_extension:",
        ];
        let mut seen = 0;
        for src in sources {
            for piece in src.split('"').skip(1).step_by(2) {
                if prefixes.iter().any(|p| piece.starts_with(p))
                    && piece
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b':')
                {
                    seen += 1;
                    assert!(e.is_registered(piece), "{piece} is not a Cinder rule");
                }
            }
        }
        for action in [
            "reserve",
            "unreserve",
            "begin_detaching",
            "roll_detaching",
            "attach",
            "detach",
            "initialize_connection",
            "terminate_connection",
        ] {
            let rule = format!("volume_extension:volume_actions:{action}");
            assert!(e.is_registered(&rule), "{rule}");
        }
        assert!(seen > 60, "only {seen} rules found: is the scan broken?");
    }
}
