//! Server configuration: every limit and deadline, with documented defaults.

use std::time::Duration;

use sockmsg_protocol::Limits;

/// A century: the longest deadline kept (so that `Instant + deadline` cannot overflow).
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How the event loops share the listening address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenerMode {
    /// One listening socket; every loop registers its own handle to it and accepts until
    /// `WouldBlock`. Binding fails if the address is in use. The default.
    #[default]
    Shared,
    /// One listening socket per loop, all bound to the same address with `SO_REUSEPORT`; the
    /// kernel spreads new connections over them. Unix only (elsewhere binding fails with
    /// `Unsupported`). Beware that another `SO_REUSEPORT` socket of the same user on the same
    /// port would silently share the connections.
    ReusePort,
}

/// What a [`crate::Server`] allows, and when it gives up on a peer.
///
/// All fields are public; start from [`ServerConfig::default`] and change what you need.
/// Durations of zero are treated as one millisecond; durations longer than a century
/// (`Duration::MAX` included) as a century, which is to say never.
///
/// ```
/// use std::time::Duration;
/// use sockmsg_transport_mio::ServerConfig;
/// // A configuration for a test: short deadlines, a small output cap.
/// let config = ServerConfig {
///     workers: 1,
///     header_deadline: Duration::from_secs(1),
///     write_deadline: Duration::from_secs(1),
///     output_cap: 64 * 1024,
///     ..ServerConfig::default()
/// };
/// assert_eq!(config.idle_timeout, Duration::from_secs(75));
/// ```
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Number of event loops (threads), each with its own `Poll` and connections.
    /// Default: the number of available cores ([`std::thread::available_parallelism`]).
    /// Zero acts as one.
    pub workers: usize,
    /// How the loops share the listening address. Default: [`ListenerMode::Shared`].
    pub listener: ListenerMode,
    /// The `listen` backlog. Default: 1,024.
    pub backlog: i32,
    /// Most connections open at once, over all loops; a connection accepted beyond it is
    /// closed at once. Default: 10,000.
    pub max_connections: usize,
    /// Total time allowed to receive a complete message once its first byte has arrived.
    /// A peer that sends one byte now and then (slowloris) is closed when it runs out.
    /// Default: 30 s.
    pub header_deadline: Duration,
    /// Longest time a connection may stay idle between messages (nothing in progress,
    /// nothing to send) before it is closed. Default: 75 s.
    pub idle_timeout: Duration,
    /// Longest time output may be pending without any of it being accepted by the socket
    /// before the connection is closed. Default: 60 s.
    pub write_deadline: Duration,
    /// Most bytes of responses queued for one connection. Once the next response would go
    /// over it, the server stops reading from that peer until the queue drains
    /// (backpressure). A single response larger than the cap is still sent, alone. Default:
    /// 1 MiB.
    pub output_cap: usize,
    /// On shutdown, how long connections that still have output pending are given to flush
    /// it before they are closed anyway. Default: 5 s.
    pub shutdown_grace: Duration,
    /// What a peer may make the server accept (header and content sizes, JSON nesting).
    /// Default: [`Limits::default`].
    pub limits: Limits,
    /// Size of each loop's read buffer, shared by all its connections. Default: 64 KiB.
    pub read_buffer: usize,
    /// Capacity of each loop's `mio::Events`. Default: 1,024.
    pub events_capacity: usize,
    /// Set `TCP_NODELAY` on accepted connections. Default: `true`.
    pub nodelay: bool,
    /// `SO_RCVBUF` for accepted connections (set on the listener, which they inherit),
    /// bounding what a paused peer can park in the kernel. Default: `None`, the system's
    /// (auto-tuned) size.
    pub socket_recv_buffer: Option<usize>,
    /// `SO_SNDBUF` for accepted connections (set on the listener). Default: `None`, the
    /// system's (auto-tuned) size.
    pub socket_send_buffer: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            listener: ListenerMode::Shared,
            backlog: 1024,
            max_connections: 10_000,
            header_deadline: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            write_deadline: Duration::from_secs(60),
            output_cap: 1024 * 1024,
            shutdown_grace: Duration::from_secs(5),
            limits: Limits::default(),
            read_buffer: 64 * 1024,
            events_capacity: 1024,
            nodelay: true,
            socket_recv_buffer: None,
            socket_send_buffer: None,
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

    /// The same configuration with these three deadlines.
    pub fn with_deadlines(mut self, header: Duration, idle: Duration, write: Duration) -> Self {
        self.header_deadline = header;
        self.idle_timeout = idle;
        self.write_deadline = write;
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

    /// Values clamped to something workable (at least one loop, non-zero durations...).
    pub(crate) fn normalized(mut self) -> Self {
        let clamp = |d: Duration| d.clamp(Duration::from_millis(1), NEVER);
        self.workers = self.workers.max(1);
        self.backlog = self.backlog.max(1);
        self.max_connections = self.max_connections.max(1);
        self.header_deadline = clamp(self.header_deadline);
        self.idle_timeout = clamp(self.idle_timeout);
        self.write_deadline = clamp(self.write_deadline);
        self.shutdown_grace = self.shutdown_grace.min(NEVER);
        self.output_cap = self.output_cap.max(1);
        self.read_buffer = self.read_buffer.max(1024);
        self.events_capacity = self.events_capacity.max(16);
        self
    }
}
