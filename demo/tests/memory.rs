//! What a JSON request costs the demo service in memory, measured by the allocator itself,
//! for the adversarial shapes of `sockmsg_demo::shapes`: the peak above what was allocated
//! before the call (the request, which the transport holds anyway), against the request's
//! size.
//!
//! This test binary installs a counting global allocator. It holds a single `#[test]` that
//! runs the measurements one after another: with several tests, the harness starts the
//! next test's thread (and allocates for it) while a measurement is running.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use sockmsg_demo::shapes::{request, Shape};
use sockmsg_demo::{DemoError, DemoService};
use sockmsg_protocol::Limits;
use sockmsg_server::Service;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` unchanged; the counters are only statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
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

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak bytes allocated above the starting level while `f` runs, and its result.
fn peak_during<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let out = f();
    (PEAK.load(Ordering::Relaxed) - start, out)
}

const LEN: usize = 1024 * 1024;

#[test]
fn peak_memory_per_request_is_bounded_by_its_size() {
    let service = DemoService::new();
    let mut report = String::new();
    let mut failed = Vec::new();
    for &shape in Shape::ALL {
        let req = request(shape, LEN);
        let bytes = req.content().len();
        let (peak, answer) = peak_during(|| service.call(req));
        let answer = answer.unwrap_or_else(|e| panic!("{shape:?}: {e}"));
        let answer_len = answer.content().len();
        let total = peak + bytes;
        report.push_str(&format!(
            "{:18} request {bytes} B, answer {answer_len} B, peak during the call {peak} B \
             (request + peak = {:.2}x the request; beyond the answer {:.2}x)\n",
            shape.name(),
            total as f64 / bytes as f64,
            (peak - answer_len) as f64 / bytes as f64,
        ));
        // What the service holds beyond its answer: at most the request's size.
        if peak > answer_len + bytes {
            failed.push(format!("{shape:?}: more than the answer + 1x the request"));
        }
        // All told, the request, the service's work and its answer: 3x the request, for
        // every shape whose answer (Python's) is not itself larger than twice the request.
        if answer_len <= 2 * bytes && total > 3 * bytes {
            failed.push(format!("{shape:?}: more than 3x the request"));
        }
    }
    eprintln!("{report}");
    assert!(failed.is_empty(), "{failed:?}\n{report}");
    answers_past_the_limit_are_never_built();
}

/// 16 MiB of `1e15` would print as 64 MiB: the answer stops at the message limit, and
/// nothing larger than the limit is ever allocated for it.
fn answers_past_the_limit_are_never_built() {
    let limit = 512 * 1024;
    let service = DemoService::new().with_limits(&Limits {
        max_content_len: limit,
        ..Limits::default()
    });
    let req = request(Shape::ManyNumbers, 1024 * 1024);
    let bytes = req.content().len();
    let (peak, answer) = peak_during(|| service.respond(&req));
    assert_eq!(answer, Err(DemoError::AnswerTooLarge { limit }));
    assert!(peak <= limit as usize + bytes / 4, "peak {peak} B");
}
