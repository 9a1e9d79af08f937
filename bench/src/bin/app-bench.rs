//! `app-bench`: a load generator for sockmsg servers (and the echo baseline), in the
//! spirit of wrk2, oha and redis-benchmark. Every answer is checked; see `app-bench --help`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use sockmsg_app::cli::{fail, resolve, tls_version, usage_error, EXIT_FAILURE};
use sockmsg_bench::engine::{run, Config, Control, Limit, Progress, Tls, MAX_RATE, MIN_RATE};
use sockmsg_bench::parse_duration;
use sockmsg_bench::report::Mode;
use sockmsg_bench::workload::{Expect, Kind, Workload};
use sockmsg_tls::TlsVersion;

const PROGRAM: &str = "app-bench";

/// Load generator for sockmsg servers: keep-alive or one-shot connections, pipelining,
/// closed loop or fixed rate, JSON search, binary or raw echo requests.
///
/// Every answer is checked: against what the demo service (the code app-server runs)
/// answers to the same request, or with --answer echo against the request itself, or with
/// --echo against the bytes sent. A wrong or missing answer is an error. The run gives up
/// when nothing is answered right for 5 s while errors come (or after --max-errors errors
/// in a row).
///
/// Prints requests/s, bytes/s sent and received, latency percentiles and a histogram (no
/// latency figures when nothing was answered), and with --server-pid the server's CPU time
/// per request.
///
/// Exit status: 0 if every request was answered correctly, 1 if any failed or the run gave
/// up (one line on stderr says why), 2 on a usage error.
#[derive(Debug, Parser)]
#[command(name = "app-bench", version)]
struct Args {
    /// Server host (an IP address, or a name to resolve).
    #[arg(default_value = "127.0.0.1")]
    host: String,
    /// Server port.
    #[arg(default_value_t = 65432)]
    port: u16,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 8)]
    connections: usize,
    /// Total requests (default 100000 unless --duration is given).
    #[arg(short = 'n', long, conflicts_with = "duration")]
    requests: Option<u64>,
    /// Run for this long instead (10s, 500ms, 2m); requests in flight at the end are
    /// abandoned, not counted.
    #[arg(short = 'd', long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Fixed-rate mode: send R requests/s in all, spread over the connections (each on
    /// its own schedule), and measure each request's latency from its INTENDED send time.
    /// A server that falls behind is then charged the time requests waited for it (no
    /// coordinated omission, as wrk2 measures). Without --rate each connection sends its
    /// next request as soon as an answer frees room (closed loop), which slows the load
    /// down when the server slows down and so understates latency. A connection keeps at
    /// most --pipeline requests in flight: give enough connections for the rate.
    #[arg(long, value_name = "R", value_parser = positive_rate)]
    rate: Option<f64>,
    /// One request per connection: connect, request, answer, close (the guide's pattern).
    /// The latency then includes the connect.
    #[arg(long)]
    one_shot: bool,
    /// Requests in flight per connection (keep-alive only).
    #[arg(short = 'P', long, default_value_t = 1)]
    pipeline: usize,
    /// Send binary requests (binary/custom-client-binary-type) instead of JSON searches.
    #[arg(long, conflicts_with = "echo")]
    binary: bool,
    /// No framing: a request is --size raw bytes and the answer must be the same bytes
    /// (for the echo-baseline server; a sockmsg server that echoes messages wants framed
    /// requests and --answer echo).
    #[arg(long)]
    echo: bool,
    /// What a framed answer must be: the demo service's answer (app-server), or the
    /// request itself (a sockmsg server whose service returns each request, such as
    /// transport-mio's mio_echo_server example).
    #[arg(long, value_enum, default_value = "demo", conflicts_with = "echo")]
    answer: AnswerArg,
    /// Size of each request on the wire, in bytes [default: 146, the guide's search for
    /// "morpheus"]. JSON requests are padded with a filler search value, binary ones with
    /// filler content.
    #[arg(short = 's', long)]
    size: Option<usize>,
    /// The search value of JSON requests [default: morpheus].
    #[arg(long, conflicts_with_all = ["size", "binary", "echo", "value_json"])]
    value: Option<String>,
    /// The search value of JSON requests as JSON: null, true, 42, [1, "a"], {"k": 1}...
    /// (answered as the guide's Python server formats it).
    #[arg(long, value_name = "JSON", value_parser = json_value,
          conflicts_with_all = ["size", "binary", "echo"])]
    value_json: Option<Value>,
    /// Client threads, each with its own event loop over a share of the connections.
    #[arg(short = 't', long, default_value_t = 1)]
    threads: usize,
    /// A request with no answer after this long is an error (timeout).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Give up after N errors in a row (without a right answer between them).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_errors: Option<u64>,
    /// Also report the CPU time (user + system) this local process used during the run,
    /// per right answer: how servers compare where requests/s cannot tell them apart
    /// (one-shot on loopback is capped by the client's ports). Linux (/proc).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Print the summary as one JSON object on stdout (figures rounded to 3 decimals).
    #[arg(long)]
    json: bool,
    /// No progress line on stderr.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Speak TLS (rustls, TLS 1.3 or 1.2) on every connection, verifying the server's
    /// certificate (against --ca, or the system's roots). One-shot connections after the
    /// first resume their TLS session (a ticket from an earlier connection) unless
    /// --no-resume; the report counts full and resumed handshakes.
    #[arg(long, conflicts_with = "echo")]
    tls: bool,
    /// CA certificates (PEM) that may sign the server's certificate.
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// The name the server's certificate must be valid for (default: HOST).
    #[arg(long, value_name = "NAME", requires = "tls")]
    server_name: Option<String>,
    /// No TLS session resumption: every connection pays a full handshake.
    #[arg(long, requires = "tls")]
    no_resume: bool,
    /// Offer only this TLS version (default: 1.3 and 1.2, the server chooses). A resumed
    /// TLS 1.2 session makes no key exchange (cheaper, no forward secrecy); a resumed
    /// TLS 1.3 one does.
    #[arg(long, value_name = "VERSION", requires = "tls", value_parser = tls_version())]
    tls_version: Option<TlsVersion>,
}

/// `--answer` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AnswerArg {
    /// The demo service's answer.
    Demo,
    /// The request itself.
    Echo,
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (MIN_RATE..=MAX_RATE).contains(&r) => Ok(r),
        _ => Err(format!(
            "{s:?} is not a number of requests/s from {MIN_RATE} to {MAX_RATE}"
        )),
    }
}

fn json_value(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("{s:?} is not JSON: {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match configure(&args) {
        Ok(config) => config,
        Err(Failure::Usage(message)) => return usage_error(PROGRAM, message),
        Err(Failure::Runtime(message)) => {
            eprintln!("{PROGRAM}: {message}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    bench(&args, &config)
}

enum Failure {
    Usage(String),
    Runtime(String),
}

fn configure(args: &Args) -> Result<Config, Failure> {
    let kind = if args.echo {
        Kind::Echo
    } else if args.binary {
        Kind::Binary
    } else {
        Kind::Json
    };
    let workload = match &args.value_json {
        Some(value) => Workload::json_search(value),
        None => Workload::new(kind, args.value.as_deref(), args.size),
    }
    .and_then(|w| match (kind, args.answer) {
        (Kind::Echo, _) => Ok(w),
        (_, AnswerArg::Demo) => w.with_expect(Expect::Demo),
        (_, AnswerArg::Echo) => w.with_expect(Expect::Echo),
    })
    .map_err(|e| Failure::Usage(e.to_string()))?;
    let limit = match (args.requests, args.duration) {
        (_, Some(d)) => Limit::Duration(d),
        (Some(n), None) => Limit::Requests(n),
        (None, None) => Limit::Requests(100_000),
    };
    let mut config = Config::new(
        resolve(&args.host, args.port).map_err(Failure::Runtime)?,
        workload,
    );
    config.connections = args.connections;
    config.limit = limit;
    config.mode = if args.one_shot {
        Mode::OneShot
    } else {
        Mode::KeepAlive
    };
    config.pipeline = args.pipeline;
    config.threads = args.threads;
    config.timeout = args.timeout;
    config.rate = args.rate;
    config.max_errors = args.max_errors;
    config.server_pid = args.server_pid;
    if args.tls {
        config.tls = Some(tls(args)?);
    }
    config.validate().map_err(Failure::Usage)?;
    Ok(config)
}

/// The TLS settings of `--tls`: the CA, the server name, resumption, the version.
fn tls(args: &Args) -> Result<Tls, Failure> {
    let name = args.server_name.as_deref().unwrap_or(&args.host);
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned())
        .map_err(|e| Failure::Usage(format!("{name:?} is not a server name for TLS: {e}")))?;
    let options = sockmsg_tls::ClientOptions {
        ca: args.ca.clone().map(sockmsg_tls::Pem::File),
        version: args.tls_version,
        ..sockmsg_tls::ClientOptions::default()
    };
    let config = sockmsg_tls::client_config(&options)
        .map_err(|e| Failure::Runtime(format!("cannot load the TLS settings: {e}")))?;
    let config = if args.no_resume {
        let mut config = Arc::unwrap_or_clone(config);
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    } else {
        config
    };
    Ok(Tls {
        config,
        server_name,
    })
}

fn bench(args: &Args, config: &Config) -> ExitCode {
    let control = Control::new();
    {
        let control = control.clone();
        // Ctrl-C ends the run early; the summary still covers what was done.
        let _ = ctrlc::set_handler(move || control.stop());
    }
    if !args.quiet {
        eprintln!(
            "{PROGRAM}: {} {} requests of {} bytes to {}{}, {} connections, pipeline {}, {}{}",
            config.mode,
            config.workload.kind(),
            config.workload.request_len(),
            config.addr,
            match (&config.tls, args.no_resume) {
                (None, _) => String::new(),
                (Some(_), resume) => format!(
                    " over TLS{}{}",
                    args.tls_version
                        .map_or_else(String::new, |v| format!(" {v}")),
                    if resume { " (no resumption)" } else { "" }
                ),
            },
            config.connections,
            config.pipeline,
            match config.limit {
                Limit::Requests(n) => format!("{n} requests"),
                Limit::Duration(d) => format!("for {d:?}"),
            },
            match config.rate {
                Some(rate) => format!(", at {rate} requests/s"),
                None => String::new(),
            }
        );
    }
    let mut last = Progress {
        elapsed: Duration::ZERO,
        ok: 0,
        errors: 0,
    };
    let quiet = args.quiet;
    let report = match run(config, &control, |p| {
        if !quiet {
            let secs = (p.elapsed - last.elapsed).as_secs_f64().max(1e-9);
            eprintln!(
                "[{:>4.0}s] {} ok, {} errors, {:.0} requests/s",
                p.elapsed.as_secs_f64(),
                p.ok,
                p.errors,
                p.ok.saturating_sub(last.ok) as f64 / secs
            );
            last = *p;
        }
    }) {
        Ok(report) => report,
        Err(e) => return fail(PROGRAM, format!("cannot run against {}", config.addr), e),
    };
    let mut stdout = std::io::stdout().lock();
    let text = if args.json {
        report.to_json() + "\n"
    } else {
        report.to_text()
    };
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    if let Some(gave_up) = control.gave_up() {
        return fail(PROGRAM, gave_up.what, gave_up.why);
    }
    let failed = report.errors.total();
    if failed > 0 {
        return fail(
            PROGRAM,
            format!(
                "{failed} of {} requests to {} failed",
                report.requests, report.target
            ),
            report.first_error.as_deref().unwrap_or("no detail"),
        );
    }
    if report.ok == 0 {
        return fail(
            PROGRAM,
            format!("no request to {} was answered", report.target),
            "the run ended first",
        );
    }
    ExitCode::SUCCESS
}
