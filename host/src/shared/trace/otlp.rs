//! Spans in the OTLP protobuf encoding (`ExportTraceServiceRequest` of
//! `opentelemetry/proto/collector/trace/v1`), written by hand: the few
//! messages a span needs do not justify a protobuf code generator and
//! its build.

use super::span::{Ended, Value};
use std::time::SystemTime;

/// The instrumentation scope spans are reported under.
const SCOPE: &str = "compute-host";

/// One export request holding `spans`, all from the resource described
/// by `resource`.
pub(super) fn encode(resource: &[(String, String)], spans: &[Ended]) -> Vec<u8> {
    let mut request = Vec::with_capacity(256 * spans.len());
    // ExportTraceServiceRequest.resource_spans
    message(&mut request, 1, |resource_spans| {
        // ResourceSpans.resource
        message(resource_spans, 1, |message| {
            for (key, value) in resource {
                key_value(message, 1, key, &Value::Str(value.clone()));
            }
        });
        // ResourceSpans.scope_spans
        message(resource_spans, 2, |scope_spans| {
            message(scope_spans, 1, |scope| {
                string(scope, 1, SCOPE);
                string(scope, 2, env!("CARGO_PKG_VERSION"));
            });
            for span in spans {
                message(scope_spans, 2, |message| encode_span(message, span));
            }
        });
    });
    request
}

fn encode_span(out: &mut Vec<u8>, span: &Ended) {
    bytes(out, 1, &span.context.trace_id);
    bytes(out, 2, &span.context.span_id);
    if let Some(parent) = &span.parent {
        bytes(out, 4, parent);
    }
    string(out, 5, &span.name);
    varint_field(out, 6, span.kind as u64);
    fixed64(out, 7, unix_nanos(span.start));
    fixed64(out, 8, unix_nanos(span.end));
    for (key, value) in &span.attributes {
        key_value(out, 9, key, value);
    }
    for event in &span.events {
        message(out, 11, |message| {
            fixed64(message, 1, unix_nanos(event.time));
            string(message, 2, event.name);
            for (key, value) in &event.attributes {
                key_value(message, 3, key, value);
            }
        });
    }
    if let Some(description) = &span.error {
        // Status { message = 2; code = 3 (STATUS_CODE_ERROR = 2) }
        message(out, 15, |status| {
            string(status, 2, description);
            varint_field(status, 3, 2);
        });
    }
    // Span.flags: the trace flags in the low byte.
    varint(out, 16 << 3 | 5);
    out.extend_from_slice(&u32::from(span.context.flags).to_le_bytes());
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

fn key_value(out: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    message(out, field, |pair| {
        string(pair, 1, key);
        // AnyValue { string_value = 1; int_value = 3 }
        message(pair, 2, |any| match value {
            Value::Static(text) => string(any, 1, text),
            Value::Str(text) => string(any, 1, text),
            Value::Int(number) => varint_field(any, 3, *number as u64),
        });
    });
}

/// A length-delimited field holding what `write` encodes.
fn message(out: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    write(&mut inner);
    bytes(out, field, &inner);
}

fn string(out: &mut Vec<u8>, field: u32, text: &str) {
    bytes(out, field, text.as_bytes());
}

fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    varint(out, u64::from(field << 3 | 2));
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    varint(out, u64::from(field << 3 | 1));
    out.extend_from_slice(&value.to_le_bytes());
}

fn varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    varint(out, u64::from(field << 3));
    varint(out, value);
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_take_seven_bits_a_byte() {
        let mut out = Vec::new();
        varint(&mut out, 1);
        varint(&mut out, 300);
        varint(&mut out, u64::MAX);
        assert_eq!(out[..3], [0x01, 0xac, 0x02]);
        assert_eq!(out.len(), 3 + 10);
    }

    #[test]
    fn a_string_field_is_its_tag_its_length_and_its_bytes() {
        let mut out = Vec::new();
        string(&mut out, 5, "send q");
        assert_eq!(out, b"\x2a\x06send q");
    }
}
