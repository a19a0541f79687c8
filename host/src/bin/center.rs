//! `center 10 20 30`: call compute nodes and print the results. See
//! `center --help` and the README.

use clap::Parser as _;
use compute_host::cli::{self, center::CenterArgs};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args = CenterArgs::parse();
    // lapin logs the expected 404 of the queue check and each returned
    // request itself; the center reports both in its own words.
    cli::init_tracing("warn,lapin=off", args.log_format);
    cli::center::main(args).await
}
