//! `compute --module modules/increase.wasm`: a compute node. See
//! `compute --help`, the README and the book in docs/.

use clap::Parser as _;
use compute_host::cli::{self, compute::ComputeArgs};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args = ComputeArgs::parse();
    // lapin logs returned replies, refused logins and closed channels
    // itself; the node says each in its own words, with what to do.
    cli::init_tracing("info,lapin=off", args.log_format);
    cli::exit_status("compute", cli::compute::run(args).await)
}
