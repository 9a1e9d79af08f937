//! Fuzz target `connection`: the body is `sockmsg_fuzz_support::connection`, which `cargo test`
//! also runs on every committed corpus file (tests/tests/fuzz_replay.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sockmsg_fuzz_support::connection(data));
