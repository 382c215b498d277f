//! The `events.k8s.io/v1` Event a missed pod gets: reason `NotInjected`, type Warning, on the pod
//! (`kubectl describe pod` and `kubectl events` show it).

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use super::judge::{PodFacts, Verdict};

pub const REASON: &str = "NotInjected";
pub const CONTROLLER: &str = "flink-injector.io/webhook";
/// What happened to the pod: it was admitted (without us).
pub const ACTION: &str = "Admit";
/// The API server refuses a note over 1 kB.
const NOTE_MAX: usize = 1024;

/// The Event for `pod`. Named `<pod>.<hex nanoseconds>` as client-go names them: the API server
/// refuses a `generateName` ending in `.`, and the name must be unique per report.
pub fn build(pod: &PodFacts, verdict: &Verdict, instance: &str, now: Timestamp) -> Event {
    let mut note = verdict.note();
    if note.len() > NOTE_MAX {
        let mut cut = NOTE_MAX - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    let nanos = u128::try_from(now.as_nanosecond()).unwrap_or(0);
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{nanos:x}", pod.name)),
            namespace: Some(pod.namespace.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        reporting_controller: Some(CONTROLLER.to_string()),
        reporting_instance: Some(instance.to_string()),
        action: Some(ACTION.to_string()),
        reason: Some(REASON.to_string()),
        type_: Some("Warning".to_string()),
        note: Some(note),
        regarding: Some(ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Pod".to_string()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: (!pod.uid.is_empty()).then(|| pod.uid.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn send(client: &kube::Client, event: &Event) -> Result<(), kube::Error> {
    let ns = event.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), event).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::Part;

    #[test]
    fn the_event_has_the_recorded_shape() {
        let pod = PodFacts {
            namespace: "flink-jobs".into(),
            name: "wordcount-app-7d9f8c6b5-x2x9q".into(),
            uid: "927c4c2f-f2ce-4166-943d-cf905af0ec08".into(),
            component: "jobmanager".into(),
            created: 0,
            labels: Default::default(),
            annotations: Default::default(),
        };
        // The recorded name's suffix is this instant in hex nanoseconds.
        let now: Timestamp = "2026-12-06T02:26:30.546642893Z".parse().expect("time");
        let event = build(
            &pod,
            &Verdict::Missing(vec![Part::Agent]),
            "flink-webhook-0",
            now,
        );
        let mut got = serde_json::to_value(&event).expect("json");
        let recorded: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/apiserver/event-request.json"
        ))
        .expect("fixture");
        // The note is the only field the recording left as a placeholder.
        assert!(got["note"]
            .as_str()
            .is_some_and(|n| n.contains("lacks agent")));
        got["note"] = recorded["note"].clone();
        assert_eq!(got["metadata"]["name"], recorded["metadata"]["name"]);
        // The recording was sent with a whole second; ours carries microseconds.
        assert_eq!(got["eventTime"], "2026-12-06T02:26:30.546642Z");
        got["eventTime"] = recorded["eventTime"].clone();
        assert_eq!(got, recorded);
    }
}
