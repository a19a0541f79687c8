//! The span that names a request in the node's log, made the first time
//! something is logged about the request.
//!
//! Every line about a request (a warning, a debug line, what its guest
//! printed) names its correlation id, function and trace. Most requests
//! log nothing, and making a span in the log's subscriber cost more than
//! the rest of a request's bookkeeping (3.9 µs a call of the node's CPU
//! at K = 16, measured by `perf`), so it is made only when needed.

use crate::shared::{escaped::Escaped, trace::TraceContext};
use std::sync::OnceLock;
use tracing::{Level, Span, info_span};

/// What names one request in the log, and its span once made.
pub(super) struct RequestLog<'a> {
    correlation_id: &'a str,
    function: &'a str,
    trace: Option<TraceContext>,
    span: OnceLock<Span>,
}

impl<'a> RequestLog<'a> {
    pub(super) fn new(
        correlation_id: &'a str,
        function: &'a str,
        trace: Option<TraceContext>,
    ) -> Self {
        RequestLog {
            correlation_id,
            function,
            trace,
            span: OnceLock::new(),
        }
    }

    /// The request's span, made now if it was not yet. The id is logged
    /// escaped: it comes from any client, newlines included.
    pub(super) fn span(&self) -> &Span {
        self.span.get_or_init(|| {
            let trace = self.trace.as_ref();
            info_span!(
                "request",
                correlation_id = %Escaped(self.correlation_id),
                function = self.function,
                trace_id = trace.map(|trace| tracing::field::display(trace.trace_id_hex())),
                span_id = trace.map(|trace| tracing::field::display(trace.span_id_hex())),
            )
        })
    }

    /// Runs `log`, which logs something about the request, in its span.
    pub(super) fn in_span<T>(&self, log: impl FnOnce() -> T) {
        self.span().in_scope(log);
    }

    /// Runs `log`, which logs at debug level, in the request's span, if
    /// debug lines are logged at all: otherwise the span is not made.
    pub(super) fn debug<T>(&self, log: impl FnOnce() -> T) {
        if tracing::enabled!(Level::DEBUG) {
            self.in_span(log);
        }
    }
}
