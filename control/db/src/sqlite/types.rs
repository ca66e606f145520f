//! Volume types, their extra specs and access lists, and projects' default types.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Transaction};

use super::{exists, quotas};
use crate::DbError;
use crate::model::{Timestamp, VolumeType, new_uuid};

fn valid_name(name: &str) -> Result<(), DbError> {
    if name.trim().is_empty() || name.len() > 255 {
        return Err(DbError::Invalid(
            "a volume type name must be 1 to 255 characters, not blank".to_owned(),
        ));
    }
    Ok(())
}

fn valid_specs(specs: &BTreeMap<String, String>) -> Result<(), DbError> {
    for (k, v) in specs {
        if k.is_empty() || k.len() > 255 || v.len() > 255 {
            return Err(DbError::Invalid(
                "extra spec keys must be 1 to 255 characters and values at most 255".to_owned(),
            ));
        }
    }
    Ok(())
}

fn load(conn: &Connection, id: &str) -> Result<Option<VolumeType>, DbError> {
    let Some((id, name, description, is_public, created)) = conn
        .query_row(
            "SELECT id, name, description, is_public, created_at FROM volume_types
             WHERE id = ?1 AND deleted = 0",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            },
        )
        .optional()?
    else {
        return Ok(None);
    };
    let mut st = conn.prepare_cached(
        "SELECT key, value FROM volume_type_extra_specs WHERE type_id = ?1 ORDER BY key",
    )?;
    let extra_specs = st
        .query_map([&id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    let mut st = conn.prepare_cached(
        "SELECT project_id FROM volume_type_access WHERE type_id = ?1 ORDER BY project_id",
    )?;
    let access = st
        .query_map([&id], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(VolumeType {
        id,
        name,
        description,
        is_public,
        extra_specs,
        access,
        created_at: Timestamp(created),
    }))
}

pub(crate) fn get(conn: &Connection, id_or_name: &str) -> Result<VolumeType, DbError> {
    if let Some(t) = load(conn, id_or_name)? {
        return Ok(t);
    }
    let id: Option<String> = conn
        .query_row(
            "SELECT id FROM volume_types WHERE name = ?1 AND deleted = 0",
            [id_or_name],
            |r| r.get(0),
        )
        .optional()?;
    match id {
        Some(id) => load(conn, &id)?,
        None => None,
    }
    .ok_or_else(|| DbError::NotFound {
        kind: "volume type",
        id: id_or_name.to_owned(),
    })
}

pub(crate) fn list(conn: &Connection, project: Option<&str>) -> Result<Vec<VolumeType>, DbError> {
    let ids: Vec<String> = match project {
        None => {
            let mut st =
                conn.prepare("SELECT id FROM volume_types WHERE deleted = 0 ORDER BY name")?;
            st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
        }
        Some(p) => {
            let mut st = conn.prepare(
                "SELECT id FROM volume_types t WHERE deleted = 0 AND (is_public = 1 OR EXISTS
                     (SELECT 1 FROM volume_type_access a WHERE a.type_id = t.id AND a.project_id = ?1))
                 ORDER BY name",
            )?;
            st.query_map([p], |r| r.get(0))?.collect::<Result<_, _>>()?
        }
    };
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(t) = load(conn, &id)? {
            out.push(t);
        }
    }
    Ok(out)
}

fn name_taken(tx: &Transaction<'_>, name: &str) -> Result<bool, DbError> {
    exists(
        tx,
        "SELECT 1 FROM volume_types WHERE name = ?1 AND deleted = 0",
        name,
    )
}

pub(crate) fn create(
    tx: &Transaction<'_>,
    name: &str,
    description: Option<&str>,
    is_public: bool,
    specs: &BTreeMap<String, String>,
) -> Result<VolumeType, DbError> {
    valid_name(name)?;
    valid_specs(specs)?;
    if name_taken(tx, name)? {
        return Err(DbError::Duplicate {
            kind: "volume type",
            id: name.to_owned(),
        });
    }
    let id = new_uuid().map_err(|e| DbError::Invalid(format!("no random source: {e}")))?;
    tx.execute(
        "INSERT INTO volume_types (id, name, description, is_public, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        (&id, name, description, is_public, Timestamp::now().0),
    )?;
    set_specs(tx, &id, specs)
}

pub(crate) fn update(
    tx: &Transaction<'_>,
    id: &str,
    name: Option<&str>,
    description: Option<Option<&str>>,
    is_public: Option<bool>,
) -> Result<VolumeType, DbError> {
    let t = get(tx, id)?;
    if let Some(n) = name
        && n != t.name
    {
        valid_name(n)?;
        if name_taken(tx, n)? {
            return Err(DbError::Duplicate {
                kind: "volume type",
                id: n.to_owned(),
            });
        }
        tx.execute(
            "UPDATE volume_types SET name = ?2 WHERE id = ?1",
            (&t.id, n),
        )?;
        quotas::rename_type(tx, &t.name, n)?;
    }
    if let Some(d) = description {
        tx.execute(
            "UPDATE volume_types SET description = ?2 WHERE id = ?1",
            (&t.id, d),
        )?;
    }
    if let Some(p) = is_public {
        tx.execute(
            "UPDATE volume_types SET is_public = ?2 WHERE id = ?1",
            (&t.id, p),
        )?;
    }
    get(tx, &t.id)
}

pub(crate) fn set_specs(
    tx: &Transaction<'_>,
    id: &str,
    specs: &BTreeMap<String, String>,
) -> Result<VolumeType, DbError> {
    valid_specs(specs)?;
    let t = get(tx, id)?;
    let mut st = tx.prepare_cached(
        "INSERT INTO volume_type_extra_specs (type_id, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (type_id, key) DO UPDATE SET value = excluded.value",
    )?;
    for (k, v) in specs {
        st.execute((&t.id, k, v))?;
    }
    get(tx, &t.id)
}

pub(crate) fn unset_spec(tx: &Transaction<'_>, id: &str, key: &str) -> Result<(), DbError> {
    let t = get(tx, id)?;
    let n = tx.execute(
        "DELETE FROM volume_type_extra_specs WHERE type_id = ?1 AND key = ?2",
        (&t.id, key),
    )?;
    if n == 0 {
        return Err(DbError::NotFound {
            kind: "extra spec",
            id: key.to_owned(),
        });
    }
    Ok(())
}

pub(crate) fn set_access(
    tx: &Transaction<'_>,
    id: &str,
    project: &str,
    grant: bool,
) -> Result<(), DbError> {
    let t = get(tx, id)?;
    if t.is_public {
        return Err(DbError::Invalid(format!(
            "volume type {} is public: access lists are for private types",
            t.id
        )));
    }
    let has = t.access.iter().any(|p| p == project);
    match (grant, has) {
        (true, true) => Err(DbError::Duplicate {
            kind: "volume type access",
            id: format!("{}/{project}", t.id),
        }),
        (false, false) => Err(DbError::NotFound {
            kind: "volume type access",
            id: format!("{}/{project}", t.id),
        }),
        (true, false) => {
            tx.execute(
                "INSERT INTO volume_type_access (type_id, project_id) VALUES (?1, ?2)",
                (&t.id, project),
            )?;
            Ok(())
        }
        (false, true) => {
            tx.execute(
                "DELETE FROM volume_type_access WHERE type_id = ?1 AND project_id = ?2",
                (&t.id, project),
            )?;
            Ok(())
        }
    }
}

pub(crate) fn delete(tx: &Transaction<'_>, id: &str) -> Result<(), DbError> {
    let t = get(tx, id)?;
    let users: i64 = tx.query_row(
        "SELECT COUNT(*) FROM volumes WHERE volume_type_id = ?1 AND deleted = 0",
        [&t.id],
        |r| r.get(0),
    )?;
    if users > 0 {
        return Err(DbError::InUse {
            kind: "volume type",
            id: t.id,
            why: format!("{users} volume(s) use it"),
        });
    }
    let projects: i64 = tx.query_row(
        "SELECT COUNT(*) FROM default_volume_types WHERE volume_type_id = ?1",
        [&t.id],
        |r| r.get(0),
    )?;
    if projects > 0 {
        return Err(DbError::InUse {
            kind: "volume type",
            id: t.id,
            why: format!("it is the default type of {projects} project(s)"),
        });
    }
    tx.execute("UPDATE volume_types SET deleted = 1 WHERE id = ?1", [&t.id])?;
    tx.execute(
        "DELETE FROM volume_type_extra_specs WHERE type_id = ?1",
        [&t.id],
    )?;
    tx.execute("DELETE FROM volume_type_access WHERE type_id = ?1", [&t.id])?;
    Ok(())
}

/// Makes type `id_or_name` `project`'s default (replacing any); returns the type's id.
pub(crate) fn set_default(
    tx: &Transaction<'_>,
    project: &str,
    id_or_name: &str,
) -> Result<String, DbError> {
    if project.is_empty() {
        return Err(DbError::Invalid(
            "a default type needs a project".to_owned(),
        ));
    }
    let t = get(tx, id_or_name)?;
    tx.execute(
        "INSERT INTO default_volume_types (project_id, volume_type_id, created_at)
         VALUES (?1, ?2, ?3)
         ON CONFLICT (project_id) DO UPDATE SET volume_type_id = excluded.volume_type_id",
        (project, &t.id, Timestamp::now().0),
    )?;
    Ok(t.id)
}

pub(crate) fn get_default(conn: &Connection, project: &str) -> Result<Option<String>, DbError> {
    Ok(conn
        .query_row(
            "SELECT volume_type_id FROM default_volume_types WHERE project_id = ?1",
            [project],
            |r| r.get(0),
        )
        .optional()?)
}

pub(crate) fn list_defaults(conn: &Connection) -> Result<Vec<(String, String)>, DbError> {
    let mut st = conn.prepare(
        "SELECT project_id, volume_type_id FROM default_volume_types ORDER BY project_id",
    )?;
    Ok(st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?)
}

pub(crate) fn unset_default(tx: &Transaction<'_>, project: &str) -> Result<bool, DbError> {
    Ok(tx.execute(
        "DELETE FROM default_volume_types WHERE project_id = ?1",
        [project],
    )? > 0)
}
