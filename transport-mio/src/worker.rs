//! One event loop: a `Poll`, its share of the listener, its connections and their deadlines.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use sockmsg_protocol::{Connection, Event, Message, Role, Service};
use tracing::{debug, error, info, trace, warn};

use crate::config::ServerConfig;
use crate::server::ShutdownHandle;
use crate::slab::Slab;
use crate::stats::{CloseReason, LoopCounters, Stats};
use crate::timer::Timers;

/// Token of the listener in every loop.
pub(crate) const LISTENER: Token = Token(usize::MAX);
/// Token of the loop's `mio::Waker`.
pub(crate) const WAKER: Token = Token(usize::MAX - 1);

/// Reads per connection per turn before others get theirs (fairness).
const READ_BUDGET: usize = 16;
/// Accepts per turn before connections get theirs.
const ACCEPT_BUDGET: usize = 256;
/// Wait before accepting again after an accept error such as `EMFILE`.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Stale timer entries tolerated beyond twice the open connections before compacting.
const TIMER_SLACK: usize = 1024;
/// Most bytes of framing (protoheader and JSON header) a message can have.
const MAX_FRAMING: usize = 2 + sockmsg_protocol::MAX_HEADER_LEN;

/// What a loop needs to run, prepared by `Server::bind`.
pub(crate) struct LoopSetup {
    pub(crate) poll: Poll,
    pub(crate) listener: TcpListener,
}

/// Per-loop state the connections use while they are driven.
struct Env {
    service: Arc<dyn Service>,
    cfg: ServerConfig,
    stats: Stats,
    index: usize,
    /// Highest output queue this loop has reported to the shared high-water mark.
    local_max_output: usize,
}

impl Env {
    fn counters(&self) -> &LoopCounters {
        // `index` is always in range: one set of counters per loop.
        &self.stats.shared.loops[self.index]
    }

    fn note_output(&mut self, queued: usize) {
        if queued > self.local_max_output {
            self.local_max_output = queued;
            self.stats
                .shared
                .max_output
                .fetch_max(queued, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// One accepted connection. Boxed in the slab; holds no buffer while idle.
struct Conn {
    stream: TcpStream,
    proto: Connection,
    /// Distinguishes this connection from earlier ones under the same key.
    id: u64,
    /// A response held back because queueing it would take the output over the cap,
    /// with its encoded size.
    parked: Option<Box<(Message, usize)>>,
    /// When the first byte of the message in progress arrived.
    message_started: Option<Instant>,
    /// Last time bytes moved either way (accept counts).
    last_activity: Instant,
    /// Last time output made progress, or became pending.
    write_progress: Instant,
    /// Earliest deadline this connection has in the loop's timer heap.
    scheduled: Option<Instant>,
    registered: Interest,
    /// The socket may have bytes we have not read (edge-triggered readiness not drained).
    readable: bool,
    /// The peer closed its write side (a read returned 0).
    eof: bool,
    /// An event reported the peer's end of stream (or an error): keep reading past a
    /// short read, until the read that returns it.
    hup: bool,
    /// Bytes were staged in the decoder because processing paused (backpressure).
    staged: bool,
    /// Processing is paused because output reached the cap.
    paused: bool,
    /// Set once no more requests will be taken: close when output is flushed.
    finish: Option<CloseReason>,
}

impl Conn {
    /// `true` while requests may be taken from the input.
    fn can_process(&self, cap: usize) -> bool {
        self.finish.is_none() && self.parked.is_none() && self.proto.pending_len() < cap
    }

    fn set_finish(&mut self, reason: CloseReason) {
        if self.finish.is_none() {
            self.finish = Some(reason);
        }
        self.parked = None;
    }

    /// Runs the connection as far as it goes without blocking: flush, take requests, read
    /// (until `WouldBlock` or the read budget), respond. `Ok(true)` means the budget ran out
    /// with the socket still readable: drive it again on the next turn.
    fn drive(&mut self, env: &mut Env, now: Instant) -> Result<bool, CloseReason> {
        let cap = env.cfg.output_cap;
        let mut reads = 0;
        loop {
            if self.proto.wants_write() {
                self.flush(now)?;
            }
            if self.parked.is_some() {
                self.try_unpark(env, now);
            }
            if !self.can_process(cap) {
                return Ok(false);
            }
            if self.paused {
                self.paused = false;
                // The header clock restarts: the pause was ours, not the peer's.
                if self.proto.message_in_progress() {
                    self.message_started = Some(now);
                }
            }
            if self.staged {
                self.staged = false;
                self.process(env, now);
                continue;
            }
            if !self.readable || self.eof {
                return Ok(false);
            }
            if reads == READ_BUDGET {
                return Ok(true);
            }
            reads += 1;
            self.read_once(env, now)?;
        }
    }

    /// Writes pending output until it is all sent or the socket would block.
    fn flush(&mut self, now: Instant) -> Result<(), CloseReason> {
        while self.proto.wants_write() {
            match self.proto.write_to(&mut self.stream, now) {
                Ok(_) => {
                    self.write_progress = now;
                    self.last_activity = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(error = %e, "write failed");
                    return Err(CloseReason::Io);
                }
            }
        }
        Ok(())
    }

    fn read_once(&mut self, env: &mut Env, now: Instant) -> Result<(), CloseReason> {
        // The connection's one way in: a large content in progress is received in place,
        // everything else through its read buffer (given back when the connection idles).
        match self.proto.read_from(&mut self.stream, now) {
            Ok(0) => {
                self.eof = true;
                self.readable = false;
                self.proto.receive_eof();
                self.process(env, now);
                Ok(())
            }
            Ok(_) => {
                self.last_activity = now;
                self.process(env, now);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => {
                debug!(error = %e, "read failed");
                Err(CloseReason::Io)
            }
        }
    }

    /// Takes the requests received and answers them, until none is complete, the stream
    /// ends, or output reaches the cap; in that last case the rest stays in the connection
    /// for later.
    fn process(&mut self, env: &mut Env, now: Instant) {
        let cap = env.cfg.output_cap;
        let mut completed = false;
        loop {
            if self.finish.is_some() {
                break;
            }
            if !self.can_process(cap) {
                self.staged = true;
                if !self.paused {
                    self.paused = true;
                    LoopCounters::add(&env.counters().backpressured);
                    trace!(
                        queued = self.proto.pending_len(),
                        "output cap reached: reading paused"
                    );
                }
                break;
            }
            match self.proto.next_event() {
                Ok(Event::Message(request)) => {
                    completed = true;
                    self.respond(request, env, now);
                }
                Ok(Event::NeedData) => break,
                Ok(Event::End) => {
                    self.set_finish(CloseReason::Clean);
                    break;
                }
                Err(e) => {
                    self.protocol_error(&e.into());
                    break;
                }
            }
        }
        if self.finish.is_none() && self.proto.message_in_progress() {
            if completed || self.message_started.is_none() {
                self.message_started = Some(now);
            }
        } else {
            self.message_started = None;
        }
    }

    fn protocol_error(&mut self, e: &sockmsg_protocol::Error) {
        let peer = self.stream.peer_addr().ok();
        warn!(
            peer = ?peer,
            kind = e.kind(),
            phase = ?e.phase(),
            error = %e,
            "protocol error: closing the connection"
        );
        self.set_finish(CloseReason::Protocol);
    }

    /// Calls the service and queues its response, or parks the response if queueing it
    /// would take the output over the cap.
    fn respond(&mut self, request: Message, env: &mut Env, now: Instant) {
        LoopCounters::add(&env.counters().requests);
        let service = &env.service;
        let response = match catch_unwind(AssertUnwindSafe(|| service.call(request))) {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                warn!(error = %e, "service failed: closing the connection");
                self.set_finish(CloseReason::Service);
                return;
            }
            Err(_) => {
                error!("service panicked: closing the connection");
                self.set_finish(CloseReason::Service);
                return;
            }
        };
        let pending = self.proto.pending_len();
        let cap = env.cfg.output_cap;
        if pending > 0
            && pending.saturating_add(response.content().len().saturating_add(MAX_FRAMING)) > cap
        {
            // Near the cap: find the exact size.
            if let Ok(size) = response.encoded_len() {
                if pending.saturating_add(size) > cap {
                    self.parked = Some(Box::new((response, size)));
                    return;
                }
            }
        }
        self.queue(response, env, now);
    }

    fn queue(&mut self, response: Message, env: &mut Env, now: Instant) {
        if !self.proto.wants_write() {
            self.write_progress = now;
        }
        if let Err(e) = self.proto.send(response, now) {
            error!(kind = e.kind(), error = %e, "cannot encode the response: closing the connection");
            self.set_finish(CloseReason::Service);
            return;
        }
        env.note_output(self.proto.pending_len());
    }

    fn try_unpark(&mut self, env: &mut Env, now: Instant) {
        let pending = self.proto.pending_len();
        let fits = match &self.parked {
            Some(p) => pending == 0 || pending.saturating_add(p.1) <= env.cfg.output_cap,
            None => false,
        };
        if fits {
            if let Some(p) = self.parked.take() {
                self.queue(p.0, env, now);
            }
        }
    }

    /// When this connection must next be looked at, and what it is closed for if it has not
    /// moved on by then.
    fn deadline(&self, cfg: &ServerConfig) -> (Instant, CloseReason) {
        let mut best: Option<(Instant, CloseReason)> = None;
        let mut consider = |at: Instant, why: CloseReason| {
            if best.map_or(true, |(b, _)| at < b) {
                best = Some((at, why));
            }
        };
        if self.proto.wants_write() || self.parked.is_some() {
            consider(
                self.write_progress + cfg.write_deadline,
                CloseReason::WriteDeadline,
            );
        }
        if self.finish.is_none() && !self.paused {
            if let Some(started) = self.message_started {
                consider(started + cfg.header_deadline, CloseReason::HeaderDeadline);
            }
        }
        match best {
            Some(b) => b,
            None => (self.last_activity + cfg.idle_timeout, CloseReason::Idle),
        }
    }

    /// The interest the connection needs now; `None` once it is finished.
    fn wanted_interest(&self, cap: usize) -> Option<Interest> {
        let read = (self.can_process(cap) && !self.eof).then_some(Interest::READABLE);
        let write = self.proto.wants_write().then_some(Interest::WRITABLE);
        match (read, write) {
            (Some(r), Some(w)) => Some(r | w),
            (r, w) => r.or(w),
        }
    }
}

/// The event loop.
pub(crate) struct Worker {
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Box<Conn>>,
    timers: Timers,
    env: Env,
    shutdown: ShutdownHandle,
    next_id: u64,
    /// Connections whose read budget ran out: driven again next turn.
    ready: Vec<(usize, u64)>,
    accept_again: bool,
    accept_retry_at: Option<Instant>,
    grace_until: Option<Instant>,
}

impl Worker {
    pub(crate) fn new(
        index: usize,
        setup: LoopSetup,
        service: Arc<dyn Service>,
        cfg: ServerConfig,
        stats: Stats,
        shutdown: ShutdownHandle,
    ) -> Worker {
        Worker {
            poll: setup.poll,
            listener: Some(setup.listener),
            conns: Slab::new(),
            timers: Timers::new(),
            env: Env {
                service,
                cfg,
                stats,
                index,
                local_max_output: 0,
            },
            shutdown,
            next_id: 0,
            ready: Vec::new(),
            accept_again: false,
            accept_retry_at: None,
            grace_until: None,
        }
    }

    pub(crate) fn run(mut self) -> io::Result<()> {
        if let Some(listener) = self.listener.as_mut() {
            self.poll
                .registry()
                .register(listener, LISTENER, Interest::READABLE)?;
        }
        let mut events = Events::with_capacity(self.env.cfg.events_capacity);
        debug!(worker = self.env.index, "event loop started");
        loop {
            let now = Instant::now();
            if self.shutdown.is_shutdown() {
                self.begin_shutdown(now);
            }
            if let Some(until) = self.grace_until {
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
                    self.close_all(CloseReason::Shutdown);
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
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            conn.readable = true;
                        }
                        if event.is_read_closed() || event.is_error() {
                            conn.hup = true;
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
                if self.conns.get_mut(key).is_some_and(|c| c.id == id) {
                    self.drive(key, now);
                }
            }
            self.expire(now);
            if self.timers.len() > 2 * self.conns.len() + TIMER_SLACK {
                self.compact_timers();
            }
            self.env
                .counters()
                .timer_entries
                .store(self.timers.len(), std::sync::atomic::Ordering::Relaxed);
        }
        self.close_all(CloseReason::Shutdown);
        debug!(worker = self.env.index, "event loop stopped");
        Ok(())
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() || self.accept_again {
            return Some(Duration::ZERO);
        }
        [self.timers.next(), self.accept_retry_at, self.grace_until]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS...: the connection stays in the backlog;
                    // try again shortly rather than spin.
                    warn!(error = %e, "accept failed: retrying in {ACCEPT_RETRY:?}");
                    self.accept_retry_at = Some(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
        self.accept_again = true;
    }

    fn admit(&mut self, mut stream: TcpStream, peer: std::net::SocketAddr, now: Instant) {
        let shared = &self.env.stats.shared;
        let open = shared
            .open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if open >= self.env.cfg.max_connections {
            shared
                .open
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            LoopCounters::add(&self.env.counters().rejected);
            debug!(%peer, max = self.env.cfg.max_connections, "connection limit reached: closing new connection");
            return;
        }
        shared
            .max_open
            .fetch_max(open + 1, std::sync::atomic::Ordering::Relaxed);
        if self.env.cfg.nodelay {
            if let Err(e) = stream.set_nodelay(true) {
                debug!(%peer, error = %e, "cannot set TCP_NODELAY");
            }
        }
        let key = self.conns.next_key();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), Interest::READABLE)
        {
            warn!(%peer, error = %e, "cannot register connection");
            shared
                .open
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        LoopCounters::add(&self.env.counters().accepted);
        self.next_id += 1;
        let conn = Box::new(Conn {
            stream,
            proto: Connection::new(Role::Server, self.env.cfg.limits.clone())
                .with_read_buf_size(self.env.cfg.read_buffer),
            id: self.next_id,
            parked: None,
            message_started: None,
            last_activity: now,
            write_progress: now,
            scheduled: None,
            registered: Interest::READABLE,
            readable: false,
            eof: false,
            hup: false,
            staged: false,
            paused: false,
            finish: if self.grace_until.is_some() {
                Some(CloseReason::Shutdown)
            } else {
                None
            },
        });
        let inserted = self.conns.insert(conn);
        debug_assert_eq!(inserted, key);
        info!("accepted connection from {peer}");
        self.settle(key, now);
    }

    /// Drives one connection, then brings its registration and deadline up to date.
    fn drive(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.drive(&mut self.env, now) {
            Ok(false) => {}
            Ok(true) => self.ready.push((key, conn.id)),
            Err(reason) => {
                self.close(key, reason);
                return;
            }
        }
        self.settle(key, now);
    }

    /// After a connection moved: close it if finished, else update its interest (READABLE
    /// unless paused or ended, WRITABLE only while output is pending) and its deadline.
    fn settle(&mut self, key: usize, now: Instant) {
        let cap = self.env.cfg.output_cap;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.finish.is_some() && !conn.proto.wants_write() {
            let reason = conn.finish.unwrap_or(CloseReason::Clean);
            self.close(key, reason);
            return;
        }
        let Some(interest) = conn.wanted_interest(cap) else {
            // Not reachable: nothing to read, nothing to write, yet not finished.
            debug!(key, "connection has nothing left to wait for: closing");
            self.close(key, CloseReason::Clean);
            return;
        };
        if interest != conn.registered {
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(key), interest)
            {
                debug!(error = %e, "reregister failed");
                self.close(key, CloseReason::Io);
                return;
            }
            conn.registered = interest;
        }
        if !conn.proto.wants_write() && !conn.proto.message_in_progress() {
            // Idle: give back what the decoder and encoder hold.
            if conn.proto.allocated() > 0 {
                conn.proto.release_buffers();
            }
        }
        let (at, _) = conn.deadline(&self.env.cfg);
        if conn.scheduled.map_or(true, |s| at < s) {
            conn.scheduled = Some(at);
            self.timers.push(at, key, conn.id);
        }
        let _ = now;
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, key, id)) = self.timers.pop_due(now) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.id != id || conn.scheduled != Some(at) {
                continue; // stale entry
            }
            conn.scheduled = None;
            let (deadline, reason) = conn.deadline(&self.env.cfg);
            if deadline <= now {
                let peer = conn.stream.peer_addr().ok();
                match reason {
                    CloseReason::Idle => debug!(peer = ?peer, "idle timeout: closing"),
                    _ => info!(
                        peer = ?peer,
                        reason = reason.as_str(),
                        queued = conn.proto.pending_len(),
                        "deadline passed: closing"
                    ),
                }
                self.close(key, reason);
            } else {
                conn.scheduled = Some(deadline);
                self.timers.push(deadline, key, id);
            }
        }
    }

    /// Drops the timer entries of closed connections and other stale ones, so the heap
    /// stays proportional to the connections open however many come and go.
    fn compact_timers(&mut self) {
        let conns = &mut self.conns;
        self.timers.retain(|at, key, id| {
            conns
                .get_mut(key)
                .is_some_and(|c| c.id == id && c.scheduled == Some(at))
        });
    }

    fn close(&mut self, key: usize, reason: CloseReason) {
        if let Some(conn) = self.conns.remove(key) {
            self.env.counters().closed(reason);
            self.env
                .stats
                .shared
                .open
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            // Evaluated only when the line is enabled: no syscall otherwise.
            info!(
                "closing connection to {} ({})",
                conn.stream
                    .peer_addr()
                    .map_or_else(|_| "a disconnected peer".to_owned(), |a| a.to_string()),
                reason.as_str()
            );
            // Dropping the stream closes the socket, which also removes it from the poll.
            drop(conn);
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.grace_until.is_some() {
            return;
        }
        info!(
            worker = self.env.index,
            open = self.conns.len(),
            "shutting down: no new connections; finishing requests in progress"
        );
        self.grace_until = Some(now + self.env.cfg.shutdown_grace);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        for key in self.conns.keys() {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.set_finish(CloseReason::Shutdown);
            }
            self.settle(key, now);
        }
    }

    fn close_all(&mut self, reason: CloseReason) {
        for key in self.conns.keys() {
            self.close(key, reason);
        }
    }
}
