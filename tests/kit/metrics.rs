//! A node's Prometheus metrics, scraped as Prometheus would.

use crate::eventually::eventually;
use std::{net::SocketAddr, time::Duration};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Scrapes until the metrics hold `line` (for at most 10 s).
pub async fn wait_for_metric(address: SocketAddr, line: &str) -> String {
    let what = format!("the metrics hold {line:?}");
    eventually(&what, Duration::from_secs(10), || async {
        let metrics = scrape(address).await;
        metrics.lines().any(|have| have == line).then_some(metrics)
    })
    .await
}

/// `GET /metrics`, as Prometheus would; the body.
pub async fn scrape(address: SocketAddr) -> String {
    let (status, body) = get(address, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `GET path`: the status code and the body.
pub async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}
