//! The control plane's core: the metadata store, the scheduler and one volume manager per
//! datapath node, put together as the operations the API calls.
//!
//! ```text
//!   Control::create_volume ──► db: row in `creating`, quota charged (one transaction)
//!          │                ──► scheduler: filter, weigh, pick, consume
//!          │                ──► VolumeManager(node): datapath volume_create / clone ...
//!          │                ──► db: `creating` → `available` (compare-and-swap)
//!          └─ on a reschedulable failure (node unreachable, pool full): next pool, up to
//!             the scheduler's max attempts; then `error` with a user message.
//! ```
//!
//! Every state change names the states it expects (Cinder's `conditional_update`), so two
//! callers racing on one volume cannot both act, and a restarted process finds each row
//! either finished or in a transitional state that [`VolumeManager::recover`] finishes or
//! undoes. The datapath's own creates are idempotent, so re-driving a step is safe.
//!
//! Calls block (database and datapath round trips); the API runs them on blocking threads.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod datapath;
pub mod node;
pub mod ring;
pub mod service;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use basalt_db::{
    DbError, Dir, Field, FilterOp, ListQuery, MetadataStore, NewSnapshot, NewVolume,
    SnapshotChange, SortKey, Val, Volume, VolumeChange,
};
use basalt_scheduler::{PoolId, Request, ScheduleError, Scheduler, SchedulerConfig};

pub use datapath::{AdminSocket, Datapath, DpError};
pub use node::{NodeConfig, VolumeManager};
pub use ring::RingDatapath;
pub use service::{ApiSection, ControlConfig, ControlService, KeystoneSection};

/// Why a control-plane operation failed.
#[derive(Debug, displaydoc::Display, thiserror::Error)]
pub enum ManagerError {
    /// {0}
    Db(#[source] DbError),
    /// {0}
    Datapath(#[source] DpError),
    /// {0}
    Schedule(#[source] ScheduleError),
    /// invalid request: {0}
    Invalid(String),
    /// node {0} is not managed here
    UnknownNode(String),
}

/// The control plane's operations over every node.
#[derive(Debug)]
pub struct Control {
    db: Arc<dyn MetadataStore>,
    scheduler: Mutex<Scheduler>,
    nodes: RwLock<BTreeMap<String, Arc<VolumeManager>>>,
    events: Mutex<std::collections::VecDeque<(String, serde_json::Value)>>,
}

/// A volume accepted by [`Control::accept_volume`]: its row (in `creating`) and what the
/// scheduler will be asked for.
#[derive(Debug, Clone)]
pub struct PendingVolume {
    /// The row.
    pub volume: Volume,
    /// The placement request.
    pub request: Request,
}

/// What an operation has been accepted as: the row in its transitional state, at the point
/// where the API answers 202 and the rest of the work goes on.
#[derive(Debug, Clone)]
pub enum Accepted {
    /// A volume.
    Volume(Volume),
    /// A snapshot.
    Snapshot(basalt_db::Snapshot),
}

/// Called once when an operation is accepted.
pub type OnAccept<'a> = &'a mut dyn FnMut(Accepted);

/// Datapath events kept by [`Control::recent_events`].
pub const MAX_EVENTS: usize = 1000;

/// Statuses a volume may be deleted from (Cinder's list; `in-use` and transitional ones are
/// refused).
pub const DELETABLE: [&str; 5] = [
    "available",
    "error",
    "error_restoring",
    "error_extending",
    "error_managing",
];

impl Control {
    /// A control plane over `db`, with no nodes yet.
    pub fn new(db: Arc<dyn MetadataStore>, scheduler: SchedulerConfig) -> Control {
        Control {
            db,
            scheduler: Mutex::new(Scheduler::new(scheduler)),
            nodes: RwLock::new(BTreeMap::new()),
            events: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// The metadata store.
    pub fn db(&self) -> &Arc<dyn MetadataStore> {
        &self.db
    }

    /// Takes on a node.
    pub fn add_node(&self, mgr: VolumeManager) -> Arc<VolumeManager> {
        let m = Arc::new(mgr);
        self.nodes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(m.config().host.clone(), m.clone());
        m
    }

    fn node(&self, host: &str) -> Result<Arc<VolumeManager>, ManagerError> {
        self.nodes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(host)
            .cloned()
            .ok_or_else(|| ManagerError::UnknownNode(host.to_owned()))
    }

    fn nodes(&self) -> Vec<Arc<VolumeManager>> {
        self.nodes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// The scheduler (for the API's pool listing).
    pub fn scheduler(&self) -> MutexGuard<'_, Scheduler> {
        self.scheduler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks every node for its pool figures, feeds them to the scheduler and records the
    /// heartbeats. A node that does not answer is left out: once it has been silent for the
    /// scheduler's `service_down_time` it gets no new volumes. Returns the nodes that answered.
    pub fn refresh(&self, now: Instant) -> Vec<String> {
        let mut up = Vec::new();
        for n in self.nodes() {
            let cfg = n.config();
            match n.report() {
                Ok(r) => {
                    self.scheduler().report(r, now);
                    match self.db.service_heartbeat(
                        &format!("{}@{}", cfg.host, cfg.backend),
                        "cinder-volume",
                        &cfg.availability_zone,
                    ) {
                        // The store is the truth about disabled services (an admin's
                        // `os-services/disable` outlives restarts).
                        Ok(svc) => {
                            self.scheduler().set_disabled(&cfg.host, svc.disabled);
                        }
                        Err(e) => {
                            tracing::warn!(node = %cfg.host, error = %e, "heartbeat not recorded");
                        }
                    }
                    up.push(cfg.host.clone());
                }
                Err(e) => tracing::warn!(node = %cfg.host, error = %e, "node did not report"),
            }
            for ev in n.take_events() {
                tracing::warn!(node = %cfg.host, event = %ev, "datapath event");
                let mut evs = self
                    .events
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if evs.len() == MAX_EVENTS {
                    evs.pop_front();
                }
                evs.push_back((cfg.host.clone(), ev));
            }
        }
        up
    }

    /// The latest events the nodes' datapaths sent (node, event), oldest first, at most
    /// [`MAX_EVENTS`]: what the API's user messages will show.
    pub fn recent_events(&self) -> Vec<(String, serde_json::Value)> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Runs recovery on every node (after a restart of the control plane, or when a node's
    /// datapath came back). Returns how many rows were finished or undone.
    pub fn recover(&self) -> usize {
        let mut n = 0;
        // Rows the control plane made but never placed: nothing exists on any datapath.
        match self.db.list_volumes(&ListQuery::default().filter(
            Field::Status,
            FilterOp::Eq,
            Val::Text("creating".into()),
        )) {
            Ok(page) => {
                for v in page.items.into_iter().filter(|v| v.host.is_none()) {
                    let c = VolumeChange {
                        status: Some("error".into()),
                        user_message: Some(Some(
                            "the control plane stopped before the volume was scheduled".into(),
                        )),
                        ..VolumeChange::default()
                    };
                    if self.db.update_volume(&v.id, &["creating"], &c).is_ok() {
                        n += 1;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list unplaced volumes"),
        }
        for m in self.nodes() {
            match m.recover() {
                Ok(k) => n += k,
                Err(e) => {
                    tracing::warn!(node = %m.config().host, error = %e, "recovery incomplete");
                }
            }
        }
        n
    }

    /// Runs recovery on one node (when it comes back).
    ///
    /// # Errors
    /// The node is unknown, or the datapath or the database failed.
    pub fn recover_node(&self, host: &str) -> Result<usize, ManagerError> {
        self.node(host)?.recover()
    }

    fn extra_specs(&self, type_id: Option<&str>) -> Result<BTreeMap<String, String>, ManagerError> {
        Ok(match type_id {
            Some(t) => self.db.get_volume_type(t)?.extra_specs,
            None => BTreeMap::new(),
        })
    }

    /// Creates a volume: the row with its quota, a pool, the datapath volume. Returns the
    /// volume as it ended: `available`, or `error` with a user message when no pool could make
    /// it (the quota stays charged until it is deleted, as in Cinder).
    ///
    /// # Errors
    /// Refused before anything was made: over quota, unknown type or source, a source in the
    /// wrong state.
    pub fn create_volume(&self, new: &NewVolume, now: Instant) -> Result<Volume, ManagerError> {
        let pending = self.accept_volume(new)?;
        self.place_volume(pending, now)
    }

    /// The first half of [`Control::create_volume`], what the API answers 202 after: checks
    /// the request and its sources and inserts the row in `creating` with its quota.
    ///
    /// # Errors
    /// As [`Control::create_volume`].
    pub fn accept_volume(&self, new: &NewVolume) -> Result<PendingVolume, ManagerError> {
        let mut req = Request {
            size_gb: new.size_gb,
            availability_zone: Some(new.availability_zone.clone()).filter(|z| !z.is_empty()),
            extra_specs: self.extra_specs(new.volume_type_id.as_deref())?,
            ..Request::default()
        };
        // A clone must live where its source does.
        if let Some(sid) = &new.snapshot_id {
            let s = self.db.get_snapshot(sid)?;
            if s.project_id != new.project_id {
                return Err(ManagerError::Db(DbError::NotFound {
                    kind: "snapshot",
                    id: sid.clone(),
                }));
            }
            if s.status != "available" {
                return Err(ManagerError::Invalid(format!(
                    "snapshot {sid} is {}; it must be available",
                    s.status
                )));
            }
            if new.size_gb < s.size_gb {
                return Err(ManagerError::Invalid(format!(
                    "volume size {} GiB is smaller than the snapshot's {} GiB",
                    new.size_gb, s.size_gb
                )));
            }
            req.resource_backend = Some(self.pool_of(&self.db.get_volume(&s.volume_id)?)?);
        }
        if let Some(src) = &new.source_volid {
            let v = self.db.get_volume(src)?;
            if v.project_id != new.project_id {
                return Err(ManagerError::Db(DbError::NotFound {
                    kind: "volume",
                    id: src.clone(),
                }));
            }
            if !["available", "in-use"].contains(&v.status.as_str()) {
                return Err(ManagerError::Invalid(format!(
                    "source volume {src} is {}; it must be available or in-use",
                    v.status
                )));
            }
            if new.size_gb < v.size_gb {
                return Err(ManagerError::Invalid(format!(
                    "volume size {} GiB is smaller than the source's {} GiB",
                    new.size_gb, v.size_gb
                )));
            }
            req.resource_backend = Some(self.pool_of(&v)?);
        }
        let volume = self.db.create_volume(new)?;
        Ok(PendingVolume {
            volume,
            request: req,
        })
    }

    /// The second half of [`Control::create_volume`]: schedules the accepted volume and makes
    /// it on a node, rescheduling on failures that allow it. Returns it `available`, or
    /// `error` with a user message.
    ///
    /// # Errors
    /// The database failed, or the row was changed under it.
    pub fn place_volume(
        &self,
        pending: PendingVolume,
        now: Instant,
    ) -> Result<Volume, ManagerError> {
        let PendingVolume {
            volume: mut v,
            request: mut req,
        } = pending;
        let mut last_error = String::new();
        loop {
            let placement = match self.scheduler().schedule(&req, now) {
                Ok(p) => p,
                Err(e) => {
                    if last_error.is_empty() {
                        last_error = e.to_string();
                    } else {
                        last_error = format!("{last_error}; then: {e}");
                    }
                    break;
                }
            };
            v = self.db.update_volume(
                &v.id,
                &["creating"],
                &VolumeChange {
                    host: Some(Some(placement.pool.to_string())),
                    ..VolumeChange::default()
                },
            )?;
            let node = self.node(&placement.pool.host)?;
            match node.create_volume(&v) {
                Ok(done) => return Ok(done),
                Err(e) => {
                    self.scheduler().release(&placement.pool, req.size_gb);
                    last_error = e.to_string();
                    let again = matches!(&e, ManagerError::Datapath(d) if d.reschedulable());
                    tracing::warn!(volume = %v.id, pool = %placement.pool, error = %e, again, "create failed");
                    if !again {
                        break;
                    }
                    req.attempted.push(placement.pool);
                }
            }
        }
        Ok(self.db.update_volume(
            &v.id,
            &["creating"],
            &VolumeChange {
                status: Some("error".into()),
                user_message: Some(Some(format!("schedule or create failed: {last_error}"))),
                ..VolumeChange::default()
            },
        )?)
    }

    /// The manager of the node volume `v` lives on.
    fn node_of_volume(&self, v: &Volume) -> Result<Arc<VolumeManager>, ManagerError> {
        self.node(&self.pool_of(v)?.host)
    }

    fn pool_of(&self, v: &Volume) -> Result<PoolId, ManagerError> {
        v.host
            .as_deref()
            .ok_or_else(|| ManagerError::Invalid(format!("volume {} has no host", v.id)))?
            .parse()
            .map_err(|e: basalt_scheduler::PoolIdError| ManagerError::Invalid(e.to_string()))
    }

    /// Deletes a volume (refused while it has snapshots, exports aside, or is attached).
    ///
    /// # Errors
    /// Unknown, wrong state, has snapshots, or the datapath failed (`error_deleting`).
    pub fn delete_volume(&self, id: &str) -> Result<(), ManagerError> {
        self.delete_volume_with(id, &mut |_| {})
    }

    /// [`Control::delete_volume`], calling `accepted` with the volume once it is `deleting`
    /// (the API answers then; the datapath work goes on).
    ///
    /// # Errors
    /// As [`Control::delete_volume`].
    pub fn delete_volume_with(&self, id: &str, accepted: OnAccept<'_>) -> Result<(), ManagerError> {
        let snaps = self.db.list_snapshots(&ListQuery::default().filter(
            Field::VolumeId,
            FilterOp::Eq,
            Val::Text(id.to_owned()),
        ))?;
        if snaps.count > 0 {
            return Err(ManagerError::Db(DbError::InUse {
                kind: "volume",
                id: id.to_owned(),
                why: format!("it has {} snapshot(s)", snaps.count),
            }));
        }
        let v = self.db.update_volume(
            id,
            &DELETABLE,
            &VolumeChange {
                status: Some("deleting".into()),
                ..VolumeChange::default()
            },
        )?;
        accepted(Accepted::Volume(v.clone()));
        match &v.host {
            None => {
                // Never placed: nothing on any datapath.
                self.db.destroy_volume(id, &["deleting"])?;
                Ok(())
            }
            Some(_) => self.node_of_volume(&v)?.delete_volume(&v),
        }
    }

    /// Grows a volume (`available`, or `in-use`: the initiators see the new capacity).
    ///
    /// # Errors
    /// Not a growth, over quota, the pool cannot hold it, or the datapath failed.
    pub fn extend_volume(
        &self,
        id: &str,
        new_size_gb: u64,
        now: Instant,
    ) -> Result<Volume, ManagerError> {
        self.extend_volume_with(id, new_size_gb, now, &mut |_| {})
    }

    /// [`Control::extend_volume`], calling `accepted` once the volume is `extending` with its
    /// growth reserved and the pool has room.
    ///
    /// # Errors
    /// As [`Control::extend_volume`].
    pub fn extend_volume_with(
        &self,
        id: &str,
        new_size_gb: u64,
        now: Instant,
        accepted: OnAccept<'_>,
    ) -> Result<Volume, ManagerError> {
        let v = self.db.get_volume(id)?;
        let pool = self.pool_of(&v)?;
        let r = self
            .db
            .begin_extend(id, &["available", "in-use"], new_size_gb)?;
        let growth = new_size_gb.saturating_sub(v.size_gb);
        let req = Request {
            size_gb: growth,
            extra_specs: self.extra_specs(v.volume_type_id.as_deref())?,
            ..Request::default()
        };
        if let Err(e) = self.scheduler().backend_passes_filters(&pool, &req, now) {
            let back = v.status.clone();
            self.db.finish_extend(id, &r, None, &back)?;
            return Err(ManagerError::Schedule(e));
        }
        let extending = self.db.get_volume(id)?;
        accepted(Accepted::Volume(extending.clone()));
        self.node(&pool.host)?
            .extend_volume(&extending, &r, new_size_gb)
    }

    /// Takes a snapshot of a volume (`available`, or `in-use`: as from microversion 3.66).
    ///
    /// # Errors
    /// Over quota, the volume's state, or the datapath failed (the snapshot is `error`).
    pub fn create_snapshot(&self, new: &NewSnapshot) -> Result<basalt_db::Snapshot, ManagerError> {
        self.create_snapshot_with(new, &["available", "in-use"], &mut |_| {})
    }

    /// [`Control::create_snapshot`] of a volume in one of `volume_expected`, calling
    /// `accepted` with the snapshot row once it exists (`creating`, quota charged).
    ///
    /// # Errors
    /// As [`Control::create_snapshot`].
    pub fn create_snapshot_with(
        &self,
        new: &NewSnapshot,
        volume_expected: &[&str],
        accepted: OnAccept<'_>,
    ) -> Result<basalt_db::Snapshot, ManagerError> {
        let v = self.db.get_volume(&new.volume_id)?;
        let node = self.node_of_volume(&v)?;
        let s = self.db.create_snapshot(new, volume_expected)?;
        accepted(Accepted::Snapshot(s.clone()));
        node.create_snapshot(&s)
    }

    /// Deletes a snapshot (`available` or `error`).
    ///
    /// # Errors
    /// Unknown, wrong state, or the datapath failed (`error_deleting`).
    pub fn delete_snapshot(&self, id: &str) -> Result<(), ManagerError> {
        self.delete_snapshot_with(id, &["available", "error"], &mut |_| {})
    }

    /// [`Control::delete_snapshot`] from one of `expected` (any status for a force delete),
    /// calling `accepted` once it is `deleting`.
    ///
    /// # Errors
    /// As [`Control::delete_snapshot`].
    pub fn delete_snapshot_with(
        &self,
        id: &str,
        expected: &[&str],
        accepted: OnAccept<'_>,
    ) -> Result<(), ManagerError> {
        let s = self.db.update_snapshot(
            id,
            expected,
            &SnapshotChange {
                status: Some("deleting".into()),
                ..SnapshotChange::default()
            },
        )?;
        accepted(Accepted::Snapshot(s.clone()));
        let v = self.db.get_volume(&s.volume_id)?;
        self.node_of_volume(&v)?.delete_snapshot(&s)
    }

    /// Reverts a volume to its latest snapshot (Cinder's rule: only the most recent one).
    ///
    /// # Errors
    /// Not the latest snapshot, not the volume's, wrong states, or the datapath failed.
    pub fn revert_volume(
        &self,
        volume_id: &str,
        snapshot_id: &str,
    ) -> Result<Volume, ManagerError> {
        self.revert_volume_with(volume_id, snapshot_id, &mut |_| {})
    }

    /// [`Control::revert_volume`], calling `accepted` once the volume is `reverting` and the
    /// snapshot `restoring`.
    ///
    /// # Errors
    /// As [`Control::revert_volume`].
    pub fn revert_volume_with(
        &self,
        volume_id: &str,
        snapshot_id: &str,
        accepted: OnAccept<'_>,
    ) -> Result<Volume, ManagerError> {
        let s = self.db.get_snapshot(snapshot_id)?;
        if s.volume_id != volume_id {
            return Err(ManagerError::Invalid(format!(
                "snapshot {snapshot_id} is not a snapshot of volume {volume_id}"
            )));
        }
        let latest = self
            .db
            .list_snapshots(
                &ListQuery::default()
                    .filter(
                        Field::VolumeId,
                        FilterOp::Eq,
                        Val::Text(volume_id.to_owned()),
                    )
                    .sort_by(SortKey::CreatedAt, Dir::Desc),
            )?
            .items
            .into_iter()
            .next();
        if latest.as_ref().map(|l| l.id.as_str()) != Some(snapshot_id) {
            return Err(ManagerError::Invalid(format!(
                "volume {volume_id} can only be reverted to its latest snapshot"
            )));
        }
        let v = self.db.get_volume(volume_id)?;
        if v.size_gb != s.size_gb {
            return Err(ManagerError::Invalid(format!(
                "volume {volume_id} was resized after snapshot {snapshot_id}; it cannot be reverted to it"
            )));
        }
        let v = self.db.update_volume(
            volume_id,
            &["available"],
            &VolumeChange {
                status: Some("reverting".into()),
                ..VolumeChange::default()
            },
        )?;
        let s = match self.db.update_snapshot(
            snapshot_id,
            &["available"],
            &SnapshotChange {
                status: Some("restoring".into()),
                ..SnapshotChange::default()
            },
        ) {
            Ok(s) => s,
            Err(e) => {
                self.db.update_volume(
                    volume_id,
                    &["reverting"],
                    &VolumeChange {
                        status: Some("available".into()),
                        ..VolumeChange::default()
                    },
                )?;
                return Err(e.into());
            }
        };
        accepted(Accepted::Volume(v.clone()));
        self.node_of_volume(&v)?.revert_volume(&v, &s)
    }

    /// Exports a volume to `host` over `protocol` (`iscsi`, `nvmeof` or `nbd`).
    ///
    /// # Errors
    /// As [`VolumeManager::export`].
    pub fn export_volume(
        &self,
        id: &str,
        protocol: &str,
        host: &str,
    ) -> Result<basalt_db::Export, ManagerError> {
        let v = self.db.get_volume(id)?;
        self.node_of_volume(&v)?.export(&v, protocol, host)
    }

    /// Takes `host` off a volume's export.
    ///
    /// # Errors
    /// As [`VolumeManager::unexport`].
    pub fn unexport_volume(
        &self,
        id: &str,
        protocol: &str,
        host: &str,
    ) -> Result<(), ManagerError> {
        let v = self.db.get_volume(id)?;
        self.node_of_volume(&v)?.unexport(&v, protocol, host)
    }

    /// A volume's I/O counters on its node.
    ///
    /// # Errors
    /// As [`VolumeManager::volume_stats`].
    pub fn volume_stats(&self, id: &str) -> Result<serde_json::Value, ManagerError> {
        let v = self.db.get_volume(id)?;
        self.node_of_volume(&v)?.volume_stats(&v)
    }

    /// The node a pool address names.
    ///
    /// # Errors
    /// The node is not managed here.
    pub fn node_of(&self, pool: &PoolId) -> Result<Arc<VolumeManager>, ManagerError> {
        self.node(&pool.host)
    }
}
