//! Microversions, as Cinder negotiates them (`cinder/api/openstack/api_version_request.py`,
//! `wsgi.py`): the `OpenStack-API-Version: volume 3.NN` header, `latest`, 3.0 when no header
//! is sent, 400 for a malformed value, 406 outside the range served.

use std::fmt;

use axum::http::HeaderMap;

use crate::fault::ApiError;

/// A microversion `3.NN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major (3).
    pub major: u16,
    /// Minor.
    pub minor: u16,
}

/// The request header (and the response echo).
pub const HEADER: &str = "openstack-api-version";

/// The lowest microversion served.
pub const MIN: Version = Version::new(3, 0);

/// The highest microversion served: Cinder's latest.
///
/// Every microversion's change to what Basalt serves is implemented (views, validation,
/// actions, filters). Features Basalt does not have are refused the same way at every
/// version: groups, backups (until the backup service lands) and QoS answer 404 as unknown
/// resources; image, migration (and so a retype that needs one) and manage actions answer
/// 400 saying so.
/// `docs/api.md` lists them.
pub const MAX: Version = Version::new(3, 71);

/// When [`MAX`] last changed (the versions document's `updated`).
pub const UPDATED: &str = "2026-12-04T00:00:00Z";

impl Version {
    /// `major.minor`.
    pub const fn new(major: u16, minor: u16) -> Version {
        Version { major, minor }
    }

    /// Whether this is at least `3.minor`.
    pub fn at_least(self, minor: u16) -> bool {
        self >= Version::new(3, minor)
    }

    /// Parses `3.NN` (Cinder's pattern `^([1-9]\d*)\.([1-9]\d*|0)$`).
    pub fn parse(text: &str) -> Option<Version> {
        let (maj, min) = text.split_once('.')?;
        let ok = |s: &str, zero_ok: bool| {
            !s.is_empty()
                && s.len() <= 4
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s == "0" && zero_ok || !s.starts_with('0'))
        };
        if !ok(maj, false) || !ok(min, true) {
            return None;
        }
        Some(Version::new(maj.parse().ok()?, min.parse().ok()?))
    }

    /// The version a request asks for.
    ///
    /// # Errors
    /// 400 for a malformed version, 406 for one outside [`MIN`]..=[`MAX`].
    pub fn negotiate(headers: &HeaderMap) -> Result<Version, ApiError> {
        let mut asked = None;
        for value in headers.get_all(HEADER) {
            let Ok(text) = value.to_str() else {
                return Err(ApiError::bad_request(
                    "Invalid API version header: not ASCII",
                ));
            };
            for item in text.split(',') {
                let mut words = item.split_whitespace();
                if words
                    .next()
                    .is_some_and(|s| s.eq_ignore_ascii_case("volume"))
                {
                    asked = Some(words.next().unwrap_or("").to_owned());
                }
            }
        }
        let Some(asked) = asked else {
            return Ok(MIN);
        };
        if asked.eq_ignore_ascii_case("latest") {
            return Ok(MAX);
        }
        let v = Version::parse(&asked).ok_or_else(|| {
            ApiError::bad_request(format!(
                "API Version String {asked} is of invalid format. Must be of format MajorNum.MinorNum."
            ))
        })?;
        if v < MIN || v > MAX {
            return Err(ApiError::not_acceptable(format!(
                "Version {v} is not supported by the API. Minimum is {MIN} and maximum is {MAX}."
            )));
        }
        Ok(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};

    fn ask(v: &str) -> Result<Version, ApiError> {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_str(v).expect("header"));
        Version::negotiate(&h)
    }

    #[test]
    fn negotiation_follows_cinder() {
        assert_eq!(Version::negotiate(&HeaderMap::new()).ok(), Some(MIN));
        assert_eq!(ask("volume 3.27").ok(), Some(Version::new(3, 27)));
        assert_eq!(ask("VOLUME latest").ok(), Some(MAX));
        assert_eq!(
            ask("compute 2.1, volume 3.50").ok(),
            Some(Version::new(3, 50))
        );
        // Another service's entry only: the default.
        assert_eq!(ask("compute 2.1").ok(), Some(MIN));
        for bad in [
            "volume 3",
            "volume 3.",
            "volume 03.1",
            "volume 3.01",
            "volume x.y",
            "volume",
        ] {
            assert_eq!(
                ask(bad).err().map(|e| e.status),
                Some(StatusCode::BAD_REQUEST),
                "{bad}"
            );
        }
        for out in ["volume 2.0", "volume 4.0", "volume 3.999"] {
            assert_eq!(
                ask(out).err().map(|e| e.status),
                Some(StatusCode::NOT_ACCEPTABLE),
                "{out}"
            );
        }
        assert!(Version::new(3, 10) > Version::new(3, 9));
        assert_eq!(Version::new(3, 0).to_string(), "3.0");
    }
}
