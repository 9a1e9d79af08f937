//! The conformance suite: every case runs against EVERY transport of
//! [`Transport::ALL`], through `sockmsg_app::serve::spawn`, so a new transport gets the whole
//! suite by adding its variant there. Clients are plain blocking sockets speaking the
//! protocol through `sockmsg-protocol`, so the suite depends on no transport's client.
//!
//! Each case runs twice on each transport: in plaintext, then over TLS
//! (`sockmsg_app::serve::spawn_tls`). Over TLS the case's sockets connect to a TLS proxy
//! of this harness ([`Proxy`]) that wraps each connection to the server in the library's
//! rustls client configuration (certificates made at test time with rcgen): what a case
//! writes is the plaintext written into the TLS client, piece by piece as it was written
//! (so splits of the sockmsg stream still reach the server as separate records), and what
//! the server answers comes back decrypted; half-closes, closes and resets are passed on.
//! The server's log names the proxy's end of each connection: the harness translates
//! (`server_side`). A case that means nothing over TLS is named in [`PLAIN_ONLY`] with why.
//!
//! Loopback only, port 0, every wait bounded. The invalid-vector attacks with good clients
//! alongside live in `vectors.rs` (`live`), which also runs on every transport.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use sockmsg_app::serve::{spawn, spawn_tls, RunningServer, ServerConfig, Transport};
use sockmsg_demo::{json_request, request as demo_request, DemoService};
use sockmsg_protocol::{encode, Connection, Event, Message, Role};
use sockmsg_server::{MemoryBudget, Service, ServiceError, WhenFull};

/// Longest any single wait of this suite may take.
const LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------

/// One run of a case: a transport, in plaintext or over TLS. Displayed as `mio` or
/// `mio+tls` in failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target {
    transport: Transport,
    tls: bool,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tls = if self.tls { "+tls" } else { "" };
        write!(f, "{}{tls}", self.transport)
    }
}

/// Cases that run in plaintext only, by name, with why they mean nothing over TLS.
/// Through the proxy most cases keep their meaning (splits of the sockmsg stream are splits
/// of the plaintext written into the TLS client); these measure how fast the client takes
/// large answers, and the proxy takes them from the server at its own pace (then blocks on
/// the client), so the server would be judging the proxy, not the client.
const PLAIN_ONLY: &[(&str, &str)] = &[
    (
        "a_reader_below_the_least_send_rate_is_closed_while_a_good_client_is_served",
        "the proxy, not the client, reads the answer from the server",
    ),
    (
        "never_reading_clients_with_large_answers_hold_at_most_their_share",
        "the proxy, not the client, reads the answers from the server",
    ),
];

/// Runs `case` on every transport, in plaintext and over TLS, naming the run in any
/// failure.
fn on_every_transport(case: impl Fn(Target)) {
    let name = thread::current().name().unwrap_or_default().to_owned();
    let plain_only = PLAIN_ONLY
        .iter()
        .find(|(case, _)| name.ends_with(case))
        .map(|(_, why)| *why);
    for &transport in Transport::ALL {
        case(Target {
            transport,
            tls: false,
        });
        match plain_only {
            Some(why) => eprintln!("{name}: not run over TLS ({transport}): {why}"),
            None => case(Target {
                transport,
                tls: true,
            }),
        }
    }
}

/// Binary content `C` is answered `echo:C`; `fail` is a service error, `panic` a panic,
/// `slow` is answered after 300 ms, `big:N` with N bytes.
fn test_service() -> Arc<dyn Service> {
    Arc::new(|m: Message| -> Result<Message, ServiceError> {
        match m.content() {
            b"fail" => Err("the test service fails on request".into()),
            b"panic" => panic!("the test service panics on request (expected by the test)"),
            b"slow" => {
                thread::sleep(Duration::from_millis(300));
                Ok(Message::binary("x/answer", b"echo:slow".to_vec()))
            }
            c if c.starts_with(b"big:") => {
                let n: usize = std::str::from_utf8(&c[4..])?.parse()?;
                Ok(Message::binary("x/answer", vec![b'b'; n]))
            }
            c => Ok(Message::binary("x/answer", [b"echo:", c].concat())),
        }
    })
}

/// Two event loops for the transports that have them; deadlines far beyond the waits
/// unless a case sets its own.
fn config() -> ServerConfig {
    ServerConfig {
        workers: 2,
        shutdown_grace: Duration::from_secs(5),
        ..ServerConfig::default()
    }
}

/// A server of a case: the server itself, and over TLS the proxy its clients go through.
struct Server {
    server: RunningServer,
    proxy: Option<Proxy>,
}

impl Server {
    /// Where the case's clients connect: the server, or the TLS proxy in front of it.
    fn addr(&self) -> SocketAddr {
        self.proxy.as_ref().map_or(self.server.addr(), |p| p.addr)
    }

    /// Stops the server (see [`RunningServer::stop`]), then the proxy's listener.
    fn stop(mut self, timeout: Duration) -> io::Result<()> {
        let result = self.server.stop(timeout);
        if let Some(proxy) = self.proxy.take() {
            proxy.stop();
        }
        result
    }
}

fn start(t: Target, config: &ServerConfig, service: Arc<dyn Service>) -> Server {
    log(); // installed before any server runs
    let addr = "127.0.0.1:0".parse().expect("addr");
    if !t.tls {
        let server = spawn(t.transport, addr, config, service)
            .unwrap_or_else(|e| panic!("{t}: server starts: {e}"));
        return Server {
            server,
            proxy: None,
        };
    }
    let (server_tls, _) = tls_configs();
    let server = spawn_tls(t.transport, addr, config, service, Arc::clone(server_tls))
        .unwrap_or_else(|e| panic!("{t}: server starts: {e}"));
    let proxy = Proxy::start(server.addr());
    Server {
        server,
        proxy: Some(proxy),
    }
}

/// The server's and the client's TLS configurations: a test CA made once (rcgen), a
/// server certificate for `localhost` and 127.0.0.1.
fn tls_configs() -> &'static (
    Arc<sockmsg_tls::rustls::ServerConfig>,
    Arc<sockmsg_tls::rustls::ClientConfig>,
) {
    use sockmsg_tls::certs::{Authority, Spec, Usage};
    use sockmsg_tls::{client_config, server_config, ClientOptions, Pem, ServerOptions};
    static CONFIGS: OnceLock<(
        Arc<sockmsg_tls::rustls::ServerConfig>,
        Arc<sockmsg_tls::rustls::ClientConfig>,
    )> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let ca = Authority::new("conformance CA", 1).expect("CA");
        let cert = ca
            .issue(&Spec::new(
                Usage::Server,
                "localhost",
                &["localhost", "127.0.0.1"],
                1,
            ))
            .expect("server certificate");
        let server = server_config(&ServerOptions::new(
            Pem::memory("server.pem", cert.cert_pem),
            Pem::memory("server-key.pem", cert.key_pem),
        ))
        .expect("server config");
        let client = client_config(&ClientOptions {
            ca: Some(Pem::memory("ca.pem", ca.cert_pem())),
            ..ClientOptions::default()
        })
        .expect("client config");
        (server, client)
    })
}

/// A (client, proxy) pair of addresses: a client's port may be in use towards several
/// destinations at once (the cases run in parallel).
type Route = (SocketAddr, SocketAddr);

/// The proxy's end of each connection it made to a server, by the case's end of it and
/// the proxy's address, with when it was made.
fn proxied() -> MutexGuard<'static, HashMap<Route, (SocketAddr, Instant)>> {
    static PROXIED: OnceLock<Mutex<HashMap<Route, (SocketAddr, Instant)>>> = OnceLock::new();
    lock(PROXIED.get_or_init(Mutex::default))
}

/// The proxy's ends of the TLS connections made from each client address (the server's
/// log names the proxy's end). All of them: the same client port may be in use towards
/// several proxies at once, and a plaintext client may reuse a port a proxied one had.
fn seen() -> MutexGuard<'static, HashMap<SocketAddr, Vec<SocketAddr>>> {
    static SEEN: OnceLock<Mutex<HashMap<SocketAddr, Vec<SocketAddr>>>> = OnceLock::new();
    lock(SEEN.get_or_init(Mutex::default))
}

/// The addresses the server may know the case's client `client` by: itself, and the
/// proxy's end of each TLS connection made from it.
fn server_side(client: SocketAddr) -> Vec<String> {
    let mut names = vec![client.to_string()];
    if let Some(ups) = seen().get(&client) {
        names.extend(ups.iter().map(SocketAddr::to_string));
    }
    names
}

/// A TLS proxy on loopback: each connection accepted is carried to `upstream` over TLS
/// (the library's client configuration, server name `localhost`), by two threads, one per
/// direction, with no buffering beyond one read: a case's backpressure reaches the server.
struct Proxy {
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    accepting: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("proxy addr");
        lock(PROXY_ADDRS.get_or_init(Mutex::default)).push(addr);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let accepting = thread::spawn(move || {
            // Polled, so that stopping closes the listener promptly (bounded by the flag).
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((down, client)) => {
                        if let Err(e) = Proxy::carry(down, client, upstream) {
                            eprintln!("proxy: {client}: {e}");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => eprintln!("proxy: accept: {e}"),
                }
            }
        });
        Proxy {
            addr,
            stop,
            accepting: Some(accepting),
        }
    }

    /// Closes the listener (connections already carried go on until either end closes).
    fn stop(self) {
        drop(self);
    }

    fn carry(down: TcpStream, client: SocketAddr, upstream: SocketAddr) -> io::Result<()> {
        use sockmsg_tls::rustls::{pki_types::ServerName, ClientConnection};
        down.set_nonblocking(false)?;
        down.set_nodelay(true)?;
        let up = TcpStream::connect_timeout(&upstream, LIMIT)?;
        up.set_nodelay(true)?;
        let proxy = down.local_addr()?;
        proxied().insert((client, proxy), (up.local_addr()?, Instant::now()));
        let (_, client_tls) = tls_configs();
        let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
        let mut tls =
            ClientConnection::new(Arc::clone(client_tls), name).map_err(io::Error::other)?;
        // Plaintext written before the handshake completes waits in rustls, whatever its size.
        tls.set_buffer_limit(None);
        let tls = Arc::new(Mutex::new(tls));
        let up_writer = Arc::new(Mutex::new(up.try_clone()?));
        // The ClientHello at once, as a client's handshake starts at connect.
        flush(&tls, &up_writer)?;
        let (tls2, up_writer2) = (Arc::clone(&tls), Arc::clone(&up_writer));
        let (mut down_r, down_w) = (down.try_clone()?, down);
        let (up_r, up_w) = (up.try_clone()?, up);
        // The case to the server: its bytes as written, encrypted.
        thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match down_r.read(&mut buf) {
                    Ok(0) => {
                        // The half-close follows what was written, which waits in rustls
                        // until the handshake completes (bounded: the server may never
                        // answer it).
                        let started = Instant::now();
                        while lock(&tls2).is_handshaking() && started.elapsed() < LIMIT {
                            thread::sleep(Duration::from_millis(1));
                        }
                        let _ = flush(&tls2, &up_writer2);
                        let _ = up_w.shutdown(Shutdown::Write);
                        return;
                    }
                    Ok(n) => {
                        let written = lock(&tls2).writer().write_all(&buf[..n]);
                        if written.is_err() || flush(&tls2, &up_writer2).is_err() {
                            let _ = down_r.shutdown(Shutdown::Both);
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        let _ = up_w.shutdown(Shutdown::Both);
                        return;
                    }
                }
            }
        });
        // The server to the case: its records, decrypted.
        thread::spawn(move || {
            let mut up_r = up_r;
            let mut down_w = down_w;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match up_r.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        // A reset: passed on as one.
                        let _ = down_w.shutdown(Shutdown::Both);
                        return;
                    }
                };
                let (plain, ended) = {
                    let mut tls = lock(&tls);
                    let mut rest = &buf[..n];
                    let mut plain = Vec::new();
                    let mut closed = n == 0;
                    // Decrypted bytes are taken after each record read: rustls holds only
                    // 16 KiB of them.
                    while !rest.is_empty() && !closed {
                        closed =
                            tls.read_tls(&mut rest).is_err() || tls.process_new_packets().is_err();
                        loop {
                            let mut chunk = [0u8; 16 * 1024];
                            match tls.reader().read(&mut chunk) {
                                Ok(0) => {
                                    closed = true; // close_notify
                                    break;
                                }
                                Ok(k) => plain.extend_from_slice(&chunk[..k]),
                                Err(_) => break, // WouldBlock: all taken; or a truncation
                            }
                        }
                    }
                    (plain, closed)
                };
                // Only when there is something to send (the handshake): the other
                // direction may hold the socket, blocked until the server reads.
                if lock(&tls).wants_write() {
                    let _ = flush(&tls, &up_writer);
                }
                if down_w.write_all(&plain).is_err() {
                    let _ = up_r.shutdown(Shutdown::Both);
                    return;
                }
                if ended {
                    let _ = down_w.shutdown(Shutdown::Write);
                    return;
                }
            }
        });
        Ok(())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Its port may be a plaintext server's next: no longer a proxy's.
        lock(PROXY_ADDRS.get_or_init(Mutex::default)).retain(|&a| a != self.addr);
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accepting.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends the TLS records the client connection has ready, in order: taken while holding
/// the socket (so two threads cannot send theirs out of order), written while holding
/// only the socket (so the other direction goes on meanwhile).
fn flush(
    tls: &Mutex<sockmsg_tls::rustls::ClientConnection>,
    up: &Mutex<TcpStream>,
) -> io::Result<()> {
    let mut up = lock(up);
    let mut out = Vec::new();
    {
        let mut tls = lock(tls);
        while tls.wants_write() {
            tls.write_tls(&mut out)?;
        }
    }
    if out.is_empty() {
        return Ok(());
    }
    up.write_all(&out)
}

fn req(text: &str) -> Message {
    Message::binary("x/request", text.as_bytes().to_vec())
}

fn wire(messages: &[Message]) -> Vec<u8> {
    messages
        .iter()
        .flat_map(|m| encode(m).expect("encodable"))
        .collect()
}

/// Where the log stood when each client connected. Client ports are reused (the cases of
/// this binary run in parallel, on every transport): a line about a client address that was
/// written before that client connected is about an earlier connection with the same port.
fn marks() -> MutexGuard<'static, HashMap<SocketAddr, usize>> {
    static MARKS: OnceLock<Mutex<HashMap<SocketAddr, usize>>> = OnceLock::new();
    MARKS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn connect(addr: SocketAddr) -> TcpStream {
    let mark = sockmsg_tests::log::captured(tracing::Level::INFO)
        .lock()
        .map_or_else(|e| e.into_inner().len(), |log| log.len());
    let connected = Instant::now();
    let s = TcpStream::connect_timeout(&addr, LIMIT).expect("connect");
    let local = s.local_addr().expect("local addr");
    marks().insert(local, mark);
    if is_proxy(addr) {
        // Over TLS: wait until the proxy made its connection to the server (its end is
        // what the server's log names).
        let mut up = None;
        let made = wait_until(|| {
            up = proxied()
                .get(&(local, addr))
                .filter(|&&(_, at)| at >= connected)
                .map(|&(up, _)| up);
            up.is_some()
        });
        assert!(made, "the TLS proxy did not connect {local} to the server");
        if let Some(up) = up {
            seen().entry(local).or_default().push(up);
        }
    }
    s.set_read_timeout(Some(LIMIT)).expect("SO_RCVTIMEO");
    s.set_write_timeout(Some(LIMIT)).expect("SO_SNDTIMEO");
    s.set_nodelay(true).expect("TCP_NODELAY");
    s
}

/// `true` if `addr` is a TLS proxy of this harness (it made connections for clients).
fn is_proxy(addr: SocketAddr) -> bool {
    lock(PROXY_ADDRS.get_or_init(Mutex::default)).contains(&addr)
}

/// The listening addresses of the TLS proxies started.
static PROXY_ADDRS: OnceLock<Mutex<Vec<SocketAddr>>> = OnceLock::new();

/// How the server ended a connection, seen from the client.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Still open after the answers wanted.
    Open,
    /// End of stream or reset.
    Closed,
}

/// Reads answers from `stream`: `want` of them, or with `want == usize::MAX` until the
/// server closes. Panics if the stream stays silent for [`LIMIT`].
fn answers(stream: &mut TcpStream, want: usize) -> (Vec<Message>, End) {
    let mut conn = Connection::new(Role::Client, Default::default());
    let mut got = Vec::new();
    loop {
        while got.len() < want {
            match conn.next_event() {
                Ok(Event::Message(m)) => got.push(m),
                Ok(Event::NeedData) => break,
                Ok(Event::End) => return (got, End::Closed),
                Err(e) => panic!("the server's answers are malformed: {e}"),
            }
        }
        if got.len() >= want {
            return (got, End::Open);
        }
        match conn.read_from(stream, Instant::now()) {
            Ok(_) => {} // 0: the end of stream, recorded
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return (got, End::Closed),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("no answer or close within {LIMIT:?}: {e}"),
        }
    }
}

/// Contents of `messages`, as text.
fn contents(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(m.content()).into_owned())
        .collect()
}

/// One request on a new connection, answered.
fn ask(addr: SocketAddr, text: &str) -> String {
    let mut s = connect(addr);
    s.write_all(&wire(&[req(text)])).expect("write");
    let (got, _) = answers(&mut s, 1);
    contents(&got).remove(0)
}

/// Waits until `f` holds, for at most [`LIMIT`].
fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < LIMIT {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Everything the servers of this binary log (INFO and above).
fn log() {
    let _ = sockmsg_tests::log::captured(tracing::Level::INFO);
}

/// The lines about the connection whose client end is `client` (logged since it
/// connected) that contain `needle`.
fn lines_about(client: SocketAddr, needle: &str) -> Vec<String> {
    let mark = marks().get(&client).copied().unwrap_or(0);
    // Over TLS the server names the proxy's end of the connection.
    let needles: Vec<String> = server_side(client)
        .iter()
        .map(|name| needle.replace(&client.to_string(), name))
        .collect();
    let text = sockmsg_tests::log::text();
    text.get(mark..)
        .unwrap_or(&text)
        .lines()
        .filter(|l| needles.iter().any(|n| l.contains(n.as_str())))
        .map(str::to_owned)
        .collect()
}

/// The `closing connection to ADDR (...)` line of the connection whose client end is
/// `client`, once logged.
fn close_line(client: SocketAddr) -> Option<String> {
    let mut lines = lines_about(client, &format!("closing connection to {client} "));
    lines.pop()
}

/// Asserts that the close of the connection whose client end is `client` is logged, with
/// `reason` in its line.
fn assert_close_logged(t: Target, client: SocketAddr, reason: &str) {
    assert!(
        wait_until(|| close_line(client).is_some_and(|l| l.contains(reason))),
        "{t}: no close line with {reason:?} for {client}: {:?}",
        close_line(client)
    );
}

// ---------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------

#[test]
fn demo_answers_are_the_demo_services() {
    on_every_transport(|t| {
        let server = start(t, &config(), Arc::new(DemoService::new()));
        let demo = DemoService::new();
        let mut s = connect(server.addr());
        let requests = [
            json_request("search", "morpheus"),
            json_request("search", "ring"),
            json_request("search", "\u{1f436}"),
            json_request("search", "nobody"),
            json_request("lookup", "x"),
            demo_request("binary", "\u{263a} payload"),
        ];
        s.write_all(&wire(&requests)).expect("write");
        let (got, _) = answers(&mut s, requests.len());
        for (request, answer) in requests.iter().zip(&got) {
            assert_eq!(
                Some(answer),
                demo.respond(request).ok().as_ref(),
                "{t}: {request:?}"
            );
        }
    });
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    on_every_transport(|t| {
        let server = start(t, &config(), test_service());
        let mut s = connect(server.addr());
        let requests: Vec<Message> = (0..200).map(|i| req(&format!("p{i}"))).collect();
        s.write_all(&wire(&requests)).expect("write");
        let (got, end) = answers(&mut s, 200);
        let want: Vec<String> = (0..200).map(|i| format!("echo:p{i}")).collect();
        assert_eq!(contents(&got), want, "{t}");
        assert_eq!(end, End::Open, "{t}: keep-alive by default");
        // And the connection serves again.
        s.write_all(&wire(&[req("again")])).expect("write");
        assert_eq!(contents(&answers(&mut s, 1).0), ["echo:again"], "{t}");
    });
}

#[test]
fn every_split_of_a_request_is_answered() {
    on_every_transport(|t| {
        let server = start(t, &config(), test_service());
        let bytes = wire(&[req("split me")]);
        for cut in 1..bytes.len() {
            let mut s = connect(server.addr());
            s.write_all(&bytes[..cut]).expect("write");
            thread::sleep(Duration::from_millis(1));
            s.write_all(&bytes[cut..]).expect("write");
            assert_eq!(
                contents(&answers(&mut s, 1).0),
                ["echo:split me"],
                "{t}: cut {cut}"
            );
        }
        // And one byte at a time on one connection.
        let mut s = connect(server.addr());
        for b in &bytes {
            s.write_all(std::slice::from_ref(b)).expect("write");
        }
        assert_eq!(
            contents(&answers(&mut s, 1).0),
            ["echo:split me"],
            "{t}: byte by byte"
        );
    });
}

#[test]
fn half_close_gets_every_answer_then_the_end() {
    on_every_transport(|t| {
        let server = start(t, &config(), test_service());
        let mut s = connect(server.addr());
        let client = s.local_addr().expect("local addr");
        s.write_all(&wire(&[req("a"), req("b"), req("c")]))
            .expect("write");
        s.shutdown(Shutdown::Write).expect("half-close");
        let (got, end) = answers(&mut s, usize::MAX);
        assert_eq!(contents(&got), ["echo:a", "echo:b", "echo:c"], "{t}");
        assert_eq!(end, End::Closed, "{t}");
        assert_close_logged(t, client, "the client closed it");
    });
}

#[test]
fn a_request_and_its_fin_in_one_segment_are_both_seen() {
    on_every_transport(|t| {
        let server = start(t, &config(), test_service());
        for i in 0..20 {
            let mut s = connect(server.addr());
            // One write then the FIN, at once: often one segment with the data.
            s.write_all(&wire(&[req(&format!("fin {i}"))]))
                .expect("write");
            s.shutdown(Shutdown::Write).expect("half-close");
            let (got, end) = answers(&mut s, usize::MAX);
            assert_eq!(contents(&got), [format!("echo:fin {i}")], "{t}");
            assert_eq!(end, End::Closed, "{t}");
        }
    });
}

#[test]
fn close_after_answer_closes_each_connection_after_its_answer() {
    on_every_transport(|t| {
        let config = config().with_close_after_answer(true);
        let server = start(t, &config, test_service());
        let mut s = connect(server.addr());
        let client = s.local_addr().expect("local addr");
        let started = Instant::now();
        s.write_all(&wire(&[req("once")])).expect("write");
        // A client that reads until the server closes, as the guide's does.
        let (got, end) = answers(&mut s, usize::MAX);
        assert_eq!(contents(&got), ["echo:once"], "{t}");
        assert_eq!(end, End::Closed, "{t}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{t}: closed at once"
        );
        assert_close_logged(t, client, "answered");
    });
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    on_every_transport(|t| {
        let idle = Duration::from_millis(300);
        let config = ServerConfig {
            idle_timeout: Some(idle),
            ..config()
        };
        let server = start(t, &config, test_service());
        let mut s = connect(server.addr());
        let client = s.local_addr().expect("local addr");
        s.write_all(&wire(&[req("then silence")])).expect("write");
        assert_eq!(
            contents(&answers(&mut s, 1).0),
            ["echo:then silence"],
            "{t}"
        );
        let answered = Instant::now();
        let (more, end) = answers(&mut s, usize::MAX);
        let after = answered.elapsed();
        assert!(more.is_empty() && end == End::Closed, "{t}");
        assert!(
            after >= idle - Duration::from_millis(50) && after < idle * 10,
            "{t}: closed {after:?} after the answer"
        );
        assert_close_logged(t, client, "idle for");
    });
}

#[test]
fn slowloris_peers_are_closed_at_the_header_deadline_while_good_clients_are_served() {
    on_every_transport(|t| {
        const SLOW: usize = 8;
        let deadline = Duration::from_millis(800);
        let config = ServerConfig {
            header_deadline: Some(deadline),
            ..config()
        };
        let server = start(t, &config, test_service());
        let addr = server.addr();
        let bytes = wire(&[req("slowly, slowly")]);
        let slow: Vec<TcpStream> = (0..SLOW).map(|_| connect(addr)).collect();
        for s in &slow {
            s.set_nonblocking(true).expect("non-blocking");
        }
        let started = Instant::now();
        let mut closed_after: Vec<Option<Duration>> = vec![None; SLOW];
        let mut sent = 0;
        let mut good = 0;
        while started.elapsed() < deadline * 4 && closed_after.iter().any(Option::is_none) {
            for (mut s, closed) in slow.iter().zip(closed_after.iter_mut()) {
                if closed.is_some() {
                    continue;
                }
                let mut buf = [0u8; 64];
                match s.read(&mut buf) {
                    Ok(0) => *closed = Some(started.elapsed()),
                    Ok(n) => panic!("{t}: a slow peer got {n} bytes of an answer"),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if let Some(byte) = bytes.get(sent..sent + 1) {
                            if s.write(byte).is_err() {
                                *closed = Some(started.elapsed());
                            }
                        }
                    }
                    Err(_) => *closed = Some(started.elapsed()),
                }
            }
            sent += 1;
            // Meanwhile a good client is answered at once.
            assert_eq!(
                ask(addr, &format!("good {good}")),
                format!("echo:good {good}")
            );
            good += 1;
            thread::sleep(Duration::from_millis(50));
        }
        assert!(
            sent < bytes.len(),
            "{t}: the slow request must still be incomplete"
        );
        for (i, closed) in closed_after.iter().enumerate() {
            let after = closed.unwrap_or_else(|| panic!("{t}: slow peer {i} was never closed"));
            assert!(
                after >= deadline - Duration::from_millis(100) && after < deadline * 3,
                "{t}: slow peer {i} closed after {after:?}, deadline {deadline:?}"
            );
        }
        for s in &slow {
            let client = s.local_addr().expect("local addr");
            assert_close_logged(t, client, "not complete");
        }
        assert!(good >= 3, "{t}: good requests {good}");
    });
}

#[test]
fn a_client_that_never_reads_is_capped_and_closed_at_the_write_deadline() {
    on_every_transport(|t| {
        let write_deadline = Duration::from_millis(700);
        let config = ServerConfig {
            output_cap: 64 * 1024,
            write_deadline: Some(write_deadline),
            workers: 1, // the good clients share the loop with the bad one
            ..config()
        };
        let server = start(t, &config, test_service());
        let mut bad = connect(server.addr());
        let client = bad.local_addr().expect("local addr");
        // Requests for 256 KiB answers, never read: far more than the socket buffers hold.
        let batch = wire(&vec![req("big:262144"); 64]);
        bad.set_write_timeout(Some(Duration::from_millis(300)))
            .expect("SO_SNDTIMEO");
        let started = Instant::now();
        let _ = bad.write_all(&batch); // stalls once the server stops reading, or is closed

        // Good clients are served meanwhile.
        for i in 0..5 {
            assert_eq!(
                ask(server.addr(), &format!("good {i}")),
                format!("echo:good {i}")
            );
        }
        // The server gives up at the write deadline: its close shows in the log.
        assert!(
            wait_until(|| close_line(client).is_some()),
            "{t}: the never-reading client was not closed"
        );
        let took = started.elapsed();
        let line = close_line(client).unwrap_or_default();
        assert!(line.contains("accepted no answer bytes"), "{t}: {line}");
        assert!(
            took < write_deadline * 6 + Duration::from_secs(1),
            "{t}: {took:?}"
        );
        // It got some answers, not all: the rest were never queued.
        bad.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut received = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match bad.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
        assert!(received < 64 * 262_144, "{t}: {received} bytes");
    });
}

#[test]
fn an_answer_larger_than_the_output_cap_is_sent_alone() {
    on_every_transport(|t| {
        let config = ServerConfig {
            output_cap: 1024,
            ..config()
        };
        let server = start(t, &config, test_service());
        let mut s = connect(server.addr());
        s.write_all(&wire(&[req("big:10000"), req("small"), req("big:3000")]))
            .expect("write");
        let (got, _) = answers(&mut s, 3);
        assert_eq!(got[0].content().len(), 10_000, "{t}");
        assert_eq!(got[1].content(), b"echo:small", "{t}");
        assert_eq!(got[2].content().len(), 3_000, "{t}");
        // Pipelining far past a small cap pauses and resumes, answers in order.
        let requests: Vec<Message> = (0..300).map(|i| req(&format!("c{i}"))).collect();
        s.write_all(&wire(&requests)).expect("write");
        let (got, _) = answers(&mut s, 300);
        assert_eq!(
            got.last().map(|m| m.content()),
            Some(&b"echo:c299"[..]),
            "{t}"
        );
    });
}

#[test]
fn an_answer_over_the_message_limit_is_not_sent() {
    on_every_transport(|t| {
        let mut config = config();
        config.limits.max_content_len = 1000;
        let server = start(t, &config, test_service());
        let mut s = connect(server.addr());
        let client = s.local_addr().expect("local addr");
        s.write_all(&wire(&[req("fine"), req("big:1001")]))
            .expect("write");
        let (got, end) = answers(&mut s, usize::MAX);
        assert_eq!(contents(&got), ["echo:fine"], "{t}");
        assert_eq!(end, End::Closed, "{t}");
        assert_close_logged(t, client, "over the message limit");
    });
}

#[test]
fn large_messages_round_trip() {
    on_every_transport(|t| {
        let server = start(t, &config(), test_service());
        let size = 3 * 1024 * 1024 + 17;
        let content: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut s = connect(server.addr());
        let bytes = wire(&[Message::binary("x/y", content.clone()), req("after")]);
        let writer = {
            let mut w = s.try_clone().expect("clone");
            thread::spawn(move || w.write_all(&bytes))
        };
        let (got, _) = answers(&mut s, 2);
        writer.join().expect("writer").expect("write");
        assert_eq!(got[0].content().len(), size + 5, "{t}");
        assert!(got[0].content()[5..] == content[..], "{t}");
        assert_eq!(got[1].content(), b"echo:after", "{t}");
    });
}

#[test]
fn protocol_errors_and_service_failures_close_only_their_connection() {
    on_every_transport(|t| {
        let server = start(t, &config(), test_service());
        let mut good = connect(server.addr());
        good.write_all(&wire(&[req("before")])).expect("write");
        assert_eq!(contents(&answers(&mut good, 1).0), ["echo:before"], "{t}");

        // A protocol error after a good request: that answer first, then the close.
        let mut bad = connect(server.addr());
        let bad_addr = bad.local_addr().expect("local addr");
        bad.write_all(&[wire(&[req("first")]), b"\x00\x02[]".to_vec()].concat())
            .expect("write");
        let (got, end) = answers(&mut bad, usize::MAX);
        assert_eq!(
            (contents(&got), end),
            (vec!["echo:first".to_owned()], End::Closed),
            "{t}"
        );
        assert_close_logged(t, bad_addr, "protocol error");

        for (poison, reason) in [
            ("fail", "the service failed"),
            ("panic", "the service panicked"),
        ] {
            let mut s = connect(server.addr());
            let addr = s.local_addr().expect("local addr");
            s.write_all(&wire(&[req(poison)])).expect("write");
            let (got, end) = answers(&mut s, usize::MAX);
            assert!(got.is_empty() && end == End::Closed, "{t}: {poison}");
            assert_close_logged(t, addr, reason);
        }
        good.write_all(&wire(&[req("after")])).expect("write");
        assert_eq!(contents(&answers(&mut good, 1).0), ["echo:after"], "{t}");
    });
}

#[test]
fn shutdown_with_a_half_received_request_is_clean_and_prompt() {
    on_every_transport(|t| {
        let server = start(t, &config(), test_service());
        let mut idle = connect(server.addr());
        let mut half = connect(server.addr());
        let idle_addr = idle.local_addr().expect("local addr");
        let half_addr = half.local_addr().expect("local addr");
        idle.write_all(&wire(&[req("x")])).expect("write");
        assert_eq!(contents(&answers(&mut idle, 1).0), ["echo:x"], "{t}");
        let bytes = wire(&[req("never finished")]);
        half.write_all(&bytes[..bytes.len() / 2]).expect("write");
        thread::sleep(Duration::from_millis(100)); // received by the server

        let started = Instant::now();
        let result = server.stop(LIMIT);
        let took = started.elapsed();
        assert!(result.is_ok(), "{t}: {result:?}");
        assert!(took < Duration::from_secs(2), "{t}: shutdown took {took:?}");
        for (s, addr) in [(&mut idle, idle_addr), (&mut half, half_addr)] {
            let (got, end) = answers(s, usize::MAX);
            assert!(got.is_empty() && end == End::Closed, "{t}");
            let line = close_line(addr).unwrap_or_default();
            assert!(
                line.contains("the server is shutting down"),
                "{t}: {line:?}"
            );
            assert!(!line.contains("WARN"), "{t}: {line:?}");
        }
        let blamed = lines_about(half_addr, &format!("{half_addr}"))
            .into_iter()
            .filter(|l| l.contains("protocol") || l.contains("client"))
            .collect::<Vec<_>>();
        assert!(blamed.is_empty(), "{t}: {blamed:?}");
    });
}

#[test]
fn shutdown_lets_an_answer_in_progress_finish() {
    on_every_transport(|t| {
        let server = start(t, &config(), test_service());
        let mut s = connect(server.addr());
        s.write_all(&wire(&[req("slow")])).expect("write");
        thread::sleep(Duration::from_millis(100)); // the service is at work
        let addr = server.addr();
        let started = Instant::now();
        let result = server.stop(LIMIT);
        assert!(result.is_ok(), "{t}: {result:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "{t}");
        let (got, end) = answers(&mut s, usize::MAX);
        assert_eq!(contents(&got), ["echo:slow"], "{t}");
        assert_eq!(end, End::Closed, "{t}");
        // No longer listening.
        assert!(TcpStream::connect_timeout(&addr, LIMIT).is_err(), "{t}");
    });
}

/// A server of one connection at most (`when_full` beyond it), and the connection that
/// holds its one slot, answered once.
fn one_slot_taken(t: Target, when_full: WhenFull) -> (Server, TcpStream) {
    let one = ServerConfig {
        max_connections: 1,
        when_full,
        ..config()
    };
    let server = start(t, &one, test_service());
    let mut first = connect(server.addr());
    first.write_all(&wire(&[req("1")])).expect("write");
    assert_eq!(contents(&answers(&mut first, 1).0), ["echo:1"], "{t}");
    (server, first)
}

#[test]
fn connections_beyond_the_maximum_wait_or_are_refused() {
    on_every_transport(|t| {
        // Wait: the next connection is served once a slot is free.
        let (server, first) = one_slot_taken(t, WhenFull::Wait);
        let mut second = connect(server.addr());
        second.write_all(&wire(&[req("2")])).expect("write");
        second
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut byte = [0u8; 1];
        assert!(
            matches!(second.read(&mut byte), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock),
            "{t}: the second connection must wait"
        );
        drop(first);
        second.set_read_timeout(Some(LIMIT)).expect("timeout");
        assert_eq!(contents(&answers(&mut second, 1).0), ["echo:2"], "{t}");
        drop(second);
        drop(server);

        // Refuse: the extra connection is closed at once; a slot freed is reused.
        let (server, first) = one_slot_taken(t, WhenFull::Refuse);
        let mut extra = connect(server.addr());
        let (got, end) = answers(&mut extra, usize::MAX);
        assert!(got.is_empty() && end == End::Closed, "{t}");
        drop(first);
        assert!(
            wait_until(|| {
                let mut s = connect(server.addr());
                s.write_all(&wire(&[req("3")])).is_ok()
                    && matches!(answers(&mut s, 1), (ref got, End::Open) if got.len() == 1)
            }),
            "{t}: a freed slot is reused"
        );
    });
}

/// At the connection cap with `WhenFull::Wait`, the accept loop waits for a slot; a
/// shutdown stops that wait at once, and the connections with it.
#[test]
fn shutdown_at_the_connection_cap_is_prompt() {
    on_every_transport(|t| {
        let (server, mut first) = one_slot_taken(t, WhenFull::Wait);
        // One more, left in the backlog: the server is at its cap, waiting for a slot.
        let _waiting = connect(server.addr());
        thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        let result = server.stop(LIMIT);
        let took = started.elapsed();
        assert!(result.is_ok(), "{t}: {result:?}");
        assert!(took < Duration::from_secs(2), "{t}: shutdown took {took:?}");
        let (got, end) = answers(&mut first, usize::MAX);
        assert!(got.is_empty() && end == End::Closed, "{t}");
    });
}

#[test]
fn many_clients_at_once_are_all_answered() {
    on_every_transport(|t| {
        let server = start(t, &config(), test_service());
        let addr = server.addr();
        let done = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..32)
            .map(|c| {
                let done = Arc::clone(&done);
                thread::spawn(move || {
                    // Each thread keeps 8 connections open, 10 requests each, pipelined.
                    let mut conns: Vec<TcpStream> = (0..8).map(|_| connect(addr)).collect();
                    for (k, s) in conns.iter_mut().enumerate() {
                        let requests: Vec<Message> =
                            (0..10).map(|r| req(&format!("{c}.{k}.{r}"))).collect();
                        s.write_all(&wire(&requests)).expect("write");
                    }
                    for (k, s) in conns.iter_mut().enumerate() {
                        let (got, _) = answers(s, 10);
                        let want: Vec<String> =
                            (0..10).map(|r| format!("echo:{c}.{k}.{r}")).collect();
                        assert_eq!(contents(&got), want);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join()
                .unwrap_or_else(|_| panic!("{t}: a client thread failed"));
        }
        assert_eq!(done.load(Ordering::SeqCst), 256, "{t}");
    });
}

/// `true` once the server closed `stream` (end of stream or reset), within [`LIMIT`].
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return e.kind() == io::ErrorKind::ConnectionReset,
        }
    }
}

/// `true` if `stream` is still open and silent after `wait`.
fn still_open(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut byte = [0u8; 1];
    let open =
        matches!(stream.read(&mut byte), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock);
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    open
}

#[test]
fn silent_connections_at_the_cap_cannot_lock_out_a_good_client() {
    on_every_transport(|t| {
        let first_byte = Duration::from_millis(1500);
        let base = ServerConfig {
            max_connections: 4,
            workers: 1,
            first_byte_deadline: Some(first_byte),
            ..config()
        };
        // EvictIdle (the default): the good client is served at once, in place of the
        // connection silent the longest.
        let server = start(t, &base, test_service());
        let mut silent: Vec<TcpStream> = (0..4)
            .map(|_| {
                let s = connect(server.addr());
                thread::sleep(Duration::from_millis(30));
                s
            })
            .collect();
        thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        assert_eq!(ask(server.addr(), "good"), "echo:good", "{t}");
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "{t}: served in {:?}",
            started.elapsed()
        );
        let oldest = silent[0].local_addr().expect("addr");
        assert!(
            closed_by_server(&mut silent[0]),
            "{t}: the oldest is evicted"
        );
        assert_close_logged(t, oldest, "idle the longest");
        assert!(
            still_open(&mut silent[3], Duration::from_millis(100)),
            "{t}"
        );
        // The first-byte deadline closes the others.
        for s in &mut silent[1..] {
            assert!(closed_by_server(s), "{t}");
        }
        assert!(
            started.elapsed() < first_byte + Duration::from_secs(2),
            "{t}"
        );
        drop(server);

        // Wait: the good client waits for the first-byte deadline, no longer.
        let wait = ServerConfig {
            when_full: WhenFull::Wait,
            ..base
        };
        let server = start(t, &wait, test_service());
        let silent: Vec<TcpStream> = (0..4).map(|_| connect(server.addr())).collect();
        thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        assert_eq!(ask(server.addr(), "patient"), "echo:patient", "{t}");
        let waited = started.elapsed();
        assert!(
            waited < first_byte + Duration::from_secs(1),
            "{t}: waited {waited:?}"
        );
        assert!(
            waited > first_byte / 2,
            "{t}: waited only {waited:?}: was the cap applied?"
        );
        drop(silent);
    });
}

/// The start of a request announcing `len` bytes of content, with `sent` of them.
fn partial_request(len: usize, sent: usize) -> Vec<u8> {
    let mut bytes = wire(&[Message::binary("x/request", vec![b'a'; len])]);
    bytes.truncate(bytes.len() - (len - sent));
    bytes
}

#[test]
fn the_memory_budget_bounds_large_messages_and_good_clients_are_served() {
    on_every_transport(|t| {
        let budget = MemoryBudget::new(1024 * 1024);
        let config = ServerConfig {
            memory_meter: Some(budget.clone()),
            ..config()
        };
        let server = start(t, &config, test_service());
        // 6 clients send most of a 400 KiB request under a 1 MiB budget: two fit.
        let mut big: Vec<TcpStream> = (0..6)
            .map(|_| {
                let mut s = connect(server.addr());
                s.write_all(&partial_request(400 * 1024, 300 * 1024))
                    .or_else(|e| match e.kind() {
                        // Refused (and reset) before all of it was written.
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Ok(()),
                        _ => Err(e),
                    })
                    .expect("write");
                s
            })
            .collect();
        assert!(
            wait_until(|| budget.refused() >= 4),
            "{t}: refused {}",
            budget.refused()
        );
        let refused: Vec<usize> = (0..big.len())
            .filter(|&i| !still_open(&mut big[i], Duration::from_millis(50)))
            .collect();
        assert_eq!(refused.len(), 4, "{t}: {refused:?}");
        // Good clients are still served.
        for i in 0..5 {
            assert_eq!(
                ask(server.addr(), &format!("small{i}")),
                format!("echo:small{i}"),
                "{t}"
            );
        }
        assert!(budget.peak() <= budget.limit(), "{t}: {budget:?}");
        assert!(
            sockmsg_tests::log::lines_with("server's memory budget of 1048576 bytes").len() >= 4,
            "{t}: the close is logged"
        );
        drop(big);
        assert!(wait_until(|| budget.used() < 64 * 1024), "{t}: {budget:?}");
    });
}

#[test]
fn tls_buffers_count_in_the_budget_and_one_that_finds_no_room_closes_its_connection() {
    // TLS only: the plaintext cases are the ones above.
    for &transport in Transport::ALL {
        let t = Target {
            transport,
            tls: true,
        };
        let budget = MemoryBudget::new(1024 * 1024);
        let config = ServerConfig {
            memory_meter: Some(budget.clone()),
            ..config()
        };
        let server = start(t, &config, test_service());
        // The server's other connections hold all but 20 KiB: room for a TLS handshake and
        // small requests, not for a whole 16 KiB record in flight besides.
        let mut others = sockmsg_server::BudgetCharge::new(&budget);
        assert!(
            others.try_set(budget.limit() - budget.used() - 20 * 1024),
            "{t}"
        );
        let refused = budget.refused();
        let mut client = connect(server.addr());
        let local = client.local_addr().expect("local addr");
        let text = "x".repeat(12 * 1024);
        client.write_all(&wire(&[req(&text)])).expect("write");
        let (got, end) = answers(&mut client, 1);
        assert_eq!(
            (got.len(), end),
            (0, End::Closed),
            "{t}: closed, unanswered"
        );
        assert_close_logged(t, local, "no room for a TLS buffer of 18432 bytes");
        assert!(budget.refused() > refused, "{t}: {budget:?}");
        drop(client);
        // A good client is served; nothing is left charged once the server stops.
        assert_eq!(ask(server.addr(), "small"), "echo:small", "{t}");
        assert!(budget.peak() <= budget.limit(), "{t}: {budget:?}");
        server.stop(LIMIT).expect("stop");
        drop(others);
        assert!(wait_until(|| budget.used() == 0), "{t}: {budget:?}");
    }
}

#[test]
fn an_answer_alone_over_the_output_cap_is_sent_only_within_the_budget() {
    on_every_transport(|t| {
        let budget = MemoryBudget::new(512 * 1024);
        let config = ServerConfig {
            output_cap: 64 * 1024,
            memory_meter: Some(budget.clone()),
            large_answer_share: Some(512 * 1024), // the budget, not the share, decides here
            ..config()
        };
        let server = start(t, &config, test_service());
        let mut s = connect(server.addr());
        s.write_all(&wire(&[req("big:200000")])).expect("write");
        let (got, end) = answers(&mut s, 1);
        assert_eq!((got.len(), end), (1, End::Open), "{t}");
        assert_eq!(got[0].content().len(), 200_000, "{t}");
        s.write_all(&wire(&[req("big:600000")])).expect("write");
        let (got, end) = answers(&mut s, usize::MAX);
        assert!(got.is_empty() && end == End::Closed, "{t}: {}", got.len());
        assert_eq!(budget.refused(), 1, "{t}");
        assert!(budget.peak() <= budget.limit(), "{t}: {budget:?}");
    });
}

// ---------------------------------------------------------------------------------------
// Large answers to slow or never-reading peers, and eviction across event loops (issue 12)
// ---------------------------------------------------------------------------------------

/// [`test_service`], plus `sleep:N`: answered after N ms (the thread that calls the service
/// is busy meanwhile: on the event-loop transport, its whole loop).
fn sleepy_service() -> Arc<dyn Service> {
    let inner = test_service();
    Arc::new(move |m: Message| -> Result<Message, ServiceError> {
        if let Some(ms) = m.content().strip_prefix(b"sleep:") {
            let ms: u64 = std::str::from_utf8(ms)?.parse()?;
            thread::sleep(Duration::from_millis(ms));
            return Ok(Message::binary("x/answer", b"slept".to_vec()));
        }
        inner.call(m)
    })
}

#[test]
fn never_reading_clients_with_large_answers_hold_at_most_their_share() {
    on_every_transport(|t| {
        const ANSWER: usize = 8 * 1024 * 1024; // more than the kernel buffers of a socket
        let budget = MemoryBudget::new(64 * 1024 * 1024);
        let share = 16 * 1024 * 1024; // a quarter of the budget, the default: two answers
        let config = ServerConfig {
            output_cap: 64 * 1024,
            memory_meter: Some(budget.clone()),
            min_send_rate: Some(512 * 1024),
            send_rate_window: Duration::from_secs(1),
            ..config()
        };
        assert_eq!(config.large_answer_share_of(budget.limit()), share);
        let server = start(t, &config, test_service());
        let mut held: Vec<TcpStream> = (0..6)
            .map(|_| {
                let mut s = connect(server.addr());
                s.write_all(&wire(&[req(&format!("big:{ANSWER}"))]))
                    .expect("write");
                s
            })
            .collect();
        // Two answers are queued; the other four are refused, each closing its connection.
        assert!(
            wait_until(|| budget.refused() >= 4),
            "{t}: refused {}",
            budget.refused()
        );
        assert!(budget.large_answers() <= share, "{t}: {budget:?}");
        let addrs: Vec<SocketAddr> = held.iter().map(|s| s.local_addr().expect("addr")).collect();
        let closed_for = |why: &str| {
            addrs
                .iter()
                .filter(|&&a| close_line(a).is_some_and(|l| l.contains(why)))
                .count()
        };
        assert!(
            wait_until(|| closed_for("share of the memory budget") == 4),
            "{t}: {}",
            closed_for("share of the memory budget")
        );
        // A good client is served meanwhile.
        assert_eq!(ask(server.addr(), "good"), "echo:good", "{t}");
        // The two that never read are closed by the least send rate (within two windows),
        // and give their share back.
        assert!(
            wait_until(|| budget.large_answers() == 0),
            "{t}: {budget:?}"
        );
        assert!(
            wait_until(|| closed_for("slower than the minimum") == 2),
            "{t}: {}",
            closed_for("slower than the minimum")
        );
        assert!(
            budget.large_answers_peak() <= share && budget.peak() <= budget.limit(),
            "{t}: {budget:?}"
        );
        assert_eq!(budget.refused(), 4, "{t}");
        for s in &mut held {
            assert!(closed_by_server(s), "{t}");
        }
        // With the share free again, a client that reads gets a large answer whole.
        let mut s = connect(server.addr());
        s.write_all(&wire(&[req(&format!("big:{ANSWER}"))]))
            .expect("write");
        let (got, end) = answers(&mut s, 1);
        assert_eq!((got[0].content().len(), end), (ANSWER, End::Open), "{t}");
        drop(held);
        assert!(
            wait_until(|| budget.used() < 1024 * 1024),
            "{t}: {budget:?}"
        );
    });
}

#[test]
fn a_reader_below_the_least_send_rate_is_closed_while_a_good_client_is_served() {
    on_every_transport(|t| {
        const ANSWER: usize = 8 * 1024 * 1024;
        let config = ServerConfig {
            output_cap: 64 * 1024,
            min_send_rate: Some(256 * 1024),
            send_rate_window: Duration::from_secs(1),
            workers: 1, // the good client shares the loop with the slow one
            ..config()
        };
        let server = start(t, &config, test_service());
        let mut slow = connect(server.addr());
        let client = slow.local_addr().expect("addr");
        slow.write_all(&wire(&[req(&format!("big:{ANSWER}"))]))
            .expect("write");
        // A steady 40 KiB/s: 4 KiB every 100 ms, far below 256 KiB/s.
        let started = Instant::now();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let mut buf = vec![0u8; 4096];
                let mut got = 0usize;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < LIMIT {
                    match slow.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                    thread::sleep(Duration::from_millis(100));
                }
                got
            }
        });
        // A good client meanwhile: small answers, and a large one read at full speed.
        for i in 0..3 {
            assert_eq!(
                ask(server.addr(), &format!("good {i}")),
                format!("echo:good {i}"),
                "{t}"
            );
        }
        let mut good = connect(server.addr());
        good.write_all(&wire(&[req(&format!("big:{ANSWER}")), req("after")]))
            .expect("write");
        let (got, end) = answers(&mut good, 2);
        assert_eq!(end, End::Open, "{t}");
        assert_eq!(got[0].content().len(), ANSWER, "{t}");
        assert_eq!(got[1].content(), b"echo:after", "{t}");
        // The slow one is closed, for that reason, within a few windows (what the kernel
        // buffered for it still trickles in after the close).
        assert_close_logged(t, client, "slower than the minimum of 262144 bytes/s");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(6), "{t}: closed after {took:?}");
        stop.store(true, Ordering::Relaxed);
        let received = reader.join().expect("reader");
        assert!(received < ANSWER, "{t}: it got {received} bytes");
        assert_eq!(ask(server.addr(), "still"), "echo:still", "{t}");
    });
}

/// The event-loop transport only: it is the one whose connections are spread over
/// loops that each accept (std and tokio have one accept loop, which sees every
/// connection's idle mark; both also evict as soon as the cap is reached, before a newcomer
/// is there, and so can choose a connection whose request is in the service as idle).
#[test]
fn at_the_cap_an_idle_connection_on_another_event_loop_is_evicted() {
    let case = |t: Target| {
        let config = ServerConfig {
            max_connections: 4,
            workers: 2,
            first_byte_deadline: Some(Duration::from_secs(30)),
            ..config()
        };
        let server = start(t, &config, sleepy_service());
        // `busy` keeps one loop (call it A) in the service for 2 s: every connection made
        // meanwhile is accepted by the other loop, B.
        let mut busy = connect(server.addr());
        busy.write_all(&wire(&[req("sleep:2000")])).expect("write");
        thread::sleep(Duration::from_millis(300));
        let mut idle: Vec<TcpStream> = (0..3)
            .map(|_| {
                let s = connect(server.addr());
                thread::sleep(Duration::from_millis(30));
                s
            })
            .collect();
        let (got, _) = answers(&mut busy, 1);
        assert_eq!(contents(&got), ["slept"], "{t}");
        // Loop A's one connection is now busy receiving a request: nothing idle on A.
        busy.write_all(&partial_request(1000, 10)).expect("write");
        // The first of loop B's connections keeps B in the service for 2 s: the newcomer
        // is accepted by A, whose own connections are all busy. (Its request arrives in two
        // parts, so that it is seen busy before the service holds its loop or thread.)
        let sleep = wire(&[req("sleep:2000")]);
        idle[0].write_all(&sleep[..5]).expect("write");
        thread::sleep(Duration::from_millis(100));
        idle[0].write_all(&sleep[5..]).expect("write");
        thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        assert_eq!(ask(server.addr(), "newcomer"), "echo:newcomer", "{t}");
        let waited = started.elapsed();
        // Served once B has closed its connection idle the longest (after its 2 s in the
        // service at most), not at the first-byte deadline (30 s).
        assert!(waited < Duration::from_secs(5), "{t}: waited {waited:?}");
        let oldest = idle[1].local_addr().expect("addr");
        assert!(
            closed_by_server(&mut idle[1]),
            "{t}: the oldest idle is evicted"
        );
        assert_close_logged(t, oldest, "idle the longest");
        assert!(
            still_open(&mut idle[2], Duration::from_millis(100)),
            "{t}: one eviction for one newcomer"
        );
        assert!(
            still_open(&mut busy, Duration::from_millis(100)),
            "{t}: busy connections stay: {:?}",
            close_line(busy.local_addr().expect("addr"))
        );
        let (got, _) = answers(&mut idle[0], 1);
        assert_eq!(contents(&got), ["slept"], "{t}");
    };
    // Plaintext only: the eviction is the loop's, below any TLS (the timing of its steps
    // is what the case arranges, and the TLS proxy would add its own).
    case(Target {
        transport: Transport::Mio,
        tls: false,
    });
}
