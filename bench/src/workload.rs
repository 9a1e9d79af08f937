//! What `app-bench` sends, and how it recognises a right answer.
//!
//! A [`Workload`] holds the bytes of one request, ready to be written, and the answer it
//! must get back. For the two framed kinds the answer is, by default, the one the demo
//! service itself gives ([`DemoService::respond`], the code `app-server` runs), computed
//! once when the workload is built (a workload has one distinct request), so the expected
//! answers are the server's by construction; with [`Expect::Echo`] the answer must be the
//! request itself (a server whose service echoes messages, such as transport-mio's
//! `mio_echo_server` example). For [`Kind::Echo`] (no framing) the answer is the request's
//! bytes.
//!
//! ```
//! use sockmsg_bench::workload::{Kind, Workload};
//! use sockmsg_protocol::Message;
//!
//! // The default: the guide's 146-byte search for "morpheus".
//! let w = Workload::new(Kind::Json, None, None)?;
//! assert_eq!(w.request_len(), 146);
//! let answer = Message::json(&serde_json::json!({"result": "Follow the white rabbit. 🐰"}))?;
//! assert!(w.check(&answer).is_ok());
//! let wrong = Message::json(&serde_json::json!({"result": "No match"}))?;
//! assert!(w.check(&wrong).is_err());
//!
//! // Any JSON search value: the answer is whatever the demo service says, Python-style.
//! let w = Workload::json_search(&serde_json::json!(true))?;
//! let answer = Message::json(&serde_json::json!({"result": "No match for \"True\"."}))?;
//! assert!(w.check(&answer).is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use serde::Serialize;
use serde_json::Value;
use sockmsg_demo::{DemoError, DemoService};
use sockmsg_protocol::header::CLIENT_BINARY_TYPE;
use sockmsg_protocol::{encode, Error, Message};

/// The search value of the default request (the guide's example).
pub const DEFAULT_VALUE: &str = "morpheus";

/// Size on the wire of the default request: the guide's search for "morpheus", and the
/// default size of the other kinds, so that every kind moves the same bytes per request.
pub const DEFAULT_REQUEST_LEN: usize = 146;

/// The kind of request a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A `text/json` search request, `{"action": "search", "value": V}`.
    Json,
    /// A binary request (`binary/custom-client-binary-type`), answered with its first 10
    /// bytes quoted back.
    Binary,
    /// No framing: a request is N raw bytes, the answer the same N bytes echoed back (for
    /// the echo baseline server).
    Echo,
}

impl Kind {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Json => "json",
            Kind::Binary => "binary",
            Kind::Echo => "echo",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a framed answer must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// The demo service's answer (`app-server`, the guide's `app-server.py`).
    #[default]
    Demo,
    /// The request itself, content type and content (a server whose service returns each
    /// request, such as transport-mio's `mio_echo_server` example).
    Echo,
}

impl Expect {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Demo => "demo",
            Expect::Echo => "echo",
        }
    }
}

/// Why a workload cannot be built.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkloadError {
    /// The requested size is smaller than the smallest request of that kind.
    TooSmall {
        /// The requested size.
        size: usize,
        /// The smallest possible request of that kind.
        min: usize,
    },
    /// A search value was given for a kind that has none, or together with a size.
    ValueNotApplicable,
    /// The protocol refused to encode the request.
    Encode(Error),
    /// The demo service could not answer the request.
    Answer(DemoError),
    /// An expected answer was asked of unframed echo requests, whose answer is always
    /// their own bytes.
    ExpectNotApplicable,
}

impl fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkloadError::TooSmall { size, min } => write!(
                f,
                "a request of this kind is at least {min} bytes on the wire ({size} asked)"
            ),
            WorkloadError::ValueNotApplicable => {
                f.write_str("a search value applies only to JSON requests without --size")
            }
            WorkloadError::Encode(e) => write!(f, "cannot encode the request: {e}"),
            WorkloadError::Answer(e) => write!(f, "the demo service cannot answer it: {e}"),
            WorkloadError::ExpectNotApplicable => {
                f.write_str("unframed echo requests are always answered with themselves")
            }
        }
    }
}

impl std::error::Error for WorkloadError {}

impl From<Error> for WorkloadError {
    fn from(e: Error) -> Self {
        WorkloadError::Encode(e)
    }
}

/// Why an answer was not the expected one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch(pub String);

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Mismatch {}

#[derive(Serialize)]
struct Search<'a, V: Serialize + ?Sized> {
    action: &'a str,
    value: &'a V,
}

/// What a framed answer must be.
#[derive(Debug, Clone)]
struct Expected {
    content_type: String,
    /// The canonical content bytes (what this project's and the guide's servers send).
    content: Vec<u8>,
    /// For JSON: the parsed value, to accept a differently formatted but equal answer.
    value: Option<Value>,
}

/// One request, ready to write, and its expected answer.
#[derive(Debug, Clone)]
pub struct Workload {
    kind: Kind,
    expect: Expect,
    /// The framed request (for [`Workload::with_expect`]); `None` for [`Kind::Echo`].
    message: Option<Message>,
    request: Vec<u8>,
    expected: Option<Expected>,
}

impl Workload {
    /// Builds the request of `kind`.
    ///
    /// * `value`: the search value of a JSON request (default [`DEFAULT_VALUE`]); only for
    ///   [`Kind::Json`] without `size`.
    /// * `size`: the size of one request on the wire, in bytes (default
    ///   [`DEFAULT_REQUEST_LEN`]). A JSON request is padded with a filler search value
    ///   (answered `No match for "…".`), a binary one with filler content; where the
    ///   header's digit count makes the exact size impossible, the largest smaller one is
    ///   used ([`Workload::request_len`] tells).
    pub fn new(
        kind: Kind,
        value: Option<&str>,
        size: Option<usize>,
    ) -> Result<Workload, WorkloadError> {
        if value.is_some() && (kind != Kind::Json || size.is_some()) {
            return Err(WorkloadError::ValueNotApplicable);
        }
        match kind {
            Kind::Json => {
                let value = match (value, size) {
                    (Some(v), _) => v.to_owned(),
                    (None, None) => DEFAULT_VALUE.to_owned(),
                    (None, Some(size)) => {
                        let k = fit(size, |k| Ok(json_request(&filler_str(k))?.len()))?;
                        filler_str(k)
                    }
                };
                Workload::framed(Kind::Json, json_message(value.as_str())?, Expect::Demo)
            }
            Kind::Binary => {
                let size = size.unwrap_or(DEFAULT_REQUEST_LEN);
                let k = fit(size, |k| Ok(encode(&binary_message(k))?.len()))?;
                Workload::framed(Kind::Binary, binary_message(k), Expect::Demo)
            }
            Kind::Echo => {
                let size = size.unwrap_or(DEFAULT_REQUEST_LEN);
                if size == 0 {
                    return Err(WorkloadError::TooSmall { size, min: 1 });
                }
                Ok(Workload {
                    kind,
                    expect: Expect::Echo,
                    message: None,
                    request: filler_bytes(size),
                    expected: None,
                })
            }
        }
    }

    /// A JSON search for any JSON `value` (`null`, `true`, `[1, "a"]`, a number...), whose
    /// answer the demo service formats as Python would.
    pub fn json_search(value: &Value) -> Result<Workload, WorkloadError> {
        Workload::framed(Kind::Json, json_message(value)?, Expect::Demo)
    }

    /// The same request, expecting `expect` as its answer. [`Kind::Echo`] requests accept
    /// only [`Expect::Echo`].
    pub fn with_expect(self, expect: Expect) -> Result<Workload, WorkloadError> {
        match self.message {
            Some(request) => Workload::framed(self.kind, request, expect),
            None if expect == Expect::Echo => Ok(self),
            None => Err(WorkloadError::ExpectNotApplicable),
        }
    }

    fn framed(kind: Kind, request: Message, expect: Expect) -> Result<Workload, WorkloadError> {
        let answer = match expect {
            // The server's own code: the expected answer is the server's by construction.
            Expect::Demo => DemoService::new()
                .respond(&request)
                .map_err(WorkloadError::Answer)?,
            Expect::Echo => request.clone(),
        };
        let value = if answer.is_json() {
            serde_json::from_slice(answer.content()).ok()
        } else {
            None
        };
        Ok(Workload {
            kind,
            expect,
            request: encode(&request).map_err(Error::from)?,
            expected: Some(Expected {
                content_type: answer.content_type().to_owned(),
                content: answer.content().to_vec(),
                value,
            }),
            message: Some(request),
        })
    }

    /// The kind of request.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// What a framed answer must be.
    pub fn expect(&self) -> Expect {
        self.expect
    }

    /// How many leading bytes of each request carry its sequence number: up to 8 for
    /// [`Kind::Echo`], 0 for framed requests (see [`Workload::write_request`]).
    pub fn stamp_len(&self) -> usize {
        if self.kind == Kind::Echo {
            self.request.len().min(8)
        } else {
            0
        }
    }

    /// The size of one request on the wire, in bytes.
    pub fn request_len(&self) -> usize {
        self.request.len()
    }

    /// The bytes of one framed request, or the template of an echo request.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// Appends request number `seq` to `out`. Framed requests are all alike; an echo
    /// request carries `seq` in its first bytes (little-endian, as many as fit in 8), so
    /// that an answer returned out of order or from another request is caught.
    pub fn write_request(&self, seq: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.request);
        if self.kind == Kind::Echo {
            let stamp = seq.to_le_bytes();
            let n = stamp.len().min(self.request.len());
            if let (Some(dst), Some(src)) = (out.get_mut(start..start + n), stamp.get(..n)) {
                dst.copy_from_slice(src);
            }
        }
    }

    /// Checks a framed answer: the expected content type, and the expected content (byte
    /// for byte, or for JSON an equal value). Always a mismatch for [`Kind::Echo`], which
    /// has no framed answers.
    pub fn check(&self, answer: &Message) -> Result<(), Mismatch> {
        let Some(expected) = &self.expected else {
            return Err(Mismatch("a framed message on an echo run".into()));
        };
        if answer.content_type() != expected.content_type {
            return Err(Mismatch(format!(
                "content-type {:?}, expected {:?}",
                answer.content_type(),
                expected.content_type
            )));
        }
        if answer.content() == expected.content.as_slice() {
            return Ok(());
        }
        if let Some(value) = &expected.value {
            if serde_json::from_slice::<Value>(answer.content())
                .ok()
                .as_ref()
                == Some(value)
            {
                return Ok(());
            }
        }
        Err(Mismatch(format!(
            "content {:?}, expected {:?}",
            String::from_utf8_lossy(answer.content()),
            String::from_utf8_lossy(&expected.content)
        )))
    }
}

fn json_message<V: Serialize + ?Sized>(value: &V) -> Result<Message, Error> {
    Ok(Message::json(&Search {
        action: "search",
        value,
    })?)
}

fn json_request(value: &str) -> Result<Vec<u8>, Error> {
    Ok(encode(&json_message(value)?)?)
}

fn binary_message(len: usize) -> Message {
    Message::binary(CLIENT_BINARY_TYPE, filler_bytes(len))
}

/// `len` printable filler bytes: `abc…xyzabc…`.
fn filler_bytes(len: usize) -> Vec<u8> {
    (b'a'..=b'z').cycle().take(len).collect()
}

fn filler_str(len: usize) -> String {
    "x".repeat(len)
}

/// The largest `k` whose request is at most `size` bytes, given `len(k)`, non-decreasing.
fn fit(size: usize, len: impl Fn(usize) -> Result<usize, Error>) -> Result<usize, WorkloadError> {
    let min = len(0)?;
    if size < min {
        return Err(WorkloadError::TooSmall { size, min });
    }
    // len(k) >= k, so the answer is below `size`.
    let (mut lo, mut hi) = (0usize, size);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if len(mid)? <= size {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockmsg_protocol::header::SERVER_BINARY_TYPE;
    use sockmsg_protocol::{decode, Limits};

    fn decode_one(bytes: &[u8]) -> Message {
        match decode(bytes, &Limits::default()) {
            Ok((m, used)) if used == bytes.len() => m,
            other => panic!("not one message: {other:?}"),
        }
    }

    #[test]
    fn default_json_request_is_the_guides_146_bytes() {
        let w = Workload::new(Kind::Json, None, None).unwrap();
        assert_eq!(
            w.request(),
            &include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/vectors/ok-search-request.bin"
            ))[..]
        );
    }

    fn answer(json: &str) -> Message {
        Message::from_parts("text/json".into(), "utf-8".into(), json.as_bytes().to_vec())
    }

    #[test]
    fn expected_answers_are_the_demo_services_python_style() {
        // The values a second implementation of the demo got wrong (JSON spelling instead
        // of Python's).
        for (value, text) in [
            (serde_json::json!(null), r#"No match for \"None\"."#),
            (serde_json::json!(true), r#"No match for \"True\"."#),
            (serde_json::json!([1, "a"]), r#"No match for \"[1, 'a']\"."#),
            (serde_json::json!("🐶"), "🐾 Playing ball! 🏐"),
        ] {
            let w = Workload::json_search(&value).unwrap();
            let right = answer(&format!(r#"{{"result": "{text}"}}"#));
            assert!(w.check(&right).is_ok(), "{value}: {:?}", w.check(&right));
        }
        for (value, json_spelling) in [
            (serde_json::json!(null), r#"No match for \"null\"."#),
            (serde_json::json!(true), r#"No match for \"true\"."#),
            (
                serde_json::json!([1, "a"]),
                r#"No match for \"[1,\"a\"]\"."#,
            ),
        ] {
            let w = Workload::json_search(&value).unwrap();
            let wrong = answer(&format!(r#"{{"result": "{json_spelling}"}}"#));
            assert!(w.check(&wrong).is_err(), "{value}");
        }
        let bin = Workload::new(Kind::Binary, None, Some(146)).unwrap();
        let request = decode_one(bin.request());
        let expected = DemoService::new().respond(&request).unwrap();
        assert!(expected
            .content()
            .starts_with(b"First 10 bytes of request: "));
        assert!(bin.check(&expected).is_ok());
    }

    #[test]
    fn expect_echo_wants_the_request_back() {
        for kind in [Kind::Json, Kind::Binary] {
            let w = Workload::new(kind, None, Some(300))
                .unwrap()
                .with_expect(Expect::Echo)
                .unwrap();
            assert_eq!(w.expect(), Expect::Echo);
            let request = decode_one(w.request());
            assert!(w.check(&request).is_ok(), "{kind}");
            let demo = DemoService::new().respond(&request).unwrap();
            assert!(w.check(&demo).is_err(), "{kind}");
        }
        let raw = Workload::new(Kind::Echo, None, None).unwrap();
        assert!(raw.clone().with_expect(Expect::Echo).is_ok());
        assert_eq!(
            raw.with_expect(Expect::Demo).unwrap_err(),
            WorkloadError::ExpectNotApplicable
        );
    }

    #[test]
    fn sizes_are_met_exactly_or_just_below() {
        for kind in [Kind::Json, Kind::Binary, Kind::Echo] {
            for size in [146, 147, 200, 1000, 1024, 4096, 65_536] {
                let w = Workload::new(kind, None, Some(size)).unwrap();
                assert!(w.request_len() <= size, "{kind} {size}");
                assert!(w.request_len() + 2 >= size, "{kind} {size}");
                if kind != Kind::Echo {
                    // The request is a valid message whose answer the workload accepts.
                    let request = decode_one(w.request());
                    assert!(w
                        .check(&DemoService::new().respond(&request).unwrap())
                        .is_ok());
                }
            }
        }
        assert_eq!(
            Workload::new(Kind::Binary, None, None)
                .unwrap()
                .request_len(),
            DEFAULT_REQUEST_LEN
        );
        assert_eq!(
            Workload::new(Kind::Echo, None, None).unwrap().request_len(),
            DEFAULT_REQUEST_LEN
        );
        assert!(matches!(
            Workload::new(Kind::Json, None, Some(100)),
            Err(WorkloadError::TooSmall { size: 100, .. })
        ));
        assert!(Workload::new(Kind::Echo, None, Some(0)).is_err());
        assert_eq!(
            Workload::new(Kind::Echo, Some("x"), None).unwrap_err(),
            WorkloadError::ValueNotApplicable
        );
    }

    #[test]
    fn check_accepts_equal_json_and_rejects_the_rest() {
        let w = Workload::new(Kind::Json, Some("ring"), None).unwrap();
        let spaced = Message::from_parts(
            "text/json".into(),
            "utf-8".into(),
            "{ \"result\" :\"In the caves beneath the Misty Mountains. \\ud83d\\udc8d\" }"
                .as_bytes()
                .to_vec(),
        );
        assert!(w.check(&spaced).is_ok());
        let binary = Message::binary(SERVER_BINARY_TYPE, b"x".to_vec());
        assert!(w.check(&binary).unwrap_err().0.contains("content-type"));
        let echo = Workload::new(Kind::Echo, None, None).unwrap();
        assert!(echo.check(&binary).is_err());
    }

    #[test]
    fn echo_requests_carry_their_sequence_number() {
        let w = Workload::new(Kind::Echo, None, Some(12)).unwrap();
        let mut out = Vec::new();
        w.write_request(0x0102, &mut out);
        w.write_request(7, &mut out);
        assert_eq!(&out[..12], b"\x02\x01\0\0\0\0\0\0ijkl");
        assert_eq!(&out[12..], b"\x07\0\0\0\0\0\0\0ijkl");
        let tiny = Workload::new(Kind::Echo, None, Some(3)).unwrap();
        let mut out = Vec::new();
        tiny.write_request(0x030201, &mut out);
        assert_eq!(out, b"\x01\x02\x03");
    }
}
