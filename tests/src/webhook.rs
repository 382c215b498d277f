//! Starting the real `flink-webhook serve` with certificates from `flink-webhook certs`, and
//! talking to it over TLS the way the API server does.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::https::{client_config, HttpsConn};
use crate::{free_port, wait_for_port, workspace_bin, workspace_root, ChildGuard};

/// Adds `serve` on 127.0.0.1:`port` (metrics on `metrics_port`) with `policy` and the pair
/// in `tls_dir` to `cmd` (the webhook binary, or a wrapper that runs it), with the deployed
/// allocator settings; the cluster version is given, so no API server is asked.
pub fn serve_args<'c>(
    cmd: &'c mut Command,
    policy: &Path,
    tls_dir: &Path,
    port: u16,
    metrics_port: u16,
) -> &'c mut Command {
    cmd.envs(crate::WEBHOOK_ALLOCATOR_ENV)
        .arg("serve")
        .arg("--config")
        .arg(policy)
        .arg("--tls-cert")
        .arg(tls_dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(tls_dir.join("tls.key"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .args(["--kubernetes-version", "1.30"])
}

pub const SERVER_NAME: &str = "flink-webhook.flink-system.svc";

/// A running `flink-webhook serve` with its certificates and policy in a temp dir.
pub struct Webhook {
    pub child: ChildGuard,
    pub port: u16,
    pub metrics_port: u16,
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
}

pub fn issue_certs(out: &Path) -> Result<()> {
    crate::issue_certs(&workspace_bin("flink-webhook")?, out, Some(2))
}

/// Lays out a directory the way the kubelet mounts a Secret: files are symlinks through `..data`,
/// which is itself a symlink swapped atomically on update.
pub fn kubelet_style_secret(dir: &Path, version: &str) -> Result<()> {
    kubelet_style_secret_valid_for(dir, version, 2)
}

/// [`kubelet_style_secret`] with a certificate valid for `days`.
pub fn kubelet_style_secret_valid_for(dir: &Path, version: &str, days: u32) -> Result<()> {
    let versioned = dir.join(format!("..{version}"));
    crate::issue_certs(&workspace_bin("flink-webhook")?, &versioned, Some(days))?;
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(format!("..{version}"), &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    for f in ["tls.crt", "tls.key", "ca.crt"] {
        let link = dir.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{f}"), &link)?;
        }
    }
    Ok(())
}

/// Starts the webhook on free ports with `policy`, certificates laid out as the kubelet mounts
/// a Secret.
pub fn start(policy: &str) -> Result<Webhook> {
    start_with(policy, |_| {})
}

/// [`start`], with `adjust` given the command first (environment, where stderr goes).
pub fn start_with(policy: &str, adjust: impl FnOnce(&mut Command)) -> Result<Webhook> {
    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls)?;
    kubelet_style_secret(&tls, "v1")?;
    let policy_path = dir.path().join("policy.yaml");
    std::fs::write(&policy_path, policy)?;
    let port = free_port()?;
    let metrics_port = free_port()?;
    let mut cmd = Command::new(workspace_bin("flink-webhook")?);
    adjust(&mut cmd);
    let child = ChildGuard::spawn(
        "flink-webhook",
        serve_args(&mut cmd, &policy_path, &tls, port, metrics_port),
    )?;
    wait_for_port(port, Duration::from_secs(20))?;
    wait_for_port(metrics_port, Duration::from_secs(20))?;
    Ok(Webhook {
        child,
        port,
        metrics_port,
        ca: tls.join("ca.crt"),
        dir,
    })
}

pub fn example_policy() -> Result<String> {
    Ok(std::fs::read_to_string(
        workspace_root().join("examples/policy.yaml"),
    )?)
}

impl Webhook {
    pub fn client(&self) -> Result<Arc<rustls::ClientConfig>> {
        // The CA file is read through the symlinks, so after a rotation this is the new CA.
        client_config(&self.ca)
    }

    pub async fn conn(&self) -> Result<HttpsConn> {
        HttpsConn::connect(self.port, self.client()?, SERVER_NAME).await
    }

    pub async fn metrics(&self) -> Result<String> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).await?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await?;
        Ok(out)
    }
}

/// Writes `head` then `body` on a fresh TLS connection (ignoring write errors: the server may
/// answer and close early, which is the point) and returns what the server answered.
pub async fn raw_exchange(hook: &Webhook, head: Vec<u8>, body: Vec<u8>) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = crate::https::tls_connect(hook.port, hook.client()?, SERVER_NAME).await?;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&head).await;
        let _ = wr.write_all(&body).await;
        let _ = wr.flush().await;
        wr
    });
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), rd.read(&mut buf)).await??;
    writer.abort();
    Ok(String::from_utf8_lossy(&buf[..n]).to_string())
}
