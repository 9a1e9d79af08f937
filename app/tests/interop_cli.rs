//! The `app-server` and `app-client` binaries against the guide's Python peers, and their
//! command-line behaviour (usage errors, failures, Ctrl-C).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use sockmsg_protocol::encode;
use sockmsg_tests::{
    describe, run_bounded, run_guide_client, ChildGuard, DemoCase, GuideServer, TempDir, DEMO_CASES,
};

/// The transports `app-server --transport` is tested with.
const TRANSPORTS: &[&str] = &["mio", "std", "tokio"];

const LIMIT: Duration = Duration::from_secs(20);

fn app_client(port: u16, case: &DemoCase) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_app-client"));
    cmd.args(["127.0.0.1", &port.to_string(), case.action, case.value])
        .args(case.client_flags())
        .env("RUST_LOG", "info");
    cmd
}

/// `app-server 127.0.0.1 0 ARGS...`, once it printed its `listening on` line.
fn start_app_server(args: &[&str]) -> (ChildGuard, u16) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_app-server"));
    // The default filter, or --trace's: RUST_LOG would replace them.
    cmd.args(["127.0.0.1", "0"])
        .args(args)
        .env_remove("RUST_LOG");
    let mut server = ChildGuard::spawn("app-server", &mut cmd);
    let addr = server.listening_addr(LIMIT);
    assert_eq!(
        addr.ip().to_string(),
        "127.0.0.1",
        "app-server bound {addr}"
    );
    (server, addr.port())
}

/// The request bytes `case` must produce: PROTOCOL.md's where it gives them, else the
/// guide's request built by the library.
fn expected_request(case: &DemoCase) -> Vec<u8> {
    if let Some(bytes) = case.request {
        return bytes.to_vec();
    }
    let m = if case.json_action {
        sockmsg_demo::json_request(case.action, case.value)
    } else {
        sockmsg_demo::request(case.action, case.value)
    };
    let m = match case.byteorder {
        Some("big") => m.with_byteorder(sockmsg_protocol::ByteOrder::Big),
        _ => m.with_byteorder(sockmsg_protocol::ByteOrder::Little),
    };
    encode(&m).expect("encode")
}

#[test]
fn app_client_against_the_guide_server() {
    let dir = TempDir::new("app-client-guide");
    for (i, case) in DEMO_CASES.iter().enumerate() {
        // One server per case (--once: it exits after the connection closes, so its
        // capture files are complete).
        let server = GuideServer::start(&dir, &format!("case{i}"), &["--once"]);
        let out = run_bounded("app-client", &mut app_client(server.port, case), LIMIT);
        assert!(out.status.success(), "{}: {}", case.name, describe(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{}\n", case.stdout),
            "{}",
            case.name
        );
        let (status, _, log) = server.process.finish(LIMIT);
        assert!(
            status.success(),
            "{}: guide server {status}\n{log}",
            case.name
        );
        let sent = std::fs::read(&server.capture_in).expect("capture-in");
        assert_eq!(sent, expected_request(case), "{}: request bytes", case.name);
        if let Some(want) = case.response {
            let got = std::fs::read(&server.capture_out).expect("capture-out");
            assert_eq!(got, want, "{}: response bytes", case.name);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        for needle in [
            "starting connection to",
            "sending b'",
            "closing connection to",
        ] {
            assert!(
                stderr.contains(needle),
                "{}: log lacks {needle:?}",
                case.name
            );
        }
    }
}

#[test]
fn guide_client_against_app_server() {
    let dir = TempDir::new("guide-client-app-server");
    for transport in TRANSPORTS {
        let (server, port) =
            start_app_server(&["--transport", transport, "--byteorder", "little", "--trace"]);
        for (i, case) in DEMO_CASES.iter().enumerate() {
            let what = format!("[{transport}] {}", case.name);
            let run = run_guide_client(&dir, &format!("{transport}{i}"), port, case, LIMIT);
            assert!(
                run.output.status.success(),
                "{what}: {}",
                describe(&run.output)
            );
            assert_eq!(
                String::from_utf8_lossy(&run.output.stdout),
                format!("{}\n", case.stdout),
                "{what}"
            );
            assert_eq!(run.sent, expected_request(case), "{what}: request bytes");
            if let Some(want) = case.response {
                assert_eq!(run.received, want, "{what}: response bytes");
            }
        }
        // Ctrl-C: a graceful stop, exit 0.
        server.signal("INT");
        let (status, _, log) = server.finish(LIMIT);
        assert!(
            status.success(),
            "[{transport}] exit on Ctrl-C: {status}\n{log}"
        );
        for needle in [
            "accepted connection from",
            "received request {'action': 'search', 'value': 'morpheus'}",
            "received \"binary/custom-client-binary-type\" request (9 bytes)",
            "sending",
            "closing connection to",
            "caught SIGINT (Ctrl-C): shutting down",
        ] {
            assert!(
                log.contains(needle),
                "[{transport}] log lacks {needle:?}:\n{log}"
            );
        }
    }
}

#[test]
fn app_client_against_app_server_keeps_the_server_running() {
    let mut configs: Vec<Vec<&str>> = TRANSPORTS.iter().map(|t| vec!["--transport", t]).collect();
    configs.push(vec!["--transport", "mio", "--workers", "1"]);
    configs.push(vec!["--transport", "tokio", "--workers", "1"]);
    for args in configs {
        let (server, port) = start_app_server(&args);
        for case in &DEMO_CASES[..2] {
            let out = run_bounded("app-client", &mut app_client(port, case), LIMIT);
            assert!(out.status.success(), "{}", describe(&out));
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                format!("{}\n", case.stdout)
            );
        }
        server.signal("TERM");
        let (status, _, log) = server.finish(LIMIT);
        assert!(status.success(), "exit on SIGTERM: {status}\n{log}");
        assert!(log.contains("caught SIGTERM: shutting down"), "{log}");
        // The default level: connections, not each request.
        assert!(log.contains("accepted connection from"), "{log}");
        for per_request in ["received request", "sending", "received binary"] {
            assert!(
                !log.contains(per_request),
                "{per_request:?} at info:\n{log}"
            );
        }
    }
}

#[test]
fn app_server_names_the_signal_that_stops_it() {
    let (server, _) = start_app_server(&[]);
    server.signal("HUP");
    let (status, _, log) = server.finish(LIMIT);
    assert!(status.success(), "exit on SIGHUP: {status}\n{log}");
    assert!(log.contains("caught SIGHUP: shutting down"), "{log}");
    assert!(!log.contains("Ctrl-C"), "{log}");
}

#[test]
fn usage_errors_exit_2_and_help_explains() {
    for args in [
        &[][..],
        &["127.0.0.1", "65432", "search"][..],
        &["127.0.0.1", "port", "search", "x"][..],
        &["127.0.0.1", "1", "search", "x", "--timeout", "-1"][..],
    ] {
        let out = run_bounded(
            "app-client",
            Command::new(env!("CARGO_BIN_EXE_app-client")).args(args),
            LIMIT,
        );
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(!out.stderr.is_empty());
    }
    for args in [
        &["127.0.0.1", "70000"][..],
        &["--transport", "carrier-pigeon"][..],
        &["--workers", "0"][..],
        &["--large-answer-share", "0"][..],
        &["--min-send-rate", "-1"][..],
        &["--send-rate-window", "0"][..],
    ] {
        let out = run_bounded(
            "app-server",
            Command::new(env!("CARGO_BIN_EXE_app-server")).args(args),
            LIMIT,
        );
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    }
    let help = run_bounded(
        "app-client",
        Command::new(env!("CARGO_BIN_EXE_app-client")).arg("--help"),
        LIMIT,
    );
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "<HOST>",
        "<PORT>",
        "<ACTION>",
        "<VALUE>",
        "search",
        "--json-action",
    ] {
        assert!(text.contains(needle), "help lacks {needle}:\n{text}");
    }
    let help = run_bounded(
        "app-server",
        Command::new(env!("CARGO_BIN_EXE_app-server")).arg("--help"),
        LIMIT,
    );
    let text = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "[HOST]",
        "[PORT]",
        "--transport",
        "65432",
        "127.0.0.1",
        "std",
        "keeps each connection open",
        "--close-after-answer",
        "--trace",
        "RUST_LOG",
        "--large-answer-share",
        "--min-send-rate",
        "--send-rate-window",
    ] {
        assert!(text.contains(needle), "help lacks {needle}:\n{text}");
    }
}

/// Runs `app-client 127.0.0.1 PORT search morpheus` plus `extra` against a fake server
/// that does `behave` with the accepted connection; returns the output.
fn against_fake(
    behave: impl FnOnce(TcpStream) + Send + 'static,
    extra: &[&str],
) -> std::process::Output {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let fake = thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            s.set_read_timeout(Some(LIMIT)).expect("timeout");
            behave(s);
        }
    });
    let out = run_bounded(
        "app-client",
        Command::new(env!("CARGO_BIN_EXE_app-client"))
            .args(["127.0.0.1", &port.to_string(), "search", "morpheus"])
            .args(extra),
        LIMIT,
    );
    fake.join().expect("fake server");
    out
}

fn read_some(mut s: &TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = s.read(&mut buf);
}

#[test]
fn failures_exit_1_with_a_clear_message() {
    // Nobody listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let out = run_bounded(
        "app-client",
        Command::new(env!("CARGO_BIN_EXE_app-client")).args([
            "127.0.0.1",
            &port.to_string(),
            "search",
            "x",
        ]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "app-client: cannot connect to 127.0.0.1:{port}: connection refused"
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    // The server closes in the middle of the response.
    let out = against_fake(
        |mut s| {
            read_some(&s);
            let _ = s.write_all(&sockmsg_tests::SEARCH_MORPHEUS_RESPONSE[..2 + 103 + 5]);
        },
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unexpected end of stream in the content: 38 more byte(s) expected"),
        "{stderr}"
    );

    // The server closes without answering.
    let out = against_fake(|s| read_some(&s), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("closed the connection without a complete response"));

    // The server never answers.
    let start = Instant::now();
    let out = against_fake(
        |s| {
            read_some(&s);
            thread::sleep(Duration::from_millis(1500));
        },
        &["--timeout", "0.3"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("app-client: no complete answer from 127.0.0.1:"));
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn app_server_workers_apply_to_the_event_loop_transports_only() {
    let out = run_bounded(
        "app-server",
        Command::new(env!("CARGO_BIN_EXE_app-server")).args([
            "127.0.0.1",
            "0",
            "--transport",
            "std",
            "--workers",
            "2",
        ]),
        LIMIT,
    );
    // Options that do not go together: a usage error.
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with(
            "app-server: --workers sets the event loops of the mio and tokio transports"
        ),
        "{}",
        describe(&out)
    );
}

#[test]
fn app_server_on_a_port_in_use_exits_1() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let out = run_bounded(
        "app-server",
        Command::new(env!("CARGO_BIN_EXE_app-server")).args(["127.0.0.1", &port]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("cannot serve on 127.0.0.1:{port}"))
    );
}

#[test]
fn ctrl_c_stops_app_client_cleanly() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    let fake = thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            s.set_read_timeout(Some(LIMIT)).expect("timeout");
            read_some(&s);
            let _ = tx.send(());
            // Hold the connection until the client is gone.
            read_some(&s);
        }
    });
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_app-client"));
    cmd.args(["127.0.0.1", &port.to_string(), "search", "morpheus"]);
    let client = ChildGuard::spawn("app-client", &mut cmd);
    rx.recv_timeout(LIMIT).expect("the request arrived");
    client.signal("INT");
    let (status, out, stderr) = client.finish(LIMIT);
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(out.is_empty());
    assert!(stderr.contains("app-client: interrupted"), "{stderr}");
    fake.join().expect("fake server");
}

/// A request whose answer would pass the message limit (5 MiB of `1e15`, which print as
/// 18 characters each: a 20 MiB answer) is not answered: the connection is closed and the
/// server logs one line saying why; it goes on serving.
#[test]
fn app_server_refuses_an_answer_past_the_message_limit() {
    use sockmsg_demo::shapes::{request, Shape};
    use sockmsg_transport_std::{Client, ClientConfig};
    for transport in TRANSPORTS {
        let (server, port) = start_app_server(&["--transport", transport]);
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let config = ClientConfig {
            read_timeout: Some(LIMIT),
            write_timeout: Some(LIMIT),
            ..ClientConfig::default()
        };
        let mut client = Client::connect(addr, &config).expect("connect");
        let refused = client.request(request(Shape::ManyNumbers, 5 * 1024 * 1024));
        assert!(refused.is_err(), "[{transport}] answered: {refused:?}");
        let mut client = Client::connect(addr, &config).expect("connect again");
        let answer = client
            .request(sockmsg_demo::request("search", "ring"))
            .expect("still serving");
        assert!(answer.is_json());
        server.signal("TERM");
        let (status, _, log) = server.finish(LIMIT);
        assert!(status.success(), "{status}\n{log}");
        let why: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("answer would exceed 16777216 bytes"))
            .collect();
        assert_eq!(why.len(), 1, "[{transport}]\n{log}");
    }
}
