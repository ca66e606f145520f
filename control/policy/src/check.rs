//! The parsed form of a rule, and how it prints.
//!
//! A rule is parsed once, when it is loaded, into a [`Check`] tree. Printing a tree gives
//! rule text that parses back into the same tree, with parentheses only where they are
//! needed (and around an `and` inside an `or`, for the reader).

use std::borrow::Cow;
use std::fmt;

use crate::Target;

/// One rule, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// `@`, or the empty rule: everyone.
    Always,
    /// `!`: no one.
    Never,
    /// `role:NAME`: the credentials hold that role (case-insensitive).
    Role(Template),
    /// `rule:NAME`: another rule.
    Rule(String),
    /// `ATTR:VALUE`: a credential attribute equals the value.
    Attr {
        /// Which attribute.
        attr: Attr,
        /// What it must equal.
        value: Template,
    },
    /// `LITERAL:VALUE`: a constant equals the value (oslo's `'member':%(role.name)s`).
    Const {
        /// The constant on the left.
        literal: Literal,
        /// What it must equal.
        value: Template,
    },
    /// `not X`.
    Not(Box<Check>),
    /// `X and Y and ...` (two or more).
    And(Vec<Check>),
    /// `X or Y or ...` (two or more).
    Or(Vec<Check>),
}

impl Check {
    /// Calls `f` with the name of every `rule:` reference, in order.
    pub(crate) fn for_each_rule_ref<'a>(&'a self, f: &mut impl FnMut(&'a str)) {
        match self {
            Check::Rule(name) => f(name),
            Check::Not(inner) => inner.for_each_rule_ref(f),
            Check::And(items) | Check::Or(items) => {
                for item in items {
                    item.for_each_rule_ref(f);
                }
            }
            Check::Always
            | Check::Never
            | Check::Role(_)
            | Check::Attr { .. }
            | Check::Const { .. } => {}
        }
    }

    /// Calls `f` with every credential attribute name Basalt does not know.
    pub(crate) fn for_each_unknown_attr<'a>(&'a self, f: &mut impl FnMut(&'a str)) {
        match self {
            Check::Attr {
                attr: Attr::Unknown(name),
                ..
            } => f(name),
            Check::Not(inner) => inner.for_each_unknown_attr(f),
            Check::And(items) | Check::Or(items) => {
                for item in items {
                    item.for_each_unknown_attr(f);
                }
            }
            _ => {}
        }
    }
}

/// The credential attributes a generic check can name on its left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attr {
    /// `project_id`.
    ProjectId,
    /// `user_id`.
    UserId,
    /// `is_admin` (`True`/`False`).
    IsAdmin,
    /// `is_admin_project` (`True`/`False`).
    IsAdminProject,
    /// `system_scope`.
    SystemScope,
    /// `system`: oslo's older name for `system_scope`.
    System,
    /// `domain_id`.
    DomainId,
    /// `roles`: any role equals the value, case-sensitively (unlike `role:`).
    Roles,
    /// Anything else: oslo looks it up in the credentials and finds nothing, so it is false.
    Unknown(String),
}

impl Attr {
    /// The attribute called `name`.
    pub(crate) fn from_name(name: &str) -> Attr {
        match name {
            "project_id" => Attr::ProjectId,
            "user_id" => Attr::UserId,
            "is_admin" => Attr::IsAdmin,
            "is_admin_project" => Attr::IsAdminProject,
            "system_scope" => Attr::SystemScope,
            "system" => Attr::System,
            "domain_id" => Attr::DomainId,
            "roles" => Attr::Roles,
            other => Attr::Unknown(other.to_owned()),
        }
    }

    /// Its name in rule text.
    pub(crate) fn name(&self) -> &str {
        match self {
            Attr::ProjectId => "project_id",
            Attr::UserId => "user_id",
            Attr::IsAdmin => "is_admin",
            Attr::IsAdminProject => "is_admin_project",
            Attr::SystemScope => "system_scope",
            Attr::System => "system",
            Attr::DomainId => "domain_id",
            Attr::Roles => "roles",
            Attr::Unknown(name) => name,
        }
    }
}

/// A constant on the left of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Literal {
    /// As written (`'member'`, `True`, `-3`).
    pub(crate) text: String,
    /// As Python's `str()` prints the value (`member`, `True`, `-3`): what is compared.
    pub(crate) value: String,
}

/// The right side of a check: text with `%(name)s` holes filled from the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    /// The quote the value was wrapped in, if any (it is not part of the value).
    pub(crate) quote: Option<char>,
    /// Text and holes, in order; never two texts in a row, never an empty text.
    pub(crate) pieces: Vec<Piece>,
}

/// A piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Literal text (a `%%` in the rule is one `%` here).
    Text(String),
    /// `%(name)s`: the target's `name`.
    Var(String),
}

impl Template {
    /// Whether the template, filled from `target`, equals `s`; false when the target
    /// lacks a key it names (oslo's check is false then too). Allocates nothing.
    pub(crate) fn matches(&self, target: &Target, s: &str) -> bool {
        let mut rest = s;
        for piece in &self.pieces {
            let part = match piece {
                Piece::Text(text) => text.as_str(),
                Piece::Var(key) => match target.get(key.as_str()) {
                    Some(v) => v.as_str(),
                    None => return false,
                },
            };
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        rest.is_empty()
    }

    /// The template filled from `target`, or `None` when the target lacks a key it names.
    pub(crate) fn render<'a>(&'a self, target: &'a Target) -> Option<Cow<'a, str>> {
        let part = |piece: &'a Piece| -> Option<&'a str> {
            match piece {
                Piece::Text(text) => Some(text),
                Piece::Var(key) => target.get(key.as_str()).map(String::as_str),
            }
        };
        match self.pieces.as_slice() {
            [one] => part(one).map(Cow::Borrowed),
            pieces => {
                let mut out = String::new();
                for piece in pieces {
                    out.push_str(part(piece)?);
                }
                Some(Cow::Owned(out))
            }
        }
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(q) = self.quote {
            write!(f, "{q}")?;
        }
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => {
                    for (i, part) in text.split('%').enumerate() {
                        if i > 0 {
                            f.write_str("%%")?;
                        }
                        f.write_str(part)?;
                    }
                }
                Piece::Var(key) => write!(f, "%({key})s")?,
            }
        }
        if let Some(q) = self.quote {
            write!(f, "{q}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Prints `c`, in parentheses when it is an `and` or an `or`.
        fn grouped(f: &mut fmt::Formatter<'_>, c: &Check) -> fmt::Result {
            match c {
                Check::And(_) | Check::Or(_) => write!(f, "({c})"),
                _ => write!(f, "{c}"),
            }
        }
        fn joined(f: &mut fmt::Formatter<'_>, items: &[Check], op: &str) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    write!(f, " {op} ")?;
                }
                grouped(f, item)?;
            }
            Ok(())
        }
        match self {
            Check::Always => f.write_str("@"),
            Check::Never => f.write_str("!"),
            Check::Role(name) => write!(f, "role:{name}"),
            Check::Rule(name) => write!(f, "rule:{name}"),
            Check::Attr { attr, value } => write!(f, "{}:{value}", attr.name()),
            Check::Const { literal, value } => write!(f, "{}:{value}", literal.text),
            Check::Not(inner) => {
                f.write_str("not ")?;
                grouped(f, inner)
            }
            Check::And(items) => joined(f, items, "and"),
            Check::Or(items) => joined(f, items, "or"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(pairs: &[(&str, &str)]) -> Target {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn tpl(pieces: Vec<Piece>) -> Template {
        Template {
            quote: None,
            pieces,
        }
    }

    #[test]
    fn templates_match_piece_by_piece() {
        let t = target(&[("a", "x"), ("b", "yz")]);
        let one = tpl(vec![Piece::Var("a".into())]);
        assert!(one.matches(&t, "x"));
        assert!(!one.matches(&t, "xx"));
        assert!(!one.matches(&t, ""));
        let mixed = tpl(vec![
            Piece::Text("p-".into()),
            Piece::Var("a".into()),
            Piece::Text("-".into()),
            Piece::Var("b".into()),
        ]);
        assert!(mixed.matches(&t, "p-x-yz"));
        assert!(!mixed.matches(&t, "p-x-y"));
        assert_eq!(mixed.render(&t).as_deref(), Some("p-x-yz"));
        let missing = tpl(vec![Piece::Var("nope".into())]);
        assert!(!missing.matches(&t, ""));
        assert_eq!(missing.render(&t), None);
    }

    #[test]
    fn percent_signs_print_doubled() {
        let t = Template {
            quote: Some('\''),
            pieces: vec![Piece::Text("50%".into()), Piece::Var("k".into())],
        };
        assert_eq!(t.to_string(), "'50%%%(k)s'");
    }

    #[test]
    fn printing_adds_only_the_parentheses_needed() {
        let r = |n: &str| Check::Rule(n.to_owned());
        let c = Check::Or(vec![
            r("a"),
            Check::And(vec![r("b"), Check::Not(Box::new(r("c")))]),
            Check::Not(Box::new(Check::Or(vec![r("d"), r("e")]))),
        ]);
        assert_eq!(
            c.to_string(),
            "rule:a or (rule:b and not rule:c) or not (rule:d or rule:e)"
        );
        let nested = Check::And(vec![Check::And(vec![r("a"), r("b")]), Check::Always]);
        assert_eq!(nested.to_string(), "(rule:a and rule:b) and @");
    }
}
