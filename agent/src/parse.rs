//! Parsing of Flink's default log4j layout: pure, no I/O.
//!
//! `%d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n`: a zone-less timestamp (the pod's `TZ` is
//! attached), the level padded to 5, the logger padded to 60 (longer names are not cut), the NDC
//! (`[]` in Flink), ` - ` and the message. Continuation lines (stack traces) stay in the message.

use std::sync::LazyLock;

use chrono::format::{Item, StrftimeItems};
use chrono::NaiveDateTime;

use crate::zone::Zone;

// Format strings parsed once: re-parsing them for every event was the agent's biggest
// single user-space cost in the profile (BENCHMARKS.md). Constant strings, covered by tests.
static FLINK_TS: LazyLock<Vec<Item<'static>>> = LazyLock::new(|| {
    StrftimeItems::new("%Y-%m-%d %H:%M:%S,%3f")
        .parse_to_owned()
        .unwrap_or_default()
});
static RFC3339_MS: LazyLock<Vec<Item<'static>>> = LazyLock::new(|| {
    StrftimeItems::new("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .parse_to_owned()
        .unwrap_or_default()
});

/// The fields of one event. Borrowed from the event text to avoid copies on the hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// RFC 3339 with milliseconds and the offset of the pod's zone; None when the event does
    /// not start with a Flink timestamp (the encoder then uses the read time).
    pub timestamp: Option<String>,
    pub level: Option<&'a str>,
    pub logger: Option<&'a str>,
    /// The `%m` part and every continuation line; the whole text when the layout did not match.
    pub message: &'a str,
    pub error_type: Option<&'a str>,
    pub error_message: Option<&'a str>,
}

/// Remembers the last second it formatted: consecutive Flink records mostly share their
/// second, and one wall-clock second of a zone always gets the same offset (in a DST overlap
/// the earlier one), so for those only the milliseconds change and chrono is skipped.
#[derive(Debug, Default)]
pub struct TsCache {
    key: [u8; 19],
    /// `2026-11-22T11:55:26`
    prefix: String,
    /// `+08:00`
    offset: String,
}

impl TsCache {
    /// `ts` formatted, if it is a timestamp in Flink's layout.
    fn timestamp(&mut self, ts: &str, tz: &Zone) -> Option<String> {
        let b = ts.as_bytes();
        if !is_flink_timestamp(b) {
            return None;
        }
        if !self.prefix.is_empty() && b[..19] == self.key {
            let mut out = String::with_capacity(self.prefix.len() + 4 + self.offset.len());
            out.push_str(&self.prefix);
            out.push('.');
            out.push_str(&ts[20..]);
            out.push_str(&self.offset);
            return Some(out);
        }
        let mut fields = chrono::format::Parsed::new();
        chrono::format::parse(&mut fields, ts, FLINK_TS.iter()).ok()?;
        let naive = fields.to_naive_datetime_with_offset(0).ok()?;
        let formatted = format_ts(naive, tz);
        // `YYYY-MM-DDTHH:MM:SS.mmm+hh:mm`: the cache needs the fixed-width shape.
        if formatted.len() > 23 && formatted.as_bytes()[19] == b'.' {
            self.key.copy_from_slice(&b[..19]);
            self.prefix.clear();
            self.prefix.push_str(&formatted[..19]);
            self.offset.clear();
            self.offset.push_str(&formatted[23..]);
        }
        Some(formatted)
    }
}

/// Parses one grouped event.
pub fn parse<'a>(text: &'a str, tz: &Zone) -> Parsed<'a> {
    parse_cached(text, tz, &mut TsCache::default())
}

/// [`parse`], reusing the timestamp of the previous event's second.
pub fn parse_cached<'a>(text: &'a str, tz: &Zone, cache: &mut TsCache) -> Parsed<'a> {
    let (first, has_rest) = match memchr::memchr(b'\n', text.as_bytes()) {
        Some(i) => (&text[..i], true),
        None => (text, false),
    };
    let header = parse_header(first, tz, cache);
    let (timestamp, level, logger, message, skip_first) = match header {
        Some(h) => {
            // The message is the rest of the first line plus all continuation lines.
            let msg_start = first.len() - h.message.len();
            (
                Some(h.timestamp),
                Some(h.level),
                Some(h.logger),
                &text[msg_start..],
                true,
            )
        }
        None => (None, None, None, text, false),
    };
    let (error_type, error_message) = find_exception(text, skip_first && has_rest, skip_first)
        .map_or((None, None), |(t, m)| (Some(t), m));
    Parsed {
        timestamp,
        level,
        logger,
        message,
        error_type,
        error_message,
    }
}

struct Header<'a> {
    timestamp: String,
    level: &'a str,
    logger: &'a str,
    message: &'a str,
}

/// `yyyy-MM-dd HH:mm:ss,SSS` digit for digit. chrono's `%Y` also takes a sign and fewer digits
/// (`-026-11-22 ...` parsed as the year -26, giving an `@timestamp` that is not RFC 3339; found
/// by fuzz/fuzz_targets/agent_pipeline.rs), which Flink's layout never writes.
fn is_flink_timestamp(ts: &[u8]) -> bool {
    ts.len() == 23
        && ts.iter().enumerate().all(|(i, &b)| match i {
            4 | 7 => b == b'-',
            10 => b == b' ',
            13 | 16 => b == b':',
            19 => b == b',',
            _ => b.is_ascii_digit(),
        })
}

fn parse_header<'a>(line: &'a str, tz: &Zone, cache: &mut TsCache) -> Option<Header<'a>> {
    // "2026-11-22 11:55:26,584 " is 24 ASCII bytes.
    let ts = line.get(..23)?;
    if line.as_bytes().get(23) != Some(&b' ') {
        return None;
    }
    let timestamp = cache.timestamp(ts, tz)?;
    let rest = &line[24..];
    let (level, rest) = split_token(rest)?;
    let (logger, rest) = split_token(rest)?;
    // What remains is "%x - %m": the NDC ("[]") then " - ". The message may contain " - " too,
    // so take the first one.
    let message = if let Some(i) = memchr::memmem::find(rest.as_bytes(), b" - ") {
        &rest[i + 3..]
    } else if let Some(stripped) = rest.strip_suffix(" -") {
        // An empty message whose trailing space was trimmed.
        &stripped[stripped.len()..]
    } else {
        // No NDC at all (a layout without %x).
        rest.strip_prefix("- ")?
    };
    Some(Header {
        timestamp,
        level,
        logger,
        message,
    })
}

/// The next space-delimited token and the text after the spaces that follow it.
fn split_token(s: &str) -> Option<(&str, &str)> {
    let end = memchr::memchr(b' ', s.as_bytes())?;
    if end == 0 {
        return None;
    }
    Some((&s[..end], s[end..].trim_start_matches(' ')))
}

/// Formats a wall-clock time of the pod's zone as RFC 3339 with its offset.
pub fn format_ts(naive: NaiveDateTime, tz: &Zone) -> String {
    // In a DST overlap the earlier instant is as good a guess as the later; in a gap (a time
    // that never existed) log4j could not have written it, so fall back to UTC, not to nothing.
    match tz
        .offset_of_local(naive)
        .and_then(|offset| naive.and_local_timezone(offset).single())
    {
        Some(dt) => dt.format_with_items(RFC3339_MS.iter()).to_string(),
        None => naive
            .and_utc()
            .format_with_items(RFC3339_MS.iter())
            .to_string(),
    }
}

/// The current time in the pod's zone, for events without a timestamp of their own: the
/// offset in force now, also in the hour a DST overlap repeats.
pub fn format_now(tz: &Zone) -> String {
    tz.at(chrono::Utc::now())
        .format_with_items(RFC3339_MS.iter())
        .to_string()
}

/// The outermost Java exception of an event: the first line that looks like
/// `fully.qualified.SomethingException[: message]` (or `Error`/`Throwable`), not a `Caused by:`.
fn find_exception(text: &str, skip_first: bool, parsed: bool) -> Option<(&str, Option<&str>)> {
    let mut lines = text.split('\n');
    if skip_first {
        lines.next();
    } else if parsed {
        // A single parsed line: its message can still be "java.io.IOException: x"? Flink
        // writes exceptions on the lines after the message, so nothing to look at.
        return None;
    }
    for line in lines {
        let line = line.strip_suffix('\r').unwrap_or(line);
        // Uncaught exceptions on stderr (.out/.err files).
        let line = match line.strip_prefix("Exception in thread \"") {
            Some(rest) => match rest.find("\" ") {
                Some(i) => &rest[i + 2..],
                None => continue,
            },
            None => line,
        };
        if let Some(found) = exception_line(line) {
            return Some(found);
        }
    }
    None
}

fn exception_line(line: &str) -> Option<(&str, Option<&str>)> {
    let (name, msg) = match line.find(": ") {
        Some(i) => (&line[..i], Some(line[i + 2..].trim())),
        None => (line.strip_suffix(':').unwrap_or(line).trim_end(), None),
    };
    if name.is_empty() || !name.contains('.') {
        return None;
    }
    let valid = name.split('.').all(|seg| {
        let mut cs = seg.chars();
        matches!(cs.next(), Some(c) if c.is_alphabetic() || c == '_' || c == '$')
            && cs.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
    });
    let last = name.rsplit('.').next().unwrap_or(name);
    let last = last.rsplit('$').next().unwrap_or(last);
    let kind =
        last.ends_with("Exception") || last.ends_with("Error") || last.ends_with("Throwable");
    if valid && kind {
        Some((name, msg.filter(|m| !m.is_empty())))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multiline::Grouper;

    fn fixture_events(name: &str) -> Vec<String> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/flink-logs")
            .join(name);
        let data = std::fs::read(&p).unwrap();
        let skip = data.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut g = Grouper::new(crate::multiline::tests::cfg());
        crate::multiline::tests::group_all(&mut g, &data[skip..])
            .into_iter()
            .map(|e| e.text)
            .collect()
    }

    #[test]
    fn simple_line() {
        let l = "2026-11-22 11:57:31,108 INFO  org.apache.flink.client.cli.CliFrontend                      [] - --------";
        let p = parse(l, &Zone::named("Asia/Shanghai").unwrap());
        assert_eq!(
            p.timestamp.as_deref(),
            Some("2026-11-22T11:57:31.108+08:00")
        );
        assert_eq!(p.level, Some("INFO"));
        assert_eq!(p.logger, Some("org.apache.flink.client.cli.CliFrontend"));
        assert_eq!(p.message, "--------");
        assert_eq!(p.error_type, None);
        let p = parse(l, &Zone::UTC);
        assert_eq!(
            p.timestamp.as_deref(),
            Some("2026-11-22T11:57:31.108+00:00")
        );
    }

    /// Found by the agent_pipeline fuzz target: a first line starting `-026-11-22 ...` got the
    /// `@timestamp` "-0026-11-22T11:55:26.628+00:53" (year -26), which is not RFC 3339.
    #[test]
    fn only_flinks_exact_timestamp_layout_is_a_header() {
        for l in [
            "-026-11-22 11:55:26,628 INFO  a.B [] - x",
            "+026-11-22 11:55:26,628 INFO  a.B [] - x",
            "2026-11-22 11:55:26,6x8 INFO  a.B [] - x",
            "2026/11/22 11:55:26,628 INFO  a.B [] - x",
        ] {
            let p = parse(l, &Zone::named("Europe/Berlin").unwrap());
            assert_eq!(p.timestamp, None, "{l}");
            assert_eq!((p.level, p.logger, p.message), (None, None, l));
        }
        let p = parse("0026-11-22 11:55:26,628 INFO  a.B [] - x", &Zone::UTC);
        assert_eq!(
            p.timestamp.as_deref(),
            Some("0026-11-22T11:55:26.628+00:00")
        );
    }

    #[test]
    fn long_logger_and_empty_message() {
        let l = "2026-11-22 11:57:52,409 INFO  org.apache.flink.runtime.checkpoint.ExecutionTrackingCheckpointCoordinatorDeActivator [] - Stopping checkpoint scheduler, current job status: CANCELLING";
        let p = parse(l, &Zone::UTC);
        assert_eq!(
            p.logger,
            Some("org.apache.flink.runtime.checkpoint.ExecutionTrackingCheckpointCoordinatorDeActivator")
        );
        assert_eq!(
            p.message,
            "Stopping checkpoint scheduler, current job status: CANCELLING"
        );
        let l = "2026-11-22 11:54:01,144 INFO  org.apache.flink.runtime.entrypoint.ClusterEntrypoint        [] - ";
        let p = parse(l, &Zone::UTC);
        assert_eq!(p.message, "");
        assert_eq!(p.level, Some("INFO"));
    }

    #[test]
    fn raw_text_when_layout_does_not_match() {
        let p = parse("demo-print> demo print record 0", &Zone::UTC);
        assert_eq!(p.timestamp, None);
        assert_eq!(p.message, "demo-print> demo print record 0");
        let p = parse("2026-13-45 99:99:99,000 INFO x [] - y", &Zone::UTC);
        assert_eq!(p.timestamp, None);
    }

    #[test]
    fn stack_trace_event_from_fixture() {
        let evs = fixture_events("taskexecutor.log.stacktrace30.txt");
        let p = parse(&evs[1], &Zone::named("Europe/Berlin").unwrap());
        assert_eq!(p.level, Some("WARN"));
        assert_eq!(p.logger, Some("org.apache.flink.runtime.taskmanager.Task"));
        assert_eq!(
            p.timestamp.as_deref(),
            Some("2026-11-22T11:55:26.584+01:00")
        );
        assert!(p
            .message
            .starts_with("Source: demo-datagen -> instrumented-map"));
        assert!(p.message.contains("\nCaused by: java.io.IOException"));
        assert_eq!(p.error_type, Some("java.lang.IllegalStateException"));
        assert_eq!(
            p.error_message,
            Some("demo: deliberate failure at record 100")
        );
    }

    #[test]
    fn job_failed_and_sql_client_fixtures() {
        let evs = fixture_events("jobmanager-standalonesession.log.jobfailed30.txt");
        let p = parse(&evs[0], &Zone::UTC);
        assert_eq!(p.error_type, Some("org.apache.flink.runtime.JobException"));
        assert_eq!(
            p.error_message,
            Some("Recovery is suppressed by FixedDelayRestartBackoffTimeStrategy(maxNumberRestartAttempts=3, backoffTimeMS=10000)")
        );
        let evs = fixture_events("sql-client.log.txt");
        assert_eq!(evs.len(), 1);
        let p = parse(&evs[0], &Zone::UTC);
        assert_eq!(p.level, Some("ERROR"));
        assert_eq!(p.error_type, Some("java.lang.NoClassDefFoundError"));
        assert_eq!(
            p.error_message,
            Some("org/apache/flink/table/gateway/service/context/DefaultContext")
        );
    }

    #[test]
    fn preconfiguration_is_not_an_exception() {
        let evs = fixture_events("jobmanager-standalonesession.log.head30.txt");
        for e in &evs {
            assert_eq!(parse(e, &Zone::UTC).error_type, None, "{e}");
        }
    }

    #[test]
    fn stderr_uncaught_exception() {
        let t = "Exception in thread \"main\" java.lang.RuntimeException: boom\n\tat a.b.C.main(C.java:1)";
        let p = parse(t, &Zone::UTC);
        assert_eq!(p.error_type, Some("java.lang.RuntimeException"));
        assert_eq!(p.error_message, Some("boom"));
    }

    #[test]
    fn events_without_a_timestamp_get_the_current_time_in_the_pods_zone() {
        let before = chrono::Utc::now();
        let now = format_now(&Zone::named("Asia/Shanghai").unwrap());
        let after = chrono::Utc::now();
        assert!(now.ends_with("+08:00"), "{now}");
        let parsed = chrono::DateTime::parse_from_rfc3339(&now).unwrap();
        // Milliseconds are cut, not rounded.
        assert!(
            parsed >= before - chrono::Duration::milliseconds(1) && parsed <= after,
            "{now}"
        );
    }

    #[test]
    fn cached_timestamps_equal_uncached_across_seconds_and_dst() {
        // Europe/Berlin leaves summer time on 2026-10-25 at 03:00 (back to 02:00): the hour
        // 02:xx exists twice; walk through it in steps that often stay in the same second.
        let tz = Zone::named("Europe/Berlin").unwrap();
        let mut cache = TsCache::default();
        let start = chrono::NaiveDate::from_ymd_opt(2026, 10, 25)
            .and_then(|d| d.and_hms_milli_opt(1, 59, 58, 0))
            .unwrap();
        let mut hits = 0;
        for step in 0..20_000i64 {
            let t = start + chrono::Duration::milliseconds(step * 389 % 7_300_000);
            let line = format!(
                "{} INFO  org.apache.flink.Foo [] - m",
                t.format("%Y-%m-%d %H:%M:%S,%3f")
            );
            hits += usize::from(!cache.prefix.is_empty() && line.as_bytes()[..19] == cache.key);
            let fresh = parse(&line, &tz);
            let cached = parse_cached(&line, &tz, &mut cache);
            assert_eq!(fresh, cached, "{line}");
            assert!(fresh.timestamp.is_some());
        }
        // The cache was really exercised, on both sides of the transition.
        assert!(hits > 1000, "{hits} hits");
    }

    #[test]
    fn cache_does_not_accept_bad_milliseconds() {
        let mut cache = TsCache::default();
        let tz = Zone::UTC;
        let good = "2026-11-22 11:55:26,584 INFO  a.B [] - m";
        assert!(parse_cached(good, &tz, &mut cache).timestamp.is_some());
        for bad in [
            "2026-11-22 11:55:26,5x4 INFO  a.B [] - m",
            "2026-11-22 11:55:26.584 INFO  a.B [] - m",
        ] {
            let p = parse_cached(bad, &tz, &mut cache);
            assert_eq!(p.timestamp, None, "{bad}");
            assert_eq!(p.message, bad);
        }
    }
}
