//! The detector at run time: metadata watches on Flink pods and opted-in namespaces (kube's
//! watcher: list then watch, bookmarks, a fresh list after `410 Expired`, backoff on errors), the
//! inventory they feed, the gauge it publishes, and the Events the Lease holder sends.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::mpsc;

use crate::metrics::{Metrics, PodGroupLabels};
use crate::state::AppState;

use super::events;
use super::inventory::{Inventory, Newly};
use super::judge::facts_from_meta;
use super::lease::Elector;

/// The label every pod of Flink's native Kubernetes integration carries.
pub const POD_SELECTOR: &str = "type=flink-native-kubernetes";

#[derive(Debug, Clone)]
pub struct DetectorConfig {
    /// Namespaces the webhook serves: the MutatingWebhookConfiguration's namespaceSelector.
    pub namespace_selector: String,
    /// Where the Lease lives (the webhook's own namespace).
    pub lease_namespace: String,
    /// This replica's name in the Lease and in `reportingInstance`.
    pub identity: String,
}

/// How long the watch waits for the Lease to say when the detector was installed: pods created
/// before that are not reported, and judging them before knowing would report them once.
const INSTALL_TIME_WAIT: Duration = Duration::from_secs(5);
/// The policy may be reloaded while no pod changes: verdicts are judged again this often.
const REJUDGE_EVERY: Duration = Duration::from_secs(10);
/// The same watch error is logged again after this long, not on every retry.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(300);

enum ToReporter {
    Report(Newly),
    Forget(String),
}

/// Runs until the process ends. Never returns an error: a detector that cannot reach or may not
/// read the API server says so in its log and in `flink_webhook_detector_synced`, and keeps
/// trying, while the webhook goes on admitting pods.
pub async fn run(client: kube::Client, state: Arc<AppState>, config: DetectorConfig) {
    let leader = Arc::new(AtomicBool::new(false));
    let (install_tx, mut install_rx) = tokio::sync::watch::channel(None);
    let elector = Elector::new(client.clone(), &config.lease_namespace, &config.identity);
    tokio::spawn(elector.run(leader.clone(), install_tx));
    let _ = tokio::time::timeout(INSTALL_TIME_WAIT, install_rx.wait_for(Option::is_some)).await;
    let install_time = *install_rx.borrow_and_update();

    let (to_reporter, reports) = mpsc::unbounded_channel();
    tokio::spawn(report(
        client.clone(),
        reports,
        leader.clone(),
        state.clone(),
        config.identity.clone(),
    ));

    // PartialObjectMeta: the API server sends metadata only, which is all the judgement reads.
    let pods = watcher(
        Api::<PartialObjectMeta<Pod>>::all(client.clone()),
        watcher::Config::default().labels(POD_SELECTOR),
    )
    .default_backoff();
    let namespaces = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client),
        watcher::Config::default().labels(&config.namespace_selector),
    )
    .default_backoff();
    tokio::pin!(pods);
    tokio::pin!(namespaces);

    let metrics = &state.metrics;
    let mut inv = Inventory::new(install_time);
    let mut policy = state.policy();
    let mut published: HashSet<(String, String)> = HashSet::new();
    let mut pod_buffer = Vec::new();
    let mut ns_buffer = HashSet::new();
    let (mut pods_synced, mut ns_synced) = (false, false);
    let mut errors = ErrorLog::default();
    let mut was_leader = false;
    let mut tick = tokio::time::interval(REJUDGE_EVERY.min(super::lease::RENEW_EVERY));
    let mut last_rejudge = Instant::now();
    tracing::info!(pods = POD_SELECTOR, namespaces = %config.namespace_selector,
        install_time = ?install_time, "missed-injection detector watching");

    loop {
        let mut newly = Vec::new();
        tokio::select! {
            item = pods.next() => match item {
                None => break,
                Some(Err(e)) => {
                    metrics.detector_synced.set(0);
                    errors.log("pods", &e);
                }
                Some(Ok(event)) => {
                    // Init opens every attempt, a failing one too: only what follows shows it works.
                    if !matches!(event, Event::Init) {
                        errors.clear("pods");
                    }
                    match event {
                        Event::Init => pod_buffer.clear(),
                        Event::InitApply(p) => pod_buffer.push(facts_from_meta(&p.metadata)),
                        Event::InitDone => {
                            newly = inv.replace_pods(&policy, std::mem::take(&mut pod_buffer));
                            pods_synced = true;
                        }
                        Event::Apply(p) => newly.extend(inv.apply(&policy, facts_from_meta(&p.metadata))),
                        Event::Delete(p) => {
                            let f = facts_from_meta(&p.metadata);
                            inv.delete(&f.namespace, &f.name);
                            let _ = to_reporter.send(ToReporter::Forget(f.uid));
                        }
                    }
                }
            },
            item = namespaces.next() => match item {
                None => break,
                Some(Err(e)) => {
                    metrics.detector_synced.set(0);
                    errors.log("namespaces", &e);
                }
                Some(Ok(event)) => {
                    if !matches!(event, Event::Init) {
                        errors.clear("namespaces");
                    }
                    match event {
                        Event::Init => ns_buffer.clear(),
                        Event::InitApply(n) => { ns_buffer.insert(n.metadata.name.unwrap_or_default()); }
                        Event::InitDone => {
                            newly = inv.set_namespaces(std::mem::take(&mut ns_buffer));
                            ns_synced = true;
                        }
                        // The selector matches: a DELETED is also a namespace whose label went.
                        Event::Apply(n) => newly = inv.namespace_opted_in(&n.metadata.name.unwrap_or_default(), true),
                        Event::Delete(n) => newly = inv.namespace_opted_in(&n.metadata.name.unwrap_or_default(), false),
                    }
                }
            },
            _ = tick.tick() => {
                errors.expire();
                let current = state.policy();
                let time_now = *install_rx.borrow_and_update();
                if !Arc::ptr_eq(&current, &policy) || time_now != install_time && time_now.is_some() || last_rejudge.elapsed() >= REJUDGE_EVERY * 6 {
                    policy = current;
                    if let Some(t) = time_now {
                        inv.set_install_time(Some(t));
                    }
                    newly = inv.rejudge(&policy);
                    last_rejudge = Instant::now();
                }
                let is_leader = leader.load(Ordering::SeqCst);
                metrics.detector_leader.set(i64::from(is_leader));
                if is_leader && !was_leader {
                    // Taking over: the missed pods the old holder may not have reported.
                    newly = inv.missed();
                }
                was_leader = is_leader;
            }
        }
        let synced = pods_synced && ns_synced;
        if synced {
            if errors.is_empty() {
                metrics.detector_synced.set(1);
            }
            publish(metrics, &inv, &mut published);
            for n in newly {
                tracing::warn!(namespace = %n.facts.namespace, pod = %n.facts.name,
                    component = %n.facts.component, lacks = %n.verdict.lacks(),
                    "Flink pod runs without its injection: {}", n.verdict.note());
                let _ = to_reporter.send(ToReporter::Report(n));
            }
        }
    }
    tracing::error!("the detector's watch ended; it reports nothing more until a restart");
    metrics.detector_synced.set(0);
}

/// Sets the gauge to the inventory's counts; series of groups that have none left are removed.
fn publish(metrics: &Metrics, inv: &Inventory, published: &mut HashSet<(String, String)>) {
    metrics
        .detector_pods
        .set(i64::try_from(inv.len()).unwrap_or(i64::MAX));
    let labels = |(ns, c): &(String, String)| PodGroupLabels {
        namespace: ns.clone(),
        component: c.clone(),
    };
    for key in published.iter() {
        if !inv.counts().contains_key(key) {
            metrics.uninjected.remove(&labels(key));
        }
    }
    // Published with 0 once synced, so "none" reads as 0 rather than as no data, for the
    // namespaces and components that had some.
    published.retain(|k| inv.counts().contains_key(k));
    for (key, n) in inv.counts() {
        metrics.uninjected.get_or_create(&labels(key)).set(*n);
        published.insert(key.clone());
    }
}

/// Sends each missed pod one Event while this replica holds the Lease. Sequential, so a burst of
/// missed pods does not become a burst of API calls.
async fn report(
    client: kube::Client,
    mut rx: mpsc::UnboundedReceiver<ToReporter>,
    leader: Arc<AtomicBool>,
    state: Arc<AppState>,
    identity: String,
) {
    let metrics = &state.metrics;
    let mut reported: HashSet<String> = HashSet::new();
    let mut failing = false;
    while let Some(msg) = rx.recv().await {
        let n = match msg {
            ToReporter::Forget(uid) => {
                reported.remove(&uid);
                continue;
            }
            ToReporter::Report(n) => n,
        };
        if !leader.load(Ordering::SeqCst) || reported.contains(&n.facts.uid) {
            continue;
        }
        let event = events::build(&n.facts, &n.verdict, &identity, Timestamp::now());
        match events::send(&client, &event).await {
            Ok(()) => {
                reported.insert(n.facts.uid.clone());
                Metrics::reload(&metrics.detector_events, true);
                failing = false;
            }
            Err(e) => {
                Metrics::reload(&metrics.detector_events, false);
                if !failing {
                    tracing::warn!(error = %e, namespace = %n.facts.namespace, pod = %n.facts.name,
                        "cannot send the NotInjected Event (RBAC: create events.k8s.io events); the gauge and this log still report the pod");
                    failing = true;
                }
            }
        }
    }
}

/// Logs a watch's error when it is new, or again after `ERROR_LOG_EVERY`: the watcher retries
/// with backoff forever and would otherwise fill the log. Also what `detector_synced` reads: a
/// watch is failing from its last error until an event arrives or `RECOVERED_AFTER` passes with
/// no new error (a watch that restarted fine in a quiet cluster sends no event to show it).
#[derive(Default)]
struct ErrorLog {
    /// Per watch: the error's text, when it was last logged, when it last happened.
    last: HashMap<&'static str, (String, Instant, Instant)>,
}

/// Longer than the watcher's longest backoff (30 s) twice over: a lasting error recurs sooner.
const RECOVERED_AFTER: Duration = Duration::from_secs(65);

impl ErrorLog {
    fn log(&mut self, what: &'static str, e: &watcher::Error) {
        let text = e.to_string();
        let now = Instant::now();
        let due = match self.last.get(what) {
            Some((t, logged, _)) => *t != text || logged.elapsed() >= ERROR_LOG_EVERY,
            None => true,
        };
        if due {
            let hint = if is_forbidden(e) {
                "the webhook's ServiceAccount may not list and watch these (apply the detector's ClusterRole from manifests/base/rbac.yaml, or run with --detector=false); the detector retries with backoff, the webhook keeps admitting pods"
            } else {
                "the detector retries with backoff; flink_webhook_detector_synced is 0 meanwhile"
            };
            tracing::error!(watch = what, error = %text, "missed-injection detector cannot watch {what}: {hint}");
            self.last.insert(what, (text, now, now));
        } else if let Some(entry) = self.last.get_mut(what) {
            entry.2 = now;
        }
    }

    fn clear(&mut self, what: &'static str) {
        if self.last.remove(what).is_some() {
            tracing::info!(
                watch = what,
                "missed-injection detector watching {what} again"
            );
        }
    }

    /// Forgets errors that have not recurred for `RECOVERED_AFTER`.
    fn expire(&mut self) {
        let quiet: Vec<&'static str> = self
            .last
            .iter()
            .filter(|(_, (_, _, at))| at.elapsed() >= RECOVERED_AFTER)
            .map(|(what, _)| *what)
            .collect();
        for what in quiet {
            self.clear(what);
        }
    }

    fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

fn is_forbidden(e: &watcher::Error) -> bool {
    let client_err = match e {
        watcher::Error::InitialListFailed(c)
        | watcher::Error::WatchStartFailed(c)
        | watcher::Error::WatchFailed(c) => c,
        watcher::Error::WatchError(s) => return s.code == 403,
        _ => return false,
    };
    matches!(client_err, kube::Error::Api(s) if s.code == 403)
}
