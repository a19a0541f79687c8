//! What happens to one request: compute, reply, then its consumer acks it.
//!
//! When the ack goes out depends on the node's [`AckMode`]: after the
//! broker confirmed the reply, or once the reply is written (the
//! broker processes a channel's methods in order, so it routes the reply
//! before it sees the ack). The consumer acks the requests answered in a
//! row with one ack (`settle`). A request that cannot be answered at all is
//! rejected without requeue, so a dead-letter exchange on the queue
//! catches it: redelivering it could never help, and in the article this
//! project grew from such a request crashed the node at every
//! redelivery. Each [`Rejection`] names why. Replies are published
//! `mandatory`: a reply whose `reply_to` queue is gone (the caller left)
//! comes back, is logged, and its request is acked, since computing it
//! again cannot reach anyone either.
//!
//! With confirms, a reply the broker refuses (a negative confirm, say
//! from a full reply queue) is published again a few times, with
//! backoff, without computing it again; then its request is rejected. So
//! a poison request is settled once, never recomputed in a loop.
//!
//! A batch request (`batch`) is answered the same way, once, with the
//! results of all its inputs in one reply.
//!
//! A request's span in the node's log (`log`) is made only when
//! something is logged about it: most requests log nothing.

mod batch;
mod log;
mod settle;

pub(crate) use settle::Settlements;

use crate::{
    node::{ack_mode::AckMode, live::LiveModule, metrics::FunctionMetrics, throttle::Throttle},
    shared::{
        amqp::{self, PublishError, Routed},
        backoff::{self, Backoff},
        escaped::Escaped,
        sandbox::ComputeModule,
        trace::{Kind, Span, TraceContext, Tracer, attributes as attr},
        wire::{self, ErrorKind},
    },
};
use lapin::{BasicProperties, Channel, message::Delivery, types::ShortString};
use log::RequestLog;
use settle::Unanswered;
use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};
use tracing::{debug, warn};

/// How many times a reply is published, with confirms, before its
/// request is given up.
const REPLY_ATTEMPTS: u32 = 3;
/// How long to wait for the broker to confirm a reply, or without
/// confirms to take it. A broker in a memory or disk alarm blocks
/// publishers and may never confirm; past this the attempt counts as
/// failed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request is rejected without requeue instead of answered. Each
/// is counted under its own `outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejection {
    #[error("the request has no reply_to, so nobody can get an answer")]
    NoReplyTo,
    #[error("its reply_to is not valid UTF-8, so no reply can reach its caller")]
    ReplyToNotUtf8,
    #[error(
        "its correlation_id is not valid UTF-8, so a reply could not carry it back for the caller to match"
    )]
    CorrelationIdNotUtf8,
    #[error("it expired (its timestamp and expiration) before a slot was free to compute it")]
    Expired,
    #[error("its reply could not be delivered")]
    Undeliverable,
}

impl Rejection {
    /// The `outcome` label it is counted under.
    pub(crate) fn outcome(self) -> &'static str {
        match self {
            Rejection::NoReplyTo => "no-reply-to",
            Rejection::ReplyToNotUtf8 | Rejection::CorrelationIdNotUtf8 => "bad-properties",
            Rejection::Expired => "expired",
            Rejection::Undeliverable => "undeliverable",
        }
    }

    /// Whether the request can be answered at all: it names a usable
    /// `reply_to`, a correlation id that can be echoed, and is not
    /// expired.
    fn check(properties: &BasicProperties) -> Result<&ShortString, Rejection> {
        let reply_to = properties.reply_to().as_ref().ok_or(Rejection::NoReplyTo)?;
        if reply_to.is_lossy() {
            return Err(Rejection::ReplyToNotUtf8);
        }
        if properties
            .correlation_id()
            .as_ref()
            .is_some_and(ShortString::is_lossy)
        {
            return Err(Rejection::CorrelationIdNotUtf8);
        }
        if wire::expired(properties, SystemTime::now()) {
            return Err(Rejection::Expired);
        }
        Ok(reply_to)
    }
}

/// What became of a reply.
enum Delivered {
    /// The broker took it: queued, or returned because the caller is gone.
    Settled(Routed),
    /// The broker refused it or did not confirm it, every attempt.
    GaveUp(PublishError),
    /// The channel is gone: nothing can be settled on it any more.
    ChannelLost(PublishError),
}

/// Handles the requests of one function on one channel. Shared by their
/// tasks.
pub(crate) struct Handler {
    /// The function's versions: new requests run the current one, or the
    /// one they pin; swapped by the table of functions.
    pub(crate) live: Arc<LiveModule>,
    /// The channel the requests arrive on; replies go out on it too, so
    /// that a confirm and the matching ack travel on one channel.
    pub(crate) channel: Channel,
    /// How the requests delivered on `channel` are acked, rejected or
    /// requeued; it holds the same channel, to settle them on.
    pub(crate) settlements: Settlements,
    /// Where each request's outcome and timings are counted.
    pub(crate) metrics: FunctionMetrics,
    /// The largest reply body, error messages included.
    pub(crate) max_body: usize,
    /// Warnings that one client could repeat per request.
    pub(crate) warnings: Arc<Throttle>,
    /// Whether a request waits for its reply's confirm before its ack.
    /// The channel is in confirm mode exactly when it does.
    pub(crate) ack_mode: AckMode,
    /// Where each request's spans go, when traces are exported.
    pub(crate) tracer: Tracer,
    /// The queue the requests come from, which names their spans.
    pub(crate) queue: String,
}

impl Handler {
    /// Answers `delivery`, then leaves it to its consumer to ack, or nacks
    /// or rejects it. Never fails: every outcome is logged here, in a span
    /// that names the request's correlation id (and so does anything the
    /// guest prints), and its trace when it has one.
    pub(crate) async fn handle(&self, delivery: Delivery) {
        let correlation_id = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map_or("", ShortString::as_str);
        // This request runs on this version to the end, even if another
        // is swapped in meanwhile.
        let current = self.live.current();
        let parent = continued_trace(&delivery.properties);
        // W3C passes `tracestate` on only with the trace it belongs to.
        let state = parent.and_then(|_| wire::trace_state(&delivery.properties));
        let mut process = self.process_span(&delivery, correlation_id, parent.as_ref());
        let trace = process.as_ref().map(Span::context).copied();
        let log = RequestLog::new(correlation_id, current.name(), trace);
        let _in_flight = self.metrics.start();
        let _counted = self.live.count_request();
        self.answer(
            &delivery,
            current.clone(),
            process.as_mut(),
            state.as_deref(),
            &log,
        )
        .await
    }

    /// The span of processing `delivery`: continuing the trace `parent`,
    /// or, when there is none and traces are exported, a new one. `None`
    /// when it is not traced at all, so an untraced node spends nothing on
    /// it.
    fn process_span(
        &self,
        delivery: &Delivery,
        correlation_id: &str,
        parent: Option<&TraceContext>,
    ) -> Option<Span> {
        if parent.is_none() && !self.tracer.is_on() {
            return None;
        }
        // Named by the queue the node consumes, not by the routing key a
        // publisher chose: span names must stay few.
        let queue = &self.queue;
        let mut span = self.tracer.start(
            || format!("{} {queue}", attr::PROCESS),
            Kind::Consumer,
            parent,
        );
        if span.is_recording() {
            span.set(attr::MESSAGING_SYSTEM, attr::RABBITMQ);
            span.set(attr::OPERATION_TYPE, attr::PROCESS);
            span.set(attr::OPERATION_NAME, attr::PROCESS);
            span.set(attr::DESTINATION, delivery.exchange.to_string());
            span.set(attr::ROUTING_KEY, delivery.routing_key.to_string());
            span.set(attr::DELIVERY_TAG, delivery.delivery_tag as i64);
            span.set(attr::CONVERSATION_ID, correlation_id.to_owned());
            span.set(attr::BODY_SIZE, delivery.data.len() as i64);
        }
        Some(span)
    }

    /// The version `properties` pin (by digest, or its start), when it is
    /// not `current`: `Ok` with it if this node holds it, `Err` with the
    /// pinned digest if not.
    fn pinned(
        &self,
        properties: &BasicProperties,
        current: &ComputeModule,
    ) -> Option<Result<ComputeModule, String>> {
        let digest = wire::requested_version(properties)?;
        if current.digest().starts_with(&digest) {
            return None;
        }
        Some(self.live.version(&digest).ok_or(digest))
    }

    async fn answer(
        &self,
        delivery: &Delivery,
        current: Arc<ComputeModule>,
        mut process: Option<&mut Span>,
        trace_state: Option<&str>,
        log: &RequestLog<'_>,
    ) {
        let reply_to = match Rejection::check(&delivery.properties) {
            Ok(reply_to) => reply_to,
            Err(rejection) => {
                return self
                    .reject(delivery, &current, rejection, None, process, log)
                    .await;
            }
        };

        let started = Instant::now();
        let is_batch = wire::batch::is_batch(&delivery.properties);
        let (module, body, error) = match self.pinned(&delivery.properties, &current) {
            Some(Err(pinned)) => {
                let message = format!(
                    "this node does not hold version {} of function {} (it serves {})",
                    Escaped(&pinned),
                    current.name(),
                    current.digest()
                );
                let body = wire::error_body(&message, self.max_body);
                (current, body, Some(ErrorKind::UnknownVersion))
            }
            pinned => {
                let module = match pinned {
                    Some(Ok(pinned)) => Arc::new(pinned),
                    _ => current,
                };
                let mut guest = process
                    .as_deref()
                    .filter(|span| span.is_recording())
                    .map(|span| {
                        self.tracer.start(
                            || format!("compute {}", module.name()),
                            Kind::Internal,
                            Some(span.context()),
                        )
                    });
                let outcome = if is_batch {
                    batch::compute(
                        &module,
                        &delivery.data,
                        self.max_body,
                        &self.metrics,
                        process.as_deref_mut(),
                        log,
                    )
                    .await
                } else {
                    self.compute_one(&module, &delivery.data, log).await
                };
                if let (Some(guest), Err((kind, _))) = (&mut guest, &outcome) {
                    guest.set(attr::ERROR_TYPE, kind.as_str());
                    guest.fail(|| kind.as_str().to_owned());
                }
                drop(guest);
                match outcome {
                    Ok(body) => (module, body, None),
                    Err((kind, body)) => (module, body, Some(kind)),
                }
            }
        };
        let guest_time = started.elapsed();
        log.debug(|| {
            debug!(
                reply_to = %Escaped(reply_to.as_str()),
                function = module.name(),
                module = module.digest(),
                error = error.map(|kind| kind.as_str()),
                elapsed_us = guest_time.as_micros() as u64,
                redelivered = delivery.redelivered,
                "request"
            )
        });

        let trace = process.as_deref().map(|span| wire::TraceHeaders {
            context: span.context(),
            state: trace_state,
        });
        let properties = wire::reply_properties(
            &delivery.properties,
            module.name(),
            module.digest(),
            error,
            trace,
        );
        let properties = if is_batch && error.is_none() {
            properties.with_content_type(wire::batch::CONTENT_TYPE.into())
        } else {
            properties
        };
        if let Some(span) = process.as_deref_mut().filter(|span| span.is_recording()) {
            span.set(attr::FUNCTION, module.name().to_owned());
            span.set(attr::MODULE_DIGEST, module.digest().to_owned());
            if let Some(kind) = error {
                span.set(attr::ERROR_TYPE, kind.as_str());
                span.fail(|| String::from_utf8_lossy(&body).into_owned());
            }
        }
        match self.reply(reply_to, &body, properties, log).await {
            Delivered::Settled(routed) => {
                if let Routed::Returned(_) = routed {
                    log.in_span(|| caller_gone(&self.warnings, reply_to.as_str(), None));
                }
                self.settlements.answered(delivery.delivery_tag);
                let outcome = error.map_or("ok", |kind| kind.as_str());
                self.metrics.settled(module.name(), outcome);
                let traced = process
                    .as_deref()
                    .map(Span::context)
                    .filter(|trace| trace.sampled());
                self.metrics
                    .answered(module.name(), started.elapsed(), traced);
                if let Some(span) = process {
                    span.set(attr::OUTCOME, outcome);
                }
            }
            Delivered::GaveUp(last_failure) => {
                self.reject(
                    delivery,
                    &module,
                    Rejection::Undeliverable,
                    Some(&last_failure),
                    process,
                    log,
                )
                .await;
            }
            Delivered::ChannelLost(cause) => {
                // The node warns once about the lost connection; the
                // broker redelivers the request.
                log.debug(|| debug!(%cause, "reply not delivered: the channel is gone"));
                let nacked = self
                    .settlements
                    .settle_unanswered(delivery, Unanswered::Requeue)
                    .await;
                log_settle_failure(nacked, log);
                self.metrics.settled(module.name(), "requeued");
                if let Some(span) = process {
                    span.set(attr::OUTCOME, "requeued");
                }
            }
        }
    }

    /// One input's result, or the error kind and message of its failure.
    async fn compute_one(
        &self,
        module: &ComputeModule,
        input: &[u8],
        log: &RequestLog<'_>,
    ) -> Result<Vec<u8>, (ErrorKind, Vec<u8>)> {
        let started = Instant::now();
        let outcome = module.compute_in(input, || log.span().clone()).await;
        self.metrics
            .computed(module.name(), &outcome, started.elapsed());
        outcome.map_err(|err| {
            (
                err.kind(),
                wire::error_body(&err.to_string(), self.max_body),
            )
        })
    }

    /// Rejects `delivery` without requeue, so a dead-letter exchange on the
    /// queue gets it and the broker never redelivers it. `last_failure` is
    /// why the reply's last attempt failed, for an undeliverable one.
    async fn reject(
        &self,
        delivery: &Delivery,
        module: &ComputeModule,
        why: Rejection,
        last_failure: Option<&PublishError>,
        process: Option<&mut Span>,
        log: &RequestLog<'_>,
    ) {
        if let Some(span) = process {
            span.set(attr::OUTCOME, why.outcome());
            span.fail(|| why.to_string());
        }
        if let Some(held_back) = self.warnings.admit(why.outcome()) {
            log.in_span(|| {
                warn!(
                    delivery_tag = delivery.delivery_tag,
                    cause = %why,
                    last_failure = last_failure.map(tracing::field::display),
                    held_back,
                    "rejecting a request without requeue"
                )
            });
        }
        let rejected = self
            .settlements
            .settle_unanswered(delivery, Unanswered::Reject)
            .await;
        log_settle_failure(rejected, log);
        self.metrics.settled(module.name(), why.outcome());
    }

    /// Publishes a reply and, with confirms, waits for the broker's
    /// confirm, publishing it again after a refusal or a missing confirm,
    /// up to [`REPLY_ATTEMPTS`] times. Without confirms it is published
    /// once: a reply not written in time may still go out later, and a
    /// second copy would then reach the caller too.
    async fn reply(
        &self,
        reply_to: &ShortString,
        body: &[u8],
        mut properties: BasicProperties,
        log: &RequestLog<'_>,
    ) -> Delivered {
        let mut backoff = Backoff::up_to(backoff::REPLY_MAX_WAIT);
        let attempts = if self.ack_mode.confirms() {
            REPLY_ATTEMPTS
        } else {
            1
        };
        let mut attempt = 1;
        loop {
            // Copied only while another attempt may need them.
            let this_attempt = if attempt < attempts {
                properties.clone()
            } else {
                std::mem::take(&mut properties)
            };
            let publish =
                amqp::publish_mandatory(&self.channel, reply_to.clone(), body, this_attempt);
            let failure = match tokio::time::timeout(CONFIRM_TIMEOUT, publish).await {
                Ok(Ok(Routed::Refused)) => PublishError::Refused,
                Ok(Ok(routed)) => return Delivered::Settled(routed),
                Ok(Err(err)) => err,
                Err(_) => PublishError::NoConfirm(CONFIRM_TIMEOUT),
            };
            if !self.channel.status().connected() {
                return Delivered::ChannelLost(failure);
            }
            if attempt == attempts {
                return Delivered::GaveUp(failure);
            }
            log.debug(
                || debug!(attempt, cause = %failure, "reply not delivered; publishing it again"),
            );
            tokio::time::sleep(backoff.next_wait()).await;
            attempt += 1;
        }
    }
}

/// The trace a request's `traceparent` names, if it names one that can
/// be read; one that cannot is ignored, as W3C asks.
fn continued_trace(properties: &BasicProperties) -> Option<TraceContext> {
    match wire::trace_parent(properties)? {
        Ok(parent) => Some(parent),
        Err(why) => {
            debug!(%why, "ignoring the request's traceparent, as if it had none");
            None
        }
    }
}

/// Warns, at most once an interval, that a reply came back because its
/// caller's queue is gone; its request is acked all the same. Outside the
/// request's span (without confirms the node learns of it later), the
/// reply's `correlation_id` names the request.
pub(crate) fn caller_gone(warnings: &Throttle, reply_to: &str, correlation_id: Option<&str>) {
    if let Some(held_back) = warnings.admit("caller-gone") {
        warn!(
            reply_to = %Escaped(reply_to),
            correlation_id = correlation_id.map(|id| tracing::field::display(Escaped(id))),
            held_back,
            "no queue named by reply_to (the caller is gone); dropping the reply and acking the request"
        );
    }
}

/// A nack or reject that fails means the channel is gone; the broker
/// will redeliver the request. The node warns once when it loses the
/// connection, so each request only notes it at debug level.
fn log_settle_failure(result: lapin::Result<bool>, log: &RequestLog<'_>) {
    if let Err(err) = result {
        log.debug(
            || debug!(cause = %err, "could not settle the request; the broker will redeliver it"),
        );
    }
}
