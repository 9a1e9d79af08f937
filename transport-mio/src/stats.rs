//! Counters a running server keeps, readable from any thread.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use sockmsg_server::{CloseReason, MemoryBudget};

/// One loop's counters, on a cache line of their own so loops never contend.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct LoopCounters {
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) backpressured: AtomicU64,
    /// Closes by kind of reason, indexed by [`CloseReason::index`].
    pub(crate) closed: [AtomicU64; CloseReason::LABELS.len()],
    /// Entries in the loop's deadline heap (a gauge, updated every turn).
    pub(crate) timer_entries: AtomicUsize,
}

impl LoopCounters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn closed(&self, reason: &CloseReason) {
        if let Some(c) = self.closed.get(reason.index()) {
            c.fetch_add(1, Relaxed);
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) loops: Box<[LoopCounters]>,
    /// Connections open now, over all loops (also enforces `max_connections`).
    pub(crate) open: AtomicUsize,
    pub(crate) max_open: AtomicUsize,
    pub(crate) max_output: AtomicUsize,
    /// The server's memory budget, shared by every session of every loop.
    pub(crate) budget: MemoryBudget,
}

/// A live view of a server's counters; cheap to clone, usable from any thread, before,
/// during and after [`crate::Server::serve`].
#[derive(Debug, Clone)]
pub struct Stats {
    pub(crate) shared: Arc<Shared>,
}

/// The counters at one moment (see [`Stats::snapshot`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Connections open now.
    pub open: usize,
    /// Highest number of connections open at once.
    pub max_open: usize,
    /// Connections accepted (and admitted) so far.
    pub accepted: u64,
    /// Connections closed at once because `max_connections` were open.
    pub rejected: u64,
    /// Requests handed to the service.
    pub requests: u64,
    /// Times a connection's reading was paused because its output reached the cap.
    pub backpressured: u64,
    /// Entries in the loops' deadline heaps now, stale ones included (a diagnostic: it
    /// stays within about twice the open connections, plus a constant).
    pub timer_entries: usize,
    /// Highest number of response bytes queued for any single connection.
    pub max_output_queued: usize,
    /// Connections closed cleanly by the peer, between messages, with every response sent.
    pub closed_clean: u64,
    /// Connections closed after their answer (`close_after_answer`).
    pub closed_answered: u64,
    /// Connections closed because a message was not complete within the header deadline.
    pub closed_header_deadline: u64,
    /// Connections closed for staying idle longer than the idle timeout.
    pub closed_idle: u64,
    /// Connections closed because their output made no progress within the write deadline.
    pub closed_write_deadline: u64,
    /// Connections closed because the peer broke the protocol (including a close in the
    /// middle of a message).
    pub closed_protocol_error: u64,
    /// Connections closed because the service failed or panicked on one of their requests,
    /// or gave an answer that could not be sent.
    pub closed_service_error: u64,
    /// Connections closed on a socket error (reset, broken pipe...).
    pub closed_io_error: u64,
    /// Connections closed by the server's shutdown.
    pub closed_shutdown: u64,
    /// Connections closed because the memory budget had no room for a large request or
    /// answer.
    pub closed_over_budget: u64,
    /// Connections closed because no request began within the first-byte deadline.
    pub closed_first_byte: u64,
    /// Idle connections closed to admit a new one at the connection cap.
    pub closed_evicted: u64,
    /// Connections closed because their large answer did not fit in the large answers'
    /// share of the memory budget ([`sockmsg_server::ServerConfig::large_answer_share`]).
    pub closed_answer_share_full: u64,
    /// Connections closed because the peer took a large answer more slowly than
    /// [`sockmsg_server::ServerConfig::min_send_rate`].
    pub closed_slow_reader: u64,
    /// Bytes held or reserved for input and output now, over all connections.
    pub memory_held: usize,
    /// The most bytes ever held or reserved at once (at most the budget).
    pub memory_peak: usize,
}

impl StatsSnapshot {
    /// All connections closed, for any reason.
    pub fn closed(&self) -> u64 {
        self.closed_clean
            + self.closed_answered
            + self.closed_header_deadline
            + self.closed_idle
            + self.closed_write_deadline
            + self.closed_protocol_error
            + self.closed_service_error
            + self.closed_io_error
            + self.closed_shutdown
            + self.closed_over_budget
            + self.closed_first_byte
            + self.closed_evicted
            + self.closed_answer_share_full
            + self.closed_slow_reader
    }
}

impl Stats {
    pub(crate) fn new(loops: usize, budget: MemoryBudget) -> Stats {
        Stats {
            shared: Arc::new(Shared {
                loops: (0..loops).map(|_| LoopCounters::default()).collect(),
                open: AtomicUsize::new(0),
                max_open: AtomicUsize::new(0),
                max_output: AtomicUsize::new(0),
                budget,
            }),
        }
    }

    /// The server's memory budget (its figures: [`MemoryBudget::used`],
    /// [`MemoryBudget::peak`], [`MemoryBudget::refused`]).
    pub fn memory(&self) -> &MemoryBudget {
        &self.shared.budget
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Relaxed)
    }

    /// Reads every counter (each one atomically; together, approximately at one moment).
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut s = StatsSnapshot {
            open: self.open(),
            max_open: self.shared.max_open.load(Relaxed),
            max_output_queued: self.shared.max_output.load(Relaxed),
            memory_held: self.shared.budget.used(),
            memory_peak: self.shared.budget.peak(),
            ..StatsSnapshot::default()
        };
        for l in self.shared.loops.iter() {
            s.accepted += l.accepted.load(Relaxed);
            s.rejected += l.rejected.load(Relaxed);
            s.requests += l.requests.load(Relaxed);
            s.backpressured += l.backpressured.load(Relaxed);
            s.timer_entries += l.timer_entries.load(Relaxed);
            let c = |label: &str| {
                CloseReason::LABELS
                    .iter()
                    .position(|l| *l == label)
                    .and_then(|i| l.closed.get(i))
                    .map_or(0, |a| a.load(Relaxed))
            };
            s.closed_clean += c("clean");
            s.closed_answered += c("answered");
            s.closed_header_deadline += c("header-deadline");
            s.closed_idle += c("idle-timeout");
            s.closed_write_deadline += c("write-deadline");
            s.closed_protocol_error += c("protocol-error");
            s.closed_service_error +=
                c("service-error") + c("service-panic") + c("answer-too-large") + c("bad-answer");
            s.closed_io_error += c("io-error");
            s.closed_shutdown += c("shutdown");
            s.closed_over_budget += c("over-budget");
            s.closed_first_byte += c("first-byte-deadline");
            s.closed_evicted += c("evicted");
            s.closed_answer_share_full += c("answer-share-full");
            s.closed_slow_reader += c("slow-reader");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of close a session can end with is in `StatsSnapshot::closed()` (the
    /// connection cap's "full" is a refusal before any session: `rejected`).
    #[test]
    fn every_close_reason_is_counted_in_closed() {
        let stats = Stats::new(2, MemoryBudget::new(1 << 20));
        let mut expected = 0;
        for (i, label) in CloseReason::LABELS.iter().enumerate() {
            if *label == "full" {
                continue;
            }
            let counter = stats.shared.loops[i % 2]
                .closed
                .get(i)
                .expect("a counter per label");
            LoopCounters::add(counter);
            expected += 1;
            assert_eq!(
                stats.snapshot().closed(),
                expected,
                "{label} is not counted"
            );
        }
    }
}
