//! The functions a node serves, by name: each with its queue and its
//! [`LiveModule`]. Sources (a module file, a directory, the registry) offer bytes; the table
//! compiles them off the request path, checks them, and swaps them in, or
//! adds a new function, the same way whatever the source.
//!
//! Bytes already served cost nothing but their hash; a version already
//! compiled (by any function: two functions with the same module share
//! one compile) is swapped in without compiling again. A version that
//! cannot be served is logged once with its digest and the reason, and
//! the current version keeps serving.

use crate::{
    amqp::QueueNameError,
    live::{LiveModule, Rejected},
    lock::lock,
    queues::Queues,
    sandbox::{self, ComputeModule, FunctionLimits, LimitsError, LimitsFile, LoadError, Sandbox},
    source::{NewBytes, Offer, Update, Verdict},
};
use lapin::types::ShortString;
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// A function the node serves.
#[derive(Debug)]
pub struct Function {
    name: String,
    queue: ShortString,
    live: Arc<LiveModule>,
}

impl Function {
    /// The function's name, sent in `x-function`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue its requests arrive on.
    pub fn queue(&self) -> &str {
        self.queue.as_str()
    }

    /// Its versions: the current one, and those kept compiled.
    pub fn live(&self) -> &Arc<LiveModule> {
        &self.live
    }

    pub(crate) fn queue_name(&self) -> &ShortString {
        &self.queue
    }
}

/// The functions being served, readable by anyone who holds it.
pub(crate) type Served = Arc<Mutex<BTreeMap<String, Arc<Function>>>>;

/// Functions that came and went, for the node to consume or stop
/// consuming their queues.
#[derive(Debug)]
pub(crate) enum Change {
    Added(Arc<Function>),
    Removed(Arc<Function>),
}

/// Why a new function could not be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FunctionError {
    #[error(transparent)]
    Module(#[from] LoadError),
    #[error(transparent)]
    Limits(#[from] LimitsError),
    #[error(transparent)]
    QueueName(#[from] QueueNameError),
}

/// The table, as the one task that changes it sees it.
pub(crate) struct Table {
    sandbox: Sandbox,
    queues: Queues,
    served: Served,
    /// The version of each function last turned down, with its limits
    /// file, so each is logged once.
    turned_down: BTreeMap<String, (String, Option<LimitsFile>)>,
    changes: mpsc::UnboundedSender<Change>,
}

impl Table {
    pub(crate) fn new(
        sandbox: Sandbox,
        queues: Queues,
        changes: mpsc::UnboundedSender<Change>,
    ) -> Self {
        Table {
            sandbox,
            queues,
            served: Served::default(),
            turned_down: BTreeMap::new(),
            changes,
        }
    }

    /// The functions being served, shared.
    pub(crate) fn served(&self) -> Served {
        self.served.clone()
    }

    /// Serves `module` as a new function, its queue named after it.
    pub(crate) fn add(&mut self, module: ComputeModule) -> Result<Arc<Function>, QueueNameError> {
        let name = module.name().to_owned();
        let function = Arc::new(Function {
            queue: self.queues.of(&name)?,
            name: name.clone(),
            live: Arc::new(LiveModule::new(module)),
        });
        lock(&self.served).insert(name, function.clone());
        let _ = self.changes.send(Change::Added(function.clone()));
        Ok(function)
    }

    /// Applies updates until every source is gone.
    pub(crate) async fn follow(mut self, mut updates: mpsc::Receiver<Update>) {
        while let Some(update) = updates.recv().await {
            self.apply(update).await;
        }
    }

    /// Applies one update: swaps in, stages or adds a usable version,
    /// removes a function that is gone. Never fails: what cannot be
    /// served is logged (and told to the source, if it asks), and the
    /// current version keeps serving.
    pub(crate) async fn apply(&mut self, update: Update) {
        let Update {
            function,
            offer,
            verdict,
        } = update;
        let existing = lock(&self.served).get(&function).cloned();
        let outcome = match offer {
            Offer::Bytes(offered) => self.offer(&function, existing, offered).await,
            Offer::Unreadable { from, error } => {
                if let Some(existing) = existing {
                    warn!(
                        function,
                        path = %from,
                        cause = %error,
                        serving = existing.live.current().digest(),
                        "cannot read the module file; still serving the current version"
                    );
                    existing.live.reject(Rejected::Unreadable(error.kind()));
                }
                Err(format!("cannot read {from}: {error}"))
            }
            Offer::Gone => {
                self.turned_down.remove(&function);
                if let Some(existing) = lock(&self.served).remove(&function) {
                    info!(
                        function,
                        "the function is gone; it stops once its requests in flight are answered"
                    );
                    let _ = self.changes.send(Change::Removed(existing));
                }
                Ok(())
            }
        };
        if let Some(verdict) = verdict {
            let _ = verdict.send(outcome);
        }
    }

    async fn offer(
        &mut self,
        function: &str,
        existing: Option<Arc<Function>>,
        offered: NewBytes,
    ) -> Verdict {
        let NewBytes {
            bytes,
            limits: limits_file,
            from,
            settled,
            stage,
        } = offered;
        let from = from.as_str();
        let digest = sandbox::digest(&bytes);
        let version = (digest.clone(), limits_file.clone());
        let serving = existing.as_ref().map(|existing| existing.live.current());
        // Checked before anything is compiled: the cheapest fault to
        // report. Unparsable limits are as unusable as broken bytes.
        let own = FunctionLimits::of(limits_file.as_ref())
            .and_then(|own| own.within(self.sandbox.limits()).map(|_| own));
        let same_limits =
            |module: &ComputeModule| own.as_ref().is_ok_and(|own| module.own_limits() == *own);
        let already = match (&existing, stage) {
            (Some(existing), true) => {
                existing.live.staged().as_deref() == Some(digest.as_str())
                    && existing
                        .live
                        .version(&digest)
                        .is_some_and(|staged| same_limits(&staged))
            }
            _ => serving
                .as_ref()
                .is_some_and(|serving| serving.digest() == digest && same_limits(serving)),
        };
        if already {
            self.turned_down.remove(function);
            return Ok(());
        }
        if stage && existing.is_none() {
            return Err(format!(
                "function {function} has no current version to stage {digest} beside"
            ));
        }
        if self.turned_down.get(function) == Some(&version) {
            return Err(format!("{digest} was turned down before"));
        }

        let kept = self.compiled(&digest);
        let reused = kept.is_some();
        let loaded = match (own, kept) {
            (Err(err), _) => Err(FunctionError::from(err)),
            (Ok(own), Some(module)) => module
                .named(function)
                .limited(own)
                .map_err(FunctionError::from),
            (Ok(own), None) => {
                let (sandbox, name) = (self.sandbox.clone(), function.to_owned());
                tokio::task::spawn_blocking(move || sandbox.load_bytes(&name, &bytes))
                    .await
                    .unwrap_or_else(|join| {
                        Err(LoadError::Unusable(wasmtime::Error::msg(format!(
                            "the compiler stopped: {join}"
                        ))))
                    })
                    .map_err(FunctionError::from)
                    .and_then(|module| module.limited(own).map_err(FunctionError::from))
            }
        };
        let how = match &loaded {
            Ok(_) if reused => "kept from before".to_owned(),
            Ok(module) => module.loaded().to_string(),
            Err(_) => String::new(),
        };
        let limits = loaded
            .as_ref()
            .map(|module| module.own_limits().to_string())
            .unwrap_or_default();
        let loaded = loaded.and_then(|module| match (&existing, stage) {
            (Some(existing), true) => {
                existing.live.stage(module);
                Ok(None)
            }
            (Some(existing), false) => Ok(Some(existing.live.swap(module))),
            (None, _) => self.add(module).map(|_| None).map_err(FunctionError::from),
        });
        match loaded {
            Ok(was) => {
                self.turned_down.remove(function);
                match (was, stage) {
                    (Some(was), _) => info!(
                        function,
                        from,
                        limits,
                        "serving {digest} (was {}), {how}",
                        was.digest(),
                    ),
                    (None, true) => {
                        info!(
                            function,
                            from, limits, "staged {digest} for pinned requests, {how}"
                        )
                    }
                    (None, false) => {
                        info!(function, from, %digest, module = how, limits, "serving a new function")
                    }
                }
                Ok(())
            }
            Err(err) if settled => {
                let what = match &err {
                    FunctionError::Limits(_) => "its limits file is not usable",
                    FunctionError::Module(_) | FunctionError::QueueName(_) => {
                        "not a usable compute module"
                    }
                };
                warn!(
                    function,
                    from,
                    %digest,
                    cause = %err,
                    serving = serving.as_ref().map(|serving| serving.digest()),
                    "{what}; {}",
                    if serving.is_some() { "still serving the current version" } else { "the function is not served" }
                );
                if let Some(existing) = &existing {
                    existing.live.reject(Rejected::Unusable(digest.clone()));
                }
                self.turned_down.insert(function.to_owned(), version);
                Err(err.to_string())
            }
            Err(err) => {
                debug!(
                    function,
                    %digest,
                    cause = %err,
                    "the module file is still being written; waiting for the writer to finish"
                );
                Err(err.to_string())
            }
        }
    }

    /// Version `digest`, if any function keeps it compiled, under the
    /// node's limits.
    fn compiled(&self, digest: &str) -> Option<ComputeModule> {
        lock(&self.served)
            .values()
            .find_map(|function| function.live.version(digest))
    }
}
