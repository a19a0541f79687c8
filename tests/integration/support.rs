//! What every scenario needs: a broker address, unique queue names, a
//! compute node running in the test, and a raw AMQP client for checking
//! the wire format byte by byte.

use compute_host::{Center, CenterOptions, ComputeNode, LiveModule, NodeConfig, amqp};
use futures_util::StreamExt as _;
use lapin::{
    BasicProperties, Channel, Connection, Consumer,
    message::Delivery,
    options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use tokio::{sync::oneshot, task::JoinHandle};
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
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningNode {
    /// Starts a node on `queue` with the default module; requests
    /// published after this returns are served.
    pub async fn start(queue: &str) -> Self {
        Self::start_module(queue, &increase_module()).await
    }

    /// Starts a node on `queue` serving (and watching) `module`.
    pub async fn start_module(queue: &str, module: &Path) -> Self {
        Self::start_with(NodeConfig {
            queue: queue.to_owned(),
            ..NodeConfig::new(module)
        })
        .await
    }

    /// Starts a node with `config`, on the test broker.
    pub async fn start_with(config: NodeConfig) -> Self {
        let config = NodeConfig {
            amqp_url: amqp_url(),
            ..config
        };
        let queue = config.queue.as_str();
        let node = ComputeNode::start(&config).await.expect("node starts");
        let live = node.live_module();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(node.run(async move {
            let _ = stopped.await;
        }));
        RunningNode {
            queue: queue.to_owned(),
            live,
            stop,
            task,
        }
    }

    /// Stops the node, checks it stopped cleanly, and deletes its queue.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("node task")
            .expect("node stops cleanly");
        delete_queue(&self.queue).await;
    }
}

/// A center for `queue` with a per-call `timeout`.
pub async fn center(queue: &str, timeout: Duration) -> Center {
    let options = CenterOptions {
        queue: queue.to_owned(),
        timeout,
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
