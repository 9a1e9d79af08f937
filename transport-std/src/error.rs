//! The transport's error type: what went wrong, and with which peer.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// The operation that was under way when a timeout or an I/O error struck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Establishing the connection.
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

/// Everything a blocking transport operation can fail with. Every variant names the peer's
/// address, so a message such as `connection to 127.0.0.1:65432 refused` needs no context.
///
/// The stream variants ([`TransportError::Reset`], [`TransportError::Closed`],
/// [`TransportError::Protocol`], [`TransportError::Io`]) leave the connection unusable;
/// after a [`TransportError::Timeout`] on a read the caller may retry, but a message may be
/// half received, so closing is the usual answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum TransportError {
    /// Nothing listens at `addr` (`ECONNREFUSED`).
    Refused {
        /// The address we tried.
        addr: SocketAddr,
    },
    /// Connecting failed for another reason (unreachable network, no route, ...).
    Connect {
        /// The address we tried.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// `op` made no progress for `after`.
    Timeout {
        /// The peer.
        addr: SocketAddr,
        /// What was under way.
        op: Op,
        /// The time limit that ran out.
        after: Duration,
    },
    /// The peer reset or aborted the connection, or it broke while we wrote
    /// (`ECONNRESET`, `ECONNABORTED`, `EPIPE`).
    Reset {
        /// The peer.
        addr: SocketAddr,
        /// What was under way.
        op: Op,
        /// The operating system's error.
        source: io::Error,
    },
    /// The peer closed the connection cleanly between two messages while `in_flight`
    /// responses were still owed to us.
    Closed {
        /// The peer.
        addr: SocketAddr,
        /// Requests sent and not answered when the peer closed.
        in_flight: u64,
    },
    /// The peer's bytes broke the protocol, or the stream ended inside a message
    /// ([`sockmsg_protocol::PeerError::UnexpectedEof`]); or this program tried to send a message
    /// the protocol cannot carry (see [`sockmsg_protocol::Error::is_peer_error`]).
    Protocol {
        /// The peer.
        addr: SocketAddr,
        /// The protocol machine's verdict.
        source: sockmsg_protocol::Error,
    },
    /// A datagram held a whole message and `extra` more bytes (each datagram must carry
    /// exactly one message).
    TrailingBytes {
        /// The sender.
        addr: SocketAddr,
        /// Length of the message at the start of the datagram.
        message_len: usize,
        /// Bytes after it.
        extra: usize,
    },
    /// The service failed to answer a request from `addr`.
    Service {
        /// Who sent the request.
        addr: SocketAddr,
        /// The service's error.
        source: sockmsg_server::ServiceError,
    },
    /// The host name could not be resolved to any address (no connection was tried).
    /// [`TransportError::addr`] is the unspecified address `0.0.0.0:0` for it.
    Resolve {
        /// The host as given (`"example.invalid:8080"`, `"localhost:8080"`).
        host: String,
        /// The resolver's error (kind `NotFound` when it gave no address).
        source: io::Error,
    },
    /// The deadline for the whole exchange passed ([`crate::ClientConfig::deadline`],
    /// [`crate::Client::request_within`]): connecting, sending and receiving the whole
    /// answer together took longer than `limit`, even if each wait was short.
    Deadline {
        /// The peer.
        addr: SocketAddr,
        /// What was under way when time ran out.
        op: Op,
        /// The time allowed for the whole exchange.
        limit: Duration,
        /// Bytes of the answer received before time ran out.
        received: u64,
    },
    /// The peer does not speak this protocol: its first bytes cannot start a message (see
    /// [`sockmsg_protocol::sniff`](mod@sockmsg_protocol::sniff)), and `seen` says what
    /// they look like.
    Foreign {
        /// The peer.
        addr: SocketAddr,
        /// What it sent, as far as its first bytes tell.
        seen: sockmsg_protocol::Foreign,
    },
    /// Any other I/O error (including `WriteZero` from a writer that accepts nothing).
    Io {
        /// The peer.
        addr: SocketAddr,
        /// What was under way.
        op: Op,
        /// The error.
        source: io::Error,
    },
}

impl TransportError {
    /// The peer's address (the one we tried to reach, for connection errors; the
    /// unspecified address `0.0.0.0:0` for [`TransportError::Resolve`], which has none).
    pub fn addr(&self) -> SocketAddr {
        match self {
            TransportError::Resolve { .. } => SocketAddr::from(([0, 0, 0, 0], 0)),
            TransportError::Refused { addr }
            | TransportError::Connect { addr, .. }
            | TransportError::Timeout { addr, .. }
            | TransportError::Reset { addr, .. }
            | TransportError::Closed { addr, .. }
            | TransportError::Protocol { addr, .. }
            | TransportError::TrailingBytes { addr, .. }
            | TransportError::Service { addr, .. }
            | TransportError::Deadline { addr, .. }
            | TransportError::Foreign { addr, .. }
            | TransportError::Io { addr, .. } => *addr,
        }
    }

    /// `true` for [`TransportError::Timeout`] and [`TransportError::Deadline`].
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            TransportError::Timeout { .. } | TransportError::Deadline { .. }
        )
    }

    /// The protocol error, for [`TransportError::Protocol`].
    pub fn protocol_error(&self) -> Option<&sockmsg_protocol::Error> {
        match self {
            TransportError::Protocol { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The closest [`io::ErrorKind`]: what this error would be as an `io::Error`.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            TransportError::Refused { .. } => io::ErrorKind::ConnectionRefused,
            TransportError::Connect { source, .. }
            | TransportError::Reset { source, .. }
            | TransportError::Resolve { source, .. }
            | TransportError::Io { source, .. } => source.kind(),
            TransportError::Timeout { .. } | TransportError::Deadline { .. } => {
                io::ErrorKind::TimedOut
            }
            TransportError::Foreign { .. } => io::ErrorKind::InvalidData,
            TransportError::Closed { .. } => io::ErrorKind::UnexpectedEof,
            TransportError::Protocol { source, .. } => match source {
                sockmsg_protocol::Error::Peer(sockmsg_protocol::PeerError::UnexpectedEof {
                    ..
                }) => io::ErrorKind::UnexpectedEof,
                _ => io::ErrorKind::InvalidData,
            },
            TransportError::TrailingBytes { .. } => io::ErrorKind::InvalidData,
            TransportError::Service { .. } => io::ErrorKind::Other,
        }
    }

    /// Classifies an I/O error of `op` on the connection to `addr`.
    pub(crate) fn from_io(addr: SocketAddr, op: Op, source: io::Error) -> TransportError {
        use io::ErrorKind as K;
        match source.kind() {
            K::ConnectionRefused if op == Op::Connect => TransportError::Refused { addr },
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
                TransportError::Reset { addr, op, source }
            }
            _ if op == Op::Connect => TransportError::Connect { addr, source },
            _ => TransportError::Io { addr, op, source },
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Refused { addr } => write!(f, "connection to {addr} refused"),
            TransportError::Connect { addr, source } => {
                write!(f, "cannot connect to {addr}: {source}")
            }
            TransportError::Timeout { addr, op, after } => {
                write!(f, "timed out {op} {addr} after {after:?}")
            }
            TransportError::Reset { addr, op, source } => {
                write!(
                    f,
                    "connection reset by {addr} while {}: {source}",
                    op.verb()
                )
            }
            TransportError::Closed { addr, in_flight } => write!(
                f,
                "{addr} closed the connection with {in_flight} response(s) outstanding"
            ),
            TransportError::Protocol { addr, source } => {
                if source.is_peer_error() {
                    write!(f, "protocol error from {addr}: {source}")
                } else {
                    write!(f, "cannot send to {addr}: {source}")
                }
            }
            TransportError::TrailingBytes {
                addr,
                message_len,
                extra,
            } => write!(
                f,
                "datagram from {addr}: {extra} byte(s) after the {message_len}-byte message"
            ),
            TransportError::Service { addr, source } => {
                write!(f, "the service failed on a request from {addr}: {source}")
            }
            TransportError::Resolve { host, source } => {
                write!(f, "cannot resolve {host}: {source}")
            }
            TransportError::Deadline {
                addr,
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
            TransportError::Foreign { addr, seen } => {
                write!(f, "{addr} does not speak this protocol: {seen}")
            }
            TransportError::Io { addr, op, source } => {
                write!(f, "I/O error while {op} {addr}: {source}")
            }
        }
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TransportError::Connect { source, .. }
            | TransportError::Reset { source, .. }
            | TransportError::Resolve { source, .. }
            | TransportError::Io { source, .. } => Some(source),
            TransportError::Protocol { source, .. } => Some(source),
            TransportError::Service { source, .. } => {
                let source: &(dyn std::error::Error + 'static) = &**source;
                Some(source)
            }
            _ => None,
        }
    }
}

impl From<TransportError> for io::Error {
    fn from(e: TransportError) -> io::Error {
        io::Error::new(e.io_kind(), e)
    }
}
