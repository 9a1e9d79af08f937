//! Why a connection was closed, and the one log line that says so.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::service::{CallError, ServiceError};

/// Why a connection was closed. Its [`Display`](fmt::Display) is the reason logged; a
/// close the server decided (shutdown, a deadline, an answer it would not send) never
/// reads as the peer's doing.
#[derive(Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed its side between messages, and every answer was sent.
    PeerClosed,
    /// [`crate::ServerConfig::close_after_answer`]: the answer was sent.
    Answered,
    /// Nothing happened for the idle timeout.
    Idle(Duration),
    /// A message was not complete within the header deadline of its first byte.
    HeaderDeadline(Duration),
    /// Output was pending, and none of it accepted, for the write deadline.
    WriteDeadline(Duration),
    /// The peer broke the protocol (answers owed before were sent first).
    Protocol(sockmsg_protocol::PeerError),
    /// The service returned an error.
    Service(ServiceError),
    /// The service panicked.
    ServicePanicked,
    /// The service's answer was larger than the server's message limit, so it was not
    /// sent.
    AnswerTooLarge {
        /// Its content length.
        len: u64,
        /// The limit ([`sockmsg_protocol::Limits::max_content_len`]).
        limit: u64,
    },
    /// The service's answer could not be encoded (for instance a header over 65,535 bytes).
    BadAnswer(sockmsg_protocol::LocalError),
    /// A socket error (reset, broken pipe...).
    Io(io::Error),
    /// The server is shutting down.
    Shutdown,
    /// [`crate::ServerConfig::max_connections`] connections were open
    /// ([`crate::WhenFull::Refuse`]).
    Full,
    /// The server-wide [`crate::ServerConfig::memory_budget`] had no room for what the
    /// peer sent (a large message announced), for the service's answer, or for the TLS
    /// layer's record buffers (`sockmsg-tls`).
    OverBudget {
        /// What did not fit: `"request"`, `"answer"` or `"TLS buffer"`.
        what: &'static str,
        /// Bytes it needed.
        need: usize,
        /// The budget, in bytes.
        budget: usize,
    },
    /// No byte of a first request arrived within the first-byte deadline.
    FirstByteDeadline(Duration),
    /// Closed while idle to make room for a new connection at the connection cap
    /// ([`crate::WhenFull::EvictIdle`]).
    Evicted,
    /// The service's answer was larger than the output cap, and answers that large
    /// already held their share of the memory budget
    /// ([`crate::ServerConfig::large_answer_share`]), so it was not queued.
    AnswerShareFull {
        /// Its content length.
        need: usize,
        /// The share, in bytes.
        share: usize,
    },
    /// More than the output cap was queued and the peer took less than
    /// [`crate::ServerConfig::min_send_rate`] of it over a
    /// [`crate::ServerConfig::send_rate_window`].
    SlowReader {
        /// Bytes it took in the window.
        took: u64,
        /// The window's length.
        window: Duration,
        /// The least rate, in bytes per second.
        min_rate: u64,
    },
}

impl CloseReason {
    /// Short names of the kinds of reason, in the order of [`CloseReason::index`]: for
    /// counters and metrics.
    pub const LABELS: [&'static str; 18] = [
        "clean",
        "answered",
        "idle-timeout",
        "header-deadline",
        "write-deadline",
        "protocol-error",
        "service-error",
        "service-panic",
        "answer-too-large",
        "bad-answer",
        "io-error",
        "shutdown",
        "full",
        "over-budget",
        "first-byte-deadline",
        "evicted",
        "answer-share-full",
        "slow-reader",
    ];

    /// The position of this kind of reason in [`CloseReason::LABELS`].
    pub fn index(&self) -> usize {
        match self {
            CloseReason::PeerClosed => 0,
            CloseReason::Answered => 1,
            CloseReason::Idle(_) => 2,
            CloseReason::HeaderDeadline(_) => 3,
            CloseReason::WriteDeadline(_) => 4,
            CloseReason::Protocol(_) => 5,
            CloseReason::Service(_) => 6,
            CloseReason::ServicePanicked => 7,
            CloseReason::AnswerTooLarge { .. } => 8,
            CloseReason::BadAnswer(_) => 9,
            CloseReason::Io(_) => 10,
            CloseReason::Shutdown => 11,
            CloseReason::Full => 12,
            CloseReason::OverBudget { .. } => 13,
            CloseReason::FirstByteDeadline(_) => 14,
            CloseReason::Evicted => 15,
            CloseReason::AnswerShareFull { .. } => 16,
            CloseReason::SlowReader { .. } => 17,
        }
    }

    /// The short name of this kind of reason (see [`CloseReason::LABELS`]).
    pub fn label(&self) -> &'static str {
        Self::LABELS.get(self.index()).copied().unwrap_or("other")
    }

    /// `true` for a failure worth a `warn` line: the peer broke the protocol, the service
    /// failed, an answer could not be sent, or the memory budget (or the large answers'
    /// share of it) was full.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            CloseReason::Protocol(_)
                | CloseReason::Service(_)
                | CloseReason::ServicePanicked
                | CloseReason::AnswerTooLarge { .. }
                | CloseReason::BadAnswer(_)
                | CloseReason::OverBudget { .. }
                | CloseReason::AnswerShareFull { .. }
        )
    }

    /// Logs the one line of a closed connection: `closing connection to PEER (REASON)`, at
    /// `warn` for a failure ([`CloseReason::is_failure`]), `info` otherwise.
    pub fn log(&self, peer: &dyn fmt::Display) {
        if self.is_failure() {
            tracing::warn!("closing connection to {peer} ({self})");
        } else {
            tracing::info!("closing connection to {peer} ({self})");
        }
    }
}

impl From<CallError> for CloseReason {
    fn from(e: CallError) -> CloseReason {
        match e {
            CallError::Failed(e) => CloseReason::Service(e),
            CallError::Panicked => CloseReason::ServicePanicked,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("the client closed it"),
            CloseReason::Answered => f.write_str("answered; closing after each answer"),
            CloseReason::Idle(t) => write!(f, "idle for {t:?}"),
            CloseReason::HeaderDeadline(t) => {
                write!(f, "a request was not complete within {t:?} of its first byte")
            }
            CloseReason::WriteDeadline(t) => {
                write!(f, "the client accepted no answer bytes for {t:?}")
            }
            CloseReason::Protocol(e) => write!(f, "protocol error: {e}"),
            CloseReason::Service(e) => write!(f, "the service failed: {e}"),
            CloseReason::ServicePanicked => f.write_str("the service panicked"),
            CloseReason::AnswerTooLarge { len, limit } => write!(
                f,
                "the service's answer of {len} bytes is over the message limit of {limit} bytes; not sent"
            ),
            CloseReason::BadAnswer(e) => write!(f, "the service's answer cannot be sent: {e}"),
            CloseReason::Io(e) => write!(f, "socket error: {e}"),
            CloseReason::Shutdown => f.write_str("the server is shutting down"),
            CloseReason::Full => f.write_str("max_connections connections are open"),
            CloseReason::OverBudget { what, need, budget } => write!(
                f,
                "no room for a {what} of {need} bytes in the server's memory budget of {budget} bytes; refused"
            ),
            CloseReason::FirstByteDeadline(t) => {
                write!(f, "no request began within {t:?} of connecting")
            }
            CloseReason::Evicted => {
                f.write_str("idle the longest when a new connection came at max_connections")
            }
            CloseReason::AnswerShareFull { need, share } => write!(
                f,
                "no room for an answer of {need} bytes: answers over the output cap already hold their share of the memory budget ({share} bytes); refused"
            ),
            CloseReason::SlowReader {
                took,
                window,
                min_rate,
            } => write!(
                f,
                "the client took {took} bytes of answers in {window:?}, slower than the minimum of {min_rate} bytes/s while answers over the output cap waited"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_indices_and_shutdown_does_not_blame_the_peer() {
        let all = [
            CloseReason::PeerClosed,
            CloseReason::Answered,
            CloseReason::Idle(Duration::from_secs(1)),
            CloseReason::HeaderDeadline(Duration::from_secs(1)),
            CloseReason::WriteDeadline(Duration::from_secs(1)),
            CloseReason::Protocol(sockmsg_protocol::PeerError::UnexpectedEof {
                phase: sockmsg_protocol::Phase::Header,
                missing: 1,
            }),
            CloseReason::Service("x".into()),
            CloseReason::ServicePanicked,
            CloseReason::AnswerTooLarge { len: 2, limit: 1 },
            CloseReason::BadAnswer(sockmsg_protocol::LocalError::SendAfterClose),
            CloseReason::Io(io::Error::from(io::ErrorKind::BrokenPipe)),
            CloseReason::Shutdown,
            CloseReason::Full,
            CloseReason::OverBudget {
                what: "request",
                need: 2,
                budget: 1,
            },
            CloseReason::FirstByteDeadline(Duration::from_secs(1)),
            CloseReason::Evicted,
            CloseReason::AnswerShareFull { need: 2, share: 1 },
            CloseReason::SlowReader {
                took: 1,
                window: Duration::from_secs(1),
                min_rate: 2,
            },
        ];
        assert_eq!(all.len(), CloseReason::LABELS.len());
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.index(), i, "{r}");
        }
        let text = CloseReason::Shutdown.to_string();
        assert!(
            !text.contains("client") && !text.contains("protocol"),
            "{text}"
        );
        assert!(!CloseReason::Shutdown.is_failure());
        assert!(CloseReason::ServicePanicked.is_failure());
    }
}
