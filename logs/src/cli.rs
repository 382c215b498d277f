//! The command line, validated once: a bad value is an error naming the flag and the value.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::filter::{Component, FilterError, Level, Selection, SelectionArgs};
use crate::render::Output;
use crate::source::KafkaSettings;
use crate::time::{parse_instant, parse_since, Since};

const EXAMPLES: &str = "\
Examples:
  # A TaskManager died an hour ago: what did it log?
  flink-logs --brokers kafka:9092 --topic flink-logs -c wordcount --since 2h --component taskmanager
  # Only its warnings and errors, one pod, as JSON for jq
  flink-logs -c wordcount -p wordcount-taskmanager-1-3 --level warn -o json
  # Follow the whole cluster, including TaskManagers that start later
  flink-logs -c wordcount -f

Exit status: 0 done; 1 Kafka unreachable, refused or stalled; 2 bad usage; 3 no such topic;
4 nothing of that cluster-id (or of those pods) in the window.";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "flink-logs",
    version = concat!(env!("CARGO_PKG_VERSION"), " (revision ", env!("FLINK_INJECTOR_REVISION"), ")"),
    about = "Reads a Flink cluster's logs back from the Kafka topic flink-agent ships them to, \
             as Flink wrote them, also for pods that no longer exist",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// Kafka bootstrap servers (host:port,host:port), as given to the agent.
    #[arg(long, env = "FLINK_LOGS_BROKERS")]
    pub brokers: String,

    /// The topic the agents ship to (the policy's agent.kafka.topic, or the job's
    /// flink-injector.io/log-topic annotation).
    #[arg(long, env = "FLINK_LOGS_TOPIC")]
    pub topic: String,

    /// A librdkafka property KEY=VALUE, as the agent takes it (repeatable; newline-separated
    /// in the env var), e.g. security.protocol=SASL_SSL.
    #[arg(
        long = "kafka-property",
        env = "FLINK_LOGS_KAFKA_PROPERTY",
        value_delimiter = '\n'
    )]
    pub kafka_property: Vec<String>,

    /// Directory whose files are librdkafka properties (file name = key, content = value),
    /// e.g. the agent's Kafka Secret; --kafka-property wins over it.
    #[arg(long, env = "FLINK_LOGS_KAFKA_SECRET_DIR")]
    pub kafka_secret_dir: Option<PathBuf>,

    /// The Flink cluster: its kubernetes.cluster-id (the pods' label app=).
    #[arg(long, short = 'c')]
    pub cluster_id: String,

    /// Only the JobManager's or only the TaskManagers' events.
    #[arg(long, value_enum)]
    pub component: Option<Component>,

    /// Only these pods: a name or a glob such as 'wordcount-taskmanager-1-*' (repeatable).
    #[arg(long = "pod", short = 'p')]
    pub pods: Vec<String>,

    /// Only these files: a glob on the file name or the whole path, e.g. '*.log' (repeatable).
    #[arg(long = "file")]
    pub files: Vec<String>,

    /// Only events at this level or above (trace, debug, info, warn, error, fatal); lines
    /// without a level (stdout) are left out.
    #[arg(long, value_enum, ignore_case = true)]
    pub level: Option<Level>,

    /// Only these loggers and the loggers below them, e.g. org.apache.flink.runtime (repeatable).
    #[arg(long = "logger")]
    pub loggers: Vec<String>,

    /// Only events whose message, stack trace included, matches this regex.
    #[arg(long, short = 'g')]
    pub grep: Option<String>,

    /// Events of the last DURATION (2h, 90m, 1h30m, 2d), or `all`. Default: 48h.
    #[arg(long, conflicts_with = "from")]
    pub since: Option<String>,

    /// Events at or after this time (RFC 3339, e.g. 2026-11-22T19:00:00+08:00).
    #[arg(long)]
    pub from: Option<String>,

    /// Events before this time (RFC 3339).
    #[arg(long, conflicts_with = "follow")]
    pub to: Option<String>,

    /// Keep printing events as they arrive, including those of pods that start later.
    #[arg(long, short = 'f')]
    pub follow: bool,

    /// text: as Flink wrote them; json: the stored ECS documents, one a line.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// Prefix every line with its pod's name (the default unless --pod names one pod).
    #[arg(long, overrides_with = "no_prefix")]
    pub prefix: bool,

    /// Never prefix lines with the pod's name.
    #[arg(long, overrides_with = "prefix")]
    pub no_prefix: bool,

    /// How late an event may reach Kafka and still be printed in @timestamp order among the
    /// other pods' (events are held this long, also when following).
    #[arg(long, default_value = "2s")]
    pub order_window: String,

    /// With --to: how long after it was written an event may have been shipped (an agent
    /// catching up after Kafka was down) and still be looked for.
    #[arg(long, default_value = "1h")]
    pub max_lag: String,

    /// How far Kafka's timestamps may lag behind the pods' clocks (a topic with
    /// LogAppendTime, a broker whose clock is behind): the time lookup starts this much earlier.
    #[arg(long, default_value = "1s")]
    pub clock_skew: String,

    /// How long to wait for Kafka before giving up with an error.
    #[arg(long, default_value = "15s")]
    pub timeout: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("invalid value {value:?} for --{flag}: {reason}")]
    Invalid {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Kafka(#[from] flink_agent::config::ConfigError),
    #[error(transparent)]
    Filter(#[from] FilterError),
}

fn invalid(flag: &'static str, value: &str, reason: impl Into<String>) -> CliError {
    CliError::Invalid {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// A duration flag (not `all`).
fn duration(flag: &'static str, s: &str) -> Result<Duration, CliError> {
    match parse_since(s) {
        Ok(Since::Millis(ms)) => Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
        Ok(Since::All) => Err(invalid(flag, s, "expected a duration like 2s or 1h")),
        Err(e) => Err(invalid(flag, s, e)),
    }
}

/// What to read and how to show it.
#[derive(Debug, Clone)]
pub struct Options {
    pub kafka: KafkaSettings,
    pub selection: Selection,
    pub follow: bool,
    pub output: Output,
    pub prefix: bool,
    pub order_window: Duration,
    /// Kafka time (ms) to start reading at: the window's start less the clock skew.
    pub seek_from: Option<i64>,
    /// Kafka time (ms) where the window's history ends: `--to` plus the maximum lag.
    pub seek_until: Option<i64>,
}

/// The default window, as stern's: long enough for "what happened yesterday", short enough
/// not to read a week of a busy topic by accident.
const DEFAULT_SINCE: &str = "48h";

impl Options {
    /// Validates the command line; `now` is the current time in ms since the epoch.
    pub fn from_cli(cli: Cli, now: i64) -> Result<Self, CliError> {
        if cli.brokers.trim().is_empty() {
            return Err(invalid("brokers", &cli.brokers, "no Kafka address given"));
        }
        let topic = cli.topic.trim().to_string();
        if topic.is_empty()
            || topic.len() > 249
            || !topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(invalid(
                "topic",
                &cli.topic,
                "a Kafka topic name is 1-249 characters of [a-zA-Z0-9._-]",
            ));
        }
        let properties = flink_agent::config::kafka_properties(
            cli.kafka_secret_dir.as_deref(),
            &cli.kafka_property,
        )?;
        let timeout = duration("timeout", &cli.timeout)?;
        if timeout.is_zero() {
            return Err(invalid("timeout", &cli.timeout, "must be more than 0"));
        }
        let skew = duration("clock-skew", &cli.clock_skew)?;
        let max_lag = duration("max-lag", &cli.max_lag)?;
        let order_window = duration("order-window", &cli.order_window)?;

        let from = match (&cli.from, &cli.since) {
            (Some(f), _) => Some(parse_instant(f).map_err(|e| invalid("from", f, e))?),
            (None, since) => {
                let s = since.as_deref().unwrap_or(DEFAULT_SINCE);
                match parse_since(s).map_err(|e| invalid("since", s, e))? {
                    Since::All => None,
                    Since::Millis(ms) => Some(now.saturating_sub(ms)),
                }
            }
        };
        let to = cli
            .to
            .as_deref()
            .map(|t| parse_instant(t).map_err(|e| invalid("to", t, e)))
            .transpose()?;
        let as_ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let seek_from = from.map(|f| f.saturating_sub(as_ms(skew)));
        let seek_until = to.map(|t| t.saturating_add(as_ms(max_lag)));

        let selection = Selection::new(SelectionArgs {
            cluster_id: cli.cluster_id,
            component: cli.component,
            pods: cli.pods,
            files: cli.files,
            min_level: cli.level,
            loggers: cli.loggers,
            grep: cli.grep,
            from,
            to,
        })?;
        let prefix = match (cli.prefix, cli.no_prefix) {
            (true, _) => true,
            (_, true) => false,
            _ => selection.many_pods(),
        };
        Ok(Self {
            kafka: KafkaSettings {
                brokers: cli.brokers.trim().to_string(),
                topic,
                properties,
                timeout,
            },
            selection,
            follow: cli.follow,
            output: cli.output,
            prefix,
            order_window,
            seek_from,
            seek_until,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_345_384_123;

    fn opts(args: &[&str]) -> Result<Options, CliError> {
        let mut v = vec![
            "flink-logs",
            "--brokers",
            "b:9092",
            "--topic",
            "t",
            "-c",
            "wc",
        ];
        v.extend_from_slice(args);
        Options::from_cli(Cli::try_parse_from(v).unwrap(), NOW)
    }

    #[test]
    fn window_defaults_and_offsets() {
        let o = opts(&[]).unwrap();
        assert_eq!(o.selection.from, Some(NOW - 48 * 3_600_000));
        assert_eq!(o.seek_from, Some(NOW - 48 * 3_600_000 - 1000));
        assert_eq!(o.seek_until, None);
        assert!(o.prefix);

        let o = opts(&["--since", "2h", "--clock-skew", "0s"]).unwrap();
        assert_eq!(o.seek_from, Some(NOW - 7_200_000));

        let o = opts(&["--since", "all"]).unwrap();
        assert_eq!((o.selection.from, o.seek_from), (None, None));

        let o = opts(&[
            "--from",
            "2026-11-22T19:00:00+08:00",
            "--to",
            "2026-11-22T20:00:00+08:00",
            "--max-lag",
            "10m",
        ])
        .unwrap();
        let from = parse_instant("2026-11-22T11:00:00Z").unwrap();
        assert_eq!(o.selection.from, Some(from));
        assert_eq!(o.selection.to, Some(from + 3_600_000));
        assert_eq!(o.seek_until, Some(from + 3_600_000 + 600_000));
    }

    #[test]
    fn one_named_pod_is_not_prefixed() {
        assert!(!opts(&["-p", "wc-taskmanager-1-1"]).unwrap().prefix);
        assert!(opts(&["-p", "wc-taskmanager-1-*"]).unwrap().prefix);
        assert!(opts(&["-p", "a", "-p", "b"]).unwrap().prefix);
        assert!(opts(&["-p", "a", "--prefix"]).unwrap().prefix);
        assert!(!opts(&["--no-prefix"]).unwrap().prefix);
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, flag) in [
            (&["--since", "yesterday"][..], "--since"),
            (&["--from", "2026-11-22 19:00"], "--from"),
            (&["--to", "soon"], "--to"),
            (&["--timeout", "0s"], "--timeout"),
            (&["--order-window", "all"], "--order-window"),
            (&["--kafka-property", "novalue"], "--kafka-property"),
            (
                &["--kafka-secret-dir", "/nonexistent/x"],
                "--kafka-secret-dir",
            ),
            (&["--grep", "("], "--grep"),
            (&["--topic", "no/slash"], "--topic"),
        ] {
            let mut v = vec!["flink-logs", "--brokers", "b:9092", "-c", "wc"];
            if !args.contains(&"--topic") {
                v.extend_from_slice(&["--topic", "t"]);
            }
            v.extend_from_slice(args);
            let e = Options::from_cli(Cli::try_parse_from(v).unwrap(), NOW).unwrap_err();
            assert!(e.to_string().contains(flag), "{args:?}: {e}");
        }
        // clap itself: contradictions.
        for args in [
            &["--since", "1h", "--from", "2026-11-22T19:00:00Z"][..],
            &["--follow", "--to", "2026-11-22T19:00:00Z"],
        ] {
            let mut v = vec!["flink-logs", "--brokers", "b", "--topic", "t", "-c", "wc"];
            v.extend_from_slice(args);
            assert!(Cli::try_parse_from(v).is_err(), "{args:?}");
        }
    }

    #[test]
    fn kafka_properties_as_the_agent_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sasl.username"), "flink\n").unwrap();
        std::fs::write(dir.path().join("sasl.password"), "s3cret").unwrap();
        let d = dir.path().to_str().unwrap();
        let o = opts(&[
            "--kafka-secret-dir",
            d,
            "--kafka-property",
            "sasl.username=override",
        ])
        .unwrap();
        assert_eq!(o.kafka.properties["sasl.password"], "s3cret");
        assert_eq!(o.kafka.properties["sasl.username"], "override");
    }
}
