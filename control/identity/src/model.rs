//! What the built-in identity service stores and answers with.

use std::fmt;

use crate::AuthContext;

/// The one domain every user and project lives in (Keystone's `default`).
pub const DEFAULT_DOMAIN_ID: &str = "default";
/// The default domain's name.
pub const DEFAULT_DOMAIN_NAME: &str = "Default";

/// A domain (only `default` exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// Its id (`default`).
    pub id: String,
    /// Its name (`Default`).
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Whether tokens of its users and projects are honoured.
    pub enabled: bool,
}

/// A project (Keystone's tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// 32 lowercase hex characters.
    pub id: String,
    /// Unique within its domain.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Its domain's id.
    pub domain_id: String,
    /// Its domain's name.
    pub domain_name: String,
    /// A disabled project cannot be scoped to, and tokens scoped to it stop validating.
    pub enabled: bool,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// 32 lowercase hex characters.
    pub id: String,
    /// Unique within its domain.
    pub name: String,
    /// Its domain's id.
    pub domain_id: String,
    /// Its domain's name.
    pub domain_name: String,
    /// A disabled user cannot authenticate, and its tokens stop validating.
    pub enabled: bool,
    /// The project an authentication without a scope is scoped to, if the user has a role on it.
    pub default_project_id: Option<String>,
    /// Description.
    pub description: Option<String>,
}

/// A role (`admin`, `member`, `reader`, `service`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// 32 lowercase hex characters.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
}

/// A role a user holds on a project (directly granted, or implied by one that is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleAssignment {
    /// The user's id.
    pub user_id: String,
    /// The user's name.
    pub user_name: String,
    /// The project's id.
    pub project_id: String,
    /// The project's name.
    pub project_name: String,
    /// The role's id.
    pub role_id: String,
    /// The role's name.
    pub role_name: String,
    /// For an implied (effective) assignment, the id of the granted role that implies it.
    pub prior_role_id: Option<String>,
}

/// What [`crate::Identity::bootstrap`] made (or found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// The admin user's id.
    pub user_id: String,
    /// The admin project's id.
    pub project_id: String,
}

/// A domain named by id or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRef {
    /// By id (`default`).
    Id(String),
    /// By name (`Default`).
    Name(String),
}

/// A user named by id, or by name within a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    /// By id.
    Id(String),
    /// By name.
    Name {
        /// The user's name.
        name: String,
        /// Its domain.
        domain: DomainRef,
    },
}

/// A project named by id, or by name within a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectRef {
    /// By id.
    Id(String),
    /// By name.
    Name {
        /// The project's name.
        name: String,
        /// Its domain.
        domain: DomainRef,
    },
}

/// How a token request proves who it is from.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Keystone's `password` method.
    Password {
        /// The user.
        user: UserRef,
        /// The password.
        password: String,
    },
    /// Keystone's `token` method: an existing valid token, to rescope it.
    Token(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Password { user, .. } => f
                .debug_struct("Password")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// What a new token is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// No scope in the request: Keystone scopes the token to the user's default project when
    /// the user has a role on it (and it is enabled), and leaves it unscoped otherwise.
    Default,
    /// Explicitly unscoped (`"scope": "unscoped"`).
    Unscoped,
    /// A project.
    Project(ProjectRef),
}

/// A valid token, as its validation shows it (roles recomputed from current assignments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Whose token it is.
    pub user: User,
    /// The project it is scoped to (none when unscoped).
    pub project: Option<Project>,
    /// Effective roles on that project, implied roles included, sorted by name; empty when
    /// unscoped.
    pub roles: Vec<Role>,
    /// Authentication methods (`password`, or `token` followed by the original methods).
    pub methods: Vec<String>,
    /// Issued, `%Y-%m-%dT%H:%M:%S.%6fZ`.
    pub issued_at: String,
    /// Expires, `%Y-%m-%dT%H:%M:%S.%6fZ`.
    pub expires_at: String,
    /// This token's audit id, then (for a rescoped token) the original token's.
    pub audit_ids: Vec<String>,
    pub(crate) expires_at_us: i64,
}

impl TokenInfo {
    /// Whether it carries role `name`.
    pub fn has_role(&self, name: &str) -> bool {
        self.roles.iter().any(|r| r.name == name)
    }

    /// The request context a service builds from it; `token` is the token as sent.
    pub fn to_context(&self, token: Option<&str>) -> AuthContext {
        let roles: Vec<String> = self.roles.iter().map(|r| r.name.clone()).collect();
        AuthContext {
            user_id: self.user.id.clone(),
            user_name: self.user.name.clone(),
            project_id: self
                .project
                .as_ref()
                .map(|p| p.id.clone())
                .unwrap_or_default(),
            project_name: self
                .project
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_default(),
            domain_id: self.user.domain_id.clone(),
            is_admin: roles.iter().any(|r| r == "admin"),
            roles,
            is_admin_project: true,
            expires_at: Some(self.expires_at.clone()),
            auth_token: token.map(str::to_owned),
        }
    }
}

/// A token just issued: the bearer secret (returned once, never stored) and what it is.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The secret, as sent in `X-Subject-Token` and then `X-Auth-Token`.
    pub token: String,
    /// What it is.
    pub info: TokenInfo,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UserPatch {
    /// New name.
    pub name: Option<String>,
    /// New password (revokes the user's tokens).
    pub password: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New default project (name or id), or `Some(None)` to clear it.
    pub default_project: Option<Option<String>>,
    /// New description, or `Some(None)` to clear it.
    pub description: Option<Option<String>>,
}

impl fmt::Debug for UserPatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserPatch")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("enabled", &self.enabled)
            .field("default_project", &self.default_project)
            .field("description", &self.description)
            .finish()
    }
}

/// Changes to a project; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectPatch {
    /// New name.
    pub name: Option<String>,
    /// New description, or `Some(None)` to clear it.
    pub description: Option<Option<String>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}
