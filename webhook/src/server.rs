//! The admission HTTPS server and the plain-HTTP metrics server.
//!
//! TLS is terminated here (tokio-rustls) rather than by axum-server so that the certificate
//! resolver, the handshake timeout and graceful draining are all visible in one place.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::admission;
use crate::metrics::ComponentLabels;
use crate::state::AppState;

/// The API server sends at most ~1.5 MiB objects (etcd's limit); 3 MiB leaves room for the review.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Everything a request may take, from its first header byte to the answer: well under the
/// API server's `timeoutSeconds` (we ship 5 s), so a slow or stuck client is cut, and the
/// request answered, before the API server gives up on us.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(4);
pub const MAX_CONNECTIONS: usize = 1024;
/// Bodies being received or reviewed at once may hold at most this much memory (the pod's
/// limit is 128 MiB). A request reserves its declared length (the API server always declares
/// it; a chunked body reserves the maximum) before reading, and waits for room until its
/// deadline; a real review is 5-50 KiB, so only a flood of large or slow bodies ever waits.
/// Parsed, a body takes several times its size: 8 MiB keeps a burst of large reviews near
/// 45 MiB of RSS (tests/tests/webhook_limits.rs).
pub const BODY_BUDGET_BYTES: usize = 8 * 1024 * 1024;
const BUDGET_UNIT: usize = 1024;
/// How long SIGTERM waits for in-flight requests before closing connections.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub fn admission_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

fn json_error(status: StatusCode, message: String) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Memory held by request bodies, in [`BUDGET_UNIT`]s.
pub struct BodyBudget(Semaphore);

impl Default for BodyBudget {
    fn default() -> Self {
        Self(Semaphore::new(BODY_BUDGET_BYTES / BUDGET_UNIT))
    }
}

async fn mutate(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    state.metrics.in_flight.inc();
    let response = mutate_inner(&state, &headers, body, started).await;
    state.metrics.in_flight.dec();
    response
}

async fn mutate_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
) -> Response {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        state.metrics.reject("body_too_large");
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {MAX_BODY_BYTES} bytes"),
        );
    }
    let deadline = tokio::time::Instant::from_std(started + REQUEST_TIMEOUT);
    let reserve = declared.map_or(MAX_BODY_BYTES, |n| n as usize);
    let units = reserve.div_ceil(BUDGET_UNIT).max(1) as u32;
    let _room = match tokio::time::timeout_at(deadline, state.body_budget.0.acquire_many(units))
        .await
    {
        Ok(Ok(permit)) => permit,
        // Closed never happens (the semaphore is never closed); treat it like no room.
        Ok(Err(_)) | Err(_) => {
            state.metrics.reject("overloaded");
            tracing::warn!(
                bytes = reserve,
                "no room for the request body within the request timeout"
            );
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("webhook overloaded: no room for a {reserve}-byte body within {REQUEST_TIMEOUT:?}"),
            );
        }
    };
    let bytes =
        match tokio::time::timeout_at(deadline, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
            Err(_) => {
                state.metrics.reject("body_timeout");
                return json_error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("request not received within {REQUEST_TIMEOUT:?}"),
                );
            }
            Ok(Err(e)) => {
                let too_large = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                return if too_large {
                    state.metrics.reject("body_too_large");
                    json_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("request body over {MAX_BODY_BYTES} bytes"),
                    )
                } else {
                    state.metrics.reject("body_error");
                    json_error(
                        StatusCode::BAD_REQUEST,
                        format!("reading request body: {e}"),
                    )
                };
            }
            Ok(Ok(b)) => b,
        };
    let policy = state.policy();
    let ctx = state.context();
    let (reply, component) = admission::review(&bytes, &policy, &ctx, &state.metrics);
    state
        .metrics
        .latency
        .get_or_create(&ComponentLabels {
            component: component.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves, then drains in-flight
/// requests for up to [`DRAIN_TIMEOUT`].
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(peer = %peer, "connection limit reached; closing new connection");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, "TLS handshake timed out");
                    return;
                }
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the drain timeout");
    }
}

/// Serves `router` over plain HTTP (the metrics listener) until `shutdown` resolves.
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "metrics server stopped");
    }
}
