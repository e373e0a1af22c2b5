#!/bin/sh
# Runs every benchmark of BENCHMARKS.md: installs the peers (tini, dumb-init,
# runit) and curl from Debian's packages if missing, builds moltd (dynamic and
# static), then runs bench/bench.py with the given arguments, e.g.
#   bench/run.sh              # the full run (about 12 minutes on 2 cores)
#   bench/run.sh --quick      # a rough run in well under a minute, for development
#   bench/run.sh --help       # every knob (runs, payload sizes, feed rate, idle window)
# Needs root (or unprivileged user namespaces for unshare) and python3.
set -eu
cd "$(dirname "$0")/.."

missing=
for tool in tini tini-static dumb-init runsvdir curl; do
    command -v "$tool" >/dev/null || missing=1
done
if [ -n "$missing" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tini dumb-init runit curl
fi

# The two builds of the README (and .ci/run), flags included.
cargo build --release --quiet
RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' \
    cargo build --release --quiet --target x86_64-unknown-linux-gnu

exec python3 bench/bench.py "$@"
