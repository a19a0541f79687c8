//! A node that serves every compute module in a directory, each on its own
//! queue `<prefix>.<name>` (name = file stem): `compute --modules DIR`.
//!
//! Each function is a [`ComputeNode`] of its own, with its own connection,
//! sandbox and reloader, so replacing a file swaps its function exactly as
//! for a single module. The directory is scanned again on every change
//! notify reports in it and every [`RESCAN`]: a new `*.wasm` file starts a
//! function, and a removed one stops its node cleanly (it cancels its
//! consumer and answers the requests it has first). All functions count
//! into one set of metrics, served on `--metrics-addr`.
//!
//! Nothing in the directory stops the node: a file whose name makes no
//! valid queue name, or that is not a usable module, is logged once and
//! skipped until its content changes; a directory that cannot be read for
//! a while (replaced by two renames, say) is logged once and the running
//! functions go on serving; a replaced directory is watched anew.

use crate::{
    metrics::{self, NodeMetrics},
    node::{ComputeNode, NodeConfig, StartError},
};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use std::{
    collections::BTreeMap,
    future::Future,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};
use tokio::{sync::oneshot, task::JoinHandle};
use tracing::{debug, info, warn};

/// The periodic scan that catches missed events.
const RESCAN: Duration = Duration::from_secs(2);
/// Wait after an event, so that a burst of events makes one scan.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// A module file changed more recently than this may still be being
/// written: a failure to start it is only logged at debug level.
const SETTLE: Duration = Duration::from_secs(2);

/// How to serve a directory of modules.
#[derive(Clone, Debug)]
pub struct FunctionsConfig {
    /// The directory whose `*.wasm` files are the functions.
    pub dir: PathBuf,
    /// Function `name` is served on queue `<queue_prefix>.<name>`.
    pub queue_prefix: String,
    /// Everything else, for every function: broker, prefetch, limits,
    /// metrics address. Its `module` and `queue` are ignored.
    pub node: NodeConfig,
}

/// A function being served.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Serves every module in `config.dir` until `shutdown` completes, then
/// stops every function cleanly.
///
/// # Errors
///
/// When the directory cannot be read or watched at start, or the metrics
/// address cannot be bound. Later, nothing in the directory is an error:
/// a module that cannot be served is logged and tried again when it
/// changes, and a directory that cannot be read is tried again.
pub async fn run(config: FunctionsConfig, shutdown: impl Future) -> anyhow::Result<()> {
    let metrics = Arc::new(NodeMetrics::new());
    let _metrics_server = match config.node.metrics_addr {
        Some(address) => Some(metrics.clone().serve(metrics::bind(address).await?)),
        None => None,
    };
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let mut watch = DirWatch::start(&config.dir, changed)?;
    module_files(&config.dir)?;
    info!(dir = %config.dir.display(), prefix = %config.queue_prefix, "serving every module in the directory");

    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut failed: BTreeMap<String, Failed> = BTreeMap::new();
    let mut unreadable: Option<String> = None;
    let mut rescan = tokio::time::interval(RESCAN);
    tokio::pin!(shutdown);
    loop {
        watch.follow(&config.dir);
        match module_files(&config.dir) {
            Ok(present) => {
                if unreadable.take().is_some() {
                    info!(dir = %config.dir.display(), "the directory can be read again");
                }
                reconcile(&config, &present, &mut running, &mut failed, &metrics).await;
            }
            // A directory gone for a moment must not stop every function:
            // nothing starts or stops until it can be read again.
            Err(err) => {
                let reason = format!("{err:#}");
                if unreadable.as_ref() != Some(&reason) {
                    warn!(cause = %reason, functions = running.len(), "cannot read the module directory; the running functions go on serving");
                    unreadable = Some(reason);
                }
            }
        }

        tokio::select! {
            _ = shutdown.as_mut() => break,
            _ = changes.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while changes.try_recv().is_ok() {}
            }
            _ = rescan.tick() => {}
        }
    }

    info!(functions = running.len(), "shutting down every function");
    let stopping = running
        .into_iter()
        .map(|(name, function)| async move { stop(&name, function).await });
    futures_util::future::join_all(stopping).await;
    Ok(())
}

/// Serves the functions in `present` that are not served yet (and have
/// not failed as they are now), and stops those whose file is gone.
async fn reconcile(
    config: &FunctionsConfig,
    present: &BTreeMap<String, PathBuf>,
    running: &mut BTreeMap<String, Running>,
    failed: &mut BTreeMap<String, Failed>,
    metrics: &Arc<NodeMetrics>,
) {
    for (name, path) in present {
        let unchanged_since_failing = failed
            .get(name)
            .is_some_and(|failure| failure.module_unchanged(path));
        if running.contains_key(name) || unchanged_since_failing {
            continue;
        }
        match start(config, name, path, metrics.clone()).await {
            Ok(function) => {
                failed.remove(name);
                running.insert(name.clone(), function);
            }
            Err(err) => report_failure(failed, name, path, &err),
        }
    }
    let removed: Vec<String> = running
        .keys()
        .filter(|name| !present.contains_key(*name))
        .cloned()
        .collect();
    for name in removed {
        info!(function = %name, "the module file is gone; stopping the function");
        let function = running.remove(&name).expect("listed as running");
        let metrics = metrics.clone();
        tokio::spawn(async move {
            stop(&name, function).await;
            metrics.remove_function(&name);
        });
    }
    failed.retain(|name, _| present.contains_key(name));
}

/// Starts serving the module at `path` as function `name`.
async fn start(
    config: &FunctionsConfig,
    name: &str,
    path: &Path,
    metrics: Arc<NodeMetrics>,
) -> Result<Running, StartError> {
    let node_config = NodeConfig {
        module: path.to_owned(),
        queue: format!("{}.{name}", config.queue_prefix),
        ..config.node.clone()
    };
    let node = ComputeNode::start_with_metrics(&node_config, metrics).await?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(node.run(async move {
        let _ = stopped.await;
    }));
    Ok(Running { stop, task })
}

/// Stops a function: its node drains and closes.
async fn stop(name: &str, function: Running) {
    let _ = function.stop.send(());
    if let Err(err) = function.task.await {
        warn!(function = %name, cause = %err, "the function's task failed");
    }
}

/// Why a function could not start.
struct Failed {
    reason: String,
    /// When the module itself was at fault, the file as it was then: it
    /// is not compiled again until it changes. `None` when the broker was
    /// at fault, which the next scan tries again.
    module_stamp: Option<FileStamp>,
    /// Whether `reason` was logged as a warning (not only at debug level,
    /// while the file was still being written).
    warned: bool,
}

impl Failed {
    fn module_unchanged(&self, path: &Path) -> bool {
        self.module_stamp.is_some() && self.module_stamp == FileStamp::of(path)
    }
}

/// Logs a function that could not start, once per distinct reason, and
/// only at debug level while its file may still be being written.
fn report_failure(
    failed: &mut BTreeMap<String, Failed>,
    name: &str,
    path: &Path,
    err: &StartError,
) {
    let reason = format!("{err:#}");
    let broker_at_fault = matches!(err, StartError::Broker(_));
    let recently_written = modified(path)
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_some_and(|age| age < SETTLE);
    let already_warned = failed
        .get(name)
        .is_some_and(|failure| failure.warned && failure.reason == reason);
    if recently_written {
        debug!(function = %name, cause = %reason, "cannot serve the module yet; it may still be being written");
    } else if !already_warned {
        warn!(function = %name, path = %path.display(), cause = %reason, "cannot serve this function; will try again when it changes");
    }
    let module_stamp = if broker_at_fault || recently_written {
        None
    } else {
        FileStamp::of(path)
    };
    failed.insert(
        name.to_owned(),
        Failed {
            reason,
            module_stamp,
            warned: !recently_written,
        },
    );
}

/// What tells one version of a file from the next without reading it:
/// its inode, size, modification time and change time. The change time
/// moves at every write and cannot be set back, so a file mended in place
/// with its old modification time (`cp -p`, an archive) is still seen as
/// changed; reading and hashing every broken file at every scan would cost
/// more for a large module.
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
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .ok()
}

/// The watch on the module directory, following the directory when it is
/// replaced (a watch stays on the directory it was made on, even after a
/// rename moves another one into its place). Without a watch the periodic
/// scan still finds every change, only later.
struct DirWatch {
    watcher: Option<RecommendedWatcher>,
    /// The device and inode of the directory being watched.
    watching: Option<(u64, u64)>,
    changed: tokio::sync::mpsc::UnboundedSender<()>,
}

impl DirWatch {
    fn start(dir: &Path, changed: tokio::sync::mpsc::UnboundedSender<()>) -> anyhow::Result<Self> {
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
fn module_files(dir: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    use anyhow::Context as _;
    let mut modules = BTreeMap::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
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
