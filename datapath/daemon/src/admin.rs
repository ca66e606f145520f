//! The local admin socket: JSON requests, one per line, on a Unix socket, each answered by one
//! JSON line. It changes exports and volumes on a running datapath until the control plane
//! drives it over its rings; `basalt admin` is its command-line client.
//!
//! ```text
//! {"op":"iscsi_target_add","name":"iqn.2026-11.org.basalt:v1","lun":[{"lun":0,"volume":"pool/v1"}]}
//! {"ok":true}
//! {"op":"iscsi_target_remove","name":"iqn.2026-11.org.basalt:v1"}
//! {"ok":false,"code":"invalid","error":"configuration: no target iqn.2026-11.org.basalt:v1"}
//! ```
//!
//! Operations: `iscsi_target_add` (the fields of an `[[iscsi.target]]` table),
//! `iscsi_target_remove`, `iscsi_lun_add` (`target` plus the fields of a LUN table),
//! `iscsi_lun_remove` (`target`, `lun`), `iscsi_target_list`, `nvmf_subsystem_add` (the fields
//! of an `[[nvmf.subsystem]]` table), `nvmf_subsystem_remove` (`nqn`), `nvmf_subsystem_list`,
//! `nbd_export_add` (the fields of an `[[nbd.export]]` table), `nbd_export_remove` (`name`: its
//! connections are closed), `nbd_export_list`, `volume_create` (the fields of a
//! `[[volume]]` table), `volume_resize` (`lvs`, `name`, `size`), `volume_delete` (`lvs`,
//! `name`), `volume_list` (`lvs`), `volume_get` (`lvs`, `name`), `volume_stats` (`lvs`, `name`:
//! its I/O since the store was opened), `snapshot_create` (`lvs`,
//! `volume`, `name`), `clone_create` (`lvs`, `snapshot`, `name`), `volume_revert` (`lvs`,
//! `volume`, `snapshot`), `lvs_list` (space and volume counts of every store), `lvs_add` (the
//! fields of an `[[lvs]]` table: opens or creates a store on a running datapath), `ping`.
//!
//! Creates are idempotent (a volume, snapshot or clone that exists already under the name
//! asked for is answered with its id), so a caller that lost an answer can ask again. A failure
//! carries a machine-readable `code` beside its message: `not_found`, `exists`, `no_space`,
//! `busy`, `read_only`, `invalid`, `io` or `error`; `bad_request` for a line that is not a
//! request.
//!
//! The socket is created with mode 0600: whoever can use it owns the data.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use basalt_bdev::ByteSize;
use serde::Deserialize;

use crate::DatapathError;
use crate::config::{
    IscsiTargetConfig, LunConfig, NbdExportConfig, NvmfSubsystemConfig, VolumeConfig,
};
use crate::exports::Exports;

/// Longest request line accepted.
const MAX_LINE: usize = 1 << 20;

/// One request.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    Ping,
    IscsiTargetAdd(IscsiTargetConfig),
    IscsiTargetRemove {
        name: String,
    },
    IscsiLunAdd {
        target: String,
        lun: u64,
        #[serde(default)]
        bdev: Option<String>,
        #[serde(default)]
        volume: Option<String>,
        #[serde(default)]
        read_only: bool,
    },
    IscsiLunRemove {
        target: String,
        lun: u64,
    },
    IscsiTargetList,
    NvmfSubsystemAdd(NvmfSubsystemConfig),
    NvmfSubsystemRemove {
        nqn: String,
    },
    NvmfSubsystemList,
    NbdExportAdd(NbdExportConfig),
    NbdExportRemove {
        name: String,
    },
    NbdExportList,
    VolumeCreate(VolumeConfig),
    VolumeResize {
        lvs: String,
        name: String,
        size: ByteSize,
    },
    VolumeDelete {
        lvs: String,
        name: String,
    },
    VolumeList {
        lvs: String,
    },
    VolumeGet {
        lvs: String,
        name: String,
    },
    VolumeStats {
        lvs: String,
        name: String,
    },
    SnapshotCreate {
        lvs: String,
        volume: String,
        name: String,
    },
    CloneCreate {
        lvs: String,
        snapshot: String,
        name: String,
    },
    VolumeRevert {
        lvs: String,
        volume: String,
        snapshot: String,
    },
    LvsList,
    LvsAdd(crate::config::LvsConfig),
}

/// A running admin socket; removed from the file system when dropped.
#[derive(Debug)]
pub struct AdminSocket {
    path: PathBuf,
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` (replacing a stale socket) and serves requests on a thread of its own.
///
/// # Errors
/// The socket cannot be bound.
pub fn start(path: &Path, exports: Arc<Exports>) -> Result<AdminSocket, DatapathError> {
    if path.exists() {
        // A live daemon answers; a stale socket file does not.
        if UnixStream::connect(path).is_ok() {
            return Err(DatapathError::Config(format!(
                "admin socket {} is in use by a running datapath",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        DatapathError::Config(format!("cannot bind admin socket {}: {e}", path.display()))
    })?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    std::thread::Builder::new()
        .name("basalt-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let ex = exports.clone();
                let _ = std::thread::Builder::new()
                    .name("basalt-admin-conn".into())
                    .spawn(move || serve(conn, &ex));
            }
        })
        .map_err(|e| DatapathError::Config(format!("cannot start the admin thread: {e}")))?;
    tracing::info!(socket = %path.display(), "admin socket listening");
    Ok(AdminSocket {
        path: path.to_owned(),
    })
}

fn serve(conn: UnixStream, ex: &Exports) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE as u64 + 1).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(n) if n > MAX_LINE => {
                let _ = writeln!(
                    out,
                    "{}",
                    error_json("bad_request", "request line too long")
                );
                return;
            }
            Ok(_) => {}
        }
        if line.trim().is_empty() {
            continue;
        }
        let answer = dispatch(line.trim().as_bytes(), ex);
        if writeln!(out, "{answer}").is_err() {
            return;
        }
    }
}

/// Decodes one JSON request and carries it out: the admin socket's and the control rings'
/// common entry point. Never panics on hostile bytes; every failure is an answer.
pub fn dispatch(request: &[u8], ex: &Exports) -> serde_json::Value {
    match serde_json::from_slice::<Request>(request) {
        Ok(req) => {
            tracing::info!(request = ?req, "datapath request");
            match handle(req, ex) {
                Ok(v) => v,
                Err(e) => error_json(e.code(), &e.to_string()),
            }
        }
        Err(e) => error_json("bad_request", &format!("bad request: {e}")),
    }
}

fn error_json(code: &str, msg: &str) -> serde_json::Value {
    serde_json::json!({ "ok": false, "code": code, "error": msg })
}

fn volume_json(v: &basalt_lvol::VolumeInfo) -> serde_json::Value {
    serde_json::json!({
        "id": v.id,
        "name": v.name,
        "uuid": v.uuid.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "size": v.size_bytes,
        "read_only": v.read_only,
        "snapshot": v.snapshot,
        "thick": v.thick,
        "parent_id": v.parent_id,
    })
}

fn ok() -> serde_json::Value {
    serde_json::json!({ "ok": true })
}

fn handle(req: Request, ex: &Exports) -> Result<serde_json::Value, DatapathError> {
    let no_iscsi = || DatapathError::Config("iSCSI is not enabled (no [iscsi] section)".into());
    let cfg_err = |e: basalt_iscsi::server::ExportError| DatapathError::Config(e.to_string());
    match req {
        Request::Ping => Ok(ok()),
        Request::IscsiTargetAdd(t) => ex.add_iscsi_target(&t).map(|()| ok()),
        Request::IscsiTargetRemove { name } => {
            let iscsi = ex.iscsi().ok_or_else(no_iscsi)?;
            iscsi.remove_target(&name).map_err(cfg_err)?;
            Ok(ok())
        }
        Request::IscsiLunAdd {
            target,
            lun,
            bdev,
            volume,
            read_only,
        } => {
            let lun = LunConfig {
                lun,
                bdev,
                volume,
                read_only,
            };
            let iscsi = ex.iscsi().ok_or_else(no_iscsi)?;
            let lu = ex.logical_unit(&lun)?;
            iscsi.add_lun(&target, lun.lun, lu).map_err(cfg_err)?;
            Ok(ok())
        }
        Request::IscsiLunRemove { target, lun } => {
            let iscsi = ex.iscsi().ok_or_else(no_iscsi)?;
            iscsi.remove_lun(&target, lun).map_err(cfg_err)?;
            Ok(ok())
        }
        Request::IscsiTargetList => {
            let iscsi = ex.iscsi().ok_or_else(no_iscsi)?;
            let targets: Vec<serde_json::Value> = iscsi
                .summary()
                .into_iter()
                .map(|t| {
                    serde_json::json!({
                        "name": t.node.name,
                        "alias": t.node.alias,
                        "initiators": t.node.access.initiators,
                        "chap": t.node.access.chap.is_some(),
                        "mutual_chap": t.node.access.mutual_chap.is_some(),
                        "luns": t.luns.iter().map(|(l, b)| serde_json::json!({"lun": l, "bdev": b})).collect::<Vec<_>>(),
                        "sessions": t.sessions,
                    })
                })
                .collect();
            Ok(serde_json::json!({ "ok": true, "targets": targets }))
        }
        Request::NvmfSubsystemAdd(s) => ex.add_nvmf_subsystem(&s).map(|()| ok()),
        Request::NvmfSubsystemRemove { nqn } => ex.remove_nvmf_subsystem(&nqn).map(|()| ok()),
        Request::NvmfSubsystemList => {
            let nvmf = ex.nvmf().ok_or_else(|| {
                DatapathError::Config("NVMe/TCP is not enabled (no [nvmf] section)".into())
            })?;
            let subs: Vec<serde_json::Value> = nvmf
                .subsystems()
                .into_iter()
                .map(|s| {
                    serde_json::json!({
                        "nqn": s.config.nqn,
                        "serial": s.config.serial,
                        "allow_any_host": s.config.allow_any_host,
                        "hosts": s.config.hosts,
                        "namespaces": s.namespaces.values().map(|n| serde_json::json!({"nsid": n.nsid, "bdev": n.bdev.name()})).collect::<Vec<_>>(),
                    })
                })
                .collect();
            Ok(serde_json::json!({ "ok": true, "subsystems": subs }))
        }
        Request::NbdExportAdd(e) => ex.add_nbd_export(&e).map(|()| ok()),
        Request::NbdExportRemove { name } => ex.remove_nbd_export(&name).map(|()| ok()),
        Request::NbdExportList => {
            let exports: Vec<serde_json::Value> = ex
                .nbd_exports()?
                .into_iter()
                .map(|(c, x)| {
                    let g = x.bdev.geometry();
                    serde_json::json!({
                        "name": c.name,
                        "bdev": c.bdev,
                        "volume": c.volume,
                        "read_only": x.config.read_only,
                        "description": x.config.description,
                        "size": g.bytes(),
                        "block_size": g.block_size,
                        "connections": x.connections(),
                    })
                })
                .collect();
            Ok(serde_json::json!({ "ok": true, "exports": exports }))
        }
        Request::VolumeCreate(v) => {
            let id = ex.ensure_volume(&v)?;
            Ok(serde_json::json!({ "ok": true, "id": id }))
        }
        Request::VolumeResize { lvs, name, size } => {
            ex.resize_volume(&lvs, &name, size.0)?;
            Ok(ok())
        }
        Request::VolumeDelete { lvs, name } => {
            ex.delete_volume(&lvs, &name)?;
            Ok(ok())
        }
        Request::VolumeList { lvs } => {
            let store = ex
                .store(&lvs)
                .ok_or_else(|| DatapathError::NotFound(format!("store {lvs}")))?;
            let vols: Vec<serde_json::Value> = store.volumes().iter().map(volume_json).collect();
            Ok(serde_json::json!({ "ok": true, "volumes": vols }))
        }
        Request::VolumeGet { lvs, name } => {
            let (_, v) = ex.volume(&lvs, &name)?;
            Ok(serde_json::json!({ "ok": true, "volume": volume_json(&v) }))
        }
        Request::VolumeStats { lvs, name } => {
            let (store, v) = ex.volume(&lvs, &name)?;
            let st = store.io_stats(v.id);
            Ok(serde_json::json!({ "ok": true, "stats": {
                "reads": st.reads, "writes": st.writes,
                "read_bytes": st.read_bytes, "write_bytes": st.write_bytes,
                "other": st.other,
            }}))
        }
        Request::SnapshotCreate { lvs, volume, name } => {
            let id = ex.snapshot_volume(&lvs, &volume, &name)?;
            Ok(serde_json::json!({ "ok": true, "id": id }))
        }
        Request::CloneCreate {
            lvs,
            snapshot,
            name,
        } => {
            let id = ex.clone_snapshot(&lvs, &snapshot, &name)?;
            Ok(serde_json::json!({ "ok": true, "id": id }))
        }
        Request::VolumeRevert {
            lvs,
            volume,
            snapshot,
        } => {
            ex.revert_volume(&lvs, &volume, &snapshot)?;
            Ok(ok())
        }
        Request::LvsAdd(cfg) => {
            ex.add_store(&cfg)?;
            Ok(ok())
        }
        Request::LvsList => {
            let stores: Vec<serde_json::Value> = ex
                .stores()
                .iter()
                .map(|s| {
                    let sp = s.space();
                    let vols = s.volumes();
                    serde_json::json!({
                        "name": s.name(),
                        "bdev": ex.store_bdev(s.name()),
                        "cluster_size": sp.cluster_size,
                        "total_bytes": sp.total_clusters * sp.cluster_size,
                        "free_bytes": sp.free_clusters * sp.cluster_size,
                        "used_bytes": sp.used_clusters * sp.cluster_size,
                        "provisioned_bytes": sp.provisioned_bytes,
                        "volumes": vols.iter().filter(|v| !v.snapshot).count(),
                        "snapshots": vols.iter().filter(|v| v.snapshot).count(),
                    })
                })
                .collect();
            Ok(serde_json::json!({ "ok": true, "stores": stores }))
        }
    }
}

/// Sends one request line to the admin socket at `path` and returns the answer line.
///
/// # Errors
/// The socket cannot be reached or closes without answering.
pub fn request(path: &Path, json: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    writeln!(s, "{}", json.trim())?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(answer.trim_end().to_owned())
}
