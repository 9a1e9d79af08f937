//! `app-server`: the guide's demo server, on a sockmsg transport.
//!
//! ```text
//! app-server [HOST] [PORT] [--transport mio|std] [--max-connections N]
//!            [--idle-timeout SECS] [--read-timeout SECS] [--write-timeout SECS]
//!            [--byteorder little|big] [--workers N]
//! ```
//!
//! Prints `listening on ADDR` to stdout once listening; logs go to stderr (`RUST_LOG`,
//! default `info`). Ctrl-C (SIGINT), SIGTERM or SIGHUP stop it gracefully, exit 0; a second
//! Ctrl-C exits at once (130).

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use sockmsg_app::cli::{resolve, secs_or_zero, Order};
use sockmsg_app::demo::DemoService;
use sockmsg_app::serve::{serve, ServerConfig as ServerSettings, Stopper, Transport};
use sockmsg_protocol::ByteOrder;

/// The guide's demo server (search table, binary answer), speaking the sockets guide's
/// message protocol. It keeps each connection open for further requests and works with the
/// guide's one-shot clients.
#[derive(Debug, Parser)]
#[command(name = "app-server", version)]
struct Args {
    /// Address to listen on (an IP address, or a name to resolve).
    #[arg(default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the `listening on` line tells which).
    #[arg(default_value_t = 65432)]
    port: u16,
    /// The transport to run on.
    #[arg(long, value_enum, default_value_t = Transport::default())]
    transport: Transport,
    /// Most connections served at once.
    #[arg(long, value_name = "N", default_value_t = ServerSettings::default().max_connections)]
    max_connections: usize,
    /// Close a connection idle this many seconds between requests (0: never).
    #[arg(long, value_name = "SECS", value_parser = secs_or_zero, default_value_t = 60.0)]
    idle_timeout: f64,
    /// Close a connection whose request takes longer than this to arrive (0: never).
    #[arg(long, value_name = "SECS", value_parser = secs_or_zero, default_value_t = 30.0)]
    read_timeout: f64,
    /// Close a connection whose response cannot be written for this long (0: never).
    #[arg(long, value_name = "SECS", value_parser = secs_or_zero, default_value_t = 30.0)]
    write_timeout: f64,
    /// Byte order written in response headers (default: this machine's, as the guide).
    #[arg(long, value_enum)]
    byteorder: Option<Order>,
    /// Event loops (threads) of the mio transport (default: one per core). Fewer than the
    /// cores leaves room for other work on the machine, such as a load generator.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
}

/// A time limit in seconds as a duration; 0 means none.
fn limit(secs: f64) -> Option<Duration> {
    (secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    let args = Args::parse();
    sockmsg_app::init_logging();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("app-server: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    if args.workers.is_some() && args.transport != Transport::Mio {
        return Err(format!(
            "--workers sets the mio transport's event loops; the {} transport runs a thread per connection",
            args.transport
        ));
    }
    let addr = resolve(&args.host, args.port)?;
    let settings = ServerSettings {
        max_connections: args.max_connections,
        idle_timeout: limit(args.idle_timeout),
        header_deadline: limit(args.read_timeout),
        write_deadline: limit(args.write_timeout),
        workers: args
            .workers
            .map_or(ServerSettings::default().workers, usize::from),
        ..ServerSettings::default()
    };
    let service = match args.byteorder {
        None => DemoService::new(),
        Some(order) => DemoService::with_byteorder(ByteOrder::from(order)),
    };

    // Ctrl-C: the first stops the server gracefully, a second exits at once. The handler
    // is installed before binding, and finds the stopper once the server is ready.
    let stopper: Arc<Mutex<Option<Stopper>>> = Arc::new(Mutex::new(None));
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let stopper = Arc::clone(&stopper);
        let interrupted = Arc::clone(&interrupted);
        ctrlc::set_handler(move || {
            if interrupted.swap(true, Ordering::SeqCst) {
                eprintln!("app-server: interrupted again, exiting now");
                std::process::exit(130);
            }
            tracing::info!("caught Ctrl-C, shutting down (Ctrl-C again to exit at once)");
            let guard = stopper.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(stop) = guard.as_ref() {
                stop.stop();
            } else {
                std::process::exit(130);
            }
        })
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    }

    let transport = args.transport;
    serve(
        transport,
        addr,
        &settings,
        Arc::new(service),
        |bound, stop| {
            *stopper.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop.clone());
            if interrupted.load(Ordering::SeqCst) {
                stop.stop();
            }
            let mut out = std::io::stdout().lock();
            // A closed stdout must not stop the server.
            let _ = writeln!(out, "listening on {bound}").and_then(|()| out.flush());
            tracing::info!("serving the demo application on {bound} ({transport} transport)");
        },
    )
    .map_err(|e| format!("cannot serve on {addr}: {e}"))
}
