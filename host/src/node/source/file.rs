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
//! Looking means reading and hashing the file, and reading its limits
//! file (`NAME.toml` beside it, watched the same way); a version already
//! offered with the same limits is not offered again. A file caught in
//! the middle of a write is offered as not settled, so its failure to
//! load is only logged at debug level, and offered again once writes
//! stop.

use super::{NewBytes, Offer, Update, Updates, signal};
use crate::shared::sandbox::{self, LimitsFile};
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
    Bytes {
        digest: String,
        limits: Option<LimitsFile>,
        settled: bool,
    },
    Unreadable(std::io::ErrorKind),
}

/// Starts watching the module at `path`, function `function`, whose
/// version `digest` is already served, under the limits file `limits`.
/// Stops when the handle is dropped.
pub(crate) fn watch(
    path: &Path,
    function: &str,
    digest: &str,
    limits: Option<LimitsFile>,
    updates: Updates,
) -> AbortOnDropHandle<()> {
    let source = FileSource {
        path: path.to_owned(),
        file_names: watched_names(path),
        function: function.to_owned(),
        updates,
        offered: Some(Offered::Bytes {
            digest: digest.to_owned(),
            limits,
            settled: true,
        }),
        writing_since: None,
    };
    AbortOnDropHandle::new(tokio::spawn(source.run()))
}

/// The names, in the module's directory, of the module and of its limits
/// file.
fn watched_names(module: &Path) -> [OsString; 2] {
    [module, &LimitsFile::path_beside(module)]
        .map(|path| path.file_name().map(OsString::from).unwrap_or_default())
}

struct FileSource {
    path: PathBuf,
    /// The module's file name and its limits file's.
    file_names: [OsString; 2],
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
            .filter_map(|path| path.file_name())
            .any(|name| self.file_names.iter().any(|watched| watched == name))
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

    /// Reads the file and its limits file, and offers them if they are
    /// not what was offered last.
    async fn check(&mut self) {
        let read = async {
            let bytes = tokio::fs::read(&self.path)
                .await
                .map_err(|error| (self.path.clone(), error))?;
            let limits = LimitsFile::read_beside(&self.path)
                .map_err(|error| (LimitsFile::path_beside(&self.path), error))?;
            Ok::<_, (PathBuf, std::io::Error)>((bytes, limits))
        };
        let (offered, offer) = match read.await {
            Ok((bytes, limits)) => {
                let settled = self
                    .writing_since
                    .is_none_or(|since| since.elapsed() >= SETTLE);
                let digest = sandbox::digest(&bytes);
                let unchanged = match &self.offered {
                    Some(Offered::Bytes {
                        digest: digest_before,
                        limits: limits_before,
                        settled: was_settled,
                    }) => {
                        *digest_before == digest
                            && *limits_before == limits
                            && (*was_settled || !settled)
                    }
                    _ => false,
                };
                if unchanged {
                    return;
                }
                let offered = Offered::Bytes {
                    digest,
                    limits: limits.clone(),
                    settled,
                };
                let offer = Offer::Bytes(NewBytes {
                    bytes,
                    limits,
                    from: self.path.display().to_string(),
                    settled,
                    stage: false,
                });
                (offered, offer)
            }
            Err((path, error)) => {
                let offered = Offered::Unreadable(error.kind());
                if self.offered.as_ref() == Some(&offered) {
                    return;
                }
                let from = path.display().to_string();
                (offered, Offer::Unreadable { from, error })
            }
        };
        self.offered = Some(offered);
        let update = Update::new(self.function.clone(), offer);
        // The node is stopping when nobody takes updates any more.
        let _ = self.updates.send(update).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RenameMode};

    /// A source for `dir/work.wasm` that has offered `served`, and what it
    /// offers next.
    fn source(dir: &Path, served: &[u8]) -> (FileSource, mpsc::Receiver<Update>) {
        let (updates, offered) = mpsc::channel(4);
        let path = dir.join("work.wasm");
        let source = FileSource {
            file_names: watched_names(&path),
            path,
            function: "work".into(),
            updates,
            offered: Some(Offered::Bytes {
                digest: sandbox::digest(served),
                limits: None,
                settled: true,
            }),
            writing_since: None,
        };
        (source, offered)
    }

    fn event(kind: EventKind, path: &Path) -> notify::Result<notify::Event> {
        Ok(notify::Event::new(kind).add_path(path.to_owned()))
    }

    fn scratch_dir() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("compute-file-source-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A completed write (close, rename, create) is looked at after
    /// DEBOUNCE, and a burst of them makes one check at the earliest.
    #[tokio::test(start_paused = true)]
    async fn a_completed_write_is_checked_after_the_debounce() {
        let dir = scratch_dir();
        let (mut source, _offered) = source(&dir, b"v1");
        let path = source.path.clone();
        let start = Instant::now();
        let planned = source.schedule(
            event(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                &path,
            ),
            None,
        );
        assert_eq!(planned, Some(start + DEBOUNCE));
        tokio::time::advance(Duration::from_millis(2)).await;
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert_eq!(source.schedule(event(renamed, &path), planned), planned);
        let created = EventKind::Create(CreateKind::File);
        let elsewhere = dir.join("other.wasm");
        assert_eq!(
            source.schedule(event(created, &elsewhere), planned),
            planned
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Plain writes push the check back until the file has been quiet for
    /// QUIET; the writer closing the file brings it forward again.
    #[tokio::test(start_paused = true)]
    async fn plain_writes_wait_for_quiet_then_a_close_checks_at_once() {
        let dir = scratch_dir();
        let (mut source, _offered) = source(&dir, b"v1");
        let path = source.path.clone();
        let write = || {
            event(
                EventKind::Modify(ModifyKind::Data(DataChange::Content)),
                &path,
            )
        };
        let planned = source.schedule(write(), None);
        assert_eq!(planned, Some(Instant::now() + QUIET));
        tokio::time::advance(QUIET / 2).await;
        let planned = source.schedule(write(), planned);
        assert_eq!(planned, Some(Instant::now() + QUIET));
        assert!(source.writing_since.is_some());
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let planned = source.schedule(event(closed, &path), planned);
        assert_eq!(planned, Some(Instant::now() + DEBOUNCE));
        assert_eq!(source.writing_since, None);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Bytes caught mid-write are offered as not settled, offered again
    /// once SETTLE has passed without a completing event, and never a
    /// third time; the version already served is never offered.
    #[tokio::test(start_paused = true)]
    async fn a_version_caught_mid_write_is_offered_again_once_settled() {
        let dir = scratch_dir();
        let (mut source, mut offered) = source(&dir, b"v1");
        std::fs::write(&source.path, b"v1").unwrap();
        source.check().await;
        assert!(offered.try_recv().is_err(), "the served version again");

        std::fs::write(&source.path, b"v2").unwrap();
        source.writing_since = Some(Instant::now());
        source.check().await;
        let settled = |update: Update| match update.offer {
            Offer::Bytes(NewBytes { settled, bytes, .. }) => (bytes, settled),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            settled(offered.try_recv().unwrap()),
            (b"v2".to_vec(), false)
        );
        source.check().await;
        assert!(offered.try_recv().is_err(), "unsettled twice");

        tokio::time::advance(SETTLE).await;
        source.check().await;
        assert_eq!(settled(offered.try_recv().unwrap()), (b"v2".to_vec(), true));
        source.check().await;
        assert!(offered.try_recv().is_err(), "settled twice");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A deleted file is offered as unreadable once, not at every check.
    #[tokio::test(start_paused = true)]
    async fn a_deleted_file_is_reported_once() {
        let dir = scratch_dir();
        let (mut source, mut offered) = source(&dir, b"v1");
        source.check().await;
        assert!(matches!(
            offered.try_recv().unwrap().offer,
            Offer::Unreadable { .. }
        ));
        source.check().await;
        assert!(offered.try_recv().is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
