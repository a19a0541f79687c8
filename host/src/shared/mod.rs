//! What the node, the center and the registry share. Nothing here knows
//! of those three: every import in this layer stays in it.
//!
//! # Layout
//!
//! - [`wire`]: the wire format every peer shares (bodies, headers, error
//!   kinds), compatible with the classic Python `pika` RPC examples, and
//!   the framing of batches (`wire::batch`).
//! - [`amqp`]: connecting to RabbitMQ (one broker, or any node of a
//!   cluster; over TLS for `amqps://`, in `amqp::tls`) with an error a
//!   person can act on, waiting for a broker that does not answer yet,
//!   and keeping passwords out of messages.
//! - [`queues`]: which queue serves which function, how the queues are
//!   declared (durable classic, quorum with a delivery limit, or the
//!   Python examples' transient one), and the defaults.
//! - [`sandbox`]: the WebAssembly side. One engine and one instance pool
//!   for every function, shared fairly between them; each request runs in
//!   a fresh instance under a CPU deadline and a memory cap (the node's,
//!   or a function's own narrower ones from `NAME.toml` beside its
//!   module), with its output captured into the log.
//! - [`trace`]: W3C Trace Context through the broker, spans by the
//!   OpenTelemetry conventions for messaging, and their OTLP export
//!   (off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set).
//! - `backoff` (private to the crate): the waits between attempts to
//!   reach the broker again, one policy for node and center.
//! - `lock` (private to the crate): locking a mutex that a panic may have
//!   poisoned, in one place.
//! - `escaped` (private to the crate): text from clients and guests, its
//!   control characters escaped for the log.

pub mod amqp;
pub(crate) mod backoff;
pub(crate) mod escaped;
pub(crate) mod lock;
pub mod queues;
pub mod sandbox;
pub mod trace;
pub mod wire;
