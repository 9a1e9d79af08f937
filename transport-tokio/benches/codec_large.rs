//! One 16 MiB message through `tokio_util::codec::Decoder::decode`, the `BytesMut` grown
//! as tokio-util's `FramedRead` grows it (`reserve(1)` before each read, a read fills at
//! most the spare capacity, at most 64 KiB per read as from a loopback socket): the
//! sockmsg `Codec` against the straightforward codec that reserves the announced length up
//! front, and the memcpy floor (the same bytes copied in 64 KiB pieces into one reused
//! buffer). Interleaved rounds; per round and variant, the thread's CPU time
//! (`/proc/thread-self/schedstat`) and wall time per message; medians and ratios to the
//! floor (issue 14, BENCHMARKS.md):
//!
//! ```sh
//! cargo bench -p sockmsg-transport-tokio --bench codec_large -- [ROUNDS] [ITERS]
//! GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=4194304 cargo bench ... (same)
//! ```

use std::hint::black_box;
use std::time::Instant;

use bytes::BytesMut;
use sockmsg_protocol::{encode, Message};
use sockmsg_transport_tokio::Codec;
use tokio_util::codec::Decoder;

#[allow(dead_code)] // shared with the other codec benches
mod support;
use support::Straightforward;

const TOTAL: usize = 16 * 1024 * 1024;
const READ: usize = 64 * 1024;

/// This thread's CPU time in nanoseconds.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|t| t.parse().ok()))
        .unwrap_or(0)
}

/// `wire` through `codec` as FramedRead reads it; the content bytes of each message.
fn framed<D: Decoder>(codec: &mut D, wire: &[u8], size: impl Fn(&D::Item) -> usize) -> usize
where
    D::Error: std::fmt::Debug,
{
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut rest = wire;
    let mut total = 0;
    while !rest.is_empty() {
        buf.reserve(1);
        let n = READ.min(rest.len()).min(buf.capacity() - buf.len());
        let (piece, tail) = rest.split_at(n);
        buf.extend_from_slice(piece);
        rest = tail;
        while let Some(m) = codec.decode(&mut buf).expect("valid stream") {
            total += size(&m);
            black_box(m);
        }
    }
    total
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

type Variant<'a> = (&'static str, Box<dyn FnMut() -> usize + 'a>);

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    let iters: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let content: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
    let wire = encode(&Message::binary(
        "binary/custom-client-binary-type",
        content.clone(),
    ))
    .expect("encodable");
    let mut reused = vec![0u8; TOTAL];
    let floor_src = &content;
    let wire = &wire;
    let mut variants: Vec<Variant> = vec![
        (
            "floor: memcpy in 64 KiB pieces into a reused buffer",
            Box::new(move || {
                reused.clear();
                for piece in floor_src.chunks(READ) {
                    reused.extend_from_slice(piece);
                }
                black_box(&reused).len()
            }),
        ),
        (
            "straightforward codec, announced length reserved up front",
            Box::new(|| framed(&mut Straightforward, wire, |(_, c)| c.len())),
        ),
        (
            "sockmsg Codec (message dropped unread)",
            Box::new(|| framed(&mut Codec::default(), wire, Message::content_len)),
        ),
    ];
    if let Some(only) = args.next() {
        // One variant alone (`floor`, `straightforward`, `sockmsg`): its own allocator state.
        variants.retain(|(name, _)| name.starts_with(only.as_str()));
    }
    for (_, f) in variants.iter_mut() {
        assert_eq!(f(), TOTAL);
    }
    let mut cpu = vec![Vec::new(); variants.len()];
    let mut wall = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in variants.iter_mut().enumerate() {
            let (c0, t0) = (cpu_ns(), Instant::now());
            for _ in 0..iters {
                black_box(f());
            }
            wall[i].push(t0.elapsed().as_nanos() as f64 / iters as f64);
            cpu[i].push((cpu_ns() - c0) as f64 / iters as f64);
        }
    }
    let floor = cpu.first().map_or(0.0, |c| median(&mut c.clone()));
    println!("16 MiB message, {rounds} rounds x {iters}; CPU time per message (median), GB/s, wall, floor / this");
    for (i, (name, _)) in variants.iter().enumerate() {
        let c = median(&mut cpu[i]);
        let w = median(&mut wall[i]);
        println!(
            "{name:60} {:7.0} us  {:6.2} GB/s  wall {:7.0} us  {:.2}x",
            c / 1e3,
            TOTAL as f64 / c,
            w / 1e3,
            floor / c
        );
    }
}
