//! The center: an RPC client that keeps many requests in flight over one
//! connection and one reply queue, and matches each reply to its request
//! by correlation id.
//!
//! When the connection is lost (a broker restart), every call waiting on
//! it is sent again on a new connection, up to [`CenterOptions::retries`]
//! times; compute functions are pure, so computing a request twice is
//! safe. A reply that arrives twice (a redelivered request) is handed to
//! its call once and the copy dropped.
//!
//! A node and a center in one program, against a local RabbitMQ (this
//! example runs as a test):
//!
//! ```
//! use compute_host::{CallError, Center, CenterOptions, ComputeNode, NodeConfig};
//! use futures_util::future::join_all;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> anyhow::Result<()> {
//! # let url = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://127.0.0.1:5672/%2f".into());
//! # let module = concat!(env!("CARGO_MANIFEST_DIR"), "/../modules/increase.wasm");
//! let queue = format!("doc.{}", uuid::Uuid::new_v4());
//! // A compute node serving `increase` on `queue` (the `compute` command).
//! let node = ComputeNode::start(&NodeConfig {
//!     amqp_url: url.clone(),
//!     ..NodeConfig::module(module, &queue)
//! })
//! .await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let serving = tokio::spawn(node.run(stopped));
//!
//! // The center: one connection, however many tasks call through clones.
//! let options = CenterOptions { queue: queue.clone(), ..CenterOptions::default() };
//! let center = Center::connect_with(&url, options).await?;
//! let calls = (0..10).map(|n| {
//!     let center = center.clone();
//!     tokio::spawn(async move { center.call(n.to_string()).await })
//! });
//! for (n, reply) in join_all(calls).await.into_iter().enumerate() {
//!     assert_eq!(reply?.unwrap().body, (n + 1).to_string().as_bytes());
//! }
//!
//! // A failure is typed: here the function's own error reply.
//! match center.call("forty-one").await {
//!     Err(CallError::Remote { kind, message, .. }) => {
//!         assert_eq!(kind, "bad-request");
//!         println!("{message}");
//!     }
//!     other => panic!("expected a bad-request reply, got {other:?}"),
//! }
//!
//! center.close().await;
//! let _ = stop.send(());
//! serving.await?;
//! # let connection = lapin::Connection::connect(&url, Default::default()).await?;
//! # let channel = connection.create_channel().await?;
//! # channel.queue_delete(queue.as_str().into(), Default::default()).await?;
//! # Ok(())
//! # }
//! ```

use crate::{
    amqp::{self, DIRECT_REPLY_TO, PublishError, Routed},
    backoff::{self, Backoff},
    lock::lock,
    wire,
};
use arc_swap::ArcSwap;
use futures_util::StreamExt as _;
use lapin::{
    BasicProperties, Channel, Connection, Consumer,
    message::Delivery,
    options::{BasicConsumeOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::{FieldTable, ShortString},
};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::{sync::oneshot, time::Instant};
use tracing::{debug, info, warn};
use uuid::Uuid;

/// How long a request sent again waits for its queue to be declared again
/// (by a compute node that is itself reconnecting) before the next try.
const QUEUE_BACK_POLL: Duration = Duration::from_millis(200);

/// RabbitMQ's default `max_message_size` (128 MiB): a larger message
/// makes the broker close the channel, which every call shares.
pub const DEFAULT_MAX_BODY: usize = 128 << 20;

/// How a [`Center`] sends its requests.
#[derive(Clone, Debug)]
pub struct CenterOptions {
    /// The queue the compute nodes consume.
    pub queue: String,
    /// How long a call may take, from publishing to the reply, retries
    /// and reconnecting included.
    pub timeout: Duration,
    /// How many times a call is sent again when the connection to the
    /// broker is lost before its reply arrives.
    pub retries: u32,
    /// Where replies come back.
    pub reply_mode: ReplyMode,
    /// The largest request body sent; a larger one fails its own call
    /// with [`CallError::TooLarge`] without being published.
    pub max_body: usize,
    /// The exact version (`sha256:<hex>`) every call asks for; a node
    /// that does not hold it answers `unknown-version`. `None` runs the
    /// current version.
    pub version: Option<String>,
}

impl Default for CenterOptions {
    fn default() -> Self {
        CenterOptions {
            queue: crate::queues::DEFAULT_QUEUE.into(),
            timeout: Duration::from_secs(30),
            retries: 3,
            reply_mode: ReplyMode::Queue,
            max_body: DEFAULT_MAX_BODY,
            version: None,
        }
    }
}

/// Where a [`Center`]'s replies come back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplyMode {
    /// A private, exclusive reply queue, declared by the center.
    #[default]
    Queue,
    /// RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`): no queue at
    /// all; the broker routes replies straight to the center's channel.
    Direct,
}

/// A successful reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The reply body: the function's result.
    pub body: Vec<u8>,
    /// What computed it.
    pub origin: Origin,
}

/// What answered a call, as far as the node says (a Python node says
/// nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The function's name (`x-function`).
    pub function: Option<String>,
    /// The exact module version (`x-module-digest`, `sha256:<hex>`).
    pub module: Option<String>,
}

/// Why a call produced no result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No reply arrived in time.
    #[error("timeout: no reply within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The compute node answered with an error reply.
    #[error("{kind}: {message}")]
    Remote {
        /// The `x-error` kind, such as `bad-request`.
        kind: wire::PeerErrorKind,
        /// The message for a person, from the reply body.
        message: String,
        /// What answered.
        origin: Origin,
    },
    /// No queue of that name exists, so the broker returned the request.
    #[error("no-route: no queue named {0:?} exists; start a compute node, which declares it")]
    NoRoute(String),
    /// The request could not be published.
    #[error("publish-failed: could not publish the request: {0}")]
    Publish(#[source] PublishError),
    /// The request is larger than [`CenterOptions::max_body`]; it was not
    /// sent, so it cannot close the channel the other calls share.
    #[error("too-large: the request is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// The request's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The broker refused the request (a negative confirm).
    #[error("refused: the broker refused the request")]
    Refused,
    /// The connection closed before the reply arrived, and the call's
    /// retries (or its time) ran out.
    #[error("connection-lost: the connection to RabbitMQ was lost before the reply arrived")]
    ConnectionLost,
}

impl CallError {
    /// A short name for the kind of failure: the `x-error` kind of a remote
    /// error, or `timeout`, `no-route`, `publish-failed`, `refused`,
    /// `connection-lost`.
    pub fn kind(&self) -> &str {
        match self {
            CallError::Timeout(_) => "timeout",
            CallError::Remote { kind, .. } => kind.as_str(),
            CallError::NoRoute(_) => "no-route",
            CallError::Publish(_) => "publish-failed",
            CallError::TooLarge { .. } => "too-large",
            CallError::Refused => "refused",
            CallError::ConnectionLost => "connection-lost",
        }
    }

    /// Whether the request may never have reached a compute node because
    /// of the connection, so that sending it again could succeed.
    fn lost_in_transit(&self) -> bool {
        matches!(
            self,
            CallError::ConnectionLost | CallError::Publish(_) | CallError::Refused
        )
    }
}

/// What ends a call's wait.
enum Answer {
    /// Its reply.
    Reply(Box<Delivery>),
    /// The broker returned its request: no queue of that name. Handed over
    /// by whichever call's confirm carried the return.
    Returned,
}

/// Requests waiting for their answer, by correlation id.
type Pending = Mutex<HashMap<String, oneshot::Sender<Answer>>>;

/// Why a [`Center`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The broker could not be reached or would not set up a reply queue.
    #[error(transparent)]
    Connect(#[from] amqp::ConnectError),
    /// The request queue's name is not a valid AMQP queue name.
    #[error(transparent)]
    QueueName(#[from] amqp::QueueNameError),
}

/// An RPC client for compute nodes. Cheap to clone; clones share the
/// connection, so calls from many tasks are multiplexed over it.
#[derive(Clone)]
pub struct Center {
    shared: Arc<Shared>,
}

struct Shared {
    url: String,
    reply_mode: ReplyMode,
    queue: ShortString,
    timeout: Duration,
    retries: u32,
    max_body: usize,
    version: Option<String>,
    /// The session calls use; replaced when its connection is lost.
    session: ArcSwap<Session>,
    /// Held by the one call that reconnects, so a lost connection is
    /// replaced once, not once per waiting call.
    reconnecting: tokio::sync::Mutex<()>,
    closed: AtomicBool,
}

/// One connection with its reply queue and the calls waiting on it.
struct Session {
    connection: Connection,
    channel: Channel,
    reply_queue: ShortString,
    pending: Arc<Pending>,
    /// Cleared when the reply consumer ends: no reply can arrive any more.
    alive: Arc<AtomicBool>,
    /// Whether this session replaced a lost one.
    reconnected: bool,
}

impl Center {
    /// Connects to the broker at `url` with the default options.
    pub async fn connect(url: &str) -> Result<Self, StartError> {
        Self::connect_with(url, CenterOptions::default()).await
    }

    /// Connects to the broker at `url`, declares a private reply queue and
    /// starts consuming it, so no reply can arrive before anyone listens.
    /// Waits at most [`amqp::ANSWER_TIMEOUT`] for the broker.
    pub async fn connect_with(url: &str, options: CenterOptions) -> Result<Self, StartError> {
        let queue = amqp::queue_name(&options.queue)?;
        let session = Session::open(url, options.reply_mode, false).await?;
        Ok(Center {
            shared: Arc::new(Shared {
                url: url.to_owned(),
                reply_mode: options.reply_mode,
                queue,
                timeout: options.timeout,
                retries: options.retries,
                max_body: options.max_body,
                version: options.version,
                session: ArcSwap::from_pointee(session),
                reconnecting: tokio::sync::Mutex::new(()),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The name of this center's reply queue (it changes when the center
    /// reconnects).
    pub fn reply_queue(&self) -> String {
        self.shared.session.load().reply_queue.to_string()
    }

    /// Sends `body` as one request and waits for its reply. The timeout
    /// covers the whole call: publishing, waiting, and any reconnecting
    /// and sending again after a lost connection.
    pub async fn call(&self, body: impl AsRef<[u8]>) -> Result<Reply, CallError> {
        let shared = &*self.shared;
        let body = body.as_ref();
        if body.len() > shared.max_body {
            return Err(CallError::TooLarge {
                size: body.len(),
                limit: shared.max_body,
            });
        }
        let deadline = Instant::now() + shared.timeout;
        // Kept across retries, so every copy of the request is the same
        // request in the logs of both sides.
        let correlation_id = Uuid::new_v4().to_string();
        // A call that starts after the connection was lost waits for a new
        // one rather than failing: it has not been sent anywhere yet.
        let current = shared.session.load_full();
        let mut session = match tokio::time::timeout_at(deadline, self.live_session(&current)).await
        {
            Ok(Some(live)) => live,
            Ok(None) => return Err(CallError::ConnectionLost),
            Err(_elapsed) => return Err(CallError::Timeout(shared.timeout)),
        };
        let mut retried = 0;
        loop {
            let attempt = session.publish_and_wait(shared, &correlation_id, body, deadline);
            let error = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(error)) => error,
                Err(_elapsed) => return Err(CallError::Timeout(shared.timeout)),
            };
            match &error {
                CallError::NoRoute(_) if retried > 0 || session.reconnected => {
                    // After a lost connection the queue may be gone with
                    // the broker's restart, until a compute node reconnects
                    // and declares it again.
                    debug!(%correlation_id, "no queue yet; waiting for a node to declare it");
                    if tokio::time::timeout_at(deadline, tokio::time::sleep(QUEUE_BACK_POLL))
                        .await
                        .is_err()
                    {
                        return Err(error);
                    }
                }
                error if error.lost_in_transit() && retried < shared.retries => {
                    retried += 1;
                    debug!(%correlation_id, retried, %error, "sending the request again");
                }
                _ => return Err(error),
            }
            session = match tokio::time::timeout_at(deadline, self.live_session(&session)).await {
                Ok(Some(live)) => live,
                // Closed, or the time ran out before the broker came back.
                Ok(None) | Err(_) => return Err(error),
            };
        }
    }

    /// A session that is alive: `used` if it still is, or else the one
    /// another call opened meanwhile, or else a new one, retrying with
    /// backoff for as long as the caller waits. `None` once closed.
    async fn live_session(&self, used: &Arc<Session>) -> Option<Arc<Session>> {
        let shared = &*self.shared;
        if used.is_alive() {
            return Some(used.clone());
        }
        let _only_one_reconnects = shared.reconnecting.lock().await;
        let mut backoff = Backoff::up_to(backoff::CENTER_MAX_WAIT);
        loop {
            if shared.closed.load(Ordering::Acquire) {
                return None;
            }
            let current = shared.session.load_full();
            if current.is_alive() {
                return Some(current);
            }
            match Session::open(&shared.url, shared.reply_mode, true).await {
                Ok(session) => {
                    info!(reply_queue = %session.reply_queue, "reconnected to RabbitMQ");
                    let session = Arc::new(session);
                    shared.session.store(session.clone());
                    return Some(session);
                }
                Err(err) => {
                    let wait = backoff.next_wait();
                    warn!(cause = %err, retry_in_ms = wait.as_millis() as u64, "cannot reconnect yet");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// How many consumers (compute nodes) the request queue has, or `None`
    /// when no such queue exists.
    pub async fn consumer_count(&self) -> Result<Option<u32>, lapin::Error> {
        // A passive declare of a missing queue closes its channel, so it
        // gets a channel of its own.
        let session = self.shared.session.load_full();
        let channel = session.connection.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declared = channel
            .queue_declare(self.shared.queue.clone(), passive, FieldTable::default())
            .await;
        let _ = channel.close(200, "OK".into()).await;
        match declared {
            Ok(queue) => Ok(Some(queue.consumer_count())),
            // 404 NOT_FOUND: no queue of that name.
            Err(err) if matches!(err.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404) => {
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// Closes the connection, waiting at most [`amqp::ANSWER_TIMEOUT`] for
    /// the broker to answer. Calls still waiting fail with
    /// [`CallError::ConnectionLost`], without retrying.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        let session = self.shared.session.load_full();
        let close = session.connection.close(200, "OK".into());
        let _ = tokio::time::timeout(amqp::ANSWER_TIMEOUT, close).await;
    }
}

impl Session {
    /// Connects and starts consuming replies: from a new private reply
    /// queue, or by direct reply-to. Bounded: while a broker starts up it
    /// may accept the connection and not answer on it.
    async fn open(
        url: &str,
        reply_mode: ReplyMode,
        reconnected: bool,
    ) -> Result<Session, amqp::ConnectError> {
        let connection = amqp::connect(url).await?;
        let setup = tokio::time::timeout(amqp::ANSWER_TIMEOUT, async {
            let channel = connection.create_channel().await?;
            // Confirms tell a request the broker could not route (no such
            // queue) at once, instead of after the timeout.
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let reply_queue = match reply_mode {
                ReplyMode::Queue => channel
                    .queue_declare(
                        "".into(),
                        QueueDeclareOptions {
                            exclusive: true,
                            auto_delete: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await?
                    .name()
                    .clone(),
                // Consumed (no-ack) on the channel that publishes, before
                // the first publish, as RabbitMQ requires.
                ReplyMode::Direct => DIRECT_REPLY_TO.into(),
            };
            let replies = channel
                .basic_consume(
                    reply_queue.clone(),
                    "".into(),
                    BasicConsumeOptions {
                        no_ack: true,
                        ..BasicConsumeOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((channel, reply_queue, replies))
        });
        let (channel, reply_queue, replies) = match setup.await {
            Ok(set_up) => set_up.map_err(|source| amqp::ConnectError::setup(url, source))?,
            Err(_) => return Err(amqp::ConnectError::no_answer(url)),
        };

        let pending = Arc::new(Pending::default());
        let alive = Arc::new(AtomicBool::new(true));
        tokio::spawn(route_replies(replies, pending.clone(), alive.clone()));
        Ok(Session {
            connection,
            channel,
            reply_queue,
            pending,
            alive,
            reconnected,
        })
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire) && self.channel.status().connected()
    }

    /// Publishes one request on this session and waits for its reply. The
    /// request expires at `deadline`, when nobody waits for it any more.
    async fn publish_and_wait(
        &self,
        shared: &Shared,
        correlation_id: &str,
        body: &[u8],
        deadline: Instant,
    ) -> Result<Reply, CallError> {
        let (sender, receiver) = oneshot::channel();
        let _waiting = Waiting::register(&self.pending, correlation_id.to_owned(), sender);
        // Checked after registering: the reply router clears the map after
        // it marks the session dead, so either this sees it dead or the
        // clearing drops the sender registered above.
        if !self.alive.load(Ordering::Acquire) {
            return Err(CallError::ConnectionLost);
        }

        let properties = BasicProperties::default()
            .with_reply_to(self.reply_queue.clone())
            .with_correlation_id(correlation_id.into());
        let properties = match &shared.version {
            Some(digest) => wire::with_version(properties, digest),
            None => properties,
        };
        let properties = wire::with_expiry(
            properties,
            deadline.saturating_duration_since(Instant::now()),
        );
        let routed = amqp::publish_mandatory(&self.channel, shared.queue.clone(), body, properties)
            .await
            .map_err(CallError::Publish)?;
        match routed {
            Routed::Queued => {}
            Routed::Returned(returned) => {
                let returned_id = returned.delivery.properties.correlation_id();
                match returned_id.as_ref().map(ShortString::as_str) {
                    Some(id) if id == correlation_id => {
                        return Err(CallError::NoRoute(shared.queue.to_string()));
                    }
                    // The client paired another call's return with this
                    // publish; that call learns it here, and this one's
                    // return, if any, reaches it the same way.
                    Some(id) => {
                        if let Some(other) = lock(&self.pending).remove(id) {
                            let _ = other.send(Answer::Returned);
                        }
                    }
                    None => {}
                }
            }
            Routed::Refused => return Err(CallError::Refused),
        }

        // The sender is dropped without an answer only when the reply
        // consumer ends, that is when the connection is gone.
        match receiver.await {
            Ok(Answer::Reply(delivery)) => into_reply(*delivery),
            Ok(Answer::Returned) => Err(CallError::NoRoute(shared.queue.to_string())),
            Err(_) => Err(CallError::ConnectionLost),
        }
    }
}

/// A call's entry in the pending map, removed when the call ends however
/// it ends (reply, timeout, or the caller dropping the future), so the map
/// never keeps entries for calls nobody waits on.
struct Waiting<'a> {
    pending: &'a Pending,
    correlation_id: String,
}

impl<'a> Waiting<'a> {
    fn register(
        pending: &'a Pending,
        correlation_id: String,
        sender: oneshot::Sender<Answer>,
    ) -> Self {
        lock(pending).insert(correlation_id.clone(), sender);
        Waiting {
            pending,
            correlation_id,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(&self.correlation_id);
    }
}

/// Hands each reply to the call waiting for it. Replies nobody waits for
/// (late after a timeout, duplicated by a redelivery, or foreign) are
/// dropped. When the consumer ends, the session is marked dead and the
/// pending calls' senders are dropped, so they fail with
/// [`CallError::ConnectionLost`] (and are sent again if they may).
async fn route_replies(mut replies: Consumer, pending: Arc<Pending>, alive: Arc<AtomicBool>) {
    while let Some(Ok(delivery)) = replies.next().await {
        let correlation_id = delivery.properties.correlation_id().clone();
        let waiter = correlation_id
            .as_ref()
            .and_then(|id| lock(&pending).remove(id.as_str()));
        match waiter {
            Some(sender) => {
                let _ = sender.send(Answer::Reply(Box::new(delivery)));
            }
            None => debug!(
                ?correlation_id,
                "dropping a reply that no call is waiting for"
            ),
        }
    }
    alive.store(false, Ordering::Release);
    lock(&pending).clear();
}

fn into_reply(delivery: Delivery) -> Result<Reply, CallError> {
    let origin = Origin {
        function: wire::header_text(&delivery.properties, wire::FUNCTION_HEADER),
        module: wire::header_text(&delivery.properties, wire::MODULE_HEADER),
    };
    match wire::header_text(&delivery.properties, wire::ERROR_HEADER) {
        None => Ok(Reply {
            body: delivery.data,
            origin,
        }),
        Some(kind) => Err(CallError::Remote {
            kind: kind.as_str().into(),
            message: String::from_utf8_lossy(&delivery.data).into_owned(),
            origin,
        }),
    }
}
