//! The agent's Kafka message: one ECS JSON document per event (DESIGN.md, "The agent binary";
//! written by `flink_agent::encode`). Only the fields the reader selects, orders, de-duplicates
//! and prints by are read; the rest (`error`, `log.flags`, node, IP) stays in the stored
//! document, which `--output json` prints unchanged. Pure, no I/O.

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem;
use serde::Deserialize;

/// One event as the agent shipped it. Strings are borrowed from the message where JSON needs
/// no unescaping (all but the message of a multi-line event).
#[derive(Debug, Deserialize)]
pub struct Doc<'a> {
    #[serde(rename = "@timestamp", borrow)]
    pub timestamp: Cow<'a, str>,
    #[serde(borrow)]
    pub message: Cow<'a, str>,
    #[serde(borrow)]
    pub log: Log<'a>,
    #[serde(borrow)]
    pub event: Event<'a>,
    #[serde(default, borrow)]
    pub kubernetes: Kubernetes<'a>,
    #[serde(default, borrow)]
    pub flink: Flink<'a>,
}

#[derive(Debug, Deserialize)]
pub struct Log<'a> {
    #[serde(default, borrow)]
    pub level: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub logger: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub file: File<'a>,
    pub offset: u64,
}

#[derive(Debug, Deserialize)]
pub struct File<'a> {
    #[serde(borrow)]
    pub path: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
pub struct Event<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Kubernetes<'a> {
    #[serde(default, borrow)]
    pub pod: Pod<'a>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Pod<'a> {
    #[serde(default, borrow)]
    pub name: Cow<'a, str>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Flink<'a> {
    #[serde(default, borrow)]
    pub cluster_id: Cow<'a, str>,
    #[serde(default, borrow)]
    pub component: Cow<'a, str>,
}

impl<'a> Doc<'a> {
    /// The document, if `payload` is one of the agent's: JSON of that shape with an
    /// `event.id` of the form `<file identity>-<offset>`.
    pub fn parse(payload: &'a [u8]) -> Option<Self> {
        let doc: Doc<'a> = serde_json::from_slice(payload).ok()?;
        doc.file_identity()?;
        Some(doc)
    }

    /// The file part of `event.id` (`dev-inode-fingerprint`, without the offset): what
    /// tells one file of a pod from another, across renames.
    pub fn file_identity(&self) -> Option<&str> {
        let (file, offset) = self.event.id.rsplit_once('-')?;
        (!file.is_empty() && offset.parse::<u64>().is_ok()).then_some(file)
    }
}

/// Whether a payload can be one of the agent's at all: its encoder always starts with
/// `@timestamp` and ends with the pod's `flink` object. Checked before anything is parsed, so
/// messages of other producers are counted without the cost of JSON.
pub fn has_agent_shape(payload: &[u8]) -> bool {
    payload.starts_with(br#"{"@timestamp":""#) && payload.ends_with(b"}}")
}

/// The `flink.cluster_id` of an agent message, found from its end without parsing (the
/// encoder writes the pod's part last: `,"flink":{"cluster_id":"x",...}}`). A cluster-id is a
/// Kubernetes name, which JSON never escapes; anything else is left to the parser.
pub fn cluster_id_of(payload: &[u8]) -> Option<&str> {
    const FIELD: &[u8] = br#""flink":{"cluster_id":""#;
    // Built once: building the searcher for every message was a tenth of a read's CPU.
    static FINDER: LazyLock<memmem::FinderRev<'static>> =
        LazyLock::new(|| memmem::FinderRev::new(FIELD));
    let start = FINDER.rfind(payload)? + FIELD.len();
    let len = memchr::memchr2(b'"', b'\\', &payload[start..])?;
    if payload[start + len] != b'"' {
        return None;
    }
    std::str::from_utf8(&payload[start..start + len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flink_agent::config::PodMeta;
    use flink_agent::encode::{encode, Origin};
    use flink_agent::parse::parse;
    use flink_agent::zone::Zone;

    fn pod(cluster_id: &str) -> PodMeta {
        PodMeta {
            pod_name: "wc-taskmanager-1-1".into(),
            namespace: "jobs".into(),
            node_name: "n".into(),
            pod_ip: "10.1.2.3".into(),
            container: "flink-main-container".into(),
            cluster_id: cluster_id.into(),
            component: "taskmanager".into(),
        }
    }

    fn origin() -> Origin<'static> {
        Origin {
            path: "/opt/flink/log/flink--taskmanager-0-wc.log",
            offset: 4096,
            dev: 0x801,
            ino: 42,
            fingerprint: 7,
        }
    }

    /// What the agent's own encoder writes is read back field for field.
    #[test]
    fn reads_what_the_agent_writes() {
        let text = "2026-11-22 19:03:04,123 ERROR org.apache.flink.Foo [] - failed\n\
                    java.lang.IllegalStateException: boom\n\tat x.Y.z(Y.java:1)";
        let p = parse(text, &Zone::named("Asia/Shanghai").unwrap());
        let bytes = encode(&p, &origin(), &pod("wc"), "unused");
        assert!(has_agent_shape(&bytes));
        assert_eq!(cluster_id_of(&bytes), Some("wc"));
        let d = Doc::parse(&bytes).unwrap();
        assert_eq!(d.timestamp, "2026-11-22T19:03:04.123+08:00");
        assert_eq!(
            d.message,
            "failed\njava.lang.IllegalStateException: boom\n\tat x.Y.z(Y.java:1)"
        );
        assert_eq!(d.log.level.as_deref(), Some("ERROR"));
        assert_eq!(d.log.logger.as_deref(), Some("org.apache.flink.Foo"));
        assert_eq!(d.log.file.path, origin().path);
        assert_eq!(d.log.offset, 4096);
        assert_eq!(d.file_identity(), Some("801-2a-0000000000000007"));
        assert_eq!(d.kubernetes.pod.name, "wc-taskmanager-1-1");
        assert_eq!(d.flink.cluster_id, "wc");
        assert_eq!(d.flink.component, "taskmanager");
    }

    #[test]
    fn a_raw_line_has_no_level_or_logger() {
        let p = parse("demo-print> x", &Zone::UTC);
        let bytes = encode(&p, &origin(), &pod("wc"), "2026-11-22T19:03:04.123+00:00");
        let d = Doc::parse(&bytes).unwrap();
        assert_eq!(d.message, "demo-print> x");
        assert!(d.log.level.is_none() && d.log.logger.is_none());
    }

    #[test]
    fn cluster_id_found_from_the_end_even_if_the_message_mentions_one() {
        let p = parse(
            r#"2026-11-22 19:03:04,123 INFO  a.B [] - "flink":{"cluster_id":"evil"}"#,
            &Zone::UTC,
        );
        let bytes = encode(&p, &origin(), &pod("wc"), "unused");
        assert_eq!(cluster_id_of(&bytes), Some("wc"));
        // No cluster-id at all (an agent started without --cluster-id).
        let bytes = encode(&p, &origin(), &pod(""), "unused");
        assert_eq!(cluster_id_of(&bytes), None);
        assert_eq!(Doc::parse(&bytes).unwrap().flink.cluster_id, "");
    }

    #[test]
    fn other_producers_messages_are_not_docs() {
        for payload in [
            &b"plain text"[..],
            b"{}",
            b"[1,2]",
            br#"{"@timestamp":"2026-11-22T19:03:04.123Z","message":"m"}"#,
            br#"{"@timestamp":"x","message":"m","log":{"file":{"path":"/a"},"offset":1},"event":{"id":"no-offset-here"}}"#,
            b"\xff\xfe",
        ] {
            assert!(Doc::parse(payload).is_none(), "{payload:?}");
        }
        assert!(!has_agent_shape(b"{\"message\":1}"));
    }
}
