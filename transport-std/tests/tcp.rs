//! The client and the threaded server over loopback TCP: requests, pipelining, half-close,
//! typed client errors, connection limits, timeouts and graceful shutdown.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use sockmsg_protocol::{encode, Message};
use sockmsg_server::{Service, ServiceError};
use sockmsg_transport_std::{
    Client, ClientConfig, Op, Server, ServerConfig, ShutdownHandle, TransportError, WhenFull,
};

const LIMIT: Duration = Duration::from_secs(10);

/// Answers with the request's content behind `re: `.
fn echo() -> Arc<dyn Service> {
    Arc::new(|m: Message| -> Result<Message, ServiceError> {
        let mut content = b"re: ".to_vec();
        content.extend_from_slice(m.content());
        Ok(Message::binary("x/answer", content))
    })
}

fn req(text: &str) -> Message {
    Message::binary("x/request", text.as_bytes().to_vec())
}

/// A server on a background thread; stopped (bounded) on drop.
struct Running {
    addr: SocketAddr,
    handle: ShutdownHandle,
    done: mpsc::Receiver<std::io::Result<()>>,
}

impl Running {
    fn start(ip: &str, config: ServerConfig, service: Arc<dyn Service>) -> Running {
        let server = Server::bind(format!("{ip}:0").parse().expect("addr"), config).expect("bind");
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let handle = server.shutdown_handle();
        let (tx, done) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(server.serve(service));
        });
        Running { addr, handle, done }
    }

    /// Shuts down and returns how long `serve` took to return.
    fn stop(&self) -> Duration {
        let start = Instant::now();
        self.handle.shutdown();
        match self.done.recv_timeout(LIMIT * 2) {
            Ok(result) => result.expect("serve returns Ok"),
            Err(e) => panic!("server did not stop: {e}"),
        }
        start.elapsed()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
        let _ = self.done.recv_timeout(LIMIT * 2);
    }
}

fn quick() -> ServerConfig {
    ServerConfig {
        poll_interval: Duration::from_millis(20),
        shutdown_grace: Duration::from_secs(5),
        ..ServerConfig::default()
    }
}

fn connect(addr: SocketAddr) -> Client {
    let config = ClientConfig {
        read_timeout: Some(LIMIT),
        write_timeout: Some(LIMIT),
        ..ClientConfig::default()
    };
    Client::connect(addr, &config).expect("connect")
}

fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, LIMIT).expect("connect");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    s.set_write_timeout(Some(LIMIT)).expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

fn read_to_end(mut s: &TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("read until the server closes");
    out
}

#[test]
fn several_requests_and_pipelining_on_one_connection() -> Result<(), TransportError> {
    let server = Running::start("127.0.0.1", quick(), echo());
    let mut client = connect(server.addr);
    assert_eq!(client.peer_addr(), server.addr);
    for word in ["one", "two", "three"] {
        let answer = client.request(req(word))?;
        assert_eq!(answer.content(), format!("re: {word}").as_bytes());
        assert_eq!(answer.content_type(), "x/answer");
    }
    for word in ["a", "b", "c", "d"] {
        client.queue(req(word))?;
    }
    client.flush()?;
    assert_eq!(client.in_flight(), 4);
    for word in ["a", "b", "c", "d"] {
        assert_eq!(client.recv()?.content(), format!("re: {word}").as_bytes());
    }
    assert_eq!(client.in_flight(), 0);
    client.close()?;
    server.stop();
    Ok(())
}

#[test]
fn ipv6_loopback() -> Result<(), TransportError> {
    if TcpListener::bind("[::1]:0").is_err() {
        // The machine has no IPv6 loopback: the IPv4 tests cover the rest.
        eprintln!("no ::1 on this machine");
        return Ok(());
    }
    let server = Running::start("[::1]", quick(), echo());
    assert!(server.addr.is_ipv6());
    let mut client = connect(server.addr);
    assert_eq!(client.request(req("v6"))?.content(), b"re: v6");
    client.close()?;
    Ok(())
}

/// The HOWTO's exchange: the client writes its request, shuts down its write side, and
/// reads the response until the server closes.
#[test]
fn half_closed_client_still_gets_its_response() -> Result<(), TransportError> {
    let server = Running::start("127.0.0.1", quick(), echo());
    let s = raw(server.addr);
    let mut wire = encode(&req("first")).expect("encode");
    wire.extend(encode(&req("second")).expect("encode"));
    (&s).write_all(&wire).expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown(1)");
    let mut want = encode(&Message::binary("x/answer", b"re: first".to_vec())).expect("encode");
    want.extend(encode(&Message::binary("x/answer", b"re: second".to_vec())).expect("encode"));
    assert_eq!(read_to_end(&s), want);

    // The same through the client API.
    let mut client = connect(server.addr);
    client.send(req("half"))?;
    client.shutdown_write()?;
    assert_eq!(client.recv()?.content(), b"re: half");
    assert!(matches!(
        client.recv(),
        Err(TransportError::Closed { in_flight: 0, .. })
    ));
    assert!(matches!(
        client.send(req("more")),
        Err(TransportError::Protocol { .. })
    ));
    Ok(())
}

#[test]
fn request_written_one_byte_at_a_time() {
    let server = Running::start("127.0.0.1", quick(), echo());
    let s = raw(server.addr);
    for b in encode(&req("drip")).expect("encode") {
        (&s).write_all(&[b]).expect("write");
    }
    s.shutdown(Shutdown::Write).expect("shutdown");
    let want = encode(&Message::binary("x/answer", b"re: drip".to_vec())).expect("encode");
    assert_eq!(read_to_end(&s), want);
}

#[test]
fn refused_connection_is_typed_and_names_the_address() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    match Client::connect(addr, &ClientConfig::default()) {
        Err(e @ TransportError::Refused { .. }) => {
            assert_eq!(e.addr(), addr);
            assert_eq!(e.to_string(), format!("connection to {addr} refused"));
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

/// A fake server: accepts one connection and runs `f` on it (on a thread).
fn fake_server(f: impl FnOnce(TcpStream) + Send + 'static) -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let t = thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            s.set_read_timeout(Some(LIMIT)).expect("timeout");
            f(s);
        }
    });
    (addr, t)
}

fn read_some(mut s: &TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = s.read(&mut buf);
}

#[test]
fn silent_server_is_a_read_timeout() {
    let (tx, rx) = mpsc::channel::<()>();
    let (addr, t) = fake_server(move |s| {
        read_some(&s);
        let _ = rx.recv_timeout(LIMIT);
    });
    let config = ClientConfig {
        read_timeout: Some(Duration::from_millis(200)),
        ..ClientConfig::default()
    };
    let mut client = Client::connect(addr, &config).expect("connect");
    let start = Instant::now();
    match client.request(req("anyone?")) {
        Err(e @ TransportError::Timeout { .. }) => {
            assert_eq!(e.addr(), addr);
            assert!(matches!(e, TransportError::Timeout { op: Op::Read, .. }));
            assert!(e.to_string().contains(&addr.to_string()), "{e}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    drop(tx);
    t.join().expect("fake server");
}

#[test]
fn server_closing_before_answering_is_closed() {
    let (addr, t) = fake_server(|s| read_some(&s));
    let mut client = connect(addr);
    match client.request(req("hello")) {
        Err(TransportError::Closed { addr: a, in_flight }) => {
            assert_eq!(a, addr);
            assert_eq!(in_flight, 1);
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    t.join().expect("fake server");
}

#[test]
fn server_resetting_is_reset() {
    let (addr, t) = fake_server(|s| {
        read_some(&s);
        // SO_LINGER 0: close sends RST.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
    });
    let mut client = connect(addr);
    match client.request(req("hello")) {
        Err(e @ TransportError::Reset { .. }) => assert_eq!(e.addr(), addr),
        other => panic!("expected Reset, got {other:?}"),
    }
    t.join().expect("fake server");
}

#[test]
fn server_cutting_a_response_short_is_unexpected_eof() {
    let (addr, t) = fake_server(|mut s| {
        read_some(&s);
        let wire = encode(&Message::binary("x/answer", vec![7; 40])).expect("encode");
        s.write_all(&wire[..wire.len() - 5]).expect("write");
    });
    let mut client = connect(addr);
    match client.request(req("hello")) {
        Err(TransportError::Protocol { source, .. }) => assert_eq!(
            source,
            sockmsg_protocol::Error::UnexpectedEof {
                phase: sockmsg_protocol::Phase::Content,
                missing: 5
            }
        ),
        other => panic!("expected UnexpectedEof, got {other:?}"),
    }
    t.join().expect("fake server");
}

/// A service that reports each request and takes `delay` to answer.
fn slow(delay: Duration, started: mpsc::Sender<()>) -> Arc<dyn Service> {
    let started = std::sync::Mutex::new(started);
    Arc::new(move |m: Message| -> Result<Message, ServiceError> {
        let _ = started.lock().map(|tx| tx.send(()));
        thread::sleep(delay);
        Ok(Message::binary("x/answer", m.content().to_vec()))
    })
}

#[test]
fn graceful_shutdown_lets_a_request_in_progress_finish() {
    let (tx, started) = mpsc::channel();
    let server = Running::start("127.0.0.1", quick(), slow(Duration::from_millis(300), tx));
    let addr = server.addr;
    let client = thread::spawn(move || {
        let mut c = connect(addr);
        c.request(req("in flight")).map(|m| m.content().to_vec())
    });
    started
        .recv_timeout(LIMIT)
        .expect("request reached the service");
    let took = server.stop();
    assert_eq!(
        client.join().expect("client").expect("answered"),
        b"in flight"
    );
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // No longer listening.
    assert!(matches!(
        Client::connect(addr, &ClientConfig::default()),
        Err(TransportError::Refused { .. })
    ));
}

#[test]
fn shutdown_closes_idle_connections_promptly() -> Result<(), TransportError> {
    let server = Running::start("127.0.0.1", quick(), echo());
    let mut idle = connect(server.addr);
    assert_eq!(idle.request(req("x"))?.content(), b"re: x");
    let took = server.stop();
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(matches!(idle.recv(), Err(TransportError::Closed { .. })));
    Ok(())
}

#[test]
fn beyond_max_connections_new_ones_wait_in_the_backlog() -> Result<(), TransportError> {
    let config = ServerConfig {
        max_connections: 1,
        ..quick()
    };
    let server = Running::start("127.0.0.1", config, echo());
    let mut first = connect(server.addr);
    assert_eq!(first.request(req("1"))?.content(), b"re: 1");
    assert_eq!(server.handle.connections(), 1);

    let addr = server.addr;
    let (tx, rx) = mpsc::channel();
    let second = thread::spawn(move || {
        let mut c = connect(addr);
        let answer = c.request(req("2")).map(|m| m.content().to_vec());
        let _ = tx.send(());
        answer
    });
    // Connected (kernel backlog) but not served while the first connection is open.
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    first.close()?;
    rx.recv_timeout(LIMIT).expect("served once a slot is free");
    assert_eq!(second.join().expect("client")?, b"re: 2");
    Ok(())
}

#[test]
fn beyond_max_connections_new_ones_can_be_refused() -> Result<(), TransportError> {
    let config = ServerConfig {
        max_connections: 1,
        when_full: WhenFull::Refuse,
        ..quick()
    };
    let server = Running::start("127.0.0.1", config, echo());
    let mut first = connect(server.addr);
    assert_eq!(first.request(req("1"))?.content(), b"re: 1");
    let mut second = connect(server.addr);
    match second.request(req("2")) {
        Err(TransportError::Closed { .. } | TransportError::Reset { .. }) => {}
        other => panic!("expected the connection closed, got {other:?}"),
    }
    // The first connection is still served, and after it closes a new one is too.
    assert_eq!(first.request(req("1b"))?.content(), b"re: 1b");
    first.close()?;
    let deadline = Instant::now() + LIMIT;
    while server.handle.connections() > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let mut third = connect(server.addr);
    assert_eq!(third.request(req("3"))?.content(), b"re: 3");
    Ok(())
}

#[test]
fn idle_connections_time_out() {
    let config = ServerConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        ..quick()
    };
    let server = Running::start("127.0.0.1", config, echo());
    let s = raw(server.addr);
    let start = Instant::now();
    assert_eq!(read_to_end(&s), b"");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[test]
fn a_request_that_stalls_times_out() {
    let config = ServerConfig {
        read_timeout: Some(Duration::from_millis(200)),
        idle_timeout: None,
        ..quick()
    };
    let server = Running::start("127.0.0.1", config, echo());
    let s = raw(server.addr);
    let wire = encode(&req("never finished")).expect("encode");
    // Drip the request: progress alone does not extend the deadline. The server closes
    // the connection part-way (our next write or read then fails or sees the end).
    let start = Instant::now();
    let mut closed = false;
    for b in &wire {
        if (&s).write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        thread::sleep(Duration::from_millis(30));
    }
    if !closed {
        let mut buf = [0u8; 64];
        closed = matches!((&s).read(&mut buf), Ok(0) | Err(_));
    }
    assert!(closed, "the server must close a request that stalls");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[test]
fn a_protocol_error_closes_only_that_connection() -> Result<(), TransportError> {
    let server = Running::start("127.0.0.1", quick(), echo());
    let mut good = connect(server.addr);
    assert_eq!(good.request(req("before"))?.content(), b"re: before");
    let bad = raw(server.addr);
    (&bad).write_all(b"\x00\x02[]").expect("write");
    assert_eq!(read_to_end(&bad), b"");
    assert_eq!(good.request(req("after"))?.content(), b"re: after");
    Ok(())
}

#[test]
fn failing_and_panicking_services_close_the_connection_not_the_server() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let service = Arc::new(move |m: Message| -> Result<Message, ServiceError> {
        counter.fetch_add(1, Ordering::SeqCst);
        match m.content() {
            b"fail" => Err("no such thing".into()),
            b"panic" => panic!("service panic (expected by the test)"),
            other => Ok(Message::binary("x/answer", other.to_vec())),
        }
    });
    let server = Running::start("127.0.0.1", quick(), service);
    for bad in ["fail", "panic"] {
        let mut c = connect(server.addr);
        assert!(matches!(
            c.request(req(bad)),
            Err(TransportError::Closed { in_flight: 1, .. })
        ));
    }
    let mut c = connect(server.addr);
    assert_eq!(c.request(req("fine")).expect("served").content(), b"fine");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[test]
fn rebinding_a_port_with_connections_in_time_wait() -> Result<(), TransportError> {
    let server = Running::start("127.0.0.1", quick(), echo());
    let addr = server.addr;
    // The server closes first (shutdown), so its side of the connection is in TIME_WAIT.
    let mut c = connect(addr);
    assert_eq!(c.request(req("x"))?.content(), b"re: x");
    server.stop();
    let _ = c.recv();
    drop(c);
    let again = Server::bind(addr, quick()).expect("SO_REUSEADDR lets the port be reused");
    assert_eq!(again.local_addr(), addr);
    Ok(())
}
