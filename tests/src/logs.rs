//! Running the real `flink-logs` binary, once or following, and reading what it says.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::agent::AgentProc;
use crate::{wait_for, workspace_bin, ChildGuard};

/// A run that takes longer than this hangs (every Kafka wait of flink-logs has a deadline).
const HANG: Duration = Duration::from_secs(120);

/// What one run of `flink-logs` printed, and how it exited.
#[derive(Debug)]
pub struct LogsRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl LogsRun {
    /// The number before `what` in the summary line (`fetched 12 messages`: `"messages"`
    /// after `"fetched"`).
    pub fn figure(&self, before: &str, after: &str) -> Result<u64> {
        let re = regex::Regex::new(&format!(
            r"{} (\d+) {}",
            regex::escape(before),
            regex::escape(after)
        ))?;
        let caps = re
            .captures(&self.stderr)
            .with_context(|| format!("no '{before} N {after}' in stderr: {}", self.stderr))?;
        Ok(caps[1].parse()?)
    }

    pub fn fetched(&self) -> Result<u64> {
        self.figure("fetched", "messages")
    }

    pub fn printed(&self) -> Result<u64> {
        self.figure("printed", "events")
    }

    pub fn duplicates(&self) -> Result<u64> {
        self.figure("dropped", "duplicates")
    }

    pub fn not_agent(&self) -> Result<u64> {
        self.figure("skipped", "messages that are not the agent's")
    }

    /// Fails with the run's stderr unless it exited with `code`.
    pub fn expect_code(&self, code: i32) -> Result<&Self> {
        anyhow::ensure!(
            self.code == Some(code),
            "flink-logs exited {:?}, not {code}\nstderr: {}\nstdout (start): {}",
            self.code,
            self.stderr,
            self.stdout.chars().take(2000).collect::<String>()
        );
        Ok(self)
    }
}

/// The binary, with the broker and topic given as the env vars it also reads.
fn command(bootstrap: &str, topic: &str, args: &[&str]) -> Result<Command> {
    let mut cmd = Command::new(workspace_bin("flink-logs")?);
    cmd.args(args)
        .env("FLINK_LOGS_BROKERS", bootstrap)
        .env("FLINK_LOGS_TOPIC", topic)
        .env_remove("FLINK_LOGS_LOG")
        .stdin(Stdio::null());
    Ok(cmd)
}

/// Runs `flink-logs` to its end; an error if it is still running after two minutes.
pub fn flink_logs(bootstrap: &str, topic: &str, args: &[&str]) -> Result<LogsRun> {
    let mut cmd = command(bootstrap, topic, args)?;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut guard = ChildGuard::spawn("flink-logs", &mut cmd)?;
    let take = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = take(
        guard
            .child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = take(
        guard
            .child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let status = guard
        .wait_timeout(HANG)
        .with_context(|| format!("flink-logs {args:?} hangs"))?;
    let elapsed = started.elapsed();
    let join = |h: std::thread::JoinHandle<String>| {
        h.join()
            .map_err(|_| anyhow::anyhow!("output reader panicked"))
    };
    Ok(LogsRun {
        code: status.code(),
        stdout: join(out)?,
        stderr: join(err)?,
        elapsed,
    })
}

/// `flink-logs --follow`, its output lines collected as they come.
pub struct Follower {
    guard: ChildGuard,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: PathBuf,
}

impl Follower {
    pub fn start(bootstrap: &str, topic: &str, args: &[&str], work: &Path) -> Result<Self> {
        let mut cmd = command(bootstrap, topic, args)?;
        cmd.arg("--follow");
        let stderr = work.join(format!("flink-logs-follow-{}.err", crate::free_port()?));
        cmd.stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?);
        let mut guard = ChildGuard::spawn("flink-logs --follow", &mut cmd)?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = guard.child.stdout.take() {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut l) = lines.lock() {
                        l.push(line);
                    }
                }
            });
        }
        Ok(Self {
            guard,
            lines,
            stderr,
        })
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until a printed line contains `needle`.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> Result<()> {
        wait_for(&format!("flink-logs to print {needle:?}"), timeout, || {
            Ok(self
                .lines()
                .iter()
                .any(|l| l.contains(needle))
                .then_some(()))
        })
        .with_context(|| {
            format!(
                "printed so far: {:#?}\nstderr: {}",
                self.lines(),
                self.stderr()
            )
        })
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.guard.is_running()
    }

    /// Waits for it to exit on its own; its exit code and stderr.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<(Option<i32>, String)> {
        let status = self.guard.wait_timeout(timeout)?;
        Ok((status.code(), self.stderr()))
    }

    /// SIGINT, as Ctrl-C: it prints what it holds and its summary, and exits.
    pub fn interrupt(&mut self) -> Result<(Option<i32>, String)> {
        self.guard.signal(2)?;
        self.wait_exit(Duration::from_secs(30))
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `ms` as log4j writes it in a pod whose zone is `offset_hours` east of UTC
/// (`2026-12-06 04:01:52,123`).
pub fn flink_time(ms: i64, offset_hours: i32) -> String {
    use chrono::Offset;
    let offset =
        chrono::FixedOffset::east_opt(offset_hours * 3600).unwrap_or_else(|| chrono::Utc.fix());
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .with_timezone(&offset)
        .format("%Y-%m-%d %H:%M:%S,%3f")
        .to_string()
}

/// `ms` as RFC 3339 (`--from`/`--to`).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Waits until the agent has read `lines` lines and Kafka has acknowledged all of it.
pub fn wait_shipped(agent: &AgentProc, lines: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let read = agent.metric("flink_agent_lines_read_total")?;
        let unshipped = agent.metric_sum("flink_agent_unshipped_bytes")?;
        let in_flight = agent.metric("flink_agent_events_in_flight")?;
        if read == lines as f64 && unshipped == 0.0 && in_flight == 0.0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "agent read {read} of {lines} lines, {unshipped} bytes unshipped, {in_flight} in flight\n{}",
                agent.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
