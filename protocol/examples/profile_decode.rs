//! Decodes many copies of the 146-byte search request, for profilers
//! (`valgrind --tool=callgrind target/release/examples/profile_decode`).
use sockmsg_protocol::{decode, Connection, Limits, Role};

#[path = "../benches/support/mod.rs"]
mod support;
use support::{baseline, binary_stream, read_buf_each, SEARCH};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let stream = SEARCH.repeat(1000);
    let mut total = 0usize;
    if std::env::args().nth(2).as_deref() == Some("bytewise") {
        // A 64 KiB binary message committed one byte at a time.
        let wire = binary_stream(64 << 10, 64 << 10);
        for _ in 0..rounds {
            let mut dec = Connection::new(Role::Server, Limits::default());
            read_buf_each(&mut dec, &wire, 1, |m| total += m.content().len());
        }
        println!("{total}");
        return;
    }
    if let Some(message_len) = match std::env::args().nth(2).as_deref() {
        Some("large") => Some(16 << 20),
        Some("medium") => Some(64 << 10),
        _ => None,
    } {
        // 16 MiB of binary messages (one, or 256 of 64 KiB) through read_buf + commit in
        // 64 KiB reads, as a transport receives them.
        let wire = binary_stream(message_len, 16 << 20);
        for _ in 0..rounds {
            let mut dec = Connection::new(Role::Server, Limits::default());
            read_buf_each(&mut dec, &wire, 64 << 10, |m| total += m.content_len());
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
    let limits = Limits::default();
    for _ in 0..rounds {
        let mut input = &stream[..];
        while let Ok((m, used)) = decode(input, &limits) {
            total += m.content().len();
            input = input.get(used..).unwrap_or_default();
        }
    }
    println!("{total}");
}
