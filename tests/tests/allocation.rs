//! What a peer's bytes cost in memory, measured by the allocator itself: a header that
//! announces 16 MiB of content and then sends nothing (or little) must not make the decoder
//! reserve what was announced.
//!
//! This test binary installs a counting global allocator. It holds a single `#[test]` that
//! runs the measurements one after another: with several tests, the harness starts the
//! next test's thread (and allocates for it) while a measurement is running.

use std::time::Instant;

use sockmsg_protocol::{
    decode, encode, Connection, Event, Limits, Message, PeerError, Role, MAX_HEADER_LEN,
};
use sockmsg_tests::alloc::{live, peak_during, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The framing of a binary message announcing `len` content bytes.
fn framing(len: usize) -> Vec<u8> {
    let header = format!(
        "{{\"byteorder\": \"big\", \"content-type\": \"x\", \"content-encoding\": \"binary\", \"content-length\": {len}}}"
    );
    let mut v = (header.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v
}

const SMALL_CONSTANT: usize = 64 * 1024 + 1024;

/// The largest piece of a content the decoder allocates ahead of its bytes.
const PIECE_MAX: usize = 1024 * 1024;

/// Feeds `bytes` through the connection's one way in (`read_buf` + `commit`).
fn feed(conn: &mut Connection, mut bytes: &[u8]) {
    let now = Instant::now();
    while !bytes.is_empty() {
        let buf = conn.read_buf();
        let n = buf.len().min(bytes.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        conn.commit(n, now).unwrap();
        bytes = &bytes[n..];
    }
}

fn announced_16_mib_followed_by_nothing_allocates_almost_nothing() {
    let wire = framing(16 * 1024 * 1024);
    // A connection's way in, and the one-shot decode of the bytes held whole.
    let (peak, ()) = peak_during(|| {
        let mut dec = Connection::new(Role::Server, Limits::default());
        feed(&mut dec, &wire);
        assert_eq!(dec.next_event(), Ok(Event::NeedData));
        let cut = decode(&wire, &Limits::default());
        assert!(
            matches!(cut, Err(PeerError::UnexpectedEof { .. })),
            "{cut:?}"
        );
        std::hint::black_box((&dec, &cut));
    });
    assert!(
        peak <= 2 * wire.len() + SMALL_CONSTANT,
        "peak {peak} bytes for {} received",
        wire.len()
    );
}

fn allocation_tracks_bytes_received_not_bytes_announced() {
    let wire = framing(16 * 1024 * 1024);
    let piece = vec![0x5au8; 32 * 1024];
    let mut dec = Connection::new(Role::Server, Limits::default());
    feed(&mut dec, &wire);
    assert_eq!(dec.next_event(), Ok(Event::NeedData));
    let mut received = wire.len();
    for round in 0..40 {
        let (peak, ()) = peak_during(|| {
            feed(&mut dec, &piece);
            assert_eq!(dec.next_event(), Ok(Event::NeedData));
        });
        received += piece.len();
        let held = dec.allocated();
        assert!(
            held <= 2 * received + SMALL_CONSTANT,
            "round {round}: holds {held} for {received} received"
        );
        // A growth step may hold old and new buffer at once, never more.
        assert!(
            peak <= 2 * held + SMALL_CONSTANT,
            "round {round}: peak {peak}"
        );
    }
}

fn a_whole_message_costs_its_content_and_no_more() {
    let content = vec![7u8; 1024 * 1024];
    let wire = encode(&Message::binary("x/y", content)).unwrap();
    let (peak, ()) = peak_during(|| {
        let Ok((m, used)) = decode(&wire, &Limits::default()) else {
            panic!("one complete message");
        };
        assert_eq!((m.content().len(), used), (1024 * 1024, wire.len()));
    });
    assert!(peak <= 1024 * 1024 + 4096, "peak {peak}");
}

/// A 65,535-byte header whose extra key holds `[0,0,...]`, and nothing after it (issue 12):
/// extra values are kept as the JSON text received, so the connection holds about the
/// bytes received, where a parsed `serde_json::Value` held 17 times as much.
fn a_full_header_of_extras_costs_its_bytes() {
    let head = "{\"byteorder\": \"big\", \"content-type\": \"x\", \"content-encoding\": \"binary\", \"content-length\": 100, \"x\": [0";
    let mut header = head.to_owned();
    while header.len() + 4 <= MAX_HEADER_LEN {
        header.push_str(",0");
    }
    header.push_str("]}");
    while header.len() < MAX_HEADER_LEN {
        header.insert(header.len() - 1, ' ');
    }
    assert_eq!(header.len(), MAX_HEADER_LEN);
    let mut wire = (MAX_HEADER_LEN as u16).to_be_bytes().to_vec();
    wire.extend_from_slice(header.as_bytes());

    let start = live();
    let mut conn = Connection::new(Role::Server, Limits::default());
    for piece in wire.chunks(16 * 1024) {
        feed(&mut conn, piece);
        assert_eq!(conn.next_event(), Ok(Event::NeedData));
    }
    assert!(conn.message_in_progress());
    let held = live() - start;
    assert!(
        held <= wire.len() + SMALL_CONSTANT,
        "holds {held} bytes for {} received",
        wire.len()
    );
    // With the read buffer given back, what remains is the header itself.
    conn.release_buffers();
    let held = live() - start;
    assert!(
        held <= wire.len() + 1024,
        "holds {held} bytes for {} received once buffers are released",
        wire.len()
    );
    // The value is still there, parsed only when asked.
    std::hint::black_box(&conn);
    drop(conn);
    let parsed = sockmsg_protocol::parse_header(header.as_bytes(), &Limits::default()).unwrap();
    let value = parsed.extra_value("x").expect("an array");
    assert_eq!(
        value.as_array().map(Vec::len),
        Some(header.matches(",0").count() + 1)
    );
}

/// A 16 MiB content arriving in 64 KiB reads, measured by the allocator: what the
/// connection holds is what arrived plus a constant (pieces of at most 1 MiB allocated
/// ahead), and no step ever holds an old and a new buffer at once (pieces are never
/// regrown, so nothing is copied as the content grows); the message keeps the pieces.
fn a_large_content_holds_what_arrived_plus_a_constant() {
    let len = 16 * 1024 * 1024;
    let wire = encode(&Message::binary("x/y", vec![1u8; len])).unwrap();
    let start = live();
    let mut conn = Connection::new(Role::Server, Limits::default());
    let mut message = None;
    for (i, piece) in wire.chunks(64 * 1024).enumerate() {
        let before = live() - start;
        let (peak, ()) = peak_during(|| {
            feed(&mut conn, piece);
            if let Ok(Event::Message(m)) = conn.next_event() {
                message = Some(m);
            }
        });
        let received = (i * 64 * 1024 + piece.len()).min(wire.len());
        assert_read_within_a_piece(i, live() - start, received, peak, before);
    }
    assert_large_message(message, len, 1, live() - start);
    drop(conn);
}

/// After read `i` of a large content: the connection holds what was received plus at most
/// one piece allocated ahead, and the read's peak is what was held before it plus at most
/// one new piece (no piece regrown, so nothing copied as the content grows).
fn assert_read_within_a_piece(i: usize, held: usize, received: usize, peak: usize, before: usize) {
    assert!(
        held <= received + PIECE_MAX + SMALL_CONSTANT,
        "read {i}: holds {held} for {received} received"
    );
    assert!(
        peak <= before + PIECE_MAX + SMALL_CONSTANT,
        "read {i}: peak {peak} above {before} held before"
    );
}

/// The large message of `len` bytes, each `fill`, came whole, in pieces (at least 16), and
/// with it `held` bytes are held: its content plus a piece and a constant.
fn assert_large_message(message: Option<Message>, len: usize, fill: u8, held: usize) {
    let m = message.expect("the message");
    assert_eq!(m.content_len(), len);
    assert!(m.content_chunks().len() >= 16);
    assert!(m.content_chunks().iter().flatten().all(|&b| b == fill));
    assert!(held <= len + SMALL_CONSTANT + PIECE_MAX, "holds {held}");
}

/// The same content through `read_spare_from` (the tokio server's read, and decrypted TLS
/// bytes): each read appended to the piece's spare capacity, never zeroed, and the same
/// bound, measured by the allocator; no piece is regrown by the reads.
fn a_large_content_read_into_spare_holds_what_arrived_plus_a_constant() {
    let len = 16 * 1024 * 1024;
    let wire = encode(&Message::binary("x/y", vec![2u8; len])).unwrap();
    let start = live();
    let mut conn = Connection::new(Role::Server, Limits::default());
    let mut message = None;
    let mut received = 0;
    for (i, chunk) in wire.chunks(100_000).enumerate() {
        let mut input = chunk;
        while !input.is_empty() {
            let before = live() - start;
            let (peak, n) = peak_during(|| {
                let n = conn
                    .read_spare_from(&mut input, Instant::now())
                    .expect("a slice reads");
                if let Ok(Event::Message(m)) = conn.next_event() {
                    message = Some(m);
                }
                n
            });
            assert!(n > 0, "read {i}: something taken");
            received += n;
            assert_read_within_a_piece(i, live() - start, received, peak, before);
        }
    }
    assert_eq!(received, wire.len());
    assert_large_message(message, len, 2, live() - start);
    drop(conn);
}

#[test]
fn decoder_memory_follows_bytes_received() {
    announced_16_mib_followed_by_nothing_allocates_almost_nothing();
    allocation_tracks_bytes_received_not_bytes_announced();
    a_whole_message_costs_its_content_and_no_more();
    a_full_header_of_extras_costs_its_bytes();
    a_large_content_holds_what_arrived_plus_a_constant();
    a_large_content_read_into_spare_holds_what_arrived_plus_a_constant();
}
