//! The client's error type: what went wrong, and with which peer.

use std::fmt;
use std::io;
use std::time::Duration;

use sockmsg_protocol::{LocalError, PeerError};

/// The operation that was under way when a timeout or an I/O error struck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Resolving the name and establishing the connection.
    Connect,
    /// Waiting for bytes from the peer.
    Read,
    /// Handing bytes to the peer.
    Write,
    /// Shutting down the write side (half-close).
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
}

impl ClientError {
    pub(crate) fn from_io(addr: &str, op: Op, e: io::Error) -> ClientError {
        use io::ErrorKind::*;
        let addr = addr.to_owned();
        match e.kind() {
            ConnectionRefused if op == Op::Connect => ClientError::Refused { addr },
            ConnectionReset | ConnectionAborted | BrokenPipe => ClientError::Reset { addr, op },
            _ => ClientError::Io {
                addr,
                op,
                source: e,
            },
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
            | ClientError::Closed { addr, .. } => addr,
        }
    }

    /// A short stable name for the error: `"refused"`, `"timeout"`, the core's kind for
    /// protocol errors, ...
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Resolve { .. } => "resolve",
            ClientError::Refused { .. } => "refused",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Reset { .. } => "reset",
            ClientError::Io { .. } => "io",
            ClientError::Protocol { source, .. } => source.kind(),
            ClientError::Local { source, .. } => source.kind(),
            ClientError::Closed { .. } => "closed",
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Resolve { addr, source } => write!(f, "cannot resolve {addr}: {source}"),
            ClientError::Refused { addr } => write!(f, "connection to {addr} refused"),
            ClientError::Timeout { addr, op, after } => {
                write!(f, "{op} {addr}: no progress in {after:?}")
            }
            ClientError::Reset { addr, op } => write!(f, "{op} {addr}: connection reset"),
            ClientError::Io { addr, op, source } => write!(f, "{op} {addr}: {source}"),
            ClientError::Protocol { addr, source } => {
                write!(f, "protocol error from {addr}: {source}")
            }
            ClientError::Local { addr, source } => write!(f, "sending to {addr}: {source}"),
            ClientError::Closed { addr, in_flight } => write!(
                f,
                "{addr} closed the connection with {in_flight} answer(s) owed"
            ),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Resolve { source, .. } | ClientError::Io { source, .. } => Some(source),
            ClientError::Protocol { source, .. } => Some(source),
            ClientError::Local { source, .. } => Some(source),
            _ => None,
        }
    }
}
