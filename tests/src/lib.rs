//! Shared helpers for the integration tests: the Python guide peers in `tests/python/`,
//! child processes that are always killed (a guard with `Drop`), bounded waits, temporary
//! directories, and PROTOCOL.md's worked examples with the demo cases that use them.
//!
//! ```
//! use sockmsg_tests::{protocol_examples, DEMO_CASES, SEARCH_MORPHEUS_REQUEST};
//! assert_eq!(SEARCH_MORPHEUS_REQUEST.len(), 146);
//! assert!(DEMO_CASES.iter().any(|c| c.request == Some(SEARCH_MORPHEUS_REQUEST)));
//! let doc = "```\nb'\\x00g{\"a\": 1}'\n```\n";
//! assert_eq!(protocol_examples(doc), vec![b"\x00g{\"a\": 1}".to_vec()]);
//! ```

pub mod alloc;
pub mod log;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// PROTOCOL.md: the search request from a little-endian client (146 bytes).
pub const SEARCH_MORPHEUS_REQUEST: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/vectors/ok-search-request.bin"
));
/// PROTOCOL.md: its response (148 bytes).
pub const SEARCH_MORPHEUS_RESPONSE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/vectors/ok-search-response.bin"
));
/// PROTOCOL.md: the dog-emoji search from a big-endian client (139 bytes).
pub const SEARCH_DOG_BIG_REQUEST: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/vectors/ok-dog-request.bin"
));
/// PROTOCOL.md: the binary request `binary` + `☺`.
pub const BINARY_REQUEST: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/vectors/ok-binary-request.bin"
));
/// PROTOCOL.md: its response.
pub const BINARY_RESPONSE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/vectors/ok-binary-response.bin"
));

/// PROTOCOL.md's examples in the order the document gives them.
pub const PROTOCOL_EXAMPLES: [&[u8]; 5] = [
    SEARCH_MORPHEUS_REQUEST,
    SEARCH_MORPHEUS_RESPONSE,
    SEARCH_DOG_BIG_REQUEST,
    BINARY_REQUEST,
    BINARY_RESPONSE,
];

/// One exchange of the demo application, as the guide's client runs it.
#[derive(Debug, Clone, Copy)]
pub struct DemoCase {
    /// A name for failure messages.
    pub name: &'static str,
    /// The client's ACTION argument.
    pub action: &'static str,
    /// The client's VALUE argument.
    pub value: &'static str,
    /// Send a JSON request whatever the action (`--json-action`).
    pub json_action: bool,
    /// `--byteorder` for the client's request header (`None`: the machine's).
    pub byteorder: Option<&'static str>,
    /// The line the client prints on stdout (without the newline).
    pub stdout: &'static str,
    /// The exact request bytes, where PROTOCOL.md gives them.
    pub request: Option<&'static [u8]>,
    /// The exact response bytes (from a server writing `little`), where PROTOCOL.md
    /// gives them.
    pub response: Option<&'static [u8]>,
}

impl DemoCase {
    /// The client flags of this case (`--byteorder`, `--json-action`), shared by the
    /// guide's client and `app-client`.
    pub fn client_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(order) = self.byteorder {
            flags.push("--byteorder".to_owned());
            flags.push(order.to_owned());
        }
        if self.json_action {
            flags.push("--json-action".to_owned());
        }
        flags
    }
}

/// Every demo case the interop tests run: morpheus, ring, 🐶, no match, invalid action,
/// binary ☺, and a binary request longer than 10 bytes.
pub const DEMO_CASES: &[DemoCase] = &[
    DemoCase {
        name: "search morpheus",
        action: "search",
        value: "morpheus",
        json_action: false,
        byteorder: Some("little"),
        stdout: "got result: Follow the white rabbit. \u{1f430}",
        request: Some(SEARCH_MORPHEUS_REQUEST),
        response: Some(SEARCH_MORPHEUS_RESPONSE),
    },
    DemoCase {
        name: "search ring",
        action: "search",
        value: "ring",
        json_action: false,
        byteorder: Some("little"),
        stdout: "got result: In the caves beneath the Misty Mountains. \u{1f48d}",
        request: None,
        response: None,
    },
    DemoCase {
        name: "search dog (big-endian client)",
        action: "search",
        value: "\u{1f436}",
        json_action: false,
        byteorder: Some("big"),
        stdout: "got result: \u{1f43e} Playing ball! \u{1f3d0}",
        request: Some(SEARCH_DOG_BIG_REQUEST),
        response: None,
    },
    DemoCase {
        name: "no match",
        action: "search",
        value: "nothing",
        json_action: false,
        byteorder: Some("little"),
        stdout: "got result: No match for \"nothing\".",
        request: None,
        response: None,
    },
    DemoCase {
        name: "invalid action",
        action: "find",
        value: "x",
        json_action: true,
        byteorder: Some("little"),
        stdout: "got result: Error: invalid action \"find\".",
        request: None,
        response: None,
    },
    DemoCase {
        name: "binary \u{263a}",
        action: "binary",
        value: "\u{263a}",
        json_action: false,
        byteorder: Some("little"),
        stdout: "got response: b'First 10 bytes of request: binary\\xe2\\x98\\xba'",
        request: Some(BINARY_REQUEST),
        response: Some(BINARY_RESPONSE),
    },
    DemoCase {
        name: "binary longer than 10 bytes",
        action: "upload",
        value: "0123456789abc",
        json_action: false,
        byteorder: Some("little"),
        stdout: "got response: b'First 10 bytes of request: upload0123'",
        request: None,
        response: None,
    },
];

/// The Python byte-string literals (`b'...'`) that start lines inside the fenced code
/// blocks of `markdown`, decoded.
pub fn protocol_examples(markdown: &str) -> Vec<Vec<u8>> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in markdown.lines() {
        let line = line.trim();
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            if let Some(bytes) = parse_py_bytes(line) {
                out.push(bytes);
            }
        }
    }
    out
}

/// Decodes one Python bytes literal `b'...'` or `b"..."` (escapes `\\`, `\'`, `\"`, `\n`,
/// `\r`, `\t`, `\xNN`); `None` if `literal` is not one.
pub fn parse_py_bytes(literal: &str) -> Option<Vec<u8>> {
    let rest = literal.strip_prefix('b')?;
    let quote = rest.chars().next().filter(|q| *q == '\'' || *q == '"')?;
    let body = rest.strip_prefix(quote)?.strip_suffix(quote)?;
    let mut out = Vec::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next()? {
            '\\' => out.push(b'\\'),
            '\'' => out.push(b'\''),
            '"' => out.push(b'"'),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(u8::from_str_radix(&hex, 16).ok()?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The repository's `PROTOCOL.md` (the wire-format reference at the repository root).
/// The test suite reads it from there only: the repository needs no file beside it.
pub fn protocol_md_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new(".."))
        .join("PROTOCOL.md")
}

/// The directory of the Python peers.
pub fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// The Python interpreter: `$SOCKMSG_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("SOCKMSG_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// A command running `script` (a file of `tests/python/`) with UTF-8 output.
pub fn python_command(script: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(python_dir().join(script))
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    cmd
}

/// A temporary directory, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory under the system's temporary directory.
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "sockmsg-{label}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads a file, or gives an empty vector if it does not exist.
pub fn read_or_empty(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

/// A child process that is killed and reaped when the guard is dropped, even when the
/// test fails. Its stdout lines (if piped) arrive on a channel, its stderr (if piped) is
/// collected in the background.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
    lines: Option<mpsc::Receiver<String>>,
    stdout_rest: Vec<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr piped.
    pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let lines = child.stdout.take().map(|out| {
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        let stderr = child.stderr.take().map(|mut err| {
            thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = err.read_to_end(&mut bytes);
                String::from_utf8_lossy(&bytes).into_owned()
            })
        });
        ChildGuard {
            name: name.to_owned(),
            child,
            lines,
            stdout_rest: Vec::new(),
            stderr,
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, waiting at most `limit`.
    pub fn next_line(&mut self, limit: Duration) -> Option<String> {
        self.lines.as_ref()?.recv_timeout(limit).ok()
    }

    /// The address a server prints first on stdout (`listening on ADDR`), waiting at most
    /// `limit`; panics (naming the line) if the first line is something else.
    pub fn listening_addr(&mut self, limit: Duration) -> std::net::SocketAddr {
        let line = self
            .next_line(limit)
            .unwrap_or_else(|| panic!("{} printed no listening line", self.name));
        line.strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{}: unexpected first line {line:?}", self.name))
    }

    /// Sends a signal by name (`INT`, `TERM`, ...) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -{signal} {} failed", self.name);
    }

    /// Waits at most `limit` for the process to exit on its own.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => return None,
            }
        }
    }

    /// Waits at most `limit` for the process to exit, then returns its status, the
    /// stdout lines not yet read, and its stderr. Kills it (and panics) if it does not
    /// exit in time.
    pub fn finish(mut self, limit: Duration) -> (ExitStatus, Vec<String>, String) {
        let Some(status) = self.wait_timeout(limit) else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let stderr = self.take_stderr();
            panic!(
                "{} did not exit within {limit:?}; stderr:\n{stderr}",
                self.name
            );
        };
        let mut rest = std::mem::take(&mut self.stdout_rest);
        if let Some(lines) = self.lines.take() {
            while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
                rest.push(line);
            }
        }
        let stderr = self.take_stderr();
        (status, rest, stderr)
    }

    fn take_stderr(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to completion with piped output, killing it if it takes longer than
/// `limit` (and then panicking with what it wrote to stderr).
pub fn run_bounded(name: &str, cmd: &mut Command, limit: Duration) -> Output {
    let guard = ChildGuard::spawn(name, cmd);
    let (status, lines, stderr) = guard.finish(limit);
    let mut stdout = lines.join("\n");
    if !lines.is_empty() {
        stdout.push('\n');
    }
    Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}

/// Output of a finished command, for failure messages.
pub fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The guide's server (`guide_server.py`) on 127.0.0.1 and a free port, killed when
/// dropped.
#[derive(Debug)]
pub struct GuideServer {
    /// The process.
    pub process: ChildGuard,
    /// Its port.
    pub port: u16,
    /// Where it appends the bytes it receives (`--capture-in`).
    pub capture_in: PathBuf,
    /// Where it appends the bytes it sends (`--capture-out`).
    pub capture_out: PathBuf,
}

impl GuideServer {
    /// Starts `guide_server.py 127.0.0.1 0` with captures in `dir`, response headers
    /// written `little`, and `extra` arguments (e.g. `--once`); waits (bounded) for its
    /// port.
    pub fn start(dir: &TempDir, label: &str, extra: &[&str]) -> GuideServer {
        let port_file = dir.join(&format!("{label}.port"));
        let capture_in = dir.join(&format!("{label}.in"));
        let capture_out = dir.join(&format!("{label}.out"));
        let mut cmd = python_command("guide_server.py");
        cmd.args(["127.0.0.1", "0", "--byteorder", "little", "--port-file"])
            .arg(&port_file)
            .arg("--capture-in")
            .arg(&capture_in)
            .arg("--capture-out")
            .arg(&capture_out)
            .args(extra);
        let mut process = ChildGuard::spawn("guide_server.py", &mut cmd);
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                if let Some(port) = text.strip_suffix('\n').and_then(|p| p.parse().ok()) {
                    break port;
                }
            }
            if let Some(status) = process.wait_timeout(Duration::ZERO) {
                panic!("guide_server.py exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "guide_server.py did not write its port file in time"
            );
            thread::sleep(Duration::from_millis(10));
        };
        GuideServer {
            process,
            port,
            capture_in,
            capture_out,
        }
    }

    /// Stops it with SIGTERM (it closes its files and exits 0), bounded; returns its
    /// stderr.
    pub fn stop(self) -> String {
        self.process.signal("TERM");
        let (status, _, stderr) = self.process.finish(Duration::from_secs(10));
        assert!(status.success(), "guide_server.py: {status}\n{stderr}");
        stderr
    }
}

/// What one run of the guide's client did.
#[derive(Debug)]
pub struct GuideClientRun {
    /// Its exit status and output.
    pub output: Output,
    /// The bytes it sent (`--capture-out`).
    pub sent: Vec<u8>,
    /// The bytes it received (`--capture-in`).
    pub received: Vec<u8>,
}

/// Runs `guide_client.py 127.0.0.1 PORT ACTION VALUE` for `case`, capturing the bytes
/// each way in `dir`; bounded by `timeout` (its own) plus 10 s.
pub fn run_guide_client(
    dir: &TempDir,
    label: &str,
    port: u16,
    case: &DemoCase,
    timeout: Duration,
) -> GuideClientRun {
    let out = dir.join(&format!("{label}.sent"));
    let inp = dir.join(&format!("{label}.received"));
    let mut cmd = python_command("guide_client.py");
    cmd.args(["127.0.0.1", &port.to_string(), case.action, case.value])
        .args(case.client_flags())
        .arg("--capture-out")
        .arg(&out)
        .arg("--capture-in")
        .arg(&inp)
        .arg("--timeout")
        .arg(timeout.as_secs_f64().to_string());
    let output = run_bounded(
        "guide_client.py",
        &mut cmd,
        timeout + Duration::from_secs(10),
    );
    GuideClientRun {
        output,
        sent: read_or_empty(&out),
        received: read_or_empty(&inp),
    }
}
