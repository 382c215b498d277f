//! Putting the events of many pods, read from many partitions, in `@timestamp` order without
//! ever reordering one file's events. Pure, no I/O.
//!
//! Kafka keeps order only within a partition, and a partition holds several pods' events in
//! the order their agents shipped them. Each file's events are kept in a queue of their own,
//! in the order they were read (file order, even where Flink's timestamps go backwards), and
//! the queue whose first event is the oldest is printed from: a merge of the files.
//!
//! An event is held until no partition can still bring an older one. The agent ships an
//! event moments after Flink writes it, and a message's Kafka timestamp is when its agent
//! shipped it, so once every partition has been read past Kafka time `K`, what is still
//! to come was written after about `K - window` ([`crate::progress`] computes that limit).
//! An event shipped later than `window` after it was written (its agent was catching up)
//! can arrive after newer events of other files were printed: it is printed when it arrives
//! and counted in [`Merger::out_of_order`]. Memory is bounded: past `max_bytes` held, the
//! oldest event is printed whatever the limit (counted in [`Merger::forced`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

#[derive(Debug)]
struct Held {
    ts: i64,
    seq: u64,
    out: Vec<u8>,
}

/// The first event of a file's queue: ordered by time, then by arrival.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Head {
    ts: i64,
    seq: u64,
    file: usize,
}

#[derive(Debug)]
pub struct Merger {
    max_bytes: usize,
    files: Vec<VecDeque<Held>>,
    ids: HashMap<String, usize>,
    heads: BinaryHeap<Reverse<Head>>,
    seq: u64,
    held_bytes: usize,
    held: usize,
    /// The newest `@timestamp` printed, and the file it came from.
    newest: Option<(i64, usize)>,
    pub out_of_order: u64,
    pub forced: u64,
    pub peak_held: usize,
    pub peak_held_bytes: usize,
}

impl Merger {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            files: Vec::new(),
            ids: HashMap::new(),
            heads: BinaryHeap::new(),
            seq: 0,
            held_bytes: 0,
            held: 0,
            newest: None,
            out_of_order: 0,
            forced: 0,
            peak_held: 0,
            peak_held_bytes: 0,
        }
    }

    /// Holds an event of `file` (any key that names one file of one pod), rendered as `out`.
    pub fn push(&mut self, file: &str, ts: i64, out: Vec<u8>) {
        let idx = match self.ids.get(file) {
            Some(&i) => i,
            None => {
                self.files.push(VecDeque::new());
                let i = self.files.len() - 1;
                self.ids.insert(file.to_string(), i);
                i
            }
        };
        let seq = self.seq;
        self.seq += 1;
        let queue = &mut self.files[idx];
        if queue.is_empty() {
            self.heads.push(Reverse(Head { ts, seq, file: idx }));
        }
        self.held_bytes += out.len();
        self.held += 1;
        queue.push_back(Held { ts, seq, out });
        self.peak_held = self.peak_held.max(self.held);
        self.peak_held_bytes = self.peak_held_bytes.max(self.held_bytes);
    }

    /// The oldest held event if it is at or before `limit` (ms since the epoch; `i64::MAX`
    /// empties the buffer), or if the buffer is over its size.
    pub fn pop(&mut self, limit: i64) -> Option<Vec<u8>> {
        let Reverse(head) = self.heads.peek()?;
        let over = self.held_bytes > self.max_bytes;
        if head.ts > limit && !over {
            return None;
        }
        if head.ts > limit {
            self.forced += 1;
        }
        let Reverse(head) = self.heads.pop()?;
        let queue = &mut self.files[head.file];
        let held = queue.pop_front()?;
        if let Some(next) = queue.front() {
            self.heads.push(Reverse(Head {
                ts: next.ts,
                seq: next.seq,
                file: head.file,
            }));
        }
        self.held -= 1;
        self.held_bytes -= held.out.len();
        match self.newest {
            Some((newest, file)) if held.ts < newest && file != head.file => {
                self.out_of_order += 1;
            }
            Some((newest, _)) if held.ts <= newest => {}
            _ => self.newest = Some((held.ts, head.file)),
        }
        Some(held.out)
    }

    pub fn is_empty(&self) -> bool {
        self.held == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain(m: &mut Merger, limit: i64) -> Vec<String> {
        std::iter::from_fn(|| m.pop(limit))
            .map(|b| String::from_utf8(b).unwrap())
            .collect()
    }

    #[test]
    fn files_are_merged_by_time_and_each_keeps_its_order() {
        let mut m = Merger::new(1 << 20);
        // File a goes back in time (Flink's threads): its order stays.
        for (file, ts, name) in [
            ("a", 10, "a10"),
            ("a", 30, "a30"),
            ("a", 20, "a20"),
            ("b", 15, "b15"),
            ("b", 25, "b25"),
            ("c", 15, "c15"),
        ] {
            m.push(file, ts, name.into());
        }
        assert_eq!(drain(&mut m, 14), ["a10"]);
        assert_eq!(drain(&mut m, 15), ["b15", "c15"], "equal times: arrival");
        assert_eq!(drain(&mut m, i64::MAX), ["b25", "a30", "a20"]);
        assert!(m.is_empty());
        assert_eq!(m.out_of_order, 0, "a file's own order is not a fault");
    }

    #[test]
    fn a_late_event_is_printed_and_counted() {
        let mut m = Merger::new(1 << 20);
        m.push("a", 100, "a100".into());
        assert_eq!(drain(&mut m, 100), ["a100"]);
        m.push("b", 50, "b50".into());
        assert_eq!(drain(&mut m, 100), ["b50"]);
        assert_eq!(m.out_of_order, 1);
    }

    #[test]
    fn a_full_buffer_prints_its_oldest() {
        let mut m = Merger::new(10);
        for i in 0..5 {
            m.push("a", i, format!("{i:04}").into_bytes());
        }
        // 20 bytes held, limit 10: the oldest go until it fits.
        assert_eq!(drain(&mut m, i64::MIN), ["0000", "0001", "0002"]);
        assert_eq!(m.forced, 3);
        assert_eq!(m.peak_held, 5);
    }

    proptest! {
        /// Whatever the interleaving of the files' arrivals: with no limit, the output is
        /// every event once, each file in its own order, and in time order wherever the
        /// files' heads allow (a merge of sorted files is sorted).
        #[test]
        fn a_merge_of_files(
            files in proptest::collection::vec(proptest::collection::vec(0i64..1000, 0..30), 1..6),
            order in proptest::collection::vec(0usize..6, 0..200),
        ) {
            let mut sorted = files.clone();
            for f in &mut sorted {
                f.sort();
            }
            let mut m = Merger::new(usize::MAX);
            let mut next = vec![0usize; sorted.len()];
            let push = |m: &mut Merger, f: usize, next: &mut Vec<usize>| {
                if let Some(&ts) = sorted[f].get(next[f]) {
                    m.push(&f.to_string(), ts, format!("{f}:{}:{ts}", next[f]).into_bytes());
                    next[f] += 1;
                }
            };
            for o in order {
                push(&mut m, o % sorted.len(), &mut next);
            }
            for f in 0..sorted.len() {
                while next[f] < sorted[f].len() {
                    push(&mut m, f, &mut next);
                }
            }
            let out = drain(&mut m, i64::MAX);
            let total: usize = sorted.iter().map(Vec::len).sum();
            prop_assert_eq!(out.len(), total);
            let ts: Vec<i64> = out.iter().map(|s| s.rsplit(':').next().unwrap().parse().unwrap()).collect();
            prop_assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{:?}", ts);
            for (f, file) in sorted.iter().enumerate() {
                let idx: Vec<usize> = out
                    .iter()
                    .filter(|s| s.split(':').next() == Some(&f.to_string()))
                    .map(|s| s.split(':').nth(1).unwrap().parse().unwrap())
                    .collect();
                prop_assert_eq!(idx, (0..file.len()).collect::<Vec<_>>());
            }
        }
    }
}
