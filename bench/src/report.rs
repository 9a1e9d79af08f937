//! The outcome of a run: counts, errors by kind, latency percentiles, and their text and
//! JSON forms.
//!
//! ```
//! use std::time::Duration;
//! use sockmsg_bench::report::{ErrorCounts, ErrorKind, Latency};
//!
//! let mut errors = ErrorCounts::default();
//! errors.add(ErrorKind::Timeout, 2);
//! assert_eq!(errors.total(), 2);
//! assert_eq!(errors.to_string(), "timeout 2");
//!
//! let mut latency = Latency::new();
//! latency.record(Duration::from_micros(250));
//! assert_eq!(latency.count(), 1);
//! ```

use std::fmt::{self, Write as _};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::workload::Kind;

/// How a request can fail. Every request a run issues ends as exactly one of: a right
/// answer, an error of one of these kinds, or abandoned at the end of a timed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The connection could not be established.
    Connect,
    /// A read or write failed on an established connection (reset, broken pipe, …).
    Io,
    /// The server closed the connection before answering.
    Closed,
    /// The answer broke the protocol (the decoder failed on it).
    Protocol,
    /// The answer was a valid message (or echoed bytes) but not the expected one, or an
    /// answer came that no request asked for.
    WrongAnswer,
    /// No answer within the timeout.
    Timeout,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Connect,
        ErrorKind::Io,
        ErrorKind::Closed,
        ErrorKind::Protocol,
        ErrorKind::WrongAnswer,
        ErrorKind::Timeout,
    ];

    /// The kind's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Io => "io",
            ErrorKind::Closed => "closed",
            ErrorKind::Protocol => "protocol",
            ErrorKind::WrongAnswer => "wrong-answer",
            ErrorKind::Timeout => "timeout",
        }
    }

    fn index(self) -> usize {
        match self {
            ErrorKind::Connect => 0,
            ErrorKind::Io => 1,
            ErrorKind::Closed => 2,
            ErrorKind::Protocol => 3,
            ErrorKind::WrongAnswer => 4,
            ErrorKind::Timeout => 5,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors counted by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    counts: [u64; 6],
}

impl ErrorCounts {
    /// Counts `n` errors of `kind`.
    pub fn add(&mut self, kind: ErrorKind, n: u64) {
        if let Some(c) = self.counts.get_mut(kind.index()) {
            *c += n;
        }
    }

    /// The errors of `kind`.
    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.counts.get(kind.index()).copied().unwrap_or(0)
    }

    /// All errors.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &ErrorCounts) {
        for kind in ErrorKind::ALL {
            self.add(kind, other.get(kind));
        }
    }
}

/// `kind n, kind n` for the kinds that occurred, or `none`.
impl fmt::Display for ErrorCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for kind in ErrorKind::ALL {
            let n = self.get(kind);
            if n > 0 {
                if !first {
                    f.write_str(", ")?;
                }
                write!(f, "{kind} {n}")?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

impl Serialize for ErrorCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(ErrorKind::ALL.len() + 1))?;
        map.serialize_entry("total", &self.total())?;
        for kind in ErrorKind::ALL {
            map.serialize_entry(kind.as_str(), &self.get(kind))?;
        }
        map.end()
    }
}

/// Latencies in nanoseconds, from 1 ns to 1 hour, 3 significant digits (hdrhistogram).
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Option<Histogram<u64>>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    const MAX_NS: u64 = 3_600_000_000_000;

    /// An empty record.
    pub fn new() -> Latency {
        Latency {
            hist: Histogram::new_with_bounds(1, Self::MAX_NS, 3).ok(),
        }
    }

    /// Records one latency (clamped to the histogram's range).
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos())
            .unwrap_or(u64::MAX)
            .clamp(1, Self::MAX_NS);
        if let Some(h) = &mut self.hist {
            h.saturating_record(ns);
        }
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.hist.as_ref().map_or(0, |h| h.len())
    }

    /// Adds `other`'s latencies to these.
    pub fn merge(&mut self, other: &Latency) {
        if let (Some(a), Some(b)) = (&mut self.hist, &other.hist) {
            // Same bounds on both sides: this cannot fail.
            let _ = a.add(b);
        }
    }

    /// The percentiles of what was recorded (all zero if nothing was).
    pub fn summary(&self) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1000.0;
        match &self.hist {
            Some(h) if !h.is_empty() => LatencySummary {
                min_us: us(h.min()),
                mean_us: h.mean() / 1000.0,
                p50_us: us(h.value_at_quantile(0.5)),
                p90_us: us(h.value_at_quantile(0.9)),
                p99_us: us(h.value_at_quantile(0.99)),
                p999_us: us(h.value_at_quantile(0.999)),
                max_us: us(h.max()),
            },
            _ => LatencySummary::default(),
        }
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Fastest answer.
    pub min_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Slowest answer.
    pub max_us: f64,
}

/// Keep-alive or one-shot connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Each connection carries many requests, up to the pipelining depth at a time.
    KeepAlive,
    /// Each request has its own connection: connect, request, answer, close (the guide's
    /// pattern). Its latency includes the connect.
    OneShot,
}

impl Mode {
    /// The mode's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keep-alive",
            Mode::OneShot => "one-shot",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of a run, as printed by `app-bench` (text or `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The server address.
    pub target: String,
    /// The kind of request.
    pub kind: Kind,
    /// Keep-alive or one-shot.
    pub mode: Mode,
    /// Concurrent connections.
    pub connections: usize,
    /// Requests in flight per connection (keep-alive).
    pub pipeline: usize,
    /// Client threads.
    pub threads: usize,
    /// Size of one request on the wire, in bytes.
    pub request_bytes: usize,
    /// Wall time of the run, in seconds.
    pub elapsed_s: f64,
    /// Requests issued: `ok + errors.total + abandoned`.
    pub requests: u64,
    /// Requests answered correctly.
    pub ok: u64,
    /// Requests that failed, by kind.
    pub errors: ErrorCounts,
    /// Requests still in flight when a timed run ended (or was interrupted): neither
    /// successes nor errors.
    pub abandoned: u64,
    /// Right answers per second of wall time.
    pub requests_per_s: f64,
    /// Latency of the right answers: from the request's queueing (after the connect for
    /// keep-alive, before it for one-shot) to the answer's last byte.
    pub latency: LatencySummary,
    /// The first error seen, for a human to start from.
    pub first_error: Option<String>,
}

impl Report {
    /// The report as a JSON object (one line).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The report for humans.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let ms = |us: f64| format!("{:.3}", us / 1000.0);
        let _ = writeln!(
            s,
            "target:      {} ({} requests, {} bytes each)",
            self.target, self.kind, self.request_bytes
        );
        let _ = writeln!(
            s,
            "mode:        {}, {} connections, pipeline {}, {} thread(s)",
            self.mode, self.connections, self.pipeline, self.threads
        );
        let _ = writeln!(
            s,
            "requests:    {} in {:.2} s: {} ok, {} errors, {} abandoned at the end",
            self.requests,
            self.elapsed_s,
            self.ok,
            self.errors.total(),
            self.abandoned
        );
        let _ = writeln!(s, "throughput:  {:.1} requests/s", self.requests_per_s);
        let l = &self.latency;
        let _ = writeln!(
            s,
            "latency ms:  min {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})",
            ms(l.min_us),
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us),
            ms(l.mean_us)
        );
        let _ = writeln!(s, "errors:      {}", self.errors);
        if let Some(e) = &self.first_error {
            let _ = writeln!(s, "first error: {e}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        for us in 1..=500 {
            a.record(Duration::from_micros(us));
        }
        for us in 501..=1000 {
            b.record(Duration::from_micros(us));
        }
        a.merge(&b);
        assert_eq!(a.count(), 1000);
        let s = a.summary();
        assert!((s.min_us - 1.0).abs() < 0.01, "{s:?}");
        assert!((s.p50_us - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p90_us - 900.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() < 1.0, "{s:?}");
        assert_eq!(Latency::new().summary(), LatencySummary::default());
    }

    #[test]
    fn errors_serialize_with_a_total() {
        let mut e = ErrorCounts::default();
        e.add(ErrorKind::WrongAnswer, 3);
        e.add(ErrorKind::Connect, 1);
        assert_eq!(e.to_string(), "connect 1, wrong-answer 3");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["total"], 4);
        assert_eq!(json["wrong-answer"], 3);
        assert_eq!(json["timeout"], 0);
    }
}
