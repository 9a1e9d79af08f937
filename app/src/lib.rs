//! # sockmsg-app
//!
//! The programs users run, and the pieces they share with tests, the mio transport and the
//! load generator (`sockmsg-bench`):
//!
//! * [`demo`]: the guide's demo application ([`demo::DemoService`], a
//!   [`sockmsg_server::Service`]), the request builders `app-client` uses, and the lines
//!   it prints;
//! * [`pyfmt`]: Python's formatting of decoded JSON values and bytes, so answers and
//!   output match the guide's Python peers character for character;
//! * [`serve`]: [`serve::Transport`] and [`serve::serve`], which runs a service on a chosen
//!   transport;
//! * [`cli`]: the command-line values the binaries share;
//! * [`init_logging`], [`init_logging_with`]: the binaries' `tracing` setup.
//!
//! The binaries: `app-server [HOST] [PORT] [--transport std] [--workers N] [--trace]
//! [--close-after-answer]` and `app-client HOST PORT ACTION VALUE` (see `--help`).
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

pub mod cli;
pub mod inspect;
pub mod serve;

/// The guide's demo application, now the `sockmsg-demo` crate (re-exported while other
/// crates move to it).
pub use sockmsg_demo as demo;
/// Python's formatting of JSON values and bytes (`sockmsg_demo::pyfmt`).
pub use sockmsg_demo::pyfmt;

/// The default log filter of the programs: `info` (connections opened and closed, errors,
/// start and stop; a bounded amount per connection).
pub const LOG_DEFAULT: &str = "info";

/// The log filter of `app-server --trace`: also every request and answer, as the guide's
/// server prints them (`received request {...}`, `sending {...}`, at the `debug` level of
/// the `sockmsg_demo` target).
pub const LOG_TRACE: &str = "info,sockmsg_demo=debug";

/// Sends `tracing` output to stderr, filtered by `RUST_LOG` or, when it is not set,
/// [`LOG_DEFAULT`]. Calling it twice does nothing more.
pub fn init_logging() {
    init_logging_with(LOG_DEFAULT);
}

/// Sends `tracing` output to stderr, filtered by `RUST_LOG` (which wins when set) or else
/// `default_filter` (an `EnvFilter` directive such as [`LOG_TRACE`]). Calling it twice does
/// nothing more.
pub fn init_logging_with(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Err only if a subscriber is already installed, which is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
