//! A fixed amount of small-message decoding, for instruction counts under callgrind
//! (deterministic where timing on a shared machine is not): ROUNDS x 1,000 guide search
//! requests (146 bytes) through the transports' path, `read_buf` + `commit` in 16 KiB
//! reads (`stream`), the same through `read_from` or `read_spare_from` over a slice
//! (`read_from`, `spare`), or the one-shot `decode` (`oneshot`).
//!
//! ```sh
//! cargo build --release -p sockmsg-protocol --example hot_path
//! valgrind --tool=callgrind target/release/examples/hot_path ROUNDS stream   # and 0 rounds
//! ```
use std::time::Instant;

use sockmsg_protocol::{decode, Connection, Event, Limits, Role};

const SEARCH: &[u8] = include_bytes!("../../tests/vectors/ok-search-request.bin");

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let mode = args.next().unwrap_or_else(|| "stream".to_owned());
    let stream = SEARCH.repeat(1000);
    let limits = Limits::default();
    let now = Instant::now();
    let mut total = 0usize;
    for _ in 0..rounds {
        if mode == "oneshot" {
            let mut input = &stream[..];
            while let Ok((m, used)) = decode(input, &limits) {
                total += usize::from(m.is_json());
                input = input.get(used..).unwrap_or_default();
            }
            continue;
        }
        let mut conn = Connection::new(Role::Server, limits.clone());
        if mode == "read_from" || mode == "spare" {
            // The servers' generic read (`read_from`), and the one they make since
            // `read_spare_from` (a check, then the same read for small messages).
            for piece in stream.chunks(16 * 1024) {
                let mut piece = piece;
                while !piece.is_empty() {
                    if mode == "spare" {
                        conn.read_spare_from(&mut piece, now)
                            .expect("a slice reads");
                    } else {
                        conn.read_from(&mut piece, now).expect("a slice reads");
                    }
                    while let Ok(Event::Message(m)) = conn.next_event() {
                        total += usize::from(m.is_json());
                    }
                }
            }
            continue;
        }
        for piece in stream.chunks(16 * 1024) {
            let mut piece = piece;
            while !piece.is_empty() {
                let buf = conn.read_buf();
                let n = buf.len().min(piece.len());
                buf[..n].copy_from_slice(&piece[..n]);
                conn.commit(n, now).expect("within the slice");
                piece = &piece[n..];
                while let Ok(Event::Message(m)) = conn.next_event() {
                    total += usize::from(m.is_json());
                }
            }
        }
    }
    assert_eq!(total, rounds * 1000);
    println!("{total}");
}
