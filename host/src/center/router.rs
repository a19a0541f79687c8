//! The calls waiting on a session, by correlation id, and the task that
//! hands each reply to its call, and each returned request to its call
//! when the channel has no confirms to carry it.

use crate::shared::{amqp, lock::lock};
use futures_util::StreamExt as _;
use lapin::{
    Channel, Consumer,
    message::{BasicReturnMessage, Delivery},
};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::sync::oneshot;
use tracing::debug;

/// What ends a call's wait.
pub(super) enum Answer {
    /// Its reply.
    Reply(Box<Delivery>),
    /// The broker returned its request: no queue of that name. Handed over
    /// by whichever call's confirm carried the return, or by the router.
    Returned,
    /// No compute node has consumed the queue for the grace period.
    Abandoned,
}

/// Requests waiting for their answer, by correlation id.
pub(super) type Pending = Mutex<HashMap<String, oneshot::Sender<Answer>>>;

/// A call's entry in the pending map, removed when the call ends however
/// it ends (reply, timeout, or the caller dropping the future), so the map
/// never keeps entries for calls nobody waits on.
pub(super) struct Waiting<'a> {
    pending: &'a Pending,
    correlation_id: String,
}

impl<'a> Waiting<'a> {
    pub(super) fn register(
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

/// How often the router collects the requests the broker returned on a
/// channel without confirms. The client library keeps them until asked,
/// so this is how long a call to a queue that does not exist waits, at
/// most, beyond the round trip, to fail with `no-route`.
const RETURNS_POLL: Duration = Duration::from_millis(10);

/// Hands each reply to the call waiting for it. Replies nobody waits for
/// (late after a timeout, duplicated by a redelivery, or foreign) are
/// dropped. With `returns`, a channel without confirms, it also collects
/// the requests the broker returned and ends their calls. When the
/// consumer ends, the session is marked dead and the pending calls'
/// senders are dropped, so they fail with
/// [`CallError::ConnectionLost`](super::CallError::ConnectionLost) (and
/// are sent again if they may).
pub(super) async fn route_replies(
    mut replies: Consumer,
    returns: Option<Channel>,
    pending: Arc<Pending>,
    alive: Arc<AtomicBool>,
) {
    let mut poll = tokio::time::interval(RETURNS_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let delivery = tokio::select! {
            next = replies.next() => match next {
                Some(Ok(delivery)) => delivery,
                _ => break,
            },
            _ = poll.tick(), if returns.is_some() => {
                if let Some(channel) = &returns {
                    wake_all_returned(channel, &pending).await;
                }
                continue;
            }
        };
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

/// Ends the wait of every call whose request the broker returned on
/// `channel`, a channel without confirms.
async fn wake_all_returned(channel: &Channel, pending: &Pending) {
    for message in &amqp::take_returned(channel).await {
        if let Some(id) = returned_id(message) {
            wake_returned(pending, id);
        }
    }
}

/// The correlation id of a request the broker returned.
pub(super) fn returned_id(returned: &BasicReturnMessage) -> Option<&str> {
    returned
        .delivery
        .properties
        .correlation_id()
        .as_ref()
        .map(|id| id.as_str())
}

/// Ends the wait of the call `correlation_id`, whose request the broker
/// returned: no queue took it.
pub(super) fn wake_returned(pending: &Pending, correlation_id: &str) {
    if let Some(call) = lock(pending).remove(correlation_id) {
        let _ = call.send(Answer::Returned);
    }
}
