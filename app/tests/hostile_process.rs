//! Hostile peers against the `app-server` process (issue 12), where the figure that
//! matters is the process's own: CPU time and resident memory from `/proc/PID`, and its
//! log. Each test starts its own server on 127.0.0.1 port 0, on every transport, and
//! measures that process only, so tests running at the same time do not disturb the
//! figures (CPU time, not wall time, on this shared machine).
//!
//! The bounds are the issue's targets where they are met, with room for the debug build
//! the tests run (the release figures are in RELIABILITY.md, from `scripts/attacks.sh`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use sockmsg_app::serve::Transport;
use sockmsg_tests::ChildGuard;

/// Every transport `app-server --transport` takes.
fn transports() -> impl Iterator<Item = &'static str> {
    Transport::ALL.iter().map(|t| t.name())
}
const LIMIT: Duration = Duration::from_secs(30);

/// `app-server 127.0.0.1 0 --transport T ARGS...` at its default log level, once it
/// printed its `listening on` line.
fn start(transport: &str, args: &[&str]) -> (ChildGuard, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_app-server"));
    cmd.args(["127.0.0.1", "0", "--transport", transport])
        .args(args)
        .env_remove("RUST_LOG");
    let mut server = ChildGuard::spawn("app-server", &mut cmd);
    let addr = server.listening_addr(LIMIT);
    (server, addr)
}

/// A field of `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// User + system CPU time of process `pid`, from `/proc/PID/stat`, in clock ticks of
/// 10 ms (the kernel's USER_HZ on Linux).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .expect("stat format");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

/// One message: 2-byte big-endian header length, JSON header, content.
fn message(content_type: &str, content: &[u8]) -> Vec<u8> {
    let header = format!(
        r#"{{"byteorder": "little", "content-type": {}, "content-encoding": "utf-8", "content-length": {}}}"#,
        json_string(content_type),
        content.len()
    );
    let mut out = Vec::with_capacity(2 + header.len() + content.len());
    out.extend_from_slice(
        &u16::try_from(header.len())
            .expect("short header")
            .to_be_bytes(),
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(content);
    out
}

fn json_string(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Sends `bytes` and reads one answer (or until the server closes); returns the bytes read.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    s.set_write_timeout(Some(LIMIT)).expect("timeout");
    s.write_all(bytes).expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading the answer: {e} (after {} bytes)", got.len()),
        }
        if complete(&got) {
            break;
        }
    }
    got
}

/// Whether `bytes` hold one whole message.
fn complete(bytes: &[u8]) -> bool {
    let Some(len) = bytes
        .get(..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return false;
    };
    let Some(header) = bytes.get(2..2 + len) else {
        return false;
    };
    let text = String::from_utf8_lossy(header);
    let content_len = text
        .split("\"content-length\":")
        .nth(1)
        .and_then(|rest| {
            let digits: String = rest
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<usize>().ok()
        })
        .expect("a content-length in the answer's header");
    bytes.len() >= 2 + len + content_len
}

/// The guide request `{"action": "search", "value": "morpheus"}`.
fn guide_request() -> Vec<u8> {
    message("text/json", br#"{"action": "search", "value": "morpheus"}"#)
}

/// An object of 128 k distinct keys (1.4 MB, which cost 16.2 s of CPU before issue 12)
/// costs the server at most 2 s of CPU in this debug build (0.04 to 0.06 s in release).
#[test]
fn many_distinct_keys_cost_cpu_linear_in_the_request() {
    let mut value = String::from("{");
    for i in 0..128_000 {
        if i > 0 {
            value.push(',');
        }
        value.push_str(&format!("\"k{i}\":0"));
    }
    value.push('}');
    let request = message(
        "text/json",
        format!(r#"{{"action": "search", "value": {value}}}"#).as_bytes(),
    );
    for transport in transports() {
        let (server, addr) = start(transport, &[]);
        let before = cpu_time(server.id());
        let answer = exchange(addr, &request);
        let spent = cpu_time(server.id()) - before;
        assert!(complete(&answer), "[{transport}] no whole answer");
        assert!(
            spent <= Duration::from_secs(2),
            "[{transport}] 128 k distinct keys cost {spent:?} of CPU"
        );
        eprintln!("[{transport}] 128 k distinct keys: {spent:?} of server CPU");
    }
}

/// The bytes of a full 65,535-byte header whose extra key holds `[0,0,...]`, announcing
/// content that never comes.
fn full_header_of_zeros() -> Vec<u8> {
    let mut header = String::from(
        r#"{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8", "content-length": 100, "x": [0"#,
    );
    while header.len() + 4 <= 65_535 {
        header.push_str(",0");
    }
    while header.len() + 2 < 65_535 {
        header.push(' ');
    }
    header.push_str("]}");
    assert_eq!(header.len(), 65_535);
    let mut bytes = 65_535u16.to_be_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes
}

/// 256 connections each sending a full 65,535-byte header of `[0,0,...]` and nothing
/// after: the server holds at most 3x the bytes they sent (before issue 12: 17x; measured
/// 1.6x to 2x), and still answers a good client.
#[test]
fn full_header_attackers_hold_a_small_multiple_of_their_bytes() {
    let attack = full_header_of_zeros();
    let n = 256;
    for transport in transports() {
        let (server, addr) = start(transport, &["--max-connections", "300"]);
        let base = status_bytes(server.id(), "VmRSS");
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.set_write_timeout(Some(LIMIT)).expect("timeout");
            s.write_all(&attack).expect("send");
            held.push(s);
        }
        // Until the server has read it all: its RSS stops growing.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut rss = status_bytes(server.id(), "VmRSS");
        loop {
            thread::sleep(Duration::from_millis(300));
            let now = status_bytes(server.id(), "VmRSS");
            if now == rss || Instant::now() > deadline {
                rss = rss.max(now);
                break;
            }
            rss = now;
        }
        let answer = exchange(addr, &guide_request());
        assert!(complete(&answer), "[{transport}] good client not answered");
        let sent = (n * attack.len()) as u64;
        let held_bytes = rss.saturating_sub(base);
        eprintln!(
            "[{transport}] {n} full headers: {sent} B sent, {held_bytes} B held ({:.2}x)",
            held_bytes as f64 / sent as f64
        );
        assert!(
            held_bytes <= 3 * sent,
            "[{transport}] {held_bytes} B held for {sent} B of headers"
        );
        drop(held);
    }
}

/// A content type carrying a forged log line (`\n2030-01-01 ERROR ...`), a raw `\r`, and
/// one of 60 KB, at `--trace` (where the demo logs each request's content type; the
/// default level does not log it at all): the server's log gains no line of the peer's making, no raw control
/// character, and no line longer than 1 KiB.
#[test]
fn a_peer_cannot_forge_or_flood_log_lines() {
    let content = br#"{"action": "search", "value": "ring"}"#;
    let long = "x".repeat(60_000);
    let types = [
        "text/json\n2030-01-01T00:00:00.000000Z ERROR forged: all data lost",
        "text/json\r2030-01-01 ERROR carriage return",
        long.as_str(),
    ];
    for transport in transports() {
        let (server, addr) = start(transport, &["--trace"]);
        for content_type in types {
            exchange(addr, &message(content_type, content));
        }
        server.signal("TERM");
        let (status, _, log) = server.finish(LIMIT);
        assert!(status.success(), "[{transport}] {status}\n{log}");
        assert!(
            log.contains("ERROR forged"),
            "[{transport}] the forged content type is not logged at all, so this test shows nothing:\n{log}"
        );
        for line in log.lines() {
            assert!(
                !line.starts_with("2030-01-01"),
                "[{transport}] forged line: {line:?}"
            );
            assert!(
                !line.chars().any(|c| c.is_control() && c != '\t'),
                "[{transport}] raw control character in {line:?}"
            );
            assert!(
                line.len() <= 1024,
                "[{transport}] a {} B log line",
                line.len()
            );
        }
    }
}

/// 16 MiB of `[[0],[0],...]` (743 MiB peak before issue 12, 46x): the server's peak
/// resident memory stays within 3x the request above its baseline (measured 2.0x: the
/// answer would pass the message limit and is refused), and 2 s later it is back within
/// 40 MiB of its baseline.
#[test]
fn a_16_mib_request_of_nested_singletons_costs_a_small_multiple_and_is_given_back() {
    let mut value = String::with_capacity(16 << 20);
    value.push('[');
    let body = String::from(r#"{"action": "search", "value": "#);
    while body.len() + value.len() + 8 < 16 << 20 {
        value.push_str("[0],");
    }
    value.push_str("[0]]");
    let request = message("text/json", format!("{body}{value}}}").as_bytes());
    drop(value);
    for transport in transports() {
        let (server, addr) = start(transport, &[]);
        let base = status_bytes(server.id(), "VmRSS");
        let got = exchange(addr, &request);
        assert!(
            got.is_empty(),
            "[{transport}] an answer past the limit was sent"
        );
        let peak = status_bytes(server.id(), "VmHWM").saturating_sub(base);
        let sent = request.len() as u64;
        eprintln!(
            "[{transport}] 16 MiB of [[0],...]: peak {peak} B above the baseline ({:.2}x)",
            peak as f64 / sent as f64
        );
        assert!(peak <= 3 * sent, "[{transport}] peak {peak} B for {sent} B");
        let given_back = Instant::now() + Duration::from_secs(2);
        let kept = loop {
            let kept = status_bytes(server.id(), "VmRSS").saturating_sub(base);
            if kept <= 40 << 20 || Instant::now() > given_back {
                break kept;
            }
            thread::sleep(Duration::from_millis(100));
        };
        assert!(kept <= 40 << 20, "[{transport}] {kept} B kept after 2 s");
    }
}

/// 1,000 idle connections (open, silent, within the idle timeout) cost no CPU: at most
/// 20 ms of server CPU in 2 s, on every transport (before the server layer, the std
/// transport's threads woke every 100 ms: 45.7% of a core for 5,000), and one file
/// descriptor each.
#[test]
fn idle_connections_cost_no_cpu_and_one_fd_each() {
    let n = 1000;
    for transport in transports() {
        let (server, addr) = start(transport, &[]);
        let fds = || {
            std::fs::read_dir(format!("/proc/{}/fd", server.id()))
                .expect("/proc fd")
                .count()
        };
        let fds_before = fds();
        let idle: Vec<TcpStream> = (0..n)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        // Until every connection is accepted (at most 10 s).
        let deadline = Instant::now() + Duration::from_secs(10);
        while fds() < fds_before + n && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        thread::sleep(Duration::from_millis(500));
        let before = cpu_time(server.id());
        thread::sleep(Duration::from_secs(2));
        let spent = cpu_time(server.id()) - before;
        let per_connection = (fds() - fds_before) as f64 / n as f64;
        eprintln!("[{transport}] {n} idle: {spent:?} of CPU in 2 s, {per_connection:.2} fds each");
        assert!(
            spent <= Duration::from_millis(20),
            "[{transport}] {spent:?} of CPU in 2 s idle"
        );
        assert!(
            (0.99..=1.01).contains(&per_connection),
            "[{transport}] {per_connection:.2} fds per connection"
        );
        let answer = exchange(addr, &guide_request());
        assert!(complete(&answer), "[{transport}] good client not answered");
        drop(idle);
    }
}
