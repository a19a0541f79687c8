//! Says in plain words what is wrong with bytes that are not a binary
//! component at all, which the parser would report as a byte dump.

/// Bytes that are not a binary WebAssembly component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotAComponent {
    /// No bytes at all.
    #[error("the file is empty")]
    Empty,
    /// Not WebAssembly.
    #[error("not a WebAssembly file (it does not start with \\0asm)")]
    NotWasm,
    /// A core module, which has no typed interface to check.
    #[error(
        "a core WebAssembly module, not a component; build the guest for wasm32-wasip2 (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule,
}

/// Checks the header of `bytes`.
pub(super) fn check(bytes: &[u8]) -> Result<(), NotAComponent> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE: &[u8] = &[1, 0, 0, 0];
    if bytes.is_empty() {
        return Err(NotAComponent::Empty);
    }
    if !bytes.starts_with(MAGIC) {
        return Err(NotAComponent::NotWasm);
    }
    if bytes.get(4..8) == Some(CORE_MODULE) {
        return Err(NotAComponent::CoreModule);
    }
    Ok(())
}
