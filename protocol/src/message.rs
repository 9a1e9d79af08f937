//! The message model.

use std::borrow::Cow;
use std::fmt;
use std::mem;
use std::sync::{Mutex, OnceLock, Weak};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::decoder::{give_back, Decoder, Event, Spare};
use crate::error::{LocalError, PeerError, Phase};
use crate::header::{self, ByteOrder, Header, BINARY, TEXT_JSON, UTF_8};
use crate::json::{check_depth, check_utf8, is_utf8_label, is_valid_json, to_vec_py};
use crate::Limits;

/// One message: a JSON header (four required keys plus extra keys in order) and its content.
///
/// The header's `content-length` always equals `content().len()`: constructors set it, and
/// the encoder writes the actual length.
///
/// A large binary content is received in pieces (so that no byte is copied again as it
/// grows, and memory follows the bytes received) and kept that way:
/// [`Message::content_chunks`] reads it as it is, [`Message::content`] joins it into one
/// buffer on first use (one copy), [`Message::into_content`] joins it without keeping the
/// pieces. Sending such a message sends its pieces as they are.
#[derive(Debug, Clone)]
pub struct Message {
    header: Header,
    content: Content,
    /// Set by the decoder when it found the content to be JSON in a supported encoding,
    /// valid UTF-8, nested at most this deep: [`Message::json_content_with`] then goes
    /// straight to serde under any limit at least as loose.
    checked_depth: Option<usize>,
}

/// Messages are equal when their headers and contents are; what the decoder already
/// checked is a cache, not part of the message.
impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        self.header == other.header && self.content.eq_bytes(&other.content)
    }
}

/// A message's content: one buffer, or the pieces a large content was received in.
#[derive(Clone)]
enum Content {
    Whole(Vec<u8>),
    Pieces(Box<Pieces>),
}

/// A content received in pieces, in order, and its contiguous copy once asked for.
#[derive(Clone)]
struct Pieces {
    pieces: Vec<Vec<u8>>,
    len: usize,
    joined: OnceLock<Vec<u8>>,
    /// The connection that received them, if it keeps pieces for its next large content
    /// (`Connection::with_piece_reuse`): they go back to it when the message is dropped.
    home: Weak<Mutex<Spare>>,
}

impl Drop for Pieces {
    fn drop(&mut self) {
        give_back(&self.home, &mut self.pieces);
    }
}

impl Content {
    fn len(&self) -> usize {
        match self {
            Content::Whole(v) => v.len(),
            Content::Pieces(p) => p.len,
        }
    }

    fn contiguous(&self) -> &[u8] {
        match self {
            Content::Whole(v) => v,
            Content::Pieces(p) => p.joined.get_or_init(|| join(&p.pieces, p.len)),
        }
    }

    fn chunks(&self) -> &[Vec<u8>] {
        match self {
            Content::Whole(v) => std::slice::from_ref(v),
            Content::Pieces(p) => match p.joined.get() {
                Some(v) => std::slice::from_ref(v),
                None => &p.pieces,
            },
        }
    }

    fn into_vec(self) -> Vec<u8> {
        match self {
            Content::Whole(v) => v,
            Content::Pieces(mut p) => p.joined.take().unwrap_or_else(|| join(&p.pieces, p.len)),
        }
    }

    fn into_pieces(self) -> Vec<Vec<u8>> {
        match self {
            Content::Whole(v) => vec![v],
            Content::Pieces(mut p) => match p.joined.take() {
                Some(v) => vec![v],
                None => mem::take(&mut p.pieces),
            },
        }
    }

    /// Same bytes, however each side is cut into pieces.
    fn eq_bytes(&self, other: &Content) -> bool {
        if self.len() != other.len() {
            return false;
        }
        let mut a = self.chunks().iter().map(Vec::as_slice);
        let mut b = other.chunks().iter().map(Vec::as_slice);
        let (mut x, mut y): (&[u8], &[u8]) = (&[], &[]);
        loop {
            if x.is_empty() {
                match a.next() {
                    Some(next) => {
                        x = next;
                        continue;
                    }
                    None => return y.is_empty() && b.all(<[u8]>::is_empty),
                }
            }
            if y.is_empty() {
                match b.next() {
                    Some(next) => {
                        y = next;
                        continue;
                    }
                    None => return false,
                }
            }
            let n = x.len().min(y.len());
            let ((x0, x1), (y0, y1)) = (x.split_at(n), y.split_at(n));
            if x0 != y0 {
                return false;
            }
            x = x1;
            y = y1;
        }
    }
}

/// The bytes, as a `Vec<u8>` prints them.
impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.chunks().iter().flatten())
            .finish()
    }
}

fn join(pieces: &[Vec<u8>], len: usize) -> Vec<u8> {
    let mut whole = Vec::with_capacity(len);
    for piece in pieces {
        whole.extend_from_slice(piece);
    }
    whole
}

impl Message {
    /// A `text/json`, `utf-8` message whose content is `value` serialized exactly as the
    /// guide's Python does (`json.dumps(value, ensure_ascii=False).encode("utf-8")`).
    ///
    /// ```
    /// let m = sockmsg_protocol::Message::json(&serde_json::json!({"result": "ok"}))?;
    /// assert_eq!(m.content(), br#"{"result": "ok"}"#);
    /// # Ok::<(), sockmsg_protocol::Error>(())
    /// ```
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Message, LocalError> {
        Ok(Message::from_parts(
            Cow::Borrowed(TEXT_JSON),
            Cow::Borrowed(UTF_8),
            to_vec_py(value)?,
        ))
    }

    /// A binary message: `content-encoding` is `binary`, `content-type` is yours (the guide
    /// uses [`header::CLIENT_BINARY_TYPE`] and [`header::SERVER_BINARY_TYPE`]).
    pub fn binary(
        content_type: impl Into<Cow<'static, str>>,
        content: impl Into<Vec<u8>>,
    ) -> Message {
        Message::from_parts(content_type.into(), Cow::Borrowed(BINARY), content.into())
    }

    /// A message with any `content-type` and `content-encoding`.
    pub fn from_parts(
        content_type: Cow<'static, str>,
        content_encoding: Cow<'static, str>,
        content: Vec<u8>,
    ) -> Message {
        Message {
            header: Header {
                byteorder: ByteOrder::NATIVE,
                content_type,
                content_encoding,
                content_length: content.len() as u64,
                extra: Vec::new(),
            },
            content: Content::Whole(content),
            checked_depth: None,
        }
    }

    /// A message with `header` (its extra keys kept as they are) and `content`; the
    /// header's `content-length` is set to the content's length.
    pub fn new(mut header: Header, content: Vec<u8>) -> Message {
        header.content_length = content.len() as u64;
        Message {
            header,
            content: Content::Whole(content),
            checked_depth: None,
        }
    }

    /// Joins a decoded header and its content. Crate-internal: the decoder guarantees
    /// `header.content_length == content.len()`, and that the JSON checks passed with
    /// `checked_depth` as the nesting limit when that is set.
    pub(crate) fn from_decoded(
        header: Header,
        content: Vec<u8>,
        checked_depth: Option<usize>,
    ) -> Message {
        Message {
            header,
            content: Content::Whole(content),
            checked_depth,
        }
    }

    /// Joins a decoded header and a content received in `pieces` (`len` bytes in all; at
    /// least two pieces, binary or unchecked: the decoder joins what it checks as JSON),
    /// which go back to `home` when the message is dropped.
    pub(crate) fn from_decoded_pieces(
        header: Header,
        pieces: Vec<Vec<u8>>,
        len: usize,
        home: Weak<Mutex<Spare>>,
    ) -> Message {
        Message {
            header,
            content: Content::Pieces(Box::new(Pieces {
                pieces,
                len,
                joined: OnceLock::new(),
                home,
            })),
            checked_depth: None,
        }
    }

    /// The same message with another `byteorder` (by default, this machine's).
    pub fn with_byteorder(mut self, byteorder: ByteOrder) -> Message {
        self.header.byteorder = byteorder;
        self
    }

    /// The same message with an extra header key, its value written as the guide's Python
    /// writes it. Setting a key already present replaces its value in place; the four
    /// required keys cannot be set this way (they are ignored).
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<Value>) -> Message {
        let key = key.into();
        if matches!(
            key.as_str(),
            "byteorder" | "content-type" | "content-encoding" | "content-length"
        ) {
            return self;
        }
        let text = to_vec_py(&value.into())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|s| RawValue::from_string(s).ok());
        let Some(value) = text else {
            return self;
        };
        match self.header.extra.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.header.extra.push((key, value)),
        }
        self
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The `content-type`.
    pub fn content_type(&self) -> &str {
        &self.header.content_type
    }

    /// `true` if the content is JSON text (`content-type: text/json`).
    pub fn is_json(&self) -> bool {
        self.header.is_json()
    }

    /// The content bytes, contiguous. A content received in pieces (a large binary one) is
    /// joined into one buffer on the first call: one copy, kept with the message from then
    /// on. [`Message::content_chunks`] reads it without that copy.
    pub fn content(&self) -> &[u8] {
        self.content.contiguous()
    }

    /// The content's length in bytes (without joining anything).
    pub fn content_len(&self) -> usize {
        self.content.len()
    }

    /// The content as the buffers that hold it, in order: one for a content built here or
    /// received whole, several for a large content received in pieces (until
    /// [`Message::content`] joined it). Nothing is copied.
    ///
    /// ```
    /// let m = sockmsg_protocol::Message::binary("x/y", b"hello".to_vec());
    /// let bytes: Vec<u8> = m.content_chunks().iter().flatten().copied().collect();
    /// assert_eq!(bytes, b"hello");
    /// ```
    pub fn content_chunks(&self) -> &[Vec<u8>] {
        self.content.chunks()
    }

    /// The number of bytes this message takes on the wire (protoheader, JSON header and
    /// content), as [`encode`] would write it.
    ///
    /// ```
    /// use sockmsg_protocol::{encode, Message};
    /// let m = Message::binary("x/y", b"hi".to_vec());
    /// assert_eq!(m.encoded_len()?, encode(&m)?.len());
    /// # Ok::<(), sockmsg_protocol::Error>(())
    /// ```
    pub fn encoded_len(&self) -> Result<usize, LocalError> {
        let mut framing = Vec::with_capacity(128);
        encode_framing(self, &mut framing)?;
        Ok(framing.len() + self.content.len())
    }

    /// Takes the content bytes (a content received in pieces is joined: one copy).
    pub fn into_content(self) -> Vec<u8> {
        self.content.into_vec()
    }

    /// Splits the message into its header and content (joined, as by
    /// [`Message::into_content`]).
    pub fn into_parts(self) -> (Header, Vec<u8>) {
        (self.header, self.content.into_vec())
    }

    /// Takes the content as the buffers that hold it, in order (see
    /// [`Message::content_chunks`]), for the encoder to send without joining.
    pub(crate) fn into_content_pieces(self) -> Vec<Vec<u8>> {
        self.content.into_pieces()
    }

    /// Deserializes JSON content into any `T`, honouring `content-encoding`: UTF-8 (under any
    /// of the labels Python accepts for it) is decoded; any other encoding is
    /// [`PeerError::UnsupportedEncoding`], never a guess. Nesting is limited as by
    /// [`Limits::default`].
    ///
    /// ```
    /// #[derive(serde::Deserialize)]
    /// struct Request<'a> { action: &'a str, value: &'a str }
    /// let m = sockmsg_protocol::Message::json(&serde_json::json!({"action": "search", "value": "ring"}))?;
    /// let r: Request = m.json_content()?;
    /// assert_eq!((r.action, r.value), ("search", "ring"));
    /// # Ok::<(), sockmsg_protocol::Error>(())
    /// ```
    pub fn json_content<'de, T: Deserialize<'de>>(&'de self) -> Result<T, PeerError> {
        self.json_content_with(&Limits::default())
    }

    /// [`Message::json_content`] with the nesting limit of `limits`.
    pub fn json_content_with<'de, T: Deserialize<'de>>(
        &'de self,
        limits: &Limits,
    ) -> Result<T, PeerError> {
        let shape = |e: serde_json::Error| match e.classify() {
            serde_json::error::Category::Data => PeerError::ContentShape {
                reason: e.to_string(),
            },
            _ => PeerError::invalid_json(Phase::Content, &e),
        };
        if self
            .checked_depth
            .is_some_and(|d| d <= limits.max_depth.min(127))
        {
            // The decoder checked encoding, UTF-8 and a nesting limit this strict already.
            // One pass over the whole text (word at a time while ASCII) is cheaper than
            // serde's check of each string it meets in a slice.
            return serde_json::from_str(content_text(self.content())?).map_err(shape);
        }
        let text = validate_json_text(&self.header, self.content(), limits)?;
        serde_json::from_str(text).map_err(shape)
    }

    /// Checks that JSON content is decodable (supported encoding, UTF-8, nesting within
    /// limits, well-formed JSON) without building anything. The decoder runs this on every
    /// `text/json` message when [`Limits::check_json_content`] is set.
    pub fn validate_json(&self, limits: &Limits) -> Result<(), PeerError> {
        check_json_content(&self.header, self.content(), limits)
    }
}

/// Encoding, UTF-8 and depth checks; returns the content as text.
fn validate_json_text<'a>(
    header: &Header,
    content: &'a [u8],
    limits: &Limits,
) -> Result<&'a str, PeerError> {
    check_encoding(header)?;
    check_depth(content, limits.max_depth.min(127), Phase::Content)?;
    content_text(content)
}

fn content_text(content: &[u8]) -> Result<&str, PeerError> {
    std::str::from_utf8(content).map_err(|e| PeerError::InvalidUtf8 {
        phase: Phase::Content,
        offset: e.valid_up_to(),
    })
}

fn check_encoding(header: &Header) -> Result<(), PeerError> {
    if is_utf8_label(&header.content_encoding) {
        Ok(())
    } else {
        Err(PeerError::UnsupportedEncoding {
            encoding: header.content_encoding.to_string(),
        })
    }
}

pub(crate) fn check_json_content(
    header: &Header,
    content: &[u8],
    limits: &Limits,
) -> Result<(), PeerError> {
    check_encoding(header)?;
    check_utf8(content, Phase::Content)?;
    if is_valid_json(content, limits.max_depth) {
        return Ok(());
    }
    // Not proven valid: the full parser gives the verdict and the precise error.
    check_depth(content, limits.max_depth.min(127), Phase::Content)?;
    serde_json::from_str::<serde::de::IgnoredAny>(content_text(content)?)
        .map(|_| ())
        .map_err(|e| PeerError::invalid_json(Phase::Content, &e))
}

/// Appends the complete wire form of `message` (protoheader, JSON header, content) to `out`.
/// On error `out` is left as it was.
pub(crate) fn encode_into(message: &Message, out: &mut Vec<u8>) -> Result<(), LocalError> {
    encode_framing(message, out)?;
    for chunk in message.content_chunks() {
        out.extend_from_slice(chunk);
    }
    Ok(())
}

/// Appends protoheader and JSON header (no content) of `message` to `out`.
pub(crate) fn encode_framing(message: &Message, out: &mut Vec<u8>) -> Result<(), LocalError> {
    let h = &message.header;
    header::encode_header(
        out,
        h.byteorder,
        &h.content_type,
        &h.content_encoding,
        message.content.len(),
        &h.extra,
    )
}

/// The complete wire form of `message` as a new vector: for a datagram, a file, a test. A
/// stream sends through [`crate::Connection::send`].
pub fn encode(message: &Message) -> Result<Vec<u8>, LocalError> {
    let mut out = Vec::with_capacity(message.content.len() + 128);
    encode_into(message, &mut out)?;
    Ok(out)
}

/// Decodes the one message at the start of `input` (a datagram, a buffer held whole) and
/// says how many bytes it took; what follows is the caller's to judge. An `input` that ends
/// inside the message is [`PeerError::UnexpectedEof`], naming the phase cut short.
///
/// ```
/// use sockmsg_protocol::{decode, encode, Limits, Message, PeerError, Phase};
/// let wire = encode(&Message::binary("x/y", b"hi".to_vec()))?;
/// let (m, used) = decode(&wire, &Limits::default())?;
/// assert_eq!((m.content(), used), (&b"hi"[..], wire.len()));
/// assert_eq!(
///     decode(&wire[..1], &Limits::default()),
///     Err(PeerError::UnexpectedEof { phase: Phase::Protoheader, missing: 1 })
/// );
/// # Ok::<(), sockmsg_protocol::Error>(())
/// ```
pub fn decode(input: &[u8], limits: &Limits) -> Result<(Message, usize), PeerError> {
    let mut decoder = Decoder::new(limits.clone());
    let mut rest = input;
    if let Event::Message(m) = decoder.decode(&mut rest)? {
        return Ok((m, input.len() - rest.len()));
    }
    decoder.receive_eof();
    match decoder.next_event()? {
        Event::Message(m) => Ok((m, input.len())),
        // Only an empty input ends cleanly: it holds no message at all.
        Event::End | Event::NeedData => Err(PeerError::UnexpectedEof {
            phase: Phase::Protoheader,
            missing: 2,
        }),
    }
}
