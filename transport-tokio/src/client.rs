//! The async client: one TCP connection, whole messages, requests pipelined if you like.

use std::fmt;
use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sockmsg_protocol::{Connection, Event, Limits, Message, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::error::{ClientError, Op};

/// Longest [`Client::close`] waits for the server to close its side.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Most slices handed to one vectored write.
const MAX_SLICES: usize = 64;

/// How a [`Client`] connects and how long it waits. The timeouts use tokio's timer: the
/// runtime needs it enabled (`enable_time` or `enable_all`) unless they are all `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Longest wait for the name to resolve and the connection to be established.
    /// Default: 10 s. `None`: the operating system's own limits.
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
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
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
    match limit.filter(|d| !d.is_zero()) {
        Some(after) => tokio::time::timeout(after, fut).await.map_err(|_| after),
        None => Ok(fut.await),
    }
}

impl Client {
    /// Connects to `addr`: a `host:port` string (names are resolved, each address tried in
    /// turn), a `SocketAddr`, or anything tokio can resolve. Resolution and connection
    /// together are bounded by [`ClientConfig::connect_timeout`]. Errors name `addr`:
    /// [`ClientError::Resolve`], [`ClientError::Refused`], [`ClientError::Timeout`].
    pub async fn connect<A: ToSocketAddrs + fmt::Display>(
        addr: A,
        config: &ClientConfig,
    ) -> Result<Client, ClientError> {
        let name = addr.to_string();
        let attempt = async {
            let addrs =
                tokio::net::lookup_host(addr)
                    .await
                    .map_err(|source| ClientError::Resolve {
                        addr: name.clone(),
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
                Some(e) => ClientError::from_io(&name, Op::Connect, e),
                None => ClientError::Resolve {
                    addr: name.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the name resolved to no address",
                    ),
                },
            })
        };
        let stream = within(config.connect_timeout, attempt)
            .await
            .map_err(|after| ClientError::Timeout {
                addr: name.clone(),
                op: Op::Connect,
                after,
            })??;
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
            read_timeout: config.read_timeout,
            write_timeout: config.write_timeout,
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

    /// Sends `request` and waits for its answer. With requests already in flight, the
    /// answer returned is that of the oldest one (answers come back in order).
    pub async fn request(&mut self, request: Message) -> Result<Message, ClientError> {
        self.queue(request)?;
        self.recv().await
    }

    /// Sends `message`, returning once every byte queued was written.
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

    /// Writes everything queued. Each write must make progress within
    /// [`ClientConfig::write_timeout`].
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        while self.conn.wants_write() {
            let written = {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = self.conn.pending_slices(&mut slices);
                let slices = slices.get(..count).unwrap_or_default();
                within(self.write_timeout, self.stream.write_vectored(slices)).await
            };
            let n = written
                .map_err(|after| self.timeout(Op::Write, after))?
                .map_err(|e| ClientError::from_io(&self.addr, Op::Write, e))?;
            if n == 0 {
                return Err(ClientError::Reset {
                    addr: self.addr.clone(),
                    op: Op::Write,
                });
            }
            self.conn.consume(n, Instant::now());
        }
        Ok(())
    }

    fn timeout(&self, op: Op, after: Duration) -> ClientError {
        ClientError::Timeout {
            addr: self.addr.clone(),
            op,
            after,
        }
    }

    /// Writes what is queued, then waits for the next message. Each read must bring bytes
    /// within [`ClientConfig::read_timeout`]. If the server closes cleanly first, that is
    /// [`ClientError::Closed`], with the number of answers it still owed.
    pub async fn recv(&mut self) -> Result<Message, ClientError> {
        loop {
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
            self.flush().await?;
            let read = within(self.read_timeout, self.stream.read(self.conn.read_buf())).await;
            let n = read
                .map_err(|after| self.timeout(Op::Read, after))?
                .map_err(|e| ClientError::from_io(&self.addr, Op::Read, e))?;
            if n == 0 {
                self.conn.receive_eof();
            } else {
                self.conn
                    .commit(n, Instant::now())
                    .map_err(|source| ClientError::Local {
                        addr: self.addr.clone(),
                        source,
                    })?;
            }
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
        within(self.write_timeout, self.stream.shutdown())
            .await
            .map_err(|after| self.timeout(Op::Shutdown, after))?
            .map_err(|e| ClientError::from_io(&self.addr, Op::Shutdown, e))
    }

    /// Closes properly: writes what is queued, shuts down the write side, then waits (at
    /// most 2 s, or the read timeout if shorter) for the server to close its side, so that
    /// neither end resets the connection. Answers still owed that arrive meanwhile are
    /// discarded; a server that does not close in time is not an error.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.shutdown_write().await?;
        let wait = self.read_timeout.map_or(CLOSE_WAIT, |t| t.min(CLOSE_WAIT));
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
