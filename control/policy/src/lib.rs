//! Basalt's policy engine: oslo.policy's rule language with Cinder's rules.
//!
//! Every API call names a rule (`volume:create`, `backup:get`, ...); the [`Enforcer`]
//! decides whether the caller's [`Credentials`] satisfy it for the resource described by
//! a [`Target`]. The rules start as the defaults Cinder registers today and may be
//! overridden by an operator's `policy.yaml` or `policy.json`, exactly as in Cinder.
//!
//! # The rule language
//!
//! A rule is checks combined with `not`, `and`, `or` and parentheses; `not` binds
//! tightest, then `and`, then `or`; the keywords may be in any case. The checks are:
//!
//! | check | true when |
//! |---|---|
//! | `@`, or an empty rule | always |
//! | `!` | never |
//! | `role:NAME` | the credentials hold role NAME, ignoring case |
//! | `rule:NAME` | rule NAME is true (a name with no rule: the `default` rule, which denies) |
//! | `ATTR:VALUE` | credential attribute ATTR equals VALUE |
//! | `LITERAL:VALUE` | the constant equals VALUE, e.g. `'member':%(role.name)s` |
//!
//! ATTR is one of `project_id`, `user_id`, `is_admin`, `is_admin_project`,
//! `system_scope` (or `system`), `domain_id` and `roles` (any role, case-sensitive); other
//! names are accepted, as in oslo, and never match. `is_admin` and `is_admin_project`
//! print as `True` or `False`. An empty or absent credential value matches nothing.
//!
//! VALUE is text in which `%(name)s` is replaced by the target's `name` (a check that
//! names a key the target lacks is false) and `%%` is a `%`. A VALUE wrapped in quotes
//! stands for the text inside.
//!
//! LITERAL is quoted text, an integer, `True`, `False` or `None`, compared as Python
//! prints it.
//!
//! `http:` and `https:` checks are refused: Basalt has no remote policy service.
//!
//! # Differences from oslo.policy
//!
//! * A rule oslo cannot parse is logged and denies everyone; here it stops the load with
//!   [`PolicyError::Parse`], naming the rule and the byte where the problem is. So do a
//!   check without `:` (oslo: deny), an empty check name or value, a `%` other than
//!   `%(name)s` or `%%`, and a literal oslo's `ast.literal_eval` would crash on.
//! * A VALUE in quotes means the text inside (oslo would compare the quotes too).
//! * A loop of `rule:` references is refused at load ([`PolicyError::Cycle`]); oslo
//!   only logs it, then recurses until Python gives up.
//! * An empty or missing credential value (an unscoped token's `project_id`) matches
//!   nothing, where oslo compares the text `None`.
//! * Override files: a rule's value must be a string. oslo treats a YAML null as
//!   "allow everyone" and accepts the old list-of-lists syntax; both are refused.
//! * Floating-point literals are not supported.
//! * Deprecated rule names are not consulted: an override must use the current name.
//!
//! # Example
//!
//! ```
//! use basalt_policy::{Credentials, Enforcer, Target};
//!
//! let policy = Enforcer::cinder_defaults()
//!     .with_overrides("\"volume:delete\": \"rule:admin_api\"\n")?;
//! let member = Credentials {
//!     user_id: "u1".into(),
//!     project_id: "p1".into(),
//!     roles: vec!["member".into(), "reader".into()],
//!     is_admin_project: true,
//!     ..Credentials::default()
//! };
//! let mut target = Target::new();
//! target.insert("project_id".into(), "p1".into());
//! assert!(policy.check("volume:create", &target, &member));
//! assert!(policy.authorize("volume:delete", &target, &member).is_err());
//! # Ok::<(), basalt_policy::PolicyError>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod check;
mod defaults;
mod enforcer;
mod error;
mod file;
mod parser;

pub use enforcer::Enforcer;
pub use error::{FileProblem, Keyword, PolicyError, Syntax};

/// Who is asking, as the token says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The user's id.
    pub user_id: String,
    /// The project the token is scoped to; empty when unscoped.
    pub project_id: String,
    /// Role names, e.g. `["admin", "member", "reader"]`.
    pub roles: Vec<String>,
    /// Cinder's `context.is_admin`: the admin role, or noauth.
    pub is_admin: bool,
    /// Keystone's `X-Is-Admin-Project` (Keystone's default is true).
    pub is_admin_project: bool,
    /// `Some("all")` for a system-scoped token.
    pub system_scope: Option<String>,
    /// The domain a domain-scoped token is scoped to.
    pub domain_id: Option<String>,
}

/// What the request acts on: `project_id`, `user_id` and any other attribute of the
/// resource that a rule's `%(name)s` may name.
pub type Target = std::collections::BTreeMap<String, String>;
