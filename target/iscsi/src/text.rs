//! `key=value` text (RFC 7143 §6): the data segment of Login and Text PDUs.
//!
//! A logical text data segment (the data of one PDU, or of a run of PDUs joined by the C bit) is
//! a sequence of UTF-8 `key=value` pairs, each followed by one NUL. [`parse`] splits it (pure and
//! total: the fuzzing entry point for text); the value helpers decode RFC 7143's value types
//! (boolean, numerical and range values in decimal, hex `0x` or base64 `0b`, lists, binary
//! values for CHAP), and [`push`] encodes a pair.
//!
//! Limits: a key is at most [`MAX_KEY_LEN`] bytes; a simple value at most [`MAX_VALUE_LEN`] bytes
//! (RFC 7143 §6.1), except values in binary encoding (CHAP challenges and responses), which may
//! be up to [`MAX_BINARY_VALUE_LEN`] encoded bytes. A whole negotiation's text is bounded by
//! [`MAX_TEXT_LEN`] (RFC 7143 §6.1 asks for at least 8192 bytes).

/// Longest key name (a standard-label is at most 63 characters).
pub const MAX_KEY_LEN: usize = 63;
/// Longest simple value, not counting its delimiter.
pub const MAX_VALUE_LEN: usize = 255;
/// Longest value in binary (`0x`/`0b`) encoding.
pub const MAX_BINARY_VALUE_LEN: usize = 8192;
/// Longest logical text data segment accepted (and produced) in one negotiation step.
pub const MAX_TEXT_LEN: usize = 65536;

/// The value answered for a key the responder does not know (RFC 7143 §6.2).
pub const NOT_UNDERSTOOD: &str = "NotUnderstood";
/// The value answered for a key that does not apply in this context.
pub const IRRELEVANT: &str = "Irrelevant";
/// The value answered for an unacceptable offer.
pub const REJECT: &str = "Reject";

/// Malformed text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum TextError {
    /// text of {0} bytes exceeds the limit
    TooLong(usize),
    /// the last key=value pair is not terminated by a NUL
    Unterminated,
    /// text is not UTF-8
    NotUtf8,
    /// a pair has no '='
    MissingEquals,
    /// malformed key name
    BadKey,
    /// value of key {0} is too long
    ValueTooLong(String),
}

/// One `key=value` pair, borrowed from the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyValue<'a> {
    /// Key name.
    pub key: &'a str,
    /// Value (may be empty).
    pub value: &'a str,
}

/// True for a key name RFC 7143 allows: a standard-label (a letter, then letters, digits, `.`,
/// `-`, `+`, `@`, `_`), or a vendor key `X-...` / `X#...`, at most [`MAX_KEY_LEN`] bytes. (RFC
/// 7143 asks for a capital first letter, but RFC 7144's `iSCSIProtocolLevel` starts with a
/// small one, so any letter is accepted.)
pub fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    if b.is_empty() || b.len() > MAX_KEY_LEN || !b[0].is_ascii_alphabetic() {
        return false;
    }
    b.iter().enumerate().skip(1).all(|(i, &c)| {
        c.is_ascii_alphanumeric()
            || matches!(c, b'.' | b'-' | b'+' | b'@' | b'_')
            || (i == 1 && c == b'#' && b[0] == b'X')
    })
}

/// True when `value` is written in binary encoding (`0x`, `0X`, `0b`, `0B`).
pub fn is_binary(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() >= 2 && b[0] == b'0' && matches!(b[1], b'x' | b'X' | b'b' | b'B')
}

/// Splits a logical text data segment into its pairs. Empty entries (a NUL right after a NUL,
/// e.g. trailing padding) are skipped. Duplicate keys are kept; see [`first_duplicate`].
///
/// # Errors
///
/// A [`TextError`] for text over [`MAX_TEXT_LEN`], a pair without its NUL, non-UTF-8 text, a
/// pair without `=`, a bad key name, or an over-long value.
pub fn parse(data: &[u8]) -> Result<Vec<KeyValue<'_>>, TextError> {
    if data.len() > MAX_TEXT_LEN {
        return Err(TextError::TooLong(data.len()));
    }
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let nul = rest
            .iter()
            .position(|&c| c == 0)
            .ok_or(TextError::Unterminated)?;
        let (item, tail) = rest.split_at(nul);
        rest = tail.get(1..).unwrap_or_default();
        if item.is_empty() {
            continue;
        }
        let s = std::str::from_utf8(item).map_err(|_| TextError::NotUtf8)?;
        let (key, value) = s.split_once('=').ok_or(TextError::MissingEquals)?;
        if !valid_key(key) {
            return Err(TextError::BadKey);
        }
        let too_long = if is_binary(value) {
            value.len() > MAX_BINARY_VALUE_LEN
        } else {
            value.split(',').any(|v| v.len() > MAX_VALUE_LEN)
        };
        if too_long {
            return Err(TextError::ValueTooLong(key.to_string()));
        }
        out.push(KeyValue { key, value });
    }
    Ok(out)
}

/// The first key that appears more than once, if any.
pub fn first_duplicate<'a>(pairs: &[KeyValue<'a>]) -> Option<&'a str> {
    pairs.iter().enumerate().find_map(|(i, kv)| {
        pairs[..i]
            .iter()
            .any(|earlier| earlier.key == kv.key)
            .then_some(kv.key)
    })
}

/// Appends `key=value` and its NUL.
pub fn push(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value.as_bytes());
    out.push(0);
}

/// A boolean value: `Yes` or `No` (case-sensitive).
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

/// The text of a boolean value.
pub fn bool_str(v: bool) -> &'static str {
    if v { "Yes" } else { "No" }
}

/// A numerical value below 2^64: decimal, hex (`0x`) or base64 (`0b`).
pub fn parse_number(value: &str) -> Option<u64> {
    if is_binary(value) {
        let bytes = decode_binary(value)?;
        let significant: &[u8] = match bytes.iter().position(|&b| b != 0) {
            Some(i) => &bytes[i..],
            None => &[],
        };
        if significant.len() > 8 {
            return None;
        }
        Some(
            significant
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
        )
    } else {
        if value.is_empty() || !value.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        value.parse().ok()
    }
}

/// A numeric range `a~b` with `a <= b`.
pub fn parse_range(value: &str) -> Option<(u64, u64)> {
    let (a, b) = value.split_once('~')?;
    let (a, b) = (parse_number(a)?, parse_number(b)?);
    (a <= b).then_some((a, b))
}

/// The items of a list-of-values (comma separated).
pub fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',')
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn b64_digit(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes a binary value: `0x` followed by hex digits (an odd count gets a leading zero
/// nibble) or `0b` followed by base64 (RFC 4648, with `=` padding). Empty encodings are invalid.
pub fn decode_binary(value: &str) -> Option<Vec<u8>> {
    if !is_binary(value) || value.len() > MAX_BINARY_VALUE_LEN {
        return None;
    }
    let body = value.as_bytes().get(2..)?;
    if body.is_empty() {
        return None;
    }
    match value.as_bytes()[1] {
        b'x' | b'X' => {
            let mut out = Vec::with_capacity(body.len() / 2 + 1);
            let mut digits = body.iter().copied();
            if body.len() % 2 == 1 {
                out.push(hex_digit(digits.next()?)?);
            }
            while let Some(hi) = digits.next() {
                let lo = digits.next()?;
                out.push((hex_digit(hi)? << 4) | hex_digit(lo)?);
            }
            Some(out)
        }
        _ => {
            if body.len() % 4 != 0 {
                return None;
            }
            let pad = body.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 || body.iter().filter(|&&c| c == b'=').count() != pad {
                return None;
            }
            let mut out = Vec::with_capacity(body.len() / 4 * 3);
            let last_chunk = body.len() / 4 - 1;
            for (i, chunk) in body.chunks_exact(4).enumerate() {
                let mut v = 0u32;
                for &c in chunk {
                    let d = if c == b'=' { 0 } else { b64_digit(c)? };
                    v = (v << 6) | u32::from(d);
                }
                let bytes = v.to_be_bytes();
                let keep = if i == last_chunk { 3 - pad } else { 3 };
                out.extend_from_slice(&bytes[1..1 + keep]);
            }
            Some(out)
        }
    }
}

/// Encodes bytes as a hex binary value (`0x` and lowercase digits).
pub fn encode_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_skips_empty_entries() {
        let t = b"InitiatorName=iqn.a\0HeaderDigest=None,CRC32C\0Empty=\0\0\0";
        let kv = parse(t).expect("valid");
        assert_eq!(
            kv,
            vec![
                KeyValue {
                    key: "InitiatorName",
                    value: "iqn.a"
                },
                KeyValue {
                    key: "HeaderDigest",
                    value: "None,CRC32C"
                },
                KeyValue {
                    key: "Empty",
                    value: ""
                },
            ]
        );
        assert_eq!(parse(b"").expect("empty"), vec![]);
    }

    #[test]
    fn value_may_contain_equals() {
        let kv = parse(b"X-a=b=c\0").expect("valid");
        assert_eq!(kv[0].key, "X-a");
        assert_eq!(kv[0].value, "b=c");
    }

    #[test]
    fn rejects_malformed_text() {
        assert_eq!(parse(b"A=b"), Err(TextError::Unterminated));
        assert_eq!(parse(b"Ab\0"), Err(TextError::MissingEquals));
        assert_eq!(parse(b"1=b\0"), Err(TextError::BadKey));
        assert!(parse(b"iSCSIProtocolLevel=1\0").is_ok());
        assert_eq!(parse(b"=b\0"), Err(TextError::BadKey));
        assert_eq!(parse(b"A b=c\0"), Err(TextError::BadKey));
        assert_eq!(parse(b"A=\xff\0"), Err(TextError::NotUtf8));
        let long_key = format!("K{}=1\0", "a".repeat(63));
        assert_eq!(parse(long_key.as_bytes()), Err(TextError::BadKey));
        let ok_key = format!("K{}=1\0", "a".repeat(62));
        assert!(parse(ok_key.as_bytes()).is_ok());
        let long_val = format!("A={}\0", "v".repeat(256));
        assert_eq!(
            parse(long_val.as_bytes()),
            Err(TextError::ValueTooLong("A".into()))
        );
        let ok_val = format!("A={}\0", "v".repeat(255));
        assert!(parse(ok_val.as_bytes()).is_ok());
        let bin = format!("CHAP_C=0x{}\0", "ab".repeat(1024));
        assert!(parse(bin.as_bytes()).is_ok());
        let bin = format!("CHAP_C=0x{}\0", "ab".repeat(4096));
        assert!(parse(bin.as_bytes()).is_err());
        let huge = vec![b'A'; MAX_TEXT_LEN + 1];
        assert_eq!(parse(&huge), Err(TextError::TooLong(MAX_TEXT_LEN + 1)));
    }

    #[test]
    fn vendor_keys() {
        assert!(valid_key("X-com.example.foo"));
        assert!(valid_key("X#Foo"));
        assert!(!valid_key("Y#Foo"));
        assert!(!valid_key("XX#Foo"));
    }

    #[test]
    fn duplicates() {
        let kv = parse(b"A=1\0B=2\0A=3\0").expect("valid");
        assert_eq!(first_duplicate(&kv), Some("A"));
        let kv = parse(b"A=1\0B=2\0").expect("valid");
        assert_eq!(first_duplicate(&kv), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("0"), Some(0));
        assert_eq!(parse_number("262144"), Some(262_144));
        assert_eq!(parse_number("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_number("18446744073709551616"), None);
        assert_eq!(parse_number("0x10"), Some(16));
        assert_eq!(parse_number("0X1"), Some(1));
        assert_eq!(parse_number("0x00000000000000000001"), Some(1));
        assert_eq!(parse_number("0x10000000000000000"), None);
        assert_eq!(parse_number("0bAQA="), Some(256));
        assert_eq!(parse_number("-1"), None);
        assert_eq!(parse_number("+1"), None);
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_number("1k"), None);
        assert_eq!(parse_range("1~5"), Some((1, 5)));
        assert_eq!(parse_range("5~1"), None);
        assert_eq!(parse_range("5"), None);
    }

    #[test]
    fn booleans_and_lists() {
        assert_eq!(parse_bool("Yes"), Some(true));
        assert_eq!(parse_bool("No"), Some(false));
        assert_eq!(parse_bool("yes"), None);
        assert_eq!(list("CRC32C,None").collect::<Vec<_>>(), ["CRC32C", "None"]);
        assert_eq!(bool_str(true), "Yes");
    }

    #[test]
    fn binary_values() {
        assert_eq!(decode_binary("0x0a0B"), Some(vec![0x0a, 0x0b]));
        assert_eq!(decode_binary("0xabc"), Some(vec![0x0a, 0xbc]));
        assert_eq!(decode_binary("0x"), None);
        assert_eq!(decode_binary("0xzz"), None);
        assert_eq!(decode_binary("0bTWFu"), Some(b"Man".to_vec()));
        assert_eq!(decode_binary("0bTWE="), Some(b"Ma".to_vec()));
        assert_eq!(decode_binary("0bTQ=="), Some(b"M".to_vec()));
        assert_eq!(decode_binary("0bTQ="), None);
        assert_eq!(decode_binary("0bT=Q="), None);
        assert_eq!(decode_binary("0b===="), None);
        assert_eq!(decode_binary("0bTQ==TWFu"), None);
        assert_eq!(decode_binary("12"), None);
        assert_eq!(encode_hex(&[0x00, 0xab, 0x10]), "0x00ab10");
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_binary(&encode_hex(&bytes)), Some(bytes));
    }

    #[test]
    fn push_encodes_with_nul() {
        let mut v = Vec::new();
        push(&mut v, "TargetName", "iqn.x");
        push(&mut v, "A", "");
        assert_eq!(v, b"TargetName=iqn.x\0A=\0");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse(&data);
        }

        #[test]
        fn binary_never_panics(s in "0[xXbB][ -~]{0,64}") {
            let _ = decode_binary(&s);
            let _ = parse_number(&s);
        }

        #[test]
        fn push_parse_round_trip(key in "[A-Z][A-Za-z0-9._@+-]{0,62}", value in "[ -~&&[^=]]{0,200}") {
            let mut v = Vec::new();
            push(&mut v, &key, &value);
            let kv = parse(&v).expect("valid");
            proptest::prop_assert_eq!(kv, vec![KeyValue { key: &key, value: &value }]);
        }
    }
}
