//! `echo-baseline`: the unframed echo server (mio, one thread) that sockmsg servers are
//! compared with. Measure it with `app-bench --echo`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sockmsg_app::bench::echo::EchoServer;

/// Minimal echo server with no framing: every byte read is written back. Single thread,
/// mio. The baseline for `app-bench --echo`; runs until killed.
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-baseline: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &Args) -> Result<(), String> {
    let addr: SocketAddr = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", args.host))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", args.host))?;
    let server = EchoServer::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = server.local_addr().map_err(|e| e.to_string())?;
    if let Some(path) = &args.port_file {
        // Write, then rename: a reader never sees a partial file.
        let mut tmp = path.clone().into_os_string();
        tmp.push(format!(".tmp{}", std::process::id()));
        std::fs::write(&tmp, format!("{}\n", local.port()))
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    println!("listening on {local}");
    server.run().map_err(|e| format!("event loop failed: {e}"))
}
