//! What an idle TLS server connection holds, measured by the allocator itself: 1,000
//! `TlsSession`s (or `SOCKMSG_IDLE_CONNECTIONS`), in memory, each after a handshake and one
//! request, then idle long enough for the session to free its buffers. Each must hold at
//! most 8 KiB (issue 13's target: rustls's keys and state, the session; no buffer), inline
//! size included.
//!
//! `SOCKMSG_IDLE_CONNECTIONS=10000 cargo test --release -p sockmsg-tls --test idle_memory
//! -- --nocapture` gives the figure at 10,000 connections.
//!
//! This test binary installs a counting global allocator and holds a single `#[test]`
//! (with several, the harness allocates for the next test's thread while one measures).
//! The allocator is written here rather than taken from `sockmsg-tests`, which depends on
//! this crate (through `sockmsg-app`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockmsg_protocol::{Connection, Event, Message};
use sockmsg_server::{ServerConfig, Service, ServiceError};
use sockmsg_tls::certs::{Authority, Spec, Usage};
use sockmsg_tls::{
    client_config, server_config, AnyPeer, ClientOptions, PeerService, Pem, ServerOptions,
    TlsConnection, TlsSession,
};

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting the bytes live.
struct Counting;

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
static GLOBAL: Counting = Counting;

/// Connections measured, unless `SOCKMSG_IDLE_CONNECTIONS` says otherwise.
const CONNECTIONS: usize = 1000;
/// Issue 13's target for an idle TLS connection.
const TARGET: usize = 8 * 1024;

struct Echo;

impl Service for Echo {
    fn call(&self, request: Message) -> Result<Message, ServiceError> {
        Ok(Message::binary("binary/echo", request.content().to_vec()))
    }
}

/// Moves ciphertext both ways until neither side has anything to say; the client's answers.
fn exchange(client: &mut TlsConnection, server: &mut TlsSession, now: Instant) -> Vec<Message> {
    let mut answers = Vec::new();
    for _ in 0..100 {
        let mut moved = false;
        let mut wire = Vec::new();
        while client.wants_write() {
            moved |= client.write_tls(&mut wire, now).expect("client write") > 0;
        }
        let mut input = &wire[..];
        while !input.is_empty() {
            server.read_tls(&mut input, now).expect("server read");
        }
        wire.clear();
        while server.wants_write() {
            moved |= server.write_tls(&mut wire, now).expect("server write") > 0;
        }
        let mut input = &wire[..];
        while !input.is_empty() {
            client.read_tls(&mut input, now).expect("client read");
        }
        while let Event::Message(m) = client.next_event().expect("client event") {
            answers.push(m);
        }
        if !moved {
            return answers;
        }
    }
    panic!("the exchange did not settle");
}

#[test]
fn an_idle_tls_connection_holds_at_most_8_kib() {
    let ca = Authority::new("idle memory CA", 1).expect("CA");
    let cert = ca
        .issue(&Spec::new(Usage::Server, "localhost", &["localhost"], 1))
        .expect("certificate");
    let tls = server_config(&ServerOptions::new(
        Pem::memory("server.pem", cert.cert_pem),
        Pem::memory("server-key.pem", cert.key_pem),
    ))
    .expect("server config");
    // One client configuration: connections after the first resume (a cheaper handshake;
    // the server's idle state is the same).
    let client_tls = client_config(&ClientOptions {
        ca: Some(Pem::memory("ca.pem", ca.cert_pem())),
        ..ClientOptions::default()
    })
    .expect("client config");
    let service: Arc<dyn PeerService> = Arc::new(AnyPeer(Arc::new(Echo)));
    let config = Arc::new(ServerConfig::default());

    let connections = std::env::var("SOCKMSG_IDLE_CONNECTIONS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(CONNECTIONS);
    let start = Instant::now();
    let mut servers = Vec::with_capacity(connections);
    for i in 0..connections {
        let now = start;
        let mut client =
            TlsConnection::client(client_tls.clone(), "localhost", Connection::client(), now)
                .expect("client");
        let mut server =
            TlsSession::accept(tls.clone(), service.clone(), config.clone(), now).expect("accept");
        client
            .send(Message::binary("binary/x", i.to_be_bytes().to_vec()), now)
            .expect("send");
        let answers = exchange(&mut client, &mut server, now);
        assert_eq!(answers.len(), 1, "connection {i}: one answer");
        assert_eq!(answers[0].content(), i.to_be_bytes(), "connection {i}");
        assert!(
            !server.is_handshaking() && !server.is_done(),
            "connection {i}"
        );
        servers.push(server);
    }
    // Idle a moment (well within the idle timeout): the session frees its buffers, and the
    // composition its own.
    let later = start + Duration::from_secs(1);
    for server in &mut servers {
        assert_eq!(server.handle_timeout(later), None);
        assert!(!server.is_done());
    }

    let held = LIVE.load(Ordering::Relaxed);
    drop(servers); // their heap, and the vector that held them inline
    let per_connection = held.saturating_sub(LIVE.load(Ordering::Relaxed)) / connections;
    println!(
        "idle TLS server connection: {per_connection} bytes ({} inline), {connections} connections",
        std::mem::size_of::<TlsSession>()
    );
    assert!(
        per_connection <= TARGET,
        "an idle TLS connection holds {per_connection} bytes, more than {TARGET}"
    );
    assert!(
        per_connection >= std::mem::size_of::<TlsSession>(),
        "the measure missed the connections ({per_connection} bytes each)"
    );
}
