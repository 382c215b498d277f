//! The install manifests: rendered offline by kustomize (`kubectl kustomize`), every object parsed
//! into its k8s-openapi type with unknown fields rejected, and the webhook's selectors checked
//! against the labels a real Flink put on its pods.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use flink_injector_tests::{workspace_bin, workspace_root};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Deserializes `doc` as `T`, failing on any field `T` does not know (a typo such as
/// `readOnlyRootFileSystem` would otherwise be silently dropped by the API server's client).
fn strict<T: DeserializeOwned>(doc: &Value) -> Result<T> {
    let mut unknown = Vec::new();
    let value: T = serde_ignored::deserialize(doc.clone(), |path| unknown.push(path.to_string()))
        .with_context(|| format!("{} {}", doc["kind"], doc["metadata"]["name"]))?;
    if !unknown.is_empty() {
        bail!(
            "{} {}: unknown fields {unknown:?}",
            doc["kind"],
            doc["metadata"]["name"]
        );
    }
    Ok(value)
}

#[derive(Default)]
struct Objects {
    deployments: Vec<Deployment>,
    webhooks: Vec<MutatingWebhookConfiguration>,
    configmaps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
    namespaces: Vec<Namespace>,
    network_policies: Vec<NetworkPolicy>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    other: Vec<String>,
}

fn check_all(docs: &[Value]) -> Result<Objects> {
    let mut out = Objects::default();
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let api = doc["apiVersion"].as_str().unwrap_or_default();
        match (api, kind) {
            ("v1", "Namespace") => out.namespaces.push(strict(doc)?),
            ("v1", "ServiceAccount") => drop(strict::<ServiceAccount>(doc)?),
            ("v1", "ConfigMap") => out.configmaps.push(strict(doc)?),
            ("v1", "Secret") => out.secrets.push(strict(&unwrap_base64(doc))?),
            ("v1", "Service") => drop(strict::<Service>(doc)?),
            ("apps/v1", "Deployment") => out.deployments.push(strict(doc)?),
            ("policy/v1", "PodDisruptionBudget") => drop(strict::<PodDisruptionBudget>(doc)?),
            ("networking.k8s.io/v1", "NetworkPolicy") => out.network_policies.push(strict(doc)?),
            ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
                out.webhooks.push(strict(doc)?)
            }
            ("rbac.authorization.k8s.io/v1", "Role") => out.roles.push(strict(doc)?),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => out.role_bindings.push(strict(doc)?),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => out.cluster_roles.push(strict(doc)?),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                out.cluster_role_bindings.push(strict(doc)?)
            }
            // cert-manager's CRDs have no k8s-openapi types: check the shape we rely on.
            ("cert-manager.io/v1", "Issuer" | "Certificate") => {
                if doc["spec"].as_object().is_none_or(|s| s.is_empty()) {
                    bail!("{kind} without spec");
                }
                out.other.push(format!("{api}/{kind}"));
            }
            _ => bail!("unexpected object {api} {kind}"),
        }
    }
    Ok(out)
}

/// kustomize wraps long base64 values over several lines; the API server's decoder (Go's) skips
/// the newlines, k8s-openapi's does not.
fn unwrap_base64(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Some(data) = doc.get_mut("data").and_then(Value::as_object_mut) {
        for v in data.values_mut() {
            if let Some(s) = v.as_str() {
                *v = Value::from(s.split_whitespace().collect::<String>());
            }
        }
    }
    doc
}

fn yaml_docs(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn kustomize(dir: &Path) -> Result<Vec<Value>> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .context("running `kubectl kustomize` (kubectl is needed for this test)")?;
    if !out.status.success() {
        bail!(
            "kubectl kustomize {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    yaml_docs(&String::from_utf8(out.stdout)?)
}

/// A copy of manifests/ in a temp dir (as `<tmp>/manifests`), to render with files added.
fn manifests_copy() -> Result<tempfile::TempDir> {
    let tmp = tempfile::tempdir()?;
    let status = Command::new("cp")
        .arg("-r")
        .arg(workspace_root().join("manifests"))
        .arg(tmp.path())
        .status()?;
    if !status.success() {
        bail!("copying manifests");
    }
    Ok(tmp)
}

/// A copy of manifests/ with certificates written the way certs/generate.sh writes them.
fn manifests_with_certs() -> Result<tempfile::TempDir> {
    let tmp = manifests_copy()?;
    let status = Command::new(workspace_root().join("certs/generate.sh"))
        .arg("--out")
        .arg(tmp.path().join("manifests/tls"))
        .env("FLINK_WEBHOOK", workspace_bin("flink-webhook")?)
        .status()?;
    if !status.success() {
        bail!("certs/generate.sh failed");
    }
    Ok(tmp)
}

fn fixture_pod_labels() -> Result<Vec<BTreeMap<String, String>>> {
    let dir = workspace_root().join("tests/fixtures/admission");
    let mut all = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if !path.to_string_lossy().ends_with(".review.json") {
            continue;
        }
        let review: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        let labels = review["request"]["object"]["metadata"]["labels"].clone();
        all.push(serde_json::from_value(labels)?);
    }
    if all.len() < 4 {
        bail!(
            "expected the four real admission fixtures in {}",
            dir.display()
        );
    }
    Ok(all)
}

#[test]
fn base_renders_and_every_object_is_valid() -> Result<()> {
    let tmp = manifests_with_certs()?;
    let docs = kustomize(&tmp.path().join("manifests"))?;
    let objs = check_all(&docs)?;

    let [webhook] = objs.webhooks.as_slice() else {
        bail!("expected one MutatingWebhookConfiguration");
    };
    let hooks = webhook.webhooks.as_deref().unwrap_or_default();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(hook.side_effects, "None");
    assert_eq!(hook.admission_review_versions, vec!["v1".to_string()]);
    assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    assert!(hook.timeout_seconds.is_some_and(|t| (1..=10).contains(&t)));
    let bundle = hook
        .client_config
        .ca_bundle
        .as_ref()
        .context("caBundle patched in")?;
    assert!(String::from_utf8_lossy(&bundle.0).contains("BEGIN CERTIFICATE"));
    let svc = hook.client_config.service.as_ref().context("service")?;
    assert_eq!(
        (svc.name.as_str(), svc.namespace.as_str()),
        ("flink-webhook", "flink-system")
    );
    assert_eq!(svc.path.as_deref(), Some("/mutate"));

    // The selectors pick every pod a real Flink created, and only opted-in namespaces.
    let selector = hook
        .object_selector
        .as_ref()
        .and_then(|s| s.match_labels.clone())
        .context("objectSelector")?;
    for labels in fixture_pod_labels()? {
        for (k, v) in &selector {
            assert_eq!(
                labels.get(k),
                Some(v),
                "fixture pod {labels:?} not selected by {selector:?}"
            );
        }
    }
    let ns_selector = hook
        .namespace_selector
        .as_ref()
        .and_then(|s| s.match_labels.clone())
        .context("namespaceSelector")?;
    assert_eq!(
        ns_selector
            .get("flink-injector.io/enabled")
            .map(String::as_str),
        Some("true")
    );

    let [deploy] = objs.deployments.as_slice() else {
        bail!("expected one Deployment");
    };
    let spec = deploy.spec.as_ref().context("spec")?;
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().context("pod spec")?;
    assert!(pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .is_some());
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().context("securityContext")?;
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(
        pod.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );
    assert!(c.liveness_probe.is_some() && c.readiness_probe.is_some());
    // The allocator settings the tests and benchmarks run the webhook with are the deployed ones.
    let env = c.env.clone().unwrap_or_default();
    for (name, value) in flink_injector_tests::WEBHOOK_ALLOCATOR_ENV {
        assert!(
            env.iter()
                .any(|e| e.name == name && e.value.as_deref() == Some(value)),
            "Deployment env lacks {name}={value}"
        );
    }
    // The paths in args are inside the mounted volumes.
    let args = c.args.clone().unwrap_or_default();
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    for flag in ["--config=", "--tls-cert=", "--tls-key="] {
        let path = args
            .iter()
            .find_map(|a| a.strip_prefix(flag))
            .context(flag)?;
        assert!(
            mounts
                .iter()
                .any(|m| path.starts_with(&format!("{}/", m.mount_path))),
            "{path} not mounted"
        );
    }

    // The policy shipped in the ConfigMap is valid, and the TLS Secret holds the pair.
    let cm = objs
        .configmaps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("flink-injector-policy"))
        .context("policy ConfigMap")?;
    let policy = cm
        .data
        .as_ref()
        .and_then(|d| d.get("policy.yaml"))
        .context("policy.yaml key")?;
    flink_webhook::policy::Policy::from_yaml(policy)
        .map_err(|e| anyhow::anyhow!("shipped policy: {e}"))?;
    let secret = objs
        .secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("flink-webhook-tls"))
        .context("TLS Secret")?;
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.data.as_ref().context("secret data")?;
    assert!(data.contains_key("tls.crt") && data.contains_key("tls.key"));
    assert_eq!(objs.namespaces.len(), 1);
    Ok(())
}

#[test]
fn cert_manager_overlay_renders_and_injects_the_ca() -> Result<()> {
    let docs = kustomize(&workspace_root().join("manifests/overlays/cert-manager"))?;
    let objs = check_all(&docs)?;
    let webhook = objs.webhooks.first().context("webhook configuration")?;
    let annotations = webhook.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("cert-manager.io/inject-ca-from")
            .map(String::as_str),
        Some("flink-system/flink-webhook-serving")
    );
    assert!(
        objs.other
            .iter()
            .filter(|k| k.ends_with("Certificate"))
            .count()
            >= 2
    );
    // The Certificate writes the Secret the Deployment mounts.
    let cert = docs
        .iter()
        .find(|d| d["kind"] == "Certificate" && d["metadata"]["name"] == "flink-webhook-serving")
        .context("serving Certificate")?;
    assert_eq!(cert["spec"]["secretName"], "flink-webhook-tls");
    Ok(())
}

#[test]
fn example_manifests_are_valid() -> Result<()> {
    for name in ["flink-namespace.yaml", "kafka-secret.yaml"] {
        let text = std::fs::read_to_string(workspace_root().join("manifests/examples").join(name))?;
        let objs = check_all(&yaml_docs(&text)?)?;
        if name == "flink-namespace.yaml" {
            let ns = objs.namespaces.first().context("namespace")?;
            let labels = ns.metadata.labels.clone().unwrap_or_default();
            assert_eq!(
                labels.get("flink-injector.io/enabled").map(String::as_str),
                Some("true")
            );
        }
    }
    Ok(())
}

/// Both images set the allocator environment the tests and benchmarks run the binaries with.
#[test]
fn images_carry_the_allocator_settings() -> Result<()> {
    for (image, settings) in [
        (
            "docker/webhook.Dockerfile",
            flink_injector_tests::WEBHOOK_ALLOCATOR_ENV,
        ),
        (
            "docker/agent.Dockerfile",
            flink_injector_tests::AGENT_ALLOCATOR_ENV,
        ),
    ] {
        let text = std::fs::read_to_string(workspace_root().join(image))?;
        let env: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("ENV "))
            .flat_map(str::split_whitespace)
            .collect();
        for (name, value) in settings {
            let want = format!("{name}={value}");
            assert!(env.contains(&want.as_str()), "{image} lacks ENV {want}");
        }
    }
    Ok(())
}

/// Whether a namespace with `labels` is selected (matchLabels and the four operators).
fn selects(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool> {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let mut by_expressions = true;
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        let has = labels.get(&e.key);
        by_expressions &= match e.operator.as_str() {
            "In" => has.is_some_and(|v| values.contains(v)),
            "NotIn" => has.is_none_or(|v| !values.contains(v)),
            "Exists" => has.is_some(),
            "DoesNotExist" => has.is_none(),
            other => bail!("unknown operator {other}"),
        };
    }
    Ok(by_labels && by_expressions)
}

#[test]
fn fail_closed_overlay_fails_closed_only_where_a_namespace_asks() -> Result<()> {
    let tmp = manifests_with_certs()?;
    let base = check_all(&kustomize(&tmp.path().join("manifests"))?)?;
    let docs = kustomize(&tmp.path().join("manifests/overlays/fail-closed"))?;
    let objs = check_all(&docs)?;
    let [config] = objs.webhooks.as_slice() else {
        bail!("expected one MutatingWebhookConfiguration");
    };
    let hooks = config.webhooks.as_deref().unwrap_or_default();
    let [open, closed] = hooks else {
        bail!("expected two webhook entries, got {}", hooks.len());
    };
    assert_eq!(open.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(closed.failure_policy.as_deref(), Some("Fail"));
    // The second entry is the first in all but name, policy and namespaces: same server, same
    // CA (copied by the component), same pods, same rules.
    let ca = |h: &k8s_openapi::api::admissionregistration::v1::MutatingWebhook| {
        h.client_config.ca_bundle.clone().map(|b| b.0)
    };
    assert!(ca(open).is_some_and(|b| String::from_utf8_lossy(&b).contains("BEGIN CERTIFICATE")));
    assert_eq!(ca(open), ca(closed));
    assert_eq!(open.client_config.service, closed.client_config.service);
    assert_eq!(open.object_selector, closed.object_selector);
    assert_eq!(open.rules, closed.rules);
    assert_eq!(open.side_effects, closed.side_effects);
    assert_eq!(open.reinvocation_policy, closed.reinvocation_policy);
    assert_eq!(open.timeout_seconds, closed.timeout_seconds);
    // Everything else is what manifests/ installs.
    assert_eq!(objs.deployments, base.deployments);
    assert_eq!(objs.configmaps, base.configmaps);

    // Each namespace is served by exactly the entry it asks for, or by none.
    let ns = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let enabled = ("flink-injector.io/enabled", "true");
    let fail = ("flink-injector.io/failure-policy", "Fail");
    for (labels, want) in [
        (ns(&[enabled]), [true, false]),
        (ns(&[enabled, fail]), [false, true]),
        (
            ns(&[enabled, ("flink-injector.io/failure-policy", "Ignore")]),
            [true, false],
        ),
        (ns(&[fail]), [false, false]),
        (ns(&[]), [false, false]),
    ] {
        let mut got = [false; 2];
        for (slot, h) in got.iter_mut().zip([open, closed]) {
            *slot = match &h.namespace_selector {
                Some(s) => selects(s, &labels)?,
                None => true,
            };
        }
        assert_eq!(got, want, "namespace labels {labels:?}");
    }
    Ok(())
}

#[test]
fn fail_closed_component_goes_on_top_of_cert_manager() -> Result<()> {
    let tmp = manifests_copy()?;
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine)?;
    std::fs::write(
        mine.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources: [../manifests/overlays/cert-manager]\n\
         components: [../manifests/components/fail-closed]\n",
    )?;
    let objs = check_all(&kustomize(&mine)?)?;
    let [config] = objs.webhooks.as_slice() else {
        bail!("expected one MutatingWebhookConfiguration");
    };
    let policies: Vec<Option<&str>> = config
        .webhooks
        .iter()
        .flatten()
        .map(|h| h.failure_policy.as_deref())
        .collect();
    assert_eq!(policies, [Some("Ignore"), Some("Fail")]);
    assert_eq!(
        config
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("cert-manager.io/inject-ca-from"))
            .map(String::as_str),
        Some("flink-system/flink-webhook-serving"),
        "cainjector fills both entries' caBundle"
    );
    Ok(())
}

#[test]
fn the_network_policy_opens_the_webhooks_two_ports_and_nothing_else() -> Result<()> {
    let tmp = manifests_with_certs()?;
    let objs = check_all(&kustomize(&tmp.path().join("manifests"))?)?;
    let [policy] = objs.network_policies.as_slice() else {
        bail!("expected one NetworkPolicy");
    };
    let spec = policy.spec.as_ref().context("spec")?;
    // It selects the webhook's pods, as the Deployment labels them.
    let deployment = objs.deployments.first().context("deployment")?;
    let pod_labels = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let selector = spec
        .pod_selector
        .as_ref()
        .and_then(|s| s.match_labels.clone())
        .unwrap_or_default();
    assert!(
        !selector.is_empty(),
        "an empty podSelector selects every pod"
    );
    for (k, v) in &selector {
        assert_eq!(pod_labels.get(k), Some(v), "podSelector {k}={v}");
    }
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_string()][..])
    );
    let mut ports: Vec<String> = spec
        .ingress
        .iter()
        .flatten()
        .flat_map(|rule| rule.ports.iter().flatten())
        .map(|p| format!("{:?}/{:?}", p.protocol, p.port))
        .collect();
    ports.sort();
    assert_eq!(
        ports,
        [
            "Some(\"TCP\")/Some(Int(8443))",
            "Some(\"TCP\")/Some(Int(9090))"
        ]
    );
    // And those are the ports the webhook's container serves.
    let container_ports: Vec<i32> = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| {
            s.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .map(|p| p.container_port)
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(container_ports, [8443, 9090]);
    Ok(())
}

/// `group/resource[names]: verb` for each verb a rule grants.
fn grants(rules: &[PolicyRule]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rules {
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                let names = r.resource_names.clone().unwrap_or_default().join(",");
                for v in &r.verbs {
                    out.push(format!("{g}/{res}[{names}]: {v}"));
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn rbac_grants_the_detector_what_it_calls_and_nothing_more() -> Result<()> {
    let tmp = manifests_with_certs()?;
    let objs = check_all(&kustomize(&tmp.path().join("manifests"))?)?;
    let [cluster_role] = objs.cluster_roles.as_slice() else {
        bail!("expected one ClusterRole");
    };
    assert_eq!(
        grants(cluster_role.rules.as_deref().unwrap_or_default()),
        [
            "/namespaces[]: list",
            "/namespaces[]: watch",
            "/pods[]: list",
            "/pods[]: watch",
            "events.k8s.io/events[]: create",
        ]
    );
    let [role] = objs.roles.as_slice() else {
        bail!("expected one Role");
    };
    assert_eq!(
        grants(role.rules.as_deref().unwrap_or_default()),
        [
            "coordination.k8s.io/leases[]: create",
            "coordination.k8s.io/leases[flink-injector-detector]: get",
            "coordination.k8s.io/leases[flink-injector-detector]: update",
        ]
    );
    // The Lease's Role is where the webhook runs (POD_NAMESPACE is where it looks for the Lease).
    let deployment = objs.deployments.first().context("deployment")?;
    let ns = deployment.metadata.namespace.as_deref();
    assert_eq!(role.metadata.namespace.as_deref(), ns);
    let env: Vec<String> = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| {
            s.containers[0]
                .env
                .iter()
                .flatten()
                .filter_map(|e| {
                    let field = e.value_from.as_ref()?.field_ref.as_ref()?;
                    Some(format!("{}={}", e.name, field.field_path))
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        env,
        ["POD_NAME=metadata.name", "POD_NAMESPACE=metadata.namespace"]
    );
    let account = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.service_account_name.clone())
        .context("serviceAccountName")?;
    // Both bindings name the Deployment's ServiceAccount and the roles above.
    let [crb] = objs.cluster_role_bindings.as_slice() else {
        bail!("expected one ClusterRoleBinding");
    };
    let [rb] = objs.role_bindings.as_slice() else {
        bail!("expected one RoleBinding");
    };
    assert_eq!(
        crb.role_ref.name,
        cluster_role.metadata.name.clone().unwrap_or_default()
    );
    assert_eq!(
        rb.role_ref.name,
        role.metadata.name.clone().unwrap_or_default()
    );
    assert_eq!(rb.metadata.namespace.as_deref(), ns);
    for subjects in [&crb.subjects, &rb.subjects] {
        let [s] = subjects.as_deref().unwrap_or_default() else {
            bail!("expected one subject");
        };
        assert_eq!(
            (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
            ("ServiceAccount", account.as_str(), ns)
        );
    }
    Ok(())
}

/// The PodMonitor (prometheus-operator) selects every recorded Flink pod, in any namespace, on a
/// port that the webhook gives the agent's container.
#[test]
fn podmonitor_scrapes_the_agent_of_every_flink_pod() -> Result<()> {
    let path = workspace_root().join("manifests/monitoring/podmonitor.yaml");
    let docs = yaml_docs(&std::fs::read_to_string(&path)?)?;
    let [pm] = docs.as_slice() else {
        bail!("one object expected in {}", path.display())
    };
    anyhow::ensure!(pm["apiVersion"] == "monitoring.coreos.com/v1" && pm["kind"] == "PodMonitor");
    let spec = &pm["spec"];
    anyhow::ensure!(spec["namespaceSelector"]["any"] == true, "{spec}");
    let selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
        strict(&spec["selector"])?;
    for labels in fixture_pod_labels()? {
        anyhow::ensure!(selects(&selector, &labels)?, "does not select {labels:?}");
    }
    let endpoints = spec["podMetricsEndpoints"]
        .as_array()
        .context("endpoints")?;

    // The injected pod's agent ports.
    let out = Command::new(workspace_bin("flink-webhook")?)
        .args(["mutate", "--config"])
        .arg(workspace_root().join("examples/policy.yaml"))
        .arg("-f")
        .arg(
            workspace_root()
                .join("tests/fixtures/admission/flink-2.3-application-taskmanager.pod.yaml"),
        )
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod: Value = serde_norway::from_slice(&out.stdout)?;
    let agent_ports: Vec<&str> = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| pod["spec"][k].as_array().into_iter().flatten())
        .filter(|c| c["name"] == "flink-agent")
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .filter_map(|p| p["name"].as_str())
        .collect();
    anyhow::ensure!(!agent_ports.is_empty(), "no agent in {pod}");
    for e in endpoints {
        let port = e["port"].as_str().context("endpoint port by name")?;
        anyhow::ensure!(
            agent_ports.contains(&port),
            "{port} is not one of {agent_ports:?}"
        );
        anyhow::ensure!(e["path"] == "/metrics");
    }
    Ok(())
}
