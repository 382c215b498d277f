//! The user-JAR volume, the hostAliases and the timezone parts. Each checks for conflicts first
//! and edits afterwards; the caller runs it in a transaction so an error leaves nothing behind.
use serde_json::{json, Value};

use super::editor::{Editor, Path};
use super::pod::{self, Env, List, MAIN_CONTAINER};
use super::SkipReason;
use crate::policy::{HostAlias, VolumeSource};

pub const USRLIB_VOLUME: &str = "flink-usrlib";

fn conflict(reason: String) -> SkipReason {
    SkipReason::Conflict(reason)
}

pub fn no_main_container() -> SkipReason {
    conflict(format!("the pod has no container named {MAIN_CONTAINER}"))
}

/// The usrlib part after policy and annotation are combined.
#[derive(Debug, Clone)]
pub struct Usrlib {
    pub source: VolumeSource,
    pub mount_path: String,
    pub sub_path: Option<String>,
}

pub fn usrlib(ed: &mut Editor, want: &Usrlib) -> Result<(), SkipReason> {
    let main = pod::main_container(ed.pod()).ok_or_else(no_main_container)?;
    if pod::has_volume(ed.pod(), USRLIB_VOLUME) {
        return Err(conflict(format!(
            "the pod already has a volume named {USRLIB_VOLUME}"
        )));
    }
    let main_path = pod::container_path(List::Main, main);
    if let Some(other) = ed
        .get(&main_path)
        .and_then(|c| pod::mount_at(c, &want.mount_path))
    {
        return Err(conflict(format!(
            "{MAIN_CONTAINER} already mounts volume {other} at {}",
            want.mount_path
        )));
    }
    let volume = match &want.source {
        VolumeSource::Nfs { server, path } => json!({
            "name": USRLIB_VOLUME,
            "nfs": {"server": server, "path": path, "readOnly": true},
        }),
        VolumeSource::Pvc { claim_name } => json!({
            "name": USRLIB_VOLUME,
            "persistentVolumeClaim": {"claimName": claim_name, "readOnly": true},
        }),
    };
    let mut mount = json!({"name": USRLIB_VOLUME, "mountPath": want.mount_path, "readOnly": true});
    if let Some(sub) = &want.sub_path {
        mount["subPath"] = json!(sub);
    }
    ed.append(&Path::new(&["spec", "volumes"]), volume)?;
    ed.append(&main_path.join("volumeMounts"), mount)?;
    Ok(())
}

/// Merges entries with the same IP, keeping first-seen order of IPs and of names.
pub fn merge_aliases(lists: &[&[HostAlias]]) -> Vec<HostAlias> {
    let mut out: Vec<HostAlias> = Vec::new();
    for alias in lists.iter().flat_map(|l| l.iter()) {
        match out.iter_mut().find(|a| same_ip(&a.ip, &alias.ip)) {
            Some(existing) => {
                for h in &alias.hostnames {
                    if !existing.hostnames.contains(h) {
                        existing.hostnames.push(h.clone());
                    }
                }
            }
            None => out.push(alias.clone()),
        }
    }
    out
}

/// `10.0.0.1` and `::ffff:10.0.0.1`-style spellings differ as text but not as addresses.
fn same_ip(a: &str, b: &str) -> bool {
    match (a.parse::<std::net::IpAddr>(), b.parse::<std::net::IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn alias_strings(entry: &Value) -> (&str, Vec<&str>) {
    let ip = entry.get("ip").and_then(Value::as_str).unwrap_or("");
    let names = entry
        .get("hostnames")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    (ip, names)
}

pub fn host_aliases(
    ed: &mut Editor,
    want: &[HostAlias],
    warnings: &mut Vec<String>,
) -> Result<(), SkipReason> {
    let list = Path::new(&["spec", "hostAliases"]);
    for alias in want {
        let existing: Vec<Value> = ed
            .get(&list)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut new_names = Vec::new();
        for name in &alias.hostnames {
            let mapped = existing
                .iter()
                .map(alias_strings)
                .find(|(_, names)| names.contains(&name.as_str()));
            match mapped {
                Some((ip, _)) if same_ip(ip, &alias.ip) => {}
                // The pod's own mapping comes first in /etc/hosts and wins; say so.
                Some((ip, _)) => warnings.push(format!(
                    "hostAlias {name} -> {} not added: the pod already maps {name} to {ip}",
                    alias.ip
                )),
                None => new_names.push(name.clone()),
            }
        }
        if new_names.is_empty() {
            continue;
        }
        let same = existing
            .iter()
            .position(|e| same_ip(alias_strings(e).0, &alias.ip));
        match same {
            Some(i) => {
                let names = list.join(i).join("hostnames");
                for name in new_names {
                    ed.append(&names, json!(name))?;
                }
            }
            None => ed.append(&list, json!({"ip": alias.ip, "hostnames": new_names}))?,
        }
    }
    Ok(())
}

pub const LOCALTIME_VOLUME: &str = "flink-localtime";
const LOCALTIME: &str = "/etc/localtime";

/// `localtime`: also mount the node's zone file at /etc/localtime where the part sets TZ.
pub fn timezone(
    ed: &mut Editor,
    tz: &str,
    localtime: bool,
    warnings: &mut Vec<String>,
) -> Result<(), SkipReason> {
    if localtime && pod::has_volume(ed.pod(), LOCALTIME_VOLUME) {
        return Err(conflict(format!(
            "the pod already has a volume named {LOCALTIME_VOLUME}"
        )));
    }
    let mut mounted = false;
    for list in List::ALL {
        let count = pod::containers(ed.pod(), list).len();
        for i in 0..count {
            let path = pod::container_path(list, i);
            let Some(container) = ed.get(&path) else {
                continue;
            };
            if !matches!(pod::env(container, "TZ"), Env::Absent) {
                continue;
            }
            // An explicit env entry beats envFrom, so adding TZ could override a TZ that a
            // ConfigMap or Secret sets and that the webhook cannot see.
            if pod::has_env_from(container) {
                warnings.push(format!(
                    "TZ not set on container {}: it uses envFrom, which may set TZ",
                    pod::container_name(container)
                ));
                continue;
            }
            let free = pod::mount_at(container, LOCALTIME).is_none();
            ed.append(&path.join("env"), json!({"name": "TZ", "value": tz}))?;
            if localtime && free {
                let mount =
                    json!({"name": LOCALTIME_VOLUME, "mountPath": LOCALTIME, "readOnly": true});
                ed.append(&path.join("volumeMounts"), mount)?;
                mounted = true;
            }
        }
    }
    if mounted {
        let volume = json!({
            "name": LOCALTIME_VOLUME,
            "hostPath": {"path": format!("/usr/share/zoneinfo/{tz}"), "type": "File"},
        });
        ed.append(&Path::new(&["spec", "volumes"]), volume)?;
    }
    Ok(())
}
