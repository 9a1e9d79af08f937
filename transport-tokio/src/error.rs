//! The client's error type: what went wrong, and with which peer.

use std::fmt;
use std::io;
use std::time::Duration;

use sockmsg_protocol::{Foreign, LocalError, PeerError};

pub use sockmsg_server::client::Op;
use sockmsg_server::client::{classify, Failure, IoClass};

/// Everything an async [`crate::Client`] operation can fail with. Every variant names the
/// peer's address as the caller gave it (`localhost:65432`, `127.0.0.1:65432`), so the
/// message needs no context.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
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
    /// `op` did not complete within `after`.
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
    /// The deadline for the whole exchange passed ([`crate::ClientConfig::deadline`],
    /// [`crate::Client::request_within`]): connecting, sending and receiving the whole
    /// answer together took longer than `limit`, even if each wait was short.
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
    /// The TLS connection failed (feature `tls`): the handshake (an unknown CA, a name the
    /// certificate does not cover, an expired certificate, a plaintext peer...), or the
    /// record layer (a truncation without `close_notify`...). [`ClientError::kind`] is
    /// the reason's own ([`sockmsg_tls::TlsError::kind`]: `"unknown-ca"`, ...).
    #[cfg(feature = "tls")]
    Tls {
        /// The address as given.
        addr: String,
        /// Why.
        source: sockmsg_tls::TlsError,
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

impl ClientError {
    /// Classifies an I/O error of `op` (the clients' one classification,
    /// [`sockmsg_server::client::classify`]).
    pub(crate) fn from_io(addr: &str, op: Op, e: io::Error) -> ClientError {
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
    /// which `sockmsg-tls` words.
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
            #[cfg(feature = "tls")]
            ClientError::Tls { .. } => return None,
        })
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
        match self.failure() {
            Some(failure) => failure.io_kind(),
            None => io::ErrorKind::InvalidData,
        }
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
            | ClientError::Foreign { addr, .. } => addr,
            #[cfg(feature = "tls")]
            ClientError::Tls { addr, .. } => addr,
        }
    }

    /// A short stable name for the error: `"refused"`, `"timeout"`, `"deadline"`, the
    /// core's kind for protocol errors, ...
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Protocol { source, .. } => source.kind(),
            ClientError::Local { source, .. } => source.kind(),
            #[cfg(feature = "tls")]
            ClientError::Tls { source, .. } => source.kind(),
            other => other.failure().map_or("other", |failure| failure.kind()),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.failure() {
            Some(failure) => failure.message(self.addr()).fmt(f),
            #[cfg(feature = "tls")]
            None => match self {
                ClientError::Tls { addr, source } => write!(f, "TLS with {addr} failed: {source}"),
                _ => Ok(()),
            },
            #[cfg(not(feature = "tls"))]
            None => Ok(()),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Resolve { source, .. } | ClientError::Io { source, .. } => Some(source),
            ClientError::Protocol { source, .. } => Some(source),
            ClientError::Local { source, .. } => Some(source),
            #[cfg(feature = "tls")]
            ClientError::Tls { source, .. } => Some(source),
            _ => None,
        }
    }
}
