//! [`TlsConnection`]: rustls's machine and sockmsg's machine, composed, still without I/O.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use sockmsg_protocol::{Connection, Event, LocalError, Message, Timeout};

use crate::error::TlsError;
use crate::identity::PeerIdentity;

/// How long a TLS handshake may take by default: 10 s, from the moment the connection is
/// made (accepted or connected) to the handshake's completion. A peer that stalls costs no
/// more than that, as a silent plaintext peer costs no more than the header deadline.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many of the peer's first bytes are kept, to say what a non-TLS peer sent.
const FIRST_BYTES: usize = 16;

/// How many slices of pending sockmsg output are handed to rustls at once.
const SLICES: usize = 16;

/// Which deadline finished a [`TlsConnection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsTimeout {
    /// The handshake did not complete in time ([`TlsConnection::with_handshake_timeout`]).
    Handshake,
    /// One of the sockmsg machine's deadlines ([`sockmsg_protocol::Deadlines`]); the write
    /// deadline also covers TLS records waiting to be sent.
    Protocol(Timeout),
    /// Another deadline of the plaintext side (a server session's shutdown grace).
    Inner,
}

impl TlsTimeout {
    /// A short stable name (`"tls-handshake-deadline"`, or the sockmsg deadline's name).
    pub fn as_str(self) -> &'static str {
        match self {
            TlsTimeout::Handshake => "tls-handshake-deadline",
            TlsTimeout::Protocol(t) => t.as_str(),
            TlsTimeout::Inner => "deadline",
        }
    }
}

impl std::fmt::Display for TlsTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The plaintext side of a TLS composition: what rustls's decrypted bytes go into and
/// what it encrypts. The sockmsg [`Connection`] is one; a server layer's per-connection
/// session that owns a `Connection` (and answers requests as they complete) is another.
/// Every method mirrors the `Connection` method of the same name.
pub trait Plaintext {
    /// A slice to receive decrypted bytes into.
    fn read_buf(&mut self) -> &mut [u8];
    /// `n` bytes arrived in the last slice lent, at `now`.
    fn commit(&mut self, n: usize, now: Instant);
    /// The peer's stream ended (cleanly, as far as TLS is concerned).
    fn receive_eof(&mut self, now: Instant);
    /// The bytes to encrypt, in order.
    fn pending_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize;
    /// The first `n` pending bytes were taken at `now`.
    fn consume(&mut self, n: usize, now: Instant);
    /// `true` while it takes input.
    fn wants_read(&self) -> bool;
    /// `true` while it has bytes to send.
    fn wants_write(&self) -> bool;
    /// `true` once it will send nothing more and everything was taken: time for
    /// `close_notify`.
    fn wants_shutdown(&self) -> bool;
    /// Its earliest deadline.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Checks its deadlines at `now`; `true` if one passed and it is finished.
    fn handle_timeout(&mut self, now: Instant) -> bool;
    /// The sockmsg machine inside (a message in progress, the write deadline...).
    fn connection(&self) -> &Connection;
    /// The handshake completed; `peer` is who the peer proved to be, if it presented a
    /// certificate. Called once, before any plaintext arrives. Default: nothing.
    fn handshake_done(&mut self, peer: Option<&PeerIdentity>) {
        let _ = peer;
    }
}

impl Plaintext for Connection {
    fn read_buf(&mut self) -> &mut [u8] {
        Connection::read_buf(self)
    }

    fn commit(&mut self, n: usize, now: Instant) {
        // More than lent cannot happen (rustls writes into the slice it was given); after
        // the end of stream nothing is read.
        let _ = Connection::commit(self, n, now);
    }

    fn receive_eof(&mut self, _now: Instant) {
        Connection::receive_eof(self);
    }

    fn pending_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        Connection::pending_slices(self, out)
    }

    fn consume(&mut self, n: usize, now: Instant) {
        Connection::consume(self, n, now);
    }

    fn wants_read(&self) -> bool {
        Connection::wants_read(self)
    }

    fn wants_write(&self) -> bool {
        Connection::wants_write(self)
    }

    fn wants_shutdown(&self) -> bool {
        Connection::wants_shutdown(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Connection::poll_timeout(self)
    }

    fn handle_timeout(&mut self, now: Instant) -> bool {
        Connection::handle_timeout(self, now).is_some()
    }

    fn connection(&self) -> &Connection {
        self
    }
}

/// A sockmsg [`Connection`] over TLS: the composition with messages in and out through
/// [`Tls::send`] and [`Tls::next_event`].
pub type TlsConnection = Tls<Connection>;

/// One side of a sockmsg connection over TLS: a rustls connection between the socket and
/// the plaintext side `P` (a sockmsg [`Connection`], see [`TlsConnection`], or a server
/// session: [`Plaintext`]), neither aware of the other, and no I/O of its own.
///
/// * **One way in**: [`TlsConnection::read_tls`] reads ciphertext once from any
///   `io::Read` (a socket, or `&mut &[u8]` for bytes in hand), lets rustls process it and
///   moves the plaintext into the sockmsg machine through its one way in
///   (`read_buf`/`commit`). Then [`TlsConnection::next_event`] hands out messages, or the
///   error that ended the connection ([`TlsError`]: plaintext peer, failed handshake,
///   truncation, protocol error).
/// * **One way out**: [`TlsConnection::send`] queues a message;
///   [`TlsConnection::write_tls`] moves the sockmsg machine's pending bytes into rustls
///   (at most rustls's 64 KiB buffer at a time, so backpressure reaches the sockmsg machine
///   and its write deadline) and writes TLS records once to any `io::Write`.
/// * **Wishes**, derived from both machines as rustls's mio example derives interest:
///   wait for readability while [`TlsConnection::wants_read`], for writability while
///   [`TlsConnection::wants_write`]; close the socket when neither holds. Sleep no later
///   than [`TlsConnection::poll_timeout`] and call [`TlsConnection::handle_timeout`]; the
///   handshake deadline is one of those timers.
///
/// Closing: [`TlsConnection::close`] ends the sockmsg side; once everything queued is
/// encrypted a TLS `close_notify` follows, and [`TlsConnection::wants_shutdown`] says when
/// it is sent. The peer's end of stream is clean when it sent `close_notify`, or when it
/// closed between two messages (as Python's `ssl` sockets do on `close()`); ending in the
/// middle of a message without `close_notify` is [`TlsError::Truncated`].
#[derive(Debug)]
pub struct Tls<P> {
    tls: rustls::Connection,
    conn: P,
    server_name: Option<String>,
    started: Instant,
    now: Instant,
    handshake_timeout: Option<Duration>,
    handshaking: bool,
    identity: Option<PeerIdentity>,
    first: Vec<u8>,
    /// The socket reported end of stream.
    eof: bool,
    /// The peer sent `close_notify`.
    close_notify_received: bool,
    /// The end of stream was passed on to the sockmsg machine.
    eof_delivered: bool,
    close_notify_sent: bool,
    /// rustls holds decrypted bytes the sockmsg machine did not take yet.
    plaintext_held: bool,
    error: Option<TlsError>,
    timed_out: Option<TlsTimeout>,
    /// Last progress writing TLS records (or when they became pending).
    tls_write_progress: Instant,
}

impl<P: Plaintext> Tls<P> {
    /// The server side of a connection accepted at `now`, speaking through `conn` (a
    /// [`sockmsg_protocol::Role::Server`] machine with its limits and deadlines).
    pub fn server(
        config: Arc<rustls::ServerConfig>,
        conn: P,
        now: Instant,
    ) -> Result<Tls<P>, TlsError> {
        let tls = rustls::ServerConnection::new(config).map_err(|e| TlsError::Tls {
            reason: e.to_string(),
        })?;
        Ok(Tls::new(tls.into(), conn, None, now))
    }

    /// The client side of a connection made at `now` to the server named `server_name` (a
    /// DNS name, or an IP address, checked against the server's certificate).
    pub fn client(
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
        conn: P,
        now: Instant,
    ) -> Result<Tls<P>, TlsError> {
        let name = ServerName::try_from(server_name.to_owned()).map_err(|e| TlsError::Tls {
            reason: format!("invalid server name {server_name:?}: {e}"),
        })?;
        let tls = rustls::ClientConnection::new(config, name).map_err(|e| TlsError::Tls {
            reason: e.to_string(),
        })?;
        Ok(Tls::new(
            tls.into(),
            conn,
            Some(server_name.to_owned()),
            now,
        ))
    }

    fn new(tls: rustls::Connection, conn: P, server_name: Option<String>, now: Instant) -> Tls<P> {
        Tls {
            tls,
            conn,
            server_name,
            started: now,
            now,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            handshaking: true,
            identity: None,
            first: Vec::new(),
            eof: false,
            close_notify_received: false,
            eof_delivered: false,
            close_notify_sent: false,
            plaintext_held: false,
            error: None,
            timed_out: None,
            tls_write_progress: now,
        }
    }

    /// The same connection with another handshake deadline (`None`: never; default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`]), counted from when the connection was made.
    pub fn with_handshake_timeout(mut self, timeout: Option<Duration>) -> Tls<P> {
        self.handshake_timeout = timeout;
        self
    }

    fn tick(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    fn fail(&mut self, error: TlsError) {
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    // ---- one way in ----

    /// Reads ciphertext once from `reader` at `now`, processes it, and moves the plaintext
    /// into the sockmsg machine. `Ok(0)` is the end of the stream. I/O errors
    /// (`WouldBlock` included) are returned untouched; what the bytes meant, a TLS failure
    /// included, comes out of [`TlsConnection::next_event`].
    pub fn read_tls<R: Read + ?Sized>(
        &mut self,
        reader: &mut R,
        now: Instant,
    ) -> io::Result<usize> {
        self.tick(now);
        let n = {
            let mut tee = Tee {
                inner: reader,
                first: &mut self.first,
            };
            self.tls.read_tls(&mut tee)?
        };
        if n == 0 {
            self.eof = true;
        }
        self.process(now);
        Ok(n)
    }

    fn process(&mut self, now: Instant) {
        if self.error.is_some() {
            return;
        }
        match self.tls.process_new_packets() {
            Err(e) => {
                let error = TlsError::from_rustls(
                    &e,
                    self.handshaking,
                    &self.first,
                    self.server_name.as_deref(),
                );
                self.fail(error);
                return;
            }
            Ok(state) => {
                if state.peer_has_closed() {
                    self.close_notify_received = true;
                }
            }
        }
        if self.handshaking && !self.tls.is_handshaking() {
            self.handshaking = false;
            self.identity = self
                .tls
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| PeerIdentity::from_der(cert));
            self.conn.handshake_done(self.identity.as_ref());
        }
        self.drain_plaintext(now);
        self.deliver_eof();
    }

    /// Moves decrypted bytes into the sockmsg machine while it takes input.
    fn drain_plaintext(&mut self, now: Instant) {
        if self.handshaking {
            return;
        }
        loop {
            if !self.conn.wants_read() {
                // The machine holds input back (output at its cap, or it is finished):
                // whatever rustls decrypted stays there, and rustls stops wanting to read.
                self.plaintext_held = true;
                return;
            }
            let buf = self.conn.read_buf();
            match self.tls.reader().read(buf) {
                Ok(0) => break,
                Ok(n) => self.conn.commit(n, now),
                Err(_) => break, // WouldBlock: all taken; UnexpectedEof: see deliver_eof
            }
        }
        self.plaintext_held = false;
    }

    /// Passes the end of the stream on, once the plaintext before it was taken.
    fn deliver_eof(&mut self) {
        if self.eof_delivered || self.error.is_some() || self.plaintext_held {
            return;
        }
        if !(self.eof || self.close_notify_received) {
            return;
        }
        if self.handshaking {
            self.fail(TlsError::ClosedDuringHandshake);
        } else if !self.close_notify_received && self.conn.connection().message_in_progress() {
            self.fail(TlsError::Truncated);
        } else {
            self.conn.receive_eof(self.now);
        }
        self.eof_delivered = true;
    }

    // ---- one way out ----

    /// Moves pending sockmsg bytes into rustls (after the handshake), adds `close_notify`
    /// when the sockmsg side is closed and drained, then writes TLS records once to
    /// `writer`. Returns what `writer` accepted; its errors (`WouldBlock` included) are the
    /// caller's.
    pub fn write_tls<W: Write + ?Sized>(
        &mut self,
        writer: &mut W,
        now: Instant,
    ) -> io::Result<usize> {
        self.tick(now);
        self.encrypt_pending(now);
        if self.plaintext_held && self.conn.wants_read() {
            // Output moved below the inner machine's cap: it takes input again.
            self.drain_plaintext(now);
            self.deliver_eof();
        }
        let n = self.tls.write_tls(&mut WriteAdapter(writer))?;
        if n > 0 {
            self.tls_write_progress = now;
        }
        Ok(n)
    }

    fn encrypt_pending(&mut self, now: Instant) {
        if self.handshaking || self.error.is_some() || self.timed_out.is_some() {
            return;
        }
        let was_idle = !self.tls.wants_write();
        while self.conn.wants_write() {
            let mut slices = [IoSlice::new(&[]); SLICES];
            let k = self.conn.pending_slices(&mut slices);
            let n = self
                .tls
                .writer()
                .write_vectored(slices.get(..k).unwrap_or_default())
                .unwrap_or(0);
            if n == 0 {
                break; // rustls's buffer is full: the rest waits in the sockmsg machine
            }
            self.conn.consume(n, now);
        }
        if self.conn.wants_shutdown() && !self.close_notify_sent {
            self.tls.send_close_notify();
            self.close_notify_sent = true;
        }
        if was_idle && self.tls.wants_write() {
            self.tls_write_progress = now;
        }
    }

    // ---- what the composition wants ----

    /// `true` while reading the socket can produce anything: rustls wants records (it holds
    /// no unread plaintext and no `close_notify` came) and, after the handshake, the sockmsg
    /// machine wants input.
    pub fn wants_read(&self) -> bool {
        self.error.is_none()
            && self.timed_out.is_none()
            && !self.eof
            && self.tls.wants_read()
            && (self.handshaking || self.conn.wants_read())
    }

    /// `true` while there is something to write: TLS records (handshake, alerts, data), or,
    /// after the handshake, sockmsg bytes to encrypt or a `close_notify` to send. After a
    /// failure only the alert rustls queued is still written, so the peer learns why.
    pub fn wants_write(&self) -> bool {
        if self.timed_out.is_some() {
            return false;
        }
        if self.tls.wants_write() {
            return true;
        }
        self.error.is_none()
            && !self.handshaking
            && (self.conn.wants_write() || (self.conn.wants_shutdown() && !self.close_notify_sent))
    }

    /// `true` once [`TlsConnection::close`] was called, everything queued was sent and
    /// the `close_notify` went out: time to shut down the socket's write side.
    pub fn wants_shutdown(&self) -> bool {
        self.close_notify_sent && !self.tls.wants_write()
    }

    /// The earliest instant at which [`TlsConnection::handle_timeout`] must be called: the
    /// handshake deadline while handshaking, the write deadline while TLS records wait, and
    /// the sockmsg machine's own deadlines.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.timed_out.is_some() || self.error.is_some() {
            return None;
        }
        self.deadline()
    }

    fn deadline(&self) -> Option<Instant> {
        let handshake = match (self.handshaking, self.handshake_timeout) {
            (true, Some(limit)) => Some(self.started + limit),
            _ => None,
        };
        let write = match (
            self.tls.wants_write(),
            self.conn.connection().deadlines().write,
        ) {
            (true, Some(limit)) => Some(self.tls_write_progress + limit),
            _ => None,
        };
        [self.conn.poll_timeout(), handshake, write]
            .into_iter()
            .flatten()
            .min()
    }

    /// Checks the deadlines at `now`. `Some(t)`: deadline `t` passed and the connection is
    /// finished (it wants neither reading nor writing); a passed handshake deadline is also
    /// [`TlsError::HandshakeTimeout`] from [`TlsConnection::next_event`]. `None`: nothing
    /// passed.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<TlsTimeout> {
        self.tick(now);
        if self.timed_out.is_some() || self.error.is_some() {
            return None;
        }
        let handshake_over = match (self.handshaking, self.handshake_timeout) {
            (true, Some(limit)) => self.started + limit <= now,
            _ => false,
        };
        let write_stalled = match (
            self.tls.wants_write(),
            self.conn.connection().deadlines().write,
        ) {
            (true, Some(limit)) => self.tls_write_progress + limit <= now,
            _ => false,
        };
        let passed = if handshake_over {
            Some(TlsTimeout::Handshake)
        } else if write_stalled {
            Some(TlsTimeout::Protocol(Timeout::Write))
        } else {
            self.conn.handle_timeout(now).then(|| {
                self.conn
                    .connection()
                    .timed_out()
                    .map_or(TlsTimeout::Inner, TlsTimeout::Protocol)
            })
        };
        if let Some(t) = passed {
            self.timed_out = Some(t);
            if t == TlsTimeout::Handshake {
                self.error = Some(TlsError::HandshakeTimeout {
                    after: self.handshake_timeout.unwrap_or_default(),
                });
            }
        } else if self.plaintext_held && self.conn.wants_read() {
            // The plaintext side takes input again after a deadline of its own (a server
            // session that waited for room in the memory budget): move what rustls held
            // back, which nothing else would (rustls wants no records while it holds it).
            self.drain_plaintext(now);
            self.deliver_eof();
        }
        passed
    }

    /// The deadline that finished this connection, if one did.
    pub fn timed_out(&self) -> Option<TlsTimeout> {
        self.timed_out
    }

    // ---- what is known ----

    /// `true` until the handshake completes.
    pub fn is_handshaking(&self) -> bool {
        self.handshaking
    }

    /// The error that ended the connection, if one did (the one
    /// [`TlsConnection::next_event`] reports).
    pub fn error(&self) -> Option<&TlsError> {
        self.error.as_ref()
    }

    /// Who the peer is, from its verified certificate, once the handshake is complete: the
    /// server for a client; the client for a server that requires client certificates.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_ref()
    }

    /// Whether the handshake was full or resumed (`None` until it completes).
    pub fn handshake_kind(&self) -> Option<rustls::HandshakeKind> {
        self.tls.handshake_kind()
    }

    /// The TLS version negotiated (`None` until known).
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.tls.protocol_version()
    }

    /// The ALPN protocol agreed on, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.tls.alpn_protocol()
    }

    /// The sockmsg machine, to inspect (messages owed, limits, deadlines...). Bytes go in
    /// and out only through this composition.
    pub fn connection(&self) -> &Connection {
        self.conn.connection()
    }

    /// The plaintext side.
    pub fn inner(&self) -> &P {
        &self.conn
    }

    /// The plaintext side, to act on it (a server session's shutdown, say). Its bytes go
    /// in and out only through this composition: reading from or writing to it directly
    /// would bypass TLS.
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.conn
    }
}

/// Messages in and out, for a plain sockmsg [`Connection`] inside.
impl Tls<Connection> {
    /// The next event: a message, [`Event::NeedData`], or [`Event::End`] after a clean end
    /// of stream. A TLS failure (plaintext peer, failed handshake, truncation) or a sockmsg
    /// protocol error is reported again on every later call.
    pub fn next_event(&mut self) -> Result<Event, TlsError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let event = self.conn.next_event()?;
        if event == Event::NeedData && self.plaintext_held && self.conn.wants_read() {
            // The machine takes input again: move what rustls held back, then look again.
            let now = self.now;
            self.drain_plaintext(now);
            self.deliver_eof();
            if let Some(e) = &self.error {
                return Err(e.clone());
            }
            return Ok(self.conn.next_event()?);
        }
        Ok(event)
    }

    /// Queues a message at `now` (see [`Connection::send`]). Before the handshake completes
    /// it waits in the sockmsg machine.
    pub fn send(&mut self, message: Message, now: Instant) -> Result<(), LocalError> {
        self.tick(now);
        self.conn.send(message, now)
    }

    /// No more messages will be sent; `close_notify` follows the last one.
    pub fn close(&mut self) {
        self.conn.close();
    }

    /// Frees the sockmsg machine's empty buffers (see [`Connection::release_buffers`]), so
    /// an idle connection holds only what rustls keeps.
    pub fn release_buffers(&mut self) {
        self.conn.release_buffers();
    }

    /// Messages owed by the other side (see [`Connection::in_flight`]).
    pub fn in_flight(&self) -> u64 {
        self.conn.in_flight()
    }
}

/// Keeps the first bytes read, to describe a peer that does not speak TLS.
struct Tee<'a, R: ?Sized> {
    inner: &'a mut R,
    first: &'a mut Vec<u8>,
}

impl<R: Read + ?Sized> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let room = FIRST_BYTES.saturating_sub(self.first.len());
        if room > 0 {
            self.first
                .extend_from_slice(buf.get(..n.min(room)).unwrap_or_default());
        }
        Ok(n)
    }
}

/// `rustls` takes `&mut dyn Write`; this lets callers pass unsized writers too.
struct WriteAdapter<'a, W: ?Sized>(&'a mut W);

impl<W: Write + ?Sized> Write for WriteAdapter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
