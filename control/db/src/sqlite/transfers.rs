//! Volume transfers: a volume offered by its project (`awaiting-transfer`), accepted by
//! another, which takes it, its snapshots (unless `no_snapshots`) and their quota.

use rusqlite::{Connection, OptionalExtension, Row, Transaction};

use super::list::{self, Table};
use super::{attachments, exists, expect_status, quotas, snapshots, volumes};
use crate::DbError;
use crate::model::{NewTransfer, Timestamp, Transfer, Volume, is_uuid};
use crate::query::{Field, ListQuery, Page, SortKey};

const COLUMNS: &str = "id, volume_id, name, salt, crypt_hash, source_project_id, \
    destination_project_id, accepted, no_snapshots, created_at, updated_at";

const TABLE: Table = Table {
    name: "transfers",
    kind: "transfers",
    project: "source_project_id",
    meta: None,
    column: |f| match f {
        Field::Name => Some("name"),
        Field::VolumeId => Some("volume_id"),
        Field::CreatedAt => Some("created_at"),
        Field::UpdatedAt => Some("updated_at"),
        Field::Status
        | Field::Size
        | Field::AvailabilityZone
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
        SortKey::CreatedAt => Some("created_at"),
        SortKey::UpdatedAt => Some("COALESCE(updated_at, 0)"),
        SortKey::Status | SortKey::Size | SortKey::AvailabilityZone => None,
    },
};

fn from_row(r: &Row<'_>) -> rusqlite::Result<Transfer> {
    Ok(Transfer {
        id: r.get(0)?,
        volume_id: r.get(1)?,
        name: r.get(2)?,
        salt: r.get(3)?,
        crypt_hash: r.get(4)?,
        source_project_id: r.get(5)?,
        destination_project_id: r.get(6)?,
        accepted: r.get(7)?,
        no_snapshots: r.get(8)?,
        created_at: Timestamp(r.get(9)?),
        updated_at: r.get::<_, Option<i64>>(10)?.map(Timestamp),
    })
}

pub(crate) fn get(conn: &Connection, id: &str) -> Result<Transfer, DbError> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM transfers WHERE id = ?1 AND deleted = 0"
    ))?;
    st.query_row([id], from_row)
        .optional()?
        .ok_or_else(|| DbError::NotFound {
            kind: "transfer",
            id: id.to_owned(),
        })
}

pub(crate) fn list(conn: &Connection, q: &ListQuery) -> Result<Page<Transfer>, DbError> {
    let (ids, count) = list::page_ids(conn, &TABLE, q)?;
    let items = ids
        .iter()
        .map(|id| get(conn, id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page { items, count })
}

/// A live snapshot that goes with its volume: (id, status, use_quota, size, type id).
type SnapRow = (String, String, bool, i64, Option<String>);

/// The live snapshots of a volume that its project owns (those an earlier `no_snapshots`
/// transfer left with another project stay there).
fn snapshots_of(conn: &Connection, v: &Volume) -> Result<Vec<SnapRow>, DbError> {
    let mut st = conn.prepare_cached(
        "SELECT id, status, use_quota, size_gb, volume_type_id FROM snapshots
         WHERE volume_id = ?1 AND project_id = ?2 AND deleted = 0 ORDER BY created_at, id",
    )?;
    let rows = st
        .query_map((&v.id, &v.project_id), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Refuses unless every snapshot of the volume is `available`.
fn snapshots_available(snaps: &[SnapRow]) -> Result<(), DbError> {
    match snaps.iter().find(|s| s.1 != "available") {
        Some((id, status, ..)) => Err(DbError::Conflict {
            kind: "snapshot",
            id: id.clone(),
            current: status.clone(),
            expected: "available".to_owned(),
        }),
        None => Ok(()),
    }
}

pub(crate) fn create(
    tx: &Transaction<'_>,
    new: &NewTransfer,
    now: Timestamp,
) -> Result<Transfer, DbError> {
    if !is_uuid(&new.id) {
        return Err(DbError::Invalid(format!("{:?} is not a UUID", new.id)));
    }
    if new.salt.is_empty() || new.crypt_hash.is_empty() {
        return Err(DbError::Invalid(
            "a transfer needs its salt and auth key hash".to_owned(),
        ));
    }
    if exists(tx, "SELECT 1 FROM transfers WHERE id = ?1", &new.id)? {
        return Err(DbError::Duplicate {
            kind: "transfer",
            id: new.id.clone(),
        });
    }
    let v = volumes::get(tx, &new.volume_id)?;
    if v.project_id != new.source_project_id {
        return Err(DbError::NotFound {
            kind: "volume",
            id: v.id,
        });
    }
    expect_status("volume", &v.id, &v.status, &["available"])?;
    if !new.no_snapshots {
        snapshots_available(&snapshots_of(tx, &v)?)?;
    }
    tx.execute(
        "UPDATE volumes SET status = 'awaiting-transfer', updated_at = ?2 WHERE id = ?1",
        (&v.id, now.0),
    )?;
    tx.execute(
        "INSERT INTO transfers (id, volume_id, name, salt, crypt_hash, source_project_id,
             no_snapshots, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        rusqlite::params![
            new.id,
            v.id,
            new.name,
            new.salt,
            new.crypt_hash,
            v.project_id,
            new.no_snapshots,
            now.0
        ],
    )?;
    get(tx, &new.id)
}

pub(crate) fn delete(tx: &Transaction<'_>, id: &str, now: Timestamp) -> Result<(), DbError> {
    let t = get(tx, id)?;
    // As Cinder: a volume no longer awaiting the transfer keeps its status; the offer goes.
    tx.execute(
        "UPDATE volumes SET status = 'available', updated_at = ?2
         WHERE id = ?1 AND deleted = 0 AND status = 'awaiting-transfer'",
        (&t.volume_id, now.0),
    )?;
    tx.execute(
        "UPDATE transfers SET deleted = 1, deleted_at = ?2, updated_at = ?2 WHERE id = ?1",
        (id, now.0),
    )?;
    Ok(())
}

/// Withdraws the live transfers of a volume being destroyed.
pub(crate) fn delete_all_of(
    tx: &Transaction<'_>,
    volume_id: &str,
    now: Timestamp,
) -> Result<(), DbError> {
    tx.execute(
        "UPDATE transfers SET deleted = 1, deleted_at = ?2, updated_at = ?2
         WHERE volume_id = ?1 AND deleted = 0",
        (volume_id, now.0),
    )?;
    Ok(())
}

pub(crate) fn accept(
    tx: &Transaction<'_>,
    id: &str,
    project: &str,
    user: &str,
    now: Timestamp,
) -> Result<(Transfer, Volume), DbError> {
    let t = get(tx, id)?;
    let v = volumes::get(tx, &t.volume_id)?;
    expect_status("volume", &v.id, &v.status, &["awaiting-transfer"])?;
    let snaps = if t.no_snapshots {
        Vec::new()
    } else {
        snapshots_of(tx, &v)?
    };
    snapshots_available(&snaps)?;
    let source = v.project_id.clone();
    if source != project {
        // What moves: the volume, and the snapshots that go with it.
        let mut cost = volumes::costs(tx, &v)?;
        if v.use_quota {
            quotas::check_per_volume(tx, project, v.size_gb)?;
        }
        for (_, _, use_quota, size, type_id) in &snaps {
            if *use_quota {
                let tname = volumes::type_name(tx, type_id.as_deref()).ok().flatten();
                let size = u64::try_from(*size).unwrap_or(0);
                cost.extend(quotas::costs("snapshots", size, tname.as_deref()));
            }
        }
        let cost = merge(cost);
        // Charged to the taker first: over its quota, nothing has changed.
        quotas::charge(tx, project, &cost)?;
        quotas::charge(tx, &source, &quotas::negate(&cost))?;
    }
    tx.execute(
        "UPDATE volumes SET status = 'available', project_id = ?2, user_id = ?3, updated_at = ?4
         WHERE id = ?1",
        (&v.id, project, user, now.0),
    )?;
    for (sid, ..) in &snaps {
        snapshots::move_to(tx, sid, project, user, now)?;
    }
    attachments::move_to(tx, &v.id, project)?;
    tx.execute(
        "UPDATE transfers SET accepted = 1, destination_project_id = ?2, deleted = 1,
             deleted_at = ?3, updated_at = ?3
         WHERE id = ?1",
        (id, project, now.0),
    )?;
    let accepted = Transfer {
        accepted: true,
        destination_project_id: Some(project.to_owned()),
        updated_at: Some(now),
        ..t
    };
    Ok((accepted, volumes::get(tx, &v.id)?))
}

/// Sums the deltas of the same resource (a volume and its snapshots share `gigabytes`), so
/// each limit is checked against the whole of what moves.
fn merge(deltas: Vec<(String, i64)>) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = Vec::new();
    for (r, d) in deltas {
        match out.iter_mut().find(|(o, _)| *o == r) {
            Some((_, sum)) => *sum = sum.saturating_add(d),
            None => out.push((r, d)),
        }
    }
    out
}
