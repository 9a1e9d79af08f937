//! `app-inspect FILE|-`: lists the messages of a captured sockmsg byte stream.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sockmsg_app::inspect::{inspect, InspectError, Options};
use sockmsg_protocol::Limits;

/// Decodes a captured byte stream (the raw payload of one direction of a TCP connection,
/// e.g. saved from Wireshark's "Follow TCP Stream" shown as raw) with the sans-IO decoder,
/// and prints each message: offset, JSON header as sent, content (JSON pretty-printed,
/// anything else as a hex preview). Reads in chunks: captures of any size. Exit status: 0 for a clean stream, 1 for a malformed or
/// truncated one (the error and its byte offset are printed), 2 for usage or I/O errors.
#[derive(Debug, Parser)]
#[command(
    name = "app-inspect",
    version,
    after_help = "From a capture: the server's side (port 65432) of its first TCP connection:\n  \
        tshark -r capture.pcap -Y 'tcp.stream == 0 && tcp.srcport == 65432 && tcp.len > 0 \
        && !tcp.analysis.retransmission' -T fields -e tcp.payload | xxd -r -p | app-inspect -"
)]
struct Args {
    /// The capture file, or - for standard input.
    input: PathBuf,
    /// Bytes of binary content shown in the hex preview (0: none).
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    preview: usize,
    /// Largest content accepted, in bytes (the protocol default is 16 MiB).
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    max_content: u64,
    /// Print only the summary line (and the error, if any).
    #[arg(short = 'q', long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let input: Box<dyn Read> = if args.input.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        match File::open(&args.input) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("app-inspect: cannot open {}: {e}", args.input.display());
                return ExitCode::from(2);
            }
        }
    };
    let options = Options {
        preview: args.preview,
        quiet: args.quiet,
        limits: Limits {
            max_content_len: args.max_content,
            ..Limits::default()
        },
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let result = inspect(input, &mut out, &options);
    let code = match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e @ InspectError::Malformed { .. }) => {
            let _ = writeln!(out, "error: {e}");
            ExitCode::from(1)
        }
        Err(InspectError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(InspectError::Io(e)) => {
            let _ = out.flush();
            eprintln!("app-inspect: {e}");
            ExitCode::from(2)
        }
    };
    let _ = out.flush();
    code
}
