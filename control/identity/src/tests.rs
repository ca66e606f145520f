//! Tests: the store, the REST API through `tower::ServiceExt::oneshot`, noauth, and the
//! Keystone mode against this crate's own server on a real TCP listener.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

use super::*;

const PUBLIC: &str = "http://127.0.0.1:8776";
const WWW: &str = "Keystone uri=\"http://127.0.0.1:8776/identity\"";

struct Env {
    _dir: TempDir,
    id: Arc<Identity>,
    app: Router,
    boot: Bootstrap,
}

fn cfg() -> IdentityConfig {
    IdentityConfig {
        public_url: format!("{PUBLIC}/"),
        region: "RegionOne".into(),
        token_ttl_secs: 3600,
    }
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = Arc::new(Identity::open(&dir.path().join("identity.db"), cfg()).expect("open"));
    let boot = id
        .bootstrap("admin", "adminpw", "admin")
        .expect("bootstrap");
    let app = mount(Arc::clone(&id));
    Env {
        _dir: dir,
        id,
        app,
        boot,
    }
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    raw: Vec<u8>,
}

async fn call_raw(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Resp {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let raw = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
        raw,
    }
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let headers: Vec<(&str, &str)> = token.map(|t| ("x-auth-token", t)).into_iter().collect();
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    call_raw(app, method, uri, &headers, body).await
}

fn password_body(user: &str, password: &str, project: Option<&str>) -> Value {
    let mut auth = json!({"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"name": "Default"}, "password": password}}}});
    if let Some(p) = project {
        auth["scope"] = json!({"project": {"name": p, "domain": {"id": "default"}}});
    }
    json!({ "auth": auth })
}

async fn login(app: &Router, user: &str, password: &str, project: Option<&str>) -> Resp {
    call(
        app,
        Method::POST,
        "/identity/v3/auth/tokens",
        None,
        Some(password_body(user, password, project)),
    )
    .await
}

async fn token(app: &Router, user: &str, password: &str, project: Option<&str>) -> String {
    let r = login(app, user, password, project).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.headers["x-subject-token"]
        .to_str()
        .expect("token")
        .to_owned()
}

fn assert_keystone_error(r: &Resp, code: u16) {
    assert_eq!(r.status.as_u16(), code, "{}", r.body);
    assert_eq!(r.body["error"]["code"], code, "{}", r.body);
    assert!(r.body["error"]["title"].is_string(), "{}", r.body);
    assert!(r.body["error"]["message"].is_string(), "{}", r.body);
    if code == 401 {
        assert_eq!(r.headers["www-authenticate"], WWW);
    }
}

fn is_keystone_time(s: &str) -> bool {
    // %Y-%m-%dT%H:%M:%S.%6fZ
    let b = s.as_bytes();
    b.len() == 27
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[26] == b'Z'
        && crate::time::parse_iso8601(s).is_some()
}

/// A user with `role` on a new project `project` (created if needed).
fn user_on(e: &Env, user: &str, project: &str, role: &str) -> (User, Project) {
    let p =
        e.id.get_project(project)
            .or_else(|_| e.id.create_project(project, None))
            .expect("project");
    let u =
        e.id.get_user(user)
            .or_else(|_| e.id.create_user(user, "pw", Some(&p.id)))
            .expect("user");
    e.id.grant_role(user, project, role).expect("grant");
    (u, p)
}

// ------------------------------------------------------------------ discovery

#[tokio::test]
async fn version_discovery() {
    let e = env();
    let r = call(&e.app, Method::GET, "/identity", None, None).await;
    assert_eq!(r.status, StatusCode::MULTIPLE_CHOICES);
    let v = &r.body["versions"]["values"][0];
    assert_eq!(v["id"], "v3.14");
    assert_eq!(v["status"], "stable");
    assert_eq!(v["links"][0]["href"], format!("{PUBLIC}/identity/v3/"));
    let r = call(&e.app, Method::GET, "/identity/", None, None).await;
    assert_eq!(r.status, StatusCode::MULTIPLE_CHOICES);
    // Nested by hand, the router answers the same under the mount point.
    let nested = Router::new().nest("/identity", router(Arc::clone(&e.id)));
    let r = call(&nested, Method::GET, "/identity/v3", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    for path in ["/identity/v3", "/identity/v3/"] {
        let r = call(&e.app, Method::GET, path, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let v = &r.body["version"];
        assert_eq!(v["id"], "v3.14");
        assert_eq!(v["links"][0]["rel"], "self");
        assert_eq!(v["links"][0]["href"], format!("{PUBLIC}/identity/v3/"));
        assert_eq!(
            v["media-types"][0]["type"],
            "application/vnd.openstack.identity-v3+json"
        );
    }
}

#[tokio::test]
async fn unknown_route_and_method_are_keystone_errors() {
    let e = env();
    let r = call(&e.app, Method::GET, "/identity/v3/nothing", None, None).await;
    assert_keystone_error(&r, 404);
    let r = call(&e.app, Method::PUT, "/identity/v3/auth/tokens", None, None).await;
    assert_keystone_error(&r, 405);
}

// ------------------------------------------------------------------ tokens

#[tokio::test]
async fn password_token_by_names_has_keystone_shape() {
    let e = env();
    let r = login(&e.app, "admin", "adminpw", Some("admin")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let tok = r.headers["x-subject-token"].to_str().expect("str");
    assert_eq!(tok.len(), 43);
    let t = &r.body["token"];
    assert_eq!(t["methods"], json!(["password"]));
    assert_eq!(t["user"]["id"], e.boot.user_id);
    assert_eq!(t["user"]["name"], "admin");
    assert_eq!(
        t["user"]["domain"],
        json!({"id": "default", "name": "Default"})
    );
    assert!(t["user"]["password_expires_at"].is_null());
    assert_eq!(t["project"]["id"], e.boot.project_id);
    assert_eq!(t["project"]["name"], "admin");
    assert_eq!(t["project"]["domain"]["id"], "default");
    assert_eq!(t["is_domain"], false);
    let roles: Vec<&str> = t["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(roles, ["admin", "member", "reader"]);
    assert!(t["roles"][0]["id"].as_str().expect("id").len() == 32);
    assert!(is_keystone_time(t["expires_at"].as_str().expect("exp")));
    assert!(is_keystone_time(t["issued_at"].as_str().expect("iss")));
    let exp = time::parse_iso8601(t["expires_at"].as_str().expect("s")).expect("t");
    let iss = time::parse_iso8601(t["issued_at"].as_str().expect("s")).expect("t");
    assert_eq!(exp - iss, 3600 * 1_000_000);
    assert_eq!(t["audit_ids"].as_array().expect("audit").len(), 1);

    let catalog = t["catalog"].as_array().expect("catalog");
    let kinds: Vec<&str> = catalog
        .iter()
        .map(|c| c["type"].as_str().expect("type"))
        .collect();
    assert_eq!(kinds, ["block-storage", "volumev3", "identity", "image"]);
    assert_eq!(catalog[0]["name"], "cinder");
    assert_eq!(catalog[1]["name"], "cinderv3");
    assert_eq!(catalog[2]["name"], "keystone");
    assert_eq!(catalog[3]["name"], "glance");
    assert_eq!(catalog[3]["endpoints"][0]["url"], format!("{PUBLIC}/image"));
    let want = format!("{PUBLIC}/v3/{}", e.boot.project_id);
    for svc in &catalog[..2] {
        let eps = svc["endpoints"].as_array().expect("endpoints");
        let ifaces: Vec<&str> = eps
            .iter()
            .map(|x| x["interface"].as_str().expect("i"))
            .collect();
        assert_eq!(ifaces, ["public", "internal", "admin"]);
        for ep in eps {
            assert_eq!(ep["url"], want);
            assert_eq!(ep["region"], "RegionOne");
            assert_eq!(ep["region_id"], "RegionOne");
            assert_eq!(ep["id"].as_str().expect("id").len(), 32);
        }
    }
    assert_eq!(
        catalog[2]["endpoints"][0]["url"],
        format!("{PUBLIC}/identity")
    );

    // ?nocatalog
    let r = call(
        &e.app,
        Method::POST,
        "/identity/v3/auth/tokens?nocatalog",
        None,
        Some(password_body("admin", "adminpw", Some("admin"))),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.body["token"].get("catalog").is_none());
}

#[tokio::test]
async fn password_token_by_ids() {
    let e = env();
    let body = json!({"auth": {
        "identity": {"methods": ["password"],
                     "password": {"user": {"id": e.boot.user_id, "password": "adminpw"}}},
        "scope": {"project": {"id": e.boot.project_id}}}});
    let r = call(
        &e.app,
        Method::POST,
        "/identity/v3/auth/tokens",
        None,
        Some(body),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["token"]["project"]["id"], e.boot.project_id);
}

#[tokio::test]
async fn wrong_credentials_are_401_with_json() {
    let e = env();
    let r = login(&e.app, "admin", "wrong", Some("admin")).await;
    assert_keystone_error(&r, 401);
    assert!(r.headers.get("x-subject-token").is_none());
    let r = login(&e.app, "nobody", "adminpw", Some("admin")).await;
    assert_keystone_error(&r, 401);
    // A user name in an unknown domain.
    let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"name": "Elsewhere"}, "password": "adminpw"}}}}});
    let r = call(
        &e.app,
        Method::POST,
        "/identity/v3/auth/tokens",
        None,
        Some(body),
    )
    .await;
    assert_keystone_error(&r, 401);
}

#[tokio::test]
async fn disabled_user_cannot_authenticate_and_its_tokens_die() {
    let e = env();
    user_on(&e, "alice", "demo", "member");
    let t = token(&e.app, "alice", "pw", Some("demo")).await;
    e.id.update_user(
        "alice",
        &UserPatch {
            enabled: Some(false),
            ..UserPatch::default()
        },
    )
    .expect("disable");
    let r = login(&e.app, "alice", "pw", Some("demo")).await;
    assert_keystone_error(&r, 401);
    assert!(matches!(
        e.id.validate_token(&t),
        Err(AuthError::InvalidToken { .. })
    ));
}

#[tokio::test]
async fn unknown_or_disabled_project_is_401() {
    let e = env();
    let r = login(&e.app, "admin", "adminpw", Some("nope")).await;
    assert_keystone_error(&r, 401);
    user_on(&e, "admin", "demo", "member");
    let t = token(&e.app, "admin", "adminpw", Some("demo")).await;
    e.id.update_project(
        "demo",
        &ProjectPatch {
            enabled: Some(false),
            ..ProjectPatch::default()
        },
    )
    .expect("disable");
    let r = login(&e.app, "admin", "adminpw", Some("demo")).await;
    assert_keystone_error(&r, 401);
    assert!(e.id.validate_token(&t).is_err());
}

#[tokio::test]
async fn scope_without_role_is_401_and_unscoped_works() {
    let e = env();
    e.id.create_user("bob", "bobpw", None).expect("bob");
    let r = login(&e.app, "bob", "bobpw", Some("admin")).await;
    assert_keystone_error(&r, 401);
    // No scope, no default project: unscoped.
    let r = login(&e.app, "bob", "bobpw", None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let t = &r.body["token"];
    assert!(t.get("project").is_none());
    assert!(t.get("catalog").is_none());
    assert_eq!(t["roles"], json!([]));
    let tok = r.headers["x-subject-token"].to_str().expect("s");
    let ctx = e.id.validate_token(tok).expect("valid");
    assert_eq!(ctx.project_id, "");
    assert!(ctx.roles.is_empty());
    assert!(!ctx.is_admin);
}

#[tokio::test]
async fn no_scope_uses_the_default_project_explicit_unscoped_does_not() {
    let e = env();
    let (_, p) = user_on(&e, "carol", "demo", "reader");
    let r = login(&e.app, "carol", "pw", None).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["token"]["project"]["id"], p.id);
    assert_eq!(r.body["token"]["roles"][0]["name"], "reader");
    let mut body = password_body("carol", "pw", None);
    body["auth"]["scope"] = json!("unscoped");
    let r = call(
        &e.app,
        Method::POST,
        "/identity/v3/auth/tokens",
        None,
        Some(body),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.body["token"].get("project").is_none());
}

#[tokio::test]
async fn expired_token_is_rejected() {
    let e = env();
    let subject = token(&e.app, "admin", "adminpw", Some("admin")).await;
    e.id.expire_all_tokens_for_test().expect("expire");
    assert!(matches!(
        e.id.validate_token(&subject),
        Err(AuthError::InvalidToken { .. })
    ));
    let admin = token(&e.app, "admin", "adminpw", Some("admin")).await;
    let r = call_raw(
        &e.app,
        Method::GET,
        "/identity/v3/auth/tokens",
        &[("x-auth-token", &admin), ("x-subject-token", &subject)],
        Vec::new(),
    )
    .await;
    assert_keystone_error(&r, 404);
    // As the caller's own token it is a 401.
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/users",
        Some(&subject),
        None,
    )
    .await;
    assert_keystone_error(&r, 401);
    // A zero TTL gives tokens that are dead at birth.
    let dir = tempfile::tempdir().expect("tmp");
    let short = Identity::open(
        &dir.path().join("i.db"),
        IdentityConfig {
            token_ttl_secs: 0,
            ..cfg()
        },
    )
    .expect("open");
    short.bootstrap("a", "b", "c").expect("boot");
    let t = short
        .issue_token(
            &Credentials::Password {
                user: UserRef::Name {
                    name: "a".into(),
                    domain: DomainRef::Id("default".into()),
                },
                password: "b".into(),
            },
            &Scope::Default,
        )
        .expect("issue");
    assert!(short.validate_token(&t.token).is_err());
}

#[tokio::test]
async fn check_head_and_revoke_tokens() {
    let e = env();
    let admin = token(&e.app, "admin", "adminpw", Some("admin")).await;
    user_on(&e, "bob", "demo", "member");
    let bob = token(&e.app, "bob", "pw", Some("demo")).await;
    // A user may check its own token.
    let r = call_raw(
        &e.app,
        Method::GET,
        "/identity/v3/auth/tokens",
        &[("x-auth-token", &bob), ("x-subject-token", &bob)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers["x-subject-token"], bob.as_str());
    assert_eq!(r.body["token"]["user"]["name"], "bob");
    assert!(r.body["token"]["catalog"].is_array());
    // ... not someone else's.
    let r = call_raw(
        &e.app,
        Method::GET,
        "/identity/v3/auth/tokens",
        &[("x-auth-token", &bob), ("x-subject-token", &admin)],
        Vec::new(),
    )
    .await;
    assert_keystone_error(&r, 403);
    // The admin may check any, and HEAD answers 200 without a body.
    let r = call_raw(
        &e.app,
        Method::HEAD,
        "/identity/v3/auth/tokens",
        &[("x-auth-token", &admin), ("x-subject-token", &bob)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.raw.is_empty());
    // Missing subject: 400; missing caller: 401.
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/auth/tokens",
        Some(&admin),
        None,
    )
    .await;
    assert_keystone_error(&r, 400);
    let r = call_raw(
        &e.app,
        Method::GET,
        "/identity/v3/auth/tokens",
        &[("x-subject-token", &bob)],
        Vec::new(),
    )
    .await;
    assert_keystone_error(&r, 401);
    // Revoke: 204, then the token is gone everywhere.
    let r = call_raw(
        &e.app,
        Method::DELETE,
        "/identity/v3/auth/tokens",
        &[("x-auth-token", &admin), ("x-subject-token", &bob)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    for m in [Method::GET, Method::DELETE] {
        let r = call_raw(
            &e.app,
            m,
            "/identity/v3/auth/tokens",
            &[("x-auth-token", &admin), ("x-subject-token", &bob)],
            Vec::new(),
        )
        .await;
        assert_keystone_error(&r, 404);
    }
    let r = call_raw(
        &e.app,
        Method::HEAD,
        "/identity/v3/auth/tokens",
        &[("x-auth-token", &admin), ("x-subject-token", &bob)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let auth = Auth::Builtin(Arc::clone(&e.id));
    let mut h = HeaderMap::new();
    h.insert("x-auth-token", bob.parse().expect("hv"));
    let err = auth.authenticate(&h).await.expect_err("revoked");
    assert_eq!(err.status_code(), StatusCode::UNAUTHORIZED);
    assert_eq!(err.www_authenticate().as_deref(), Some(WWW));
}

#[tokio::test]
async fn rescoping_needs_a_role_on_the_new_project() {
    let e = env();
    let (_, a) = user_on(&e, "dave", "project-a", "member");
    let b = e.id.create_project("project-b", None).expect("b");
    let ta = token(&e.app, "dave", "pw", Some("project-a")).await;
    let rescope = |project: &str| {
        json!({"auth": {"identity": {"methods": ["token"], "token": {"id": ta}},
                        "scope": {"project": {"id": project}}}})
    };
    let r = call(
        &e.app,
        Method::POST,
        "/identity/v3/auth/tokens",
        None,
        Some(rescope(&b.id)),
    )
    .await;
    assert_keystone_error(&r, 401);
    e.id.grant_role("dave", "project-b", "reader")
        .expect("grant");
    let r = call(
        &e.app,
        Method::POST,
        "/identity/v3/auth/tokens",
        None,
        Some(rescope(&b.id)),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let t = &r.body["token"];
    assert_eq!(t["project"]["id"], b.id);
    assert_eq!(t["methods"], json!(["token", "password"]));
    assert_eq!(t["audit_ids"].as_array().expect("a").len(), 2);
    let orig = e.id.token_info(&ta).expect("ok").expect("valid");
    assert_eq!(t["expires_at"], orig.expires_at);
    assert_eq!(t["audit_ids"][1], orig.audit_ids[0]);
    assert_ne!(a.id, b.id);
    // A bad token cannot be rescoped.
    let bad = json!({"auth": {"identity": {"methods": ["token"], "token": {"id": "nope"}}}});
    let r = call(
        &e.app,
        Method::POST,
        "/identity/v3/auth/tokens",
        None,
        Some(bad),
    )
    .await;
    assert_keystone_error(&r, 401);
}

#[tokio::test]
async fn revoking_a_role_takes_effect_at_once() {
    let e = env();
    user_on(&e, "erin", "demo", "member");
    e.id.grant_role("erin", "demo", "service").expect("grant");
    let t = token(&e.app, "erin", "pw", Some("demo")).await;
    let ctx = e.id.validate_token(&t).expect("valid");
    assert_eq!(ctx.roles, ["member", "reader", "service"]);
    e.id.revoke_role("erin", "demo", "member").expect("revoke");
    let ctx = e.id.validate_token(&t).expect("still valid");
    assert_eq!(ctx.roles, ["service"]);
    e.id.revoke_role("erin", "demo", "service").expect("revoke");
    assert!(e.id.validate_token(&t).is_err());
    assert!(matches!(
        e.id.revoke_role("erin", "demo", "service"),
        Err(IdentityError::NotFound { .. })
    ));
}

#[tokio::test]
async fn malformed_requests_are_400_and_big_ones_413() {
    let e = env();
    let url = "/identity/v3/auth/tokens";
    let r = call_raw(&e.app, Method::POST, url, &[], b"{not json".to_vec()).await;
    assert_keystone_error(&r, 400);
    let r = call_raw(&e.app, Method::POST, url, &[], b"[1]".to_vec()).await;
    assert_keystone_error(&r, 400);
    let r = call(&e.app, Method::POST, url, None, Some(json!({"auth": {}}))).await;
    assert_keystone_error(&r, 400);
    let no_methods = json!({"auth": {"identity": {"methods": []}}});
    let r = call(&e.app, Method::POST, url, None, Some(no_methods)).await;
    assert_keystone_error(&r, 400);
    let totp = json!({"auth": {"identity": {"methods": ["totp"], "totp": {}}}});
    let r = call(&e.app, Method::POST, url, None, Some(totp)).await;
    assert_keystone_error(&r, 401);
    let no_domain = json!({"auth": {"identity": {"methods": ["password"],
        "password": {"user": {"name": "admin", "password": "adminpw"}}}}});
    let r = call(&e.app, Method::POST, url, None, Some(no_domain)).await;
    assert_keystone_error(&r, 400);
    let domain_scope = json!({"auth": {"identity": {"methods": ["password"],
        "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": "adminpw"}}},
        "scope": {"domain": {"id": "default"}}}});
    let r = call(&e.app, Method::POST, url, None, Some(domain_scope)).await;
    assert_keystone_error(&r, 401);
    let big = vec![b' '; BODY_LIMIT + 1];
    let r = call_raw(&e.app, Method::POST, url, &[], big).await;
    assert_keystone_error(&r, 413);
    let admin = token(&e.app, "admin", "adminpw", Some("admin")).await;
    let r = call_raw(
        &e.app,
        Method::POST,
        "/identity/v3/projects",
        &[("x-auth-token", &admin)],
        b"{\"project\":".to_vec(),
    )
    .await;
    assert_keystone_error(&r, 400);
}

// ------------------------------------------------------------------ admin API

#[tokio::test]
async fn non_admin_gets_403_on_admin_endpoints() {
    let e = env();
    let (bob, p) = user_on(&e, "bob", "demo", "member");
    let t = token(&e.app, "bob", "pw", Some("demo")).await;
    let gets = [
        "/identity/v3/projects".to_owned(),
        "/identity/v3/users".to_owned(),
        "/identity/v3/roles".to_owned(),
        "/identity/v3/role_assignments".to_owned(),
        format!("/identity/v3/users/{}", e.boot.user_id),
        format!("/identity/v3/projects/{}", e.boot.project_id),
        format!("/identity/v3/projects/{}/users/{}/roles", p.id, bob.id),
    ];
    for uri in &gets {
        let r = call(&e.app, Method::GET, uri, Some(&t), None).await;
        assert_keystone_error(&r, 403);
    }
    let r = call(
        &e.app,
        Method::POST,
        "/identity/v3/projects",
        Some(&t),
        Some(json!({"project": {"name": "x"}})),
    )
    .await;
    assert_keystone_error(&r, 403);
    let r = call(
        &e.app,
        Method::POST,
        "/identity/v3/users",
        Some(&t),
        Some(json!({"user": {"name": "x"}})),
    )
    .await;
    assert_keystone_error(&r, 403);
    let admin_role = e.id.get_role("admin").expect("role");
    let uri = format!(
        "/identity/v3/projects/{}/users/{}/roles/{}",
        p.id, bob.id, admin_role.id
    );
    for m in [Method::PUT, Method::DELETE] {
        let r = call(&e.app, m, &uri, Some(&t), None).await;
        assert_keystone_error(&r, 403);
    }
    let r = call(
        &e.app,
        Method::DELETE,
        &format!("/identity/v3/projects/{}", p.id),
        Some(&t),
        None,
    )
    .await;
    assert_keystone_error(&r, 403);
    // What a user may see of itself.
    let r = call(
        &e.app,
        Method::GET,
        &format!("/identity/v3/users/{}", bob.id),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["user"]["name"], "bob");
    let r = call(
        &e.app,
        Method::GET,
        &format!("/identity/v3/projects/{}", p.id),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(
        &e.app,
        Method::GET,
        &format!("/identity/v3/users/{}/projects", bob.id),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["projects"][0]["id"], p.id);
    let r = call(
        &e.app,
        Method::GET,
        &format!("/identity/v3/users/{}/projects", e.boot.user_id),
        Some(&t),
        None,
    )
    .await;
    assert_keystone_error(&r, 403);
    // No token at all: 401.
    let r = call(&e.app, Method::GET, "/identity/v3/projects", None, None).await;
    assert_keystone_error(&r, 401);
}

#[tokio::test]
async fn openstackclient_style_admin_flow() {
    let e = env();
    let admin = token(&e.app, "admin", "adminpw", Some("admin")).await;
    let t = Some(admin.as_str());
    // openstack project create demo --description d
    let r = call(
        &e.app,
        Method::POST,
        "/identity/v3/projects",
        t,
        Some(
            json!({"project": {"name": "demo", "description": "d", "domain_id": "default",
                                "enabled": true, "parent_id": "default"}}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let pid = r.body["project"]["id"].as_str().expect("id").to_owned();
    assert_eq!(pid.len(), 32);
    assert_eq!(r.body["project"]["description"], "d");
    assert_eq!(r.body["project"]["is_domain"], false);
    assert_eq!(
        r.body["project"]["links"]["self"],
        format!("{PUBLIC}/identity/v3/projects/{pid}")
    );
    let r = call(
        &e.app,
        Method::POST,
        "/identity/v3/projects",
        t,
        Some(json!({"project": {"name": "demo"}})),
    )
    .await;
    assert_keystone_error(&r, 409);
    let r = call(
        &e.app,
        Method::POST,
        "/identity/v3/projects",
        t,
        Some(json!({"project": {"name": "x", "domain_id": "nope"}})),
    )
    .await;
    assert_keystone_error(&r, 400);
    // openstack project list / show by name (GET by id fails, then ?name=).
    let r = call(&e.app, Method::GET, "/identity/v3/projects", t, None).await;
    assert_eq!(r.body["projects"].as_array().expect("list").len(), 2);
    assert!(r.body["links"]["next"].is_null());
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/projects?name=demo&domain_id=default",
        t,
        None,
    )
    .await;
    assert_eq!(r.body["projects"].as_array().expect("list").len(), 1);
    assert_eq!(r.body["projects"][0]["id"], pid);
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/projects?name=none",
        t,
        None,
    )
    .await;
    assert_eq!(r.body["projects"], json!([]));
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/projects/0123456789abcdef0123456789abcdef",
        t,
        None,
    )
    .await;
    assert_keystone_error(&r, 404);
    // openstack project set --disable / --description
    let r = call(
        &e.app,
        Method::PATCH,
        &format!("/identity/v3/projects/{pid}"),
        t,
        Some(json!({"project": {"description": null, "enabled": false}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["project"]["description"].is_null());
    assert_eq!(r.body["project"]["enabled"], false);
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/projects?enabled=false",
        t,
        None,
    )
    .await;
    assert_eq!(r.body["projects"][0]["id"], pid);
    call(
        &e.app,
        Method::PATCH,
        &format!("/identity/v3/projects/{pid}"),
        t,
        Some(json!({"project": {"enabled": true}})),
    )
    .await;

    // openstack user create --password pw --project demo alice
    let r = call(
        &e.app,
        Method::POST,
        "/identity/v3/users",
        t,
        Some(
            json!({"user": {"name": "alice", "password": "alicepw", "default_project_id": pid,
                             "domain_id": "default", "enabled": true}}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let uid = r.body["user"]["id"].as_str().expect("id").to_owned();
    assert_eq!(r.body["user"]["default_project_id"], pid);
    assert!(r.body["user"].get("password").is_none());
    let r = call(
        &e.app,
        Method::POST,
        "/identity/v3/users",
        t,
        Some(json!({"user": {"name": "alice"}})),
    )
    .await;
    assert_keystone_error(&r, 409);
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/users?name=alice",
        t,
        None,
    )
    .await;
    assert_eq!(r.body["users"][0]["id"], uid);
    let r = call(&e.app, Method::GET, "/identity/v3/users", t, None).await;
    assert_eq!(r.body["users"].as_array().expect("users").len(), 2);
    let r = call(
        &e.app,
        Method::GET,
        &format!("/identity/v3/users/{uid}"),
        t,
        None,
    )
    .await;
    assert_eq!(r.body["user"]["name"], "alice");

    // openstack role list; role add --user alice --project demo member
    let r = call(&e.app, Method::GET, "/identity/v3/roles", t, None).await;
    let names: Vec<&str> = r.body["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .map(|r| r["name"].as_str().expect("n"))
        .collect();
    assert_eq!(names, ["admin", "member", "reader", "service"]);
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/roles?name=member",
        t,
        None,
    )
    .await;
    let rid = r.body["roles"][0]["id"].as_str().expect("id").to_owned();
    let r = call(
        &e.app,
        Method::GET,
        &format!("/identity/v3/roles/{rid}"),
        t,
        None,
    )
    .await;
    assert_eq!(r.body["role"]["name"], "member");
    let grant = format!("/identity/v3/projects/{pid}/users/{uid}/roles/{rid}");
    let r = call(&e.app, Method::HEAD, &grant, t, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(&e.app, Method::PUT, &grant, t, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = call(&e.app, Method::PUT, &grant, t, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = call(&e.app, Method::HEAD, &grant, t, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = call(
        &e.app,
        Method::GET,
        &format!("/identity/v3/projects/{pid}/users/{uid}/roles"),
        t,
        None,
    )
    .await;
    assert_eq!(r.body["roles"][0]["name"], "member");
    let r = call(
        &e.app,
        Method::PUT,
        &format!("/identity/v3/projects/{pid}/users/{uid}/roles/nosuchrole"),
        t,
        None,
    )
    .await;
    assert_keystone_error(&r, 404);

    // openstack role assignment list [--names] [--effective] --user alice
    let r = call(
        &e.app,
        Method::GET,
        &format!("/identity/v3/role_assignments?user.id={uid}"),
        t,
        None,
    )
    .await;
    let list = r.body["role_assignments"].as_array().expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["role"]["id"], rid);
    assert_eq!(list[0]["scope"]["project"]["id"], pid);
    assert_eq!(list[0]["links"]["assignment"], format!("{PUBLIC}{grant}"));
    let r = call(
        &e.app,
        Method::GET,
        &format!("/identity/v3/role_assignments?user.id={uid}&effective&include_names=True"),
        t,
        None,
    )
    .await;
    let list = r.body["role_assignments"].as_array().expect("list");
    let names: Vec<&str> = list
        .iter()
        .map(|a| a["role"]["name"].as_str().expect("n"))
        .collect();
    assert_eq!(names, ["member", "reader"]);
    assert_eq!(list[0]["user"]["name"], "alice");
    assert_eq!(list[0]["scope"]["project"]["name"], "demo");
    let r = call(
        &e.app,
        Method::GET,
        &format!("/identity/v3/role_assignments?scope.project.id={pid}&role.id={rid}"),
        t,
        None,
    )
    .await;
    assert_eq!(r.body["role_assignments"].as_array().expect("l").len(), 1);
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/role_assignments?group.id=x",
        t,
        None,
    )
    .await;
    assert_eq!(r.body["role_assignments"], json!([]));
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/role_assignments",
        t,
        None,
    )
    .await;
    assert_eq!(r.body["role_assignments"].as_array().expect("l").len(), 2);

    // alice logs in with her new role; her unscoped login lands in her default project.
    let alice = token(&e.app, "alice", "alicepw", None).await;
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/auth/projects",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(r.body["projects"][0]["name"], "demo");
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/auth/catalog",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(
        r.body["catalog"][1]["endpoints"][0]["url"],
        format!("{PUBLIC}/v3/{pid}")
    );

    // openstack user set --disable / --password; user delete; project delete.
    let r = call(
        &e.app,
        Method::PATCH,
        &format!("/identity/v3/users/{uid}"),
        t,
        Some(json!({"user": {"password": "newpw", "default_project_id": null}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["user"].get("default_project_id").is_none());
    assert!(
        e.id.validate_token(&alice).is_err(),
        "password change revokes"
    );
    token(&e.app, "alice", "newpw", Some("demo")).await;
    let r = call(&e.app, Method::DELETE, &grant, t, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = call(&e.app, Method::DELETE, &grant, t, None).await;
    assert_keystone_error(&r, 404);
    let r = login(&e.app, "alice", "newpw", Some("demo")).await;
    assert_keystone_error(&r, 401);
    for path in [format!("users/{uid}"), format!("projects/{pid}")] {
        let uri = format!("/identity/v3/{path}");
        let r = call(&e.app, Method::DELETE, &uri, t, None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{path}");
        let r = call(&e.app, Method::DELETE, &uri, t, None).await;
        assert_keystone_error(&r, 404);
        let r = call(&e.app, Method::GET, &uri, t, None).await;
        assert_keystone_error(&r, 404);
    }
}

#[tokio::test]
async fn auth_helpers_and_domains() {
    let e = env();
    e.id.create_user("bob", "pw", None).expect("bob");
    let unscoped = token(&e.app, "bob", "pw", None).await;
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/auth/catalog",
        Some(&unscoped),
        None,
    )
    .await;
    assert_keystone_error(&r, 403);
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/auth/projects",
        Some(&unscoped),
        None,
    )
    .await;
    assert_eq!(r.body["projects"], json!([]));
    for p in ["auth/domains", "auth/system"] {
        let r = call(
            &e.app,
            Method::GET,
            &format!("/identity/v3/{p}"),
            Some(&unscoped),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{p}");
    }
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/domains",
        Some(&unscoped),
        None,
    )
    .await;
    assert_eq!(r.body["domains"][0]["id"], "default");
    assert_eq!(r.body["domains"][0]["name"], "Default");
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/domains?name=Default",
        Some(&unscoped),
        None,
    )
    .await;
    assert_eq!(r.body["domains"].as_array().expect("d").len(), 1);
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/domains/default",
        Some(&unscoped),
        None,
    )
    .await;
    assert_eq!(r.body["domain"]["enabled"], true);
    let r = call(
        &e.app,
        Method::GET,
        "/identity/v3/domains/other",
        Some(&unscoped),
        None,
    )
    .await;
    assert_keystone_error(&r, 404);
}

#[tokio::test]
async fn users_change_their_own_password() {
    let e = env();
    let bob = e.id.create_user("bob", "pw", None).expect("bob");
    let old = token(&e.app, "bob", "pw", None).await;
    let uri = format!("/identity/v3/users/{}/password", bob.id);
    let r = call(
        &e.app,
        Method::POST,
        &uri,
        None,
        Some(json!({"user": {"original_password": "bad", "password": "new"}})),
    )
    .await;
    assert_keystone_error(&r, 401);
    let r = call(
        &e.app,
        Method::POST,
        &uri,
        None,
        Some(json!({"user": {"original_password": "pw", "password": "new"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(e.id.validate_token(&old).is_err());
    token(&e.app, "bob", "new", None).await;
}

// ------------------------------------------------------------------ store

#[test]
fn migrations_are_idempotent_and_newer_schemas_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("sub").join("identity.db");
    let first = {
        let id = Identity::open(&path, cfg()).expect("open");
        assert_eq!(id.schema_version().expect("v"), 1);
        let b = id.bootstrap("admin", "pw", "admin").expect("boot");
        id.create_project("demo", Some("d")).expect("demo");
        (b, id.list_roles().expect("roles"))
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let id = Identity::open(&path, cfg()).expect("reopen");
    assert_eq!(id.schema_version().expect("v"), 1);
    assert_eq!(id.list_roles().expect("roles"), first.1);
    assert_eq!(id.list_projects().expect("p").len(), 2);
    let again = id.bootstrap("admin", "pw", "admin").expect("boot again");
    assert_eq!(again, first.0);
    assert_eq!(id.list_users().expect("u").len(), 1);
    assert_eq!(id.role_assignments().expect("a").len(), 1);
    drop(id);
    {
        let c = rusqlite::Connection::open(&path).expect("raw");
        c.pragma_update(None, "user_version", 99).expect("bump");
    }
    match Identity::open(&path, cfg()) {
        Err(IdentityError::SchemaTooNew { found, known }) => {
            assert_eq!((found, known), (99, 1));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[test]
fn bootstrap_resets_a_changed_password() {
    let dir = tempfile::tempdir().expect("tmp");
    let id = Identity::open(&dir.path().join("i.db"), cfg()).expect("open");
    id.bootstrap("admin", "one", "admin").expect("boot");
    let login = |pw: &str| {
        id.issue_token(
            &Credentials::Password {
                user: UserRef::Name {
                    name: "admin".into(),
                    domain: DomainRef::Name("Default".into()),
                },
                password: pw.into(),
            },
            &Scope::Project(ProjectRef::Name {
                name: "admin".into(),
                domain: DomainRef::Id("default".into()),
            }),
        )
    };
    let t = login("one").expect("login");
    assert!(t.info.has_role("admin"));
    id.bootstrap("admin", "one", "admin").expect("same");
    assert!(
        id.validate_token(&t.token).is_ok(),
        "same password keeps tokens"
    );
    id.bootstrap("admin", "two", "admin").expect("reset");
    assert!(matches!(login("one"), Err(IdentityError::Unauthorized(_))));
    login("two").expect("new password");
    assert!(id.validate_token(&t.token).is_err(), "reset revokes tokens");
    assert!(id.bootstrap("admin", "", "admin").is_err());
}

#[test]
fn admin_operations_by_name_or_id() {
    let dir = tempfile::tempdir().expect("tmp");
    let id = Identity::open(&dir.path().join("i.db"), cfg()).expect("open");
    let p = id.create_project("demo", None).expect("p");
    let u = id.create_user("alice", "pw", Some("demo")).expect("u");
    assert_eq!(u.default_project_id.as_deref(), Some(p.id.as_str()));
    assert!(matches!(
        id.create_user("alice", "pw", None),
        Err(IdentityError::Conflict(_))
    ));
    assert!(matches!(
        id.create_user("bob", "pw", Some("nope")),
        Err(IdentityError::NotFound {
            kind: "project",
            ..
        })
    ));
    assert!(matches!(
        id.create_user("", "pw", None),
        Err(IdentityError::Invalid(_))
    ));
    assert!(matches!(
        id.create_user("bob", "", None),
        Err(IdentityError::Invalid(_))
    ));
    id.grant_role(&u.id, "demo", "member")
        .expect("by ids and names");
    assert!(id.has_grant("alice", &p.id, "member").expect("has"));
    let roles = id.list_roles().expect("roles");
    let member = roles.iter().find(|r| r.name == "member").expect("member");
    assert!(
        id.has_grant("alice", "demo", &member.id)
            .expect("by role id")
    );
    let eff = id.effective_role_assignments().expect("eff");
    assert_eq!(eff.len(), 2);
    assert_eq!(eff[1].role_name, "reader");
    assert_eq!(eff[1].prior_role_id.as_deref(), Some(member.id.as_str()));
    assert_eq!(id.user_projects("alice").expect("projects")[0].id, p.id);
    id.set_password("alice", "pw2").expect("pw");
    assert!(matches!(
        id.set_password("nobody", "x"),
        Err(IdentityError::NotFound { .. })
    ));
    id.delete_project("demo").expect("delete");
    assert!(
        id.get_user("alice")
            .expect("u")
            .default_project_id
            .is_none()
    );
    assert!(id.role_assignments().expect("a").is_empty());
    id.delete_user("alice").expect("delete");
    assert!(id.list_users().expect("u").is_empty());
    assert!(matches!(
        id.delete_user("alice"),
        Err(IdentityError::NotFound { .. })
    ));
}

#[test]
fn secrets_are_redacted_in_debug() {
    let c = Credentials::Password {
        user: UserRef::Id("u".into()),
        password: "hunter2".into(),
    };
    assert!(!format!("{c:?}").contains("hunter2"));
    let ctx = noauth_context(Some("u:p"), "d", "d");
    assert!(!format!("{ctx:?}").contains("u:p"));
    let k = KeystoneConfig {
        auth_url: "http://k/v3".into(),
        username: "cinder".into(),
        password: "hunter2".into(),
        project_name: "service".into(),
        user_domain: "Default".into(),
        project_domain: "Default".into(),
        cache_ttl_secs: 300,
    };
    assert!(!format!("{k:?}").contains("hunter2"));
}

#[test]
fn openrc_is_shell_quoted() {
    let rc = openrc(
        "http://127.0.0.1:8776/identity/v3",
        "admin",
        "it's $HOME `x`",
        "admin",
        "RegionOne",
    );
    assert!(rc.contains("export OS_AUTH_URL='http://127.0.0.1:8776/identity/v3'\n"));
    assert!(rc.contains("export OS_PASSWORD='it'\\''s $HOME `x`'\n"));
    for k in [
        "OS_AUTH_TYPE='password'",
        "OS_USERNAME='admin'",
        "OS_PROJECT_NAME='admin'",
        "OS_USER_DOMAIN_ID='default'",
        "OS_PROJECT_DOMAIN_ID='default'",
        "OS_IDENTITY_API_VERSION='3'",
        "OS_REGION_NAME='RegionOne'",
    ] {
        assert!(rc.contains(k), "{k} in {rc}");
    }
    // The shell reads back exactly the password.
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("openrc");
    std::fs::write(&f, &rc).expect("write");
    if let Ok(out) = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(". '{}'; printf %s \"$OS_PASSWORD\"", f.display()))
        .output()
    {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's $HOME `x`");
    }
}

// ------------------------------------------------------------------ noauth

#[tokio::test]
async fn noauth_rules() {
    let auth = Auth::NoAuth {
        default_user: "admin".into(),
        default_project: "adminproj".into(),
    };
    let ctx_for = |token: Option<&str>| {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert("x-auth-token", t.parse().expect("hv"));
        }
        h
    };
    let c = auth
        .authenticate(&ctx_for(Some("alice:0123abcd")))
        .await
        .expect("ok");
    assert_eq!(
        (c.user_id.as_str(), c.project_id.as_str()),
        ("alice", "0123abcd")
    );
    assert!(c.is_admin);
    assert!(c.is_admin_project);
    assert_eq!(c.roles, ["admin", "member", "reader"]);
    assert_eq!(c.auth_token.as_deref(), Some("alice:0123abcd"));
    assert_eq!(c.domain_id, "default");
    let c = auth.authenticate(&ctx_for(Some("bob"))).await.expect("ok");
    assert_eq!((c.user_id.as_str(), c.project_id.as_str()), ("bob", "bob"));
    let c = auth.authenticate(&ctx_for(Some("bob:"))).await.expect("ok");
    assert_eq!(c.project_id, "bob");
    let c = auth.authenticate(&ctx_for(None)).await.expect("ok");
    assert_eq!(
        (c.user_id.as_str(), c.project_id.as_str()),
        ("admin", "adminproj")
    );
    assert!(c.is_admin);
    assert!(c.auth_token.is_none());
    let c = auth.authenticate(&ctx_for(Some(""))).await.expect("ok");
    assert_eq!(c.user_id, "admin");
}

#[tokio::test]
async fn builtin_auth_missing_and_valid_token() {
    let e = env();
    let auth = Auth::Builtin(Arc::clone(&e.id));
    let err = auth
        .authenticate(&HeaderMap::new())
        .await
        .expect_err("missing");
    assert!(matches!(err, AuthError::MissingToken { .. }));
    assert_eq!(err.status_code(), StatusCode::UNAUTHORIZED);
    assert_eq!(err.www_authenticate().as_deref(), Some(WWW));
    let t = token(&e.app, "admin", "adminpw", Some("admin")).await;
    let mut h = HeaderMap::new();
    h.insert("x-auth-token", t.parse().expect("hv"));
    let c = auth.authenticate(&h).await.expect("valid");
    assert_eq!(c.user_id, e.boot.user_id);
    assert_eq!(c.user_name, "admin");
    assert_eq!(c.project_id, e.boot.project_id);
    assert_eq!(c.project_name, "admin");
    assert_eq!(c.roles, ["admin", "member", "reader"]);
    assert!(c.is_admin && c.is_admin_project);
    assert!(c.expires_at.as_deref().is_some_and(is_keystone_time));
    assert_eq!(c.auth_token.as_deref(), Some(t.as_str()));
    h.insert("x-auth-token", "garbage".parse().expect("hv"));
    assert!(matches!(
        auth.authenticate(&h).await,
        Err(AuthError::InvalidToken { .. })
    ));
}

#[test]
fn auth_error_http_mapping() {
    let uri = Some("http://k/identity".to_owned());
    assert_eq!(
        AuthError::InvalidToken {
            www_authenticate_uri: uri.clone()
        }
        .www_authenticate()
        .as_deref(),
        Some("Keystone uri=\"http://k/identity\"")
    );
    assert_eq!(
        AuthError::MissingToken {
            www_authenticate_uri: None
        }
        .www_authenticate(),
        None
    );
    assert_eq!(
        AuthError::Unreachable("x".into()).status_code(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        AuthError::ServiceAuth("x".into()).status_code(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        AuthError::BadResponse("x".into()).status_code(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        AuthError::Internal("x".into()).status_code(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert!(
        KeystoneValidator::new(KeystoneConfig {
            auth_url: "ftp://x".into(),
            username: String::new(),
            password: String::new(),
            project_name: String::new(),
            user_domain: String::new(),
            project_domain: String::new(),
            cache_ttl_secs: 0,
        })
        .is_err()
    );
}

// ------------------------------------------------------------------ keystone mode

fn keystone_cfg(port: u16, password: &str, ttl: u64) -> KeystoneConfig {
    KeystoneConfig {
        auth_url: format!("http://127.0.0.1:{port}/identity/v3"),
        username: "cinder".into(),
        password: password.into(),
        project_name: "service".into(),
        user_domain: "Default".into(),
        project_domain: "default".into(),
        cache_ttl_secs: ttl,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_mode_against_the_builtin_server() {
    let e = env();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = e.app.clone();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    user_on(&e, "cinder", "service", "service");
    e.id.set_password("cinder", "cinderpw").expect("pw");
    user_on(&e, "alice", "demo", "member");

    let v = KeystoneValidator::new(keystone_cfg(port, "cinderpw", 300)).expect("validator");
    assert_eq!(
        v.www_authenticate_uri(),
        format!("http://127.0.0.1:{port}/identity")
    );
    let auth = Auth::Keystone(Arc::new(v));
    let Auth::Keystone(v) = &auth else {
        unreachable!()
    };
    let alice = token(&e.app, "alice", "pw", Some("demo")).await;
    let ctx = v.validate(&alice).await.expect("alice");
    let demo = e.id.get_project("demo").expect("demo");
    assert_eq!(ctx.user_name, "alice");
    assert_eq!(ctx.project_id, demo.id);
    assert_eq!(ctx.project_name, "demo");
    assert_eq!(ctx.roles, ["member", "reader"]);
    assert!(!ctx.is_admin);
    assert!(ctx.is_admin_project);
    assert_eq!(ctx.domain_id, "default");
    assert_eq!(ctx.auth_token.as_deref(), Some(alice.as_str()));
    assert!(ctx.expires_at.as_deref().is_some_and(is_keystone_time));
    let admin = token(&e.app, "admin", "adminpw", Some("admin")).await;
    let mut h = HeaderMap::new();
    h.insert("x-auth-token", admin.parse().expect("hv"));
    let actx = auth.authenticate(&h).await.expect("admin");
    assert!(actx.is_admin);
    assert_eq!(actx.project_id, e.boot.project_id);

    // Unknown token: 401 naming the external Keystone.
    let err = v.validate("garbage").await.expect_err("bad");
    assert!(matches!(err, AuthError::InvalidToken { .. }));
    assert_eq!(
        err.www_authenticate(),
        Some(format!("Keystone uri=\"http://127.0.0.1:{port}/identity\""))
    );
    assert!(matches!(
        auth.authenticate(&HeaderMap::new()).await,
        Err(AuthError::MissingToken { .. })
    ));

    // Cached: a revocation is seen only when the cache entry goes.
    e.id.revoke_token(&alice).expect("revoke");
    assert!(v.validate(&alice).await.is_ok(), "served from the cache");
    v.clear_cache();
    assert!(matches!(
        v.validate(&alice).await,
        Err(AuthError::InvalidToken { .. })
    ));
    let nocache = KeystoneValidator::new(keystone_cfg(port, "cinderpw", 0)).expect("v");
    let bob_t = {
        user_on(&e, "bob", "demo", "reader");
        token(&e.app, "bob", "pw", Some("demo")).await
    };
    assert!(nocache.validate(&bob_t).await.is_ok());
    e.id.revoke_token(&bob_t).expect("revoke");
    assert!(nocache.validate(&bob_t).await.is_err());

    // The service token is renewed when Keystone stops honouring it (a password change
    // revokes it here).
    e.id.set_password("cinder", "cinderpw")
        .expect("revokes service tokens");
    let fresh = token(&e.app, "alice", "pw", Some("demo")).await;
    assert_eq!(
        v.validate(&fresh).await.expect("renewed").user_name,
        "alice"
    );

    // Wrong service credentials: 503-class ServiceAuth.
    let wrong = KeystoneValidator::new(keystone_cfg(port, "nope", 300)).expect("v");
    let err = wrong.validate(&fresh).await.expect_err("refused");
    assert!(matches!(err, AuthError::ServiceAuth(_)), "{err:?}");
    assert_eq!(err.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    // A service user without admin or service role may not check others' tokens.
    user_on(&e, "plain", "service", "member");
    e.id.set_password("plain", "plainpw").expect("pw");
    let mut cfg = keystone_cfg(port, "plainpw", 300);
    cfg.username = "plain".into();
    let plain = KeystoneValidator::new(cfg).expect("v");
    let err = plain.validate(&fresh).await.expect_err("forbidden");
    assert!(matches!(err, AuthError::ServiceAuth(_)), "{err:?}");

    server.abort();

    // Nobody listening: Unreachable (503).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let gone = KeystoneValidator::new(keystone_cfg(closed, "x", 300)).expect("v");
    let err = gone.validate("t").await.expect_err("unreachable");
    assert!(matches!(err, AuthError::Unreachable(_)), "{err:?}");
    assert_eq!(err.status_code(), StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn validation_is_fast() {
    let dir = tempfile::tempdir().expect("tmp");
    let id = Identity::open(&dir.path().join("i.db"), cfg()).expect("open");
    id.bootstrap("admin", "pw", "admin").expect("boot");
    let t = id
        .issue_token(
            &Credentials::Password {
                user: UserRef::Name {
                    name: "admin".into(),
                    domain: DomainRef::Id("default".into()),
                },
                password: "pw".into(),
            },
            &Scope::Default,
        )
        .expect("issue");
    let n = 500;
    let start = std::time::Instant::now();
    for _ in 0..n {
        id.validate_token(&t.token).expect("valid");
    }
    let per = start.elapsed() / n;
    eprintln!("token validation: {per:?} per call");
    assert!(per < std::time::Duration::from_millis(5), "{per:?}");
}
