//! The engine's configuration: deadlines by epoch, and one pool of
//! instances reserved once for every function the sandbox serves.

use super::{Limits, guest::MAX_TABLE_ELEMENTS};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

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

/// An engine whose instances, `instances` at a time at most, come from a
/// pool sized for `limits`.
pub(super) fn engine(limits: &Limits, instances: u32) -> wasmtime::Result<Engine> {
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
        // Compute functions touch little memory: zeroing it in place is
        // cheaper than giving it back to the kernel and faulting it in
        // again at the next request.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        // A slot's address space is what a guest may use, not the default
        // 4 GiB: with hundreds of slots that adds up.
        .memory_reservation(limits.memory as u64);
    Engine::new(&config)
}
