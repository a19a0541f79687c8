//! The WebAssembly sandbox: a compute module is compiled and type-checked
//! once, then every request runs in a fresh instance of it, under a CPU
//! deadline and a memory cap, with no capabilities (no files, environment,
//! arguments or network). What a guest prints goes to the node's log,
//! capped at [`GUEST_OUTPUT_CAP`] bytes a request, its control characters
//! escaped.
//!
//! The expensive parts ([`Engine`], the linker, the pre-instantiated
//! component) are shared; only the [`Store`] is per request, so no state
//! leaks from one request to the next.

use crate::{escaped::Escaped, lock::lock, wire::ErrorKind};
use anyhow::Context as _;
use futures_util::FutureExt;
use sha2::{Digest as _, Sha256};
use std::{
    path::Path,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    thread,
    time::Duration,
};
use tokio::io::AsyncWrite;
use tracing::info;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap, UpdateDeadline,
    component::{Component, Linker, ResourceTable},
};
use wasmtime_wasi::{
    WasiCtx, WasiCtxView, WasiView,
    cli::{IsTerminal, StdoutStream},
};

mod gen_ {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "compute-function",
        exports: { default: async },
    });
}
use gen_::{ComputeFunctionPre, Failure};

/// How often the engine's epoch advances; the granularity of the deadline,
/// and how long a guest runs before it lets other requests on its thread
/// run.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Requests a sandbox made with [`Sandbox::new`] runs at once.
pub const DEFAULT_INSTANCES: u32 = 256;
/// Pool slots beyond the requested capacity, so that an instance being torn
/// down never makes a new request wait or fail.
const SPARE_INSTANCES: u32 = 16;
/// Core instances, memories and tables one component may have: ours have
/// one memory and a handful of core instances; components built through
/// the WASI preview 1 adapter have two memories.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
/// Bytes of a pooled memory or table that are zeroed in place for reuse.
const KEEP_RESIDENT: usize = 64 << 10;

/// What a guest may print (stdout and stderr together) in one request
/// before the rest is dropped, so a guest cannot flood the node's log.
pub const GUEST_OUTPUT_CAP: usize = 4096;

/// What one request may use.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// CPU time the guest may run for one request (instantiation included).
    /// Counted only while the guest's own code runs.
    pub timeout: Duration,
    /// Wall-clock time one request may take in the sandbox, whatever it
    /// does: running, waiting for a thread, or blocked in a host call
    /// (a WASI sleep or poll), which [`timeout`](Self::timeout) does not
    /// count.
    pub wall_timeout: Duration,
    /// Linear memory the guest may grow to, in bytes.
    pub memory: usize,
    /// The largest request body the guest is given, and the largest reply
    /// body it may return, in bytes.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(1),
            wall_timeout: Duration::from_secs(10),
            memory: 64 << 20,
            max_body: 1 << 20,
        }
    }
}

/// Why a request produced no reply body. Each case maps to one
/// [`ErrorKind`] on the wire; the `Display` text becomes the reply body.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The function rejected its input.
    #[error("{0}")]
    BadRequest(String),
    /// The function reported that it could not compute a result.
    #[error("{0}")]
    Failed(String),
    /// The function ran past the deadline and was stopped.
    #[error("the compute function ran longer than {0:?} and was stopped")]
    Timeout(Duration),
    /// The function took longer than the wall-clock limit (blocked in a
    /// host call, say) and its instance was dropped.
    #[error(
        "the compute function did not finish within {0:?} of wall-clock time (--guest-wall-timeout) and was stopped"
    )]
    Stalled(Duration),
    /// The function trapped (a panic, a stack overflow, memory past the
    /// cap, ...).
    #[error("the compute function crashed: {0}")]
    Crashed(String),
    /// The request or the reply is larger than [`Limits::max_body`].
    #[error(
        "the {body} body is {size} bytes, more than the node's limit of {limit} bytes (--max-body)"
    )]
    TooLarge {
        /// `request` or `reply`.
        body: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
}

impl ComputeError {
    /// The kind of error reply this becomes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ComputeError::BadRequest(_) => ErrorKind::BadRequest,
            ComputeError::Failed(_) | ComputeError::Crashed(_) => ErrorKind::ComputeFailed,
            ComputeError::Timeout(_) | ComputeError::Stalled(_) => ErrorKind::Timeout,
            ComputeError::TooLarge { .. } => ErrorKind::TooLarge,
        }
    }
}

/// The shared engine and linker that compute modules are loaded into.
/// Cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    engine: Engine,
    linker: Arc<Linker<GuestState>>,
    limits: Limits,
    _epoch: Arc<EpochTicker>,
}

impl Sandbox {
    /// A sandbox whose requests run under `limits`, [`DEFAULT_INSTANCES`]
    /// at a time at most.
    pub fn new(limits: Limits) -> anyhow::Result<Self> {
        Self::with_capacity(limits, DEFAULT_INSTANCES)
    }

    /// A sandbox whose requests run under `limits`, `instances` at a time
    /// at most (a node's prefetch).
    ///
    /// Instances come from a pool made here: memories, tables and stacks
    /// are reserved once and reused, so a request's fresh instance costs
    /// no system calls to map and unmap them.
    pub fn with_capacity(limits: Limits, instances: u32) -> anyhow::Result<Self> {
        let slots = instances.saturating_add(SPARE_INSTANCES);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .total_memories(slots.saturating_mul(MEMORIES_PER_COMPONENT))
            .max_memory_size(limits.memory)
            .max_tables_per_component(MEMORIES_PER_COMPONENT)
            .total_tables(slots.saturating_mul(MEMORIES_PER_COMPONENT))
            .table_elements(MAX_TABLE_ELEMENTS)
            .total_stacks(slots)
            // Compute functions touch little memory: zeroing it in place
            // is cheaper than giving it back to the kernel and faulting
            // it in again at the next request.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            // A slot's address space is what a guest may use, not the
            // default 4 GiB: with hundreds of slots that adds up.
            .memory_reservation(limits.memory as u64);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        // Rust's standard library imports WASI even for a pure function
        // (its panic path writes to stderr). Each request gets a WASI
        // context with nothing in it but a capped stdout and stderr, so
        // these imports grant nothing.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        Ok(Sandbox {
            _epoch: Arc::new(
                EpochTicker::start(engine.clone())
                    .context("cannot start the epoch ticker thread")?,
            ),
            engine,
            linker: Arc::new(linker),
            limits,
        })
    }

    /// Compiles the component at `path` and checks that it provides the
    /// compute contract. The function's name is the file stem.
    pub fn load(&self, path: &Path) -> anyhow::Result<ComputeModule> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "compute".to_owned());
        self.load_bytes(&name, &bytes)
            .with_context(|| format!("{} is not a usable compute module", path.display()))
    }

    /// Compiles `bytes` (a binary component) as function `name` and checks
    /// that it provides the compute contract with nothing but the imports
    /// the sandbox offers.
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> anyhow::Result<ComputeModule> {
        check_header(bytes)?;
        let component = Component::from_binary(&self.engine, bytes)?;
        let pre = ComputeFunctionPre::new(self.linker.instantiate_pre(&component)?)?;
        Ok(ComputeModule {
            name: name.into(),
            digest: digest(bytes).into(),
            pre,
            sandbox: self.clone(),
        })
    }

    /// Epoch ticks that make up the per-request deadline.
    fn deadline_ticks(&self) -> u64 {
        let ticks = self
            .limits
            .timeout
            .as_nanos()
            .div_ceil(EPOCH_TICK.as_nanos());
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }
}

/// A compiled, type-checked compute function, ready to run requests.
/// Cheap to clone; clones share the compiled code.
#[derive(Clone)]
pub struct ComputeModule {
    name: Arc<str>,
    digest: Arc<str>,
    pre: ComputeFunctionPre<GuestState>,
    sandbox: Sandbox,
}

impl ComputeModule {
    /// The function's name (the module's file stem), sent in `x-function`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The digest of the module's bytes (`sha256:<hex>`), sent in
    /// `x-module-digest` so a caller can tell which version answered.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Runs one request in a fresh instance. A request over the size limit
    /// is refused without running the guest.
    pub async fn compute(&self, request: &[u8]) -> Result<Vec<u8>, ComputeError> {
        let limits = self.sandbox.limits;
        let too_large = |body, size| ComputeError::TooLarge {
            body,
            size,
            limit: limits.max_body,
        };
        if request.len() > limits.max_body {
            return Err(too_large("request", request.len()));
        }
        let mut store = Store::new(&self.sandbox.engine, GuestState::new(limits.memory));
        store.limiter(|state| &mut state.limits);
        // The guest runs on the node's async threads: at every epoch tick
        // it yields, so a runaway guest delays no other request, and after
        // the deadline's worth of ticks of running it is stopped.
        let mut ticks_left = self.sandbox.deadline_ticks();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            ticks_left -= 1;
            Ok(if ticks_left == 0 {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });

        let started = tokio::time::Instant::now();
        // Past the wall-clock limit the call is dropped where it waits,
        // and the store (the instance) with it. Most calls finish in their
        // first poll, well within a tick: only one that does not is given
        // a timer (a timer on every call measured 8.0 us a call, against
        // 5.2 us without).
        let outcome = {
            let mut run = std::pin::pin!(async {
                let instance = self.pre.instantiate_async(&mut store).await?;
                instance.call_compute(&mut store, request).await
            });
            match FutureExt::now_or_never(run.as_mut()) {
                Some(outcome) => Ok(outcome),
                None => tokio::time::timeout_at(started + limits.wall_timeout, run).await,
            }
        };
        if let Some(output) = store.into_data().output {
            output.log(self.name());
        }
        let Ok(outcome) = outcome else {
            return Err(ComputeError::Stalled(limits.wall_timeout));
        };
        match outcome {
            Ok(Ok(reply)) if reply.len() > limits.max_body => Err(too_large("reply", reply.len())),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(Failure::BadRequest(message))) => Err(ComputeError::BadRequest(message)),
            Ok(Err(Failure::ComputeFailed(message))) => Err(ComputeError::Failed(message)),
            Err(err) if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
                Err(ComputeError::Timeout(limits.timeout))
            }
            Err(err) => Err(ComputeError::Crashed(crash_reason(&err))),
        }
    }
}

/// Says in plain words what is wrong with a file that is not a binary
/// component at all, which the parser would report as a byte dump.
fn check_header(bytes: &[u8]) -> anyhow::Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE: &[u8] = &[1, 0, 0, 0];
    anyhow::ensure!(!bytes.is_empty(), "the file is empty");
    anyhow::ensure!(
        bytes.starts_with(MAGIC),
        "not a WebAssembly file (it does not start with \\0asm)"
    );
    anyhow::ensure!(
        bytes.get(4..8) != Some(CORE_MODULE),
        "a core WebAssembly module, not a component; build the guest for wasm32-wasip2 (or wrap the module with `wasm-tools component new`)"
    );
    Ok(())
}

/// Why a guest crashed, in a line: the trap (`call stack exhausted`,
/// `wasm 'unreachable' instruction executed`) or the root cause, without
/// the wasm backtrace, which tells a caller nothing and can be long.
fn crash_reason(err: &wasmtime::Error) -> String {
    match err.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => err.root_cause().to_string(),
    }
}

/// `sha256:<hex>` of `bytes`: the name of one exact module version.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// What a guest's store holds: an empty WASI context and where the guest's
/// output goes, both made on the guest's first WASI call, and the memory
/// cap.
struct GuestState {
    /// Built lazily: our `no_std` modules import no WASI and never need it,
    /// and building one costs tens of microseconds per request.
    wasi: Option<WasiCtx>,
    output: Option<GuestOutput>,
    table: ResourceTable,
    limits: MemoryCap,
}

impl GuestState {
    fn new(memory: usize) -> Self {
        GuestState {
            wasi: None,
            output: None,
            table: ResourceTable::new(),
            limits: MemoryCap { bytes: memory },
        }
    }
}

/// Caps a guest's linear memory. Growing past the cap traps with a reason
/// the caller can read, rather than failing the grow, which a guest's
/// allocator would turn into a bare `unreachable`.
struct MemoryCap {
    bytes: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.bytes {
            wasmtime::bail!(
                "the compute function needed {desired} bytes of memory, more than the node's limit of {} bytes (--guest-memory)",
                self.bytes
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Table elements a guest may have: far more than any compute function
/// needs, far less than would strain the node.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let GuestState {
            wasi,
            output,
            table,
            ..
        } = self;
        WasiCtxView {
            // No preopened directories, no environment, no arguments, no
            // sockets: the builder grants none of them unless asked.
            ctx: wasi.get_or_insert_with(|| {
                let output = output.get_or_insert_with(GuestOutput::default);
                WasiCtx::builder()
                    .stdout(output.clone())
                    .stderr(output.clone())
                    .build()
            }),
            table,
        }
    }
}

/// What a guest printed in one request, stdout and stderr interleaved:
/// the first [`GUEST_OUTPUT_CAP`] bytes kept, the rest counted and dropped.
/// Writes never fail, so a chatty guest is not turned into a crashing one.
#[derive(Clone, Default)]
struct GuestOutput(Arc<Mutex<CapturedOutput>>);

#[derive(Default)]
struct CapturedOutput {
    kept: Vec<u8>,
    dropped: usize,
}

impl GuestOutput {
    /// Logs what the guest printed, if anything.
    fn log(&self, function: &str) {
        let captured = lock(&self.0);
        if captured.kept.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&captured.kept);
        info!(
            function,
            dropped_bytes = captured.dropped,
            "guest output: {}",
            Escaped(text.trim_end())
        );
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut captured = lock(&self.0);
        let room = GUEST_OUTPUT_CAP.saturating_sub(captured.kept.len());
        let kept = bytes.len().min(room);
        captured.kept.extend_from_slice(&bytes[..kept]);
        captured.dropped += bytes.len() - kept;
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] so that guests past
/// their deadline trap. Stops when dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new().name("epoch-ticker".into()).spawn({
            let stop = stop.clone();
            move || {
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            }
        })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn increase() -> ComputeModule {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../modules/increase.wasm");
        Sandbox::new(Limits::default())
            .unwrap()
            .load(&path)
            .unwrap()
    }

    #[tokio::test]
    async fn runs_the_default_module() {
        let module = increase();
        assert_eq!(module.name(), "increase");
        assert_eq!(module.compute(b"41").await.unwrap(), b"42");
    }

    #[tokio::test]
    async fn maps_guest_failures_to_error_kinds() {
        let module = increase();
        let err = module.compute(b"forty").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);
        let err = module
            .compute(i64::MAX.to_string().as_bytes())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ComputeFailed);
    }

    #[tokio::test]
    async fn refuses_bodies_over_the_size_limit() {
        let sandbox = Sandbox::new(Limits {
            max_body: 4,
            ..Limits::default()
        })
        .unwrap();
        let module = sandbox
            .load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../modules/increase.wasm"))
            .unwrap();
        let err = module.compute(b"123456").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        assert_eq!(
            err.to_string(),
            "the request body is 6 bytes, more than the node's limit of 4 bytes (--max-body)"
        );
        let err = module.compute(b"9999").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the reply body is 5 bytes, more than the node's limit of 4 bytes (--max-body)"
        );
        assert_eq!(module.compute(b"998").await.unwrap(), b"999");
    }

    /// A request as large as `--max-body` allows reaches the guest, whose
    /// memory grows to hold it, and is answered by the function itself.
    #[tokio::test]
    async fn a_request_of_the_largest_size_reaches_the_guest() {
        let module = increase();
        let mut body = vec![b' '; Limits::default().max_body];
        body[..2].copy_from_slice(b"41");
        assert_eq!(module.compute(&body).await.unwrap(), b"42");
        let err = module
            .compute(&vec![b'9'; Limits::default().max_body])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest, "{err}");
    }

    #[tokio::test]
    async fn stops_a_guest_that_never_returns() {
        let sandbox = Sandbox::new(Limits {
            timeout: Duration::from_millis(50),
            ..Limits::default()
        })
        .unwrap();
        let spin = sandbox
            .load_bytes("spin", &component("(loop $l (br $l)) unreachable"))
            .unwrap();
        let err = spin.compute(b"1").await.unwrap_err();
        assert!(matches!(err, ComputeError::Timeout(_)), "{err:?}");
    }

    #[tokio::test]
    async fn every_built_module_computes_its_function() {
        let sandbox = Sandbox::new(Limits::default()).unwrap();
        let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../modules");
        for (name, input, output) in [
            ("increase", "7", "8"),
            ("double", "7", "14"),
            ("square", "7", "49"),
            ("fib", "10", "55"),
            ("triple", "7", "21"),
            ("reverse", "abc", "cba"),
        ] {
            let module = sandbox.load(&modules.join(format!("{name}.wasm"))).unwrap();
            assert_eq!(
                module.compute(input.as_bytes()).await.unwrap(),
                output.as_bytes(),
                "{name}"
            );
            assert!(module.digest().starts_with("sha256:") && module.digest().len() == 71);
        }
    }

    /// Modules built with Rust's std import WASI; the sandbox links it, with
    /// an empty context made on first use.
    #[tokio::test]
    async fn serves_a_module_that_calls_wasi() {
        let sandbox = Sandbox::new(Limits::default()).unwrap();
        let module = sandbox
            .load_bytes("random", &wat::parse_str(CALLS_WASI_RANDOM).unwrap())
            .unwrap();
        assert_eq!(module.compute(b"1").await.unwrap(), b"");
    }

    /// A guest that misbehaves gets an error for its request, never more:
    /// memory past the cap, a trap and unbounded recursion each end as
    /// `compute-failed` with the reason, and the sandbox keeps working.
    #[tokio::test]
    async fn hostile_guests_fail_their_own_request_only() {
        let sandbox = Sandbox::new(Limits {
            memory: 4 << 20,
            ..Limits::default()
        })
        .unwrap();
        let hostile = |body: &str| sandbox.load_bytes("hostile", &component(body)).unwrap();
        let cases = [
            (
                "grows its memory",
                "(drop (memory.grow (i32.const 1000))) unreachable",
                "more than the node's limit of 4194304 bytes (--guest-memory)",
            ),
            ("traps", "unreachable", "unreachable"),
            (
                "recurses forever",
                "(call 0 (local.get 0) (local.get 1))",
                "call stack exhausted",
            ),
        ];
        for (what, body, reason) in cases {
            let err = hostile(body).compute(b"1").await.unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::ComputeFailed,
                "a guest that {what}: {err}"
            );
            assert!(
                err.to_string().contains(reason),
                "a guest that {what}: {err}"
            );
        }
        let module = sandbox
            .load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../modules/increase.wasm"))
            .unwrap();
        assert_eq!(module.compute(b"1").await.unwrap(), b"2");
    }

    /// A guest built with std that tries every capability is denied each,
    /// and what it prints lands in the node's log, capped per request.
    #[tokio::test]
    async fn a_nosy_guest_gets_nothing_and_its_output_is_logged_capped() {
        let log = CapturedLog::default();
        let _default = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(log.clone())
                .with_ansi(false)
                .finish(),
        );
        let sandbox = Sandbox::new(Limits::default()).unwrap();
        let nosy = sandbox
            .load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/nosy.wasm"))
            .unwrap();

        let report = String::from_utf8(nosy.compute(b"look").await.unwrap()).unwrap();
        assert_eq!(report.lines().count(), 7, "{report}");
        assert!(
            report.lines().all(|line| line.contains(": denied (")),
            "{report}"
        );
        assert!(
            log.text()
                .contains("guest output: nosy: looking around (stdout)")
        );
        assert!(log.text().contains("nosy: looking around (stderr)"));

        assert_eq!(nosy.compute(b"flood").await.unwrap(), b"flooded");
        let flood = log.text();
        let flood = flood.lines().last().unwrap();
        assert!(flood.contains("dropped_bytes="), "{flood}");
        assert!(
            flood.len() < GUEST_OUTPUT_CAP + 200,
            "{} bytes",
            flood.len()
        );
    }

    #[test]
    fn rejects_bytes_that_are_not_a_component() {
        let sandbox = Sandbox::new(Limits::default()).unwrap();
        let message = |bytes: &[u8]| sandbox.load_bytes("x", bytes).err().unwrap().to_string();
        assert_eq!(message(b""), "the file is empty");
        assert!(message(b"oops").starts_with("not a WebAssembly file"));
        let core = wat::parse_str("(module)").unwrap();
        assert!(message(&core).starts_with("a core WebAssembly module, not a component"));
        let truncated =
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../modules/increase.wasm"))
                .unwrap();
        assert!(sandbox.load_bytes("x", &truncated[..1000]).is_err());
    }

    /// A component that calls `wasi:random` and returns an empty body.
    /// The result (tag, pointer, length) is written at offset 16.
    const CALLS_WASI_RANDOM: &str = r#"
        (component
          (import "wasi:random/random@0.2.0" (instance $random (export "get-random-u64" (func (result u64)))))
          (core func $get (canon lower (func $random "get-random-u64")))
          (core module $m
            (import "wasi" "get" (func $get (result i64)))
            (memory (export "memory") 1)
            (func (export "compute") (param i32 i32) (result i32)
              call $get
              drop
              (i32.store8 (i32.const 16) (i32.const 0))
              (i32.store (i32.const 20) (i32.const 0))
              (i32.store (i32.const 24) (i32.const 0))
              i32.const 16)
            (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 64))
          (core instance $i (instantiate $m (with "wasi" (instance (export "get" (func $get))))))
          (type $failure (variant (case "bad-request" string) (case "compute-failed" string)))
          (export $f "failure" (type $failure))
          (func (export "compute") (param "request" (list u8)) (result (result (list u8) (error $f)))
            (canon lift (core func $i "compute") (memory (core memory $i "memory")) (realloc (core func $i "realloc")))))
    "#;

    /// Log lines written by the test's subscriber.
    #[derive(Clone, Default)]
    struct CapturedLog(Arc<Mutex<Vec<u8>>>);

    impl CapturedLog {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl std::io::Write for CapturedLog {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLog {
        type Writer = CapturedLog;

        fn make_writer(&'a self) -> CapturedLog {
            self.clone()
        }
    }

    /// A compute component whose core function is `body`, from the
    /// fixture the integration tests share.
    fn component(body: &str) -> Vec<u8> {
        let template = include_str!("../../tests/fixtures/compute.wat");
        wat::parse_str(template.replace("(; BODY ;)", body)).unwrap()
    }
}
