//! A span's identity as W3C Trace Context carries it between processes:
//! the `traceparent` header, `00-<trace id>-<span id>-<flags>`.

use std::fmt;

/// The trace a span belongs to, the span itself, and whether the trace
/// is sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The trace flags; bit 0 is "sampled".
    pub flags: u8,
}

/// Why a `traceparent` value was ignored: the node then starts a trace of
/// its own, as the W3C specification asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("it is not `version-traceid-spanid-flags` in lowercase hex")]
    Malformed,
    #[error("version ff is forbidden")]
    ForbiddenVersion,
    #[error("its trace id or span id is all zeros")]
    ZeroId,
}

impl TraceContext {
    /// A new trace's root, sampled.
    pub fn new_root() -> Self {
        TraceContext {
            trace_id: *uuid::Uuid::new_v4().as_bytes(),
            span_id: new_span_id(),
            flags: 1,
        }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        TraceContext {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// Reads a `traceparent` value. A later version's value is read by its
    /// first four fields, as the specification asks of version 00 readers.
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        let bytes = value.as_bytes();
        if bytes.len() < 55 || (bytes.len() > 55 && bytes[55] != b'-') {
            return Err(ParseError::Malformed);
        }
        let field = |from: usize, to: usize| -> Result<&[u8], ParseError> {
            let field = &bytes[from..to];
            if field.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                Ok(field)
            } else {
                Err(ParseError::Malformed)
            }
        };
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(ParseError::Malformed);
        }
        let version = field(0, 2)?;
        if version == b"ff" {
            return Err(ParseError::ForbiddenVersion);
        }
        if version == b"00" && bytes.len() != 55 {
            return Err(ParseError::Malformed);
        }
        let mut trace_id = [0; 16];
        let mut span_id = [0; 8];
        let mut flags = [0; 1];
        decode_hex(field(3, 35)?, &mut trace_id);
        decode_hex(field(36, 52)?, &mut span_id);
        decode_hex(field(53, 55)?, &mut flags);
        if trace_id == [0; 16] || span_id == [0; 8] {
            return Err(ParseError::ZeroId);
        }
        Ok(TraceContext {
            trace_id,
            span_id,
            flags: flags[0],
        })
    }

    /// Whether the caller records this trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id in lowercase hex, as logs and exemplars show it.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id in lowercase hex.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

/// The `traceparent` header's value.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0; 55];
        text[..3].copy_from_slice(b"00-");
        write_hex(&self.trace_id, &mut text[3..35]);
        text[35] = b'-';
        write_hex(&self.span_id, &mut text[36..52]);
        text[52] = b'-';
        write_hex(&[self.flags], &mut text[53..]);
        // Hex digits and dashes only.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

/// The most a `tracestate` may hold, by W3C: characters, and list members.
const MAX_STATE_LEN: usize = 512;
const MAX_STATE_MEMBERS: usize = 32;

/// Whether `state` is a `tracestate` W3C allows to be passed on: at most
/// 512 printable ASCII characters in at most 32 members. The members'
/// keys and values are vendors' business, passed on unread.
pub fn valid_state(state: &str) -> bool {
    state.len() <= MAX_STATE_LEN
        && state.bytes().all(|byte| (0x20..=0x7e).contains(&byte))
        && state.split(',').count() <= MAX_STATE_MEMBERS
}

/// A random span id. A version 4 UUID is random but for its version and
/// variant bits (in its bytes 6 and 8): the span id takes none of those.
fn new_span_id() -> [u8; 8] {
    loop {
        let random = uuid::Uuid::new_v4().into_bytes();
        let mut id = [0; 8];
        id[..6].copy_from_slice(&random[..6]);
        id[6..].copy_from_slice(&random[14..]);
        if id != [0; 8] {
            return id;
        }
    }
}

/// Lowercase hex: this runs several times for every traced request, where
/// `format!` per byte would allocate for each.
fn hex(bytes: &[u8]) -> String {
    let mut text = vec![0; bytes.len() * 2];
    write_hex(bytes, &mut text);
    String::from_utf8(text).unwrap_or_default()
}

/// `bytes` in lowercase hex into `out`, two digits for each.
fn write_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// `digits` is lowercase hex, two digits for each byte of `into`.
fn decode_hex(digits: &[u8], into: &mut [u8]) {
    let value = |digit: u8| match digit {
        b'0'..=b'9' => digit - b'0',
        _ => digit - b'a' + 10,
    };
    for (byte, pair) in into.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = value(pair[0]) << 4 | value(pair[1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_reads_and_writes_back_the_same() {
        let context = TraceContext::parse(EXAMPLE).unwrap();
        assert_eq!(context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id_hex(), "00f067aa0ba902b7");
        assert!(context.sampled());
        assert_eq!(context.to_string(), EXAMPLE);
    }

    #[test]
    fn bad_traceparents_are_refused_with_their_reason() {
        let cases = [
            ("", ParseError::Malformed),
            (&EXAMPLE[..54], ParseError::Malformed),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                ParseError::Malformed,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                ParseError::Malformed,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ParseError::ForbiddenVersion,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ParseError::ZeroId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ParseError::ZeroId,
            ),
        ];
        for (value, why) in cases {
            assert_eq!(TraceContext::parse(value), Err(why), "{value:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-comes";
        let context = TraceContext::parse(later).unwrap();
        assert!(!context.sampled());
        assert_eq!(context.span_id_hex(), "00f067aa0ba902b7");
    }

    #[test]
    fn only_a_tracestate_w3c_allows_is_passed_on() {
        assert!(valid_state("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"));
        assert!(!valid_state(&"a".repeat(513)));
        assert!(!valid_state("vendor=x\r\ninjected: 1"));
        assert!(!valid_state(&vec!["k=v"; 33].join(",")));
    }

    #[test]
    fn a_child_keeps_the_trace_and_gets_a_span_of_its_own() {
        let root = TraceContext::new_root();
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
    }
}
