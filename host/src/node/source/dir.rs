//! Every module in a directory (`compute --modules DIR`): function `name`
//! is the file `name.wasm`, under the limits of `name.toml` if there is
//! one.
//!
//! The directory is scanned again on every change notify reports in it
//! and every [`RESCAN`]. A new or changed file is offered (a file is read
//! only when its [`FileStamp`] changed, so a broken file costs nothing at
//! each scan), and a removed one is gone. A directory that cannot be read
//! for a while (replaced by two renames, say) is logged once and changes
//! nothing; a replaced directory is watched anew.

use super::{NewBytes, Offer, Update, Updates};
use crate::shared::sandbox::LimitsFile;
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

/// The periodic scan that catches missed events.
const RESCAN: Duration = Duration::from_secs(2);
/// Wait after an event, so that a burst of events makes one scan.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// A module file changed more recently than this may still be being
/// written.
const SETTLE: Duration = Duration::from_secs(2);

/// The module directory, watched.
pub(crate) struct DirSource {
    dir: PathBuf,
    watch: DirWatch,
    changes: mpsc::UnboundedReceiver<()>,
    /// Each function's files as they were when last offered, and whether
    /// they had settled then: they are read again only once one changes,
    /// or they settle.
    offered: BTreeMap<String, (Stamps, bool)>,
    /// Why the directory could not be read at the last scan.
    unreadable: Option<String>,
}

impl DirSource {
    /// Starts watching `dir`.
    ///
    /// # Errors
    ///
    /// When the directory cannot be read or watched.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Self> {
        // Read first: the watcher's own error for a missing directory
        // says less.
        module_files(dir)?;
        let (changed, changes) = mpsc::unbounded_channel();
        let watch = DirWatch::start(dir, changed).map_err(std::io::Error::other)?;
        Ok(DirSource {
            dir: dir.to_owned(),
            watch,
            changes,
            offered: BTreeMap::new(),
            unreadable: None,
        })
    }

    /// What changed in the directory since the last scan.
    pub(crate) async fn scan(&mut self) -> Vec<Update> {
        self.watch.follow(&self.dir);
        let present = match module_files(&self.dir) {
            Ok(present) => present,
            // A directory gone for a moment must not stop every function:
            // nothing starts or stops until it can be read again.
            Err(err) => {
                let reason = err.to_string();
                if self.unreadable.as_ref() != Some(&reason) {
                    warn!(dir = %self.dir.display(), cause = %reason, "cannot read the module directory; the functions go on serving");
                    self.unreadable = Some(reason);
                }
                return Vec::new();
            }
        };
        if self.unreadable.take().is_some() {
            info!(dir = %self.dir.display(), "the module directory can be read again");
        }
        let mut updates = Vec::new();
        for (function, path) in &present {
            let Some(module) = FileStamp::of(path) else {
                continue;
            };
            let limits_path = LimitsFile::path_beside(path);
            let stamps = Stamps {
                module,
                limits: FileStamp::of(&limits_path),
            };
            if self.offered.get(function) == Some(&(stamps, true)) {
                continue;
            }
            let settled = [Some(stamps.module), stamps.limits]
                .into_iter()
                .flatten()
                .all(|stamp| stamp.age().is_none_or(|age| age >= SETTLE));
            // A file that vanished since the listing is seen as gone at
            // the next scan.
            let Ok(bytes) = tokio::fs::read(path).await else {
                continue;
            };
            self.offered.insert(function.clone(), (stamps, settled));
            let offer = match LimitsFile::read_beside(path) {
                Ok(limits) => Offer::Bytes(NewBytes {
                    bytes,
                    limits,
                    from: path.display().to_string(),
                    settled,
                    stage: false,
                }),
                Err(error) => Offer::Unreadable {
                    from: limits_path.display().to_string(),
                    error,
                },
            };
            updates.push(Update::new(function.clone(), offer));
        }
        let gone: Vec<String> = self
            .offered
            .keys()
            .filter(|function| !present.contains_key(*function))
            .cloned()
            .collect();
        for function in gone {
            self.offered.remove(&function);
            updates.push(Update::new(function, Offer::Gone));
        }
        // Smallest first: they compile soonest, so a big module (an
        // interpreter compiles for seconds) keeps no small one waiting.
        updates.sort_by_key(|update| match &update.offer {
            Offer::Bytes(offered) => offered.bytes.len(),
            Offer::Unreadable { .. } | Offer::Gone => 0,
        });
        updates
    }

    /// Sends `first` (what a scan found already), then follows the
    /// directory until the handle is dropped, sending what changes to
    /// `updates`.
    pub(crate) fn follow(mut self, first: Vec<Update>, updates: Updates) -> AbortOnDropHandle<()> {
        AbortOnDropHandle::new(tokio::spawn(async move {
            for update in first {
                if updates.send(update).await.is_err() {
                    return;
                }
            }
            let mut rescan = tokio::time::interval(RESCAN);
            rescan.tick().await;
            loop {
                tokio::select! {
                    _ = self.changes.recv() => {
                        tokio::time::sleep(DEBOUNCE).await;
                        while self.changes.try_recv().is_ok() {}
                    }
                    _ = rescan.tick() => {}
                }
                for update in self.scan().await {
                    if updates.send(update).await.is_err() {
                        return;
                    }
                }
            }
        }))
    }
}

/// What tells one version of a function's files from the next: its
/// module's stamp, and its limits file's, if it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamps {
    module: FileStamp,
    limits: Option<FileStamp>,
}

/// What tells one version of a file from the next without reading it:
/// its inode, size, modification time and change time. The change time
/// moves at every write and cannot be set back, so a file mended in place
/// with its old modification time (`cp -p`, an archive) is still seen as
/// changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            inode: metadata.ino(),
            len: metadata.len(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        })
    }

    /// How long ago the file last changed.
    fn age(&self) -> Option<Duration> {
        let (seconds, nanos) = self.changed;
        let changed = SystemTime::UNIX_EPOCH
            + Duration::new(u64::try_from(seconds).ok()?, u32::try_from(nanos).ok()?);
        SystemTime::now().duration_since(changed).ok()
    }
}

/// The watch on the module directory, following the directory when it is
/// replaced (a watch stays on the directory it was made on, even after a
/// rename moves another one into its place). Without a watch the periodic
/// scan still finds every change, only later.
struct DirWatch {
    watcher: Option<RecommendedWatcher>,
    /// The device and inode of the directory being watched.
    watching: Option<(u64, u64)>,
    changed: mpsc::UnboundedSender<()>,
}

impl DirWatch {
    fn start(dir: &Path, changed: mpsc::UnboundedSender<()>) -> notify::Result<Self> {
        let mut watch = DirWatch {
            watcher: None,
            watching: None,
            changed,
        };
        watch.watcher = Some(watch.watch(dir)?);
        watch.watching = identity(dir);
        Ok(watch)
    }

    fn watch(&self, dir: &Path) -> notify::Result<RecommendedWatcher> {
        let changed = self.changed.clone();
        let mut watcher = notify::recommended_watcher(move |_| {
            let _ = changed.send(());
        })?;
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    }

    /// Watches `dir` again if it is not the directory being watched.
    fn follow(&mut self, dir: &Path) {
        let now = identity(dir);
        if now.is_none() || now == self.watching {
            return;
        }
        match self.watch(dir) {
            Ok(watcher) => {
                debug!(dir = %dir.display(), "the module directory was replaced; watching the new one");
                self.watcher = Some(watcher);
                self.watching = now;
            }
            Err(err) => debug!(cause = %err, "cannot watch the new module directory yet"),
        }
    }
}

fn identity(dir: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(dir)
        .ok()
        .map(|metadata| (metadata.dev(), metadata.ino()))
}

/// The `*.wasm` files in `dir`, by function name (file stem). Hidden files
/// (a name starting with `.`) are left out: that is where a module is
/// written before it is renamed into place.
fn module_files(dir: &Path) -> std::io::Result<BTreeMap<String, PathBuf>> {
    let mut modules = BTreeMap::new();
    let entries = std::fs::read_dir(dir)?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_stem().and_then(|stem| stem.to_str()) else {
            continue;
        };
        let is_module = path
            .extension()
            .is_some_and(|extension| extension == "wasm")
            && !name.starts_with('.')
            && path.is_file();
        if is_module {
            modules.insert(name.to_owned(), path.clone());
        }
    }
    Ok(modules)
}
