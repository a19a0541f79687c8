//! The wire format, shared with every peer (including the Python `pika`
//! examples this project grew from).
//!
//! - A request is published through the default exchange to the compute
//!   queue. Its body is the input (for `increase`, the decimal text of n);
//!   `reply_to` names the queue for the reply; `correlation_id` is
//!   optional and opaque.
//! - The reply is published through the default exchange to `reply_to`,
//!   carries the request's `correlation_id` (none if the request had
//!   none), and its body is the result (for `increase`, decimal text).
//! - A failed request still gets a reply: its `x-error` header holds one of
//!   the [`ErrorKind`] names and its body a message for a person.
//! - Every reply from this node names the function that computed it in an
//!   `x-function` header (the module's file stem) and the exact module
//!   version in `x-module-digest` (`sha256:<hex>` of the module file).
//!   Peers may ignore both.
//! - A request may carry `x-module-digest` too: it pins the version. The
//!   node runs exactly that version if it holds it (the current one, a
//!   staged one, or one of the few it keeps compiled after a swap), and
//!   otherwise answers an `unknown-version` error reply without running
//!   anything. Without the header, the current version runs.
//! - A request with the content type [`batch::CONTENT_TYPE`] carries
//!   several inputs, and its reply their results, in order (see
//!   [`batch`]). Without it, a request is one input, as above.
//! - A request may carry W3C Trace Context headers, `traceparent` and
//!   `tracestate`, as the OpenTelemetry instrumentations of pika and
//!   amqplib write them: the node continues that trace, and its reply
//!   carries the node's span in `traceparent` (and the request's
//!   `tracestate`). A reply to a request without them carries neither,
//!   unless the node exports traces.

pub mod batch;

use crate::shared::trace::{self, ParseError, TraceContext};
use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable, LongString},
};
use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Header that marks a reply as an error and says which kind.
pub const ERROR_HEADER: &str = "x-error";

/// Header that names the function that computed a reply.
pub const FUNCTION_HEADER: &str = "x-function";

/// Header that names the exact module version that computed a reply.
pub const MODULE_HEADER: &str = "x-module-digest";

/// W3C Trace Context: the trace and span a message belongs to.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// W3C Trace Context: vendors' own trace data, passed on unread.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// The machine-readable kinds of error reply, as they appear in the
/// `x-error` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// `bad-request`: the body is not a valid input for the function.
    /// Sending the same request again cannot succeed.
    BadRequest,
    /// `compute-failed`: the input was valid but the function failed (it
    /// reported an error such as an overflow, trapped, or ran out of
    /// memory).
    ComputeFailed,
    /// `timeout`: the function ran past the node's CPU deadline and was
    /// stopped.
    Timeout,
    /// `too-large`: the request, or the reply the function produced, is
    /// larger than the node's `--max-body`.
    TooLarge,
    /// `unknown-version`: the request pinned a version (`x-module-digest`)
    /// that this node does not hold. Another node, or the same one after
    /// a deploy reaches it, may.
    UnknownVersion,
}

impl ErrorKind {
    /// The name carried in the `x-error` header.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::ComputeFailed => "compute-failed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::TooLarge => "too-large",
            ErrorKind::UnknownVersion => "unknown-version",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ErrorKind {
    type Err = UnknownErrorKind;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        [
            ErrorKind::BadRequest,
            ErrorKind::ComputeFailed,
            ErrorKind::Timeout,
            ErrorKind::TooLarge,
            ErrorKind::UnknownVersion,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == name)
        .ok_or(UnknownErrorKind)
    }
}

/// An `x-error` value that is none of the [`ErrorKind`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a known x-error kind")]
pub struct UnknownErrorKind;

/// The `x-error` kind of a reply, as a peer sent it: one of ours, or one
/// this build does not know (a newer node's, or another implementation's),
/// kept as it came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerErrorKind {
    /// One of the kinds this build knows.
    Known(ErrorKind),
    /// Any other name.
    Other(String),
}

impl PeerErrorKind {
    /// The name as it appears in the `x-error` header.
    pub fn as_str(&self) -> &str {
        match self {
            PeerErrorKind::Known(kind) => kind.as_str(),
            PeerErrorKind::Other(name) => name,
        }
    }
}

impl From<&str> for PeerErrorKind {
    fn from(name: &str) -> Self {
        name.parse().map_or_else(
            |_| PeerErrorKind::Other(name.to_owned()),
            PeerErrorKind::Known,
        )
    }
}

impl fmt::Display for PeerErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for PeerErrorKind {
    fn eq(&self, name: &str) -> bool {
        self.as_str() == name
    }
}

impl PartialEq<&str> for PeerErrorKind {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

/// The W3C Trace Context headers a message carries: its span's context,
/// and the `tracestate` passed on, if any.
#[derive(Clone, Copy, Debug)]
pub struct TraceHeaders<'a> {
    pub context: &'a TraceContext,
    pub state: Option<&'a str>,
}

/// The properties of the reply to a request with `request` properties,
/// carrying `trace` when the request is traced.
pub fn reply_properties(
    request: &BasicProperties,
    function: &str,
    module_digest: &str,
    error: Option<ErrorKind>,
    trace: Option<TraceHeaders<'_>>,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(FUNCTION_HEADER.into(), text_value(function));
    headers.insert(MODULE_HEADER.into(), text_value(module_digest));
    if let Some(kind) = error {
        headers.insert(ERROR_HEADER.into(), text_value(kind.as_str()));
    }
    if let Some(trace) = trace {
        insert_trace(&mut headers, trace);
    }
    let properties = BasicProperties::default().with_headers(headers);
    match request.correlation_id() {
        Some(id) => properties.with_correlation_id(id.clone()),
        None => properties,
    }
}

/// The body of an error reply: `message`, cut to at most `max_body` bytes
/// (on a character boundary) and saying so, so that no reply, error or
/// not, is larger than the node's `--max-body`.
pub fn error_body(message: &str, max_body: usize) -> Vec<u8> {
    if message.len() <= max_body {
        return message.as_bytes().to_vec();
    }
    let note = format!(" [cut from {} bytes to fit --max-body]", message.len());
    let room = max_body.saturating_sub(note.len());
    let kept = (0..=room.min(message.len()))
        .rev()
        .find(|&at| message.is_char_boundary(at))
        .unwrap_or(0);
    let mut body = format!("{}{note}", &message[..kept]).into_bytes();
    // A limit smaller than the note itself: the limit wins.
    body.truncate(max_body);
    body
}

/// Properties for a request that nobody will wait for after `time_left`:
/// an `expiration` (so the broker drops it unconsumed, or dead-letters it
/// if the queue has a dead-letter exchange) and a `timestamp` (so a node
/// can tell it expired while it waited for a free slot).
pub fn with_expiry(properties: BasicProperties, time_left: Duration) -> BasicProperties {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // RabbitMQ closes the channel on an expiration it finds too large
    // (10^13 ms, tried here); 2^32 - 1 ms, about 50 days, it takes, and a
    // longer wait is as good as none.
    let ttl_ms = time_left.as_millis().clamp(1, u32::MAX.into());
    properties
        .with_expiration(ttl_ms.to_string().into())
        .with_timestamp(now.as_secs())
}

/// Whether a request with `properties` expired before `now`, by its
/// `timestamp` and `expiration`. Without both it never expires. The
/// timestamp has whole seconds, so a second of slack is allowed (and as
/// much clock skew between hosts).
pub fn expired(properties: &BasicProperties, now: SystemTime) -> bool {
    let (Some(sent), Some(expiration)) = (properties.timestamp(), properties.expiration()) else {
        return false;
    };
    let Ok(ttl_ms) = expiration.as_str().parse::<u64>() else {
        return false;
    };
    let Some(expires) = UNIX_EPOCH
        .checked_add(Duration::from_secs(sent.saturating_add(1)) + Duration::from_millis(ttl_ms))
    else {
        return false;
    };
    now > expires
}

/// `properties` asking for version `digest` of the function.
pub fn with_version(properties: BasicProperties, digest: &str) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(MODULE_HEADER.into(), text_value(digest));
    properties.with_headers(headers)
}

/// The version a request pins, if any.
pub fn requested_version(properties: &BasicProperties) -> Option<String> {
    header_text(properties, MODULE_HEADER)
}

/// `properties` carrying `trace` in W3C Trace Context headers.
pub fn with_trace(properties: BasicProperties, trace: TraceHeaders<'_>) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    insert_trace(&mut headers, trace);
    properties.with_headers(headers)
}

fn insert_trace(headers: &mut FieldTable, trace: TraceHeaders<'_>) {
    headers.insert(
        TRACEPARENT_HEADER.into(),
        text_value(&trace.context.to_string()),
    );
    if let Some(state) = trace.state {
        headers.insert(TRACESTATE_HEADER.into(), text_value(state));
    }
}

/// The trace a message continues: `None` without a `traceparent` header,
/// `Some(Err)` with one that cannot be read.
pub fn trace_parent(properties: &BasicProperties) -> Option<Result<TraceContext, ParseError>> {
    header_text(properties, TRACEPARENT_HEADER).map(|value| TraceContext::parse(&value))
}

/// A message's `tracestate`, when it is one W3C allows: a client's header
/// goes into the reply's, so its size is bounded here. W3C passes it on
/// only with a `traceparent` that could be read: that is the caller's to
/// check.
pub fn trace_state(properties: &BasicProperties) -> Option<String> {
    header_text(properties, TRACESTATE_HEADER).filter(|state| trace::valid_state(state))
}

/// A text header value as `pika` writes strings, so Python peers read
/// them as `str`/`bytes` without surprises.
fn text_value(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

/// The text of header `name`, if present and textual.
pub fn header_text(properties: &BasicProperties, name: &str) -> Option<String> {
    let value = properties.headers().as_ref()?.inner().get(name)?;
    match value {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_echoes_the_correlation_id_and_marks_errors() {
        let request = BasicProperties::default().with_correlation_id("abc".into());
        let reply = reply_properties(
            &request,
            "increase",
            "sha256:00",
            Some(ErrorKind::BadRequest),
            None,
        );
        assert_eq!(reply.correlation_id().as_ref().unwrap().as_str(), "abc");
        assert_eq!(
            header_text(&reply, ERROR_HEADER).as_deref(),
            Some("bad-request")
        );
        assert_eq!(
            header_text(&reply, FUNCTION_HEADER).as_deref(),
            Some("increase")
        );
    }

    #[test]
    fn error_kinds_from_peers_are_typed_and_unknown_ones_kept() {
        for kind in [
            ErrorKind::BadRequest,
            ErrorKind::ComputeFailed,
            ErrorKind::Timeout,
            ErrorKind::TooLarge,
            ErrorKind::UnknownVersion,
        ] {
            assert_eq!(kind.as_str().parse(), Ok(kind));
            assert_eq!(
                PeerErrorKind::from(kind.as_str()),
                PeerErrorKind::Known(kind)
            );
        }
        let newer = PeerErrorKind::from("rate-limited");
        assert_eq!(newer, PeerErrorKind::Other("rate-limited".into()));
        assert_eq!(newer, "rate-limited");
        assert_eq!("nonsense".parse::<ErrorKind>(), Err(UnknownErrorKind));
    }

    #[test]
    fn error_bodies_fit_the_limit_and_say_they_were_cut() {
        assert_eq!(error_body("short", 100), b"short");
        let long = "é".repeat(500);
        let body = String::from_utf8(error_body(&long, 200)).expect("cut on a char boundary");
        assert!(body.len() <= 200, "{}", body.len());
        assert!(
            body.ends_with("[cut from 1000 bytes to fit --max-body]"),
            "{body}"
        );
        assert!(error_body(&long, 5).len() <= 5);
    }

    #[test]
    fn a_request_expires_after_its_timestamp_and_expiration() {
        let sent = BasicProperties::default()
            .with_timestamp(1_000)
            .with_expiration("2000".into());
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert!(!expired(&sent, at(1_002)));
        assert!(expired(&sent, at(1_004)));
        assert!(!expired(&BasicProperties::default(), at(u32::MAX.into())));
        let nonsense = sent.clone().with_expiration("soon".into());
        assert!(!expired(&nonsense, at(u32::MAX.into())));
        let patient = with_expiry(BasicProperties::default(), Duration::from_secs(1 << 40));
        assert_eq!(
            patient.expiration().as_ref().unwrap().as_str(),
            "4294967295"
        );
        let fresh = with_expiry(BasicProperties::default(), Duration::from_secs(30));
        assert!(!expired(&fresh, SystemTime::now()));
        assert!(expired(&fresh, SystemTime::now() + Duration::from_secs(32)));
    }

    #[test]
    fn a_request_pins_a_version_in_the_reply_header() {
        let plain = BasicProperties::default().with_correlation_id("c".into());
        assert_eq!(requested_version(&plain), None);
        let pinned = with_version(plain, "sha256:ab");
        assert_eq!(requested_version(&pinned).as_deref(), Some("sha256:ab"));
        assert_eq!(pinned.correlation_id().as_ref().unwrap().as_str(), "c");
    }

    #[test]
    fn reply_to_a_request_without_correlation_id_has_none() {
        let reply = reply_properties(
            &BasicProperties::default(),
            "increase",
            "sha256:00",
            None,
            None,
        );
        assert!(reply.correlation_id().is_none());
        assert_eq!(header_text(&reply, ERROR_HEADER), None);
    }
}
