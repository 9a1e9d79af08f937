#!/usr/bin/env bash
# User-space memory per idle connection of the mio server.
#
#   transport-mio/scripts/idle-memory.sh [CONNECTIONS] [--workers W]
#
# Builds the `idle_memory` example in release mode and runs it: the server runs in that
# process under a counting allocator; a child process opens CONNECTIONS (default 10,000)
# idle loopback connections to it. Prints the server's heap and RSS growth per connection,
# fresh and after one request each. Needs about CONNECTIONS + 256 open files per process:
# this script raises its own soft limit to the hard limit (the program raises it too).
# Linux only (/proc/self/status).
set -euo pipefail
cd "$(dirname "$0")/../.."

n="${1:-10000}"
shift || true

hard="$(ulimit -Hn)"
if [ "$hard" = unlimited ]; then
    ulimit -n 1048576 2>/dev/null || ulimit -n 65536
else
    ulimit -n "$hard"
fi
need=$((n + 256))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
    echo "idle-memory: need $need open files per process, the hard limit is $hard" >&2
    exit 1
fi

cargo build --release --quiet -p sockmsg-transport-mio --example idle_memory
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/examples/idle_memory" --connections "$n" "$@"
