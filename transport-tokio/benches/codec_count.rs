//! A fixed amount of decoding, for instruction counts under callgrind (deterministic where
//! timing on a shared machine is not):
//!
//! ```sh
//! cargo bench -p sockmsg-transport-tokio --bench codec_count --no-run
//! valgrind --tool=callgrind target/release/deps/codec_count-* ROUNDS [sockmsg|straightforward] [CHUNK]
//! ```
//!
//! Each round decodes the stream of 1,000 search requests; run once with 0 rounds and
//! subtract, then divide by ROUNDS × 1,000 for the count per message.

use sockmsg_transport_tokio::Codec;

mod support;
use support::{run, Straightforward, N, SEARCH};

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let which = args.next().unwrap_or_else(|| "sockmsg".to_owned());
    let stream = SEARCH.repeat(N);
    let chunk: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(stream.len());
    let mut total = 0;
    for _ in 0..rounds {
        total += match which.as_str() {
            "straightforward" => run(&mut Straightforward, &stream, chunk),
            _ => run(&mut Codec::default(), &stream, chunk),
        };
    }
    assert_eq!(total, rounds * N);
    println!("{which}: {total} messages in {chunk}-byte reads");
}
