//! `app-bench` and `echo-baseline` as programs: the JSON summary, exit statuses, the
//! progress line, and the two together.

mod bench_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench_support::{Behaviour, TestServer};
use serde_json::Value;

/// A child process killed when dropped, and a temporary directory removed then.
struct Spawned {
    child: Child,
    dir: PathBuf,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sockmsg-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Waits (at most 10 s) for a server to write its port file.
fn wait_port(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text.trim().to_owned();
            }
        }
        assert!(Instant::now() < deadline, "no port file {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn bench_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_app-bench"))
}

fn run_json(args: &[&str]) -> (Option<i32>, Value, String) {
    let out = bench_bin()
        .args(args)
        .arg("--json")
        .output()
        .expect("run app-bench");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.code(),
        value,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn json_summary_against_a_demo_server() {
    let server = TestServer::start(Behaviour::Demo);
    let port = server.addr.port().to_string();
    let (code, v, stderr) = run_json(&[
        "127.0.0.1",
        &port,
        "-c",
        "3",
        "-n",
        "300",
        "-P",
        "2",
        "--binary",
        "-q",
    ]);
    assert_eq!(code, Some(0), "{v} {stderr}");
    assert_eq!(stderr, "", "-q prints nothing on stderr");
    assert_eq!(v["ok"], 300);
    assert_eq!(v["requests"], 300);
    assert_eq!(v["errors"]["total"], 0);
    assert_eq!(v["kind"], "binary");
    assert_eq!(v["mode"], "keep-alive");
    assert_eq!(v["connections"], 3);
    assert_eq!(v["pipeline"], 2);
    assert_eq!(v["request_bytes"], 146);
    assert!(v["requests_per_s"].as_f64().is_some_and(|r| r > 0.0));
    for p in ["min_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
        assert!(
            v["latency"][p].as_f64().is_some_and(|x| x > 0.0),
            "{p}: {v}"
        );
    }
}

#[test]
fn errors_make_the_exit_status_1_and_usage_errors_2() {
    let server = TestServer::start(Behaviour::WrongAnswer);
    let port = server.addr.port().to_string();
    let (code, v, _) = run_json(&["127.0.0.1", &port, "-n", "20", "--one-shot", "-q"]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["ok"], 0);
    assert_eq!(v["errors"]["wrong-answer"], 20);
    assert!(v["first_error"]
        .as_str()
        .is_some_and(|e| e.contains("wrong-answer")));

    let out = bench_bin()
        .args(["127.0.0.1", &port, "--one-shot", "-P", "4"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pipelining needs keep-alive"));
    let out = bench_bin()
        .args(["--echo", "--value", "x"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn echo_baseline_with_progress_lines_and_text_summary() {
    let dir = temp_dir("echo");
    let port_file = dir.join("port");
    let child = Command::new(env!("CARGO_BIN_EXE_echo-baseline"))
        .args(["127.0.0.1", "0", "--port-file"])
        .arg(&port_file)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn echo-baseline");
    let mut server = Spawned { child, dir };
    let mut line = String::new();
    let stdout = server.child.stdout.take().expect("stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("listening line");
    let port = wait_port(&port_file);
    assert_eq!(line.trim_end(), format!("listening on 127.0.0.1:{port}"));

    let started = Instant::now();
    let out = bench_bin()
        .args([
            "127.0.0.1",
            &port,
            "--echo",
            "-c",
            "2",
            "-d",
            "1300ms",
            "-P",
            "4",
        ])
        .output()
        .expect("run app-bench");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("keep-alive echo requests of 146 bytes"),
        "{stderr}"
    );
    assert!(
        stderr.contains("[   1s] "),
        "a progress line each second: {stderr}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for field in [
        "target:",
        "throughput:",
        "latency ms:",
        "p99.9",
        "errors:      none",
    ] {
        assert!(text.contains(field), "{field}: {text}");
    }
}

#[test]
fn one_shot_against_the_python_guide_server() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/oneshot_server.py");
    let dir = temp_dir("py-oneshot");
    let port_file = dir.join("port");
    let child = Command::new("python3")
        .arg(&script)
        .args(["127.0.0.1", "0", "--port-file"])
        .arg(&port_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is needed for the interop tests");
    let _server = Spawned { child, dir };
    let port = wait_port(&port_file);
    for kind in [None, Some("--binary")] {
        let mut args = vec![
            "127.0.0.1",
            port.as_str(),
            "--one-shot",
            "-c",
            "2",
            "-n",
            "60",
            "-q",
        ];
        args.extend(kind);
        let (code, v, stderr) = run_json(&args);
        assert_eq!(code, Some(0), "{v} {stderr}");
        assert_eq!(v["ok"], 60, "{v}");
        assert_eq!(v["mode"], "one-shot");
    }
}
