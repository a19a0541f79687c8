//! What every scenario needs: a broker address, unique queue names, a
//! compute node running in the test or as a process of its own, a batch of
//! calls to count, and a raw AMQP client for checking the wire format byte
//! by byte.

use compute_host::{Center, CenterOptions, ComputeNode, LiveModule, NodeConfig, Source, amqp};
use futures_util::StreamExt as _;
use lapin::{
    BasicProperties, Channel, Connection, Consumer,
    message::Delivery,
    options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    process::{Child, Command},
    sync::oneshot,
    task::JoinHandle,
};
use uuid::Uuid;

/// The broker the tests talk to.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| amqp::DEFAULT_URL.to_owned())
}

/// A queue name no other test uses.
pub fn unique_queue(test: &str) -> String {
    format!("test.{test}.{}", Uuid::new_v4())
}

/// The default compute module, as built into `modules/`.
pub fn increase_module() -> PathBuf {
    built_module("increase")
}

/// A compute module built from `guest/examples/NAME.rs` into `modules/`.
pub fn built_module(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../modules/{name}.wasm"))
}

/// A private directory for one test's module files, removed on drop.
pub struct ModuleDir {
    pub path: PathBuf,
}

impl ModuleDir {
    /// A new directory holding `work.wasm`, a copy of `module`.
    pub fn with_working_copy(module: &Path) -> Self {
        let path = std::env::temp_dir().join(format!("compute-test-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        std::fs::copy(module, path.join("work.wasm")).unwrap();
        ModuleDir { path }
    }

    /// The working copy the node serves.
    pub fn working_copy(&self) -> PathBuf {
        self.path.join("work.wasm")
    }

    /// Publishes `bytes` the safe way: written to a temporary name in the
    /// same directory, then renamed over the working copy.
    pub fn publish(&self, bytes: &[u8]) {
        let temporary = self.path.join(format!(".work.wasm.{}", Uuid::new_v4()));
        std::fs::write(&temporary, bytes).unwrap();
        std::fs::rename(&temporary, self.working_copy()).unwrap();
    }
}

impl Drop for ModuleDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A compute node serving in the background of a test.
pub struct RunningNode {
    pub queue: String,
    /// The versions it serves and rejects.
    pub live: Arc<LiveModule>,
    /// Where it serves metrics, when asked to.
    pub metrics_addr: Option<std::net::SocketAddr>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningNode {
    /// Starts a node on `queue` with the default module; requests
    /// published after this returns are served.
    pub async fn start(queue: &str) -> Self {
        Self::start_module(queue, &increase_module()).await
    }

    /// Starts a node on `queue` serving (and watching) `module`.
    pub async fn start_module(queue: &str, module: &Path) -> Self {
        Self::start_with(NodeConfig::module(module, queue)).await
    }

    /// Starts a node with `config`, on the test broker.
    pub async fn start_with(config: NodeConfig) -> Self {
        let config = NodeConfig {
            amqp_url: amqp_url(),
            ..config
        };
        let Source::Module { path, queue } = &config.source else {
            panic!("a running node serves one module: {config:?}");
        };
        let function = path.file_stem().unwrap().to_string_lossy();
        let node = ComputeNode::start(&config).await.expect("node starts");
        let live = node
            .live_module(&function)
            .expect("the node serves its module");
        let metrics_addr = node.metrics_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(node.run(async move {
            let _ = stopped.await;
        }));
        RunningNode {
            queue: queue.to_owned(),
            live,
            metrics_addr,
            stop,
            task,
        }
    }

    /// Stops the node, checks it stopped cleanly, and deletes its queue.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the node stops cleanly");
        delete_queue(&self.queue).await;
    }
}

/// A server running as a process of its own (the `compute` binary, or the
/// bench's bare echo server), so a test can kill it or stop it with a
/// signal. Its stderr is kept as its log.
pub struct ServerProcess {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// Starts `compute --queue QUEUE --module MODULE ARGS...` and waits
    /// until it is consuming.
    pub async fn node(queue: &str, module: &Path, args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_compute-under-test"));
        command
            .args(["--queue", queue, "--amqp-url", &amqp_url()])
            .arg("--module")
            .arg(module)
            .args(args);
        Self::start(&mut command, "waiting for requests").await
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
        let server = ServerProcess { child, log };
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
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            let address = log
                .split_once("serving metrics on http://")
                .and_then(|(_, after)| after.split('/').next()?.parse().ok());
            if let Some(address) = address {
                return address;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the node serves no metrics:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

/// How a batch of calls went: every call ends as exactly one of these.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub sent: usize,
    /// Replies with the right result.
    pub replies: usize,
    /// Replies with a wrong result (another request's, say).
    pub wrong: usize,
    /// Calls that ended in an error, with the errors' text.
    pub errors: Vec<String>,
}

impl Tally {
    /// Calls that never ended one way or another: must be 0.
    pub fn lost(&self) -> usize {
        self.sent - self.replies - self.wrong - self.errors.len()
    }
}

impl Tally {
    /// Checks that every call got its own right answer: no wrong replies,
    /// no errors, none lost.
    pub fn assert_all_answered(&self) {
        assert_eq!(
            (self.replies, self.wrong, self.errors.len(), self.lost()),
            (self.sent, 0, 0, 0),
            "first error: {:?}",
            self.errors.first()
        );
    }
}

/// A batch of `increase(n)` calls, n in 0..count, `in_flight` at once,
/// running in the background so that a test can strike mid-batch.
pub struct Batch {
    done: Arc<AtomicUsize>,
    task: JoinHandle<Tally>,
}

impl Batch {
    pub fn start(center: &Center, count: usize, in_flight: usize) -> Self {
        let done = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (center, done) = (center.clone(), done.clone());
            async move { increase_batch(&center, count, in_flight, &done).await }
        });
        Batch { done, task }
    }

    /// Waits until `count` calls have finished.
    pub async fn until_done(&self, count: usize) {
        while self.done.load(Ordering::Relaxed) < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for every call to end, for at most `limit`: `None` if the
    /// batch hangs.
    pub async fn finish(self, limit: Duration) -> Option<Tally> {
        let tally = tokio::time::timeout(limit, self.task).await.ok()?;
        Some(tally.expect("the batch task"))
    }
}

async fn increase_batch(
    center: &Center,
    count: usize,
    in_flight: usize,
    done: &AtomicUsize,
) -> Tally {
    let outcomes: Vec<_> = futures_util::stream::iter(0..count)
        .map(|n| async move {
            let outcome = center.call(n.to_string()).await;
            done.fetch_add(1, Ordering::Relaxed);
            (n, outcome)
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let mut tally = Tally {
        sent: count,
        ..Tally::default()
    };
    for (n, outcome) in outcomes {
        match outcome {
            Ok(reply) if reply.body == (n + 1).to_string().as_bytes() => tally.replies += 1,
            Ok(_) => tally.wrong += 1,
            Err(err) => tally.errors.push(err.to_string()),
        }
    }
    tally
}

/// A center for `queue` with a per-call `timeout`.
pub async fn center(queue: &str, timeout: Duration) -> Center {
    let options = CenterOptions {
        queue: queue.to_owned(),
        timeout,
        ..CenterOptions::default()
    };
    Center::connect_with(&amqp_url(), options)
        .await
        .expect("center connects")
}

/// Declares `queue` as a node would, with nobody consuming it.
pub async fn declare_queue(queue: &str) {
    let connection = connect().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = connection.close(200, "OK".into()).await;
}

/// Deletes a test queue so runs leave nothing behind on the broker.
pub async fn delete_queue(queue: &str) {
    let connection = connect().await;
    let channel = connection.create_channel().await.unwrap();
    let _ = channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    let _ = connection.close(200, "OK".into()).await;
}

async fn connect() -> Connection {
    amqp::connect(&amqp_url()).await.expect("broker reachable")
}

/// A bare AMQP client, the way a peer in another language would talk to
/// the node: no [`Center`] in the way of what is on the wire.
pub struct RawClient {
    _connection: Connection,
    pub channel: Channel,
    pub reply_queue: String,
    replies: Consumer,
}

impl RawClient {
    pub async fn connect() -> Self {
        let connection = connect().await;
        let channel = connection.create_channel().await.unwrap();
        let reply_queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .name()
            .to_string();
        let replies = channel
            .basic_consume(
                reply_queue.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        RawClient {
            _connection: connection,
            channel,
            reply_queue,
            replies,
        }
    }

    /// Publishes `body` to `queue` with `properties` as they are.
    pub async fn publish(&self, queue: &str, body: &[u8], properties: BasicProperties) {
        self.channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Sends one request the way the Python examples do, with this
    /// client's reply queue and an optional correlation id, and waits for
    /// the next reply.
    pub async fn request(
        &mut self,
        queue: &str,
        body: &[u8],
        correlation_id: Option<&str>,
    ) -> Delivery {
        let mut properties =
            BasicProperties::default().with_reply_to(self.reply_queue.as_str().into());
        if let Some(id) = correlation_id {
            properties = properties.with_correlation_id(id.into());
        }
        self.publish(queue, body, properties).await;
        self.next_reply().await
    }

    /// The next message on the reply queue.
    pub async fn next_reply(&mut self) -> Delivery {
        tokio::time::timeout(Duration::from_secs(10), self.replies.next())
            .await
            .expect("a reply within 10 s")
            .expect("reply stream open")
            .expect("reply delivered")
    }
}

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
    let output = tokio::time::timeout(limit, command.output())
        .await
        .expect("the Python program finishes")
        .expect("python3 with pika runs (see scripts/ensure-pika.sh)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Scrapes until the metrics hold `line` (for at most 10 s).
pub async fn wait_for_metric(address: SocketAddr, line: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = scrape(address).await;
        if metrics.lines().any(|have| have == line) {
            return metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {line:?} in\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /metrics`, as Prometheus would; the body.
pub async fn scrape(address: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    body.to_owned()
}

/// Waits until `check` gives `Some`, trying again every 20 ms, and fails
/// the test, saying `what` did not happen, after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
