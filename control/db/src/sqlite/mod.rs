//! [`SqliteStore`]: the metadata store on embedded SQLite.

mod attachments;
mod exports;
mod list;
mod messages;
mod quotas;
mod schema;
mod services;
mod snapshots;
mod transfers;
mod types;
mod volumes;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::model::{
    Attachment, AttachmentChange, Export, Message, Metadata, NewAttachment, NewMessage,
    NewSnapshot, NewTransfer, NewVolume, QuotaUsage, Resource, Service, Snapshot, SnapshotChange,
    Timestamp, Transfer, Volume, VolumeChange, VolumeType,
};
use crate::query::{ListQuery, Page};
use crate::{DbError, MetadataStore, Reservation};

/// The metadata store in one SQLite database file.
///
/// One connection behind a mutex: SQLite allows one writer at a time, and the control
/// plane's catalogue is small, so readers waiting behind a write of a few hundred
/// microseconds cost less than the bookkeeping of a pool.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `path`, and brings its schema up to date.
    ///
    /// # Errors
    /// The file cannot be opened, is not a database, or was written by a newer Basalt.
    pub fn open(path: &Path) -> Result<SqliteStore, DbError> {
        let conn = Connection::open(path)?;
        Self::setup(conn, true, schema::MIGRATIONS.len())
    }

    /// Opens the database at `path` migrating it only up to schema `version`: a database as
    /// an older Basalt leaves it, for migration tests.
    #[cfg(test)]
    pub(crate) fn open_at_version(path: &Path, version: usize) -> Result<SqliteStore, DbError> {
        let conn = Connection::open(path)?;
        Self::setup(conn, true, version.min(schema::MIGRATIONS.len()))
    }

    /// The newest schema version this code knows.
    pub fn known_schema_version() -> i64 {
        i64::try_from(schema::MIGRATIONS.len()).unwrap_or(i64::MAX)
    }

    /// A database in memory (tests, benchmarks).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn in_memory() -> Result<SqliteStore, DbError> {
        Self::setup(
            Connection::open_in_memory()?,
            false,
            schema::MIGRATIONS.len(),
        )
    }

    fn setup(mut conn: Connection, file: bool, target: usize) -> Result<SqliteStore, DbError> {
        conn.busy_timeout(Duration::from_secs(5))?;
        if file {
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(DbError::Invalid(format!(
                    "the database refused the WAL journal (journal mode {mode})"
                )));
            }
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        migrate(&mut conn, target)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    /// The schema version of the open database.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn schema_version(&self) -> Result<i64, DbError> {
        Ok(self
            .lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Recomputes `project`'s committed usage from its live rows and returns the resources
    /// whose stored `in_use` differs (resource, stored, recomputed). Empty means consistent:
    /// the quota bookkeeping has leaked nothing.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn audit_usage(&self, project: &str) -> Result<Vec<(String, i64, i64)>, DbError> {
        let conn = self.lock();
        quotas::audit(&conn, project)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done transaction behind (it is rolled
        // back when dropped), so the connection is still sound.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, DbError>) -> Result<T, DbError> {
        let mut conn = self.lock();
        // One snapshot for every statement of the read.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

/// Applies the migrations the database lacks, up to schema `target`.
fn migrate(conn: &mut Connection, target: usize) -> Result<(), DbError> {
    let known = SqliteStore::known_schema_version();
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(DbError::SchemaTooNew { found, known });
    }
    for (i, sql) in schema::MIGRATIONS
        .iter()
        .enumerate()
        .take(target)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
        tracing::info!(version = i + 1, "metadata store schema migrated");
    }
    Ok(())
}

/// Checks a row's status against the expected ones (any, when empty). The row was read in
/// the same write transaction, which holds SQLite's write lock, so read, check and write are
/// as atomic as one `UPDATE ... WHERE status IN (...)`, and the caller learns the state the row
/// is actually in.
fn expect_status(
    kind: &'static str,
    id: &str,
    current: &str,
    expected: &[&str],
) -> Result<(), DbError> {
    if expected.is_empty() || expected.contains(&current) {
        Ok(())
    } else {
        Err(DbError::Conflict {
            kind,
            id: id.to_owned(),
            current: current.to_owned(),
            expected: expected.join(", "),
        })
    }
}

fn load_metadata(conn: &Connection, table: &str, fk: &str, id: &str) -> Result<Metadata, DbError> {
    let mut st = conn.prepare_cached(&format!("SELECT key, value FROM {table} WHERE {fk} = ?1"))?;
    let rows = st.query_map([id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut m = Metadata::new();
    for row in rows {
        let (k, v) = row?;
        m.insert(k, v);
    }
    Ok(m)
}

fn store_metadata(
    tx: &Transaction<'_>,
    table: &str,
    fk: &str,
    id: &str,
    meta: &Metadata,
    replace: bool,
) -> Result<Metadata, DbError> {
    for (k, v) in meta {
        if k.is_empty() || k.len() > 255 || v.len() > 255 {
            return Err(DbError::Invalid(
                "metadata keys must be 1 to 255 characters and values at most 255".to_owned(),
            ));
        }
    }
    if replace {
        tx.execute(&format!("DELETE FROM {table} WHERE {fk} = ?1"), [id])?;
    }
    let mut st = tx.prepare_cached(&format!(
        "INSERT INTO {table} ({fk}, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT ({fk}, key) DO UPDATE SET value = excluded.value"
    ))?;
    for (k, v) in meta {
        st.execute((id, k, v))?;
    }
    load_metadata(tx, table, fk, id)
}

fn exists(conn: &Connection, sql: &str, id: &str) -> Result<bool, DbError> {
    Ok(conn.query_row(sql, [id], |_| Ok(())).optional()?.is_some())
}

impl MetadataStore for SqliteStore {
    fn create_volume(&self, new: &NewVolume) -> Result<Volume, DbError> {
        self.write(|tx| volumes::create(tx, new, Timestamp::now()))
    }

    fn get_volume(&self, id: &str) -> Result<Volume, DbError> {
        self.read(|c| volumes::get(c, id))
    }

    fn list_volumes(&self, q: &ListQuery) -> Result<Page<Volume>, DbError> {
        self.read(|c| volumes::list(c, q))
    }

    fn update_volume(
        &self,
        id: &str,
        expected: &[&str],
        change: &VolumeChange,
    ) -> Result<Volume, DbError> {
        self.write(|tx| volumes::update(tx, id, expected, change, Timestamp::now()))
    }

    fn retype_volume(
        &self,
        id: &str,
        expected: &[&str],
        new_type_id: &str,
        multiattach: bool,
    ) -> Result<Volume, DbError> {
        self.write(|tx| {
            volumes::retype(tx, id, expected, new_type_id, multiattach, Timestamp::now())
        })
    }

    fn set_volume_metadata(
        &self,
        id: &str,
        meta: &Metadata,
        replace: bool,
    ) -> Result<Metadata, DbError> {
        self.write(|tx| {
            volumes::get(tx, id)?;
            store_metadata(tx, "volume_metadata", "volume_id", id, meta, replace)
        })
    }

    fn delete_volume_metadata(&self, id: &str, key: &str) -> Result<(), DbError> {
        self.write(|tx| {
            volumes::get(tx, id)?;
            let n = tx.execute(
                "DELETE FROM volume_metadata WHERE volume_id = ?1 AND key = ?2",
                (id, key),
            )?;
            if n == 0 {
                return Err(DbError::NotFound {
                    kind: "metadata key",
                    id: key.to_owned(),
                });
            }
            Ok(())
        })
    }

    fn destroy_volume(&self, id: &str, expected: &[&str]) -> Result<Volume, DbError> {
        self.write(|tx| volumes::destroy(tx, id, expected, Timestamp::now()))
    }

    fn begin_extend(
        &self,
        id: &str,
        expected: &[&str],
        new_size_gb: u64,
    ) -> Result<Reservation, DbError> {
        self.write(|tx| volumes::begin_extend(tx, id, expected, new_size_gb, Timestamp::now()))
    }

    fn finish_extend(
        &self,
        id: &str,
        reservation: &Reservation,
        new_size_gb: Option<u64>,
        status: &str,
    ) -> Result<Volume, DbError> {
        self.write(|tx| {
            volumes::finish_extend(tx, id, reservation, new_size_gb, status, Timestamp::now())
        })
    }

    fn pending_extend(&self, id: &str) -> Result<Option<(Reservation, u64)>, DbError> {
        self.read(|c| volumes::pending_extend(c, id))
    }

    fn put_export(&self, export: &Export) -> Result<(), DbError> {
        self.write(|tx| exports::put(tx, export))
    }

    fn remove_export(&self, volume_id: &str, protocol: &str) -> Result<bool, DbError> {
        self.write(|tx| exports::remove(tx, volume_id, protocol))
    }

    fn exports_of(&self, volume_id: &str) -> Result<Vec<Export>, DbError> {
        self.read(|c| exports::of(c, volume_id))
    }

    fn list_exports(&self, host_prefix: Option<&str>) -> Result<Vec<Export>, DbError> {
        self.read(|c| exports::list(c, host_prefix))
    }

    fn create_snapshot(
        &self,
        new: &NewSnapshot,
        volume_expected: &[&str],
    ) -> Result<Snapshot, DbError> {
        self.write(|tx| snapshots::create(tx, new, volume_expected, Timestamp::now()))
    }

    fn get_snapshot(&self, id: &str) -> Result<Snapshot, DbError> {
        self.read(|c| snapshots::get(c, id))
    }

    fn list_snapshots(&self, q: &ListQuery) -> Result<Page<Snapshot>, DbError> {
        self.read(|c| snapshots::list(c, q))
    }

    fn update_snapshot(
        &self,
        id: &str,
        expected: &[&str],
        change: &SnapshotChange,
    ) -> Result<Snapshot, DbError> {
        self.write(|tx| snapshots::update(tx, id, expected, change, Timestamp::now()))
    }

    fn set_snapshot_metadata(
        &self,
        id: &str,
        meta: &Metadata,
        replace: bool,
    ) -> Result<Metadata, DbError> {
        self.write(|tx| {
            snapshots::get(tx, id)?;
            store_metadata(tx, "snapshot_metadata", "snapshot_id", id, meta, replace)
        })
    }

    fn destroy_snapshot(&self, id: &str, expected: &[&str]) -> Result<Snapshot, DbError> {
        self.write(|tx| snapshots::destroy(tx, id, expected, Timestamp::now()))
    }

    fn create_volume_type(
        &self,
        name: &str,
        description: Option<&str>,
        is_public: bool,
        extra_specs: &BTreeMap<String, String>,
    ) -> Result<VolumeType, DbError> {
        self.write(|tx| types::create(tx, name, description, is_public, extra_specs))
    }

    fn get_volume_type(&self, id_or_name: &str) -> Result<VolumeType, DbError> {
        self.read(|c| types::get(c, id_or_name))
    }

    fn list_volume_types(&self, project: Option<&str>) -> Result<Vec<VolumeType>, DbError> {
        self.read(|c| types::list(c, project))
    }

    fn update_volume_type(
        &self,
        id: &str,
        name: Option<&str>,
        description: Option<Option<&str>>,
        is_public: Option<bool>,
    ) -> Result<VolumeType, DbError> {
        self.write(|tx| types::update(tx, id, name, description, is_public))
    }

    fn set_extra_specs(
        &self,
        id: &str,
        specs: &BTreeMap<String, String>,
    ) -> Result<VolumeType, DbError> {
        self.write(|tx| types::set_specs(tx, id, specs))
    }

    fn unset_extra_spec(&self, id: &str, key: &str) -> Result<(), DbError> {
        self.write(|tx| types::unset_spec(tx, id, key))
    }

    fn set_type_access(&self, id: &str, project: &str, grant: bool) -> Result<(), DbError> {
        self.write(|tx| types::set_access(tx, id, project, grant))
    }

    fn delete_volume_type(&self, id: &str) -> Result<(), DbError> {
        self.write(|tx| types::delete(tx, id))
    }

    fn set_default_type(&self, project: &str, type_id: &str) -> Result<String, DbError> {
        self.write(|tx| types::set_default(tx, project, type_id))
    }

    fn get_default_type(&self, project: &str) -> Result<Option<String>, DbError> {
        self.read(|c| types::get_default(c, project))
    }

    fn list_default_types(&self) -> Result<Vec<(String, String)>, DbError> {
        self.read(types::list_defaults)
    }

    fn unset_default_type(&self, project: &str) -> Result<bool, DbError> {
        self.write(|tx| types::unset_default(tx, project))
    }

    fn reserve_attachment(
        &self,
        new: &NewAttachment,
        volume_expected: &[&str],
    ) -> Result<Attachment, DbError> {
        self.write(|tx| attachments::reserve(tx, new, volume_expected, Timestamp::now()))
    }

    fn get_attachment(&self, id: &str) -> Result<Attachment, DbError> {
        self.read(|c| attachments::get(c, id))
    }

    fn list_attachments(&self, q: &ListQuery) -> Result<Page<Attachment>, DbError> {
        self.read(|c| attachments::list(c, q))
    }

    fn attachments_of(&self, volume_id: &str) -> Result<Vec<Attachment>, DbError> {
        self.read(|c| attachments::of(c, volume_id))
    }

    fn update_attachment(
        &self,
        id: &str,
        expected: &[&str],
        change: &AttachmentChange,
    ) -> Result<Attachment, DbError> {
        self.write(|tx| attachments::update(tx, id, expected, change, Timestamp::now()))
    }

    fn delete_attachment(&self, id: &str, expected: &[&str]) -> Result<Volume, DbError> {
        self.write(|tx| attachments::delete(tx, id, expected, Timestamp::now()))
    }

    fn create_transfer(&self, new: &NewTransfer) -> Result<Transfer, DbError> {
        self.write(|tx| transfers::create(tx, new, Timestamp::now()))
    }

    fn get_transfer(&self, id: &str) -> Result<Transfer, DbError> {
        self.read(|c| transfers::get(c, id))
    }

    fn list_transfers(&self, q: &ListQuery) -> Result<Page<Transfer>, DbError> {
        self.read(|c| transfers::list(c, q))
    }

    fn delete_transfer(&self, id: &str) -> Result<(), DbError> {
        self.write(|tx| transfers::delete(tx, id, Timestamp::now()))
    }

    fn accept_transfer(
        &self,
        id: &str,
        dest_project_id: &str,
        dest_user_id: &str,
    ) -> Result<(Transfer, Volume), DbError> {
        self.write(|tx| transfers::accept(tx, id, dest_project_id, dest_user_id, Timestamp::now()))
    }

    fn create_message(&self, new: &NewMessage) -> Result<Message, DbError> {
        self.write(|tx| messages::create(tx, new, Timestamp::now()))
    }

    fn get_message(&self, id: &str) -> Result<Message, DbError> {
        self.read(|c| messages::get(c, id))
    }

    fn list_messages(&self, q: &ListQuery) -> Result<Page<Message>, DbError> {
        self.read(|c| messages::list(c, q))
    }

    fn delete_message(&self, id: &str) -> Result<(), DbError> {
        self.write(|tx| messages::delete(tx, id, Timestamp::now()))
    }

    fn reap_messages(&self, now: Timestamp) -> Result<usize, DbError> {
        self.write(|tx| messages::reap(tx, now))
    }

    fn quota_usage(&self, project: &str) -> Result<BTreeMap<Resource, QuotaUsage>, DbError> {
        self.read(|c| quotas::usage(c, project))
    }

    fn set_quota_limit(&self, project: &str, resource: &str, limit: i64) -> Result<(), DbError> {
        self.write(|tx| quotas::set_limit(tx, project, resource, limit))
    }

    fn delete_project_quotas(&self, project: &str) -> Result<(), DbError> {
        self.write(|tx| {
            tx.execute("DELETE FROM quota_limits WHERE project_id = ?1", [project])?;
            Ok(())
        })
    }

    fn default_quotas(&self) -> Result<BTreeMap<Resource, i64>, DbError> {
        self.read(quotas::defaults)
    }

    fn set_default_quota(&self, resource: &str, limit: i64) -> Result<(), DbError> {
        self.write(|tx| quotas::set_default(tx, resource, limit))
    }

    fn expire_reservations(&self, now: Timestamp) -> Result<usize, DbError> {
        self.write(|tx| quotas::expire(tx, now))
    }

    fn service_heartbeat(
        &self,
        host: &str,
        binary: &str,
        availability_zone: &str,
    ) -> Result<Service, DbError> {
        self.write(|tx| services::heartbeat(tx, host, binary, availability_zone, Timestamp::now()))
    }

    fn list_services(&self) -> Result<Vec<Service>, DbError> {
        self.read(services::list)
    }

    fn set_service_disabled(
        &self,
        host: &str,
        binary: &str,
        disabled: bool,
        reason: Option<&str>,
    ) -> Result<Service, DbError> {
        self.write(|tx| services::set_disabled(tx, host, binary, disabled, reason))
    }
}
