//! Shared harness for the end-to-end tests: where the built binaries and the test tools live,
//! free ports on 127.0.0.1, and child processes that are killed when a test ends.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `.tools/`, filled by `scripts/install-test-deps.sh`.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("FLINK_INJECTOR_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools"))
}

/// A tool the tests need; a missing one is an error that says how to install it, never a skip.
pub fn tool(rel: &str) -> Result<PathBuf> {
    let path = tools_dir().join(rel);
    if !path.exists() {
        bail!(
            "{} is missing: run scripts/install-test-deps.sh first",
            path.display()
        );
    }
    Ok(path)
}

/// Cargo's target dir: `CARGO_TARGET_DIR`, else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// A binary of this workspace, built by `cargo build --workspace --bins` (scripts/test.sh does it).
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    // Test executables live in target/<profile>/deps; the binaries one level up.
    let exe = std::env::current_exe().context("locating the test executable")?;
    let mut candidates = Vec::new();
    if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
        candidates.push(profile_dir.join(name));
    }
    candidates.push(target_dir().join("debug").join(name));
    candidates
        .into_iter()
        .find(|p| p.exists())
        .with_context(|| {
            format!("binary {name} not found: run `cargo build --workspace --bins` first")
        })
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A child process that is killed (and reaped) when dropped, so a failing test leaves nothing running.
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            child,
            name: name.to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by number (15 = SIGTERM, 9 = SIGKILL) through kill(1): no `unsafe` needed.
    pub fn signal(&self, sig: i32) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -{sig} {} failed", self.pid());
        }
        Ok(())
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Ok(Some(v))` or `timeout` passes; the last error is reported.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            match last_err {
                Some(e) => bail!("timed out after {timeout:?} waiting for {what}: {e:#}"),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> Result<()> {
    wait_for(&format!("127.0.0.1:{port}"), timeout, || {
        Ok(std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ()))
    })
}

pub mod corpus;
pub mod https;
pub mod podman;
pub mod procfs;
pub mod webhook;

/// `flink-webhook certs` for the service `flink-webhook.flink-system` into `out` (`ca.crt`,
/// `tls.crt`, `tls.key`), valid for `days` when given.
pub fn issue_certs(bin: &Path, out: &Path, days: Option<u32>) -> Result<()> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "certs",
        "--service",
        "flink-webhook",
        "--namespace",
        "flink-system",
    ])
    .arg("--out-dir")
    .arg(out)
    .stdout(std::process::Stdio::null());
    if let Some(d) = days {
        cmd.args(["--days", &d.to_string()]);
    }
    let status = cmd
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!("flink-webhook certs failed: {status}");
    }
    Ok(())
}

/// The admission fixtures recorded from a real kube-apiserver.
pub fn fixture(rel: &str) -> Result<Vec<u8>> {
    let path = workspace_root().join("tests/fixtures").join(rel);
    std::fs::read(&path).with_context(|| format!("reading fixture {}", path.display()))
}

pub mod agent;
pub mod apiserver;
pub mod broker;
pub mod flink;
pub mod logs;

/// The allocator settings the webhook is deployed with (its Deployment and image): mimalloc,
/// committing and returning memory promptly (a burst of large reviews peaks at ~45 MiB instead
/// of ~80). Tests and benchmarks run the binaries with them, so what is measured is what runs.
pub const WEBHOOK_ALLOCATOR_ENV: [(&str, &str); 2] = [
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
    ("MIMALLOC_PURGE_DELAY", "1"),
];

/// The agent's (its image): the same, but freed memory goes back at once. The idle sidecar's
/// memory between scrapes is what the last refresh's thread freed (flink_rest/worker.rs); with a
/// 1 ms delay nothing idle comes by to return it. Shipping is as fast either way (BENCHMARKS.md).
pub const AGENT_ALLOCATOR_ENV: [(&str, &str); 2] = [
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
    ("MIMALLOC_PURGE_DELAY", "0"),
];
