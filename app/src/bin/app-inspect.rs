//! `app-inspect FILE|-`: lists the messages of a captured sockmsg byte stream.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sockmsg_app::cli::fail;
use sockmsg_app::inspect::{inspect, InspectError, Options};
use sockmsg_protocol::Limits;

/// Decodes a captured byte stream (the raw payload of one direction of a TCP connection,
/// e.g. saved from Wireshark's "Follow TCP Stream" shown as raw) with the sans-IO decoder,
/// and prints each message: offset, JSON header as sent, content (JSON pretty-printed,
/// anything else as a hex preview). Reads in chunks: captures of any size. Exit status: 0 for a
/// clean stream; 1 for a malformed or truncated one (the error and its byte offset are
/// printed on stderr, after the listing of the messages before it) or a file that cannot be
/// read; 2 for usage errors.
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

const PROGRAM: &str = "app-inspect";

fn main() -> ExitCode {
    let args = Args::parse();
    let name = if args.input.as_os_str() == "-" {
        "standard input".to_owned()
    } else {
        args.input.display().to_string()
    };
    let input: Box<dyn Read> = if args.input.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        match File::open(&args.input) {
            Ok(f) => Box::new(f),
            Err(e) => return fail(PROGRAM, format!("cannot open {name}"), e),
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
    // The listing goes out before the error line that ends it.
    let flushed = out.flush();
    match result {
        Ok(_) => match flushed {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                fail(PROGRAM, "cannot write the listing", e)
            }
            _ => ExitCode::SUCCESS,
        },
        Err(e @ InspectError::Malformed { .. }) => {
            fail(PROGRAM, format!("cannot decode {name}"), e)
        }
        Err(InspectError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(InspectError::Write(e)) => fail(PROGRAM, "cannot write the listing", e),
        Err(InspectError::Read(e)) => fail(PROGRAM, format!("cannot read {name}"), e),
    }
}
