//! When a node acks a request: after the broker confirmed its reply, or as
//! soon as the reply is written to the connection.
//!
//! The two modes are those of RabbitMQ's shovel. What they guarantee here
//! follows from three facts:
//!
//! - AMQP orders a channel's methods. The node writes a request's reply to
//!   its channel before the request's ack, so the broker routes the reply
//!   before it processes the ack. A connection lost in between loses the
//!   ack too, and the request is delivered again.
//! - The center's reply queue is exclusive to its connection and not
//!   durable. Whatever loses that connection (a broker crash or restart, a
//!   network fault) loses the reply queue in either mode, and the center
//!   sends every call still waiting again on its next connection.
//! - A reply is never persistent, so a confirm says the broker took the
//!   reply, not that it is on disk.
//!
//! So `on-publish` loses nothing that `on-confirm` keeps, except in these
//! cases:
//!
//! - **The broker refuses the reply.** Examples are a reply queue with
//!   `x-max-length` and `x-overflow: reject-publish`, or an error in the
//!   queue's process. `on-confirm` publishes the reply again, then rejects
//!   the request, so it is counted as `undeliverable` and dead-lettered.
//!   `on-publish` has already acked the request: the reply is gone and the
//!   request too. In both modes the caller gets no answer.
//! - **The reply goes to another node of a cluster, and the node's own
//!   broker dies after it processed the ack but before the reply reached
//!   the reply queue's node.** RabbitMQ's nodes pass messages to each
//!   other on separate links, so the ack can get to the request queue
//!   while the reply is lost. `on-confirm` acks only after the reply queue
//!   has the reply. Such a caller keeps its reply queue only if the queue
//!   is not on the broker that died, for example a durable or quorum reply
//!   queue of a Java or Python client. The center's exclusive reply queue
//!   is always on the broker it is connected to.
//!
//! Hence the default: `on-confirm` for quorum queues, where the operator
//! has chosen to pay for durability, and `on-publish` for classic queues.
//! There, it saves the broker and the node a confirm for every call. See
//! [`AckMode::default_for`].

use crate::shared::queues::QueueType;

/// When the node acks a request, relative to its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AckMode {
    /// Ack once the broker has confirmed the reply. A refused reply is
    /// published again, then its request rejected (dead-lettered).
    OnConfirm,
    /// Ack as soon as the reply is written to the channel, without
    /// publisher confirms on the node's channels.
    OnPublish,
}

impl AckMode {
    /// The mode for a node whose queues are of `queue_type`, when none is
    /// chosen.
    pub fn default_for(queue_type: &QueueType) -> AckMode {
        match queue_type {
            QueueType::Classic | QueueType::Transient => AckMode::OnPublish,
            QueueType::Quorum { .. } => AckMode::OnConfirm,
        }
    }

    /// Whether the node's channels ask the broker for publisher confirms.
    pub(crate) fn confirms(self) -> bool {
        self == AckMode::OnConfirm
    }

    /// The name the `--ack-mode` option takes, as logs print it.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::OnConfirm => "on-confirm",
            AckMode::OnPublish => "on-publish",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_queues_ack_on_confirm_and_classic_ones_on_publish() {
        assert_eq!(
            AckMode::default_for(&QueueType::Classic),
            AckMode::OnPublish
        );
        let quorum = QueueType::Quorum {
            delivery_limit: 5,
            dead_letter_queue: None,
        };
        assert_eq!(AckMode::default_for(&quorum), AckMode::OnConfirm);
    }
}
