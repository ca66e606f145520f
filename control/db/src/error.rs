//! The metadata store's one error type.

/// Why a store operation failed.
///
/// Each variant says whose fault it is: the request's (not found, conflict, over quota,
/// duplicate, in use, invalid), the store's (busy: retry; corrupt or too new: stop), which
/// the API maps to 404/409/413/400 and 500/503 in one place.
#[derive(Debug, displaydoc::Display, thiserror::Error)]
pub enum DbError {
    /// {kind} {id} could not be found
    NotFound {
        /// What was looked for (`volume`, `snapshot`, `volume type`, ...).
        kind: &'static str,
        /// Its id or name.
        id: String,
    },
    /// {kind} {id} is {current}; this needs one of: {expected}
    Conflict {
        /// What was changed.
        kind: &'static str,
        /// Its id.
        id: String,
        /// The state it is in.
        current: String,
        /// The states the change needed, comma separated.
        expected: String,
    },
    /// quota exceeded for {resource}: requested {requested}, but {in_use} in use and {reserved} reserved of {limit}
    OverQuota {
        /// The resource.
        resource: String,
        /// The limit.
        limit: i64,
        /// Committed use.
        in_use: i64,
        /// Reserved.
        reserved: i64,
        /// What the request asked for.
        requested: i64,
    },
    /// {kind} {id} already exists
    Duplicate {
        /// What.
        kind: &'static str,
        /// Its id or name.
        id: String,
    },
    /// {kind} {id} is in use: {why}
    InUse {
        /// What.
        kind: &'static str,
        /// Its id.
        id: String,
        /// By what.
        why: String,
    },
    /// invalid request: {0}
    Invalid(String),
    /// the database is busy; try again
    Busy,
    /// the database was written by a newer Basalt (schema {found}; this one knows up to {known})
    SchemaTooNew {
        /// The database's schema version.
        found: i64,
        /// The newest this code knows.
        known: i64,
    },
    /// database error: {0}
    Sqlite(rusqlite::Error),
    /// a stored value is corrupt: {0}
    Corrupt(String),
}

impl DbError {
    /// Whether retrying the same call may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, DbError::Busy)
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                DbError::Busy
            }
            _ => DbError::Sqlite(e),
        }
    }
}
