//! What a pod's annotations may choose, per namespace: the policy's `allow` lists.
//!
//! Annotations are written by whoever submits the job, so without these any tenant could send
//! its logs to another team's Kafka topic or mount another team's NFS export or claim. A list
//! that is not set leaves that choice open (the behaviour before allowlists); a set list, even
//! an empty one, is the whole of what annotations may name. The policy's own values are the
//! admin's and are not checked.
//!
//! ```yaml
//! allow:
//!   logTopics: [team-a-logs, "team-a-*"]   # exact names; a trailing * makes a prefix
//!   nfsServers: [nfs.team-a.internal]
//!   nfsPaths: [/exports/team-a]            # the path or anything below it
//!   pvcClaims: [team-a-jars]
//! ```

use crate::annotations::{Overrides, UsrlibOverride, LOG_TOPIC, USRLIB};
use crate::policy::VolumeSource;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlists {
    pub log_topics: Option<Vec<String>>,
    pub nfs_servers: Option<Vec<String>>,
    pub nfs_paths: Option<Vec<String>>,
    pub pvc_claims: Option<Vec<String>>,
}

/// A value outside an allowlist; the message names the annotation, the value and the list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}: {value:?} is not allowed in namespace {namespace}: allow.{list} is [{entries}]")]
pub struct NotAllowed {
    pub annotation: &'static str,
    pub value: String,
    pub namespace: String,
    pub list: &'static str,
    pub entries: String,
}

/// `team-a-*` matches by prefix, anything else exactly.
fn topic_allowed(entries: &[String], topic: &str) -> bool {
    entries.iter().any(|e| match e.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => e == topic,
    })
}

/// The path itself or below it, by whole components: `/exports/team-a` allows
/// `/exports/team-a/jobs` but not `/exports/team-ab`. A path with `..` is never inside.
fn path_allowed(entries: &[String], path: &str) -> bool {
    if path.split('/').any(|c| c == "..") {
        return false;
    }
    entries.iter().any(|e| {
        let prefix = e.trim_end_matches('/');
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
            || prefix.is_empty()
    })
}

impl Allowlists {
    /// Checks what the annotations chose against the lists of `namespace`.
    pub fn check(&self, o: &Overrides, namespace: &str) -> Result<(), NotAllowed> {
        let refuse = |annotation, value: &str, list, entries: &[String]| NotAllowed {
            annotation,
            value: value.to_string(),
            namespace: namespace.to_string(),
            list,
            entries: entries.join(", "),
        };
        if let (Some(topic), Some(list)) = (&o.log_topic, &self.log_topics) {
            if !topic_allowed(list, topic) {
                return Err(refuse(LOG_TOPIC, topic, "logTopics", list));
            }
        }
        match &o.usrlib {
            Some(UsrlibOverride::Source(VolumeSource::Nfs { server, path })) => {
                if let Some(list) = &self.nfs_servers {
                    if !list.iter().any(|s| s == server) {
                        return Err(refuse(USRLIB, server, "nfsServers", list));
                    }
                }
                if let Some(list) = &self.nfs_paths {
                    if !path_allowed(list, path) {
                        return Err(refuse(USRLIB, path, "nfsPaths", list));
                    }
                }
            }
            Some(UsrlibOverride::Source(VolumeSource::Pvc { claim_name })) => {
                if let Some(list) = &self.pvc_claims {
                    if !list.iter().any(|c| c == claim_name) {
                        return Err(refuse(USRLIB, claim_name, "pvcClaims", list));
                    }
                }
            }
            Some(UsrlibOverride::Skip) | None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    fn topic(t: &str) -> Overrides {
        Overrides {
            log_topic: Some(t.to_string()),
            ..Overrides::default()
        }
    }

    fn nfs(server: &str, path: &str) -> Overrides {
        Overrides {
            usrlib: Some(UsrlibOverride::Source(VolumeSource::Nfs {
                server: server.into(),
                path: path.into(),
            })),
            ..Overrides::default()
        }
    }

    #[test]
    fn topics_match_exactly_or_by_prefix() {
        let a = Allowlists {
            log_topics: list(&["team-a-logs", "team-a-*"]),
            ..Allowlists::default()
        };
        assert!(a.check(&topic("team-a-logs"), "team-a").is_ok());
        assert!(a.check(&topic("team-a-wordcount"), "team-a").is_ok());
        let e = a.check(&topic("billing-logs"), "team-a").unwrap_err();
        assert_eq!(
            e.to_string(),
            "annotation flink-injector.io/log-topic: \"billing-logs\" is not allowed in namespace \
             team-a: allow.logTopics is [team-a-logs, team-a-*]"
        );
        // Unset: open, as before allowlists. Empty: nothing may be chosen.
        assert!(Allowlists::default().check(&topic("anything"), "x").is_ok());
        let none = Allowlists {
            log_topics: list(&[]),
            ..Allowlists::default()
        };
        assert!(none.check(&topic("team-a-logs"), "team-a").is_err());
        // No annotation, nothing to check.
        assert!(none.check(&Overrides::default(), "team-a").is_ok());
    }

    #[test]
    fn nfs_servers_exactly_and_paths_by_whole_components() {
        let a = Allowlists {
            nfs_servers: list(&["nfs.team-a.internal"]),
            nfs_paths: list(&["/exports/team-a/"]),
            ..Allowlists::default()
        };
        assert!(a
            .check(&nfs("nfs.team-a.internal", "/exports/team-a"), "ns")
            .is_ok());
        assert!(a
            .check(&nfs("nfs.team-a.internal", "/exports/team-a/jobs/v2"), "ns")
            .is_ok());
        for (server, path, list) in [
            ("nfs.team-b.internal", "/exports/team-a", "allow.nfsServers"),
            ("nfs.team-a.internal", "/exports/team-ab", "allow.nfsPaths"),
            (
                "nfs.team-a.internal",
                "/exports/team-a/../team-b",
                "allow.nfsPaths",
            ),
            ("nfs.team-a.internal", "/exports", "allow.nfsPaths"),
        ] {
            let e = a.check(&nfs(server, path), "ns").unwrap_err().to_string();
            assert!(
                e.contains(list) && e.contains("flink-injector.io/usrlib"),
                "{e}"
            );
        }
    }

    #[test]
    fn claims_exactly() {
        let a = Allowlists {
            pvc_claims: list(&["team-a-jars"]),
            ..Allowlists::default()
        };
        let pvc = |c: &str| Overrides {
            usrlib: Some(UsrlibOverride::Source(VolumeSource::Pvc {
                claim_name: c.into(),
            })),
            ..Overrides::default()
        };
        assert!(a.check(&pvc("team-a-jars"), "ns").is_ok());
        let e = a.check(&pvc("team-b-jars"), "ns").unwrap_err().to_string();
        assert!(e.contains("allow.pvcClaims is [team-a-jars]"), "{e}");
        // The NFS lists do not restrict a claim, nor the other way round.
        let only_nfs = Allowlists {
            nfs_servers: list(&["nfs.team-a.internal"]),
            ..Allowlists::default()
        };
        assert!(only_nfs.check(&pvc("team-b-jars"), "ns").is_ok());
    }
}
