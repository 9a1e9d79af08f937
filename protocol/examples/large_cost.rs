//! Where a 16 MiB content's time goes, in memory (no socket): one binary message in 64 KiB
//! reads through the core, against the memcpy floor and the ways a decoder could grow its
//! buffer. Per variant, the thread's CPU time per message (`/proc/thread-self/schedstat`)
//! and wall time, medians of ROUNDS rounds of ITERS messages (issue 14, BENCHMARKS.md).
//! Run one variant per process (its own allocator state), rounds interleaved by the shell,
//! or `all` of them interleaved in one process (each one's heap left to the next):
//!
//! ```sh
//! cargo build --release -p sockmsg-protocol --example large_cost
//! for r in 1 2 3 4 5; do for v in floor upfront doubling read_buf receive joined decode; do
//!     target/release/examples/large_cost 3 10 $v; done; done
//! ```
//!
//! * `floor`: the content copied in 64 KiB pieces into one reused buffer of its size;
//! * `upfront`: a straightforward decoder that reserves the announced length, then appends;
//! * `doubling`: one buffer grown by doubling, then appended (what the core did before
//!   pieces, without its zero-fill);
//! * `read_buf`: `Connection::read_buf` + `commit` (the transports' way in), message dropped;
//! * `receive`: `Connection::receive` of each 64 KiB read (bytes already in memory);
//! * `joined`: as `read_buf`, then `Message::content()` (the pieces joined, one copy);
//! * `decode`: the one-shot `decode` of the buffer held whole.
use std::hint::black_box;
use std::time::Instant;

use sockmsg_protocol::{decode, encode, Connection, Event, Limits, Message, Role};

const TOTAL: usize = 16 * 1024 * 1024;
const READ: usize = 64 * 1024;

/// This thread's CPU time in nanoseconds.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|t| t.parse().ok()))
        .unwrap_or(0)
}

/// `wire` through a connection in 64 KiB reads, by `read_buf` + `commit` or by `receive`;
/// `f` of each message.
fn through(wire: &[u8], by_receive: bool, f: impl Fn(&Message) -> usize) -> usize {
    let mut conn = Connection::new(Role::Server, Limits::default());
    let now = Instant::now();
    let mut n = 0;
    for mut piece in wire.chunks(READ) {
        while !piece.is_empty() {
            if by_receive {
                conn.receive(&mut piece, now).expect("before the end");
            } else {
                let buf = conn.read_buf();
                let k = buf.len().min(piece.len());
                buf[..k].copy_from_slice(&piece[..k]);
                conn.commit(k, now).expect("within the slice");
                piece = &piece[k..];
            }
            while let Ok(Event::Message(m)) = conn.next_event() {
                n += f(&m);
                black_box(m);
            }
        }
    }
    n
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let iters: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let variant = args.next().unwrap_or_else(|| "read_buf".to_owned());
    let variants: Vec<&str> = match variant.as_str() {
        // Every variant in this one process, interleaved: the heap each one leaves behind
        // is the next one's (as in a process that does other work, or criterion's).
        "all" => vec![
            "floor", "upfront", "doubling", "read_buf", "receive", "joined", "decode",
        ],
        one => vec![one],
    };
    let content: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
    let wire = encode(&Message::binary("x/y", content.clone())).expect("encodable");
    let mut reused = vec![0u8; TOTAL];
    let mut run = |variant: &str| -> usize {
        match variant {
            "floor" => {
                reused.clear();
                for p in content.chunks(READ) {
                    reused.extend_from_slice(p);
                }
                black_box(&reused).len()
            }
            "upfront" => {
                let mut v = Vec::with_capacity(TOTAL);
                for p in content.chunks(READ) {
                    v.extend_from_slice(p);
                }
                black_box(v).len()
            }
            "doubling" => {
                let mut v: Vec<u8> = Vec::new();
                for p in content.chunks(READ) {
                    if v.len() + p.len() > v.capacity() {
                        let cap = (v.len() + p.len()).max(2 * v.len()).clamp(READ, TOTAL);
                        v.reserve_exact(cap - v.len());
                    }
                    v.extend_from_slice(p);
                }
                black_box(v).len()
            }
            "receive" => through(&wire, true, Message::content_len),
            "joined" => through(&wire, false, |m| m.content().len()),
            "decode" => decode(&wire, &Limits::default())
                .map(|(m, _)| m.content_len())
                .unwrap_or(0),
            _ => through(&wire, false, Message::content_len),
        }
    };
    for v in &variants {
        assert_eq!(run(v), TOTAL);
    }
    let mut cpu = vec![Vec::new(); variants.len()];
    let mut wall = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, v) in variants.iter().enumerate() {
            let (c0, t0) = (cpu_ns(), Instant::now());
            for _ in 0..iters {
                black_box(run(v));
            }
            wall[i].push(t0.elapsed().as_nanos() as f64 / iters as f64);
            cpu[i].push((cpu_ns() - c0) as f64 / iters as f64);
        }
    }
    for (i, v) in variants.iter().enumerate() {
        let c = median(&mut cpu[i]);
        println!(
            "{v:9} cpu {:6.0} us  {:6.2} GB/s  wall {:6.0} us",
            c / 1e3,
            TOTAL as f64 / c,
            median(&mut wall[i]) / 1e3
        );
    }
}
