//! Fault tests of the blocking loop with scripted `Read`/`Write` doubles: reads of one
//! byte, `WouldBlock` and `Interrupted` (retried), short writes, `Ok(0)` writes
//! (`WriteZero`), end of stream at every offset (`UnexpectedEof`, never a hang).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sockmsg_protocol::{encode, Connection, LocalError, Message, PeerError, Phase};
use sockmsg_transport_std::{Framed, Op, TransportError};

/// What the next call of a double does.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Transfer at most this many bytes.
    Bytes(usize),
    /// Fail with this kind.
    Fail(io::ErrorKind),
    /// (writes) Accept nothing: `Ok(0)`.
    Zero,
}

/// A reader over `data` that follows `script`, then `then` for every later call.
struct ScriptedReader {
    data: Vec<u8>,
    pos: usize,
    script: VecDeque<Step>,
    then: Step,
    calls: usize,
}

impl ScriptedReader {
    fn new(data: Vec<u8>, script: impl IntoIterator<Item = Step>, then: Step) -> Self {
        ScriptedReader {
            data,
            pos: 0,
            script: script.into_iter().collect(),
            then,
            calls: 0,
        }
    }
}

impl Read for ScriptedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        match self.script.pop_front().unwrap_or(self.then) {
            Step::Bytes(n) => {
                let rest = &self.data[self.pos..];
                let n = n.min(buf.len()).min(rest.len());
                buf[..n].copy_from_slice(&rest[..n]);
                self.pos += n;
                Ok(n)
            }
            Step::Fail(kind) => Err(io::Error::new(kind, "scripted")),
            Step::Zero => Ok(0),
        }
    }
}

/// A writer that follows `script`, then `then`, collecting what it accepts.
struct ScriptedWriter {
    out: Vec<u8>,
    script: VecDeque<Step>,
    then: Step,
}

impl ScriptedWriter {
    fn new(script: impl IntoIterator<Item = Step>, then: Step) -> Self {
        ScriptedWriter {
            out: Vec::new(),
            script: script.into_iter().collect(),
            then,
        }
    }
}

impl Write for ScriptedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.script.pop_front().unwrap_or(self.then) {
            Step::Bytes(n) => {
                let n = n.min(buf.len());
                self.out.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            Step::Fail(kind) => Err(io::Error::new(kind, "scripted")),
            Step::Zero => Ok(0),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One stream from a reader and a writer.
struct Duplex<R, W> {
    r: R,
    w: W,
}

impl<R: Read, W> Read for Duplex<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.r.read(buf)
    }
}

impl<R, W: Write> Write for Duplex<R, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

const PEER: &str = "192.0.2.7:4242";

fn peer() -> SocketAddr {
    PEER.parse().expect("test address")
}

fn morpheus() -> Message {
    Message::json(&serde_json::json!({"action": "search", "value": "morpheus"}))
        .expect("encodable")
        .with_byteorder(sockmsg_protocol::ByteOrder::Little)
}

/// Three messages of different shapes, one of them larger than the read buffer.
fn messages() -> Vec<Message> {
    vec![
        morpheus(),
        Message::binary("binary/custom-client-binary-type", "binary☺".as_bytes()),
        Message::binary(
            "x/big",
            (0..100_000u32).map(|i| i as u8).collect::<Vec<u8>>(),
        ),
    ]
}

fn wire(messages: &[Message]) -> Vec<u8> {
    messages
        .iter()
        .flat_map(|m| encode(m).expect("encodable"))
        .collect()
}

fn framed_reader(reader: ScriptedReader) -> Framed<Duplex<ScriptedReader, ScriptedWriter>> {
    let stream = Duplex {
        r: reader,
        w: ScriptedWriter::new([], Step::Bytes(usize::MAX)),
    };
    Framed::new(stream, Connection::server(), peer())
}

fn receive_all<S: Read + Write>(framed: &mut Framed<S>) -> Result<Vec<Message>, TransportError> {
    let mut got = Vec::new();
    while let Some(m) = framed.recv()? {
        got.push(m);
    }
    Ok(got)
}

#[test]
fn one_byte_reads_deliver_every_message() -> Result<(), TransportError> {
    let sent = messages();
    let reader = ScriptedReader::new(wire(&sent), [], Step::Bytes(1));
    let mut framed = framed_reader(reader);
    assert_eq!(receive_all(&mut framed)?, sent);
    // End of stream is sticky: asking again is still a clean end, not a hang or an error.
    assert!(framed.recv()?.is_none());
    Ok(())
}

#[test]
fn would_block_and_interrupted_are_retried() -> Result<(), TransportError> {
    let sent = messages();
    let data = wire(&sent);
    // Before every 4 KiB read: an Interrupted, and before every other one a WouldBlock.
    let mut script = Vec::new();
    for i in 0..(data.len() / 4096 + 2) {
        script.push(Step::Fail(io::ErrorKind::Interrupted));
        if i % 2 == 0 {
            script.push(Step::Fail(io::ErrorKind::WouldBlock));
        }
        script.push(Step::Bytes(4096));
    }
    let reader = ScriptedReader::new(data, script, Step::Bytes(4096));
    // A read timeout is set: quick WouldBlocks that keep making progress never reach it.
    let mut framed = framed_reader(reader).with_timeouts(Some(Duration::from_secs(5)), None);
    assert_eq!(receive_all(&mut framed)?, sent);
    // Every chunk took an Interrupted, every other one a WouldBlock too.
    assert!(framed.get_ref().r.calls > 2 * (framed.get_ref().r.data.len() / 4096));
    Ok(())
}

#[test]
fn would_block_forever_is_a_read_timeout() {
    let reader = ScriptedReader::new(
        wire(&[morpheus()])[..10].to_vec(),
        [Step::Bytes(10)],
        Step::Fail(io::ErrorKind::WouldBlock),
    );
    let mut framed = framed_reader(reader).with_timeouts(Some(Duration::from_millis(50)), None);
    let start = Instant::now();
    match framed.recv() {
        Err(TransportError::Timeout { addr, op, after }) => {
            assert_eq!(addr, peer());
            assert_eq!(op, Op::Read);
            assert_eq!(after, Duration::from_millis(50));
        }
        other => panic!("expected a read timeout, got {other:?}"),
    }
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(40), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[test]
fn timed_out_kind_counts_as_would_block() {
    let reader = ScriptedReader::new(Vec::new(), [], Step::Fail(io::ErrorKind::TimedOut));
    let mut framed = framed_reader(reader).with_timeouts(Some(Duration::from_millis(20)), None);
    assert!(matches!(framed.recv(), Err(e) if e.is_timeout()));
}

/// Where the stream of one `len`-byte message with a `header`-byte JSON header stops
/// short at `k` bytes: the phase cut and the bytes it missed.
fn cut_at(k: usize, header: usize, len: usize) -> (Phase, usize) {
    if k < 2 {
        (Phase::Protoheader, 2 - k)
    } else if k < 2 + header {
        (Phase::Header, 2 + header - k)
    } else {
        (Phase::Content, len - k)
    }
}

#[test]
fn end_of_stream_at_every_offset_is_unexpected_eof() {
    for message in [
        morpheus(),
        Message::binary("binary/custom-client-binary-type", "binary☺".as_bytes()),
    ] {
        let bytes = encode(&message).expect("encodable");
        let header = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        for chunk in [1, 7, usize::MAX] {
            for k in 0..bytes.len() {
                let reader = ScriptedReader::new(bytes[..k].to_vec(), [], Step::Bytes(chunk));
                let mut framed = framed_reader(reader);
                let result = framed.recv();
                if k == 0 {
                    assert!(matches!(result, Ok(None)), "k=0: {result:?}");
                    continue;
                }
                let (phase, missing) = cut_at(k, header, bytes.len());
                match result {
                    Err(TransportError::Protocol { addr, source }) => {
                        assert_eq!(addr, peer());
                        assert_eq!(source, PeerError::UnexpectedEof { phase, missing }, "k={k}");
                    }
                    other => panic!("k={k} chunk={chunk}: expected UnexpectedEof, got {other:?}"),
                }
            }
            // And the whole message followed by the end is a message, then a clean end.
            let reader = ScriptedReader::new(bytes.clone(), [], Step::Bytes(chunk));
            let mut framed = framed_reader(reader);
            assert_eq!(
                receive_all(&mut framed).expect("complete"),
                vec![message.clone()]
            );
        }
    }
}

#[test]
fn end_of_stream_inside_the_second_message() {
    let mut data = wire(&[morpheus(), morpheus()]);
    data.truncate(146 + 50);
    let mut framed = framed_reader(ScriptedReader::new(data, [], Step::Bytes(3)));
    assert_eq!(framed.recv().expect("first message"), Some(morpheus()));
    match framed.recv() {
        Err(TransportError::Protocol { source, .. }) => assert_eq!(
            source,
            PeerError::UnexpectedEof {
                phase: Phase::Header,
                missing: 55
            }
        ),
        other => panic!("expected UnexpectedEof, got {other:?}"),
    }
}

#[test]
fn protocol_errors_name_the_peer() {
    let mut data = b"\x00\x02{}".to_vec();
    data.extend_from_slice(b"trailing");
    let mut framed = framed_reader(ScriptedReader::new(data, [], Step::Bytes(usize::MAX)));
    match framed.recv() {
        Err(e @ TransportError::Protocol { .. }) => {
            assert_eq!(
                e.protocol_error(),
                Some(&PeerError::MissingKey { key: "byteorder" }.into())
            );
            assert!(e.to_string().contains(PEER), "{e}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn read_errors_are_classified() {
    for (kind, reset) in [
        (io::ErrorKind::ConnectionReset, true),
        (io::ErrorKind::ConnectionAborted, true),
        (io::ErrorKind::PermissionDenied, false),
    ] {
        let mut framed = framed_reader(ScriptedReader::new(Vec::new(), [], Step::Fail(kind)));
        match framed.recv() {
            Err(TransportError::Reset { op, source, .. }) if reset => {
                assert_eq!(op, Op::Read);
                assert_eq!(source.kind(), kind);
            }
            Err(TransportError::Io { op, source, .. }) if !reset => {
                assert_eq!(op, Op::Read);
                assert_eq!(source.kind(), kind);
            }
            other => panic!("{kind:?}: got {other:?}"),
        }
    }
}

fn framed_writer(writer: ScriptedWriter) -> Framed<Duplex<ScriptedReader, ScriptedWriter>> {
    let stream = Duplex {
        r: ScriptedReader::new(Vec::new(), [], Step::Bytes(0)),
        w: writer,
    };
    Framed::new(stream, Connection::client(), peer())
}

#[test]
fn short_interrupted_and_would_block_writes_send_every_byte() -> Result<(), TransportError> {
    let sent = messages();
    let mut script = Vec::new();
    for i in 0..200 {
        script.push(Step::Bytes(1 + i % 5));
        script.push(Step::Fail(io::ErrorKind::Interrupted));
        if i % 20 == 0 {
            script.push(Step::Fail(io::ErrorKind::WouldBlock));
        }
    }
    let writer = ScriptedWriter::new(script, Step::Bytes(4096));
    let mut framed = framed_writer(writer).with_timeouts(None, Some(Duration::from_secs(5)));
    for m in &sent[..2] {
        framed.send(m.clone())?;
    }
    // Pipelined: queued together, written by one flush.
    framed.queue(sent[2].clone())?;
    framed.queue(sent[0].clone())?;
    framed.flush()?;
    assert_eq!(framed.connection().in_flight(), 4);
    let mut want = wire(&sent);
    want.extend(wire(&sent[..1]));
    assert_eq!(framed.get_ref().w.out, want);
    Ok(())
}

#[test]
fn a_writer_that_accepts_nothing_is_write_zero() {
    let mut framed = framed_writer(ScriptedWriter::new([Step::Bytes(10)], Step::Zero));
    match framed.send(morpheus()) {
        Err(TransportError::Io { addr, op, source }) => {
            assert_eq!(addr, peer());
            assert_eq!(op, Op::Write);
            assert_eq!(source.kind(), io::ErrorKind::WriteZero);
        }
        other => panic!("expected WriteZero, got {other:?}"),
    }
    assert_eq!(framed.get_ref().w.out.len(), 10);
}

#[test]
fn write_would_block_forever_is_a_write_timeout() {
    let writer = ScriptedWriter::new([], Step::Fail(io::ErrorKind::WouldBlock));
    let mut framed = framed_writer(writer).with_timeouts(None, Some(Duration::from_millis(30)));
    match framed.send(morpheus()) {
        Err(TransportError::Timeout { op, .. }) => assert_eq!(op, Op::Write),
        other => panic!("expected a write timeout, got {other:?}"),
    }
}

#[test]
fn broken_pipe_on_write_is_a_reset() {
    let writer = ScriptedWriter::new([], Step::Fail(io::ErrorKind::BrokenPipe));
    let mut framed = framed_writer(writer);
    match framed.send(morpheus()) {
        Err(e @ TransportError::Reset { .. }) => {
            assert_eq!(e.io_kind(), io::ErrorKind::BrokenPipe);
            assert!(e.to_string().contains(PEER), "{e}");
        }
        other => panic!("expected a reset, got {other:?}"),
    }
}

#[test]
fn sending_after_close_is_a_local_protocol_error() {
    let mut framed = framed_writer(ScriptedWriter::new([], Step::Bytes(usize::MAX)));
    framed.connection_mut().close();
    match framed.send(morpheus()) {
        Err(TransportError::Protocol { source, .. }) => {
            assert_eq!(source, LocalError::SendAfterClose);
            assert!(!source.is_peer_error());
        }
        other => panic!("expected SendAfterClose, got {other:?}"),
    }
}
