//! A sockmsg server on the mio transport whose service answers every request with the
//! request itself, for benchmarking the transport alone (`app-bench --echo` checks that
//! the bytes come back unchanged, which they do for canonically encoded requests).
//!
//! ```text
//! mio_echo_server [--port P] [--workers W] [--reuseport]
//! ```
//!
//! Prints `listening on ADDR`, then serves until Ctrl-C kills it.

use std::sync::Arc;

use sockmsg_protocol::Message;
use sockmsg_server::{Service, ServiceError};
use sockmsg_transport_mio::{ListenerMode, MioOptions, Server, ServerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = ServerConfig::default();
    let mut options = MioOptions::default();
    let mut port = 0u16;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port P")?.parse()?,
            "--workers" => config.workers = args.next().ok_or("--workers W")?.parse()?,
            "--reuseport" => options.listener = ListenerMode::ReusePort,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let server = Server::bind_with(("127.0.0.1", port), config, options)?;
    println!("listening on {}", server.local_addr());
    let service: Arc<dyn Service> =
        Arc::new(|request: Message| -> Result<Message, ServiceError> { Ok(request) });
    server.serve(service)?;
    Ok(())
}
