//! One OTLP/HTTP export request: an HTTP/1.1 POST of a protobuf body,
//! answered by a status line. Written by hand on tokio: the exporter needs
//! this one request, not an HTTP client with its own runtime and TLS.

use super::ExportConfig;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use url::Host;

/// The most of a collector's answer that is read: its status line and
/// headers are what matter.
const MAX_ANSWER_HEAD: usize = 16 * 1024;

/// Why a batch of spans was not taken.
#[derive(Debug, thiserror::Error)]
pub(super) enum PostError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("the request failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the collector answered {0}")]
    Status(u16),
    #[error("the collector's answer is not HTTP")]
    NotHttp,
}

/// Posts `body` to the collector of `config`; `Ok` when it answers 2xx.
/// The caller bounds the time it takes.
pub(super) async fn post(config: &ExportConfig, body: &[u8]) -> Result<(), PostError> {
    let url = &config.endpoint;
    let port = url.port_or_known_default().unwrap_or(80);
    let stream = match url.host() {
        Some(Host::Ipv4(address)) => TcpStream::connect((address, port)).await,
        Some(Host::Ipv6(address)) => TcpStream::connect((address, port)).await,
        Some(Host::Domain(name)) => TcpStream::connect((name, port)).await,
        None => return Err(PostError::NotHttp),
    };
    let mut stream = stream.map_err(PostError::Connect)?;
    let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
    let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let mut head = format!(
        "POST {target} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    // Names and values were checked when the configuration was read: no
    // line breaks.
    for (name, value) in &config.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    // Up to the end of the answer's head: a collector that keeps the
    // connection open has answered all the same.
    let mut answer = Vec::new();
    let mut chunk = [0; 1024];
    while !answer.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).await?;
        if read == 0 || answer.len() > MAX_ANSWER_HEAD {
            break;
        }
        answer.extend_from_slice(&chunk[..read]);
    }
    let status_line = answer
        .split(|byte| *byte == b'\r')
        .next()
        .unwrap_or_default();
    let code = std::str::from_utf8(status_line)
        .ok()
        .filter(|line| line.starts_with("HTTP/1."))
        .and_then(|line| line.split(' ').nth(1)?.parse::<u16>().ok())
        .ok_or(PostError::NotHttp)?;
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(PostError::Status(code))
    }
}
