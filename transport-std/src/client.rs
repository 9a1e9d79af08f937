//! The blocking client: one TCP connection, whole messages, one request after another.

pub use sockmsg_server::ServerAddr;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sockmsg_protocol::sniff::{sniff, Sniff, SNIFF_LEN};
use sockmsg_protocol::{Connection, Foreign, Message, Role};
use tracing::debug;

use crate::error::{Op, TransportError};
use crate::framed::{Framed, Incoming, ReadStatus};

/// How a [`Client`] connects and how long it waits: one configuration for every client
/// transport ([`sockmsg_server::client`]). The exchange deadline
/// ([`ClientConfig::deadline`]) covers [`Client::connect`] (every address tried), and
/// each [`Client::request`] (sending the request and receiving the whole answer),
/// [`Client::send`], [`Client::flush`], [`Client::recv`], ending with
/// [`TransportError::Deadline`]. To bound connecting and the first exchange together, use
/// [`Client::connect_by`] and [`Client::request_by`] with one [`Deadline`].
pub use sockmsg_server::client::ClientConfig;
/// A point in time by which an exchange must be done ([`sockmsg_server::client::Deadline`]).
///
/// ```
/// use std::time::Duration;
/// use sockmsg_transport_std::Deadline;
/// let d = Deadline::after(Duration::from_secs(3));
/// assert_eq!(d.limit(), Duration::from_secs(3));
/// assert!(d.remaining() <= Duration::from_secs(3));
/// ```
pub use sockmsg_server::client::Deadline;
use sockmsg_server::client::{foreign_peer, next_wait, ConnectFailure, Expired};

/// Every address `addr` resolves to, or [`TransportError::Resolve`] naming it.
fn resolve(addr: &(impl ServerAddr + ?Sized)) -> Result<Vec<SocketAddr>, TransportError> {
    let resolve_error = |source| TransportError::Resolve {
        host: addr.name(),
        source,
    };
    sockmsg_server::addr::resolve(addr).map_err(resolve_error)
}

/// The stream, keeping a copy of its first [`SNIFF_LEN`] bytes (to say what a peer that
/// does not speak this protocol sent) and counting what was read.
#[derive(Debug)]
struct Recorder {
    stream: TcpStream,
    first: Vec<u8>,
    read: u64,
}

impl Read for Recorder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.read += n as u64;
        let room = SNIFF_LEN.saturating_sub(self.first.len());
        if room > 0 {
            let got = buf.get(..n.min(room)).unwrap_or_default();
            self.first.extend_from_slice(got);
        }
        Ok(n)
    }
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// A blocking client connection: [`Client::request`] sends a request and waits for its
/// response; several requests may use one connection, one after another or pipelined
/// ([`Client::queue`], [`Client::flush`], then [`Client::recv`] for each).
///
/// Every operation has a deadline ([`ClientConfig::deadline`], or one given with
/// [`Client::request_within`] / [`Client::request_by`]), so a server that drips its answer
/// cannot hold the client longer. If the server's first bytes cannot start a message of
/// this protocol (an HTTP or TLS server, say), the error is [`TransportError::Foreign`],
/// saying what they look like, as soon as they arrive.
///
/// See the crate documentation for an example.
#[derive(Debug)]
pub struct Client {
    framed: Framed<Recorder>,
    /// Its time limits ([`ClientConfig::exchange_deadline`], [`ClientConfig::idle_timeout`]).
    config: ClientConfig,
    /// The first bytes are not known to be plausible yet: check them as they arrive.
    sniffing: bool,
    /// At least one message arrived (the server speaks this protocol).
    answered: bool,
    write_shut: bool,
}

impl Client {
    /// Connects to `addr`: a `SocketAddr`, `"host:port"`, `("host", port)`... A host name
    /// is resolved (a failure is [`TransportError::Resolve`], naming it) and each of its
    /// addresses is tried in turn, each for at most [`ClientConfig::connect_timeout`], all
    /// within [`ClientConfig::deadline`]. If none accepts, the error is that of the last
    /// address: [`TransportError::Refused`], [`TransportError::Timeout`],
    /// [`TransportError::Deadline`]... naming that address.
    ///
    /// Name resolution uses the system's resolver, which the deadline cannot interrupt: a
    /// resolver that takes longer than the deadline makes this return
    /// [`TransportError::Deadline`] only once it answers.
    pub fn connect(addr: impl ServerAddr, config: &ClientConfig) -> Result<Client, TransportError> {
        Client::connect_by(addr, config, config.exchange_deadline())
    }

    /// [`Client::connect`], finished by `deadline` (`None`: no overall limit) rather than
    /// by [`ClientConfig::deadline`]. With the same deadline given to
    /// [`Client::request_by`], connecting, sending and the whole answer share one limit.
    pub fn connect_by(
        addr: impl ServerAddr,
        config: &ClientConfig,
        deadline: Option<Deadline>,
    ) -> Result<Client, TransportError> {
        let addrs = resolve(&addr)?;
        let (stream, addr) = sockmsg_server::client::connect(&addrs, config, deadline).map_err(
            |(addr, failure)| match failure {
                ConnectFailure::Deadline(limit) => TransportError::Deadline {
                    addr,
                    op: Op::Connect,
                    limit,
                    received: 0,
                },
                ConnectFailure::Timeout(after) => TransportError::Timeout {
                    addr,
                    op: Op::Connect,
                    after,
                },
                ConnectFailure::Io(e) => TransportError::from_io(addr, Op::Connect, e),
            },
        )?;
        debug!("connected to {addr}");
        let conn = Connection::new(Role::Client, config.limits.clone());
        let recorder = Recorder {
            stream,
            first: Vec::with_capacity(SNIFF_LEN),
            read: 0,
        };
        Ok(Client {
            framed: Framed::new(recorder, conn, addr),
            config: config.clone(),
            sniffing: true,
            answered: false,
            write_shut: false,
        })
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.framed.peer()
    }

    /// This end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.framed.get_ref().stream.local_addr()
    }

    /// Requests sent whose responses have not been received yet.
    pub fn in_flight(&self) -> u64 {
        self.framed.connection().in_flight()
    }

    /// Sends `request` and waits for its response, all within [`ClientConfig::deadline`].
    /// With requests already in flight, the response returned is that of the oldest one
    /// (responses come back in order).
    pub fn request(&mut self, request: Message) -> Result<Message, TransportError> {
        self.request_by(request, self.config.exchange_deadline())
    }

    /// Sends `request` and receives the whole response within `limit`, however the server
    /// spreads its bytes: [`TransportError::Deadline`] otherwise.
    pub fn request_within(
        &mut self,
        request: Message,
        limit: Duration,
    ) -> Result<Message, TransportError> {
        self.request_by(request, Some(Deadline::after(limit)))
    }

    /// Sends `request` and receives the whole response by `deadline` (`None`: no overall
    /// limit, only the per-wait timeouts).
    pub fn request_by(
        &mut self,
        request: Message,
        deadline: Option<Deadline>,
    ) -> Result<Message, TransportError> {
        self.queue(request)?;
        self.flush_by(deadline)?;
        self.recv_by(deadline)
    }

    /// Sends `message`, returning once every byte was written (within
    /// [`ClientConfig::deadline`]).
    pub fn send(&mut self, message: Message) -> Result<(), TransportError> {
        self.queue(message)?;
        self.flush()
    }

    /// Queues `message` without writing it (pipelining); [`Client::flush`] writes.
    pub fn queue(&mut self, message: Message) -> Result<(), TransportError> {
        self.framed.queue(message)
    }

    /// Writes everything queued (within [`ClientConfig::deadline`]).
    pub fn flush(&mut self) -> Result<(), TransportError> {
        self.flush_by(self.config.exchange_deadline())
    }

    /// Writes everything queued by `deadline`.
    pub fn flush_by(&mut self, deadline: Option<Deadline>) -> Result<(), TransportError> {
        let mut progress = Instant::now();
        while self.framed.connection().wants_write() {
            let wait = self.wait(Op::Write, progress, deadline, 0)?;
            let addr = self.framed.peer();
            self.framed
                .get_ref()
                .stream
                .set_write_timeout(wait)
                .map_err(|e| TransportError::from_io(addr, Op::Write, e))?;
            if self.framed.write_once()?.is_none() {
                progress = Instant::now();
            }
        }
        Ok(())
    }

    /// Waits for the next message (within [`ClientConfig::deadline`]). If the server closes
    /// cleanly first, that is [`TransportError::Closed`], with the number of responses it
    /// still owed.
    pub fn recv(&mut self) -> Result<Message, TransportError> {
        self.recv_by(self.config.exchange_deadline())
    }

    /// Waits for the next message, all of it by `deadline`.
    pub fn recv_by(&mut self, deadline: Option<Deadline>) -> Result<Message, TransportError> {
        let result = self.recv_inner(deadline);
        match result {
            Ok(m) => {
                self.answered = true;
                self.sniffing = false;
                Ok(m)
            }
            Err(e) => Err(self.explain(e)),
        }
    }

    fn recv_inner(&mut self, deadline: Option<Deadline>) -> Result<Message, TransportError> {
        let start = self.framed.get_ref().read;
        let mut progress = Instant::now();
        loop {
            if self.sniffing {
                match sniff(&self.framed.get_ref().first) {
                    Sniff::Plausible => self.sniffing = false,
                    Sniff::NeedMore => {}
                    Sniff::Foreign(seen) => return Err(self.foreign(seen)),
                }
            }
            match self.framed.poll_event()? {
                Some(Incoming::Message(m)) => return Ok(m),
                Some(Incoming::End) => {
                    return Err(TransportError::Closed {
                        addr: self.framed.peer(),
                        in_flight: self.framed.connection().in_flight(),
                    })
                }
                None => {}
            }
            let received = self.framed.get_ref().read - start;
            let wait = self.wait(Op::Read, progress, deadline, received)?;
            let addr = self.framed.peer();
            self.framed
                .get_ref()
                .stream
                .set_read_timeout(wait)
                .map_err(|e| TransportError::from_io(addr, Op::Read, e))?;
            match self.framed.read_once()? {
                ReadStatus::Data | ReadStatus::Eof => progress = Instant::now(),
                ReadStatus::WouldBlock(_) => {}
            }
        }
    }

    /// How long the next socket wait of `op` may block: the shorter of the time left before
    /// the per-wait timeout (counted from the last `progress`) and before `deadline`; an
    /// error once either has passed.
    fn wait(
        &self,
        op: Op,
        progress: Instant,
        deadline: Option<Deadline>,
        received: u64,
    ) -> Result<Option<Duration>, TransportError> {
        let addr = self.framed.peer();
        next_wait(self.config.idle_timeout(op), progress, deadline).map_err(|expired| match expired
        {
            Expired::Deadline(limit) => TransportError::Deadline {
                addr,
                op,
                limit,
                received,
            },
            Expired::Timeout(after) => TransportError::Timeout { addr, op, after },
        })
    }

    fn foreign(&self, seen: Foreign) -> TransportError {
        TransportError::Foreign {
            addr: self.framed.peer(),
            seen,
        }
    }

    /// Before any message arrived, an error caused by the peer (bytes that break the
    /// protocol, a close, a time limit) is better told as what the peer sent, if its first
    /// bytes cannot start a message.
    fn explain(&self, e: TransportError) -> TransportError {
        match foreign_peer(&self.framed.get_ref().first, self.answered, e.failure()) {
            Some(seen) => self.foreign(seen),
            None => e,
        }
    }

    /// Writes everything queued, then shuts down the write side (the HOWTO's
    /// `shutdown(1)`): the server sees the end of our stream but can still answer, and
    /// [`Client::recv`] still works. Nothing more can be sent.
    pub fn shutdown_write(&mut self) -> Result<(), TransportError> {
        if self.write_shut {
            return Ok(());
        }
        self.flush()?;
        self.framed.connection_mut().close();
        self.write_shut = true;
        let addr = self.framed.peer();
        self.framed
            .get_ref()
            .stream
            .shutdown(Shutdown::Write)
            .map_err(|e| TransportError::from_io(addr, Op::Shutdown, e))
    }

    /// Closes properly: writes what is queued, shuts down the write side, then waits (at
    /// most 2 s in all, or the read timeout if shorter, however the server spreads its
    /// bytes) for the server to close its side, so that neither end resets the connection.
    /// Responses still owed that arrive meanwhile are discarded; a server that does not
    /// close in time is not an error (we are done with it). An error writing or shutting
    /// down is returned. To leave without waiting, see [`Client::close_now`].
    pub fn close(mut self) -> Result<(), TransportError> {
        self.shutdown_write()?;
        let deadline = Some(Deadline::after(self.config.close_wait()));
        while let Ok(m) = self.recv_inner(deadline) {
            debug!(
                "discarding a {}-byte response received while closing",
                m.content().len()
            );
        }
        debug!("closed connection to {}", self.framed.peer());
        Ok(())
    }

    /// Closes at once, without waiting for the server: nothing queued is written, nothing
    /// more is read. Use it once the answers needed are in, when what the server may still
    /// send does not matter. If the server sent bytes that were not read, the system resets
    /// the connection (the server sees `ECONNRESET`) rather than closing it cleanly.
    pub fn close_now(self) {
        let addr = self.framed.peer();
        let (recorder, _) = self.framed.into_parts();
        // Best effort: the socket is closed when dropped whatever this returns.
        let _ = recorder.stream.shutdown(Shutdown::Both);
        debug!("closed connection to {addr} without waiting");
    }
}
