//! Watches files that Kubernetes swaps under a mounted ConfigMap or Secret, and calls back when
//! they may have changed. Kubernetes replaces a `..data` symlink in the mount directory instead of
//! writing the files, so the directory is watched, not the file; a slow poll backs up the watcher
//! for filesystems that send no events.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Coalesces the burst of events one swap makes into one reload.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Keeps the watcher alive; dropping it stops the watching task.
pub struct WatchHandle {
    _watcher: Option<RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn watch_dirs(paths: &[PathBuf]) -> BTreeSet<PathBuf> {
    paths
        .iter()
        .map(|p| match p.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect()
}

/// Calls `on_change` after any change in the directories holding `paths`, and every
/// `poll_every` regardless. `on_change` must be cheap when nothing changed (compare contents).
pub fn watch<F>(
    name: &'static str,
    paths: &[&Path],
    poll_every: Duration,
    on_change: F,
) -> WatchHandle
where
    F: Fn() + Send + 'static,
{
    let owned: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let watcher = {
        let tx = tx.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            if res.is_ok() {
                // A full channel already holds a pending reload; dropping this one is fine.
                let _ = tx.try_send(());
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(mut w) => {
                for dir in watch_dirs(&owned) {
                    if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
                        tracing::warn!(watch = name, dir = %dir.display(), error = %e,
                            "cannot watch directory; relying on polling");
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(watch = name, error = %e, "file watcher unavailable; relying on polling");
                None
            }
        }
    };
    let task = tokio::spawn(async move {
        // Held so the channel stays open (and polling goes on) even without a watcher.
        let _keep_open = tx;
        let mut poll = tokio::time::interval(poll_every);
        poll.tick().await;
        loop {
            tokio::select! {
                Some(()) = rx.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = poll.tick() => {}
            }
            on_change();
        }
    });
    WatchHandle {
        _watcher: watcher,
        task,
    }
}
