//! Read-only questions about a pod as JSON. Everything tolerates absent or null fields, since
//! admission sees pods before defaulting and TaskManager pods carry very little.
use serde_json::Value;

use super::editor::Path;

pub const MAIN_CONTAINER: &str = "flink-main-container";

/// The two container lists the webhook touches, in the order the kubelet starts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Init,
    Main,
}

impl List {
    pub const ALL: [List; 2] = [List::Init, List::Main];

    pub fn key(self) -> &'static str {
        match self {
            List::Init => "initContainers",
            List::Main => "containers",
        }
    }

    pub fn path(self) -> Path {
        Path::new(&["spec", self.key()])
    }
}

fn array(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

pub fn containers(pod: &Value, list: List) -> &[Value] {
    array(pod.get("spec").and_then(|s| s.get(list.key())))
}

/// A container's place, by name (`flink-main-container` is last in pods built from a template).
pub fn find_container(pod: &Value, name: &str) -> Option<(List, usize)> {
    List::ALL.into_iter().find_map(|list| {
        containers(pod, list)
            .iter()
            .position(|c| str_field(c, "name") == Some(name))
            .map(|i| (list, i))
    })
}

/// The main container's index in `spec.containers`.
pub fn main_container(pod: &Value) -> Option<usize> {
    containers(pod, List::Main)
        .iter()
        .position(|c| str_field(c, "name") == Some(MAIN_CONTAINER))
}

pub fn container_path(list: List, index: usize) -> Path {
    list.path().join(index)
}

pub fn volume_names(pod: &Value) -> impl Iterator<Item = &str> {
    array(pod.get("spec").and_then(|s| s.get("volumes")))
        .iter()
        .filter_map(|v| str_field(v, "name"))
}

pub fn has_volume(pod: &Value, name: &str) -> bool {
    volume_names(pod).any(|v| v == name)
}

/// Paths compare equal regardless of a trailing slash, as they do for the kubelet.
pub fn same_path(a: &str, b: &str) -> bool {
    let trim = |p: &str| {
        let t = p.trim_end_matches('/');
        if t.is_empty() && p.starts_with('/') {
            "/".to_string()
        } else {
            t.to_string()
        }
    };
    trim(a) == trim(b)
}

/// The volume already mounted at `path` in `container`, if any.
pub fn mount_at<'a>(container: &'a Value, path: &str) -> Option<&'a str> {
    array(container.get("volumeMounts"))
        .iter()
        .find(|m| str_field(m, "mountPath").is_some_and(|p| same_path(p, path)))
        .map(|m| str_field(m, "name").unwrap_or("?"))
}

pub enum Env<'a> {
    Absent,
    Literal(&'a str),
    /// Set from a field, secret or config map: a value the webhook cannot see.
    Indirect,
}

pub fn env<'a>(container: &'a Value, name: &str) -> Env<'a> {
    match array(container.get("env"))
        .iter()
        .find(|e| str_field(e, "name") == Some(name))
    {
        None => Env::Absent,
        Some(e) => match (str_field(e, "value"), e.get("valueFrom")) {
            (_, Some(from)) if !from.is_null() => Env::Indirect,
            (value, _) => Env::Literal(value.unwrap_or("")),
        },
    }
}

pub fn has_env_from(container: &Value) -> bool {
    !array(container.get("envFrom")).is_empty()
}

pub fn container_name(container: &Value) -> &str {
    str_field(container, "name").unwrap_or("?")
}

/// Every port any container declares: they share one network namespace.
pub fn declares_port(pod: &Value, port: i64) -> Option<&str> {
    List::ALL.into_iter().find_map(|list| {
        containers(pod, list)
            .iter()
            .find(|c| {
                array(c.get("ports"))
                    .iter()
                    .any(|p| p.get("containerPort").and_then(Value::as_i64) == Some(port))
            })
            .map(container_name)
    })
}

pub fn restart_policy(pod: &Value) -> Option<&str> {
    pod.get("spec")?.get("restartPolicy")?.as_str()
}
