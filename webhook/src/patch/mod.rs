//! The patch engine: from a policy, a namespace and a pod (as JSON, so that fields k8s-openapi does
//! not know survive), the RFC 6902 patch that injects what the policy and the pod's annotations
//! ask for. No I/O. Each part is applied whole or not at all; a part that would take a name or a
//! mount path already in use is skipped as a conflict, never overwritten. The parts applied are
//! recorded in `flink-injector.io/injected`, which makes reinvocation a no-op.
mod agent;
mod editor;
mod parts;
mod pod;
mod resolve;
#[cfg(test)]
mod tests;
mod view;

use serde_json::{json, Value};

use crate::annotations::{self, Overrides};
use crate::policy::{Policy, Settings};
pub use agent::{CONTAINER as AGENT_CONTAINER, LOGS_VOLUME, METRICS_PORT, SECRET_VOLUME};
pub use editor::escape;
use editor::{EditError, Editor, Path};
pub use parts::{LOCALTIME_VOLUME, USRLIB_VOLUME};
pub use pod::MAIN_CONTAINER;
pub use view::PodView;

/// What the caller resolved about the cluster: whether the agent goes in as a native sidecar.
/// Used where the effective policy says `nativeSidecar: auto`; an explicit `true` or `false`
/// (which a namespace may set) wins.
#[derive(Debug, Clone, Copy)]
pub struct MutationContext {
    pub native_sidecar: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Usrlib,
    HostAliases,
    Timezone,
    Agent,
}

impl Part {
    /// Every part, in the order they are listed in `flink-injector.io/injected`.
    pub const ALL: [Part; 4] = [Part::Usrlib, Part::HostAliases, Part::Timezone, Part::Agent];

    pub fn as_str(self) -> &'static str {
        match self {
            Part::Usrlib => "usrlib",
            Part::HostAliases => "host-aliases",
            Part::Timezone => "timezone",
            Part::Agent => "agent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    OptedOut,
    DisabledByPolicy,
    AlreadyInjected,
    Conflict(String),
}

impl SkipReason {
    /// The `reason` label value in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SkipReason::OptedOut => "opted_out",
            SkipReason::DisabledByPolicy => "disabled_by_policy",
            SkipReason::AlreadyInjected => "already_injected",
            SkipReason::Conflict(_) => "conflict",
        }
    }
}

impl From<EditError> for SkipReason {
    fn from(e: EditError) -> Self {
        SkipReason::Conflict(format!("cannot patch the pod: {e}"))
    }
}

#[derive(Debug, Clone)]
pub enum Outcome {
    /// Not a Flink pod (labels): allowed unchanged.
    NotFlink,
    /// `flink-injector.io/inject: "false"`: allowed unchanged.
    OptedOut,
    /// Allowed with this patch (empty on reinvocation of an injected pod).
    Mutated {
        patch: json_patch::Patch,
        injected: Vec<Part>,
        skipped: Vec<(Part, SkipReason)>,
        warnings: Vec<String>,
    },
    /// A malformed annotation: denied with a message naming the annotation, value and expectation.
    Denied { message: String },
}

/// The component label of a Flink pod (`jobmanager`, `taskmanager`), or `other`.
pub fn component(pod: &serde_json::Value) -> &str {
    // `Value::pointer` would allocate for every token of the path.
    label(pod, "component").unwrap_or("other")
}

fn label<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.get("metadata")?.get("labels")?.get(key)?.as_str()
}

/// Flink's native integration labels every pod it makes this way.
pub fn is_flink(pod: &Value) -> bool {
    label(pod, "type") == Some("flink-native-kubernetes")
        && matches!(component(pod), "jobmanager" | "taskmanager")
}

pub fn mutate(policy: &Policy, namespace: &str, pod: &Value, ctx: &MutationContext) -> Outcome {
    if !is_flink(pod) {
        return Outcome::NotFlink;
    }
    mutate_view(policy, namespace, view::prune(pod), ctx)
}

/// `mutate` working on a copy of the whole pod rather than its view: what the view must not change.
#[cfg(test)]
pub(crate) fn mutate_whole(
    policy: &Policy,
    namespace: &str,
    pod: &Value,
    ctx: &MutationContext,
) -> Outcome {
    mutate_view(policy, namespace, pod.clone(), ctx)
}

/// `mutate` on the pod's view (`PodView`, `view::prune`), which becomes the working copy: admission
/// decodes the view and hands it over, so the pod is never copied.
pub fn mutate_view(policy: &Policy, namespace: &str, pod: Value, ctx: &MutationContext) -> Outcome {
    if !is_flink(&pod) {
        return Outcome::NotFlink;
    }
    let existing = annotations::of_pod(&pod);
    match annotations::opted_out(existing) {
        Ok(true) => return Outcome::OptedOut,
        Ok(false) => {}
        Err(e) => {
            return Outcome::Denied {
                message: e.to_string(),
            }
        }
    }
    let overrides = match annotations::parse(existing) {
        Ok(o) => o,
        Err(e) => {
            return Outcome::Denied {
                message: e.to_string(),
            }
        }
    };
    let settings = policy.for_namespace(namespace);
    if let Err(e) = settings.allow.check(&overrides, namespace) {
        return Outcome::Denied {
            message: e.to_string(),
        };
    }
    let already = annotations::injected(existing);
    let mut run = Run {
        settings,
        overrides: &overrides,
        ctx,
        editor: Editor::new(pod),
        injected: Vec::new(),
        skipped: Vec::new(),
        warnings: overrides.warnings.clone(),
    };
    // The agent goes before the timezone so that the timezone part gives it TZ like any other
    // container.
    for part in [Part::Usrlib, Part::HostAliases, Part::Agent, Part::Timezone] {
        if already.iter().any(|p| p == part.as_str()) {
            run.skipped.push((part, SkipReason::AlreadyInjected));
            continue;
        }
        match run.apply(part) {
            Ok(()) => run.injected.push(part),
            Err(reason) => run.skipped.push((part, reason)),
        }
    }
    run.injected
        .sort_by_key(|p| Part::ALL.iter().position(|q| q == p));
    run.skipped
        .sort_by_key(|(p, _)| Part::ALL.iter().position(|q| q == p));
    if let Err(e) = run.record(&already) {
        run.warnings
            .push(format!("could not record the injected parts: {e}"));
    }
    Outcome::Mutated {
        patch: json_patch::Patch(run.editor.into_ops()),
        injected: run.injected,
        skipped: run.skipped,
        warnings: run.warnings,
    }
}

struct Run<'a> {
    settings: &'a Settings,
    overrides: &'a Overrides,
    ctx: &'a MutationContext,
    editor: Editor,
    injected: Vec<Part>,
    skipped: Vec<(Part, SkipReason)>,
    warnings: Vec<String>,
}

impl<'a> Run<'a> {
    fn apply(&mut self, part: Part) -> Result<(), SkipReason> {
        let (s, o, warnings) = (self.settings, self.overrides, &mut self.warnings);
        match part {
            Part::Usrlib => {
                let want = resolve::usrlib(s, o, warnings)?;
                self.editor.transaction(|ed| parts::usrlib(ed, &want))
            }
            Part::HostAliases => {
                let want = resolve::host_aliases(s, o)?;
                self.editor
                    .transaction(|ed| parts::host_aliases(ed, &want, warnings))
            }
            Part::Timezone => {
                let tz = resolve::timezone(s, o)?;
                self.editor
                    .transaction(|ed| parts::timezone(ed, tz.name(), s.localtime, warnings))
            }
            Part::Agent => {
                let want = resolve::agent(s, o, self.ctx, warnings)?;
                self.editor
                    .transaction(|ed| agent::inject(ed, &want, warnings))
            }
        }
    }

    /// Writes `flink-injector.io/injected` and the annotations that go with the parts injected
    /// now. Keys the pod already has are left alone.
    fn record(&mut self, already: &[String]) -> Result<(), EditError> {
        if self.injected.is_empty() {
            return Ok(());
        }
        let pod = self.editor.pod();
        let present = |key: &str| annotations::of_pod(pod).is_some_and(|a| a.contains_key(key));
        let mut list: Vec<String> = already.to_vec();
        list.extend(self.injected.iter().map(|p| p.as_str().to_string()));
        let mut entries = vec![(annotations::INJECTED.to_string(), json!(list.join(",")))];
        if pod::main_container(pod).is_some() && !present(annotations::DEFAULT_CONTAINER) {
            entries.push((
                annotations::DEFAULT_CONTAINER.to_string(),
                json!(MAIN_CONTAINER),
            ));
        }
        // All three or none: adding only some would point an existing scrape config elsewhere.
        const PROMETHEUS: [&str; 3] = [
            "prometheus.io/scrape",
            "prometheus.io/port",
            "prometheus.io/path",
        ];
        if self.injected.contains(&Part::Agent) && !PROMETHEUS.iter().any(|k| present(k)) {
            // The port the agent was given: 9260, or a hostNetwork pod's own.
            let port = pod::find_container(pod, AGENT_CONTAINER)
                .and_then(|(list, i)| pod::containers(pod, list).get(i))
                .and_then(|c| c.pointer("/ports/0/containerPort"))
                .and_then(Value::as_i64)
                .unwrap_or(METRICS_PORT);
            let values = ["true".to_string(), port.to_string(), "/metrics".to_string()];
            for (key, value) in PROMETHEUS.iter().zip(values) {
                entries.push((key.to_string(), json!(value)));
            }
        }
        let path = Path::new(&["metadata", "annotations"]);
        self.editor.transaction(|ed| ed.put_all(&path, entries))
    }
}
