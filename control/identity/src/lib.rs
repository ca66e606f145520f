//! Identity for Basalt: who a request is from.
//!
//! Three modes, chosen by configuration ([`Auth`]):
//!
//! - **noauth**, as Cinder's `NoAuthMiddleware`: `X-Auth-Token: user:project` is believed, and
//!   every request is an admin's.
//! - **built-in** ([`Identity`]): a Keystone v3 subset over its own SQLite file, enough for
//!   python-cinderclient, openstackclient, keystoneauth and tempest with pre-provisioned
//!   credentials: password and token authentication, project scope, a catalog with
//!   `block-storage`, `volumev3` and `identity`, token validation and revocation, and the
//!   admin calls behind `openstack project|user|role ...` ([`router`], or [`mount`] for it
//!   already nested at `/identity`).
//! - **Keystone** ([`KeystoneValidator`]): tokens are validated against an external Keystone
//!   as keystonemiddleware does (a service token, `GET /v3/auth/tokens`, a cache).
//!
//! # Secrets
//!
//! Passwords are stored as argon2id PHC strings (OWASP parameters: m = 19456 KiB, t = 2,
//! p = 1, 16-byte random salt). Tokens are 32 random bytes (URL-safe base64, no padding), of
//! which only the SHA-256 is stored; validation hashes and looks up, and recomputes roles
//! from the current assignments, so revoking a role takes effect at the next request.
//! Neither passwords nor tokens are ever logged, and `Debug` of the types holding them
//! redacts them.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod keystone;
mod model;
mod rest;
mod secret;
mod store;
mod time;

use std::fmt;
use std::sync::Arc;

use axum::http::HeaderMap;

pub use error::{AuthError, IdentityError};
pub use keystone::{KeystoneConfig, KeystoneValidator};
pub use model::{
    Bootstrap, Credentials, DEFAULT_DOMAIN_ID, DEFAULT_DOMAIN_NAME, Domain, DomainRef, IssuedToken,
    Project, ProjectPatch, ProjectRef, Role, RoleAssignment, Scope, TokenInfo, User, UserPatch,
    UserRef,
};
pub use rest::{BODY_LIMIT, MOUNT_PATH, mount, router};
pub use store::{Identity, IdentityConfig};

/// Who a request is from, after authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthContext {
    /// The user's id.
    pub user_id: String,
    /// The user's name.
    pub user_name: String,
    /// The project the token is scoped to; empty if unscoped.
    pub project_id: String,
    /// That project's name; empty if unscoped.
    pub project_name: String,
    /// The user's domain (`default`).
    pub domain_id: String,
    /// Effective role names, implied roles expanded (admin ⇒ member ⇒ reader).
    pub roles: Vec<String>,
    /// Cinder's `context.is_admin`: the `admin` role (always, in noauth mode).
    pub is_admin: bool,
    /// As keystonemiddleware's `X-Is-Admin-Project`; true unless Keystone says otherwise.
    pub is_admin_project: bool,
    /// When the token expires, ISO 8601 with `Z` (none in noauth mode).
    pub expires_at: Option<String>,
    /// The token as sent, for services that call others on the user's behalf.
    pub auth_token: Option<String>,
}

impl AuthContext {
    /// Whether the context carries role `name`.
    pub fn has_role(&self, name: &str) -> bool {
        self.roles.iter().any(|r| r == name)
    }
}

impl fmt::Debug for AuthContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthContext")
            .field("user_id", &self.user_id)
            .field("user_name", &self.user_name)
            .field("project_id", &self.project_id)
            .field("project_name", &self.project_name)
            .field("domain_id", &self.domain_id)
            .field("roles", &self.roles)
            .field("is_admin", &self.is_admin)
            .field("is_admin_project", &self.is_admin_project)
            .field("expires_at", &self.expires_at)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// How the API authenticates requests (selected by configuration).
#[derive(Debug, Clone)]
pub enum Auth {
    /// Cinder's noauth: `X-Auth-Token: user:project` (the project defaults to the user); no
    /// token means the default user and project. Every request is an admin's (Cinder's
    /// `NoAuthMiddleware` sets `is_admin=True`), with roles `admin`, `member`, `reader`.
    NoAuth {
        /// The user of a request without a token.
        default_user: String,
        /// The project of a request without a token.
        default_project: String,
    },
    /// The built-in identity service.
    Builtin(Arc<Identity>),
    /// An external Keystone: tokens are validated against it, with a cache.
    Keystone(Arc<KeystoneValidator>),
}

/// The token a request carries (`X-Auth-Token`), if any. An empty header counts as none.
fn header_token(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    match headers.get("x-auth-token") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(s) if s.trim().is_empty() => Ok(None),
            Ok(s) => Ok(Some(s.trim())),
            Err(_) => Err(()),
        },
    }
}

impl Auth {
    /// Authenticates a request from its headers (`X-Auth-Token`).
    ///
    /// # Errors
    /// See [`AuthError`] (and [`AuthError::status_code`] for the HTTP answer).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<AuthContext, AuthError> {
        match self {
            Auth::NoAuth {
                default_user,
                default_project,
            } => {
                let token = header_token(headers).map_err(|()| AuthError::InvalidToken {
                    www_authenticate_uri: None,
                })?;
                Ok(noauth_context(token, default_user, default_project))
            }
            Auth::Builtin(identity) => {
                let uri = Some(identity.www_authenticate_uri());
                let token = match header_token(headers) {
                    Ok(Some(t)) => t.to_owned(),
                    Ok(None) => {
                        return Err(AuthError::MissingToken {
                            www_authenticate_uri: uri,
                        });
                    }
                    Err(()) => {
                        return Err(AuthError::InvalidToken {
                            www_authenticate_uri: uri,
                        });
                    }
                };
                let identity = Arc::clone(identity);
                tokio::task::spawn_blocking(move || identity.validate_token(&token))
                    .await
                    .map_err(|e| AuthError::Internal(format!("validation task failed: {e}")))?
            }
            Auth::Keystone(v) => {
                let uri = Some(v.www_authenticate_uri().to_owned());
                match header_token(headers) {
                    Ok(Some(t)) => v.validate(t).await,
                    Ok(None) => Err(AuthError::MissingToken {
                        www_authenticate_uri: uri,
                    }),
                    Err(()) => Err(AuthError::InvalidToken {
                        www_authenticate_uri: uri,
                    }),
                }
            }
        }
    }
}

fn noauth_context(token: Option<&str>, default_user: &str, default_project: &str) -> AuthContext {
    let (user, project) = match token {
        None => (default_user.to_owned(), default_project.to_owned()),
        Some(t) => match t.split_once(':') {
            // Cinder: `user_id, _sep, project_id = token.partition(':')`, and
            // `project_id = project_id or user_id`.
            Some((u, "")) => (u.to_owned(), u.to_owned()),
            Some((u, p)) => (u.to_owned(), p.to_owned()),
            None => (t.to_owned(), t.to_owned()),
        },
    };
    AuthContext {
        user_name: user.clone(),
        user_id: user,
        project_name: project.clone(),
        project_id: project,
        domain_id: DEFAULT_DOMAIN_ID.to_owned(),
        roles: vec!["admin".into(), "member".into(), "reader".into()],
        is_admin: true,
        is_admin_project: true,
        expires_at: None,
        auth_token: token.map(str::to_owned),
    }
}

/// Quotes `s` for a POSIX shell: single quotes, with each `'` written as `'\''`.
fn shell_quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('\'');
    for c in s.chars() {
        if c == '\'' {
            q.push_str("'\\''");
        } else {
            q.push(c);
        }
    }
    q.push('\'');
    q
}

/// A devstack-style openrc for `source`: `OS_AUTH_URL` (`auth_url`, e.g.
/// `http://127.0.0.1:8776/identity/v3`), `OS_AUTH_TYPE=password`, `OS_USERNAME`,
/// `OS_PASSWORD`, `OS_PROJECT_NAME`, `OS_USER_DOMAIN_ID=default`,
/// `OS_PROJECT_DOMAIN_ID=default`, `OS_IDENTITY_API_VERSION=3`, `OS_REGION_NAME`; every value
/// shell-quoted.
pub fn openrc(auth_url: &str, user: &str, password: &str, project: &str, region: &str) -> String {
    let vars: [(&str, &str); 9] = [
        ("OS_AUTH_URL", auth_url),
        ("OS_AUTH_TYPE", "password"),
        ("OS_USERNAME", user),
        ("OS_PASSWORD", password),
        ("OS_PROJECT_NAME", project),
        ("OS_USER_DOMAIN_ID", DEFAULT_DOMAIN_ID),
        ("OS_PROJECT_DOMAIN_ID", DEFAULT_DOMAIN_ID),
        ("OS_IDENTITY_API_VERSION", "3"),
        ("OS_REGION_NAME", region),
    ];
    let mut out = String::from("# Basalt credentials: source this file (it holds a password).\n");
    for (k, v) in vars {
        out.push_str("export ");
        out.push_str(k);
        out.push('=');
        out.push_str(&shell_quote(v));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
