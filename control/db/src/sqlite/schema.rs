//! The schema, as forward-only migrations. Migration `n` (1-based) takes a database from
//! `user_version` n−1 to n; each runs in the transaction that sets the new version, so a
//! crash leaves the old or the new schema, never half of one. Never edit a released
//! migration: add one.

/// The migrations, oldest first.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: volumes, snapshots, volume types, quotas, exports, services.
    r"
CREATE TABLE volume_types (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT,
    is_public   INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    deleted     INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX volume_types_live_name ON volume_types(name) WHERE deleted = 0;
CREATE TABLE volume_type_extra_specs (
    type_id TEXT NOT NULL REFERENCES volume_types(id),
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (type_id, key)
);
CREATE TABLE volume_type_access (
    type_id    TEXT NOT NULL REFERENCES volume_types(id),
    project_id TEXT NOT NULL,
    PRIMARY KEY (type_id, project_id)
);
CREATE TABLE volumes (
    id                TEXT PRIMARY KEY,
    project_id        TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    name              TEXT,
    description       TEXT,
    size_gb           INTEGER NOT NULL CHECK (size_gb >= 0),
    status            TEXT NOT NULL,
    previous_status   TEXT,
    attach_status     TEXT NOT NULL,
    migration_status  TEXT,
    volume_type_id    TEXT REFERENCES volume_types(id),
    availability_zone TEXT NOT NULL,
    host              TEXT,
    bootable          INTEGER NOT NULL,
    multiattach       INTEGER NOT NULL,
    readonly          INTEGER NOT NULL DEFAULT 0,
    source_volid      TEXT,
    snapshot_id       TEXT,
    use_quota         INTEGER NOT NULL,
    user_message      TEXT,
    extend_to_gb      INTEGER,
    extend_reservation TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER,
    launched_at       INTEGER,
    deleted           INTEGER NOT NULL DEFAULT 0,
    deleted_at        INTEGER
);
CREATE INDEX volumes_by_project ON volumes(project_id, deleted, created_at);
CREATE INDEX volumes_by_host ON volumes(host) WHERE deleted = 0;
CREATE TABLE volume_metadata (
    volume_id TEXT NOT NULL REFERENCES volumes(id),
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (volume_id, key)
);
CREATE TABLE snapshots (
    id             TEXT PRIMARY KEY,
    project_id     TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    volume_id      TEXT NOT NULL REFERENCES volumes(id),
    volume_type_id TEXT,
    name           TEXT,
    description    TEXT,
    size_gb        INTEGER NOT NULL CHECK (size_gb >= 0),
    status         TEXT NOT NULL,
    progress       TEXT NOT NULL,
    use_quota      INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER,
    deleted        INTEGER NOT NULL DEFAULT 0,
    deleted_at     INTEGER
);
CREATE INDEX snapshots_by_project ON snapshots(project_id, deleted, created_at);
CREATE INDEX snapshots_by_volume ON snapshots(volume_id) WHERE deleted = 0;
CREATE TABLE snapshot_metadata (
    snapshot_id TEXT NOT NULL REFERENCES snapshots(id),
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, key)
);
CREATE TABLE quota_class_limits (
    class      TEXT NOT NULL,
    resource   TEXT NOT NULL,
    hard_limit INTEGER NOT NULL CHECK (hard_limit >= -1),
    PRIMARY KEY (class, resource)
);
INSERT INTO quota_class_limits (class, resource, hard_limit) VALUES
    ('default', 'volumes', 10),
    ('default', 'snapshots', 10),
    ('default', 'gigabytes', 1000),
    ('default', 'backups', 10),
    ('default', 'backup_gigabytes', 1000),
    ('default', 'groups', 10),
    ('default', 'per_volume_gigabytes', -1);
CREATE TABLE quota_limits (
    project_id TEXT NOT NULL,
    resource   TEXT NOT NULL,
    hard_limit INTEGER NOT NULL CHECK (hard_limit >= -1),
    PRIMARY KEY (project_id, resource)
);
CREATE TABLE quota_usages (
    project_id TEXT NOT NULL,
    resource   TEXT NOT NULL,
    in_use     INTEGER NOT NULL CHECK (in_use >= 0),
    reserved   INTEGER NOT NULL CHECK (reserved >= 0),
    PRIMARY KEY (project_id, resource)
);
CREATE TABLE reservations (
    id         TEXT NOT NULL,
    project_id TEXT NOT NULL,
    resource   TEXT NOT NULL,
    delta      INTEGER NOT NULL,
    expire     INTEGER NOT NULL,
    PRIMARY KEY (id, resource)
);
CREATE INDEX reservations_by_expiry ON reservations(expire);
CREATE TABLE exports (
    volume_id   TEXT NOT NULL REFERENCES volumes(id),
    protocol    TEXT NOT NULL,
    target      TEXT NOT NULL,
    hosts       TEXT NOT NULL,
    chap_user   TEXT,
    chap_secret TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (volume_id, protocol)
);
CREATE TABLE services (
    host              TEXT NOT NULL,
    binary            TEXT NOT NULL,
    availability_zone TEXT NOT NULL,
    disabled          INTEGER NOT NULL DEFAULT 0,
    disabled_reason   TEXT,
    report_count      INTEGER NOT NULL DEFAULT 0,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (host, binary)
);
",
    // 2: attachments, volume transfers, user messages, per-project default volume types.
    r"
CREATE TABLE volume_attachments (
    id              TEXT PRIMARY KEY,
    volume_id       TEXT NOT NULL REFERENCES volumes(id),
    project_id      TEXT NOT NULL,
    instance_uuid   TEXT,
    attached_host   TEXT,
    mountpoint      TEXT,
    attach_mode     TEXT NOT NULL CHECK (attach_mode IN ('rw', 'ro')),
    attach_status   TEXT NOT NULL,
    connector       TEXT,
    connection_info TEXT,
    attach_time     INTEGER,
    detach_time     INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER,
    deleted         INTEGER NOT NULL DEFAULT 0,
    deleted_at      INTEGER
);
CREATE INDEX volume_attachments_by_volume ON volume_attachments(volume_id) WHERE deleted = 0;
CREATE INDEX volume_attachments_by_project ON volume_attachments(project_id, deleted, created_at);
CREATE TABLE transfers (
    id                     TEXT PRIMARY KEY,
    volume_id              TEXT NOT NULL REFERENCES volumes(id),
    name                   TEXT,
    salt                   TEXT NOT NULL,
    crypt_hash             TEXT NOT NULL,
    source_project_id      TEXT NOT NULL,
    destination_project_id TEXT,
    accepted               INTEGER NOT NULL DEFAULT 0,
    no_snapshots           INTEGER NOT NULL DEFAULT 0,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER,
    deleted                INTEGER NOT NULL DEFAULT 0,
    deleted_at             INTEGER
);
CREATE INDEX transfers_by_source ON transfers(source_project_id, deleted, created_at);
CREATE INDEX transfers_by_volume ON transfers(volume_id) WHERE deleted = 0;
CREATE TABLE messages (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL,
    request_id    TEXT,
    resource_type TEXT NOT NULL,
    resource_uuid TEXT,
    event_id      TEXT NOT NULL,
    message_level TEXT NOT NULL,
    user_message  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    deleted       INTEGER NOT NULL DEFAULT 0,
    deleted_at    INTEGER
);
CREATE INDEX messages_by_project ON messages(project_id, deleted, created_at);
CREATE INDEX messages_by_expiry ON messages(expires_at);
CREATE TABLE default_volume_types (
    project_id     TEXT PRIMARY KEY,
    volume_type_id TEXT NOT NULL REFERENCES volume_types(id),
    created_at     INTEGER NOT NULL
);
CREATE INDEX default_volume_types_by_type ON default_volume_types(volume_type_id);
",
    // 3: whether a volume's read-only flag was ever set (Cinder shows it in the metadata
    // from then on, as its `readonly` admin metadata).
    r"
ALTER TABLE volumes ADD COLUMN readonly_set INTEGER NOT NULL DEFAULT 0;
",
];
