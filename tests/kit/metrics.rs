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

/// The requests a node has settled (answered or rejected), all
/// functions and outcomes: the sum of its `compute_requests_total`.
pub async fn requests_settled(address: SocketAddr) -> u64 {
    scrape(address)
        .await
        .lines()
        .filter(|line| line.starts_with("compute_requests_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `GET /metrics`, as Prometheus would; the body.
pub async fn scrape(address: SocketAddr) -> String {
    let (status, body) = get(address, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `GET path`: the status code and the body.
pub async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    try_get(address, path)
        .await
        .unwrap_or_else(|err| panic!("GET http://{address}{path}: {err}"))
}

/// `GET path`, or why it could not be asked (nobody listens yet).
pub(crate) async fn try_get(address: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no head in {response:?}"),
        )
    })?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Ok((status, body.to_owned()))
}
