//! What a guest's store holds: its WASI view, empty but for captured
//! output, and the cap on its memory.

use super::output::{GuestOutput, Stream};
use wasmtime::{ResourceLimiter, component::ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// What a guest's store holds: an empty WASI context and where the guest's
/// output goes, both made on the guest's first WASI call, and the memory
/// cap.
pub(super) struct GuestState {
    /// Built lazily: our `no_std` modules import no WASI and never need it,
    /// and building one costs tens of microseconds per request.
    wasi: Option<WasiCtx>,
    pub(super) output: Option<GuestOutput>,
    /// What the guest said, through `panicked`, before it trapped.
    pub(super) panic: Option<String>,
    table: ResourceTable,
    pub(super) limits: MemoryCap,
}

impl GuestState {
    /// A guest's state, its memory capped at `memory` bytes: the node's
    /// limit, or the function's own when `own_limit`.
    pub(super) fn new(memory: usize, own_limit: bool) -> Self {
        GuestState {
            wasi: None,
            output: None,
            panic: None,
            table: ResourceTable::new(),
            limits: MemoryCap {
                bytes: memory,
                own_limit,
            },
        }
    }
}

/// The most of a panic message the host keeps: a guest cannot make the
/// node hold more than this, however long the message it sends.
const PANIC_MESSAGE_CAP: usize = 4 << 10;

impl super::gen_::ComputeFunctionImports for GuestState {
    fn panicked(&mut self, mut message: String) {
        if message.len() > PANIC_MESSAGE_CAP {
            let mut end = PANIC_MESSAGE_CAP;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str(" [cut]");
        }
        self.panic = Some(message);
    }
}

/// Caps a guest's linear memory. Growing past the cap traps with a reason
/// the caller can read, rather than failing the grow, which a guest's
/// allocator would turn into a bare `unreachable`.
pub(super) struct MemoryCap {
    bytes: usize,
    /// Set by the function's limits file rather than the node: the
    /// message names where to raise it.
    own_limit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.bytes {
            let limit = self.bytes;
            let whose = if self.own_limit {
                format!("its own limit of {limit} bytes (memory in its limits file)")
            } else {
                format!("the node's limit of {limit} bytes (--guest-memory)")
            };
            wasmtime::bail!(
                "the compute function needed {desired} bytes of memory, more than {whose}"
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
pub(super) const MAX_TABLE_ELEMENTS: usize = 100_000;

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
                    .stdout(output.stream(Stream::Stdout))
                    .stderr(output.stream(Stream::Stderr))
                    .build()
            }),
            table,
        }
    }
}
