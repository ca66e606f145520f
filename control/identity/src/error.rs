//! The crate's two error types: [`AuthError`] (authenticating a request) and
//! [`IdentityError`] (operations of the built-in identity service).

use axum::http::StatusCode;

/// Why a request could not be authenticated.
///
/// HTTP mapping ([`AuthError::status_code`]): `MissingToken` and `InvalidToken` are 401 (with
/// [`AuthError::www_authenticate`] as the `WWW-Authenticate` header, as keystonemiddleware
/// sends); `Unreachable`, `ServiceAuth` and `BadResponse` are 503 (the identity service is
/// not usable right now, keystonemiddleware's `ServiceError`); `Internal` and `Config` are 500.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum AuthError {
    /// the request carries no X-Auth-Token
    MissingToken {
        /// What to send as `Keystone uri="..."` in `WWW-Authenticate` (none in noauth mode).
        www_authenticate_uri: Option<String>,
    },
    /// the token is invalid, expired or revoked
    InvalidToken {
        /// What to send as `Keystone uri="..."` in `WWW-Authenticate`.
        www_authenticate_uri: Option<String>,
    },
    /// the identity service cannot be reached: {0}
    Unreachable(String),
    /// the identity service refused this service's own credentials: {0}
    ServiceAuth(String),
    /// the identity service answered something unexpected: {0}
    BadResponse(String),
    /// the identity store failed: {0}
    Internal(String),
    /// invalid identity configuration: {0}
    Config(String),
}

impl AuthError {
    /// The `WWW-Authenticate` header value for a 401 (`Keystone uri="..."`), if any.
    pub fn www_authenticate(&self) -> Option<String> {
        match self {
            AuthError::MissingToken {
                www_authenticate_uri,
            }
            | AuthError::InvalidToken {
                www_authenticate_uri,
            } => www_authenticate_uri
                .as_ref()
                .map(|u| format!("Keystone uri=\"{u}\"")),
            _ => None,
        }
    }

    /// The HTTP status this error should be answered with.
    pub fn status_code(&self) -> StatusCode {
        match self {
            AuthError::MissingToken { .. } | AuthError::InvalidToken { .. } => {
                StatusCode::UNAUTHORIZED
            }
            AuthError::Unreachable(_) | AuthError::ServiceAuth(_) | AuthError::BadResponse(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AuthError::Internal(_) | AuthError::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A failed operation of the built-in identity service.
///
/// HTTP mapping ([`IdentityError::status_code`]): `NotFound` 404, `Conflict` 409, `Invalid`
/// 400, `Unauthorized` 401, `Forbidden` 403, everything else 500.
#[derive(Debug, displaydoc::Display, thiserror::Error)]
pub enum IdentityError {
    /// could not find {kind}: {id}
    NotFound {
        /// `user`, `project`, `role`, `domain`, `token`, ...
        kind: &'static str,
        /// The name or id that was looked up.
        id: String,
    },
    /// conflict: {0}
    Conflict(String),
    /// invalid request: {0}
    Invalid(String),
    /// the request you have made requires authentication: {0}
    Unauthorized(String),
    /// you are not authorized to perform the requested action: {0}
    Forbidden(String),
    /// the identity database was written by a newer Basalt (schema {found}, this one knows {known})
    SchemaTooNew {
        /// The version found in the file.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// identity database: {0}
    Db(#[from] rusqlite::Error),
    /// identity database file: {0}
    Io(#[from] std::io::Error),
    /// password hashing failed: {0}
    Hash(String),
    /// the system random number generator failed: {0}
    Random(String),
    /// internal error: {0}
    Internal(String),
}

impl IdentityError {
    /// The HTTP status this error should be answered with.
    pub fn status_code(&self) -> StatusCode {
        match self {
            IdentityError::NotFound { .. } => StatusCode::NOT_FOUND,
            IdentityError::Conflict(_) => StatusCode::CONFLICT,
            IdentityError::Invalid(_) => StatusCode::BAD_REQUEST,
            IdentityError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            IdentityError::Forbidden(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn not_found(kind: &'static str, id: &str) -> IdentityError {
        IdentityError::NotFound {
            kind,
            id: id.to_owned(),
        }
    }
}
