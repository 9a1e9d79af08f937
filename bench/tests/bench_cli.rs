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
    assert_eq!(v["sent_bytes"], 300 * 146);
    assert!(v["sent_bytes_per_s"].as_f64().is_some_and(|r| r > 0.0));
    assert!(v["received_bytes_per_s"].as_f64().is_some_and(|r| r > 0.0));
    assert_eq!(v["latency"]["percentiles"][6]["percentile"], 100.0);
    assert_eq!(v["latency"]["percentiles"][6]["us"], v["latency"]["max_us"]);
    assert_eq!(v["server_cpu"], Value::Null);
    assert_eq!(v["gave_up"], Value::Null);
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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("app-bench: "), "{stderr}");
    for bad in [
        &["--echo", "--value", "x"][..],
        &["--rate", "0"],
        &["--rate", "fast"],
        &["--max-errors", "0"],
        &["--echo", "--answer", "echo"],
        &["--value-json", "{not json"],
        &["--ca", "ca.pem"],
        &["--no-resume"],
        &["--server-name", "localhost"],
        &["--tls", "--echo"],
        &["--tls-version", "1.2"],
    ] {
        let out = bench_bin().args(bad).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
}

#[test]
fn tls_version_takes_1_2_or_1_3() {
    for bad in ["1.1", "1.0", "tls1.2", ""] {
        let out = bench_bin()
            .args(["127.0.0.1", "1", "--tls", "--tls-version", bad])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--tls-version") && stderr.contains("[possible values: 1.2, 1.3]"),
            "{bad:?}: {stderr}"
        );
    }
    let out = bench_bin().arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--tls-version <VERSION>") && help.contains("no forward secrecy"),
        "{help}"
    );
}

#[test]
fn an_unresolvable_host_is_a_runtime_failure() {
    let out = bench_bin()
        .args(["nothing.invalid", "1", "-q"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("app-bench: cannot resolve \"nothing.invalid\": "),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn tls_settings_that_cannot_load_are_one_line_and_exit_1() {
    let missing =
        std::env::temp_dir().join(format!("sockmsg-no-such-ca-{}.pem", std::process::id()));
    let out = bench_bin()
        .args(["127.0.0.1", "1", "-q", "--tls", "--ca"])
        .arg(&missing)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("app-bench: cannot load the TLS settings: "),
        "{stderr}"
    );
    assert!(stderr.contains("sockmsg-no-such-ca-"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_closed_port_gives_up_within_seconds_with_one_line() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port().to_string()
    };
    let started = Instant::now();
    // Without giving up, 20 million refused connects would take hours.
    let out = bench_bin()
        .args(["127.0.0.1", &port, "-n", "20000000", "-q"])
        .output()
        .expect("run");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(9), "{took:?}");
    assert!(took >= Duration::from_secs(4), "{took:?}");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "app-bench: no answer from 127.0.0.1:{port} in 5 s: connect: "
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("latency:     no answers"), "{stdout}");
    assert!(!stdout.contains("latency ms"), "{stdout}");
    assert!(!stdout.contains("0.000"), "no made-up figures: {stdout}");
}

#[test]
fn max_errors_gives_up_after_that_many_in_a_row() {
    let server = TestServer::start(Behaviour::WrongAnswer);
    let port = server.addr.port().to_string();
    let (code, v, stderr) = run_json(&[
        "127.0.0.1",
        &port,
        "-n",
        "20000000",
        "--max-errors",
        "30",
        "-q",
    ]);
    assert_eq!(code, Some(1), "{v}");
    assert!(
        stderr.starts_with("app-bench: ") && stderr.contains(" errors in a row from 127.0.0.1:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--max-errors 30): wrong-answer: content"),
        "{stderr}"
    );
    let errors = v["errors"]["total"].as_u64().expect("errors");
    assert!((30..300).contains(&errors), "{v}");
    assert_eq!(v["latency"], Value::Null);
}

/// Every number in a JSON text has at most 3 decimals.
fn assert_rounded(text: &str) {
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if c == '"' {
            in_string = true;
        } else if c == '.' {
            let decimals = text[i + 1..]
                .chars()
                .take_while(|d| d.is_ascii_digit())
                .count();
            assert!(decimals <= 3, "{decimals} decimals at {i}: {text}");
        }
    }
}

#[test]
fn json_figures_are_rounded_and_the_help_explains_the_rate() {
    let server = TestServer::start(Behaviour::Demo);
    let port = server.addr.port().to_string();
    let out = bench_bin()
        .args(["127.0.0.1", &port, "-c", "2", "-n", "500", "-q", "--json"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert_rounded(&text);
    let v: Value = serde_json::from_str(&text).expect("json");
    assert!(
        v["latency"]["mean_us"].as_f64().is_some_and(|m| m > 0.0),
        "{v}"
    );
    assert!(v["elapsed_s"].as_f64().is_some_and(|m| m > 0.0), "{v}");

    let help = bench_bin().arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&help.stdout);
    for words in [
        "--rate <R>",
        "INTENDED send time",
        "coordinated omission",
        "--max-errors <N>",
        "--server-pid <PID>",
        "--answer <ANSWER>",
    ] {
        assert!(help.contains(words), "{words}: {help}");
    }
}

#[test]
fn fixed_rate_answer_echo_and_json_values_from_the_command_line() {
    let echo = TestServer::start(Behaviour::EchoMessages);
    let port = echo.addr.port().to_string();
    let (code, v, stderr) = run_json(&[
        "127.0.0.1",
        &port,
        "--binary",
        "--answer",
        "echo",
        "-s",
        "100000",
        "-n",
        "40",
        "-P",
        "2",
        "-q",
    ]);
    assert_eq!(code, Some(0), "{v} {stderr}");
    assert_eq!(v["expect"], "echo");
    assert_eq!(v["ok"], 40);
    // The demo's answer is not what an echoing server gives.
    let (code, v, _) = run_json(&["127.0.0.1", &port, "-n", "10", "-q"]);
    assert_eq!(code, Some(1));
    assert_eq!(v["errors"]["wrong-answer"], 10);

    let demo = TestServer::start(Behaviour::Demo);
    let port = demo.addr.port().to_string();
    let (code, v, stderr) = run_json(&[
        "127.0.0.1",
        &port,
        "--value-json",
        "[1, \"a\", null]",
        "--rate",
        "400",
        "-d",
        "500ms",
        "-c",
        "2",
        "-q",
    ]);
    assert_eq!(code, Some(0), "{v} {stderr}");
    assert_eq!(v["rate"], 400.0);
    let done = v["ok"].as_u64().expect("ok") + v["abandoned"].as_u64().expect("abandoned");
    assert!((170..=202).contains(&done), "{v}");
}

#[test]
fn server_cpu_per_request_from_proc() {
    let dir = temp_dir("cpu");
    let port_file = dir.join("port");
    let child = Command::new(env!("CARGO_BIN_EXE_echo-baseline"))
        .args(["127.0.0.1", "0", "--port-file"])
        .arg(&port_file)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn echo-baseline");
    let server = Spawned { child, dir };
    let port = wait_port(&port_file);
    let pid = server.child.id().to_string();
    let (code, v, stderr) = run_json(&[
        "127.0.0.1",
        &port,
        "--echo",
        "-c",
        "4",
        "-d",
        "700ms",
        "--server-pid",
        &pid,
        "-q",
    ]);
    assert_eq!(code, Some(0), "{v} {stderr}");
    assert_eq!(v["server_cpu"]["pid"].to_string(), pid);
    let cpu = v["server_cpu"]["cpu_s"].as_f64().expect("cpu_s");
    assert!((0.0..=1.5).contains(&cpu), "{v}");
    let per = v["server_cpu"]["us_per_request"]
        .as_f64()
        .expect("per request");
    let ok = v["ok"].as_f64().expect("ok");
    assert!((per - cpu * 1e6 / ok).abs() < 0.01 + per * 0.001, "{v}");

    let out = bench_bin()
        .args([
            "127.0.0.1",
            &port,
            "--echo",
            "-n",
            "10",
            "--server-pid",
            "4294967295",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read /proc/4294967295/stat"),
        "{stderr}"
    );
    assert!(stderr.starts_with("app-bench: "), "{stderr}");
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
        " MB/s, received ",
        "latency ms:",
        "p99.9",
        "latency distribution (ms):",
        "    99.990%",
        "   100.000%",
        "latency histogram (ms, log scale):",
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

#[test]
fn echo_baseline_failures_are_one_line_and_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    for (args, start) in [
        (
            vec!["nothing.invalid", "0"],
            "echo-baseline: cannot resolve \"nothing.invalid\": ".to_owned(),
        ),
        (
            vec!["127.0.0.1", port.as_str()],
            format!("echo-baseline: cannot listen on 127.0.0.1:{port}: "),
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_echo-baseline"))
            .args(&args)
            .output()
            .expect("run echo-baseline");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with(&start), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_echo-baseline"))
        .args(["--workers", "0"])
        .output()
        .expect("run echo-baseline");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn tokio_baseline_answers_the_demo_requests_as_app_server() {
    let dir = temp_dir("tokio-baseline");
    let port_file = dir.join("port");
    let child = Command::new(env!("CARGO_BIN_EXE_tokio-baseline"))
        .args(["127.0.0.1", "0", "--port-file"])
        .arg(&port_file)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn tokio-baseline");
    let _server = Spawned { child, dir };
    let port = wait_port(&port_file);
    // app-bench checks every answer against the demo service's own (DemoService::respond).
    for extra in [
        &["-P", "4"][..],
        &["--one-shot"],
        &["--value", "neo"],
        &["--binary"],
    ] {
        let mut args = vec!["127.0.0.1", &port, "-c", "2", "-n", "200", "-q"];
        args.extend_from_slice(extra);
        let (code, v, stderr) = run_json(&args);
        assert_eq!(code, Some(0), "{extra:?}: {v} {stderr}");
        assert_eq!(v["ok"], 200, "{extra:?}: {v}");
        assert_eq!(v["errors"]["total"], 0, "{extra:?}: {v}");
    }
}
