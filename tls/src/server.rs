//! TLS composed with the server layer: [`TlsSession`], one server connection of
//! [`sockmsg_server`] (its [`Session`]: service, policy, deadlines) behind rustls, and
//! [`PeerService`], a service that sees who the client is.

use std::fmt;
use std::io::IoSlice;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use sockmsg_protocol::{Connection, Message};
use sockmsg_server::{CloseReason, ServerConfig, Service, ServiceError, Session};

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
}

impl fmt::Debug for ServerSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSide")
            .field("session", &self.session)
            .field("peer", &self.peer.get())
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
}

/// One server connection over TLS: rustls in front of a server [`Session`]. A transport
/// drives it as it drives a plaintext session, with the TLS composition's one way in and
/// out:
///
/// * while [`Tls::wants_write`]: [`Tls::write_tls`] to the socket;
/// * while [`Tls::wants_read`]: [`Tls::read_tls`] from the socket;
/// * sleep until [`Tls::poll_timeout`] (the handshake deadline, then the session's
///   deadlines), then [`Tls::handle_timeout`];
/// * on shutdown, [`TlsSession::begin_shutdown`];
/// * once [`TlsSession::is_done`], log [`TlsSession::end`] and close the socket.
pub type TlsSession = Tls<ServerSide>;

impl Tls<ServerSide> {
    /// A connection accepted at `now`: `tls` for the handshake (see
    /// [`crate::server_config`]), `service` answering (told who the client is), `config`
    /// the server's policy, as for a plaintext [`Session`].
    pub fn accept(
        tls: Arc<rustls::ServerConfig>,
        service: Arc<dyn PeerService>,
        config: Arc<ServerConfig>,
        now: Instant,
    ) -> Result<TlsSession, TlsError> {
        let peer = Arc::new(OnceLock::new());
        let bound: Arc<dyn Service> = Arc::new(Bound {
            service,
            peer: Arc::clone(&peer),
        });
        let side = ServerSide {
            session: Session::new(bound, config, now),
            peer,
        };
        Tls::server(tls, side, now)
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

    /// Ends the connection at once for `reason` (a socket error, say): TLS records not yet
    /// written are dropped, so the connection is done at once.
    pub fn abort(&mut self, reason: CloseReason) {
        self.inner_mut().session.abort(reason);
        self.drop_output();
    }

    /// `true` once the connection is over and nothing is left to write: close the socket.
    pub fn is_done(&self) -> bool {
        (self.error().is_some() || self.timed_out().is_some() || self.session().is_closed())
            && !self.wants_write()
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
