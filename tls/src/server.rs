//! TLS composed with the server layer: [`TlsSession`], one server connection of
//! [`sockmsg_server`] (its [`Session`]: service, policy, deadlines) behind rustls, and
//! [`PeerService`], a service that sees who the client is.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use sockmsg_protocol::{Connection, Message, Timeout};
use sockmsg_server::{
    CloseReason, Driven, MemoryBudget, ServerConfig, Service, ServiceError, Session,
};

use crate::conn::{Plaintext, Tls, TlsTimeout};
use crate::error::TlsError;
use crate::identity::PeerIdentity;

/// An application that may decide per client: it is given the identity the client proved
/// with its certificate (`None` without mutual TLS, or for a client without certificate
/// where one is optional).
///
/// ```
/// use sockmsg_protocol::Message;
/// use sockmsg_tls::server::PeerService;
/// use sockmsg_tls::PeerIdentity;
/// let greet = |peer: Option<&PeerIdentity>, _request: Message| {
///     let who = peer.map_or("stranger", PeerIdentity::name);
///     Ok(Message::binary("text/plain", format!("hello, {who}").into_bytes()))
/// };
/// let answer = greet.call(None, Message::binary("text/plain", b"hi".to_vec()))?;
/// assert_eq!(answer.content(), b"hello, stranger");
/// # Ok::<(), sockmsg_server::ServiceError>(())
/// ```
pub trait PeerService: Send + Sync + 'static {
    /// The response to `request` from `peer`. An error closes the connection.
    fn call(&self, peer: Option<&PeerIdentity>, request: Message) -> Result<Message, ServiceError>;
}

impl<F> PeerService for F
where
    F: Fn(Option<&PeerIdentity>, Message) -> Result<Message, ServiceError> + Send + Sync + 'static,
{
    fn call(&self, peer: Option<&PeerIdentity>, request: Message) -> Result<Message, ServiceError> {
        self(peer, request)
    }
}

/// A [`Service`] that answers every client alike, as a [`PeerService`].
pub struct AnyPeer(pub Arc<dyn Service>);

impl PeerService for AnyPeer {
    fn call(
        &self,
        _peer: Option<&PeerIdentity>,
        request: Message,
    ) -> Result<Message, ServiceError> {
        self.0.call(request)
    }
}

/// The session's service: the peer service, told who the peer is.
struct Bound {
    service: Arc<dyn PeerService>,
    peer: Arc<OnceLock<Option<PeerIdentity>>>,
}

impl Service for Bound {
    fn call(&self, request: Message) -> Result<Message, ServiceError> {
        let peer = self.peer.get().and_then(Option::as_ref);
        self.service.call(peer, request)
    }
}

/// The plaintext side of a [`TlsSession`]: a server [`Session`], and where the peer's
/// identity is put when the handshake completes (before any request reaches the service).
pub struct ServerSide {
    session: Session,
    peer: Arc<OnceLock<Option<PeerIdentity>>>,
    /// [`TlsSession::abort`] ended it at once: nothing more is read or written (not even
    /// `close_notify`: the socket may be broken).
    aborted: bool,
}

impl fmt::Debug for ServerSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSide")
            .field("session", &self.session)
            .field("peer", &self.peer.get())
            .field("aborted", &self.aborted)
            .finish()
    }
}

impl Plaintext for ServerSide {
    fn read_buf(&mut self) -> &mut [u8] {
        self.session.read_buf()
    }

    fn commit(&mut self, n: usize, now: Instant) {
        self.session.commit(n, now);
    }

    fn receive(&mut self, input: &mut &[u8], now: Instant) {
        // A slice reads without error; a large content's bytes are appended to its pieces.
        let _ = self.session.read_spare_from(input, now);
    }

    fn receive_eof(&mut self, now: Instant) {
        self.session.receive_eof(now);
    }

    fn pending_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        self.session.pending_slices(out)
    }

    fn consume(&mut self, n: usize, now: Instant) {
        self.session.consume(n, now);
    }

    fn wants_read(&self) -> bool {
        self.session.wants_read()
    }

    fn wants_write(&self) -> bool {
        self.session.wants_write()
    }

    fn wants_shutdown(&self) -> bool {
        self.session.is_closed()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) -> bool {
        self.session.handle_timeout(now);
        self.session.is_closed()
    }

    fn connection(&self) -> &Connection {
        self.session.connection()
    }

    fn handshake_done(&mut self, peer: Option<&PeerIdentity>) {
        let _ = self.peer.set(peer.cloned());
    }

    fn over_budget(&mut self, need: usize, budget: usize) {
        // As a plaintext session refused a message: the session's reason, its one line.
        self.session.abort(CloseReason::OverBudget {
            what: "TLS buffer",
            need,
            budget,
        });
        self.aborted = true;
    }
}

/// One server connection over TLS: rustls in front of a server [`Session`]. A transport
/// drives it exactly as it drives a plaintext session, through the server layer's
/// [`Driven`] trait (implemented here, so every transport's one loop serves TLS too), with
/// the TLS composition's one way in and out:
///
/// * while [`Tls::wants_write`]: [`Tls::write_tls`] to the socket ([`Driven::write_to`]);
/// * while [`Tls::wants_read`]: [`Tls::read_tls`] from the socket ([`Driven::read_from`]);
/// * sleep until [`Tls::poll_timeout`] (the handshake deadline, then the session's
///   deadlines), then [`Tls::handle_timeout`];
/// * on shutdown, [`TlsSession::begin_shutdown`];
/// * once [`TlsSession::is_done`], log [`TlsSession::end`] ([`Driven::log_close`]) and
///   close the socket.
pub type TlsSession = Tls<ServerSide>;

impl Tls<ServerSide> {
    /// A connection accepted at `now`: `tls` for the handshake (see
    /// [`crate::server_config`]), `service` answering (told who the client is), `config`
    /// the server's policy, as for a plaintext [`Session`].
    ///
    /// Its session counts against [`MemoryBudget::for_config`]: the configuration's
    /// `memory_meter` if set, else a budget of its own; a transport passes its server's
    /// one budget with [`TlsSession::accept_with_budget`].
    pub fn accept(
        tls: Arc<rustls::ServerConfig>,
        service: Arc<dyn PeerService>,
        config: Arc<ServerConfig>,
        now: Instant,
    ) -> Result<TlsSession, TlsError> {
        let budget = MemoryBudget::for_config(&config);
        TlsSession::accept_with_budget(tls, service, config, budget, now)
    }

    /// As [`TlsSession::accept`], the session counting its memory in `budget`, the one its
    /// server shares between all its connections (see [`Session::new_with_budget`]): the
    /// plaintext session's buffers, and the TLS layer's ciphertext buffers (charged before
    /// they grow, given back as they are freed: [`Tls::buffers_charged`]). A connection
    /// whose TLS buffers find no room is closed at once with
    /// [`CloseReason::OverBudget`] (`what`: `"TLS buffer"`) and its one log line; others
    /// are not affected. rustls's own state (keys, handshake) is not counted.
    pub fn accept_with_budget(
        tls: Arc<rustls::ServerConfig>,
        service: Arc<dyn PeerService>,
        config: Arc<ServerConfig>,
        budget: MemoryBudget,
        now: Instant,
    ) -> Result<TlsSession, TlsError> {
        let peer = Arc::new(OnceLock::new());
        let bound: Arc<dyn Service> = Arc::new(Bound {
            service,
            peer: Arc::clone(&peer),
        });
        let side = ServerSide {
            session: Session::new_with_budget(bound, config, budget.clone(), now),
            peer,
            aborted: false,
        };
        let mut session = Tls::server(tls, side, now)?;
        session.charge_buffers_to(&budget);
        Ok(session)
    }

    /// What a transport's accept loop calls for each connection (std, mio and tokio take
    /// the same function): [`TlsSession::accept_with_budget`] with `tls` and `service`,
    /// or, if TLS cannot start, `None` (the connection is dropped) after one `warn` line
    /// saying why.
    pub fn acceptor(
        tls: Arc<rustls::ServerConfig>,
        service: Arc<dyn PeerService>,
    ) -> impl Fn(Arc<ServerConfig>, &MemoryBudget, Instant) -> Option<TlsSession> + Send + Sync
    {
        move |config, budget, now| {
            TlsSession::accept_with_budget(
                Arc::clone(&tls),
                Arc::clone(&service),
                config,
                budget.clone(),
                now,
            )
            .map_err(|e| tracing::warn!("dropping a connection: cannot start TLS: {e}"))
            .ok()
        }
    }

    /// The server session inside.
    pub fn session(&self) -> &Session {
        &self.inner().session
    }

    /// The server is stopping (see [`Session::begin_shutdown`]): answers owed are sent
    /// within the grace, then `close_notify`.
    pub fn begin_shutdown(&mut self, now: Instant) {
        self.inner_mut().session.begin_shutdown(now);
    }

    /// Ends the connection at once for `reason` (a socket error, say): nothing more is
    /// read or written, not even `close_notify` (the socket may be broken), and TLS records
    /// not yet written are dropped, so the connection is done at once.
    pub fn abort(&mut self, reason: CloseReason) {
        let side = self.inner_mut();
        side.session.abort(reason);
        side.aborted = true;
        self.drop_output();
    }

    /// `true` once the connection is over and nothing is left to write: close the socket.
    pub fn is_done(&self) -> bool {
        self.inner().aborted
            || ((self.error().is_some()
                || self.timed_out().is_some()
                || self.session().is_closed())
                && !self.wants_write())
    }

    /// Why the connection ended, once it did: the TLS failure, the handshake deadline, or
    /// the session's own reason.
    pub fn end(&self) -> Option<End<'_>> {
        if self.timed_out() == Some(TlsTimeout::Handshake) {
            // A silent peer: a deadline, as for a silent plaintext peer, not a failure.
            return Some(End::Timeout(TlsTimeout::Handshake));
        }
        if let Some(e) = self.error() {
            return Some(End::Tls(e));
        }
        if let Some(t) = self.timed_out() {
            if let Some(reason) = self.session().close_reason() {
                return Some(End::Session(reason));
            }
            return Some(End::Timeout(t));
        }
        self.session().close_reason().map(End::Session)
    }
}

/// A TLS connection, driven by a transport's loop as a plaintext [`Session`] is.
impl Driven for TlsSession {
    fn session(&self) -> &Session {
        TlsSession::session(self)
    }

    fn wants_read(&self) -> bool {
        !self.inner().aborted && Tls::wants_read(self)
    }

    fn wants_write(&self) -> bool {
        !self.inner().aborted && Tls::wants_write(self)
    }

    fn read_from<R: Read + ?Sized>(&mut self, reader: &mut R, now: Instant) -> io::Result<usize> {
        self.read_tls(reader, now)
    }

    fn write_to<W: Write + ?Sized>(&mut self, writer: &mut W, now: Instant) -> io::Result<usize> {
        self.write_tls(writer, now)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Tls::poll_timeout(self)
    }

    fn handle_timeout(&mut self, now: Instant) {
        let passed = Tls::handle_timeout(self, now);
        if passed == Some(TlsTimeout::Protocol(Timeout::Write)) && !self.session().is_closed() {
            // TLS records waited past the write deadline: the session's own reason, so the
            // line is the one a plaintext connection gets.
            let limit = self.session().config().write_deadline.unwrap_or_default();
            self.inner_mut()
                .session
                .abort(CloseReason::WriteDeadline(limit));
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        TlsSession::begin_shutdown(self, now);
    }

    fn abort(&mut self, reason: CloseReason) {
        TlsSession::abort(self, reason);
    }

    fn is_done(&self) -> bool {
        TlsSession::is_done(self)
    }

    fn close_reason(&self) -> Option<&CloseReason> {
        match self.end() {
            Some(End::Session(reason)) => Some(reason),
            _ => None,
        }
    }

    fn is_failure(&self) -> bool {
        self.end().is_some_and(|end| end.is_failure())
    }

    fn log_close(&self, peer: &dyn fmt::Display) {
        if let Some(end) = self.end() {
            end.log(peer);
        }
    }

    /// Two buffers are lent for reading: the ciphertext's first (it is read first), then
    /// the session's, for the plaintext.
    fn give_read_buffer(&mut self, buf: Vec<u8>) -> Option<Vec<u8>> {
        match self.give_input_buffer(buf) {
            None => None,
            Some(buf) => self.inner_mut().session.give_read_buffer(buf),
        }
    }

    /// The session's read buffer while it is idle, then the ciphertext buffer while no
    /// record is in pieces: an idle TLS connection in an event loop that pools them holds
    /// neither.
    fn take_read_buffer(&mut self) -> Option<Vec<u8>> {
        self.inner_mut()
            .session
            .take_read_buffer()
            .or_else(|| self.take_input_buffer())
    }
}

/// Why a [`TlsSession`] ended.
#[derive(Debug)]
pub enum End<'a> {
    /// The handshake failed, the peer sent plaintext, or the TLS stream broke.
    Tls(&'a TlsError),
    /// A deadline of the composition passed (the handshake deadline, or TLS records
    /// waiting longer than the write deadline).
    Timeout(TlsTimeout),
    /// The session's own reason (the peer closed, answered, a protocol error...).
    Session(&'a CloseReason),
}

impl End<'_> {
    /// `true` for a failure worth a `warn` line.
    pub fn is_failure(&self) -> bool {
        match self {
            End::Tls(_) => true,
            End::Timeout(_) => false,
            End::Session(reason) => reason.is_failure(),
        }
    }

    /// Logs the one line of a closed connection, `closing connection to PEER (REASON)`, as
    /// [`CloseReason::log`] does.
    pub fn log(&self, peer: &dyn fmt::Display) {
        match self {
            End::Session(reason) => reason.log(peer),
            End::Tls(_) => tracing::warn!("closing connection to {peer} ({self})"),
            End::Timeout(_) => tracing::info!("closing connection to {peer} ({self})"),
        }
    }
}

impl fmt::Display for End<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Tls(e) => write!(f, "TLS: {e}"),
            End::Timeout(TlsTimeout::Handshake) => f.write_str("TLS handshake deadline"),
            End::Timeout(t) => write!(f, "TLS: {t}"),
            End::Session(reason) => reason.fmt(f),
        }
    }
}

#[cfg(test)]
mod driven {
    use std::sync::Arc;
    use std::time::Instant;

    use sockmsg_protocol::{Connection, Event, Message};
    use sockmsg_server::{CloseReason, Driven, MemoryBudget, ServerConfig, ServiceError};

    use super::{AnyPeer, PeerService, TlsSession};
    use crate::certs::{Authority, Spec, Usage};
    use crate::{client_config, server_config, ClientOptions, Pem, ServerOptions};
    use crate::{TlsConnection, TlsError};

    fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let ca = Authority::new("driven CA", 1).expect("CA");
        let cert = ca
            .issue(&Spec::new(Usage::Server, "localhost", &["localhost"], 1))
            .expect("certificate");
        let server = server_config(&ServerOptions::new(
            Pem::memory("server.pem", cert.cert_pem),
            Pem::memory("server-key.pem", cert.key_pem),
        ))
        .expect("server config");
        let client = client_config(&ClientOptions {
            ca: Some(Pem::memory("ca.pem", ca.cert_pem())),
            ..ClientOptions::default()
        })
        .expect("client config");
        (server, client)
    }

    fn echo() -> Arc<dyn PeerService> {
        Arc::new(AnyPeer(Arc::new(
            |m: Message| -> Result<Message, ServiceError> { Ok(m) },
        )))
    }

    /// An echo server session on `budget`, and a client for it, both made at `now`.
    fn echo_pair(budget: &MemoryBudget, now: Instant) -> (TlsSession, TlsConnection) {
        let (server_tls, client_tls) = configs();
        let config = Arc::new(ServerConfig::default().normalized());
        let server =
            TlsSession::accept_with_budget(server_tls, echo(), config, budget.clone(), now)
                .expect("server");
        let client = TlsConnection::client(client_tls, "localhost", Connection::client(), now)
            .expect("client");
        (server, client)
    }

    /// Moves bytes between `client` and a server machine driven only through [`Driven`],
    /// as a transport's loop does, until neither has more to say.
    fn pump<D: Driven>(server: &mut D, client: &mut TlsConnection) {
        let now = Instant::now();
        for _ in 0..64 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire, now).expect("a Vec takes all");
            }
            let mut rest = &wire[..];
            while !rest.is_empty() && server.wants_read() {
                server.read_from(&mut rest, now).expect("a slice reads");
            }
            let mut back = Vec::new();
            while server.wants_write() {
                server.write_to(&mut back, now).expect("a Vec takes all");
            }
            let mut rest = &back[..];
            while !rest.is_empty() {
                client.read_tls(&mut rest, now).expect("a slice reads");
            }
            if wire.is_empty() && back.is_empty() {
                return;
            }
        }
        panic!("the exchange did not settle");
    }

    #[test]
    fn a_tls_session_is_driven_as_a_plain_one_and_draws_on_the_servers_budget() {
        let now = Instant::now();
        let budget = MemoryBudget::new(1 << 20);
        let (mut server, mut client) = echo_pair(&budget, now);
        let request = Message::binary("x/request", vec![b'r'; 100_000]);
        client.send(request.clone(), now).expect("send");
        pump(&mut server, &mut client);
        assert_eq!(client.next_event(), Ok(Event::Message(request)));
        assert!(server.idle_since().is_some(), "idle after its answer");
        assert!(!server.is_done());
        // Its session counts in the budget it was given, not in one of its own.
        assert!(
            budget.peak() >= 100_000,
            "the request was charged to the server's budget: {budget:?}"
        );
        // The client closes between messages: a clean end, the session's own reason.
        client.close();
        pump(&mut server, &mut client);
        assert!(server.is_done());
        assert_eq!(
            Driven::close_reason(&server).map(CloseReason::label),
            Some("clean")
        );
        assert!(!Driven::is_failure(&server));
        drop(server);
        assert_eq!(budget.used(), 0, "{budget:?}");
    }

    /// The client's pending ciphertext.
    fn flight(client: &mut TlsConnection) -> Vec<u8> {
        let mut wire = Vec::new();
        while client.wants_write() {
            client
                .write_tls(&mut wire, Instant::now())
                .expect("a Vec takes all");
        }
        wire
    }

    #[test]
    fn tls_buffers_are_charged_while_they_hold_ciphertext_and_given_back() {
        let now = Instant::now();
        let budget = MemoryBudget::new(1 << 20);
        let (mut server, mut client) = echo_pair(&budget, now);
        assert_eq!(server.buffers_charged(), 0, "no buffer before any byte");
        assert_eq!(budget.used(), server.session().budget_charged());

        // A ClientHello arriving in pieces: the first read's buffer, then room for a whole
        // record while one is in progress; each charged, and counted in the budget.
        let hello = flight(&mut client);
        let mut rest = &hello[..3];
        server.read_from(&mut rest, now).expect("a slice reads");
        let small = server.buffers_charged();
        assert!(small >= 4 * 1024, "{small}");
        assert_eq!(budget.used(), small + server.session().budget_charged());
        let mut rest = &hello[3..];
        server.read_from(&mut rest, now).expect("a slice reads");
        let larger = server.buffers_charged();
        assert!(
            larger > small,
            "the charge rises with the buffer: {larger} > {small}"
        );
        assert_eq!(budget.used(), larger + server.session().budget_charged());

        // A request and its answer; then, idle, the buffers are freed and the charge goes
        // back to what it was before the connection held any.
        let request = Message::binary("x/request", vec![b'r'; 50_000]);
        pump(&mut server, &mut client);
        client.send(request.clone(), now).expect("send");
        pump(&mut server, &mut client);
        assert_eq!(client.next_event(), Ok(Event::Message(request.clone())));
        assert!(server.buffers_charged() > 0, "{server:?}");
        let later = Instant::now() + crate::RELEASE_DELAY * 2;
        Driven::handle_timeout(&mut server, later);
        assert_eq!(server.buffers_charged(), 0, "released when idle");
        // The TLS share of the budget is back where it was: only the session's remains.
        assert_eq!(
            budget.used(),
            server.session().budget_charged(),
            "{budget:?}"
        );

        // Charged again by the next request; given back when the connection is dropped.
        client.send(request.clone(), now).expect("send");
        pump(&mut server, &mut client);
        assert_eq!(client.next_event(), Ok(Event::Message(request)));
        assert!(server.buffers_charged() > 0);
        assert!(budget.used() > server.session().budget_charged());
        let session = server.session().budget_charged();
        drop(server);
        assert_eq!(
            budget.used(),
            0,
            "nothing left once dropped ({session} were the session's)"
        );
    }

    #[test]
    fn a_tls_connection_over_budget_closes_with_its_reason_and_others_go_on() {
        let (server_tls, client_tls) = configs();
        let now = Instant::now();
        let budget = MemoryBudget::new(256 * 1024);
        let config = Arc::new(ServerConfig::default().normalized());
        let accept = || {
            TlsSession::accept_with_budget(
                server_tls.clone(),
                echo(),
                config.clone(),
                budget.clone(),
                now,
            )
            .expect("server")
        };
        let connect = || {
            TlsConnection::client(client_tls.clone(), "localhost", Connection::client(), now)
                .expect("client")
        };
        let (mut a, mut b) = (accept(), accept());
        let (mut ca, mut cb) = (connect(), connect());
        pump(&mut a, &mut ca);
        pump(&mut b, &mut cb);
        assert!(!a.is_handshaking() && !b.is_handshaking());
        // The other connections of the server hold all but 8 KiB.
        let mut others = sockmsg_server::BudgetCharge::new(&budget);
        assert!(others.try_set(budget.limit() - budget.used() - 8 * 1024));

        // A's peer sends a record that arrives in pieces: room for the whole record does
        // not fit. A closes at once with the session's reason; its buffers go back.
        let refused = budget.refused();
        ca.send(Message::binary("x/big", vec![b'x'; 20_000]), now)
            .expect("send");
        let wire = flight(&mut ca);
        let mut rest = &wire[..];
        while !rest.is_empty() && Driven::wants_read(&a) {
            a.read_from(&mut rest, now).expect("a slice reads");
        }
        assert!(Driven::is_done(&a), "{a:?}");
        assert!(!Driven::wants_write(&a) && !Driven::wants_read(&a));
        let reason = Driven::close_reason(&a).expect("the session's reason");
        assert_eq!(reason.label(), "over-budget");
        assert!(Driven::is_failure(&a));
        assert_eq!(
            reason.to_string(),
            format!(
                "no room for a TLS buffer of {} bytes in the server's memory budget of {} \
                 bytes; refused",
                18 * 1024,
                256 * 1024
            )
        );
        assert_eq!(a.buffers_charged(), 0);
        assert_eq!(budget.refused(), refused + 1);

        // B, on the same budget, is served.
        let small = Message::binary("x/small", b"hello".to_vec());
        cb.send(small.clone(), now).expect("send");
        pump(&mut b, &mut cb);
        assert_eq!(cb.next_event(), Ok(Event::Message(small)));
        assert!(!Driven::is_done(&b));
        drop((a, b, others));
        assert_eq!(budget.used(), 0, "{budget:?}");
    }

    #[test]
    fn a_tls_session_reads_through_two_lent_buffers_and_gives_both_back_when_idle() {
        let now = Instant::now();
        // The budget `TlsSession::accept` gives a session of the default configuration.
        let budget = MemoryBudget::for_config(&ServerConfig::default());
        let (mut server, mut client) = echo_pair(&budget, now);
        pump(&mut server, &mut client);
        assert!(!server.is_handshaking());
        while Driven::take_read_buffer(&mut server).is_some() {}

        // Two buffers taken (ciphertext, then plaintext), a third handed back.
        let lent: Vec<Vec<u8>> = (0..3).map(|_| vec![0xAA; 4096]).collect();
        let addresses: Vec<*const u8> = lent.iter().map(|b| b.as_ptr()).collect();
        let mut lent = lent.into_iter();
        assert_eq!(
            Driven::give_read_buffer(&mut server, lent.next().unwrap()),
            None
        );
        assert_eq!(
            Driven::give_read_buffer(&mut server, lent.next().unwrap()),
            None
        );
        let third = Driven::give_read_buffer(&mut server, lent.next().unwrap());
        assert_eq!(third.map(|b| b.as_ptr()), Some(addresses[2]));

        // A request whose record arrives in pieces: the ciphertext buffer holds the first
        // piece and is not taken back (the session's is: nothing in it is unread). Once
        // the rest arrived and the answer went out, both are.
        let request = Message::binary("x/request", b"pieces".to_vec());
        client.send(request.clone(), now).expect("send");
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire, now).expect("a Vec takes all");
        }
        let (first, rest) = wire.split_at(wire.len() - 5);
        let mut first = first;
        while !first.is_empty() {
            server.read_from(&mut first, now).expect("a slice reads");
        }
        let mut taken: Vec<Vec<u8>> = Vec::new();
        while let Some(buf) = Driven::take_read_buffer(&mut server) {
            taken.push(buf);
        }
        let middle: Vec<*const u8> = taken.iter().map(|b| b.as_ptr()).collect();
        assert_eq!(
            middle,
            [addresses[1]],
            "only the session's buffer is taken while a record is in pieces"
        );
        // Lent again before the next read, as a transport lends from its pool.
        while let Some(buf) = taken.pop() {
            if let Some(buf) = Driven::give_read_buffer(&mut server, buf) {
                taken.push(buf);
                break;
            }
        }
        let mut rest = rest;
        while !rest.is_empty() {
            server.read_from(&mut rest, now).expect("a slice reads");
        }
        let mut back = Vec::new();
        while server.wants_write() {
            server.write_to(&mut back, now).expect("a Vec takes all");
        }
        let mut answer = &back[..];
        while !answer.is_empty() {
            client.read_tls(&mut answer, now).expect("a slice reads");
        }
        assert_eq!(client.next_event(), Ok(Event::Message(request)));
        while let Some(buf) = Driven::take_read_buffer(&mut server) {
            taken.push(buf);
        }
        // The ciphertext buffer grew to take a whole record (it may have moved).
        assert_eq!(taken.len(), 2, "both buffers back once idle");
        assert!(taken.iter().any(|b| b.as_ptr() == addresses[1]));
        assert!(!server.is_done());
    }

    #[test]
    fn an_aborted_tls_session_is_done_at_once_without_close_notify() {
        let now = Instant::now();
        // The budget `TlsSession::accept` gives a session of the default configuration.
        let budget = MemoryBudget::for_config(&ServerConfig::default());
        let (mut server, mut client) = echo_pair(&budget, now);
        pump(&mut server, &mut client);
        assert!(!server.is_handshaking());
        Driven::abort(
            &mut server,
            CloseReason::Io(std::io::ErrorKind::BrokenPipe.into()),
        );
        // A broken socket takes nothing more: no close_notify waits to be written.
        assert!(Driven::is_done(&server));
        assert!(!Driven::wants_write(&server) && !Driven::wants_read(&server));
        assert_eq!(
            Driven::close_reason(&server).map(CloseReason::label),
            Some("io-error")
        );
    }

    #[test]
    fn a_plaintext_peer_ends_below_the_session_as_a_failure() {
        let (server_tls, _) = configs();
        let now = Instant::now();
        let config = Arc::new(ServerConfig::default().normalized());
        let mut server = TlsSession::accept(server_tls, echo(), config, now).expect("server");
        let plaintext = sockmsg_protocol::encode(&Message::binary("x/request", b"hi".to_vec()))
            .expect("encodes");
        let mut rest = &plaintext[..];
        while !rest.is_empty() && Driven::wants_read(&server) {
            Driven::read_from(&mut server, &mut rest, now).expect("a slice reads");
        }
        let mut alert = Vec::new();
        while Driven::wants_write(&server) {
            Driven::write_to(&mut server, &mut alert, now).expect("a Vec takes all");
        }
        assert!(Driven::is_done(&server));
        assert!(
            matches!(server.error(), Some(TlsError::NotTls { .. })),
            "{:?}",
            server.error()
        );
        // No reason of the session's (it never started): counted apart, logged as TLS.
        assert!(Driven::close_reason(&server).is_none());
        assert!(Driven::is_failure(&server));
    }
}
