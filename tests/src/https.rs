//! A real HTTPS/1.1 client (rustls) that trusts only the CA it is given, for talking to the
//! webhook the way the API server does: TLS, keep-alive, one request at a time per connection.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub fn client_config(ca_pem: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).context("reading CA")? {
        roots.add(cert.context("parsing CA")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Opens a TLS connection to 127.0.0.1:`port` verifying the certificate for `server_name`.
pub async fn tls_connect(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from(server_name.to_string())?;
    Ok(TlsConnector::from(config).connect(name, tcp).await?)
}

/// The leaf certificate the server presented on this connection.
pub fn peer_leaf(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
}

pub struct HttpsConn {
    sender: SendRequest<Full<Bytes>>,
    pub peer_leaf: Option<Vec<u8>>,
}

impl HttpsConn {
    pub async fn connect(
        port: u16,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<Self> {
        let tls = tls_connect(port, config, server_name).await?;
        let peer_leaf = peer_leaf(&tls);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender, peer_leaf })
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>)> {
        self.sender.ready().await?;
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "flink-webhook.flink-system.svc")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| anyhow!("reading response body: {e}"))?
            .to_bytes()
            .to_vec();
        Ok((status, body))
    }

    pub async fn post(&mut self, path: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>)> {
        self.request("POST", path, body).await
    }
}
