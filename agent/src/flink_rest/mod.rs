//! Flink's own metrics, read from the Flink REST API and served in Prometheus text format under
//! the names Flink's `PrometheusReporter` uses (see [`mapping`] for the mapping).
//!
//! # Poll on scrape, with a short shared snapshot
//! Metrics are read from the REST API when Prometheus scrapes, not by a background poller:
//! * Prometheus already sets the cadence (scrape intervals are typically 15-60 s, at or above the
//!   10 s at which the JobManager refreshes the metrics it serves, `metrics.fetcher.update-interval`),
//!   so polling in the background could only add load, never fresher values;
//! * nothing runs when nobody scrapes, which matters with one agent per TaskManager pod all
//!   talking to the same JobManager;
//! * `flink_up` says what the REST API answered just now, not up to an interval ago.
//!
//! The cost is that a scrape waits for the REST calls, so a whole refresh is bounded by
//! [`FlinkRestConfig::timeout`] (each request gets the same deadline; what answered in time is
//! served, what did not is counted in `flink_scrape_errors`), and at most 8 requests are in flight.
//! The series of a full refresh are reused by scrapes within [`FlinkMetrics::with_min_interval`]
//! (default 5 s, half the JobManager's refresh interval: the values could not have changed much)
//! and concurrent scrapes share one refresh, so several scrapers (an HA Prometheus pair, someone
//! with curl) never multiply the load on the JobManager. Such a scrape still asks `GET /overview`,
//! so `flink_up` is never stale and a Flink that went away loses its series at once.
//!
//! Which Flink is read, and the check that it is the agent's own, are in [`target`].
//!
//! The agent's own series: `flink_up` (1 when `GET /overview` answered this scrape, or with a
//! cluster id to check, `GET /jobmanager/config` answered with this agent's cluster),
//! `flink_down_reason{reason}` while it is 0 (`unreachable`, `not_flink`, `other_cluster`,
//! `no_cluster_id`),
//! `flink_scrape_duration_seconds` (this scrape's time on the REST API), `flink_scrape_errors`
//! (REST requests of the refresh served that failed or timed out) and
//! `flink_job_state{job_id,job_name,state}`.

pub mod client;
pub mod mapping;
pub mod target;
mod worker;

use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use std::collections::HashMap;

use client::{encode, get_batches, RestSource};
use mapping::{
    aggregated_values, numeric_values, AggregatedValue, Exposition, JobDetail, JobOverview,
    JobVertex, JobsOverview, MetricId, MetricValue, Scope, SubtaskInfo, TaskManagerInfo,
    TaskManagers, VertexDetail,
};

/// Errors of one REST request. They never leave this module as a failure of `render`: they turn
/// into `flink_up 0` or `flink_scrape_errors`, and a log line.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("Flink REST URL {0:?} is not supported: use http://host:port")]
    UnsupportedUrl(String),
    #[error("GET {0}: {1}")]
    Http(String, String),
    #[error("GET {0}: HTTP {1}: {2}")]
    Status(String, u16, String),
    #[error("GET {0}: unexpected JSON: {1}")]
    Json(String, serde_json::Error),
    #[error("GET {0}: no answer within the scrape timeout")]
    Timeout(String),
    #[error("HTTP client closed")]
    Closed,
    #[error("Flink REST requests: {0}")]
    Thread(String),
    #[error("not this agent's Flink: {0}")]
    NotOurs(target::NotOurs),
}

impl RestError {
    /// The `reason` label of `flink_down_reason`.
    fn down_reason(&self) -> &'static str {
        match self {
            RestError::NotOurs(target::NotOurs::OtherCluster { .. }) => "other_cluster",
            RestError::NotOurs(target::NotOurs::NoClusterId { .. }) => "no_cluster_id",
            RestError::Json(..) | RestError::Status(..) => "not_flink",
            _ => "unreachable",
        }
    }
}

/// Where Flink's REST API is and which part of the cluster this agent reports.
#[derive(Debug, Clone)]
pub struct FlinkRestConfig {
    /// e.g. `http://localhost:8081` (see [`default_rest_url`]).
    pub base_url: String,
    /// `jobmanager`: the JobManager, its jobs and their vertices. `taskmanager`: only the
    /// TaskManager `taskmanager_id` (so one scrape target per pod and no series twice).
    /// Anything else (e.g. not set): all of it, for a local or standalone cluster.
    pub component: Option<String>,
    /// The TaskManager's resource id: the pod name in native Kubernetes mode.
    pub taskmanager_id: Option<String>,
    /// Upper bound of one refresh (all REST requests of a scrape).
    pub timeout: Duration,
    /// The agent's own cluster (`--cluster-id`): a Flink whose `kubernetes.cluster-id` differs
    /// is not read. `None` (a local or standalone Flink): not checked.
    pub cluster_id: Option<String>,
    /// Follow the address the JobManager's log announces (see [`target`]).
    pub learn_from_log: bool,
    /// Task and operator metrics per subtask, or aggregated per vertex.
    pub task_metrics: TaskMetrics,
}

/// How task and operator metrics are exported (`--flink-task-metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TaskMetrics {
    /// One series per subtask with the reporter's labels, each exported by the agent of the
    /// TaskManager the subtask runs on: a drop-in for Flink's PrometheusReporter.
    #[default]
    PerSubtask,
    /// One series per job vertex, aggregated by Flink over its subtasks, exported by the
    /// JobManager pod's agent: fewer series, no per-subtask or per-TaskManager view.
    PerVertex,
}

/// The REST URL an agent uses when `--flink-rest` is not given: in a JobManager pod Flink's REST
/// server is in the same network namespace; in a TaskManager pod it is the JobManager's REST
/// service that Flink's native Kubernetes integration creates, `<cluster-id>-rest.<namespace>`
/// (port 8081, `rest.port`'s default). `None` when it cannot be derived (a TaskManager without
/// cluster id or namespace): the caller falls back to `http://localhost:8081`.
pub fn default_rest_url(
    component: Option<&str>,
    cluster_id: Option<&str>,
    namespace: Option<&str>,
) -> Option<String> {
    match component {
        Some("taskmanager") => match (cluster_id, namespace) {
            (Some(c), Some(ns)) if !c.is_empty() && !ns.is_empty() => {
                Some(format!("http://{c}-rest.{ns}:8081"))
            }
            _ => None,
        },
        _ => Some("http://localhost:8081".to_string()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    JobManager,
    TaskManager(Option<String>),
    All,
}

impl Mode {
    fn of(cfg: &FlinkRestConfig) -> Self {
        match cfg.component.as_deref() {
            Some("jobmanager") => Mode::JobManager,
            Some("taskmanager") => Mode::TaskManager(cfg.taskmanager_id.clone()),
            _ => Mode::All,
        }
    }
}

/// The Flink series of the last full refresh, reused while younger than `min_interval`, and
/// dropped then: scrapes are usually further apart, and an idle sidecar should not hold them.
struct Snapshot {
    at: Instant,
    series: Bytes,
    errors: u64,
}

/// Reads Flink's metrics from its REST API and renders them for Prometheus.
pub struct FlinkMetrics {
    cfg: FlinkRestConfig,
    target: Arc<target::RestTarget>,
    mode: Mode,
    min_interval: Duration,
    snapshot: Arc<Mutex<Option<Snapshot>>>,
    /// For logging only the transitions of `flink_up`, not every failed scrape.
    was_up: AtomicBool,
}

impl FlinkMetrics {
    pub fn new(cfg: FlinkRestConfig) -> Self {
        let mode = Mode::of(&cfg);
        if mode == Mode::TaskManager(None) {
            tracing::warn!(
                "component is taskmanager but no TaskManager id is known: only flink_up is reported"
            );
        }
        Self {
            mode,
            target: Arc::new(target::RestTarget::new(
                cfg.base_url.clone(),
                cfg.learn_from_log,
            )),
            cfg,
            min_interval: Duration::from_secs(5),
            snapshot: Arc::new(Mutex::new(None)),
            was_up: AtomicBool::new(true),
        }
    }

    /// How long the series of a full refresh are reused by later scrapes (see the module docs).
    /// Zero: every scrape reads all of the REST API.
    /// Where the REST API is read; the pipeline offers it the JobManager's log records.
    pub fn target(&self) -> Arc<target::RestTarget> {
        Arc::clone(&self.target)
    }

    pub fn with_min_interval(mut self, min_interval: Duration) -> Self {
        self.min_interval = min_interval;
        self
    }

    /// Prometheus text format 0.0.4 of Flink's metrics plus `flink_up`,
    /// `flink_scrape_duration_seconds` and `flink_scrape_errors`, as chunks of the answer: the
    /// series are shared with the snapshot, not copied (a copy per scrape was the largest
    /// allocation left on the agent's thread). Never fails; takes at most about the configured
    /// timeout.
    pub async fn render(&self) -> Vec<Bytes> {
        // One scrape at a time: concurrent scrapes wait and reuse this one's refresh.
        let mut snapshot = self.snapshot.lock().await;
        let started = Instant::now();
        let deadline = started + self.cfg.timeout;
        let fresh = snapshot
            .as_ref()
            .is_some_and(|s| s.at.elapsed() < self.min_interval);
        let url = self.target.url();
        let (base_url, timeout) = (url.as_str(), self.cfg.timeout);
        let expected = self.cfg.cluster_id.clone();
        let (up, first_error) = if fresh {
            // Only ask whether Flink is still there: a Flink that went away must turn into
            // flink_up 0 and no series at once, not after the snapshot expired.
            let probe = worker::on_own_thread(base_url, timeout, deadline, move |src| async move {
                collect_probe(&src, deadline.into(), expected.as_deref()).await
            });
            match probe.await.and_then(|r| r) {
                Ok(()) => (true, None),
                Err(e) => (false, Some(e)),
            }
        } else {
            let mode = self.mode.clone();
            let task_metrics = self.cfg.task_metrics;
            let refresh =
                worker::on_own_thread(base_url, timeout, deadline, move |src| async move {
                    let collected = collect(
                        &src,
                        &mode,
                        task_metrics,
                        deadline.into(),
                        expected.as_deref(),
                    )
                    .await;
                    tracing::debug!(
                        samples = collected.expo.len(),
                        errors = collected.errors,
                        "Flink metrics refreshed"
                    );
                    // Rendered, and the families dropped, on that thread too: they are the
                    // largest short-lived part of a refresh.
                    let mut series = String::new();
                    collected.expo.render(&mut series);
                    let snapshot = Snapshot {
                        at: Instant::now(),
                        series: Bytes::from(series),
                        errors: collected.errors,
                    };
                    (collected.up, collected.first_error, snapshot)
                });
            match refresh.await {
                Ok((up, first_error, refreshed)) => {
                    self.drop_when_stale(refreshed.at);
                    *snapshot = Some(refreshed);
                    (up, first_error)
                }
                Err(e) => (false, Some(e)),
            }
        };
        let elapsed = started.elapsed();
        self.log_transition(&url, up, first_error.as_ref());
        if !up {
            // Never serve the series of a Flink that does not answer.
            *snapshot = None;
        }
        let errors = match (up, snapshot.as_ref()) {
            (true, Some(s)) => s.errors,
            _ => 1,
        };
        let mut chunks = Vec::with_capacity(2);
        if let Some(s) = snapshot.as_ref() {
            chunks.push(s.series.clone());
        }
        let mut own = Exposition::new();
        own.add_gauge(
            "flink_up",
            "1 if this agent's Flink REST API answered this scrape, else 0",
            Vec::new(),
            if up { 1.0 } else { 0.0 },
        );
        if !up {
            let reason = first_error
                .as_ref()
                .map_or("unreachable", RestError::down_reason);
            own.add_gauge(
                "flink_down_reason",
                "Why flink_up is 0: unreachable, not_flink, other_cluster or no_cluster_id",
                vec![("reason", reason.to_string())],
                1.0,
            );
        }
        own.add_gauge(
            "flink_scrape_duration_seconds",
            "Time this scrape spent reading the Flink REST API",
            Vec::new(),
            elapsed.as_secs_f64(),
        );
        own.add_gauge(
            "flink_scrape_errors",
            "Flink REST requests that failed or timed out in the refresh served",
            Vec::new(),
            errors as f64,
        );
        let mut text = String::new();
        own.render(&mut text);
        chunks.push(Bytes::from(text));
        chunks
    }

    /// Drops the snapshot taken `at` once it is too old to be served.
    fn drop_when_stale(&self, at: Instant) {
        let (slot, keep) = (Arc::clone(&self.snapshot), self.min_interval);
        tokio::spawn(async move {
            tokio::time::sleep(keep).await;
            let mut snapshot = slot.lock().await;
            if snapshot.as_ref().is_some_and(|s| s.at == at) {
                *snapshot = None;
            }
        });
    }

    fn log_transition(&self, url: &str, up: bool, error: Option<&RestError>) {
        let was_up = self.was_up.swap(up, Ordering::Relaxed);
        match (was_up, up) {
            (true, false) => tracing::warn!(
                url,
                reason = error.map_or("unreachable", RestError::down_reason),
                error = %error.map_or_else(|| "unknown".to_string(), ToString::to_string),
                "Flink REST API not usable: flink_up 0"
            ),
            (false, true) => tracing::info!(url, "Flink REST API reachable again"),
            _ => {}
        }
    }
}

/// What one refresh found.
struct Collected {
    up: bool,
    expo: Exposition,
    errors: u64,
    first_error: Option<RestError>,
}

enum Part {
    Scope(Scope, Vec<(String, f64)>),
    JobState(JobOverview),
}

/// One refresh: the requests share a deadline, failures are counted and skipped.
struct Ctx<'a, S> {
    src: &'a S,
    deadline: tokio::time::Instant,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<RestError>>,
}

impl<S: RestSource> Ctx<'_, S> {
    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, RestError> {
        let body = tokio::time::timeout_at(self.deadline, self.src.get(path))
            .await
            .map_err(|_| RestError::Timeout(path.to_string()))??;
        serde_json::from_slice(&body).map_err(|e| RestError::Json(path.to_string(), e))
    }

    /// Like `get`, but a failure is counted, logged at debug level and becomes `None`.
    async fn try_get<T: DeserializeOwned>(&self, path: &str) -> Option<T> {
        match self.get(path).await {
            Ok(v) => Some(v),
            Err(e) => {
                self.count_error(e);
                None
            }
        }
    }

    fn count_error(&self, e: RestError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(error = %e, "Flink REST request failed");
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(e);
        }
    }

    /// The metric ids under `path`, then their values (`?get=`, batched), or with `agg` the
    /// aggregate chosen per metric. An empty id list (the first request after Flink started, or a
    /// job without metrics) gives nothing, which is not an error.
    async fn values(&self, path: &str, aggregated: bool) -> Vec<(String, f64)> {
        match self.ids(path).await {
            Some(ids) => self.values_of(path, &get_batches(&ids), aggregated).await,
            None => Vec::new(),
        }
    }

    async fn ids(&self, path: &str) -> Option<Vec<String>> {
        let ids = self.try_get::<Vec<MetricId>>(path).await?;
        Some(ids.into_iter().map(|m| m.id).collect())
    }

    /// The values of the ids in `batches` (see [`get_batches`]) under `path`.
    async fn values_of(
        &self,
        path: &str,
        batches: &[String],
        aggregated: bool,
    ) -> Vec<(String, f64)> {
        let batches = batches.iter().map(|batch| async move {
            if aggregated {
                let url = format!("{path}?get={batch}&agg=min,max,sum");
                self.try_get::<Vec<AggregatedValue>>(&url)
                    .await
                    .map(|v| aggregated_values(&v))
            } else {
                let url = format!("{path}?get={batch}");
                self.try_get::<Vec<MetricValue>>(&url)
                    .await
                    .map(|v| numeric_values(&v))
            }
        });
        join_all(batches)
            .await
            .into_iter()
            .flatten()
            .flatten()
            .collect()
    }

    async fn jobmanager(&self, host: &str) -> Vec<Part> {
        let values = self.values("/jobmanager/metrics", false).await;
        let host = host.to_string();
        vec![Part::Scope(Scope::JobManager { host }, values)]
    }

    /// The running jobs, each with its vertices.
    async fn running_jobs(&self) -> Vec<(JobOverview, Vec<JobVertex>)> {
        let Some(overview) = self.try_get::<JobsOverview>("/jobs/overview").await else {
            return Vec::new();
        };
        let per_job = overview.jobs.into_iter().map(|job| async move {
            if job.is_terminal() {
                return (job, None);
            }
            let path = format!("/jobs/{}", encode(&job.jid, false));
            let detail = self.try_get::<JobDetail>(&path).await;
            // Vertex ids repeat across jobs (they derive from the job graph), so a vertex is
            // always addressed and labelled with its job id too.
            let vertices = detail.map(|d| {
                d.vertices
                    .into_iter()
                    .map(|v| JobVertex {
                        job_id: job.jid.clone(),
                        job_name: job.name.clone(),
                        task_id: v.id,
                        task_name: v.name,
                    })
                    .collect()
            });
            (job, vertices)
        });
        join_all(per_job)
            .await
            .into_iter()
            .map(|(job, vertices)| (job, vertices.unwrap_or_default()))
            .collect()
    }

    /// Job scope: every job's state, and for a running job its metrics, its operators'
    /// JobManager side (source enumerators), and with `per_vertex` its vertices aggregated.
    async fn jobs(&self, host: &str, per_vertex: bool) -> Vec<Part> {
        let jobs = self.running_jobs().await;
        let per_job = jobs.into_iter().map(|(job, vertices)| async move {
            let mut parts = vec![Part::JobState(job.clone())];
            if job.is_terminal() {
                return parts;
            }
            let metrics_path = format!("/jobs/{}/metrics", encode(&job.jid, false));
            let scope = Scope::Job {
                host: host.to_string(),
                job_id: job.jid.clone(),
                job_name: job.name.clone(),
            };
            parts.push(Part::Scope(scope, self.values(&metrics_path, false).await));
            let per_vertex = vertices.into_iter().map(|vertex| async move {
                let path = vertex_path(&vertex);
                let coordinators = format!("{path}/jm-operator-metrics");
                let mut parts = Vec::new();
                // Only Flink 1.19 and later have this endpoint: a 404 is not a failure.
                if let Some(ids) = self.ids_if_served(&coordinators).await {
                    let values = self
                        .values_of(&coordinators, &get_batches(&ids), false)
                        .await;
                    if !values.is_empty() {
                        let host = host.to_string();
                        let scope = Scope::JobOperator {
                            host,
                            vertex: vertex.clone(),
                        };
                        parts.push(Part::Scope(scope, values));
                    }
                }
                if per_vertex {
                    let values = self.values(&format!("{path}/subtasks/metrics"), true).await;
                    parts.push(Part::Scope(Scope::Vertex(vertex), values));
                }
                parts
            });
            parts.extend(join_all(per_vertex).await.into_iter().flatten());
            parts
        });
        join_all(per_job).await.into_iter().flatten().collect()
    }

    /// Like [`Ctx::ids`], but an endpoint this Flink does not have (404) is `None` without
    /// counting as an error.
    async fn ids_if_served(&self, path: &str) -> Option<Vec<String>> {
        match self.get::<Vec<MetricId>>(path).await {
            Ok(ids) => Some(ids.into_iter().map(|m| m.id).collect()),
            Err(RestError::Status(_, 404, _)) => None,
            Err(e) => {
                self.count_error(e);
                None
            }
        }
    }

    /// The subtasks deployed on TaskManager `only` (all TaskManagers: `None`), per subtask with
    /// the labels of where it runs now, so a subtask's series move with it after a failover.
    async fn subtasks(&self, only: Option<&str>, hosts: &HashMap<String, String>) -> Vec<Part> {
        let jobs = self.running_jobs().await;
        let vertices = jobs.into_iter().flat_map(|(_, vertices)| vertices);
        let per_vertex = vertices.map(|vertex| self.vertex_subtasks(vertex, only, hosts));
        join_all(per_vertex).await.into_iter().flatten().collect()
    }

    async fn vertex_subtasks(
        &self,
        vertex: JobVertex,
        only: Option<&str>,
        hosts: &HashMap<String, String>,
    ) -> Vec<Part> {
        let path = vertex_path(&vertex);
        let Some(detail) = self.try_get::<VertexDetail>(&path).await else {
            return Vec::new();
        };
        let here: Vec<SubtaskInfo> = detail
            .subtasks
            .into_iter()
            .filter(|s| s.is_deployed() && only.is_none_or(|id| s.taskmanager_id == id))
            .collect();
        if here.is_empty() {
            return Vec::new();
        }
        // The vertex's ids (all of its subtasks'), asked of each subtask here: one list for the
        // vertex instead of one per subtask; a subtask leaves out the ids it does not have.
        let Some(ids) = self.ids(&format!("{path}/subtasks/metrics")).await else {
            return Vec::new();
        };
        let batches = get_batches(&ids);
        let per_subtask = here.into_iter().map(|st| {
            let (vertex, batches, path) = (&vertex, &batches, &path);
            async move {
                let subtask_path = format!("{path}/subtasks/{}/metrics", st.subtask);
                let values = self.values_of(&subtask_path, batches, false).await;
                let scope = Scope::Subtask {
                    vertex: vertex.clone(),
                    subtask_index: st.subtask,
                    attempt: st.attempt,
                    host: hosts.get(&st.taskmanager_id).cloned().unwrap_or_default(),
                    tm_id: st.taskmanager_id,
                };
                Part::Scope(scope, values)
            }
        });
        join_all(per_subtask).await
    }

    /// TaskManager scope of TaskManager `only` (all: `None`), and each one's host by id.
    async fn taskmanagers(&self, only: Option<&str>) -> (Vec<Part>, HashMap<String, String>) {
        let tms = match only {
            Some(id) => {
                let path = format!("/taskmanagers/{}", encode(id, false));
                self.try_get::<TaskManagerInfo>(&path)
                    .await
                    .into_iter()
                    .collect::<Vec<_>>()
            }
            None => self
                .try_get::<TaskManagers>("/taskmanagers")
                .await
                .map(|t| t.taskmanagers)
                .unwrap_or_default(),
        };
        let hosts = tms.iter().map(|tm| (tm.id.clone(), tm.host())).collect();
        let per_tm = tms.into_iter().map(|tm| async move {
            let path = format!("/taskmanagers/{}/metrics", encode(&tm.id, false));
            let values = self.values(&path, false).await;
            Part::Scope(
                Scope::TaskManager {
                    host: tm.host(),
                    tm_id: tm.id,
                },
                values,
            )
        });
        (join_all(per_tm).await, hosts)
    }
}

fn vertex_path(vertex: &JobVertex) -> String {
    format!(
        "/jobs/{}/vertices/{}",
        encode(&vertex.job_id, false),
        encode(&vertex.task_id, false)
    )
}

/// Reads `/jobmanager/config`: with `expected`, checks it is this agent's cluster; in any case
/// the JobManager's host for the reporter's `host` label.
async fn read_config<S: RestSource>(
    src: &S,
    deadline: tokio::time::Instant,
    expected: Option<&str>,
) -> Result<String, RestError> {
    let path = "/jobmanager/config";
    let body = tokio::time::timeout_at(deadline, src.get(path))
        .await
        .map_err(|_| RestError::Timeout(path.to_string()))??;
    let config: Vec<target::ConfigEntry> =
        serde_json::from_slice(&body).map_err(|e| RestError::Json(path.to_string(), e))?;
    if let Some(expected) = expected {
        target::check_cluster(&config, expected).map_err(RestError::NotOurs)?;
    }
    Ok(target::jobmanager_host(&config))
}

/// Is the REST API there, and is it this agent's Flink? Without a cluster id to check,
/// `GET /overview` (cheap, and in every Flink version); with one, `GET /jobmanager/config` and
/// its `kubernetes.cluster-id`.
async fn collect_probe<S: RestSource>(
    src: &S,
    deadline: tokio::time::Instant,
    expected: Option<&str>,
) -> Result<(), RestError> {
    let path = if expected.is_some() {
        "/jobmanager/config"
    } else {
        "/overview"
    };
    let body = tokio::time::timeout_at(deadline, src.get(path))
        .await
        .map_err(|_| RestError::Timeout(path.to_string()))??;
    let Some(expected) = expected else {
        // Only whether it is JSON: a proxy's HTML error page is not a Flink.
        return serde_json::from_slice::<serde::de::IgnoredAny>(&body)
            .map(|_| ())
            .map_err(|e| RestError::Json(path.to_string(), e));
    };
    let config: Vec<target::ConfigEntry> =
        serde_json::from_slice(&body).map_err(|e| RestError::Json(path.to_string(), e))?;
    target::check_cluster(&config, expected).map_err(RestError::NotOurs)
}

async fn collect<S: RestSource>(
    src: &S,
    mode: &Mode,
    task_metrics: TaskMetrics,
    deadline: tokio::time::Instant,
    expected: Option<&str>,
) -> Collected {
    let ctx = Ctx {
        src,
        deadline,
        errors: AtomicU64::new(0),
        first_error: std::sync::Mutex::new(None),
    };
    let config = match read_config(src, deadline, expected).await {
        // A Flink that is not checked against a cluster id only has to be a Flink: one whose
        // configuration cannot be read is still read, without the JobManager's host.
        Err(e) if expected.is_none() && !matches!(e, RestError::NotOurs(_)) => {
            tracing::debug!(error = %e, "no JobManager configuration: host label left empty");
            collect_probe(src, deadline, None)
                .await
                .map(|()| String::new())
        }
        other => other,
    };
    let host = match config {
        Ok(host) => host,
        Err(e) => {
            return Collected {
                up: false,
                expo: Exposition::new(),
                errors: 1,
                first_error: Some(e),
            }
        }
    };
    let per_vertex = task_metrics == TaskMetrics::PerVertex;
    let parts: Vec<Part> = match mode {
        Mode::JobManager => {
            let (jm, jobs) =
                futures_util::join!(ctx.jobmanager(&host), ctx.jobs(&host, per_vertex));
            jm.into_iter().chain(jobs).collect()
        }
        Mode::TaskManager(Some(id)) => {
            let (tm, hosts) = ctx.taskmanagers(Some(id)).await;
            let subtasks = match per_vertex {
                // Only where the TaskManager is known: its host labels the subtasks.
                false if !hosts.is_empty() => ctx.subtasks(Some(id), &hosts).await,
                _ => Vec::new(),
            };
            tm.into_iter().chain(subtasks).collect()
        }
        Mode::TaskManager(None) => Vec::new(),
        Mode::All => {
            let (jm, jobs, (tms, hosts)) = futures_util::join!(
                ctx.jobmanager(&host),
                ctx.jobs(&host, per_vertex),
                ctx.taskmanagers(None)
            );
            let subtasks = match per_vertex {
                false => ctx.subtasks(None, &hosts).await,
                true => Vec::new(),
            };
            jm.into_iter()
                .chain(jobs)
                .chain(tms)
                .chain(subtasks)
                .collect()
        }
    };
    let mut expo = Exposition::new();
    for part in parts {
        match part {
            Part::Scope(scope, values) => expo.add_scope(&scope, &values),
            Part::JobState(job) => expo.add_gauge(
                "flink_job_state",
                "1 for the job's current state (from /jobs/overview)",
                vec![
                    ("job_id", mapping::sanitize_label_value(&job.jid)),
                    ("job_name", mapping::sanitize_label_value(&job.name)),
                    ("state", job.state.clone()),
                ],
                1.0,
            ),
        }
    }
    let first_error = ctx.first_error.lock().ok().and_then(|mut f| f.take());
    Collected {
        up: true,
        expo,
        errors: ctx.errors.load(Ordering::Relaxed),
        first_error,
    }
}

#[cfg(test)]
mod tests;
