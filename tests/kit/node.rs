//! A compute node serving inside the test's own process.

use crate::{
    broker::{amqp_url, delete_now, delete_queue},
    modules::increase_module,
};
use compute_host::{ComputeNode, LiveModule, NodeConfig, Source};
use std::{net::SocketAddr, path::Path, sync::Arc};
use tokio::{sync::oneshot, task::JoinHandle};

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
