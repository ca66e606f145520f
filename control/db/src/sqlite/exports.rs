//! Export records: what the datapath should be serving, for reconciliation after restarts.

use rusqlite::{Connection, Transaction};

use super::volumes;
use crate::DbError;
use crate::model::{Export, Timestamp};

pub(crate) fn put(tx: &Transaction<'_>, e: &Export) -> Result<(), DbError> {
    volumes::get(tx, &e.volume_id)?;
    let hosts = serde_json::to_string(&e.hosts)
        .map_err(|err| DbError::Invalid(format!("export hosts: {err}")))?;
    tx.execute(
        "INSERT INTO exports (volume_id, protocol, target, hosts, chap_user, chap_secret, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (volume_id, protocol) DO UPDATE SET target = excluded.target,
             hosts = excluded.hosts, chap_user = excluded.chap_user,
             chap_secret = excluded.chap_secret",
        rusqlite::params![
            e.volume_id,
            e.protocol,
            e.target,
            hosts,
            e.chap_user,
            e.chap_secret,
            Timestamp::now().0
        ],
    )?;
    Ok(())
}

pub(crate) fn remove(
    tx: &Transaction<'_>,
    volume_id: &str,
    protocol: &str,
) -> Result<bool, DbError> {
    Ok(tx.execute(
        "DELETE FROM exports WHERE volume_id = ?1 AND protocol = ?2",
        (volume_id, protocol),
    )? > 0)
}

pub(crate) fn list(conn: &Connection, host_prefix: Option<&str>) -> Result<Vec<Export>, DbError> {
    select(
        conn,
        "v.deleted = 0 AND (?1 IS NULL OR v.host = ?1 OR v.host LIKE ?1 || '#%')",
        host_prefix,
    )
}

pub(crate) fn of(conn: &Connection, volume_id: &str) -> Result<Vec<Export>, DbError> {
    select(conn, "v.deleted = 0 AND e.volume_id = ?1", Some(volume_id))
}

fn select(conn: &Connection, filter: &str, arg: Option<&str>) -> Result<Vec<Export>, DbError> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT e.volume_id, e.protocol, e.target, e.hosts, e.chap_user, e.chap_secret
         FROM exports e JOIN volumes v ON v.id = e.volume_id
         WHERE {filter}
         ORDER BY e.volume_id, e.protocol"
    ))?;
    let rows = st.query_map([arg], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (volume_id, protocol, target, hosts, chap_user, chap_secret) = row?;
        let hosts: Vec<String> = serde_json::from_str(&hosts)
            .map_err(|e| DbError::Corrupt(format!("export hosts of {volume_id}: {e}")))?;
        out.push(Export {
            volume_id,
            protocol,
            target,
            hosts,
            chap_user,
            chap_secret,
        });
    }
    Ok(out)
}
