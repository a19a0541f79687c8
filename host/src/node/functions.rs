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
    node::{
        live::{LiveModule, Rejected},
        source::{NewBytes, Offer, Update, Verdict},
    },
    shared::{
        amqp::QueueNameError,
        lock::lock,
        queues::Queues,
        sandbox::{
            self, ComputeModule, FunctionLimits, LimitsError, LimitsFile, LoadError, Sandbox,
        },
    },
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

    /// Offers `offered` as `function`'s new bytes (`existing`: the
    /// function as served now, if it is): a version in place already is
    /// accepted as it is, one turned down before is turned down again,
    /// and anything else is loaded and installed. A version that is not
    /// usable is turned down once its source says it is `settled`; before
    /// that (a file still being written), it is only refused.
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
        let digest = sandbox::digest(&bytes);
        // Checked before anything is compiled: the cheapest fault to
        // report. Unparsable limits are as unusable as broken bytes.
        let own = FunctionLimits::of(limits_file.as_ref())
            .and_then(|own| own.within(self.sandbox.limits()).map(|_| own))
            .map_err(FunctionError::from);
        if in_place(existing.as_deref(), stage, &digest, own.as_ref().ok()) {
            self.turned_down.remove(function);
            return Ok(());
        }
        if stage && existing.is_none() {
            return Err(format!(
                "function {function} has no current version to stage {digest} beside"
            ));
        }
        let version = (digest.clone(), limits_file);
        if self.turned_down.get(function) == Some(&version) {
            return Err(format!("{digest} was turned down before"));
        }
        let installed = match self.load(function, &digest, bytes, own).await {
            Ok((module, how)) => self
                .install(existing.as_deref(), stage, module)
                .map(|installed| (installed, how)),
            Err(err) => Err(err),
        };
        match installed {
            Ok((installed, how)) => {
                self.turned_down.remove(function);
                installed.log(function, &from, &digest, &how);
                Ok(())
            }
            Err(err) if settled => {
                turned_down(function, &from, &digest, existing.as_deref(), &err);
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

    /// `function`'s version `digest` from `bytes`, under its `own`
    /// limits: kept compiled from before, if any function has it, else
    /// compiled on a blocking thread. With how it came to be, for the log.
    async fn load(
        &self,
        function: &str,
        digest: &str,
        bytes: Vec<u8>,
        own: Result<FunctionLimits, FunctionError>,
    ) -> Result<(ComputeModule, String), FunctionError> {
        let own = own?;
        if let Some(kept) = self.compiled(digest) {
            let module = kept.named(function).limited(own)?;
            return Ok((module, "kept from before".to_owned()));
        }
        let (sandbox, name) = (self.sandbox.clone(), function.to_owned());
        let module = tokio::task::spawn_blocking(move || sandbox.load_bytes(&name, &bytes))
            .await
            .unwrap_or_else(|join| {
                Err(LoadError::Unusable(wasmtime::Error::msg(format!(
                    "the compiler stopped: {join}"
                ))))
            })?
            .limited(own)?;
        let how = module.loaded().to_string();
        Ok((module, how))
    }

    /// Puts `module` in place: staged beside `existing`'s current version,
    /// swapped in for it, or served as a new function.
    fn install(
        &mut self,
        existing: Option<&Function>,
        stage: bool,
        module: ComputeModule,
    ) -> Result<Installed, FunctionError> {
        let limits = module.own_limits().to_string();
        let how = match (existing, stage) {
            (Some(existing), true) => {
                existing.live.stage(module);
                How::Staged
            }
            (Some(existing), false) => How::Swapped(existing.live.swap(module)),
            (None, _) => {
                self.add(module)?;
                How::Added
            }
        };
        Ok(Installed { how, limits })
    }

    /// Version `digest`, if any function keeps it compiled, under the
    /// node's limits.
    fn compiled(&self, digest: &str) -> Option<ComputeModule> {
        lock(&self.served)
            .values()
            .find_map(|function| function.live.version(digest))
    }
}

/// Whether version `digest` under the `own` limits is in place already:
/// the staged version when staging, else the current one.
fn in_place(
    existing: Option<&Function>,
    stage: bool,
    digest: &str,
    own: Option<&FunctionLimits>,
) -> bool {
    let same = |module: &ComputeModule| {
        module.digest() == digest && own.is_some_and(|own| module.own_limits() == *own)
    };
    match (existing, stage) {
        (Some(existing), true) => {
            existing.live.staged().as_deref() == Some(digest)
                && existing
                    .live
                    .version(digest)
                    .is_some_and(|staged| same(&staged))
        }
        (Some(existing), false) => same(&existing.live.current()),
        (None, _) => false,
    }
}

/// A version put in place, and the limits it runs under, for the log.
struct Installed {
    how: How,
    limits: String,
}

/// Where a version was put.
enum How {
    /// Staged for pinned requests beside the current version.
    Staged,
    /// Swapped in for the version it names.
    Swapped(Arc<ComputeModule>),
    /// Served as a new function.
    Added,
}

impl Installed {
    /// Says what `function` serves now, its version `digest` loaded
    /// `how` from `from`.
    fn log(&self, function: &str, from: &str, digest: &str, loaded: &str) {
        let limits = &self.limits;
        match &self.how {
            How::Swapped(was) => info!(
                function,
                from,
                limits,
                "serving {digest} (was {}), {loaded}",
                was.digest(),
            ),
            How::Staged => info!(
                function,
                from, limits, "staged {digest} for pinned requests, {loaded}"
            ),
            How::Added => {
                info!(function, from, %digest, module = loaded, limits, "serving a new function")
            }
        }
    }
}

/// Says why `function`'s version `digest` from `from` is turned down,
/// and marks it rejected on the function, if it is served.
fn turned_down(
    function: &str,
    from: &str,
    digest: &str,
    existing: Option<&Function>,
    err: &FunctionError,
) {
    let what = match err {
        FunctionError::Limits(_) => "its limits file is not usable",
        FunctionError::Module(_) | FunctionError::QueueName(_) => "not a usable compute module",
    };
    let serving = existing.map(|existing| existing.live.current());
    warn!(
        function,
        from,
        %digest,
        cause = %err,
        serving = serving.as_ref().map(|serving| serving.digest()),
        "{what}; {}",
        if serving.is_some() { "still serving the current version" } else { "the function is not served" }
    );
    if let Some(existing) = existing {
        existing.live.reject(Rejected::Unusable(digest.to_owned()));
    }
}
