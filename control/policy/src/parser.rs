//! The oslo.policy rule language: words, then a precedence parser.
//!
//! Words are split exactly as oslo splits them: on whitespace, after which leading `(`
//! and trailing `)` come off each word as separate tokens, and a word that is `and`,
//! `or` or `not` in any case is an operator. Everything else is one check, `@`, `!` or
//! `kind:value`, split at its first `:`. Because `(` and `)` only come off the ends of
//! a word, `%(name)s` inside a check needs no escaping.
//!
//! oslo reduces the token stream with a greedy shift-reduce table; the grammar it
//! accepts is the usual one, which this module parses by recursive descent:
//!
//! ```text
//! rule   := or
//! or     := and ("or" and)*
//! and    := unary ("and" unary)*
//! unary  := "not" unary | atom
//! atom   := check | "(" or ")"
//! ```
//!
//! so `not` binds tightest, then `and`, then `or`, and a chain of one operator is one
//! n-ary node. A test below runs oslo's reduction table beside this parser on every short
//! token sequence and checks that both accept the same rules with the same meaning.
//!
//! Where oslo would log a rule it cannot understand and deny (or crash on it), this
//! parser refuses it with the byte offset of the problem.

use crate::check::{Attr, Check, Literal, Piece, Template};
use crate::error::{Keyword, Syntax};

/// How deep `not` and parentheses may nest in one rule (Cinder's own rules need 2).
pub(crate) const MAX_DEPTH: usize = 32;

/// A syntax error and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    /// Byte offset into the rule text.
    pub(crate) at: usize,
    /// What is wrong.
    pub(crate) why: Syntax,
}

fn fault(at: usize, why: Syntax) -> Fault {
    Fault { at, why }
}

/// Parses one rule's text.
pub(crate) fn parse(text: &str) -> Result<Check, Fault> {
    // oslo: the empty rule allows everyone.
    if text.is_empty() {
        return Ok(Check::Always);
    }
    let toks = tokenize(text)?;
    if toks.is_empty() {
        return Err(fault(0, Syntax::Blank));
    }
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let check = p.or()?;
    match p.toks.get(p.pos) {
        None => Ok(check),
        Some(Token {
            tok: Tok::Close,
            at,
        }) => Err(fault(*at, Syntax::UnmatchedClose)),
        Some(Token { at, .. }) => Err(fault(*at, Syntax::MissingOperator)),
    }
}

#[derive(Debug)]
enum Tok {
    Open,
    Close,
    Op(Keyword),
    Check(Check),
}

#[derive(Debug)]
struct Token {
    tok: Tok,
    at: usize,
}

/// The whitespace-separated words of `text`, with their byte offsets.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut rest = text;
    let mut base = 0;
    std::iter::from_fn(move || {
        let start = rest.find(|c: char| !c.is_whitespace())?;
        let len = rest[start..]
            .find(char::is_whitespace)
            .unwrap_or(rest.len() - start);
        let at = base + start;
        let word = &rest[start..start + len];
        rest = &rest[start + len..];
        base = at + len;
        Some((at, word))
    })
}

fn tokenize(text: &str) -> Result<Vec<Token>, Fault> {
    let mut out = Vec::new();
    for (at, word) in words(text) {
        let lead = word.bytes().take_while(|&b| b == b'(').count();
        out.extend((0..lead).map(|i| Token {
            tok: Tok::Open,
            at: at + i,
        }));
        let rest = &word[lead..];
        let at = at + lead;
        let trail = rest.bytes().rev().take_while(|&b| b == b')').count();
        let clean = &rest[..rest.len() - trail];
        if !clean.is_empty() {
            let tok = match clean.to_ascii_lowercase().as_str() {
                "and" => Tok::Op(Keyword::And),
                "or" => Tok::Op(Keyword::Or),
                "not" => Tok::Op(Keyword::Not),
                _ if quoted(clean).is_some() => return Err(fault(at, Syntax::QuotedString)),
                _ => Tok::Check(parse_check(clean, at)?),
            };
            out.push(Token { tok, at });
        }
        let at = at + clean.len();
        out.extend((0..trail).map(|i| Token {
            tok: Tok::Close,
            at: at + i,
        }));
    }
    Ok(out)
}

/// The inside of `s` and its quote, when `s` is wrapped in a pair of `'` or `"`.
fn quoted(s: &str) -> Option<(char, &str)> {
    let q = s.chars().next().filter(|&c| c == '\'' || c == '"')?;
    (s.len() >= 2 && s.ends_with(q)).then(|| (q, &s[1..s.len() - 1]))
}

/// One check word (no spaces, no outer parentheses), found at byte `at`.
fn parse_check(word: &str, at: usize) -> Result<Check, Fault> {
    match word {
        "@" => return Ok(Check::Always),
        "!" => return Ok(Check::Never),
        _ => {}
    }
    let Some(colon) = word.find(':') else {
        return Err(fault(
            at,
            Syntax::NotACheck {
                token: word.to_owned(),
            },
        ));
    };
    let (kind, value) = (&word[..colon], &word[colon + 1..]);
    if kind.is_empty() {
        return Err(fault(at, Syntax::EmptyCheckName));
    }
    if kind.eq_ignore_ascii_case("http") || kind.eq_ignore_ascii_case("https") {
        return Err(fault(
            at,
            Syntax::RemoteCheck {
                kind: kind.to_owned(),
            },
        ));
    }
    let empty = || {
        fault(
            at + colon,
            Syntax::EmptyValue {
                kind: kind.to_owned(),
            },
        )
    };
    if value.is_empty() {
        return Err(empty());
    }
    let value_at = at + colon + 1;
    if kind == "rule" {
        return Ok(Check::Rule(value.to_owned()));
    }
    let template = parse_template(value, value_at)?;
    if template.pieces.is_empty() {
        return Err(empty());
    }
    if kind == "role" {
        return Ok(Check::Role(template));
    }
    Ok(match parse_literal(kind, at)? {
        Some(literal) => Check::Const {
            literal,
            value: template,
        },
        None => Check::Attr {
            attr: Attr::from_name(kind),
            value: template,
        },
    })
}

/// The left side of a generic check, when it is a constant (oslo evaluates it with
/// Python's `ast.literal_eval`); `None` when it names a credential attribute.
fn parse_literal(kind: &str, at: usize) -> Result<Option<Literal>, Fault> {
    let bad = || {
        fault(
            at,
            Syntax::BadLiteral {
                text: kind.to_owned(),
            },
        )
    };
    let literal = |value: String| {
        Ok(Some(Literal {
            text: kind.to_owned(),
            value,
        }))
    };
    let first = kind.chars().next().unwrap_or(' ');
    if first == '\'' || first == '"' {
        return match quoted(kind) {
            Some((q, inner)) if !inner.contains(q) && !inner.contains('\\') => {
                literal(inner.to_owned())
            }
            _ => Err(bad()),
        };
    }
    if matches!(kind, "True" | "False" | "None") {
        return literal(kind.to_owned());
    }
    let (negative, digits) = match kind.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, kind.strip_prefix('+').unwrap_or(kind)),
    };
    if !digits.starts_with(|c: char| c.is_ascii_digit()) {
        // A name (or a sign followed by a name): a credential attribute.
        return Ok(None);
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        return literal("0".to_owned());
    }
    if significant.len() != digits.len() {
        // Python 3 refuses leading zeros (`007`) except in zero itself.
        return Err(bad());
    }
    literal(if negative {
        format!("-{significant}")
    } else {
        significant.to_owned()
    })
}

/// The right side of a check, found at byte `at`: optional quotes, then text with
/// `%(name)s` holes and `%%` escapes.
fn parse_template(value: &str, at: usize) -> Result<Template, Fault> {
    let (quote, body, body_at) = match quoted(value) {
        Some((q, inner)) => (Some(q), inner, at + 1),
        None => (None, value, at),
    };
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = body;
    while let Some(i) = rest.find('%') {
        text.push_str(&rest[..i]);
        let here = body_at + (body.len() - rest.len()) + i;
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('%') {
            text.push('%');
            rest = r;
            continue;
        }
        let bad = || fault(here, Syntax::BadSubstitution);
        let inner = after.strip_prefix('(').ok_or_else(bad)?;
        let close = inner.find(')').ok_or_else(bad)?;
        let key = &inner[..close];
        if key.is_empty() || key.contains('(') {
            return Err(bad());
        }
        rest = inner[close + 1..].strip_prefix('s').ok_or_else(bad)?;
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(Piece::Var(key.to_owned()));
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(Template { quote, pieces })
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek_op(&self, op: Keyword) -> bool {
        matches!(self.toks.get(self.pos), Some(Token { tok: Tok::Op(k), .. }) if *k == op)
    }

    fn enter(&mut self, at: usize) -> Result<(), Fault> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(fault(at, Syntax::TooDeep { max: MAX_DEPTH }));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Check, Fault> {
        let mut items = vec![self.and()?];
        while self.peek_op(Keyword::Or) {
            self.pos += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.swap_remove(0)
        } else {
            Check::Or(items)
        })
    }

    fn and(&mut self) -> Result<Check, Fault> {
        let mut items = vec![self.unary()?];
        while self.peek_op(Keyword::And) {
            self.pos += 1;
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 {
            items.swap_remove(0)
        } else {
            Check::And(items)
        })
    }

    fn unary(&mut self) -> Result<Check, Fault> {
        if self.peek_op(Keyword::Not) {
            let at = self.toks[self.pos].at;
            self.pos += 1;
            self.enter(at)?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Check::Not(Box::new(inner)));
        }
        self.atom()
    }

    /// Why there is no operand where one was expected, judged by the token before it.
    fn missing_operand(&self, before: usize, found_at: Option<usize>) -> Fault {
        match before.checked_sub(1).and_then(|i| self.toks.get(i)) {
            Some(Token {
                tok: Tok::Op(op),
                at,
            }) => fault(*at, Syntax::NoRightOperand { op: *op }),
            Some(Token { tok: Tok::Open, at }) => match found_at {
                Some(_) => fault(*at, Syntax::EmptyParens),
                None => fault(*at, Syntax::UnclosedParen),
            },
            _ => match found_at {
                Some(at) => fault(at, Syntax::UnmatchedClose),
                None => fault(0, Syntax::Blank),
            },
        }
    }

    fn atom(&mut self) -> Result<Check, Fault> {
        let here = self.pos;
        let Some(token) = self.toks.get_mut(here) else {
            return Err(self.missing_operand(here, None));
        };
        let at = token.at;
        match &mut token.tok {
            Tok::Check(check) => {
                let check = std::mem::replace(check, Check::Never);
                self.pos += 1;
                Ok(check)
            }
            Tok::Open => {
                self.pos += 1;
                self.enter(at)?;
                let inner = self.or()?;
                match self.toks.get(self.pos) {
                    Some(Token {
                        tok: Tok::Close, ..
                    }) => {
                        self.pos += 1;
                        self.depth -= 1;
                        Ok(inner)
                    }
                    None => Err(fault(at, Syntax::UnclosedParen)),
                    Some(Token { at, .. }) => Err(fault(*at, Syntax::MissingOperator)),
                }
            }
            Tok::Close => Err(self.missing_operand(here, Some(at))),
            Tok::Op(op) => Err(fault(at, Syntax::NoLeftOperand { op: *op })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Credentials, Enforcer, Target};
    use proptest::prelude::*;

    fn role(name: &str) -> Check {
        Check::Role(Template {
            quote: None,
            pieces: vec![Piece::Text(name.to_owned())],
        })
    }

    fn not(c: Check) -> Check {
        Check::Not(Box::new(c))
    }

    fn err(text: &str) -> (usize, Syntax) {
        match parse(text) {
            Ok(c) => panic!("{text:?} parsed as {c:?}"),
            Err(f) => (f.at, f.why),
        }
    }

    #[test]
    fn not_binds_tighter_than_and_and_and_tighter_than_or() {
        assert_eq!(
            parse("role:a or role:b and not role:c"),
            Ok(Check::Or(vec![
                role("a"),
                Check::And(vec![role("b"), not(role("c"))])
            ]))
        );
        assert_eq!(
            parse("not role:a and role:b or role:c"),
            Ok(Check::Or(vec![
                Check::And(vec![not(role("a")), role("b")]),
                role("c")
            ]))
        );
        assert_eq!(
            parse("role:a or role:b or role:c and role:d and role:e"),
            Ok(Check::Or(vec![
                role("a"),
                role("b"),
                Check::And(vec![role("c"), role("d"), role("e")])
            ]))
        );
        assert_eq!(parse("not not role:a"), Ok(not(not(role("a")))));
    }

    #[test]
    fn parentheses_group_and_may_touch_the_checks() {
        let want = Check::And(vec![Check::Or(vec![role("a"), role("b")]), role("c")]);
        assert_eq!(parse("(role:a or role:b) and role:c"), Ok(want.clone()));
        assert_eq!(parse("( role:a or role:b ) and role:c"), Ok(want.clone()));
        assert_eq!(parse("((role:a or role:b)) and (role:c)"), Ok(want));
        assert_eq!(parse("not (role:a)"), Ok(not(role("a"))));
        assert_eq!(parse("(not role:a)"), Ok(not(role("a"))));
        // Inside a word a parenthesis is just a character, as in oslo.
        assert_eq!(
            parse("project_id:%(project_id)s"),
            Ok(Check::Attr {
                attr: Attr::ProjectId,
                value: Template {
                    quote: None,
                    pieces: vec![Piece::Var("project_id".into())]
                }
            })
        );
        assert_eq!(
            parse("(project_id:%(project_id)s)"),
            parse("project_id:%(project_id)s")
        );
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(
            parse("role:a AND NOT role:b Or role:c"),
            parse("role:a and not role:b or role:c")
        );
        assert_eq!(parse("nOt role:a"), Ok(not(role("a"))));
        // Check kinds are not: `Role:` is a credential attribute nobody has.
        assert!(matches!(
            parse("Role:admin"),
            Ok(Check::Attr {
                attr: Attr::Unknown(_),
                ..
            })
        ));
    }

    #[test]
    fn special_checks_and_empty_rule() {
        assert_eq!(parse(""), Ok(Check::Always));
        assert_eq!(parse("@"), Ok(Check::Always));
        assert_eq!(parse("!"), Ok(Check::Never));
        assert_eq!(parse("not @"), Ok(not(Check::Always)));
        assert_eq!(
            parse("rule:volume_extension:volume_type_encryption"),
            Ok(Check::Rule(
                "volume_extension:volume_type_encryption".into()
            ))
        );
    }

    #[test]
    fn literals_on_either_side() {
        let Ok(Check::Const { literal, value }) = parse("'member':%(role.name)s") else {
            panic!("not a constant check");
        };
        assert_eq!(literal.value, "member");
        assert_eq!(value.pieces, vec![Piece::Var("role.name".into())]);
        let lit = |text: &str| match parse(&format!("{text}:%(x)s")) {
            Ok(Check::Const { literal, .. }) => literal.value,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(lit("\"member\""), "member");
        assert_eq!(lit("True"), "True");
        assert_eq!(lit("None"), "None");
        assert_eq!(lit("42"), "42");
        assert_eq!(lit("+42"), "42");
        assert_eq!(lit("-42"), "-42");
        assert_eq!(lit("-0"), "0");
        assert_eq!(lit("000"), "0");
        assert_eq!(lit("''"), "");
        // A bare word on the left is a credential attribute; `true` is not a literal.
        assert!(matches!(
            parse("true:%(x)s"),
            Ok(Check::Attr {
                attr: Attr::Unknown(_),
                ..
            })
        ));
        let Ok(Check::Attr { value, .. }) = parse("project_id:'abc'") else {
            panic!("not an attribute check");
        };
        assert_eq!(value.quote, Some('\''));
        assert_eq!(value.pieces, vec![Piece::Text("abc".into())]);
        let Ok(Check::Attr { value, .. }) = parse("user_id:u-%(a)s-%%-%(b)s") else {
            panic!("not an attribute check");
        };
        assert_eq!(
            value.pieces,
            vec![
                Piece::Text("u-".into()),
                Piece::Var("a".into()),
                Piece::Text("-%-".into()),
                Piece::Var("b".into())
            ]
        );
    }

    #[test]
    fn errors_say_where() {
        assert_eq!(err("(role:a or role:b"), (0, Syntax::UnclosedParen));
        assert_eq!(err("role:a and (role:b"), (11, Syntax::UnclosedParen));
        assert_eq!(err("role:a)"), (6, Syntax::UnmatchedClose));
        assert_eq!(err("(role:a))"), (8, Syntax::UnmatchedClose));
        assert_eq!(err("()"), (0, Syntax::EmptyParens));
        assert_eq!(
            err("role:a and"),
            (7, Syntax::NoRightOperand { op: Keyword::And })
        );
        assert_eq!(
            err("role:a or not"),
            (10, Syntax::NoRightOperand { op: Keyword::Not })
        );
        assert_eq!(
            err("(role:a and) or role:b"),
            (8, Syntax::NoRightOperand { op: Keyword::And })
        );
        assert_eq!(
            err("and role:a"),
            (0, Syntax::NoLeftOperand { op: Keyword::And })
        );
        assert_eq!(
            err("role:a or or role:b"),
            (10, Syntax::NoLeftOperand { op: Keyword::Or })
        );
        assert_eq!(err("role:a role:b"), (7, Syntax::MissingOperator));
        assert_eq!(err("(role:a role:b)"), (8, Syntax::MissingOperator));
        assert_eq!(
            err("role:a or http://policy.example/check"),
            (
                10,
                Syntax::RemoteCheck {
                    kind: "http".into()
                }
            )
        );
        assert_eq!(
            err("https:%(x)s"),
            (
                0,
                Syntax::RemoteCheck {
                    kind: "https".into()
                }
            )
        );
        assert_eq!(err("role:a or :admin"), (10, Syntax::EmptyCheckName));
        assert_eq!(
            err("role:"),
            (
                4,
                Syntax::EmptyValue {
                    kind: "role".into()
                }
            )
        );
        assert_eq!(
            err("rule: or @"),
            (
                4,
                Syntax::EmptyValue {
                    kind: "rule".into()
                }
            )
        );
        assert_eq!(
            err("project_id:''"),
            (
                10,
                Syntax::EmptyValue {
                    kind: "project_id".into()
                }
            )
        );
        assert_eq!(
            err("@ and admin"),
            (
                6,
                Syntax::NotACheck {
                    token: "admin".into()
                }
            )
        );
        assert_eq!(err("'admin'"), (0, Syntax::QuotedString));
        assert_eq!(err("project_id:%(x)d"), (11, Syntax::BadSubstitution));
        assert_eq!(err("project_id:a%b"), (12, Syntax::BadSubstitution));
        assert_eq!(err("project_id:%()s"), (11, Syntax::BadSubstitution));
        assert_eq!(err("project_id:'%(x'"), (12, Syntax::BadSubstitution));
        assert_eq!(
            err("'abc:%(x)s"),
            (
                0,
                Syntax::BadLiteral {
                    text: "'abc".into()
                }
            )
        );
        assert_eq!(
            err("007:%(x)s"),
            (0, Syntax::BadLiteral { text: "007".into() })
        );
        assert_eq!(
            err("1.5:%(x)s"),
            (0, Syntax::BadLiteral { text: "1.5".into() })
        );
        assert_eq!(err("   "), (0, Syntax::Blank));
        let deep = format!("{}@{}", "(".repeat(40), ")".repeat(40));
        assert_eq!(err(&deep), (32, Syntax::TooDeep { max: MAX_DEPTH }));
        let nots = format!("{}@", "not ".repeat(40));
        assert_eq!(err(&nots), (128, Syntax::TooDeep { max: MAX_DEPTH }));
        // Non-ASCII text: offsets are in bytes.
        assert_eq!(err("role:é)"), (7, Syntax::UnmatchedClose));
    }

    #[test]
    fn cinder_defaults_print_and_parse_back() {
        for d in crate::defaults::RULES {
            let check = parse(d.check).unwrap_or_else(|f| panic!("{}: {f:?}", d.name));
            let printed = check.to_string();
            assert_eq!(parse(&printed), Ok(check), "{}: {printed}", d.name);
        }
    }

    // ---- Random ASTs print to rules that parse back to the same AST ----

    fn arb_template() -> impl Strategy<Value = Template> {
        let piece = prop_oneof![
            "[a-z0-9_.%-]{1,5}".prop_map(Piece::Text),
            "[a-z_.]{1,8}".prop_map(Piece::Var),
        ];
        (
            prop::option::of(prop_oneof![Just('\''), Just('"')]),
            prop::collection::vec(piece, 1..4),
        )
            .prop_map(|(quote, raw)| {
                let mut pieces: Vec<Piece> = Vec::new();
                for p in raw {
                    match (pieces.last_mut(), p) {
                        (Some(Piece::Text(t)), Piece::Text(more)) => t.push_str(&more),
                        (_, p) => pieces.push(p),
                    }
                }
                Template { quote, pieces }
            })
    }

    fn arb_literal() -> impl Strategy<Value = Literal> {
        prop_oneof![
            prop_oneof![Just("True"), Just("False"), Just("None")].prop_map(|s| Literal {
                text: s.to_owned(),
                value: s.to_owned(),
            }),
            ("[a-z_]{0,6}", prop_oneof![Just('\''), Just('"')]).prop_map(|(s, q)| Literal {
                text: format!("{q}{s}{q}"),
                value: s,
            }),
            any::<i64>().prop_map(|n| Literal {
                text: n.to_string(),
                value: n.to_string(),
            }),
        ]
    }

    fn arb_attr() -> impl Strategy<Value = Attr> {
        prop_oneof![
            Just(Attr::ProjectId),
            Just(Attr::UserId),
            Just(Attr::IsAdmin),
            Just(Attr::IsAdminProject),
            Just(Attr::SystemScope),
            Just(Attr::System),
            Just(Attr::DomainId),
            Just(Attr::Roles),
            "[a-z][a-z_.]{0,8}".prop_map(|s| Attr::from_name(&s)),
        ]
        .prop_filter("role, rule and http are check kinds", |a| {
            !matches!(a.name(), "role" | "rule" | "http" | "https")
        })
    }

    fn arb_leaf() -> impl Strategy<Value = Check> {
        prop_oneof![
            Just(Check::Always),
            Just(Check::Never),
            arb_template().prop_map(Check::Role),
            "[a-z][a-z0-9_:-]{0,12}".prop_map(Check::Rule),
            (arb_attr(), arb_template()).prop_map(|(attr, value)| Check::Attr { attr, value }),
            (arb_literal(), arb_template())
                // `'a':'b'` would be one quoted word, which oslo's tokenizer never parses.
                .prop_filter("a word may not start and end with one quote", |(l, v)| {
                    v.quote.is_none() || !l.text.starts_with(v.quote.unwrap_or(' '))
                })
                .prop_map(|(literal, value)| Check::Const { literal, value }),
        ]
    }

    fn arb_check() -> impl Strategy<Value = Check> {
        arb_leaf().prop_recursive(5, 48, 4, |inner| {
            prop_oneof![
                inner.clone().prop_map(|c| Check::Not(Box::new(c))),
                prop::collection::vec(inner.clone(), 2..4).prop_map(Check::And),
                prop::collection::vec(inner, 2..4).prop_map(Check::Or),
            ]
        })
    }

    proptest! {
        #[test]
        fn printed_rules_parse_back(check in arb_check()) {
            let text = check.to_string();
            prop_assert_eq!(parse(&text), Ok(check), "{}", text);
        }
    }

    // ---- oslo's shift-reduce table, transcribed, as the reference for the grammar ----

    #[derive(Debug, Clone)]
    enum Node {
        Var(usize),
        Not(Box<Node>),
        And(Vec<Node>),
        Or(Vec<Node>),
    }

    impl Node {
        fn eval(&self, roles: usize) -> bool {
            match self {
                Node::Var(i) => roles & (1 << i) != 0,
                Node::Not(n) => !n.eval(roles),
                Node::And(v) => v.iter().all(|n| n.eval(roles)),
                Node::Or(v) => v.iter().any(|n| n.eval(roles)),
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Sym {
        Check(Node),
        AndExpr(Vec<Node>),
        OrExpr(Vec<Node>),
        And,
        Or,
        Not,
        Open,
        Close,
    }

    /// `oslo_policy._parser.ParseState`: shift each token, reducing greedily.
    fn oslo_parse(tokens: &[Sym]) -> Option<Node> {
        let mut stack: Vec<Sym> = Vec::new();
        for t in tokens {
            stack.push(t.clone());
            loop {
                let n = stack.len();
                let reduced = if n >= 3 {
                    let (a, b, c) = (&stack[n - 3], &stack[n - 2], &stack[n - 1]);
                    match (a, b, c) {
                        (Sym::Open, Sym::Check(x), Sym::Close) => Some(Sym::Check(x.clone())),
                        (Sym::Open, Sym::AndExpr(v), Sym::Close) => {
                            Some(Sym::Check(Node::And(v.clone())))
                        }
                        (Sym::Open, Sym::OrExpr(v), Sym::Close) => {
                            Some(Sym::Check(Node::Or(v.clone())))
                        }
                        (Sym::Check(x), Sym::And, Sym::Check(y)) => {
                            Some(Sym::AndExpr(vec![x.clone(), y.clone()]))
                        }
                        (Sym::AndExpr(v), Sym::And, Sym::Check(y)) => {
                            let mut v = v.clone();
                            v.push(y.clone());
                            Some(Sym::AndExpr(v))
                        }
                        (Sym::OrExpr(v), Sym::And, Sym::Check(y)) => {
                            let mut v = v.clone();
                            let last = v.pop()?;
                            v.push(match last {
                                Node::And(mut w) => {
                                    w.push(y.clone());
                                    Node::And(w)
                                }
                                other => Node::And(vec![other, y.clone()]),
                            });
                            Some(Sym::OrExpr(v))
                        }
                        (Sym::Check(x), Sym::Or, Sym::Check(y)) => {
                            Some(Sym::OrExpr(vec![x.clone(), y.clone()]))
                        }
                        (Sym::AndExpr(v), Sym::Or, Sym::Check(y)) => {
                            Some(Sym::OrExpr(vec![Node::And(v.clone()), y.clone()]))
                        }
                        (Sym::OrExpr(v), Sym::Or, Sym::Check(y)) => {
                            let mut v = v.clone();
                            v.push(y.clone());
                            Some(Sym::OrExpr(v))
                        }
                        _ => None,
                    }
                } else {
                    None
                };
                if let Some(s) = reduced {
                    stack.truncate(n - 3);
                    stack.push(s);
                    continue;
                }
                if n >= 2
                    && let (Sym::Not, Sym::Check(x)) = (&stack[n - 2], &stack[n - 1])
                {
                    let s = Sym::Check(Node::Not(Box::new(x.clone())));
                    stack.truncate(n - 2);
                    stack.push(s);
                    continue;
                }
                break;
            }
        }
        match stack.as_slice() {
            [Sym::Check(x)] => Some(x.clone()),
            [Sym::AndExpr(v)] => Some(Node::And(v.clone())),
            [Sym::OrExpr(v)] => Some(Node::Or(v.clone())),
            _ => None,
        }
    }

    fn text_of(tokens: &[Sym]) -> String {
        let words: Vec<String> = tokens
            .iter()
            .map(|t| match t {
                Sym::Check(Node::Var(i)) => format!("role:r{i}"),
                Sym::And => "and".into(),
                Sym::Or => "or".into(),
                Sym::Not => "not".into(),
                Sym::Open => "(".into(),
                Sym::Close => ")".into(),
                other => unreachable!("{other:?}"),
            })
            .collect();
        words.join(" ")
    }

    /// Both parsers accept `tokens` or both refuse it, and agree on every role set.
    fn agree(enforcer: &Enforcer, tokens: &[Sym], vars: usize) -> Result<(), String> {
        let text = text_of(tokens);
        let ours = parse(&text).ok();
        let theirs = oslo_parse(tokens);
        match (ours, theirs) {
            (None, None) => Ok(()),
            (Some(ours), Some(theirs)) => {
                let target = Target::new();
                for roles in 0..(1usize << vars) {
                    let creds = Credentials {
                        roles: (0..vars)
                            .filter(|i| roles & (1 << i) != 0)
                            .map(|i| format!("r{i}"))
                            .collect(),
                        ..Credentials::default()
                    };
                    let got = enforcer.eval(&ours, &target, &creds, 0);
                    if got != theirs.eval(roles) {
                        return Err(format!("{text:?}: roles {roles:b}: ours {got}"));
                    }
                }
                Ok(())
            }
            (ours, theirs) => Err(format!("{text:?}: ours {ours:?}, oslo {theirs:?}")),
        }
    }

    fn symbol(i: usize) -> Sym {
        match i {
            0 => Sym::And,
            1 => Sym::Or,
            2 => Sym::Not,
            3 => Sym::Open,
            4 => Sym::Close,
            v => Sym::Check(Node::Var(v - 5)),
        }
    }

    #[test]
    fn grammar_matches_oslo_on_every_short_token_sequence() {
        let enforcer = Enforcer::cinder_defaults();
        let alphabet: usize = 7; // and, or, not, (, ), two checks
        let mut accepted = 0;
        for len in 1..=6u32 {
            for mut code in 0..alphabet.pow(len) {
                let tokens: Vec<Sym> = (0..len)
                    .map(|_| {
                        let s = symbol(code % alphabet);
                        code /= alphabet;
                        s
                    })
                    .collect();
                if let Err(e) = agree(&enforcer, &tokens, 2) {
                    panic!("{e}");
                }
                accepted += usize::from(parse(&text_of(&tokens)).is_ok());
            }
        }
        // Sanity: the sweep reaches a good number of valid rules, not just errors.
        assert!(accepted >= 300, "only {accepted} accepted");
    }

    proptest! {
        #[test]
        fn grammar_matches_oslo_on_longer_sequences(
            codes in prop::collection::vec(0usize..8, 7..16)
        ) {
            let enforcer = Enforcer::cinder_defaults();
            let tokens: Vec<Sym> = codes.into_iter().map(symbol).collect();
            prop_assert_eq!(agree(&enforcer, &tokens, 3), Ok(()));
        }
    }
}
