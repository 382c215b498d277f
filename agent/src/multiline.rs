//! Multi-line grouping: pure, no I/O, no clock (the caller passes `Instant`s).
//!
//! A line that does not begin a new Flink record (by default: a `yyyy-MM-dd HH:mm:ss` timestamp
//! at its start) belongs to the event before it: Java stack traces, `Caused by:`, `... N more`,
//! blank lines and the start-up "Preconfiguration" block (`INFO  [] - ...` without timestamp).
//! Events are bounded in lines and bytes so one runaway trace cannot hold unbounded memory, and
//! the caller closes an event after an idle time so the last stack trace of a quiet file ships.

use std::time::{Duration, Instant};

use regex_automata::{meta, Input};

use crate::config::MultilineConfig;

/// One line as read from a file: its bytes without the line terminator, and its byte range.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub bytes: &'a [u8],
    /// Offset of the line's first byte in the file.
    pub start: u64,
    /// Offset just past the line's terminator (the next line's start).
    pub end: u64,
    /// The line is a piece of an over-long line: it gets an event of its own.
    pub force_start: bool,
}

/// A closed event: the text of its lines joined with `\n`, and the file range it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupedEvent {
    pub start: u64,
    pub end: u64,
    pub text: String,
    pub lines: usize,
}

#[derive(Debug)]
struct Pending {
    ev: GroupedEvent,
    last_push: Instant,
    /// A piece of an over-long line: nothing joins it.
    piece: bool,
}

/// Groups the lines of one file into events.
#[derive(Debug)]
pub struct Grouper {
    cfg: MultilineConfig,
    /// This file's search cache for `cfg.start` (see [`crate::config::StartPattern`]).
    start_cache: meta::Cache,
    pending: Option<Pending>,
}

impl Grouper {
    pub fn new(cfg: MultilineConfig) -> Self {
        Self {
            start_cache: cfg.start.create_cache(),
            cfg,
            pending: None,
        }
    }

    /// Whether `text` begins a new record.
    pub fn is_start(&mut self, text: &str) -> bool {
        self.cfg
            .start
            .is_match_with(&mut self.start_cache, &Input::new(text))
    }

    /// Adds a line; returns the event it closed, if any.
    pub fn push(&mut self, line: Line<'_>, now: Instant) -> Option<GroupedEvent> {
        let bytes = line.bytes.strip_suffix(b"\r").unwrap_or(line.bytes);
        // Valid UTF-8 (nearly every line) takes the fast validator; only the rest is repaired.
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            Err(_) => String::from_utf8_lossy(bytes),
        };
        let starts = line.force_start || self.is_start(&text);
        let closed = match &mut self.pending {
            Some(p)
                if !starts
                    && !p.piece
                    && p.ev.lines < self.cfg.max_lines
                    && p.ev.text.len() + 1 + text.len() <= self.cfg.max_bytes =>
            {
                p.ev.text.push('\n');
                p.ev.text.push_str(&text);
                p.ev.lines += 1;
                p.ev.end = line.end;
                p.last_push = now;
                return None;
            }
            _ => self.pending.take().map(|p| p.ev),
        };
        let ev = GroupedEvent {
            start: line.start,
            end: line.end,
            text: text.into_owned(),
            lines: 1,
        };
        self.pending = Some(Pending {
            ev,
            last_push: now,
            piece: line.force_start,
        });
        closed
    }

    /// Closes the pending event if no line came for the configured idle time.
    pub fn flush_idle(&mut self, now: Instant) -> Option<GroupedEvent> {
        let idle = self.cfg.flush_after;
        match &self.pending {
            Some(p) if now.saturating_duration_since(p.last_push) >= idle => self.flush(),
            _ => None,
        }
    }

    /// Closes the pending event now (end of a released file, shutdown).
    pub fn flush(&mut self) -> Option<GroupedEvent> {
        self.pending.take().map(|p| p.ev)
    }

    /// When the pending event becomes idle, if there is one.
    pub fn idle_deadline(&self) -> Option<Instant> {
        self.pending
            .as_ref()
            .map(|p| p.last_push + self.cfg.flush_after)
    }

    pub fn flush_after(&self) -> Duration {
        self.cfg.flush_after
    }

    /// Offset where the pending event starts (bytes before it are in closed events).
    pub fn pending_start(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.ev.start)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::StartPattern;

    pub(crate) fn cfg() -> MultilineConfig {
        cfg_bounded(500, 512 * 1024)
    }

    pub(crate) fn cfg_bounded(max_lines: usize, max_bytes: usize) -> MultilineConfig {
        MultilineConfig {
            start: StartPattern::new(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}").unwrap(),
            max_lines,
            max_bytes,
            flush_after: Duration::from_secs(1),
        }
    }

    /// Groups a whole text (as a file) and returns the events, the last one flushed.
    pub(crate) fn group_all(g: &mut Grouper, data: &[u8]) -> Vec<GroupedEvent> {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos < data.len() {
            let nl = data[pos..].iter().position(|&b| b == b'\n');
            let (end_text, next) = match nl {
                Some(i) => (pos + i, pos + i + 1),
                None => (data.len(), data.len()),
            };
            let line = Line {
                bytes: &data[pos..end_text],
                start: pos as u64,
                end: next as u64,
                force_start: false,
            };
            out.extend(g.push(line, now));
            pos = next;
        }
        out.extend(g.flush());
        out
    }

    fn fixture(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/flink-logs")
            .join(name);
        let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        // The fixtures start with one '#' comment line describing them: not part of the log.
        let skip = data.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        data[skip..].to_vec()
    }

    #[test]
    fn stack_trace_is_one_event() {
        let data = fixture("taskexecutor.log.stacktrace30.txt");
        let evs = group_all(&mut Grouper::new(cfg()), &data);
        // line 1: INFO, lines 2..29: WARN + trace (Caused by, ... 22 more), line 30: INFO.
        assert_eq!(evs.len(), 3, "{evs:#?}");
        assert!(evs[1].text.contains("java.lang.IllegalStateException"));
        assert!(evs[1].text.contains("Caused by: java.io.IOException"));
        assert!(evs[1].text.ends_with("... 22 more"));
        assert_eq!(evs[1].lines, 28);
        // Offsets tile the file with no gap and no overlap.
        assert_eq!(evs[0].start, 0);
        for w in evs.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        assert_eq!(evs[2].end, data.len() as u64);
    }

    #[test]
    fn preconfiguration_block_joins_its_record() {
        let data = fixture("jobmanager-standalonesession.log.head30.txt");
        let evs = group_all(&mut Grouper::new(cfg()), &data);
        assert_eq!(evs.len(), 3, "{evs:#?}");
        let pre = &evs[2];
        assert!(pre.text.contains("RESOURCE_PARAMS extraction logs:"));
        assert!(pre
            .text
            .contains("INFO  [] - Loading configuration property: blob.server.port"));
        assert!(pre.text.contains("\n\n"), "blank lines stay in the event");
    }

    #[test]
    fn every_record_is_an_event_and_out_lines_stand_alone() {
        let data = fixture("client.log.head30.txt");
        let evs = group_all(&mut Grouper::new(cfg()), &data);
        assert_eq!(evs.len(), 30);
        // A .out file with no timestamps: the first line starts an event and all the others
        // continue it (bounded by max_lines).
        let data = fixture("taskexecutor.out.head30.txt");
        let mut c = cfg();
        c.max_lines = 7;
        let evs = group_all(&mut Grouper::new(c), &data);
        assert_eq!(evs.len(), 5);
        assert_eq!(evs.iter().map(|e| e.lines).sum::<usize>(), 30);
    }

    #[test]
    fn byte_bound_and_forced_pieces() {
        let mut c = cfg();
        c.max_bytes = 20;
        let mut g = Grouper::new(c);
        let data = b"2026-11-22 11:55:26,584 X\nabcdefghij\nklmnopqrst\n";
        let evs = group_all(&mut g, data);
        assert_eq!(evs.len(), 3);
        let now = Instant::now();
        let mut g = Grouper::new(cfg());
        let mut out = Vec::new();
        for (i, piece) in [b"aaaa", b"bbbb"].iter().enumerate() {
            out.extend(g.push(
                Line {
                    bytes: &piece[..],
                    start: i as u64 * 4,
                    end: i as u64 * 4 + 4,
                    force_start: true,
                },
                now,
            ));
        }
        out.extend(g.push(
            Line {
                bytes: b"cc",
                start: 8,
                end: 11,
                force_start: false,
            },
            now,
        ));
        out.extend(g.flush());
        let texts: Vec<_> = out.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["aaaa", "bbbb", "cc"]);
        assert!(out.iter().all(|e| e.lines == 1));
    }

    #[test]
    fn idle_flush() {
        let mut g = Grouper::new(cfg());
        let t0 = Instant::now();
        let l = Line {
            bytes: b"2026-11-22 11:55:26,584 INFO x [] - y",
            start: 0,
            end: 38,
            force_start: false,
        };
        assert!(g.push(l, t0).is_none());
        assert!(g.flush_idle(t0 + Duration::from_millis(500)).is_none());
        assert!(g.flush_idle(t0 + Duration::from_secs(1)).is_some());
        assert!(g.flush().is_none());
    }
}
