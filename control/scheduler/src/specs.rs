//! Cinder's extra-spec operators: how a volume type's requirement is compared with a pool's
//! capability (`cinder/scheduler/filters/extra_specs_ops.py`).
//!
//! A requirement is either a plain value (string equality) or an operator followed by its
//! operand: `= 10` (numerically at least), `== 10`, `!= 10`, `>= 10`, `<= 10`, `s== abc`,
//! `s!= abc`, `s< abc`, `s<= abc`, `s> abc`, `s>= abc`, `<in> sub` (substring), `<is> True`
//! (boolean), and `<or> a <or> b ...` (one of the listed words). A numeric operator whose
//! operands are not numbers fails the match rather than erroring, as in Cinder.

/// A capability value as the filter sees it: its string form, or absent.
pub type CapValue<'a> = Option<&'a str>;

/// Does `value` satisfy the requirement `req`?
pub fn matches(value: CapValue<'_>, req: &str) -> bool {
    let mut words = req.split_whitespace();
    let Some(op) = words.next() else {
        // An empty requirement asks for an empty value.
        return value == Some(req);
    };
    let kind = match op {
        "=" | "==" | "!=" | ">=" | "<=" => Op::Num(op),
        "s==" | "s!=" | "s<" | "s<=" | "s>" | "s>=" => Op::Str(op),
        "<in>" => Op::In,
        "<is>" => Op::Is,
        "<or>" => Op::Or,
        _ => return value == Some(req),
    };
    let Some(value) = value else {
        return false;
    };
    let rest: Vec<&str> = words.collect();
    match kind {
        Op::Or => {
            // "<or> a <or> b <or> c": every other word is an alternative.
            rest.iter().step_by(2).any(|w| *w == value)
        }
        _ => {
            let Some(operand) = rest.first() else {
                return false;
            };
            match kind {
                Op::Num(op) => {
                    let (Some(x), Some(y)) = (parse_float(value), parse_float(operand)) else {
                        return false;
                    };
                    match op {
                        "=" | ">=" => x >= y,
                        "==" => x == y,
                        "!=" => x != y,
                        "<=" => x <= y,
                        _ => false,
                    }
                }
                Op::Str(op) => match op {
                    "s==" => value == *operand,
                    "s!=" => value != *operand,
                    "s<" => value < *operand,
                    "s<=" => value <= *operand,
                    "s>" => value > *operand,
                    "s>=" => value >= *operand,
                    _ => false,
                },
                Op::In => value.contains(operand),
                Op::Is => bool_from_string(value) == bool_from_string(operand),
                Op::Or => false,
            }
        }
    }
}

enum Op<'a> {
    Num(&'a str),
    Str(&'a str),
    In,
    Is,
    Or,
}

/// Python's `float()` on a string: surrounding whitespace allowed, `inf`/`nan` words too.
fn parse_float(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok()
}

/// oslo's `bool_from_string` (not strict): true for `1`, `t`, `true`, `on`, `y`, `yes`
/// in any case; false for everything else.
pub fn bool_from_string(s: &str) -> bool {
    matches!(
        s.trim().to_ascii_lowercase().as_str(),
        "1" | "t" | "true" | "on" | "y" | "yes"
    )
}

/// The string a capability value is compared as: booleans as Python prints them (`True`,
/// `False`), numbers and strings as they are, anything else as JSON.
pub fn cap_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::Bool(true) => Some("True".to_owned()),
        serde_json::Value::Bool(false) => Some("False".to_owned()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_are_string_equality() {
        assert!(matches(Some("basalt"), "basalt"));
        assert!(!matches(Some("basalt"), "lvm"));
        assert!(!matches(None, "basalt"));
        assert!(matches(Some("True"), "True"));
        assert!(!matches(Some("True"), "true"));
    }

    #[test]
    fn numeric_operators() {
        assert!(matches(Some("10"), "= 10"));
        assert!(matches(Some("11"), "= 10"));
        assert!(!matches(Some("9.5"), "= 10"));
        assert!(matches(Some("10.0"), "== 10"));
        assert!(matches(Some("3"), "!= 10"));
        assert!(matches(Some("10"), ">= 10"));
        assert!(matches(Some("10"), "<= 10"));
        assert!(!matches(Some("11"), "<= 10"));
        // Not numbers: no match, no error.
        assert!(!matches(Some("abc"), ">= 10"));
        assert!(!matches(Some("10"), ">= ten"));
        // An operator without its operand never matches.
        assert!(!matches(Some("10"), ">="));
    }

    #[test]
    fn string_operators() {
        assert!(matches(Some("abc"), "s== abc"));
        assert!(matches(Some("abd"), "s!= abc"));
        assert!(matches(Some("abb"), "s< abc"));
        assert!(matches(Some("abc"), "s<= abc"));
        assert!(matches(Some("abd"), "s> abc"));
        assert!(matches(Some("abc"), "s>= abc"));
        assert!(!matches(Some("abb"), "s>= abc"));
    }

    #[test]
    fn in_is_and_or() {
        assert!(matches(Some("iSCSI/NVMe-oF"), "<in> NVMe"));
        assert!(!matches(Some("iSCSI"), "<in> NVMe"));
        assert!(matches(Some("True"), "<is> True"));
        assert!(matches(Some("true"), "<is> yes"));
        assert!(matches(Some("False"), "<is> False"));
        assert!(!matches(Some("False"), "<is> True"));
        assert!(!matches(None, "<is> False"));
        assert!(matches(Some("b"), "<or> a <or> b <or> c"));
        assert!(matches(Some("a"), "<or> a"));
        assert!(!matches(Some("<or>"), "<or> a <or> b"));
        assert!(!matches(Some("d"), "<or> a <or> b <or> c"));
    }

    #[test]
    fn capability_values_print_as_python_does() {
        assert_eq!(
            cap_string(&serde_json::json!(true)).as_deref(),
            Some("True")
        );
        assert_eq!(cap_string(&serde_json::json!(3)).as_deref(), Some("3"));
        assert_eq!(cap_string(&serde_json::json!("x")).as_deref(), Some("x"));
        assert_eq!(cap_string(&serde_json::Value::Null), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(value in proptest::option::of(".{0,12}"), req in ".{0,24}") {
            let _ = matches(value.as_deref(), &req);
        }
    }
}
