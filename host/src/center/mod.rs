//! The center: an RPC client that keeps many requests in flight over one
//! connection, takes the replies from one reply queue (or by direct
//! reply-to), and matches each reply to its request by correlation id.
//!
//! When the connection is lost (a broker restart), every call waiting on
//! it is sent again on a new connection, up to [`CenterOptions::retries`]
//! times; compute functions are pure, so computing a request twice is
//! safe. A reply that arrives twice (a redelivered request) is handed to
//! its call once and the copy dropped.
//!
//! A node and a center in one program, against a local RabbitMQ (the
//! same steps run as the integration test `library::one_program`):
//!
//! ```no_run
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
//!
//! # Layout
//!
//! - `options`: what a caller chooses ([`CenterOptions`], [`ReplyMode`]).
//! - `error`: why a call or the start failed ([`CallError`], [`StartError`]).
//! - `reply`: what a successful call returns ([`Reply`], [`Origin`]).
//! - `session`: one connection with its reply consumer; publishing a
//!   request and waiting for its answer.
//! - `router`: the calls waiting on a session, by correlation id, and the
//!   task that hands each reply to its call.
//! - `watch`: noticing that no compute node consumes the queue any more,
//!   and failing the calls that wait on it.

mod error;
mod options;
mod reply;
mod router;
mod session;
mod watch;

pub use error::{CallError, ConsumerCountError, StartError};
pub use options::{CenterOptions, DEFAULT_MAX_BODY, DEFAULT_NO_CONSUMER_GRACE, ReplyMode};
pub use reply::{Origin, Reply};

use crate::shared::{
    amqp,
    backoff::{self, Backoff},
    trace::{Kind, Span, TraceContext, Tracer, attributes as attr},
    wire::batch::{self, ItemResult},
};
use arc_swap::ArcSwap;
use lapin::types::ShortString;
use reply::Answered;
use session::{Request, Session};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use uuid::Uuid;

/// How long a request sent again waits for its queue to be declared again
/// (by a compute node that is itself reconnecting) before the next try.
const QUEUE_BACK_POLL: Duration = Duration::from_millis(200);

impl Shared {
    /// The failure of a call to a queue that no compute node consumes.
    fn no_consumer(&self) -> CallError {
        CallError::NoConsumer {
            queue: self.queue.to_string(),
            grace: self.no_consumer_grace.unwrap_or_default(),
        }
    }
}

/// An RPC client for compute nodes. Cheap to clone; clones share the
/// connection, so calls from many tasks are multiplexed over it.
#[derive(Clone)]
pub struct Center {
    shared: Arc<Shared>,
}

struct Shared {
    url: String,
    tls: amqp::TlsOptions,
    reply_mode: ReplyMode,
    queue: ShortString,
    timeout: Duration,
    retries: u32,
    max_body: usize,
    version: Option<String>,
    persistent: bool,
    confirms: bool,
    /// The session calls use; replaced when its connection is lost.
    session: ArcSwap<Session>,
    /// Held by the one call that reconnects, so a lost connection is
    /// replaced once, not once per waiting call.
    reconnecting: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    /// How long the queue may have no consumer before calls fail; `None`:
    /// calls wait for their timeout.
    no_consumer_grace: Option<Duration>,
    /// Set while the queue has had no consumer for longer than that:
    /// calls fail at once.
    abandoned: AtomicBool,
    tracer: Tracer,
}

impl Center {
    /// Connects to the broker at `url` with the default options: a broker
    /// that does not answer is tried until it does (see
    /// [`CenterOptions::connect_timeout`]).
    pub async fn connect(url: &str) -> Result<Self, StartError> {
        Self::connect_with(url, CenterOptions::default()).await
    }

    /// Connects to the broker at `url`, declares a private reply queue and
    /// starts consuming it, so no reply can arrive before anyone listens.
    /// A broker that does not answer is tried again, for up to
    /// [`CenterOptions::connect_timeout`].
    pub async fn connect_with(url: &str, options: CenterOptions) -> Result<Self, StartError> {
        let queue = amqp::queue_name(&options.queue)?;
        let session = amqp::patiently(options.connect_timeout, backoff::CENTER_MAX_WAIT, || {
            Session::open(
                url,
                &options.tls,
                options.reply_mode,
                options.confirms,
                false,
            )
        })
        .await?;
        let center = Center {
            shared: Arc::new(Shared {
                url: url.to_owned(),
                tls: options.tls,
                reply_mode: options.reply_mode,
                queue,
                timeout: options.timeout,
                retries: options.retries,
                max_body: options.max_body,
                version: options.version,
                persistent: options.persistent,
                confirms: options.confirms,
                session: ArcSwap::from_pointee(session),
                reconnecting: tokio::sync::Mutex::new(()),
                closed: AtomicBool::new(false),
                no_consumer_grace: options.no_consumer_grace,
                abandoned: AtomicBool::new(false),
                tracer: options.tracer,
            }),
        };
        if let Some(grace) = options.no_consumer_grace {
            tokio::spawn(watch::watch_consumers(
                Arc::downgrade(&center.shared),
                grace,
            ));
        }
        Ok(center)
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
        let answered = self.round_trip(body.as_ref(), None).await?;
        Ok(answered.reply)
    }

    /// Sends `inputs` as one batch request (see [`wire::batch`](crate::shared::wire::batch)) and waits
    /// for the reply that holds their results: one for each input, in
    /// order, each its own success or error
    /// ([`CallError::Remote`] with the node's error kind). The call as a
    /// whole fails as [`call`](Self::call) does, and with
    /// [`CallError::BadReply`] when the reply is not a batch reply. Every
    /// input still runs in its own fresh instance on the node; the batch
    /// saves the messages, not the isolation.
    pub async fn call_batch<T: AsRef<[u8]>>(
        &self,
        inputs: &[T],
    ) -> Result<Vec<Result<Reply, CallError>>, CallError> {
        let body = batch::encode_inputs(inputs);
        let answered = self.round_trip(&body, Some(batch::CONTENT_TYPE)).await?;
        if !answered.is_batch {
            return Err(CallError::BadReply(
                "the reply is not a batch reply: does the node know batches?".into(),
            ));
        }
        let results = batch::decode_results(&answered.reply.body)
            .map_err(|err| CallError::BadReply(format!("cannot read the batch reply: {err}")))?;
        if results.len() != inputs.len() {
            return Err(CallError::BadReply(format!(
                "the batch reply holds {} results for {} inputs",
                results.len(),
                inputs.len()
            )));
        }
        let origin = answered.reply.origin;
        Ok(results
            .into_iter()
            .map(|result| match result {
                ItemResult::Ok(body) => Ok(Reply {
                    body,
                    origin: origin.clone(),
                }),
                ItemResult::Failed { kind, message } => Err(CallError::Remote {
                    kind,
                    message,
                    origin: origin.clone(),
                }),
            })
            .collect())
    }

    /// Publishes `body` and waits for its reply, reconnecting and sending
    /// it again when the connection is lost, all within the timeout. With
    /// traces exported, the call has a span, and each publish a send span
    /// whose context the request carries.
    async fn round_trip(
        &self,
        body: &[u8],
        content_type: Option<&'static str>,
    ) -> Result<Answered, CallError> {
        let shared = &*self.shared;
        if !shared.tracer.is_on() {
            return self.attempts(body, content_type, None).await;
        }
        let mut call = shared
            .tracer
            .start(|| format!("call {}", shared.queue), Kind::Client, None);
        let answered = self.attempts(body, content_type, Some(&mut call)).await;
        match &answered {
            Ok(_) => call.set(attr::OUTCOME, "ok"),
            Err(error) => {
                call.set(attr::OUTCOME, error.kind().to_owned());
                call.set(attr::ERROR_TYPE, error.kind().to_owned());
                call.fail(|| error.to_string());
            }
        }
        answered
    }

    /// The attempts of [`round_trip`](Self::round_trip), in the span
    /// `call` when traced.
    async fn attempts(
        &self,
        body: &[u8],
        content_type: Option<&'static str>,
        mut call: Option<&mut Span>,
    ) -> Result<Answered, CallError> {
        let shared = &*self.shared;
        if body.len() > shared.max_body {
            return Err(CallError::TooLarge {
                size: body.len(),
                limit: shared.max_body,
            });
        }
        if shared.abandoned.load(Ordering::Acquire) {
            return Err(shared.no_consumer());
        }
        let deadline = Instant::now() + shared.timeout;
        // Kept across retries, so every copy of the request is the same
        // request in the logs of both sides.
        let correlation_id = Uuid::new_v4().to_string();
        if let Some(call) = call.as_deref_mut() {
            call.set(attr::MESSAGING_SYSTEM, attr::RABBITMQ);
            call.set(attr::ROUTING_KEY, shared.queue.to_string());
            call.set(attr::CONVERSATION_ID, correlation_id.clone());
        }
        let request = Request {
            correlation_id: &correlation_id,
            body,
            content_type,
            call: call.as_deref().map(|call| *call.context()),
        };
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
            let attempt = session.publish_and_wait(shared, &request, deadline);
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
            let reopened = Session::open(
                &shared.url,
                &shared.tls,
                shared.reply_mode,
                shared.confirms,
                true,
            );
            match reopened.await {
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
    /// when no such queue exists. Each step is bounded by
    /// [`amqp::ANSWER_TIMEOUT`]; a broker that does not answer is
    /// [`ConsumerCountError::NoAnswer`].
    pub async fn consumer_count(&self) -> Result<Option<u32>, ConsumerCountError> {
        let session = self.shared.session.load_full();
        session.consumer_count(self.shared.queue.clone()).await
    }

    /// Closes the connection, waiting at most [`amqp::ANSWER_TIMEOUT`] for
    /// the broker to answer. Calls still waiting fail with
    /// [`CallError::ConnectionLost`], without retrying.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        let session = self.shared.session.load_full();
        let close = session.connection.close(200, "OK".into());
        let _ = tokio::time::timeout(amqp::ANSWER_TIMEOUT, close).await;
        self.shared.tracer.flush().await;
    }
}

/// The span of one publish of `request`, a child of its call's span.
fn send_span(shared: &Shared, call: &TraceContext, request: &Request<'_>) -> Span {
    let queue = &shared.queue;
    let mut send = shared.tracer.start(
        || format!("{} {queue}", attr::SEND),
        Kind::Producer,
        Some(call),
    );
    send.set(attr::MESSAGING_SYSTEM, attr::RABBITMQ);
    send.set(attr::OPERATION_TYPE, attr::SEND);
    send.set(attr::OPERATION_NAME, attr::PUBLISH);
    // Requests go through the default exchange, named by the conventions
    // as the empty string.
    send.set(attr::DESTINATION, "");
    send.set(attr::ROUTING_KEY, queue.to_string());
    send.set(attr::CONVERSATION_ID, request.correlation_id.to_owned());
    send.set(attr::BODY_SIZE, request.body.len() as i64);
    send
}
