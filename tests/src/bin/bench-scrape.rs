//! Scrape benchmark: a real local Flink (JobManager + 2 TaskManagers) running a job of 21
//! vertices x 8 subtasks with long operator names, and four agents reading its REST API side by
//! side: in the JobManager pod's role and in one TaskManager pod's role, each with
//! `--flink-task-metrics per-vertex` (before: task metrics aggregated by the JobManager's agent)
//! and `per-subtask` (after: each TaskManager's agent exports its own subtasks). Latency of
//! `GET /metrics` as Prometheus sees it and each agent's CPU per scrape; scrapes of one agent
//! are 6 s apart, so each finds its 5 s cache expired and reads Flink again (the cost of a real
//! scrape every 15 s). Then the idle cost of each beside that Flink: a minute with nothing to
//! ship and Prometheus's default scrape interval of 15 s. Prints Markdown.
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

struct Agent {
    role: &'static str,
    mode: &'static str,
    port: u16,
    child: ChildGuard,
    series: usize,
    bytes: usize,
    lat: Vec<Duration>,
    cpu: Vec<f64>,
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let agent_bin = args
        .next()
        .context("usage: bench-scrape AGENT_BIN [SCRAPES]")?;
    let scrapes: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);

    let work = tempfile::tempdir()?;
    let flink_logs = work.path().join("flink-log");
    let flink = LocalFlink::start_cluster(&flink_logs, &[], 2)?;
    let job = flink.submit_job_with("wide", "wide-21x8", &["8"])?;
    flink.wait_job_state(&job, "RUNNING", Duration::from_secs(180))?;
    let tm = flink
        .taskmanager_ids()?
        .into_iter()
        .next()
        .context("no TaskManager")?;

    let agent_logs = work.path().join("agent-log");
    std::fs::create_dir(&agent_logs)?;
    // A broker that is up, as in a cluster: an unreachable one would add librdkafka's
    // reconnection attempts to the idle figures.
    let broker = Broker::start(work.path())?;
    let mut agents = Vec::new();
    for (role, pod) in [("JobManager", "bench-jm"), ("TaskManager", tm.as_str())] {
        for mode in ["per-vertex", "per-subtask"] {
            let port = free_port()?;
            let component = role.to_ascii_lowercase();
            let child = ChildGuard::spawn(
                "flink-agent",
                Command::new(&agent_bin)
                    .arg("--log-dir")
                    .arg(&agent_logs)
                    .arg("--state-file")
                    .arg(work.path().join(format!("state-{role}-{mode}.json")))
                    .args(["--brokers", &broker.bootstrap(), "--topic", "unused"])
                    .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
                    .args(["--flink-rest", &flink.rest_url()])
                    .args(["--pod-name", pod, "--component", &component])
                    .args(["--cluster-id", flink_injector_tests::flink::CLUSTER_ID])
                    .args(["--flink-task-metrics", mode])
                    // As the image runs it (its allocator settings).
                    .envs(flink_injector_tests::AGENT_ALLOCATOR_ENV)
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )?;
            agents.push(Agent {
                role,
                mode,
                port,
                child,
                series: 0,
                bytes: 0,
                lat: Vec::new(),
                cpu: Vec::new(),
            });
        }
    }
    // Flink's first metric answers are empty: wait until each agent has all it will have (the
    // task series of all 21 vertices where its role exports them).
    for a in &mut agents {
        let wants_tasks = (a.role == "JobManager") == (a.mode == "per-vertex");
        wait_for(
            &format!("the {} agent ({})", a.role, a.mode),
            Duration::from_secs(180),
            || {
                let Ok((200, body)) = http_get(a.port, "/metrics") else {
                    return Ok(None);
                };
                let tasks: std::collections::BTreeSet<&str> = body
                    .lines()
                    .filter(|l| l.starts_with("flink_taskmanager_job_task_busyTimeMsPerSecond{"))
                    .filter_map(|l| l.split("task_name=\"").nth(1)?.split('"').next())
                    .collect();
                let up = body.contains("flink_up 1");
                a.series = body
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.starts_with("flink_agent_"))
                    .count();
                Ok((up && (!wants_tasks || tasks.len() >= 21)).then_some(()))
            },
        )?;
    }
    std::thread::sleep(Duration::from_secs(6));

    for _ in 0..scrapes {
        let round = Instant::now();
        for a in &mut agents {
            let c0 = cpu_seconds(a.child.pid())?;
            let t = Instant::now();
            let (code, body) = http_get(a.port, "/metrics")?;
            a.lat.push(t.elapsed());
            if code != 200 || !body.contains("flink_up 1") {
                bail!("scrape of the {} agent ({}) failed: {code}", a.role, a.mode);
            }
            a.bytes = body.len();
            // The agent's CPU is read after it answered; ticks are 10 ms, so the mean over many
            // scrapes is the figure, not one sample.
            std::thread::sleep(Duration::from_millis(200));
            a.cpu.push(cpu_seconds(a.child.pid())? - c0);
        }
        std::thread::sleep(
            (round + Duration::from_secs(6)).saturating_duration_since(Instant::now()),
        );
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| 21 vertices x 8 subtasks, 2 TaskManagers | task metrics | Flink series | body KiB | scrapes | p50 ms | max ms | agent CPU ms per scrape (mean) | RSS MiB |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for a in &mut agents {
        a.lat.sort();
        let mean_cpu = a.cpu.iter().sum::<f64>() / a.cpu.len() as f64;
        println!(
            "| {} pod's agent | {} | {} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            a.role,
            a.mode,
            a.series,
            a.bytes as f64 / 1024.0,
            a.lat.len(),
            ms(a.lat[a.lat.len() / 2]),
            ms(a.lat[a.lat.len() - 1]),
            mean_cpu * 1000.0,
            status_mib(a.child.pid(), "VmRSS")?
        );
    }

    // Idle beside a real Flink: the log dir is empty, Prometheus scrapes every 15 s.
    let (scrape_every, idle_scrapes) = (Duration::from_secs(15), 4u32);
    let c0: Vec<f64> = agents
        .iter()
        .map(|a| cpu_seconds(a.child.pid()))
        .collect::<Result<_>>()?;
    let t0 = Instant::now();
    for i in 1..=idle_scrapes {
        for a in &agents {
            let (code, body) = http_get(a.port, "/metrics")?;
            if code != 200 || !body.contains("flink_up 1") {
                bail!("scrape failed: {code}");
            }
        }
        std::thread::sleep((t0 + scrape_every * i).saturating_duration_since(Instant::now()));
    }
    let secs = t0.elapsed().as_secs_f64();
    println!();
    println!("| idle beside that Flink: nothing to ship, /metrics every 15 s | task metrics | seconds | scrapes | CPU % of a core | RSS MiB | of which anonymous | peak RSS MiB |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (a, c0) in agents.iter().zip(c0) {
        let idle_cpu = cpu_seconds(a.child.pid())? - c0;
        println!(
            "| {} pod's agent | {} | {secs:.0} | {idle_scrapes} | {:.2} | {:.1} | {:.1} | {:.1} |",
            a.role,
            a.mode,
            idle_cpu / secs * 100.0,
            status_mib(a.child.pid(), "VmRSS")?,
            status_mib(a.child.pid(), "RssAnon")?,
            status_mib(a.child.pid(), "VmHWM")?
        );
    }
    drop(agents);
    drop(broker);
    drop(flink);
    Ok(())
}
