//! [`Codec`]: `tokio_util::codec::{Decoder, Encoder}` for [`Message`], driven by the core's
//! connection machine.

use std::fmt;
use std::io::{self, IoSlice};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use sockmsg_protocol::{Connection, Event, Limits, LocalError, Message, PeerError, Role};

/// Most slices taken from the core's output queue per pass of [`Codec`]'s encoder.
const SLICES: usize = 16;

/// A `tokio_util::codec` for [`Message`]s, so that `Framed::new(stream, Codec::default())`
/// speaks the protocol.
///
/// It is a thin skin over the core's [`Connection`]: the bytes FramedRead buffers go
/// through the connection's one way in ([`Connection::read_buf`] and
/// [`Connection::commit`]) and messages come out of [`Connection::next_event`]; messages to
/// send go through [`Connection::send`] and its one way out. So the verdict on a stream
/// (each message, or the typed [`PeerError`] that ends it) is the core's, whatever the
/// split, the limits are the core's [`Limits`], and:
///
/// * **linear in the bytes**: each received byte is moved out of the `BytesMut` once;
///   nothing is parsed twice, however the stream was split;
/// * **no reservation from the peer's word**: the codec never reserves in the read buffer;
///   memory follows the core's rule (what was received, plus a constant);
/// * **large content in place**: once a content has at least the core's read-buffer size
///   (16 KiB) still to come, its bytes go from the `BytesMut` straight into the message's
///   own buffer, copied once.
///
/// The codec keeps no clock: the core's deadlines are for the transports that own a
/// socket (a [`Codec`] has none set), and the instant it passes the core is fixed.
///
/// A peer error ends the stream: it is returned by this call and every later one. At the
/// end of the stream ([`tokio_util::codec::Decoder::decode_eof`]) a stream cut inside a
/// message is [`PeerError::UnexpectedEof`], naming the phase and how many bytes were
/// missing; a stream that ends between two messages ends cleanly.
pub struct Codec {
    conn: Connection,
    /// The instant handed to the core (the codec has no deadlines, so it never moves).
    epoch: Instant,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("limits", self.conn.limits())
            .field("message_in_progress", &self.conn.message_in_progress())
            .finish_non_exhaustive()
    }
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new(Limits::default())
    }
}

impl Codec {
    /// A codec that accepts (and sends) what `limits` allow.
    pub fn new(limits: Limits) -> Codec {
        Codec {
            conn: Connection::new(Role::Server, limits),
            epoch: Instant::now(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        self.conn.limits()
    }

    /// `true` if part of a message was taken from the read buffer but not all of it.
    pub fn message_in_progress(&self) -> bool {
        self.conn.message_in_progress()
    }

    /// Bytes the codec holds allocated for messages in progress (received and not yet
    /// handed out).
    pub fn allocated(&self) -> usize {
        self.conn.allocated()
    }

    /// Moves bytes from the front of `src` into the core (at most what it lends at once).
    fn feed(&mut self, src: &mut BytesMut) -> Result<(), LocalError> {
        let buf = self.conn.read_buf();
        let n = buf.len().min(src.len());
        if let (Some(dst), Some(from)) = (buf.get_mut(..n), src.get(..n)) {
            dst.copy_from_slice(from);
        }
        self.conn.commit(n, self.epoch)?;
        src.advance(n);
        Ok(())
    }
}

impl tokio_util::codec::Decoder for Codec {
    type Item = Message;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        loop {
            match self.conn.next_event()? {
                Event::Message(m) => return Ok(Some(m)),
                Event::End => return Ok(None),
                Event::NeedData => {}
            }
            if src.is_empty() {
                return Ok(None);
            }
            self.feed(src)?;
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        if let Some(m) = self.decode(src)? {
            return Ok(Some(m));
        }
        // `decode` took every byte of `src`: the stream ends here.
        self.conn.receive_eof();
        match self.conn.next_event()? {
            Event::Message(m) => Ok(Some(m)),
            Event::End | Event::NeedData => Ok(None),
        }
    }
}

impl tokio_util::codec::Encoder<Message> for Codec {
    type Error = CodecError;

    /// Appends the wire form of `item` to `dst`. Content over [`Limits::max_content_len`]
    /// is refused ([`LocalError::ContentOverLimit`]: a peer with these limits would refuse
    /// it), as is a header the format cannot carry; nothing is written then.
    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.conn.send(item, self.epoch)?;
        dst.reserve(self.conn.pending_len());
        loop {
            let n = {
                let mut slices = [IoSlice::new(&[]); SLICES];
                let count = self.conn.pending_slices(&mut slices);
                let mut n = 0;
                for slice in slices.get(..count).unwrap_or_default() {
                    dst.extend_from_slice(slice);
                    n += slice.len();
                }
                n
            };
            if n == 0 {
                return Ok(());
            }
            self.conn.consume(n, self.epoch);
        }
    }
}

/// What a [`Codec`] fails with: the peer broke the protocol, this program misused it, or
/// the I/O under the `Framed` failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CodecError {
    /// The peer broke the protocol; the stream is over.
    Peer(PeerError),
    /// This side misused the protocol (for example, content over the limits to send).
    Local(LocalError),
    /// Reading or writing the underlying stream failed.
    Io(io::Error),
}

impl CodecError {
    /// A short stable name for the error (the core's kind for protocol errors, `"io"`).
    pub fn kind(&self) -> &'static str {
        match self {
            CodecError::Peer(e) => e.kind(),
            CodecError::Local(e) => e.kind(),
            CodecError::Io(_) => "io",
        }
    }

    /// The peer's protocol error, if that is what this is.
    pub fn peer(&self) -> Option<&PeerError> {
        match self {
            CodecError::Peer(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Peer(e) => write!(f, "protocol error from the peer: {e}"),
            CodecError::Local(e) => write!(f, "{e}"),
            CodecError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CodecError::Peer(e) => Some(e),
            CodecError::Local(e) => Some(e),
            CodecError::Io(e) => Some(e),
        }
    }
}

impl From<PeerError> for CodecError {
    fn from(e: PeerError) -> Self {
        CodecError::Peer(e)
    }
}

impl From<LocalError> for CodecError {
    fn from(e: LocalError) -> Self {
        CodecError::Local(e)
    }
}

impl From<io::Error> for CodecError {
    fn from(e: io::Error) -> Self {
        CodecError::Io(e)
    }
}
