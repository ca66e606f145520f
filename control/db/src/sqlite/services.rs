//! Service heartbeats.

use rusqlite::{Connection, OptionalExtension, Row, Transaction};

use crate::DbError;
use crate::model::{Service, Timestamp};

fn from_row(r: &Row<'_>) -> rusqlite::Result<Service> {
    Ok(Service {
        host: r.get(0)?,
        binary: r.get(1)?,
        availability_zone: r.get(2)?,
        disabled: r.get(3)?,
        disabled_reason: r.get(4)?,
        report_count: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
        updated_at: Timestamp(r.get(6)?),
    })
}

const COLUMNS: &str =
    "host, binary, availability_zone, disabled, disabled_reason, report_count, updated_at";

fn get(conn: &Connection, host: &str, binary: &str) -> Result<Service, DbError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM services WHERE host = ?1 AND binary = ?2"),
        (host, binary),
        from_row,
    )
    .optional()?
    .ok_or_else(|| DbError::NotFound {
        kind: "service",
        id: format!("{binary} on {host}"),
    })
}

pub(crate) fn heartbeat(
    tx: &Transaction<'_>,
    host: &str,
    binary: &str,
    az: &str,
    now: Timestamp,
) -> Result<Service, DbError> {
    tx.execute(
        "INSERT INTO services (host, binary, availability_zone, report_count, updated_at)
         VALUES (?1, ?2, ?3, 1, ?4)
         ON CONFLICT (host, binary) DO UPDATE SET
             availability_zone = excluded.availability_zone,
             report_count = report_count + 1,
             updated_at = excluded.updated_at",
        (host, binary, az, now.0),
    )?;
    get(tx, host, binary)
}

pub(crate) fn list(conn: &Connection) -> Result<Vec<Service>, DbError> {
    let mut st = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM services ORDER BY binary, host"
    ))?;
    Ok(st.query_map([], from_row)?.collect::<Result<_, _>>()?)
}

pub(crate) fn set_disabled(
    tx: &Transaction<'_>,
    host: &str,
    binary: &str,
    disabled: bool,
    reason: Option<&str>,
) -> Result<Service, DbError> {
    get(tx, host, binary)?;
    tx.execute(
        "UPDATE services SET disabled = ?3, disabled_reason = ?4 WHERE host = ?1 AND binary = ?2",
        (host, binary, disabled, if disabled { reason } else { None }),
    )?;
    get(tx, host, binary)
}
