//! What the decode benchmark and the `profile_decode` example share: the request they
//! decode, the straightforward decoder they measure against, the binary streams and the
//! `read_buf` driver of the large-message cases.

use std::time::Instant;

use sockmsg_protocol::{encode, Connection, Event, Message};

/// PROTOCOL.md's 146-byte search request.
pub const SEARCH: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/vectors/ok-search-request.bin"
));

/// The straightforward decoder issue 2 measures against: u16 length, `serde_json` of a
/// borrowed header struct, slice the content. Returns how many messages `stream` held.
pub fn baseline(stream: &[u8]) -> usize {
    #[derive(serde::Deserialize)]
    struct H<'a> {
        #[serde(borrow)]
        byteorder: &'a str,
        #[serde(rename = "content-type", borrow)]
        content_type: &'a str,
        #[serde(rename = "content-encoding", borrow)]
        content_encoding: &'a str,
        #[serde(rename = "content-length")]
        content_length: usize,
    }
    let mut rest = stream;
    let mut n = 0;
    while let Some((ph, tail)) = rest.split_first_chunk::<2>() {
        let hl = usize::from(u16::from_be_bytes(*ph));
        let (hb, tail) = tail.split_at(hl);
        let h: H = serde_json::from_slice(hb).expect("valid header");
        let (content, tail) = tail.split_at(h.content_length);
        std::hint::black_box((h.byteorder, h.content_type, h.content_encoding, content));
        n += 1;
        rest = tail;
    }
    n
}

/// `total / message_len` binary messages of `message_len` bytes each, encoded back to back.
pub fn binary_stream(message_len: usize, total: usize) -> Vec<u8> {
    let m = Message::binary(
        "binary/custom-client-binary-type",
        vec![0xa5u8; message_len],
    );
    let one = encode(&m).expect("encodable");
    one.repeat(total / message_len)
}

/// Feeds `wire` in reads of `chunk` bytes through a connection's `read_buf`/`commit`, as a
/// transport does (the copy stands in for `recv`), and hands each message to `consume`.
/// Returns how many there were.
pub fn read_buf_each(
    dec: &mut Connection,
    wire: &[u8],
    chunk: usize,
    mut consume: impl FnMut(Message),
) -> usize {
    let now = Instant::now();
    let mut n = 0;
    let mut rest = wire;
    while !rest.is_empty() {
        let buf = dec.read_buf();
        let k = buf.len().min(chunk).min(rest.len());
        buf[..k].copy_from_slice(&rest[..k]);
        rest = &rest[k..];
        dec.commit(k, now).expect("within the lent buffer");
        while let Ok(Event::Message(m)) = dec.next_event() {
            consume(m);
            n += 1;
        }
    }
    n
}
