//! `tokio-baseline`: the demo application's server written as a competent tokio user
//! writes it without sockmsg (a hand-written `tokio_util::codec` with a u16 length, a
//! `serde_json` header and the content, `Framed` + `StreamExt`/`SinkExt`, a task per
//! connection on a current-thread runtime), for comparison with `app-server --transport
//! tokio --workers 1`. It answers the demo's requests byte for byte as `app-server` does
//! (the guide's `json.dumps` formatting), for the search values of the
//! guide's table and any string value. Measure it with `app-bench`; runs until killed.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::Parser;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use sockmsg_app::cli::{resolve, EXIT_FAILURE};
use sockmsg_demo::{lookup, BINARY_PREFIX, BINARY_QUOTE_LEN};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Decoder, Encoder, Framed};

/// The demo application's server, written directly on tokio + tokio-util + serde_json (no
/// sockmsg): the idiomatic server that `app-server --transport tokio` is compared with.
/// One current-thread runtime, a task per connection. Runs until killed. Exit status: 1
/// if it cannot resolve, listen or run, 2 on a usage error.
#[derive(Debug, Parser)]
#[command(name = "tokio-baseline", version)]
struct Args {
    /// Host to listen on.
    #[arg(default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port).
    #[arg(default_value_t = 65432)]
    port: u16,
    /// Write the bound port (number and newline) to this file once listening.
    #[arg(long, value_name = "FILE")]
    port_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `e` is "what failed: why", naming the address or path.
            eprintln!("tokio-baseline: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn serve(args: &Args) -> Result<(), String> {
    let addr = resolve(&args.host, args.port)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        if let Some(path) = &args.port_file {
            sockmsg_bench::write_port_file(path, local.port())?;
        }
        println!("listening on {local}");
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream));
                }
                // Out of descriptors and the like: go on with the connections we have.
                Err(e) => eprintln!("tokio-baseline: accept failed: {e}"),
            }
        }
    })
}

/// One connection: answer each request, in order, until the client closes. Answers to
/// requests already read are fed together and flushed once (`send` would flush, that is
/// write, each one: a pipelining client would pay a system call per answer).
async fn connection(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, MessageCodec);
    while let Some(Ok(mut frame)) = framed.next().await {
        loop {
            let Some(answer) = respond(&frame.0, &frame.1) else {
                return;
            };
            if framed.feed(answer).await.is_err() {
                return;
            }
            match framed.next().now_or_never() {
                Some(Some(Ok(next))) => frame = next,
                // Closed or bad input: deliver what was answered, then close.
                Some(Some(Err(_)) | None) => {
                    let _ = framed.flush().await;
                    return;
                }
                None => break,
            }
        }
        if framed.flush().await.is_err() {
            return;
        }
    }
}

/// The largest content accepted, as the sockmsg default limit.
const MAX_CONTENT: usize = 16 * 1024 * 1024;

/// The protocol header, as JSON, in the guide's key order.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    byteorder: String,
    #[serde(rename = "content-type")]
    content_type: String,
    #[serde(rename = "content-encoding")]
    content_encoding: String,
    #[serde(rename = "content-length")]
    content_length: usize,
}

/// The decoded message: header and content. Answers are encoded from it too.
type Frame = (Header, Bytes);

/// u16 big-endian header length, JSON header, content.
struct MessageCodec;

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Decoder for MessageCodec {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, io::Error> {
        let Some(&[a, b]) = src.get(..2) else {
            return Ok(None);
        };
        let hlen = usize::from(u16::from_be_bytes([a, b]));
        let Some(hbytes) = src.get(2..2 + hlen) else {
            return Ok(None);
        };
        let header: Header = serde_json::from_slice(hbytes).map_err(invalid)?;
        if header.content_length > MAX_CONTENT {
            return Err(invalid("content too long"));
        }
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

impl Encoder<Frame> for MessageCodec {
    type Error = io::Error;

    fn encode(&mut self, (header, content): Frame, dst: &mut BytesMut) -> Result<(), io::Error> {
        let header = to_python_json(&header)?;
        let hlen = u16::try_from(header.len()).map_err(invalid)?;
        dst.reserve(2 + header.len() + content.len());
        dst.put_u16(hlen);
        dst.extend_from_slice(&header);
        dst.extend_from_slice(&content);
        Ok(())
    }
}

/// The JSON request of the demo application.
#[derive(Deserialize)]
struct Request {
    action: String,
    value: serde_json::Value,
}

/// The JSON answer of the demo application.
#[derive(Serialize)]
struct Answer {
    result: String,
}

/// The demo application's answer to one request; `None` closes the connection.
fn respond(header: &Header, content: &[u8]) -> Option<Frame> {
    let (content_type, answer) = if header.content_type == "text/json" {
        let request: Request = serde_json::from_slice(content).ok()?;
        let value = match &request.value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let result = if request.action == "search" {
            match lookup(&value) {
                Some(found) => found.to_owned(),
                None => format!("No match for \"{value}\"."),
            }
        } else {
            format!("Error: invalid action \"{}\".", request.action)
        };
        ("text/json", to_python_json(&Answer { result }).ok()?)
    } else {
        let quoted = content.get(..BINARY_QUOTE_LEN).unwrap_or(content);
        (
            "binary/custom-server-binary-type",
            [BINARY_PREFIX, quoted].concat(),
        )
    };
    let header = Header {
        byteorder: if cfg!(target_endian = "little") {
            "little"
        } else {
            "big"
        }
        .to_owned(),
        content_type: content_type.to_owned(),
        content_encoding: if content_type == "text/json" {
            "utf-8"
        } else {
            "binary"
        }
        .to_owned(),
        content_length: answer.len(),
    };
    Some((header, Bytes::from(answer)))
}

/// `value` as the guide's Python peers write it (`json.dumps(value, ensure_ascii=False)`):
/// `", "` and `": "` separators; strings escaped as `serde_json` escapes them, which is
/// Python's escaping without `ensure_ascii`.
fn to_python_json<T: Serialize>(value: &T) -> Result<Vec<u8>, io::Error> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value.serialize(&mut ser).map_err(invalid)?;
    Ok(out)
}

struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockmsg_demo::{binary_request, json_request, DemoService};
    use sockmsg_protocol::{encode, Message};

    /// What this server writes for `request`, on the wire.
    fn wire(request: &Message) -> Vec<u8> {
        let mut codec = MessageCodec;
        let mut buf = BytesMut::from(&encode(request).unwrap()[..]);
        let (header, content) = codec.decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        let mut out = BytesMut::new();
        codec
            .encode(respond(&header, &content).unwrap(), &mut out)
            .unwrap();
        out.to_vec()
    }

    #[test]
    fn answers_byte_for_byte_as_the_demo_service() {
        let demo = DemoService::new();
        let mut requests: Vec<Message> = [
            "morpheus",
            "ring",
            "\u{1f436}",
            "neo",
            "a \"quoted\" \u{7f} é",
            "tab\there\u{1}\\",
        ]
        .iter()
        .map(|v| json_request("search", v))
        .collect();
        requests.push(json_request("find", "neo"));
        requests.push(binary_request("binary", "☺ and more than ten bytes"));
        for request in &requests {
            let expected = encode(&demo.respond(request).unwrap()).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&wire(request)),
                String::from_utf8_lossy(&expected),
                "request {:?}",
                String::from_utf8_lossy(request.content())
            );
        }
    }

    #[test]
    fn a_split_message_waits_and_a_bad_header_is_refused() {
        let mut codec = MessageCodec;
        let request = json_request("search", "morpheus");
        let bytes = encode(&request).unwrap();
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&bytes[bytes.len() - 1..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap().unwrap().1,
            request.content()
        );
        let mut bad = BytesMut::from(&b"\x00\x02{}"[..]);
        assert_eq!(
            codec.decode(&mut bad).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
