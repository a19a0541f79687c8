//! Noticing that no compute node consumes the request queue any more.
//!
//! A request waits in its queue until a node takes it. When the last node
//! stops, every call would wait out its whole timeout, wave after wave,
//! and nothing would say why (measured: 2,671 calls timed out one
//! `--timeout 8` at a time, 86 s). So while calls wait, the center reads
//! the queue's consumer count every [`POLL`]. Once the queue has had no
//! consumer for the grace period
//! ([`CenterOptions::no_consumer_grace`](super::CenterOptions::no_consumer_grace)),
//! it says so once, fails the waiting calls with `no-consumer`, and fails
//! new calls at once, until a node consumes the queue again.

use super::Shared;
use std::{
    sync::{Weak, atomic::Ordering},
    time::Duration,
};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

/// How often the consumer count is read while calls wait.
pub(super) const POLL: Duration = Duration::from_secs(1);

/// Watches the queue of the center `shared` until the center is closed or
/// dropped.
pub(super) async fn watch_consumers(shared: Weak<Shared>, grace: Duration) {
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut none_since: Option<Instant> = None;
    loop {
        poll.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        let session = shared.session.load_full();
        let abandoned = shared.abandoned.load(Ordering::Acquire);
        if !abandoned && !session.has_waiting_calls() {
            none_since = None;
            continue;
        }
        // A connection in trouble is the reconnecting calls' business; a
        // queue that is gone has no consumer.
        let Ok(consumers) = session.consumer_count(shared.queue.clone()).await else {
            continue;
        };
        if consumers.unwrap_or(0) > 0 {
            none_since = None;
            if shared.abandoned.swap(false, Ordering::AcqRel) {
                info!(queue = %shared.queue, "a compute node consumes the queue again");
            }
            continue;
        }
        let since = *none_since.get_or_insert_with(Instant::now);
        if since.elapsed() < grace {
            continue;
        }
        if !shared.abandoned.swap(true, Ordering::AcqRel) {
            warn!(
                queue = %shared.queue,
                grace_s = grace.as_secs_f64(),
                "no compute node consumes the queue: failing the calls waiting on it, and new calls at once, until one does"
            );
        }
        session.abandon_waiting_calls();
    }
}
