//! The HTTP/1 server that answers scrapes: one request per connection,
//! a bounded number at once, each bounded in time. Written out rather than
//! a server crate: it is a hundred lines, and a crate would bring more code
//! than it replaces.

use super::NodeMetrics;
use crate::node::throttle::Throttle;
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

/// Scrapes answered at once; more wait for a free slot, so a flood of
/// connections cannot take the node's file descriptors or memory.
const MAX_SCRAPES: usize = 32;
/// The wait after a failed accept (out of file descriptors, say), so the
/// accept loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long one scrape may take, from reading the request to writing the
/// last byte of the metrics, so a slow or silent client frees its slot.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

impl NodeMetrics {
    /// Serves `GET /metrics` and `GET /health` on `listener` until the
    /// handle is dropped.
    pub(crate) fn serve(self: Arc<Self>, listener: TcpListener) -> AbortOnDropHandle<()> {
        if let Ok(address) = listener.local_addr() {
            info!(%address, "serving metrics on http://{address}/metrics");
        }
        let scrapes = Arc::new(Semaphore::new(MAX_SCRAPES));
        let warnings = Throttle::default();
        AbortOnDropHandle::new(tokio::spawn(async move {
            loop {
                let Ok(slot) = scrapes.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        if let Some(held_back) = warnings.admit("accept") {
                            warn!(cause = %err, held_back, "cannot accept a metrics connection");
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let metrics = self.clone();
                tokio::spawn(async move {
                    let scrape = tokio::time::timeout(SCRAPE_TIMEOUT, metrics.respond(stream));
                    match scrape.await {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => debug!(%peer, cause = %err, "metrics request failed"),
                        Err(_) => {
                            debug!(%peer, "metrics request took longer than {SCRAPE_TIMEOUT:?}")
                        }
                    }
                    drop(slot);
                });
            }
        }))
    }

    /// Answers one HTTP request: the metrics for `GET /metrics` (or `/`),
    /// 200 or 503 for `GET /health`, 404 for anything else. One request
    /// per connection.
    async fn respond(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let mut head = Vec::with_capacity(1024);
        let mut buffer = [0; 1024];
        while !head.windows(4).any(|window| window == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..read]);
        }
        let request_line = head.split(|&byte| byte == b'\r').next().unwrap_or_default();
        let mut words = request_line.split(|&byte| byte == b' ');
        let (method, path) = (words.next(), words.next());
        let response = match (method, path) {
            (Some(b"GET"), Some(b"/metrics" | b"/")) => {
                let body = self.encode();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            }
            // For a load balancer or an orchestrator's readiness probe.
            (Some(b"GET"), Some(b"/health")) => {
                let (status, body) = if self.healthy() {
                    ("200 OK", "serving\n")
                } else {
                    (
                        "503 Service Unavailable",
                        "not serving: starting, stopping, or without a connection to RabbitMQ\n",
                    )
                };
                format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            }
            _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_owned(),
        };
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    }
}

/// Binds the metrics address, so a taken port is an error at start.
pub(crate) async fn bind(address: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| BindError { address, source })
}

/// The metrics address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {address}: {source}")]
pub struct BindError {
    address: SocketAddr,
    source: std::io::Error,
}
