//! hostNetwork Flink (`kubernetes.hostnetwork.enabled: true`): pods share the node's ports.
//! Flink binds its REST endpoint on a random port, and the agent's default
//! `http://localhost:8081` may be another cluster's JobManager. Here, on one host: a decoy Flink
//! of another cluster on 8081, this cluster's Flink on a random REST port writing into agent A's
//! log dir, and two JobManager agents. A must learn the real port from Flink's log and export
//! this cluster's metrics; B, whose Flink has not announced itself, must find the decoy and
//! export `flink_up 0` with the reason, never the decoy's series. Their probes carry per-pod
//! tokens: one agent must not pass the other's probes.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use flink_injector_tests::flink::{LocalFlink, CLUSTER_ID};
use flink_injector_tests::{free_port, wait_for, workspace_bin, ChildGuard};

/// A JobManager pod's agent with no `--flink-rest`, as the webhook starts it.
fn start_agent(
    work: &std::path::Path,
    name: &str,
    log_dir: &std::path::Path,
    token: &str,
) -> Result<(ChildGuard, u16)> {
    let port = free_port()?;
    let mut cmd = Command::new(workspace_bin("flink-agent")?);
    cmd.arg("--log-dir")
        .arg(log_dir)
        .arg("--state-file")
        .arg(work.join(format!("{name}-state.json")))
        .args(["--brokers", "127.0.0.1:1", "--topic", "flink-logs"])
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--pod-name", name, "--namespace", "jobs"])
        .args(["--cluster-id", CLUSTER_ID, "--component", "jobmanager"])
        .args(["--probe-token", token])
        .env_remove("FLINK_AGENT_FLINK_REST")
        .env("FLINK_AGENT_LOG", "info,librdkafka=off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join(format!("{name}.log")))?);
    Ok((ChildGuard::spawn(name, &mut cmd)?, port))
}

/// GET with an optional probe header: (status, body).
fn get(port: u16, path: &str, token: Option<&str>) -> Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let header = token
        .map(|t| format!("x-flink-agent-probe: {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{header}connection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_string()))
}

fn has_series(text: &str, name: &str) -> bool {
    text.lines()
        .any(|l| !l.starts_with('#') && l.starts_with(name))
}

#[test]
fn on_a_shared_host_each_agent_reads_only_its_own_flink() -> Result<()> {
    let work = tempfile::tempdir()?;
    let dir = |name: &str| -> Result<std::path::PathBuf> {
        let d = work.path().join(name);
        std::fs::create_dir(&d)?;
        Ok(d)
    };
    let _decoy = LocalFlink::start_with(
        &dir("decoy-logs")?,
        &[
            ("rest.port", "8081"),
            ("kubernetes.cluster-id", "someone-else"),
        ],
    )
    .context("the decoy Flink needs port 8081 free")?;
    let (a_logs, b_logs) = (dir("pod-a-logs")?, dir("pod-b-logs")?);
    let ours = LocalFlink::start_with(&a_logs, &[("rest.port", "0")])?;
    assert_ne!(ours.rest_port(), 8081);

    let (_a, a_port) = start_agent(work.path(), "pod-a", &a_logs, "token-a")?;
    let (_b, b_port) = start_agent(work.path(), "pod-b", &b_logs, "token-b")?;
    let log_of = |name: &str| {
        std::fs::read_to_string(work.path().join(format!("{name}.log"))).unwrap_or_default()
    };

    let a = wait_for(
        "agent A exporting its Flink",
        Duration::from_secs(120),
        || {
            let (code, text) = get(a_port, "/metrics", None)?;
            Ok((code == 200
                && text.contains("\nflink_up 1")
                && has_series(&text, "flink_jobmanager_Status_JVM_Memory_Heap_Used"))
            .then_some(text))
        },
    )
    .with_context(|| log_of("pod-a"))?;
    assert!(
        log_of("pod-a").contains(&format!("127.0.0.1:{}", ours.rest_port())),
        "A says where it learned Flink's address: {}",
        log_of("pod-a")
    );
    assert!(!a.contains("flink_down_reason"), "{a}");

    let b = wait_for(
        "agent B refusing the decoy",
        Duration::from_secs(60),
        || {
            let (code, text) = get(b_port, "/metrics", None)?;
            Ok((code == 200 && text.contains("\nflink_up 0")).then_some(text))
        },
    )
    .with_context(|| log_of("pod-b"))?;
    assert!(
        b.contains("flink_down_reason{reason=\"other_cluster\"} 1"),
        "{b}"
    );
    for prefix in ["flink_jobmanager_", "flink_taskmanager_", "flink_job_state"] {
        assert!(
            !has_series(&b, prefix),
            "B exported the decoy's {prefix}*:\n{b}"
        );
    }
    assert!(
        log_of("pod-b").contains("someone-else"),
        "B logs which cluster it found: {}",
        log_of("pod-b")
    );

    // Probes: only the pod's own token passes; /metrics needs none (Prometheus).
    for (port, own, other) in [
        (a_port, "token-a", "token-b"),
        (b_port, "token-b", "token-a"),
    ] {
        for path in ["/readyz", "/healthz"] {
            assert_eq!(
                get(port, path, Some(own))?.0,
                200,
                "{path} with its own token"
            );
            assert_eq!(
                get(port, path, Some(other))?.0,
                421,
                "{path} with the other pod's token"
            );
            assert_eq!(get(port, path, None)?.0, 421, "{path} without a token");
        }
    }
    Ok(())
}
