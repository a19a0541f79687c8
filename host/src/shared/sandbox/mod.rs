//! The WebAssembly sandbox: a compute module is compiled and type-checked
//! once, then every request runs in a fresh instance of it, under a CPU
//! deadline and a memory cap, with no capabilities (no files, environment,
//! arguments or network). What a guest prints goes to the node's log,
//! capped at [`GUEST_OUTPUT_CAP`] bytes a request, its control characters
//! escaped.
//!
//! The expensive parts ([`Engine`], the linker, the pre-instantiated
//! component) are shared; only the [`Store`](wasmtime::Store) is per
//! request, so no state leaks from one request to the next. One sandbox
//! serves every function of a node: one engine, one epoch ticker, one
//! instance pool.
//!
//! # Layout
//!
//! - this file: [`Sandbox`] and loading a module ([`LoadError`]).
//! - `limits`: what a request may use: the node's [`Limits`], and a
//!   function's own, from `NAME.toml` beside its module
//!   ([`FunctionLimits`]).
//! - `pool`: the engine's configuration, its instance pool sized once.
//! - `fair`: how the pool's instances are shared between functions, so
//!   that a flooded one cannot take them all.
//! - `cache`: compiled code kept on disk ([`CompileCache`]), checked
//!   before it is loaded.
//! - `module`: [`ComputeModule`], running one request, [`ComputeError`].
//! - `header`: what is wrong with bytes that are not a component at all.
//! - `guest`: what a guest's store holds (its WASI view, its memory cap).
//! - `output`: what a guest prints, captured and capped per request, and
//!   the end of its stderr, a crash's reason.
//! - `epoch`: the ticker thread behind deadlines and fair scheduling.

mod cache;
mod epoch;
mod fair;
mod guest;
mod header;
mod limits;
mod module;
mod output;
mod pool;
#[cfg(test)]
mod tests;

pub use cache::{CacheError, CacheSettings, CompileCache};
pub use header::NotAComponent;
pub use limits::{FunctionLimits, Limits, LimitsError, LimitsFile};
pub use module::{ComputeError, ComputeModule, Loaded};
pub use output::GUEST_OUTPUT_CAP;

use epoch::EpochTicker;
use fair::FairPool;
use guest::GuestState;
use sha2::{Digest as _, Sha256};
use std::{path::Path, sync::Arc, time::Instant};
use tracing::debug;
use wasmtime::{
    Engine,
    component::{Component, Linker},
};

mod gen_ {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "compute-function",
        exports: { default: async },
    });
}
use gen_::ComputeFunctionPre;

/// Requests a sandbox made with [`Sandbox::new`] runs at once.
pub const DEFAULT_INSTANCES: u32 = 256;

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The module's path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The limits file beside it cannot be read, or asks for more than
    /// the node allows.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// The bytes are not a binary component at all.
    #[error(transparent)]
    NotAComponent(#[from] NotAComponent),
    /// A component, but not one this sandbox can serve: it does not
    /// compile, does not provide the compute contract, or imports what
    /// the sandbox does not offer.
    #[error("{0:#}")]
    Unusable(wasmtime::Error),
}

/// Why the sandbox could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The engine or the linker refused the configuration.
    #[error("cannot set up the WebAssembly engine: {0:#}")]
    Engine(wasmtime::Error),
    /// The epoch ticker's thread could not be started.
    #[error("cannot start the epoch ticker thread: {0}")]
    EpochTicker(std::io::Error),
}

/// The shared engine and linker that compute modules are loaded into.
/// Cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    engine: Engine,
    linker: Arc<Linker<GuestState>>,
    limits: Limits,
    /// The instances the pool holds for requests: a request waits for one
    /// rather than failing on a full pool, and each function served has a
    /// fair part of them.
    instances: FairPool,
    /// Where compiled code is kept between runs, if anywhere.
    cache: Option<CompileCache>,
    /// Ticks while guests run.
    epoch: Arc<EpochTicker>,
}

impl Sandbox {
    /// A sandbox whose requests run under `limits`, [`DEFAULT_INSTANCES`]
    /// at a time at most.
    pub fn new(limits: Limits) -> Result<Self, SandboxError> {
        Self::with_capacity(limits, DEFAULT_INSTANCES)
    }

    /// A sandbox whose requests run under `limits`, `instances` at a time
    /// at most, across every module loaded into it; more wait for a free
    /// instance. Each function has an equal part of them, and may use more
    /// only from what the others leave idle (`fair` says how).
    ///
    /// Instances come from a pool made here: memories, tables and stacks
    /// are reserved once and reused, so a request's fresh instance costs
    /// no system calls to map and unmap them.
    pub fn with_capacity(limits: Limits, instances: u32) -> Result<Self, SandboxError> {
        let engine = pool::engine(&limits, instances).map_err(SandboxError::Engine)?;
        let mut linker = Linker::new(&engine);
        // Rust's standard library imports WASI even for a pure function
        // (its panic path writes to stderr). Each request gets a WASI
        // context with nothing in it but a capped stdout and stderr, so
        // these imports grant nothing.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(SandboxError::Engine)?;
        // The contract's own import: where a guest says why it panicked.
        gen_::ComputeFunction::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |state: &mut GuestState| state,
        )
        .map_err(SandboxError::Engine)?;
        Ok(Sandbox {
            epoch: Arc::new(EpochTicker::start(engine.clone()).map_err(SandboxError::EpochTicker)?),
            engine,
            linker: Arc::new(linker),
            limits,
            instances: FairPool::new(instances),
            cache: None,
        })
    }

    /// The same sandbox, keeping the code it compiles in `cache` and
    /// loading it from there instead of compiling again; `None` compiles
    /// every time.
    pub fn with_compile_cache(mut self, cache: impl Into<Option<CompileCache>>) -> Self {
        self.cache = cache.into();
        self
    }

    /// The node's limits: the most a request of any function may use.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Compiles the component at `path` and checks that it provides the
    /// compute contract. The function's name is the file stem, and its
    /// limits are those of the limits file beside it (`NAME.toml`), if
    /// there is one.
    pub fn load(&self, path: &Path) -> Result<ComputeModule, LoadError> {
        let file = LimitsFile::read_beside(path)
            .map_err(|source| LimitsError::unreadable_beside(path, source))?;
        self.load_limited(path, file.as_ref())
    }

    /// Compiles the component at `path`, as [`load`](Self::load) does,
    /// under the limits file `limits` already read (none: the node's
    /// limits).
    pub fn load_limited(
        &self,
        path: &Path,
        limits: Option<&LimitsFile>,
    ) -> Result<ComputeModule, LoadError> {
        let own = FunctionLimits::of(limits)?;
        // Checked before compiling: it is the cheaper fault to report.
        own.within(self.limits)?;
        let bytes = std::fs::read(path).map_err(|source| LoadError::Unreadable {
            path: path.display().to_string(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "compute".to_owned());
        Ok(self.load_bytes(&name, &bytes)?.limited(own)?)
    }

    /// Compiles `bytes` (a binary component) as function `name` and checks
    /// that it provides the compute contract with nothing but the imports
    /// the sandbox offers.
    /// With a compile cache, code compiled before (by this node, or
    /// another using the same cache) is loaded instead of compiled.
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<ComputeModule, LoadError> {
        header::check(bytes)?;
        let digest = digest(bytes);
        let started = Instant::now();
        let cached = self
            .cache
            .as_ref()
            .and_then(|cache| cache.get(&self.engine, &digest));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(component) => component,
            None => {
                let component =
                    Component::from_binary(&self.engine, bytes).map_err(LoadError::Unusable)?;
                if let Some(cache) = &self.cache {
                    cache.put(&self.engine, &digest, &component);
                }
                component
            }
        };
        // Above the node's limit, the pool has refused it already.
        let memory_to_start = memory_to_start(&component);
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(ComputeFunctionPre::new)
            .map_err(LoadError::Unusable)?;
        let loaded = Loaded {
            from_cache,
            took: started.elapsed(),
        };
        debug!(function = name, %digest, "{loaded}");
        Ok(ComputeModule::new(
            name,
            digest,
            loaded,
            memory_to_start,
            pre,
            self.clone(),
        ))
    }
}

/// The linear memory, in bytes, that an instance of `component` has
/// before it runs any code: the largest initial size of its memories.
fn memory_to_start(component: &Component) -> usize {
    let pages = component
        .resources_required()
        .and_then(|required| required.max_initial_memory_size)
        .unwrap_or(0);
    usize::try_from(pages.saturating_mul(WASM_PAGE)).unwrap_or(usize::MAX)
}

/// The size of a WebAssembly page: the unit of a memory's size.
const WASM_PAGE: u64 = 64 << 10;

/// `sha256:<hex>` of `bytes`: the name of one exact module version.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}
