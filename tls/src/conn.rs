//! [`TlsConnection`]: rustls's machine and sockmsg's machine, composed, still without I/O.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, WriteTraffic};
use sockmsg_protocol::{Connection, Event, LocalError, Message, Timeout};
use sockmsg_server::{BudgetCharge, MemoryBudget};

use crate::error::TlsError;
use crate::identity::PeerIdentity;

/// How long a TLS handshake may take by default: 10 s, from the moment the connection is
/// made (accepted or connected) to the handshake's completion. A peer that stalls costs no
/// more than that, as a silent plaintext peer costs no more than the header deadline.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many of the peer's first bytes are kept, to say what a non-TLS peer sent.
const FIRST_BYTES: usize = 16;

/// How many slices of pending sockmsg output are looked at at once.
const SLICES: usize = 16;

/// Room for a read of ciphertext while no record is in progress.
const READ_MIN: usize = 4 * 1024;

/// Room for a read of ciphertext while a record is in progress: a whole TLS record (16 KiB
/// of plaintext and the record's overhead) fits.
const READ_SIZE: usize = 18 * 1024;

/// Most ciphertext held unprocessed: a handshake message may take 64 KiB (rustls's limit)
/// over several records, and one more record after it.
const MAX_INCOMING: usize = 96 * 1024;

/// Most TLS records waiting to be written: beyond, the plaintext waits in the sockmsg
/// machine (its output cap and write deadline apply).
const OUTGOING_LIMIT: usize = 64 * 1024;

/// Small pieces of output (a header and a short content) are gathered up to this size, so
/// they go out as one record.
const GATHER: usize = 4 * 1024;

/// Plaintext per TLS record.
const MAX_FRAGMENT: usize = 16 * 1024;

/// A record's overhead (header, content type, AEAD tag and explicit nonce), rounded up.
const RECORD_OVERHEAD: usize = 64;

/// How long after its last read or write a connection frees its empty ciphertext buffers
/// (as a server session frees its own): not at once, so that a busy connection does not
/// allocate them again for every message.
pub const RELEASE_DELAY: Duration = Duration::from_millis(100);

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
    /// Takes decrypted bytes from the front of `input` at `now`, advancing it past them
    /// (none only if it takes no input). Default: copied into [`Plaintext::read_buf`] and
    /// committed; the sockmsg machines append a large content's bytes to its pieces
    /// instead, without the zero-fill a lent slice needs.
    fn receive(&mut self, input: &mut &[u8], now: Instant) {
        let buf = self.read_buf();
        let n = buf.len().min(input.len());
        let (bytes, rest) = input.split_at(n);
        if let Some(dst) = buf.get_mut(..n) {
            dst.copy_from_slice(bytes);
        }
        self.commit(n, now);
        *input = rest;
    }
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
    /// The composition's ciphertext buffers are charged to a memory budget (a server's:
    /// [`crate::TlsSession`]) and it had no room for one to grow to `need` bytes: the
    /// connection is over, its buffers freed, nothing more read or written (not even
    /// `close_notify`). `budget` is the budget's limit. Default: nothing (the composition
    /// stops by itself).
    fn over_budget(&mut self, need: usize, budget: usize) {
        let _ = (need, budget);
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

    fn receive(&mut self, input: &mut &[u8], now: Instant) {
        // After the end of stream nothing is read (nothing is taken).
        let _ = Connection::receive(self, input, now);
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
///   [`TlsConnection::write_tls`] encrypts the sockmsg machine's pending bytes (at most
///   64 KiB of records waiting at a time, so backpressure reaches the sockmsg machine and
///   its write deadline) and writes TLS records once to any `io::Write`.
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
///
/// **Memory.** rustls runs unbuffered (`rustls::server::UnbufferedServerConnection`): the
/// ciphertext buffers are this composition's own, sized to the traffic, and an idle
/// connection holds none of them, only rustls's keys and state: they are freed
/// [`RELEASE_DELAY`] after the last read or write (in [`TlsConnection::handle_timeout`]), or
/// by [`TlsConnection::release_buffers`]. A server's connection ([`crate::TlsSession`])
/// charges those buffers to the server's [`MemoryBudget`] before they grow, and gives the
/// charge back as they are freed ([`Tls::buffers_charged`]); one that finds no room is
/// closed ([`Plaintext::over_budget`]).
pub struct Tls<P> {
    tls: Machine,
    conn: P,
    server_name: Option<String>,
    started: Instant,
    now: Instant,
    handshake_timeout: Option<Duration>,
    handshaking: bool,
    identity: Option<PeerIdentity>,
    first: Vec<u8>,
    /// Ciphertext received, not yet processed: `incoming[..received]`.
    incoming: Vec<u8>,
    received: usize,
    /// TLS records to send.
    outgoing: Records,
    /// Decrypted bytes the plaintext side did not take yet: `held[held_from..]`.
    held: Vec<u8>,
    held_from: usize,
    /// The socket reported end of stream.
    eof: bool,
    /// The peer sent `close_notify`.
    close_notify_received: bool,
    /// The end of stream was passed on to the sockmsg machine.
    eof_delivered: bool,
    close_notify_sent: bool,
    /// rustls's machine is stopped (it failed, and its alert is queued).
    finished: bool,
    /// rustls failed and queued an alert, not yet taken.
    alert_owed: bool,
    error: Option<TlsError>,
    timed_out: Option<TlsTimeout>,
    /// Last progress writing TLS records (or when they became pending).
    tls_write_progress: Instant,
    /// Last ciphertext read or written: empty buffers are freed [`RELEASE_DELAY`] after.
    last_io: Instant,
    /// What `incoming`, `outgoing` and `held` hold, charged to a server's memory budget.
    charge: Option<BudgetCharge>,
}

impl<P: fmt::Debug> fmt::Debug for Tls<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("side", &self.tls.side())
            .field("conn", &self.conn)
            .field("server_name", &self.server_name)
            .field("handshaking", &self.handshaking)
            .field("identity", &self.identity)
            .field("received", &self.received)
            .field("to_send", &self.outgoing.pending().len())
            .field("held", &(self.held.len() - self.held_from))
            .field(
                "buffers",
                &(self.incoming.capacity() + self.outgoing.buf.capacity() + self.held.capacity()),
            )
            .field("eof", &self.eof)
            .field("close_notify_received", &self.close_notify_received)
            .field("close_notify_sent", &self.close_notify_sent)
            .field("error", &self.error)
            .field("timed_out", &self.timed_out)
            .field(
                "charged",
                &self.charge.as_ref().map_or(0, BudgetCharge::bytes),
            )
            .finish_non_exhaustive()
    }
}

/// rustls's machine, without buffers of its own.
enum Machine {
    Client(UnbufferedClientConnection),
    Server(UnbufferedServerConnection),
}

impl Machine {
    fn common(&self) -> &rustls::CommonState {
        match self {
            Machine::Client(c) => c,
            Machine::Server(s) => s,
        }
    }

    fn side(&self) -> &'static str {
        match self {
            Machine::Client(_) => "client",
            Machine::Server(_) => "server",
        }
    }
}

/// What one state of rustls's machine asks for next.
enum Step {
    /// Ask rustls again.
    Again,
    /// Nothing more until more ciphertext arrives or more plaintext is to be sent.
    Idle,
    /// rustls failed.
    Failed(rustls::Error),
    /// The memory budget had no room for a buffer to grow to this many bytes.
    OverBudget(usize),
}

/// Why [`Records::append`] appended nothing.
enum AppendError {
    /// The writer failed.
    Failed,
    /// The memory budget had no room for the buffer to grow to this many bytes.
    OverBudget(usize),
}

/// Makes `buf` `len` bytes long (new bytes zeroed), first charging the growth of its
/// allocation to `charge`, if any: `Err(len)`, `buf` untouched, if the budget has no room.
fn grow(buf: &mut Vec<u8>, len: usize, charge: &mut Option<BudgetCharge>) -> Result<(), usize> {
    if buf.len() >= len {
        return Ok(());
    }
    if let Some(charge) = charge {
        if len > buf.capacity() {
            // Exactly what is charged: no amortized doubling beyond it.
            if !charge.try_set(charge.bytes() + (len - buf.capacity())) {
                return Err(len);
            }
            buf.reserve_exact(len - buf.len());
        }
    }
    buf.resize(len, 0);
    Ok(())
}

/// The fields a state of rustls's machine works on (split from the machine it borrows).
struct Parts<'a, P> {
    conn: &'a mut P,
    outgoing: &'a mut Records,
    held: &'a mut Vec<u8>,
    held_from: usize,
    /// Plaintext goes to `held` while the handshake completion is not yet reported.
    deliver: bool,
    /// Encrypt the plaintext side's pending bytes and `close_notify`.
    encrypt: bool,
    /// rustls failed: take the alert it queued, nothing else.
    failing: bool,
    /// Input to discard besides what rustls's status says (records read in place).
    discard: usize,
    close_notify_sent: &'a mut bool,
    close_notify_received: &'a mut bool,
    charge: &'a mut Option<BudgetCharge>,
    now: Instant,
}

impl<P: Plaintext> Parts<'_, P> {
    fn step<Data>(&mut self, state: Result<ConnectionState<'_, '_, Data>, rustls::Error>) -> Step {
        let state = match state {
            Ok(state) => state,
            Err(e) => return Step::Failed(e),
        };
        if self.failing {
            return match state {
                ConnectionState::EncodeTlsData(mut encode) => {
                    let _ = self
                        .outgoing
                        .append(0, self.charge, |out| match encode.encode(out) {
                            Ok(n) => Ok(n),
                            Err(EncodeError::InsufficientSize(s)) => Err(Some(s.required_size)),
                            Err(EncodeError::AlreadyEncoded) => Err(None),
                        });
                    Step::Idle
                }
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(Ok(_)) = traffic.next_record() {}
                    Step::Again
                }
                _ => Step::Idle,
            };
        }
        match state {
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    match record {
                        Ok(record) => {
                            self.discard += record.discard;
                            if let Err(need) = self.plaintext(record.payload) {
                                return Step::OverBudget(need);
                            }
                        }
                        Err(e) => return Step::Failed(e),
                    }
                }
                Step::Again
            }
            ConnectionState::ReadEarlyData(_) => {
                // Never accepted (the server configuration offers no early data).
                Step::Failed(rustls::Error::General("unexpected early data".into()))
            }
            ConnectionState::PeerClosed => {
                *self.close_notify_received = true;
                Step::Again
            }
            ConnectionState::Closed => {
                *self.close_notify_received = true;
                Step::Idle
            }
            ConnectionState::EncodeTlsData(mut encode) => {
                let result = self
                    .outgoing
                    .append(0, self.charge, |out| match encode.encode(out) {
                        Ok(n) => Ok(n),
                        Err(EncodeError::InsufficientSize(s)) => Err(Some(s.required_size)),
                        Err(EncodeError::AlreadyEncoded) => Err(None),
                    });
                match result {
                    Ok(()) => Step::Again,
                    Err(AppendError::OverBudget(need)) => Step::OverBudget(need),
                    Err(AppendError::Failed) => {
                        Step::Failed(rustls::Error::General("TLS record lost".into()))
                    }
                }
            }
            ConnectionState::TransmitTlsData(transmit) => {
                // The records wait in `outgoing`, in order, for `write_tls`.
                transmit.done();
                Step::Again
            }
            ConnectionState::BlockedHandshake => Step::Idle,
            ConnectionState::WriteTraffic(mut traffic) => {
                if self.encrypt {
                    if let Err(stop) = self.encrypt_pending(&mut traffic) {
                        return stop;
                    }
                }
                Step::Idle
            }
            // A later rustls's state: nothing this composition knows how to do with it.
            _ => Step::Idle,
        }
    }

    /// Moves decrypted bytes into the plaintext side while it takes input; the rest waits
    /// in `held` (`Err`: the memory budget had no room for it to grow to that size).
    fn plaintext(&mut self, mut payload: &[u8]) -> Result<(), usize> {
        if self.deliver && self.held.len() == self.held_from {
            while !payload.is_empty() && self.conn.wants_read() {
                let before = payload.len();
                self.conn.receive(&mut payload, self.now);
                if payload.len() == before {
                    break;
                }
            }
        }
        if !payload.is_empty() {
            let len = self.held.len();
            grow(self.held, len + payload.len(), self.charge)?;
            if let Some(dst) = self.held.get_mut(len..) {
                dst.copy_from_slice(payload);
            }
        }
        Ok(())
    }

    /// Encrypts the plaintext side's pending bytes while fewer than [`OUTGOING_LIMIT`]
    /// bytes of records wait, then `close_notify` once it is closed and drained. `Err`:
    /// the step that stopped it (a failure, or no room in the memory budget).
    fn encrypt_pending<Data>(&mut self, traffic: &mut WriteTraffic<'_, Data>) -> Result<(), Step> {
        let mut gather = [0u8; GATHER];
        while self.conn.wants_write() && self.outgoing.pending().len() < OUTGOING_LIMIT {
            let mut slices = [IoSlice::new(&[]); SLICES];
            let k = self.conn.pending_slices(&mut slices);
            let slices = slices.get(..k).unwrap_or_default();
            let data: &[u8] = match slices {
                [] => break,
                [one, ..] if one.len() >= GATHER || k == 1 => {
                    one.get(..one.len().min(OUTGOING_LIMIT)).unwrap_or_default()
                }
                _ => {
                    // Small pieces (a header and its content): one record, not one each.
                    let mut n = 0;
                    for slice in slices {
                        let take = slice.len().min(GATHER - n);
                        if let (Some(dst), Some(src)) =
                            (gather.get_mut(n..n + take), slice.get(..take))
                        {
                            dst.copy_from_slice(src);
                        }
                        n += take;
                        if n == GATHER {
                            break;
                        }
                    }
                    gather.get(..n).unwrap_or_default()
                }
            };
            if data.is_empty() {
                break;
            }
            let records = data.len().div_ceil(MAX_FRAGMENT);
            let guess = data.len() + records * RECORD_OVERHEAD;
            let taken = data.len();
            self.outgoing
                .append(guess, self.charge, |out| match traffic.encrypt(data, out) {
                    Ok(n) => Ok(n),
                    Err(EncryptError::InsufficientSize(s)) => Err(Some(s.required_size)),
                    Err(_) => Err(None),
                })
                .map_err(AppendError::into_step)?;
            self.conn.consume(taken, self.now);
        }
        if self.conn.wants_shutdown() && !*self.close_notify_sent {
            self.outgoing
                .append(RECORD_OVERHEAD + 2, self.charge, |out| {
                    match traffic.queue_close_notify(out) {
                        Ok(n) => Ok(n),
                        Err(EncryptError::InsufficientSize(s)) => Err(Some(s.required_size)),
                        Err(_) => Err(None),
                    }
                })
                .map_err(AppendError::into_step)?;
            *self.close_notify_sent = true;
        }
        Ok(())
    }
}

/// TLS records waiting to be written: `buf[sent..queued]`. The buffer keeps its size
/// (zeroed once) until freed, so appending does not clear memory each time.
#[derive(Default)]
struct Records {
    buf: Vec<u8>,
    sent: usize,
    queued: usize,
}

impl Records {
    /// The bytes to write.
    fn pending(&self) -> &[u8] {
        self.buf.get(self.sent..self.queued).unwrap_or_default()
    }

    /// `n` bytes were written.
    fn advance(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.queued);
        if self.sent == self.queued {
            self.sent = 0;
            self.queued = 0;
        }
    }

    /// `true` while it holds a buffer.
    fn allocated(&self) -> bool {
        self.buf.capacity() > 0
    }

    /// Drops what waits and frees the buffer.
    fn free(&mut self) {
        *self = Records::default();
    }

    /// Appends what `write` puts into a slice: `write` gets at least `guess` bytes of room,
    /// and more if it says how many it needs (`Err(Some(n))`); `Err(None)` is a failure.
    /// The buffer's growth is charged to `charge` first, if any.
    fn append(
        &mut self,
        guess: usize,
        charge: &mut Option<BudgetCharge>,
        mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
    ) -> Result<(), AppendError> {
        if self.sent > 0 {
            self.buf.copy_within(self.sent..self.queued, 0);
            self.queued -= self.sent;
            self.sent = 0;
        }
        let mut room = guess;
        loop {
            grow(&mut self.buf, self.queued + room, charge).map_err(AppendError::OverBudget)?;
            match write(self.buf.get_mut(self.queued..).unwrap_or_default()) {
                Ok(n) => {
                    self.queued += n;
                    return Ok(());
                }
                Err(Some(need)) if need > room => room = need,
                Err(_) => return Err(AppendError::Failed),
            }
        }
    }
}

impl AppendError {
    /// What the machine does next.
    fn into_step(self) -> Step {
        match self {
            AppendError::Failed => Step::Failed(rustls::Error::EncryptError),
            AppendError::OverBudget(need) => Step::OverBudget(need),
        }
    }
}

impl<P: Plaintext> Tls<P> {
    /// The server side of a connection accepted at `now`, speaking through `conn` (a
    /// [`sockmsg_protocol::Role::Server`] machine with its limits and deadlines).
    pub fn server(
        config: Arc<rustls::ServerConfig>,
        conn: P,
        now: Instant,
    ) -> Result<Tls<P>, TlsError> {
        let tls = UnbufferedServerConnection::new(config).map_err(|e| TlsError::Tls {
            reason: e.to_string(),
        })?;
        Ok(Tls::new(Machine::Server(tls), conn, None, now))
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
        let tls = UnbufferedClientConnection::new(config, name).map_err(|e| TlsError::Tls {
            reason: e.to_string(),
        })?;
        let mut client = Tls::new(
            Machine::Client(tls),
            conn,
            Some(server_name.to_owned()),
            now,
        );
        // The ClientHello, ready to write.
        client.process(now);
        Ok(client)
    }

    fn new(tls: Machine, conn: P, server_name: Option<String>, now: Instant) -> Tls<P> {
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
            incoming: Vec::new(),
            received: 0,
            outgoing: Records::default(),
            held: Vec::new(),
            held_from: 0,
            eof: false,
            close_notify_received: false,
            eof_delivered: false,
            close_notify_sent: false,
            finished: false,
            alert_owed: false,
            error: None,
            timed_out: None,
            tls_write_progress: now,
            last_io: now,
            charge: None,
        }
    }

    /// Charges the ciphertext buffers to `budget` from now on (a new connection's, which
    /// holds none yet).
    pub(crate) fn charge_buffers_to(&mut self, budget: &MemoryBudget) {
        self.charge = Some(BudgetCharge::new(budget));
        self.settle();
    }

    /// Bytes of ciphertext buffers (and decrypted bytes held back) charged to the memory
    /// budget now: 0 for a composition that is not charged to one (a client's).
    pub fn buffers_charged(&self) -> usize {
        self.charge.as_ref().map_or(0, BudgetCharge::bytes)
    }

    /// Brings the charge to what the buffers hold now (after they shrank, or grew beyond
    /// what was charged first).
    fn settle(&mut self) {
        if let Some(charge) = &mut self.charge {
            charge.set(
                self.incoming.capacity() + self.outgoing.buf.capacity() + self.held.capacity(),
            );
        }
    }

    /// The memory budget had no room for a buffer to grow to `need` bytes: the connection
    /// is over, at once (nothing more can be encrypted), its buffers freed.
    fn refuse(&mut self, need: usize) {
        let limit = self.charge.as_ref().map_or(0, |c| c.budget().limit());
        self.outgoing.free();
        self.close_notify_sent = true;
        self.finish();
        self.conn.over_budget(need, limit);
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
        if self.received >= MAX_INCOMING {
            self.fail(TlsError::Tls {
                reason: format!("a TLS message larger than {MAX_INCOMING} bytes"),
            });
            return Ok(0);
        }
        // Small reads while messages are small; room for a whole record once one arrives
        // in pieces. The buffer is freed when the connection goes idle.
        let room = if self.received == 0 {
            READ_MIN
        } else {
            READ_SIZE
        };
        let want = (self.received + READ_MIN).max(room).min(MAX_INCOMING);
        if let Err(need) = grow(&mut self.incoming, want, &mut self.charge) {
            self.refuse(need);
            return Ok(0);
        }
        let n = match reader.read(self.incoming.get_mut(self.received..).unwrap_or_default()) {
            Ok(n) => n,
            Err(e) => {
                self.settle();
                return Err(e);
            }
        };
        if self.handshaking && self.first.len() < FIRST_BYTES {
            let take = n.min(FIRST_BYTES - self.first.len());
            let start = self.received;
            self.first
                .extend_from_slice(self.incoming.get(start..start + take).unwrap_or_default());
        }
        self.received += n;
        if n > 0 {
            self.last_io = now;
        }
        if n == 0 {
            self.eof = true;
        }
        self.process(now);
        self.deliver_eof();
        self.settle();
        Ok(n)
    }

    /// Runs rustls's machine over the ciphertext received until it waits: handshake
    /// records to send, plaintext into the sockmsg machine, pending output encrypted.
    fn process(&mut self, now: Instant) {
        loop {
            // After rustls failed, one more turn for the alert it queued (so the peer learns
            // why), and no more: rustls would take the bad input again.
            let failing = self.error.is_some();
            if self.finished || (failing && !self.alert_owed) {
                return;
            }
            let encrypt = !failing && !self.handshaking && self.timed_out.is_none();
            let mut parts = Parts {
                conn: &mut self.conn,
                outgoing: &mut self.outgoing,
                held: &mut self.held,
                held_from: self.held_from,
                deliver: !self.handshaking,
                encrypt,
                failing,
                discard: 0,
                close_notify_sent: &mut self.close_notify_sent,
                close_notify_received: &mut self.close_notify_received,
                charge: &mut self.charge,
                now,
            };
            // rustls may hold places in this buffer (a handshake message in pieces): it
            // gets the same bytes again, less what it said to discard.
            let input = self.incoming.get_mut(..self.received).unwrap_or_default();
            let (discard, step) = match &mut self.tls {
                Machine::Client(c) => {
                    let status = c.process_tls_records(input);
                    let step = parts.step(status.state);
                    (status.discard + parts.discard, step)
                }
                Machine::Server(s) => {
                    let status = s.process_tls_records(input);
                    let step = parts.step(status.state);
                    (status.discard + parts.discard, step)
                }
            };
            if discard > 0 {
                let discard = discard.min(self.received);
                self.incoming.copy_within(discard..self.received, 0);
                self.received -= discard;
            }
            if !failing && self.handshaking && !self.tls.common().is_handshaking() {
                self.handshake_complete(now);
            }
            match step {
                Step::Again => {}
                Step::Idle if failing => {
                    self.finish();
                    return;
                }
                Step::Idle => return,
                Step::Failed(_) if failing => {
                    self.finish();
                    return;
                }
                Step::OverBudget(need) => {
                    self.refuse(need);
                    return;
                }
                Step::Failed(e) => {
                    let error = TlsError::from_rustls(
                        &e,
                        self.handshaking,
                        &self.first,
                        self.server_name.as_deref(),
                    );
                    self.fail(error);
                    self.alert_owed = true;
                }
            }
        }
    }

    /// rustls's machine is stopped for good: its input is dropped.
    fn finish(&mut self) {
        self.finished = true;
        self.alert_owed = false;
        self.incoming = Vec::new();
        self.received = 0;
        self.held = Vec::new();
        self.held_from = 0;
        self.settle();
    }

    fn handshake_complete(&mut self, now: Instant) {
        self.handshaking = false;
        self.first = Vec::new();
        self.identity = self
            .tls
            .common()
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| PeerIdentity::from_der(cert));
        self.conn.handshake_done(self.identity.as_ref());
        self.drain_held(now);
    }

    /// Moves decrypted bytes held back into the sockmsg machine while it takes input.
    fn drain_held(&mut self, now: Instant) {
        if self.handshaking {
            return;
        }
        while self.held_from < self.held.len() && self.conn.wants_read() {
            let rest = self.held.get(self.held_from..).unwrap_or_default();
            let mut input = rest;
            self.conn.receive(&mut input, now);
            let n = rest.len() - input.len();
            if n == 0 {
                break;
            }
            self.held_from += n;
        }
        if self.held_from == self.held.len() {
            self.held = Vec::new();
            self.held_from = 0;
        }
    }

    fn plaintext_held(&self) -> bool {
        self.held_from < self.held.len()
    }

    /// Passes the end of the stream on, once the plaintext before it was taken.
    fn deliver_eof(&mut self) {
        if self.eof_delivered || self.error.is_some() || self.plaintext_held() {
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

    /// Encrypts pending sockmsg bytes (after the handshake), adds `close_notify` when the
    /// sockmsg side is closed and drained, then writes TLS records once to `writer`.
    /// Returns what `writer` accepted; its errors (`WouldBlock` included) are the caller's.
    pub fn write_tls<W: Write + ?Sized>(
        &mut self,
        writer: &mut W,
        now: Instant,
    ) -> io::Result<usize> {
        self.tick(now);
        if self.plaintext_held() && self.conn.wants_read() {
            // Output moved below the inner machine's cap: it takes input again.
            self.drain_held(now);
            self.deliver_eof();
        }
        let was_idle = !self.records_pending();
        if self.wants_encrypt() {
            self.process(now);
            if self.plaintext_held() && self.conn.wants_read() {
                // Encrypting took the inner machine's output below its cap: it takes input
                // again. Move what was held now, or nothing would (no record is read while
                // plaintext is held, and nothing may be left to write).
                self.drain_held(now);
                self.deliver_eof();
            }
        }
        if was_idle && self.records_pending() {
            self.tls_write_progress = now;
        }
        let written = writer.write(self.outgoing.pending());
        self.settle();
        let n = written?;
        self.outgoing.advance(n);
        if n > 0 {
            self.tls_write_progress = now;
            self.last_io = now;
        }
        Ok(n)
    }

    /// `true` if there is plaintext to encrypt, or a `close_notify` to send, and room for
    /// the records.
    fn wants_encrypt(&self) -> bool {
        !self.handshaking
            && self.error.is_none()
            && self.timed_out.is_none()
            && self.outgoing.pending().len() < OUTGOING_LIMIT
            && (self.conn.wants_write() || (self.conn.wants_shutdown() && !self.close_notify_sent))
    }

    /// The socket failed: nothing more can be written, so what waits is dropped (and no
    /// `close_notify` follows), and the composition no longer wants to write.
    pub(crate) fn drop_output(&mut self) {
        self.outgoing.free();
        self.close_notify_sent = true;
        self.settle();
    }

    /// When the empty ciphertext buffers are to be freed: [`RELEASE_DELAY`] after the last
    /// I/O, if they are allocated and empty.
    fn release_due(&self) -> Option<Instant> {
        let allocated = self.incoming.capacity() > 0 || self.outgoing.allocated();
        let empty = self.received == 0 && !self.records_pending() && !self.plaintext_held();
        (allocated && empty).then(|| self.last_io + RELEASE_DELAY)
    }

    fn records_pending(&self) -> bool {
        !self.outgoing.pending().is_empty()
    }

    /// Frees the ciphertext buffers while they are empty (see
    /// [`TlsConnection::release_buffers`]).
    fn release_tls_buffers(&mut self) {
        if self.received == 0 {
            self.incoming = Vec::new();
        }
        if !self.records_pending() {
            self.outgoing.free();
        }
        self.settle();
    }

    /// Takes the ciphertext input buffer while it holds nothing to process (no record in
    /// pieces), so that an event loop keeps such buffers in a pool between reads instead of
    /// one per connection left in the allocator after a burst; `None` if there is none, it
    /// is in use, or it grew past a record (the release timer frees that one). The next
    /// read allocates one unless one is given back ([`Tls::give_input_buffer`]).
    pub(crate) fn take_input_buffer(&mut self) -> Option<Vec<u8>> {
        if self.received > 0 || self.incoming.capacity() == 0 || self.incoming.len() > READ_SIZE {
            return None;
        }
        Some(std::mem::take(&mut self.incoming))
    }

    /// Gives the composition a buffer for ciphertext input (its bytes are overwritten);
    /// hands it back if the composition has one already, or is stopped.
    pub(crate) fn give_input_buffer(&mut self, mut buf: Vec<u8>) -> Option<Vec<u8>> {
        if self.incoming.capacity() > 0 || self.received > 0 || self.finished {
            return Some(buf);
        }
        // Reads as large as a record at most, as without a buffer lent.
        buf.truncate(READ_SIZE);
        self.incoming = buf;
        None
    }

    // ---- what the composition wants ----

    /// `true` while reading the socket can produce anything: rustls wants records (no
    /// decrypted bytes wait, no `close_notify` came) and, after the handshake, the sockmsg
    /// machine wants input.
    pub fn wants_read(&self) -> bool {
        self.error.is_none()
            && !self.finished
            && self.timed_out.is_none()
            && !self.eof
            && !self.close_notify_received
            && !self.plaintext_held()
            && (self.handshaking || self.conn.wants_read())
    }

    /// `true` while there is something to write: TLS records (handshake, alerts, data), or,
    /// after the handshake, sockmsg bytes to encrypt or a `close_notify` to send. After a
    /// failure only the alert rustls queued is still written, so the peer learns why.
    pub fn wants_write(&self) -> bool {
        if self.timed_out.is_some() {
            return false;
        }
        if self.records_pending() {
            return true;
        }
        self.error.is_none()
            && !self.handshaking
            && (self.conn.wants_write() || (self.conn.wants_shutdown() && !self.close_notify_sent))
    }

    /// `true` once [`TlsConnection::close`] was called, everything queued was sent and
    /// the `close_notify` went out: time to shut down the socket's write side.
    pub fn wants_shutdown(&self) -> bool {
        self.close_notify_sent && !self.records_pending()
    }

    /// The earliest instant at which [`TlsConnection::handle_timeout`] must be called: the
    /// handshake deadline while handshaking, the write deadline while TLS records wait, the
    /// time to free idle buffers ([`RELEASE_DELAY`]), and the sockmsg machine's own
    /// deadlines.
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
            self.records_pending(),
            self.conn.connection().deadlines().write,
        ) {
            (true, Some(limit)) => Some(self.tls_write_progress + limit),
            _ => None,
        };
        [
            self.conn.poll_timeout(),
            handshake,
            write,
            self.release_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Checks the deadlines at `now`. `Some(t)`: deadline `t` passed and the connection is
    /// finished (it wants neither reading nor writing); a passed handshake deadline is also
    /// [`TlsError::HandshakeTimeout`] from [`TlsConnection::next_event`]. `None`: nothing
    /// passed.
    ///
    /// [`RELEASE_DELAY`] after the last read or write, the composition frees its empty
    /// ciphertext buffers here (one of the timers of [`TlsConnection::poll_timeout`]).
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
            self.records_pending(),
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
        } else if self.plaintext_held() && self.conn.wants_read() {
            // The plaintext side takes input again after a deadline of its own (a server
            // session that waited for room in the memory budget): move what was held back,
            // which nothing else would (no record is read while plaintext is held).
            self.drain_held(now);
            self.deliver_eof();
        }
        if passed.is_some() || self.release_due().is_some_and(|at| at <= now) {
            self.release_tls_buffers();
        } else {
            // `held` may have been drained and freed.
            self.settle();
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
        self.tls.common().handshake_kind()
    }

    /// The TLS version negotiated (`None` until known).
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.tls.common().protocol_version()
    }

    /// The ALPN protocol agreed on, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.tls.common().alpn_protocol()
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
        if event == Event::NeedData && self.plaintext_held() && self.conn.wants_read() {
            // The machine takes input again: move what was held back, then look again.
            let now = self.now;
            self.drain_held(now);
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

    /// Frees the sockmsg machine's empty buffers (see [`Connection::release_buffers`]) and
    /// the composition's empty ciphertext buffers, so an idle connection holds only
    /// rustls's keys and state.
    pub fn release_buffers(&mut self) {
        self.conn.release_buffers();
        self.release_tls_buffers();
    }

    /// Messages owed by the other side (see [`Connection::in_flight`]).
    pub fn in_flight(&self) -> u64 {
        self.conn.in_flight()
    }
}
