//! Where a scrape's REST requests run: on a thread of their own, started for the scrape, with
//! its own runtime and HTTP client, all gone once the answer is in.
//!
//! A refresh beside a real Flink allocates a few MiB of short-lived answers, ids and strings in
//! many size classes. On the agent's one runtime thread, mimalloc kept those pages afterwards (the
//! last page of a size class is retired, not freed, until its thread allocates again), so they
//! stayed resident in the idle sidecar until the next scrape. A thread that ends frees all of
//! its empty pages, and with `MIMALLOC_PURGE_DELAY=0` (the agent image's setting) they go back to
//! the system at once. Starting a thread and a runtime costs well under a millisecond, at most
//! once per scrape. Measured in BENCHMARKS.md (sixth round).

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::client::HttpSource;
use super::RestError;

/// Runs `work` with a new [`HttpSource`] for `base_url` on a new thread, and waits for its result
/// at most until `deadline` and a second: the requests inside are bounded by `deadline` too, the
/// second only covers a thread that never answers. A thread that cannot start, or whose work
/// panics, is an error like an unreachable Flink (`flink_up 0`), never the agent's end.
pub async fn on_own_thread<T, F, Fut>(
    base_url: &str,
    timeout: Duration,
    deadline: Instant,
    work: F,
) -> Result<T, RestError>
where
    T: Send + 'static,
    F: FnOnce(HttpSource) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let (tx, rx) = oneshot::channel();
    let base_url = base_url.to_string();
    std::thread::Builder::new()
        .name("flink-rest".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a runtime for the Flink REST requests");
                    return;
                }
            };
            let out = runtime.block_on(work(HttpSource::new(&base_url, timeout)));
            let _ = tx.send(out);
            // A name lookup still running in the blocking pool finishes on its own.
            runtime.shutdown_background();
        })
        .map_err(|e| RestError::Thread(format!("cannot start a thread: {e}")))?;
    let wait = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(_)) => Err(RestError::Thread("ended without an answer".into())),
        Err(_) => Err(RestError::Timeout("(the whole refresh)".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_from_its_own_thread() {
        let caller = std::thread::current().id();
        let deadline = Instant::now() + Duration::from_secs(2);
        let got = on_own_thread(
            "http://127.0.0.1:1",
            Duration::from_secs(1),
            deadline,
            |_| async move { std::thread::current().id() },
        )
        .await
        .expect("an answer");
        assert_ne!(got, caller, "the work ran on the caller's thread");
    }

    #[tokio::test]
    async fn a_panicking_refresh_is_an_error_not_the_end() {
        let deadline = Instant::now() + Duration::from_secs(2);
        let got: Result<(), _> = on_own_thread(
            "http://127.0.0.1:1",
            Duration::from_secs(1),
            deadline,
            |_| async { panic!("a bug in a refresh") },
        )
        .await;
        assert!(matches!(got, Err(RestError::Thread(_))), "{got:?}");
    }

    #[tokio::test]
    async fn a_refresh_that_never_answers_is_cut_off() {
        let deadline = Instant::now() + Duration::from_millis(100);
        let started = Instant::now();
        let got = on_own_thread(
            "http://127.0.0.1:1",
            Duration::from_secs(1),
            deadline,
            |_| async { std::thread::sleep(Duration::from_secs(5)) },
        )
        .await;
        assert!(matches!(got, Err(RestError::Timeout(_))), "{got:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
