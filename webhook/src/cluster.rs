//! What the webhook needs to know about the cluster: only whether its API server keeps
//! `restartPolicy: Always` on init containers (native sidecars). A 1.28 API server without the
//! SidecarContainers gate silently drops the field, turning the agent into an init container that
//! never exits, so Flink never starts: when in doubt, the answer is "no".

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no Kubernetes client configuration: {0}")]
    Config(String),
    #[error("reading the API server version: {0}")]
    Version(String),
    #[error("timed out reading the API server version")]
    Timeout,
    #[error("unparseable Kubernetes version {0:?}")]
    Parse(String),
}

/// Native sidecars are on by default from Kubernetes 1.29 (beta); 1.28 had them behind an alpha gate.
pub fn version_supports_native_sidecars(version: &str) -> Result<bool, ClusterError> {
    let (major, minor) = parse_version(version)?;
    Ok(major > 1 || (major == 1 && minor >= 29))
}

/// Accepts `1.29`, `v1.29.3`, `1.29+` (GKE/EKS report minor as `29+`).
pub fn parse_version(version: &str) -> Result<(u32, u32), ClusterError> {
    let bad = || ClusterError::Parse(version.to_string());
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split('.');
    let major = parts.next().ok_or_else(bad)?;
    let minor = parts.next().ok_or_else(bad)?;
    let digits = |s: &str| -> Result<u32, ClusterError> {
        let d: String = s.chars().take_while(char::is_ascii_digit).collect();
        d.parse().map_err(|_| bad())
    };
    Ok((digits(major)?, digits(minor)?))
}

/// Asks the API server for its version (GET /version needs no RBAC beyond the default
/// `system:public-info-viewer`). Called once at start-up.
pub async fn api_server_version(timeout: Duration) -> Result<String, ClusterError> {
    let fut = async {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| ClusterError::Config(e.to_string()))?;
        let info = client
            .apiserver_version()
            .await
            .map_err(|e| ClusterError::Version(e.to_string()))?;
        Ok(format!("{}.{}", info.major, info.minor))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ClusterError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_sidecars_start_at_1_29() {
        assert!(!version_supports_native_sidecars("1.28").unwrap());
        assert!(!version_supports_native_sidecars("v1.28.7").unwrap());
        assert!(version_supports_native_sidecars("1.29").unwrap());
        assert!(version_supports_native_sidecars("1.31+").unwrap());
        assert!(version_supports_native_sidecars("2.0").unwrap());
        assert!(version_supports_native_sidecars("one.two").is_err());
        assert!(version_supports_native_sidecars("1").is_err());
    }
}
