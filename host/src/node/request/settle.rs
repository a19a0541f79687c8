//! Settling a channel's requests with the broker: acks, one for many, and
//! rejects and requeues, one by one.
//!
//! A request answered is not acked by its own task: it is marked
//! answered here, and the consumer's loop, woken, acks every request
//! answered since its last look with one `basic.ack` that has `multiple`
//! set, up to the first request still in flight. Each ack costs the node
//! a method frame and its write, and the broker a method to process.
//!
//! RabbitMQ's `multiple` settles every unacked delivery of the channel up
//! to its tag, so it never reaches past a request in flight: that one's
//! reply may not be written yet, or it may yet be rejected. A request
//! answered past one in flight is acked on its own, at the same time, so
//! a slow request holds back no other's ack: unacked requests count
//! against the prefetch, and holding them would stall the function. A
//! request rejected or requeued is settled by its own task, which writes
//! its method before it leaves the requests here, so no multiple ack
//! queued after can reach it first; one that reaches it later passes it,
//! since the broker no longer holds it unacked.
//!
//! Every method goes straight out on the channel, not through the
//! delivery's [`Acker`](lapin::Acker): lapin sends an acker's method
//! through its internal task, which spawns one more task to write it.
//! Acks are queued, not awaited: lapin writes a channel's methods in the
//! order they were queued, and an ack that fails means the channel is
//! gone, which its consumer finds out, and the broker redelivers. Only a
//! stopping consumer waits for its last acks to be written, before its
//! channel closes.

use crate::shared::lock::lock;
use futures_util::FutureExt as _;
use lapin::{
    Channel,
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions},
    types::DeliveryTag,
};
use std::{collections::VecDeque, future::Future, sync::Mutex};
use tokio::sync::Notify;

/// The requests of one channel, from their delivery until they are
/// settled.
pub(crate) struct Settlements {
    channel: Channel,
    /// Requests delivered and not yet settled, in the order of their
    /// tags, and whether each is answered.
    requests: Mutex<VecDeque<(DeliveryTag, State)>>,
    /// Woken when a request is answered.
    answered: Notify,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Being answered: no ack may reach it.
    InFlight,
    /// Answered: to be acked.
    Answered,
}

/// The acks due: one with `multiple` up to a tag, and single ones.
#[derive(Debug, Default, PartialEq, Eq)]
struct Due {
    up_to: Option<DeliveryTag>,
    each: Vec<DeliveryTag>,
}

/// How a request that cannot be answered is settled.
#[derive(Clone, Copy, Debug)]
pub(super) enum Unanswered {
    /// Back to the queue, for this node or another to answer: the channel
    /// its reply should have gone out on is gone.
    Requeue,
    /// Never to be delivered again: a dead-letter exchange on the queue
    /// catches it.
    Reject,
}

impl Settlements {
    /// The requests delivered on `channel`, none yet.
    pub(crate) fn new(channel: Channel) -> Self {
        Settlements {
            channel,
            requests: Mutex::default(),
            answered: Notify::new(),
        }
    }

    /// A request was delivered: until it is settled, no multiple ack
    /// reaches it. Tags come in increasing order on a channel.
    pub(crate) fn delivered(&self, tag: DeliveryTag) {
        lock(&self.requests).push_back((tag, State::InFlight));
    }

    /// The request's reply is out: the consumer's loop acks it.
    pub(super) fn answered(&self, tag: DeliveryTag) {
        let mut requests = lock(&self.requests);
        if let Some(at) = position(&requests, tag) {
            requests[at].1 = State::Answered;
        }
        drop(requests);
        self.answered.notify_one();
    }

    /// Rejects or requeues `delivery`, once its method is written.
    /// `Ok(false)` when it could not be settled any more (lapin poisoned
    /// its acker: its channel failed): the broker will redeliver it.
    pub(super) async fn settle_unanswered(
        &self,
        delivery: &Delivery,
        how: Unanswered,
    ) -> lapin::Result<bool> {
        if !delivery.acker.usable() {
            return Ok(false);
        }
        let tag = delivery.delivery_tag;
        let settled = match how {
            Unanswered::Requeue => {
                let options = BasicNackOptions {
                    requeue: true,
                    multiple: false,
                };
                self.channel.basic_nack(tag, options).await
            }
            Unanswered::Reject => {
                let options = BasicRejectOptions { requeue: false };
                self.channel.basic_reject(tag, options).await
            }
        };
        let mut requests = lock(&self.requests);
        if let Some(at) = position(&requests, tag) {
            requests.remove(at);
        }
        settled.map(|()| true)
    }

    /// Resolves when a request is answered, unless one already was since
    /// this last resolved.
    pub(crate) async fn answered_any(&self) {
        self.answered.notified().await
    }

    /// Queues the acks due now, without waiting for them to be written.
    /// Fails at once when the channel is closed.
    pub(crate) fn ack_answered(&self) -> lapin::Result<()> {
        for ack in self.acks_due() {
            // lapin queues the method when the call is first polled; the
            // rest of the future only waits for its write.
            if let Some(Err(err)) = ack.now_or_never() {
                return Err(err);
            }
        }
        Ok(())
    }

    /// Sends the acks due now and waits until they are written: what a
    /// stopping consumer does before its channel closes.
    pub(crate) async fn ack_answered_written(&self) -> lapin::Result<()> {
        // Each is queued in its first poll, all in order, before any is
        // waited for.
        futures_util::future::try_join_all(self.acks_due()).await?;
        Ok(())
    }

    fn acks_due(&self) -> impl Iterator<Item = impl Future<Output = lapin::Result<()>> + '_> {
        let Due { up_to, each } = due(&mut lock(&self.requests));
        let multiple = up_to.map(|tag| (tag, true));
        let single = each.into_iter().map(|tag| (tag, false));
        multiple
            .into_iter()
            .chain(single)
            .map(|(tag, multiple)| self.channel.basic_ack(tag, BasicAckOptions { multiple }))
    }
}

/// Where request `tag` is in `requests`, if it is still there.
fn position(requests: &VecDeque<(DeliveryTag, State)>, tag: DeliveryTag) -> Option<usize> {
    requests.binary_search_by_key(&tag, |(tag, _)| *tag).ok()
}

/// Takes the acks due now out of `requests`: a multiple ack up to the last
/// request answered before the first in flight, and each request
/// answered past that one.
fn due(requests: &mut VecDeque<(DeliveryTag, State)>) -> Due {
    let mut due = Due::default();
    while let Some(&(tag, State::Answered)) = requests.front() {
        due.up_to = Some(tag);
        requests.pop_front();
    }
    requests.retain(|&(tag, state)| {
        let answered = state == State::Answered;
        if answered {
            due.each.push(tag);
        }
        !answered
    });
    due
}

#[cfg(test)]
mod tests {
    use super::{Due, State, due};
    use std::collections::VecDeque;

    /// Requests with the tags and states given.
    fn requests(requests: &[(u64, State)]) -> VecDeque<(u64, State)> {
        requests.iter().copied().collect()
    }

    /// Requests answered in order are acked with one multiple ack.
    #[test]
    fn requests_answered_in_order_take_one_ack() {
        use State::*;
        let mut requests = requests(&[(1, Answered), (2, Answered), (3, Answered)]);
        let due = due(&mut requests);
        assert_eq!(
            due,
            Due {
                up_to: Some(3),
                each: vec![]
            }
        );
        assert!(requests.is_empty());
    }

    /// A multiple ack stops before the first request in flight; those
    /// answered past it are acked one by one, not held back.
    #[test]
    fn no_ack_reaches_a_request_in_flight() {
        use State::*;
        let mut requests = requests(&[(1, Answered), (2, InFlight), (3, Answered), (5, Answered)]);
        let due = due(&mut requests);
        assert_eq!(
            due,
            Due {
                up_to: Some(1),
                each: vec![3, 5]
            }
        );
        assert_eq!(Vec::from(requests), vec![(2, InFlight)]);
    }

    /// A request rejected by its task (tag 2, gone from the requests) is
    /// passed by the multiple ack of those answered around it.
    #[test]
    fn a_rejected_request_is_passed_not_acked() {
        use State::*;
        let mut requests = requests(&[(1, InFlight), (3, Answered)]);
        let first = due(&mut requests);
        assert_eq!(
            first,
            Due {
                up_to: None,
                each: vec![3]
            }
        );
        requests[0].1 = Answered;
        requests.push_back((4, Answered));
        let then = due(&mut requests);
        assert_eq!(
            then,
            Due {
                up_to: Some(4),
                each: vec![]
            }
        );
        assert!(requests.is_empty(), "{requests:?}");
    }

    /// With nothing answered, nothing is acked.
    #[test]
    fn nothing_answered_nothing_acked() {
        let mut requests = requests(&[(1, State::InFlight), (2, State::InFlight)]);
        assert_eq!(due(&mut requests), Due::default());
        assert_eq!(requests.len(), 2);
    }
}
