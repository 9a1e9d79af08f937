//! One connection's server policy, with no socket: the machine a transport drives.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockmsg_protocol::{Connection, Deadlines, Event, LocalError, Message, Role, Timeout};

use crate::close::CloseReason;
use crate::config::ServerConfig;
use crate::service::{call_service, Service};

/// Bytes the session lends for one read outside large content: enough for a burst of
/// pipelined requests; content of at least this size is received in place.
const READ_BUF: usize = 4 * 1024;

/// How long a connection keeps its buffers once idle. Freeing them at once would allocate
/// (and zero) the read buffer again for every request of a keep-alive connection; an idle
/// connection holds no buffer after this.
const RELEASE_DELAY: Duration = Duration::from_millis(100);

/// Where a [`Session`] stands: the state of one server connection.
#[derive(Debug)]
pub enum SessionState {
    /// Taking requests: the socket should be read.
    Open,
    /// The answers queued reached [`ServerConfig::output_cap`]: no request is taken (and
    /// the socket is not read) until they drain.
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
    service: Arc<dyn Service>,
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
    /// machine, which keeps them.
    pub fn new(service: Arc<dyn Service>, config: Arc<ServerConfig>, now: Instant) -> Session {
        let deadlines = Deadlines {
            header: config.header_deadline,
            idle: config.idle_timeout,
            write: config.write_deadline,
        };
        let conn = Connection::new(Role::Server, config.limits.clone())
            .with_deadlines(deadlines, now)
            .with_output_cap(config.output_cap)
            .with_read_buf_size(READ_BUF);
        Session {
            conn,
            service,
            config,
            state: SessionState::Open,
            parked: None,
            grace_until: None,
            requests: 0,
            release_at: None,
        }
    }

    /// Where the session stands.
    pub fn state(&self) -> &SessionState {
        &self.state
    }

    /// Why the connection is over, once it is: close the socket.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        match &self.state {
            SessionState::Closed(reason) => Some(reason),
            _ => None,
        }
    }

    /// `true` once the connection is over ([`Session::close_reason`] is `Some`).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, SessionState::Closed(_))
    }

    /// `true` while the socket should be read: requests are taken, and the protocol
    /// machine wants input (no end of stream, no error, output under the cap).
    pub fn wants_read(&self) -> bool {
        matches!(self.state, SessionState::Open) && self.conn.wants_read()
    }

    /// `true` while answers wait to be sent.
    pub fn wants_write(&self) -> bool {
        !self.is_closed() && self.conn.wants_write()
    }

    /// Requests handed to the service so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The configuration it runs under.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The protocol machine, to inspect (bytes pending, requests in flight...).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// A slice to read into; say how much arrived with [`Session::commit`].
    pub fn read_buf(&mut self) -> &mut [u8] {
        self.conn.read_buf()
    }

    /// Records that `n` bytes were read into [`Session::read_buf`] at `now`, and answers
    /// every request they complete (within the output cap).
    pub fn commit(&mut self, n: usize, now: Instant) {
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
        let n = reader.read(self.conn.read_buf())?;
        if n == 0 {
            self.receive_eof(now);
        } else {
            self.commit(n, now);
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
        self.conn.consume(n, now);
        if n > 0 {
            self.process(now);
        }
    }

    /// Writes pending bytes once to `writer` (vectored), and records what was sent.
    pub fn write_to<W: io::Write + ?Sized>(
        &mut self,
        writer: &mut W,
        now: Instant,
    ) -> io::Result<usize> {
        let n = self.conn.write_to(writer, now)?;
        if n > 0 {
            self.process(now);
        }
        Ok(n)
    }

    /// The instant the session must next be looked at ([`Session::handle_timeout`]), if
    /// any: the protocol machine's nearest deadline, or the end of the shutdown grace.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        [self.conn.poll_timeout(), self.grace_until, self.release_at]
            .into_iter()
            .flatten()
            .min()
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
        if self.release_at.is_some_and(|at| at <= now) {
            self.release_at = None;
            if self.is_idle() {
                self.conn.release_buffers();
            }
        }
        let cfg = &self.config;
        let reason = match self.conn.handle_timeout(now) {
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
        self.state = SessionState::Closed(reason);
        self.conn.release_buffers();
    }

    /// `true` if `answer` may be queued now: the queue is empty, or stays within the cap.
    fn fits(&self, answer: &Message) -> bool {
        let pending = self.conn.pending_len();
        let cap = self.config.output_cap;
        let most = answer
            .content()
            .len()
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

    /// Takes requests and answers them until input, room under the cap or the
    /// connection's life runs out; then closes a drained connection, and frees the
    /// buffers of an idle one.
    fn process(&mut self, now: Instant) {
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
                    match call_service(&*self.service, request) {
                        Ok(answer) => self.answer(answer, now),
                        Err(e) => self.drain(e.into()),
                    }
                }
                Ok(Event::NeedData) => break,
                Ok(Event::End) => self.drain(CloseReason::PeerClosed),
                Err(e) => self.drain(CloseReason::Protocol(e)),
            }
        }
        if let SessionState::Draining(_) = self.state {
            if !self.conn.wants_write() && self.parked.is_none() {
                if let SessionState::Draining(reason) =
                    std::mem::replace(&mut self.state, SessionState::Open)
                {
                    self.state = SessionState::Closed(reason);
                }
            }
        }
        if self.release_at.is_none() && self.is_idle() && self.conn.allocated() > 0 {
            // Idle: what the decoder and encoder hold goes back soon, unless a request
            // comes first (see `handle_timeout`).
            self.release_at = Some(now + RELEASE_DELAY);
        }
    }

    /// Nothing in progress either way.
    fn is_idle(&self) -> bool {
        !self.conn.wants_write() && !self.conn.message_in_progress() && self.parked.is_none()
    }

    /// Queues the service's `answer`, or parks it until the queue drains enough.
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
        if let Err(e) = self.conn.send(answer, now) {
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
