//! [`TlsClient`]: a blocking sockmsg client over TLS, a thin loop over [`TlsConnection`]
//! and over the client layer every transport shares ([`sockmsg_server::client`]: the
//! configuration, the exchange deadline, the error kinds and their wording), as the
//! blocking client of `sockmsg-transport-std` and the async one of
//! `sockmsg-transport-tokio` are.

use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockmsg_protocol::{Connection, Event, Message, Role};
use sockmsg_server::client::{next_wait, ConnectFailure, Expired};
use sockmsg_server::ServerAddr;

/// How a [`TlsClient`] connects and how long it waits: the one configuration of every
/// client transport ([`sockmsg_server::client::ClientConfig`]). [`ClientConfig::deadline`]
/// bounds connecting and the TLS handshake together, and each request (sending it and
/// receiving the whole answer); [`ClientConfig::read_timeout`] and
/// [`ClientConfig::write_timeout`] each wait, the handshake's included.
pub use sockmsg_server::client::ClientConfig;
/// A point in time by which an exchange must be done
/// ([`sockmsg_server::client::Deadline`]), for [`TlsClient::connect_by`] and
/// [`TlsClient::request_by`].
pub use sockmsg_server::client::Deadline;
/// The operation under way when a [`ClientError`] struck.
pub use sockmsg_server::client::Op;

use crate::conn::TlsConnection;
use crate::error::TlsError;
use crate::identity::PeerIdentity;

/// Everything a [`TlsClient`] operation can fail with: the client layer's
/// [`sockmsg_server::client::ClientError`], with [`TlsError`] for what TLS itself reports
/// (`ClientError::Tls`: an unknown CA, a name the certificate does not cover, an expired
/// certificate, a server that requires a client certificate, a plaintext peer...). The
/// same type as the tokio client's `ClientError` (feature `tls`), with the same messages
/// as every client's. Every variant names the address as the caller gave it.
pub type ClientError = sockmsg_server::client::ClientError<TlsError>;

/// A blocking sockmsg client over TLS: connect and handshake, requests and answers in
/// order, a clean close with `close_notify`. The same [`ClientConfig`], time limits and
/// errors as the other clients ([`sockmsg_server::client`]). Share one
/// `rustls::ClientConfig` between clients (see [`crate::client_config`]) so that
/// reconnecting resumes the TLS session.
///
/// ```no_run
/// use sockmsg_tls::{client_config, ClientConfig, ClientOptions, Pem, TlsClient};
/// let tls = client_config(&ClientOptions { ca: Some(Pem::file("certs/ca.pem")), ..Default::default() })?;
/// let mut client = TlsClient::connect("127.0.0.1:65432", &ClientConfig::default(), tls, "localhost")?;
/// let answer = client.request(sockmsg_protocol::Message::json(&serde_json::json!({"action": "search", "value": "ring"}))?)?;
/// println!("{:?} answered {}", client.peer_identity(), String::from_utf8_lossy(answer.content()));
/// client.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TlsClient {
    stream: TcpStream,
    tls: TlsConnection,
    /// The address as the caller gave it, for errors.
    addr: String,
    peer: SocketAddr,
    config: ClientConfig,
    /// Bytes of ciphertext received in all.
    received: u64,
    write_shut: bool,
}

impl TlsClient {
    /// Connects to `addr` (a `SocketAddr`, `"host:port"`, `("host", port)`, the addresses
    /// a name resolved to...: each address tried in turn, as the blocking client of
    /// `sockmsg-transport-std` does) and completes the TLS handshake, verifying that the
    /// server's certificate is valid for `server_name`: `tls` from
    /// [`crate::client_config`]. Connecting and the handshake together are bounded by
    /// [`ClientConfig::deadline`]. A failed verification is a [`ClientError::Tls`] naming
    /// the reason ([`TlsError::UnknownCa`], [`TlsError::NameMismatch`],
    /// [`TlsError::CertificateExpired`], [`TlsError::NotTls`]...).
    pub fn connect(
        addr: impl ServerAddr,
        config: &ClientConfig,
        tls: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<TlsClient, ClientError> {
        TlsClient::connect_by(addr, config, tls, server_name, config.exchange_deadline())
    }

    /// [`TlsClient::connect`], connection and handshake finished by `deadline` (`None`: no
    /// overall limit) rather than by [`ClientConfig::deadline`]. With the same deadline
    /// given to [`TlsClient::request_by`], the whole exchange shares one limit.
    pub fn connect_by(
        addr: impl ServerAddr,
        config: &ClientConfig,
        tls: Arc<rustls::ClientConfig>,
        server_name: &str,
        deadline: Option<Deadline>,
    ) -> Result<TlsClient, ClientError> {
        let name = addr.name();
        let addrs =
            sockmsg_server::addr::resolve(&addr).map_err(|source| ClientError::Resolve {
                addr: name.clone(),
                source,
            })?;
        let (stream, peer) =
            sockmsg_server::client::connect(&addrs, config, deadline).map_err(|(_, failure)| {
                match failure {
                    ConnectFailure::Deadline(limit) => ClientError::Deadline {
                        addr: name.clone(),
                        op: Op::Connect,
                        limit,
                        received: 0,
                    },
                    ConnectFailure::Timeout(after) => ClientError::Timeout {
                        addr: name.clone(),
                        op: Op::Connect,
                        after,
                    },
                    ConnectFailure::Io(e) => ClientError::from_io(&name, Op::Connect, e),
                }
            })?;
        let conn = Connection::new(Role::Client, config.limits.clone());
        // The exchange deadline and the per-wait limits bound the handshake, not a timer
        // of the composition's.
        let tls = TlsConnection::client(tls, server_name, conn, Instant::now())
            .map_err(|source| ClientError::Tls {
                addr: name.clone(),
                source,
            })?
            .with_handshake_timeout(None);
        let mut client = TlsClient {
            stream,
            tls,
            addr: name,
            peer,
            config: config.clone(),
            received: 0,
            write_shut: false,
        };
        client.handshake(deadline)?;
        Ok(client)
    }

    /// Writes and reads until the handshake is complete, by `deadline`.
    fn handshake(&mut self, deadline: Option<Deadline>) -> Result<(), ClientError> {
        let mut progress = Instant::now();
        loop {
            self.check()?;
            if !self.tls.is_handshaking() {
                return Ok(());
            }
            self.write_all(Op::Connect, deadline)?;
            self.check()?;
            if !self.tls.wants_read() {
                // Neither failed nor complete, and nothing more to read: cannot happen
                // (an end of stream during the handshake is an error), but never spin.
                return Err(self.closed());
            }
            self.read_once(Op::Connect, &mut progress, deadline, 0)?;
        }
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// This end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// The server's identity from its verified certificate.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.tls.peer_identity()
    }

    /// The TLS composition (handshake kind, version, ALPN...).
    pub fn tls(&self) -> &TlsConnection {
        &self.tls
    }

    /// Requests sent (or queued) whose answers have not been received yet.
    pub fn in_flight(&self) -> u64 {
        self.tls.in_flight()
    }

    /// Sends `request` and waits for its answer, all within [`ClientConfig::deadline`].
    /// With requests already in flight, the answer returned is that of the oldest one
    /// (answers come back in order).
    pub fn request(&mut self, request: Message) -> Result<Message, ClientError> {
        self.request_by(request, self.config.exchange_deadline())
    }

    /// Sends `request` and receives the whole answer within `limit`, however the server
    /// spreads its bytes: [`ClientError::Deadline`] otherwise.
    pub fn request_within(
        &mut self,
        request: Message,
        limit: Duration,
    ) -> Result<Message, ClientError> {
        self.request_by(request, Some(Deadline::after(limit)))
    }

    /// Sends `request` and receives the whole answer by `deadline` (`None`: no overall
    /// limit, only the per-wait timeouts).
    pub fn request_by(
        &mut self,
        request: Message,
        deadline: Option<Deadline>,
    ) -> Result<Message, ClientError> {
        self.queue(request)?;
        self.recv_by(deadline)
    }

    /// Sends `message`, returning once every byte was written (within
    /// [`ClientConfig::deadline`]).
    pub fn send(&mut self, message: Message) -> Result<(), ClientError> {
        self.queue(message)?;
        self.flush()
    }

    /// Queues `message` without writing it (pipelining); [`TlsClient::flush`] or
    /// [`TlsClient::recv`] writes. Refused after [`TlsClient::shutdown_write`]
    /// ([`ClientError::Local`]), or when the content is over the limits.
    pub fn queue(&mut self, message: Message) -> Result<(), ClientError> {
        self.tls
            .send(message, Instant::now())
            .map_err(|source| ClientError::Local {
                addr: self.addr.clone(),
                source,
            })
    }

    /// Writes everything queued (within [`ClientConfig::deadline`]).
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.flush_by(self.config.exchange_deadline())
    }

    /// Writes everything queued by `deadline`.
    pub fn flush_by(&mut self, deadline: Option<Deadline>) -> Result<(), ClientError> {
        self.write_all(Op::Write, deadline)
    }

    /// Writes what is queued, then waits for the next message (within
    /// [`ClientConfig::deadline`]). If the server closes cleanly first, that is
    /// [`ClientError::Closed`], with the number of answers it still owed.
    pub fn recv(&mut self) -> Result<Message, ClientError> {
        self.recv_by(self.config.exchange_deadline())
    }

    /// Writes what is queued, then waits for the next message, all of it by `deadline`.
    pub fn recv_by(&mut self, deadline: Option<Deadline>) -> Result<Message, ClientError> {
        let start = self.received;
        let mut progress = Instant::now();
        loop {
            match self.tls.next_event() {
                Ok(Event::Message(m)) => return Ok(m),
                Ok(Event::End) => return Err(self.closed()),
                Ok(Event::NeedData) => {}
                Err(e) => {
                    // The alert first, if TLS itself failed.
                    let _ = self.check();
                    return Err(self.tls_failure(e));
                }
            }
            self.write_all(Op::Write, deadline)?;
            self.check()?;
            if !self.tls.wants_read() {
                return Err(self.closed());
            }
            let received = self.received - start;
            self.read_once(Op::Read, &mut progress, deadline, received)?;
        }
    }

    /// Writes everything queued, then `close_notify`, then shuts down the socket's write
    /// side: the server sees the end of our stream but can still answer, and
    /// [`TlsClient::recv`] still works. Nothing more can be sent.
    pub fn shutdown_write(&mut self) -> Result<(), ClientError> {
        if self.write_shut {
            return Ok(());
        }
        self.flush()?;
        self.tls.close();
        self.write_shut = true;
        self.flush()?;
        match self.stream.shutdown(Shutdown::Write) {
            // The server closed first: nothing left to shut down.
            Err(e) if e.kind() != ErrorKind::NotConnected => {
                Err(ClientError::from_io(&self.addr, Op::Shutdown, e))
            }
            _ => Ok(()),
        }
    }

    /// Closes properly: writes what is queued, `close_notify`, shuts down the write side,
    /// then waits (at most 2 s, or the read timeout if shorter) for the server to close its
    /// side. Answers still owed that arrive meanwhile are discarded; a server that does not
    /// close in time is not an error. To leave without waiting, see
    /// [`TlsClient::close_now`].
    pub fn close(mut self) -> Result<(), ClientError> {
        self.shutdown_write()?;
        let deadline = Some(Deadline::after(self.config.close_wait()));
        while self.recv_by(deadline).is_ok() {}
        Ok(())
    }

    /// Closes at once, without `close_notify` and without waiting for the server.
    pub fn close_now(self) {
        // Best effort: the socket is closed when dropped whatever this returns.
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// The error the composition ended with, if it did, after the alert that tells the
    /// server why (best effort: the connection is over anyway).
    fn check(&mut self) -> Result<(), ClientError> {
        let Some(e) = self.tls.error().cloned() else {
            return Ok(());
        };
        let _ = self.stream.set_write_timeout(Some(ALERT_WAIT));
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.stream, Instant::now()) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        Err(self.tls_failure(e))
    }

    fn tls_failure(&self, e: TlsError) -> ClientError {
        let addr = self.addr.clone();
        match e {
            TlsError::Protocol(source) => ClientError::Protocol { addr, source },
            source => ClientError::Tls { addr, source },
        }
    }

    fn closed(&self) -> ClientError {
        ClientError::Closed {
            addr: self.addr.clone(),
            in_flight: self.tls.in_flight(),
        }
    }

    /// How long the next wait of `op` may last (the shared bookkeeping,
    /// [`sockmsg_server::client::next_wait`]); the error once a limit has passed.
    fn wait(
        &self,
        op: Op,
        progress: Instant,
        deadline: Option<Deadline>,
        received: u64,
    ) -> Result<Option<Duration>, ClientError> {
        next_wait(self.config.idle_timeout(op), progress, deadline).map_err(|e| match e {
            Expired::Deadline(limit) => ClientError::Deadline {
                addr: self.addr.clone(),
                op,
                limit,
                received,
            },
            Expired::Timeout(after) => ClientError::Timeout {
                addr: self.addr.clone(),
                op,
                after,
            },
        })
    }

    /// Writes TLS records until the composition has nothing more to write, each write
    /// within the per-wait limit, all by `deadline`.
    fn write_all(&mut self, op: Op, deadline: Option<Deadline>) -> Result<(), ClientError> {
        let mut progress = Instant::now();
        while self.tls.wants_write() {
            let wait = self.wait(op, progress, deadline, 0)?;
            self.stream
                .set_write_timeout(wait)
                .map_err(|e| ClientError::from_io(&self.addr, op, e))?;
            match self.tls.write_tls(&mut self.stream, Instant::now()) {
                Ok(0) if self.tls.wants_write() => {
                    return Err(ClientError::Reset {
                        addr: self.addr.clone(),
                        op,
                    })
                }
                Ok(_) => progress = Instant::now(),
                Err(e) if is_wait_over(&e) => {}
                Err(e) => return Err(ClientError::from_io(&self.addr, op, e)),
            }
        }
        Ok(())
    }

    /// One read of ciphertext, within the per-wait limit and `deadline`, handed to the
    /// composition; `received` bytes of this exchange so far (for a deadline error).
    fn read_once(
        &mut self,
        op: Op,
        progress: &mut Instant,
        deadline: Option<Deadline>,
        received: u64,
    ) -> Result<(), ClientError> {
        let wait = self.wait(op, *progress, deadline, received)?;
        self.stream
            .set_read_timeout(wait)
            .map_err(|e| ClientError::from_io(&self.addr, op, e))?;
        match self.tls.read_tls(&mut self.stream, Instant::now()) {
            Ok(n) => {
                self.received += n as u64;
                *progress = Instant::now();
                Ok(())
            }
            Err(e) if is_wait_over(&e) => Ok(()),
            Err(e) => Err(ClientError::from_io(&self.addr, op, e)),
        }
    }
}

/// Longest the alert of a failed handshake may wait to be written.
const ALERT_WAIT: Duration = Duration::from_millis(100);

/// A socket wait that ran out (the next [`next_wait`] says which limit passed), or was
/// interrupted: try again.
fn is_wait_over(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}
