//! The conformance corpus (`tests/vectors/`): every vector decoded whole, one byte at a time
//! and split at every position, through each way in (a `Decoder` over slices, a
//! `Connection`'s `read_from` and `read_buf`/`commit`), must give one verdict,
//! and that verdict must be the one `tests/vectors/expected.txt` gives.
//!
//! `SOCKMSG_BLESS=1 cargo test -p sockmsg-tests --test vectors` rewrites the verdicts in
//! `expected.txt` from the decoder (review the diff before committing it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sockmsg_fuzz_support::{decode_all_ways, Outcome};
use sockmsg_protocol::{Decoder, Error, Event, JsonKind, Limits, PeerError, Phase};

/// Vectors longer than this are split at the first `BIG_SPLITS` positions only (every
/// position of a 65 KiB vector would be 65,536 full decodes); they are still decoded whole
/// and one byte at a time.
const BIG: usize = 4096;
const BIG_SPLITS: usize = 512;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

struct Entry {
    line: usize,
    limits: Vec<(String, String)>,
    verdict: String,
}

fn parse_expected(text: &str) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let mut rest = rest.trim();
        let mut limits = Vec::new();
        if let Some(after) = rest.strip_prefix('[') {
            let (inside, tail) = after
                .split_once(']')
                .unwrap_or_else(|| panic!("expected.txt:{}: unclosed [", i + 1));
            for kv in inside.split_whitespace() {
                let (k, v) = kv
                    .split_once('=')
                    .unwrap_or_else(|| panic!("expected.txt:{}: bad limit {kv:?}", i + 1));
                limits.push((k.to_owned(), v.to_owned()));
            }
            rest = tail.trim();
        }
        let verdict = rest.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            verdict.starts_with("ok ") || verdict.starts_with("err "),
            "expected.txt:{}: verdict must start with ok or err: {line:?}",
            i + 1
        );
        let previous = out.insert(
            name.to_owned(),
            Entry {
                line: i,
                limits,
                verdict,
            },
        );
        assert!(previous.is_none(), "expected.txt: {name} listed twice");
    }
    out
}

fn limits_of(entry: &Entry) -> Limits {
    let mut limits = Limits::default();
    for (k, v) in &entry.limits {
        let n: u64 = v.parse().unwrap_or_else(|_| panic!("limit {k}={v}"));
        match k.as_str() {
            "max_header_len" => limits.max_header_len = n as usize,
            "max_content_len" => limits.max_content_len = n,
            "max_depth" => limits.max_depth = n as usize,
            "check_json_content" => limits.check_json_content = n != 0,
            _ => panic!("unknown limit {k}"),
        }
    }
    limits
}

fn kind_name(k: JsonKind) -> &'static str {
    match k {
        JsonKind::Null => "null",
        JsonKind::Bool => "bool",
        JsonKind::Integer => "integer",
        JsonKind::Float => "float",
        JsonKind::String => "string",
        JsonKind::Array => "array",
        JsonKind::Object => "object",
    }
}

fn phase_name(p: Option<Phase>) -> &'static str {
    match p {
        Some(Phase::Protoheader) => "protoheader",
        Some(Phase::Header) => "header",
        Some(Phase::Content) => "content",
        None => "none",
    }
}

/// The verdict line for an outcome, in expected.txt's words.
fn verdict(outcome: &Outcome) -> String {
    let n = outcome.messages.len();
    let e = match &outcome.end {
        Ok(Event::End) => return format!("ok {n}"),
        Ok(other) => panic!("stream ended with {other:?}"),
        Err(e) => e.peer().expect("a decoder reports peer errors"),
    };
    let mut s = format!("err {} {}", e.kind(), phase_name(Some(e.phase())));
    let detail = match e {
        PeerError::HeaderTooLong { size, max } => format!("size={size} max={max}"),
        PeerError::InvalidUtf8 { offset, .. } => format!("offset={offset}"),
        PeerError::InvalidJson { .. } => String::new(),
        PeerError::NestingTooDeep { max, .. } => format!("max={max}"),
        PeerError::HeaderNotObject { found } => format!("found={}", kind_name(*found)),
        PeerError::MissingKey { key } => format!("key={key}"),
        PeerError::WrongType { key, found, .. } => format!("key={key} found={}", kind_name(*found)),
        PeerError::InvalidByteorder { value } => format!("value={value:?}"),
        PeerError::NegativeContentLength { size } => format!("size={size}"),
        PeerError::ContentTooLong { size, max } => format!("size={size} max={max}"),
        PeerError::UnsupportedEncoding { encoding } => format!("encoding={encoding:?}"),
        PeerError::UnexpectedEof { missing, .. } => format!("missing={missing}"),
        other => panic!("not a decoder verdict: {other:?}"),
    };
    if !detail.is_empty() {
        s.push(' ');
        s.push_str(&detail);
    }
    if n > 0 {
        let _ = write!(s, " after={n}");
    }
    s
}

fn vectors() -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir()).expect("tests/vectors") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "bin") {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 name")
                .to_owned();
            out.insert(name, std::fs::read(&path).expect("read vector"));
        }
    }
    out
}

#[test]
fn every_vector_gets_its_expected_verdict_however_it_is_split() {
    let expected_path = dir().join("expected.txt");
    let expected_text = std::fs::read_to_string(&expected_path).expect("expected.txt");
    let expected = parse_expected(&expected_text);
    let vectors = vectors();

    let mut problems = Vec::new();
    let mut actual = BTreeMap::new();
    for (name, bytes) in &vectors {
        let Some(entry) = expected.get(name) else {
            problems.push(format!("{name}.bin has no line in expected.txt"));
            continue;
        };
        let limits = limits_of(entry);
        let splits = if bytes.len() > BIG {
            BIG_SPLITS
        } else {
            usize::MAX
        };
        let got = std::panic::catch_unwind(|| verdict(&decode_all_ways(bytes, &limits, splits)))
            .unwrap_or_else(|_| "PANIC (the ways of splitting disagree, see above)".to_owned());
        if got != entry.verdict {
            problems.push(format!(
                "{name}:\n    expected: {}\n    actual:   {got}",
                entry.verdict
            ));
        }
        actual.insert(name.clone(), got);
    }
    for name in expected.keys() {
        if !vectors.contains_key(name) {
            problems.push(format!("expected.txt lists {name}, which has no .bin"));
        }
    }

    if std::env::var_os("SOCKMSG_BLESS").is_some() {
        bless(&expected_path, &expected_text, &expected, &actual);
        return;
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) with the conformance vectors:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Rewrites the verdicts of the lines whose vector decoded differently.
fn bless(
    path: &Path,
    text: &str,
    expected: &BTreeMap<String, Entry>,
    actual: &BTreeMap<String, String>,
) {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for (name, entry) in expected {
        if let Some(got) = actual.get(name) {
            if *got != entry.verdict {
                let limits = if entry.limits.is_empty() {
                    String::new()
                } else {
                    let kv: Vec<String> = entry
                        .limits
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    format!("[{}] ", kv.join(" "))
                };
                lines[entry.line] = format!("{name:<38} {limits}{got}");
            }
        }
    }
    for (name, got) in actual {
        if !expected.contains_key(name) {
            lines.push(format!("{name:<38} {got}"));
        }
    }
    std::fs::write(path, lines.join("\n") + "\n").expect("write expected.txt");
}

#[test]
fn the_corpus_covers_what_the_issue_asks() {
    let expected =
        parse_expected(&std::fs::read_to_string(dir().join("expected.txt")).expect("expected.txt"));
    let invalid: Vec<&Entry> = expected
        .values()
        .filter(|e| e.verdict.starts_with("err "))
        .collect();
    assert!(
        invalid.len() >= 30,
        "only {} invalid vectors",
        invalid.len()
    );
    assert!(
        expected.values().any(|e| e.verdict == "ok 5"),
        "several messages in one buffer"
    );
    // Every error a decoder can report on a peer's bytes is exercised.
    let kinds: BTreeSet<&str> = invalid
        .iter()
        .filter_map(|e| e.verdict.split_whitespace().nth(1))
        .collect();
    for kind in [
        "header-too-long",
        "invalid-utf8",
        "invalid-json",
        "nesting-too-deep",
        "header-not-object",
        "missing-key",
        "wrong-type",
        "invalid-byteorder",
        "negative-content-length",
        "content-too-long",
        "unsupported-encoding",
        "unexpected-eof",
    ] {
        assert!(kinds.contains(kind), "no vector for {kind}");
    }
    // A cut in each phase.
    for phase in ["protoheader", "header", "content"] {
        let cut = format!("err unexpected-eof {phase} ");
        assert!(
            expected.values().any(|e| e.verdict.starts_with(&cut)),
            "no cut in the {phase}"
        );
    }
    // Invalid JSON and UTF-8 in both header and content.
    for verdict in [
        "err invalid-json header",
        "err invalid-json content",
        "err invalid-utf8 header",
        "err invalid-utf8 content",
        "err nesting-too-deep header",
        "err nesting-too-deep content",
    ] {
        assert!(
            expected.values().any(|e| e.verdict.starts_with(verdict)),
            "no vector for {verdict}"
        );
    }
}

/// A violation is reported as soon as the bytes that prove it have arrived, not at the end
/// of the stream: the server can close at once. Feeding each invalid vector one byte at a
/// time, the error must appear no later than the byte where the verdict is decided, and
/// in particular before the end of stream is signalled, unless the verdict is a cut.
#[test]
fn violations_are_reported_before_the_end_of_stream() {
    let expected =
        parse_expected(&std::fs::read_to_string(dir().join("expected.txt")).expect("expected.txt"));
    for (name, bytes) in vectors() {
        let entry = &expected[&name];
        if !entry.verdict.starts_with("err ") || entry.verdict.contains("unexpected-eof") {
            continue;
        }
        let mut dec = Decoder::new(limits_of(entry));
        let mut failed_at = None;
        // Where the message being decoded began (read before each call, as a transport
        // logging the offending message would).
        let mut start = 0;
        for (i, b) in bytes.iter().enumerate() {
            let mut input = std::slice::from_ref(b);
            loop {
                start = dec.message_start() as usize;
                match dec.decode(&mut input) {
                    Ok(Event::Message(_)) => {}
                    Ok(Event::NeedData) => break,
                    Ok(Event::End) => panic!("{name}: End before end of stream"),
                    Err(_) => {
                        failed_at = Some(i);
                        break;
                    }
                }
            }
            if failed_at.is_some() {
                break;
            }
        }
        let Some(at) = failed_at else {
            panic!("{name}: the violation was only reported at end of stream");
        };
        // Not one byte later than needed: a bad protoheader on its second byte, a bad header
        // on its last byte, bad content on its last byte (after the header).
        let error = dec.next_event().expect_err("the decoder stays failed");
        let hlen = usize::from(u16::from_be_bytes([bytes[start], bytes[start + 1]]));
        let header_end = start + 1 + hlen;
        match Some(error.phase()) {
            Some(Phase::Protoheader) => assert_eq!(at, start + 1, "{name}: {error}"),
            Some(Phase::Header) => assert_eq!(at, header_end, "{name}: {error}"),
            Some(Phase::Content) => {
                let hdr = sockmsg_protocol::parse_header(
                    &bytes[start + 2..=header_end],
                    &Limits::default(),
                )
                .expect("a content error follows a good header");
                let content_end = header_end + hdr.content_length as usize;
                assert_eq!(at, content_end, "{name}: {error}");
            }
            None => panic!("{name}: {error:?} has no phase"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Through live servers: both transports
// ---------------------------------------------------------------------------------------

mod live {
    use super::*;

    use std::io::{self, Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread;
    use std::time::{Duration, Instant};

    use sockmsg_app::demo::{json_request, request, DemoService};
    use sockmsg_app::serve::{spawn, RunningServer, ServerConfig, Transport};
    use sockmsg_protocol::Message;
    use sockmsg_server::Service;
    use sockmsg_transport_std::{Client, ClientConfig};

    /// The servers' own timeouts: far longer than anything this test waits, so a close
    /// within [`AT_ONCE`] is the server's reaction to the bytes, not a timeout.
    const SERVER_TIMEOUT: Duration = Duration::from_secs(60);
    /// "At once": the bound on the time from the last byte (or the write shutdown) to the
    /// close. Generous for a loaded 2-core machine, and a 12th of the server timeouts.
    const AT_ONCE: Duration = Duration::from_secs(5);
    /// Requests each good client sends at least.
    const GOOD_REQUESTS: usize = 25;

    /// Everything the servers log at WARN and above, shared by the tests of this binary.
    fn log() -> Arc<Mutex<Vec<u8>>> {
        sockmsg_tests::log::captured(tracing::Level::WARN)
    }

    /// A server on `transport` with the demo service, timeouts far beyond the test's
    /// waits, and (mio) two event loops.
    fn start(transport: Transport) -> RunningServer {
        let settings = ServerConfig {
            idle_timeout: Some(SERVER_TIMEOUT),
            header_deadline: Some(SERVER_TIMEOUT),
            write_deadline: Some(SERVER_TIMEOUT),
            workers: 2,
            ..ServerConfig::default()
        };
        let service: Arc<dyn Service> = Arc::new(DemoService::new());
        spawn(
            transport,
            "127.0.0.1:0".parse().expect("addr"),
            &settings,
            service,
        )
        .expect("server starts")
    }

    /// A well-behaved client: requests one after another on one connection until told to
    /// stop (and at least [`GOOD_REQUESTS`]); every answer must be exactly the demo's.
    /// Returns (answers, wrong answers described).
    fn good_client(addr: SocketAddr, id: usize, stop: Arc<AtomicBool>) -> (usize, Vec<String>) {
        let cases: [(&str, &str, bool); 6] = [
            ("search", "morpheus", true),
            ("search", "ring", true),
            ("search", "\u{1f436}", true),
            ("search", "nothing here", true),
            ("lookup", "x", true),
            ("binary", "\u{263a} payload", false),
        ];
        let demo = DemoService::new();
        let mut wrong = Vec::new();
        let mut client = match Client::connect(addr, &ClientConfig::default()) {
            Ok(c) => c,
            Err(e) => return (0, vec![format!("client {id}: connect: {e}")]),
        };
        let mut n = 0;
        while n < GOOD_REQUESTS || !stop.load(Ordering::SeqCst) {
            let (action, value, json) = cases[(n + id) % cases.len()];
            let req = if json {
                json_request(action, value)
            } else {
                request(action, value)
            };
            let want = demo
                .respond(&req)
                .expect("the demo answers its own requests");
            match client.request(req) {
                Ok(got) if got == want => {}
                Ok(got) => wrong.push(format!("client {id} request {n}: {got:?} != {want:?}")),
                Err(e) => {
                    wrong.push(format!("client {id} request {n}: {e}"));
                    break;
                }
            }
            n += 1;
        }
        (n, wrong)
    }

    struct Attack {
        name: String,
        port: u16,
        error: Error,
    }

    /// Sends one invalid vector on its own connection and checks the server's reaction:
    /// it answers the complete messages before the violation, then closes within
    /// [`AT_ONCE`] without being asked (a truncated vector is followed by the client's
    /// `shutdown(SHUT_WR)`, and closed at once too).
    fn attack(addr: SocketAddr, name: &str, bytes: &[u8]) -> Result<Attack, String> {
        let outcome = decode_all_ways(bytes, &Limits::default(), 0);
        let Err(error) = outcome.end else {
            return Err(format!("{name}: not an invalid vector"));
        };
        let demo = DemoService::new();
        let want: Vec<Message> = outcome
            .messages
            .iter()
            .map(|m| demo.respond(m).expect("demo answers"))
            .collect();
        let truncated = matches!(error, Error::Peer(PeerError::UnexpectedEof { .. }));

        let mut stream = TcpStream::connect(addr).map_err(|e| format!("{name}: connect: {e}"))?;
        let port = stream.local_addr().map_err(|e| e.to_string())?.port();
        stream
            .set_read_timeout(Some(AT_ONCE * 2))
            .map_err(|e| e.to_string())?;
        // The server may close (and reset) before taking every byte: that is its right.
        let _ = stream.write_all(bytes);
        if truncated {
            stream
                .shutdown(Shutdown::Write)
                .map_err(|e| format!("{name}: shutdown: {e}"))?;
        }
        let sent = Instant::now();
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(format!(
                        "{name}: not closed after {:?} ({e}); {} bytes received",
                        sent.elapsed(),
                        received.len()
                    ))
                }
            }
        }
        let took = sent.elapsed();
        if took > AT_ONCE {
            return Err(format!("{name}: closed only after {took:?}"));
        }
        let mut dec = Decoder::new(Limits::default());
        let mut got = Vec::new();
        let mut input = &received[..];
        let mut eof = false;
        loop {
            match dec.decode(&mut input) {
                Ok(Event::Message(m)) => got.push(m),
                Ok(Event::NeedData) if !eof => {
                    dec.receive_eof();
                    eof = true;
                }
                Ok(Event::End) => break,
                other => return Err(format!("{name}: the server's answers end with {other:?}")),
            }
        }
        if got != want {
            return Err(format!(
                "{name}: {} answer(s), expected {} (to the messages before the violation)",
                got.len(),
                want.len()
            ));
        }
        Ok(Attack {
            name: name.to_owned(),
            port,
            error,
        })
    }

    /// The whole scenario against one running server.
    fn conformance_against(transport: Transport) {
        let server = start(transport);
        let log = log();
        let expected = parse_expected(
            &std::fs::read_to_string(dir().join("expected.txt")).expect("expected.txt"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let good: Vec<_> = (0..4)
            .map(|id| {
                let stop = Arc::clone(&stop);
                let addr = server.addr();
                thread::spawn(move || good_client(addr, id, stop))
            })
            .collect();

        let mut failures = Vec::new();
        let mut attacks = Vec::new();
        for (name, bytes) in vectors() {
            let entry = &expected[&name];
            // Vectors with their own limits need a server configured so: not this one.
            if !entry.verdict.starts_with("err ") || !entry.limits.is_empty() {
                continue;
            }
            match attack(server.addr(), &name, &bytes) {
                Ok(a) => attacks.push(a),
                Err(e) => failures.push(e),
            }
        }
        stop.store(true, Ordering::SeqCst);
        let mut answers = 0;
        for g in good {
            let (n, wrong) = g.join().expect("good client thread");
            assert!(
                n >= GOOD_REQUESTS,
                "{transport}: a good client got {n} answers"
            );
            answers += n;
            failures.extend(wrong);
        }

        // The server still serves, on a fresh connection.
        let demo = DemoService::new();
        let req = json_request("search", "ring");
        let want = demo.respond(&req).expect("demo");
        match Client::connect(server.addr(), &ClientConfig::default())
            .and_then(|mut c| c.request(req))
        {
            Ok(got) if got == want => {}
            other => failures.push(format!("after the attacks: {other:?}")),
        }

        // Each violation was logged as the typed error, naming the connection.
        let text =
            String::from_utf8_lossy(&log.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
        for a in &attacks {
            let port = format!(":{}", a.port);
            let shown = a.error.to_string();
            if !text
                .lines()
                .any(|l| l.contains(&port) && l.contains(&shown))
            {
                failures.push(format!("{}: no log line with {port} and {shown:?}", a.name));
            }
        }

        let served = server.stop(Duration::from_secs(30));
        assert!(served.is_ok(), "{transport}: serve returned {served:?}");
        assert!(
            attacks.len() >= 60,
            "{transport}: only {} invalid vectors sent",
            attacks.len()
        );
        assert!(
            failures.is_empty(),
            "{transport}: {} failure(s) ({} good answers):\n{}",
            failures.len(),
            answers,
            failures.join("\n")
        );
    }

    /// On every transport (a new one is covered by adding it to `Transport::ALL`).
    #[test]
    fn invalid_vectors_through_every_server() {
        for &transport in Transport::ALL {
            conformance_against(transport);
        }
    }
}
