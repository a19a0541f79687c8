//! The arguments and `run` functions behind the `compute` and `center`
//! binaries, kept in the library so tests can drive them without a
//! process.
//!
//! # Layout
//!
//! - this file: logging, the shutdown signal, and how a program reports
//!   a fatal error ([`exit_status`]), one way for both binaries.
//! - [`compute`]: `compute`'s arguments, and running a node.
//! - [`call`]: `compute call`, a module run on inputs with no broker.
//! - [`registry`]: `compute deploy`, `promote`, `rollback`, `remove`,
//!   `status`, `versions`, `keygen`.
//! - [`center`]: `center`'s arguments, and running its calls.
//! - [`broker`]: the broker arguments every command shares.
//! - [`sandbox`]: the limits and compile-cache arguments a node shares
//!   with `compute call` and `compute deploy`.
//! - `results` (private): one line per call, as `center` and `compute
//!   call` print it.
//! - `inputs` (private): inputs from the arguments or standard input.
//! - [`stats`]: `center --stats`.

pub mod broker;
pub mod call;
pub mod center;
pub mod compute;
mod inputs;
pub mod registry;
mod results;
pub mod sandbox;
pub mod stats;

use std::{
    io::{IsTerminal as _, Write as _},
    process::ExitCode,
    time::Duration,
};
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for a person; colored only on a terminal.
    #[default]
    Text,
    /// One JSON object per line, with the fields of the event and of its
    /// spans (a request's correlation id and function), for log shippers.
    Json,
}

/// Logs to stderr in `format`, filtered by `RUST_LOG`, or at `default`
/// when unset.
pub fn init_tracing(default: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A log line that cannot be written (stderr a pipe whose reader has
    // gone) is dropped: reporting it would write to stderr again, and
    // `eprintln!` panics there.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// An error and its causes on one line, for a person: each cause is added
/// after a colon unless the message so far already says it (many errors
/// put their cause in their own message, and `{:#}` would repeat it).
pub fn explain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// How a program ends: with the status it chose, or after an error with
/// the error on one line (`PROGRAM: ...`) and status 2. Output cut short
/// by its reader (`... | head`) is not an error.
pub fn exit_status(program: &str, ran: anyhow::Result<ExitCode>) -> ExitCode {
    match ran {
        Ok(status) => status,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            say(&format!("{program}: {}", explain(&err)));
            ExitCode::from(2)
        }
    }
}

/// A line on stderr for a person. Not `eprintln!`, which panics when
/// stderr is a closed pipe.
pub(crate) fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// A duration given in seconds, fractions allowed (`0.5`).
pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("expected a number of seconds, got {text:?}"))?;
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(format!(
            "expected a positive number of seconds, got {text:?}"
        )),
    }
}

/// A duration in seconds as [`parse_seconds`] reads it, or `0`: off.
pub(crate) fn parse_seconds_or_off(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(0.0) => Ok(Duration::ZERO),
        _ => parse_seconds(text),
    }
}

#[cfg(test)]
mod tests {
    use super::{explain, parse_seconds, parse_seconds_or_off};
    use std::time::Duration;

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let inner = anyhow::Error::new(io).context("cannot read m.wasm: no such file");
        let outer = inner.context("m.wasm is not a usable module");
        assert_eq!(
            explain(&outer),
            "m.wasm is not a usable module: cannot read m.wasm: no such file"
        );
    }

    #[test]
    fn seconds_accept_fractions_and_refuse_nonsense() {
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds_or_off("0"), Ok(Duration::ZERO));
        assert_eq!(parse_seconds_or_off("2"), Ok(Duration::from_secs(2)));
        assert!(parse_seconds_or_off("-1").is_err());
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        for bad in ["0", "-1", "x", "NaN", "inf"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }
}
