//! What a server does when `accept` fails: the one policy every transport follows.

use std::io;
use std::time::Duration;

/// How long to stop accepting after an error that says the process or the system is out
/// of something (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`): the connection stays in the
/// backlog and is accepted once a descriptor is free, without spinning meanwhile.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What to do after `accept` failed with `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptAction {
    /// The error concerned one connection, already gone (`ECONNABORTED`, `ECONNRESET`,
    /// `EINTR`): accept again at once.
    Retry,
    /// Nothing more to accept now (`WouldBlock`): wait for the listener's next event.
    Wait,
    /// Stop accepting for this long, then try again (logged at `warn`).
    Backoff(Duration),
}

/// The accept-error policy: which errors to ignore, which to back off on and how long.
///
/// ```
/// use std::io;
/// use sockmsg_server::{accept_error, AcceptAction, ACCEPT_BACKOFF};
/// let reset = io::Error::from(io::ErrorKind::ConnectionReset);
/// assert_eq!(accept_error(&reset), AcceptAction::Retry);
/// let emfile = io::Error::from_raw_os_error(24); // EMFILE on Linux
/// assert_eq!(accept_error(&emfile), AcceptAction::Backoff(ACCEPT_BACKOFF));
/// ```
pub fn accept_error(error: &io::Error) -> AcceptAction {
    match error.kind() {
        io::ErrorKind::WouldBlock => AcceptAction::Wait,
        io::ErrorKind::Interrupted
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset => AcceptAction::Retry,
        _ => {
            tracing::warn!("accept failed: {error}: accepting again in {ACCEPT_BACKOFF:?}");
            AcceptAction::Backoff(ACCEPT_BACKOFF)
        }
    }
}
