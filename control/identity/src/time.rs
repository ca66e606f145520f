//! Timestamps as microseconds since the Unix epoch, and Keystone's text form of them.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in microseconds since 1970-01-01T00:00:00Z.
pub(crate) fn now_micros() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// `secs` seconds as microseconds, saturating.
pub(crate) fn secs_to_micros(secs: u64) -> i64 {
    i64::try_from(secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000)
}

/// Keystone's format, `%Y-%m-%dT%H:%M:%S.%6fZ` (UTC).
pub(crate) fn format_micros(us: i64) -> String {
    let micros = us.rem_euclid(1_000_000);
    let secs = us.div_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    )
}

/// Parses an ISO 8601 date-time as Keystone writes them: `2030-01-01T00:00:00Z`, with an
/// optional fraction, and a zone of `Z`, `+HH:MM`/`-HH:MM`, or none (taken as UTC).
pub(crate) fn parse_iso8601(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, c) in frac.bytes().take(digits).enumerate() {
            if i < 6 {
                micros = micros * 10 + i64::from(c - b'0');
            }
        }
        for _ in digits..6 {
            micros *= 10;
        }
        rest = frac.get(digits..)?;
    }
    let offset_secs = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let z = rest.get(1..)?;
            let (zh, zm) = match z.len() {
                5 if z.as_bytes()[2] == b':' => (z.get(0..2)?, z.get(3..5)?),
                4 => (z.get(0..2)?, z.get(2..4)?),
                2 => (z, "00"),
                _ => return None,
            };
            let zh: i64 = zh.parse().ok()?;
            let zm: i64 = zm.parse().ok()?;
            sign * (zh * 3600 + zm * 60)
        }
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_secs;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse_round_trip() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        let t = 1_900_000_000_123_456;
        let s = format_micros(t);
        assert_eq!(s, "2030-03-17T17:46:40.123456Z");
        assert_eq!(parse_iso8601(&s), Some(t));
        assert_eq!(
            parse_iso8601("2030-03-17T17:46:40Z"),
            Some(1_900_000_000_000_000)
        );
        assert_eq!(
            parse_iso8601("2030-03-17T19:46:40.5+02:00"),
            Some(1_900_000_000_500_000)
        );
        assert_eq!(
            parse_iso8601("2030-03-17T17:46:40"),
            Some(1_900_000_000_000_000)
        );
        assert_eq!(parse_iso8601("2030-03-17"), None);
        assert_eq!(parse_iso8601("2030-13-17T17:46:40Z"), None);
        assert_eq!(parse_iso8601("2030-03-17T17:46:40Q"), None);
        for days in [-1000, 0, 59, 60, 365, 11_016, 20_000, 50_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
