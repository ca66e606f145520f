//! User messages (API 3.3): what went wrong with an asynchronous request, kept until they
//! expire.

use rusqlite::{Connection, OptionalExtension, Row, Transaction};

use super::exists;
use super::list::{self, Table};
use crate::DbError;
use crate::model::{Message, NewMessage, Timestamp, is_uuid};
use crate::query::{Field, ListQuery, Page, SortKey};

const COLUMNS: &str = "id, project_id, request_id, resource_type, resource_uuid, event_id, \
    message_level, user_message, created_at, expires_at";

const TABLE: Table = Table {
    name: "messages",
    kind: "messages",
    project: "project_id",
    meta: None,
    column: |f| match f {
        Field::ResourceUuid => Some("resource_uuid"),
        Field::ResourceType => Some("resource_type"),
        Field::EventId => Some("event_id"),
        Field::RequestId => Some("request_id"),
        Field::MessageLevel => Some("message_level"),
        Field::CreatedAt => Some("created_at"),
        Field::Name
        | Field::Status
        | Field::Size
        | Field::AvailabilityZone
        | Field::Host
        | Field::Bootable
        | Field::VolumeTypeId
        | Field::VolumeId
        | Field::InstanceUuid
        | Field::UpdatedAt
        | Field::Metadata(_) => None,
    },
    sort: |k| match k {
        SortKey::Id => Some("id"),
        SortKey::CreatedAt => Some("created_at"),
        SortKey::Name
        | SortKey::Status
        | SortKey::Size
        | SortKey::UpdatedAt
        | SortKey::AvailabilityZone => None,
    },
};

fn from_row(r: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: r.get(0)?,
        project_id: r.get(1)?,
        request_id: r.get(2)?,
        resource_type: r.get(3)?,
        resource_uuid: r.get(4)?,
        event_id: r.get(5)?,
        message_level: r.get(6)?,
        user_message: r.get(7)?,
        created_at: Timestamp(r.get(8)?),
        expires_at: Timestamp(r.get(9)?),
    })
}

pub(crate) fn get(conn: &Connection, id: &str) -> Result<Message, DbError> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM messages WHERE id = ?1 AND deleted = 0"
    ))?;
    st.query_row([id], from_row)
        .optional()?
        .ok_or_else(|| DbError::NotFound {
            kind: "message",
            id: id.to_owned(),
        })
}

pub(crate) fn list(conn: &Connection, q: &ListQuery) -> Result<Page<Message>, DbError> {
    let (ids, count) = list::page_ids(conn, &TABLE, q)?;
    let items = ids
        .iter()
        .map(|id| get(conn, id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page { items, count })
}

pub(crate) fn create(
    tx: &Transaction<'_>,
    new: &NewMessage,
    now: Timestamp,
) -> Result<Message, DbError> {
    if !is_uuid(&new.id) {
        return Err(DbError::Invalid(format!("{:?} is not a UUID", new.id)));
    }
    if new.resource_type.is_empty() || new.event_id.is_empty() || new.message_level.is_empty() {
        return Err(DbError::Invalid(
            "a message needs its resource type, event id and level".to_owned(),
        ));
    }
    if exists(tx, "SELECT 1 FROM messages WHERE id = ?1", &new.id)? {
        return Err(DbError::Duplicate {
            kind: "message",
            id: new.id.clone(),
        });
    }
    tx.execute(
        "INSERT INTO messages (id, project_id, request_id, resource_type, resource_uuid,
             event_id, message_level, user_message, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        rusqlite::params![
            new.id,
            new.project_id,
            new.request_id,
            new.resource_type,
            new.resource_uuid,
            new.event_id,
            new.message_level,
            new.user_message,
            now.0,
            new.expires_at.0
        ],
    )?;
    get(tx, &new.id)
}

pub(crate) fn delete(tx: &Transaction<'_>, id: &str, now: Timestamp) -> Result<(), DbError> {
    get(tx, id)?;
    tx.execute(
        "UPDATE messages SET deleted = 1, deleted_at = ?2 WHERE id = ?1",
        (id, now.0),
    )?;
    Ok(())
}

/// Removes (for good) every message, deleted or not, that expired before `now`.
pub(crate) fn reap(tx: &Transaction<'_>, now: Timestamp) -> Result<usize, DbError> {
    let n = tx.execute("DELETE FROM messages WHERE expires_at < ?1", [now.0])?;
    if n > 0 {
        tracing::info!(count = n, "expired user messages reaped");
    }
    Ok(n)
}
