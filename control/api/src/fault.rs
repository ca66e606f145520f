//! Cinder's fault bodies (`cinder/api/openstack/wsgi.py`, `Fault`): `{"<name>": {"code": N,
//! "message": "..."}}`, the name chosen by the status; quota errors are 413 `overLimit` with
//! `Retry-After: 0`. Every lower error (store, manager, policy, identity) becomes an
//! [`ApiError`] in one exhaustive match per source.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use basalt_db::DbError;
use basalt_identity::AuthError;
use basalt_manager::{DpError, ManagerError};
use basalt_policy::PolicyError;
use serde_json::json;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for the user.
    pub message: String,
    /// `Retry-After` seconds (413 and 503).
    pub retry_after: Option<u64>,
    /// `WWW-Authenticate` (401).
    pub www_authenticate: Option<String>,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
            www_authenticate: None,
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400 with Cinder's `Invalid input received: ` prefix.
    pub fn invalid_input(message: impl std::fmt::Display) -> ApiError {
        ApiError::bad_request(format!("Invalid input received: {message}"))
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 406.
    pub fn not_acceptable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_ACCEPTABLE, message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 413 `overLimit`.
    pub fn over_limit(message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(0),
            ..ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message)
        }
    }

    /// The fault's name for its status (Cinder's `Fault._fault_names`).
    pub fn fault_name(&self) -> &'static str {
        match self.status.as_u16() {
            400 => "badRequest",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "itemNotFound",
            405 => "badMethod",
            409 => "conflictingRequest",
            413 => "overLimit",
            415 => "badMediaType",
            501 => "notImplemented",
            503 => "serviceUnavailable",
            _ => "computeFault",
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let name = self.fault_name();
        let mut body = json!({ name: { "code": self.status.as_u16(), "message": self.message } });
        if let Some(s) = self.retry_after
            && self.status == StatusCode::PAYLOAD_TOO_LARGE
        {
            body[name]["retryAfter"] = json!(s.to_string());
        }
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(w) = self.www_authenticate
            && let Ok(v) = HeaderValue::from_str(&w)
        {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        let msg = e.to_string();
        match e {
            DbError::NotFound { .. } => ApiError::not_found(capitalised(&msg)),
            DbError::Conflict { kind, .. } => {
                ApiError::bad_request(format!("Invalid {kind}: {}", capitalised(&msg)))
            }
            DbError::OverQuota {
                resource,
                limit,
                in_use,
                reserved,
                requested,
            } => ApiError::over_limit(over_quota(&resource, limit, in_use + reserved, requested)),
            DbError::Duplicate { .. } => ApiError::conflict(capitalised(&msg)),
            DbError::InUse { kind, .. } => {
                ApiError::bad_request(format!("Invalid {kind}: {}", capitalised(&msg)))
            }
            DbError::Invalid(_) => ApiError::invalid_input(&msg),
            DbError::Busy => ApiError {
                retry_after: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, capitalised(&msg))
            },
            DbError::SchemaTooNew { .. } | DbError::Sqlite(_) | DbError::Corrupt(_) => {
                tracing::error!(error = %msg, "metadata store failed");
                ApiError::internal(
                    "The server has either erred or is incapable of performing the requested operation.",
                )
            }
        }
    }
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> ApiError {
        match e {
            ManagerError::Db(d) => d.into(),
            ManagerError::Invalid(m) => ApiError::invalid_input(m),
            ManagerError::Schedule(s) => {
                ApiError::bad_request(format!("No valid backend was found. {s}"))
            }
            ManagerError::Datapath(d) => {
                let unreachable = matches!(d, DpError::Unreachable(_));
                tracing::error!(error = %d, "datapath failed");
                if unreachable {
                    ApiError {
                        retry_after: Some(5),
                        ..ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("The storage node is unreachable: {d}"),
                        )
                    }
                } else {
                    ApiError::internal(format!("The storage node failed: {d}"))
                }
            }
            ManagerError::UnknownNode(n) => {
                ApiError::internal(format!("The storage node {n} is not managed here."))
            }
        }
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> ApiError {
        match e {
            PolicyError::NotAuthorized { .. } => ApiError::forbidden(e.to_string()),
            other => {
                tracing::error!(error = %other, "policy failed");
                ApiError::internal(other.to_string())
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        let www = e.www_authenticate();
        let status = e.status_code();
        ApiError {
            www_authenticate: www,
            ..ApiError::new(status, e.to_string())
        }
    }
}

/// Cinder's quota messages (`cinder/exception.py`), by resource.
fn over_quota(resource: &str, limit: i64, consumed: i64, requested: i64) -> String {
    if resource == "per_volume_gigabytes" {
        format!(
            "VolumeSizeExceedsLimit: Requested volume size {requested}G is larger than maximum allowed limit {limit}G."
        )
    } else if resource.starts_with("gigabytes") || resource.starts_with("backup_gigabytes") {
        format!(
            "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed {resource} quota. Requested {requested}G, quota is {limit}G and {consumed}G has been consumed."
        )
    } else if resource.starts_with("snapshots") {
        format!("SnapshotLimitExceeded: Maximum number of snapshots allowed ({limit}) exceeded")
    } else if resource.starts_with("volumes") {
        format!(
            "VolumeLimitExceeded: Maximum number of volumes allowed ({limit}) exceeded for quota '{resource}'."
        )
    } else {
        format!(
            "QuotaError: Quota exceeded for {resource}: requested {requested}, {consumed} of {limit} used."
        )
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_follow_the_status() {
        assert_eq!(ApiError::bad_request("x").fault_name(), "badRequest");
        assert_eq!(ApiError::not_found("x").fault_name(), "itemNotFound");
        assert_eq!(ApiError::over_limit("x").fault_name(), "overLimit");
        assert_eq!(
            ApiError::new(StatusCode::IM_A_TEAPOT, "x").fault_name(),
            "computeFault"
        );
    }

    #[test]
    fn store_errors_map_to_cinder_codes() {
        let nf: ApiError = DbError::NotFound {
            kind: "volume",
            id: "v".into(),
        }
        .into();
        assert_eq!(nf.status, StatusCode::NOT_FOUND);
        assert_eq!(nf.message, "Volume v could not be found");
        let q: ApiError = DbError::OverQuota {
            resource: "gigabytes".into(),
            limit: 10,
            in_use: 9,
            reserved: 0,
            requested: 2,
        }
        .into();
        assert_eq!(q.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(q.retry_after, Some(0));
        assert!(q.message.starts_with("VolumeSizeExceedsAvailableQuota"));
    }
}
