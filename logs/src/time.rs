//! Times: `--since` durations, `--from`/`--to` instants, and the events' `@timestamp`, which
//! the agent writes as RFC 3339 with milliseconds and the pod's offset
//! (`2026-11-22T19:03:04.123+08:00`). Pure, no I/O.

use chrono::DateTime;

/// A `--since` value: a duration back from now, or the whole topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    All,
    Millis(i64),
}

/// Parses `2h`, `90m`, `1h30m`, `45s`, `2d`, `500ms`, or `all`.
pub fn parse_since(s: &str) -> Result<Since, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("all") {
        return Ok(Since::All);
    }
    let bad = || format!("{s:?} is not a duration like 2h, 90m, 1h30m, 45s or 2d (or all)");
    let mut total: i64 = 0;
    let mut rest = t;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: i64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit_ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(Since::Millis(total))
}

/// Parses an RFC 3339 instant (`2026-11-22T19:03:04+08:00`, `2026-11-22T11:03:04.5Z`) into
/// milliseconds since the epoch.
pub fn parse_instant(s: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time like 2026-11-22T19:03:04+08:00: {e}"))
}

/// Milliseconds since the epoch of an `@timestamp`. The agent's fixed shape is read digit by
/// digit (chrono's general parser was a tenth of a read's CPU); anything else goes to chrono.
pub fn timestamp_millis(s: &str) -> Option<i64> {
    fast_millis(s.as_bytes()).or_else(|| {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis())
    })
}

/// `YYYY-MM-DDTHH:MM:SS.mmm` followed by `Z` or `±hh:mm`, exactly.
fn fast_millis(b: &[u8]) -> Option<i64> {
    if b.len() < 24 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' || b[19] != b'.' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let millis = num(20..23)?;
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let offset_s = match &b[23..] {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let d = |c: &u8| c.is_ascii_digit().then(|| i64::from(c - b'0'));
            let (oh, om) = (d(h1)? * 10 + d(h2)?, d(m1)? * 10 + d(m2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let s = oh * 3600 + om * 60;
            if *sign == b'-' {
                -s
            } else {
                s
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(secs * 1000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The `@timestamp` as log4j wrote it in the pod (`%d{yyyy-MM-dd HH:mm:ss,SSS}`): the wall
/// clock of the pod's zone is the part before the offset, so nothing is converted.
pub fn push_flink_local(out: &mut Vec<u8>, ts: &str) {
    let b = ts.as_bytes();
    if fast_millis(b).is_some() {
        out.extend_from_slice(&b[..10]);
        out.push(b' ');
        out.extend_from_slice(&b[11..19]);
        out.push(b',');
        out.extend_from_slice(&b[20..23]);
        return;
    }
    match DateTime::parse_from_rfc3339(ts) {
        Ok(t) => out.extend_from_slice(t.format("%Y-%m-%d %H:%M:%S,%3f").to_string().as_bytes()),
        // Not a time at all (not the agent's shape): shown as it is rather than dropped.
        Err(_) => out.extend_from_slice(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations() {
        assert_eq!(parse_since("2h"), Ok(Since::Millis(7_200_000)));
        assert_eq!(parse_since("1h30m"), Ok(Since::Millis(5_400_000)));
        assert_eq!(parse_since("45s"), Ok(Since::Millis(45_000)));
        assert_eq!(parse_since("2d"), Ok(Since::Millis(172_800_000)));
        assert_eq!(parse_since("500ms"), Ok(Since::Millis(500)));
        assert_eq!(parse_since("ALL"), Ok(Since::All));
        for bad in [
            "",
            "h",
            "2",
            "2x",
            "-1h",
            "1.5h",
            "2h-",
            "99999999999999999999d",
        ] {
            let e = parse_since(bad).unwrap_err();
            assert!(e.contains("not a duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn instants() {
        assert_eq!(
            parse_instant("2026-11-22T19:03:04.123+08:00"),
            Ok(1_795_345_384_123)
        );
        assert_eq!(
            parse_instant("2026-11-22T11:03:04.123Z"),
            Ok(1_795_345_384_123)
        );
        assert!(parse_instant("2026-11-22 19:03:04")
            .unwrap_err()
            .contains("RFC 3339"));
    }

    #[test]
    fn flink_local_time_is_the_wall_clock_part() {
        let mut out = Vec::new();
        push_flink_local(&mut out, "2026-11-22T19:03:04.123+08:00");
        assert_eq!(out, b"2026-11-22 19:03:04,123");
        out.clear();
        // Another shape (not the agent's): still the wall clock of its own offset.
        push_flink_local(&mut out, "2026-11-22T19:03:04.5-03:00");
        assert_eq!(out, b"2026-11-22 19:03:04,500");
        out.clear();
        push_flink_local(&mut out, "yesterday");
        assert_eq!(out, b"yesterday");
    }

    proptest! {
        /// The digit-by-digit reader agrees with chrono on every instant it accepts, in every
        /// offset, and accepts every instant in the agent's shape.
        #[test]
        fn fast_parse_agrees_with_chrono(
            secs in -2_000_000_000i64..6_000_000_000i64,
            millis in 0i64..1000,
            offset_min in -840i32..=840,
        ) {
            let offset = chrono::FixedOffset::east_opt(offset_min * 60).unwrap();
            let t = DateTime::from_timestamp(secs, (millis * 1_000_000) as u32)
                .unwrap()
                .with_timezone(&offset);
            let s = t.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string();
            prop_assume!(s.len() == 29);
            prop_assert_eq!(fast_millis(s.as_bytes()), Some(secs * 1000 + millis));
            prop_assert_eq!(timestamp_millis(&s), Some(secs * 1000 + millis));
        }

        #[test]
        fn fast_parse_never_disagrees_on_garbage(s in "[0-9T:.+Z-]{20,30}") {
            if let Some(ms) = fast_millis(s.as_bytes()) {
                let chrono = DateTime::parse_from_rfc3339(&s).map(|t| t.timestamp_millis());
                prop_assert_eq!(Ok(ms), chrono);
            }
        }
    }
}
