//! The modules' allocator: a bump allocator. Every request runs in a fresh
//! instance that is thrown away afterwards, so freeing memory is never
//! worth its bookkeeping: an allocation is a pointer increment, and a
//! request touches as few pages of memory as it can. The node pays for
//! every page an instance touches (it is zeroed before the next instance
//! reuses it), so few pages is what makes a call cheap.

use core::{
    alloc::{GlobalAlloc, Layout},
    arch::wasm32,
    cell::Cell,
    ptr,
};

const PAGE: usize = 65536;

unsafe extern "C" {
    /// The first byte after the stack and the static data, placed by the
    /// linker.
    static __heap_base: u8;
}

/// Hands out memory from the end of the static data upward, growing the
/// linear memory a page at a time as needed.
pub(crate) struct BumpAllocator {
    /// The first free byte; 0 until the first allocation.
    next: Cell<usize>,
}

impl BumpAllocator {
    pub(crate) const fn new() -> Self {
        BumpAllocator { next: Cell::new(0) }
    }

    fn next(&self) -> usize {
        match self.next.get() {
            0 => &raw const __heap_base as usize,
            next => next,
        }
    }

    /// Makes `end` addressable, growing the memory if needed.
    fn reach(end: usize) -> bool {
        let size = wasm32::memory_size(0) * PAGE;
        end <= size || wasm32::memory_grow(0, (end - size).div_ceil(PAGE)) != usize::MAX
    }
}

// SAFETY: a WebAssembly instance without the threads proposal has one
// thread, so the allocator is never used from two at once.
unsafe impl Sync for BumpAllocator {}

// SAFETY: every block handed out lies in linear memory that `reach` made
// addressable, past all earlier live blocks, aligned as asked; a block is
// only taken back (or grown in place) when it is the last one handed out.
unsafe impl GlobalAlloc for BumpAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(start) = self.next().checked_next_multiple_of(layout.align()) else {
            return ptr::null_mut();
        };
        match start.checked_add(layout.size()) {
            Some(end) if Self::reach(end) => {
                self.next.set(end);
                start as *mut u8
            }
            _ => ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // The last block can be taken back; any other stays until the
        // instance goes.
        if block as usize + layout.size() == self.next() {
            self.next.set(block as usize);
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = block as usize;
        if start + layout.size() == self.next() {
            // The last block (a growing Vec, usually) grows in place.
            return match start.checked_add(new_size) {
                Some(end) if Self::reach(end) => {
                    self.next.set(end);
                    block
                }
                _ => ptr::null_mut(),
            };
        }
        // SAFETY: the caller's contract, passed on: `layout` is the block's
        // layout and `new_size` is valid for its alignment.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let moved = self.alloc(new_layout);
            if !moved.is_null() {
                ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
            }
            moved
        }
    }
}
