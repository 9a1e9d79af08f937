#!/usr/bin/env bash
# Server benchmark: the echo baseline, app-server on each transport, and the Python
# one-shot server written from PROTOCOL.md, all measured with the same app-bench.
#
#   scripts/bench-servers.sh [-r RUNS] [-d SECONDS] [-s LIST] [-S LIST] [-o DIR] [--no-build]
#
#   -r RUNS      runs of each measurement (default 3; the table quotes medians)
#   -d SECONDS   length of one run (default 5)
#   -s LIST      scenarios to run, comma-separated: ka8, ka64, os8, pl16 (default all four)
#   -S LIST      servers to run, comma-separated, from: echo, echoN, app-std, app-mio,
#                app-mio1, app-tokio1, tokio-base, python (default all; the echo baseline
#                is always run, every ratio is to it)
#   -o DIR       keep the raw app-bench JSON and the server logs there (default: a
#                temporary directory, removed at exit)
#   --no-build   use the release binaries already built
#
# Scenarios: keep-alive with 8 and with 64 connections, and one-shot (connect, request,
# answer, close) with 8 connections, and pipelined (16 requests in flight on each of 8
# keep-alive connections). sockmsg servers get the guide's 146-byte JSON search;
# the echo baseline gets 146 raw bytes echoed back (app-bench --echo), the same bytes per
# request, so every figure is also given as a ratio of the echo baseline in the same round
# (the median of the per-round ratios):
# of the one-loop echo server, and of the echo server with a loop per core (the like for
# like of app-server's default). app-server's mio transport is measured both with its
# default (a loop per core) and with --workers 1 (the like for like of the one-loop echo).
# app-server's tokio transport is measured with --workers 1 (a current-thread runtime), next
# to tokio-baseline, the same demo server written as a competent tokio user writes it
# without sockmsg (tokio-util codec + serde_json, current-thread runtime; it answers byte
# for byte as app-server does).
# Runs are interleaved (round 1 of every server and scenario, then round 2, ...) so that
# drift in the machine's load spreads over all servers alike.
#
# Every run also reads the server's CPU time (user + system, /proc/PID/stat, through
# app-bench --server-pid) and reports it per request. One-shot requests/s on loopback are
# capped by the client's TIME_WAIT ports (near 14 k connections/s here) whichever server
# answers, so the one-shot comparison is made on CPU per request.
#
# Prints a markdown report on stdout (machine, commands, one table per scenario); progress
# goes to stderr. Every server started is stopped at exit, whatever happens. Needs cargo
# and python3.
set -euo pipefail

RUNS=3
SECS=5
ONLY="ka8,ka64,os8,pl16"
SERVERS="echo,echoN,app-std,app-mio,app-mio1,app-tokio1,tokio-base,python"
OUT=""
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        -r) RUNS="$2"; shift 2 ;;
        -d) SECS="$2"; shift 2 ;;
        -s) ONLY="$2"; shift 2 ;;
        -o) OUT="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -S) SERVERS="$2"; shift 2 ;;
        -h|--help) sed -n '2,41p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-servers: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$RUNS$SECS" in *[!0-9]*) echo "bench-servers: -r and -d take whole numbers" >&2; exit 2 ;; esac
[ "$RUNS" -ge 1 ] && [ "$SECS" -ge 1 ] || { echo "bench-servers: -r and -d must be at least 1" >&2; exit 2; }

cd "$(dirname "$0")/.."
ROOT=$(pwd)
command -v python3 >/dev/null || { echo "bench-servers: python3 is needed" >&2; exit 2; }

# shellcheck source=scripts/bench-common.sh
. "$ROOT/scripts/bench-common.sh"
bench_init bench-servers

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"
if [ "$BUILD" = 1 ]; then
    log "building release binaries"
    cargo build --release -q -p sockmsg-app -p sockmsg-bench --bins >&2
fi
for b in app-bench echo-baseline app-server tokio-baseline; do
    [ -x "$BIN/$b" ] || { log "missing $BIN/$b (build with cargo build --release -p sockmsg-app -p sockmsg-bench)"; exit 2; }
done


# wanted NAME: whether -S names this server.
wanted() { case ",$SERVERS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# Servers: name, what the table calls it, kind of requests, whether it keeps connections.
NAMES=()
declare -A LABEL PORTS KIND KEEPALIVE CMD SPID
add_server() { # NAME LABEL KIND KEEPALIVE SHOWN_COMMAND (after start: PORT, PID)
    NAMES+=("$1"); LABEL[$1]="$2"; KIND[$1]="$3"; KEEPALIVE[$1]="$4"; CMD[$1]="$5"; PORTS[$1]="$PORT"
    SPID[$1]="$PID"
}

if start echo "$OUT/echo.log" "$BIN/echo-baseline" 127.0.0.1 0; then
    add_server echo "echo baseline (mio, 1 thread, no framing)" echo 1 "echo-baseline 127.0.0.1 PORT"
else
    log "the echo baseline did not start:"; cat "$OUT/echo.log" >&2; exit 1
fi
# The echo baseline with one loop per core, as app-server's mio transport runs by default.
LOOPS=$(nproc 2>/dev/null || echo 2)
if ! wanted echoN; then
    :
elif start echoN "$OUT/echoN.log" "$BIN/echo-baseline" 127.0.0.1 0 --workers "$LOOPS"; then
    add_server echoN "echo baseline, $LOOPS loops" echo 1 "echo-baseline 127.0.0.1 PORT --workers $LOOPS"
else
    log "the echo baseline with $LOOPS loops did not start, skipped: $(head -c 300 "$OUT/echoN.log")"
fi
for transport in std mio; do
    wanted "app-$transport" || continue
    if start "app-$transport" "$OUT/app-$transport.log" \
        env RUST_LOG=warn "$BIN/app-server" 127.0.0.1 0 --transport "$transport"; then
        add_server "app-$transport" "app-server --transport $transport" json 1 \
            "RUST_LOG=warn app-server 127.0.0.1 PORT --transport $transport"
    else
        log "app-server --transport $transport is not available, skipped: $(head -c 300 "$OUT/app-$transport.log")"
    fi
done
# The mio transport with one event loop, as the echo baseline has: on a 2-core machine the
# load generator needs the other core.
if ! wanted app-mio1; then
    :
elif start app-mio1 "$OUT/app-mio1.log" \
    env RUST_LOG=warn "$BIN/app-server" 127.0.0.1 0 --transport mio --workers 1; then
    add_server app-mio1 "app-server --transport mio --workers 1" json 1 \
        "RUST_LOG=warn app-server 127.0.0.1 PORT --transport mio --workers 1"
else
    log "app-server --workers 1 did not start, skipped: $(head -c 300 "$OUT/app-mio1.log")"
fi
# The tokio transport on a current-thread runtime, and the idiomatic tokio server.
if ! wanted app-tokio1; then
    :
elif start app-tokio1 "$OUT/app-tokio1.log" \
    env RUST_LOG=warn "$BIN/app-server" 127.0.0.1 0 --transport tokio --workers 1; then
    add_server app-tokio1 "app-server --transport tokio --workers 1" json 1 \
        "RUST_LOG=warn app-server 127.0.0.1 PORT --transport tokio --workers 1"
else
    log "app-server --transport tokio --workers 1 did not start, skipped: $(head -c 300 "$OUT/app-tokio1.log")"
fi
if ! wanted tokio-base; then
    :
elif start tokio-base "$OUT/tokio-base.log" "$BIN/tokio-baseline" 127.0.0.1 0; then
    add_server tokio-base "idiomatic tokio server (tokio-util codec + serde_json, current-thread)" json 1 \
        "tokio-baseline 127.0.0.1 PORT"
else
    log "tokio-baseline did not start, skipped: $(head -c 300 "$OUT/tokio-base.log")"
fi
if ! wanted python; then
    :
elif start python "$OUT/python.log" python3 "$ROOT/tests/python/oneshot_server.py" 127.0.0.1 0 \
    --port-file "$OUT/python.port"; then
    add_server python "Python one-shot server (tests/python/oneshot_server.py)" json 0 \
        "python3 tests/python/oneshot_server.py 127.0.0.1 PORT"
else
    log "the Python one-shot server did not start, skipped: $(head -c 300 "$OUT/python.log")"
fi

SCENARIOS=()
for sc in ka8 ka64 os8 pl16; do
    case ",$ONLY," in *",$sc,"*) SCENARIOS+=("$sc") ;; esac
done
[ ${#SCENARIOS[@]} -gt 0 ] || { echo "bench-servers: -s takes ka8, ka64, os8 and/or pl16" >&2; exit 2; }
declare -A SC_TITLE SC_ARGS
SC_TITLE[ka8]="keep-alive, 8 connections"; SC_ARGS[ka8]="-c 8"
SC_TITLE[ka64]="keep-alive, 64 connections"; SC_ARGS[ka64]="-c 64"
SC_TITLE[os8]="one-shot (connect, request, answer, close), 8 connections"; SC_ARGS[os8]="-c 8 --one-shot"
SC_TITLE[pl16]="pipelined 16 deep, 8 connections"; SC_ARGS[pl16]="-c 8 -P 16"

bench_args() { # NAME SCENARIO -> app-bench arguments after HOST PORT
    local extra=""
    [ "${KIND[$1]}" = echo ] && extra=" --echo"
    echo "${SC_ARGS[$2]} -d ${SECS}s$extra"
}

total=0
for sc in "${SCENARIOS[@]}"; do
    for name in "${NAMES[@]}"; do
        [ "$sc" != os8 ] && [ "${KEEPALIVE[$name]}" = 0 ] && continue
        total=$((total + RUNS))
    done
done
log "$total runs of ${SECS}s each, about $((total * (SECS + 1))) s"

n=0
for round in $(seq 1 "$RUNS"); do
    for sc in "${SCENARIOS[@]}"; do
        for name in "${NAMES[@]}"; do
            [ "$sc" != os8 ] && [ "${KEEPALIVE[$name]}" = 0 ] && continue
            n=$((n + 1))
            args=$(bench_args "$name" "$sc")
            log "[$n/$total] round $round: ${LABEL[$name]}: app-bench 127.0.0.1 ${PORTS[$name]} $args --server-pid ${SPID[$name]}"
            # Bounded: the run stops itself after SECS; timeout is the safety net.
            # shellcheck disable=SC2086
            timeout $((SECS + 60)) "$BIN/app-bench" 127.0.0.1 "${PORTS[$name]}" $args \
                --server-pid "${SPID[$name]}" --json -q \
                >"$OUT/$name.$sc.$round.json" 2>"$OUT/$name.$sc.$round.err" || true
        done
    done
done

# The report.
{
    echo "## Server benchmark, $(date -u +%Y-%m-%d)"
    echo
    echo "Machine: $(uname -srm); $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || echo '?'), $(nproc 2>/dev/null || echo '?') CPUs; $(rustc --version 2>/dev/null || echo 'rustc ?'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')."
    echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')."
    echo
    echo "Reproduce: \`scripts/bench-servers.sh -r $RUNS -d $SECS -s $ONLY -S $SERVERS\`. Each figure is the median of $RUNS runs of ${SECS} s; each ratio is the median over rounds of the ratio within a round (the runs of a round are back to back); client and servers share the machine (loopback). Server CPU is user + system time of the server's process during the run (/proc/PID/stat, 10 ms ticks), per right answer."
    echo "Servers (started on port 0; PORT is the one each reported):"
    echo
    for name in "${NAMES[@]}"; do
        echo "- ${LABEL[$name]}: \`${CMD[$name]}\`"
    done
    echo
} >"$OUT/head.md"

python3 - "$OUT" "$RUNS" "$SECS" "${#NAMES[@]}" "${NAMES[@]}" <<'PY' >"$OUT/tables.md"
import json, os, statistics, sys
out, runs, secs, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
names = sys.argv[5:5 + count]
labels = {
    "echo": "echo baseline", "app-std": "app-server std", "app-mio": "app-server mio",
    "app-mio1": "app-server mio, 1 loop", "echoN": "echo baseline, a loop per core",
    "python": "Python one-shot", "app-tokio1": "app-server tokio, current-thread",
    "tokio-base": "idiomatic tokio server",
}
scenarios = [
    ("ka8", "keep-alive, 8 connections", "-c 8"),
    ("ka64", "keep-alive, 64 connections", "-c 64"),
    ("os8", "one-shot (connect, request, answer, close), 8 connections", "-c 8 --one-shot"),
    ("pl16", "pipelined 16 deep, 8 connections", "-c 8 -P 16"),
]

def load(name, sc):
    rs = []
    for r in range(1, runs + 1):
        path = os.path.join(out, f"{name}.{sc}.{r}.json")
        try:
            with open(path) as f:
                result = json.loads(f.read())
                result["round"] = r
                rs.append(result)
        except (OSError, ValueError):
            pass
    return rs

def med(xs):
    return statistics.median(xs) if xs else None

for sc, title, args in scenarios:
    rows = []
    for name in names:
        rs = load(name, sc)
        if not rs:
            continue
        rps = [r["requests_per_s"] for r in rs]
        rows.append((name, rs, med(rps)))
    if not rows:
        continue
    def cpu(r):
        c = r.get("server_cpu") or {}
        return c.get("us_per_request")

    by_round = {n: {r["round"]: r["requests_per_s"] for r in rs} for n, rs, _ in rows}
    cpu_by_round = {n: {r["round"]: cpu(r) for r in rs if cpu(r)} for n, rs, _ in rows}

    def paired(name, base, table=by_round):
        # Median over rounds of (this server / the baseline in the same round): the runs
        # of one round are back to back, so this cancels drift in the machine's load.
        mine, theirs = table.get(name, {}), table.get(base, {})
        ratios = [mine[r] / theirs[r] for r in mine if theirs.get(r)]
        return f"{med(ratios):.2f}" if ratios else "–"

    print(f"### {title}")
    print()
    if sc == "os8":
        print("One-shot requests/s on loopback are capped by the client's TIME_WAIT ports, so "
              "fast servers read alike there: compare them on server CPU per request (lower is "
              "better; \"CPU vs echo\" is the median over rounds of this server's CPU per "
              "request ÷ the echo baseline's in the same round).")
        print()
    print("| server | requests/s (median) | vs echo | vs echo, a loop per core | server CPU µs/request (median) | CPU vs echo | vs idiomatic tokio | CPU vs idiomatic tokio | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | requests/s of each run | CPU µs/request of each run |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for name, rs, m in rows:
        def lat(k):
            xs = [r["latency"][k] for r in rs if r.get("latency")]
            return f"{med(xs) / 1000.0:.3f}" if xs else "–"
        errors = sum(r["errors"]["total"] for r in rs)
        ratio = paired(name, "echo")
        ratio_n = paired(name, "echoN")
        cpus = [cpu(r) for r in rs if cpu(r)]
        cpu_med = f"{med(cpus):.1f}" if cpus else "–"
        cpu_ratio = paired(name, "echo", cpu_by_round)
        each = ", ".join(f"{r['requests_per_s']:.0f}" for r in rs)
        each_cpu = ", ".join(f"{c:.1f}" for c in cpus) or "–"
        missing = runs - len(rs)
        if missing:
            each += f" ({missing} run(s) failed)"
        print(f"| {labels.get(name, name)} | {m:.0f} | {ratio} | {ratio_n} | {cpu_med} | {cpu_ratio} | {paired(name, 'tokio-base')} | {paired(name, 'tokio-base', cpu_by_round)} | {lat('p50_us')} | {lat('p90_us')} "
              f"| {lat('p99_us')} | {lat('p999_us')} | {lat('max_us')} | {errors} | {each} | {each_cpu} |")
    print()
    print(f"Command: `app-bench 127.0.0.1 PORT {args} -d {secs}s --server-pid PID --json` (with `--echo` for the echo baseline).")
    firsts = [(n, r["first_error"]) for n, rs, _ in rows for r in rs if r.get("first_error")]
    for n, e in firsts[:3]:
        print(f"First error ({labels.get(n, n)}): {e}")
    print()
PY

cat "$OUT/head.md" "$OUT/tables.md"
[ "$KEEP_OUT" = 1 ] && log "raw results and server logs in $OUT"
exit 0
