//! `center`: send inputs to compute nodes and print each result, in input
//! order.

use crate::{
    center::{self, Center, CenterOptions, ReplyMode},
    cli::{
        broker::BrokerArgs,
        results::Outcome,
        stats::{Progress, Stats},
    },
    shared::{amqp, queues::QueueType, trace::Tracer},
};
use anyhow::Context as _;
use clap::Parser;
use futures_util::StreamExt as _;
use std::{
    io::{IsTerminal as _, Write},
    num::NonZeroUsize,
    process::ExitCode,
    time::{Duration, Instant},
};
use tokio::io::{AsyncBufRead, BufReader};
use tracing::warn;

/// Sends each input to a compute node and prints each result.
#[derive(Debug, Parser)]
#[command(name = "center", version, after_help = AFTER_HELP)]
pub struct CenterArgs {
    /// The inputs, one request each. Without any, reads one input per line
    /// from standard input.
    #[arg(value_name = "INPUT", allow_negative_numbers = true)]
    pub inputs: Vec<String>,

    /// The queue the compute nodes consume.
    #[arg(long, value_name = "NAME", default_value = crate::shared::queues::DEFAULT_QUEUE)]
    pub queue: String,

    /// Call function NAME of a node serving `--modules`: the queue
    /// `<queue-prefix>.<NAME>` instead of `--queue`.
    #[arg(long, value_name = "NAME", conflicts_with = "queue")]
    pub function: Option<String>,

    /// The prefix of the queues of `--function`, as given to the node.
    #[arg(long, value_name = "PREFIX", default_value = "compute")]
    pub queue_prefix: String,

    #[command(flatten)]
    pub broker: BrokerArgs,

    /// How long each call may take, in seconds: publishing, waiting for
    /// the reply, and any reconnecting and sending again.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = super::parse_seconds)]
    pub timeout: Duration,

    /// At start, how long to keep trying a broker that does not answer, in
    /// seconds, waiting longer after each try; without it the center tries
    /// until the broker answers. A refused login fails at once.
    #[arg(long, value_name = "SECS", value_parser = super::parse_seconds)]
    pub connect_timeout: Option<Duration>,

    /// The type of the queue the nodes declared: with `quorum`, requests
    /// are published persistent, so a request waiting in the queue
    /// survives a broker restart; with `classic` and `transient` they are
    /// not, which is cheaper for the broker.
    #[arg(long, value_name = "TYPE", value_enum, default_value_t = QueueType::Classic)]
    pub queue_type: QueueType,

    /// How long, in seconds, the queue may have no compute node consuming
    /// it while calls wait, before they fail with `no-consumer`; later
    /// calls then fail at once, until a node consumes it again. 0: calls
    /// wait for their --timeout.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = super::parse_seconds_or_off)]
    pub no_consumer_grace: Duration,

    /// How many times a request is sent again when the connection to the
    /// broker is lost before its reply arrives (within --timeout).
    #[arg(long, value_name = "N", default_value = "3")]
    pub retries: u32,

    /// Where replies come back: `queue`, a private reply queue the center
    /// declares, or `direct`, RabbitMQ's direct reply-to (no queue).
    #[arg(long, value_name = "MODE", value_enum, default_value_t = ReplyMode::Queue)]
    pub reply_mode: ReplyMode,

    /// Ask the broker to confirm each request, so one it refuses (a full
    /// queue that rejects publishes) fails at once with `refused` instead
    /// of at its timeout. Costs the broker and the center work per call.
    #[arg(long)]
    pub confirm: bool,

    /// Send up to N inputs in each request message, answered in one reply
    /// (each input still runs on its own in the node). Much faster for
    /// many small inputs; needs nodes of this version or later.
    #[arg(long, value_name = "N", value_parser = parse_at_least_one)]
    pub batch: Option<NonZeroUsize>,

    /// Requests in flight at once (batches, with --batch).
    #[arg(long, value_name = "K", default_value = "256", value_parser = parse_at_least_one)]
    pub concurrency: NonZeroUsize,

    /// The largest input sent, in bytes; a larger one fails on its own
    /// (`too-large`) without being sent. The default is RabbitMQ's own
    /// limit, past which the broker would close the shared channel.
    #[arg(long, value_name = "BYTES", default_value_t = center::DEFAULT_MAX_BODY)]
    pub max_body: usize,

    /// Ask for exactly this version of the function (`sha256:<hex>`, as a
    /// reply's `x-module-digest` names it, or its start, at least 8 hex
    /// digits, as `compute status` shows it), current or not; a node that
    /// does not hold it answers `unknown-version`.
    #[arg(long, value_name = "DIGEST", value_parser = parse_digest)]
    pub pin: Option<String>,

    /// Print one JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,

    /// How logs (warnings) are written to stderr: `text` or `json`.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = crate::cli::LogFormat::Text)]
    pub log_format: crate::cli::LogFormat,

    /// At the end, print a summary to stderr: calls, ok, errors by kind,
    /// calls/s, p50 and p99 latency (as JSON with --json).
    #[arg(long)]
    pub stats: bool,
}

impl CenterArgs {
    /// The queue to send to: `<queue-prefix>.<function>` with
    /// `--function`, else `--queue`.
    pub fn target_queue(&self) -> String {
        match &self.function {
            Some(function) => format!("{}.{function}", self.queue_prefix),
            None => self.queue.clone(),
        }
    }
}

/// What `center --help` ends with.
const AFTER_HELP: &str = "\
Exit status: 0 when every request succeeded, 1 when any failed (each
failure has its own line), 2 when the run could not proceed (the broker,
reading or writing). RUST_LOG sets what is logged to stderr.

Examples:
  center 10 20 30
  seq 1 100000 | center --concurrency 128 --stats
  center --function square --json 7";

/// A count of at least 1.
fn parse_at_least_one(text: &str) -> Result<NonZeroUsize, String> {
    text.parse()
        .map_err(|_| format!("expected a whole number of at least 1, got {text:?}"))
}

/// A module digest, `sha256:` and 64 lowercase hex digits, or its start
/// with at least [`SHORTEST_PIN`] of them (as `compute status` shows it),
/// which a node matches against the versions it holds.
fn parse_digest(text: &str) -> Result<String, String> {
    let hex = text.strip_prefix("sha256:").unwrap_or("");
    if (SHORTEST_PIN..=64).contains(&hex.len())
        && hex
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "expected sha256: and {SHORTEST_PIN} to 64 lowercase hex digits, got {text:?}"
        ))
    }
}

/// The fewest hex digits a pin may give: few enough to type, enough that
/// two versions of one function never share them.
const SHORTEST_PIN: usize = 8;

/// The `center` program once its arguments are parsed: runs, prints the
/// summary with `--stats`, and says how it went: 0 when every request
/// succeeded, 1 when any failed, 2 when the run itself could not proceed
/// (the broker, reading or writing).
pub async fn main(args: CenterArgs) -> ExitCode {
    let (stats, json) = (args.stats, args.json);
    let input = tokio::io::stdin();
    if args.inputs.is_empty() && std::io::stdin().is_terminal() {
        super::say("center: reading inputs from standard input, one per line; end with Ctrl-D");
    }
    let output = std::io::BufWriter::new(std::io::stdout().lock());
    let ran = run(args, BufReader::new(input), output)
        .await
        .map(|summary| {
            if stats {
                super::say(&if json {
                    summary.to_json()
                } else {
                    summary.to_text()
                });
            }
            if summary.failed() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        });
    super::exit_status("center", ran)
}

/// Sends every input (from the arguments, or else one per line of
/// `input`, blank lines skipped) and writes one line per input to
/// `output`, in input order.
///
/// Inputs are read as requests go out, with at most `--concurrency` in
/// flight, so a long input needs no more memory than a short one.
///
/// # Errors
///
/// When the broker cannot be reached or reading or writing fails; a
/// request that fails is counted in the [`Stats`] instead.
pub async fn run(
    args: CenterArgs,
    input: impl AsyncBufRead + Unpin + Send,
    mut output: impl Write,
) -> anyhow::Result<Stats> {
    let options = CenterOptions {
        queue: args.target_queue(),
        timeout: args.timeout,
        retries: args.retries,
        reply_mode: args.reply_mode,
        max_body: args.max_body,
        version: args.pin.clone(),
        connect_timeout: args.connect_timeout,
        persistent: args.queue_type.is_quorum(),
        confirms: args.confirm,
        tls: args.broker.tls(),
        no_consumer_grace: Some(args.no_consumer_grace).filter(|grace| !grace.is_zero()),
        tracer: Tracer::from_env("center")?,
    };
    let queue = options.queue.clone();
    let waits = options
        .no_consumer_grace
        .map_or(options.timeout, |grace| grace.min(options.timeout));
    let center = Center::connect_with(&args.broker.urls(), options).await?;
    // Advice only, so a broker slow to answer does not hold up the run.
    let consumers = tokio::time::timeout(amqp::ANSWER_TIMEOUT, center.consumer_count()).await;
    match consumers.unwrap_or(Ok(Some(1))) {
        Ok(Some(0)) => warn!(
            "no compute node is consuming {queue}; requests will wait up to {} s for one",
            waits.as_secs_f64()
        ),
        Ok(None) => warn!(
            "no queue named {queue} exists, so every request will fail; is a compute node running?"
        ),
        Ok(Some(_)) | Err(_) => {}
    }

    let inputs = super::inputs::inputs(args.inputs, input);
    let batch = args.batch.map_or(1, NonZeroUsize::get);
    let batched = args.batch.is_some();
    let mut answers = inputs
        .ready_chunks(batch)
        .map(|chunk| {
            let center = center.clone();
            async move {
                let inputs = chunk.into_iter().collect::<std::io::Result<Vec<_>>>()?;
                let started = Instant::now();
                let results = if batched {
                    center.call_batch(&inputs).await
                } else {
                    Ok(vec![center.call(&inputs[0]).await])
                };
                Ok::<_, std::io::Error>((inputs, results, started.elapsed()))
            }
        })
        .buffered(args.concurrency.get());

    let mut stats = Stats::default();
    let progress = Progress::on_terminal();
    while let Some(next) = answers.next().await {
        let (inputs, results, latency) = next.context("cannot read standard input")?;
        // When the whole batch failed, each of its inputs did.
        let (results, failed) = match results {
            Ok(results) => (results, None),
            Err(err) => (Vec::new(), Some(Err(err))),
        };
        for (index, input) in inputs.iter().enumerate() {
            let result = failed.as_ref().unwrap_or_else(|| &results[index]);
            stats.record(result, latency);
            progress.update(&stats);
            let line = Outcome::of_call(result).line(args.json, input);
            writeln!(output, "{line}").context("cannot write the results")?;
        }
        // Each answer is shown as it comes; a batch's lines in one write.
        output.flush().context("cannot write the results")?;
    }
    progress.finish();
    center.close().await;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        CenterArgs::command().debug_assert();
    }

    /// `--version` prints the program's version, as everywhere; the
    /// function's version is pinned with `--pin`.
    #[test]
    fn version_is_the_program_and_pin_is_the_function() {
        let shown = CenterArgs::try_parse_from(["center", "--version"]).unwrap_err();
        assert_eq!(shown.kind(), clap::error::ErrorKind::DisplayVersion);
        let digest = format!("sha256:{}", "a".repeat(64));
        let args = CenterArgs::try_parse_from(["center", "--pin", &digest, "1"]).unwrap();
        assert_eq!(args.pin, Some(digest));
        let short = CenterArgs::try_parse_from(["center", "--pin", "sha256:84ad656da218", "1"]);
        assert_eq!(short.unwrap().pin.as_deref(), Some("sha256:84ad656da218"));
        assert!(CenterArgs::try_parse_from(["center", "--pin", "sha256:84ad", "1"]).is_err());
    }

    #[test]
    fn a_function_names_its_queue_under_the_prefix() {
        let parse = |args: &[&str]| CenterArgs::try_parse_from(args).unwrap().target_queue();
        assert_eq!(parse(&["center", "1"]), "compute_queue");
        assert_eq!(
            parse(&["center", "--function", "square", "1"]),
            "compute.square"
        );
        assert_eq!(
            parse(&["center", "--function", "fib", "--queue-prefix", "math", "1"]),
            "math.fib"
        );
        assert!(CenterArgs::try_parse_from(["center", "--function", "f", "--queue", "q"]).is_err());
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let args = CenterArgs::try_parse_from(["center", "--amqp-url", "amqp://u:secret@h/", "1"])
            .unwrap();
        let debug = format!("{args:?}");
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn negative_numbers_are_inputs_not_flags() {
        let args = CenterArgs::try_parse_from(["center", "-5", "10"]).unwrap();
        assert_eq!(args.inputs, ["-5", "10"]);
    }
}
