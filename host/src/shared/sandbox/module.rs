//! A compiled compute function, and running one request in a fresh
//! instance of it.

use super::{
    FunctionLimits, Limits, LimitsError, Sandbox, epoch, fair::Claim, gen_::ComputeFunctionPre,
    gen_::Failure, guest::GuestState, output::GuestOutput,
};
use crate::shared::wire::ErrorKind;
use futures_util::FutureExt;
use std::{sync::Arc, time::Duration};
use tokio::sync::Semaphore;
use wasmtime::{Store, Trap, UpdateDeadline};

/// Why a request produced no reply body. Each case maps to one
/// [`ErrorKind`] on the wire; the `Display` text becomes the reply body.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The function rejected its input.
    #[error("{0}")]
    BadRequest(String),
    /// The function reported that it could not compute a result.
    #[error("{0}")]
    Failed(String),
    /// The function ran past the deadline and was stopped.
    #[error("the compute function ran longer than {0:?} and was stopped")]
    Timeout(Duration),
    /// The function took longer than the wall-clock limit (blocked in a
    /// host call, say) and its instance was dropped.
    #[error("the compute function did not finish within {0:?} of wall-clock time and was stopped")]
    Stalled(Duration),
    /// The function trapped (a panic, a stack overflow, memory past the
    /// cap, ...).
    #[error("the compute function crashed: {0}")]
    Crashed(String),
    /// The request or the reply is larger than [`Limits::max_body`](super::Limits::max_body).
    #[error(
        "the {body} body is {size} bytes, more than the node's limit of {limit} bytes (--max-body)"
    )]
    TooLarge {
        /// `request` or `reply`.
        body: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
}

impl ComputeError {
    /// The kind of error reply this becomes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ComputeError::BadRequest(_) => ErrorKind::BadRequest,
            ComputeError::Failed(_) | ComputeError::Crashed(_) => ErrorKind::ComputeFailed,
            ComputeError::Timeout(_) | ComputeError::Stalled(_) => ErrorKind::Timeout,
            ComputeError::TooLarge { .. } => ErrorKind::TooLarge,
        }
    }
}

/// How a module's code came to be.
#[derive(Clone, Copy, Debug)]
pub struct Loaded {
    /// From the compile cache, not compiled.
    pub from_cache: bool,
    /// How long compiling or loading, and type-checking, took.
    pub took: Duration,
}

/// `compiled in 175 ms`, or `loaded from the compile cache in 3 ms`.
impl std::fmt::Display for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.from_cache {
            "loaded from the compile cache"
        } else {
            "compiled"
        };
        write!(f, "{how} in {} ms", self.took.as_millis())
    }
}

/// A compiled, type-checked compute function, ready to run requests.
/// Cheap to clone; clones share the compiled code, and the count of
/// instances running.
#[derive(Clone)]
pub struct ComputeModule {
    name: Arc<str>,
    digest: Arc<str>,
    loaded: Loaded,
    pre: ComputeFunctionPre<GuestState>,
    sandbox: Sandbox,
    /// The function's own limits, as asked for.
    own: FunctionLimits,
    /// The node's limits narrowed by `own`: what each request may use.
    limits: Limits,
    /// Bytes of linear memory an instance has before it runs any code.
    memory_to_start: usize,
    /// One permit per instance the function may have at once, when it
    /// asks for fewer than the pool holds.
    instances: Option<Arc<Semaphore>>,
    /// The function's part of the sandbox's instances.
    claim: Claim,
}

impl ComputeModule {
    pub(super) fn new(
        name: &str,
        digest: String,
        loaded: Loaded,
        memory_to_start: usize,
        pre: ComputeFunctionPre<GuestState>,
        sandbox: Sandbox,
    ) -> Self {
        ComputeModule {
            name: name.into(),
            digest: digest.into(),
            loaded,
            memory_to_start,
            pre,
            limits: sandbox.limits,
            claim: sandbox.instances.claim(name),
            sandbox,
            own: FunctionLimits::default(),
            instances: None,
        }
    }

    /// The same compiled code, serving as function `name` under the node's
    /// limits: two functions whose modules are the same bytes share one
    /// compile, each with its own limits.
    pub fn named(&self, name: &str) -> Self {
        ComputeModule {
            name: name.into(),
            own: FunctionLimits::default(),
            limits: self.sandbox.limits,
            instances: None,
            claim: self.sandbox.instances.claim(name),
            ..self.clone()
        }
    }

    /// The same compiled code, under its own limits `own`, within the
    /// node's. Its count of instances is its own too.
    ///
    /// # Errors
    ///
    /// When `own` asks for more than the node allows, or for less memory
    /// than the module starts with.
    pub fn limited(&self, own: FunctionLimits) -> Result<Self, LimitsError> {
        let limits = own.within(self.sandbox.limits)?;
        if self.memory_to_start > limits.memory {
            return Err(LimitsError::TooSmallToStart {
                needs: self.memory_to_start,
                limit: limits.memory,
            });
        }
        Ok(ComputeModule {
            limits,
            own,
            instances: own
                .instances
                .map(|instances| Arc::new(Semaphore::new(instances as usize))),
            ..self.clone()
        })
    }

    /// The function's own limits, as its limits file asked for them.
    pub fn own_limits(&self) -> FunctionLimits {
        self.own
    }

    /// What each request of this function may use.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The function's name (the module's file stem), sent in `x-function`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How its code came to be: compiled, or loaded from the compile
    /// cache, and how long that took.
    pub fn loaded(&self) -> Loaded {
        self.loaded
    }

    /// The digest of the module's bytes (`sha256:<hex>`), sent in
    /// `x-module-digest` so a caller can tell which version answered.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Runs one request in a fresh instance. A request over the size limit
    /// is refused without running the guest. What the guest printed is
    /// logged in the current span.
    pub async fn compute(&self, request: &[u8]) -> Result<Vec<u8>, ComputeError> {
        self.compute_in(request, tracing::Span::current).await
    }

    /// [`compute`](Self::compute), logging what the guest printed, if
    /// anything, in the span that `span` makes. A node's request makes its
    /// span only when there is something to log: making one costs more
    /// than a whole guest call's bookkeeping.
    pub async fn compute_in(
        &self,
        request: &[u8],
        span: impl FnOnce() -> tracing::Span,
    ) -> Result<Vec<u8>, ComputeError> {
        let limits = self.limits;
        let too_large = |body, size| ComputeError::TooLarge {
            body,
            size,
            limit: limits.max_body,
        };
        if request.len() > limits.max_body {
            return Err(too_large("request", request.len()));
        }
        // The semaphore is never closed, so this always holds a permit.
        // The function's own first: a request waiting for one of its
        // function's instances must not hold one of the pool's.
        let _own_instance = match &self.instances {
            Some(instances) => instances.acquire().await.ok(),
            None => None,
        };
        let _instance = self.claim.instance().await;
        let mut store = Store::new(
            &self.sandbox.engine,
            GuestState::new(limits.memory, self.own.memory.is_some()),
        );
        store.limiter(|state| &mut state.limits);
        // The guest runs on the node's async threads: at every epoch tick
        // it yields, so a runaway guest delays no other request, and after
        // the deadline's worth of ticks of running it is stopped.
        let mut ticks_left = epoch::ticks_in(limits.timeout);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            ticks_left -= 1;
            Ok(if ticks_left == 0 {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });

        let started = tokio::time::Instant::now();
        // Past the wall-clock limit the call is dropped where it waits,
        // and the store (the instance) with it. Most calls finish in their
        // first poll, well within a tick: only one that does not is given
        // a timer (a timer on every call measured 8.0 us a call, against
        // 5.2 us without).
        let outcome = {
            let run = std::pin::pin!(async {
                let instance = self.pre.instantiate_async(&mut store).await?;
                instance.call_compute(&mut store, request).await
            });
            let mut run = self.sandbox.epoch.ticked(run);
            match FutureExt::now_or_never(&mut run) {
                Some(outcome) => Ok(outcome),
                None => tokio::time::timeout_at(started + limits.wall_timeout, run).await,
            }
        };
        let state = store.into_data();
        if let Some(output) = &state.output {
            output.log(self.name(), span);
        }
        let Ok(outcome) = outcome else {
            return Err(ComputeError::Stalled(limits.wall_timeout));
        };
        match outcome {
            Ok(Ok(reply)) if reply.len() > limits.max_body => Err(too_large("reply", reply.len())),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(Failure::BadRequest(message))) => Err(ComputeError::BadRequest(message)),
            Ok(Err(Failure::ComputeFailed(message))) => Err(ComputeError::Failed(message)),
            Err(err) if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
                Err(ComputeError::Timeout(limits.timeout))
            }
            Err(err) => {
                // What the guest said before it trapped: through
                // `panicked`, else on stderr, where Python's traceback,
                // JavaScript's uncaught error and std's panic message go.
                let last_words = state
                    .panic
                    .or_else(|| state.output.as_ref().and_then(GuestOutput::last_words));
                Err(ComputeError::Crashed(match last_words {
                    Some(words) => format!("{words} ({})", crash_reason(&err)),
                    None => crash_reason(&err),
                }))
            }
        }
    }
}

/// Why a guest crashed, in a line: the trap (`call stack exhausted`,
/// `wasm 'unreachable' instruction executed`) or the root cause, without
/// the wasm backtrace, which tells a caller nothing and can be long.
fn crash_reason(err: &wasmtime::Error) -> String {
    match err.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => err.root_cause().to_string(),
    }
}
