//! One connection with its reply consumer, and one request's round trip
//! on it.

use super::{
    CallError, ConsumerCountError, ReplyMode, Shared,
    reply::{Answered, into_reply},
    router::{Answer, Pending, Waiting, returned_id, route_replies, wake_returned},
};
use crate::shared::{
    amqp::{self, DIRECT_REPLY_TO, PublishError, Routed},
    lock::lock,
    trace::TraceContext,
    wire,
};
use lapin::{
    BasicProperties, Channel, Connection,
    options::{ConfirmSelectOptions, QueueDeclareOptions},
    types::{FieldTable, ShortString},
};
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};
use tokio::{sync::oneshot, time::Instant};

/// What a call sends: the same bytes, under the same correlation id, on
/// every attempt.
pub(super) struct Request<'a> {
    pub(super) correlation_id: &'a str,
    pub(super) body: &'a [u8],
    /// The content type: a batch's, or none for one input as the Python
    /// examples send it.
    pub(super) content_type: Option<&'static str>,
    /// The call's span, when traced: each publish has a send span under
    /// it.
    pub(super) call: Option<TraceContext>,
}

/// One connection with its reply queue and the calls waiting on it.
pub(super) struct Session {
    pub(super) connection: Connection,
    channel: Channel,
    pub(super) reply_queue: ShortString,
    pending: Arc<Pending>,
    /// Cleared when the reply consumer ends: no reply can arrive any more.
    /// Also when the channel fails to send a request, before the
    /// connection has noticed why.
    alive: Arc<AtomicBool>,
    /// Whether this session replaced a lost one.
    pub(super) reconnected: bool,
}

/// What to do when the broker refuses the center's reply queue.
const DECLARE_REPLY_QUEUE: &str = "the user needs the `configure` permission on its reply queue (`amq.gen-.*`) to declare it: see `rabbitmqctl list_user_permissions USER`";
/// What to do when the broker refuses to let the center consume its
/// replies.
const CONSUME_REPLIES: &str = "the user needs the `read` permission on its reply queue (`amq.gen-.*`) to consume it: see `rabbitmqctl list_user_permissions USER`";

impl Session {
    /// Connects and starts consuming replies: from a new private reply
    /// queue, or by direct reply-to. Bounded: while a broker starts up it
    /// may accept the connection and not answer on it.
    pub(super) async fn open(
        url: &str,
        tls: &amqp::TlsOptions,
        reply_mode: ReplyMode,
        confirms: bool,
        reconnected: bool,
    ) -> Result<Session, amqp::ConnectError> {
        let connection = amqp::connect_with(url, tls).await?;
        // Each step, with what to do if the broker refuses it: RabbitMQ
        // 3.x does not always name the permission it found missing.
        let plainly = |source| (source, "check the user's permissions in this vhost");
        let setup = tokio::time::timeout(amqp::ANSWER_TIMEOUT, async {
            let channel = connection.create_channel().await.map_err(plainly)?;
            // Without confirms, the broker still returns a request it
            // cannot route (no such queue); the router collects it.
            if confirms {
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(plainly)?;
            }
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
                    .await
                    .map_err(|source| (source, DECLARE_REPLY_QUEUE))?
                    .name()
                    .clone(),
                // Consumed (no-ack) on the channel that publishes, before
                // the first publish, as RabbitMQ requires.
                ReplyMode::Direct => DIRECT_REPLY_TO.into(),
            };
            let replies = amqp::consume_no_ack(&channel, reply_queue.clone())
                .await
                .map_err(|source| match reply_mode {
                    ReplyMode::Queue => (source, CONSUME_REPLIES),
                    ReplyMode::Direct => plainly(source),
                })?;
            Ok((channel, reply_queue, replies))
        });
        let (channel, reply_queue, replies) = match setup.await {
            Ok(set_up) => {
                set_up.map_err(|(source, hint)| amqp::ConnectError::setup(url, source, hint))?
            }
            Err(_) => return Err(amqp::ConnectError::no_answer(url)),
        };

        let pending = Arc::new(Pending::default());
        let alive = Arc::new(AtomicBool::new(true));
        let returns = (!confirms).then(|| channel.clone());
        tokio::spawn(route_replies(
            replies,
            returns,
            pending.clone(),
            alive.clone(),
        ));
        Ok(Session {
            connection,
            channel,
            reply_queue,
            pending,
            alive,
            reconnected,
        })
    }

    pub(super) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire) && self.channel.status().connected()
    }

    /// Whether any call waits for its reply on this session.
    pub(super) fn has_waiting_calls(&self) -> bool {
        !lock(&self.pending).is_empty()
    }

    /// Ends the wait of every call on this session: no compute node
    /// consumes the queue.
    pub(super) fn abandon_waiting_calls(&self) {
        for (_, call) in lock(&self.pending).drain() {
            let _ = call.send(Answer::Abandoned);
        }
    }

    /// How many consumers `queue` has, or `None` when no such queue
    /// exists; each step bounded by [`amqp::ANSWER_TIMEOUT`].
    pub(super) async fn consumer_count(
        &self,
        queue: ShortString,
    ) -> Result<Option<u32>, ConsumerCountError> {
        // A passive declare of a missing queue closes its channel, so it
        // gets a channel of its own, closed however the declare went.
        let channel = answered(self.connection.create_channel()).await?;
        let declared = answered(amqp::existing_queue(&channel, queue)).await;
        let _ = tokio::time::timeout(amqp::ANSWER_TIMEOUT, channel.close(200, "OK".into())).await;
        Ok(declared?.map(|queue| queue.consumer_count()))
    }

    /// Publishes one request on this session and waits for its reply. The
    /// request expires at `deadline`, when nobody waits for it any more.
    pub(super) async fn publish_and_wait(
        &self,
        shared: &Shared,
        request: &Request<'_>,
        deadline: Instant,
    ) -> Result<Answered, CallError> {
        let correlation_id = request.correlation_id;
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
        let properties = match request.content_type {
            Some(content_type) => properties.with_content_type(content_type.into()),
            None => properties,
        };
        // Delivery mode 2: kept on disk by a durable queue.
        let properties = if shared.persistent {
            properties.with_delivery_mode(2)
        } else {
            properties
        };
        let properties = match &shared.version {
            Some(digest) => wire::with_version(properties, digest),
            None => properties,
        };
        let properties = wire::with_expiry(
            properties,
            deadline.saturating_duration_since(Instant::now()),
        );
        // The send span: its context goes in the request's `traceparent`,
        // and it ends once the broker has taken the request, or did not.
        let send = request
            .call
            .as_ref()
            .map(|call| super::send_span(shared, call, request));
        let properties = match &send {
            Some(send) => wire::with_trace(
                properties,
                wire::TraceHeaders {
                    context: send.context(),
                    state: None,
                },
            ),
            None => properties,
        };
        let routed = amqp::publish_mandatory(
            &self.channel,
            shared.queue.clone(),
            request.body,
            properties,
        )
        .await
        .map_err(|error| {
            if matches!(error, PublishError::Client(_)) {
                // The connection's reader may not have seen the reset yet,
                // and would leave this session looking alive: a retry
                // would fail on it again at once, and burn every retry in
                // a moment while the broker restarts.
                self.alive.store(false, Ordering::Release);
            }
            CallError::Publish(error)
        });
        if let Some(mut send) = send {
            match &routed {
                Ok(Routed::Queued) => {}
                Ok(Routed::Returned(_)) => send.fail(|| "no queue took the request".to_owned()),
                Ok(Routed::Refused) => send.fail(|| CallError::Refused.to_string()),
                Err(error) => send.fail(|| error.to_string()),
            }
        }
        let routed = routed?;
        match routed {
            Routed::Queued => {}
            Routed::Returned(returned) => {
                match returned_id(&returned) {
                    Some(id) if id == correlation_id => {
                        return Err(CallError::NoRoute(shared.queue.to_string()));
                    }
                    // The client paired another call's return with this
                    // publish; that call learns it here, and this one's
                    // return, if any, reaches it the same way.
                    Some(id) => wake_returned(&self.pending, id),
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
            Ok(Answer::Abandoned) => Err(shared.no_consumer()),
            Err(_) => Err(CallError::ConnectionLost),
        }
    }
}

/// What the broker answered to `step`, within [`amqp::ANSWER_TIMEOUT`].
async fn answered<T>(
    step: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<T, ConsumerCountError> {
    match tokio::time::timeout(amqp::ANSWER_TIMEOUT, step).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(ConsumerCountError::NoAnswer),
    }
}
