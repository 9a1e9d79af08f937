//! # sockmsg-bench
//!
//! The load generator behind `app-bench`, and the echo baseline server behind
//! `echo-baseline`: the tools that measure sockmsg servers, kept apart from the programs
//! users run (`sockmsg-app`).
//!
//! * [`workload`]: the request a run sends (JSON search, binary, or raw echo bytes) and the
//!   answer it must get back, computed by the demo service itself (or the request itself);
//! * [`engine`]: client connections on mio (keep-alive with pipelining, or one-shot; closed
//!   loop or fixed rate), checking every answer, giving up when nothing succeeds;
//! * [`report`]: requests/s, bytes/s, errors by kind, latency percentiles and histogram
//!   (hdrhistogram), the server's CPU per request, as text or JSON;
//! * [`cpu`]: a local process's CPU time, from `/proc`;
//! * [`echo`]: the unframed echo server every sockmsg server is compared with.
//!
//! ## Example: a short run against the echo baseline
//!
//! ```
//! use sockmsg_bench::echo::EchoServer;
//! use sockmsg_bench::engine::{run, Config, Control, Limit};
//! use sockmsg_bench::workload::{Kind, Workload};
//!
//! let server = EchoServer::bind("127.0.0.1:0".parse()?)?;
//! let addr = server.local_addr()?;
//! let stop = server.stopper();
//! let thread = std::thread::spawn(move || server.run());
//!
//! let config = Config {
//!     connections: 2,
//!     limit: Limit::Requests(200),
//!     pipeline: 4,
//!     ..Config::new(addr, Workload::new(Kind::Echo, None, None)?)
//! };
//! let report = run(&config, &Control::new(), |_| {})?;
//! assert_eq!(report.ok, 200);
//! assert_eq!(report.errors.total(), 0);
//! assert_eq!(report.sent_bytes, 200 * 146);
//! assert_eq!(report.received_bytes, 200 * 146);
//!
//! stop.stop()?;
//! thread.join().expect("server thread")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cpu;
pub mod echo;
pub mod engine;
pub mod report;
pub mod workload;

use std::path::Path;
use std::time::Duration;

/// Writes `port` (the number and a newline) to `path` for a script waiting on a server
/// started with `--port-file`: written to a temporary file, then renamed, so a reader
/// never sees a partial file. The error is `cannot write PATH: why`.
pub fn write_port_file(path: &Path, port: u16) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    std::fs::write(&tmp, format!("{port}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Parses a duration written as a number with an optional unit: `500ms`, `10s`, `10`
/// (seconds), `1.5s`, `2m`.
///
/// ```
/// use std::time::Duration;
/// use sockmsg_bench::parse_duration;
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
/// assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try 10s, 500ms, 2m)"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit {other:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{text:?}: {e}"))
}
