#!/usr/bin/env bash
# TLS against plaintext on one app-server transport (issue 13's socket figures), measured
# with app-bench.
#
#   scripts/bench-tls.sh [-t TRANSPORT] [-w WORKERS] [-r RUNS] [-d SECONDS] [-s LIST] [-o DIR] [--no-build]
#
#   -t TRANSPORT  app-server's transport: std (default), mio or tokio
#   -w WORKERS    --workers for mio and tokio (default 1: one event loop, as the issue
#                 asks); not passed to std (a thread per connection)
#   -r RUNS       runs of each measurement (default 3; the table quotes medians)
#   -d SECONDS    length of one run (default 5)
#   -s LIST       scenarios, comma-separated: ka8, ka64, os8, os8-12, mb16 (default all)
#   -o DIR        keep the certificates, the raw app-bench JSON and the server logs there
#                 (default: a temporary directory, removed at exit)
#   --no-build    use the release binaries already built
#
# Two servers run side by side on port 0: `app-server --transport T` in plaintext, and the
# same with `--tls-cert/--tls-key` (a test CA and server certificate made by app-certs in
# the temporary directory). Scenarios, each on both servers with the guide's 146-byte JSON
# search: keep-alive with 8 and with 64 connections; one-shot (connect, request, answer,
# close) with 8 connections, over TLS both with session resumption (app-bench's default:
# the connections share one session cache, tickets from earlier connections) and without
# (--no-resume: a full handshake every time); os8-12: the same one-shot runs with a client
# that offers only TLS 1.2 (--tls-version 1.2: a resumed TLS 1.2 session makes no key
# exchange, and has no forward secrecy), against os8's plaintext runs; and large
# messages: binary requests of 16 MiB one after another on one connection (the demo
# answers each with a short line), in MB/s sent. Runs are interleaved (round 1 of
# everything, then round 2, ...) and every ratio is the median over rounds of the ratio within a round,
# so drift in the machine's load spreads over all alike. Every run also reads the server's
# CPU time (user + system, /proc/PID/stat, through app-bench --server-pid) per request:
# one-shot requests/s on loopback are capped by the client's ports whichever server
# answers, and on a loaded machine CPU time is the steadier figure.
#
# Prints a markdown report on stdout (machine, load, commands, one table); progress goes
# to stderr. Every server started is stopped at exit, whatever happens. Needs cargo and
# python3.
set -euo pipefail

TRANSPORT=std
WORKERS=1
RUNS=3
SECS=5
ONLY="ka8,ka64,os8,os8-12,mb16"
OUT=""
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        -t) TRANSPORT="$2"; shift 2 ;;
        -w) WORKERS="$2"; shift 2 ;;
        -r) RUNS="$2"; shift 2 ;;
        -d) SECS="$2"; shift 2 ;;
        -s) ONLY="$2"; shift 2 ;;
        -o) OUT="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-tls: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$RUNS$SECS$WORKERS" in *[!0-9]*) echo "bench-tls: -r, -d and -w take whole numbers" >&2; exit 2 ;; esac
[ "$RUNS" -ge 1 ] && [ "$SECS" -ge 1 ] && [ "$WORKERS" -ge 1 ] || { echo "bench-tls: -r, -d and -w must be at least 1" >&2; exit 2; }
case "$TRANSPORT" in std|mio|tokio) ;; *) echo "bench-tls: -t takes std, mio or tokio" >&2; exit 2 ;; esac

cd "$(dirname "$0")/.."
ROOT=$(pwd)
command -v python3 >/dev/null || { echo "bench-tls: python3 is needed" >&2; exit 2; }

# shellcheck source=scripts/bench-common.sh
. "$ROOT/scripts/bench-common.sh"
bench_init bench-tls

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"
if [ "$BUILD" = 1 ]; then
    log "building release binaries"
    cargo build --release -q -p sockmsg-app -p sockmsg-bench -p sockmsg-tls --bins >&2
fi
for b in app-bench app-server app-certs; do
    [ -x "$BIN/$b" ] || { log "missing $BIN/$b (build with cargo build --release -p sockmsg-app -p sockmsg-bench -p sockmsg-tls)"; exit 2; }
done

CERTS="$OUT/certs"
"$BIN/app-certs" "$CERTS" >&2


SERVER_ARGS=(--transport "$TRANSPORT")
SHOWN="--transport $TRANSPORT"
if [ "$TRANSPORT" != std ]; then
    SERVER_ARGS+=(--workers "$WORKERS")
    SHOWN="$SHOWN --workers $WORKERS"
fi
TLS_ARGS=(--tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server-key.pem")

if start plain "$OUT/plain.log" env RUST_LOG=warn "$BIN/app-server" 127.0.0.1 0 "${SERVER_ARGS[@]}"; then
    PLAIN_PORT=$PORT; PLAIN_PID=$PID
else
    log "app-server $SHOWN did not start:"; cat "$OUT/plain.log" >&2; exit 1
fi
if start tls "$OUT/tls.log" env RUST_LOG=warn "$BIN/app-server" 127.0.0.1 0 "${SERVER_ARGS[@]}" "${TLS_ARGS[@]}"; then
    TLS_PORT=$PORT; TLS_PID=$PID
else
    log "app-server $SHOWN with TLS did not start:"; cat "$OUT/tls.log" >&2; exit 1
fi

# Runs: name, server (plain or tls), app-bench arguments after HOST PORT.
declare -A RUN_SERVER RUN_ARGS
RUNS_LIST=()
add_run() { RUNS_LIST+=("$1"); RUN_SERVER[$1]="$2"; RUN_ARGS[$1]="$3"; }
TLS_BENCH="--tls --ca $CERTS/ca.pem --server-name localhost"
for sc in ka8 ka64 os8 os8-12 mb16; do
    case ",$ONLY," in *",$sc,"*) ;; *) continue ;; esac
    case "$sc" in
        ka8) a="-c 8" ;;
        ka64) a="-c 64" ;;
        os8|os8-12) a="-c 8 --one-shot" ;;
        mb16) a="-c 1 --binary -s 16777216" ;;
    esac
    if [ "$sc" = os8-12 ]; then
        # Against os8's plaintext runs (taken here when os8 itself is not asked for).
        [ -n "${RUN_SERVER[os8.plain]:-}" ] || add_run os8.plain plain "$a"
        add_run os8.tls12 tls "$a $TLS_BENCH --tls-version 1.2"
        add_run os8.tls12-noresume tls "$a $TLS_BENCH --tls-version 1.2 --no-resume"
        continue
    fi
    add_run "$sc.plain" plain "$a"
    add_run "$sc.tls" tls "$a $TLS_BENCH"
    [ "$sc" = os8 ] && add_run "$sc.tls-noresume" tls "$a $TLS_BENCH --no-resume"
done
[ ${#RUNS_LIST[@]} -gt 0 ] || { echo "bench-tls: -s takes ka8, ka64, os8, os8-12 and/or mb16" >&2; exit 2; }

total=$(( ${#RUNS_LIST[@]} * RUNS ))
log "$total runs of ${SECS}s each, about $((total * (SECS + 1))) s"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')
n=0
for round in $(seq 1 "$RUNS"); do
    for run in "${RUNS_LIST[@]}"; do
        n=$((n + 1))
        if [ "${RUN_SERVER[$run]}" = tls ]; then port=$TLS_PORT; pid=$TLS_PID; else port=$PLAIN_PORT; pid=$PLAIN_PID; fi
        log "[$n/$total] round $round: $run: app-bench 127.0.0.1 $port ${RUN_ARGS[$run]} -d ${SECS}s --server-pid $pid"
        # Bounded: the run stops itself after SECS; timeout is the safety net.
        # shellcheck disable=SC2086
        timeout $((SECS + 60)) "$BIN/app-bench" 127.0.0.1 "$port" ${RUN_ARGS[$run]} -d "${SECS}s" \
            --server-pid "$pid" --json -q \
            >"$OUT/$run.$round.json" 2>"$OUT/$run.$round.err" || true
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')

{
    echo "Machine: $(uname -srm); $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || echo '?'), $(nproc 2>/dev/null || echo '?') CPUs; commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo "Load average (1, 5, 15 min) before: $LOAD_START; after: $LOAD_END."
    echo
    echo "Reproduce: \`scripts/bench-tls.sh -t $TRANSPORT$([ "$TRANSPORT" != std ] && echo " -w $WORKERS") -r $RUNS -d $SECS -s $ONLY\`. Servers (port 0):"
    echo
    echo "- plaintext: \`RUST_LOG=warn app-server 127.0.0.1 0 $SHOWN\`"
    echo "- TLS: \`RUST_LOG=warn app-server 127.0.0.1 0 $SHOWN --tls-cert server.pem --tls-key server-key.pem\` (app-certs)"
    echo "- load: \`app-bench 127.0.0.1 PORT ARGS -d ${SECS}s --server-pid PID\`, with \`--tls --ca ca.pem --server-name localhost\` for TLS"
    echo
} >"$OUT/head.md"

python3 - "$OUT" "$RUNS" "${RUNS_LIST[@]}" <<'PY' >"$OUT/table.md"
import json, os, statistics, sys
out, runs, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def load(name):
    rs = {}
    for r in range(1, runs + 1):
        try:
            with open(os.path.join(out, f"{name}.{r}.json")) as f:
                rs[r] = json.loads(f.read())
        except (OSError, ValueError):
            pass
    return rs

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def cpu(result):
    return (result.get("server_cpu") or {}).get("us_per_request")

def fmt(x, spec):
    return format(x, spec) if x is not None else "–"

def paired(mine, base, key):
    ratios = [key(mine[r]) / key(base[r]) for r in mine
              if r in base and key(mine[r]) and key(base[r])]
    return med(ratios)

titles = {
    "ka8": "keep-alive, 8 connections (`-c 8`)",
    "ka64": "keep-alive, 64 connections (`-c 64`)",
    "os8": "one-shot, 8 connections (`-c 8 --one-shot`)",
    "mb16": "16 MiB binary requests, 1 connection (`-c 1 --binary -s 16777216`)",
}
print("| scenario | server | requests/s | MB/s sent | vs plaintext | server CPU µs/request | vs plaintext | handshakes (full / resumed) | errors |")
print("|---|---|---:|---:|---:|---:|---:|---|---:|")
data = {n: load(n) for n in names}
for name in names:
    sc, kind = name.split(".", 1)
    rs = data[name]
    base = data.get(f"{sc}.plain", {})
    rps = med([r["requests_per_s"] for r in rs.values()])
    mbs = med([r["sent_bytes_per_s"] / 1e6 for r in rs.values()])
    us = med([cpu(r) for r in rs.values()])
    label = {"plain": "plaintext", "tls": "TLS (1.3 and 1.2 offered)",
             "tls-noresume": "TLS, no resumption",
             "tls12": "TLS 1.2 only (`--tls-version 1.2`)",
             "tls12-noresume": "TLS 1.2 only, no resumption"}[kind]
    if kind == "plain":
        vs_rps = vs_cpu = "1"
    else:
        vs_rps = fmt(paired(rs, base, lambda r: r["requests_per_s"]), ".2f")
        vs_cpu = fmt(paired(rs, base, cpu), ".2f")
    hs = "–"
    if kind != "plain" and rs:
        full = med([(r.get("tls") or {}).get("full", 0) for r in rs.values()])
        resumed = med([(r.get("tls") or {}).get("resumed", 0) for r in rs.values()])
        tls12 = med([(r.get("tls") or {}).get("tls12", 0) for r in rs.values()])
        hs = f"{full:.0f} / {resumed:.0f}" + (f" (TLS 1.2: {tls12:.0f})" if tls12 else "")
    errors = sum(r["errors"]["total"] for r in rs.values())
    rps_spec = ".2f" if sc == "mb16" else ".0f"
    print(f"| {titles[sc]} | {label} | {fmt(rps, rps_spec)} | {fmt(mbs, '.1f')} | {vs_rps} | {fmt(us, '.0f')} | {vs_cpu} | {hs} | {errors} |")
print()
print(f"Medians of {runs} runs; each ratio is the median over rounds of TLS / plaintext "
      "within a round. Handshakes are per run (median). Server CPU is user + system time of "
      "the server process (10 ms ticks) per right answer.")
PY
cat "$OUT/head.md" "$OUT/table.md"
