//! Snapshot rows.

use rusqlite::{Connection, OptionalExtension, Row, Transaction};

use super::list::{self, Table};
use super::{exists, expect_status, load_metadata, quotas, store_metadata, volumes};
use crate::DbError;
use crate::model::{NewSnapshot, Snapshot, SnapshotChange, Timestamp, is_uuid};
use crate::query::{Field, ListQuery, Page, SortKey};

const COLUMNS: &str = "id, project_id, user_id, volume_id, name, description, size_gb, status, \
    progress, use_quota, created_at, updated_at, volume_type_id";

const TABLE: Table = Table {
    name: "snapshots",
    kind: "snapshots",
    project: "project_id",
    meta: Some(("snapshot_metadata", "snapshot_id")),
    column: |f| match f {
        Field::Name => Some("name"),
        Field::Status => Some("status"),
        Field::Size => Some("size_gb"),
        Field::VolumeId => Some("volume_id"),
        Field::CreatedAt => Some("created_at"),
        Field::UpdatedAt => Some("updated_at"),
        Field::AvailabilityZone
        | Field::Host
        | Field::Bootable
        | Field::VolumeTypeId
        | Field::InstanceUuid
        | Field::ResourceUuid
        | Field::ResourceType
        | Field::EventId
        | Field::RequestId
        | Field::MessageLevel
        | Field::Metadata(_) => None,
    },
    sort: |k| match k {
        SortKey::Id => Some("id"),
        SortKey::Name => Some("COALESCE(name, '')"),
        SortKey::Status => Some("status"),
        SortKey::Size => Some("size_gb"),
        SortKey::CreatedAt => Some("created_at"),
        SortKey::UpdatedAt => Some("COALESCE(updated_at, 0)"),
        SortKey::AvailabilityZone => None,
    },
};

fn from_row(r: &Row<'_>) -> rusqlite::Result<(Snapshot, Option<String>)> {
    let size: i64 = r.get(6)?;
    Ok((
        Snapshot {
            id: r.get(0)?,
            project_id: r.get(1)?,
            user_id: r.get(2)?,
            volume_id: r.get(3)?,
            name: r.get(4)?,
            description: r.get(5)?,
            size_gb: u64::try_from(size).unwrap_or(0),
            status: r.get(7)?,
            progress: r.get(8)?,
            use_quota: r.get(9)?,
            metadata: Default::default(),
            created_at: Timestamp(r.get(10)?),
            updated_at: r.get::<_, Option<i64>>(11)?.map(Timestamp),
        },
        r.get(12)?,
    ))
}

fn get_with_type(conn: &Connection, id: &str) -> Result<(Snapshot, Option<String>), DbError> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM snapshots WHERE id = ?1 AND deleted = 0"
    ))?;
    let (mut s, t) = st
        .query_row([id], from_row)
        .optional()?
        .ok_or_else(|| DbError::NotFound {
            kind: "snapshot",
            id: id.to_owned(),
        })?;
    s.metadata = load_metadata(conn, "snapshot_metadata", "snapshot_id", id)?;
    Ok((s, t))
}

pub(crate) fn get(conn: &Connection, id: &str) -> Result<Snapshot, DbError> {
    Ok(get_with_type(conn, id)?.0)
}

pub(crate) fn list(conn: &Connection, q: &ListQuery) -> Result<Page<Snapshot>, DbError> {
    let (ids, count) = list::page_ids(conn, &TABLE, q)?;
    let items = ids
        .iter()
        .map(|id| get(conn, id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page { items, count })
}

pub(crate) fn create(
    tx: &Transaction<'_>,
    new: &NewSnapshot,
    volume_expected: &[&str],
    now: Timestamp,
) -> Result<Snapshot, DbError> {
    if !is_uuid(&new.id) {
        return Err(DbError::Invalid(format!("{:?} is not a UUID", new.id)));
    }
    if exists(tx, "SELECT 1 FROM snapshots WHERE id = ?1", &new.id)? {
        return Err(DbError::Duplicate {
            kind: "snapshot",
            id: new.id.clone(),
        });
    }
    let v = volumes::get(tx, &new.volume_id)?;
    expect_status("volume", &v.id, &v.status, volume_expected)?;
    if v.project_id != new.project_id {
        return Err(DbError::NotFound {
            kind: "volume",
            id: v.id,
        });
    }
    if new.use_quota {
        let t = volumes::type_name(tx, v.volume_type_id.as_deref())?;
        quotas::charge(
            tx,
            &new.project_id,
            &quotas::costs("snapshots", v.size_gb, t.as_deref()),
        )?;
    }
    tx.execute(
        "INSERT INTO snapshots (id, project_id, user_id, volume_id, volume_type_id, name,
             description, size_gb, status, progress, use_quota, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'creating', '0%', ?9, ?10)",
        rusqlite::params![
            new.id,
            new.project_id,
            new.user_id,
            v.id,
            v.volume_type_id,
            new.name,
            new.description,
            i64::try_from(v.size_gb).unwrap_or(i64::MAX),
            new.use_quota,
            now.0
        ],
    )?;
    store_metadata(
        tx,
        "snapshot_metadata",
        "snapshot_id",
        &new.id,
        &new.metadata,
        false,
    )?;
    get(tx, &new.id)
}

pub(crate) fn update(
    tx: &Transaction<'_>,
    id: &str,
    expected: &[&str],
    c: &SnapshotChange,
    now: Timestamp,
) -> Result<Snapshot, DbError> {
    let s = get(tx, id)?;
    expect_status("snapshot", id, &s.status, expected)?;
    tx.execute(
        "UPDATE snapshots SET
             status = COALESCE(?2, status),
             progress = COALESCE(?3, progress),
             name = CASE WHEN ?4 THEN ?5 ELSE name END,
             description = CASE WHEN ?6 THEN ?7 ELSE description END,
             updated_at = ?8
         WHERE id = ?1",
        rusqlite::params![
            id,
            c.status,
            c.progress,
            c.name.is_some(),
            c.name.clone().flatten(),
            c.description.is_some(),
            c.description.clone().flatten(),
            now.0
        ],
    )?;
    get(tx, id)
}

pub(crate) fn destroy(
    tx: &Transaction<'_>,
    id: &str,
    expected: &[&str],
    now: Timestamp,
) -> Result<Snapshot, DbError> {
    let (s, t) = get_with_type(tx, id)?;
    expect_status("snapshot", id, &s.status, expected)?;
    if exists(
        tx,
        "SELECT 1 FROM volumes WHERE snapshot_id = ?1 AND deleted = 0 AND status = 'creating'",
        id,
    )? {
        return Err(DbError::InUse {
            kind: "snapshot",
            id: id.to_owned(),
            why: "a volume is being created from it".to_owned(),
        });
    }
    if s.use_quota {
        // A deleted type's per-type usage no longer matters.
        let t = volumes::type_name(tx, t.as_deref()).ok().flatten();
        let cost = quotas::costs("snapshots", s.size_gb, t.as_deref());
        quotas::charge(tx, &s.project_id, &quotas::negate(&cost))?;
    }
    tx.execute(
        "UPDATE snapshots SET deleted = 1, deleted_at = ?2, status = 'deleted', updated_at = ?2
         WHERE id = ?1",
        (id, now.0),
    )?;
    tx.execute("DELETE FROM snapshot_metadata WHERE snapshot_id = ?1", [id])?;
    Ok(Snapshot {
        status: "deleted".to_owned(),
        ..s
    })
}

/// Gives a snapshot to the project (and user) its volume was transferred to; quota moves with
/// it in the caller's transaction.
pub(crate) fn move_to(
    tx: &Transaction<'_>,
    id: &str,
    project: &str,
    user: &str,
    now: Timestamp,
) -> Result<(), DbError> {
    tx.execute(
        "UPDATE snapshots SET project_id = ?2, user_id = ?3, updated_at = ?4 WHERE id = ?1",
        (id, project, user, now.0),
    )?;
    Ok(())
}
