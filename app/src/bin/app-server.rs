//! `app-server`: the guide's demo server, on a sockmsg transport.
//!
//! ```text
//! app-server [HOST] [PORT] [--transport mio|std|tokio] [--max-connections N]
//!            [--idle-timeout SECS] [--read-timeout SECS] [--write-timeout SECS]
//!            [--first-byte-timeout SECS] [--memory-budget MIB]
//!            [--byteorder little|big] [--workers N] [--close-after-answer] [-v|--trace]
//!            [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]
//! ```
//!
//! With `--tls-cert` and `--tls-key` (PEM) every connection is TLS (1.3 or 1.2, rustls);
//! `--tls-client-ca` also requires each client to present a certificate signed by that CA
//! (mutual TLS), and the client's name is logged. A plaintext or failed handshake closes
//! that connection with one log line naming the reason; a silent peer is closed at the
//! TLS handshake deadline (10 s). TLS runs on every transport, with the same log lines.
//!
//! Memory goes back to the system after a burst: on Linux with glibc, unless
//! `MALLOC_MMAP_THRESHOLD_` is already set, the program runs itself again at once (same
//! process, same arguments, `exec`) with it set to 128 KiB, so that buffers of large
//! messages are always mapped and unmapped on their own. Without it glibc raises the
//! threshold after the first large buffer is freed, and every thread's arena keeps the next
//! ones (measured: three bursts of 8 requests of 16 MiB left mio at +136 MiB, std at
//! +128 MiB, tokio at +61 MiB; with it every transport returned to within 1 MiB of its
//! baseline). To run it without the second `exec` (under valgrind without
//! `--trace-children`, or a wrapper that must see one program), set the variable yourself,
//! to 131072 for the same behaviour.
//!
//! Prints `listening on ADDR` to stdout once listening; logs go to stderr (`RUST_LOG`,
//! default `info`; `--trace` adds each request and answer). SIGINT (Ctrl-C), SIGTERM or
//! SIGHUP stop it gracefully, exit 0, and are logged by name; a second signal exits at once
//! (128 + its number). Exit codes: 0 stopped by a signal, 1 could not serve (resolve, bind),
//! 2 usage.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use sockmsg_app::cli::{fail, positive_secs, resolve, secs_or_zero, usage_error, Order};
use sockmsg_app::serve::{serve, serve_tls, ServerConfig, Stopper, Transport};
use sockmsg_demo::DemoService;
use sockmsg_protocol::ByteOrder;

const PROGRAM: &str = "app-server";

/// The guide's demo server (search table, binary answer), speaking the sockets guide's
/// message protocol.
///
/// By default it keeps each connection open for further requests, until the client closes
/// it or it stays idle for --idle-timeout: the guide's one-shot clients work, since they
/// close after their answer, but a client that reads until the server closes waits for the
/// idle timeout; for those, --close-after-answer closes after each answer as the guide's
/// server does.
///
/// Logs go to stderr: connections, errors, start and stop at the default level; every
/// request and answer too with --trace. RUST_LOG, when set, replaces both (for example
/// RUST_LOG=debug). SIGINT (Ctrl-C), SIGTERM and SIGHUP stop it gracefully (exit 0); a
/// second one exits at once.
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
    #[arg(long, value_name = "N", default_value_t = ServerConfig::default().max_connections)]
    max_connections: usize,
    /// Close a connection idle this many seconds between requests (0: never).
    #[arg(long, value_name = "SECS", value_parser = secs_or_zero, default_value_t = 60.0)]
    idle_timeout: f64,
    /// Close a new connection that sends no byte of a request within this many seconds
    /// (0: never; then only --idle-timeout applies).
    #[arg(long, value_name = "SECS", value_parser = secs_or_zero, default_value_t = 10.0)]
    first_byte_timeout: f64,
    /// Memory for input and output over all connections, in MiB: near it the server
    /// stops reading, and refuses requests over 64 KiB that do not fit.
    #[arg(long, value_name = "MIB", default_value_t = (ServerConfig::default().memory_budget >> 20) as u64,
          value_parser = clap::value_parser!(u64).range(1..=(1 << 30)))]
    memory_budget: u64,
    /// Memory that answers larger than the 1 MiB output cap may hold together, in MiB
    /// (default: a quarter of --memory-budget); one that does not fit closes its connection.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=(1 << 30)))]
    large_answer_share: Option<u64>,
    /// Least rate, in KiB/s, at which a peer must take its answers while more than the
    /// output cap is queued for it (0: no minimum, only --write-timeout applies).
    #[arg(long, value_name = "KIB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(0..=(1 << 30)))]
    min_send_rate: u64,
    /// The window over which --min-send-rate is measured, in seconds.
    #[arg(long, value_name = "SECS", value_parser = positive_secs, default_value_t = 10.0)]
    send_rate_window: f64,
    /// Close a connection whose request takes longer than this to arrive (0: never).
    #[arg(long, value_name = "SECS", value_parser = secs_or_zero, default_value_t = 30.0)]
    read_timeout: f64,
    /// Close a connection whose response cannot be written for this long (0: never).
    #[arg(long, value_name = "SECS", value_parser = secs_or_zero, default_value_t = 30.0)]
    write_timeout: f64,
    /// Byte order written in response headers (default: this machine's, as the guide).
    #[arg(long, value_enum)]
    byteorder: Option<Order>,
    /// Event loops (threads) of the mio transport, or runtime threads of the tokio transport
    /// (1: a current-thread runtime); default: one per core. Fewer than the cores leaves
    /// room for other work on the machine, such as a load generator.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// Close each connection once its answer is sent, as the guide's server does (default:
    /// keep it open for further requests), for clients that read until the server closes.
    #[arg(long)]
    close_after_answer: bool,
    /// Log every request and answer as the guide's server prints them (`received request
    /// {...}`, `sending {...}`): the default log filter becomes `info,sockmsg_demo=debug`.
    /// RUST_LOG, when set, wins.
    #[arg(short = 'v', long)]
    trace: bool,
    /// Serve over TLS with this certificate chain (PEM, the server's own first).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

/// A time limit in seconds as a duration; 0 means none.
fn limit(secs: f64) -> Option<Duration> {
    (secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

/// A signal's name, as logs give it.
fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT (Ctrl-C)",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// Runs the program again with glibc's mmap threshold fixed at 128 KiB (see the crate
/// documentation), unless it is set already; returns only if that is not possible.
///
/// Why a re-exec and not a global allocator or `mallopt` (measured for issue 12 on every
/// transport; figures in BENCHMARKS.md, "i12-alloc"):
///
/// * `mallopt(M_MMAP_THRESHOLD, ..)` in-process does the same as the variable (same
///   figures), but is an `unsafe` FFI call and no general-purpose crate offers it safely;
///   the crates are `#![forbid(unsafe_code)]`.
/// * mimalloc (v3 and v2) and jemalloc (tikv-jemallocator) kept up to 296 MiB and 39 MiB
///   over the baseline 2 s after a burst of 8 x 16 MiB (glibc with the threshold fixed:
///   1 MiB): they purge freed memory when the allocator is next called, or after a 10 s
///   decay. For one 16 MiB JSON request they peaked at 49 to 76 MiB above the baseline
///   where glibc peaks at 32 MiB (probably because a growing buffer is copied, where glibc
///   moves a mapped block with `mremap`), over the 3x bound `app/tests/hostile_process.rs`
///   asserts (mimalloc failed it); mimalloc also starts 6 to 10 MiB higher. Making them
///   purge at once needs an environment variable again (`MIMALLOC_PURGE_DELAY`,
///   `MALLOC_CONF`) or `unsafe` (`mi_option_set`, `mallctl`), and the peak stayed over 3x.
///   They saved at most 3.5% of the user-space instructions of a keep-alive request, and
///   add 120 to 440 KB to the stripped binary.
/// * The re-exec costs about 1.6 ms once, at start-up.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix_mmap_threshold() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "MALLOC_MMAP_THRESHOLD_";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // `exec` returns only if it failed: the program then runs as it is.
    let _ = command.args(args).env(VAR, "131072").exec();
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_mmap_threshold() {}

fn main() -> ExitCode {
    fix_mmap_threshold();
    let args = Args::parse();
    if args.workers.is_some() && args.transport == Transport::Std {
        return usage_error(
            PROGRAM,
            format!(
                "--workers sets the event loops of the mio and tokio transports; the {} transport runs a thread per connection",
                args.transport
            ),
        );
    }
    sockmsg_app::init_logging_with(if args.trace {
        sockmsg_app::LOG_TRACE
    } else {
        sockmsg_app::LOG_DEFAULT
    });
    let addr = match resolve(&args.host, args.port) {
        Ok(addr) => addr,
        Err(message) => {
            return fail(
                PROGRAM,
                format!("cannot listen on {}:{}", args.host, args.port),
                message,
            )
        }
    };
    let settings = ServerConfig {
        max_connections: args.max_connections,
        idle_timeout: limit(args.idle_timeout),
        header_deadline: limit(args.read_timeout),
        first_byte_deadline: limit(args.first_byte_timeout),
        memory_budget: usize::try_from(args.memory_budget << 20).unwrap_or(usize::MAX),
        large_answer_share: args
            .large_answer_share
            .map(|mib| usize::try_from(mib << 20).unwrap_or(usize::MAX)),
        min_send_rate: (args.min_send_rate > 0).then_some(args.min_send_rate << 10),
        send_rate_window: Duration::from_secs_f64(args.send_rate_window),
        write_deadline: limit(args.write_timeout),
        workers: args
            .workers
            .map_or(ServerConfig::default().workers, usize::from),
        close_after_answer: args.close_after_answer,
        ..ServerConfig::default()
    };
    let service = match args.byteorder {
        None => DemoService::new(),
        Some(order) => DemoService::with_byteorder(ByteOrder::from(order)),
    }
    .with_limits(&settings.limits);

    // SIGINT, SIGTERM, SIGHUP: the first stops the server gracefully, a second exits at
    // once. Handled by signal-hook (the ctrlc crate runs one handler for all three and
    // cannot tell them apart), installed before binding; the handler thread finds the
    // stopper once the server is ready.
    let stopper: Arc<Mutex<Option<Stopper>>> = Arc::new(Mutex::new(None));
    let caught = Arc::new(AtomicBool::new(false));
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(signals) => signals,
        Err(e) => return fail(PROGRAM, "cannot install the signal handlers", e),
    };
    {
        let stopper = Arc::clone(&stopper);
        let caught = Arc::clone(&caught);
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    let name = signal_name(signal);
                    let code = 128 + signal;
                    if caught.swap(true, Ordering::SeqCst) {
                        eprintln!("{PROGRAM}: caught {name} again: exiting now");
                        std::process::exit(code);
                    }
                    tracing::info!("caught {name}: shutting down (again to exit at once)");
                    let guard = stopper.lock().unwrap_or_else(|e| e.into_inner());
                    match guard.as_ref() {
                        Some(stop) => stop.stop(),
                        None => std::process::exit(code),
                    }
                }
            });
        if let Err(e) = spawned {
            return fail(PROGRAM, "cannot start the signal thread", e);
        }
    }

    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let mut options = sockmsg_tls::ServerOptions::new(
                sockmsg_tls::Pem::file(cert),
                sockmsg_tls::Pem::file(key),
            );
            if let Some(ca) = &args.tls_client_ca {
                options = options.with_client_ca(sockmsg_tls::Pem::file(ca));
            }
            match sockmsg_tls::server_config(&options) {
                Ok(config) => Some(config),
                Err(e) => return fail(PROGRAM, "cannot load the TLS settings", e),
            }
        }
        _ => None,
    };

    let transport = args.transport;
    let secure = if tls.is_some() { ", TLS" } else { "" };
    let ready = |bound, stop: &Stopper| {
        *stopper.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop.clone());
        if caught.load(Ordering::SeqCst) {
            stop.stop();
        }
        let mut out = std::io::stdout().lock();
        // A closed stdout must not stop the server.
        let _ = writeln!(out, "listening on {bound}").and_then(|()| out.flush());
        tracing::info!("serving the demo application on {bound} ({transport} transport{secure})");
    };
    let service = Arc::new(service);
    let served = match tls {
        Some(tls) => {
            let demo = Arc::clone(&service);
            let peer_service = move |peer: Option<&sockmsg_tls::PeerIdentity>, request| {
                if let Some(peer) = peer {
                    tracing::debug!("request from {peer} ({})", peer.subject);
                }
                sockmsg_server::Service::call(&*demo, request)
            };
            serve_tls(
                transport,
                addr,
                &settings,
                Arc::new(peer_service),
                tls,
                |b, s| ready(b, &s),
            )
        }
        None => serve(transport, addr, &settings, service, |b, s| ready(b, &s)),
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(PROGRAM, format!("cannot serve on {addr}"), e),
    }
}
