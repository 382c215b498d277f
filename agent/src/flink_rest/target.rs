//! Which Flink REST API this agent reads, and whether that Flink is its own.
//!
//! With `kubernetes.hostnetwork.enabled` Flink binds its REST endpoint on a random port of the
//! node, and the agent's default `http://localhost:8081` may then be another cluster's
//! JobManager on the same node (seen on a real node: 2,007 series of an unrelated job exported
//! as this one's). Two defences:
//! * the JobManager pod's agent learns the real address from the log line Flink writes when its
//!   REST endpoint starts (`Rest endpoint listening at <host>:<port>`), which it tails anyway;
//! * before exporting anything, the agent asks `/jobmanager/config` for
//!   `kubernetes.cluster-id` and compares it with its own `--cluster-id`: another cluster (or a
//!   Flink that is not in native Kubernetes mode at all) is `flink_up 0` with a reason, never
//!   its numbers.

use std::sync::RwLock;

use serde::Deserialize;

const LISTENING: &str = "Rest endpoint listening at ";

/// The REST address in a message of Flink's REST endpoint, as a base URL: `Rest endpoint
/// listening at localhost:38253` gives `http://localhost:38253`.
pub fn rest_endpoint_in(message: &str) -> Option<String> {
    let rest = message.strip_prefix(LISTENING)?;
    let addr = rest.split_whitespace().next()?;
    let (host, port) = addr.rsplit_once(':')?;
    if host.is_empty() || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // An IPv6 literal is written bare by Flink; a URL needs it in brackets.
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Some(format!("http://{host}:{port}"))
}

/// The base URL to read: the configured one, or the last one the JobManager's log announced.
#[derive(Debug)]
pub struct RestTarget {
    configured: String,
    /// Learning from the log is on only where it means something: a JobManager pod whose agent
    /// was not given `--flink-rest`.
    learns: bool,
    /// (the announcing record's timestamp, URL). Files are not read in time order (an archive of
    /// an earlier start may be read after the current file), so a later record wins, not a
    /// later read.
    learned: RwLock<Option<(String, String)>>,
}

impl RestTarget {
    pub fn new(configured: String, learns: bool) -> Self {
        Self {
            configured,
            learns,
            learned: RwLock::new(None),
        }
    }

    pub fn learns(&self) -> bool {
        self.learns
    }

    pub fn url(&self) -> String {
        let learned = self.learned.read().unwrap_or_else(|p| p.into_inner());
        match learned.as_ref() {
            Some((_, url)) => url.clone(),
            None => self.configured.clone(),
        }
    }

    /// Offers a log record (its RFC 3339 timestamp in the pod's zone, and its message); returns
    /// the URL when it became the one to read.
    pub fn offer(&self, timestamp: Option<&str>, message: &str) -> Option<String> {
        if !self.learns || !message.starts_with(LISTENING) {
            return None;
        }
        let url = rest_endpoint_in(message)?;
        let at = timestamp.unwrap_or_default().to_string();
        let mut learned = self.learned.write().unwrap_or_else(|p| p.into_inner());
        if learned.as_ref().is_some_and(|(t, u)| *t > at || *u == url) {
            return None;
        }
        *learned = Some((at, url.clone()));
        Some(url)
    }
}

/// One entry of `GET /jobmanager/config`.
#[derive(Debug, Deserialize)]
pub struct ConfigEntry {
    pub key: String,
    pub value: String,
}

/// The JobManager's host as the reporter labels its series: its RPC address (in native
/// Kubernetes mode the pod IP, which Flink's entrypoint sets). Empty when the configuration does
/// not say.
pub fn jobmanager_host(config: &[ConfigEntry]) -> String {
    config
        .iter()
        .find(|e| e.key == "jobmanager.rpc.address")
        .map(|e| e.value.clone())
        .unwrap_or_default()
}

/// Why the Flink at the URL is not this agent's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotOurs {
    #[error("it is cluster {found:?}, this agent's is {expected:?}")]
    OtherCluster { expected: String, found: String },
    #[error("it has no kubernetes.cluster-id (not in native Kubernetes mode); this agent's is {expected:?}")]
    NoClusterId { expected: String },
}

/// Compares the cluster id in a JobManager's configuration with the agent's.
pub fn check_cluster(config: &[ConfigEntry], expected: &str) -> Result<(), NotOurs> {
    match config.iter().find(|e| e.key == "kubernetes.cluster-id") {
        Some(e) if e.value == expected => Ok(()),
        Some(e) => Err(NotOurs::OtherCluster {
            expected: expected.to_string(),
            found: e.value.clone(),
        }),
        None => Err(NotOurs::NoClusterId {
            expected: expected.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_flinks_own_line() {
        let fixture =
            include_str!("../../../tests/fixtures/flink-logs/jobmanager-rest-random-port.log.txt");
        let announced: Vec<String> = fixture
            .lines()
            .filter_map(|l| l.split_once(" - ").map(|(_, m)| m))
            .filter_map(rest_endpoint_in)
            .collect();
        assert_eq!(announced, ["http://localhost:38253"]);
        assert_eq!(
            rest_endpoint_in("Rest endpoint listening at 10.1.2.3:8081").as_deref(),
            Some("http://10.1.2.3:8081")
        );
        assert_eq!(
            rest_endpoint_in("Rest endpoint listening at fd00::7:45335").as_deref(),
            Some("http://[fd00::7]:45335")
        );
        for other in [
            "Web frontend listening at http://localhost:38253.",
            "Rest endpoint listening at localhost",
            "Rest endpoint listening at localhost:port",
            "Rest endpoint listening at :8081",
        ] {
            assert_eq!(rest_endpoint_in(other), None, "{other}");
        }
    }

    #[test]
    fn the_latest_announcement_wins_whatever_order_files_are_read_in() {
        let t = RestTarget::new("http://localhost:8081".into(), true);
        assert_eq!(t.url(), "http://localhost:8081");
        let now = "2026-12-06T03:56:33.178+00:00";
        let before = "2026-12-06T02:00:00.000+00:00";
        assert_eq!(
            t.offer(Some(now), "Rest endpoint listening at localhost:38253")
                .as_deref(),
            Some("http://localhost:38253")
        );
        // An archive of an earlier start, read afterwards.
        assert_eq!(
            t.offer(Some(before), "Rest endpoint listening at localhost:41000"),
            None
        );
        assert_eq!(
            t.offer(Some(now), "Rest endpoint listening at localhost:38253"),
            None
        );
        assert_eq!(t.url(), "http://localhost:38253");
        assert_eq!(t.offer(Some(now), "Starting rest endpoint."), None);
        // Told where Flink is: nothing is learned.
        let fixed = RestTarget::new("http://flink:8081".into(), false);
        assert_eq!(
            fixed.offer(Some(now), "Rest endpoint listening at localhost:1"),
            None
        );
        assert_eq!(fixed.url(), "http://flink:8081");
    }

    #[test]
    fn only_the_agents_own_cluster_passes() {
        let config: Vec<ConfigEntry> = serde_json::from_str(
            r#"[{"key":"rest.port","value":"0"},{"key":"kubernetes.cluster-id","value":"wordcount"}]"#,
        )
        .unwrap_or_default();
        assert_eq!(check_cluster(&config, "wordcount"), Ok(()));
        assert_eq!(
            check_cluster(&config, "billing"),
            Err(NotOurs::OtherCluster {
                expected: "billing".into(),
                found: "wordcount".into()
            })
        );
        let recorded: Vec<ConfigEntry> = serde_json::from_str(include_str!(
            "../../../tests/fixtures/flink-rest/07-jobmanager-config.json"
        ))
        .unwrap_or_default();
        assert!(!recorded.is_empty());
        // A standalone Flink (the recorded one) has no cluster id at all.
        assert!(matches!(
            check_cluster(&recorded, "wordcount"),
            Err(NotOurs::NoClusterId { .. })
        ));
    }
}
