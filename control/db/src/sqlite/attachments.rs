//! Attachment rows (Cinder's `volume_attachment`), and the volume status they decide.
//!
//! # The volume's status follows its attachments
//!
//! After every attachment change, in the same transaction, the volume is recomputed as
//! Cinder's `_get_statuses_from_attachments` does: over its *holding* attachments (not
//! deleted, status `reserved`, `attaching`, `attached` or `detaching`; `error_*` and `detached`
//! ones hold nothing), the first status present of `attached` > `attaching` > `detaching` >
//! `reserved` is the volume's `attach_status`, and its status is `in-use`, `attaching`,
//! `detaching` or `reserved` accordingly; with none, `detached` and `available`.
//!
//! `attach_status` is always recomputed. The status only when the volume is in a status the
//! attachments own (`available`, `reserved`, `attaching`, `in-use`, `detaching`): an
//! operation's transitional or failed status (`extending` of an attached volume, `uploading`,
//! `maintenance`, `error`, ...) is left alone, and if its `previous_status` (what that
//! operation restores) is one the attachments own, that is recomputed instead, so the
//! operation ends in the right one. As in Cinder's `volume_detached`, a volume whose migration
//! is under way does not become `available` when its last attachment goes.

use rusqlite::{Connection, OptionalExtension, Row, Transaction};

use super::list::{self, Table};
use super::{exists, expect_status, volumes};
use crate::DbError;
use crate::model::{
    ATTACH_STATUSES, Attachment, AttachmentChange, HOLDING_ATTACH_STATUSES, NewAttachment,
    Timestamp, Volume, is_uuid,
};
use crate::query::{Field, ListQuery, Page, SortKey};

const COLUMNS: &str = "id, volume_id, project_id, instance_uuid, attached_host, mountpoint, \
    attach_mode, attach_status, connector, connection_info, attach_time, detach_time, \
    created_at, updated_at";

/// The volume statuses that belong to the attach flow, which the attachments decide.
const ATTACH_OWNED: [&str; 5] = ["available", "reserved", "attaching", "in-use", "detaching"];

/// Attachment statuses of attachments that never reached a host: they do not stop the volume
/// from being destroyed (and go with it).
const NEVER_CONNECTED: [&str; 2] = ["error_attaching", "detached"];

const TABLE: Table = Table {
    name: "volume_attachments",
    kind: "attachments",
    project: "project_id",
    meta: None,
    column: |f| match f {
        Field::Status => Some("attach_status"),
        Field::VolumeId => Some("volume_id"),
        Field::InstanceUuid => Some("instance_uuid"),
        Field::Host => Some("attached_host"),
        Field::CreatedAt => Some("created_at"),
        Field::UpdatedAt => Some("updated_at"),
        Field::Name
        | Field::Size
        | Field::AvailabilityZone
        | Field::Bootable
        | Field::VolumeTypeId
        | Field::ResourceUuid
        | Field::ResourceType
        | Field::EventId
        | Field::RequestId
        | Field::MessageLevel
        | Field::Metadata(_) => None,
    },
    sort: |k| match k {
        SortKey::Id => Some("id"),
        SortKey::Status => Some("attach_status"),
        SortKey::CreatedAt => Some("created_at"),
        SortKey::UpdatedAt => Some("COALESCE(updated_at, 0)"),
        SortKey::Name | SortKey::Size | SortKey::AvailabilityZone => None,
    },
};

/// A row, with its JSON columns still text.
type RawRow = (Attachment, Option<String>, Option<String>);

fn from_row(r: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        Attachment {
            id: r.get(0)?,
            volume_id: r.get(1)?,
            project_id: r.get(2)?,
            instance_uuid: r.get(3)?,
            attached_host: r.get(4)?,
            mountpoint: r.get(5)?,
            attach_mode: r.get(6)?,
            attach_status: r.get(7)?,
            connector: None,
            connection_info: None,
            attach_time: r.get::<_, Option<i64>>(10)?.map(Timestamp),
            detach_time: r.get::<_, Option<i64>>(11)?.map(Timestamp),
            created_at: Timestamp(r.get(12)?),
            updated_at: r.get::<_, Option<i64>>(13)?.map(Timestamp),
        },
        r.get(8)?,
        r.get(9)?,
    ))
}

fn parse(raw: RawRow) -> Result<Attachment, DbError> {
    let (mut a, connector, info) = raw;
    let json = |what: &str, s: Option<String>| {
        s.map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| DbError::Corrupt(format!("{what} of attachment {}: {e}", a.id)))
    };
    let connector = json("connector", connector)?;
    let info = json("connection info", info)?;
    a.connector = connector;
    a.connection_info = info;
    Ok(a)
}

fn to_json(what: &str, v: Option<&serde_json::Value>) -> Result<Option<String>, DbError> {
    v.map(serde_json::to_string)
        .transpose()
        .map_err(|e| DbError::Invalid(format!("attachment {what}: {e}")))
}

pub(crate) fn get(conn: &Connection, id: &str) -> Result<Attachment, DbError> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM volume_attachments WHERE id = ?1 AND deleted = 0"
    ))?;
    parse(
        st.query_row([id], from_row)
            .optional()?
            .ok_or_else(|| DbError::NotFound {
                kind: "attachment",
                id: id.to_owned(),
            })?,
    )
}

pub(crate) fn list(conn: &Connection, q: &ListQuery) -> Result<Page<Attachment>, DbError> {
    let (ids, count) = list::page_ids(conn, &TABLE, q)?;
    let items = ids
        .iter()
        .map(|id| get(conn, id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page { items, count })
}

/// The live (not deleted) attachments of a volume, oldest first.
pub(crate) fn of(conn: &Connection, volume_id: &str) -> Result<Vec<Attachment>, DbError> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM volume_attachments WHERE volume_id = ?1 AND deleted = 0
         ORDER BY created_at, id"
    ))?;
    let rows = st
        .query_map([volume_id], from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(parse).collect()
}

fn holds(a: &Attachment) -> bool {
    HOLDING_ATTACH_STATUSES
        .iter()
        .any(|(s, _)| *s == a.attach_status)
}

/// The volume's `(attach_status, status)` as its attachments make them.
fn statuses(conn: &Connection, volume_id: &str) -> Result<(&'static str, &'static str), DbError> {
    let live = of(conn, volume_id)?;
    Ok(HOLDING_ATTACH_STATUSES
        .iter()
        .find(|(s, _)| live.iter().any(|a| a.attach_status == *s))
        .copied()
        .unwrap_or(("detached", "available")))
}

/// Recomputes the volume's status and `attach_status` from its attachments (the rule is in
/// this module's documentation).
pub(crate) fn sync_volume(
    tx: &Transaction<'_>,
    volume_id: &str,
    now: Timestamp,
) -> Result<Volume, DbError> {
    let v = volumes::get(tx, volume_id)?;
    let (attach_status, status) = statuses(tx, volume_id)?;
    let migrating = v
        .migration_status
        .as_deref()
        .is_some_and(|m| !matches!(m, "success" | "error" | "none"));
    let hold_back = attach_status == "detached" && migrating;
    let owned = |s: &str| ATTACH_OWNED.contains(&s);
    let (new_status, new_previous) = if hold_back {
        (v.status.clone(), v.previous_status.clone())
    } else if owned(&v.status) {
        (status.to_owned(), v.previous_status.clone())
    } else {
        let previous = match v.previous_status.as_deref() {
            Some(p) if owned(p) => Some(status.to_owned()),
            _ => v.previous_status.clone(),
        };
        (v.status.clone(), previous)
    };
    tx.execute(
        "UPDATE volumes SET attach_status = ?2, status = ?3, previous_status = ?4, updated_at = ?5
         WHERE id = ?1",
        rusqlite::params![volume_id, attach_status, new_status, new_previous, now.0],
    )?;
    volumes::get(tx, volume_id)
}

/// Why the volume cannot be destroyed yet: an attachment that may have reached a host.
pub(crate) fn blocking_destroy(
    conn: &Connection,
    volume_id: &str,
) -> Result<Option<String>, DbError> {
    Ok(of(conn, volume_id)?
        .into_iter()
        .find(|a| !NEVER_CONNECTED.contains(&a.attach_status.as_str()))
        .map(|a| format!("attachment {} is {}", a.id, a.attach_status)))
}

/// Marks a destroyed volume's remaining attachments deleted.
pub(crate) fn delete_all_of(
    tx: &Transaction<'_>,
    volume_id: &str,
    now: Timestamp,
) -> Result<(), DbError> {
    tx.execute(
        "UPDATE volume_attachments SET deleted = 1, deleted_at = ?2, updated_at = ?2,
             attach_status = 'detached', detach_time = COALESCE(detach_time, ?2)
         WHERE volume_id = ?1 AND deleted = 0",
        (volume_id, now.0),
    )?;
    Ok(())
}

fn valid_mode(mode: &str) -> Result<(), DbError> {
    if matches!(mode, "rw" | "ro") {
        Ok(())
    } else {
        Err(DbError::Invalid(format!(
            "attach mode must be rw or ro, not {mode:?}"
        )))
    }
}

fn valid_instance(instance: Option<&str>) -> Result<(), DbError> {
    match instance {
        Some(i) if !is_uuid(i) => Err(DbError::Invalid(format!("instance {i:?} is not a UUID"))),
        _ => Ok(()),
    }
}

pub(crate) fn reserve(
    tx: &Transaction<'_>,
    new: &NewAttachment,
    volume_expected: &[&str],
    now: Timestamp,
) -> Result<Attachment, DbError> {
    if !is_uuid(&new.id) {
        return Err(DbError::Invalid(format!("{:?} is not a UUID", new.id)));
    }
    valid_mode(&new.attach_mode)?;
    valid_instance(new.instance_uuid.as_deref())?;
    if exists(
        tx,
        "SELECT 1 FROM volume_attachments WHERE id = ?1",
        &new.id,
    )? {
        return Err(DbError::Duplicate {
            kind: "attachment",
            id: new.id.clone(),
        });
    }
    let v = volumes::get(tx, &new.volume_id)?;
    if v.status.contains("error") {
        return Err(DbError::Conflict {
            kind: "volume",
            id: v.id,
            current: v.status,
            expected: "a status that is not an error".to_owned(),
        });
    }
    expect_status("volume", &v.id, &v.status, volume_expected)?;
    if !v.multiattach {
        // One holder at a time; a second attachment for the same instance is how Nova moves
        // it to another host (Cinder's LP #1694530 exception).
        let live = of(tx, &v.id)?;
        if let Some(a) = live.iter().find(|a| {
            holds(a) && (new.instance_uuid.is_none() || a.instance_uuid != new.instance_uuid)
        }) {
            return Err(DbError::InUse {
                kind: "volume",
                id: v.id,
                why: format!(
                    "it is not multiattach and attachment {} ({}) holds it",
                    a.id, a.attach_status
                ),
            });
        }
    }
    tx.execute(
        "INSERT INTO volume_attachments (id, volume_id, project_id, instance_uuid, attached_host,
             mountpoint, attach_mode, attach_status, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'reserved', ?8)",
        rusqlite::params![
            new.id,
            v.id,
            v.project_id,
            new.instance_uuid,
            new.attached_host,
            new.mountpoint,
            new.attach_mode,
            now.0
        ],
    )?;
    sync_volume(tx, &v.id, now)?;
    get(tx, &new.id)
}

pub(crate) fn update(
    tx: &Transaction<'_>,
    id: &str,
    expected: &[&str],
    c: &AttachmentChange,
    now: Timestamp,
) -> Result<Attachment, DbError> {
    let a = get(tx, id)?;
    expect_status("attachment", id, &a.attach_status, expected)?;
    if let Some(s) = &c.attach_status
        && !ATTACH_STATUSES.contains(&s.as_str())
    {
        return Err(DbError::Invalid(format!(
            "attachment status must be one of {}, not {s:?}",
            ATTACH_STATUSES.join(", ")
        )));
    }
    if let Some(m) = &c.attach_mode {
        valid_mode(m)?;
    }
    if let Some(i) = &c.instance_uuid {
        valid_instance(i.as_deref())?;
    }
    let mut sets: Vec<String> = vec!["updated_at = ?1".to_owned()];
    let mut params: Vec<rusqlite::types::Value> = vec![now.0.into()];
    let mut set = |col: &str, val: rusqlite::types::Value| {
        params.push(val);
        sets.push(format!("{col} = ?{}", params.len()));
    };
    if let Some(s) = &c.attach_status {
        set("attach_status", s.clone().into());
    }
    if let Some(j) = &c.connector {
        set("connector", to_json("connector", j.as_ref())?.into());
    }
    if let Some(j) = &c.connection_info {
        set(
            "connection_info",
            to_json("connection info", j.as_ref())?.into(),
        );
    }
    if let Some(s) = &c.mountpoint {
        set("mountpoint", s.clone().into());
    }
    if let Some(s) = &c.attached_host {
        set("attached_host", s.clone().into());
    }
    if let Some(s) = &c.instance_uuid {
        set("instance_uuid", s.clone().into());
    }
    if let Some(s) = &c.attach_mode {
        set("attach_mode", s.clone().into());
    }
    let attach_time = c.attach_time.or_else(|| {
        (c.attach_status.as_deref() == Some("attached") && a.attach_time.is_none()).then_some(now)
    });
    if let Some(t) = attach_time {
        set("attach_time", t.0.into());
    }
    if let Some(t) = c.detach_time {
        set("detach_time", t.0.into());
    }
    params.push(id.to_owned().into());
    tx.execute(
        &format!(
            "UPDATE volume_attachments SET {} WHERE id = ?{}",
            sets.join(", "),
            params.len()
        ),
        rusqlite::params_from_iter(params.iter()),
    )?;
    sync_volume(tx, &a.volume_id, now)?;
    get(tx, id)
}

pub(crate) fn delete(
    tx: &Transaction<'_>,
    id: &str,
    expected: &[&str],
    now: Timestamp,
) -> Result<Volume, DbError> {
    let a = get(tx, id)?;
    expect_status("attachment", id, &a.attach_status, expected)?;
    tx.execute(
        "UPDATE volume_attachments SET deleted = 1, deleted_at = ?2, updated_at = ?2,
             attach_status = 'detached', detach_time = COALESCE(detach_time, ?2)
         WHERE id = ?1",
        (id, now.0),
    )?;
    sync_volume(tx, &a.volume_id, now)
}

/// Moves a volume's live attachments to the project the volume moved to.
pub(crate) fn move_to(tx: &Transaction<'_>, volume_id: &str, project: &str) -> Result<(), DbError> {
    tx.execute(
        "UPDATE volume_attachments SET project_id = ?2 WHERE volume_id = ?1 AND deleted = 0",
        (volume_id, project),
    )?;
    Ok(())
}
