//! The injection policy: parsed from YAML, validated once, and resolved per namespace up front so
//! that admission never has to re-validate anything.
//!
//! Switches: a part whose section is absent is **off**. A present `usrlib` or `agent` section is on
//! unless it says `enabled: false`. `hostAliases: []` and `timezone: null` switch the other two
//! parts off. A per-namespace override is deep-merged over the top-level policy (maps merge key by
//! key, lists and scalars replace, `null` removes a key), so `namespaces: {x: {agent: {enabled:
//! false}}}` or `{x: {timezone: null}}` switch a part off for one namespace. Inside `usrlib`,
//! an override that names `nfs` drops the inherited `pvc` and vice versa: a volume has one source.
//!
//! `localtime: true` (off by default) adds to the timezone part a read-only hostPath mount of the
//! node's `/usr/share/zoneinfo/<zone>` at `/etc/localtime`, for programs that ignore `TZ`. It
//! needs tzdata on the nodes and a Pod Security level that allows hostPath (`baseline` does not).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::Value;

/// Where the user JARs come from when neither policy nor annotation says otherwise.
pub const DEFAULT_USRLIB_MOUNT_PATH: &str = "/opt/flink/usrlib";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A value that parses but is not acceptable; the message names the field and the value.
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not YAML, or not the policy's shape (unknown field, wrong type); names line and column.
    #[error("policy is not valid: {0}")]
    Parse(String),
}

fn invalid(field: &str, value: &str, problem: &str) -> PolicyError {
    PolicyError::Invalid(format!("{field}: {value:?} {problem}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NativeSidecar {
    /// Decided by the caller from the API server's version (see `MutationContext`).
    #[default]
    Auto,
    Enabled,
    Disabled,
}

/// A `hostAliases` entry, already validated (IP parses, hostnames are DNS names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAlias {
    pub ip: String,
    pub hostnames: Vec<String>,
}

/// Where the `flink-usrlib` volume comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    Nfs { server: String, path: String },
    Pvc { claim_name: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsrlibSettings {
    /// `None` when the policy only sets the mount path and leaves the source to an annotation.
    pub source: Option<VolumeSource>,
    pub mount_path: String,
    pub sub_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    /// Passed to librdkafka as is, in key order.
    pub properties: BTreeMap<String, String>,
    pub secret_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentResources {
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
}

impl Default for AgentResources {
    fn default() -> Self {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        AgentResources {
            requests: map(&[("cpu", "50m"), ("memory", "32Mi")]),
            limits: map(&[("memory", "64Mi")]),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    pub image: String,
    pub image_pull_policy: Option<String>,
    pub kafka: KafkaSettings,
    pub native_sidecar: NativeSidecar,
    pub resources: AgentResources,
    /// `hostNetworkPorts: FROM-TO`: where a hostNetwork pod's agent listens (see
    /// `patch::agent::Network`).
    pub host_network_ports: (u16, u16),
    /// `flinkTaskMetrics: per-subtask | per-vertex`: how the agents export Flink's task and
    /// operator metrics (the agent's `--flink-task-metrics`); `None`: the agent's default.
    pub flink_task_metrics: Option<String>,
}

/// Below Linux's ephemeral range (32768-60999), where Flink's random REST and RPC ports of a
/// hostNetwork pod fall, and clear of Flink's fixed defaults (6121-6124, 8081, 9249).
pub const DEFAULT_HOST_NETWORK_PORTS: (u16, u16) = (19260, 19515);

fn port_range(field: &str, text: &str) -> Result<(u16, u16), PolicyError> {
    let bad = |m: &str| invalid(field, text, m);
    let (from, to) = text
        .split_once('-')
        .ok_or_else(|| bad("is not a port range like 19260-19515"))?;
    let port = |s: &str| {
        s.trim()
            .parse::<u16>()
            .map_err(|_| bad("is not a port range like 19260-19515"))
    };
    let (from, to) = (port(from)?, port(to)?);
    if from < 1024 || from > to {
        return Err(bad("must be FROM-TO with 1024 <= FROM <= TO"));
    }
    Ok((from, to))
}

/// The effective policy for one namespace: a part is on when its field is `Some`/non-empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub usrlib: Option<UsrlibSettings>,
    pub host_aliases: Vec<HostAlias>,
    pub timezone: Option<Tz>,
    /// Also mount the zone's file at `/etc/localtime` (see the module docs).
    pub localtime: bool,
    pub agent: Option<AgentSettings>,
    /// What annotations may choose here (see `crate::allow`).
    pub allow: crate::allow::Allowlists,
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    base: Settings,
    namespaces: BTreeMap<String, Settings>,
}

impl Policy {
    pub fn from_yaml(text: &str) -> Result<Policy, PolicyError> {
        // Typed first, for serde's precise errors (unknown field at line:column) on the file as
        // written; then as a tree, which is what the namespace deep-merge works on.
        serde_norway::from_str::<doc::File>(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        let tree: Value =
            serde_norway::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        let mut tree = match tree {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            _ => {
                return Err(PolicyError::Parse(
                    "the policy must be a YAML mapping".into(),
                ))
            }
        };
        let overrides = tree.remove("namespaces");
        let base_tree = Value::Object(tree);
        let base = settings_from_tree(&base_tree, "")?;
        let mut namespaces = BTreeMap::new();
        if let Some(Value::Object(overrides)) = overrides {
            for (ns, over) in overrides {
                let mut merged = base_tree.clone();
                merge(&mut merged, &over);
                let prefix = format!("namespaces.{ns}.");
                namespaces.insert(ns, settings_from_tree(&merged, &prefix)?);
            }
        }
        Ok(Policy { base, namespaces })
    }

    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Policy::from_yaml(&text)
    }

    /// The top-level setting; `auto` unless the policy pins it.
    pub fn native_sidecar(&self) -> NativeSidecar {
        self.base
            .agent
            .as_ref()
            .map(|a| a.native_sidecar)
            .unwrap_or_default()
    }

    /// The policy with the namespace's override merged in.
    pub fn for_namespace(&self, namespace: &str) -> &Settings {
        self.namespaces.get(namespace).unwrap_or(&self.base)
    }
}

/// Deep merge in the manner of RFC 7386, plus the one-source rule of `usrlib`.
fn merge(base: &mut Value, over: &Value) {
    let (Value::Object(base_map), Value::Object(over_map)) = (&mut *base, over) else {
        *base = over.clone();
        return;
    };
    for (key, value) in over_map {
        if value.is_null() {
            base_map.remove(key);
            continue;
        }
        if key == "usrlib" {
            if let (Some(Value::Object(b)), Value::Object(o)) = (base_map.get_mut(key), value) {
                for (a, other) in [("nfs", "pvc"), ("pvc", "nfs")] {
                    if o.get(a).is_some_and(|v| !v.is_null()) {
                        b.remove(other);
                    }
                }
            }
        }
        match base_map.get_mut(key) {
            Some(existing) if existing.is_object() && value.is_object() => merge(existing, value),
            _ => {
                base_map.insert(key.clone(), value.clone());
            }
        }
    }
}

fn settings_from_tree(tree: &Value, prefix: &str) -> Result<Settings, PolicyError> {
    let spec: doc::Spec = serde_json::from_value(tree.clone())
        .map_err(|e| PolicyError::Parse(format!("{prefix}{e}")))?;
    validate(spec, prefix)
}

fn validate(spec: doc::Spec, p: &str) -> Result<Settings, PolicyError> {
    let usrlib = match spec.usrlib {
        Some(u) if u.enabled.unwrap_or(true) => Some(validate_usrlib(u, p)?),
        _ => None,
    };
    let mut host_aliases = Vec::new();
    for (i, alias) in spec
        .host_aliases
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let field = format!("{p}hostAliases[{i}]");
        host_aliases.push(validate_host_alias(alias.ip, alias.hostnames, &field)?);
    }
    let timezone = match spec.timezone {
        Some(tz) => {
            Some(names::timezone(&tz).map_err(|m| invalid(&format!("{p}timezone"), &tz, m))?)
        }
        None => None,
    };
    let agent = match spec.agent {
        Some(a) if a.enabled.unwrap_or(true) => Some(validate_agent(a, p)?),
        _ => None,
    };
    Ok(Settings {
        usrlib,
        host_aliases,
        timezone,
        localtime: spec.localtime.unwrap_or(false),
        agent,
        allow: validate_allow(spec.allow.unwrap_or_default(), p)?,
    })
}

fn validate_allow(a: doc::Allow, p: &str) -> Result<crate::allow::Allowlists, PolicyError> {
    let check = |list: &Option<Vec<String>>,
                 name: &str,
                 ok: &dyn Fn(&str) -> Result<(), &'static str>|
     -> Result<(), PolicyError> {
        for (i, entry) in list.iter().flatten().enumerate() {
            ok(entry).map_err(|m| invalid(&format!("{p}allow.{name}[{i}]"), entry, m))?;
        }
        Ok(())
    };
    check(&a.log_topics, "logTopics", &|t| {
        names::kafka_topic(t.strip_suffix('*').filter(|s| !s.is_empty()).unwrap_or(t))
    })?;
    check(&a.nfs_servers, "nfsServers", &|s| {
        if s.is_empty() || s.contains('/') || s.chars().any(char::is_whitespace) {
            Err("is not an NFS server name or address")
        } else {
            Ok(())
        }
    })?;
    check(&a.nfs_paths, "nfsPaths", &|path| {
        if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
            Err("is not an absolute path without ..")
        } else {
            Ok(())
        }
    })?;
    check(&a.pvc_claims, "pvcClaims", &|c| names::dns_subdomain(c))?;
    Ok(crate::allow::Allowlists {
        log_topics: a.log_topics,
        nfs_servers: a.nfs_servers,
        nfs_paths: a.nfs_paths,
        pvc_claims: a.pvc_claims,
    })
}

fn validate_usrlib(u: doc::Usrlib, p: &str) -> Result<UsrlibSettings, PolicyError> {
    let source = match (u.nfs, u.pvc) {
        (Some(_), Some(_)) => {
            return Err(PolicyError::Invalid(format!(
                "{p}usrlib: set either nfs or pvc, not both"
            )))
        }
        (Some(nfs), None) => Some(nfs_source(nfs.server, nfs.path, &format!("{p}usrlib.nfs"))?),
        (None, Some(pvc)) => {
            let field = format!("{p}usrlib.pvc.claimName");
            names::dns_subdomain(&pvc.claim_name)
                .map_err(|m| invalid(&field, &pvc.claim_name, m))?;
            Some(VolumeSource::Pvc {
                claim_name: pvc.claim_name,
            })
        }
        (None, None) => None,
    };
    let mount_path = u
        .mount_path
        .unwrap_or_else(|| DEFAULT_USRLIB_MOUNT_PATH.to_string());
    names::absolute_path(&mount_path)
        .map_err(|m| invalid(&format!("{p}usrlib.mountPath"), &mount_path, m))?;
    if let Some(sub) = &u.sub_path {
        names::sub_path(sub).map_err(|m| invalid(&format!("{p}usrlib.subPath"), sub, m))?;
    }
    Ok(UsrlibSettings {
        source,
        mount_path,
        sub_path: u.sub_path,
    })
}

/// Shared with the `usrlib` annotation, so both say the same thing about the same mistake.
pub fn nfs_source(server: String, path: String, field: &str) -> Result<VolumeSource, PolicyError> {
    if server.trim().is_empty() || server.chars().any(char::is_whitespace) {
        return Err(invalid(
            &format!("{field}.server"),
            &server,
            "is not an NFS server name or address",
        ));
    }
    names::absolute_path(&path).map_err(|m| invalid(&format!("{field}.path"), &path, m))?;
    Ok(VolumeSource::Nfs { server, path })
}

pub fn validate_host_alias(
    ip: String,
    hostnames: Vec<String>,
    field: &str,
) -> Result<HostAlias, PolicyError> {
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(invalid(&format!("{field}.ip"), &ip, "is not an IP address"));
    }
    if hostnames.is_empty() {
        return Err(PolicyError::Invalid(format!(
            "{field}.hostnames: at least one hostname is needed for {ip}"
        )));
    }
    for h in &hostnames {
        names::dns_subdomain(h).map_err(|m| invalid(&format!("{field}.hostnames"), h, m))?;
    }
    Ok(HostAlias { ip, hostnames })
}

fn validate_agent(a: doc::Agent, p: &str) -> Result<AgentSettings, PolicyError> {
    let image = a.image.unwrap_or_default();
    if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
        return Err(invalid(
            &format!("{p}agent.image"),
            &image,
            "is not an image reference",
        ));
    }
    let Some(kafka) = a.kafka else {
        return Err(PolicyError::Invalid(format!(
            "{p}agent.kafka: missing (brokers and topic are required when the agent is on)"
        )));
    };
    let brokers = match kafka.brokers {
        Some(doc::Brokers::One(s)) => s,
        Some(doc::Brokers::List(l)) => l.join(","),
        None => String::new(),
    };
    names::brokers(&brokers)
        .map_err(|m| invalid(&format!("{p}agent.kafka.brokers"), &brokers, m))?;
    let topic = kafka.topic.unwrap_or_default();
    names::kafka_topic(&topic).map_err(|m| invalid(&format!("{p}agent.kafka.topic"), &topic, m))?;
    let mut properties = BTreeMap::new();
    for (key, value) in kafka.properties.unwrap_or_default() {
        let value = value.to_string();
        let field = format!("{p}agent.kafka.properties.{key}");
        if key.is_empty() || key.contains(['=', '\n', '\r']) || key.chars().any(char::is_whitespace)
        {
            return Err(invalid(&field, &key, "is not a librdkafka property name"));
        }
        // The agent gets them as newline-separated key=value lines.
        if value.contains(['\n', '\r']) {
            return Err(invalid(&field, &value, "must be a single line"));
        }
        properties.insert(key, value);
    }
    if let Some(secret) = &kafka.secret_name {
        names::dns_subdomain(secret)
            .map_err(|m| invalid(&format!("{p}agent.kafka.secretName"), secret, m))?;
    }
    let native_sidecar = match a.native_sidecar {
        None => NativeSidecar::Auto,
        Some(doc::Scalar::Bool(true)) => NativeSidecar::Enabled,
        Some(doc::Scalar::Bool(false)) => NativeSidecar::Disabled,
        Some(doc::Scalar::Str(s)) if s == "auto" => NativeSidecar::Auto,
        Some(doc::Scalar::Str(s)) if s == "true" => NativeSidecar::Enabled,
        Some(doc::Scalar::Str(s)) if s == "false" => NativeSidecar::Disabled,
        Some(other) => {
            return Err(invalid(
                &format!("{p}agent.nativeSidecar"),
                &other.to_string(),
                "is not one of auto, true, false",
            ))
        }
    };
    if let Some(policy) = &a.image_pull_policy {
        if !matches!(policy.as_str(), "Always" | "IfNotPresent" | "Never") {
            return Err(invalid(
                &format!("{p}agent.imagePullPolicy"),
                policy,
                "is not one of Always, IfNotPresent, Never",
            ));
        }
    }
    let mut resources = AgentResources::default();
    if let Some(r) = a.resources {
        for (name, given, target) in [
            ("requests", r.requests, &mut resources.requests),
            ("limits", r.limits, &mut resources.limits),
        ] {
            for (key, value) in given.unwrap_or_default() {
                let value = value.to_string();
                let field = format!("{p}agent.resources.{name}.{key}");
                names::quantity(&value).map_err(|m| invalid(&field, &value, m))?;
                target.insert(key, value);
            }
        }
    }
    if let Some(mode) = &a.flink_task_metrics {
        if !matches!(mode.as_str(), "per-subtask" | "per-vertex") {
            return Err(invalid(
                &format!("{p}agent.flinkTaskMetrics"),
                mode,
                "is not one of per-subtask, per-vertex",
            ));
        }
    }
    Ok(AgentSettings {
        image,
        image_pull_policy: a.image_pull_policy,
        kafka: KafkaSettings {
            brokers,
            topic,
            properties,
            secret_name: kafka.secret_name,
        },
        native_sidecar,
        resources,
        host_network_ports: match &a.host_network_ports {
            Some(r) => port_range(&format!("{p}agent.hostNetworkPorts"), r)?,
            None => DEFAULT_HOST_NETWORK_PORTS,
        },
        flink_task_metrics: a.flink_task_metrics,
    })
}

/// The policy file's shape, as serde sees it.
mod doc {
    use super::*;

    /// The file: a [`Spec`] plus `namespaces` (serde cannot flatten with `deny_unknown_fields`).
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)] // read only for its errors
    pub struct File {
        pub usrlib: Option<Usrlib>,
        pub host_aliases: Option<Vec<HostAlias>>,
        pub timezone: Option<String>,
        pub localtime: Option<bool>,
        pub agent: Option<Agent>,
        pub allow: Option<Allow>,
        pub namespaces: Option<BTreeMap<String, Spec>>,
    }

    /// What annotations may choose (see `crate::allow`).
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Allow {
        pub log_topics: Option<Vec<String>>,
        pub nfs_servers: Option<Vec<String>>,
        pub nfs_paths: Option<Vec<String>>,
        pub pvc_claims: Option<Vec<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Spec {
        pub usrlib: Option<Usrlib>,
        pub host_aliases: Option<Vec<HostAlias>>,
        pub timezone: Option<String>,
        pub localtime: Option<bool>,
        pub agent: Option<Agent>,
        pub allow: Option<Allow>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Usrlib {
        pub enabled: Option<bool>,
        pub nfs: Option<Nfs>,
        pub pvc: Option<Pvc>,
        pub mount_path: Option<String>,
        pub sub_path: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Nfs {
        #[serde(default)]
        pub server: String,
        #[serde(default)]
        pub path: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Pvc {
        #[serde(default)]
        pub claim_name: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HostAlias {
        pub ip: String,
        #[serde(default)]
        pub hostnames: Vec<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Agent {
        pub enabled: Option<bool>,
        pub image: Option<String>,
        pub image_pull_policy: Option<String>,
        pub kafka: Option<Kafka>,
        pub native_sidecar: Option<Scalar>,
        pub resources: Option<Resources>,
        pub host_network_ports: Option<String>,
        pub flink_task_metrics: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Kafka {
        pub brokers: Option<Brokers>,
        pub topic: Option<String>,
        pub properties: Option<BTreeMap<String, Scalar>>,
        pub secret_name: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    pub enum Brokers {
        One(String),
        List(Vec<String>),
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Resources {
        pub requests: Option<BTreeMap<String, Scalar>>,
        pub limits: Option<BTreeMap<String, Scalar>>,
    }

    /// YAML writes `linger.ms: 5` and `cpu: 1` unquoted; they are strings to Kafka and Kubernetes.
    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    pub enum Scalar {
        Bool(bool),
        Int(i64),
        Float(f64),
        Str(String),
    }

    impl std::fmt::Display for Scalar {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Scalar::Bool(b) => write!(f, "{b}"),
                Scalar::Int(i) => write!(f, "{i}"),
                Scalar::Float(x) => write!(f, "{x}"),
                Scalar::Str(s) => f.write_str(s),
            }
        }
    }
}

/// Validators for names and values, shared by the policy and the annotations. Each returns what is
/// wrong as a phrase that reads after the quoted value.
pub mod names {
    use chrono_tz::Tz;

    pub fn timezone(name: &str) -> Result<Tz, &'static str> {
        name.parse::<Tz>()
            .map_err(|_| "is not an IANA timezone name (expected e.g. \"Europe/Berlin\")")
    }

    /// RFC 1123 subdomain, as Kubernetes checks object names and hostAliases hostnames.
    pub fn dns_subdomain(name: &str) -> Result<(), &'static str> {
        const PROBLEM: &str = "is not a DNS name (lower-case letters, digits, '-' and '.')";
        if name.is_empty() || name.len() > 253 {
            return Err(PROBLEM);
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.split('.').all(label_ok) {
            Ok(())
        } else {
            Err(PROBLEM)
        }
    }

    pub fn absolute_path(path: &str) -> Result<(), &'static str> {
        if path.starts_with('/') && !path.contains(['\n', '\r']) {
            Ok(())
        } else {
            Err("is not an absolute path")
        }
    }

    /// Kubernetes rejects absolute sub-paths and `..` components.
    pub fn sub_path(path: &str) -> Result<(), &'static str> {
        if path.is_empty() || path.starts_with('/') || path.split('/').any(|c| c == "..") {
            Err("is not a relative path without '..'")
        } else {
            Ok(())
        }
    }

    /// Kafka's own rule: 1 to 249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
    pub fn kafka_topic(topic: &str) -> Result<(), &'static str> {
        let ok = !topic.is_empty()
            && topic.len() <= 249
            && topic != "."
            && topic != ".."
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(())
        } else {
            Err("is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)")
        }
    }

    /// librdkafka's `bootstrap.servers`: a comma list of `host:port`.
    pub fn brokers(list: &str) -> Result<(), &'static str> {
        const PROBLEM: &str = "is not a comma-separated list of host:port";
        if list.trim().is_empty() {
            return Err(PROBLEM);
        }
        for broker in list.split(',') {
            let broker = broker.trim();
            let port = broker
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            match port {
                Some((host, Ok(_))) if !host.is_empty() && !host.contains(char::is_whitespace) => {}
                _ => return Err(PROBLEM),
            }
        }
        Ok(())
    }

    /// A Kubernetes resource quantity such as `50m`, `64Mi`, `1`, `0.5`, `1e3`.
    pub fn quantity(q: &str) -> Result<(), &'static str> {
        const SUFFIXES: &[&str] = &[
            "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
        ];
        let digits_end = q
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(q.len());
        let (number, suffix) = q.split_at(digits_end);
        let number_ok = !number.is_empty() && number.parse::<f64>().is_ok();
        let suffix_ok = SUFFIXES.contains(&suffix)
            || (suffix.starts_with(['e', 'E']) && suffix[1..].parse::<i32>().is_ok());
        if number_ok && suffix_ok {
            Ok(())
        } else {
            Err("is not a Kubernetes quantity (e.g. 50m, 64Mi)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/../tests/fixtures/policy/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn err(yaml: &str) -> String {
        match Policy::from_yaml(yaml) {
            Ok(p) => panic!("accepted: {yaml}\n{p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_design_policy_parses() {
        let p = Policy::from_yaml(&fixture("design.yaml")).unwrap();
        let base = p.for_namespace("flink-jobs");
        assert_eq!(
            base.usrlib,
            Some(UsrlibSettings {
                source: Some(VolumeSource::Nfs {
                    server: "nfs.data.internal".into(),
                    path: "/exports/flink/usrlib".into()
                }),
                mount_path: "/opt/flink/usrlib".into(),
                sub_path: None,
            })
        );
        assert_eq!(
            base.host_aliases,
            vec![HostAlias {
                ip: "10.20.0.11".into(),
                hostnames: vec!["nn1.bigdata.internal".into(), "nn1".into()]
            }]
        );
        assert_eq!(base.timezone.map(|t| t.name()), Some("Asia/Shanghai"));
        let agent = base.agent.as_ref().unwrap();
        assert_eq!(agent.image, "flink-agent:0.1.0");
        assert_eq!(agent.kafka.brokers, "kafka-0.kafka:9092,kafka-1.kafka:9092");
        assert_eq!(agent.kafka.topic, "flink-logs");
        assert_eq!(
            agent
                .kafka
                .properties
                .get("compression.type")
                .map(String::as_str),
            Some("lz4")
        );
        assert_eq!(
            agent.kafka.secret_name.as_deref(),
            Some("flink-agent-kafka")
        );
        assert_eq!(p.native_sidecar(), NativeSidecar::Auto);

        // team-a: path and topic replaced, the rest inherited.
        let a = p.for_namespace("team-a");
        assert_eq!(
            a.usrlib.as_ref().unwrap().source,
            Some(VolumeSource::Nfs {
                server: "nfs.data.internal".into(),
                path: "/exports/team-a".into()
            })
        );
        let a_agent = a.agent.as_ref().unwrap();
        assert_eq!(a_agent.kafka.topic, "team-a-logs");
        assert_eq!(a_agent.kafka.brokers, agent.kafka.brokers);
        assert_eq!(a.timezone, base.timezone);
        assert_eq!(a.host_aliases, base.host_aliases);
    }

    #[test]
    fn namespace_switches_and_source_replacement() {
        let p = Policy::from_yaml(&fixture("overrides.yaml")).unwrap();
        assert_eq!(p.native_sidecar(), NativeSidecar::Enabled);
        let pvc = p.for_namespace("team-pvc").usrlib.clone().unwrap();
        assert_eq!(
            pvc.source,
            Some(VolumeSource::Pvc {
                claim_name: "team-jars".into()
            })
        );
        assert_eq!(pvc.mount_path, "/opt/flink/lib/usr");
        assert_eq!(pvc.sub_path.as_deref(), Some("shared"));
        assert_eq!(p.for_namespace("team-bare"), &Settings::default());
        assert_eq!(p.for_namespace("team-no-tz").timezone, None);
        assert!(p.for_namespace("team-no-tz").agent.is_some());
        assert_eq!(
            p.for_namespace("team-plain")
                .agent
                .as_ref()
                .unwrap()
                .native_sidecar,
            NativeSidecar::Disabled
        );
        let base = p.for_namespace("anything");
        let agent = base.agent.as_ref().unwrap();
        assert_eq!(agent.kafka.properties["linger.ms"], "50");
        assert_eq!(agent.kafka.properties["enable.idempotence"], "true");
        assert_eq!(agent.resources.requests["cpu"], "100m");
        assert_eq!(agent.resources.requests["memory"], "32Mi");
        assert_eq!(agent.resources.limits["cpu"], "1");
        assert_eq!(base.host_aliases[1].ip, "fd00::20");
    }

    #[test]
    fn absent_parts_are_off() {
        let p = Policy::from_yaml("{}").unwrap();
        assert_eq!(p.for_namespace("x"), &Settings::default());
        assert_eq!(p.native_sidecar(), NativeSidecar::Auto);
        let p = Policy::from_yaml("usrlib: {mountPath: /jars}").unwrap();
        let u = p.for_namespace("x").usrlib.clone().unwrap();
        assert_eq!((u.source, u.mount_path.as_str()), (None, "/jars"));
        let p = Policy::from_yaml("localtime: true\nnamespaces: {a: {localtime: false}}").unwrap();
        assert!(p.for_namespace("x").localtime);
        assert!(!p.for_namespace("a").localtime);
    }

    #[test]
    fn native_sidecar_values() {
        let agent = |v: &str| {
            format!(
                "agent: {{image: a, kafka: {{brokers: 'k:9092', topic: t}}, nativeSidecar: {v}}}"
            )
        };
        for (v, want) in [
            ("auto", NativeSidecar::Auto),
            ("true", NativeSidecar::Enabled),
            ("false", NativeSidecar::Disabled),
            ("'true'", NativeSidecar::Enabled),
        ] {
            assert_eq!(
                Policy::from_yaml(&agent(v)).unwrap().native_sidecar(),
                want,
                "{v}"
            );
        }
        let e = err(&agent("maybe"));
        assert!(
            e.contains("agent.nativeSidecar") && e.contains("\"maybe\""),
            "{e}"
        );
    }

    #[test]
    fn invalid_values_name_field_and_value() {
        let agent = "agent: {image: a, kafka: {brokers: 'k:9092', topic: t}}\n";
        let cases = [
            ("timezone: Mars/Olympus", "timezone: \"Mars/Olympus\" is not an IANA timezone"),
            ("hostAliases: [{ip: 10.0.0.256, hostnames: [a]}]", "hostAliases[0].ip: \"10.0.0.256\""),
            ("hostAliases: [{ip: 10.0.0.1, hostnames: [Not_DNS]}]", "hostAliases[0].hostnames: \"Not_DNS\""),
            ("hostAliases: [{ip: 10.0.0.1, hostnames: []}]", "hostAliases[0].hostnames"),
            ("usrlib: {nfs: {server: '', path: /x}}", "usrlib.nfs.server: \"\""),
            ("usrlib: {nfs: {server: s, path: rel/x}}", "usrlib.nfs.path: \"rel/x\" is not an absolute path"),
            ("usrlib: {nfs: {server: s, path: /x}, pvc: {claimName: c}}", "either nfs or pvc"),
            ("usrlib: {pvc: {claimName: Bad_Claim}}", "usrlib.pvc.claimName: \"Bad_Claim\""),
            ("usrlib: {nfs: {server: s, path: /x}, mountPath: jars}", "usrlib.mountPath: \"jars\""),
            ("usrlib: {nfs: {server: s, path: /x}, subPath: ../up}", "usrlib.subPath: \"../up\""),
            ("agent: {image: a, kafka: {brokers: '', topic: t}}", "agent.kafka.brokers: \"\""),
            ("agent: {image: a, kafka: {brokers: 'k:notaport', topic: t}}", "agent.kafka.brokers: \"k:notaport\""),
            ("agent: {image: a, kafka: {brokers: 'k:9092', topic: 'a/b'}}", "agent.kafka.topic: \"a/b\" is not a Kafka topic"),
            ("agent: {image: a, kafka: {brokers: 'k:9092'}}", "agent.kafka.topic: \"\""),
            ("agent: {kafka: {brokers: 'k:9092', topic: t}}", "agent.image: \"\""),
            ("agent: {image: a}", "agent.kafka: missing"),
            ("agent: {image: a, imagePullPolicy: Sometimes, kafka: {brokers: 'k:9092', topic: t}}", "agent.imagePullPolicy: \"Sometimes\""),
            ("agent: {image: a, flinkTaskMetrics: per-job, kafka: {brokers: 'k:9092', topic: t}}", "agent.flinkTaskMetrics: \"per-job\""),
            ("agent: {image: a, kafka: {brokers: 'k:9092', topic: t}, resources: {limits: {memory: lots}}}", "agent.resources.limits.memory: \"lots\""),
            ("agent: {image: a, kafka: {brokers: 'k:9092', topic: t, secretName: Bad_Secret}}", "agent.kafka.secretName: \"Bad_Secret\""),
        ];
        for (yaml, expected) in cases {
            let e = err(yaml);
            assert!(
                e.contains(expected),
                "{yaml}\n  gave: {e}\n  want: {expected}"
            );
        }
        // A bad value in a namespace override names the namespace.
        let e = err(&format!(
            "{agent}namespaces: {{team-b: {{timezone: Nowhere/City}}}}"
        ));
        assert!(
            e.contains("namespaces.team-b.timezone: \"Nowhere/City\""),
            "{e}"
        );
        let e = err(&format!(
            "{agent}namespaces: {{team-b: {{agent: {{kafka: {{topic: 'x y'}}}}}}}}"
        ));
        assert!(
            e.contains("namespaces.team-b.agent.kafka.topic: \"x y\""),
            "{e}"
        );
    }

    #[test]
    fn unknown_fields_and_bad_shapes_are_rejected() {
        for (yaml, expected) in [
            ("usrlb: {}", "unknown field `usrlb`"),
            (
                "usrlib: {nfs: {server: s, path: /x, readonly: true}}",
                "unknown field `readonly`",
            ),
            ("namespaces: {a: {agnet: {}}}", "unknown field `agnet`"),
            ("timezone: [UTC]", "timezone"),
            ("- a\n- b", "invalid type"),
            ("usrlib: {nfs: {server: s, path: /x}", "policy is not valid"),
        ] {
            let e = err(yaml);
            assert!(e.contains(expected), "{yaml}: {e}");
        }
    }

    #[test]
    fn load_reads_a_file_and_names_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, fixture("design.yaml")).unwrap();
        assert!(Policy::load(&path)
            .unwrap()
            .for_namespace("x")
            .agent
            .is_some());
        let missing = dir.path().join("nope.yaml");
        let e = Policy::load(&missing).unwrap_err();
        assert!(matches!(e, PolicyError::Read { .. }));
        assert!(e.to_string().contains("nope.yaml"), "{e}");
    }

    #[test]
    fn validators() {
        assert!(names::dns_subdomain("nn1.bigdata.internal").is_ok());
        for bad in ["", "UPPER", "a..b", "-a", "a-", "a_b", &"x".repeat(64)] {
            assert!(names::dns_subdomain(bad).is_err(), "{bad}");
        }
        for ok in ["t", "a.b_c-D", &"x".repeat(249)] {
            assert!(names::kafka_topic(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a/b", &"x".repeat(250)] {
            assert!(names::kafka_topic(bad).is_err(), "{bad}");
        }
        for ok in ["50m", "64Mi", "1", "0.5", "1e3", "2Gi"] {
            assert!(names::quantity(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Mi", "lots", "1MB", "-1"] {
            assert!(names::quantity(bad).is_err(), "{bad}");
        }
        for ok in ["k:9092", "a:1, b:2", "[::1]:9092"] {
            assert!(names::brokers(ok).is_ok(), "{ok}");
        }
        for bad in ["", "k", "k:", ":9092", "a:1,,b:2", "k:99999"] {
            assert!(names::brokers(bad).is_err(), "{bad}");
        }
    }
}
