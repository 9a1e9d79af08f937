//! The transport's error type: what went wrong, and with which peer.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

pub use sockmsg_server::client::Op;
use sockmsg_server::client::{classify, Failure, IoClass};

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
            TransportError::Protocol { source, .. } => match source {
                sockmsg_protocol::Error::Peer(sockmsg_protocol::PeerError::UnexpectedEof {
                    ..
                }) => io::ErrorKind::UnexpectedEof,
                _ => io::ErrorKind::InvalidData,
            },
            TransportError::TrailingBytes { .. } => io::ErrorKind::InvalidData,
            TransportError::Service { .. } => io::ErrorKind::Other,
            other => other
                .failure()
                .map_or(io::ErrorKind::Other, |failure| failure.io_kind()),
        }
    }

    /// A short stable name for the error, the same as every client's for the same failure
    /// (`"refused"`, `"timeout"`, `"deadline"`, `"foreign"`, the core's kind for protocol
    /// errors, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            TransportError::Protocol { source, .. } => source.kind(),
            TransportError::TrailingBytes { .. } => "trailing-bytes",
            TransportError::Service { .. } => "service",
            other => other.failure().map_or("other", |failure| failure.kind()),
        }
    }

    /// Classifies an I/O error of `op` on the connection to `addr` (the clients' one
    /// classification, [`sockmsg_server::client::classify`]).
    pub(crate) fn from_io(addr: SocketAddr, op: Op, source: io::Error) -> TransportError {
        match classify(op, &source) {
            IoClass::Refused => TransportError::Refused { addr },
            IoClass::Reset => TransportError::Reset { addr, op, source },
            IoClass::Connect => TransportError::Connect { addr, source },
            IoClass::Other => TransportError::Io { addr, op, source },
        }
    }

    /// The failure as every client words it ([`Failure`]), for the variants a client
    /// shares with the others.
    pub fn failure(&self) -> Option<Failure<'_>> {
        Some(match self {
            TransportError::Refused { .. } => Failure::Refused,
            TransportError::Connect { source, .. } => Failure::Connect(source),
            TransportError::Timeout { op, after, .. } => Failure::Timeout {
                op: *op,
                after: *after,
            },
            TransportError::Reset { op, source, .. } => Failure::Reset {
                op: *op,
                source: Some(source),
            },
            TransportError::Closed { in_flight, .. } => Failure::Closed {
                in_flight: *in_flight,
            },
            TransportError::Protocol { source, .. } if source.is_peer_error() => {
                Failure::Protocol(source)
            }
            TransportError::Protocol { source, .. } => Failure::Local(source),
            TransportError::Resolve { source, .. } => Failure::Resolve(source),
            TransportError::Deadline {
                op,
                limit,
                received,
                ..
            } => Failure::Deadline {
                op: *op,
                limit: *limit,
                received: *received,
            },
            TransportError::Foreign { seen, .. } => Failure::Foreign(seen),
            TransportError::Io { op, source, .. } => Failure::Io { op: *op, source },
            TransportError::TrailingBytes { .. } | TransportError::Service { .. } => return None,
        })
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(failure) = self.failure() {
            return match self {
                TransportError::Resolve { host, .. } => failure.message(host).fmt(f),
                _ => failure.message(&self.addr()).fmt(f),
            };
        }
        match self {
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
            // Every other variant is worded by `failure`.
            _ => Ok(()),
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
