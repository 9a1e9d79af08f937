//! `echo-baseline`: the unframed echo server (mio, one thread unless `--workers`) that
//! sockmsg servers are compared with. Measure it with `app-bench --echo`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sockmsg_app::cli::{resolve, EXIT_FAILURE};
use sockmsg_bench::echo::EchoServer;

/// Minimal echo server with no framing: every byte read is written back. mio, one thread
/// (or `--workers` event loops sharing the listener). The baseline for `app-bench --echo`;
/// runs until killed. Exit status: 1 if it cannot resolve, listen or run, 2 on a usage
/// error.
#[derive(Debug, Parser)]
#[command(name = "echo-baseline", version)]
struct Args {
    /// Host to listen on.
    #[arg(default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port).
    #[arg(default_value_t = 65433)]
    port: u16,
    /// Write the bound port (number and newline) to this file once listening.
    #[arg(long, value_name = "FILE")]
    port_file: Option<PathBuf>,
    /// Event loops (threads) sharing the listener, to compare with a server that runs
    /// several.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `e` is "what failed: why", naming the address or path.
            eprintln!("echo-baseline: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn serve(args: &Args) -> Result<(), String> {
    let addr = resolve(&args.host, args.port)?;
    let mut servers = EchoServer::bind_loops(addr, usize::from(args.workers))
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let server = servers
        .pop()
        .ok_or_else(|| "no event loop was made".to_owned())?;
    let local = server.local_addr().map_err(|e| e.to_string())?;
    if let Some(path) = &args.port_file {
        sockmsg_bench::write_port_file(path, local.port())?;
    }
    for (i, other) in servers.into_iter().enumerate() {
        std::thread::Builder::new()
            .name(format!("echo-loop-{}", i + 1))
            .spawn(move || {
                if let Err(e) = other.run() {
                    eprintln!("echo-baseline: event loop failed: {e}");
                    std::process::exit(1);
                }
            })
            .map_err(|e| format!("cannot start an event loop: {e}"))?;
    }
    println!("listening on {local}");
    server.run().map_err(|e| format!("event loop failed: {e}"))
}
