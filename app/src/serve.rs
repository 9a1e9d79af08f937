//! Running a [`Service`] on a chosen transport: the one place that knows the transports.
//!
//! Adding a transport is: a variant of [`Transport`], and an arm in [`serve`] that binds,
//! calls `ready` with the bound address and a [`Stopper`], and serves.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use sockmsg_protocol::{Limits, Service};

/// The transports a server can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum Transport {
    /// Non-blocking sockets on mio, one event loop per core (`sockmsg-transport-mio`).
    #[default]
    Mio,
    /// Blocking sockets, one thread per connection (`sockmsg-transport-std`).
    Std,
}

impl Transport {
    /// Every transport, for tests that run on each.
    pub const ALL: &'static [Transport] = &[Transport::Mio, Transport::Std];

    /// The name used on the command line (`mio`, `std`).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Mio => "mio",
            Transport::Std => "std",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Transport-neutral server settings; each transport maps them onto its own configuration.
/// Defaults are those of `sockmsg_transport_std::ServerConfig::default()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Most connections served at once (default 512).
    pub max_connections: usize,
    /// Longest a connection may wait idle between requests (default 60 s; `None`: forever).
    pub idle_timeout: Option<Duration>,
    /// Longest a request may take to arrive once begun (default 30 s; `None`: no limit).
    pub read_timeout: Option<Duration>,
    /// Longest a response write may make no progress (default 30 s; `None`: forever).
    pub write_timeout: Option<Duration>,
    /// What clients may make the server accept (default [`Limits::default`]).
    pub limits: Limits,
    /// Event loops of the mio transport (default `None`: one per core). The std transport
    /// runs a thread per connection and ignores it.
    pub event_loops: Option<usize>,
    /// Close each connection once its first answer is sent, as the guide's server does,
    /// for clients that read until the server closes (default `false`: connections stay
    /// open for further requests until the client closes or the idle timeout). Carried to
    /// the server layer's configuration (`close_after_answer`), which implements it.
    pub close_after_answer: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        let std = sockmsg_transport_std::ServerConfig::default();
        ServerSettings {
            max_connections: std.max_connections,
            idle_timeout: std.idle_timeout,
            read_timeout: std.read_timeout,
            write_timeout: std.write_timeout,
            limits: std.limits,
            event_loops: None,
            close_after_answer: false,
        }
    }
}

impl ServerSettings {
    /// These settings as a configuration of the blocking transport.
    pub fn std_config(&self) -> sockmsg_transport_std::ServerConfig {
        sockmsg_transport_std::ServerConfig {
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout,
            read_timeout: self.read_timeout,
            write_timeout: self.write_timeout,
            limits: self.limits.clone(),
            ..sockmsg_transport_std::ServerConfig::default()
        }
    }

    /// These settings as a configuration of the event-loop transport: the connection cap,
    /// timeouts (read timeout = the per-message header deadline), limits and event loops;
    /// every other field keeps the mio transport's default.
    pub fn mio_config(&self) -> sockmsg_transport_mio::ServerConfig {
        let never = Duration::MAX; // the mio transport clamps it to "never"
        let default = sockmsg_transport_mio::ServerConfig::default();
        sockmsg_transport_mio::ServerConfig {
            workers: self.event_loops.unwrap_or(default.workers),
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout.unwrap_or(never),
            header_deadline: self.read_timeout.unwrap_or(never),
            write_deadline: self.write_timeout.unwrap_or(never),
            limits: self.limits.clone(),
            ..default
        }
    }
}

/// Stops a running server, whatever its transport. Cheap to clone, callable from any
/// thread (a Ctrl-C handler, a test); calling it twice does nothing more.
#[derive(Clone)]
pub struct Stopper(Arc<dyn Fn() + Send + Sync>);

impl Stopper {
    /// A stopper that runs `stop`.
    pub fn new(stop: impl Fn() + Send + Sync + 'static) -> Stopper {
        Stopper(Arc::new(stop))
    }

    /// Starts a graceful shutdown and returns at once.
    pub fn stop(&self) {
        (self.0)()
    }
}

impl fmt::Debug for Stopper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stopper")
    }
}

/// Runs `service` on `transport`, listening on `addr` (port 0 allowed), until stopped.
///
/// Once listening, calls `ready` with the bound address and a [`Stopper`]; then blocks
/// until the stopper is used and the server has shut down gracefully. A failure to bind is
/// returned before `ready` is called.
pub fn serve(
    transport: Transport,
    addr: SocketAddr,
    settings: &ServerSettings,
    service: Arc<dyn Service>,
    ready: impl FnOnce(SocketAddr, Stopper),
) -> io::Result<()> {
    match transport {
        Transport::Mio => {
            let server = sockmsg_transport_mio::Server::bind(addr, settings.mio_config())?;
            let handle = server.shutdown_handle();
            ready(server.local_addr(), Stopper::new(move || handle.shutdown()));
            server.serve(service)
        }
        Transport::Std => {
            let server = sockmsg_transport_std::Server::bind(addr, settings.std_config())?;
            let handle = server.shutdown_handle();
            ready(server.local_addr(), Stopper::new(move || handle.shutdown()));
            server.serve(service)
        }
    }
}

/// A server running on its own thread ([`spawn`]); stopped (bounded) when dropped.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    transport: Transport,
    stopper: Stopper,
    done: mpsc::Receiver<Started>,
    thread: Option<JoinHandle<()>>,
}

/// What the server thread reports.
enum Started {
    Ready(SocketAddr, Stopper),
    Done(io::Result<()>),
}

impl fmt::Debug for Started {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Started::Ready(addr, _) => write!(f, "Ready({addr})"),
            Started::Done(r) => write!(f, "Done({r:?})"),
        }
    }
}

/// How long [`RunningServer`]'s `Drop` waits for the server to stop.
const DROP_WAIT: Duration = Duration::from_secs(15);

/// Starts [`serve`] on a new thread and returns once the server listens (or failed to).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use sockmsg_app::{demo, serve::{spawn, ServerSettings, Transport}};
/// use sockmsg_transport_std::{Client, ClientConfig};
///
/// let server = spawn(
///     Transport::Std,
///     "127.0.0.1:0".parse()?,
///     &ServerSettings::default(),
///     Arc::new(demo::DemoService::new()),
/// )?;
/// let mut client = Client::connect(server.addr(), &ClientConfig::default())?;
/// let answer = client.request(demo::request("search", "ring"))?;
/// assert_eq!(demo::result_line(&answer)?, "got result: In the caves beneath the Misty Mountains. 💍");
/// client.close()?;
/// server.stop(Duration::from_secs(10))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn spawn(
    transport: Transport,
    addr: SocketAddr,
    settings: &ServerSettings,
    service: Arc<dyn Service>,
) -> io::Result<RunningServer> {
    let (tx, rx) = mpsc::channel();
    let settings = settings.clone();
    let thread = thread::Builder::new()
        .name(format!("sockmsg-{transport}-server"))
        .spawn(move || {
            let ready_tx = tx.clone();
            let result = serve(transport, addr, &settings, service, move |addr, stopper| {
                // The receiver outlives the server unless spawn() itself gave up.
                let _ = ready_tx.send(Started::Ready(addr, stopper));
            });
            let _ = tx.send(Started::Done(result));
        })?;
    match rx.recv() {
        Ok(Started::Ready(addr, stopper)) => Ok(RunningServer {
            addr,
            transport,
            stopper,
            done: rx,
            thread: Some(thread),
        }),
        Ok(Started::Done(result)) => {
            let _ = thread.join();
            Err(result
                .err()
                .unwrap_or_else(|| io::Error::other("the server stopped before it was ready")))
        }
        Err(_) => {
            let _ = thread.join();
            Err(io::Error::other("the server thread ended without a word"))
        }
    }
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its transport.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// A stopper for it.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Stops it and waits at most `timeout` for it to finish; returns the server's result,
    /// or a `TimedOut` error (the thread is then left to finish on its own).
    pub fn stop(mut self, timeout: Duration) -> io::Result<()> {
        self.stop_inner(timeout)
    }

    fn stop_inner(&mut self, timeout: Duration) -> io::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.stopper.stop();
        match self.done.recv_timeout(timeout) {
            Ok(Started::Done(result)) => {
                let _ = thread.join();
                result
            }
            Ok(Started::Ready(..)) => Err(io::Error::other("unexpected second ready report")),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the server on {} did not stop within {timeout:?}",
                    self.addr
                ),
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
                Err(io::Error::other("the server thread panicked"))
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner(DROP_WAIT) {
            tracing::warn!("stopping the server on {}: {e}", self.addr);
        }
    }
}
