//! A server running as a process of its own, so a test can kill it or
//! stop it with a signal.

use crate::{
    broker::{QueueGuard, amqp_url},
    eventually::eventually,
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
    sync::oneshot,
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
        let mut command = compute_command();
        command
            .envs(env.iter().copied())
            .args(["--queue", queue, "--amqp-url", &amqp_url()])
            .arg("--module")
            .arg(module)
            .args(args);
        let mut node = Self::start(&mut command, "waiting for requests").await;
        node.queues.add(queue);
        node
    }

    /// Starts `command` and waits until a line of its stderr holds `ready`.
    pub async fn start(command: &mut Command, ready: &str) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the server starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (started, running) = oneshot::channel();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn({
            let (log, ready) = (log.clone(), ready.to_owned());
            async move {
                let mut started = Some(started);
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains(&ready) {
                        started.take().map(|started| started.send(()));
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let server = ServerProcess {
            child,
            log,
            queues: QueueGuard::default(),
        };
        if tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .is_err()
        {
            panic!("the server did not start:\n{}", server.log());
        }
        server
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

    /// Where a node started with `--metrics-addr` serves its metrics, as
    /// its log says (for at most 10 s).
    pub async fn metrics_addr(&self) -> SocketAddr {
        eventually(
            "the node says where it serves metrics",
            Duration::from_secs(10),
            || async {
                let log = self.log();
                log.split_once("serving metrics on http://")
                    .and_then(|(_, after)| after.split('/').next()?.parse().ok())
            },
        )
        .await
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
