//! Calls kept going through a center in the background of a test, so the
//! test can strike mid-way (kill a node, swap a module, restart the
//! broker) and then check what every call saw.

use compute_host::{Center, Reply};
use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};
use tokio::{task::JoinHandle, time::Instant};

use crate::eventually::{eventually, within};

/// One call: its input n, when it started and ended, and how it ended.
#[derive(Clone, Debug)]
pub struct Call {
    pub n: i64,
    pub started: Instant,
    pub ended: Instant,
    /// The reply, or the error's text.
    pub outcome: Result<Reply, String>,
}

/// Calls with a fixed number in flight: a batch of n in 0..count, or a
/// steady load of n = 1, 2, 3… until [`Load::finish`].
pub struct Load {
    planned: Option<usize>,
    stop: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<Call>>>,
    task: JoinHandle<()>,
}

impl Load {
    /// `count` calls of n in 0..count, `in_flight` at a time.
    pub fn batch(center: &Center, count: usize, in_flight: usize) -> Self {
        Self::start(center, 0, Some(count), in_flight)
    }

    /// Calls of n = 1, 2, 3…, `in_flight` at a time, until finished.
    pub fn steady(center: &Center, in_flight: usize) -> Self {
        Self::start(center, 1, None, in_flight)
    }

    fn start(center: &Center, first: i64, planned: Option<usize>, in_flight: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicI64::new(first));
        let end = planned.map_or(i64::MAX, |count| first + count as i64);
        let workers: Vec<_> = (0..in_flight)
            .map(|_| {
                let (center, stop, calls, next) =
                    (center.clone(), stop.clone(), calls.clone(), next.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= end {
                            break;
                        }
                        let started = Instant::now();
                        let outcome = center
                            .call(n.to_string())
                            .await
                            .map_err(|err| err.to_string());
                        calls.lock().unwrap().push(Call {
                            n,
                            started,
                            ended: Instant::now(),
                            outcome,
                        });
                    }
                })
            })
            .collect();
        let task = tokio::spawn(async move {
            for worker in workers {
                worker.await.expect("a load worker");
            }
        });
        Load {
            planned,
            stop,
            calls,
            task,
        }
    }

    /// Waits until `count` calls have ended (for at most a minute).
    pub async fn until_done(&self, count: usize) {
        let what = format!("{count} calls ended");
        eventually(&what, Duration::from_secs(60), || async {
            (self.ended() >= count).then_some(())
        })
        .await;
    }

    /// How many calls have ended so far.
    pub fn ended(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// A steady load through `center` that meets `strike` mid-way, however
    /// fast its calls go: `strike` starts once `each_side` calls have
    /// ended, and the load stops once `each_side` more have ended after
    /// `strike` is over. (A batch of a fixed size could end before a
    /// strike that takes seconds, `rabbitmqctl stop_app` say, takes
    /// effect, and then test nothing.) What `strike` returned, and the
    /// calls, or `None` if they hang past `limit` after the strike.
    pub async fn steady_across<T>(
        center: &Center,
        in_flight: usize,
        each_side: usize,
        strike: impl Future<Output = T>,
        limit: Duration,
    ) -> (T, Option<Calls>) {
        let load = Load::steady(center, in_flight);
        load.until_done(each_side).await;
        let struck = strike.await;
        let more = load.ended() + each_side;
        let after = within(limit, || async { (load.ended() >= more).then_some(()) });
        if after.await.is_none() {
            return (struck, None);
        }
        (struck, load.finish(limit).await)
    }

    /// The calls that have ended so far.
    pub fn so_far(&self) -> Calls {
        Calls {
            planned: self.planned,
            calls: self.calls.lock().unwrap().clone(),
        }
    }

    /// Stops starting calls (a steady load) and waits for every call to
    /// end, for at most `limit`: `None` if the calls hang.
    pub async fn finish(self, limit: Duration) -> Option<Calls> {
        self.stop.store(self.planned.is_none(), Ordering::Relaxed);
        tokio::time::timeout(limit, self.task)
            .await
            .ok()?
            .expect("the load task");
        Some(Calls {
            planned: self.planned,
            calls: std::mem::take(&mut *self.calls.lock().unwrap()),
        })
    }
}

/// Every call of a load that ended.
pub struct Calls {
    planned: Option<usize>,
    pub calls: Vec<Call>,
}

impl Calls {
    /// How the calls went, counting a reply as right when its body is
    /// `expected(n)`.
    pub fn tally(&self, expected: impl Fn(i64) -> String) -> Tally {
        let mut tally = Tally {
            sent: self.planned.unwrap_or(self.calls.len()),
            ..Tally::default()
        };
        for call in &self.calls {
            match &call.outcome {
                Ok(reply) if reply.body == expected(call.n).as_bytes() => tally.replies += 1,
                Ok(_) => tally.wrong += 1,
                Err(err) => tally.errors.push(err.clone()),
            }
        }
        tally
    }

    /// How a load of `increase` went.
    pub fn increase_tally(&self) -> Tally {
        self.tally(|n| (n + 1).to_string())
    }

    /// Each call that failed or whose reply `right` does not accept, as a
    /// line to print.
    pub fn failures(&self, right: impl Fn(i64, &Reply) -> bool) -> Vec<String> {
        self.calls
            .iter()
            .filter_map(|call| match &call.outcome {
                Ok(reply) if right(call.n, reply) => None,
                Ok(reply) => Some(format!(
                    "{} -> {} from {:?}",
                    call.n,
                    String::from_utf8_lossy(&reply.body),
                    reply.origin.module
                )),
                Err(err) => Some(format!("{} -> {err}", call.n)),
            })
            .collect()
    }

    /// How many calls were in flight from before `from` until after
    /// `to`, and then answered: calls that lived through what happened
    /// in between.
    pub fn answered_across(&self, from: Instant, to: Instant) -> usize {
        self.calls
            .iter()
            .filter(|call| call.started < from && call.ended > to && call.outcome.is_ok())
            .count()
    }

    /// How many calls version `digest` answered.
    pub fn answered_by(&self, digest: &str) -> usize {
        self.calls
            .iter()
            .filter(|call| {
                matches!(&call.outcome, Ok(reply) if reply.origin.module.as_deref() == Some(digest))
            })
            .count()
    }

    /// The versions that answered the calls started at or after `since`,
    /// once each, in the order first seen.
    pub fn versions_since(&self, since: Instant) -> Vec<String> {
        let mut versions: Vec<String> = Vec::new();
        for call in self.calls.iter().filter(|call| call.started >= since) {
            if let Ok(reply) = &call.outcome {
                let version = reply.origin.module.clone().unwrap_or_default();
                if !versions.contains(&version) {
                    versions.push(version);
                }
            }
        }
        versions
    }
}

/// How a batch of calls went: every call ends as exactly one of these.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub sent: usize,
    /// Replies with the right result.
    pub replies: usize,
    /// Replies with a wrong result (another request's, say).
    pub wrong: usize,
    /// Calls that ended in an error, with the errors' text.
    pub errors: Vec<String>,
}

/// `sent 5000, replies 5000, wrong 0, errors 0, lost 0`: the table of
/// the fault tests.
impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {}, replies {}, wrong {}, errors {}, lost {}",
            self.sent,
            self.replies,
            self.wrong,
            self.errors.len(),
            self.lost()
        )
    }
}

impl Tally {
    /// Calls that never ended one way or another: must be 0. For the
    /// calls of a [`Load`] it is 0 by construction: a call that never
    /// ends makes [`Load::finish`] give up instead.
    pub fn lost(&self) -> usize {
        self.sent - self.replies - self.wrong - self.errors.len()
    }

    /// Checks that every call got its own right answer: no wrong replies,
    /// no errors, none lost.
    pub fn assert_all_answered(&self) {
        assert_eq!(
            (self.replies, self.wrong, self.errors.len(), self.lost()),
            (self.sent, 0, 0, 0),
            "first error: {:?}",
            self.errors.first()
        );
    }
}
