//! The Python peers: pika clients and servers in `tests/python/`.

use crate::{broker::amqp_url, process::run_to_end};
use std::{path::PathBuf, time::Duration};
use tokio::process::Command;

/// The Python with pika that `scripts/ensure-pika.sh` found (`PYTHON`).
pub fn python_command() -> Command {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut command = Command::new(python);
    command.env("AMQP_URL", amqp_url()).kill_on_drop(true);
    command
}

/// `tests/python/SCRIPT` run by [`python_command`].
pub fn python(script: &str) -> Command {
    let mut command = python_command();
    command.arg(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("python")
            .join(script),
    );
    command
}

/// Runs a Python `command` to its end (for at most `limit`), checks that it
/// succeeded, and returns what it printed.
pub async fn python_output(command: &mut Command, limit: Duration) -> String {
    // python3 with pika: see scripts/ensure-pika.sh.
    let output = run_to_end(command, limit).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
