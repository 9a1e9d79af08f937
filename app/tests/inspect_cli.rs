//! `app-inspect` as a program: a file, standard input, and its exit statuses.

use std::io::Write;
use std::process::{Command, Stdio};

fn inspect_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_app-inspect"))
}

const SEARCH: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/vectors/ok-search-request.bin"
));

#[test]
fn a_capture_file_is_listed() {
    let dir = std::env::temp_dir().join(format!("sockmsg-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("capture.bin");
    let mut capture = SEARCH.to_vec();
    capture.extend_from_slice(SEARCH);
    std::fs::write(&path, &capture).expect("write capture");
    let out = inspect_bin().arg(&path).output().expect("run app-inspect");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.starts_with("#1 at offset 0: 146 bytes"), "{text}");
    assert!(text.contains("#2 at offset 146: 146 bytes"), "{text}");
    assert!(
        text.ends_with("2 message(s), 292 bytes, clean end of stream\n"),
        "{text}"
    );
}

fn run_stdin(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = inspect_bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn app-inspect");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("feed stdin");
    drop(stdin);
    child.wait_with_output().expect("wait app-inspect")
}

#[test]
fn standard_input_and_a_malformed_stream() {
    let mut input = SEARCH.to_vec();
    input.extend_from_slice(b"\x00\x02[]");
    let out = run_stdin(&["-"], &input);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.contains("#1 at offset 0"), "{text}");
    // One error line on stderr, naming what could not be decoded.
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert!(
        err.starts_with("app-inspect: cannot decode standard input: malformed stream at byte offset 150 (message #2, which starts at byte offset 146"),
        "{err}"
    );
    assert!(err.trim_end().ends_with("[header-not-object]"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let quiet = run_stdin(&["-q", "-"], SEARCH);
    assert_eq!(quiet.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(quiet.stdout).expect("utf-8"),
        "1 message(s), 146 bytes, clean end of stream\n"
    );
}

#[test]
fn limits_and_usage_errors() {
    let out = run_stdin(&["--max-content", "10", "-"], SEARCH);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("content-too-long"));
    // Run-time failures exit 1 and name the path; usage errors exit 2.
    let missing = inspect_bin()
        .arg("/nonexistent/capture.bin")
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .starts_with("app-inspect: cannot open /nonexistent/capture.bin: "),
        "{missing:?}"
    );
    let dir = std::env::temp_dir();
    let directory = inspect_bin().arg(&dir).output().expect("run");
    assert_eq!(directory.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&directory.stderr),
        format!(
            "app-inspect: cannot read {}: Is a directory (os error 21)\n",
            dir.display()
        )
    );
    let usage = inspect_bin().output().expect("run");
    assert_eq!(usage.status.code(), Some(2));
}
