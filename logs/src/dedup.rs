//! Dropping the copies that at-least-once delivery leaves in Kafka. Pure, no I/O.
//!
//! The agent ships each file's events in file order and, after a crash, ships them again
//! from its last checkpoint: a copy is an event whose `event.id` (`<file>-<offset>`) was
//! seen before. Rather than remember every id, the reader keeps, per file and partition, the
//! span of offsets it has read: the file's events come in offset order and every message of
//! the partition in the span was read, so an offset inside the span is a copy. An offset
//! below the span is the copy of an event from before the window (its first copy was not
//! read) and is shown. Memory is one entry per file, however long it runs.
//!
//! Per partition, because a pod's messages move to another partition if the topic gets more
//! partitions: its old and new messages are then read side by side, and one must not hide the
//! other. A copy sent across such a change is shown twice rather than lost.

use std::collections::HashMap;

/// The offsets of one file read so far in one partition.
#[derive(Debug, Clone, Copy)]
struct Span {
    first: u64,
    last: u64,
}

#[derive(Debug, Default)]
pub struct Dedup {
    spans: HashMap<String, Span>,
    /// Reused to build the map key without allocating for files already known.
    key: String,
    pub dropped: u64,
}

impl Dedup {
    /// Whether this event is a copy of one already read (and counts it as dropped).
    pub fn is_copy(&mut self, partition: i32, pod: &str, file: &str, offset: u64) -> bool {
        use std::fmt::Write;
        self.key.clear();
        let _ = write!(self.key, "{partition}/{pod}/{file}");
        match self.spans.get_mut(self.key.as_str()) {
            None => {
                self.spans.insert(
                    self.key.clone(),
                    Span {
                        first: offset,
                        last: offset,
                    },
                );
                false
            }
            Some(span) if offset > span.last => {
                span.last = offset;
                false
            }
            Some(span) if offset >= span.first => {
                self.dropped += 1;
                true
            }
            Some(_) => false,
        }
    }

    /// Files tracked (for the memory figures).
    pub fn files(&self) -> usize {
        self.spans.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn a_resend_after_a_crash_is_dropped() {
        let mut d = Dedup::default();
        // First copies 0..10, then the agent restarts from its checkpoint at 6.
        let mut shown = Vec::new();
        for off in (0..10).chain(6..14) {
            if !d.is_copy(0, "tm-1", "801-2a-7", off) {
                shown.push(off);
            }
        }
        assert_eq!(shown, (0..14).collect::<Vec<_>>());
        assert_eq!(d.dropped, 4);
    }

    #[test]
    fn files_pods_and_partitions_are_apart() {
        let mut d = Dedup::default();
        assert!(!d.is_copy(0, "tm-1", "f", 5));
        assert!(!d.is_copy(0, "tm-1", "g", 5));
        assert!(!d.is_copy(0, "tm-2", "f", 5));
        assert!(!d.is_copy(1, "tm-1", "f", 5));
        assert!(d.is_copy(0, "tm-1", "f", 5));
        assert_eq!(d.files(), 4);
    }

    #[test]
    fn a_copy_of_an_event_before_the_window_is_shown() {
        let mut d = Dedup::default();
        // The window starts at offset 100; the agent then re-sends from 40.
        for off in [100, 120, 140] {
            assert!(!d.is_copy(0, "p", "f", off));
        }
        assert!(!d.is_copy(0, "p", "f", 40));
        assert!(!d.is_copy(0, "p", "f", 60));
        assert!(d.is_copy(0, "p", "f", 100));
        assert!(d.is_copy(0, "p", "f", 140));
        assert!(!d.is_copy(0, "p", "f", 160));
    }

    proptest! {
        /// Any number of crashes, each re-sending from any earlier point: exactly the first
        /// copy of every event is kept, in file order.
        #[test]
        fn keeps_exactly_the_first_copies(
            n in 1u64..200,
            restarts in proptest::collection::vec((0u64..200, 0u64..200), 0..6),
        ) {
            // The sequence the agent sends: 0..cut, then from a checkpoint before the cut.
            let mut sent = Vec::new();
            let mut pos = 0;
            for (cut, back) in restarts {
                let cut = cut % (n + 1);
                if cut < pos {
                    continue;
                }
                sent.extend(pos..cut);
                pos = cut - (back % (cut + 1));
            }
            sent.extend(pos..n);
            let mut d = Dedup::default();
            let mut seen = HashSet::new();
            let mut shown = Vec::new();
            for &off in &sent {
                let copy = d.is_copy(3, "pod", "file", off * 7);
                prop_assert_eq!(copy, !seen.insert(off));
                if !copy {
                    shown.push(off);
                }
            }
            prop_assert_eq!(shown, (0..n).collect::<Vec<_>>());
        }
    }
}
