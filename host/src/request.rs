//! What happens to one request: compute, reply, then ack.
//!
//! A request is only acked once the broker has confirmed its reply, so a
//! reply lost on the way out leaves the request to be redelivered. A
//! request that cannot be answered at all (no `reply_to`) is rejected
//! without requeue: redelivering it could never help, and in the article
//! this project grew from it crashed the node at every redelivery. Replies
//! are published `mandatory`: a reply whose `reply_to` queue is gone (the
//! caller left) comes back, is logged, and its request is acked, since
//! computing it again cannot reach anyone either.

use crate::{
    amqp::{self, Routed},
    metrics::RequestMetrics,
    reload::LiveModule,
    sandbox::ComputeModule,
    wire,
};
use lapin::{
    Channel,
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions},
    types::ShortString,
};
use std::{sync::Arc, time::Instant};
use tracing::{Instrument as _, debug, info_span, warn};

/// Why a reply did not reach the broker.
#[derive(Debug, thiserror::Error)]
enum ReplyError {
    #[error("publishing failed: {0}")]
    Publish(#[from] lapin::Error),
    #[error("the broker refused the reply (negative confirm)")]
    Refused,
}

/// Handles the requests of one node. Shared by all request tasks.
pub(crate) struct Handler {
    /// The module version new requests run on; swapped by the reloader.
    pub(crate) live: Arc<LiveModule>,
    /// The channel the requests arrive on; replies go out on it too, so
    /// that a confirm and the matching ack travel on one channel.
    pub(crate) channel: Channel,
    /// Where each request's outcome and timings are counted.
    pub(crate) metrics: Arc<RequestMetrics>,
}

impl Handler {
    /// Answers `delivery`, then acks, nacks or rejects it. Never fails:
    /// every outcome is logged here, in a span that names the request's
    /// correlation id (and so does anything the guest prints).
    pub(crate) async fn handle(&self, delivery: Delivery) {
        let correlation_id = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map_or("", ShortString::as_str);
        // This request runs on this version to the end, even if another
        // is swapped in meanwhile.
        let module = self.live.current();
        let span = info_span!("request", %correlation_id, function = module.name());
        let _in_flight = self.metrics.start();
        self.answer(delivery, module).instrument(span).await
    }

    async fn answer(&self, delivery: Delivery, module: Arc<ComputeModule>) {
        let Some(reply_to) = delivery.properties.reply_to() else {
            warn!(
                delivery_tag = delivery.delivery_tag,
                "request has no reply_to, so nobody can get an answer; rejecting it without requeue"
            );
            let rejected = delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await;
            log_ack_failure(rejected);
            self.metrics.settled(module.name(), "rejected");
            return;
        };

        let started = Instant::now();
        let outcome = module.compute(&delivery.data).await;
        let guest_time = started.elapsed();
        self.metrics.guest_call(module.name(), guest_time);
        let (body, error) = match outcome {
            Ok(body) => (body, None),
            Err(err) => (err.to_string().into_bytes(), Some(err.kind())),
        };
        debug!(
            reply_to = %reply_to,
            function = module.name(),
            module = module.digest(),
            error = error.map(|kind| kind.as_str()),
            elapsed_us = guest_time.as_micros() as u64,
            redelivered = delivery.redelivered,
            "request"
        );

        let properties =
            wire::reply_properties(&delivery.properties, module.name(), module.digest(), error);
        match self.reply(reply_to.clone(), &body, properties).await {
            Ok(routed) => {
                if routed == Routed::Returned {
                    warn!(
                        %reply_to,
                        "no queue named by reply_to (the caller is gone); dropping the reply and acking the request"
                    );
                }
                let acked = delivery.acker.ack(BasicAckOptions::default()).await;
                log_ack_failure(acked);
                let outcome = error.map_or("ok", |kind| kind.as_str());
                self.metrics.settled(module.name(), outcome);
                self.metrics.answered(module.name(), started.elapsed());
            }
            Err(err) => {
                if self.channel.status().connected() {
                    warn!(cause = %err, "reply not delivered; requeueing the request");
                } else {
                    // The node warns once about the lost connection.
                    debug!(cause = %err, "reply not delivered: the connection is gone");
                }
                let nacked = delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await;
                log_ack_failure(nacked);
                self.metrics.settled(module.name(), "requeued");
            }
        }
    }

    /// Publishes a reply and waits for the broker's confirm: queued, or
    /// returned because the caller's queue is gone.
    async fn reply(
        &self,
        reply_to: ShortString,
        body: &[u8],
        properties: lapin::BasicProperties,
    ) -> Result<Routed, ReplyError> {
        match amqp::publish_mandatory(&self.channel, reply_to, body, properties).await? {
            Routed::Refused => Err(ReplyError::Refused),
            routed => Ok(routed),
        }
    }
}

/// An ack, nack or reject that fails means the channel is gone; the broker
/// will redeliver the request. The node warns once when it loses the
/// connection, so each request only notes it at debug level.
fn log_ack_failure(result: lapin::Result<bool>) {
    if let Err(err) = result {
        debug!(cause = %err, "could not settle the request; the broker will redeliver it");
    }
}
