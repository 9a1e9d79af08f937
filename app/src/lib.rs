//! # sockmsg-app
//!
//! The programs users run, and the pieces they share with tests, the mio transport and the
//! load generator:
//!
//! * [`demo`]: the guide's demo application ([`demo::DemoService`], a
//!   [`sockmsg_server::Service`]), the request builders `app-client` uses, and the lines
//!   it prints;
//! * [`pyfmt`]: Python's formatting of decoded JSON values and bytes, so answers and
//!   output match the guide's Python peers character for character;
//! * [`serve`]: [`serve::Transport`] and [`serve::serve`], which runs a service on a chosen
//!   transport;
//! * [`cli`]: the command-line values the binaries share;
//! * [`init_logging`]: the binaries' `tracing` setup.
//!
//! The binaries: `app-server [HOST] [PORT] [--transport std] [--workers N]` and
//! `app-client HOST PORT ACTION VALUE` (see `--help`).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use sockmsg_app::demo::{request, result_line, DemoService};
//! use sockmsg_app::serve::{spawn, ServerConfig, Transport};
//! use sockmsg_transport_std::{Client, ClientConfig};
//!
//! for &transport in Transport::ALL {
//!     let server = spawn(transport, "127.0.0.1:0".parse()?, &ServerConfig::default(),
//!                        Arc::new(DemoService::new()))?;
//!     let mut client = Client::connect(server.addr(), &ClientConfig::default())?;
//!     let answer = client.request(request("search", "morpheus"))?;
//!     assert_eq!(result_line(&answer)?, "got result: Follow the white rabbit. 🐰");
//!     client.close()?;
//!     server.stop(Duration::from_secs(10))?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod cli;
pub mod demo;
pub mod inspect;
pub mod pyfmt;
pub mod serve;

/// Sends `tracing` output to stderr, filtered by `RUST_LOG` (default: `info`, so the
/// guide-like lines `accepted connection from ...`, `received request ...`, `sending ...`,
/// `closing connection to ...` show). Calling it twice does nothing more.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Err only if a subscriber is already installed, which is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
