//! Fuzz target for the Cinder v3 REST API (`basalt-api`): hostile requests through
//! [`basalt_api::router`], in process, with no network and no datapath nodes.
//!
//! [`api_request`]'s input is one request, or a few separated by the byte `0x1E` (ASCII
//! record separator). Each request is
//!
//! ```text
//! M PATH \n VERSION \n BODY
//! ```
//!
//! - `M`, one byte: the method. `G` GET, `P` POST, `U` PUT, `D` DELETE, `A` PATCH, `H` HEAD,
//!   `O` OPTIONS, `X` an extension method (`BREW`); any other byte picks one of them by value.
//! - `PATH`, up to the first `\n`: the request target (`/v3/volumes?limit=1`); a `/` is put in
//!   front when missing. A target `http::Uri` refuses is a request no HTTP server would hand
//!   the router, so that request is skipped.
//! - `VERSION`, up to the next `\n`: the `OpenStack-API-Version` header's value (`volume
//!   3.71`); empty, or not a valid header value: no header.
//! - `BODY`: the rest, sent as is (no `Content-Type`, as many clients do).
//!
//! `$ID` in a path or body is replaced by the last `id` an earlier answer of the same input
//! showed (`{"volume": {"id": ...}}`), so a seed can create something and then act on it.
//!
//! Every input gets a fresh state: an in-memory metadata store with the default volume type,
//! a control plane without nodes, noauth (every request an admin's), Cinder's default policy,
//! on a current-thread runtime that is dropped (joining the blocking work the handlers left
//! running) before the next input. What must hold for every answer:
//!
//! - no panic (in the router, a handler or a blocking task the handler waits for);
//! - the status is below 500, or 503 (busy store, unreachable node: retry-able);
//! - an error (≥ 400) under `/v3` is a Cinder fault: a JSON object with exactly one key,
//!   whose value is an object with an integer `code` equal to the status and a string
//!   `message` (HEAD answers have no body, so they are not looked at).

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, Uri};
use basalt_api::{ApiConfig, ApiState};
use basalt_db::SqliteStore;
use basalt_identity::Auth;
use basalt_manager::Control;
use basalt_policy::Enforcer;
use basalt_scheduler::SchedulerConfig;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// Separates the requests of one input.
pub const REQUEST_SEPARATOR: u8 = 0x1e;

/// At most this many requests per input (the rest is ignored).
pub const MAX_REQUESTS: usize = 8;

/// One request of an input, as split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiInput<'a> {
    /// The method.
    pub method: Method,
    /// The request target (not yet checked).
    pub path: &'a [u8],
    /// The `OpenStack-API-Version` value (empty: none).
    pub version: &'a [u8],
    /// The body.
    pub body: &'a [u8],
}

/// The method a selector byte stands for.
pub fn method_of(b: u8) -> Method {
    const ALL: [&[u8]; 8] = [
        b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS", b"BREW",
    ];
    let name = match b {
        b'G' => ALL[0],
        b'P' => ALL[1],
        b'U' => ALL[2],
        b'D' => ALL[3],
        b'A' => ALL[4],
        b'H' => ALL[5],
        b'O' => ALL[6],
        b'X' => ALL[7],
        other => ALL[usize::from(other) % ALL.len()],
    };
    Method::from_bytes(name).expect("a valid method token")
}

/// Splits one request (see the module docs).
pub fn split(data: &[u8]) -> ApiInput<'_> {
    let (selector, rest) = data.split_first().map_or((b'G', &[][..]), |(s, r)| (*s, r));
    let mut fields = rest.splitn(3, |b| *b == b'\n');
    let path = fields.next().unwrap_or_default();
    let version = fields.next().unwrap_or_default();
    let body = fields.next().unwrap_or_default();
    ApiInput {
        method: method_of(selector),
        path,
        version,
        body,
    }
}

/// The fuzzed API's state: fresh for every input.
pub fn api_state() -> Arc<ApiState> {
    static POLICY: OnceLock<Enforcer> = OnceLock::new();
    let db = SqliteStore::in_memory().expect("an in-memory store");
    let state = ApiState {
        control: Arc::new(Control::new(Arc::new(db), SchedulerConfig::default())),
        auth: Auth::NoAuth {
            default_user: "fuzz-user".into(),
            default_project: "fuzz-project".into(),
        },
        policy: POLICY.get_or_init(Enforcer::cinder_defaults).clone(),
        cfg: ApiConfig::default(),
        identity: None,
    };
    state
        .ensure_default_type()
        .expect("the default volume type");
    Arc::new(state)
}

/// What one request got.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The method.
    pub method: Method,
    /// The URL's path, as sent (before the project segment comes off).
    pub path: String,
    /// The request, for messages.
    pub request: String,
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: Vec<u8>,
}

/// Replaces `$ID` with `id`.
fn substitute(bytes: &[u8], id: Option<&str>) -> Vec<u8> {
    let Some(id) = id else {
        return bytes.to_vec();
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(i) = rest.windows(3).position(|w| w == b"$ID") {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(id.as_bytes());
        rest = &rest[i + 3..];
    }
    out.extend_from_slice(rest);
    out
}

/// The first `id` of an answer: at the top, or in a top-level object (`{"volume": {...}}`).
fn id_in(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let top = v.as_object()?;
    if let Some(Value::String(id)) = top.get("id") {
        return Some(id.clone());
    }
    top.values()
        .filter_map(Value::as_object)
        .find_map(|o| o.get("id").and_then(Value::as_str).map(str::to_owned))
}

/// Whether `path` is under `/v3`.
fn under_v3(path: &str) -> bool {
    path == "/v3" || path.starts_with("/v3/")
}

/// Checks one answer (see the module docs); panics with the request when one fails.
pub fn check_answer(a: &Answer) {
    let status = a.status.as_u16();
    let shown = || String::from_utf8_lossy(&a.body[..a.body.len().min(400)]).into_owned();
    assert!(
        status < 500 || status == 503,
        "{}: {status}: {}",
        a.request,
        shown()
    );
    if status < 400 || !under_v3(&a.path) || a.method == Method::HEAD {
        return;
    }
    let v: Value = serde_json::from_slice(&a.body).unwrap_or_else(|e| {
        panic!(
            "{}: {status} with a body that is not JSON ({e}): {:?}",
            a.request,
            shown()
        )
    });
    let fault = v
        .as_object()
        .unwrap_or_else(|| panic!("{}: {status}: not an object: {v}", a.request));
    assert_eq!(fault.len(), 1, "{}: {status}: not one key: {v}", a.request);
    let (name, inner) = fault.iter().next().expect("one key");
    let code = inner.get("code").and_then(Value::as_u64);
    assert_eq!(
        code,
        Some(u64::from(status)),
        "{}: {status}: {name}.code is not the status: {v}",
        a.request
    );
    assert!(
        inner.get("message").is_some_and(Value::is_string),
        "{}: {status}: {name}.message is not a string: {v}",
        a.request
    );
}

/// Runs the requests of `data` against a fresh state and returns what each got (skipped
/// requests have no answer). Does not check the answers.
pub fn run_requests(data: &[u8]) -> Vec<Answer> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let app = basalt_api::router(api_state());
    let mut answers = Vec::new();
    let mut last_id: Option<String> = None;
    for raw in data.split(|b| *b == REQUEST_SEPARATOR).take(MAX_REQUESTS) {
        let input = split(raw);
        let mut target = substitute(input.path, last_id.as_deref());
        if target.first() != Some(&b'/') {
            target.insert(0, b'/');
        }
        let Ok(uri) = Uri::try_from(target) else {
            continue;
        };
        let path = uri.path().to_owned();
        let mut req = Request::builder()
            .method(input.method.clone())
            .uri(uri.clone());
        if !input.version.is_empty()
            && let Ok(v) = HeaderValue::from_bytes(input.version)
        {
            req = req.header("OpenStack-API-Version", v);
        }
        let body = substitute(input.body, last_id.as_deref());
        let Ok(req) = req.body(Body::from(body)) else {
            continue;
        };
        let request = format!(
            "{} {uri} (version {:?}, body {:?})",
            input.method,
            String::from_utf8_lossy(input.version),
            String::from_utf8_lossy(&input.body[..input.body.len().min(200)])
        );
        let app = app.clone();
        let (status, body) = rt.block_on(async move {
            let resp = app.oneshot(req).await.expect("the router is infallible");
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .expect("a readable body")
                .to_bytes()
                .to_vec();
            (status, body)
        });
        if let Some(id) = id_in(&body) {
            last_id = Some(id);
        }
        answers.push(Answer {
            method: input.method,
            path,
            request,
            status,
            body,
        });
    }
    drop(app);
    drop(rt);
    answers
}

/// `api_request`: arbitrary bytes as requests to the API (see the module docs).
pub fn api_request(data: &[u8]) {
    for a in run_requests(data) {
        check_answer(&a);
    }
}
