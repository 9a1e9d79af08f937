//! The load generator's engine against well-behaved and misbehaving servers on loopback:
//! every request is accounted for, right answers count, wrong or missing ones are errors of
//! the right kind.

mod bench_support;

use std::net::TcpListener;
use std::time::Duration;

use bench_support::{Behaviour, TestServer};
use sockmsg_app::demo::DemoService;
use sockmsg_bench::echo::EchoServer;
use sockmsg_bench::engine::{run, Config, Control, Limit};
use sockmsg_bench::report::{ErrorKind, Mode, Report};
use sockmsg_bench::workload::{Kind, Workload};
use sockmsg_protocol::{encode, Decoder, Event};

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
        let mut wire = request.request();
        let request = match Decoder::default().decode(&mut wire) {
            Ok(Event::Message(m)) => m,
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
}
