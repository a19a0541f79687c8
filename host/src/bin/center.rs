//! `center 10 20 30`: call compute nodes and print the results. Exits 0
//! when every request succeeded, 1 when any failed, 2 when the run itself
//! could not proceed (usage, connection). See `center --help`.

use clap::Parser as _;
use compute_host::cli::{self, center::CenterArgs};
use std::{io, process::ExitCode};
use tokio::io::BufReader;

#[tokio::main]
async fn main() -> ExitCode {
    let args = CenterArgs::parse();
    // lapin logs the expected 404 of the queue check and each returned
    // request itself; the center reports both in its own words.
    cli::init_tracing("warn,lapin=off", args.log_format);
    let (stats, json) = (args.stats, args.json);
    let stdin = BufReader::new(tokio::io::stdin());
    match cli::center::run(args, stdin, io::stdout().lock()).await {
        Ok(summary) => {
            if stats {
                let stats = &summary.stats;
                eprintln!(
                    "{}",
                    if json {
                        stats.to_json()
                    } else {
                        stats.to_text()
                    }
                );
            }
            if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        // `center ... | head` closing the pipe early is not an error.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("center: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::BrokenPipe)
}
