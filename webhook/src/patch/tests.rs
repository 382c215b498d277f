//! The patch engine over the recorded fixtures and hand-made variants. Expected values are written
//! out literally, not computed the way the engine computes them.
use super::*;
use serde_json::json;

const APP_JM: &str = "flink-2.3-application-jobmanager.pod.yaml";
const APP_TM: &str = "flink-2.3-application-taskmanager.pod.yaml";
const SESSION_JM: &str = "flink-2.3-session-jobmanager.pod.yaml";
const SESSION_TM: &str = "flink-2.3-session-taskmanager.pod.yaml";
const TEMPLATE_JM: &str = "pod-template-jobmanager.pod.yaml";
const FLINK1_JM: &str = "flink-1.17-application-jobmanager.pod.yaml";
const ANNOTATED_TM: &str = "annotated-taskmanager.pod.yaml";
const ALL_PODS: [&str; 7] = [
    APP_JM,
    APP_TM,
    SESSION_JM,
    SESSION_TM,
    TEMPLATE_JM,
    FLINK1_JM,
    ANNOTATED_TM,
];

fn fixture_text(rel: &str) -> String {
    let path = format!("{}/../tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn pod(name: &str) -> Value {
    serde_norway::from_str(&fixture_text(&format!("admission/{name}"))).unwrap()
}

fn policy(name: &str) -> Policy {
    Policy::from_yaml(&fixture_text(&format!("policy/{name}"))).unwrap()
}

fn design() -> Policy {
    policy("design.yaml")
}

const PLAIN: MutationContext = MutationContext {
    native_sidecar: false,
};
const NATIVE: MutationContext = MutationContext {
    native_sidecar: true,
};

struct Mutated {
    patch: json_patch::Patch,
    injected: Vec<Part>,
    skipped: Vec<(Part, SkipReason)>,
    warnings: Vec<String>,
    after: Value,
}

fn run(policy: &Policy, ns: &str, pod: &Value, ctx: MutationContext) -> Mutated {
    match mutate(policy, ns, pod, &ctx) {
        Outcome::Mutated {
            patch,
            injected,
            skipped,
            warnings,
        } => {
            let mut after = pod.clone();
            json_patch::patch(&mut after, &patch).unwrap();
            Mutated {
                patch,
                injected,
                skipped,
                warnings,
                after,
            }
        }
        other => panic!("expected Mutated, got {other:?}"),
    }
}

fn skip_of(m: &Mutated, part: Part) -> Option<&SkipReason> {
    m.skipped.iter().find(|(p, _)| *p == part).map(|(_, r)| r)
}

fn conflict_of(m: &Mutated, part: Part) -> String {
    match skip_of(m, part) {
        Some(SkipReason::Conflict(reason)) => reason.clone(),
        other => panic!("expected a conflict for {part:?}, got {other:?}"),
    }
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} entry named {name}"))
}

fn names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn env_of(c: &Value, name: &str) -> Option<Value> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
}

fn tz_entries(c: &Value) -> usize {
    c["env"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|e| e["name"] == "TZ").count())
}

fn mounts(c: &Value) -> Vec<Value> {
    c["volumeMounts"].as_array().cloned().unwrap_or_default()
}

fn volume<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod["spec"]["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
}

fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod["metadata"]["annotations"][key].as_str()
}

fn as_k8s_pod(v: &Value) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not a Pod: {e}\n{v:#}"))
}

fn with_annotations(mut pod: Value, pairs: &[(&str, &str)]) -> Value {
    let map = pod["metadata"]
        .as_object_mut()
        .unwrap()
        .entry("annotations")
        .or_insert_with(|| json!({}));
    for (k, v) in pairs {
        map[*k] = json!(v);
    }
    pod
}

fn assert_idempotent(policy: &Policy, ns: &str, m: &Mutated, ctx: MutationContext) {
    let again = run(policy, ns, &m.after, ctx);
    assert!(
        again.patch.0.is_empty(),
        "second run patched: {}",
        serde_json::to_string_pretty(&again.patch).unwrap()
    );
    assert!(again.injected.is_empty());
}

// ---- the recorded application JobManager, every part ----

#[test]
fn application_jobmanager_gets_every_part() {
    let before = pod(APP_JM);
    let m = run(&design(), "flink-jobs", &before, PLAIN);
    assert_eq!(
        m.injected,
        vec![Part::Usrlib, Part::HostAliases, Part::Timezone, Part::Agent]
    );
    assert!(m.skipped.is_empty(), "{:?}", m.skipped);
    let after = &m.after;

    assert_eq!(
        volume(after, "flink-usrlib"),
        Some(&json!({"name": "flink-usrlib",
            "nfs": {"server": "nfs.data.internal", "path": "/exports/flink/usrlib", "readOnly": true}}))
    );
    assert_eq!(
        volume(after, "flink-logs"),
        Some(&json!({"name": "flink-logs", "emptyDir": {}}))
    );
    assert_eq!(
        volume(after, "flink-agent-kafka-secret"),
        Some(
            &json!({"name": "flink-agent-kafka-secret", "secret": {"secretName": "flink-agent-kafka"}})
        )
    );
    let main = container(after, "containers", "flink-main-container");
    let main_mounts = mounts(main);
    assert!(main_mounts.contains(
        &json!({"name": "flink-usrlib", "mountPath": "/opt/flink/usrlib", "readOnly": true})
    ));
    assert!(main_mounts.contains(&json!({"name": "flink-logs", "mountPath": "/opt/flink/log"})));
    assert_eq!(
        after["spec"]["hostAliases"],
        json!([{"ip": "10.20.0.11", "hostnames": ["nn1.bigdata.internal", "nn1"]}])
    );
    // The fixture's annotation asks for Berlin; it beats the policy's Shanghai.
    assert_eq!(
        env_of(main, "TZ"),
        Some(json!({"name": "TZ", "value": "Europe/Berlin"}))
    );
    assert_eq!(
        names(after, "containers"),
        ["flink-main-container", "flink-agent"]
    );
    assert!(after["spec"].get("initContainers").is_none());

    let ann = &after["metadata"]["annotations"];
    assert_eq!(
        ann["flink-injector.io/injected"],
        "usrlib,host-aliases,timezone,agent"
    );
    assert_eq!(
        ann["kubectl.kubernetes.io/default-container"],
        "flink-main-container"
    );
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "9260");
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    assert_eq!(ann["flink-injector.io/timezone"], "Europe/Berlin");
    as_k8s_pod(after);
}

#[test]
fn agent_container_spec() {
    let m = run(&design(), "flink-jobs", &pod(APP_JM), PLAIN);
    let agent = container(&m.after, "containers", "flink-agent");
    assert_eq!(agent["image"], "flink-agent:0.1.0");
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}});
    let literal = |name: &str, value: &str| json!({"name": name, "value": value});
    let expected_env = [
        field("FLINK_AGENT_POD_NAME", "metadata.name"),
        field("FLINK_AGENT_NAMESPACE", "metadata.namespace"),
        field("FLINK_AGENT_NODE_NAME", "spec.nodeName"),
        field("FLINK_AGENT_POD_IP", "status.podIP"),
        field("FLINK_AGENT_CLUSTER_ID", "metadata.labels['app']"),
        field("FLINK_AGENT_COMPONENT", "metadata.labels['component']"),
        literal("FLINK_AGENT_CONTAINER", "flink-main-container"),
        literal("FLINK_AGENT_LOG_DIR", "/opt/flink/log"),
        literal(
            "FLINK_AGENT_STATE_FILE",
            "/var/lib/flink-agent/checkpoints.json",
        ),
        literal(
            "FLINK_AGENT_BROKERS",
            "kafka-0.kafka:9092,kafka-1.kafka:9092",
        ),
        literal("FLINK_AGENT_TOPIC", "flink-logs"),
        literal("FLINK_AGENT_SHUTDOWN_TIMEOUT", "20s"),
        literal("FLINK_AGENT_KAFKA_PROPERTY", "compression.type=lz4"),
        literal("FLINK_AGENT_KAFKA_SECRET_DIR", "/etc/flink-agent/kafka"),
        literal("TZ", "Europe/Berlin"),
    ];
    let env = agent["env"].as_array().unwrap();
    for e in &expected_env {
        assert!(env.contains(e), "missing {e} in {env:#?}");
    }
    assert_eq!(env.len(), expected_env.len());
    assert_eq!(
        agent["ports"],
        json!([{"name": "metrics", "containerPort": 9260, "protocol": "TCP"}])
    );
    assert_eq!(
        agent["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    assert_eq!(
        agent["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );
    assert_eq!(
        agent["resources"],
        json!({"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}})
    );
    assert_eq!(
        agent["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 65532, "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(
        agent["volumeMounts"],
        json!([{"name": "flink-logs", "mountPath": "/opt/flink/log"},
            {"name": "flink-agent-state", "mountPath": "/var/lib/flink-agent"},
            {"name": "flink-agent-kafka-secret", "mountPath": "/etc/flink-agent/kafka", "readOnly": true}])
    );
    // Its read positions are in a volume Flink's container does not mount.
    assert_eq!(
        volume(&m.after, "flink-agent-state").unwrap(),
        &json!({"name": "flink-agent-state", "emptyDir": {"sizeLimit": "16Mi"}})
    );
    let main = container(&m.after, "containers", "flink-main-container");
    assert!(!main["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "flink-agent-state"));
    assert!(agent.get("restartPolicy").is_none());
    let typed = as_k8s_pod(&m.after);
    let spec = typed.spec.unwrap();
    let typed_agent = spec
        .containers
        .iter()
        .find(|c| c.name == "flink-agent")
        .unwrap();
    assert_eq!(typed_agent.ports.as_ref().unwrap()[0].container_port, 9260);
}

#[test]
fn flink_owned_fields_are_untouched() {
    for name in ALL_PODS {
        let before = pod(name);
        let m = run(&design(), "flink-jobs", &before, NATIVE);
        let (b, a) = (
            container(&before, "containers", "flink-main-container"),
            container(&m.after, "containers", "flink-main-container"),
        );
        for field in ["name", "image", "resources", "command", "args", "ports"] {
            assert_eq!(a[field], b[field], "{name}: {field} changed");
        }
        // Existing volumes, mounts and env keep their place: the engine only appends.
        let old_volumes = before["spec"]["volumes"].as_array().unwrap();
        assert_eq!(
            &m.after["spec"]["volumes"].as_array().unwrap()[..old_volumes.len()],
            &old_volumes[..],
            "{name}"
        );
        let old_mounts = mounts(b);
        assert_eq!(&mounts(a)[..old_mounts.len()], &old_mounts[..], "{name}");
        for op in &m.patch.0 {
            let path = op.path().to_string();
            assert!(
                matches!(op, json_patch::PatchOperation::Add(_)),
                "{name}: {op:?}"
            );
            assert!(
                !path.ends_with("/image") && !path.ends_with("/resources"),
                "{name}: {path}"
            );
        }
    }
}

// ---- TaskManager pods, which arrive with no annotations ----

#[test]
fn taskmanager_without_annotations_gets_an_annotations_map() {
    for name in [APP_TM, SESSION_TM] {
        let before = pod(name);
        assert!(before["metadata"].get("annotations").is_none());
        let m = run(&design(), "flink-jobs", &before, PLAIN);
        let create = m
            .patch
            .0
            .iter()
            .find(|op| op.path().as_str() == "/metadata/annotations")
            .unwrap_or_else(|| panic!("{name}: no op creating /metadata/annotations"));
        let json_patch::PatchOperation::Add(add) = create else {
            panic!("{create:?}")
        };
        assert_eq!(
            add.value["flink-injector.io/injected"],
            "usrlib,host-aliases,timezone,agent"
        );
        let main = container(&m.after, "containers", "flink-main-container");
        assert_eq!(
            env_of(main, "TZ"),
            Some(json!({"name": "TZ", "value": "Asia/Shanghai"}))
        );
        // restartPolicy: Never: a liveness kill would end the plain-container agent for good.
        let agent = container(&m.after, "containers", "flink-agent");
        assert!(agent.get("livenessProbe").is_none(), "{name}");
        assert!(agent.get("readinessProbe").is_some(), "{name}");
        as_k8s_pod(&m.after);
    }
}

#[test]
fn native_sidecar_goes_into_init_containers() {
    let m = run(&design(), "flink-jobs", &pod(APP_TM), NATIVE);
    assert!(m
        .patch
        .0
        .iter()
        .any(|op| op.path().as_str() == "/spec/initContainers"));
    assert_eq!(names(&m.after, "initContainers"), ["flink-agent"]);
    assert_eq!(names(&m.after, "containers"), ["flink-main-container"]);
    let agent = container(&m.after, "initContainers", "flink-agent");
    assert_eq!(agent["restartPolicy"], "Always");
    assert!(agent.get("livenessProbe").is_some());
    assert_eq!(
        env_of(agent, "TZ"),
        Some(json!({"name": "TZ", "value": "Asia/Shanghai"}))
    );
    let typed = as_k8s_pod(&m.after);
    let init = typed.spec.unwrap().init_containers.unwrap();
    assert_eq!(init[0].restart_policy.as_deref(), Some("Always"));
    assert_idempotent(&design(), "flink-jobs", &m, NATIVE);
}

#[test]
fn explicit_native_sidecar_setting_beats_the_context() {
    let p = policy("overrides.yaml");
    // nativeSidecar: true in the policy, whatever the caller found.
    let m = run(&p, "default", &pod(APP_TM), PLAIN);
    assert_eq!(names(&m.after, "initContainers"), ["flink-agent"]);
    // team-plain pins false.
    let m = run(&p, "team-plain", &pod(APP_TM), NATIVE);
    assert_eq!(
        names(&m.after, "containers"),
        ["flink-main-container", "flink-agent"]
    );
    // auto follows the caller.
    let m = run(&design(), "x", &pod(APP_TM), PLAIN);
    assert!(m.after["spec"].get("initContainers").is_none());
}

// ---- pods built from a pod template ----

#[test]
fn pod_template_pod_with_main_container_last() {
    let before = pod(TEMPLATE_JM);
    let m = run(&design(), "team-a", &before, PLAIN);
    assert_eq!(
        m.injected,
        vec![Part::Usrlib, Part::HostAliases, Part::Timezone, Part::Agent]
    );
    let after = &m.after;
    assert_eq!(
        names(after, "containers"),
        ["proxy", "exporter", "flink-main-container", "flink-agent"]
    );
    // team-a overrides the NFS path but keeps the server; the annotation adds the sub-path.
    assert_eq!(
        volume(after, "flink-usrlib").unwrap()["nfs"],
        json!({"server": "nfs.data.internal", "path": "/exports/team-a", "readOnly": true})
    );
    let main = container(after, "containers", "flink-main-container");
    assert!(mounts(main).contains(
        &json!({"name": "flink-usrlib", "mountPath": "/opt/flink/usrlib",
        "readOnly": true, "subPath": "etl-job/1.4.2"})
    ));
    assert!(mounts(container(after, "containers", "proxy"))
        .iter()
        .all(|m| m["name"] != "flink-usrlib" && m["name"] != "flink-logs"));
    // Same IP: union of names, existing order kept; other entries untouched.
    assert_eq!(
        after["spec"]["hostAliases"],
        json!([{"ip": "10.20.0.11", "hostnames": ["nn1.bigdata.internal", "nn1"]},
            {"ip": "10.20.0.99", "hostnames": ["legacy-db.internal"]}])
    );
    // TZ: the proxy keeps its own, envFrom is left alone, the rest get the policy's.
    let proxy = container(after, "containers", "proxy");
    assert_eq!(tz_entries(proxy), 1);
    assert_eq!(env_of(proxy, "TZ").unwrap()["value"], "UTC");
    assert_eq!(tz_entries(container(after, "containers", "exporter")), 0);
    assert!(m
        .warnings
        .iter()
        .any(|w| w.contains("exporter") && w.contains("envFrom")));
    for (list, name) in [
        ("initContainers", "fetch-secrets"),
        ("containers", "flink-main-container"),
        ("containers", "flink-agent"),
    ] {
        assert_eq!(
            env_of(container(after, list, name), "TZ"),
            Some(json!({"name": "TZ", "value": "Asia/Shanghai"})),
            "{name}"
        );
    }
    let agent = container(after, "containers", "flink-agent");
    assert_eq!(
        env_of(agent, "FLINK_AGENT_TOPIC").unwrap()["value"],
        "team-a-logs"
    );
    let ann = &after["metadata"]["annotations"];
    assert_eq!(ann["team.example.com/owner"], "data-platform");
    assert_eq!(ann["prometheus.io/port"], "9260");
    assert_eq!(
        ann["kubectl.kubernetes.io/default-container"],
        "flink-main-container"
    );
    as_k8s_pod(after);
    assert_idempotent(&design(), "team-a", &m, PLAIN);
}

#[test]
fn pod_template_native_sidecar_after_existing_init_containers() {
    let m = run(&design(), "team-a", &pod(TEMPLATE_JM), NATIVE);
    assert_eq!(
        names(&m.after, "initContainers"),
        ["fetch-secrets", "flink-agent"]
    );
    assert!(m
        .patch
        .0
        .iter()
        .any(|op| op.path().as_str() == "/spec/initContainers/-"));
    as_k8s_pod(&m.after);
    assert_idempotent(&design(), "team-a", &m, NATIVE);
}

#[test]
fn flink_1x_pod_uses_its_log_dir() {
    let m = run(&design(), "flink-jobs", &pod(FLINK1_JM), PLAIN);
    assert_eq!(m.injected.len(), 4, "{:?}", m.skipped);
    let main = container(&m.after, "containers", "flink-main-container");
    assert!(mounts(main).contains(&json!({"name": "flink-logs", "mountPath": "/var/log/flink"})));
    let agent = container(&m.after, "containers", "flink-agent");
    assert_eq!(
        agent["volumeMounts"][0],
        json!({"name": "flink-logs", "mountPath": "/var/log/flink"})
    );
    assert_eq!(
        env_of(agent, "FLINK_AGENT_LOG_DIR").unwrap()["value"],
        "/var/log/flink"
    );
    as_k8s_pod(&m.after);
}

// ---- overrides ----

#[test]
fn annotations_override_policy() {
    let m = run(&design(), "flink-jobs", &pod(ANNOTATED_TM), PLAIN);
    assert_eq!(m.injected.len(), 4, "{:?}", m.skipped);
    let after = &m.after;
    assert_eq!(
        volume(after, "flink-usrlib"),
        Some(&json!({"name": "flink-usrlib",
            "persistentVolumeClaim": {"claimName": "wordcount-jars", "readOnly": true}}))
    );
    let main = container(after, "containers", "flink-main-container");
    assert!(mounts(main).contains(&json!({"name": "flink-usrlib",
        "mountPath": "/opt/flink/usrlib", "readOnly": true, "subPath": "v2"})));
    assert_eq!(env_of(main, "TZ").unwrap()["value"], "America/New_York");
    // Policy's entry first, the annotation's name for the same IP merged into it.
    assert_eq!(
        after["spec"]["hostAliases"],
        json!([{"ip": "10.20.0.11", "hostnames": ["nn1.bigdata.internal", "nn1", "nn1-alias"]},
            {"ip": "10.30.0.5", "hostnames": ["kafka-dr.internal", "kafka-dr"]}])
    );
    let agent = container(after, "containers", "flink-agent");
    assert_eq!(
        env_of(agent, "FLINK_AGENT_TOPIC").unwrap()["value"],
        "wordcount-logs"
    );
    assert_idempotent(&design(), "flink-jobs", &m, PLAIN);
}

#[test]
fn namespace_overrides() {
    let p = policy("overrides.yaml");
    let m = run(&p, "team-pvc", &pod(APP_TM), PLAIN);
    assert_eq!(
        volume(&m.after, "flink-usrlib").unwrap(),
        &json!({"name": "flink-usrlib",
            "persistentVolumeClaim": {"claimName": "team-jars", "readOnly": true}})
    );
    let main = container(&m.after, "containers", "flink-main-container");
    assert!(mounts(main).contains(&json!({"name": "flink-usrlib",
        "mountPath": "/opt/flink/lib/usr", "readOnly": true, "subPath": "shared"})));

    let m = run(&p, "team-bare", &pod(APP_TM), PLAIN);
    assert!(m.patch.0.is_empty());
    for part in Part::ALL {
        assert_eq!(
            skip_of(&m, part),
            Some(&SkipReason::DisabledByPolicy),
            "{part:?}"
        );
    }

    let m = run(&p, "team-no-tz", &pod(APP_TM), PLAIN);
    assert_eq!(
        skip_of(&m, Part::Timezone),
        Some(&SkipReason::DisabledByPolicy)
    );
    assert_eq!(
        m.injected,
        vec![Part::Usrlib, Part::HostAliases, Part::Agent]
    );
    // ...but a job may still ask for one.
    let tm = with_annotations(pod(APP_TM), &[("flink-injector.io/timezone", "Asia/Tokyo")]);
    let m = run(&p, "team-no-tz", &tm, PLAIN);
    let main = container(&m.after, "containers", "flink-main-container");
    assert_eq!(env_of(main, "TZ").unwrap()["value"], "Asia/Tokyo");
}

#[test]
fn policy_properties_and_resources_reach_the_agent() {
    let m = run(&policy("overrides.yaml"), "default", &pod(APP_JM), PLAIN);
    let agent = container(&m.after, "initContainers", "flink-agent");
    assert_eq!(
        env_of(agent, "FLINK_AGENT_KAFKA_PROPERTY").unwrap()["value"],
        "compression.type=lz4\nenable.idempotence=true\nlinger.ms=50"
    );
    assert!(env_of(agent, "FLINK_AGENT_KAFKA_SECRET_DIR").is_none());
    assert!(volume(&m.after, "flink-agent-kafka-secret").is_none());
    assert_eq!(agent["imagePullPolicy"], "IfNotPresent");
    // Not set: the agent's default (per subtask).
    assert!(env_of(agent, "FLINK_AGENT_FLINK_TASK_METRICS").is_none());
    let few = run(
        &policy("overrides.yaml"),
        "team-few-series",
        &pod(APP_TM),
        PLAIN,
    );
    let few_agent = container(&few.after, "initContainers", "flink-agent");
    assert_eq!(
        env_of(few_agent, "FLINK_AGENT_FLINK_TASK_METRICS").unwrap()["value"],
        "per-vertex"
    );
    assert_eq!(
        agent["resources"],
        json!({"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}})
    );
    assert_eq!(
        env_of(agent, "FLINK_AGENT_BROKERS").unwrap()["value"],
        "kafka-0.kafka:9092,kafka-1.kafka:9092"
    );
    as_k8s_pod(&m.after);
}

#[test]
fn opt_outs() {
    // inject=false wins even over a malformed annotation.
    let jm = with_annotations(
        pod(APP_JM),
        &[
            ("flink-injector.io/inject", "false"),
            ("flink-injector.io/timezone", "Mars/Olympus"),
        ],
    );
    assert!(matches!(
        mutate(&design(), "flink-jobs", &jm, &PLAIN),
        Outcome::OptedOut
    ));
    let tm = with_annotations(
        pod(APP_TM),
        &[
            ("flink-injector.io/agent", "false"),
            ("flink-injector.io/usrlib", "none"),
        ],
    );
    let m = run(&design(), "flink-jobs", &tm, PLAIN);
    assert_eq!(skip_of(&m, Part::Agent), Some(&SkipReason::OptedOut));
    assert_eq!(skip_of(&m, Part::Usrlib), Some(&SkipReason::OptedOut));
    assert_eq!(m.injected, vec![Part::HostAliases, Part::Timezone]);
    assert!(volume(&m.after, "flink-logs").is_none());
    assert!(volume(&m.after, "flink-usrlib").is_none());
    assert!(annotation(&m.after, "prometheus.io/scrape").is_none());
    assert_eq!(
        annotation(&m.after, "flink-injector.io/injected"),
        Some("host-aliases,timezone")
    );
}

#[test]
fn not_flink_pods_are_left_alone() {
    let mut other = pod(APP_JM);
    other["metadata"]["labels"]["type"] = json!("something-else");
    let mut no_labels = pod(APP_TM);
    no_labels["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels");
    let mut odd_component = pod(APP_TM);
    odd_component["metadata"]["labels"]["component"] = json!("history-server");
    for p in [
        other,
        no_labels,
        odd_component,
        json!({}),
        json!("x"),
        json!(null),
    ] {
        assert!(
            matches!(mutate(&design(), "ns", &p, &PLAIN), Outcome::NotFlink),
            "{p}"
        );
    }
    assert_eq!(component(&pod(APP_TM)), "taskmanager");
    assert_eq!(component(&json!({})), "other");
}

// ---- annotations: every case in annotation-cases.yaml ----

#[derive(serde::Deserialize)]
struct Cases {
    valid: std::collections::BTreeMap<String, Vec<String>>,
    malformed: Vec<Malformed>,
}

#[derive(serde::Deserialize)]
struct Malformed {
    annotation: String,
    value: String,
    error: Vec<String>,
}

fn cases() -> Cases {
    serde_norway::from_str(&fixture_text("admission/annotation-cases.yaml")).unwrap()
}

#[test]
fn malformed_annotations_are_denied_with_a_clear_message() {
    let cases = cases();
    assert!(cases.malformed.len() >= 15);
    for case in cases.malformed {
        for base in [APP_JM, APP_TM] {
            let p = with_annotations(pod(base), &[(&case.annotation, &case.value)]);
            let Outcome::Denied { message } = mutate(&design(), "flink-jobs", &p, &PLAIN) else {
                panic!("{} = {:?} was not denied", case.annotation, case.value);
            };
            let quoted = format!("annotation {}: \"{}\"", case.annotation, case.value);
            assert!(message.starts_with(&quoted), "{message}");
            for part in &case.error {
                assert!(
                    message.contains(part.as_str()),
                    "{message:?} lacks {part:?}"
                );
            }
        }
    }
}

#[test]
fn the_timezone_denial_reads_as_documented() {
    let p = with_annotations(
        pod(APP_TM),
        &[("flink-injector.io/timezone", "Mars/Olympus")],
    );
    let Outcome::Denied { message } = mutate(&design(), "flink-jobs", &p, &PLAIN) else {
        panic!()
    };
    assert_eq!(
        message,
        r#"annotation flink-injector.io/timezone: "Mars/Olympus" is not an IANA timezone name (expected e.g. "Europe/Berlin")"#
    );
}

#[test]
fn valid_annotations_are_accepted_and_applied() {
    for (key, values) in cases().valid {
        for value in values {
            let p = with_annotations(pod(APP_TM), &[(&key, &value)]);
            let m = run(&design(), "flink-jobs", &p, PLAIN);
            as_k8s_pod(&m.after);
            assert_idempotent(&design(), "flink-jobs", &m, PLAIN);
        }
    }
    let p = with_annotations(
        pod(APP_TM),
        &[("flink-injector.io/usrlib", "fd00::12:/exports/v6")],
    );
    let m = run(&design(), "flink-jobs", &p, PLAIN);
    assert_eq!(
        volume(&m.after, "flink-usrlib").unwrap()["nfs"],
        json!({"server": "fd00::12", "path": "/exports/v6", "readOnly": true})
    );
}

#[test]
fn unknown_injector_annotation_is_a_warning() {
    let p = with_annotations(pod(APP_TM), &[("flink-injector.io/timzone", "UTC")]);
    let m = run(&design(), "flink-jobs", &p, PLAIN);
    assert!(m
        .warnings
        .iter()
        .any(|w| w.contains("flink-injector.io/timzone")));
    assert_eq!(m.injected.len(), 4);
}

// ---- conflicts: the part is skipped, the others still applied ----

fn push(pod: &mut Value, path: &str, value: Value) {
    pod.pointer_mut(path)
        .and_then(Value::as_array_mut)
        .unwrap_or_else(|| panic!("{path}"))
        .push(value);
}

#[test]
fn existing_usrlib_volume_is_a_conflict() {
    let mut p = pod(APP_TM);
    push(
        &mut p,
        "/spec/volumes",
        json!({"name": "flink-usrlib", "emptyDir": {}}),
    );
    let m = run(&design(), "flink-jobs", &p, PLAIN);
    assert!(conflict_of(&m, Part::Usrlib).contains("flink-usrlib"));
    assert_eq!(
        m.injected,
        vec![Part::HostAliases, Part::Timezone, Part::Agent]
    );
    assert_eq!(
        volume(&m.after, "flink-usrlib"),
        Some(&json!({"name": "flink-usrlib", "emptyDir": {}}))
    );
    assert_eq!(
        annotation(&m.after, "flink-injector.io/injected"),
        Some("host-aliases,timezone,agent")
    );
    // Reinvocation does not retry into the same conflict with a patch.
    let again = run(&design(), "flink-jobs", &m.after, PLAIN);
    assert!(again.patch.0.is_empty());
}

#[test]
fn mount_path_in_use_is_a_conflict() {
    let mut p = pod(APP_TM);
    push(
        &mut p,
        "/spec/containers/0/volumeMounts",
        json!({"name": "flink-config-volume", "mountPath": "/opt/flink/usrlib/"}),
    );
    let m = run(&design(), "flink-jobs", &p, PLAIN);
    let reason = conflict_of(&m, Part::Usrlib);
    assert!(reason.contains("/opt/flink/usrlib"), "{reason}");
    assert!(volume(&m.after, "flink-usrlib").is_none());
    assert!(m.injected.contains(&Part::Agent));
}

#[test]
fn usrlib_mount_path_on_flinks_conf_dir_is_a_conflict() {
    let p =
        Policy::from_yaml("usrlib: {nfs: {server: nfs, path: /x}, mountPath: /opt/flink/conf}\n")
            .unwrap();
    let m = run(&p, "flink-jobs", &pod(APP_TM), PLAIN);
    assert!(conflict_of(&m, Part::Usrlib).contains("flink-config-volume"));
    assert!(m.patch.0.is_empty());
}

#[test]
fn agent_conflicts() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/spec/containers",
            json!({"name": "flink-agent", "image": "mine"}),
            "flink-agent",
        ),
        (
            "/spec/volumes",
            json!({"name": "flink-logs", "emptyDir": {}}),
            "flink-logs",
        ),
        (
            "/spec/volumes",
            json!({"name": "flink-agent-kafka-secret", "emptyDir": {}}),
            "flink-agent-kafka-secret",
        ),
        (
            "/spec/containers/0/volumeMounts",
            json!({"name": "flink-config-volume", "mountPath": "/opt/flink/log"}),
            "/opt/flink/log",
        ),
        (
            "/spec/containers",
            json!({"name": "other", "image": "x", "ports": [{"containerPort": 9260}]}),
            "9260",
        ),
    ];
    for (path, value, expect) in cases {
        let mut p = pod(APP_TM);
        push(&mut p, path, value.clone());
        let m = run(&design(), "flink-jobs", &p, PLAIN);
        let reason = conflict_of(&m, Part::Agent);
        assert!(reason.contains(expect), "{value}: {reason}");
        assert_eq!(
            m.injected,
            vec![Part::Usrlib, Part::HostAliases, Part::Timezone],
            "{value}"
        );
        // Nothing of the agent part is left behind.
        assert!(annotation(&m.after, "prometheus.io/scrape").is_none());
        let main = container(&m.after, "containers", "flink-main-container");
        assert!(
            !mounts(main).iter().any(|m| m["name"] == "flink-logs"),
            "{value}"
        );
        as_k8s_pod(&m.after);
    }
}

#[test]
fn an_agent_init_container_of_the_same_name_is_a_conflict() {
    let mut p = pod(APP_TM);
    p["spec"]["initContainers"] = json!([{"name": "flink-agent", "image": "mine"}]);
    let m = run(&design(), "flink-jobs", &p, NATIVE);
    assert!(conflict_of(&m, Part::Agent).contains("initContainers"));
    assert_eq!(names(&m.after, "initContainers"), ["flink-agent"]);
}

#[test]
fn missing_main_container_skips_usrlib_and_agent_only() {
    let mut p = pod(APP_JM);
    p["spec"]["containers"][0]["name"] = json!("renamed");
    let m = run(&design(), "flink-jobs", &p, PLAIN);
    assert!(conflict_of(&m, Part::Usrlib).contains("flink-main-container"));
    assert!(conflict_of(&m, Part::Agent).contains("flink-main-container"));
    assert_eq!(m.injected, vec![Part::HostAliases, Part::Timezone]);
    assert_eq!(
        env_of(container(&m.after, "containers", "renamed"), "TZ").unwrap()["value"],
        "Europe/Berlin"
    );
    assert!(annotation(&m.after, "kubectl.kubernetes.io/default-container").is_none());
}

#[test]
fn a_hostname_mapped_elsewhere_is_not_added() {
    let mut p = pod(APP_TM);
    p["spec"]["hostAliases"] = json!([{"ip": "10.9.9.9", "hostnames": ["nn1"]}]);
    let m = run(&design(), "flink-jobs", &p, PLAIN);
    assert_eq!(
        m.after["spec"]["hostAliases"],
        json!([{"ip": "10.9.9.9", "hostnames": ["nn1"]},
            {"ip": "10.20.0.11", "hostnames": ["nn1.bigdata.internal"]}])
    );
    assert!(m
        .warnings
        .iter()
        .any(|w| w.contains("nn1") && w.contains("10.9.9.9")));
}

#[test]
fn existing_prometheus_and_default_container_annotations_are_kept() {
    let p = with_annotations(
        pod(APP_TM),
        &[
            ("prometheus.io/scrape", "true"),
            ("kubectl.kubernetes.io/default-container", "sidecar"),
        ],
    );
    let m = run(&design(), "flink-jobs", &p, PLAIN);
    assert!(m.injected.contains(&Part::Agent));
    assert_eq!(annotation(&m.after, "prometheus.io/scrape"), Some("true"));
    assert!(annotation(&m.after, "prometheus.io/port").is_none());
    assert_eq!(
        annotation(&m.after, "kubectl.kubernetes.io/default-container"),
        Some("sidecar")
    );
}

#[test]
fn tz_set_indirectly_is_respected() {
    let mut p = pod(APP_TM);
    push(
        &mut p,
        "/spec/containers/0/env",
        json!({"name": "TZ", "valueFrom": {"configMapKeyRef": {"name": "tz", "key": "tz"}}}),
    );
    let m = run(&design(), "flink-jobs", &p, PLAIN);
    let main = container(&m.after, "containers", "flink-main-container");
    assert_eq!(tz_entries(main), 1);
    // The agent cannot copy a value it cannot see, so it gets the policy's.
    let agent = container(&m.after, "containers", "flink-agent");
    assert_eq!(env_of(agent, "TZ").unwrap()["value"], "Asia/Shanghai");
}

// ---- idempotency and patch shape ----

#[test]
fn every_fixture_is_idempotent_in_both_modes() {
    for name in ALL_PODS {
        for ctx in [PLAIN, NATIVE] {
            for (p, ns) in [
                (design(), "flink-jobs"),
                (design(), "team-a"),
                (policy("overrides.yaml"), "team-pvc"),
            ] {
                let m = run(&p, ns, &pod(name), ctx);
                assert!(!m.injected.is_empty(), "{name}");
                as_k8s_pod(&m.after);
                assert_idempotent(&p, ns, &m, ctx);
                let again = run(&p, ns, &m.after, ctx);
                for part in &m.injected {
                    assert_eq!(skip_of(&again, *part), Some(&SkipReason::AlreadyInjected));
                }
            }
        }
    }
}

#[test]
fn partially_injected_pod_gets_the_rest_once() {
    let p = with_annotations(pod(APP_TM), &[("flink-injector.io/injected", "usrlib")]);
    let m = run(&design(), "flink-jobs", &p, PLAIN);
    assert_eq!(
        skip_of(&m, Part::Usrlib),
        Some(&SkipReason::AlreadyInjected)
    );
    assert!(volume(&m.after, "flink-usrlib").is_none());
    assert_eq!(
        annotation(&m.after, "flink-injector.io/injected"),
        Some("usrlib,host-aliases,timezone,agent")
    );
    assert_idempotent(&design(), "flink-jobs", &m, PLAIN);
}

#[test]
fn annotation_keys_are_escaped_in_paths() {
    assert_eq!(escape("a~b/c"), "a~0b~1c");
    let m = run(&design(), "flink-jobs", &pod(APP_JM), PLAIN);
    let paths: Vec<String> = m.patch.0.iter().map(|op| op.path().to_string()).collect();
    for expected in [
        "/metadata/annotations/flink-injector.io~1injected",
        "/metadata/annotations/kubectl.kubernetes.io~1default-container",
        "/metadata/annotations/prometheus.io~1scrape",
        "/spec/volumes/-",
        "/spec/containers/-",
        "/spec/hostAliases",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected} not in {paths:#?}"
        );
    }
    // The serialized patch is what the API server reads.
    let text = serde_json::to_string(&m.patch).unwrap();
    assert!(text.contains(r#""path":"/metadata/annotations/flink-injector.io~1injected""#));
}

#[test]
fn null_arrays_and_maps_are_replaced() {
    let mut p = pod(APP_TM);
    p["spec"]["volumes"] = Value::Null;
    p["spec"]["hostAliases"] = Value::Null;
    p["metadata"]["annotations"] = Value::Null;
    p["spec"]["containers"][0]["volumeMounts"] = Value::Null;
    p["spec"]["containers"][0]["env"] = Value::Null;
    let m = run(&design(), "flink-jobs", &p, NATIVE);
    assert_eq!(m.injected.len(), 4);
    as_k8s_pod(&m.after);
    assert_idempotent(&design(), "flink-jobs", &m, NATIVE);
}

#[test]
fn empty_policy_changes_nothing() {
    let p = Policy::from_yaml("").unwrap();
    let m = run(&p, "flink-jobs", &pod(APP_TM), PLAIN);
    assert!(m.patch.0.is_empty());
    assert!(m.injected.is_empty());
    // The JobManager fixture's own timezone annotation still applies.
    let m = run(&p, "flink-jobs", &pod(APP_JM), PLAIN);
    assert_eq!(m.injected, vec![Part::Timezone]);
}

// ---- property test: random pre-existing state ----

mod properties {
    use super::*;
    use proptest::prelude::*;

    const VOLUMES: [&str; 5] = [
        "flink-usrlib",
        "flink-logs",
        "data",
        "flink-agent-kafka-secret",
        "x",
    ];
    const MOUNT_PATHS: [&str; 4] = [
        "/opt/flink/usrlib",
        "/opt/flink/log",
        "/data",
        "/opt/flink/log/",
    ];
    const CONTAINERS: [&str; 3] = ["flink-agent", "proxy", "exporter"];
    const ANNOTATIONS: [(&str, &str); 7] = [
        ("flink-injector.io/injected", "timezone"),
        ("flink-injector.io/injected", "agent,usrlib"),
        ("flink-injector.io/agent", "false"),
        ("flink-injector.io/usrlib", "none"),
        ("prometheus.io/port", "9249"),
        (
            "flink-injector.io/host-aliases",
            "10.20.0.11=nn1,extra;10.1.1.1=b",
        ),
        ("a~b/c", "escaped"),
    ];

    prop_compose! {
        fn random_pod()(
            base in prop::sample::select(ALL_PODS.to_vec()),
            volumes in prop::sample::subsequence(VOLUMES.to_vec(), 0..=3),
            mount in prop::option::of(prop::sample::select(MOUNT_PATHS.to_vec())),
            sidecars in prop::sample::subsequence(CONTAINERS.to_vec(), 0..=2),
            init in any::<bool>(),
            tz in prop::option::of(prop::sample::select(vec!["UTC", "Asia/Tokyo"])),
            aliases in prop::option::of(prop::sample::select(vec!["nn1", "nn1.bigdata.internal", "other"])),
            anns in prop::sample::subsequence(ANNOTATIONS.to_vec(), 0..=3),
            drop_annotations in any::<bool>(),
        ) -> Value {
            let mut p = pod(base);
            for v in volumes {
                p["spec"].as_object_mut().unwrap().entry("volumes").or_insert_with(|| json!([]));
                push(&mut p, "/spec/volumes", json!({"name": v, "emptyDir": {}}));
            }
            let main = p["spec"]["containers"].as_array().unwrap().len() - 1;
            if let Some(m) = mount {
                push(&mut p, &format!("/spec/containers/{main}/volumeMounts"), json!({"name": "kube", "mountPath": m}));
            }
            if let Some(tz) = tz {
                let env = &mut p["spec"]["containers"][main]["env"];
                if env.is_null() { *env = json!([]); }
                env.as_array_mut().unwrap().push(json!({"name": "TZ", "value": tz}));
            }
            for (i, c) in sidecars.into_iter().enumerate() {
                let list = if init && i == 0 { "initContainers" } else { "containers" };
                let arr = p["spec"].as_object_mut().unwrap().entry(list).or_insert_with(|| json!([]));
                arr.as_array_mut().unwrap().insert(0, json!({"name": c, "image": "i"}));
            }
            if let Some(h) = aliases {
                p["spec"]["hostAliases"] = json!([{"ip": "10.20.0.11", "hostnames": [h]}]);
            }
            if drop_annotations {
                p["metadata"].as_object_mut().unwrap().remove("annotations");
            }
            with_annotations_merge(p, &anns)
        }
    }

    fn with_annotations_merge(p: Value, anns: &[(&str, &str)]) -> Value {
        if anns.is_empty() {
            p
        } else {
            with_annotations(p, anns)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn patch_applies_and_second_run_is_empty(p in random_pod(), native in any::<bool>(), ns in prop::sample::select(vec!["flink-jobs", "team-a"])) {
            let ctx = MutationContext { native_sidecar: native };
            let policy = design();
            let m = run(&policy, ns, &p, ctx);
            prop_assert!(serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(m.after.clone()).is_ok());
            let again = run(&policy, ns, &m.after, ctx);
            prop_assert!(again.patch.0.is_empty(), "second patch: {:?}", again.patch);
            // Never two volumes, containers or mounts of one name/path.
            let vols: Vec<&str> = m.after["spec"]["volumes"].as_array().map(|a| a.iter().filter_map(|v| v["name"].as_str()).collect()).unwrap_or_default();
            let mut dedup = vols.clone();
            dedup.sort_unstable();
            dedup.dedup();
            prop_assert_eq!(vols.len(), dedup.len());
            for list in ["containers", "initContainers"] {
                for c in m.after["spec"][list].as_array().into_iter().flatten() {
                    prop_assert!(tz_entries(c) <= 1);
                }
            }
        }
    }
}

#[test]
fn a_part_failing_half_way_leaves_nothing_behind() {
    // The agent's volume and mount go in before the container, whose list is not an array here.
    let mut p = pod(APP_TM);
    p["spec"]["initContainers"] = json!("garbage");
    let m = run(&design(), "flink-jobs", &p, NATIVE);
    let reason = conflict_of(&m, Part::Agent);
    assert!(reason.contains("/spec/initContainers"), "{reason}");
    assert!(volume(&m.after, "flink-logs").is_none());
    let main = container(&m.after, "containers", "flink-main-container");
    assert!(!mounts(main).iter().any(|m| m["name"] == "flink-logs"));
    // The timezone part came after the failed one and still applied.
    assert_eq!(
        m.injected,
        vec![Part::Usrlib, Part::HostAliases, Part::Timezone]
    );
    assert_eq!(env_of(main, "TZ").unwrap()["value"], "Asia/Shanghai");
}

#[test]
fn editor_transaction_rolls_back() {
    let original = json!({"spec": {"volumes": [{"name": "a"}]}});
    let mut ed = editor::Editor::new(original);
    let volumes = editor::Path::new(&["spec", "volumes"]);
    ed.append(&volumes, json!({"name": "b"})).unwrap();
    let failed: Result<(), editor::EditError> = ed.transaction(|ed| {
        ed.append(&volumes, json!({"name": "c"}))?;
        ed.append(
            &editor::Path::new(&["spec", "volumes", "0", "name"]),
            json!("x"),
        )
    });
    assert!(failed.is_err());
    assert_eq!(
        ed.pod(),
        &json!({"spec": {"volumes": [{"name": "a"}, {"name": "b"}]}})
    );
    ed.put(&editor::Path::new(&["metadata"]), "a/b~c", json!(1))
        .unwrap();
    assert_eq!(
        ed.get(&editor::Path::new(&["metadata", "a/b~c"])),
        Some(&json!(1))
    );
    assert_eq!(
        ed.get(&editor::Path::new(&["spec", "volumes", "1", "name"])),
        Some(&json!("b"))
    );
    assert_eq!(ed.get(&editor::Path::new(&["spec", "nope"])), None);
    let ops = serde_json::to_value(ed.into_ops()).unwrap();
    assert_eq!(
        ops,
        json!([{"op": "add", "path": "/spec/volumes/-", "value": {"name": "b"}},
            {"op": "add", "path": "/metadata", "value": {"a/b~c": 1}}])
    );
}

/// Each kind of `add` taken back in place: a replaced key gets its old value back, an added key
/// goes, an insertion in the middle of an array comes out, and the kept edits stay in the patch.
#[test]
fn editor_rollback_restores_replaced_keys_and_inserted_elements() {
    let original = json!({"metadata": {"annotations": {"k": "old"}},
        "spec": {"volumes": [{"name": "a"}, {"name": "z"}]}});
    let mut ed = editor::Editor::new(original.clone());
    let annotations = editor::Path::new(&["metadata", "annotations"]);
    let volumes = editor::Path::new(&["spec", "volumes"]);
    ed.put(&annotations, "kept", json!("yes")).unwrap();
    let failed: Result<(), editor::EditError> = ed.transaction(|ed| {
        ed.put(&annotations, "k", json!("new"))?;
        ed.put(&annotations, "fresh", json!("x"))?;
        ed.add(&volumes.join(1), json!({"name": "m"}))?;
        ed.put(&editor::Path::new(&["spec"]), "hostAliases", json!([]))?;
        assert_eq!(
            ed.get(&volumes.join(1).join("name")),
            Some(&json!("m")),
            "inserted before the old second element"
        );
        ed.add(&volumes.join(4), json!({"name": "past-the-end"}))
    });
    let Err(e) = failed else {
        panic!("an index past the end must fail")
    };
    assert!(e.to_string().contains("/spec/volumes/4"), "{e}");
    let mut want = original.clone();
    want["metadata"]["annotations"]["kept"] = json!("yes");
    assert_eq!(ed.pod(), &want);
    let ops = serde_json::to_value(ed.into_ops()).unwrap();
    assert_eq!(
        ops,
        json!([{"op": "add", "path": "/metadata/annotations/kept", "value": "yes"}])
    );
}

/// The editor's `add` against json-patch's, for the edge cases a part never hits today.
#[test]
fn editor_add_agrees_with_json_patch() {
    let doc = json!({"m": {"a/b": 1, "~": 2}, "l": [0, 1, 2], "s": "text", "n": null});
    let cases = [
        "/m/c", "/m/a~1b", "/m/~0", "/l/0", "/l/3", "/l/-", "/l/4", "/l/01", "/l/+1", "/l/x",
        "/s/x", "/n/x", "/nope/x", "/m", "/l/1/x",
    ];
    for path in cases {
        let mut theirs = doc.clone();
        let op: json_patch::Patch =
            serde_json::from_value(json!([{"op": "add", "path": path, "value": "v"}])).unwrap();
        let their_result = json_patch::patch(&mut theirs, &op);
        let mut ed = editor::Editor::new(doc.clone());
        let path_tokens: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        let tokens: Vec<&str> = path_tokens.iter().map(String::as_str).collect();
        let ours = ed.add(&editor::Path::new(&tokens), json!("v"));
        assert_eq!(ours.is_ok(), their_result.is_ok(), "{path}: {ours:?}");
        if ours.is_ok() {
            assert_eq!(ed.pod(), &theirs, "{path}");
        } else {
            assert_eq!(ed.pod(), &doc, "{path}: a failed add changes nothing");
        }
    }
}

#[test]
fn localtime_mount_where_tz_is_set() {
    let p = Policy::from_yaml("timezone: Asia/Shanghai\nlocaltime: true\n").unwrap();
    let mut jm = pod(TEMPLATE_JM);
    push(
        &mut jm,
        "/spec/initContainers/0/volumeMounts",
        json!({"name": "shared-data", "mountPath": "/etc/localtime"}),
    );
    let m = run(&p, "team-a", &jm, PLAIN);
    assert_eq!(m.injected, vec![Part::Timezone]);
    assert_eq!(
        volume(&m.after, "flink-localtime"),
        Some(&json!({"name": "flink-localtime",
            "hostPath": {"path": "/usr/share/zoneinfo/Asia/Shanghai", "type": "File"}}))
    );
    let localtime =
        json!({"name": "flink-localtime", "mountPath": "/etc/localtime", "readOnly": true});
    let main = container(&m.after, "containers", "flink-main-container");
    assert!(mounts(main).contains(&localtime));
    // The proxy keeps its own TZ and zone; the exporter got no TZ; the init container has its own
    // /etc/localtime but still gets TZ.
    for name in ["proxy", "exporter"] {
        assert!(!mounts(container(&m.after, "containers", name)).contains(&localtime));
    }
    let init = container(&m.after, "initContainers", "fetch-secrets");
    assert!(!mounts(init).contains(&localtime));
    assert_eq!(env_of(init, "TZ").unwrap()["value"], "Asia/Shanghai");
    as_k8s_pod(&m.after);
    assert_idempotent(&p, "team-a", &m, PLAIN);

    // Off by default, and a taken volume name is a conflict.
    let m = run(&design(), "team-a", &pod(TEMPLATE_JM), PLAIN);
    assert!(volume(&m.after, "flink-localtime").is_none());
    let mut tm = pod(APP_TM);
    push(
        &mut tm,
        "/spec/volumes",
        json!({"name": "flink-localtime", "emptyDir": {}}),
    );
    let m = run(&p, "flink-jobs", &tm, PLAIN);
    assert!(conflict_of(&m, Part::Timezone).contains("flink-localtime"));
    assert!(m.patch.0.is_empty());
}

#[test]
fn every_admission_review_fixture() {
    let dir = format!("{}/../tests/fixtures/admission", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".review.json") {
            continue;
        }
        seen += 1;
        let review: Value =
            serde_json::from_str(&fixture_text(&format!("admission/{name}"))).unwrap();
        let request = &review["request"];
        let (object, ns) = (&request["object"], request["namespace"].as_str().unwrap());
        // The pod alone, as recorded next to the review, is the same object.
        let pod_file = name.replace(".review.json", ".pod.yaml");
        assert_eq!(object, &pod(&pod_file), "{name}");
        if component(object) == "jobmanager" {
            assert!(object["metadata"].get("name").is_none(), "{name}");
        }
        for ctx in [PLAIN, NATIVE] {
            let m = run(&design(), ns, object, ctx);
            assert!(m.injected.contains(&Part::Agent), "{name}: {:?}", m.skipped);
            as_k8s_pod(&m.after);
            assert_idempotent(&design(), ns, &m, ctx);
        }
    }
    assert_eq!(seen, 7);
}

#[test]
fn the_grace_period_covers_the_agents_shutdown_and_is_never_lowered() {
    // Flink's pods arrive with the API server's default, 30 s: enough, left alone.
    let m = run(&design(), "flink-jobs", &pod(APP_TM), PLAIN);
    assert_eq!(m.after["spec"]["terminationGracePeriodSeconds"], 30);
    assert!(!m.patch.0.iter().any(|op| op
        .path()
        .to_string()
        .contains("terminationGracePeriodSeconds")));
    // A pod template that asks for less is raised, with a warning.
    let mut short = pod(APP_TM);
    short["spec"]["terminationGracePeriodSeconds"] = json!(5);
    let m = run(&design(), "flink-jobs", &short, PLAIN);
    assert_eq!(m.after["spec"]["terminationGracePeriodSeconds"], 30);
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("terminationGracePeriodSeconds")),
        "{:?}",
        m.warnings
    );
    // More is kept.
    let mut long = pod(APP_TM);
    long["spec"]["terminationGracePeriodSeconds"] = json!(120);
    let m = run(&design(), "flink-jobs", &long, PLAIN);
    assert_eq!(m.after["spec"]["terminationGracePeriodSeconds"], 120);
    // No agent, no change.
    let mut no_agent = short.clone();
    no_agent["metadata"]["annotations"] = json!({"flink-injector.io/agent": "false"});
    let m = run(&design(), "flink-jobs", &no_agent, PLAIN);
    assert_eq!(m.after["spec"]["terminationGracePeriodSeconds"], 5);
}

fn host_network(name: &str) -> Value {
    let mut p = pod(APP_TM);
    p["spec"]["hostNetwork"] = json!(true);
    p["metadata"]["name"] = json!(name);
    p
}

fn agent_port(after: &Value, list: &str) -> i64 {
    container(after, list, "flink-agent")["ports"][0]["containerPort"]
        .as_i64()
        .unwrap()
}

#[test]
fn a_host_network_pods_agent_gets_a_port_of_its_own_and_probes_only_it_passes() {
    for (ctx, list) in [(PLAIN, "containers"), (NATIVE, "initContainers")] {
        let m = run(
            &design(),
            "flink-jobs",
            &host_network("wc-taskmanager-1-1"),
            ctx,
        );
        let agent = container(&m.after, list, "flink-agent");
        let port = agent_port(&m.after, list);
        assert!((19260..=19515).contains(&port), "{port}");
        // Declared as the hostPort it becomes anyway, so the scheduler keeps two pods with it
        // off one node.
        assert_eq!(
            agent["ports"],
            json!([{"name": "metrics", "containerPort": port, "hostPort": port, "protocol": "TCP"}])
        );
        assert_eq!(
            env_of(agent, "FLINK_AGENT_METRICS_LISTEN").unwrap()["value"],
            format!("0.0.0.0:{port}")
        );
        let token = env_of(agent, "FLINK_AGENT_PROBE_TOKEN").unwrap()["value"].clone();
        assert_eq!(token.as_str().map(str::len), Some(16));
        let header = json!([{"name": "X-Flink-Agent-Probe", "value": token}]);
        assert_eq!(agent["readinessProbe"]["httpGet"]["httpHeaders"], header);
        if let Some(live) = agent.get("livenessProbe") {
            assert_eq!(live["httpGet"]["httpHeaders"], header);
        }
        assert_eq!(
            m.after["metadata"]["annotations"]["prometheus.io/port"],
            port.to_string()
        );
        as_k8s_pod(&m.after);
    }
    // The same pod always gets the same port (flink-webhook mutate is repeatable).
    let again = run(
        &design(),
        "flink-jobs",
        &host_network("wc-taskmanager-1-1"),
        PLAIN,
    );
    assert_eq!(agent_port(&again.after, "containers"), {
        let m = run(
            &design(),
            "flink-jobs",
            &host_network("wc-taskmanager-1-1"),
            PLAIN,
        );
        agent_port(&m.after, "containers")
    });
}

#[test]
fn the_taskmanagers_of_a_host_network_job_spread_over_the_range() {
    let mut ports = std::collections::BTreeSet::new();
    let mut tokens = std::collections::BTreeSet::new();
    for i in 1..=20 {
        let m = run(
            &design(),
            "flink-jobs",
            &host_network(&format!("wc-taskmanager-1-{i}")),
            PLAIN,
        );
        ports.insert(agent_port(&m.after, "containers"));
        let agent = container(&m.after, "containers", "flink-agent");
        tokens.insert(env_of(agent, "FLINK_AGENT_PROBE_TOKEN").unwrap()["value"].to_string());
    }
    assert_eq!(tokens.len(), 20, "each pod's probes carry their own token");
    // 20 of 256 ports: a few may share one (the scheduler then places them apart).
    assert!(ports.len() >= 17, "{ports:?}");
}

#[test]
fn pod_network_pods_keep_9260_and_plain_probes() {
    let m = run(&design(), "flink-jobs", &pod(APP_TM), PLAIN);
    let agent = container(&m.after, "containers", "flink-agent");
    assert_eq!(agent_port(&m.after, "containers"), 9260);
    assert!(agent["ports"][0].get("hostPort").is_none());
    assert!(env_of(agent, "FLINK_AGENT_PROBE_TOKEN").is_none());
    assert!(env_of(agent, "FLINK_AGENT_METRICS_LISTEN").is_none());
    assert!(agent["readinessProbe"]["httpGet"]
        .get("httpHeaders")
        .is_none());
}

#[test]
fn the_host_network_range_comes_from_the_policy_and_skips_the_pods_own_ports() {
    let text = fixture_text("policy/design.yaml").replace(
        "  nativeSidecar: auto  ",
        "  hostNetworkPorts: 20000-20001\n  nativeSidecar: auto  ",
    );
    let p = Policy::from_yaml(&text).unwrap();
    let m = run(&p, "flink-jobs", &host_network("wc-taskmanager-1-1"), PLAIN);
    let port = agent_port(&m.after, "containers");
    assert!((20000..=20001).contains(&port), "{port}");
    // Flink's container already declares one of the two: the agent takes the other.
    let mut busy = host_network("wc-taskmanager-1-1");
    busy["spec"]["containers"][0]["ports"] = json!([{"name": "x", "containerPort": port}]);
    let m = run(&p, "flink-jobs", &busy, PLAIN);
    assert_eq!(agent_port(&m.after, "containers"), 40001 - port);
    // Both taken: the agent is skipped as a conflict, never given a clashing port.
    busy["spec"]["containers"][0]["ports"] = json!([
        {"name": "x", "containerPort": 20000}, {"name": "y", "containerPort": 20001}]);
    let m = run(&p, "flink-jobs", &busy, PLAIN);
    assert!(matches!(
        skip_of(&m, Part::Agent),
        Some(SkipReason::Conflict(_))
    ));

    for bad in ["9000", "80-90", "20001-20000", "x-y", "19260-99999"] {
        let text = fixture_text("policy/design.yaml").replace(
            "  nativeSidecar: auto  ",
            &format!("  hostNetworkPorts: \"{bad}\"\n  nativeSidecar: auto  "),
        );
        let e = Policy::from_yaml(&text).unwrap_err().to_string();
        assert!(
            e.contains("agent.hostNetworkPorts") && e.contains(bad),
            "{e}"
        );
    }
}

#[test]
fn annotations_outside_the_namespaces_allowlists_are_denied_with_the_list() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy.yaml"),
    )
    .unwrap();
    let p = Policy::from_yaml(&text).unwrap();
    let with = |pairs: &[(&str, &str)]| {
        let mut pod = pod(APP_TM);
        pod["metadata"]["namespace"] = json!("team-a");
        let ann: serde_json::Map<String, Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        pod["metadata"]["annotations"] = Value::Object(ann);
        pod
    };
    // Inside the lists: injected as asked.
    let m = run(
        &p,
        "team-a",
        &with(&[
            ("flink-injector.io/log-topic", "team-a-wordcount"),
            (
                "flink-injector.io/usrlib",
                "nfs.data.internal:/exports/team-a/wordcount",
            ),
        ]),
        PLAIN,
    );
    let agent = container(&m.after, "containers", "flink-agent");
    assert_eq!(
        env_of(agent, "FLINK_AGENT_TOPIC").unwrap()["value"],
        "team-a-wordcount"
    );
    // Outside: denied, naming the annotation, the value and the list.
    for (key, value, list) in [
        (
            "flink-injector.io/log-topic",
            "billing-logs",
            "allow.logTopics is [team-a-logs, team-a-*]",
        ),
        (
            "flink-injector.io/usrlib",
            "nfs.billing.internal:/exports/team-a",
            "allow.nfsServers",
        ),
        (
            "flink-injector.io/usrlib",
            "nfs.data.internal:/exports/billing",
            "allow.nfsPaths",
        ),
        (
            "flink-injector.io/usrlib",
            "pvc:billing-jars",
            "allow.pvcClaims is []",
        ),
    ] {
        let Outcome::Denied { message } = mutate(&p, "team-a", &with(&[(key, value)]), &PLAIN)
        else {
            panic!("{key}={value} was not denied");
        };
        assert!(
            message.contains(key) && message.contains("team-a") && message.contains(list),
            "{message}"
        );
    }
    // Other namespaces have no lists: the same annotation passes there.
    let mut elsewhere = with(&[("flink-injector.io/log-topic", "billing-logs")]);
    elsewhere["metadata"]["namespace"] = json!("flink-jobs");
    assert!(matches!(
        mutate(&p, "flink-jobs", &elsewhere, &PLAIN),
        Outcome::Mutated { .. }
    ));
}

#[test]
fn malformed_allowlists_are_policy_errors() {
    for (list, entry) in [
        ("logTopics", "bad topic"),
        ("nfsPaths", "relative/path"),
        ("nfsPaths", "/exports/../etc"),
        ("pvcClaims", "Bad_Claim"),
        ("nfsServers", "nfs/x"),
    ] {
        let text = format!("allow: {{{list}: [\"{entry}\"]}}\n");
        let e = Policy::from_yaml(&text).unwrap_err().to_string();
        assert!(
            e.contains(&format!("allow.{list}[0]")) && e.contains(entry),
            "{e}"
        );
    }
    let e = Policy::from_yaml("allow: {topics: [x]}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("topics"), "{e}");
}

#[test]
fn an_existing_state_volume_name_is_a_conflict() {
    let mut p = pod(APP_TM);
    p["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "flink-agent-state", "emptyDir": {}}));
    let m = run(&design(), "flink-jobs", &p, PLAIN);
    assert!(matches!(
        skip_of(&m, Part::Agent),
        Some(SkipReason::Conflict(_))
    ));
}
