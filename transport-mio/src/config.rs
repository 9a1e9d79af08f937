//! The knobs only this transport reads. Everything a server decides (limits, deadlines,
//! output cap, connections, shutdown, event loops) is in [`sockmsg_server::ServerConfig`].

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

/// Options of the mio transport alone, beside the shared
/// [`ServerConfig`](sockmsg_server::ServerConfig); see [`crate::Server::bind_with`].
///
/// ```
/// use sockmsg_transport_mio::{ListenerMode, MioOptions};
/// let options = MioOptions { listener: ListenerMode::ReusePort, ..MioOptions::default() };
/// assert_eq!(options.events_capacity, 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MioOptions {
    /// How the loops share the listening address. Default: [`ListenerMode::Shared`].
    pub listener: ListenerMode,
    /// Capacity of each loop's `mio::Events`. Default: 1,024 (at least 16).
    pub events_capacity: usize,
    /// `SO_RCVBUF` for accepted connections (set on the listener, which they inherit),
    /// bounding what a paused peer can park in the kernel. Default: `None`, the system's
    /// (auto-tuned) size.
    pub socket_recv_buffer: Option<usize>,
    /// `SO_SNDBUF` for accepted connections (set on the listener). Default: `None`, the
    /// system's (auto-tuned) size.
    pub socket_send_buffer: Option<usize>,
}

impl Default for MioOptions {
    fn default() -> Self {
        MioOptions {
            listener: ListenerMode::Shared,
            events_capacity: 1024,
            socket_recv_buffer: None,
            socket_send_buffer: None,
        }
    }
}
