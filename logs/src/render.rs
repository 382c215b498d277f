//! How an event is printed. Pure, no I/O.
//!
//! `text`: as Flink wrote it, in its default layout
//! (`%d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n`, the NDC being `[]` in Flink): the
//! time in the pod's zone, level, logger, the message and its whole stack trace. A line the
//! agent could not parse (stdout, a piece of a split long line) was shipped whole as its
//! message, and is printed as it is. With several pods, every line gets the pod's name in
//! front, so a stack trace stays with its pod through `grep`.
//!
//! `json`: the stored ECS document, byte for byte.

use crate::doc::Doc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Appends the event, ending with a newline.
pub fn render(out: &mut Vec<u8>, format: Output, doc: &Doc<'_>, payload: &[u8], prefix: bool) {
    match format {
        Output::Json => {
            out.extend_from_slice(payload);
            out.push(b'\n');
        }
        Output::Text => {
            let pod = prefix.then_some(doc.kubernetes.pod.name.as_ref());
            render_text(out, doc, pod);
        }
    }
}

fn render_text(out: &mut Vec<u8>, doc: &Doc<'_>, pod: Option<&str>) {
    out.reserve(doc.message.len() + 120);
    if let Some(pod) = pod {
        push_prefix(out, pod);
    }
    if let (Some(level), Some(logger)) = (&doc.log.level, &doc.log.logger) {
        crate::time::push_flink_local(out, &doc.timestamp);
        out.push(b' ');
        push_padded(out, level, 5);
        out.push(b' ');
        push_padded(out, logger, 60);
        out.extend_from_slice(b" [] - ");
    }
    match pod {
        None => out.extend_from_slice(doc.message.as_bytes()),
        Some(pod) => {
            let mut lines = doc.message.split('\n');
            if let Some(first) = lines.next() {
                out.extend_from_slice(first.as_bytes());
            }
            for line in lines {
                out.push(b'\n');
                push_prefix(out, pod);
                out.extend_from_slice(line.as_bytes());
            }
        }
    }
    out.push(b'\n');
}

fn push_prefix(out: &mut Vec<u8>, pod: &str) {
    out.extend_from_slice(pod.as_bytes());
    out.push(b' ');
}

/// `%-Np`: left-aligned in at least `width` characters.
fn push_padded(out: &mut Vec<u8>, s: &str, width: usize) {
    out.extend_from_slice(s.as_bytes());
    let chars = s.chars().count();
    out.resize(out.len() + width.saturating_sub(chars), b' ');
}

#[cfg(test)]
mod tests {
    use super::*;
    use flink_agent::config::PodMeta;
    use flink_agent::config::{MultilineConfig, StartPattern};
    use flink_agent::encode::{encode, Origin};
    use flink_agent::multiline::{GroupedEvent, Grouper, Line};
    use flink_agent::parse::parse;
    use flink_agent::zone::Zone;

    fn pod() -> PodMeta {
        PodMeta {
            pod_name: "wc-taskmanager-1-1".into(),
            cluster_id: "wc".into(),
            ..PodMeta::default()
        }
    }

    /// The agent's grouping of a whole file, with its default settings.
    fn group_all(data: &[u8]) -> Vec<GroupedEvent> {
        let mut g = Grouper::new(MultilineConfig {
            start: StartPattern::new(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}").unwrap(),
            max_lines: 500,
            max_bytes: 512 * 1024,
            flush_after: std::time::Duration::from_secs(1),
        });
        let now = std::time::Instant::now();
        let mut out = Vec::new();
        let mut start = 0usize;
        for line in data.split_inclusive(|&b| b == b'\n') {
            let end = start + line.len();
            let bytes = line.strip_suffix(b"\n").unwrap_or(line);
            out.extend(g.push(
                Line {
                    bytes,
                    start: start as u64,
                    end: end as u64,
                    force_start: false,
                },
                now,
            ));
            start = end;
        }
        out.extend(g.flush());
        out
    }

    /// Every event of a file, grouped, parsed and encoded by the agent's own code, then
    /// printed: the file comes back byte for byte.
    fn round_trip(text: &str, zone: &Zone) -> String {
        let mut out = Vec::new();
        for ev in group_all(text.as_bytes()) {
            let origin = Origin {
                path: "/opt/flink/log/x.log",
                offset: 0,
                dev: 1,
                ino: 2,
                fingerprint: 3,
            };
            let bytes = encode(
                &parse(&ev.text, zone),
                &origin,
                &pod(),
                "2026-11-22T00:00:00.000+00:00",
            );
            let doc = Doc::parse(&bytes).unwrap();
            render(&mut out, Output::Text, &doc, &bytes, false);
        }
        String::from_utf8(out).unwrap()
    }

    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/flink-logs")
            .join(name);
        let s = std::fs::read_to_string(p).unwrap();
        // The first line of each fixture says where it comes from.
        s.split_once('\n')
            .map(|(_, rest)| rest.to_string())
            .unwrap()
    }

    #[test]
    fn real_flink_logs_come_back_as_written() {
        for name in [
            "jobmanager-standalonesession.log.head30.txt",
            "jobmanager-standalonesession.log.stacktrace30.txt",
            "jobmanager-standalonesession.log.jobfailed30.txt",
            "jobmanager-standalonesession.log.cancel30.txt",
            "taskexecutor.log.head30.txt",
            "taskexecutor.log.stacktrace30.txt",
            "taskexecutor.out.head30.txt",
            "client.log.head30.txt",
        ] {
            let text = fixture(name);
            for zone in [Zone::UTC, Zone::named("Asia/Shanghai").unwrap()] {
                assert_eq!(round_trip(&text, &zone), text, "{name}");
            }
        }
    }

    #[test]
    fn several_pods_prefix_every_line() {
        let text = "2026-11-22 10:00:00,000 ERROR a.B [] - failed\njava.lang.IllegalStateException: x\n\tat a.B.c(B.java:1)";
        let origin = Origin {
            path: "/l/x.log",
            offset: 0,
            dev: 1,
            ino: 2,
            fingerprint: 3,
        };
        let bytes = encode(&parse(text, &Zone::UTC), &origin, &pod(), "unused");
        let doc = Doc::parse(&bytes).unwrap();
        let mut out = Vec::new();
        render(&mut out, Output::Text, &doc, &bytes, true);
        let want = format!(
            "wc-taskmanager-1-1 2026-11-22 10:00:00,000 ERROR {:<60} [] - failed\n\
             wc-taskmanager-1-1 java.lang.IllegalStateException: x\n\
             wc-taskmanager-1-1 \tat a.B.c(B.java:1)\n",
            "a.B"
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);

        let mut json = Vec::new();
        render(&mut json, Output::Json, &doc, &bytes, true);
        assert_eq!(&json[..json.len() - 1], &bytes[..]);
    }
}
