//! Decode (one-shot and through a connection) and encode throughput, against the targets of issue 2 (see BENCHMARKS.md).
//!
//! Run: `cargo bench -p sockmsg-protocol --bench decode`, and again with
//! `GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=4194304` to see what the machine's
//! slow `rep movsb` memcpy costs the copy-heavy cases.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sockmsg_protocol::{
    decode, encode, ByteOrder, Connection, Limits, Message, Role, MAX_HEADER_LEN,
};

mod support;
use support::{baseline, binary_stream, read_buf_each, SEARCH};

fn search_message() -> Message {
    Message::json(&serde_json::json!({"action": "search", "value": "morpheus"}))
        .expect("serializable")
        .with_byteorder(ByteOrder::Little)
}

/// Decodes every message in `input` with the one-shot [`decode`], message after message
/// (no copy of complete messages).
fn decode_all(limits: &Limits, mut input: &[u8]) -> usize {
    let mut n = 0;
    while let Ok((m, used)) = decode(input, limits) {
        black_box(&m);
        input = input.get(used..).unwrap_or_default();
        n += 1;
    }
    n
}

/// [`read_buf_each`], dropping each message as soon as it is out.
fn read_buf_all(dec: &mut Connection, wire: &[u8], chunk: usize) -> usize {
    read_buf_each(dec, wire, chunk, |m| drop(black_box(m)))
}

fn bench_search(c: &mut Criterion) {
    const N: usize = 1000;
    let stream = SEARCH.repeat(N);
    let mut g = c.benchmark_group("search-request-146B");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("decode contiguous (1000 per buffer)", |b| {
        let limits = Limits::default();
        b.iter(|| assert_eq!(decode_all(&limits, black_box(&stream)), N))
    });
    g.bench_function("decode contiguous, JSON content check off", |b| {
        let limits = Limits {
            check_json_content: false,
            ..Limits::default()
        };
        b.iter(|| assert_eq!(decode_all(&limits, black_box(&stream)), N))
    });
    g.bench_function("baseline: u16 + serde_json borrowed header + slice", |b| {
        b.iter(|| assert_eq!(baseline(black_box(&stream)), N))
    });
    g.bench_function("read_buf + commit, 16 KiB reads", |b| {
        b.iter(|| {
            let mut dec = Connection::new(Role::Server, Limits::default());
            assert_eq!(read_buf_all(&mut dec, black_box(&stream), 16 * 1024), N);
        })
    });
    g.finish();

    let mut g = c.benchmark_group("encode-search-request");
    g.throughput(Throughput::Elements(1));
    let m = search_message();
    g.bench_function("encode prebuilt message (encode)", |b| {
        b.iter(|| black_box(encode(black_box(&m)).expect("encodable")))
    });
    g.bench_function("build from serde value and encode", |b| {
        #[derive(serde::Serialize)]
        struct Req<'a> {
            action: &'a str,
            value: &'a str,
        }
        b.iter(|| {
            let m = Message::json(black_box(&Req {
                action: "search",
                value: "morpheus",
            }))
            .expect("serializable");
            black_box(encode(&m).expect("encodable"));
        })
    });
    g.finish();
}

fn bench_bytewise(c: &mut Criterion) {
    let wire = binary_stream(64 * 1024, 64 * 1024);
    let mut g = c.benchmark_group("64KiB-message-1-byte-reads");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("read_buf + commit, 1 byte per commit", |b| {
        b.iter(|| {
            let mut dec = Connection::new(Role::Server, Limits::default());
            assert_eq!(read_buf_all(&mut dec, black_box(&wire), 1), 1);
        })
    });
    g.finish();
}

fn bench_large(c: &mut Criterion) {
    const TOTAL: usize = 16 * 1024 * 1024;
    const READ: usize = 64 * 1024;
    let mut g = c.benchmark_group("64KiB-reads");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Bytes(TOTAL as u64));
    for (name, message_len) in [
        ("one 16 MiB message", TOTAL),
        ("256 x 64 KiB messages", 64 * 1024),
    ] {
        let wire = binary_stream(message_len, TOTAL);
        let count = TOTAL / message_len;
        g.bench_function(format!("read_buf + commit: {name}"), |b| {
            b.iter_batched(
                || Connection::new(Role::Server, Limits::default()),
                |mut dec| assert_eq!(read_buf_all(&mut dec, black_box(&wire), READ), count),
                BatchSize::PerIteration,
            )
        });
        g.bench_function(
            format!("decode(&[u8]) of the buffer held whole: {name}"),
            |b| {
                let limits = Limits::default();
                b.iter(|| assert_eq!(decode_all(&limits, black_box(&wire)), count))
            },
        );
        // The same, but the consumer keeps every message until the stream ends, so both
        // sizes end with 16 MiB of content in memory (the 16 MiB message cannot help it).
        g.bench_function(format!("read_buf + commit, messages kept: {name}"), |b| {
            b.iter_batched(
                || {
                    (
                        Connection::new(Role::Server, Limits::default()),
                        Vec::with_capacity(count),
                    )
                },
                |(mut dec, mut kept)| {
                    let n = read_buf_each(&mut dec, black_box(&wire), READ, |m| kept.push(m));
                    assert_eq!(n, count);
                    kept
                },
                BatchSize::PerIteration,
            )
        });
        // The floor, no decoder and no allocator: the content bytes copied in 64 KiB
        // pieces into one reused buffer of the message's size. What the memory hierarchy
        // alone charges per byte for a destination of that size.
        g.bench_function(
            format!("floor, plain copy into a reused message-sized buffer: {name}"),
            |b| {
                let content = vec![0xa5u8; TOTAL];
                let mut buf: Vec<u8> = Vec::with_capacity(message_len);
                b.iter(|| {
                    for message in black_box(&content).chunks(message_len) {
                        buf.clear();
                        for piece in message.chunks(READ) {
                            buf.extend_from_slice(piece);
                        }
                        black_box(&buf);
                    }
                })
            },
        );
    }
    g.finish();
}

/// Hostile JSON shapes of about 1 MiB as `text/json` content (checked as it completes),
/// and full 65,535-byte headers (distinct extra keys; one extra key of `[0,0,...]`): cost must stay linear in the bytes,
/// so a regression to quadratic shows here as a collapse in bytes/s (issue 12).
fn bench_adversarial(c: &mut Criterion) {
    const SIZE: usize = 1 << 20;
    let mut shapes: Vec<(&str, String)> = Vec::new();
    let mut keys = String::from("{");
    let mut i = 0;
    while keys.len() < SIZE {
        if i > 0 {
            keys.push(',');
        }
        keys.push_str(&format!("\"k{i}\":{i}"));
        i += 1;
    }
    keys.push('}');
    shapes.push(("object of many distinct keys", keys));
    let unit = format!("{}0{}", "[".repeat(30), "]".repeat(30));
    let mut deep = String::from("[");
    while deep.len() < SIZE {
        if deep.len() > 1 {
            deep.push(',');
        }
        deep.push_str(&unit);
    }
    deep.push(']');
    shapes.push(("deep (31 levels) and wide nesting", deep));
    let escapes = format!("\"{}\"", "\\n\\u00e9\\\"".repeat(SIZE / 14));
    shapes.push(("one string of escape runs", escapes));
    let mut numbers = String::from("[");
    let mut k = 0u64;
    while numbers.len() < SIZE {
        if k > 0 {
            numbers.push(',');
        }
        numbers.push_str(&format!("{}.{}e-{}", k, k * 7 % 1000, k % 300));
        k += 1;
    }
    numbers.push(']');
    shapes.push(("many numbers", numbers));
    let mut singletons = String::from("[[0]");
    while singletons.len() < SIZE {
        singletons.push_str(",[0]");
    }
    singletons.push(']');
    shapes.push(("many tiny containers ([[0],[0],...])", singletons));

    let mut g = c.benchmark_group("adversarial-json-1MiB");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(2));
    for (name, text) in &shapes {
        let m = Message::from_parts(
            "text/json".into(),
            "utf-8".into(),
            text.clone().into_bytes(),
        );
        let wire = encode(&m).expect("encodable");
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(*name, |b| {
            b.iter(|| {
                let (m, used) = decode(black_box(&wire), &Limits::default()).expect("valid");
                assert_eq!(used, wire.len());
                black_box(m);
            })
        });
    }
    // A header holding as many distinct extra keys as 65,535 bytes allow.
    let mut header = String::from(
        "{\"byteorder\": \"big\", \"content-type\": \"x\", \"content-encoding\": \"binary\", \"content-length\": 0",
    );
    let mut i = 0;
    while header.len() + 16 < MAX_HEADER_LEN {
        header.push_str(&format!(", \"x{i}\": {i}"));
        i += 1;
    }
    header.push('}');
    let mut wire = (header.len() as u16).to_be_bytes().to_vec();
    wire.extend_from_slice(header.as_bytes());
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("64 KiB header of distinct extra keys", |b| {
        b.iter(|| black_box(decode(black_box(&wire), &Limits::default()).expect("valid")))
    });
    // A full header whose one extra key holds `[0,0,...]` (the held-header attack of
    // issue 12: kept as raw JSON text, it must not cost more than its bytes).
    let mut header = String::from(
        "{\"byteorder\": \"big\", \"content-type\": \"x\", \"content-encoding\": \"binary\", \"content-length\": 0, \"x\": [0",
    );
    while header.len() + 4 <= MAX_HEADER_LEN {
        header.push_str(",0");
    }
    header.push_str("]}");
    let mut wire = (header.len() as u16).to_be_bytes().to_vec();
    wire.extend_from_slice(header.as_bytes());
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("64 KiB header of one extra key [0,0,...]", |b| {
        b.iter(|| black_box(decode(black_box(&wire), &Limits::default()).expect("valid")))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_search,
    bench_bytewise,
    bench_large,
    bench_adversarial
);
criterion_main!(benches);
