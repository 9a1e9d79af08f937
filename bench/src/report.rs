//! The outcome of a run: counts, errors by kind, bytes, latency percentiles and histogram,
//! the server's CPU time, and their text and JSON forms. Figures in the JSON form are
//! rounded to 3 decimals ([`round3`]).
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

use super::workload::{Expect, Kind};

/// `x` rounded to 3 decimals: what the reports carry (`35.138`, not
/// `35.13847999999997`).
///
/// ```
/// assert_eq!(sockmsg_bench::report::round3(35.13847999999997), 35.138);
/// assert_eq!(serde_json::to_string(&sockmsg_bench::report::round3(0.1 + 0.2)).unwrap(), "0.3");
/// ```
pub fn round3(x: f64) -> f64 {
    if x.is_finite() && x.abs() < 1e15 {
        (x * 1000.0).round() / 1000.0
    } else {
        x
    }
}

/// The percentiles the text report lists (as wrk2 and oha do), besides min, mean and max.
pub const PERCENTILES: [f64; 7] = [50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 100.0];

/// Bars in the text report's latency histogram.
const HISTOGRAM_BARS: u64 = 10;

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

    /// The percentiles of what was recorded, in microseconds rounded to 3 decimals, or
    /// `None` if nothing was.
    pub fn summary(&self) -> Option<LatencySummary> {
        let h = self.hist.as_ref().filter(|h| !h.is_empty())?;
        let us = |ns: u64| round3(ns as f64 / 1000.0);
        let at = |q: f64| us(h.value_at_quantile(q));
        let percentiles = PERCENTILES
            .iter()
            .map(|&p| Percentile {
                percentile: p,
                us: at(p / 100.0),
            })
            .collect();
        // Bars of equal width on a log scale from min to max (latencies spread over
        // orders of magnitude); each recorded value counts in one bar.
        let (lo, hi) = (h.min().max(1), h.max().max(1));
        let ratio = (hi as f64 / lo as f64).powf(1.0 / HISTOGRAM_BARS as f64);
        let bound = |i: u64| -> u64 {
            if i >= HISTOGRAM_BARS {
                hi
            } else {
                ((lo as f64) * ratio.powi(i as i32)).round() as u64
            }
        };
        let bars = HISTOGRAM_BARS as usize;
        let mut counts = vec![0u64; bars];
        for v in h.iter_recorded() {
            let value = v.value_iterated_to().clamp(lo, hi);
            let bar = (0..HISTOGRAM_BARS)
                .rev()
                .find(|&i| value >= bound(i))
                .unwrap_or(0);
            if let Some(c) = usize::try_from(bar).ok().and_then(|b| counts.get_mut(b)) {
                *c += v.count_at_value();
            }
        }
        let histogram = if h.equivalent(lo, hi) {
            vec![Bar {
                from_us: us(lo),
                to_us: us(hi),
                count: h.len(),
            }]
        } else {
            counts
                .iter()
                .zip(0u64..)
                .map(|(&count, i)| Bar {
                    from_us: us(bound(i)),
                    to_us: us(bound(i + 1)),
                    count,
                })
                .collect()
        };
        Some(LatencySummary {
            min_us: us(h.min()),
            mean_us: round3(h.mean() / 1000.0),
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: us(h.max()),
            percentiles,
            histogram,
        })
    }
}

/// One line of the latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentile {
    /// The percentile, 0 to 100.
    pub percentile: f64,
    /// The latency at it, in microseconds.
    pub us: f64,
}

/// One bar of the latency histogram: answers whose latency was from `from_us` up to
/// `to_us` (the last bar includes its upper bound).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bar {
    /// Lower bound, in microseconds.
    pub from_us: f64,
    /// Upper bound (included), in microseconds.
    pub to_us: f64,
    /// Answers in the bar.
    pub count: u64,
}

/// Latency figures, in microseconds rounded to 3 decimals.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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
    /// The distribution at [`PERCENTILES`].
    pub percentiles: Vec<Percentile>,
    /// Bars of equal width on a log scale, from the fastest answer to the slowest.
    pub histogram: Vec<Bar>,
}

/// The server's CPU time over a run (`--server-pid`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServerCpu {
    /// The server's process id.
    pub pid: u32,
    /// User + system CPU seconds the process used during the run (all its threads).
    pub cpu_s: f64,
    /// `cpu_s` per right answer, in microseconds (`None` without right answers).
    pub us_per_request: Option<f64>,
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

/// TLS handshakes of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TlsHandshakes {
    /// Full handshakes (certificate, key exchange).
    pub full: u64,
    /// Resumed sessions (a ticket or session ID from an earlier connection).
    pub resumed: u64,
    /// Of all these handshakes, those that agreed on TLS 1.2 (the rest: TLS 1.3).
    pub tls12: u64,
}

/// The result of a run, as printed by `app-bench` (text or `--json`). Floating-point
/// figures are rounded to 3 decimals.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The server address.
    pub target: String,
    /// The kind of request.
    pub kind: Kind,
    /// What a framed answer had to be.
    pub expect: Expect,
    /// Keep-alive or one-shot.
    pub mode: Mode,
    /// Concurrent connections.
    pub connections: usize,
    /// Requests in flight per connection (keep-alive).
    pub pipeline: usize,
    /// Client threads.
    pub threads: usize,
    /// Fixed-rate mode: the intended requests/s over all connections; `None` when each
    /// connection sends its next request as soon as an answer frees room (closed loop).
    pub rate: Option<f64>,
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
    /// Requests still in flight when a timed run ended (or was interrupted or gave up):
    /// neither successes nor errors.
    pub abandoned: u64,
    /// Right answers per second of wall time.
    pub requests_per_s: f64,
    /// Bytes written to the server.
    pub sent_bytes: u64,
    /// Bytes read from the server.
    pub received_bytes: u64,
    /// Bytes written per second of wall time.
    pub sent_bytes_per_s: f64,
    /// Bytes read per second of wall time.
    pub received_bytes_per_s: f64,
    /// Latency of the right answers, `None` if there were none: from the request's
    /// queueing (after the connect for keep-alive, before it for one-shot) to the answer's
    /// last byte; in fixed-rate mode from the request's intended send time, so time spent
    /// waiting behind a slow server counts (no coordinated omission).
    pub latency: Option<LatencySummary>,
    /// The server's CPU time, when its process id was given.
    pub server_cpu: Option<ServerCpu>,
    /// TLS handshakes completed, full and resumed (`None`: plaintext).
    pub tls: Option<TlsHandshakes>,
    /// The first error seen, for a human to start from.
    pub first_error: Option<String>,
    /// Why the run gave up before its end (nothing answered for a while, or too many
    /// errors in a row), if it did.
    pub gave_up: Option<String>,
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
        let mb = |bytes: f64| format!("{:.1}", bytes / 1e6);
        let expect = match (self.kind, self.expect) {
            (Kind::Echo, _) | (_, Expect::Demo) => "",
            (_, Expect::Echo) => ", answered with themselves",
        };
        let _ = writeln!(
            s,
            "target:      {} ({} requests, {} bytes each{expect})",
            self.target, self.kind, self.request_bytes
        );
        let _ = writeln!(
            s,
            "mode:        {}, {} connections, pipeline {}, {} thread(s)",
            self.mode, self.connections, self.pipeline, self.threads
        );
        if let Some(rate) = self.rate {
            let _ = writeln!(
                s,
                "rate:        fixed, {rate} requests/s intended (latency from each request's \
                 intended send time)"
            );
        }
        let _ = writeln!(
            s,
            "requests:    {} in {:.2} s: {} ok, {} errors, {} abandoned at the end",
            self.requests,
            self.elapsed_s,
            self.ok,
            self.errors.total(),
            self.abandoned
        );
        let _ = writeln!(
            s,
            "throughput:  {:.1} requests/s; sent {} MB/s, received {} MB/s",
            self.requests_per_s,
            mb(self.sent_bytes_per_s),
            mb(self.received_bytes_per_s)
        );
        if let Some(tls) = &self.tls {
            let _ = writeln!(
                s,
                "TLS:         {} handshakes: {} full, {} resumed; {} TLS 1.3, {} TLS 1.2",
                tls.full + tls.resumed,
                tls.full,
                tls.resumed,
                (tls.full + tls.resumed).saturating_sub(tls.tls12),
                tls.tls12
            );
        }
        if let Some(cpu) = &self.server_cpu {
            let per = cpu.us_per_request.map_or_else(
                || "no answers".to_owned(),
                |us| format!("{us:.1} µs per request"),
            );
            let _ = writeln!(
                s,
                "server CPU:  {per} (process {}: {:.2} s user+system during the run)",
                cpu.pid, cpu.cpu_s
            );
        }
        match &self.latency {
            None => {
                let _ = writeln!(s, "latency:     no answers, no figures");
            }
            Some(l) => {
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
                let _ = writeln!(s, "latency distribution (ms):");
                for p in &l.percentiles {
                    let _ = writeln!(s, "  {:>8.3}%  {:>10}", p.percentile, ms(p.us));
                }
                let most = l
                    .histogram
                    .iter()
                    .map(|b| b.count)
                    .max()
                    .unwrap_or(0)
                    .max(1);
                let _ = writeln!(s, "latency histogram (ms, log scale):");
                for b in &l.histogram {
                    let bar = usize::try_from(b.count * 40 / most).unwrap_or(40);
                    let line = format!(
                        "  {:>10} .. {:<10} [{:>9}] {}",
                        ms(b.from_us),
                        ms(b.to_us),
                        b.count,
                        "■".repeat(if b.count > 0 { bar.max(1) } else { 0 })
                    );
                    let _ = writeln!(s, "{}", line.trim_end());
                }
            }
        }
        let _ = writeln!(s, "errors:      {}", self.errors);
        if let Some(e) = &self.first_error {
            let _ = writeln!(s, "first error: {e}");
        }
        if let Some(e) = &self.gave_up {
            let _ = writeln!(s, "gave up:     {e}");
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
        let s = a.summary().expect("latencies were recorded");
        assert!((s.min_us - 1.0).abs() < 0.01, "{s:?}");
        assert!((s.p50_us - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p90_us - 900.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() < 1.0, "{s:?}");
        assert_eq!(Latency::new().summary(), None);
        let lines: Vec<f64> = s.percentiles.iter().map(|p| p.percentile).collect();
        assert_eq!(lines, PERCENTILES);
        assert!((s.percentiles[1].us - 750.0).abs() < 1.0, "{s:?}");
        assert_eq!(s.percentiles[6].us, s.max_us);
        // Log-scale bars from 1 µs to 1 ms: each spans a factor of 10^0.3 (about 2), so
        // the uniform values 1..=1000 µs fill them in growing numbers, all counted once.
        assert_eq!(s.histogram.len(), 10, "{s:?}");
        assert_eq!(s.histogram.iter().map(|b| b.count).sum::<u64>(), 1000);
        assert!((s.histogram[0].from_us - 1.0).abs() < 0.01, "{s:?}");
        assert!((s.histogram[9].to_us - 1000.0).abs() < 1.0, "{s:?}");
        assert!(s.histogram[9].count > 450, "{s:?}");
        assert!(
            s.histogram.windows(2).all(|w| w[0].count <= w[1].count),
            "{s:?}"
        );
        let mut one = Latency::new();
        one.record(Duration::from_micros(7));
        let single = one.summary().expect("one latency");
        assert_eq!(single.histogram.len(), 1);
        assert_eq!(single.histogram[0].count, 1);
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
