//! `app-client`: the guide's demo client, on the blocking transport.
//!
//! ```text
//! app-client HOST PORT ACTION VALUE [--json-action] [--byteorder little|big]
//!            [--timeout SECS] [--max-content BYTES]
//!            [--tls [--ca FILE] [--cert FILE --key FILE] [--server-name NAME]
//!                   [--tls-version 1.2|1.3]]
//! ```
//!
//! With `--tls` the exchange runs over TLS (rustls, TLS 1.3 or 1.2): the server's
//! certificate is verified against `--ca` (PEM), or the system's trusted roots without it,
//! for `--server-name` (default: HOST); `--cert` and `--key` present a client certificate
//! to a server that requires one; `--tls-version 1.2` or `1.3` offers only that version. A
//! failed handshake is one line naming the reason (`unknown CA`, `certificate has expired`,
//! `name mismatch`, `requires a client certificate`...).
//!
//! Prints `got result: RESULT` or `got response: b'...'` to stdout (as the guide's
//! client) as soon as the answer is complete, and leaves without reading anything the
//! server sends after it; exits 0. `--timeout` bounds the whole exchange (connecting,
//! sending, the whole answer), however the server spreads its bytes. On failure prints one
//! line `app-client: what failed: why` naming the address to stderr and exits 1 (an
//! unresolvable host, a refused connection, a timeout, a server that does not speak this
//! protocol, a bad answer). Usage errors exit 2, Ctrl-C exits 130. Logs go to stderr
//! (`RUST_LOG`, default `info`).

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use clap::Parser;
use sockmsg_app::cli::{fail, positive_secs, tls_version, Order};
use sockmsg_demo::pyfmt::bytes_repr;
use sockmsg_demo::{json_request, request, result_line};
use sockmsg_protocol::sniff::quote;
use sockmsg_protocol::{encode, ByteOrder, Limits, Message};
use sockmsg_server::client::Failure as ClientFailure;
use sockmsg_tls::{ClientError, ClientOptions, Pem, TlsClient, TlsVersion};
use sockmsg_transport_std::{Client, ClientConfig, Deadline, Op, TransportError};
use tracing::info;

const PROGRAM: &str = "app-client";

/// Longest peer text (a content type) a log line shows.
const LOG_TEXT: usize = 64;

/// The guide's demo client: sends one request, prints the answer. ACTION `search` sends a
/// JSON request {"action": "search", "value": VALUE}; any other ACTION sends a binary
/// request whose content is ACTION followed by VALUE.
#[derive(Debug, Parser)]
#[command(name = "app-client", version)]
struct Args {
    /// Server address (an IP address, or a name to resolve).
    host: String,
    /// Server port.
    port: u16,
    /// `search`, or anything else for a binary request.
    action: String,
    /// The value to search for, or the rest of the binary content.
    value: String,
    /// Send a JSON request whatever ACTION is (not in the guide; the server then answers
    /// `Error: invalid action "ACTION".`).
    #[arg(long)]
    json_action: bool,
    /// Byte order written in the request header (default: this machine's, as the guide).
    #[arg(long, value_enum)]
    byteorder: Option<Order>,
    /// Time limit, in seconds, for the whole exchange: resolving and connecting, sending
    /// the request and receiving the whole answer.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = positive_secs)]
    timeout: f64,
    /// Largest answer content accepted, in bytes: a larger announced content-length fails
    /// at once, before anything is allocated for it. What an answer can make the client
    /// allocate is bounded by this and the 64 KiB header limit.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_content_len)]
    max_content: u64,
    /// Speak TLS: verify the server's certificate (against --ca, or the system's roots).
    #[arg(long)]
    tls: bool,
    /// CA certificates (PEM) that may sign the server's certificate.
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// Client certificate chain (PEM), for a server that requires one (mutual TLS).
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// The name the server's certificate must be valid for (default: HOST).
    #[arg(long, value_name = "NAME", requires = "tls")]
    server_name: Option<String>,
    /// Offer only this TLS version (default: 1.3 and 1.2, the server chooses).
    #[arg(long, value_name = "VERSION", requires = "tls", value_parser = tls_version())]
    tls_version: Option<TlsVersion>,
}

/// Why the exchange failed: the two halves of the error line.
struct Failure {
    what: String,
    why: String,
}

impl Failure {
    fn new(what: impl Into<String>, why: impl ToString) -> Failure {
        Failure {
            what: what.into(),
            why: why.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    sockmsg_app::init_logging();
    // Ctrl-C: nothing to clean up that the OS does not; say so and leave.
    if let Err(e) = ctrlc::set_handler(|| {
        eprintln!("{PROGRAM}: interrupted");
        std::process::exit(130);
    }) {
        eprintln!("{PROGRAM}: cannot install the Ctrl-C handler: {e}");
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { what, why }) => fail(PROGRAM, what, why),
    }
}

/// `host:port`, with brackets around an IPv6 literal.
fn target(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    let timeout = Duration::from_secs_f64(args.timeout);
    // One deadline for everything, from now.
    let deadline = Deadline::after(timeout);
    // The deadline bounds every wait; no separate per-wait limits.
    let config = ClientConfig {
        connect_timeout: Some(timeout),
        read_timeout: None,
        write_timeout: None,
        deadline: Some(timeout),
        limits: Limits {
            max_content_len: args.max_content,
            ..Limits::default()
        },
        ..ClientConfig::default()
    };
    let mut message: Message = if args.json_action {
        json_request(&args.action, &args.value)
    } else {
        request(&args.action, &args.value)
    };
    if let Some(order) = args.byteorder {
        message = message.with_byteorder(ByteOrder::from(order));
    }

    let target = target(&args.host, args.port);
    let addrs = resolve(&args.host, args.port, deadline)
        .map_err(|why| Failure::new(format!("cannot resolve {target}"), why))?;
    if args.tls {
        return run_tls(args, message, &addrs, &target, &config, deadline);
    }
    info!("starting connection to {target}");
    let mut client = Client::connect_by(&addrs[..], &config, Some(deadline))
        .map_err(|e| explain(&e, &target))?;
    let addr = client.peer_addr();

    if tracing::enabled!(tracing::Level::INFO) {
        let wire =
            encode(&message).map_err(|e| Failure::new(format!("cannot send to {addr}"), e))?;
        info!("sending {} to {addr}", bytes_repr(&wire));
    }
    let response = client
        .request_by(message, Some(deadline))
        .map_err(|e| explain(&e, &target))?;
    info!(
        "received {} response ({} bytes) from {addr}",
        quote(response.content_type().as_bytes(), LOG_TEXT),
        response.content().len()
    );
    // The answer is complete: print it now, then leave without reading what may follow.
    print_result(&response, addr)?;
    info!("closing connection to {addr}");
    client.close_now();
    Ok(())
}

/// The exchange over TLS, with the same configuration, output and error lines.
fn run_tls(
    args: &Args,
    message: Message,
    addrs: &[SocketAddr],
    target: &str,
    config: &ClientConfig,
    deadline: Deadline,
) -> Result<(), Failure> {
    let options = ClientOptions {
        ca: args.ca.clone().map(Pem::File),
        identity: args
            .cert
            .clone()
            .zip(args.key.clone())
            .map(|(cert, key)| (Pem::File(cert), Pem::File(key))),
        version: args.tls_version,
        ..ClientOptions::default()
    };
    let tls = sockmsg_tls::client_config(&options)
        .map_err(|e| Failure::new("cannot load the TLS settings", e))?;
    let name = args.server_name.as_deref().unwrap_or(&args.host);
    info!("starting TLS connection to {target} (server name {name:?})");
    let mut client = TlsClient::connect_by(addrs, config, tls, name, Some(deadline))
        .map_err(|e| explain_tls(&e, target))?;
    let addr = client.peer_addr();
    info!(
        "TLS {} with {addr}, {} handshake",
        client
            .tls()
            .protocol_version()
            .and_then(TlsVersion::from_rustls)
            .map_or_else(|| "(version unknown)".to_owned(), |v| v.to_string()),
        match client.tls().handshake_kind() {
            Some(sockmsg_tls::rustls::HandshakeKind::Resumed) => "resumed",
            _ => "full",
        }
    );
    if let Some(peer) = client.peer_identity() {
        info!("{addr} is {peer} ({})", peer.subject);
    }
    let response = client
        .request_by(message, Some(deadline))
        .map_err(|e| explain_tls(&e, target))?;
    print_result(&response, addr)?;
    info!("closing TLS connection to {addr}");
    // close_notify, then leave without waiting for the server's.
    let _ = client.shutdown_write();
    client.close_now();
    Ok(())
}

/// Prints the result line of `response`, the answer of `addr`, on stdout.
fn print_result(response: &Message, addr: SocketAddr) -> Result<(), Failure> {
    let line =
        result_line(response).map_err(|e| Failure::new(format!("bad answer from {addr}"), e))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::new("cannot print the result", e))
}

/// The error line for a failed exchange over TLS with `target`: the TLS reason, or the
/// line of the same failure without TLS.
fn explain_tls(e: &ClientError, target: &str) -> Failure {
    match (e.tls_error(), e.failure()) {
        (Some(tls), _) if tls.is_handshake_failure() => {
            Failure::new(format!("TLS handshake with {target} failed"), tls)
        }
        (Some(tls), _) => Failure::new(format!("bad answer from {target}"), tls),
        (None, Some(failure)) => explain_failure(failure, target, e),
        (None, None) => Failure::new(format!("exchange with {target} failed"), e),
    }
}

/// The addresses of `host`, resolved by `deadline`: the system's resolver cannot be
/// interrupted, so it runs on a thread of its own, abandoned if it is too slow (the
/// process exits soon after anyway).
fn resolve(host: &str, port: u16, deadline: Deadline) -> Result<Vec<SocketAddr>, String> {
    let (tx, rx) = mpsc::channel();
    let owned = (host.to_owned(), port);
    let spawned = thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let result = owned
                .to_socket_addrs()
                .map(Iterator::collect::<Vec<SocketAddr>>);
            // The receiver may have given up: nothing to do then.
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start the resolver thread: {e}"));
    }
    match rx.recv_timeout(deadline.remaining()) {
        Ok(Ok(addrs)) if addrs.is_empty() => Err("the resolver returned no address".into()),
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "timed out after {:?} (--timeout, the deadline for the whole exchange)",
            deadline.limit()
        )),
    }
}

/// The error line for a failed exchange with `target` (HOST:PORT as given).
fn explain(e: &TransportError, target: &str) -> Failure {
    let addr = e.addr();
    // "localhost:8080 (127.0.0.1:8080)" when a name was given, else just the address.
    let at = if target == addr.to_string() {
        target.to_owned()
    } else {
        format!("{target} ({addr})")
    };
    match (e, e.failure()) {
        (TransportError::Resolve { host, source }, _) => {
            Failure::new(format!("cannot resolve {host}"), source)
        }
        (_, Some(failure)) => explain_failure(failure, &at, e),
        _ => Failure::new(format!("exchange with {at} failed"), e),
    }
}

/// The error line for a failure every client has (plaintext or TLS) at `at`; `error` the
/// whole error, for the failures without a line of their own.
fn explain_failure(failure: ClientFailure<'_>, at: &str, error: &dyn std::fmt::Display) -> Failure {
    match failure {
        ClientFailure::Resolve(source) => Failure::new(format!("cannot resolve {at}"), source),
        ClientFailure::Refused => {
            Failure::new(format!("cannot connect to {at}"), "connection refused")
        }
        ClientFailure::Connect(source) => Failure::new(format!("cannot connect to {at}"), source),
        ClientFailure::Timeout {
            op: Op::Connect,
            after,
        } => Failure::new(
            format!("cannot connect to {at}"),
            format!("timed out after {after:?}"),
        ),
        ClientFailure::Deadline {
            op: Op::Connect,
            limit,
            ..
        } => Failure::new(
            format!("cannot connect to {at}"),
            format!("timed out: the whole exchange had {limit:?} (--timeout)"),
        ),
        ClientFailure::Deadline {
            op: Op::Write,
            limit,
            ..
        } => Failure::new(
            format!("cannot send the request to {at}"),
            format!("timed out: the whole exchange had {limit:?} (--timeout)"),
        ),
        ClientFailure::Deadline {
            limit, received, ..
        } => Failure::new(
            format!("no complete answer from {at}"),
            format!(
                "timed out after {limit:?}, the deadline for the whole exchange \
                 (--timeout: connect, send, answer); {received} byte(s) of the answer arrived"
            ),
        ),
        ClientFailure::Foreign(seen) => {
            Failure::new(format!("{at} does not speak this protocol"), seen)
        }
        ClientFailure::Closed { .. } => Failure::new(
            format!("no answer from {at}"),
            "it closed the connection without a complete response",
        ),
        ClientFailure::Reset { op: Op::Write, .. } => Failure::new(
            format!("cannot send the request to {at}"),
            "the server reset the connection",
        ),
        ClientFailure::Reset { .. } => Failure::new(
            format!("no answer from {at}"),
            "the server reset the connection",
        ),
        ClientFailure::Protocol(source) => Failure::new(format!("bad answer from {at}"), source),
        _ => Failure::new(format!("exchange with {at} failed"), error),
    }
}
