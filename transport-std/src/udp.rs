//! Datagrams: each UDP datagram carries exactly one message.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use sockmsg_protocol::{decode, encode, Limits, Message};
use sockmsg_server::Service;

use crate::error::{Op, TransportError};

/// The largest UDP payload over IPv4 (65,535 − 8 − 20 bytes); larger messages cannot be
/// sent as one datagram.
pub const MAX_DATAGRAM: usize = 65_507;

/// Decodes the one message `datagram` must hold. A datagram that ends inside the message is
/// [`sockmsg_protocol::PeerError::UnexpectedEof`] (which says which part was cut short); bytes
/// after the message are [`TransportError::TrailingBytes`]. `from` names the sender in
/// errors.
///
/// ```
/// use sockmsg_protocol::{encode, Limits, Message};
/// use sockmsg_transport_std::{decode_datagram, TransportError};
/// let from = "127.0.0.1:9".parse()?;
/// let mut wire = encode(&Message::binary("x/y", b"hi".to_vec()))?;
/// assert_eq!(decode_datagram(&wire, &Limits::default(), from)?.content(), b"hi");
/// wire.push(0);
/// assert!(matches!(
///     decode_datagram(&wire, &Limits::default(), from),
///     Err(TransportError::TrailingBytes { extra: 1, .. })
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode_datagram(
    datagram: &[u8],
    limits: &Limits,
    from: SocketAddr,
) -> Result<Message, TransportError> {
    let (message, used) = decode(datagram, limits).map_err(|source| TransportError::Protocol {
        addr: from,
        source: source.into(),
    })?;
    match datagram.len() - used {
        0 => Ok(message),
        extra => Err(TransportError::TrailingBytes {
            addr: from,
            message_len: used,
            extra,
        }),
    }
}

/// A UDP socket that sends and receives one message per datagram: the datagram pair of
/// the socket-basics notes (`recvfrom` / `sendto`), speaking this protocol.
///
/// ```
/// use std::time::Duration;
/// use sockmsg_protocol::Message;
/// use sockmsg_transport_std::UdpEndpoint;
///
/// let mut server = UdpEndpoint::bind("127.0.0.1:0".parse()?)?;
/// let mut client = UdpEndpoint::bind("127.0.0.1:0".parse()?)?;
/// client.set_read_timeout(Some(Duration::from_secs(5)))?;
/// server.set_read_timeout(Some(Duration::from_secs(5)))?;
///
/// client.send_to(&Message::binary("x/y", b"ping".to_vec()), server.local_addr()?)?;
/// let echo = |m: Message| Ok(m);
/// let from = server.serve_one(&echo)?;
/// assert_eq!(from, client.local_addr()?);
/// let (answer, _) = client.recv_from()?;
/// assert_eq!(answer.content(), b"ping");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct UdpEndpoint {
    socket: UdpSocket,
    local_addr: SocketAddr,
    limits: Limits,
    read_timeout: Option<Duration>,
    buf: Vec<u8>,
}

impl UdpEndpoint {
    /// Binds a UDP socket to `addr` (port 0 picks a free port).
    pub fn bind(addr: SocketAddr) -> io::Result<UdpEndpoint> {
        let socket = UdpSocket::bind(addr)?;
        let local_addr = socket.local_addr()?;
        Ok(UdpEndpoint {
            socket,
            local_addr,
            limits: Limits::default(),
            read_timeout: None,
            // One more than the largest payload, so an oversized datagram is noticed.
            buf: vec![0; 65_536],
        })
    }

    /// Sets what received messages may make us accept.
    pub fn with_limits(mut self, limits: Limits) -> UdpEndpoint {
        self.limits = limits;
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// How long [`UdpEndpoint::recv_from`] waits for a datagram (`None`: forever).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let timeout = timeout.filter(|t| !t.is_zero());
        self.socket.set_read_timeout(timeout)?;
        self.read_timeout = timeout;
        Ok(())
    }

    /// The socket.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Sends `message` as one datagram to `to`. A message longer than [`MAX_DATAGRAM`]
    /// bytes is an error of kind `InvalidInput`.
    pub fn send_to(&self, message: &Message, to: SocketAddr) -> Result<(), TransportError> {
        let wire = encode(message).map_err(|source| TransportError::Protocol {
            addr: to,
            source: source.into(),
        })?;
        if wire.len() > MAX_DATAGRAM {
            return Err(TransportError::Io {
                addr: to,
                op: Op::Write,
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a {}-byte message does not fit in one datagram (at most {MAX_DATAGRAM})",
                        wire.len()
                    ),
                ),
            });
        }
        let sent = loop {
            match self.socket.send_to(&wire, to) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        }
        .map_err(|e| TransportError::from_io(to, Op::Write, e))?;
        if sent != wire.len() {
            return Err(TransportError::Io {
                addr: to,
                op: Op::Write,
                source: io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("sent {sent} of {} bytes", wire.len()),
                ),
            });
        }
        Ok(())
    }

    /// Waits for one datagram and decodes its message. A datagram that is not exactly one
    /// message is an error naming its sender ([`decode_datagram`]); waiting longer than the
    /// read timeout is [`TransportError::Timeout`] naming this endpoint's own address.
    pub fn recv_from(&mut self) -> Result<(Message, SocketAddr), TransportError> {
        let (n, from) = loop {
            match self.socket.recv_from(&mut self.buf) {
                Ok(pair) => break pair,
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        return Err(TransportError::Timeout {
                            addr: self.local_addr,
                            op: Op::Read,
                            after: self.read_timeout.unwrap_or_default(),
                        })
                    }
                    _ => return Err(TransportError::from_io(self.local_addr, Op::Read, e)),
                },
            }
        };
        let datagram = self.buf.get(..n).unwrap_or_default();
        Ok((decode_datagram(datagram, &self.limits, from)?, from))
    }

    /// Sends `request` to `server` and waits (up to the read timeout in all) for the
    /// answer from that address; datagrams from anyone else are ignored. If the system
    /// reports that nothing listens there (ICMP port unreachable), that is
    /// [`TransportError::Refused`]; otherwise silence is [`TransportError::Timeout`].
    pub fn request(
        &mut self,
        request: &Message,
        server: SocketAddr,
    ) -> Result<Message, TransportError> {
        self.send_to(request, server)?;
        let result = self.await_answer(server);
        // Put back the timeout `await_answer` shortens as its deadline nears.
        let restored = self.socket.set_read_timeout(self.read_timeout);
        let answer = result?;
        restored.map_err(|e| TransportError::from_io(server, Op::Read, e))?;
        Ok(answer)
    }

    fn await_answer(&mut self, server: SocketAddr) -> Result<Message, TransportError> {
        let deadline = self.read_timeout.map(|t| Instant::now() + t);
        let timeout = |after| TransportError::Timeout {
            addr: server,
            op: Op::Read,
            after,
        };
        loop {
            match self.recv_from() {
                Ok((message, from)) if from == server => return Ok(message),
                Err(TransportError::Timeout { after, .. }) => return Err(timeout(after)),
                // The ICMP "port unreachable" of our request, reported on this socket.
                Err(e) if e.io_kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(TransportError::Refused { addr: server })
                }
                Err(e) if e.addr() == server => return Err(e),
                // A datagram from someone else, good or bad: not our answer.
                Ok(_) | Err(_) => {}
            }
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(timeout(self.read_timeout.unwrap_or_default()));
                }
                self.socket
                    .set_read_timeout(Some(left))
                    .map_err(|e| TransportError::from_io(server, Op::Read, e))?;
            }
        }
    }

    /// Receives one request, answers it with `service`, and returns who asked. A bad
    /// datagram or a service error is returned (the caller usually logs it and goes on);
    /// nothing is sent back for it.
    pub fn serve_one(&mut self, service: &dyn Service) -> Result<SocketAddr, TransportError> {
        let (request, from) = self.recv_from()?;
        let response = service
            .call(request)
            .map_err(|source| TransportError::Service { addr: from, source })?;
        self.send_to(&response, from)?;
        Ok(from)
    }
}
