//! One datapath node's volume manager: carries out operations on the node, moves rows through
//! Cinder's state machines, recovers what a restart interrupted, and reconciles exports.

use std::sync::Arc;

use basalt_db::{
    DbError, Export, Field, FilterOp, ListQuery, MetadataStore, Reservation, Snapshot,
    SnapshotChange, Timestamp, Val, Volume, VolumeChange,
};
use basalt_scheduler::{Capacity, NodeReport, PoolId, PoolReport};
use serde_json::json;

use crate::ManagerError;
use crate::datapath::{Datapath, DpError};

/// Prefix of every target and subsystem name Basalt makes for a volume.
pub const IQN_PREFIX: &str = "iqn.2026-11.org.basalt:volume-";
/// Prefix of every NVMe subsystem NQN Basalt makes for a volume.
pub const NQN_PREFIX: &str = "nqn.2026-11.org.basalt:volume-";
/// Prefix of every NBD export name Basalt makes for a volume (`volume-<uuid>`).
pub const NBD_PREFIX: &str = "volume-";

/// The datapath name of a volume.
pub fn volume_name(id: &str) -> String {
    format!("volume-{id}")
}

/// The datapath name of a snapshot.
pub fn snapshot_name(id: &str) -> String {
    format!("snapshot-{id}")
}

/// The temporary snapshot a clone of a volume is made from.
fn clone_source_name(id: &str) -> String {
    format!("clonesrc-{id}")
}

const GIB: u64 = 1 << 30;

/// What a node is and how it is reached.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Host name (`host` of `host@backend#pool`).
    pub host: String,
    /// Backend name (`volume_backend_name`).
    pub backend: String,
    /// Availability zone.
    pub availability_zone: String,
    /// The volume store the node's volumes live in (the pool).
    pub lvs: String,
    /// Percentage of the pool never scheduled.
    pub reserved_percentage: f64,
    /// Thin over-subscription ratio.
    pub max_over_subscription_ratio: f64,
    /// `host:port` initiators reach the node's iSCSI target on.
    pub iscsi_portal: Option<String>,
    /// `host:port` hosts reach the node's NVMe/TCP target on.
    pub nvmf_portal: Option<String>,
    /// `host:port` of the node's NBD target. NBD has no authentication and no allow-list
    /// without TLS (which Basalt does not offer), so NBD exports are refused unless this is
    /// a loopback address: they are for clients on the node itself.
    pub nbd_portal: Option<String>,
}

/// Whether `portal` (`host:port`) is on the loopback interface: an IP loopback address
/// (`127.0.0.0/8`, `[::1]`) or `localhost`.
pub fn is_loopback_portal(portal: &str) -> bool {
    if let Ok(a) = portal.parse::<std::net::SocketAddr>() {
        return a.ip().is_loopback();
    }
    portal.rsplit_once(':').is_some_and(|(host, port)| {
        host.eq_ignore_ascii_case("localhost") && port.parse::<u16>().is_ok()
    })
}

impl NodeConfig {
    /// The pool's address.
    pub fn pool(&self) -> PoolId {
        PoolId::new(&self.host, &self.backend, &self.lvs)
    }
}

/// The volume manager of one node.
#[derive(Debug)]
pub struct VolumeManager {
    cfg: NodeConfig,
    db: Arc<dyn MetadataStore>,
    dp: Arc<dyn Datapath>,
}

fn user_message(what: &str, e: &dyn std::fmt::Display) -> VolumeChange {
    VolumeChange {
        user_message: Some(Some(format!("{what}: {e}"))),
        ..VolumeChange::default()
    }
}

impl VolumeManager {
    /// A manager for the node `cfg`, reached through `dp`.
    pub fn new(cfg: NodeConfig, db: Arc<dyn MetadataStore>, dp: Arc<dyn Datapath>) -> Self {
        VolumeManager { cfg, db, dp }
    }

    /// The node.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    fn call(&self, req: serde_json::Value) -> Result<serde_json::Value, DpError> {
        let op = req["op"].as_str().unwrap_or("?").to_owned();
        let r = self.dp.call(&req);
        if let Err(e) = &r {
            tracing::warn!(node = %self.cfg.host, op, error = %e, "datapath request failed");
        }
        r
    }

    /// Like [`Self::call`], but "does not exist" counts as done (deletes re-driven after a
    /// restart).
    fn call_gone_ok(&self, req: serde_json::Value) -> Result<(), DpError> {
        match self.call(req) {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Volume `v`'s I/O counters on the datapath (`reads`, `writes`, `read_bytes`,
    /// `write_bytes`, `other`, since its store was opened).
    ///
    /// # Errors
    /// The datapath failed, or does not have the volume.
    pub fn volume_stats(&self, v: &Volume) -> Result<serde_json::Value, ManagerError> {
        let a = self
            .call(json!({"op": "volume_stats", "lvs": self.cfg.lvs, "name": volume_name(&v.id)}))?;
        Ok(a["stats"].clone())
    }

    /// Events the node's datapath sent since the last look (store nearly full or failed).
    pub fn take_events(&self) -> Vec<serde_json::Value> {
        self.dp.take_events()
    }

    /// The pool report for the scheduler, from the datapath's figures.
    ///
    /// # Errors
    /// The datapath cannot be reached or does not have the store.
    pub fn report(&self) -> Result<NodeReport, ManagerError> {
        let ans = self.call(json!({"op": "lvs_list"}))?;
        let stores = ans["stores"].as_array().cloned().unwrap_or_default();
        let s = stores
            .iter()
            .find(|s| s["name"] == self.cfg.lvs.as_str())
            .ok_or_else(|| {
                ManagerError::Datapath(DpError::Failed {
                    code: "not_found".into(),
                    message: format!("node {} has no store {}", self.cfg.host, self.cfg.lvs),
                })
            })?;
        let bytes = |k: &str| s[k].as_u64().unwrap_or(0);
        let mut p = PoolReport::thin(&self.cfg.lvs, 0.0, 0.0);
        p.total_capacity_gb = Capacity::from_bytes(bytes("total_bytes"));
        p.free_capacity_gb = Capacity::from_bytes(bytes("free_bytes"));
        p.allocated_capacity_gb = Capacity::from_bytes(bytes("used_bytes"))
            .gb()
            .unwrap_or(0.0);
        p.provisioned_capacity_gb = Capacity::from_bytes(bytes("provisioned_bytes"))
            .gb()
            .unwrap_or(0.0);
        p.total_volumes = bytes("volumes");
        p.reserved_percentage = self.cfg.reserved_percentage;
        p.max_over_subscription_ratio = self.cfg.max_over_subscription_ratio;
        let mut r = NodeReport::basalt(&self.cfg.host, &self.cfg.availability_zone, vec![p]);
        r.volume_backend_name = self.cfg.backend.clone();
        Ok(r)
    }

    /// Makes the datapath volume of `v` (status `creating`, placed on this node): blank, a
    /// clone of its snapshot, or a clone of its source volume. Leaves the row alone on
    /// failure, so the caller can reschedule or mark it `error`.
    ///
    /// # Errors
    /// The datapath failed (see [`DpError::reschedulable`]).
    pub fn create_volume(&self, v: &Volume) -> Result<Volume, ManagerError> {
        let lvs = &self.cfg.lvs;
        let name = volume_name(&v.id);
        let size = v.size_gb * GIB;
        if let Some(snap) = &v.snapshot_id {
            self.call(json!({"op": "clone_create", "lvs": lvs, "snapshot": snapshot_name(snap), "name": name}))?;
            self.grow_to(&name, size)?;
        } else if let Some(src) = &v.source_volid {
            // A clone of a volume: a point-in-time snapshot of the source, a clone of that,
            // and the snapshot dropped again (the clone keeps what it shares).
            let tmp = clone_source_name(&v.id);
            self.call(json!({"op": "snapshot_create", "lvs": lvs, "volume": volume_name(src), "name": tmp}))?;
            self.call(json!({"op": "clone_create", "lvs": lvs, "snapshot": tmp, "name": name}))?;
            self.call_gone_ok(json!({"op": "volume_delete", "lvs": lvs, "name": tmp}))?;
            self.grow_to(&name, size)?;
        } else {
            self.call(json!({"op": "volume_create", "lvs": lvs, "name": name, "size": size}))?;
        }
        let done = VolumeChange {
            status: Some("available".into()),
            launched_at: Some(Timestamp::now()),
            user_message: Some(None),
            ..VolumeChange::default()
        };
        let v = self.db.update_volume(&v.id, &["creating"], &done)?;
        tracing::info!(volume = %v.id, node = %self.cfg.host, size_gb = v.size_gb, "volume created");
        Ok(v)
    }

    fn grow_to(&self, name: &str, size: u64) -> Result<(), ManagerError> {
        let ans = self.call(json!({"op": "volume_get", "lvs": self.cfg.lvs, "name": name}))?;
        if ans["volume"]["size"].as_u64().unwrap_or(0) < size {
            self.call(
                json!({"op": "volume_resize", "lvs": self.cfg.lvs, "name": name, "size": size}),
            )?;
        }
        Ok(())
    }

    /// Deletes `v` (status `deleting`): its exports, its datapath volume, its row.
    ///
    /// # Errors
    /// The datapath failed; the volume is then `error_deleting`.
    pub fn delete_volume(&self, v: &Volume) -> Result<(), ManagerError> {
        let r = (|| -> Result<(), ManagerError> {
            for e in self.db.exports_of(&v.id)? {
                self.remove_export_on_datapath(&e)?;
                self.db.remove_export(&e.volume_id, &e.protocol)?;
            }
            self.call_gone_ok(
                json!({"op": "volume_delete", "lvs": self.cfg.lvs, "name": volume_name(&v.id)}),
            )?;
            Ok(())
        })();
        match r {
            Ok(()) => {
                self.db.destroy_volume(&v.id, &["deleting"])?;
                tracing::info!(volume = %v.id, node = %self.cfg.host, "volume deleted");
                Ok(())
            }
            Err(e) => {
                let mut c = user_message("delete failed", &e);
                c.status = Some("error_deleting".into());
                self.db.update_volume(&v.id, &["deleting"], &c)?;
                Err(e)
            }
        }
    }

    /// Grows `v` (status `extending`) to `new_size_gb` and settles the reservation.
    ///
    /// # Errors
    /// The datapath failed; the volume is then `error_extending` and the reservation rolled
    /// back.
    pub fn extend_volume(
        &self,
        v: &Volume,
        r: &Reservation,
        new_size_gb: u64,
    ) -> Result<Volume, ManagerError> {
        let back = v
            .previous_status
            .clone()
            .unwrap_or_else(|| "available".into());
        match self.call(json!({"op": "volume_resize", "lvs": self.cfg.lvs, "name": volume_name(&v.id), "size": new_size_gb * GIB})) {
            Ok(_) => Ok(self.db.finish_extend(&v.id, r, Some(new_size_gb), &back)?),
            Err(e) => {
                self.db.finish_extend(&v.id, r, None, "error_extending")?;
                self.db.update_volume(&v.id, &[], &user_message("extend failed", &e))?;
                Err(e.into())
            }
        }
    }

    /// Takes snapshot `s` (status `creating`) of its volume.
    ///
    /// # Errors
    /// The datapath failed; the snapshot is then `error`.
    pub fn create_snapshot(&self, s: &Snapshot) -> Result<Snapshot, ManagerError> {
        let req = json!({"op": "snapshot_create", "lvs": self.cfg.lvs, "volume": volume_name(&s.volume_id), "name": snapshot_name(&s.id)});
        let (status, progress) = match self.call(req) {
            Ok(_) => ("available", "100%"),
            Err(e) => {
                self.db.update_snapshot(
                    &s.id,
                    &["creating"],
                    &SnapshotChange {
                        status: Some("error".into()),
                        ..SnapshotChange::default()
                    },
                )?;
                return Err(e.into());
            }
        };
        let s = self.db.update_snapshot(
            &s.id,
            &["creating"],
            &SnapshotChange {
                status: Some(status.into()),
                progress: Some(progress.into()),
                ..SnapshotChange::default()
            },
        )?;
        tracing::info!(snapshot = %s.id, volume = %s.volume_id, "snapshot created");
        Ok(s)
    }

    /// Deletes snapshot `s` (status `deleting`). Clones made from it keep their data: the
    /// volume store shares clusters by reference.
    ///
    /// # Errors
    /// The datapath failed; the snapshot is then `error_deleting`.
    pub fn delete_snapshot(&self, s: &Snapshot) -> Result<(), ManagerError> {
        match self.call_gone_ok(
            json!({"op": "volume_delete", "lvs": self.cfg.lvs, "name": snapshot_name(&s.id)}),
        ) {
            Ok(()) => {
                self.db.destroy_snapshot(&s.id, &["deleting"])?;
                Ok(())
            }
            Err(e) => {
                self.db.update_snapshot(
                    &s.id,
                    &["deleting"],
                    &SnapshotChange {
                        status: Some("error_deleting".into()),
                        ..SnapshotChange::default()
                    },
                )?;
                Err(e.into())
            }
        }
    }

    /// Reverts `v` (status `reverting`) to `s` (status `restoring`).
    ///
    /// # Errors
    /// The datapath failed; the volume is then `error`, the snapshot `available`.
    pub fn revert_volume(&self, v: &Volume, s: &Snapshot) -> Result<Volume, ManagerError> {
        let r = self.call(json!({"op": "volume_revert", "lvs": self.cfg.lvs, "volume": volume_name(&v.id), "snapshot": snapshot_name(&s.id)}));
        let snap_back = SnapshotChange {
            status: Some("available".into()),
            ..SnapshotChange::default()
        };
        self.db.update_snapshot(&s.id, &["restoring"], &snap_back)?;
        match r {
            Ok(_) => Ok(self.db.update_volume(
                &v.id,
                &["reverting"],
                &VolumeChange {
                    status: Some("available".into()),
                    ..VolumeChange::default()
                },
            )?),
            Err(e) => {
                let mut c = user_message("revert failed", &e);
                c.status = Some("error".into());
                self.db.update_volume(&v.id, &["reverting"], &c)?;
                Err(e.into())
            }
        }
    }

    fn add_export_on_datapath(&self, e: &Export) -> Result<(), ManagerError> {
        let vol = format!("{}/{}", self.cfg.lvs, volume_name(&e.volume_id));
        let req = match e.protocol.as_str() {
            "iscsi" => {
                let mut t = json!({"op": "iscsi_target_add", "name": e.target, "initiators": e.hosts,
                    "lun": [{"lun": 0, "volume": vol}]});
                if let (Some(u), Some(s)) = (&e.chap_user, &e.chap_secret) {
                    t["chap"] = json!({"user": u, "secret": s});
                }
                t
            }
            "nvmeof" => json!({"op": "nvmf_subsystem_add", "nqn": e.target, "hosts": e.hosts,
                "namespace": [{"nsid": 1, "volume": vol}]}),
            // No allow-list: NBD exports are on loopback only (see `NodeConfig::nbd_portal`).
            "nbd" => json!({"op": "nbd_export_add", "name": e.target, "volume": vol}),
            other => {
                return Err(ManagerError::Invalid(format!("unknown protocol {other}")));
            }
        };
        self.call(req)?;
        Ok(())
    }

    fn remove_export_on_datapath(&self, e: &Export) -> Result<(), ManagerError> {
        let req = match e.protocol.as_str() {
            "iscsi" => json!({"op": "iscsi_target_remove", "name": e.target}),
            "nbd" => json!({"op": "nbd_export_remove", "name": e.target}),
            _ => json!({"op": "nvmf_subsystem_remove", "nqn": e.target}),
        };
        match self.call(req) {
            Ok(_) => Ok(()),
            // "no target ..." is a configuration error today: treat any refusal to remove a
            // target that is not there as done, after checking it is indeed gone.
            Err(err) => {
                if self.live_targets(&e.protocol)?.contains(&e.target) {
                    Err(err.into())
                } else {
                    Ok(())
                }
            }
        }
    }

    fn live_targets(&self, protocol: &str) -> Result<Vec<String>, ManagerError> {
        Ok(match protocol {
            "iscsi" => match self.call(json!({"op": "iscsi_target_list"})) {
                Ok(a) => a["targets"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .filter_map(|x| x["name"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(DpError::Failed { .. }) => Vec::new(),
                Err(e) => return Err(e.into()),
            },
            "nbd" => match self.call(json!({"op": "nbd_export_list"})) {
                Ok(a) => a["exports"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .filter_map(|x| x["name"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(DpError::Failed { .. }) => Vec::new(),
                Err(e) => return Err(e.into()),
            },
            _ => match self.call(json!({"op": "nvmf_subsystem_list"})) {
                Ok(a) => a["subsystems"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .filter_map(|x| x["nqn"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(DpError::Failed { .. }) => Vec::new(),
                Err(e) => return Err(e.into()),
            },
        })
    }

    /// Lets `host` (an initiator IQN, a host NQN, or for NBD a name for the client) reach
    /// volume `v` over `protocol` (`iscsi`, `nvmeof` or `nbd`), and returns the export. The
    /// target is made on first use, with CHAP credentials of its own for iSCSI; later hosts are
    /// added to its allow-list. An NBD export (named `volume-<uuid>`) has no allow-list and no
    /// authentication: it is refused unless the node's NBD address is loopback, and its hosts
    /// are only recorded (the export stays while any is left).
    ///
    /// # Errors
    /// The protocol is not served by the node (for NBD, not on loopback), or the datapath
    /// failed.
    pub fn export(&self, v: &Volume, protocol: &str, host: &str) -> Result<Export, ManagerError> {
        let existing = self
            .db
            .exports_of(&v.id)?
            .into_iter()
            .find(|e| e.protocol == protocol);
        let recorded = existing.is_some();
        let mut e = match (protocol, existing) {
            (_, Some(e)) => e,
            ("iscsi", None) => Export {
                volume_id: v.id.clone(),
                protocol: "iscsi".into(),
                target: format!("{IQN_PREFIX}{}", v.id),
                hosts: Vec::new(),
                chap_user: Some(random_token(16)?),
                chap_secret: Some(random_token(20)?),
            },
            ("nvmeof", None) => Export {
                volume_id: v.id.clone(),
                protocol: "nvmeof".into(),
                target: format!("{NQN_PREFIX}{}", v.id),
                hosts: Vec::new(),
                chap_user: None,
                chap_secret: None,
            },
            ("nbd", None) => Export {
                volume_id: v.id.clone(),
                protocol: "nbd".into(),
                target: format!("{NBD_PREFIX}{}", v.id),
                hosts: Vec::new(),
                chap_user: None,
                chap_secret: None,
            },
            (other, None) => {
                return Err(ManagerError::Invalid(format!(
                    "protocol {other:?} is not one of iscsi, nvmeof, nbd"
                )));
            }
        };
        let portal = match protocol {
            "iscsi" => &self.cfg.iscsi_portal,
            "nbd" => &self.cfg.nbd_portal,
            _ => &self.cfg.nvmf_portal,
        };
        let Some(portal) = portal else {
            return Err(ManagerError::Invalid(format!(
                "node {} does not serve {protocol}",
                self.cfg.host
            )));
        };
        if protocol == "nbd" && !is_loopback_portal(portal) {
            return Err(ManagerError::Invalid(format!(
                "node {}'s NBD address {portal} is not a loopback address: NBD has no \
                 authentication without TLS, so NBD exports are for the local host only",
                self.cfg.host
            )));
        }
        let has_host = e.hosts.iter().any(|h| h == host);
        // Asked only when the answer matters (a recorded iSCSI or NVMe export gaining a host
        // is replaced whatever the datapath holds).
        let live = (has_host || !recorded || protocol == "nbd")
            && self.live_targets(protocol)?.contains(&e.target);
        if has_host && live {
            return Ok(e);
        }
        if !has_host {
            e.hosts.push(host.to_owned());
        }
        if protocol == "nbd" && live {
            // No allow-list to change: only the record of who uses it.
            self.db.put_export(&e)?;
            tracing::info!(volume = %v.id, protocol, host, target = %e.target, "exported");
            return Ok(e);
        }
        // The allow-list changes by replacing the target; a first export replaces only a
        // target a crash left behind.
        if recorded || live {
            self.remove_export_on_datapath(&e)?;
        }
        self.add_export_on_datapath(&e)?;
        self.db.put_export(&e)?;
        tracing::info!(volume = %v.id, protocol, host, target = %e.target, "exported");
        Ok(e)
    }

    /// Takes `host` off volume `v`'s export over `protocol`; the target goes when no host is
    /// left.
    ///
    /// # Errors
    /// The datapath failed.
    pub fn unexport(&self, v: &Volume, protocol: &str, host: &str) -> Result<(), ManagerError> {
        let Some(mut e) = self
            .db
            .exports_of(&v.id)?
            .into_iter()
            .find(|e| e.protocol == protocol)
        else {
            return Ok(());
        };
        e.hosts.retain(|h| h != host);
        if e.protocol == "nbd" && !e.hosts.is_empty() {
            // No allow-list: the export stays for the hosts left.
            self.db.put_export(&e)?;
            tracing::info!(volume = %v.id, protocol, host, "unexported");
            return Ok(());
        }
        self.remove_export_on_datapath(&e)?;
        if e.hosts.is_empty() {
            self.db.remove_export(&v.id, protocol)?;
        } else {
            self.add_export_on_datapath(&e)?;
            self.db.put_export(&e)?;
        }
        tracing::info!(volume = %v.id, protocol, host, "unexported");
        Ok(())
    }

    /// Makes the datapath serve exactly the exports the database records for this node:
    /// missing ones are added, Basalt-named ones the database does not know are removed.
    /// Returns (added, removed).
    ///
    /// # Errors
    /// The datapath or the database failed.
    pub fn reconcile_exports(&self) -> Result<(usize, usize), ManagerError> {
        let want: Vec<Export> = self.db.list_exports(Some(&self.backend_address()))?;
        let (mut added, mut removed) = (0, 0);
        for (protocol, prefix) in [
            ("iscsi", IQN_PREFIX),
            ("nvmeof", NQN_PREFIX),
            ("nbd", NBD_PREFIX),
        ] {
            if protocol == "nbd"
                && self.cfg.nbd_portal.is_none()
                && !want.iter().any(|e| e.protocol == "nbd")
            {
                // A node not configured for NBD is not asked (its datapath may have no [nbd]).
                continue;
            }
            let live = self.live_targets(protocol)?;
            for e in want.iter().filter(|e| e.protocol == protocol) {
                if !live.contains(&e.target) {
                    self.add_export_on_datapath(e)?;
                    added += 1;
                }
            }
            for t in live.iter().filter(|t| t.starts_with(prefix)) {
                if !want
                    .iter()
                    .any(|e| e.protocol == protocol && &e.target == t)
                {
                    let stale = Export {
                        volume_id: String::new(),
                        protocol: protocol.to_owned(),
                        target: t.clone(),
                        hosts: Vec::new(),
                        chap_user: None,
                        chap_secret: None,
                    };
                    self.remove_export_on_datapath(&stale)?;
                    removed += 1;
                }
            }
        }
        if added + removed > 0 {
            tracing::info!(node = %self.cfg.host, added, removed, "exports reconciled");
        }
        Ok((added, removed))
    }

    fn backend_address(&self) -> String {
        format!("{}@{}", self.cfg.host, self.cfg.backend)
    }

    /// Finishes or undoes what a restart of the control plane or of the datapath left in a
    /// transitional state on this node, then reconciles exports. Every step is idempotent, so
    /// recovery itself may be interrupted and run again. Returns the volumes and snapshots it
    /// touched.
    ///
    /// # Errors
    /// The datapath or the database failed (what was done stays done).
    pub fn recover(&self) -> Result<usize, ManagerError> {
        let pool = self.cfg.pool().to_string();
        let mut touched = 0;
        let q = ListQuery::default().filter(Field::Host, FilterOp::Eq, Val::Text(pool.clone()));
        for v in self.db.list_volumes(&q)?.items {
            let r = match v.status.as_str() {
                "creating" => self.create_volume(&v).map(|_| ()).or_else(|e| {
                    let mut c = user_message("create failed", &e);
                    c.status = Some("error".into());
                    self.db.update_volume(&v.id, &["creating"], &c)?;
                    Ok::<(), ManagerError>(())
                }),
                "deleting" => self.delete_volume(&v),
                "extending" => match self.db.pending_extend(&v.id)? {
                    Some((r, size)) => self.extend_volume(&v, &r, size).map(|_| ()),
                    None => {
                        let back = v
                            .previous_status
                            .clone()
                            .unwrap_or_else(|| "available".into());
                        self.db
                            .update_volume(
                                &v.id,
                                &["extending"],
                                &VolumeChange {
                                    status: Some(back),
                                    ..VolumeChange::default()
                                },
                            )
                            .map(|_| ())
                            .map_err(Into::into)
                    }
                },
                "reverting" => {
                    // Which snapshot is restoring tells what the revert was.
                    let snaps = self.db.list_snapshots(&ListQuery::default().filter(
                        Field::VolumeId,
                        FilterOp::Eq,
                        Val::Text(v.id.clone()),
                    ))?;
                    match snaps.items.iter().find(|s| s.status == "restoring") {
                        Some(s) => self.revert_volume(&v, s).map(|_| ()),
                        None => self
                            .db
                            .update_volume(
                                &v.id,
                                &["reverting"],
                                &VolumeChange {
                                    status: Some("error".into()),
                                    user_message: Some(Some(
                                        "revert interrupted and its snapshot is gone".into(),
                                    )),
                                    ..VolumeChange::default()
                                },
                            )
                            .map(|_| ())
                            .map_err(Into::into),
                    }
                }
                _ => continue,
            };
            touched += 1;
            if let Err(e) = r {
                tracing::warn!(volume = %v.id, status = %v.status, error = %e, "recovery step failed");
            }
        }
        // Snapshots of this node's volumes.
        let volumes: Vec<String> = self
            .db
            .list_volumes(&q)?
            .items
            .into_iter()
            .map(|v| v.id)
            .collect();
        for vid in volumes {
            let snaps = self.db.list_snapshots(&ListQuery::default().filter(
                Field::VolumeId,
                FilterOp::Eq,
                Val::Text(vid),
            ))?;
            for s in snaps.items {
                let r = match s.status.as_str() {
                    "creating" => self.create_snapshot(&s).map(|_| ()),
                    "deleting" => self.delete_snapshot(&s),
                    _ => continue,
                };
                touched += 1;
                if let Err(e) = r {
                    tracing::warn!(snapshot = %s.id, error = %e, "recovery step failed");
                }
            }
        }
        self.reconcile_exports()?;
        if touched > 0 {
            tracing::info!(node = %self.cfg.host, touched, "recovered interrupted operations");
        }
        Ok(touched)
    }
}

/// A random token of `n` characters from `[A-Za-z0-9]` (CHAP names and secrets).
fn random_token(n: usize) -> Result<String, ManagerError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = vec![0u8; n];
    getrandom::fill(&mut raw)
        .map_err(|e| ManagerError::Invalid(format!("no random source: {e}")))?;
    // 62 symbols: the small bias of `% 62` on one byte does not matter for a shared secret of
    // 20 characters (over 118 bits).
    Ok(raw
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

impl From<DbError> for ManagerError {
    fn from(e: DbError) -> Self {
        ManagerError::Db(e)
    }
}

impl From<DpError> for ManagerError {
    fn from(e: DpError) -> Self {
        ManagerError::Datapath(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_portals_count_as_local() {
        for p in [
            "127.0.0.1:10809",
            "127.1.2.3:1",
            "[::1]:10809",
            "localhost:10809",
            "LOCALHOST:1",
        ] {
            assert!(is_loopback_portal(p), "{p}");
        }
        for p in [
            "0.0.0.0:10809",
            "10.0.0.1:10809",
            "[::]:10809",
            "storage-1:10809",
            "localhost",
            "localhost:x",
            "",
        ] {
            assert!(!is_loopback_portal(p), "{p}");
        }
    }
}
