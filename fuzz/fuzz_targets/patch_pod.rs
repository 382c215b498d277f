//! Structure-aware: the `arbitrary` crate builds a Pod-shaped JSON value out of the names that
//! matter to the patch engine (Flink's labels, `flink-main-container`, `flink-agent`, TZ and
//! FLINK_LOG_DIR, Flink's own volumes and the webhook's, mount paths, hostAliases, the
//! `flink-injector.io/*` annotations with valid, invalid and free-form values, and now and then a
//! field of the wrong JSON type), picks one of several policies, a namespace and the cluster's
//! native-sidecar support, and runs `flink_webhook::patch::mutate`.
//!
//! Properties (see `flink_injector_fuzz::check_engine`): the patch applies with
//! `json_patch::patch`, the engine run again on the patched pod gives an empty patch
//! (reinvocation), Flink's own volumes and main-container fields are untouched, a valid `Pod`
//! stays valid. A denial is fine.
#![no_main]

use arbitrary::Arbitrary;
use flink_webhook::patch::MutationContext;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

/// A field that is usually well-formed but can be absent, null, or of the wrong type.
#[derive(Arbitrary, Debug)]
enum Field<T> {
    Absent,
    Null,
    WrongType(Junk),
    Value(T),
    Value2(T),
    Value3(T),
}

#[derive(Arbitrary, Debug)]
enum Junk {
    Str(String),
    Num(i64),
    Bool(bool),
    EmptyMap,
    EmptyList,
}

impl Junk {
    fn json(&self) -> Value {
        match self {
            Junk::Str(s) => json!(s),
            Junk::Num(n) => json!(n),
            Junk::Bool(b) => json!(b),
            Junk::EmptyMap => json!({}),
            Junk::EmptyList => json!([]),
        }
    }
}

impl<T> Field<T> {
    fn put(&self, map: &mut Map<String, Value>, key: &str, f: impl FnOnce(&T) -> Value) {
        let v = match self {
            Field::Absent => return,
            Field::Null => Value::Null,
            Field::WrongType(j) => j.json(),
            Field::Value(t) | Field::Value2(t) | Field::Value3(t) => f(t),
        };
        map.insert(key.to_string(), v);
    }
}

/// A string from a dictionary, or free-form.
#[derive(Arbitrary, Debug)]
enum Pick<const N: usize> {
    Dict(u8),
    Free(String),
}

impl<const N: usize> Pick<N> {
    fn get(&self, dict: &[&str; N]) -> String {
        match self {
            Pick::Dict(i) => dict[*i as usize % N].to_string(),
            Pick::Free(s) => s.clone(),
        }
    }
}

const CONTAINER_NAMES: [&str; 6] = [
    "flink-main-container",
    "flink-main-container",
    "flink-agent",
    "sidecar",
    "init-jars",
    "",
];
const ENV_NAMES: [&str; 5] = [
    "TZ",
    "FLINK_LOG_DIR",
    "JAVA_OPTS",
    "FLINK_AGENT_TOPIC",
    "tz",
];
const ENV_VALUES: [&str; 9] = [
    "Asia/Shanghai",
    "UTC",
    "/opt/flink/log",
    "/opt/flink/log/",
    "/var/log/flink",
    "/opt/flink/usrlib",
    "relative/log",
    "",
    "/",
];
const VOLUME_NAMES: [&str; 12] = [
    "flink-config-volume",
    "hadoop-config-volume",
    "kerberos-keytab-volume",
    "kerberos-krb5conf-volume",
    "pod-template-volume",
    "flink-usrlib",
    "flink-logs",
    "flink-localtime",
    "flink-agent-kafka-secret",
    "data",
    "flink-log",
    "",
];
const MOUNT_PATHS: [&str; 11] = [
    "/opt/flink/log",
    "/opt/flink/log/",
    "/opt/flink/usrlib",
    "/opt/flink/usrlib/",
    "/opt/flink/conf",
    "/etc/localtime",
    "/var/log/flink",
    "/opt/flink/lib/usr",
    "/etc/flink-agent/kafka",
    "/",
    "",
];
const IPS: [&str; 8] = [
    "10.20.0.11",
    "10.20.0.12",
    "::ffff:10.20.0.11",
    "fd00::20",
    "10.0.0.1",
    "010.20.0.11",
    "not-an-ip",
    "",
];
const HOSTNAMES: [&str; 8] = [
    "nn1",
    "nn1.bigdata.internal",
    "nn2",
    "nn2.bigdata.internal",
    "a",
    "b",
    "Bad_Host",
    "",
];
const PORTS: [i64; 5] = [9260, 8081, 6123, 9249, 0];

#[derive(Arbitrary, Debug)]
enum Ann {
    Inject(Pick<6>),
    Usrlib(Pick<10>),
    UsrlibSubpath(Pick<6>),
    Timezone(Pick<7>),
    HostAliases(Pick<9>),
    LogTopic(Pick<6>),
    Agent(Pick<5>),
    Injected(Pick<8>),
    Unknown(Pick<1>),
    DefaultContainer(Pick<3>),
    Prometheus(u8, Pick<4>),
    NotAString(Junk, u8),
}

const INJECT: &str = "flink-injector.io/inject";
const KEYS: [&str; 8] = [
    INJECT,
    "flink-injector.io/usrlib",
    "flink-injector.io/usrlib-subpath",
    "flink-injector.io/timezone",
    "flink-injector.io/host-aliases",
    "flink-injector.io/log-topic",
    "flink-injector.io/agent",
    "flink-injector.io/injected",
];

impl Ann {
    fn entry(&self) -> (String, Value) {
        let s = |k: &str, v: String| (k.to_string(), json!(v));
        match self {
            Ann::Inject(p) => s(
                KEYS[0],
                p.get(&["true", "false", "FALSE", " false ", "no", ""]),
            ),
            Ann::Usrlib(p) => s(
                KEYS[1],
                p.get(&[
                    "nfs.team.internal:/exports/jobs",
                    "10.1.2.3:/x",
                    "fd00::12:/exports/v6",
                    "pvc:jars-1",
                    "none",
                    "nfs.internal",
                    "nfs.internal:relative/path",
                    ":/exports",
                    "pvc:Bad_Claim",
                    "pvc:",
                ]),
            ),
            Ann::UsrlibSubpath(p) => s(
                KEYS[2],
                p.get(&["job-a", "a/b/c", "/abs", "a/../../etc", "", " x "]),
            ),
            Ann::Timezone(p) => s(
                KEYS[3],
                p.get(&[
                    "Europe/Berlin",
                    "UTC",
                    "America/Argentina/Buenos_Aires",
                    "Asia/Shanghai",
                    "Mars/Olympus",
                    "CEST",
                    "",
                ]),
            ),
            Ann::HostAliases(p) => s(
                KEYS[4],
                p.get(&[
                    "10.0.0.1=a,b;10.0.0.2=c",
                    "10.0.0.1=a b",
                    "fd00::1=v6.internal;",
                    "10.20.0.11=nn1,x",
                    "10.20.0.99=nn1",
                    "::ffff:10.20.0.11=nn1,z",
                    "10.0.0.300=a",
                    "10.0.0.1=",
                    ";",
                ]),
            ),
            Ann::LogTopic(p) => s(
                KEYS[5],
                p.get(&["team.logs_v2-x", "flink-logs", "logs/team", "..", "", " t "]),
            ),
            Ann::Agent(p) => s(KEYS[6], p.get(&["false", "true", "True", "off", ""])),
            Ann::Injected(p) => s(
                KEYS[7],
                p.get(&[
                    "usrlib,host-aliases,timezone,agent",
                    "usrlib",
                    "host-aliases",
                    "timezone",
                    "agent",
                    "agent, timezone",
                    " , ",
                    "future-part",
                ]),
            ),
            Ann::Unknown(p) => (
                format!("flink-injector.io/{}", p.get(&["usrlib-path"])),
                json!("x"),
            ),
            Ann::DefaultContainer(p) => s(
                "kubectl.kubernetes.io/default-container",
                p.get(&["flink-main-container", "sidecar", ""]),
            ),
            Ann::Prometheus(k, p) => s(
                [
                    "prometheus.io/scrape",
                    "prometheus.io/port",
                    "prometheus.io/path",
                ][*k as usize % 3],
                p.get(&["true", "9249", "/metrics", ""]),
            ),
            Ann::NotAString(j, k) => (KEYS[*k as usize % KEYS.len()].to_string(), j.json()),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Env {
    name: Pick<5>,
    value: Field<Pick<9>>,
    value_from: bool,
}

#[derive(Arbitrary, Debug)]
struct Mount {
    name: Pick<12>,
    path: Field<Pick<11>>,
    read_only: bool,
}

#[derive(Arbitrary, Debug)]
struct Container {
    name: Field<Pick<6>>,
    image: bool,
    resources: bool,
    env: Field<Vec<Env>>,
    env_from: bool,
    volume_mounts: Field<Vec<Mount>>,
    ports: Field<Vec<u8>>,
    restart_policy_always: bool,
}

impl Container {
    fn json(&self) -> Value {
        let mut c = Map::new();
        self.name
            .put(&mut c, "name", |p| json!(p.get(&CONTAINER_NAMES)));
        if self.image {
            c.insert("image".into(), json!("flink:2.1"));
        }
        if self.resources {
            c.insert(
                "resources".into(),
                json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}),
            );
        }
        self.env.put(&mut c, "env", |envs| {
            Value::Array(
                envs.iter()
                    .map(|e| {
                        let mut m = Map::new();
                        m.insert("name".into(), json!(e.name.get(&ENV_NAMES)));
                        e.value.put(&mut m, "value", |p| json!(p.get(&ENV_VALUES)));
                        if e.value_from {
                            m.insert(
                                "valueFrom".into(),
                                json!({"configMapKeyRef": {"name": "cm", "key": "tz"}}),
                            );
                        }
                        Value::Object(m)
                    })
                    .collect(),
            )
        });
        if self.env_from {
            c.insert("envFrom".into(), json!([{"configMapRef": {"name": "env"}}]));
        }
        self.volume_mounts.put(&mut c, "volumeMounts", |mounts| {
            Value::Array(
                mounts
                    .iter()
                    .map(|m| {
                        let mut o = Map::new();
                        o.insert("name".into(), json!(m.name.get(&VOLUME_NAMES)));
                        m.path
                            .put(&mut o, "mountPath", |p| json!(p.get(&MOUNT_PATHS)));
                        if m.read_only {
                            o.insert("readOnly".into(), json!(true));
                        }
                        Value::Object(o)
                    })
                    .collect(),
            )
        });
        self.ports.put(&mut c, "ports", |ports| {
            Value::Array(
                ports
                    .iter()
                    .map(|p| json!({"containerPort": PORTS[*p as usize % PORTS.len()], "protocol": "TCP"}))
                    .collect(),
            )
        });
        if self.restart_policy_always {
            c.insert("restartPolicy".into(), json!("Always"));
        }
        Value::Object(c)
    }
}

#[derive(Arbitrary, Debug)]
enum VolumeKind {
    EmptyDir,
    ConfigMap,
    Nfs,
    Pvc,
}

#[derive(Arbitrary, Debug)]
struct Volume {
    name: Field<Pick<12>>,
    kind: VolumeKind,
}

#[derive(Arbitrary, Debug)]
struct HostAlias {
    ip: Field<Pick<8>>,
    hostnames: Field<Vec<Pick<8>>>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    policy: u8,
    namespace: u8,
    native_sidecar: bool,
    flink_type: Pick<3>,
    component: Field<Pick<4>>,
    app_label: bool,
    annotations: Field<Vec<Ann>>,
    containers: Field<Vec<Container>>,
    init_containers: Field<Vec<Container>>,
    volumes: Field<Vec<Volume>>,
    host_aliases: Field<Vec<HostAlias>>,
    restart_policy: Field<Pick<3>>,
    spec_is_junk: Option<Junk>,
}

impl Input {
    fn pod(&self) -> Value {
        let mut labels = Map::new();
        labels.insert(
            "type".into(),
            json!(self.flink_type.get(&[
                "flink-native-kubernetes",
                "flink-native-kubernetes",
                "other"
            ])),
        );
        self.component.put(&mut labels, "component", |p| {
            json!(p.get(&["jobmanager", "taskmanager", "taskmanager", "client"]))
        });
        if self.app_label {
            labels.insert("app".into(), json!("wordcount-app"));
        }
        let mut metadata = Map::new();
        metadata.insert("name".into(), json!("wordcount-app-taskmanager-1-1"));
        metadata.insert("labels".into(), Value::Object(labels));
        self.annotations.put(&mut metadata, "annotations", |anns| {
            Value::Object(anns.iter().map(Ann::entry).collect())
        });
        let mut spec = Map::new();
        let containers =
            |list: &Vec<Container>| Value::Array(list.iter().map(Container::json).collect());
        self.containers.put(&mut spec, "containers", containers);
        self.init_containers
            .put(&mut spec, "initContainers", containers);
        self.volumes.put(&mut spec, "volumes", |vols| {
            Value::Array(
                vols.iter()
                    .map(|v| {
                        let mut o = Map::new();
                        v.name.put(&mut o, "name", |p| json!(p.get(&VOLUME_NAMES)));
                        let (key, source) = match v.kind {
                            VolumeKind::EmptyDir => ("emptyDir", json!({})),
                            VolumeKind::ConfigMap => ("configMap", json!({"name": "flink-config"})),
                            VolumeKind::Nfs => ("nfs", json!({"server": "nfs", "path": "/x"})),
                            VolumeKind::Pvc => ("persistentVolumeClaim", json!({"claimName": "c"})),
                        };
                        o.insert(key.into(), source);
                        Value::Object(o)
                    })
                    .collect(),
            )
        });
        self.host_aliases.put(&mut spec, "hostAliases", |aliases| {
            Value::Array(
                aliases
                    .iter()
                    .map(|a| {
                        let mut o = Map::new();
                        a.ip.put(&mut o, "ip", |p| json!(p.get(&IPS)));
                        a.hostnames.put(&mut o, "hostnames", |names| {
                            Value::Array(names.iter().map(|n| json!(n.get(&HOSTNAMES))).collect())
                        });
                        Value::Object(o)
                    })
                    .collect(),
            )
        });
        self.restart_policy.put(&mut spec, "restartPolicy", |p| {
            json!(p.get(&["Never", "Always", "OnFailure"]))
        });
        let spec = match &self.spec_is_junk {
            Some(j) => j.json(),
            None => Value::Object(spec),
        };
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
    }
}

fuzz_target!(|input: Input| {
    let policies = flink_injector_fuzz::policies();
    let policy = &policies[input.policy as usize % policies.len()];
    let namespace = flink_injector_fuzz::NAMESPACES
        [input.namespace as usize % flink_injector_fuzz::NAMESPACES.len()];
    let ctx = MutationContext {
        native_sidecar: input.native_sidecar,
    };
    let pod = input.pod();
    flink_injector_fuzz::check_engine(policy, namespace, &pod, &ctx, true);
});
