//! The async client: one TCP connection, whole messages, requests pipelined if you like.
//!
//! A thin loop over the sans-IO core ([`Connection`]) and the client layer every
//! transport shares ([`sockmsg_server::client`]: the configuration, the exchange deadline,
//! the error kinds and their wording).

use std::fmt;
use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sockmsg_protocol::sniff::{sniff, Sniff, SNIFF_LEN};
use sockmsg_protocol::{Connection, Event, Foreign, LocalError, Message, Role};
use sockmsg_server::client::{foreign_peer, next_wait, nonzero, shorter, Expired};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::error::{ClientError, Op};

/// How a [`Client`] connects and how long it waits: one configuration for every client
/// transport ([`sockmsg_server::client::ClientConfig`]). The timeouts use tokio's timer:
/// the runtime needs it enabled (`enable_time` or `enable_all`) unless they are all
/// `None`. [`ClientConfig::deadline`] bounds [`Client::connect`] and each
/// [`Client::request`], [`Client::send`], [`Client::flush`], [`Client::recv`] as a whole
/// ([`ClientError::Deadline`]).
pub use sockmsg_server::client::ClientConfig;
/// A point in time by which an exchange must be done
/// ([`sockmsg_server::client::Deadline`]), for [`Client::request_by`].
pub use sockmsg_server::client::Deadline;

/// Most slices handed to one vectored write.
const MAX_SLICES: usize = 64;

/// Ciphertext read from the socket at once (one TLS record at most).
#[cfg(feature = "tls")]
const TLS_READ: usize = 16 * 1024 + 512;

/// What the client drives: the core's machine, or (feature `tls`) the same machine behind
/// rustls, composed sans-IO in `sockmsg-tls` ([`sockmsg_tls::TlsConnection`]) as the
/// servers of every transport and the blocking TLS client use it.
// The plaintext machine stays inline (no indirection on the common path); the rarer TLS
// state, larger still, is the one boxed.
#[allow(clippy::large_enum_variant)]
enum Machine {
    Plain(Connection),
    #[cfg(feature = "tls")]
    Tls(Box<TlsState>),
}

/// The TLS composition and the ciphertext between it and the socket.
#[cfg(feature = "tls")]
struct TlsState {
    tls: sockmsg_tls::TlsConnection,
    /// Ciphertext read and not yet handed to rustls.
    inbox: Vec<u8>,
    /// Ciphertext from rustls not yet written.
    outbox: Vec<u8>,
}

/// What the machine made of the bytes so far, when it is not a message.
enum Broken {
    Peer(sockmsg_protocol::PeerError),
    #[cfg(feature = "tls")]
    Tls(sockmsg_tls::TlsError),
}

/// What one write did.
enum Written {
    Bytes(usize),
    /// The wait ran out.
    TimedOut,
    /// Nothing was left to write after all.
    #[cfg(feature = "tls")]
    Nothing,
}

impl Machine {
    fn in_flight(&self) -> u64 {
        match self {
            Machine::Plain(conn) => conn.in_flight(),
            #[cfg(feature = "tls")]
            Machine::Tls(t) => t.tls.in_flight(),
        }
    }

    fn send(&mut self, message: Message, now: Instant) -> Result<(), LocalError> {
        match self {
            Machine::Plain(conn) => conn.send(message, now),
            #[cfg(feature = "tls")]
            Machine::Tls(t) => t.tls.send(message, now),
        }
    }

    fn close(&mut self) {
        match self {
            Machine::Plain(conn) => conn.close(),
            #[cfg(feature = "tls")]
            Machine::Tls(t) => t.tls.close(),
        }
    }

    fn next_event(&mut self) -> Result<Event, Broken> {
        match self {
            Machine::Plain(conn) => conn.next_event().map_err(Broken::Peer),
            #[cfg(feature = "tls")]
            Machine::Tls(t) => t.tls.next_event().map_err(|e| match e {
                sockmsg_tls::TlsError::Protocol(e) => Broken::Peer(e),
                other => Broken::Tls(other),
            }),
        }
    }

    fn wants_write(&self) -> bool {
        match self {
            Machine::Plain(conn) => conn.wants_write(),
            #[cfg(feature = "tls")]
            Machine::Tls(t) => !t.outbox.is_empty() || t.tls.wants_write(),
        }
    }

    /// One write to `stream`, bounded by `wait`.
    async fn write_once(
        &mut self,
        stream: &mut TcpStream,
        wait: Option<Duration>,
    ) -> std::io::Result<Written> {
        match self {
            Machine::Plain(conn) => {
                let written = {
                    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                    let count = conn.pending_slices(&mut slices);
                    let slices = slices.get(..count).unwrap_or_default();
                    within(wait, stream.write_vectored(slices)).await
                };
                let Ok(n) = written else {
                    return Ok(Written::TimedOut);
                };
                let n = n?;
                conn.consume(n, Instant::now());
                Ok(Written::Bytes(n))
            }
            #[cfg(feature = "tls")]
            Machine::Tls(t) => {
                if t.outbox.is_empty() {
                    t.tls.write_tls(&mut t.outbox, Instant::now())?;
                }
                if t.outbox.is_empty() {
                    return Ok(Written::Nothing);
                }
                let Ok(n) = within(wait, stream.write(&t.outbox)).await else {
                    return Ok(Written::TimedOut);
                };
                let n = n?;
                t.outbox.drain(..n.min(t.outbox.len()));
                Ok(Written::Bytes(n))
            }
        }
    }

    /// One read from `stream`, bounded by `wait`, handed to the machine: `None` if the
    /// wait ran out, else the bytes read (0: the end of the stream). The plaintext
    /// machine's first bytes are kept in `first` (up to [`SNIFF_LEN`]).
    async fn read_once(
        &mut self,
        stream: &mut TcpStream,
        wait: Option<Duration>,
        first: &mut Vec<u8>,
    ) -> Result<Option<usize>, ReadError> {
        match self {
            Machine::Plain(conn) => {
                let buf = conn.read_buf();
                let Ok(read) = within(wait, stream.read(buf)).await else {
                    return Ok(None);
                };
                let n = read.map_err(ReadError::Io)?;
                if n == 0 {
                    conn.receive_eof();
                    return Ok(Some(0));
                }
                let room = SNIFF_LEN.saturating_sub(first.len());
                if room > 0 {
                    first.extend_from_slice(buf.get(..n.min(room)).unwrap_or_default());
                }
                conn.commit(n, Instant::now()).map_err(ReadError::Local)?;
                Ok(Some(n))
            }
            #[cfg(feature = "tls")]
            Machine::Tls(t) => {
                let mut n = t.inbox.len();
                if t.inbox.is_empty() {
                    t.inbox.reserve(TLS_READ);
                    let Ok(read) = within(wait, stream.read_buf(&mut t.inbox)).await else {
                        return Ok(None);
                    };
                    n = read.map_err(ReadError::Io)?;
                    if n == 0 {
                        // The end of the stream: rustls tells a clean end from a truncation.
                        t.tls
                            .read_tls(&mut &[][..], Instant::now())
                            .map_err(ReadError::Io)?;
                        return Ok(Some(0));
                    }
                }
                let mut rest: &[u8] = &t.inbox;
                let taken = t.tls.read_tls(&mut rest, Instant::now());
                let used = t.inbox.len() - rest.len();
                t.inbox.drain(..used);
                match taken {
                    Ok(_) if used > 0 => Ok(Some(n)),
                    Ok(_) => Err(ReadError::Io(std::io::Error::other(
                        "the TLS layer takes no more input",
                    ))),
                    Err(e) => Err(ReadError::Io(e)),
                }
            }
        }
    }
}

/// Why [`Machine::read_once`] failed.
enum ReadError {
    Io(std::io::Error),
    Local(LocalError),
}

/// An async client connection on the core's [`Connection`]: [`Client::request`] sends a
/// request and waits for its answer; to pipeline, [`Client::queue`] several, then
/// [`Client::recv`] their answers, which come back in order.
///
/// Cancellation: dropping a [`Client::recv`], [`Client::flush`], [`Client::send`] or
/// [`Client::request`] future, even in the middle of a message, loses nothing. Bytes are
/// handed to the core only once a read has completed, and pending output is marked sent
/// only once a write has completed; calling a method again carries on. A message is
/// queued as soon as `send` or `request` is first polled: if either is dropped after that,
/// the message is still sent by the next call, and its answer is the next
/// [`Client::recv`]'s (`tests/cancel.rs` drops each of them mid-message).
///
/// ```
/// # use sockmsg_transport_tokio::{Client, ClientConfig, ClientError};
/// # async fn demo() -> Result<(), ClientError> {
/// let mut client = Client::connect("localhost:65432", &ClientConfig::default()).await?;
/// let request = sockmsg_protocol::Message::json(&serde_json::json!({"action": "search", "value": "ring"}))
///     .expect("serializable");
/// let answer = client.request(request).await?;
/// println!("{}", String::from_utf8_lossy(answer.content()));
/// client.close().await
/// # }
/// ```
pub struct Client {
    stream: TcpStream,
    machine: Machine,
    /// The address as the caller gave it, for errors.
    addr: String,
    peer: SocketAddr,
    config: ClientConfig,
    /// The first [`SNIFF_LEN`] bytes received, to say what a foreign peer sent.
    first: Vec<u8>,
    /// Bytes received in all.
    received: u64,
    /// The first bytes are not known to be plausible yet: check them as they arrive.
    sniffing: bool,
    /// At least one message arrived (the server speaks this protocol).
    answered: bool,
    write_shut: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("peer", &self.peer)
            .field("in_flight", &self.machine.in_flight())
            .finish_non_exhaustive()
    }
}

/// `fut`, bounded by `limit` when there is one (a zero duration means none).
async fn within<T>(limit: Option<Duration>, fut: impl Future<Output = T>) -> Result<T, Duration> {
    match nonzero(limit) {
        Some(after) => tokio::time::timeout(after, fut).await.map_err(|_| after),
        None => Ok(fut.await),
    }
}

/// Resolves `addr` and connects to each of its addresses in turn, within
/// [`ClientConfig::connect_timeout`] and `deadline` together.
async fn open<A: ToSocketAddrs>(
    addr: A,
    name: &str,
    config: &ClientConfig,
    deadline: Option<Deadline>,
) -> Result<TcpStream, ClientError> {
    let attempt = async {
        let addrs = tokio::net::lookup_host(addr)
            .await
            .map_err(|source| ClientError::Resolve {
                addr: name.to_owned(),
                source,
            })?;
        let mut last = None;
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => ClientError::from_io(name, Op::Connect, e),
            None => ClientError::Resolve {
                addr: name.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the name resolved to no address",
                ),
            },
        })
    };
    let timeout = nonzero(config.connect_timeout);
    let left = deadline.map(|d| d.remaining());
    let wait = shorter(timeout, left);
    match within(wait, attempt).await {
        Ok(result) => result,
        Err(after) => Err(match deadline {
            Some(d) if left == wait => ClientError::Deadline {
                addr: name.to_owned(),
                op: Op::Connect,
                limit: d.limit(),
                received: 0,
            },
            _ => ClientError::Timeout {
                addr: name.to_owned(),
                op: Op::Connect,
                after,
            },
        }),
    }
}

impl Client {
    /// Connects to `addr`: a `host:port` string (names are resolved, each address tried in
    /// turn), a `SocketAddr`, or anything tokio can resolve. Resolution and connection
    /// together are bounded by [`ClientConfig::connect_timeout`] and
    /// [`ClientConfig::deadline`]. Errors name `addr`: [`ClientError::Resolve`],
    /// [`ClientError::Refused`], [`ClientError::Timeout`], [`ClientError::Deadline`].
    pub async fn connect<A: ToSocketAddrs + fmt::Display>(
        addr: A,
        config: &ClientConfig,
    ) -> Result<Client, ClientError> {
        Client::connect_by(addr, config, config.exchange_deadline()).await
    }

    /// [`Client::connect`], finished by `deadline` (`None`: no overall limit) rather than
    /// by [`ClientConfig::deadline`]. With the same deadline given to
    /// [`Client::request_by`], connecting, sending and the whole answer share one limit.
    pub async fn connect_by<A: ToSocketAddrs + fmt::Display>(
        addr: A,
        config: &ClientConfig,
        deadline: Option<Deadline>,
    ) -> Result<Client, ClientError> {
        let name = addr.to_string();
        let stream = open(addr, &name, config, deadline).await?;
        let machine = Machine::Plain(Connection::new(Role::Client, config.limits.clone()));
        Client::over(stream, machine, name, config)
    }

    /// Connects to `addr` as [`Client::connect`] does, then completes a TLS handshake
    /// (feature `tls`): `tls` from [`sockmsg_tls::client_config`] (share one between
    /// clients so that reconnecting resumes the session), the server's certificate
    /// verified for `server_name`. Connecting and the handshake together are bounded by
    /// [`ClientConfig::deadline`]. A failed verification is a [`ClientError::Tls`] that
    /// names the reason ([`sockmsg_tls::TlsError::UnknownCa`],
    /// [`sockmsg_tls::TlsError::NameMismatch`], [`sockmsg_tls::TlsError::CertificateExpired`]...).
    ///
    /// rustls is composed with the core's machine sans-IO in `sockmsg-tls`, as on every
    /// other transport (not `tokio-rustls`).
    #[cfg(feature = "tls")]
    pub async fn connect_tls<A: ToSocketAddrs + fmt::Display>(
        addr: A,
        config: &ClientConfig,
        tls: std::sync::Arc<sockmsg_tls::rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<Client, ClientError> {
        Client::connect_tls_by(addr, config, tls, server_name, config.exchange_deadline()).await
    }

    /// [`Client::connect_tls`], connection and handshake finished by `deadline` (`None`:
    /// no overall limit).
    #[cfg(feature = "tls")]
    pub async fn connect_tls_by<A: ToSocketAddrs + fmt::Display>(
        addr: A,
        config: &ClientConfig,
        tls: std::sync::Arc<sockmsg_tls::rustls::ClientConfig>,
        server_name: &str,
        deadline: Option<Deadline>,
    ) -> Result<Client, ClientError> {
        let name = addr.to_string();
        let stream = open(addr, &name, config, deadline).await?;
        let conn = Connection::new(Role::Client, config.limits.clone());
        // The exchange deadline bounds the handshake, not a separate timer.
        let tls = sockmsg_tls::TlsConnection::client(tls, server_name, conn, Instant::now())
            .map_err(|source| ClientError::Tls {
                addr: name.clone(),
                source,
            })?
            .with_handshake_timeout(None);
        let machine = Machine::Tls(Box::new(TlsState {
            tls,
            inbox: Vec::new(),
            outbox: Vec::new(),
        }));
        let mut client = Client::over(stream, machine, name, config)?;
        // Ciphertext is not this protocol's first bytes: TLS names a plaintext peer itself.
        client.sniffing = false;
        client.handshake(deadline).await?;
        Ok(client)
    }

    /// Writes and reads until the TLS handshake is complete, by `deadline`.
    #[cfg(feature = "tls")]
    async fn handshake(&mut self, deadline: Option<Deadline>) -> Result<(), ClientError> {
        let mut progress = Instant::now();
        loop {
            let Machine::Tls(t) = &self.machine else {
                return Ok(());
            };
            if let Some(e) = t.tls.error() {
                return Err(ClientError::Tls {
                    addr: self.addr.clone(),
                    source: e.clone(),
                });
            }
            if !t.tls.is_handshaking() {
                return Ok(());
            }
            self.flush_by(deadline).await?;
            let wait = self.wait(Op::Connect, progress, deadline)?;
            if self.read(wait).await?.is_some() {
                progress = Instant::now();
            }
        }
    }

    /// The server's identity from its verified certificate (TLS only).
    #[cfg(feature = "tls")]
    pub fn peer_identity(&self) -> Option<&sockmsg_tls::PeerIdentity> {
        match &self.machine {
            Machine::Tls(t) => t.tls.peer_identity(),
            Machine::Plain(_) => None,
        }
    }

    /// The TLS composition (handshake kind, version, ALPN...), for a TLS client.
    #[cfg(feature = "tls")]
    pub fn tls(&self) -> Option<&sockmsg_tls::TlsConnection> {
        match &self.machine {
            Machine::Tls(t) => Some(&t.tls),
            Machine::Plain(_) => None,
        }
    }

    fn over(
        stream: TcpStream,
        machine: Machine,
        name: String,
        config: &ClientConfig,
    ) -> Result<Client, ClientError> {
        let setup = |s: &TcpStream| -> std::io::Result<SocketAddr> {
            s.set_nodelay(config.nodelay)?;
            s.peer_addr()
        };
        let peer = setup(&stream).map_err(|e| ClientError::from_io(&name, Op::Connect, e))?;
        Ok(Client {
            stream,
            machine,
            addr: name,
            peer,
            config: config.clone(),
            first: Vec::with_capacity(SNIFF_LEN),
            received: 0,
            sniffing: true,
            answered: false,
            write_shut: false,
        })
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// This end's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Requests sent (or queued) whose answers have not been received yet.
    pub fn in_flight(&self) -> u64 {
        self.machine.in_flight()
    }

    /// Sends `request` and waits for its answer, all within [`ClientConfig::deadline`].
    /// With requests already in flight, the answer returned is that of the oldest one
    /// (answers come back in order).
    pub async fn request(&mut self, request: Message) -> Result<Message, ClientError> {
        let deadline = self.config.exchange_deadline();
        self.request_by(request, deadline).await
    }

    /// Sends `request` and receives the whole answer within `limit`, however the server
    /// spreads its bytes: [`ClientError::Deadline`] otherwise.
    pub async fn request_within(
        &mut self,
        request: Message,
        limit: Duration,
    ) -> Result<Message, ClientError> {
        self.request_by(request, Some(Deadline::after(limit))).await
    }

    /// Sends `request` and receives the whole answer by `deadline` (`None`: no overall
    /// limit, only the per-wait timeouts).
    pub async fn request_by(
        &mut self,
        request: Message,
        deadline: Option<Deadline>,
    ) -> Result<Message, ClientError> {
        self.queue(request)?;
        self.recv_by(deadline).await
    }

    /// Sends `message`, returning once every byte queued was written (within
    /// [`ClientConfig::deadline`]).
    pub async fn send(&mut self, message: Message) -> Result<(), ClientError> {
        self.queue(message)?;
        self.flush().await
    }

    /// Queues `message` without writing it (pipelining); [`Client::flush`] or
    /// [`Client::recv`] writes. Refused after [`Client::shutdown_write`]
    /// ([`ClientError::Local`]), or when the content is over the limits.
    pub fn queue(&mut self, message: Message) -> Result<(), ClientError> {
        self.machine
            .send(message, Instant::now())
            .map_err(|source| ClientError::Local {
                addr: self.addr.clone(),
                source,
            })
    }

    /// Writes everything queued, within [`ClientConfig::deadline`]; each write must make
    /// progress within [`ClientConfig::write_timeout`].
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        let deadline = self.config.exchange_deadline();
        self.flush_by(deadline).await
    }

    /// Writes everything queued by `deadline`.
    pub async fn flush_by(&mut self, deadline: Option<Deadline>) -> Result<(), ClientError> {
        let mut progress = Instant::now();
        while self.machine.wants_write() {
            let wait = self.wait(Op::Write, progress, deadline)?;
            let written = self.machine.write_once(&mut self.stream, wait).await;
            match written.map_err(|e| ClientError::from_io(&self.addr, Op::Write, e))? {
                // A wait that ran out: the next `wait` says which limit passed.
                Written::TimedOut => {}
                #[cfg(feature = "tls")]
                Written::Nothing => break,
                Written::Bytes(0) => {
                    return Err(ClientError::Reset {
                        addr: self.addr.clone(),
                        op: Op::Write,
                    })
                }
                Written::Bytes(_) => progress = Instant::now(),
            }
        }
        Ok(())
    }

    /// One read bounded by `wait`, handed to the machine: `None` if the wait ran out.
    async fn read(&mut self, wait: Option<Duration>) -> Result<Option<usize>, ClientError> {
        let read = self
            .machine
            .read_once(&mut self.stream, wait, &mut self.first)
            .await;
        match read {
            Ok(n) => {
                self.received += n.unwrap_or(0) as u64;
                Ok(n)
            }
            Err(ReadError::Io(e)) => Err(ClientError::from_io(&self.addr, Op::Read, e)),
            Err(ReadError::Local(source)) => Err(ClientError::Local {
                addr: self.addr.clone(),
                source,
            }),
        }
    }

    /// How long the next wait of `op` may last (the shared bookkeeping,
    /// [`sockmsg_server::client::next_wait`]); the error once a limit has passed.
    fn wait(
        &self,
        op: Op,
        progress: Instant,
        deadline: Option<Deadline>,
    ) -> Result<Option<Duration>, ClientError> {
        let received = self.received;
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

    /// Writes what is queued, then waits for the next message, all within
    /// [`ClientConfig::deadline`]; each read must bring bytes within
    /// [`ClientConfig::read_timeout`]. If the server closes cleanly first, that is
    /// [`ClientError::Closed`], with the number of answers it still owed; if its first
    /// bytes cannot start a message of this protocol, [`ClientError::Foreign`].
    pub async fn recv(&mut self) -> Result<Message, ClientError> {
        let deadline = self.config.exchange_deadline();
        self.recv_by(deadline).await
    }

    /// Writes what is queued, then waits for the next message, all of it by `deadline`.
    pub async fn recv_by(&mut self, deadline: Option<Deadline>) -> Result<Message, ClientError> {
        match self.recv_inner(deadline).await {
            Ok(m) => {
                self.answered = true;
                self.sniffing = false;
                Ok(m)
            }
            Err(e) => Err(self.explain(e)),
        }
    }

    async fn recv_inner(&mut self, deadline: Option<Deadline>) -> Result<Message, ClientError> {
        let start = self.received;
        let mut progress = Instant::now();
        loop {
            if self.sniffing {
                match sniff(&self.first) {
                    Sniff::Plausible => self.sniffing = false,
                    Sniff::NeedMore => {}
                    Sniff::Foreign(seen) => return Err(self.foreign(seen)),
                }
            }
            match self.machine.next_event() {
                Ok(Event::Message(m)) => return Ok(m),
                Ok(Event::End) => {
                    return Err(ClientError::Closed {
                        addr: self.addr.clone(),
                        in_flight: self.machine.in_flight(),
                    })
                }
                Ok(Event::NeedData) => {}
                Err(Broken::Peer(source)) => {
                    return Err(ClientError::Protocol {
                        addr: self.addr.clone(),
                        source,
                    })
                }
                #[cfg(feature = "tls")]
                Err(Broken::Tls(source)) => {
                    return Err(ClientError::Tls {
                        addr: self.addr.clone(),
                        source,
                    })
                }
            }
            self.flush_by(deadline).await?;
            let wait = self
                .wait(Op::Read, progress, deadline)
                .map_err(|e| with_received(e, self.received - start))?;
            if self.read(wait).await?.is_some() {
                progress = Instant::now();
            }
        }
    }

    fn foreign(&self, seen: Foreign) -> ClientError {
        ClientError::Foreign {
            addr: self.addr.clone(),
            seen,
        }
    }

    /// Before any message arrived, an error caused by the peer (bytes that break the
    /// protocol, a close, a time limit) is better told as what the peer sent, if its first
    /// bytes cannot start a message.
    fn explain(&self, e: ClientError) -> ClientError {
        match foreign_peer(&self.first, self.answered, e.failure()) {
            Some(seen) => self.foreign(seen),
            None => e,
        }
    }

    /// Writes everything queued, then shuts down the write side (the guide's
    /// `shutdown(1)`): the server sees the end of our stream but can still answer, and
    /// [`Client::recv`] still works. Nothing more can be sent.
    pub async fn shutdown_write(&mut self) -> Result<(), ClientError> {
        if self.write_shut {
            return Ok(());
        }
        self.flush().await?;
        self.machine.close();
        self.write_shut = true;
        // With TLS, the close_notify.
        self.flush().await?;
        within(self.config.write_timeout, self.stream.shutdown())
            .await
            .map_err(|after| ClientError::Timeout {
                addr: self.addr.clone(),
                op: Op::Shutdown,
                after,
            })?
            .map_err(|e| ClientError::from_io(&self.addr, Op::Shutdown, e))
    }

    /// Closes properly: writes what is queued, shuts down the write side, then waits (at
    /// most 2 s, or the read timeout if shorter) for the server to close its side, so that
    /// neither end resets the connection. Answers still owed that arrive meanwhile are
    /// discarded; a server that does not close in time is not an error.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.shutdown_write().await?;
        let wait = self.config.close_wait();
        let drain = async {
            let mut sink = [0u8; 4096];
            while let Ok(n) = self.stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = within(Some(wait), drain).await;
        Ok(())
    }
}

/// A deadline error quoting the bytes of this answer received (not the connection's).
fn with_received(e: ClientError, received: u64) -> ClientError {
    match e {
        ClientError::Deadline {
            addr, op, limit, ..
        } => ClientError::Deadline {
            addr,
            op,
            limit,
            received,
        },
        other => other,
    }
}
