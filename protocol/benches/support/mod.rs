//! What the decode benchmark and the `profile_decode` example share: the request they
//! decode and the straightforward decoder they measure against.

/// PROTOCOL.md's 146-byte search request.
pub const SEARCH: &[u8] = b"\x00g{\"byteorder\": \"little\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": 41}{\"action\": \"search\", \"value\": \"morpheus\"}";

/// The straightforward decoder issue 2 measures against: u16 length, `serde_json` of a
/// borrowed header struct, slice the content. Returns how many messages `stream` held.
pub fn baseline(stream: &[u8]) -> usize {
    #[derive(serde::Deserialize)]
    struct H<'a> {
        #[serde(borrow)]
        byteorder: &'a str,
        #[serde(rename = "content-type", borrow)]
        content_type: &'a str,
        #[serde(rename = "content-encoding", borrow)]
        content_encoding: &'a str,
        #[serde(rename = "content-length")]
        content_length: usize,
    }
    let mut rest = stream;
    let mut n = 0;
    while let Some((ph, tail)) = rest.split_first_chunk::<2>() {
        let hl = usize::from(u16::from_be_bytes(*ph));
        let (hb, tail) = tail.split_at(hl);
        let h: H = serde_json::from_slice(hb).expect("valid header");
        let (content, tail) = tail.split_at(h.content_length);
        std::hint::black_box((h.byteorder, h.content_type, h.content_encoding, content));
        n += 1;
        rest = tail;
    }
    n
}
