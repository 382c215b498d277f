//! `flink-webhook audit`: the detector's judgement once, as a table. Reads the policy in force
//! from the webhook's ConfigMap (or a file), the opted-in namespaces, the Flink pods' metadata and
//! the detector Lease (for the install time), all with the caller's own credentials.

use std::collections::HashSet;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, ListParams};

use crate::policy::Policy;

use super::judge::{facts_from_meta, judge, PodFacts, Verdict};
use super::lease;
use super::watch::POD_SELECTOR;

/// The ConfigMap `manifests/` installs the policy in, and its key.
pub const POLICY_CONFIGMAP: &str = "flink-injector-policy";
pub const POLICY_KEY: &str = "policy.yaml";
const PAGE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("listing {what}: {source}")]
    List {
        what: &'static str,
        source: kube::Error,
    },
    #[error("reading the policy from ConfigMap {namespace}/{POLICY_CONFIGMAP} (or pass --config FILE): {source}")]
    PolicyConfigMap {
        namespace: String,
        source: kube::Error,
    },
    #[error("ConfigMap {namespace}/{POLICY_CONFIGMAP} has no key {POLICY_KEY}")]
    PolicyKey { namespace: String },
    #[error("the policy in ConfigMap {namespace}/{POLICY_CONFIGMAP}: {source}")]
    Policy {
        namespace: String,
        source: crate::policy::PolicyError,
    },
}

pub struct AuditOptions {
    /// Only this namespace (it must still be opted in).
    pub namespace: Option<String>,
    pub namespace_selector: String,
    /// Where the webhook runs: its policy ConfigMap and Lease.
    pub webhook_namespace: String,
}

pub struct Row {
    pub facts: PodFacts,
    pub verdict: Verdict,
}

pub struct Report {
    pub rows: Vec<Row>,
    /// The install time was not known (no Lease, or not readable): old pods count as missed.
    pub install_time: Option<i64>,
}

impl Report {
    pub fn missed(&self) -> usize {
        self.rows.iter().filter(|r| r.verdict.is_missed()).count()
    }
}

pub async fn policy_from_configmap(
    client: &kube::Client,
    namespace: &str,
) -> Result<Policy, AuditError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = api
        .get(POLICY_CONFIGMAP)
        .await
        .map_err(|source| AuditError::PolicyConfigMap {
            namespace: namespace.to_string(),
            source,
        })?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(POLICY_KEY))
        .ok_or_else(|| AuditError::PolicyKey {
            namespace: namespace.to_string(),
        })?;
    Policy::from_yaml(text).map_err(|source| AuditError::Policy {
        namespace: namespace.to_string(),
        source,
    })
}

/// The Lease's creation, or None when it does not exist or may not be read.
pub async fn install_time(client: &kube::Client, namespace: &str) -> Option<i64> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let lease = api.get_opt(lease::NAME).await.ok().flatten()?;
    lease.metadata.creation_timestamp.map(|t| t.0.as_second())
}

pub async fn audit(
    client: &kube::Client,
    policy: &Policy,
    opts: &AuditOptions,
) -> Result<Report, AuditError> {
    let install_time = install_time(client, &opts.webhook_namespace).await;
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let mut opted_in = HashSet::new();
    let mut params = ListParams::default()
        .labels(&opts.namespace_selector)
        .limit(PAGE);
    loop {
        let page = ns_api
            .list_metadata(&params)
            .await
            .map_err(|source| AuditError::List {
                what: "namespaces",
                source,
            })?;
        opted_in.extend(page.items.into_iter().filter_map(|n| n.metadata.name));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    let pod_api: Api<Pod> = match &opts.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut rows = Vec::new();
    let mut params = ListParams::default().labels(POD_SELECTOR).limit(PAGE);
    loop {
        let page = pod_api
            .list_metadata(&params)
            .await
            .map_err(|source| AuditError::List {
                what: "pods",
                source,
            })?;
        for pod in page.items {
            let facts = facts_from_meta(&pod.metadata);
            if !opted_in.contains(&facts.namespace) {
                continue;
            }
            let verdict = judge(policy, &facts, install_time);
            rows.push(Row { facts, verdict });
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    rows.sort_by(|a, b| {
        (&a.facts.namespace, &a.facts.name).cmp(&(&b.facts.namespace, &b.facts.name))
    });
    Ok(Report { rows, install_time })
}

/// The table `audit` prints: one line a pod, missed ones first so they are not scrolled away.
pub fn render(report: &Report) -> String {
    let header = ["NAMESPACE", "POD", "COMPONENT", "STATUS", "LACKS"];
    let mut lines: Vec<[String; 5]> = Vec::new();
    let (missed, rest): (Vec<&Row>, Vec<&Row>) =
        report.rows.iter().partition(|r| r.verdict.is_missed());
    for r in missed.into_iter().chain(rest) {
        lines.push([
            r.facts.namespace.clone(),
            r.facts.name.clone(),
            r.facts.component.clone(),
            r.verdict.status().to_string(),
            r.verdict.lacks(),
        ]);
    }
    let mut width = header.map(str::len);
    for l in &lines {
        for (w, cell) in width.iter_mut().zip(l.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let fmt = |cells: [&str; 5]| -> String {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            if i == 4 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = fmt(header);
    for l in &lines {
        out.push_str(&fmt([&l[0], &l[1], &l[2], &l[3], &l[4]]));
    }
    out
}
