//! [`Driven`]: what a transport's connection loop drives, whatever sits between the socket
//! and the [`Session`] (nothing, or a TLS machine).

use std::fmt;
use std::io::{self, Read, Write};
use std::time::Instant;

use sockmsg_protocol::ReadSpare;

use crate::{CloseReason, Session};

/// One server connection as a transport's loop sees it: a machine that says what it wants
/// from the socket and takes bytes in and out, with no I/O of its own. A plaintext
/// [`Session`] is one; a TLS composition with a `Session` inside (`sockmsg_tls::TlsSession`)
/// is another. Each transport writes its loop once, generic over `Driven`, and so serves
/// plaintext and TLS with the same code:
///
/// * while [`Driven::wants_write`]: [`Driven::write_to`] the socket;
/// * while [`Driven::wants_read`]: [`Driven::read_from`] the socket;
/// * wait (readiness, a blocking call, a task's wake-up) no later than
///   [`Driven::poll_timeout`], then [`Driven::handle_timeout`];
/// * on the server's shutdown, [`Driven::begin_shutdown`]; on a socket error or an
///   eviction, [`Driven::abort`];
/// * once [`Driven::is_done`], [`Driven::log_close`] and close the socket.
///
/// ## Why `Read`/`Write` and not `read_buf`/`commit`
///
/// Bytes go in through any [`io::Read`] and out through any [`io::Write`], each called
/// once per call. That is the one shape all the machines and all the loops share:
///
/// * rustls takes ciphertext only from a reader (`read_tls`) and gives it only to a writer
///   (`write_tls`): a `read_buf`/`commit` pair would mean a staging buffer per connection
///   (memory an idle connection would keep) and one more copy;
/// * the blocking loop reads from `&TcpStream`, the mio loop from its non-blocking stream,
///   and the tokio loop from a reader over `TcpStream::try_read` (after the runtime said
///   readable): each is an `io::Read` with `WouldBlock` as the only extra outcome, which the
///   machines hand back untouched.
///
/// `now` is when the bytes arrived or left: a non-blocking loop takes it before the call;
/// a blocking one waits for readability first (the std transport peeks), then reads at
/// once.
///
/// ## Memory
///
/// The read buffers of the [`Session`] inside can be lent and taken back
/// ([`Driven::give_read_buffer`], [`Driven::take_read_buffer`]), so an event loop keeps a
/// pool instead of a buffer per idle connection ([`ReadBufferPool`]). A connection may
/// read through more than one (a TLS session: the ciphertext's and the plaintext's): lend
/// until one is handed back, take back until `None`.
pub trait Driven: Send {
    /// The server session inside: its configuration, counters, state, protocol machine.
    /// Bytes go in and out only through the `Driven` methods.
    fn session(&self) -> &Session;

    /// `true` while reading the socket can produce anything.
    fn wants_read(&self) -> bool;

    /// `true` while there are bytes to write.
    fn wants_write(&self) -> bool;

    /// Reads once from `reader` at `now` and takes in what arrived. `Ok(0)` is the end of
    /// the peer's stream, which is recorded. I/O errors (`WouldBlock` included) are
    /// returned untouched, with nothing recorded: the caller decides (usually
    /// [`Driven::abort`] with [`CloseReason::Io`]).
    fn read_from<R: Read + ?Sized>(&mut self, reader: &mut R, now: Instant) -> io::Result<usize>;

    /// As [`Driven::read_from`], from a reader that can also append to a `Vec` (the tokio
    /// server's socket, through `poll_read_buf`): a plaintext [`Session`] reads a large
    /// content's bytes straight into the content's pieces, without zeroing them first
    /// ([`Session::read_spare_from`]). The default is `read_from` (a TLS machine reads
    /// records, not contents, from the socket).
    fn read_spare_from<R: ReadSpare + ?Sized>(
        &mut self,
        reader: &mut R,
        now: Instant,
    ) -> io::Result<usize> {
        self.read_from(reader, now)
    }

    /// Writes pending bytes once to `writer` at `now` and records what it took. Errors as
    /// for [`Driven::read_from`].
    fn write_to<W: Write + ?Sized>(&mut self, writer: &mut W, now: Instant) -> io::Result<usize>;

    /// The instant [`Driven::handle_timeout`] must next be called, if any.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Checks the deadlines at `now`.
    fn handle_timeout(&mut self, now: Instant);

    /// The server is stopping (see [`Session::begin_shutdown`]).
    fn begin_shutdown(&mut self, now: Instant);

    /// Ends the connection at once for `reason`.
    fn abort(&mut self, reason: CloseReason);

    /// `true` once the connection is over and nothing is left to write: close the socket.
    fn is_done(&self) -> bool;

    /// Since when nothing has been in progress or pending (`None` while busy): what
    /// [`crate::WhenFull::EvictIdle`] compares.
    fn idle_since(&self) -> Option<Instant> {
        self.session().idle_since()
    }

    /// Why the session ended, once it did, for counters by reason; `None` also when the
    /// connection ended below the session (a failed TLS handshake, say), which
    /// [`Driven::log_close`] still names.
    fn close_reason(&self) -> Option<&CloseReason> {
        self.session().close_reason()
    }

    /// `true` if the end is a failure worth a `warn` line (as
    /// [`CloseReason::is_failure`]).
    fn is_failure(&self) -> bool {
        self.close_reason().is_some_and(CloseReason::is_failure)
    }

    /// Logs the one line of a closed connection, `closing connection to PEER (REASON)`
    /// (see [`CloseReason::log`]), the same on every transport.
    fn log_close(&self, peer: &dyn fmt::Display);

    /// Lends the connection a buffer to read into; hands it back if it has all the
    /// buffers it reads through already (see [`Session::give_read_buffer`]).
    fn give_read_buffer(&mut self, buf: Vec<u8>) -> Option<Vec<u8>>;

    /// Takes back a read buffer that holds nothing unread: the session's while the
    /// connection is idle (see [`Session::take_read_buffer`]); `None` once there is no
    /// more.
    fn take_read_buffer(&mut self) -> Option<Vec<u8>>;
}

/// A plaintext connection: the socket's bytes are the protocol's.
impl Driven for Session {
    #[inline]
    fn session(&self) -> &Session {
        self
    }

    #[inline]
    fn wants_read(&self) -> bool {
        Session::wants_read(self)
    }

    #[inline]
    fn wants_write(&self) -> bool {
        Session::wants_write(self)
    }

    #[inline]
    fn read_from<R: Read + ?Sized>(&mut self, reader: &mut R, now: Instant) -> io::Result<usize> {
        Session::read_from(self, reader, now)
    }

    #[inline]
    fn read_spare_from<R: ReadSpare + ?Sized>(
        &mut self,
        reader: &mut R,
        now: Instant,
    ) -> io::Result<usize> {
        Session::read_spare_from(self, reader, now)
    }

    #[inline]
    fn write_to<W: Write + ?Sized>(&mut self, writer: &mut W, now: Instant) -> io::Result<usize> {
        Session::write_to(self, writer, now)
    }

    #[inline]
    fn poll_timeout(&self) -> Option<Instant> {
        Session::poll_timeout(self)
    }

    #[inline]
    fn handle_timeout(&mut self, now: Instant) {
        Session::handle_timeout(self, now);
    }

    #[inline]
    fn begin_shutdown(&mut self, now: Instant) {
        Session::begin_shutdown(self, now);
    }

    #[inline]
    fn abort(&mut self, reason: CloseReason) {
        Session::abort(self, reason);
    }

    #[inline]
    fn is_done(&self) -> bool {
        self.is_closed()
    }

    #[inline]
    fn log_close(&self, peer: &dyn fmt::Display) {
        if let Some(reason) = self.close_reason() {
            reason.log(peer);
        }
    }

    #[inline]
    fn give_read_buffer(&mut self, buf: Vec<u8>) -> Option<Vec<u8>> {
        Session::give_read_buffer(self, buf)
    }

    #[inline]
    fn take_read_buffer(&mut self) -> Option<Vec<u8>> {
        Session::take_read_buffer(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use sockmsg_protocol::{encode, Message};

    use super::Driven;
    use crate::{ServerConfig, Service, ServiceError, Session};

    /// The loop of the trait's documentation, generic, over bytes in memory.
    fn drive<D: Driven>(d: &mut D, mut input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while !d.is_done() {
            if d.wants_write() {
                d.write_to(&mut out, Instant::now())
                    .expect("a Vec takes all");
            } else if d.wants_read() {
                d.read_from(&mut input, Instant::now())
                    .expect("a slice reads");
            } else {
                break;
            }
        }
        out
    }

    #[test]
    fn a_session_is_driven_to_its_answer_and_its_close() {
        let service: Arc<dyn Service> = Arc::new(|m: Message| -> Result<Message, ServiceError> {
            Ok(Message::binary(
                "text/plain",
                [b"pong: ", m.content()].concat(),
            ))
        });
        let config = Arc::new(ServerConfig::default().normalized());
        let mut session = Session::new(service, config, Instant::now());
        let request = encode(&Message::binary("text/plain", b"ping".to_vec())).expect("encodes");
        let out = drive(&mut session, &request);
        let (answer, used) = sockmsg_protocol::decode(&out, &Default::default()).expect("decodes");
        assert_eq!(answer.content(), b"pong: ping");
        assert_eq!(used, out.len());
        assert!(session.is_done());
        assert_eq!(
            Driven::close_reason(&session).map(|r| r.label()),
            Some("clean")
        );
        assert!(!Driven::is_failure(&session));
    }
}

/// The read buffers an event loop keeps for its connections ([`Driven::give_read_buffer`],
/// [`Driven::take_read_buffer`]): lent to a connection when its socket has bytes, taken
/// back once it is idle again. A burst of connections that each read a request then needs
/// as many buffers as read at once, not one per connection left behind in the allocator,
/// and an idle connection holds none. The mio and tokio servers keep one per event loop.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Instant;
/// use sockmsg_protocol::{encode, Message};
/// use sockmsg_server::{ReadBufferPool, ServerConfig, ServiceError, Session};
///
/// let echo = |m: Message| Ok::<_, ServiceError>(m);
/// let (config, now) = (Arc::new(ServerConfig::default()), Instant::now());
/// let mut pool = ReadBufferPool::new();
/// let mut session = Session::new(Arc::new(echo), Arc::clone(&config), now);
/// pool.lend(&mut session); // the pool is empty: the session allocates its own
/// session.read_from(&mut &encode(&Message::binary("x/y", b"hi".to_vec()))?[..], now)?;
/// session.write_to(&mut Vec::new(), now)?; // the answer: idle again
/// pool.take_back(&mut session);
/// assert_eq!(pool.len(), 1);
/// // The next connection to read reads into it.
/// let mut next = Session::new(Arc::new(echo), config, now);
/// pool.lend(&mut next);
/// assert!(pool.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct ReadBufferPool {
    buffers: Vec<Vec<u8>>,
}

impl ReadBufferPool {
    /// The most buffers a pool keeps (64: 256 KiB of the servers' 4 KiB buffers); buffers
    /// taken back beyond it are freed.
    pub const MAX: usize = 64;

    /// An empty pool.
    pub const fn new() -> ReadBufferPool {
        ReadBufferPool {
            buffers: Vec::new(),
        }
    }

    /// Buffers held.
    pub fn len(&self) -> usize {
        self.buffers.len()
    }

    /// `true` when it holds no buffer.
    pub fn is_empty(&self) -> bool {
        self.buffers.is_empty()
    }

    /// Lends `conn` buffers until it has all it reads through (one for a plaintext
    /// session, two for TLS) or the pool is empty (it then allocates its own as it reads).
    pub fn lend<D: Driven + ?Sized>(&mut self, conn: &mut D) {
        while let Some(buf) = self.buffers.pop() {
            if let Some(back) = conn.give_read_buffer(buf) {
                self.buffers.push(back);
                break;
            }
        }
    }

    /// Takes back every read buffer `conn` holds with nothing unread (all of them once it
    /// is idle): kept up to [`ReadBufferPool::MAX`], the rest freed.
    pub fn take_back<D: Driven + ?Sized>(&mut self, conn: &mut D) {
        while let Some(buf) = conn.take_read_buffer() {
            if self.buffers.len() < Self::MAX {
                self.buffers.push(buf);
            }
        }
    }
}
