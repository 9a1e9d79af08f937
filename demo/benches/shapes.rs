//! The demo service on adversarial JSON requests (`sockmsg_demo::shapes`) of 1 MB and
//! 16 MiB: the time of one `respond` (decode, index, format, answer), which must stay
//! linear in the request's size whatever its shape (targets: 50 ms per 1 MB request, 1 s
//! at 16 MiB). A shape whose answer would pass the 16 MiB message limit measures the time
//! to refuse it.
//!
//! `cargo bench -p sockmsg-demo --bench shapes` (`-- guide` for the guide's own requests
//! only)

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sockmsg_demo::shapes::{request, Shape};
use sockmsg_demo::DemoService;

fn shapes(c: &mut Criterion) {
    let service = DemoService::new();
    let mut group = c.benchmark_group("respond");
    // The guide's own requests, for scale: what every request of a load test costs.
    for (name, m) in [
        ("guide-search", sockmsg_demo::request("search", "morpheus")),
        ("guide-miss", sockmsg_demo::request("search", "neo")),
        ("guide-binary", sockmsg_demo::request("binary", "☺")),
    ] {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new(name, "1"), &m, |b, m| {
            b.iter(|| service.respond(m))
        });
    }
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for (label, len) in [("1MB", 1_000_000), ("16MiB", 16 * 1024 * 1024 - 2048)] {
        for &shape in Shape::ALL {
            let m = request(shape, len);
            group.throughput(Throughput::Bytes(m.content().len() as u64));
            group.bench_with_input(BenchmarkId::new(shape.name(), label), &m, |b, m| {
                b.iter(|| service.respond(m))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, shapes);
criterion_main!(benches);
