//! A stand-in Kubernetes API server for the missed-injection detector: the one part that cannot
//! run here. It answers only with what a real kube-apiserver v1.28 answered
//! (`tests/fixtures/apiserver/`), reshaped where the request asks for it (metadata only, a list
//! of N pods in the recorded shape), keeps a Lease with the server's optimistic concurrency, and
//! records every request so tests can compare them with the recorded ones.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::channel::{Channel, Sender};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::fixture;

type Body = http_body_util::Either<Full<Bytes>, Channel<Bytes, Infallible>>;

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub accept: String,
    pub body: Option<Value>,
}

impl Seen {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    pub fn is_watch(&self) -> bool {
        self.param("watch") == Some("true") || self.param("watch") == Some("1")
    }
}

/// What one watch of pods streams, in order, then ends (the watcher lists again or rewatches).
pub enum Step {
    /// A watch event line.
    Line(Value),
    /// Stop sending until [`StandIn::release`] is called.
    Gate,
}

/// How the stand-in answers.
pub struct Script {
    /// Pods (whole, as recorded) for the successive LISTs; the last one repeats.
    pub pod_lists: VecDeque<Vec<Value>>,
    /// Steps for the successive pod WATCHes; after the last one, watches stay open and silent.
    pub pod_watches: VecDeque<Vec<Step>>,
    /// The namespaces list (whole, as recorded).
    pub namespaces: Vec<Value>,
    /// Answer every pod and namespace LIST with the recorded 403 (a ServiceAccount without RBAC).
    pub forbidden: bool,
    /// The Lease's creationTimestamp when it is created (the detector's install time).
    pub lease_created: String,
    /// A Lease that exists before anyone asks (the detector was installed earlier).
    pub lease: Option<Value>,
}

#[derive(Default)]
struct LeaseStore {
    lease: Option<Value>,
    version: u64,
}

struct Shared {
    script: Mutex<Script>,
    seen: Mutex<Vec<Seen>>,
    lease: Mutex<LeaseStore>,
    gate: Notify,
    /// The list being paged through.
    listing: Mutex<Arc<Vec<Value>>>,
    /// Watches kept open must end when the stand-in does.
    held: Mutex<Vec<Sender<Bytes, Infallible>>>,
}

pub struct StandIn {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The recorded pods (whole), the recorded opted-in namespaces, and the recorded Lease's time.
pub fn recorded_script() -> Result<Script> {
    let list: Value = serde_json::from_slice(&fixture("apiserver/list-pods.json")?)?;
    let namespaces: Value =
        serde_json::from_slice(&fixture("apiserver/list-namespaces-opted-in.json")?)?;
    let lease: Value = serde_json::from_slice(&fixture("apiserver/lease-created.json")?)?;
    Ok(Script {
        pod_lists: VecDeque::from([items(&list)]),
        pod_watches: VecDeque::new(),
        namespaces: items(&namespaces),
        forbidden: false,
        lease: None,
        lease_created: lease["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The lines of a recorded watch stream.
pub fn watch_lines(rel: &str) -> Result<Vec<Value>> {
    let text = String::from_utf8(fixture(rel)?)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("a line of {rel}")))
        .collect()
}

/// A kubeconfig for a client of `standin`.
pub fn write_kubeconfig(path: &Path, addr: SocketAddr) -> Result<()> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: http://{addr}\n\
         users:\n- name: webhook\n  user:\n    token: standin-token\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: webhook\n\
         current-context: standin\n"
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

impl StandIn {
    pub async fn start(script: Script) -> Result<StandIn> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let preset = LeaseStore {
            lease: script.lease.clone(),
            version: 0,
        };
        let shared = Arc::new(Shared {
            script: Mutex::new(script),
            seen: Mutex::new(Vec::new()),
            lease: Mutex::new(preset),
            gate: Notify::new(),
            listing: Mutex::new(Arc::new(Vec::new())),
            held: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(answer(&s, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(StandIn { addr, shared, task })
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// Lets a watch waiting at a [`Step::Gate`] go on.
    pub fn release(&self) {
        self.shared.gate.notify_one();
    }

    /// The Lease as stored now.
    pub fn lease(&self) -> Option<Value> {
        lock(&self.shared.lease).lease.clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(http_body_util::Either::Left(Full::new(Bytes::from(
        v.to_string(),
    ))));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// As the API server answers `Accept: ...;as=PartialObjectMetadata(List)`: metadata only.
fn as_metadata(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
           "metadata": object["metadata"].clone()})
}

fn list_body(kind: &str, items: &[Value], metadata_only: bool, rv: &str) -> Value {
    if metadata_only {
        json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
               "metadata": {"resourceVersion": rv},
               "items": items.iter().map(as_metadata).collect::<Vec<_>>()})
    } else {
        json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items})
    }
}

async fn answer(s: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let accept = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .ok()
        .map(|b| b.to_bytes())
        .filter(|b| !b.is_empty())
        .and_then(|b| serde_json::from_slice(&b).ok());
    let seen = Seen {
        method: method.clone(),
        path: path.clone(),
        query,
        accept: accept.clone(),
        body: body.clone(),
    };
    lock(&s.seen).push(seen.clone());
    let metadata_only = accept.contains("as=PartialObjectMetadata");

    if path == "/version" {
        return match fixture("apiserver/version.json")
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        {
            Some(v) => json_response(StatusCode::OK, &v),
            None => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({})),
        };
    }
    let pods_of = path
        .strip_prefix("/api/v1/namespaces/")
        .and_then(|rest| rest.strip_suffix("/pods"))
        .map(str::to_string);
    if (path == "/api/v1/pods" || pods_of.is_some()) && method == "GET" {
        if lock(&s.script).forbidden {
            return forbidden("pods");
        }
        if seen.is_watch() {
            return pod_watch(s, metadata_only);
        }
        // A list's first page picks the script's next list; its other pages read the same one.
        let pods = if seen.param("continue").is_none() {
            let mut script = lock(&s.script);
            let next = if script.pod_lists.len() > 1 {
                script.pod_lists.pop_front().unwrap_or_default()
            } else {
                script.pod_lists.front().cloned().unwrap_or_default()
            };
            // A namespaced list: the same pods, those of that namespace.
            let next: Vec<Value> = next
                .into_iter()
                .filter(|p| {
                    pods_of
                        .as_ref()
                        .is_none_or(|ns| p["metadata"]["namespace"] == **ns)
                })
                .collect();
            let next = Arc::new(next);
            *lock(&s.listing) = next.clone();
            next
        } else {
            lock(&s.listing).clone()
        };
        // Pages as the API server cuts them for `limit`, the offset as the continue token.
        let from: usize = seen
            .param("continue")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let limit: usize = seen
            .param("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let to = from.saturating_add(limit).min(pods.len());
        let mut body = list_body(
            "PodList",
            pods.get(from.min(to)..to).unwrap_or_default(),
            metadata_only,
            "2125",
        );
        if to < pods.len() {
            body["metadata"]["continue"] = json!(to.to_string());
        }
        return json_response(StatusCode::OK, &body);
    }
    if path == "/api/v1/namespaces" && method == "GET" {
        if lock(&s.script).forbidden {
            return forbidden("namespaces");
        }
        if seen.is_watch() {
            return hold_open(s);
        }
        let namespaces = lock(&s.script).namespaces.clone();
        return json_response(
            StatusCode::OK,
            &list_body("NamespaceList", &namespaces, metadata_only, "2125"),
        );
    }
    if let Some(ns) = path
        .strip_prefix("/apis/events.k8s.io/v1/namespaces/")
        .and_then(|rest| rest.strip_suffix("/events"))
    {
        if method == "POST" {
            // As the API server stores it (event-created.json): the request plus server fields.
            let mut created = body.unwrap_or_else(|| json!({}));
            created["metadata"]["namespace"] = json!(ns);
            created["metadata"]["uid"] = json!("7cdeabcd-e844-4b81-9bb8-50546cb27e8b");
            created["metadata"]["resourceVersion"] = json!("2127");
            return json_response(StatusCode::CREATED, &created);
        }
    }
    if let Some(rest) = path.strip_prefix("/apis/coordination.k8s.io/v1/namespaces/") {
        return lease(s, &method, rest, body);
    }
    json_response(
        StatusCode::NOT_FOUND,
        &status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    )
}

/// The recorded 403 for pods; for namespaces the same with the resource named as the server would.
fn forbidden(resource: &str) -> Response<Body> {
    match fixture("apiserver/forbidden-list-pods.json")
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    {
        Some(mut v) => {
            if resource != "pods" {
                let message = v["message"]
                    .as_str()
                    .unwrap_or_default()
                    .replace("pods", resource);
                v["message"] = json!(message);
                v["details"]["kind"] = json!(resource);
            }
            json_response(StatusCode::FORBIDDEN, &v)
        }
        None => json_response(
            StatusCode::FORBIDDEN,
            &status(403, "Forbidden", "forbidden"),
        ),
    }
}

fn streaming() -> (Sender<Bytes, Infallible>, Response<Body>) {
    let (tx, body) = Channel::<Bytes, Infallible>::new(16);
    let mut r = Response::new(http_body_util::Either::Right(body));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    (tx, r)
}

/// A watch that sends nothing until the stand-in ends (the client's timeoutSeconds ends it first
/// in a long test, and it watches again).
fn hold_open(s: &Arc<Shared>) -> Response<Body> {
    let (tx, r) = streaming();
    lock(&s.held).push(tx);
    r
}

fn pod_watch(s: &Arc<Shared>, metadata_only: bool) -> Response<Body> {
    let steps = lock(&s.script).pod_watches.pop_front();
    let Some(steps) = steps else {
        return hold_open(s);
    };
    let (mut tx, r) = streaming();
    let s = s.clone();
    tokio::spawn(async move {
        for step in steps {
            match step {
                Step::Gate => s.gate.notified().await,
                Step::Line(mut line) => {
                    let is_object = line["object"]["kind"] != "Status";
                    if metadata_only && is_object {
                        line["object"] = as_metadata(&line["object"]);
                    }
                    let text = format!("{line}\n");
                    if tx.send_data(Bytes::from(text)).await.is_err() {
                        return;
                    }
                    // One line a chunk, as the server flushes each event.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        // Dropping the sender ends the response: the watch is over.
    });
    r
}

fn lease(s: &Arc<Shared>, method: &str, rest: &str, body: Option<Value>) -> Response<Body> {
    let mut parts = rest.split('/');
    let ns = parts.next().unwrap_or_default().to_string();
    let name = parts.nth(1);
    let created_at = lock(&s.script).lease_created.clone();
    let mut store = lock(&s.lease);
    match (method, name) {
        ("GET", Some(_)) => match &store.lease {
            Some(l) => json_response(StatusCode::OK, l),
            None => json_response(
                StatusCode::NOT_FOUND,
                &status(
                    404,
                    "NotFound",
                    "leases.coordination.k8s.io \"flink-injector-detector\" not found",
                ),
            ),
        },
        ("POST", None) => {
            if store.lease.is_some() {
                // lease-conflict.txt: AlreadyExists, as kubectl printed the server's Status.
                return json_response(
                    StatusCode::CONFLICT,
                    &status(
                        409,
                        "AlreadyExists",
                        "leases.coordination.k8s.io \"flink-injector-detector\" already exists",
                    ),
                );
            }
            store.version += 1;
            let mut lease = body.unwrap_or_else(|| json!({}));
            lease["metadata"]["namespace"] = json!(ns);
            lease["metadata"]["creationTimestamp"] = json!(created_at);
            lease["metadata"]["uid"] = json!("2f63a0de-f8fe-477e-8960-8ac0a4263929");
            lease["metadata"]["resourceVersion"] = json!(format!("{}", 2128 + store.version));
            store.lease = Some(lease.clone());
            json_response(StatusCode::CREATED, &lease)
        }
        ("PUT", Some(_)) => {
            let mut lease = body.unwrap_or_else(|| json!({}));
            let current_rv = store
                .lease
                .as_ref()
                .map(|l| l["metadata"]["resourceVersion"].clone());
            if current_rv != Some(lease["metadata"]["resourceVersion"].clone()) {
                return json_response(
                    StatusCode::CONFLICT,
                    &status(
                        409,
                        "Conflict",
                        "Operation cannot be fulfilled on leases.coordination.k8s.io \"flink-injector-detector\": the object has been modified; please apply your changes to the latest version and try again",
                    ),
                );
            }
            store.version += 1;
            lease["metadata"]["resourceVersion"] = json!(format!("{}", 2128 + store.version));
            store.lease = Some(lease.clone());
            json_response(StatusCode::OK, &lease)
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &status(405, "MethodNotAllowed", "not served by the stand-in"),
        ),
    }
}
