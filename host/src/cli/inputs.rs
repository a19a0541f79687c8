//! What `center` and `compute call` take as inputs: one definition for
//! both.

use futures_util::{StreamExt as _, stream, stream::BoxStream};
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _};

/// The inputs: those `given` as arguments, or else one per line of
/// `input`, read as they are needed (a long input takes no more memory
/// than a short one).
///
/// Lines are bytes: one that is not UTF-8 is an input as it is, and the
/// function answers it (a `bad-request` from `increase`), rather than
/// ending the whole run. A line's `\n` or `\r\n` is not part of it, and a
/// blank line (a trailing one, say) is no input.
pub(super) fn inputs<'a>(
    given: Vec<String>,
    input: impl AsyncBufRead + Unpin + Send + 'a,
) -> BoxStream<'a, std::io::Result<Vec<u8>>> {
    if !given.is_empty() {
        return stream::iter(given.into_iter().map(|input| Ok(input.into_bytes()))).boxed();
    }
    stream::unfold(input, |mut input| async move {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line).await {
            Ok(0) => None,
            Ok(_) => {
                if line.ends_with(b"\n") {
                    line.pop();
                    if line.ends_with(b"\r") {
                        line.pop();
                    }
                }
                Some((Ok(line), input))
            }
            Err(err) => Some((Err(err), input)),
        }
    })
    .filter(|line| {
        let blank = matches!(line, Ok(line) if line.trim_ascii().is_empty());
        std::future::ready(!blank)
    })
    .boxed()
}
