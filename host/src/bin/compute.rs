//! `compute --module modules/increase.wasm`: a compute node. See
//! `compute --help` and the README.

use clap::Parser as _;
use compute_host::cli::{self, compute::ComputeArgs};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args = ComputeArgs::parse();
    // lapin warns about each returned reply; the node logs those itself.
    cli::init_tracing("info,lapin=error", args.log_format);
    match cli::compute::run(args).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("compute: {err:#}");
            ExitCode::from(2)
        }
    }
}
