//! admission.k8s.io/v1 AdmissionReview in, AdmissionReview out. Decoding and the decision about
//! what to answer live here; the HTTP server only moves bytes.

use crate::metrics::{self, AdmissionLabels, Metrics, PartLabels, SkipLabels};
use crate::patch::{self, MutationContext, Outcome};
use crate::policy::Policy;
use crate::review::{Answer, Review};

/// The HTTP status and JSON body to send back.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A review the webhook cannot answer: 400 with the reason in an AdmissionReview body, so the API
/// server's error (and the user's event) says what was wrong.
fn invalid(reason: String) -> Reply {
    reply(400, &Answer::invalid(reason))
}

fn reply(status: u16, answer: &Answer) -> Reply {
    match answer.encode() {
        Ok(body) => Reply { status, body },
        Err(e) => Reply {
            status: 500,
            body: format!("{{\"error\":\"encoding response: {e}\"}}").into_bytes(),
        },
    }
}

fn respond(answer: Answer) -> Reply {
    reply(200, &answer)
}

/// Decodes `body`, runs the patch engine and encodes the answer. Never panics on any input.
pub fn review(
    body: &[u8],
    policy: &Policy,
    ctx: &MutationContext,
    metrics: &Metrics,
) -> (Reply, &'static str) {
    let review = match Review::decode(body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "malformed AdmissionReview");
            count(metrics, "unknown", metrics::Outcome::Invalid);
            return (
                invalid(format!("malformed AdmissionReview JSON: {e}")),
                "unknown",
            );
        }
    };
    if review.kind != "AdmissionReview" {
        count(metrics, "unknown", metrics::Outcome::Invalid);
        return (
            invalid(format!(
                "expected kind AdmissionReview (admission.k8s.io/v1), got {:?}",
                review.kind
            )),
            "unknown",
        );
    }
    let Some(req) = review.request else {
        count(metrics, "unknown", metrics::Outcome::Invalid);
        return (
            invalid("AdmissionReview has no request".to_string()),
            "unknown",
        );
    };
    let mut response = Answer::allow(req.uid);
    let namespace = req.namespace.unwrap_or_default();

    // A webhook configuration that sends more than Pod CREATEs is a mistake to point out, not a
    // reason to block the cluster: allow, and say so.
    if req.kind.kind != "Pod" || !req.kind.group.is_empty() {
        response.warnings = vec![format!(
            "flink-webhook only mutates core/v1 Pods, got {}/{}: check the webhook configuration's rules",
            req.kind.group, req.kind.kind
        )];
        count(metrics, "other", metrics::Outcome::Unchanged);
        skip(metrics, "pod", "not_a_pod");
        return (respond(response), "other");
    }
    if req.operation != "CREATE" {
        count(metrics, "other", metrics::Outcome::Unchanged);
        return (respond(response), "other");
    }
    let Some(pod) = req.object else {
        response.warnings = vec!["AdmissionReview request carries no object".into()];
        count(metrics, "other", metrics::Outcome::Unchanged);
        return (respond(response), "other");
    };
    let component = component_label(&pod);
    let pod_name = pod_display_name(&pod, &req.name);

    let outcome = patch::mutate_view(policy, &namespace, pod, ctx);
    let (response, result) = match outcome {
        Outcome::NotFlink => {
            skip(metrics, "pod", "not_flink_pod");
            (response, metrics::Outcome::Unchanged)
        }
        Outcome::OptedOut => {
            skip(metrics, "pod", "opted_out");
            (response, metrics::Outcome::Unchanged)
        }
        Outcome::Denied { message } => (
            Answer::deny(response.uid, message),
            metrics::Outcome::Denied,
        ),
        Outcome::Mutated {
            patch,
            injected,
            skipped,
            warnings,
        } => {
            for part in &injected {
                metrics
                    .parts_injected
                    .get_or_create(&PartLabels {
                        part: part.as_str().to_string(),
                    })
                    .inc();
            }
            for (part, reason) in &skipped {
                skip(metrics, part.as_str(), reason.label());
                if let patch::SkipReason::Conflict(why) = reason {
                    tracing::warn!(uid = %response.uid, namespace = %namespace, pod = %pod_name,
                        part = part.as_str(), conflict = %why, "part skipped: conflict");
                }
            }
            let mut response = response;
            response.warnings = warnings;
            if patch.0.is_empty() {
                (response, metrics::Outcome::Unchanged)
            } else {
                match response.with_patch(&patch) {
                    Ok(r) => (r, metrics::Outcome::Mutated),
                    Err(e) => {
                        return (
                            invalid(format!("encoding the patch: {e}")),
                            component_static(component),
                        )
                    }
                }
            }
        }
    };
    count(metrics, component, result);
    tracing::info!(uid = %response.uid, namespace = %namespace, pod = %pod_name, component,
        result = result.as_str(), allowed = response.allowed, "admission");
    (respond(response), component_static(component))
}

fn count(metrics: &Metrics, component: &str, outcome: metrics::Outcome) {
    metrics
        .admissions
        .get_or_create(&AdmissionLabels {
            component: component.to_string(),
            outcome: outcome.as_str().to_string(),
        })
        .inc();
}

fn skip(metrics: &Metrics, part: &str, reason: &str) {
    metrics
        .skipped
        .get_or_create(&SkipLabels {
            part: part.to_string(),
            reason: reason.to_string(),
        })
        .inc();
}

/// Bounded label values: a pod's labels must not create unbounded metric series.
fn component_label(pod: &serde_json::Value) -> &'static str {
    component_static(patch::component(pod))
}

fn component_static(c: &str) -> &'static str {
    match c {
        "jobmanager" => "jobmanager",
        "taskmanager" => "taskmanager",
        _ => "other",
    }
}

/// JobManager pods arrive without a name (the ReplicaSet sets only generateName).
fn pod_display_name(pod: &serde_json::Value, request_name: &str) -> String {
    if !request_name.is_empty() {
        return request_name.to_string();
    }
    match pod
        .get("metadata")
        .and_then(|m| m.get("generateName"))
        .and_then(serde_json::Value::as_str)
    {
        Some(g) => format!("{g}<generated>"),
        None => "<unnamed>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::{json, Value};

    fn fixtures(rel: &str) -> String {
        format!("{}/../tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"))
    }

    fn answer(reply: &Reply) -> Value {
        serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("reply is not JSON: {e}"))
    }

    /// What the engine answers working on the whole pod: the patch as the reply should carry it,
    /// and whether it denies the pod.
    fn whole_pod_answer(
        policy: &Policy,
        ns: &str,
        pod: &Value,
        ctx: &MutationContext,
    ) -> (Option<Vec<u8>>, bool) {
        match patch::mutate_whole(policy, ns, pod, ctx) {
            Outcome::Mutated { patch, .. } if !patch.0.is_empty() => {
                (Some(serde_json::to_vec(&patch).unwrap_or_default()), false)
            }
            Outcome::Denied { .. } => (None, true),
            _ => (None, false),
        }
    }

    /// Admission decodes only part of the pod (`patch::PodView`); whatever it drops must not change
    /// the answer: the same patch, or the same denial, as the engine gives for the whole pod.
    #[test]
    fn the_wire_path_answers_as_the_engine_does_on_the_whole_pod() {
        let policies = ["design.yaml", "overrides.yaml"].map(|name| {
            let text = std::fs::read_to_string(fixtures(&format!("policy/{name}")))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            Policy::from_yaml(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
        });
        let metrics = Metrics::new();
        let mut compared = 0;
        for entry in std::fs::read_dir(fixtures("admission"))
            .into_iter()
            .flatten()
        {
            let path = entry.map(|e| e.path()).unwrap_or_default();
            if !path.to_string_lossy().ends_with(".review.json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let review: Value = serde_json::from_str(&text).unwrap_or_default();
            let mut denied = review.clone();
            denied["request"]["object"]["metadata"]["annotations"] =
                json!({"flink-injector.io/timezone": "Mars/Olympus_Mons"});
            for (review, ns) in [
                (&review, None),
                (&review, Some("team-pvc")),
                (&denied, None),
            ] {
                let mut review = review.clone();
                if let Some(ns) = ns {
                    review["request"]["namespace"] = json!(ns);
                }
                let ns = review["request"]["namespace"].as_str().unwrap_or("");
                let pod = &review["request"]["object"];
                let body = serde_json::to_vec(&review).unwrap_or_default();
                for policy in &policies {
                    for native_sidecar in [false, true] {
                        let ctx = MutationContext { native_sidecar };
                        let (reply, _) = super::review(&body, policy, &ctx, &metrics);
                        let got = answer(&reply);
                        let what = format!("{} in {ns}: {got}", path.display());
                        assert_eq!(reply.status, 200, "{what}");
                        assert_eq!(got["kind"], "AdmissionReview", "{what}");
                        assert_eq!(got["response"]["uid"], review["request"]["uid"], "{what}");
                        let patch = got["response"]["patch"].as_str().map(|b64| {
                            base64::engine::general_purpose::STANDARD
                                .decode(b64)
                                .unwrap_or_default()
                        });
                        let (want, engine_denies) = whole_pod_answer(policy, ns, pod, &ctx);
                        assert_eq!(patch, want, "{what}");
                        assert_eq!(got["response"]["allowed"], !engine_denies, "{what}");
                        if engine_denies {
                            assert_eq!(got["response"]["status"]["code"], 403, "{what}");
                        }
                        compared += 1;
                    }
                }
            }
        }
        assert_eq!(compared, 7 * 3 * 2 * 2);
    }

    #[test]
    fn an_object_that_is_not_a_pod_shaped_object_is_a_clear_400() {
        let metrics = Metrics::new();
        let policy = Policy::from_yaml("{}").unwrap_or_else(|e| panic!("{e}"));
        let ctx = MutationContext {
            native_sidecar: true,
        };
        let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "operation": "CREATE", "object": ["not", "a", "pod"]}});
        let (reply, component) = review(&body.to_string().into_bytes(), &policy, &ctx, &metrics);
        assert_eq!((reply.status, component), (400, "unknown"));
        let got = answer(&reply);
        assert_eq!(got["response"]["allowed"], false);
        assert_eq!(got["response"]["status"]["code"], 400);
        let message = got["response"]["status"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("request.object is not an object"),
            "{message}"
        );
    }
}
