//! `app-bench`: a load generator for sockmsg servers (and the echo baseline), in the
//! spirit of redis-benchmark and oha. Every answer is checked; see `app-bench --help`.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sockmsg_bench::engine::{run, Config, Control, Limit, Progress};
use sockmsg_bench::parse_duration;
use sockmsg_bench::report::Mode;
use sockmsg_bench::workload::{Kind, Workload};
use sockmsg_app::cli::resolve;

/// Load generator for sockmsg servers: keep-alive or one-shot connections, pipelining,
/// JSON search, binary or raw echo requests. Every answer is checked against the demo
/// application of PROTOCOL.md (or, with --echo, against the bytes sent): a wrong or
/// missing answer is an error. Exit status: 0 if every request was answered correctly,
/// 1 if any failed, 2 on a usage error.
#[derive(Debug, Parser)]
#[command(name = "app-bench", version)]
struct Args {
    /// Server host.
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
    /// (for the echo-baseline server).
    #[arg(long)]
    echo: bool,
    /// Size of each request on the wire, in bytes [default: 146, the guide's search for
    /// "morpheus"]. JSON requests are padded with a filler search value, binary ones with
    /// filler content.
    #[arg(short = 's', long)]
    size: Option<usize>,
    /// The search value of JSON requests [default: morpheus].
    #[arg(long, conflicts_with_all = ["size", "binary", "echo"])]
    value: Option<String>,
    /// Client threads, each with its own event loop over a share of the connections.
    #[arg(short = 't', long, default_value_t = 1)]
    threads: usize,
    /// A request with no answer after this long is an error (timeout).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// No progress line on stderr.
    #[arg(short = 'q', long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match bench(&args) {
        Ok(ok) if ok => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("app-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the benchmark; `Ok(true)` if every request was answered correctly.
fn bench(args: &Args) -> Result<bool, String> {
    let kind = if args.echo {
        Kind::Echo
    } else if args.binary {
        Kind::Binary
    } else {
        Kind::Json
    };
    let workload =
        Workload::new(kind, args.value.as_deref(), args.size).map_err(|e| e.to_string())?;
    let limit = match (args.requests, args.duration) {
        (_, Some(d)) => Limit::Duration(d),
        (Some(n), None) => Limit::Requests(n),
        (None, None) => Limit::Requests(100_000),
    };
    let config = Config {
        addr: resolve(&args.host, args.port)?,
        connections: args.connections,
        limit,
        mode: if args.one_shot {
            Mode::OneShot
        } else {
            Mode::KeepAlive
        },
        pipeline: args.pipeline,
        threads: args.threads,
        timeout: args.timeout,
        workload,
    };
    config.validate()?;

    let control = Control::new();
    {
        let control = control.clone();
        // Ctrl-C ends the run early; the summary still covers what was done.
        let _ = ctrlc::set_handler(move || control.stop());
    }
    if !args.quiet {
        eprintln!(
            "app-bench: {} {} requests of {} bytes to {}, {} connections, pipeline {}, {}",
            config.mode,
            kind,
            config.workload.request_len(),
            config.addr,
            config.connections,
            config.pipeline,
            match limit {
                Limit::Requests(n) => format!("{n} requests"),
                Limit::Duration(d) => format!("for {d:?}"),
            }
        );
    }
    let mut last = Progress {
        elapsed: Duration::ZERO,
        ok: 0,
        errors: 0,
    };
    let quiet = args.quiet;
    let report = run(&config, &control, |p| {
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
    })
    .map_err(|e| e.to_string())?;
    let mut stdout = std::io::stdout().lock();
    let text = if args.json {
        report.to_json() + "\n"
    } else {
        report.to_text()
    };
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    Ok(report.errors.total() == 0 && report.ok > 0)
}
