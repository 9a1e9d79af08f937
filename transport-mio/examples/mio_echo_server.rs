//! A sockmsg server on the mio transport whose service answers every request with the
//! request itself, for benchmarking the transport alone. It speaks the protocol: measure it
//! with framed requests whose answer must be the request itself,
//! `app-bench 127.0.0.1 PORT --answer echo` (add `--binary`, `-s SIZE`, `-P N` as for any
//! sockmsg server). `app-bench --echo` is for the unframed `echo-baseline` server: its raw
//! bytes are not messages (their first two bytes, read as a header length, ask for a
//! header that never comes, or for none), so this server closes or waits and nothing is
//! answered.
//!
//! ```text
//! cargo run --release -p sockmsg-transport-mio --example mio_echo_server -- [--port P] [--workers W] [--reuseport]
//! cargo run --release --bin app-client -- 127.0.0.1 P upload hello   # got response: b'uploadhello'
//! ```
//!
//! Prints `listening on ADDR` (port 0, the default, picks a free port), then serves until
//! Ctrl-C kills it. For the transport's figures against a bare echo, see `echo-baseline`
//! and BENCHMARKS.md.

use std::sync::Arc;

use sockmsg_protocol::Message;
use sockmsg_server::{Service, ServiceError};
use sockmsg_transport_mio::{ListenerMode, MioOptions, Server, ServerConfig};

const USAGE: &str = "usage: mio_echo_server [--port P] [--workers W] [--reuseport]";

fn main() {
    let mut config = ServerConfig::default();
    let mut options = MioOptions::default();
    let mut port = 0u16;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = number(&arg, args.next()),
            "--workers" => config.workers = number(&arg, args.next()),
            "--reuseport" => options.listener = ListenerMode::ReusePort,
            other => usage(&format!("unknown argument '{other}'")),
        }
    }
    let server = Server::bind_with(("127.0.0.1", port), config, options)
        .unwrap_or_else(|e| fail(&format!("bind 127.0.0.1:{port}: {e}")));
    let addr = server.local_addr();
    println!("listening on {addr}");
    let service: Arc<dyn Service> =
        Arc::new(|request: Message| -> Result<Message, ServiceError> { Ok(request) });
    if let Err(e) = server.serve(service) {
        fail(&format!("serve on {addr}: {e}"));
    }
}

/// The number after `flag`, or a usage error.
fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> T {
    value
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| usage(&format!("{flag} needs a number")))
}

/// `mio_echo_server: WHAT: WHY` on stderr, exit 1.
fn fail(message: &str) -> ! {
    eprintln!("mio_echo_server: {message}");
    std::process::exit(1)
}

/// A usage error: the message and the usage line on stderr, exit 2.
fn usage(message: &str) -> ! {
    eprintln!("mio_echo_server: {message}\n{USAGE}");
    std::process::exit(2)
}
