//! `app-client`: the guide's demo client, on the blocking transport.
//!
//! ```text
//! app-client HOST PORT ACTION VALUE [--json-action] [--byteorder little|big]
//!            [--timeout SECS]
//! ```
//!
//! Prints `got result: RESULT` or `got response: b'...'` to stdout (as the guide's
//! client), exits 0; on failure prints `app-client: ERROR` to stderr and exits 1. Usage
//! errors exit 2, Ctrl-C exits 130. Logs go to stderr (`RUST_LOG`, default `info`).

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sockmsg_app::cli::{positive_secs, Order};
use sockmsg_app::demo::{json_request, request, result_line};
use sockmsg_app::pyfmt::bytes_repr;
use sockmsg_protocol::{encode, ByteOrder, Message};
use sockmsg_transport_std::{Client, ClientConfig, TransportError};
use tracing::info;

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
    /// Time limit, in seconds, for connecting and for each wait on the server.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = positive_secs)]
    timeout: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    sockmsg_app::init_logging();
    // Ctrl-C: nothing to clean up that the OS does not; say so and leave.
    if let Err(e) = ctrlc::set_handler(|| {
        eprintln!("app-client: interrupted");
        std::process::exit(130);
    }) {
        eprintln!("app-client: cannot install the Ctrl-C handler: {e}");
    }
    match run(&args) {
        Ok(line) => {
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{line}").and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("app-client: cannot print the result: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(message) => {
            eprintln!("app-client: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<String, String> {
    let timeout = Duration::from_secs_f64(args.timeout);
    let config = ClientConfig {
        connect_timeout: Some(timeout),
        read_timeout: Some(timeout),
        write_timeout: Some(timeout),
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

    let addrs: Vec<SocketAddr> = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {:?}: {e}", args.host))?
        .collect();
    let mut client = connect_any(&addrs, &config)?;
    let addr = client.peer_addr();

    if tracing::enabled!(tracing::Level::INFO) {
        let wire = encode(&message).map_err(|e| format!("cannot encode the request: {e}"))?;
        info!("sending {} to {addr}", bytes_repr(&wire));
    }
    let response = client.request(message).map_err(|e| describe(&e))?;
    info!(
        "received {} response ({} bytes) from {addr}",
        response.content_type(),
        response.content().len()
    );
    let line = result_line(&response).map_err(|e| format!("{addr}: {e}"))?;
    info!("closing connection to {addr}");
    client.close().map_err(|e| describe(&e))?;
    Ok(line)
}

/// Tries each address in turn (as Python's `create_connection`), returning the first
/// connection or the last error.
fn connect_any(addrs: &[SocketAddr], config: &ClientConfig) -> Result<Client, String> {
    let mut last = None;
    for &addr in addrs {
        info!("starting connection to {addr}");
        match Client::connect(addr, config) {
            Ok(client) => return Ok(client),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| "the host has no address".to_owned(), |e| describe(&e)))
}

fn describe(e: &TransportError) -> String {
    match e {
        TransportError::Closed { addr, .. } => {
            format!("{addr} closed the connection without a complete response")
        }
        other => other.to_string(),
    }
}
