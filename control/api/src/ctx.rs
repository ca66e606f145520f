//! The request pipeline every `/v3` request passes: a request id, the URL's project segment
//! taken off (so `/v3/{project_id}/volumes` and 3.67's `/v3/volumes` reach the same
//! handlers), microversion negotiation, authentication, and on the way out the version echo
//! (`OpenStack-API-Version`, `Vary`) and request-id headers, faults included.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use basalt_identity::AuthContext;
use basalt_policy::{Credentials, Target};
use serde_json::{Value, json};

use crate::ApiState;
use crate::fault::ApiError;
use crate::version::{self, Version};

/// Collections served under `/v3/`; a first segment that is not one of these is the project
/// id of the old URL form.
pub const COLLECTIONS: &[&str] = &[
    "volumes",
    "snapshots",
    "attachments",
    "types",
    "os-quota-sets",
    "os-quota-class-sets",
    "limits",
    "os-availability-zone",
    "os-services",
    "scheduler-stats",
    "capabilities",
    "extensions",
    "os-hosts",
    "messages",
    "volume-transfers",
    "os-volume-transfer",
    "default-types",
    "resource_filters",
    "qos-specs",
    "backups",
    "groups",
    "group_types",
    "group_snapshots",
    "consistencygroups",
    "cgsnapshots",
    "clusters",
    "workers",
    "manageable_volumes",
    "manageable_snapshots",
];

/// What a handler knows about its request.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The negotiated microversion.
    pub version: Version,
    /// `req-<uuid>`.
    pub request_id: String,
    /// Who asks.
    pub auth: AuthContext,
    /// The same, as the policy engine sees it.
    pub creds: Credentials,
    /// The project segment of the URL, when the old form was used.
    pub url_project: Option<String>,
    /// `scheme://host[:port]` links are made with.
    pub base_url: String,
}

impl Ctx {
    /// The project the request acts for.
    pub fn project(&self) -> &str {
        &self.auth.project_id
    }

    /// Cinder's `context.is_admin`.
    pub fn is_admin(&self) -> bool {
        self.auth.is_admin
    }

    /// Whether a resource of `project` is visible (its own project's, or an admin's view).
    pub fn sees(&self, project: &str) -> bool {
        self.is_admin() || project == self.project()
    }

    /// A row the store answered, as the caller may see it: 404 (`{kind} {id} could not be
    /// found.`) when it does not exist or belongs to a project the caller cannot see (another
    /// project's resources do not exist for it, as in Cinder).
    ///
    /// # Errors
    /// 404, or the store's own failure.
    pub fn visible<T>(
        &self,
        kind: &str,
        id: &str,
        found: Result<T, basalt_db::DbError>,
        project: impl FnOnce(&T) -> &str,
    ) -> Result<T, ApiError> {
        let gone = || ApiError::not_found(format!("{kind} {id} could not be found."));
        let row = found.map_err(|e| match e {
            basalt_db::DbError::NotFound { .. } => gone(),
            o => o.into(),
        })?;
        if !self.sees(project(&row)) {
            return Err(gone());
        }
        Ok(row)
    }

    /// Enforces `rule` against a resource of `project` (and `user`).
    ///
    /// # Errors
    /// 403 when the policy says no.
    pub fn authorize(
        &self,
        state: &ApiState,
        rule: &str,
        project: &str,
        user: Option<&str>,
    ) -> Result<(), ApiError> {
        let mut target = Target::new();
        target.insert("project_id".into(), project.to_owned());
        if let Some(u) = user {
            target.insert("user_id".into(), u.to_owned());
        }
        Ok(state.policy.authorize(rule, &target, &self.creds)?)
    }

    /// Enforces `rule` for the caller's own project (creates, lists).
    ///
    /// # Errors
    /// 403.
    pub fn authorize_own(&self, state: &ApiState, rule: &str) -> Result<(), ApiError> {
        self.authorize(state, rule, &self.auth.project_id, Some(&self.auth.user_id))
    }

    /// Whether `rule` allows (for optional view fields).
    pub fn allowed(&self, state: &ApiState, rule: &str, project: &str) -> bool {
        let mut target = Target::new();
        target.insert("project_id".into(), project.to_owned());
        state.policy.check(rule, &target, &self.creds)
    }

    /// The project part of links: the URL's, else the caller's.
    fn link_project(&self) -> &str {
        self.url_project.as_deref().unwrap_or(&self.auth.project_id)
    }

    /// `links` of a resource (`self` and `bookmark`), as Cinder's view builders make them.
    pub fn links(&self, collection: &str, id: &str) -> Value {
        let p = self.link_project();
        json!([
            {"rel": "self", "href": format!("{}/v3/{p}/{collection}/{id}", self.base_url)},
            {"rel": "bookmark", "href": format!("{}/{p}/{collection}/{id}", self.base_url)},
        ])
    }

    /// The URL of a collection (for `next` links).
    pub fn collection_url(&self, collection: &str) -> String {
        format!("{}/v3/{}/{collection}", self.base_url, self.link_project())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Ctx, ApiError> {
        parts
            .extensions
            .get::<Ctx>()
            .cloned()
            .ok_or_else(|| ApiError::internal("request context missing"))
    }
}

/// A new request id.
pub fn request_id() -> String {
    format!(
        "req-{}",
        basalt_db::new_uuid().unwrap_or_else(|_| "00000000-0000-4000-8000-000000000000".into())
    )
}

/// `scheme://host` for links: the configured public URL, else the request's `Host`.
pub fn base_url(state: &ApiState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.cfg.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// Splits `/v3/<seg>/rest`: when `seg` is not a collection it is the project id of the old URL
/// form, and the path becomes `/v3/rest`.
pub fn strip_project(path: &str) -> (Option<String>, Option<String>) {
    let Some(rest) = path.strip_prefix("/v3/") else {
        return (None, None);
    };
    let (seg, tail) = match rest.split_once('/') {
        Some((s, t)) => (s, Some(t)),
        None => (rest, None),
    };
    if seg.is_empty() || COLLECTIONS.contains(&seg) {
        return (None, None);
    }
    let new = match tail {
        Some(t) => format!("/v3/{t}"),
        None => "/v3/".to_owned(),
    };
    (Some(seg.to_owned()), Some(new))
}

/// The project segment [`rewrite`] took off the URL.
#[derive(Debug, Clone)]
pub struct UrlProject(pub Option<String>);

/// Takes the project segment off `/v3/{project_id}/...` before routing, so both URL forms
/// reach the same routes; the segment rides along as [`UrlProject`].
pub async fn rewrite(mut req: Request<Body>, next: Next) -> Response {
    let (url_project, new_path) = strip_project(req.uri().path());
    if let Some(p) = new_path {
        let pq = match req.uri().query() {
            Some(q) => format!("{p}?{q}"),
            None => p,
        };
        let mut parts = req.uri().clone().into_parts();
        let Ok(path) = pq.parse() else {
            return ApiError::bad_request("Malformed request URL").into_response();
        };
        parts.path_and_query = Some(path);
        match Uri::from_parts(parts) {
            Ok(u) => *req.uri_mut() = u,
            Err(_) => return ApiError::bad_request("Malformed request URL").into_response(),
        }
    }
    req.extensions_mut().insert(UrlProject(url_project));
    next.run(req).await
}

/// The `/v3` pipeline (see the module docs).
pub async fn pipeline(
    State(state): State<Arc<ApiState>>,
    mut req: Request<Body>,
    next: Next,
) -> Response {
    let rid = request_id();
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut version = None;
    let resp = match prepare(&state, &mut req, &rid, &mut version).await {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    let mut resp = as_fault(resp).await;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&rid) {
        h.insert("x-openstack-request-id", v.clone());
        h.insert("x-compute-request-id", v);
    }
    if let Some(v) = version
        && let Ok(hv) = HeaderValue::from_str(&format!("volume {v}"))
    {
        h.insert(version::HEADER, hv);
        h.insert(
            header::VARY,
            HeaderValue::from_static("OpenStack-API-Version"),
        );
    }
    tracing::info!(
        request_id = %rid,
        %method,
        path,
        status = resp.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "api"
    );
    resp
}

/// Turns an error answer that is not a Cinder fault (axum's own text rejections: a path
/// parameter that is not UTF-8, a query string that does not parse, a bare 405) into one,
/// keeping its status and text.
async fn as_fault(resp: Response) -> Response {
    let status = resp.status();
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !status.is_client_error() && !status.is_server_error() || json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).trim().to_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("The request failed.")
            .to_owned(),
    };
    let mut fault = ApiError::new(status, text).into_response();
    for (k, v) in &parts.headers {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            fault.headers_mut().insert(k.clone(), v.clone());
        }
    }
    fault
}

async fn prepare(
    state: &ApiState,
    req: &mut Request<Body>,
    rid: &str,
    version_out: &mut Option<Version>,
) -> Result<(), ApiError> {
    let url_project = req
        .extensions()
        .get::<UrlProject>()
        .and_then(|u| u.0.clone());
    let version = Version::negotiate(req.headers())?;
    *version_out = Some(version);
    let auth = state.auth.authenticate(req.headers()).await?;
    if let Some(p) = &url_project
        && *p != auth.project_id
        && !auth.is_admin
    {
        return Err(ApiError::bad_request(format!(
            "Malformed request URL: URL's project_id '{p}' doesn't match Context's project_id '{}'",
            auth.project_id
        )));
    }
    let creds = Credentials {
        user_id: auth.user_id.clone(),
        project_id: auth.project_id.clone(),
        roles: auth.roles.clone(),
        is_admin: auth.is_admin,
        is_admin_project: auth.is_admin_project,
        system_scope: None,
        domain_id: None,
    };
    let base_url = base_url(state, req.headers());
    req.extensions_mut().insert(Ctx {
        version,
        request_id: rid.to_owned(),
        auth,
        creds,
        url_project,
        base_url,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_segment_comes_off() {
        assert_eq!(
            strip_project("/v3/abc123/volumes/detail"),
            (Some("abc123".into()), Some("/v3/volumes/detail".into()))
        );
        assert_eq!(strip_project("/v3/volumes/detail"), (None, None));
        assert_eq!(
            strip_project("/v3/abc"),
            (Some("abc".into()), Some("/v3/".into()))
        );
        assert_eq!(strip_project("/v3/"), (None, None));
        assert_eq!(strip_project("/identity/v3/auth"), (None, None));
    }
}
