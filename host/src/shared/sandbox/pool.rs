//! The engine's configuration: deadlines by epoch, and one pool of
//! instances reserved once for every function the sandbox serves.

use super::{Limits, guest::MAX_TABLE_ELEMENTS};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Pool slots beyond the requested capacity, so that an instance being torn
/// down never makes a new request wait or fail.
const SPARE_INSTANCES: u32 = 16;
/// Core instances, memories and tables one component may have: ours have
/// one memory and a handful of core instances; components built through
/// the WASI preview 1 adapter have two memories.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
/// Bytes of a pooled table that are reset in place for reuse rather than
/// given back to the kernel.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;
/// Bytes of a pooled memory that are reset in place for reuse rather than
/// given back to the kernel (`madvise`) and faulted in again by the next
/// instance. Where the kernel tells which pages an instance wrote
/// (`PAGEMAP_SCAN`, Linux 6.7), only those are reset, so this can cover
/// the whole image of a big guest: measured, a JavaScript `increase`
/// went from 800 to 390 us a call, and a Python one from 1130 to 940 us;
/// since our wasmtime patch lets the scan go past 32 written regions
/// (patches/README.md), where an interpreter's heap used to be given back,
/// to 146 and 221 us. Elsewhere every byte kept is rewritten on every
/// reuse, so only a page is.
const MEMORY_KEEP_RESIDENT_SCANNED: usize = 16 << 20;
const MEMORY_KEEP_RESIDENT_UNSCANNED: usize = 64 << 10;

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
        .table_keep_resident(TABLE_KEEP_RESIDENT);
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT_SCANNED);
    } else {
        pool.linear_memory_keep_resident(MEMORY_KEEP_RESIDENT_UNSCANNED);
    }
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        // A slot's address space is what a guest may use, not the default
        // 4 GiB: with hundreds of slots that adds up.
        .memory_reservation(limits.memory as u64);
    Engine::new(&config)
}
