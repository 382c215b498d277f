//! Command line and environment configuration, validated once at start-up.
//!
//! Every flag is also readable from `FLINK_AGENT_<FLAG>` so the webhook can configure the sidecar
//! through env vars only (Downward API, secretKeyRef). A bad value is a start-up error that names
//! the flag and the value; nothing in here is consulted again after start-up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

/// Raw command line, as clap parses it.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "flink-agent",
    version = concat!(env!("CARGO_PKG_VERSION"), " (revision ", env!("FLINK_INJECTOR_REVISION"), ")"),
    about = "Ships Flink's log files to Kafka with no loss and serves Flink's metrics to Prometheus"
)]
pub struct Cli {
    /// Directory holding Flink's log files (the emptyDir shared with flink-main-container).
    #[arg(long, env = "FLINK_AGENT_LOG_DIR", default_value = "/opt/flink/log")]
    pub log_dir: PathBuf,

    /// File name globs to tail (repeatable; comma-separated in the env var).
    #[arg(
        long,
        env = "FLINK_AGENT_INCLUDE",
        value_delimiter = ',',
        default_values_t = ["*.log".to_string(), "*.out".to_string(), "*.err".to_string()]
    )]
    pub include: Vec<String>,

    /// Kafka bootstrap servers (host:port,host:port).
    #[arg(long, env = "FLINK_AGENT_BROKERS")]
    pub brokers: Option<String>,

    /// Kafka topic the log events go to.
    #[arg(long, env = "FLINK_AGENT_TOPIC")]
    pub topic: Option<String>,

    /// A librdkafka property KEY=VALUE (repeatable; newline-separated in the env var).
    #[arg(
        long = "kafka-property",
        env = "FLINK_AGENT_KAFKA_PROPERTY",
        value_delimiter = '\n'
    )]
    pub kafka_property: Vec<String>,

    /// Directory whose files are librdkafka properties (file name = key, content = value),
    /// e.g. a mounted Kafka Secret with SASL credentials.
    #[arg(long, env = "FLINK_AGENT_KAFKA_SECRET_DIR")]
    pub kafka_secret_dir: Option<PathBuf>,

    /// Where read positions are persisted (default: `<log-dir>/.flink-agent-checkpoints.json`).
    #[arg(long, env = "FLINK_AGENT_STATE_FILE")]
    pub state_file: Option<PathBuf>,

    /// Address of the /metrics, /healthz and /readyz listener.
    #[arg(
        long,
        env = "FLINK_AGENT_METRICS_LISTEN",
        default_value = "0.0.0.0:9260"
    )]
    pub metrics_listen: String,

    /// Base URL of Flink's REST API. Default: http://localhost:8081 in a JobManager pod, and
    /// the JobManager's REST Service http://<cluster-id>-rest.<namespace>:8081 in a TaskManager pod.
    #[arg(long, env = "FLINK_AGENT_FLINK_REST")]
    pub flink_rest: Option<String>,

    /// Flink's task and operator metrics: per-subtask (the reporter's series, each exported by
    /// the agent of the TaskManager the subtask runs on) or per-vertex (aggregated over the
    /// subtasks, exported by the JobManager pod's agent: fewer series).
    #[arg(
        long,
        env = "FLINK_AGENT_FLINK_TASK_METRICS",
        value_enum,
        default_value = "per-subtask"
    )]
    pub flink_task_metrics: crate::flink_rest::TaskMetrics,

    /// When set, /healthz and /readyz answer 200 only to requests whose X-Flink-Agent-Probe
    /// header carries it: in a hostNetwork pod another pod's agent on the node must not pass
    /// this one's probes. The webhook sets it for such pods.
    #[arg(long, env = "FLINK_AGENT_PROBE_TOKEN")]
    pub probe_token: Option<String>,

    /// How long SIGTERM waits for Kafka to acknowledge what is in flight (e.g. 20s, 1500ms).
    #[arg(long, env = "FLINK_AGENT_SHUTDOWN_TIMEOUT", default_value = "20s")]
    pub shutdown_timeout: String,

    /// After SIGTERM, keep tailing until the log files have been quiet this long (Flink writes
    /// its shutdown after the signal), within --shutdown-timeout; 0 reads once and stops.
    #[arg(long, env = "FLINK_AGENT_SHUTDOWN_QUIET", default_value = "2s")]
    pub shutdown_quiet: String,

    /// At most this many files open at once (a job that fills the log dir with files must not
    /// exhaust the agent's descriptors or memory). Over it, a renamed or deleted file still being
    /// read is let go first (its unread bytes are counted as lost); otherwise new files wait.
    #[arg(long, env = "FLINK_AGENT_MAX_FILES", default_value_t = 256)]
    pub max_files: usize,

    #[arg(long, env = "FLINK_AGENT_POD_NAME", default_value = "")]
    pub pod_name: String,
    #[arg(long, env = "FLINK_AGENT_NAMESPACE", default_value = "")]
    pub namespace: String,
    #[arg(long, env = "FLINK_AGENT_NODE_NAME", default_value = "")]
    pub node_name: String,
    #[arg(long, env = "FLINK_AGENT_POD_IP", default_value = "")]
    pub pod_ip: String,
    #[arg(
        long,
        env = "FLINK_AGENT_CONTAINER",
        default_value = "flink-main-container"
    )]
    pub container: String,
    #[arg(long, env = "FLINK_AGENT_CLUSTER_ID", default_value = "")]
    pub cluster_id: String,
    #[arg(long, env = "FLINK_AGENT_COMPONENT", default_value = "")]
    pub component: String,

    /// Regex a line must match at its start to begin a new event; other lines continue the
    /// previous one (stack traces, Caused by, the Preconfiguration block).
    #[arg(
        long,
        env = "FLINK_AGENT_MULTILINE_START",
        default_value = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"
    )]
    pub multiline_start: String,

    /// Most lines in one event.
    #[arg(long, env = "FLINK_AGENT_MULTILINE_MAX_LINES", default_value_t = 500)]
    pub multiline_max_lines: usize,

    /// Most bytes in one event.
    #[arg(long, env = "FLINK_AGENT_MULTILINE_MAX_BYTES", default_value_t = 512 * 1024)]
    pub multiline_max_bytes: usize,

    /// An event with no new line for this long is closed and shipped (e.g. 1s, 500ms).
    #[arg(long, env = "FLINK_AGENT_MULTILINE_FLUSH", default_value = "1s")]
    pub multiline_flush: String,

    /// Longer lines are split into pieces of this many bytes.
    #[arg(long, env = "FLINK_AGENT_MAX_LINE_BYTES", default_value_t = 256 * 1024)]
    pub max_line_bytes: usize,

    /// Most events sent to Kafka and not yet acknowledged.
    #[arg(
        long,
        env = "FLINK_AGENT_MAX_IN_FLIGHT_EVENTS",
        default_value_t = 20_000
    )]
    pub max_in_flight_events: usize,

    /// Most bytes sent to Kafka and not yet acknowledged.
    #[arg(long, env = "FLINK_AGENT_MAX_IN_FLIGHT_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_in_flight_bytes: usize,

    /// With events in flight and no acknowledgement for this long, the Kafka producer is
    /// recreated and the events re-sent (e.g. 30s).
    #[arg(long, env = "FLINK_AGENT_STALL_TIMEOUT", default_value = "30s")]
    pub stall_timeout: String,

    /// How often the log dir is rescanned besides inotify events (e.g. 1s).
    #[arg(long, env = "FLINK_AGENT_RESCAN_INTERVAL", default_value = "1s")]
    pub rescan_interval: String,

    /// How often the checkpoint is written (e.g. 1s).
    #[arg(long, env = "FLINK_AGENT_CHECKPOINT_INTERVAL", default_value = "1s")]
    pub checkpoint_interval: String,
}

/// An invalid setting: the flag, the value and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value {value:?} for --{flag}: {reason}")]
    Invalid {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid value {value:?} for env {var}: {reason}")]
    InvalidEnv {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error("--{flag} is required (or env FLINK_AGENT_{env})")]
    Missing {
        flag: &'static str,
        env: &'static str,
    },
}

fn invalid(flag: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Pod identity from the Downward API, copied into every event.
#[derive(Debug, Clone, Default)]
pub struct PodMeta {
    pub pod_name: String,
    pub namespace: String,
    pub node_name: String,
    pub pod_ip: String,
    pub container: String,
    pub cluster_id: String,
    pub component: String,
}

/// The multi-line start pattern. regex-automata's meta regex (what `regex::Regex` wraps) so
/// that each file's `Grouper` searches with a cache of its own instead of `regex`'s shared
/// pool, whose fast path belongs to the first thread that used it (when the read loop still
/// moved between two runtime threads, the pool's slow path was ~2% of the agent's CPU,
/// BENCHMARKS.md); a cache per file needs no pool, whichever thread reads.
pub type StartPattern = regex_automata::meta::Regex;

/// Multi-line grouping settings.
#[derive(Debug, Clone)]
pub struct MultilineConfig {
    pub start: StartPattern,
    pub max_lines: usize,
    pub max_bytes: usize,
    pub flush_after: Duration,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub log_dir: PathBuf,
    pub include: Vec<glob_lite::Glob>,
    pub brokers: String,
    pub topic: String,
    /// librdkafka properties the user set (secret dir first, then --kafka-property, later wins).
    pub kafka_properties: BTreeMap<String, String>,
    pub state_file: PathBuf,
    pub metrics_listen: SocketAddr,
    pub flink_rest: String,
    /// `--flink-rest` was given: the address is not learned from the JobManager's log.
    pub flink_rest_given: bool,
    pub flink_task_metrics: crate::flink_rest::TaskMetrics,
    pub probe_token: Option<String>,
    pub shutdown_timeout: Duration,
    pub shutdown_quiet: Duration,
    pub max_files: usize,
    pub pod: PodMeta,
    pub tz: crate::zone::Zone,
    pub multiline: MultilineConfig,
    pub max_line_bytes: usize,
    pub max_in_flight_events: usize,
    pub max_in_flight_bytes: usize,
    pub rescan_interval: Duration,
    pub checkpoint_interval: Duration,
    pub stall_timeout: Duration,
}

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// Room for what librdkafka counts besides the value: key (a pod name, at most 253 bytes),
/// record and batch framing.
const MESSAGE_OVERHEAD: usize = 1024;

impl Config {
    /// The largest event payload librdkafka accepts with these properties.
    pub fn max_payload_bytes(&self) -> usize {
        let max = self
            .kafka_properties
            .get("message.max.bytes")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES);
        max.saturating_sub(MESSAGE_OVERHEAD).max(MESSAGE_OVERHEAD)
    }
}

/// Parses `20s`, `1500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(flag: &'static str, s: &str) -> Result<Duration, ConfigError> {
    let t = s.trim();
    let (num, mult_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1u64)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (t, 1000)
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| invalid(flag, s, "expected a duration like 20s, 1500ms or 2m"))?;
    Ok(Duration::from_millis(n.saturating_mul(mult_ms)))
}

fn parse_property(flag: &'static str, s: &str) -> Result<Option<(String, String)>, ConfigError> {
    let t = s.trim();
    if t.is_empty() {
        // An env var with a trailing newline yields an empty item: not an error.
        return Ok(None);
    }
    match t.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok(Some((k.trim().to_string(), v.to_string()))),
        _ => Err(invalid(
            flag,
            s,
            "expected KEY=VALUE (a librdkafka property)",
        )),
    }
}

/// The user's librdkafka properties: the files of `secret_dir` (file name = key, content =
/// value), then each `KEY=VALUE` of `properties`, later ones winning. Shared with `flink-logs`,
/// so both read the same `--kafka-property` and `--kafka-secret-dir` the same way.
pub fn kafka_properties(
    secret_dir: Option<&Path>,
    properties: &[String],
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    if let Some(dir) = secret_dir {
        out.extend(read_secret_dir(dir)?);
    }
    for p in properties {
        if let Some((k, v)) = parse_property("kafka-property", p)? {
            out.insert(k, v);
        }
    }
    Ok(out)
}

fn read_secret_dir(dir: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let shown = dir.display().to_string();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| invalid("kafka-secret-dir", &shown, format!("cannot read: {e}")))?;
    let mut out = BTreeMap::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| invalid("kafka-secret-dir", &shown, format!("cannot read: {e}")))?;
        let name = entry.file_name().to_string_lossy().to_string();
        // Kubernetes secret volumes hold `..data` symlinks and `..2024_...` dirs: skip them.
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let value = std::fs::read_to_string(&path).map_err(|e| {
            invalid(
                "kafka-secret-dir",
                &path.display().to_string(),
                format!("cannot read: {e}"),
            )
        })?;
        // Secrets written with `echo` end with a newline that is not part of the value.
        out.insert(name, value.trim_end_matches(['\n', '\r']).to_string());
    }
    Ok(out)
}

impl Config {
    /// Validates the command line; `tz_env` is the value of `TZ` (None: UTC).
    pub fn from_cli(cli: Cli, tz_env: Option<String>) -> Result<Self, ConfigError> {
        let brokers = cli
            .brokers
            .filter(|b| !b.trim().is_empty())
            .ok_or(ConfigError::Missing {
                flag: "brokers",
                env: "BROKERS",
            })?;
        let topic = cli
            .topic
            .filter(|t| !t.trim().is_empty())
            .ok_or(ConfigError::Missing {
                flag: "topic",
                env: "TOPIC",
            })?;
        if !topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            || topic.len() > 249
        {
            return Err(invalid(
                "topic",
                &topic,
                "a Kafka topic name is 1-249 characters of [a-zA-Z0-9._-]",
            ));
        }

        let mut include = Vec::new();
        for g in cli
            .include
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            include.push(glob_lite::Glob::new(g).map_err(|r| invalid("include", g, r))?);
        }
        if include.is_empty() {
            return Err(invalid(
                "include",
                "",
                "at least one file name glob is needed",
            ));
        }

        let kafka_properties =
            kafka_properties(cli.kafka_secret_dir.as_deref(), &cli.kafka_property)?;

        let metrics_listen: SocketAddr = cli.metrics_listen.parse().map_err(|_| {
            invalid(
                "metrics-listen",
                &cli.metrics_listen,
                "expected IP:PORT, e.g. 0.0.0.0:9260",
            )
        })?;

        let flink_rest = match &cli.flink_rest {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => crate::flink_rest::default_rest_url(
                non_empty(&cli.component),
                non_empty(&cli.cluster_id),
                non_empty(&cli.namespace),
            )
            .unwrap_or_else(|| "http://localhost:8081".to_string()),
        };
        // Flink's REST API is plain HTTP unless security.ssl.rest is set, which the client here
        // does not speak: refuse it up front rather than report flink_up 0 forever.
        if !flink_rest.starts_with("http://") {
            return Err(invalid(
                "flink-rest",
                cli.flink_rest.as_deref().unwrap_or_default(),
                "expected an http:// URL",
            ));
        }

        let tz = match tz_env.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => crate::zone::Zone::UTC,
            // POSIX allows a leading ':' meaning "a file under zoneinfo".
            Some(name) => {
                crate::zone::Zone::named(name.trim_start_matches(':')).ok_or_else(|| {
                    ConfigError::InvalidEnv {
                        var: "TZ",
                        value: name.to_string(),
                        reason: "not an IANA time zone name, e.g. Asia/Shanghai".into(),
                    }
                })?
            }
        };

        let start = StartPattern::new(&cli.multiline_start).map_err(|e| {
            // The syntax error says what is wrong and where; the build error only which pattern.
            let why = e
                .syntax_error()
                .map_or_else(|| e.to_string(), ToString::to_string);
            invalid("multiline-start", &cli.multiline_start, why)
        })?;
        let positive = |flag: &'static str, v: usize| {
            if v == 0 {
                Err(invalid(flag, "0", "must be at least 1"))
            } else {
                Ok(v)
            }
        };

        let state_file = cli
            .state_file
            .unwrap_or_else(|| cli.log_dir.join(".flink-agent-checkpoints.json"));

        Ok(Self {
            log_dir: cli.log_dir,
            include,
            brokers,
            topic,
            kafka_properties,
            state_file,
            metrics_listen,
            flink_rest,
            flink_rest_given: cli.flink_rest.is_some(),
            flink_task_metrics: cli.flink_task_metrics,
            probe_token: cli.probe_token.filter(|t| !t.is_empty()),
            shutdown_timeout: parse_duration("shutdown-timeout", &cli.shutdown_timeout)?,
            shutdown_quiet: parse_duration("shutdown-quiet", &cli.shutdown_quiet)?,
            max_files: positive("max-files", cli.max_files)?,
            pod: PodMeta {
                pod_name: cli.pod_name,
                namespace: cli.namespace,
                node_name: cli.node_name,
                pod_ip: cli.pod_ip,
                container: cli.container,
                cluster_id: cli.cluster_id,
                component: cli.component,
            },
            tz,
            multiline: MultilineConfig {
                start,
                max_lines: positive("multiline-max-lines", cli.multiline_max_lines)?,
                max_bytes: positive("multiline-max-bytes", cli.multiline_max_bytes)?,
                flush_after: parse_duration("multiline-flush", &cli.multiline_flush)?,
            },
            max_line_bytes: positive("max-line-bytes", cli.max_line_bytes)?.max(16),
            max_in_flight_events: positive("max-in-flight-events", cli.max_in_flight_events)?,
            max_in_flight_bytes: positive("max-in-flight-bytes", cli.max_in_flight_bytes)?,
            rescan_interval: parse_duration("rescan-interval", &cli.rescan_interval)?
                .max(Duration::from_millis(50)),
            checkpoint_interval: parse_duration("checkpoint-interval", &cli.checkpoint_interval)?
                .max(Duration::from_millis(50)),
            stall_timeout: parse_duration("stall-timeout", &cli.stall_timeout)?
                .max(Duration::from_secs(1)),
        })
    }

    /// Whether a file name matches one of the include globs.
    pub fn included(&self, name: &str) -> bool {
        self.include.iter().any(|g| g.matches(name))
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Include patterns over file names in --log-dir (globset syntax: `*`, `?`, `[abc]`, `{a,b}`).
pub mod glob_lite {
    #[derive(Debug, Clone)]
    pub struct Glob(globset::GlobMatcher);

    impl Glob {
        pub fn new(p: &str) -> Result<Self, String> {
            if p.contains('/') {
                return Err("a glob matches file names in --log-dir, without '/'".into());
            }
            globset::Glob::new(p)
                .map(|g| Self(g.compile_matcher()))
                .map_err(|e| e.to_string())
        }

        pub fn matches(&self, name: &str) -> bool {
            self.0.is_match(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut v = vec!["flink-agent", "--brokers", "b:9092", "--topic", "t"];
        v.extend_from_slice(args);
        Cli::parse_from(v)
    }

    #[test]
    fn globs() {
        let g = glob_lite::Glob::new("*.log").unwrap();
        assert!(g.matches("flink--taskmanager-0-x.log"));
        assert!(!g.matches("flink--taskmanager-0-x.log.1"));
        assert!(!g.matches("x.out"));
        assert!(glob_lite::Glob::new("task?.l*")
            .unwrap()
            .matches("task1.log"));
    }

    #[test]
    fn flink_rest_defaults_to_the_jobmanager_service_in_a_taskmanager_pod() {
        let tm = Config::from_cli(
            cli(&[
                "--component",
                "taskmanager",
                "--cluster-id",
                "wc",
                "--namespace",
                "jobs",
            ]),
            None,
        )
        .unwrap();
        assert_eq!(tm.flink_rest, "http://wc-rest.jobs:8081");
        let jm = Config::from_cli(cli(&["--component", "jobmanager"]), None).unwrap();
        assert_eq!(jm.flink_rest, "http://localhost:8081");
        let explicit = Config::from_cli(
            cli(&["--component", "taskmanager", "--flink-rest", "http://x:1/"]),
            None,
        )
        .unwrap();
        assert_eq!(explicit.flink_rest, "http://x:1");
        let err = Config::from_cli(cli(&["--flink-rest", "https://x:8081"]), None).unwrap_err();
        assert!(err.to_string().contains("flink-rest"), "{err}");
    }

    #[test]
    fn defaults_and_properties() {
        let c = Config::from_cli(
            cli(&[
                "--kafka-property",
                "linger.ms=5",
                "--kafka-property",
                "a=b=c",
            ]),
            Some("Asia/Shanghai".into()),
        )
        .unwrap();
        assert_eq!(c.kafka_properties["linger.ms"], "5");
        assert_eq!(c.kafka_properties["a"], "b=c");
        assert_eq!(c.shutdown_timeout, Duration::from_secs(20));
        assert_eq!(c.tz.name(), "Asia/Shanghai");
        assert!(c.state_file.ends_with(".flink-agent-checkpoints.json"));
        assert!(c.included("a.err"));
    }

    #[test]
    fn secret_dir_files_are_properties_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sasl.username"), "user\n").unwrap();
        std::fs::write(dir.path().join("sasl.password"), "s3cret").unwrap();
        std::fs::write(dir.path().join("..data"), "ignored").unwrap();
        let d = dir.path().to_str().unwrap();
        let c = Config::from_cli(
            cli(&[
                "--kafka-secret-dir",
                d,
                "--kafka-property",
                "sasl.username=override",
            ]),
            None,
        )
        .unwrap();
        assert_eq!(c.kafka_properties["sasl.password"], "s3cret");
        assert_eq!(c.kafka_properties["sasl.username"], "override");
        assert!(!c.kafka_properties.contains_key("..data"));
        let e = Config::from_cli(cli(&["--kafka-secret-dir", "/nonexistent/x"]), None).unwrap_err();
        assert!(e.to_string().contains("--kafka-secret-dir"), "{e}");
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e = Config::from_cli(cli(&["--shutdown-timeout", "soon"]), None).unwrap_err();
        assert!(e.to_string().contains("--shutdown-timeout"), "{e}");
        assert!(e.to_string().contains("soon"), "{e}");
        let e = Config::from_cli(cli(&["--kafka-property", "novalue"]), None).unwrap_err();
        assert!(e.to_string().contains("--kafka-property"), "{e}");
        let e = Config::from_cli(cli(&[]), Some("Mars/Olympus".into())).unwrap_err();
        assert!(e.to_string().contains("Mars/Olympus"), "{e}");
        let e = Config::from_cli(cli(&["--metrics-listen", "9260"]), None).unwrap_err();
        assert!(e.to_string().contains("--metrics-listen"), "{e}");
        // The pattern's syntax error itself, not only "error parsing pattern 0".
        let e = Config::from_cli(cli(&["--multiline-start", "("]), None).unwrap_err();
        assert!(e.to_string().contains("--multiline-start"), "{e}");
        assert!(e.to_string().contains("unclosed group"), "{e}");
    }
}
