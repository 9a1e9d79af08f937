//! # sockmsg-demo
//!
//! The guide's demo application: what `app-server` answers and what `app-client` asks, as
//! a [`Service`] that runs unchanged on every sockmsg transport, plus [`pyfmt`], Python's
//! formatting of JSON values, so answers match the guide's Python server character for
//! character.
//!
//! The project's protocol document's "demo application", with the guide's Python
//! behaviour where the document is silent:
//!
//! * a `text/json` request is decoded; its `action` and `value` are read as Python's
//!   `dict.get()` does, and formatted as Python's f-string does ([`pyfmt`]): a JSON
//!   `{"action": "search", "value": 5}` gets `No match for "5".`, `{"action": null}` gets
//!   `Error: invalid action "None".`;
//! * any other content-type gets the binary answer with the first 10 bytes of the content.
//!
//! Where the guide's server would crash on a request and close the connection without
//! an answer, this one answers instead (documented choices):
//!
//! * JSON content that is not an object (`[1]`, `"x"`) is treated as an object with no
//!   keys: `Error: invalid action "None".` (Python: `AttributeError`, no answer);
//! * a list or object as `value` of a search is formatted and not found (Python:
//!   `TypeError: unhashable type`, no answer);
//! * an integer of more than 4,300 digits is printed in full (Python 3.11 and later:
//!   `ValueError`, no answer);
//! * an empty request (`{}`, or empty binary content) is answered like any other (the
//!   guide's server never answers a falsy request and keeps the connection open).
//!
//! Where the guide's server fails, this one fails too (a service error, which closes the
//! connection): an answer holding a lone surrogate (`"\ud800"` as `value`), which UTF-8
//! cannot encode, and, a limit of this service, an answer larger than the message limit
//! ([`DemoService::with_limits`]).
//!
//! Every operation on the request is linear in its size (up to a sort of each object's
//! keys) and the memory it takes beyond the request and its answer is at most about the
//! request's size: see [`pyfmt`].
//!
//! ```
//! use sockmsg_demo::{request, result_line, DemoService};
//! use sockmsg_protocol::Message;
//! use sockmsg_server::Service;
//!
//! let service = DemoService::new();
//! let answer = service.call(request("search", "morpheus"))?;
//! assert_eq!(result_line(&answer)?, "got result: Follow the white rabbit. 🐰");
//!
//! // Any JSON value, printed as the guide's Python server prints it.
//! let big = Message::from_parts(
//!     "text/json".into(),
//!     "utf-8".into(),
//!     br#"{"action": "search", "value": [123456789012345678901234567890, 1e15, -0.0]}"#.to_vec(),
//! );
//! assert_eq!(
//!     result_line(&service.call(big)?)?,
//!     r#"got result: No match for "[123456789012345678901234567890, 1000000000000000.0, -0.0]"."#
//! );
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod pyfmt;
pub mod shapes;
mod unprintable;

use std::fmt;

use serde::Serialize;
use sockmsg_protocol::header::{CLIENT_BINARY_TYPE, SERVER_BINARY_TYPE};
use sockmsg_protocol::json::{escape_py_str, plain_run_len};
use sockmsg_protocol::sniff::quote;
use sockmsg_protocol::{ByteOrder, Limits, Message};
use sockmsg_server::{Service, ServiceError};
use tracing::debug;

use crate::pyfmt::{bytes_repr, write_str_opt, FormatError, Full, Preview, PyJson, Sink, Value};

/// Characters of a text the peer chose (a content-type) shown in a log line, escaped by
/// [`sockmsg_protocol::sniff::quote`] so that it cannot forge a line or flood the log.
pub const PEER_TEXT_CHARS: usize = 64;

/// The guide's search table (`request_search` in `libserver.py`).
pub const SEARCH_TABLE: [(&str, &str); 3] = [
    ("morpheus", "Follow the white rabbit. \u{1f430}"),
    (
        "ring",
        "In the caves beneath the Misty Mountains. \u{1f48d}",
    ),
    ("\u{1f436}", "\u{1f43e} Playing ball! \u{1f3d0}"),
];

/// The prefix of every binary answer.
pub const BINARY_PREFIX: &[u8] = b"First 10 bytes of request: ";

/// How many request bytes a binary answer quotes back.
pub const BINARY_QUOTE_LEN: usize = 10;

/// Longest request or response text in a log line; longer ones are cut with `...`.
const LOG_PREVIEW: usize = 200;

/// The answer of the search table for `value`, if it has one.
pub fn lookup(value: &str) -> Option<&'static str> {
    SEARCH_TABLE
        .iter()
        .find(|(key, _)| *key == value)
        .map(|(_, answer)| *answer)
}

/// Why the demo application gives no answer (the connection is then closed).
#[derive(Debug, Clone, PartialEq)]
pub enum DemoError {
    /// The request's JSON content cannot be decoded (an encoding other than UTF-8, invalid
    /// JSON: the decoder normally rejects these before, see
    /// [`sockmsg_protocol::Limits::check_json_content`]).
    Protocol(sockmsg_protocol::PeerError),
    /// The request's JSON content cannot be indexed (see [`pyfmt::PyJson::parse`]).
    Json(pyfmt::ParseError),
    /// The answer would be longer than the message limit, in bytes of content: it is not
    /// built past it.
    AnswerTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The answer would hold a lone surrogate (`"value": "\ud800"`), which UTF-8 cannot
    /// encode: the guide's server fails on such a request too.
    LoneSurrogate,
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DemoError::Protocol(e) => write!(f, "cannot decode the request: {e}"),
            DemoError::Json(e) => write!(f, "cannot decode the request: {e}"),
            DemoError::AnswerTooLarge { limit } => {
                write!(f, "answer would exceed {limit} bytes (the message limit)")
            }
            DemoError::LoneSurrogate => write!(f, "cannot answer: {}", FormatError::LoneSurrogate),
        }
    }
}

impl std::error::Error for DemoError {}

impl From<sockmsg_protocol::PeerError> for DemoError {
    fn from(e: sockmsg_protocol::PeerError) -> DemoError {
        DemoError::Protocol(e)
    }
}

impl From<pyfmt::ParseError> for DemoError {
    fn from(e: pyfmt::ParseError) -> DemoError {
        DemoError::Json(e)
    }
}

/// A request's `action` or `value`, as the answer reads it: a value of the indexed
/// document, or a string read straight from a plain request ([`plain_fields`]).
trait Field: Copy {
    /// `true` if this is a string equal to `s`.
    fn str_eq(&self, s: &str) -> bool;
    /// Writes Python's `str()` of it.
    fn write_str(&self, sink: &mut dyn Sink) -> Result<(), FormatError>;
}

impl Field for Value<'_, '_> {
    fn str_eq(&self, s: &str) -> bool {
        Value::str_eq(self, s)
    }

    fn write_str(&self, sink: &mut dyn Sink) -> Result<(), FormatError> {
        Value::write_str(self, sink)
    }
}

/// A JSON string without escapes: its text is its value.
impl Field for &str {
    fn str_eq(&self, s: &str) -> bool {
        *self == s
    }

    fn write_str(&self, sink: &mut dyn Sink) -> Result<(), FormatError> {
        Ok(sink.put(self)?)
    }
}

/// Writes the `"result"` text the demo application gives the decoded request `doc`.
fn write_result(doc: &PyJson<'_>, sink: &mut dyn Sink) -> Result<(), FormatError> {
    let [action, value] = doc.root().get_all(["action", "value"]);
    write_answer(action, value, sink)
}

/// Writes the `"result"` text for a request's `action` and `value` (`None`: missing, as
/// Python's `dict.get()` gives it).
fn write_answer<F: Field>(
    action: Option<F>,
    value: Option<F>,
    sink: &mut dyn Sink,
) -> Result<(), FormatError> {
    if action.is_some_and(|a| a.str_eq("search")) {
        match value.and_then(|v| search(&v)) {
            Some(answer) => sink.put(answer)?,
            None => {
                sink.put("No match for \"")?;
                write_field(value, sink)?;
                sink.put("\".")?;
            }
        }
    } else {
        sink.put("Error: invalid action \"")?;
        write_field(action, sink)?;
        sink.put("\".")?;
    }
    Ok(())
}

/// `str()` of an optional field: `None` when missing.
fn write_field<F: Field>(field: Option<F>, sink: &mut dyn Sink) -> Result<(), FormatError> {
    match field {
        Some(f) => f.write_str(sink),
        None => Ok(sink.put("None")?),
    }
}

/// The `action` and `value` of a request whose content is a JSON object whose members are
/// all strings without escapes or control characters, keys included (what the guide's
/// client sends: `{"action": "search", "value": "morpheus"}`), read straight from the
/// text, in one pass and without allocating; `None` for any other content, which the
/// general path ([`PyJson`]) answers.
///
/// Such a text is valid JSON (this pass checks its whole grammar: the object, its
/// strings, the whitespace around them, nothing after it; the UTF-8 is the caller's),
/// nested one deep, and holds nothing for [`PyJson`] to decode or reorder, so the answer
/// is the one the general path gives: of repeated keys the last counts, as in Python's
/// `dict`.
fn plain_fields(text: &str) -> Option<[Option<&str>; 2]> {
    let b = text.as_bytes();
    let ws = |mut i: usize| {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
            i += 1;
        }
        i
    };
    // A string without escapes whose opening quote is at `i`: its text (cut at quotes,
    // ASCII, so on character boundaries), and the index after its closing quote.
    let string = |i: usize| -> Option<(&str, usize)> {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let end = i + 1 + plain_run_len(b.get(i + 1..)?)?;
        (b.get(end) == Some(&b'"')).then(|| (text.get(i + 1..end).unwrap_or_default(), end + 1))
    };
    let mut fields = [None, None];
    let mut i = ws(0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(i + 1);
    if b.get(i) != Some(&b'}') {
        loop {
            let (key, next) = string(i)?;
            i = ws(next);
            if b.get(i) != Some(&b':') {
                return None;
            }
            let (value, next) = string(ws(i + 1))?;
            match key {
                "action" => fields[0] = Some(value),
                "value" => fields[1] = Some(value),
                _ => {}
            }
            i = ws(next);
            match b.get(i) {
                Some(b',') => i = ws(i + 1),
                Some(b'}') => break,
                _ => return None,
            }
        }
    }
    (ws(i + 1) == b.len()).then_some(fields)
}

/// The JSON content of `message`, checked and indexed: UTF-8 under one of the labels
/// Python reads as UTF-8 (`utf-8`, `utf8`, `utf_8`, `u8`, `utf`, any case, as the protocol
/// decoder accepts them), valid JSON nested within `limits`. On invalid JSON the protocol's
/// own check gives its precise error.
fn json_doc<'m>(message: &'m Message, limits: &Limits) -> Result<PyJson<'m>, DemoError> {
    let label = message.header().content_encoding.trim();
    if !["utf-8", "utf8", "utf_8", "u8", "utf"]
        .iter()
        .any(|known| label.eq_ignore_ascii_case(known))
    {
        message.validate_json(limits)?;
    }
    let text = std::str::from_utf8(message.content()).map_err(|e| {
        sockmsg_protocol::PeerError::InvalidUtf8 {
            phase: sockmsg_protocol::Phase::Content,
            offset: e.valid_up_to(),
        }
    })?;
    PyJson::parse(text, limits.max_depth).map_err(|e| match message.validate_json(limits) {
        Err(precise) => DemoError::Protocol(precise),
        Ok(()) => DemoError::Json(e),
    })
}

/// The search table's answer for a string `value`.
fn search<F: Field>(value: &F) -> Option<&'static str> {
    SEARCH_TABLE
        .iter()
        .find(|(key, _)| value.str_eq(key))
        .map(|(_, answer)| *answer)
}

/// The `"result"` text the demo application gives a JSON request (its content, as text).
///
/// ```
/// use sockmsg_demo::json_result;
/// assert_eq!(
///     json_result(r#"{"action": "search", "value": "ring"}"#)?,
///     "In the caves beneath the Misty Mountains. 💍"
/// );
/// assert_eq!(json_result(r#"{"action": "search", "value": "neo"}"#)?, r#"No match for "neo"."#);
/// assert_eq!(json_result(r#"{"action": "find", "value": "neo"}"#)?, r#"Error: invalid action "find"."#);
/// assert_eq!(
///     json_result(r#"{"action": "search", "value": 123456789012345678901234567890}"#)?,
///     r#"No match for "123456789012345678901234567890"."#
/// );
/// # Ok::<(), sockmsg_demo::DemoError>(())
/// ```
pub fn json_result(content: &str) -> Result<String, DemoError> {
    let doc = PyJson::parse(content, Limits::default().max_depth)?;
    let mut out = String::new();
    write_result(&doc, &mut out).map_err(|e| match e {
        FormatError::LoneSurrogate => DemoError::LoneSurrogate,
        // A String is never full.
        FormatError::Full => DemoError::AnswerTooLarge { limit: u64::MAX },
    })?;
    Ok(out)
}

/// The content of the binary answer to a request with `content`:
/// `First 10 bytes of request: ` followed by (at most) its first 10 bytes.
pub fn binary_result(content: &[u8]) -> Vec<u8> {
    let quoted = content.get(..BINARY_QUOTE_LEN).unwrap_or(content);
    let mut out = Vec::with_capacity(BINARY_PREFIX.len() + quoted.len());
    out.extend_from_slice(BINARY_PREFIX);
    out.extend_from_slice(quoted);
    out
}

#[derive(Serialize)]
struct JsonRequest<'a> {
    action: &'a str,
    value: &'a str,
}

/// The guide's `create_request`: `search` gives a `text/json` request
/// `{"action": "search", "value": VALUE}`, any other action a binary request
/// (`binary/custom-client-binary-type`) whose content is `ACTION + VALUE` in UTF-8.
///
/// ```
/// use sockmsg_demo::request;
/// let m = request("search", "morpheus");
/// assert_eq!(m.content(), br#"{"action": "search", "value": "morpheus"}"#);
/// let m = request("binary", "☺");
/// assert_eq!(m.content_type(), "binary/custom-client-binary-type");
/// assert_eq!(m.content(), "binary☺".as_bytes());
/// ```
pub fn request(action: &str, value: &str) -> Message {
    if action == "search" {
        json_request(action, value)
    } else {
        binary_request(action, value)
    }
}

/// A `text/json` request `{"action": ACTION, "value": VALUE}` whatever the action (not in
/// the guide's client; it provokes the server's `Error: invalid action` answer).
pub fn json_request(action: &str, value: &str) -> Message {
    // Serializing two strings cannot fail; the fallback keeps this function total.
    Message::json(&JsonRequest { action, value }).unwrap_or_else(|_| binary_request(action, value))
}

/// A binary request (`binary/custom-client-binary-type`) with content `ACTION + VALUE`.
pub fn binary_request(action: &str, value: &str) -> Message {
    let mut content = Vec::with_capacity(action.len() + value.len());
    content.extend_from_slice(action.as_bytes());
    content.extend_from_slice(value.as_bytes());
    Message::binary(CLIENT_BINARY_TYPE, content)
}

/// The JSON answer `{"result": "..."}` as Python's `json.dumps(ensure_ascii=False)` writes
/// it, built straight from the formatter's output and never past `limit` bytes.
struct AnswerSink {
    out: Vec<u8>,
    limit: usize,
}

/// `{"result": "` and `"}`.
const ANSWER_OPEN: &[u8] = b"{\"result\": \"";
const ANSWER_CLOSE: &[u8] = b"\"}";

impl AnswerSink {
    fn new(limit: u64) -> AnswerSink {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity(256.min(limit));
        out.extend_from_slice(ANSWER_OPEN);
        AnswerSink { out, limit }
    }

    /// Appends `bytes` if the answer, closed, still fits; grows by half, never past the
    /// limit.
    fn push(&mut self, bytes: &[u8]) -> Result<(), Full> {
        self.push_leaving(bytes, ANSWER_CLOSE.len())
    }

    /// Appends `bytes` if `room` bytes still fit after them.
    fn push_leaving(&mut self, bytes: &[u8], room: usize) -> Result<(), Full> {
        let need = self.out.len() + bytes.len();
        if need + room > self.limit {
            return Err(Full);
        }
        if need > self.out.capacity() {
            // By half the capacity (not double): the answer's slack stays within half its size.
            let cap = self.out.capacity();
            let want = need.max(cap.saturating_add(cap / 2)).min(self.limit);
            self.out.reserve_exact(want - self.out.len());
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<u8>, Full> {
        self.push_leaving(ANSWER_CLOSE, 0)?;
        Ok(self.out)
    }
}

impl Sink for AnswerSink {
    /// JSON string escapes as Python writes them: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`,
    /// `\u00XX` for other control characters; everything else raw.
    fn put(&mut self, s: &str) -> Result<(), Full> {
        escape_py_str(s, |piece| self.push(piece))
    }
}

/// `repr()` of the result text, for the log: always quoted with `'`, since every result
/// holds a `"` or no quote at all (Python's rule picks `"` only for text holding `'` and no
/// `"`).
struct ReprSink<'s>(&'s mut dyn Sink);

impl Sink for ReprSink<'_> {
    fn put(&mut self, s: &str) -> Result<(), Full> {
        let mut start = 0;
        for (i, c) in s.char_indices() {
            if c.is_ascii() && c != '\'' && c != '\\' && !c.is_ascii_control() {
                continue;
            }
            self.0.put(s.get(start..i).unwrap_or_default())?;
            pyfmt::write_repr_char(u32::from(c), '\'', self.0)?;
            start = i + c.len_utf8();
        }
        self.0.put(s.get(start..).unwrap_or_default())
    }
}

/// The demo application as a [`Service`]: runs unchanged on every transport.
///
/// ```
/// use sockmsg_demo::{request, DemoService};
/// use sockmsg_server::Service;
/// let answer = DemoService::new().call(request("search", "🐶"))?;
/// assert_eq!(answer.content(), r#"{"result": "🐾 Playing ball! 🏐"}"#.as_bytes());
/// # Ok::<(), sockmsg_server::ServiceError>(())
/// ```
///
/// Each request's line (`received request {...}`, `sending {...}`, as the guide's server
/// prints them) is logged at the `debug` level, target `sockmsg_demo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoService {
    byteorder: ByteOrder,
    max_answer: u64,
    max_depth: usize,
}

impl Default for DemoService {
    fn default() -> Self {
        DemoService::new()
    }
}

impl DemoService {
    /// The service, writing this machine's byte order in response headers (as the guide),
    /// within the default [`Limits`].
    pub fn new() -> DemoService {
        let limits = Limits::default();
        DemoService {
            byteorder: ByteOrder::NATIVE,
            max_answer: limits.max_content_len,
            max_depth: limits.max_depth,
        }
    }

    /// The service, writing `byteorder` in response headers.
    pub fn with_byteorder(byteorder: ByteOrder) -> DemoService {
        DemoService {
            byteorder,
            ..DemoService::new()
        }
    }

    /// The same service within `limits` (those of the server it runs in): an answer
    /// longer than `max_content_len` is not built ([`DemoError::AnswerTooLarge`]), JSON
    /// requests nest at most `max_depth` deep.
    ///
    /// ```
    /// use sockmsg_demo::{json_request, DemoError, DemoService};
    /// use sockmsg_protocol::Limits;
    /// let small = DemoService::new().with_limits(&Limits { max_content_len: 50, ..Limits::default() });
    /// assert!(small.respond(&json_request("search", "morpheus")).is_ok());
    /// assert_eq!(
    ///     small.respond(&json_request("search", "a longer value than that")).err(),
    ///     Some(DemoError::AnswerTooLarge { limit: 50 })
    /// );
    /// ```
    pub fn with_limits(self, limits: &Limits) -> DemoService {
        DemoService {
            max_answer: limits.max_content_len,
            max_depth: limits.max_depth,
            ..self
        }
    }

    /// The response to `request`, without logging.
    pub fn respond(&self, request: &Message) -> Result<Message, DemoError> {
        self.answer(request, false)
    }

    fn answer(&self, request: &Message, log: bool) -> Result<Message, DemoError> {
        if !request.is_json() {
            // Only the first bytes are quoted: a large content received in pieces is not
            // joined (copied whole) for them.
            let head = match request.content_chunks() {
                [first, ..] if first.len() >= BINARY_QUOTE_LEN => first.as_slice(),
                _ => request.content(),
            };
            let content = binary_result(head);
            if log {
                debug!(
                    "received {} request ({} bytes)",
                    quote(request.content_type().as_bytes(), PEER_TEXT_CHARS),
                    request.content_len()
                );
                debug!("sending {}", bytes_repr(&content));
            }
            return Ok(Message::binary(SERVER_BINARY_TYPE, content).with_byteorder(self.byteorder));
        }
        if !log {
            if let Some(fields) = self.plain_request(request) {
                let [action, value] = fields;
                return self.json_answer(|sink| write_answer(action, value, sink));
            }
        }
        let limits = Limits {
            max_depth: self.max_depth,
            ..Limits::default()
        };
        let doc = json_doc(request, &limits)?;
        if log {
            let mut preview = Preview::new(LOG_PREVIEW);
            let _ = doc.root().write_repr(&mut preview);
            debug!("received request {}", preview.finish());
        }
        let answer = self.json_answer(|sink| write_result(&doc, sink))?;
        if log {
            let mut preview = Preview::new(LOG_PREVIEW);
            let _ = preview
                .put("{'result': '")
                .and_then(|()| write_result(&doc, &mut ReprSink(&mut preview)).map_err(|_| Full))
                .and_then(|()| preview.put("'}"));
            debug!("sending {}", preview.finish());
        }
        Ok(answer)
    }

    /// The `action` and `value` of a JSON request in the shape the guide's client sends
    /// ([`plain_fields`]), if it is one: in UTF-8 under the label the guide writes, and
    /// within this service's limits (nested one deep).
    fn plain_request<'m>(&self, request: &'m Message) -> Option<[Option<&'m str>; 2]> {
        let content = request.content();
        if self.max_depth < 1
            || u32::try_from(content.len()).is_err()
            || request.header().content_encoding != sockmsg_protocol::header::UTF_8
        {
            return None;
        }
        plain_fields(std::str::from_utf8(content).ok()?)
    }

    /// The JSON answer whose `"result"` text `write` writes, within the message limit.
    fn json_answer(
        &self,
        write: impl FnOnce(&mut dyn Sink) -> Result<(), FormatError>,
    ) -> Result<Message, DemoError> {
        let mut sink = AnswerSink::new(self.max_answer);
        let too_large = DemoError::AnswerTooLarge {
            limit: self.max_answer,
        };
        match write(&mut sink) {
            Ok(()) => {}
            Err(FormatError::Full) => return Err(too_large),
            Err(FormatError::LoneSurrogate) => return Err(DemoError::LoneSurrogate),
        }
        let content = sink.finish().map_err(|Full| too_large)?;
        Ok(Message::from_parts(
            sockmsg_protocol::header::TEXT_JSON.into(),
            sockmsg_protocol::header::UTF_8.into(),
            content,
        )
        .with_byteorder(self.byteorder))
    }
}

impl Service for DemoService {
    fn call(&self, request: Message) -> Result<Message, ServiceError> {
        let log = tracing::enabled!(tracing::Level::DEBUG);
        Ok(self.answer(&request, log)?)
    }
}

/// What `app-client` prints for `response`, as the guide's client does:
/// `got result: RESULT` for JSON (the `"result"` value, formatted as Python's f-string),
/// `got response: b'...'` for anything else (Python's `repr` of the bytes).
///
/// ```
/// use sockmsg_demo::{result_line, DemoService, request};
/// let service = DemoService::new();
/// let answer = service.respond(&request("binary", "☺"))?;
/// assert_eq!(result_line(&answer)?, r"got response: b'First 10 bytes of request: binary\xe2\x98\xba'");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn result_line(response: &Message) -> Result<String, ResponseError> {
    if !response.is_json() {
        return Ok(format!("got response: {}", bytes_repr(response.content())));
    }
    let doc = json_doc(response, &Limits::default()).map_err(|e| match e {
        DemoError::Json(e) => ResponseError::Json(e),
        DemoError::Protocol(e) => ResponseError::Protocol(e.into()),
        other => ResponseError::NotAnObject(other.to_string()),
    })?;
    let root = doc.root();
    if !root.is_object() {
        let mut preview = Preview::new(LOG_PREVIEW);
        let _ = root.write_repr(&mut preview);
        return Err(ResponseError::NotAnObject(preview.finish()));
    }
    let mut line = String::from("got result: ");
    write_str_opt(root.get("result"), &mut line).map_err(|_| ResponseError::LoneSurrogate)?;
    Ok(line)
}

/// Why a response cannot be shown.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseError {
    /// Its JSON content cannot be decoded.
    Protocol(sockmsg_protocol::Error),
    /// Its JSON content cannot be indexed.
    Json(pyfmt::ParseError),
    /// Its JSON content is not an object (its Python repr, shortened).
    NotAnObject(String),
    /// Its result holds a lone surrogate, which cannot be printed as UTF-8 (Python's client
    /// fails on it too).
    LoneSurrogate,
}

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseError::Protocol(e) => write!(f, "cannot decode the response: {e}"),
            ResponseError::Json(e) => write!(f, "cannot decode the response: {e}"),
            ResponseError::NotAnObject(v) => {
                write!(f, "the response is not a JSON object: {v}")
            }
            ResponseError::LoneSurrogate => {
                write!(
                    f,
                    "cannot print the response: {}",
                    FormatError::LoneSurrogate
                )
            }
        }
    }
}

impl std::error::Error for ResponseError {}

#[cfg(test)]
mod tests {
    use super::*;
    use sockmsg_protocol::encode;

    fn answer_of(json: &str) -> String {
        json_result(json).expect("answerable")
    }

    #[test]
    fn search_table_and_misses() {
        assert_eq!(
            answer_of(r#"{"action": "search", "value": "morpheus"}"#),
            "Follow the white rabbit. 🐰"
        );
        assert_eq!(
            answer_of(r#"{"value": "🐶", "action": "search"}"#),
            "🐾 Playing ball! 🏐"
        );
        assert_eq!(
            answer_of(r#"{"action": "search", "value": "Morpheus"}"#),
            r#"No match for "Morpheus"."#
        );
        assert_eq!(
            answer_of(r#"{"action": "search"}"#),
            r#"No match for "None"."#
        );
    }

    #[test]
    fn non_string_values_format_as_python() {
        assert_eq!(
            answer_of(r#"{"action": "search", "value": 5}"#),
            r#"No match for "5"."#
        );
        assert_eq!(
            answer_of(r#"{"action": "search", "value": [1.0, {"a": false}]}"#),
            r#"No match for "[1.0, {'a': False}]"."#
        );
        assert_eq!(
            answer_of(r#"{"action": true}"#),
            r#"Error: invalid action "True"."#
        );
        assert_eq!(answer_of("{}"), r#"Error: invalid action "None"."#);
        assert_eq!(
            answer_of(r#"["search"]"#),
            r#"Error: invalid action "None"."#
        );
        assert_eq!(
            answer_of(r#"{"action": "SEARCH", "value": "ring"}"#),
            r#"Error: invalid action "SEARCH"."#
        );
    }

    fn json_message(json: &str) -> Message {
        Message::from_parts("text/json".into(), "utf-8".into(), json.as_bytes().to_vec())
    }

    /// The answer is the result as Python's `json.dumps` writes `{"result": result}`,
    /// escapes included; another encoding is never guessed at.
    #[test]
    fn answers_are_python_json() {
        for json in [
            r#"{"action": "search", "value": "morpheus"}"#,
            r#" { "action" : "search" , "value" : "ring" } "#,
            r#"{"action": "search", "value": "a\"b\\c\n\u0001\u007f"}"#,
            r#"{"action": "se\u0061rch", "value": ["x\"y", "it's", 1e15]}"#,
            r#"{"action": "find", "action": "search", "value": "ring"}"#,
            r#"{"action": "search", "value": "ring", "value": 12345678901234567890123}"#,
            r#"["search", "ring"]"#,
            r#"null"#,
        ] {
            let general = answer_of(json);
            let responded = DemoService::new()
                .respond(&json_message(json))
                .expect("answerable");
            let want = Message::json(&serde_json::json!({ "result": general })).expect("json");
            assert_eq!(responded.content(), want.content(), "{json}");
            assert!(responded.is_json());
        }
        assert_eq!(
            answer_of(r#"{"action": "search", "value": "ring", "value": 12345678901234567890123}"#),
            r#"No match for "12345678901234567890123"."#
        );
        let m = Message::from_parts(
            "text/json".into(),
            "latin-1".into(),
            br#"{"action": "search"}"#.to_vec(),
        );
        assert!(matches!(
            DemoService::new().respond(&m),
            Err(DemoError::Protocol(
                sockmsg_protocol::PeerError::UnsupportedEncoding { .. }
            ))
        ));
        assert!(matches!(
            DemoService::new().respond(&json_message("{\"action\": ")),
            Err(DemoError::Protocol(_))
        ));
    }

    /// An answer longer than the message limit is refused as soon as the limit is passed:
    /// 1e15 prints as 18 characters.
    #[test]
    fn answers_stop_at_the_message_limit() {
        let limits = Limits {
            max_content_len: 1000,
            ..Limits::default()
        };
        let service = DemoService::new().with_limits(&limits);
        let values = vec!["1e15"; 300].join(",");
        let request = json_message(&format!(r#"{{"action": "search", "value": [{values}]}}"#));
        assert!(request.content().len() < 2000);
        assert_eq!(
            service.respond(&request),
            Err(DemoError::AnswerTooLarge { limit: 1000 })
        );
        assert_eq!(
            service.respond(&request).map_err(|e| e.to_string()),
            Err("answer would exceed 1000 bytes (the message limit)".to_owned())
        );
        // Exactly at the limit is fine; one byte over is not.
        let fits = DemoService::new()
            .respond(&json_request("search", "x"))
            .expect("answer");
        let n = fits.content().len() as u64;
        let exact = Limits {
            max_content_len: n,
            ..Limits::default()
        };
        assert!(service
            .with_limits(&exact)
            .respond(&json_request("search", "x"))
            .is_ok());
        let under = Limits {
            max_content_len: n - 1,
            ..Limits::default()
        };
        assert_eq!(
            service
                .with_limits(&under)
                .respond(&json_request("search", "x")),
            Err(DemoError::AnswerTooLarge { limit: n - 1 })
        );
    }

    #[test]
    fn lone_surrogates_cannot_be_answered_but_can_be_shown() {
        assert_eq!(
            DemoService::new().respond(&json_message(r#"{"action": "search", "value": "\ud800"}"#)),
            Err(DemoError::LoneSurrogate)
        );
        assert_eq!(
            answer_of(r#"{"action": "search", "value": ["\ud800"]}"#),
            r#"No match for "['\ud800']"."#
        );
    }

    #[test]
    fn binary_answer_quotes_ten_bytes() {
        assert_eq!(binary_result(b""), BINARY_PREFIX);
        assert_eq!(
            binary_result(b"upload0123456789abc"),
            b"First 10 bytes of request: upload0123"
        );
    }

    #[test]
    fn a_large_binary_request_in_pieces_is_answered_without_joining_it() {
        use sockmsg_protocol::{Connection, Event};
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let wire = encode(&Message::binary("x/y", content.clone())).expect("encodable");
        let mut conn = Connection::server();
        let mut input = &wire[..];
        let now = std::time::Instant::now();
        let request = loop {
            match conn.next_event() {
                Ok(Event::Message(m)) => break m,
                _ => conn.receive(&mut input, now).expect("before the end"),
            };
        };
        assert!(request.content_chunks().len() > 1, "received in pieces");
        let answer = DemoService::new().respond(&request).expect("an answer");
        assert_eq!(answer.content(), binary_result(&content));
        assert!(request.content_chunks().len() > 1, "still in pieces");
    }

    /// PROTOCOL.md's worked examples, byte for byte.
    #[test]
    fn protocol_md_examples() -> Result<(), sockmsg_server::ServiceError> {
        let service = DemoService::with_byteorder(ByteOrder::Little);
        let req = request("search", "morpheus").with_byteorder(ByteOrder::Little);
        assert_eq!(
            encode(&req)?,
            &include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/vectors/ok-search-request.bin"
            ))[..]
        );
        assert_eq!(
            encode(&service.call(req)?)?,
            &include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/vectors/ok-search-response.bin"
            ))[..]
        );
        let dog = request("search", "🐶").with_byteorder(ByteOrder::Big);
        assert_eq!(
            encode(&dog)?,
            &include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/vectors/ok-dog-request.bin"
            ))[..]
        );
        let bin = request("binary", "☺").with_byteorder(ByteOrder::Little);
        assert_eq!(
            encode(&bin)?,
            &include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/vectors/ok-binary-request.bin"
            ))[..]
        );
        assert_eq!(
            encode(&service.respond(&bin)?)?,
            &include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/vectors/ok-binary-response.bin"
            ))[..]
        );
        Ok(())
    }

    #[test]
    fn result_lines() -> Result<(), Box<dyn std::error::Error>> {
        let service = DemoService::new();
        assert_eq!(
            result_line(&service.respond(&json_request("find", "x"))?)?,
            r#"got result: Error: invalid action "find"."#
        );
        let no_result = Message::json(&serde_json::json!({"answer": 1}))?;
        assert_eq!(result_line(&no_result)?, "got result: None");
        let list = Message::json(&serde_json::json!([1]))?;
        assert_eq!(
            result_line(&list),
            Err(ResponseError::NotAnObject("[1]".into()))
        );
        let big = Message::from_parts(
            "text/json".into(),
            "utf-8".into(),
            br#"{"result": 123456789012345678901234567890, "result": [-0.0, 1.0]}"#.to_vec(),
        );
        assert_eq!(result_line(&big)?, "got result: [-0.0, 1.0]");
        Ok(())
    }

    #[test]
    fn json_with_another_encoding_is_an_error_not_a_guess() {
        let m = Message::from_parts(
            "text/json".into(),
            "utf-16".into(),
            br#"{"action": "search"}"#.to_vec(),
        );
        assert!(matches!(
            DemoService::new().call(m),
            Err(e) if e.to_string().contains("utf-16")
        ));
    }

    /// The answer a request's content gets from the service is the general path's
    /// (`json_result`, through `PyJson`), as Python's `json.dumps` writes it.
    fn same_as_general(json: &str) {
        let general = json_result(json).expect("answerable");
        let want = Message::json(&serde_json::json!({ "result": general })).expect("json");
        let got = DemoService::new()
            .respond(&json_message(json))
            .expect("answerable");
        assert_eq!(got.content(), want.content(), "{json}");
        assert_eq!(got.header(), want.header(), "{json}");
    }

    /// Requests in the shape the guide's client sends are read straight from the text
    /// (`plain_fields`); their answers are the general path's, byte for byte. Anything
    /// else (escapes, other values, other shapes) goes the general way, and what is not
    /// JSON is refused as before.
    #[test]
    fn plain_requests_answer_as_the_general_path() {
        for json in [
            r#"{"action": "search", "value": "morpheus"}"#,
            r#"{"value":"ring","action":"search"}"#,
            " \t\r\n{ \"action\" :\n\"search\" , \"value\" : \"🐶\" }\n ",
            r#"{"action": "search", "value": "nope", "value": "ring"}"#,
            r#"{"action": "search", "action": "find", "value": "ring"}"#,
            r#"{"value": "x"}"#,
            "{}",
            " { } ",
            r#"{"action": "", "value": ""}"#,
            r#"{"other": "search", "action": "search"}"#,
            r#"{"action": "search", "value": "it's / ' é 💍"}"#,
        ] {
            assert!(plain_fields(json).is_some(), "{json}");
            same_as_general(json);
        }
        for json in [
            r#"{"action": "search", "value": "mor\u0070heus"}"#,
            r#"{"acti\u006fn": "search", "value": "ring"}"#,
            r#"{"action": "search", "value": "a\"b"}"#,
            r#"{"action": "search", "value": 5}"#,
            r#"{"action": "search", "value": null}"#,
            r#"{"action": "search", "value": ["ring"]}"#,
            r#"{"action": {"a": "b"}}"#,
            r#"["search"]"#,
            r#""search""#,
        ] {
            assert!(plain_fields(json).is_none(), "{json}");
            same_as_general(json);
        }
        for bad in [
            r#"{"action": "search""#,
            r#"{"action": "search",}"#,
            r#"{"action" "search"}"#,
            r#"{"action": "search"} x"#,
            r#"{"action": "search"}}"#,
            "{\"action\": \"a\tb\"}",
            "{\"action\": \"a\u{0}b\"}",
            r#"{,}"#,
            r#"{"a": "b" "c": "d"}"#,
            r#"{"a": "b",, "c": "d"}"#,
            r#"{"a": "b"#,
            "{",
            "",
        ] {
            assert!(plain_fields(bad).is_none(), "{bad}");
            assert!(json_result(bad).is_err(), "{bad}");
            assert!(
                DemoService::new().respond(&json_message(bad)).is_err(),
                "{bad}"
            );
        }
        // Not UTF-8: refused, however plain the shape.
        let latin1 = Message::from_parts(
            "text/json".into(),
            "utf-8".into(),
            b"{\"action\": \"search\", \"value\": \"caf\xe9\"}".to_vec(),
        );
        assert!(matches!(
            DemoService::new().respond(&latin1),
            Err(DemoError::Protocol(_))
        ));
        // The service's limits hold on this path too.
        let flat = Limits {
            max_depth: 0,
            ..Limits::default()
        };
        assert!(matches!(
            DemoService::new()
                .with_limits(&flat)
                .respond(&json_message(r#"{"action": "search", "value": "ring"}"#)),
            Err(DemoError::Protocol(
                sockmsg_protocol::PeerError::NestingTooDeep { .. }
            ))
        ));
        let small = Limits {
            max_content_len: 30,
            ..Limits::default()
        };
        assert_eq!(
            DemoService::new()
                .with_limits(&small)
                .respond(&json_message(
                    r#"{"action": "search", "value": "morpheus"}"#
                )),
            Err(DemoError::AnswerTooLarge { limit: 30 })
        );
    }
}
