//! The webhook sits on the pod-creation path of the whole cluster: slow or greedy clients must
//! not starve the API server's requests. Over real TLS: clients that send their headers a byte
//! at a time, bodies that never finish, TLS clients that never say hello, and a burst of large
//! reviews bigger than the body memory budget.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use flink_injector_tests::fixture;
use flink_injector_tests::https::tls_connect;
use flink_injector_tests::procfs::status_mib;
use flink_injector_tests::webhook::{example_policy, start, Webhook, SERVER_NAME};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Generous: the server's own limits are 4 s; this only stops a broken server hanging CI.
const CUT_WITHIN: Duration = Duration::from_secs(60);

fn jm_review() -> Result<Vec<u8>> {
    fixture("admission/flink-2.3-application-jobmanager.review.json")
}

/// `n` admissions on one keep-alive connection; each must be a real, allowed answer.
async fn admissions(hook: &Webhook, n: usize) -> Result<()> {
    let review = jm_review()?;
    let mut conn = hook.conn().await?;
    for _ in 0..n {
        let (status, body) = conn.post("/mutate", review.clone()).await?;
        ensure!(
            status == 200,
            "status {status}: {}",
            String::from_utf8_lossy(&body)
        );
        let v: Value = serde_json::from_slice(&body)?;
        ensure!(v["response"]["allowed"] == true, "{v}");
    }
    Ok(())
}

/// Sends `head` then `trickle` one byte every 100 ms; returns what the server answered when
/// it closed the connection (empty if it closed without answering).
async fn trickle(hook: &Webhook, head: &'static [u8], trickle: &'static [u8]) -> Result<String> {
    let stream = tls_connect(hook.port, hook.client()?, SERVER_NAME).await?;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head).await;
        for b in trickle.iter().cycle() {
            if wr.write_all(std::slice::from_ref(b)).await.is_err() || wr.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(CUT_WITHIN, rd.read_to_end(&mut answer)).await;
    writer.abort();
    ensure!(
        read.is_ok(),
        "the server kept a trickling client for {CUT_WITHIN:?}"
    );
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn rejected(metrics: &str, reason: &str) -> f64 {
    let prefix = format!("flink_webhook_requests_rejected_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_a_byte_at_a_time_cannot_starve_admissions() -> Result<()> {
    let hook = start(&example_policy()?)?;
    let mut slow = Vec::new();
    for _ in 0..100 {
        let hook_port = hook.port;
        let client = hook.client()?;
        slow.push(tokio::spawn(async move {
            let stream = tls_connect(hook_port, client, SERVER_NAME).await?;
            let (mut rd, mut wr) = tokio::io::split(stream);
            let writer = tokio::spawn(async move {
                let _ = wr.write_all(b"POST /mutate HTTP/1.1\r\n").await;
                for b in b"x-slow: yes\r\n".iter().cycle() {
                    if wr.write_all(std::slice::from_ref(b)).await.is_err()
                        || wr.flush().await.is_err()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            let mut sink = Vec::new();
            let read = tokio::time::timeout(CUT_WITHIN, rd.read_to_end(&mut sink)).await;
            writer.abort();
            anyhow::Ok(read.is_ok())
        }));
    }
    // While 100 connections trickle their headers, the API server's requests go through, on
    // a kept-alive connection and on new ones.
    admissions(&hook, 200).await?;
    for _ in 0..5 {
        admissions(&hook, 1).await?;
    }
    for s in slow {
        ensure!(
            s.await.context("slow client task")??,
            "a client trickling its headers was kept open for {CUT_WITHIN:?}"
        );
    }
    admissions(&hook, 10).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_finishes_gets_408_and_others_proceed() -> Result<()> {
    let hook = start(&example_policy()?)?;
    let slow = {
        let head: &'static [u8] = b"POST /mutate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 50000\r\n\r\n{\"a\":";
        let hook = &hook;
        async move { trickle(hook, head, b" ").await }
    };
    let (answer, others) = tokio::join!(slow, admissions(&hook, 100));
    others?;
    let answer = answer?;
    ensure!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    ensure!(answer.contains("not received within"), "{answer}");
    let metrics = hook.metrics().await?;
    ensure!(rejected(&metrics, "body_timeout") == 1.0, "{metrics}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_never_says_hello_is_dropped() -> Result<()> {
    let hook = start(&example_policy()?)?;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", hook.port)).await?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(CUT_WITHIN, tcp.read(&mut buf))
        .await
        .context("the server kept a silent TCP connection open")?
        .unwrap_or(0);
    ensure!(n == 0, "the server sent {n} bytes to a silent client");
    admissions(&hook, 1).await
}

/// 40 clients send 1 MiB reviews (40 MiB: more than the 8 MiB body budget) all at once and
/// hold back their last byte until all have sent the rest, so every body is in flight at the
/// same time. Every one is answered (the budget queues, it does not reject) and the webhook
/// stays well inside its 128 MiB memory limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_large_reviews_is_queued_within_the_memory_budget() -> Result<()> {
    let hook = start(&example_policy()?)?;
    let mut review: Value = serde_json::from_slice(&jm_review()?)?;
    review["request"]["object"]["metadata"]["annotations"]["example.com/blob"] =
        Value::from("x".repeat(1024 * 1024));
    let body = serde_json::to_vec(&review)?;
    let (release, released) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let stream = tls_connect(hook.port, hook.client()?, SERVER_NAME).await?;
        let (mut rd, mut wr) = tokio::io::split(stream);
        let head = format!(
            "POST /mutate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let body = body.clone();
        let mut released = released.clone();
        let writer = tokio::spawn(async move {
            wr.write_all(head.as_bytes()).await?;
            wr.write_all(&body[..body.len() - 1]).await?;
            released.wait_for(|r| *r).await?;
            wr.write_all(&body[body.len() - 1..]).await?;
            wr.flush().await?;
            anyhow::Ok(wr)
        });
        tasks.push(tokio::spawn(async move {
            let mut answer = Vec::new();
            tokio::time::timeout(CUT_WITHIN, rd.read_to_end(&mut answer))
                .await
                .context("no answer")??;
            writer.abort();
            let answer = String::from_utf8_lossy(&answer).into_owned();
            ensure!(
                answer.starts_with("HTTP/1.1 200"),
                "{}",
                &answer[..answer.len().min(300)]
            );
            anyhow::Ok(())
        }));
    }
    // Not a timing assertion: just time for the clients to push their bodies.
    tokio::time::sleep(Duration::from_secs(2)).await;
    release.send(true)?;
    for t in tasks {
        t.await.context("client task")??;
    }
    let metrics = hook.metrics().await?;
    ensure!(rejected(&metrics, "overloaded") == 0.0, "{metrics}");
    let peak = status_mib(hook.child.pid(), "VmHWM")?;
    eprintln!("webhook peak RSS after the burst: {peak:.1} MiB");
    ensure!(peak < 60.0, "webhook peak RSS {peak:.1} MiB");
    Ok(())
}
