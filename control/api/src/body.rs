//! Request bodies: JSON only (415 otherwise), at most [`MAX_BODY`] bytes (Cinder's
//! `osapi_max_request_body_size`), and typed field readers that answer bad input the way
//! Cinder's schemas do: a 400 naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde_json::{Map, Value};

use crate::fault::ApiError;

/// The largest request body accepted (Cinder's default, 112 KiB).
pub const MAX_BODY: usize = 114_688;

/// A JSON request body.
#[derive(Debug, Clone)]
pub struct Body(pub Value);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Body, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            let mime = ct.split(';').next().unwrap_or("").trim();
            if !mime.is_empty()
                && mime != "application/json"
                && mime != "application/vnd.openstack.volume+json"
            {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Unsupported Content-Type",
                ));
            }
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request is too large."))?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request("Missing request body"));
        }
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("Malformed request body: {e}")))?;
        Ok(Body(v))
    }
}

/// The object under `key` of a body (`{"volume": {...}}`).
///
/// # Errors
/// 400 when the body is not an object holding an object at `key`.
pub fn section<'a>(body: &'a Value, key: &str) -> Result<&'a Map<String, Value>, ApiError> {
    match body.get(key) {
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute {key}. Value: must be an object."
        ))),
        None => Err(ApiError::bad_request(format!(
            "Missing required element '{key}' in request body."
        ))),
    }
}

/// Refuses keys outside `allowed` (strict schemas).
///
/// # Errors
/// 400 naming the first unknown key.
pub fn only(m: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    for k in m.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute {k}. Additional properties are not allowed ('{k}' was unexpected)"
            )));
        }
    }
    Ok(())
}

fn bad(field: &str, value: &Value, why: &str) -> ApiError {
    let shown: String = value.to_string().chars().take(80).collect();
    ApiError::bad_request(format!(
        "Invalid input for field/attribute {field}. Value: {shown}. {why}"
    ))
}

/// An optional string of at most `max` characters (`null` is absent).
///
/// # Errors
/// 400 for another type or a longer string.
pub fn opt_str(m: &Map<String, Value>, key: &str, max: usize) -> Result<Option<String>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
        Some(v @ Value::String(_)) => Err(bad(key, v, &format!("is too long (at most {max})"))),
        Some(v) => Err(bad(key, v, "is not of type 'string'")),
    }
}

/// A required string.
///
/// # Errors
/// 400 when missing, empty or not a string.
pub fn req_str(m: &Map<String, Value>, key: &str, max: usize) -> Result<String, ApiError> {
    match opt_str(m, key, max)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(bad(key, &m[key], "must not be empty")),
        None => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute {key}. '{key}' is a required property"
        ))),
    }
}

/// A boolean as Cinder's `parameter_types.boolean` takes it: JSON booleans, or the strings
/// and numbers `oslo_utils.strutils.bool_from_string(strict=True)` knows.
///
/// # Errors
/// 400 for anything else.
pub fn opt_bool(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_bool(v)
            .map(Some)
            .ok_or_else(|| bad(key, v, "is not a boolean")),
    }
}

/// A JSON value as a boolean (see [`opt_bool`]).
pub fn parse_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => str_bool(s),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A query or body string as a boolean (strict).
pub fn str_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
        _ => None,
    }
}

/// A positive size in GiB: an integer or a string of digits (Cinder's `volume_size`).
///
/// # Errors
/// 400 for anything else, zero, or more than `i32::MAX`.
pub fn opt_size(m: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    let v = match m.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<u64>().ok()
        }
        _ => None,
    };
    match n {
        Some(0) => Err(bad(key, v, "0 is less than the minimum of 1")),
        Some(n) if n <= i32::MAX as u64 => Ok(Some(n)),
        Some(_) => Err(bad(key, v, "is greater than the maximum of 2147483647")),
        None => Err(bad(key, v, "is not a positive integer")),
    }
}

/// Metadata: an object of strings, keys 1–255 characters, values up to 255.
///
/// # Errors
/// 400 naming what is wrong.
pub fn metadata(v: &Value, field: &str) -> Result<basalt_db::Metadata, ApiError> {
    let Value::Object(m) = v else {
        return Err(bad(field, v, "is not of type 'object'"));
    };
    let mut out = basalt_db::Metadata::new();
    for (k, val) in m {
        if k.is_empty() || k.chars().count() > 255 {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute {field}. Metadata keys must be 1 to 255 characters long."
            )));
        }
        let Value::String(s) = val else {
            return Err(bad(field, val, "metadata values must be strings"));
        };
        if s.chars().count() > 255 {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute {field}. Metadata value for {k} is longer than 255 characters."
            )));
        }
        out.insert(k.clone(), s.clone());
    }
    Ok(out)
}

/// A UUID (`xxxxxxxx-xxxx-...`), or 400 naming the field.
///
/// # Errors
/// 400.
pub fn uuid(v: &str, field: &str) -> Result<String, ApiError> {
    if basalt_db::is_uuid(v) {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute {field}. Value: {v}. '{v}' is not a 'uuid'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_and_booleans_follow_cinder_schemas() {
        let m = json!({"a": 1, "b": "12", "c": 0, "d": -1, "e": "1.5", "f": true, "g": 3e9})
            .as_object()
            .cloned()
            .expect("object");
        assert_eq!(opt_size(&m, "a").ok(), Some(Some(1)));
        assert_eq!(opt_size(&m, "b").ok(), Some(Some(12)));
        for k in ["c", "d", "e", "f", "g"] {
            assert!(opt_size(&m, k).is_err(), "{k}");
        }
        assert_eq!(opt_size(&m, "missing").ok(), Some(None));
        assert_eq!(str_bool("Yes"), Some(true));
        assert_eq!(str_bool("0"), Some(false));
        assert_eq!(str_bool("maybe"), None);
    }

    #[test]
    fn metadata_must_be_strings() {
        assert!(metadata(&json!({"k": "v"}), "metadata").is_ok());
        assert!(metadata(&json!({"k": 1}), "metadata").is_err());
        assert!(metadata(&json!({"": "v"}), "metadata").is_err());
        assert!(metadata(&json!(["k"]), "metadata").is_err());
        assert!(metadata(&json!({"k": "x".repeat(256)}), "metadata").is_err());
    }
}
