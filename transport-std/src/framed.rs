//! The blocking loop around the protocol machine: any `Read + Write` stream, whole messages.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use sockmsg_protocol::{Connection, Event, Message};

use crate::error::{Op, TransportError};

/// A `WouldBlock` that came back sooner than this is a non-blocking stream (or a mock), not
/// an expired socket timeout: the loop pauses [`RETRY_PAUSE`] before trying again.
const FAST_WOULD_BLOCK: Duration = Duration::from_millis(1);
/// Pause between retries of a stream that returns `WouldBlock` at once.
const RETRY_PAUSE: Duration = Duration::from_millis(1);
/// Timer slack: a socket timeout that expired this close to the limit counts as the limit.
const SLACK: Duration = Duration::from_millis(5);

/// What one read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadStatus {
    /// Bytes arrived and were handed to the decoder.
    Data,
    /// The peer closed its side; the decoder knows.
    Eof,
    /// Nothing arrived (`WouldBlock` or `TimedOut`); the call blocked this long.
    WouldBlock(Duration),
}

/// What a peer sent, taken from bytes already received.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A complete message.
    Message(Message),
    /// The peer closed cleanly between two messages.
    End,
}

/// A [`Connection`] driven over a blocking stream: [`Framed::send`] loops until every byte is
/// written, [`Framed::recv`] loops until a whole message (or the end of the stream) arrived.
///
/// It is the whole of this crate's framing: the bytes go through
/// [`Connection::read_from`] and [`Connection::write_to`], nothing else parses or encodes.
/// It works on any `Read + Write` (a `TcpStream`, a Unix socket, a test double), and
/// survives everything a stream may do: reads of one byte, short writes, `Interrupted`
/// (retried at once) and `WouldBlock` (retried until the timeout of the operation, counted
/// from its last progress, expires: that is how a socket timeout shows up). A writer that
/// accepts nothing is an error of kind `WriteZero`, and an end of stream inside a message is
/// [`sockmsg_protocol::PeerError::UnexpectedEof`]: it never hangs.
///
/// ```
/// use std::io::Cursor;
/// use sockmsg_protocol::{encode, Connection, Message};
/// use sockmsg_transport_std::Framed;
///
/// // A "stream" that holds one encoded message, then ends.
/// let wire = encode(&Message::binary("x/y", b"hello".to_vec()))?;
/// let peer = "192.0.2.1:9".parse()?; // only used to name the peer in errors
/// let mut framed = Framed::new(Cursor::new(wire), Connection::server(), peer);
/// let message = framed.recv()?.expect("one message");
/// assert_eq!(message.content(), b"hello");
/// assert!(framed.recv()?.is_none()); // clean end of stream
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Framed<S> {
    stream: S,
    conn: Connection,
    peer: SocketAddr,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl<S: Read + Write> Framed<S> {
    /// Drives `conn` over `stream`; `peer` is the address errors name. No timeouts: a
    /// `WouldBlock` is retried until the stream makes progress.
    pub fn new(stream: S, conn: Connection, peer: SocketAddr) -> Framed<S> {
        Framed {
            stream,
            conn,
            peer,
            read_timeout: None,
            write_timeout: None,
        }
    }

    /// Sets how long a read (a write) may make no progress before it fails with
    /// [`TransportError::Timeout`]. These do not set socket options: the stream must return
    /// `WouldBlock` or `TimedOut` now and then (a socket with `SO_RCVTIMEO`/`SO_SNDTIMEO`,
    /// or a non-blocking stream) for them to be checked.
    pub fn with_timeouts(mut self, read: Option<Duration>, write: Option<Duration>) -> Framed<S> {
        self.read_timeout = read;
        self.write_timeout = write;
        self
    }

    /// The peer's address, as errors name it.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The protocol state.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The protocol state, mutably.
    pub fn connection_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The stream and the protocol state.
    pub fn into_parts(self) -> (S, Connection) {
        (self.stream, self.conn)
    }

    /// Queues `message` without writing it (to pipeline several, then [`Framed::flush`]).
    pub fn queue(&mut self, message: Message) -> Result<(), TransportError> {
        self.conn
            .send(message, Instant::now())
            .map_err(|source| TransportError::Protocol {
                addr: self.peer,
                source: source.into(),
            })
    }

    /// Writes everything queued, looping until the last byte is accepted.
    pub fn flush(&mut self) -> Result<(), TransportError> {
        let mut since = Instant::now();
        while self.conn.wants_write() {
            match self.write_once()? {
                None => since = Instant::now(),
                Some(blocked) => self.pause(Op::Write, since, self.write_timeout, blocked)?,
            }
        }
        loop {
            match self.stream.flush() {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TransportError::from_io(self.peer, Op::Write, e)),
            }
        }
    }

    /// Queues `message` and writes everything queued.
    pub fn send(&mut self, message: Message) -> Result<(), TransportError> {
        self.queue(message)?;
        self.flush()
    }

    /// The next message, reading as much as it takes; `None` if the peer closed cleanly
    /// between two messages. An end of stream inside a message is
    /// [`TransportError::Protocol`] with [`sockmsg_protocol::PeerError::UnexpectedEof`].
    pub fn recv(&mut self) -> Result<Option<Message>, TransportError> {
        let mut since = Instant::now();
        loop {
            match self.poll_event()? {
                Some(Incoming::Message(m)) => return Ok(Some(m)),
                Some(Incoming::End) => return Ok(None),
                None => {}
            }
            match self.read_once()? {
                ReadStatus::Data | ReadStatus::Eof => since = Instant::now(),
                ReadStatus::WouldBlock(blocked) => {
                    self.pause(Op::Read, since, self.read_timeout, blocked)?
                }
            }
        }
    }

    /// The next message or end from bytes already received; `None` if more are needed.
    pub(crate) fn poll_event(&mut self) -> Result<Option<Incoming>, TransportError> {
        match self.conn.next_event() {
            Ok(Event::Message(m)) => Ok(Some(Incoming::Message(m))),
            Ok(Event::End) => Ok(Some(Incoming::End)),
            Ok(Event::NeedData) => Ok(None),
            Err(source) => Err(TransportError::Protocol {
                addr: self.peer,
                source: source.into(),
            }),
        }
    }

    /// Reads once into the decoder, retrying `Interrupted`.
    pub(crate) fn read_once(&mut self) -> Result<ReadStatus, TransportError> {
        loop {
            let start = Instant::now();
            match self.conn.read_from(&mut self.stream, start) {
                Ok(0) => return Ok(ReadStatus::Eof),
                Ok(_) => return Ok(ReadStatus::Data),
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        return Ok(ReadStatus::WouldBlock(start.elapsed()))
                    }
                    _ => return Err(TransportError::from_io(self.peer, Op::Read, e)),
                },
            }
        }
    }

    /// Writes once from the encoder, retrying `Interrupted`: `None` if bytes were accepted,
    /// `Some(how long it blocked)` on `WouldBlock`/`TimedOut`.
    pub(crate) fn write_once(&mut self) -> Result<Option<Duration>, TransportError> {
        loop {
            let start = Instant::now();
            match self.conn.write_to(&mut self.stream, start) {
                Ok(_) => return Ok(None),
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        return Ok(Some(start.elapsed()))
                    }
                    _ => return Err(TransportError::from_io(self.peer, Op::Write, e)),
                },
            }
        }
    }

    /// After a `WouldBlock`: fails once `timeout` has passed since the last progress,
    /// otherwise pauses briefly if the stream did not block at all.
    fn pause(
        &self,
        op: Op,
        since: Instant,
        timeout: Option<Duration>,
        blocked: Duration,
    ) -> Result<(), TransportError> {
        if let Some(after) = timeout {
            if since.elapsed() + SLACK >= after {
                return Err(TransportError::Timeout {
                    addr: self.peer,
                    op,
                    after,
                });
            }
        }
        if blocked < FAST_WOULD_BLOCK {
            thread::sleep(RETRY_PAUSE);
        }
        Ok(())
    }
}
