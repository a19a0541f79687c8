//! Sharing the pool's instances fairly between the functions a sandbox
//! serves.
//!
//! A plain semaphore is first come, first served: one function flooded
//! with slow requests takes every instance, and the others' requests wait
//! until its requests end (measured on a node of two functions with
//! `--prefetch 32`, one flooded with sleepers stopped after 2 s: the
//! other's p99 went from 5.8 ms to 1.95 s). Instances cannot be taken
//! back from a running request, so fairness has to be kept when they are
//! handed out:
//!
//! - Each of the n functions served has a part of the pool,
//!   `capacity / n`, which it may always use.
//! - Beyond its part a function may borrow what the others leave idle,
//!   but never the last half of anyone's idle part: a function that was
//!   idle finds at least half its part free at once. What is kept so is
//!   at most half of the pool beyond the borrower's own part, so that
//!   with more functions than instances a busy one still has half the
//!   pool.
//! - An instance given back goes first to a function waiting below its
//!   part (the one that holds the fewest), then to a borrower.
//!
//! A node of one function has the whole pool as its part, so this is a
//! plain semaphore there.

use crate::shared::lock::lock;
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};
use tokio::sync::oneshot;

/// The instances of one pool, shared between functions by name.
#[derive(Clone)]
pub(super) struct FairPool {
    state: Arc<Mutex<State>>,
}

/// One function's claim on a [`FairPool`]. The function counts as served
/// (and has a part of the pool) while a claim of it exists.
pub(super) struct Claim {
    state: Arc<Mutex<State>>,
    function: Arc<str>,
}

/// One instance of the pool, held by a request of a function until
/// dropped.
pub(super) struct Instance {
    /// `None` once disarmed: an instance that never reached its request
    /// is given back by whoever disarmed it.
    state: Option<Arc<Mutex<State>>>,
    function: Arc<str>,
}

struct State {
    capacity: u32,
    free: u32,
    functions: HashMap<Arc<str>, Share>,
}

#[derive(Default)]
struct Share {
    /// The function's claims alive.
    claims: usize,
    /// Instances its requests hold.
    held: u32,
    /// Its requests waiting for an instance, in order of arrival.
    waiting: VecDeque<oneshot::Sender<Instance>>,
}

impl FairPool {
    /// A pool of `capacity` instances (at least one).
    pub(super) fn new(capacity: u32) -> Self {
        let capacity = capacity.max(1);
        FairPool {
            state: Arc::new(Mutex::new(State {
                capacity,
                free: capacity,
                functions: HashMap::new(),
            })),
        }
    }

    /// A claim for function `function`: the same part of the pool as
    /// every other claim of that name.
    pub(super) fn claim(&self, function: &str) -> Claim {
        let function: Arc<str> = function.into();
        let mut state = lock(&self.state);
        state.share(&function).claims += 1;
        // One function more changes every part, and what is kept for
        // the others: a waiting request may be able to go now.
        state.hand_out(&self.state);
        drop(state);
        Claim {
            state: self.state.clone(),
            function,
        }
    }
}

impl Claim {
    /// An instance for one request of the function, once the pool can
    /// give it one fairly.
    pub(super) async fn instance(&self) -> Instance {
        let granted = {
            let mut state = lock(&self.state);
            let queued = state.share(&self.function).waiting.len();
            if queued == 0 && state.may_take(&self.function) {
                state.take(&self.function);
                return Instance {
                    state: Some(self.state.clone()),
                    function: self.function.clone(),
                };
            }
            let (grant, granted) = oneshot::channel();
            state.share(&self.function).waiting.push_back(grant);
            granted
        };
        // The sender lives in the pool's state, which this claim keeps
        // alive: it is never dropped unanswered.
        granted
            .await
            .expect("a waiting request is always answered by the pool")
    }
}

impl Clone for Claim {
    fn clone(&self) -> Self {
        lock(&self.state).share(&self.function).claims += 1;
        Claim {
            state: self.state.clone(),
            function: self.function.clone(),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        state.share(&self.function).claims -= 1;
        // One function fewer makes everyone's part larger. A clone
        // dropped (a pinned request's module) changes nothing.
        if state.forget_if_idle(&self.function) {
            state.hand_out(&self.state);
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(pool) = self.state.take() {
            let mut state = lock(&pool);
            state.give_back(&self.function);
            state.hand_out(&pool);
        }
    }
}

impl State {
    fn share(&mut self, function: &Arc<str>) -> &mut Share {
        self.functions.entry(function.clone()).or_default()
    }

    /// Each function's part: an equal share of the pool, at least one.
    fn part(&self) -> u32 {
        let functions = u32::try_from(self.functions.len()).unwrap_or(u32::MAX);
        (self.capacity / functions.max(1)).max(1)
    }

    /// Instances kept free for the functions other than `function`: half
    /// of each one's idle part, rounded up, and at most half of the pool
    /// beyond `function`'s own part.
    fn kept_for_others(&self, function: &str) -> u32 {
        let part = self.part();
        let idle_halves: u32 = self
            .functions
            .iter()
            .filter(|(name, _)| ***name != *function)
            .map(|(_, share)| part.saturating_sub(share.held).div_ceil(2))
            .sum();
        idle_halves.min(self.capacity.saturating_sub(part) / 2)
    }

    fn may_take(&self, function: &str) -> bool {
        let held = self.functions.get(function).map_or(0, |share| share.held);
        self.free > 0 && (held < self.part() || self.free > self.kept_for_others(function))
    }

    fn take(&mut self, function: &Arc<str>) {
        self.free -= 1;
        self.share(function).held += 1;
    }

    fn give_back(&mut self, function: &Arc<str>) {
        self.free += 1;
        self.share(function).held -= 1;
        let _ = self.forget_if_idle(function);
    }

    /// Forgets `function` once nothing claims, holds or waits for an
    /// instance of it; says whether it did.
    fn forget_if_idle(&mut self, function: &str) -> bool {
        let idle = self
            .functions
            .get(function)
            .is_some_and(|share| share.claims == 0 && share.held == 0 && share.waiting.is_empty());
        if idle {
            self.functions.remove(function);
        }
        idle
    }

    /// Gives free instances to waiting requests: first to functions below
    /// their part, fewest held first, then to those that may borrow.
    fn hand_out(&mut self, pool: &Arc<Mutex<State>>) {
        while self.free > 0 {
            let part = self.part();
            let next = self
                .functions
                .iter()
                .filter(|(_, share)| !share.waiting.is_empty())
                .filter(|(name, _)| self.may_take(name))
                .min_by_key(|(_, share)| (share.held >= part, share.held))
                .map(|(name, _)| name.clone());
            let Some(function) = next else { return };
            let grant = self
                .share(&function)
                .waiting
                .pop_front()
                .expect("chosen for having a request waiting");
            self.take(&function);
            let instance = Instance {
                state: Some(pool.clone()),
                function: function.clone(),
            };
            // A request that stopped waiting (its task was dropped) gives
            // its instance back here, under the lock already held.
            if let Err(mut unwanted) = grant.send(instance) {
                unwanted.state = None;
                self.give_back(&function);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt as _;

    fn now(claim: &Claim) -> Option<Instance> {
        claim.instance().now_or_never()
    }

    /// A flooded function keeps half the other's part free, and the other
    /// gets every instance given back until it has its part.
    #[test]
    fn a_flooded_function_leaves_room_for_the_other() {
        let pool = FairPool::new(8);
        let (busy, quiet) = (pool.claim("busy"), pool.claim("quiet"));
        let mut held: Vec<Instance> = std::iter::from_fn(|| now(&busy)).collect();
        assert_eq!(held.len(), 6, "its part of 4, and 2 of the other's 4");

        let quiet_now: Vec<Instance> = std::iter::from_fn(|| now(&quiet)).collect();
        assert_eq!(quiet_now.len(), 2, "half its part is free at once");

        let mut busy_waits = std::pin::pin!(busy.instance());
        assert!(busy_waits.as_mut().now_or_never().is_none());
        let mut quiet_waits = std::pin::pin!(quiet.instance());
        assert!(quiet_waits.as_mut().now_or_never().is_none());
        drop(held.pop());
        assert!(
            quiet_waits.now_or_never().is_some(),
            "a returned instance goes to the function below its part"
        );
        assert!(busy_waits.now_or_never().is_none());
    }

    /// With more functions than instances, a busy one still has half the
    /// pool, and the idle ones the other half.
    #[test]
    fn many_idle_functions_leave_a_busy_one_half_the_pool() {
        let pool = FairPool::new(8);
        let idle: Vec<Claim> = (0..20).map(|n| pool.claim(&format!("idle{n}"))).collect();
        let busy = pool.claim("busy");
        let held: Vec<Instance> = std::iter::from_fn(|| now(&busy)).collect();
        assert_eq!(held.len(), 5, "its part of 1, and 4 of the other 7");
        assert!(now(&idle[0]).is_some(), "an idle function finds one free");
    }

    /// A function alone has the whole pool.
    #[test]
    fn a_function_alone_has_every_instance() {
        let pool = FairPool::new(5);
        let only = pool.claim("only");
        let held: Vec<Instance> = std::iter::from_fn(|| now(&only)).collect();
        assert_eq!(held.len(), 5);
        drop(held);
        drop(only);
        let later = pool.claim("later");
        let held: Vec<Instance> = std::iter::from_fn(|| now(&later)).collect();
        assert_eq!(held.len(), 5, "what the first function held came back");
    }

    /// A request that stops waiting takes nothing with it.
    #[test]
    fn a_request_that_stops_waiting_gives_its_instance_back() {
        let pool = FairPool::new(1);
        let claim = pool.claim("f");
        let held = now(&claim).unwrap();
        let mut gone = Box::pin(claim.instance());
        assert!(gone.as_mut().now_or_never().is_none());
        drop(gone);
        drop(held);
        assert!(now(&claim).is_some(), "the pool has its instance back");
    }
}
