//! Validating tokens against an external Keystone, as keystonemiddleware's `auth_token` does.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::secret::sha256;
use crate::time::{format_micros, now_micros, parse_iso8601};
use crate::{AuthContext, AuthError};

/// How to reach and authenticate to an external Keystone.
#[derive(Clone, PartialEq, Eq)]
pub struct KeystoneConfig {
    /// Keystone's URL, e.g. `http://keystone/identity/v3` (`/v3` is appended when missing).
    pub auth_url: String,
    /// This service's user (keystonemiddleware's `username`, e.g. `cinder`).
    pub username: String,
    /// Its password.
    pub password: String,
    /// The project its token is scoped to (`service`).
    pub project_name: String,
    /// The user's domain: `default` or a 32-hex id is sent as an id, anything else as a name.
    pub user_domain: String,
    /// The project's domain, likewise.
    pub project_domain: String,
    /// How long a validation is believed, in seconds (keystonemiddleware's
    /// `token_cache_time`, 300); never past the token's expiry. 0 disables the cache.
    pub cache_ttl_secs: u64,
}

impl fmt::Debug for KeystoneConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeystoneConfig")
            .field("auth_url", &self.auth_url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("project_name", &self.project_name)
            .field("user_domain", &self.user_domain)
            .field("project_domain", &self.project_domain)
            .field("cache_ttl_secs", &self.cache_ttl_secs)
            .finish()
    }
}

/// At most this many validations are cached; past it, expired entries go, then all.
const CACHE_MAX: usize = 10_000;
/// A service token this close to expiry is replaced before use.
const SERVICE_TOKEN_MARGIN_US: i64 = 60_000_000;

struct ServiceToken {
    token: String,
    expires_at_us: Option<i64>,
}

enum Cached {
    Valid(AuthContext),
    Invalid,
}

struct CacheEntry {
    until: Instant,
    value: Cached,
}

/// Validates user tokens against an external Keystone: it authenticates as the service user
/// (password method, project scope), asks `GET {auth_url}/auth/tokens` with its own token in
/// `X-Auth-Token` and the user's in `X-Subject-Token`, and caches the answer (valid or not)
/// keyed by the SHA-256 of the user's token, for `min(cache_ttl, time to expiry)`. The
/// service token is renewed before it expires, and once more when Keystone answers 401.
pub struct KeystoneValidator {
    cfg: KeystoneConfig,
    tokens_url: String,
    www_uri: String,
    client: reqwest::Client,
    service: tokio::sync::Mutex<Option<ServiceToken>>,
    cache: Mutex<HashMap<[u8; 32], CacheEntry>>,
}

impl fmt::Debug for KeystoneValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeystoneValidator")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn domain_json(d: &str) -> Value {
    let is_id = d == "default"
        || (d.len() == 32
            && d.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    if is_id {
        json!({ "id": d })
    } else {
        json!({ "name": d })
    }
}

fn unreachable(e: &reqwest::Error) -> AuthError {
    // reqwest's message names the URL, never a header, so no token leaks into it.
    AuthError::Unreachable(e.to_string())
}

impl KeystoneValidator {
    /// A validator for `cfg`; nothing is sent until the first validation.
    ///
    /// # Errors
    /// [`AuthError::Config`] for an `auth_url` that is not `http://` or `https://`, or if the
    /// HTTP client cannot be built.
    pub fn new(cfg: KeystoneConfig) -> Result<Self, AuthError> {
        let mut url = cfg.auth_url.trim().trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(AuthError::Config(format!(
                "keystone auth_url must be an http:// or https:// URL, not {url:?}"
            )));
        }
        if !url.ends_with("/v3") {
            url.push_str("/v3");
        }
        let www_uri = url.trim_end_matches("/v3").to_owned();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| AuthError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(KeystoneValidator {
            tokens_url: format!("{url}/auth/tokens"),
            www_uri,
            cfg,
            client,
            service: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Keystone's root (`auth_url` without `/v3`), what a 401 names in `WWW-Authenticate`.
    pub fn www_authenticate_uri(&self) -> &str {
        &self.www_uri
    }

    /// Forgets every cached validation.
    pub fn clear_cache(&self) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn invalid(&self) -> AuthError {
        AuthError::InvalidToken {
            www_authenticate_uri: Some(self.www_uri.clone()),
        }
    }

    /// Validates a user's token.
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] if Keystone does not know it (or it expired);
    /// [`AuthError::Unreachable`] if Keystone cannot be reached; [`AuthError::ServiceAuth`]
    /// if the service credentials are refused or may not validate tokens;
    /// [`AuthError::BadResponse`] for anything else unexpected.
    pub async fn validate(&self, token: &str) -> Result<AuthContext, AuthError> {
        let key = sha256(token);
        if let Some(hit) = self.cached(&key, token) {
            return hit;
        }
        let mut retried = false;
        let (status, body) = loop {
            let service = self.service_token(retried).await?;
            let resp = self
                .client
                .get(format!("{}?nocatalog", self.tokens_url))
                .header("x-auth-token", service)
                .header("x-subject-token", token)
                .header("accept", "application/json")
                .send()
                .await
                .map_err(|e| unreachable(&e))?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !retried {
                // The service token may have been revoked: get a new one, once.
                retried = true;
                continue;
            }
            let body = resp.bytes().await.map_err(|e| unreachable(&e))?;
            break (status, body);
        };
        match status {
            StatusCode::OK | StatusCode::NON_AUTHORITATIVE_INFORMATION => {}
            StatusCode::NOT_FOUND => {
                self.store(key, Cached::Invalid, None);
                return Err(self.invalid());
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(AuthError::ServiceAuth(format!(
                    "keystone answered {status} to token validation with the service token"
                )));
            }
            s if s.is_server_error() => {
                return Err(AuthError::Unreachable(format!(
                    "keystone answered {s} to token validation"
                )));
            }
            s => {
                return Err(AuthError::BadResponse(format!(
                    "keystone answered {s} to token validation"
                )));
            }
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            AuthError::BadResponse(format!("token validation answer is not JSON: {e}"))
        })?;
        let ctx = context_from_token(&v, token)?;
        let expires = ctx.expires_at.as_deref().and_then(parse_iso8601);
        if expires.is_some_and(|e| e <= now_micros()) {
            self.store(key, Cached::Invalid, None);
            return Err(self.invalid());
        }
        self.store(key, Cached::Valid(ctx.clone()), expires);
        Ok(ctx)
    }

    fn cached(&self, key: &[u8; 32], token: &str) -> Option<Result<AuthContext, AuthError>> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let e = cache.get(key)?;
        if e.until <= Instant::now() {
            cache.remove(key);
            return None;
        }
        Some(match &e.value {
            Cached::Valid(ctx) => {
                let mut ctx = ctx.clone();
                ctx.auth_token = Some(token.to_owned());
                Ok(ctx)
            }
            Cached::Invalid => Err(self.invalid()),
        })
    }

    fn store(&self, key: [u8; 32], value: Cached, expires_at_us: Option<i64>) {
        let mut ttl = Duration::from_secs(self.cfg.cache_ttl_secs);
        if let Some(e) = expires_at_us {
            let left = u64::try_from(e.saturating_sub(now_micros())).unwrap_or(0);
            ttl = ttl.min(Duration::from_micros(left));
        }
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, e| e.until > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(
            key,
            CacheEntry {
                until: now + ttl,
                value,
            },
        );
    }

    /// The service token, fetched anew when there is none, it is about to expire, or
    /// `renew` is set (Keystone refused it).
    async fn service_token(&self, renew: bool) -> Result<String, AuthError> {
        let mut guard = self.service.lock().await;
        if let Some(t) = guard.as_ref() {
            let fresh = t
                .expires_at_us
                .is_none_or(|e| e - SERVICE_TOKEN_MARGIN_US > now_micros());
            if fresh && !renew {
                return Ok(t.token.clone());
            }
        }
        *guard = None;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": self.cfg.username,
                "domain": domain_json(&self.cfg.user_domain),
                "password": self.cfg.password,
            }}},
            "scope": {"project": {
                "name": self.cfg.project_name,
                "domain": domain_json(&self.cfg.project_domain),
            }},
        }});
        let resp = self
            .client
            .post(format!("{}?nocatalog", self.tokens_url))
            .json(&body)
            .send()
            .await
            .map_err(|e| unreachable(&e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(AuthError::ServiceAuth(format!(
                "keystone refused the service credentials of user {:?} ({status})",
                self.cfg.username
            )));
        }
        if status.is_server_error() {
            return Err(AuthError::Unreachable(format!(
                "keystone answered {status} to the service authentication"
            )));
        }
        if status != StatusCode::CREATED && status != StatusCode::OK {
            return Err(AuthError::BadResponse(format!(
                "keystone answered {status} to the service authentication"
            )));
        }
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                AuthError::BadResponse("keystone issued no X-Subject-Token".to_owned())
            })?;
        let v: Value = resp.json().await.map_err(|e| {
            AuthError::BadResponse(format!("service token answer is not JSON: {e}"))
        })?;
        let expires_at_us = v
            .pointer("/token/expires_at")
            .and_then(Value::as_str)
            .and_then(parse_iso8601);
        *guard = Some(ServiceToken {
            token: token.clone(),
            expires_at_us,
        });
        Ok(token)
    }
}

/// The request context from a Keystone token body (`{"token": {...}}`).
fn context_from_token(v: &Value, token: &str) -> Result<AuthContext, AuthError> {
    let t = v
        .get("token")
        .ok_or_else(|| AuthError::BadResponse("token validation answer has no token".into()))?;
    let s = |p: &str| t.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let user_id = s("/user/id")
        .ok_or_else(|| AuthError::BadResponse("token validation answer has no user".into()))?;
    let roles: Vec<String> = t
        .get("roles")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("name").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let expires_at = s("/expires_at").map(|e| parse_iso8601(&e).map_or(e, format_micros));
    Ok(AuthContext {
        user_name: s("/user/name").unwrap_or_default(),
        user_id,
        project_id: s("/project/id").unwrap_or_default(),
        project_name: s("/project/name").unwrap_or_default(),
        domain_id: s("/user/domain/id").unwrap_or_else(|| "default".to_owned()),
        is_admin: roles.iter().any(|r| r == "admin"),
        roles,
        is_admin_project: t
            .get("is_admin_project")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        expires_at,
        auth_token: Some(token.to_owned()),
    })
}
