//! List parameters as Cinder reads them (`cinder/api/common.py`, `api/v3/volumes.py`):
//! `limit` (capped at `osapi_max_limit`), `marker`, `offset`, `sort=key:dir,...` or the legacy
//! `sort_key`/`sort_dir`, `with_count` (3.45), `all_tenants` (admins), and filters: the
//! resource's allow-list (unknown filters are dropped before 3.31 and refused from it), `~=`
//! inexact matches (3.34) and `gt:`/`lte:`... time comparisons (3.60).

use basalt_db::{Dir, Field, FilterOp, ListQuery, SortKey, Timestamp, Val};
use serde_json::{Value, json};

use crate::ctx::Ctx;
use crate::fault::ApiError;

/// The most items one page holds (Cinder's `osapi_max_limit`).
pub const MAX_LIMIT: u64 = 1000;

/// Which collection a list is of: its filters and sort keys differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Volumes.
    Volume,
    /// Snapshots.
    Snapshot,
    /// Attachments (3.27).
    Attachment,
}

impl Kind {
    fn filters(self) -> &'static [&'static str] {
        match self {
            Kind::Volume => &[
                "name",
                "status",
                "metadata",
                "bootable",
                "migration_status",
                "availability_zone",
                "group_id",
                "size",
                "created_at",
                "updated_at",
                "consumes_quota",
            ],
            Kind::Snapshot => &[
                "name",
                "status",
                "volume_id",
                "metadata",
                "availability_zone",
                "consumes_quota",
            ],
            Kind::Attachment => &["volume_id", "status", "instance_id", "attach_status"],
        }
    }

    /// Filters Cinder accepted from everyone before the configurable lists (3.31).
    fn legacy_filters(self) -> &'static [&'static str] {
        match self {
            Kind::Volume => &[
                "name",
                "status",
                "metadata",
                "availability_zone",
                "bootable",
                "group_id",
            ],
            Kind::Snapshot => &[
                "name",
                "status",
                "volume_id",
                "metadata",
                "availability_zone",
            ],
            Kind::Attachment => &["volume_id", "status", "instance_id", "attach_status"],
        }
    }
}

/// A parsed list request.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    /// The store query.
    pub query: ListQuery,
    /// `with_count=true` (3.45).
    pub with_count: bool,
    /// The effective limit (the next link is made when a page is full).
    pub limit: u64,
    /// The query pairs other than `marker`, for next links.
    pub carry: Vec<(String, String)>,
    /// A filter no row can match (`group_id`: Basalt has no groups).
    pub empty: bool,
}

const PAGING: &[&str] = &[
    "limit",
    "marker",
    "offset",
    "sort",
    "sort_key",
    "sort_dir",
    "with_count",
    "all_tenants",
    "project_id",
];

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// Parses the query pairs of a list of `kind`.
///
/// # Errors
/// 400 for bad values, unknown sort keys, mixed sort forms, and (from 3.31) unknown filters.
pub fn parse(ctx: &Ctx, pairs: &[(String, String)], kind: Kind) -> Result<ListParams, ApiError> {
    let mut p = ListParams {
        limit: MAX_LIMIT,
        ..ListParams::default()
    };
    let mut q = ListQuery {
        project_id: Some(ctx.project().to_owned()),
        ..ListQuery::default()
    };
    let get = |k: &str| {
        pairs
            .iter()
            .rev()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    };
    if let Some(l) = get("limit") {
        let n: i64 = l
            .parse()
            .map_err(|_| bad("limit param must be an integer"))?;
        if n < 0 {
            return Err(bad("limit param must be positive"));
        }
        p.limit = (n as u64).min(MAX_LIMIT);
    }
    q.limit = Some(p.limit);
    if let Some(o) = get("offset") {
        let n: i64 = o
            .parse()
            .map_err(|_| bad("offset param must be an integer"))?;
        if n < 0 {
            return Err(bad("offset param must be positive"));
        }
        q.offset = Some(n as u64);
    }
    q.marker = get("marker").map(str::to_owned);
    if let Some(w) = get("with_count") {
        if !ctx.version.at_least(45) {
            return Err(bad("with_count is not supported before microversion 3.45"));
        }
        p.with_count =
            crate::body::str_bool(w).ok_or_else(|| bad(format!("Invalid with_count: {w}")))?;
    }
    q.sort = sort(get("sort"), get("sort_key"), get("sort_dir"))?;
    if ctx.is_admin() {
        if get("all_tenants").is_some_and(|v| crate::body::str_bool(v).unwrap_or(true)) {
            q.project_id = None;
        }
        if let Some(proj) = get("project_id") {
            q.project_id = Some(proj.to_owned());
        }
    }
    let allowed = if ctx.version.at_least(31) {
        kind.filters()
    } else {
        kind.legacy_filters()
    };
    for (k, v) in pairs {
        if PAGING.contains(&k.as_str()) {
            continue;
        }
        let (name, like) = match k.strip_suffix('~') {
            Some(n) if ctx.version.at_least(34) => (n, true),
            _ => (k.as_str(), false),
        };
        if !allowed.contains(&name) {
            if ctx.version.at_least(31) && !ctx.is_admin() {
                return Err(bad(format!(
                    "Invalid filters {k} are found in query options."
                )));
            }
            continue;
        }
        filter(&mut q, &mut p, ctx, name, like, v)?;
    }
    p.carry = pairs
        .iter()
        .filter(|(k, _)| k != "marker")
        .cloned()
        .collect();
    p.query = q;
    Ok(p)
}

fn filter(
    q: &mut ListQuery,
    p: &mut ListParams,
    ctx: &Ctx,
    name: &str,
    like: bool,
    v: &str,
) -> Result<(), ApiError> {
    let op = if like { FilterOp::Like } else { FilterOp::Eq };
    match name {
        "name" => q.filters.push((Field::Name, op, Val::Text(v.to_owned()))),
        "status" => q.filters.push((Field::Status, op, Val::Text(v.to_owned()))),
        "availability_zone" => {
            q.filters
                .push((Field::AvailabilityZone, op, Val::Text(v.to_owned())));
        }
        "volume_id" => q
            .filters
            .push((Field::VolumeId, op, Val::Text(v.to_owned()))),
        "attach_status" => q.filters.push((Field::Status, op, Val::Text(v.to_owned()))),
        "instance_id" => q
            .filters
            .push((Field::InstanceUuid, op, Val::Text(v.to_owned()))),
        "bootable" => {
            let b =
                crate::body::str_bool(v).ok_or_else(|| bad(format!("Invalid bootable: {v}")))?;
            q.filters
                .push((Field::Bootable, FilterOp::Eq, Val::Bool(b)));
        }
        "size" => {
            let n: i64 = v.parse().map_err(|_| bad(format!("Invalid size: {v}")))?;
            q.filters.push((Field::Size, FilterOp::Eq, Val::Int(n)));
        }
        "metadata" => {
            let m: serde_json::Map<String, Value> =
                parse_dict(v).ok_or_else(|| bad(format!("Invalid metadata filter: {v}")))?;
            for (k, val) in m {
                let s = match val {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                q.filters.push((Field::Metadata(k), op, Val::Text(s)));
            }
        }
        "created_at" | "updated_at" => {
            let field = if name == "created_at" {
                Field::CreatedAt
            } else {
                Field::UpdatedAt
            };
            if !ctx.version.at_least(60) {
                return Err(bad(format!(
                    "Filtering on {name} needs microversion 3.60 or later."
                )));
            }
            for part in v.split(',') {
                let (op, t) = match part.split_once(':') {
                    Some((o, t)) if ["gt", "gte", "eq", "neq", "lt", "lte"].contains(&o) => {
                        let op = match o {
                            "gt" => FilterOp::Gt,
                            "gte" => FilterOp::Ge,
                            "eq" => FilterOp::Eq,
                            "neq" => FilterOp::Ne,
                            "lt" => FilterOp::Lt,
                            _ => FilterOp::Le,
                        };
                        (op, t)
                    }
                    _ => (FilterOp::Eq, part),
                };
                let ts = Timestamp::parse(t).ok_or_else(|| {
                    bad(format!("Invalid time value {t} for {name}: use ISO 8601"))
                })?;
                q.filters.push((field.clone(), op, Val::Int(ts.0)));
            }
        }
        "group_id" => {
            // Basalt has no groups: no volume is in one.
            if !v.is_empty() && v != "None" {
                p.empty = true;
            }
        }
        "migration_status" => {
            // No migrations yet: every volume's migration status is null.
            if !v.is_empty() && v != "None" {
                p.empty = true;
            }
        }
        "consumes_quota" => {
            let b = crate::body::str_bool(v)
                .ok_or_else(|| bad(format!("Invalid consumes_quota: {v}")))?;
            if !b {
                // API-created rows always consume quota.
                p.empty = true;
            }
        }
        other => {
            return Err(bad(format!(
                "Invalid filters {other} are found in query options."
            )));
        }
    }
    Ok(())
}

/// Cinder takes `metadata={'k': 'v'}` (Python repr) as well as JSON.
fn parse_dict(v: &str) -> Option<serde_json::Map<String, Value>> {
    if let Ok(Value::Object(m)) = serde_json::from_str(v) {
        return Some(m);
    }
    if let Ok(Value::Object(m)) = serde_json::from_str(&v.replace('\'', "\"")) {
        return Some(m);
    }
    None
}

fn sort(
    sort: Option<&str>,
    key: Option<&str>,
    dir: Option<&str>,
) -> Result<Vec<(SortKey, Dir)>, ApiError> {
    if sort.is_some() && (key.is_some() || dir.is_some()) {
        return Err(bad(
            "The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used with the 'sort' parameter.",
        ));
    }
    let mut out = Vec::new();
    let parse_dir = |d: &str| match d.trim().to_ascii_lowercase().as_str() {
        "asc" => Ok(Dir::Asc),
        "desc" => Ok(Dir::Desc),
        other => Err(bad(format!(
            "Unknown sort direction, must be 'desc' or 'asc': {other}"
        ))),
    };
    if let Some(s) = sort {
        for item in s.split(',').filter(|i| !i.trim().is_empty()) {
            let (k, d) = match item.split_once(':') {
                Some((k, d)) => (k, parse_dir(d)?),
                None => (item, Dir::Desc),
            };
            out.push((sort_key(k.trim())?, d));
        }
    } else if let Some(k) = key {
        let d = match dir {
            Some(d) => parse_dir(d)?,
            None => Dir::Desc,
        };
        out.push((sort_key(k.trim())?, d));
    } else if let Some(d) = dir {
        out.push((SortKey::CreatedAt, parse_dir(d)?));
    }
    Ok(out)
}

fn sort_key(k: &str) -> Result<SortKey, ApiError> {
    Ok(match k {
        "id" => SortKey::Id,
        "name" | "display_name" => SortKey::Name,
        "status" => SortKey::Status,
        "size" => SortKey::Size,
        "created_at" => SortKey::CreatedAt,
        "updated_at" => SortKey::UpdatedAt,
        "availability_zone" => SortKey::AvailabilityZone,
        other => return Err(bad(format!("Invalid sort key: {other}"))),
    })
}

/// The `<collection>_links` entry for a page of `n` items ending at `last`: a `next` link when
/// the page is full.
pub fn next_link(
    ctx: &Ctx,
    p: &ListParams,
    path: &str,
    n: usize,
    last: Option<&str>,
) -> Option<Value> {
    let last = last?;
    if (n as u64) < p.limit || p.limit == 0 {
        return None;
    }
    let mut qs: Vec<String> = p
        .carry
        .iter()
        .filter(|(k, _)| k != "limit")
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    qs.insert(0, format!("limit={}", p.limit));
    qs.push(format!("marker={}", enc(last)));
    Some(json!([{"rel": "next", "href": format!("{}?{}", ctx.collection_url(path), qs.join("&"))}]))
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_parse_both_forms_but_not_mixed() {
        assert_eq!(
            sort(Some("name:asc,size"), None, None).ok(),
            Some(vec![(SortKey::Name, Dir::Asc), (SortKey::Size, Dir::Desc)])
        );
        assert_eq!(
            sort(None, Some("status"), Some("asc")).ok(),
            Some(vec![(SortKey::Status, Dir::Asc)])
        );
        assert!(sort(Some("name"), Some("size"), None).is_err());
        assert!(sort(Some("bogus:asc"), None, None).is_err());
        assert!(sort(Some("name:sideways"), None, None).is_err());
    }
}
