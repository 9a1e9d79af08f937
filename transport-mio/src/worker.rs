//! One event loop: a `Poll`, its share of the listener, its connections (a [`Slab`]) and a
//! timer heap. Each connection is a socket and a [`Driven`] machine of the server layer (a
//! plaintext [`Session`], or a TLS session with one inside): the loop moves bytes between
//! them and asks the machine what to wait for and when to wake. The loop is generic over
//! the machine, so plaintext and TLS are served by the same code.

use std::collections::HashMap;
use std::io::{self, Read};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use sockmsg_server::{
    accept_error, AcceptAction, CloseReason, Driven, IdleMark, MemoryBudget, NoDelay,
    ReadBufferPool, ServerConfig, Session, SessionState, ShutdownHandle, WhenFull, ACCEPT_BACKOFF,
};
use tracing::{debug, error, info};

use crate::stats::{LoopCounters, Stats};
use crate::timer::Timers;

/// Token of the listener in every loop.
pub(crate) const LISTENER: Token = Token(usize::MAX);
/// Token of the loop's `mio::Waker`.
pub(crate) const WAKER: Token = Token(usize::MAX - 1);

/// Reads per connection per turn before others get theirs (fairness).
const READ_BUDGET: usize = 16;
/// Accepts per turn before connections get theirs.
const ACCEPT_BUDGET: usize = 256;
/// Stale timer entries tolerated beyond twice the open connections before compacting.
const TIMER_SLACK: usize = 1024;
/// At the cap, how soon a loop that asked another loop to evict a connection looks again
/// for the slot it frees.
const EVICT_RETRY: Duration = Duration::from_millis(10);

/// What eviction at the connection cap ([`WhenFull::EvictIdle`]) needs to see of every
/// loop, so that the connection idle the longest is chosen over the whole server: each
/// connection's [`IdleMark`] (kept up to date by its loop), the evictions asked of each
/// loop, and the loop's waker.
pub(crate) struct Board {
    loops: Box<[LoopBoard]>,
    /// Evictions asked of a loop by another and not yet carried out: while there is one,
    /// no other is asked (one eviction per slot).
    asked: AtomicUsize,
}

struct LoopBoard {
    /// The loop's connections by slab key: (connection id, idle mark).
    marks: Mutex<HashMap<usize, (u64, Arc<IdleMark>)>>,
    /// Connections (key, id) the loop is asked to close as evicted, and when.
    evict: Mutex<Vec<(usize, u64, Instant)>>,
    waker: Arc<Waker>,
}

/// A lock, even if a thread panicked holding it (the data stay consistent: each update is
/// one insert or remove).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Board {
    /// A board for the loops woken by `wakers`, in loop order.
    pub(crate) fn new(wakers: Vec<Arc<Waker>>) -> Board {
        Board {
            loops: wakers
                .into_iter()
                .map(|waker| LoopBoard {
                    marks: Mutex::default(),
                    evict: Mutex::default(),
                    waker,
                })
                .collect(),
            asked: AtomicUsize::new(0),
        }
    }

    /// Of every loop's connections, the one idle the longest and not yet evicted: (loop,
    /// key, id, mark).
    fn longest_idle(&self) -> Option<(usize, usize, u64, Arc<IdleMark>)> {
        // Locked in loop order, by the accepting loop only (a loop locks only its own map
        // otherwise): no deadlock.
        let maps: Vec<_> = self.loops.iter().map(|l| lock(&l.marks)).collect();
        let marks = maps.iter().enumerate().flat_map(|(index, map)| {
            map.iter()
                .map(move |(&key, (id, mark))| (&**mark, (index, key, *id, mark)))
        });
        IdleMark::longest_idle(marks)
            .map(|(index, key, id, mark)| (index, key, id, Arc::clone(mark)))
    }
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board")
            .field("loops", &self.loops.len())
            .field("asked", &self.asked)
            .finish_non_exhaustive()
    }
}

/// What a loop needs to run, prepared by `Server::bind`.
pub(crate) struct LoopSetup {
    pub(crate) poll: Poll,
    pub(crate) listener: TcpListener,
    pub(crate) events_capacity: usize,
    pub(crate) board: Arc<Board>,
}

impl std::fmt::Debug for LoopSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopSetup")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

/// What the socket may still hold: edge-triggered readiness not yet drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    /// Read until `WouldBlock` (or a short read) last time: wait for the next event.
    Drained,
    /// An event said readable: read until it is drained.
    Readable,
    /// An event reported the peer's end of stream (or an error): read past short reads,
    /// until the read that returns it, so a request and its FIN arriving together are
    /// both seen.
    Closing,
}

/// Makes the machine of a connection accepted at an instant, with the server's memory
/// budget; `None` drops the connection (it could not start, and said why).
pub(crate) type Accept<D> =
    Arc<dyn Fn(Arc<ServerConfig>, &MemoryBudget, Instant) -> Option<D> + Send + Sync>;

/// What [`Worker::evict_idle`] did.
enum Eviction {
    /// Closed a connection of this loop: a slot is free.
    Done,
    /// Asked another loop to close one (or such an eviction is under way): a slot frees
    /// shortly.
    Asked,
    /// No connection is idle.
    None,
}

/// One accepted connection: its socket, its machine, and the loop's bookkeeping.
struct Conn<D> {
    stream: TcpStream,
    session: D,
    peer: SocketAddr,
    /// Distinguishes this connection from earlier ones under the same key.
    id: u64,
    readiness: Readiness,
    /// The interest registered with the poll.
    registered: Interest,
    /// Earliest instant this connection has in the timer heap.
    scheduled: Option<Instant>,
    /// Since when it is idle, for eviction at the cap by any loop (on the [`Board`]).
    mark: Arc<IdleMark>,
}

/// Counts what a session did while it was driven: requests, pauses for backpressure, the
/// largest output queue. It looks after each read and each write, before the answers
/// leave, so a client that has its answers finds them counted.
struct Observer<'a> {
    counters: &'a LoopCounters,
    max_output: &'a std::sync::atomic::AtomicUsize,
    local_max_output: &'a mut usize,
    requests: u64,
    paused: bool,
}

impl Observer<'_> {
    fn note(&mut self, session: &Session) {
        let requests = session.requests();
        if requests > self.requests {
            self.counters
                .requests
                .fetch_add(requests - self.requests, Relaxed);
            self.requests = requests;
        }
        let paused = matches!(session.state(), SessionState::Backpressured);
        if paused && !self.paused {
            LoopCounters::add(&self.counters.backpressured);
        }
        self.paused = paused;
        let queued = session.connection().pending_len();
        if queued > *self.local_max_output {
            *self.local_max_output = queued;
            self.max_output.fetch_max(queued, Relaxed);
        }
    }
}

/// Reads from the socket and notes whether the read was short (the socket drained),
/// whatever machine asked for the bytes.
struct Counted<'a> {
    stream: &'a mut TcpStream,
    lent: usize,
    got: usize,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.lent = buf.len();
        self.got = self.stream.read(buf)?;
        Ok(self.got)
    }
}

/// The event loop, over connections driven by `D`.
pub(crate) struct Worker<D> {
    index: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    events_capacity: usize,
    conns: Slab<Box<Conn<D>>>,
    timers: Timers,
    make: Accept<D>,
    config: Arc<ServerConfig>,
    stats: Stats,
    shutdown: ShutdownHandle,
    next_id: u64,
    /// Connections whose read budget ran out: driven again next turn.
    ready: Vec<(usize, u64)>,
    accept_again: bool,
    accept_retry_at: Option<Instant>,
    /// Set once shutting down: the loop ends when its connections are closed, or at this
    /// instant (the grace, plus a margin) at the latest.
    stop_by: Option<Instant>,
    /// Highest output queue this loop has reported to the shared high-water mark.
    local_max_output: usize,
    /// Read buffers taken back from idle connections, lent to the next that read.
    pool: ReadBufferPool,
    /// `TCP_NODELAY` for the connections accepted (set on the listener where it can be).
    nodelay: NoDelay,
    _driven: PhantomData<fn() -> D>,
    /// Every loop's connections, for eviction at the cap.
    board: Arc<Board>,
    /// A connection accepted at the cap, waiting for the connection evicted to make room
    /// for it to close ([`WhenFull::EvictIdle`]).
    waiting: Option<(TcpStream, SocketAddr)>,
}

impl<D: Driven> Worker<D> {
    pub(crate) fn new(
        index: usize,
        setup: LoopSetup,
        make: Accept<D>,
        config: Arc<ServerConfig>,
        stats: Stats,
        shutdown: ShutdownHandle,
    ) -> Worker<D> {
        let nodelay = NoDelay::new(config.nodelay);
        Worker {
            index,
            poll: setup.poll,
            listener: Some(setup.listener),
            events_capacity: setup.events_capacity,
            conns: Slab::new(),
            timers: Timers::new(),
            make,
            config,
            stats,
            shutdown,
            next_id: 0,
            ready: Vec::new(),
            accept_again: false,
            accept_retry_at: None,
            stop_by: None,
            local_max_output: 0,
            pool: ReadBufferPool::new(),
            nodelay,
            _driven: PhantomData,
            board: setup.board,
            waiting: None,
        }
    }

    fn counters(&self) -> &LoopCounters {
        // `index` is always in range: one set of counters per loop.
        &self.stats.shared.loops[self.index]
    }

    pub(crate) fn run(mut self) -> io::Result<()> {
        if let Some(listener) = self.listener.as_mut() {
            self.poll
                .registry()
                .register(listener, LISTENER, Interest::READABLE)?;
        }
        let mut events = Events::with_capacity(self.events_capacity);
        debug!(worker = self.index, "event loop started");
        loop {
            let now = Instant::now();
            if self.shutdown.is_shutdown() {
                self.begin_shutdown(now);
            }
            if let Some(until) = self.stop_by {
                if self.conns.is_empty() || now >= until {
                    break;
                }
            }
            let timeout = self.poll_timeout(now);
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!(error = %e, "poll failed: the event loop stops");
                    self.close_all();
                    return Err(e);
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => {}
                    Token(key) => {
                        let Some(conn) = self.conns.get_mut(key) else {
                            continue; // stale: closed earlier in this batch
                        };
                        if event.is_read_closed() || event.is_error() {
                            conn.readiness = Readiness::Closing;
                        } else if event.is_readable() && conn.readiness == Readiness::Drained {
                            conn.readiness = Readiness::Readable;
                        }
                        self.drive(key, now);
                    }
                }
            }
            if self.accept_again || self.accept_retry_at.is_some_and(|at| at <= now) {
                self.accept_again = false;
                self.accept_retry_at = None;
                self.accept(now);
            }
            for (key, id) in std::mem::take(&mut self.ready) {
                if self.conns.get(key).is_some_and(|c| c.id == id) {
                    self.drive(key, now);
                }
            }
            if self.board.asked.load(Relaxed) > 0 {
                self.evict_asked(now);
            }
            self.expire(now);
            if self.timers.len() > 2 * self.conns.len() + TIMER_SLACK {
                self.compact_timers();
            }
            self.counters()
                .timer_entries
                .store(self.timers.len(), Relaxed);
        }
        self.close_all();
        debug!(worker = self.index, "event loop stopped");
        Ok(())
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() || self.accept_again {
            return Some(Duration::ZERO);
        }
        [self.timers.next(), self.accept_retry_at, self.stop_by]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            if self.listener.is_none() {
                return;
            }
            let full = || self.stats.shared.open.load(Relaxed) >= self.config.max_connections;
            if self.config.when_full == WhenFull::Wait && full() {
                // New connections wait in the backlog; look again shortly (a close on
                // another loop raises no event here).
                self.accept_retry_at = Some(now + ACCEPT_BACKOFF);
                return;
            }
            if self.config.when_full == WhenFull::EvictIdle {
                // Evict only for a connection that is there: take it first (at the cap it
                // waits here, accepted, until a slot frees).
                let next = match self.waiting.take() {
                    Some(next) => Ok(next),
                    None => self.listener.as_ref().map_or_else(
                        || Err(io::ErrorKind::WouldBlock.into()),
                        |listener| listener.accept(),
                    ),
                };
                let (stream, peer) = match next {
                    Ok(next) => next,
                    Err(e) => match accept_error(&e) {
                        AcceptAction::Wait => return,
                        AcceptAction::Retry => continue,
                        AcceptAction::Backoff(pause) => {
                            self.accept_retry_at = Some(now + pause);
                            return;
                        }
                    },
                };
                let eviction = if full() {
                    self.evict_idle(now)
                } else {
                    Eviction::Done
                };
                match eviction {
                    Eviction::Done => self.admit(stream, peer, now),
                    Eviction::Asked | Eviction::None => {
                        self.waiting = Some((stream, peer));
                        // Asked: another loop closes it; look again as soon as it may
                        // have. None idle: look again shortly.
                        let pause = match eviction {
                            Eviction::Asked => EVICT_RETRY,
                            _ => ACCEPT_BACKOFF,
                        };
                        self.accept_retry_at = Some(now + pause);
                        return;
                    }
                }
                continue;
            }
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, now),
                Err(e) => match accept_error(&e) {
                    AcceptAction::Wait => return,
                    AcceptAction::Retry => {}
                    AcceptAction::Backoff(pause) => {
                        self.accept_retry_at = Some(now + pause);
                        return;
                    }
                },
            }
        }
        self.accept_again = true;
    }

    /// At the connection cap ([`WhenFull::EvictIdle`]): closes the connection idle the
    /// longest over every loop, to admit a new one: at once if it is this loop's, else by
    /// asking its loop (which closes it on its next turn: [`Worker::evict_asked`]).
    fn evict_idle(&mut self, now: Instant) -> Eviction {
        if self.board.asked.load(Relaxed) > 0 {
            // One eviction per slot: the one under way frees it.
            return Eviction::Asked;
        }
        let Some((index, key, id, mark)) = self.board.longest_idle() else {
            return Eviction::None;
        };
        if index == self.index {
            match self.conns.get_mut(key) {
                Some(conn) if conn.id == id && conn.session.idle_since().is_some() => {
                    conn.session.abort(CloseReason::Evicted);
                    self.settle(key, now);
                    Eviction::Done
                }
                _ => Eviction::None,
            }
        } else if let Some(owner) = self.board.loops.get(index) {
            if !mark.evict() {
                // Busy since its mark was read: choose again later.
                return Eviction::None;
            }
            self.board.asked.fetch_add(1, Relaxed);
            lock(&owner.evict).push((key, id, now));
            if let Err(e) = owner.waker.wake() {
                debug!(error = %e, "cannot wake an event loop to evict");
            }
            Eviction::Asked
        } else {
            Eviction::None
        }
    }

    /// Closes the connections other loops asked this one to evict, if they have been idle
    /// since before they were asked. A mark can be stale while this loop is busy (in a
    /// service call, say): a connection whose request was being served when it was chosen
    /// is idle again by now, but only since then; it stays, with a fresh mark, and the
    /// asking loop chooses again.
    fn evict_asked(&mut self, now: Instant) {
        let board = Arc::clone(&self.board);
        let Some(mine) = board.loops.get(self.index) else {
            return;
        };
        let asked = std::mem::take(&mut *lock(&mine.evict));
        if asked.is_empty() {
            return;
        }
        for &(key, id, at) in &asked {
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.id == id) else {
                continue; // closed meanwhile: its slot is free already
            };
            if conn.session.idle_since().is_some_and(|since| since <= at) {
                conn.session.abort(CloseReason::Evicted);
                self.settle(key, now);
            } else {
                conn.mark = Arc::new(IdleMark::default());
                conn.mark.note(conn.session.idle_since());
                lock(&mine.marks).insert(key, (id, Arc::clone(&conn.mark)));
            }
        }
        board.asked.fetch_sub(asked.len(), Relaxed);
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        let shared = &self.stats.shared;
        let open = shared.open.fetch_add(1, Relaxed);
        if open >= self.config.max_connections {
            shared.open.fetch_sub(1, Relaxed);
            LoopCounters::add(&self.counters().rejected);
            CloseReason::Full.log(&peer);
            return;
        }
        shared.max_open.fetch_max(open + 1, Relaxed);
        if let Err(e) = self
            .nodelay
            .apply(|| stream.nodelay(), |on| stream.set_nodelay(on))
        {
            debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let key = self.conns.vacant_key();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), Interest::READABLE)
        {
            debug!(%peer, error = %e, "cannot register connection");
            shared.open.fetch_sub(1, Relaxed);
            return;
        }
        let Some(mut session) =
            (self.make)(Arc::clone(&self.config), &self.stats.shared.budget, now)
        else {
            let _ = self.poll.registry().deregister(&mut stream);
            shared.open.fetch_sub(1, Relaxed);
            return;
        };
        LoopCounters::add(&self.counters().accepted);
        self.next_id += 1;
        let mark = Arc::new(IdleMark::default());
        if let Some(mine) = self.board.loops.get(self.index) {
            lock(&mine.marks).insert(key, (self.next_id, Arc::clone(&mark)));
        }
        if self.stop_by.is_some() {
            session.begin_shutdown(now);
        }
        let inserted = self.conns.insert(Box::new(Conn {
            stream,
            session,
            peer,
            id: self.next_id,
            readiness: Readiness::Drained,
            registered: Interest::READABLE,
            scheduled: None,
            mark,
        }));
        debug_assert_eq!(inserted, key);
        info!("accepted connection from {peer}");
        self.settle(key, now);
    }

    /// Carries out the session's wishes as far as the socket allows without blocking:
    /// write what is pending, read while the session wants input (up to the read budget),
    /// then brings the registration and the timer up to date.
    fn drive(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let session = &mut conn.session;
        let mut observer = Observer {
            counters: &self.stats.shared.loops[self.index],
            max_output: &self.stats.shared.max_output,
            local_max_output: &mut self.local_max_output,
            requests: session.session().requests(),
            paused: matches!(session.session().state(), SessionState::Backpressured),
        };
        let mut reads = 0;
        let mut again = false;
        loop {
            while session.wants_write() {
                match session.write_to(&mut conn.stream, now) {
                    Ok(_) => observer.note(session.session()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => session.abort(CloseReason::Io(e)),
                }
            }
            if !session.wants_read() || conn.readiness == Readiness::Drained {
                break;
            }
            if reads == READ_BUDGET {
                again = true;
                break;
            }
            reads += 1;
            self.pool.lend(session);
            let mut socket = Counted {
                stream: &mut conn.stream,
                lent: 0,
                got: 0,
            };
            match session.read_from(&mut socket, now) {
                Ok(0) => conn.readiness = Readiness::Drained, // the end of stream, recorded
                Ok(_) => {
                    // A short read drained the socket: with edge-triggered readiness any
                    // byte arriving after it raises a new event, so skip the read that
                    // would only say `WouldBlock` (as tokio does).
                    if socket.got < socket.lent && conn.readiness == Readiness::Readable {
                        conn.readiness = Readiness::Drained;
                    }
                    observer.note(session.session());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readiness = Readiness::Drained;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => session.abort(CloseReason::Io(e)),
            }
        }
        // Idle again: its read buffers go back to the loop, not to the allocator.
        self.pool.take_back(session);
        let id = conn.id;
        if again {
            self.ready.push((key, id));
        }
        self.settle(key, now);
    }

    /// After a connection moved: close it if its session is over, else register the
    /// interest its session wants (READABLE while it takes input, WRITABLE while output is
    /// pending) and schedule its next deadline.
    fn settle(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.session.is_done() {
            self.close(key);
            return;
        }
        conn.mark.note(conn.session.idle_since());
        let read = conn.session.wants_read().then_some(Interest::READABLE);
        let write = conn.session.wants_write().then_some(Interest::WRITABLE);
        // Neither (the session waits for a deadline only): keep the registration; a
        // spurious event costs one `WouldBlock`.
        let interest = match (read, write) {
            (Some(r), Some(w)) => r | w,
            (r, w) => r.or(w).unwrap_or(conn.registered),
        };
        if interest != conn.registered {
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(key), interest)
            {
                conn.session.abort(CloseReason::Io(e));
                self.close(key);
                return;
            }
            conn.registered = interest;
        }
        if let Some(at) = conn.session.poll_timeout() {
            if conn.scheduled.is_none_or(|s| at < s) {
                conn.scheduled = Some(at);
                self.timers.push(at, key, conn.id);
            }
        }
        let _ = now;
    }

    /// Hands every due deadline to its session.
    fn expire(&mut self, now: Instant) {
        while let Some((at, key, id)) = self.timers.pop_due(now) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.id != id || conn.scheduled != Some(at) {
                continue; // stale entry
            }
            conn.scheduled = None;
            conn.session.handle_timeout(now);
            // `drive`, not only `settle`: a session that waited for room in the memory
            // budget reads again what the socket already signalled.
            self.drive(key, now);
        }
    }

    /// Drops the timer entries of closed connections and other stale ones, so the heap
    /// stays proportional to the connections open however many come and go.
    fn compact_timers(&mut self) {
        let conns = &self.conns;
        self.timers.retain(|at, key, id| {
            conns
                .get(key)
                .is_some_and(|c| c.id == id && c.scheduled == Some(at))
        });
    }

    /// Removes a connection whose session is over, logs why, and closes its socket.
    fn close(&mut self, key: usize) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        if let Some(mine) = self.board.loops.get(self.index) {
            let mut marks = lock(&mine.marks);
            if marks.get(&key).is_some_and(|(id, _)| *id == conn.id) {
                marks.remove(&key);
            }
        }
        self.stats.shared.open.fetch_sub(1, Relaxed);
        // A connection that ended below its session (a failed TLS handshake) is counted by
        // no reason of the session's; its line names why.
        if let Some(reason) = conn.session.close_reason() {
            self.counters().closed(reason);
        }
        conn.session.log_close(&conn.peer);
        // Dropping the stream closes the socket, which also removes it from the poll.
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.stop_by.is_some() {
            return;
        }
        info!(
            worker = self.index,
            open = self.conns.len(),
            "shutting down: no new connections; finishing answers in progress"
        );
        // Sessions close themselves at the end of the grace; the margin only guards the loop.
        self.stop_by = Some(now + self.config.shutdown_grace + Duration::from_millis(100));
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.session.begin_shutdown(now);
            }
            self.settle(key, now);
        }
    }

    /// Closes every connection left (at the end of the loop).
    fn close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.session.abort(CloseReason::Shutdown);
            }
            self.close(key);
        }
    }
}
