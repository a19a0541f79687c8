//! Why a call produced no result, and why a center could not start.

use super::Origin;
use crate::shared::{amqp, amqp::PublishError, wire};
use std::time::Duration;

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
    /// No compute node has consumed the queue for the grace period
    /// ([`CenterOptions::no_consumer_grace`](super::CenterOptions::no_consumer_grace)):
    /// the request may wait there, but this call no longer does.
    #[error("no-consumer: no compute node has consumed queue {queue:?} for {} s; start one", grace.as_secs_f64())]
    NoConsumer {
        /// The queue.
        queue: String,
        /// How long it had no consumer before calls failed.
        grace: Duration,
    },
    /// The request could not be published.
    #[error("publish-failed: could not publish the request: {0}")]
    Publish(#[source] PublishError),
    /// The request is larger than [`CenterOptions::max_body`](super::CenterOptions::max_body); it was not
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
    /// A batch call's reply is not a batch reply: the node answered with
    /// something this center cannot read (a node that does not know
    /// batches took the whole batch for one input, say).
    #[error("bad-reply: {0}")]
    BadReply(String),
    /// The connection closed before the reply arrived, and the call's
    /// retries (or its time) ran out.
    #[error("connection-lost: the connection to RabbitMQ was lost before the reply arrived")]
    ConnectionLost,
}

impl CallError {
    /// A short name for the kind of failure: the `x-error` kind of a remote
    /// error, or `timeout`, `no-route`, `no-consumer`, `publish-failed`, `refused`,
    /// `bad-reply`, `connection-lost`.
    pub fn kind(&self) -> &str {
        match self {
            CallError::Timeout(_) => "timeout",
            CallError::Remote { kind, .. } => kind.as_str(),
            CallError::NoRoute(_) => "no-route",
            CallError::NoConsumer { .. } => "no-consumer",
            CallError::Publish(_) => "publish-failed",
            CallError::TooLarge { .. } => "too-large",
            CallError::Refused => "refused",
            CallError::BadReply(_) => "bad-reply",
            CallError::ConnectionLost => "connection-lost",
        }
    }

    /// Whether the request may never have reached a compute node because
    /// of the connection, so that sending it again could succeed.
    pub(super) fn lost_in_transit(&self) -> bool {
        matches!(
            self,
            CallError::ConnectionLost | CallError::Publish(_) | CallError::Refused
        )
    }
}

/// Why [`Center::consumer_count`](super::Center::consumer_count) could
/// not tell.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerCountError {
    /// The broker refused, or the connection failed.
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    /// The broker did not answer in time.
    #[error("the broker did not answer within {:?}", amqp::ANSWER_TIMEOUT)]
    NoAnswer,
}

/// Why a [`Center`](super::Center) could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The broker could not be reached or would not set up a reply queue.
    #[error(transparent)]
    Connect(#[from] amqp::ConnectError),
    /// The request queue's name is not a valid AMQP queue name.
    #[error(transparent)]
    QueueName(#[from] amqp::QueueNameError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a call sends again after a lost connection: only what may
    /// never have reached a node. An answer of any kind, a missing queue
    /// and a request too large are final.
    #[test]
    fn only_what_may_not_have_arrived_is_sent_again() {
        let retried = [
            CallError::ConnectionLost,
            CallError::Refused,
            CallError::Publish(PublishError::NoConfirm(Duration::from_secs(1))),
        ];
        for error in &retried {
            assert!(error.lost_in_transit(), "{error}");
        }
        let final_ = [
            CallError::Timeout(Duration::from_secs(1)),
            CallError::NoRoute("q".into()),
            CallError::NoConsumer {
                queue: "q".into(),
                grace: Duration::from_secs(1),
            },
            CallError::BadReply("not a batch".into()),
            CallError::TooLarge { size: 2, limit: 1 },
            CallError::Remote {
                kind: "bad-request".into(),
                message: String::new(),
                origin: Origin::default(),
            },
        ];
        for error in &final_ {
            assert!(!error.lost_in_transit(), "{error}");
        }
    }
}
