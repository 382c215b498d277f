//! ECS JSON encoding of one event: pure, no I/O.
//!
//! Field names as Filebeat writes them, so existing Elasticsearch/OpenSearch/Kibana/Vector
//! pipelines read the events unchanged (see DESIGN.md for the exact shape).

use serde::Serialize;

use crate::config::PodMeta;
use crate::parse::Parsed;

/// Where an event came from: the file's identity and path, and the event's byte offset.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub path: &'a str,
    pub offset: u64,
    pub dev: u64,
    pub ino: u64,
    pub fingerprint: u64,
}

/// A stable id of the event: the same file and offset always give the same id, so a consumer
/// can drop the duplicates that at-least-once delivery allows after a crash.
/// `{dev:x}-{ino:x}-{fingerprint:016x}-{offset}`.
struct EventId<'a>(&'a Origin<'a>);

/// Longest id: three 16-digit hex numbers, a 20-digit offset and three dashes.
const EVENT_ID_MAX: usize = 16 * 3 + 20 + 3;

impl EventId<'_> {
    /// Formatted by hand into a stack buffer: through `core::fmt` and serde's `collect_str`
    /// it took ~3% of the agent's CPU (BENCHMARKS.md).
    fn write<'b>(&self, buf: &'b mut [u8; EVENT_ID_MAX]) -> &'b str {
        let o = self.0;
        let mut n = put_hex(buf, 0, o.dev, 1);
        buf[n] = b'-';
        n = put_hex(buf, n + 1, o.ino, 1);
        buf[n] = b'-';
        n = put_hex(buf, n + 1, o.fingerprint, 16);
        buf[n] = b'-';
        n += 1;
        let mut digits = itoa::Buffer::new();
        let offset = digits.format(o.offset).as_bytes();
        buf[n..n + offset.len()].copy_from_slice(offset);
        n += offset.len();
        // ASCII by construction.
        std::str::from_utf8(&buf[..n]).unwrap_or_default()
    }
}

/// Writes `v` in lower-case hex, at least `min_digits` digits, at `buf[at..]`; returns the end.
fn put_hex(buf: &mut [u8], at: usize, v: u64, min_digits: usize) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (64 - v.leading_zeros() as usize)
        .div_ceil(4)
        .max(min_digits);
    for (i, slot) in buf[at..at + digits].iter_mut().enumerate() {
        *slot = HEX[((v >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
    at + digits
}

/// The part that is the same for every event of the pod.
#[derive(Serialize)]
struct Tail<'a> {
    kubernetes: Kubernetes<'a>,
    flink: Flink<'a>,
}

#[derive(Serialize)]
struct Kubernetes<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    namespace: &'a str,
    pod: Pod<'a>,
    node: Name<'a>,
    container: Name<'a>,
}

#[derive(Serialize)]
struct Pod<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    ip: &'a str,
}

#[derive(Serialize)]
struct Name<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
}

#[derive(Serialize)]
struct Flink<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    cluster_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    component: &'a str,
}

/// Encodes events of one pod. The pod's part of every event is serialized once, here:
/// escaping the same seven strings for every event was a tenth of the agent's CPU.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// `,"kubernetes":{...},"flink":{...}}`
    tail: Vec<u8>,
}

impl Encoder {
    pub fn new(pod: &PodMeta) -> Self {
        let tail = Tail {
            kubernetes: Kubernetes {
                namespace: &pod.namespace,
                pod: Pod {
                    name: &pod.pod_name,
                    ip: &pod.pod_ip,
                },
                node: Name {
                    name: &pod.node_name,
                },
                container: Name {
                    name: &pod.container,
                },
            },
            flink: Flink {
                cluster_id: &pod.cluster_id,
                component: &pod.component,
            },
        };
        // Plain structs of strings cannot fail to serialize; `{` becomes the `,` that joins
        // it to the event's own fields.
        let mut tail = serde_json::to_vec(&tail).unwrap_or_else(|_| b"{}".to_vec());
        tail[0] = b',';
        Self { tail }
    }

    /// Encodes an event; `read_time` (RFC 3339) stands in for `@timestamp` when the event has
    /// none.
    pub fn encode(&self, p: &Parsed<'_>, origin: &Origin<'_>, read_time: &str) -> Vec<u8> {
        self.encode_flagged(p, origin, read_time, None)
    }

    /// Encodes an event into at most `max` bytes: a bigger one (JSON escaping can make the
    /// text up to six times longer) gets its message cut, at a character boundary, and
    /// `log.flags: ["truncated"]`; if even an empty message is too big, it also loses its
    /// level, logger and error. librdkafka refuses a message over `message.max.bytes`
    /// for good, so without this one event would stop its file. Returns whether it cut.
    pub fn encode_within(
        &self,
        p: &Parsed<'_>,
        origin: &Origin<'_>,
        read_time: &str,
        max: usize,
    ) -> (Vec<u8>, bool) {
        let out = self.encode(p, origin, read_time);
        if out.len() <= max {
            return (out, false);
        }
        let mut size = out.len();
        let mut keep = p.message.len();
        loop {
            // Shrink in proportion to the overshoot, with a margin so it ends in a step or two.
            let target = (keep as u128 * max as u128 / size as u128) as usize;
            keep = floor_char_boundary(p.message, target.saturating_sub(target / 16 + 64));
            let cut = Parsed {
                message: &p.message[..keep],
                // Part of the first line, which is bounded, but it can be escaped big too.
                error_message: p
                    .error_message
                    .map(|m| &m[..floor_char_boundary(m, keep.min(MAX_CUT_ERROR_MESSAGE))]),
                ..p.clone()
            };
            let out = self.encode_flagged(&cut, origin, read_time, Some(&["truncated"]));
            if out.len() <= max {
                return (out, true);
            }
            if keep == 0 {
                // Too big without any message: the first line's other fields are (a garbage
                // line whose logger or level token is huge, or escapes to six times its size;
                // found by fuzz/fuzz_targets/agent_pipeline.rs). Drop them: what is left is
                // the pod's and the file's identity, which fits.
                let bare = Parsed {
                    level: None,
                    logger: None,
                    error_type: None,
                    error_message: None,
                    ..cut
                };
                let out = self.encode_flagged(&bare, origin, read_time, Some(&["truncated"]));
                return (out, true);
            }
            size = out.len();
        }
    }

    fn encode_flagged(
        &self,
        p: &Parsed<'_>,
        origin: &Origin<'_>,
        read_time: &str,
        flags: Option<&'static [&'static str]>,
    ) -> Vec<u8> {
        let guess = 200
            + p.message.len()
            + p.logger.map_or(0, str::len)
            + origin.path.len()
            + self.tail.len();
        // By hand rather than through serde: its string escaping, for these few fields and the
        // message, was the largest item in the agent's profile (BENCHMARKS.md). The shape is
        // DESIGN.md's; the tests compare it byte for byte.
        let mut out = Vec::with_capacity(guess);
        out.extend_from_slice(br#"{"@timestamp":"#);
        push_json_str(&mut out, p.timestamp.as_deref().unwrap_or(read_time));
        out.extend_from_slice(br#","message":"#);
        push_json_str(&mut out, p.message);
        out.extend_from_slice(br#","log":{"#);
        for (name, value) in [(&br#""level":"#[..], p.level), (br#""logger":"#, p.logger)] {
            if let Some(value) = value {
                out.extend_from_slice(name);
                push_json_str(&mut out, value);
                out.push(b',');
            }
        }
        out.extend_from_slice(br#""file":{"path":"#);
        push_json_str(&mut out, origin.path);
        out.extend_from_slice(br#"},"offset":"#);
        out.extend_from_slice(itoa::Buffer::new().format(origin.offset).as_bytes());
        if let Some(flags) = flags {
            out.extend_from_slice(br#","flags":["#);
            for (i, flag) in flags.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json_str(&mut out, flag);
            }
            out.push(b']');
        }
        out.extend_from_slice(br#"},"event":{"id":"#);
        push_json_str(&mut out, EventId(origin).write(&mut [0u8; EVENT_ID_MAX]));
        out.push(b'}');
        if let Some(kind) = p.error_type {
            out.extend_from_slice(br#","error":{"type":"#);
            push_json_str(&mut out, kind);
            if let Some(message) = p.error_message {
                out.extend_from_slice(br#","message":"#);
                push_json_str(&mut out, message);
            }
            out.push(b'}');
        }
        // The tail closes the object.
        out.extend_from_slice(&self.tail);
        out
    }
}

/// Appends `s` as a JSON string, escaped byte for byte as serde_json escapes it (`"` and `\`
/// with a backslash; backspace, form feed, newline, carriage return and tab short; other
/// control characters as `\u00xx`). serde_json looks every byte up in a table, which was a
/// tenth of the agent's CPU for the message alone (perf, BENCHMARKS.md); log text is mostly
/// long runs that need nothing, so this skips 16 bytes at a time while none of them does
/// (a fixed-size comparison that the compiler turns into vector instructions).
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    const CHUNK: usize = 16;
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut written = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes
            .get(i..i + CHUNK)
            .and_then(|c| <&[u8; CHUNK]>::try_from(c).ok())
        {
            if !chunk.iter().fold(false, |any, &b| any | needs_escape(b)) {
                i += CHUNK;
                continue;
            }
        }
        let b = bytes[i];
        if needs_escape(b) {
            out.extend_from_slice(&bytes[written..i]);
            push_escape(out, b);
            written = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[written..]);
    out.push(b'"');
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

fn push_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => {
            let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hex[0], hex[1]]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

/// What is kept of `error.message` in a truncated event.
const MAX_CUT_ERROR_MESSAGE: usize = 1024;

fn floor_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Encodes one event (tests and tools; the agent keeps an [`Encoder`]).
pub fn encode(p: &Parsed<'_>, origin: &Origin<'_>, pod: &PodMeta, read_time: &str) -> Vec<u8> {
    Encoder::new(pod).encode(p, origin, read_time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;
    use crate::zone::Zone;
    use proptest::prelude::*;

    fn fast(s: &str) -> String {
        let mut out = Vec::new();
        push_json_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    proptest! {
        /// Byte for byte what serde_json writes, for any text and for text dense with the
        /// bytes that need escaping, at every position relative to the 16-byte steps.
        #[test]
        fn json_strings_escape_as_serde_json_does(
            s in any::<String>(),
            dense in proptest::collection::vec(
                prop_oneof![
                    Just('"'), Just('\\'), Just('\n'), Just('\t'), Just('\u{1}'), Just('\u{1f}'),
                    Just('\u{7f}'), Just('é'), Just('\u{2028}'), Just('a'), Just(' '),
                ],
                0..80,
            ),
        ) {
            let dense: String = dense.into_iter().collect();
            for text in [s.as_str(), dense.as_str()] {
                prop_assert_eq!(fast(text), serde_json::to_string(text).unwrap());
            }
        }
    }

    #[test]
    fn every_byte_escapes_as_serde_json_does() {
        for c in (0u8..=0x7f)
            .map(char::from)
            .chain(['é', '\u{2028}', '\u{10ffff}'])
        {
            for len in [1, 15, 16, 17, 33] {
                let s: String = std::iter::repeat_n('x', len - 1).chain([c]).collect();
                assert_eq!(
                    fast(&s),
                    serde_json::to_string(&s).unwrap(),
                    "{c:?} at {len}"
                );
            }
        }
    }

    #[test]
    fn event_id_matches_the_documented_format() {
        for (dev, ino, fingerprint, offset) in [
            (0, 0, 0, 0),
            (64768, 42, 7, 1234),
            (u64::MAX, u64::MAX, u64::MAX, u64::MAX),
            (1 << 60, 0xabc, 1 << 63, 10_000_000_000),
        ] {
            let o = Origin {
                path: "/x",
                offset,
                dev,
                ino,
                fingerprint,
            };
            let mut buf = [0u8; EVENT_ID_MAX];
            assert_eq!(
                EventId(&o).write(&mut buf),
                format!("{dev:x}-{ino:x}-{fingerprint:016x}-{offset}")
            );
        }
    }

    fn pod() -> PodMeta {
        PodMeta {
            pod_name: "p".into(),
            namespace: "ns".into(),
            node_name: "n".into(),
            pod_ip: "10.1.2.3".into(),
            container: "flink-main-container".into(),
            cluster_id: "my-job".into(),
            component: "jobmanager".into(),
        }
    }

    #[test]
    fn exact_shape() {
        let text = "2026-11-22 19:03:04,123 ERROR org.apache.flink.Foo [] - failed\njava.lang.IllegalStateException: boom\n\tat x.Y.z(Y.java:1)";
        let p = parse(text, &Zone::named("Asia/Shanghai").unwrap());
        let o = Origin {
            path: "/opt/flink/log/x.log",
            offset: 1234,
            dev: 0x801,
            ino: 42,
            fingerprint: 7,
        };
        let got = String::from_utf8(encode(&p, &o, &pod(), "unused")).unwrap();
        let want = r#"{"@timestamp":"2026-11-22T19:03:04.123+08:00","message":"failed\njava.lang.IllegalStateException: boom\n\tat x.Y.z(Y.java:1)","log":{"level":"ERROR","logger":"org.apache.flink.Foo","file":{"path":"/opt/flink/log/x.log"},"offset":1234},"event":{"id":"801-2a-0000000000000007-1234"},"error":{"type":"java.lang.IllegalStateException","message":"boom"},"kubernetes":{"namespace":"ns","pod":{"name":"p","ip":"10.1.2.3"},"node":{"name":"n"},"container":{"name":"flink-main-container"}},"flink":{"cluster_id":"my-job","component":"jobmanager"}}"#;
        assert_eq!(got, want);
    }

    /// Every combination of the optional fields gives valid JSON with exactly the fields
    /// that are there (the exact-shape test pins the bytes of the full one).
    #[test]
    fn every_combination_of_optional_fields() {
        let o = Origin {
            path: "/l/\"x\".log",
            offset: 7,
            dev: 1,
            ino: 2,
            fingerprint: 3,
        };
        for bits in 0..32u8 {
            let has = |i: u8| bits & (1 << i) != 0;
            let p = Parsed {
                timestamp: has(0).then(|| "2026-11-22T19:03:04.123Z".to_string()),
                level: has(1).then_some("WARN"),
                logger: has(2).then_some("a.\"B\""),
                message: "m\n\tat x",
                error_type: has(3).then_some("java.io.IOException"),
                error_message: has(3).then_some("e\u{1}").filter(|_| has(4)),
            };
            let flags: Option<&'static [&'static str]> = has(4).then_some(&["truncated"]);
            let out = Encoder::new(&pod()).encode_flagged(&p, &o, "2026-01-01T00:00:00Z", flags);
            let got: serde_json::Value = serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("{bits}: {e}: {}", String::from_utf8_lossy(&out)));
            let mut log = serde_json::json!({"file": {"path": o.path}, "offset": 7});
            if let Some(l) = p.level {
                log["level"] = l.into();
            }
            if let Some(l) = p.logger {
                log["logger"] = l.into();
            }
            if let Some(f) = flags {
                log["flags"] = f.to_vec().into();
            }
            let mut want = serde_json::json!({
                "@timestamp": p.timestamp.as_deref().unwrap_or("2026-01-01T00:00:00Z"),
                "message": p.message,
                "log": log,
                "event": {"id": "1-2-0000000000000003-7"},
                "kubernetes": got["kubernetes"].clone(),
                "flink": got["flink"].clone(),
            });
            if let Some(t) = p.error_type {
                want["error"] = serde_json::json!({"type": t});
                if let Some(m) = p.error_message {
                    want["error"]["message"] = m.into();
                }
            }
            assert_eq!(got, want, "combination {bits}");
            assert_eq!(got["kubernetes"]["pod"]["name"], "p");
        }
    }

    #[test]
    fn oversized_event_is_cut_to_fit_and_flagged() {
        // Control characters escape to six bytes each: 200 KB of text becomes over 1 MB.
        let body: String = std::iter::repeat_n("\u{1}é", 100_000).collect();
        let text = format!(
            "2026-11-22 19:03:04,123 ERROR a.B [] - x\njava.lang.IllegalStateException: {body}\n\tat x.Y.z(Y.java:1)"
        );
        let p = parse(&text, &Zone::UTC);
        let o = Origin {
            path: "/l/a.log",
            offset: 7,
            dev: 1,
            ino: 2,
            fingerprint: 3,
        };
        let enc = Encoder::new(&pod());
        let whole = enc.encode(&p, &o, "unused");
        assert!(whole.len() > 1_000_000);
        for max in [999_000, 100_000, 5_000, 1_500] {
            let (out, cut) = enc.encode_within(&p, &o, "unused", max);
            assert!(cut);
            assert!(out.len() <= max, "{} > {max}", out.len());
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["log"]["flags"], serde_json::json!(["truncated"]));
            let m = v["message"].as_str().unwrap();
            assert!(p.message.starts_with(m));
            assert_eq!(v["event"]["id"], "1-2-0000000000000003-7");
            assert_eq!(v["error"]["type"], "java.lang.IllegalStateException");
        }
        let (out, cut) = enc.encode_within(&p, &o, "unused", whole.len());
        assert!(!cut);
        assert_eq!(out, whole);
    }

    /// Found by the agent_pipeline fuzz target: with a 1 KiB payload limit, a line whose
    /// logger token is 170 NULs (1 KiB once escaped) came out over the limit with an empty
    /// message, and librdkafka would refuse it forever.
    #[test]
    fn first_line_fields_too_big_for_the_limit_are_dropped() {
        let logger = format!("org.apache.{}", "\0".repeat(170));
        let text = format!(
            "2026-11-22 11:55:26,584 WARN  {logger} [] - x\njava.lang.IllegalStateException: boom"
        );
        let p = parse(&text, &Zone::named("Asia/Shanghai").unwrap());
        assert_eq!(p.logger, Some(logger.as_str()));
        let o = Origin {
            path: "/opt/flink/log/x.log",
            offset: 0,
            dev: 1,
            ino: 2,
            fingerprint: 3,
        };
        let enc = Encoder::new(&pod());
        let (out, cut) = enc.encode_within(&p, &o, "unused", 1024);
        assert!(cut);
        assert!(out.len() <= 1024, "{} > 1024", out.len());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["log"]["flags"], serde_json::json!(["truncated"]));
        assert_eq!(v["message"], "");
        assert!(v["log"].get("logger").is_none() && v.get("error").is_none());
        assert_eq!(v["@timestamp"], "2026-11-22T11:55:26.584+08:00");
        assert_eq!(v["event"]["id"], "1-2-0000000000000003-0");
    }

    #[test]
    fn raw_line_uses_read_time_and_no_error() {
        let p = parse("demo-print> x", &Zone::UTC);
        let o = Origin {
            path: "/l/a.out",
            offset: 0,
            dev: 1,
            ino: 2,
            fingerprint: 3,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&encode(&p, &o, &pod(), "2026-01-01T00:00:00.000+00:00"))
                .unwrap();
        assert_eq!(v["@timestamp"], "2026-01-01T00:00:00.000+00:00");
        assert_eq!(v["message"], "demo-print> x");
        assert!(v.get("error").is_none());
        assert!(v["log"].get("level").is_none());
    }

    #[test]
    fn empty_pod_meta_and_hostile_text_stay_valid_json() {
        let empty = PodMeta {
            pod_name: String::new(),
            namespace: String::new(),
            node_name: String::new(),
            pod_ip: String::new(),
            container: String::new(),
            cluster_id: String::new(),
            component: String::new(),
        };
        let text = "2026-11-22 19:03:04,123 INFO  a.B [] - \"q\" \\ \u{1} \u{7f} é \u{2028}";
        let p = parse(text, &Zone::UTC);
        let o = Origin {
            path: "/l/\"x\".log",
            offset: u64::MAX,
            dev: u64::MAX,
            ino: 0,
            fingerprint: u64::MAX,
        };
        for pod in [empty, pod()] {
            let v: serde_json::Value =
                serde_json::from_slice(&encode(&p, &o, &pod, "unused")).unwrap();
            assert_eq!(v["message"], "\"q\" \\ \u{1} \u{7f} é \u{2028}");
            assert_eq!(v["log"]["file"]["path"], "/l/\"x\".log");
            assert_eq!(v["log"]["offset"], u64::MAX);
            assert_eq!(
                v["event"]["id"],
                format!("{:x}-0-{:016x}-{}", u64::MAX, u64::MAX, u64::MAX)
            );
            assert!(v["kubernetes"]["pod"].is_object());
        }
    }
}
