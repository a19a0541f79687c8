//! The compute modules the tests serve, and private directories of module
//! files.

use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The default compute module, as built into `modules/`.
pub fn increase_module() -> PathBuf {
    built_module("increase")
}

/// A compute module built from `guest/examples/NAME.rs` into `modules/`.
pub fn built_module(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../modules/{name}.wasm"))
}

/// The hostile guest `tests/nosy-guest`, built into `tests/fixtures/`.
pub fn nosy_module() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/nosy.wasm")
}

/// A private directory for one test's files, removed when dropped, also
/// when the test fails.
pub struct ModuleDir {
    pub path: PathBuf,
}

impl ModuleDir {
    /// A new, empty directory.
    pub fn empty() -> Self {
        let path = std::env::temp_dir().join(format!("compute-test-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        ModuleDir { path }
    }

    /// A new directory holding `work.wasm`, a copy of `module`.
    pub fn with_working_copy(module: &Path) -> Self {
        let dir = Self::empty();
        std::fs::copy(module, dir.working_copy()).unwrap();
        dir
    }

    /// `name` inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// The working copy the node serves.
    pub fn working_copy(&self) -> PathBuf {
        self.join("work.wasm")
    }

    /// Publishes `bytes` as the working copy the safe way: written to a
    /// temporary name in the same directory, then renamed over it.
    pub fn publish(&self, bytes: &[u8]) {
        self.publish_as("work", bytes);
    }

    /// Publishes `bytes` as `NAME.wasm` the safe way: a hidden temporary
    /// name, then a rename.
    pub fn publish_as(&self, name: &str, bytes: &[u8]) {
        self.write_safely(&format!("{name}.wasm"), bytes);
    }

    /// Writes `text` as the limits file of function `name`, `NAME.toml`,
    /// the same safe way.
    pub fn limit(&self, name: &str, text: &str) {
        self.write_safely(&format!("{name}.toml"), text.as_bytes());
    }

    fn write_safely(&self, file_name: &str, bytes: &[u8]) {
        let temporary = self.join(format!(".{file_name}.{}", Uuid::new_v4()));
        std::fs::write(&temporary, bytes).unwrap();
        std::fs::rename(&temporary, self.join(file_name)).unwrap();
    }
}

impl Drop for ModuleDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
