//! The codec's decode rate against a straightforward tokio-util codec (issue 14): the same
//! stream of 146-byte search requests through `tokio_util::codec::Decoder::decode`.
//!
//! Run: `cargo bench -p sockmsg-transport-tokio --bench codec -- --warm-up-time 1 --measurement-time 3`
//! (figures in BENCHMARKS.md).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sockmsg_transport_tokio::Codec;

mod support;
use support::{run, Straightforward, N, SEARCH};

fn bench(c: &mut Criterion) {
    let stream = SEARCH.repeat(N);
    let mut g = c.benchmark_group("codec-search-request-146B");
    g.throughput(Throughput::Elements(N as u64));
    for chunk in [stream.len(), 8 * 1024] {
        let label = if chunk == stream.len() {
            "one buffer".to_owned()
        } else {
            format!("{} KiB reads", chunk / 1024)
        };
        g.bench_function(format!("sockmsg Codec, {label}"), |b| {
            b.iter(|| assert_eq!(run(&mut Codec::default(), black_box(&stream), chunk), N))
        });
        g.bench_function(format!("straightforward codec, {label}"), |b| {
            b.iter(|| assert_eq!(run(&mut Straightforward, black_box(&stream), chunk), N))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
