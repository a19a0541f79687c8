//! The book's `console` blocks (`docs/src/*.md`), run as they are written
//! against the real broker, so that what the book shows is what the
//! programs print.
//!
//! A chapter's commands run in one bash, as a person would type them in
//! one terminal: variables, `export`s, `$?` and background jobs carry from
//! one command to the next. In a `console` block, each `$ command` line
//! (continued by a trailing `\`) is one command, and what it prints
//! (stdout and stderr) must match the lines under it: `[..]` in a line
//! matches any text, and a line `...` any number of lines. A command that
//! ends in `&` runs in the background until the chapter ends, its output
//! (what it does not redirect itself) kept in a log, out of the
//! comparison; a `compute` node started so is waited for
//! until its `/health` says it serves. A `center` call whose output
//! differs is run again for up to 10 s: a swap lands a moment after the
//! file is written, as for a person typing.
//!
//! A block whose info string is `console 4.3` runs only against a broker
//! that refuses transient queues, as RabbitMQ 4.3 and later do; against
//! an older one it is skipped, and says so.
//!
//! Each chapter runs in a vhost of its own (made with `rabbitmqctl`, so
//! the default queue names of the commands collide with no other test),
//! in a scratch directory where `modules/` and `scripts/` are the
//! repository's, with `compute`, `center` and `otlp-tree` the binaries
//! built beside the tests.

use crate::{
    broker::{amqp_url, refuses_transient_queues},
    metrics::{NotServing, START_LIMIT, free_loopback_address, until_serving},
    process::{center_command, compute_command},
};
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};
use uuid::Uuid;

/// How long one command may run.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// How long a `center` call is tried again until its output matches.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// One command of a block, and the lines it must print.
#[derive(Debug, PartialEq)]
struct Step {
    command: String,
    expected: Vec<String>,
    /// Where in the chapter: its first line, 1-based.
    line: usize,
    /// Only against a broker that refuses transient queues (`console 4.3`).
    on_4_3: bool,
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
    let on_4_3 = refuses_transient_queues().await;
    for step in &steps {
        if step.on_4_3 && !on_4_3 {
            println!(
                "{}:{}: skipped: it needs RabbitMQ 4.3 or later",
                chapter.name, step.line
            );
            continue;
        }
        chapter.run(step).await;
    }
    chapter.close().await;
}

/// The steps of every `console` block of `text`.
fn steps(text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    let mut in_block = false;
    let mut on_4_3 = false;
    let mut continued = false;
    for (index, line) in text.lines().enumerate() {
        if let Some(info) = line.strip_prefix("```") {
            in_block = !in_block;
            in_console = in_block && matches!(info.trim(), "console" | "console 4.3");
            on_4_3 = info.trim() == "console 4.3";
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
                on_4_3,
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

/// Ends what a command printed: a line of its own, with the status.
const MARK: &str = "__book_command_done__";

/// A chapter being run: its vhost, its scratch directory, and the bash
/// that runs its commands.
struct Chapter {
    name: String,
    vhost: String,
    scratch: PathBuf,
    bash: Child,
    input: ChildStdin,
    output: Lines<BufReader<ChildStdout>>,
    /// The commands run in the background, and their process ids.
    background: Vec<(String, u32)>,
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
        for shared in ["modules", "scripts"] {
            std::os::unix::fs::symlink(repository.join(shared), scratch.join(shared)).unwrap();
        }
        let compute = compute_command().as_std().get_program().to_owned();
        let profile = Path::new(&compute).parent().unwrap().to_owned();
        for (name, built) in [
            ("compute", compute),
            ("center", center_command().as_std().get_program().to_owned()),
            ("otlp-tree", profile.join("otlp-tree").into_os_string()),
        ] {
            std::os::unix::fs::symlink(built, bin.join(name)).unwrap();
        }
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut bash = Command::new("bash")
            .args(["--noprofile", "--norc"])
            .current_dir(&scratch)
            .env("PATH", path)
            .env("AMQP_URL", with_vhost(&amqp_url(), &vhost))
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("bash starts");
        let input = bash.stdin.take().unwrap();
        let output = BufReader::new(bash.stdout.take().unwrap()).lines();
        let mut chapter = Chapter {
            name,
            vhost,
            scratch,
            bash,
            input,
            output,
            background: Vec::new(),
        };
        // Everything a command prints, on the one stream, in its order.
        chapter.output_of("exec 2>&1").await;
        chapter
    }

    async fn run(&mut self, step: &Step) {
        let command = step.command.replace("\\\n", " ");
        if let Some(command) = without_comment(&command).trim_end().strip_suffix('&') {
            return self.start(step, command.trim_end()).await;
        }
        let started = tokio::time::Instant::now();
        loop {
            let printed = self.output_of(&command).await;
            let lines: Vec<&str> = printed.iter().map(String::as_str).collect();
            if lines_match(&step.expected, &lines) {
                return;
            }
            if program(&command) != Some("center") || started.elapsed() > SETTLE_LIMIT {
                panic!(
                    "{}:{}: `{}` printed\n{}\nwhere the book shows\n{}\n{}",
                    self.name,
                    step.line,
                    step.command,
                    printed.join("\n"),
                    step.expected.join("\n"),
                    self.background_logs(),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `command` in the chapter's bash and returns the lines it
    /// printed; `$?` stays its exit status for the next command.
    async fn output_of(&mut self, command: &str) -> Vec<String> {
        // Standard input is the runner's script: a command that read it
        // would take the lines after it.
        let script = format!(
            "{{ {command}\n}} </dev/null\n__book_status=$?; printf '\\n{MARK} %s\\n' \"$__book_status\"; (exit $__book_status)\n"
        );
        self.input.write_all(script.as_bytes()).await.unwrap();
        self.input.flush().await.unwrap();
        let mut lines = Vec::new();
        let read = async {
            while let Some(line) = self.output.next_line().await.expect("bash's output") {
                if line.starts_with(MARK) {
                    // The newline before the mark is the runner's: the
                    // command's last line, if it ended in one, is empty.
                    if lines.last().is_some_and(String::is_empty) {
                        lines.pop();
                    }
                    return;
                }
                lines.push(line);
            }
            panic!("bash ended");
        };
        if tokio::time::timeout(COMMAND_LIMIT, read).await.is_err() {
            panic!(
                "{}: `{command}` ran over {COMMAND_LIMIT:?}; it printed\n{}\n{}",
                self.name,
                lines.join("\n"),
                self.background_logs()
            );
        }
        lines
    }

    /// Starts `command` in the background, its output in a log file; a
    /// `compute` node is waited for until it serves.
    async fn start(&mut self, step: &Step, command: &str) {
        let log = self
            .scratch
            .join(format!("background-{}.log", self.background.len()));
        let node = program(command) == Some("compute") && !command.contains("--metrics-addr");
        let metrics = free_loopback_address();
        let command = if node {
            format!("{command} --metrics-addr {metrics}")
        } else {
            command.to_owned()
        };
        // Into the log, but for what the command sends elsewhere itself.
        let redirect = if command.contains('>') {
            format!("2>{}", log.display())
        } else {
            format!(">{} 2>&1", log.display())
        };
        let printed = self
            .output_of(&format!("{command} {redirect} &\necho $!"))
            .await;
        let pid: u32 = printed
            .last()
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("{}: no process id for `{command}`: {printed:?}", self.name));
        self.background.push((command, pid));
        if !node {
            return;
        }
        let served = until_serving(metrics, || (!running(pid)).then(|| "exited".to_owned())).await;
        match served {
            Ok(()) => {}
            Err(NotServing::Exited(_)) => panic!(
                "{}:{}: `{}` exited before it served:\n{}",
                self.name,
                step.line,
                step.command,
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
            Err(NotServing::TooSlow) => panic!(
                "{}:{}: `{}` did not serve within {START_LIMIT:?}",
                self.name, step.line, step.command
            ),
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

    /// Stops what runs in the background (SIGTERM: a script's background
    /// jobs ignore SIGINT) and waits for it, then ends the bash and
    /// deletes the vhost and the scratch directory.
    async fn close(mut self) {
        let pids: Vec<String> = self
            .background
            .iter()
            .map(|(_, pid)| pid.to_string())
            .collect();
        if !pids.is_empty() {
            self.output_of(&format!("kill -TERM {} 2>/dev/null; wait", pids.join(" ")))
                .await;
        }
        let _ = self.input.write_all(b"exit\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.bash.wait()).await;
        rabbitmqctl(&["delete_vhost", &self.vhost]).await;
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// A chapter that failed leaves nothing running: what runs in the
/// background is not the bash's to stop once the bash is killed.
impl Drop for Chapter {
    fn drop(&mut self) {
        for (_, pid) in &self.background {
            if running(*pid) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// Whether process `pid` runs (not exited, nor a zombie not yet reaped).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z')
        })
        .unwrap_or(false)
}

/// The program `command` runs: its first word that sets no variable.
fn program(command: &str) -> Option<&str> {
    command.split_whitespace().find(|word| !word.contains('='))
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

/// Runs `rabbitmqctl ARGS` against the tests' broker. Tried again when
/// the tool could not reach the broker's node at all (exit status 69,
/// `EX_UNAVAILABLE`): with many tests running it at once, RabbitMQ 4.3's
/// tool now and then fails to contact a node that is up.
async fn rabbitmqctl(args: &[&str]) {
    const UNAVAILABLE: i32 = 69;
    const ATTEMPTS: u32 = 3;
    let mut attempt = 1;
    loop {
        let output = Command::new("rabbitmqctl")
            .arg("-q")
            .args(args)
            .output()
            .await
            .expect("rabbitmqctl runs (the book's commands run in a vhost of their own)");
        if output.status.code() == Some(UNAVAILABLE) && attempt < ATTEMPTS {
            attempt += 1;
            continue;
        }
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?} ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_become_steps() {
        let text = "text\n```console\n$ center 1 \\\n  2\nincrease(1) = 2\n...\n$ true\n```\n```sh\n$ no\n```\n```console 4.3\n$ compute --queue-type transient\ncompute: [..]\n```\n";
        assert_eq!(
            steps(text),
            [
                Step {
                    command: "center 1 \\\n  2".into(),
                    expected: vec!["increase(1) = 2".into(), "...".into()],
                    line: 3,
                    on_4_3: false,
                },
                Step {
                    command: "true".into(),
                    expected: vec![],
                    line: 7,
                    on_4_3: false,
                },
                Step {
                    command: "compute --queue-type transient".into(),
                    expected: vec!["compute: [..]".into()],
                    line: 13,
                    on_4_3: true,
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
        assert_eq!(program("AMQP_URL=$urls center 10"), Some("center"));
        assert_eq!(
            without_comment("echo '# not' \"#\" a#b"),
            "echo '# not' \"#\" a#b"
        );
    }
}
