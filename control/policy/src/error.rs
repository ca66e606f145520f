//! The policy engine's error types.

use std::path::PathBuf;

/// Why a policy decision or a policy load failed.
///
/// [`PolicyError::NotAuthorized`] is the request's fault (the API answers 403);
/// [`PolicyError::Unregistered`] is a programming error (the code asked about a rule
/// name Cinder does not have); the others come from loading an override file and
/// should stop the service from starting.
#[derive(Debug, displaydoc::Display, thiserror::Error)]
pub enum PolicyError {
    /// Policy doesn't allow {rule} to be performed.
    NotAuthorized {
        /// The rule that said no.
        rule: String,
    },
    /// policy rule {rule} is not registered
    Unregistered {
        /// The name that was asked about.
        rule: String,
    },
    /// policy rule {rule} cannot be parsed: {why} (at byte {at} of {text:?})
    Parse {
        /// The name of the rule whose text is wrong.
        rule: String,
        /// The rule text as written.
        text: String,
        /// Byte offset into `text` where the problem is.
        at: usize,
        /// What is wrong there.
        why: Syntax,
    },
    /// policy file {path}: {why}
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: FileProblem,
    },
    /// policy overrides: {why}
    BadOverrides {
        /// What is wrong with the text.
        why: FileProblem,
    },
    /// policy rules refer to one another in a loop: {rules:?}
    Cycle {
        /// The rules on the loop, in reference order; the first one is repeated at the end.
        rules: Vec<String>,
    },
}

/// An operator keyword of the rule language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, displaydoc::Display)]
pub enum Keyword {
    /// and
    And,
    /// or
    Or,
    /// not
    Not,
}

/// What is wrong with a rule's text (see [`PolicyError::Parse`]).
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display)]
pub enum Syntax {
    /// the rule is only whitespace; write "" or "@" to allow everyone, "!" to allow no one
    Blank,
    /// this `(` is never closed
    UnclosedParen,
    /// this `)` closes nothing
    UnmatchedClose,
    /// these parentheses hold no check
    EmptyParens,
    /// `{op}` has no check on its left
    NoLeftOperand {
        /// The operator.
        op: Keyword,
    },
    /// `{op}` has no check after it
    NoRightOperand {
        /// The operator.
        op: Keyword,
    },
    /// expected `and` or `or` before this
    MissingOperator,
    /// `{token}` is not a check; checks are written `kind:value`, `@` or `!`
    NotACheck {
        /// The word that was found.
        token: String,
    },
    /// a check needs a name before its `:`
    EmptyCheckName,
    /// the `{kind}:` check needs a value after its `:`
    EmptyValue {
        /// The part before the `:`.
        kind: String,
    },
    /// `{kind}:` checks call a remote policy service, which Basalt does not have
    RemoteCheck {
        /// `http` or `https`.
        kind: String,
    },
    /// a word that starts and ends with a quote is a bare string, not a check; quote only one side of the `:`
    QuotedString,
    /// only `%(name)s` substitutions and `%%` are understood
    BadSubstitution,
    /// `{text}` is not a literal Basalt understands (quoted text without backslashes, an integer, True, False or None)
    BadLiteral {
        /// The literal as written.
        text: String,
    },
    /// the rule nests `not` and parentheses more than {max} deep
    TooDeep {
        /// The limit.
        max: usize,
    },
}

/// What is wrong with an override file or text (see [`PolicyError::BadFile`]).
#[derive(Debug, displaydoc::Display)]
pub enum FileProblem {
    /// it cannot be read: {0}
    Io(std::io::Error),
    /// it is not valid YAML: {0}
    Yaml(yaml_rust2::ScanError),
    /// it is not valid JSON: {0}
    Json(serde_json::Error),
    /// it holds more than one YAML document
    MultipleDocuments,
    /// its top level is not a mapping of rule names to rule strings
    NotAMapping,
    /// the rule name {key} is not a string
    NameNotString {
        /// The offending key, as YAML would print it.
        key: String,
    },
    /// the rule {name} has no string value (quote the rule; "" allows everyone; lists of lists are not supported)
    NotAString {
        /// The rule whose value is wrong.
        name: String,
    },
}
