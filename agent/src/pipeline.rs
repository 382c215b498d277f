//! The running agent: the read loop (tail -> group -> parse -> encode -> send), the report
//! task that turns Kafka acknowledgements into checkpoint progress, the checkpoint writer, and
//! the shutdown sequence.
//!
//! Backpressure: each event counts in the in-flight window ([`InFlight`]) from before it is
//! handed to Kafka until its acknowledgement is applied. The read loop waits for room before
//! sending, so when Kafka is slow or away it stops reading; the files on disk are the buffer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{watch, Notify, RwLock};

use crate::checkpoint::{self, Ledger, StreamId};
use crate::config::Config;
use crate::encode::{self, Origin};
use crate::flink_rest::target::RestTarget;
use crate::inflight::InFlight;
use crate::kafka::{DeliveryHandler, Sink};
use crate::metrics::Metrics;
use crate::parse;
use crate::tail::{ReadEvent, Tailer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Bytes read from one file before the loop moves to the next (fairness between files).
const PER_FILE_ROUND: usize = 1024 * 1024;
/// How long the loop sleeps when nothing happens and no inotify event wakes it.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// How often delivery reports are served while events are in flight. Acknowledgements come a
/// produce batch at a time (`linger.ms` 20); a report waits at most this long, well within
/// what the in-flight window holds at full speed.
const REPORTS_BUSY: Duration = Duration::from_millis(5);
/// ... and while none are: librdkafka's statistics and logs wait for it, and an idle agent
/// should not wake more than it must (BENCHMARKS.md, idle cost).
const REPORTS_IDLE: Duration = Duration::from_millis(500);

/// What travels with an event through librdkafka and comes back with its delivery report.
pub struct Pending {
    /// Order in which the event was first handed to Kafka.
    no: u64,
    stream: StreamId,
    seq: u64,
    /// Encoded size: its share of the in-flight window.
    size: usize,
}

/// An event whose delivery failed: what is needed to send it again.
struct Failed {
    pending: Pending,
    payload: Vec<u8>,
}

/// Turns delivery reports into checkpoint progress and retries, in the report task (on the
/// runtime's thread, between the read loop's steps), so it only takes short locks.
///
/// Acknowledgements are gathered and applied `ACK_BATCH` at a time, or as soon as they
/// cover everything in flight, or at the end of each round of serving reports: one ledger
/// lock, window release and counter update per batch rather than per event (batched when
/// reports had a thread of their own and those per-event touches made two threads contend,
/// BENCHMARKS.md).
pub struct Acks {
    ledger: Arc<Mutex<Ledger>>,
    window: InFlight,
    /// Only the report task takes it (a replaced producer's last reports aside, on the thread
    /// that drops it).
    batch: Mutex<AckBatch>,
    metrics: Metrics,
    /// Failed deliveries waiting to be sent again, by first-send order, so a batch that
    /// failed together (a dead producer purges everything) goes out again in file order.
    retry: Mutex<BTreeMap<u64, Failed>>,
    retry_wake: Notify,
    /// A delivery failed for a reason other than the agent's own purge of librdkafka's queue.
    kafka_failed: AtomicBool,
    /// Events were handed to Kafka: the report task leaves its idle pace.
    sent: Notify,
}

impl Acks {
    /// Events acknowledged so far (`flink_agent_events_sent_total`). The watchdog turns its
    /// changes into the last-ack time once a second: reading the clock for every
    /// acknowledgement cost more than the rest of the acknowledgement.
    fn acked(&self) -> u64 {
        self.metrics.events_sent.get()
    }

    /// Events whose delivery failed and that wait to be sent again.
    fn failed_count(&self) -> usize {
        self.retry.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Acknowledgements applied together (see [`Acks`]).
const ACK_BATCH: usize = 256;

#[derive(Default)]
struct AckBatch {
    acks: Vec<(StreamId, u64)>,
    bytes: usize,
}

impl DeliveryHandler for Acks {
    type Token = Pending;

    fn acknowledged(&self, p: Pending) {
        let full = {
            let mut b = self.batch.lock().unwrap_or_else(|p| p.into_inner());
            b.acks.push((p.stream, p.seq));
            b.bytes += p.size;
            b.acks.len() >= ACK_BATCH || b.acks.len() >= self.window.events()
        };
        if full {
            self.reports_done();
        }
    }

    fn reports_done(&self) {
        let mut b = self.batch.lock().unwrap_or_else(|p| p.into_inner());
        if b.acks.is_empty() {
            return;
        }
        {
            let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
            for &(stream, seq) in &b.acks {
                ledger.ack(stream, seq);
            }
        }
        let (events, bytes) = (b.acks.len(), b.bytes);
        b.acks.clear();
        b.bytes = 0;
        drop(b);
        self.window.release(events, bytes);
        self.metrics.events_sent.inc_by(events as u64);
        self.metrics.bytes_sent.inc_by(bytes as u64);
    }

    fn failed(&self, pending: Pending, error: &KafkaError, payload: &[u8]) {
        // Acknowledgements gathered before this report are not held back by it.
        self.reports_done();
        self.metrics
            .send_error("delivery", crate::kafka::error_kind(error));
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PurgeQueue) {
            self.kafka_failed.store(true, Ordering::Relaxed);
        }
        let first = {
            let mut r = self.retry.lock().unwrap_or_else(|p| p.into_inner());
            r.insert(
                pending.no,
                Failed {
                    pending,
                    payload: payload.to_vec(),
                },
            );
            r.len() == 1
        };
        if first {
            // One line per batch: an outage fails thousands of deliveries at once.
            tracing::warn!(%error, "Kafka delivery failed; the event will be sent again");
        }
        self.retry_wake.notify_one();
    }
}

/// Shared by the read loop, the retry task and the stall watchdog.
struct Shipper {
    cfg: Arc<Config>,
    sink: Arc<Sink<Acks>>,
    acks: Arc<Acks>,
    next_send: AtomicU64,
    /// The read loop queues under the read side; the retry task takes the write side while
    /// it re-queues, so new events do not overtake the ones being re-sent.
    gate: RwLock<()>,
    encoder: encode::Encoder,
    /// `Config::max_payload_bytes`, computed once.
    max_payload: usize,
    /// Only the read loop parses; the lock is never contended.
    ts_cache: Mutex<parse::TsCache>,
    rest_target: Option<Arc<RestTarget>>,
}

impl Shipper {
    fn encode(&self, re: &ReadEvent) -> Vec<u8> {
        let mut ts_cache = self.ts_cache.lock().unwrap_or_else(|p| p.into_inner());
        let parsed = parse::parse_cached(&re.event.text, &self.cfg.tz, &mut ts_cache);
        if let Some(target) = &self.rest_target {
            if let Some(url) = target.offer(parsed.timestamp.as_deref(), parsed.message) {
                tracing::info!(%url, path = %re.path, "Flink REST address learned from the JobManager's log");
            }
        }
        let origin = Origin {
            path: &re.path,
            offset: re.event.start,
            dev: re.identity.dev,
            ino: re.identity.ino,
            fingerprint: re.identity.fingerprint,
        };
        // Only events without a timestamp of their own need the read time.
        let read_time = match parsed.timestamp {
            Some(_) => String::new(),
            None => parse::format_now(&self.cfg.tz),
        };
        let (payload, cut) =
            self.encoder
                .encode_within(&parsed, &origin, &read_time, self.max_payload);
        if cut {
            self.acks.metrics.events_truncated.inc();
            tracing::warn!(path = %re.path, offset = re.event.start, bytes = re.event.text.len(), "event too big for a Kafka message; its message was cut (log.flags: truncated)");
        }
        payload
    }

    /// Encodes and queues one event; returns once it is handed to librdkafka (in file order).
    /// The caller holds the read side of the gate.
    async fn ship(&self, re: ReadEvent) {
        let payload = self.encode(&re);
        let size = payload.len();
        self.acks.window.admit(size).await;
        let seq = {
            let mut l = self.acks.ledger.lock().unwrap_or_else(|p| p.into_inner());
            l.register(re.stream, re.event.end)
        };
        let Some(seq) = seq else {
            self.acks.window.release(1, size);
            return;
        };
        let pending = Pending {
            no: self.next_send.fetch_add(1, Ordering::Relaxed),
            stream: re.stream,
            seq,
            size,
        };
        self.sink.enqueue(&payload, pending).await;
    }

    /// Re-queues every failed event, oldest first (the caller holds the write gate).
    async fn resend_failed(&self) {
        self.sink.recover_if_fatal();
        let batch = std::mem::take(&mut *self.acks.retry.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, f) in batch {
            self.sink.enqueue(&f.payload, f.pending).await;
        }
    }

    /// Replaces a stalled producer. Under the write gate, so that nothing new is queued
    /// before the purged events are queued again, in their original order.
    async fn replace_producer(&self) {
        let _gate = self.gate.write().await;
        if let Some(old) = self
            .sink
            .replace("no Kafka acknowledgement within --stall-timeout")
        {
            let _ = tokio::task::spawn_blocking(move || drop(old)).await;
        }
        // The purge's failures reach the retry queue through their delivery reports.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.resend_failed().await;
    }

    /// Sends failed events again, oldest first, with a growing pause between rounds.
    async fn retry_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            self.acks.retry_wake.notified().await;
            let acked_before = self.acks.acked();
            let _gate = self.gate.write().await;
            // Events queued after the failed ones can still be waiting in librdkafka's queue
            // (queued later, they time out later): once Kafka is usable again they would go
            // out ahead of the failed ones being re-sent. Fail them too, so every one goes
            // out again in first-send order. Only after a failure of Kafka's making: the
            // purge's own failures come back through here, and purging again would never let
            // the re-sent events out.
            let kafka_failed = self.acks.kafka_failed.swap(false, Ordering::Relaxed);
            if kafka_failed && self.acks.window.events() > self.acks.failed_count() {
                let sink = self.sink.clone();
                let _ = tokio::task::spawn_blocking(move || sink.purge_queued()).await;
            }
            // Let the rest of a failing batch, and the purge's reports, arrive, so they are
            // re-sent in one ordered pass.
            tokio::time::sleep(backoff).await;
            self.resend_failed().await;
            let acked_since = self.acks.acked() > acked_before;
            backoff = if acked_since {
                Duration::from_millis(500)
            } else {
                (backoff * 2).min(Duration::from_secs(10))
            };
        }
    }

    async fn ship_all(&self, out: &mut Vec<ReadEvent>) {
        if out.is_empty() {
            return;
        }
        let _gate = self.gate.read().await;
        for re in out.drain(..) {
            self.ship(re).await;
        }
        self.acks.sent.notify_one();
    }

    /// Whether every event sent has been acknowledged.
    fn drained(&self) -> bool {
        self.acks.window.events() == 0
    }
}

/// Wakes the read loop on inotify events; `rescan` is set for events that change names.
struct Wakeup {
    notify: Notify,
    rescan: AtomicBool,
}

fn start_watcher(cfg: &Config, wake: Arc<Wakeup>) -> Option<notify::RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            match ev.kind {
                // The agent's own opens, reads and closes (of the directory during a rescan, of
                // files while reading) come back as access events: waking on them would make
                // every rescan trigger the next one, a busy loop.
                EventKind::Access(_) => return,
                EventKind::Modify(notify::event::ModifyKind::Data(_)) => {}
                _ => wake.rescan.store(true, Ordering::Relaxed),
            }
            wake.notify.notify_one();
        }
    };
    match notify::recommended_watcher(handler) {
        Ok(mut w) => match w.watch(&cfg.log_dir, RecursiveMode::NonRecursive) {
            Ok(()) => Some(w),
            Err(e) => {
                // The periodic rescan still finds everything, only later.
                tracing::warn!(dir = %cfg.log_dir.display(), error = %e, "cannot watch the log dir; polling only");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a file watcher; polling only");
            None
        }
    }
}

/// The read loop; returns after a final pass once `stop` turns true.
async fn read_loop(
    cfg: Arc<Config>,
    mut tailer: Tailer,
    shipper: Arc<Shipper>,
    mut stop: watch::Receiver<bool>,
) {
    let wake = Arc::new(Wakeup {
        notify: Notify::new(),
        rescan: AtomicBool::new(true),
    });
    let mut watcher = None;
    let mut last_scan: Option<Instant> = None;
    let mut out = Vec::new();
    loop {
        if watcher.is_none() && cfg.log_dir.is_dir() {
            watcher = start_watcher(&cfg, wake.clone());
        }
        let stopping = *stop.borrow();
        // Rescans also happen between reads: a file must be opened (and so kept readable)
        // before log4j can rename and later delete it, however far behind reading is.
        let mut maybe_rescan = |tailer: &mut Tailer, out: &mut Vec<ReadEvent>, force: bool| {
            let due = last_scan.is_none_or(|t| t.elapsed() >= cfg.rescan_interval);
            if force || due || wake.rescan.swap(false, Ordering::Relaxed) {
                tailer.rescan(out);
                last_scan = Some(Instant::now());
            }
        };
        maybe_rescan(&mut tailer, &mut out, stopping);
        shipper.ship_all(&mut out).await;
        let mut progressed = false;
        for id in tailer.streams() {
            let mut round = 0;
            loop {
                let n = tailer.read(id, PER_FILE_ROUND - round, &mut out);
                maybe_rescan(&mut tailer, &mut out, false);
                shipper.ship_all(&mut out).await;
                // The runtime has one thread (main.rs): sending does not wait while Kafka
                // keeps up, so without this a backlog would hold off /metrics and the probes.
                tokio::task::yield_now().await;
                round += n;
                if n == 0 {
                    break;
                }
                progressed = true;
                // When stopping, read every file to its current end.
                if round >= PER_FILE_ROUND && !stopping {
                    break;
                }
                if round >= PER_FILE_ROUND {
                    round = 0;
                }
            }
        }
        if stopping {
            tailer.flush_all(&mut out);
            shipper.ship_all(&mut out).await;
            return;
        }
        tailer.flush_idle(Instant::now(), &mut out);
        shipper.ship_all(&mut out).await;
        if !progressed {
            tokio::select! {
                _ = wake.notify.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// While the read loop goes on as usual: waits until neither the log dir nor what was read has
/// changed for `shutdown_quiet`, or until `until` (false then).
async fn wait_until_quiet(cfg: &Config, metrics: &Metrics, until: Instant) -> bool {
    const POLL: Duration = Duration::from_millis(50);
    let observe = || crate::quiet::snapshot(&cfg.log_dir, |n| cfg.included(n));
    let mut watch =
        crate::quiet::QuietWatch::new(Instant::now(), observe(), metrics.bytes_read.get());
    loop {
        let now = Instant::now();
        if watch.observe(now, observe(), metrics.bytes_read.get()) >= cfg.shutdown_quiet {
            return true;
        }
        if now >= until {
            return false;
        }
        tokio::time::sleep(POLL.min(until - now)).await;
    }
}

/// Serves Kafka's delivery reports for as long as the agent runs: every `REPORTS_BUSY` while
/// events are in flight, every `REPORTS_IDLE` otherwise. On the runtime's thread, the thread
/// that queues the messages (see the kafka module).
async fn serve_reports(sink: Arc<Sink<Acks>>, acks: Arc<Acks>) {
    loop {
        sink.serve_reports();
        if acks.window.events() > 0 {
            tokio::time::sleep(REPORTS_BUSY).await;
        } else {
            tokio::select! {
                _ = acks.sent.notified() => {}
                _ = tokio::time::sleep(REPORTS_IDLE) => {}
            }
        }
    }
}

fn save_checkpoint(cfg: &Config, ledger: &Mutex<Ledger>, metrics: &Metrics, last: &mut u64) {
    let snapshot = {
        let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
        if l.version == *last {
            return;
        }
        l.gc_retired();
        *last = l.version;
        l.snapshot()
    };
    match checkpoint::save(&cfg.state_file, &snapshot) {
        Ok(()) => {
            metrics.checkpoint_writes.inc();
        }
        Err(e) => {
            metrics.checkpoint_failures.inc();
            // Written again at the next interval; positions only trail, nothing is lost.
            *last = u64::MAX;
            tracing::error!(error = %e, "cannot save the checkpoint");
        }
    }
}

/// Everything the agent needs, built at start-up. Errors here are configuration errors.
pub struct Agent {
    cfg: Arc<Config>,
    metrics: Metrics,
    ledger: Arc<Mutex<Ledger>>,
    sink: Arc<Sink<Acks>>,
    acks: Arc<Acks>,
    rest_target: Option<Arc<RestTarget>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Sink(#[from] crate::kafka::SinkError),
}

impl Agent {
    pub fn new(cfg: Config, metrics: Metrics) -> Result<Self, StartError> {
        let legacy = cfg.log_dir.join(checkpoint::LEGACY_NAME);
        let state = match checkpoint::load_migrating(&cfg.state_file, &legacy) {
            Ok((s, how)) => {
                match how {
                    checkpoint::Migration::Nothing => {}
                    checkpoint::Migration::Moved => tracing::info!(
                        from = %legacy.display(), to = %cfg.state_file.display(),
                        "read positions moved out of the log volume; the old file is removed"),
                    checkpoint::Migration::Taken(why) => tracing::warn!(
                        from = %legacy.display(), to = %cfg.state_file.display(), error = %why,
                        "read positions taken from the log volume, not yet saved at the new place"),
                    checkpoint::Migration::Ignored => tracing::warn!(
                        ignored = %legacy.display(), using = %cfg.state_file.display(),
                        "a state file in the log volume is ignored: the agent's own is used"),
                }
                s
            }
            Err(e) => {
                // Starting over re-ships (duplicates), which beats not shipping at all.
                tracing::error!(error = %e, "cannot load the checkpoint; starting from the beginning of every file");
                checkpoint::StateFile::default()
            }
        };
        tracing::info!(files = state.files.len(), state_file = %cfg.state_file.display(), "checkpoint loaded");
        let ledger = Arc::new(Mutex::new(Ledger::restore(state)));
        let acks = Arc::new(Acks {
            ledger: ledger.clone(),
            window: InFlight::new(
                cfg.max_in_flight_events,
                cfg.max_in_flight_bytes,
                metrics.events_in_flight.clone(),
                metrics.bytes_in_flight.clone(),
            ),
            batch: Mutex::new(AckBatch::default()),
            metrics: metrics.clone(),
            retry: Mutex::new(BTreeMap::new()),
            retry_wake: Notify::new(),
            kafka_failed: AtomicBool::new(false),
            sent: Notify::new(),
        });
        let client = crate::kafka::client_config(&cfg.brokers, &cfg.kafka_properties);
        let sink = Sink::new(
            client,
            cfg.topic.clone(),
            cfg.pod.pod_name.clone(),
            metrics.clone(),
            acks.clone(),
        )?;
        Ok(Self {
            cfg: Arc::new(cfg),
            metrics,
            ledger,
            sink: Arc::new(sink),
            acks,
            rest_target: None,
        })
    }

    /// Offers every shipped record to `target`, which learns Flink's REST address from the
    /// JobManager's log when it is set to (see `flink_rest::target`).
    pub fn learning_rest_address(mut self, target: Arc<RestTarget>) -> Self {
        self.rest_target = target.learns().then_some(target);
        self
    }

    /// Runs until `shutdown` resolves, then drains within the shutdown timeout.
    pub async fn run(
        self,
        ready: Arc<AtomicBool>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let cfg = self.cfg.clone();
        let shipper = Arc::new(Shipper {
            cfg: cfg.clone(),
            sink: self.sink.clone(),
            acks: self.acks.clone(),
            next_send: AtomicU64::new(0),
            gate: RwLock::new(()),
            encoder: encode::Encoder::new(&cfg.pod),
            max_payload: cfg.max_payload_bytes(),
            ts_cache: Mutex::new(parse::TsCache::default()),
            rest_target: self.rest_target.clone(),
        });
        let retrier = tokio::spawn(shipper.clone().retry_loop());
        let reporter = tokio::spawn(serve_reports(self.sink.clone(), self.acks.clone()));
        let tailer = Tailer::new(cfg.clone(), self.ledger.clone(), self.metrics.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut reader = tokio::spawn(read_loop(cfg.clone(), tailer, shipper.clone(), stop_rx));

        let writer = {
            let cfg = cfg.clone();
            let ledger = self.ledger.clone();
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                let mut last = u64::MAX;
                let mut tick = tokio::time::interval(cfg.checkpoint_interval);
                loop {
                    tick.tick().await;
                    save_checkpoint(&cfg, &ledger, &metrics, &mut last);
                }
            })
        };
        let watchdog = {
            let shipper = shipper.clone();
            let stall = cfg.stall_timeout;
            tokio::spawn(async move {
                let mut last_replace = Instant::now();
                let mut last_ack = Instant::now();
                let mut acked = 0;
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let now_acked = shipper.acks.acked();
                    if now_acked != acked {
                        acked = now_acked;
                        last_ack = Instant::now();
                        let unix = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map(|d| d.as_secs_f64())
                            .unwrap_or(0.0);
                        shipper.acks.metrics.last_ack_timestamp.set(unix);
                    }
                    let since_ack = last_ack.elapsed();
                    if !shipper.drained() && since_ack > stall && last_replace.elapsed() > stall {
                        shipper.replace_producer().await;
                        last_replace = Instant::now();
                    }
                }
            })
        };
        ready.store(true, Ordering::Relaxed);

        tokio::pin!(shutdown);
        tokio::select! {
            _ = &mut shutdown => {}
            res = &mut reader => {
                // The read loop only returns when told to; a panic there must not end the
                // agent silently, but exiting would kill the TaskManager: say it loudly.
                tracing::error!(?res, "the read loop ended unexpectedly; waiting for shutdown");
                shutdown.await;
            }
        }
        let signalled = Instant::now();
        let deadline = signalled + cfg.shutdown_timeout;
        tracing::info!(quiet = ?cfg.shutdown_quiet, timeout = ?cfg.shutdown_timeout,
            "shutting down: tailing until the log files are quiet, then shipping and waiting for Kafka");
        let quiet_by = deadline - crate::quiet::drain_reserve(cfg.shutdown_timeout);
        if wait_until_quiet(&cfg, &self.metrics, quiet_by).await {
            tracing::info!(after = ?signalled.elapsed(), "log files quiet; reading them to their end");
        } else {
            tracing::warn!(after = ?signalled.elapsed(),
                "log files still changing; reading them to their end and shipping within the timeout");
        }
        let _ = stop_tx.send(true);
        if !reader.is_finished()
            && tokio::time::timeout_at(deadline.into(), &mut reader)
                .await
                .is_err()
        {
            tracing::warn!("the final read pass did not finish in time");
            reader.abort();
        }
        while !shipper.drained() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        writer.abort();
        watchdog.abort();
        retrier.abort();
        reporter.abort();
        let in_flight = self.metrics.events_in_flight.get();
        if in_flight > 0 {
            tracing::warn!(
                in_flight,
                "shutdown timeout: events not acknowledged; they are sent again after a restart"
            );
        }
        let mut last = u64::MAX;
        save_checkpoint(&cfg, &self.ledger, &self.metrics, &mut last);
        tracing::info!("checkpoint saved; exiting");
    }
}
