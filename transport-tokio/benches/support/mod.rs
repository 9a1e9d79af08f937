//! Shared by the codec benches: the stream, the straightforward codec, the driver.

use std::hint::black_box;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// The guide's search request, as a little-endian client sends it (146 bytes).
pub const SEARCH: &[u8] = include_bytes!("../../../tests/vectors/ok-search-request.bin");

/// Messages in the stream.
pub const N: usize = 1000;

/// What a competent tokio user writes by hand: u16 length, `serde_json` of the header into
/// a struct, slice the content out of the buffer (no copy, no content check).
#[derive(Default)]
pub struct Straightforward;

#[derive(serde::Deserialize)]
#[allow(dead_code)] // read by serde; kept to decode the same fields as the core
pub struct Header {
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
pub fn run<D: Decoder>(codec: &mut D, wire: &[u8], chunk: usize) -> usize
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
