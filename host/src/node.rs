//! The compute node: consumes the request queue and hands each delivery to
//! its own task, so replies and acks never wait on each other.
//!
//! Concurrency is bounded by the channel's prefetch: the broker never has
//! more than `prefetch` unacked requests out to this node. On shutdown the
//! node cancels its consumer, lets every request in flight finish (reply
//! and ack), then closes the channel and the connection.
//!
//! When the connection drops (a broker restart, a network fault) or the
//! broker cancels the consumer (the queue was deleted), the node opens a
//! new session with backoff: it reconnects, declares its queue again and
//! resumes. Requests that were in flight on the lost connection were not
//! acked, so the broker redelivers them.

use crate::{
    amqp::{self, Redacted},
    backoff::{self, Backoff},
    metrics::{self, NodeMetrics},
    reload::{self, LiveModule},
    request::Handler,
    sandbox::{Limits, Sandbox},
    throttle::Throttle,
};
use anyhow::Context as _;
use futures_util::StreamExt as _;
use lapin::{
    Channel, Connection, Consumer, Event,
    options::{
        BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions,
    },
    types::{FieldTable, ShortString},
};
use std::{
    fmt,
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio_util::{
    sync::CancellationToken,
    task::{AbortOnDropHandle, TaskTracker},
};
use tracing::{info, warn};

/// Everything a node needs to start.
#[derive(Clone)]
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
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    /// Port 0 picks a free port; see [`ComputeNode::metrics_addr`].
    pub metrics_addr: Option<SocketAddr>,
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
            metrics_addr: None,
        }
    }
}

/// Debug output with the broker's password hidden.
impl fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeConfig")
            .field("module", &self.module)
            .field("queue", &self.queue)
            .field("amqp_url", &Redacted(self.amqp_url.clone()))
            .field("prefetch", &self.prefetch)
            .field("limits", &self.limits)
            .field("metrics_addr", &self.metrics_addr)
            .finish()
    }
}

/// A session that lasts this long was a success: the next reconnect
/// starts again from the first wait. One that is lost sooner (a message
/// that kills the connection at each delivery, say) makes the waits grow,
/// so nothing can make the node reconnect in a hot loop.
const STABLE_SESSION: Duration = Duration::from_secs(30);
/// How long a stopping node waits for its requests in flight, beyond the
/// guest's wall-clock limit: for their replies' confirms.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// Why a node could not start. Each case tells whoever starts nodes what
/// may help: `--modules` tries a broker fault again at its next scan, and a
/// module fault only once the file changes.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The module file is unreadable or not a usable compute module.
    #[error(transparent)]
    Module(anyhow::Error),
    /// The queue's name is not a valid AMQP queue name.
    #[error(transparent)]
    QueueName(#[from] amqp::QueueNameError),
    /// The broker could not be reached, or would not set up the queue.
    #[error(transparent)]
    Broker(anyhow::Error),
    /// The sandbox or the metrics endpoint could not be set up.
    #[error(transparent)]
    Setup(anyhow::Error),
}

/// A node that is connected and consuming, ready to [`run`](Self::run).
pub struct ComputeNode {
    config: NodeConfig,
    /// `config.queue`, checked.
    queue: ShortString,
    session: Session,
    live: Arc<LiveModule>,
    metrics: Arc<NodeMetrics>,
    metrics_addr: Option<SocketAddr>,
    _metrics_server: Option<AbortOnDropHandle<()>>,
    _reloader: AbortOnDropHandle<()>,
}

/// One connection's worth of consuming: what is lost, and opened again,
/// when the broker goes away.
struct Session {
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
    /// The requests being answered on this session's channel.
    in_flight: TaskTracker,
    /// Stops them when the session is lost.
    abandon: CancellationToken,
    /// Logs the broker's memory and disk alarms on this connection.
    _alarms: AbortOnDropHandle<()>,
    /// When it was opened.
    opened: Instant,
}

/// Why serving on a session stopped.
enum Ended {
    /// The shutdown future completed.
    Shutdown,
    /// The connection failed, or the broker cancelled the consumer.
    Lost(String),
}

impl ComputeNode {
    /// Loads the module, connects, declares the queue and starts
    /// consuming. Requests published after this returns are served, and
    /// new versions of the module file are swapped in as they appear.
    ///
    /// # Errors
    ///
    /// When the module is not usable or the broker cannot be reached: a
    /// node that cannot start says so at once rather than retrying.
    pub async fn start(config: &NodeConfig) -> Result<Self, StartError> {
        let metrics = Arc::new(NodeMetrics::new());
        let listener = match config.metrics_addr {
            Some(address) => Some(metrics::bind(address).await.map_err(StartError::Setup)?),
            None => None,
        };
        let mut node = Self::start_with_metrics(config, metrics.clone()).await?;
        if let Some(listener) = listener {
            node.metrics_addr = listener.local_addr().ok();
            node._metrics_server = Some(metrics.serve(listener));
        }
        Ok(node)
    }

    /// [`start`](Self::start), counting into `metrics`, which a node
    /// serving several functions shares among them; `config.metrics_addr`
    /// is left to whoever serves `metrics`.
    pub(crate) async fn start_with_metrics(
        config: &NodeConfig,
        metrics: Arc<NodeMetrics>,
    ) -> Result<Self, StartError> {
        // Checked before compiling: a name that can never work is the
        // cheapest fault to report.
        let queue = amqp::queue_name(&config.queue)?;
        let sandbox = Sandbox::with_capacity(config.limits, config.prefetch.into())
            .map_err(StartError::Setup)?;
        let started = Instant::now();
        let module = sandbox.load(&config.module).map_err(StartError::Module)?;
        let compile_ms = started.elapsed().as_millis();
        let session = Session::open(config, &queue, &metrics)
            .await
            .map_err(StartError::Broker)?;
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
        metrics.add_function(live.clone());
        Ok(ComputeNode {
            config: config.clone(),
            queue,
            session,
            _reloader: reload::watch(&config.module, sandbox, live.clone()),
            live,
            metrics,
            metrics_addr: None,
            _metrics_server: None,
        })
    }

    /// The address the metrics are served on, once bound.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The module versions this node serves, for watching swaps.
    pub fn live_module(&self) -> Arc<LiveModule> {
        self.live.clone()
    }

    /// Serves requests until `shutdown` completes, reconnecting whenever
    /// the connection is lost, then drains the requests in flight and
    /// closes. Nothing after [`start`](Self::start) stops it but
    /// `shutdown`: every fault is retried.
    pub async fn run(self, shutdown: impl Future) {
        let ComputeNode {
            config,
            queue,
            mut session,
            live,
            metrics,
            _metrics_server,
            _reloader,
            ..
        } = self;
        tokio::pin!(shutdown);
        let warnings = Arc::new(Throttle::default());
        let mut backoff = Backoff::up_to(backoff::NODE_MAX_WAIT);
        loop {
            let handler = Arc::new(Handler {
                live: live.clone(),
                channel: session.channel.clone(),
                metrics: metrics.requests.clone(),
                max_body: config.limits.max_body,
                warnings: warnings.clone(),
            });
            match session.serve(&handler, shutdown.as_mut()).await {
                Ended::Shutdown => {
                    info!(
                        in_flight = session.in_flight.len(),
                        "shutting down: finishing the requests in flight"
                    );
                    // Side by side: a broker that does not answer the
                    // cancel (under an alarm it reads nothing) must not add
                    // its wait to the drain's. Deliveries that arrive
                    // meanwhile are never started; closing requeues them.
                    tokio::join!(
                        session.stop_consuming(),
                        session.drain(config.limits.wall_timeout + DRAIN_GRACE),
                    );
                    session.close().await;
                    info!("stopped");
                    return;
                }
                Ended::Lost(cause) => {
                    warn!(
                        %cause,
                        unacked = session.in_flight.len(),
                        "lost the session with RabbitMQ; the broker will redeliver the unacked requests; reconnecting"
                    );
                    // Their acks could never reach the broker now, and their
                    // replies could wait forever for a confirm.
                    session.abandon.cancel();
                    if session.opened.elapsed() >= STABLE_SESSION {
                        backoff.reset();
                    }
                    session.close().await;
                    match reopen(&config, &queue, &metrics, &mut backoff, shutdown.as_mut()).await {
                        Some(reopened) => session = reopened,
                        None => {
                            info!("shut down while reconnecting");
                            return;
                        }
                    }
                }
            }
        }
    }
}

impl Session {
    /// Connects, declares the queue and starts consuming, waiting at most
    /// [`amqp::ANSWER_TIMEOUT`] in all: while a broker starts up it may
    /// accept the connection and not answer on it.
    async fn open(
        config: &NodeConfig,
        queue: &ShortString,
        metrics: &NodeMetrics,
    ) -> anyhow::Result<Session> {
        let set_up = Self::set_up(config, queue.clone(), metrics);
        match tokio::time::timeout(amqp::ANSWER_TIMEOUT, set_up).await {
            Ok(opened) => opened,
            Err(_) => anyhow::bail!(
                "RabbitMQ did not answer within {:?} while the node set up its queue",
                amqp::ANSWER_TIMEOUT
            ),
        }
    }

    async fn set_up(
        config: &NodeConfig,
        queue: ShortString,
        metrics: &NodeMetrics,
    ) -> anyhow::Result<Session> {
        let connection = amqp::connect(&config.amqp_url).await?;
        let alarms = watch_alarms(&connection, metrics.broker_blocked.clone());
        let channel = connection.create_channel().await?;
        // Declared exactly as the Python examples declare it, so either
        // side may declare it first.
        channel
            .queue_declare(
                queue.clone(),
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
                queue,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Session {
            connection,
            channel,
            consumer,
            in_flight: TaskTracker::new(),
            abandon: CancellationToken::new(),
            _alarms: alarms,
            opened: Instant::now(),
        })
    }

    /// Hands each delivery to its own task until `shutdown` completes or
    /// the session is lost.
    async fn serve(
        &mut self,
        handler: &Arc<Handler>,
        mut shutdown: Pin<&mut impl Future>,
    ) -> Ended {
        loop {
            tokio::select! {
                _ = shutdown.as_mut() => return Ended::Shutdown,
                next = self.consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let handler = handler.clone();
                        let abandon = self.abandon.clone();
                        self.in_flight.spawn(async move {
                            tokio::select! {
                                _ = abandon.cancelled() => {}
                                _ = handler.handle(delivery) => {}
                            }
                        });
                    }
                    Some(Err(err)) => return Ended::Lost(err.to_string()),
                    None => return Ended::Lost("the broker cancelled the consumer (was the queue deleted?)".into()),
                }
            }
        }
    }

    /// Asks the broker for no more requests; those already delivered are
    /// still answered.
    ///
    /// Bounded: a broker that does not answer must not hold up shutdown;
    /// closing the channel then stops the deliveries anyway.
    async fn stop_consuming(&self) {
        let cancel = self
            .channel
            .basic_cancel(self.consumer.tag(), BasicCancelOptions::default());
        match tokio::time::timeout(amqp::ANSWER_TIMEOUT, cancel).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(cause = %err, "could not cancel the consumer"),
            Err(_) => warn!(
                "the broker did not confirm the consumer's cancel within {:?}",
                amqp::ANSWER_TIMEOUT
            ),
        }
    }

    /// Waits for the requests in flight to be answered and acked, for at
    /// most `limit`: if the connection fails meanwhile, their confirms may
    /// never come, and the broker redelivers them anyway.
    async fn drain(&self, limit: Duration) {
        self.in_flight.close();
        if tokio::time::timeout(limit, self.in_flight.wait())
            .await
            .is_err()
        {
            warn!(
                unacked = self.in_flight.len(),
                "gave up waiting for the requests in flight; the broker will redeliver them"
            );
            self.abandon.cancel();
        }
    }

    /// Closes the channel and the connection, if they are still open.
    /// Requests delivered but never answered go back to the queue.
    /// Bounded, since a close on a connection that is half gone may never
    /// be answered.
    async fn close(self) {
        let close = async {
            if self.channel.status().connected() {
                let _ = self.channel.close(200, "OK".into()).await;
            }
            if self.connection.status().connected() {
                let _ = self.connection.close(200, "OK".into()).await;
            }
        };
        let _ = tokio::time::timeout(amqp::ANSWER_TIMEOUT, close).await;
    }
}

/// Opens a new session, waiting longer after each failed attempt, until
/// one opens (`Some`) or `shutdown` completes (`None`).
async fn reopen(
    config: &NodeConfig,
    queue: &ShortString,
    metrics: &NodeMetrics,
    backoff: &mut Backoff,
    mut shutdown: Pin<&mut impl Future>,
) -> Option<Session> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        tokio::select! {
            _ = shutdown.as_mut() => return None,
            _ = tokio::time::sleep(backoff.next_wait()) => {}
        }
        let opened = tokio::select! {
            _ = shutdown.as_mut() => return None,
            opened = Session::open(config, queue, metrics) => opened,
        };
        match opened {
            Ok(session) => {
                info!(attempt, queue = %config.queue, "reconnected; serving again");
                return Some(session);
            }
            Err(err) => {
                warn!(
                    attempt,
                    cause = format!("{err:#}"),
                    retry_in_ms = backoff.upcoming().as_millis() as u64,
                    "cannot reconnect yet"
                );
            }
        }
    }
}

/// Logs when the broker blocks this connection's publishing (a memory or
/// disk alarm: replies then wait, and so do the requests behind them)
/// and when it lifts the block, and shows it in `blocked`.
fn watch_alarms(connection: &Connection, blocked: metrics::Gauge) -> AbortOnDropHandle<()> {
    let mut events = connection.events_listener();
    AbortOnDropHandle::new(tokio::spawn(async move {
        let _cleared_when_gone = metrics::ClearOnDrop(blocked.clone());
        while let Some(event) = events.next().await {
            match event {
                Event::ConnectionBlocked(reason) => {
                    blocked.set(1);
                    warn!(%reason, "RabbitMQ blocked publishing on this connection (a resource alarm); replies wait until it lifts");
                }
                Event::ConnectionUnblocked => {
                    blocked.set(0);
                    info!("RabbitMQ lifted its block; replies flow again");
                }
                _ => {}
            }
        }
    }))
}

/// Starts a node with `config` and serves until `shutdown` completes.
///
/// # Errors
///
/// Only when the node cannot start; once started it runs until
/// `shutdown`.
pub async fn run(config: NodeConfig, shutdown: impl Future) -> Result<(), StartError> {
    ComputeNode::start(&config).await?.run(shutdown).await;
    Ok(())
}
