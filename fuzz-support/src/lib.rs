//! The bodies of the fuzz targets in `fuzz/`, and the spec model they check against.
//!
//! A crate of its own (never published), outside the protocol crate, so that the published
//! crate carries none of it; not in `fuzz/` either, so that a plain `cargo test` on stable replays every
//! committed corpus file and every past crash input through exactly the code the fuzzer ran
//! (`tests/tests/fuzz_replay.rs`). Each function takes the fuzzer's raw bytes, never panics
//! on any input unless a property of the protocol core is broken, and panics (with a message
//! saying which property) when one is.
//!
//! | target | input | property |
//! |---|---|---|
//! | [`json_header`] | the bytes of a JSON header | [`parse_header`] agrees with an independent model of the spec built on `serde_json::Value`; an accepted header re-encodes canonically and parses back equal |
//! | [`decode_stream`] | 2+ control bytes, then a byte stream | the verdict (messages, then end or typed error) does not depend on how the stream is split or which way it enters (the one-shot `decode` over the stream held whole, or a `Connection`'s `read_from` or `read_buf`/`commit`); memory stays proportional to the bytes fed |
//! | [`roundtrip`] | an [`Arbitrary`] message | encode, then decode (split anywhere), gives the message back, or the one typed error the message deserves |
//! | [`connection`] | a sequence of operations | a client and a server wired to each other deliver every message, in order, with exact counters, clean and unclean ends, and no error between honest peers |

use arbitrary::{Arbitrary, Unstructured};
use serde_json::{Map, Number, Value};

use std::io::IoSlice;
use std::time::Instant;

use sockmsg_protocol::header::{CLIENT_BINARY_TYPE, TEXT_JSON};
use sockmsg_protocol::{
    decode, encode, parse_header, ByteOrder, Connection, Error, Event, Header, JsonKind, Limits,
    LocalError, Message, PeerError, Phase, Role, MAX_HEADER_LEN,
};

// ---------------------------------------------------------------------------------------
// json_header
// ---------------------------------------------------------------------------------------

/// Limits the header targets run every input under: the defaults, and tight ones that make
/// the content-length and depth limits reachable (including the degenerate depth 0, which
/// refuses every header).
fn header_limit_sets() -> [Limits; 3] {
    [
        Limits::default(),
        Limits {
            max_header_len: 1024,
            max_content_len: 1000,
            max_depth: 2,
            check_json_content: true,
        },
        Limits {
            max_header_len: 64,
            max_content_len: 0,
            max_depth: 0,
            check_json_content: false,
        },
    ]
}

/// Fuzz target `json_header`: `data` is the JSON header (the bytes between the protoheader
/// and the content).
pub fn json_header(data: &[u8]) {
    for limits in header_limit_sets() {
        let got = parse_header(data, &limits);
        let want = model::header(data, &limits);
        model::compare(data, &got, &want);
        match &got {
            Ok(header) => {
                assert!(header.content_length <= limits.max_content_len);
                check_reencode(header, &limits);
            }
            Err(e) => {
                assert_eq!(e.phase(), Phase::Header, "{e:?}");
            }
        }
    }
}

/// An accepted header, written canonically, parses back to the same header, and writing that
/// again gives the same bytes. (Written with no content, so `content-length` becomes 0.)
fn check_reencode(header: &Header, limits: &Limits) {
    let mut expected = header.clone();
    expected.content_length = 0;
    // The canonical form adds spaces: a header near 65,535 bytes may not fit again.
    let Some(wire) = encode_fitting(&Message::new(header.clone(), Vec::new())) else {
        return;
    };
    let announced = usize::from(u16::from_be_bytes([wire[0], wire[1]]));
    assert_eq!(
        announced,
        wire.len() - 2,
        "protoheader of a canonical header"
    );
    let again = parse_header(&wire[2..], limits)
        .unwrap_or_else(|e| panic!("canonical form of an accepted header refused: {e:?}"));
    assert_eq!(again, expected, "canonical form parses back different");
    let wire2 = encode(&Message::new(again, Vec::new()))
        .unwrap_or_else(|e| panic!("second re-encode failed: {e:?}"));
    assert_eq!(wire, wire2, "canonical encoding is not a fixed point");
}

/// An independent model of the header rules of PROTOCOL.md, written from the spec on top of
/// `serde_json::Value` (no fast path, no visitor), to check [`parse_header`] against.
mod model {
    use super::*;

    /// What the model expects: an error, or the four keys and the extra keys (unordered:
    /// `Value`'s map does not keep order; the position rule is tested by unit tests).
    pub(super) type Verdict =
        Result<(ByteOrder, String, String, u64, Map<String, Value>), PeerError>;

    fn depth_exceeds(bytes: &[u8], max: usize) -> bool {
        // Brackets outside strings; a backslash in a string skips the next byte.
        let (mut depth, mut in_str, mut esc) = (0usize, false, false);
        for &b in bytes {
            match (in_str, esc, b) {
                (true, true, _) => esc = false,
                (true, false, b'\\') => esc = true,
                (true, false, b'"') => in_str = false,
                (true, false, _) => {}
                (false, _, b'"') => in_str = true,
                (false, _, b'[' | b'{') => {
                    depth += 1;
                    if depth > max {
                        return true;
                    }
                }
                (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
                (false, _, _) => {}
            }
        }
        false
    }

    fn wrong(key: &'static str, expected: &'static str, v: &Value) -> PeerError {
        PeerError::WrongType {
            key,
            expected,
            found: JsonKind::of(v),
        }
    }

    pub(super) fn header(data: &[u8], limits: &Limits) -> Verdict {
        let text = std::str::from_utf8(data).map_err(|e| PeerError::InvalidUtf8 {
            phase: Phase::Header,
            offset: e.valid_up_to(),
        })?;
        let max_depth = limits.max_depth.min(127);
        if depth_exceeds(data, max_depth) {
            return Err(PeerError::NestingTooDeep {
                phase: Phase::Header,
                max: max_depth,
            });
        }
        let value: Value = serde_json::from_str(text).map_err(|e| PeerError::InvalidJson {
            phase: Phase::Header,
            line: e.line(),
            column: e.column(),
            reason: e.to_string(),
        })?;
        let Value::Object(mut map) = value else {
            return Err(PeerError::HeaderNotObject {
                found: JsonKind::of(&value),
            });
        };
        // Presence first, in the guide's order, then the values.
        for key in [
            "byteorder",
            "content-length",
            "content-type",
            "content-encoding",
        ] {
            if !map.contains_key(key) {
                return Err(PeerError::MissingKey { key });
            }
        }
        let bo = map.remove("byteorder").unwrap_or_default();
        let cl = map.remove("content-length").unwrap_or_default();
        let ct = map.remove("content-type").unwrap_or_default();
        let ce = map.remove("content-encoding").unwrap_or_default();
        let byteorder = match &bo {
            Value::String(s) if s == "little" => ByteOrder::Little,
            Value::String(s) if s == "big" => ByteOrder::Big,
            Value::String(s) => return Err(PeerError::InvalidByteorder { value: s.clone() }),
            v => return Err(wrong("byteorder", "a string", v)),
        };
        const NN: &str = "a non-negative integer";
        let length = match &cl {
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    u
                } else if let Some(i) = n.as_i64() {
                    return Err(PeerError::NegativeContentLength { size: i });
                } else {
                    // An integer literal beyond 64 bits (or a float of that size) is a
                    // length out of range; any other non-integer is a wrong type.
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    if f.fract() == 0.0 && f >= 9.2e18 {
                        return Err(PeerError::ContentTooLong {
                            size: u64::MAX,
                            max: limits.max_content_len,
                        });
                    }
                    if f.fract() == 0.0 && f <= -9.2e18 {
                        return Err(PeerError::NegativeContentLength { size: i64::MIN });
                    }
                    return Err(wrong("content-length", NN, &cl));
                }
            }
            v => return Err(wrong("content-length", NN, v)),
        };
        let Value::String(ct) = ct else {
            return Err(wrong("content-type", "a string", &ct));
        };
        let Value::String(ce) = ce else {
            return Err(wrong("content-encoding", "a string", &ce));
        };
        if length > limits.max_content_len {
            return Err(PeerError::ContentTooLong {
                size: length,
                max: limits.max_content_len,
            });
        }
        Ok((byteorder, ct, ce, length, map))
    }

    pub(super) fn compare(data: &[u8], got: &Result<Header, PeerError>, want: &Verdict) {
        match (got, want) {
            (Ok(h), Ok((bo, ct, ce, cl, extra))) => {
                assert_eq!(h.byteorder, *bo, "byteorder");
                assert_eq!(&*h.content_type, ct, "content-type");
                assert_eq!(&*h.content_encoding, ce, "content-encoding");
                assert_eq!(h.content_length, *cl, "content-length");
                assert_eq!(h.extra.len(), extra.len(), "extra keys: {:?}", h.extra);
                for (k, v) in &h.extra {
                    let v: Value = serde_json::from_str(v.get())
                        .unwrap_or_else(|e| panic!("extra key {k:?} kept as invalid JSON: {e}"));
                    assert_eq!(extra.get(k), Some(&v), "extra key {k:?}");
                }
            }
            // Extra values are kept as JSON text, checked as serde's `IgnoredAny` checks
            // them: a lone surrogate in one is accepted, as Python's `json.loads` does, where
            // the model's `Value` refuses it.
            (Ok(_), Err(PeerError::InvalidJson { reason, .. })) if reason.contains("surrogate") || reason.contains("unicode code point") => {}
            (Err(PeerError::InvalidJson { phase: p1, .. }), Err(PeerError::InvalidJson { phase: p2, .. })) => {
                assert_eq!(p1, p2);
            }
            // A top-level non-object is refused for what it is before its insides are
            // judged: serde's `IgnoredAny` accepts lone surrogates in strings (as Python
            // does), `Value` does not.
            (Err(PeerError::HeaderNotObject { .. }), Err(PeerError::InvalidJson { .. }))
                if data.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') => {}
            (Err(g), Err(w)) => assert_eq!(g, w, "different errors for {:?}", show(data)),
            (g, w) => panic!(
                "parse_header and the model disagree on {:?}:\n  parse_header: {g:?}\n  model: {w:?}",
                show(data)
            ),
        }
    }
}

fn show(data: &[u8]) -> String {
    let s = String::from_utf8_lossy(data);
    if s.chars().count() > 300 {
        let head: String = s.chars().take(300).collect();
        format!("{head}… ({} bytes)", data.len())
    } else {
        s.into_owned()
    }
}

// ---------------------------------------------------------------------------------------
// decode_stream
// ---------------------------------------------------------------------------------------

/// How bytes enter the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    /// The one-shot [`decode`], message after message, over the stream held whole (the
    /// chunk sizes do not apply).
    Decode,
    /// [`Connection::read_from`] a reader holding the chunk, then
    /// [`Connection::next_event`].
    ReadFrom,
    /// [`Connection::read_buf`] and [`Connection::commit`] (as much as the slice takes per
    /// round).
    ReadBuf,
}

/// What a decoder made of a whole stream: the messages, then how it ended (`Ok(End)` or
/// `Ok(NeedData)` when no end of stream was given, or the typed error).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Every message decoded, in order.
    pub messages: Vec<Message>,
    /// [`Event::End`], [`Event::NeedData`] or the error the stream ended with.
    pub end: Result<Event, Error>,
}

/// The next chunk size (cycled; a size of 0 counts as 1), at most what is left.
fn chunk_size(chunks: &[usize], i: usize, left: usize) -> usize {
    chunks
        .get(i % chunks.len().max(1))
        .copied()
        .unwrap_or(usize::MAX)
        .max(1)
        .min(left)
}

/// Decodes `stream` fed in `chunks` (sizes, cycled; a size of 0 counts as 1), then the end
/// of stream if `eof`: through the one-shot [`decode`] when `doors` is only [`Door::Decode`], else
/// through a [`Connection`] whose way in alternates between the doors given, chunk by
/// chunk. Checks memory against the bytes fed as it goes. Shared by the `decode_stream`
/// target and the conformance tests.
fn run_decoder(
    stream: &[u8],
    limits: &Limits,
    chunks: &[usize],
    doors: &[Door],
    read_buf_size: usize,
    eof: bool,
) -> Outcome {
    if doors.iter().all(|d| *d == Door::Decode) {
        run_one_shot(stream, limits, eof)
    } else {
        run_connection(stream, limits, chunks, doors, read_buf_size, eof)
    }
}

/// A peer error must be sticky: asked again, the machine says the same.
fn failed(messages: Vec<Message>, e: PeerError, again: Result<Event, PeerError>) -> Outcome {
    assert_eq!(again, Err(e.clone()), "the machine did not stay failed");
    Outcome {
        messages,
        end: Err(e.into()),
    }
}

/// The reference: the one-shot [`decode`] of each message in turn. Without an end of
/// stream, a last message cut short is [`Event::NeedData`] rather than
/// [`PeerError::UnexpectedEof`].
fn run_one_shot(stream: &[u8], limits: &Limits, eof: bool) -> Outcome {
    let mut messages = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        match decode(rest, limits) {
            Ok((m, used)) => {
                assert!(used > 0 && used <= rest.len(), "decode used {used} bytes");
                messages.push(m);
                rest = &rest[used..];
            }
            Err(PeerError::UnexpectedEof { .. }) if !eof => {
                return Outcome {
                    messages,
                    end: Ok(Event::NeedData),
                }
            }
            Err(e) => {
                // The same bytes, the same verdict.
                assert_eq!(
                    decode(rest, limits),
                    Err(e.clone()),
                    "decode is not repeatable"
                );
                return Outcome {
                    messages,
                    end: Err(e.into()),
                };
            }
        }
    }
    let end = if eof { Event::End } else { Event::NeedData };
    Outcome {
        messages,
        end: Ok(end),
    }
}

fn run_connection(
    stream: &[u8],
    limits: &Limits,
    chunks: &[usize],
    doors: &[Door],
    read_buf_size: usize,
    eof: bool,
) -> Outcome {
    let now = Instant::now();
    let mut conn = Connection::new(Role::Server, limits.clone()).with_read_buf_size(read_buf_size);
    let mut messages = Vec::new();
    let mut rest = stream;
    let mut fed = 0usize;
    let mut i = 0usize;
    while !rest.is_empty() {
        let size = chunk_size(chunks, i, rest.len());
        let door = doors
            .get(i % doors.len().max(1))
            .copied()
            .unwrap_or(Door::ReadBuf);
        i += 1;
        let (chunk, after) = rest.split_at(size);
        rest = after;
        fed += size;
        let mut input = chunk;
        while !input.is_empty() {
            let n = match door {
                Door::ReadFrom => conn
                    .read_from(&mut input, now)
                    .unwrap_or_else(|e| panic!("read_from a slice: {e}")),
                Door::Decode | Door::ReadBuf => {
                    let buf = conn.read_buf();
                    assert!(!buf.is_empty(), "read_buf lent an empty slice");
                    let n = buf.len().min(input.len());
                    buf[..n].copy_from_slice(&input[..n]);
                    conn.commit(n, now)
                        .unwrap_or_else(|e| panic!("commit within the lent slice: {e}"));
                    input = &input[n..];
                    n
                }
            };
            assert!(n > 0, "no progress on a non-empty chunk");
            if let Err(e) = drain(&mut conn, &mut messages) {
                let again = conn.next_event();
                return failed(messages, e, again);
            }
        }
        // Memory follows the bytes that arrived, never an announced length.
        let bound = 4 * fed + 256 * 1024 + 2 * read_buf_size.max(64);
        assert!(
            conn.allocated() <= bound,
            "connection holds {} bytes after {fed} bytes fed",
            conn.allocated()
        );
    }
    assert_eq!(
        conn.position(),
        fed as u64,
        "position after all bytes consumed"
    );
    if !eof {
        return Outcome {
            messages,
            end: Ok(Event::NeedData),
        };
    }
    conn.receive_eof();
    assert!(!conn.wants_read(), "wants to read after the end of stream");
    if let Err(e) = drain(&mut conn, &mut messages) {
        let again = conn.next_event();
        return failed(messages, e, again);
    }
    let end = conn.next_event();
    assert_eq!(end, Ok(Event::End), "after NeedData at end of stream");
    assert_eq!(conn.next_event(), Ok(Event::End));
    Outcome {
        messages,
        end: Ok(Event::End),
    }
}

/// Takes events until `NeedData` (or `End`, which it leaves for the caller to see again).
fn drain(conn: &mut Connection, messages: &mut Vec<Message>) -> Result<(), PeerError> {
    loop {
        match conn.next_event()? {
            Event::Message(m) => messages.push(m),
            Event::NeedData | Event::End => return Ok(()),
        }
    }
}

/// The conformance-test entry point: decodes `stream` whole, one byte at a time, and split
/// in two at every position up to `max_splits` (through the three doors in turn), asserts
/// every way gives the same outcome, and returns it.
pub fn decode_all_ways(stream: &[u8], limits: &Limits, max_splits: usize) -> Outcome {
    let all = [Door::Decode, Door::ReadFrom, Door::ReadBuf];
    let whole = run_decoder(stream, limits, &[], &[Door::Decode], 16 * 1024, true);
    for door in all {
        let again = run_decoder(stream, limits, &[], &[door], 16 * 1024, true);
        assert_eq!(again, whole, "whole stream through {door:?}");
        let bytewise = run_decoder(stream, limits, &[1], &[door], 64, true);
        assert_eq!(bytewise, whole, "one byte at a time through {door:?}");
    }
    for split in 1..stream.len().min(max_splits.saturating_add(1)) {
        let door = all[split % 3];
        let second = stream.len() - split;
        let got = run_decoder(stream, limits, &[split, second], &[door], 64, true);
        assert_eq!(got, whole, "split at {split} through {door:?}");
    }
    whole
}

/// Fuzz target `decode_stream`. Layout of `data`: a mode byte, a count `n` (mod 32), `n`
/// chunk sizes (one byte each), then the stream. Mode bits: 0–1 door (decode, read_from,
/// read_buf, read_from and read_buf in turn), 2 tight limits, 3 no end of stream, 4 small read buffer.
/// A seed is therefore `[0, 0]` followed by a stream.
pub fn decode_stream(data: &[u8]) {
    let [mode, n, rest @ ..] = data else {
        return;
    };
    let n = usize::from(*n % 32).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    let chunks: Vec<usize> = sizes.iter().map(|&b| usize::from(b)).collect();
    let doors: &[Door] = match mode & 3 {
        0 => &[Door::Decode],
        1 => &[Door::ReadFrom],
        2 => &[Door::ReadBuf],
        _ => &[Door::ReadFrom, Door::ReadBuf],
    };
    let limits = if mode & 4 != 0 {
        Limits {
            max_header_len: 512,
            max_content_len: 1024,
            max_depth: 3,
            check_json_content: true,
        }
    } else {
        Limits::default()
    };
    let eof = mode & 8 == 0;
    let read_buf = if mode & 16 != 0 { 64 } else { 16 * 1024 };

    let reference = run_decoder(stream, &limits, &[], &[Door::Decode], 16 * 1024, eof);
    let chunked = run_decoder(stream, &limits, &chunks, doors, read_buf, eof);
    assert_eq!(chunked, reference, "the verdict depends on the split");

    // Without an end of stream, the same stream followed by an end agrees with the
    // reference except for how it ends.
    for m in &reference.messages {
        check_message_reencodes(m, &limits);
    }
}

/// The bytes of `m`, or `None` when its canonical header does not fit in the 65,535 bytes
/// a protoheader can announce (the one refusal a well-formed message can meet on the way
/// out); any other refusal is a bug.
fn encode_fitting(m: &Message) -> Option<Vec<u8>> {
    match encode(m) {
        Ok(wire) => Some(wire),
        Err(LocalError::EncodeHeaderTooLong { size }) => {
            assert!(size > MAX_HEADER_LEN, "EncodeHeaderTooLong of {size} bytes");
            None
        }
        Err(e) => panic!("encoding {m:?} failed: {e:?}"),
    }
}

/// A decoded message encodes to a stream that decodes to the same message.
fn check_message_reencodes(m: &Message, limits: &Limits) {
    let Some(wire) = encode_fitting(m) else {
        return;
    };
    let out = run_decoder(&wire, limits, &[], &[Door::Decode], 16 * 1024, true);
    assert_eq!(out.end, Ok(Event::End), "re-encoded message refused");
    assert_eq!(out.messages.as_slice(), std::slice::from_ref(m));
}

// ---------------------------------------------------------------------------------------
// roundtrip
// ---------------------------------------------------------------------------------------

/// A JSON value of bounded depth, for the fuzzer to build.
#[derive(Debug, Clone)]
pub struct ArbValue(pub Value);

fn arb_value(u: &mut Unstructured<'_>, depth: usize) -> arbitrary::Result<Value> {
    let pick = if depth == 0 {
        u.int_in_range(0..=4)?
    } else {
        u.int_in_range(0..=6)?
    };
    Ok(match pick {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => {
            if u.arbitrary()? {
                Value::from(u.arbitrary::<i64>()?)
            } else {
                Value::from(u.arbitrary::<u64>()?)
            }
        }
        3 => {
            let f: f64 = u.arbitrary()?;
            Number::from_f64(f).map_or(Value::Null, Value::Number)
        }
        4 => Value::String(u.arbitrary()?),
        5 => {
            let mut items = Vec::new();
            u.arbitrary_loop(Some(0), Some(4), |u| {
                items.push(arb_value(u, depth - 1)?);
                Ok(std::ops::ControlFlow::Continue(()))
            })?;
            Value::Array(items)
        }
        _ => {
            let mut map = Map::new();
            u.arbitrary_loop(Some(0), Some(4), |u| {
                map.insert(u.arbitrary()?, arb_value(u, depth - 1)?);
                Ok(std::ops::ControlFlow::Continue(()))
            })?;
            Value::Object(map)
        }
    })
}

impl<'a> Arbitrary<'a> for ArbValue {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        // Mostly shallow; now and then a chain deep enough to cross the depth limit.
        if u.ratio(1, 16)? {
            let depth = u.int_in_range(25..=40)?;
            let mut v = arb_value(u, 0)?;
            for _ in 0..depth {
                v = Value::Array(vec![v]);
            }
            Ok(ArbValue(v))
        } else {
            Ok(ArbValue(arb_value(u, 4)?))
        }
    }
}

/// The content of a fuzzed message.
#[derive(Debug, Clone, Arbitrary)]
pub enum ArbBody {
    /// `Message::json(value)`.
    Json(ArbValue),
    /// `Message::binary(content_type, content)`.
    Binary(String, Vec<u8>),
    /// `Message::from_parts(type, encoding, content)`: any type and encoding, `text/json`
    /// with any bytes included.
    Parts(ArbContentType, String, Vec<u8>),
}

/// A content type: mostly the interesting ones.
#[derive(Debug, Clone, Arbitrary)]
pub enum ArbContentType {
    /// `text/json`.
    TextJson,
    /// `binary/custom-client-binary-type`.
    ClientBinary,
    /// Anything.
    Other(String),
}

/// A message for the fuzzer to build: body, byte order and extra header keys.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbMessage {
    /// The content.
    pub body: ArbBody,
    /// `byteorder`.
    pub big_endian: bool,
    /// Extra header keys (required names are ignored by `with_extra`).
    pub extra: Vec<(String, ArbValue)>,
}

impl ArbMessage {
    /// The message.
    pub fn build(&self) -> Message {
        let m = match &self.body {
            ArbBody::Json(v) => Message::json(&v.0).unwrap_or_else(|e| panic!("json: {e:?}")),
            ArbBody::Binary(t, c) => Message::binary(t.clone(), c.clone()),
            ArbBody::Parts(t, e, c) => {
                let t = match t {
                    ArbContentType::TextJson => TEXT_JSON.to_owned(),
                    ArbContentType::ClientBinary => CLIENT_BINARY_TYPE.to_owned(),
                    ArbContentType::Other(s) => s.clone(),
                };
                Message::from_parts(t.into(), e.clone().into(), c.clone())
            }
        };
        let m = m.with_byteorder(if self.big_endian {
            ByteOrder::Big
        } else {
            ByteOrder::Little
        });
        self.extra
            .iter()
            .fold(m, |m, (k, v)| m.with_extra(k.clone(), v.0.clone()))
    }
}

/// Nesting depth of a JSON value: 0 for a scalar, 1 + the deepest member for a container.
fn depth_of(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth_of).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

/// The error a decoder with `limits` must report for `m`'s encoding, if any: the header's
/// depth is judged first (the header object is level 1), then, for `text/json`, the content.
fn expected_refusal(m: &Message, limits: &Limits) -> Option<PeerError> {
    let header_depth = 1 + m
        .header()
        .extra
        .iter()
        .map(|(_, v)| serde_json::from_str(v.get()).map_or(0, |v: Value| depth_of(&v)))
        .max()
        .unwrap_or(0);
    let max = limits.max_depth.min(127);
    if header_depth > max {
        return Some(PeerError::NestingTooDeep {
            phase: Phase::Header,
            max,
        });
    }
    if m.content().len() as u64 > limits.max_content_len {
        return Some(PeerError::ContentTooLong {
            size: m.content().len() as u64,
            max: limits.max_content_len,
        });
    }
    if limits.check_json_content && m.is_json() {
        return m.validate_json(limits).err();
    }
    None
}

/// Fuzz target `roundtrip`: an [`ArbMessage`] and a split position.
pub fn roundtrip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(spec) = ArbMessage::arbitrary(&mut u) else {
        return;
    };
    let split: usize = u.arbitrary().unwrap_or(0);
    let msg = spec.build();
    assert_eq!(msg.header().content_length, msg.content().len() as u64);
    let limits = Limits::default();
    let Some(wire) = encode_fitting(&msg) else {
        return;
    };
    // The wire form is framed as announced.
    let hlen = usize::from(u16::from_be_bytes([wire[0], wire[1]]));
    assert_eq!(wire.len(), 2 + hlen + msg.content().len());
    assert_eq!(&wire[2 + hlen..], msg.content());

    let split = split % (wire.len() + 1);
    let doors = [Door::Decode, Door::ReadFrom, Door::ReadBuf];
    let door = doors[split % 3];
    let out = run_decoder(&wire, &limits, &[split, wire.len()], &[door], 64, true);
    match expected_refusal(&msg, &limits) {
        Some(e) => {
            assert_eq!(out.end, Err(e.into()), "refusal of {msg:?}");
            assert!(out.messages.is_empty());
        }
        None => {
            assert_eq!(out.end, Ok(Event::End));
            assert_eq!(out.messages.len(), 1);
            let got = &out.messages[0];
            assert_eq!(got, &msg, "roundtrip changed the message");
            assert_eq!(encode(got).as_ref(), Ok(&wire), "re-encoding differs");
            if msg.is_json() {
                if let ArbBody::Json(v) = &spec.body {
                    let back: Value = got
                        .json_content()
                        .unwrap_or_else(|e| panic!("json_content: {e:?}"));
                    assert_eq!(back, v.0, "JSON content changed");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// connection
// ---------------------------------------------------------------------------------------

/// Which connection an operation acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum Side {
    /// The client.
    Client,
    /// The server.
    Server,
}

/// One step of the `connection` target.
#[derive(Debug, Clone, Arbitrary)]
pub enum Op {
    /// `send` a message from a side.
    Send(Side, ArbMessage),
    /// Move up to `n` pending bytes from a side to the other (`read_from`, or `read_buf` and
    /// `commit` when the flag is set).
    Pump(Side, u16, bool),
    /// Take events on a side until `NeedData` or an error.
    Events(Side),
    /// `close` a side.
    Close(Side),
    /// End the stream from a side: the other side is told `receive_eof` (what is still
    /// pending from this side is never delivered).
    Eof(Side),
    /// Put bytes that are not from the encoder on the stream from a side.
    Garbage(Side, Vec<u8>),
    /// `release_buffers` on a side.
    Release(Side),
}

/// The model of one direction of the wire.
#[derive(Default)]
struct Direction {
    /// Encoded length of each message sent, in order.
    lengths: Vec<usize>,
    /// The messages sent and not yet received, in order.
    expected: std::collections::VecDeque<Message>,
    /// Bytes delivered to the receiver.
    delivered: usize,
    /// Messages received.
    received: usize,
    /// Non-encoder bytes were delivered: from then on only "no panic" is checked.
    tainted: bool,
    /// The receiver was told the stream ended.
    eof: bool,
    /// The receiver reported an error (only possible once tainted or cut).
    failed: bool,
}

impl Direction {
    /// Messages whose bytes were delivered completely.
    fn complete(&self) -> usize {
        let mut total = 0;
        self.lengths
            .iter()
            .take_while(|&&l| {
                total += l;
                total <= self.delivered
            })
            .count()
    }
    /// `true` if the delivered bytes end exactly at a message boundary.
    fn at_boundary(&self) -> bool {
        let mut total = 0;
        self.delivered == 0
            || self.lengths.iter().any(|&l| {
                total += l;
                total == self.delivered
            })
    }
}

struct Pair {
    client: Connection,
    server: Connection,
    /// `to_server` is the client's sending direction, `to_client` the server's.
    to_server: Direction,
    to_client: Direction,
    sent: [u64; 2],
}

impl Pair {
    fn conn(&mut self, side: Side) -> &mut Connection {
        match side {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        }
    }
    /// (sender, receiver, the direction from `side`)
    fn split(&mut self, from: Side) -> (&mut Connection, &mut Connection, &mut Direction) {
        match from {
            Side::Client => (&mut self.client, &mut self.server, &mut self.to_server),
            Side::Server => (&mut self.server, &mut self.client, &mut self.to_client),
        }
    }
    /// The direction `side` receives on.
    fn inbound(&mut self, side: Side) -> (&mut Connection, &mut Direction) {
        match side {
            Side::Client => (&mut self.client, &mut self.to_client),
            Side::Server => (&mut self.server, &mut self.to_server),
        }
    }

    fn send(&mut self, side: Side, spec: &ArbMessage) {
        let msg = spec.build();
        let limits = Limits::default();
        // Honest peers send what the other side accepts; the rest is roundtrip's business.
        if expected_refusal(&msg, &limits).is_some() {
            return;
        }
        let (tx, _, dir) = self.split(side);
        let before = tx.pending_len();
        let closed = tx.is_closed();
        match tx.send(msg.clone(), Instant::now()) {
            Ok(()) => {
                assert!(!closed, "send after close accepted");
                let len = tx.pending_len() - before;
                assert_eq!(
                    Ok(len),
                    encode(&msg).map(|w| w.len()),
                    "queued bytes differ from the encoding"
                );
                dir.lengths.push(len);
                dir.expected.push_back(msg);
                self.sent[side as usize] += 1;
            }
            Err(LocalError::SendAfterClose) => {
                assert!(closed, "SendAfterClose on an open connection");
                assert_eq!(tx.pending_len(), before);
            }
            Err(LocalError::EncodeHeaderTooLong { .. }) => assert_eq!(tx.pending_len(), before),
            Err(e) => panic!("send: {e:?}"),
        }
    }

    fn pump(&mut self, from: Side, n: u16, read_buf: bool) {
        let (tx, rx, dir) = self.split(from);
        if dir.eof || dir.failed {
            return;
        }
        let now = Instant::now();
        let mut budget = usize::from(n);
        while budget > 0 && tx.wants_write() {
            let mut slices = [IoSlice::new(&[]); 4];
            let count = tx.pending_slices(&mut slices);
            let first: &[u8] = slices[..count].first().map_or(&[], |s| &s[..]);
            let chunk_len = first.len().min(budget);
            assert!(chunk_len > 0, "wants_write with an empty pending slice");
            let chunk = first[..chunk_len].to_vec();
            let moved = if read_buf {
                let buf = rx.read_buf();
                let k = buf.len().min(chunk_len);
                buf[..k].copy_from_slice(&chunk[..k]);
                rx.commit(k, now).map(|()| k).map_err(|e| e.to_string())
            } else {
                // One read of what the socket holds (at most one read buffer).
                rx.read_from(&mut &chunk[..], now)
                    .map_err(|e| e.to_string())
            };
            match moved {
                Ok(k) => {
                    assert!(k > 0, "no progress on {chunk_len} bytes");
                    tx.consume(k, now);
                    dir.delivered += k;
                    budget -= k;
                }
                Err(e) => {
                    assert!(dir.tainted, "receiving honest bytes failed: {e:?}");
                    dir.failed = true;
                    return;
                }
            }
        }
    }

    fn events(&mut self, side: Side) {
        let (rx, dir) = self.inbound(side);
        loop {
            match rx.next_event() {
                Ok(Event::Message(m)) => {
                    dir.received += 1;
                    if !dir.tainted {
                        let want = dir.expected.pop_front();
                        assert_eq!(Some(&m), want.as_ref(), "message out of order or changed");
                    }
                }
                Ok(Event::NeedData) => {
                    assert!(!dir.eof, "NeedData after end of stream");
                    if !dir.tainted {
                        assert_eq!(
                            dir.received,
                            dir.complete(),
                            "a complete message is held back"
                        );
                    }
                    break;
                }
                Ok(Event::End) => {
                    assert!(dir.eof, "End without end of stream");
                    if !dir.tainted {
                        assert!(dir.at_boundary(), "End in the middle of a message");
                        assert_eq!(dir.received, dir.complete());
                    }
                    break;
                }
                Err(e) => {
                    if !dir.tainted {
                        assert!(
                            dir.eof && !dir.at_boundary(),
                            "error between honest peers: {e:?}"
                        );
                        assert!(matches!(e, PeerError::UnexpectedEof { .. }), "{e:?}");
                        assert_eq!(dir.received, dir.complete());
                    }
                    dir.failed = true;
                    // Sticky.
                    assert_eq!(rx.next_event(), Err(e));
                    break;
                }
            }
        }
        self.check_counters();
    }

    fn check_counters(&self) {
        let (cs, ss) = (self.sent[0], self.sent[1]);
        let (cr, sr) = (
            self.to_client.received as u64,
            self.to_server.received as u64,
        );
        assert_eq!(
            self.client.in_flight(),
            cs.saturating_sub(cr),
            "client in_flight"
        );
        assert_eq!(
            self.server.in_flight(),
            sr.saturating_sub(ss),
            "server in_flight"
        );
        assert_eq!(self.client.role(), Role::Client);
        assert_eq!(self.server.role(), Role::Server);
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Send(side, m) => self.send(*side, m),
            Op::Pump(side, n, rb) => self.pump(*side, *n, *rb),
            Op::Events(side) => self.events(*side),
            Op::Close(side) => {
                let c = self.conn(*side);
                c.close();
                assert!(c.is_closed());
                assert_eq!(c.wants_shutdown(), !c.wants_write());
            }
            Op::Eof(from) => {
                let (_, rx, dir) = self.split(*from);
                if dir.eof {
                    return;
                }
                rx.receive_eof();
                dir.eof = true;
                assert!(!rx.wants_read());
                if !dir.failed {
                    let _ = rx.read_buf();
                    assert_eq!(
                        rx.commit(1, Instant::now()),
                        Err(LocalError::ReceiveAfterEof)
                    );
                }
            }
            Op::Garbage(from, bytes) => {
                let (_, rx, dir) = self.split(*from);
                if dir.eof || dir.failed || bytes.is_empty() {
                    return;
                }
                dir.tainted = true;
                let mut input = &bytes[..];
                while !input.is_empty() {
                    if rx.read_from(&mut input, Instant::now()).is_err() {
                        dir.failed = true;
                        break;
                    }
                }
            }
            Op::Release(side) => self.conn(*side).release_buffers(),
        }
    }
}

/// Fuzz target `connection`: up to 64 operations on a client and a server wired together,
/// then everything flushed, checked and ended cleanly.
pub fn connection(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut pair = Pair {
        client: Connection::new(Role::Client, Limits::default()),
        server: Connection::new(Role::Server, Limits::default()),
        to_server: Direction::default(),
        to_client: Direction::default(),
        sent: [0, 0],
    };
    for _ in 0..64 {
        if u.is_empty() {
            break;
        }
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        pair.apply(&op);
    }
    // Flush both ways, take everything, then end both streams.
    for side in [Side::Client, Side::Server] {
        pair.pump(side, u16::MAX, false);
        while pair.conn(side).wants_write() && !pair.split(side).2.eof && !pair.split(side).2.failed
        {
            pair.pump(side, u16::MAX, true);
        }
        let other = match side {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        };
        pair.events(other);
        let dir = pair.split(side).2;
        if !dir.tainted && !dir.eof && !dir.failed {
            assert!(
                dir.expected.is_empty(),
                "messages never delivered: {}",
                dir.expected.len()
            );
        }
        pair.apply(&Op::Eof(side));
        pair.events(other);
    }
}
