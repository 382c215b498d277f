//! The `flink-logs` binary: validate the command line, read, print a summary on stderr, and
//! exit with a status that says what happened (see `--help`).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use flink_logs::cli::{Cli, Options};
use flink_logs::run::{run, RunError};
use flink_logs::source::SourceError;

/// Exit statuses (also in `--help`).
const FAILED: i32 = 1;
const USAGE: i32 = 2;
const NO_TOPIC: i32 = 3;
const NOTHING_FOUND: i32 = 4;

fn main() {
    std::process::exit(start());
}

fn start() -> i32 {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLINK_LOGS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    let opts = match Options::from_cli(cli, chrono::Utc::now().timestamp_millis()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("flink-logs: {e}");
            return USAGE;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    if opts.follow {
        stop_on_signals(stop.clone());
    }
    let stdout = std::io::stdout();
    let out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let summary = match run(&opts, out, &stop) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("flink-logs: {e}");
            return match e {
                RunError::Source(SourceError::UnknownTopic { .. }) => NO_TOPIC,
                _ => FAILED,
            };
        }
    };
    let _ = std::io::stdout().flush();
    eprintln!("flink-logs: {summary}");
    if !opts.follow {
        let window = match (opts.selection.from, opts.selection.to) {
            (None, None) => "in all it holds".to_string(),
            (from, to) => format!(
                "between {} and {}",
                from.map_or("its start".to_string(), rfc3339),
                to.map_or("now".to_string(), rfc3339)
            ),
        };
        if let Some(why) = summary.nothing_found(&opts.selection.cluster_id, &window) {
            eprintln!("flink-logs: {why}");
            return NOTHING_FOUND;
        }
    }
    0
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// SIGINT or SIGTERM ends `--follow` after printing what is held and the summary; a second
/// one ends the process at once.
fn stop_on_signals(stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            for _ in 0..2 {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                if stop.swap(true, Ordering::Relaxed) {
                    std::process::exit(130);
                }
            }
        });
    });
}
