//! Admission benchmark: admissions/s and latency percentiles over TLS with keep-alive, against a
//! real `flink-webhook serve`, for the real JobManager and TaskManager reviews; and the cold path
//! (TCP + TLS handshake + first admission). Prints a Markdown table. Run by `scripts/bench.sh`.
//!
//! Usage: bench-admission WEBHOOK_BIN [SECONDS_PER_CASE]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flink_injector_tests::https::{client_config, HttpsConn};
use flink_injector_tests::procfs::cpu_seconds;
use flink_injector_tests::{fixture, free_port, wait_for_port, workspace_root, ChildGuard};

const SERVER_NAME: &str = "flink-webhook.flink-system.svc";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

async fn run_case(
    port: u16,
    cfg: Arc<rustls::ClientConfig>,
    body: Arc<Vec<u8>>,
    connections: usize,
    seconds: u64,
) -> Result<(f64, Vec<Duration>)> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let cfg = cfg.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpsConn::connect(port, cfg, SERVER_NAME).await?;
            let mut lat = Vec::with_capacity(100_000);
            // Bounded by time and by count, so a broken server cannot keep the bench running.
            while Instant::now() < deadline && lat.len() < 5_000_000 {
                let t = Instant::now();
                let (status, _) = conn.post("/mutate?timeout=5s", body.to_vec()).await?;
                lat.push(t.elapsed());
                if status != 200 {
                    bail!("status {status}");
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    Ok((all.len() as f64 / elapsed, all))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let bin = args
        .next()
        .context("usage: bench-admission WEBHOOK_BIN [SECONDS]")?;
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);

    let dir = tempfile::tempdir()?;
    flink_injector_tests::issue_certs(std::path::Path::new(&bin), dir.path(), None)?;
    let port = free_port()?;
    let metrics_port = free_port()?;
    let server = ChildGuard::spawn(
        "flink-webhook",
        flink_injector_tests::webhook::serve_args(
            &mut Command::new(&bin),
            &workspace_root().join("examples/policy.yaml"),
            dir.path(),
            port,
            metrics_port,
        )
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null()),
    )?;
    wait_for_port(port, Duration::from_secs(20))?;
    let cfg = client_config(&dir.path().join("ca.crt"))?;

    // CPU per admission, the webhook's and this client's: on two shared cores the rate moves with
    // whatever else runs, the CPU one admission costs much less.
    let webhook_pid = server.pid();
    println!("| review | connections | admissions/s | p50 ms | p99 ms | p99.9 ms | requests | webhook CPU µs/admission | client CPU µs/admission |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (label, file) in [
        (
            "JobManager",
            "admission/flink-2.3-application-jobmanager.review.json",
        ),
        (
            "TaskManager",
            "admission/flink-2.3-application-taskmanager.review.json",
        ),
    ] {
        let body = Arc::new(fixture(file)?);
        for connections in [1usize, 2, 8] {
            let cpu_before = (cpu_seconds(webhook_pid)?, cpu_seconds(std::process::id())?);
            let (rate, lat) =
                run_case(port, cfg.clone(), body.clone(), connections, seconds).await?;
            let per = |before: f64, pid: u32| -> Result<String> {
                let us = (cpu_seconds(pid)? - before) * 1e6 / lat.len().max(1) as f64;
                Ok(format!("{us:.0}"))
            };
            println!(
                "| {label} | {connections} | {rate:.0} | {} | {} | {} | {} | {} | {} |",
                ms(percentile(&lat, 0.50)),
                ms(percentile(&lat, 0.99)),
                ms(percentile(&lat, 0.999)),
                lat.len(),
                per(cpu_before.0, webhook_pid)?,
                per(cpu_before.1, std::process::id())?,
            );
        }
    }

    // Cold path: a new TCP connection, TLS handshake and the first admission, 200 times.
    let body = fixture("admission/flink-2.3-application-jobmanager.review.json")?;
    let mut cold = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let mut conn = HttpsConn::connect(port, cfg.clone(), SERVER_NAME).await?;
        let (status, _) = conn.post("/mutate", body.clone()).await?;
        cold.push(t.elapsed());
        if status != 200 {
            bail!("status {status}");
        }
    }
    cold.sort();
    println!();
    println!("| cold path (TLS handshake + first admission) | p50 ms | p99 ms | samples |");
    println!("|---|---:|---:|---:|");
    println!(
        "| JobManager | {} | {} | {} |",
        ms(percentile(&cold, 0.5)),
        ms(percentile(&cold, 0.99)),
        cold.len()
    );
    Ok(())
}
