//! What to show: one cluster, and within it components, pods, files, a minimum level,
//! loggers, a regex on the message and a time range. Pure, no I/O.
//!
//! The checks are split by what they need: [`Selection::wants_key`] looks at the Kafka key
//! alone (the pod name) and [`Selection::wants_cluster`] at the raw bytes, so most messages of
//! other pods and clusters are dropped before any JSON is parsed; [`Selection::wants_pod`]
//! and [`Selection::wants_event`] read the parsed document.

use globset::{Glob, GlobSet, GlobSetBuilder};
use regex::Regex;

use crate::doc::Doc;

/// log4j's levels, least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl Level {
    /// The level of an event as log4j names it (`WARN`); None for anything else.
    pub fn of(s: &str) -> Option<Self> {
        Some(match s {
            "TRACE" => Level::Trace,
            "DEBUG" => Level::Debug,
            "INFO" => Level::Info,
            "WARN" => Level::Warn,
            "ERROR" => Level::Error,
            "FATAL" => Level::Fatal,
            _ => return None,
        })
    }
}

/// A Flink component, as Flink labels its pods (`component=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Component {
    Jobmanager,
    Taskmanager,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Jobmanager => "jobmanager",
            Component::Taskmanager => "taskmanager",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("invalid value {value:?} for --{flag}: {reason}")]
    Invalid {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

/// Patterns matched against a whole name (`--pod wc-taskmanager-*`).
#[derive(Debug, Clone)]
struct Names {
    globs: GlobSet,
    /// Some when every pattern is a plain name: the names themselves, for the fast path and
    /// for knowing that exactly one pod is asked for.
    exact: Option<Vec<String>>,
}

impl Names {
    fn new(flag: &'static str, patterns: &[String]) -> Result<Option<Self>, FilterError> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            let glob = Glob::new(p).map_err(|e| FilterError::Invalid {
                flag,
                value: p.clone(),
                reason: e.kind().to_string(),
            })?;
            b.add(glob);
        }
        let globs = b.build().map_err(|e| FilterError::Invalid {
            flag,
            value: patterns.join(","),
            reason: e.to_string(),
        })?;
        let plain = |p: &String| !p.contains(['*', '?', '[', ']', '{', '}', '\\']);
        let exact = patterns.iter().all(plain).then(|| patterns.to_vec());
        Ok(Some(Self { globs, exact }))
    }

    fn matches(&self, name: &str) -> bool {
        match &self.exact {
            Some(names) => names.iter().any(|n| n == name),
            None => self.globs.is_match(name),
        }
    }
}

/// What the command line selects.
#[derive(Debug, Clone)]
pub struct Selection {
    pub cluster_id: String,
    pub component: Option<Component>,
    pods: Option<Names>,
    files: Option<Names>,
    pub min_level: Option<Level>,
    loggers: Vec<String>,
    grep: Option<Regex>,
    /// Milliseconds since the epoch: `@timestamp` in `[from, to)`.
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// The raw options, as the command line gives them.
#[derive(Debug, Clone, Default)]
pub struct SelectionArgs {
    pub cluster_id: String,
    pub component: Option<Component>,
    pub pods: Vec<String>,
    pub files: Vec<String>,
    pub min_level: Option<Level>,
    pub loggers: Vec<String>,
    pub grep: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl Selection {
    pub fn new(a: SelectionArgs) -> Result<Self, FilterError> {
        let cluster_id = a.cluster_id.trim().to_string();
        if cluster_id.is_empty() {
            return Err(FilterError::Invalid {
                flag: "cluster-id",
                value: a.cluster_id,
                reason: "a Flink cluster-id (kubernetes.cluster-id) is needed".into(),
            });
        }
        let grep = a
            .grep
            .as_deref()
            .map(|g| {
                Regex::new(g).map_err(|e| FilterError::Invalid {
                    flag: "grep",
                    value: g.to_string(),
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        if let (Some(from), Some(to)) = (a.from, a.to) {
            if to <= from {
                return Err(FilterError::Invalid {
                    flag: "to",
                    value: to.to_string(),
                    reason: "--to must be after --from (or --since)".into(),
                });
            }
        }
        Ok(Self {
            cluster_id,
            component: a.component,
            pods: Names::new("pod", &a.pods)?,
            files: Names::new("file", &a.files)?,
            min_level: a.min_level,
            loggers: a.loggers,
            grep,
            from: a.from,
            to: a.to,
        })
    }

    /// Whether the output can hold more than one pod (its lines are then prefixed).
    pub fn many_pods(&self) -> bool {
        self.pods
            .as_ref()
            .and_then(|p| p.exact.as_ref())
            .is_none_or(|names| names.len() != 1)
    }

    /// The Kafka key is the pod name: other pods are dropped before their JSON is read.
    pub fn wants_key(&self, key: Option<&[u8]>) -> bool {
        let Some(pods) = &self.pods else {
            return true;
        };
        // A message without a key, or with one that is not UTF-8, is not the agent's; it is
        // still read so that it is counted.
        match key.map(std::str::from_utf8) {
            Some(Ok(pod)) => pods.matches(pod),
            _ => true,
        }
    }

    /// The cluster, from the raw bytes when the agent's shape allows (see
    /// [`crate::doc::cluster_id_of`]); None when only parsing can tell.
    pub fn wants_cluster(&self, payload: &[u8]) -> Option<bool> {
        crate::doc::cluster_id_of(payload).map(|c| c == self.cluster_id)
    }

    /// Cluster, component and pod: what is the same for every event of a pod.
    pub fn wants_pod(&self, doc: &Doc<'_>) -> bool {
        doc.flink.cluster_id == self.cluster_id
            && self
                .component
                .is_none_or(|c| doc.flink.component == c.as_str())
            && self
                .pods
                .as_ref()
                .is_none_or(|p| p.matches(&doc.kubernetes.pod.name))
    }

    /// File, level, logger, message and time: what each event decides for itself. `ts` is
    /// the event's `@timestamp` in milliseconds since the epoch.
    pub fn wants_event(&self, doc: &Doc<'_>, ts: i64) -> bool {
        if self.from.is_some_and(|from| ts < from) || self.to.is_some_and(|to| ts >= to) {
            return false;
        }
        if let Some(min) = self.min_level {
            // A line without a level (stdout, a split long line) has none to compare.
            match doc.log.level.as_deref().and_then(Level::of) {
                Some(level) if level >= min => {}
                _ => return false,
            }
        }
        if !self.loggers.is_empty() {
            let Some(logger) = doc.log.logger.as_deref() else {
                return false;
            };
            if !self.loggers.iter().any(|l| logger_under(logger, l)) {
                return false;
            }
        }
        if let Some(files) = &self.files {
            let path = doc.log.file.path.as_ref();
            let name = path.rsplit('/').next().unwrap_or(path);
            if !files.matches(name) && !files.matches(path) {
                return false;
            }
        }
        if let Some(re) = &self.grep {
            if !re.is_match(&doc.message) {
                return false;
            }
        }
        true
    }
}

/// log4j's hierarchy: `org.apache.flink.runtime` covers itself and every logger below it.
fn logger_under(logger: &str, parent: &str) -> bool {
    match logger.strip_prefix(parent) {
        Some(rest) => rest.is_empty() || rest.starts_with('.') || parent.ends_with('.'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flink_agent::config::PodMeta;
    use flink_agent::encode::{encode, Origin};
    use flink_agent::parse::parse;
    use flink_agent::zone::Zone;

    fn event(pod: &str, cluster: &str, component: &str, path: &str, text: &str) -> Vec<u8> {
        let meta = PodMeta {
            pod_name: pod.into(),
            cluster_id: cluster.into(),
            component: component.into(),
            ..PodMeta::default()
        };
        let origin = Origin {
            path,
            offset: 0,
            dev: 1,
            ino: 2,
            fingerprint: 3,
        };
        encode(
            &parse(text, &Zone::UTC),
            &origin,
            &meta,
            "2026-11-22T10:00:00.000+00:00",
        )
    }

    fn sel(f: impl FnOnce(&mut SelectionArgs)) -> Selection {
        let mut a = SelectionArgs {
            cluster_id: "wc".into(),
            ..Default::default()
        };
        f(&mut a);
        Selection::new(a).unwrap()
    }

    const TM_LOG: &str = "/opt/flink/log/flink--taskmanager-0-wc-taskmanager-1-1.log";
    const WARN: &str = "2026-11-22 10:00:00,000 WARN  org.apache.flink.runtime.taskmanager.Task [] - Task failed\njava.lang.IllegalStateException: boom";

    fn check(s: &Selection, bytes: &[u8]) -> bool {
        let doc = Doc::parse(bytes).unwrap();
        let ts = crate::time::timestamp_millis(&doc.timestamp).unwrap();
        s.wants_cluster(bytes) != Some(false) && s.wants_pod(&doc) && s.wants_event(&doc, ts)
    }

    #[test]
    fn cluster_component_and_pod() {
        let tm = event("wc-taskmanager-1-1", "wc", "taskmanager", TM_LOG, WARN);
        let other = event("x-taskmanager-1-1", "x", "taskmanager", TM_LOG, WARN);
        let all = sel(|_| {});
        assert!(check(&all, &tm));
        assert!(!check(&all, &other));
        assert_eq!(all.wants_cluster(&other), Some(false));
        assert!(all.many_pods());

        let jm_only = sel(|a| a.component = Some(Component::Jobmanager));
        assert!(!check(&jm_only, &tm));

        let one = sel(|a| a.pods = vec!["wc-taskmanager-1-1".into()]);
        assert!(check(&one, &tm));
        assert!(!one.many_pods());
        assert!(one.wants_key(Some(b"wc-taskmanager-1-1")));
        assert!(!one.wants_key(Some(b"wc-taskmanager-1-2")));
        // Unknown keys are read, to be counted.
        assert!(one.wants_key(None));

        let glob = sel(|a| a.pods = vec!["wc-taskmanager-*".into()]);
        assert!(glob.many_pods());
        assert!(glob.wants_key(Some(b"wc-taskmanager-1-7")));
        assert!(!glob.wants_key(Some(b"wc-6d4f-abcde")));
    }

    #[test]
    fn level_logger_file_grep_and_time() {
        let tm = event("p", "wc", "taskmanager", TM_LOG, WARN);
        let raw = event(
            "p",
            "wc",
            "taskmanager",
            "/opt/flink/log/x.out",
            "demo-print> 1",
        );
        assert!(check(&sel(|a| a.min_level = Some(Level::Warn)), &tm));
        assert!(!check(&sel(|a| a.min_level = Some(Level::Error)), &tm));
        assert!(
            !check(&sel(|a| a.min_level = Some(Level::Trace)), &raw),
            "no level"
        );

        for (logger, want) in [
            ("org.apache.flink.runtime", true),
            ("org.apache.flink.runtime.", true),
            ("org.apache.flink.runtime.taskmanager.Task", true),
            ("org.apache.flink.run", false),
            ("org.apache.kafka", false),
        ] {
            assert_eq!(
                check(&sel(|a| a.loggers = vec![logger.into()]), &tm),
                want,
                "{logger}"
            );
        }

        assert!(check(&sel(|a| a.files = vec!["*.log".into()]), &tm));
        assert!(check(&sel(|a| a.files = vec![TM_LOG.into()]), &tm));
        assert!(!check(&sel(|a| a.files = vec!["*.out".into()]), &tm));
        assert!(check(&sel(|a| a.files = vec!["*.out".into()]), &raw));

        // The regex sees the whole event, stack trace included.
        assert!(check(
            &sel(|a| a.grep = Some("IllegalState\\w+: boom".into())),
            &tm
        ));
        assert!(!check(&sel(|a| a.grep = Some("^boom".into())), &tm));

        let ten = crate::time::parse_instant("2026-11-22T10:00:00Z").unwrap();
        assert!(check(&sel(|a| a.from = Some(ten)), &tm));
        assert!(!check(&sel(|a| a.from = Some(ten + 1)), &tm));
        assert!(!check(&sel(|a| a.to = Some(ten)), &tm), "--to is exclusive");
        assert!(check(&sel(|a| a.to = Some(ten + 1)), &tm));
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (f, flag) in [
            (
                Box::new(|a: &mut SelectionArgs| a.grep = Some("(".into()))
                    as Box<dyn Fn(&mut SelectionArgs)>,
                "--grep",
            ),
            (Box::new(|a| a.pods = vec!["[".into()]), "--pod"),
            (Box::new(|a| a.cluster_id = " ".into()), "--cluster-id"),
            (
                Box::new(|a| {
                    a.from = Some(10);
                    a.to = Some(10)
                }),
                "--to",
            ),
        ] {
            let mut a = SelectionArgs {
                cluster_id: "wc".into(),
                ..Default::default()
            };
            f(&mut a);
            let e = Selection::new(a).unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }
}
