//! Scrape benchmark: a real local Flink running a job of 20 vertices x 4 subtasks, the agent in
//! the JobManager's shape reading its REST API; latency of `GET /metrics` as Prometheus sees it
//! and the agent's CPU per scrape. Scrapes are 6 s apart, so each one finds the agent's 5 s
//! cache expired and reads Flink again (the cost of a real scrape every 15 s). Then the sidecar's
//! idle cost beside that Flink: a minute with nothing to ship and Prometheus's default scrape
//! interval of 15 s. Prints Markdown.
//!
//! Usage: bench-scrape AGENT_BIN [SCRAPES]     (run by scripts/bench.sh)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flink_injector_tests::agent::http_get;
use flink_injector_tests::broker::Broker;
use flink_injector_tests::flink::LocalFlink;
use flink_injector_tests::procfs::{cpu_seconds, status_mib};
use flink_injector_tests::{free_port, wait_for, ChildGuard};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let agent_bin = args
        .next()
        .context("usage: bench-scrape AGENT_BIN [SCRAPES]")?;
    let scrapes: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);

    let work = tempfile::tempdir()?;
    let flink_logs = work.path().join("flink-log");
    let flink = LocalFlink::start(&flink_logs)?;
    let job = flink.submit_job("wide", "wide-20x4")?;
    flink.wait_job_state(&job, "RUNNING", Duration::from_secs(120))?;

    let agent_logs = work.path().join("agent-log");
    std::fs::create_dir(&agent_logs)?;
    // A broker that is up, as in a cluster: an unreachable one would add librdkafka's
    // reconnection attempts to the idle figures.
    let broker = Broker::start(work.path())?;
    let port = free_port()?;
    let agent = ChildGuard::spawn(
        "flink-agent",
        Command::new(&agent_bin)
            .arg("--log-dir")
            .arg(&agent_logs)
            .args(["--brokers", &broker.bootstrap(), "--topic", "unused"])
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
            .args(["--flink-rest", &flink.rest_url()])
            .args(["--pod-name", "bench-jm", "--component", "jobmanager"])
            .args(["--cluster-id", flink_injector_tests::flink::CLUSTER_ID])
            // As the image runs it (its allocator settings).
            .envs(flink_injector_tests::AGENT_ALLOCATOR_ENV)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    // Flink's first metric answers are empty; wait for every vertex of the job.
    let mut series = 0usize;
    wait_for(
        "vertex metrics of all 20 vertices",
        Duration::from_secs(120),
        || {
            let Ok((200, body)) = http_get(port, "/metrics") else {
                return Ok(None);
            };
            let tasks: std::collections::BTreeSet<&str> = body
                .lines()
                .filter(|l| l.starts_with("flink_taskmanager_job_task_numRecordsIn{"))
                .filter_map(|l| l.split("task_name=\"").nth(1)?.split('"').next())
                .collect();
            series = body.lines().filter(|l| !l.starts_with('#')).count();
            Ok((tasks.len() >= 20).then_some(()))
        },
    )?;
    std::thread::sleep(Duration::from_secs(6));

    let mut lat = Vec::new();
    let mut cpu = Vec::new();
    let mut bytes = 0usize;
    for _ in 0..scrapes {
        let c0 = cpu_seconds(agent.pid())?;
        let t = Instant::now();
        let (code, body) = http_get(port, "/metrics")?;
        lat.push(t.elapsed());
        if code != 200 || !body.contains("flink_up 1") {
            bail!("scrape failed: {code}");
        }
        bytes = body.len();
        // The agent's CPU is read after it answered; ticks are 10 ms, so the mean over many
        // scrapes is the figure, not one sample.
        std::thread::sleep(Duration::from_millis(200));
        cpu.push(cpu_seconds(agent.pid())? - c0);
        std::thread::sleep(Duration::from_millis(5800));
    }
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean_cpu = cpu.iter().sum::<f64>() / cpu.len() as f64;
    println!(
        "| job | series | body KiB | scrapes | p50 ms | max ms | agent CPU ms per scrape (mean) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| 20 vertices x 4 subtasks, 1 TaskManager | {series} | {:.0} | {} | {:.1} | {:.1} | {:.1} |",
        bytes as f64 / 1024.0,
        lat.len(),
        ms(lat[lat.len() / 2]),
        ms(lat[lat.len() - 1]),
        mean_cpu * 1000.0
    );

    // Idle beside a real Flink: the log dir is empty, Prometheus scrapes every 15 s.
    let (scrape_every, idle_scrapes) = (Duration::from_secs(15), 4u32);
    let c0 = cpu_seconds(agent.pid())?;
    let t0 = Instant::now();
    for i in 1..=idle_scrapes {
        let (code, body) = http_get(port, "/metrics")?;
        if code != 200 || !body.contains("flink_up 1") {
            bail!("scrape failed: {code}");
        }
        std::thread::sleep((t0 + scrape_every * i).saturating_duration_since(Instant::now()));
    }
    let secs = t0.elapsed().as_secs_f64();
    let idle_cpu = cpu_seconds(agent.pid())? - c0;
    println!();
    println!("| idle beside a real Flink | seconds | scrapes | CPU % of a core | RSS MiB | of which anonymous | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| nothing to ship, /metrics every 15 s (Flink's REST API read at each) | {secs:.0} | {idle_scrapes} | {:.2} | {:.1} | {:.1} | {:.1} |",
        idle_cpu / secs * 100.0,
        status_mib(agent.pid(), "VmRSS")?,
        status_mib(agent.pid(), "RssAnon")?,
        status_mib(agent.pid(), "VmHWM")?
    );
    drop(agent);
    drop(broker);
    drop(flink);
    Ok(())
}
