//! Running a [`Service`] on a chosen transport: the one place that knows the transports.
//!
//! Every transport reads the same [`ServerConfig`] (from `sockmsg-server`) and runs the
//! same per-connection policy, so choosing one is all there is to do here. Adding a
//! transport is: a variant of [`Transport`], and an arm in [`serve`] that binds, calls
//! `ready` with the bound address and a [`Stopper`], and serves. The conformance suite
//! (`tests/tests/conformance.rs`) then runs on it through [`spawn`].

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

pub use sockmsg_server::ServerConfig;
use sockmsg_server::Service;

/// The transports a server can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum Transport {
    /// Non-blocking sockets on mio, one event loop per core (`sockmsg-transport-mio`).
    #[default]
    Mio,
    /// Blocking sockets, one thread per connection (`sockmsg-transport-std`).
    Std,
    /// A tokio runtime, one task per connection (`sockmsg-transport-tokio`); `workers`
    /// runtime threads, 1 meaning a current-thread runtime.
    Tokio,
}

impl Transport {
    /// Every transport, for tests that run on each.
    pub const ALL: &'static [Transport] = &[Transport::Mio, Transport::Std, Transport::Tokio];

    /// The name used on the command line (`mio`, `std`, `tokio`).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Mio => "mio",
            Transport::Std => "std",
            Transport::Tokio => "tokio",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
    config: &ServerConfig,
    service: Arc<dyn Service>,
    ready: impl FnOnce(SocketAddr, Stopper),
) -> io::Result<()> {
    run(transport, addr, config, Served::Plain(service), ready)
}

/// As [`serve`], with TLS in front of every connection, on any transport: `tls` for the
/// handshake ([`sockmsg_tls::server_config`]; client certificates required when it has a
/// client CA), `service` told who each client is. Every transport drives the same
/// composition (`sockmsg_tls::TlsSession`, a [`sockmsg_server::Driven`] machine), so a
/// failed handshake or a plaintext peer is logged by the same line on each.
pub fn serve_tls(
    transport: Transport,
    addr: SocketAddr,
    config: &ServerConfig,
    service: Arc<dyn sockmsg_tls::PeerService>,
    tls: Arc<sockmsg_tls::rustls::ServerConfig>,
    ready: impl FnOnce(SocketAddr, Stopper),
) -> io::Result<()> {
    run(transport, addr, config, Served::Tls(service, tls), ready)
}

/// What [`run`] serves: a service in plaintext, or one behind TLS.
enum Served {
    Plain(Arc<dyn Service>),
    Tls(
        Arc<dyn sockmsg_tls::PeerService>,
        Arc<sockmsg_tls::rustls::ServerConfig>,
    ),
}

/// [`serve`] and [`serve_tls`]: binds `transport`'s server, calls `ready`, serves `what`.
fn run(
    transport: Transport,
    addr: SocketAddr,
    config: &ServerConfig,
    what: Served,
    ready: impl FnOnce(SocketAddr, Stopper),
) -> io::Result<()> {
    match transport {
        Transport::Mio => {
            let server = sockmsg_transport_mio::Server::bind(addr, config.clone())?;
            let handle = server.shutdown_handle();
            ready(server.local_addr(), Stopper::new(move || handle.shutdown()));
            match what {
                Served::Plain(service) => server.serve(service),
                Served::Tls(service, tls) => server.serve_tls(service, tls),
            }
        }
        Transport::Std => {
            let server = sockmsg_transport_std::Server::bind(addr, config.clone())?;
            let handle = server.shutdown_handle();
            ready(server.local_addr(), Stopper::new(move || handle.shutdown()));
            match what {
                Served::Plain(service) => server.serve(service),
                Served::Tls(service, tls) => server.serve_tls(service, tls),
            }
        }
        Transport::Tokio => {
            let server = sockmsg_transport_tokio::Server::bind(addr, config.clone())?;
            let handle = server.shutdown_handle();
            ready(server.local_addr(), Stopper::new(move || handle.shutdown()));
            match what {
                Served::Plain(service) => server.serve(service),
                Served::Tls(service, tls) => server.serve_tls(service, tls),
            }
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
/// use sockmsg_app::serve::{spawn, ServerConfig, Transport};
/// use sockmsg_demo as demo;
/// use sockmsg_transport_std::{Client, ClientConfig};
///
/// let server = spawn(
///     Transport::Std,
///     "127.0.0.1:0".parse()?,
///     &ServerConfig::default(),
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
    config: &ServerConfig,
    service: Arc<dyn Service>,
) -> io::Result<RunningServer> {
    let config = config.clone();
    spawn_with(transport, move |ready| {
        serve(transport, addr, &config, service, ready)
    })
}

/// As [`spawn`], with TLS in front of every connection ([`serve_tls`]); `service` answers
/// every client alike.
pub fn spawn_tls(
    transport: Transport,
    addr: SocketAddr,
    config: &ServerConfig,
    service: Arc<dyn Service>,
    tls: Arc<sockmsg_tls::rustls::ServerConfig>,
) -> io::Result<RunningServer> {
    let config = config.clone();
    let service: Arc<dyn sockmsg_tls::PeerService> = Arc::new(sockmsg_tls::AnyPeer(service));
    spawn_with(transport, move |ready| {
        serve_tls(transport, addr, &config, service, tls, ready)
    })
}

/// Runs `run` (which calls its argument once listening) on a new thread.
fn spawn_with(
    transport: Transport,
    run: impl FnOnce(Box<dyn FnOnce(SocketAddr, Stopper)>) -> io::Result<()> + Send + 'static,
) -> io::Result<RunningServer> {
    let (tx, rx) = mpsc::channel();
    let thread = thread::Builder::new()
        .name(format!("sockmsg-{transport}-server"))
        .spawn(move || {
            let ready_tx = tx.clone();
            let result = run(Box::new(move |addr, stopper| {
                // The receiver outlives the server unless spawn() itself gave up.
                let _ = ready_tx.send(Started::Ready(addr, stopper));
            }));
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
