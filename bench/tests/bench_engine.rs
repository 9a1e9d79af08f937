//! The load generator's engine against well-behaved and misbehaving servers on loopback:
//! every request is accounted for, right answers count, wrong or missing ones are errors of
//! the right kind.

mod bench_support;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use bench_support::{Behaviour, TestServer};
use sockmsg_app::serve::{spawn, ServerConfig, Transport};
use sockmsg_bench::echo::EchoServer;
use sockmsg_bench::engine::{run, Config, Control, Limit};
use sockmsg_bench::report::{ErrorKind, Mode, Report};
use sockmsg_bench::workload::{Expect, Kind, Workload};
use sockmsg_demo::DemoService;
use sockmsg_protocol::{decode, encode, Limits};

fn config(addr: std::net::SocketAddr, kind: Kind, mode: Mode) -> Config {
    Config {
        connections: 4,
        limit: Limit::Requests(400),
        mode,
        timeout: Duration::from_secs(5),
        ..Config::new(addr, Workload::new(kind, None, None).expect("workload"))
    }
}

fn bench(config: &Config) -> Report {
    let report = run(config, &Control::new(), |_| {}).expect("run");
    assert_eq!(
        report.requests,
        report.ok + report.errors.total() + report.abandoned,
        "{report:?}"
    );
    report
}

fn assert_clean(report: &Report, n: u64) {
    assert_eq!(report.ok, n, "{}", report.to_text());
    assert_eq!(report.errors.total(), 0, "{}", report.to_text());
    assert_eq!(report.abandoned, 0);
    assert!(report.requests_per_s > 0.0);
    assert!(report.gave_up.is_none());
    let latency = report.latency.as_ref().expect("latency figures");
    // A loopback round trip takes microseconds: a smaller figure is a clock mistake.
    assert!(latency.min_us >= 1.0, "{}", report.to_text());
    assert!(latency.min_us <= latency.p50_us);
    assert!(latency.p50_us <= latency.p99_us);
    assert!(latency.p99_us <= latency.max_us);
    assert!(report.sent_bytes_per_s > 0.0 && report.received_bytes_per_s > 0.0);
}

#[test]
fn keep_alive_json_and_binary_answers_are_all_right() {
    let server = TestServer::start(Behaviour::Demo);
    for kind in [Kind::Json, Kind::Binary] {
        let report = bench(&config(server.addr, kind, Mode::KeepAlive));
        assert_clean(&report, 400);
        assert_eq!(report.request_bytes, 146);
        // Every byte is counted: 400 requests out, 400 demo answers back.
        assert_eq!(report.sent_bytes, 400 * 146);
        let request = Workload::new(kind, None, None).expect("workload");
        let request = match decode(request.request(), &Limits::default()) {
            Ok((m, _)) => m,
            other => panic!("{other:?}"),
        };
        let answer =
            encode(&DemoService::new().respond(&request).expect("answer")).expect("encode");
        assert_eq!(report.received_bytes, 400 * answer.len() as u64, "{kind}");
    }
}

#[test]
fn pipelining_keeps_answers_in_order_across_threads() {
    let server = TestServer::start(Behaviour::Demo);
    let mut c = config(server.addr, Kind::Json, Mode::KeepAlive);
    c.pipeline = 16;
    c.threads = 2;
    c.limit = Limit::Requests(2000);
    c.workload = Workload::new(Kind::Json, None, Some(1000)).expect("workload");
    let report = bench(&c);
    assert_clean(&report, 2000);
    assert_eq!(report.threads, 2);
    assert_eq!(report.request_bytes, 1000);
}

#[test]
fn one_shot_uses_a_connection_per_request() {
    let server = TestServer::start(Behaviour::OneShot);
    let report = bench(&config(server.addr, Kind::Json, Mode::OneShot));
    assert_clean(&report, 400);
    // The same server fails keep-alive runs: it closes after the first answer, so the next
    // request on each connection gets no answer (a close, or a reset if the request was
    // already there).
    let mut c = config(server.addr, Kind::Json, Mode::KeepAlive);
    c.limit = Limit::Requests(40);
    let report = bench(&c);
    let lost = report.errors.get(ErrorKind::Closed) + report.errors.get(ErrorKind::Io);
    assert!(lost > 0, "{}", report.to_text());
    assert_eq!(lost, report.errors.total());
    assert!(report.ok > 0);
}

#[test]
fn echo_mode_against_the_echo_baseline() {
    let server = EchoServer::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = server.local_addr().expect("addr");
    let stop = server.stopper();
    let thread = std::thread::spawn(move || server.run());
    for (mode, pipeline, size) in [
        (Mode::KeepAlive, 1, None),
        (Mode::KeepAlive, 8, Some(100_000)),
        (Mode::OneShot, 1, Some(3)),
    ] {
        let mut c = config(addr, Kind::Echo, mode);
        c.pipeline = pipeline;
        c.workload = Workload::new(Kind::Echo, None, size).expect("workload");
        let report = bench(&c);
        assert_clean(&report, 400);
    }
    stop.stop().expect("stop");
    thread.join().expect("join").expect("echo server");
}

#[test]
fn echo_baseline_with_two_loops_sharing_the_listener() {
    let servers = EchoServer::bind_loops("127.0.0.1:0".parse().expect("addr"), 2).expect("bind");
    assert_eq!(servers.len(), 2);
    let addr = servers[0].local_addr().expect("addr");
    assert_eq!(servers[1].local_addr().expect("addr"), addr);
    let mut running = Vec::new();
    for server in servers {
        let stop = server.stopper();
        running.push((stop, std::thread::spawn(move || server.run())));
    }
    for mode in [Mode::KeepAlive, Mode::OneShot] {
        let report = bench(&config(addr, Kind::Echo, mode));
        assert_clean(&report, 400);
    }
    for (stop, thread) in running {
        stop.stop().expect("stop");
        thread.join().expect("join").expect("echo loop");
    }
}

#[test]
fn a_timed_run_stops_on_time_and_abandons_what_is_in_flight() {
    let server = TestServer::start(Behaviour::Demo);
    let mut c = config(server.addr, Kind::Json, Mode::KeepAlive);
    c.limit = Limit::Duration(Duration::from_millis(400));
    c.pipeline = 2;
    let mut ticks = 0;
    let report = run(&c, &Control::new(), |_| ticks += 1).expect("run");
    assert!(report.ok > 0);
    assert_eq!(report.errors.total(), 0, "{}", report.to_text());
    assert!(report.abandoned <= 8);
    assert!(
        (0.35..2.0).contains(&report.elapsed_s),
        "elapsed {}",
        report.elapsed_s
    );
    assert_eq!(ticks, 0, "no progress tick before a second has passed");
}

#[test]
fn control_stop_ends_a_run_early() {
    let server = TestServer::start(Behaviour::Demo);
    let mut c = config(server.addr, Kind::Json, Mode::KeepAlive);
    c.limit = Limit::Duration(Duration::from_secs(60));
    let control = Control::new();
    let stopper = control.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        stopper.stop();
    });
    let report = run(&c, &control, |_| {}).expect("run");
    t.join().expect("join");
    assert!(report.elapsed_s < 5.0, "elapsed {}", report.elapsed_s);
    assert!(report.ok > 0);
}

#[test]
fn wrong_answers_are_errors() {
    let server = TestServer::start(Behaviour::WrongAnswer);
    let report = bench(&config(server.addr, Kind::Json, Mode::KeepAlive));
    assert_eq!(report.ok, 0);
    assert_eq!(report.errors.get(ErrorKind::WrongAnswer), 400);
    assert!(report
        .first_error
        .as_deref()
        .is_some_and(|e| e.contains("wrong-answer") && e.contains("Follow the white rabbit")));
}

#[test]
fn missing_answers_and_garbage_are_errors() {
    for (behaviour, kind) in [
        (Behaviour::CloseEarly, ErrorKind::Closed),
        (Behaviour::Garbage, ErrorKind::Protocol),
    ] {
        let server = TestServer::start(behaviour);
        let mut c = config(server.addr, Kind::Json, Mode::KeepAlive);
        c.limit = Limit::Requests(40);
        let report = bench(&c);
        assert_eq!(report.ok, 0, "{behaviour:?}");
        assert_eq!(
            report.errors.get(kind),
            40,
            "{behaviour:?}: {}",
            report.to_text()
        );
    }
}

#[test]
fn silence_times_out() {
    let server = TestServer::start(Behaviour::Silent);
    let mut c = config(server.addr, Kind::Binary, Mode::KeepAlive);
    c.connections = 2;
    c.limit = Limit::Requests(4);
    c.timeout = Duration::from_millis(200);
    let report = bench(&c);
    assert_eq!(
        report.errors.get(ErrorKind::Timeout),
        4,
        "{}",
        report.to_text()
    );
    assert!(report.elapsed_s < 3.0);
}

#[test]
fn refused_connections_are_connect_errors() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    for mode in [Mode::KeepAlive, Mode::OneShot] {
        let mut c = config(port, Kind::Json, mode);
        c.limit = Limit::Requests(20);
        let report = bench(&c);
        assert_eq!(
            report.errors.get(ErrorKind::Connect),
            20,
            "{}",
            report.to_text()
        );
        assert_eq!(report.ok, 0);
    }
}

#[test]
fn invalid_configurations_are_refused() {
    let addr = "127.0.0.1:1".parse().expect("addr");
    let mut c = config(addr, Kind::Json, Mode::OneShot);
    c.pipeline = 4;
    assert!(run(&c, &Control::new(), |_| {}).is_err());
    let mut c = config(addr, Kind::Json, Mode::KeepAlive);
    c.connections = 0;
    assert!(c.validate().is_err());
    c.connections = 1;
    c.limit = Limit::Requests(0);
    assert!(c.validate().is_err());
    c.limit = Limit::Requests(1);
    assert!(c.validate().is_ok());
    for rate in [0.0, 1e-9, -5.0, f64::NAN, f64::INFINITY, 2e9] {
        c.rate = Some(rate);
        assert!(c.validate().is_err(), "{rate}");
    }
    c.rate = Some(0.001);
    assert!(c.validate().is_ok());
    c.max_errors = Some(0);
    assert!(c.validate().is_err());
    c.max_errors = Some(1);
    c.give_up_after = Duration::ZERO;
    assert!(c.validate().is_err());
}

#[test]
fn a_run_where_nothing_succeeds_gives_up_without_latency_figures() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut c = config(port, Kind::Json, Mode::KeepAlive);
    c.limit = Limit::Requests(10_000_000);
    c.give_up_after = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let report = bench(&c);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.ok, 0);
    assert!(report.errors.get(ErrorKind::Connect) > 0);
    assert!(report.latency.is_none());
    let gave_up = report.gave_up.as_deref().expect("gave up");
    assert!(
        gave_up.starts_with(&format!("no answer from {port} in 0.5 s: connect: ")),
        "{gave_up}"
    );
    let text = report.to_text();
    assert!(text.contains("latency:     no answers"), "{text}");
    assert!(!text.contains("latency ms"), "{text}");
}

#[test]
fn max_errors_stops_after_that_many_errors_in_a_row() {
    let server = TestServer::start(Behaviour::WrongAnswer);
    let mut c = config(server.addr, Kind::Json, Mode::KeepAlive);
    c.limit = Limit::Requests(10_000_000);
    c.max_errors = Some(25);
    let report = bench(&c);
    let errors = report.errors.get(ErrorKind::WrongAnswer);
    // The connections notice the stop within an event-loop turn: a few more may fail.
    assert!((25..200).contains(&errors), "{}", report.to_text());
    let gave_up = report.gave_up.as_deref().expect("gave up");
    assert!(gave_up.contains("errors in a row from"), "{gave_up}");
    assert!(gave_up.contains("wrong-answer: content"), "{gave_up}");
    // Right answers reset the count: the same limit on a good server never triggers.
    let good = TestServer::start(Behaviour::Demo);
    let mut c = config(good.addr, Kind::Json, Mode::KeepAlive);
    c.max_errors = Some(1);
    assert_clean(&bench(&c), 400);
}

#[test]
fn a_fixed_rate_keeps_its_rate() {
    let server = TestServer::start(Behaviour::Demo);
    for mode in [Mode::KeepAlive, Mode::OneShot] {
        let mut c = config(server.addr, Kind::Json, mode);
        c.connections = 3;
        c.rate = Some(200.0);
        c.limit = Limit::Duration(Duration::from_millis(1500));
        let report = bench(&c);
        assert_eq!(report.errors.total(), 0, "{}", report.to_text());
        assert_eq!(report.rate, Some(200.0));
        // 300 requests are due in 1.5 s; a few at the end may still be in flight.
        let done = report.ok + report.abandoned;
        assert!((270..=306).contains(&done), "{mode}: {}", report.to_text());
        assert!(
            (170.0..=215.0).contains(&report.requests_per_s),
            "{mode}: {}",
            report.to_text()
        );
    }
    // A count limit at a rate takes as long as the schedule says.
    let mut c = config(server.addr, Kind::Binary, Mode::KeepAlive);
    c.connections = 2;
    c.rate = Some(100.0);
    c.limit = Limit::Requests(50);
    let report = bench(&c);
    assert_eq!(report.ok, 50, "{}", report.to_text());
    assert!(
        (0.45..1.5).contains(&report.elapsed_s),
        "{}",
        report.to_text()
    );
}

#[test]
fn fixed_rate_latency_runs_from_the_intended_send_time() {
    // A server that takes 20 ms per request on a connection can do 50/s; asked for
    // 100/s over one connection, it falls further behind with every request. Measured
    // from when each request could be sent (closed loop), every answer takes ~20 ms;
    // measured from when it was due, the queue behind the server shows.
    let server = TestServer::start(Behaviour::Slow(Duration::from_millis(20)));
    let mut c = config(server.addr, Kind::Json, Mode::KeepAlive);
    c.connections = 1;
    c.limit = Limit::Duration(Duration::from_millis(1200));

    let closed = bench(&c);
    let closed_latency = closed.latency.clone().expect("answers");
    assert!(closed.ok >= 20, "{}", closed.to_text());
    assert!(closed_latency.p50_us < 60_000.0, "{}", closed.to_text());

    c.rate = Some(100.0);
    let fixed = bench(&c);
    let fixed_latency = fixed.latency.clone().expect("answers");
    assert_eq!(fixed.errors.total(), 0, "{}", fixed.to_text());
    assert!(fixed.ok <= 70, "{}", fixed.to_text());
    // After ~1.2 s the last answers are ~0.5 s behind their schedule.
    assert!(fixed_latency.max_us > 300_000.0, "{}", fixed.to_text());
    assert!(
        fixed_latency.p50_us > 3.0 * closed_latency.p50_us,
        "fixed {} closed {}",
        fixed.to_text(),
        closed.to_text()
    );
}

#[test]
fn large_messages_echoed_raw_and_framed() {
    // Raw bytes through the echo baseline.
    let server = EchoServer::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = server.local_addr().expect("addr");
    let stop = server.stopper();
    let thread = std::thread::spawn(move || server.run());
    let mut c = config(addr, Kind::Echo, Mode::KeepAlive);
    c.connections = 2;
    c.pipeline = 2;
    c.limit = Limit::Requests(12);
    c.workload = Workload::new(Kind::Echo, None, Some(4 << 20)).expect("workload");
    let report = bench(&c);
    assert_clean(&report, 12);
    assert_eq!(report.sent_bytes, 12 * (4 << 20));
    assert_eq!(report.received_bytes, 12 * (4 << 20));
    stop.stop().expect("stop");
    thread.join().expect("join").expect("echo server");

    // Framed messages through a server that answers each with itself.
    let server = TestServer::start(Behaviour::EchoMessages);
    for kind in [Kind::Binary, Kind::Json] {
        let mut c = config(server.addr, kind, Mode::KeepAlive);
        c.connections = 2;
        c.pipeline = 2;
        c.limit = Limit::Requests(10);
        c.workload = Workload::new(kind, None, Some(1 << 20))
            .and_then(|w| w.with_expect(Expect::Echo))
            .expect("workload");
        let report = bench(&c);
        assert_clean(&report, 10);
        assert_eq!(report.received_bytes, report.sent_bytes);
    }
    // The demo answer is not what such a server gives.
    let report = bench(&config(server.addr, Kind::Binary, Mode::KeepAlive));
    assert_eq!(report.errors.get(ErrorKind::WrongAnswer), 400);
}

#[test]
fn answers_once_spelt_differently_are_checked_against_a_live_app_server() {
    // The values the load generator's own copy of the demo expected as JSON spelt them
    // (`null`, `true`, `[1,"a"]`) where the server answers as Python (`None`, `True`,
    // `[1, 'a']`): with the expected answers computed by the demo service, every one is
    // right, on both transports.
    let values = [
        serde_json::json!(null),
        serde_json::json!(true),
        serde_json::json!([1, "a"]),
        serde_json::json!({"k": [false, 2.5]}),
        serde_json::json!("🐶"),
    ];
    for &transport in Transport::ALL {
        let server = spawn(
            transport,
            "127.0.0.1:0".parse().expect("addr"),
            &ServerConfig::default(),
            Arc::new(DemoService::new()),
        )
        .expect("app-server");
        for value in &values {
            let mut c = config(server.addr(), Kind::Json, Mode::KeepAlive);
            c.limit = Limit::Requests(40);
            c.workload = Workload::json_search(value).expect("workload");
            let report = bench(&c);
            assert_eq!(report.ok, 40, "{transport} {value}: {}", report.to_text());
            assert_eq!(report.errors.total(), 0);
        }
        server.stop(Duration::from_secs(10)).expect("stop");
    }
}

/// A TLS server (the std transport with the demo service, certificates made here), its
/// address and a stopper, and the rustls client configuration that trusts it.
fn tls_server() -> (
    std::net::SocketAddr,
    sockmsg_app::serve::Stopper,
    std::thread::JoinHandle<std::io::Result<()>>,
    Arc<rustls::ClientConfig>,
    String,
) {
    use sockmsg_tls::certs::{Authority, Spec, Usage};
    use sockmsg_tls::{client_config, server_config, AnyPeer, Pem, ServerOptions};
    let ca = Authority::new("bench test CA", 1).expect("CA");
    let cert = ca
        .issue(&Spec::new(Usage::Server, "localhost", &["localhost"], 1))
        .expect("certificate");
    let tls = server_config(&ServerOptions::new(
        Pem::memory("server.pem", cert.cert_pem),
        Pem::memory("server-key.pem", cert.key_pem),
    ))
    .expect("server config");
    let ca = ca.cert_pem();
    let client = client_config(&client_options(&ca)).expect("client config");
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        sockmsg_app::serve::serve_tls(
            Transport::Std,
            "127.0.0.1:0".parse().expect("address"),
            &ServerConfig::default(),
            Arc::new(AnyPeer(Arc::new(DemoService::new()))),
            tls,
            move |addr, stopper| {
                let _ = tx.send((addr, stopper));
            },
        )
    });
    let (addr, stopper) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the TLS server listens");
    (addr, stopper, thread, client, ca)
}

/// Client options that trust the CA whose certificate is `ca` (PEM).
fn client_options(ca: &str) -> sockmsg_tls::ClientOptions {
    sockmsg_tls::ClientOptions {
        ca: Some(sockmsg_tls::Pem::memory("ca.pem", ca)),
        ..sockmsg_tls::ClientOptions::default()
    }
}

#[test]
fn tls_keep_alive_and_one_shot_with_and_without_resumption() {
    let (addr, stopper, thread, client, ca) = tls_server();
    let tls = |config: Arc<rustls::ClientConfig>| sockmsg_bench::engine::Tls {
        config,
        server_name: rustls::pki_types::ServerName::try_from("localhost").expect("name"),
    };
    let mut no_resume = (*client).clone();
    no_resume.resumption = rustls::client::Resumption::disabled();
    let no_resume = Arc::new(no_resume);

    for (mode, config, resumes) in [
        (Mode::KeepAlive, client.clone(), false),
        (Mode::OneShot, client.clone(), true),
        (Mode::OneShot, no_resume, false),
    ] {
        let mut c = config_for(addr, mode);
        c.tls = Some(tls(config));
        let report = bench(&c);
        assert_clean(&report, 200);
        let handshakes = report.tls.expect("TLS handshakes counted");
        let text = report.to_text();
        assert!(text.contains("TLS:"), "{text}");
        match mode {
            Mode::KeepAlive => assert_eq!(handshakes.full + handshakes.resumed, 4, "{text}"),
            Mode::OneShot => assert_eq!(handshakes.full + handshakes.resumed, 200, "{text}"),
        }
        if resumes {
            // Every connection after the first few (4 at once) resumes a session.
            assert!(handshakes.resumed >= 190, "{text}");
        } else if mode == Mode::OneShot {
            assert_eq!(handshakes.resumed, 0, "{text}");
        }
    }

    // A client that offers only TLS 1.2: every connection is TLS 1.2, and resumes (a
    // session ticket or ID, no key exchange); by default every one is TLS 1.3.
    let tls12 = sockmsg_tls::client_config(&sockmsg_tls::ClientOptions {
        version: Some(sockmsg_tls::TlsVersion::Tls12),
        ..client_options(&ca)
    })
    .expect("client config");
    for (config, tls12_expected) in [(tls12, 200), (client.clone(), 0)] {
        let mut c = config_for(addr, Mode::OneShot);
        c.tls = Some(tls(config));
        let report = bench(&c);
        assert_clean(&report, 200);
        let handshakes = report.tls.expect("TLS handshakes counted");
        let text = report.to_text();
        assert_eq!(handshakes.tls12, tls12_expected, "{text}");
        assert!(handshakes.resumed >= 190, "{text}");
        let tls13 = 200 - tls12_expected;
        assert!(
            text.contains(&format!("{tls13} TLS 1.3, {tls12_expected} TLS 1.2")),
            "{text}"
        );
    }

    // A client that does not trust the server's CA: every connection fails to connect,
    // with rustls's reason.
    let other = sockmsg_tls::certs::Authority::new("another CA", 1).expect("CA");
    let untrusting = sockmsg_tls::client_config(&sockmsg_tls::ClientOptions {
        ca: Some(sockmsg_tls::Pem::memory("other.pem", other.cert_pem())),
        ..sockmsg_tls::ClientOptions::default()
    })
    .expect("client config");
    let mut c = config_for(addr, Mode::KeepAlive);
    c.limit = Limit::Requests(4);
    c.max_errors = Some(4);
    c.tls = Some(tls(untrusting));
    let report = bench(&c);
    assert_eq!(report.ok, 0);
    assert!(
        report.errors.get(ErrorKind::Connect) > 0,
        "{}",
        report.to_text()
    );
    assert!(
        report.first_error.as_deref().unwrap_or("").contains("TLS"),
        "{:?}",
        report.first_error
    );

    stopper.stop();
    thread.join().expect("join").expect("the TLS server");
}

fn config_for(addr: std::net::SocketAddr, mode: Mode) -> Config {
    Config {
        limit: Limit::Requests(200),
        ..config(addr, Kind::Json, mode)
    }
}
