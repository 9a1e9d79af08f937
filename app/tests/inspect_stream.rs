//! The capture inspector on the guide's example streams: the listing never depends on how
//! the input is split, malformed and truncated streams stop with the right offset, and
//! large captures are read in bounded chunks.

use std::io::{self, Read};

use sockmsg_app::inspect::{inspect, InspectError, Options, CHUNK};
use sockmsg_protocol::{encode, Message};

/// PROTOCOL.md's worked examples, in one stream: a search, its response, a binary request
/// and its response.
fn guide_stream() -> Vec<u8> {
    use sockmsg_tests::{
        BINARY_REQUEST, BINARY_RESPONSE, SEARCH_MORPHEUS_REQUEST, SEARCH_MORPHEUS_RESPONSE,
    };
    [
        SEARCH_MORPHEUS_REQUEST,
        SEARCH_MORPHEUS_RESPONSE,
        BINARY_REQUEST,
        BINARY_RESPONSE,
    ]
    .concat()
}

/// A reader that hands out its bytes in pieces of the given sizes, cycling.
struct Pieces<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
    largest_request: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.largest_request = self.largest_request.max(buf.len());
        let size = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn listing(data: &[u8], sizes: Vec<usize>) -> (Result<u64, String>, String) {
    let mut out = Vec::new();
    let reader = Pieces {
        data,
        sizes,
        next: 0,
        largest_request: 0,
    };
    let result = inspect(reader, &mut out, &Options::default())
        .map(|s| s.messages)
        .map_err(|e| e.to_string());
    (result, String::from_utf8(out).expect("utf-8 listing"))
}

#[test]
fn the_guide_examples_are_listed_exactly() {
    let stream = guide_stream();
    let (result, text) = listing(&stream, vec![CHUNK]);
    assert_eq!(result, Ok(4));
    let expected = "\
#1 at offset 0: 146 bytes (2 + 103 header + 41 content)
  header:  {\"byteorder\": \"little\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": 41}
  content: text/json (utf-8), 41 bytes
    {
      \"action\": \"search\",
      \"value\": \"morpheus\"
    }
#2 at offset 146: 148 bytes (2 + 103 header + 43 content)
  header:  {\"byteorder\": \"little\", \"content-type\": \"text/json\", \"content-encoding\": \"utf-8\", \"content-length\": 43}
  content: text/json (utf-8), 43 bytes
    {
      \"result\": \"Follow the white rabbit. 🐰\"
    }
#3 at offset 294: 137 bytes (2 + 126 header + 9 content)
  header:  {\"byteorder\": \"little\", \"content-type\": \"binary/custom-client-binary-type\", \"content-encoding\": \"binary\", \"content-length\": 9}
  content: binary/custom-client-binary-type (binary), 9 bytes
    00000000  62 69 6e 61 72 79 e2 98  ba                       |binary...|
#4 at offset 431: 165 bytes (2 + 127 header + 36 content)
  header:  {\"byteorder\": \"little\", \"content-type\": \"binary/custom-server-binary-type\", \"content-encoding\": \"binary\", \"content-length\": 36}
  content: binary/custom-server-binary-type (binary), 36 bytes
    00000000  46 69 72 73 74 20 31 30  20 62 79 74 65 73 20 6f  |First 10 bytes o|
    00000010  66 20 72 65 71 75 65 73  74 3a 20 62 69 6e 61 72  |f request: binar|
    00000020  79 e2 98 ba                                       |y...|
4 message(s), 596 bytes, clean end of stream
";
    assert_eq!(text, expected);
}

#[test]
fn the_listing_does_not_depend_on_how_the_input_is_split() {
    let stream = guide_stream();
    let (_, whole) = listing(&stream, vec![CHUNK]);
    for sizes in [vec![1], vec![2, 3], vec![7, 1, 100], vec![145, 1, 2]] {
        assert_eq!(listing(&stream, sizes.clone()).1, whole, "pieces {sizes:?}");
    }
}

#[test]
fn headers_are_shown_as_sent() {
    // Keys in another order, other whitespace and an extra key: shown as they came.
    let header = "{ \"content-length\":2,\n\"content-type\":\"text/json\",\"x-trace\":[1],\"content-encoding\":\"utf-8\",\"byteorder\":\"big\"}";
    let mut stream = (header.len() as u16).to_be_bytes().to_vec();
    stream.extend_from_slice(header.as_bytes());
    stream.extend_from_slice(b"{}");
    let (result, text) = listing(&stream, vec![5]);
    assert_eq!(result, Ok(1));
    assert!(
        text.contains(
            "header:  { \"content-length\":2,\\n\"content-type\":\"text/json\",\"x-trace\":[1],"
        ),
        "{text}"
    );
    assert!(text.contains("\n    {}\n"), "{text}");
}

#[test]
fn a_malformed_message_stops_the_listing_with_its_offset() {
    let mut stream = guide_stream();
    let good = stream.len() as u64;
    // A header without content-length: detected once the whole header has been read.
    let header =
        br#"{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8"}"#;
    stream.extend_from_slice(&(header.len() as u16).to_be_bytes());
    stream.extend_from_slice(header);
    stream.extend_from_slice(b"{\"never\": \"read\"}");
    for sizes in [vec![CHUNK], vec![1], vec![3, 50]] {
        let mut out = Vec::new();
        let reader = Pieces {
            data: &stream,
            sizes,
            next: 0,
            largest_request: 0,
        };
        let err = inspect(reader, &mut out, &Options::default()).expect_err("malformed");
        match &err {
            InspectError::Malformed {
                error,
                offset,
                message_start,
                message,
                messages,
            } => {
                assert_eq!(error.kind(), "missing-key");
                assert_eq!(*message_start, good);
                assert_eq!(*offset, good + 2 + header.len() as u64);
                assert_eq!((*message, *messages), (5, 4));
            }
            InspectError::Read(e) | InspectError::Write(e) => panic!("io error {e}"),
        }
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("#4 at offset 431"));
        assert!(!text.contains("#5"));
        assert!(err.to_string().contains(&format!(
            "at byte offset {}",
            good + 2 + header.len() as u64
        )));
    }
}

#[test]
fn bad_json_content_is_reported_at_the_end_of_its_message() {
    let message = Message::from_parts("text/json".into(), "utf-8".into(), b"{\"a\": }".to_vec());
    let stream = encode(&message).expect("encode");
    let mut out = Vec::new();
    let err = inspect(&stream[..], &mut out, &Options::default()).expect_err("bad json");
    let InspectError::Malformed {
        error,
        offset,
        message_start,
        ..
    } = err
    else {
        panic!("not malformed: {err}");
    };
    assert_eq!(error.kind(), "invalid-json");
    assert_eq!(message_start, 0);
    assert_eq!(offset, stream.len() as u64);
}

#[test]
fn a_truncated_capture_says_what_is_missing() {
    let stream = guide_stream();
    let cut = &stream[..stream.len() - 10];
    let mut out = Vec::new();
    let err = inspect(cut, &mut out, &Options::default()).expect_err("truncated");
    let text = err.to_string();
    assert!(
        text.contains("unexpected end of stream in the content: 10 more byte(s) expected"),
        "{text}"
    );
    assert!(
        text.contains(&format!("at byte offset {}", cut.len())),
        "{text}"
    );
    assert!(
        text.contains("message #4, which starts at byte offset 431"),
        "{text}"
    );
}

#[test]
fn an_empty_capture_is_a_clean_empty_stream() {
    let mut out = Vec::new();
    let summary = inspect(&b""[..], &mut out, &Options::default()).expect("empty");
    assert_eq!((summary.messages, summary.bytes), (0, 0));
    assert_eq!(out, b"0 message(s), 0 bytes, clean end of stream\n");
}

/// Produces `count` copies of one message, lazily, without holding the stream.
struct Repeat {
    message: Vec<u8>,
    count: u64,
    at: usize,
    served: u64,
    largest_request: usize,
}

impl Read for Repeat {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.largest_request = self.largest_request.max(buf.len());
        let mut n = 0;
        while n < buf.len() && self.count > 0 {
            let take = (self.message.len() - self.at).min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&self.message[self.at..self.at + take]);
            n += take;
            self.at += take;
            if self.at == self.message.len() {
                self.at = 0;
                self.count -= 1;
            }
        }
        self.served += n as u64;
        Ok(n)
    }
}

#[test]
fn large_captures_stream_through_in_chunks() {
    let message = encode(&Message::binary("x/y", vec![7u8; 20_000])).expect("encode");
    let count = 1_000; // about 20 MB
    let mut reader = Repeat {
        message: message.clone(),
        count,
        at: 0,
        served: 0,
        largest_request: 0,
    };
    let mut out = Vec::new();
    let options = Options {
        quiet: true,
        ..Options::default()
    };
    let summary = inspect(&mut reader, &mut out, &options).expect("clean");
    assert_eq!(summary.messages, count);
    assert_eq!(summary.bytes, count * message.len() as u64);
    assert_eq!(reader.served, summary.bytes);
    // Read in chunks of bounded size, never the whole capture at once.
    assert_eq!(reader.largest_request, CHUNK);
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        format!(
            "1000 message(s), {} bytes, clean end of stream\n",
            summary.bytes
        )
    );
}
