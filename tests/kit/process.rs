//! A server running as a process of its own, so a test can kill it or
//! stop it with a signal.

use crate::{
    broker::{QueueGuard, amqp_url},
    metrics::{NotServing, START_LIMIT, free_loopback_address, until_serving},
};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
    sync::watch,
};

/// The real `compute` binary, built by Cargo beside the tests (as
/// `compute-under-test`), with nothing set yet.
pub fn compute_command() -> Command {
    let mut command = Command::new(package_binary("compute-under-test"));
    command.kill_on_drop(true);
    command
}

/// The real `center` binary, built beside the tests as
/// `center-under-test`.
pub fn center_command() -> Command {
    let mut command = Command::new(package_binary("center-under-test"));
    command.kill_on_drop(true);
    command
}

/// Runs `command` to its end, for at most `limit`, and returns what it
/// printed and how it exited.
pub async fn run_to_end(command: &mut Command, limit: Duration) -> std::process::Output {
    tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("{command:?} did not end within {limit:?}"))
        .unwrap_or_else(|err| panic!("{command:?} does not run: {err}"))
}

/// A binary of this package. Cargo gives only a package's test targets
/// their binaries' paths (`CARGO_BIN_EXE_*`), not its library; it puts
/// both in the profile's directory, the parent of the test's `deps/`.
fn package_binary(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test's own path");
    let profile = test
        .parent()
        .and_then(Path::parent)
        .expect("a test runs from target/<profile>/deps");
    profile.join(name)
}

/// A server running as a process of its own (the `compute` binary, or the
/// bench's bare echo server), so a test can kill it or stop it with a
/// signal. Its stderr is kept as its log.
pub struct ServerProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    /// How many lines the server has logged, for a wait on the next.
    seen: watch::Receiver<usize>,
    /// Where a `compute` node serves its metrics and `/health`.
    metrics_addr: Option<SocketAddr>,
    /// The queues deleted when the server is dropped, after it is killed.
    queues: QueueGuard,
}

impl ServerProcess {
    /// Starts `compute --queue QUEUE --module MODULE ARGS...` and waits
    /// until it is consuming. Dropping it deletes QUEUE, with whatever
    /// waits there: a test that starts nodes one after another on a queue
    /// starts them with [`start`](Self::start).
    pub async fn node(queue: &str, module: &Path, args: &[&str]) -> Self {
        Self::node_with_env(queue, module, args, &[]).await
    }

    /// As [`node`](Self::node), with the environment variables `env` set
    /// too (the `OTEL_*` ones, say).
    pub async fn node_with_env(
        queue: &str,
        module: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::node_from(compute_command(), queue, module, args, env).await
    }

    /// As [`node`](Self::node), with the `compute` binary at `binary`:
    /// another build, to measure this one against.
    pub async fn node_built_at(binary: &Path, queue: &str, module: &Path, args: &[&str]) -> Self {
        let mut command = Command::new(binary);
        command.kill_on_drop(true);
        Self::node_from(command, queue, module, args, &[]).await
    }

    async fn node_from(
        mut command: Command,
        queue: &str,
        module: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        command
            .envs(env.iter().copied())
            .args(["--queue", queue, "--amqp-url", &amqp_url()])
            .arg("--module")
            .arg(module)
            .args(args);
        let mut node = Self::compute(&mut command).await;
        node.queues.add(queue);
        node
    }

    /// Starts the `compute` node `command` (from [`compute_command`])
    /// with `--metrics-addr` on a free loopback port, and waits until its
    /// `GET /health` says it serves: connected, consuming every queue.
    /// Panics with its log if it exits first or takes over 30 s.
    pub async fn compute(command: &mut Command) -> Self {
        let mut node = Self::spawn_compute(command);
        let address = node.metrics_addr();
        let child = &mut node.child;
        let served = until_serving(address, || {
            child
                .try_wait()
                .ok()
                .flatten()
                .map(|status| status.to_string())
        })
        .await;
        match served {
            Ok(()) => node,
            Err(NotServing::Exited(status)) => panic!(
                "the server exited ({status}) before it could start serving:\n{}",
                node.log()
            ),
            Err(NotServing::TooSlow) => panic!(
                "the node did not serve within {START_LIMIT:?}:\n{}",
                node.log()
            ),
        }
    }

    /// Starts the `compute` node `command` as [`compute`](Self::compute)
    /// does, but waits only until it logs `ready`: a state before it
    /// serves, such as waiting for its broker.
    pub async fn compute_until_logged(command: &mut Command, ready: &str) -> Self {
        let node = Self::spawn_compute(command);
        node.wait_for_line(ready).await
    }

    /// Starts `command` and waits until a line of its stderr holds
    /// `ready`. Panics with its log if it exits first or takes over 30 s.
    pub async fn start(command: &mut Command, ready: &str) -> Self {
        Self::spawn(command).wait_for_line(ready).await
    }

    async fn wait_for_line(self, ready: &str) -> Self {
        let mut server = self;
        let mut seen = server.seen.clone();
        let started = tokio::time::Instant::now();
        loop {
            server.assert_running(&format!("log {ready:?}"));
            seen.borrow_and_update();
            if server.log().contains(ready) {
                return server;
            }
            if started.elapsed() > START_LIMIT {
                panic!(
                    "the server did not log {ready:?} within {START_LIMIT:?}:\n{}",
                    server.log()
                );
            }
            // A new line, or a look at the process again.
            let _ = tokio::time::timeout(Duration::from_millis(50), seen.changed()).await;
        }
    }

    /// Panics with the log if the server has exited, saying what it was
    /// expected to `do` first.
    fn assert_running(&mut self, then: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "the server exited ({status}) before it could {then}:\n{}",
                self.log()
            );
        }
    }

    /// Starts the `compute` node `command` with `--metrics-addr` on a
    /// free loopback port.
    fn spawn_compute(command: &mut Command) -> Self {
        let taken = command
            .as_std()
            .get_args()
            .any(|arg| arg == "--metrics-addr");
        assert!(!taken, "the kit chooses the node's --metrics-addr");
        let address = free_loopback_address();
        command.arg("--metrics-addr").arg(address.to_string());
        let mut node = Self::spawn(command);
        node.metrics_addr = Some(address);
        node
    }

    /// Starts `command`, its stderr kept as its log.
    fn spawn(command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the server starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (seen_tx, seen) = watch::channel(0);
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn({
            let log = log.clone();
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                    seen_tx.send_modify(|lines| *lines += 1);
                }
            }
        });
        ServerProcess {
            child,
            log,
            seen,
            metrics_addr: None,
            queues: QueueGuard::default(),
        }
    }

    /// How many requests a node that stopped says it settled (the
    /// `requests` of its `stopped` line), or `None` if it has not said so.
    pub fn requests_when_stopped(&self) -> Option<u64> {
        self.stopped_field("requests")?.parse().ok()
    }

    /// How a node that stopped closed its connection (the
    /// `connection_closed` of its `stopped` line: `cleanly`, `uncleanly`
    /// or `not-open`), or `None` if it has not said so.
    pub fn connection_closed_when_stopped(&self) -> Option<String> {
        self.stopped_field("connection_closed")
    }

    /// Field `name` of the node's last `stopped` line, `name=value`.
    fn stopped_field(&self, name: &str) -> Option<String> {
        let log = self.log();
        let line = log
            .lines()
            .rev()
            .find(|line| line.contains(": stopped requests="))?;
        let (_, fields) = line.split_once(": stopped ")?;
        fields
            .split_whitespace()
            .find_map(|field| field.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server runs")
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the server is still running (it has not exited or died).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Where a node started by [`compute`](Self::compute) (or
    /// [`compute_until_logged`](Self::compute_until_logged)) serves its
    /// metrics and `/health`.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
            .expect("a node started by ServerProcess::compute serves metrics")
    }

    /// SIGKILL: the server gets no chance to finish anything.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("the server is killed");
    }

    /// SIGTERM, as a service manager stops a server.
    pub fn terminate(&self) {
        let pid = self.pid().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// Waits for the server to exit (for at most 30 s).
    pub async fn wait(&mut self) -> ExitStatus {
        self.wait_up_to(Duration::from_secs(30)).await
    }

    /// Waits for the server to exit, for at most `limit`.
    pub async fn wait_up_to(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "the node did not exit within {limit:?}; its log:\n{}",
                self.log()
            ),
        }
    }
}
