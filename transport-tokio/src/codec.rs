//! [`Codec`]: `tokio_util::codec::{Decoder, Encoder}` for [`Message`], driven by the core's
//! connection machine.

use std::fmt;
use std::io::{self, IoSlice};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use sockmsg_protocol::{Connection, Event, Limits, LocalError, Message, PeerError, Role};

/// Most slices taken from the core's output queue per pass of [`Codec`]'s encoder.
const SLICES: usize = 16;

/// While a content has at least this much still to come, the read buffer handed to
/// [`Codec`] (when it is empty) is replaced by the next piece of that content, sized as the
/// core sizes its pieces ([`sockmsg_protocol::Receiving::next_piece`]: at least 64 KiB, or
/// as large as what was received up to 1 MiB, never more than what is still to come):
/// `FramedRead` reads straight into it, in large reads, and the codec hands it to the core
/// whole once it is full. Each content byte is then written once, by the read, and never
/// copied.
const PIECE_MIN: usize = 64 * 1024;

/// The capacity `FramedRead` starts with, which the read buffer goes back to once the
/// large content is in.
const SMALL_READ: usize = 8 * 1024;

/// A `tokio_util::codec` for [`Message`]s, so that `Framed::new(stream, Codec::default())`
/// speaks the protocol.
///
/// It is a thin skin over the core's [`Connection`]: the bytes FramedRead buffers go
/// through the connection's one way in (its form for bytes in memory,
/// [`Connection::receive`]) and messages come out of [`Connection::next_event`]; messages to
/// send go through [`Connection::send`] and its one way out. So the verdict on a stream
/// (each message, or the typed [`PeerError`] that ends it) is the core's, whatever the
/// split, the limits are the core's [`Limits`], and:
///
/// * **linear in the bytes**: each received byte is moved out of the `BytesMut` once;
///   nothing is parsed twice, however the stream was split;
/// * **no reservation from the peer's word**: memory follows the core's rule (what was
///   received, plus a constant); while a content of at least 64 KiB is arriving, the read
///   buffer is the content's next piece, sized by the core (at most 1 MiB), so that
///   `FramedRead` reads it in large pieces, and it goes back to 8 KiB once that content
///   is in;
/// * **large content in place**: once a content has at least the core's read-buffer size
///   (16 KiB) still to come, its bytes go from the `BytesMut` straight into the message's
///   own buffer, in pieces that are never copied again as it grows (see
///   [`Message::content_chunks`]), copied once.
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
    /// Everything fed was consumed and nothing came out: no event until more is fed.
    drained: bool,
    /// The read buffer is a piece of the content arriving (see [`PIECE_MIN`]): it holds
    /// content bytes only, and is handed to the core whole.
    piece: bool,
    /// The read buffer was replaced (by a piece); it goes back to [`SMALL_READ`] after.
    replaced: bool,
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
            drained: false,
            piece: false,
            replaced: false,
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

    /// Moves bytes from the front of `src` into the core (a large content's bytes straight
    /// into the message's own buffer, without the zero-fill a lent read buffer needs).
    fn feed(&mut self, src: &mut BytesMut) -> Result<(), LocalError> {
        let n = self.conn.receive(&mut &src[..], self.epoch)?;
        src.advance(n);
        Ok(())
    }

    /// `src` is empty: while a large content arrives, replaces it by the content's next
    /// piece for `FramedRead` to read into; once that content is in, by a buffer of
    /// `FramedRead`'s initial capacity.
    fn next_read_buffer(&mut self, src: &mut BytesMut) {
        let receiving = self.conn.receiving();
        let left = receiving.map_or(0, |r| r.announced.saturating_sub(r.received));
        let size = receiving.map_or(0, |r| r.next_piece);
        // `next_piece` is 0 for a header arriving in pieces: those bytes are fed as they are.
        if left >= PIECE_MIN && size > 0 && self.conn.read_alloc_need() == 0 {
            *src = BytesMut::with_capacity(size);
            self.piece = true;
            self.replaced = true;
        } else if self.replaced {
            *src = BytesMut::with_capacity(SMALL_READ);
            self.replaced = false;
        }
    }

    /// Hands the piece `FramedRead` read into to the core, whole (or fed as bytes, should
    /// the core not take it), and puts the next read buffer in its place.
    fn take_piece(&mut self, src: &mut BytesMut) -> Result<(), LocalError> {
        self.piece = false;
        let piece = Vec::from(std::mem::take(src));
        if let Some(back) = self.conn.receive_piece(piece, self.epoch)? {
            let mut rest = &back[..];
            while !rest.is_empty() {
                self.conn.receive(&mut rest, self.epoch)?;
            }
        }
        self.next_read_buffer(src);
        Ok(())
    }
}

impl tokio_util::codec::Decoder for Codec {
    type Item = Message;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        loop {
            if !self.drained {
                match self.conn.next_event()? {
                    Event::Message(m) => return Ok(Some(m)),
                    Event::End => return Ok(None),
                    Event::NeedData => {}
                }
            }
            if self.piece {
                let left = self
                    .conn
                    .receiving()
                    .map_or(0, |r| r.announced.saturating_sub(r.received));
                if src.is_empty() || (src.len() < src.capacity() && src.len() < left) {
                    // The piece is not full yet: FramedRead reads on into it.
                    self.drained = true;
                    return Ok(None);
                }
                self.drained = false;
                self.take_piece(src)?;
                continue;
            }
            if src.is_empty() {
                self.drained = true;
                self.next_read_buffer(src);
                return Ok(None);
            }
            self.drained = false;
            self.feed(src)?;
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        if let Some(m) = self.decode(src)? {
            return Ok(Some(m));
        }
        if self.piece && !src.is_empty() {
            // The stream ended inside a piece: what it holds was received all the same.
            self.take_piece(src)?;
            if let Some(m) = self.decode(src)? {
                return Ok(Some(m));
            }
        }
        // `decode` took every byte of `src`: the stream ends here.
        self.drained = false;
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
