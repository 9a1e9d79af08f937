//! Unit tests of the protocol core: the PROTOCOL.md examples byte for byte, every split of
//! every example, the limits at their edges, memory bounds, and property tests.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::json;

use crate::decoder::Decoder;
use crate::encoder::Encoder;
use crate::header::{CLIENT_BINARY_TYPE, SERVER_BINARY_TYPE};
use crate::message::encode_into;
use crate::*;

/// The worked examples of PROTOCOL.md, exactly.
pub(crate) const SEARCH_MORPHEUS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/vectors/ok-search-request.bin"
));
pub(crate) const RESULT_MORPHEUS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/vectors/ok-search-response.bin"
));
pub(crate) const SEARCH_DOG_BIG: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/vectors/ok-dog-request.bin"
));
pub(crate) const BINARY_REQUEST: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/vectors/ok-binary-request.bin"
));
pub(crate) const BINARY_RESPONSE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/vectors/ok-binary-response.bin"
));

fn examples() -> Vec<(&'static [u8], Message)> {
    let little = ByteOrder::Little;
    vec![
        (
            SEARCH_MORPHEUS,
            Message::json(&json!({"action": "search", "value": "morpheus"}))
                .unwrap()
                .with_byteorder(little),
        ),
        (
            RESULT_MORPHEUS,
            Message::json(&json!({"result": "Follow the white rabbit. 🐰"}))
                .unwrap()
                .with_byteorder(little),
        ),
        (
            SEARCH_DOG_BIG,
            Message::json(&json!({"action": "search", "value": "🐶"}))
                .unwrap()
                .with_byteorder(ByteOrder::Big),
        ),
        (
            BINARY_REQUEST,
            Message::binary(CLIENT_BINARY_TYPE, "binary☺".as_bytes()).with_byteorder(little),
        ),
        (
            BINARY_RESPONSE,
            Message::binary(
                SERVER_BINARY_TYPE,
                "First 10 bytes of request: binary☺".as_bytes(),
            )
            .with_byteorder(little),
        ),
    ]
}

/// Decodes `wire` fed in the given pieces, then ends the stream. Returns every message and
/// the final verdict (`Ok(())` for a clean end, or the first error).
fn decode_pieces(pieces: &[&[u8]]) -> (Vec<Message>, Result<(), PeerError>) {
    let mut dec = Decoder::new(Limits::default());
    let mut out = Vec::new();
    for piece in pieces {
        let mut input = *piece;
        loop {
            match dec.decode(&mut input) {
                Ok(Event::Message(m)) => out.push(m),
                Ok(Event::NeedData) => break,
                Ok(Event::End) => unreachable!("no end before eof"),
                Err(e) => return (out, Err(e)),
            }
        }
        assert!(input.is_empty(), "NeedData means all input was consumed");
    }
    dec.receive_eof();
    loop {
        match dec.next_event() {
            Ok(Event::Message(m)) => out.push(m),
            Ok(Event::End) => return (out, Ok(())),
            Ok(Event::NeedData) => unreachable!("after eof the answer is End or an error"),
            Err(e) => return (out, Err(e)),
        }
    }
}

/// Copies `bytes` into the decoder through its read buffer, as a stream transport does.
fn stage(dec: &mut Decoder, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let buf = dec.read_buf();
        let n = buf.len().min(bytes.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        dec.commit(n).unwrap();
        bytes = &bytes[n..];
    }
}

/// The same through a connection's one way in (`read_from` + `next_event`), one read per
/// piece.
fn receive_pieces(pieces: &[&[u8]], limits: &Limits) -> (Vec<Message>, Result<(), PeerError>) {
    let mut dec = Connection::new(Role::Server, limits.clone());
    let now = Instant::now();
    let mut out = Vec::new();
    for piece in pieces {
        let mut reader = *piece;
        while !reader.is_empty() {
            dec.read_from(&mut reader, now)
                .expect("reading before the end of stream");
        }
        loop {
            match dec.next_event() {
                Ok(Event::Message(m)) => out.push(m),
                Ok(Event::NeedData) => break,
                Ok(Event::End) => unreachable!(),
                Err(e) => return (out, Err(e)),
            }
        }
    }
    dec.receive_eof();
    match dec.next_event() {
        Ok(Event::End) => (out, Ok(())),
        Ok(other) => panic!("unexpected {other:?} after eof"),
        Err(e) => (out, Err(e)),
    }
}

/// The same through the zero-copy door (`read_buf` + `commit`), with reads of at most
/// `chunk` bytes.
fn read_buf_chunks(
    wire: &[u8],
    chunk: usize,
    limits: &Limits,
) -> (Vec<Message>, Result<(), PeerError>) {
    let mut dec = Decoder::new(limits.clone()).with_read_buf_size(64);
    let mut out = Vec::new();
    let mut rest = wire;
    loop {
        loop {
            match dec.next_event() {
                Ok(Event::Message(m)) => out.push(m),
                Ok(Event::NeedData) => break,
                Ok(Event::End) => return (out, Ok(())),
                Err(e) => return (out, Err(e)),
            }
        }
        if rest.is_empty() {
            dec.receive_eof();
            continue;
        }
        let buf = dec.read_buf();
        let n = buf.len().min(chunk).min(rest.len());
        buf[..n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        dec.commit(n).unwrap();
    }
}

#[test]
fn encoder_reproduces_every_protocol_example() {
    for (wire, message) in examples() {
        assert_eq!(encode(&message).unwrap(), wire, "{message:?}");
    }
}

#[test]
fn decoder_reproduces_every_protocol_example() {
    for (wire, message) in examples() {
        let (got, end) = decode_pieces(&[wire]);
        assert_eq!(end, Ok(()));
        assert_eq!(got, vec![message]);
    }
}

#[test]
fn golden_strings_with_every_escape() {
    // Bytes computed with Python 3.11:
    // json.dumps({"s": "\"\\/\x01\x1f\x7f\u2028😀\n\r\t\b\f"}, ensure_ascii=False).encode()
    let value = json!({"s": "\"\\/\u{1}\u{1f}\u{7f}\u{2028}😀\n\r\t\u{8}\u{c}"});
    let m = Message::json(&value).unwrap();
    assert_eq!(
        m.content(),
        "{\"s\": \"\\\"\\\\/\\u0001\\u001f\u{7f}\u{2028}😀\\n\\r\\t\\b\\f\"}".as_bytes()
    );
    // And in the header, through an extra key and the content-type.
    let m = Message::binary("a\"b/\u{7f}", Vec::new())
        .with_byteorder(ByteOrder::Big)
        .with_extra("k\u{2028}", "v\u{1}");
    let wire = encode(&m).unwrap();
    assert_eq!(
        &wire[2..],
        "{\"byteorder\": \"big\", \"content-type\": \"a\\\"b/\u{7f}\", \"content-encoding\": \"binary\", \"content-length\": 0, \"k\u{2028}\": \"v\\u0001\"}".as_bytes()
    );
    let (got, end) = decode_pieces(&[&wire]);
    assert_eq!(end, Ok(()));
    assert_eq!(got, vec![m]);
}

fn pipelined_stream() -> (Vec<u8>, Vec<Message>) {
    let msgs: Vec<Message> = examples().into_iter().take(3).map(|(_, m)| m).collect();
    let mut wire = Vec::new();
    for m in &msgs {
        encode_into(m, &mut wire).unwrap();
    }
    (wire, msgs)
}

#[test]
fn every_split_of_every_example_and_of_a_pipelined_stream() {
    let (stream, stream_msgs) = pipelined_stream();
    let mut cases: Vec<(Vec<u8>, Vec<Message>)> = examples()
        .into_iter()
        .map(|(w, m)| (w.to_vec(), vec![m]))
        .collect();
    cases.push((stream, stream_msgs));
    for (wire, want) in cases {
        for cut in 0..=wire.len() {
            let (a, b) = wire.split_at(cut);
            assert_eq!(
                decode_pieces(&[a, b]),
                (want.clone(), Ok(())),
                "decode cut {cut}"
            );
            assert_eq!(
                receive_pieces(&[a, b], &Limits::default()),
                (want.clone(), Ok(())),
                "receive cut {cut}"
            );
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode_pieces(&bytes), (want.clone(), Ok(())));
        for chunk in [1, 2, 3, 7, 64, 1000] {
            assert_eq!(
                read_buf_chunks(&wire, chunk, &Limits::default()),
                (want.clone(), Ok(())),
                "chunk {chunk}"
            );
        }
    }
}

#[test]
fn every_strict_prefix_needs_more_data_and_eof_there_names_the_phase() {
    for (wire, _) in examples() {
        let header_len = usize::from(u16::from_be_bytes([wire[0], wire[1]]));
        for cut in 1..wire.len() {
            let mut dec = Decoder::new(Limits::default());
            let mut input = &wire[..cut];
            assert_eq!(dec.decode(&mut input), Ok(Event::NeedData), "cut {cut}");
            assert!(dec.message_in_progress());
            dec.receive_eof();
            let want = if cut < 2 {
                PeerError::UnexpectedEof {
                    phase: Phase::Protoheader,
                    missing: 2 - cut,
                }
            } else if cut < 2 + header_len {
                PeerError::UnexpectedEof {
                    phase: Phase::Header,
                    missing: 2 + header_len - cut,
                }
            } else {
                PeerError::UnexpectedEof {
                    phase: Phase::Content,
                    missing: wire.len() - cut,
                }
            };
            assert_eq!(dec.next_event(), Err(want.clone()), "cut {cut}");
            // Failed stays failed.
            assert_eq!(dec.next_event(), Err(want));
        }
    }
}

#[test]
fn empty_chunks_and_empty_stream() {
    let (got, end) = decode_pieces(&[&[], SEARCH_MORPHEUS, &[], &[]]);
    assert_eq!((got.len(), end), (1, Ok(())));
    assert_eq!(decode_pieces(&[]), (vec![], Ok(())));
}

fn frame(header: &str, content: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(content);
    v
}

fn binary_header(len: u64) -> String {
    format!("{{\"byteorder\": \"big\", \"content-type\": \"x\", \"content-encoding\": \"binary\", \"content-length\": {len}}}")
}

/// Runs `wire` whole, byte by byte, and split at a few positions with `limits`; all must
/// give the same verdict, which is returned.
fn verdict(wire: &[u8], limits: &Limits) -> Result<usize, PeerError> {
    let whole = receive_pieces(&[wire], limits);
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    let bytewise = receive_pieces(&bytes, limits);
    assert_eq!(whole, bytewise);
    for cut in [1, 2, 3, wire.len() / 2, wire.len().saturating_sub(1)] {
        let cut = cut.min(wire.len());
        assert_eq!(
            receive_pieces(&[&wire[..cut], &wire[cut..]], limits),
            whole,
            "cut {cut}"
        );
    }
    assert_eq!(read_buf_chunks(wire, 97, limits), whole);
    whole.1.map(|()| whole.0.len())
}

#[test]
fn header_length_limit_at_its_edges() {
    let limits = Limits {
        max_header_len: 200,
        ..Limits::default()
    };
    for (extra, want_ok) in [(199, true), (200, true), (201, false)] {
        let base = binary_header(0);
        // Pad with whitespace inside the object to reach exactly `extra` bytes.
        let pad = " ".repeat(extra - base.len());
        let header = format!("{{{pad}{}", &base[1..]);
        assert_eq!(header.len(), extra);
        let got = verdict(&frame(&header, b""), &limits);
        if want_ok {
            assert_eq!(got, Ok(1), "{extra}");
        } else {
            assert_eq!(
                got,
                Err(PeerError::HeaderTooLong {
                    size: 201,
                    max: 200
                })
            );
        }
    }
    // The error comes from the protoheader alone: no header bytes need to arrive.
    let mut dec = Decoder::new(limits);
    assert_eq!(
        dec.decode(&mut &[0u8, 201][..]),
        Err(PeerError::HeaderTooLong {
            size: 201,
            max: 200
        })
    );
}

#[test]
fn content_length_limit_at_its_edges() {
    let max = 1000u64;
    let limits = Limits {
        max_content_len: max,
        ..Limits::default()
    };
    for (len, ok) in [(max - 1, true), (max, true), (max + 1, false)] {
        let wire = frame(&binary_header(len), &vec![7u8; len as usize]);
        let got = verdict(&wire, &limits);
        if ok {
            assert_eq!(got, Ok(1));
        } else {
            assert_eq!(got, Err(PeerError::ContentTooLong { size: max + 1, max }));
        }
    }
}

#[test]
fn nesting_limit_at_its_edges_in_header_and_content() {
    let limits = Limits {
        max_depth: 5,
        ..Limits::default()
    };
    for depth in [4usize, 5, 6] {
        // Header: the object itself is level 1, the extra value adds depth - 1 levels.
        let inner = format!("{}{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
        let header = format!(
            "{{\"byteorder\": \"big\", \"content-type\": \"x\", \"content-encoding\": \"binary\", \"content-length\": 0, \"deep\": {inner}}}"
        );
        let got = verdict(&frame(&header, b""), &limits);
        let content = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let json_header = format!(
            "{{\"byteorder\": \"big\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": {}}}",
            content.len()
        );
        let got_content = verdict(&frame(&json_header, content.as_bytes()), &limits);
        if depth <= 5 {
            assert_eq!(got, Ok(1));
            assert_eq!(got_content, Ok(1));
        } else {
            assert_eq!(
                got,
                Err(PeerError::NestingTooDeep {
                    phase: Phase::Header,
                    max: 5
                })
            );
            assert_eq!(
                got_content,
                Err(PeerError::NestingTooDeep {
                    phase: Phase::Content,
                    max: 5
                })
            );
        }
    }
}

#[test]
fn json_content_errors_are_typed() {
    let limits = Limits::default();
    let json_frame = |enc: &str, content: &[u8]| {
        frame(
            &format!("{{\"byteorder\": \"big\", \"content-type\": \"text/json\", \"content-encoding\": \"{enc}\", \"content-length\": {}}}", content.len()),
            content,
        )
    };
    assert_eq!(
        verdict(&json_frame("utf-16", b"{}"), &limits),
        Err(PeerError::UnsupportedEncoding {
            encoding: "utf-16".into()
        })
    );
    assert_eq!(
        verdict(&json_frame("utf-8", b"{\"a\": \"\xff\"}"), &limits),
        Err(PeerError::InvalidUtf8 {
            phase: Phase::Content,
            offset: 7
        })
    );
    assert!(matches!(
        verdict(&json_frame("utf-8", b"{\"a\": }"), &limits),
        Err(PeerError::InvalidJson {
            phase: Phase::Content,
            line: 1,
            column: 7,
            ..
        })
    ));
    assert_eq!(verdict(&json_frame("UTF8", b"{}"), &limits), Ok(1));
    // With the check off, malformed JSON content is the application's business.
    let lax = Limits {
        check_json_content: false,
        ..Limits::default()
    };
    assert_eq!(verdict(&json_frame("utf-8", b"{\"a\": }"), &lax), Ok(1));
}

/// A decoded message remembers what the decoder checked; `json_content` skips only the
/// checks already made, under limits at least as strict, and answers as for a message
/// built by hand.
#[test]
fn json_content_after_decoding_answers_as_without_it() {
    let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    for (decoder_depth, content_depth) in [(5, 3), (100, 3), (100, 40), (5, 5), (127, 127)] {
        let limits = Limits {
            max_depth: decoder_depth,
            ..Limits::default()
        };
        let content = deep(content_depth);
        let json_header = format!(
            "{{\"byteorder\": \"big\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": {}}}",
            content.len()
        );
        let (msgs, end) = receive_pieces(&[&frame(&json_header, content.as_bytes())], &limits);
        assert_eq!(end, Ok(()));
        let by_hand = Message::from_parts("text/json".into(), "utf-8".into(), content.into_bytes())
            .with_byteorder(crate::ByteOrder::Big);
        assert_eq!(msgs[0], by_hand);
        for max_depth in [2, 3, 5, 32, 64, 127] {
            let asked = Limits {
                max_depth,
                ..Limits::default()
            };
            let what =
                format!("decoded under {decoder_depth}, depth {content_depth}, asked {max_depth}");
            let decoded = msgs[0].json_content_with::<serde_json::Value>(&asked);
            let built = by_hand.json_content_with::<serde_json::Value>(&asked);
            assert_eq!(decoded, built, "{what}");
            assert_eq!(decoded.is_ok(), content_depth <= max_depth, "{what}");
        }
    }
}

#[test]
fn json_content_into_user_types() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Req {
        action: String,
        value: String,
    }
    let (msgs, _) = decode_pieces(&[SEARCH_MORPHEUS]);
    let req: Req = msgs[0].json_content().unwrap();
    assert_eq!(
        req,
        Req {
            action: "search".into(),
            value: "morpheus".into()
        }
    );
    let wrong: Result<Vec<u8>, _> = msgs[0].json_content();
    assert!(matches!(wrong, Err(PeerError::ContentShape { .. })));
    let bin = Message::from_parts("text/json".into(), "latin-1".into(), b"{}".to_vec());
    assert_eq!(
        bin.json_content::<serde_json::Value>(),
        Err(PeerError::UnsupportedEncoding {
            encoding: "latin-1".into()
        })
    );
}

#[test]
fn announced_content_is_not_allocated_before_it_arrives() {
    let wire = frame(&binary_header(16 * 1024 * 1024), b"");
    let mut dec = Decoder::new(Limits::default());
    assert_eq!(dec.decode(&mut &wire[..]), Ok(Event::NeedData));
    assert!(
        dec.allocated() <= wire.len() + 1024,
        "allocated {}",
        dec.allocated()
    );
    // Through every door, allocation stays within twice what arrived plus one 64 KiB step.
    let mut received = wire.len();
    let piece = vec![0u8; 100_000];
    for _ in 0..20 {
        dec.decode(&mut &piece[..]).unwrap();
        received += piece.len();
        assert!(
            dec.allocated() <= 2 * received + 64 * 1024,
            "{} for {received}",
            dec.allocated()
        );
    }
    let mut dec = Decoder::new(Limits::default());
    stage(&mut dec, &wire);
    assert_eq!(dec.next_event(), Ok(Event::NeedData));
    let n = dec.read_buf().len();
    assert!(n <= 64 * 1024, "read_buf lends {n}");
    assert!(dec.allocated() <= wire.len() + 64 * 1024 + crate::decoder::DEFAULT_READ_BUF);
}

#[test]
fn large_content_is_received_in_place() {
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let wire = encode(&Message::binary("x/y", content.clone())).unwrap();
    let (msgs, end) = read_buf_chunks(&wire, 65536, &Limits::default());
    assert_eq!(end, Ok(()));
    assert_eq!(msgs[0].content(), &content[..]);
    // The decoder lends the content buffer itself once the header is known.
    let mut dec = Decoder::new(Limits::default());
    let head = wire.len() - content.len();
    stage(&mut dec, &wire[..head]);
    assert_eq!(dec.next_event(), Ok(Event::NeedData));
    let lent = dec.read_buf().len();
    assert_eq!(lent, 64 * 1024, "a 64 KiB step of the content buffer");
}

#[test]
fn doors_mix_inside_a_lent_content_window() {
    // A window of the content buffer is lent and partly filled; the rest arrives through
    // `decode`, across the window's end: every byte lands where it belongs.
    let content: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let wire = encode(&Message::binary("x/y", content.clone())).unwrap();
    let head = wire.len() - content.len();
    let mut dec = Decoder::new(Limits::default());
    assert_eq!(dec.decode(&mut &wire[..head]), Ok(Event::NeedData));
    let mut at = head;
    let mut windows = 0;
    while at < wire.len() {
        let buf = dec.read_buf();
        assert!(buf.len() <= 128 * 1024, "lends {} at once", buf.len());
        // Fill a third of what was lent, then give the decoder twice that by `decode`.
        let k = (buf.len() / 3).max(1).min(wire.len() - at);
        buf[..k].copy_from_slice(&wire[at..at + k]);
        dec.commit(k).unwrap();
        at += k;
        let more = (2 * k).min(wire.len() - at);
        let mut input = &wire[at..at + more];
        at += more;
        let event = dec.decode(&mut input).unwrap();
        assert!(input.is_empty());
        windows += 1;
        if at == wire.len() {
            let Event::Message(m) = event else {
                panic!("complete at the end, got {event:?}")
            };
            assert_eq!(m.content(), &content[..]);
        } else {
            assert_eq!(event, Event::NeedData);
            assert!(dec.message_in_progress());
        }
    }
    assert!(windows > 3);
}

#[test]
fn next_event_finds_what_only_commits_completed() {
    // Nothing staged: only `NeedData` (without decoding anything).
    let mut dec = Decoder::new(Limits::default());
    assert_eq!(dec.next_event(), Ok(Event::NeedData));
    // A content received entirely through the lent content buffer (nothing staged once
    // the header is decoded): `next_event` alone hands the message out.
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let wire = encode(&Message::binary("x/y", content.clone())).unwrap();
    let head = wire.len() - content.len();
    assert_eq!(dec.decode(&mut &wire[..head]), Ok(Event::NeedData));
    let mut at = head;
    while at < wire.len() {
        let buf = dec.read_buf();
        let k = buf.len().min(wire.len() - at);
        buf[..k].copy_from_slice(&wire[at..at + k]);
        dec.commit(k).unwrap();
        at += k;
        if at < wire.len() {
            assert_eq!(dec.next_event(), Ok(Event::NeedData));
        }
    }
    match dec.next_event() {
        Ok(Event::Message(m)) => assert_eq!(m.content(), &content[..]),
        other => panic!("the message, got {other:?}"),
    }
    assert_eq!(dec.next_event(), Ok(Event::NeedData));
    // The end of the stream, and an error, are reported with nothing staged.
    dec.receive_eof();
    assert_eq!(dec.next_event(), Ok(Event::End));
    let mut bad = Decoder::new(Limits::default());
    assert!(bad.decode(&mut &b"\x00\x02{x"[..]).is_err());
    assert!(bad.next_event().is_err(), "the error again");
}

#[test]
fn misuse_is_a_local_error_and_leaves_the_machine_usable() {
    let mut dec = Decoder::new(Limits::default());
    let n = dec.read_buf().len();
    assert_eq!(
        dec.commit(n + 1),
        Err(LocalError::CommitTooLarge {
            committed: n + 1,
            available: n
        })
    );
    assert!(!Error::from(LocalError::CommitTooLarge {
        committed: 1,
        available: 0
    })
    .is_peer_error());
    assert_eq!(
        dec.commit(1),
        Err(LocalError::CommitTooLarge {
            committed: 1,
            available: 0
        })
    );
    stage(&mut dec, SEARCH_MORPHEUS);
    assert!(matches!(dec.next_event(), Ok(Event::Message(_))));
    dec.receive_eof();
    let _ = dec.read_buf();
    assert_eq!(dec.commit(1), Err(LocalError::ReceiveAfterEof));
    assert_eq!(dec.next_event(), Ok(Event::End));

    let mut conn = Connection::client();
    conn.close();
    assert_eq!(
        conn.send(Message::binary("x", vec![]), Instant::now()),
        Err(LocalError::SendAfterClose)
    );
    assert!(conn.wants_shutdown());
}

#[test]
fn peer_errors_are_sticky() {
    let mut dec = Decoder::new(Limits::default());
    let bad = frame("[]", b"");
    let want = Err(PeerError::HeaderNotObject {
        found: JsonKind::Array,
    });
    assert_eq!(dec.decode(&mut &bad[..]), want);
    assert_eq!(dec.decode(&mut &SEARCH_MORPHEUS[..]), want);
    assert_eq!(dec.next_event(), want);
    assert!(dec.error().is_some());
}

#[test]
fn stream_positions_locate_messages_and_errors() {
    let (mut wire, _) = pipelined_stream();
    let bad_at = wire.len();
    wire.extend_from_slice(&frame("{}", b""));
    let mut dec = Decoder::new(Limits::default());
    let mut input = &wire[..];
    let mut starts = Vec::new();
    loop {
        let start = dec.message_start();
        match dec.decode(&mut input) {
            Ok(Event::Message(_)) => starts.push(start),
            Err(PeerError::MissingKey { key: "byteorder" }) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        starts,
        [
            0,
            SEARCH_MORPHEUS.len() as u64,
            (SEARCH_MORPHEUS.len() + RESULT_MORPHEUS.len()) as u64
        ]
    );
    assert_eq!(dec.message_start(), bad_at as u64);
}

#[test]
fn encoder_handles_partial_sends_and_large_content_without_copying_it() {
    let mut enc = Encoder::new();
    let big = vec![9u8; 100_000];
    enc.queue(Message::binary("x", big.clone())).unwrap();
    enc.queue(Message::binary("y", b"small".to_vec())).unwrap();
    let mut out = Vec::new();
    while enc.wants_write() {
        // A socket that takes 1000 bytes at a time.
        let p = enc.pending();
        let n = p.len().min(1000);
        out.extend_from_slice(&p[..n]);
        enc.consume(n);
    }
    let (msgs, end) = decode_pieces(&[&out]);
    assert_eq!(end, Ok(()));
    assert_eq!(msgs[0].content(), &big[..]);
    assert_eq!(msgs[1].content(), b"small");
    // A writer that accepts nothing is WriteZero, not a spin.
    enc.queue(Message::binary("x", vec![1])).unwrap();
    let err = enc.write_to(&mut ZeroWriter).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WriteZero);
}

#[test]
fn one_pending_slice_is_written_plainly_several_vectored() {
    /// Records which call each write was, and takes everything.
    #[derive(Default)]
    struct Calls(Vec<(&'static str, usize)>);
    impl std::io::Write for Calls {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.push(("write", buf.len()));
            Ok(buf.len())
        }
        fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
            let n = bufs.iter().map(|b| b.len()).sum();
            self.0.push(("write_vectored", n));
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut enc = Encoder::new();
    enc.queue(Message::binary("x", b"small".to_vec())).unwrap();
    enc.queue(Message::binary("y", b"also small".to_vec()))
        .unwrap();
    let small = enc.pending_len();
    let mut w = Calls::default();
    enc.write_to(&mut w).unwrap();
    assert_eq!(
        w.0,
        [("write", small)],
        "two small messages share one segment"
    );
    // Large content is its own segment: header and content go out in one vectored write.
    enc.queue(Message::binary("x", vec![1; 100_000])).unwrap();
    let large = enc.pending_len();
    let mut w = Calls::default();
    enc.write_to(&mut w).unwrap();
    assert_eq!(w.0, [("write_vectored", large)]);
    assert!(!enc.wants_write());
}

#[test]
fn segments_leave_in_order_whether_one_or_many_are_queued() {
    // One small answer: held in place, nothing else allocated for the queue.
    let mut enc = Encoder::new();
    enc.queue(Message::binary("x", b"one".to_vec())).unwrap();
    let one = enc.allocated();
    let mut out = Vec::new();
    enc.write_to(&mut out).unwrap();
    let (msgs, end) = decode_pieces(&[&out]);
    assert_eq!((msgs.len(), end), (1, Ok(())));
    // Its segment is kept for the next answer: no more than it was.
    assert!(enc.allocated() <= one);
    // Several segments (a large content is its pieces), consumed in uneven bites, come
    // out as they went in, the first segment in place and the rest behind it.
    let big = vec![7u8; 70_000];
    for round in 0..3 {
        enc.queue(Message::binary("x", big.clone())).unwrap();
        enc.queue(Message::binary("y", format!("small {round}").into_bytes()))
            .unwrap();
        enc.queue(Message::binary("z", vec![round; 20_000]))
            .unwrap();
        let mut out = Vec::new();
        let mut bite = 1;
        while enc.wants_write() {
            let mut slices = [std::io::IoSlice::new(&[]); 8];
            let count = enc.pending_slices(&mut slices);
            let mut n = 0;
            for slice in &slices[..count] {
                let take = slice.len().min(bite - n);
                out.extend_from_slice(&slice[..take]);
                n += take;
                if n == bite {
                    break;
                }
            }
            enc.consume(n);
            bite = bite * 3 + 1;
        }
        let (msgs, end) = decode_pieces(&[&out]);
        assert_eq!(end, Ok(()));
        let contents: Vec<&[u8]> = msgs.iter().map(Message::content).collect();
        let small = format!("small {round}").into_bytes();
        let last = vec![round; 20_000];
        assert_eq!(contents, [&big[..], &small[..], &last[..]], "round {round}");
    }
}

struct ZeroWriter;
impl std::io::Write for ZeroWriter {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Ok(0)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn connections_count_requests_in_flight_both_ways() {
    let mut client = Connection::client();
    let mut server = Connection::server();
    for i in 0..3 {
        client
            .send(Message::json(&json!({"i": i})).unwrap(), Instant::now())
            .unwrap();
    }
    assert_eq!(client.in_flight(), 3);
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_to(&mut wire, Instant::now()).unwrap();
    }
    server.read_from(&mut &wire[..], Instant::now()).unwrap();
    let mut got = Vec::new();
    while let Ok(Event::Message(m)) = server.next_event() {
        got.push(
            m.json_content::<serde_json::Value>().unwrap()["i"]
                .as_i64()
                .unwrap(),
        );
    }
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(server.in_flight(), 3);
    server
        .send(Message::json(&json!({"ok": true})).unwrap(), Instant::now())
        .unwrap();
    assert_eq!(server.in_flight(), 2);
}

// ---------------------------------------------------------------------------------------
// Property tests.

fn arb_json_leaf() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        (-1e12f64..1e12).prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ]
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    arb_json_leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_message() -> impl Strategy<Value = Message> {
    let extras = prop::collection::vec(("[a-z\u{e9}\u{2028}\"\\\\/ -]{1,8}", arb_json()), 0..3);
    let byteorder = prop_oneof![Just(ByteOrder::Little), Just(ByteOrder::Big)];
    let body = prop_oneof![
        arb_json().prop_map(|v| Message::json(&v).unwrap()),
        (
            "[a-z/\u{1}-\u{7f}\u{263a}]{0,40}",
            prop::collection::vec(any::<u8>(), 0..65536)
        )
            .prop_map(|(ct, c)| Message::binary(ct, c)),
    ];
    (body, byteorder, extras).prop_map(|(m, bo, extras)| {
        extras
            .into_iter()
            .fold(m.with_byteorder(bo), |m, (k, v)| m.with_extra(k, v))
    })
}

/// Random cut points for a stream of `len` bytes: empty pieces, single bytes, anything.
fn cuts(len: usize, seeds: &[usize]) -> Vec<usize> {
    let mut c: Vec<usize> = seeds.iter().map(|s| s % (len + 1)).collect();
    c.sort_unstable();
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_messages_in_random_chunkings_decode_to_what_was_encoded(
        msgs in prop::collection::vec(arb_message(), 1..5),
        seeds in prop::collection::vec(any::<usize>(), 0..40),
        chunk in 1usize..300,
    ) {
        let mut wire = Vec::new();
        for m in &msgs {
            encode_into(m, &mut wire).unwrap();
        }
        // Random cut points (with repeats: empty chunks).
        let mut pieces = Vec::new();
        let mut last = 0;
        for c in cuts(wire.len(), &seeds) {
            pieces.push(&wire[last..c]);
            last = c;
        }
        pieces.push(&wire[last..]);
        prop_assert_eq!(decode_pieces(&pieces), (msgs.clone(), Ok(())));
        let ones: Vec<&[u8]> = wire.chunks(1).collect();
        prop_assert_eq!(decode_pieces(&ones), (msgs.clone(), Ok(())));
        prop_assert_eq!(decode_pieces(&[&wire]), (msgs.clone(), Ok(())));
        prop_assert_eq!(receive_pieces(&pieces, &Limits::default()), (msgs.clone(), Ok(())));
        prop_assert_eq!(read_buf_chunks(&wire, chunk, &Limits::default()), (msgs.clone(), Ok(())));
        // Decoding then re-encoding gives back exactly the canonical bytes.
        let (decoded, _) = decode_pieces(&[&wire]);
        let mut again = Vec::new();
        for m in &decoded {
            encode_into(m, &mut again).unwrap();
        }
        prop_assert_eq!(again, wire);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_the_verdict_ignores_splits(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        cut in any::<usize>(),
    ) {
        let whole = receive_pieces(&[&bytes], &Limits::default());
        let cut = cut % (bytes.len() + 1);
        prop_assert_eq!(receive_pieces(&[&bytes[..cut], &bytes[cut..]], &Limits::default()), whole.clone());
        let ones: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(decode_pieces(&ones), whole);
    }

    #[test]
    fn plausible_headers_never_panic(
        prefix in "[ {}\\[\\],:\"a-z0-9.eE+-]{0,12}",
        key in prop_oneof![Just("content-length"), Just("byteorder"), Just("content-type"), Just("x")],
        value in "[ {}\\[\\],:\"a-z0-9.eE+-]{0,24}",
    ) {
        let header = format!("{{\"byteorder\": \"big\", \"content-type\": \"x\", \"content-encoding\": \"binary\", {prefix}\"{key}\": {value}}}");
        let wire = frame(&header, b"0123456789");
        let whole = receive_pieces(&[&wire], &Limits::default());
        let ones: Vec<&[u8]> = wire.chunks(1).collect();
        prop_assert_eq!(decode_pieces(&ones), whole);
    }
}

// ---------------------------------------------------------------------------------------
// Deadlines, output cap and send limits of the connection machine.

/// Feeds `bytes` through the one way in at `now`.
fn feed(conn: &mut Connection, bytes: &[u8], now: Instant) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let buf = conn.read_buf();
        let n = buf.len().min(rest.len());
        buf[..n].copy_from_slice(&rest[..n]);
        conn.commit(n, now).unwrap();
        rest = &rest[n..];
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn timed_server(t0: Instant) -> Connection {
    Connection::server().with_deadlines(
        Deadlines {
            header: Some(secs(10)),
            idle: Some(secs(60)),
            write: Some(secs(30)),
        },
        t0,
    )
}

#[test]
fn without_deadlines_no_timer_runs() {
    let t0 = Instant::now();
    let mut conn = Connection::server();
    assert_eq!(conn.poll_timeout(), None);
    feed(&mut conn, &SEARCH_MORPHEUS[..5], t0);
    conn.send(Message::binary("x/y", vec![1]), t0).unwrap();
    assert_eq!(conn.poll_timeout(), None);
    assert_eq!(conn.handle_timeout(t0 + secs(1_000_000)), None);
    assert!(conn.wants_read() && conn.wants_write());
}

#[test]
fn idle_deadline_fires_at_its_instant_and_activity_moves_it() {
    let t0 = Instant::now();
    let mut conn = timed_server(t0);
    assert_eq!(conn.poll_timeout(), Some(t0 + secs(60)));
    // A whole message at t0+5 is activity: the idle clock restarts from there.
    feed(&mut conn, SEARCH_MORPHEUS, t0 + secs(5));
    assert!(matches!(conn.next_event(), Ok(Event::Message(_))));
    assert_eq!(conn.next_event(), Ok(Event::NeedData));
    assert_eq!(conn.poll_timeout(), Some(t0 + secs(65)));
    assert_eq!(conn.handle_timeout(t0 + secs(60)), None);
    assert_eq!(
        conn.handle_timeout(t0 + secs(65) - Duration::from_nanos(1)),
        None
    );
    assert!(conn.wants_read());
    assert_eq!(conn.handle_timeout(t0 + secs(65)), Some(Timeout::Idle));
    assert_eq!(conn.timed_out(), Some(Timeout::Idle));
    // Finished: nothing wanted, no timer, nothing accepted.
    assert!(!conn.wants_read() && !conn.wants_write() && !conn.wants_shutdown());
    assert_eq!(conn.poll_timeout(), None);
    assert_eq!(conn.handle_timeout(t0 + secs(1000)), None);
    assert_eq!(
        conn.send(Message::binary("x/y", vec![]), t0 + secs(66)),
        Err(LocalError::SendAfterClose)
    );
}

#[test]
fn header_deadline_runs_from_the_first_byte_until_the_message_is_complete() {
    let t0 = Instant::now();
    let mut conn = timed_server(t0);
    feed(&mut conn, &SEARCH_MORPHEUS[..1], t0 + secs(2));
    assert_eq!(conn.next_event(), Ok(Event::NeedData));
    assert!(conn.message_in_progress());
    assert_eq!(conn.poll_timeout(), Some(t0 + secs(12)));
    // More bytes of the same message do not move it.
    feed(&mut conn, &SEARCH_MORPHEUS[1..50], t0 + secs(9));
    assert_eq!(conn.next_event(), Ok(Event::NeedData));
    assert_eq!(conn.poll_timeout(), Some(t0 + secs(12)));
    assert_eq!(conn.handle_timeout(t0 + secs(11)), None);
    assert_eq!(conn.handle_timeout(t0 + secs(12)), Some(Timeout::Header));
    assert!(!conn.wants_read());
    assert_eq!(conn.next_event(), Ok(Event::NeedData));

    // Completed in time: the clock stops, idle takes over from the last byte.
    let mut conn = timed_server(t0);
    feed(&mut conn, &SEARCH_MORPHEUS[..50], t0 + secs(2));
    assert_eq!(conn.next_event(), Ok(Event::NeedData));
    feed(&mut conn, &SEARCH_MORPHEUS[50..], t0 + secs(11));
    assert!(matches!(conn.next_event(), Ok(Event::Message(_))));
    assert_eq!(conn.poll_timeout(), Some(t0 + secs(71)));
}

#[test]
fn a_pipelined_message_starts_its_own_header_clock() {
    let t0 = Instant::now();
    let mut conn = timed_server(t0);
    let mut wire = SEARCH_MORPHEUS.to_vec();
    wire.extend_from_slice(&SEARCH_DOG_BIG[..10]);
    feed(&mut conn, &SEARCH_MORPHEUS[..3], t0);
    assert_eq!(conn.next_event(), Ok(Event::NeedData));
    feed(&mut conn, &wire[3..], t0 + secs(8));
    assert!(matches!(conn.next_event(), Ok(Event::Message(_))));
    // The second message began with the bytes that arrived at t0+8.
    assert_eq!(conn.next_event(), Ok(Event::NeedData));
    assert_eq!(conn.poll_timeout(), Some(t0 + secs(18)));
}

#[test]
fn write_deadline_runs_while_output_is_pending_from_the_last_progress() {
    let t0 = Instant::now();
    let mut conn = timed_server(t0);
    feed(&mut conn, SEARCH_MORPHEUS, t0);
    assert!(matches!(conn.next_event(), Ok(Event::Message(_))));
    conn.send(Message::binary("x/y", vec![7; 1000]), t0 + secs(1))
        .unwrap();
    assert!(conn.wants_write());
    assert_eq!(conn.poll_timeout(), Some(t0 + secs(31)));
    conn.consume(10, t0 + secs(20));
    assert_eq!(conn.poll_timeout(), Some(t0 + secs(50)));
    // A consume of nothing is no progress.
    conn.consume(0, t0 + secs(40));
    assert_eq!(conn.poll_timeout(), Some(t0 + secs(50)));
    assert_eq!(conn.handle_timeout(t0 + secs(49)), None);
    assert_eq!(conn.handle_timeout(t0 + secs(50)), Some(Timeout::Write));
    assert!(!conn.wants_write() && !conn.wants_read());

    // All sent: idle from the last progress.
    let mut conn = timed_server(t0);
    conn.send(Message::binary("x/y", vec![7; 10]), t0 + secs(1))
        .unwrap();
    let n = conn.pending_len();
    conn.consume(n, t0 + secs(3));
    assert_eq!(conn.poll_timeout(), Some(t0 + secs(63)));
}

#[test]
fn the_earliest_deadline_wins() {
    let t0 = Instant::now();
    let mut conn = timed_server(t0);
    conn.send(Message::binary("x/y", vec![1]), t0).unwrap();
    feed(&mut conn, &SEARCH_MORPHEUS[..4], t0 + secs(25));
    assert_eq!(conn.next_event(), Ok(Event::NeedData));
    // write at t0+30, header at t0+35.
    assert_eq!(conn.poll_timeout(), Some(t0 + secs(30)));
    assert_eq!(conn.handle_timeout(t0 + secs(36)), Some(Timeout::Write));
}

#[test]
fn the_output_cap_holds_reading_back_and_suspends_the_header_clock() {
    let t0 = Instant::now();
    let mut conn = timed_server(t0).with_output_cap(100);
    // Two requests and part of a third arrive together.
    let mut wire = SEARCH_MORPHEUS.to_vec();
    wire.extend_from_slice(SEARCH_DOG_BIG);
    wire.extend_from_slice(&SEARCH_MORPHEUS[..20]);
    feed(&mut conn, &wire, t0);
    assert!(matches!(conn.next_event(), Ok(Event::Message(_))));
    conn.send(Message::binary("x/y", vec![0; 200]), t0 + secs(1))
        .unwrap();
    assert!(conn.pending_len() >= 100);
    // At the cap: no reading, buffered requests stay buffered, only the write clock runs.
    assert!(!conn.wants_read());
    assert_eq!(conn.next_event(), Ok(Event::NeedData));
    assert_eq!(conn.in_flight(), 0);
    assert_eq!(conn.poll_timeout(), Some(t0 + secs(31)));
    assert_eq!(conn.handle_timeout(t0 + secs(20)), None);
    // Drained below the cap at t0+25: reading resumes, the buffered request comes out.
    let n = conn.pending_len() - 50;
    conn.consume(n, t0 + secs(25));
    assert!(conn.wants_read());
    assert!(matches!(conn.next_event(), Ok(Event::Message(_))));
    assert_eq!(conn.next_event(), Ok(Event::NeedData));
    assert!(conn.message_in_progress());
    // The partial third request's header clock restarted when the pause ended.
    let n = conn.pending_len();
    conn.consume(n, t0 + secs(26));
    assert_eq!(conn.poll_timeout(), Some(t0 + secs(35)));
    assert_eq!(conn.handle_timeout(t0 + secs(34)), None);
    assert_eq!(conn.handle_timeout(t0 + secs(35)), Some(Timeout::Header));
}

#[test]
fn send_refuses_content_over_the_limit_and_queues_nothing() {
    let limits = Limits {
        max_content_len: 10,
        ..Limits::default()
    };
    let now = Instant::now();
    let mut conn = Connection::new(Role::Server, limits);
    assert_eq!(
        conn.send(Message::binary("x/y", vec![0; 11]), now),
        Err(LocalError::ContentOverLimit { size: 11, max: 10 })
    );
    assert_eq!(conn.pending_len(), 0);
    assert!(!conn.wants_write());
    conn.send(Message::binary("x/y", vec![0; 10]), now).unwrap();
    assert_eq!(
        conn.pending_len(),
        Message::binary("x/y", vec![0; 10]).encoded_len().unwrap()
    );
    // A client's limits bound what it accepts, not what it asks.
    let mut client = Connection::new(
        Role::Client,
        Limits {
            max_content_len: 10,
            ..Limits::default()
        },
    );
    assert_eq!(
        client.send(Message::binary("x/y", vec![0; 11]), now),
        Ok(())
    );
}

#[test]
fn close_and_end_of_stream_say_what_the_transport_should_wait_for() {
    let now = Instant::now();
    let mut server = Connection::server();
    server.send(Message::binary("x/y", vec![1]), now).unwrap();
    server.close();
    assert!(!server.wants_read() && server.wants_write() && !server.wants_shutdown());
    let n = server.pending_len();
    server.consume(n, now);
    assert!(server.wants_shutdown());

    // A client that closed keeps reading while answers are owed.
    let mut client = Connection::client();
    client.send(Message::binary("x/y", vec![1]), now).unwrap();
    client.close();
    assert!(client.wants_read());
    feed(&mut client, BINARY_RESPONSE, now);
    assert!(matches!(client.next_event(), Ok(Event::Message(_))));
    assert!(!client.wants_read());

    let mut conn = Connection::server();
    conn.read_from(&mut &b""[..], now).unwrap();
    assert!(!conn.wants_read());
    assert_eq!(conn.next_event(), Ok(Event::End));
    assert_eq!(
        conn.commit(1, now),
        Err(LocalError::ReceiveAfterEof),
        "bytes after the end of stream are misuse"
    );
}

/// Feeds `bytes` through `conn`'s one way in while it lends room; returns the messages.
fn feed_conn(conn: &mut Connection, mut bytes: &[u8], now: Instant) -> Vec<Message> {
    let mut out = Vec::new();
    loop {
        while let Ok(Event::Message(m)) = conn.next_event() {
            out.push(m);
        }
        if bytes.is_empty() {
            return out;
        }
        let buf = conn.read_buf();
        let n = buf.len().min(bytes.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        conn.commit(n, now).expect("within the slice");
        bytes = &bytes[n..];
    }
}

#[test]
fn the_allocation_allowance_holds_content_back_until_raised() {
    let now = Instant::now();
    let content = vec![7u8; 200 * 1024];
    let wire = [
        encode(&Message::binary("x/y", b"small".to_vec())).expect("encodable"),
        encode(&Message::binary("x/y", content.clone())).expect("encodable"),
    ]
    .concat();
    let mut conn = Connection::server().with_read_buf_size(4096);
    conn.set_alloc_allowance(0);
    // Even a small content is copied out of the staging buffer: it waits for an allowance.
    let got = feed_conn(&mut conn, &wire[..4096], now);
    assert!(got.is_empty());
    let r = conn.receiving().expect("the first content is known");
    assert_eq!((r.announced, r.to_allocate), (5, 5));
    assert!(
        conn.read_alloc_need() > 0,
        "staging is full: a read would grow it"
    );
    conn.set_alloc_allowance(5);
    let got = feed_conn(&mut conn, &[], now);
    assert_eq!(got.len(), 1);
    // The second: 200 KiB announced, nothing allocated until allowed.
    let r = conn.receiving().expect("the second content is known");
    assert_eq!((r.announced, r.to_allocate), (content.len(), content.len()));
    let before = conn.allocated();
    conn.set_alloc_allowance(0);
    assert_eq!(conn.next_event(), Ok(Event::NeedData));
    assert_eq!(
        conn.allocated(),
        before,
        "nothing allocated past the allowance"
    );
    conn.set_alloc_allowance(r.to_allocate);
    let got = feed_conn(&mut conn, &wire[4096..], now);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].content(), &content[..]);
}

#[test]
fn a_read_buffer_can_be_taken_while_idle_and_given_back() {
    let now = Instant::now();
    let mut conn = Connection::server().with_read_buf_size(4096);
    let wire = encode(&Message::binary("x/y", b"one".to_vec())).expect("encodable");
    assert_eq!(feed_conn(&mut conn, &wire, now).len(), 1);
    let buf = conn
        .take_read_buffer()
        .expect("idle: the staging buffer comes out");
    assert!(buf.capacity() >= 4096);
    assert_eq!(conn.read_alloc_need(), 4096);
    assert!(conn.give_read_buffer(buf).is_none(), "taken");
    assert_eq!(conn.read_alloc_need(), 0);
    assert!(
        conn.give_read_buffer(vec![0; 64]).is_some(),
        "it has one already"
    );
    assert_eq!(feed_conn(&mut conn, &wire, now).len(), 1);
}

/// A content of `len` bytes that tells its positions apart (so a piece out of place shows).
fn patterned(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
        .collect()
}

/// `wire` through a connection by `door` in reads of `chunk` bytes: 0 `read_buf` +
/// `commit`, 1 `receive`, 2 `receive_piece` of buffers sized by `Receiving::next_piece`
/// (and `receive` for what it hands back), 3 `read_spare_from`, 4 `read_buf` and
/// `read_spare_from` in turns. After every step, the memory rule: what the
/// connection holds is what it received plus a constant, whatever was announced.
fn through_door(wire: &[u8], chunk: usize, door: u8) -> Vec<Message> {
    let now = Instant::now();
    let mut conn = Connection::server();
    let mut out = Vec::new();
    let mut rest = wire;
    let staging = crate::decoder::DEFAULT_READ_BUF;
    let mut turn = 0u32;
    loop {
        while let Ok(Event::Message(m)) = conn.next_event() {
            out.push(m);
        }
        if rest.is_empty() {
            return out;
        }
        match door {
            0 => {
                let buf = conn.read_buf();
                let n = buf.len().min(chunk).min(rest.len());
                buf[..n].copy_from_slice(&rest[..n]);
                conn.commit(n, now).unwrap();
                rest = &rest[n..];
            }
            1 => {
                let mut input = &rest[..chunk.min(rest.len())];
                let n = conn.receive(&mut input, now).unwrap();
                assert!(n > 0, "receive takes something");
                rest = &rest[n..];
            }
            2 => {
                let size = conn
                    .receiving()
                    .map_or(0, |r| r.next_piece.min(r.announced - r.received));
                if size > 0 && conn.read_alloc_need() == 0 {
                    // A buffer of the transport's own, filled by reads of `chunk` bytes.
                    let mut piece = Vec::with_capacity(size);
                    while piece.len() < size && !rest.is_empty() {
                        let n = chunk.min(size - piece.len()).min(rest.len());
                        piece.extend_from_slice(&rest[..n]);
                        rest = &rest[n..];
                    }
                    if let Some(back) = conn.receive_piece(piece, now).unwrap() {
                        let mut input = &back[..];
                        while !input.is_empty() {
                            conn.receive(&mut input, now).unwrap();
                        }
                    }
                } else {
                    let mut input = &rest[..chunk.min(rest.len())];
                    let n = conn.receive(&mut input, now).unwrap();
                    rest = &rest[n..];
                }
            }
            3 => {
                let mut input = &rest[..chunk.min(rest.len())];
                let n = conn.read_spare_from(&mut input, now).unwrap();
                assert!(n > 0, "read_spare_from takes something");
                rest = &rest[n..];
            }
            _ => {
                // `read_buf` (a content's piece lent zeroed) and `read_spare_from` (the
                // same piece appended to) in turns, a lent slice sometimes not committed.
                turn += 1;
                if turn % 3 == 0 {
                    let buf = conn.read_buf();
                    let n = buf.len().min(chunk).min(rest.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    conn.commit(n, now).unwrap();
                    rest = &rest[n..];
                } else {
                    if turn % 3 == 1 {
                        let _ = conn.read_buf();
                    }
                    let mut input = &rest[..chunk.min(rest.len())];
                    rest = &rest[conn.read_spare_from(&mut input, now).unwrap()..];
                }
            }
        }
        let received = wire.len() - rest.len();
        assert!(
            conn.allocated() <= received + 1024 * 1024 + 2 * staging,
            "door {door}, reads of {chunk}: holds {} for {received} received",
            conn.allocated()
        );
    }
}

#[test]
fn large_contents_cross_piece_boundaries_through_every_door() {
    // Contents that end just before, at and just after piece boundaries (64 KiB, 128 KiB,
    // 256 KiB...) and one of several 1 MiB pieces; each message followed by a small one,
    // so that a piece never swallows the next message.
    let small = encode(&Message::binary("x/y", b"next".to_vec())).unwrap();
    for len in [
        64 * 1024 - 1,
        64 * 1024,
        64 * 1024 + 1,
        128 * 1024 + 7,
        256 * 1024,
        3 * 1024 * 1024 + 12_345,
    ] {
        let content = patterned(len);
        let message = Message::binary("x/y", content.clone());
        let mut wire = encode(&message).unwrap();
        wire.extend_from_slice(&small);
        for door in 0..5u8 {
            for chunk in [4096, 10_007, 65_536, 200_000] {
                if len > 1024 * 1024 && chunk < 65_536 {
                    continue;
                }
                let got = through_door(&wire, chunk, door);
                assert_eq!(got.len(), 2, "len {len}, door {door}, reads of {chunk}");
                let m = &got[0];
                assert_eq!(m.content_len(), len);
                let joined: Vec<u8> = m.content_chunks().iter().flatten().copied().collect();
                assert!(
                    joined == content,
                    "len {len}, door {door}, reads of {chunk}"
                );
                if len > 128 * 1024 {
                    assert!(
                        m.content_chunks().len() > 1,
                        "len {len}, door {door}: received in pieces"
                    );
                }
                // The pieces are the same message as the content held whole, and sent
                // as they are it is the same bytes.
                assert_eq!(m, &message);
                assert!(encode(m).unwrap() == wire[..wire.len() - small.len()]);
                assert_eq!(got[1].content(), b"next");
            }
        }
        // Joined on demand: `content` once, `into_content` by value.
        let got = through_door(&wire, 65_536, 0);
        let m = got[0].clone();
        assert!(m.content() == &content[..]);
        assert_eq!(m.content_chunks().len(), 1, "joined, and kept joined");
        assert!(got[0].clone().into_content() == content);
        assert!(got[0].clone().into_parts().1 == content);
    }
}

#[test]
fn pieces_are_never_regrown_and_memory_is_received_plus_a_constant() {
    let len = 16 * 1024 * 1024;
    let wire = encode(&Message::binary("x/y", vec![3u8; len])).unwrap();
    let mut conn = Connection::server();
    let now = Instant::now();
    let mut fed = 0;
    let mut pieces_seen = 0;
    let mut last_allocated = 0;
    while fed < wire.len() {
        let buf = conn.read_buf();
        let n = buf.len().min(wire.len() - fed);
        buf[..n].copy_from_slice(&wire[fed..fed + n]);
        conn.commit(n, now).unwrap();
        fed += n;
        let held = conn.allocated();
        // Allocation only ever grows by whole new pieces of at most 1 MiB.
        assert!(held >= last_allocated, "nothing was given back mid-message");
        if held > last_allocated {
            pieces_seen += 1;
            assert!(
                held - last_allocated <= 1024 * 1024 + 64 * 1024,
                "grew by {} at once",
                held - last_allocated
            );
        }
        last_allocated = held;
        assert!(held <= fed + 1024 * 1024 + 64 * 1024, "{held} for {fed}");
        if fed < wire.len() {
            assert_eq!(conn.next_event(), Ok(Event::NeedData));
        }
    }
    let Ok(Event::Message(m)) = conn.next_event() else {
        panic!("the message")
    };
    assert!(pieces_seen >= 16, "{pieces_seen} pieces");
    assert_eq!(m.content_len(), len);
    assert!(m.content_chunks().iter().all(|c| c.len() <= 1024 * 1024));
    assert!(m.content_chunks().iter().flatten().all(|&b| b == 3));
}

#[test]
fn json_content_received_in_pieces_is_checked_and_joined() {
    let text = format!("[{}0]", "1234567890,".repeat(40_000));
    let m = Message::from_parts(
        "text/json".into(),
        "utf-8".into(),
        text.clone().into_bytes(),
    );
    let wire = encode(&m).unwrap();
    for door in 0..3u8 {
        let got = through_door(&wire, 65_536, door);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].content_chunks().len(), 1, "joined to be checked");
        let v: serde_json::Value = got[0].json_content().unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(40_001));
    }
    // Invalid JSON in the last piece is found, whatever the door.
    let mut bad = wire.clone();
    let last = bad.len() - 1;
    bad[last] = b'}';
    let mut conn = Connection::server();
    let mut input = &bad[..];
    let now = Instant::now();
    let verdict = loop {
        match conn.next_event() {
            Ok(Event::NeedData) => {
                conn.receive(&mut input, now).unwrap();
            }
            other => break other,
        }
    };
    assert!(
        matches!(verdict, Err(PeerError::InvalidJson { .. })),
        "{verdict:?}"
    );
}

#[test]
fn receive_piece_takes_only_content_still_to_come() {
    let now = Instant::now();
    let content = patterned(300_000);
    let wire = encode(&Message::binary("x/y", content.clone())).unwrap();
    let head = wire.len() - content.len();
    let mut conn = Connection::server();
    // Before any header: handed back untouched.
    let back = conn.receive_piece(wire[..head].to_vec(), now).unwrap();
    assert_eq!(back.as_deref(), Some(&wire[..head]));
    let mut input = &wire[..head];
    while !input.is_empty() {
        conn.receive(&mut input, now).unwrap();
    }
    assert_eq!(conn.next_event(), Ok(Event::NeedData));
    let r = conn.receiving().expect("the content is arriving");
    assert_eq!(
        (r.announced, r.received, r.next_piece),
        (300_000, 0, 64 * 1024)
    );
    // More than is still to come: handed back.
    let too_long = vec![0u8; 300_001];
    assert_eq!(
        conn.receive_piece(too_long, now).unwrap().map(|v| v.len()),
        Some(300_001)
    );
    // Within it: taken whole, no copy, then the rest.
    assert_eq!(
        conn.receive_piece(content[..100_000].to_vec(), now),
        Ok(None)
    );
    assert_eq!(conn.receiving().map(|r| r.received), Some(100_000));
    assert_eq!(conn.position(), (head + 100_000) as u64);
    assert_eq!(
        conn.receive_piece(content[100_000..].to_vec(), now),
        Ok(None)
    );
    let Ok(Event::Message(m)) = conn.next_event() else {
        panic!("complete")
    };
    assert!(m.content() == &content[..]);
    // After the end of stream, bytes are refused.
    conn.receive_eof();
    assert_eq!(
        conn.receive_piece(vec![1], now),
        Err(LocalError::ReceiveAfterEof)
    );
    // A cut stream counts the bytes of the pieces taken.
    let mut conn = Connection::server();
    let mut input = &wire[..head];
    while !input.is_empty() {
        conn.receive(&mut input, now).unwrap();
    }
    assert_eq!(conn.next_event(), Ok(Event::NeedData));
    assert_eq!(conn.receive_piece(content[..1000].to_vec(), now), Ok(None));
    conn.receive_eof();
    assert_eq!(
        conn.next_event(),
        Err(PeerError::UnexpectedEof {
            phase: Phase::Content,
            missing: 299_000
        })
    );
}

#[test]
fn messages_compare_by_bytes_however_cut() {
    let content = patterned(200_000);
    let whole = Message::binary("x/y", content.clone());
    let wire = encode(&whole).unwrap();
    let pieces = through_door(&wire, 65_536, 2);
    assert!(pieces[0].content_chunks().len() > 1);
    assert_eq!(pieces[0], whole);
    assert_eq!(format!("{:?}", pieces[0]), format!("{whole:?}"));
    let mut other = content.clone();
    other[150_000] ^= 1;
    assert_ne!(pieces[0], Message::binary("x/y", other));
    assert_ne!(
        pieces[0],
        Message::binary("x/y", content[..199_999].to_vec())
    );
}

/// A socket as `read_spare_from` sees it: at most `burst` bytes per wake-up, then
/// `WouldBlock`; the spare capacity lent is checked never to grow.
struct Bursts<'a> {
    data: &'a [u8],
    burst: usize,
    lent_capacities: Vec<usize>,
}

impl std::io::Read for Bursts<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.burst).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

impl ReadSpare for Bursts<'_> {
    fn read_spare(&mut self, buf: &mut Vec<u8>, limit: usize) -> std::io::Result<usize> {
        assert!(
            limit > 0 && limit <= buf.capacity() - buf.len(),
            "within the spare room"
        );
        self.lent_capacities.push(buf.capacity());
        let n = limit.min(self.burst).min(self.data.len());
        buf.extend_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        if n < self.burst {
            // Drained: the bytes count, the `WouldBlock` says no more for now.
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

#[test]
fn read_spare_from_fills_pieces_never_grown_with_memory_received_plus_a_constant() {
    let len = 16 * 1024 * 1024;
    let content = patterned(len);
    let wire = encode(&Message::binary("x/y", content.clone())).unwrap();
    for burst in [65_536 + 3, 300_000] {
        let mut conn = Connection::server();
        let now = Instant::now();
        let mut socket = Bursts {
            data: &wire,
            burst,
            lent_capacities: Vec::new(),
        };
        let mut last_allocated = 0;
        let message = loop {
            match conn.next_event().unwrap() {
                Event::Message(m) => break m,
                Event::NeedData => {}
                Event::End => panic!("ended early"),
            }
            let n = conn.read_spare_from(&mut socket, now).unwrap();
            assert!(n > 0 && n <= burst);
            let received = wire.len() - socket.data.len();
            let held = conn.allocated();
            assert!(held >= last_allocated, "nothing given back mid-message");
            assert!(
                held - last_allocated <= 1024 * 1024,
                "grew by {} at once",
                held - last_allocated
            );
            assert!(
                held <= received + 1024 * 1024 + 64 * 1024,
                "{held} held for {received} received"
            );
            last_allocated = held;
        };
        assert!(
            socket.lent_capacities.len() > 16,
            "the content went through read_spare"
        );
        assert!(message.content_chunks().len() >= 16);
        assert!(message
            .content_chunks()
            .iter()
            .all(|c| c.len() <= 1024 * 1024));
        let joined: Vec<u8> = message.content_chunks().iter().flatten().copied().collect();
        assert!(joined == content, "burst {burst}");
        assert_eq!(conn.next_event(), Ok(Event::NeedData));
        // The end of the stream between messages, through the same door.
        assert_eq!(conn.read_spare_from(&mut socket, now).unwrap(), 0);
        assert_eq!(conn.next_event(), Ok(Event::End));
    }
}

/// A reader that breaks the `ReadSpare` contract: appends `extra` bytes past the limit,
/// or grows the buffer.
struct Unruly {
    extra: usize,
    grow: bool,
}

impl std::io::Read for Unruly {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Ok(0)
    }
}

impl ReadSpare for Unruly {
    fn read_spare(&mut self, buf: &mut Vec<u8>, limit: usize) -> std::io::Result<usize> {
        if self.grow {
            buf.reserve(4 * limit);
        }
        buf.resize(buf.len() + limit + self.extra, 1);
        Ok(limit + self.extra)
    }
}

#[test]
fn read_spare_from_refuses_more_than_it_lent_and_counts_a_grown_piece() {
    let wire = encode(&Message::binary("x/y", vec![1u8; 1024 * 1024])).unwrap();
    let now = Instant::now();
    let header_end = wire.len() - 1024 * 1024;
    // Past the limit: the stream is lost, said as a local error, nothing taken.
    let mut conn = Connection::server();
    conn.receive(&mut &wire[..header_end], now).unwrap();
    assert_eq!(conn.next_event(), Ok(Event::NeedData));
    assert!(conn.reads_into_spare());
    let before = conn.position();
    let e = conn
        .read_spare_from(
            &mut Unruly {
                extra: 1,
                grow: false,
            },
            now,
        )
        .expect_err("more than lent");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(conn.position(), before);
    // Grown: the bytes are within the limit and taken; the memory shows in `allocated`.
    let mut conn = Connection::server();
    conn.receive(&mut &wire[..header_end], now).unwrap();
    assert_eq!(conn.next_event(), Ok(Event::NeedData));
    let n = conn
        .read_spare_from(
            &mut Unruly {
                extra: 0,
                grow: true,
            },
            now,
        )
        .unwrap();
    assert!(n >= 64 * 1024);
    assert!(conn.allocated() >= 4 * n, "the grown piece is counted");
}

/// Feeds `wire` through `read_buf` + `commit` in reads of at most `chunk` bytes, with the
/// allocation allowance a budgeted server gives: what [`Decoder::receiving`] says is left to
/// allocate, set again before every read. Returns the messages, dropped as soon as they
/// come unless `keep`.
fn budgeted_reads(dec: &mut Decoder, wire: &[u8], chunk: usize, keep: bool) -> Vec<Message> {
    let mut out = Vec::new();
    let mut rest = wire;
    let mut stalled = 0;
    loop {
        while let Event::Message(m) = dec.next_event().unwrap() {
            if keep {
                out.push(m);
            } else {
                out.push(Message::binary(
                    "x/y",
                    m.content_len().to_be_bytes().to_vec(),
                ));
            }
        }
        if rest.is_empty() {
            return out;
        }
        let allowance = match dec.receiving() {
            Some(r) => r.to_allocate + dec.read_alloc_need(),
            None => usize::MAX,
        };
        dec.set_alloc_allowance(allowance);
        let buf = dec.read_buf();
        let n = buf.len().min(chunk).min(rest.len());
        buf[..n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        dec.commit(n).unwrap();
        stalled = if n == 0 { stalled + 1 } else { 0 };
        assert!(stalled < 3, "stalled with {} bytes left", rest.len());
    }
}

#[test]
fn pieces_of_dropped_messages_are_reused_within_the_allowance() {
    for (size, chunk) in [
        (16 << 20, 64 * 1024),
        ((16 << 20) - 3961, 4096),
        ((16 << 20) - 3961, usize::MAX),
        ((5 << 20) + 7, 100_000),
    ] {
        let wire = encode(&Message::binary("x/y", vec![3; size])).unwrap();
        let mut dec = Decoder::new(Limits::default())
            .with_read_buf_size(4096)
            .with_piece_reuse(true);
        let first = budgeted_reads(&mut dec, &wire, chunk, false);
        assert_eq!(first.len(), 1);
        let kept = dec.allocated();
        let full = (size - (1 << 20)) >> 20; // full-size pieces after the first MiB
        assert!(kept >= full << 20, "{size}: {kept} kept");
        // The next message is received into them: nothing more is allocated, and its
        // content is the one sent.
        let again = budgeted_reads(&mut dec, &wire, chunk, true);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].content_len(), size);
        assert!(again[0].content_chunks().iter().flatten().all(|&b| b == 3));
    }
}

#[test]
fn reused_pieces_serve_messages_of_other_sizes() {
    let mut dec = Decoder::new(Limits::default())
        .with_read_buf_size(4096)
        .with_piece_reuse(true);
    for size in [
        16 << 20,
        (16 << 20) - 3961,
        3 << 20,
        (12 << 20) + 5,
        1 << 20,
    ] {
        let wire = encode(&Message::binary("x/y", vec![3; size])).unwrap();
        let got = budgeted_reads(&mut dec, &wire, usize::MAX, false);
        assert_eq!(got.len(), 1, "{size}");
    }
}

#[test]
fn piece_reuse_gives_the_same_messages_whatever_the_reads_and_whoever_holds_them() {
    // Contents that differ byte by byte, so that a piece put back in the wrong place
    // shows.
    let sizes = [
        (3 << 20) + 5,
        1 << 20,
        (2 << 20) - 1,
        100,
        4 << 20,
        (1 << 20) + 1,
    ];
    let messages: Vec<Message> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let content: Vec<u8> = (0..n).map(|j| (j * 31 + i * 7) as u8).collect();
            Message::binary("x/y", content)
        })
        .collect();
    let mut wire = Vec::new();
    for m in &messages {
        wire.extend(encode(m).unwrap());
    }
    let mut seed = 0x2545_f491_u64;
    for round in 0..12 {
        let mut dec = Decoder::new(Limits::default())
            .with_read_buf_size(4096)
            .with_piece_reuse(round % 3 != 2);
        // Reads of 1 byte to 300 KB; every other round keeps the messages (nothing comes
        // back), the others drop each as it comes.
        let keep = round % 2 == 1;
        let mut held = Vec::new();
        let mut rest = &wire[..];
        let mut i = 0;
        while i < messages.len() {
            match dec.next_event().unwrap() {
                Event::Message(m) => {
                    assert_eq!(m, messages[i], "round {round}, message {i}");
                    if keep {
                        held.push(m);
                    }
                    i += 1;
                }
                _ => {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let most = 1 + (seed % 300_000) as usize;
                    let n = if round < 6 {
                        // Lent slices (the socket's door: kept pieces lent whole).
                        let buf = dec.read_buf();
                        let n = buf.len().min(most).min(rest.len());
                        buf[..n].copy_from_slice(&rest[..n]);
                        dec.commit(n).unwrap();
                        n
                    } else {
                        // Bytes in memory (appended to kept pieces).
                        let mut input = &rest[..most.min(rest.len())];
                        dec.receive(&mut input).unwrap()
                    };
                    assert!(n > 0, "round {round}: stalled before message {i}");
                    rest = &rest[n..];
                }
            }
        }
        assert!(rest.is_empty());
    }
}
