//! Arbitrary bytes as the body of `POST /mutate`, through `flink_webhook::admission::review` (what
//! the HTTP handler calls) with the DESIGN.md policy.
//!
//! Properties: no panic, no hang, bounded memory (libFuzzer's -timeout and -rss_limit_mb; the
//! metrics registry is shared by all runs, so label values that grew without bound would show
//! as memory growth); the reply is 200 or 400, never 500, and always an AdmissionReview JSON
//! body; a 200 answers the request's uid; a patch is a base64 JSONPatch that applies to the
//! request's object as sent, and admitting the patched pod again gives no patch.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use flink_webhook::admission::review;
use flink_webhook::metrics::Metrics;
use flink_webhook::patch::MutationContext;
use flink_webhook::policy::Policy;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn state() -> &'static (Policy, Metrics) {
    static S: OnceLock<(Policy, Metrics)> = OnceLock::new();
    S.get_or_init(|| {
        let policy = Policy::from_yaml(flink_injector_fuzz::DESIGN_POLICY).expect("policy");
        (policy, Metrics::new())
    })
}

fn patch_of(reply: &Value) -> Option<json_patch::Patch> {
    let resp = &reply["response"];
    let b64 = resp
        .get("patch")?
        .as_str()
        .expect("response.patch is a string");
    assert_eq!(
        resp["patchType"], "JSONPatch",
        "patch without patchType JSONPatch"
    );
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("response.patch is base64");
    Some(serde_json::from_slice(&bytes).expect("response.patch is a JSON patch"))
}

fuzz_target!(|data: &[u8]| {
    let (policy, metrics) = state();
    // Both answers of the cluster probe; the policy's `nativeSidecar: auto` defers to it.
    let ctx = MutationContext {
        native_sidecar: data.len() % 2 == 0,
    };
    let (reply, component) = review(data, policy, &ctx, metrics);
    assert!(
        matches!(
            component,
            "jobmanager" | "taskmanager" | "other" | "unknown"
        ),
        "unbounded component label {component:?}"
    );
    assert!(
        matches!(reply.status, 200 | 400),
        "status {}: {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    let body: Value = serde_json::from_slice(&reply.body).expect("the reply is JSON");
    assert_eq!(body["kind"], "AdmissionReview", "reply: {body}");
    assert!(
        body["response"].is_object(),
        "reply without response: {body}"
    );
    if reply.status != 200 {
        assert_eq!(
            body["response"]["allowed"], false,
            "a 400 that allows: {body}"
        );
        return;
    }
    // Accepted: the request was an AdmissionReview with a request. serde_json skips the fields
    // kube does not read without validating them, so invalid UTF-8 in an unknown field (which
    // no API server sends) is accepted by `review` but not by `Value`: nothing more to check.
    let Ok(request) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    assert_eq!(
        body["response"]["uid"], request["request"]["uid"],
        "the response answers another uid"
    );
    let Some(ops) = patch_of(&body) else {
        return;
    };
    assert_eq!(
        body["response"]["allowed"], true,
        "a patch on a denial: {body}"
    );
    // The API server applies the patch to the object as it sent it.
    let mut pod = request["request"]["object"].clone();
    if let Err(e) = json_patch::patch(&mut pod, &ops) {
        panic!(
            "the patch does not apply to the request's object: {e}\npatch: {}",
            serde_json::to_string(&ops).unwrap_or_default()
        );
    }
    // Reinvocation: the API server sends the patched pod again.
    let mut again = request.clone();
    again["request"]["object"] = pod;
    let again = serde_json::to_vec(&again).expect("re-encoding the review");
    let (reply2, _) = review(&again, policy, &ctx, metrics);
    assert_eq!(
        reply2.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply2.body)
    );
    let body2: Value = serde_json::from_slice(&reply2.body).expect("the reply is JSON");
    if let Some(p) = patch_of(&body2) {
        assert!(
            p.0.is_empty(),
            "reinvocation is not a no-op: {}\nfirst patch: {}",
            serde_json::to_string(&p).unwrap_or_default(),
            serde_json::to_string(&ops).unwrap_or_default()
        );
    }
});
