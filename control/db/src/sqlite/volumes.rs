//! Volume rows.

use rusqlite::{Connection, OptionalExtension, Row, Transaction};

use super::list::{self, Table};
use super::{attachments, exists, expect_status, load_metadata, quotas, store_metadata, transfers};
use crate::model::{NewVolume, Timestamp, Volume, VolumeChange, is_uuid};
use crate::query::{Field, ListQuery, Page, SortKey};
use crate::{DbError, Reservation};

const COLUMNS: &str = "id, project_id, user_id, name, description, size_gb, status, \
    previous_status, attach_status, migration_status, volume_type_id, availability_zone, host, \
    bootable, multiattach, readonly, source_volid, snapshot_id, use_quota, user_message, \
    created_at, updated_at, launched_at, readonly_set";

/// How long an extend's reservation lives before the expiry sweep rolls it back.
const RESERVATION_SECS: i64 = 86_400;

pub(crate) const TABLE: Table = Table {
    name: "volumes",
    kind: "volumes",
    project: "project_id",
    meta: Some(("volume_metadata", "volume_id")),
    column: |f| match f {
        Field::Name => Some("name"),
        Field::Status => Some("status"),
        Field::Size => Some("size_gb"),
        Field::AvailabilityZone => Some("availability_zone"),
        Field::Host => Some("host"),
        Field::Bootable => Some("bootable"),
        Field::VolumeTypeId => Some("volume_type_id"),
        Field::CreatedAt => Some("created_at"),
        Field::UpdatedAt => Some("updated_at"),
        Field::VolumeId
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
        SortKey::AvailabilityZone => Some("availability_zone"),
    },
};

fn from_row(r: &Row<'_>) -> rusqlite::Result<Volume> {
    let size: i64 = r.get(5)?;
    Ok(Volume {
        id: r.get(0)?,
        project_id: r.get(1)?,
        user_id: r.get(2)?,
        name: r.get(3)?,
        description: r.get(4)?,
        size_gb: u64::try_from(size).unwrap_or(0),
        status: r.get(6)?,
        previous_status: r.get(7)?,
        attach_status: r.get(8)?,
        migration_status: r.get(9)?,
        volume_type_id: r.get(10)?,
        availability_zone: r.get(11)?,
        host: r.get(12)?,
        bootable: r.get(13)?,
        multiattach: r.get(14)?,
        readonly: r.get(15)?,
        source_volid: r.get(16)?,
        snapshot_id: r.get(17)?,
        use_quota: r.get(18)?,
        user_message: r.get(19)?,
        metadata: Default::default(),
        created_at: Timestamp(r.get(20)?),
        updated_at: r.get::<_, Option<i64>>(21)?.map(Timestamp),
        launched_at: r.get::<_, Option<i64>>(22)?.map(Timestamp),
        readonly_set: r.get(23)?,
    })
}

pub(crate) fn get(conn: &Connection, id: &str) -> Result<Volume, DbError> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM volumes WHERE id = ?1 AND deleted = 0"
    ))?;
    let mut v = st
        .query_row([id], from_row)
        .optional()?
        .ok_or_else(|| DbError::NotFound {
            kind: "volume",
            id: id.to_owned(),
        })?;
    v.metadata = load_metadata(conn, "volume_metadata", "volume_id", id)?;
    Ok(v)
}

pub(crate) fn list(conn: &Connection, q: &ListQuery) -> Result<Page<Volume>, DbError> {
    let (ids, count) = list::page_ids(conn, &TABLE, q)?;
    let items = ids
        .iter()
        .map(|id| get(conn, id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page { items, count })
}

/// The name of live volume type `type_id` (none for none).
pub(crate) fn type_name(
    conn: &Connection,
    type_id: Option<&str>,
) -> Result<Option<String>, DbError> {
    let Some(t) = type_id else {
        return Ok(None);
    };
    conn.query_row(
        "SELECT name FROM volume_types WHERE id = ?1 AND deleted = 0",
        [t],
        |r| r.get(0),
    )
    .optional()?
    .map(Some)
    .ok_or_else(|| DbError::NotFound {
        kind: "volume type",
        id: t.to_owned(),
    })
}

/// What `v` costs in quota (nothing when it does not count).
pub(crate) fn costs(conn: &Connection, v: &Volume) -> Result<Vec<(String, i64)>, DbError> {
    if !v.use_quota {
        return Ok(Vec::new());
    }
    // The type may have been deleted since; its per-type usage then no longer matters.
    let t = type_name(conn, v.volume_type_id.as_deref()).ok().flatten();
    Ok(quotas::costs("volumes", v.size_gb, t.as_deref()))
}

pub(crate) fn create(
    tx: &Transaction<'_>,
    new: &NewVolume,
    now: Timestamp,
) -> Result<Volume, DbError> {
    if !is_uuid(&new.id) {
        return Err(DbError::Invalid(format!("{:?} is not a UUID", new.id)));
    }
    if exists(tx, "SELECT 1 FROM volumes WHERE id = ?1", &new.id)? {
        return Err(DbError::Duplicate {
            kind: "volume",
            id: new.id.clone(),
        });
    }
    let size = i64::try_from(new.size_gb)
        .map_err(|_| DbError::Invalid(format!("size {} is too large", new.size_gb)))?;
    let tname = type_name(tx, new.volume_type_id.as_deref())?;
    if new.use_quota {
        quotas::check_per_volume(tx, &new.project_id, new.size_gb)?;
        quotas::charge(
            tx,
            &new.project_id,
            &quotas::costs("volumes", new.size_gb, tname.as_deref()),
        )?;
    }
    tx.execute(
        "INSERT INTO volumes (id, project_id, user_id, name, description, size_gb, status,
             attach_status, volume_type_id, availability_zone, bootable, multiattach,
             source_volid, snapshot_id, use_quota, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'creating', 'detached', ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        rusqlite::params![
            new.id,
            new.project_id,
            new.user_id,
            new.name,
            new.description,
            size,
            new.volume_type_id,
            new.availability_zone,
            new.bootable,
            new.multiattach,
            new.source_volid,
            new.snapshot_id,
            new.use_quota,
            now.0
        ],
    )?;
    store_metadata(
        tx,
        "volume_metadata",
        "volume_id",
        &new.id,
        &new.metadata,
        false,
    )?;
    get(tx, &new.id)
}

/// Changes a volume's type in place (a retype that needs no migration): the per-type quota
/// moves from the old type to the new one in the same transaction, and multi-attach follows
/// the new type.
pub(crate) fn retype(
    tx: &Transaction<'_>,
    id: &str,
    expected: &[&str],
    new_type_id: &str,
    multiattach: bool,
    now: Timestamp,
) -> Result<Volume, DbError> {
    let v = get(tx, id)?;
    expect_status("volume", id, &v.status, expected)?;
    let old_name = type_name(tx, v.volume_type_id.as_deref())?;
    let new_name = type_name(tx, Some(new_type_id))?;
    if v.use_quota {
        let per_type = |name: &Option<String>| -> Vec<(String, i64)> {
            quotas::costs("volumes", v.size_gb, name.as_deref())
                .into_iter()
                .skip(2)
                .collect()
        };
        quotas::charge(tx, &v.project_id, &per_type(&new_name))?;
        quotas::add_in_use(tx, &v.project_id, &quotas::negate(&per_type(&old_name)))?;
    }
    tx.execute(
        "UPDATE volumes SET volume_type_id = ?1, multiattach = ?2, updated_at = ?3 WHERE id = ?4",
        (new_type_id, multiattach, now.0, id),
    )?;
    get(tx, id)
}

pub(crate) fn update(
    tx: &Transaction<'_>,
    id: &str,
    expected: &[&str],
    c: &VolumeChange,
    now: Timestamp,
) -> Result<Volume, DbError> {
    let v = get(tx, id)?;
    expect_status("volume", id, &v.status, expected)?;
    let mut sets: Vec<String> = vec!["updated_at = ?1".to_owned()];
    let mut params: Vec<rusqlite::types::Value> = vec![now.0.into()];
    let mut set = |col: &str, val: rusqlite::types::Value| {
        params.push(val);
        sets.push(format!("{col} = ?{}", params.len()));
    };
    if let Some(s) = &c.status {
        set("status", s.clone().into());
    }
    if let Some(s) = &c.previous_status {
        set("previous_status", s.clone().into());
    }
    if let Some(s) = &c.attach_status {
        set("attach_status", s.clone().into());
    }
    if let Some(s) = &c.migration_status {
        set("migration_status", s.clone().into());
    }
    if let Some(s) = &c.host {
        set("host", s.clone().into());
    }
    if let Some(n) = c.size_gb {
        let n = i64::try_from(n).map_err(|_| DbError::Invalid(format!("size {n} is too large")))?;
        set("size_gb", n.into());
    }
    if let Some(s) = &c.name {
        set("name", s.clone().into());
    }
    if let Some(s) = &c.description {
        set("description", s.clone().into());
    }
    if let Some(b) = c.bootable {
        set("bootable", i64::from(b).into());
    }
    if let Some(b) = c.readonly {
        set("readonly", i64::from(b).into());
        set("readonly_set", 1i64.into());
    }
    if let Some(s) = &c.user_message {
        set("user_message", s.clone().into());
    }
    if let Some(t) = c.launched_at {
        set("launched_at", t.0.into());
    }
    params.push(id.to_owned().into());
    tx.execute(
        &format!(
            "UPDATE volumes SET {} WHERE id = ?{}",
            sets.join(", "),
            params.len()
        ),
        rusqlite::params_from_iter(params.iter()),
    )?;
    get(tx, id)
}

pub(crate) fn destroy(
    tx: &Transaction<'_>,
    id: &str,
    expected: &[&str],
    now: Timestamp,
) -> Result<Volume, DbError> {
    let v = get(tx, id)?;
    expect_status("volume", id, &v.status, expected)?;
    let snaps: i64 = tx.query_row(
        "SELECT COUNT(*) FROM snapshots WHERE volume_id = ?1 AND deleted = 0",
        [id],
        |r| r.get(0),
    )?;
    if snaps > 0 {
        return Err(DbError::InUse {
            kind: "volume",
            id: id.to_owned(),
            why: format!("it has {snaps} snapshot(s)"),
        });
    }
    if let Some(why) = attachments::blocking_destroy(tx, id)? {
        return Err(DbError::InUse {
            kind: "volume",
            id: id.to_owned(),
            why,
        });
    }
    let cost = costs(tx, &v)?;
    quotas::charge(tx, &v.project_id, &quotas::negate(&cost))?;
    tx.execute(
        "UPDATE volumes SET deleted = 1, deleted_at = ?2, status = 'deleted', updated_at = ?2
         WHERE id = ?1",
        (id, now.0),
    )?;
    tx.execute("DELETE FROM volume_metadata WHERE volume_id = ?1", [id])?;
    tx.execute("DELETE FROM exports WHERE volume_id = ?1", [id])?;
    attachments::delete_all_of(tx, id, now)?;
    transfers::delete_all_of(tx, id, now)?;
    Ok(Volume {
        status: "deleted".to_owned(),
        ..v
    })
}

pub(crate) fn begin_extend(
    tx: &Transaction<'_>,
    id: &str,
    expected: &[&str],
    new_size: u64,
    now: Timestamp,
) -> Result<Reservation, DbError> {
    let v = get(tx, id)?;
    expect_status("volume", id, &v.status, expected)?;
    if new_size <= v.size_gb {
        return Err(DbError::Invalid(format!(
            "New size for extend must be greater than current size. (current: {}, extended: {new_size})",
            v.size_gb
        )));
    }
    let mut deltas = Vec::new();
    if v.use_quota {
        quotas::check_per_volume(tx, &v.project_id, new_size)?;
        let growth = i64::try_from(new_size - v.size_gb).unwrap_or(i64::MAX);
        deltas.push(("gigabytes".to_owned(), growth));
        if let Some(t) = type_name(tx, v.volume_type_id.as_deref()).ok().flatten() {
            deltas.push((format!("gigabytes_{t}"), growth));
        }
    }
    let rid = quotas::reserve(tx, &v.project_id, &deltas, now.plus_secs(RESERVATION_SECS))?;
    tx.execute(
        "UPDATE volumes SET status = 'extending', previous_status = status, updated_at = ?2,
             extend_to_gb = ?3, extend_reservation = ?4
         WHERE id = ?1",
        (id, now.0, i64::try_from(new_size).unwrap_or(i64::MAX), &rid),
    )?;
    Ok(Reservation {
        id: rid,
        project_id: v.project_id,
    })
}

pub(crate) fn finish_extend(
    tx: &Transaction<'_>,
    id: &str,
    r: &Reservation,
    new_size: Option<u64>,
    status: &str,
    now: Timestamp,
) -> Result<Volume, DbError> {
    let v = get(tx, id)?;
    expect_status("volume", id, &v.status, &["extending"])?;
    let settled = quotas::settle(tx, &r.id, new_size.is_some())?;
    if let Some(n) = new_size
        && !settled
        && v.use_quota
    {
        // The reservation expired while the datapath worked: the space is used all the same.
        let growth = i64::try_from(n.saturating_sub(v.size_gb)).unwrap_or(i64::MAX);
        let mut d = vec![("gigabytes".to_owned(), growth)];
        if let Some(t) = type_name(tx, v.volume_type_id.as_deref()).ok().flatten() {
            d.push((format!("gigabytes_{t}"), growth));
        }
        quotas::add_in_use(tx, &v.project_id, &d)?;
    }
    let change = VolumeChange {
        status: Some(status.to_owned()),
        size_gb: new_size,
        ..VolumeChange::default()
    };
    tx.execute(
        "UPDATE volumes SET extend_to_gb = NULL, extend_reservation = NULL WHERE id = ?1",
        [id],
    )?;
    update(tx, id, &[], &change, now)
}

pub(crate) fn pending_extend(
    conn: &Connection,
    id: &str,
) -> Result<Option<(Reservation, u64)>, DbError> {
    let v = get(conn, id)?;
    let row: Option<(Option<i64>, Option<String>)> = conn
        .query_row(
            "SELECT extend_to_gb, extend_reservation FROM volumes WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match row {
        Some((Some(size), Some(rid))) => Some((
            Reservation {
                id: rid,
                project_id: v.project_id,
            },
            u64::try_from(size).unwrap_or(0),
        )),
        _ => None,
    })
}
