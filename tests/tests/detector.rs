//! The missed-injection detector and `audit` against a stand-in API server that answers with what
//! a real kube-apiserver v1.28 answered (tests/fixtures/apiserver/): the watch stream, then
//! `410 Expired`, then the relist; `403` without RBAC; two replicas and one Lease.

use std::collections::BTreeSet;
use std::fs::File;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use flink_injector_tests::agent::http_get;
use flink_injector_tests::apiserver::{
    recorded_script, watch_lines, write_kubeconfig, Seen, StandIn, Step,
};
use flink_injector_tests::webhook::{start_with, Webhook};
use flink_injector_tests::{fixture, wait_for, workspace_bin, workspace_root};

const WAIT: Duration = Duration::from_secs(60);
const MISSED_TM: &str = "session-1-taskmanager-1-1";

fn policy() -> Result<String> {
    Ok(String::from_utf8(fixture("policy/design.yaml")?)?)
}

/// The recorded pod the webhook never saw (added in the recorded watch, no `injected`).
fn recorded_missed_pod() -> Result<Value> {
    watch_lines("apiserver/watch-pods.jsonl")?
        .into_iter()
        .find(|l| l["type"] == "ADDED" && l["object"]["metadata"]["name"] == MISSED_TM)
        .map(|l| l["object"].clone())
        .context("the recorded watch has no ADDED session-1 TaskManager")
}

/// A pod of the recorded shape under another name and uid.
fn renamed(pod: &Value, name: &str, uid: &str) -> Value {
    let mut p = pod.clone();
    p["metadata"]["name"] = json!(name);
    p["metadata"]["uid"] = json!(uid);
    p
}

struct Running {
    hook: Webhook,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn start_webhook(standin: &StandIn, identity: &str) -> Result<Running> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(&kubeconfig, standin.addr)?;
    let log = dir.path().join("webhook.log");
    let stderr = File::create(&log)?;
    let hook = start_with(&policy()?, |cmd| {
        cmd.env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", identity)
            .env("POD_NAMESPACE", "flink-system")
            .env("HOME", dir.path())
            .stderr(Stdio::from(stderr));
    })?;
    Ok(Running {
        hook,
        log,
        _dir: dir,
    })
}

fn metrics(r: &Running) -> Result<String> {
    let (code, body) = http_get(r.hook.metrics_port, "/metrics")?;
    if code != 200 {
        bail!("/metrics answered {code}");
    }
    Ok(body)
}

/// The value of the sample `name{labels}` (exact text), if served.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

const TM_SERIES: &str =
    r#"flink_webhook_uninjected_pods{namespace="flink-jobs",component="taskmanager"}"#;

fn wait_sample(r: &Running, series: &str, want: Option<f64>) -> Result<()> {
    wait_for(&format!("{series} = {want:?}"), WAIT, || {
        Ok((sample(&metrics(r)?, series) == want).then_some(()))
    })
}

fn posts(standin: &StandIn, prefix: &str) -> Vec<Seen> {
    standin
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path.starts_with(prefix))
        .collect()
}

/// The key paths of a JSON document, to compare shapes.
fn keys(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Value::Object(m) = v {
        for (k, child) in m {
            let path = format!("{prefix}/{k}");
            keys(child, &path, out);
            out.insert(path);
        }
    }
}

fn key_set(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    keys(v, "", &mut out);
    out
}

fn event_posts(standin: &StandIn) -> Vec<Value> {
    posts(standin, "/apis/events.k8s.io/v1/namespaces/")
        .into_iter()
        .filter_map(|s| s.body)
        .collect()
}

/// Compares an Event the webhook sent with the recorded request: every field the same, except
/// what names the pod, the time and the note.
fn check_event(sent: &Value, pod: &Value) -> Result<()> {
    let recorded: Value = serde_json::from_slice(&fixture("apiserver/event-request.json")?)?;
    assert_eq!(key_set(sent), key_set(&recorded), "fields of the Event");
    for field in [
        "apiVersion",
        "kind",
        "action",
        "reason",
        "type",
        "reportingController",
    ] {
        assert_eq!(sent[field], recorded[field], "{field}");
    }
    assert_eq!(sent["reportingInstance"], "flink-webhook-0");
    let name = pod["metadata"]["name"].as_str().context("pod name")?;
    assert_eq!(sent["regarding"]["name"], name);
    assert_eq!(sent["regarding"]["uid"], pod["metadata"]["uid"]);
    assert_eq!(sent["regarding"]["namespace"], "flink-jobs");
    assert_eq!(sent["metadata"]["namespace"], "flink-jobs");
    let event_name = sent["metadata"]["name"].as_str().context("event name")?;
    let suffix = event_name
        .strip_prefix(&format!("{name}."))
        .context("event name is <pod>.<hex>")?;
    assert!(
        !suffix.is_empty() && suffix.chars().all(|c| c.is_ascii_hexdigit()),
        "{event_name}"
    );
    let note = sent["note"].as_str().context("note")?;
    assert!(
        note.contains("lacks usrlib, host-aliases, timezone, agent"),
        "{note}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_410_and_relist_report_the_pods_admitted_without_injection() -> Result<()> {
    let lines = watch_lines("apiserver/watch-pods.jsonl")?;
    let expired = watch_lines("apiserver/watch-too-old.jsonl")?;
    let missed = recorded_missed_pod()?;
    // A pod created while the watch was down: only the relist after 410 can show it.
    let gap = renamed(
        &missed,
        "session-2-taskmanager-1-1",
        "b6a1f0e2-0000-4000-8000-000000000002",
    );
    let mut script = recorded_script()?;
    let first = script.pod_lists[0].clone();
    let mut relist = first.clone();
    relist.push(gap.clone());
    script.pod_lists = [first, relist].into();
    // Installed before the recorded pods were created.
    script.lease_created = "2026-12-06T01:00:00Z".into();
    let mut steps: Vec<Step> = Vec::new();
    // ADDED x3, MODIFIED (annotation); then deletion and DELETED, bookmarks; then 410.
    steps.extend(lines[..4].iter().cloned().map(Step::Line));
    steps.push(Step::Gate);
    steps.extend(lines[4..].iter().cloned().map(Step::Line));
    steps.push(Step::Gate);
    steps.extend(expired.into_iter().map(Step::Line));
    script.pod_watches = [steps].into();
    let standin = StandIn::start(script).await?;
    let r = tokio::task::block_in_place(|| start_webhook(&standin, "flink-webhook-0"))?;

    tokio::task::block_in_place(|| -> Result<()> {
        wait_sample(&r, TM_SERIES, Some(1.0))?;
        let body = metrics(&r)?;
        assert_eq!(sample(&body, "flink_webhook_detector_synced"), Some(1.0));
        // The not-opted-in namespace's uninjected pod is not counted; the injected one is not.
        assert!(!body.contains(r#"namespace="flink-other""#), "{body}");
        assert_eq!(
            sample(
                &body,
                r#"flink_webhook_uninjected_pods{namespace="flink-jobs",component="jobmanager"}"#
            ),
            None
        );
        wait_for("the NotInjected Event", WAIT, || {
            Ok((!event_posts(&standin).is_empty()).then_some(()))
        })?;
        Ok(())
    })?;
    let events = event_posts(&standin);
    assert_eq!(events.len(), 1, "{events:?}");
    check_event(&events[0], &missed)?;

    // The Lease as requested, compared with the recorded request.
    let lease_posts = posts(
        &standin,
        "/apis/coordination.k8s.io/v1/namespaces/flink-system/leases",
    );
    let lease = lease_posts
        .first()
        .and_then(|s| s.body.clone())
        .context("no Lease created")?;
    let recorded: Value = serde_json::from_slice(&fixture("apiserver/lease-request.json")?)?;
    assert_eq!(key_set(&lease), key_set(&recorded), "fields of the Lease");
    assert_eq!(lease["metadata"], recorded["metadata"]);
    assert_eq!(
        lease["spec"]["holderIdentity"],
        recorded["spec"]["holderIdentity"]
    );
    assert_eq!(
        lease["spec"]["leaseDurationSeconds"],
        recorded["spec"]["leaseDurationSeconds"]
    );

    // The pod is deleted in the stream: its series goes.
    standin.release();
    tokio::task::block_in_place(|| wait_sample(&r, TM_SERIES, None))?;
    // 410 Expired: a fresh list, which has the pod created meanwhile.
    standin.release();
    tokio::task::block_in_place(|| wait_sample(&r, TM_SERIES, Some(1.0)))?;
    tokio::task::block_in_place(|| {
        wait_for("the second Event", WAIT, || {
            Ok((event_posts(&standin).len() == 2).then_some(()))
        })
    })?;
    check_event(&event_posts(&standin)[1], &gap)?;

    let pod_gets: Vec<Seen> = standin
        .seen()
        .into_iter()
        .filter(|s| s.path == "/api/v1/pods")
        .collect();
    let lists = pod_gets.iter().filter(|s| !s.is_watch()).count();
    assert!(lists >= 2, "a relist after 410: {pod_gets:?}");
    for s in &pod_gets {
        assert!(
            s.accept.contains("as=PartialObjectMetadata"),
            "metadata only: {s:?}"
        );
        assert_eq!(
            s.param("labelSelector"),
            Some("type%3Dflink-native-kubernetes"),
            "{s:?}"
        );
        if s.is_watch() {
            assert_eq!(s.param("allowWatchBookmarks"), Some("true"), "{s:?}");
        }
    }
    let log = std::fs::read_to_string(&r.log)?;
    assert!(
        log.lines()
            .any(|l| l.contains("runs without its injection") && l.contains(MISSED_TM)),
        "{log}"
    );
    assert_rbac_allows(&standin.seen())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rbac_the_detector_says_so_and_retries_while_the_webhook_serves() -> Result<()> {
    let mut script = recorded_script()?;
    script.forbidden = true;
    let standin = StandIn::start(script).await?;
    let mut r = tokio::task::block_in_place(|| start_webhook(&standin, "flink-webhook-0"))?;
    tokio::task::block_in_place(|| {
        wait_for("two refused pod lists (a retry)", WAIT, || {
            let n = standin
                .seen()
                .iter()
                .filter(|s| s.path == "/api/v1/pods" && !s.is_watch())
                .count();
            Ok((n >= 2).then_some(()))
        })
    })?;
    let log = std::fs::read_to_string(&r.log)?;
    let line = log
        .lines()
        .find(|l| l.contains("cannot watch pods"))
        .with_context(|| format!("no log line for the 403: {log}"))?;
    assert!(line.contains("forbidden"), "{line}");
    assert!(line.contains("ClusterRole"), "{line}");
    // Logged once, not on every retry.
    assert_eq!(log.matches("cannot watch pods").count(), 1, "{log}");
    let body = metrics(&r)?;
    assert_eq!(sample(&body, "flink_webhook_detector_synced"), Some(0.0));
    assert!(
        !body
            .lines()
            .any(|l| l.starts_with("flink_webhook_uninjected_pods{")),
        "the gauge must be absent: {body}"
    );
    assert!(r.hook.child.is_running(), "the webhook must not exit");
    let (code, _) = http_get(r.hook.metrics_port, "/readyz")?;
    assert_eq!(code, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_only_the_lease_holder_sends_events() -> Result<()> {
    let mut script = recorded_script()?;
    script.pod_lists[0].push(recorded_missed_pod()?);
    script.lease_created = "2026-12-06T01:00:00Z".into();
    let standin = StandIn::start(script).await?;
    let a = tokio::task::block_in_place(|| start_webhook(&standin, "flink-webhook-0"))?;
    let b = tokio::task::block_in_place(|| start_webhook(&standin, "flink-webhook-1"))?;
    let (leader, follower) = tokio::task::block_in_place(|| -> Result<(&Running, &Running)> {
        for r in [&a, &b] {
            wait_sample(r, TM_SERIES, Some(1.0))?;
        }
        wait_for("one leader", WAIT, || {
            let la = sample(&metrics(&a)?, "flink_webhook_detector_leader");
            let lb = sample(&metrics(&b)?, "flink_webhook_detector_leader");
            Ok(match (la, lb) {
                (Some(1.0), Some(0.0)) => Some((&a, &b)),
                (Some(0.0), Some(1.0)) => Some((&b, &a)),
                _ => None,
            })
        })
    })?;
    let sent = r#"flink_webhook_detector_events_total{result="success"}"#;
    tokio::task::block_in_place(|| wait_sample(leader, sent, Some(1.0)))?;
    assert_eq!(sample(&metrics(follower)?, sent), None);
    assert_eq!(event_posts(&standin).len(), 1);
    let holder = standin.lease().context("no Lease")?;
    let name = holder["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let leader_log = std::fs::read_to_string(&leader.log)?;
    assert!(
        leader_log.contains(&format!("\"identity\":\"{name}\"")),
        "{leader_log}"
    );
    // The holder renews (an update) within a renewal period; the follower only reads.
    tokio::task::block_in_place(|| {
        wait_for("a Lease renewal", WAIT, || {
            Ok(standin
                .seen()
                .iter()
                .any(|s| s.method == "PUT")
                .then_some(()))
        })
    })?;
    let lease_writes: BTreeSet<String> = standin
        .seen()
        .iter()
        .filter(|s| s.method != "GET" && s.path.contains("/leases"))
        .filter_map(|s| {
            s.body.as_ref()?["spec"]["holderIdentity"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        lease_writes.len(),
        1,
        "only one replica writes the Lease: {lease_writes:?}"
    );
    assert_rbac_allows(&standin.seen())?;
    Ok(())
}

/// Every request the webhook made is one manifests/base/rbac.yaml allows its ServiceAccount
/// (GET /version is open to every identity).
fn assert_rbac_allows(seen: &[Seen]) -> Result<()> {
    let text = std::fs::read_to_string(workspace_root().join("manifests/base/rbac.yaml"))?;
    let mut rules: Vec<(bool, Value)> = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        let cluster_wide = v["kind"] == "ClusterRole";
        if cluster_wide || v["kind"] == "Role" {
            for r in v["rules"].as_array().into_iter().flatten() {
                rules.push((cluster_wide, r.clone()));
            }
        }
    }
    let has = |list: &Value, item: &str| {
        list.as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(item)))
    };
    for s in seen.iter().filter(|s| s.path != "/version") {
        let parts: Vec<&str> = s.path.trim_start_matches('/').split('/').collect();
        // /api/v1/... or /apis/GROUP/VERSION/...
        let (group, rest) = match parts.as_slice() {
            ["api", _, rest @ ..] => ("", rest),
            ["apis", g, _, rest @ ..] => (*g, rest),
            _ => bail!("unexpected path {}", s.path),
        };
        let (namespace, resource, name) = match rest {
            [res] => (None, *res, None),
            ["namespaces", ns, res] => (Some(*ns), *res, None),
            ["namespaces", ns, res, name] => (Some(*ns), *res, Some(*name)),
            _ => bail!("unexpected path {}", s.path),
        };
        let verb = match (s.method.as_str(), name, s.is_watch()) {
            ("GET", _, true) => "watch",
            ("GET", None, false) => "list",
            ("GET", Some(_), false) => "get",
            ("POST", _, _) => "create",
            ("PUT", _, _) => "update",
            (m, _, _) => bail!("unexpected method {m}"),
        };
        let allowed = rules.iter().any(|(cluster_wide, r)| {
            (*cluster_wide || namespace == Some("flink-system"))
                && has(&r["apiGroups"], group)
                && has(&r["resources"], resource)
                && has(&r["verbs"], verb)
                && (r["resourceNames"].is_null()
                    || name.is_some_and(|n| has(&r["resourceNames"], n)))
        });
        assert!(
            allowed,
            "{verb} {group}/{resource} {namespace:?} {name:?} is not granted: {s:?}"
        );
    }
    Ok(())
}

fn audit(standin: &StandIn, extra: &[&str]) -> Result<(i32, String, String)> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(&kubeconfig, standin.addr)?;
    let policy_path = dir.path().join("policy.yaml");
    std::fs::write(&policy_path, policy()?)?;
    let out = Command::new(workspace_bin("flink-webhook")?)
        .arg("audit")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--config")
        .arg(&policy_path)
        .args(extra)
        .env_remove("KUBECONFIG")
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lists_what_each_pod_lacks_and_exits_by_it() -> Result<()> {
    let mut script = recorded_script()?;
    script.pod_lists[0].push(recorded_missed_pod()?);
    let standin = StandIn::start(script).await?;
    let (code, out, err) = tokio::task::block_in_place(|| audit(&standin, &[]))?;
    // The table as a person sees it (cargo test -- --nocapture).
    eprintln!("{out}{err}");
    assert_eq!(code, 1, "{out}{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert!(rows[0].starts_with("NAMESPACE"), "{out}");
    // Missed pods first, with what they lack; the injected one after; flink-other not opted in.
    assert!(
        rows[1].contains(MISSED_TM) && rows[1].contains("NOT-INJECTED"),
        "{out}"
    );
    assert!(
        rows[1].ends_with("usrlib, host-aliases, timezone, agent"),
        "{out}"
    );
    assert!(
        rows[2].contains("wordcount-app-7d9f8c6b5-x2x9q") && rows[2].contains("injected"),
        "{out}"
    );
    assert_eq!(rows.len(), 3, "{out}");
    assert!(err.contains("was not found or not readable"), "{err}");

    // Only another namespace: nothing missing there.
    let (code, _, _) =
        tokio::task::block_in_place(|| audit(&standin, &["--namespace", "flink-other"]))?;
    assert_eq!(code, 0);

    // The recorded Lease was created after these pods: they predate the install.
    let mut script = recorded_script()?;
    script.pod_lists[0].push(recorded_missed_pod()?);
    script.lease = Some(serde_json::from_slice(&fixture(
        "apiserver/lease-created.json",
    )?)?);
    let standin = StandIn::start(script).await?;
    let (code, out, err) = tokio::task::block_in_place(|| audit(&standin, &[]))?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.contains(MISSED_TM) && l.contains("before-install")),
        "{out}"
    );

    // No RBAC: a clear error and exit 2, not a verdict.
    let mut script = recorded_script()?;
    script.forbidden = true;
    let standin = StandIn::start(script).await?;
    let (code, out, err) = tokio::task::block_in_place(|| audit(&standin, &[]))?;
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("listing namespaces") && err.contains("forbidden"),
        "{err}"
    );
    Ok(())
}
