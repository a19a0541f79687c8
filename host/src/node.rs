//! The compute node: consumes the request queue and hands each delivery to
//! its own task, so replies and acks never wait on each other.
//!
//! Concurrency is bounded by the channel's prefetch: the broker never has
//! more than `prefetch` unacked requests out to this node. On shutdown the
//! node cancels its consumer, lets every request in flight finish (reply
//! and ack), then closes the channel and the connection.

use crate::{
    amqp::{self, Redacted},
    reload::{self, LiveModule},
    request::Handler,
    sandbox::{Limits, Sandbox},
};
use anyhow::Context as _;
use futures_util::StreamExt as _;
use lapin::{
    Channel, Connection, Consumer,
    options::{
        BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions,
    },
    types::FieldTable,
};
use std::{future::Future, path::PathBuf, sync::Arc, time::Instant};
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::{info, warn};

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The compute module to serve.
    pub module: PathBuf,
    /// The queue requests arrive on.
    pub queue: String,
    /// The broker.
    pub amqp_url: String,
    /// Unacked requests the broker may send at once; also the number of
    /// requests computed concurrently.
    pub prefetch: u16,
    /// What each request may use inside the sandbox.
    pub limits: Limits,
}

impl NodeConfig {
    /// A config for `module` with the defaults of the `compute` command.
    pub fn new(module: impl Into<PathBuf>) -> Self {
        NodeConfig {
            module: module.into(),
            queue: "compute_queue".into(),
            amqp_url: amqp::DEFAULT_URL.into(),
            prefetch: 256,
            limits: Limits::default(),
        }
    }
}

/// A node that is connected and consuming, ready to [`run`](Self::run).
pub struct ComputeNode {
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
    handler: Arc<Handler>,
    _reloader: AbortOnDropHandle<()>,
}

impl ComputeNode {
    /// Loads the module, connects, declares the queue and starts
    /// consuming. Requests published after this returns are served, and
    /// new versions of the module file are swapped in as they appear.
    pub async fn start(config: &NodeConfig) -> anyhow::Result<Self> {
        let sandbox = Sandbox::new(config.limits)?;
        let started = Instant::now();
        let module = sandbox.load(&config.module)?;
        let compile_ms = started.elapsed().as_millis();

        let connection = amqp::connect(&config.amqp_url).await?;
        let channel = connection.create_channel().await?;
        // Declared exactly as the Python examples declare it, so either
        // side may declare it first.
        channel
            .queue_declare(
                config.queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("cannot declare queue {:?}", config.queue))?;
        channel
            .basic_qos(config.prefetch, BasicQosOptions::default())
            .await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                config.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        info!(
            module = %config.module.display(),
            function = module.name(),
            digest = module.digest(),
            compile_ms,
            queue = %config.queue,
            broker = %Redacted(config.amqp_url.clone()),
            prefetch = config.prefetch,
            "waiting for requests"
        );
        let live = Arc::new(LiveModule::new(module));
        Ok(ComputeNode {
            connection,
            _reloader: reload::watch(&config.module, sandbox, live.clone()),
            handler: Arc::new(Handler {
                live,
                channel: channel.clone(),
            }),
            channel,
            consumer,
        })
    }

    /// The module versions this node serves, for watching swaps.
    pub fn live_module(&self) -> Arc<LiveModule> {
        self.handler.live.clone()
    }

    /// Serves requests until `shutdown` completes or the broker cancels the
    /// consumer, then drains the requests in flight and closes.
    ///
    /// # Errors
    ///
    /// When the connection to the broker fails. Requests in flight are not
    /// acked then, so the broker redelivers them.
    pub async fn run(mut self, shutdown: impl Future) -> anyhow::Result<()> {
        let in_flight = TaskTracker::new();
        tokio::pin!(shutdown);
        let ended = loop {
            tokio::select! {
                _ = &mut shutdown => {
                    info!(in_flight = in_flight.len(), "shutting down: finishing the requests in flight");
                    break Ok(());
                }
                next = self.consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let handler = self.handler.clone();
                        in_flight.spawn(async move { handler.handle(delivery).await });
                    }
                    Some(Err(err)) => break Err(err).context("lost the connection to RabbitMQ"),
                    None => {
                        warn!("the broker cancelled the consumer (was the queue deleted?); stopping");
                        break Ok(());
                    }
                }
            }
        };

        if ended.is_ok() {
            let cancelled = self
                .channel
                .basic_cancel(self.consumer.tag(), BasicCancelOptions::default())
                .await;
            if let Err(err) = cancelled {
                warn!(cause = %err, "could not cancel the consumer");
            }
        }
        in_flight.close();
        in_flight.wait().await;
        if ended.is_ok() {
            // Requests delivered after the cancel but never started are
            // unacked, so closing the channel hands them back to the broker.
            let _ = self.channel.close(200, "OK".into()).await;
            let _ = self.connection.close(200, "OK".into()).await;
            info!("stopped");
        }
        ended
    }
}

/// Starts a node with `config` and serves until `shutdown` completes.
pub async fn run(config: NodeConfig, shutdown: impl Future) -> anyhow::Result<()> {
    ComputeNode::start(&config).await?.run(shutdown).await
}
