//! The `flink-agent` sidecar: its container spec and the `flink-logs` volume it shares with Flink.
use serde_json::{json, Value};

use super::editor::{Editor, Path};
use super::parts::no_main_container;
use super::pod::{self, Env, List, MAIN_CONTAINER};
use super::SkipReason;
use crate::policy::AgentSettings;

pub const CONTAINER: &str = "flink-agent";
pub const LOGS_VOLUME: &str = "flink-logs";
/// The Kafka credentials travel as a Secret volume, not `secretKeyRef` env: the agent turns every
/// key file into a librdkafka property, and the webhook cannot list a Secret's keys without RBAC
/// on Secrets in every Flink namespace.
pub const SECRET_VOLUME: &str = "flink-agent-kafka-secret";
pub const SECRET_DIR: &str = "/etc/flink-agent/kafka";
pub const DEFAULT_LOG_DIR: &str = "/opt/flink/log";
/// The agent's read positions live in a volume only the agent mounts: in Flink's log volume,
/// Flink (or the job's code) could rewrite them to make the agent skip or re-ship logs.
pub const STATE_VOLUME: &str = "flink-agent-state";
pub const STATE_DIR: &str = "/var/lib/flink-agent";
/// Not 9249, which a Flink PrometheusReporter in the same pod would hold.
pub const METRICS_PORT: i64 = 9260;
/// How long the agent may take after SIGTERM: tail until Flink's files are quiet (Flink writes
/// its shutdown after the signal), ship, wait for Kafka. Set explicitly so that the grace period
/// below is computed from what the agent is told, not from its default.
pub const SHUTDOWN_TIMEOUT_SECONDS: i64 = 20;
/// The pod's termination grace period must cover the agent's shutdown and Flink's own before it
/// (on Kubernetes 1.29+ a native sidecar is signalled only once Flink has exited): at least this.
/// Kubernetes' default, 30, already is; only a pod that asks for less is raised, never lowered.
pub const MIN_GRACE_SECONDS: i64 = SHUTDOWN_TIMEOUT_SECONDS + 10;

/// The header of the probes of a hostNetwork pod's agent (the agent's `--probe-token`).
pub const PROBE_HEADER: &str = "X-Flink-Agent-Probe";

/// How the agent is reached. A `hostNetwork: true` pod (`kubernetes.hostnetwork.enabled`)
/// shares the node's ports: a declared port becomes a hostPort, so a fixed 9260 would leave the
/// second Flink pod of a node Pending (plain container) or, as a native sidecar whose port the
/// 1.28 scheduler ignores, let another pod's agent answer this one's probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    Pod,
    /// A port of the policy's range, declared as a hostPort so that the scheduler never puts two
    /// pods with it on one node, and a token the probes carry so that only this pod's agent
    /// passes them whatever else listens there.
    Host {
        port: i64,
        token: String,
    },
}

/// FNV-1a: stable across releases and platforms, unlike std's hasher, so `flink-webhook
/// mutate` gives the same port for the same pod every time.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The network the agent gets in this pod. For a hostNetwork pod, the port is picked from the
/// range by the pod's identity (its name, or a JobManager's generateName, and its cluster and
/// component labels: TaskManagers of one job differ by name), skipping ports the pod itself
/// declares; `None` when the whole range is taken by the pod.
pub fn network(pod: &Value, (from, to): (u16, u16)) -> Option<Network> {
    if pod.pointer("/spec/hostNetwork") != Some(&Value::Bool(true)) {
        return Some(Network::Pod);
    }
    let meta = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let name = match meta("/metadata/name") {
        "" => meta("/metadata/generateName"),
        n => n,
    };
    let id = [
        name,
        meta("/metadata/labels/app"),
        meta("/metadata/labels/component"),
    ];
    let span = u64::from(to - from) + 1;
    let start = fnv1a(&id) % span;
    let port = (0..span)
        .map(|i| i64::from(from) + ((start + i) % span) as i64)
        .find(|p| pod::declares_port(pod, *p).is_none())?;
    let token = format!("{:016x}", fnv1a(&[id[0], id[1], id[2], "probe-token"]));
    Some(Network::Host { port, token })
}

/// The agent part after policy, annotations and cluster capabilities are combined.
#[derive(Debug, Clone)]
pub struct Agent<'a> {
    pub settings: &'a AgentSettings,
    pub topic: &'a str,
    /// A Kubernetes native sidecar (restartable init container) rather than a plain container.
    pub native: bool,
}

/// Where Flink writes its logs: `FLINK_LOG_DIR` (from `kubernetes.flink.log.dir`) or the default.
fn log_dir(main: &Value, warnings: &mut Vec<String>) -> String {
    match pod::env(main, "FLINK_LOG_DIR") {
        Env::Literal(dir) if dir.starts_with('/') => dir.to_string(),
        Env::Absent => DEFAULT_LOG_DIR.to_string(),
        _ => {
            warnings.push(format!(
                "FLINK_LOG_DIR of {MAIN_CONTAINER} is not a literal absolute path; \
                 sharing {DEFAULT_LOG_DIR} with the agent"
            ));
            DEFAULT_LOG_DIR.to_string()
        }
    }
}

pub fn inject(ed: &mut Editor, want: &Agent, warnings: &mut Vec<String>) -> Result<(), SkipReason> {
    let conflict = |reason: String| Err(SkipReason::Conflict(reason));
    let main_index = pod::main_container(ed.pod()).ok_or_else(no_main_container)?;
    let main_path = pod::container_path(List::Main, main_index);
    let (dir, tz) = {
        let main = ed.get(&main_path).unwrap_or(&Value::Null);
        let dir = log_dir(main, warnings);
        if let Some(other) = pod::mount_at(main, &dir) {
            return conflict(format!(
                "{MAIN_CONTAINER} already mounts volume {other} at {dir}"
            ));
        }
        let tz = match pod::env(main, "TZ") {
            Env::Literal(tz) => Some(tz.to_string()),
            _ => None,
        };
        (dir, tz)
    };
    let secret = want.settings.kafka.secret_name.as_deref();
    if let Some((list, _)) = pod::find_container(ed.pod(), CONTAINER) {
        return conflict(format!(
            "the pod already has a container named {CONTAINER} in {}",
            list.key()
        ));
    }
    for volume in [
        Some(LOGS_VOLUME),
        Some(STATE_VOLUME),
        secret.map(|_| SECRET_VOLUME),
    ]
    .into_iter()
    .flatten()
    {
        if pod::has_volume(ed.pod(), volume) {
            return conflict(format!("the pod already has a volume named {volume}"));
        }
    }
    let Some(net) = network(ed.pod(), want.settings.host_network_ports) else {
        let (from, to) = want.settings.host_network_ports;
        return conflict(format!(
            "hostNetwork pod declares every port of agent.hostNetworkPorts {from}-{to}"
        ));
    };
    if net == Network::Pod {
        if let Some(owner) = pod::declares_port(ed.pod(), METRICS_PORT) {
            return conflict(format!(
                "container {owner} already declares port {METRICS_PORT}"
            ));
        }
    }

    let volumes = Path::new(&["spec", "volumes"]);
    ed.append(&volumes, json!({"name": LOGS_VOLUME, "emptyDir": {}}))?;
    // A few KiB per file tailed; the limit only guards the node.
    ed.append(
        &volumes,
        json!({"name": STATE_VOLUME, "emptyDir": {"sizeLimit": "16Mi"}}),
    )?;
    if let Some(secret) = secret {
        ed.append(
            &volumes,
            json!({"name": SECRET_VOLUME, "secret": {"secretName": secret}}),
        )?;
    }
    ed.append(
        &main_path.join("volumeMounts"),
        json!({"name": LOGS_VOLUME, "mountPath": dir}),
    )?;
    // Plain containers of a `restartPolicy: Never` pod (every TaskManager) are not restarted:
    // a failed liveness probe would leave a terminated status, which Flink reads as a dead
    // TaskManager. Native sidecars are always restarted, so only they get one.
    let liveness = want.native || pod::restart_policy(ed.pod()) != Some("Never");
    let spec = container(want, &dir, tz.as_deref(), liveness, &net);
    let list = if want.native { List::Init } else { List::Main };
    ed.append(&list.path(), spec)?;
    let grace = ed
        .get(&Path::new(&["spec", "terminationGracePeriodSeconds"]))
        .and_then(Value::as_i64);
    if grace.is_some_and(|g| g < MIN_GRACE_SECONDS) {
        warnings.push(format!(
            "terminationGracePeriodSeconds raised from {} to {MIN_GRACE_SECONDS} so that the \
             agent can ship Flink's last log lines after SIGTERM",
            grace.unwrap_or_default()
        ));
        ed.put(
            &Path::new(&["spec"]),
            "terminationGracePeriodSeconds",
            json!(MIN_GRACE_SECONDS),
        )?;
    }
    Ok(())
}

fn field_env(name: &str, field_path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}})
}

fn env(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

/// The container. `tz` is the main container's own TZ, so the agent dates Flink's zone-less
/// timestamps in the zone Flink wrote them in.
pub fn container(
    want: &Agent,
    log_dir: &str,
    tz: Option<&str>,
    liveness: bool,
    net: &Network,
) -> Value {
    let s = want.settings;
    let mut envs = vec![
        field_env("FLINK_AGENT_POD_NAME", "metadata.name"),
        field_env("FLINK_AGENT_NAMESPACE", "metadata.namespace"),
        field_env("FLINK_AGENT_NODE_NAME", "spec.nodeName"),
        field_env("FLINK_AGENT_POD_IP", "status.podIP"),
        field_env("FLINK_AGENT_CLUSTER_ID", "metadata.labels['app']"),
        field_env("FLINK_AGENT_COMPONENT", "metadata.labels['component']"),
        env("FLINK_AGENT_CONTAINER", MAIN_CONTAINER),
        env("FLINK_AGENT_LOG_DIR", log_dir),
        env(
            "FLINK_AGENT_STATE_FILE",
            &format!("{STATE_DIR}/checkpoints.json"),
        ),
        env("FLINK_AGENT_BROKERS", &s.kafka.brokers),
        env("FLINK_AGENT_TOPIC", want.topic),
        env(
            "FLINK_AGENT_SHUTDOWN_TIMEOUT",
            &format!("{SHUTDOWN_TIMEOUT_SECONDS}s"),
        ),
    ];
    if !s.kafka.properties.is_empty() {
        let lines: Vec<String> = s
            .kafka
            .properties
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        envs.push(env("FLINK_AGENT_KAFKA_PROPERTY", &lines.join("\n")));
    }
    if let Some(mode) = &s.flink_task_metrics {
        envs.push(env("FLINK_AGENT_FLINK_TASK_METRICS", mode));
    }
    let mut mounts = vec![
        json!({"name": LOGS_VOLUME, "mountPath": log_dir}),
        json!({"name": STATE_VOLUME, "mountPath": STATE_DIR}),
    ];
    if s.kafka.secret_name.is_some() {
        envs.push(env("FLINK_AGENT_KAFKA_SECRET_DIR", SECRET_DIR));
        mounts.push(json!({"name": SECRET_VOLUME, "mountPath": SECRET_DIR, "readOnly": true}));
    }
    if let Some(tz) = tz {
        envs.push(env("TZ", tz));
    }
    let (port, headers) = match net {
        Network::Pod => (
            json!({"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}),
            None,
        ),
        Network::Host { port, token } => {
            envs.push(env(
                "FLINK_AGENT_METRICS_LISTEN",
                &format!("0.0.0.0:{port}"),
            ));
            envs.push(env("FLINK_AGENT_PROBE_TOKEN", token));
            (
                json!({"name": "metrics", "containerPort": port, "hostPort": port, "protocol": "TCP"}),
                Some(json!([{"name": PROBE_HEADER, "value": token}])),
            )
        }
    };
    let probe = |path: &str| {
        let mut get = json!({"path": path, "port": "metrics"});
        if let Some(h) = &headers {
            get["httpHeaders"] = h.clone();
        }
        get
    };
    let mut c = json!({
        "name": CONTAINER,
        "image": s.image,
        "env": envs,
        "ports": [port],
        // /readyz feeds the pod's Ready condition, and an unready JobManager drops out of its
        // Service: the agent must report only that it serves, never Kafka's health.
        "readinessProbe": {
            "httpGet": probe("/readyz"),
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": {"requests": s.resources.requests, "limits": s.resources.limits},
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    });
    if liveness {
        c["livenessProbe"] = json!({
            "httpGet": probe("/healthz"),
            "periodSeconds": 10,
            "failureThreshold": 6,
        });
    }
    if let Some(policy) = &s.image_pull_policy {
        c["imagePullPolicy"] = json!(policy);
    }
    if want.native {
        c["restartPolicy"] = json!("Always");
    }
    c
}
