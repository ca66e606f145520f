//! Resource views: exactly the fields Cinder's view builders and controller extensions put
//! in at each microversion (`cinder/api/v3/views/volumes.py`, `views/snapshots.py` and the
//! `os-vol-*` extensions), since tempest validates them against strict schemas.

use std::collections::BTreeMap;

use basalt_db::{Snapshot, Volume, VolumeType};
use serde_json::{Map, Value, json};

use crate::ApiState;
use crate::ctx::Ctx;

/// What one request's views share: volume type names by id (loaded once), and the policy's
/// answers for the volume extension fields per project (a list of 1,000 volumes of one
/// project asks the policy three times, not 3,000).
#[derive(Debug, Default)]
pub struct TypeNames {
    names: BTreeMap<String, String>,
    rights: std::cell::RefCell<BTreeMap<String, [bool; 3]>>,
}

/// The policy rules of the volume extension fields: host, migration status, tenant.
const EXTENSION_RULES: [&str; 3] = [
    "volume_extension:volume_host_attribute",
    "volume_extension:volume_mig_status_attribute",
    "volume_extension:volume_tenant_attribute",
];

impl TypeNames {
    /// Every type's name.
    pub fn load(state: &ApiState) -> TypeNames {
        TypeNames {
            names: state
                .db()
                .list_volume_types(None)
                .unwrap_or_default()
                .into_iter()
                .map(|t: VolumeType| (t.id, t.name))
                .collect(),
            rights: Default::default(),
        }
    }

    /// Whether the caller may see each extension field of `project`'s volumes.
    fn rights(&self, ctx: &Ctx, state: &ApiState, project: &str) -> [bool; 3] {
        if let Some(r) = self.rights.borrow().get(project) {
            return *r;
        }
        let r = EXTENSION_RULES.map(|rule| ctx.allowed(state, rule, project));
        self.rights.borrow_mut().insert(project.to_owned(), r);
        r
    }

    fn name(&self, id: Option<&str>) -> Value {
        match id {
            Some(id) => json!(self.names.get(id).cloned().unwrap_or_else(|| id.to_owned())),
            None => Value::Null,
        }
    }
}

/// The status Cinder shows for an internal one.
pub fn shown_status(s: &str) -> &str {
    match s {
        "managing" => "creating",
        "error_managing" => "error",
        "error_managing_deleting" => "deleting",
        other => other,
    }
}

/// A timestamp or null.
pub fn time(t: Option<basalt_db::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(t.to_string()))
}

/// A volume's metadata as Cinder shows it: the user's keys, plus the `readonly` admin
/// metadata (`"True"`/`"False"`) once the read-only flag has been set
/// (`add_visible_admin_metadata`).
pub fn visible_metadata(v: &Volume) -> basalt_db::Metadata {
    let mut m = v.metadata.clone();
    if v.readonly_set {
        m.insert(
            "readonly".into(),
            if v.readonly { "True" } else { "False" }.into(),
        );
    }
    m
}

/// The summary view of lists: id, name, links.
pub fn volume_summary(ctx: &Ctx, v: &Volume) -> Value {
    json!({"id": v.id, "name": v.name, "links": ctx.links("volumes", &v.id)})
}

/// Which of Cinder's views an answer is. The `os-vol-*` and
/// `os-extended-snapshot-attributes` controller extensions extend only `show` and `detail`
/// (the detailed list), so create and update answers lack their fields; a snapshot list
/// without details is the summary view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The snapshot summary (`GET /snapshots`).
    Summary,
    /// The view builder's detail alone (create, update).
    Detail,
    /// The detail with the controller extensions (show, detailed list).
    Extended,
}

/// The detail view at the request's microversion. `attachments` are the `attachments` items
/// (attached ones only); `view` is [`View::Extended`] for show and the detailed list.
pub fn volume_detail(
    ctx: &Ctx,
    state: &ApiState,
    v: &Volume,
    attachments: Vec<Value>,
    types: &TypeNames,
    view: View,
) -> Value {
    let mv = ctx.version;
    let mut o = json!({
        "id": v.id,
        "name": v.name,
        "description": v.description,
        "status": shown_status(&v.status),
        "size": v.size_gb,
        "availability_zone": v.availability_zone,
        "created_at": v.created_at.to_string(),
        "updated_at": time(v.updated_at),
        "volume_type": types.name(v.volume_type_id.as_deref()),
        "snapshot_id": v.snapshot_id,
        "source_volid": v.source_volid,
        "metadata": visible_metadata(v),
        "links": ctx.links("volumes", &v.id),
        "user_id": v.user_id,
        "bootable": if v.bootable { "true" } else { "false" },
        "encrypted": false,
        "replication_status": "disabled",
        "consistencygroup_id": null,
        "multiattach": v.multiattach,
        "attachments": attachments,
    });
    let Some(m) = o.as_object_mut() else {
        return o;
    };
    if ctx.is_admin() {
        m.insert("migration_status".into(), json!(v.migration_status));
    }
    if view == View::Extended {
        volume_extensions(ctx, state, v, types, m);
    }
    if mv.at_least(13) {
        m.insert("group_id".into(), Value::Null);
    }
    if mv.at_least(21) && ctx.is_admin() {
        m.insert("provider_id".into(), Value::Null);
    }
    if mv.at_least(48) {
        // Every Basalt target serves one volume: no shared targets.
        m.insert("shared_targets".into(), json!(false));
        m.insert("service_uuid".into(), Value::Null);
    }
    if mv.at_least(61) && ctx.is_admin() {
        m.insert("cluster_name".into(), Value::Null);
    }
    if mv.at_least(63) {
        m.insert("volume_type_id".into(), json!(v.volume_type_id));
    }
    if mv.at_least(65) {
        m.insert("consumes_quota".into(), json!(v.use_quota));
    }
    o
}

/// The `os-vol-host-attr`, `os-vol-mig-status-attr` and `os-vol-tenant-attr` extensions of
/// show and the detailed list, each as its policy allows.
fn volume_extensions(
    ctx: &Ctx,
    state: &ApiState,
    v: &Volume,
    types: &TypeNames,
    m: &mut Map<String, Value>,
) {
    let [host, migration, tenant] = types.rights(ctx, state, &v.project_id);
    if host {
        m.insert("os-vol-host-attr:host".into(), json!(v.host));
    }
    if migration {
        m.insert(
            "os-vol-mig-status-attr:migstat".into(),
            json!(v.migration_status),
        );
        m.insert("os-vol-mig-status-attr:name_id".into(), Value::Null);
    }
    if tenant {
        m.insert("os-vol-tenant-attr:tenant_id".into(), json!(v.project_id));
    }
}

/// A snapshot's view: the summary for `GET /snapshots`; the v3 detail (3.14
/// `group_snapshot_id`, 3.41 `user_id`, 3.65 `consumes_quota`) for create and update; that and
/// the `os-extended-snapshot-attributes` extension for show and the detailed list.
pub fn snapshot(ctx: &Ctx, state: &ApiState, s: &Snapshot, view: View) -> Value {
    let mv = ctx.version;
    let mut o = json!({
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "status": s.status,
        "size": s.size_gb,
        "volume_id": s.volume_id,
        "metadata": s.metadata,
        "created_at": s.created_at.to_string(),
        "updated_at": time(s.updated_at),
    });
    let Some(m) = o.as_object_mut() else {
        return o;
    };
    if view == View::Summary {
        return o;
    }
    if view == View::Extended
        && ctx.allowed(
            state,
            "volume_extension:extended_snapshot_attributes",
            &s.project_id,
        )
    {
        m.insert(
            "os-extended-snapshot-attributes:progress".into(),
            json!(s.progress),
        );
        m.insert(
            "os-extended-snapshot-attributes:project_id".into(),
            json!(s.project_id),
        );
    }
    if mv.at_least(14) {
        m.insert("group_snapshot_id".into(), Value::Null);
    }
    if mv.at_least(41) {
        m.insert("user_id".into(), json!(s.user_id));
    }
    if mv.at_least(65) {
        m.insert("consumes_quota".into(), json!(s.use_quota));
    }
    o
}
