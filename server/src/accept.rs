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

/// `TCP_NODELAY` on accepted connections ([`crate::ServerConfig::nodelay`]) at the least
/// cost: set once on the listening socket, which Linux hands down to every connection it
/// accepts, and checked on the first connection; only where it was not handed down (other
/// systems, or a listener made elsewhere) is it set on each connection, one system call
/// each. Shared by a server's accept loops.
///
/// ```
/// use std::net::{TcpListener, TcpStream};
/// use sockmsg_server::NoDelay;
///
/// let listener = TcpListener::bind("127.0.0.1:0")?; // no TCP_NODELAY on it
/// let nodelay = NoDelay::new(true);
/// let _client = TcpStream::connect(listener.local_addr()?)?;
/// let (accepted, _) = listener.accept()?;
/// nodelay.apply(|| accepted.nodelay(), |on| accepted.set_nodelay(on))?;
/// assert!(accepted.nodelay()?);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct NoDelay {
    /// What to do: [`UNKNOWN`] (ask the next connection), [`NOTHING`] or [`EACH`].
    state: std::sync::atomic::AtomicU8,
}

/// Not seen yet: the next connection is asked.
const UNKNOWN: u8 = 0;
/// Nothing to do: accepted connections have it from the listener, or it is not wanted.
const NOTHING: u8 = 1;
/// Set on each connection.
const EACH: u8 = 2;

impl NoDelay {
    /// For connections that should have `TCP_NODELAY` if `wanted` (the listening socket
    /// given it before `listen`, where it can be); without `wanted`, nothing is ever done
    /// (a connection starts without it).
    pub fn new(wanted: bool) -> NoDelay {
        let state = if wanted { UNKNOWN } else { NOTHING };
        NoDelay {
            state: std::sync::atomic::AtomicU8::new(state),
        }
    }

    /// Brings an accepted connection to the wanted setting: `get` reads its
    /// `TCP_NODELAY`, `set` sets it. The first connection is read (one system call, once);
    /// from then on nothing is done where it was handed down, and `set(true)` is called
    /// where it was not.
    pub fn apply(
        &self,
        get: impl FnOnce() -> std::io::Result<bool>,
        set: impl FnOnce(bool) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        match self.state.load(Relaxed) {
            NOTHING => Ok(()),
            EACH => set(true),
            _ => {
                if get()? {
                    self.state.store(NOTHING, Relaxed);
                    Ok(())
                } else {
                    self.state.store(EACH, Relaxed);
                    set(true)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io;
    use std::net::{TcpListener, TcpStream};

    use super::NoDelay;

    /// A listener with `TCP_NODELAY` set before `listen`, or not.
    fn listener(nodelay: bool) -> TcpListener {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        if nodelay {
            socket
                .set_nodelay(true)
                .expect("TCP_NODELAY on the listener");
        }
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
        socket.bind(&addr.into()).expect("bind");
        socket.listen(8).expect("listen");
        socket.into()
    }

    /// Accepts `n` connections through `nodelay`; how many times it read and set the
    /// option, and whether each accepted socket ended with it.
    fn accept(listener: &TcpListener, nodelay: &NoDelay, n: usize) -> (usize, usize, Vec<bool>) {
        let addr = listener.local_addr().expect("address");
        let (gets, sets) = (Cell::new(0), Cell::new(0));
        let mut ended = Vec::new();
        for _ in 0..n {
            let _client = TcpStream::connect(addr).expect("connect");
            let (s, _) = listener.accept().expect("accept");
            nodelay
                .apply(
                    || {
                        gets.set(gets.get() + 1);
                        s.nodelay()
                    },
                    |on| {
                        sets.set(sets.get() + 1);
                        s.set_nodelay(on)
                    },
                )
                .expect("applied");
            ended.push(s.nodelay().expect("read back"));
        }
        (gets.get(), sets.get(), ended)
    }

    #[test]
    fn nodelay_is_set_once_on_the_listener_where_connections_inherit_it() {
        let on_listener = listener(true);
        let (gets, sets, ended) = accept(&on_listener, &NoDelay::new(true), 3);
        assert_eq!(ended, [true; 3]);
        if cfg!(target_os = "linux") {
            // Handed down: read once, never set.
            assert_eq!((gets, sets), (1, 0));
        }
        // A listener without it (made elsewhere): the first connection shows it, and
        // every one is set.
        let plain = listener(false);
        assert_eq!(
            accept(&plain, &NoDelay::new(true), 3),
            (1, 3, vec![true; 3])
        );
        // Not wanted: nothing done, and connections keep the system's default (off).
        assert_eq!(
            accept(&plain, &NoDelay::new(false), 2),
            (0, 0, vec![false; 2])
        );
    }

    #[test]
    fn a_failed_read_is_returned_and_asked_again_next_time() {
        let nodelay = NoDelay::new(true);
        let failed = nodelay.apply(|| Err(io::Error::other("no")), |_| Ok(()));
        assert_eq!(failed.map_err(|e| e.to_string()), Err("no".to_string()));
        // Still unknown: the next connection is read.
        let read = Cell::new(false);
        nodelay
            .apply(
                || {
                    read.set(true);
                    Ok(true)
                },
                |_| panic!("handed down: not set"),
            )
            .expect("applied");
        assert!(read.get());
    }
}
