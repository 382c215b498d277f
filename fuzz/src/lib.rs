//! Shared pieces of the fuzz targets: the policies they run the patch engine with, a fixture pod,
//! and the properties every mutation must have (the patch applies, reinvocation is a no-op, the
//! fields Flink owns are left alone).
//!
//! The policies and the pod are compiled in from files of this repository, so a target needs
//! nothing at run time.

use std::sync::OnceLock;

use flink_webhook::patch::{self, MutationContext, Outcome, MAIN_CONTAINER};
use flink_webhook::policy::Policy;
use serde_json::Value;

/// The policy of DESIGN.md.
pub const DESIGN_POLICY: &str = include_str!("../../examples/policy.yaml");
/// Every switch and override form (namespaces team-pvc, team-bare, team-plain, team-no-tz).
pub const OVERRIDES_POLICY: &str = include_str!("../../tests/fixtures/policy/overrides.yaml");
/// What `kubectl apply -k manifests/` installs.
pub const MANIFEST_POLICY: &str = include_str!("../../manifests/base/policy.yaml");
/// The rest of what a policy can say: a PVC with a sub-path, `localtime`, a Kafka secret, a
/// plain-container agent with an image pull policy, and a namespace that turns parts off.
pub const EXTRA_POLICY: &str = r#"
usrlib:
  pvc: {claimName: flink-usrlib}
  mountPath: /opt/flink/usrlib/
  subPath: jobs
hostAliases:
  - {ip: "::ffff:10.20.0.11", hostnames: [nn1, a]}
  - {ip: 10.20.0.12, hostnames: [nn2, b]}
timezone: Europe/Berlin
localtime: true
agent:
  image: flink-agent:0.1.0
  imagePullPolicy: Always
  kafka:
    brokers: [kafka:9092]
    topic: flink-logs
    properties: {security.protocol: SASL_SSL, linger.ms: 5}
    secretName: flink-agent-kafka
  nativeSidecar: false
  resources: {requests: {cpu: 10m}, limits: {memory: 1Gi}}
namespaces:
  flink-jobs: {agent: {nativeSidecar: true, kafka: {secretName: null}}, localtime: false}
  team-off: {usrlib: null, hostAliases: [], timezone: null, agent: {enabled: false}}
"#;
/// Only an annotation can turn usrlib on here; the agent is off.
pub const MINIMAL_POLICY: &str = "usrlib: {mountPath: /opt/flink/usrlib}\ntimezone: UTC\n";
/// An empty file is a valid policy that injects nothing.
pub const EMPTY_POLICY: &str = "";

/// The namespaces the policies above treat specially, plus one none of them knows.
pub const NAMESPACES: [&str; 8] = [
    "flink-jobs",
    "team-a",
    "team-pvc",
    "team-bare",
    "team-plain",
    "team-no-tz",
    "team-off",
    "default",
];

/// A real TaskManager pod (recorded from a kube-apiserver), for targets that need one.
pub const TASKMANAGER_REVIEW: &str =
    include_str!("../../tests/fixtures/admission/flink-2.3-application-taskmanager.review.json");

/// Flink's own volumes: the webhook must never take or change them.
pub const FLINK_VOLUMES: [&str; 5] = [
    "flink-config-volume",
    "hadoop-config-volume",
    "kerberos-keytab-volume",
    "kerberos-krb5conf-volume",
    "pod-template-volume",
];

/// With `FUZZ_TRACE=1`, `check_engine` prints one line per run saying what the engine did
/// (`mutated usrlib,agent`, `denied`, `not-flink`, ...): run a target over its corpus with
/// `-runs=0` and count the lines to see what the corpus reaches.
pub fn trace(what: impl FnOnce() -> String) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some_and(|v| v == "1")) {
        eprintln!("fuzz-trace: {}", what());
    }
}

/// The fixed policies, parsed once.
pub fn policies() -> &'static [Policy] {
    static P: OnceLock<Vec<Policy>> = OnceLock::new();
    P.get_or_init(|| {
        [
            DESIGN_POLICY,
            OVERRIDES_POLICY,
            MANIFEST_POLICY,
            EXTRA_POLICY,
            MINIMAL_POLICY,
            EMPTY_POLICY,
        ]
        .iter()
        .enumerate()
        .map(|(i, text)| {
            Policy::from_yaml(text).unwrap_or_else(|e| panic!("fuzz policy #{i} is invalid: {e}"))
        })
        .collect()
    })
}

/// The recorded TaskManager pod.
pub fn taskmanager_pod() -> &'static Value {
    static P: OnceLock<Value> = OnceLock::new();
    P.get_or_init(|| {
        let review: Value = serde_json::from_str(TASKMANAGER_REVIEW).expect("fixture is JSON");
        review["request"]["object"].clone()
    })
}

fn main_container(pod: &Value) -> Option<&Value> {
    pod.pointer("/spec/containers")?
        .as_array()?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(MAIN_CONTAINER))
}

fn volume<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod.pointer("/spec/volumes")?
        .as_array()?
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
}

/// Runs the patch engine on `pod` and checks its properties; panics (so that libFuzzer records
/// the input) when one does not hold. Returns the patched pod when the engine mutated it.
///
/// - a `NotFlink` answer is given exactly to pods without Flink's labels;
/// - a patch applies (`json_patch::patch`) to the pod as the API server has it;
/// - the patched pod is still a Flink pod, and Flink's own volumes and the main container's
///   name, image and resources are unchanged;
/// - running the engine again on the patched pod (reinvocation) gives an empty patch;
/// - a pod that k8s-openapi accepts as a `Pod` is still one after the patch.
pub fn check_engine(
    policy: &Policy,
    namespace: &str,
    pod: &Value,
    ctx: &MutationContext,
    typed_check: bool,
) -> Option<Value> {
    let outcome = patch::mutate(policy, namespace, pod, ctx);
    let (ops, injected) = match outcome {
        Outcome::NotFlink => {
            trace(|| "not-flink".into());
            assert!(!patch::is_flink(pod), "a Flink pod answered NotFlink");
            return None;
        }
        Outcome::OptedOut => {
            trace(|| "opted-out".into());
            return None;
        }
        Outcome::Denied { message } => {
            trace(|| format!("denied {}", message.split(':').next().unwrap_or("")));
            return None;
        }
        Outcome::Mutated {
            patch,
            injected,
            skipped,
            ..
        } => {
            trace(|| {
                let parts: Vec<&str> = injected.iter().map(|p| p.as_str()).collect();
                let skips: Vec<String> = skipped
                    .iter()
                    .map(|(p, r)| format!("{}:{}", p.as_str(), r.label()))
                    .collect();
                format!(
                    "mutated ops={} injected={} skipped={}",
                    patch.0.len().min(20),
                    parts.join(","),
                    skips.join(",")
                )
            });
            (patch, injected)
        }
    };
    assert!(
        patch::is_flink(pod),
        "a pod without Flink's labels was mutated"
    );
    let mut patched = pod.clone();
    if let Err(e) = json_patch::patch(&mut patched, &ops) {
        panic!(
            "the patch does not apply: {e}\npatch: {}\npod: {pod}",
            serde_json::to_string(&ops).unwrap_or_default()
        );
    }
    assert!(
        patch::is_flink(&patched),
        "the patch changed the Flink labels"
    );
    // Recorded, unless the pod's annotations are not a map (which the API server would not
    // have decoded; the engine then warns that it could not record).
    let annotations_ok = matches!(
        pod.pointer("/metadata/annotations"),
        None | Some(Value::Null) | Some(Value::Object(_))
    );
    if !injected.is_empty() && annotations_ok {
        let recorded = patched
            .pointer("/metadata/annotations/flink-injector.io~1injected")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("parts {injected:?} injected but not recorded: {patched}"));
        for part in &injected {
            assert!(
                recorded.split(',').any(|p| p.trim() == part.as_str()),
                "{} missing from the recorded {recorded:?}",
                part.as_str()
            );
        }
    }
    if let (Some(before), Some(after)) = (main_container(pod), main_container(&patched)) {
        for field in ["name", "image", "resources"] {
            assert_eq!(
                before.get(field),
                after.get(field),
                "the patch changed {MAIN_CONTAINER}.{field}"
            );
        }
    }
    for name in FLINK_VOLUMES {
        assert_eq!(
            volume(pod, name),
            volume(&patched, name),
            "the patch changed Flink's volume {name}"
        );
    }
    match patch::mutate(policy, namespace, &patched, ctx) {
        Outcome::Mutated { patch: again, .. } => assert!(
            again.0.is_empty(),
            "reinvocation is not a no-op: {}\nfirst patch: {}\npod: {pod}",
            serde_json::to_string(&again).unwrap_or_default(),
            serde_json::to_string(&ops).unwrap_or_default(),
        ),
        other => panic!("reinvocation of a mutated pod gave {other:?}\npod: {pod}"),
    }
    if typed_check && serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(pod.clone()).is_ok()
    {
        if let Err(e) = serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(patched.clone()) {
            panic!("a valid Pod is no longer one after the patch: {e}\npatched: {patched}");
        }
    }
    Some(patched)
}
