//! `flink-webhook mutate`: what the webhook would do to a pod, without a cluster (the way
//! `istioctl kube-inject` previews a mesh injection).

use serde_json::Value;

use crate::patch::{self, MutationContext, Outcome};
use crate::policy::Policy;

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("input is neither JSON nor YAML: {0}")]
    Parse(String),
    #[error("input is a {0}, expected a Pod or an AdmissionReview of a Pod")]
    WrongKind(String),
    #[error("AdmissionReview has no request.object")]
    NoObject,
    #[error("denied: {0}")]
    Denied(String),
    #[error("the patch does not apply to the pod (a bug): {0}")]
    Apply(String),
    #[error("encoding output: {0}")]
    Encode(String),
}

/// A pod and the namespace it is admitted to.
pub struct Input {
    pub pod: Value,
    pub namespace: String,
}

/// Accepts a Pod or an AdmissionReview, as JSON or YAML.
pub fn read_input(text: &str, default_namespace: &str) -> Result<Input, PreviewError> {
    let doc: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_norway::from_str(text).map_err(|e| PreviewError::Parse(e.to_string()))?,
    };
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    match kind {
        "AdmissionReview" => {
            let pod = doc
                .pointer("/request/object")
                .filter(|v| !v.is_null())
                .cloned()
                .ok_or(PreviewError::NoObject)?;
            let namespace = doc
                .pointer("/request/namespace")
                .and_then(Value::as_str)
                .or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str))
                .unwrap_or(default_namespace)
                .to_string();
            Ok(Input { pod, namespace })
        }
        "Pod" => {
            let namespace = doc
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(default_namespace)
                .to_string();
            Ok(Input {
                pod: doc,
                namespace,
            })
        }
        other => Err(PreviewError::WrongKind(if other.is_empty() {
            "document without a kind".into()
        } else {
            other.to_string()
        })),
    }
}

/// The patch the webhook would send (empty when it would leave the pod alone).
pub fn patch_for(
    input: &Input,
    policy: &Policy,
    ctx: &MutationContext,
) -> Result<json_patch::Patch, PreviewError> {
    match patch::mutate(policy, &input.namespace, &input.pod, ctx) {
        Outcome::NotFlink | Outcome::OptedOut => Ok(json_patch::Patch(Vec::new())),
        Outcome::Denied { message } => Err(PreviewError::Denied(message)),
        Outcome::Mutated { patch, .. } => Ok(patch),
    }
}

pub fn apply(pod: &Value, patch: &json_patch::Patch) -> Result<Value, PreviewError> {
    let mut out = pod.clone();
    json_patch::patch(&mut out, patch).map_err(|e| PreviewError::Apply(e.to_string()))?;
    Ok(out)
}

pub fn to_yaml(v: &Value) -> Result<String, PreviewError> {
    serde_norway::to_string(v).map_err(|e| PreviewError::Encode(e.to_string()))
}
