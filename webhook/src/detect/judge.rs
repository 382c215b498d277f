//! The judgement the detector and `audit` share: given what a pod's metadata says (labels and
//! annotations; the spec is never read, so only metadata is watched), does it run without the
//! injection the policy would have given it? No I/O.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::annotations;
use crate::patch::{self, MutationContext, Outcome, Part, MAIN_CONTAINER};
use crate::policy::Policy;

/// The metadata of one Flink pod, as a watcher or a list hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `jobmanager` or `taskmanager` (the pod's `component` label), else `other`.
    pub component: String,
    /// RFC 3339 `creationTimestamp` as Unix seconds; 0 when the server sent none.
    pub created: i64,
    pub labels: BTreeMap<String, String>,
    /// Only the `flink-injector.io/` annotations: nothing else changes the judgement, and a
    /// cluster's worth of pods is kept in memory.
    pub annotations: BTreeMap<String, String>,
}

/// What the pod lacks, or why it lacks nothing the detector should report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The webhook saw it: `flink-injector.io/injected` is set (to the parts it got).
    Injected,
    /// `flink-injector.io/inject: "false"`.
    OptedOut,
    /// The policy (for this namespace, with the pod's annotations) injects nothing.
    NothingToInject,
    /// Not a pod Flink's native integration made (labels), so the webhook would leave it alone.
    NotFlink,
    /// Created before the detector's install time: it never could have been injected.
    PredatesInstall(Vec<Part>),
    /// Admitted without the webhook (failed open) though the policy would inject these parts.
    Missing(Vec<Part>),
    /// Admitted without the webhook; the webhook would have refused it for this reason.
    WouldDeny(String),
}

impl Verdict {
    /// Counted in `flink_webhook_uninjected_pods`, given an Event, and failing `audit`.
    pub fn is_missed(&self) -> bool {
        matches!(self, Verdict::Missing(_) | Verdict::WouldDeny(_))
    }

    /// The `audit` table's STATUS column.
    pub fn status(&self) -> &'static str {
        match self {
            Verdict::Injected => "injected",
            Verdict::OptedOut => "opted-out",
            Verdict::NothingToInject => "nothing-to-inject",
            Verdict::NotFlink => "not-flink",
            Verdict::PredatesInstall(_) => "before-install",
            Verdict::Missing(_) => "NOT-INJECTED",
            Verdict::WouldDeny(_) => "NOT-INJECTED",
        }
    }

    /// What the pod lacks, in words an on-call engineer can act on.
    pub fn lacks(&self) -> String {
        match self {
            Verdict::Missing(parts) | Verdict::PredatesInstall(parts) => parts_list(parts),
            Verdict::WouldDeny(message) => {
                format!("everything (the webhook would deny it: {message})")
            }
            _ => String::new(),
        }
    }

    /// The Event's note and the log line's text.
    pub fn note(&self) -> String {
        match self {
            Verdict::Missing(parts) => format!(
                "Admitted without flink-injector (the webhook was unreachable and the webhook \
                 fails open): lacks {}. Delete the pod so that Flink recreates it through the webhook.",
                parts_list(parts)
            ),
            Verdict::WouldDeny(message) => format!(
                "Admitted without flink-injector (the webhook was unreachable and the webhook \
                 fails open); the webhook would have denied it: {message}"
            ),
            other => other.status().to_string(),
        }
    }
}

fn parts_list(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `install_time`: Unix seconds from which pods in opted-in namespaces went through the webhook
/// (the detector Lease's creation); pods created earlier are `PredatesInstall`.
pub fn judge(policy: &Policy, pod: &PodFacts, install_time: Option<i64>) -> Verdict {
    let annotations: Map<String, Value> = pod
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    if annotations.contains_key(annotations::INJECTED) {
        return Verdict::Injected;
    }
    // The engine needs a pod to patch; a bare main container is enough for it to say which
    // parts the policy and the annotations give. Conflicts with what the real spec holds cannot
    // be seen from metadata and are not guessed at.
    let synthetic = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "labels": pod.labels,
            "annotations": annotations,
        },
        "spec": {"containers": [{"name": MAIN_CONTAINER, "image": "flink"}]},
    });
    let ctx = MutationContext {
        native_sidecar: false,
    };
    match patch::mutate(policy, &pod.namespace, &synthetic, &ctx) {
        Outcome::NotFlink => Verdict::NotFlink,
        Outcome::OptedOut => Verdict::OptedOut,
        Outcome::Denied { message } => Verdict::WouldDeny(message),
        Outcome::Mutated { injected, .. } if injected.is_empty() => Verdict::NothingToInject,
        Outcome::Mutated { injected, .. } => match install_time {
            Some(t) if pod.created != 0 && pod.created < t => Verdict::PredatesInstall(injected),
            _ => Verdict::Missing(injected),
        },
    }
}

/// The part of `metadata.annotations` the judgement reads.
pub fn relevant_annotations<'a>(
    all: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> BTreeMap<String, String> {
    all.into_iter()
        .filter(|(k, _)| k.starts_with("flink-injector.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `creationTimestamp` as a k8s-openapi `Time` holds it, in Unix seconds.
pub fn unix_seconds(time: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> i64 {
    time.map(|t| t.0.as_second()).unwrap_or(0)
}

/// From the metadata of a listed or watched pod.
pub fn facts_from_meta(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> PodFacts {
    let labels: BTreeMap<String, String> = meta.labels.clone().unwrap_or_default();
    let component = labels
        .get("component")
        .cloned()
        .unwrap_or_else(|| "other".to_string());
    PodFacts {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        component,
        created: unix_seconds(meta.creation_timestamp.as_ref()),
        // Only the labels the judgement reads: a pod template may carry many.
        labels: labels
            .into_iter()
            .filter(|(k, _)| k == "type" || k == "component")
            .collect(),
        annotations: relevant_annotations(meta.annotations.iter().flatten()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Policy {
        Policy::from_yaml(yaml).expect("test policy")
    }

    const DESIGN: &str = include_str!("../../../tests/fixtures/policy/design.yaml");

    fn tm(annotations: &[(&str, &str)]) -> PodFacts {
        PodFacts {
            namespace: "flink-jobs".into(),
            name: "wordcount-taskmanager-1-1".into(),
            uid: "u1".into(),
            component: "taskmanager".into(),
            created: 1_000,
            labels: [
                ("type", "flink-native-kubernetes"),
                ("component", "taskmanager"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_pod_without_the_injected_annotation_lacks_what_the_policy_gives() {
        let v = judge(&policy(DESIGN), &tm(&[]), None);
        let Verdict::Missing(parts) = &v else {
            panic!("expected Missing, got {v:?}")
        };
        assert!(parts.contains(&Part::Agent), "{parts:?}");
        assert!(v.is_missed());
        assert!(v.note().contains("agent"), "{}", v.note());
    }

    #[test]
    fn injected_opted_out_and_before_install_are_not_missed() {
        let p = policy(DESIGN);
        let injected = tm(&[("flink-injector.io/injected", "timezone")]);
        assert_eq!(judge(&p, &injected, None), Verdict::Injected);
        let out = tm(&[("flink-injector.io/inject", "false")]);
        assert_eq!(judge(&p, &out, None), Verdict::OptedOut);
        let old = judge(&p, &tm(&[]), Some(2_000));
        assert!(matches!(old, Verdict::PredatesInstall(_)), "{old:?}");
        assert!(!old.is_missed());
        // Created after the install: missed.
        assert!(judge(&p, &tm(&[]), Some(500)).is_missed());
    }

    #[test]
    fn parts_the_policy_switches_off_are_not_lacked() {
        let p = policy("timezone: Europe/Berlin\nagent:\n  enabled: false\n");
        let v = judge(&p, &tm(&[]), None);
        assert_eq!(v, Verdict::Missing(vec![Part::Timezone]));
        let nothing = policy("agent:\n  enabled: false\n");
        assert_eq!(judge(&nothing, &tm(&[]), None), Verdict::NothingToInject);
    }

    #[test]
    fn a_pod_the_webhook_would_deny_is_missed_with_the_reason() {
        let v = judge(
            &policy(DESIGN),
            &tm(&[("flink-injector.io/timezone", "Mars/Olympus")]),
            None,
        );
        assert!(matches!(v, Verdict::WouldDeny(_)), "{v:?}");
        assert!(v.is_missed());
        assert!(v.lacks().contains("Mars/Olympus"), "{}", v.lacks());
    }

    #[test]
    fn pods_of_other_kinds_are_not_flink() {
        let mut pod = tm(&[]);
        pod.labels.insert("type".into(), "something-else".into());
        assert_eq!(judge(&policy(DESIGN), &pod, None), Verdict::NotFlink);
    }
}
