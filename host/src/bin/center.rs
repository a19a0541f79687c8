//! `center 10 20 30`: call compute nodes and print the results. See
//! `center --help`, the README and the book in docs/.

use clap::Parser as _;
use compute_host::cli::{self, center::CenterArgs};
use std::process::ExitCode;

// One thread: the center's own work per call is small, and lapin's I/O
// runs on a thread of its own anyway. Measured with
// scripts/profile-calls.sh, a second worker thread only added wakeups:
// about 5 us more CPU per call, and batches were no faster.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = CenterArgs::parse();
    // lapin logs the expected 404 of the queue check and each returned
    // request itself; the center reports both in its own words.
    cli::init_tracing("warn,lapin=off", args.log_format);
    cli::center::main(args).await
}
