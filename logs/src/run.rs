//! The read loop: Kafka messages in, selected events out in order. Wires [`crate::source`]
//! (I/O) to the pure parts: [`crate::filter`], [`crate::dedup`], [`crate::render`],
//! [`crate::merge`] and [`crate::progress`].
//!
//! Messages are looked at as cheaply as they can be left out: the agent's shape and the
//! cluster-id on the raw bytes, the pod on the Kafka key, and only then the JSON.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cli::Options;
use crate::dedup::Dedup;
use crate::doc::{has_agent_shape, Doc};
use crate::merge::Merger;
use crate::progress::Progress;
use crate::render::render;
use crate::source::{Polled, Source, SourceError};
use crate::summary::Summary;

/// Most bytes of rendered events held for ordering; past it the oldest is printed.
const MAX_HELD_BYTES: usize = 64 << 20;
/// How long one poll waits: also how often the stop flag and deadlines are looked at.
const POLL: Duration = Duration::from_millis(100);
/// Messages taken from librdkafka's queue between two looks at the clock and the output.
const BATCH: usize = 256;

/// What one poll brought.
enum Took {
    Nothing,
    Error,
    Progress,
}
/// With --follow: how often the topic is asked for new partitions (and Kafka for a sign of
/// life), and how often printed lines are flushed.
const REFRESH: Duration = Duration::from_secs(5);
const FLUSH: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(
        "reading {topic:?} made no progress for {timeout:?} (partition/offset: {behind}){detail}"
    )]
    Stalled {
        topic: String,
        timeout: Duration,
        behind: String,
        detail: String,
    },
    #[error("Kafka failed: {0}")]
    Fatal(String),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

struct Reader<'o, W: Write> {
    opts: &'o Options,
    out: W,
    progress: Progress,
    dedup: Dedup,
    merger: Merger,
    summary: Summary,
    /// Reused buffer for the file key `pod/identity`.
    file_key: String,
    errors_told: HashSet<String>,
    /// The output is a closed pipe (`| head`): stop quietly.
    closed: bool,
    wrote_since_flush: bool,
}

/// Reads what `opts` selects and writes it to `out` until the window is read (or, with
/// `--follow`, until `stop` is set). Returns what was read and printed.
pub fn run(opts: &Options, out: impl Write, stop: &AtomicBool) -> Result<Summary, RunError> {
    let source = Source::new(opts.kafka.clone())?;
    let partitions = source.partitions()?;
    let ranges = source.plan(&partitions, opts.seek_from, opts.seek_until)?;
    let mut r = Reader {
        opts,
        out,
        progress: Progress::default(),
        dedup: Dedup::default(),
        merger: Merger::new(MAX_HELD_BYTES),
        summary: Summary {
            topic: opts.kafka.topic.clone(),
            ..Summary::default()
        },
        file_key: String::new(),
        errors_told: HashSet::new(),
        closed: false,
        wrote_since_flush: false,
    };
    let mut starts = Vec::new();
    for range in &ranges {
        r.progress.add(range.partition, range.start, range.until);
        starts.push((range.partition, range.start));
    }
    tracing::debug!(?ranges, "reading");
    source.assign(&starts)?;
    r.read(&source, stop)?;
    r.finish()
}

impl<W: Write> Reader<'_, W> {
    fn read(&mut self, source: &Source, stop: &AtomicBool) -> Result<(), RunError> {
        let timeout = self.opts.kafka.timeout;
        let start = Instant::now();
        let mut last_progress = start;
        let mut last_refresh = start;
        let mut last_kafka_ok = start;
        let mut last_flush = start;
        let mut history_told = false;
        while !stop.load(Ordering::Relaxed) && !self.closed {
            let moved = self.take_batch(source)?;
            // The clock is read once per batch: per message it was a sixth of the CPU.
            let now = Instant::now();
            if moved {
                last_progress = now;
                last_kafka_ok = now;
            }
            self.print_ready(now)?;
            if !self.opts.follow && self.progress.history_read(now) {
                break;
            }

            if self.opts.follow {
                if !history_told && self.progress.history_read(now) {
                    history_told = true;
                    self.tell_history_read();
                }
                if self.wrote_since_flush && (!moved || now - last_flush >= FLUSH) {
                    self.flush()?;
                    last_flush = now;
                }
                if now - last_refresh >= REFRESH {
                    last_refresh = now;
                    match self.new_partitions(source) {
                        Ok(()) => last_kafka_ok = Instant::now(),
                        Err(e) if last_kafka_ok.elapsed() >= timeout => return Err(e.into()),
                        Err(e) => tracing::debug!(error = %e, "metadata refresh failed"),
                    }
                }
            } else if now - last_progress >= timeout {
                // Nothing for a while: Kafka is gone (say so), or a partition is stuck.
                source.partitions()?;
                let behind = self
                    .progress
                    .behind(now)
                    .iter()
                    .map(|(p, at)| format!("{p}/{at}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(RunError::Stalled {
                    topic: self.opts.kafka.topic.clone(),
                    timeout,
                    behind,
                    detail: source.detail(),
                });
            }
        }
        Ok(())
    }

    /// Takes what librdkafka has queued, up to [`BATCH`] messages, waiting up to [`POLL`]
    /// for the first; whether Kafka gave anything (a sign of progress).
    fn take_batch(&mut self, source: &Source) -> Result<bool, RunError> {
        let mut moved = false;
        for i in 0..BATCH {
            let wait = if i == 0 { POLL } else { Duration::ZERO };
            match source.poll(wait, |p| self.take(p))? {
                Took::Nothing => break,
                Took::Error => {}
                Took::Progress => moved = true,
            }
        }
        Ok(moved)
    }

    /// Handles one poll's result.
    fn take(&mut self, polled: Polled<'_>) -> Result<Took, RunError> {
        match polled {
            Polled::Nothing => Ok(Took::Nothing),
            Polled::End { partition } => {
                self.progress.reached_end(partition, Instant::now());
                Ok(Took::Progress)
            }
            Polled::Error(e) => {
                if matches!(e, rdkafka::error::KafkaError::MessageConsumptionFatal(_)) {
                    return Err(RunError::Fatal(e.to_string()));
                }
                self.summary.consumer_errors += 1;
                let text = e.to_string();
                if self.errors_told.len() < 20 && self.errors_told.insert(text.clone()) {
                    tracing::warn!(error = %text, "Kafka consumer error");
                }
                Ok(Took::Error)
            }
            Polled::Message {
                partition,
                offset,
                kafka_ts,
                key,
                payload,
            } => {
                if self.progress.past_window(partition, offset) {
                    return Ok(Took::Progress);
                }
                self.progress.read(partition, offset, kafka_ts);
                self.message(partition, key, payload);
                Ok(Took::Progress)
            }
        }
    }

    fn message(&mut self, partition: i32, key: Option<&[u8]>, payload: &[u8]) {
        let sel = &self.opts.selection;
        if !has_agent_shape(payload) {
            self.summary.not_agent += 1;
            return;
        }
        match sel.wants_cluster(payload) {
            Some(false) => {
                if let Some(id) = crate::doc::cluster_id_of(payload) {
                    self.summary.note_other_cluster(id);
                }
                return;
            }
            Some(true) => {
                self.summary.cluster_seen = true;
                if let Some(pod) = key.and_then(|k| std::str::from_utf8(k).ok()) {
                    self.summary.note_cluster_pod(pod);
                }
            }
            None => {}
        }
        if !sel.wants_key(key) {
            return;
        }
        let Some(doc) = Doc::parse(payload) else {
            self.summary.not_agent += 1;
            return;
        };
        let Some(ts) = crate::time::timestamp_millis(&doc.timestamp) else {
            self.summary.not_agent += 1;
            return;
        };
        if doc.flink.cluster_id != sel.cluster_id {
            self.summary.note_other_cluster(&doc.flink.cluster_id);
            return;
        }
        self.summary.cluster_seen = true;
        self.summary.note_cluster_pod(&doc.kubernetes.pod.name);
        if !sel.wants_pod(&doc) {
            return;
        }
        self.summary.pods_matched = true;
        let pod = doc.kubernetes.pod.name.as_ref();
        let file = doc.file_identity().unwrap_or_default();
        if self.dedup.is_copy(partition, pod, file, doc.log.offset) {
            return;
        }
        if !sel.wants_event(&doc, ts) {
            return;
        }
        let mut rendered = Vec::new();
        render(
            &mut rendered,
            self.opts.output,
            &doc,
            payload,
            self.opts.prefix,
        );
        self.summary.note_printed_pod(pod);
        self.file_key.clear();
        self.file_key.push_str(pod);
        self.file_key.push('/');
        self.file_key.push_str(file);
        self.merger.push(&self.file_key, ts, rendered);
    }

    /// Prints what no partition can still bring an older event than.
    fn print_ready(&mut self, now: Instant) -> Result<(), RunError> {
        if self.merger.is_empty() {
            return Ok(());
        }
        let window = i64::try_from(self.opts.order_window.as_millis()).unwrap_or(i64::MAX);
        let limit = self
            .progress
            .limit(self.opts.follow, now, now_ms())
            .saturating_sub(window);
        while let Some(event) = self.merger.pop(limit) {
            self.write(&event)?;
        }
        Ok(())
    }

    fn write(&mut self, event: &[u8]) -> Result<(), RunError> {
        if self.closed {
            return Ok(());
        }
        match self.out.write_all(event) {
            Ok(()) => {
                self.summary.printed += 1;
                self.wrote_since_flush = true;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn flush(&mut self) -> Result<(), RunError> {
        self.wrote_since_flush = false;
        match self.out.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            r => Ok(r?),
        }
    }

    /// With --follow: partitions added to the topic since reading started are read from
    /// their beginning (everything in them is new).
    fn new_partitions(&mut self, source: &Source) -> Result<(), SourceError> {
        let parts = source.partitions()?;
        let new: Vec<i32> = parts
            .into_iter()
            .filter(|p| !self.progress.has(*p))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let ranges = source.plan(&new, None, None)?;
        for r in &ranges {
            self.progress.add(r.partition, r.start, None);
        }
        tracing::info!(partitions = ?new, "new partitions in the topic: reading them too");
        source.assign(
            &ranges
                .iter()
                .map(|r| (r.partition, r.start))
                .collect::<Vec<_>>(),
        )
    }

    fn tell_history_read(&mut self) {
        if let Some(why) = self
            .summary
            .nothing_found(&self.opts.selection.cluster_id, "yet")
        {
            eprintln!("flink-logs: {why}; following");
        }
    }

    fn finish(mut self) -> Result<Summary, RunError> {
        while let Some(event) = self.merger.pop(i64::MAX) {
            self.write(&event)?;
        }
        self.flush()?;
        let s = &mut self.summary;
        s.partitions = self.progress.partitions().count();
        s.fetched = self.progress.fetched();
        s.duplicates = self.dedup.dropped;
        s.out_of_order = self.merger.out_of_order;
        s.forced = self.merger.forced;
        s.peak_held = self.merger.peak_held;
        s.peak_held_bytes = self.merger.peak_held_bytes;
        Ok(self.summary)
    }
}
