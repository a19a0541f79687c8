//! A warning that can repeat once per request (a caller gone, a reply
//! refused) is logged at most once per interval, with the count of the
//! ones held back, so one client cannot flood the node's log.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// How often a throttled warning may be logged.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// Lets a repeated event through at most once per interval.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Throttle {
            every,
            state: Mutex::default(),
        }
    }

    /// `Some(n)` when this event may be logged, `n` being how many were
    /// held back since the last one; `None` when it is held back.
    pub(crate) fn admit(&self) -> Option<u64> {
        // Only counters are changed under the lock, and nothing there
        // panics, so a poisoned lock still holds consistent data.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if state.last.is_some_and(|last| now - last < self.every) {
            state.held_back += 1;
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.held_back))
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(WARN_EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_one_through_per_interval_and_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.admit(), Some(0));
        assert_eq!(throttle.admit(), None);
        assert_eq!(throttle.admit(), None);
        let open = Throttle::new(Duration::ZERO);
        assert_eq!(open.admit(), Some(0));
        assert_eq!(open.admit(), Some(0));
    }
}
