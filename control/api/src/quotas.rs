//! `/v3/{project_id}/os-quota-sets/{target}` and `/os-quota-class-sets/{class}`: project
//! quotas, their usage and defaults, and the `default` quota class
//! (`cinder/api/contrib/quotas.py`, `contrib/quota_classes.py`).
//!
//! The resources are Cinder's: `volumes`, `snapshots`, `gigabytes`, `backups`,
//! `backup_gigabytes`, `groups`, `per_volume_gigabytes`, and `volumes_<type>`,
//! `gigabytes_<type>`, `snapshots_<type>` for every volume type; the store's defaults name
//! them all ([`basalt_db::MetadataStore::default_quotas`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use basalt_db::QuotaUsage;
use serde_json::{Map, Value, json};

use crate::body::{self, Body};
use crate::ctx::Ctx;
use crate::fault::ApiError;
use crate::{ApiState, blocking};

type St = State<Arc<ApiState>>;
type Pairs = Query<Vec<(String, String)>>;

/// The largest limit (Cinder's `DB_MAX_INT`).
pub const MAX_LIMIT: i64 = 0x7FFF_FFFF;

/// Keys a quota set body may hold that are not resources (Cinder's `NON_QUOTA_KEYS`).
const NON_QUOTA_KEYS: [&str; 2] = ["tenant_id", "id"];

/// The quota routes.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route(
            "/v3/os-quota-sets/{project_id}",
            get(show).put(update).delete(delete),
        )
        .route("/v3/os-quota-sets/{project_id}/defaults", get(defaults))
        .route(
            "/v3/os-quota-class-sets/{class}",
            get(class_show).put(class_update),
        )
}

/// `{"id"?: .., "<resource>": limit, ...}` for every resource in `limits`.
pub fn quota_set_view(id: Option<&str>, limits: &BTreeMap<String, i64>) -> Value {
    let mut o = Map::new();
    if let Some(id) = id {
        o.insert("id".into(), json!(id));
    }
    for (r, l) in limits {
        o.insert(r.clone(), json!(l));
    }
    Value::Object(o)
}

/// `{"id": .., "<resource>": {"limit", "in_use", "reserved"}, ...}` over `resources` (a
/// resource nothing uses yet shows no usage and the default limit from `defaults`).
pub fn quota_usage_view(
    id: &str,
    resources: &BTreeMap<String, i64>,
    usage: &BTreeMap<String, QuotaUsage>,
) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(id));
    for (r, default) in resources {
        let u = usage.get(r).copied().unwrap_or(QuotaUsage {
            limit: *default,
            in_use: 0,
            reserved: 0,
        });
        o.insert(
            r.clone(),
            json!({"limit": u.limit, "in_use": u.in_use, "reserved": u.reserved}),
        );
    }
    Value::Object(o)
}

/// The limits of `project` for every resource in `resources`.
fn project_limits(
    resources: &BTreeMap<String, i64>,
    usage: &BTreeMap<String, QuotaUsage>,
) -> BTreeMap<String, i64> {
    resources
        .iter()
        .map(|(r, d)| (r.clone(), usage.get(r).map_or(*d, |u| u.limit)))
        .collect()
}

/// A limit as `oslo_utils.strutils.validate_integer` takes it: an integer or a string of
/// one, from −1 to [`MAX_LIMIT`].
///
/// # Errors
/// 400 naming the resource.
pub fn quota_value(key: &str, v: &Value) -> Result<i64, ApiError> {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match n {
        None => Err(ApiError::bad_request(format!("{key} must be an integer."))),
        Some(n) if n < -1 => Err(ApiError::bad_request(format!("{key} must be >= -1"))),
        Some(n) if n > MAX_LIMIT => Err(ApiError::bad_request(format!(
            "{key} must be <= {MAX_LIMIT}"
        ))),
        Some(n) => Ok(n),
    }
}

/// Validates `{"quota_set": {"<resource>": limit, ...}}` against the known resources; `id`
/// and `tenant_id` are ignored, as Cinder does.
///
/// # Errors
/// 400: not an object, empty, unknown resources (all named), bad values.
pub fn parse_quota_set(
    b: &Value,
    known: &BTreeMap<String, i64>,
) -> Result<Vec<(String, i64)>, ApiError> {
    if let Value::Object(top) = b {
        body::only(top, &["quota_set"])?;
    }
    let m = body::section(b, "quota_set")?;
    if m.is_empty() {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute quota_set. Value: {}. {} does not have enough properties",
        ));
    }
    let bad: Vec<&str> = m
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains_key(*k) && !NON_QUOTA_KEYS.contains(k))
        .collect();
    if !bad.is_empty() {
        return Err(ApiError::invalid_input(format!(
            "Bad key(s) in quota set: {}",
            bad.join(", ")
        )));
    }
    let mut out = Vec::new();
    for (k, v) in m {
        if NON_QUOTA_KEYS.contains(&k.as_str()) {
            continue;
        }
        out.push((k.clone(), quota_value(k, v)?));
    }
    Ok(out)
}

/// Validates `{"quota_class_set": {"<resource>": limit, ...}}`: integers from −1, or strings
/// of digits, for known resources only.
///
/// # Errors
/// 400 naming the field.
pub fn parse_quota_class_set(
    b: &Value,
    known: &BTreeMap<String, i64>,
) -> Result<Vec<(String, i64)>, ApiError> {
    if let Value::Object(top) = b {
        body::only(top, &["quota_class_set"])?;
    }
    let m = body::section(b, "quota_class_set")?;
    let bad: Vec<&str> = m
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains_key(*k))
        .collect();
    if !bad.is_empty() {
        return Err(ApiError::invalid_input(format!(
            "Bad key(s) in quota class set: {}",
            bad.join(", ")
        )));
    }
    let mut out = Vec::new();
    for (k, v) in m {
        let bad = |why: &str| {
            ApiError::bad_request(format!(
                "Invalid input for field/attribute {k}. Value: {v}. {why}"
            ))
        };
        let n = match v {
            Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| bad("is not of type 'integer', 'string'"))?,
            Value::String(s) if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) => s
                .parse::<i64>()
                .map_err(|_| bad(&format!("is greater than the maximum of {MAX_LIMIT}")))?,
            Value::String(_) => return Err(bad("does not match '^[0-9]*$'")),
            _ => return Err(bad("is not of type 'integer', 'string'")),
        };
        if n < -1 {
            return Err(bad("is less than the minimum of -1"));
        }
        if n > MAX_LIMIT {
            return Err(bad(&format!("is greater than the maximum of {MAX_LIMIT}")));
        }
        out.push((k.clone(), n));
    }
    Ok(out)
}

/// Refuses limits below what is in use and reserved (−1 and `per_volume_gigabytes` aside).
///
/// # Errors
/// 400 naming the first such resource.
pub fn check_usage(
    updates: &[(String, i64)],
    usage: &BTreeMap<String, QuotaUsage>,
) -> Result<(), ApiError> {
    for (k, v) in updates {
        if k == "per_volume_gigabytes" || *v == -1 {
            continue;
        }
        let used = usage.get(k).map_or(0, |u| u.in_use + u.reserved);
        if *v < used {
            return Err(ApiError::bad_request(format!(
                "Quota {k} limit must be equal or greater than existing resources. Current usage is {used} and the requested limit is {v}."
            )));
        }
    }
    Ok(())
}

async fn show(
    State(state): St,
    ctx: Ctx,
    Path(project): Path<String>,
    Query(q): Pairs,
) -> Result<Response, ApiError> {
    ctx.authorize(&state, "volume_extension:quotas:show", &project, None)?;
    let usage = match q.iter().rev().find(|(k, _)| k == "usage") {
        Some((_, v)) => body::str_bool(v).ok_or_else(|| {
            ApiError::bad_request(format!("Value '{v}' for usage is not a boolean-like"))
        })?,
        None => false,
    };
    blocking(&state, move |state| {
        let resources = state.db().default_quotas()?;
        let u = state.db().quota_usage(&project)?;
        let view = if usage {
            quota_usage_view(&project, &resources, &u)
        } else {
            quota_set_view(Some(&project), &project_limits(&resources, &u))
        };
        Ok(axum::Json(json!({"quota_set": view})).into_response())
    })
    .await
}

async fn update(
    State(state): St,
    ctx: Ctx,
    Path(project): Path<String>,
    Body(b): Body,
) -> Result<Response, ApiError> {
    ctx.authorize(&state, "volume_extension:quotas:update", &project, None)?;
    if project.chars().count() > 255 {
        return Err(ApiError::invalid_input(
            "quota_set_name has more than 255 characters.",
        ));
    }
    blocking(&state, move |state| {
        let resources = state.db().default_quotas()?;
        let updates = parse_quota_set(&b, &resources)?;
        // Everything is checked before anything changes (Cinder's two passes).
        check_usage(&updates, &state.db().quota_usage(&project)?)?;
        for (r, l) in &updates {
            state.db().set_quota_limit(&project, r, *l)?;
        }
        let u = state.db().quota_usage(&project)?;
        let view = quota_set_view(None, &project_limits(&resources, &u));
        Ok(axum::Json(json!({"quota_set": view})).into_response())
    })
    .await
}

async fn delete(
    State(state): St,
    ctx: Ctx,
    Path(project): Path<String>,
) -> Result<Response, ApiError> {
    ctx.authorize(&state, "volume_extension:quotas:delete", &project, None)?;
    blocking(&state, move |state| {
        state.db().delete_project_quotas(&project)?;
        Ok(StatusCode::OK.into_response())
    })
    .await
}

async fn defaults(
    State(state): St,
    ctx: Ctx,
    Path(project): Path<String>,
) -> Result<Response, ApiError> {
    ctx.authorize(&state, "volume_extension:quotas:show", &project, None)?;
    blocking(&state, move |state| {
        let d = state.db().default_quotas()?;
        Ok(axum::Json(json!({"quota_set": quota_set_view(Some(&project), &d)})).into_response())
    })
    .await
}

async fn class_show(
    State(state): St,
    ctx: Ctx,
    Path(class): Path<String>,
) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "volume_extension:quota_classes:get")?;
    // Cinder's `authorize_quota_class_context`: only admins, or members of the class (no
    // Basalt token carries a quota class).
    if !ctx.is_admin() {
        return Err(ApiError::forbidden("Policy doesn't allow this operation."));
    }
    blocking(&state, move |state| {
        // Only the default class has limits of its own; any other shows the defaults, as
        // a Cinder class without overrides does.
        let d = state.db().default_quotas()?;
        Ok(
            axum::Json(json!({"quota_class_set": quota_set_view(Some(&class), &d)}))
                .into_response(),
        )
    })
    .await
}

async fn class_update(
    State(state): St,
    ctx: Ctx,
    Path(class): Path<String>,
    Body(b): Body,
) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "volume_extension:quota_classes:update")?;
    if class.chars().count() > 255 {
        return Err(ApiError::invalid_input(
            "quota_class_name has more than 255 characters.",
        ));
    }
    blocking(&state, move |state| {
        let known = state.db().default_quotas()?;
        let updates = parse_quota_class_set(&b, &known)?;
        if class != "default" {
            return Err(ApiError::invalid_input(format!(
                "Basalt keeps only the 'default' quota class, not '{class}'."
            )));
        }
        for (r, l) in &updates {
            state.db().set_default_quota(r, *l)?;
        }
        let d = state.db().default_quotas()?;
        Ok(axum::Json(json!({"quota_class_set": quota_set_view(None, &d)})).into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeMap<String, i64> {
        basalt_db::DEFAULT_QUOTAS
            .iter()
            .map(|(r, l)| ((*r).to_owned(), *l))
            .chain([
                ("volumes_gold".to_owned(), -1),
                ("gigabytes_gold".to_owned(), -1),
                ("snapshots_gold".to_owned(), -1),
            ])
            .collect()
    }

    #[test]
    fn quota_views_have_every_resource() {
        let k = known();
        let v = quota_set_view(Some("p"), &k);
        for r in [
            "volumes",
            "snapshots",
            "gigabytes",
            "backups",
            "backup_gigabytes",
            "groups",
            "per_volume_gigabytes",
            "volumes_gold",
            "gigabytes_gold",
            "snapshots_gold",
        ] {
            assert!(v[r].is_i64(), "{r}");
        }
        assert_eq!(v["id"], "p");
        assert!(quota_set_view(None, &k).get("id").is_none());
        let usage = BTreeMap::from([(
            "volumes".to_owned(),
            QuotaUsage {
                limit: 5,
                in_use: 2,
                reserved: 1,
            },
        )]);
        let u = quota_usage_view("p", &k, &usage);
        assert_eq!(
            u["volumes"],
            json!({"limit": 5, "in_use": 2, "reserved": 1})
        );
        assert_eq!(
            u["gigabytes"],
            json!({"limit": 1000, "in_use": 0, "reserved": 0})
        );
        assert_eq!(project_limits(&k, &usage)["volumes"], 5);
    }

    #[test]
    fn quota_bodies_are_checked() {
        let k = known();
        assert_eq!(
            parse_quota_set(
                &json!({"quota_set": {"volumes": 5, "gigabytes_gold": "7", "id": "x"}}),
                &k
            )
            .ok(),
            Some(vec![("gigabytes_gold".into(), 7), ("volumes".into(), 5)])
        );
        for bad in [
            json!({"quota_set": {}}),
            json!({"quota_set": {"bogus": 1, "volumes": 1}}),
            json!({"quota_set": {"volumes": -2}}),
            json!({"quota_set": {"volumes": 1.5}}),
            json!({"quota_set": {"volumes": "many"}}),
            json!({"quota_set": {"volumes": true}}),
            json!({"quota_set": {"volumes": 2_147_483_648i64}}),
            json!({"quota_set": {"volumes": 1}, "other": 1}),
            json!({"quota": {"volumes": 1}}),
        ] {
            assert!(parse_quota_set(&bad, &k).is_err(), "{bad}");
        }
        let e = parse_quota_set(&json!({"quota_set": {"x": 1, "y": 1}}), &k).expect_err("bad");
        assert!(e.message.contains("x, y"), "{}", e.message);
        assert!(
            parse_quota_class_set(
                &json!({"quota_class_set": {"volumes": -1, "snapshots": "3"}}),
                &k
            )
            .is_ok()
        );
        for bad in [
            json!({"quota_class_set": {"volumes": "-1"}}),
            json!({"quota_class_set": {"volumes": -2}}),
            json!({"quota_class_set": {"id": 1}}),
            json!({"quota_class_set": {"volumes": null}}),
        ] {
            assert!(parse_quota_class_set(&bad, &k).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_cannot_go_below_usage() {
        let usage = BTreeMap::from([(
            "volumes".to_owned(),
            QuotaUsage {
                limit: 10,
                in_use: 3,
                reserved: 1,
            },
        )]);
        assert!(check_usage(&[("volumes".into(), 4)], &usage).is_ok());
        assert!(check_usage(&[("volumes".into(), -1)], &usage).is_ok());
        let e = check_usage(&[("volumes".into(), 3)], &usage).expect_err("below");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("Current usage is 4"), "{}", e.message);
        assert!(check_usage(&[("per_volume_gigabytes".into(), 0)], &usage).is_ok());
    }
}
