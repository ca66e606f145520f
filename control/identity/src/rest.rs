//! The Keystone v3 REST subset, as an axum [`Router`] meant to be nested at `/identity`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::model::{
    Credentials, Domain, DomainRef, Project, ProjectPatch, ProjectRef, Role, RoleAssignment, Scope,
    TokenInfo, User, UserPatch, UserRef,
};
use crate::secret::stable_id;
use crate::{DEFAULT_DOMAIN_ID, Identity, IdentityConfig, IdentityError};

/// The largest request body accepted (64 KiB); larger ones get 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The identity API version advertised (Keystone's, as of Ussuri and later).
const API_VERSION: &str = "v3.14";
const API_UPDATED: &str = "2020-04-07T00:00:00Z";

type St = Arc<Identity>;

/// The Keystone v3 subset as an axum router. The API nests it at `/identity`, so
/// keystoneauth's `auth_url` is `{public_url}/identity/v3`; the paths below are relative to
/// that nest point.
///
/// - `GET /` (300, the version list), `GET /v3`, `GET /v3/` (the v3 version document).
/// - `POST /v3/auth/tokens` (password or token method; project scope by id or name and
///   domain, or unscoped; 201 with `X-Subject-Token`), `GET`/`HEAD`/`DELETE /v3/auth/tokens`
///   (check or revoke `X-Subject-Token`), `GET /v3/auth/projects`, `/v3/auth/catalog`,
///   `/v3/auth/domains`, `/v3/auth/system`.
/// - Admin (role `admin`): `GET`/`POST /v3/projects`, `GET`/`PATCH`/`DELETE /v3/projects/{id}`,
///   `GET`/`POST /v3/users`, `GET`/`PATCH`/`DELETE /v3/users/{id}`, `GET /v3/roles`,
///   `GET /v3/roles/{id}`, `GET /v3/projects/{p}/users/{u}/roles`,
///   `PUT`/`HEAD`/`DELETE /v3/projects/{p}/users/{u}/roles/{r}`, `GET /v3/role_assignments`.
///   A user may also read itself, its projects and the project its token is scoped to.
/// - Any authenticated user: `GET /v3/domains`, `GET /v3/domains/{id}`,
///   `GET /v3/users/{id}/projects` (its own). `POST /v3/users/{id}/password` needs the
///   original password instead of a token.
///
/// Errors are Keystone's `{"error":{"code","title","message"}}`; a 401 carries
/// `WWW-Authenticate: Keystone uri="{public_url}/identity"`.
pub fn router(identity: Arc<Identity>) -> Router {
    Router::new()
        .route("/", get(versions))
        .route("/v3", get(version))
        .route("/v3/", get(version))
        .route(
            "/v3/auth/tokens",
            post(issue_token)
                .get(check_token)
                .head(head_token)
                .delete(revoke_token),
        )
        .route("/v3/auth/projects", get(auth_projects))
        .route("/v3/auth/domains", get(auth_domains))
        .route("/v3/auth/system", get(auth_system))
        .route("/v3/auth/catalog", get(auth_catalog))
        .route("/v3/projects", get(list_projects).post(create_project))
        .route(
            "/v3/projects/{id}",
            get(get_project)
                .patch(update_project)
                .delete(delete_project),
        )
        .route("/v3/projects/{p}/users/{u}/roles", get(list_grants))
        .route(
            "/v3/projects/{p}/users/{u}/roles/{r}",
            put(grant).head(check_grant).delete(revoke_grant),
        )
        .route("/v3/users", get(list_users).post(create_user))
        .route(
            "/v3/users/{id}",
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route("/v3/users/{id}/projects", get(user_projects))
        .route("/v3/users/{id}/password", post(change_password))
        .route("/v3/roles", get(list_roles))
        .route("/v3/roles/{id}", get(get_role))
        .route("/v3/role_assignments", get(role_assignments))
        .route("/v3/domains", get(list_domains))
        .route("/v3/domains/{id}", get(get_domain))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response_with_state(
            Arc::clone(&identity),
            add_www_authenticate,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(identity)
}

/// Where the API mounts [`router`]: keystoneauth's `auth_url` is `{public_url}/identity/v3`.
pub const MOUNT_PATH: &str = "/identity";

/// [`router`] nested at [`MOUNT_PATH`], plus `/identity/` (the version list), which a nest
/// alone does not route. Merge it into the API's router.
pub fn mount(identity: Arc<Identity>) -> Router {
    let slash = Router::new()
        .route("/identity/", get(versions))
        .with_state(Arc::clone(&identity));
    Router::new()
        .nest(MOUNT_PATH, router(identity))
        .merge(slash)
}

// ------------------------------------------------------------------ errors

/// A Keystone-shaped error answer.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, m)
    }
    fn unauthorized(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, m)
    }
    fn forbidden(action: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!("You are not authorized to perform the requested action: {action}."),
        )
    }
    fn internal(detail: &str) -> ApiError {
        tracing::error!(error = detail, "identity request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "An unexpected error prevented the server from fulfilling your request.",
        )
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> ApiError {
        let status = e.status_code();
        if status.is_server_error() {
            return ApiError::internal(&e.to_string());
        }
        let message = match &e {
            IdentityError::NotFound { kind, id } => format!("Could not find {kind}: {id}."),
            IdentityError::Conflict(m) => {
                format!("Conflict occurred attempting to store the resource: {m}.")
            }
            IdentityError::Unauthorized(m) => {
                format!("The request you have made requires authentication: {m}.")
            }
            other => capitalize(&other.to_string()),
        };
        ApiError::new(status, message)
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = json!({"error": {
            "code": self.status.as_u16(),
            "title": title,
            "message": self.message,
        }});
        (self.status, Json(body)).into_response()
    }
}

/// Every 401 names where to authenticate, as Keystone and keystonemiddleware do.
async fn add_www_authenticate(State(id): State<St>, mut resp: Response) -> Response {
    if resp.status() == StatusCode::UNAUTHORIZED
        && !resp.headers().contains_key(header::WWW_AUTHENTICATE)
        && let Ok(v) =
            HeaderValue::from_str(&format!("Keystone uri=\"{}\"", id.www_authenticate_uri()))
    {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "The resource could not be found.")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "The method is not allowed for the requested URL.",
    )
}

// ------------------------------------------------------------------ helpers

/// The query string as a map; a malformed one is a Keystone-shaped 400.
struct Q(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Q {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Q, ApiError> {
        match Query::<HashMap<String, String>>::from_request_parts(parts, state).await {
            Ok(Query(m)) => Ok(Q(m)),
            Err(e) => Err(ApiError::bad_request(format!(
                "Invalid query string: {}",
                e.body_text()
            ))),
        }
    }
}

impl Q {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    /// A flag such as `?nocatalog` or `?effective`: present and not false.
    fn flag(&self, k: &str) -> bool {
        self.get(k).is_some_and(|v| parse_bool(v) != Some(false))
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "yes" | "on" | "t" | "y" => Some(true),
        "0" | "false" | "no" | "off" | "f" | "n" => Some(false),
        _ => None,
    }
}

/// The request body as a JSON object.
fn parse_body(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request is too large.")
        } else {
            ApiError::bad_request("Could not read the request body.")
        }
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        )),
        Err(_) => Err(ApiError::bad_request("Malformed JSON in request body.")),
    }
}

/// `body[key]` as an object, or 400.
fn member<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a Map<String, Value>, ApiError> {
    body.get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::bad_request(format!("Expecting to find {key} in request body.")))
}

fn opt_str<'a>(o: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a string."))),
    }
}

/// Absent → `None`; `null` → `Some(None)`; a string → `Some(Some(s))`.
fn nullable_str(o: &Map<String, Value>, key: &str) -> Result<Option<Option<String>>, ApiError> {
    match o.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(ApiError::bad_request(format!(
            "{key} must be a string or null."
        ))),
    }
}

fn opt_bool(o: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a boolean."))),
    }
}

/// Runs `f` on a blocking thread (SQLite, argon2).
async fn blocking<T: Send + 'static>(
    id: &St,
    f: impl FnOnce(&Identity) -> Result<T, IdentityError> + Send + 'static,
) -> Result<T, ApiError> {
    let id = Arc::clone(id);
    tokio::task::spawn_blocking(move || f(&id))
        .await
        .map_err(|e| ApiError::internal(&format!("identity task failed: {e}")))?
        .map_err(ApiError::from)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The caller's valid token, or 401.
async fn caller(id: &St, headers: &HeaderMap) -> Result<TokenInfo, ApiError> {
    let Some(token) = header_str(headers, "x-auth-token").map(str::to_owned) else {
        return Err(ApiError::unauthorized(
            "The request you have made requires authentication.",
        ));
    };
    blocking(id, move |i| i.token_info(&token))
        .await?
        .ok_or_else(|| ApiError::unauthorized("The token is invalid or has expired."))
}

/// The caller's token if it carries role `admin`; 401 or 403 otherwise.
async fn admin(id: &St, headers: &HeaderMap, action: &str) -> Result<TokenInfo, ApiError> {
    let c = caller(id, headers).await?;
    if c.has_role("admin") {
        Ok(c)
    } else {
        Err(ApiError::forbidden(action))
    }
}

fn base(cfg: &IdentityConfig) -> String {
    format!("{}/identity/v3", cfg.public_url)
}

fn list_links(cfg: &IdentityConfig, path: &str) -> Value {
    json!({"self": format!("{}/{path}", base(cfg)), "previous": null, "next": null})
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

// ------------------------------------------------------------------ views

fn version_doc(cfg: &IdentityConfig) -> Value {
    json!({
        "id": API_VERSION,
        "status": "stable",
        "updated": API_UPDATED,
        "links": [{"rel": "self", "href": format!("{}/", base(cfg))}],
        "media-types": [{
            "base": "application/json",
            "type": "application/vnd.openstack.identity-v3+json",
        }],
    })
}

fn domain_ref(id: &str, name: &str) -> Value {
    json!({"id": id, "name": name})
}

fn project_json(cfg: &IdentityConfig, p: &Project) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "domain_id": p.domain_id,
        "enabled": p.enabled,
        "is_domain": false,
        "parent_id": p.domain_id,
        "tags": [],
        "options": {},
        "links": {"self": format!("{}/projects/{}", base(cfg), p.id)},
    })
}

fn user_json(cfg: &IdentityConfig, u: &User) -> Value {
    let mut v = json!({
        "id": u.id,
        "name": u.name,
        "domain_id": u.domain_id,
        "enabled": u.enabled,
        "password_expires_at": null,
        "options": {},
        "links": {"self": format!("{}/users/{}", base(cfg), u.id)},
    });
    if let Some(o) = v.as_object_mut() {
        if let Some(p) = &u.default_project_id {
            o.insert("default_project_id".into(), json!(p));
        }
        if let Some(d) = &u.description {
            o.insert("description".into(), json!(d));
        }
    }
    v
}

fn role_json(cfg: &IdentityConfig, r: &Role) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "description": r.description,
        "domain_id": null,
        "options": {},
        "links": {"self": format!("{}/roles/{}", base(cfg), r.id)},
    })
}

fn domain_json(cfg: &IdentityConfig, d: &Domain) -> Value {
    json!({
        "id": d.id,
        "name": d.name,
        "description": d.description,
        "enabled": d.enabled,
        "tags": [],
        "options": {},
        "links": {"self": format!("{}/domains/{}", base(cfg), d.id)},
    })
}

/// The service catalog for `project_id`: block storage as `block-storage` (tempest) and
/// `volumev3` (python-cinderclient) at `{public_url}/v3/{project_id}`, identity at
/// `{public_url}/identity`, and the API's read-only image catalog at `{public_url}/image`
/// (openstackclient's `volume create` needs an image endpoint even without `--image`), each
/// with public, internal and admin endpoints.
pub(crate) fn catalog(cfg: &IdentityConfig, project_id: &str) -> Value {
    let volume_url = format!("{}/v3/{project_id}", cfg.public_url);
    let identity_url = format!("{}/identity", cfg.public_url);
    let image_url = format!("{}/image", cfg.public_url);
    let services = [
        ("block-storage", "cinder", volume_url.as_str()),
        ("volumev3", "cinderv3", volume_url.as_str()),
        ("identity", "keystone", identity_url.as_str()),
        ("image", "glance", image_url.as_str()),
    ];
    let entries: Vec<Value> = services
        .iter()
        .map(|(kind, name, url)| {
            let endpoints: Vec<Value> = ["public", "internal", "admin"]
                .iter()
                .map(|iface| {
                    json!({
                        "id": stable_id(&format!("basalt-endpoint:{kind}:{iface}:{}", cfg.region)),
                        "interface": iface,
                        "region": cfg.region,
                        "region_id": cfg.region,
                        "url": url,
                    })
                })
                .collect();
            json!({
                "id": stable_id(&format!("basalt-service:{kind}")),
                "type": kind,
                "name": name,
                "endpoints": endpoints,
            })
        })
        .collect();
    Value::Array(entries)
}

fn token_json(cfg: &IdentityConfig, t: &TokenInfo, with_catalog: bool) -> Value {
    let mut tok = Map::new();
    tok.insert("methods".into(), json!(t.methods));
    tok.insert(
        "user".into(),
        json!({
            "id": t.user.id,
            "name": t.user.name,
            "domain": domain_ref(&t.user.domain_id, &t.user.domain_name),
            "password_expires_at": null,
        }),
    );
    tok.insert("audit_ids".into(), json!(t.audit_ids));
    tok.insert("expires_at".into(), json!(t.expires_at));
    tok.insert("issued_at".into(), json!(t.issued_at));
    let roles: Vec<Value> = t
        .roles
        .iter()
        .map(|r| json!({"id": r.id, "name": r.name}))
        .collect();
    tok.insert("roles".into(), Value::Array(roles));
    if let Some(p) = &t.project {
        tok.insert(
            "project".into(),
            json!({"id": p.id, "name": p.name, "domain": domain_ref(&p.domain_id, &p.domain_name)}),
        );
        tok.insert("is_domain".into(), json!(false));
        if with_catalog {
            tok.insert("catalog".into(), catalog(cfg, &p.id));
        }
    }
    json!({ "token": tok })
}

// ------------------------------------------------------------------ versions

async fn versions(State(id): State<St>) -> Response {
    let body = json!({"versions": {"values": [version_doc(id.config())]}});
    (StatusCode::MULTIPLE_CHOICES, Json(body)).into_response()
}

async fn version(State(id): State<St>) -> Json<Value> {
    Json(json!({"version": version_doc(id.config())}))
}

// ------------------------------------------------------------------ tokens

fn parse_domain(v: Option<&Value>, what: &str) -> Result<DomainRef, ApiError> {
    let Some(o) = v.and_then(Value::as_object) else {
        return Err(ApiError::bad_request(format!(
            "Expecting to find domain in {what}: a name requires a domain (id or name)."
        )));
    };
    if let Some(id) = opt_str(o, "id")? {
        return Ok(DomainRef::Id(id.to_owned()));
    }
    if let Some(n) = opt_str(o, "name")? {
        return Ok(DomainRef::Name(n.to_owned()));
    }
    Err(ApiError::bad_request(format!(
        "Expecting to find id or name in {what} domain."
    )))
}

/// `{"auth": {"identity": ..., "scope": ...}}` → what to authenticate and scope.
fn parse_auth(body: &Map<String, Value>) -> Result<(Credentials, Scope), ApiError> {
    let auth = member(body, "auth")?;
    let identity = member(auth, "identity")?;
    let methods: Vec<&str> = identity
        .get("methods")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if methods.is_empty() {
        return Err(ApiError::bad_request(
            "Expecting to find methods in identity.",
        ));
    }
    if methods.iter().any(|m| *m != "password" && *m != "token") {
        return Err(ApiError::unauthorized(
            "Attempted to authenticate with an unsupported method.",
        ));
    }
    let creds = if methods.contains(&"password") {
        let user = member(member(identity, "password")?, "user")?;
        let password = opt_str(user, "password")?
            .ok_or_else(|| ApiError::bad_request("Expecting to find password in user."))?;
        let uref = if let Some(id) = opt_str(user, "id")? {
            UserRef::Id(id.to_owned())
        } else if let Some(name) = opt_str(user, "name")? {
            UserRef::Name {
                name: name.to_owned(),
                domain: parse_domain(user.get("domain"), "user")?,
            }
        } else {
            return Err(ApiError::bad_request(
                "Expecting to find id or name in user.",
            ));
        };
        Credentials::Password {
            user: uref,
            password: password.to_owned(),
        }
    } else {
        let t = member(identity, "token")?;
        let id = opt_str(t, "id")?
            .ok_or_else(|| ApiError::bad_request("Expecting to find id in token."))?;
        Credentials::Token(id.to_owned())
    };
    let scope = match auth.get("scope") {
        None | Some(Value::Null) => Scope::Default,
        Some(Value::String(s)) if s == "unscoped" => Scope::Unscoped,
        Some(Value::Object(o)) if o.is_empty() => Scope::Default,
        Some(Value::Object(o)) => {
            if let Some(p) = o.get("project").and_then(Value::as_object) {
                if let Some(id) = opt_str(p, "id")? {
                    Scope::Project(ProjectRef::Id(id.to_owned()))
                } else if let Some(name) = opt_str(p, "name")? {
                    Scope::Project(ProjectRef::Name {
                        name: name.to_owned(),
                        domain: parse_domain(p.get("domain"), "project")?,
                    })
                } else {
                    return Err(ApiError::bad_request(
                        "Expecting to find id or name in project.",
                    ));
                }
            } else if o.contains_key("domain")
                || o.contains_key("system")
                || o.contains_key("OS-TRUST:trust")
            {
                return Err(ApiError::unauthorized(
                    "Only project-scoped and unscoped tokens are supported.",
                ));
            } else {
                return Err(ApiError::bad_request("Invalid scope."));
            }
        }
        Some(_) => return Err(ApiError::bad_request("Invalid scope.")),
    };
    Ok((creds, scope))
}

fn subject_header(token: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(token).map_err(|_| ApiError::internal("token is not a header value"))
}

async fn issue_token(
    State(id): State<St>,
    q: Q,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = parse_body(body)?;
    let (creds, scope) = parse_auth(&body)?;
    let issued = blocking(&id, move |i| i.issue_token(&creds, &scope)).await?;
    let json = token_json(id.config(), &issued.info, !q.flag("nocatalog"));
    let mut resp = (StatusCode::CREATED, Json(json)).into_response();
    resp.headers_mut()
        .insert("x-subject-token", subject_header(&issued.token)?);
    Ok(resp)
}

/// The caller, and the subject token it may see (404 if the subject is not valid, 403 if it
/// is someone else's and the caller is neither admin nor a service).
async fn subject(id: &St, headers: &HeaderMap) -> Result<(String, TokenInfo), ApiError> {
    let c = caller(id, headers).await?;
    let Some(subject) = header_str(headers, "x-subject-token").map(str::to_owned) else {
        return Err(ApiError::bad_request(
            "Expecting to find X-Subject-Token in the request headers.",
        ));
    };
    let s2 = subject.clone();
    let info = blocking(id, move |i| i.token_info(&s2))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Could not find token."))?;
    if !(c.has_role("admin") || c.has_role("service") || c.user.id == info.user.id) {
        return Err(ApiError::forbidden("identity:validate_token"));
    }
    Ok((subject, info))
}

async fn check_token(State(id): State<St>, headers: HeaderMap, q: Q) -> Result<Response, ApiError> {
    let (token, info) = subject(&id, &headers).await?;
    let json = token_json(id.config(), &info, !q.flag("nocatalog"));
    let mut resp = (StatusCode::OK, Json(json)).into_response();
    resp.headers_mut()
        .insert("x-subject-token", subject_header(&token)?);
    Ok(resp)
}

async fn head_token(State(id): State<St>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (token, _) = subject(&id, &headers).await?;
    let mut resp = StatusCode::OK.into_response();
    resp.headers_mut()
        .insert("x-subject-token", subject_header(&token)?);
    Ok(resp)
}

async fn revoke_token(State(id): State<St>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (token, _) = subject(&id, &headers).await?;
    blocking(&id, move |i| i.revoke_token(&token)).await?;
    Ok(no_content())
}

async fn auth_projects(State(id): State<St>, headers: HeaderMap) -> Result<Response, ApiError> {
    let c = caller(&id, &headers).await?;
    let uid = c.user.id.clone();
    let projects = blocking(&id, move |i| i.user_projects(&uid)).await?;
    let cfg = id.config();
    let list: Vec<Value> = projects
        .iter()
        .filter(|p| p.enabled)
        .map(|p| project_json(cfg, p))
        .collect();
    Ok(Json(json!({"projects": list, "links": list_links(cfg, "auth/projects")})).into_response())
}

async fn auth_domains(State(id): State<St>, headers: HeaderMap) -> Result<Response, ApiError> {
    caller(&id, &headers).await?;
    Ok(
        Json(json!({"domains": [], "links": list_links(id.config(), "auth/domains")}))
            .into_response(),
    )
}

async fn auth_system(State(id): State<St>, headers: HeaderMap) -> Result<Response, ApiError> {
    caller(&id, &headers).await?;
    Ok(
        Json(json!({"system": [], "links": list_links(id.config(), "auth/system")}))
            .into_response(),
    )
}

async fn auth_catalog(State(id): State<St>, headers: HeaderMap) -> Result<Response, ApiError> {
    let c = caller(&id, &headers).await?;
    let Some(p) = &c.project else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "A project-scoped token is required to produce a service catalog.",
        ));
    };
    let cfg = id.config();
    Ok(Json(json!({
        "catalog": catalog(cfg, &p.id),
        "links": {"self": format!("{}/auth/catalog", base(cfg))},
    }))
    .into_response())
}

// ------------------------------------------------------------------ projects

fn filter_name_enabled<'a, T>(
    q: &Q,
    items: &'a [T],
    name: impl Fn(&T) -> &str,
    domain: impl Fn(&T) -> &str,
    enabled: impl Fn(&T) -> bool,
) -> Result<Vec<&'a T>, ApiError> {
    let want_enabled = match q.get("enabled") {
        None => None,
        Some(v) => {
            Some(parse_bool(v).ok_or_else(|| ApiError::bad_request("enabled must be a boolean."))?)
        }
    };
    Ok(items
        .iter()
        .filter(|x| q.get("name").is_none_or(|n| n == name(x)))
        .filter(|x| q.get("domain_id").is_none_or(|d| d == domain(x)))
        .filter(|x| want_enabled.is_none_or(|e| e == enabled(x)))
        .collect())
}

async fn list_projects(
    State(id): State<St>,
    headers: HeaderMap,
    q: Q,
) -> Result<Response, ApiError> {
    admin(&id, &headers, "identity:list_projects").await?;
    let all = blocking(&id, Identity::list_projects).await?;
    let cfg = id.config();
    let list: Vec<Value> = if q.get("is_domain").and_then(parse_bool) == Some(true) {
        Vec::new()
    } else {
        filter_name_enabled(&q, &all, |p| &p.name, |p| &p.domain_id, |p| p.enabled)?
            .into_iter()
            .filter(|p| q.get("parent_id").is_none_or(|x| x == p.domain_id))
            .map(|p| project_json(cfg, p))
            .collect()
    };
    Ok(Json(json!({"projects": list, "links": list_links(cfg, "projects")})).into_response())
}

async fn create_project(
    State(id): State<St>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    admin(&id, &headers, "identity:create_project").await?;
    let body = parse_body(body)?;
    let p = member(&body, "project")?;
    let name = opt_str(p, "name")?
        .ok_or_else(|| ApiError::bad_request("Expecting to find name in project."))?
        .to_owned();
    let description = opt_str(p, "description")?.map(str::to_owned);
    let domain = opt_str(p, "domain_id")?
        .unwrap_or(DEFAULT_DOMAIN_ID)
        .to_owned();
    let enabled = opt_bool(p, "enabled")?.unwrap_or(true);
    if opt_bool(p, "is_domain")? == Some(true) {
        return Err(ApiError::bad_request(
            "Projects acting as domains are not supported.",
        ));
    }
    if let Some(parent) = opt_str(p, "parent_id")?
        && parent != domain
    {
        return Err(ApiError::bad_request(
            "Project hierarchies are not supported: parent_id must be the domain.",
        ));
    }
    let created = blocking(&id, move |i| {
        i.create_project_in(&domain, &name, description.as_deref(), enabled)
    })
    .await
    .map_err(|e| {
        if e.status == StatusCode::NOT_FOUND {
            ApiError::bad_request(e.message)
        } else {
            e
        }
    })?;
    let v = project_json(id.config(), &created);
    Ok((StatusCode::CREATED, Json(json!({"project": v}))).into_response())
}

async fn get_project(
    State(id): State<St>,
    headers: HeaderMap,
    Path(pid): Path<String>,
) -> Result<Response, ApiError> {
    let c = caller(&id, &headers).await?;
    let own = c.project.as_ref().is_some_and(|p| p.id == pid);
    if !(own || c.has_role("admin")) {
        return Err(ApiError::forbidden("identity:get_project"));
    }
    let p = blocking(&id, move |i| i.get_project(&pid)).await?;
    Ok(Json(json!({"project": project_json(id.config(), &p)})).into_response())
}

async fn update_project(
    State(id): State<St>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    admin(&id, &headers, "identity:update_project").await?;
    let body = parse_body(body)?;
    let p = member(&body, "project")?;
    let patch = ProjectPatch {
        name: opt_str(p, "name")?.map(str::to_owned),
        description: nullable_str(p, "description")?,
        enabled: opt_bool(p, "enabled")?,
    };
    let updated = blocking(&id, move |i| i.update_project(&pid, &patch)).await?;
    Ok(Json(json!({"project": project_json(id.config(), &updated)})).into_response())
}

async fn delete_project(
    State(id): State<St>,
    headers: HeaderMap,
    Path(pid): Path<String>,
) -> Result<Response, ApiError> {
    admin(&id, &headers, "identity:delete_project").await?;
    blocking(&id, move |i| i.delete_project(&pid)).await?;
    Ok(no_content())
}

// ------------------------------------------------------------------ grants

async fn list_grants(
    State(id): State<St>,
    headers: HeaderMap,
    Path((p, u)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    admin(&id, &headers, "identity:list_grants").await?;
    let roles = blocking(&id, move |i| i.granted_roles(&u, &p)).await?;
    let cfg = id.config();
    let list: Vec<Value> = roles.iter().map(|r| role_json(cfg, r)).collect();
    Ok(Json(json!({"roles": list, "links": list_links(cfg, "roles")})).into_response())
}

async fn grant(
    State(id): State<St>,
    headers: HeaderMap,
    Path((p, u, r)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    admin(&id, &headers, "identity:create_grant").await?;
    blocking(&id, move |i| i.grant_role(&u, &p, &r)).await?;
    Ok(no_content())
}

async fn check_grant(
    State(id): State<St>,
    headers: HeaderMap,
    Path((p, u, r)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    admin(&id, &headers, "identity:check_grant").await?;
    if blocking(&id, move |i| i.has_grant(&u, &p, &r)).await? {
        Ok(no_content())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "Could not find role assignment.",
        ))
    }
}

async fn revoke_grant(
    State(id): State<St>,
    headers: HeaderMap,
    Path((p, u, r)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    admin(&id, &headers, "identity:revoke_grant").await?;
    blocking(&id, move |i| i.revoke_role(&u, &p, &r)).await?;
    Ok(no_content())
}

// ------------------------------------------------------------------ users

async fn list_users(State(id): State<St>, headers: HeaderMap, q: Q) -> Result<Response, ApiError> {
    admin(&id, &headers, "identity:list_users").await?;
    let all = blocking(&id, Identity::list_users).await?;
    let cfg = id.config();
    let list: Vec<Value> =
        filter_name_enabled(&q, &all, |u| &u.name, |u| &u.domain_id, |u| u.enabled)?
            .into_iter()
            .map(|u| user_json(cfg, u))
            .collect();
    Ok(Json(json!({"users": list, "links": list_links(cfg, "users")})).into_response())
}

async fn create_user(
    State(id): State<St>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    admin(&id, &headers, "identity:create_user").await?;
    let body = parse_body(body)?;
    let u = member(&body, "user")?;
    let name = opt_str(u, "name")?
        .ok_or_else(|| ApiError::bad_request("Expecting to find name in user."))?
        .to_owned();
    let password = opt_str(u, "password")?.map(str::to_owned);
    if password.as_deref() == Some("") {
        return Err(ApiError::bad_request("The password must not be empty."));
    }
    let domain = opt_str(u, "domain_id")?
        .unwrap_or(DEFAULT_DOMAIN_ID)
        .to_owned();
    let project = opt_str(u, "default_project_id")?.map(str::to_owned);
    let enabled = opt_bool(u, "enabled")?.unwrap_or(true);
    let description = opt_str(u, "description")?.map(str::to_owned);
    let created = blocking(&id, move |i| {
        i.create_user_in(
            &domain,
            &name,
            password.as_deref(),
            project.as_deref(),
            enabled,
            description.as_deref(),
        )
    })
    .await
    .map_err(|e| {
        if e.status == StatusCode::NOT_FOUND {
            ApiError::bad_request(e.message)
        } else {
            e
        }
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user": user_json(id.config(), &created)})),
    )
        .into_response())
}

async fn get_user(
    State(id): State<St>,
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> Result<Response, ApiError> {
    let c = caller(&id, &headers).await?;
    if !(c.user.id == uid || c.has_role("admin")) {
        return Err(ApiError::forbidden("identity:get_user"));
    }
    let u = blocking(&id, move |i| i.get_user(&uid)).await?;
    Ok(Json(json!({"user": user_json(id.config(), &u)})).into_response())
}

async fn update_user(
    State(id): State<St>,
    headers: HeaderMap,
    Path(uid): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    admin(&id, &headers, "identity:update_user").await?;
    let body = parse_body(body)?;
    let u = member(&body, "user")?;
    let patch = UserPatch {
        name: opt_str(u, "name")?.map(str::to_owned),
        password: opt_str(u, "password")?.map(str::to_owned),
        enabled: opt_bool(u, "enabled")?,
        default_project: nullable_str(u, "default_project_id")?,
        description: nullable_str(u, "description")?,
    };
    let updated = blocking(&id, move |i| i.update_user(&uid, &patch)).await?;
    Ok(Json(json!({"user": user_json(id.config(), &updated)})).into_response())
}

async fn delete_user(
    State(id): State<St>,
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> Result<Response, ApiError> {
    admin(&id, &headers, "identity:delete_user").await?;
    blocking(&id, move |i| i.delete_user(&uid)).await?;
    Ok(no_content())
}

async fn user_projects(
    State(id): State<St>,
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> Result<Response, ApiError> {
    let c = caller(&id, &headers).await?;
    if !(c.user.id == uid || c.has_role("admin")) {
        return Err(ApiError::forbidden("identity:list_user_projects"));
    }
    let projects = blocking(&id, move |i| i.user_projects(&uid)).await?;
    let cfg = id.config();
    let list: Vec<Value> = projects.iter().map(|p| project_json(cfg, p)).collect();
    Ok(Json(json!({"projects": list, "links": list_links(cfg, "projects")})).into_response())
}

async fn change_password(
    State(id): State<St>,
    Path(uid): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = parse_body(body)?;
    let u = member(&body, "user")?;
    let original = opt_str(u, "original_password")?
        .ok_or_else(|| ApiError::bad_request("Expecting to find original_password in user."))?
        .to_owned();
    let password = opt_str(u, "password")?
        .ok_or_else(|| ApiError::bad_request("Expecting to find password in user."))?
        .to_owned();
    blocking(&id, move |i| i.change_password(&uid, &original, &password)).await?;
    Ok(no_content())
}

// ------------------------------------------------------------------ roles

async fn list_roles(State(id): State<St>, headers: HeaderMap, q: Q) -> Result<Response, ApiError> {
    admin(&id, &headers, "identity:list_roles").await?;
    let all = blocking(&id, Identity::list_roles).await?;
    let cfg = id.config();
    let list: Vec<Value> = all
        .iter()
        .filter(|r| q.get("name").is_none_or(|n| n == r.name))
        .filter(|_| q.get("domain_id").is_none())
        .map(|r| role_json(cfg, r))
        .collect();
    Ok(Json(json!({"roles": list, "links": list_links(cfg, "roles")})).into_response())
}

async fn get_role(
    State(id): State<St>,
    headers: HeaderMap,
    Path(rid): Path<String>,
) -> Result<Response, ApiError> {
    admin(&id, &headers, "identity:get_role").await?;
    let r = blocking(&id, move |i| i.get_role(&rid)).await?;
    Ok(Json(json!({"role": role_json(id.config(), &r)})).into_response())
}

fn assignment_json(cfg: &IdentityConfig, a: &RoleAssignment, names: bool) -> Value {
    let b = base(cfg);
    let granted = a.prior_role_id.as_deref().unwrap_or(&a.role_id);
    let mut links = Map::new();
    links.insert(
        "assignment".into(),
        json!(format!(
            "{b}/projects/{}/users/{}/roles/{granted}",
            a.project_id, a.user_id
        )),
    );
    if let Some(prior) = &a.prior_role_id {
        links.insert(
            "prior_role".into(),
            json!(format!("{b}/roles/{prior}/implies/{}", a.role_id)),
        );
    }
    let default = domain_ref(DEFAULT_DOMAIN_ID, crate::DEFAULT_DOMAIN_NAME);
    if names {
        json!({
            "role": {"id": a.role_id, "name": a.role_name},
            "user": {"id": a.user_id, "name": a.user_name, "domain": default},
            "scope": {"project": {"id": a.project_id, "name": a.project_name, "domain": default}},
            "links": links,
        })
    } else {
        json!({
            "role": {"id": a.role_id},
            "user": {"id": a.user_id},
            "scope": {"project": {"id": a.project_id}},
            "links": links,
        })
    }
}

async fn role_assignments(
    State(id): State<St>,
    headers: HeaderMap,
    q: Q,
) -> Result<Response, ApiError> {
    admin(&id, &headers, "identity:list_role_assignments").await?;
    let effective = q.flag("effective");
    let all = if effective {
        blocking(&id, Identity::effective_role_assignments).await?
    } else {
        blocking(&id, Identity::role_assignments).await?
    };
    let cfg = id.config();
    // Groups, domain and system scopes and inheritance do not exist here: filtering on them
    // matches nothing.
    let impossible = ["group.id", "scope.domain.id", "scope.system"]
        .iter()
        .any(|k| q.get(k).is_some())
        || q.get("scope.OS-INHERIT:inherited_to").is_some();
    let names = q.flag("include_names");
    let list: Vec<Value> = if impossible {
        Vec::new()
    } else {
        all.iter()
            .filter(|a| q.get("user.id").is_none_or(|u| u == a.user_id))
            .filter(|a| q.get("scope.project.id").is_none_or(|p| p == a.project_id))
            .filter(|a| q.get("role.id").is_none_or(|r| r == a.role_id))
            .map(|a| assignment_json(cfg, a, names))
            .collect()
    };
    Ok(
        Json(json!({"role_assignments": list, "links": list_links(cfg, "role_assignments")}))
            .into_response(),
    )
}

// ------------------------------------------------------------------ domains

async fn list_domains(
    State(id): State<St>,
    headers: HeaderMap,
    q: Q,
) -> Result<Response, ApiError> {
    caller(&id, &headers).await?;
    let all = blocking(&id, Identity::list_domains).await?;
    let cfg = id.config();
    let list: Vec<Value> = filter_name_enabled(&q, &all, |d| &d.name, |d| &d.id, |d| d.enabled)?
        .into_iter()
        .map(|d| domain_json(cfg, d))
        .collect();
    Ok(Json(json!({"domains": list, "links": list_links(cfg, "domains")})).into_response())
}

async fn get_domain(
    State(id): State<St>,
    headers: HeaderMap,
    Path(did): Path<String>,
) -> Result<Response, ApiError> {
    caller(&id, &headers).await?;
    let d = blocking(&id, move |i| i.get_domain(&did)).await?;
    Ok(Json(json!({"domain": domain_json(id.config(), &d)})).into_response())
}
