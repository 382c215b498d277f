//! The images run both binaries as uid 65532 with a read-only root filesystem, no capabilities
//! and no privilege escalation (docker/*.Dockerfile, the securityContext in manifests/ and in
//! the injected agent). No container engine runs here, so the tests make the same conditions
//! around the real binaries: a private mount namespace (`unshare`) where `/` is remounted
//! read-only and only what Kubernetes would mount writable stays so (the agent's emptyDir),
//! then `setpriv` to 65532:65532 with every capability dropped and no_new_privs set.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use flink_injector_tests::agent::{default_state_file, flink_record, http_get};
use flink_injector_tests::broker::{Broker, TopicReader};
use flink_injector_tests::https::{client_config, HttpsConn};
use flink_injector_tests::webhook::serve_args;
use flink_injector_tests::{
    fixture, free_port, wait_for, wait_for_port, workspace_bin, workspace_root, ChildGuard,
};

const UID: u32 = 65532;

/// `program` confined as in the container; `writable` directories keep their write access.
fn confined(program: &Path, writable: &[&Path]) -> Command {
    let mut script = String::from("set -e\n");
    for w in writable {
        // A bind mount of the directory onto itself is a mount of its own, which the
        // read-only remount of / below leaves writable (like a volume in a container).
        script.push_str(&format!("mount --bind '{0}' '{0}'\n", w.display()));
    }
    script.push_str("mount -o remount,ro,bind /\n");
    script.push_str(&format!(
        "exec setpriv --reuid={UID} --regid={UID} --clear-groups --no-new-privs \
         --inh-caps=-all --bounding-set=-all \"$@\"\n"
    ));
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "confined",
    ])
    .arg(program)
    .stdin(Stdio::null());
    c
}

/// The process runs as 65532 with no effective or bounding capabilities and no_new_privs.
fn assert_confined(pid: u32) -> Result<()> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    ensure!(
        field("Uid:").split_whitespace().all(|u| u == "65532"),
        "Uid: {}",
        field("Uid:")
    );
    ensure!(
        field("CapEff:") == "0000000000000000",
        "CapEff: {}",
        field("CapEff:")
    );
    ensure!(
        field("CapBnd:") == "0000000000000000",
        "CapBnd: {}",
        field("CapBnd:")
    );
    ensure!(field("NoNewPrivs:") == "1");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mounts"))?;
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/"))
        .context("no / in the process's mounts")?;
    ensure!(
        root.split_whitespace()
            .nth(3)
            .is_some_and(|o| o.split(',').any(|f| f == "ro")),
        "/ is not read-only for the process: {root}"
    );
    Ok(())
}

/// World-readable files and traversable directories, as a mounted Secret or ConfigMap is.
fn open_up(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            open_up(&path)?;
        } else {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_serves_as_non_root_on_a_read_only_root() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bin = workspace_bin("flink-webhook")?;
    let tls = dir.path().join("tls");
    flink_injector_tests::issue_certs(&bin, &tls, None)?;
    std::fs::copy(
        workspace_root().join("examples/policy.yaml"),
        dir.path().join("policy.yaml"),
    )?;
    open_up(dir.path())?;
    let port = free_port()?;
    let metrics_port = free_port()?;
    let hook = ChildGuard::spawn(
        "flink-webhook (confined)",
        serve_args(
            &mut confined(&bin, &[]),
            &dir.path().join("policy.yaml"),
            &tls,
            port,
            metrics_port,
        ),
    )?;
    wait_for_port(port, Duration::from_secs(20))?;
    assert_confined(hook.pid())?;

    let mut conn = HttpsConn::connect(
        port,
        client_config(&tls.join("ca.crt"))?,
        "flink-webhook.flink-system.svc",
    )
    .await?;
    let review = fixture("admission/flink-2.3-application-jobmanager.review.json")?;
    let (code, body) = conn.post("/mutate", review).await?;
    ensure!(code == 200, "status {code}");
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    ensure!(v["response"]["allowed"] == true, "{v}");
    ensure!(v["response"]["patch"].is_string(), "no patch: {v}");
    let (code, _) = conn.request("GET", "/healthz", Vec::new()).await?;
    ensure!(code == 200);
    Ok(())
}

#[test]
fn agent_ships_as_non_root_on_a_read_only_root() -> Result<()> {
    let work = tempfile::tempdir()?;
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755))?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir)?;
    // The emptyDir: writable by the pod's user (fsGroup in Kubernetes).
    std::os::unix::fs::chown(&log_dir, Some(UID), Some(UID))?;
    let broker = Broker::start(work.path())?;
    let port = free_port()?;
    let stderr = work.path().join("agent.err");
    let agent = ChildGuard::spawn(
        "flink-agent (confined)",
        confined(&workspace_bin("flink-agent")?, &[&log_dir])
            .arg("--log-dir")
            .arg(&log_dir)
            .args(["--brokers", &broker.bootstrap(), "--topic", "confined"])
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
            .args(["--flink-rest", "http://127.0.0.1:1", "--pod-name", "p"])
            .args([
                "--multiline-flush",
                "300ms",
                "--checkpoint-interval",
                "200ms",
            ])
            .env("TZ", "UTC")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?),
    )?;
    let log_tail = || std::fs::read_to_string(&stderr).unwrap_or_default();
    wait_for(
        "the confined agent to be ready",
        Duration::from_secs(30),
        || {
            Ok(http_get(port, "/readyz")
                .ok()
                .filter(|(c, _)| *c == 200)
                .map(|_| ()))
        },
    )
    .with_context(log_tail)?;
    assert_confined(agent.pid())?;

    // Flink (another user in the real pod) writes the log; the agent reads and checkpoints.
    let n = 200;
    let text: String = (0..n).map(|i| flink_record("confined", i)).collect();
    std::fs::write(log_dir.join("flink--taskmanager-0-p.log"), text)?;
    std::fs::set_permissions(
        log_dir.join("flink--taskmanager-0-p.log"),
        std::fs::Permissions::from_mode(0o644),
    )?;
    let mut reader = TopicReader::new(&broker.bootstrap(), "confined")?;
    let mut events = Vec::new();
    reader.read_until(
        &mut events,
        Duration::from_secs(10),
        Duration::from_secs(60),
        |evs| evs.len() >= n,
    )?;
    ensure!(
        events.len() == n,
        "{} of {n} events\n{}",
        events.len(),
        log_tail()
    );
    wait_for("the checkpoint file", Duration::from_secs(10), || {
        Ok(default_state_file(&log_dir).exists().then_some(()))
    })
    .with_context(log_tail)?;
    Ok(())
}
