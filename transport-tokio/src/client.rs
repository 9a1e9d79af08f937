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

use sockmsg_protocol::sniff::{describe, sniff, Sniff, SNIFF_LEN};
use sockmsg_protocol::{Connection, Event, Foreign, Message, Role};
use sockmsg_server::client::{next_wait, nonzero, shorter, Expired};
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
    conn: Connection,
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
            .field("in_flight", &self.conn.in_flight())
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
        Client::over(stream, name, config)
    }

    fn over(stream: TcpStream, name: String, config: &ClientConfig) -> Result<Client, ClientError> {
        let setup = |s: &TcpStream| -> std::io::Result<SocketAddr> {
            s.set_nodelay(config.nodelay)?;
            s.peer_addr()
        };
        let peer = setup(&stream).map_err(|e| ClientError::from_io(&name, Op::Connect, e))?;
        Ok(Client {
            stream,
            conn: Connection::new(Role::Client, config.limits.clone()),
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
        self.conn.in_flight()
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
        self.conn
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
        while self.conn.wants_write() {
            let wait = self.wait(Op::Write, progress, deadline)?;
            let written = {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = self.conn.pending_slices(&mut slices);
                let slices = slices.get(..count).unwrap_or_default();
                within(wait, self.stream.write_vectored(slices)).await
            };
            // A wait that ran out: the next `wait` says which limit passed.
            let Ok(written) = written else { continue };
            let n = written.map_err(|e| ClientError::from_io(&self.addr, Op::Write, e))?;
            if n == 0 {
                return Err(ClientError::Reset {
                    addr: self.addr.clone(),
                    op: Op::Write,
                });
            }
            progress = Instant::now();
            self.conn.consume(n, progress);
        }
        Ok(())
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
            match self.conn.next_event() {
                Ok(Event::Message(m)) => return Ok(m),
                Ok(Event::End) => {
                    return Err(ClientError::Closed {
                        addr: self.addr.clone(),
                        in_flight: self.conn.in_flight(),
                    })
                }
                Ok(Event::NeedData) => {}
                Err(source) => {
                    return Err(ClientError::Protocol {
                        addr: self.addr.clone(),
                        source,
                    })
                }
            }
            self.flush_by(deadline).await?;
            let wait = self
                .wait(Op::Read, progress, deadline)
                .map_err(|e| with_received(e, self.received - start))?;
            let buf = self.conn.read_buf();
            let read = within(wait, self.stream.read(buf)).await;
            let Ok(read) = read else { continue };
            let n = read.map_err(|e| ClientError::from_io(&self.addr, Op::Read, e))?;
            progress = Instant::now();
            if n == 0 {
                self.conn.receive_eof();
                continue;
            }
            let room = SNIFF_LEN.saturating_sub(self.first.len());
            if room > 0 {
                let got = buf.get(..n.min(room)).unwrap_or_default();
                self.first.extend_from_slice(got);
            }
            self.received += n as u64;
            self.conn
                .commit(n, progress)
                .map_err(|source| ClientError::Local {
                    addr: self.addr.clone(),
                    source,
                })?;
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
        if self.answered {
            return e;
        }
        let by_peer = matches!(
            e,
            ClientError::Protocol { .. }
                | ClientError::Closed { .. }
                | ClientError::Timeout { .. }
                | ClientError::Deadline { .. }
                | ClientError::Reset { .. }
        );
        match describe(&self.first) {
            Some(seen) if by_peer => self.foreign(seen),
            _ => e,
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
        self.conn.close();
        self.write_shut = true;
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
