//! The threaded server: an accept loop, one thread per connection, graceful shutdown.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use sockmsg_protocol::{Connection, Limits, Role, Service, ServiceError};
use tracing::{debug, info, info_span, warn};

use crate::error::TransportError;
use crate::framed::{Framed, Incoming};

/// What the accept loop does once [`ServerConfig::max_connections`] connections are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WhenFull {
    /// Stop accepting until a connection closes: new connections wait in the kernel's
    /// backlog (and are refused by the kernel once the backlog is full). The default.
    #[default]
    Wait,
    /// Keep accepting, and close each connection beyond the maximum at once (the client
    /// sees its connection closed before any response).
    Refuse,
}

/// How a [`Server`] runs. Every field has a documented default ([`ServerConfig::default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Most connections served at once, each on its own thread. Default: 512.
    pub max_connections: usize,
    /// What happens to connections beyond `max_connections`. Default: [`WhenFull::Wait`].
    pub when_full: WhenFull,
    /// Length of the kernel's queue of connections not yet accepted. Default: 1024.
    pub backlog: i32,
    /// Longest a connection may stay idle between requests (no byte of a new request
    /// arriving) before the server closes it. Default: 60 s. `None`: forever.
    pub idle_timeout: Option<Duration>,
    /// Once the first byte of a request has arrived, the whole request must arrive within
    /// this time, or the server closes the connection (a peer dripping bytes cannot hold a
    /// thread for ever). Default: 30 s. `None`: no limit.
    pub read_timeout: Option<Duration>,
    /// Longest writing a response may go without the peer accepting a byte. Default: 30 s.
    /// `None`: forever.
    pub write_timeout: Option<Duration>,
    /// On shutdown, how long connections may take to finish the requests they are
    /// receiving or answering before their sockets are shut down under them. Default: 10 s.
    pub shutdown_grace: Duration,
    /// How often a connection waiting for a request checks for shutdown and idle timeout
    /// (its socket's `SO_RCVTIMEO`). Shutdown takes effect within about this long. Default:
    /// 100 ms.
    pub poll_interval: Duration,
    /// What clients may make the server accept. Default: [`Limits::default`].
    pub limits: Limits,
    /// Disable Nagle's algorithm on accepted connections (`TCP_NODELAY`). Default: `true`.
    pub nodelay: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 512,
            when_full: WhenFull::Wait,
            backlog: 1024,
            idle_timeout: Some(Duration::from_secs(60)),
            read_timeout: Some(Duration::from_secs(30)),
            write_timeout: Some(Duration::from_secs(30)),
            shutdown_grace: Duration::from_secs(10),
            poll_interval: Duration::from_millis(100),
            limits: Limits::default(),
            nodelay: true,
        }
    }
}

/// What the accept loop and the connection threads share.
#[derive(Debug)]
struct Shared {
    stopping: AtomicBool,
    /// Where a self-connect reaches the listener (loopback for a wildcard address).
    wake_addr: SocketAddr,
    state: Mutex<State>,
    changed: Condvar,
}

/// The open connections: how many, and a handle on each socket to force it closed.
#[derive(Debug, Default)]
struct State {
    active: usize,
    streams: HashMap<u64, TcpStream>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves nothing inconsistent: counts are updated
        // in one statement.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// Stops a [`Server`] from any thread (a Ctrl-C handler, a test, a service): it stops
/// accepting, lets the requests in progress finish, closes idle connections, and
/// [`Server::serve`] returns.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown and returns at once; calling it again does nothing.
    /// The accept loop is woken by a connection to the server's own address.
    pub fn shutdown(&self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        info!("shutting down: no new connections; finishing requests in progress");
        self.shared.changed.notify_all();
        // Wake the blocking accept. If this fails the loop still sees the flag at its next
        // accept or capacity check; the error is only worth a debug line.
        if let Err(e) = TcpStream::connect_timeout(&self.shared.wake_addr, Duration::from_secs(1)) {
            debug!(
                "wake-up connection to {} failed: {e}",
                self.shared.wake_addr
            );
        }
    }

    /// `true` once [`ShutdownHandle::shutdown`] was called.
    pub fn is_shutdown(&self) -> bool {
        self.shared.stopping()
    }

    /// Connections open right now.
    pub fn connections(&self) -> usize {
        self.shared.lock().active
    }
}

/// A bound, listening server; [`Server::serve`] runs it.
///
/// See the crate documentation for an example.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: ServerConfig,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds `addr` with `SO_REUSEADDR` (a restarted server does not wait for old
    /// connections in `TIME_WAIT`) and listens. Port 0 picks a free port:
    /// [`Server::local_addr`] tells which.
    pub fn bind(addr: SocketAddr, config: ServerConfig) -> io::Result<Server> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(config.backlog)?;
        let listener: TcpListener = socket.into();
        let local_addr = listener.local_addr()?;
        let wake_ip = match local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        info!("listening on {local_addr}");
        Ok(Server {
            listener,
            local_addr,
            config,
            shared: Arc::new(Shared {
                stopping: AtomicBool::new(false),
                wake_addr: SocketAddr::new(wake_ip, local_addr.port()),
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            }),
        })
    }

    /// The address the server listens on (with the real port if it bound port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// A handle that stops the server from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves `service` until [`ShutdownHandle::shutdown`]: accepts connections, runs each
    /// on its own thread (up to [`ServerConfig::max_connections`]), answers every request
    /// with [`Service::call`] in order. A connection ends when the client closes, on a
    /// protocol error, a timeout or a service error (each logged); other connections go on.
    ///
    /// On shutdown it stops accepting (and closes the listening socket), waits up to
    /// [`ServerConfig::shutdown_grace`] for connections to finish the request they are
    /// receiving or answering (idle ones close within [`ServerConfig::poll_interval`]),
    /// shuts down the sockets of any still open, and joins the threads (bounded) before
    /// returning.
    pub fn serve(self, service: Arc<dyn Service>) -> io::Result<()> {
        let Server {
            listener,
            local_addr,
            config,
            shared,
        } = self;
        let config = Arc::new(config);
        let max = config.max_connections.max(1);
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let mut next_id: u64 = 0;
        let mut full_logged = false;
        info!("serving on {local_addr} (up to {max} connections)");

        while !shared.stopping() {
            if config.when_full == WhenFull::Wait {
                let mut state = shared.lock();
                while state.active >= max && !shared.stopping() {
                    if !full_logged {
                        warn!(
                            "{} connections open (max_connections): new connections wait in \
                             the backlog",
                            state.active
                        );
                        full_logged = true;
                    }
                    state = shared
                        .changed
                        .wait_timeout(state, Duration::from_secs(1))
                        .map(|(s, _)| s)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
                drop(state);
                if full_logged && !shared.stopping() {
                    info!("below max_connections again: accepting");
                    full_logged = false;
                }
                if shared.stopping() {
                    break;
                }
            }

            let (stream, peer) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) => {
                    if shared.stopping() {
                        break;
                    }
                    match e.kind() {
                        io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset => {}
                        _ => {
                            // EMFILE and friends: pause rather than spin.
                            warn!("accept failed: {e}");
                            thread::sleep(config.poll_interval);
                        }
                    }
                    continue;
                }
            };
            if shared.stopping() {
                // Most likely the shutdown's own wake-up connection.
                break;
            }
            threads.retain(|t| !t.is_finished());

            let clone = match stream.try_clone() {
                Ok(c) => c,
                Err(e) => {
                    warn!("dropping connection from {peer}: cannot clone its socket: {e}");
                    continue;
                }
            };
            let id = next_id;
            next_id += 1;
            {
                let mut state = shared.lock();
                if state.active >= max {
                    // Only reachable with WhenFull::Refuse.
                    warn!(
                        "refused connection from {peer}: {} connections open (max_connections)",
                        state.active
                    );
                    continue;
                }
                state.active += 1;
                state.streams.insert(id, clone);
            }
            let guard = ConnectionGuard {
                shared: Arc::clone(&shared),
                id,
            };
            let service = Arc::clone(&service);
            let config_for_thread = Arc::clone(&config);
            let spawned = thread::Builder::new()
                .name(format!("sockmsg-conn-{id}"))
                .spawn(move || {
                    let _guard = guard;
                    serve_connection(stream, peer, &*service, &config_for_thread, &_guard.shared);
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                // The closure (and with it the guard) was dropped: the count is right.
                Err(e) => warn!("dropping connection from {peer}: cannot start a thread: {e}"),
            }
        }

        drop(listener);
        finish(&shared, &config, threads);
        info!("server on {local_addr} stopped");
        Ok(())
    }
}

/// After the accept loop: waits for connections (bounded), forces the stragglers, joins.
fn finish(shared: &Shared, config: &ServerConfig, threads: Vec<JoinHandle<()>>) {
    let open = shared.lock().active;
    if open > 0 {
        info!("stopped accepting; waiting for {open} connection(s) to finish");
    }
    let left = wait_for_connections(shared, config.shutdown_grace);
    if left > 0 {
        warn!(
            "{left} connection(s) still open after {:?}: shutting their sockets down",
            config.shutdown_grace
        );
        for stream in shared.lock().streams.values() {
            // Ignored: the socket may already be closed by its thread.
            let _ = stream.shutdown(Shutdown::Both);
        }
        let wait = config.poll_interval.max(Duration::from_millis(100)) * 10;
        let left = wait_for_connections(shared, wait);
        if left > 0 {
            warn!("{left} connection thread(s) still busy (in the service?); not waiting for them");
        }
    }
    for t in threads {
        if t.is_finished() && t.join().is_err() {
            warn!("a connection thread panicked");
        }
    }
}

/// Waits until no connection is open or `limit` passed; returns how many are still open.
fn wait_for_connections(shared: &Shared, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let mut state = shared.lock();
    while state.active > 0 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        state = shared
            .changed
            .wait_timeout(state, deadline - now)
            .map(|(s, _)| s)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    state.active
}

/// Counts a connection out when its thread ends, however it ends.
struct ConnectionGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.active = state.active.saturating_sub(1);
        state.streams.remove(&self.id);
        drop(state);
        self.shared.changed.notify_all();
    }
}

/// Why a connection was closed.
enum CloseReason {
    PeerClosed,
    ShuttingDown,
    IdleTimeout(Duration),
    ReadTimeout(Duration),
    Transport(TransportError),
    Service(ServiceError),
    Panicked,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("the client closed it"),
            CloseReason::ShuttingDown => f.write_str("the server is shutting down"),
            CloseReason::IdleTimeout(t) => write!(f, "idle for {t:?}"),
            CloseReason::ReadTimeout(t) => write!(f, "request not complete within {t:?}"),
            CloseReason::Transport(e) => write!(f, "{e}"),
            CloseReason::Service(e) => write!(f, "the service failed: {e}"),
            CloseReason::Panicked => f.write_str("the service panicked"),
        }
    }
}

/// One connection's thread: answers requests until the connection ends, then closes it.
fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    service: &dyn Service,
    config: &ServerConfig,
    shared: &Shared,
) {
    let span = info_span!("conn", %peer);
    let _enter = span.enter();
    info!("accepted connection from {peer}");
    let poll = config.poll_interval.max(Duration::from_millis(1));
    let write_timeout = config.write_timeout.filter(|t| !t.is_zero());
    let setup = stream
        .set_nodelay(config.nodelay)
        .and_then(|()| stream.set_read_timeout(Some(poll)))
        .and_then(|()| stream.set_write_timeout(write_timeout));
    if let Err(e) = setup {
        warn!("closing connection to {peer}: cannot set socket options: {e}");
        return;
    }
    let conn = Connection::new(Role::Server, config.limits.clone());
    let mut framed = Framed::new(stream, conn, peer).with_timeouts(None, write_timeout);
    let reason = run_connection(&mut framed, service, config, shared);
    match &reason {
        CloseReason::Transport(_) | CloseReason::Service(_) | CloseReason::Panicked => {
            warn!("closing connection to {peer}: {reason}")
        }
        _ => info!("closing connection to {peer} ({reason})"),
    }
    // Errors ignored: the peer may be gone already; dropping the stream closes it anyway.
    let _ = framed.get_ref().shutdown(Shutdown::Write);
}

/// The request loop of one connection. Requests already received are all answered before
/// the next read, so a pipelining client gets its responses in one write.
fn run_connection(
    framed: &mut Framed<TcpStream>,
    service: &dyn Service,
    config: &ServerConfig,
    shared: &Shared,
) -> CloseReason {
    let mut idle_since = Instant::now();
    // When the first byte of the request now in progress was seen.
    let mut request_since: Option<Instant> = None;
    loop {
        let mut answered = false;
        loop {
            match framed.poll_event() {
                Ok(Some(Incoming::Message(request))) => {
                    debug!(
                        "received a {} message of {} bytes",
                        request.content_type(),
                        request.content().len()
                    );
                    let response =
                        match panic::catch_unwind(AssertUnwindSafe(|| service.call(request))) {
                            Ok(Ok(response)) => response,
                            Ok(Err(e)) => return CloseReason::Service(e),
                            Err(_) => return CloseReason::Panicked,
                        };
                    if let Err(e) = framed.queue(response) {
                        return CloseReason::Transport(e);
                    }
                    answered = true;
                }
                Ok(Some(Incoming::End)) => {
                    return match framed.flush() {
                        Ok(()) => CloseReason::PeerClosed,
                        Err(e) => CloseReason::Transport(e),
                    };
                }
                Ok(None) => break,
                Err(e) => {
                    // Answer what was complete before the error, then close.
                    let _ = framed.flush();
                    return CloseReason::Transport(e);
                }
            }
        }
        if let Err(e) = framed.flush() {
            return CloseReason::Transport(e);
        }
        let now = Instant::now();
        if answered {
            idle_since = now;
            request_since = None;
        }
        if framed.connection().message_in_progress() {
            let start = *request_since.get_or_insert(now);
            if let Some(limit) = config.read_timeout {
                if now.duration_since(start) >= limit {
                    return CloseReason::ReadTimeout(limit);
                }
            }
        } else {
            request_since = None;
            if shared.stopping() {
                return CloseReason::ShuttingDown;
            }
            if let Some(limit) = config.idle_timeout {
                if now.duration_since(idle_since) >= limit {
                    return CloseReason::IdleTimeout(limit);
                }
            }
        }
        match framed.read_once() {
            Ok(_) => {}
            Err(e) => return CloseReason::Transport(e),
        }
    }
}
