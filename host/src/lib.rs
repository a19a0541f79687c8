//! A RabbitMQ request/reply compute node whose compute step runs in a
//! WebAssembly sandbox, and the center that calls it.
//!
//! # Layout
//!
//! - [`wire`]: the wire format every peer shares (bodies, headers, error
//!   kinds), compatible with the classic Python `pika` RPC examples, and
//!   the framing of batches (`wire::batch`).
//! - [`sandbox`]: the WebAssembly side. One engine and one instance pool
//!   for every function, shared fairly between them; each request runs in a fresh instance under a
//!   CPU deadline and a memory cap (the node's, or a function's own
//!   narrower ones from `NAME.toml` beside its module), with its output
//!   captured into the log.
//! - [`node`]: the compute node. One connection, a consumer per function,
//!   each delivery in its own task; reconnects when the broker goes away,
//!   drains in-flight work on shutdown.
//! - [`functions`]: the table of functions a node serves. Compiles the
//!   bytes its sources offer, off the request path, and swaps each usable
//!   version in without failing a request.
//! - `source` (private): where functions come from: a module file or a
//!   directory of them, watched with their limits files.
//! - [`registry`]: versions on a RabbitMQ stream, followed by nodes
//!   (`--registry`) and appended to by deployers (`compute deploy`),
//!   signed, reported, kept through retention.
//! - [`live`]: one function's versions: the current one that requests
//!   read without a lock, and the recent ones kept compiled.
//! - [`queues`]: which queue serves which function, how the queues are
//!   declared (durable classic, quorum with a delivery limit, or the
//!   Python examples' transient one), and the defaults.
//! - [`ack_mode`]: when a request is acked, relative to its reply, and
//!   what each choice guarantees.
//! - `request` (private): what happens to one delivery: compute (each
//!   input of a batch on its own), reply, then ack, or reject when there
//!   is nobody to reply to.
//! - [`center`]: the RPC client, [`Center`]: many calls in flight over one
//!   connection, replies (from a reply queue or by direct reply-to)
//!   matched by correlation id, calls sent again after a lost connection,
//!   calls failed fast once no node consumes the queue.
//! - [`trace`]: W3C Trace Context through the broker, spans by the
//!   OpenTelemetry conventions for messaging, and their OTLP export
//!   (off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set).
//! - `escaped` (private): text from clients and guests, its control
//!   characters escaped for the log.
//! - `lock` (private): locking a mutex that a panic may have poisoned,
//!   in one place.
//! - `throttle` (private): warnings that a client could repeat per
//!   request, logged at most once per interval.
//! - `metrics` (private): the node's Prometheus metrics and the small
//!   HTTP endpoint that serves them and `/health` (`--metrics-addr`).
//! - [`amqp`]: connecting to RabbitMQ (one broker, or any node of a
//!   cluster; over TLS for `amqps://`, in `amqp::tls`) with an error a
//!   person can act on, waiting for a broker that does not answer yet,
//!   and keeping passwords out of messages.
//! - `backoff` (private): the waits between attempts to reach the broker
//!   again, one policy for node and center.
//! - [`cli`]: the arguments and the `run` functions behind the thin
//!   `compute` and `center` binaries.

pub mod ack_mode;
pub mod amqp;
mod backoff;
pub mod center;
pub mod cli;
mod escaped;
pub mod functions;
pub mod live;
mod lock;
mod metrics;
pub mod node;
pub mod queues;
pub mod registry;
mod request;
pub mod sandbox;
mod source;
mod throttle;
pub mod trace;
pub mod wire;

pub use ack_mode::AckMode;
pub use center::{CallError, Center, CenterOptions, Origin, Reply, ReplyMode};
pub use live::LiveModule;
pub use node::{ComputeNode, NodeConfig, Source};
pub use sandbox::{ComputeError, ComputeModule, Limits, Sandbox};
