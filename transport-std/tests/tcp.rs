//! The blocking client over loopback TCP, against the threaded server or fake servers:
//! requests, pipelining, half-close, typed client errors, and rebinding a port. What the
//! server does (deadlines, limits, shutdown, errors) is the conformance suite's, run on
//! every transport: `tests/tests/conformance.rs`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use sockmsg_protocol::{encode, Message};
use sockmsg_server::{Service, ServiceError};
use sockmsg_transport_std::{
    Client, ClientConfig, Op, Server, ServerConfig, ShutdownHandle, TransportError,
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
            sockmsg_protocol::PeerError::UnexpectedEof {
                phase: sockmsg_protocol::Phase::Content,
                missing: 5
            }
        ),
        other => panic!("expected UnexpectedEof, got {other:?}"),
    }
    t.join().expect("fake server");
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
