#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (see FUZZING.md).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 600); TARGETs default to all four. Installs cargo-fuzz (and
# the nightly toolchain) if missing. Each target runs with -max_total_time, -malloc_limit_mb
# and -rss_limit_mb, reading the committed seeds (fuzz/seeds/T) and corpus (fuzz/corpus/T)
# and adding new inputs to fuzz/corpus/T. A crash leaves its input in fuzz/artifacts/T/ and
# makes the script exit non-zero; copy it to fuzz/regressions/T/ with the fix (FUZZING.md).
#
# Environment:
#   FUZZ_PARALLEL=N   targets run at once (default 1; each is one libFuzzer process)
#   FUZZ_MEM_MB=N     malloc and RSS limit in MiB (default 2048)
#   FUZZ_CMIN=1       afterwards, minimize each fuzz/corpus/T (cargo fuzz cmin, edge coverage)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECS=${1:-600}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(json_header decode_stream roundtrip connection)
fi
PARALLEL=${FUZZ_PARALLEL:-1}
MEM=${FUZZ_MEM_MB:-2048}

if ! cargo +nightly --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# -O: optimized; -a: debug assertions, so integer overflow panics instead of wrapping.
BUILD=(-O -a)
cargo +nightly fuzz build "${BUILD[@]}"

max_len() {
    case "$1" in
        json_header) echo 8192 ;;
        decode_stream) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

mkdir -p target/logs
run_target() {
    local t=$1 log=target/logs/$1.log
    local args=(-max_total_time="$SECS" -malloc_limit_mb="$MEM" -rss_limit_mb="$MEM"
        -max_len="$(max_len "$t")" -timeout=20 -print_final_stats=1)
    case "$t" in
        json_header | decode_stream) args+=(-dict=dict/header.dict) ;;
    esac
    mkdir -p "corpus/$t" "seeds/$t"
    echo "== $t: ${SECS}s (log: fuzz/$log)"
    if cargo +nightly fuzz run "${BUILD[@]}" "$t" "corpus/$t" "seeds/$t" -- "${args[@]}" >"$log" 2>&1; then
        local execs
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        echo "== $t: ok, ${execs:-?} executions, no crash"
    else
        echo "== $t: FAILED (crash input in fuzz/artifacts/$t/):"
        grep -E -m 5 "panicked at|assertion|ERROR:|SUMMARY" "$log" || tail -20 "$log"
        return 1
    fi
}

status=0
running=0
for t in "${TARGETS[@]}"; do
    if [ "$PARALLEL" -le 1 ]; then
        run_target "$t" || status=1
    else
        run_target "$t" &
        running=$((running + 1))
        if [ "$running" -ge "$PARALLEL" ]; then
            wait -n || status=1
            running=$((running - 1))
        fi
    fi
done
while [ "$running" -gt 0 ]; do
    wait -n || status=1
    running=$((running - 1))
done

if [ "${FUZZ_CMIN:-0}" = 1 ]; then
    for t in "${TARGETS[@]}"; do
        # Edge coverage only (-use_counters=0): keeps the committed corpus small.
        cargo +nightly fuzz cmin "${BUILD[@]}" "$t" "corpus/$t" -- -max_len="$(max_len "$t")" \
            -use_counters=0 >"target/logs/$t.cmin.log" 2>&1
        echo "== $t: corpus minimized to $(find "corpus/$t" -type f | wc -l) files"
    done
fi
exit $status
