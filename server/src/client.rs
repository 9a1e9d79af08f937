//! What every client transport shares: [`ClientConfig`], the exchange [`Deadline`] and
//! the wait bookkeeping around it ([`next_wait`]), the blocking clients' way to connect
//! ([`connect`]), the [`Op`] that failed, how a failure is classified and worded
//! ([`Failure`]), and the error of the clients that name their server as given
//! ([`ClientError`]).
//!
//! The blocking client (`sockmsg-transport-std`), the async one
//! (`sockmsg-transport-tokio`) and the blocking TLS client (`sockmsg_tls::TlsClient`) are
//! thin loops over the protocol's sans-IO [`Connection`](sockmsg_protocol::Connection)
//! (behind TLS for the last) and over this module: the same settings, the same time
//! limits, the same error kinds with the same messages, whatever waits for the socket. It
//! lives here, next to [`ServerAddr`](crate::ServerAddr) and
//! [`addr::resolve`](crate::addr::resolve), because this crate is the layer every
//! transport already depends on; it is not in `sockmsg-protocol` because a deadline reads
//! the clock ([`Deadline::after`]) and the errors carry the operating system's.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sockmsg_protocol::{Foreign, Limits, LocalError, PeerError};

/// Shortest socket wait: below it a time limit counts as passed (socket timeouts have a
/// resolution of about a millisecond, and zero means "forever" to the system).
pub const MIN_WAIT: Duration = Duration::from_millis(1);

/// Longest a client's `close` waits for the server to close its side.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How a client connects and how long it waits.
///
/// Two kinds of time limits apply together: [`ClientConfig::deadline`] bounds a whole
/// exchange, however the peer spreads its bytes; the others bound a single wait. Each
/// wait uses the shorter of the two times left ([`next_wait`]). An async client uses its
/// runtime's timer for them (tokio: `enable_time`), unless they are all `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Longest one connection attempt may take (the blocking client: to one address, a
    /// host name's addresses tried in turn; the async client: resolving the name and
    /// connecting together). Default: 10 s. `None`: the operating system's own limit.
    pub connect_timeout: Option<Duration>,
    /// Longest a read may wait without a byte arriving. Default: 30 s. `None`: forever.
    pub read_timeout: Option<Duration>,
    /// Longest a write may wait without a byte being accepted. Default: 30 s. `None`: forever.
    pub write_timeout: Option<Duration>,
    /// Longest a whole operation may take, counted from its start to its last byte:
    /// connecting (every address tried, and the TLS handshake if any), and each request
    /// (sending it and receiving the whole answer), send, flush, receive. An answer
    /// dripped one byte at a time ends here, with a `Deadline` error. Default: 30 s.
    /// `None`: no overall limit.
    pub deadline: Option<Duration>,
    /// What the server's responses may make us accept, and so allocate: the header length,
    /// the content length (a client may set a smaller [`Limits::max_content_len`] than the
    /// default 16 MiB), the JSON nesting. A response beyond them fails as soon as its
    /// header arrives, before its content is allocated. Default: [`Limits::default`].
    pub limits: Limits,
    /// Disable Nagle's algorithm (`TCP_NODELAY`), so a request leaves at once. Default: `true`.
    pub nodelay: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(30)),
            write_timeout: Some(Duration::from_secs(30)),
            deadline: Some(Duration::from_secs(30)),
            limits: Limits::default(),
            nodelay: true,
        }
    }
}

/// A zero duration means "no limit" for every time limit of [`ClientConfig`].
pub fn nonzero(t: Option<Duration>) -> Option<Duration> {
    t.filter(|d| !d.is_zero())
}

/// The shorter of two optional limits (`None` is no limit).
pub fn shorter(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl ClientConfig {
    /// The deadline of an exchange starting now, from [`ClientConfig::deadline`].
    pub fn exchange_deadline(&self) -> Option<Deadline> {
        nonzero(self.deadline).map(Deadline::after)
    }

    /// The per-wait limit for `op`: [`ClientConfig::write_timeout`] for a write,
    /// [`ClientConfig::read_timeout`] otherwise (zero: none).
    pub fn idle_timeout(&self, op: Op) -> Option<Duration> {
        match op {
            Op::Write => nonzero(self.write_timeout),
            _ => nonzero(self.read_timeout),
        }
    }

    /// How long a client's `close` waits for the server's end of stream: 2 s, or the read
    /// timeout if shorter.
    pub fn close_wait(&self) -> Duration {
        nonzero(self.read_timeout).map_or(CLOSE_WAIT, |t| t.min(CLOSE_WAIT))
    }
}

/// A point in time by which an exchange must be done, with the time it was given (which
/// errors quote).
///
/// ```
/// use std::time::Duration;
/// use sockmsg_server::client::Deadline;
/// let d = Deadline::after(Duration::from_secs(3));
/// assert_eq!(d.limit(), Duration::from_secs(3));
/// assert!(d.remaining() <= Duration::from_secs(3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
    limit: Duration,
}

impl Deadline {
    /// `limit` from now (a limit too large to represent acts as a very distant one).
    pub fn after(limit: Duration) -> Deadline {
        Deadline::starting(Instant::now(), limit)
    }

    /// `limit` from `start`.
    pub fn starting(start: Instant, limit: Duration) -> Deadline {
        let at = start
            .checked_add(limit)
            .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 24 * 3600));
        Deadline { at, limit }
    }

    /// The instant it passes.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// The time it was given.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }
}

/// Which time limit ran out before a wait ([`next_wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The exchange's deadline passed; the limit it was given.
    Deadline(Duration),
    /// The wait made no progress for this per-wait limit.
    Timeout(Duration),
}

/// How long the next wait may block: the shorter of the time left before `idle` (a
/// per-wait limit, counted from the last `progress`) and before `deadline` (`None`: no
/// limit at all); [`Expired`] once either has passed (less than [`MIN_WAIT`] left).
pub fn next_wait(
    idle: Option<Duration>,
    progress: Instant,
    deadline: Option<Deadline>,
) -> Result<Option<Duration>, Expired> {
    let mut wait = None;
    if let Some(d) = deadline {
        let left = d.remaining();
        if left < MIN_WAIT {
            return Err(Expired::Deadline(d.limit()));
        }
        wait = Some(left);
    }
    if let Some(after) = idle {
        let left = after.saturating_sub(progress.elapsed());
        if left < MIN_WAIT {
            return Err(Expired::Timeout(after));
        }
        wait = shorter(wait, Some(left));
    }
    Ok(wait)
}

/// Why [`connect`] could not connect to an address.
#[derive(Debug)]
pub enum ConnectFailure {
    /// The exchange's deadline passed; the limit it was given.
    Deadline(Duration),
    /// The attempt took longer than [`ClientConfig::connect_timeout`], this long.
    Timeout(Duration),
    /// The system's error (refused, unreachable...: see [`classify`] with [`Op::Connect`]).
    Io(io::Error),
}

/// Connects a blocking socket to the first of `addrs` that accepts (those a name resolved
/// to: [`crate::addr::resolve`]), each attempt within [`ClientConfig::connect_timeout`],
/// all within `deadline` (no address is tried once it passed), with
/// [`ClientConfig::nodelay`]: the blocking clients' one way to connect. The socket and the
/// address it connected to; if none accepts, the last address tried and why.
pub fn connect(
    addrs: &[SocketAddr],
    config: &ClientConfig,
    deadline: Option<Deadline>,
) -> Result<(TcpStream, SocketAddr), (SocketAddr, ConnectFailure)> {
    let mut last = (
        SocketAddr::from(([0, 0, 0, 0], 0)),
        ConnectFailure::Io(io::Error::new(io::ErrorKind::NotFound, "no address")),
    );
    for &addr in addrs {
        match connect_one(addr, config, deadline) {
            Ok(stream) => return Ok((stream, addr)),
            Err(failure) => {
                tracing::debug!("cannot connect to {addr}: {failure:?}");
                let out_of_time = matches!(failure, ConnectFailure::Deadline(_));
                last = (addr, failure);
                if out_of_time {
                    break;
                }
            }
        }
    }
    Err(last)
}

fn connect_one(
    addr: SocketAddr,
    config: &ClientConfig,
    deadline: Option<Deadline>,
) -> Result<TcpStream, ConnectFailure> {
    let connect_timeout = nonzero(config.connect_timeout);
    let left = deadline.map(|d| d.remaining());
    if let (Some(d), Some(left)) = (deadline, left) {
        if left < MIN_WAIT {
            return Err(ConnectFailure::Deadline(d.limit()));
        }
    }
    let wait = shorter(connect_timeout, left);
    let stream = match wait {
        Some(t) => TcpStream::connect_timeout(&addr, t),
        None => TcpStream::connect(addr),
    }
    .map_err(|e| match (e.kind(), connect_timeout, deadline) {
        (io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock, _, Some(d))
            if left.is_some() && left == wait =>
        {
            ConnectFailure::Deadline(d.limit())
        }
        (io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock, Some(after), _) => {
            ConnectFailure::Timeout(after)
        }
        _ => ConnectFailure::Io(e),
    })?;
    stream
        .set_nodelay(config.nodelay)
        .map_err(ConnectFailure::Io)?;
    Ok(stream)
}

/// The operation that was under way when a timeout or an I/O error struck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Establishing the connection (resolving the name, connecting, a TLS handshake).
    Connect,
    /// Waiting for bytes from the peer.
    Read,
    /// Handing bytes to the peer.
    Write,
    /// Shutting down the write side (half-close) or closing.
    Shutdown,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Connect => "connecting to",
            Op::Read => "reading from",
            Op::Write => "writing to",
            Op::Shutdown => "shutting down the connection to",
        })
    }
}

impl Op {
    /// The operation as a bare verb (`"reading"`), for messages that name the peer elsewhere.
    pub fn verb(self) -> &'static str {
        match self {
            Op::Connect => "connecting",
            Op::Read => "reading",
            Op::Write => "writing",
            Op::Shutdown => "shutting down",
        }
    }
}

/// How an I/O error of an operation is classified ([`classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    /// Nothing listens there (`ECONNREFUSED` while connecting).
    Refused,
    /// The peer reset or aborted the connection, or it broke while we wrote
    /// (`ECONNRESET`, `ECONNABORTED`, `EPIPE`).
    Reset,
    /// Connecting failed for another reason.
    Connect,
    /// Any other I/O error.
    Other,
}

/// Classifies an I/O error that struck `op`.
pub fn classify(op: Op, e: &io::Error) -> IoClass {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused if op == Op::Connect => IoClass::Refused,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => IoClass::Reset,
        _ if op == Op::Connect => IoClass::Connect,
        _ => IoClass::Other,
    }
}

/// A client failure without its peer: the kinds every client's error has, one wording for
/// each. A client's error type maps its variants to one of these
/// ([`Failure::message`] for its `Display`, [`Failure::kind`], [`Failure::io_kind`]).
#[derive(Debug, Clone, Copy)]
pub enum Failure<'a> {
    /// The host name did not resolve.
    Resolve(&'a io::Error),
    /// Nothing listens at the address.
    Refused,
    /// Connecting failed for another reason.
    Connect(&'a io::Error),
    /// `op` made no progress within `after`.
    Timeout {
        /// What was under way.
        op: Op,
        /// The per-wait limit.
        after: Duration,
    },
    /// The exchange's deadline passed while `op` was under way, `received` bytes of the
    /// answer in.
    Deadline {
        /// What was under way.
        op: Op,
        /// The time allowed for the whole exchange.
        limit: Duration,
        /// Bytes of the answer received before time ran out.
        received: u64,
    },
    /// The peer reset the connection.
    Reset {
        /// What was under way.
        op: Op,
        /// The operating system's error, when there is one.
        source: Option<&'a io::Error>,
    },
    /// The peer closed cleanly while answers were owed.
    Closed {
        /// Requests sent and not answered.
        in_flight: u64,
    },
    /// The peer's bytes broke the protocol.
    Protocol(&'a (dyn std::error::Error + 'static)),
    /// This side tried to send what the protocol refuses (nothing was sent).
    Local(&'a (dyn std::error::Error + 'static)),
    /// The peer does not speak this protocol; what its first bytes look like.
    Foreign(&'a Foreign),
    /// Another I/O error.
    Io {
        /// What was under way.
        op: Op,
        /// The error.
        source: &'a io::Error,
    },
}

impl<'a> Failure<'a> {
    /// The failure of `op` for an I/O error, as [`classify`] sorts it.
    pub fn from_io(op: Op, e: &'a io::Error) -> Failure<'a> {
        match classify(op, e) {
            IoClass::Refused => Failure::Refused,
            IoClass::Reset => Failure::Reset {
                op,
                source: Some(e),
            },
            IoClass::Connect => Failure::Connect(e),
            IoClass::Other => Failure::Io { op, source: e },
        }
    }

    /// `true` if the peer caused it: bytes that break the protocol, a close, a reset, a
    /// time limit waiting for it.
    pub fn is_by_peer(&self) -> bool {
        matches!(
            self,
            Failure::Protocol(_)
                | Failure::Closed { .. }
                | Failure::Timeout { .. }
                | Failure::Deadline { .. }
                | Failure::Reset { .. }
        )
    }

    /// A short stable name (`"refused"`, `"deadline"`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Resolve(_) => "resolve",
            Failure::Refused => "refused",
            Failure::Connect(_) => "connect",
            Failure::Timeout { .. } => "timeout",
            Failure::Deadline { .. } => "deadline",
            Failure::Reset { .. } => "reset",
            Failure::Closed { .. } => "closed",
            Failure::Protocol(_) => "protocol",
            Failure::Local(_) => "local",
            Failure::Foreign(_) => "foreign",
            Failure::Io { .. } => "io",
        }
    }

    /// The closest [`io::ErrorKind`].
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            Failure::Refused => io::ErrorKind::ConnectionRefused,
            Failure::Resolve(e) | Failure::Connect(e) | Failure::Io { source: e, .. } => e.kind(),
            Failure::Reset { source, .. } => {
                source.map_or(io::ErrorKind::ConnectionReset, |e| e.kind())
            }
            Failure::Timeout { .. } | Failure::Deadline { .. } => io::ErrorKind::TimedOut,
            Failure::Closed { .. } => io::ErrorKind::UnexpectedEof,
            Failure::Protocol(_) | Failure::Foreign(_) => io::ErrorKind::InvalidData,
            Failure::Local(_) => io::ErrorKind::InvalidInput,
        }
    }

    /// The one-line message naming `addr` (as given, or as resolved).
    pub fn message<A: fmt::Display + ?Sized>(self, addr: &'a A) -> impl fmt::Display + 'a {
        Message {
            failure: self,
            addr,
        }
    }
}

/// What a client's TLS layer reports, for [`ClientError::Tls`]: `sockmsg_tls::TlsError`,
/// or [`NoTls`] for a client without TLS.
pub trait TlsFailure: std::error::Error + 'static {
    /// A short stable name for the reason (`"unknown-ca"`, ...).
    fn kind(&self) -> &'static str;
}

/// No TLS failure can happen: the [`ClientError`] of a client without TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoTls {}

impl fmt::Display for NoTls {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl std::error::Error for NoTls {}

impl TlsFailure for NoTls {
    fn kind(&self) -> &'static str {
        match *self {}
    }
}

/// Everything a client that names its server as the caller gave it can fail with: the
/// async client of `sockmsg-transport-tokio` (its `ClientError`) and the blocking TLS
/// client of `sockmsg-tls` (its `ClientError`: `ClientError<TlsError>`, the same type as
/// the tokio client's when that has its `tls` feature). Every variant names the address
/// as given (`localhost:65432`, `127.0.0.1:65432`), so the message needs no context; the
/// messages are [`Failure`]'s, the same as the blocking plaintext client's.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError<T: TlsFailure = NoTls> {
    /// The name did not resolve to any address.
    Resolve {
        /// The address as given.
        addr: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// Nothing listens at `addr` (`ECONNREFUSED`) at any of its resolved addresses.
    Refused {
        /// The address as given.
        addr: String,
    },
    /// `op` did not complete within `after` (a per-wait limit).
    Timeout {
        /// The address as given.
        addr: String,
        /// What was under way.
        op: Op,
        /// The time limit that ran out.
        after: Duration,
    },
    /// The peer reset the connection, or it broke while we wrote.
    Reset {
        /// The address as given.
        addr: String,
        /// What was under way.
        op: Op,
    },
    /// Another I/O error.
    Io {
        /// The address as given.
        addr: String,
        /// What was under way.
        op: Op,
        /// The operating system's error.
        source: io::Error,
    },
    /// The server broke the protocol; the connection is over.
    Protocol {
        /// The address as given.
        addr: String,
        /// What it did.
        source: PeerError,
    },
    /// This side misused the connection (sending after a half-close, content over the
    /// limits); nothing was sent.
    Local {
        /// The address as given.
        addr: String,
        /// What was refused.
        source: LocalError,
    },
    /// The server closed the connection cleanly while `in_flight` answers were still owed.
    Closed {
        /// The address as given.
        addr: String,
        /// Requests sent and not answered.
        in_flight: u64,
    },
    /// The deadline for the whole exchange passed ([`ClientConfig::deadline`], a
    /// client's `request_within`): connecting (and a TLS handshake), or sending and
    /// receiving the whole answer, took longer than `limit`, even if each wait was short.
    Deadline {
        /// The address as given.
        addr: String,
        /// What was under way when time ran out.
        op: Op,
        /// The time allowed for the whole exchange.
        limit: Duration,
        /// Bytes of the answer received before time ran out.
        received: u64,
    },
    /// TLS failed: the handshake (an unknown CA, a name the certificate does not cover,
    /// an expired certificate, a server that requires a client certificate, a plaintext
    /// peer...), or the record layer (a truncation without `close_notify`...).
    /// [`ClientError::kind`] is the reason's own (`"unknown-ca"`, ...).
    Tls {
        /// The address as given.
        addr: String,
        /// Why.
        source: T,
    },
    /// The peer does not speak this protocol: its first bytes cannot start a message (see
    /// [`sockmsg_protocol::sniff`](mod@sockmsg_protocol::sniff)), and `seen` says what
    /// they look like.
    Foreign {
        /// The address as given.
        addr: String,
        /// What it sent, as far as its first bytes tell.
        seen: Foreign,
    },
}

impl<T: TlsFailure> ClientError<T> {
    /// Classifies an I/O error of `op` with `addr` ([`classify`]).
    pub fn from_io(addr: &str, op: Op, e: io::Error) -> ClientError<T> {
        let addr = addr.to_owned();
        match classify(op, &e) {
            IoClass::Refused => ClientError::Refused { addr },
            IoClass::Reset => ClientError::Reset { addr, op },
            IoClass::Connect | IoClass::Other => ClientError::Io {
                addr,
                op,
                source: e,
            },
        }
    }

    /// The failure as every client words it ([`Failure`]); `None` for a TLS failure,
    /// which `T` words.
    pub fn failure(&self) -> Option<Failure<'_>> {
        Some(match self {
            ClientError::Resolve { source, .. } => Failure::Resolve(source),
            ClientError::Refused { .. } => Failure::Refused,
            ClientError::Timeout { op, after, .. } => Failure::Timeout {
                op: *op,
                after: *after,
            },
            ClientError::Reset { op, .. } => Failure::Reset {
                op: *op,
                source: None,
            },
            ClientError::Io { op, source, .. } => Failure::Io { op: *op, source },
            ClientError::Protocol { source, .. } => Failure::Protocol(source),
            ClientError::Local { source, .. } => Failure::Local(source),
            ClientError::Closed { in_flight, .. } => Failure::Closed {
                in_flight: *in_flight,
            },
            ClientError::Deadline {
                op,
                limit,
                received,
                ..
            } => Failure::Deadline {
                op: *op,
                limit: *limit,
                received: *received,
            },
            ClientError::Foreign { seen, .. } => Failure::Foreign(seen),
            ClientError::Tls { .. } => return None,
        })
    }

    /// The TLS failure, for [`ClientError::Tls`].
    pub fn tls_error(&self) -> Option<&T> {
        match self {
            ClientError::Tls { source, .. } => Some(source),
            _ => None,
        }
    }

    /// `true` for [`ClientError::Timeout`] and [`ClientError::Deadline`].
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ClientError::Timeout { .. } | ClientError::Deadline { .. }
        )
    }

    /// The closest [`io::ErrorKind`]: what this error would be as an `io::Error`.
    pub fn io_kind(&self) -> io::ErrorKind {
        self.failure()
            .map_or(io::ErrorKind::InvalidData, |failure| failure.io_kind())
    }

    /// The address the error concerns, as the caller gave it.
    pub fn addr(&self) -> &str {
        match self {
            ClientError::Resolve { addr, .. }
            | ClientError::Refused { addr }
            | ClientError::Timeout { addr, .. }
            | ClientError::Reset { addr, .. }
            | ClientError::Io { addr, .. }
            | ClientError::Protocol { addr, .. }
            | ClientError::Local { addr, .. }
            | ClientError::Closed { addr, .. }
            | ClientError::Deadline { addr, .. }
            | ClientError::Tls { addr, .. }
            | ClientError::Foreign { addr, .. } => addr,
        }
    }

    /// A short stable name for the error, the same as every client's for the same failure:
    /// `"refused"`, `"timeout"`, `"deadline"`, the core's kind for protocol errors, the TLS
    /// reason's for TLS failures, ...
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Protocol { source, .. } => source.kind(),
            ClientError::Local { source, .. } => source.kind(),
            ClientError::Tls { source, .. } => source.kind(),
            other => other.failure().map_or("other", |failure| failure.kind()),
        }
    }
}

impl<T: TlsFailure> fmt::Display for ClientError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.failure(), self) {
            (Some(failure), _) => failure.message(self.addr()).fmt(f),
            (None, ClientError::Tls { addr, source }) => {
                write!(f, "TLS with {addr} failed: {source}")
            }
            // Every other variant is worded by `failure`.
            (None, _) => Ok(()),
        }
    }
}

impl<T: TlsFailure> std::error::Error for ClientError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Resolve { source, .. } | ClientError::Io { source, .. } => Some(source),
            ClientError::Protocol { source, .. } => Some(source),
            ClientError::Local { source, .. } => Some(source),
            ClientError::Tls { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl<T: TlsFailure + Send + Sync> From<ClientError<T>> for io::Error {
    fn from(e: ClientError<T>) -> io::Error {
        io::Error::new(e.io_kind(), e)
    }
}

/// Before any message arrived (`answered` false), a failure the peer caused is better
/// told as what the peer sent, if its `first` bytes cannot start a message of this
/// protocol (an HTTP reply, a TLS server, random bytes announcing a huge header): what
/// they look like, or `None` to keep the failure as it is.
pub fn foreign_peer(first: &[u8], answered: bool, failure: Option<Failure<'_>>) -> Option<Foreign> {
    if answered || !failure.is_some_and(|f| f.is_by_peer()) {
        return None;
    }
    sockmsg_protocol::sniff::describe(first)
}

struct Message<'a, A: ?Sized> {
    failure: Failure<'a>,
    addr: &'a A,
}

impl<A: fmt::Display + ?Sized> fmt::Display for Message<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = self.addr;
        match self.failure {
            Failure::Resolve(source) => write!(f, "cannot resolve {addr}: {source}"),
            Failure::Refused => write!(f, "connection to {addr} refused"),
            Failure::Connect(source) => write!(f, "cannot connect to {addr}: {source}"),
            Failure::Timeout { op, after } => write!(f, "timed out {op} {addr} after {after:?}"),
            Failure::Deadline {
                op,
                limit,
                received,
            } => match op {
                Op::Connect => write!(
                    f,
                    "timed out connecting to {addr}: the whole exchange had {limit:?}"
                ),
                Op::Write => write!(
                    f,
                    "timed out sending to {addr}: the whole exchange had {limit:?}"
                ),
                Op::Read | Op::Shutdown => write!(
                    f,
                    "timed out: no complete answer from {addr} within {limit:?}, the deadline \
                     for the whole exchange (connect, send, answer); {received} byte(s) of \
                     the answer arrived"
                ),
            },
            Failure::Reset { op, source } => {
                write!(f, "connection reset by {addr} while {}", op.verb())?;
                match source {
                    Some(e) => write!(f, ": {e}"),
                    None => Ok(()),
                }
            }
            Failure::Closed { in_flight } => write!(
                f,
                "{addr} closed the connection with {in_flight} response(s) outstanding"
            ),
            Failure::Protocol(source) => write!(f, "protocol error from {addr}: {source}"),
            Failure::Local(source) => write!(f, "cannot send to {addr}: {source}"),
            Failure::Foreign(seen) => write!(f, "{addr} does not speak this protocol: {seen}"),
            Failure::Io { op, source } => write!(f, "I/O error while {op} {addr}: {source}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shorter_limit_bounds_a_wait_and_each_expiry_is_named() {
        let now = Instant::now();
        let d = Deadline::starting(now, Duration::from_secs(60));
        let wait = next_wait(Some(Duration::from_secs(5)), now, Some(d)).expect("time left");
        assert!(
            wait.is_some_and(|w| w <= Duration::from_secs(5)),
            "{wait:?}"
        );
        let passed = Deadline::starting(now, Duration::ZERO);
        assert_eq!(
            next_wait(Some(Duration::from_secs(5)), now, Some(passed)),
            Err(Expired::Deadline(Duration::ZERO))
        );
        assert_eq!(
            next_wait(Some(Duration::ZERO), now, None),
            Err(Expired::Timeout(Duration::ZERO))
        );
        assert_eq!(next_wait(None, now, None), Ok(None));
    }

    #[test]
    fn io_errors_are_classified_by_operation() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(classify(Op::Connect, &refused), IoClass::Refused);
        assert_eq!(classify(Op::Read, &refused), IoClass::Other);
        let reset = io::Error::from(io::ErrorKind::BrokenPipe);
        assert_eq!(classify(Op::Write, &reset), IoClass::Reset);
        let other = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(classify(Op::Connect, &other), IoClass::Connect);
        let msg = Failure::from_io(Op::Connect, &refused)
            .message("h:1")
            .to_string();
        assert_eq!(msg, "connection to h:1 refused");
        let msg = Failure::Reset {
            op: Op::Read,
            source: None,
        }
        .message("h:1")
        .to_string();
        assert_eq!(msg, "connection reset by h:1 while reading");
    }

    #[test]
    fn a_peer_failure_before_any_answer_is_told_as_what_the_peer_sent() {
        let http = b"HTTP/1.1 400 Bad Request\r\n\r\n";
        let closed = Some(Failure::Closed { in_flight: 1 });
        assert!(foreign_peer(http, false, closed).is_some());
        assert!(
            foreign_peer(http, true, closed).is_none(),
            "answered before"
        );
        assert!(foreign_peer(http, false, Some(Failure::Refused)).is_none());
        assert!(
            foreign_peer(b"\x00\x10{", false, closed).is_none(),
            "plausible"
        );
    }
}
