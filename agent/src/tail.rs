//! Discovery and tailing of the log dir.
//!
//! A file is followed by identity (device + inode + fingerprint of its first line), never by
//! name: log4j renames `x.log` to `x.log.N` and later renames archives again as its window
//! shifts. A tailed file that loses its included name (renamed or deleted) is read to its end
//! through the open descriptor, then released. An archive renamed again keeps its identity, so
//! it is never shipped twice. A file that shrinks (copytruncate) or whose first line changes is
//! restarted from 0 as a new file.
//!
//! Reads are plain positional reads on local files: fast enough to do on the pipeline task.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::checkpoint::{Acks, Entry, Identity, Ledger, StreamId};
use crate::config::Config;
use crate::lines::LineSplitter;
use crate::metrics::{FileLabel, Metrics};
use crate::multiline::{GroupedEvent, Grouper, Line};

/// Scans in a row that must miss a released file before its entry is forgotten.
const FORGET_AFTER_MISSED_SCANS: u8 = 3;

/// Bytes of the first line the fingerprint covers at most.
const FINGERPRINT_MAX: usize = 256;

/// An event read from a file, with what the encoder needs to know about its origin.
#[derive(Debug)]
pub struct ReadEvent {
    pub stream: StreamId,
    pub identity: Identity,
    pub path: Arc<str>,
    pub event: GroupedEvent,
}

struct Tailed {
    identity: Identity,
    path: Arc<str>,
    file: File,
    /// Next byte to read.
    pos: u64,
    /// Cuts what is read into lines; holds the incomplete last line.
    lines: LineSplitter,
    grouper: Grouper,
    /// Still reachable under an included name. When false, it is read to its end and released.
    reachable: bool,
    /// The last read found the end of the file. Growth after that is checked against the
    /// fingerprint before it is read: a copytruncate followed by a rewrite past the old size
    /// would otherwise be read from the old offset and shipped twice.
    at_end: bool,
}

/// FNV-1a: a stable hash (std's hasher may change between Rust releases, and the
/// fingerprint is persisted).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Fingerprint of a file's first line (at most FINGERPRINT_MAX bytes); None until the first
/// line is complete, so the identity of a growing file never changes.
fn fingerprint(file: &File) -> std::io::Result<Option<(u64, u64)>> {
    let mut head = [0u8; FINGERPRINT_MAX];
    let mut n = 0;
    while n < head.len() {
        let r = file.read_at(&mut head[n..], n as u64)?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let head = &head[..n];
    if let Some(i) = head.iter().position(|&b| b == b'\n') {
        return Ok(Some((fnv1a(&head[..=i]), (i + 1) as u64)));
    }
    if n == FINGERPRINT_MAX {
        return Ok(Some((fnv1a(head), n as u64)));
    }
    Ok(None)
}

/// Whether the file at `path` still has the content `ident` was taken from.
fn same_file(path: &Path, ident: &Identity) -> bool {
    File::open(path)
        .and_then(|f| fingerprint_of_len(&f, ident.fingerprint_len))
        .is_ok_and(|fp| fp == Some(ident.fingerprint))
}

fn fingerprint_of_len(file: &File, len: u64) -> std::io::Result<Option<u64>> {
    let mut head = vec![0u8; len as usize];
    let mut n = 0;
    while n < head.len() {
        let r = file.read_at(&mut head[n..], n as u64)?;
        if r == 0 {
            return Ok(None);
        }
        n += r;
    }
    Ok(Some(fnv1a(&head)))
}

pub struct Tailer {
    cfg: Arc<Config>,
    ledger: Arc<Mutex<Ledger>>,
    metrics: Metrics,
    files: HashMap<StreamId, Tailed>,
    by_inode: HashMap<(u64, u64), StreamId>,
    scratch: Vec<u8>,
    /// Names skipped as not regular files at the last scan: each is reported once.
    skipped: HashSet<String>,
    /// New files waiting for room under `--max-files`: each is reported once.
    deferred: HashSet<String>,
}

impl Tailer {
    pub fn new(cfg: Arc<Config>, ledger: Arc<Mutex<Ledger>>, metrics: Metrics) -> Self {
        Self {
            cfg,
            ledger,
            metrics,
            files: HashMap::new(),
            by_inode: HashMap::new(),
            scratch: vec![0; 64 * 1024],
            skipped: HashSet::new(),
            deferred: HashSet::new(),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Streams being tailed, in a stable order.
    pub fn streams(&self) -> Vec<StreamId> {
        let mut v: Vec<_> = self.files.keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn is_own_file(&self, name: &str) -> bool {
        let state = self.cfg.state_file.file_name().and_then(|n| n.to_str());
        state.is_some_and(|s| name == s || name.strip_prefix(s) == Some(".tmp"))
    }

    /// `x.log.N` where `x.log` is an included name: how log4j names its archives.
    fn is_archive_name(&self, name: &str) -> bool {
        match name.rsplit_once('.') {
            Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                self.cfg.included(base)
            }
            _ => false,
        }
    }

    /// Lists the log dir: finds new files, notices renames, deletions and truncations.
    /// `out` receives events closed by a truncation (the old content is still shipped).
    pub fn rescan(&mut self, out: &mut Vec<ReadEvent>) {
        let dir = match std::fs::read_dir(&self.cfg.log_dir) {
            Ok(d) => d,
            Err(e) => {
                self.metrics.read_errors.inc();
                tracing::warn!(dir = %self.cfg.log_dir.display(), error = %e, "cannot list the log dir");
                return;
            }
        };
        let mut listing: Vec<(String, PathBuf, u64, u64, u64)> = Vec::new();
        let mut skipped = HashSet::new();
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if self.is_own_file(&name) {
                continue;
            }
            let path = entry.path();
            // Symlinks are not followed: the log dir is writable by Flink's user code, and a
            // link to the mounted Kafka credentials would ship them to the log topic.
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if md.is_file() {
                listing.push((name, path, md.dev(), md.ino(), md.len()));
            } else if self.cfg.included(&name) || self.is_archive_name(&name) {
                if !self.skipped.contains(&name) {
                    self.metrics.files_skipped.inc();
                    tracing::warn!(path = %path.display(), kind = file_kind(&md.file_type()), "not a regular file; not reading it");
                }
                skipped.insert(name);
            }
        }
        // A name skipped before and regular now (or gone) is reported again if it turns odd.
        self.skipped = skipped;
        listing.sort();
        let present: HashSet<(u64, u64)> = listing.iter().map(|l| (l.2, l.3)).collect();

        let mut reachable: HashSet<StreamId> = HashSet::new();
        let mut deferred = HashSet::new();
        for (name, path, dev, ino, size) in &listing {
            let included = self.cfg.included(name);
            if let Some(&id) = self.by_inode.get(&(*dev, *ino)) {
                if included {
                    reachable.insert(id);
                    if let Some(t) = self.files.get_mut(&id) {
                        let p = path.to_string_lossy();
                        if *t.path != *p {
                            t.path = Arc::from(p.as_ref());
                        }
                    }
                }
                continue;
            }
            if included {
                if !self.make_room(out) {
                    self.defer(name, &mut deferred);
                    continue;
                }
                if let Some(id) = self.open(path, *dev, *ino, true) {
                    reachable.insert(id);
                }
            } else {
                // A file renamed while the agent was not running (x.log -> x.log.3), or an
                // archive of an included file that was rotated before the agent saw it under
                // its live name: unknown archives are shipped, known ones only finished.
                let known = self
                    .ledger()
                    .find_by_inode(*dev, *ino)
                    .map(|(_, e)| (e.identity, e.live, e.done_reading, e.acks.committed()));
                let unfinished = match known {
                    // The inode of a deleted archive can be reused at once by a new file.
                    Some((ident, _, _, _)) if !same_file(path, &ident) => {
                        self.is_archive_name(name)
                    }
                    Some((_, live, done, committed)) => !live && !done && committed < *size,
                    None => self.is_archive_name(name),
                };
                if unfinished {
                    if !self.make_room(out) {
                        self.defer(name, &mut deferred);
                        continue;
                    }
                    self.open(path, *dev, *ino, false);
                }
            }
        }

        self.deferred = deferred;

        // Tailed files no longer under an included name: rotated away or deleted.
        for (id, t) in self.files.iter_mut() {
            if t.reachable && !reachable.contains(id) {
                t.reachable = false;
                self.metrics.rotations.inc();
                tracing::info!(path = %t.path, "file renamed or deleted; reading it to its end");
            }
        }

        // Truncation or rewrite of the files still tailed.
        let ids = self.streams();
        for id in ids {
            self.check_truncation(id, out);
        }

        // Forget files that are gone; what was never acknowledged is lost: say so.
        let mut lost = Vec::new();
        {
            let mut l = self.ledger();
            l.entries.retain(|_, e| {
                if present.contains(&(e.identity.dev, e.identity.ino)) {
                    e.missed_scans = 0;
                    return true;
                }
                e.missed_scans = e.missed_scans.saturating_add(1);
                let gone = !e.live
                    && !e.retired
                    && e.missed_scans >= FORGET_AFTER_MISSED_SCANS
                    && e.acks.in_flight() == 0;
                if gone && e.acks.committed() < e.size {
                    lost.push((e.path.clone(), e.size - e.acks.committed()));
                }
                !gone
            });
            l.gc_retired();
        }
        for (path, bytes) in lost {
            self.metrics.lost_bytes.inc_by(bytes);
            tracing::error!(%path, bytes, "file deleted before it was shipped; bytes lost");
        }

        // Unshipped bytes per file; the size is persisted too, so bytes of a file deleted
        // while the agent is down can be counted as lost after a restart.
        let mut l = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        for (id, t) in self.files.iter() {
            if let Some(e) = l.entries.get_mut(id) {
                let size = t.file.metadata().map(|m| m.len()).unwrap_or(e.size);
                if size != e.size {
                    e.size = size;
                    l.version += 1;
                }
                let Some(e) = l.entries.get(id) else {
                    continue;
                };
                self.metrics
                    .unshipped_bytes
                    .get_or_create(&FileLabel {
                        path: t.path.to_string(),
                    })
                    .set(size.saturating_sub(e.acks.committed()) as i64);
            }
        }
        drop(l);
        self.metrics.files_tailed.set(self.files.len() as i64);
    }

    /// Keeps at most `--max-files` open: over it, a released file (renamed or deleted, being read
    /// to its end) is let go first, the one with the least left to read, and what it had left is
    /// lost, counted and logged. With none released there is no room: false.
    fn make_room(&mut self, out: &mut Vec<ReadEvent>) -> bool {
        if self.files.len() < self.cfg.max_files {
            return true;
        }
        let released = self
            .files
            .iter()
            .filter(|(_, t)| !t.reachable)
            .map(|(id, t)| {
                let len = t.file.metadata().map(|m| m.len()).unwrap_or(t.pos);
                (len.saturating_sub(t.pos), *id)
            })
            .min();
        let Some((left, id)) = released else {
            return false;
        };
        let path = self.files.get(&id).map(|t| t.path.clone());
        let path = path.as_deref().unwrap_or_default();
        if left > 0 {
            self.metrics.lost_bytes.inc_by(left);
            tracing::error!(path, bytes = left, max_files = self.cfg.max_files,
                "too many files open: letting go of a renamed or deleted file before its end; bytes lost");
        } else {
            tracing::info!(
                path,
                max_files = self.cfg.max_files,
                "too many files open: letting go of a renamed or deleted file read to its end"
            );
        }
        self.finish(id, out, false);
        true
    }

    /// A new file that has no room yet: counted, and logged the first time it waits.
    fn defer(&mut self, name: &str, deferred: &mut HashSet<String>) {
        if !self.deferred.contains(name) {
            self.metrics.files_deferred.inc();
            tracing::warn!(
                file = name,
                max_files = self.cfg.max_files,
                "too many files open (--max-files) and none released: not reading this one yet"
            );
        }
        deferred.insert(name.to_string());
    }

    /// Opens a newly seen file, resuming from the ledger when it knows the file.
    fn open(&mut self, path: &Path, dev: u64, ino: u64, reachable: bool) -> Option<StreamId> {
        // O_NONBLOCK: a FIFO swapped in after the listing must not block the reader until a
        // writer comes (it makes no difference to regular files). O_NOFOLLOW: see rescan.
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(f) => f,
            Err(e) => {
                self.metrics.read_errors.inc();
                tracing::warn!(path = %path.display(), error = %e, "cannot open log file");
                return None;
            }
        };
        let md = file.metadata().ok()?;
        if md.dev() != dev || md.ino() != ino || !md.is_file() {
            // Replaced between listing and opening: the next scan sees the new one.
            return None;
        }
        let (fp, fp_len) = match fingerprint(&file) {
            Ok(Some(f)) => f,
            Ok(None) => return None, // first line not complete yet
            Err(e) => {
                self.metrics.read_errors.inc();
                tracing::warn!(path = %path.display(), error = %e, "cannot read log file");
                return None;
            }
        };
        let path_s: Arc<str> = Arc::from(path.to_string_lossy().as_ref());
        let size = md.len();
        let mut l = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let known = l
            .find_by_inode(dev, ino)
            // A file read to its end resumes there, not at its (possibly trailing) checkpoint.
            .map(|(id, e)| {
                let resume = if e.done_reading {
                    e.size
                } else {
                    e.acks.committed()
                };
                (id, e.identity, resume, e.size)
            });
        let resumed = match known {
            Some((id, ident, committed, _)) => {
                let same = fingerprint_of_len(&file, ident.fingerprint_len)
                    .ok()
                    .flatten()
                    == Some(ident.fingerprint);
                if same && committed <= size {
                    Some((id, ident, committed))
                } else {
                    // Inode reused by a new file, or truncated while we were away.
                    if let Some(e) = l.entries.get_mut(&id) {
                        e.retired = true;
                        let lost = e.size.saturating_sub(e.acks.committed());
                        if lost > 0 && !e.live && !e.done_reading {
                            self.metrics.lost_bytes.inc_by(lost);
                            tracing::error!(path = %e.path, bytes = lost, "file replaced before it was shipped; bytes lost");
                        }
                    }
                    None
                }
            }
            None => None,
        };
        let (id, identity, pos) = match resumed {
            Some((id, ident, committed)) => {
                if let Some(e) = l.entries.get_mut(&id) {
                    e.live = true;
                    e.done_reading = false;
                    e.path = path_s.to_string();
                    e.size = size;
                }
                (id, ident, committed)
            }
            None => {
                let identity = Identity {
                    dev,
                    ino,
                    fingerprint: fp,
                    fingerprint_len: fp_len,
                };
                let id = l.insert(Entry {
                    identity,
                    path: path_s.to_string(),
                    acks: Acks::new(0),
                    size,
                    live: true,
                    done_reading: false,
                    retired: false,
                    missed_scans: 0,
                });
                (id, identity, 0)
            }
        };
        l.version += 1;
        drop(l);
        tracing::info!(path = %path_s, offset = pos, size, "tailing file");
        self.by_inode.insert((dev, ino), id);
        self.files.insert(
            id,
            Tailed {
                identity,
                path: path_s,
                file,
                pos,
                lines: LineSplitter::new(self.cfg.max_line_bytes),
                at_end: false,
                grouper: Grouper::new(self.cfg.multiline.clone()),
                reachable,
            },
        );
        Some(id)
    }

    /// Detects a shrunk file or a changed first line: ships what was read of the old content
    /// and forgets the file, so the next scan starts it over from 0 as a new file.
    fn check_truncation(&mut self, id: StreamId, out: &mut Vec<ReadEvent>) -> bool {
        let Some(t) = self.files.get(&id) else {
            return false;
        };
        let len = match t.file.metadata() {
            Ok(m) => m.len(),
            Err(_) => return false,
        };
        let rewritten = len < t.pos
            || fingerprint_of_len(&t.file, t.identity.fingerprint_len)
                .ok()
                .flatten()
                .is_some_and(|fp| fp != t.identity.fingerprint);
        if !rewritten {
            return false;
        }
        self.metrics.truncations.inc();
        tracing::info!(path = %t.path, old_offset = t.pos, size = len, "file truncated; reading it again from the start");
        self.finish(id, out, true);
        true
    }

    /// Releases a file: ships its last partial line and pending event.
    fn finish(&mut self, id: StreamId, out: &mut Vec<ReadEvent>, retire: bool) {
        let Some(mut t) = self.files.remove(&id) else {
            return;
        };
        let now = Instant::now();
        let Tailed {
            lines,
            grouper,
            identity,
            path,
            pos,
            ..
        } = &mut t;
        let mut emit = |line: Line<'_>| {
            if let Some(ev) = grouper.push(line, now) {
                out.push(read_event(id, identity, path, ev));
            }
        };
        // The file will not grow any more: its last line has no newline, ship it as is.
        let counts = lines.finish(*pos, &mut emit);
        self.metrics.lines_read.inc_by(counts.lines);
        if let Some(ev) = grouper.flush() {
            out.push(read_event(id, identity, path, ev));
        }
        self.by_inode.remove(&(t.identity.dev, t.identity.ino));
        {
            let mut l = self.ledger();
            if let Some(e) = l.entries.get_mut(&id) {
                e.live = false;
                e.done_reading = true;
                e.size = t.pos;
                if retire {
                    e.retired = true;
                }
            }
            l.version += 1;
        }
        self.metrics.unshipped_bytes.remove(&FileLabel {
            path: t.path.to_string(),
        });
        self.metrics.files_tailed.set(self.files.len() as i64);
    }

    /// Reads up to `budget` bytes of one file; returns how many were read (0: at its end).
    /// A file at its end that lost its name is released.
    pub fn read(&mut self, id: StreamId, budget: usize, out: &mut Vec<ReadEvent>) -> usize {
        let now = Instant::now();
        let resumed = match self.files.get(&id) {
            Some(t) => t.at_end && t.reachable,
            None => return 0,
        };
        if resumed && self.check_truncation(id, out) {
            return 0;
        }
        let Some(t) = self.files.get_mut(&id) else {
            return 0;
        };
        let want = budget.min(self.scratch.len());
        let n = match t.file.read_at(&mut self.scratch[..want], t.pos) {
            Ok(n) => n,
            Err(e) => {
                self.metrics.read_errors.inc();
                tracing::warn!(path = %t.path, error = %e, "read failed; retrying later");
                return 0;
            }
        };
        t.at_end = n == 0;
        if n == 0 {
            let reachable = t.reachable;
            let shrunk = t.file.metadata().is_ok_and(|m| m.len() < t.pos);
            if !reachable {
                tracing::info!(path = %t.path, offset = t.pos, "finished reading a rotated or deleted file");
                self.finish(id, out, false);
            } else if shrunk {
                self.check_truncation(id, out);
            }
            return 0;
        }
        let offset = t.pos;
        t.pos += n as u64;
        self.metrics.bytes_read.inc_by(n as u64);
        let Tailed {
            lines,
            grouper,
            identity,
            path,
            ..
        } = t;
        let counts = lines.push(&self.scratch[..n], offset, &mut |line| {
            if let Some(ev) = grouper.push(line, now) {
                out.push(read_event(id, identity, path, ev));
            }
        });
        self.metrics.lines_read.inc_by(counts.lines);
        self.metrics.lines_split.inc_by(counts.splits);
        n
    }

    /// Closes events that waited longer than the idle time.
    pub fn flush_idle(&mut self, now: Instant, out: &mut Vec<ReadEvent>) {
        for (&id, t) in self.files.iter_mut() {
            if let Some(ev) = t.grouper.flush_idle(now) {
                out.push(read_event(id, &t.identity, &t.path, ev));
            }
        }
    }

    /// Closes every pending event (shutdown: what was read is shipped).
    pub fn flush_all(&mut self, out: &mut Vec<ReadEvent>) {
        for (&id, t) in self.files.iter_mut() {
            if let Some(ev) = t.grouper.flush() {
                out.push(read_event(id, &t.identity, &t.path, ev));
            }
        }
    }
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else {
        "device"
    }
}

fn read_event(
    id: StreamId,
    identity: &Identity,
    path: &Arc<str>,
    event: GroupedEvent,
) -> ReadEvent {
    ReadEvent {
        stream: id,
        identity: *identity,
        path: path.clone(),
        event,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
