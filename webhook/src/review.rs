//! The admission.k8s.io/v1 AdmissionReview on the wire: the request fields the webhook reads, and
//! the response it writes, each encoded in one pass. The pod is decoded only as far as the patch
//! engine looks (`patch::PodView`); kube's `AdmissionReview<DynamicObject>` built the whole pod
//! twice (through serde's buffered flatten, then again as a `Value`) and the answer twice (a
//! `Value` to swap in the base64 patch, then bytes).
use base64::Engine as _;
use serde::de::{DeserializeSeed, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub struct Review {
    pub kind: String,
    pub request: Option<Request>,
}

#[derive(Debug, Deserialize)]
pub struct Request {
    pub uid: String,
    pub kind: Kind,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: String,
    /// What the patch engine reads of the pod; `None` when absent or null.
    #[serde(default, deserialize_with = "pod_view")]
    pub object: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct Kind {
    #[serde(default)]
    pub group: String,
    pub kind: String,
}

fn pod_view<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    match crate::patch::PodView.deserialize(d)? {
        Value::Null => Ok(None),
        pod @ Value::Object(_) => Ok(Some(pod)),
        _ => Err(D::Error::custom("request.object is not an object")),
    }
}

impl Review {
    pub fn decode(body: &[u8]) -> serde_json::Result<Review> {
        serde_json::from_slice(body)
    }
}

/// A metav1.Status: why a review was denied or could not be answered.
#[derive(Debug, Serialize)]
pub struct Status {
    pub status: &'static str,
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

/// The `response` of an AdmissionReview.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// The JSONPatch, base64 as the API documents it, as a JSON string: base64 needs no escaping,
    /// and serde_json's escaping loop over a few kilobytes of it was a tenth of the encoding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: &'a Answer,
}

impl Answer {
    pub fn allow(uid: String) -> Answer {
        Answer {
            uid,
            allowed: true,
            status: None,
            patch_type: None,
            patch: None,
            warnings: Vec::new(),
        }
    }

    /// Denied: the API server rejects the pod with `message` (403, as for any admission denial).
    pub fn deny(uid: String, message: String) -> Answer {
        Answer {
            allowed: false,
            status: Some(Status {
                status: "Failure",
                code: 403,
                reason: "Forbidden",
                message,
            }),
            ..Answer::allow(uid)
        }
    }

    /// A review that cannot be answered (sent with HTTP 400).
    pub fn invalid(message: String) -> Answer {
        Answer {
            allowed: false,
            status: Some(Status {
                status: "Failure",
                code: 400,
                reason: "BadRequest",
                message,
            }),
            ..Answer::allow(String::new())
        }
    }

    pub fn with_patch(self, patch: &json_patch::Patch) -> serde_json::Result<Answer> {
        let json = serde_json::to_vec(patch)?;
        let mut quoted = String::with_capacity(json.len() * 4 / 3 + 8);
        quoted.push('"');
        base64::engine::general_purpose::STANDARD.encode_string(json, &mut quoted);
        quoted.push('"');
        Ok(Answer {
            patch_type: Some("JSONPatch"),
            patch: Some(RawValue::from_string(quoted)?),
            ..self
        })
    }

    /// The whole AdmissionReview, as bytes.
    pub fn encode(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&ReviewOut {
            api_version: "admission.k8s.io/v1",
            kind: "AdmissionReview",
            response: self,
        })
    }
}
