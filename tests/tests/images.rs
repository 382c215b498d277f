//! The images as users get them: the OCI archives `scripts/build-images.sh` wrote, loaded and run
//! with podman and runc on the host network (127.0.0.1 only), each as user 65532 with a read-only
//! root filesystem. The webhook answers a recorded admission over TLS; the agent ships a file to
//! the local broker and stops cleanly on SIGTERM.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use flink_injector_tests::agent::{
    default_state_file, flink_record, shipped_once, start_agent_bin,
};
use flink_injector_tests::broker::Broker;
use flink_injector_tests::https::{client_config, HttpsConn};
use flink_injector_tests::podman::{
    give_to_image_user, image_archive, packed_revision, process_ids, root_is_read_only, Podman,
    RemoveOnDrop,
};
use flink_injector_tests::webhook::{example_policy, serve_args, SERVER_NAME};
use flink_injector_tests::{
    fixture, free_port, issue_certs, wait_for, wait_for_port, workspace_bin, ChildGuard,
};
use serde_json::Value;

const IMAGE_USER: (u32, u32) = (65532, 65532);

/// The labels users and registries read, and the binary inside agreeing with them.
fn check_labels(podman: &Podman, name: &str, image: &str) -> Result<()> {
    let revision = podman.label(image, "org.opencontainers.image.revision")?;
    ensure!(
        revision == packed_revision(name)?,
        "{name}: label revision {revision} is not what build-images packed"
    );
    ensure!(
        revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}: revision label '{revision}' is not a git commit"
    );
    let version = podman.label(image, "org.opencontainers.image.version")?;
    ensure!(
        version == env!("CARGO_PKG_VERSION"),
        "{name}: version label {version}"
    );
    ensure!(podman.label(image, "org.opencontainers.image.licenses")? == "Apache-2.0");
    ensure!(podman
        .label(image, "org.opencontainers.image.source")?
        .starts_with("https://"));
    // The binary in the image says the same: it was built from the revision on the label.
    let says = podman.output(&{
        let mut a: Vec<&str> = vec!["run", "--rm", "--network", "host"];
        a.extend([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
        a.extend([image, "--version"]);
        a
    })?;
    ensure!(
        says.trim() == format!("{name} {version} (revision {revision})"),
        "{name} --version in the image says '{}'",
        says.trim()
    );
    Ok(())
}

/// Checks the running container's first process: the image's user, a read-only root.
fn check_process(podman: &Podman, container: &str) -> Result<()> {
    let pid = podman.pid(container)?;
    ensure!(
        process_ids(pid)? == IMAGE_USER,
        "{container} runs as {:?}, not the image's user {IMAGE_USER:?}",
        process_ids(pid)?
    );
    ensure!(
        root_is_read_only(pid)?,
        "{container}: the root filesystem is writable"
    );
    Ok(())
}

#[test]
fn webhook_image_answers_an_admission_over_tls() -> Result<()> {
    let podman = Podman::new()?;
    let image = podman.load(&image_archive("flink-webhook")?)?;
    check_labels(&podman, "flink-webhook", &image)?;

    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");
    issue_certs(&workspace_bin("flink-webhook")?, &tls, Some(2))?;
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, example_policy()?)?;
    // Mounted as a Secret and a ConfigMap would be: readable by the pod's user.
    give_to_image_user(dir.path())?;

    let (port, metrics_port) = (free_port()?, free_port()?);
    let name = format!("fi-webhook-{}-{port}", std::process::id());
    let _cleanup = RemoveOnDrop {
        podman: &podman,
        name: name.clone(),
    };
    let inside = dir.path().to_str().context("temp path")?;
    let mut cmd = podman.cmd();
    cmd.args(podman.run_args(&name, &[(dir.path(), inside, true)])?)
        .arg(&image);
    serve_args(&mut cmd, &policy, &tls, port, metrics_port);
    let stderr = dir.path().join("webhook.err");
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr)?);
    let mut child = ChildGuard::spawn("flink-webhook image", &mut cmd)?;
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
    wait_for_port(port, Duration::from_secs(60)).with_context(log)?;
    check_process(&podman, &name).with_context(log)?;

    let review: Value = serde_json::from_slice(&fixture(
        "admission/flink-2.3-application-jobmanager.review.json",
    )?)?;
    let rt = tokio::runtime::Runtime::new()?;
    let (status, body) = rt.block_on(async {
        let mut conn =
            HttpsConn::connect(port, client_config(&tls.join("ca.crt"))?, SERVER_NAME).await?;
        conn.post("/mutate", serde_json::to_vec(&review)?).await
    })?;
    let answer: Value = serde_json::from_slice(&body).context("answer is JSON")?;
    ensure!(status == 200, "{status}: {answer}\n{}", log());
    ensure!(answer["response"]["uid"] == review["request"]["uid"]);
    ensure!(answer["response"]["allowed"] == true, "{answer}");
    let patch = answer["response"]["patch"]
        .as_str()
        .context("no patch for a Flink JobManager")?;
    let patch: json_patch::Patch =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(patch)?)?;
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch)?;
    let injected = pod["metadata"]["annotations"]["flink-injector.io/injected"]
        .as_str()
        .context("no injected annotation")?;
    ensure!(
        injected.contains("usrlib") && injected.contains("agent"),
        "injected: {injected}"
    );

    let (code, metrics) = flink_injector_tests::agent::http_get(metrics_port, "/metrics")?;
    ensure!(
        code == 200 && metrics.contains("flink_webhook_"),
        "{code}: {metrics}"
    );

    // What the kubelet does at shutdown: SIGTERM, then the container's exit code.
    podman.output(&["stop", "-t", "30", &name])?;
    let exit = child.wait_timeout(Duration::from_secs(40))?;
    ensure!(
        exit.success(),
        "the webhook exited {exit} on SIGTERM\n{}",
        log()
    );
    Ok(())
}

#[test]
fn agent_image_ships_a_file_to_the_broker() -> Result<()> {
    const RECORDS: usize = 500;
    let podman = Podman::new()?;
    let image = podman.load(&image_archive("flink-agent")?)?;
    check_labels(&podman, "flink-agent", &image)?;

    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let text: String = (0..RECORDS).map(|i| flink_record("image", i)).collect();
    let log = log_dir.join("flink--kubernetes-taskmanager-0-image.log");
    std::fs::write(&log, text)?;
    // The emptyDir both containers share: Flink's files, writable by the agent for its state.
    give_to_image_user(&log_dir)?;
    let broker = Broker::start(work.path())?;

    let name = format!("fi-agent-{}-{}", std::process::id(), free_port()?);
    let _cleanup = RemoveOnDrop {
        podman: &podman,
        name: name.clone(),
    };
    let inside = log_dir.to_str().context("temp path")?;
    let mut wrapper = podman.command_line();
    wrapper.extend(podman.run_args(&name, &[(&log_dir, inside, false)])?);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut agent = start_agent_bin(
        Path::new(&image),
        &wrapper,
        &log_dir,
        work.path(),
        &broker.bootstrap(),
        "agent-image",
        &[],
    )?;
    check_process(&podman, &name).with_context(|| agent.log_tail())?;
    let events = shipped_once(&broker, "agent-image", "image", RECORDS, &agent)?;
    let first = events.first().context("no event")?;
    ensure!(
        first["log"]["file"]["path"] == log.to_string_lossy().as_ref(),
        "{first}"
    );

    // Its read positions are written by the image's user into the shared volume.
    let state = default_state_file(&log_dir);
    wait_for("the agent's checkpoint", Duration::from_secs(30), || {
        Ok(state.exists().then_some(()))
    })?;
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&state)?);
    ensure!(owner == IMAGE_USER.0, "state file owned by uid {owner}");

    podman.output(&["stop", "-t", "30", &name])?;
    let exit = agent.guard.wait_timeout(Duration::from_secs(40))?;
    ensure!(
        exit.success(),
        "the agent exited {exit} on SIGTERM\n{}",
        agent.log_tail()
    );
    Ok(())
}

/// The archives were built from this checkout: a binary older than its sources is never packed
/// (build-images.sh rebuilds through cargo and refuses a binary whose revision differs).
#[test]
fn archives_carry_the_checked_out_revision() -> Result<()> {
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(flink_injector_tests::workspace_root())
        .output();
    let Ok(head) = head.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()) else {
        anyhow::bail!("git rev-parse HEAD failed");
    };
    for name in ["flink-agent", "flink-webhook"] {
        image_archive(name)?;
        ensure!(
            packed_revision(name)? == head,
            "{name}: packed from {}, the checkout is at {head}: run scripts/build-images.sh",
            packed_revision(name)?
        );
    }
    Ok(())
}
