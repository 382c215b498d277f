//! The `flink-agent` binary: parse and validate the configuration (a bad value exits non-zero
//! with a message naming it), then run until SIGTERM/SIGINT and exit 0.
//!
//! After start-up the agent never exits on its own errors: a plain-container agent that exits
//! kills its TaskManager.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use flink_agent::config::{Cli, Config};
use flink_agent::flink_rest::{FlinkMetrics, FlinkRestConfig};
use flink_agent::http::{self, ServerState};
use flink_agent::metrics::Metrics;
use flink_agent::pipeline::Agent;

/// See the comment on the dependency in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // The error chain on one line, without a backtrace (RUST_BACKTRACE may be set in the pod).
    if let Err(e) = start() {
        eprintln!("flink-agent: {e:#}");
        std::process::exit(1);
    }
    // librdkafka's destructor can wait on unacknowledged messages with an infinite timeout;
    // the checkpoint is saved, so leave without running it.
    std::process::exit(0);
}

fn start() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLINK_AGENT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = Config::from_cli(cli, std::env::var("TZ").ok()).context("invalid configuration")?;
    // One thread for the read loop, the listeners and the timers. With two workers the read
    // loop moved between them, and librdkafka's copy of each message was malloc'ed in either
    // thread's glibc arena: up to twice the in-flight window resident (peak RSS 38-44 MiB
    // instead of ~31, BENCHMARKS.md). The read loop yields after every read, so /metrics and
    // the probes are answered while it catches up.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(cfg))
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let (metrics, registry) = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let flink = Arc::new(flink_metrics(&cfg));
    let rest_target = flink.target();
    let state = ServerState {
        registry: Arc::new(registry),
        ready: ready.clone(),
        flink: Some(flink),
        probe_token: cfg.probe_token.as_deref().map(Arc::from),
    };
    tokio::spawn(http::serve(cfg.metrics_listen, state));
    tracing::info!(
        log_dir = %cfg.log_dir.display(),
        brokers = %cfg.brokers,
        topic = %cfg.topic,
        "flink-agent starting"
    );
    let agent = Agent::new(cfg, metrics)
        .context("invalid Kafka configuration")?
        .learning_rest_address(rest_target);
    agent.run(ready, shutdown_signal()).await;
    Ok(())
}

/// Flink's metrics from its REST API (`--flink-rest`). In a TaskManager pod only that
/// TaskManager's and its subtasks' (its id is the pod name in native Kubernetes mode), so no
/// series is reported twice; a scrape waits at most 3 s for Flink (Prometheus' default scrape timeout is 10 s).
fn flink_metrics(cfg: &Config) -> FlinkMetrics {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let component = non_empty(&cfg.pod.component);
    let taskmanager_id = match component.as_deref() {
        Some("taskmanager") => non_empty(&cfg.pod.pod_name),
        _ => None,
    };
    // Only the JobManager pod's agent sees the line that announces the REST address.
    let learn_from_log = !cfg.flink_rest_given && component.as_deref() == Some("jobmanager");
    FlinkMetrics::new(FlinkRestConfig {
        base_url: cfg.flink_rest.clone(),
        component,
        taskmanager_id,
        timeout: std::time::Duration::from_secs(3),
        cluster_id: non_empty(&cfg.pod.cluster_id),
        learn_from_log,
        task_metrics: cfg.flink_task_metrics,
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; running until killed");
            std::future::pending::<()>().await;
        }
    }
}
