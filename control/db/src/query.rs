//! How lists are asked for: filters, sort keys and pagination over whitelisted fields, so no
//! caller writes SQL and every backend can answer.

/// A field lists can be filtered on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// Display name.
    Name,
    /// Status (an attachment's `attach_status`).
    Status,
    /// Size in GiB.
    Size,
    /// Availability zone.
    AvailabilityZone,
    /// `host@backend#pool` (volumes).
    Host,
    /// Bootable (volumes).
    Bootable,
    /// Volume type id.
    VolumeTypeId,
    /// The volume a snapshot, attachment or transfer belongs to.
    VolumeId,
    /// The instance an attachment is for (attachments).
    InstanceUuid,
    /// The resource a message is about (messages).
    ResourceUuid,
    /// The kind of resource a message is about: `VOLUME`, ... (messages).
    ResourceType,
    /// A message's event id (messages).
    EventId,
    /// The request a message came from (messages).
    RequestId,
    /// A message's level (messages).
    MessageLevel,
    /// Created.
    CreatedAt,
    /// Last changed.
    UpdatedAt,
    /// A metadata key's value.
    Metadata(String),
}

/// How a filter compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Contains (Cinder's `~=` inexact match).
    Like,
    /// Greater than.
    Gt,
    /// Greater or equal.
    Ge,
    /// Less than.
    Lt,
    /// Less or equal.
    Le,
}

/// A filter's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    /// Text.
    Text(String),
    /// A number.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

/// A sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Id.
    Id,
    /// Display name.
    Name,
    /// Status.
    Status,
    /// Size.
    Size,
    /// Created.
    CreatedAt,
    /// Last changed.
    UpdatedAt,
    /// Availability zone.
    AvailabilityZone,
}

/// A sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Ascending.
    Asc,
    /// Descending.
    Desc,
}

/// A list request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListQuery {
    /// Only this project's rows (a transfer's source project); every project's when `None`
    /// (admins' `all_tenants`).
    pub project_id: Option<String>,
    /// Every filter must hold.
    pub filters: Vec<(Field, FilterOp, Val)>,
    /// Sort order; `created_at desc` when empty. The id breaks ties, in the first key's
    /// direction, so pages never overlap or skip.
    pub sort: Vec<(SortKey, Dir)>,
    /// At most this many rows.
    pub limit: Option<u64>,
    /// Start after this id (which must match the other filters' visibility: an unknown or
    /// invisible marker is [`crate::DbError::NotFound`]).
    pub marker: Option<String>,
    /// Skip this many rows (after the marker).
    pub offset: Option<u64>,
}

impl ListQuery {
    /// Every row of `project`.
    pub fn project(project: &str) -> ListQuery {
        ListQuery {
            project_id: Some(project.to_owned()),
            ..ListQuery::default()
        }
    }

    /// Adds a filter.
    #[must_use]
    pub fn filter(mut self, field: Field, op: FilterOp, val: Val) -> ListQuery {
        self.filters.push((field, op, val));
        self
    }

    /// Adds a sort key.
    #[must_use]
    pub fn sort_by(mut self, key: SortKey, dir: Dir) -> ListQuery {
        self.sort.push((key, dir));
        self
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// How many rows match the filters in all (Cinder's `with_count`).
    pub count: u64,
}
