//! A RabbitMQ request/reply compute node whose compute step runs in a
//! WebAssembly sandbox, and the center that calls it.
//!
//! # Layout
//!
//! Four layers, each importing only from the layers listed before it
//! (the test `host/tests/layers.rs` keeps it so):
//!
//! 1. [`shared`]: what every peer shares: the wire format, connecting to
//!    RabbitMQ, the queues, the WebAssembly sandbox, and traces.
//! 2. [`registry`]: versions on a RabbitMQ stream: the format of its
//!    messages, their signatures, the state they replay to, and the
//!    deployer's side (`compute deploy`, `promote`, `status`, …).
//! 3. [`node`]: the compute node: the table of functions it serves, their
//!    sources (a module file, a directory, the registry's stream), one
//!    connection, a consumer per function, each request computed,
//!    answered and acked. And [`center`]: the RPC client, [`Center`]:
//!    many calls in flight over one connection, replies matched by
//!    correlation id. The node and the center know nothing of each other.
//! 4. [`cli`]: the arguments and the `run` functions behind the thin
//!    `compute` and `center` binaries.

pub mod center;
pub mod cli;
pub mod node;
pub mod registry;
pub mod shared;

pub use center::{CallError, Center, CenterOptions, Origin, Reply, ReplyMode};
pub use node::{ComputeNode, NodeConfig, Source, ack_mode::AckMode, live::LiveModule};
pub use shared::sandbox::{ComputeError, ComputeModule, Limits, Sandbox};
