//! A compute node serving inside the test's own process: one module, or
//! a directory of them.

use crate::{
    broker::{QueueGuard, amqp_url, delete_now, delete_queue},
    modules::increase_module,
};
use compute_host::{ComputeNode, LiveModule, NodeConfig, Source, shared::sandbox::CacheSettings};
use std::{net::SocketAddr, path::Path, sync::Arc};
use tokio::{sync::oneshot, task::JoinHandle};
use uuid::Uuid;

/// The compile cache the tests' in-process nodes share, so that the
/// Python and JavaScript guests (seconds to compile each) are compiled
/// once a run, not once a test.
pub fn test_compile_cache() -> CacheSettings {
    CacheSettings {
        dir: std::env::temp_dir().join("compute-node-tests-compiled"),
        max_bytes: CacheSettings::DEFAULT_MAX_BYTES,
        required: true,
    }
}

/// A compute node serving one module in the background of a test. Its
/// queue is deleted when it stops, or when it is dropped by a test that
/// failed.
pub struct RunningNode {
    pub queue: String,
    /// The versions it serves and rejects.
    pub live: Arc<LiveModule>,
    /// Where it serves metrics, when asked to.
    pub metrics_addr: Option<SocketAddr>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
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
            running: Some((stop, task)),
        }
    }

    /// Stops the node, checks it stopped cleanly, and deletes its queue.
    pub async fn stop(mut self) {
        let (stop, task) = self.running.take().expect("the node runs");
        let _ = stop.send(());
        task.await.expect("the node stops cleanly");
        delete_queue(&self.queue).await;
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        if let Some((_stop, task)) = self.running.take() {
            task.abort();
            delete_now(vec![self.queue.clone()]);
        }
    }
}

/// A node serving a directory inside the test, with a queue prefix of its
/// own; the queues of the functions named at start are deleted however
/// the test ends.
pub struct DirNode {
    prefix: String,
    /// The functions it served once started.
    pub serving: Vec<String>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    _queues: QueueGuard,
}

impl DirNode {
    /// Starts a node serving `dir`: when this returns, it has tried every
    /// file there once.
    pub async fn start<const N: usize>(dir: &Path, functions: [&str; N]) -> Self {
        Self::start_with(dir, Self::new_prefix(), functions, |config| config).await
    }

    /// Starts a node serving `dir` as [`start`](Self::start) does, with
    /// queue prefix `prefix` (from [`new_prefix`](Self::new_prefix)), its
    /// configuration changed by `change`.
    pub async fn start_with<const N: usize>(
        dir: &Path,
        prefix: String,
        functions: [&str; N],
        change: impl FnOnce(NodeConfig) -> NodeConfig,
    ) -> Self {
        let queues = QueueGuard::new(functions.map(|name| queue_of(&prefix, name)));
        let config = change(NodeConfig {
            amqp_url: amqp_url(),
            compile_cache: Some(test_compile_cache()),
            ..NodeConfig::dir(dir, &prefix)
        });
        let node = ComputeNode::start(&config).await.expect("the node starts");
        let serving = node.functions();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(node.run(async move {
            let _ = stopped.await;
        }));
        DirNode {
            prefix,
            serving,
            stop,
            task,
            _queues: queues,
        }
    }

    /// Whether the node is still running.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// The queue of function `name`.
    pub fn queue(&self, name: &str) -> String {
        queue_of(&self.prefix, name)
    }

    /// A queue prefix no other node uses.
    pub fn new_prefix() -> String {
        format!("test.functions.{}", Uuid::new_v4())
    }

    /// Stops the node and checks it stopped cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the node stops cleanly");
    }
}

/// The queue of function `name` under queue prefix `prefix`.
pub fn queue_of(prefix: &str, name: &str) -> String {
    format!("{prefix}.{name}")
}
