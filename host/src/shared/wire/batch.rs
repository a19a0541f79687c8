//! Batches: several inputs in one request message, their results in one
//! reply, in the same order.
//!
//! A batch request has the content type [`CONTENT_TYPE`], and its body is
//! each input in turn, framed by its length:
//!
//! ```text
//! request body = { length: u32, big-endian | input: `length` bytes } ...
//! ```
//!
//! The reply has the same content type and the request's correlation id,
//! and holds one result for each input, in order:
//!
//! ```text
//! reply body   = { kind length: u8 | kind: ASCII | length: u32, big-endian | body } ...
//! ```
//!
//! An empty kind means success, and `body` is the function's result. Any
//! other kind is an error kind, as the `x-error` header names it for a
//! single call (`bad-request`, `compute-failed`, ...), and `body` is its
//! message. Each input runs in its own fresh instance, so one input's
//! failure is its own. A message without the content type is a single
//! call, exactly as the Python examples send it. A batch the node cannot
//! read is answered as a single call that failed, with `bad-request`.

use super::PeerErrorKind;
use lapin::BasicProperties;

/// The content type of a batch request and of its reply.
pub const CONTENT_TYPE: &str = "application/x-compute-batch";

/// Why a batch body cannot be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The body ends inside an item's length or bytes.
    #[error("the batch body ends in the middle of item {item} (at byte {at})")]
    Truncated {
        /// The item, counted from 0.
        item: usize,
        /// Where the body ends.
        at: usize,
    },
    /// An error kind that is not printable ASCII.
    #[error("item {0}'s error kind is not printable ASCII")]
    BadKind(usize),
}

/// Whether a message with these properties is a batch.
pub fn is_batch(properties: &BasicProperties) -> bool {
    properties
        .content_type()
        .as_ref()
        .is_some_and(|content_type| content_type.as_str() == CONTENT_TYPE)
}

/// The body of a batch request for `inputs`.
pub fn encode_inputs<T: AsRef<[u8]>>(inputs: &[T]) -> Vec<u8> {
    let size = inputs.iter().map(|input| 4 + input.as_ref().len()).sum();
    let mut body = Vec::with_capacity(size);
    for input in inputs {
        push_framed(&mut body, input.as_ref());
    }
    body
}

/// The inputs of a batch request body.
pub fn decode_inputs(body: &[u8]) -> Result<Vec<&[u8]>, BatchError> {
    let mut reader = Reader { body, at: 0 };
    let mut inputs = Vec::new();
    while !reader.done() {
        let item = inputs.len();
        inputs.push(reader.framed(item)?);
    }
    Ok(inputs)
}

/// A batch reply body, built one result at a time.
#[derive(Debug, Default)]
pub struct Results {
    body: Vec<u8>,
}

impl Results {
    /// Room for `capacity` bytes of results.
    pub fn with_capacity(capacity: usize) -> Self {
        Results {
            body: Vec::with_capacity(capacity),
        }
    }

    /// Appends a success.
    pub fn ok(&mut self, output: &[u8]) {
        self.body.push(0);
        push_framed(&mut self.body, output);
    }

    /// Appends a failure of `kind` (an `x-error` name), with `message`.
    pub fn error(&mut self, kind: &str, message: &[u8]) {
        debug_assert!(!kind.is_empty() && kind.len() <= usize::from(u8::MAX));
        self.body.push(kind.len() as u8);
        self.body.extend_from_slice(kind.as_bytes());
        push_framed(&mut self.body, message);
    }

    /// The size of the body so far.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// Whether no result was appended yet.
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// The body.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

/// One input's result, read from a batch reply.
#[derive(Debug, PartialEq, Eq)]
pub enum ItemResult {
    /// The function's result.
    Ok(Vec<u8>),
    /// The function, or the node, failed on this input.
    Failed {
        /// The error kind, as `x-error` names it.
        kind: PeerErrorKind,
        /// The message for a person.
        message: String,
    },
}

/// The results of a batch reply body.
pub fn decode_results(body: &[u8]) -> Result<Vec<ItemResult>, BatchError> {
    let mut reader = Reader { body, at: 0 };
    let mut results = Vec::new();
    while !reader.done() {
        let item = results.len();
        let kind_len = usize::from(reader.take(1, item)?[0]);
        let kind = reader.take(kind_len, item)?;
        if !kind.iter().all(u8::is_ascii_graphic) {
            return Err(BatchError::BadKind(item));
        }
        let data = reader.framed(item)?;
        results.push(if kind.is_empty() {
            ItemResult::Ok(data.to_vec())
        } else {
            let kind = std::str::from_utf8(kind).map_err(|_| BatchError::BadKind(item))?;
            ItemResult::Failed {
                kind: kind.into(),
                message: String::from_utf8_lossy(data).into_owned(),
            }
        });
    }
    Ok(results)
}

fn push_framed(body: &mut Vec<u8>, bytes: &[u8]) {
    // Every body fits: RabbitMQ's largest message is 512 MiB.
    body.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    body.extend_from_slice(bytes);
}

/// Reads a body front to back.
struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at == self.body.len()
    }

    fn take(&mut self, len: usize, item: usize) -> Result<&'a [u8], BatchError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.body.len())
            .ok_or(BatchError::Truncated {
                item,
                at: self.body.len(),
            })?;
        let bytes = &self.body[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    /// A length, then that many bytes.
    fn framed(&mut self, item: usize) -> Result<&'a [u8], BatchError> {
        let len = self.take(4, item)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        self.take(len as usize, item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_come_back_as_they_were_sent() {
        let inputs: [&[u8]; 4] = [b"1", b"", b"forty-two", &[0, 255, 10]];
        let body = encode_inputs(&inputs);
        assert_eq!(&body[..5], &[0, 0, 0, 1, b'1']);
        assert_eq!(decode_inputs(&body).unwrap(), inputs);
        assert_eq!(decode_inputs(&[]).unwrap(), Vec::<&[u8]>::new());
    }

    #[test]
    fn a_cut_or_lying_batch_is_an_error_not_a_panic() {
        let body = encode_inputs(&[b"10", b"20"]);
        for cut in [1, 3, 5, body.len() - 1] {
            assert!(
                matches!(
                    decode_inputs(&body[..cut]),
                    Err(BatchError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
        // A length far past the end, near u32::MAX.
        assert_eq!(
            decode_inputs(&[255, 255, 255, 255, 1]),
            Err(BatchError::Truncated { item: 0, at: 5 })
        );
    }

    #[test]
    fn results_keep_their_order_and_their_own_errors() {
        let mut results = Results::default();
        results.ok(b"11");
        results.error("bad-request", b"not a number");
        results.ok(b"");
        let decoded = decode_results(&results.into_body()).unwrap();
        assert_eq!(
            decoded,
            [
                ItemResult::Ok(b"11".to_vec()),
                ItemResult::Failed {
                    kind: "bad-request".into(),
                    message: "not a number".into()
                },
                ItemResult::Ok(Vec::new()),
            ]
        );
    }

    #[test]
    fn a_kind_that_is_not_ascii_is_refused() {
        let body = [1, 0xff, 0, 0, 0, 0];
        assert_eq!(decode_results(&body), Err(BatchError::BadKind(0)));
        assert!(matches!(
            decode_results(&[5, b'a']),
            Err(BatchError::Truncated { item: 0, .. })
        ));
    }
}
