//! Traces: one call followed from the center through the broker to the
//! node and back, as W3C Trace Context and OpenTelemetry describe it.
//!
//! A center that exports starts a span for each call and a send span for
//! each publish, whose context the request carries in its `traceparent`
//! header. The node continues it (or a pika or amqplib caller's), or,
//! when it exports, starts a trace for a request that carries none, with
//! a process span and a child span for the guest call, and puts its own
//! context on the reply. Spans follow the OpenTelemetry conventions for
//! messaging.
//!
//! Export is OTLP over HTTP with protobuf, off unless the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set. Off,
//! a span is an id and nothing is recorded.
//!
//! # Layout
//!
//! - `context`: [`TraceContext`], the `traceparent` header read and
//!   written.
//! - `span`: [`Span`], what it records while it runs; it is exported when
//!   dropped.
//! - `config`: [`ExportConfig`] from the `OTEL_*` variables.
//! - `export`: the bounded queue and the task that sends batches to the
//!   collector, and says once when it cannot.
//! - `otlp`: the protobuf encoding of spans.
//! - `post`: one export request, an HTTP/1.1 POST.

mod config;
mod context;
mod export;
mod otlp;
mod post;
mod span;

pub use config::{ConfigError, ExportConfig, SCHEDULE_DELAY};
pub use context::{ParseError, TraceContext, valid_state};
pub use span::{Kind, MAX_DESCRIPTION, Span, Value};

use export::Exporter;
use std::time::Duration;

/// Attribute names of the OpenTelemetry conventions, and ours, in one
/// place.
pub mod attributes {
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    pub const OPERATION_TYPE: &str = "messaging.operation.type";
    pub const OPERATION_NAME: &str = "messaging.operation.name";
    /// The exchange: the empty string for the default exchange.
    pub const DESTINATION: &str = "messaging.destination.name";
    pub const ROUTING_KEY: &str = "messaging.rabbitmq.destination.routing_key";
    pub const DELIVERY_TAG: &str = "messaging.rabbitmq.message.delivery_tag";
    pub const CONVERSATION_ID: &str = "messaging.message.conversation_id";
    pub const BODY_SIZE: &str = "messaging.message.body.size";
    pub const BATCH_COUNT: &str = "messaging.batch.message_count";
    pub const ERROR_TYPE: &str = "error.type";
    pub const FUNCTION: &str = "compute.function";
    pub const MODULE_DIGEST: &str = "compute.module.digest";
    pub const OUTCOME: &str = "compute.outcome";
    pub const INPUT_INDEX: &str = "compute.input.index";
    /// `messaging.system`'s value.
    pub const RABBITMQ: &str = "rabbitmq";
    /// `messaging.operation.type` of a span that sends a message.
    pub const SEND: &str = "send";
    /// `messaging.operation.name` of the AMQP publish.
    pub const PUBLISH: &str = "publish";
    /// `messaging.operation.type` and `.name` of a span that processes a
    /// message received.
    pub const PROCESS: &str = "process";
}

/// How long a stopping node or center waits for its last spans to be
/// exported: a collector that is down must not hold up a shutdown.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Starts spans, and exports them when export is on. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tracer {
    exporter: Option<Exporter>,
}

impl Tracer {
    /// A tracer that exports nothing: spans only carry ids.
    pub fn off() -> Self {
        Tracer::default()
    }

    /// A tracer exporting as the `OTEL_*` variables say, for the service
    /// `service` unless `OTEL_SERVICE_NAME` names another. Starts the
    /// export task on the current runtime.
    pub fn from_env(service: &str) -> Result<Self, ConfigError> {
        Ok(ExportConfig::from_env(service)?.map_or_else(Tracer::off, Tracer::exporting))
    }

    /// A tracer exporting as `config` says. Starts the export task on the
    /// current runtime.
    pub fn exporting(config: ExportConfig) -> Self {
        Tracer {
            exporter: Some(Exporter::start(config)),
        }
    }

    /// Whether spans are exported.
    pub fn is_on(&self) -> bool {
        self.exporter.is_some()
    }

    /// Starts a span, a child of `parent` or else a new trace's root.
    /// `name` is only made when the span is recorded.
    pub fn start(
        &self,
        name: impl FnOnce() -> String,
        kind: Kind,
        parent: Option<&TraceContext>,
    ) -> Span {
        Span::start(self.exporter.as_ref(), name, kind, parent)
    }

    /// Exports the spans ended so far, waiting at most [`FLUSH_LIMIT`]:
    /// before a node or a center stops.
    pub async fn flush(&self) {
        if let Some(exporter) = &self.exporter {
            exporter.flush(FLUSH_LIMIT).await;
        }
    }
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("on", &self.is_on()).finish()
    }
}
