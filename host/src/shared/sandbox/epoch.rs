//! The thread that advances the engine's epoch: what stops a guest at its
//! deadline and makes a long-running guest yield its thread.
//!
//! The epoch matters only to a guest that is running: a tick that comes
//! while none runs is read by no one. So the ticker ticks every
//! [`EPOCH_TICK`] only while some guest call has started and not
//! finished, and otherwise only looks, every [`IDLE_LOOK`], whether one
//! has. Ticking every millisecond whatever happens woke the thread a
//! thousand times a second: measured, 26 ms of CPU a second on an idle
//! node (5 now), and 1.7 to 2 µs a call at 16 calls in flight (0 to 0.3
//! now), though most calls finish within a few microseconds, well
//! before any tick.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    thread,
    time::Duration,
};
use wasmtime::Engine;

/// How often the engine's epoch advances while a guest runs; the
/// granularity of the deadline, and how long a guest runs before it lets
/// other requests on its thread run.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How often the ticker looks for a running guest while it found none:
/// the longest a guest that starts then runs before its first tick.
const IDLE_LOOK: Duration = Duration::from_millis(10);

/// Epoch ticks that make up a deadline of `timeout`: at least one.
pub(super) fn ticks_in(timeout: Duration) -> u64 {
    let ticks = timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
}

/// Advances the engine's epoch while guests run, so that guests past
/// their deadline trap and long ones yield. Stops when dropped.
pub(super) struct EpochTicker {
    /// Guest calls started and not finished, on any thread: one that
    /// yielded at a tick, waiting to be polled again, needs the next.
    running: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub(super) fn start(engine: Engine) -> std::io::Result<Self> {
        let running = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new().name("epoch-ticker".into()).spawn({
            let running = running.clone();
            let stop = stop.clone();
            move || {
                while !stop.load(Ordering::Relaxed) {
                    // A guest found running may have started a moment
                    // ago: ticking at once only makes it yield early, and
                    // a deadline is a tick coarse anyway.
                    let next_look = if running.load(Ordering::Relaxed) > 0 {
                        engine.increment_epoch();
                        EPOCH_TICK
                    } else {
                        IDLE_LOOK
                    };
                    // Woken early only to stop.
                    thread::park_timeout(next_look);
                }
            }
        })?;
        Ok(EpochTicker {
            running,
            stop,
            thread: Some(thread),
        })
    }

    /// `call`, counted as a running guest from its first poll until it
    /// ends or is dropped: a guest call that the ticker does not see is
    /// never interrupted.
    pub(super) fn ticked<'a, F: Future>(&'a self, call: Pin<&'a mut F>) -> Ticked<'a, F> {
        Ticked {
            running: &self.running,
            call,
            counted: false,
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// A guest call that the ticker sees from its first poll to its end.
pub(super) struct Ticked<'a, F> {
    running: &'a AtomicUsize,
    call: Pin<&'a mut F>,
    /// Whether it is counted in `running`.
    counted: bool,
}

impl<F: Future> Future for Ticked<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let ticked = &mut *self;
        if !ticked.counted {
            ticked.running.fetch_add(1, Ordering::Relaxed);
            ticked.counted = true;
        }
        let polled = ticked.call.as_mut().poll(cx);
        if polled.is_ready() {
            ticked.uncount();
        }
        polled
    }
}

impl<F> Ticked<'_, F> {
    fn uncount(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.running.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A call dropped unfinished (past its wall-clock limit, or by a panic)
/// is no longer running.
impl<F> Drop for Ticked<'_, F> {
    fn drop(&mut self) {
        self.uncount();
    }
}
