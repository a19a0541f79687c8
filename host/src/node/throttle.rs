//! A warning that can repeat once per request (a caller gone, a reply
//! refused) is logged at most once per interval for each cause, with the
//! count of the ones held back, so one client cannot flood the node's log
//! nor hide another cause behind its own.

use crate::shared::lock::lock;
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// How often a throttled warning may be logged, for each cause.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// Lets a repeated event through at most once per interval for each
/// cause.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    causes: Mutex<HashMap<&'static str, State>>,
}

#[derive(Debug)]
struct State {
    last: Instant,
    held_back: u64,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Throttle {
            every,
            causes: Mutex::default(),
        }
    }

    /// `Some(n)` when an event of `cause` may be logged, `n` being how many
    /// of that cause were held back since the last one; `None` when it is
    /// held back. Causes are a fixed set of names, so the map stays small.
    pub(crate) fn admit(&self, cause: &'static str) -> Option<u64> {
        let mut causes = lock(&self.causes);
        let now = Instant::now();
        match causes.get_mut(cause) {
            Some(state) if now - state.last < self.every => {
                state.held_back += 1;
                None
            }
            Some(state) => {
                state.last = now;
                Some(std::mem::take(&mut state.held_back))
            }
            None => {
                causes.insert(
                    cause,
                    State {
                        last: now,
                        held_back: 0,
                    },
                );
                Some(0)
            }
        }
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
    fn lets_one_through_per_interval_and_cause_and_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.admit("a"), Some(0));
        assert_eq!(throttle.admit("a"), None);
        assert_eq!(throttle.admit("b"), Some(0));
        assert_eq!(throttle.admit("a"), None);
        let open = Throttle::new(Duration::ZERO);
        assert_eq!(open.admit("a"), Some(0));
        assert_eq!(open.admit("a"), Some(0));
    }
}
