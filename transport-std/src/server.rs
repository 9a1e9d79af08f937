//! The threaded server: an accept loop, one thread per connection, each a thin loop over
//! a [`Session`] of the server layer ([`sockmsg_server`]).
//!
//! Idle costs nothing: a connection's thread blocks in `read` with the socket's timeout
//! (`SO_RCVTIMEO`, `SO_SNDTIMEO`) set to the instant its session next needs it
//! ([`Session::poll_timeout`]), and shutdown wakes it by `shutdown(2)` of its socket's read
//! side, never by polling. One file descriptor per connection: its thread and the server
//! share the socket (`Arc<TcpStream>`; `&TcpStream` reads and writes).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use sockmsg_server::{
    accept_error, AcceptAction, CloseReason, Driven, IdleMark, MemoryBudget, NoDelay, ServerConfig,
    Service, Session, ShutdownHandle, WhenFull,
};
use tracing::{debug, debug_span, info, warn};

/// Most connections (threads) served at once, whatever [`ServerConfig::max_connections`]
/// says: tracing-subscriber's registry serves at most 4,096 threads that use spans, and a
/// thread per connection past a few thousand is the wrong transport anyway (the mio and
/// tokio transports hold 10,000 connections in a few threads).
pub const MAX_THREADS: usize = 4_000;

/// What the accept loop, the connection threads and the shutdown wake-up share.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// The open connections: how many, and each one's socket (to wake or force it closed)
/// and mark (to find the one idle the longest).
#[derive(Debug, Default)]
struct State {
    active: usize,
    streams: HashMap<u64, (Arc<TcpStream>, Arc<IdleMark>)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves nothing inconsistent: each update is one
        // statement.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shuts down `how` every open socket (ignoring sockets already closed).
    fn shutdown_sockets(&self, how: Shutdown) {
        for (stream, _) in self.lock().streams.values() {
            let _ = stream.shutdown(how);
        }
    }
}

/// A bound, listening server; [`Server::serve`] runs it.
///
/// See the crate documentation for an example.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: Arc<ServerConfig>,
    shared: Arc<Shared>,
    shutdown: ShutdownHandle,
    budget: MemoryBudget,
}

impl Server {
    /// Binds `addr` with `SO_REUSEADDR` (a restarted server does not wait for old
    /// connections in `TIME_WAIT`) and listens. Port 0 picks a free port:
    /// [`Server::local_addr`] tells which. [`ServerConfig::workers`] does not apply (one
    /// thread per connection).
    pub fn bind(addr: SocketAddr, config: ServerConfig) -> io::Result<Server> {
        let config = config.normalized();
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if config.nodelay {
            // Handed down to the connections accepted (Linux); checked on the first one
            // (`NoDelay`), and set on each where it was not.
            let _ = socket.set_nodelay(true);
        }
        socket.bind(&addr.into())?;
        socket.listen(config.backlog)?;
        let listener: TcpListener = socket.into();
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let shutdown = ShutdownHandle::new();
        let wake_ip = match local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let wake_addr = SocketAddr::new(wake_ip, local_addr.port());
        let waking = Arc::clone(&shared);
        shutdown.on_shutdown(move || {
            waking.changed.notify_all();
            // Threads blocked reading a request wake up to a read of 0 bytes.
            waking.shutdown_sockets(Shutdown::Read);
            // The blocking accept wakes up to a connection to the server itself. If this
            // fails the loop still sees the flag at its next accept.
            if let Err(e) = TcpStream::connect_timeout(&wake_addr, Duration::from_secs(1)) {
                debug!("wake-up connection to {wake_addr} failed: {e}");
            }
        });
        info!("listening on {local_addr}");
        let budget = MemoryBudget::for_config(&config);
        Ok(Server {
            listener,
            local_addr,
            config: Arc::new(config),
            shared,
            shutdown,
            budget,
        })
    }

    /// The address the server listens on (with the real port if it bound port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The configuration in force (normalized: [`ServerConfig::normalized`]).
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The memory budget its connections share ([`ServerConfig::memory_budget`]), with its
    /// figures.
    pub fn memory(&self) -> &MemoryBudget {
        &self.budget
    }

    /// A handle that stops the server from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serves `service` until [`ShutdownHandle::shutdown`]: accepts connections, runs each
    /// on its own thread (up to [`ServerConfig::max_connections`]), answers every request
    /// in order. A connection ends when the client closes, on a protocol error, a deadline
    /// or a service error (one log line each); other connections go on.
    ///
    /// On shutdown it stops accepting (and closes the listening socket); idle connections
    /// and requests not yet complete are closed at once; answers owed get
    /// [`ServerConfig::shutdown_grace`] to flush, after which remaining sockets are shut
    /// down under their threads, which are joined (bounded) before returning.
    pub fn serve(self, service: Arc<dyn Service>) -> io::Result<()> {
        self.serve_with(move |config, budget, now| {
            Some(Session::new_with_budget(
                Arc::clone(&service),
                config,
                budget.clone(),
                now,
            ))
        })
    }

    /// As [`Server::serve`], with TLS in front of every connection (feature `tls`): `tls`
    /// for the handshake ([`sockmsg_tls::server_config`]), `service` told who each client
    /// is ([`sockmsg_tls::PeerService`]; [`sockmsg_tls::AnyPeer`] for a plain service). A
    /// failed handshake or a plaintext peer closes that connection with one log line
    /// naming the reason; the handshake deadline is
    /// [`sockmsg_tls::DEFAULT_HANDSHAKE_TIMEOUT`].
    #[cfg(feature = "tls")]
    pub fn serve_tls(
        self,
        service: Arc<dyn sockmsg_tls::PeerService>,
        tls: Arc<sockmsg_tls::rustls::ServerConfig>,
    ) -> io::Result<()> {
        self.serve_with(sockmsg_tls::TlsSession::acceptor(tls, service))
    }

    /// The accept loop, with `make` building each connection's machine.
    fn serve_with<D: Driven + 'static>(
        self,
        make: impl Fn(Arc<ServerConfig>, &MemoryBudget, Instant) -> Option<D>,
    ) -> io::Result<()> {
        let Server {
            listener,
            local_addr,
            config,
            shared,
            shutdown,
            budget,
        } = self;
        let nodelay = NoDelay::new(config.nodelay);
        let max = config.max_connections.min(MAX_THREADS);
        if max < config.max_connections {
            warn!(
                "max_connections {} is more than a thread per connection allows here: {max}",
                config.max_connections
            );
        }
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let mut next_id: u64 = 0;
        info!("serving on {local_addr} (up to {max} connections)");

        while !shutdown.is_shutdown() {
            let evict = config.when_full == WhenFull::EvictIdle;
            if config.when_full != WhenFull::Refuse
                && !wait_for_a_slot(&shared, &shutdown, max, evict)
            {
                break;
            }
            let (stream, peer) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) => {
                    if shutdown.is_shutdown() {
                        break;
                    }
                    if let AcceptAction::Backoff(pause) = accept_error(&e) {
                        thread::sleep(pause);
                    }
                    continue;
                }
            };
            if shutdown.is_shutdown() {
                // Most likely the shutdown's own wake-up connection.
                break;
            }
            threads.retain(|t| !t.is_finished());
            if let Err(e) = nodelay.apply(|| stream.nodelay(), |on| stream.set_nodelay(on)) {
                debug!(%peer, "cannot set TCP_NODELAY: {e}");
            }
            let stream = Arc::new(stream);
            let mark = Arc::new(IdleMark::default());
            let id = next_id;
            next_id += 1;
            {
                let mut state = shared.lock();
                if state.active >= max {
                    // Only reachable with WhenFull::Refuse.
                    drop(state);
                    CloseReason::Full.log(&peer);
                    continue;
                }
                state.active += 1;
                state
                    .streams
                    .insert(id, (Arc::clone(&stream), Arc::clone(&mark)));
            }
            let guard = ConnectionGuard {
                shared: Arc::clone(&shared),
                id,
            };
            let Some(session) = make(Arc::clone(&config), &budget, Instant::now()) else {
                continue;
            };
            let handle = shutdown.clone();
            let spawned = thread::Builder::new()
                .name(format!("sockmsg-conn-{id}"))
                .spawn(move || {
                    let _guard = guard;
                    serve_connection(&stream, peer, session, &handle, &mark);
                });
            match spawned {
                Ok(t) => threads.push(t),
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

/// Blocks while `max` connections are open; `false` if the server shut down meanwhile.
/// With `evict`, closes the connection idle the longest to make room
/// ([`WhenFull::EvictIdle`]), one at a time.
fn wait_for_a_slot(shared: &Shared, shutdown: &ShutdownHandle, max: usize, evict: bool) -> bool {
    let mut state = shared.lock();
    if state.active < max {
        return true;
    }
    if !evict || !evict_idle(&state) {
        warn!(
            "{} connections open (max_connections): new connections wait in the backlog",
            state.active
        );
    }
    while state.active >= max && !shutdown.is_shutdown() {
        // Bounded: the shutdown's notification may come between the check and the wait;
        // with `evict`, a connection may have gone idle meanwhile.
        let pause = if evict {
            evict_idle(&state);
            Duration::from_millis(50)
        } else {
            Duration::from_secs(1)
        };
        state = shared
            .changed
            .wait_timeout(state, pause)
            .map(|(s, _)| s)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    drop(state);
    if shutdown.is_shutdown() {
        return false;
    }
    info!("below max_connections again: accepting");
    true
}

/// Marks the connection idle the longest as evicted and shuts its socket down under its
/// thread (which then closes it as [`CloseReason::Evicted`]); `false` if none is idle.
/// Does nothing while an eviction is under way.
fn evict_idle(state: &State) -> bool {
    let marks = || state.streams.values();
    if marks().any(|(_, m)| m.is_evicted()) {
        return true;
    }
    let Some((stream, mark)) = IdleMark::longest_idle(marks().map(|(s, m)| (&**m, (s, m)))) else {
        return false;
    };
    // Only if it is still idle (it may have just taken a request: look again later).
    if !mark.evict() {
        return false;
    }
    let _ = stream.shutdown(Shutdown::Both);
    true
}

/// After the accept loop: waits for connections to flush what they owe (each closes by
/// itself at the end of the grace), forces the stragglers, joins the threads.
fn finish(shared: &Shared, config: &ServerConfig, threads: Vec<JoinHandle<()>>) {
    let open = shared.lock().active;
    if open > 0 {
        info!("stopped accepting; waiting for {open} connection(s) to finish");
    }
    // A thread blocked writing since before the shutdown wakes at its write deadline, not
    // at the grace: shut its socket down at the grace.
    let left = wait_for_connections(shared, config.shutdown_grace);
    if left > 0 {
        warn!(
            "{left} connection(s) still open after {:?}: shutting their sockets down",
            config.shutdown_grace
        );
        shared.shutdown_sockets(Shutdown::Both);
        let left = wait_for_connections(shared, Duration::from_secs(1));
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

/// The socket timeout last set for one direction, so that it is set again only when the
/// session's next deadline needs it.
#[derive(Default)]
struct Armed(Option<Option<Duration>>);

impl Armed {
    /// Sets the timeout of `direction` so that a blocking call returns by `deadline`. A
    /// timeout already set is kept if it returns no later than needed and not much sooner
    /// (an early return only costs one turn of the loop).
    fn arm(
        &mut self,
        deadline: Option<Instant>,
        now: Instant,
        set: impl FnOnce(Option<Duration>) -> io::Result<()>,
    ) -> io::Result<()> {
        let want = deadline.map(|at| {
            at.saturating_duration_since(now)
                .max(Duration::from_millis(1))
        });
        let keep = match (self.0, want) {
            (Some(None), None) => true,
            (Some(Some(have)), Some(want)) => have <= want && have >= want / 2,
            _ => false,
        };
        if !keep {
            set(want)?;
            self.0 = Some(want);
        }
        Ok(())
    }
}

/// One connection's thread: the wishes of its [`Driven`] machine (a plaintext [`Session`],
/// or a TLS session), carried out with blocking calls.
fn serve_connection<D: Driven>(
    stream: &TcpStream,
    peer: SocketAddr,
    mut session: D,
    shutdown: &ShutdownHandle,
    mark: &IdleMark,
) {
    // At debug level only: a span entered on a thread registers that thread with
    // tracing-subscriber's registry, which serves at most 4,096 threads at once (past that
    // it panics). Every line at the default level names the peer itself.
    let span = debug_span!("conn", %peer);
    let _enter = span.enter();
    info!("accepted connection from {peer}");
    let (mut read_armed, mut write_armed) = (Armed::default(), Armed::default());
    loop {
        let now = Instant::now();
        if shutdown.is_shutdown() {
            session.begin_shutdown(now);
        }
        if mark.is_evicted() {
            session.abort(CloseReason::Evicted);
        }
        if session.is_done() {
            break;
        }
        mark.note(session.idle_since());
        let result = if session.wants_write() {
            write_armed
                .arm(session.poll_timeout(), now, |t| stream.set_write_timeout(t))
                .and_then(|()| session.write_to(&mut &*stream, now).map(drop))
        } else if session.wants_read() {
            read_armed
                .arm(session.poll_timeout(), now, |t| stream.set_read_timeout(t))
                .and_then(|()| read(stream, &mut session, shutdown, mark))
        } else {
            // Nothing to read or write, not closed: only a deadline can move it.
            if let Some(at) = session.poll_timeout() {
                thread::sleep(at.saturating_duration_since(now));
            }
            session.handle_timeout(Instant::now());
            if !session.is_done() && session.poll_timeout().is_none() {
                // Nothing can move it any more (cannot happen with a session).
                session.abort(CloseReason::Shutdown);
            }
            continue;
        };
        match result {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                session.handle_timeout(Instant::now());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => session.abort(CloseReason::Io(e)),
        }
    }
    session.log_close(&peer);
    // Errors ignored: the peer may be gone already; dropping the stream closes it anyway.
    let _ = stream.shutdown(Shutdown::Write);
}

/// Reads once: blocks until the socket is readable (a peek, under the socket's read
/// timeout), then hands the bytes to the machine with the instant they arrived. A peek of
/// 0 bytes after the server began shutting down, or after the accept loop chose this
/// connection for eviction, is the server's own `shutdown(2)`, not the peer closing.
fn read<D: Driven>(
    stream: &TcpStream,
    session: &mut D,
    shutdown: &ShutdownHandle,
    evicted: &IdleMark,
) -> io::Result<()> {
    let arrived = stream.peek(&mut [0u8; 1])?;
    let now = Instant::now();
    if arrived == 0 && evicted.is_evicted() {
        session.abort(CloseReason::Evicted);
    } else if arrived == 0 && shutdown.is_shutdown() {
        session.begin_shutdown(now);
    } else if !evicted.note(None) {
        // Evicted while idle, just before these bytes came: it closes (the bytes are not
        // taken in, so no request is started and lost).
        session.abort(CloseReason::Evicted);
    } else {
        session.read_from(&mut &*stream, now)?;
    }
    Ok(())
}
