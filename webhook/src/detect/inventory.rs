//! What the detector knows of the cluster: the Flink pods watched, the opted-in namespaces, and the
//! verdict on each pod, with the counts behind `flink_webhook_uninjected_pods` kept as pods come
//! and go (a relist of 10,000 pods must not recount all of them per pod). No I/O.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::policy::Policy;

use super::judge::{judge, PodFacts, Verdict};

type PodKey = (String, String);
/// (namespace, component): the gauge's labels.
pub type CountKey = (String, String);

#[derive(Debug)]
struct Entry {
    facts: PodFacts,
    verdict: Verdict,
}

/// A pod whose verdict just became "missed": the watcher logs it and the leader gives it an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newly {
    pub facts: PodFacts,
    pub verdict: Verdict,
}

#[derive(Debug, Default)]
pub struct Inventory {
    pods: HashMap<PodKey, Entry>,
    opted_in: HashSet<String>,
    counts: BTreeMap<CountKey, i64>,
    install_time: Option<i64>,
}

impl Inventory {
    pub fn new(install_time: Option<i64>) -> Self {
        Inventory {
            install_time,
            ..Default::default()
        }
    }

    /// The Lease told the install time later than the watch started.
    pub fn set_install_time(&mut self, t: Option<i64>) {
        self.install_time = t;
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Pods in an opted-in namespace that miss their injection, by namespace and component.
    pub fn counts(&self) -> &BTreeMap<CountKey, i64> {
        &self.counts
    }

    /// Every missed pod, with its verdict (for the leader taking over, and for `audit`).
    pub fn missed(&self) -> Vec<Newly> {
        self.pods
            .values()
            .filter(|e| e.verdict.is_missed() && self.opted_in.contains(&e.facts.namespace))
            .map(|e| Newly {
                facts: e.facts.clone(),
                verdict: e.verdict.clone(),
            })
            .collect()
    }

    fn counted(&self, e: &Entry) -> bool {
        e.verdict.is_missed() && self.opted_in.contains(&e.facts.namespace)
    }

    fn add_count(&mut self, facts: &PodFacts, delta: i64) {
        let key = (facts.namespace.clone(), facts.component.clone());
        let n = self.counts.entry(key.clone()).or_insert(0);
        *n += delta;
        if *n <= 0 {
            self.counts.remove(&key);
        }
    }

    /// A pod added or changed. Returns it when it is newly missed (it was not, or was not known).
    pub fn apply(&mut self, policy: &Policy, facts: PodFacts) -> Option<Newly> {
        let key = (facts.namespace.clone(), facts.name.clone());
        let verdict = judge(policy, &facts, self.install_time);
        let entry = Entry { facts, verdict };
        let now = self.counted(&entry);
        let before = match self.pods.remove(&key) {
            Some(old) => {
                let was = self.counted(&old);
                if was {
                    self.add_count(&old.facts, -1);
                }
                // The same pod (not a new one under the same name) already reported.
                was && old.facts.uid == entry.facts.uid
            }
            None => false,
        };
        if now {
            self.add_count(&entry.facts, 1);
        }
        let newly = (now && !before).then(|| Newly {
            facts: entry.facts.clone(),
            verdict: entry.verdict.clone(),
        });
        self.pods.insert(key, entry);
        newly
    }

    pub fn delete(&mut self, namespace: &str, name: &str) {
        if let Some(old) = self.pods.remove(&(namespace.to_string(), name.to_string())) {
            if self.counted(&old) {
                self.add_count(&old.facts, -1);
            }
        }
    }

    /// A fresh list of every pod (after a start or a `410 Expired`): pods not in it are gone.
    /// Returns the pods newly missed.
    pub fn replace_pods(&mut self, policy: &Policy, pods: Vec<PodFacts>) -> Vec<Newly> {
        let keep: HashSet<PodKey> = pods
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        let gone: Vec<PodKey> = self
            .pods
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for (ns, name) in gone {
            self.delete(&ns, &name);
        }
        pods.into_iter()
            .filter_map(|p| self.apply(policy, p))
            .collect()
    }

    /// The opted-in namespaces changed (a label set or removed, a fresh list). Returns the pods
    /// newly missed because their namespace is now opted in.
    pub fn set_namespaces(&mut self, opted_in: HashSet<String>) -> Vec<Newly> {
        let before: HashSet<(String, String)> = self
            .pods
            .iter()
            .filter(|(_, e)| self.counted(e))
            .map(|(k, _)| k.clone())
            .collect();
        self.opted_in = opted_in;
        self.recount();
        self.pods
            .iter()
            .filter(|(k, e)| self.counted(e) && !before.contains(*k))
            .map(|(_, e)| Newly {
                facts: e.facts.clone(),
                verdict: e.verdict.clone(),
            })
            .collect()
    }

    pub fn namespace_opted_in(&mut self, name: &str, opted_in: bool) -> Vec<Newly> {
        let mut set = self.opted_in.clone();
        if opted_in {
            set.insert(name.to_string());
        } else {
            set.remove(name);
        }
        self.set_namespaces(set)
    }

    /// The policy was reloaded: every verdict is judged again.
    pub fn rejudge(&mut self, policy: &Policy) -> Vec<Newly> {
        let pods: Vec<PodFacts> = self.pods.values().map(|e| e.facts.clone()).collect();
        self.replace_pods(policy, pods)
    }

    fn recount(&mut self) {
        let mut counts = BTreeMap::new();
        for e in self.pods.values().filter(|e| self.counted(e)) {
            *counts
                .entry((e.facts.namespace.clone(), e.facts.component.clone()))
                .or_insert(0) += 1;
        }
        self.counts = counts;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::from_yaml("timezone: Europe/Berlin\n").expect("test policy")
    }

    fn pod(ns: &str, name: &str, component: &str, injected: bool) -> PodFacts {
        let mut annotations = BTreeMap::new();
        if injected {
            annotations.insert("flink-injector.io/injected".into(), "timezone".into());
        }
        PodFacts {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            component: component.into(),
            created: 10,
            labels: [
                ("type".to_string(), "flink-native-kubernetes".to_string()),
                ("component".to_string(), component.to_string()),
            ]
            .into(),
            annotations,
        }
    }

    fn count(inv: &Inventory, ns: &str, c: &str) -> i64 {
        inv.counts()
            .get(&(ns.to_string(), c.to_string()))
            .copied()
            .unwrap_or(0)
    }

    #[test]
    fn counts_follow_pods_and_namespaces() {
        let p = policy();
        let mut inv = Inventory::new(None);
        assert!(inv.set_namespaces(["jobs".to_string()].into()).is_empty());
        let n = inv.replace_pods(
            &p,
            vec![
                pod("jobs", "tm-1", "taskmanager", false),
                pod("jobs", "tm-2", "taskmanager", false),
                pod("jobs", "jm", "jobmanager", true),
                pod("other", "tm-3", "taskmanager", false),
            ],
        );
        assert_eq!(n.len(), 2, "{n:?}");
        assert_eq!(count(&inv, "jobs", "taskmanager"), 2);
        assert_eq!(count(&inv, "jobs", "jobmanager"), 0);
        assert_eq!(count(&inv, "other", "taskmanager"), 0);

        // Seen again unchanged: not newly missed, not counted twice.
        assert!(inv
            .apply(&p, pod("jobs", "tm-1", "taskmanager", false))
            .is_none());
        assert_eq!(count(&inv, "jobs", "taskmanager"), 2);

        inv.delete("jobs", "tm-1");
        assert_eq!(count(&inv, "jobs", "taskmanager"), 1);

        // A namespace opting in brings its pods in.
        let n = inv.namespace_opted_in("other", true);
        assert_eq!(n.len(), 1);
        assert_eq!(count(&inv, "other", "taskmanager"), 1);

        // A relist without tm-2: it is gone.
        inv.replace_pods(&p, vec![pod("other", "tm-3", "taskmanager", false)]);
        assert_eq!(count(&inv, "jobs", "taskmanager"), 0);
        assert!(!inv
            .counts()
            .contains_key(&("jobs".into(), "taskmanager".into())));
        assert_eq!(inv.len(), 1);
    }

    #[test]
    fn a_pod_recreated_under_its_name_is_reported_again() {
        let p = policy();
        let mut inv = Inventory::new(None);
        inv.set_namespaces(["jobs".to_string()].into());
        assert!(inv
            .apply(&p, pod("jobs", "jm", "jobmanager", false))
            .is_some());
        let mut again = pod("jobs", "jm", "jobmanager", false);
        again.uid = "another".into();
        assert!(inv.apply(&p, again).is_some());
        assert_eq!(count(&inv, "jobs", "jobmanager"), 1);
    }

    #[test]
    fn a_policy_that_turns_parts_off_clears_the_count() {
        let mut inv = Inventory::new(None);
        inv.set_namespaces(["jobs".to_string()].into());
        inv.apply(&policy(), pod("jobs", "tm", "taskmanager", false));
        assert_eq!(count(&inv, "jobs", "taskmanager"), 1);
        let off = Policy::from_yaml("agent:\n  enabled: false\n").expect("policy");
        inv.rejudge(&off);
        assert!(inv.counts().is_empty());
        assert!(inv.missed().is_empty());
    }
}
