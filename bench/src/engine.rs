//! The load generator's engine: client connections driven directly on mio, independent of
//! this project's transports, so that it is equally fair to every server it measures.
//!
//! Each client thread runs one mio event loop over its share of the connections. A
//! connection keeps up to `pipeline` requests in flight (keep-alive), or carries exactly one
//! request (one-shot: connect, request, answer, close). Framed answers go through the
//! sans-IO [`Decoder`] and are checked against the [`Workload`]'s expected answer; echo
//! answers are compared byte for byte with what was sent. Every request ends as exactly one
//! of: a right answer, an error of some [`ErrorKind`], or abandoned when a timed run ends.
//!
//! ```no_run
//! use std::time::Duration;
//! use sockmsg_bench::engine::{run, Config, Control, Limit};
//! use sockmsg_bench::report::Mode;
//! use sockmsg_bench::workload::{Kind, Workload};
//!
//! let config = Config {
//!     addr: "127.0.0.1:65432".parse()?,
//!     connections: 8,
//!     limit: Limit::Requests(10_000),
//!     mode: Mode::KeepAlive,
//!     pipeline: 1,
//!     threads: 1,
//!     timeout: Duration::from_secs(10),
//!     workload: Workload::new(Kind::Json, None, None)?,
//! };
//! let report = run(&config, &Control::new(), |p| eprintln!("{} ok", p.ok))?;
//! println!("{}", report.to_text());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use sockmsg_protocol::{Decoder, Event, Limits};

use super::report::{ErrorCounts, ErrorKind, Latency, Mode, Report};
use super::workload::{Kind, Mismatch, Workload};

/// Size of the per-thread receive buffer.
const READ_BUF: usize = 64 * 1024;
/// Pause before reconnecting after a failed connect.
const CONNECT_RETRY: Duration = Duration::from_millis(10);
/// Longest wait in the event loop between checks of deadlines and timeouts.
const TICK: Duration = Duration::from_millis(50);
/// Consumed bytes at the front of a buffer are dropped once there are this many.
const COMPACT_AT: usize = 64 * 1024;

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// After this many requests in all (each answered, failed, or abandoned by a stop).
    Requests(u64),
    /// After this long; requests still in flight then are abandoned.
    Duration(Duration),
}

/// Everything a run needs.
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
    /// A request with no answer after this long fails with [`ErrorKind::Timeout`] and its
    /// connection is closed (for one-shot, the connect counts too).
    pub timeout: Duration,
    /// What to send and expect.
    pub workload: Workload,
}

impl Config {
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
        match self.limit {
            Limit::Requests(0) => Err("at least one request is needed".into()),
            Limit::Duration(d) if d.is_zero() => Err("the duration must be positive".into()),
            _ => Ok(()),
        }
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
    deadline: Option<Instant>,
    issued: AtomicU64,
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
}

/// Runs the benchmark described by `config`, calling `progress` about once a second from
/// the calling thread, and returns the report once every request is accounted for.
///
/// `Err` only for an invalid configuration (`InvalidInput`) or when an event loop cannot
/// be created; network failures are counted in the report, never returned.
pub fn run(
    config: &Config,
    control: &Control,
    mut progress: impl FnMut(&Progress),
) -> io::Result<Report> {
    config
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let threads = config.threads.min(config.connections);
    let started = Instant::now();
    let shared = Shared {
        control,
        limit: config.limit,
        deadline: match config.limit {
            Limit::Duration(d) => Some(started + d),
            Limit::Requests(_) => None,
        },
        issued: AtomicU64::new(0),
    };
    let mut total = Outcome::default();
    let mut failure = None;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        for t in 0..threads {
            let tx = tx.clone();
            let shared = &shared;
            let clients = (t..config.connections).step_by(threads).count();
            scope.spawn(move || {
                let _ = tx.send(worker(config, shared, clients));
            });
        }
        drop(tx);
        let mut next_tick = started + Duration::from_secs(1);
        let mut done = 0;
        while done < threads {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Ok(outcome)) => {
                    done += 1;
                    total.ok += outcome.ok;
                    total.errors.merge(&outcome.errors);
                    total.abandoned += outcome.abandoned;
                    total.latency.merge(&outcome.latency);
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
                    progress(&Progress {
                        elapsed: started.elapsed(),
                        ok: control.inner.ok.load(Ordering::Relaxed),
                        errors: control.inner.errors.load(Ordering::Relaxed),
                    });
                    next_tick += Duration::from_secs(1);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Report {
        target: config.addr.to_string(),
        kind: config.workload.kind(),
        mode: config.mode,
        connections: config.connections,
        pipeline: config.pipeline,
        threads,
        request_bytes: config.workload.request_len(),
        elapsed_s: elapsed,
        requests: total.ok + total.errors.total() + total.abandoned,
        ok: total.ok,
        requests_per_s: if elapsed > 0.0 {
            total.ok as f64 / elapsed
        } else {
            0.0
        },
        latency: total.latency.summary(),
        errors: total.errors,
        abandoned: total.abandoned,
        first_error: total.first_error,
    })
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
        self.shared.control.inner.ok.fetch_add(1, Ordering::Relaxed);
    }

    fn count_errors(&mut self, kind: ErrorKind, n: u64, detail: &str) {
        if n == 0 {
            return;
        }
        self.outcome.errors.add(kind, n);
        self.shared
            .control
            .inner
            .errors
            .fetch_add(n, Ordering::Relaxed);
        if self.outcome.first_error.is_none() {
            self.outcome.first_error = Some(format!("{kind}: {detail}"));
        }
    }
}

fn worker(config: &Config, shared: &Shared<'_>, n: usize) -> io::Result<Outcome> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; READ_BUF];
    let mut outcome = Outcome::default();
    let mut clients: Vec<Client> = (0..n).map(|i| Client::new(Token(i))).collect();
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
        let waiting = clients
            .iter()
            .filter_map(|c| c.retry_at)
            .min()
            .map(|t| t.saturating_duration_since(now));
        let mut timeout = TICK.min(next_scan.saturating_duration_since(now));
        if let Some(w) = waiting {
            timeout = timeout.min(w);
        }
        if let Some(d) = shared.deadline {
            timeout = timeout.min(d.saturating_duration_since(now));
        }
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let now = Instant::now();
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
        if waiting.is_some() || now >= next_scan {
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

/// One client connection and the requests it carries.
struct Client {
    token: Token,
    stream: Option<TcpStream>,
    connected: bool,
    connect_started: Instant,
    /// Bytes to send: `out[out_pos..]`.
    out: Vec<u8>,
    out_pos: usize,
    /// Framed answers.
    decoder: Decoder,
    /// Echo answers: the bytes still expected are `expect[expect_pos..]`; `partial` bytes of
    /// the current answer have arrived.
    expect: Vec<u8>,
    expect_pos: usize,
    partial: usize,
    /// When each request in flight was queued, oldest first.
    inflight: VecDeque<Instant>,
    /// Not connected: start again at this time.
    retry_at: Option<Instant>,
    done: bool,
}

/// The decoder for framed answers. It does not validate JSON content: every answer is
/// compared with the expected bytes, and only one that differs is parsed (by serde, for an
/// equal value), so the check would only slow the load generator down.
fn answer_decoder() -> Decoder {
    Decoder::new(Limits {
        check_json_content: false,
        ..Limits::default()
    })
}

impl Client {
    fn new(token: Token) -> Client {
        Client {
            token,
            stream: None,
            connected: false,
            connect_started: Instant::now(),
            out: Vec::new(),
            out_pos: 0,
            decoder: answer_decoder(),
            expect: Vec::new(),
            expect_pos: 0,
            partial: 0,
            inflight: VecDeque::new(),
            retry_at: None,
            done: false,
        }
    }

    /// Claims requests and opens a connection for them; `done` if there is nothing left.
    fn begin(&mut self, cx: &mut Cx<'_, '_>, now: Instant) {
        self.retry_at = None;
        let want = match cx.config.mode {
            Mode::KeepAlive => cx.config.pipeline,
            Mode::OneShot => 1,
        };
        while self.inflight.len() < want && self.queue_one(cx, now) {}
        if self.inflight.is_empty() {
            self.done = true;
            return;
        }
        self.connect_started = now;
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

    /// Queues one more request if the run has one.
    fn queue_one(&mut self, cx: &mut Cx<'_, '_>, now: Instant) -> bool {
        let Some(seq) = cx.shared.claim() else {
            return false;
        };
        let start = self.out.len();
        cx.config.workload.write_request(seq, &mut self.out);
        if cx.config.workload.kind() == Kind::Echo {
            if let Some(sent) = self.out.get(start..) {
                self.expect.extend_from_slice(sent);
            }
        }
        self.inflight.push_back(now);
        true
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
                    if cx.config.mode == Mode::KeepAlive {
                        // Keep-alive latency starts once the connection is up.
                        self.inflight.iter_mut().for_each(|t| *t = now);
                    }
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

    /// Timeouts and delayed restarts.
    fn scan(&mut self, cx: &mut Cx<'_, '_>, now: Instant) {
        if self.stream.is_some() {
            let oldest = if self.connected {
                self.inflight.front().copied()
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
    }

    /// Writes what is pending; `false` if the connection failed.
    fn flush(&mut self, cx: &mut Cx<'_, '_>, now: Instant) -> bool {
        while self.out_pos < self.out.len() {
            let (Some(stream), Some(pending)) = (&mut self.stream, self.out.get(self.out_pos..))
            else {
                return false;
            };
            match stream.write(pending) {
                Ok(0) => {
                    self.fail(cx, ErrorKind::Io, "the socket accepted no bytes", now);
                    return false;
                }
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(cx, ErrorKind::Io, &format!("write: {e}"), now);
                    return false;
                }
            }
        }
        compact(&mut self.out, &mut self.out_pos);
        true
    }

    /// Reads until the socket has nothing more, handling answers as they complete, then
    /// sends the requests that replace them.
    fn read(&mut self, cx: &mut Cx<'_, '_>, buf: &mut [u8]) {
        loop {
            let Some(stream) = &mut self.stream else {
                return;
            };
            let result = stream.read(buf);
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
                return self.on_eof(cx, now);
            }
            let data = buf.get(..n).unwrap_or_default();
            if !self.feed(cx, data, now) {
                return;
            }
        }
    }

    /// Handles received bytes; `false` once this connection is gone.
    fn feed(&mut self, cx: &mut Cx<'_, '_>, data: &[u8], now: Instant) -> bool {
        if cx.config.workload.kind() == Kind::Echo {
            let end = self.expect_pos + data.len();
            match self.expect.get(self.expect_pos..end) {
                Some(expected) if expected == data => {}
                Some(expected) => {
                    let at = expected
                        .iter()
                        .zip(data)
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    let detail = format!(
                        "echoed bytes differ at byte {} of an answer",
                        self.partial + at
                    );
                    self.fail(cx, ErrorKind::WrongAnswer, &detail, now);
                    return false;
                }
                None => {
                    self.fail_unsolicited(cx, "more bytes echoed than were sent", now);
                    return false;
                }
            }
            self.expect_pos = end;
            compact(&mut self.expect, &mut self.expect_pos);
            let size = cx.config.workload.request_len().max(1);
            let complete = (self.partial + data.len()) / size;
            self.partial = (self.partial + data.len()) % size;
            for _ in 0..complete {
                if !self.complete(cx, Ok(()), now) {
                    return false;
                }
            }
            return true;
        }
        let mut input = data;
        loop {
            match self.decoder.decode(&mut input) {
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
        let Some(queued) = self.inflight.pop_front() else {
            self.fail_unsolicited(cx, "an answer no request asked for", now);
            return false;
        };
        match verdict {
            Ok(()) => cx.count_ok(now.saturating_duration_since(queued)),
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
                while self.inflight.len() < cx.config.pipeline && self.queue_one(cx, now) {}
                if self.inflight.is_empty() {
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
        self.connected = false;
        self.out.clear();
        self.out_pos = 0;
        self.decoder = answer_decoder();
        self.expect.clear();
        self.expect_pos = 0;
        self.partial = 0;
    }
}

/// Drops the consumed front of `buf` once it is all consumed or large.
fn compact(buf: &mut Vec<u8>, pos: &mut usize) {
    if *pos >= buf.len() {
        buf.clear();
        *pos = 0;
    } else if *pos >= COMPACT_AT {
        buf.drain(..*pos);
        *pos = 0;
    }
}
