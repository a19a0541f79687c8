//! End-to-end tests against a real RabbitMQ (`AMQP_URL`, or the local
//! default). Every test uses its own uniquely named queues, so they run in
//! parallel.

mod batch;
mod book;
mod call;
mod center_cli;
mod compile_cache;
mod faults;
mod functions;
mod health;
mod hostile;
mod languages;
mod library;
mod limits;
mod messages;
mod metrics;
mod pinning;
mod python;
mod quorum;
mod registry;
mod rpc;
mod sharing;
mod swap;
mod traces;
mod wire;
