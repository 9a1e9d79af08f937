//! The codec's decode rate against a straightforward tokio-util codec (issue 14): the same
//! stream of 146-byte search requests through `tokio_util::codec::Decoder::decode`.
//!
//! Run: `cargo bench -p sockmsg-transport-tokio --bench codec -- --warm-up-time 1 --measurement-time 3`
//! (figures in BENCHMARKS.md).

use std::hint::black_box;

use bytes::{Buf, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sockmsg_transport_tokio::Codec;
use tokio_util::codec::Decoder;

/// The guide's search request, as a little-endian client sends it (146 bytes).
const SEARCH: &[u8] = include_bytes!("../../tests/vectors/ok-search-request.bin");

/// Messages in the stream.
const N: usize = 1000;

/// What a competent tokio user writes by hand: u16 length, `serde_json` of the header into
/// a struct, slice the content out of the buffer (no copy, no content check).
#[derive(Default)]
struct Straightforward;

#[derive(serde::Deserialize)]
#[allow(dead_code)] // read by serde; kept to decode the same fields as the core
struct Header {
    byteorder: String,
    #[serde(rename = "content-type")]
    content_type: String,
    #[serde(rename = "content-encoding")]
    content_encoding: String,
    #[serde(rename = "content-length")]
    content_length: usize,
}

impl Decoder for Straightforward {
    type Item = (Header, Bytes);
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        let Some(&[a, b]) = src.get(..2) else {
            return Ok(None);
        };
        let hlen = usize::from(u16::from_be_bytes([a, b]));
        let Some(hbytes) = src.get(2..2 + hlen) else {
            return Ok(None);
        };
        let header: Header = serde_json::from_slice(hbytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let total = 2 + hlen + header.content_length;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(2 + hlen);
        let content = src.split_to(header.content_length).freeze();
        Ok(Some((header, content)))
    }
}

/// Decodes the whole of `wire` handed over in `chunk`-byte reads, as FramedRead would.
fn run<D: Decoder>(codec: &mut D, wire: &[u8], chunk: usize) -> usize
where
    D::Error: std::fmt::Debug,
{
    let mut buf = BytesMut::with_capacity(chunk);
    let mut n = 0;
    for piece in wire.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Some(m) = codec.decode(&mut buf).expect("valid stream") {
            black_box(m);
            n += 1;
        }
    }
    n
}

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
