//! A multi-connection client on one mio loop: the guide's `multiconn-client`, with
//! pipelining.

pub use sockmsg_server::ServerAddr;
use std::fmt;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use sockmsg_protocol::sniff::{describe, sniff, Sniff, SNIFF_LEN};
use sockmsg_protocol::{Connection, Event, Foreign, Limits, Message, Role};
use tracing::{debug, trace};

fn resolve(addr: &(impl ServerAddr + ?Sized)) -> io::Result<Vec<SocketAddr>> {
    let named =
        |e: io::Error| io::Error::new(e.kind(), format!("cannot resolve {}: {e}", addr.name()));
    sockmsg_server::addr::resolve(addr).map_err(named)
}

/// `e`, with the address it concerns in its message (its kind kept).
fn at(addr: SocketAddr, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{addr}: {e}"))
}

/// How a [`MultiClient`] behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Most requests in flight (sent, not yet answered) on one connection. Default: 8.
    /// Zero acts as one (no pipelining).
    pub pipeline_depth: usize,
    /// Time allowed for the whole run; connections not done by then fail with
    /// [`ClientError::TimedOut`]. Default: 30 s.
    pub timeout: Duration,
    /// What the server may make the client accept, and so allocate (a client may set a
    /// smaller [`Limits::max_content_len`] than the default 16 MiB): a response beyond them
    /// fails as soon as its header arrives, before its content is allocated. Default:
    /// [`Limits::default`].
    pub limits: Limits,
    /// Set `TCP_NODELAY` on every connection. Default: `true`.
    pub nodelay: bool,
    /// Shut down the write side of a connection once its last request is sent (the
    /// server still answers every request). Default: `true`.
    pub half_close: bool,
    /// Size of the read buffer shared by all connections. Default: 64 KiB.
    pub read_buffer: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            pipeline_depth: 8,
            timeout: Duration::from_secs(30),
            limits: Limits::default(),
            nodelay: true,
            half_close: true,
            read_buffer: 64 * 1024,
        }
    }
}

/// Why one connection of a [`MultiClient`] run did not get all its answers.
#[derive(Debug)]
pub enum ClientError {
    /// The connection could not be established (to any of the addresses; the error's
    /// message names the last one tried).
    Connect(io::Error),
    /// A socket error after connecting.
    Io(io::Error),
    /// The server's bytes broke the protocol.
    Protocol(sockmsg_protocol::PeerError),
    /// The server does not speak this protocol: its first bytes cannot start a message,
    /// and look like this (an HTTP reply, a TLS record...). See
    /// [`sockmsg_protocol::sniff`](mod@sockmsg_protocol::sniff).
    Foreign(Foreign),
    /// A request could not be encoded.
    Encode(sockmsg_protocol::LocalError),
    /// The server closed the connection before answering every request.
    Closed {
        /// Responses received.
        answered: usize,
        /// Requests sent on this connection in all.
        expected: usize,
    },
    /// The run's timeout passed first.
    TimedOut {
        /// Responses received.
        answered: usize,
        /// Requests on this connection in all.
        expected: usize,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "cannot connect to {e}"),
            ClientError::Foreign(seen) => {
                write!(f, "the server does not speak this protocol: {seen}")
            }
            ClientError::Io(e) => write!(f, "socket error: {e}"),
            ClientError::Protocol(e) => write!(f, "protocol error from the server: {e}"),
            ClientError::Encode(e) => write!(f, "cannot encode a request: {e}"),
            ClientError::Closed { answered, expected } => write!(
                f,
                "the server closed the connection after {answered} of {expected} responses"
            ),
            ClientError::TimedOut { answered, expected } => {
                write!(f, "timed out after {answered} of {expected} responses")
            }
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Connect(e) | ClientError::Io(e) => Some(e),
            ClientError::Protocol(e) => Some(e),
            ClientError::Encode(e) => Some(e),
            _ => None,
        }
    }
}

/// What one connection of a run got: its responses, in the order of its requests
/// (`responses[i]` answers request `i`), and the error that stopped it early, if any.
#[derive(Debug)]
pub struct ConnectionOutcome {
    /// The responses received, in request order.
    pub responses: Vec<Message>,
    /// Why the connection stopped before every request was answered.
    pub error: Option<ClientError>,
}

impl ConnectionOutcome {
    /// `true` if every request was answered.
    pub fn is_complete(&self) -> bool {
        self.error.is_none()
    }

    /// The responses if every request was answered, else the error.
    pub fn into_result(self) -> Result<Vec<Message>, ClientError> {
        match self.error {
            None => Ok(self.responses),
            Some(e) => Err(e),
        }
    }
}

/// Runs many connections at once from one thread on one `mio::Poll`: each connection sends
/// its list of requests, keeping up to [`ClientConfig::pipeline_depth`] in flight, and
/// collects the responses in order.
///
/// Connecting is non-blocking: each connection waits for `WRITABLE`, then checks
/// `take_error` and `peer_addr`, as mio prescribes.
///
/// ```no_run
/// use sockmsg_protocol::Message;
/// use sockmsg_transport_mio::{ClientConfig, MultiClient};
/// let requests: Vec<Vec<Message>> = (0..100)
///     .map(|i| (0..10).map(|j| Message::binary("x/y", format!("{i}.{j}"))).collect())
///     .collect();
/// // An address, "host:port", or ("host", port).
/// let outcomes = MultiClient::new(ClientConfig::default()).run("localhost:65432", requests)?;
/// assert!(outcomes.iter().all(|o| o.is_complete()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct MultiClient {
    config: ClientConfig,
}

/// One call: `requests.len()` connections to `addr`, each sending its own list with up to
/// `pipeline_depth` requests in flight; per connection, its responses in order or the
/// error that stopped it. Other settings are [`ClientConfig::default`]'s.
pub fn multi_request(
    addr: impl ServerAddr,
    requests: Vec<Vec<Message>>,
    pipeline_depth: usize,
) -> io::Result<Vec<Result<Vec<Message>, ClientError>>> {
    let client = MultiClient::new(ClientConfig {
        pipeline_depth,
        ..ClientConfig::default()
    });
    Ok(client
        .run(addr, requests)?
        .into_iter()
        .map(ConnectionOutcome::into_result)
        .collect())
}

struct ClientConn {
    stream: TcpStream,
    proto: Connection,
    to_send: std::vec::IntoIter<Message>,
    expected: usize,
    responses: Vec<Message>,
    connected: bool,
    write_shut: bool,
    readable: bool,
    /// An event reported end of stream or an error: read past short reads.
    hup: bool,
    registered: Interest,
    /// Index, in the resolved addresses, of the one this connection uses.
    addr_index: usize,
    /// That address.
    addr: SocketAddr,
    /// The first bytes received (up to [`SNIFF_LEN`]), to name a peer that does not speak
    /// this protocol.
    first: Vec<u8>,
    /// The first bytes are not known to be plausible yet.
    sniffing: bool,
}

impl MultiClient {
    /// A client with `config`.
    pub fn new(config: ClientConfig) -> MultiClient {
        MultiClient { config }
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Opens `requests.len()` connections to `addr` at once and runs them to completion (or
    /// the timeout). `addr` may be a host name: it is resolved once, and each connection
    /// tries its addresses in turn (the next when one refuses or fails), all within
    /// [`ClientConfig::timeout`]. Returns one outcome per connection, in the same order.
    /// The `Err` case is for the run failing as a whole: a name that does not resolve (the
    /// error names it), or the loop itself (creating or polling the `Poll`).
    pub fn run(
        &self,
        addr: impl ServerAddr,
        requests: Vec<Vec<Message>>,
    ) -> io::Result<Vec<ConnectionOutcome>> {
        let addrs = resolve(&addr)?;
        let cfg = &self.config;
        let started = Instant::now();
        let deadline = started
            .checked_add(cfg.timeout)
            .unwrap_or(started + Duration::from_secs(100 * 365 * 24 * 3600));
        let mut poll = Poll::new()?;
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0u8; cfg.read_buffer.max(1024)];
        let mut conns: Vec<Option<ClientConn>> = Vec::with_capacity(requests.len());
        let mut outcomes: Vec<Option<ConnectionOutcome>> = Vec::with_capacity(requests.len());
        let mut active = 0usize;
        for (i, list) in requests.into_iter().enumerate() {
            if list.is_empty() {
                conns.push(None);
                outcomes.push(Some(ConnectionOutcome {
                    responses: Vec::new(),
                    error: None,
                }));
                continue;
            }
            let expected = list.len();
            match start_connect(&addrs, 0, poll.registry(), Token(i)) {
                Ok((stream, addr_index, addr)) => {
                    conns.push(Some(ClientConn {
                        stream,
                        proto: Connection::new(Role::Client, cfg.limits.clone()),
                        to_send: list.into_iter(),
                        expected,
                        responses: Vec::with_capacity(expected),
                        connected: false,
                        write_shut: false,
                        readable: false,
                        hup: false,
                        registered: Interest::READABLE | Interest::WRITABLE,
                        addr_index,
                        addr,
                        first: Vec::new(),
                        sniffing: true,
                    }));
                    outcomes.push(None);
                    active += 1;
                }
                Err(e) => {
                    conns.push(None);
                    outcomes.push(Some(ConnectionOutcome {
                        responses: Vec::new(),
                        error: Some(ClientError::Connect(e)),
                    }));
                }
            }
        }
        while active > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match poll.poll(&mut events, Some(deadline - now)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                let i = event.token().0;
                let Some(conn) = conns.get_mut(i).and_then(Option::as_mut) else {
                    continue;
                };
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    conn.readable = true;
                }
                if event.is_read_closed() || event.is_error() {
                    conn.hup = true;
                }
                let step = conn.step(cfg, &mut scratch, poll.registry(), Token(i));
                let error = match step {
                    Ok(false) => continue,
                    Ok(true) => None,
                    Err(ClientError::Connect(e)) if !conn.connected => {
                        // Try the host's next address, if it has one.
                        match conn.reconnect(&addrs, poll.registry(), Token(i)) {
                            Ok(true) => continue,
                            Ok(false) => Some(ClientError::Connect(e)),
                            Err(e) => Some(ClientError::Connect(e)),
                        }
                    }
                    Err(e) => Some(conn.explain(e)),
                };
                if let Some(done) = conns.get_mut(i).and_then(Option::take) {
                    active -= 1;
                    trace!(
                        connection = i,
                        ok = error.is_none(),
                        "client connection done"
                    );
                    if let Some(slot) = outcomes.get_mut(i) {
                        *slot = Some(ConnectionOutcome {
                            responses: done.responses,
                            error,
                        });
                    }
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .zip(conns)
            .map(|(outcome, conn)| match (outcome, conn) {
                (Some(o), _) => o,
                (None, Some(c)) => ConnectionOutcome {
                    error: Some(c.explain(ClientError::TimedOut {
                        answered: c.responses.len(),
                        expected: c.expected,
                    })),
                    responses: c.responses,
                },
                (None, None) => ConnectionOutcome {
                    responses: Vec::new(),
                    error: Some(ClientError::TimedOut {
                        answered: 0,
                        expected: 0,
                    }),
                },
            })
            .collect())
    }
}

/// Starts a non-blocking connection to the first of `addrs[from..]` that does not fail at
/// once, registered under `token`: the stream, the index of its address and the address.
fn start_connect(
    addrs: &[SocketAddr],
    from: usize,
    registry: &Registry,
    token: Token,
) -> io::Result<(TcpStream, usize, SocketAddr)> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address left to try");
    for (index, addr) in addrs.iter().enumerate().skip(from) {
        let started = TcpStream::connect(*addr).and_then(|mut stream| {
            let interest = Interest::READABLE | Interest::WRITABLE;
            registry.register(&mut stream, token, interest)?;
            Ok(stream)
        });
        match started {
            Ok(stream) => return Ok((stream, index, *addr)),
            Err(e) => last = at(*addr, e),
        }
    }
    Err(last)
}

impl ClientConn {
    /// After a failed connect: replaces the stream with one to the next address. `false`
    /// if there is none.
    fn reconnect(
        &mut self,
        addrs: &[SocketAddr],
        registry: &Registry,
        token: Token,
    ) -> io::Result<bool> {
        let next = self.addr_index + 1;
        if next >= addrs.len() {
            return Ok(false);
        }
        // Best effort: the old socket is closed when dropped whatever this returns.
        let _ = registry.deregister(&mut self.stream);
        let (stream, index, addr) = start_connect(addrs, next, registry, token)?;
        self.stream = stream;
        self.addr_index = index;
        self.addr = addr;
        self.registered = Interest::READABLE | Interest::WRITABLE;
        self.readable = false;
        self.hup = false;
        Ok(true)
    }

    /// Before any response arrived, an error caused by the server (bytes that break the
    /// protocol, a close, the timeout) is better told as what the server sent, if its first
    /// bytes cannot start a message.
    fn explain(&self, e: ClientError) -> ClientError {
        let by_peer = matches!(
            &e,
            ClientError::Protocol(_)
                | ClientError::Closed { .. }
                | ClientError::TimedOut { .. }
                | ClientError::Io(_)
        );
        if !by_peer || !self.responses.is_empty() {
            return e;
        }
        match describe(&self.first) {
            Some(seen) => ClientError::Foreign(seen),
            None => e,
        }
    }

    /// Keeps the first bytes received and checks them: an error once they cannot start a
    /// message of this protocol.
    fn sniff(&mut self, input: &[u8]) -> Result<(), ClientError> {
        if !self.sniffing {
            return Ok(());
        }
        let room = SNIFF_LEN.saturating_sub(self.first.len());
        self.first
            .extend_from_slice(input.get(..room.min(input.len())).unwrap_or_default());
        match sniff(&self.first) {
            Sniff::Plausible => {
                self.sniffing = false;
                Ok(())
            }
            Sniff::NeedMore => Ok(()),
            Sniff::Foreign(seen) => Err(ClientError::Foreign(seen)),
        }
    }
    /// Moves the connection as far as it goes. `Ok(true)`: every request answered.
    fn step(
        &mut self,
        cfg: &ClientConfig,
        scratch: &mut [u8],
        registry: &Registry,
        token: Token,
    ) -> Result<bool, ClientError> {
        if !self.connected {
            // Non-blocking connect: after a wake-up, an error means it failed; a peer
            // address means it is done; "not connected" means wait (a spurious event).
            let addr = self.addr;
            let named = |e: io::Error| ClientError::Connect(at(addr, e));
            if let Some(e) = self.stream.take_error().map_err(named)? {
                return Err(named(e));
            }
            match self.stream.peer_addr() {
                Ok(_) => {
                    self.connected = true;
                    if cfg.nodelay {
                        if let Err(e) = self.stream.set_nodelay(true) {
                            debug!(error = %e, "cannot set TCP_NODELAY");
                        }
                    }
                }
                Err(e) if not_yet_connected(&e) => return Ok(false),
                Err(e) => return Err(named(e)),
            }
        }
        let depth = cfg.pipeline_depth.max(1) as u64;
        loop {
            while self.proto.in_flight() < depth && !self.proto.is_closed() {
                match self.to_send.next() {
                    Some(request) => self
                        .proto
                        .send(request, Instant::now())
                        .map_err(ClientError::Encode)?,
                    None => {
                        if cfg.half_close {
                            self.proto.close();
                        }
                        break;
                    }
                }
            }
            while self.proto.wants_write() {
                match self.proto.write_to(&mut self.stream, Instant::now()) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(ClientError::Io(e)),
                }
            }
            if self.proto.wants_shutdown() && !self.write_shut {
                self.write_shut = true;
                if let Err(e) = self.stream.shutdown(Shutdown::Write) {
                    if e.kind() != io::ErrorKind::NotConnected {
                        return Err(ClientError::Io(e));
                    }
                }
            }
            if !self.readable {
                break;
            }
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.readable = false;
                    self.proto.receive_eof();
                    self.take_responses()?;
                    if self.responses.len() < self.expected {
                        return Err(ClientError::Closed {
                            answered: self.responses.len(),
                            expected: self.expected,
                        });
                    }
                }
                Ok(n) => {
                    // A short read drained the socket; a later byte raises a new event.
                    if n < scratch.len() && !self.hup {
                        self.readable = false;
                    }
                    // Into the connection's one way in.
                    let mut input = scratch.get(..n).unwrap_or_default();
                    self.sniff(input)?;
                    while !input.is_empty() {
                        self.proto
                            .read_from(&mut input, Instant::now())
                            .map_err(ClientError::Io)?;
                    }
                    self.take_responses()?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ClientError::Io(e)),
            }
            if self.responses.len() >= self.expected {
                return Ok(true);
            }
        }
        let mut interest = Interest::READABLE;
        if self.proto.wants_write() {
            interest |= Interest::WRITABLE;
        }
        if interest != self.registered {
            registry
                .reregister(&mut self.stream, token, interest)
                .map_err(ClientError::Io)?;
            self.registered = interest;
        }
        Ok(false)
    }

    fn take_responses(&mut self) -> Result<(), ClientError> {
        loop {
            match self.proto.next_event().map_err(ClientError::Protocol)? {
                Event::Message(m) => self.responses.push(m),
                Event::NeedData => return Ok(()),
                Event::End => {
                    return if self.responses.len() < self.expected {
                        Err(ClientError::Closed {
                            answered: self.responses.len(),
                            expected: self.expected,
                        })
                    } else {
                        Ok(())
                    };
                }
            }
        }
    }
}

/// `peer_addr` on a socket whose connect is still in progress.
fn not_yet_connected(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::NotConnected {
        return true;
    }
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(libc::EINPROGRESS)
    }
    #[cfg(not(unix))]
    {
        false
    }
}
