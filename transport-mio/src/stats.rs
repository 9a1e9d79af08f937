//! Counters a running server keeps, readable from any thread.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The peer closed between messages and every response was sent.
    Clean,
    /// A complete message did not arrive within the header deadline.
    HeaderDeadline,
    /// Idle for longer than the idle timeout.
    Idle,
    /// Output pending with no progress for the write deadline.
    WriteDeadline,
    /// The peer broke the protocol (responses queued before were flushed first).
    Protocol,
    /// The service failed (or panicked) on a request.
    Service,
    /// A socket error (reset, broken pipe...).
    Io,
    /// The server shut down.
    Shutdown,
}

impl CloseReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::Clean => "clean",
            CloseReason::HeaderDeadline => "header-deadline",
            CloseReason::Idle => "idle-timeout",
            CloseReason::WriteDeadline => "write-deadline",
            CloseReason::Protocol => "protocol-error",
            CloseReason::Service => "service-error",
            CloseReason::Io => "io-error",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// One loop's counters, on a cache line of their own so loops never contend.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct LoopCounters {
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) backpressured: AtomicU64,
    pub(crate) closed: [AtomicU64; 8],
    /// Entries in the loop's deadline heap (a gauge, updated every turn).
    pub(crate) timer_entries: AtomicUsize,
}

impl LoopCounters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        let i = reason as usize;
        if let Some(c) = self.closed.get(i) {
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
    /// Connections closed because a message was not complete within the header deadline.
    pub closed_header_deadline: u64,
    /// Connections closed for staying idle longer than the idle timeout.
    pub closed_idle: u64,
    /// Connections closed because their output made no progress within the write deadline.
    pub closed_write_deadline: u64,
    /// Connections closed because the peer broke the protocol (including a close in the
    /// middle of a message).
    pub closed_protocol_error: u64,
    /// Connections closed because the service failed on one of their requests.
    pub closed_service_error: u64,
    /// Connections closed on a socket error (reset, broken pipe...).
    pub closed_io_error: u64,
    /// Connections closed by the server's shutdown.
    pub closed_shutdown: u64,
}

impl StatsSnapshot {
    /// All connections closed, for any reason.
    pub fn closed(&self) -> u64 {
        self.closed_clean
            + self.closed_header_deadline
            + self.closed_idle
            + self.closed_write_deadline
            + self.closed_protocol_error
            + self.closed_service_error
            + self.closed_io_error
            + self.closed_shutdown
    }
}

impl Stats {
    pub(crate) fn new(loops: usize) -> Stats {
        Stats {
            shared: Arc::new(Shared {
                loops: (0..loops).map(|_| LoopCounters::default()).collect(),
                open: AtomicUsize::new(0),
                max_open: AtomicUsize::new(0),
                max_output: AtomicUsize::new(0),
            }),
        }
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
            ..StatsSnapshot::default()
        };
        for l in self.shared.loops.iter() {
            s.accepted += l.accepted.load(Relaxed);
            s.rejected += l.rejected.load(Relaxed);
            s.requests += l.requests.load(Relaxed);
            s.backpressured += l.backpressured.load(Relaxed);
            s.timer_entries += l.timer_entries.load(Relaxed);
            let c = |r: CloseReason| l.closed.get(r as usize).map_or(0, |a| a.load(Relaxed));
            s.closed_clean += c(CloseReason::Clean);
            s.closed_header_deadline += c(CloseReason::HeaderDeadline);
            s.closed_idle += c(CloseReason::Idle);
            s.closed_write_deadline += c(CloseReason::WriteDeadline);
            s.closed_protocol_error += c(CloseReason::Protocol);
            s.closed_service_error += c(CloseReason::Service);
            s.closed_io_error += c(CloseReason::Io);
            s.closed_shutdown += c(CloseReason::Shutdown);
        }
        s
    }
}
