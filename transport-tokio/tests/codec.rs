//! The codec gives the core's verdict, whatever the split: random messages and random
//! chunkings fed through `Decoder::decode` with a `BytesMut` grown as tokio-util's
//! `FramedRead` grows it, and every hostile vector of `tests/vectors`, against the core's
//! decoder over the whole buffer at once.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::BytesMut;
use proptest::prelude::*;
use sockmsg_protocol::{encode, ByteOrder, Connection, Event, Limits, Message, PeerError, Role};
use sockmsg_transport_tokio::{Codec, CodecError};
use tokio_util::codec::{Decoder, Encoder};

/// A verdict on a stream: the messages, then how it ended (`None`: cleanly).
type Verdict = (Vec<Message>, Option<PeerError>);

/// The core's verdict: its one stream path in (`Connection::read_from`) over the whole
/// stream, then the end of stream.
fn core_verdict(wire: &[u8], limits: &Limits) -> Verdict {
    let mut conn = Connection::new(Role::Server, limits.clone());
    let mut input = wire;
    let mut messages = Vec::new();
    loop {
        match conn.next_event() {
            Ok(Event::Message(m)) => messages.push(m),
            Ok(Event::NeedData) => {
                // A slice reader: Ok(0) once it is empty, which records the end of stream.
                conn.read_from(&mut input, Instant::now())
                    .expect("reading from a slice");
            }
            Ok(Event::End) => return (messages, None),
            Err(e) => return (messages, Some(e)),
        }
    }
}

fn peer(e: CodecError) -> PeerError {
    match e {
        CodecError::Peer(p) => p,
        other => panic!("expected a peer error, got {other:?}"),
    }
}

/// The codec's verdict, driven as `FramedRead` drives it: before each read the buffer gets
/// `reserve(1)` (8 KiB to start with), a read fills at most the spare capacity, then
/// `decode` runs until it has nothing; at the end, `decode_eof` until it has nothing.
fn codec_verdict(wire: &[u8], limits: &Limits, reads: &[usize]) -> Verdict {
    let mut codec = Codec::new(limits.clone());
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut messages = Vec::new();
    let mut rest = wire;
    let mut sizes = reads.iter().copied().cycle();
    while !rest.is_empty() {
        buf.reserve(1);
        let want = sizes.next().unwrap_or(rest.len()).max(1);
        let n = want.min(rest.len()).min(buf.capacity() - buf.len());
        let (piece, tail) = rest.split_at(n);
        buf.extend_from_slice(piece);
        rest = tail;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => break,
                Err(e) => return (messages, Some(peer(e))),
            }
        }
        // The codec and the read buffer it sized never hold more than a constant beyond
        // what was received (the read buffer may be the next piece of a large content).
        let received = wire.len() - rest.len();
        assert!(
            codec.allocated() + buf.capacity() <= received + 1024 * 1024 + 200 * 1024,
            "codec holds {} bytes and the read buffer {} after {received} received",
            codec.allocated(),
            buf.capacity()
        );
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(m)) => messages.push(m),
            Ok(None) => return (messages, None),
            Err(e) => return (messages, Some(peer(e))),
        }
    }
}

fn arb_message() -> impl Strategy<Value = Message> {
    let json = (
        "[a-z ]{0,12}",
        proptest::collection::vec(any::<i32>(), 0..4),
        "\\PC{0,20}",
    )
        .prop_map(|(action, nums, value)| {
            Message::json(&serde_json::json!({"action": action, "value": value, "n": nums}))
                .expect("serializable")
        });
    let binary = (
        "[a-z]{1,8}/[a-z]{1,8}",
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(t, content)| Message::binary(t, content));
    let large = (1usize..3, any::<u8>()).prop_map(|(k, b)| {
        Message::binary("binary/custom-client-binary-type", vec![b; k * 20_000])
    });
    (
        prop_oneof![4 => json, 4 => binary, 1 => large],
        any::<bool>(),
        proptest::option::of("[a-z]{1,6}"),
    )
        .prop_map(|(m, big, extra)| {
            let m = m.with_byteorder(if big {
                ByteOrder::Big
            } else {
                ByteOrder::Little
            });
            match extra {
                Some(k) => m.with_extra(format!("x-{k}"), 7),
                None => m,
            }
        })
}

/// How a stream is spoilt (or not) after the messages are encoded.
#[derive(Debug, Clone)]
enum Spoil {
    None,
    /// Cut the stream at this fraction (per mille) of its length.
    Cut(u16),
    /// Overwrite one byte at this fraction (per mille) of its length.
    Flip(u16, u8),
}

fn arb_spoil() -> impl Strategy<Value = Spoil> {
    prop_oneof![
        2 => Just(Spoil::None),
        1 => (0u16..1000).prop_map(Spoil::Cut),
        1 => (0u16..1000, any::<u8>()).prop_map(|(at, b)| Spoil::Flip(at, b)),
    ]
}

fn build(messages: &[Message], spoil: &Spoil) -> Vec<u8> {
    let mut wire = Vec::new();
    for m in messages {
        wire.extend(encode(m).expect("encodable"));
    }
    let at = |per_mille: u16| wire.len() * usize::from(per_mille) / 1000;
    match *spoil {
        Spoil::None => {}
        Spoil::Cut(p) => wire.truncate(at(p)),
        Spoil::Flip(p, b) => {
            let i = at(p);
            if let Some(byte) = wire.get_mut(i) {
                *byte = b;
            }
        }
    }
    wire
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn codec_verdict_is_the_cores_whatever_the_split(
        messages in proptest::collection::vec(arb_message(), 0..6),
        spoil in arb_spoil(),
        reads in proptest::collection::vec(1usize..20_000, 1..8),
    ) {
        let wire = build(&messages, &spoil);
        let limits = Limits::default();
        let expected = core_verdict(&wire, &limits);
        if matches!(spoil, Spoil::None) {
            prop_assert_eq!(&expected.0, &messages);
            prop_assert_eq!(&expected.1, &None);
        }
        prop_assert_eq!(codec_verdict(&wire, &limits, &reads), expected.clone());
        prop_assert_eq!(codec_verdict(&wire, &limits, &[1]), expected);
    }

    #[test]
    fn encoder_writes_what_the_core_encodes(messages in proptest::collection::vec(arb_message(), 0..6)) {
        let mut codec = Codec::default();
        let mut dst = BytesMut::new();
        let mut expected = Vec::new();
        for m in &messages {
            expected.extend(encode(m).expect("encodable"));
            codec.encode(m.clone(), &mut dst).expect("encodable");
        }
        prop_assert_eq!(&dst[..], &expected[..]);
    }
}

#[test]
fn encoder_refuses_content_over_the_limit_and_writes_nothing() {
    let mut codec = Codec::new(Limits {
        max_content_len: 10,
        ..Limits::default()
    });
    let mut dst = BytesMut::new();
    let err = codec
        .encode(Message::binary("x/y", vec![0u8; 11]), &mut dst)
        .expect_err("over the limit");
    assert_eq!(err.kind(), "content-over-limit", "{err}");
    assert!(dst.is_empty());
    codec
        .encode(Message::binary("x/y", vec![0u8; 10]), &mut dst)
        .expect("at the limit");
    assert!(dst.ends_with(&[0u8; 10]));
}

#[test]
fn a_peer_error_is_reported_again() {
    let mut codec = Codec::new(Limits {
        max_header_len: 10,
        ..Limits::default()
    });
    let mut buf = BytesMut::from(&b"\x00\x20{}"[..]);
    let first = codec.decode(&mut buf).expect_err("header over the limit");
    assert_eq!(first.kind(), "header-too-long");
    let mut more = BytesMut::from(&b"more"[..]);
    let again = codec.decode(&mut more).expect_err("still failed");
    assert_eq!(first.peer(), again.peer());
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors")
}

/// The limits `expected.txt` sets for `name` (`[key=value ...]`), or the defaults.
fn vector_limits(expected: &str, name: &str) -> Limits {
    let mut limits = Limits::default();
    let Some(line) = expected
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
    else {
        return limits;
    };
    let Some((_, after)) = line.split_once('[') else {
        return limits;
    };
    let inside = after.split_once(']').map_or("", |(i, _)| i);
    for kv in inside.split_whitespace() {
        let (k, v) = kv.split_once('=').expect("key=value");
        let n: u64 = v.parse().expect("number");
        match k {
            "max_header_len" => limits.max_header_len = n as usize,
            "max_content_len" => limits.max_content_len = n,
            "max_depth" => limits.max_depth = n as usize,
            "check_json_content" => limits.check_json_content = n != 0,
            other => panic!("unknown limit {other}"),
        }
    }
    limits
}

#[test]
fn every_vector_gives_the_cores_verdict_through_the_codec() {
    let dir = vectors_dir();
    let expected = std::fs::read_to_string(dir.join("expected.txt")).expect("expected.txt");
    let mut seen = 0;
    let mut errors = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/vectors") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("bin") {
            continue;
        }
        let name = path.file_stem().and_then(|s| s.to_str()).expect("name");
        let wire = std::fs::read(&path).expect("vector");
        let limits = vector_limits(&expected, name);
        let verdict = core_verdict(&wire, &limits);
        assert_eq!(
            verdict.1.is_some(),
            name.starts_with("err-"),
            "{name}: the core's verdict {:?}",
            verdict.1
        );
        errors += usize::from(verdict.1.is_some());
        let mut splits = vec![vec![wire.len().max(1)], vec![1], vec![7, 3], vec![4096]];
        if wire.len() <= 512 {
            splits.extend((1..wire.len()).map(|i| vec![i, wire.len()]));
        }
        for reads in &splits {
            assert_eq!(
                codec_verdict(&wire, &limits, reads),
                verdict,
                "{name} in reads of {reads:?}"
            );
        }
        seen += 1;
    }
    assert!(seen >= 90, "only {seen} vectors found");
    assert!(errors >= 50, "only {errors} hostile vectors");
}

/// Contents that tell their positions apart (a piece out of place shows).
fn patterned(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
        .collect()
}

#[test]
fn large_contents_are_read_into_pieces_and_give_the_cores_verdict() {
    let json_text = format!("[{}0]", "1234567890,".repeat(20_000));
    let messages = vec![
        Message::binary("x/y", b"small first".to_vec()),
        Message::binary("x/y", patterned(300_000)),
        Message::binary("x/y", patterned(3 * 1024 * 1024 + 5)),
        Message::from_parts("text/json".into(), "utf-8".into(), json_text.into_bytes()),
        Message::binary("x/y", patterned(64 * 1024)),
        Message::binary("x/y", b"small last".to_vec()),
    ];
    let mut wire = Vec::new();
    for m in &messages {
        wire.extend(encode(m).expect("encodable"));
    }
    let limits = Limits::default();
    let expected = core_verdict(&wire, &limits);
    assert_eq!(expected, (messages.clone(), None));
    for reads in [
        vec![65_536],
        vec![8192],
        vec![1000, 70_000, 3],
        vec![wire.len()],
    ] {
        let (got, end) = codec_verdict(&wire, &limits, &reads);
        assert_eq!(end, None, "reads of {reads:?}");
        assert!(got == messages, "reads of {reads:?}");
        if reads[0] < wire.len() {
            // Read a piece at a time: the large binary contents stay in their pieces.
            assert!(got[1].content_chunks().len() > 1, "reads of {reads:?}");
            assert!(got[2].content_chunks().len() > 3, "reads of {reads:?}");
            assert!(got[2]
                .content_chunks()
                .iter()
                .all(|c| c.len() <= 1024 * 1024));
        }
    }
    // Cut or spoilt inside the large contents: the core's verdict, byte for byte.
    let second = encode(&messages[0]).expect("encodable").len();
    let third = second + encode(&messages[1]).expect("encodable").len();
    for cut in [
        second + 100,
        second + 70_000,
        third + 1_500_000,
        wire.len() - 1,
    ] {
        let expected = core_verdict(&wire[..cut], &limits);
        assert!(expected.1.is_some());
        for reads in [vec![65_536], vec![5000, 100_000]] {
            assert_eq!(
                codec_verdict(&wire[..cut], &limits, &reads),
                expected,
                "cut at {cut}, reads of {reads:?}"
            );
        }
    }
    let json_at = third + encode(&messages[2]).expect("encodable").len();
    let mut spoilt = wire.clone();
    spoilt[json_at + 150_000] = b'x';
    let expected = core_verdict(&spoilt, &limits);
    assert!(
        matches!(expected.1, Some(PeerError::InvalidJson { .. })),
        "{expected:?}"
    );
    assert_eq!(codec_verdict(&spoilt, &limits, &[65_536]), expected);
}
