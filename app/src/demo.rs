//! The guide's demo application: what `app-server` answers and what `app-client` asks.
//!
//! Exactly PROTOCOL.md's "demo application", with the guide's Python behaviour where the
//! document is silent:
//!
//! * a `text/json` request is decoded; its `action` and `value` are read as Python's
//!   `dict.get()` does, and formatted as Python's f-string does ([`crate::pyfmt`]): a JSON
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
//! * an empty request (`{}`, or empty binary content) is answered like any other (the
//!   guide's server never answers a falsy request and keeps the connection open).

use serde::{Deserialize, Serialize};
use sockmsg_protocol::header::{CLIENT_BINARY_TYPE, SERVER_BINARY_TYPE};
use sockmsg_protocol::{ByteOrder, Message};
use sockmsg_server::{Service, ServiceError};
use tracing::info;

use crate::pyfmt::{bytes_repr, py_repr, py_str_opt, str_repr, PyValue};

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

/// The `"result"` text the demo application gives a decoded JSON request.
///
/// ```
/// use sockmsg_app::demo::json_result;
/// let request = serde_json::from_str(r#"{"action": "search", "value": "ring"}"#)?;
/// assert_eq!(json_result(&request), "In the caves beneath the Misty Mountains. 💍");
/// let request = serde_json::from_str(r#"{"action": "search", "value": "neo"}"#)?;
/// assert_eq!(json_result(&request), r#"No match for "neo"."#);
/// let request = serde_json::from_str(r#"{"action": "find", "value": "neo"}"#)?;
/// assert_eq!(json_result(&request), r#"Error: invalid action "find"."#);
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn json_result(request: &PyValue) -> String {
    let action = request.get("action");
    if action.and_then(PyValue::as_str) == Some("search") {
        let value = request.get("value");
        match value.and_then(PyValue::as_str).and_then(lookup) {
            Some(answer) => answer.to_owned(),
            None => format!("No match for \"{}\".", py_str_opt(value)),
        }
    } else {
        format!("Error: invalid action \"{}\".", py_str_opt(action))
    }
}

/// The guide's request as most clients send it: an object whose only keys are `action` and
/// `value`, each a string without escapes or `null`, each at most once. Anything else fails
/// to deserialize here and takes the general path ([`PyValue`]), which gives the same
/// answer for these and Python's for the rest.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainRequest<'a> {
    #[serde(borrow, default)]
    action: Option<&'a str>,
    #[serde(borrow, default)]
    value: Option<&'a str>,
}

/// [`json_result`] for a [`PlainRequest`], without building a [`PyValue`]; `None` when
/// `request` is not one (the caller then takes the general path).
fn plain_result(request: &Message) -> Option<String> {
    // serde would also take `["search", "ring"]` for the struct: objects only. (Other
    // ASCII whitespace than JSON's, such as a form feed, fails in json_content anyway.)
    if request.content().trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let plain: PlainRequest = request.json_content().ok()?;
    // `None` and a missing key print alike in Python: `None`.
    Some(match (plain.action, plain.value) {
        (Some("search"), value) => match value.and_then(lookup) {
            Some(answer) => answer.to_owned(),
            None => format!("No match for \"{}\".", value.unwrap_or("None")),
        },
        (action, _) => format!("Error: invalid action \"{}\".", action.unwrap_or("None")),
    })
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

#[derive(Serialize)]
struct JsonResponse<'a> {
    result: &'a str,
}

/// The guide's `create_request`: `search` gives a `text/json` request
/// `{"action": "search", "value": VALUE}`, any other action a binary request
/// (`binary/custom-client-binary-type`) whose content is `ACTION + VALUE` in UTF-8.
///
/// ```
/// use sockmsg_app::demo::request;
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

/// The demo application as a [`Service`]: runs unchanged on every transport.
///
/// ```
/// use sockmsg_app::demo::{request, DemoService};
/// use sockmsg_server::Service;
/// let answer = DemoService::new().call(request("search", "🐶"))?;
/// assert_eq!(answer.content(), r#"{"result": "🐾 Playing ball! 🏐"}"#.as_bytes());
/// # Ok::<(), sockmsg_server::ServiceError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoService {
    byteorder: ByteOrder,
}

impl Default for DemoService {
    fn default() -> Self {
        DemoService::new()
    }
}

impl DemoService {
    /// The service, writing this machine's byte order in response headers (as the guide).
    pub fn new() -> DemoService {
        DemoService {
            byteorder: ByteOrder::NATIVE,
        }
    }

    /// The service, writing `byteorder` in response headers.
    pub fn with_byteorder(byteorder: ByteOrder) -> DemoService {
        DemoService { byteorder }
    }

    /// The response to `request`, without logging. Fails only if JSON content cannot be
    /// decoded (an encoding other than UTF-8, invalid JSON: the decoder normally rejects
    /// these before, see [`sockmsg_protocol::Limits::check_json_content`]).
    pub fn respond(&self, request: &Message) -> Result<Message, sockmsg_protocol::Error> {
        let response = if request.is_json() {
            let result = match plain_result(request) {
                Some(result) => result,
                None => json_result(&request.json_content()?),
            };
            Message::json(&JsonResponse { result: &result })?
        } else {
            Message::binary(SERVER_BINARY_TYPE, binary_result(request.content()))
        };
        Ok(response.with_byteorder(self.byteorder))
    }
}

impl Service for DemoService {
    fn call(&self, request: Message) -> Result<Message, ServiceError> {
        if !tracing::enabled!(tracing::Level::INFO) {
            // Nothing to log: `respond`, whose common JSON request takes the short path.
            return Ok(self.respond(&request)?);
        }
        // The request is logged as Python's repr of the dict: the general path.
        let response = if request.is_json() {
            let decoded: PyValue = request.json_content()?;
            info!("received request {}", preview(&py_repr(&decoded)));
            let result = json_result(&decoded);
            info!("sending {{'result': {}}}", preview(&str_repr(&result)));
            Message::json(&JsonResponse { result: &result })?.with_byteorder(self.byteorder)
        } else {
            info!(
                "received {} request ({} bytes)",
                request.content_type(),
                request.content().len()
            );
            let content = binary_result(request.content());
            info!("sending {}", preview(&bytes_repr(&content)));
            Message::binary(SERVER_BINARY_TYPE, content).with_byteorder(self.byteorder)
        };
        Ok(response)
    }
}

/// What `app-client` prints for `response`, as the guide's client does:
/// `got result: RESULT` for JSON (the `"result"` value, formatted as Python's f-string),
/// `got response: b'...'` for anything else (Python's `repr` of the bytes).
///
/// ```
/// use sockmsg_app::demo::{result_line, DemoService, request};
/// let service = DemoService::new();
/// let answer = service.respond(&request("binary", "☺"))?;
/// assert_eq!(result_line(&answer)?, r"got response: b'First 10 bytes of request: binary\xe2\x98\xba'");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn result_line(response: &Message) -> Result<String, ResponseError> {
    if response.is_json() {
        let decoded: PyValue = response
            .json_content()
            .map_err(|e| ResponseError::Protocol(e.into()))?;
        if !matches!(decoded, PyValue::Dict(_)) {
            return Err(ResponseError::NotAnObject(py_repr(&decoded)));
        }
        Ok(format!("got result: {}", py_str_opt(decoded.get("result"))))
    } else {
        Ok(format!("got response: {}", bytes_repr(response.content())))
    }
}

/// Why a response cannot be shown.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseError {
    /// Its JSON content cannot be decoded.
    Protocol(sockmsg_protocol::Error),
    /// Its JSON content is not an object (its Python repr, shortened).
    NotAnObject(String),
}

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseError::Protocol(e) => write!(f, "cannot decode the response: {e}"),
            ResponseError::NotAnObject(v) => {
                write!(f, "the response is not a JSON object: {}", preview(v))
            }
        }
    }
}

impl std::error::Error for ResponseError {}

/// `text` cut to [`LOG_PREVIEW`] characters.
fn preview(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(LOG_PREVIEW) {
        Some((cut, _)) => format!("{}...", &text[..cut]).into(),
        None => text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockmsg_protocol::encode;

    fn answer_of(json: &str) -> String {
        let decoded: PyValue = serde_json::from_str(json).expect("test JSON");
        json_result(&decoded)
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

    /// The short path answers the common request, declines the rest, and never differs
    /// from the general path where it answers.
    #[test]
    fn plain_requests_take_the_short_path_with_the_same_answers() {
        let taken = [
            r#"{"action": "search", "value": "morpheus"}"#,
            r#"{"value": "🐶", "action": "search"}"#,
            r#"{"action": "search", "value": "Morpheus"}"#,
            r#"{"action": "search"}"#,
            r#"{"action": "search", "value": null}"#,
            r#"{"action": null, "value": "ring"}"#,
            r#"{"action": "find", "value": "ring"}"#,
            r#"{"value": "ring"}"#,
            r#"{}"#,
            r#" { "action" : "search" , "value" : "ring" } "#,
        ];
        let declined = [
            r#"{"action": "search", "value": 5}"#,
            r#"{"action": "search", "value": "a\"b"}"#,
            r#"{"action": "se\u0061rch", "value": "ring"}"#,
            r#"{"action": "find", "action": "search", "value": "ring"}"#,
            r#"{"action": "search", "value": "ring", "extra": 1}"#,
            r#"{"action": true}"#,
            r#"["search"]"#,
            r#" ["search", "ring"]"#,
            r#""search""#,
            r#"null"#,
        ];
        for (json, short) in taken
            .iter()
            .map(|j| (j, true))
            .chain(declined.iter().map(|j| (j, false)))
        {
            let m =
                Message::from_parts("text/json".into(), "utf-8".into(), json.as_bytes().to_vec());
            let general = answer_of(json);
            match plain_result(&m) {
                Some(answer) => {
                    assert!(short, "{json} should have been declined");
                    assert_eq!(answer, general, "{json}");
                }
                None => assert!(!short, "{json} should take the short path"),
            }
            let responded = DemoService::new().respond(&m).expect("answerable");
            let want = Message::json(&JsonResponse { result: &general }).expect("json");
            assert_eq!(responded.content(), want.content(), "{json}");
        }
        // Another encoding is never guessed at, on either path.
        let m = Message::from_parts(
            "text/json".into(),
            "latin-1".into(),
            br#"{"action": "search"}"#.to_vec(),
        );
        assert_eq!(plain_result(&m), None);
        assert!(DemoService::new().respond(&m).is_err());
    }

    #[test]
    fn binary_answer_quotes_ten_bytes() {
        assert_eq!(binary_result(b""), BINARY_PREFIX);
        assert_eq!(
            binary_result(b"upload0123456789abc"),
            b"First 10 bytes of request: upload0123"
        );
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
}
