#!/usr/bin/env bash
# CPU and file descriptors of an app-server holding idle connections.
#
#   scripts/idle-cpu.sh [-n CONNECTIONS] [-s SECONDS] [-t mio|std] [--bin PATH]
#
#   -n   idle connections to open (default 1000)
#   -s   how long to measure once they are open (default 10)
#   -t   the transport (default std)
#   --bin  the app-server binary (default: target/release/app-server, built if missing)
#
# Starts app-server on a free loopback port, opens the connections from a python3 child
# (they send nothing), then reads the server's CPU time (/proc/PID/stat, user + system)
# over the window and its open file descriptors. Prints one line:
#   transport, connections, CPU % of one core while idle, fds per connection.
# Linux only. Every process started is stopped at exit.
set -euo pipefail
N=1000
SECS=10
TRANSPORT=std
BIN=""
while [ $# -gt 0 ]; do
    case "$1" in
        -n) N="$2"; shift 2 ;;
        -s) SECS="$2"; shift 2 ;;
        -t) TRANSPORT="$2"; shift 2 ;;
        --bin) BIN="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "idle-cpu: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
if [ -z "$BIN" ]; then
    BIN="${CARGO_TARGET_DIR:-target}/release/app-server"
    [ -x "$BIN" ] || cargo build --release --quiet --bin app-server
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

OUT=$(mktemp -d "${TMPDIR:-/tmp}/idle-cpu.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$OUT"
}
trap cleanup EXIT

RUST_LOG=warn "$BIN" 127.0.0.1 0 --transport "$TRANSPORT" --max-connections $((N + 16)) \
    --idle-timeout 600 >"$OUT/server.out" 2>"$OUT/server.err" &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 100); do
    grep -q '^listening on' "$OUT/server.out" 2>/dev/null && break
    sleep 0.1
done
ADDR=$(sed -n 's/^listening on //p' "$OUT/server.out")
[ -n "$ADDR" ] || { echo "idle-cpu: the server did not start: $(cat "$OUT/server.err")" >&2; exit 1; }
PORT=${ADDR##*:}

python3 - "$PORT" "$N" "$OUT/ready" <<'PY' &
import socket, sys, time, resource
port, n, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
open(ready, "w").close()
time.sleep(3600)
PY
PIDS+=("$!")
for _ in $(seq 300); do [ -e "$OUT/ready" ] && break; sleep 0.1; done
[ -e "$OUT/ready" ] || { echo "idle-cpu: the connections were not opened" >&2; exit 1; }
sleep 1 # let the server settle (threads started, sessions idle)

ticks() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
HZ=$(getconf CLK_TCK)
before=$(ticks)
sleep "$SECS"
after=$(ticks)
FDS=$(ls "/proc/$SERVER/fd" | wc -l)
python3 -c "
cpu = ($after - $before) / $HZ / $SECS * 100
print(f'transport $TRANSPORT, $N idle connections: {cpu:.2f}% of one core over ${SECS} s, $FDS fds ({$FDS / $N:.2f} per connection)')
"
