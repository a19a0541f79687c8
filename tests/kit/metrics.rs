//! A node's Prometheus metrics, scraped as Prometheus would.

use crate::eventually::eventually;
use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    time::Duration,
};
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

/// How long a node may take to serve once started.
pub(crate) const START_LIMIT: Duration = Duration::from_secs(30);

/// Why a node never served.
pub(crate) enum NotServing {
    /// It exited first, as this says.
    Exited(String),
    /// It was still not serving after [`START_LIMIT`].
    TooSlow,
}

/// Waits until `GET /health` at `address` answers 200: the node is
/// connected and consumes every queue. Each time round, `exited` says
/// whether the node has exited (and how), so a node that dies is seen at
/// once.
pub(crate) async fn until_serving(
    address: SocketAddr,
    mut exited: impl FnMut() -> Option<String>,
) -> Result<(), NotServing> {
    let started = tokio::time::Instant::now();
    loop {
        if let Some(how) = exited() {
            return Err(NotServing::Exited(how));
        }
        if let Ok(Ok((200, _))) =
            tokio::time::timeout(Duration::from_secs(1), try_get(address, "/health")).await
        {
            return Ok(());
        }
        if started.elapsed() > START_LIMIT {
            return Err(NotServing::TooSlow);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback address with a port nobody listens on now: the kernel's
/// pick, released for a server to bind.
pub(crate) fn free_loopback_address() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
}
