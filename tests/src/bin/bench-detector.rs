//! The webhook's memory with the missed-injection detector listing and watching N Flink pods,
//! served by the stand-in API server in the recorded shapes (whole pods with managedFields, as
//! a real API server stores them; metadata only on the wire when asked, as it answers), paged
//! 500 at a time. Baselines in the same run: the detector off, and on with no pods.
//!
//! `bench-detector target/release/flink-webhook 10000 [ROUNDS]`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use flink_injector_tests::apiserver::{recorded_script, watch_lines, write_kubeconfig, StandIn};
use flink_injector_tests::procfs::{cpu_seconds, status_mib};
use flink_injector_tests::webhook::serve_args;
use flink_injector_tests::{free_port, wait_for, wait_for_port, ChildGuard};

/// N pods cycling through the recorded ones (the injected JobManager, the uninjected
/// TaskManager, the TaskManager of a namespace not opted in), each under its own name and uid.
fn pods(n: usize) -> Result<Vec<Value>> {
    let script = recorded_script()?;
    let mut shapes = script.pod_lists[0].clone();
    for line in watch_lines("apiserver/watch-pods.jsonl")? {
        let name = &line["object"]["metadata"]["name"];
        if line["type"] == "ADDED" && !shapes.iter().any(|p| p["metadata"]["name"] == *name) {
            shapes.push(line["object"].clone());
        }
    }
    if shapes.is_empty() {
        bail!("no recorded pods");
    }
    Ok((0..n)
        .map(|i| {
            let mut p = shapes[i % shapes.len()].clone();
            let name = format!("{}-{i}", p["metadata"]["name"].as_str().unwrap_or("pod"));
            p["metadata"]["name"] = json!(name);
            p["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{i:012}"));
            p
        })
        .collect())
}

struct Figures {
    rss: f64,
    hwm: f64,
    cpu: f64,
    sync: Duration,
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

fn http_get(port: u16, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn run(rt: &tokio::runtime::Runtime, webhook: &str, n: Option<usize>) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");
    flink_injector_tests::issue_certs(std::path::Path::new(webhook), &tls, Some(2))?;
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        flink_injector_tests::fixture("policy/design.yaml")?,
    )?;
    let mut script = recorded_script()?;
    script.pod_lists = [pods(n.unwrap_or(0))?].into();
    script.lease_created = "2026-12-06T01:00:00Z".into();
    let standin = rt.block_on(StandIn::start(script))?;
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(&kubeconfig, standin.addr)?;
    let (port, metrics_port) = (free_port()?, free_port()?);
    let mut cmd = Command::new(webhook);
    cmd.env("KUBECONFIG", &kubeconfig)
        .env("HOME", dir.path())
        .env("POD_NAME", "bench-0")
        .env("FLINK_WEBHOOK_DETECTOR", n.is_some().to_string())
        .stderr(Stdio::null());
    let start = Instant::now();
    let child = ChildGuard::spawn(
        "flink-webhook",
        serve_args(&mut cmd, &policy, &tls, port, metrics_port),
    )?;
    wait_for_port(metrics_port, Duration::from_secs(20))?;
    if let Some(n) = n {
        wait_for("the detector's sync", Duration::from_secs(300), || {
            let body = http_get(metrics_port, "/metrics")?;
            let synced = metric(&body, "flink_webhook_detector_synced") == Some(1.0);
            let pods = metric(&body, "flink_webhook_detector_pods");
            Ok((synced && pods == Some(n as f64)).then_some(()))
        })?;
    }
    let sync = start.elapsed();
    // Let a pass of the watch loop's timers go by, so what is measured is the steady state.
    std::thread::sleep(Duration::from_secs(6));
    let pid = child.pid();
    Ok(Figures {
        rss: status_mib(pid, "VmRSS")?,
        hwm: status_mib(pid, "VmHWM")?,
        cpu: cpu_seconds(pid)?,
        sync,
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let webhook = args
        .get(1)
        .context("usage: bench-detector WEBHOOK_BIN N [ROUNDS]")?;
    let n: usize = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let rounds: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let rt = tokio::runtime::Runtime::new()?;
    println!("| case | pods | RSS MiB | peak RSS MiB | CPU s to steady | time to sync |");
    println!("|---|---|---|---|---|---|");
    for round in 0..rounds {
        for (label, case) in [
            ("detector off", None),
            ("detector, no pods", Some(0)),
            ("detector", Some(n)),
        ] {
            let f = run(&rt, webhook, case)?;
            println!(
                "| {label} (round {round}) | {} | {:.1} | {:.1} | {:.2} | {:.1} s |",
                case.unwrap_or(0),
                f.rss,
                f.hwm,
                f.cpu,
                f.sync.as_secs_f64()
            );
        }
    }
    Ok(())
}
