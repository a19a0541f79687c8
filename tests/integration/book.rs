//! The book (`docs/`): its console blocks run as written, against the real
//! broker, and print what the book shows (see `testkit::run_chapter`).

use std::path::{Path, PathBuf};

fn chapter(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/src")
        .join(name)
}

/// "Running nodes and calls": a node, calls, several functions, a limits
/// file that does not parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_book_s_usage_chapter_runs_as_written() {
    testkit::run_chapter(&chapter("usage.md")).await;
}

/// "Swapping a function": a module file replaced under a running node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_book_s_swap_chapter_runs_as_written() {
    testkit::run_chapter(&chapter("swaps.md")).await;
}

/// "The registry": three nodes following a registry, deploys signed,
/// staged, pinned, promoted, rolled back, refused, repeated and removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_book_s_registry_chapter_runs_as_written() {
    testkit::run_chapter(&chapter("registry.md")).await;
}

/// "Compute functions": `compute call` on the Rust, Python and JavaScript
/// `divide`, a panic, a Python exception and a JavaScript error each
/// reported as `compute-failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_book_s_guests_chapter_runs_as_written() {
    testkit::run_chapter(&chapter("guests.md")).await;
}

/// "Operations": a call and a batch traced through a center and a node,
/// exported to `otlp-tree`, which prints them as trees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_book_s_operations_chapter_runs_as_written() {
    testkit::run_chapter(&chapter("operations.md")).await;
}

/// "Queues and broker versions": RabbitMQ 4.3 refuses the Python
/// examples' transient queue, and the node says what to do (its block
/// runs only against 4.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_book_s_broker_versions_chapter_runs_as_written() {
    testkit::run_chapter(&chapter("broker-versions.md")).await;
}
