//! What a guest prints, stdout and stderr together: kept per request up
//! to a cap, then logged in the request's span.

use crate::{escaped::Escaped, lock::lock};
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

/// What a guest printed in one request, stdout and stderr interleaved:
/// the first [`GUEST_OUTPUT_CAP`] bytes kept, the rest counted and dropped.
/// Writes never fail, so a chatty guest is not turned into a crashing one.
#[derive(Clone, Default)]
pub(super) struct GuestOutput(Arc<Mutex<CapturedOutput>>);

#[derive(Default)]
struct CapturedOutput {
    kept: Vec<u8>,
    dropped: usize,
}

impl GuestOutput {
    /// Logs what the guest printed, if anything.
    pub(super) fn log(&self, function: &str) {
        let captured = lock(&self.0);
        if captured.kept.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&captured.kept);
        info!(
            function,
            dropped_bytes = captured.dropped,
            "guest output: {}",
            Escaped(text.trim_end())
        );
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
        let mut captured = lock(&self.0);
        let room = GUEST_OUTPUT_CAP.saturating_sub(captured.kept.len());
        let kept = bytes.len().min(room);
        captured.kept.extend_from_slice(&bytes[..kept]);
        captured.dropped += bytes.len() - kept;
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
