//! Attaching volumes: the attachments API (3.27+, `cinder/api/v3/attachments.py`) and the
//! legacy volume actions (`os-reserve` ... `os-terminate_connection`), both over the same
//! attachment rows, and the `connection_info` an initiator needs (os-brick's iSCSI and
//! new-style NVMe-oF shapes). The connector's initiator IQN or host NQN is put on the
//! volume's export allow-list when a connection is made and taken off when it ends.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use basalt_db::{Attachment, AttachmentChange, NewAttachment, Timestamp, Volume, VolumeChange};
use serde_json::{Map, Value, json};

use crate::body::{self, Body};
use crate::ctx::Ctx;
use crate::fault::ApiError;
use crate::volumes::{arg_object, visible_volume};
use crate::{ApiState, blocking, views};

type St = State<Arc<ApiState>>;

/// The attachment routes.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v3/attachments", get(list).post(create))
        .route("/v3/attachments/detail", get(list_detail))
        .route("/v3/attachments/{id}", get(show).put(update).delete(delete))
        .route("/v3/attachments/{id}/action", post(action))
}

/// The `attachments` items of a volume's view: its attached attachments.
pub fn volume_items(state: &ApiState, ctx: &Ctx, v: &Volume) -> Vec<Value> {
    // The store keeps attach_status in step with the attachments: a detached volume has no
    // attached attachment, and most volumes of a list are detached.
    if v.attach_status == "detached" {
        return Vec::new();
    }
    let Ok(list) = state.db().attachments_of(&v.id) else {
        return Vec::new();
    };
    list.iter()
        .filter(|a| a.attach_status == "attached")
        .map(|a| {
            let host_visible = ctx.is_admin() || ctx.auth.roles.iter().any(|r| r == "service");
            json!({
                "id": v.id,
                "attachment_id": a.id,
                "volume_id": v.id,
                "server_id": a.instance_uuid,
                "host_name": if host_visible { json!(a.attached_host) } else { Value::Null },
                "device": a.mountpoint,
                "attached_at": views::time(a.attach_time),
            })
        })
        .collect()
}

fn view(a: &Attachment, detailed: bool) -> Value {
    let mut o = json!({
        "id": a.id,
        "status": a.attach_status,
        "instance": a.instance_uuid,
        "volume_id": a.volume_id,
    });
    if detailed && let Some(m) = o.as_object_mut() {
        m.insert("attached_at".into(), views::time(a.attach_time));
        m.insert("detached_at".into(), views::time(a.detach_time));
        m.insert("attach_mode".into(), json!(a.attach_mode));
        m.insert(
            "connection_info".into(),
            a.connection_info.clone().unwrap_or(Value::Null),
        );
    }
    o
}

fn need_27(ctx: &Ctx) -> Result<(), ApiError> {
    if ctx.version.at_least(27) {
        Ok(())
    } else {
        Err(ApiError::not_found("The resource could not be found."))
    }
}

/// An attachment the caller may see (its volume's project), or 404.
fn visible(state: &ApiState, ctx: &Ctx, id: &str) -> Result<Attachment, ApiError> {
    ctx.visible("VolumeAttachment", id, state.db().get_attachment(id), |a| {
        &a.project_id
    })
}

/// Which protocol and which allow-list entry a connector gets: iSCSI with its initiator IQN
/// unless the volume type asks for NVMe-oF (`basalt:protocol`), the connector has no IQN, or
/// the deployment prefers NVMe-oF and the connector has an NQN.
fn protocol_for(
    state: &ApiState,
    v: &Volume,
    connector: &Map<String, Value>,
) -> Result<(&'static str, String), ApiError> {
    let iqn = connector
        .get("initiator")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let nqn = connector
        .get("nqn")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let wanted = v
        .volume_type_id
        .as_deref()
        .and_then(|t| state.db().get_volume_type(t).ok())
        .and_then(|t| t.extra_specs.get("basalt:protocol").cloned())
        .unwrap_or_else(|| state.cfg.default_protocol.clone());
    match (wanted.as_str(), iqn, nqn) {
        ("nvmeof", _, Some(n)) | ("iscsi", None, Some(n)) => Ok(("nvmeof", n.to_owned())),
        (_, Some(i), _) => Ok(("iscsi", i.to_owned())),
        _ => Err(ApiError::invalid_input(
            "the connector has neither an iSCSI initiator name ('initiator') nor an NVMe host NQN ('nqn')",
        )),
    }
}

fn split_portal(p: &str) -> (String, String) {
    match p.rsplit_once(':') {
        Some((h, port)) => (h.trim_matches(['[', ']']).to_owned(), port.to_owned()),
        None => (p.to_owned(), String::new()),
    }
}

/// Exports `v` to the connector's host and builds the `connection_info`.
///
/// # Errors
/// A bad connector, a volume without a host, or the datapath refused.
pub fn connect(
    state: &ApiState,
    v: &Volume,
    connector: &Map<String, Value>,
    mode: &str,
) -> Result<Value, ApiError> {
    if v.host.is_none() {
        return Err(ApiError::bad_request(format!(
            "Invalid volume: Volume {} has no host yet ({}).",
            v.id, v.status
        )));
    }
    if ["maintenance", "error", "deleting", "creating"].contains(&v.status.as_str()) {
        return Err(ApiError::bad_request(format!(
            "Invalid volume: Volume {} is {}; it cannot be connected.",
            v.id, v.status
        )));
    }
    let (proto, host) = protocol_for(state, v, connector)?;
    let e = state.control.export_volume(&v.id, proto, &host)?;
    let pool: basalt_scheduler::PoolId = v
        .host
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|e: basalt_scheduler::PoolIdError| ApiError::internal(e.to_string()))?;
    let node = state.control.node_of(&pool)?;
    let cfg = node.config();
    let access = if v.readonly || mode == "ro" {
        "ro"
    } else {
        "rw"
    };
    let info = match proto {
        "iscsi" => {
            let portal = cfg.iscsi_portal.clone().unwrap_or_default();
            json!({"driver_volume_type": "iscsi", "data": {
                "target_discovered": false,
                "target_iqn": e.target,
                "target_portal": portal,
                "target_lun": 0,
                "target_iqns": [e.target],
                "target_portals": [portal],
                "target_luns": [0],
                "volume_id": v.id,
                "auth_method": "CHAP",
                "auth_username": e.chap_user,
                "auth_password": e.chap_secret,
                "encrypted": false,
                "qos_specs": null,
                "access_mode": access,
                "discard": true,
                "cacheable": false,
            }})
        }
        _ => {
            let (addr, port) = split_portal(cfg.nvmf_portal.as_deref().unwrap_or_default());
            json!({"driver_volume_type": "nvmeof", "data": {
                "target_nqn": e.target,
                "vol_uuid": v.id,
                "portals": [[addr, port, "tcp"]],
                "ns_id": "1",
                "host_nqn": host,
                "encrypted": false,
                "qos_specs": null,
                "access_mode": access,
                "discard": true,
            }})
        }
    };
    Ok(info)
}

/// `{"driver_volume_type": t, "data": {...}}` as the attachments API shows it:
/// `{"driver_volume_type": t, ...data, "attachment_id": id}`.
fn flatten(info: Value, attachment_id: &str) -> Value {
    let Value::Object(mut outer) = info else {
        return info;
    };
    let mut flat = match outer.remove("data") {
        Some(Value::Object(d)) => d,
        _ => Map::new(),
    };
    for (k, v) in outer {
        flat.insert(k, v);
    }
    flat.insert("attachment_id".into(), json!(attachment_id));
    Value::Object(flat)
}

/// Takes the connector's host off the volume's export.
///
/// # Errors
/// The datapath refused.
pub fn disconnect(
    state: &ApiState,
    v: &Volume,
    connector: &Map<String, Value>,
) -> Result<(), ApiError> {
    if v.host.is_none() {
        return Ok(());
    }
    let (proto, host) = protocol_for(state, v, connector)?;
    state.control.unexport_volume(&v.id, proto, &host)?;
    Ok(())
}

fn connector_of(m: &Map<String, Value>) -> Result<Option<Map<String, Value>>, ApiError> {
    match m.get("connector") {
        None | Some(Value::Null) => Ok(None),
        // Cinder tests `if connector:`; cinderclient sends `{}` for a reserve-only create.
        Some(Value::Object(c)) if c.is_empty() => Ok(None),
        Some(Value::Object(c)) => Ok(Some(c.clone())),
        Some(_) => Err(ApiError::bad_request(
            "Invalid input for field/attribute connector. Value: must be an object.",
        )),
    }
}

/// Volume statuses a new attachment may start from.
fn attachable(v: &Volume) -> Vec<&'static str> {
    if v.multiattach {
        vec![
            "available",
            "downloading",
            "in-use",
            "reserved",
            "attaching",
        ]
    } else {
        vec!["available", "downloading"]
    }
}

async fn create(State(state): St, ctx: Ctx, Body(b): Body) -> Result<Response, ApiError> {
    need_27(&ctx)?;
    let m = body::section(&b, "attachment")?.clone();
    body::only(&m, &["volume_uuid", "instance_uuid", "connector", "mode"])?;
    let vid = body::uuid(&body::req_str(&m, "volume_uuid", 36)?, "volume_uuid")?;
    let instance = body::opt_str(&m, "instance_uuid", 36)?
        .map(|s| body::uuid(&s, "instance_uuid"))
        .transpose()?;
    let connector = connector_of(&m)?;
    let mode = match body::opt_str(&m, "mode", 2)? {
        Some(_) if !ctx.version.at_least(54) => {
            return Err(ApiError::bad_request("mode needs microversion 3.54"));
        }
        Some(md) if md == "rw" || md == "ro" => md,
        Some(md) => {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute mode. Value: {md}. must be one of rw, ro"
            )));
        }
        None => "rw".to_owned(),
    };
    blocking(&state, move |state| {
        let v = visible_volume(state, &ctx, &vid)?;
        ctx.authorize(state, "volume:attachment_create", &v.project_id, None)?;
        if v.status.contains("error") {
            return Err(ApiError::bad_request(format!(
                "Invalid volume: Volume {} is {}; it cannot be attached.",
                v.id, v.status
            )));
        }
        if v.readonly && mode == "rw" && connector.is_some() {
            // Cinder refuses rw attachments of read-only volumes when connecting.
            return Err(ApiError::bad_request(format!(
                "Invalid volume: Volume {} is read-only; attach it with mode ro.",
                v.id
            )));
        }
        let new = NewAttachment {
            id: basalt_db::new_uuid().map_err(|e| ApiError::internal(e.to_string()))?,
            volume_id: v.id.clone(),
            instance_uuid: instance,
            attached_host: None,
            mountpoint: None,
            attach_mode: mode.clone(),
        };
        let a = state.db().reserve_attachment(&new, &attachable(&v))?;
        let a = match connector {
            None => a,
            Some(c) => attach_connector(state, &v, a, c)?,
        };
        Ok(axum::Json(json!({"attachment": view(&a, true)})).into_response())
    })
    .await
}

/// Connects an attachment: export, `connection_info`, status `attaching`. On failure the
/// attachment is marked `error_attaching` and the error returned.
fn attach_connector(
    state: &ApiState,
    v: &Volume,
    a: Attachment,
    c: Map<String, Value>,
) -> Result<Attachment, ApiError> {
    let info = match connect(state, v, &c, &a.attach_mode) {
        Ok(i) => i,
        Err(e) => {
            let _ = state.db().update_attachment(
                &a.id,
                &[],
                &AttachmentChange {
                    attach_status: Some("error_attaching".into()),
                    ..AttachmentChange::default()
                },
            );
            return Err(e);
        }
    };
    // The attachments API keeps connection_info flat: the `data` keys beside
    // `driver_volume_type`, plus the attachment's id (Cinder's `_connection_create`; Nova
    // nests it back for os-brick).
    let info = flatten(info, &a.id);
    let host = c.get("host").and_then(Value::as_str).map(str::to_owned);
    Ok(state.db().update_attachment(
        &a.id,
        &["reserved", "attaching", "attached"],
        &AttachmentChange {
            attach_status: Some("attaching".into()),
            connector: Some(Some(Value::Object(c))),
            connection_info: Some(Some(info)),
            attached_host: host.map(Some),
            ..AttachmentChange::default()
        },
    )?)
}

async fn update(
    State(state): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(b): Body,
) -> Result<Response, ApiError> {
    need_27(&ctx)?;
    let m = body::section(&b, "attachment")?.clone();
    body::only(&m, &["connector"])?;
    let Some(c) = connector_of(&m)? else {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute connector. 'connector' is a required property",
        ));
    };
    blocking(&state, move |state| {
        let a = visible(state, &ctx, &id)?;
        let v = state.db().get_volume(&a.volume_id)?;
        ctx.authorize(state, "volume:attachment_update", &a.project_id, None)?;
        let a = attach_connector(state, &v, a, c)?;
        Ok(axum::Json(json!({"attachment": view(&a, true)})).into_response())
    })
    .await
}

async fn action(
    State(state): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(b): Body,
) -> Result<Response, ApiError> {
    need_27(&ctx)?;
    if b.get("os-complete").is_none() || b.as_object().is_some_and(|m| m.len() != 1) {
        return Err(ApiError::bad_request("There is no such action"));
    }
    if !ctx.version.at_least(44) {
        return Err(ApiError::not_found("There is no such action: os-complete"));
    }
    blocking(&state, move |state| {
        let a = visible(state, &ctx, &id)?;
        ctx.authorize(state, "volume:attachment_complete", &a.project_id, None)?;
        state.db().update_attachment(
            &a.id,
            &["attaching", "attached", "reserved"],
            &AttachmentChange {
                attach_status: Some("attached".into()),
                attach_time: Some(Timestamp::now()),
                ..AttachmentChange::default()
            },
        )?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// Ends an attachment: disconnects its connector (if it had one) and deletes it.
fn detach(state: &ApiState, a: &Attachment) -> Result<Volume, ApiError> {
    let v = state.db().get_volume(&a.volume_id)?;
    if let Some(Value::Object(c)) = &a.connector {
        // Another attachment of the same host keeps the export.
        let others = state.db().attachments_of(&v.id)?;
        let same_host = others.iter().any(|o| {
            o.id != a.id
                && matches!(&o.connector, Some(Value::Object(oc))
                    if oc.get("initiator") == c.get("initiator") && oc.get("nqn") == c.get("nqn"))
        });
        if !same_host {
            disconnect(state, &v, c)?;
        }
    }
    Ok(state.db().delete_attachment(&a.id, &[])?)
}

async fn delete(State(state): St, ctx: Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    need_27(&ctx)?;
    blocking(&state, move |state| {
        let a = visible(state, &ctx, &id)?;
        ctx.authorize(state, "volume:attachment_delete", &a.project_id, None)?;
        let v = detach(state, &a)?;
        let rest: Vec<Value> = state
            .db()
            .attachments_of(&v.id)?
            .iter()
            .map(|a| view(a, true))
            .collect();
        Ok(axum::Json(json!({"attachments": rest})).into_response())
    })
    .await
}

async fn show(State(state): St, ctx: Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    need_27(&ctx)?;
    blocking(&state, move |state| {
        let a = visible(state, &ctx, &id)?;
        Ok(axum::Json(json!({"attachment": view(&a, true)})).into_response())
    })
    .await
}

async fn list(
    State(state): St,
    ctx: Ctx,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    list_any(state, ctx, q, false).await
}

async fn list_detail(
    State(state): St,
    ctx: Ctx,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    list_any(state, ctx, q, true).await
}

async fn list_any(
    state: Arc<ApiState>,
    ctx: Ctx,
    q: Vec<(String, String)>,
    detailed: bool,
) -> Result<Response, ApiError> {
    need_27(&ctx)?;
    let p = crate::paging::parse(&ctx, &q, crate::paging::Kind::Attachment)?;
    blocking(&state, move |state| {
        let page = state.db().list_attachments(&p.query)?;
        let items: Vec<Value> = page.items.iter().map(|a| view(a, detailed)).collect();
        let path = if detailed {
            "attachments/detail"
        } else {
            "attachments"
        };
        let mut out = json!({"attachments": items});
        if let Some(l) = crate::paging::next_link(
            &ctx,
            &p,
            path,
            page.items.len(),
            page.items.last().map(|a| a.id.as_str()),
        ) {
            out["attachments_links"] = l;
        }
        Ok(axum::Json(out).into_response())
    })
    .await
}

/// The legacy attach and detach actions on `/volumes/{id}/action`.
///
/// # Errors
/// Wrong states, bad bodies, policy.
pub async fn legacy_action(
    state: &Arc<ApiState>,
    ctx: &Ctx,
    v: Volume,
    name: &str,
    arg: &Value,
) -> Result<Response, ApiError> {
    let rule = match name {
        "os-force_detach" => "volume_extension:volume_admin_actions:force_detach".to_owned(),
        other => format!(
            "volume_extension:volume_actions:{}",
            other.trim_start_matches("os-")
        ),
    };
    ctx.authorize(state, &rule, &v.project_id, Some(&v.user_id))?;
    let a = arg_object(arg, name)?;
    let name = name.to_owned();
    let ctx = ctx.clone();
    blocking(state, move |state| legacy(state, &ctx, v, &name, &a)).await
}

fn legacy(
    state: &ApiState,
    ctx: &Ctx,
    v: Volume,
    name: &str,
    a: &Map<String, Value>,
) -> Result<Response, ApiError> {
    let db = state.db();
    let accepted = || Ok(StatusCode::ACCEPTED.into_response());
    let set_status = |from: &[&str], to: &str| -> Result<Volume, ApiError> {
        Ok(db.update_volume(
            &v.id,
            from,
            &VolumeChange {
                status: Some(to.into()),
                ..VolumeChange::default()
            },
        )?)
    };
    match name {
        "os-reserve" => {
            let new = NewAttachment {
                id: basalt_db::new_uuid().map_err(|e| ApiError::internal(e.to_string()))?,
                volume_id: v.id.clone(),
                instance_uuid: None,
                attached_host: None,
                mountpoint: None,
                attach_mode: "rw".into(),
            };
            db.reserve_attachment(&new, &attachable(&v))?;
            // The legacy flow shows `attaching` while reserved.
            set_status(&["reserved", "attaching"], "attaching")?;
            accepted()
        }
        "os-unreserve" => {
            for at in db.attachments_of(&v.id)? {
                if at.attach_status == "reserved" {
                    db.delete_attachment(&at.id, &["reserved"])?;
                }
            }
            accepted()
        }
        "os-begin_detaching" => {
            if v.attach_status != "attached" {
                return Err(ApiError::bad_request(format!(
                    "Invalid volume: Volume {} is not attached.",
                    v.id
                )));
            }
            set_status(&["in-use"], "detaching")?;
            accepted()
        }
        "os-roll_detaching" => {
            set_status(&["detaching"], "in-use")?;
            accepted()
        }
        "os-attach" => {
            let instance = body::opt_str(a, "instance_uuid", 36)?;
            let host_name = body::opt_str(a, "host_name", 255)?;
            if instance.is_none() && host_name.is_none() {
                return Err(ApiError::bad_request(
                    "Invalid request to attach volume to an invalid target",
                ));
            }
            let mountpoint = body::opt_str(a, "mountpoint", 255)?;
            let mode = body::opt_str(a, "mode", 2)?.unwrap_or_else(|| "rw".into());
            if mode != "rw" && mode != "ro" {
                return Err(ApiError::bad_request(
                    "Invalid request to attach volume with an invalid mode. Attaching mode should be 'rw' or 'ro'",
                ));
            }
            if v.readonly && mode == "rw" {
                return Err(ApiError::bad_request(format!(
                    "Invalid volume: Volume {} is read-only; attach it with mode ro.",
                    v.id
                )));
            }
            let list = db.attachments_of(&v.id)?;
            let at = match list.into_iter().find(|x| x.attach_status == "reserved") {
                Some(x) => x,
                None => db.reserve_attachment(
                    &NewAttachment {
                        id: basalt_db::new_uuid().map_err(|e| ApiError::internal(e.to_string()))?,
                        volume_id: v.id.clone(),
                        instance_uuid: instance.clone(),
                        attached_host: host_name.clone(),
                        mountpoint: mountpoint.clone(),
                        attach_mode: mode.clone(),
                    },
                    &attachable(&v),
                )?,
            };
            db.update_attachment(
                &at.id,
                &["reserved", "attaching"],
                &AttachmentChange {
                    attach_status: Some("attached".into()),
                    instance_uuid: Some(instance),
                    attached_host: Some(host_name),
                    mountpoint: Some(mountpoint),
                    attach_mode: Some(mode),
                    attach_time: Some(Timestamp::now()),
                    ..AttachmentChange::default()
                },
            )?;
            accepted()
        }
        "os-detach" | "os-force_detach" => {
            let wanted = body::opt_str(a, "attachment_id", 36)?;
            let list = db.attachments_of(&v.id)?;
            let targets: Vec<Attachment> = match &wanted {
                Some(id) => list.into_iter().filter(|x| &x.id == id).collect(),
                None if list.len() <= 1 => list,
                None => {
                    return Err(ApiError::bad_request(format!(
                        "Invalid volume: Volume {} has several attachments; name one (attachment_id).",
                        v.id
                    )));
                }
            };
            if targets.is_empty() {
                return Err(ApiError::new(
                    if wanted.is_some() {
                        StatusCode::NOT_FOUND
                    } else {
                        StatusCode::BAD_REQUEST
                    },
                    format!("Invalid volume: Volume {} is not attached.", v.id),
                ));
            }
            if name == "os-force_detach"
                && let Some(Value::Object(c)) = a.get("connector")
            {
                disconnect(state, &v, c)?;
            }
            for t in &targets {
                detach(state, t)?;
            }
            accepted()
        }
        "os-initialize_connection" => {
            let Some(c) = connector_of(a)? else {
                return Err(ApiError::bad_request("Must specify 'connector'"));
            };
            let info = connect(state, &v, &c, "rw")?;
            let _ = ctx;
            Ok(axum::Json(json!({"connection_info": info})).into_response())
        }
        "os-terminate_connection" => {
            let Some(c) = connector_of(a)? else {
                return Err(ApiError::bad_request("Must specify 'connector'"));
            };
            disconnect(state, &v, &c)?;
            accepted()
        }
        other => Err(ApiError::bad_request(format!(
            "There is no such action: {other}"
        ))),
    }
}
