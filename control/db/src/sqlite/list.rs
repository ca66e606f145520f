//! [`ListQuery`] to SQL: whitelisted columns only, every value a bound parameter.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

use crate::DbError;
use crate::query::{Dir, Field, FilterOp, ListQuery, SortKey, Val};

/// A listable table.
pub(crate) struct Table {
    /// The table.
    pub name: &'static str,
    /// What its rows are called in errors.
    pub kind: &'static str,
    /// The column [`ListQuery::project_id`] scopes on.
    pub project: &'static str,
    /// Its metadata table and that table's key column, if it has one.
    pub meta: Option<(&'static str, &'static str)>,
    /// The column of a filter field.
    pub column: fn(&Field) -> Option<&'static str>,
    /// The expression of a sort key.
    pub sort: fn(SortKey) -> Option<&'static str>,
}

/// The `WHERE` clause and the parameters of a query, before the marker.
fn base_where(t: &Table, q: &ListQuery) -> Result<(String, Vec<Value>), DbError> {
    let mut sql = String::from("deleted = 0");
    let mut params = Vec::new();
    if let Some(p) = &q.project_id {
        params.push(Value::Text(p.clone()));
        sql.push_str(&format!(" AND {} = ?{}", t.project, params.len()));
    }
    for (field, op, val) in &q.filters {
        let v = match val {
            Val::Text(s) if *op == FilterOp::Like => Value::Text(format!("%{}%", escape_like(s))),
            Val::Text(s) => Value::Text(s.clone()),
            Val::Int(i) => Value::Integer(*i),
            Val::Bool(b) => Value::Integer(i64::from(*b)),
        };
        let opsql = match op {
            FilterOp::Eq => "=",
            FilterOp::Ne => "IS NOT",
            FilterOp::Like => "LIKE",
            FilterOp::Gt => ">",
            FilterOp::Ge => ">=",
            FilterOp::Lt => "<",
            FilterOp::Le => "<=",
        };
        let esc = if *op == FilterOp::Like {
            " ESCAPE '\\'"
        } else {
            ""
        };
        if let Field::Metadata(key) = field {
            let (mt, fk) = t.meta.ok_or_else(|| {
                DbError::Invalid(format!("{} have no metadata to filter by", t.kind))
            })?;
            params.push(Value::Text(key.clone()));
            let k = params.len();
            params.push(v);
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM {mt} m WHERE m.{fk} = {}.id AND m.key = ?{k} AND m.value {opsql} ?{}{esc})",
                t.name,
                k + 1
            ));
            continue;
        }
        let col = (t.column)(field).ok_or_else(|| {
            DbError::Invalid(format!("{} cannot be filtered by {field:?}", t.kind))
        })?;
        params.push(v);
        sql.push_str(&format!(" AND {col} {opsql} ?{}{esc}", params.len()));
    }
    Ok((sql, params))
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The ids of one page of `q` over `t`, and the count of all matches.
pub(crate) fn page_ids(
    conn: &Connection,
    t: &Table,
    q: &ListQuery,
) -> Result<(Vec<String>, u64), DbError> {
    let (base, mut params) = base_where(t, q)?;
    let count: i64 = conn.query_row(
        &format!("SELECT COUNT(*) FROM {} WHERE {base}", t.name),
        rusqlite::params_from_iter(params.iter()),
        |r| r.get(0),
    )?;
    let mut keys: Vec<(&'static str, Dir)> = Vec::new();
    for (k, d) in &q.sort {
        let e = (t.sort)(*k)
            .ok_or_else(|| DbError::Invalid(format!("{} cannot be sorted by {k:?}", t.kind)))?;
        keys.push((e, *d));
    }
    if keys.is_empty() {
        keys.push(("created_at", Dir::Desc));
    }
    if !keys.iter().any(|(e, _)| *e == "id") {
        keys.push(("id", keys[0].1));
    }
    let mut sql = format!("SELECT id FROM {} WHERE {base}", t.name);
    if let Some(marker) = &q.marker {
        // The marker row's sort values, seen through the same filters.
        let cols: Vec<&str> = keys.iter().map(|(e, _)| *e).collect();
        let row: Option<Vec<Value>> = conn
            .query_row(
                &format!(
                    "SELECT {} FROM {} WHERE {base} AND id = ?{}",
                    cols.join(", "),
                    t.name,
                    params.len() + 1
                ),
                rusqlite::params_from_iter(
                    params
                        .iter()
                        .cloned()
                        .chain(std::iter::once(Value::Text(marker.clone()))),
                ),
                |r| (0..cols.len()).map(|i| r.get::<_, Value>(i)).collect(),
            )
            .optional()?;
        let row = row.ok_or_else(|| DbError::NotFound {
            kind: "marker",
            id: marker.clone(),
        })?;
        // (k0 > m0) OR (k0 = m0 AND k1 > m1) OR ... with > or < by direction.
        let mut ors = Vec::new();
        for i in 0..keys.len() {
            let mut ands = Vec::new();
            for (j, (e, _)) in keys.iter().enumerate().take(i) {
                params.push(row[j].clone());
                ands.push(format!("{e} = ?{}", params.len()));
            }
            let (e, d) = keys[i];
            params.push(row[i].clone());
            let cmp = if d == Dir::Asc { ">" } else { "<" };
            ands.push(format!("{e} {cmp} ?{}", params.len()));
            ors.push(format!("({})", ands.join(" AND ")));
        }
        sql.push_str(&format!(" AND ({})", ors.join(" OR ")));
    }
    let order: Vec<String> = keys
        .iter()
        .map(|(e, d)| format!("{e} {}", if *d == Dir::Asc { "ASC" } else { "DESC" }))
        .collect();
    sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
    let limit = q.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    let offset = q.offset.map_or(0, |o| i64::try_from(o).unwrap_or(i64::MAX));
    sql.push_str(&format!(" LIMIT {limit} OFFSET {offset}"));
    let mut st = conn.prepare(&sql)?;
    let ids = st
        .query_map(rusqlite::params_from_iter(params.iter()), |r| {
            r.get::<_, String>(0)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ids, u64::try_from(count).unwrap_or(0)))
}
