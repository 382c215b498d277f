//! flink-webhook end to end: the real binary, certificates from `flink-webhook certs`, a real
//! rustls client that trusts only that CA, and the AdmissionReviews a real kube-apiserver sent.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use flink_injector_tests::https::HttpsConn;
use flink_injector_tests::webhook::{
    example_policy, kubelet_style_secret_valid_for, raw_exchange, start,
};
use flink_injector_tests::{fixture, workspace_bin, workspace_root};
use serde_json::Value;

fn decode_patch(response: &Value) -> Result<Option<json_patch::Patch>> {
    let Some(b64) = response.pointer("/response/patch").and_then(Value::as_str) else {
        return Ok(None);
    };
    assert_eq!(
        response
            .pointer("/response/patchType")
            .and_then(Value::as_str),
        Some("JSONPatch")
    );
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
    Ok(Some(serde_json::from_slice(&bytes)?))
}

fn containers<'a>(pod: &'a Value, field: &str) -> Vec<&'a Value> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn named<'a>(items: Vec<&'a Value>, name: &str) -> Option<&'a Value> {
    items.into_iter().find(|c| c["name"] == name)
}

/// Posts a review, checks the envelope, applies the patch and returns the mutated pod.
async fn admit(conn: &mut HttpsConn, review: &Value) -> Result<(Value, Value)> {
    let (status, body) = conn
        .post("/mutate?timeout=5s", serde_json::to_vec(review)?)
        .await?;
    let resp: Value = serde_json::from_slice(&body).context("response is JSON")?;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(resp["kind"], "AdmissionReview");
    assert_eq!(resp["response"]["uid"], review["request"]["uid"]);
    let mut pod = review["request"]["object"].clone();
    if let Some(patch) = decode_patch(&resp)? {
        json_patch::patch(&mut pod, &patch).context("patch applies to the pod")?;
    }
    Ok((resp, pod))
}

fn check_injected(pod: &Value, native: bool) {
    let parsed: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(pod.clone()).expect("patched pod is still a valid Pod");
    let spec = parsed.spec.expect("spec");
    let volumes = spec.volumes.unwrap_or_default();
    let usrlib = volumes
        .iter()
        .find(|v| v.name == "flink-usrlib")
        .expect("flink-usrlib volume");
    let nfs = usrlib.nfs.as_ref().expect("nfs volume");
    assert_eq!(nfs.server, "nfs.data.internal");
    assert!(volumes
        .iter()
        .any(|v| v.name == "flink-logs" && v.empty_dir.is_some()));
    let aliases = spec.host_aliases.unwrap_or_default();
    assert!(aliases.iter().any(|a| a.ip == "10.20.0.11"
        && a.hostnames
            .as_deref()
            .unwrap_or_default()
            .contains(&"nn1".to_string())));
    let main = spec
        .containers
        .iter()
        .find(|c| c.name == "flink-main-container")
        .expect("main container");
    let mounts = main.volume_mounts.clone().unwrap_or_default();
    assert!(mounts.iter().any(|m| m.name == "flink-usrlib"
        && m.mount_path == "/opt/flink/usrlib"
        && m.read_only == Some(true)));
    assert!(mounts
        .iter()
        .any(|m| m.name == "flink-logs" && m.mount_path == "/opt/flink/log"));
    assert!(main
        .env
        .clone()
        .unwrap_or_default()
        .iter()
        .any(|e| e.name == "TZ"));
    let agent = if native {
        let init = spec.init_containers.unwrap_or_default();
        let a = init
            .into_iter()
            .find(|c| c.name == "flink-agent")
            .expect("agent init container");
        assert_eq!(a.restart_policy.as_deref(), Some("Always"));
        a
    } else {
        spec.containers
            .iter()
            .find(|c| c.name == "flink-agent")
            .cloned()
            .expect("agent container")
    };
    assert_eq!(agent.image.as_deref(), Some("flink-agent:0.1.0"));
    let annotations = parsed.metadata.annotations.unwrap_or_default();
    let injected = annotations
        .get("flink-injector.io/injected")
        .expect("injected annotation");
    for part in ["usrlib", "host-aliases", "timezone", "agent"] {
        assert!(
            injected.split(',').any(|p| p == part),
            "{part} in {injected}"
        );
    }
    assert_eq!(
        annotations
            .get("kubectl.kubernetes.io/default-container")
            .map(String::as_str),
        Some("flink-main-container")
    );
}

fn review_fixture(name: &str) -> Result<Value> {
    Ok(serde_json::from_slice(&fixture(&format!(
        "admission/{name}"
    ))?)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_reviews_are_patched_and_reinvocation_is_a_no_op() -> Result<()> {
    let hook = start(&example_policy()?)?;
    let mut conn = hook.conn().await?;
    for name in [
        "flink-2.3-application-jobmanager.review.json",
        "flink-2.3-application-taskmanager.review.json",
        "flink-2.3-session-jobmanager.review.json",
        "flink-2.3-session-taskmanager.review.json",
    ] {
        let review = review_fixture(name)?;
        let (resp, pod) = admit(&mut conn, &review).await?;
        assert_eq!(resp["response"]["allowed"], true, "{name}: {resp}");
        // The JobManager fixtures ask for Europe/Berlin by annotation; TaskManagers get the policy's.
        let tz_wanted = review
            .pointer("/request/object/metadata/annotations/flink-injector.io~1timezone")
            .and_then(Value::as_str)
            .unwrap_or("Asia/Shanghai");
        let main = named(containers(&pod, "containers"), "flink-main-container").expect("main");
        let tz = main["env"]
            .as_array()
            .and_then(|env| env.iter().find(|e| e["name"] == "TZ"))
            .expect("TZ env");
        assert_eq!(tz["value"], tz_wanted, "{name}");
        // --kubernetes-version 1.30 with nativeSidecar: auto means a native sidecar.
        check_injected(&pod, true);

        // The API server re-invokes webhooks on the mutated object: nothing may be added twice.
        let mut again = review.clone();
        again["request"]["object"] = pod.clone();
        let (resp2, pod2) = admit(&mut conn, &again).await?;
        assert_eq!(resp2["response"]["allowed"], true);
        assert!(
            resp2["response"].get("patch").is_none(),
            "{name}: second patch {resp2}"
        );
        assert_eq!(pod2, pod);
    }
    let metrics = hook.metrics().await?;
    assert!(
        metrics.contains(
            "flink_webhook_admissions_total{component=\"jobmanager\",outcome=\"mutated\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("flink_webhook_parts_injected_total{part=\"agent\"} 4"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_annotation_is_denied_with_a_message_naming_it() -> Result<()> {
    let hook = start(&example_policy()?)?;
    let mut conn = hook.conn().await?;
    let mut review = review_fixture("flink-2.3-application-jobmanager.review.json")?;
    review["request"]["object"]["metadata"]["annotations"]["flink-injector.io/timezone"] =
        Value::from("Mars/Olympus_Mons");
    let (status, body) = conn.post("/mutate", serde_json::to_vec(&review)?).await?;
    assert_eq!(status, 200);
    let resp: Value = serde_json::from_slice(&body)?;
    assert_eq!(resp["response"]["allowed"], false, "{resp}");
    let message = resp["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("flink-injector.io/timezone"), "{message}");
    assert!(message.contains("Mars/Olympus_Mons"), "{message}");
    assert!(resp["response"].get("patch").is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_clear_errors_and_the_server_stays_up() -> Result<()> {
    let hook = start(&example_policy()?)?;
    let review = fixture("admission/flink-2.3-application-jobmanager.review.json")?;

    // Over the 3 MiB limit, declared up front: answered before the body is sent.
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        4 * 1024 * 1024
    );
    let answer = raw_exchange(&hook, head.into_bytes(), Vec::new()).await?;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Over the limit, chunked (no length known up front): cut off at the limit.
    let head = "POST /mutate HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
    let mut chunks = Vec::new();
    for _ in 0..4 {
        chunks.extend_from_slice(format!("{:x}\r\n", 1024 * 1024).as_bytes());
        chunks.extend(std::iter::repeat_n(b'x', 1024 * 1024));
        chunks.extend_from_slice(b"\r\n");
    }
    chunks.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(&hook, head.as_bytes().to_vec(), chunks).await?;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Truncated JSON: the parse error is in the answer.
    let mut conn = hook.conn().await?;
    let (status, body) = conn
        .post("/mutate", review[..review.len() / 2].to_vec())
        .await?;
    assert_eq!(status, 400);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("malformed AdmissionReview JSON"), "{text}");
    assert!(text.contains("EOF"), "{text}");

    let (status, body) = conn.post("/mutate", b"this is not json".to_vec()).await?;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    let (status, _) = conn.post("/mutate", Vec::new()).await?;
    assert_eq!(status, 400);

    // A bare Pod is not a review.
    let pod = serde_json::to_vec(&serde_json::from_slice::<Value>(&review)?["request"]["object"])?;
    let (status, body) = conn.post("/mutate", pod).await?;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    // A review of something other than a Pod is allowed unchanged, with a warning.
    let mut cm: Value = serde_json::from_slice(&review)?;
    cm["request"]["kind"] = serde_json::json!({"group": "", "version": "v1", "kind": "ConfigMap"});
    cm["request"]["object"] =
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
    let (status, body) = conn.post("/mutate", serde_json::to_vec(&cm)?).await?;
    assert_eq!(status, 200);
    let resp: Value = serde_json::from_slice(&body)?;
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"]["warnings"][0]
        .as_str()
        .unwrap_or_default()
        .contains("ConfigMap"));
    assert!(resp["response"].get("patch").is_none());

    // After all that, a real review on the same connection still works.
    let (resp, _) = admit(&mut conn, &serde_json::from_slice(&review)?).await?;
    assert_eq!(resp["response"]["allowed"], true);
    let (status, _) = conn.request("GET", "/healthz", Vec::new()).await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_is_served_to_new_connections_without_dropping_old_ones() -> Result<()>
{
    let hook = start(&example_policy()?)?;
    let mut old = hook.conn().await?;
    let first_leaf = old.peer_leaf.clone().expect("leaf");
    let review: Value = review_fixture("flink-2.3-application-taskmanager.review.json")?;
    // The served certificate's notAfter: the first one is valid for 2 days.
    let day = 86_400.0;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    let expiry = |m: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix("flink_webhook_certificate_expiry_timestamp_seconds "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let first = expiry(&hook.metrics().await?).context("no certificate expiry gauge")?;
    assert!(
        (first - (now + 2.0 * day)).abs() < 3600.0,
        "{first} vs {now}"
    );

    // Rotate like the kubelet does: new versioned dir, swap `..data`; valid for 5 days.
    kubelet_style_secret_valid_for(&hook.dir.path().join("tls"), "v2", 5)?;
    let new_leaf = std::fs::read(hook.dir.path().join("tls/tls.crt"))?;
    assert_ne!(
        new_leaf,
        std::fs::read(hook.dir.path().join("tls/..v1/tls.crt"))?
    );

    let mut rotated = None;
    for _ in 0..100 {
        // Trust the new CA: the old certificate would fail verification with it, so a
        // successful handshake is itself proof of the new certificate.
        if let Ok(c) = hook.conn().await {
            rotated = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut fresh = rotated.context("new connections never got the rotated certificate")?;
    assert_ne!(fresh.peer_leaf.clone().expect("leaf"), first_leaf);
    let (resp, _) = admit(&mut fresh, &review).await?;
    assert_eq!(resp["response"]["allowed"], true);

    // The connection opened before the rotation is still served.
    let (resp, _) = admit(&mut old, &review).await?;
    assert_eq!(resp["response"]["allowed"], true);
    let metrics = hook.metrics().await?;
    assert!(
        metrics.contains("flink_webhook_tls_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );
    let second = expiry(&metrics).context("no certificate expiry gauge")?;
    assert!(
        (second - (now + 5.0 * day)).abs() < 3600.0,
        "{second} vs {now}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reload_applies_good_policies_and_keeps_the_last_good_one() -> Result<()> {
    let hook = start(&example_policy()?)?;
    let policy_path = hook.dir.path().join("policy.yaml");
    let review = review_fixture("flink-2.3-application-taskmanager.review.json")?;
    let tz_of = |pod: &Value| -> String {
        let main = named(containers(pod, "containers"), "flink-main-container")
            .cloned()
            .unwrap_or_default();
        main["env"]
            .as_array()
            .and_then(|env| env.iter().find(|e| e["name"] == "TZ"))
            .map(|e| e["value"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };

    // An invalid policy is counted and ignored.
    std::fs::write(
        &policy_path,
        example_policy()?.replace("Asia/Shanghai", "Not/AZone"),
    )?;
    let mut seen_failure = false;
    for _ in 0..100 {
        if hook
            .metrics()
            .await?
            .contains("flink_webhook_policy_reloads_total{result=\"failure\"} 1")
        {
            seen_failure = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen_failure,
        "invalid policy was not reported: {}",
        hook.metrics().await?
    );
    let mut conn = hook.conn().await?;
    let (_, pod) = admit(&mut conn, &review).await?;
    assert_eq!(tz_of(&pod), "Asia/Shanghai");

    // A valid change takes effect without a restart.
    std::fs::write(
        &policy_path,
        example_policy()?.replace("Asia/Shanghai", "America/New_York"),
    )?;
    let mut applied = false;
    for _ in 0..100 {
        let (_, pod) = admit(&mut conn, &review).await?;
        if tz_of(&pod) == "America/New_York" {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(applied, "reloaded policy never applied");
    Ok(())
}

#[test]
fn invalid_policy_at_start_up_is_a_clear_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("policy.yaml");
    std::fs::write(
        &path,
        example_policy()?.replace("Asia/Shanghai", "Not/AZone"),
    )?;
    let out = Command::new(workspace_bin("flink-webhook")?)
        .arg("check-config")
        .arg(&path)
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Not/AZone"), "{stderr}");

    let ok = Command::new(workspace_bin("flink-webhook")?)
        .arg("check-config")
        .arg(workspace_root().join("examples/policy.yaml"))
        .output()?;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    Ok(())
}

#[test]
fn mutate_previews_a_pod_and_exits_1_on_denial() -> Result<()> {
    let bin = workspace_bin("flink-webhook")?;
    let policy = workspace_root().join("examples/policy.yaml");
    let pod = workspace_root()
        .join("tests/fixtures/admission/flink-2.3-application-taskmanager.pod.yaml");
    let out = Command::new(&bin)
        .args(["mutate", "--config"])
        .arg(&policy)
        .arg("-f")
        .arg(&pod)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mutated: Value = serde_norway::from_slice(&out.stdout)?;
    check_injected(&mutated, false);

    let out = Command::new(&bin)
        .args([
            "mutate",
            "--output",
            "patch",
            "--kubernetes-version",
            "1.29",
            "--config",
        ])
        .arg(&policy)
        .arg("-f")
        .arg(
            workspace_root()
                .join("tests/fixtures/admission/flink-2.3-session-jobmanager.review.json"),
        )
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let patch: Value = serde_json::from_slice(&out.stdout)?;
    assert!(patch
        .as_array()
        .is_some_and(
            |ops| ops.iter().any(|op| op["path"] == "/spec/initContainers"
                || op["path"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("/spec/initContainers"))
        ));

    let text = std::fs::read_to_string(&pod)?.replacen(
        "\n  labels:\n",
        "\n  annotations:\n    flink-injector.io/host-aliases: 'not an alias'\n  labels:\n",
        1,
    );
    assert!(text.contains("not an alias"));
    let bad = tempfile::NamedTempFile::new()?;
    std::fs::write(bad.path(), text)?;
    let out = Command::new(&bin)
        .args(["mutate", "--config"])
        .arg(&policy)
        .arg("-f")
        .arg(bad.path())
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("flink-injector.io/host-aliases"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly() -> Result<()> {
    let mut hook = start(&example_policy()?)?;
    let mut conn = hook.conn().await?;
    let review = review_fixture("flink-2.3-application-taskmanager.review.json")?;
    let (resp, _) = admit(&mut conn, &review).await?;
    assert_eq!(resp["response"]["allowed"], true);
    hook.child.signal(15)?;
    let status = hook.child.wait_timeout(Duration::from_secs(15))?;
    assert!(status.success(), "exit status after SIGTERM: {status}");
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(("127.0.0.1", hook.port)).is_err());
    Ok(())
}
