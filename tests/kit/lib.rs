//! The test kit: what every scenario against the real broker needs.
//!
//! # Layout
//!
//! - `broker`: the broker's address, unique queue names, declaring and
//!   deleting queues, and a guard that deletes a test's queues however
//!   the test ends.
//! - `modules`: the built compute modules and private directories of
//!   module files.
//! - `node`: a compute node running inside the test.
//! - `process`: a server (the `compute` binary, a bench's echo server)
//!   running as a process of its own.
//! - `load`: calls kept going through a [`Center`](compute_host::Center),
//!   a fixed batch or a steady load, and what each call saw.
//! - `proxy`: a broker address that answers only while the test wants.
//! - `raw`: a bare AMQP client, for what is on the wire byte by byte.
//! - `python`: the Python peers (pika).
//! - `metrics`: scraping a node's Prometheus metrics.
//! - `otlp`: a collector that keeps the spans posted to it.
//! - `eventually`: waiting for a condition, never for a fixed time.
//! - `transcript`: the book's `console` blocks, run as written.

mod broker;
mod eventually;
mod figures;
mod load;
mod metrics;
mod modules;
mod node;
mod otlp;
mod process;
mod proxy;
mod python;
mod raw;
mod transcript;

pub use broker::{
    QueueGuard, amqp_url, center, declare_queue, delete_queue, ready_messages,
    refuses_transient_queues, unique_queue,
};
pub use eventually::eventually;
pub use figures::{
    Switches, ThreadSwitches, broker_pid, cpu_seconds, minor_faults, peak_rss_mib, print_goal,
};
pub use load::{Call, Calls, Load, Tally};
pub use metrics::{get, requests_settled, scrape, wait_for_metric};
pub use modules::{ModuleDir, built_module, increase_module, nosy_module};
pub use node::{DirNode, RunningNode, queue_of, test_compile_cache};
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use process::{ServerProcess, center_command, compute_command, run_to_end};
pub use proxy::BrokerProxy;
pub use python::{python, python_command, python_output};
pub use raw::RawClient;
pub use transcript::run_chapter;
