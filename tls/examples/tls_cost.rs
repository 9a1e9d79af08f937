//! What TLS costs, measured in memory (no sockets, one thread, both sides): handshake CPU
//! (full and resumed, TLS 1.3 and 1.2, with the server's share), the key exchange groups
//! alone (ring's X25519, secp256r1 and secp384r1), bulk throughput (16 MiB over TLS vs the
//! plaintext machine alone) and the heap an idle server connection holds after its
//! handshake and one request.
//!
//! `cargo run --release -p sockmsg-tls --example tls_cost` (short: about 15 s; Linux);
//! `... --example tls_cost session` measures only a server [`TlsSession`] as the transports
//! run it (charged to a memory budget): handshake and one request, then keep-alive
//! requests. Times are this thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so a loaded machine inflates them
//! less than wall time; figures are medians of one run: compare them as ratios.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockmsg_protocol::{Connection, Event, Message};
use sockmsg_server::{MemoryBudget, ServerConfig, ServiceError};
use sockmsg_tls::certs::{Authority, Spec, Usage};
use sockmsg_tls::{
    client_config, server_config, AnyPeer, ClientOptions, PeerService, Pem, Plaintext,
    ServerOptions, Tls, TlsConnection, TlsSession, TlsVersion,
};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` unchanged; the counter is only a statistic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

type Error = Box<dyn std::error::Error>;

fn transfer<A: Plaintext, B: Plaintext>(
    from: &mut Tls<A>,
    to: &mut Tls<B>,
    wire: &mut Vec<u8>,
) -> Result<bool, Error> {
    write_out(from, wire)?;
    read_in(to, wire)
}

/// `from`'s records onto `wire`.
fn write_out<A: Plaintext>(from: &mut Tls<A>, wire: &mut Vec<u8>) -> Result<(), Error> {
    let now = Instant::now();
    while from.wants_write() {
        from.write_tls(wire, now)?;
    }
    Ok(())
}

/// What `to` takes of `wire`; `true` if it took any.
fn read_in<B: Plaintext>(to: &mut Tls<B>, wire: &mut Vec<u8>) -> Result<bool, Error> {
    let now = Instant::now();
    let mut moved = false;
    let mut pos = 0;
    while pos < wire.len() && to.wants_read() {
        let mut input = &wire[pos..];
        let n = to.read_tls(&mut input, now)?;
        pos += n;
        moved |= n > 0;
    }
    wire.drain(..pos);
    Ok(moved)
}

/// CPU time spent in the server's calls (the rest of a run is the client's).
#[derive(Default)]
struct ServerShare(Duration);

impl ServerShare {
    fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let start = Clock.now();
        let out = f();
        self.0 += Clock.now() - start;
        out
    }
}

/// [`run`], adding the time of the server's calls to `share`.
fn run_timed(
    client: &mut TlsConnection,
    server: &mut TlsConnection,
    share: &mut ServerShare,
) -> Result<usize, Error> {
    let mut wire = Vec::new();
    let mut got = 0;
    loop {
        write_out(client, &mut wire)?;
        let mut moved = share.time(|| read_in(server, &mut wire))?;
        share.time(|| -> Result<(), Error> {
            while let Event::Message(m) = server.next_event()? {
                server.send(m, Instant::now())?;
            }
            write_out(server, &mut wire)
        })?;
        moved |= read_in(client, &mut wire)?;
        while let Event::Message(m) = client.next_event()? {
            got += m.content().len();
        }
        if !moved {
            return Ok(got);
        }
    }
}

/// Median CPU time of ring's key exchange in each group rustls offers, over `n` rounds:
/// the client's key generation (`start`), the server's key generation and agreement
/// (`start_and_complete` with the client's share, as a TLS 1.3 server does), and the
/// client's agreement (`complete`).
fn key_exchange(n: usize) -> Result<(), Error> {
    let provider = sockmsg_tls::provider();
    for group in &provider.kx_groups {
        let (mut keygen, mut server, mut agree) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let t0 = Clock.now();
            let client = group.start().map_err(|e| format!("{e:?}"))?;
            let t1 = Clock.now();
            let done = group
                .start_and_complete(client.pub_key())
                .map_err(|e| format!("{e:?}"))?;
            let t2 = Clock.now();
            let secret = client
                .complete(&done.pub_key)
                .map_err(|e| format!("{e:?}"))?;
            let t3 = Clock.now();
            assert_eq!(secret.secret_bytes(), done.secret.secret_bytes());
            keygen.push(t1 - t0);
            server.push(t2 - t1);
            agree.push(t3 - t2);
        }
        let us = |v: Vec<Duration>| median(v).as_secs_f64() * 1e6;
        let (k, s, a) = (us(keygen), us(server), us(agree));
        println!(
            "key exchange {:>10}: client keygen {k:>6.1} us, server keygen + agreement {s:>6.1} us, client agreement {a:>6.1} us (client {:.1}, both {:.1})",
            format!("{:?}", group.name()),
            k + a,
            k + s + a
        );
    }
    Ok(())
}

fn version_of(version: TlsVersion) -> rustls::ProtocolVersion {
    match version {
        TlsVersion::Tls12 => rustls::ProtocolVersion::TLSv1_2,
        TlsVersion::Tls13 => rustls::ProtocolVersion::TLSv1_3,
    }
}

/// Runs a connection: the client's requests, the server's echoes, until quiet. Returns the
/// answers' total content length.
fn run(client: &mut TlsConnection, server: &mut TlsConnection) -> Result<usize, Error> {
    let mut wire = Vec::new();
    let mut got = 0;
    loop {
        let mut moved = transfer(client, server, &mut wire)?;
        while let Event::Message(m) = server.next_event()? {
            server.send(m, Instant::now())?;
        }
        moved |= transfer(server, client, &mut wire)?;
        while let Event::Message(m) = client.next_event()? {
            got += m.content().len();
        }
        if !moved {
            return Ok(got);
        }
    }
}

/// Runs a client against a server session (which answers by itself) until quiet. Returns
/// the answers' total content length.
fn run_session(client: &mut TlsConnection, server: &mut TlsSession) -> Result<usize, Error> {
    let mut wire = Vec::new();
    let mut got = 0;
    loop {
        let mut moved = transfer(client, server, &mut wire)?;
        moved |= transfer(server, client, &mut wire)?;
        while let Event::Message(m) = client.next_event()? {
            got += m.content().len();
        }
        if !moved {
            return Ok(got);
        }
    }
}

/// A server [`TlsSession`] as the transports run it (an echo service, the server's memory
/// budget): handshake and one request, then keep-alive requests, in CPU time per operation.
fn session_cost(
    server_cfg: &Arc<rustls::ServerConfig>,
    client_cfg: &Arc<rustls::ClientConfig>,
    request: &Message,
    clock: &Clock,
) -> Result<(), Error> {
    let echo: Arc<dyn PeerService> = Arc::new(AnyPeer(Arc::new(
        |m: Message| -> Result<Message, ServiceError> { Ok(m) },
    )));
    let config = Arc::new(ServerConfig::default().normalized());
    let budget = MemoryBudget::new(config.memory_budget);
    let (mut handshakes, mut requests) = (Vec::new(), Vec::new());
    const BATCH: u32 = 100;
    for _ in 0..300 {
        let now = Instant::now();
        let mut c =
            TlsConnection::client(client_cfg.clone(), "localhost", Connection::client(), now)?;
        let mut s = TlsSession::accept_with_budget(
            server_cfg.clone(),
            echo.clone(),
            config.clone(),
            budget.clone(),
            now,
        )?;
        c.send(request.clone(), now)?;
        let start = clock.now();
        run_session(&mut c, &mut s)?;
        handshakes.push(clock.now() - start);
        let start = clock.now();
        for _ in 0..BATCH {
            c.send(request.clone(), Instant::now())?;
            run_session(&mut c, &mut s)?;
        }
        requests.push((clock.now() - start) / BATCH);
    }
    println!(
        "server session (charged to a memory budget): handshake + request {:>8.1} us, keep-alive request {:>6.2} us of CPU (both sides)",
        median(handshakes).as_secs_f64() * 1e6,
        median(requests).as_secs_f64() * 1e6,
    );
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A clock of this thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so that a loaded machine
/// inflates the figures less than wall time does.
struct Clock;

impl Clock {
    fn now(&self) -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into the one given.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    }
}

fn main() -> Result<(), Error> {
    let ca = Authority::new("cost CA", 1)?;
    let cert = ca.issue(&Spec::new(Usage::Server, "localhost", &["localhost"], 1))?;
    let server_cfg = server_config(&ServerOptions::new(
        Pem::memory("server.pem", cert.cert_pem),
        Pem::memory("key.pem", cert.key_pem),
    ))?;
    let client_options = ClientOptions {
        ca: Some(Pem::memory("ca.pem", ca.cert_pem())),
        ..ClientOptions::default()
    };
    let request = Message::json(&serde_json::json!({"action": "search", "value": "ring"}))?;
    let pair =
        |client_cfg: &Arc<rustls::ClientConfig>| -> Result<(TlsConnection, TlsConnection), Error> {
            let now = Instant::now();
            Ok((
                TlsConnection::client(client_cfg.clone(), "localhost", Connection::client(), now)?,
                TlsConnection::server(server_cfg.clone(), Connection::server(), now)?,
            ))
        };

    let clock = Clock;
    if std::env::args().nth(1).as_deref() == Some("session") {
        return session_cost(
            &server_cfg,
            &client_config(&client_options)?,
            &request,
            &clock,
        );
    }
    // Handshake + one request: full (a fresh client config each time) and resumed, with
    // each version; the server's share of the CPU beside.
    for version in [TlsVersion::Tls13, TlsVersion::Tls12] {
        let client_options = ClientOptions {
            version: Some(version),
            ..client_options.clone()
        };
        for resumed in [false, true] {
            let shared = client_config(&client_options)?;
            let (mut times, mut servers) = (Vec::new(), Vec::new());
            for _ in 0..500 {
                let cfg = if resumed {
                    shared.clone()
                } else {
                    client_config(&client_options)?
                };
                let (mut c, mut s) = pair(&cfg)?;
                c.send(request.clone(), Instant::now())?;
                let mut share = ServerShare::default();
                let start = clock.now();
                run_timed(&mut c, &mut s, &mut share)?;
                let kind = c.handshake_kind();
                let expected = if resumed && !times.is_empty() {
                    rustls::HandshakeKind::Resumed
                } else {
                    rustls::HandshakeKind::Full
                };
                if kind != Some(expected) || s.protocol_version() != Some(version_of(version)) {
                    return Err(format!(
                        "TLS {version} {kind:?} {:?}: not what was measured",
                        s.protocol_version()
                    )
                    .into());
                }
                times.push(clock.now() - start);
                servers.push(share.0);
            }
            if resumed {
                times.remove(0); // the first connection primes the cache
                servers.remove(0);
            }
            println!(
                "one-shot (handshake + request), TLS {version} {:>7}: both sides {:>6.1} us of CPU, the server's share {:>6.1} us",
                if resumed { "resumed" } else { "full" },
                median(times).as_secs_f64() * 1e6,
                median(servers).as_secs_f64() * 1e6,
            );
        }
    }
    key_exchange(2000)?;

    // Bulk: a 16 MiB message each way.
    let content = vec![0x5au8; 16 << 20];
    let shared = client_config(&client_options)?;
    let mut tls = Vec::new();
    let mut plain = Vec::new();
    for _ in 0..5 {
        let (mut c, mut s) = pair(&shared)?;
        run(&mut c, &mut s)?; // handshake first
        c.send(Message::binary("binary/x", content.clone()), Instant::now())?;
        let start = clock.now();
        let got = run(&mut c, &mut s)?;
        tls.push(clock.now() - start);
        assert_eq!(got, content.len());

        let now = Instant::now();
        let (mut pc, mut ps) = (Connection::client(), Connection::server());
        pc.send(Message::binary("binary/x", content.clone()), now)?;
        let start = clock.now();
        let mut wire = Vec::new();
        while pc.wants_write() {
            pc.write_to(&mut wire, now)?;
        }
        ps.read_from(&mut &wire[..], now)?;
        let mut input = &wire[..];
        while !input.is_empty() {
            ps.read_from(&mut input, now)?;
        }
        if let Event::Message(m) = ps.next_event()? {
            ps.send(m, now)?;
        }
        wire.clear();
        while ps.wants_write() {
            ps.write_to(&mut wire, now)?;
        }
        let mut input = &wire[..];
        while !input.is_empty() {
            pc.read_from(&mut input, now)?;
        }
        let Event::Message(back) = pc.next_event()? else {
            return Err("no echo".into());
        };
        plain.push(clock.now() - start);
        assert_eq!(back.content().len(), content.len());
    }
    let mb = 2.0 * 16.0 * 1.048_576;
    let (t, p) = (median(tls), median(plain));
    println!(
        "16 MiB each way: TLS {:.0} MB/s, plaintext machine alone {:.0} MB/s ({:.2}x), per CPU second",
        mb / t.as_secs_f64(),
        mb / p.as_secs_f64(),
        p.as_secs_f64() / t.as_secs_f64()
    );

    // Idle memory: server connections after a handshake and one request.
    for release in [false, true] {
        let n = 1000;
        let mut servers = Vec::with_capacity(n);
        for _ in 0..n {
            let (mut c, mut s) = pair(&shared)?;
            c.send(request.clone(), Instant::now())?;
            run(&mut c, &mut s)?;
            if release {
                s.release_buffers();
            }
            servers.push(s);
        }
        let base = LIVE.load(Ordering::Relaxed);
        drop(servers); // their heap, and the vector that held them inline
        let total = base.saturating_sub(LIVE.load(Ordering::Relaxed)) / n;
        let inline = std::mem::size_of::<TlsConnection>();
        println!(
            "idle server connection after handshake + one request: {total} bytes, {inline} of them inline ({n} connections{})",
            if release { ", buffers released" } else { "" }
        );
    }
    Ok(())
}
