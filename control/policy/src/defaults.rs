//! Every rule Cinder registers, with its current default.
//!
//! This is what `cinder.policies.list_rules()` returns today: the legacy and Xena base
//! rules (the Yoga system-scope rules are defined in `cinder/policies/base.py` but not
//! listed, so they are not active), then each API's rules in Cinder's order. Rules
//! that Cinder declares with a `deprecated_rule` are taken at their current check
//! string only; `enforce_new_defaults` is true in oslo.policy now, so the deprecated
//! strings are not OR'd in.
//!
//! The descriptions are Basalt's own, one line each.

/// A registered rule: its name, its default check string and what it guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RuleDefault {
    /// The rule name, e.g. `volume:create`.
    pub(crate) name: &'static str,
    /// Its default check string.
    pub(crate) check: &'static str,
    /// One line on what it guards.
    pub(crate) description: &'static str,
}

const fn rule(name: &'static str, check: &'static str, description: &'static str) -> RuleDefault {
    RuleDefault {
        name,
        check,
        description,
    }
}

/// Cinder's persona for writes: any admin, or a member of the target's project.
const MEMBER: &str = "rule:xena_system_admin_or_project_member";
/// Cinder's persona for reads: any admin, or a reader of the target's project.
const READER: &str = "rule:xena_system_admin_or_project_reader";
/// Administrators only.
const ADMIN_API: &str = "rule:admin_api";

/// The table, in Cinder's registration order.
pub(crate) static RULES: &[RuleDefault] = &[
    // cinder/policies/base.py
    rule(
        "admin_or_owner",
        "is_admin:True or (role:admin and is_admin_project:True) or project_id:%(project_id)s",
        "Legacy owner rule: a cloud admin, or any token scoped to the resource's project (kept for old overrides).",
    ),
    rule(
        "system_or_domain_or_project_admin",
        "(role:admin and system_scope:all) or (role:admin and domain_id:%(domain_id)s) or (role:admin and project_id:%(project_id)s)",
        "Legacy: the admin role with system scope, or in the target's domain, or in the target's project.",
    ),
    rule(
        "context_is_admin",
        "role:admin",
        "What makes a request context an administrator's (the is_admin flag).",
    ),
    rule(
        "admin_api",
        "is_admin:True or (role:admin and is_admin_project:True)",
        "Base rule of the administrator-only APIs.",
    ),
    rule(
        "xena_system_admin_or_project_reader",
        "(role:admin) or (role:reader and project_id:%(project_id)s)",
        "Base rule for reads: any admin, or a reader of the resource's own project.",
    ),
    rule(
        "xena_system_admin_or_project_member",
        "(role:admin) or (role:member and project_id:%(project_id)s)",
        "Base rule for writes: any admin, or a member of the resource's own project.",
    ),
    // oslo's policy_default_rule; Cinder registers no `default`, so references to
    // undefined rules are false there, as they are here until an override changes it.
    rule(
        "default",
        "!",
        "Stands in for any rule: reference that names no defined rule (oslo's policy_default_rule); denies unless overridden.",
    ),
    // cinder/policies/attachments.py
    rule(
        "volume:attachment_create",
        MEMBER,
        "Create a volume attachment (POST /attachments).",
    ),
    rule(
        "volume:attachment_update",
        MEMBER,
        "Update a volume attachment with the connector (PUT /attachments/{id}).",
    ),
    rule(
        "volume:attachment_delete",
        MEMBER,
        "Delete a volume attachment (DELETE /attachments/{id}).",
    ),
    rule(
        "volume:attachment_complete",
        MEMBER,
        "Mark an attachment complete, the volume becoming in-use (os-complete).",
    ),
    rule(
        "volume:multiattach_bootable_volume",
        MEMBER,
        "Attach a bootable volume to more than one server.",
    ),
    // cinder/policies/messages.py
    rule("message:get_all", READER, "List user messages."),
    rule("message:get", READER, "Show one user message."),
    rule("message:delete", MEMBER, "Delete a user message."),
    // cinder/policies/clusters.py
    rule(
        "clusters:get_all",
        ADMIN_API,
        "List clusters, in summary or detail.",
    ),
    rule("clusters:get", ADMIN_API, "Show one cluster."),
    rule("clusters:update", ADMIN_API, "Enable or disable a cluster."),
    // cinder/policies/workers.py
    rule(
        "workers:cleanup",
        ADMIN_API,
        "Ask services to clean up resources left by failed workers (POST /workers/cleanup).",
    ),
    // cinder/policies/snapshot_metadata.py
    rule(
        "volume:get_snapshot_metadata",
        READER,
        "Read a snapshot's metadata, all of it or one key.",
    ),
    rule(
        "volume:update_snapshot_metadata",
        MEMBER,
        "Set or replace a snapshot's metadata, all of it or one key.",
    ),
    rule(
        "volume:delete_snapshot_metadata",
        MEMBER,
        "Remove one key of a snapshot's metadata.",
    ),
    // cinder/policies/snapshots.py
    rule(
        "volume:get_all_snapshots",
        READER,
        "List snapshots, in summary or detail.",
    ),
    rule(
        "volume_extension:extended_snapshot_attributes",
        READER,
        "Include progress and project attributes when showing or listing snapshots.",
    ),
    rule(
        "volume:create_snapshot",
        MEMBER,
        "Create a snapshot of a volume.",
    ),
    rule("volume:get_snapshot", READER, "Show one snapshot."),
    rule(
        "volume:update_snapshot",
        MEMBER,
        "Change a snapshot's name or description.",
    ),
    rule("volume:delete_snapshot", MEMBER, "Delete a snapshot."),
    // cinder/policies/snapshot_actions.py
    rule(
        "volume_extension:snapshot_admin_actions:reset_status",
        ADMIN_API,
        "Force a snapshot's status field (os-reset_status).",
    ),
    rule(
        "snapshot_extension:snapshot_actions:update_snapshot_status",
        MEMBER,
        "Report a snapshot's status and progress (used by Nova for assisted snapshots).",
    ),
    rule(
        "volume_extension:snapshot_admin_actions:force_delete",
        ADMIN_API,
        "Delete a snapshot whatever its status (os-force_delete).",
    ),
    // cinder/policies/manageable_snapshots.py
    rule(
        "snapshot_extension:list_manageable",
        ADMIN_API,
        "List back-end snapshots that could be brought under management.",
    ),
    rule(
        "snapshot_extension:snapshot_manage",
        ADMIN_API,
        "Bring an existing back-end snapshot under management.",
    ),
    rule(
        "snapshot_extension:snapshot_unmanage",
        ADMIN_API,
        "Forget a snapshot without deleting it on the back end (os-unmanage).",
    ),
    // cinder/policies/backups.py
    rule(
        "backup:get_all",
        READER,
        "List backups, in summary or detail.",
    ),
    rule(
        "backup:backup_project_attribute",
        ADMIN_API,
        "Include the owning project when showing or listing backups.",
    ),
    rule("backup:create", MEMBER, "Create a backup of a volume."),
    rule("backup:get", READER, "Show one backup."),
    rule(
        "backup:update",
        MEMBER,
        "Change a backup's name or description.",
    ),
    rule("backup:delete", MEMBER, "Delete a backup."),
    rule(
        "backup:restore",
        MEMBER,
        "Restore a backup into a new or existing volume.",
    ),
    rule(
        "backup:backup-import",
        ADMIN_API,
        "Import a backup record exported elsewhere.",
    ),
    rule(
        "backup:export-import",
        ADMIN_API,
        "Export a backup's record so that another deployment can import it.",
    ),
    // cinder/policies/backup_actions.py
    rule(
        "volume_extension:backup_admin_actions:reset_status",
        ADMIN_API,
        "Force a backup's status field (os-reset_status).",
    ),
    rule(
        "volume_extension:backup_admin_actions:force_delete",
        ADMIN_API,
        "Delete a backup whatever its status (os-force_delete).",
    ),
    // cinder/policies/groups.py
    rule("group:get_all", READER, "List generic volume groups."),
    rule("group:create", MEMBER, "Create a generic volume group."),
    rule("group:get", READER, "Show one generic volume group."),
    rule(
        "group:update",
        MEMBER,
        "Change a group's name, description or member volumes.",
    ),
    rule(
        "group:group_project_attribute",
        ADMIN_API,
        "Include the owning project when showing or listing groups.",
    ),
    // cinder/policies/group_types.py
    rule(
        "group:group_types:create",
        ADMIN_API,
        "Create a group type.",
    ),
    rule(
        "group:group_types:update",
        ADMIN_API,
        "Update a group type.",
    ),
    rule(
        "group:group_types:delete",
        ADMIN_API,
        "Delete a group type.",
    ),
    rule(
        "group:access_group_types_specs",
        ADMIN_API,
        "Include group specs when showing a group type.",
    ),
    rule(
        "group:group_types_specs:get",
        ADMIN_API,
        "Show one spec of a group type.",
    ),
    rule(
        "group:group_types_specs:get_all",
        ADMIN_API,
        "List the specs of a group type.",
    ),
    rule(
        "group:group_types_specs:create",
        ADMIN_API,
        "Add specs to a group type.",
    ),
    rule(
        "group:group_types_specs:update",
        ADMIN_API,
        "Change one spec of a group type.",
    ),
    rule(
        "group:group_types_specs:delete",
        ADMIN_API,
        "Remove one spec of a group type.",
    ),
    // cinder/policies/group_snapshots.py
    rule(
        "group:get_all_group_snapshots",
        READER,
        "List group snapshots.",
    ),
    rule(
        "group:create_group_snapshot",
        MEMBER,
        "Snapshot every volume of a group together.",
    ),
    rule(
        "group:get_group_snapshot",
        READER,
        "Show one group snapshot.",
    ),
    rule(
        "group:delete_group_snapshot",
        MEMBER,
        "Delete a group snapshot.",
    ),
    rule(
        "group:update_group_snapshot",
        MEMBER,
        "Change a group snapshot's name or description.",
    ),
    rule(
        "group:group_snapshot_project_attribute",
        ADMIN_API,
        "Include the owning project when showing or listing group snapshots.",
    ),
    // cinder/policies/group_snapshot_actions.py
    rule(
        "group:reset_group_snapshot_status",
        ADMIN_API,
        "Force a group snapshot's status field.",
    ),
    // cinder/policies/group_actions.py
    rule(
        "group:delete",
        MEMBER,
        "Delete a group, and with delete-volumes its volumes too.",
    ),
    rule(
        "group:reset_status",
        ADMIN_API,
        "Force a group's status field.",
    ),
    rule(
        "group:enable_replication",
        MEMBER,
        "Turn on replication for a group.",
    ),
    rule(
        "group:disable_replication",
        MEMBER,
        "Turn off replication for a group.",
    ),
    rule(
        "group:failover_replication",
        MEMBER,
        "Fail a replicated group over to its target.",
    ),
    rule(
        "group:list_replication_targets",
        MEMBER,
        "List the replication targets of a group.",
    ),
    // cinder/policies/qos_specs.py
    rule(
        "volume_extension:qos_specs_manage:get_all",
        ADMIN_API,
        "List QoS specs, or the types associated with one.",
    ),
    rule(
        "volume_extension:qos_specs_manage:get",
        ADMIN_API,
        "Show one QoS spec.",
    ),
    rule(
        "volume_extension:qos_specs_manage:create",
        ADMIN_API,
        "Create a QoS spec.",
    ),
    rule(
        "volume_extension:qos_specs_manage:update",
        ADMIN_API,
        "Change a QoS spec, or associate or disassociate it with volume types.",
    ),
    rule(
        "volume_extension:qos_specs_manage:delete",
        ADMIN_API,
        "Delete a QoS spec or some of its keys.",
    ),
    // cinder/policies/quota_class.py
    rule(
        "volume_extension:quota_classes:get",
        ADMIN_API,
        "Show a quota class.",
    ),
    rule(
        "volume_extension:quota_classes:update",
        ADMIN_API,
        "Change a quota class.",
    ),
    // cinder/policies/quotas.py
    rule(
        "volume_extension:quotas:show",
        READER,
        "Show a project's quotas, their defaults or their usage.",
    ),
    rule(
        "volume_extension:quotas:update",
        ADMIN_API,
        "Change a project's quotas.",
    ),
    rule(
        "volume_extension:quotas:delete",
        ADMIN_API,
        "Reset a project's quotas to the defaults.",
    ),
    // cinder/policies/capabilities.py
    rule(
        "volume_extension:capabilities",
        ADMIN_API,
        "Show what a back end reports it can do.",
    ),
    // cinder/policies/services.py
    rule(
        "volume_extension:services:index",
        ADMIN_API,
        "List the services and their state.",
    ),
    rule(
        "volume_extension:services:update",
        ADMIN_API,
        "Enable, disable, freeze, thaw or fail over services, or get and set their log levels.",
    ),
    rule(
        "volume:freeze_host",
        ADMIN_API,
        "Freeze a back end: no more management changes on it.",
    ),
    rule("volume:thaw_host", ADMIN_API, "Thaw a frozen back end."),
    rule(
        "volume:failover_host",
        ADMIN_API,
        "Fail a replicated back end over to its target.",
    ),
    // cinder/policies/scheduler_stats.py
    rule(
        "scheduler_extension:scheduler_stats:get_pools",
        ADMIN_API,
        "List the back-end pools the scheduler sees, with their capacity.",
    ),
    // cinder/policies/hosts.py
    rule(
        "volume_extension:hosts",
        ADMIN_API,
        "List, show or update the hosts of the deployment.",
    ),
    // cinder/policies/limits.py
    rule(
        "limits_extension:used_limits",
        READER,
        "Show absolute limits together with what is in use.",
    ),
    // cinder/policies/manageable_volumes.py
    rule(
        "volume_extension:list_manageable",
        ADMIN_API,
        "List back-end volumes that could be brought under management.",
    ),
    rule(
        "volume_extension:volume_manage",
        ADMIN_API,
        "Bring an existing back-end volume under management.",
    ),
    rule(
        "volume_extension:volume_unmanage",
        ADMIN_API,
        "Forget a volume without deleting it on the back end (os-unmanage).",
    ),
    // cinder/policies/volume_type.py
    rule(
        "volume_extension:type_create",
        ADMIN_API,
        "Create a volume type.",
    ),
    rule(
        "volume_extension:type_update",
        ADMIN_API,
        "Change a volume type.",
    ),
    rule(
        "volume_extension:type_delete",
        ADMIN_API,
        "Delete a volume type.",
    ),
    rule("volume_extension:type_get", READER, "Show one volume type."),
    rule(
        "volume_extension:type_get_all",
        READER,
        "List volume types.",
    ),
    rule(
        "volume_extension:access_types_extra_specs",
        READER,
        "Include extra specs when showing or listing volume types.",
    ),
    rule(
        "volume_extension:access_types_qos_specs_id",
        ADMIN_API,
        "Include the QoS spec id when showing or listing volume types.",
    ),
    rule(
        "volume_extension:volume_type_encryption",
        ADMIN_API,
        "Legacy rule for volume type encryption, kept because old overrides name it.",
    ),
    rule(
        "volume_extension:volume_type_encryption:create",
        ADMIN_API,
        "Add an encryption spec to a volume type.",
    ),
    rule(
        "volume_extension:volume_type_encryption:get",
        ADMIN_API,
        "Show a volume type's encryption spec or one of its keys.",
    ),
    rule(
        "volume_extension:volume_type_encryption:update",
        ADMIN_API,
        "Change a volume type's encryption spec.",
    ),
    rule(
        "volume_extension:volume_type_encryption:delete",
        ADMIN_API,
        "Remove a volume type's encryption spec.",
    ),
    // cinder/policies/volume_access.py
    rule(
        "volume_extension:volume_type_access",
        MEMBER,
        "Include the is_public flag when showing, listing or creating volume types.",
    ),
    rule(
        "volume_extension:volume_type_access:addProjectAccess",
        ADMIN_API,
        "Give a project access to a private volume type.",
    ),
    rule(
        "volume_extension:volume_type_access:removeProjectAccess",
        ADMIN_API,
        "Take a project's access to a private volume type away.",
    ),
    rule(
        "volume_extension:volume_type_access:get_all_for_type",
        ADMIN_API,
        "List the projects that may use a private volume type.",
    ),
    // cinder/policies/volume_actions.py
    rule("volume:extend", MEMBER, "Grow a volume (os-extend)."),
    rule(
        "volume:extend_attached_volume",
        MEMBER,
        "Grow a volume that is attached (os-extend on an in-use volume).",
    ),
    rule(
        "volume_extension:volume_admin_actions:extend_volume_completion",
        ADMIN_API,
        "Report the outcome of an extend to finish it (os-extend_volume_completion).",
    ),
    rule(
        "volume:revert_to_snapshot",
        MEMBER,
        "Roll a volume back to its latest snapshot (revert).",
    ),
    rule(
        "volume_extension:volume_admin_actions:reset_status",
        ADMIN_API,
        "Force a volume's status fields (os-reset_status).",
    ),
    rule(
        "volume:retype",
        MEMBER,
        "Change a volume's type, migrating it if needed (os-retype).",
    ),
    rule(
        "volume:update_readonly_flag",
        MEMBER,
        "Set or clear a volume's read-only flag (os-update_readonly_flag).",
    ),
    rule(
        "volume_extension:volume_admin_actions:force_delete",
        ADMIN_API,
        "Delete a volume whatever its status (os-force_delete).",
    ),
    rule(
        "volume_extension:volume_actions:upload_public",
        ADMIN_API,
        "Upload a volume to the image service as a public image.",
    ),
    rule(
        "volume_extension:volume_actions:upload_image",
        MEMBER,
        "Upload a volume to the image service (os-volume_upload_image).",
    ),
    rule(
        "volume_extension:volume_admin_actions:force_detach",
        ADMIN_API,
        "Detach a volume whatever its state (os-force_detach).",
    ),
    rule(
        "volume_extension:volume_admin_actions:migrate_volume",
        ADMIN_API,
        "Move a volume to another host or pool (os-migrate_volume).",
    ),
    rule(
        "volume_extension:volume_admin_actions:migrate_volume_completion",
        ADMIN_API,
        "Finish a volume migration (os-migrate_volume_completion).",
    ),
    rule(
        "volume_extension:volume_actions:initialize_connection",
        MEMBER,
        "Export a volume to a connector and return the connection info (os-initialize_connection).",
    ),
    rule(
        "volume_extension:volume_actions:terminate_connection",
        MEMBER,
        "Remove a connector's export of a volume (os-terminate_connection).",
    ),
    rule(
        "volume_extension:volume_actions:roll_detaching",
        MEMBER,
        "Put a detaching volume back to in-use (os-roll_detaching).",
    ),
    rule(
        "volume_extension:volume_actions:reserve",
        MEMBER,
        "Reserve a volume ahead of attaching it (os-reserve).",
    ),
    rule(
        "volume_extension:volume_actions:unreserve",
        MEMBER,
        "Release a reservation on a volume (os-unreserve).",
    ),
    rule(
        "volume_extension:volume_actions:begin_detaching",
        MEMBER,
        "Mark a volume as detaching (os-begin_detaching).",
    ),
    rule(
        "volume_extension:volume_actions:attach",
        MEMBER,
        "Record that a volume is attached (os-attach).",
    ),
    rule(
        "volume_extension:volume_actions:detach",
        MEMBER,
        "Record that a volume is detached (os-detach).",
    ),
    rule(
        "volume:reimage",
        MEMBER,
        "Write an image over an available or errored volume (os-reimage).",
    ),
    rule(
        "volume:reimage_reserved",
        MEMBER,
        "Write an image over a reserved volume (os-reimage).",
    ),
    // cinder/policies/volume_transfer.py
    rule("volume:get_all_transfers", READER, "List volume transfers."),
    rule(
        "volume:create_transfer",
        MEMBER,
        "Offer a volume for transfer to another project.",
    ),
    rule("volume:get_transfer", READER, "Show one volume transfer."),
    rule(
        "volume:accept_transfer",
        MEMBER,
        "Accept a volume transfer into the caller's project.",
    ),
    rule(
        "volume:delete_transfer",
        MEMBER,
        "Withdraw a volume transfer.",
    ),
    // cinder/policies/volume_metadata.py
    rule(
        "volume:get_volume_metadata",
        READER,
        "Read a volume's metadata, all of it or one key, or its image metadata.",
    ),
    rule(
        "volume:create_volume_metadata",
        MEMBER,
        "Add metadata keys to a volume.",
    ),
    rule(
        "volume:update_volume_metadata",
        MEMBER,
        "Replace a volume's metadata or change one key.",
    ),
    rule(
        "volume:delete_volume_metadata",
        MEMBER,
        "Remove one key of a volume's metadata.",
    ),
    rule(
        "volume_extension:volume_image_metadata:show",
        READER,
        "Include image metadata when showing or listing volumes.",
    ),
    rule(
        "volume_extension:volume_image_metadata:set",
        MEMBER,
        "Set image metadata keys on a volume (os-set_image_metadata).",
    ),
    rule(
        "volume_extension:volume_image_metadata:remove",
        MEMBER,
        "Remove an image metadata key from a volume (os-unset_image_metadata).",
    ),
    rule(
        "volume:update_volume_admin_metadata",
        ADMIN_API,
        "Write a volume's admin metadata, as readonly-flag changes and attaches do.",
    ),
    // cinder/policies/type_extra_specs.py
    rule(
        "volume_extension:types_extra_specs:index",
        READER,
        "List the extra specs of a volume type.",
    ),
    rule(
        "volume_extension:types_extra_specs:create",
        ADMIN_API,
        "Add extra specs to a volume type.",
    ),
    rule(
        "volume_extension:types_extra_specs:show",
        READER,
        "Show one extra spec of a volume type.",
    ),
    rule(
        "volume_extension:types_extra_specs:read_sensitive",
        ADMIN_API,
        "See the extra specs that reveal deployment details, such as the back-end name.",
    ),
    rule(
        "volume_extension:types_extra_specs:update",
        ADMIN_API,
        "Change one extra spec of a volume type.",
    ),
    rule(
        "volume_extension:types_extra_specs:delete",
        ADMIN_API,
        "Remove one extra spec of a volume type.",
    ),
    // cinder/policies/volumes.py
    rule("volume:create", MEMBER, "Create a volume."),
    rule(
        "volume:create_from_image",
        MEMBER,
        "Create a volume from an image.",
    ),
    rule("volume:get", READER, "Show one volume."),
    rule(
        "volume:get_all",
        READER,
        "List volumes, in summary or detail, or summarise them.",
    ),
    rule(
        "volume:update",
        MEMBER,
        "Change a volume's name, description or metadata, or its bootable flag.",
    ),
    rule("volume:delete", MEMBER, "Delete a volume."),
    rule(
        "volume:force_delete",
        ADMIN_API,
        "Delete a volume with force=true, whatever its status.",
    ),
    rule(
        "volume_extension:volume_host_attribute",
        ADMIN_API,
        "Include the host a volume lives on when showing or listing volumes.",
    ),
    rule(
        "volume_extension:volume_tenant_attribute",
        READER,
        "Include the owning project when showing or listing volumes.",
    ),
    rule(
        "volume_extension:volume_mig_status_attribute",
        ADMIN_API,
        "Include migration status fields when showing or listing volumes.",
    ),
    rule(
        "volume_extension:volume_encryption_metadata",
        READER,
        "Show a volume's encryption metadata.",
    ),
    rule(
        "volume:multiattach",
        MEMBER,
        "Create a volume that may be attached to several servers at once.",
    ),
    // cinder/policies/default_types.py
    rule(
        "volume_extension:default_set_or_update",
        ADMIN_API,
        "Set a project's default volume type.",
    ),
    rule(
        "volume_extension:default_get",
        ADMIN_API,
        "Show a project's default volume type.",
    ),
    rule(
        "volume_extension:default_get_all",
        ADMIN_API,
        "List every project's default volume type.",
    ),
    rule(
        "volume_extension:default_unset",
        ADMIN_API,
        "Remove a project's default volume type.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_descriptions_present() {
        let mut seen = HashSet::new();
        for r in RULES {
            assert!(seen.insert(r.name), "{} twice", r.name);
            assert!(!r.description.is_empty(), "{}", r.name);
            assert!(!r.description.contains('\n'), "{}", r.name);
        }
        // 167 from cinder.policies.list_rules(), plus `default`.
        assert_eq!(RULES.len(), 168);
    }

    #[test]
    fn every_reference_names_a_rule_in_the_table() {
        let names: HashSet<&str> = RULES.iter().map(|r| r.name).collect();
        for r in RULES {
            for word in r
                .check
                .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
            {
                if let Some(target) = word.strip_prefix("rule:") {
                    assert!(names.contains(target), "{} -> {target}", r.name);
                }
            }
        }
    }
}
