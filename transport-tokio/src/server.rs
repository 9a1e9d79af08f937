//! The async server: a thin tokio loop over the server layer's [`Session`].
//!
//! Everything a server decides (the service call and its panics, the output cap, the
//! header/idle/write deadlines, `close_after_answer`, the shutdown grace, why a connection
//! closed) is the [`Session`]'s, exactly as on the other transports; this module only
//! moves bytes when the session wants them moved, sleeps until the instant it names, and
//! accepts connections under [`ServerConfig::max_connections`].

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockmsg_server::{
    accept_error, AcceptAction, CloseReason, ServerConfig, Service, Session, ShutdownHandle,
    WhenFull,
};
use tokio::io::{AsyncWriteExt, Interest, Ready};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Most slices handed to one vectored write.
const MAX_SLICES: usize = 64;

/// After the shutdown grace, how long connection tasks get to notice it before they are
/// aborted.
const AFTER_GRACE: Duration = Duration::from_secs(1);

/// A server on tokio: accepts connections, runs each on its own task through the server
/// layer's [`Session`], until its [`ShutdownHandle`] is used.
///
/// [`Server::serve`] builds the runtime itself from [`ServerConfig::workers`] (1: a
/// current-thread runtime; N: a multi-thread runtime of N worker threads) and blocks;
/// [`Server::run`] runs inside a runtime you already have.
///
/// The service is called on the runtime's threads: a service that blocks for long holds
/// up the other connections of that thread, as on an event-loop transport.
///
/// ```
/// use std::sync::Arc;
/// use sockmsg_protocol::Message;
/// use sockmsg_server::{ServerConfig, Service, ServiceError};
/// use sockmsg_transport_tokio::{Client, ClientConfig, Server};
///
/// let service: Arc<dyn Service> = Arc::new(|m: Message| -> Result<Message, ServiceError> {
///     Ok(Message::binary("text/plain", [b"pong: ", m.content()].concat()))
/// });
/// let server = Server::bind("127.0.0.1:0".parse()?, ServerConfig::default().with_workers(1))?;
/// let (addr, stop) = (server.local_addr(), server.shutdown_handle());
/// let serving = std::thread::spawn(move || server.serve(service));
///
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// let answer = runtime.block_on(async {
///     let mut client = Client::connect(addr, &ClientConfig::default()).await?;
///     let answer = client.request(Message::binary("text/plain", b"ping".to_vec())).await?;
///     client.close().await?;
///     Ok::<_, sockmsg_transport_tokio::ClientError>(answer)
/// })?;
/// assert_eq!(answer.content(), b"pong: ping");
/// stop.shutdown();
/// serving.join().expect("server thread")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Server {
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    config: Arc<ServerConfig>,
    shutdown: ShutdownHandle,
    token: CancellationToken,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) with [`ServerConfig::backlog`]. Nothing is
    /// accepted until [`Server::serve`] or [`Server::run`]; no runtime is needed yet.
    pub fn bind(addr: SocketAddr, config: ServerConfig) -> io::Result<Server> {
        let config = config.normalized();
        let domain = socket2::Domain::for_address(addr);
        let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(config.backlog)?;
        socket.set_nonblocking(true)?;
        let listener: std::net::TcpListener = socket.into();
        let local_addr = listener.local_addr()?;
        let shutdown = ShutdownHandle::new();
        let token = CancellationToken::new();
        let wake = token.clone();
        shutdown.on_shutdown(move || wake.cancel());
        Ok(Server {
            listener,
            local_addr,
            config: Arc::new(config),
            shutdown,
            token,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The configuration it runs under (normalized).
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// A handle that stops the server gracefully, from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Builds a runtime of [`ServerConfig::workers`] threads (1: current-thread) and runs
    /// [`Server::run`] on it until the server has shut down.
    pub fn serve(self, service: Arc<dyn Service>) -> io::Result<()> {
        let workers = self.config.workers;
        let mut builder = if workers <= 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(workers);
            b
        };
        let runtime = builder.enable_all().thread_name("sockmsg-tokio").build()?;
        runtime.block_on(self.run(service))
    }

    /// Serves `service` until [`ShutdownHandle::shutdown`], on the current runtime (which
    /// needs its I/O and time drivers: `enable_all`). Each connection runs on its own task
    /// (up to [`ServerConfig::max_connections`]); a connection ends when the client closes,
    /// on a protocol error, a deadline or a service error, with one log line
    /// ([`CloseReason::log`]); other connections go on.
    ///
    /// On shutdown it stops accepting and closes the listening socket; idle connections and
    /// requests not yet complete are closed at once; answers owed get
    /// [`ServerConfig::shutdown_grace`] to flush. It returns once every connection task
    /// has ended (tasks still running a second after the grace are aborted).
    pub async fn run(self, service: Arc<dyn Service>) -> io::Result<()> {
        let Server {
            listener,
            local_addr,
            config,
            token,
            ..
        } = self;
        let listener = TcpListener::from_std(listener)?;
        let max = config.max_connections;
        let slots = Arc::new(Semaphore::new(max));
        let mut tasks = JoinSet::new();
        info!("serving on {local_addr} (up to {max} connections)");
        loop {
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    warn!("a connection task failed: {e}");
                }
            }
            let mut permit = None;
            if config.when_full == WhenFull::Wait {
                permit = match Arc::clone(&slots).try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        warn!("{max} connections open (max_connections): new connections wait in the backlog");
                        tokio::select! {
                            _ = token.cancelled() => break,
                            p = Arc::clone(&slots).acquire_owned() => {
                                info!("below max_connections again: accepting");
                                p.ok()
                            }
                        }
                    }
                };
            }
            let accepted = tokio::select! {
                _ = token.cancelled() => break,
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    if let AcceptAction::Backoff(pause) = accept_error(&e) {
                        tokio::select! {
                            _ = token.cancelled() => break,
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                    continue;
                }
            };
            let permit = match permit {
                Some(p) => p,
                None => match Arc::clone(&slots).try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        // Only reachable with WhenFull::Refuse.
                        CloseReason::Full.log(&peer);
                        continue;
                    }
                },
            };
            let session = Session::new(Arc::clone(&service), Arc::clone(&config), Instant::now());
            let token = token.clone();
            tasks.spawn(async move {
                serve_connection(stream, peer, session, token).await;
                drop(permit);
            });
        }
        drop(listener);
        finish(tasks, &config).await;
        info!("server on {local_addr} stopped");
        Ok(())
    }
}

/// After the accept loop: waits for the connections to flush what they owe (each closes
/// by itself at the end of the grace), then aborts the stragglers.
async fn finish(mut tasks: JoinSet<()>, config: &ServerConfig) {
    if !tasks.is_empty() {
        info!(
            "stopped accepting; waiting for {} connection(s) to finish",
            tasks.len()
        );
    }
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(config.shutdown_grace + AFTER_GRACE, all)
        .await
        .is_err()
    {
        warn!(
            "{} connection task(s) still running after {:?}: aborting them",
            tasks.len(),
            config.shutdown_grace
        );
        tasks.shutdown().await;
    }
}

/// Waits until `stream` is ready for `interest`, or forever without one.
async fn ready(stream: &TcpStream, interest: Option<Interest>) -> io::Result<Ready> {
    match interest {
        Some(i) => stream.ready(i).await,
        None => std::future::pending().await,
    }
}

/// Writes what the session has pending until the socket would block.
fn write_pending(stream: &TcpStream, session: &mut Session) {
    while session.wants_write() {
        let written = {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let count = session.pending_slices(&mut slices);
            match slices.get(..count).unwrap_or_default() {
                [one] => stream.try_write(one),
                several => stream.try_write_vectored(several),
            }
        };
        match written {
            Ok(0) => {
                session.abort(CloseReason::Io(io::ErrorKind::WriteZero.into()));
                return;
            }
            Ok(n) => session.consume(n, Instant::now()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                session.abort(CloseReason::Io(e));
                return;
            }
        }
    }
}

/// Reads once into the session (the socket said it was readable).
fn read_once(stream: &TcpStream, session: &mut Session) {
    match stream.try_read(session.read_buf()) {
        Ok(0) => session.receive_eof(Instant::now()),
        Ok(n) => session.commit(n, Instant::now()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) => {}
        Err(e) => session.abort(CloseReason::Io(e)),
    }
}

/// One connection's task: the session's wishes, carried out on the runtime.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    mut session: Session,
    token: CancellationToken,
) {
    debug!("accepted connection from {peer}");
    if let Err(e) = stream.set_nodelay(session.config().nodelay) {
        debug!("cannot set TCP_NODELAY for {peer}: {e}");
    }
    let cancelled = token.cancelled_owned();
    tokio::pin!(cancelled);
    let mut shutting = false;
    // One timer, armed at the session's deadline; moved only when that deadline comes
    // sooner (firing early is harmless: the session re-checks and names the next one).
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    loop {
        write_pending(&stream, &mut session);
        if session.is_closed() {
            break;
        }
        let interest = match (session.wants_read(), session.wants_write()) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        };
        if let Some(at) = session.poll_timeout() {
            if armed.map_or(true, |a| at < a) {
                timer.as_mut().reset(at.into());
                armed = Some(at);
            }
        }
        tokio::select! {
            biased;
            _ = &mut cancelled, if !shutting => {
                shutting = true;
                session.begin_shutdown(Instant::now());
            }
            r = ready(&stream, interest) => match r {
                Ok(r) if r.is_readable() || r.is_read_closed() => {
                    if session.wants_read() {
                        read_once(&stream, &mut session);
                    }
                }
                Ok(_) => {} // writable: written at the top of the loop
                Err(e) => session.abort(CloseReason::Io(e)),
            },
            _ = &mut timer, if armed.is_some() => {
                armed = None;
                session.handle_timeout(Instant::now());
            }
        }
    }
    if let Some(reason) = session.close_reason() {
        reason.log(&peer);
    }
    // Errors ignored: the peer may be gone already; dropping the stream closes it anyway.
    let _ = stream.shutdown().await;
}
