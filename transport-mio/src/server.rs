//! The server: binding, the event-loop threads, shutdown.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;

use mio::net::TcpListener;
use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use sockmsg_server::{Driven, ServerConfig, Service, Session, ShutdownHandle};
use tracing::{info, warn};

use crate::config::{ListenerMode, MioOptions};
use crate::stats::Stats;
use crate::worker::{Accept, Board, LoopSetup, Worker, WAKER};

/// A bound, not yet running, event-loop server.
///
/// [`Server::bind`] creates the listening socket(s) and one `mio::Poll` per event loop
/// ([`ServerConfig::workers`]); [`Server::serve`] runs the loops, one thread each, until
/// [`ShutdownHandle::shutdown`]. Each loop accepts connections and drives each one's
/// [`sockmsg_server::Session`] (with `Server::serve_tls`, feature `tls`, a TLS session
/// with one inside, through the same loop: [`sockmsg_server::Driven`]): reads and writes
/// until `WouldBlock` (edge-triggered), registers the interest the machine wants, and
/// sleeps until the nearest deadline it names.
#[derive(Debug)]
pub struct Server {
    loops: Vec<LoopSetup>,
    local_addr: SocketAddr,
    config: ServerConfig,
    options: MioOptions,
    shutdown: ShutdownHandle,
    stats: Stats,
}

impl Server {
    /// Binds `addr` (the first of its addresses that works) with the default
    /// [`MioOptions`] and prepares [`ServerConfig::workers`] event loops. Port 0 picks a free
    /// port: see [`Server::local_addr`].
    pub fn bind<A: ToSocketAddrs>(addr: A, config: ServerConfig) -> io::Result<Server> {
        Server::bind_with(addr, config, MioOptions::default())
    }

    /// [`Server::bind`] with options of this transport alone.
    pub fn bind_with<A: ToSocketAddrs>(
        addr: A,
        config: ServerConfig,
        options: MioOptions,
    ) -> io::Result<Server> {
        let config = config.normalized();
        let mut last = None;
        for addr in addr.to_socket_addrs()? {
            match Server::bind_one(addr, config.clone(), options.clone()) {
                Ok(server) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind")))
    }

    fn bind_one(addr: SocketAddr, config: ServerConfig, options: MioOptions) -> io::Result<Server> {
        let n = config.workers;
        let mut listeners = Vec::with_capacity(n);
        let first = listen(addr, &config, &options)?;
        let local_addr = first.local_addr()?;
        match options.listener {
            ListenerMode::Shared => {
                for _ in 1..n {
                    listeners.push(first.try_clone()?);
                }
            }
            ListenerMode::ReusePort => {
                for _ in 1..n {
                    listeners.push(listen(local_addr, &config, &options)?);
                }
            }
        }
        listeners.insert(0, first);
        let shutdown = ShutdownHandle::new();
        let mut loops = Vec::with_capacity(n);
        let mut wakers = Vec::with_capacity(n);
        for listener in listeners {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            wakers.push(Arc::clone(&waker));
            shutdown.on_shutdown(move || {
                if let Err(e) = waker.wake() {
                    warn!(error = %e, "cannot wake an event loop");
                }
            });
            loops.push((poll, listener));
        }
        // One board for every loop: eviction at the cap chooses over the whole server.
        let board = Arc::new(Board::new(wakers));
        let loops = loops
            .into_iter()
            .map(|(poll, listener)| LoopSetup {
                poll,
                listener: TcpListener::from_std(listener),
                events_capacity: options.events_capacity.max(16),
                board: Arc::clone(&board),
            })
            .collect();
        Ok(Server {
            loops,
            local_addr,
            shutdown,
            stats: Stats::new(n, sockmsg_server::MemoryBudget::for_config(&config)),
            config,
            options,
        })
    }

    /// The address the server listens on (with the actual port if port 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The configuration in force (normalized: [`ServerConfig::normalized`]).
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The options of this transport in force.
    pub fn options(&self) -> &MioOptions {
        &self.options
    }

    /// A handle that stops the server from any thread, before or during
    /// [`Server::serve`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// A live view of the server's counters.
    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    /// Runs the event loops, one thread each, calling `service` for every request, and
    /// blocks until [`ShutdownHandle::shutdown`]. On shutdown the listeners close at once;
    /// idle connections and requests not yet complete are closed at once, answers owed get
    /// [`ServerConfig::shutdown_grace`] to flush. Returns the first error an event loop
    /// failed with (the others are then stopped too).
    pub fn serve(self, service: Arc<dyn Service>) -> io::Result<()> {
        let make: Accept<Session> = Arc::new(move |config, budget, now| {
            Some(Session::new_with_budget(
                Arc::clone(&service),
                config,
                budget.clone(),
                now,
            ))
        });
        self.serve_with(make)
    }

    /// As [`Server::serve`], with TLS in front of every connection (feature `tls`), on the
    /// same event loops: `tls` for the handshake ([`sockmsg_tls::server_config`]), `service`
    /// told who each client is ([`sockmsg_tls::PeerService`]; [`sockmsg_tls::AnyPeer`] for
    /// a plain service). Each connection is its socket, rustls and its session
    /// ([`sockmsg_tls::TlsSession`]); the interest registered is derived from both machines
    /// after every event, as rustls's own mio example does. A failed handshake or a
    /// plaintext peer closes that connection with one log line naming the reason; the
    /// handshake deadline is [`sockmsg_tls::DEFAULT_HANDSHAKE_TIMEOUT`].
    #[cfg(feature = "tls")]
    pub fn serve_tls(
        self,
        service: Arc<dyn sockmsg_tls::PeerService>,
        tls: Arc<sockmsg_tls::rustls::ServerConfig>,
    ) -> io::Result<()> {
        self.serve_with(Arc::new(sockmsg_tls::TlsSession::acceptor(tls, service)))
    }

    /// The event loops, with `make` building each connection's machine.
    fn serve_with<D: Driven + 'static>(self, make: Accept<D>) -> io::Result<()> {
        info!(
            addr = %self.local_addr,
            workers = self.loops.len(),
            mode = ?self.options.listener,
            "sockmsg mio server listening"
        );
        let config = Arc::new(self.config);
        let mut threads = Vec::with_capacity(self.loops.len());
        let mut result = Ok(());
        for (index, setup) in self.loops.into_iter().enumerate() {
            let worker = Worker::new(
                index,
                setup,
                Arc::clone(&make),
                Arc::clone(&config),
                self.stats.clone(),
                self.shutdown.clone(),
            );
            let shutdown = self.shutdown.clone();
            let spawned = thread::Builder::new()
                .name(format!("sockmsg-mio-{index}"))
                .spawn(move || {
                    let r = catch_unwind(AssertUnwindSafe(|| worker.run()))
                        .unwrap_or_else(|_| Err(io::Error::other("event loop panicked")));
                    if r.is_err() {
                        shutdown.shutdown();
                    }
                    r
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    warn!(error = %e, "cannot start an event loop thread");
                    self.shutdown.shutdown();
                    result = Err(e);
                    break;
                }
            }
        }
        for handle in threads {
            let r = handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("event loop panicked")));
            if let Err(e) = r {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        info!(addr = %self.local_addr, "sockmsg mio server stopped");
        result
    }
}

/// Creates a non-blocking listening socket.
fn listen(
    addr: SocketAddr,
    config: &ServerConfig,
    options: &MioOptions,
) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    if let Some(size) = options.socket_recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(size) = options.socket_send_buffer {
        socket.set_send_buffer_size(size)?;
    }
    if options.listener == ListenerMode::ReusePort {
        #[cfg(all(
            unix,
            not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
        ))]
        socket.set_reuse_port(true)?;
        #[cfg(not(all(
            unix,
            not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
        )))]
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_REUSEPORT is not available on this platform",
        ));
    }
    if config.nodelay {
        // Handed down to the connections accepted (Linux); checked on the first one
        // (`NoDelay`), and set on each where it was not.
        let _ = socket.set_nodelay(true);
    }
    socket.bind(&addr.into())?;
    socket.listen(config.backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
