//! A RabbitMQ request/reply compute node whose compute step runs in a
//! WebAssembly sandbox, and the center that calls it.
//!
//! # Layout
//!
//! - [`wire`]: the wire format every peer shares (bodies, headers, error
//!   kinds), compatible with the classic Python `pika` RPC examples.
//! - [`sandbox`]: the WebAssembly side. Compiles a compute module once and
//!   runs each request in a fresh instance under a CPU deadline and a
//!   memory cap, with its output captured into the log.
//! - [`node`]: the compute node. Consumes the request queue, hands each
//!   delivery to its own task, reconnects when the broker goes away,
//!   drains in-flight work on shutdown.
//! - [`functions`]: several functions in one node (`--modules DIR`), one
//!   [`ComputeNode`] per module file, started and stopped as files come
//!   and go.
//! - [`reload`]: live code swaps. Watches the module file and swaps each
//!   new version that compiles and checks out into the [`LiveModule`] that
//!   requests read, without a lock and without failing a request.
//! - `request` (private): what happens to one delivery: compute, reply,
//!   then ack, or reject when there is nobody to reply to.
//! - [`center`]: the RPC client, [`Center`]: many calls in flight over one
//!   connection and one reply queue, matched by correlation id, sent again
//!   after a lost connection.
//! - `escaped` (private): text from clients and guests, its control
//!   characters escaped for the log.
//! - `lock` (private): locking a mutex that a panic may have poisoned,
//!   in one place.
//! - `throttle` (private): warnings that a client could repeat per
//!   request, logged at most once per interval.
//! - `metrics` (private): the node's Prometheus metrics and the small
//!   HTTP endpoint that serves them (`--metrics-addr`).
//! - [`amqp`]: connecting to RabbitMQ with an error a person can act on,
//!   and keeping passwords out of messages.
//! - `backoff` (private): the waits between attempts to reach the broker
//!   again, one policy for node and center.
//! - [`cli`]: the arguments and the `run` functions behind the thin
//!   `compute` and `center` binaries.

pub mod amqp;
mod backoff;
pub mod center;
pub mod cli;
mod escaped;
pub mod functions;
mod lock;
mod metrics;
pub mod node;
pub mod reload;
mod request;
pub mod sandbox;
mod throttle;
pub mod wire;

pub use center::{CallError, Center, CenterOptions, Origin, Reply, ReplyMode};
pub use node::{ComputeNode, NodeConfig};
pub use reload::LiveModule;
pub use sandbox::{ComputeError, ComputeModule, Limits, Sandbox};
