//! What a guest prints, stdout and stderr together: kept per request up
//! to a cap, then logged in the request's span. The end of its stderr is
//! kept apart: when a guest traps without saying why through `panicked`
//! (a Python exception, a JavaScript throw, a panic in a Rust guest with
//! std), what it last wrote there is the reason its caller is given.

use crate::shared::{escaped::Escaped, lock::lock};
use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};
use tokio::io::AsyncWrite;
use tracing::info;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// What a guest may print (stdout and stderr together) in one request
/// before the rest is dropped, so a guest cannot flood the node's log.
pub const GUEST_OUTPUT_CAP: usize = 4096;

/// The most of the end of a guest's stderr kept for a crash's reason:
/// a Python traceback's last frames and exception, a JavaScript error
/// with its stack.
const LAST_WORDS_CAP: usize = 1024;

/// What a guest printed in one request, stdout and stderr interleaved:
/// the first [`GUEST_OUTPUT_CAP`] bytes kept, the rest counted and dropped;
/// and the last [`LAST_WORDS_CAP`] bytes of its stderr.
/// Writes never fail, so a chatty guest is not turned into a crashing one.
#[derive(Clone, Default)]
pub(super) struct GuestOutput {
    captured: Arc<Mutex<CapturedOutput>>,
    stream: Stream,
}

/// Which of the guest's streams a [`GuestOutput`] writes.
#[derive(Clone, Copy, Default, PartialEq)]
pub(super) enum Stream {
    #[default]
    Stdout,
    Stderr,
}

#[derive(Default)]
struct CapturedOutput {
    kept: Vec<u8>,
    dropped: usize,
    stderr_tail: Vec<u8>,
}

impl GuestOutput {
    /// The same capture, written to as the guest's `stream`.
    pub(super) fn stream(&self, stream: Stream) -> Self {
        GuestOutput {
            captured: self.captured.clone(),
            stream,
        }
    }

    /// The end of what the guest wrote to stderr, on one line (control
    /// characters escaped), if it wrote anything there.
    pub(super) fn last_words(&self) -> Option<String> {
        let captured = lock(&self.captured);
        let text = String::from_utf8_lossy(&captured.stderr_tail);
        let text = text.trim();
        (!text.is_empty()).then(|| Escaped(text).to_string())
    }

    /// Logs what the guest printed, if anything, in the span `span` makes.
    pub(super) fn log(&self, function: &str, span: impl FnOnce() -> tracing::Span) {
        let captured = lock(&self.captured);
        if captured.kept.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&captured.kept);
        span().in_scope(|| {
            info!(
                function,
                dropped_bytes = captured.dropped,
                "guest output: {}",
                Escaped(text.trim_end())
            )
        });
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut captured = lock(&self.captured);
        let room = GUEST_OUTPUT_CAP.saturating_sub(captured.kept.len());
        let kept = bytes.len().min(room);
        captured.kept.extend_from_slice(&bytes[..kept]);
        captured.dropped += bytes.len() - kept;
        if self.stream == Stream::Stderr {
            let tail = &mut captured.stderr_tail;
            tail.extend_from_slice(&bytes[bytes.len().saturating_sub(LAST_WORDS_CAP)..]);
            let excess = tail.len().saturating_sub(LAST_WORDS_CAP);
            tail.drain(..excess);
        }
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::{GuestOutput, LAST_WORDS_CAP, Stream};
    use tokio::io::AsyncWriteExt as _;

    /// The crash reason is the end of stderr only, on one line, however
    /// much was printed before it.
    #[tokio::test]
    async fn last_words_are_the_end_of_stderr_on_one_line() {
        let output = GuestOutput::default();
        let mut stdout = output.stream(Stream::Stdout);
        let mut stderr = output.stream(Stream::Stderr);
        assert_eq!(output.last_words(), None);
        stdout.write_all(b"progress\n").await.unwrap();
        assert_eq!(output.last_words(), None);

        stderr.write_all(&[b'x'; 3000]).await.unwrap();
        stderr.write_all(b"\nTraceback ...\n").await.unwrap();
        stdout.write_all(b"more progress\n").await.unwrap();
        stderr.write_all(b"ValueError: no\n").await.unwrap();
        let words = output.last_words().unwrap();
        assert!(
            words.ends_with("\\nTraceback ...\\nValueError: no"),
            "{words}"
        );
        let cut = LAST_WORDS_CAP - "\nTraceback ...\nValueError: no\n".len();
        assert_eq!(words.matches('x').count(), cut, "{words}");
    }
}
