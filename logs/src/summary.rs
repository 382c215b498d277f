//! What a run read, printed and left out: told on stderr at the end, and what the exit status
//! is decided from.

use std::collections::BTreeSet;
use std::fmt;

/// Names kept for "did you mean" messages: a few are enough.
const MAX_NAMES: usize = 20;

#[derive(Debug, Default)]
pub struct Summary {
    pub topic: String,
    pub partitions: usize,
    /// Messages read from Kafka.
    pub fetched: u64,
    pub printed: u64,
    /// Pods whose events were printed.
    pub pods_printed: BTreeSet<String>,
    /// Copies dropped by `event.id`.
    pub duplicates: u64,
    /// Messages of other producers: not JSON, or not the agent's shape.
    pub not_agent: u64,
    /// Whether any message of the cluster-id was read, whatever the other filters.
    pub cluster_seen: bool,
    /// Whether any event of the cluster passed the pod and component filters.
    pub pods_matched: bool,
    /// Other cluster-ids read (a few), for the message when the asked one is not there.
    pub other_clusters: BTreeSet<String>,
    /// Pods of the cluster read (a few), for the message when the asked pods are not there.
    pub cluster_pods: BTreeSet<String>,
    pub out_of_order: u64,
    pub forced: u64,
    pub consumer_errors: u64,
    pub peak_held: usize,
    pub peak_held_bytes: usize,
}

impl Summary {
    pub fn note_other_cluster(&mut self, id: &str) {
        if self.other_clusters.len() < MAX_NAMES && !self.other_clusters.contains(id) {
            self.other_clusters.insert(id.to_string());
        }
    }

    pub fn note_cluster_pod(&mut self, pod: &str) {
        if self.cluster_pods.len() < MAX_NAMES && !self.cluster_pods.contains(pod) {
            self.cluster_pods.insert(pod.to_string());
        }
    }

    pub fn note_printed_pod(&mut self, pod: &str) {
        if !self.pods_printed.contains(pod) {
            self.pods_printed.insert(pod.to_string());
        }
    }
}

fn list(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

impl Summary {
    /// Why nothing was printed, when the cluster-id or the pods asked for were not there.
    pub fn nothing_found(&self, cluster_id: &str, window: &str) -> Option<String> {
        if !self.cluster_seen {
            return Some(format!(
                "no events of cluster-id {cluster_id:?} in topic {:?} {window} ({} messages read); \
                 cluster-ids seen there: {}",
                self.topic,
                self.fetched,
                list(&self.other_clusters)
            ));
        }
        if !self.pods_matched {
            return Some(format!(
                "cluster-id {cluster_id:?} has no events of the pods or component asked for {window}; \
                 its pods seen there: {}",
                list(&self.cluster_pods)
            ));
        }
        None
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fetched {} messages from {} partitions of {:?}; \
             printed {} events of {} pods; dropped {} duplicates (same event.id); \
             skipped {} messages that are not the agent's",
            self.fetched,
            self.partitions,
            self.topic,
            self.printed,
            self.pods_printed.len(),
            self.duplicates,
            self.not_agent
        )?;
        if self.out_of_order > 0 {
            write!(
                f,
                "; {} events printed after newer ones of other files (shipped later than --order-window)",
                self.out_of_order
            )?;
        }
        if self.forced > 0 {
            write!(f, "; {} events printed early to bound memory", self.forced)?;
        }
        if self.consumer_errors > 0 {
            write!(f, "; {} consumer errors (see above)", self.consumer_errors)?;
        }
        Ok(())
    }
}
