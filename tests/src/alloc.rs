//! A counting global allocator, for the tests that measure what a peer's bytes cost in
//! memory. A test binary installs it and measures with [`peak_during`]:
//!
//! ```
//! use sockmsg_tests::alloc::{peak_during, Counting};
//!
//! #[global_allocator]
//! static ALLOCATOR: Counting = Counting;
//!
//! fn main() {
//!     let (peak, v) = peak_during(|| vec![7u8; 1000]);
//!     assert!(peak >= 1000, "{peak}");
//!     assert_eq!(v.len(), 1000);
//! }
//! ```
//!
//! The counters are global to the process: a binary that measures holds a single `#[test]`
//! running its measurements one after another (with several, the harness allocates for the
//! next test's thread while one measures).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGE_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

/// The size from which [`large_allocations`] counts an allocation: a read buffer's.
pub const LARGE: usize = 4096;

fn count_alloc(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
    if size >= LARGE {
        LARGE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The system allocator, counting the bytes live and their peak.
pub struct Counting;

// SAFETY: every method forwards to `System` unchanged; the counters are only statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= LARGE && layout.size() < LARGE {
                LARGE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            }
            if new_size >= layout.size() {
                let grow = new_size - layout.size();
                let live = LIVE.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

/// Bytes live now (all zero unless [`Counting`] is the global allocator).
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Allocations of at least [`LARGE`] bytes so far (a `realloc` that grows a block to that
/// size counts as one).
pub fn large_allocations() -> usize {
    LARGE_ALLOCATIONS.load(Ordering::Relaxed)
}

/// Peak bytes allocated above the level live before, while `f` runs, and its result.
pub fn peak_during<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let out = f();
    (PEAK.load(Ordering::Relaxed).saturating_sub(start), out)
}
