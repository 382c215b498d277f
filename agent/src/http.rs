//! The HTTP listener: `GET /metrics` (Prometheus text 0.0.4), `GET /healthz`, `GET /readyz`.
//!
//! A port in use is logged and retried: the agent must never exit on its own errors (a
//! plain-container agent that exits kills its TaskManager).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use prometheus_client::registry::Registry;

/// What the handlers read.
#[derive(Clone)]
pub struct ServerState {
    /// The agent's own metrics (`flink_agent_*`).
    pub registry: Arc<Registry>,
    /// Set once the pipeline runs (state loaded, producer created).
    pub ready: Arc<AtomicBool>,
    /// Flink's metrics, read from its REST API, appended after the agent's own.
    pub flink: Option<Arc<crate::flink_rest::FlinkMetrics>>,
    /// `--probe-token`: the probes must carry it (see `config`).
    pub probe_token: Option<Arc<str>>,
}

/// The header a hostNetwork pod's probes carry, so that only its own agent passes them.
pub const PROBE_HEADER: &str = "x-flink-agent-probe";

pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<ServerState>) -> impl IntoResponse {
    let mut own = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut own, &s.registry) {
        tracing::warn!(error = %e, "encoding agent metrics");
    }
    // prometheus-client writes OpenMetrics, which ends with "# EOF"; Prometheus text 0.0.4
    // has no such line, and more metrics (Flink's) follow.
    if let Some(stripped) = own.strip_suffix("# EOF\n") {
        own.truncate(stripped.len());
    }
    let mut chunks = vec![Bytes::from(own)];
    if let Some(flink) = &s.flink {
        chunks.extend(flink.render().await);
    }
    let length = chunks.iter().map(Bytes::len).sum::<usize>();
    let body = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8".to_string(),
            ),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        Body::from_stream(body),
    )
}

/// 421 Misdirected Request when the probe is not for this agent: in a hostNetwork pod it
/// reached another pod's agent on the same node port, which must not make this pod look alive.
fn misdirected(s: &ServerState, headers: &HeaderMap) -> bool {
    s.probe_token.as_deref().is_some_and(|token| {
        headers
            .get(PROBE_HEADER)
            .is_none_or(|v| v.as_bytes() != token.as_bytes())
    })
}

async fn healthz(State(s): State<ServerState>, headers: HeaderMap) -> impl IntoResponse {
    if misdirected(&s, &headers) {
        return (StatusCode::MISDIRECTED_REQUEST, "not this pod's agent\n");
    }
    (StatusCode::OK, "ok\n")
}

async fn readyz(State(s): State<ServerState>, headers: HeaderMap) -> impl IntoResponse {
    if misdirected(&s, &headers) {
        return (StatusCode::MISDIRECTED_REQUEST, "not this pod's agent\n");
    }
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// Serves until the process ends; binding is retried every few seconds while it fails.
pub async fn serve(addr: SocketAddr, state: ServerState) {
    let app = router(state);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, "metrics listener started");
                if let Err(e) = axum::serve(listener, app.clone()).await {
                    tracing::error!(%addr, error = %e, "metrics listener failed; restarting");
                }
            }
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot bind the metrics listener; retrying in 5s");
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
