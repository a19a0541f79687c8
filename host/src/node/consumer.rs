//! One function's consumer: a channel of the node's connection, the
//! function's queue declared and consumed on it, each delivery handed to
//! its own task. The consumer acks the requests its tasks answered, one
//! ack for those answered in a row.
//!
//! Concurrency is bounded by the channel's prefetch: the broker never has
//! more than `prefetch` unacked requests of this function out to the node.
//! When the function is removed or the node stops, the consumer is
//! cancelled and every request in flight is answered (reply and ack)
//! before the channel closes. When the connection is lost, the requests
//! in flight are abandoned (the broker redelivers them) and the consumer
//! waits for the link's next connection; when only the consumer is
//! cancelled (its queue was deleted), it consumes again with backoff.
//! When a removed function's consumer has stopped, its queue is deleted
//! unless another node still consumes it.

use crate::node::link::Link;
use crate::{
    node::{
        ack_mode::AckMode,
        functions::Function,
        metrics::{FunctionMetrics, RequestMetrics},
        request::{self, Handler, Settlements},
        throttle::Throttle,
    },
    shared::{
        amqp::{self, Refusal},
        backoff::{self, Backoff},
        queues::QueueType,
        trace::Tracer,
    },
};
use futures_util::StreamExt as _;
use lapin::{
    Channel, Connection, Consumer,
    options::{
        BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeleteOptions,
    },
    types::FieldTable,
};
use std::{fmt, sync::Arc, time::Duration};
use tokio::{sync::oneshot, time::Instant};
use tokio_util::{
    sync::CancellationToken,
    task::{AbortOnDropHandle, TaskTracker},
};
use tracing::{Instrument as _, debug, info, info_span, warn};

/// A consumer that lasts this long was a success: if it is cancelled, the
/// next attempt starts again from the first wait.
const STABLE_CONSUMER: Duration = Duration::from_secs(30);

/// How often a consumer without confirms takes the replies the broker
/// returned, to warn about them. Nothing waits on them.
const RETURNS_POLL: Duration = Duration::from_secs(1);

/// What every consumer of a node shares.
pub(super) struct Shared {
    pub(super) link: Arc<Link>,
    pub(super) prefetch: u16,
    pub(super) queue_type: QueueType,
    pub(super) ack_mode: AckMode,
    pub(super) metrics: Arc<RequestMetrics>,
    pub(super) max_body: usize,
    pub(super) warnings: Arc<Throttle>,
    /// How long a stopping consumer waits for its requests in flight.
    pub(super) drain_limit: Duration,
    pub(super) tracer: Tracer,
}

/// A function's consumer, running.
pub(super) struct Running {
    stop: CancellationToken,
    /// Ends with the channel, still open, when the consumer stopped while
    /// connected.
    task: AbortOnDropHandle<Option<Channel>>,
}

impl Running {
    /// Starts consuming `function`'s queue. `first` learns whether the
    /// first attempt to consume succeeded; later attempts are logged.
    pub(super) fn start(
        function: Arc<Function>,
        shared: Arc<Shared>,
        first: Option<oneshot::Sender<Result<(), SetUpError>>>,
    ) -> Running {
        let stop = CancellationToken::new();
        let span = info_span!("function", function = function.name());
        let task = tokio::spawn(serve(function, shared, stop.clone(), first).instrument(span));
        Running {
            stop,
            task: AbortOnDropHandle::new(task),
        }
    }

    /// Stops consuming, answers the requests in flight, closes the
    /// channel.
    pub(super) async fn stop(self) {
        if let Some(channel) = self.finish().await {
            close(&channel).await;
        }
    }

    /// Stops consuming and answers the requests in flight, leaving the
    /// channel to whoever closes the connection: a broker that does not
    /// answer (under an alarm it reads nothing) then costs one wait, not
    /// one per function. The channel is to be dropped only once the
    /// connection is closed: lapin closes a channel whose last handle is
    /// dropped, and that close fails the connection's own.
    pub(super) async fn finish(self) -> Option<Channel> {
        self.stop.cancel();
        self.task.await.unwrap_or_else(|err| {
            warn!(cause = %err, "a function's consumer failed");
            None
        })
    }
}

/// Consumes `function`'s queue on whatever connection the link has, until
/// `stop`.
async fn serve(
    function: Arc<Function>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    mut first: Option<oneshot::Sender<Result<(), SetUpError>>>,
) -> Option<Channel> {
    let mut backoff = Backoff::up_to(backoff::NODE_MAX_WAIT);
    let mut last_failure: Option<String> = None;
    // Whether a consumer that served was lost, and none is set up since.
    let mut resuming = false;
    loop {
        let connection = tokio::select! {
            _ = stop.cancelled() => return None,
            connection = shared.link.connected() => connection,
        };
        let opened = tokio::select! {
            _ = stop.cancelled() => return None,
            opened = Session::open(&connection, &function, &shared) => opened,
        };
        let mut session = match opened {
            Ok(session) => session,
            Err(err) => {
                let connected = connection.status().connected();
                if !connected {
                    shared.link.lost();
                }
                // A connection lost meanwhile is the link's to report, but
                // a refusal is this queue's, whether the broker closed the
                // channel or the whole connection for it.
                if connected || err.is_refusal() {
                    let cause = err.to_string();
                    if let Some(first) = first.take() {
                        let _ = first.send(Err(err));
                    } else if last_failure.as_ref() != Some(&cause) {
                        warn!(queue = function.queue(), %cause, retry_in_ms = backoff.upcoming().as_millis() as u64, "cannot consume the function's queue; trying again");
                        last_failure = Some(cause);
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(backoff.next_wait()) => continue,
                }
            }
        };
        if let Some(first) = first.take() {
            let _ = first.send(Ok(()));
        } else if resuming {
            // Said only now that the consumer is set up again: a
            // reconnected connection on which the queue cannot be
            // consumed serves nothing.
            info!(queue = function.queue(), "serving again");
        } else if last_failure.is_some() {
            info!(
                queue = function.queue(),
                "consuming the function's queue now"
            );
        }
        last_failure = None;
        let handler = Arc::new(Handler {
            live: function.live().clone(),
            channel: session.channel.clone(),
            settlements: Settlements::new(session.channel.clone()),
            metrics: FunctionMetrics::new(shared.metrics.clone(), function.name()),
            max_body: shared.max_body,
            warnings: shared.warnings.clone(),
            ack_mode: shared.ack_mode,
            tracer: shared.tracer.clone(),
            queue: function.queue().to_owned(),
        });
        match session.serve(&handler, &stop).await {
            Ended::Stopped => {
                // Side by side: a broker that does not answer the cancel
                // (under an alarm it reads nothing) must not add its wait
                // to the drain's. Deliveries that arrive meanwhile are
                // never started; closing requeues them.
                tokio::join!(
                    session.stop_consuming(),
                    session.drain(&handler.settlements, shared.drain_limit)
                );
                return Some(session.channel);
            }
            Ended::Lost(cause) => {
                // Their acks could never reach the broker now, and their
                // replies could wait forever for a confirm.
                session.abandon.cancel();
                let lasted = session.opened.elapsed();
                close(&session.channel).await;
                resuming = true;
                if !connection.status().connected() {
                    // The link logs it once for every function.
                    shared.link.lost();
                    continue;
                }
                warn!(queue = function.queue(), %cause, "the broker cancelled the function's consumer; consuming again");
                if lasted >= STABLE_CONSUMER {
                    backoff.reset();
                }
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(backoff.next_wait()) => {}
                }
            }
        }
    }
}

/// One channel's worth of consuming: what is lost, and opened again, when
/// the broker goes away.
struct Session {
    channel: Channel,
    consumer: Consumer,
    /// The requests being answered on this channel.
    in_flight: TaskTracker,
    /// Stops them when the channel is lost.
    abandon: CancellationToken,
    opened: Instant,
}

/// Why serving on a session stopped.
enum Ended {
    /// The consumer was asked to stop.
    Stopped,
    /// The channel failed, or the broker cancelled the consumer.
    Lost(String),
}

impl Session {
    /// Opens a channel, declares the queue and starts consuming, waiting
    /// at most [`amqp::ANSWER_TIMEOUT`] in all: a broker starting up may
    /// accept a connection and not answer on it.
    async fn open(
        connection: &Connection,
        function: &Function,
        shared: &Shared,
    ) -> Result<Session, SetUpError> {
        let set_up = Self::set_up(connection, function, shared);
        tokio::time::timeout(amqp::ANSWER_TIMEOUT, set_up)
            .await
            .unwrap_or(Err(SetUpError::NoAnswer))
    }

    async fn set_up(
        connection: &Connection,
        function: &Function,
        shared: &Shared,
    ) -> Result<Session, SetUpError> {
        let queue_type = &shared.queue_type;
        let channel = declare(connection, function, queue_type).await?;
        if let Some(dead_letter) = queue_type.dead_letter_queue(function.queue()) {
            let (options, arguments) = QueueType::dead_letter_declaration();
            channel
                .queue_declare(dead_letter.clone(), options, arguments)
                .await
                .map_err(|source| {
                    let what = format!("its dead-letter queue {:?}", dead_letter.as_str());
                    SetUpError::refused(what, Step::Declare, queue_type, source)
                })?;
        }
        channel
            .basic_qos(shared.prefetch, BasicQosOptions::default())
            .await?;
        if shared.ack_mode.confirms() {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
        }
        let consumer = channel
            .basic_consume(
                function.queue_name().clone(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| {
                SetUpError::refused("it".into(), Step::Consume, queue_type, source)
            })?;
        Ok(Session {
            channel,
            consumer,
            in_flight: TaskTracker::new(),
            abandon: CancellationToken::new(),
            opened: Instant::now(),
        })
    }

    /// Hands each delivery to its own task until `stop` or the session is
    /// lost, and acks the requests those tasks have answered, several at a
    /// time where it can (`request::Settlements`). Without confirms, it
    /// also takes the replies the broker returned (their callers are gone)
    /// from the client library, which keeps them until asked.
    async fn serve(&mut self, handler: &Arc<Handler>, stop: &CancellationToken) -> Ended {
        let mut returns = tokio::time::interval(RETURNS_POLL);
        returns.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let collect_returns = !handler.ack_mode.confirms();
        // Made once, not once a delivery: each one made takes the token's
        // lock to wait on it, and again when it is dropped.
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        let settlements = &handler.settlements;
        let answered = settlements.answered_any();
        tokio::pin!(answered);
        loop {
            tokio::select! {
                _ = &mut stopped => return Ended::Stopped,
                _ = &mut answered => {
                    answered.set(settlements.answered_any());
                    if let Err(err) = settlements.ack_answered() {
                        return Ended::Lost(err.to_string());
                    }
                }
                _ = returns.tick(), if collect_returns => {
                    for reply in &amqp::take_returned(&self.channel).await {
                            let correlation_id = reply.delivery.properties.correlation_id().as_ref();
                            request::caller_gone(
                                &handler.warnings,
                                reply.delivery.routing_key.as_str(),
                                correlation_id.map(|id| id.as_str()),
                            );
                    }
                }
                next = self.consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        settlements.delivered(delivery.delivery_tag);
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
                    None => {
                        // The channel may still be open: what is answered
                        // is acked, not delivered again.
                        let _ = settlements.ack_answered();
                        return Ended::Lost("the broker cancelled the consumer (was the queue deleted?)".into());
                    }
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

    /// Waits for the requests in flight to be answered, for at most
    /// `limit` (if the connection fails meanwhile, their confirms may
    /// never come, and the broker redelivers them anyway), then acks those
    /// answered, before the channel closes.
    async fn drain(&self, settlements: &Settlements, limit: Duration) {
        self.in_flight.close();
        // Acked as they are answered, as while serving: a connection lost
        // meanwhile then has only the requests still in flight delivered
        // again.
        let answered_all = async {
            let all_ended = self.in_flight.wait();
            tokio::pin!(all_ended);
            loop {
                tokio::select! {
                    () = &mut all_ended => return,
                    () = settlements.answered_any() => {
                        if let Err(err) = settlements.ack_answered() {
                            debug!(cause = %err, "could not ack the requests answered; the broker will redeliver them");
                        }
                    }
                }
            }
        };
        if tokio::time::timeout(limit, answered_all).await.is_err() {
            warn!(
                unacked = self.in_flight.len(),
                "gave up waiting for the requests in flight; the broker will redeliver them"
            );
            self.abandon.cancel();
        }
        // A request abandoned just as it was answered may miss this last
        // ack: the broker redelivers it, as it does every abandoned one.
        let acked = settlements.ack_answered_written();
        match tokio::time::timeout(amqp::ANSWER_TIMEOUT, acked).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                debug!(cause = %err, "could not ack the requests answered; the broker will redeliver them")
            }
            Err(_) => warn!(
                "the last acks were not written within {:?}; the broker may redeliver their requests",
                amqp::ANSWER_TIMEOUT
            ),
        }
    }
}

/// Closes `channel`, if it is still open. Requests delivered but never
/// answered go back to the queue. Bounded, since a close on a connection
/// that is half gone may never be answered.
async fn close(channel: &Channel) {
    if channel.status().connected() {
        let close = channel.close(200, "OK".into());
        let _ = tokio::time::timeout(amqp::ANSWER_TIMEOUT, close).await;
    }
}

/// Declares `function`'s queue and returns a channel to consume it on.
/// A queue type that takes an existing queue as it is looks first, so a
/// queue declared otherwise (by a Python peer, by an operator) is
/// consumed, not refused; a missing one is declared.
async fn declare(
    connection: &Connection,
    function: &Function,
    queue_type: &QueueType,
) -> Result<Channel, SetUpError> {
    let queue = function.queue_name();
    let channel = connection.create_channel().await?;
    let channel = if queue_type.takes_existing() {
        let existing = amqp::existing_queue(&channel, queue.clone())
            .await
            .map_err(|source| SetUpError::refused("it".into(), Step::Look, queue_type, source))?;
        if existing.is_some() {
            return Ok(channel);
        }
        // The broker closes the channel of a passive look at a missing
        // queue.
        connection.create_channel().await?
    } else {
        channel
    };
    let (options, arguments) = queue_type.declaration(function.queue());
    channel
        .queue_declare(queue.clone(), options, arguments)
        .await
        .map_err(|source| SetUpError::refused("it".into(), Step::Declare, queue_type, source))?;
    Ok(channel)
}

/// Why a function's queue could not be consumed.
#[derive(Debug, thiserror::Error)]
pub(super) enum SetUpError {
    /// The broker refused to declare or consume a queue: trying again
    /// changes nothing until someone changes the broker or the node's
    /// settings.
    #[error("RabbitMQ refused to {step} {what}: {refusal}{}", refusal_hint(refusal.code, *.step, .queue_type))]
    Refused {
        /// `it`, the function's queue, or its dead-letter queue by name.
        what: String,
        step: Step,
        queue_type: QueueType,
        refusal: Refusal,
    },
    /// The broker did not answer in time.
    #[error(
        "RabbitMQ did not answer within {:?} while the node set up the queue",
        amqp::ANSWER_TIMEOUT
    )]
    NoAnswer,
    /// The channel or the connection failed otherwise.
    #[error(transparent)]
    Channel(#[from] lapin::Error),
}

impl SetUpError {
    /// What `step` on `what` (a queue declared as `queue_type`) failed
    /// with: a refusal when the broker answered with a reply code.
    fn refused(
        what: String,
        step: Step,
        queue_type: &QueueType,
        source: lapin::Error,
    ) -> SetUpError {
        match Refusal::of(&source) {
            Some(refusal) if refusal.is_lasting() => SetUpError::Refused {
                what,
                step,
                queue_type: queue_type.clone(),
                refusal,
            },
            _ => SetUpError::Channel(source),
        }
    }

    /// Whether the broker refused the queue, as opposed to failing to
    /// answer: a node that starts so can never serve.
    pub(super) fn is_refusal(&self) -> bool {
        matches!(self, SetUpError::Refused { .. })
    }
}

/// What the node was doing with a queue when the broker refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// A passive declare: is the queue there?
    Look,
    Declare,
    Consume,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Look => "look at",
            Step::Declare => "declare",
            Step::Consume => "consume",
        })
    }
}

/// What to do about a refused queue, from the broker's reply code, the
/// step refused and the queue type the node asked for. RabbitMQ's text
/// does not always name the permission missing (3.x says "access to
/// queue ... refused"); the step does.
fn refusal_hint(code: u16, step: Step, queue_type: &QueueType) -> &'static str {
    match (code, step, queue_type) {
        (amqp::ACCESS_REFUSED, Step::Look, _) => {
            " (the broker user has no permission on this queue: RabbitMQ 4 lets a user look at a queue only with one, and some 4.x releases ask for `configure`; a node needs `configure` and `read` on its queues: give them with `rabbitmqctl set_permissions`; see `rabbitmqctl list_user_permissions USER`)"
        }
        (amqp::ACCESS_REFUSED, Step::Consume, _) => {
            " (the broker user lacks the `read` permission on this queue, which consuming needs: give it with `rabbitmqctl set_permissions`; see `rabbitmqctl list_user_permissions USER`)"
        }
        // RabbitMQ 4.3 and later close the connection for a deprecated
        // feature they deny; a transient queue is the one such feature a
        // node can ask for.
        (amqp::INTERNAL_ERROR, _, QueueType::Transient) => {
            " (RabbitMQ 4.3 and later refuse a queue that is neither durable nor exclusive: use --queue-type classic, which is durable, or have the broker permit it with `deprecated_features.permit.transient_nonexcl_queues = true` in rabbitmq.conf)"
        }
        // The queue exists with other arguments.
        (amqp::PRECONDITION_FAILED, _, _) => {
            " (the queue exists with other settings, such as another type or durability (see --queue-type): delete it with `rabbitmqctl delete_queue NAME`, or use another queue name)"
        }
        (amqp::ACCESS_REFUSED, Step::Declare, _) => {
            " (the broker user lacks the `configure` permission on this queue, which declaring needs: give it with `rabbitmqctl set_permissions`, or have the queue declared beforehand; see `rabbitmqctl list_user_permissions USER`)"
        }
        _ => "",
    }
}

/// What becomes of the requests waiting in a removed function's queue.
#[derive(Clone, Copy, Debug)]
pub(super) enum OnRemoval {
    /// They go with the queue: the function was removed from the whole
    /// fleet (`compute remove`), so no node will ever serve them.
    DropWaiting,
    /// The queue stays while they wait: a file removed from one node's
    /// directory says nothing of the other nodes, and one of them may be
    /// reconnecting, unseen by the broker's count of consumers.
    KeepWaiting,
}

/// Deletes the queue of `function`, which the node no longer serves,
/// unless a consumer (another node) is still on it, or, with
/// [`OnRemoval::KeepWaiting`], requests wait in it: the last node to stop
/// serving a removed function deletes its queue, so that a call made
/// after fails at once with `no-route`, as for a function that never
/// existed, rather than waiting for its timeout.
pub(super) async fn delete_if_unused(link: &Link, function: &Function, on_removal: OnRemoval) {
    let delete = async {
        let connection = link.connected().await;
        let channel = connection.create_channel().await?;
        let options = QueueDeleteOptions {
            if_unused: true,
            if_empty: matches!(on_removal, OnRemoval::KeepWaiting),
            ..QueueDeleteOptions::default()
        };
        let deleted = channel
            .queue_delete(function.queue_name().clone(), options)
            .await;
        close(&channel).await;
        deleted
    };
    match tokio::time::timeout(amqp::ANSWER_TIMEOUT, delete).await {
        Ok(Ok(waiting)) => info!(
            function = function.name(),
            queue = function.queue(),
            requests_dropped = waiting,
            "deleted the removed function's queue"
        ),
        // Still consumed or not empty (PRECONDITION_FAILED), gone
        // already, or the broker did not answer: another node or the
        // operator has it.
        Ok(Err(err)) => {
            debug!(function = function.name(), queue = function.queue(), cause = %err, "left the removed function's queue")
        }
        Err(_) => debug!(
            function = function.name(),
            queue = function.queue(),
            "the broker did not answer the queue's deletion"
        ),
    }
}
