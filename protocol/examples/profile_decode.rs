//! Decodes many copies of the 146-byte search request, for profilers
//! (`valgrind --tool=callgrind target/release/examples/profile_decode`).
use sockmsg_protocol::{Decoder, Event, Limits};

const SEARCH: &[u8] = b"\x00g{\"byteorder\": \"little\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": 41}{\"action\": \"search\", \"value\": \"morpheus\"}";

/// The straightforward decoder the issue measures against: u16 length, serde_json of a
/// borrowed header struct, slice the content.
fn baseline(stream: &[u8]) -> usize {
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
    let mut total = 0;
    while let Some((ph, tail)) = rest.split_first_chunk::<2>() {
        let hl = usize::from(u16::from_be_bytes(*ph));
        let (hb, tail) = tail.split_at(hl);
        let h: H = serde_json::from_slice(hb).expect("valid header");
        let (content, tail) = tail.split_at(h.content_length);
        std::hint::black_box((h.byteorder, h.content_type, h.content_encoding));
        total += content.len();
        rest = tail;
    }
    total
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let stream = SEARCH.repeat(1000);
    let mut total = 0usize;
    if std::env::args().nth(2).as_deref() == Some("bytewise") {
        // A 64 KiB binary message fed one byte per call.
        let m = sockmsg_protocol::Message::binary("x/y", vec![0xa5u8; 64 * 1024]);
        let wire = sockmsg_protocol::encode(&m).expect("encodable");
        for _ in 0..rounds {
            let mut dec = Decoder::new(Limits::default());
            for byte in wire.chunks(1) {
                let mut input = byte;
                while let Ok(Event::Message(m)) = dec.decode(&mut input) {
                    total += m.content().len();
                }
            }
        }
        println!("{total}");
        return;
    }
    if std::env::args().nth(2).as_deref() == Some("baseline") {
        for _ in 0..rounds {
            total += baseline(&stream);
        }
        println!("{total}");
        return;
    }
    for _ in 0..rounds {
        let mut dec = Decoder::new(Limits::default());
        let mut input = &stream[..];
        while let Ok(Event::Message(m)) = dec.decode(&mut input) {
            total += m.content().len();
        }
    }
    println!("{total}");
}
