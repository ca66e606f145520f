//! The API's OpenAPI 3.1 document, served unauthenticated at `GET /openapi.json`.
//!
//! [`ROUTES`] is the one table of what the router serves: every (method, path) of the modules'
//! `routes()` and of [`crate::router`] itself, with its request body, success answers, faults,
//! query parameters and the microversion it needs. [`document`] turns it into the OpenAPI
//! document, writing every `/v3/...` path in both URL forms (`/v3/{project_id}/volumes` and
//! 3.67's `/v3/volumes`; the router accepts both at every microversion). The tests below hold
//! the table to the router: every row answers through a real route, and every route the
//! modules register is a row.
//!
//! The schemas describe what `body.rs` and the handlers accept and what `views.rs` and the
//! handlers answer. JSON Schema cannot say "from microversion 3.NN", so version-dependent
//! rules (3.53's strict volume bodies, fields added by later microversions) are written into
//! the descriptions, and the request schemas state the strict form.

use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::ctx::COLLECTIONS;
use crate::version;

/// Whether a route goes through the `/v3` pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Outside `/v3`: no microversion, no authentication.
    Open,
    /// Under `/v3/`: microversion negotiation, authentication, the version echo; served in
    /// both URL forms.
    V3,
}

/// A success answer of an operation.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// What it means.
    pub description: &'static str,
    /// The body's schema (a name under `components/schemas`); `None`: no body.
    pub schema: Option<&'static str>,
    /// The body's media type.
    pub media: &'static str,
}

/// The type of a query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// Any string.
    Str,
    /// A non-negative integer.
    Int,
    /// A boolean (`true`/`false`; the handlers take oslo's boolean spellings).
    Bool,
    /// A sort direction, `asc` or `desc`.
    Dir,
    /// A type list's `is_public`: a boolean or `none`.
    Public,
}

/// A query parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Its name.
    pub name: &'static str,
    /// Its type.
    pub ty: Ty,
    /// What it does.
    pub description: &'static str,
}

/// One operation the router serves.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `GET`, `POST`, `PUT` or `DELETE`.
    pub method: &'static str,
    /// The path as the router matches it (without the project segment), parameters named.
    pub path: &'static str,
    /// The pipeline or not.
    pub scope: Scope,
    /// The `operationId` (the project form gets `WithProjectId` appended).
    pub op: &'static str,
    /// The tag (resource family).
    pub tag: &'static str,
    /// A one-line summary.
    pub summary: &'static str,
    /// More, when there is more to say.
    pub notes: &'static str,
    /// The lowest `3.NN` the operation answers at (below it: 404); 0 for 3.0.
    pub since: u16,
    /// The request body's schema name.
    pub body: Option<&'static str>,
    /// The success answers.
    pub answers: &'static [Answer],
    /// Faults beyond the ones every `/v3` operation (and every one with a body) may answer.
    pub faults: &'static [u16],
    /// Query parameters, in groups.
    pub query: &'static [&'static [Param]],
}

const BASE: Route = Route {
    method: "GET",
    path: "/",
    scope: Scope::V3,
    op: "",
    tag: "",
    summary: "",
    notes: "",
    since: 0,
    body: None,
    answers: &[],
    faults: &[],
    query: &[],
};

const fn get(
    path: &'static str,
    op: &'static str,
    tag: &'static str,
    summary: &'static str,
) -> Route {
    Route {
        method: "GET",
        path,
        op,
        tag,
        summary,
        ..BASE
    }
}

const fn post(
    path: &'static str,
    op: &'static str,
    tag: &'static str,
    summary: &'static str,
) -> Route {
    Route {
        method: "POST",
        path,
        op,
        tag,
        summary,
        ..BASE
    }
}

const fn put(
    path: &'static str,
    op: &'static str,
    tag: &'static str,
    summary: &'static str,
) -> Route {
    Route {
        method: "PUT",
        path,
        op,
        tag,
        summary,
        ..BASE
    }
}

const fn delete(
    path: &'static str,
    op: &'static str,
    tag: &'static str,
    summary: &'static str,
) -> Route {
    Route {
        method: "DELETE",
        path,
        op,
        tag,
        summary,
        ..BASE
    }
}

const fn json_answer(status: u16, description: &'static str, schema: &'static str) -> Answer {
    Answer {
        status,
        description,
        schema: Some(schema),
        media: "application/json",
    }
}

const fn empty_answer(status: u16, description: &'static str) -> Answer {
    Answer {
        status,
        description,
        schema: None,
        media: "application/json",
    }
}

const fn p(name: &'static str, ty: Ty, description: &'static str) -> Param {
    Param {
        name,
        ty,
        description,
    }
}

const ACCEPTED: &[Answer] = &[empty_answer(
    202,
    "Accepted: the work goes on after the answer; the resource's status tells where it is.",
)];
const OK_EMPTY: &[Answer] = &[empty_answer(200, "Done (no body).")];
const NO_CONTENT: &[Answer] = &[empty_answer(204, "Done (no body).")];

macro_rules! ok {
    ($schema:literal) => {
        &[json_answer(200, "OK.", $schema)]
    };
    ($status:literal, $schema:literal) => {
        &[json_answer($status, "Accepted.", $schema)]
    };
}

const PAGING: &[Param] = &[
    p("limit", Ty::Int, "At most this many items (at most 1000)."),
    p(
        "marker",
        Ty::Str,
        "The id of the last item of the previous page (404 when it does not exist).",
    ),
    p("offset", Ty::Int, "Items to skip."),
    p(
        "sort",
        Ty::Str,
        "`key[:asc|desc][,key[:asc|desc]...]` (default direction desc); not with sort_key or sort_dir.",
    ),
    p("sort_key", Ty::Str, "Deprecated: one sort key."),
    p("sort_dir", Ty::Dir, "Deprecated: `asc` or `desc`."),
];

const COUNT: &[Param] = &[p(
    "with_count",
    Ty::Bool,
    "3.45: add `count`, the number of items matching the filters (400 before 3.45).",
)];

const TENANCY: &[Param] = &[
    p(
        "all_tenants",
        Ty::Bool,
        "Admin: items of every project (ignored for others).",
    ),
    p(
        "project_id",
        Ty::Str,
        "Admin: items of this project (ignored for others).",
    ),
];

const VOLUME_FILTERS: &[Param] = &[
    p(
        "name",
        Ty::Str,
        "Exact name (`name~` from 3.34: substring).",
    ),
    p("status", Ty::Str, "Status."),
    p(
        "metadata",
        Ty::Str,
        "A JSON object (single quotes allowed): every pair must match.",
    ),
    p("bootable", Ty::Bool, "Bootable or not."),
    p("availability_zone", Ty::Str, "Availability zone."),
    p(
        "size",
        Ty::Int,
        "Size in GiB (3.31; before it, ignored like every unknown filter).",
    ),
    p(
        "created_at",
        Ty::Str,
        "3.60: `[gt|gte|eq|neq|lt|lte:]<ISO 8601>[,...]`.",
    ),
    p(
        "updated_at",
        Ty::Str,
        "3.60: `[gt|gte|eq|neq|lt|lte:]<ISO 8601>[,...]`.",
    ),
    p(
        "group_id",
        Ty::Str,
        "Basalt has no groups: a value matches nothing.",
    ),
    p(
        "migration_status",
        Ty::Str,
        "Basalt does not migrate: a value matches nothing.",
    ),
    p(
        "consumes_quota",
        Ty::Bool,
        "3.65: `false` matches nothing (every volume consumes quota).",
    ),
];

const SNAPSHOT_FILTERS: &[Param] = &[
    p(
        "name",
        Ty::Str,
        "Exact name (`name~` from 3.34: substring).",
    ),
    p("status", Ty::Str, "Status."),
    p("volume_id", Ty::Str, "The snapshot's volume."),
    p(
        "metadata",
        Ty::Str,
        "A JSON object (single quotes allowed): every pair must match.",
    ),
    p("availability_zone", Ty::Str, "Availability zone."),
    p("consumes_quota", Ty::Bool, "3.65: `false` matches nothing."),
];

const ATTACHMENT_FILTERS: &[Param] = &[
    p("volume_id", Ty::Str, "The attachment's volume."),
    p("status", Ty::Str, "Attach status."),
    p("attach_status", Ty::Str, "Attach status."),
    p("instance_id", Ty::Str, "The server."),
];

const TYPE_FILTERS: &[Param] = &[
    p(
        "is_public",
        Ty::Public,
        "Admin: `true`, `false` or `none` (both); default public ones and the project's private ones.",
    ),
    p(
        "extra_specs",
        Ty::Str,
        "3.52: a JSON object of extra specs every listed type has.",
    ),
];

const MESSAGE_FILTERS: &[Param] = &[
    p(
        "resource_uuid",
        Ty::Str,
        "The resource the message is about.",
    ),
    p("resource_type", Ty::Str, "`VOLUME`, `SNAPSHOT`, ..."),
    p("event_id", Ty::Str, "The event id."),
    p("request_id", Ty::Str, "The request that caused it."),
    p("message_level", Ty::Str, "`ERROR`."),
    p("limit", Ty::Int, "3.5: at most this many."),
    p("marker", Ty::Str, "3.5: the last id of the previous page."),
    p("offset", Ty::Int, "3.5: messages to skip."),
    p("all_tenants", Ty::Bool, "Admin: every project's messages."),
];

const TRANSFER_QUERY: &[Param] = &[
    p("all_tenants", Ty::Bool, "Admin: every project's transfers."),
    p("limit", Ty::Int, "3.59: at most this many."),
    p("marker", Ty::Str, "3.59: the last id of the previous page."),
    p("offset", Ty::Int, "3.59: transfers to skip."),
];

const VOLUME_LIST: &[&[Param]] = &[PAGING, COUNT, TENANCY, VOLUME_FILTERS];
const SNAPSHOT_LIST: &[&[Param]] = &[PAGING, COUNT, TENANCY, SNAPSHOT_FILTERS];
const ATTACHMENT_LIST: &[&[Param]] = &[PAGING, TENANCY, ATTACHMENT_FILTERS];

const ACTION_NOTES_VOLUME: &str = "One action per body. 202 for `os-extend` (in-use from 3.42), \
`revert` (3.40; 404 before), `os-reset_status`, `os-force_delete`, `os-update_readonly_flag`, \
`os-reserve`, `os-unreserve`, `os-begin_detaching`, `os-roll_detaching`, `os-attach`, \
`os-detach`, `os-force_detach`, `os-terminate_connection`; 200 with no body for \
`os-set_bootable`; 200 with `connection_info` for `os-initialize_connection`. The image actions \
(`os-volume_upload_image`, `os-set_image_metadata`, `os-unset_image_metadata`, \
`os-show_image_metadata`, `os-reimage`) and `os-migrate_volume`, \
`os-migrate_volume_completion`, `os-retype`, `os-unmanage`, `os-extend_volume_completion` are \
answered 400 (not supported by Basalt); any other name is 400.";

const TRANSFER_NEW: &str = "The 3.55 form of `/os-volume-transfer` (404 before 3.55); \
`no_snapshots` is taken only here.";

/// Every operation the router serves.
pub const ROUTES: &[Route] = &[
    // ---- outside /v3
    Route {
        scope: Scope::Open,
        notes: "Always 300 Multiple Choices, as Cinder.",
        answers: &[json_answer(300, "The API versions.", "Versions")],
        ..get("/", "listVersions", "versions", "The API versions")
    },
    Route {
        scope: Scope::Open,
        answers: ok!("Versions"),
        ..get("/v3", "showV3", "versions", "The v3 version")
    },
    Route {
        scope: Scope::Open,
        answers: ok!("Versions"),
        ..get("/v3/", "showV3Slash", "versions", "The v3 version")
    },
    Route {
        scope: Scope::Open,
        answers: &[Answer {
            status: 200,
            description: "The service is up.",
            schema: Some("HealthOk"),
            media: "text/plain",
        }],
        ..get("/healthcheck", "healthcheck", "versions", "Health check")
    },
    Route {
        scope: Scope::Open,
        answers: ok!("OpenApiDocument"),
        ..get("/openapi.json", "openapi", "versions", "This document")
    },
    Route {
        scope: Scope::Open,
        answers: ok!("ImageVersions"),
        notes: "A stand-in image service with no images, for clients that look for one.",
        ..get("/image", "imageVersions", "image", "Image service versions")
    },
    Route {
        scope: Scope::Open,
        answers: ok!("ImageVersions"),
        ..get(
            "/image/",
            "imageVersionsSlash",
            "image",
            "Image service versions",
        )
    },
    Route {
        scope: Scope::Open,
        answers: ok!("ImageVersions"),
        ..get(
            "/image/versions",
            "imageVersionsList",
            "image",
            "Image service versions",
        )
    },
    Route {
        scope: Scope::Open,
        answers: ok!("ImageList"),
        ..get(
            "/image/v2/images",
            "listImages",
            "image",
            "Images (always none)",
        )
    },
    Route {
        scope: Scope::Open,
        answers: &[Answer {
            status: 404,
            description: "There are no images.",
            schema: Some("PlainText"),
            media: "text/plain",
        }],
        ..get(
            "/image/v2/images/{image_id}",
            "showImage",
            "image",
            "An image (always 404)",
        )
    },
    // ---- volumes
    Route {
        query: VOLUME_LIST,
        answers: ok!("VolumeList"),
        ..get(
            "/v3/volumes",
            "listVolumes",
            "volumes",
            "List volumes (summary)",
        )
    },
    Route {
        body: Some("VolumeCreateRequest"),
        answers: ok!(202, "VolumeShow"),
        faults: &[413],
        notes: "Placement runs after the answer (status `creating`, then `available` or `error`). \
413 `overLimit` when a quota would be exceeded.",
        ..post("/v3/volumes", "createVolume", "volumes", "Create a volume")
    },
    Route {
        query: VOLUME_LIST,
        answers: ok!("VolumeDetailList"),
        ..get(
            "/v3/volumes/detail",
            "listVolumesDetail",
            "volumes",
            "List volumes (detail)",
        )
    },
    Route {
        since: 12,
        query: &[TENANCY, VOLUME_FILTERS],
        answers: ok!("VolumeSummaryShow"),
        ..get(
            "/v3/volumes/summary",
            "volumeSummary",
            "volumes",
            "Total count and size of volumes",
        )
    },
    Route {
        answers: ok!("VolumeShow"),
        ..get(
            "/v3/volumes/{volume_id}",
            "showVolume",
            "volumes",
            "Show a volume",
        )
    },
    Route {
        body: Some("VolumeUpdateRequest"),
        answers: ok!("VolumeShow"),
        ..put(
            "/v3/volumes/{volume_id}",
            "updateVolume",
            "volumes",
            "Update a volume",
        )
    },
    Route {
        query: &[&[
            p("cascade", Ty::Bool, "Delete the volume's snapshots too."),
            p(
                "force",
                Ty::Bool,
                "3.23, admin: delete from any state but attached.",
            ),
        ]],
        answers: ACCEPTED,
        ..delete(
            "/v3/volumes/{volume_id}",
            "deleteVolume",
            "volumes",
            "Delete a volume",
        )
    },
    Route {
        body: Some("VolumeActionRequest"),
        answers: &[
            empty_answer(202, "Accepted (most actions)."),
            json_answer(
                200,
                "`os-initialize_connection`: the connection info; `os-set_bootable`: done, with no body.",
                "ConnectionInfoShow",
            ),
        ],
        faults: &[413],
        notes: ACTION_NOTES_VOLUME,
        ..post(
            "/v3/volumes/{volume_id}/action",
            "volumeAction",
            "volumes",
            "A volume action",
        )
    },
    Route {
        answers: ok!("MetadataShow"),
        ..get(
            "/v3/volumes/{volume_id}/metadata",
            "showVolumeMetadata",
            "volumes",
            "A volume's metadata",
        )
    },
    Route {
        body: Some("MetadataRequest"),
        answers: ok!("MetadataShow"),
        notes: "Merges the pairs into the metadata; answers all of it.",
        ..post(
            "/v3/volumes/{volume_id}/metadata",
            "mergeVolumeMetadata",
            "volumes",
            "Add volume metadata",
        )
    },
    Route {
        body: Some("MetadataRequest"),
        answers: ok!("MetadataShow"),
        notes: "Replaces the metadata; answers the new metadata.",
        ..put(
            "/v3/volumes/{volume_id}/metadata",
            "replaceVolumeMetadata",
            "volumes",
            "Replace volume metadata",
        )
    },
    Route {
        answers: ok!("MetaShow"),
        ..get(
            "/v3/volumes/{volume_id}/metadata/{key}",
            "showVolumeMetadataItem",
            "volumes",
            "One volume metadata item",
        )
    },
    Route {
        body: Some("MetaItemRequest"),
        answers: ok!("MetaShow"),
        notes: "The body's one key must be the URL's key (400 otherwise).",
        ..put(
            "/v3/volumes/{volume_id}/metadata/{key}",
            "setVolumeMetadataItem",
            "volumes",
            "Set one volume metadata item",
        )
    },
    Route {
        answers: OK_EMPTY,
        ..delete(
            "/v3/volumes/{volume_id}/metadata/{key}",
            "deleteVolumeMetadataItem",
            "volumes",
            "Delete one volume metadata item",
        )
    },
    // ---- snapshots
    Route {
        query: SNAPSHOT_LIST,
        answers: ok!("SnapshotList"),
        ..get(
            "/v3/snapshots",
            "listSnapshots",
            "snapshots",
            "List snapshots",
        )
    },
    Route {
        body: Some("SnapshotCreateRequest"),
        answers: ok!(202, "SnapshotShow"),
        faults: &[413],
        notes: "The volume must be available (or in-use with `force`, or at 3.66+). 413 when a \
quota would be exceeded.",
        ..post(
            "/v3/snapshots",
            "createSnapshot",
            "snapshots",
            "Create a snapshot",
        )
    },
    Route {
        query: SNAPSHOT_LIST,
        answers: ok!("SnapshotList"),
        ..get(
            "/v3/snapshots/detail",
            "listSnapshotsDetail",
            "snapshots",
            "List snapshots (detail)",
        )
    },
    Route {
        answers: ok!("SnapshotShow"),
        ..get(
            "/v3/snapshots/{snapshot_id}",
            "showSnapshot",
            "snapshots",
            "Show a snapshot",
        )
    },
    Route {
        body: Some("SnapshotUpdateRequest"),
        answers: ok!("SnapshotShow"),
        ..put(
            "/v3/snapshots/{snapshot_id}",
            "updateSnapshot",
            "snapshots",
            "Update a snapshot",
        )
    },
    Route {
        answers: ACCEPTED,
        ..delete(
            "/v3/snapshots/{snapshot_id}",
            "deleteSnapshot",
            "snapshots",
            "Delete a snapshot",
        )
    },
    Route {
        body: Some("SnapshotActionRequest"),
        answers: ACCEPTED,
        notes: "`os-reset_status`, `os-update_snapshot_status`, `os-force_delete`: 202. \
`os-unmanage` and any other name: 400.",
        ..post(
            "/v3/snapshots/{snapshot_id}/action",
            "snapshotAction",
            "snapshots",
            "A snapshot action",
        )
    },
    Route {
        answers: ok!("MetadataShow"),
        ..get(
            "/v3/snapshots/{snapshot_id}/metadata",
            "showSnapshotMetadata",
            "snapshots",
            "A snapshot's metadata",
        )
    },
    Route {
        body: Some("MetadataRequest"),
        answers: ok!("MetadataShow"),
        ..post(
            "/v3/snapshots/{snapshot_id}/metadata",
            "mergeSnapshotMetadata",
            "snapshots",
            "Add snapshot metadata",
        )
    },
    Route {
        body: Some("MetadataRequest"),
        answers: ok!("MetadataShow"),
        ..put(
            "/v3/snapshots/{snapshot_id}/metadata",
            "replaceSnapshotMetadata",
            "snapshots",
            "Replace snapshot metadata",
        )
    },
    Route {
        answers: ok!("MetaShow"),
        ..get(
            "/v3/snapshots/{snapshot_id}/metadata/{key}",
            "showSnapshotMetadataItem",
            "snapshots",
            "One snapshot metadata item",
        )
    },
    Route {
        body: Some("MetaItemRequest"),
        answers: ok!("MetaShow"),
        ..put(
            "/v3/snapshots/{snapshot_id}/metadata/{key}",
            "setSnapshotMetadataItem",
            "snapshots",
            "Set one snapshot metadata item",
        )
    },
    Route {
        answers: OK_EMPTY,
        ..delete(
            "/v3/snapshots/{snapshot_id}/metadata/{key}",
            "deleteSnapshotMetadataItem",
            "snapshots",
            "Delete one snapshot metadata item",
        )
    },
    // ---- attachments (3.27)
    Route {
        since: 27,
        query: ATTACHMENT_LIST,
        answers: ok!("AttachmentList"),
        ..get(
            "/v3/attachments",
            "listAttachments",
            "attachments",
            "List attachments",
        )
    },
    Route {
        since: 27,
        body: Some("AttachmentCreateRequest"),
        answers: ok!("AttachmentShow"),
        notes: "Reserves the volume; with a connector, also exports it and answers the connection \
info. `mode` needs 3.54.",
        ..post(
            "/v3/attachments",
            "createAttachment",
            "attachments",
            "Create an attachment",
        )
    },
    Route {
        since: 27,
        query: ATTACHMENT_LIST,
        answers: ok!("AttachmentDetailList"),
        ..get(
            "/v3/attachments/detail",
            "listAttachmentsDetail",
            "attachments",
            "List attachments (detail)",
        )
    },
    Route {
        since: 27,
        answers: ok!("AttachmentShow"),
        ..get(
            "/v3/attachments/{attachment_id}",
            "showAttachment",
            "attachments",
            "Show an attachment",
        )
    },
    Route {
        since: 27,
        body: Some("AttachmentUpdateRequest"),
        answers: ok!("AttachmentShow"),
        ..put(
            "/v3/attachments/{attachment_id}",
            "updateAttachment",
            "attachments",
            "Complete an attachment's connector",
        )
    },
    Route {
        since: 27,
        answers: ok!("AttachmentDetailList"),
        notes: "Answers the volume's remaining attachments.",
        ..delete(
            "/v3/attachments/{attachment_id}",
            "deleteAttachment",
            "attachments",
            "Delete an attachment",
        )
    },
    Route {
        since: 27,
        body: Some("AttachmentActionRequest"),
        answers: NO_CONTENT,
        notes: "`os-complete` (3.44; 404 before): the attachment is attached.",
        ..post(
            "/v3/attachments/{attachment_id}/action",
            "attachmentAction",
            "attachments",
            "Mark an attachment complete",
        )
    },
    // ---- volume types
    Route {
        query: &[PAGING, TYPE_FILTERS],
        answers: ok!("VolumeTypeList"),
        ..get("/v3/types", "listVolumeTypes", "types", "List volume types")
    },
    Route {
        body: Some("VolumeTypeCreateRequest"),
        answers: ok!("VolumeTypeShow"),
        faults: &[409],
        ..post(
            "/v3/types",
            "createVolumeType",
            "types",
            "Create a volume type",
        )
    },
    Route {
        answers: ok!("VolumeTypeShow"),
        ..get(
            "/v3/types/default",
            "showDefaultVolumeType",
            "types",
            "The default volume type",
        )
    },
    Route {
        answers: ok!("VolumeTypeShow"),
        ..get(
            "/v3/types/{volume_type_id}",
            "showVolumeType",
            "types",
            "Show a volume type",
        )
    },
    Route {
        body: Some("VolumeTypeUpdateRequest"),
        answers: ok!("VolumeTypeShow"),
        faults: &[409],
        ..put(
            "/v3/types/{volume_type_id}",
            "updateVolumeType",
            "types",
            "Update a volume type",
        )
    },
    Route {
        answers: ACCEPTED,
        notes: "400 for a default type or one still in use.",
        ..delete(
            "/v3/types/{volume_type_id}",
            "deleteVolumeType",
            "types",
            "Delete a volume type",
        )
    },
    Route {
        body: Some("VolumeTypeAccessRequest"),
        answers: ACCEPTED,
        faults: &[409],
        notes: "Private types only (400 for a public one).",
        ..post(
            "/v3/types/{volume_type_id}/action",
            "volumeTypeAction",
            "types",
            "Grant or revoke a project's access",
        )
    },
    Route {
        answers: ok!("VolumeTypeAccessList"),
        notes: "404 for a public type.",
        ..get(
            "/v3/types/{volume_type_id}/os-volume-type-access",
            "listVolumeTypeAccess",
            "types",
            "Projects with access to a private type",
        )
    },
    Route {
        answers: ok!("ExtraSpecsShow"),
        ..get(
            "/v3/types/{volume_type_id}/extra_specs",
            "listExtraSpecs",
            "types",
            "A type's extra specs",
        )
    },
    Route {
        body: Some("ExtraSpecsRequest"),
        answers: ok!("ExtraSpecsShow"),
        notes: "Answers the body. 400 while volumes use the type.",
        ..post(
            "/v3/types/{volume_type_id}/extra_specs",
            "createExtraSpecs",
            "types",
            "Set extra specs",
        )
    },
    Route {
        answers: ok!("ExtraSpecItem"),
        ..get(
            "/v3/types/{volume_type_id}/extra_specs/{key}",
            "showExtraSpec",
            "types",
            "One extra spec",
        )
    },
    Route {
        body: Some("ExtraSpecItem"),
        answers: ok!("ExtraSpecItem"),
        notes: "The body's one key must be the URL's key.",
        ..put(
            "/v3/types/{volume_type_id}/extra_specs/{key}",
            "updateExtraSpec",
            "types",
            "Set one extra spec",
        )
    },
    Route {
        answers: ACCEPTED,
        ..delete(
            "/v3/types/{volume_type_id}/extra_specs/{key}",
            "deleteExtraSpec",
            "types",
            "Delete one extra spec",
        )
    },
    Route {
        since: 62,
        answers: ok!("DefaultTypeList"),
        ..get(
            "/v3/default-types",
            "listDefaultTypes",
            "default-types",
            "Every project's default type",
        )
    },
    Route {
        since: 62,
        answers: ok!("DefaultTypeList"),
        ..get(
            "/v3/default-types/",
            "listDefaultTypesSlash",
            "default-types",
            "Every project's default type",
        )
    },
    Route {
        since: 62,
        answers: ok!("DefaultTypeShow"),
        ..get(
            "/v3/default-types/{target_project_id}",
            "showDefaultType",
            "default-types",
            "A project's default type",
        )
    },
    Route {
        since: 62,
        body: Some("DefaultTypeRequest"),
        answers: ok!("DefaultTypeShow"),
        ..put(
            "/v3/default-types/{target_project_id}",
            "setDefaultType",
            "default-types",
            "Set a project's default type",
        )
    },
    Route {
        since: 62,
        answers: NO_CONTENT,
        ..delete(
            "/v3/default-types/{target_project_id}",
            "unsetDefaultType",
            "default-types",
            "Unset a project's default type",
        )
    },
    // ---- quotas
    Route {
        query: &[&[p(
            "usage",
            Ty::Bool,
            "Show limit, in_use and reserved per resource.",
        )]],
        answers: ok!("QuotaSetShow"),
        ..get(
            "/v3/os-quota-sets/{target_project_id}",
            "showQuotaSet",
            "quotas",
            "A project's quotas",
        )
    },
    Route {
        body: Some("QuotaSetRequest"),
        answers: ok!("QuotaSetShow"),
        notes: "A limit below what is in use is 400.",
        ..put(
            "/v3/os-quota-sets/{target_project_id}",
            "updateQuotaSet",
            "quotas",
            "Set a project's quotas",
        )
    },
    Route {
        answers: OK_EMPTY,
        ..delete(
            "/v3/os-quota-sets/{target_project_id}",
            "deleteQuotaSet",
            "quotas",
            "Reset a project's quotas to the defaults",
        )
    },
    Route {
        answers: ok!("QuotaSetShow"),
        ..get(
            "/v3/os-quota-sets/{target_project_id}/defaults",
            "showDefaultQuotaSet",
            "quotas",
            "The default quotas",
        )
    },
    Route {
        answers: ok!("QuotaClassSetShow"),
        notes: "Admin only.",
        ..get(
            "/v3/os-quota-class-sets/{quota_class_name}",
            "showQuotaClassSet",
            "quotas",
            "A quota class",
        )
    },
    Route {
        body: Some("QuotaClassSetRequest"),
        answers: ok!("QuotaClassSetShow"),
        notes: "Only the `default` class can be set (400 for another).",
        ..put(
            "/v3/os-quota-class-sets/{quota_class_name}",
            "updateQuotaClassSet",
            "quotas",
            "Set the default quota class",
        )
    },
    // ---- services, pools, hosts
    Route {
        query: &[&[
            p("host", Ty::Str, "Only this host's services."),
            p(
                "binary",
                Ty::Str,
                "Only this binary (`cinder-volume`, `cinder-scheduler`).",
            ),
        ]],
        answers: ok!("ServiceList"),
        ..get(
            "/v3/os-services",
            "listServices",
            "services",
            "List services",
        )
    },
    Route {
        body: Some("ServiceChangeRequest"),
        answers: ok!("ServiceChange"),
        notes: "`enable`, `disable`, `disable-log-reason`: 200. `freeze`, `thaw`, \
`failover_host`, `failover` (3.26): 400 (Basalt back ends are not replicated). Other actions: 404.",
        ..put(
            "/v3/os-services/{action}",
            "updateService",
            "services",
            "Enable or disable a service",
        )
    },
    Route {
        query: &[&[
            p("detail", Ty::Bool, "Add each pool's capabilities."),
            p("name", Ty::Str, "3.28: this pool only."),
            p(
                "volume_type",
                Ty::Str,
                "3.35: pools that can take this type.",
            ),
        ]],
        answers: ok!("PoolList"),
        notes: "From 3.28 other query keys filter on capabilities; from 3.33 they are 400.",
        ..get(
            "/v3/scheduler-stats/get_pools",
            "getPools",
            "services",
            "Storage pools",
        )
    },
    Route {
        answers: ok!("Capabilities"),
        ..get(
            "/v3/capabilities/{host}",
            "showCapabilities",
            "services",
            "A back end's capabilities",
        )
    },
    Route {
        query: &[&[p("zone", Ty::Str, "Only hosts of this availability zone.")]],
        answers: ok!("HostList"),
        ..get("/v3/os-hosts", "listHosts", "services", "List hosts")
    },
    Route {
        answers: ok!("HostShow"),
        ..get(
            "/v3/os-hosts/{host}",
            "showHost",
            "services",
            "A volume host's usage per project",
        )
    },
    // ---- misc
    Route {
        answers: ok!("AvailabilityZoneList"),
        ..get(
            "/v3/os-availability-zone",
            "listAvailabilityZones",
            "misc",
            "Availability zones",
        )
    },
    Route {
        query: &[&[p(
            "project_id",
            Ty::Str,
            "3.39, admin: another project's limits.",
        )]],
        answers: ok!("Limits"),
        ..get(
            "/v3/limits",
            "showLimits",
            "misc",
            "Absolute limits and usage",
        )
    },
    Route {
        answers: ok!("ExtensionList"),
        ..get("/v3/extensions", "listExtensions", "misc", "Extensions")
    },
    // ---- messages (3.3)
    Route {
        since: 3,
        query: &[MESSAGE_FILTERS],
        answers: ok!("MessageList"),
        notes: "Other filter keys: 400.",
        ..get(
            "/v3/messages",
            "listMessages",
            "messages",
            "List user messages",
        )
    },
    Route {
        since: 3,
        answers: ok!("MessageShow"),
        ..get(
            "/v3/messages/{message_id}",
            "showMessage",
            "messages",
            "Show a user message",
        )
    },
    Route {
        since: 3,
        answers: NO_CONTENT,
        ..delete(
            "/v3/messages/{message_id}",
            "deleteMessage",
            "messages",
            "Delete a user message",
        )
    },
    // ---- transfers: /volume-transfers (3.55) and /os-volume-transfer
    Route {
        since: 55,
        notes: TRANSFER_NEW,
        query: &[TRANSFER_QUERY],
        answers: ok!("TransferList"),
        ..get(
            "/v3/volume-transfers",
            "listTransfers",
            "transfers",
            "List transfers",
        )
    },
    Route {
        since: 55,
        notes: TRANSFER_NEW,
        body: Some("TransferCreateRequest"),
        answers: ok!(202, "TransferShow"),
        ..post(
            "/v3/volume-transfers",
            "createTransfer",
            "transfers",
            "Create a transfer",
        )
    },
    Route {
        since: 55,
        notes: TRANSFER_NEW,
        query: &[TRANSFER_QUERY],
        answers: ok!("TransferList"),
        ..get(
            "/v3/volume-transfers/detail",
            "listTransfersDetail",
            "transfers",
            "List transfers (detail)",
        )
    },
    Route {
        since: 55,
        notes: TRANSFER_NEW,
        answers: ok!("TransferShow"),
        ..get(
            "/v3/volume-transfers/{transfer_id}",
            "showTransfer",
            "transfers",
            "Show a transfer",
        )
    },
    Route {
        since: 55,
        notes: TRANSFER_NEW,
        answers: ACCEPTED,
        ..delete(
            "/v3/volume-transfers/{transfer_id}",
            "deleteTransfer",
            "transfers",
            "Delete a transfer",
        )
    },
    Route {
        since: 55,
        notes: TRANSFER_NEW,
        body: Some("TransferAcceptRequest"),
        answers: ok!(202, "TransferShow"),
        faults: &[413],
        ..post(
            "/v3/volume-transfers/{transfer_id}/accept",
            "acceptTransfer",
            "transfers",
            "Accept a transfer",
        )
    },
    Route {
        query: &[TRANSFER_QUERY],
        answers: ok!("TransferList"),
        ..get(
            "/v3/os-volume-transfer",
            "listTransfersLegacy",
            "transfers",
            "List transfers",
        )
    },
    Route {
        body: Some("TransferCreateLegacyRequest"),
        answers: ok!(202, "TransferShow"),
        notes: "`no_snapshots` is 400 here (it needs /volume-transfers).",
        ..post(
            "/v3/os-volume-transfer",
            "createTransferLegacy",
            "transfers",
            "Create a transfer",
        )
    },
    Route {
        query: &[TRANSFER_QUERY],
        answers: ok!("TransferList"),
        ..get(
            "/v3/os-volume-transfer/detail",
            "listTransfersDetailLegacy",
            "transfers",
            "List transfers (detail)",
        )
    },
    Route {
        answers: ok!("TransferShow"),
        ..get(
            "/v3/os-volume-transfer/{transfer_id}",
            "showTransferLegacy",
            "transfers",
            "Show a transfer",
        )
    },
    Route {
        answers: ACCEPTED,
        ..delete(
            "/v3/os-volume-transfer/{transfer_id}",
            "deleteTransferLegacy",
            "transfers",
            "Delete a transfer",
        )
    },
    Route {
        body: Some("TransferAcceptRequest"),
        answers: ok!(202, "TransferShow"),
        faults: &[413],
        ..post(
            "/v3/os-volume-transfer/{transfer_id}/accept",
            "acceptTransferLegacy",
            "transfers",
            "Accept a transfer",
        )
    },
];

/// Faults every `/v3` operation may answer.
const V3_FAULTS: &[u16] = &[400, 401, 403, 404, 406, 503];
/// Faults every operation with a request body may answer too.
const BODY_FAULTS: &[u16] = &[413, 415];

/// A fault's status, its name (the body's one key) and its component name.
const FAULTS: &[(u16, &str, &str, &str)] = &[
    (
        400,
        "badRequest",
        "BadRequest",
        "Bad request: a malformed body, field, query, URL or `OpenStack-API-Version`, or an operation the resource's state refuses.",
    ),
    (
        401,
        "unauthorized",
        "Unauthorized",
        "No valid token (with `WWW-Authenticate`).",
    ),
    (
        403,
        "forbidden",
        "Forbidden",
        "The policy does not allow it.",
    ),
    (
        404,
        "itemNotFound",
        "NotFound",
        "No such resource (or not the caller's), or the microversion is below what the operation needs.",
    ),
    (
        406,
        "computeFault",
        "NotAcceptable",
        "The requested microversion is outside 3.0 to the maximum.",
    ),
    (409, "conflictingRequest", "Conflict", "It exists already."),
    (
        413,
        "overLimit",
        "OverLimit",
        "The body is over 112 KiB, or a quota would be exceeded (`Retry-After: 0`, `retryAfter`).",
    ),
    (
        415,
        "badMediaType",
        "UnsupportedMediaType",
        "The `Content-Type` is not JSON.",
    ),
    (
        503,
        "serviceUnavailable",
        "ServiceUnavailable",
        "The metadata store is busy or a storage node is unreachable (`Retry-After`).",
    ),
];

/// The statuses an operation may fault with.
pub fn faults_of(r: &Route) -> Vec<u16> {
    let mut out: Vec<u16> = Vec::new();
    if r.scope == Scope::V3 {
        out.extend(V3_FAULTS);
        if r.body.is_some() {
            out.extend(BODY_FAULTS);
        }
    }
    out.extend(r.faults);
    out.sort_unstable();
    out.dedup();
    out
}

/// The path parameters of `path`, in order.
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

/// The document's paths for a route: the route's own, and for `/v3` routes the project form.
pub fn forms(r: &Route) -> Vec<(String, bool)> {
    let mut out = vec![(r.path.to_owned(), false)];
    if r.scope == Scope::V3
        && let Some(rest) = r.path.strip_prefix("/v3/")
    {
        out.push((format!("/v3/{{project_id}}/{rest}"), true));
    }
    out
}

fn ref_to(kind: &str, name: &str) -> Value {
    json!({ "$ref": format!("#/components/{kind}/{name}") })
}

fn path_param(route: &Route, name: &str) -> Value {
    let (schema, description) = match name {
        "project_id" => (
            json!({
                "type": "string",
                "minLength": 1,
                "pattern": "^[^/]+$",
                "not": {"enum": COLLECTIONS},
            }),
            "The project (the URL form before 3.67; optional since). Any segment that is not a \
collection name; it must be the caller's project unless the caller is an admin (400).",
        ),
        "action" if route.path == "/v3/os-services/{action}" => (
            json!({"type": "string", "enum": [
                "enable", "disable", "disable-log-reason", "freeze", "thaw", "failover_host",
                "failover",
            ]}),
            "What to do.",
        ),
        "quota_class_name" if route.method == "PUT" => (
            json!({"type": "string", "enum": ["default"]}),
            "The quota class: Basalt keeps only `default` (another is 400).",
        ),
        "target_project_id" => (
            json!({"type": "string", "minLength": 1}),
            "The project the quotas or default type are about.",
        ),
        "key" => (
            json!({"type": "string", "minLength": 1, "maxLength": 255}),
            "The metadata or extra-spec key.",
        ),
        _ => (
            json!({"type": "string", "minLength": 1}),
            "The resource's id.",
        ),
    };
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": description,
        "schema": schema,
    })
}

fn query_param(q: &Param) -> Value {
    let schema = match q.ty {
        Ty::Str => json!({"type": "string"}),
        Ty::Int => json!({"type": "integer", "minimum": 0}),
        Ty::Bool => json!({"type": "boolean"}),
        Ty::Dir => json!({"type": "string", "enum": ["asc", "desc"]}),
        Ty::Public => json!({"type": "string", "enum": ["true", "false", "none"]}),
    };
    json!({
        "name": q.name,
        "in": "query",
        "required": false,
        "description": q.description,
        "schema": schema,
    })
}

fn v3_headers() -> Value {
    json!({
        "OpenStack-API-Version": ref_to("headers", "OpenStackApiVersion"),
        "Vary": ref_to("headers", "Vary"),
        "x-openstack-request-id": ref_to("headers", "RequestId"),
    })
}

fn operation(r: &Route, project_form: bool) -> Value {
    let mut params: Vec<Value> = Vec::new();
    let path = if project_form {
        format!("/v3/{{project_id}}/{}", r.path.trim_start_matches("/v3/"))
    } else {
        r.path.to_owned()
    };
    for name in path_params(&path) {
        params.push(path_param(r, name));
    }
    if r.scope == Scope::V3 {
        params.push(ref_to("parameters", "OpenStackApiVersion"));
        params.push(ref_to("parameters", "XAuthToken"));
    }
    for group in r.query {
        params.extend(group.iter().map(query_param));
    }
    let mut description = String::from(r.notes);
    if r.since > 0 {
        if !description.is_empty() {
            description.push_str("\n\n");
        }
        description.push_str(&format!("Needs microversion 3.{} (404 below it).", r.since));
    }
    let mut responses = Map::new();
    for a in r.answers {
        let mut resp = Map::new();
        resp.insert("description".into(), json!(a.description));
        if let Some(s) = a.schema {
            resp.insert(
                "content".into(),
                json!({ a.media: {"schema": ref_to("schemas", s)} }),
            );
        }
        if r.scope == Scope::V3 {
            resp.insert("headers".into(), v3_headers());
        }
        responses.insert(a.status.to_string(), Value::Object(resp));
    }
    for status in faults_of(r) {
        if let Some((_, _, component, _)) = FAULTS.iter().find(|f| f.0 == status) {
            responses.insert(status.to_string(), ref_to("responses", component));
        }
    }
    let op = if project_form {
        format!("{}WithProjectId", r.op)
    } else {
        r.op.to_owned()
    };
    let mut o = json!({
        "operationId": op,
        "tags": [r.tag],
        "summary": r.summary,
        "parameters": params,
        "responses": responses,
    });
    if !description.is_empty() {
        o["description"] = json!(description);
    }
    if r.since > 0 {
        o["x-openstack-min-microversion"] = json!(format!("3.{}", r.since));
    }
    if let Some(b) = r.body {
        o["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": ref_to("schemas", b)}},
        });
    }
    o
}

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        for (path, project_form) in forms(r) {
            let item = paths
                .entry(path)
                .or_insert_with(|| Value::Object(Map::new()));
            item[r.method.to_ascii_lowercase()] = operation(r, project_form);
        }
    }
    let mut tags: Vec<&str> = Vec::new();
    for r in ROUTES {
        if !tags.contains(&r.tag) {
            tags.push(r.tag);
        }
    }
    let tags: Vec<Value> = tags.iter().map(|t| json!({"name": t})).collect();
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "Basalt Block Storage API (OpenStack Cinder v3)",
            "version": version::MAX.to_string(),
            "description": format!(
                "Basalt's re-implementation of Cinder's Block Storage v3 API, microversions {} \
    to {}. Every `/v3/...` operation is served in both URL forms, with and without the project \
    segment. Send `OpenStack-API-Version: volume 3.NN` (or `volume latest`); without it a request \
    runs at 3.0. Errors are Cinder faults, `{{\"<faultName>\": {{\"code\": N, \"message\": \"...\"}}}}`. \
    HEAD is answered wherever GET is. When the built-in identity is in use, a Keystone v3 subset is \
    also served under `/identity` (not described here).",
                version::MIN,
                version::MAX
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": tags,
        "paths": paths,
        "components": components(),
    })
}

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    static DOC: OnceLock<Value> = OnceLock::new();
    axum::Json(DOC.get_or_init(document).clone()).into_response()
}

// ------------------------------------------------------------------ components

fn components() -> Value {
    let mut responses = Map::new();
    let mut schemas = schemas();
    for (status, name, component, description) in FAULTS {
        let schema_name = format!("{component}Fault");
        let mut detail = json!({
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "integer", "const": status},
                "message": {"type": "string"},
            },
        });
        if *status == 413 {
            detail["properties"]["retryAfter"] =
                json!({"type": "string", "description": "Seconds, for quota faults."});
        }
        schemas.insert(
            schema_name.clone(),
            json!({
                "type": "object",
                "description": format!("A Cinder fault: one key, `{name}`."),
                "required": [name],
                "additionalProperties": false,
                "properties": { *name: detail },
            }),
        );
        responses.insert(
            (*component).to_owned(),
            json!({
                "description": description,
                "headers": {
                    "OpenStack-API-Version": ref_to("headers", "OpenStackApiVersion"),
                    "x-openstack-request-id": ref_to("headers", "RequestId"),
                },
                "content": {"application/json": {"schema": ref_to("schemas", &schema_name)}},
            }),
        );
    }
    json!({
        "parameters": {
            "OpenStackApiVersion": {
                "name": "OpenStack-API-Version",
                "in": "header",
                "required": false,
                "description": format!(
                    "`volume 3.NN` or `volume latest` (a comma list naming other services too is \
    fine). Absent: 3.0. Malformed: 400. Outside {} to {}: 406.",
                    version::MIN,
                    version::MAX
                ),
                "schema": {"type": "string", "examples": ["volume 3.71", "volume latest"]},
            },
            "XAuthToken": {
                "name": "X-Auth-Token",
                "in": "header",
                "required": false,
                "description": "A Keystone token (built-in identity or external Keystone; \
    missing or invalid: 401). In noauth mode, `user[:project]`, and optional.",
                "schema": {"type": "string"},
            },
        },
        "headers": {
            "OpenStackApiVersion": {
                "description": "The microversion the request ran at, `volume 3.NN` (absent when \
    the request's version header was refused).",
                "schema": {"type": "string"},
            },
            "Vary": {
                "description": "`OpenStack-API-Version`.",
                "schema": {"type": "string"},
            },
            "RequestId": {
                "description": "`req-<uuid>` (also sent as `x-compute-request-id`).",
                "schema": {"type": "string"},
            },
        },
        "responses": responses,
        "schemas": schemas,
    })
}

fn nullable_string(max: usize) -> Value {
    json!({"type": ["string", "null"], "maxLength": max})
}

fn r(name: &str) -> Value {
    ref_to("schemas", name)
}

/// An object schema with `required` and `properties`, closed or not.
fn object(required: &[&str], properties: Value, closed: bool) -> Value {
    let mut o = json!({"type": "object", "properties": properties});
    if !required.is_empty() {
        o["required"] = json!(required);
    }
    if closed {
        o["additionalProperties"] = json!(false);
    }
    o
}

/// `{"<key>": inner}`.
fn wrapped(key: &str, inner: Value) -> Value {
    object(&[key], json!({ key: inner }), false)
}

/// `{"<key>": [item]}` with optional extra top-level properties.
fn list_of(key: &str, item: Value, extra: Value) -> Value {
    let mut props = json!({ key: {"type": "array", "items": item} });
    if let (Some(p), Value::Object(e)) = (props.as_object_mut(), extra) {
        p.extend(e);
    }
    object(&[key], props, false)
}

fn name_description() -> Value {
    json!({
        "name": nullable_string(255),
        "description": nullable_string(255),
        "display_name": {
            "type": ["string", "null"], "maxLength": 255,
            "description": "The old spelling of `name` (used when `name` is absent).",
        },
        "display_description": {
            "type": ["string", "null"], "maxLength": 255,
            "description": "The old spelling of `description`.",
        },
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(m), Value::Object(n)) = (a.as_object_mut(), b) {
        m.extend(n);
    }
    a
}

/// An action body: exactly one of `actions` (name, argument schema).
fn action_body(actions: &[(&str, Value)]) -> Value {
    let one_of: Vec<Value> = actions
        .iter()
        .map(|(name, arg)| {
            json!({
                "type": "object",
                "title": name,
                "required": [name],
                "additionalProperties": false,
                "properties": { *name: arg },
            })
        })
        .collect();
    json!({"type": "object", "minProperties": 1, "maxProperties": 1, "oneOf": one_of})
}

fn arg(required: &[&str], properties: Value) -> Value {
    let mut o = json!({"type": ["object", "null"], "properties": properties});
    if !required.is_empty() {
        o["required"] = json!(required);
        o["type"] = json!("object");
    }
    o
}

fn schemas() -> Map<String, Value> {
    let mut s = Map::new();
    let mut add = |name: &str, v: Value| {
        s.insert(name.to_owned(), v);
    };
    // ---- common
    add(
        "Uuid",
        json!({
            "type": "string",
            "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        }),
    );
    add(
        "NullableUuid",
        json!({"anyOf": [r("Uuid"), {"type": "null"}]}),
    );
    add(
        "Timestamp",
        json!({"type": "string", "description": "UTC, `YYYY-MM-DDTHH:MM:SS.ffffff` (no zone)."}),
    );
    add(
        "NullableTimestamp",
        json!({"anyOf": [r("Timestamp"), {"type": "null"}]}),
    );
    add(
        "BooleanLike",
        json!({
            "description": "A JSON boolean, 0 or 1, or one of oslo's strings (case-insensitive).",
            "anyOf": [
                {"type": "boolean"},
                {"type": "integer", "enum": [0, 1]},
                {"type": "string", "enum": [
                    "1", "t", "true", "on", "y", "yes", "0", "f", "false", "off", "n", "no",
                    "True", "False", "TRUE", "FALSE",
                ]},
            ],
        }),
    );
    add(
        "Size",
        json!({
            "description": "GiB: a positive integer, or a string of digits.",
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": 2_147_483_647},
                {"type": "string", "pattern": "^0*[1-9][0-9]{0,9}$"},
            ],
        }),
    );
    add(
        "Metadata",
        json!({
            "type": "object",
            "description": "String keys (1 to 255 characters) and string values (up to 255).",
            "propertyNames": {"minLength": 1, "maxLength": 255},
            "additionalProperties": {"type": "string", "maxLength": 255},
        }),
    );
    add(
        "Link",
        object(
            &["rel", "href"],
            json!({"rel": {"type": "string"}, "href": {"type": "string"}, "type": {"type": "string"}}),
            false,
        ),
    );
    add("Links", json!({"type": "array", "items": r("Link")}));
    add("PlainText", json!({"type": "string"}));
    add("HealthOk", json!({"type": "string", "const": "OK"}));
    add(
        "OpenApiDocument",
        json!({"type": "object", "description": "This document."}),
    );
    add(
        "Versions",
        list_of(
            "versions",
            object(
                &[
                    "id",
                    "status",
                    "version",
                    "min_version",
                    "updated",
                    "links",
                    "media-types",
                ],
                json!({
                    "id": {"type": "string"},
                    "status": {"type": "string"},
                    "version": {"type": "string"},
                    "min_version": {"type": "string"},
                    "updated": {"type": "string"},
                    "links": r("Links"),
                    "media-types": {"type": "array", "items": {"type": "object"}},
                }),
                false,
            ),
            json!({}),
        ),
    );
    add(
        "ImageVersions",
        list_of("versions", json!({"type": "object"}), json!({})),
    );
    add(
        "ImageList",
        list_of(
            "images",
            json!({"type": "object"}),
            json!({"first": {"type": "string"}, "schema": {"type": "string"}}),
        ),
    );
    add(
        "MetadataRequest",
        object(&["metadata"], json!({"metadata": r("Metadata")}), false),
    );
    add(
        "MetaItemRequest",
        object(
            &["meta"],
            json!({"meta": {
                "allOf": [r("Metadata")],
                "minProperties": 1,
                "maxProperties": 1,
                "description": "Exactly one pair, whose key is the URL's key.",
            }}),
            false,
        ),
    );
    add("MetadataShow", wrapped("metadata", r("Metadata")));
    add("MetaShow", wrapped("meta", r("Metadata")));
    volume_schemas(&mut add);
    snapshot_schemas(&mut add);
    attachment_schemas(&mut add);
    type_schemas(&mut add);
    quota_schemas(&mut add);
    service_schemas(&mut add);
    misc_schemas(&mut add);
    s
}

fn volume_schemas(add: &mut impl FnMut(&str, Value)) {
    let create = merge(
        name_description(),
        json!({
            "size": {
                "allOf": [r("Size")],
                "description": "Required unless `snapshot_id` or `source_volid` gives it.",
            },
            "availability_zone": nullable_string(255),
            "source_volid": {
                "allOf": [r("NullableUuid")],
                "description": "Clone this volume (not with `snapshot_id`).",
            },
            "snapshot_id": {
                "allOf": [r("NullableUuid")],
                "description": "Create from this snapshot (not with `source_volid`).",
            },
            "volume_type": nullable_string(255),
            "metadata": {"anyOf": [r("Metadata"), {"type": "null"}]},
            "multiattach": {
                "description": "Only false or null: multiattach comes from the volume type's \
        `multiattach=\"<is> True\"` extra spec (true is 400).",
                "enum": [false, null, "false", "False", "0", 0, "no", "off", "f", "n"],
            },
            "scheduler_hints": {"type": ["object", "null"], "description": "Accepted and ignored."},
            "imageRef": {"type": "null", "description": "Basalt has no image service: non-null is 400."},
            "image_id": {"type": "null", "description": "Basalt has no image service: non-null is 400."},
            "backup_id": {"type": "null", "description": "No backups yet: non-null is 400."},
            "consistencygroup_id": {"type": "null", "description": "No groups: non-null is 404."},
            "group_id": {"type": "null", "description": "No groups: non-null is 404."},
        }),
    );
    add(
        "VolumeCreateRequest",
        json!({
            "type": "object",
            "required": ["volume"],
            "description": "From microversion 3.53 (Cinder's strict schema) keys other than the \
        ones listed, in `volume` or at the top, are refused with 400; before 3.53 they are ignored.",
            "additionalProperties": false,
            "properties": {
                "volume": {
                    "type": "object",
                    "properties": create,
                    "additionalProperties": false,
                    "anyOf": [
                        {"required": ["size"], "properties": {"size": r("Size")}},
                        {"required": ["snapshot_id"], "properties": {"snapshot_id": r("Uuid")}},
                        {"required": ["source_volid"], "properties": {"source_volid": r("Uuid")}},
                    ],
                },
                "OS-SCH-HNT:scheduler_hints": {"type": "object", "description": "Ignored."},
            },
        }),
    );
    add(
        "VolumeUpdateRequest",
        json!({
            "type": "object",
            "required": ["volume"],
            "description": "From microversion 3.53 keys other than the ones listed are refused \
        with 400; before 3.53 they are ignored. `metadata` replaces the volume's metadata.",
            "properties": {
                "volume": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": false,
                    "properties": merge(name_description(), json!({"metadata": r("Metadata")})),
                },
            },
        }),
    );
    let connector = json!({
        "type": "object",
        "description": "os-brick's connector: `initiator` (iSCSI IQN) or `nqn` (NVMe host NQN), \
    `host`, ...",
        "properties": {
            "initiator": {"type": "string"},
            "nqn": {"type": "string"},
            "host": {"type": "string"},
        },
    });
    add("Connector", connector);
    add(
        "VolumeActionRequest",
        action_body(&[
            (
                "os-extend",
                arg(&["new_size"], json!({"new_size": r("Size")})),
            ),
            (
                "revert",
                arg(&["snapshot_id"], json!({"snapshot_id": r("Uuid")})),
            ),
            (
                "os-reset_status",
                json!({
                    "type": "object",
                    "minProperties": 1,
                    "properties": {
                        "status": {"type": "string", "maxLength": 255, "description": "A Cinder volume status (case-insensitive)."},
                        "attach_status": {"type": "string", "enum": ["attached", "detached"]},
                        "migration_status": {"type": "string", "enum": [
                            "migrating", "error", "success", "completing", "none", "starting",
                        ]},
                    },
                }),
            ),
            ("os-force_delete", json!({})),
            (
                "os-set_bootable",
                arg(&["bootable"], json!({"bootable": r("BooleanLike")})),
            ),
            (
                "os-update_readonly_flag",
                arg(&["readonly"], json!({"readonly": r("BooleanLike")})),
            ),
            ("os-reserve", arg(&[], json!({}))),
            ("os-unreserve", arg(&[], json!({}))),
            ("os-begin_detaching", arg(&[], json!({}))),
            ("os-roll_detaching", arg(&[], json!({}))),
            (
                "os-attach",
                arg(
                    &[],
                    json!({
                        "instance_uuid": nullable_string(36),
                        "host_name": nullable_string(255),
                        "mountpoint": nullable_string(255),
                        "mode": {"type": "string", "enum": ["rw", "ro"]},
                    }),
                ),
            ),
            (
                "os-detach",
                arg(&[], json!({"attachment_id": nullable_string(36)})),
            ),
            (
                "os-force_detach",
                arg(
                    &[],
                    json!({"attachment_id": nullable_string(36), "connector": r("Connector")}),
                ),
            ),
            (
                "os-initialize_connection",
                arg(&["connector"], json!({"connector": r("Connector")})),
            ),
            (
                "os-terminate_connection",
                arg(&["connector"], json!({"connector": r("Connector")})),
            ),
        ]),
    );
    add(
        "VolumeSummary",
        object(
            &["id", "name", "links"],
            json!({"id": {"type": "string"}, "name": {"type": ["string", "null"]}, "links": r("Links")}),
            false,
        ),
    );
    add(
        "VolumeAttachmentItem",
        object(
            &[
                "id",
                "attachment_id",
                "volume_id",
                "server_id",
                "host_name",
                "device",
                "attached_at",
            ],
            json!({
                "id": {"type": "string"},
                "attachment_id": {"type": "string"},
                "volume_id": {"type": "string"},
                "server_id": {"type": ["string", "null"]},
                "host_name": {"type": ["string", "null"], "description": "Admins and services only."},
                "device": {"type": ["string", "null"]},
                "attached_at": r("NullableTimestamp"),
            }),
            false,
        ),
    );
    add(
        "VolumeDetail",
        json!({
            "type": "object",
            "description": "Cinder's volume detail view. Admins also see `migration_status`; the \
        `os-vol-*` attributes follow the policy (show and detailed lists only); `group_id` from 3.13, `provider_id` (admin) from \
        3.21, `shared_targets` and `service_uuid` from 3.48, `cluster_name` (admin) from 3.61, \
        `volume_type_id` from 3.63, `consumes_quota` from 3.65.",
            "required": [
                "id", "name", "description", "status", "size", "availability_zone",
                "created_at", "updated_at", "volume_type", "snapshot_id", "source_volid",
                "metadata", "links", "user_id", "bootable", "encrypted", "replication_status",
                "consistencygroup_id", "multiattach", "attachments",
            ],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": ["string", "null"]},
                "description": {"type": ["string", "null"]},
                "status": {"type": "string"},
                "size": {"type": "integer", "minimum": 1},
                "availability_zone": {"type": "string"},
                "created_at": r("Timestamp"),
                "updated_at": r("NullableTimestamp"),
                "volume_type": {"type": ["string", "null"]},
                "snapshot_id": {"type": ["string", "null"]},
                "source_volid": {"type": ["string", "null"]},
                "metadata": r("Metadata"),
                "links": r("Links"),
                "user_id": {"type": "string"},
                "bootable": {"type": "string", "enum": ["true", "false"]},
                "encrypted": {"type": "boolean"},
                "replication_status": {"type": ["string", "null"]},
                "consistencygroup_id": {"type": "null"},
                "multiattach": {"type": "boolean"},
                "attachments": {"type": "array", "items": r("VolumeAttachmentItem")},
                "migration_status": {"type": ["string", "null"]},
                "os-vol-host-attr:host": {"type": ["string", "null"]},
                "os-vol-mig-status-attr:migstat": {"type": ["string", "null"]},
                "os-vol-mig-status-attr:name_id": {"type": ["string", "null"]},
                "os-vol-tenant-attr:tenant_id": {"type": "string"},
                "group_id": {"type": ["string", "null"]},
                "provider_id": {"type": ["string", "null"]},
                "shared_targets": {"type": "boolean"},
                "service_uuid": {"type": ["string", "null"]},
                "cluster_name": {"type": ["string", "null"]},
                "volume_type_id": {"type": ["string", "null"]},
                "consumes_quota": {"type": "boolean"},
            },
        }),
    );
    let list_extra = |links: &str| {
        let mut m = Map::new();
        m.insert(links.to_owned(), r("Links"));
        m.insert(
            "count".into(),
            json!({"type": "integer", "description": "With `with_count=true` (3.45)."}),
        );
        Value::Object(m)
    };
    add(
        "VolumeList",
        list_of("volumes", r("VolumeSummary"), list_extra("volumes_links")),
    );
    add(
        "VolumeDetailList",
        list_of("volumes", r("VolumeDetail"), list_extra("volumes_links")),
    );
    add("VolumeShow", wrapped("volume", r("VolumeDetail")));
    add(
        "VolumeSummaryShow",
        wrapped(
            "volume-summary",
            object(
                &["total_size", "total_count"],
                json!({
                    "total_size": {"type": "integer"},
                    "total_count": {"type": "integer"},
                    "metadata": {
                        "type": "object",
                        "description": "3.36: every key's values.",
                        "additionalProperties": {"type": "array", "items": {"type": "string"}},
                    },
                }),
                false,
            ),
        ),
    );
    add(
        "ConnectionInfoShow",
        wrapped(
            "connection_info",
            object(
                &["driver_volume_type", "data"],
                json!({
                    "driver_volume_type": {"type": "string", "enum": ["iscsi", "nvmeof"]},
                    "data": {"type": "object"},
                }),
                false,
            ),
        ),
    );
}

fn snapshot_schemas(add: &mut impl FnMut(&str, Value)) {
    add(
        "SnapshotCreateRequest",
        wrapped(
            "snapshot",
            object(
                &["volume_id"],
                merge(
                    name_description(),
                    json!({
                        "volume_id": {
                            "anyOf": [r("Uuid"), {"type": "null"}],
                            "description": "Required; null is 404 (no such volume), as Cinder answers.",
                        },
                        "force": {
                            "allOf": [r("BooleanLike")],
                            "description": "Snapshot an in-use volume (implied from 3.66).",
                        },
                        "metadata": {"anyOf": [r("Metadata"), {"type": "null"}]},
                    }),
                ),
                true,
            ),
        ),
    );
    add(
        "SnapshotUpdateRequest",
        wrapped(
            "snapshot",
            merge(
                object(&[], name_description(), true),
                json!({"minProperties": 1}),
            ),
        ),
    );
    let status = json!({"type": "string", "enum": [
        "creating", "available", "deleting", "error", "error_deleting", "unmanaging",
        "backing-up", "restoring",
    ], "description": "Case-insensitive."});
    add(
        "SnapshotActionRequest",
        action_body(&[
            (
                "os-reset_status",
                arg(&["status"], json!({"status": status})),
            ),
            (
                "os-update_snapshot_status",
                arg(
                    &["status"],
                    json!({
                        "status": {"type": "string", "description": "From creating: creating, available or error; from deleting: deleting or error_deleting."},
                        "progress": nullable_string(255),
                    }),
                ),
            ),
            ("os-force_delete", json!({})),
        ]),
    );
    add(
        "Snapshot",
        json!({
            "type": "object",
            "description": "Cinder's snapshot view. The `os-extended-snapshot-attributes:*` \
        fields follow the policy (show and detailed lists only); `group_snapshot_id` from 3.14, \
        `user_id` from 3.41, `consumes_quota` from 3.65 (none of these in the summary list).",
            "required": [
                "id", "name", "description", "status", "size", "volume_id", "metadata",
                "created_at", "updated_at",
            ],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": ["string", "null"]},
                "description": {"type": ["string", "null"]},
                "status": {"type": "string"},
                "size": {"type": "integer"},
                "volume_id": {"type": "string"},
                "metadata": r("Metadata"),
                "created_at": r("Timestamp"),
                "updated_at": r("NullableTimestamp"),
                "os-extended-snapshot-attributes:progress": {"type": ["string", "null"]},
                "os-extended-snapshot-attributes:project_id": {"type": "string"},
                "group_snapshot_id": {"type": "null"},
                "user_id": {"type": "string"},
                "consumes_quota": {"type": "boolean"},
            },
        }),
    );
    add("SnapshotShow", wrapped("snapshot", r("Snapshot")));
    add(
        "SnapshotList",
        list_of(
            "snapshots",
            r("Snapshot"),
            json!({"snapshots_links": r("Links"), "count": {"type": "integer"}}),
        ),
    );
}

fn attachment_schemas(add: &mut impl FnMut(&str, Value)) {
    add(
        "AttachmentCreateRequest",
        wrapped(
            "attachment",
            object(
                &["volume_uuid"],
                json!({
                    "volume_uuid": r("Uuid"),
                    "instance_uuid": r("NullableUuid"),
                    "connector": {
                        "anyOf": [r("Connector"), {"type": "null"}],
                        "description": "Null or `{}`: reserve only.",
                    },
                    "mode": {"type": ["string", "null"], "enum": ["rw", "ro", null], "description": "3.54 (400 before)."},
                }),
                true,
            ),
        ),
    );
    add(
        "AttachmentUpdateRequest",
        wrapped(
            "attachment",
            object(&["connector"], json!({"connector": r("Connector")}), true),
        ),
    );
    add(
        "AttachmentActionRequest",
        object(&["os-complete"], json!({"os-complete": {}}), true),
    );
    let summary = json!({
        "id": {"type": "string"},
        "status": {"type": "string"},
        "instance": {"type": ["string", "null"]},
        "volume_id": {"type": "string"},
    });
    add(
        "AttachmentSummary",
        object(
            &["id", "status", "instance", "volume_id"],
            summary.clone(),
            false,
        ),
    );
    add(
        "Attachment",
        object(
            &[
                "id",
                "status",
                "instance",
                "volume_id",
                "attached_at",
                "detached_at",
                "attach_mode",
                "connection_info",
            ],
            merge(
                summary,
                json!({
                    "attached_at": r("NullableTimestamp"),
                    "detached_at": r("NullableTimestamp"),
                    "attach_mode": {"type": "string", "enum": ["rw", "ro"]},
                    "connection_info": {
                        "type": ["object", "null"],
                        "description": "Flat, as Cinder's attachments API shows it: \
                        `driver_volume_type`, the driver's keys, `attachment_id`; null until a \
                        connector is given.",
                    },
                }),
            ),
            false,
        ),
    );
    add("AttachmentShow", wrapped("attachment", r("Attachment")));
    add(
        "AttachmentList",
        list_of(
            "attachments",
            r("AttachmentSummary"),
            json!({"attachments_links": r("Links")}),
        ),
    );
    add(
        "AttachmentDetailList",
        list_of(
            "attachments",
            r("Attachment"),
            json!({"attachments_links": r("Links")}),
        ),
    );
}

fn type_schemas(add: &mut impl FnMut(&str, Value)) {
    let spec_value = json!({"type": ["string", "null"], "maxLength": 255});
    add(
        "VolumeTypeCreateRequest",
        object(
            &["volume_type"],
            json!({"volume_type": object(
                &["name"],
                json!({
                    "name": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "\\S"},
                    "description": {"type": ["string", "null"], "maxLength": 255, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"},
                    "extra_specs": {
                        "type": ["object", "null"],
                        "propertyNames": {"pattern": "^[A-Za-z0-9_:. /-]{1,255}$"},
                        "additionalProperties": spec_value,
                    },
                    "os-volume-type-access:is_public": r("BooleanLike"),
                }),
                true,
            )}),
            true,
        ),
    );
    add(
        "VolumeTypeUpdateRequest",
        object(
            &["volume_type"],
            json!({"volume_type": merge(object(
                &[],
                json!({
                    "name": {"type": ["string", "null"], "minLength": 1, "maxLength": 255, "pattern": "\\S"},
                    "description": {"type": ["string", "null"], "maxLength": 255, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"},
                    "is_public": r("BooleanLike"),
                }),
                true,
            ), json!({"minProperties": 1}))}),
            true,
        ),
    );
    let access = object(
        &["project"],
        json!({"project": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "\\S"}}),
        true,
    );
    add(
        "VolumeTypeAccessRequest",
        action_body(&[
            ("addProjectAccess", access.clone()),
            ("removeProjectAccess", access),
        ]),
    );
    add(
        "ExtraSpecsRequest",
        object(
            &["extra_specs"],
            json!({"extra_specs": {
                "type": "object",
                "propertyNames": {"pattern": "^[A-Za-z0-9_:.-]{1,255}$"},
                "additionalProperties": spec_value,
                "description": "`cacheable` and `multiattach` cannot both be `<is> True`.",
            }}),
            true,
        ),
    );
    add(
        "ExtraSpecItem",
        json!({
            "type": "object",
            "description": "One spec, `{\"<key>\": \"<value>\"}` (in a request, the URL's key).",
            "minProperties": 1,
            "maxProperties": 1,
            "propertyNames": {"pattern": "^[A-Za-z0-9_:.-]{1,255}$"},
            "additionalProperties": spec_value,
        }),
    );
    add(
        "ExtraSpecsShow",
        wrapped(
            "extra_specs",
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
        ),
    );
    add(
        "VolumeType",
        json!({
            "type": "object",
            "description": "`extra_specs` (only the user-visible ones without the read_sensitive \
        rule), `qos_specs_id` and `os-volume-type-access:is_public` follow the policy.",
            "required": ["id", "name", "is_public", "description"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "is_public": {"type": "boolean"},
                "description": {"type": ["string", "null"]},
                "extra_specs": {"type": "object", "additionalProperties": {"type": "string"}},
                "qos_specs_id": {"type": "null"},
                "os-volume-type-access:is_public": {"type": "boolean"},
            },
        }),
    );
    add("VolumeTypeShow", wrapped("volume_type", r("VolumeType")));
    add(
        "VolumeTypeList",
        list_of(
            "volume_types",
            r("VolumeType"),
            json!({"volume_type_links": r("Links")}),
        ),
    );
    add(
        "VolumeTypeAccessList",
        list_of(
            "volume_type_access",
            object(
                &["volume_type_id", "project_id"],
                json!({"volume_type_id": {"type": "string"}, "project_id": {"type": "string"}}),
                false,
            ),
            json!({}),
        ),
    );
    add(
        "DefaultTypeRequest",
        wrapped(
            "default_type",
            object(
                &["volume_type"],
                json!({"volume_type": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "\\S"}}),
                true,
            ),
        ),
    );
    let default = object(
        &["project_id", "volume_type_id"],
        json!({"project_id": {"type": "string"}, "volume_type_id": {"type": "string"}}),
        false,
    );
    add("DefaultTypeShow", wrapped("default_type", default.clone()));
    add(
        "DefaultTypeList",
        list_of("default_types", default, json!({})),
    );
}

fn quota_schemas(add: &mut impl FnMut(&str, Value)) {
    let limit = json!({
        "description": "-1 (unlimited) to 2147483647: an integer or a string of one.",
        "anyOf": [
            {"type": "integer", "minimum": -1, "maximum": 2_147_483_647},
            {"type": "string", "pattern": "^\\s*(-1|[0-9]{1,10})\\s*$"},
        ],
    });
    add(
        "QuotaSetRequest",
        object(
            &["quota_set"],
            json!({"quota_set": {
                "type": "object",
                "minProperties": 1,
                "description": "Resources: volumes, snapshots, gigabytes, backups, \
            backup_gigabytes, groups, per_volume_gigabytes, and volumes_<type>, gigabytes_<type>, \
            snapshots_<type> per volume type; another key is 400. `id` and `tenant_id` are ignored.",
                "properties": {"id": {}, "tenant_id": {}},
                "propertyNames": {"pattern": "^(id|tenant_id|volumes|snapshots|gigabytes|backups|backup_gigabytes|groups|per_volume_gigabytes|(volumes|gigabytes|snapshots)_.+)$"},
                "additionalProperties": limit,
            }}),
            true,
        ),
    );
    add(
        "QuotaClassSetRequest",
        object(
            &["quota_class_set"],
            json!({"quota_class_set": {
                "type": "object",
                "description": "The same resources as a quota set (no `id`).",
                "propertyNames": {"pattern": "^(volumes|snapshots|gigabytes|backups|backup_gigabytes|groups|per_volume_gigabytes|(volumes|gigabytes|snapshots)_.+)$"},
                "additionalProperties": {
                    "anyOf": [
                        {"type": "integer", "minimum": -1, "maximum": 2_147_483_647},
                        {"type": "string", "pattern": "^[0-9]{1,10}$"},
                    ],
                },
            }}),
            true,
        ),
    );
    add(
        "QuotaSet",
        json!({
            "type": "object",
            "description": "Every resource's limit (-1: unlimited); `id` is the project (or \
        class), absent in update answers.",
            "properties": {"id": {"type": "string"}},
            "additionalProperties": {"type": "integer"},
        }),
    );
    add(
        "QuotaUsageSet",
        json!({
            "type": "object",
            "description": "With `usage=true`: every resource's limit, in_use and reserved.",
            "required": ["id"],
            "properties": {"id": {"type": "string"}},
            "additionalProperties": object(
                &["limit", "in_use", "reserved"],
                json!({
                    "limit": {"type": "integer"},
                    "in_use": {"type": "integer"},
                    "reserved": {"type": "integer"},
                }),
                false,
            ),
        }),
    );
    add(
        "QuotaSetShow",
        wrapped(
            "quota_set",
            json!({"anyOf": [r("QuotaSet"), r("QuotaUsageSet")]}),
        ),
    );
    add(
        "QuotaClassSetShow",
        wrapped("quota_class_set", r("QuotaSet")),
    );
}

fn service_schemas(add: &mut impl FnMut(&str, Value)) {
    add(
        "ServiceChangeRequest",
        json!({
            "type": "object",
            "description": "`binary` (or `service`) and `host`; `disabled_reason` only for \
        `disable-log-reason`; no other keys.",
            "required": ["host"],
            "anyOf": [{"required": ["binary"]}, {"required": ["service"]}],
            "additionalProperties": false,
            "properties": {
                "binary": {"type": "string", "minLength": 1, "maxLength": 255},
                "service": {"type": "string", "minLength": 1, "maxLength": 255},
                "host": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[A-Za-z0-9._#@:/+\\[\\]-]+$"},
                "cluster": {"type": ["string", "null"]},
                "disabled_reason": {"type": "string", "maxLength": 255, "pattern": "\\S"},
            },
        }),
    );
    add(
        "ServiceChange",
        object(
            &["host", "service", "binary", "status", "disabled"],
            json!({
                "host": {"type": "string"},
                "service": {"type": "string"},
                "binary": {"type": "string"},
                "status": {"type": "string", "enum": ["enabled", "disabled"]},
                "disabled": {"type": "boolean"},
                "disabled_reason": {"type": ["string", "null"]},
            }),
            false,
        ),
    );
    add(
        "ServiceList",
        list_of(
            "services",
            object(
                &[
                    "binary",
                    "host",
                    "zone",
                    "status",
                    "state",
                    "updated_at",
                    "disabled_reason",
                ],
                json!({
                    "binary": {"type": "string"},
                    "host": {"type": "string"},
                    "zone": {"type": "string"},
                    "status": {"type": "string", "enum": ["enabled", "disabled"]},
                    "state": {"type": "string", "enum": ["up", "down"]},
                    "updated_at": r("Timestamp"),
                    "disabled_reason": {"type": ["string", "null"]},
                    "backend_state": {"type": "string", "description": "3.49, volume services."},
                    "cluster": {"type": "null", "description": "3.7."},
                    "replication_status": {"type": "string"},
                    "active_backend_id": {"type": "null"},
                    "frozen": {"type": "boolean"},
                }),
                false,
            ),
            json!({}),
        ),
    );
    add(
        "PoolList",
        list_of(
            "pools",
            object(
                &["name"],
                json!({"name": {"type": "string"}, "capabilities": {"type": "object"}}),
                false,
            ),
            json!({}),
        ),
    );
    add(
        "Capabilities",
        object(
            &[
                "namespace",
                "vendor_name",
                "volume_backend_name",
                "driver_version",
                "storage_protocol",
                "properties",
            ],
            json!({
                "namespace": {"type": "string"},
                "vendor_name": {"type": "string"},
                "volume_backend_name": {"type": "string"},
                "pool_name": {"type": "null"},
                "driver_version": {"type": "string"},
                "storage_protocol": {"type": "string"},
                "display_name": {"type": "null"},
                "description": {"type": "null"},
                "visibility": {"type": "null"},
                "replication_targets": {"type": "array"},
                "properties": {"type": "object"},
            }),
            false,
        ),
    );
    add(
        "HostList",
        list_of(
            "hosts",
            object(
                &[
                    "host_name",
                    "service",
                    "zone",
                    "service-status",
                    "service-state",
                    "last-update",
                ],
                json!({
                    "host_name": {"type": "string"},
                    "service": {"type": "string"},
                    "zone": {"type": "string"},
                    "service-status": {"type": "string", "enum": ["available", "unavailable"]},
                    "service-state": {"type": "string", "enum": ["enabled", "disabled"]},
                    "last-update": r("Timestamp"),
                }),
                false,
            ),
            json!({}),
        ),
    );
    add(
        "HostShow",
        list_of(
            "host",
            wrapped(
                "resource",
                object(
                    &[
                        "host",
                        "project",
                        "volume_count",
                        "total_volume_gb",
                        "snapshot_count",
                        "total_snapshot_gb",
                    ],
                    json!({
                        "host": {"type": "string"},
                        "project": {"type": "string"},
                        "volume_count": {"type": "string"},
                        "total_volume_gb": {"type": "string"},
                        "snapshot_count": {"type": "string"},
                        "total_snapshot_gb": {"type": "string"},
                    }),
                    false,
                ),
            ),
            json!({}),
        ),
    );
}

fn misc_schemas(add: &mut impl FnMut(&str, Value)) {
    add(
        "AvailabilityZoneList",
        list_of(
            "availabilityZoneInfo",
            object(
                &["zoneName", "zoneState"],
                json!({
                    "zoneName": {"type": "string"},
                    "zoneState": object(&["available"], json!({"available": {"type": "boolean"}}), false),
                }),
                false,
            ),
            json!({}),
        ),
    );
    add(
        "Limits",
        wrapped(
            "limits",
            object(
                &["rate", "absolute"],
                json!({
                    "rate": {"type": "array"},
                    "absolute": {"type": "object", "additionalProperties": {"type": "integer"}},
                }),
                false,
            ),
        ),
    );
    add(
        "ExtensionList",
        list_of(
            "extensions",
            object(
                &["alias", "name", "description", "links", "updated"],
                json!({
                    "alias": {"type": "string"},
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "links": {"type": "array"},
                    "updated": {"type": "string"},
                }),
                false,
            ),
            json!({}),
        ),
    );
    add(
        "Message",
        object(
            &[
                "id",
                "event_id",
                "message_level",
                "resource_type",
                "resource_uuid",
                "request_id",
                "user_message",
                "created_at",
                "guaranteed_until",
                "links",
            ],
            json!({
                "id": {"type": "string"},
                "event_id": {"type": "string"},
                "message_level": {"type": "string"},
                "resource_type": {"type": "string"},
                "resource_uuid": {"type": ["string", "null"]},
                "request_id": {"type": ["string", "null"]},
                "user_message": {"type": "string"},
                "created_at": r("Timestamp"),
                "guaranteed_until": r("Timestamp"),
                "links": r("Links"),
            }),
            false,
        ),
    );
    add("MessageShow", wrapped("message", r("Message")));
    add("MessageList", list_of("messages", r("Message"), json!({})));
    add(
        "TransferCreateRequest",
        wrapped(
            "transfer",
            object(
                &["volume_id"],
                json!({
                    "volume_id": r("Uuid"),
                    "name": nullable_string(255),
                    "no_snapshots": {
                        "allOf": [r("BooleanLike")],
                        "description": "Only on /volume-transfers (3.55): leave the snapshots behind.",
                    },
                }),
                true,
            ),
        ),
    );
    add(
        "TransferCreateLegacyRequest",
        wrapped(
            "transfer",
            object(
                &["volume_id"],
                json!({"volume_id": r("Uuid"), "name": nullable_string(255)}),
                true,
            ),
        ),
    );
    add(
        "TransferAcceptRequest",
        wrapped(
            "accept",
            object(
                &["auth_key"],
                json!({"auth_key": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "\\S"}}),
                false,
            ),
        ),
    );
    add(
        "Transfer",
        json!({
            "type": "object",
            "description": "Detail views add `created_at`, `no_snapshots` (3.55), \
        `source_project_id`, `destination_project_id` and `accepted` (3.57); a create answer adds \
        `auth_key`, shown only then.",
            "required": ["id", "name", "volume_id", "links"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": ["string", "null"]},
                "volume_id": {"type": "string"},
                "links": r("Links"),
                "created_at": r("Timestamp"),
                "no_snapshots": {"type": "boolean"},
                "source_project_id": {"type": "string"},
                "destination_project_id": {"type": ["string", "null"]},
                "accepted": {"type": "boolean"},
                "auth_key": {"type": "string"},
            },
        }),
    );
    add("TransferShow", wrapped("transfer", r("Transfer")));
    add(
        "TransferList",
        list_of("transfers", r("Transfer"), json!({})),
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use basalt_identity::Auth;
    use basalt_manager::Control;
    use basalt_policy::Enforcer;
    use basalt_scheduler::SchedulerConfig;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::{ApiConfig, ApiState, router};

    fn state() -> Arc<ApiState> {
        let db = basalt_db::SqliteStore::in_memory().expect("store");
        let state = Arc::new(ApiState {
            control: Arc::new(Control::new(Arc::new(db), SchedulerConfig::default())),
            auth: Auth::NoAuth {
                default_user: "u".into(),
                default_project: "p".into(),
            },
            policy: Enforcer::cinder_defaults(),
            cfg: ApiConfig::default(),
            identity: None,
        });
        state.ensure_default_type().expect("default type");
        state
    }

    /// `path` with every `{param}` replaced by a dummy value.
    fn concrete(path: &str) -> String {
        path.split('/')
            .map(|s| {
                if s == "{action}" {
                    "enable"
                } else if s == "{project_id}" {
                    "p"
                } else if s.starts_with('{') {
                    "x"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    async fn send(app: &axum::Router, method: &str, uri: &str) -> (StatusCode, bool, Vec<u8>) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(version::HEADER, "volume latest")
            .body(Body::empty())
            .expect("request");
        let resp = app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let echoed = resp.headers().contains_key(version::HEADER);
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        (status, echoed, body)
    }

    /// Every row of the table reaches a real route in both URL forms: not the router's generic
    /// 404 (the fallback, outside the pipeline) nor a 405.
    #[tokio::test]
    async fn every_documented_operation_is_routed() {
        let app = router(state());
        let (_, _, fallback) = send(&app, "GET", "/no/such/path").await;
        for r in ROUTES {
            for (path, _) in forms(r) {
                let uri = concrete(&path);
                let (status, echoed, body) = send(&app, r.method, &uri).await;
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{} {uri}", r.method);
                assert!(
                    !(status == StatusCode::NOT_FOUND && body == fallback),
                    "{} {uri}: the router's fallback",
                    r.method
                );
                if r.scope == Scope::V3 {
                    assert!(echoed, "{} {uri}: {status} without the pipeline", r.method);
                }
            }
        }
    }

    /// A documented path answers 405 to every method the table does not list for it.
    #[tokio::test]
    async fn undocumented_methods_are_refused() {
        let app = router(state());
        let mut by_path: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for r in ROUTES {
            by_path.entry(r.path).or_default().push(r.method);
        }
        for (path, methods) in by_path {
            for m in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
                if methods.contains(&m) {
                    continue;
                }
                let uri = concrete(path);
                let (status, _, _) = send(&app, m, &uri).await;
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{m} {uri}");
            }
        }
    }

    /// `(METHOD, path with {} for parameters)` of every `.route(...)` in the modules'
    /// `routes()` and in `router()`, read from their sources. Paths made from a `base`
    /// (`for base in [...]` in transfers.rs, `meta::routes::<_>("...")` call sites for
    /// meta.rs) are expanded for every base.
    fn registered() -> BTreeSet<(String, String)> {
        let sources = [
            ("lib.rs", include_str!("lib.rs"), "pub fn router("),
            ("volumes.rs", include_str!("volumes.rs"), "pub fn routes("),
            (
                "snapshots.rs",
                include_str!("snapshots.rs"),
                "pub fn routes(",
            ),
            ("meta.rs", include_str!("meta.rs"), "pub fn routes<"),
            (
                "attachments.rs",
                include_str!("attachments.rs"),
                "pub fn routes(",
            ),
            ("types.rs", include_str!("types.rs"), "pub fn routes("),
            ("quotas.rs", include_str!("quotas.rs"), "pub fn routes("),
            ("services.rs", include_str!("services.rs"), "pub fn routes("),
            (
                "transfers.rs",
                include_str!("transfers.rs"),
                "pub fn routes(",
            ),
            ("messages.rs", include_str!("messages.rs"), "pub fn routes("),
            ("misc.rs", include_str!("misc.rs"), "pub fn routes("),
            ("image.rs", include_str!("image.rs"), "pub fn routes("),
        ];
        // The bases meta.rs's routes are merged under.
        let meta_bases: Vec<&str> = sources
            .iter()
            .flat_map(|(_, src, _)| src.split("meta::routes::<").skip(1))
            .filter_map(|rest| rest.split('"').nth(1))
            .collect();
        assert!(meta_bases.len() >= 2, "meta bases: {meta_bases:?}");
        let mut out = BTreeSet::new();
        for (file, src, start) in sources {
            let at = src
                .find(start)
                .unwrap_or_else(|| panic!("{file}: no {start}"));
            let body = &src[at..];
            let body = &body[..body.find("\n}\n").unwrap_or(body.len())];
            let bases: Vec<&str> = match body.find("for base in [") {
                Some(i) => {
                    let rest = &body[i + "for base in [".len()..];
                    let list = &rest[..rest.find(']').expect("the bases end")];
                    list.split('"').skip(1).step_by(2).collect()
                }
                None if file == "meta.rs" => meta_bases.clone(),
                None => Vec::new(),
            };
            let mut routes = 0;
            for chunk in body.split(".route(").skip(1) {
                routes += 1;
                let lit = if chunk.trim_start().starts_with("base,") {
                    "{base}"
                } else {
                    chunk.split('"').nth(1).expect("a path literal")
                };
                let paths: Vec<String> = if lit.contains("{base}") {
                    assert!(!bases.is_empty(), "{file}: {{base}} without bases");
                    bases
                        .iter()
                        .map(|b| {
                            lit.replace("{base}", b)
                                .replace("{{", "{")
                                .replace("}}", "}")
                        })
                        .collect()
                } else {
                    vec![lit.to_owned()]
                };
                let mut methods = Vec::new();
                for m in ["get", "post", "put", "delete", "patch"] {
                    let pat = format!("{m}(");
                    for (i, _) in chunk.match_indices(&pat) {
                        let before = chunk[..i].chars().next_back();
                        if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                            methods.push(m.to_ascii_uppercase());
                        }
                    }
                }
                assert!(!methods.is_empty(), "{file}: no method for {lit}");
                for path in &paths {
                    for m in &methods {
                        out.insert((m.clone(), normalise(path)));
                    }
                }
            }
            assert!(routes > 0, "{file}: no routes found: is the scan broken?");
        }
        out
    }

    fn normalise(path: &str) -> String {
        path.split('/')
            .map(|s| if s.starts_with('{') { "{}" } else { s })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The table and the routers' sources name the same (method, path) pairs.
    #[test]
    fn the_table_is_every_registered_route() {
        let documented: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_owned(), normalise(r.path)))
            .collect();
        assert_eq!(documented.len(), ROUTES.len(), "a row is listed twice");
        let registered = registered();
        let missing: Vec<_> = registered.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&registered).collect();
        assert!(
            missing.is_empty(),
            "registered but not documented: {missing:?}"
        );
        assert!(extra.is_empty(), "documented but not registered: {extra:?}");
    }

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "$ref"
                        && let Some(s) = x.as_str()
                    {
                        out.push(s.to_owned());
                    }
                    refs(x, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    /// The document is well formed: references resolve, operation ids are unique, every path
    /// parameter is declared, both URL forms of every `/v3` operation are there.
    #[test]
    fn the_document_is_consistent() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 200, "{}", all.len());
        for r in &all {
            let ptr = r.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(ptr).is_some(), "{r} does not resolve");
        }
        let mut ids = BTreeSet::new();
        let paths = doc["paths"].as_object().expect("paths");
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("a path item") {
                let id = op["operationId"].as_str().expect("an id");
                assert!(ids.insert(id.to_owned()), "{id} twice");
                let declared: BTreeSet<&str> = op["parameters"]
                    .as_array()
                    .expect("parameters")
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                let wanted: BTreeSet<&str> = path_params(path).into_iter().collect();
                assert_eq!(declared, wanted, "{method} {path}");
                let responses = op["responses"].as_object().expect("responses");
                assert!(!responses.is_empty(), "{method} {path}");
                if path.starts_with("/v3/") && path != "/v3/" {
                    for code in ["400", "401", "403", "404"] {
                        assert!(responses.contains_key(code), "{method} {path}: {code}");
                    }
                }
            }
        }
        for r in ROUTES {
            for (path, _) in forms(r) {
                assert!(
                    paths
                        .get(&path)
                        .and_then(|i| i.get(r.method.to_ascii_lowercase()))
                        .is_some(),
                    "{} {path}",
                    r.method
                );
            }
            if r.scope == Scope::V3 {
                assert_eq!(forms(r).len(), 2, "{}", r.path);
            }
            assert!(!r.answers.is_empty(), "{} {}", r.method, r.path);
        }
        // Creates, deletes and actions answer as the handlers do.
        let status_of = |m: &str, p: &str| {
            let op = &paths[p][m];
            op["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .filter(|k| k.starts_with('2'))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(status_of("post", "/v3/volumes"), ["202"]);
        assert_eq!(
            status_of("delete", "/v3/{project_id}/volumes/{volume_id}"),
            ["202"]
        );
        assert_eq!(status_of("post", "/v3/snapshots"), ["202"]);
        assert_eq!(
            status_of("post", "/v3/attachments/{attachment_id}/action"),
            ["204"]
        );
        assert_eq!(status_of("delete", "/v3/messages/{message_id}"), ["204"]);
        // The fault bodies and the main views are described.
        let schemas = &doc["components"]["schemas"];
        for name in [
            "BadRequestFault",
            "UnauthorizedFault",
            "ForbiddenFault",
            "NotFoundFault",
            "ConflictFault",
            "OverLimitFault",
            "VolumeDetail",
            "Snapshot",
            "Attachment",
            "VolumeType",
            "QuotaSet",
        ] {
            assert!(schemas.get(name).is_some(), "{name}");
        }
        assert_eq!(
            schemas["NotFoundFault"]["required"],
            json!(["itemNotFound"])
        );
    }

    /// `GET /openapi.json` needs no token, even where every other request does.
    #[tokio::test]
    async fn the_document_is_served_without_a_token() {
        let dir = tempfile::tempdir().expect("tmp");
        let identity = Arc::new(
            basalt_identity::Identity::open(
                &dir.path().join("identity.db"),
                basalt_identity::IdentityConfig {
                    public_url: "http://localhost".into(),
                    region: "RegionOne".into(),
                    token_ttl_secs: 3600,
                },
            )
            .expect("identity"),
        );
        let db = basalt_db::SqliteStore::in_memory().expect("store");
        let state = Arc::new(ApiState {
            control: Arc::new(Control::new(Arc::new(db), SchedulerConfig::default())),
            auth: Auth::Builtin(identity.clone()),
            policy: Enforcer::cinder_defaults(),
            cfg: ApiConfig::default(),
            identity: Some(identity),
        });
        let app = router(state);
        let (status, _, body) = send(&app, "GET", "/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        let served: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(served, document());
        let (status, _, _) = send(&app, "GET", "/v3/volumes").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}
