//! The one server configuration every transport reads.

use std::time::Duration;

use sockmsg_protocol::Limits;

use crate::budget::MemoryBudget;

/// What the server does once [`ServerConfig::max_connections`] connections are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WhenFull {
    /// Close the connection idle the longest (nothing being received, nothing to send) to
    /// admit the new one; if no connection is idle, wait as [`WhenFull::Wait`] does. The
    /// default: together with [`ServerConfig::first_byte_deadline`], connections held open
    /// in silence cannot shut good clients out for more than a moment. The choice is
    /// server-wide on every transport (the event-loop transport asks the loop that holds
    /// the connection to close it, and admits the new one once it has).
    #[default]
    EvictIdle,
    /// Stop accepting until a connection closes: new connections wait in the kernel's
    /// backlog (and are refused by the kernel once the backlog is full). (The event-loop
    /// transport looks again every [`crate::ACCEPT_BACKOFF`] while full.)
    Wait,
    /// Keep accepting, and close each connection beyond the maximum at once (the client
    /// sees its connection closed before any response).
    Refuse,
}

/// How a server runs, whatever its transport. Every field has one documented default
/// ([`ServerConfig::default`]); start from it and change what you need.
///
/// The defaults, and why:
///
/// | field | default | why |
/// |---|---|---|
/// | `first_byte_deadline` | 10 s | a new connection must start its first request within 10 s: a client that connects means to talk; a silent one cannot hold a slot for the idle timeout |
/// | `header_deadline` | 30 s | a whole message must arrive within 30 s of its first byte: a peer dripping bytes (slowloris) cannot hold a slot longer |
/// | `idle_timeout` | 60 s | between requests, a connection may wait a minute for its next one (the common keep-alive figure) |
/// | `write_deadline` | 30 s | a peer that accepts no byte of its answers for as long as a request may take to arrive is gone or hostile |
/// | `output_cap` | 1 MiB | answers queued per connection; beyond it the server stops reading that peer |
/// | `memory_budget` | 256 MiB | input and output held over all connections: 16 messages of the largest size (16 MiB) in flight at once, or 10,000 connections reading (4 KiB each) and still 13 of them; a small share of a server's memory, so a flood of large messages cannot take the machine down |
/// | `large_answer_share` | a quarter of `memory_budget` (64 MiB) | answers larger than the output cap, all connections together: four answers of the largest size being sent at once; peers that read slowly cannot take the budget requests need |
/// | `min_send_rate` | 64 KiB/s | while more than the output cap is queued for a peer, it must take at least this much: a 16 MiB answer then leaves within about 4 minutes, and a peer that never reads, or reads 1 KiB/s, is closed within two windows instead of pinning its answer for hours |
/// | `send_rate_window` | 10 s | the rate is measured over 10 s: a stall of a few seconds does not close a peer that otherwise keeps up |
/// | `max_connections` | 10,000 | an idle connection costs a few KiB and no CPU on every transport, so the cap is set by file descriptors, not memory |
/// | `when_full` | [`WhenFull::EvictIdle`] | at the cap, the connection idle the longest makes room: silent connections cannot lock good clients out |
/// | `shutdown_grace` | 5 s | answers in progress get 5 s to flush when the server stops |
/// | `close_after_answer` | `false` | connections stay open for further requests |
/// | `max_in_flight` | 32 | answers an [`AsyncService`](crate::AsyncService) may have in progress per connection: twice a 16-deep pipeline, and a bound on what one peer makes the service do at once |
/// | `workers` | one per core | event loops of the event-loop transports |
///
/// A deadline of `None` never fires; one of zero acts as one millisecond.
///
/// ```
/// use std::time::Duration;
/// use sockmsg_server::ServerConfig;
/// // A configuration for a test: short deadlines, a small output cap, one event loop.
/// let config = ServerConfig {
///     header_deadline: Some(Duration::from_secs(1)),
///     write_deadline: Some(Duration::from_secs(1)),
///     output_cap: 64 * 1024,
///     workers: 1,
///     ..ServerConfig::default()
/// };
/// assert_eq!(config.idle_timeout, Some(Duration::from_secs(60)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// What a peer may make the server accept (header and content sizes, JSON nesting);
    /// an answer larger than `limits.max_content_len` is not sent either. Default:
    /// [`Limits::default`].
    pub limits: Limits,
    /// Time a new connection has to send the first byte of its first request; after that,
    /// [`ServerConfig::header_deadline`] and [`ServerConfig::idle_timeout`] apply. Default:
    /// 10 s.
    pub first_byte_deadline: Option<Duration>,
    /// Time allowed to receive a whole message once its first byte has arrived. Default:
    /// 30 s.
    pub header_deadline: Option<Duration>,
    /// Longest a connection may stay idle between messages (nothing in progress, nothing
    /// to send). Default: 60 s.
    pub idle_timeout: Option<Duration>,
    /// Longest output may stay pending without the peer accepting any of it. Default: 30 s.
    pub write_deadline: Option<Duration>,
    /// Most bytes of answers queued for one connection. While the queue is at or over it,
    /// no more requests are taken from that peer (its bytes wait in the kernel, then in the
    /// peer); an answer that would take a non-empty queue over it waits until the queue
    /// drains, so only an answer larger than the cap is ever queued alone. Default: 1 MiB.
    pub output_cap: usize,
    /// Bytes held for input and output across all connections of the server: read
    /// buffers, messages being received (reserved in full when their header arrives, so
    /// a message admitted always completes), answers queued. Near it the server stops
    /// reading from peers (backpressure: their bytes wait in the kernel) and refuses
    /// messages of more than 64 KiB that do not fit under seven eighths of it (the last
    /// eighth is kept for small messages) with [`crate::CloseReason::OverBudget`]; an
    /// answer larger than [`ServerConfig::output_cap`] is sent only if it fits. Default:
    /// 256 MiB.
    pub memory_budget: usize,
    /// Bytes that answers larger than [`ServerConfig::output_cap`] ("large answers") may
    /// hold together, over all connections, within [`ServerConfig::memory_budget`]. A
    /// large answer is charged to the budget and to this share when it is queued, and
    /// until its last byte is sent (the protocol machine holds an answer's content whole
    /// until then) or its connection closes; one that does not fit is not queued: the
    /// connection is closed ([`crate::CloseReason::AnswerShareFull`], or
    /// [`crate::CloseReason::OverBudget`] if the budget itself is full). `None`: a quarter
    /// of the memory budget. Default: `None` (64 MiB with the default budget).
    pub large_answer_share: Option<usize>,
    /// Least rate, in bytes per second, at which a peer must take its answers while more
    /// than [`ServerConfig::output_cap`] is queued for it (or a large answer is being sent
    /// to it), measured over each [`ServerConfig::send_rate_window`]; a slower peer is
    /// closed ([`crate::CloseReason::SlowReader`]). Together with
    /// [`ServerConfig::large_answer_share`], peers that read slowly but steadily cannot pin
    /// large answers for long. `None`: no minimum (only the write deadline applies).
    /// Default: 64 KiB/s.
    pub min_send_rate: Option<u64>,
    /// The window over which [`ServerConfig::min_send_rate`] is measured: a window starts
    /// when the transport first tries to send once output is over the cap (not when the
    /// answer was made: the service's own time is not the peer's), and at its end the
    /// bytes the peer took in it must reach a window's worth at that rate; then the next
    /// window starts. Default: 10 s.
    pub send_rate_window: Duration,
    /// The budget's counter, to read its figures ([`MemoryBudget::peak`]...) or to share
    /// one budget between servers; `None`: each server counts its own
    /// ([`MemoryBudget::for_config`]). Default: `None`.
    pub memory_meter: Option<MemoryBudget>,
    /// Most connections open at once. Default: 10,000.
    pub max_connections: usize,
    /// What happens to connections beyond `max_connections`. Default: [`WhenFull::EvictIdle`].
    pub when_full: WhenFull,
    /// On shutdown, how long connections may take to flush the answers they owe before
    /// they are closed anyway. Idle connections, and requests not yet complete, are closed
    /// at once. Default: 5 s.
    pub shutdown_grace: Duration,
    /// Close each connection once its first answer is sent, as the guide's server does,
    /// for clients that read until the server closes. Default: `false` (connections stay
    /// open for further requests).
    pub close_after_answer: bool,
    /// Most answers of an [`AsyncService`](crate::AsyncService) in progress at once on one
    /// connection (requests taken, answers not yet queued): beyond it no more requests
    /// are taken from that peer until the oldest is answered (its bytes wait in the
    /// kernel). A sync [`Service`](crate::Service) answers one request at a time. Default:
    /// 32; zero acts as one.
    pub max_in_flight: usize,
    /// Event loops (threads) of the event-loop transports. The thread-per-connection
    /// transport ignores it. Default: the number of cores
    /// ([`std::thread::available_parallelism`]); zero acts as one.
    pub workers: usize,
    /// Length of the kernel's queue of connections not yet accepted. Default: 1,024.
    pub backlog: i32,
    /// Disable Nagle's algorithm on accepted connections (`TCP_NODELAY`). Default: `true`.
    pub nodelay: bool,
}

/// A century: the longest deadline kept (so that `Instant + deadline` cannot overflow).
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            first_byte_deadline: Some(Duration::from_secs(10)),
            header_deadline: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(60)),
            write_deadline: Some(Duration::from_secs(30)),
            output_cap: 1024 * 1024,
            memory_budget: 256 * 1024 * 1024,
            large_answer_share: None,
            min_send_rate: Some(64 * 1024),
            send_rate_window: Duration::from_secs(10),
            memory_meter: None,
            max_connections: 10_000,
            when_full: WhenFull::EvictIdle,
            shutdown_grace: Duration::from_secs(5),
            close_after_answer: false,
            max_in_flight: 32,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            backlog: 1024,
            nodelay: true,
        }
    }
}

impl ServerConfig {
    /// The same configuration with `workers` event loops.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The same configuration with at most `max` connections open at once.
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// The same configuration with these three deadlines (`None`: never).
    pub fn with_deadlines(
        mut self,
        header: Option<Duration>,
        idle: Option<Duration>,
        write: Option<Duration>,
    ) -> Self {
        self.header_deadline = header;
        self.idle_timeout = idle;
        self.write_deadline = write;
        self
    }

    /// The same configuration with `bytes` of memory budget for the whole server.
    pub fn with_memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// The same configuration where large answers (over the output cap) may hold at most
    /// `bytes` together ([`ServerConfig::large_answer_share`]).
    pub fn with_large_answer_share(mut self, bytes: usize) -> Self {
        self.large_answer_share = Some(bytes);
        self
    }

    /// The same configuration with this least send rate (`None`: no minimum), measured
    /// over `window` ([`ServerConfig::min_send_rate`]).
    pub fn with_min_send_rate(mut self, bytes_per_sec: Option<u64>, window: Duration) -> Self {
        self.min_send_rate = bytes_per_sec;
        self.send_rate_window = window;
        self
    }

    /// The bytes large answers may hold together in a memory budget of `budget` bytes (the
    /// server's: [`ServerConfig::memory_budget`], or the limit of
    /// [`ServerConfig::memory_meter`]): [`ServerConfig::large_answer_share`], or a quarter
    /// of the budget; never more than the budget.
    pub fn large_answer_share_of(&self, budget: usize) -> usize {
        self.large_answer_share.unwrap_or(budget / 4).min(budget)
    }

    /// The same configuration with this first-byte deadline (`None`: never).
    pub fn with_first_byte_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.first_byte_deadline = deadline;
        self
    }

    /// The same configuration with output capped at `bytes` per connection.
    pub fn with_output_cap(mut self, bytes: usize) -> Self {
        self.output_cap = bytes;
        self
    }

    /// The same configuration with these limits on what peers may send.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The same configuration, closing each connection after its first answer.
    pub fn with_close_after_answer(mut self, close: bool) -> Self {
        self.close_after_answer = close;
        self
    }

    /// The same configuration with at most `max` answers of an async service in progress
    /// per connection ([`ServerConfig::max_in_flight`]).
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }

    /// Values clamped to something workable: at least one worker, one connection, one
    /// byte of output and one answer in flight; deadlines between 1 ms and a century. Transports call it once.
    pub fn normalized(mut self) -> Self {
        let clamp = |d: Option<Duration>| d.map(|d| d.clamp(Duration::from_millis(1), NEVER));
        self.workers = self.workers.max(1);
        self.backlog = self.backlog.max(1);
        self.max_connections = self.max_connections.max(1);
        self.first_byte_deadline = clamp(self.first_byte_deadline);
        self.header_deadline = clamp(self.header_deadline);
        self.idle_timeout = clamp(self.idle_timeout);
        self.write_deadline = clamp(self.write_deadline);
        self.shutdown_grace = self.shutdown_grace.min(NEVER);
        self.output_cap = self.output_cap.max(1);
        self.max_in_flight = self.max_in_flight.max(1);
        self.send_rate_window = self.send_rate_window.clamp(Duration::from_millis(1), NEVER);
        self.min_send_rate = self.min_send_rate.filter(|&rate| rate > 0);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_clamps_to_workable_values() {
        let c = ServerConfig {
            workers: 0,
            max_connections: 0,
            output_cap: 0,
            max_in_flight: 0,
            header_deadline: Some(Duration::ZERO),
            idle_timeout: Some(Duration::MAX),
            write_deadline: None,
            ..ServerConfig::default()
        }
        .normalized();
        assert_eq!(c.workers, 1);
        assert_eq!(c.max_connections, 1);
        assert_eq!(c.output_cap, 1);
        assert_eq!(c.max_in_flight, 1);
        assert_eq!(c.header_deadline, Some(Duration::from_millis(1)));
        assert_eq!(c.idle_timeout, Some(NEVER));
        assert_eq!(c.write_deadline, None);
        let c = ServerConfig {
            min_send_rate: Some(0),
            send_rate_window: Duration::ZERO,
            ..ServerConfig::default()
        }
        .normalized();
        assert_eq!(c.min_send_rate, None, "a rate of zero is no minimum");
        assert_eq!(c.send_rate_window, Duration::from_millis(1));
    }

    #[test]
    fn the_large_answer_share_is_a_quarter_of_the_budget_unless_set() {
        let c = ServerConfig::default();
        assert_eq!(c.large_answer_share_of(c.memory_budget), 64 * 1024 * 1024);
        assert_eq!(c.large_answer_share_of(1000), 250);
        let c = c.with_large_answer_share(600);
        assert_eq!(c.large_answer_share_of(1000), 600);
        assert_eq!(
            c.large_answer_share_of(500),
            500,
            "never more than the budget"
        );
    }
}
