//! The center: an RPC client that keeps many requests in flight over one
//! connection and one reply queue, and matches each reply to its request
//! by correlation id.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use compute_host::Center;
//!
//! let center = Center::connect("amqp://127.0.0.1:5672/%2f").await?;
//! let reply = center.call("41").await?;
//! assert_eq!(reply.body, b"42");
//! # Ok(())
//! # }
//! ```

use crate::{
    amqp::{self, Routed},
    wire,
};
use futures_util::StreamExt as _;
use lapin::{
    BasicProperties, Channel, Connection, Consumer,
    message::Delivery,
    options::{BasicConsumeOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::{FieldTable, ShortString},
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::oneshot;
use tracing::debug;
use uuid::Uuid;

/// How a [`Center`] sends its requests.
#[derive(Clone, Debug)]
pub struct CenterOptions {
    /// The queue the compute nodes consume.
    pub queue: String,
    /// How long a call may take, from publishing to the reply.
    pub timeout: Duration,
}

impl Default for CenterOptions {
    fn default() -> Self {
        CenterOptions {
            queue: "compute_queue".into(),
            timeout: Duration::from_secs(30),
        }
    }
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
        kind: String,
        /// The message for a person, from the reply body.
        message: String,
        /// What answered.
        origin: Origin,
    },
    /// No queue of that name exists, so the broker returned the request.
    #[error("no-route: no queue named {0:?} exists; start a compute node, which declares it")]
    NoRoute(String),
    /// The request could not be published.
    #[error("could not publish the request: {0}")]
    Publish(#[source] lapin::Error),
    /// The broker refused the request (a negative confirm).
    #[error("the broker refused the request")]
    Refused,
    /// The connection closed before the reply arrived.
    #[error("the connection to RabbitMQ was lost before the reply arrived")]
    ConnectionLost,
}

/// Requests waiting for their reply, by correlation id.
type Pending = Mutex<HashMap<String, oneshot::Sender<Delivery>>>;

/// An RPC client for compute nodes. Cheap to clone; clones share the
/// connection, so calls from many tasks are multiplexed over it.
#[derive(Clone)]
pub struct Center {
    shared: Arc<Shared>,
}

struct Shared {
    connection: Connection,
    channel: Channel,
    reply_queue: ShortString,
    queue: ShortString,
    timeout: Duration,
    pending: Arc<Pending>,
}

impl Center {
    /// Connects to the broker at `url` with the default options.
    pub async fn connect(url: &str) -> Result<Self, amqp::ConnectError> {
        Self::connect_with(url, CenterOptions::default()).await
    }

    /// Connects to the broker at `url`, declares a private reply queue and
    /// starts consuming it, so no reply can arrive before anyone listens.
    pub async fn connect_with(
        url: &str,
        options: CenterOptions,
    ) -> Result<Self, amqp::ConnectError> {
        let connection = amqp::connect(url).await?;
        let setup = async {
            let channel = connection.create_channel().await?;
            // Confirms tell a request the broker could not route (no such
            // queue) at once, instead of after the timeout.
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let reply_queue = channel
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
                .clone();
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
        };
        let (channel, reply_queue, replies) = setup
            .await
            .map_err(|source| amqp::ConnectError::setup(url, source))?;

        let pending = Arc::new(Pending::default());
        tokio::spawn(route_replies(replies, pending.clone()));
        Ok(Center {
            shared: Arc::new(Shared {
                connection,
                channel,
                reply_queue,
                queue: options.queue.into(),
                timeout: options.timeout,
                pending,
            }),
        })
    }

    /// The name of this center's reply queue.
    pub fn reply_queue(&self) -> &str {
        self.shared.reply_queue.as_str()
    }

    /// Sends `body` as one request and waits for its reply. The timeout
    /// covers the whole call, publishing included.
    pub async fn call(&self, body: impl AsRef<[u8]>) -> Result<Reply, CallError> {
        let timeout = self.shared.timeout;
        tokio::time::timeout(timeout, self.publish_and_wait(body.as_ref()))
            .await
            .unwrap_or(Err(CallError::Timeout(timeout)))
    }

    async fn publish_and_wait(&self, body: &[u8]) -> Result<Reply, CallError> {
        let shared = &*self.shared;
        let correlation_id = Uuid::new_v4().to_string();
        let (sender, receiver) = oneshot::channel();
        let _waiting = Waiting::register(&shared.pending, correlation_id.clone(), sender);

        let properties = BasicProperties::default()
            .with_reply_to(shared.reply_queue.clone())
            .with_correlation_id(correlation_id.into());
        let routed =
            amqp::publish_mandatory(&shared.channel, shared.queue.clone(), body, properties)
                .await
                .map_err(CallError::Publish)?;
        match routed {
            Routed::Queued => {}
            Routed::Returned => return Err(CallError::NoRoute(shared.queue.to_string())),
            Routed::Refused => return Err(CallError::Refused),
        }

        // The sender is dropped without a reply only when the reply
        // consumer ends, that is when the connection is gone.
        let delivery = receiver.await.map_err(|_| CallError::ConnectionLost)?;
        into_reply(delivery)
    }

    /// How many consumers (compute nodes) the request queue has, or `None`
    /// when no such queue exists.
    pub async fn consumer_count(&self) -> Result<Option<u32>, lapin::Error> {
        // A passive declare of a missing queue closes its channel, so it
        // gets a channel of its own.
        let channel = self.shared.connection.create_channel().await?;
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

    /// Closes the connection. Calls still waiting fail with
    /// [`CallError::ConnectionLost`].
    pub async fn close(&self) {
        let _ = self.shared.connection.close(200, "OK".into()).await;
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
        sender: oneshot::Sender<Delivery>,
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

/// The map is only held for an insert or a remove, and no code panics
/// while holding it, so a poisoned lock still holds consistent data.
fn lock(
    pending: &Pending,
) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Delivery>>> {
    pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Hands each reply to the call waiting for it. Replies nobody waits for
/// (late after a timeout, duplicated by a redelivery, or foreign) are
/// dropped. When the consumer ends, the pending calls' senders are dropped
/// with the map, so they fail with [`CallError::ConnectionLost`].
async fn route_replies(mut replies: Consumer, pending: Arc<Pending>) {
    while let Some(Ok(delivery)) = replies.next().await {
        let correlation_id = delivery.properties.correlation_id().clone();
        let waiter = correlation_id
            .as_ref()
            .and_then(|id| lock(&pending).remove(id.as_str()));
        match waiter {
            Some(sender) => {
                let _ = sender.send(delivery);
            }
            None => debug!(
                ?correlation_id,
                "dropping a reply that no call is waiting for"
            ),
        }
    }
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
            kind,
            message: String::from_utf8_lossy(&delivery.data).into_owned(),
            origin,
        }),
    }
}
