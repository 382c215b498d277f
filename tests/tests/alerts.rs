//! The alert rules (`manifests/monitoring/`): valid for Prometheus (`promtool check rules`), doing
//! what they say on synthetic series (`promtool test rules`, the Debian `prometheus` package),
//! the PrometheusRule carrying the same groups as the plain rules file, and every metric they
//! read served by the real binaries.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use flink_injector_tests::agent::{http_get, start_agent};
use flink_injector_tests::apiserver::{recorded_script, watch_lines, write_kubeconfig, StandIn};
use flink_injector_tests::webhook::{example_policy, start_with};
use flink_injector_tests::workspace_root;
use serde_json::Value;

fn monitoring() -> std::path::PathBuf {
    workspace_root().join("manifests/monitoring")
}

fn promtool(args: &[&str]) -> Result<String> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(monitoring())
        .output()
        .context("running promtool (Debian package prometheus; scripts/install-test-deps.sh installs it)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "promtool {}: {text}", args.join(" "));
    Ok(text)
}

fn yaml(path: &std::path::Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(serde_norway::from_str(&text)?)
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() -> Result<()> {
    let checked = promtool(&["check", "rules", "rules.yaml"])?;
    ensure!(checked.contains("SUCCESS: 8 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "rules.test.yaml"])?;
    ensure!(tested.contains("SUCCESS"), "{tested}");
    Ok(())
}

#[test]
fn a_broken_expectation_fails_the_unit_tests() -> Result<()> {
    // The unit tests can fail: the same file with one expected severity changed.
    let dir = tempfile::tempdir()?;
    std::fs::copy(
        monitoring().join("rules.yaml"),
        dir.path().join("rules.yaml"),
    )?;
    let tests = std::fs::read_to_string(monitoring().join("rules.test.yaml"))?.replacen(
        "{severity: critical, namespace: jobs, pod: tm-1}",
        "{severity: info, namespace: jobs, pod: tm-1}",
        1,
    );
    std::fs::write(dir.path().join("rules.test.yaml"), tests)?;
    let out = Command::new("promtool")
        .args(["test", "rules", "rules.test.yaml"])
        .current_dir(dir.path())
        .output()?;
    ensure!(
        !out.status.success(),
        "promtool accepted a wrong expectation"
    );
    Ok(())
}

#[test]
fn the_prometheus_rule_carries_the_same_groups_as_the_rules_file() -> Result<()> {
    let plain = yaml(&monitoring().join("rules.yaml"))?;
    let rule = yaml(&monitoring().join("prometheusrule.yaml"))?;
    ensure!(rule["apiVersion"] == "monitoring.coreos.com/v1" && rule["kind"] == "PrometheusRule");
    ensure!(rule["metadata"]["namespace"] == "flink-system");
    ensure!(
        rule["spec"]["groups"] == plain["groups"],
        "manifests/monitoring/prometheusrule.yaml and rules.yaml differ"
    );
    Ok(())
}

/// The `flink_agent_*` and `flink_webhook_*` names the rules read.
fn metric_names(rules: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = rules;
    while let Some(at) = rest.find("flink_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        if name.starts_with("flink_agent_") || name.starts_with("flink_webhook_") {
            names.insert(name.to_string());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_metric_the_rules_read_is_served() -> Result<()> {
    let rules = yaml(&monitoring().join("rules.yaml"))?;
    let mut names = BTreeSet::new();
    for group in rules["groups"].as_array().context("groups")? {
        for rule in group["rules"].as_array().context("rules")? {
            names.extend(metric_names(rule["expr"].as_str().context("expr")?));
        }
    }
    ensure!(names.len() >= 8, "{names:?}");

    // The detector serves its gauge once it has seen a missed pod: a stand-in API server (with
    // the recorded answers) shows it one.
    let rt = tokio::runtime::Runtime::new()?;
    let mut script = recorded_script()?;
    let missed = watch_lines("apiserver/watch-pods.jsonl")?
        .into_iter()
        .find(|l| l["type"] == "ADDED" && l["object"]["metadata"].get("annotations").is_none())
        .context("an uninjected pod in the recorded watch")?;
    script.pod_lists[0].push(missed["object"].clone());
    // Installed before that pod was created, so it counts as missed.
    script.lease_created = "2026-12-06T01:00:00Z".into();
    let standin = rt.block_on(StandIn::start(script))?;
    let kube = tempfile::tempdir()?;
    let kubeconfig = kube.path().join("kubeconfig");
    write_kubeconfig(&kubeconfig, standin.addr)?;
    let hook = start_with(&example_policy()?, |cmd| {
        cmd.env("KUBECONFIG", &kubeconfig);
    })?;
    let webhook_text = flink_injector_tests::wait_for(
        "the detector's gauge",
        std::time::Duration::from_secs(30),
        || {
            let text = rt.block_on(hook.metrics())?;
            Ok(text
                .contains("flink_webhook_uninjected_pods{")
                .then_some(text))
        },
    )?;
    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir)?;
    // A file to tail, so that the per-file series exist.
    std::fs::write(log_dir.join("jobmanager.log"), "x\n")?;
    let agent = start_agent(&log_dir, work.path(), "127.0.0.1:1", "unused", &[])?;
    let agent_text = flink_injector_tests::wait_for(
        "the agent's per-file series",
        std::time::Duration::from_secs(30),
        || {
            let (_, text) = http_get(agent.metrics_port, "/metrics")?;
            Ok(text
                .contains("flink_agent_unshipped_bytes{")
                .then_some(text))
        },
    )?;

    for name in &names {
        // Counters and infos are declared under their family's name (OpenMetrics).
        let family = name
            .strip_suffix("_total")
            .or_else(|| name.strip_suffix("_info"))
            .unwrap_or(name);
        let text = if name.starts_with("flink_agent_") {
            &agent_text
        } else {
            &webhook_text
        };
        ensure!(
            text.contains(&format!("# TYPE {family} ")),
            "the rules read {name}, which is not served:\n{text}"
        );
    }
    Ok(())
}
