//! The book's `console` blocks (`docs/src/*.md`), run as they are written
//! against the real broker, so that what the book shows is what the
//! programs print.
//!
//! In a `console` block, each `$ command` line (continued by a trailing
//! `\`) is run by bash, and what it prints (stdout and stderr) must match
//! the lines under it: `[..]` in a line matches any text, and a line
//! `...` any number of lines. A command that ends in `&` runs in the
//! background until the chapter ends, its output not compared; a
//! `compute` node started so is waited for until its `/health` says it
//! serves. A `center` call whose output differs is run again for up to
//! 10 s: a swap lands a moment after the file is written, as for a
//! person typing. `$?` is the exit status of the command before.
//!
//! Each chapter runs in a vhost of its own (made with `rabbitmqctl`, so
//! the default queue names of the commands collide with no other test),
//! in a scratch directory where `modules/` is the repository's, with
//! `compute` and `center` the binaries built beside the tests.

use crate::{
    broker::amqp_url,
    metrics::try_get,
    process::{center_command, compute_command},
};
use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};
use tokio::process::{Child, Command};
use uuid::Uuid;

/// How long one command may run.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// How long a `center` call is tried again until its output matches.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
/// How long a node started in the background may take to serve.
const START_LIMIT: Duration = Duration::from_secs(30);

/// One command of a block, and the lines it must print.
#[derive(Debug, PartialEq)]
struct Step {
    command: String,
    expected: Vec<String>,
    /// Where in the chapter: its first line, 1-based.
    line: usize,
}

/// Runs every `console` block of the chapter at `path`, in order, and
/// panics at the first command whose output does not match, saying what
/// it printed.
pub async fn run_chapter(path: &Path) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    let steps = steps(&text);
    assert!(!steps.is_empty(), "{} has no console block", path.display());
    let mut chapter = Chapter::open(path).await;
    for step in &steps {
        chapter.run(step).await;
    }
    chapter.close().await;
}

/// The steps of every `console` block of `text`.
fn steps(text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    let mut continued = false;
    for (index, line) in text.lines().enumerate() {
        if let Some(info) = line.strip_prefix("```") {
            in_console = !in_console && info.trim() == "console";
            continue;
        }
        if !in_console {
            continue;
        }
        if continued {
            let step = steps.last_mut().unwrap();
            step.command.push('\n');
            step.command.push_str(line);
            continued = line.ends_with('\\');
        } else if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: command.to_owned(),
                expected: Vec::new(),
                line: index + 1,
            });
            continued = line.ends_with('\\');
        } else {
            let step = steps
                .last_mut()
                .unwrap_or_else(|| panic!("line {}: output before any command", index + 1));
            step.expected.push(line.to_owned());
        }
    }
    steps
}

/// Whether `actual` matches `expected`, `[..]` and `...` as wildcards.
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(line, others)| line_matches(first, line) && lines_match(rest, others)),
    }
}

/// Whether `line` matches `pattern`, each `[..]` in it matching any text.
fn line_matches(pattern: &str, line: &str) -> bool {
    let pieces: Vec<&str> = pattern.split("[..]").collect();
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if pieces.len() == 1 {
        return pattern == line;
    }
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A chapter being run: its vhost, its scratch directory, and what runs
/// in the background.
struct Chapter {
    name: String,
    vhost: String,
    url: String,
    scratch: PathBuf,
    background: Vec<(String, Child)>,
    /// The exit status of the last command run, for `$?`.
    status: i32,
}

impl Chapter {
    async fn open(path: &Path) -> Self {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let vhost = format!("docs-{}", Uuid::new_v4());
        rabbitmqctl(&["add_vhost", &vhost]).await;
        rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]).await;
        let scratch = std::env::temp_dir().join(&vhost);
        let bin = scratch.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::os::unix::fs::symlink(repository.join("modules"), scratch.join("modules")).unwrap();
        for (name, command) in [("compute", compute_command()), ("center", center_command())] {
            std::os::unix::fs::symlink(command.as_std().get_program(), bin.join(name)).unwrap();
        }
        Chapter {
            name,
            url: with_vhost(&amqp_url(), &vhost),
            vhost,
            scratch,
            background: Vec::new(),
            status: 0,
        }
    }

    /// A bash running `command` in the chapter's directory and vhost.
    fn bash(&self, command: &str) -> Command {
        let path = format!(
            "{}:{}",
            self.scratch.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut bash = Command::new("bash");
        bash.args(["-c", command])
            .current_dir(&self.scratch)
            .env("PATH", path)
            .env("AMQP_URL", &self.url)
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        bash
    }

    async fn run(&mut self, step: &Step) {
        let command = step.command.replace("\\\n", " ");
        if let Some(command) = without_comment(&command).trim_end().strip_suffix('&') {
            return self.start(step, command.trim_end()).await;
        }
        let started = tokio::time::Instant::now();
        loop {
            let printed = self.output(&command).await;
            let lines: Vec<&str> = printed.lines().collect();
            if lines_match(&step.expected, &lines) {
                return;
            }
            if !command.starts_with("center") || started.elapsed() > SETTLE_LIMIT {
                panic!(
                    "{}:{}: `{}` printed\n{printed}\nwhere the book shows\n{}\n{}",
                    self.name,
                    step.line,
                    step.command,
                    step.expected.join("\n"),
                    self.background_logs(),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What `command` prints, stdout and stderr as they interleave.
    async fn output(&mut self, command: &str) -> String {
        let merged = format!("(exit {}); {{ {command}\n}} 2>&1", self.status);
        let output = tokio::time::timeout(COMMAND_LIMIT, self.bash(&merged).output())
            .await
            .unwrap_or_else(|_| panic!("{}: `{command}` ran over {COMMAND_LIMIT:?}", self.name))
            .expect("bash runs");
        self.status = output.status.code().unwrap_or(-1);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts `command` in the background; a `compute` node is waited for
    /// until it serves.
    async fn start(&mut self, step: &Step, command: &str) {
        let index = self.background.len();
        let log = self.scratch.join(format!("background-{index}.log"));
        let node = command.starts_with("compute ") && !command.contains("--metrics-addr");
        let metrics = free_loopback_address();
        let command = if node {
            format!("{command} --metrics-addr {metrics}")
        } else {
            command.to_owned()
        };
        let child = self
            .bash(&format!("exec {command} >{} 2>&1", log.display()))
            .spawn()
            .expect("bash starts");
        self.background.push((command, child));
        if !node {
            return;
        }
        let started = tokio::time::Instant::now();
        loop {
            let (_, child) = self.background.last_mut().unwrap();
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{}:{}: `{}` exited ({status}) before it served:\n{}",
                    self.name,
                    step.line,
                    step.command,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if let Ok(Ok((200, _))) =
                tokio::time::timeout(Duration::from_secs(1), try_get(metrics, "/health")).await
            {
                return;
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "{}:{}: `{}` did not serve within {START_LIMIT:?}",
                self.name,
                step.line,
                step.command
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the background commands have logged, for a failure's message.
    fn background_logs(&self) -> String {
        (0..self.background.len())
            .map(|index| {
                let log = self.scratch.join(format!("background-{index}.log"));
                format!(
                    "background `{}`:\n{}",
                    self.background[index].0,
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops what runs in the background (SIGINT, as Ctrl-C would), then
    /// deletes the vhost and the scratch directory.
    async fn close(mut self) {
        for (_, child) in &mut self.background {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-INT", &pid.to_string()])
                    .status();
            }
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        rabbitmqctl(&["delete_vhost", &self.vhost]).await;
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// `command` without its trailing `# comment`, if it has one (a `#` after
/// a blank, outside quotes, as bash reads it).
fn without_comment(command: &str) -> &str {
    let mut quote = None;
    let mut after_blank = true;
    for (at, c) in command.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(open), _) if c == open => quote = None,
            (None, '#') if after_blank => return &command[..at],
            _ => {}
        }
        after_blank = c.is_whitespace();
    }
    command
}

/// `url` with its vhost replaced by `vhost`.
fn with_vhost(url: &str, vhost: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("an AMQP URL");
    let (authority, query) = match rest.split_once('/') {
        Some((authority, path)) => (authority, path.split_once('?').map(|(_, query)| query)),
        None => (rest, None),
    };
    match query {
        Some(query) => format!("{scheme}://{authority}/{vhost}?{query}"),
        None => format!("{scheme}://{authority}/{vhost}"),
    }
}

/// Runs `rabbitmqctl ARGS` against the tests' broker.
async fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .await
        .expect("rabbitmqctl runs (the book's commands run in a vhost of their own)");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A loopback address with a port nobody listens on now.
fn free_loopback_address() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_become_steps() {
        let text = "text\n```console\n$ center 1 \\\n  2\nincrease(1) = 2\n...\n$ true\n```\n```sh\n$ no\n```\n";
        assert_eq!(
            steps(text),
            [
                Step {
                    command: "center 1 \\\n  2".into(),
                    expected: vec!["increase(1) = 2".into(), "...".into()],
                    line: 3,
                },
                Step {
                    command: "true".into(),
                    expected: vec![],
                    line: 7,
                },
            ]
        );
    }

    #[test]
    fn wildcards_match_what_varies_and_nothing_else() {
        let expected = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        assert!(line_matches("compiled in [..] ms", "compiled in 31 ms"));
        assert!(!line_matches("compiled in [..] ms", "compiled in 31 s"));
        assert!(line_matches("a[..]b[..]c", "a1b2c"));
        assert!(!line_matches("a[..]b", "ab-"));
        assert!(lines_match(
            &expected(&["x", "...", "z"]),
            &["x", "y", "y", "z"]
        ));
        assert!(lines_match(&expected(&["x", "..."]), &["x"]));
        assert!(!lines_match(&expected(&["x"]), &["x", "y"]));
        assert_eq!(
            with_vhost("amqp://127.0.0.1:5672/%2f", "v"),
            "amqp://127.0.0.1:5672/v"
        );
        assert_eq!(with_vhost("amqp://h:1", "v"), "amqp://h:1/v");
        assert_eq!(without_comment("compute &   # a node"), "compute &   ");
        assert_eq!(
            without_comment("echo '# not' \"#\" a#b"),
            "echo '# not' \"#\" a#b"
        );
    }
}
