//! The compute node: one process serving any number of functions over one
//! connection to RabbitMQ.
//!
//! A node has one [`Sandbox`] (one engine, one epoch ticker, one instance
//! pool sized once), one connection, a channel per function, and one table
//! of functions, each with its live version and its recent compiled
//! versions. Sources (a module file, a directory) feed the table; the node
//! consumes each function's queue while the function exists.
//!
//! On shutdown every consumer is cancelled, every request in flight is
//! finished (reply and ack), then the channels and the connection close.
//! When the connection drops (a broker restart, a network fault), the node
//! opens a new one with backoff and consumes every queue again; requests
//! that were in flight were not acked, so the broker redelivers them.
//!
//! # Layout
//!
//! - this file: [`NodeConfig`], starting and running a [`ComputeNode`].
//! - [`functions`]: the table of functions a node serves. Compiles the
//!   bytes its sources offer, off the request path, and swaps each usable
//!   version in without failing a request.
//! - [`live`]: one function's versions: the current one that requests
//!   read without a lock, and the recent ones kept compiled.
//! - `source` (private): where functions come from: a module file, a
//!   directory of them, or the registry's stream.
//! - `link` (private): the one connection, opened again when lost.
//! - `consumer` (private): one function's channel, consumer and requests
//!   in flight.
//! - `request` (private): what happens to one delivery: compute (each
//!   input of a batch on its own), reply, then ack, or reject when there
//!   is nobody to reply to.
//! - [`ack_mode`]: when a request is acked, relative to its reply, and
//!   what each choice guarantees.
//! - `metrics` (private): the node's Prometheus metrics and the small
//!   HTTP endpoint that serves them and `/health` (`--metrics-addr`).
//! - `throttle` (private): warnings that a client could repeat per
//!   request, logged at most once per interval.

pub mod ack_mode;
mod consumer;
pub mod functions;
mod link;
pub mod live;
mod metrics;
mod request;
mod source;
mod throttle;

use crate::{
    node::{
        ack_mode::AckMode,
        functions::{Change, Function, Served, Table},
        link::{Link, LinkFor},
        live::LiveModule,
        metrics::NodeMetrics,
        source::{Update, Updates, dir::DirSource, registry::Follower},
        throttle::Throttle,
    },
    registry::{report::Identity, signing::Trust},
    shared::{
        amqp::{self, Redacted},
        lock::lock,
        queues::{self, QueueType, Queues},
        sandbox::{
            CacheError, CacheSettings, Limits, LimitsError, LimitsFile, LoadError, Sandbox,
            SandboxError,
        },
        trace::Tracer,
    },
};
use consumer::{Running, Shared};
use futures_util::future::join_all;
use std::{
    collections::BTreeMap,
    fmt,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    sync::atomic::Ordering,
    time::Duration,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::{info, warn};

/// How long a stopping node waits for its requests in flight, beyond the
/// guest's wall-clock limit: for their replies' confirms.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// How long a starting node reads the registry before it serves what it
/// has: compiling what the registry serves may take seconds.
const REGISTRY_CATCH_UP: Duration = Duration::from_secs(60);

/// Requests computed at once, by default: the prefetch of each function's
/// queue, and the size of the node's instance pool.
pub const DEFAULT_PREFETCH: u16 = 256;

/// Where a node's functions come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// One module file, watched for new versions, served on `queue`. The
    /// function's name is the file stem.
    Module {
        /// The module file.
        path: PathBuf,
        /// The queue requests arrive on.
        queue: String,
    },
    /// Every `*.wasm` file in a directory, watched: function `name` is
    /// `name.wasm`, served on `<queue_prefix>.<name>`.
    Dir {
        /// The directory.
        path: PathBuf,
        /// The prefix of every function's queue.
        queue_prefix: String,
    },
    /// Every function of a registry stream, followed: function `name` is
    /// served on `<queue_prefix>.<name>`.
    Registry {
        /// The stream.
        stream: String,
        /// The prefix of every function's queue.
        queue_prefix: String,
        /// Whose signatures the node accepts.
        trust: Trust,
        /// The broker (and vhost) the stream is on, when not the node's
        /// own: a registry vhost where the node's user may read the
        /// stream and not write to it. `None`: the node's broker.
        url: Option<String>,
    },
}

/// Everything a node needs to start.
#[derive(Clone)]
pub struct NodeConfig {
    /// Where its functions come from.
    pub source: Source,
    /// The broker: one AMQP URL, or the nodes of a cluster separated by
    /// commas, tried in random order at start and after a lost
    /// connection (see [`amqp::connect`]).
    pub amqp_url: String,
    /// The TLS files for `amqps://` URLs that name none in their query.
    pub tls: amqp::TlsOptions,
    /// Unacked requests the broker may send at once for each function;
    /// also the number of requests the node computes at once, across its
    /// functions.
    pub prefetch: u16,
    /// What each request may use inside the sandbox.
    pub limits: Limits,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    /// Port 0 picks a free port; see [`ComputeNode::metrics_addr`].
    /// It also answers `GET /health`: 200 while the node is connected and
    /// serving, 503 otherwise (starting, stopping, or reconnecting).
    pub metrics_addr: Option<SocketAddr>,
    /// How long [`ComputeNode::start`] tries to reach a broker that does
    /// not answer, waiting longer after each try; `None` tries until it
    /// answers. A broker that answers no (a refused login) fails the start
    /// at once.
    pub connect_timeout: Option<Duration>,
    /// How the queues are declared: classic, as the Python examples, or
    /// replicated quorum queues with a delivery limit.
    pub queue_type: QueueType,
    /// When a request is acked, relative to its reply; `None` takes
    /// [`AckMode::default_for`] the queue type.
    pub ack_mode: Option<AckMode>,
    /// Where compiled code is kept between runs, so a restart, a rollback
    /// or another node on the host loads it instead of compiling again;
    /// `None` compiles every time.
    pub compile_cache: Option<CacheSettings>,
    /// Where request spans go; [`Tracer::off`] exports none, and the node
    /// then only continues the traces requests carry.
    pub tracer: Tracer,
}

impl NodeConfig {
    /// A node serving `module` on [`queues::DEFAULT_QUEUE`], with the
    /// defaults of the `compute` command.
    pub fn new(module: impl Into<PathBuf>) -> Self {
        Self::module(module, queues::DEFAULT_QUEUE)
    }

    /// A node serving `module` on `queue`.
    pub fn module(module: impl Into<PathBuf>, queue: impl Into<String>) -> Self {
        Self::serving(Source::Module {
            path: module.into(),
            queue: queue.into(),
        })
    }

    /// A node serving every module in `dir`, each on `<queue_prefix>.<name>`.
    pub fn dir(dir: impl Into<PathBuf>, queue_prefix: impl Into<String>) -> Self {
        Self::serving(Source::Dir {
            path: dir.into(),
            queue_prefix: queue_prefix.into(),
        })
    }

    fn serving(source: Source) -> Self {
        NodeConfig {
            source,
            amqp_url: amqp::DEFAULT_URL.into(),
            tls: amqp::TlsOptions::default(),
            prefetch: DEFAULT_PREFETCH,
            limits: Limits::default(),
            metrics_addr: None,
            connect_timeout: None,
            queue_type: QueueType::Classic,
            ack_mode: None,
            compile_cache: None,
            tracer: Tracer::off(),
        }
    }

    /// The ack mode chosen, or else the queue type's.
    pub fn ack_mode(&self) -> AckMode {
        self.ack_mode
            .unwrap_or_else(|| AckMode::default_for(&self.queue_type))
    }
}

/// Debug output with the broker's password hidden.
impl fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeConfig")
            .field("source", &self.source)
            .field("amqp_url", &Redacted(self.amqp_url.clone()))
            .field("tls", &self.tls)
            .field("prefetch", &self.prefetch)
            .field("limits", &self.limits)
            .field("metrics_addr", &self.metrics_addr)
            .field("connect_timeout", &self.connect_timeout)
            .field("queue_type", &self.queue_type)
            .field("ack_mode", &self.ack_mode)
            .field("compile_cache", &self.compile_cache)
            .field("tracer", &self.tracer)
            .finish()
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The module file is unreadable or not a usable compute module.
    #[error("{path} is not a usable compute module: {source}")]
    Module {
        /// The module's path.
        path: String,
        /// Why.
        source: LoadError,
    },
    /// The module directory cannot be read or watched.
    #[error("cannot serve the modules in {path}: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A queue's name is not a valid AMQP queue name.
    #[error(transparent)]
    QueueName(#[from] amqp::QueueNameError),
    /// The broker could not be reached. Boxed: the error of every start
    /// is this big otherwise.
    #[error(transparent)]
    Broker(Box<amqp::ConnectError>),
    /// The broker would not let the node consume a function's queue.
    #[error("cannot consume queue {queue:?}: {cause}")]
    Queue {
        /// The queue.
        queue: String,
        /// What the broker said.
        cause: String,
    },
    /// The sandbox could not be set up.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The compile cache's directory cannot be used.
    #[error("{0} (or run without one: --no-compile-cache)")]
    CompileCache(#[from] CacheError),
    /// The metrics address could not be bound.
    #[error(transparent)]
    Metrics(#[from] metrics::BindError),
}

impl From<amqp::ConnectError> for StartError {
    fn from(err: amqp::ConnectError) -> Self {
        StartError::Broker(Box::new(err))
    }
}

/// A node that is connected and consuming, ready to [`run`](Self::run).
pub struct ComputeNode {
    served: Served,
    changes: mpsc::UnboundedReceiver<Change>,
    consumers: BTreeMap<String, (Arc<Function>, Running)>,
    /// Consumers of functions that are gone, finishing their requests.
    retiring: TaskTracker,
    shared: Arc<Shared>,
    link: Arc<Link>,
    metrics: Arc<NodeMetrics>,
    metrics_addr: Option<SocketAddr>,
    _metrics_server: Option<AbortOnDropHandle<()>>,
    _link_keeper: AbortOnDropHandle<()>,
    /// The registry's own connection (`--registry-url`), and its keeper.
    registry_link: Option<(Arc<Link>, AbortOnDropHandle<()>)>,
    /// What becomes of requests waiting in a removed function's queue.
    on_removal: consumer::OnRemoval,
    _table: AbortOnDropHandle<()>,
    _source: AbortOnDropHandle<()>,
}

impl ComputeNode {
    /// Loads the functions, connects, declares their queues and starts
    /// consuming. Requests published after this returns are served, and
    /// new versions and new functions are served as they appear. The
    /// modules of a directory are compiled once connected, smallest
    /// first, and each is served as soon as it is compiled.
    ///
    /// # Errors
    ///
    /// When a module file given alone is not usable, the module directory
    /// cannot be read, or the broker refuses the node (a wrong password, a
    /// queue of another type): a node that can never start says so at
    /// once. A broker that does not answer is tried again, with backoff,
    /// for up to [`NodeConfig::connect_timeout`], then is an error too. A
    /// module in a directory that is not usable is logged, and served once
    /// it is mended.
    pub async fn start(config: &NodeConfig) -> Result<Self, StartError> {
        let metrics = Arc::new(NodeMetrics::new());
        // Served from the start, so that `/health` says "not yet" while
        // the node waits for its broker.
        let (metrics_addr, metrics_server) = match config.metrics_addr {
            Some(address) => {
                let listener = metrics::bind(address).await?;
                (
                    listener.local_addr().ok(),
                    Some(metrics.clone().serve(listener)),
                )
            }
            None => (None, None),
        };
        let sandbox = sandbox(config)?;
        let (changed, changes) = mpsc::unbounded_channel();
        let (updates, updated) = mpsc::channel::<Update>(source::QUEUED_UPDATES);
        let wiring = Wiring {
            changed,
            updates,
            updated,
        };
        let sourced = Sourced::start(sandbox, wiring, config, &metrics).await?;
        let (link, link_keeper) = match sourced.link {
            Some(link) => link,
            None => Link::connect(&config.amqp_url, config, LinkFor::requests(&metrics)).await?,
        };
        let shared = Arc::new(Shared {
            link: link.clone(),
            prefetch: config.prefetch,
            queue_type: config.queue_type.clone(),
            ack_mode: config.ack_mode(),
            metrics: metrics.requests.clone(),
            max_body: config.limits.max_body,
            warnings: Arc::new(Throttle::default()),
            drain_limit: config.limits.wall_timeout + DRAIN_GRACE,
            tracer: config.tracer.clone(),
        });
        let (served, table) = sourced.table;
        let mut node = ComputeNode {
            served,
            changes,
            consumers: BTreeMap::new(),
            retiring: TaskTracker::new(),
            shared,
            link,
            metrics_addr,
            _metrics_server: metrics_server,
            _link_keeper: link_keeper,
            registry_link: sourced.registry_link,
            on_removal: match config.source {
                Source::Registry { .. } => consumer::OnRemoval::DropWaiting,
                Source::Module { .. } | Source::Dir { .. } => consumer::OnRemoval::KeepWaiting,
            },
            _table: table,
            _source: sourced.source,
            metrics,
        };
        node.consume_added(matches!(config.source, Source::Module { .. }))
            .await?;
        for applied in sourced.first_scan {
            // Served or turned down (and logged), it is the next one's turn.
            let _ = applied.await;
            node.consume_added(false).await?;
        }
        if let Source::Dir { path, .. } = &config.source
            && lock(&node.served).is_empty()
        {
            warn!(dir = %path.display(), "no usable module (NAME.wasm) in the directory yet; each is served as it appears");
        }
        node.metrics.serving.store(true, Ordering::Release);
        node.say_ready(config);
        Ok(node)
    }

    /// The line that says the node serves, and what: for a node of one
    /// module, the module, its limits and its queue.
    fn say_ready(&self, config: &NodeConfig) {
        let functions: Vec<Arc<Function>> = lock(&self.served).values().cloned().collect();
        let only = match (&config.source, functions.as_slice()) {
            (Source::Module { .. }, [only]) => Some(only.live().current()),
            _ => None,
        };
        info!(
            functions = functions.len(),
            function = only.as_ref().map(|module| module.name()),
            digest = only.as_ref().map(|module| module.digest()),
            module = only.as_ref().map(|module| tracing::field::display(module.loaded())),
            limits = only.as_ref().map(|module| tracing::field::display(module.own_limits())),
            queue = functions.first().filter(|_| only.is_some()).map(|function| function.queue()),
            broker = %Redacted(config.amqp_url.clone()),
            prefetch = config.prefetch,
            ack_mode = config.ack_mode().as_str(),
            "waiting for requests"
        );
    }

    /// Starts consuming the queue of every function added so far, and
    /// waits until each consumes or fails once. A failure fails the start
    /// when `strict`; otherwise it is logged and tried again.
    async fn consume_added(&mut self, strict: bool) -> Result<(), StartError> {
        let mut first_attempts = Vec::new();
        while let Ok(change) = self.changes.try_recv() {
            if let Some(first) = self.apply(change, true) {
                first_attempts.push(first);
            }
        }
        for (function, first) in first_attempts {
            match first.await {
                Ok(Ok(())) | Err(_) => {}
                // A refused queue is refused again on every try: the node
                // says so once and stops rather than loop.
                Ok(Err(cause)) if strict || cause.is_refusal() => {
                    return Err(StartError::Queue {
                        queue: function.queue().to_owned(),
                        cause: cause.to_string(),
                    });
                }
                Ok(Err(cause)) => warn!(
                    function = function.name(),
                    queue = function.queue(),
                    %cause,
                    "cannot consume the function's queue yet; trying again"
                ),
            }
        }
        Ok(())
    }

    /// Starts or stops a consumer for a function that came or went. With
    /// `report_first`, returns what learns how the first attempt went.
    #[allow(clippy::type_complexity)]
    fn apply(
        &mut self,
        change: Change,
        report_first: bool,
    ) -> Option<(
        Arc<Function>,
        oneshot::Receiver<Result<(), consumer::SetUpError>>,
    )> {
        match change {
            Change::Added(function) => {
                let (first, learned) = oneshot::channel();
                let first = report_first.then_some(first);
                self.metrics
                    .add_function(function.name(), function.live().clone());
                let running = Running::start(function.clone(), self.shared.clone(), first);
                if let Some((_, replaced)) = self
                    .consumers
                    .insert(function.name().to_owned(), (function.clone(), running))
                {
                    self.retiring.spawn(replaced.stop());
                }
                report_first.then_some((function, learned))
            }
            Change::Removed(function) => {
                if let Some((function, running)) = self.consumers.remove(function.name()) {
                    let (metrics, link) = (self.metrics.clone(), self.link.clone());
                    let on_removal = self.on_removal;
                    self.retiring.spawn(async move {
                        running.stop().await;
                        metrics.remove_function(function.name(), function.live());
                        info!(function = function.name(), "stopped serving the function");
                        consumer::delete_if_unused(&link, &function, on_removal).await;
                    });
                }
                None
            }
        }
    }

    /// The address the metrics are served on, once bound.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The versions of function `name`, if the node serves it.
    pub fn live_module(&self, name: &str) -> Option<Arc<LiveModule>> {
        lock(&self.served)
            .get(name)
            .map(|function| function.live().clone())
    }

    /// The names of the functions the node serves.
    pub fn functions(&self) -> Vec<String> {
        lock(&self.served).keys().cloned().collect()
    }

    /// Serves requests until `shutdown` completes, reconnecting whenever
    /// the connection is lost, then drains the requests in flight and
    /// closes. Nothing after [`start`](Self::start) stops it but
    /// `shutdown`: every fault is retried.
    pub async fn run(mut self, shutdown: impl Future) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = shutdown.as_mut() => break,
                Some(change) = self.changes.recv() => {
                    self.apply(change, false);
                }
            }
        }
        self.metrics.serving.store(false, Ordering::Release);
        info!(
            in_flight = self.metrics.requests.in_flight(),
            "shutting down: finishing the requests in flight"
        );
        let finishing = std::mem::take(&mut self.consumers)
            .into_values()
            .map(|(_, running)| running.finish());
        self.retiring.close();
        let (channels, ()) = tokio::join!(join_all(finishing), self.retiring.wait());
        // No reconnecting from here on: the connection's close ends every
        // channel, once the broker has taken the acks written before it.
        drop(self._link_keeper);
        let closed = self.link.close().await;
        // Not before: lapin closes a channel whose last handle is dropped
        // on its own, and that close, failing on a connection that is
        // closing, fails the connection's close too, so the process would
        // end with the last acks still unwritten.
        drop(channels);
        if let Some((link, keeper)) = self.registry_link {
            drop(keeper);
            // Nothing of the requests' rides on it: its close is only
            // logged, at debug level.
            let _ = link.close().await;
            // After, for the same reason: it holds the registry's channels.
            drop(self._source);
        }
        self.shared.tracer.flush().await;
        info!(
            requests = self.metrics.requests.settled_total(),
            connection_closed = %closed,
            "stopped"
        );
    }
}

/// The node's one sandbox: its limits, an instance pool of `--prefetch`
/// instances, and the compile cache if there is one.
fn sandbox(config: &NodeConfig) -> Result<Sandbox, StartError> {
    let sandbox = Sandbox::with_capacity(config.limits, config.prefetch.into())?;
    let cache = match &config.compile_cache {
        Some(settings) => settings.open_if_usable()?,
        None => None,
    };
    Ok(sandbox.with_compile_cache(cache))
}

/// A node's functions as its source first gives them: the table they
/// are in, the task that applies the source's updates to it, and what
/// the source connected on the way.
struct Sourced {
    table: (Served, AbortOnDropHandle<()>),
    /// The source's own task: watching a file or a directory, or
    /// following the registry.
    source: AbortOnDropHandle<()>,
    /// The node's connection, when the source needed it first.
    link: Option<(Arc<Link>, AbortOnDropHandle<()>)>,
    /// The registry's own connection (`--registry-url`).
    registry_link: Option<(Arc<Link>, AbortOnDropHandle<()>)>,
    /// A directory's first modules, each served in turn as it is judged.
    first_scan: Vec<oneshot::Receiver<source::Verdict>>,
}

/// The channels between a node's table and its source: the source's
/// updates in, the table's changes out (to the node, which consumes or
/// stops consuming their queues).
struct Wiring {
    changed: mpsc::UnboundedSender<Change>,
    updates: Updates,
    updated: mpsc::Receiver<Update>,
}

/// Where a node following the registry reads it.
struct FollowedRegistry<'a> {
    stream: &'a str,
    queue_prefix: &'a str,
    trust: &'a Trust,
    /// The registry's broker, when not the node's.
    url: Option<&'a str>,
}

impl Sourced {
    /// The functions `config.source` gives, loaded into a table run by
    /// the `sandbox` and `wiring`ed to the source.
    async fn start(
        sandbox: Sandbox,
        wiring: Wiring,
        config: &NodeConfig,
        metrics: &Arc<NodeMetrics>,
    ) -> Result<Self, StartError> {
        match &config.source {
            Source::Module { path, queue } => Sourced::module(sandbox, wiring, path, queue),
            Source::Dir { path, queue_prefix } => {
                Sourced::dir(sandbox, wiring, path, queue_prefix).await
            }
            Source::Registry {
                stream,
                queue_prefix,
                trust,
                url,
            } => {
                let registry = FollowedRegistry {
                    stream,
                    queue_prefix,
                    trust,
                    url: url.as_deref(),
                };
                Sourced::registry(sandbox, wiring, registry, config, metrics).await
            }
        }
    }

    /// One module file (`--module`), loaded now: a node whose only module
    /// is not usable does not start.
    fn module(
        sandbox: Sandbox,
        wiring: Wiring,
        path: &Path,
        queue: &str,
    ) -> Result<Self, StartError> {
        // Checked before compiling: a name that can never work is the
        // cheapest fault to report.
        let queues = Queues::One(queue.to_owned());
        queues.of("")?;
        let module_error = |source| StartError::Module {
            path: path.display().to_string(),
            source,
        };
        // Read once: the limits the module is loaded under are those the
        // source then watches for a change.
        let limits = LimitsFile::read_beside(path)
            .map_err(|source| module_error(LimitsError::unreadable_beside(path, source).into()))?;
        let module = sandbox
            .load_limited(path, limits.as_ref())
            .map_err(module_error)?;
        let mut table = Table::new(sandbox, queues, wiring.changed);
        let source =
            source::file::watch(path, module.name(), module.digest(), limits, wiring.updates);
        table.add(module)?;
        Ok(Sourced {
            table: spawn_table(table, wiring.updated),
            source,
            link: None,
            registry_link: None,
            first_scan: Vec::new(),
        })
    }

    /// Every module of a directory (`--modules`), compiled once the node
    /// is connected, each consumed as soon as it is compiled: a function
    /// whose module compiles in a second does not wait for one that takes
    /// ten.
    async fn dir(
        sandbox: Sandbox,
        wiring: Wiring,
        path: &Path,
        queue_prefix: &str,
    ) -> Result<Self, StartError> {
        let mut dir = DirSource::open(path).map_err(|source| StartError::Dir {
            path: path.display().to_string(),
            source,
        })?;
        let queues = Queues::Prefixed(queue_prefix.to_owned());
        let table = Table::new(sandbox, queues, wiring.changed);
        let mut first = dir.scan().await;
        let mut first_scan = Vec::new();
        for update in &mut first {
            let (verdict, learned) = oneshot::channel();
            update.verdict = Some(verdict);
            first_scan.push(learned);
        }
        Ok(Sourced {
            table: spawn_table(table, wiring.updated),
            source: dir.follow(first, wiring.updates),
            link: None,
            registry_link: None,
            first_scan,
        })
    }

    /// The registry's stream (`--registry`), read to its end (or for
    /// [`REGISTRY_CATCH_UP`]) before the node serves, so that it starts
    /// with what the registry serves now.
    async fn registry(
        sandbox: Sandbox,
        wiring: Wiring,
        registry: FollowedRegistry<'_>,
        config: &NodeConfig,
        metrics: &Arc<NodeMetrics>,
    ) -> Result<Self, StartError> {
        let link = Link::connect(&config.amqp_url, config, LinkFor::requests(metrics)).await?;
        let registry_link = match registry.url {
            Some(url) => Some(Link::connect(url, config, LinkFor::Registry).await?),
            None => None,
        };
        let queues = Queues::Prefixed(registry.queue_prefix.to_owned());
        let table = Table::new(sandbox, queues, wiring.changed);
        let follower = Follower {
            stream: registry.stream.to_owned(),
            trust: registry.trust.clone(),
            link: registry_link
                .as_ref()
                .map_or(&link.0, |link| &link.0)
                .clone(),
            updates: wiring.updates,
            served: table.served(),
            identity: Identity::new(),
            metrics: metrics.clone(),
            warnings: Throttle::default(),
        };
        let table = spawn_table(table, wiring.updated);
        let (caught_up, catching_up) = oneshot::channel();
        let source = AbortOnDropHandle::new(tokio::spawn(follower.run(caught_up)));
        if tokio::time::timeout(REGISTRY_CATCH_UP, catching_up)
            .await
            .is_err()
        {
            warn!(
                stream = registry.stream,
                "the registry is not read to its end yet; its functions are served as they are read"
            );
        }
        Ok(Sourced {
            table,
            source,
            link: Some(link),
            registry_link,
            first_scan: Vec::new(),
        })
    }
}

/// The table's functions, and the task that applies its sources' updates.
fn spawn_table(table: Table, updates: mpsc::Receiver<Update>) -> (Served, AbortOnDropHandle<()>) {
    let served = table.served();
    (
        served,
        AbortOnDropHandle::new(tokio::spawn(table.follow(updates))),
    )
}

/// Starts a node with `config` and serves until `shutdown` completes;
/// a `shutdown` while it starts (waiting for its broker, say) stops it
/// there.
///
/// # Errors
///
/// Only when the node cannot start; once started it runs until
/// `shutdown`.
pub async fn run(config: NodeConfig, shutdown: impl Future) -> Result<(), StartError> {
    // Listening from the first moment: a node still waiting for its
    // broker, or compiling, stops when asked to.
    tokio::pin!(shutdown);
    let node = tokio::select! {
        node = ComputeNode::start(&config) => node?,
        _ = shutdown.as_mut() => {
            info!("stopped while starting, before serving anything");
            return Ok(());
        }
    };
    node.run(shutdown).await;
    Ok(())
}
