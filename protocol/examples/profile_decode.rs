//! Decodes many copies of the 146-byte search request, for profilers
//! (`valgrind --tool=callgrind target/release/examples/profile_decode`).
use sockmsg_protocol::{Decoder, Event, Limits};

#[path = "../benches/support/mod.rs"]
mod support;
use support::{baseline, SEARCH};

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
            total += baseline(&stream) * 41;
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
