# Shared by scripts/bench-servers.sh, scripts/bench-tls.sh and scripts/idle-rss.sh (sourced,
# not run): the output directory, the servers started and their cleanup, log lines, and
# starting a server on port 0.
#
#   bench_init NAME    after the options are parsed (OUT set or empty), from the repository
#                      root: sets OUT (a temporary directory, removed at exit, unless -o
#                      gave one), PIDS, and the EXIT/INT/TERM traps; log() then prefixes
#                      NAME.

bench_init() {
    BENCH_NAME="$1"
    if [ -z "$OUT" ]; then
        OUT=$(mktemp -d "${TMPDIR:-/tmp}/$BENCH_NAME.XXXXXX")
        KEEP_OUT=0
    else
        mkdir -p "$OUT"
        KEEP_OUT=1
    fi
    PIDS=()
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# Stops every server started (TERM, then KILL after a second), removes OUT unless kept.
bench_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        reap "$pid"
    done
    [ "$KEEP_OUT" = 1 ] || rm -rf "$OUT"
}

# reap PID [TENTHS]: once PID was sent TERM, gives it TENTHS tenths of a second (default
# 10) to exit on its own, then makes sure (KILL), and collects it.
reap() {
    local pid="$1" tenths="${2:-10}"
    for _ in $(seq 1 "$tenths"); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

log() { echo "$BENCH_NAME: $*" >&2; }

# start NAME LOGFILE COMMAND...: starts a server on port 0, waits (10 s at most) for its
# port (in OUT/NAME.port if it writes one, else its "listening on HOST:PORT" line), and
# sets PORT and PID; returns 1 if it exits or never listens.
start() {
    local name="$1" logf="$2"
    shift 2
    local portf="$OUT/$name.port"
    rm -f "$portf"
    "$@" >"$logf" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    PID=$pid
    for _ in $(seq 1 200); do
        if ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        if [ -s "$portf" ]; then
            PORT=$(tr -dc '0-9' <"$portf")
            [ -n "$PORT" ] && return 0
        fi
        PORT=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$logf" | head -n 1)
        [ -n "$PORT" ] && return 0
        sleep 0.05
    done
    return 1
}
