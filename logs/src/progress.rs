//! How far each partition has been read: when the window's history is read, and up to
//! which `@timestamp` the held events can be printed in order ([`crate::merge`]). Pure, no I/O.
//!
//! The history of a partition ends where librdkafka says it reached the partition's end and
//! nothing more comes for [`SETTLE`], or, with `--to`, at the first offset written after the
//! window. High watermarks are not trusted alone: tansu (the test broker) reports the last
//! batch's first offset there, now and then, so its last events would be cut off; an end
//! that is not one is followed by more messages within a fetch or two.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a partition stays at its end before its history counts as read.
pub const SETTLE: Duration = Duration::from_millis(500);
/// A partition that keeps receiving messages (a busy topic) counts as read this long after
/// it first reached its end: what comes later was written after reading started.
pub const MAX_SETTLE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Partition {
    /// With `--to`: the first offset written after the window.
    until: Option<i64>,
    /// The next offset to read.
    next: i64,
    /// The newest Kafka timestamp read (ms).
    newest: Option<i64>,
    /// When librdkafka said the partition is read to its end, if nothing came since.
    at_end: Option<Instant>,
    /// When it first said so.
    first_end: Option<Instant>,
    /// Messages read (the window's history and, with --follow, what came after).
    fetched: u64,
}

#[derive(Debug, Default)]
pub struct Progress {
    parts: BTreeMap<i32, Partition>,
}

impl Progress {
    /// A partition read from `start`, whose history ends at `until` if the window has an end.
    pub fn add(&mut self, partition: i32, start: i64, until: Option<i64>) {
        self.parts.insert(
            partition,
            Partition {
                until,
                next: start,
                newest: None,
                at_end: None,
                first_end: None,
                fetched: 0,
            },
        );
    }

    pub fn has(&self, partition: i32) -> bool {
        self.parts.contains_key(&partition)
    }

    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.parts.keys().copied()
    }

    /// A message was read at `offset`, written to Kafka at `kafka_ts` (ms, if known).
    pub fn read(&mut self, partition: i32, offset: i64, kafka_ts: Option<i64>) {
        if let Some(p) = self.parts.get_mut(&partition) {
            p.next = p.next.max(offset + 1);
            p.at_end = None;
            p.fetched += 1;
            if let Some(ts) = kafka_ts {
                p.newest = Some(p.newest.map_or(ts, |n| n.max(ts)));
            }
        }
    }

    /// librdkafka reached the end of the partition, at `now`.
    pub fn reached_end(&mut self, partition: i32, now: Instant) {
        if let Some(p) = self.parts.get_mut(&partition) {
            p.at_end = Some(now);
            p.first_end.get_or_insert(now);
        }
    }

    /// Whether `offset` lies past the end of the window (`--to`).
    pub fn past_window(&self, partition: i32, offset: i64) -> bool {
        self.parts
            .get(&partition)
            .is_some_and(|p| p.until.is_some_and(|u| offset >= u))
    }

    fn history_read_of(p: &Partition, now: Instant) -> bool {
        let settled = |since: Option<Instant>, wait: Duration| {
            since.is_some_and(|t| now.saturating_duration_since(t) >= wait)
        };
        p.until.is_some_and(|u| p.next >= u)
            || settled(p.at_end, SETTLE)
            || settled(p.first_end, MAX_SETTLE)
    }

    /// Whether every partition has been read up to where its history ends.
    pub fn history_read(&self, now: Instant) -> bool {
        self.parts.values().all(|p| Self::history_read_of(p, now))
    }

    /// Partitions whose history is not read yet, with the next offset to read.
    pub fn behind(&self, now: Instant) -> Vec<(i32, i64)> {
        self.parts
            .iter()
            .filter(|(_, p)| !Self::history_read_of(p, now))
            .map(|(&id, p)| (id, p.next))
            .collect()
    }

    /// Messages read in all partitions.
    pub fn fetched(&self) -> u64 {
        self.parts.values().map(|p| p.fetched).sum()
    }

    /// The newest `@timestamp` that no partition can still bring an older event than, before
    /// the caller subtracts its ordering window: the newest Kafka time read in each
    /// partition (what comes next was shipped later). Without `--follow`, a partition whose
    /// history is read brings nothing more; with it, a partition read to its end brings
    /// only what is shipped from `now_ms` on. A partition that has brought nothing yet
    /// holds everything back.
    pub fn limit(&self, follow: bool, now: Instant, now_ms: i64) -> i64 {
        let mut limit = i64::MAX;
        for p in self.parts.values() {
            let bound = if !follow && Self::history_read_of(p, now) {
                i64::MAX
            } else if follow && p.at_end.is_some() {
                now_ms
            } else {
                p.newest.unwrap_or(i64::MIN)
            };
            limit = limit.min(bound);
        }
        limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_and_limit() {
        let t0 = Instant::now();
        let later = |ms: u64| t0 + Duration::from_millis(ms);
        let mut p = Progress::default();
        p.add(0, 10, None);
        p.add(1, 5, None);
        assert!(!p.history_read(t0));
        // Nothing read yet: nothing can be printed.
        assert_eq!(p.limit(false, t0, 1_000), i64::MIN);
        p.read(0, 10, Some(500));
        p.read(0, 11, Some(400));
        p.reached_end(1, t0);
        // An empty partition's end holds everything back until it has settled.
        assert_eq!(p.limit(false, t0, 1_000), i64::MIN);
        assert_eq!(p.limit(false, later(500), 1_000), 500);
        assert_eq!(p.behind(t0), vec![(0, 12), (1, 5)]);
        assert_eq!(p.behind(later(500)), vec![(0, 12)], "partition 1 settled");
        p.reached_end(0, later(100));
        // An end followed by more messages was not one (tansu's watermarks).
        p.read(0, 12, Some(600));
        assert!(!p.history_read(later(700)));
        p.reached_end(0, later(200));
        assert!(!p.history_read(later(600)));
        assert!(p.history_read(later(700)));
        assert_eq!(p.limit(false, later(700), 1_000), i64::MAX);
        // Following: read to the end means "what comes next is shipped from now on".
        assert_eq!(p.limit(true, later(700), 1_000), 1_000);
        p.read(0, 13, Some(700));
        assert_eq!(p.limit(true, later(700), 1_000), 700);
        assert_eq!(p.fetched(), 4);
    }

    #[test]
    fn a_busy_partition_counts_as_read_a_while_after_its_first_end() {
        let t0 = Instant::now();
        let mut p = Progress::default();
        p.add(0, 0, None);
        p.reached_end(0, t0);
        p.read(0, 0, Some(1));
        assert!(!p.history_read(t0 + SETTLE));
        assert!(p.history_read(t0 + MAX_SETTLE));
    }

    #[test]
    fn a_window_with_an_end() {
        let t0 = Instant::now();
        let mut p = Progress::default();
        p.add(0, 0, Some(3));
        assert!(!p.past_window(0, 2));
        assert!(p.past_window(0, 3));
        p.read(0, 2, Some(1));
        assert!(p.history_read(t0), "offset 2 is the window's last");
        assert!(!p.past_window(7, 100), "unknown partition");
    }
}
