//! Per-job overrides read from pod annotations (the table in DESIGN.md). Users set them through
//! `-Dkubernetes.jobmanager.annotations=...` and `-Dkubernetes.taskmanager.annotations=...`, so the
//! one who sees an error is a job author reading events: every error names the annotation, the
//! value and what was expected.
use chrono_tz::Tz;
use serde_json::{Map, Value};

use crate::policy::{self, names, HostAlias, VolumeSource};

pub const PREFIX: &str = "flink-injector.io/";
pub const INJECT: &str = "flink-injector.io/inject";
pub const USRLIB: &str = "flink-injector.io/usrlib";
pub const USRLIB_SUBPATH: &str = "flink-injector.io/usrlib-subpath";
pub const TIMEZONE: &str = "flink-injector.io/timezone";
pub const HOST_ALIASES: &str = "flink-injector.io/host-aliases";
pub const LOG_TOPIC: &str = "flink-injector.io/log-topic";
pub const AGENT: &str = "flink-injector.io/agent";
/// Written by the webhook: the comma list of parts it injected.
pub const INJECTED: &str = "flink-injector.io/injected";
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

const KNOWN: &[&str] = &[
    INJECT,
    USRLIB,
    USRLIB_SUBPATH,
    TIMEZONE,
    HOST_ALIASES,
    LOG_TOPIC,
    AGENT,
    INJECTED,
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}: {value:?} {problem}")]
pub struct AnnotationError {
    pub annotation: &'static str,
    pub value: String,
    /// Reads after the quoted value and says what was expected.
    pub problem: String,
}

fn error(annotation: &'static str, value: &str, problem: impl Into<String>) -> AnnotationError {
    AnnotationError {
        annotation,
        value: value.to_string(),
        problem: problem.into(),
    }
}

/// What the `usrlib` annotation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsrlibOverride {
    /// `none`: the job brings its own JARs.
    Skip,
    Source(VolumeSource),
}

/// The parsed overrides of one pod; `None` means the annotation is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub usrlib: Option<UsrlibOverride>,
    pub usrlib_sub_path: Option<String>,
    pub timezone: Option<Tz>,
    /// Added to the policy's.
    pub host_aliases: Vec<HostAlias>,
    pub log_topic: Option<String>,
    /// `Some(false)` skips the sidecar.
    pub agent: Option<bool>,
    /// Harmless oddities worth telling the user, such as a misspelt `flink-injector.io/` key.
    pub warnings: Vec<String>,
}

/// The pod's annotations, if it has any (TaskManager pods often have none).
pub fn of_pod(pod: &Value) -> Option<&Map<String, Value>> {
    pod.get("metadata")?.get("annotations")?.as_object()
}

fn get<'a>(
    annotations: Option<&'a Map<String, Value>>,
    key: &'static str,
) -> Result<Option<&'a str>, AnnotationError> {
    match annotations.and_then(|a| a.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(error(key, &other.to_string(), "is not a string")),
    }
}

fn boolean(key: &'static str, value: &str) -> Result<bool, AnnotationError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(error(
            key,
            value,
            "is not a boolean (expected \"true\" or \"false\")",
        )),
    }
}

/// `flink-injector.io/inject: "false"`. Checked before anything else, so that an opted-out pod is
/// admitted even if its other annotations are malformed.
pub fn opted_out(annotations: Option<&Map<String, Value>>) -> Result<bool, AnnotationError> {
    match get(annotations, INJECT)? {
        Some(v) => Ok(!boolean(INJECT, v)?),
        None => Ok(false),
    }
}

/// The parts recorded in `flink-injector.io/injected`, as written (unknown names kept).
pub fn injected(annotations: Option<&Map<String, Value>>) -> Vec<String> {
    annotations
        .and_then(|a| a.get(INJECTED))
        .and_then(Value::as_str)
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub fn parse(annotations: Option<&Map<String, Value>>) -> Result<Overrides, AnnotationError> {
    let mut out = Overrides::default();
    if let Some(v) = get(annotations, USRLIB)? {
        out.usrlib = Some(usrlib(v)?);
    }
    if let Some(v) = get(annotations, USRLIB_SUBPATH)? {
        names::sub_path(v.trim()).map_err(|m| error(USRLIB_SUBPATH, v, m))?;
        out.usrlib_sub_path = Some(v.trim().to_string());
    }
    if let Some(v) = get(annotations, TIMEZONE)? {
        out.timezone = Some(names::timezone(v.trim()).map_err(|m| error(TIMEZONE, v, m))?);
    }
    if let Some(v) = get(annotations, HOST_ALIASES)? {
        out.host_aliases = host_aliases(v)?;
    }
    if let Some(v) = get(annotations, LOG_TOPIC)? {
        names::kafka_topic(v.trim()).map_err(|m| error(LOG_TOPIC, v, m))?;
        out.log_topic = Some(v.trim().to_string());
    }
    if let Some(v) = get(annotations, AGENT)? {
        out.agent = Some(boolean(AGENT, v)?);
    }
    for key in annotations.into_iter().flat_map(|a| a.keys()) {
        if key.starts_with(PREFIX) && !KNOWN.contains(&key.as_str()) {
            out.warnings.push(format!(
                "annotation {key} is not one flink-injector knows; ignored (known: {})",
                KNOWN.join(", ")
            ));
        }
    }
    Ok(out)
}

const USRLIB_EXPECTED: &str =
    "(expected \"nfs-server:/export/path\", \"pvc:claim-name\" or \"none\")";

fn usrlib(value: &str) -> Result<UsrlibOverride, AnnotationError> {
    let v = value.trim();
    if v == "none" {
        return Ok(UsrlibOverride::Skip);
    }
    if let Some(claim) = v.strip_prefix("pvc:") {
        names::dns_subdomain(claim).map_err(|_| {
            error(
                USRLIB,
                value,
                format!("does not name a valid PVC {USRLIB_EXPECTED}"),
            )
        })?;
        return Ok(UsrlibOverride::Source(VolumeSource::Pvc {
            claim_name: claim.to_string(),
        }));
    }
    // Split at ":/" rather than ':' so that an IPv6 server address keeps its colons.
    let Some((server, path)) = v.split_once(":/") else {
        return Err(error(
            USRLIB,
            value,
            format!("is not an NFS or PVC source {USRLIB_EXPECTED}"),
        ));
    };
    policy::nfs_source(server.to_string(), format!("/{path}"), USRLIB)
        .map(UsrlibOverride::Source)
        .map_err(|_| {
            error(
                USRLIB,
                value,
                format!("is not an NFS or PVC source {USRLIB_EXPECTED}"),
            )
        })
}

const HOST_ALIASES_EXPECTED: &str = "(expected e.g. \"10.0.0.1=a,b;10.0.0.2=c\")";

fn host_aliases(value: &str) -> Result<Vec<HostAlias>, AnnotationError> {
    let mut out = Vec::new();
    for entry in value.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((ip, names)) = entry.split_once('=') else {
            return Err(error(
                HOST_ALIASES,
                value,
                format!("has an entry {entry:?} without '=' {HOST_ALIASES_EXPECTED}"),
            ));
        };
        // Spaces are accepted too, because commas must be quoted in Flink's annotation option.
        let hostnames: Vec<String> = names
            .split([',', ' ', '\t'])
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        let ip = ip.trim();
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(error(
                HOST_ALIASES,
                value,
                format!("has {ip:?}, which is not an IP address {HOST_ALIASES_EXPECTED}"),
            ));
        }
        if hostnames.is_empty() {
            return Err(error(
                HOST_ALIASES,
                value,
                format!("has no hostnames for {ip} {HOST_ALIASES_EXPECTED}"),
            ));
        }
        if let Some(bad) = hostnames.iter().find(|h| names::dns_subdomain(h).is_err()) {
            return Err(error(
                HOST_ALIASES,
                value,
                format!("has {bad:?}, which is not a DNS name {HOST_ALIASES_EXPECTED}"),
            ));
        }
        let alias = HostAlias {
            ip: ip.to_string(),
            hostnames,
        };
        out.push(alias);
    }
    if out.is_empty() {
        return Err(error(
            HOST_ALIASES,
            value,
            format!("has no entries {HOST_ALIASES_EXPECTED}"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect()
    }

    #[test]
    fn no_annotations_means_no_overrides() {
        assert_eq!(parse(None).unwrap(), Overrides::default());
        assert!(!opted_out(None).unwrap());
        assert!(injected(None).is_empty());
    }

    #[test]
    fn every_annotation_parses() {
        let a = map(&[
            (USRLIB, "nfs.team:/exports/jars"),
            (USRLIB_SUBPATH, "job/1.0"),
            (TIMEZONE, "Europe/Berlin"),
            (HOST_ALIASES, " 10.0.0.1=a,b ; fd00::2=c ;"),
            (LOG_TOPIC, "team-logs"),
            (AGENT, "False"),
        ]);
        let o = parse(Some(&a)).unwrap();
        assert_eq!(
            o.usrlib,
            Some(UsrlibOverride::Source(VolumeSource::Nfs {
                server: "nfs.team".into(),
                path: "/exports/jars".into()
            }))
        );
        assert_eq!(o.usrlib_sub_path.as_deref(), Some("job/1.0"));
        assert_eq!(o.timezone.map(|t| t.name()), Some("Europe/Berlin"));
        assert_eq!(
            o.host_aliases,
            vec![
                HostAlias {
                    ip: "10.0.0.1".into(),
                    hostnames: vec!["a".into(), "b".into()]
                },
                HostAlias {
                    ip: "fd00::2".into(),
                    hostnames: vec!["c".into()]
                },
            ]
        );
        assert_eq!(o.log_topic.as_deref(), Some("team-logs"));
        assert_eq!(o.agent, Some(false));
        assert!(o.warnings.is_empty());
    }

    #[test]
    fn usrlib_forms() {
        let one = |v: &str| parse(Some(&map(&[(USRLIB, v)]))).map(|o| o.usrlib);
        assert_eq!(one("none"), Ok(Some(UsrlibOverride::Skip)));
        assert_eq!(
            one("pvc:jars"),
            Ok(Some(UsrlibOverride::Source(VolumeSource::Pvc {
                claim_name: "jars".into()
            })))
        );
        let e = one("jars").unwrap_err();
        assert_eq!(e.annotation, USRLIB);
        assert_eq!(e.value, "jars");
        assert_eq!(
            e.to_string(),
            "annotation flink-injector.io/usrlib: \"jars\" is not an NFS or PVC source \
             (expected \"nfs-server:/export/path\", \"pvc:claim-name\" or \"none\")"
        );
    }

    #[test]
    fn opt_out_and_injected_list() {
        assert!(opted_out(Some(&map(&[(INJECT, "false")]))).unwrap());
        assert!(!opted_out(Some(&map(&[(INJECT, "true")]))).unwrap());
        let e = opted_out(Some(&map(&[(INJECT, "nope")]))).unwrap_err();
        assert!(e.to_string().contains("flink-injector.io/inject: \"nope\""));
        assert_eq!(
            injected(Some(&map(&[(INJECTED, "usrlib, agent,,future-part")]))),
            ["usrlib", "agent", "future-part"]
        );
    }

    #[test]
    fn non_string_values_are_malformed() {
        let mut a = Map::new();
        a.insert(TIMEZONE.into(), json!(5));
        let e = parse(Some(&a)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "annotation flink-injector.io/timezone: \"5\" is not a string"
        );
    }
}
