#!/usr/bin/env bash
# Memory per idle connection of a real app-server process, plaintext and TLS side by side
# (issue 4's and issue 13's figures, over sockets).
#
#   scripts/idle-rss.sh [-n CONNECTIONS] [-t LIST] [-w WORKERS] [-o DIR] [--no-build]
#
#   -n CONNECTIONS  idle connections per server (default 10000; the std transport serves
#                   at most 4,000, a thread each: it gets min(CONNECTIONS, 3900))
#   -t LIST         transports, comma-separated: mio, tokio, std (default mio,tokio)
#   -w WORKERS      --workers for mio and tokio (default 1)
#   -o DIR          keep the certificates, the server logs and the raw JSON there
#                   (default: a temporary directory, removed at exit)
#   --no-build      use the release binaries already built
#
# For each transport, one server after the other (never two at once): `app-server
# --transport T --workers W` on a free loopback port, plaintext, then the same with
# `--tls-cert/--tls-key` (a test CA and server certificate made by app-certs in the
# temporary directory), run with --max-connections above CONNECTIONS, the idle and
# first-byte timeouts off (so nothing is closed while the connections are opened and
# measured), and this script's open-file limit raised to the hard limit. The client is
# scripts/idle_rss.py: Python's ssl module, a peer nobody here wrote, one full TLS
# handshake per connection (certificate and name checked), as the plaintext figure of
# BENCHMARKS.md was taken with a Python client. It reads the server's resident set
# (VmRSS) once it stops moving: before, with the connections open ("fresh": accepted, and
# for TLS the handshake done, nothing else sent) and after one search request on each
# (written on every connection, then every answer read: a burst), idle again; and the server's CPU time while the connections were opened (for TLS: the
# handshakes) and while the requests were answered.
#
# Prints a markdown table on stdout: RSS growth per connection, fresh and after one
# request, plaintext and TLS, and the server's CPU per connection opened. Progress goes to
# stderr. Every server started is stopped at exit, whatever happens. Linux only (/proc);
# needs python3 and about CONNECTIONS + 64 open files per process.
set -euo pipefail

N=10000
LIST="mio,tokio"
WORKERS=1
OUT=""
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        -n) N="$2"; shift 2 ;;
        -t) LIST="$2"; shift 2 ;;
        -w) WORKERS="$2"; shift 2 ;;
        -o) OUT="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "idle-rss: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$N$WORKERS" in *[!0-9]*|"") echo "idle-rss: -n and -w take whole numbers" >&2; exit 2 ;; esac
[ "$N" -ge 1 ] && [ "$WORKERS" -ge 1 ] || { echo "idle-rss: -n and -w must be at least 1" >&2; exit 2; }
IFS=, read -r -a TRANSPORTS <<<"$LIST"
for t in "${TRANSPORTS[@]}"; do
    case "$t" in std|mio|tokio) ;; *) echo "idle-rss: -t takes mio, tokio or std (comma-separated), not '$t'" >&2; exit 2 ;; esac
done

cd "$(dirname "$0")/.."
ROOT=$(pwd)
command -v python3 >/dev/null || { echo "idle-rss: python3 is needed" >&2; exit 2; }
[ -r /proc/self/status ] || { echo "idle-rss: needs Linux's /proc" >&2; exit 2; }

# One limit for this script and its children (the server and the client).
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ]; then
    ulimit -n 1048576 2>/dev/null || ulimit -n 65536
else
    ulimit -n "$hard"
fi
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((N + 64)) ]; then
    echo "idle-rss: $((N + 64)) open files per process are needed, the hard limit is $hard" >&2
    exit 1
fi

# shellcheck source=scripts/bench-common.sh
. "$ROOT/scripts/bench-common.sh"
bench_init idle-rss

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"
if [ "$BUILD" = 1 ]; then
    log "building release binaries"
    cargo build --release -q -p sockmsg-app -p sockmsg-tls --bins >&2
fi
for b in app-server app-certs; do
    [ -x "$BIN/$b" ] || { log "missing $BIN/$b (build with cargo build --release -p sockmsg-app -p sockmsg-tls)"; exit 2; }
done

CERTS="$OUT/certs"
"$BIN/app-certs" --force "$CERTS" >/dev/null

# run TRANSPORT MODE CONNECTIONS: one server, its connections, one JSON line in
# OUT/TRANSPORT-MODE.json; the server is stopped before it returns.
run() {
    local t="$1" mode="$2" n="$3"
    local args=(--transport "$t" --max-connections $((n + 100)) --idle-timeout 0 --first-byte-timeout 0)
    [ "$t" = std ] || args+=(--workers "$WORKERS")
    local client=()
    if [ "$mode" = tls ]; then
        args+=(--tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server-key.pem")
        client=(--ca "$CERTS/ca.pem")
    fi
    log "$t $mode: $n connections"
    : >"$OUT/$t-$mode.log"
    if ! start "$t-$mode" "$OUT/$t-$mode.log" env RUST_LOG=warn "$BIN/app-server" 127.0.0.1 0 "${args[@]}"; then
        log "app-server ${args[*]} did not start:"
        cat "$OUT/$t-$mode.log" >&2
        exit 1
    fi
    local pid=$PID
    python3 "$ROOT/scripts/idle_rss.py" --pid "$pid" --port "$PORT" -n "$n" "${client[@]}" \
        >"$OUT/$t-$mode.json"
    kill -TERM "$pid" 2>/dev/null || true
    reap "$pid" 100 # closing thousands of connections may take a while
}

for t in "${TRANSPORTS[@]}"; do
    n=$N
    if [ "$t" = std ] && [ "$n" -gt 3900 ]; then
        n=3900
    fi
    run "$t" plain "$n"
    run "$t" tls "$n"
done

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
echo "Server RSS growth per connection (\`app-server --transport T --workers $WORKERS\`, loopback,"
echo "Python client; load average at the end: $LOAD; $(date -u '+%Y-%m-%d %H:%M UTC'), commit"
echo "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)):"
echo
python3 - "$OUT" "${TRANSPORTS[@]}" <<'PY'
import json, sys
out, transports = sys.argv[1], sys.argv[2:]
print("| transport | connections | plaintext: fresh | after 1 request | TLS: fresh | after 1 request "
      "| server CPU per connection opened: plaintext / TLS | per request: plaintext / TLS | threads |")
print("|---|---:|---:|---:|---:|---:|---|---|---:|")
for t in transports:
    r = {m: json.load(open(f"{out}/{t}-{m}.json")) for m in ("plain", "tls")}
    n = r["plain"]["connections"]
    def per(m, k):
        return (r[m][k] - r[m]["base_rss"]) / r[m]["connections"]
    def us(m, k):
        return r[m][k] / r[m]["connections"] * 1e6
    print(f"| {t} | {n:,} | {per('plain', 'fresh_rss'):,.0f} B | {per('plain', 'after_rss'):,.0f} B "
          f"| {per('tls', 'fresh_rss'):,.0f} B | {per('tls', 'after_rss'):,.0f} B "
          f"| {us('plain', 'open_cpu_s'):,.0f} / {us('tls', 'open_cpu_s'):,.0f} µs "
          f"| {us('plain', 'request_cpu_s'):,.0f} / {us('tls', 'request_cpu_s'):,.0f} µs "
          f"| {r['tls']['threads']:,} |")
negotiated = {json.load(open(f"{out}/{t}-tls.json")).get("negotiated") for t in transports}
print()
print(f"TLS: {', '.join(sorted(n for n in negotiated if n))}, a full handshake per connection "
      "(no resumption), ECDSA P-256 certificate from app-certs.")
PY
