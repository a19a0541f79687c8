//! `compute call`: a module run on inputs in the node's sandbox, with the
//! node's limits and no broker, printed as a center prints its calls, so
//! writing a function is a fast loop.

use super::{
    inputs::inputs,
    results::Outcome,
    sandbox::{CacheArgs, LimitArgs},
};
use crate::shared::sandbox::Sandbox;
use anyhow::Context as _;
use futures_util::StreamExt as _;
use std::{io::Write as _, path::PathBuf, process::ExitCode};
use tokio::io::BufReader;

/// `compute call [--module PATH] INPUT...`.
#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// The inputs, one call each. Without any, reads one input per line
    /// from standard input (blank lines skipped).
    #[arg(value_name = "INPUT", allow_negative_numbers = true)]
    pub inputs: Vec<String>,

    /// The compute module to run.
    #[arg(long, value_name = "PATH", default_value = "modules/increase.wasm")]
    pub module: PathBuf,

    /// Print one JSON object per line, as `center --json` does.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub cache: CacheArgs,
}

/// Runs every input and prints one line each, in order: exit status 0 when
/// every call succeeded, 1 when any failed.
///
/// # Errors
///
/// When the module cannot be loaded, or reading or writing fails.
pub async fn run(args: CallArgs) -> anyhow::Result<ExitCode> {
    let sandbox = Sandbox::new(args.limits.limits())?.with_compile_cache(args.cache.open()?);
    let module = sandbox
        .load(&args.module)
        .with_context(|| format!("{} is not a usable compute module", args.module.display()))?;
    let mut inputs = inputs(args.inputs, BufReader::new(tokio::io::stdin()));
    let mut failed = false;
    let mut output = std::io::stdout().lock();
    while let Some(input) = inputs.next().await {
        let input = input.context("cannot read standard input")?;
        let result = module.compute(&input).await;
        let outcome = Outcome::of_compute(&module, &result);
        failed |= outcome.failed();
        let line = outcome.line(args.json, &input);
        writeln!(output, "{line}").context("cannot write the results")?;
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
