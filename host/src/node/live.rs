//! The versions of one function that a node holds: the current one, which
//! new requests run, and the few compiled before it, which a rollback or a
//! pinned request can run without compiling again.
//!
//! Requests take the current version from an [`ArcSwap`]: no lock, and a
//! request that started on the old version keeps it until it ends while
//! every later request gets the new one.

use crate::shared::{lock::lock, sandbox::ComputeModule};
use arc_swap::ArcSwap;
use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

/// Compiled versions kept per function, the current one included.
const RECENT_VERSIONS: usize = 4;

/// A version of a function that the node turned down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// The bytes were read, but are not a usable compute module (garbage,
    /// truncated, wrong exports or types, imports the sandbox does not
    /// offer). Holds their digest, `sha256:<hex>`.
    Unusable(String),
    /// The module file could not be read (it was deleted, say).
    Unreadable(std::io::ErrorKind),
}

/// The version of a function that new requests run, the versions kept
/// compiled, and what was last turned down.
pub struct LiveModule {
    current: ArcSwap<ComputeModule>,
    /// Newest first; the current version among them.
    recent: Mutex<VecDeque<ComputeModule>>,
    /// A version only pinned requests run, until it is promoted.
    staged: Mutex<Option<ComputeModule>>,
    rejected: Mutex<Option<Rejected>>,
    swaps: AtomicU64,
    failed_reloads: AtomicU64,
    in_flight: AtomicU64,
    served: AtomicU64,
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
            recent: Mutex::new(VecDeque::from([module.clone()])),
            current: ArcSwap::from_pointee(module),
            staged: Mutex::new(None),
            rejected: Mutex::new(None),
            swaps: AtomicU64::new(0),
            failed_reloads: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            served: AtomicU64::new(0),
        }
    }

    /// The version to run a request that starts now on.
    pub fn current(&self) -> Arc<ComputeModule> {
        self.current.load_full()
    }

    /// The version whose digest is, or starts with, `digest`, if it is
    /// staged or kept compiled and no other such version starts so.
    pub fn version(&self, digest: &str) -> Option<ComputeModule> {
        let staged = lock(&self.staged).clone();
        let recent = lock(&self.recent);
        let mut matching = staged
            .iter()
            .chain(recent.iter())
            .filter(|module| module.digest().starts_with(digest));
        let found = matching.next()?;
        // The staged version may be kept compiled too: the same version
        // twice is still one.
        if matching.any(|other| other.digest() != found.digest()) {
            return None;
        }
        Some(found.clone())
    }

    /// The staged version's digest, if there is one.
    pub fn staged(&self) -> Option<String> {
        lock(&self.staged)
            .as_ref()
            .map(|module| module.digest().to_owned())
    }

    /// The last version that could not be served.
    pub fn last_rejected(&self) -> Option<Rejected> {
        lock(&self.rejected).clone()
    }

    /// How many new versions have been swapped in.
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }

    /// How many versions could not be served.
    pub fn failed_reloads(&self) -> u64 {
        self.failed_reloads.load(Ordering::Relaxed)
    }

    /// Requests of this function being answered.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests of this function settled, whatever their outcome.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard is dropped, then served.
    pub(crate) fn count_request(&self) -> Counted<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Counted(self)
    }

    /// Makes `module` current, keeps it among the recent versions, and
    /// returns the version it replaced.
    pub(crate) fn swap(&self, module: ComputeModule) -> Arc<ComputeModule> {
        {
            let mut staged = lock(&self.staged);
            if staged
                .as_ref()
                .is_some_and(|staged| staged.digest() == module.digest())
            {
                *staged = None;
            }
        }
        {
            let mut recent = lock(&self.recent);
            recent.retain(|kept| kept.digest() != module.digest());
            recent.push_front(module.clone());
            recent.truncate(RECENT_VERSIONS);
        }
        self.swaps.fetch_add(1, Ordering::Relaxed);
        self.current.swap(Arc::new(module))
    }

    /// Holds `module` for pinned requests only, in place of any version
    /// staged before.
    pub(crate) fn stage(&self, module: ComputeModule) {
        *lock(&self.staged) = Some(module);
    }

    pub(crate) fn reject(&self, problem: Rejected) {
        self.failed_reloads.fetch_add(1, Ordering::Relaxed);
        *lock(&self.rejected) = Some(problem);
    }
}

/// A request being answered; counted as served when dropped.
pub(crate) struct Counted<'a>(&'a LiveModule);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.served.fetch_add(1, Ordering::Relaxed);
    }
}
