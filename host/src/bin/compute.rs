//! `compute --module modules/increase.wasm`: a compute node. See
//! `compute --help` and the README.

use clap::Parser as _;
use compute_host::cli::{self, compute::ComputeArgs};
use std::{io::Write as _, process::ExitCode};

#[tokio::main]
async fn main() -> ExitCode {
    let args = ComputeArgs::parse();
    // lapin logs returned replies, refused logins and closed channels
    // itself; the node says each in its own words, with what to do.
    cli::init_tracing("info,lapin=off", args.log_format);
    match cli::compute::run(args).await {
        Ok(code) => code,
        Err(err) => {
            // Not `eprintln!`, which panics when stderr is a closed pipe.
            let _ = writeln!(std::io::stderr(), "compute: {}", cli::explain(&err));
            ExitCode::from(2)
        }
    }
}
