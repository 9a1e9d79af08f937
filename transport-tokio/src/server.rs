//! The async server: a thin tokio loop over the server layer's [`Session`].
//!
//! Everything a server decides (the service call and its panics, the output cap, the
//! header/idle/write deadlines, `close_after_answer`, the shutdown grace, why a connection
//! closed) is the [`Session`]'s, exactly as on the other transports; this module only
//! moves bytes when the session wants them moved, sleeps until the instant it names, and
//! accepts connections under [`ServerConfig::max_connections`].

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BufMut;
use sockmsg_protocol::{Message, ReadSpare};
use sockmsg_server::{
    accept_error, call_async_service, AcceptAction, Answering, AsyncService, CallError,
    CloseReason, Driven, IdleMark, MemoryBudget, NoDelay, ReadBufferPool, RequestId, ServerConfig,
    Service, Session, ShutdownHandle, WhenFull,
};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::io::poll_read_buf;
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
    /// Set on shutdown: what the accept loop looks at whatever it waits for (the
    /// listener, a slot, a pause after an accept error).
    stop: Arc<Stop>,
    budget: MemoryBudget,
    /// `TCP_NODELAY` for the connections accepted.
    nodelay: NoDelay,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) with [`ServerConfig::backlog`]. Nothing is
    /// accepted until [`Server::serve`] or [`Server::run`]; no runtime is needed yet.
    pub fn bind(addr: SocketAddr, config: ServerConfig) -> io::Result<Server> {
        let config = config.normalized();
        let domain = socket2::Domain::for_address(addr);
        let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        if config.nodelay {
            // Handed down to the connections accepted (Linux); checked on the first one
            // (`NoDelay`), and set on each where it was not.
            let _ = socket.set_nodelay(true);
        }
        let nodelay = NoDelay::new(config.nodelay);
        socket.bind(&addr.into())?;
        socket.listen(config.backlog)?;
        socket.set_nonblocking(true)?;
        let listener: std::net::TcpListener = socket.into();
        let local_addr = listener.local_addr()?;
        let shutdown = ShutdownHandle::new();
        let stop = Arc::new(Stop::default());
        let wake = Arc::clone(&stop);
        shutdown.on_shutdown(move || wake.stop());
        let budget = MemoryBudget::for_config(&config);
        Ok(Server {
            listener,
            local_addr,
            config: Arc::new(config),
            shutdown,
            stop,
            budget,
            nodelay,
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
            |config, budget, now| {
                Some(Box::new(Session::new_async_with_budget(
                    config,
                    budget.clone(),
                    now,
                )))
            },
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
                Some(Session::new_boxed_with_budget(
                    Arc::clone(&service),
                    config,
                    budget.clone(),
                    now,
                ))
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
        let accept = sockmsg_tls::TlsSession::acceptor(tls, service);
        self.run_with(
            move |config, budget, now| accept(config, budget, now).map(Box::new),
            || Called,
        )
        .await
    }

    /// The accept loop, with `make` building each connection's machine (boxed: see
    /// [`serve_connection`]) and `answering` what answers its requests besides the machine
    /// itself (an async service's futures).
    async fn run_with<D: Driven + 'static, A: Answers<D>>(
        self,
        make: impl Fn(Arc<ServerConfig>, &MemoryBudget, Instant) -> Option<Box<D>>,
        answering: impl Fn() -> A,
    ) -> io::Result<()> {
        let Server {
            listener,
            local_addr,
            config,
            stop,
            budget,
            nodelay,
            ..
        } = self;
        let conns = Idle::default();
        // Dropped mid-way (the future dropped, its task aborted): the connection tasks,
        // which are not this future's, still hear of the shutdown.
        let _shutdown_on_drop = StopAllOnDrop(&conns);
        let listener = TcpListener::from_std(listener)?;
        // The semaphore counts in u32 for `acquire_many`: more connections than that is
        // beyond any descriptor limit anyway.
        let max = config.max_connections.min(u32::MAX as usize);
        let slots = Arc::new(Semaphore::new(max));
        info!("serving on {local_addr} (up to {max} connections)");
        // The accept loop's waker, as `stop` holds it (a task's does not change).
        let mut registered: Option<Waker> = None;
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
                                () = stop.stopped() => break,
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
            // Polled in place, the shutdown first: one atomic load a connection, where a
            // `select!` on a cancellation token made, polled and dropped a future for each
            // (about 450 instructions of a one-shot connection, callgrind); and the waker
            // registered only when it changes, not on every wait as `Stop::stopped` does
            // for the rare waits above and below.
            let accepted = std::future::poll_fn(|cx| {
                if stop.is_stopped() {
                    return Poll::Ready(None);
                }
                let ready = listener.poll_accept(cx);
                if ready.is_pending() {
                    // Only a loop about to wait needs waking. (The waker of `block_on` is
                    // not always `will_wake` its own clone: compared, it would be
                    // registered again for every connection.)
                    if !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        stop.register(cx.waker());
                        registered = Some(cx.waker().clone());
                    }
                    // A stop before the registration found no waker to wake.
                    if stop.is_stopped() {
                        return Poll::Ready(None);
                    }
                }
                ready.map(Some)
            })
            .await;
            let Some(accepted) = accepted else {
                break;
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    if let AcceptAction::Backoff(pause) = accept_error(&e) {
                        tokio::select! {
                            () = stop.stopped() => break,
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
            if let Err(e) = nodelay.apply(|| stream.nodelay(), |on| stream.set_nodelay(on)) {
                debug!("cannot set TCP_NODELAY for {peer}: {e}");
            }
            let now = Instant::now();
            let Some(session) = make(Arc::clone(&config), &budget, now) else {
                continue;
            };
            let answers = answering();
            // The connection's handle: stopped with every other (shutdown), or alone to
            // evict it (its mark then says so).
            let handle = conns.register(peer);
            // The connection's one timer, made at the instant of the accept (`sleep(ZERO)`
            // read the clock for it), boxed: see `serve_connection`.
            let timer = Box::pin(tokio::time::sleep_until(now.into()));
            // The task is this future alone: a block around it would hold its inputs a
            // second time, the session with them.
            tokio::spawn(serve_connection(
                stream, session, timer, handle, permit, answers,
            ));
        }
        drop(listener);
        conns.stop_all();
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
    /// Bytes were read and taken in by the machine at that instant (or the end of the
    /// stream, recorded).
    Read(Instant),
    /// The socket is writable.
    Writable,
    /// The session's deadline came.
    Timer,
    /// Answers of an async service ended.
    Answered,
    /// Polling or reading the socket failed.
    Failed(io::Error),
}

/// The socket as an `io::Write` for the connection's machine: tokio's `try_write`, after
/// the runtime said the socket was writable (`WouldBlock` when that readiness was stale).
struct Try<'a>(&'a TcpStream);

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

/// The socket as an `io::Read` for the connection's machine, inside a poll: tokio's
/// `poll_read` straight into the machine's buffer (which also clears the socket's
/// readiness after a short read, so no read is made only to hear `WouldBlock`); `Pending`
/// is `WouldBlock`, with the task's waker registered.
struct PollRead<'a, 'b> {
    stream: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl io::Read for PollRead<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.stream).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// A large content's piece, read into its spare capacity (`poll_read_buf`: tokio reads
/// into memory that was never zeroed), once, as `read`.
impl ReadSpare for PollRead<'_, '_> {
    fn read_spare(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
        let mut spare = BufMut::limit(buf, limit);
        match poll_read_buf(Pin::new(&mut *self.stream), self.cx, &mut spare) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// Writes what the machine has pending until the socket would block.
fn write_pending<D: Driven>(stream: &TcpStream, session: &mut D, now: Instant) {
    while session.wants_write() {
        match session.write_to(&mut Try(stream), now) {
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

thread_local! {
    /// Read buffers of connections gone idle, lent to the next connection that reads on
    /// this thread: a burst of requests on many connections needs as many buffers as
    /// read at once (one, on a current-thread runtime), not one per connection left in
    /// the allocator's free lists.
    static POOL: RefCell<ReadBufferPool> = const { RefCell::new(ReadBufferPool::new()) };
}

/// Puts the read buffers of an idle session in this thread's pool (or frees them if full).
fn pool_read_buffer<D: Driven>(session: &mut D) {
    POOL.with_borrow_mut(|pool| pool.take_back(session));
}

/// Reads once, straight into the session's buffer, if the socket is readable.
///
/// Through `poll_read`, which, unlike `try_read`, clears the socket's readiness after a
/// short read (the socket is then drained): the read after each answer, which would only
/// say `WouldBlock`, is not made. A session without a buffer borrows one from the pool
/// once the socket says it has something, and gives it back if the readiness was stale.
fn poll_read_once<D: Driven>(
    stream: &mut TcpStream,
    session: &mut D,
    cx: &mut Context<'_>,
    mark: &IdleMark,
    noted: &mut Option<Option<Instant>>,
) -> Poll<io::Result<Option<Instant>>> {
    // Nothing below runs while the socket is known not readable (the waker is registered).
    if stream.poll_read_ready(cx)?.is_pending() {
        return Poll::Pending;
    }
    // Busy before bytes can reach the service, unless it was just evicted (`None`: it
    // closes; the eviction was decided while it was idle).
    // (Known busy, noted by this task: the mark is 0, which no eviction takes.)
    if *noted != Some(None) {
        if !mark.note(None) {
            return Poll::Ready(Ok(None));
        }
        *noted = Some(None);
    }
    let had_buffer = session.session().connection().read_alloc_need() == 0;
    if !had_buffer {
        POOL.with_borrow_mut(|pool| pool.lend(session));
    }
    // The bytes arrive now: the clock is read once per wake-up, here for a read.
    let now = Instant::now();
    match session.read_spare_from(&mut PollRead { stream, cx }, now) {
        Ok(_) => Poll::Ready(Ok(Some(now))),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            // The readiness was stale: idle again as before.
            if !had_buffer {
                pool_read_buffer(session);
            }
            let idle_since = session.idle_since();
            *noted = mark.note(idle_since).then_some(idle_since);
            Poll::Pending
        }
        Err(e) => Poll::Ready(Err(e)),
    }
}

/// One connection's task: the session's wishes, carried out on the runtime.
///
/// A plain function returning an `async move` block rather than an `async fn`: the block
/// holds each of its inputs once, where an `async fn` can hold both the argument and the
/// binding it is moved into, and every idle connection pays for the size of this future.
///
/// The session comes boxed (840 bytes plaintext, over 2 KB with TLS): tokio moves the
/// future it spawns several times (into the task cell, into its stage), and a task that
/// held the session inline made each of those moves a copy of it, about 2,000
/// instructions of `memcpy` a connection (callgrind, one-shot). Boxed, the task is
/// small and the session is copied once; an idle connection holds the same bytes.
/// The timer (112 bytes) comes boxed too and the peer's address is in the handle: tokio
/// copies the task whole ten times in a connection's life (spawning it, and each change
/// of its stage), and a task of at most 256 bytes (216 now, 376 before) is copied by a
/// `memcpy` without a loop (one-shot, callgrind: those copies 652 -> 325 instructions a
/// connection, for about 150 to allocate and free the timer's box).
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn serve_connection<D: Driven, A: Answers<D>>(
    mut stream: TcpStream,
    mut session: Box<D>,
    mut timer: Pin<Box<tokio::time::Sleep>>,
    handle: Arc<ConnHandle>,
    permit: OwnedSemaphorePermit,
    mut answers: A,
) -> impl Future<Output = ()> {
    async move {
        info!("accepted connection from {}", handle.peer);
        // The waker that the handle and the timer hold, kept to see when it changes (a
        // task's does not).
        let mut registered: Option<Waker> = None;
        let mut shutting = false;
        // One timer, armed at the session's deadline; moved only when that deadline comes
        // sooner (firing early is harmless: the session re-checks and names the next one).
        let mut armed = false;
        // The timer holds the task's waker since it was last armed: it need not be polled
        // again until it has fired.
        let mut timer_waits = false;
        // What the idle mark was last told, if known.
        let mut noted: Option<Option<Instant>> = None;
        // A fresh session has nothing to write: the loop writes after each wake-up.
        while !session.is_done() {
            // After every step that can hand requests out (reading, answers given back,
            // output drained).
            answers.start(&mut *session);
            let idle_since = session.idle_since();
            // Noted only when it changed (the mark reads the clock's epoch and divides).
            // (Not recorded if the note failed, evicted: the read's busy note must then
            // run, and fail, before any byte reaches the service.)
            if noted != Some(idle_since) {
                noted = handle.mark.note(idle_since).then_some(idle_since);
            }
            let (want_read, want_write) = (session.wants_read(), session.wants_write());
            if let Some(at) = session.poll_timeout() {
                if !armed || at < timer.deadline().into_std() {
                    timer.as_mut().reset(at.into());
                    armed = true;
                    timer_waits = false;
                }
            }
            // Readiness is polled in place (no future per wait): what an idle connection
            // costs is the size of this task.
            let wake = std::future::poll_fn(|cx| {
                if !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    // A new waker (the first poll): the handle and the timer are to wake it.
                    handle.signal.register(cx.waker());
                    registered = Some(cx.waker().clone());
                    timer_waits = false;
                }
                if !shutting && handle.signal.is_stopped() {
                    return Poll::Ready(Wake::Shutdown);
                }
                // First, so that an answer just started is polled (and can wake the task).
                if answers.poll_answers(cx).is_ready() {
                    return Poll::Ready(Wake::Answered);
                }
                if want_read {
                    match poll_read_once(&mut stream, &mut *session, cx, &handle.mark, &mut noted) {
                        Poll::Ready(Ok(Some(at))) => return Poll::Ready(Wake::Read(at)),
                        // Evicted (its mark says so).
                        Poll::Ready(Ok(None)) => return Poll::Ready(Wake::Shutdown),
                        Poll::Ready(Err(e)) => return Poll::Ready(Wake::Failed(e)),
                        Poll::Pending => {}
                    }
                }
                if want_write {
                    if let Poll::Ready(r) = stream.poll_write_ready(cx) {
                        return Poll::Ready(r.map_or_else(Wake::Failed, |()| Wake::Writable));
                    }
                }
                if armed && (!timer_waits || timer.is_elapsed()) {
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Wake::Timer);
                    }
                    // Out of tokio's cooperative budget, the timer took no waker (it asks to
                    // be polled again).
                    timer_waits = tokio::task::coop::has_budget_remaining();
                }
                Poll::Pending
            })
            .await;
            // One clock reading per wake-up, for everything done on it (declared after the
            // wait, so the task does not hold it while idle).
            let now = match wake {
                Wake::Read(at) => at,
                _ => Instant::now(),
            };
            match wake {
                Wake::Shutdown if handle.mark.is_evicted() => {
                    session.abort(CloseReason::Evicted);
                }
                Wake::Shutdown => {
                    shutting = true;
                    session.begin_shutdown(now);
                }
                Wake::Read(..) => {} // taken in by the machine as it was read
                Wake::Writable => {} // written below
                Wake::Answered => answers.deliver(&mut *session),
                Wake::Timer => {
                    armed = false;
                    session.handle_timeout(now);
                }
                Wake::Failed(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Wake::Failed(e) => session.abort(CloseReason::Io(e)),
            }
            write_pending(&stream, &mut *session, now);
            // Idle again: its read buffer goes back to the pool, not to the allocator.
            pool_read_buffer(&mut *session);
        }
        // Answers still in progress (the connection ended first) are cancelled.
        drop(answers);
        session.log_close(&handle.peer);
        // Dropping the stream closes it (as the std and mio servers do: no `shutdown` first,
        // a system call per connection that the close makes anyway).
        drop(stream);
        // The connection's slot, given back as it ends.
        drop(permit);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use sockmsg_protocol::Message;
    use sockmsg_server::{ServerConfig, Service, ServiceError, Session};

    /// What an idle connection costs is mostly this task and its session: keep the task
    /// small, the session outside it.
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
            let session = Box::new(Session::new(service, config, Instant::now()));
            let session_size = std::mem::size_of_val(&*session);
            let task = super::serve_connection(
                stream,
                session,
                Box::pin(tokio::time::sleep_until(Instant::now().into())),
                Arc::new(super::ConnHandle::new(addr)),
                Arc::new(tokio::sync::Semaphore::new(1))
                    .try_acquire_owned()
                    .expect("permit"),
                super::Called,
            );
            // The session and the timer are boxed: tokio moves a spawned future several
            // times, and each move copies it whole (256 bytes or less: without a loop).
            let size = std::mem::size_of_val(&task);
            assert!(
                size <= 256 && size < session_size,
                "the connection task is {size} bytes, the session {session_size}"
            );
        });
    }
}

/// A connection task's side of the accept loop: its idle mark, and how it is stopped (the
/// server shutting down, or evicting it); and the peer's address, for the log, held here
/// rather than in the task (see [`serve_connection`]).
struct ConnHandle {
    mark: IdleMark,
    signal: Stop,
    peer: SocketAddr,
}

impl ConnHandle {
    /// The handle of a new connection from `peer` (busy, not stopped).
    fn new(peer: SocketAddr) -> ConnHandle {
        ConnHandle {
            mark: IdleMark::default(),
            signal: Stop::default(),
            peer,
        }
    }
}

/// How a task (a connection's, or the accept loop) hears that it is to stop: a flag it
/// reads on each wake-up (one atomic load), and its waker, to wake it.
#[derive(Debug, Default)]
struct Stop {
    stopped: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Stop {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        // Nothing is left half-updated by a panic: each update is one statement.
        self.waker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the flag, then wakes the task.
    fn stop(&self) {
        self.stopped.store(true, SeqCst);
        if let Some(waker) = self.lock().take() {
            waker.wake();
        }
    }

    /// Makes `waker` the one [`Stop::stop`] wakes: look at [`Stop::is_stopped`] after (a
    /// stop before it found no waker to wake).
    fn register(&self, waker: &Waker) {
        *self.lock() = Some(waker.clone());
    }

    /// `true` once stopped.
    fn is_stopped(&self) -> bool {
        self.stopped.load(SeqCst)
    }

    /// Ready once stopped; while pending, the waker [`Stop::stop`] wakes is the polling
    /// task's (a `Stop` wakes one task: use it from that task only).
    fn stopped(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.is_stopped() {
                return Poll::Ready(());
            }
            self.register(cx.waker());
            // A stop before the registration found no waker to wake.
            if self.is_stopped() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// Stops every connection when dropped (see [`Server::run`]).
struct StopAllOnDrop<'a>(&'a Idle);

impl Drop for StopAllOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop_all();
    }
}

/// How often the accept loop looks again for an idle connection to evict, at the cap.
const EVICT_RETRY: Duration = Duration::from_millis(50);

/// The accept loop's view of its connections, to stop them all on shutdown and for
/// [`WhenFull::EvictIdle`]: each one's handle. Entries of ended connections (the task
/// dropped its handle) are dropped lazily, so the table stays proportional to the
/// connections open.
///
/// A list, not a map: registering a connection is a push (a map hashed an id for each
/// connection and swept a larger table: 696 instructions a one-shot connection against
/// 485, callgrind), and what reads the table (shutdown, eviction at the cap) goes through
/// all of it anyway.
#[derive(Default)]
struct Idle {
    conns: Mutex<Vec<Arc<ConnHandle>>>,
}

impl Idle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<ConnHandle>>> {
        // Nothing is left half-updated by a panic: each update is one statement.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection's handle (busy, not stopped).
    fn register(&self, peer: SocketAddr) -> Arc<ConnHandle> {
        let handle = Arc::new(ConnHandle::new(peer));
        let mut conns = self.lock();
        // Amortized: the table is swept each time it doubles past the live connections.
        if conns.len() >= 64 && conns.len().is_power_of_two() {
            conns.retain(|h| Arc::strong_count(h) > 1);
        }
        conns.push(Arc::clone(&handle));
        handle
    }

    /// Stops every connection (the server shuts down).
    fn stop_all(&self) {
        let conns = std::mem::take(&mut *self.lock());
        for handle in &conns {
            handle.signal.stop();
        }
    }

    /// Evicts the connection idle the longest (nothing in progress, nothing pending);
    /// `false` if none is idle.
    fn evict_longest_idle(&self) -> bool {
        let mut conns = self.lock();
        conns.retain(|h| Arc::strong_count(h) > 1);
        let Some(at) = IdleMark::longest_idle(conns.iter().enumerate().map(|(i, h)| (&h.mark, i)))
        else {
            return false;
        };
        // Only if it is still idle (it may have just taken a request: look again later).
        if !conns.get(at).is_some_and(|h| h.mark.evict()) {
            return false;
        }
        let handle = conns.swap_remove(at);
        handle.signal.stop();
        true
    }
}
