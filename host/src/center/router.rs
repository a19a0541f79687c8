//! The calls waiting on a session, by correlation id, and the task that
//! hands each reply to its call.

use crate::lock::lock;
use futures_util::StreamExt as _;
use lapin::{Consumer, message::Delivery};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};
use tokio::sync::oneshot;
use tracing::debug;

/// What ends a call's wait.
pub(super) enum Answer {
    /// Its reply.
    Reply(Box<Delivery>),
    /// The broker returned its request: no queue of that name. Handed over
    /// by whichever call's confirm carried the return.
    Returned,
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

/// Hands each reply to the call waiting for it. Replies nobody waits for
/// (late after a timeout, duplicated by a redelivery, or foreign) are
/// dropped. When the consumer ends, the session is marked dead and the
/// pending calls' senders are dropped, so they fail with
/// [`CallError::ConnectionLost`](super::CallError::ConnectionLost) (and are sent again if they may).
pub(super) async fn route_replies(
    mut replies: Consumer,
    pending: Arc<Pending>,
    alive: Arc<AtomicBool>,
) {
    while let Some(Ok(delivery)) = replies.next().await {
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
