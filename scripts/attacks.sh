#!/usr/bin/env bash
# The attacks of issue 12 against a release app-server on each transport, and against
# app-client (fake servers), on 127.0.0.1 only; prints the table of RELIABILITY.md.
#
#   scripts/attacks.sh                     # every attack on every transport (about 4 min)
#   scripts/attacks.sh --transport std     # one transport
#   scripts/attacks.sh --only keys --only client
#
# Attack names: keys nested header numbers never-read slow-read slots idle forged-log log-volume
# client.
# Needs python3 (3.8+) and about 1 GiB of free memory (the 16 MiB attacks). 5,000 idle
# connections need `ulimit -n` above 10,000 (raised here when the hard limit allows).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p sockmsg-app --bin app-server --bin app-client
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10240 ]; then
    echo "attacks.sh: ulimit -n is $(ulimit -n): the 5,000 idle connections attack may fail" >&2
fi
PY=$(command -v python3.11 || command -v python3)
exec "$PY" scripts/attacks.py --server target/release/app-server \
    --client target/release/app-client "$@"
