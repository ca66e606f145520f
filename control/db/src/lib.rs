//! The control plane's metadata store: what should exist (volumes, snapshots, attachments,
//! transfers, volume types, quotas, services, user messages), behind one trait of domain
//! operations.
//!
//! # Rules every implementation keeps
//!
//! - **Every state change is a compare-and-swap** (Cinder's `conditional_update`): the caller
//!   names the states it expects, and the change happens only if the row is in one of them,
//!   atomically; otherwise [`DbError::Conflict`] says what the state is. Two API calls racing
//!   to delete and attach the same volume cannot both win.
//! - **Quota is charged in the same transaction as the row it pays for.** Creating a volume
//!   charges `volumes`, `gigabytes` and the per-type resources and inserts the row, or does
//!   neither ([`DbError::OverQuota`]); destroying it releases them the same way. Operations
//!   that change a size later (extend) reserve first and commit or roll back when the datapath
//!   answers; stale reservations expire. Usage can therefore never leak, whatever crashes.
//! - **No SQL outside the implementation.** Queries are described with [`ListQuery`]'s
//!   whitelisted fields and sort keys, so an external database (PostgreSQL, for a multi-node
//!   control plane) implements the same trait.
//! - Calls block: async callers run them on a blocking thread (one writer at a time is how
//!   SQLite works anyway).
//!
//! The one implementation today is [`SqliteStore`]: embedded SQLite (bundled), WAL journal,
//! `synchronous=FULL` (a call that returned is on disk, power cut or not), foreign keys on,
//! `BEGIN IMMEDIATE` for every write, schema versions in `PRAGMA user_version` with forward-only
//! migrations, and a refusal to open a database written by a newer Basalt.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
pub mod model;
mod query;
mod sqlite;

pub use error::DbError;
pub use model::{
    ATTACH_STATUSES, Attachment, AttachmentChange, DEFAULT_QUOTAS, Export, HOLDING_ATTACH_STATUSES,
    Message, Metadata, NewAttachment, NewMessage, NewSnapshot, NewTransfer, NewVolume, QuotaUsage,
    Resource, Service, Snapshot, SnapshotChange, Timestamp, Transfer, Volume, VolumeChange,
    VolumeType, is_uuid, new_uuid,
};
pub use query::{Dir, Field, FilterOp, ListQuery, Page, SortKey, Val};
pub use sqlite::SqliteStore;

use std::collections::BTreeMap;

/// An extend under way: the reservation that pays for the growth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Its id.
    pub id: String,
    /// The project it charges.
    pub project_id: String,
}

/// The metadata store's operations.
pub trait MetadataStore: Send + Sync + std::fmt::Debug {
    // --- volumes ---

    /// Inserts a volume in status `creating`, charging its quota (unless `use_quota` is
    /// false) in the same transaction.
    ///
    /// # Errors
    /// Over quota, the size exceeds `per_volume_gigabytes`, the id exists, the type is unknown.
    fn create_volume(&self, new: &NewVolume) -> Result<Volume, DbError>;

    /// One volume (not a destroyed one).
    ///
    /// # Errors
    /// Unknown id.
    fn get_volume(&self, id: &str) -> Result<Volume, DbError>;

    /// Volumes matching `q`, one page, with the total count of matches.
    ///
    /// # Errors
    /// Unknown marker.
    fn list_volumes(&self, q: &ListQuery) -> Result<Page<Volume>, DbError>;

    /// Applies `change` if the volume's status is one of `expected` (any status when empty).
    ///
    /// # Errors
    /// Unknown id, or the status is not expected ([`DbError::Conflict`]).
    fn update_volume(
        &self,
        id: &str,
        expected: &[&str],
        change: &VolumeChange,
    ) -> Result<Volume, DbError>;

    /// Changes the type of a volume whose status is one of `expected`, in place: its per-type
    /// quota (`volumes_<type>`, `gigabytes_<type>`) moves to the new type in the same
    /// transaction, and `multiattach` is set as the new type says.
    ///
    /// # Errors
    /// Unknown volume or type, unexpected status, over the new type's quota.
    fn retype_volume(
        &self,
        id: &str,
        expected: &[&str],
        new_type_id: &str,
        multiattach: bool,
    ) -> Result<Volume, DbError>;

    /// Sets metadata keys (all of them, dropping others, when `replace`); returns the result.
    ///
    /// # Errors
    /// Unknown id.
    fn set_volume_metadata(
        &self,
        id: &str,
        meta: &Metadata,
        replace: bool,
    ) -> Result<Metadata, DbError>;

    /// Removes one metadata key.
    ///
    /// # Errors
    /// Unknown id or key.
    fn delete_volume_metadata(&self, id: &str, key: &str) -> Result<(), DbError>;

    /// Marks the volume destroyed (soft delete) if its status is one of `expected`, releasing
    /// its quota in the same transaction. Refused while snapshots of it exist, or attachments
    /// that may have reached a host (any live one but `error_attaching` and `detached`, which
    /// are deleted with it, as are its pending transfers).
    ///
    /// # Errors
    /// Unknown id, unexpected status, live snapshots or attachments ([`DbError::InUse`]).
    fn destroy_volume(&self, id: &str, expected: &[&str]) -> Result<Volume, DbError>;

    /// Starts an extend: status `expected` → `extending` and a reservation of the growth, at
    /// once.
    ///
    /// # Errors
    /// Unknown id, unexpected status, not a growth, over quota.
    fn begin_extend(
        &self,
        id: &str,
        expected: &[&str],
        new_size_gb: u64,
    ) -> Result<Reservation, DbError>;

    /// Ends an extend: on success the size becomes `new_size_gb`, the reservation is committed
    /// and the status returns to `status`; on failure the reservation is rolled back and the
    /// status becomes `status` (`error_extending`).
    ///
    /// # Errors
    /// Unknown id, the volume is not `extending`.
    fn finish_extend(
        &self,
        id: &str,
        reservation: &Reservation,
        new_size_gb: Option<u64>,
        status: &str,
    ) -> Result<Volume, DbError>;

    /// The extend under way on a volume in status `extending`: its reservation and target
    /// size, so a restarted manager can finish it.
    ///
    /// # Errors
    /// Unknown id.
    fn pending_extend(&self, id: &str) -> Result<Option<(Reservation, u64)>, DbError>;

    // --- exports ---

    /// Records (replacing) how a volume is exported over `export.protocol`.
    ///
    /// # Errors
    /// Unknown volume.
    fn put_export(&self, export: &Export) -> Result<(), DbError>;

    /// Forgets a volume's export over `protocol`; false if there was none.
    ///
    /// # Errors
    /// The database failed.
    fn remove_export(&self, volume_id: &str, protocol: &str) -> Result<bool, DbError>;

    /// The exports of one volume (one per protocol at most).
    ///
    /// # Errors
    /// The database failed.
    fn exports_of(&self, volume_id: &str) -> Result<Vec<Export>, DbError>;

    /// Every export (of live volumes), optionally only those of volumes on `host_prefix`
    /// (`host@backend`).
    ///
    /// # Errors
    /// The database failed.
    fn list_exports(&self, host_prefix: Option<&str>) -> Result<Vec<Export>, DbError>;

    // --- snapshots ---

    /// Inserts a snapshot in status `creating` of a volume whose status is one of
    /// `volume_expected`, with the volume's current size, charging its quota, atomically.
    ///
    /// # Errors
    /// Unknown volume, unexpected volume status, over quota, duplicate id.
    fn create_snapshot(
        &self,
        new: &NewSnapshot,
        volume_expected: &[&str],
    ) -> Result<Snapshot, DbError>;

    /// One snapshot.
    ///
    /// # Errors
    /// Unknown id.
    fn get_snapshot(&self, id: &str) -> Result<Snapshot, DbError>;

    /// Snapshots matching `q`.
    ///
    /// # Errors
    /// Unknown marker.
    fn list_snapshots(&self, q: &ListQuery) -> Result<Page<Snapshot>, DbError>;

    /// Applies `change` if the snapshot's status is one of `expected`.
    ///
    /// # Errors
    /// Unknown id, unexpected status.
    fn update_snapshot(
        &self,
        id: &str,
        expected: &[&str],
        change: &SnapshotChange,
    ) -> Result<Snapshot, DbError>;

    /// Sets snapshot metadata keys.
    ///
    /// # Errors
    /// Unknown id.
    fn set_snapshot_metadata(
        &self,
        id: &str,
        meta: &Metadata,
        replace: bool,
    ) -> Result<Metadata, DbError>;

    /// Marks the snapshot destroyed if its status is one of `expected`, releasing its quota.
    ///
    /// # Errors
    /// Unknown id, unexpected status, a volume is being created from it.
    fn destroy_snapshot(&self, id: &str, expected: &[&str]) -> Result<Snapshot, DbError>;

    // --- volume types ---

    /// Creates a volume type.
    ///
    /// # Errors
    /// The name is taken.
    fn create_volume_type(
        &self,
        name: &str,
        description: Option<&str>,
        is_public: bool,
        extra_specs: &BTreeMap<String, String>,
    ) -> Result<VolumeType, DbError>;

    /// A volume type by id or by name.
    ///
    /// # Errors
    /// Unknown.
    fn get_volume_type(&self, id_or_name: &str) -> Result<VolumeType, DbError>;

    /// Every volume type (public ones plus those `project` was given; all when `None`).
    ///
    /// # Errors
    /// The database failed.
    fn list_volume_types(&self, project: Option<&str>) -> Result<Vec<VolumeType>, DbError>;

    /// Changes a type's name, description or visibility.
    ///
    /// # Errors
    /// Unknown type, the new name is taken.
    fn update_volume_type(
        &self,
        id: &str,
        name: Option<&str>,
        description: Option<Option<&str>>,
        is_public: Option<bool>,
    ) -> Result<VolumeType, DbError>;

    /// Sets extra specs (merging).
    ///
    /// # Errors
    /// Unknown type.
    fn set_extra_specs(
        &self,
        id: &str,
        specs: &BTreeMap<String, String>,
    ) -> Result<VolumeType, DbError>;

    /// Removes one extra spec.
    ///
    /// # Errors
    /// Unknown type or key.
    fn unset_extra_spec(&self, id: &str, key: &str) -> Result<(), DbError>;

    /// Gives (`grant`) or takes back a project's access to a private type.
    ///
    /// # Errors
    /// Unknown type, a public type, access already given (or not given, to take back).
    fn set_type_access(&self, id: &str, project: &str, grant: bool) -> Result<(), DbError>;

    /// Deletes a type no volume uses.
    ///
    /// # Errors
    /// Unknown type, or in use.
    fn delete_volume_type(&self, id: &str) -> Result<(), DbError>;

    /// Makes type `type_id` (an id or a name) `project`'s default (API 3.62), replacing any;
    /// returns the type's id.
    ///
    /// # Errors
    /// Unknown type, empty project.
    fn set_default_type(&self, project: &str, type_id: &str) -> Result<String, DbError>;

    /// `project`'s default type's id, if it has one.
    ///
    /// # Errors
    /// The database failed.
    fn get_default_type(&self, project: &str) -> Result<Option<String>, DbError>;

    /// Every project's default type: `(project, type id)`, by project.
    ///
    /// # Errors
    /// The database failed.
    fn list_default_types(&self) -> Result<Vec<(String, String)>, DbError>;

    /// Forgets `project`'s default type; false if it had none.
    ///
    /// # Errors
    /// The database failed.
    fn unset_default_type(&self, project: &str) -> Result<bool, DbError>;

    // --- attachments ---

    /// Reserves the volume for an attachment (API 3.27 `POST /attachments`): checks, atomically,
    /// that the volume's status is one of `volume_expected` (callers pass `available` and
    /// `downloading`, plus `in-use`, `reserved` and `attaching` for a multiattach volume) and
    /// is no error status, and that a volume that is not multiattach has no holding attachment
    /// (`reserved`, `attaching`, `attached`, `detaching`) but for the same instance (how Nova
    /// moves an instance); inserts the attachment `reserved` with the volume's project and
    /// recomputes the volume's status (see [`MetadataStore::update_attachment`]).
    ///
    /// # Errors
    /// Unknown volume, unexpected or error status ([`DbError::Conflict`]), held by another
    /// attachment ([`DbError::InUse`]), a bad id, mode or instance, duplicate id.
    fn reserve_attachment(
        &self,
        new: &NewAttachment,
        volume_expected: &[&str],
    ) -> Result<Attachment, DbError>;

    /// One live attachment.
    ///
    /// # Errors
    /// Unknown (or deleted) id.
    fn get_attachment(&self, id: &str) -> Result<Attachment, DbError>;

    /// Attachments matching `q` (project, volume id, status, instance, host, dates).
    ///
    /// # Errors
    /// Unknown marker, a filter or sort attachments do not have.
    fn list_attachments(&self, q: &ListQuery) -> Result<Page<Attachment>, DbError>;

    /// The live attachments of a volume (any status), oldest first; none for an unknown one.
    ///
    /// # Errors
    /// The database failed.
    fn attachments_of(&self, volume_id: &str) -> Result<Vec<Attachment>, DbError>;

    /// Applies `change` if the attachment's status is one of `expected` (any when empty), and
    /// recomputes its volume in the same transaction: over the holding attachments, the first
    /// of `attached` > `attaching` > `detaching` > `reserved` present is the volume's
    /// `attach_status` and makes its status `in-use`, `attaching`, `detaching` or `reserved`;
    /// none makes them `detached` and `available`. The status is only changed from one of
    /// those five (`available`, `reserved`, `attaching`, `in-use`, `detaching`): another
    /// operation's status (`extending`, `error`, `maintenance`, ...) stays, and its
    /// `previous_status` is recomputed instead when it is one of the five.
    ///
    /// # Errors
    /// Unknown id, unexpected status, an unknown status or mode, a bad instance id.
    fn update_attachment(
        &self,
        id: &str,
        expected: &[&str],
        change: &AttachmentChange,
    ) -> Result<Attachment, DbError>;

    /// Deletes the attachment (soft: `detached`, with `detach_time` and `deleted_at`) if its
    /// status is one of `expected`, recomputes the volume as
    /// [`MetadataStore::update_attachment`] does, and returns the volume as it is after.
    ///
    /// # Errors
    /// Unknown id, unexpected status.
    fn delete_attachment(&self, id: &str, expected: &[&str]) -> Result<Volume, DbError>;

    // --- transfers ---

    /// Offers a volume for transfer: atomically, its status `available` → `awaiting-transfer`
    /// and the transfer inserted. Refused for a volume of another project than
    /// `source_project_id` (not found), or, unless `no_snapshots`, one with a snapshot that is
    /// not `available`.
    ///
    /// # Errors
    /// Unknown volume, unexpected volume or snapshot status ([`DbError::Conflict`]), a bad
    /// id, no salt or hash, duplicate id.
    fn create_transfer(&self, new: &NewTransfer) -> Result<Transfer, DbError>;

    /// One pending transfer (accepted and withdrawn ones are gone).
    ///
    /// # Errors
    /// Unknown id.
    fn get_transfer(&self, id: &str) -> Result<Transfer, DbError>;

    /// Pending transfers matching `q` (its project is the source project).
    ///
    /// # Errors
    /// Unknown marker, a filter or sort transfers do not have.
    fn list_transfers(&self, q: &ListQuery) -> Result<Page<Transfer>, DbError>;

    /// Withdraws a transfer: the volume goes back from `awaiting-transfer` to `available`
    /// (left as it is if it is no longer awaiting it) and the transfer is deleted.
    ///
    /// # Errors
    /// Unknown id.
    fn delete_transfer(&self, id: &str) -> Result<(), DbError>;

    /// Accepts a transfer for `dest_project_id` (and user `dest_user_id`), atomically: the
    /// volume `awaiting-transfer` → `available` in the new project, its snapshots with it
    /// unless `no_snapshots` (all must be `available`), their quota (volumes, gigabytes,
    /// snapshots and the per-type ones) charged to the destination and released from the
    /// source, and the transfer marked accepted and deleted. Over the destination's quota,
    /// nothing changes. The auth key is the caller's to check.
    ///
    /// # Errors
    /// Unknown transfer, unexpected volume or snapshot status, over quota.
    fn accept_transfer(
        &self,
        id: &str,
        dest_project_id: &str,
        dest_user_id: &str,
    ) -> Result<(Transfer, Volume), DbError>;

    // --- messages ---

    /// Records a user message.
    ///
    /// # Errors
    /// A bad id, missing type, event or level, duplicate id.
    fn create_message(&self, new: &NewMessage) -> Result<Message, DbError>;

    /// One message.
    ///
    /// # Errors
    /// Unknown (or deleted) id.
    fn get_message(&self, id: &str) -> Result<Message, DbError>;

    /// Messages matching `q` (project, resource uuid and type, event, request, level, created).
    ///
    /// # Errors
    /// Unknown marker, a filter or sort messages do not have.
    fn list_messages(&self, q: &ListQuery) -> Result<Page<Message>, DbError>;

    /// Deletes a message.
    ///
    /// # Errors
    /// Unknown id.
    fn delete_message(&self, id: &str) -> Result<(), DbError>;

    /// Removes the messages that expired before `now`; returns how many.
    ///
    /// # Errors
    /// The database failed.
    fn reap_messages(&self, now: Timestamp) -> Result<usize, DbError>;

    // --- quotas ---

    /// Limits and usage of every resource for `project` (defaults where not overridden).
    ///
    /// # Errors
    /// The database failed.
    fn quota_usage(&self, project: &str) -> Result<BTreeMap<Resource, QuotaUsage>, DbError>;

    /// Sets `project`'s limit for `resource`; refused below what it uses and has reserved.
    ///
    /// # Errors
    /// Below usage, or a negative limit other than −1.
    fn set_quota_limit(&self, project: &str, resource: &str, limit: i64) -> Result<(), DbError>;

    /// Drops `project`'s overrides (back to the defaults).
    ///
    /// # Errors
    /// The database failed.
    fn delete_project_quotas(&self, project: &str) -> Result<(), DbError>;

    /// The default limits (the `default` quota class).
    ///
    /// # Errors
    /// The database failed.
    fn default_quotas(&self) -> Result<BTreeMap<Resource, i64>, DbError>;

    /// Changes a default limit.
    ///
    /// # Errors
    /// A negative limit other than −1.
    fn set_default_quota(&self, resource: &str, limit: i64) -> Result<(), DbError>;

    /// Rolls back reservations whose expiry is before `now`; returns how many.
    ///
    /// # Errors
    /// The database failed.
    fn expire_reservations(&self, now: Timestamp) -> Result<usize, DbError>;

    // --- services ---

    /// Records a heartbeat of `binary` on `host`.
    ///
    /// # Errors
    /// The database failed.
    fn service_heartbeat(
        &self,
        host: &str,
        binary: &str,
        availability_zone: &str,
    ) -> Result<Service, DbError>;

    /// Every service.
    ///
    /// # Errors
    /// The database failed.
    fn list_services(&self) -> Result<Vec<Service>, DbError>;

    /// Disables or enables a service.
    ///
    /// # Errors
    /// Unknown service.
    fn set_service_disabled(
        &self,
        host: &str,
        binary: &str,
        disabled: bool,
        reason: Option<&str>,
    ) -> Result<Service, DbError>;
}

#[cfg(test)]
mod tests;
