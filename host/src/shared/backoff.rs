//! The waits between attempts to reach the broker again, or to publish a
//! refused reply again: doubling from a first wait up to a longest one.
//! One policy for the node and the center; each use says only how long
//! its longest wait is.

use std::time::Duration;

/// The first wait before reconnecting.
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The node's longest wait: it has nobody waiting on it in person.
pub(crate) const NODE_MAX_WAIT: Duration = Duration::from_secs(5);
/// The center's longest wait: its calls are waiting, within their timeout.
pub(crate) const CENTER_MAX_WAIT: Duration = Duration::from_secs(2);
/// The longest wait before a node publishes a refused reply again: the
/// request holds one of the node's slots meanwhile.
pub(crate) const REPLY_MAX_WAIT: Duration = Duration::from_millis(400);

/// Waits that double at each failed attempt, up to a longest one.
#[derive(Debug)]
pub(crate) struct Backoff {
    upcoming: Duration,
    max: Duration,
}

impl Backoff {
    /// Waits from [`FIRST_WAIT`], doubling up to `max`.
    pub(crate) fn up_to(max: Duration) -> Self {
        Backoff {
            upcoming: FIRST_WAIT.min(max),
            max,
        }
    }

    /// The wait before the next attempt; the one after is twice as long.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.upcoming;
        self.upcoming = (wait * 2).min(self.max);
        wait
    }

    /// The wait that [`next_wait`](Self::next_wait) will give.
    pub(crate) fn upcoming(&self) -> Duration {
        self.upcoming
    }

    /// Back to the first wait, once the broker is reached and things go
    /// well again.
    pub(crate) fn reset(&mut self) {
        *self = Backoff::up_to(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_longest_wait_and_resets() {
        let mut backoff = Backoff::up_to(Duration::from_millis(500));
        let waits: Vec<u64> = (0..5)
            .map(|_| backoff.next_wait().as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), Duration::from_millis(100));
    }
}
