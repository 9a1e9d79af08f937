//! The async server: a thin tokio loop over the server layer's [`Session`].
//!
//! Everything a server decides (the service call and its panics, the output cap, the
//! header/idle/write deadlines, `close_after_answer`, the shutdown grace, why a connection
//! closed) is the [`Session`]'s, exactly as on the other transports; this module only
//! moves bytes when the session wants them moved, sleeps until the instant it names, and
//! accepts connections under [`ServerConfig::max_connections`].

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sockmsg_protocol::Message;
use sockmsg_server::{
    accept_error, call_async_service, AcceptAction, Answering, AsyncService, CallError,
    CloseReason, Driven, IdleMark, MemoryBudget, RequestId, ServerConfig, Service, Session,
    ShutdownHandle, WhenFull,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// After the shutdown grace, how long [`Server::run`] waits for connection tasks to notice
/// it.
const AFTER_GRACE: Duration = Duration::from_secs(1);

/// A server on tokio: accepts connections, runs each on its own task through the server
/// layer's [`Session`], until its [`ShutdownHandle`] is used.
///
/// [`Server::serve`] builds the runtime itself from [`ServerConfig::workers`] (1: a
/// current-thread runtime; N: a multi-thread runtime of N worker threads) and blocks;
/// [`Server::run`] runs inside a runtime you already have.
///
/// The service is called on the runtime's threads: a service that blocks for long holds
/// up the other connections of that thread, as on an event-loop transport. A service that
/// waits on I/O (a database, another server) is better an
/// [`AsyncService`], run by [`Server::run_async`].
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
    budget: MemoryBudget,
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
        let budget = MemoryBudget::for_config(&config);
        Ok(Server {
            listener,
            local_addr,
            config: Arc::new(config),
            shutdown,
            token,
            budget,
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

    /// The server-wide memory budget its connections draw on
    /// ([`ServerConfig::memory_budget`]): what they hold now and at most.
    pub fn memory(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Builds a runtime of [`ServerConfig::workers`] threads (1: current-thread) and runs
    /// [`Server::run`] on it until the server has shut down.
    pub fn serve(self, service: Arc<dyn Service>) -> io::Result<()> {
        self.runtime()?.block_on(self.run(service))
    }

    /// As [`Server::serve`], with TLS in front of every connection (feature `tls`): see
    /// [`Server::run_tls`].
    #[cfg(feature = "tls")]
    pub fn serve_tls(
        self,
        service: Arc<dyn sockmsg_tls::PeerService>,
        tls: Arc<sockmsg_tls::rustls::ServerConfig>,
    ) -> io::Result<()> {
        self.runtime()?.block_on(self.run_tls(service, tls))
    }

    /// [`Server::serve`] for a service that awaits: runs [`Server::run_async`].
    pub fn serve_async(self, service: Arc<dyn AsyncService>) -> io::Result<()> {
        self.runtime()?.block_on(self.run_async(service))
    }

    /// Serves `service`, whose answers take awaiting (a database, another server), as
    /// [`Server::run`] serves a sync one, under the same rules: each connection's task
    /// polls the answers of its requests (up to [`ServerConfig::max_in_flight`] at once,
    /// beyond which it stops reading that peer) and sends them in request order, under the
    /// output cap; a service that fails or panics closes that connection only (once the
    /// answers before are sent); a connection waiting for answers is not idle (no idle
    /// deadline, no eviction); on shutdown, answers in progress get the grace. A
    /// connection's answers run on its task (concurrently with each other, on one thread at
    /// a time): spawn inside the service for work that should run in parallel.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use sockmsg_protocol::Message;
    /// use sockmsg_server::{AsyncService, ServerConfig, ServiceError};
    /// use sockmsg_transport_tokio::{Client, ClientConfig, Server};
    ///
    /// let service: Arc<dyn AsyncService> = Arc::new(|m: Message| async move {
    ///     tokio::time::sleep(Duration::from_millis(10)).await; // a database, say
    ///     Ok::<_, ServiceError>(Message::binary("text/plain", [b"pong: ", m.content()].concat()))
    /// });
    /// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// let answer = runtime.block_on(async {
    ///     let server = Server::bind("127.0.0.1:0".parse()?, ServerConfig::default())?;
    ///     let (addr, stop) = (server.local_addr(), server.shutdown_handle());
    ///     let serving = tokio::spawn(server.run_async(service));
    ///     let mut client = Client::connect(addr, &ClientConfig::default()).await?;
    ///     let answer = client.request(Message::binary("text/plain", b"ping".to_vec())).await?;
    ///     client.close().await?;
    ///     stop.shutdown();
    ///     serving.await??;
    ///     Ok::<_, Box<dyn std::error::Error>>(answer)
    /// })?;
    /// assert_eq!(answer.content(), b"pong: ping");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn run_async(self, service: Arc<dyn AsyncService>) -> io::Result<()> {
        self.run_with(
            |config, budget, now| Some(Session::new_async(config, now).with_budget(budget.clone(), now)),
            move || Awaited::new(Arc::clone(&service)),
        )
        .await
    }

    /// The runtime [`Server::serve`] builds.
    fn runtime(&self) -> io::Result<tokio::runtime::Runtime> {
        let workers = self.config.workers;
        let mut builder = if workers <= 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(workers);
            b
        };
        builder.enable_all().thread_name("sockmsg-tokio").build()
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
    /// has ended, or a second after the grace (a task can outlive that only inside a
    /// service call that blocks; [`Server::serve`] then drops it with its runtime).
    ///
    /// Dropping the returned future (or aborting the task running it) shuts the server
    /// down likewise: the listening socket closes at once and each connection finishes on
    /// its own task as above (answers owed get the grace, then it closes), so no
    /// connection task outlives the drop by more than the grace.
    pub async fn run(self, service: Arc<dyn Service>) -> io::Result<()> {
        self.run_with(
            move |config, budget, now| {
                Some(Session::new(Arc::clone(&service), config, now).with_budget(budget.clone(), now))
            },
            || Called,
        )
        .await
    }

    /// As [`Server::run`], with TLS in front of every connection (feature `tls`), on the
    /// same connection tasks: `tls` for the handshake ([`sockmsg_tls::server_config`]),
    /// `service` told who each client is ([`sockmsg_tls::PeerService`];
    /// [`sockmsg_tls::AnyPeer`] for a plain service). Each task drives a
    /// [`sockmsg_tls::TlsSession`] (rustls composed with the session, the sans-IO way, in
    /// `sockmsg-tls`) exactly as it drives a plaintext session, not `tokio-rustls`: the
    /// composition lives in one place for every transport. A failed handshake or a
    /// plaintext peer closes that connection with one log line naming the reason; the
    /// handshake deadline is [`sockmsg_tls::DEFAULT_HANDSHAKE_TIMEOUT`].
    #[cfg(feature = "tls")]
    pub async fn run_tls(
        self,
        service: Arc<dyn sockmsg_tls::PeerService>,
        tls: Arc<sockmsg_tls::rustls::ServerConfig>,
    ) -> io::Result<()> {
        self.run_with(
            move |config, budget, now| match sockmsg_tls::TlsSession::accept_with_budget(
                Arc::clone(&tls),
                Arc::clone(&service),
                config,
                budget.clone(),
                now,
            ) {
                Ok(session) => Some(session),
                Err(e) => {
                    warn!("dropping a connection: cannot start TLS: {e}");
                    None
                }
            },
            || Called,
        )
        .await
    }

    /// The accept loop, with `make` building each connection's machine and `answering`
    /// what answers its requests besides the machine itself (an async service's futures).
    async fn run_with<D: Driven + 'static, A: Answers<D>>(
        self,
        make: impl Fn(Arc<ServerConfig>, &MemoryBudget, Instant) -> Option<D>,
        answering: impl Fn() -> A,
    ) -> io::Result<()> {
        let Server {
            listener,
            local_addr,
            config,
            token,
            budget,
            ..
        } = self;
        let conns = Idle::default();
        // Dropped mid-way (the future dropped, its task aborted): the connection tasks,
        // which are not this future's, still hear of the shutdown.
        let _shutdown_on_drop = token.clone().drop_guard();
        let listener = TcpListener::from_std(listener)?;
        // The semaphore counts in u32 for `acquire_many`: more connections than that is
        // beyond any descriptor limit anyway.
        let max = config.max_connections.min(u32::MAX as usize);
        let slots = Arc::new(Semaphore::new(max));
        info!("serving on {local_addr} (up to {max} connections)");
        loop {
            let mut permit = None;
            if config.when_full != WhenFull::Refuse {
                permit = match Arc::clone(&slots).try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        let evict = config.when_full == WhenFull::EvictIdle;
                        if !evict {
                            warn!("{max} connections open (max_connections): new connections wait in the backlog");
                        }
                        // With EvictIdle, the connection idle the longest is closed; if none
                        // is idle yet (all busy, or just accepted), look again shortly.
                        let mut waited = None;
                        // One eviction per slot: its connection gives the slot back as it ends.
                        let mut evicted = false;
                        loop {
                            if evict && !evicted && conns.evict_longest_idle() {
                                evicted = true;
                                debug!("{max} connections open (max_connections): evicted the one idle the longest");
                            }
                            tokio::select! {
                                _ = token.cancelled() => break,
                                p = Arc::clone(&slots).acquire_owned() => {
                                    waited = p.ok();
                                    break;
                                }
                                _ = tokio::time::sleep(EVICT_RETRY), if evict && !evicted => {}
                            }
                        }
                        if waited.is_none() {
                            break;
                        }
                        if !evict {
                            info!("below max_connections again: accepting");
                        }
                        waited
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
            let now = Instant::now();
            let Some(session) = make(Arc::clone(&config), &budget, now) else {
                continue;
            };
            // The connection's own token: cancelled with the server's (shutdown), or alone
            // to evict it (its mark then says so).
            let token = token.child_token();
            let mark = conns.register(&token);
            let answers = answering();
            tokio::spawn(async move {
                serve_connection(stream, peer, session, token, mark, answers).await;
                drop(permit);
            });
        }
        drop(listener);
        finish(&slots, max, &config).await;
        info!("server on {local_addr} stopped");
        Ok(())
    }
}

/// After the accept loop: waits for the connections to flush what they owe (each closes
/// by itself at the end of the grace); a connection task gives its slot back as it ends.
async fn finish(slots: &Semaphore, max: usize, config: &ServerConfig) {
    let open = max.saturating_sub(slots.available_permits());
    if open > 0 {
        info!("stopped accepting; waiting for {open} connection(s) to finish");
    }
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let limit = config.shutdown_grace + AFTER_GRACE;
    if tokio::time::timeout(limit, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!(
            "{} connection task(s) still running {limit:?} after the shutdown (in the service?); not waiting for them",
            max.saturating_sub(slots.available_permits())
        );
    }
}

/// How a connection task answers its requests, besides moving bytes.
/// `D` is the connection's machine: an async service runs on a plaintext [`Session`].
trait Answers<D>: Send + 'static {
    /// Starts answering each request the session hands out.
    fn start(&mut self, session: &mut D);
    /// Polls the answers in progress: `Ready` once one or more have ended.
    fn poll_answers(&mut self, cx: &mut Context<'_>) -> Poll<()>;
    /// Gives the session the answers that ended.
    fn deliver(&mut self, session: &mut D);
}

/// A sync service: the session calls it in place, so there is nothing to do here (and
/// the connection task compiles as if this did not exist).
struct Called;

impl<D> Answers<D> for Called {
    #[inline(always)]
    fn start(&mut self, _: &mut D) {}
    #[inline(always)]
    fn poll_answers(&mut self, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
    #[inline(always)]
    fn deliver(&mut self, _: &mut D) {}
}

/// An async service's answers in progress on one connection (at most
/// [`ServerConfig::max_in_flight`]: the session hands out no more), polled by its task.
/// Dropped with the task, which cancels them.
struct Awaited {
    service: Arc<dyn AsyncService>,
    running: Vec<(RequestId, Answering)>,
    ended: Vec<(RequestId, Result<Message, CallError>)>,
}

impl Awaited {
    fn new(service: Arc<dyn AsyncService>) -> Awaited {
        Awaited {
            service,
            running: Vec::new(),
            ended: Vec::new(),
        }
    }
}

impl Answers<Session> for Awaited {
    fn start(&mut self, session: &mut Session) {
        while let Some((id, request)) = session.take_request() {
            self.running
                .push((id, call_async_service(&*self.service, request)));
        }
    }

    fn poll_answers(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut i = 0;
        while let Some((_, answering)) = self.running.get_mut(i) {
            match Pin::new(answering).poll(cx) {
                Poll::Ready(result) => {
                    let (id, _) = self.running.swap_remove(i);
                    self.ended.push((id, result));
                }
                Poll::Pending => i += 1,
            }
        }
        if self.ended.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    fn deliver(&mut self, session: &mut Session) {
        session.give_answers(self.ended.drain(..), Instant::now());
    }
}

/// What woke a connection's task.
enum Wake {
    /// The server is shutting down.
    Shutdown,
    /// The socket is readable (or closed for reading).
    Readable,
    /// The socket is writable.
    Writable,
    /// The session's deadline came.
    Timer,
    /// Answers of an async service ended.
    Answered,
    /// Polling the socket failed.
    Failed(io::Error),
}

/// The socket as an `io::Read`/`io::Write` for the connection's machine: tokio's
/// `try_read`/`try_write`, after the runtime said the socket was ready (`WouldBlock` when
/// that readiness was stale).
struct Try<'a>(&'a TcpStream);

impl io::Read for Try<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl io::Write for Try<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match bufs {
            [one] => self.0.try_write(one),
            several => self.0.try_write_vectored(several),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes what the machine has pending until the socket would block.
fn write_pending<D: Driven>(stream: &TcpStream, session: &mut D) {
    while session.wants_write() {
        match session.write_to(&mut Try(stream), Instant::now()) {
            Ok(0) => {
                session.abort(CloseReason::Io(io::ErrorKind::WriteZero.into()));
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                session.abort(CloseReason::Io(e));
                return;
            }
        }
    }
}

/// Between messages, reads go through a buffer on the stack: the socket's readiness may be
/// stale (tokio clears it only when a read would block), and a session between messages
/// has given its read buffer back, which lending one for a read that finds nothing would
/// allocate again, and keep, for as long as the connection stays idle.
const PROBE: usize = 2048;

/// Bytes already read, handed to the machine as a reader: never the end of stream (that
/// is the socket's to say), `WouldBlock` once taken or when the machine lends no room.
struct Arrived<'a>(&'a [u8]);

impl io::Read for Arrived<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.0.len());
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let (now_in, rest) = self.0.split_at(n);
        if let Some(dst) = buf.get_mut(..n) {
            dst.copy_from_slice(now_in);
        }
        self.0 = rest;
        Ok(n)
    }
}

/// Reads once into the machine (the socket said it was readable).
fn read_once<D: Driven>(stream: &TcpStream, session: &mut D) {
    let result = if !session.session().connection().message_in_progress() {
        let mut probe = [0u8; PROBE];
        stream.try_read(&mut probe).and_then(|n| {
            let now = Instant::now();
            if n == 0 {
                // The end of stream, recorded by the machine.
                return session.read_from(&mut io::empty(), now);
            }
            let mut arrived = Arrived(probe.get(..n).unwrap_or_default());
            while !arrived.0.is_empty() && !session.is_done() {
                if session.read_from(&mut arrived, now).is_err() {
                    break; // it takes no more (cannot happen: it wanted to read)
                }
            }
            Ok(n)
        })
    } else {
        session.read_from(&mut Try(stream), Instant::now())
    };
    match result {
        Ok(_) => {} // 0: the end of stream, recorded
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) => {}
        Err(e) => session.abort(CloseReason::Io(e)),
    }
}

/// One connection's task: the wishes of its [`Driven`] machine (a plaintext [`Session`],
/// or a TLS session), carried out on the runtime: the same task for both.
///
/// A plain function returning an `async move` block rather than an `async fn`: the block
/// holds each of its inputs once, where an `async fn` can hold both the argument and the
/// binding it is moved into (the session alone is 600 bytes), and every idle connection
/// pays for the size of this future.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn serve_connection<D: Driven, A: Answers<D>>(
    mut stream: TcpStream,
    peer: SocketAddr,
    mut session: D,
    token: CancellationToken,
    mark: Arc<IdleMark>,
    mut answers: A,
) -> impl Future<Output = ()> {
    async move {
        info!("accepted connection from {peer}");
        if let Err(e) = stream.set_nodelay(session.session().config().nodelay) {
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
            if session.is_done() {
                break;
            }
            // After every step that can hand requests out (reading, answers given back,
            // output drained by the write just above).
            answers.start(&mut session);
            mark.note(session.idle_since());
            let (want_read, want_write) = (session.wants_read(), session.wants_write());
            if let Some(at) = session.poll_timeout() {
                if armed.is_none_or(|a| at < a) {
                    timer.as_mut().reset(at.into());
                    armed = Some(at);
                }
            }
            // Readiness is polled in place (no future per wait): what an idle connection
            // costs is the size of this task.
            let wake = std::future::poll_fn(|cx| {
                if !shutting && cancelled.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Shutdown);
                }
                // First, so that an answer just started is polled (and can wake the task).
                if answers.poll_answers(cx).is_ready() {
                    return Poll::Ready(Wake::Answered);
                }
                if want_read {
                    if let Poll::Ready(r) = stream.poll_read_ready(cx) {
                        return Poll::Ready(r.map_or_else(Wake::Failed, |()| Wake::Readable));
                    }
                }
                if want_write {
                    if let Poll::Ready(r) = stream.poll_write_ready(cx) {
                        return Poll::Ready(r.map_or_else(Wake::Failed, |()| Wake::Writable));
                    }
                }
                if armed.is_some() && timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Timer);
                }
                Poll::Pending
            })
            .await;
            match wake {
                Wake::Shutdown if mark.is_evicted() => {
                    session.abort(CloseReason::Evicted);
                }
                Wake::Shutdown => {
                    shutting = true;
                    session.begin_shutdown(Instant::now());
                }
                Wake::Readable => read_once(&stream, &mut session),
                Wake::Writable => {} // written at the top of the loop
                Wake::Answered => answers.deliver(&mut session),
                Wake::Timer => {
                    armed = None;
                    session.handle_timeout(Instant::now());
                }
                Wake::Failed(e) => session.abort(CloseReason::Io(e)),
            }
        }
        // Answers still in progress (the connection ended first) are cancelled.
        drop(answers);
        session.log_close(&peer);
        // Errors ignored: the peer may be gone already; dropping the stream closes it anyway.
        let _ = stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use sockmsg_protocol::Message;
    use sockmsg_server::{ServerConfig, Service, ServiceError, Session};
    use tokio_util::sync::CancellationToken;

    /// What an idle connection costs is mostly this task: keep it small (the session
    /// itself is about 600 bytes of it).
    #[test]
    fn a_connection_task_stays_small() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let service: Arc<dyn Service> =
                Arc::new(|m: Message| -> Result<Message, ServiceError> { Ok(m) });
            let config = Arc::new(ServerConfig::default());
            let session = Session::new(service, config, Instant::now());
            let session_size = std::mem::size_of_val(&session);
            let task = super::serve_connection(
                stream,
                addr,
                session,
                CancellationToken::new(),
                Default::default(),
                super::Called,
            );
            let size = std::mem::size_of_val(&task);
            assert!(
                size <= session_size + 512,
                "the connection task is {size} bytes, the session {session_size}"
            );
        });
    }
}

/// How often the accept loop looks again for an idle connection to evict, at the cap.
const EVICT_RETRY: Duration = Duration::from_millis(50);

/// The accept loop's view of its connections for [`WhenFull::EvictIdle`]: each one's idle
/// mark and token. Entries of ended connections (the task dropped its mark) are dropped
/// lazily, so the table stays proportional to the connections open.
#[derive(Default)]
struct Idle {
    conns: Mutex<HashMap<u64, (Arc<IdleMark>, CancellationToken)>>,
    next: AtomicU64,
}

impl Idle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Arc<IdleMark>, CancellationToken)>> {
        // Nothing is left half-updated by a panic: each update is one statement.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection's mark (busy).
    fn register(&self, token: &CancellationToken) -> Arc<IdleMark> {
        let mark = Arc::new(IdleMark::default());
        let id = self.next.fetch_add(1, Relaxed);
        let mut conns = self.lock();
        // Amortized: the table is swept each time it doubles past the live connections.
        if conns.len() >= 64 && conns.len().is_power_of_two() {
            conns.retain(|_, (m, _)| Arc::strong_count(m) > 1);
        }
        conns.insert(id, (Arc::clone(&mark), token.clone()));
        mark
    }

    /// Evicts the connection idle the longest (nothing in progress, nothing pending);
    /// `false` if none is idle.
    fn evict_longest_idle(&self) -> bool {
        let mut conns = self.lock();
        conns.retain(|_, (m, _)| Arc::strong_count(m) > 1);
        let Some(id) = IdleMark::longest_idle(conns.iter().map(|(id, (m, _))| (&**m, *id))) else {
            return false;
        };
        if let Some((mark, token)) = conns.remove(&id) {
            mark.evict();
            token.cancel();
        }
        true
    }
}
