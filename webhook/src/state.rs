//! What every request reads: the current policy (swapped on reload), what the cluster supports,
//! and the metrics.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::metrics::Metrics;
use crate::patch::MutationContext;
use crate::policy::{NativeSidecar, Policy, PolicyError};

pub struct AppState {
    policy: ArcSwap<Policy>,
    policy_path: PathBuf,
    /// The text of the policy in force, so a reload of unchanged bytes is not counted.
    policy_text: Mutex<String>,
    /// The API server's answer for `nativeSidecar: auto`, read once at start-up.
    cluster_native_sidecars: bool,
    pub metrics: Metrics,
    /// Memory that request bodies may hold (see `server::BODY_BUDGET_BYTES`).
    pub body_budget: crate::server::BodyBudget,
    ready: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading policy {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy {path}: {source}")]
    Invalid { path: PathBuf, source: PolicyError },
}

fn read_policy(path: &Path) -> Result<(String, Policy), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let policy = Policy::from_yaml(&text).map_err(|source| LoadError::Invalid {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((text, policy))
}

impl AppState {
    /// Loads the policy; an invalid one here is fatal (the caller exits non-zero).
    pub fn new(policy_path: &Path, cluster_native_sidecars: bool) -> Result<Self, LoadError> {
        let (text, policy) = read_policy(policy_path)?;
        let state = Self {
            policy: ArcSwap::from_pointee(policy),
            policy_path: policy_path.to_path_buf(),
            policy_text: Mutex::new(text),
            cluster_native_sidecars,
            metrics: Metrics::new(),
            body_budget: Default::default(),
            ready: AtomicBool::new(false),
        };
        state.publish_native_sidecar();
        Ok(state)
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    pub fn policy_path(&self) -> &Path {
        &self.policy_path
    }

    /// What the engine needs about the cluster; an explicit `nativeSidecar: true|false` in the
    /// (per-namespace) policy wins over it inside the engine.
    pub fn context(&self) -> MutationContext {
        MutationContext {
            native_sidecar: self.cluster_native_sidecars,
        }
    }

    fn publish_native_sidecar(&self) {
        let native =
            resolve_native_sidecar(self.policy().native_sidecar(), self.cluster_native_sidecars);
        self.metrics.native_sidecar.set(i64::from(native));
    }

    /// Re-reads the policy file. A policy that fails to load keeps the last good one in force.
    pub fn reload_policy(&self) {
        let (text, policy) = match read_policy(&self.policy_path) {
            Ok(loaded) => loaded,
            Err(e) => {
                // Only count a failure once per bad content, not on every poll.
                let current = std::fs::read_to_string(&self.policy_path).unwrap_or_default();
                let mut last = self.policy_text.lock().unwrap_or_else(|p| p.into_inner());
                if *last != current {
                    *last = current;
                    tracing::error!(error = %e, "policy reload failed; keeping the last good policy");
                    Metrics::reload(&self.metrics.policy_reloads, false);
                }
                return;
            }
        };
        {
            let mut last = self.policy_text.lock().unwrap_or_else(|p| p.into_inner());
            if *last == text {
                return;
            }
            *last = text;
        }
        self.policy.store(Arc::new(policy));
        self.publish_native_sidecar();
        Metrics::reload(&self.metrics.policy_reloads, true);
        tracing::info!(path = %self.policy_path.display(), "policy reloaded");
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

pub fn resolve_native_sidecar(setting: NativeSidecar, cluster_supports: bool) -> bool {
    match setting {
        NativeSidecar::Enabled => true,
        NativeSidecar::Disabled => false,
        NativeSidecar::Auto => cluster_supports,
    }
}
