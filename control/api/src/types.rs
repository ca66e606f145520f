//! `/v3/{project_id}/types`: volume types (`cinder/api/v3/types.py`,
//! `contrib/types_manage.py`), their extra specs (`contrib/types_extra_specs.py`), private
//! type access (`contrib/volume_type_access.py`) and the per-project default types of 3.62
//! (`cinder/api/v3/default_types.py`, served project-less at `/v3/default-types`).
//!
//! The views follow Cinder's quirks: show and list build the v3 view (extra specs only with
//! `volume_extension:access_types_extra_specs`, trimmed to the user-visible keys without
//! `volume_extension:types_extra_specs:read_sensitive`; `qos_specs_id` with
//! `volume_extension:access_types_qos_specs_id`; `os-volume-type-access:is_public` with
//! `volume_extension:volume_type_access`), while create and update answer with the legacy
//! view (every extra spec, no `qos_specs_id`; create adds the access flag, update does not).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use basalt_db::{DbError, Field, FilterOp, ListQuery, Val, VolumeType};
use serde_json::{Map, Value, json};

use crate::body::{self, Body};
use crate::ctx::Ctx;
use crate::fault::ApiError;
use crate::paging;
use crate::{ApiState, blocking};

type St = State<Arc<ApiState>>;
type Pairs = Query<Vec<(String, String)>>;

/// Extra specs every reader may see (Cinder's `USER_VISIBLE_EXTRA_SPECS`).
pub const USER_VISIBLE_EXTRA_SPECS: [&str; 3] = [
    "RESKEY:availability_zones",
    "multiattach",
    "replication_enabled",
];

/// The most types one page lists (Cinder's `osapi_max_limit`).
const MAX_LIMIT: u64 = 1000;

/// The type, extra spec, access and default-type routes.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v3/types", get(list).post(create))
        .route("/v3/types/default", get(show_default))
        .route("/v3/types/{id}", get(show).put(update).delete(delete))
        .route("/v3/types/{id}/action", post(action))
        .route("/v3/types/{id}/os-volume-type-access", get(access_list))
        .route(
            "/v3/types/{id}/extra_specs",
            get(specs_index).post(specs_create),
        )
        .route(
            "/v3/types/{id}/extra_specs/{key}",
            get(spec_show).put(spec_update).delete(spec_delete),
        )
        .route("/v3/default-types", get(defaults_index))
        .route("/v3/default-types/", get(defaults_index))
        .route(
            "/v3/default-types/{project_id}",
            get(default_show).put(default_set).delete(default_unset),
        )
}

// --- views ---

/// What a view may show, as the caller's policies decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shown {
    /// Extra specs are shown (`volume_extension:access_types_extra_specs`).
    pub extra_specs: bool,
    /// Every extra spec, not only the user-visible ones
    /// (`volume_extension:types_extra_specs:read_sensitive`).
    pub sensitive: bool,
    /// `qos_specs_id` (`volume_extension:access_types_qos_specs_id`).
    pub qos: bool,
    /// `os-volume-type-access:is_public` (`volume_extension:volume_type_access`).
    pub access: bool,
}

impl Shown {
    /// What `ctx` may see.
    pub fn for_ctx(ctx: &Ctx, state: &ApiState) -> Shown {
        let p = ctx.project();
        Shown {
            extra_specs: ctx.allowed(state, "volume_extension:access_types_extra_specs", p),
            sensitive: ctx.allowed(
                state,
                "volume_extension:types_extra_specs:read_sensitive",
                p,
            ),
            qos: ctx.allowed(state, "volume_extension:access_types_qos_specs_id", p),
            access: ctx.allowed(state, "volume_extension:volume_type_access", p),
        }
    }
}

/// The extra specs a caller sees: all of them, or only the user-visible ones.
pub fn visible_specs(
    specs: &BTreeMap<String, String>,
    sensitive: bool,
) -> BTreeMap<String, String> {
    specs
        .iter()
        .filter(|(k, _)| sensitive || USER_VISIBLE_EXTRA_SPECS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The v3 view of a type (show, list, default).
pub fn type_view(t: &VolumeType, shown: Shown) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(t.id));
    o.insert("name".into(), json!(t.name));
    o.insert("is_public".into(), json!(t.is_public));
    o.insert("description".into(), json!(t.description));
    if shown.extra_specs {
        o.insert(
            "extra_specs".into(),
            json!(visible_specs(&t.extra_specs, shown.sensitive)),
        );
    }
    if shown.qos {
        // Basalt has no QoS specs: no type is associated with one.
        o.insert("qos_specs_id".into(), Value::Null);
    }
    if shown.access {
        o.insert("os-volume-type-access:is_public".into(), json!(t.is_public));
    }
    Value::Object(o)
}

/// The legacy view create and update answer with: every extra spec, no `qos_specs_id`; the
/// access flag when `access` (create only, and only with `volume_extension:volume_type_access`).
pub fn manage_view(t: &VolumeType, access: bool) -> Value {
    let mut v = json!({
        "id": t.id,
        "name": t.name,
        "is_public": t.is_public,
        "extra_specs": t.extra_specs,
        "description": t.description,
    });
    if access {
        v["os-volume-type-access:is_public"] = json!(t.is_public);
    }
    v
}

// --- lookups ---

fn type_gone(id: &str) -> ApiError {
    ApiError::not_found(format!("Volume type {id} could not be found."))
}

/// A type by id (not by name, as Cinder's `GET /types/{id}`) that the caller may see: private
/// types are there only for admins and the projects given access.
///
/// # Errors
/// 404.
pub fn find_type(state: &ApiState, ctx: &Ctx, id: &str) -> Result<VolumeType, ApiError> {
    let t = match state.db().get_volume_type(id) {
        Ok(t) => t,
        Err(DbError::NotFound { .. }) => return Err(type_gone(id)),
        Err(e) => return Err(e.into()),
    };
    if !t.id.eq_ignore_ascii_case(id) {
        return Err(type_gone(id));
    }
    if !ctx.is_admin() && !t.is_public && !t.access.iter().any(|p| p == ctx.project()) {
        return Err(type_gone(id));
    }
    Ok(t)
}

/// The type volumes of the caller's project get: its 3.62 default, else the configured one.
fn default_type(state: &ApiState, ctx: &Ctx) -> Result<VolumeType, ApiError> {
    let gone = || ApiError::not_found("Default volume type can not be found.");
    if let Some(id) = state.db().get_default_type(ctx.project())? {
        match state.db().get_volume_type(&id) {
            Ok(t) => return Ok(t),
            Err(DbError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    match state.db().get_volume_type(&state.cfg.default_volume_type) {
        Ok(t) => Ok(t),
        Err(DbError::NotFound { .. }) => Err(gone()),
        Err(e) => Err(e.into()),
    }
}

// --- validation ---

fn field_error(field: &str, value: &Value, why: &str) -> ApiError {
    let shown: String = value.to_string().chars().take(80).collect();
    ApiError::bad_request(format!(
        "Invalid input for field/attribute {field}. Value: {shown}. {why}"
    ))
}

/// An optional description: a string (or null) of at most 255 printable characters.
fn opt_description(m: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    let d = body::opt_str(m, key, 255)?;
    if let Some(s) = &d
        && s.chars().any(char::is_control)
    {
        return Err(field_error(
            key,
            &m[key],
            "contains characters that are not printable",
        ));
    }
    Ok(d)
}

fn spec_key_ok(k: &str, spaces: bool) -> bool {
    let n = k.chars().count();
    (1..=255).contains(&n)
        && k.chars().all(|c| {
            c.is_ascii_alphanumeric() || "-_:.".contains(c) || (spaces && (c == ' ' || c == '/'))
        })
}

/// Extra specs as Cinder's schemas take them: keys of `[a-zA-Z0-9-_:.]` (and space and `/`
/// when `spaces`, as type create allows), 1–255 long; values strings of at most 255, or null
/// (kept as an empty string).
///
/// # Errors
/// 400 naming the field.
pub fn parse_specs(
    v: &Value,
    field: &str,
    spaces: bool,
) -> Result<BTreeMap<String, String>, ApiError> {
    let Value::Object(m) = v else {
        return Err(field_error(field, v, "is not of type 'object'"));
    };
    let mut out = BTreeMap::new();
    for (k, val) in m {
        if !spec_key_ok(k, spaces) {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute {field}. Additional properties are not allowed ('{k}' was unexpected)"
            )));
        }
        let s = match val {
            Value::Null => String::new(),
            Value::String(s) if s.chars().count() <= 255 => s.clone(),
            Value::String(_) => return Err(field_error(k, val, "is too long (at most 255)")),
            other => return Err(field_error(k, other, "is not of type 'string'")),
        };
        out.insert(k.clone(), s);
    }
    Ok(out)
}

/// Refuses `cacheable` with `multiattach` (Cinder's `_check_cacheable`), over the new specs
/// and the type's current ones.
///
/// # Errors
/// 400.
pub fn check_cacheable(
    new: &BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    let on = |m: &BTreeMap<String, String>, k: &str| m.get(k).is_some_and(|v| v == "<is> True");
    let clash = (on(new, "multiattach") && on(current, "cacheable"))
        || (on(new, "cacheable") && on(current, "multiattach"))
        || (on(new, "cacheable") && on(new, "multiattach"));
    if clash {
        return Err(ApiError::bad_request(
            "cacheable cannot be set with multiattach.",
        ));
    }
    Ok(())
}

/// A type create body, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewType {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Public (default true).
    pub is_public: bool,
    /// Extra specs.
    pub extra_specs: BTreeMap<String, String>,
}

/// Validates `{"volume_type": {"name", "description", "extra_specs",
/// "os-volume-type-access:is_public"}}`.
///
/// # Errors
/// 400 naming the field.
pub fn parse_create(b: &Value) -> Result<NewType, ApiError> {
    if let Value::Object(top) = b {
        body::only(top, &["volume_type"])?;
    }
    let m = body::section(b, "volume_type")?;
    body::only(
        m,
        &[
            "name",
            "description",
            "extra_specs",
            "os-volume-type-access:is_public",
        ],
    )?;
    let name = body::req_str(m, "name", 255)?;
    let description = opt_description(m, "description")?;
    let extra_specs = match m.get("extra_specs") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(v) => parse_specs(v, "extra_specs", true)?,
    };
    let is_public = body::opt_bool(m, "os-volume-type-access:is_public")?.unwrap_or(true);
    Ok(NewType {
        name,
        description,
        is_public,
        extra_specs,
    })
}

/// A type update body, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TypeUpdate {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New visibility.
    pub is_public: Option<bool>,
}

/// Validates `{"volume_type": {"name", "description", "is_public"}}`: at least one of them.
///
/// # Errors
/// 400 naming the field.
pub fn parse_update(b: &Value) -> Result<TypeUpdate, ApiError> {
    if let Value::Object(top) = b {
        body::only(top, &["volume_type"])?;
    }
    let m = body::section(b, "volume_type")?;
    body::only(m, &["name", "description", "is_public"])?;
    let name = body::opt_str(m, "name", 255)?;
    if let Some(n) = &name {
        if n.is_empty() {
            return Err(field_error("name", &m["name"], "should be non-empty"));
        }
        if n.trim().is_empty() {
            return Err(ApiError::bad_request("Volume type name can not be empty."));
        }
    }
    let u = TypeUpdate {
        name,
        description: opt_description(m, "description")?,
        is_public: body::opt_bool(m, "is_public")?,
    };
    if u == TypeUpdate::default() {
        return Err(ApiError::bad_request(
            "Specify volume type name, description, is_public or a combination thereof.",
        ));
    }
    Ok(u)
}

// --- list parameters ---

/// A parsed `GET /types` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeQuery {
    /// `Some(true)`: public types (and the caller's private ones); `Some(false)`: private
    /// ones; `None`: all (admins' `is_public=None`).
    pub is_public: Option<bool>,
    /// `extra_specs={'k': 'v'}` (3.52, or admins).
    pub extra_specs: Option<BTreeMap<String, String>>,
    /// Other filters (admins): type columns must match exactly.
    pub other: Vec<(String, String)>,
    /// Sort keys, ascending when true; `created_at desc` when empty.
    pub sort: Vec<(String, bool)>,
    /// Start after this type id.
    pub marker: Option<String>,
    /// At most this many.
    pub limit: u64,
    /// Skip this many (after the marker).
    pub offset: u64,
    /// The query pairs but the marker, for the next link.
    pub carry: Vec<(String, String)>,
}

const TYPE_SORT_KEYS: [&str; 7] = [
    "id",
    "name",
    "description",
    "is_public",
    "created_at",
    "updated_at",
    "qos_specs_id",
];

fn parse_sort(
    sort: Option<&str>,
    key: Option<&str>,
    dir: Option<&str>,
) -> Result<Vec<(String, bool)>, ApiError> {
    if sort.is_some() && (key.is_some() || dir.is_some()) {
        return Err(ApiError::bad_request(
            "The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used with the 'sort' parameter.",
        ));
    }
    let parse_dir = |d: &str| match d.trim().to_ascii_lowercase().as_str() {
        "asc" => Ok(true),
        "desc" => Ok(false),
        other => Err(ApiError::bad_request(format!(
            "Unknown sort direction, must be 'desc' or 'asc': {other}"
        ))),
    };
    let check = |k: &str| {
        if TYPE_SORT_KEYS.contains(&k) {
            Ok(k.to_owned())
        } else {
            Err(ApiError::invalid_input(format!("Invalid sort key: {k}")))
        }
    };
    let mut out = Vec::new();
    if let Some(s) = sort {
        for item in s.split(',').filter(|i| !i.trim().is_empty()) {
            let (k, asc) = match item.split_once(':') {
                Some((k, d)) => (k, parse_dir(d)?),
                None => (item, false),
            };
            out.push((check(k.trim())?, asc));
        }
    } else if let Some(k) = key {
        let asc = match dir {
            Some(d) => parse_dir(d)?,
            None => false,
        };
        out.push((check(k.trim())?, asc));
    } else if let Some(d) = dir {
        out.push(("created_at".to_owned(), parse_dir(d)?));
    }
    Ok(out)
}

/// `metadata`-style dict filters: JSON, or the Python repr Cinder's `literal_eval` takes.
fn parse_dict(v: &str) -> Option<BTreeMap<String, String>> {
    let m = match serde_json::from_str::<Value>(v) {
        Ok(Value::Object(m)) => m,
        _ => match serde_json::from_str::<Value>(&v.replace('\'', "\"")) {
            Ok(Value::Object(m)) => m,
            _ => return None,
        },
    };
    Some(
        m.into_iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, s)
            })
            .collect(),
    )
}

fn non_negative(v: &str, name: &str) -> Result<u64, ApiError> {
    let n: i64 = v
        .trim()
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{name} param must be an integer")))?;
    if n < 0 {
        return Err(ApiError::bad_request(format!(
            "{name} param must be positive"
        )));
    }
    Ok(n.unsigned_abs())
}

/// Parses a type list query as Cinder's `VolumeTypesController._get_volume_types` does.
///
/// # Errors
/// 400 for bad paging or sort values, a bad `is_public`, and (non-admins from 3.52) filters
/// other than `is_public` and `extra_specs`.
pub fn parse_list(
    pairs: &[(String, String)],
    is_admin: bool,
    filters_version: bool,
) -> Result<TypeQuery, ApiError> {
    let get = |k: &str| {
        pairs
            .iter()
            .rev()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    };
    let limit = match get("limit") {
        Some(l) => non_negative(l, "limit")?.min(MAX_LIMIT),
        None => MAX_LIMIT,
    };
    let offset = match get("offset") {
        Some(o) => non_negative(o, "offset")?,
        None => 0,
    };
    let sort = parse_sort(get("sort"), get("sort_key"), get("sort_dir"))?;
    const PAGING: [&str; 6] = ["limit", "marker", "offset", "sort", "sort_key", "sort_dir"];
    let mut filters: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| !PAGING.contains(&k.as_str()))
        .cloned()
        .collect();
    if !is_admin {
        if filters_version {
            let bad: Vec<&str> = filters
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| !["is_public", "extra_specs", "all_tenants"].contains(k))
                .collect();
            if !bad.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "Invalid filters {} are found in query options.",
                    bad.join(",")
                )));
            }
            filters.retain(|(k, _)| k != "all_tenants");
        } else {
            filters.retain(|(k, _)| k == "is_public");
        }
    }
    let mut q = TypeQuery {
        is_public: Some(true),
        extra_specs: None,
        other: Vec::new(),
        sort,
        marker: get("marker").map(str::to_owned),
        limit,
        offset,
        carry: pairs
            .iter()
            .filter(|(k, _)| k != "marker")
            .cloned()
            .collect(),
    };
    for (k, v) in filters {
        match k.as_str() {
            "is_public" => {
                if is_admin {
                    q.is_public = if v.eq_ignore_ascii_case("none") {
                        None
                    } else {
                        Some(body::str_bool(&v).ok_or_else(|| {
                            ApiError::bad_request(format!("Invalid is_public filter [{v}]"))
                        })?)
                    };
                }
            }
            "extra_specs" => {
                q.extra_specs = Some(parse_dict(&v).ok_or_else(|| {
                    ApiError::bad_request(format!("Invalid extra_specs filter: {v}"))
                })?);
            }
            _ => q.other.push((k, v)),
        }
    }
    Ok(q)
}

fn type_column(t: &VolumeType, k: &str) -> Option<Value> {
    Some(match k {
        "id" => json!(t.id),
        "name" => json!(t.name),
        "description" => json!(t.description),
        "is_public" => json!(t.is_public),
        "created_at" | "updated_at" => json!(t.created_at.0),
        "qos_specs_id" => Value::Null,
        _ => return None,
    })
}

fn cmp_values(a: &Value, b: &Value) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => x
            .as_i64()
            .unwrap_or_default()
            .cmp(&y.as_i64().unwrap_or_default()),
        _ => Ordering::Equal,
    }
}

/// Filters, sorts and pages `types` (already restricted to what the caller may list).
///
/// # Errors
/// 404 for an unknown marker.
pub fn select_types(
    mut types: Vec<VolumeType>,
    q: &TypeQuery,
    project: &str,
    sensitive: bool,
) -> Result<Vec<VolumeType>, ApiError> {
    if let Some(specs) = &q.extra_specs {
        // Filtering on specs the caller may not see would tell them apart: nothing matches.
        if !sensitive
            && specs
                .keys()
                .any(|k| !USER_VISIBLE_EXTRA_SPECS.contains(&k.as_str()))
        {
            return Ok(Vec::new());
        }
    }
    types.retain(|t| match q.is_public {
        Some(true) => t.is_public || t.access.iter().any(|p| p == project),
        Some(false) => !t.is_public,
        None => true,
    });
    if let Some(specs) = &q.extra_specs {
        types.retain(|t| {
            specs.iter().all(|(k, v)| match t.extra_specs.get(k) {
                Some(have) if k == "RESKEY:availability_zones" => have.contains(v.as_str()),
                Some(have) => have == v,
                None => false,
            })
        });
    }
    for (k, v) in &q.other {
        if !matches!(k.as_str(), "id" | "name" | "description") {
            // Not a column of volume types: Cinder's query matches nothing.
            return Ok(Vec::new());
        }
        types.retain(|t| type_column(t, k).and_then(|c| c.as_str().map(|s| s == v)) == Some(true));
    }
    let mut sort = q.sort.clone();
    if sort.is_empty() {
        sort.push(("created_at".to_owned(), false));
    }
    let tie_asc = sort[0].1;
    types.sort_by(|a, b| {
        for (k, asc) in &sort {
            let (x, y) = (
                type_column(a, k).unwrap_or(Value::Null),
                type_column(b, k).unwrap_or(Value::Null),
            );
            let o = cmp_values(&x, &y);
            let o = if *asc { o } else { o.reverse() };
            if o.is_ne() {
                return o;
            }
        }
        let o = a.id.cmp(&b.id);
        if tie_asc { o } else { o.reverse() }
    });
    let mut start = 0usize;
    if let Some(m) = &q.marker {
        let i = types
            .iter()
            .position(|t| &t.id == m)
            .ok_or_else(|| ApiError::not_found(format!("Marker {m} could not be found.")))?;
        start = i + 1;
    }
    let skip = usize::try_from(q.offset).unwrap_or(usize::MAX);
    let take = usize::try_from(q.limit).unwrap_or(usize::MAX);
    Ok(types
        .into_iter()
        .skip(start)
        .skip(skip)
        .take(take)
        .collect())
}

// --- types ---

async fn list(State(state): St, ctx: Ctx, Query(pairs): Pairs) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "volume_extension:type_get_all")?;
    let q = parse_list(&pairs, ctx.is_admin(), ctx.version.at_least(52))?;
    blocking(&state, move |state| {
        let shown = Shown::for_ctx(&ctx, state);
        let all = if ctx.is_admin() {
            state.db().list_volume_types(None)?
        } else {
            state.db().list_volume_types(Some(ctx.project()))?
        };
        let page = select_types(all, &q, ctx.project(), shown.sensitive)?;
        let items: Vec<Value> = page.iter().map(|t| type_view(t, shown)).collect();
        let mut out = json!({"volume_types": items});
        let p = paging::ListParams {
            limit: q.limit,
            carry: q.carry.clone(),
            ..paging::ListParams::default()
        };
        if let Some(l) = paging::next_link(
            &ctx,
            &p,
            "types",
            page.len(),
            page.last().map(|t| t.id.as_str()),
        ) {
            out["volume_type_links"] = l;
        }
        Ok(axum::Json(out).into_response())
    })
    .await
}

async fn show(State(state): St, ctx: Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    blocking(&state, move |state| {
        let t = find_type(state, &ctx, &id)?;
        ctx.authorize_own(state, "volume_extension:type_get")?;
        let shown = Shown::for_ctx(&ctx, state);
        Ok(axum::Json(json!({"volume_type": type_view(&t, shown)})).into_response())
    })
    .await
}

async fn show_default(State(state): St, ctx: Ctx) -> Result<Response, ApiError> {
    blocking(&state, move |state| {
        let t = default_type(state, &ctx)?;
        ctx.authorize_own(state, "volume_extension:type_get")?;
        let shown = Shown::for_ctx(&ctx, state);
        Ok(axum::Json(json!({"volume_type": type_view(&t, shown)})).into_response())
    })
    .await
}

async fn create(State(state): St, ctx: Ctx, Body(b): Body) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "volume_extension:type_create")?;
    let new = parse_create(&b)?;
    blocking(&state, move |state| {
        let t = state
            .db()
            .create_volume_type(
                &new.name,
                new.description.as_deref(),
                new.is_public,
                &new.extra_specs,
            )
            .map_err(|e| match e {
                DbError::Duplicate { .. } => {
                    ApiError::conflict(format!("Volume Type {} already exists.", new.name))
                }
                other => other.into(),
            })?;
        let access = ctx.allowed(state, "volume_extension:volume_type_access", ctx.project());
        Ok(axum::Json(json!({"volume_type": manage_view(&t, access)})).into_response())
    })
    .await
}

async fn update(
    State(state): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(b): Body,
) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "volume_extension:type_update")?;
    let u = parse_update(&b)?;
    blocking(&state, move |state| {
        let t = find_type(state, &ctx, &id)?;
        let t = state
            .db()
            .update_volume_type(
                &t.id,
                u.name.as_deref(),
                u.description.as_deref().map(Some),
                u.is_public,
            )
            .map_err(|e| match e {
                DbError::Duplicate { .. } => ApiError::conflict(format!(
                    "Volume Type {} already exists.",
                    u.name.as_deref().unwrap_or(&id)
                )),
                other => other.into(),
            })?;
        Ok(axum::Json(json!({"volume_type": manage_view(&t, false)})).into_response())
    })
    .await
}

async fn delete(State(state): St, ctx: Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "volume_extension:type_delete")?;
    blocking(&state, move |state| {
        let t = find_type(state, &ctx, &id)?;
        let is_default = t.name == state.cfg.default_volume_type
            || t.id == state.cfg.default_volume_type
            || state
                .db()
                .list_default_types()?
                .iter()
                .any(|(_, ty)| *ty == t.id);
        if is_default {
            return Err(ApiError::bad_request(format!(
                "The volume type {} is a default volume type and cannot be deleted.",
                t.id
            )));
        }
        state.db().delete_volume_type(&t.id).map_err(|e| match e {
            DbError::InUse { .. } => ApiError::bad_request("Target volume type is still in use."),
            other => other.into(),
        })?;
        Ok(StatusCode::ACCEPTED.into_response())
    })
    .await
}

// --- extra specs ---

/// Refuses spec changes on a type volumes use (Cinder's `_allow_update`).
fn allow_spec_change(state: &ApiState, type_id: &str) -> Result<(), ApiError> {
    let q = ListQuery {
        project_id: None,
        limit: Some(1),
        ..ListQuery::default()
    }
    .filter(
        Field::VolumeTypeId,
        FilterOp::Eq,
        Val::Text(type_id.to_owned()),
    );
    if !state.db().list_volumes(&q)?.items.is_empty() {
        return Err(ApiError::bad_request("Volume Type is currently in use."));
    }
    Ok(())
}

fn spec_gone(type_id: &str, key: &str) -> ApiError {
    ApiError::not_found(format!(
        "Volume Type {type_id} has no extra specs with key {key}."
    ))
}

fn sensitive(ctx: &Ctx, state: &ApiState) -> bool {
    ctx.allowed(
        state,
        "volume_extension:types_extra_specs:read_sensitive",
        ctx.project(),
    )
}

async fn specs_index(
    State(state): St,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "volume_extension:types_extra_specs:index")?;
    blocking(&state, move |state| {
        let t = find_type(state, &ctx, &id)?;
        let specs = visible_specs(&t.extra_specs, sensitive(&ctx, state));
        Ok(axum::Json(json!({"extra_specs": specs})).into_response())
    })
    .await
}

async fn specs_create(
    State(state): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(b): Body,
) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "volume_extension:types_extra_specs:create")?;
    if let Value::Object(top) = &b {
        body::only(top, &["extra_specs"])?;
    }
    let specs = match b.get("extra_specs") {
        Some(v) => parse_specs(v, "extra_specs", false)?,
        None => {
            return Err(ApiError::bad_request(
                "Invalid input for field/attribute extra_specs. 'extra_specs' is a required property",
            ));
        }
    };
    blocking(&state, move |state| {
        allow_spec_change(state, &id)?;
        let t = find_type(state, &ctx, &id)?;
        check_cacheable(&specs, &t.extra_specs)?;
        state.db().set_extra_specs(&t.id, &specs)?;
        Ok(axum::Json(b).into_response())
    })
    .await
}

async fn spec_show(
    State(state): St,
    ctx: Ctx,
    Path((id, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "volume_extension:types_extra_specs:show")?;
    blocking(&state, move |state| {
        let t = find_type(state, &ctx, &id)?;
        let specs = visible_specs(&t.extra_specs, sensitive(&ctx, state));
        match specs.get(&key) {
            Some(v) => Ok(axum::Json(json!({ key.clone(): v })).into_response()),
            None => Err(spec_gone(&id, &key)),
        }
    })
    .await
}

/// Validates `PUT /types/{id}/extra_specs/{key}`'s body: one spec, named as in the URL.
///
/// # Errors
/// 400.
pub fn parse_spec_update(b: &Value, key: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let Value::Object(m) = b else {
        return Err(field_error("extra_specs", b, "is not of type 'object'"));
    };
    if m.len() != 1 {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute extra_specs. Value: {}. must have exactly one property",
            Value::Object(m.clone())
        )));
    }
    let specs = parse_specs(b, "extra_specs", false)?;
    if !specs.contains_key(key) {
        return Err(ApiError::bad_request("Request body and URI mismatch"));
    }
    Ok(specs)
}

async fn spec_update(
    State(state): St,
    ctx: Ctx,
    Path((id, key)): Path<(String, String)>,
    Body(b): Body,
) -> Result<Response, ApiError> {
    ctx.authorize_own(&state, "volume_extension:types_extra_specs:update")?;
    let specs = parse_spec_update(&b, &key)?;
    blocking(&state, move |state| {
        allow_spec_change(state, &id)?;
        let t = find_type(state, &ctx, &id)?;
        check_cacheable(&specs, &t.extra_specs)?;
        state.db().set_extra_specs(&t.id, &specs)?;
        Ok(axum::Json(b).into_response())
    })
    .await
}

async fn spec_delete(
    State(state): St,
    ctx: Ctx,
    Path((id, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    blocking(&state, move |state| {
        let t = find_type(state, &ctx, &id)?;
        ctx.authorize_own(state, "volume_extension:types_extra_specs:delete")?;
        allow_spec_change(state, &t.id)?;
        state
            .db()
            .unset_extra_spec(&t.id, &key)
            .map_err(|e| match e {
                DbError::NotFound { .. } => spec_gone(&id, &key),
                other => other.into(),
            })?;
        Ok(StatusCode::ACCEPTED.into_response())
    })
    .await
}

// --- access ---

/// An access action body: `(grant, project)`.
///
/// # Errors
/// 400 for anything but one `addProjectAccess` or `removeProjectAccess` with a `project` of
/// 1–255 characters.
pub fn parse_access_action(b: &Value) -> Result<(bool, String), ApiError> {
    let Value::Object(top) = b else {
        return Err(ApiError::bad_request("Malformed request body"));
    };
    let Some(name) = top.keys().next().cloned() else {
        return Err(ApiError::bad_request("Malformed request body"));
    };
    let grant = match name.as_str() {
        "addProjectAccess" => true,
        "removeProjectAccess" => false,
        other => {
            return Err(ApiError::bad_request(format!(
                "There is no such action: {other}"
            )));
        }
    };
    body::only(top, &[name.as_str()])?;
    let m = body::section(b, &name)?;
    body::only(m, &["project"])?;
    let project = body::req_str(m, "project", 255)?;
    Ok((grant, project))
}

async fn action(
    State(state): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(b): Body,
) -> Result<Response, ApiError> {
    let (grant, project) = parse_access_action(&b)?;
    ctx.authorize_own(
        &state,
        if grant {
            "volume_extension:volume_type_access:addProjectAccess"
        } else {
            "volume_extension:volume_type_access:removeProjectAccess"
        },
    )?;
    blocking(&state, move |state| {
        let t = find_type(state, &ctx, &id)?;
        if t.is_public {
            return Err(ApiError::bad_request(
                "Invalid volume type: Type access modification is not applicable to public volume type.",
            ));
        }
        state
            .db()
            .set_type_access(&t.id, &project, grant)
            .map_err(|e| match e {
                DbError::Duplicate { .. } => ApiError::conflict(format!(
                    "Volume type access for {} / {project} combination already exists.",
                    t.id
                )),
                DbError::NotFound { .. } => ApiError::not_found(format!(
                    "Volume type access not found for {} / {project} combination.",
                    t.id
                )),
                other => other.into(),
            })?;
        Ok(StatusCode::ACCEPTED.into_response())
    })
    .await
}

/// `{"volume_type_access": [{"volume_type_id", "project_id"}]}` of a private type.
pub fn access_view(t: &VolumeType) -> Value {
    let items: Vec<Value> = t
        .access
        .iter()
        .map(|p| json!({"volume_type_id": t.id, "project_id": p}))
        .collect();
    json!({ "volume_type_access": items })
}

async fn access_list(
    State(state): St,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    ctx.authorize_own(
        &state,
        "volume_extension:volume_type_access:get_all_for_type",
    )?;
    blocking(&state, move |state| {
        let t = find_type(state, &ctx, &id)?;
        if t.is_public {
            return Err(ApiError::not_found(
                "Access list not available for public volume types.",
            ));
        }
        Ok(axum::Json(access_view(&t)).into_response())
    })
    .await
}

// --- default types (3.62) ---

fn needs_362(ctx: &Ctx) -> Result<(), ApiError> {
    if ctx.version.at_least(62) {
        Ok(())
    } else {
        Err(ApiError::not_found("The resource could not be found."))
    }
}

/// Checks the project exists when the built-in identity is the one in use (Cinder asks
/// Keystone), then enforces `rule` for it.
fn check_project(state: &ApiState, ctx: &Ctx, project: &str, rule: &str) -> Result<(), ApiError> {
    if let Some(id) = &state.identity {
        let found = match id.get_project(project) {
            Ok(p) => p.id == project,
            Err(basalt_identity::IdentityError::NotFound { .. }) => false,
            Err(e) => {
                tracing::error!(error = %e, "identity lookup failed");
                return Err(ApiError::internal(
                    "The server has either erred or is incapable of performing the requested operation.",
                ));
            }
        };
        if !found {
            return Err(ApiError::not_found(format!(
                "Project with id {project} not found."
            )));
        }
    }
    ctx.authorize(state, rule, project, None).map_err(|e| {
        if e.status == StatusCode::FORBIDDEN {
            ApiError::forbidden("You are not authorized to perform this operation.")
        } else {
            e
        }
    })
}

/// `{"project_id", "volume_type_id"}`.
pub fn default_view(project: &str, type_id: &str) -> Value {
    json!({"project_id": project, "volume_type_id": type_id})
}

/// Validates `{"default_type": {"volume_type": "<name or id>"}}`.
///
/// # Errors
/// 400 naming the field.
pub fn parse_default(b: &Value) -> Result<String, ApiError> {
    let m = body::section(b, "default_type")?;
    body::only(m, &["volume_type"])?;
    body::req_str(m, "volume_type", 255)
}

async fn default_set(
    State(state): St,
    ctx: Ctx,
    Path(project): Path<String>,
    Body(b): Body,
) -> Result<Response, ApiError> {
    needs_362(&ctx)?;
    let wanted = parse_default(&b)?;
    blocking(&state, move |state| {
        check_project(
            state,
            &ctx,
            &project,
            "volume_extension:default_set_or_update",
        )?;
        let t = match state.db().get_volume_type(&wanted) {
            Ok(t) => t,
            Err(DbError::NotFound { .. }) => {
                return Err(ApiError::bad_request(format!(
                    "Volume type {wanted} could not be found."
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let id = state.db().set_default_type(&project, &t.id)?;
        Ok(axum::Json(json!({"default_type": default_view(&project, &id)})).into_response())
    })
    .await
}

async fn default_show(
    State(state): St,
    ctx: Ctx,
    Path(project): Path<String>,
) -> Result<Response, ApiError> {
    needs_362(&ctx)?;
    blocking(&state, move |state| {
        check_project(state, &ctx, &project, "volume_extension:default_get")?;
        match state.db().get_default_type(&project)? {
            Some(id) => Ok(
                axum::Json(json!({"default_type": default_view(&project, &id)})).into_response(),
            ),
            None => Err(ApiError::not_found(format!(
                "Default type for project {project} not found."
            ))),
        }
    })
    .await
}

async fn defaults_index(State(state): St, ctx: Ctx) -> Result<Response, ApiError> {
    needs_362(&ctx)?;
    ctx.authorize_own(&state, "volume_extension:default_get_all")
        .map_err(|e| {
            if e.status == StatusCode::FORBIDDEN {
                ApiError::forbidden("You are not authorized to perform this operation.")
            } else {
                e
            }
        })?;
    blocking(&state, move |state| {
        let items: Vec<Value> = state
            .db()
            .list_default_types()?
            .iter()
            .map(|(p, t)| default_view(p, t))
            .collect();
        Ok(axum::Json(json!({"default_types": items})).into_response())
    })
    .await
}

async fn default_unset(
    State(state): St,
    ctx: Ctx,
    Path(project): Path<String>,
) -> Result<Response, ApiError> {
    needs_362(&ctx)?;
    blocking(&state, move |state| {
        match check_project(state, &ctx, &project, "volume_extension:default_unset") {
            Ok(()) => {}
            // A deleted project's default is unset all the same (Cinder logs and goes on),
            // once the caller may unset defaults at all.
            Err(e) if e.status == StatusCode::NOT_FOUND => {
                ctx.authorize(state, "volume_extension:default_unset", &project, None)?;
            }
            Err(e) => return Err(e),
        }
        state.db().unset_default_type(&project)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_db::Timestamp;

    fn vt(id: &str, name: &str, public: bool, created: i64) -> VolumeType {
        VolumeType {
            id: id.into(),
            name: name.into(),
            description: None,
            is_public: public,
            extra_specs: BTreeMap::from([
                ("volume_backend_name".into(), "basalt".into()),
                ("multiattach".into(), "<is> True".into()),
            ]),
            access: if public { vec![] } else { vec!["p1".into()] },
            created_at: Timestamp(created),
        }
    }

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
    }

    #[test]
    fn views_follow_the_policies() {
        let t = vt("t1", "gold", true, 1);
        let reader = type_view(
            &t,
            Shown {
                extra_specs: true,
                ..Shown::default()
            },
        );
        assert_eq!(reader["extra_specs"], json!({"multiattach": "<is> True"}));
        assert!(reader.get("qos_specs_id").is_none());
        assert!(reader.get("os-volume-type-access:is_public").is_none());
        let admin = type_view(
            &t,
            Shown {
                extra_specs: true,
                sensitive: true,
                qos: true,
                access: true,
            },
        );
        assert_eq!(admin["extra_specs"]["volume_backend_name"], "basalt");
        assert_eq!(admin["qos_specs_id"], Value::Null);
        assert_eq!(admin["os-volume-type-access:is_public"], true);
        let none = type_view(&t, Shown::default());
        assert!(none.get("extra_specs").is_none());
        let created = manage_view(&t, true);
        assert_eq!(created["os-volume-type-access:is_public"], true);
        assert!(
            manage_view(&t, false)
                .get("os-volume-type-access:is_public")
                .is_none()
        );
        assert_eq!(
            access_view(&vt("t2", "x", false, 1)),
            json!({"volume_type_access": [{"volume_type_id": "t2", "project_id": "p1"}]})
        );
    }

    #[test]
    fn create_and_update_bodies_are_checked() {
        let ok = parse_create(&json!({"volume_type": {
            "name": "gold", "description": "d", "os-volume-type-access:is_public": "False",
            "extra_specs": {"volume_backend_name": "basalt", "capabilities:x y/z": null}
        }}))
        .expect("valid");
        assert!(!ok.is_public);
        assert_eq!(
            ok.extra_specs.get("capabilities:x y/z").map(String::as_str),
            Some("")
        );
        for bad in [
            json!({"volume_type": {}}),
            json!({"volume_type": {"name": ""}}),
            json!({"volume_type": {"name": "   "}}),
            json!({"volume_type": {"name": "x".repeat(256)}}),
            json!({"volume_type": {"name": "a", "bogus": 1}}),
            json!({"volume_type": {"name": "a", "extra_specs": {"bad*key": "v"}}}),
            json!({"volume_type": {"name": "a", "extra_specs": {"k": 1}}}),
            json!({"volume_type": {"name": "a", "os-volume-type-access:is_public": "maybe"}}),
            json!({"volume_type": {"name": "a", "description": "bell\u{7}"}}),
            json!({"volume_type": {"name": "a"}, "extra": 1}),
            json!({"type": {"name": "a"}}),
        ] {
            assert!(parse_create(&bad).is_err(), "{bad}");
        }
        assert!(parse_update(&json!({"volume_type": {"description": "new"}})).is_ok());
        for bad in [
            json!({"volume_type": {}}),
            json!({"volume_type": {"name": null, "description": null}}),
            json!({"volume_type": {"name": "  "}}),
            json!({"volume_type": {"name": ""}}),
            json!({"volume_type": {"os-volume-type-access:is_public": true}}),
        ] {
            assert!(parse_update(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spec_bodies_are_checked() {
        assert!(parse_specs(&json!({"a b": "v"}), "extra_specs", false).is_err());
        assert!(parse_specs(&json!({"a b": "v"}), "extra_specs", true).is_ok());
        assert!(parse_specs(&json!({"k": "x".repeat(256)}), "extra_specs", false).is_err());
        assert!(parse_spec_update(&json!({"k": "v"}), "k").is_ok());
        assert!(parse_spec_update(&json!({"k": "v"}), "other").is_err());
        assert!(parse_spec_update(&json!({"k": "v", "j": "w"}), "k").is_err());
        assert!(parse_spec_update(&json!({}), "k").is_err());
        let on = BTreeMap::from([("multiattach".to_owned(), "<is> True".to_owned())]);
        let cache = BTreeMap::from([("cacheable".to_owned(), "<is> True".to_owned())]);
        assert!(check_cacheable(&cache, &on).is_err());
        assert!(check_cacheable(&on, &cache).is_err());
        assert!(check_cacheable(&on, &BTreeMap::new()).is_ok());
    }

    #[test]
    fn access_actions_are_checked() {
        assert_eq!(
            parse_access_action(&json!({"addProjectAccess": {"project": "p"}})).ok(),
            Some((true, "p".into()))
        );
        assert_eq!(
            parse_access_action(&json!({"removeProjectAccess": {"project": "p"}})).ok(),
            Some((false, "p".into()))
        );
        for bad in [
            json!({"addProjectAccess": {}}),
            json!({"addProjectAccess": {"project": ""}}),
            json!({"addProjectAccess": {"project": "p", "x": 1}}),
            json!({"grant": {"project": "p"}}),
            json!({}),
        ] {
            assert!(parse_access_action(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_default(&json!({"default_type": {"volume_type": "gold"}})).ok(),
            Some("gold".into())
        );
        assert!(parse_default(&json!({"default_type": {}})).is_err());
        assert!(parse_default(&json!({})).is_err());
    }

    #[test]
    fn lists_filter_sort_and_page_as_cinder() {
        let all = vec![
            vt("a", "bronze", true, 1),
            vt("b", "gold", false, 3),
            vt("c", "silver", true, 2),
        ];
        // Admins see public ones (and their project's private ones) unless is_public=None.
        let q = parse_list(&[], true, true).expect("parses");
        let ids = |v: Vec<VolumeType>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(
            ids(select_types(all.clone(), &q, "admin", true).expect("ok")),
            ["c", "a"]
        );
        let q = parse_list(&pairs(&[("is_public", "None")]), true, true).expect("parses");
        assert_eq!(
            ids(select_types(all.clone(), &q, "admin", true).expect("ok")),
            ["b", "c", "a"]
        );
        let q = parse_list(&pairs(&[("is_public", "false")]), true, true).expect("parses");
        assert_eq!(
            ids(select_types(all.clone(), &q, "admin", true).expect("ok")),
            ["b"]
        );
        assert!(parse_list(&pairs(&[("is_public", "perhaps")]), true, true).is_err());
        // Sorting, markers and limits.
        let q = parse_list(
            &pairs(&[("is_public", "none"), ("sort", "name:asc"), ("limit", "2")]),
            true,
            true,
        )
        .expect("parses");
        assert_eq!(
            ids(select_types(all.clone(), &q, "x", true).expect("ok")),
            ["a", "b"]
        );
        let q = parse_list(
            &pairs(&[("is_public", "none"), ("sort", "name:asc"), ("marker", "b")]),
            true,
            true,
        )
        .expect("parses");
        assert_eq!(
            ids(select_types(all.clone(), &q, "x", true).expect("ok")),
            ["c"]
        );
        let q = parse_list(&pairs(&[("marker", "zzz")]), true, true).expect("parses");
        assert!(select_types(all.clone(), &q, "x", true).is_err());
        assert!(parse_list(&pairs(&[("sort", "size:asc")]), true, true).is_err());
        assert!(parse_list(&pairs(&[("limit", "-1")]), true, true).is_err());
        // A non-admin's private type with access is listed; unknown filters are refused at
        // 3.52, dropped before.
        let q = parse_list(&pairs(&[("is_public", "false")]), false, true).expect("parses");
        assert_eq!(q.is_public, Some(true));
        assert_eq!(
            ids(select_types(all.clone(), &q, "p1", false).expect("ok")),
            ["b", "c", "a"]
        );
        assert!(parse_list(&pairs(&[("name", "gold")]), false, true).is_err());
        assert!(parse_list(&pairs(&[("name", "gold")]), false, false).is_ok());
        assert!(parse_list(&pairs(&[("all_tenants", "1")]), false, true).is_ok());
        // Extra spec filters: sensitive keys match nothing for those who cannot see them.
        let q = parse_list(
            &pairs(&[("extra_specs", "{'volume_backend_name': 'basalt'}")]),
            false,
            true,
        )
        .expect("parses");
        assert!(
            select_types(all.clone(), &q, "p1", false)
                .expect("ok")
                .is_empty()
        );
        assert_eq!(
            select_types(all.clone(), &q, "p1", true).expect("ok").len(),
            3
        );
        let q = parse_list(
            &pairs(&[("name", "gold"), ("is_public", "None")]),
            true,
            true,
        )
        .expect("parses");
        assert_eq!(
            ids(select_types(all.clone(), &q, "x", true).expect("ok")),
            ["b"]
        );
        let q = parse_list(&pairs(&[("size", "1")]), true, true).expect("parses");
        assert!(select_types(all, &q, "x", true).expect("ok").is_empty());
    }
}
