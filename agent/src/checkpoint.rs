//! Read positions: which bytes of which file Kafka has acknowledged, and their persistence.
//!
//! Acknowledgements come back in any order (retries, several partitions in the future); the
//! committed offset of a file only moves past an event once that event AND every event before it
//! in the file are acknowledged. So the checkpoint always trails what Kafka holds: a crash can
//! cause duplicates (events in flight), never loss.
//!
//! The state file is written atomically: temp file in the same dir, fsync, rename, fsync dir.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What identifies a file whatever its name: device + inode, plus a fingerprint of its first
/// line so a reused inode is recognised as a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub fingerprint: u64,
    /// How many leading bytes the fingerprint covers.
    pub fingerprint_len: u64,
}

/// In-order acknowledgement of the events of one file.
#[derive(Debug, Clone)]
pub struct Acks {
    /// Sequence number of `pending[0]`.
    base_seq: u64,
    /// End offset of each event not yet committed, and whether Kafka acknowledged it.
    pending: VecDeque<(u64, bool)>,
    committed: u64,
}

impl Acks {
    /// Starts at `offset`: everything before it is already in Kafka.
    pub fn new(offset: u64) -> Self {
        Self {
            base_seq: 0,
            pending: VecDeque::new(),
            committed: offset,
        }
    }

    /// Registers the next event of the file (in file order), ending at `end`; returns its seq.
    pub fn register(&mut self, end: u64) -> u64 {
        self.pending.push_back((end, false));
        self.base_seq + self.pending.len() as u64 - 1
    }

    /// Marks event `seq` acknowledged; returns whether the committed offset moved.
    pub fn ack(&mut self, seq: u64) -> bool {
        let Some(idx) = seq.checked_sub(self.base_seq) else {
            return false;
        };
        match self.pending.get_mut(idx as usize) {
            Some(slot) => slot.1 = true,
            None => return false,
        }
        let mut moved = false;
        while let Some(&(end, true)) = self.pending.front() {
            self.committed = end;
            self.pending.pop_front();
            self.base_seq += 1;
            moved = true;
        }
        moved
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

/// One file as the ledger knows it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub identity: Identity,
    pub path: String,
    pub acks: Acks,
    /// Last size seen on disk, to report unshipped and lost bytes.
    pub size: u64,
    /// Being tailed right now (false: restored from the state file, or released).
    pub live: bool,
    /// Read to its end and released (its last events may still be in flight): seeing it
    /// again, under any name, must not read it again.
    pub done_reading: bool,
    /// Replaced by a newer generation of the same inode (truncation): never persisted.
    pub retired: bool,
    /// Consecutive scans of the log dir that did not list its inode. A listing taken while
    /// log4j renames archives one index down can miss a file that still exists, so an entry
    /// is forgotten only after several misses: forgetting it at once would ship the archive
    /// again from 0 when it reappears.
    pub missed_scans: u8,
}

pub type StreamId = u64;

/// All files' positions, shared by the reader (register), the delivery tasks (ack) and the
/// checkpoint writer (snapshot).
#[derive(Debug, Default)]
pub struct Ledger {
    pub entries: HashMap<StreamId, Entry>,
    next_id: StreamId,
    /// Bumped on every change, so the writer skips writes that would change nothing.
    pub version: u64,
}

impl Ledger {
    /// A ledger holding the entries of a state file, not yet matched to live files.
    pub fn restore(state: StateFile) -> Self {
        let mut l = Ledger::default();
        for f in state.files {
            l.insert(Entry {
                identity: f.identity,
                path: f.path,
                acks: Acks::new(f.offset),
                size: f.size,
                live: false,
                done_reading: false,
                retired: false,
                missed_scans: 0,
            });
        }
        l
    }

    pub fn insert(&mut self, e: Entry) -> StreamId {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(id, e);
        self.version += 1;
        id
    }

    /// A restored or released entry for this device and inode.
    pub fn find_by_inode(&self, dev: u64, ino: u64) -> Option<(StreamId, &Entry)> {
        self.entries
            .iter()
            .filter(|(_, e)| !e.retired && e.identity.dev == dev && e.identity.ino == ino)
            .max_by_key(|(id, _)| **id)
            .map(|(id, e)| (*id, e))
    }

    pub fn register(&mut self, id: StreamId, end: u64) -> Option<u64> {
        self.entries.get_mut(&id).map(|e| e.acks.register(end))
    }

    pub fn ack(&mut self, id: StreamId, seq: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            if e.acks.ack(seq) {
                self.version += 1;
            }
        }
    }

    /// Drops entries that are done with: retired ones with nothing in flight.
    pub fn gc_retired(&mut self) {
        self.entries
            .retain(|_, e| !(e.retired && e.acks.in_flight() == 0));
    }

    /// What the state file should hold now.
    pub fn snapshot(&self) -> StateFile {
        let mut files: Vec<FileState> = self
            .entries
            .values()
            .filter(|e| !e.retired)
            .map(|e| FileState {
                identity: e.identity,
                path: e.path.clone(),
                offset: e.acks.committed(),
                size: e.size,
            })
            .collect();
        files.sort_by(|a, b| {
            a.path
                .cmp(&b.path)
                .then(a.identity.ino.cmp(&b.identity.ino))
        });
        StateFile { version: 1, files }
    }
}

/// The persisted form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    pub version: u32,
    pub files: Vec<FileState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    #[serde(flatten)]
    pub identity: Identity,
    /// The name it had when last seen (informational: files are matched by identity).
    pub path: String,
    /// Every byte before this offset is acknowledged by Kafka.
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("reading state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Loads the state file; a missing file is an empty state.
pub fn load(path: &Path) -> Result<StateFile, CheckpointError> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data).map_err(|source| CheckpointError::Parse {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile {
            version: 1,
            files: vec![],
        }),
        Err(source) => Err(CheckpointError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The state file's name in the log dir, where it was kept before it moved to a volume only the
/// agent mounts (Flink can write the log volume, and so skip or re-ship logs through it).
pub const LEGACY_NAME: &str = ".flink-agent-checkpoints.json";

/// What [`load_migrating`] did with a state file left in the log dir.
#[derive(Debug, PartialEq, Eq)]
pub enum Migration {
    /// None there, or the state file is the legacy one itself.
    Nothing,
    /// Its positions were taken, saved at the new place and the old file removed.
    Moved,
    /// Its positions were taken but could not be saved at the new place (the reason); it stays
    /// until the first checkpoint there succeeds.
    Taken(String),
    /// The new state file exists: the old one is not read (it may have been written by Flink).
    Ignored,
}

/// Loads the state at `path`. When there is none yet but the log dir holds a state file of the
/// old layout (`legacy`), its positions are read once, saved at `path`, and the old file is
/// removed: from then on `path` exists and the old place is never read again.
pub fn load_migrating(
    path: &Path,
    legacy: &Path,
) -> Result<(StateFile, Migration), CheckpointError> {
    if legacy == path || !legacy.exists() {
        return Ok((load(path)?, Migration::Nothing));
    }
    if path.exists() {
        return Ok((load(path)?, Migration::Ignored));
    }
    let state = load(legacy)?;
    match save(path, &state) {
        Ok(()) => {
            // Left behind only if the log volume refuses; `path` exists now either way.
            let _ = std::fs::remove_file(legacy);
            Ok((state, Migration::Moved))
        }
        Err(e) => Ok((state, Migration::Taken(e.to_string()))),
    }
}

/// Writes the state file atomically: a crash leaves either the old or the new file, whole.
pub fn save(path: &Path, state: &StateFile) -> Result<(), CheckpointError> {
    let err = |source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    };
    let data = serde_json::to_vec_pretty(state).map_err(|e| err(std::io::Error::other(e)))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(&data)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        // A partial temp file would hold space on a volume that is full (shared with Flink's
        // logs by default); the old state file is intact.
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    // The rename is durable only once the directory entry is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_legacy_state_file_is_read_once_then_never_again() -> Result<(), CheckpointError> {
        let dir = tempfile::tempdir().map_err(|source| CheckpointError::Read {
            path: PathBuf::from("tempdir"),
            source,
        })?;
        let logs = dir.path().join("log");
        let state_dir = dir.path().join("state");
        for d in [&logs, &state_dir] {
            std::fs::create_dir(d).map_err(|source| CheckpointError::Read {
                path: d.clone(),
                source,
            })?;
        }
        let legacy = logs.join(LEGACY_NAME);
        let path = state_dir.join("checkpoints.json");
        let old = StateFile {
            version: 1,
            files: vec![FileState {
                identity: Identity {
                    dev: 1,
                    ino: 2,
                    fingerprint: 3,
                    fingerprint_len: 64,
                },
                path: "/opt/flink/log/jm.log".into(),
                offset: 4096,
                size: 8192,
            }],
        };
        save(&legacy, &old)?;
        // First start with the new layout: the old positions, moved.
        let (state, how) = load_migrating(&path, &legacy)?;
        assert_eq!((state, how), (old.clone(), Migration::Moved));
        assert!(path.exists() && !legacy.exists());
        // Flink (or anyone) writes a file at the old place again: not read.
        let forged = StateFile {
            version: 1,
            files: vec![],
        };
        save(&legacy, &forged)?;
        let (state, how) = load_migrating(&path, &legacy)?;
        assert_eq!((state, how), (old, Migration::Ignored));
        // The old layout itself (no --state-file): read as always.
        let (state, how) = load_migrating(&legacy, &legacy)?;
        assert_eq!((state, how), (forged, Migration::Nothing));
        Ok(())
    }

    #[test]
    fn commits_only_contiguous_acks_whatever_the_order() {
        let mut a = Acks::new(100);
        let s: Vec<u64> = [150, 200, 260, 300]
            .iter()
            .map(|&e| a.register(e))
            .collect();
        assert!(!a.ack(s[2]));
        assert_eq!(a.committed(), 100);
        assert!(!a.ack(s[1]));
        assert_eq!(a.committed(), 100);
        assert!(a.ack(s[0]));
        assert_eq!(a.committed(), 260);
        assert_eq!(a.in_flight(), 1);
        assert!(a.ack(s[3]));
        assert_eq!(a.committed(), 300);
        // Unknown and repeated acks change nothing.
        assert!(!a.ack(s[3]));
        assert!(!a.ack(99));
        let n = a.register(310);
        assert!(a.ack(n));
        assert_eq!(a.committed(), 310);
    }

    #[test]
    fn ordering_over_fixture_events_with_shuffled_acks() {
        // Group a real fixture, register its events, ack them in a scrambled order and check
        // the committed offset never passes an unacknowledged event.
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/flink-logs/taskexecutor.log.stacktrace30.txt");
        let data = std::fs::read(p).unwrap();
        let mut g = crate::multiline::Grouper::new(crate::multiline::tests::cfg());
        let evs = crate::multiline::tests::group_all(&mut g, &data);
        assert!(evs.len() >= 3);
        let mut a = Acks::new(0);
        let seqs: Vec<u64> = evs.iter().map(|e| a.register(e.end)).collect();
        let mut order: Vec<usize> = (0..evs.len()).collect();
        order.reverse();
        order.rotate_left(1);
        let mut acked = vec![false; evs.len()];
        for i in order {
            a.ack(seqs[i]);
            acked[i] = true;
            let first_unacked = acked.iter().position(|x| !x);
            let want = match first_unacked {
                Some(0) => 0,
                Some(k) => evs[k - 1].end,
                None => evs.last().unwrap().end,
            };
            assert_eq!(a.committed(), want);
        }
        assert_eq!(a.committed(), data.len() as u64);
    }

    /// Events of one file as (end offset) steps, and an acknowledgement order that may repeat
    /// acks and interleave them with new registrations.
    fn acks_scenario() -> impl Strategy<Value = (u64, Vec<u64>, Vec<usize>)> {
        (0u64..1000, proptest::collection::vec(1u64..500, 1..60)).prop_flat_map(|(start, lens)| {
            let n = lens.len();
            // Every event acked once, some twice (at-least-once delivery reports), shuffled.
            let order = (
                Just((0..n).collect::<Vec<_>>()),
                proptest::collection::vec(0..n, 0..10),
            )
                .prop_map(|(mut all, dup)| {
                    all.extend(dup);
                    all
                })
                .prop_shuffle();
            (Just(start), Just(lens), order)
        })
    }

    proptest! {
        /// Whatever order Kafka acknowledges in, the committed offset is the end of the longest
        /// acknowledged prefix of events: it never passes an unacknowledged event and never
        /// moves back.
        #[test]
        fn committed_offset_never_passes_an_unacknowledged_event(
            (start, lens, order) in acks_scenario(),
            register_ahead in 1usize..8,
        ) {
            let mut ends = Vec::new();
            let mut at = start;
            for l in &lens {
                at += l;
                ends.push(at);
            }
            let mut a = Acks::new(start);
            let mut seqs: Vec<u64> = Vec::new();
            let mut acked = vec![false; ends.len()];
            let mut last = start;
            for &i in &order {
                // The reader keeps registering while acks come back: register up to i (and a few
                // more) before acknowledging i.
                while seqs.len() <= (i + register_ahead).min(ends.len() - 1) {
                    seqs.push(a.register(ends[seqs.len()]));
                }
                a.ack(seqs[i]);
                acked[i] = true;
                let prefix = acked.iter().take_while(|x| **x).count();
                let want = if prefix == 0 { start } else { ends[prefix - 1] };
                prop_assert_eq!(a.committed(), want);
                prop_assert!(a.committed() >= last);
                last = a.committed();
                prop_assert_eq!(a.in_flight(), seqs.len() - prefix.min(seqs.len()));
            }
            prop_assert_eq!(a.committed(), *ends.last().unwrap_or(&start));
        }
    }

    #[test]
    fn save_and_load_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        assert_eq!(load(&path).unwrap().files.len(), 0);
        let mut l = Ledger::default();
        let id = l.insert(Entry {
            identity: Identity {
                dev: 1,
                ino: 2,
                fingerprint: 3,
                fingerprint_len: 4,
            },
            path: "/x.log".into(),
            acks: Acks::new(0),
            size: 10,
            live: true,
            done_reading: false,
            retired: false,
            missed_scans: 0,
        });
        let s = l.register(id, 10).unwrap();
        l.ack(id, s);
        save(&path, &l.snapshot()).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.files[0].offset, 10);
        assert_eq!(back.files[0].identity.ino, 2);
        let l2 = Ledger::restore(back);
        assert_eq!(l2.find_by_inode(1, 2).unwrap().1.acks.committed(), 10);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("cp.json"));
    }
}
