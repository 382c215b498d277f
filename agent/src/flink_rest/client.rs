//! A small HTTP/1.1 client for Flink's REST API (plain HTTP: the REST endpoint inside a Flink
//! cluster is not TLS by default, and the agent talks to it inside the pod or the cluster).

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

use super::RestError;

/// Largest REST answer read: a vertex's metric list is tens of KB; this only guards memory.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// At most this many requests in flight towards the JobManager: a big job has many vertices and
/// the JobManager serves the web UI and the scheduler from the same process.
const MAX_IN_FLIGHT: usize = 8;

/// Where the collector reads answers from: the real REST API, or fixtures in tests.
pub trait RestSource: Sync {
    /// `GET <base><path_and_query>`: the body of a successful answer. The caller parses it
    /// straight into the type it expects, not through a `serde_json::Value` that allocates
    /// every object of the answer once more.
    fn get(&self, path_and_query: &str) -> impl Future<Output = Result<Bytes, RestError>> + Send;
}

pub struct HttpSource {
    client: Client<HttpConnector, Empty<Bytes>>,
    base: String,
    permits: Semaphore,
}

impl HttpSource {
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        // A JobManager that is down (refused) fails at once; one that is unreachable (dropped
        // packets) must not hold a scrape for longer than the scrape's own timeout.
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        // The client lives for one scrape (worker.rs): connections are reused within a refresh
        // (tens of requests) and closed with it.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .build(connector);
        Self {
            client,
            base: base_url.trim_end_matches('/').to_string(),
            permits: Semaphore::new(MAX_IN_FLIGHT),
        }
    }
}

impl RestSource for HttpSource {
    async fn get(&self, path_and_query: &str) -> Result<Bytes, RestError> {
        if !self.base.starts_with("http://") {
            return Err(RestError::UnsupportedUrl(self.base.clone()));
        }
        let url = format!("{}{}", self.base, path_and_query);
        let uri: hyper::Uri = url
            .parse()
            .map_err(|_| RestError::UnsupportedUrl(url.clone()))?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| RestError::Closed)?;
        let resp = self
            .client
            .get(uri)
            .await
            .map_err(|e| RestError::Http(path_and_query.to_string(), e.to_string()))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| RestError::Http(path_and_query.to_string(), e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(RestError::Status(
                path_and_query.to_string(),
                status.as_u16(),
                String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            ));
        }
        Ok(body)
    }
}

/// Percent-encodes a path segment or a query value: everything but RFC 3986's unreserved
/// characters (and `,`, which separates `get` ids, when `keep_comma`).
pub fn encode(s: &str, keep_comma: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_comma && b == b',');
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Flink's REST server (Netty) rejects a request line over 4096 bytes, so a long list of metric
/// ids is fetched in several requests whose query stays under this many bytes.
pub const MAX_GET_QUERY: usize = 3000;

/// Splits ids into `get=` values, each at most [`MAX_GET_QUERY`] bytes once encoded.
pub fn get_batches(ids: &[String]) -> Vec<String> {
    let mut batches = Vec::new();
    let mut cur = String::new();
    for id in ids {
        let enc = encode(id, false);
        if !cur.is_empty() && cur.len() + 1 + enc.len() > MAX_GET_QUERY {
            batches.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(',');
        }
        cur.push_str(&enc);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_reserved_characters() {
        assert_eq!(
            encode("127.0.0.1:6122-6d1794", false),
            "127.0.0.1%3A6122-6d1794"
        );
        assert_eq!(encode("Source__src[1].a,b", true), "Source__src%5B1%5D.a,b");
        assert_eq!(encode("a b", false), "a%20b");
    }

    #[test]
    fn batches_stay_under_the_request_line_limit() {
        let ids: Vec<String> = (0..500)
            .map(|i| format!("Source__my-operator[{i}].numRecordsOutPerSecond"))
            .collect();
        let batches = get_batches(&ids);
        assert!(batches.len() > 1, "500 long ids need several requests");
        assert!(batches.iter().all(|b| b.len() <= MAX_GET_QUERY));
        let total: usize = batches.iter().map(|b| b.split(',').count()).sum();
        assert_eq!(total, 500, "no id lost or duplicated");
        assert!(get_batches(&[]).is_empty());
    }
}
