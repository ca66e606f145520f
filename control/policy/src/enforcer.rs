//! The rule table and the decisions made from it.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::check::{Attr, Check};
use crate::defaults::{self, RuleDefault};
use crate::error::PolicyError;
use crate::{Credentials, Target, file, parser};

/// How many `rule:` references one decision may follow. Loops are refused at load, so
/// this only bounds the stack against very long chains.
const MAX_RULE_DEPTH: u32 = 32;

/// The rule a `rule:` reference falls back to when it names no defined rule (oslo's
/// `policy_default_rule`).
const FALLBACK_RULE: &str = "default";

/// Cinder's policy: every registered rule, parsed, with any operator overrides applied.
///
/// Build it once at start-up ([`Enforcer::cinder_defaults`], then
/// [`Enforcer::with_overrides`] or [`Enforcer::from_file`]) and share it: cloning is a
/// reference-count increment, and a decision walks the parsed rules without parsing,
/// locking or (for the usual rules) allocating.
#[derive(Clone)]
pub struct Enforcer {
    table: Arc<Table>,
}

#[derive(Debug, Clone)]
struct Table {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
    /// The entry of [`FALLBACK_RULE`], when there is one.
    fallback: Option<usize>,
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    check: Check,
    /// What Cinder registers under this name; `None` for names only an override defines.
    registered: Option<&'static RuleDefault>,
}

impl fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let registered = self
            .table
            .entries
            .iter()
            .filter(|e| e.registered.is_some())
            .count();
        f.debug_struct("Enforcer")
            .field("rules", &self.table.entries.len())
            .field("registered", &registered)
            .finish_non_exhaustive()
    }
}

impl Table {
    fn push(&mut self, entry: Entry) {
        self.index.insert(entry.name.clone(), self.entries.len());
        self.entries.push(entry);
    }

    /// The entry a `rule:NAME` reference evaluates.
    fn resolve(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied().or(self.fallback)
    }

    /// A loop of `rule:` references, as the names along it with the first repeated.
    fn find_cycle(&self) -> Option<Vec<String>> {
        let edges: Vec<Vec<usize>> = self
            .entries
            .iter()
            .map(|e| {
                let mut out = Vec::new();
                e.check
                    .for_each_rule_ref(&mut |name| out.extend(self.resolve(name)));
                out
            })
            .collect();
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        let mut mark = vec![Mark::New; self.entries.len()];
        for start in 0..self.entries.len() {
            if mark[start] != Mark::New {
                continue;
            }
            // Iterative depth-first search: (node, next edge to follow).
            let mut path: Vec<(usize, usize)> = vec![(start, 0)];
            mark[start] = Mark::OnPath;
            while let Some(&mut (node, ref mut next)) = path.last_mut() {
                let Some(&to) = edges[node].get(*next) else {
                    mark[node] = Mark::Done;
                    path.pop();
                    continue;
                };
                *next += 1;
                match mark[to] {
                    Mark::Done => {}
                    Mark::New => {
                        mark[to] = Mark::OnPath;
                        path.push((to, 0));
                    }
                    Mark::OnPath => {
                        let from = path.iter().position(|&(n, _)| n == to).unwrap_or(0);
                        let mut names: Vec<String> = path[from..]
                            .iter()
                            .map(|&(n, _)| self.entries[n].name.clone())
                            .collect();
                        names.push(self.entries[to].name.clone());
                        return Some(names);
                    }
                }
            }
        }
        None
    }

    /// Logs, once per load, the rules that refer to undefined rules (oslo warns too).
    fn warn_undefined_references(&self) {
        let mut referring = Vec::new();
        for e in &self.entries {
            let mut undefined = false;
            e.check.for_each_rule_ref(&mut |name| {
                undefined |= !self.index.contains_key(name);
            });
            if undefined {
                referring.push(e.name.as_str());
            }
        }
        if !referring.is_empty() {
            tracing::warn!(
                rules = ?referring,
                fallback = FALLBACK_RULE,
                "policy rules refer to rules that are not defined; those references use the fallback rule"
            );
        }
    }
}

impl Enforcer {
    /// Every rule Cinder registers, at its current default.
    pub fn cinder_defaults() -> Enforcer {
        let mut table = Table {
            entries: Vec::with_capacity(defaults::RULES.len()),
            index: HashMap::with_capacity(defaults::RULES.len()),
            fallback: None,
        };
        for d in defaults::RULES {
            let check = parser::parse(d.check).unwrap_or_else(|f| {
                // Cannot happen: a unit test parses the whole table. Fail closed if it does.
                tracing::error!(rule = d.name, at = f.at, why = %f.why, "built-in policy rule does not parse; denying it");
                Check::Never
            });
            table.push(Entry {
                name: d.name.to_owned(),
                check,
                registered: Some(d),
            });
        }
        table.fallback = table.index.get(FALLBACK_RULE).copied();
        Enforcer {
            table: Arc::new(table),
        }
    }

    /// These rules with the overrides in `text` applied on top.
    ///
    /// `text` is a YAML mapping or a JSON object of rule name to rule string, as
    /// `policy.yaml` or `policy.json`. A name Cinder does not register is kept (other
    /// rules may refer to it with `rule:`) and logged. Overrides can be layered by calling
    /// this again; later ones win.
    ///
    /// # Errors
    /// [`PolicyError::BadOverrides`] when the text is not such a mapping,
    /// [`PolicyError::Parse`] naming the first rule whose text does not parse, and
    /// [`PolicyError::Cycle`] when `rule:` references loop.
    pub fn with_overrides(self, text: &str) -> Result<Enforcer, PolicyError> {
        let pairs = file::parse_overrides(text).map_err(|why| PolicyError::BadOverrides { why })?;
        let mut table = Arc::unwrap_or_clone(self.table);
        let mut unknown = Vec::new();
        for (name, text) in pairs {
            let check = match parser::parse(&text) {
                Ok(check) => check,
                Err(f) => {
                    return Err(PolicyError::Parse {
                        rule: name,
                        text,
                        at: f.at,
                        why: f.why,
                    });
                }
            };
            let mut attrs = Vec::new();
            check.for_each_unknown_attr(&mut |a| attrs.push(a.to_owned()));
            if !attrs.is_empty() {
                tracing::warn!(rule = %name, attributes = ?attrs, "policy rule checks credential attributes Basalt does not have; those checks are always false");
            }
            match table.index.get(&name) {
                Some(&i) => {
                    let entry = &mut table.entries[i];
                    if entry
                        .registered
                        .is_some_and(|d| parser::parse(d.check).is_ok_and(|c| c == check))
                    {
                        tracing::debug!(rule = %name, "policy override repeats the default");
                    }
                    entry.check = check;
                }
                None => {
                    unknown.push(name.clone());
                    table.push(Entry {
                        name,
                        check,
                        registered: None,
                    });
                }
            }
        }
        if !unknown.is_empty() {
            tracing::warn!(
                rules = ?unknown,
                "policy overrides define rules Cinder does not register; they only serve rule: references"
            );
        }
        table.fallback = table.index.get(FALLBACK_RULE).copied();
        if let Some(rules) = table.find_cycle() {
            return Err(PolicyError::Cycle { rules });
        }
        table.warn_undefined_references();
        Ok(Enforcer {
            table: Arc::new(table),
        })
    }

    /// Cinder's defaults with the overrides in the file at `path` (see
    /// [`Enforcer::with_overrides`]).
    ///
    /// # Errors
    /// [`PolicyError::BadFile`] when the file cannot be read or is not a mapping of
    /// rule strings, and the other errors of [`Enforcer::with_overrides`].
    pub fn from_file(path: &Path) -> Result<Enforcer, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::BadFile {
            path: path.to_owned(),
            why: crate::FileProblem::Io(e),
        })?;
        Enforcer::cinder_defaults()
            .with_overrides(&text)
            .map_err(|e| match e {
                PolicyError::BadOverrides { why } => PolicyError::BadFile {
                    path: path.to_owned(),
                    why,
                },
                other => other,
            })
    }

    /// Whether `creds` may do `rule` to `target`.
    ///
    /// `target` holds what the request acts on (`project_id`, `user_id`, ...), which
    /// `%(name)s` in a rule refers to.
    ///
    /// # Errors
    /// [`PolicyError::NotAuthorized`] when the rule says no, and
    /// [`PolicyError::Unregistered`] when Cinder registers no rule of that name (a bug
    /// in the caller, as in oslo's `authorize`).
    pub fn authorize(
        &self,
        rule: &str,
        target: &Target,
        creds: &Credentials,
    ) -> Result<(), PolicyError> {
        match self.decide(rule, target, creds) {
            Some(true) => Ok(()),
            Some(false) => {
                tracing::debug!(rule, user = %creds.user_id, project = %creds.project_id, "policy denies");
                Err(PolicyError::NotAuthorized {
                    rule: rule.to_owned(),
                })
            }
            None => Err(PolicyError::Unregistered {
                rule: rule.to_owned(),
            }),
        }
    }

    /// Like [`Enforcer::authorize`], as a yes or no; an unregistered rule is a no.
    pub fn check(&self, rule: &str, target: &Target, creds: &Credentials) -> bool {
        self.decide(rule, target, creds).unwrap_or(false)
    }

    /// Every rule, registered ones first in Cinder's order, then the names only overrides
    /// define; each with its effective rule text (as parsed and printed back, so it may
    /// differ in spacing and parentheses from what was written).
    pub fn rules(&self) -> impl Iterator<Item = (&str, String)> {
        self.table
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.check.to_string()))
    }

    /// Whether Cinder registers a rule called `rule`.
    pub fn is_registered(&self, rule: &str) -> bool {
        self.entry(rule).is_some_and(|e| e.registered.is_some())
    }

    /// One line on what a registered rule guards.
    pub fn description(&self, rule: &str) -> Option<&'static str> {
        self.entry(rule)?.registered.map(|d| d.description)
    }

    /// The default rule text of a registered rule, before any override.
    pub fn default_rule(&self, rule: &str) -> Option<&'static str> {
        self.entry(rule)?.registered.map(|d| d.check)
    }

    fn entry(&self, rule: &str) -> Option<&Entry> {
        let i = *self.table.index.get(rule)?;
        self.table.entries.get(i)
    }

    /// `None` when `rule` is not registered.
    fn decide(&self, rule: &str, target: &Target, creds: &Credentials) -> Option<bool> {
        let entry = self.entry(rule).filter(|e| e.registered.is_some())?;
        Some(self.eval(&entry.check, target, creds, 0))
    }

    /// Evaluates `check`; `depth` counts the `rule:` references followed to get here.
    pub(crate) fn eval(
        &self,
        check: &Check,
        target: &Target,
        creds: &Credentials,
        depth: u32,
    ) -> bool {
        match check {
            Check::Always => true,
            Check::Never => false,
            Check::Role(name) => match name.render(target) {
                Some(name) => creds.roles.iter().any(|r| same_ignoring_case(r, &name)),
                None => false,
            },
            Check::Rule(name) => {
                if depth >= MAX_RULE_DEPTH {
                    tracing::warn!(rule = %name, "policy rule references nest too deep; denying");
                    return false;
                }
                match self.table.resolve(name) {
                    Some(i) => self.eval(&self.table.entries[i].check, target, creds, depth + 1),
                    None => false,
                }
            }
            Check::Attr { attr, value } => {
                let is = |s: &str| !s.is_empty() && value.matches(target, s);
                match attr {
                    Attr::ProjectId => is(&creds.project_id),
                    Attr::UserId => is(&creds.user_id),
                    Attr::IsAdmin => value.matches(target, python_bool(creds.is_admin)),
                    Attr::IsAdminProject => {
                        value.matches(target, python_bool(creds.is_admin_project))
                    }
                    Attr::SystemScope | Attr::System => {
                        creds.system_scope.as_deref().is_some_and(is)
                    }
                    Attr::DomainId => creds.domain_id.as_deref().is_some_and(is),
                    Attr::Roles => creds.roles.iter().any(|r| is(r)),
                    Attr::Unknown(_) => false,
                }
            }
            Check::Const { literal, value } => value.matches(target, &literal.value),
            Check::Not(inner) => !self.eval(inner, target, creds, depth),
            Check::And(items) => items.iter().all(|c| self.eval(c, target, creds, depth)),
            Check::Or(items) => items.iter().any(|c| self.eval(c, target, creds, depth)),
        }
    }
}

/// How Python prints a boolean, which is what oslo compares `is_admin:True` against.
fn python_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// oslo's `role:` comparison: both sides lower-cased.
fn same_ignoring_case(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FileProblem, Syntax};

    const P1: &str = "6f70656e737461636b20697320636f6f6c";
    const P2: &str = "0123456789abcdef0123456789abcdef";

    fn creds(user: &str, project: &str, roles: &[&str], is_admin: bool) -> Credentials {
        Credentials {
            user_id: user.to_owned(),
            project_id: project.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            is_admin,
            is_admin_project: true,
            system_scope: None,
            domain_id: None,
        }
    }

    /// Cinder's personas; the admin is an admin of some other project.
    fn admin() -> Credentials {
        creds(
            "u-admin",
            "adminproject",
            &["admin", "member", "reader"],
            true,
        )
    }
    fn member() -> Credentials {
        creds("u-member", P1, &["member", "reader"], false)
    }
    fn reader() -> Credentials {
        creds("u-reader", P1, &["reader"], false)
    }
    fn outsider() -> Credentials {
        creds("u-other", P2, &["member", "reader"], false)
    }
    fn nobody() -> Credentials {
        creds("u-nobody", P1, &[], false)
    }

    fn target(pairs: &[(&str, &str)]) -> Target {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn in_p1() -> Target {
        target(&[("project_id", P1), ("user_id", "u-member")])
    }

    /// Who of admin, member, reader, outsider, nobody may do `rule` in project P1.
    fn who(e: &Enforcer, rule: &str) -> [bool; 5] {
        assert!(e.is_registered(rule), "{rule}");
        let t = in_p1();
        [admin(), member(), reader(), outsider(), nobody()].map(|c| e.check(rule, &t, &c))
    }

    const MEMBERS: [bool; 5] = [true, true, false, false, false];
    const READERS: [bool; 5] = [true, true, true, false, false];
    const ADMINS: [bool; 5] = [true, false, false, false, false];

    #[test]
    fn personas_on_representative_rules() {
        let e = Enforcer::cinder_defaults();
        for rule in [
            "volume:create",
            "volume:delete",
            "volume:extend",
            "volume:attachment_create",
            "volume:attachment_complete",
            "volume_extension:volume_actions:initialize_connection",
            "backup:create",
            "volume:create_snapshot",
            "group:create",
            "message:delete",
            "volume:accept_transfer",
        ] {
            assert_eq!(who(&e, rule), MEMBERS, "{rule}");
        }
        for rule in [
            "volume:get",
            "volume:get_all",
            "volume:get_all_snapshots",
            "backup:get",
            "message:get_all",
            "volume_extension:quotas:show",
            "limits_extension:used_limits",
            "volume_extension:type_get_all",
            "volume_extension:volume_tenant_attribute",
            "volume:get_all_transfers",
        ] {
            assert_eq!(who(&e, rule), READERS, "{rule}");
        }
        for rule in [
            "volume:force_delete",
            "volume_extension:quotas:update",
            "volume_extension:volume_host_attribute",
            "volume_extension:volume_admin_actions:reset_status",
            "volume_extension:types_extra_specs:read_sensitive",
            "volume_extension:type_create",
            "volume_extension:services:index",
            "scheduler_extension:scheduler_stats:get_pools",
            "volume_extension:default_set_or_update",
            "volume_extension:hosts",
            "clusters:get_all",
            "workers:cleanup",
            "backup:backup-import",
        ] {
            assert_eq!(who(&e, rule), ADMINS, "{rule}");
        }
    }

    #[test]
    fn admin_api_needs_the_flag_or_an_admin_project() {
        let e = Enforcer::cinder_defaults();
        let t = in_p1();
        let mut c = admin();
        c.is_admin = false;
        assert!(
            e.check("admin_api", &t, &c),
            "role admin in the admin project"
        );
        c.is_admin_project = false;
        assert!(!e.check("admin_api", &t, &c));
        // ... while the Xena persona rules only look at the role.
        assert!(e.check("volume:get", &t, &c));
        c.roles.clear();
        c.is_admin = true;
        assert!(e.check("admin_api", &t, &c), "noauth: the flag alone");
        assert!(e.check("context_is_admin", &t, &admin()));
        assert!(!e.check("context_is_admin", &t, &member()));
    }

    #[test]
    fn legacy_owner_rule_and_role_case() {
        let e = Enforcer::cinder_defaults();
        let t = in_p1();
        assert!(
            e.check("admin_or_owner", &t, &nobody()),
            "any token of the project"
        );
        assert!(!e.check("admin_or_owner", &t, &outsider()));
        let mut shouty = member();
        shouty.roles = vec!["MEMBER".into()];
        assert!(e.check("volume:create", &t, &shouty), "role: ignores case");
    }

    #[test]
    fn unscoped_credentials_match_no_project() {
        let e = Enforcer::cinder_defaults();
        let unscoped = creds("u", "", &["member", "reader"], false);
        assert!(!e.check("volume:get", &target(&[("project_id", "")]), &unscoped));
        assert!(
            !e.check("volume:get", &Target::new(), &member()),
            "no project in the target"
        );
    }

    #[test]
    fn unregistered_rules() {
        let e = Enforcer::cinder_defaults();
        let t = in_p1();
        assert!(!e.is_registered("volume:frobnicate"));
        assert!(!e.check("volume:frobnicate", &t, &admin()));
        assert!(matches!(
            e.authorize("volume:frobnicate", &t, &admin()),
            Err(PolicyError::Unregistered { rule }) if rule == "volume:frobnicate"
        ));
        let err = e.authorize("volume:create", &t, &reader());
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("Policy doesn't allow volume:create to be performed.".to_owned())
        );
        assert!(e.authorize("volume:create", &t, &member()).is_ok());
    }

    #[test]
    fn every_cinder_rule_is_registered() {
        let e = Enforcer::cinder_defaults();
        assert_eq!(e.rules().count(), 168);
        for name in [
            "context_is_admin",
            "admin_or_owner",
            "admin_api",
            "xena_system_admin_or_project_reader",
            "xena_system_admin_or_project_member",
            "system_or_domain_or_project_admin",
            "default",
            "volume:attachment_update",
            "volume:multiattach_bootable_volume",
            "message:get",
            "clusters:update",
            "volume:update_snapshot_metadata",
            "snapshot_extension:snapshot_actions:update_snapshot_status",
            "snapshot_extension:list_manageable",
            "backup:export-import",
            "volume_extension:backup_admin_actions:force_delete",
            "group:group_types_specs:delete",
            "group:reset_group_snapshot_status",
            "group:failover_replication",
            "volume_extension:qos_specs_manage:delete",
            "volume_extension:quota_classes:update",
            "volume_extension:capabilities",
            "volume:failover_host",
            "volume_extension:volume_unmanage",
            "volume_extension:volume_type_encryption:get",
            "volume_extension:volume_type_access:get_all_for_type",
            "volume_extension:volume_admin_actions:extend_volume_completion",
            "volume:reimage_reserved",
            "volume_extension:volume_image_metadata:remove",
            "volume:update_volume_admin_metadata",
            "volume:multiattach",
            "volume_extension:default_unset",
        ] {
            assert!(e.is_registered(name), "{name}");
            assert!(e.description(name).is_some_and(|d| !d.is_empty()), "{name}");
        }
        let (name, text) = e.rules().nth(4).unwrap_or_default();
        assert_eq!(name, "xena_system_admin_or_project_reader");
        assert_eq!(
            text,
            "role:admin or (role:reader and project_id:%(project_id)s)"
        );
        assert_eq!(
            e.default_rule("volume:create"),
            Some("rule:xena_system_admin_or_project_member")
        );
    }

    #[test]
    fn references_to_missing_rules_are_false() {
        let e = Enforcer::cinder_defaults()
            .with_overrides("volume:create: rule:no_such_rule or role:wizard\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let t = in_p1();
        assert!(!e.check("volume:create", &t, &admin()));
        let mut wizard = nobody();
        wizard.roles = vec!["wizard".into()];
        assert!(e.check("volume:create", &t, &wizard));
        // With a fallback defined, oslo evaluates it instead.
        let e = e
            .with_overrides("default: role:member\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(e.check("volume:create", &t, &outsider()));
    }

    #[test]
    fn yaml_override_changes_a_rule() {
        let e = Enforcer::cinder_defaults()
            .with_overrides(
                "# operators\n\"volume:create\": \"rule:admin_api\"\nvolume:delete: '!'\n",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(who(&e, "volume:create"), ADMINS);
        assert_eq!(who(&e, "volume:delete"), [false; 5]);
        assert_eq!(
            who(&e, "volume:extend"),
            MEMBERS,
            "others keep their defaults"
        );
        let text: Vec<(&str, String)> = e.rules().filter(|(n, _)| *n == "volume:create").collect();
        assert_eq!(text, vec![("volume:create", "rule:admin_api".to_owned())]);
    }

    #[test]
    fn json_override_file_changes_a_rule() {
        let path = temp_file(
            "policy.json",
            "{\n    \"volume:get\": \"role:admin\",\n    \"custom:owner\": \"user_id:%(user_id)s\",\n    \"volume:update\": \"rule:custom:owner\"\n}\n",
        );
        let e = Enforcer::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        remove(&path);
        assert_eq!(who(&e, "volume:get"), ADMINS);
        // The owner of the volume is the member persona.
        assert_eq!(who(&e, "volume:update"), [false, true, false, false, false]);
        assert!(
            !e.is_registered("custom:owner"),
            "defined, but not registered"
        );
        assert!(matches!(
            e.authorize("custom:owner", &in_p1(), &member()),
            Err(PolicyError::Unregistered { .. })
        ));
        assert_eq!(e.rules().count(), 169);
    }

    #[test]
    fn yaml_override_file() {
        let path = temp_file(
            "policy.yaml",
            "\"volume_extension:volume_host_attribute\": \"rule:admin_api or role:operator\"\n",
        );
        let e = Enforcer::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        remove(&path);
        let mut operator = reader();
        operator.roles.push("operator".into());
        assert!(e.check(
            "volume_extension:volume_host_attribute",
            &in_p1(),
            &operator
        ));
        assert!(!e.check(
            "volume_extension:volume_host_attribute",
            &in_p1(),
            &reader()
        ));
    }

    #[test]
    fn file_errors() {
        let missing = std::env::temp_dir().join("basalt-policy-no-such-file.yaml");
        assert!(matches!(
            Enforcer::from_file(&missing),
            Err(PolicyError::BadFile { path, why: FileProblem::Io(_) }) if path == missing
        ));
        let path = temp_file("bad.yaml", "- volume:create\n");
        let got = Enforcer::from_file(&path);
        remove(&path);
        assert!(matches!(
            got,
            Err(PolicyError::BadFile {
                why: FileProblem::NotAMapping,
                ..
            })
        ));
        assert!(matches!(
            Enforcer::cinder_defaults().with_overrides("a: 1\n"),
            Err(PolicyError::BadOverrides { why: FileProblem::NotAString { name } }) if name == "a"
        ));
    }

    #[test]
    fn bad_rule_text_is_refused_naming_the_rule() {
        let got = Enforcer::cinder_defaults()
            .with_overrides("volume:get: role:reader\nvolume:create: \"role:member and (project_id:%(project_id)s\"\n");
        match got {
            Err(PolicyError::Parse {
                rule,
                text,
                at,
                why,
            }) => {
                assert_eq!(rule, "volume:create");
                assert_eq!(text, "role:member and (project_id:%(project_id)s");
                assert_eq!((at, why), (16, Syntax::UnclosedParen));
            }
            other => panic!("{other:?}"),
        }
        let got =
            Enforcer::cinder_defaults().with_overrides("{\"backup:create\": \"http://pdp/check\"}");
        assert!(matches!(
            got,
            Err(PolicyError::Parse { rule, why: Syntax::RemoteCheck { .. }, .. }) if rule == "backup:create"
        ));
        let msg = Enforcer::cinder_defaults()
            .with_overrides("volume:get: 'role:reader and'\n")
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(
            msg,
            Err("policy rule volume:get cannot be parsed: `and` has no check after it (at byte 12 of \"role:reader and\")".to_owned())
        );
    }

    #[test]
    fn cycles_are_refused() {
        let got = Enforcer::cinder_defaults().with_overrides("a: rule:b\nb: role:x or rule:a\n");
        match got {
            Err(PolicyError::Cycle { rules }) => assert_eq!(rules, ["a", "b", "a"]),
            other => panic!("{other:?}"),
        }
        // Through registered rules: force_delete -> admin_api -> force_delete.
        let got =
            Enforcer::cinder_defaults().with_overrides("admin_api: rule:volume:force_delete\n");
        match got {
            Err(PolicyError::Cycle { rules }) => {
                assert_eq!(rules.first(), rules.last());
                assert!(rules.contains(&"admin_api".to_owned()));
                assert!(rules.contains(&"volume:force_delete".to_owned()));
            }
            other => panic!("{other:?}"),
        }
        // Through the fallback: an undefined reference inside `default` loops on itself.
        let got = Enforcer::cinder_defaults().with_overrides("default: rule:nothing\n");
        assert!(
            matches!(got, Err(PolicyError::Cycle { rules }) if rules == ["default", "default"])
        );
        // A rule may be referenced twice without forming a loop.
        assert!(
            Enforcer::cinder_defaults()
                .with_overrides("a: rule:admin_api and (rule:admin_api or rule:admin_or_owner)\n")
                .is_ok()
        );
    }

    #[test]
    fn long_reference_chains_stop_at_the_depth_limit() {
        let mut text = String::from("volume:create: rule:r0\n");
        for i in 0..40 {
            text.push_str(&format!("r{i}: rule:r{}\n", i + 1));
        }
        text.push_str("r40: '@'\n");
        let e = Enforcer::cinder_defaults()
            .with_overrides(&text)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !e.check("volume:create", &in_p1(), &admin()),
            "41 hops is too deep"
        );
        let e = e
            .with_overrides("volume:create: rule:r20\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            e.check("volume:create", &in_p1(), &nobody()),
            "21 hops is fine"
        );
    }

    #[test]
    fn generic_checks_follow_oslo() {
        let e = Enforcer::cinder_defaults()
            .with_overrides(concat!(
                "volume:create: \"'member':%(role.name)s\"\n",
                "volume:delete: is_admin:True\n",
                "volume:update: is_admin:true\n",
                "volume:get: not project_id:%(missing)s\n",
                "volume:extend: user_id:%(user_id)s and roles:member\n",
                "volume:retype: system_scope:all or domain_id:%(domain_id)s\n",
                "volume:multiattach: tenant:%(project_id)s\n",
                "volume:reimage: 3:%(size)s\n",
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        let c = nobody();
        assert!(e.check("volume:create", &target(&[("role.name", "member")]), &c));
        assert!(!e.check("volume:create", &target(&[("role.name", "Member")]), &c));
        assert!(!e.check("volume:create", &Target::new(), &c));
        assert!(e.check("volume:delete", &in_p1(), &admin()));
        assert!(!e.check("volume:delete", &in_p1(), &member()));
        assert!(
            !e.check("volume:update", &in_p1(), &admin()),
            "Python prints True"
        );
        assert!(e.check("volume:get", &in_p1(), &c), "not of a missing key");
        assert!(e.check("volume:extend", &in_p1(), &member()));
        let mut shouty = member();
        shouty.roles = vec!["Member".into()];
        assert!(
            !e.check("volume:extend", &in_p1(), &shouty),
            "roles: is case-sensitive"
        );
        let mut system = nobody();
        system.system_scope = Some("all".into());
        assert!(e.check("volume:retype", &in_p1(), &system));
        let mut domain = nobody();
        domain.domain_id = Some("d1".into());
        assert!(e.check("volume:retype", &target(&[("domain_id", "d1")]), &domain));
        assert!(!e.check("volume:retype", &target(&[("domain_id", "d2")]), &domain));
        assert!(
            !e.check("volume:multiattach", &in_p1(), &member()),
            "unknown attribute"
        );
        assert!(e.check("volume:reimage", &target(&[("size", "3")]), &c));
    }

    #[test]
    fn overrides_layer() {
        let e = Enforcer::cinder_defaults()
            .with_overrides("volume:create: '!'\n")
            .and_then(|e| e.with_overrides("{}"))
            .and_then(|e| e.with_overrides(""))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(who(&e, "volume:create"), [false; 5]);
        let e = e
            .with_overrides("volume:create: ''\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            who(&e, "volume:create"),
            [true; 5],
            "the empty rule allows everyone"
        );
    }

    #[test]
    fn enforcer_is_shareable() {
        fn shareable<T: Send + Sync + Clone + fmt::Debug + 'static>() {}
        shareable::<Enforcer>();
        let debug = format!("{:?}", Enforcer::cinder_defaults());
        assert_eq!(debug, "Enforcer { rules: 168, registered: 168, .. }");
    }

    fn remove(path: &Path) {
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "basalt-policy-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }
}
