//! Arbitrary bytes as the content of a Flink log file, through the agent's pure read path as
//! `tail.rs` and `pipeline.rs` drive it: `lines::LineSplitter` (reads cut into bounded lines) →
//! `multiline::Grouper` (lines grouped into events) → `parse::parse_cached` (Flink's layout) →
//! `encode::Encoder::encode_within` (ECS JSON, cut to fit a Kafka message).
//!
//! Input layout: byte 0 picks the agent configuration (default bounds; default bounds with a
//! 1 KiB Kafka payload limit; small bounds; tiny bounds) and the pod's TZ (setup = bounds * 4 +
//! zone); byte 1 (mod 16) is how many read sizes follow; each of those bytes is a read size
//! (1..=256, cycled); the rest is the file. scripts/fuzz-seed.sh writes the log fixtures in
//! this layout.
//!
//! Properties: no panic, no hang, bounded memory; the events do not depend on how the file is
//! split into reads (same events as one read of the whole file); they cover every byte exactly
//! once, in order; each respects the configured line and byte bounds; the parse with the
//! timestamp cache equals the parse without it; every encoded event is valid JSON with the
//! message (or, when cut, a prefix of it and `log.flags: ["truncated"]`; cut to the bone, no
//! message, level, logger or error), the offset, the pod and an RFC 3339 `@timestamp`, and fits
//! the Kafka payload limit (`Config::max_payload_bytes`).
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use clap::Parser;
use flink_agent::config::{Cli, Config};
use flink_agent::encode::{Encoder, Origin};
use flink_agent::lines::LineSplitter;
use flink_agent::multiline::{GroupedEvent, Grouper, Line};
use flink_agent::parse::{self, TsCache};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use std::borrow::Cow;

/// The encoded event as a consumer reads it. Typed (not `serde_json::Value`) because this parse
/// is most of the target's time; unknown fields are ignored, duplicate ones are an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Event<'a> {
    #[serde(rename = "@timestamp", borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(borrow)]
    log: Log<'a>,
    #[serde(borrow)]
    event: Id<'a>,
    #[serde(borrow)]
    error: Option<Error<'a>>,
    #[serde(borrow)]
    kubernetes: Kubernetes<'a>,
    #[serde(borrow)]
    flink: Flink<'a>,
}

#[derive(Deserialize)]
struct Flink<'a> {
    #[serde(borrow)]
    cluster_id: Cow<'a, str>,
}

#[derive(Deserialize)]
struct File<'a> {
    #[serde(borrow)]
    path: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Log<'a> {
    #[serde(borrow)]
    level: Option<Cow<'a, str>>,
    #[serde(borrow)]
    logger: Option<Cow<'a, str>>,
    #[serde(borrow)]
    file: File<'a>,
    offset: u64,
    #[serde(borrow)]
    flags: Option<Vec<Cow<'a, str>>>,
}

#[derive(Deserialize)]
struct Id<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Error<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Kubernetes<'a> {
    #[serde(borrow)]
    pod: Pod<'a>,
}

#[derive(Deserialize)]
struct Pod<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

struct Setup {
    cfg: Config,
    encoder: Encoder,
    read_time: String,
    max_payload: usize,
}

const BOUNDS: [&[&str]; 4] = [
    &[],
    // Config::max_payload_bytes: message.max.bytes less 1 KiB of framing, at least 1 KiB.
    &["--kafka-property", "message.max.bytes=1"],
    &[
        "--multiline-max-lines",
        "5",
        "--multiline-max-bytes",
        "300",
        "--max-line-bytes",
        "64",
    ],
    &[
        "--multiline-max-lines",
        "2",
        "--multiline-max-bytes",
        "1",
        "--max-line-bytes",
        "16",
    ],
];
const ZONES: [Option<&str>; 4] = [
    None,
    Some("Asia/Shanghai"),
    Some("Europe/Berlin"),
    Some(":America/Santiago"),
];

fn setups() -> &'static [Setup] {
    static S: OnceLock<Vec<Setup>> = OnceLock::new();
    S.get_or_init(|| {
        let mut out = Vec::new();
        for bounds in BOUNDS {
            for tz in ZONES {
                let mut args = vec![
                    "flink-agent",
                    "--brokers",
                    "127.0.0.1:9092",
                    "--topic",
                    "flink-logs",
                    "--pod-name",
                    "wordcount-app-taskmanager-1-1",
                    "--namespace",
                    "flink-jobs",
                    "--pod-ip",
                    "10.1.2.3",
                    "--node-name",
                    "node \"1\" \u{2028}",
                    "--cluster-id",
                    "wordcount-app",
                    "--component",
                    "taskmanager",
                ];
                args.extend_from_slice(bounds);
                let cli = Cli::try_parse_from(args).expect("agent flags");
                let cfg = Config::from_cli(cli, tz.map(str::to_string)).expect("agent config");
                let encoder = Encoder::new(&cfg.pod);
                let fixed = chrono::NaiveDate::from_ymd_opt(2026, 11, 23)
                    .and_then(|d| d.and_hms_milli_opt(12, 0, 0, 0))
                    .expect("date");
                let read_time = parse::format_ts(fixed, &cfg.tz);
                let max_payload = cfg.max_payload_bytes();
                out.push(Setup {
                    cfg,
                    encoder,
                    read_time,
                    max_payload,
                });
            }
        }
        out
    })
}

/// Cuts `data` into reads of the given sizes (cycled), groups the lines, and flushes at the end
/// as the tailer does for a released file.
fn group(cfg: &Config, data: &[u8], reads: &[usize], now: Instant) -> Vec<GroupedEvent> {
    let mut sp = LineSplitter::new(cfg.max_line_bytes);
    let mut g = Grouper::new(cfg.multiline.clone());
    let mut out = Vec::new();
    let mut emit = |l: Line<'_>| out.extend(g.push(l, now));
    let mut pos = 0usize;
    let mut sizes = reads.iter().cycle();
    while pos < data.len() {
        let n = sizes.next().copied().unwrap_or(data.len()).max(1);
        let end = (pos + n).min(data.len());
        sp.push(&data[pos..end], pos as u64, &mut emit);
        pos = end;
    }
    sp.finish(data.len() as u64, &mut emit);
    out.extend(g.flush());
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let setups = setups();
    let setup = &setups[data[0] as usize % setups.len()];
    let cfg = &setup.cfg;
    let n = (data[1] % 16) as usize;
    if data.len() < 2 + n {
        return;
    }
    let reads: Vec<usize> = data[2..2 + n].iter().map(|&b| b as usize + 1).collect();
    let file = &data[2 + n..];
    let now = Instant::now();

    let events = group(cfg, file, &reads, now);
    let whole = group(cfg, file, &[file.len().max(1)], now);
    assert_eq!(
        events, whole,
        "grouping depends on the read sizes {reads:?}"
    );

    let mut at = 0u64;
    let max_text = cfg.multiline.max_bytes.max(3 * cfg.max_line_bytes.max(4));
    let mut cache = TsCache::default();
    for ev in &events {
        assert_eq!(ev.start, at, "gap or overlap before {ev:?}");
        assert!(ev.end > ev.start, "empty range {ev:?}");
        at = ev.end;
        assert!(
            ev.lines >= 1 && ev.lines <= cfg.multiline.max_lines,
            "{} lines",
            ev.lines
        );
        assert!(
            ev.text.len() <= max_text,
            "{} bytes > {max_text}",
            ev.text.len()
        );

        let parsed = parse::parse_cached(&ev.text, &cfg.tz, &mut cache);
        let fresh = parse::parse(&ev.text, &cfg.tz);
        assert_eq!(
            parsed, fresh,
            "the timestamp cache changed the parse of {:?}",
            ev.text
        );

        let origin = Origin {
            path: "/opt/flink/log/flink--kubernetes-taskmanager-0-pod.log",
            offset: ev.start,
            dev: 0x801,
            ino: 42,
            fingerprint: 0xdead_beef,
        };
        let (json, cut) =
            setup
                .encoder
                .encode_within(&parsed, &origin, &setup.read_time, setup.max_payload);
        let v: Event<'_> = serde_json::from_slice(&json).unwrap_or_else(|e| {
            panic!(
                "event is not the ECS JSON ({e}): {}",
                String::from_utf8_lossy(&json)
            )
        });
        if cut {
            assert!(
                parsed.message.starts_with(&*v.message) && v.message.len() < parsed.message.len(),
                "a cut message is not a shorter prefix"
            );
            assert_eq!(
                v.log.flags.as_deref(),
                Some(&[Cow::Borrowed("truncated")][..])
            );
        } else {
            assert_eq!(v.message, parsed.message);
            assert!(v.log.flags.is_none());
        }
        // `encode_within`'s contract: librdkafka refuses a bigger message for good, and the
        // read loop would wait on it forever.
        assert!(
            json.len() <= setup.max_payload,
            "{} bytes > {}: {}",
            json.len(),
            setup.max_payload,
            String::from_utf8_lossy(&json)
        );
        assert_eq!(v.log.offset, ev.start);
        // Cut to the bone: no message, and the first line's fields dropped as well.
        let bare = cut
            && v.message.is_empty()
            && v.log.level.is_none()
            && v.log.logger.is_none()
            && v.error.is_none();
        if !bare {
            assert_eq!(v.log.level.as_deref(), parsed.level);
            assert_eq!(v.log.logger.as_deref(), parsed.logger);
        }
        assert_eq!(v.log.file.path, origin.path);
        assert_eq!(v.kubernetes.pod.name, "wordcount-app-taskmanager-1-1");
        assert_eq!(v.flink.cluster_id, "wordcount-app");
        assert!(
            v.event.id.ends_with(&format!("-{}", ev.start)),
            "event.id {}",
            v.event.id
        );
        if let Err(e) = chrono::DateTime::parse_from_rfc3339(&v.timestamp) {
            panic!(
                "@timestamp {:?} is not RFC 3339 ({e}); event {:?}",
                v.timestamp, ev.text
            );
        }
        match (&v.error, parsed.error_type) {
            _ if bare => {}
            (Some(e), Some(kind)) => {
                assert_eq!(e.kind, kind);
                if let (Some(m), Some(want)) = (&e.message, parsed.error_message) {
                    assert!(want.starts_with(&**m), "error.message is not a prefix");
                }
            }
            (None, None) => {}
            (got, want) => panic!(
                "error {:?} for exception {want:?}",
                got.as_ref().map(|e| &e.kind)
            ),
        }
    }
    assert_eq!(
        at,
        file.len() as u64,
        "the events do not reach the end of the file"
    );
});
