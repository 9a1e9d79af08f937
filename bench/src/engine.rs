//! The load generator's engine: client connections driven directly on mio, independent of
//! this project's transports, so that it is equally fair to every server it measures.
//!
//! Each client thread runs one mio event loop over its share of the connections. A
//! connection keeps up to `pipeline` requests in flight (keep-alive), or carries exactly one
//! request (one-shot: connect, request, answer, close). Framed answers go through the
//! sans-IO [`Connection`] and are checked against the [`Workload`]'s expected answer; echo
//! answers are compared byte for byte with what was sent. Every request ends as exactly one
//! of: a right answer, an error of some [`ErrorKind`], or abandoned when a run ends early
//! (timed run over, stopped, or given up).
//!
//! **Closed loop or fixed rate.** By default a connection sends its next request as soon
//! as an answer frees room, and a request's latency runs from when it was queued. With
//! [`Config::rate`] the run sends that many requests per second over all connections on a
//! fixed schedule (each connection `rate / connections`, staggered), and a request's
//! latency runs from its **intended** send time: a server that falls behind is charged the
//! time requests waited for it, as wrk2 measures (no coordinated omission).
//!
//! **Large messages cost the same per byte as small ones.** Requests are written straight
//! from the workload's one copy (vectored writes, nothing copied per request), echoed bytes
//! are compared as they arrive (nothing kept), and framed answers are received through the
//! decoder's `read_buf`/`commit` pair, which lends a large content's own buffer to `recv`.
//!
//! **Giving up.** A run whose requests all fail stops by itself: when nothing has been
//! answered right for [`Config::give_up_after`] while errors came, or after
//! [`Config::max_errors`] errors in a row; [`Report::gave_up`] says why.
//!
//! ```no_run
//! use std::time::Duration;
//! use sockmsg_bench::engine::{run, Config, Control, Limit};
//! use sockmsg_bench::workload::{Kind, Workload};
//!
//! let config = Config {
//!     limit: Limit::Duration(Duration::from_secs(5)),
//!     rate: Some(1000.0),
//!     ..Config::new("127.0.0.1:65432".parse()?, Workload::new(Kind::Json, None, None)?)
//! };
//! let report = run(&config, &Control::new(), |p| eprintln!("{} ok", p.ok))?;
//! println!("{}", report.to_text());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, ProtocolVersion};
use sockmsg_protocol::{Connection, Event, Limits, Role};

use super::cpu::process_cpu_time;
use super::report::{
    round3, ErrorCounts, ErrorKind, Latency, Mode, Report, ServerCpu, TlsHandshakes,
};
use super::workload::{Kind, Mismatch, Workload};

/// Size of the per-thread receive buffer for unframed echo answers.
const READ_BUF: usize = 256 * 1024;
/// Size of the decoder's staging buffer for framed answers (a content with at least this
/// much left is received straight into its own buffer).
const DECODER_READ_BUF: usize = 64 * 1024;
/// Pause before reconnecting after a failed connect.
const CONNECT_RETRY: Duration = Duration::from_millis(10);
/// Longest wait in the event loop between checks of deadlines and timeouts.
const TICK: Duration = Duration::from_millis(50);
/// How often the calling thread checks whether the run should give up.
const WATCH: Duration = Duration::from_millis(100);
/// Most requests handed to one vectored write.
const MAX_WRITE_REQUESTS: usize = 64;
/// Smallest [`Config::rate`]: one request every 1,000 s.
pub const MIN_RATE: f64 = 0.001;
/// Largest [`Config::rate`].
pub const MAX_RATE: f64 = 1e9;
/// Default of [`Config::give_up_after`].
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(5);

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// After this many requests in all (each answered, failed, or abandoned by a stop).
    Requests(u64),
    /// After this long; requests still in flight then are abandoned.
    Duration(Duration),
}

/// Everything a run needs. [`Config::new`] gives the defaults of `app-bench`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server.
    pub addr: SocketAddr,
    /// Concurrent connections (at least 1).
    pub connections: usize,
    /// When to stop.
    pub limit: Limit,
    /// Keep-alive or one-shot.
    pub mode: Mode,
    /// Requests in flight per connection (at least 1; exactly 1 for one-shot).
    pub pipeline: usize,
    /// Client threads, each with its own event loop (at least 1, at most `connections`).
    pub threads: usize,
    /// A request with no answer this long after it was queued fails with
    /// [`ErrorKind::Timeout`] and its connection is closed (for one-shot, the connect
    /// counts too).
    pub timeout: Duration,
    /// What to send and expect.
    pub workload: Workload,
    /// Fixed-rate mode: requests per second over all connections, latency measured from
    /// each request's intended send time. `None`: closed loop.
    pub rate: Option<f64>,
    /// Give up after this many errors in a row (no right answer between them).
    pub max_errors: Option<u64>,
    /// Give up when nothing was answered right for this long while errors came.
    pub give_up_after: Duration,
    /// Measure this local process's CPU time over the run (Linux `/proc`).
    pub server_pid: Option<u32>,
    /// Speak TLS (rustls) over every connection; `None`: plaintext.
    pub tls: Option<Tls>,
}

/// TLS for a run: one rustls client configuration shared by every connection, so that with
/// resumption on (the configuration's session cache) a one-shot connection after the first
/// resumes its TLS session instead of paying a full handshake.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The rustls client configuration (CA, resumption...).
    pub config: Arc<ClientConfig>,
    /// The name the server's certificate must be valid for.
    pub server_name: ServerName<'static>,
}

impl Config {
    /// `app-bench`'s defaults for `workload` against `addr`: 8 keep-alive connections,
    /// pipeline 1, one thread, 100,000 requests, 10 s timeout, closed loop, giving up
    /// after 5 s without a right answer.
    pub fn new(addr: SocketAddr, workload: Workload) -> Config {
        Config {
            addr,
            connections: 8,
            limit: Limit::Requests(100_000),
            mode: Mode::KeepAlive,
            pipeline: 1,
            threads: 1,
            timeout: Duration::from_secs(10),
            workload,
            rate: None,
            max_errors: None,
            give_up_after: DEFAULT_GIVE_UP_AFTER,
            server_pid: None,
            tls: None,
        }
    }

    /// Checks the numbers: `Err` says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("at least one connection is needed".into());
        }
        if self.pipeline == 0 {
            return Err("the pipelining depth must be at least 1".into());
        }
        if self.mode == Mode::OneShot && self.pipeline != 1 {
            return Err(
                "one-shot connections carry one request: pipelining needs keep-alive".into(),
            );
        }
        if self.threads == 0 {
            return Err("at least one thread is needed".into());
        }
        if self.timeout.is_zero() {
            return Err("the timeout must be positive".into());
        }
        if self.give_up_after.is_zero() {
            return Err("the time to give up after must be positive".into());
        }
        if self.max_errors == Some(0) {
            return Err("the number of errors in a row to give up after must be at least 1".into());
        }
        if let Some(rate) = self.rate {
            if !(MIN_RATE..=MAX_RATE).contains(&rate) {
                return Err(format!(
                    "the rate must be from {MIN_RATE} to {MAX_RATE} requests/s, not {rate}"
                ));
            }
        }
        match self.limit {
            Limit::Requests(0) => Err("at least one request is needed".into()),
            Limit::Duration(d) if d.is_zero() => Err("the duration must be positive".into()),
            _ => Ok(()),
        }
    }

    /// Time between two requests of one connection in fixed-rate mode.
    fn interval(&self) -> Option<Duration> {
        let rate = self.rate?;
        Duration::try_from_secs_f64(self.connections as f64 / rate).ok()
    }
}

/// Why a run gave up: `what` failed (naming the server), `why` (the last error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GaveUp {
    /// What failed, naming the server: `no answer from 127.0.0.1:9 in 5 s`.
    pub what: String,
    /// The last error seen.
    pub why: String,
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.why)
    }
}

/// Shared with a running benchmark: live counts for progress, and a way to stop it early
/// (requests in flight are then abandoned, and the report covers what was done).
#[derive(Debug, Clone, Default)]
pub struct Control {
    inner: Arc<ControlInner>,
}

#[derive(Debug, Default)]
struct ControlInner {
    stop: AtomicBool,
    ok: AtomicU64,
    errors: AtomicU64,
    /// Errors since the last right answer.
    in_a_row: AtomicU64,
    last_error: Mutex<Option<String>>,
    gave_up: Mutex<Option<GaveUp>>,
}

impl Control {
    /// A fresh control.
    pub fn new() -> Control {
        Control::default()
    }

    /// Asks the run to stop as soon as possible.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
    }

    /// `true` once [`Control::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.inner.stop.load(Ordering::Relaxed)
    }

    /// Why the run gave up, if it did.
    pub fn gave_up(&self) -> Option<GaveUp> {
        self.inner.gave_up.lock().ok().and_then(|g| g.clone())
    }

    fn last_error(&self) -> String {
        self.inner
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "no error recorded".to_owned())
    }

    /// Gives up (the first reason given is kept) and stops the run.
    fn give_up(&self, what: String) {
        let why = self.last_error();
        if let Ok(mut g) = self.inner.gave_up.lock() {
            g.get_or_insert(GaveUp { what, why });
        }
        self.stop();
    }
}

/// A progress snapshot, handed to the callback of [`run`] about once a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Time since the run started.
    pub elapsed: Duration,
    /// Right answers so far.
    pub ok: u64,
    /// Errors so far.
    pub errors: u64,
}

/// State shared by the client threads of one run.
struct Shared<'a> {
    control: &'a Control,
    limit: Limit,
    started: Instant,
    deadline: Option<Instant>,
    issued: AtomicU64,
    /// Fixed-rate mode: time between two requests of one connection.
    interval: Option<Duration>,
}

impl Shared<'_> {
    /// A sequence number for one more request, or `None` when the run issues no more.
    fn claim(&self) -> Option<u64> {
        if self.control.is_stopped() {
            return None;
        }
        match self.limit {
            Limit::Requests(n) => {
                let seq = self.issued.fetch_add(1, Ordering::Relaxed);
                (seq < n).then_some(seq)
            }
            Limit::Duration(_) => match self.deadline {
                Some(d) if Instant::now() < d => Some(self.issued.fetch_add(1, Ordering::Relaxed)),
                _ => None,
            },
        }
    }

    /// `true` when requests in flight must be abandoned.
    fn over(&self, now: Instant) -> bool {
        self.control.is_stopped() || self.deadline.is_some_and(|d| now >= d)
    }
}

/// What one client thread did.
#[derive(Debug, Default)]
struct Outcome {
    ok: u64,
    errors: ErrorCounts,
    abandoned: u64,
    latency: Latency,
    first_error: Option<String>,
    sent_bytes: u64,
    received_bytes: u64,
    handshakes: TlsHandshakes,
}

/// Runs the benchmark described by `config`, calling `progress` about once a second from
/// the calling thread, and returns the report once every request is accounted for.
///
/// `Err` only for an invalid configuration (`InvalidInput`), when an event loop cannot be
/// created, or when the server's CPU time cannot be read; network failures are counted in
/// the report, never returned.
pub fn run(
    config: &Config,
    control: &Control,
    mut progress: impl FnMut(&Progress),
) -> io::Result<Report> {
    config
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let threads = config.threads.min(config.connections);
    let cpu_before = config.server_pid.map(process_cpu_time).transpose()?;
    let started = Instant::now();
    let shared = Shared {
        control,
        limit: config.limit,
        started,
        deadline: match config.limit {
            Limit::Duration(d) => Some(started + d),
            Limit::Requests(_) => None,
        },
        issued: AtomicU64::new(0),
        interval: config.interval(),
    };
    let mut total = Outcome::default();
    let mut failure = None;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        for t in 0..threads {
            let tx = tx.clone();
            let shared = &shared;
            let indexes: Vec<usize> = (t..config.connections).step_by(threads).collect();
            scope.spawn(move || {
                let _ = tx.send(worker(config, shared, &indexes));
            });
        }
        drop(tx);
        let mut next_tick = started + Duration::from_secs(1);
        let mut watch = Watch::new(started);
        let mut done = 0;
        while done < threads {
            let now = Instant::now();
            let wait = next_tick.min(now + WATCH).saturating_duration_since(now);
            match rx.recv_timeout(wait) {
                Ok(Ok(outcome)) => {
                    done += 1;
                    total.ok += outcome.ok;
                    total.errors.merge(&outcome.errors);
                    total.abandoned += outcome.abandoned;
                    total.latency.merge(&outcome.latency);
                    total.sent_bytes += outcome.sent_bytes;
                    total.received_bytes += outcome.received_bytes;
                    total.handshakes.full += outcome.handshakes.full;
                    total.handshakes.resumed += outcome.handshakes.resumed;
                    total.handshakes.tls12 += outcome.handshakes.tls12;
                    if total.first_error.is_none() {
                        total.first_error = outcome.first_error;
                    }
                }
                Ok(Err(e)) => {
                    done += 1;
                    control.stop();
                    failure = Some(e);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    watch.check(config, control, now);
                    if now >= next_tick {
                        progress(&Progress {
                            elapsed: started.elapsed(),
                            ok: control.inner.ok.load(Ordering::Relaxed),
                            errors: control.inner.errors.load(Ordering::Relaxed),
                        });
                        next_tick += Duration::from_secs(1);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = match (config.server_pid, cpu_before) {
        (Some(pid), Some(before)) => {
            let cpu = process_cpu_time(pid)?.saturating_sub(before).as_secs_f64();
            Some(ServerCpu {
                pid,
                cpu_s: round3(cpu),
                us_per_request: (total.ok > 0).then(|| round3(cpu * 1e6 / total.ok as f64)),
            })
        }
        _ => None,
    };
    let per_s = |n: u64| {
        if elapsed > 0.0 {
            round3(n as f64 / elapsed)
        } else {
            0.0
        }
    };
    Ok(Report {
        target: config.addr.to_string(),
        kind: config.workload.kind(),
        expect: config.workload.expect(),
        mode: config.mode,
        connections: config.connections,
        pipeline: config.pipeline,
        threads,
        rate: config.rate.map(round3),
        request_bytes: config.workload.request_len(),
        elapsed_s: round3(elapsed),
        requests: total.ok + total.errors.total() + total.abandoned,
        ok: total.ok,
        requests_per_s: per_s(total.ok),
        sent_bytes: total.sent_bytes,
        received_bytes: total.received_bytes,
        sent_bytes_per_s: per_s(total.sent_bytes),
        received_bytes_per_s: per_s(total.received_bytes),
        latency: total.latency.summary(),
        server_cpu,
        tls: config.tls.is_some().then_some(total.handshakes),
        errors: total.errors,
        abandoned: total.abandoned,
        first_error: total.first_error,
        gave_up: control.gave_up().map(|g| g.to_string()),
    })
}

/// Watches a run from the calling thread: gives up when nothing was answered right for
/// [`Config::give_up_after`] while errors came.
struct Watch {
    ok: u64,
    errors: u64,
    since: Instant,
}

impl Watch {
    fn new(started: Instant) -> Watch {
        Watch {
            ok: 0,
            errors: 0,
            since: started,
        }
    }

    fn check(&mut self, config: &Config, control: &Control, now: Instant) {
        let ok = control.inner.ok.load(Ordering::Relaxed);
        let errors = control.inner.errors.load(Ordering::Relaxed);
        if ok != self.ok {
            *self = Watch {
                ok,
                errors,
                since: now,
            };
        } else if errors > self.errors
            && now.saturating_duration_since(self.since) >= config.give_up_after
        {
            // The first error may come long after the last answer (a timeout): say how
            // long it really was then.
            let waited = now.saturating_duration_since(self.since);
            let secs = if waited < config.give_up_after + Duration::from_secs(1) {
                round3(config.give_up_after.as_secs_f64())
            } else {
                waited.as_secs_f64().round()
            };
            control.give_up(format!("no answer from {} in {secs} s", config.addr));
        }
    }
}

/// What a client thread works with besides its connections.
struct Cx<'a, 'b> {
    registry: &'a Registry,
    config: &'a Config,
    shared: &'a Shared<'b>,
    outcome: &'a mut Outcome,
}

impl Cx<'_, '_> {
    fn count_ok(&mut self, latency: Duration) {
        self.outcome.ok += 1;
        self.outcome.latency.record(latency);
        let inner = &self.shared.control.inner;
        inner.ok.fetch_add(1, Ordering::Relaxed);
        if inner.in_a_row.load(Ordering::Relaxed) != 0 {
            inner.in_a_row.store(0, Ordering::Relaxed);
        }
    }

    fn count_errors(&mut self, kind: ErrorKind, n: u64, detail: &str) {
        if n == 0 {
            return;
        }
        self.outcome.errors.add(kind, n);
        let control = self.shared.control;
        control.inner.errors.fetch_add(n, Ordering::Relaxed);
        let message = format!("{kind}: {detail}");
        if let Ok(mut last) = control.inner.last_error.lock() {
            *last = Some(message.clone());
        }
        if self.outcome.first_error.is_none() {
            self.outcome.first_error = Some(message);
        }
        let in_a_row = control.inner.in_a_row.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(max) = self.config.max_errors {
            if in_a_row >= max {
                control.give_up(format!(
                    "{in_a_row} errors in a row from {} (--max-errors {max})",
                    self.config.addr
                ));
            }
        }
    }
}

fn worker(config: &Config, shared: &Shared<'_>, indexes: &[usize]) -> io::Result<Outcome> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![
        0u8;
        if config.workload.kind() == Kind::Echo {
            READ_BUF
        } else {
            0
        }
    ];
    let mut outcome = Outcome::default();
    let mut clients: Vec<Client> = indexes
        .iter()
        .enumerate()
        .map(|(slot, &index)| Client::new(Token(slot), config, shared, index))
        .collect();
    let now = Instant::now();
    {
        let mut cx = Cx {
            registry: poll.registry(),
            config,
            shared,
            outcome: &mut outcome,
        };
        for c in &mut clients {
            c.begin(&mut cx, now);
        }
    }
    let mut next_scan = now + TICK;
    loop {
        if clients.iter().all(|c| c.done) {
            break;
        }
        let now = Instant::now();
        if shared.over(now) {
            for c in &mut clients {
                outcome.abandoned += c.inflight.len() as u64;
                c.inflight.clear();
                c.close(poll.registry());
            }
            break;
        }
        let wake = clients.iter().filter_map(|c| c.wake_at(config)).min();
        let mut until = next_scan;
        if let Some(w) = wake {
            until = until.min(w);
        }
        if let Some(d) = shared.deadline {
            until = until.min(d);
        }
        match poll.poll(&mut events, Some(until.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let mut cx = Cx {
            registry: poll.registry(),
            config,
            shared,
            outcome: &mut outcome,
        };
        for event in events.iter() {
            if let Some(c) = clients.get_mut(event.token().0) {
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                c.on_event(&mut cx, &mut buf, readable);
            }
        }
        let now = Instant::now();
        if wake.is_some_and(|w| w <= now) || now >= next_scan {
            for c in &mut clients {
                c.scan(&mut cx, now);
            }
            next_scan = now + TICK;
        }
    }
    Ok(outcome)
}

/// How a nonblocking connect is going.
enum ConnectState {
    Pending,
    Connected,
    Failed(io::Error),
}

/// A request sent or being sent, waiting for its answer.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// Latency runs from here: when it was queued (closed loop, or once the connection is
    /// up for keep-alive), or its scheduled time (fixed rate).
    intended: Instant,
    /// The timeout runs from here.
    queued: Instant,
    /// Its sequence number, little-endian: the first bytes of an echo request.
    stamp: [u8; 8],
}

/// A request not yet entirely written: `off` bytes of it are.
#[derive(Debug, Clone, Copy)]
struct Outgoing {
    stamp: [u8; 8],
    off: usize,
}

/// One client connection and the requests it carries.
struct Client {
    token: Token,
    stream: Option<TcpStream>,
    /// TLS over the stream (with [`Config::tls`]): requests are written into it, answers
    /// read out of it.
    tls: Option<ClientConnection>,
    /// The TLS handshake of this connection was counted.
    handshake_counted: bool,
    /// The socket ended (TLS: the plaintext before the end is taken first).
    socket_eof: bool,
    connected: bool,
    connect_started: Instant,
    /// Requests still to write, oldest first (written straight from the workload).
    out: VecDeque<Outgoing>,
    /// Framed answers: the protocol machine's one way in.
    decoder: Connection,
    /// Echo answers: bytes of the oldest request's answer received so far.
    partial: usize,
    /// Requests in flight, oldest first.
    inflight: VecDeque<InFlight>,
    /// Fixed rate: the scheduled time of this connection's next request.
    due: Option<Instant>,
    /// The run issues no more requests.
    exhausted: bool,
    /// Not connected: start again at this time.
    retry_at: Option<Instant>,
    done: bool,
}

/// The decoder for framed answers. It does not validate JSON content: every answer is
/// compared with the expected bytes, and only one that differs is parsed (by serde, for an
/// equal value), so the check would only slow the load generator down.
fn answer_decoder() -> Connection {
    Connection::new(
        Role::Client,
        Limits {
            check_json_content: false,
            ..Limits::default()
        },
    )
    .with_read_buf_size(DECODER_READ_BUF)
}

impl Client {
    /// Connection number `index` of the run (the fixed-rate schedule is staggered by it).
    fn new(token: Token, config: &Config, shared: &Shared<'_>, index: usize) -> Client {
        let due = shared.interval.map(|interval| {
            shared.started + interval.mul_f64(index as f64 / config.connections as f64)
        });
        Client {
            token,
            stream: None,
            tls: None,
            handshake_counted: false,
            socket_eof: false,
            connected: false,
            connect_started: shared.started,
            out: VecDeque::new(),
            decoder: answer_decoder(),
            partial: 0,
            inflight: VecDeque::new(),
            due,
            exhausted: false,
            retry_at: None,
            done: false,
        }
    }

    fn room(config: &Config) -> usize {
        match config.mode {
            Mode::KeepAlive => config.pipeline,
            Mode::OneShot => 1,
        }
    }

    /// When the event loop must wake for this connection, besides its socket's events.
    fn wake_at(&self, config: &Config) -> Option<Instant> {
        if self.done {
            return None;
        }
        if self.stream.is_none() {
            return self.retry_at;
        }
        match self.due {
            Some(due)
                if self.connected
                    && !self.exhausted
                    && self.inflight.len() < Self::room(config) =>
            {
                Some(due)
            }
            _ => None,
        }
    }

    /// Queues the requests that may go now: up to the room the connection has, and in
    /// fixed-rate mode only those whose time has come (each with its scheduled time).
    fn fill(&mut self, cx: &mut Cx<'_, '_>, now: Instant) {
        let room = Self::room(cx.config);
        while self.inflight.len() < room && !self.exhausted {
            let intended = match self.due {
                Some(due) if due > now => return,
                Some(due) => due,
                None => now,
            };
            let Some(seq) = cx.shared.claim() else {
                self.exhausted = true;
                return;
            };
            let stamp = seq.to_le_bytes();
            self.inflight.push_back(InFlight {
                intended,
                queued: now,
                stamp,
            });
            self.out.push_back(Outgoing { stamp, off: 0 });
            if let (Some(due), Some(interval)) = (&mut self.due, cx.shared.interval) {
                *due += interval;
            }
        }
    }

    /// Claims requests and opens a connection for them; `done` if there is nothing left.
    fn begin(&mut self, cx: &mut Cx<'_, '_>, now: Instant) {
        self.retry_at = None;
        if cx.config.mode == Mode::OneShot && !self.exhausted {
            if let Some(due) = self.due.filter(|&due| due > now) {
                // Fixed rate: a one-shot connection opens when its request is due.
                self.retry_at = Some(due);
                return;
            }
        }
        self.fill(cx, now);
        // A fixed-rate keep-alive connection opens at once and waits for its schedule.
        if self.inflight.is_empty() && (self.exhausted || self.due.is_none()) {
            self.done = true;
            return;
        }
        self.connect_started = now;
        if let Some(tls) = &cx.config.tls {
            match ClientConnection::new(tls.config.clone(), tls.server_name.clone()) {
                Ok(conn) => self.tls = Some(conn),
                Err(e) => return self.fail(cx, ErrorKind::Connect, &format!("TLS: {e}"), now),
            }
            self.handshake_counted = false;
        }
        match TcpStream::connect(cx.config.addr) {
            Ok(mut stream) => {
                match cx.registry.register(
                    &mut stream,
                    self.token,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    Ok(()) => self.stream = Some(stream),
                    Err(e) => self.fail(cx, ErrorKind::Connect, &e.to_string(), now),
                }
            }
            Err(e) => self.fail(cx, ErrorKind::Connect, &e.to_string(), now),
        }
    }

    fn connect_state(&self) -> ConnectState {
        let Some(stream) = &self.stream else {
            return ConnectState::Pending;
        };
        match stream.take_error() {
            Ok(Some(e)) | Err(e) => return ConnectState::Failed(e),
            Ok(None) => {}
        }
        match stream.peer_addr() {
            Ok(_) => ConnectState::Connected,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => ConnectState::Pending,
            Err(e) => ConnectState::Failed(e),
        }
    }

    fn on_event(&mut self, cx: &mut Cx<'_, '_>, buf: &mut [u8], readable: bool) {
        if self.stream.is_none() {
            return;
        }
        // Fresh times throughout: earlier events of the same batch may have taken a while.
        let now = Instant::now();
        let mut read = readable;
        if !self.connected {
            match self.connect_state() {
                ConnectState::Pending => return,
                ConnectState::Failed(e) => {
                    self.fail(cx, ErrorKind::Connect, &e.to_string(), now);
                    return self.restart_now(cx, now);
                }
                ConnectState::Connected => {
                    self.connected = true;
                    if let Some(s) = &self.stream {
                        let _ = s.set_nodelay(true);
                    }
                    let closed_loop = self.due.is_none();
                    if cx.config.mode == Mode::KeepAlive {
                        for r in &mut self.inflight {
                            r.queued = now;
                            if closed_loop {
                                // Closed-loop keep-alive latency starts once the
                                // connection is up.
                                r.intended = now;
                            }
                        }
                    }
                    self.fill(cx, now);
                    read = true;
                }
            }
        }
        if self.flush(cx, now) && read {
            self.read(cx, buf);
        }
        self.restart_now(cx, Instant::now());
    }

    /// Starts the next connection at once if one is due.
    fn restart_now(&mut self, cx: &mut Cx<'_, '_>, now: Instant) {
        if self.stream.is_none() && !self.done && self.retry_at.is_some_and(|t| t <= now) {
            self.begin(cx, now);
        }
    }

    /// Timeouts, delayed restarts, and fixed-rate requests whose time has come.
    fn scan(&mut self, cx: &mut Cx<'_, '_>, now: Instant) {
        if self.stream.is_some() {
            let oldest = if self.connected {
                self.inflight.front().map(|r| r.queued)
            } else {
                Some(self.connect_started)
            };
            if oldest.is_some_and(|t| now.saturating_duration_since(t) >= cx.config.timeout) {
                let what = if self.connected {
                    "no answer"
                } else {
                    "no connection"
                };
                let detail = format!("{what} within {:?}", cx.config.timeout);
                self.fail(cx, ErrorKind::Timeout, &detail, now);
            }
        }
        self.restart_now(cx, now);
        if self.due.is_some() && self.connected && !self.done {
            let before = self.inflight.len();
            self.fill(cx, now);
            if self.inflight.len() > before {
                self.flush(cx, now);
            } else if self.inflight.is_empty() && self.exhausted {
                self.close(cx.registry);
                self.done = true;
            }
        }
    }

    /// Writes what is pending, straight from the workload's request bytes (into TLS, then
    /// its records to the socket, with [`Config::tls`]); `false` if the connection failed.
    fn flush(&mut self, cx: &mut Cx<'_, '_>, now: Instant) -> bool {
        let template = cx.config.workload.request();
        let stamp_len = cx.config.workload.stamp_len();
        while !self.out.is_empty() {
            let Some(stream) = &mut self.stream else {
                return false;
            };
            // Plaintext goes into rustls, which takes it until its buffer is full (before
            // the handshake completes, too); its records go out below.
            let sink: &mut dyn Write = match &mut self.tls {
                Some(tls) => &mut TlsWriter(tls),
                None => stream,
            };
            let result = match self.out.front() {
                // One request (or the tail of one) past its stamp: a plain write.
                Some(o) if self.out.len() == 1 && o.off >= stamp_len => {
                    sink.write(template.get(o.off..).unwrap_or_default())
                }
                _ => {
                    let mut slices = Vec::with_capacity(2 * self.out.len().min(MAX_WRITE_REQUESTS));
                    for o in self.out.iter().take(MAX_WRITE_REQUESTS) {
                        if o.off < stamp_len {
                            slices.push(IoSlice::new(
                                o.stamp.get(o.off..stamp_len).unwrap_or_default(),
                            ));
                        }
                        slices.push(IoSlice::new(
                            template.get(o.off.max(stamp_len)..).unwrap_or_default(),
                        ));
                    }
                    sink.write_vectored(&slices)
                }
            };
            match result {
                Ok(0) if self.tls.is_some() => {
                    // rustls's buffer is full: its records to the socket, then more
                    // plaintext if that made room (no writable event comes unless the
                    // socket itself fills up).
                    if !self.flush_tls(cx, now) {
                        return false;
                    }
                    match &self.tls {
                        Some(tls) if !tls.wants_write() && !tls.is_handshaking() => {}
                        _ => break,
                    }
                }
                Ok(0) => {
                    self.fail(cx, ErrorKind::Io, "the socket accepted no bytes", now);
                    return false;
                }
                Ok(n) => {
                    cx.outcome.sent_bytes += n as u64;
                    let mut n = n;
                    while let Some(o) = self.out.front_mut() {
                        let left = template.len() - o.off;
                        if n >= left {
                            n -= left;
                            self.out.pop_front();
                        } else {
                            o.off += n;
                            break;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(cx, ErrorKind::Io, &format!("write: {e}"), now);
                    return false;
                }
            }
        }
        self.flush_tls(cx, now)
    }

    /// Writes TLS records until the socket takes no more; `false` if the connection failed.
    fn flush_tls(&mut self, cx: &mut Cx<'_, '_>, now: Instant) -> bool {
        let (Some(tls), Some(stream)) = (&mut self.tls, &mut self.stream) else {
            return true;
        };
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let kind = if self.connected {
                        ErrorKind::Io
                    } else {
                        ErrorKind::Connect
                    };
                    self.fail(cx, kind, &format!("write: {e}"), now);
                    return false;
                }
            }
        }
        true
    }

    /// Reads until the socket has nothing more, handling answers as they complete, then
    /// sends the requests that replace them.
    fn read(&mut self, cx: &mut Cx<'_, '_>, buf: &mut [u8]) {
        let echo = cx.config.workload.kind() == Kind::Echo;
        loop {
            if self.tls.is_some() {
                match self.read_tls(cx, buf) {
                    Some(true) => continue,
                    Some(false) => return,
                    None => {}
                }
            }
            let Some(stream) = &mut self.stream else {
                return;
            };
            // Framed answers go straight into the decoder (a large content into its own
            // buffer); echoed bytes into the thread's buffer, to be compared and dropped.
            let result = match &mut self.tls {
                Some(tls) => tls.read_tls(stream),
                None if echo => stream.read(buf),
                None => stream.read(self.decoder.read_buf()),
            };
            // The answers in this chunk arrived now (not when the event loop woke up).
            let now = Instant::now();
            let n = match result {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // New requests go out only once everything received is handled: sent
                    // earlier, a fast server's answer would keep this loop on this one
                    // connection while the others' answers wait.
                    self.flush(cx, now);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let kind = if self.connected {
                        ErrorKind::Io
                    } else {
                        ErrorKind::Connect
                    };
                    return self.fail(cx, kind, &format!("read: {e}"), now);
                }
            };
            if n == 0 {
                if self.tls.is_some() {
                    // The plaintext before the end first, then the end (read_tls).
                    self.socket_eof = true;
                    continue;
                }
                return self.on_eof(cx, now);
            }
            if self.tls.is_some() {
                if let Some(tls) = &mut self.tls {
                    if let Err(e) = tls.process_new_packets() {
                        let kind = if self.connected && !tls.is_handshaking() {
                            ErrorKind::Protocol
                        } else {
                            ErrorKind::Connect
                        };
                        let _ = tls.write_tls(&mut io::sink());
                        return self.fail(cx, kind, &format!("TLS: {e}"), now);
                    }
                }
                if !self.flush_tls(cx, now) {
                    return;
                }
                continue; // the plaintext, if any, at the top of the loop
            }
            cx.outcome.received_bytes += n as u64;
            let going = if echo {
                self.feed_echo(cx, buf.get(..n).unwrap_or_default(), now)
            } else {
                self.feed_framed(cx, n, now)
            };
            if !going {
                return;
            }
        }
    }

    /// Takes the plaintext rustls decrypted: `Some(true)` if some was handled (read on),
    /// `Some(false)` once this connection is gone or ended, `None` when rustls has none
    /// (read the socket).
    fn read_tls(&mut self, cx: &mut Cx<'_, '_>, buf: &mut [u8]) -> Option<bool> {
        let echo = cx.config.workload.kind() == Kind::Echo;
        let now = Instant::now();
        let tls = self.tls.as_mut()?;
        if !self.handshake_counted && !tls.is_handshaking() {
            self.handshake_counted = true;
            match tls.handshake_kind() {
                Some(HandshakeKind::Resumed) => cx.outcome.handshakes.resumed += 1,
                _ => cx.outcome.handshakes.full += 1,
            }
            if tls.protocol_version() == Some(ProtocolVersion::TLSv1_2) {
                cx.outcome.handshakes.tls12 += 1;
            }
        }
        let into: &mut [u8] = if echo { buf } else { self.decoder.read_buf() };
        let result = tls.reader().read(into);
        match result {
            Ok(0) => {
                // close_notify: the server ended the connection cleanly.
                self.on_eof(cx, now);
                Some(false)
            }
            Ok(n) => {
                cx.outcome.received_bytes += n as u64;
                let going = if echo {
                    self.feed_echo(cx, buf.get(..n).unwrap_or_default(), now)
                } else {
                    self.feed_framed(cx, n, now)
                };
                Some(going)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.socket_eof => {
                // The socket ended without close_notify: an end all the same.
                self.on_eof(cx, now);
                Some(false)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(_) => {
                // Unexpected end (no close_notify) after the plaintext was taken.
                self.on_eof(cx, now);
                Some(false)
            }
        }
    }

    /// Checks echoed bytes against the requests in flight; `false` once this connection is
    /// gone.
    fn feed_echo(&mut self, cx: &mut Cx<'_, '_>, mut data: &[u8], now: Instant) -> bool {
        let template = cx.config.workload.request();
        let stamp_len = cx.config.workload.stamp_len();
        while !data.is_empty() {
            let Some(front) = self.inflight.front() else {
                self.fail_unsolicited(cx, "more bytes echoed than were sent", now);
                return false;
            };
            let take = (template.len() - self.partial).min(data.len());
            let (chunk, rest) = data.split_at(take);
            let stamp = front.stamp.get(..stamp_len).unwrap_or_default();
            if let Some(at) = first_difference(stamp, template, self.partial, chunk) {
                let detail = format!(
                    "echoed bytes differ at byte {} of an answer",
                    self.partial + at
                );
                self.fail(cx, ErrorKind::WrongAnswer, &detail, now);
                return false;
            }
            self.partial += take;
            data = rest;
            if self.partial == template.len() {
                self.partial = 0;
                if !self.complete(cx, Ok(()), now) {
                    return false;
                }
            }
        }
        true
    }

    /// Commits `n` bytes received into the decoder and handles the answers they complete;
    /// `false` once this connection is gone.
    fn feed_framed(&mut self, cx: &mut Cx<'_, '_>, n: usize, now: Instant) -> bool {
        if let Err(e) = self.decoder.commit(n, now) {
            self.fail(cx, ErrorKind::Protocol, &format!("{e} ({})", e.kind()), now);
            return false;
        }
        loop {
            match self.decoder.next_event() {
                Ok(Event::Message(answer)) => {
                    if self.inflight.is_empty() {
                        self.fail_unsolicited(cx, "an answer no request asked for", now);
                        return false;
                    }
                    let verdict = cx.config.workload.check(&answer);
                    if !self.complete(cx, verdict, now) {
                        return false;
                    }
                }
                Ok(Event::NeedData | Event::End) => return true,
                Err(e) => {
                    let detail = format!("{} ({})", e, e.kind());
                    self.fail(cx, ErrorKind::Protocol, &detail, now);
                    return false;
                }
            }
        }
    }

    /// One answer arrived for the oldest request; `false` once this connection is gone.
    fn complete(
        &mut self,
        cx: &mut Cx<'_, '_>,
        verdict: Result<(), Mismatch>,
        now: Instant,
    ) -> bool {
        let Some(request) = self.inflight.pop_front() else {
            self.fail_unsolicited(cx, "an answer no request asked for", now);
            return false;
        };
        match verdict {
            Ok(()) => cx.count_ok(now.saturating_duration_since(request.intended)),
            Err(m) => cx.count_errors(ErrorKind::WrongAnswer, 1, &m.0),
        }
        match cx.config.mode {
            Mode::OneShot => {
                // The guide's client closes after reading the answer.
                self.close(cx.registry);
                self.retry_at = Some(now);
                false
            }
            Mode::KeepAlive => {
                self.fill(cx, now);
                if self.inflight.is_empty() && self.exhausted {
                    self.close(cx.registry);
                    self.done = true;
                    return false;
                }
                true
            }
        }
    }

    fn on_eof(&mut self, cx: &mut Cx<'_, '_>, now: Instant) {
        if self.inflight.is_empty() {
            // The server closed an idle connection: not an error, start another.
            self.close(cx.registry);
            self.retry_at = Some(now);
            return;
        }
        let mid = if cx.config.workload.kind() == Kind::Echo {
            self.partial > 0
        } else {
            self.decoder.message_in_progress()
        };
        let detail = format!(
            "the server closed the connection with {} answer(s) missing{}",
            self.inflight.len(),
            if mid { ", one cut short" } else { "" }
        );
        self.fail(cx, ErrorKind::Closed, &detail, now);
    }

    /// Every request in flight fails with `kind`; the connection is closed and restarted.
    fn fail(&mut self, cx: &mut Cx<'_, '_>, kind: ErrorKind, detail: &str, now: Instant) {
        cx.count_errors(kind, self.inflight.len() as u64, detail);
        self.inflight.clear();
        self.close(cx.registry);
        self.retry_at = Some(if kind == ErrorKind::Connect {
            now + CONNECT_RETRY
        } else {
            now
        });
    }

    /// An answer arrived that nothing asked for: one wrong answer, plus what was in flight.
    fn fail_unsolicited(&mut self, cx: &mut Cx<'_, '_>, detail: &str, now: Instant) {
        cx.count_errors(ErrorKind::WrongAnswer, 1, detail);
        self.fail(cx, ErrorKind::WrongAnswer, detail, now);
    }

    /// Drops the connection and everything that belongs to it (not the requests in flight).
    fn close(&mut self, registry: &Registry) {
        if let Some(mut stream) = self.stream.take() {
            let _ = registry.deregister(&mut stream);
        }
        // No close_notify: the guide's clients (and Python's ssl sockets) just close.
        self.tls = None;
        self.socket_eof = false;
        self.connected = false;
        self.out.clear();
        self.decoder = answer_decoder();
        self.partial = 0;
    }
}

/// Plaintext into a rustls connection, as a `Write` (its records are written apart).
struct TlsWriter<'a>(&'a mut ClientConnection);

impl Write for TlsWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.writer().write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.writer().write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where `data` first differs from the bytes of an echo request from offset `from` on (the
/// request is `stamp` over the start of `template`), or `None` if it does not.
fn first_difference(stamp: &[u8], template: &[u8], from: usize, data: &[u8]) -> Option<usize> {
    let head = stamp.len().saturating_sub(from).min(data.len());
    let expected_head = stamp.get(from..from + head).unwrap_or_default();
    let (data_head, data_tail) = data.split_at(head);
    if data_head != expected_head {
        return data_head
            .iter()
            .zip(expected_head)
            .position(|(a, b)| a != b);
    }
    let start = from + head;
    let expected_tail = template.get(start..).unwrap_or_default();
    let common = data_tail.len().min(expected_tail.len());
    let (data_common, data_extra) = data_tail.split_at(common);
    let expected_common = expected_tail.get(..common).unwrap_or_default();
    if data_common != expected_common {
        return data_common
            .iter()
            .zip(expected_common)
            .position(|(a, b)| a != b)
            .map(|at| head + at);
    }
    (!data_extra.is_empty()).then_some(head + common)
}

#[cfg(test)]
mod tests {
    use super::first_difference;

    #[test]
    fn echo_bytes_are_compared_across_stamp_and_template() {
        let template = b"abcdefghij";
        let stamp = [1u8, 2, 3];
        // Whole request, in pieces.
        assert_eq!(
            first_difference(&stamp, template, 0, b"\x01\x02\x03defghij"),
            None
        );
        assert_eq!(first_difference(&stamp, template, 2, b"\x03de"), None);
        assert_eq!(first_difference(&stamp, template, 5, b"fghij"), None);
        // Differences in the stamp and in the template part.
        assert_eq!(
            first_difference(&stamp, template, 0, b"\x01\x09\x03d"),
            Some(1)
        );
        assert_eq!(
            first_difference(&stamp, template, 1, b"\x02\x03dXf"),
            Some(3)
        );
        // Past the end of the request.
        assert_eq!(first_difference(&stamp, template, 9, b"jk"), Some(1));
    }
}
