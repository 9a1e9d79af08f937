//! Replays every committed fuzz input through the fuzz target bodies
//! (crate `sockmsg-fuzz-support`) on stable Rust: the seeds
//! (`fuzz/seeds/T`), the minimized corpus (`fuzz/corpus/T`) and every past crash input
//! (`fuzz/regressions/T`). A target body panics when a property is broken, so this is the
//! fuzzers' whole memory, run by `cargo test`.

use std::path::{Path, PathBuf};

use sockmsg_fuzz_support as fuzzing;
use std::time::Instant;

use sockmsg_protocol::{parse_header, Connection, Event, Limits, PeerError, Phase, Role};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] = [
    ("json_header", fuzzing::json_header),
    ("decode_stream", fuzzing::decode_stream),
    ("roundtrip", fuzzing::roundtrip),
    ("connection", fuzzing::connection),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted (hidden files are libFuzzer's, skipped).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// Runs `target` on every file, reporting every one that panics.
fn replay(kind: &str) -> usize {
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, target) in TARGETS {
        for path in inputs(kind, name) {
            // libFuzzer may be rewriting the corpus while this runs: skip what vanished.
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            count += 1;
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failures.push(format!("{name}: {}", path.display()));
            }
        }
    }
    eprintln!("replayed {count} input(s) from fuzz/{kind}/");
    assert!(
        failures.is_empty(),
        "{} fuzz input(s) break a property (see the panics above):\n{}",
        failures.len(),
        failures.join("\n")
    );
    count
}

#[test]
fn seeds_pass_every_target() {
    let n = replay("seeds");
    assert!(n >= 100, "only {n} seed files");
    for (name, _) in TARGETS {
        assert!(
            !inputs("seeds", name).is_empty(),
            "no committed seeds for {name}"
        );
    }
}

#[test]
fn minimized_corpus_passes_every_target() {
    let n = replay("corpus");
    assert!(
        n >= 100,
        "only {n} corpus files: was fuzz/corpus/ committed?"
    );
}

#[test]
fn past_crash_inputs_pass_every_target() {
    let n = replay("regressions");
    assert!(n >= 1, "the regression inputs are missing");
}

/// Regression for the first `decode_stream` crash (fuzz/regressions/decode_stream/
/// position-split-header): the stream position did not count the bytes of a header that
/// arrived in pieces until the header was complete, so an error or end of stream in the
/// middle of a header reported an offset short by the header bytes already received.
#[test]
fn position_counts_the_bytes_of_a_split_header() {
    let wire = b"\x00\x67{\"byteorder\": \"little\"";
    let now = Instant::now();
    // In two pieces through read_from, then one byte at a time through read_buf/commit:
    // the same positions, the same verdict, naming the same missing bytes.
    let mut conn = Connection::new(Role::Server, Limits::default());
    conn.read_from(&mut &wire[..5], now).expect("read_from");
    assert_eq!(conn.next_event(), Ok(Event::NeedData));
    assert_eq!(conn.position(), 5);
    conn.read_from(&mut &wire[5..], now).expect("read_from");
    assert_eq!(conn.next_event(), Ok(Event::NeedData));
    assert_eq!(conn.position(), wire.len() as u64);
    assert_eq!(conn.message_start(), 0);
    let mut bytewise = Connection::new(Role::Server, Limits::default());
    for (i, &b) in wire.iter().enumerate() {
        bytewise.read_buf()[0] = b;
        bytewise.commit(1, now).expect("commit");
        assert_eq!(bytewise.next_event(), Ok(Event::NeedData));
        assert_eq!(bytewise.position(), i as u64 + 1);
    }
    for conn in [&mut conn, &mut bytewise] {
        conn.receive_eof();
        assert_eq!(
            conn.next_event(),
            Err(PeerError::UnexpectedEof {
                phase: Phase::Header,
                missing: 0x67 - (wire.len() - 2),
            })
        );
        assert_eq!(conn.position(), wire.len() as u64);
    }
}

/// Regression for the first `json_header` crash (fuzz/regressions/json_header/): under
/// `max_depth: 0` the fast paths accepted flat headers that the full parser refuses, so the
/// verdict depended on which path took the header.
#[test]
fn depth_limit_zero_refuses_every_header_whichever_path_parses_it() {
    let limits = Limits {
        max_depth: 0,
        ..Limits::default()
    };
    for header in [
        // The canonical form (first fast path).
        &br#"{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8", "content-length": 41}"#[..],
        // A flat header in another layout (second fast path).
        br#"{ "byteorder":"big","content-type":"a","content-encoding":"b","content-length":0 }"#,
        // One only the full parser takes.
        br#"{"byteorder": "big", "content-type": "a", "content-encoding": "b", "content-length": 0, "x": 1}"#,
    ] {
        assert_eq!(
            parse_header(header, &limits),
            Err(PeerError::NestingTooDeep {
                phase: Phase::Header,
                max: 0
            })
        );
        assert!(parse_header(header, &Limits::default()).is_ok());
    }
}
