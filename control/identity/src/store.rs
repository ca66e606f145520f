//! The built-in identity service's state: users, projects, roles, assignments and tokens in
//! their own SQLite file.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use crate::model::{
    Bootstrap, Credentials, DEFAULT_DOMAIN_ID, Domain, DomainRef, IssuedToken, Project,
    ProjectPatch, ProjectRef, Role, RoleAssignment, Scope, TokenInfo, User, UserPatch, UserRef,
};
use crate::secret::{self, sha256};
use crate::time::{format_micros, now_micros, secs_to_micros};
use crate::{AuthContext, AuthError, IdentityError};

/// Settings of the built-in identity service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// The API's public base URL, e.g. `http://127.0.0.1:8776`: the catalog's block-storage
    /// endpoints are `{public_url}/v3/{project_id}`, and identity is `{public_url}/identity`.
    pub public_url: String,
    /// The catalog's region (`RegionOne`).
    pub region: String,
    /// How long a token lives, in seconds (3600).
    pub token_ttl_secs: u64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            public_url: "http://127.0.0.1:8776".to_owned(),
            region: "RegionOne".to_owned(),
            token_ttl_secs: 3600,
        }
    }
}

/// The roles every installation has, with what each implies (Keystone's defaults since
/// Rocky: admin ⇒ member ⇒ reader).
const ROLES: &[(&str, &str)] = &[
    ("admin", "Cloud administrator"),
    ("member", "Read and write access to a project's resources"),
    ("reader", "Read-only access to a project's resources"),
    ("service", "OpenStack services calling each other"),
];
const IMPLIED: &[(&str, &str)] = &[("admin", "member"), ("member", "reader")];

/// Schema migrations: entry `n` takes `user_version` from `n` to `n + 1`. Forward only; never
/// edit one that has shipped, append a new one.
const MIGRATIONS: &[&str] = &[r"
CREATE TABLE domains (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    enabled INTEGER NOT NULL DEFAULT 1
);
INSERT INTO domains (id, name, description, enabled)
    VALUES ('default', 'Default', 'The default domain', 1);
CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL REFERENCES domains (id),
    name TEXT NOT NULL,
    description TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    UNIQUE (domain_id, name)
);
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL REFERENCES domains (id),
    name TEXT NOT NULL,
    password_hash TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    default_project_id TEXT REFERENCES projects (id) ON DELETE SET NULL,
    description TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (domain_id, name)
);
CREATE TABLE roles (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT
);
CREATE TABLE implied_roles (
    prior_role_id TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    implied_role_id TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (prior_role_id, implied_role_id)
);
CREATE TABLE assignments (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    role_id TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, project_id, role_id)
);
CREATE INDEX assignments_by_project ON assignments (project_id);
CREATE INDEX users_by_default_project ON users (default_project_id);
CREATE TABLE tokens (
    hash BLOB PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id TEXT REFERENCES projects (id) ON DELETE CASCADE,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    audit_id TEXT NOT NULL,
    parent_audit_id TEXT,
    methods TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX tokens_by_user ON tokens (user_id);
CREATE INDEX tokens_by_project ON tokens (project_id);
CREATE INDEX tokens_by_expiry ON tokens (expires_at);
"];

/// How many read connections validate tokens side by side (SQLite's WAL lets readers run
/// while the one writer commits).
const READERS: usize = 4;
/// The longest name Keystone accepts for a user or project.
const MAX_NAME: usize = 255;

const USER_COLS: &str = "u.id, u.name, u.domain_id, d.name, u.enabled, u.default_project_id, \
                         u.description FROM users u JOIN domains d ON d.id = u.domain_id";
const PROJECT_COLS: &str = "p.id, p.name, p.description, p.domain_id, d.name, p.enabled \
                            FROM projects p JOIN domains d ON d.id = p.domain_id";

/// The built-in identity service (a Keystone v3 subset) over its own SQLite file.
///
/// Every method blocks (SQLite, and argon2 for the ones that check or set a password): async
/// callers run them on a blocking thread, as [`crate::Auth::authenticate`] and
/// [`crate::router`] do.
pub struct Identity {
    cfg: IdentityConfig,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves no half-done transaction (it rolls back when
    // dropped), so the connection is still sound.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Identity {
    /// Opens (creating if needed) the identity database at `path`: WAL journal,
    /// `synchronous=FULL`, foreign keys on, forward-only migrations, and the four roles.
    ///
    /// # Errors
    /// The file cannot be opened, is not a database, or was written by a newer Basalt
    /// ([`IdentityError::SchemaTooNew`]). A new file (and its folder) is created readable by
    /// its owner only: it holds password hashes.
    pub fn open(path: &Path, cfg: IdentityConfig) -> Result<Identity, IdentityError> {
        create_private(path)?;
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(IdentityError::Internal(format!(
                "the identity database refused the WAL journal (journal mode {mode})"
            )));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        migrate(&mut conn)?;
        {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            seed_roles(&tx)?;
            tx.commit()?;
        }
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open(path)?;
            r.busy_timeout(Duration::from_secs(5))?;
            r.execute_batch("PRAGMA foreign_keys = ON; PRAGMA query_only = ON;")?;
            readers.push(Mutex::new(r));
        }
        let mut cfg = cfg;
        while cfg.public_url.ends_with('/') {
            cfg.public_url.pop();
        }
        Ok(Identity {
            cfg,
            writer: Mutex::new(conn),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// Its configuration (`public_url` without a trailing slash).
    pub fn config(&self) -> &IdentityConfig {
        &self.cfg
    }

    /// `{public_url}/identity`: Keystone's root, what a 401 names in `WWW-Authenticate`.
    pub fn www_authenticate_uri(&self) -> String {
        format!("{}/identity", self.cfg.public_url)
    }

    /// The schema version of the open database.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn schema_version(&self) -> Result<i64, IdentityError> {
        self.read(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        for r in &self.readers {
            match r.try_lock() {
                Ok(g) => return g,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        lock(&self.readers[i])
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, IdentityError>,
    ) -> Result<T, IdentityError> {
        let mut conn = self.reader();
        // One snapshot for every statement of the read.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, IdentityError>,
    ) -> Result<T, IdentityError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Makes sure the admin project, the admin user (with `admin_password`) and its `admin`
    /// role on that project exist, creating what is missing. Idempotent: run it at every
    /// start. If the user exists with another password, the password is **reset** to
    /// `admin_password` (as `keystone-manage bootstrap` does) and the user's tokens are
    /// revoked; a user that was disabled is enabled again.
    ///
    /// # Errors
    /// Invalid names or an empty password, or SQLite failed.
    pub fn bootstrap(
        &self,
        admin_user: &str,
        admin_password: &str,
        admin_project: &str,
    ) -> Result<Bootstrap, IdentityError> {
        check_name("user", admin_user)?;
        check_name("project", admin_project)?;
        if admin_password.is_empty() {
            return Err(IdentityError::Invalid(
                "the admin password must not be empty".into(),
            ));
        }
        // Hash (or verify) outside the write lock: argon2 takes tens of milliseconds.
        let existing: Option<Option<String>> = self.read(|c| {
            Ok(c.query_row(
                "SELECT password_hash FROM users WHERE domain_id = ?1 AND name = ?2",
                params![DEFAULT_DOMAIN_ID, admin_user],
                |r| r.get(0),
            )
            .optional()?)
        })?;
        let new_hash = match &existing {
            Some(Some(h)) if secret::verify_password(admin_password, h) => None,
            _ => Some(secret::hash_password(admin_password)?),
        };
        let project_id = secret::new_id()?;
        let user_id = secret::new_id()?;
        self.write(|tx| {
            let project_id = match project_by_name(tx, DEFAULT_DOMAIN_ID, admin_project)? {
                Some(p) => p.id,
                None => {
                    tx.execute(
                        "INSERT INTO projects (id, domain_id, name, description, enabled, \
                         created_at) VALUES (?1, ?2, ?3, ?4, 1, ?5)",
                        params![
                            project_id,
                            DEFAULT_DOMAIN_ID,
                            admin_project,
                            "Bootstrap project for initializing the cloud.",
                            now_micros()
                        ],
                    )?;
                    project_id
                }
            };
            let user_id = match user_by_name(tx, DEFAULT_DOMAIN_ID, admin_user)? {
                Some(u) => {
                    if let Some(h) = &new_hash {
                        tx.execute(
                            "UPDATE users SET password_hash = ?2 WHERE id = ?1",
                            params![u.id, h],
                        )?;
                        tx.execute("DELETE FROM tokens WHERE user_id = ?1", [&u.id])?;
                    }
                    tx.execute(
                        "UPDATE users SET enabled = 1, \
                         default_project_id = COALESCE(default_project_id, ?2) WHERE id = ?1",
                        params![u.id, project_id],
                    )?;
                    u.id
                }
                None => {
                    tx.execute(
                        "INSERT INTO users (id, domain_id, name, password_hash, enabled, \
                         default_project_id, created_at) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6)",
                        params![
                            user_id,
                            DEFAULT_DOMAIN_ID,
                            admin_user,
                            new_hash,
                            project_id,
                            now_micros()
                        ],
                    )?;
                    user_id
                }
            };
            let role = role_by_name(tx, "admin")?
                .ok_or_else(|| IdentityError::Internal("the admin role is missing".into()))?;
            tx.execute(
                "INSERT OR IGNORE INTO assignments (user_id, project_id, role_id) \
                 VALUES (?1, ?2, ?3)",
                params![user_id, project_id, role.id],
            )?;
            Ok(Bootstrap {
                user_id,
                project_id,
            })
        })
    }

    // ---------------------------------------------------------------- projects

    /// Creates an enabled project in the default domain.
    ///
    /// # Errors
    /// [`IdentityError::Conflict`] if the name is taken; [`IdentityError::Invalid`] for a bad
    /// name; SQLite failed.
    pub fn create_project(
        &self,
        name: &str,
        description: Option<&str>,
    ) -> Result<Project, IdentityError> {
        self.create_project_in(DEFAULT_DOMAIN_ID, name, description, true)
    }

    /// Creates a project in domain `domain_id` (which must exist: only `default` does).
    ///
    /// # Errors
    /// As [`Identity::create_project`]; [`IdentityError::NotFound`] for an unknown domain.
    pub fn create_project_in(
        &self,
        domain_id: &str,
        name: &str,
        description: Option<&str>,
        enabled: bool,
    ) -> Result<Project, IdentityError> {
        check_name("project", name)?;
        let id = secret::new_id()?;
        self.write(|tx| {
            domain_by_id(tx, domain_id)?
                .ok_or_else(|| IdentityError::not_found("domain", domain_id))?;
            if project_by_name(tx, domain_id, name)?.is_some() {
                return Err(IdentityError::Conflict(format!(
                    "it is not permitted to have two projects with the same name in the same \
                     domain: {name}"
                )));
            }
            tx.execute(
                "INSERT INTO projects (id, domain_id, name, description, enabled, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, domain_id, name, description, enabled, now_micros()],
            )?;
            project_by_id(tx, &id)?.ok_or_else(|| IdentityError::not_found("project", &id))
        })
    }

    /// A project by id, or else by name in the default domain.
    ///
    /// # Errors
    /// [`IdentityError::NotFound`]; SQLite failed.
    pub fn get_project(&self, project: &str) -> Result<Project, IdentityError> {
        self.read(|c| {
            find_project(c, project)?.ok_or_else(|| IdentityError::not_found("project", project))
        })
    }

    /// Changes a project (by name or id).
    ///
    /// # Errors
    /// [`IdentityError::NotFound`], [`IdentityError::Conflict`] for a taken name,
    /// [`IdentityError::Invalid`]; SQLite failed.
    pub fn update_project(
        &self,
        project: &str,
        patch: &ProjectPatch,
    ) -> Result<Project, IdentityError> {
        if let Some(n) = &patch.name {
            check_name("project", n)?;
        }
        self.write(|tx| {
            let p = find_project(tx, project)?
                .ok_or_else(|| IdentityError::not_found("project", project))?;
            if let Some(n) = &patch.name
                && *n != p.name
            {
                if project_by_name(tx, &p.domain_id, n)?.is_some() {
                    return Err(IdentityError::Conflict(format!(
                        "it is not permitted to have two projects with the same name in the \
                         same domain: {n}"
                    )));
                }
                tx.execute(
                    "UPDATE projects SET name = ?2 WHERE id = ?1",
                    params![p.id, n],
                )?;
            }
            if let Some(d) = &patch.description {
                tx.execute(
                    "UPDATE projects SET description = ?2 WHERE id = ?1",
                    params![p.id, d],
                )?;
            }
            if let Some(e) = patch.enabled {
                tx.execute(
                    "UPDATE projects SET enabled = ?2 WHERE id = ?1",
                    params![p.id, e],
                )?;
            }
            project_by_id(tx, &p.id)?.ok_or_else(|| IdentityError::not_found("project", &p.id))
        })
    }

    /// Deletes a project (by name or id), with its role assignments and the tokens scoped to
    /// it; users whose default project it was lose their default.
    ///
    /// # Errors
    /// [`IdentityError::NotFound`]; SQLite failed.
    pub fn delete_project(&self, project: &str) -> Result<(), IdentityError> {
        self.write(|tx| {
            let p = find_project(tx, project)?
                .ok_or_else(|| IdentityError::not_found("project", project))?;
            tx.execute("DELETE FROM projects WHERE id = ?1", [&p.id])?;
            Ok(())
        })
    }

    /// Every project, by name.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn list_projects(&self) -> Result<Vec<Project>, IdentityError> {
        self.read(|c| {
            let mut st = c.prepare(&format!("SELECT {PROJECT_COLS} ORDER BY p.name, p.id"))?;
            let rows = st.query_map([], row_project)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The projects `user` (name or id) has a role on, by name.
    ///
    /// # Errors
    /// [`IdentityError::NotFound`]; SQLite failed.
    pub fn user_projects(&self, user: &str) -> Result<Vec<Project>, IdentityError> {
        self.read(|c| {
            let u = find_user(c, user)?.ok_or_else(|| IdentityError::not_found("user", user))?;
            let mut st = c.prepare(&format!(
                "SELECT {PROJECT_COLS} WHERE p.id IN \
                 (SELECT project_id FROM assignments WHERE user_id = ?1) ORDER BY p.name, p.id"
            ))?;
            let rows = st.query_map([&u.id], row_project)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    // ---------------------------------------------------------------- users

    /// Creates an enabled user in the default domain, with a default project (name or id).
    ///
    /// # Errors
    /// [`IdentityError::Conflict`] if the name is taken, [`IdentityError::Invalid`] for a bad
    /// name or an empty password, [`IdentityError::NotFound`] for an unknown project; SQLite
    /// failed.
    pub fn create_user(
        &self,
        name: &str,
        password: &str,
        default_project: Option<&str>,
    ) -> Result<User, IdentityError> {
        if password.is_empty() {
            return Err(IdentityError::Invalid(
                "the password must not be empty".into(),
            ));
        }
        self.create_user_in(
            DEFAULT_DOMAIN_ID,
            name,
            Some(password),
            default_project,
            true,
            None,
        )
    }

    /// Creates a user in domain `domain_id`; without a password it cannot authenticate until
    /// one is set.
    ///
    /// # Errors
    /// As [`Identity::create_user`]; [`IdentityError::NotFound`] for an unknown domain.
    pub fn create_user_in(
        &self,
        domain_id: &str,
        name: &str,
        password: Option<&str>,
        default_project: Option<&str>,
        enabled: bool,
        description: Option<&str>,
    ) -> Result<User, IdentityError> {
        check_name("user", name)?;
        let hash = password.map(secret::hash_password).transpose()?;
        let id = secret::new_id()?;
        self.write(|tx| {
            domain_by_id(tx, domain_id)?
                .ok_or_else(|| IdentityError::not_found("domain", domain_id))?;
            if user_by_name(tx, domain_id, name)?.is_some() {
                return Err(IdentityError::Conflict(format!(
                    "it is not permitted to have two users with the same name in the same \
                     domain: {name}"
                )));
            }
            let project = default_project
                .map(|p| find_project(tx, p)?.ok_or_else(|| IdentityError::not_found("project", p)))
                .transpose()?;
            tx.execute(
                "INSERT INTO users (id, domain_id, name, password_hash, enabled, \
                 default_project_id, description, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    id,
                    domain_id,
                    name,
                    hash,
                    enabled,
                    project.map(|p| p.id),
                    description,
                    now_micros()
                ],
            )?;
            user_by_id(tx, &id)?.ok_or_else(|| IdentityError::not_found("user", &id))
        })
    }

    /// A user by id, or else by name in the default domain.
    ///
    /// # Errors
    /// [`IdentityError::NotFound`]; SQLite failed.
    pub fn get_user(&self, user: &str) -> Result<User, IdentityError> {
        self.read(|c| find_user(c, user)?.ok_or_else(|| IdentityError::not_found("user", user)))
    }

    /// Changes a user (by name or id). A new password, or disabling the user, revokes its
    /// tokens.
    ///
    /// # Errors
    /// [`IdentityError::NotFound`], [`IdentityError::Conflict`] for a taken name,
    /// [`IdentityError::Invalid`]; SQLite failed.
    pub fn update_user(&self, user: &str, patch: &UserPatch) -> Result<User, IdentityError> {
        if let Some(n) = &patch.name {
            check_name("user", n)?;
        }
        let hash = match &patch.password {
            Some(p) if p.is_empty() => {
                return Err(IdentityError::Invalid(
                    "the password must not be empty".into(),
                ));
            }
            Some(p) => Some(secret::hash_password(p)?),
            None => None,
        };
        self.write(|tx| {
            let u = find_user(tx, user)?.ok_or_else(|| IdentityError::not_found("user", user))?;
            if let Some(n) = &patch.name
                && *n != u.name
            {
                if user_by_name(tx, &u.domain_id, n)?.is_some() {
                    return Err(IdentityError::Conflict(format!(
                        "it is not permitted to have two users with the same name in the same \
                         domain: {n}"
                    )));
                }
                tx.execute("UPDATE users SET name = ?2 WHERE id = ?1", params![u.id, n])?;
            }
            if let Some(h) = &hash {
                tx.execute(
                    "UPDATE users SET password_hash = ?2 WHERE id = ?1",
                    params![u.id, h],
                )?;
                tx.execute("DELETE FROM tokens WHERE user_id = ?1", [&u.id])?;
            }
            if let Some(e) = patch.enabled {
                tx.execute(
                    "UPDATE users SET enabled = ?2 WHERE id = ?1",
                    params![u.id, e],
                )?;
                if !e {
                    tx.execute("DELETE FROM tokens WHERE user_id = ?1", [&u.id])?;
                }
            }
            if let Some(dp) = &patch.default_project {
                let pid = dp
                    .as_deref()
                    .map(|p| {
                        find_project(tx, p)?
                            .map(|p| p.id)
                            .ok_or_else(|| IdentityError::not_found("project", p))
                    })
                    .transpose()?;
                tx.execute(
                    "UPDATE users SET default_project_id = ?2 WHERE id = ?1",
                    params![u.id, pid],
                )?;
            }
            if let Some(d) = &patch.description {
                tx.execute(
                    "UPDATE users SET description = ?2 WHERE id = ?1",
                    params![u.id, d],
                )?;
            }
            user_by_id(tx, &u.id)?.ok_or_else(|| IdentityError::not_found("user", &u.id))
        })
    }

    /// Sets a user's (name or id) password and revokes its tokens.
    ///
    /// # Errors
    /// [`IdentityError::NotFound`], [`IdentityError::Invalid`] for an empty password; SQLite
    /// failed.
    pub fn set_password(&self, user: &str, password: &str) -> Result<(), IdentityError> {
        self.update_user(
            user,
            &UserPatch {
                password: Some(password.to_owned()),
                ..UserPatch::default()
            },
        )
        .map(|_| ())
    }

    /// A user's own password change (Keystone's `POST /v3/users/{id}/password`): checks
    /// `original` first.
    ///
    /// # Errors
    /// [`IdentityError::Unauthorized`] if `original` is wrong (or the user is unknown or
    /// disabled); as [`Identity::set_password`].
    pub fn change_password(
        &self,
        user_id: &str,
        original: &str,
        password: &str,
    ) -> Result<(), IdentityError> {
        let row = self.read(|c| user_with_hash(c, &UserRef::Id(user_id.to_owned())))?;
        let ok = match &row {
            Some((u, Some(h))) => secret::verify_password(original, h) && u.enabled,
            _ => {
                secret::verify_dummy(original);
                false
            }
        };
        if !ok {
            return Err(IdentityError::Unauthorized(
                "the original password is wrong".into(),
            ));
        }
        self.set_password(user_id, password)
    }

    /// Deletes a user (by name or id) with its role assignments and tokens.
    ///
    /// # Errors
    /// [`IdentityError::NotFound`]; SQLite failed.
    pub fn delete_user(&self, user: &str) -> Result<(), IdentityError> {
        self.write(|tx| {
            let u = find_user(tx, user)?.ok_or_else(|| IdentityError::not_found("user", user))?;
            tx.execute("DELETE FROM users WHERE id = ?1", [&u.id])?;
            Ok(())
        })
    }

    /// Every user, by name.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn list_users(&self) -> Result<Vec<User>, IdentityError> {
        self.read(|c| {
            let mut st = c.prepare(&format!("SELECT {USER_COLS} ORDER BY u.name, u.id"))?;
            let rows = st.query_map([], row_user)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    // ---------------------------------------------------------------- roles

    /// Every role, by name.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn list_roles(&self) -> Result<Vec<Role>, IdentityError> {
        self.read(|c| {
            let mut st = c.prepare("SELECT id, name, description FROM roles ORDER BY name")?;
            let rows = st.query_map([], row_role)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// A role by id or name.
    ///
    /// # Errors
    /// [`IdentityError::NotFound`]; SQLite failed.
    pub fn get_role(&self, role: &str) -> Result<Role, IdentityError> {
        self.read(|c| find_role(c, role)?.ok_or_else(|| IdentityError::not_found("role", role)))
    }

    /// Grants `role` to `user` on `project` (each by name or id). Idempotent.
    ///
    /// # Errors
    /// [`IdentityError::NotFound`] for any of the three; SQLite failed.
    pub fn grant_role(&self, user: &str, project: &str, role: &str) -> Result<(), IdentityError> {
        self.write(|tx| {
            let (u, p, r) = resolve_grant(tx, user, project, role)?;
            tx.execute(
                "INSERT OR IGNORE INTO assignments (user_id, project_id, role_id) \
                 VALUES (?1, ?2, ?3)",
                params![u, p, r],
            )?;
            Ok(())
        })
    }

    /// Revokes a granted role; tokens lose it at once (roles are recomputed at every
    /// validation, and a project-scoped token with no role left stops validating).
    ///
    /// # Errors
    /// [`IdentityError::NotFound`] for any of the three or for an assignment that does not
    /// exist; SQLite failed.
    pub fn revoke_role(&self, user: &str, project: &str, role: &str) -> Result<(), IdentityError> {
        self.write(|tx| {
            let (u, p, r) = resolve_grant(tx, user, project, role)?;
            let n = tx.execute(
                "DELETE FROM assignments WHERE user_id = ?1 AND project_id = ?2 AND role_id = ?3",
                params![u, p, r],
            )?;
            if n == 0 {
                return Err(IdentityError::not_found(
                    "role assignment",
                    &format!("{role} for {user} on {project}"),
                ));
            }
            Ok(())
        })
    }

    /// Whether `role` is granted (directly) to `user` on `project`.
    ///
    /// # Errors
    /// [`IdentityError::NotFound`] for any of the three; SQLite failed.
    pub fn has_grant(&self, user: &str, project: &str, role: &str) -> Result<bool, IdentityError> {
        self.read(|c| {
            let (u, p, r) = resolve_grant(c, user, project, role)?;
            Ok(c.query_row(
                "SELECT 1 FROM assignments WHERE user_id = ?1 AND project_id = ?2 AND role_id = ?3",
                params![u, p, r],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
        })
    }

    /// The roles granted directly to `user` on `project` (names or ids), by name.
    ///
    /// # Errors
    /// [`IdentityError::NotFound`]; SQLite failed.
    pub fn granted_roles(&self, user: &str, project: &str) -> Result<Vec<Role>, IdentityError> {
        self.read(|c| {
            let u = find_user(c, user)?.ok_or_else(|| IdentityError::not_found("user", user))?;
            let p = find_project(c, project)?
                .ok_or_else(|| IdentityError::not_found("project", project))?;
            let mut st = c.prepare(
                "SELECT r.id, r.name, r.description FROM roles r JOIN assignments a \
                 ON a.role_id = r.id WHERE a.user_id = ?1 AND a.project_id = ?2 ORDER BY r.name",
            )?;
            let rows = st.query_map(params![u.id, p.id], row_role)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Every granted role, by user, project and role name.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn role_assignments(&self) -> Result<Vec<RoleAssignment>, IdentityError> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT u.id, u.name, p.id, p.name, r.id, r.name FROM assignments a \
                 JOIN users u ON u.id = a.user_id JOIN projects p ON p.id = a.project_id \
                 JOIN roles r ON r.id = a.role_id ORDER BY u.name, p.name, r.name",
            )?;
            let rows = st.query_map([], |r| {
                Ok(RoleAssignment {
                    user_id: r.get(0)?,
                    user_name: r.get(1)?,
                    project_id: r.get(2)?,
                    project_name: r.get(3)?,
                    role_id: r.get(4)?,
                    role_name: r.get(5)?,
                    prior_role_id: None,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// [`Identity::role_assignments`] with the roles they imply added (Keystone's
    /// `?effective`); an implied one names the granted role in `prior_role_id`.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn effective_role_assignments(&self) -> Result<Vec<RoleAssignment>, IdentityError> {
        let direct = self.role_assignments()?;
        let (roles, implied) = self.read(|c| {
            let mut st = c.prepare("SELECT id, name, description FROM roles")?;
            let roles: Vec<Role> = st.query_map([], row_role)?.collect::<Result<_, _>>()?;
            let mut st = c.prepare("SELECT prior_role_id, implied_role_id FROM implied_roles")?;
            let implied: Vec<(String, String)> = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok((roles, implied))
        })?;
        let mut out = Vec::with_capacity(direct.len() * 2);
        let mut seen = BTreeSet::new();
        for a in &direct {
            seen.insert((a.user_id.clone(), a.project_id.clone(), a.role_id.clone()));
        }
        for a in direct {
            let mut stack = vec![a.role_id.clone()];
            let prior = a.role_id.clone();
            out.push(a.clone());
            while let Some(r) = stack.pop() {
                for (_, i) in implied.iter().filter(|(p, _)| *p == r) {
                    if seen.insert((a.user_id.clone(), a.project_id.clone(), i.clone())) {
                        let name = roles
                            .iter()
                            .find(|x| x.id == *i)
                            .map(|x| x.name.clone())
                            .unwrap_or_default();
                        out.push(RoleAssignment {
                            role_id: i.clone(),
                            role_name: name,
                            prior_role_id: Some(prior.clone()),
                            ..a.clone()
                        });
                        stack.push(i.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- domains

    /// Every domain (only `default`).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn list_domains(&self) -> Result<Vec<Domain>, IdentityError> {
        self.read(|c| {
            let mut st =
                c.prepare("SELECT id, name, description, enabled FROM domains ORDER BY name")?;
            let rows = st.query_map([], row_domain)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// A domain by id.
    ///
    /// # Errors
    /// [`IdentityError::NotFound`]; SQLite failed.
    pub fn get_domain(&self, id: &str) -> Result<Domain, IdentityError> {
        self.read(|c| domain_by_id(c, id)?.ok_or_else(|| IdentityError::not_found("domain", id)))
    }

    // ---------------------------------------------------------------- tokens

    /// Authenticates and issues a token (Keystone's `POST /v3/auth/tokens`). A password is
    /// checked with argon2 (tens of milliseconds). A rescoped token (the `token` method)
    /// keeps the original's expiry, and its audit id as the second audit id.
    ///
    /// # Errors
    /// [`IdentityError::Unauthorized`] for wrong credentials, a disabled or unknown user, an
    /// unknown or disabled project, or a project the user has no role on; SQLite failed.
    pub fn issue_token(
        &self,
        credentials: &Credentials,
        scope: &Scope,
    ) -> Result<IssuedToken, IdentityError> {
        let now = now_micros();
        let (user, methods, expires_at, parent_audit) = match credentials {
            Credentials::Password { user, password } => {
                let row = self.read(|c| user_with_hash(c, user))?;
                let ok = match &row {
                    Some((_, Some(h))) => secret::verify_password(password, h),
                    _ => {
                        secret::verify_dummy(password);
                        false
                    }
                };
                let Some((u, _)) = row.filter(|_| ok) else {
                    return Err(IdentityError::Unauthorized(
                        "the user name or password is wrong".into(),
                    ));
                };
                if !u.enabled {
                    return Err(IdentityError::Unauthorized(format!(
                        "user {} is disabled",
                        u.id
                    )));
                }
                let ttl = secs_to_micros(self.cfg.token_ttl_secs);
                (
                    u,
                    vec!["password".to_owned()],
                    now.saturating_add(ttl),
                    None,
                )
            }
            Credentials::Token(t) => {
                let info = self.token_info(t)?.ok_or_else(|| {
                    IdentityError::Unauthorized("the token is invalid or expired".into())
                })?;
                let mut methods = vec!["token".to_owned()];
                for m in info.methods {
                    if !methods.contains(&m) {
                        methods.push(m);
                    }
                }
                let parent = info.audit_ids.last().cloned();
                (info.user, methods, info.expires_at_us, parent)
            }
        };
        let (project, roles) = self.read(|c| resolve_scope(c, &user, scope))?;
        let token = secret::new_token()?;
        let audit_id = secret::new_audit_id()?;
        let hash = sha256(&token);
        self.write(|tx| {
            tx.execute("DELETE FROM tokens WHERE expires_at <= ?1", [now])?;
            tx.execute(
                "INSERT INTO tokens (hash, user_id, project_id, issued_at, expires_at, audit_id, \
                 parent_audit_id, methods) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    hash.as_slice(),
                    user.id,
                    project.as_ref().map(|p| p.id.clone()),
                    now,
                    expires_at,
                    audit_id,
                    parent_audit,
                    methods.join(",")
                ],
            )?;
            Ok(())
        })?;
        let mut audit_ids = vec![audit_id];
        audit_ids.extend(parent_audit);
        Ok(IssuedToken {
            token,
            info: TokenInfo {
                user,
                project,
                roles,
                methods,
                issued_at: format_micros(now),
                expires_at: format_micros(expires_at),
                audit_ids,
                expires_at_us: expires_at,
            },
        })
    }

    /// What a token is, if it is valid: not expired, not revoked, its user enabled and, when
    /// scoped, its project enabled with at least one role of the user on it. Roles come from
    /// the current assignments.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn token_info(&self, token: &str) -> Result<Option<TokenInfo>, IdentityError> {
        let hash = sha256(token);
        let now = now_micros();
        self.read(|c| {
            let row = c
                .query_row(
                    "SELECT user_id, project_id, issued_at, expires_at, audit_id, \
                     parent_audit_id, methods FROM tokens WHERE hash = ?1",
                    [hash.as_slice()],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, Option<String>>(5)?,
                            r.get::<_, String>(6)?,
                        ))
                    },
                )
                .optional()?;
            let Some((user_id, project_id, issued, expires, audit, parent, methods)) = row else {
                return Ok(None);
            };
            if expires <= now {
                return Ok(None);
            }
            let Some(user) = user_by_id(c, &user_id)?.filter(|u| u.enabled) else {
                return Ok(None);
            };
            let (project, roles) = match project_id {
                None => (None, Vec::new()),
                Some(pid) => {
                    let Some(p) = project_by_id(c, &pid)?.filter(|p| p.enabled) else {
                        return Ok(None);
                    };
                    let roles = effective_roles(c, &user.id, &p.id)?;
                    if roles.is_empty() {
                        return Ok(None);
                    }
                    (Some(p), roles)
                }
            };
            let mut audit_ids = vec![audit];
            audit_ids.extend(parent);
            Ok(Some(TokenInfo {
                user,
                project,
                roles,
                methods: methods
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
                issued_at: format_micros(issued),
                expires_at: format_micros(expires),
                audit_ids,
                expires_at_us: expires,
            }))
        })
    }

    /// Validates a token for a request: the [`AuthContext`] it carries.
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] if it is unknown, expired, revoked or no longer valid;
    /// [`AuthError::Internal`] if SQLite failed.
    pub fn validate_token(&self, token: &str) -> Result<AuthContext, AuthError> {
        match self.token_info(token) {
            Ok(Some(info)) => Ok(info.to_context(Some(token))),
            Ok(None) => Err(AuthError::InvalidToken {
                www_authenticate_uri: Some(self.www_authenticate_uri()),
            }),
            Err(e) => {
                tracing::error!(error = %e, "token validation failed");
                Err(AuthError::Internal(e.to_string()))
            }
        }
    }

    /// Revokes a token (Keystone's `DELETE /v3/auth/tokens`).
    ///
    /// # Errors
    /// [`IdentityError::NotFound`] if it is unknown, already revoked or expired; SQLite failed.
    pub fn revoke_token(&self, token: &str) -> Result<(), IdentityError> {
        let hash = sha256(token);
        let now = now_micros();
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM tokens WHERE hash = ?1 AND expires_at > ?2",
                params![hash.as_slice(), now],
            )?;
            if n == 0 {
                return Err(IdentityError::not_found("token", "the subject token"));
            }
            Ok(())
        })
    }

    /// Removes expired tokens; returns how many. ([`Identity::issue_token`] does it too.)
    ///
    /// # Errors
    /// SQLite failed.
    pub fn purge_expired_tokens(&self) -> Result<usize, IdentityError> {
        let now = now_micros();
        self.write(|tx| Ok(tx.execute("DELETE FROM tokens WHERE expires_at <= ?1", [now])?))
    }

    #[cfg(test)]
    pub(crate) fn expire_all_tokens_for_test(&self) -> Result<(), IdentityError> {
        self.write(|tx| {
            tx.execute("UPDATE tokens SET expires_at = 1", [])?;
            Ok(())
        })
    }
}

// -------------------------------------------------------------------- helpers

/// Creates the database file, owner-only (0600), if it does not exist yet; SQLite gives its
/// `-wal` and `-shm` files the same permissions.
fn create_private(path: &Path) -> Result<(), IdentityError> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), IdentityError> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(IdentityError::SchemaTooNew { found, known });
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
        tracing::info!(version = i + 1, "identity schema migrated");
    }
    Ok(())
}

fn seed_roles(tx: &Transaction<'_>) -> Result<(), IdentityError> {
    for (name, description) in ROLES {
        if role_by_name(tx, name)?.is_none() {
            tx.execute(
                "INSERT INTO roles (id, name, description) VALUES (?1, ?2, ?3)",
                params![secret::new_id()?, name, description],
            )?;
        }
    }
    for (prior, implied) in IMPLIED {
        tx.execute(
            "INSERT OR IGNORE INTO implied_roles (prior_role_id, implied_role_id) \
             SELECT a.id, b.id FROM roles a, roles b WHERE a.name = ?1 AND b.name = ?2",
            params![prior, implied],
        )?;
    }
    Ok(())
}

fn check_name(kind: &str, name: &str) -> Result<(), IdentityError> {
    if name.trim().is_empty() {
        return Err(IdentityError::Invalid(format!(
            "a {kind} name must not be empty"
        )));
    }
    if name.chars().count() > MAX_NAME {
        return Err(IdentityError::Invalid(format!(
            "a {kind} name must not be longer than {MAX_NAME} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(IdentityError::Invalid(format!(
            "a {kind} name must not contain control characters"
        )));
    }
    Ok(())
}

fn row_user(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        domain_id: r.get(2)?,
        domain_name: r.get(3)?,
        enabled: r.get(4)?,
        default_project_id: r.get(5)?,
        description: r.get(6)?,
    })
}

fn row_project(r: &Row<'_>) -> rusqlite::Result<Project> {
    Ok(Project {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        domain_id: r.get(3)?,
        domain_name: r.get(4)?,
        enabled: r.get(5)?,
    })
}

fn row_role(r: &Row<'_>) -> rusqlite::Result<Role> {
    Ok(Role {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
    })
}

fn row_domain(r: &Row<'_>) -> rusqlite::Result<Domain> {
    Ok(Domain {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        enabled: r.get(3)?,
    })
}

fn user_by_id(c: &Connection, id: &str) -> Result<Option<User>, IdentityError> {
    Ok(c.query_row(
        &format!("SELECT {USER_COLS} WHERE u.id = ?1"),
        [id],
        row_user,
    )
    .optional()?)
}

fn user_by_name(c: &Connection, domain: &str, name: &str) -> Result<Option<User>, IdentityError> {
    Ok(c.query_row(
        &format!("SELECT {USER_COLS} WHERE u.domain_id = ?1 AND u.name = ?2"),
        [domain, name],
        row_user,
    )
    .optional()?)
}

/// By id, or else by name in the default domain.
fn find_user(c: &Connection, s: &str) -> Result<Option<User>, IdentityError> {
    match user_by_id(c, s)? {
        Some(u) => Ok(Some(u)),
        None => user_by_name(c, DEFAULT_DOMAIN_ID, s),
    }
}

fn user_with_hash(
    c: &Connection,
    user: &UserRef,
) -> Result<Option<(User, Option<String>)>, IdentityError> {
    let u = match user {
        UserRef::Id(id) => user_by_id(c, id)?,
        UserRef::Name { name, domain } => match resolve_domain(c, domain)? {
            Some(d) => user_by_name(c, &d.id, name)?,
            None => None,
        },
    };
    let Some(u) = u else { return Ok(None) };
    let hash: Option<String> = c.query_row(
        "SELECT password_hash FROM users WHERE id = ?1",
        [&u.id],
        |r| r.get(0),
    )?;
    Ok(Some((u, hash)))
}

fn project_by_id(c: &Connection, id: &str) -> Result<Option<Project>, IdentityError> {
    Ok(c.query_row(
        &format!("SELECT {PROJECT_COLS} WHERE p.id = ?1"),
        [id],
        row_project,
    )
    .optional()?)
}

fn project_by_name(
    c: &Connection,
    domain: &str,
    name: &str,
) -> Result<Option<Project>, IdentityError> {
    Ok(c.query_row(
        &format!("SELECT {PROJECT_COLS} WHERE p.domain_id = ?1 AND p.name = ?2"),
        [domain, name],
        row_project,
    )
    .optional()?)
}

/// By id, or else by name in the default domain.
fn find_project(c: &Connection, s: &str) -> Result<Option<Project>, IdentityError> {
    match project_by_id(c, s)? {
        Some(p) => Ok(Some(p)),
        None => project_by_name(c, DEFAULT_DOMAIN_ID, s),
    }
}

fn role_by_name(c: &Connection, name: &str) -> Result<Option<Role>, IdentityError> {
    Ok(c.query_row(
        "SELECT id, name, description FROM roles WHERE name = ?1",
        [name],
        row_role,
    )
    .optional()?)
}

/// By id, or else by name.
fn find_role(c: &Connection, s: &str) -> Result<Option<Role>, IdentityError> {
    let by_id = c
        .query_row(
            "SELECT id, name, description FROM roles WHERE id = ?1",
            [s],
            row_role,
        )
        .optional()?;
    match by_id {
        Some(r) => Ok(Some(r)),
        None => role_by_name(c, s),
    }
}

fn domain_by_id(c: &Connection, id: &str) -> Result<Option<Domain>, IdentityError> {
    Ok(c.query_row(
        "SELECT id, name, description, enabled FROM domains WHERE id = ?1",
        [id],
        row_domain,
    )
    .optional()?)
}

fn resolve_domain(c: &Connection, d: &DomainRef) -> Result<Option<Domain>, IdentityError> {
    match d {
        DomainRef::Id(id) => domain_by_id(c, id),
        DomainRef::Name(n) => Ok(c
            .query_row(
                "SELECT id, name, description, enabled FROM domains WHERE name = ?1",
                [n],
                row_domain,
            )
            .optional()?),
    }
}

fn resolve_grant(
    c: &Connection,
    user: &str,
    project: &str,
    role: &str,
) -> Result<(String, String, String), IdentityError> {
    let u = find_user(c, user)?.ok_or_else(|| IdentityError::not_found("user", user))?;
    let p =
        find_project(c, project)?.ok_or_else(|| IdentityError::not_found("project", project))?;
    let r = find_role(c, role)?.ok_or_else(|| IdentityError::not_found("role", role))?;
    Ok((u.id, p.id, r.id))
}

/// The user's roles on the project, implied roles included, by name.
fn effective_roles(c: &Connection, user: &str, project: &str) -> Result<Vec<Role>, IdentityError> {
    let mut st = c.prepare_cached(
        "WITH RECURSIVE eff(id) AS ( \
             SELECT role_id FROM assignments WHERE user_id = ?1 AND project_id = ?2 \
             UNION SELECT i.implied_role_id FROM implied_roles i JOIN eff ON i.prior_role_id = eff.id \
         ) SELECT r.id, r.name, r.description FROM roles r JOIN eff ON r.id = eff.id ORDER BY r.name",
    )?;
    let rows = st.query_map([user, project], row_role)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The project (and roles on it) a new token for `user` gets.
fn resolve_scope(
    c: &Connection,
    user: &User,
    scope: &Scope,
) -> Result<(Option<Project>, Vec<Role>), IdentityError> {
    match scope {
        Scope::Unscoped => Ok((None, Vec::new())),
        Scope::Default => {
            let Some(pid) = &user.default_project_id else {
                return Ok((None, Vec::new()));
            };
            match project_by_id(c, pid)?.filter(|p| p.enabled) {
                Some(p) => {
                    let roles = effective_roles(c, &user.id, &p.id)?;
                    if roles.is_empty() {
                        Ok((None, Vec::new()))
                    } else {
                        Ok((Some(p), roles))
                    }
                }
                None => Ok((None, Vec::new())),
            }
        }
        Scope::Project(pref) => {
            let p = match pref {
                ProjectRef::Id(id) => project_by_id(c, id)?,
                ProjectRef::Name { name, domain } => match resolve_domain(c, domain)? {
                    Some(d) => project_by_name(c, &d.id, name)?,
                    None => None,
                },
            };
            let Some(p) = p else {
                return Err(IdentityError::Unauthorized(
                    "could not find the project to scope to".into(),
                ));
            };
            if !p.enabled {
                return Err(IdentityError::Unauthorized(format!(
                    "project {} is disabled",
                    p.id
                )));
            }
            let roles = effective_roles(c, &user.id, &p.id)?;
            if roles.is_empty() {
                return Err(IdentityError::Unauthorized(format!(
                    "user {} has no access to project {}",
                    user.id, p.id
                )));
            }
            Ok((Some(p), roles))
        }
    }
}
