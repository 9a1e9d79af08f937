//! [`TlsClient`]: a blocking sockmsg client over TLS, a loop over [`TlsConnection`].

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockmsg_protocol::{Connection, Event, Limits, LocalError, Message, Role};

use crate::conn::{TlsConnection, DEFAULT_HANDSHAKE_TIMEOUT};
use crate::error::TlsError;
use crate::identity::PeerIdentity;

/// What a [`TlsClient`] call failed with.
#[derive(Debug)]
pub enum ClientError {
    /// No connection could be made to the address.
    Connect {
        /// The address as given.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The socket failed.
    Io(io::Error),
    /// TLS or the protocol inside failed (see [`TlsError`]).
    Tls(TlsError),
    /// The message could not be sent (see [`LocalError`]).
    Local(LocalError),
    /// The server ended the connection before answering.
    Closed,
    /// Nothing arrived within the client's timeout.
    Timeout(Duration),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { addr, source } => {
                write!(f, "cannot connect to {addr}: {source}")
            }
            ClientError::Io(e) => write!(f, "I/O error: {e}"),
            ClientError::Tls(e) => e.fmt(f),
            ClientError::Local(e) => e.fmt(f),
            ClientError::Closed => {
                f.write_str("the server closed the connection without answering")
            }
            ClientError::Timeout(d) => write!(f, "no answer within {} ms", d.as_millis()),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<TlsError> for ClientError {
    fn from(e: TlsError) -> ClientError {
        ClientError::Tls(e)
    }
}

impl From<LocalError> for ClientError {
    fn from(e: LocalError) -> ClientError {
        ClientError::Local(e)
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> ClientError {
        ClientError::Io(e)
    }
}

/// A blocking sockmsg client over TLS: connect, handshake, requests and answers in order,
/// a clean close with `close_notify`. Share one `rustls::ClientConfig` between clients
/// (see [`crate::client_config`]) so that reconnecting resumes the TLS session.
///
/// ```no_run
/// use sockmsg_tls::{client_config, ClientOptions, Pem, TlsClient};
/// let config = client_config(&ClientOptions { ca: Some(Pem::file("certs/ca.pem")), ..Default::default() })?;
/// let mut client = TlsClient::connect("127.0.0.1:65432", config, "localhost")?;
/// let answer = client.request(sockmsg_protocol::Message::json(&serde_json::json!({"action": "search", "value": "ring"}))?)?;
/// println!("{:?} answered {}", client.peer_identity(), String::from_utf8_lossy(answer.content()));
/// client.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TlsClient {
    stream: TcpStream,
    tls: TlsConnection,
    timeout: Duration,
    peer: SocketAddr,
}

impl TlsClient {
    /// Connects to `addr` and completes the TLS handshake, verifying that the server's
    /// certificate is valid for `server_name`; default limits, a 10 s timeout.
    pub fn connect(
        addr: impl ToSocketAddrs + fmt::Display,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<TlsClient, ClientError> {
        TlsClient::connect_with(
            addr,
            config,
            server_name,
            Limits::default(),
            DEFAULT_HANDSHAKE_TIMEOUT,
        )
    }

    /// As [`TlsClient::connect`], with `limits` on what is accepted and `timeout` for the
    /// connect, the handshake and each later wait.
    pub fn connect_with(
        addr: impl ToSocketAddrs + fmt::Display,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
        limits: Limits,
        timeout: Duration,
    ) -> Result<TlsClient, ClientError> {
        let shown = addr.to_string();
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|source| ClientError::Connect {
                addr: shown.clone(),
                source,
            })?
            .collect();
        TlsClient::connect_addrs(&addrs, config, server_name, limits, timeout)
    }

    /// As [`TlsClient::connect_with`], trying each of `addrs` in turn (those a name
    /// resolved to, say).
    pub fn connect_addrs(
        addrs: &[SocketAddr],
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
        limits: Limits,
        timeout: Duration,
    ) -> Result<TlsClient, ClientError> {
        let mut last = io::Error::new(ErrorKind::NotFound, "the address resolved to nothing");
        let mut stream = None;
        for candidate in addrs {
            match TcpStream::connect_timeout(candidate, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let shown = addrs.first().map_or_else(String::new, ToString::to_string);
        let stream = stream.ok_or(ClientError::Connect {
            addr: shown,
            source: last,
        })?;
        let peer = stream.peer_addr()?;
        stream.set_nodelay(true)?;
        let conn = Connection::new(Role::Client, limits);
        let tls = TlsConnection::client(config, server_name, conn, Instant::now())?
            .with_handshake_timeout(Some(timeout));
        let mut client = TlsClient {
            stream,
            tls,
            timeout,
            peer,
        };
        client.drive(|tls| Ok(!tls.is_handshaking()))?;
        Ok(client)
    }

    /// Sets the time limit of each later wait (a request and its answer, the close).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The server's identity from its verified certificate.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.tls.peer_identity()
    }

    /// The TLS composition (handshake kind, version, ALPN...).
    pub fn tls(&self) -> &TlsConnection {
        &self.tls
    }

    /// Sends `request` and waits for its answer.
    pub fn request(&mut self, request: Message) -> Result<Message, ClientError> {
        self.send(request)?;
        self.receive()?.ok_or(ClientError::Closed)
    }

    /// Queues `request` and writes everything pending.
    pub fn send(&mut self, request: Message) -> Result<(), ClientError> {
        self.tls.send(request, Instant::now())?;
        self.flush()
    }

    /// The next answer, or `None` if the server closed cleanly between answers.
    pub fn receive(&mut self) -> Result<Option<Message>, ClientError> {
        let mut answer = None;
        self.drive(|tls| match tls.next_event()? {
            Event::Message(m) => {
                answer = Some(Some(m));
                Ok(true)
            }
            Event::End => {
                answer = Some(None);
                Ok(true)
            }
            Event::NeedData => Ok(false),
        })?;
        Ok(answer.flatten())
    }

    /// Sends `close_notify` after everything queued and shuts the socket's write side.
    pub fn close(mut self) -> Result<(), ClientError> {
        self.tls.close();
        self.flush()?;
        if self.tls.wants_shutdown() {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ClientError> {
        self.stream.set_write_timeout(Some(self.timeout))?;
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.stream, Instant::now()) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(ClientError::Timeout(self.timeout))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes and reads until `done` says so, the connection fails, or a deadline passes.
    fn drive(
        &mut self,
        mut done: impl FnMut(&mut TlsConnection) -> Result<bool, TlsError>,
    ) -> Result<(), ClientError> {
        let give_up = Instant::now() + self.timeout;
        loop {
            if done(&mut self.tls)? {
                return Ok(());
            }
            self.flush()?;
            if let Some(e) = self.tls.error() {
                return Err(e.clone().into());
            }
            if !self.tls.wants_read() {
                if done(&mut self.tls)? {
                    return Ok(());
                }
                return Err(ClientError::Closed);
            }
            let now = Instant::now();
            let wait = self
                .tls
                .poll_timeout()
                .map_or(give_up, |at| at.min(give_up))
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            self.stream.set_read_timeout(Some(wait))?;
            match self.tls.read_tls(&mut self.stream, Instant::now()) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    let now = Instant::now();
                    if self.tls.handle_timeout(now).is_some() {
                        if let Some(e) = self.tls.error() {
                            return Err(e.clone().into());
                        }
                        return Err(ClientError::Timeout(self.timeout));
                    }
                    if now >= give_up {
                        return Err(ClientError::Timeout(self.timeout));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
