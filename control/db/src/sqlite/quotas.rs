//! Quotas: limits (project override, else the `default` class, else Cinder's built-in
//! default; per-type resources unlimited unless set), usage kept in `quota_usages` and changed
//! only inside the transactions that create or destroy what it counts.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Transaction};

use crate::DbError;
use crate::model::{DEFAULT_QUOTAS, QuotaUsage, Resource, Timestamp, new_uuid};

/// The resources counted per volume type, prefixed to the type's name.
pub(crate) const PER_TYPE: [&str; 3] = ["volumes", "gigabytes", "snapshots"];

pub(crate) fn limit(conn: &Connection, project: &str, resource: &str) -> Result<i64, DbError> {
    if let Some(l) = conn
        .query_row(
            "SELECT hard_limit FROM quota_limits WHERE project_id = ?1 AND resource = ?2",
            (project, resource),
            |r| r.get::<_, i64>(0),
        )
        .optional()?
    {
        return Ok(l);
    }
    if let Some(l) = conn
        .query_row(
            "SELECT hard_limit FROM quota_class_limits WHERE class = 'default' AND resource = ?1",
            [resource],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
    {
        return Ok(l);
    }
    Ok(DEFAULT_QUOTAS
        .iter()
        .find(|(r, _)| *r == resource)
        .map_or(-1, |(_, l)| *l))
}

fn current(conn: &Connection, project: &str, resource: &str) -> Result<(i64, i64), DbError> {
    Ok(conn
        .query_row(
            "SELECT in_use, reserved FROM quota_usages WHERE project_id = ?1 AND resource = ?2",
            (project, resource),
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, 0)))
}

fn check(conn: &Connection, project: &str, deltas: &[(String, i64)]) -> Result<(), DbError> {
    for (resource, delta) in deltas {
        if *delta <= 0 {
            continue;
        }
        let lim = limit(conn, project, resource)?;
        if lim < 0 {
            continue;
        }
        let (in_use, reserved) = current(conn, project, resource)?;
        if in_use + reserved + delta > lim {
            return Err(DbError::OverQuota {
                resource: resource.clone(),
                limit: lim,
                in_use,
                reserved,
                requested: *delta,
            });
        }
    }
    Ok(())
}

/// Refuses a single volume larger than `per_volume_gigabytes`.
pub(crate) fn check_per_volume(conn: &Connection, project: &str, size: u64) -> Result<(), DbError> {
    let lim = limit(conn, project, "per_volume_gigabytes")?;
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    if lim >= 0 && size > lim {
        return Err(DbError::OverQuota {
            resource: "per_volume_gigabytes".to_owned(),
            limit: lim,
            in_use: 0,
            reserved: 0,
            requested: size,
        });
    }
    Ok(())
}

fn add(
    tx: &Transaction<'_>,
    project: &str,
    resource: &str,
    in_use: i64,
    reserved: i64,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO quota_usages (project_id, resource, in_use, reserved)
         VALUES (?1, ?2, MAX(?3, 0), MAX(?4, 0))
         ON CONFLICT (project_id, resource) DO UPDATE SET
             in_use = MAX(in_use + ?3, 0), reserved = MAX(reserved + ?4, 0)",
        (project, resource, in_use, reserved),
    )?;
    Ok(())
}

/// Checks and charges `deltas` to committed usage (creation), or releases negative ones.
pub(crate) fn charge(
    tx: &Transaction<'_>,
    project: &str,
    deltas: &[(String, i64)],
) -> Result<(), DbError> {
    check(tx, project, deltas)?;
    for (r, d) in deltas {
        add(tx, project, r, *d, 0)?;
    }
    Ok(())
}

/// Adds `deltas` to committed usage without checking limits (what is already used).
pub(crate) fn add_in_use(
    tx: &Transaction<'_>,
    project: &str,
    deltas: &[(String, i64)],
) -> Result<(), DbError> {
    for (r, d) in deltas {
        add(tx, project, r, *d, 0)?;
    }
    Ok(())
}

/// Checks and reserves `deltas` until `expire`; returns the reservation's id.
pub(crate) fn reserve(
    tx: &Transaction<'_>,
    project: &str,
    deltas: &[(String, i64)],
    expire: Timestamp,
) -> Result<String, DbError> {
    check(tx, project, deltas)?;
    let id = new_uuid().map_err(|e| DbError::Invalid(format!("no random source: {e}")))?;
    for (r, d) in deltas {
        add(tx, project, r, 0, *d)?;
        tx.execute(
            "INSERT INTO reservations (id, project_id, resource, delta, expire)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            (&id, project, r, d, expire.0),
        )?;
    }
    Ok(id)
}

/// Moves a reservation into committed usage (`commit`) or drops it; false when it had
/// already expired.
pub(crate) fn settle(tx: &Transaction<'_>, id: &str, commit: bool) -> Result<bool, DbError> {
    let rows: Vec<(String, String, i64)> = {
        let mut st =
            tx.prepare("SELECT project_id, resource, delta FROM reservations WHERE id = ?1")?;
        st.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?
    };
    for (project, resource, delta) in &rows {
        add(
            tx,
            project,
            resource,
            if commit { *delta } else { 0 },
            -delta,
        )?;
    }
    tx.execute("DELETE FROM reservations WHERE id = ?1", [id])?;
    Ok(!rows.is_empty())
}

pub(crate) fn expire(tx: &Transaction<'_>, now: Timestamp) -> Result<usize, DbError> {
    let ids: Vec<String> = {
        let mut st = tx.prepare("SELECT DISTINCT id FROM reservations WHERE expire < ?1")?;
        st.query_map([now.0], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    for id in &ids {
        settle(tx, id, false)?;
    }
    if !ids.is_empty() {
        tracing::warn!(count = ids.len(), "expired quota reservations rolled back");
    }
    Ok(ids.len())
}

pub(crate) fn defaults(conn: &Connection) -> Result<BTreeMap<Resource, i64>, DbError> {
    let mut out: BTreeMap<Resource, i64> = DEFAULT_QUOTAS
        .iter()
        .map(|(r, l)| ((*r).to_owned(), *l))
        .collect();
    let mut st = conn
        .prepare("SELECT resource, hard_limit FROM quota_class_limits WHERE class = 'default'")?;
    for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (r, l) = row?;
        out.insert(r, l);
    }
    // Per-type resources of every live type.
    let mut st = conn.prepare("SELECT name FROM volume_types WHERE deleted = 0")?;
    for name in st.query_map([], |r| r.get::<_, String>(0))? {
        let name = name?;
        for p in PER_TYPE {
            out.entry(format!("{p}_{name}")).or_insert(-1);
        }
    }
    Ok(out)
}

pub(crate) fn usage(
    conn: &Connection,
    project: &str,
) -> Result<BTreeMap<Resource, QuotaUsage>, DbError> {
    let mut out = BTreeMap::new();
    let mut resources: Vec<String> = defaults(conn)?.into_keys().collect();
    {
        let mut st = conn.prepare(
            "SELECT resource FROM quota_limits WHERE project_id = ?1
             UNION SELECT resource FROM quota_usages WHERE project_id = ?1",
        )?;
        for r in st.query_map([project], |r| r.get::<_, String>(0))? {
            resources.push(r?);
        }
    }
    resources.sort();
    resources.dedup();
    for r in resources {
        let (in_use, reserved) = current(conn, project, &r)?;
        out.insert(
            r.clone(),
            QuotaUsage {
                limit: limit(conn, project, &r)?,
                in_use,
                reserved,
            },
        );
    }
    Ok(out)
}

fn valid_limit(limit: i64) -> Result<(), DbError> {
    if limit < -1 {
        return Err(DbError::Invalid(format!(
            "a quota limit is -1 (unlimited) or at least 0, not {limit}"
        )));
    }
    Ok(())
}

pub(crate) fn set_limit(
    tx: &Transaction<'_>,
    project: &str,
    resource: &str,
    lim: i64,
) -> Result<(), DbError> {
    valid_limit(lim)?;
    let (in_use, reserved) = current(tx, project, resource)?;
    if lim >= 0 && resource != "per_volume_gigabytes" && lim < in_use + reserved {
        return Err(DbError::Invalid(format!(
            "Quota {resource} limit must be equal or greater than existing resources. \
             Current usage is {} and the requested limit is {lim}.",
            in_use + reserved
        )));
    }
    tx.execute(
        "INSERT INTO quota_limits (project_id, resource, hard_limit) VALUES (?1, ?2, ?3)
         ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
        (project, resource, lim),
    )?;
    Ok(())
}

pub(crate) fn set_default(tx: &Transaction<'_>, resource: &str, lim: i64) -> Result<(), DbError> {
    valid_limit(lim)?;
    tx.execute(
        "INSERT INTO quota_class_limits (class, resource, hard_limit) VALUES ('default', ?1, ?2)
         ON CONFLICT (class, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
        (resource, lim),
    )?;
    Ok(())
}

/// Renames a type's per-type resources (limits and usage) when the type is renamed.
pub(crate) fn rename_type(tx: &Transaction<'_>, old: &str, new: &str) -> Result<(), DbError> {
    for p in PER_TYPE {
        let (o, n) = (format!("{p}_{old}"), format!("{p}_{new}"));
        for table in ["quota_limits", "quota_usages"] {
            tx.execute(
                &format!("UPDATE {table} SET resource = ?2 WHERE resource = ?1"),
                (&o, &n),
            )?;
        }
        tx.execute(
            "UPDATE quota_class_limits SET resource = ?2 WHERE resource = ?1",
            (&o, &n),
        )?;
        tx.execute(
            "UPDATE reservations SET resource = ?2 WHERE resource = ?1",
            (&o, &n),
        )?;
    }
    Ok(())
}

/// The quota deltas a volume or snapshot of `size` GiB of type `type_name` costs.
pub(crate) fn costs(kind: &str, size: u64, type_name: Option<&str>) -> Vec<(String, i64)> {
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    let mut d = vec![(kind.to_owned(), 1), ("gigabytes".to_owned(), size)];
    if let Some(t) = type_name {
        d.push((format!("{kind}_{t}"), 1));
        d.push((format!("gigabytes_{t}"), size));
    }
    d
}

pub(crate) fn negate(d: &[(String, i64)]) -> Vec<(String, i64)> {
    d.iter().map(|(r, v)| (r.clone(), -v)).collect()
}

pub(crate) fn audit(conn: &Connection, project: &str) -> Result<Vec<(String, i64, i64)>, DbError> {
    let mut expect: BTreeMap<String, i64> = BTreeMap::new();
    let mut bump = |r: String, v: i64| *expect.entry(r).or_insert(0) += v;
    let mut st = conn.prepare(
        "SELECT v.size_gb, t.name FROM volumes v LEFT JOIN volume_types t ON t.id = v.volume_type_id
         WHERE v.project_id = ?1 AND v.deleted = 0 AND v.use_quota = 1",
    )?;
    for row in st.query_map([project], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
    })? {
        let (size, t) = row?;
        for (r, v) in costs("volumes", u64::try_from(size).unwrap_or(0), t.as_deref()) {
            bump(r, v);
        }
    }
    let mut st = conn.prepare(
        "SELECT s.size_gb, t.name FROM snapshots s LEFT JOIN volume_types t ON t.id = s.volume_type_id
         WHERE s.project_id = ?1 AND s.deleted = 0 AND s.use_quota = 1",
    )?;
    for row in st.query_map([project], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
    })? {
        let (size, t) = row?;
        for (r, v) in costs("snapshots", u64::try_from(size).unwrap_or(0), t.as_deref()) {
            bump(r, v);
        }
    }
    let mut stored: BTreeMap<String, i64> = BTreeMap::new();
    let mut st = conn.prepare("SELECT resource, in_use FROM quota_usages WHERE project_id = ?1")?;
    for row in st.query_map([project], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (r, v) = row?;
        stored.insert(r, v);
    }
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<String> =
        expect.keys().chain(stored.keys()).cloned().collect();
    for k in keys {
        let (s, e) = (
            stored.get(&k).copied().unwrap_or(0),
            expect.get(&k).copied().unwrap_or(0),
        );
        if s != e {
            out.push((k, s, e));
        }
    }
    Ok(out)
}
