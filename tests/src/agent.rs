//! Starting the real `flink-agent` binary against a log dir and a broker, and reading its
//! metrics.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{free_port, wait_for, workspace_bin, ChildGuard};

pub struct AgentProc {
    pub guard: ChildGuard,
    pub metrics_port: u16,
    /// The agent's own (JSON) log, for failure messages.
    pub stderr: PathBuf,
}

/// [`read_records`], requiring that no record arrived twice; returns the events.
pub fn shipped_once(
    broker: &crate::broker::Broker,
    topic: &str,
    tag: &str,
    n: usize,
    agent: &AgentProc,
) -> Result<Vec<serde_json::Value>> {
    let (events, check) = read_records(&broker.bootstrap(), topic, tag, n, agent)?;
    anyhow::ensure!(check.duplicates == 0, "{check:?}\n{}", agent.log_tail());
    Ok(events)
}

/// Where the agent keeps its read positions when `--state-file` is not given.
pub fn default_state_file(log_dir: &Path) -> PathBuf {
    log_dir.join(".flink-agent-checkpoints.json")
}

/// The committed offset of `log` in the checkpoint `state_file`: `None` while the file does
/// not exist or has no entry for `log`. The agent replaces the file by rename, so a file that
/// exists is whole: one that does not parse is an error.
pub fn checkpoint_offset(state_file: &Path, log: &Path) -> Result<Option<u64>> {
    let s = match std::fs::read_to_string(state_file) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", state_file.display())),
    };
    let v: serde_json::Value =
        serde_json::from_str(&s).with_context(|| format!("state file is not JSON: {s}"))?;
    let p = log.to_string_lossy();
    Ok(v["files"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["path"] == p.as_ref()))
        .and_then(|f| f["offset"].as_u64()))
}

/// Settings tuned for tests: short idle flush, rescans and checkpoint writes.
pub fn start_agent(
    log_dir: &Path,
    work_dir: &Path,
    bootstrap: &str,
    topic: &str,
    extra: &[&str],
) -> Result<AgentProc> {
    start_agent_under(&[], log_dir, work_dir, bootstrap, topic, extra)
}

/// [`start_agent`] with the agent run by `wrapper` (e.g. `unshare ... sh -c '...; exec "$@"'`),
/// which must `exec` the agent so signals reach it.
pub fn start_agent_under(
    wrapper: &[&str],
    log_dir: &Path,
    work_dir: &Path,
    bootstrap: &str,
    topic: &str,
    extra: &[&str],
) -> Result<AgentProc> {
    let bin = workspace_bin("flink-agent")?;
    start_agent_bin(&bin, wrapper, log_dir, work_dir, bootstrap, topic, extra)
}

/// The image's build of the agent, made by `scripts/build-agent-static.sh` (scripts/test.sh
/// runs it); missing is an error that says so, never a skip.
pub fn static_agent_bin() -> Result<PathBuf> {
    let bin = crate::target_dir().join("static").join("flink-agent");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: run scripts/build-agent-static.sh first",
        bin.display()
    );
    Ok(bin)
}

/// Who an agent says it is: what the webhook fills from the Downward API, and the pod's `TZ`.
#[derive(Debug, Clone)]
pub struct PodIdentity {
    pub pod: String,
    pub cluster_id: String,
    pub component: String,
    pub tz: String,
}

impl Default for PodIdentity {
    fn default() -> Self {
        Self {
            pod: "test-pod".into(),
            cluster_id: "test-cluster".into(),
            component: "taskmanager".into(),
            tz: "UTC".into(),
        }
    }
}

impl PodIdentity {
    pub fn new(pod: &str, cluster_id: &str, component: &str, tz: &str) -> Self {
        Self {
            pod: pod.into(),
            cluster_id: cluster_id.into(),
            component: component.into(),
            tz: tz.into(),
        }
    }
}

/// [`start_agent`] for a pod of its own (several agents sharing a topic).
pub fn start_agent_as(
    pod: &PodIdentity,
    log_dir: &Path,
    work_dir: &Path,
    bootstrap: &str,
    topic: &str,
    extra: &[&str],
) -> Result<AgentProc> {
    let bin = workspace_bin("flink-agent")?;
    spawn_agent(&bin, &[], pod, log_dir, work_dir, bootstrap, topic, extra)
}

/// [`start_agent_under`] with a given build of the agent.
pub fn start_agent_bin(
    bin: &Path,
    wrapper: &[&str],
    log_dir: &Path,
    work_dir: &Path,
    bootstrap: &str,
    topic: &str,
    extra: &[&str],
) -> Result<AgentProc> {
    let pod = PodIdentity::default();
    spawn_agent(
        bin, wrapper, &pod, log_dir, work_dir, bootstrap, topic, extra,
    )
}

#[allow(clippy::too_many_arguments)]
fn spawn_agent(
    bin: &Path,
    wrapper: &[&str],
    pod: &PodIdentity,
    log_dir: &Path,
    work_dir: &Path,
    bootstrap: &str,
    topic: &str,
    extra: &[&str],
) -> Result<AgentProc> {
    let metrics_port = free_port()?;
    let stderr = work_dir.join(format!("agent-{metrics_port}.log"));
    let err = std::fs::File::create(&stderr)?;
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("--log-dir")
        .arg(log_dir)
        .arg("--brokers")
        .arg(bootstrap)
        .arg("--topic")
        .arg(topic)
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .arg("--flink-rest")
        .arg("http://127.0.0.1:1")
        .args(["--pod-name", &pod.pod, "--namespace", "test-ns"])
        .args(["--node-name", "test-node", "--pod-ip", "127.0.0.1"])
        .args([
            "--cluster-id",
            &pod.cluster_id,
            "--component",
            &pod.component,
        ])
        .args(["--multiline-flush", "300ms", "--rescan-interval", "200ms"])
        .args(["--checkpoint-interval", "200ms"])
        .args(extra)
        .envs(crate::AGENT_ALLOCATOR_ENV)
        .env("TZ", &pod.tz)
        .env("FLINK_AGENT_LOG", "info,librdkafka=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    let guard = ChildGuard::spawn("flink-agent", &mut cmd)?;
    let agent = AgentProc {
        guard,
        metrics_port,
        stderr,
    };
    wait_for("the agent's /readyz", Duration::from_secs(30), || {
        Ok(http_get(metrics_port, "/readyz")
            .ok()
            .filter(|(code, _)| *code == 200)
            .map(|_| ()))
    })
    .with_context(|| agent.log_tail())?;
    Ok(agent)
}

/// The agent binary in a Flink pod's role as the webhook starts it (`component` `jobmanager` or
/// `taskmanager`; `pod` is the pod name, which is a TaskManager's resource id), reading `flink`'s
/// REST API and tailing `log_dir`; its state file and log go under `work`. Kafka is unreachable:
/// Flink's metrics must not care.
pub fn start_agent_beside(
    flink: &crate::flink::LocalFlink,
    log_dir: &Path,
    work: &Path,
    component: &str,
    pod: &str,
) -> Result<AgentProc> {
    let metrics_port = free_port()?;
    let stderr = work.join(format!("agent-{metrics_port}.log"));
    let mut cmd = Command::new(workspace_bin("flink-agent")?);
    cmd.arg("--log-dir")
        .arg(log_dir)
        .arg("--state-file")
        .arg(work.join(format!("agent-{metrics_port}-state.json")))
        .args(["--brokers", "127.0.0.1:1", "--topic", "flink-logs"])
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .arg("--flink-rest")
        .arg(flink.rest_url())
        .args(["--pod-name", pod, "--namespace", "e2e"])
        .args([
            "--cluster-id",
            crate::flink::CLUSTER_ID,
            "--component",
            component,
        ])
        .env("FLINK_AGENT_LOG", "info,librdkafka=off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr)?);
    let guard = ChildGuard::spawn("flink-agent", &mut cmd)?;
    let agent = AgentProc {
        guard,
        metrics_port,
        stderr,
    };
    crate::wait_for_port(metrics_port, Duration::from_secs(30))
        .with_context(|| agent.log_tail())?;
    Ok(agent)
}

impl AgentProc {
    /// `GET /metrics`: the body of a 200 answer.
    pub fn scrape(&self) -> Result<String> {
        let (status, body) = crate::flink::http_get(self.metrics_port, "/metrics")?;
        if status != 200 {
            anyhow::bail!("GET /metrics: HTTP {status}");
        }
        Ok(String::from_utf8(body)?)
    }

    /// The last lines of the agent's log.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!("agent log:\n{}", lines[from..].join("\n"))
    }

    /// The sum of every sample of a metric on /metrics, whatever its labels (0 when the
    /// metric has no sample yet, as a labelled family that was never touched).
    pub fn metric_sum(&self, name: &str) -> Result<f64> {
        let (_, body) = http_get(self.metrics_port, "/metrics")?;
        let mut sum = 0.0;
        for line in body.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let value = if let Some(labelled) = rest.strip_prefix('{') {
                labelled.rsplit_once("} ").map(|(_, v)| v)
            } else {
                rest.strip_prefix(' ')
            };
            if let Some(v) = value {
                sum += v.trim().parse::<f64>().with_context(|| line.to_string())?;
            }
        }
        Ok(sum)
    }

    /// Waits until the sum of a metric's samples satisfies `ok`; returns that sum.
    pub fn wait_metric(
        &self,
        name: &str,
        timeout: Duration,
        ok: impl Fn(f64) -> bool,
    ) -> Result<f64> {
        wait_for(&format!("{name} to change"), timeout, || {
            let v = self.metric_sum(name)?;
            Ok(ok(v).then_some(v))
        })
        .with_context(|| self.log_tail())
    }

    /// Whether the agent's log has a line containing `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.stderr).is_ok_and(|s| s.contains(needle))
    }

    /// The value of an unlabelled metric on /metrics.
    pub fn metric(&self, name: &str) -> Result<f64> {
        let (_, body) = http_get(self.metrics_port, "/metrics")?;
        body.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .with_context(|| format!("metric {name} not found"))
    }
}

/// A minimal HTTP/1.0 GET on 127.0.0.1: (status, body).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// The timestamp of record `i` in Flink's layout: `i` milliseconds after midnight, so records
/// are in time order and every one is distinct within a day.
pub fn flink_timestamp(i: usize) -> String {
    format!(
        "2026-11-22 {:02}:{:02}:{:02},{:03}",
        (i / 3_600_000) % 24,
        (i / 60_000) % 60,
        (i / 1000) % 60,
        i % 1000
    )
}

/// One Flink-style log record in Flink's layout: `rec <tag>:<i>` in its message; every tenth
/// record is an ERROR with a 9-line stack trace (outer exception, frames, Caused by, ... N more).
pub fn flink_record(tag: &str, i: usize) -> String {
    flink_record_at(tag, i, &flink_timestamp(i))
}

/// [`flink_record`] stamped `ts` (Flink's layout, e.g. [`crate::logs::flink_time`]).
pub fn flink_record_at(tag: &str, i: usize, ts: &str) -> String {
    if matches!(i % 10, 0) {
        let mut s = format!(
            "{ts} ERROR {:<60} [] - rec {tag}:{i} task failed\n",
            "org.apache.flink.runtime.taskmanager.Task"
        );
        s.push_str(&format!("java.lang.IllegalStateException: boom {i}\n"));
        for f in 0..5 {
            s.push_str(&format!(
                "\tat org.example.Job.step{f}(Job.java:{})\n",
                10 + f
            ));
        }
        s.push_str(&format!("Caused by: java.io.IOException: inner {i}\n"));
        s.push_str("\t... 5 more\n");
        s
    } else {
        format!(
            "{ts} INFO  {:<60} [] - rec {tag}:{i} checkpoint completed for job 0123456789abcdef\n",
            "org.apache.flink.runtime.checkpoint.CheckpointCoordinator"
        )
    }
}

/// Lines in `flink_record(_, i)`.
pub fn record_lines(i: usize) -> usize {
    if matches!(i % 10, 0) {
        9
    } else {
        1
    }
}

/// What the consumer saw of records `0..n` of `tag`.
#[derive(Debug, Default)]
pub struct RecordCheck {
    pub seen: usize,
    pub duplicates: usize,
    pub missing: Vec<usize>,
    /// Records whose first copy arrived after a later record of the same file.
    pub out_of_order: usize,
}

/// Checks the events of `tag`: each record grouped whole (message, stack trace, error fields),
/// first occurrences in file order (counted in `out_of_order`). Errors on a malformed event.
pub fn check_records(events: &[serde_json::Value], tag: &str, n: usize) -> Result<RecordCheck> {
    let prefix = format!("rec {tag}:");
    let mut seen = vec![0usize; n];
    // Order is checked per file (rotation spreads records over files read side by side); a
    // file is named by its event ids, which carry its identity (ids are `<file>-<offset>`).
    let mut last_first: std::collections::HashMap<String, usize> = Default::default();
    let mut out = RecordCheck::default();
    for ev in events {
        let msg = ev["message"].as_str().unwrap_or_default();
        let Some(rest) = msg.strip_prefix(&prefix) else {
            continue;
        };
        let i: usize = rest
            .split(' ')
            .next()
            .and_then(|x| x.parse().ok())
            .with_context(|| format!("bad record message {msg:?}"))?;
        anyhow::ensure!(i < n, "record {i} beyond {n}");
        let lines = msg.lines().count();
        anyhow::ensure!(
            lines == record_lines(i),
            "record {tag}:{i} has {lines} lines, want {}: {msg:?}",
            record_lines(i)
        );
        if matches!(i % 10, 0) {
            anyhow::ensure!(
                ev["error"]["type"] == "java.lang.IllegalStateException"
                    && ev["error"]["message"] == format!("boom {i}")
                    && ev["log"]["level"] == "ERROR",
                "record {tag}:{i}: wrong error fields: {ev}"
            );
        }
        if seen[i] == 0 {
            let id = ev["event"]["id"].as_str().unwrap_or_default();
            let file = id.rsplit_once('-').map_or(id, |(f, _)| f).to_string();
            if let Some(prev) = last_first.get(&file) {
                if i < *prev {
                    out.out_of_order += 1;
                }
            }
            last_first.insert(file, i);
            out.seen += 1;
        } else {
            out.duplicates += 1;
        }
        seen[i] += 1;
    }
    out.missing = (0..n).filter(|&i| seen[i] == 0).collect();
    Ok(out)
}

/// Reads `topic` until records `0..n` of `tag` all arrived (or nothing new came for 40 s) and
/// checks them: none missing, each grouped whole, in file order. Duplicates are the caller's
/// to judge (at-least-once allows them after a crash): they are in the returned check.
pub fn read_records(
    bootstrap: &str,
    topic: &str,
    tag: &str,
    n: usize,
    agent: &AgentProc,
) -> Result<(Vec<serde_json::Value>, RecordCheck)> {
    let mut reader = crate::broker::TopicReader::new(bootstrap, topic)?;
    let mut events = Vec::new();
    let done =
        |evs: &[serde_json::Value]| check_records(evs, tag, n).is_ok_and(|c| c.missing.is_empty());
    reader.read_until(
        &mut events,
        Duration::from_secs(40),
        Duration::from_secs(300),
        done,
    )?;
    reader.settle(&mut events)?;
    let check = check_records(&events, tag, n).with_context(|| agent.log_tail())?;
    anyhow::ensure!(
        check.missing.is_empty(),
        "{} of {n} records of {tag} missing, first {:?}\n{}",
        check.missing.len(),
        &check.missing[..check.missing.len().min(10)],
        agent.log_tail()
    );
    anyhow::ensure!(
        check.out_of_order == 0,
        "{} records of {tag} out of order\n{}",
        check.out_of_order,
        agent.log_tail()
    );
    Ok((events, check))
}
