//! The message model.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::decoder::{Decoder, Event};
use crate::error::{LocalError, PeerError, Phase};
use crate::header::{self, ByteOrder, Header, BINARY, TEXT_JSON, UTF_8};
use crate::json::{check_depth, check_utf8, is_utf8_label, is_valid_json, to_vec_py};
use crate::Limits;

/// One message: a JSON header (four required keys plus extra keys in order) and its content.
///
/// The header's `content-length` always equals `content().len()`: constructors set it, and
/// the encoder writes the actual length.
#[derive(Debug, Clone)]
pub struct Message {
    header: Header,
    content: Vec<u8>,
    /// Set by the decoder when it found the content to be JSON in a supported encoding,
    /// valid UTF-8, nested at most this deep: [`Message::json_content_with`] then goes
    /// straight to serde under any limit at least as loose.
    checked_depth: Option<usize>,
}

/// Messages are equal when their headers and contents are; what the decoder already
/// checked is a cache, not part of the message.
impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        self.header == other.header && self.content == other.content
    }
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
            content,
            checked_depth: None,
        }
    }

    /// A message with `header` (its extra keys kept as they are) and `content`; the
    /// header's `content-length` is set to the content's length.
    pub fn new(mut header: Header, content: Vec<u8>) -> Message {
        header.content_length = content.len() as u64;
        Message {
            header,
            content,
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
            content,
            checked_depth,
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

    /// The content bytes.
    pub fn content(&self) -> &[u8] {
        &self.content
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

    /// Takes the content bytes.
    pub fn into_content(self) -> Vec<u8> {
        self.content
    }

    /// Splits the message into its header and content.
    pub fn into_parts(self) -> (Header, Vec<u8>) {
        (self.header, self.content)
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
            return serde_json::from_str(content_text(&self.content)?).map_err(shape);
        }
        let text = validate_json_text(&self.header, &self.content, limits)?;
        serde_json::from_str(text).map_err(shape)
    }

    /// Checks that JSON content is decodable (supported encoding, UTF-8, nesting within
    /// limits, well-formed JSON) without building anything. The decoder runs this on every
    /// `text/json` message when [`Limits::check_json_content`] is set.
    pub fn validate_json(&self, limits: &Limits) -> Result<(), PeerError> {
        check_json_content(&self.header, &self.content, limits)
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
    out.extend_from_slice(&message.content);
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
