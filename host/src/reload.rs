//! Live code swaps: the node watches its module file and serves each new
//! version that compiles and provides the contract, without a restart.
//!
//! Requests take the current version from a [`LiveModule`] (an
//! [`ArcSwap`]): no lock, and a request that started on the old version
//! keeps it until it ends while every later request gets the new one.
//! Compiling happens on a blocking thread, off the request path.
//!
//! What makes the reloader look at the file:
//! - an event in the file's directory (the directory, because editors and
//!   `mv` replace the file, which would end a watch on the file itself):
//!   a write that completed (the writer closed the file), a rename onto
//!   the path, a create or a delete. Checked after [`DEBOUNCE`].
//! - plain writes, once the file has been quiet for [`QUIET`] (for a
//!   writer that does not close the file).
//! - SIGHUP, at once.
//! - every [`BACKSTOP`], in case an event was missed.
//!
//! Looking means reading and hashing the file; a digest already served
//! does nothing. A version that fails (garbage, truncated, wrong exports
//! or types, imports the sandbox does not offer, a deleted file) is logged
//! once with its digest and the reason, and the current version keeps
//! serving. A file caught in the middle of a write fails to compile like
//! any broken file, so it is never served; it is only logged at debug
//! level while writes are still arriving.

use crate::{
    lock::lock,
    sandbox::{self, ComputeModule, Sandbox},
};
use arc_swap::ArcSwap;
use notify::{
    EventKind, RecommendedWatcher, RecursiveMode, Watcher as _,
    event::{AccessKind, AccessMode, ModifyKind},
};
use std::{
    collections::VecDeque,
    ffi::OsString,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::{
    sync::mpsc,
    time::{Instant, MissedTickBehavior},
};
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

/// Wait after a completing event, so a burst of events makes one check.
const DEBOUNCE: Duration = Duration::from_millis(5);
/// Quiet time after plain writes before the file is looked at anyway.
const QUIET: Duration = Duration::from_millis(500);
/// A file with no completing event for this long is taken as complete:
/// its failures are reported, not taken for a write in progress.
const SETTLE: Duration = Duration::from_secs(2);
/// The periodic check that catches missed events.
const BACKSTOP: Duration = Duration::from_secs(2);
/// Compiled versions kept, so swapping back (a rollback) needs no compile.
const RECENT_VERSIONS: usize = 4;

/// A version of the module file that the reloader turned down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// The file was read, but its content is not a usable compute module
    /// (garbage, truncated, wrong exports or types, imports the sandbox
    /// does not offer). Holds its digest, `sha256:<hex>`.
    Unusable(String),
    /// The file could not be read (it was deleted, say).
    Unreadable(std::io::ErrorKind),
}

/// The version of the compute module that new requests run, and what the
/// reloader last turned down.
pub struct LiveModule {
    current: ArcSwap<ComputeModule>,
    rejected: Mutex<Option<Rejected>>,
    swaps: AtomicU64,
    failed_reloads: AtomicU64,
}

impl std::fmt::Debug for LiveModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current();
        f.debug_struct("LiveModule")
            .field("function", &current.name())
            .field("digest", &current.digest())
            .field("swaps", &self.swaps())
            .finish_non_exhaustive()
    }
}

impl LiveModule {
    /// Serves `module` until something else is swapped in.
    pub fn new(module: ComputeModule) -> Self {
        LiveModule {
            current: ArcSwap::from_pointee(module),
            rejected: Mutex::new(None),
            swaps: AtomicU64::new(0),
            failed_reloads: AtomicU64::new(0),
        }
    }

    /// The version to run a request that starts now on.
    pub fn current(&self) -> Arc<ComputeModule> {
        self.current.load_full()
    }

    /// The last version of the file that could not be served.
    pub fn last_rejected(&self) -> Option<Rejected> {
        lock(&self.rejected).clone()
    }

    /// How many new versions have been swapped in.
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }

    /// How many versions of the file could not be served.
    pub fn failed_reloads(&self) -> u64 {
        self.failed_reloads.load(Ordering::Relaxed)
    }

    fn swap(&self, module: ComputeModule) -> Arc<ComputeModule> {
        self.swaps.fetch_add(1, Ordering::Relaxed);
        self.current.swap(Arc::new(module))
    }

    fn reject(&self, problem: Rejected) {
        self.failed_reloads.fetch_add(1, Ordering::Relaxed);
        *lock(&self.rejected) = Some(problem);
    }
}

/// Starts watching `path` and swapping new versions into `live`. Stops
/// when the handle is dropped.
pub(crate) fn watch(path: &Path, sandbox: Sandbox, live: Arc<LiveModule>) -> AbortOnDropHandle<()> {
    let current = live.current();
    let reloader = Reloader {
        path: path.to_owned(),
        file_name: path.file_name().map(OsString::from).unwrap_or_default(),
        name: current.name().to_owned(),
        sandbox,
        recent: VecDeque::from([(*current).clone()]),
        live,
        reported: None,
        writing_since: None,
    };
    AbortOnDropHandle::new(tokio::spawn(reloader.run()))
}

struct Reloader {
    path: PathBuf,
    file_name: OsString,
    /// The function's name; it stays that of the file's stem.
    name: String,
    sandbox: Sandbox,
    live: Arc<LiveModule>,
    /// Versions compiled lately, newest first.
    recent: VecDeque<ComputeModule>,
    /// The last problem logged, so each one is logged once.
    reported: Option<Rejected>,
    /// Since when plain writes have arrived without a completing event.
    writing_since: Option<Instant>,
}

impl Reloader {
    async fn run(mut self) {
        let (events_sender, mut events) = mpsc::unbounded_channel();
        let _watcher = self.start_watcher(events_sender);
        let mut hangup = hangup_signal();
        let mut backstop = tokio::time::interval_at(Instant::now() + BACKSTOP, BACKSTOP);
        backstop.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_check: Option<Instant> = None;

        loop {
            let check_due = async {
                match next_check {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(event) = events.recv() => {
                    next_check = self.schedule(event, next_check);
                }
                () = check_due => {
                    next_check = None;
                    self.check().await;
                }
                Some(()) = recv_hangup(&mut hangup) => {
                    info!(path = %self.path.display(), "SIGHUP: checking the module file");
                    self.writing_since = None;
                    self.check().await;
                }
                _ = backstop.tick() => self.check().await,
            }
        }
    }

    /// Watches the file's directory. Without a watch (for example when
    /// the system's inotify limit is reached) SIGHUP and the periodic
    /// check still pick up new versions, only later.
    fn start_watcher(
        &self,
        events: mpsc::UnboundedSender<notify::Result<notify::Event>>,
    ) -> Option<RecommendedWatcher> {
        let directory = match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let watcher = notify::recommended_watcher(move |event| {
            let _ = events.send(event);
        })
        .and_then(|mut watcher| {
            watcher.watch(directory, RecursiveMode::NonRecursive)?;
            Ok(watcher)
        });
        match watcher {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                warn!(
                    directory = %directory.display(),
                    cause = %err,
                    "cannot watch the module's directory; new versions are picked up on SIGHUP or within {BACKSTOP:?}"
                );
                None
            }
        }
    }

    /// When to look at the file after `event`, given the check already
    /// planned.
    fn schedule(
        &mut self,
        event: notify::Result<notify::Event>,
        planned: Option<Instant>,
    ) -> Option<Instant> {
        let now = Instant::now();
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                debug!(cause = %err, "file watch error; checking the module file");
                return Some(now + DEBOUNCE);
            }
        };
        if !event
            .paths
            .iter()
            .any(|path| path.file_name() == Some(&self.file_name))
        {
            return planned;
        }
        match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(_)) => {
                self.writing_since = None;
                Some(planned.map_or(now + DEBOUNCE, |at| at.min(now + DEBOUNCE)))
            }
            EventKind::Modify(_) => {
                self.writing_since.get_or_insert(now);
                Some(planned.map_or(now + QUIET, |at| at.max(now + QUIET)))
            }
            // Opens and reads (ours included) change nothing.
            _ => planned,
        }
    }

    /// Reads the file and serves it if it is a new, usable version.
    async fn check(&mut self) {
        let serving = self.live.current();
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(bytes) => bytes,
            Err(err) => {
                let problem = Rejected::Unreadable(err.kind());
                if self.reported.as_ref() != Some(&problem) {
                    warn!(
                        path = %self.path.display(),
                        cause = %err,
                        serving = serving.digest(),
                        "cannot read the module file; still serving the current version"
                    );
                    self.live.reject(problem.clone());
                    self.reported = Some(problem);
                }
                return;
            }
        };
        let digest = sandbox::digest(&bytes);
        if digest == serving.digest() {
            self.reported = None;
            return;
        }
        let unusable = Rejected::Unusable(digest.clone());
        if self.reported.as_ref() == Some(&unusable) {
            return;
        }

        let started = Instant::now();
        let recent = self
            .recent
            .iter()
            .position(|module| module.digest() == digest);
        let loaded = match recent.and_then(|index| self.recent.remove(index)) {
            Some(module) => Ok(module),
            None => {
                let (sandbox, name) = (self.sandbox.clone(), self.name.clone());
                tokio::task::spawn_blocking(move || sandbox.load_bytes(&name, &bytes))
                    .await
                    .unwrap_or_else(|join| Err(anyhow::anyhow!("the compiler stopped: {join}")))
            }
        };
        match loaded {
            Ok(module) => {
                let compile_ms = if recent.is_some() {
                    0
                } else {
                    started.elapsed().as_millis()
                };
                self.recent.push_front(module.clone());
                self.recent.truncate(RECENT_VERSIONS);
                let was = self.live.swap(module);
                self.reported = None;
                info!(
                    path = %self.path.display(),
                    "serving {digest} (was {}), compiled in {compile_ms} ms{}",
                    was.digest(),
                    if recent.is_some() { " (kept from before)" } else { "" },
                );
            }
            Err(err)
                if self
                    .writing_since
                    .is_none_or(|since| since.elapsed() >= SETTLE) =>
            {
                warn!(
                    path = %self.path.display(),
                    %digest,
                    cause = format!("{err:#}"),
                    serving = serving.digest(),
                    "the module file is not a usable compute module; still serving the current version"
                );
                self.live.reject(unusable.clone());
                self.reported = Some(unusable);
            }
            Err(err) => debug!(
                %digest,
                cause = format!("{err:#}"),
                "the module file is still being written; waiting for the writer to finish"
            ),
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

async fn recv_hangup(hangup: &mut Hangup) -> Option<()> {
    match hangup {
        #[cfg(unix)]
        Some(signal) => signal.recv().await,
        _ => std::future::pending().await,
    }
}
