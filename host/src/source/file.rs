//! One module file (`compute --module`), watched for new versions.
//!
//! What makes the source look at the file:
//! - an event in the file's directory (the directory, because editors and
//!   `mv` replace the file, which would end a watch on the file itself):
//!   a write that completed (the writer closed the file), a rename onto
//!   the path, a create or a delete. Checked after [`DEBOUNCE`].
//! - plain writes, once the file has been quiet for [`QUIET`] (for a
//!   writer that does not close the file).
//! - SIGHUP, at once.
//! - every [`BACKSTOP`], in case an event was missed.
//!
//! Looking means reading and hashing the file; bytes already offered are
//! not offered again. A file caught in the middle of a write is offered
//! as not settled, so its failure to load is only logged at debug level,
//! and offered again once writes stop.

use super::{Offer, Update, Updates, signal};
use crate::sandbox;
use notify::{
    EventKind, RecommendedWatcher, RecursiveMode, Watcher as _,
    event::{AccessKind, AccessMode, ModifyKind},
};
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
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

/// What the source last offered, so each version is offered once (and
/// once more when a version offered mid-write settles).
#[derive(Debug, PartialEq, Eq)]
enum Offered {
    Bytes { digest: String, settled: bool },
    Unreadable(std::io::ErrorKind),
}

/// Starts watching the module at `path`, function `function`, whose
/// version `digest` is already served. Stops when the handle is dropped.
pub(crate) fn watch(
    path: &Path,
    function: &str,
    digest: &str,
    updates: Updates,
) -> AbortOnDropHandle<()> {
    let source = FileSource {
        path: path.to_owned(),
        file_name: path.file_name().map(OsString::from).unwrap_or_default(),
        function: function.to_owned(),
        updates,
        offered: Some(Offered::Bytes {
            digest: digest.to_owned(),
            settled: true,
        }),
        writing_since: None,
    };
    AbortOnDropHandle::new(tokio::spawn(source.run()))
}

struct FileSource {
    path: PathBuf,
    file_name: OsString,
    function: String,
    updates: Updates,
    offered: Option<Offered>,
    /// Since when plain writes have arrived without a completing event.
    writing_since: Option<Instant>,
}

impl FileSource {
    async fn run(mut self) {
        let (events_sender, mut events) = mpsc::unbounded_channel();
        let _watcher = self.start_watcher(events_sender);
        let mut hangup = signal::hangup();
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
                Some(()) = signal::next(&mut hangup) => {
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

    /// Reads the file and offers it if it is not what was offered last.
    async fn check(&mut self) {
        let from = self.path.display().to_string();
        let (offered, offer) = match tokio::fs::read(&self.path).await {
            Ok(bytes) => {
                let settled = self
                    .writing_since
                    .is_none_or(|since| since.elapsed() >= SETTLE);
                let offered = Offered::Bytes {
                    digest: sandbox::digest(&bytes),
                    settled,
                };
                let unchanged = match (&self.offered, &offered) {
                    (
                        Some(Offered::Bytes {
                            digest: before,
                            settled: was_settled,
                        }),
                        Offered::Bytes { digest, settled },
                    ) => before == digest && (*was_settled || !settled),
                    _ => false,
                };
                if unchanged {
                    return;
                }
                let offer = Offer::Bytes {
                    bytes,
                    from,
                    settled,
                    stage: false,
                };
                (offered, offer)
            }
            Err(error) => {
                let offered = Offered::Unreadable(error.kind());
                if self.offered.as_ref() == Some(&offered) {
                    return;
                }
                (offered, Offer::Unreadable { from, error })
            }
        };
        self.offered = Some(offered);
        let update = Update::new(self.function.clone(), offer);
        // The node is stopping when nobody takes updates any more.
        let _ = self.updates.send(update).await;
    }
}
