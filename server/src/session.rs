//! One connection's server policy, with no socket: the machine a transport drives.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockmsg_protocol::{
    Connection, Deadlines, Event, LocalError, Message, ReadSpare, Role, Timeout,
};

use crate::budget::{LargeRefusal, MemoryBudget};
use crate::close::CloseReason;
use crate::config::ServerConfig;
use crate::service::{call_service, CallError, Service};

/// Bytes the session lends for one read outside large content: enough for a burst of
/// pipelined requests; content of at least this size is received in place.
const READ_BUF: usize = 4 * 1024;

/// How long a connection keeps its buffers once idle. Freeing them at once would allocate
/// (and zero) the read buffer again for every request of a keep-alive connection; an idle
/// connection holds no buffer after this.
const RELEASE_DELAY: Duration = Duration::from_millis(100);

/// An idle connection that holds at least this much (pieces of large contents kept for the
/// next) frees it at once, not after [`RELEASE_DELAY`], when the memory budget is more
/// than half taken.
const RELEASE_NOW_FROM: usize = 1024 * 1024;

/// A message part (header or content) larger than this that the memory budget cannot
/// take is refused; a smaller one waits for room.
pub(crate) const LARGE_MESSAGE: usize = 64 * 1024;

/// A new part (header or content) larger than this may not take the last eighth of the
/// memory budget, which stays for small requests (and the read buffers they need).
const SMALL_PART: usize = 16 * 1024;

/// How often a session held back by a full memory budget looks for room again.
const BUDGET_RETRY: Duration = Duration::from_millis(20);

/// Where a [`Session`] stands: the state of one server connection.
#[derive(Debug)]
pub enum SessionState {
    /// Taking requests: the socket should be read.
    Open,
    /// The answers queued reached [`ServerConfig::output_cap`], or the answers in progress
    /// [`ServerConfig::max_in_flight`]: no request is taken (and the socket is not read)
    /// until they drain.
    Backpressured,
    /// No more requests: the answers owed are being sent, then the connection closes for
    /// the reason held.
    Draining(CloseReason),
    /// Done: the transport closes the socket and logs the reason
    /// ([`CloseReason::log`]).
    Closed(CloseReason),
}

/// One server connection without its socket: the protocol [`Connection`] plus the server's
/// policy. It takes the bytes a transport reads, calls the [`Service`] for each request
/// (panics caught), queues the answers under the output cap, applies
/// [`ServerConfig::close_after_answer`], keeps the header, idle and write deadlines and the
/// shutdown grace, and tells the transport what to do next:
///
/// * bytes in: [`Session::read_buf`] + [`Session::commit`] (or [`Session::read_from`]), and
///   [`Session::receive_eof`], while [`Session::wants_read`];
/// * bytes out: [`Session::pending_slices`] + [`Session::consume`] (or [`Session::write_to`]),
///   while [`Session::wants_write`];
/// * time: sleep until [`Session::poll_timeout`], then [`Session::handle_timeout`];
/// * end: once [`Session::close_reason`] is `Some`, close the socket and log the reason.
///
/// Every method that can move the machine takes `now`; it never reads a clock.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Instant;
/// use sockmsg_protocol::{encode, Message};
/// use sockmsg_server::{CloseReason, ServerConfig, Service, ServiceError, Session};
///
/// let shout: Arc<dyn Service> = Arc::new(|m: Message| -> Result<Message, ServiceError> {
///     Ok(Message::binary("text/plain", m.content().to_ascii_uppercase()))
/// });
/// let config = Arc::new(ServerConfig::default().with_close_after_answer(true));
/// let now = Instant::now();
/// let mut session = Session::new(shout, config, now);
///
/// // "The socket": the request arrives in one read.
/// let request = encode(&Message::binary("text/plain", b"hi".to_vec()))?;
/// let buf = session.read_buf();
/// buf[..request.len()].copy_from_slice(&request);
/// session.commit(request.len(), now);
///
/// // The answer is queued; with close_after_answer nothing more is read.
/// assert!(session.wants_write() && !session.wants_read());
/// let mut wire = Vec::new();
/// while session.wants_write() {
///     session.write_to(&mut wire, now)?;
/// }
/// assert!(wire.ends_with(b"HI"));
/// assert!(matches!(session.close_reason(), Some(CloseReason::Answered)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Session {
    conn: Connection,
    dispatch: Dispatch,
    config: Arc<ServerConfig>,
    state: SessionState,
    /// An answer waiting for the queue to drain enough to take it under the cap.
    parked: Option<Box<Message>>,
    /// Set by [`Session::begin_shutdown`]: when the grace period ends.
    grace_until: Option<Instant>,
    /// Requests handed to the service.
    requests: u64,
    /// When to free the buffers of a connection found idle ([`RELEASE_DELAY`]).
    release_at: Option<Instant>,
    /// The server's memory budget, and what this session has charged to it (its buffers
    /// plus reservations for what it is about to receive).
    budget: MemoryBudget,
    charged: usize,
    /// The part being received (start, announced size) whose memory is reserved.
    admitted: Option<(u64, usize)>,
    /// Set while the budget has no room for what the next read needs: when to look again.
    budget_retry: Option<Instant>,
    /// Until the first byte arrives: when the first-byte deadline passes.
    first_byte_by: Option<Instant>,
    /// Since when the connection has been idle (nothing in progress, nothing to send).
    idle_since: Option<Instant>,
    /// Bytes of answers larger than the output cap charged to the large answers' share of
    /// the budget, and the output bytes to send before the last of them is sent (its
    /// buffer freed): then the share is given back.
    large_held: usize,
    large_left: usize,
    /// Output bytes the peer has taken, over the connection's life.
    sent: u64,
    /// While more than the output cap is queued ([`ServerConfig::min_send_rate`]): when the
    /// current window began, and `sent` then.
    rate_window: Option<(Instant, u64)>,
    /// The window's start is provisional (the instant the answer was made with, which the
    /// service's own time may have made old): it moves to the next instant the transport
    /// hands in to send or to check deadlines.
    rate_provisional: bool,
}

/// The earlier of two instants, either of which may be missing.
#[inline]
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Who answers a session's requests.
enum Dispatch {
    /// A sync service, called in place as each request is taken.
    Call(Arc<dyn Service>),
    /// The transport ([`Session::take_request`], [`Session::give_answer`]): an async
    /// service. Boxed: a sync session pays one pointer for it.
    HandOut(Box<HandOut>),
}

/// What [`Session::release_owed`] did.
enum Owing {
    /// Queued the oldest owed answer.
    Released,
    /// Nothing to queue; another request may be handed out.
    Room,
    /// Nothing to queue; [`ServerConfig::max_in_flight`] answers are owed.
    Full,
}

/// A request handed out by [`Session::take_request`], to name it when its answer comes
/// back ([`Session::give_answer`]). Ids grow in request order within a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

/// One request handed out, until its answer is queued.
struct Owed {
    /// Bytes charged for it: the request's content, then its answer's.
    bytes: usize,
    /// The answer, once given back (it waits here for the answers before it).
    answer: Option<Result<Message, CallError>>,
}

/// The requests of an async service's session between the connection and the queue.
#[derive(Default)]
struct HandOut {
    /// Requests taken from the connection, not yet taken by the transport.
    ready: VecDeque<(RequestId, Message)>,
    /// Every request handed out and not yet answered in order, oldest first: the one at
    /// the front has id `first`.
    owed: VecDeque<Owed>,
    first: u64,
    /// The sum of `owed`'s bytes: what the memory budget counts for them.
    bytes: usize,
}

impl HandOut {
    /// Forgets every request owed (their answers, should they come, are ignored).
    fn forget(&mut self) {
        self.first += self.owed.len() as u64;
        self.owed.clear();
        self.ready.clear();
        self.bytes = 0;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.budget.release(self.charged);
        self.budget.release_large(self.large_held);
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state)
            .field("pending", &self.conn.pending_len())
            .field("parked", &self.parked.is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A new connection accepted at `now`, answered by `service` under `config` (which
    /// transports share between sessions, normalized: [`ServerConfig::normalized`]). The
    /// header, idle and write deadlines and the output cap are handed to the protocol
    /// machine, which keeps them. It counts against a memory budget of its own; a
    /// transport makes its sessions on the server's one budget instead
    /// ([`Session::new_with_budget`]).
    pub fn new(service: Arc<dyn Service>, config: Arc<ServerConfig>, now: Instant) -> Session {
        let budget = MemoryBudget::for_config(&config);
        Session::with_dispatch(Dispatch::Call(service), config, budget, now)
    }

    /// [`Session::new`] counting its memory in `budget` from the start, the server's one
    /// budget ([`MemoryBudget::for_config`]): what `Session::new(..).with_budget(..)`
    /// gives, without making a budget of its own first and moving the session to swap it
    /// (the way the transports make a session for each connection they accept).
    #[inline]
    pub fn new_with_budget(
        service: Arc<dyn Service>,
        config: Arc<ServerConfig>,
        budget: MemoryBudget,
        now: Instant,
    ) -> Session {
        Session::with_dispatch(Dispatch::Call(service), config, budget, now)
    }

    #[inline]
    fn with_dispatch(
        dispatch: Dispatch,
        config: Arc<ServerConfig>,
        budget: MemoryBudget,
        now: Instant,
    ) -> Session {
        let mut session = Session::unaccounted(dispatch, config, budget, now);
        session.account(now);
        session
    }

    /// [`Session::new_with_budget`], boxed: for a transport that keeps each session on the
    /// heap (the tokio server, whose tasks the runtime moves). The session is built and
    /// then charged to `budget` in its box, copied there once, where boxing what
    /// `new_with_budget` returns copied it three times (about 300 instructions a
    /// connection, callgrind).
    pub fn new_boxed_with_budget(
        service: Arc<dyn Service>,
        config: Arc<ServerConfig>,
        budget: MemoryBudget,
        now: Instant,
    ) -> Box<Session> {
        let mut session = Box::new(Session::unaccounted(
            Dispatch::Call(service),
            config,
            budget,
            now,
        ));
        session.account(now);
        session
    }

    /// A session that has charged nothing to its budget yet: [`Session::account`] next.
    #[inline(always)]
    fn unaccounted(
        dispatch: Dispatch,
        config: Arc<ServerConfig>,
        budget: MemoryBudget,
        now: Instant,
    ) -> Session {
        // One literal, the machine built in place (its builders inline): each step of a
        // chain of `with_*` and each `let` was a copy of the whole machine, about 500
        // instructions of every connection (callgrind).
        // Before the literal: a call that could unwind in the middle of it made the machine
        // be built apart and copied in.
        let first_byte_by = config.first_byte_deadline.map(|d| now + d);
        Session {
            conn: Connection::new(Role::Server, config.limits.clone())
                .with_deadlines(
                    Deadlines {
                        header: config.header_deadline,
                        idle: config.idle_timeout,
                        write: config.write_deadline,
                    },
                    now,
                )
                .with_output_cap(config.output_cap)
                .with_read_buf_size(READ_BUF)
                .with_piece_reuse(true),
            first_byte_by,
            dispatch,
            config,
            state: SessionState::Open,
            parked: None,
            grace_until: None,
            requests: 0,
            release_at: None,
            budget,
            charged: 0,
            admitted: None,
            budget_retry: None,
            idle_since: Some(now),
            large_held: 0,
            large_left: 0,
            sent: 0,
            rate_window: None,
            rate_provisional: false,
        }
    }

    /// A new connection accepted at `now` whose requests are answered by the transport
    /// rather than by a [`Service`] called in place: the way to run an
    /// [`AsyncService`](crate::AsyncService). Everything else is as for
    /// [`Session::new`] (deadlines, output cap, budget, shutdown, `close_after_answer`).
    ///
    /// The transport takes each request with [`Session::take_request`], starts its answer
    /// ([`call_async_service`](crate::call_async_service)), and gives the outcome back with
    /// [`Session::give_answer`] in whatever order the answers end; the session queues them
    /// in request order. At most [`ServerConfig::max_in_flight`] are owed at once: beyond
    /// that no more requests are taken. While answers are owed and nothing waits to be
    /// sent, the idle and header deadlines wait (the peer is waiting for us); a failed or
    /// panicked answer closes the connection once the answers before it are sent.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Instant;
    /// use sockmsg_protocol::{encode, Message};
    /// use sockmsg_server::{ServerConfig, Session};
    ///
    /// let now = Instant::now();
    /// let mut session = Session::new_async(Arc::new(ServerConfig::default()), now);
    /// let mut wire = Vec::new();
    /// for text in ["first", "second"] {
    ///     wire.extend(encode(&Message::binary("text/plain", text.as_bytes().to_vec()))?);
    /// }
    /// session.read_buf()[..wire.len()].copy_from_slice(&wire);
    /// session.commit(wire.len(), now);
    /// let (a, first) = session.take_request().expect("first");
    /// let (b, second) = session.take_request().expect("second");
    /// // The second answer is ready first: it waits for the first.
    /// session.give_answer(b, Ok(second), now);
    /// assert!(!session.wants_write());
    /// session.give_answer(a, Ok(first), now);
    /// let mut out = Vec::new();
    /// while session.wants_write() {
    ///     session.write_to(&mut out, now)?;
    /// }
    /// let first_at = out.windows(5).position(|w| w == b"first");
    /// let second_at = out.windows(6).position(|w| w == b"second");
    /// assert!(first_at < second_at);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_async(config: Arc<ServerConfig>, now: Instant) -> Session {
        let budget = MemoryBudget::for_config(&config);
        Session::with_dispatch(Dispatch::HandOut(Box::default()), config, budget, now)
    }

    /// [`Session::new_async`] counting its memory in `budget` from the start (see
    /// [`Session::new_with_budget`]).
    #[inline]
    pub fn new_async_with_budget(
        config: Arc<ServerConfig>,
        budget: MemoryBudget,
        now: Instant,
    ) -> Session {
        Session::with_dispatch(Dispatch::HandOut(Box::default()), config, budget, now)
    }

    /// The next request for the transport to answer ([`Session::new_async`]), with the id
    /// to give its answer back under; `None` when there is none (and always for a session
    /// that calls its [`Service`] itself).
    pub fn take_request(&mut self) -> Option<(RequestId, Message)> {
        match &mut self.dispatch {
            Dispatch::HandOut(h) => h.ready.pop_front(),
            Dispatch::Call(_) => None,
        }
    }

    /// The outcome of request `id` ([`Session::take_request`]) at `now`: queued once the
    /// answers before it are, under the output cap; an error (the service failed or
    /// panicked) closes the connection for that reason once the answers before it are
    /// sent. An id not owed (answered already, or forgotten after an earlier failure or
    /// the connection's end) is ignored.
    pub fn give_answer(&mut self, id: RequestId, result: Result<Message, CallError>, now: Instant) {
        self.give_answers([(id, result)], now);
    }

    /// [`Session::give_answer`] for several answers at once (in any order), cheaper than
    /// one at a time: the session moves on once, after taking them all.
    pub fn give_answers<I>(&mut self, answers: I, now: Instant)
    where
        I: IntoIterator<Item = (RequestId, Result<Message, CallError>)>,
    {
        let Dispatch::HandOut(h) = &mut self.dispatch else {
            return;
        };
        let mut taken = false;
        for (id, result) in answers {
            let Some(index) = id.0.checked_sub(h.first) else {
                continue;
            };
            let Some(owed) = usize::try_from(index).ok().and_then(|i| h.owed.get_mut(i)) else {
                continue;
            };
            if owed.answer.is_some() {
                continue;
            }
            let bytes = result.as_ref().map_or(0, Message::content_len);
            h.bytes = h.bytes - owed.bytes + bytes;
            owed.bytes = bytes;
            owed.answer = Some(result);
            taken = true;
        }
        if taken && !self.is_closed() {
            self.process(now);
        }
    }

    /// Requests handed out ([`Session::take_request`] or about to be) whose answers are
    /// not yet queued; always 0 for a session that calls its [`Service`] itself.
    #[inline]
    pub fn answers_owed(&self) -> usize {
        match &self.dispatch {
            Dispatch::HandOut(h) => h.owed.len(),
            Dispatch::Call(_) => 0,
        }
    }

    /// The same session, counting its memory in `budget`, the one its server shares
    /// between all its sessions ([`MemoryBudget::for_config`]). Without it, a session
    /// counts against a budget of its own, of [`ServerConfig::memory_budget`] bytes.
    pub fn with_budget(mut self, budget: MemoryBudget, now: Instant) -> Session {
        self.budget.release(std::mem::take(&mut self.charged));
        self.budget = budget;
        self.admitted = None;
        self.account(now);
        self
    }

    /// The memory budget the session counts against.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Bytes this session has charged to its memory budget now (its buffers, and what it
    /// reserved for what it is about to receive).
    pub fn budget_charged(&self) -> usize {
        self.charged
    }

    /// Since when the connection has been idle (nothing being received, nothing to send),
    /// or `None` if it is not: what [`crate::WhenFull::EvictIdle`] compares.
    #[inline]
    pub fn idle_since(&self) -> Option<Instant> {
        if self.is_closed() {
            None
        } else {
            self.idle_since
        }
    }

    /// Where the session stands.
    pub fn state(&self) -> &SessionState {
        &self.state
    }

    /// Why the connection is over, once it is: close the socket.
    #[inline]
    pub fn close_reason(&self) -> Option<&CloseReason> {
        match &self.state {
            SessionState::Closed(reason) => Some(reason),
            _ => None,
        }
    }

    /// `true` once the connection is over ([`Session::close_reason`] is `Some`).
    #[inline]
    pub fn is_closed(&self) -> bool {
        matches!(self.state, SessionState::Closed(_))
    }

    /// `true` while the socket should be read: requests are taken, the protocol machine
    /// wants input (no end of stream, no error, output under the cap), and the memory
    /// budget holds what the next read needs (else the session looks again shortly: see
    /// [`Session::poll_timeout`]).
    #[inline]
    pub fn wants_read(&self) -> bool {
        matches!(self.state, SessionState::Open)
            && self.conn.wants_read()
            && self.budget_retry.is_none()
    }

    /// `true` while answers wait to be sent.
    #[inline]
    pub fn wants_write(&self) -> bool {
        !self.is_closed() && self.conn.wants_write()
    }

    /// Requests handed to the service so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The configuration it runs under.
    #[inline]
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The protocol machine, to inspect (bytes pending, requests in flight...).
    #[inline]
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Takes the buffer the session reads into, if the connection is idle (nothing being
    /// received, nothing to send), for the transport to keep in a pool and lend to the
    /// next connection that reads ([`Session::give_read_buffer`]): a burst of connections
    /// that each read a request then needs as many buffers as read at once, not one per
    /// connection left behind in the allocator.
    #[inline]
    pub fn take_read_buffer(&mut self) -> Option<Vec<u8>> {
        if self.is_idle() {
            self.conn.take_read_buffer()
        } else {
            None
        }
    }

    /// Gives the session a buffer to read into (see [`Session::take_read_buffer`]); hands
    /// it back if the session has one already.
    #[inline]
    pub fn give_read_buffer(&mut self, buf: Vec<u8>) -> Option<Vec<u8>> {
        self.conn.give_read_buffer(buf)
    }

    /// A slice to read into; say how much arrived with [`Session::commit`].
    pub fn read_buf(&mut self) -> &mut [u8] {
        self.conn.read_buf()
    }

    /// Records that `n` bytes were read into [`Session::read_buf`] at `now`, and answers
    /// every request they complete (within the output cap).
    pub fn commit(&mut self, n: usize, now: Instant) {
        if n > 0 {
            self.first_byte_by = None;
        }
        if let Err(e) = self.conn.commit(n, now) {
            // A transport bug (more committed than lent), not the peer's doing.
            self.abort(CloseReason::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                e,
            )));
            return;
        }
        self.process(now);
    }

    /// Records the end of the peer's stream (a read returned 0). Requests received before
    /// it are answered; ending in the middle of a message is a protocol error.
    pub fn receive_eof(&mut self, now: Instant) {
        self.conn.receive_eof();
        self.process(now);
    }

    /// Reads once from `reader` into the session: `Ok(0)` is the end of the stream, which
    /// is recorded ([`Session::receive_eof`]). Errors, `WouldBlock` included, are returned
    /// untouched for the transport to handle.
    pub fn read_from<R: io::Read + ?Sized>(
        &mut self,
        reader: &mut R,
        now: Instant,
    ) -> io::Result<usize> {
        let n = reader.read(self.read_buf())?;
        if n == 0 {
            self.receive_eof(now);
        } else {
            self.commit(n, now);
        }
        Ok(n)
    }

    /// As [`Session::read_from`], for a reader that can append to a `Vec` (tokio's socket,
    /// decrypted bytes in memory): while a large content arrives, its bytes are read into
    /// the content's own piece without the zero-fill a lent slice needs
    /// ([`Connection::read_spare_from`]); everything else goes through `read_from`
    /// unchanged, after one check of the machine's state. Errors as for `read_from`, except
    /// that bytes read before a `WouldBlock` are taken in and `Ok`.
    pub fn read_spare_from<R: ReadSpare + ?Sized>(
        &mut self,
        reader: &mut R,
        now: Instant,
    ) -> io::Result<usize> {
        if !self.conn.reads_into_spare() {
            return self.read_from(reader, now);
        }
        let n = self.conn.read_spare_from(reader, now)?;
        if n == 0 {
            self.receive_eof(now);
        } else {
            self.first_byte_by = None;
            self.process(now);
        }
        Ok(n)
    }

    /// Fills `out` with the runs of bytes to send, in order; returns how many it filled.
    pub fn pending_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        self.conn.pending_slices(out)
    }

    /// Records that `n` bytes of [`Session::pending_slices`] were sent at `now`; answers
    /// held back by the output cap move on.
    pub fn consume(&mut self, n: usize, now: Instant) {
        self.start_rate_window(now);
        let before = self.conn.pending_len();
        self.conn.consume(n, now);
        self.note_sent(before.saturating_sub(self.conn.pending_len()));
        if n > 0 {
            self.process(now);
        }
    }

    /// Counts `n` bytes the peer took; once the last byte of a large answer is sent, its
    /// share of the budget is given back.
    fn note_sent(&mut self, n: usize) {
        self.sent = self.sent.saturating_add(n as u64);
        if self.large_left > 0 {
            self.large_left = self.large_left.saturating_sub(n);
            if self.large_left == 0 {
                self.budget
                    .release_large(std::mem::take(&mut self.large_held));
            }
        }
    }

    /// Writes pending bytes once to `writer` (vectored), and records what was sent.
    pub fn write_to<W: io::Write + ?Sized>(
        &mut self,
        writer: &mut W,
        now: Instant,
    ) -> io::Result<usize> {
        self.start_rate_window(now);
        let n = self.conn.write_to(writer, now)?;
        self.note_sent(n);
        if n > 0 {
            self.process(now);
        }
        Ok(n)
    }

    /// The instant the session must next be looked at ([`Session::handle_timeout`]), if
    /// any: the protocol machine's nearest deadline, the first-byte deadline, the end of
    /// the shutdown grace, the next look for room in a full memory budget, or the end of
    /// the window in which a peer with more than the output cap queued must take
    /// [`ServerConfig::min_send_rate`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        // Folded pairwise (a transport asks on every wake-up): the same minimum as
        // collecting the candidates and taking `min`, at half the instructions.
        let mut at = earliest(self.first_byte_by, self.release_at);
        at = earliest(at, self.grace_until);
        at = earliest(at, self.budget_retry);
        if let Some((start, _)) = self.rate_window {
            at = earliest(at, Some(start + self.config.send_rate_window));
        }
        if self.protocol_deadlines() {
            at = earliest(at, self.conn.poll_timeout());
        }
        at
    }

    /// Closes the connection if a deadline passed by `now` (calling early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        if self.grace_until.is_some_and(|end| end <= now) {
            self.abort(CloseReason::Shutdown);
            return;
        }
        self.start_rate_window(now);
        if self.check_send_rate(now) {
            return;
        }
        if self.release_at.is_some_and(|at| at <= now) {
            self.release_at = None;
            if self.is_idle() {
                self.release_idle_buffers(now);
            }
        }
        if self.budget_retry.is_some_and(|at| at <= now) {
            self.budget_retry = None;
            self.process(now);
            if self.is_closed() {
                return;
            }
        }
        let cfg = &self.config;
        let timeout = if self.protocol_deadlines() {
            self.conn.handle_timeout(now)
        } else {
            None
        };
        let reason = match timeout {
            // The machine's own deadlines first: the idle timeout when it is as short.
            None if self.first_byte_by.is_some_and(|at| at <= now) => {
                CloseReason::FirstByteDeadline(cfg.first_byte_deadline.unwrap_or_default())
            }
            None => return,
            Some(Timeout::Header) => {
                CloseReason::HeaderDeadline(cfg.header_deadline.unwrap_or_default())
            }
            Some(Timeout::Idle) => CloseReason::Idle(cfg.idle_timeout.unwrap_or_default()),
            Some(Timeout::Write) => {
                CloseReason::WriteDeadline(cfg.write_deadline.unwrap_or_default())
            }
        };
        self.abort(reason);
    }

    /// The server is stopping: take no more requests (a request not yet complete is
    /// dropped), send the answers owed within [`ServerConfig::shutdown_grace`], then
    /// close. A connection with nothing owed closes at once.
    pub fn begin_shutdown(&mut self, now: Instant) {
        if self.grace_until.is_some() || self.is_closed() {
            return;
        }
        self.grace_until = Some(now + self.config.shutdown_grace);
        self.drain(CloseReason::Shutdown);
        self.process(now);
    }

    /// Ends the connection at once for `reason` (a socket error, say), dropping what is
    /// pending. After a shutdown began, the reason stays [`CloseReason::Shutdown`]: the
    /// socket error was the server's own doing.
    pub fn abort(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        let reason = if self.grace_until.is_some() {
            CloseReason::Shutdown
        } else {
            reason
        };
        self.parked = None;
        if let Dispatch::HandOut(h) = &mut self.dispatch {
            h.forget();
        }
        self.state = SessionState::Closed(reason);
        self.conn.release_buffers();
        self.budget_retry = None;
        self.rate_window = None;
        self.rate_provisional = false;
        self.large_left = 0;
        self.budget
            .release_large(std::mem::take(&mut self.large_held));
        // Only what is still allocated stays charged, until the session is dropped.
        let real = self.conn.allocated();
        if real < self.charged {
            self.budget.release(self.charged - real);
            self.charged = real;
        }
    }

    /// `true` while the peer must keep up [`ServerConfig::min_send_rate`]: more than the
    /// output cap is queued, or a large answer is not sent yet.
    fn over_cap(&self) -> bool {
        self.large_left > 0 || self.conn.pending_len() > self.config.output_cap
    }

    /// Starts a send-rate window when output goes over the cap (provisionally at `now`:
    /// see [`Session::start_rate_window`]), ends it when output no longer is.
    fn watch_send_rate(&mut self, now: Instant) {
        if self.config.min_send_rate.is_some() && !self.is_closed() && self.over_cap() {
            if self.rate_window.is_none() {
                self.rate_window = Some((now, self.sent));
                self.rate_provisional = true;
            }
        } else {
            self.rate_window = None;
            self.rate_provisional = false;
        }
    }

    /// A provisional window start moves to `now`, an instant the transport hands in to
    /// send or to check deadlines: the peer's window starts when sending does. (Meanwhile
    /// [`Session::poll_timeout`] names the provisional end, which is only earlier.)
    fn start_rate_window(&mut self, now: Instant) {
        if self.rate_provisional {
            self.rate_provisional = false;
            self.rate_window = Some((now, self.sent));
        }
    }

    /// At the end of a send-rate window: closes the connection if the peer took less than
    /// [`ServerConfig::min_send_rate`] in it (`true`), else starts the next window.
    fn check_send_rate(&mut self, now: Instant) -> bool {
        let (Some((start, sent_then)), Some(min_rate)) =
            (self.rate_window, self.config.min_send_rate)
        else {
            return false;
        };
        if now < start + self.config.send_rate_window {
            return false;
        }
        let window = now.saturating_duration_since(start);
        let took = self.sent.saturating_sub(sent_then);
        // A window's worth, even if the check comes late (the loop was busy elsewhere).
        let need = u128::from(min_rate) * self.config.send_rate_window.as_millis() / 1000;
        if u128::from(took) < need {
            self.abort(CloseReason::SlowReader {
                took,
                window,
                min_rate,
            });
            return true;
        }
        self.rate_window = Some((now, self.sent));
        false
    }

    /// `true` if `answer` may be queued now: the queue is empty, or stays within the cap.
    fn fits(&self, answer: &Message) -> bool {
        let pending = self.conn.pending_len();
        let cap = self.config.output_cap;
        let most = answer
            .content_len()
            .saturating_add(2 + sockmsg_protocol::MAX_HEADER_LEN);
        if pending == 0 || pending.saturating_add(most) <= cap {
            return true;
        }
        // Near the cap: the exact size decides. An answer that cannot be encoded is
        // queued, to be refused (and the connection closed) by the machine.
        answer
            .encoded_len()
            .map_or(true, |size| pending.saturating_add(size) <= cap)
    }

    /// Takes requests and answers them until input, room under the cap or budget, or
    /// the connection's life runs out; then closes a drained connection, and frees the
    /// buffers of an idle one.
    fn process(&mut self, now: Instant) {
        loop {
            self.take_requests(now);
            self.close_if_drained();
            let before = self.admitted;
            self.account(now);
            // A part newly reserved may have bytes staged: decode on.
            if self.admitted == before || self.admitted.is_none() || self.is_closed() {
                break;
            }
        }
        if self.is_idle() && !self.is_closed() {
            self.idle_since.get_or_insert(now);
        } else {
            self.idle_since = None;
        }
        if self.release_at.is_none() && self.is_idle() {
            let held = self.conn.allocated();
            if held >= RELEASE_NOW_FROM && self.budget.used() > self.budget.limit() / 2 {
                // Idle with large buffers (pieces kept for the next large request) while
                // the server's budget is more than half taken: they go back now, for the
                // other connections' requests.
                self.release_idle_buffers(now);
            } else if held > 0 {
                // Idle: what the decoder and encoder hold goes back soon, unless a request
                // comes first (see `handle_timeout`).
                self.release_at = Some(now + RELEASE_DELAY);
            }
        }
        self.watch_send_rate(now);
    }

    /// Frees what an idle connection's decoder and encoder hold (kept pieces included)
    /// and gives it back to the budget.
    fn release_idle_buffers(&mut self, now: Instant) {
        self.conn.release_buffers();
        self.account(now);
    }

    /// Brings the budget up to date with what the connection holds and what its next
    /// read needs, reserving before any allocation: the part being received (in full,
    /// once its size is known) and the staging buffer. A large part that does not fit is
    /// refused ([`CloseReason::OverBudget`]); anything else waits for room (no reading
    /// meanwhile).
    fn account(&mut self, now: Instant) {
        let real = self.conn.allocated() + self.held();
        let taking = matches!(self.state, SessionState::Open | SessionState::Backpressured);
        let receiving = if taking { self.conn.receiving() } else { None };
        let key = receiving.map(|r| (r.start, r.announced));
        let promise = receiving.map_or(0, |r| r.to_allocate);
        let staging = if taking && self.conn.wants_read() {
            self.conn.read_alloc_need()
        } else {
            0
        };
        let desired = real.saturating_add(promise).saturating_add(staging);
        let granted = if desired <= self.charged {
            self.budget.release(self.charged - desired);
            self.charged = desired;
            true
        } else {
            let new_part = key != self.admitted;
            let new_large = new_part && promise > LARGE_MESSAGE;
            let limit = self.budget.limit();
            // Larger parts may not take the last eighth: it stays for small requests.
            let ceiling = if new_part && promise > SMALL_PART {
                limit - limit / 8
            } else {
                limit
            };
            if self.budget.try_charge(desired - self.charged, ceiling) {
                self.charged = desired;
                true
            } else {
                if real > self.charged {
                    // Allocated already (an answer, say): it is counted, whatever the room.
                    self.budget.charge(real - self.charged);
                    self.charged = real;
                }
                if new_large {
                    self.budget.note_refused();
                    let need = receiving.map_or(promise, |r| r.announced);
                    self.drain(CloseReason::OverBudget {
                        what: "request",
                        need,
                        budget: limit,
                    });
                    self.close_if_drained();
                    self.conn.set_alloc_allowance(0);
                    self.budget_retry = None;
                    self.account(now);
                    return;
                }
                false
            }
        };
        if granted {
            self.admitted = key;
            self.budget_retry = None;
        } else {
            self.budget_retry = Some(now + BUDGET_RETRY);
        }
        let allowance = if key.is_some() && key == self.admitted {
            promise
        } else {
            0
        };
        self.conn.set_alloc_allowance(allowance);
    }

    /// A draining connection with nothing more to send is closed.
    fn close_if_drained(&mut self) {
        if let SessionState::Draining(_) = self.state {
            if !self.conn.wants_write() && self.parked.is_none() && self.answers_owed() == 0 {
                if let SessionState::Draining(reason) =
                    std::mem::replace(&mut self.state, SessionState::Open)
                {
                    self.state = SessionState::Closed(reason);
                }
            }
        }
    }

    /// The request loop of [`Session::process`].
    fn take_requests(&mut self, now: Instant) {
        loop {
            if self.is_closed() {
                return;
            }
            if let Some(answer) = self.parked.take() {
                if !self.fits(&answer) {
                    self.parked = Some(answer);
                    if matches!(self.state, SessionState::Open) {
                        self.state = SessionState::Backpressured;
                    }
                    break;
                }
                self.queue(*answer, now);
                continue;
            }
            // One check on the sync path: the rest is out of line.
            if !matches!(self.dispatch, Dispatch::Call(_)) {
                match self.release_owed(now) {
                    Owing::Released => continue,
                    Owing::Full if !matches!(self.state, SessionState::Draining(_)) => {
                        self.state = SessionState::Backpressured;
                        break;
                    }
                    Owing::Full | Owing::Room => {}
                }
            }
            if matches!(self.state, SessionState::Draining(_)) {
                break;
            }
            if self.conn.pending_len() >= self.config.output_cap {
                // The machine holds its input too, and its header clock, until this drains.
                self.state = SessionState::Backpressured;
                break;
            }
            self.state = SessionState::Open;
            match self.conn.next_event() {
                Ok(Event::Message(request)) => {
                    self.requests += 1;
                    if let Dispatch::Call(service) = &self.dispatch {
                        match call_service(&**service, request) {
                            Ok(answer) => self.answer(answer, now),
                            Err(e) => self.drain(e.into()),
                        }
                    } else {
                        self.hand_out(request);
                    }
                }
                Ok(Event::NeedData) => break,
                Ok(Event::End) => self.drain(CloseReason::PeerClosed),
                Err(e) => self.drain(CloseReason::Protocol(e)),
            }
        }
    }

    /// Nothing in progress either way.
    #[inline]
    fn is_idle(&self) -> bool {
        !self.conn.wants_write()
            && !self.conn.message_in_progress()
            && self.parked.is_none()
            && self.answers_owed() == 0
    }

    /// Hands `request` out to the transport ([`Session::take_request`]): owed from now on.
    #[inline(never)]
    fn hand_out(&mut self, request: Message) {
        if let Dispatch::HandOut(h) = &mut self.dispatch {
            let id = RequestId(h.first + h.owed.len() as u64);
            let bytes = request.content_len();
            h.owed.push_back(Owed {
                bytes,
                answer: None,
            });
            h.bytes += bytes;
            h.ready.push_back((id, request));
        }
        if self.config.close_after_answer {
            self.drain(CloseReason::Answered);
        }
    }

    /// For a session that hands its requests out: queues the oldest owed answer if it
    /// has come back (answers go out in request order), else says whether another
    /// request may be handed out ([`ServerConfig::max_in_flight`]). A failed answer, or an
    /// answer refused before, ends the answers: as for a sync service, none is sent after
    /// it. Out of line: the sync path's loop stays as it was.
    #[inline(never)]
    fn release_owed(&mut self, now: Instant) -> Owing {
        let refused = self.answer_refused();
        let max = self.config.max_in_flight;
        let Dispatch::HandOut(h) = &mut self.dispatch else {
            return Owing::Room;
        };
        if refused {
            h.forget();
            return Owing::Room;
        }
        let room = if h.owed.len() < max {
            Owing::Room
        } else {
            Owing::Full
        };
        let Some(front) = h.owed.front_mut() else {
            return room;
        };
        let Some(answer) = front.answer.take() else {
            return room;
        };
        h.bytes -= front.bytes;
        h.owed.pop_front();
        h.first += 1;
        match answer {
            Ok(answer) => self.answer(answer, now),
            Err(e) => {
                h.forget();
                self.drain(e.into());
            }
        }
        Owing::Released
    }

    /// `true` once an answer was refused (over the message limit, not encodable, or over
    /// the memory budget): the connection closes for it after the answers before it.
    fn answer_refused(&self) -> bool {
        matches!(
            self.state,
            SessionState::Draining(
                CloseReason::AnswerTooLarge { .. }
                    | CloseReason::BadAnswer(_)
                    | CloseReason::OverBudget { what: "answer", .. }
            )
        )
    }

    /// Bytes held for requests handed out and answers waiting for earlier ones.
    #[inline]
    fn held(&self) -> usize {
        match &self.dispatch {
            Dispatch::HandOut(h) => h.bytes,
            Dispatch::Call(_) => 0,
        }
    }

    /// `false` while answers are owed and nothing waits to be sent: the protocol machine's
    /// idle and header deadlines then wait, since the peer is waiting for us (its write
    /// deadline runs only while output is pending, which this leaves on).
    #[inline]
    fn protocol_deadlines(&self) -> bool {
        self.answers_owed() == 0 || self.conn.wants_write()
    }

    /// Queues the service's `answer`, or parks it until the queue drains enough.
    #[inline(always)] // the sync path's, called for every request
    fn answer(&mut self, answer: Message, now: Instant) {
        if self.fits(&answer) {
            self.queue(answer, now);
        } else {
            self.parked = Some(Box::new(answer));
        }
        if self.config.close_after_answer {
            self.drain(CloseReason::Answered);
        }
    }

    fn queue(&mut self, answer: Message, now: Instant) {
        let size = answer.content_len();
        let large = size > self.config.output_cap;
        if large {
            // Larger than the output cap, so queued alone: only if the budget, and the
            // share of it large answers may hold, have room.
            let share = self.config.large_answer_share_of(self.budget.limit());
            match self.budget.try_charge_large(size, share) {
                Ok(()) => self.charged += size,
                Err(refusal) => {
                    self.budget.note_refused();
                    self.state = SessionState::Draining(match refusal {
                        LargeRefusal::Share => CloseReason::AnswerShareFull { need: size, share },
                        LargeRefusal::Budget => CloseReason::OverBudget {
                            what: "answer",
                            need: size,
                            budget: self.budget.limit(),
                        },
                    });
                    return;
                }
            }
        }
        let sent = self.conn.send(answer, now);
        if large {
            if sent.is_ok() {
                // Its buffer is freed once everything queued up to its end is sent.
                self.large_held += size;
                self.large_left = self.conn.pending_len();
            } else {
                // (What it took of the budget follows the buffers: `account`.)
                self.budget.release_large(size);
            }
        }
        if let Err(e) = sent {
            self.parked = None;
            let reason = match e {
                LocalError::ContentOverLimit { size, max } => CloseReason::AnswerTooLarge {
                    len: size,
                    limit: max,
                },
                e => CloseReason::BadAnswer(e),
            };
            // Whatever was owed before is still sent; this closes in its place.
            self.state = SessionState::Draining(reason);
        }
    }

    /// No more requests: close for `reason` once the answers owed are sent.
    fn drain(&mut self, reason: CloseReason) {
        if matches!(self.state, SessionState::Open | SessionState::Backpressured) {
            self.state = SessionState::Draining(reason);
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
