//! When Flink's log files have gone quiet after SIGTERM.
//!
//! The kubelet signals every container of a pod at the same moment (a plain-container agent
//! always; native sidecars too before Kubernetes 1.29), and Flink writes its shutdown after the
//! signal: `RECEIVED SIGNAL 15: SIGTERM`, then the stop of each of its services, for up to a
//! second or more (BENCHMARKS.md has what was measured on a real Flink). Those are the lines
//! on-call reads after a failure, so the agent keeps tailing after SIGTERM until nothing has
//! changed in the log dir, and nothing new was read, for a quiet period; only then does it read
//! every file to its end a last time, flush and wait for Kafka.
//!
//! Two signals, because each alone misleads: the read counter stands still while the agent is
//! held back by Kafka (the in-flight window is full) though Flink still writes, and a file's
//! size and mtime stand still while the agent still reads a backlog.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// What the log dir shows of Flink's writing: each included file's name, size and mtime,
/// sorted by name. Unreadable entries are left out: the tailer reports them.
pub fn snapshot(
    dir: &Path,
    included: impl Fn(&str) -> bool,
) -> Vec<(String, u64, Option<SystemTime>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !included(&name) {
                return None;
            }
            let meta = e.metadata().ok()?;
            meta.is_file()
                .then(|| (name, meta.len(), meta.modified().ok()))
        })
        .collect();
    files.sort();
    files
}

/// Follows the two signals and says for how long both have stood still.
#[derive(Debug)]
pub struct QuietWatch {
    files: Vec<(String, u64, Option<SystemTime>)>,
    bytes_read: u64,
    since: Instant,
}

impl QuietWatch {
    pub fn new(
        now: Instant,
        files: Vec<(String, u64, Option<SystemTime>)>,
        bytes_read: u64,
    ) -> Self {
        Self {
            files,
            bytes_read,
            since: now,
        }
    }

    /// Records an observation; returns how long nothing has changed, as of `now`.
    pub fn observe(
        &mut self,
        now: Instant,
        files: Vec<(String, u64, Option<SystemTime>)>,
        bytes_read: u64,
    ) -> Duration {
        if files != self.files || bytes_read != self.bytes_read {
            self.files = files;
            self.bytes_read = bytes_read;
            self.since = now;
        }
        now.saturating_duration_since(self.since)
    }
}

/// The part of the shutdown timeout kept for the last read, the flush and Kafka's
/// acknowledgements once waiting for quiet has to give up: a quarter, at most 5 s.
pub fn drain_reserve(shutdown_timeout: Duration) -> Duration {
    (shutdown_timeout / 4).min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, len: u64) -> (String, u64, Option<SystemTime>) {
        (name.to_string(), len, Some(SystemTime::UNIX_EPOCH))
    }

    #[test]
    fn quiet_only_while_neither_the_files_nor_the_reads_move() {
        let t0 = Instant::now();
        let s = Duration::from_millis;
        let mut w = QuietWatch::new(t0, vec![file("a.log", 10)], 100);
        assert_eq!(w.observe(t0 + s(500), vec![file("a.log", 10)], 100), s(500));
        // Flink wrote: quiet starts again.
        assert_eq!(w.observe(t0 + s(600), vec![file("a.log", 20)], 100), s(0));
        assert_eq!(w.observe(t0 + s(900), vec![file("a.log", 20)], 100), s(300));
        // The agent read a backlog while the file stood still: not quiet either.
        assert_eq!(w.observe(t0 + s(1000), vec![file("a.log", 20)], 110), s(0));
        // A new file (a rotation, the .out file) is a change.
        let two = vec![file("a.log", 20), file("a.out", 0)];
        assert_eq!(w.observe(t0 + s(1100), two.clone(), 110), s(0));
        assert_eq!(w.observe(t0 + s(3100), two, 110), s(2000));
    }

    #[test]
    fn snapshot_sees_included_regular_files_only() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("jobmanager.log"), b"abc")?;
        std::fs::write(dir.path().join("notes.txt"), b"x")?;
        std::fs::create_dir(dir.path().join("sub.log"))?;
        let snap = snapshot(dir.path(), |n| n.ends_with(".log"));
        assert_eq!(snap.len(), 1);
        assert_eq!((snap[0].0.as_str(), snap[0].1), ("jobmanager.log", 3));
        assert!(snapshot(&dir.path().join("missing"), |_| true).is_empty());
        Ok(())
    }

    #[test]
    fn the_reserve_is_a_quarter_up_to_five_seconds() {
        assert_eq!(
            drain_reserve(Duration::from_secs(20)),
            Duration::from_secs(5)
        );
        assert_eq!(
            drain_reserve(Duration::from_secs(4)),
            Duration::from_secs(1)
        );
        assert_eq!(
            drain_reserve(Duration::from_secs(60)),
            Duration::from_secs(5)
        );
    }
}
