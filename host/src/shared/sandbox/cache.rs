//! Compiled code kept on disk, so that a node's restart, a rollback or a
//! second node on the same host does not compile a module again.
//!
//! An entry is named by the module's digest and the engine's
//! compatibility hash (its version and every setting that changes the
//! code), so another engine never reads it. Deserializing compiled code
//! trusts it as much as running it, so every entry carries an HMAC-SHA256
//! of its bytes under a key kept in the cache directory (mode 0600, made
//! at first use): an entry this node's cache did not write (copied in,
//! cut short, flipped bits) fails the check, is logged, removed and
//! compiled again. Entries are written to a temporary file and renamed,
//! so nodes sharing the directory never read half an entry. After each
//! write the oldest entries are removed until the directory is within its
//! size bound.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use std::{
    fs,
    hash::{Hash as _, Hasher as _},
    io::{self, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};
use tracing::{debug, warn};
use wasmtime::{Engine, component::Component};

type Tag = Hmac<Sha256>;

/// The key's file, in the cache directory.
const KEY_FILE: &str = "key";
/// What an entry's name ends with.
const ENTRY_SUFFIX: &str = ".compiled";
const TAG_LEN: usize = 32;

/// Where compiled code is kept, and how much of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// The directory; made if missing.
    pub dir: PathBuf,
    /// The most bytes of entries kept; the oldest go first.
    pub max_bytes: u64,
    /// Whether a directory that cannot be used fails the start. When the
    /// directory is only the default, the node says so and compiles
    /// every time instead.
    pub required: bool,
}

impl CacheSettings {
    /// The most a cache holds when not told: room for a few dozen
    /// compiled Python or JavaScript components.
    pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

    /// `$XDG_CACHE_HOME/compute-node/compiled`, or
    /// `$HOME/.cache/compute-node/compiled`; `None` when neither variable
    /// is set.
    pub fn default_dir() -> Option<PathBuf> {
        let cache_home = std::env::var_os("XDG_CACHE_HOME")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
        Some(cache_home.join("compute-node").join("compiled"))
    }

    /// Opens the cache these settings describe.
    pub fn open(&self) -> Result<CompileCache, CacheError> {
        CompileCache::open(&self.dir, self.max_bytes)
    }

    /// Opens the cache, or, when it cannot be used and is not
    /// [`required`](Self::required), says so and does without: every
    /// module is then compiled.
    pub fn open_if_usable(&self) -> Result<Option<CompileCache>, CacheError> {
        match self.open() {
            Ok(cache) => Ok(Some(cache)),
            Err(err) if !self.required => {
                warn!(cause = %err, "running without a compile cache: every module is compiled");
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }
}

/// A directory of compiled components, bounded in size.
#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
    key: [u8; 32],
    max_bytes: u64,
}

/// Why the cache could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {dir} as the compile cache: {source}")]
pub struct CacheError {
    dir: String,
    source: io::Error,
}

impl CompileCache {
    /// Opens (creating it if needed) the cache in `dir`, holding at most
    /// `max_bytes` of entries.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, CacheError> {
        let error = |source| CacheError {
            dir: dir.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(error)?;
        let key = read_or_make_key(dir).map_err(error)?;
        Ok(CompileCache {
            dir: dir.to_owned(),
            key,
            max_bytes,
        })
    }

    /// The compiled component for `digest`, if this cache holds a sound
    /// entry for it.
    // The one place in the crate that needs `unsafe`: wasmtime cannot
    // check compiled code it loads, so loading it is unsafe; the tag check
    // before it is what makes it sound.
    #[allow(unsafe_code)]
    pub(super) fn get(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.entry(engine, digest);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
            Err(err) => {
                warn!(path = %path.display(), cause = %err, "cannot read a compile cache entry; compiling");
                return None;
            }
        };
        let Some(code) = self.verified(&bytes) else {
            warn!(path = %path.display(), "a compile cache entry this node did not write, or damaged; removing it and compiling");
            let _ = fs::remove_file(&path);
            return None;
        };
        // SAFETY: the bytes are exactly what `put` wrote from
        // `Component::serialize` of this engine's kind: the tag under the
        // cache's own key proves it, and the name holds the engine's
        // compatibility hash.
        match unsafe { Component::deserialize(engine, code) } {
            Ok(component) => Some(component),
            Err(err) => {
                warn!(path = %path.display(), cause = %err, "cannot load a compile cache entry; removing it and compiling");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Keeps `component`, compiled from the module `digest`. A failure is
    /// logged and costs only a compile next time.
    pub(super) fn put(&self, engine: &Engine, digest: &str, component: &Component) {
        let written = component
            .serialize()
            .map_err(|err| io::Error::other(err.to_string()))
            .and_then(|code| self.write(&self.entry(engine, digest), &code));
        match written {
            Ok(()) => self.trim(),
            Err(err) => warn!(cause = %err, "cannot write to the compile cache"),
        }
    }

    fn write(&self, path: &Path, code: &[u8]) -> io::Result<()> {
        let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut file = fs::File::create(&temporary)?;
        file.write_all(&self.tag(code))?;
        file.write_all(code)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    }

    /// Removes the oldest entries until the rest fit the bound.
    fn trim(&self) {
        let Ok(listing) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<_> = listing
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(ENTRY_SUFFIX))
            .filter_map(|entry| {
                let meta = entry.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), entry.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            debug!(path = %path.display(), "removing the oldest compile cache entry to stay within the bound");
            if fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }

    /// The entry for module `digest` compiled by `engine`.
    fn entry(&self, engine: &Engine, digest: &str) -> PathBuf {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let module = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir
            .join(format!("{module}-{:016x}{ENTRY_SUFFIX}", hasher.finish()))
    }

    /// The HMAC of `code` under the cache's key, not yet finished.
    fn mac(&self, code: &[u8]) -> Tag {
        let mut mac = Tag::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(code);
        mac
    }

    fn tag(&self, code: &[u8]) -> [u8; TAG_LEN] {
        self.mac(code).finalize().into_bytes().into()
    }

    /// The code of an entry whose tag is right.
    fn verified<'a>(&self, entry: &'a [u8]) -> Option<&'a [u8]> {
        let (tag, code) = entry.split_at_checked(TAG_LEN)?;
        self.mac(code).verify_slice(tag).ok()?;
        Some(code)
    }
}

/// The cache's key: read, or made once, readable by this user only. Made
/// in a temporary file and linked into place, so two nodes starting at
/// once agree on one key.
fn read_or_make_key(dir: &Path) -> io::Result<[u8; 32]> {
    let path = dir.join(KEY_FILE);
    if !path.exists() {
        let mut key = [0; 32];
        getrandom::fill(&mut key).map_err(io::Error::other)?;
        let temporary = dir.join(format!("{KEY_FILE}.tmp.{}", std::process::id()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(&key)?;
        file.sync_all()?;
        let linked = fs::hard_link(&temporary, &path);
        let _ = fs::remove_file(&temporary);
        match linked {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
    }
    let meta = fs::metadata(&path)?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(io::Error::other(format!(
            "{} may be read by other users; make it mode 0600",
            path.display()
        )));
    }
    let bytes = fs::read(&path)?;
    bytes
        .try_into()
        .map_err(|_| io::Error::other(format!("{} is not a 32-byte key", path.display())))
}
