//! The blocking client: one TCP connection, whole messages, one request after another.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use sockmsg_protocol::{Connection, Limits, Message, Role};
use tracing::debug;

use crate::error::{Op, TransportError};
use crate::framed::Framed;

/// Longest [`Client::close`] waits for the server to close its side.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How a [`Client`] connects and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Longest wait for the connection to be established. Default: 10 s. `None`: the
    /// operating system's own limit.
    pub connect_timeout: Option<Duration>,
    /// Longest a read may wait without a byte arriving. Default: 30 s. `None`: forever.
    pub read_timeout: Option<Duration>,
    /// Longest a write may wait without a byte being accepted. Default: 30 s. `None`: forever.
    pub write_timeout: Option<Duration>,
    /// What the server's responses may make us accept. Default: [`Limits::default`].
    pub limits: Limits,
    /// Disable Nagle's algorithm (`TCP_NODELAY`), so a request leaves at once. Default: `true`.
    pub nodelay: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(30)),
            write_timeout: Some(Duration::from_secs(30)),
            limits: Limits::default(),
            nodelay: true,
        }
    }
}

/// A blocking client connection: [`Client::request`] sends a request and waits for its
/// response; several requests may use one connection, one after another or pipelined
/// ([`Client::queue`], [`Client::flush`], then [`Client::recv`] for each).
///
/// See the crate documentation for an example.
#[derive(Debug)]
pub struct Client {
    framed: Framed<TcpStream>,
    read_timeout: Option<Duration>,
    write_shut: bool,
}

/// A zero duration means "no timeout" for the socket options (std rejects zero).
fn nonzero(t: Option<Duration>) -> Option<Duration> {
    t.filter(|d| !d.is_zero())
}

impl Client {
    /// Connects to `addr` (a numeric IPv4 or IPv6 address and port). A refused connection is
    /// [`TransportError::Refused`], one that takes longer than
    /// [`ClientConfig::connect_timeout`] is [`TransportError::Timeout`], both naming `addr`.
    pub fn connect(addr: SocketAddr, config: &ClientConfig) -> Result<Client, TransportError> {
        let connect_timeout = nonzero(config.connect_timeout);
        let stream = match connect_timeout {
            Some(t) => TcpStream::connect_timeout(&addr, t),
            None => TcpStream::connect(addr),
        }
        .map_err(|e| match (e.kind(), connect_timeout) {
            (io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock, Some(after)) => {
                TransportError::Timeout {
                    addr,
                    op: Op::Connect,
                    after,
                }
            }
            _ => TransportError::from_io(addr, Op::Connect, e),
        })?;
        let read_timeout = nonzero(config.read_timeout);
        let write_timeout = nonzero(config.write_timeout);
        let setup = |s: &TcpStream| -> io::Result<()> {
            s.set_nodelay(config.nodelay)?;
            s.set_read_timeout(read_timeout)?;
            s.set_write_timeout(write_timeout)
        };
        setup(&stream).map_err(|e| TransportError::from_io(addr, Op::Connect, e))?;
        debug!("connected to {addr}");
        let conn = Connection::new(Role::Client, config.limits.clone());
        Ok(Client {
            framed: Framed::new(stream, conn, addr).with_timeouts(read_timeout, write_timeout),
            read_timeout,
            write_shut: false,
        })
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.framed.peer()
    }

    /// This end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.framed.get_ref().local_addr()
    }

    /// Requests sent whose responses have not been received yet.
    pub fn in_flight(&self) -> u64 {
        self.framed.connection().in_flight()
    }

    /// Sends `request` and waits for its response. With requests already in flight, the
    /// response returned is that of the oldest one (responses come back in order).
    pub fn request(&mut self, request: Message) -> Result<Message, TransportError> {
        self.send(request)?;
        self.recv()
    }

    /// Sends `message`, returning once every byte was written.
    pub fn send(&mut self, message: Message) -> Result<(), TransportError> {
        self.framed.send(message)
    }

    /// Queues `message` without writing it (pipelining); [`Client::flush`] writes.
    pub fn queue(&mut self, message: Message) -> Result<(), TransportError> {
        self.framed.queue(message)
    }

    /// Writes everything queued.
    pub fn flush(&mut self) -> Result<(), TransportError> {
        self.framed.flush()
    }

    /// Waits for the next message. If the server closes cleanly first, that is
    /// [`TransportError::Closed`], with the number of responses it still owed.
    pub fn recv(&mut self) -> Result<Message, TransportError> {
        match self.framed.recv()? {
            Some(m) => Ok(m),
            None => Err(TransportError::Closed {
                addr: self.framed.peer(),
                in_flight: self.framed.connection().in_flight(),
            }),
        }
    }

    /// Writes everything queued, then shuts down the write side (the HOWTO's
    /// `shutdown(1)`): the server sees the end of our stream but can still answer, and
    /// [`Client::recv`] still works. Nothing more can be sent.
    pub fn shutdown_write(&mut self) -> Result<(), TransportError> {
        if self.write_shut {
            return Ok(());
        }
        self.framed.flush()?;
        self.framed.connection_mut().close();
        self.write_shut = true;
        let addr = self.framed.peer();
        self.framed
            .get_ref()
            .shutdown(Shutdown::Write)
            .map_err(|e| TransportError::from_io(addr, Op::Shutdown, e))
    }

    /// Closes properly: writes what is queued, shuts down the write side, then waits (at
    /// most 2 s, or the read timeout if shorter) for the server to close its side, so that
    /// neither end resets the connection. Responses still owed that arrive meanwhile are
    /// discarded; a server that does not close in time is not an error (we are done with
    /// it). An error writing or shutting down is returned.
    pub fn close(mut self) -> Result<(), TransportError> {
        self.shutdown_write()?;
        let Client {
            framed,
            read_timeout,
            ..
        } = self;
        let wait = read_timeout.map_or(CLOSE_WAIT, |t| t.min(CLOSE_WAIT));
        if framed.get_ref().set_read_timeout(Some(wait)).is_err() {
            return Ok(());
        }
        let mut framed = framed.with_timeouts(Some(wait), None);
        while let Ok(Some(m)) = framed.recv() {
            debug!(
                "discarding a {}-byte response received while closing",
                m.content().len()
            );
        }
        debug!("closed connection to {}", framed.peer());
        Ok(())
    }
}
