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
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    body.to_owned()
}
