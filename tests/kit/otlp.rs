//! A collector for tests: an OTLP/HTTP receiver that keeps every span
//! posted to it, read from the protobuf by field numbers.

use crate::eventually::eventually;
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
};

/// A span as the receiver got it, ids in lowercase hex.
#[derive(Clone, Debug, Default)]
pub struct ReceivedSpan {
    /// The `service.name` of its resource.
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a trace's root.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP's numbers: 1 internal, 3 client, 4 producer, 5 consumer.
    pub kind: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Text values as they are, numbers in decimal.
    pub attributes: BTreeMap<String, String>,
    /// Each event's name and attributes.
    pub events: Vec<(String, BTreeMap<String, String>)>,
    /// 0 unset, 2 error.
    pub status_code: u64,
    /// The trace flags (`Span.flags`): 1 when sampled.
    pub flags: u64,
}

impl ReceivedSpan {
    /// Attribute `key`, or the empty string.
    pub fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// Receives spans on a local port until dropped.
pub struct OtlpReceiver {
    address: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    /// The header lines of every request, as they came.
    headers: Arc<Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl OtlpReceiver {
    /// A receiver on a free local port.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// A receiver on `address`.
    pub async fn start_on(address: &str) -> Self {
        let listener = TcpListener::bind(address)
            .await
            .unwrap_or_else(|err| panic!("cannot listen on {address}: {err}"));
        let address = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let headers = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn({
            let (spans, headers) = (spans.clone(), headers.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(receive(stream, spans.clone(), headers.clone()));
                }
            }
        });
        OtlpReceiver {
            address,
            spans,
            headers,
            server,
        }
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` is set to.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The header lines of every request received so far.
    pub fn header_lines(&self) -> Vec<String> {
        self.headers.lock().unwrap().clone()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans received, once `enough` says they are enough.
    pub async fn wait_for(
        &self,
        what: &str,
        enough: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        eventually(what, Duration::from_secs(20), || async {
            let spans = self.spans();
            enough(&spans).then_some(spans)
        })
        .await
    }
}

/// One POST: its body decoded into `spans`, answered 200.
async fn receive(
    stream: TcpStream,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    headers: Arc<Mutex<Vec<String>>>,
) {
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        headers.lock().unwrap().push(line.to_owned());
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.unwrap();
    let decoded = decode_request(&body);
    spans.lock().unwrap().extend(decoded);
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let _ = reader.get_mut().write_all(answer).await;
}

/// A protobuf field's value, by its wire type.
enum Field<'a> {
    Varint(u64),
    Fixed(u64),
    Bytes(&'a [u8]),
}

/// The fields of one protobuf message, in order.
fn fields(mut bytes: &[u8]) -> Vec<(u64, Field<'_>)> {
    fn varint(bytes: &mut &[u8]) -> u64 {
        let mut value = 0;
        for shift in (0..64).step_by(7) {
            let byte = bytes[0];
            *bytes = &bytes[1..];
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
        }
        value
    }
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let tag = varint(&mut bytes);
        let value = match tag & 7 {
            0 => Field::Varint(varint(&mut bytes)),
            1 => {
                let (value, rest) = bytes.split_at(8);
                bytes = rest;
                Field::Fixed(u64::from_le_bytes(value.try_into().unwrap()))
            }
            2 => {
                let length = varint(&mut bytes) as usize;
                let (value, rest) = bytes.split_at(length);
                bytes = rest;
                Field::Bytes(value)
            }
            5 => {
                let (value, rest) = bytes.split_at(4);
                bytes = rest;
                Field::Fixed(u64::from(u32::from_le_bytes(value.try_into().unwrap())))
            }
            other => panic!("wire type {other} is not one OTLP uses"),
        };
        fields.push((tag >> 3, value));
    }
    fields
}

fn submessages(bytes: &[u8], field: u64) -> Vec<&[u8]> {
    fields(bytes)
        .into_iter()
        .filter_map(|(number, value)| match value {
            Field::Bytes(inner) if number == field => Some(inner),
            _ => None,
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// `KeyValue`s in field `field` of `bytes`.
fn key_values(bytes: &[u8], field: u64) -> BTreeMap<String, String> {
    submessages(bytes, field)
        .into_iter()
        .map(|pair| {
            let mut key = String::new();
            let mut value = String::new();
            for (number, part) in fields(pair) {
                match (number, part) {
                    (1, Field::Bytes(name)) => key = text(name),
                    (2, Field::Bytes(any)) => {
                        for (kind, inner) in fields(any) {
                            value = match (kind, inner) {
                                (1, Field::Bytes(string)) => text(string),
                                (3, Field::Varint(int)) => (int as i64).to_string(),
                                _ => panic!("an attribute of a type OTLP spans here do not use"),
                            };
                        }
                    }
                    _ => {}
                }
            }
            (key, value)
        })
        .collect()
}

/// The spans of an `ExportTraceServiceRequest`.
fn decode_request(body: &[u8]) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    for resource_spans in submessages(body, 1) {
        let service = submessages(resource_spans, 1)
            .first()
            .map(|resource| key_values(resource, 1))
            .and_then(|attributes| attributes.get("service.name").cloned())
            .unwrap_or_default();
        for scope_spans in submessages(resource_spans, 2) {
            for span in submessages(scope_spans, 2) {
                let mut received = ReceivedSpan {
                    service: service.clone(),
                    attributes: key_values(span, 9),
                    ..ReceivedSpan::default()
                };
                for (number, value) in fields(span) {
                    match (number, value) {
                        (1, Field::Bytes(id)) => received.trace_id = hex(id),
                        (2, Field::Bytes(id)) => received.span_id = hex(id),
                        (4, Field::Bytes(id)) => received.parent_span_id = hex(id),
                        (5, Field::Bytes(name)) => received.name = text(name),
                        (6, Field::Varint(kind)) => received.kind = kind,
                        (7, Field::Fixed(time)) => received.start_ns = time,
                        (8, Field::Fixed(time)) => received.end_ns = time,
                        (11, Field::Bytes(event)) => {
                            let name = fields(event)
                                .into_iter()
                                .find_map(|(number, value)| match value {
                                    Field::Bytes(name) if number == 2 => Some(text(name)),
                                    _ => None,
                                })
                                .unwrap_or_default();
                            received.events.push((name, key_values(event, 3)));
                        }
                        (16, Field::Fixed(flags)) => received.flags = flags,
                        (15, Field::Bytes(status)) => {
                            for (number, value) in fields(status) {
                                if let (3, Field::Varint(code)) = (number, value) {
                                    received.status_code = code;
                                }
                            }
                        }
                        _ => {}
                    }
                }
                spans.push(received);
            }
        }
    }
    spans
}
