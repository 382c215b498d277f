//! The README's demo command runs end to end, non-interactively, and shows what it promises: an
//! injected pod, events with Kubernetes metadata arriving in Kafka, and the agent's metrics.

use std::process::Command;

use anyhow::{Context, Result};
use flink_injector_tests::workspace_root;

#[test]
fn demo_runs_end_to_end() -> Result<()> {
    let out = Command::new("bash")
        .arg(workspace_root().join("scripts/demo.sh"))
        .env("CI", "true")
        .output()
        .context("running scripts/demo.sh")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("flink-injector.io/injected: usrlib,host-aliases,timezone,agent"),
        "{stdout}"
    );
    assert!(stdout.contains("\"allowed\": true"), "{stdout}");
    assert!(stdout.contains("add /spec/initContainers"), "{stdout}");
    // At least one event carrying the pod's identity, with the pod's timezone offset.
    assert!(
        stdout.contains("\"name\": \"wordcount-app-655949b6dc-x7k2p\""),
        "{stdout}"
    );
    assert!(stdout.contains("+01:00"), "{stdout}");
    assert!(
        stdout.contains("java.lang.IllegalStateException"),
        "{stdout}"
    );
    let sent = stdout
        .lines()
        .find_map(|l| l.strip_prefix("flink_agent_events_sent_total "))
        .context("metrics excerpt")?;
    assert!(sent.trim().parse::<f64>()? >= 1.0, "{sent}");
    // It cleaned up: no temporary directory left behind.
    let tmp = stdout
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .find(|w| w.contains("flink-injector-demo."))
        })
        .context("demo work dir in output")?;
    let dir = tmp.split("/log").next().unwrap_or(tmp);
    assert!(!std::path::Path::new(dir).exists(), "{dir} left behind");
    Ok(())
}
