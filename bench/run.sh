#!/bin/sh
# Runs every benchmark of BENCHMARKS.md: installs the peers (tini, dumb-init,
# runit) and curl from Debian's packages if missing, builds moltd (dynamic and
# static), then runs bench/bench.py with the given arguments, e.g.
#   bench/run.sh              # the full run (about 12 minutes on 2 cores)
#   bench/run.sh --quick      # a rough run in well under a minute, for development
#   bench/run.sh --only 13    # 100 self-updates of PID 1 (issue 17)
#   bench/run.sh --help       # every knob (runs, payload sizes, feed rate, idle window)
#   bench/run.sh --baseline REV [ARGS]
#                             # also builds commit REV (both builds, in
#                             # target/bench-baseline/) and measures it beside
#                             # the work tree's in the same run
# Needs root (or unprivileged user namespaces for unshare) and python3.
set -eu
cd "$(dirname "$0")/.."

# Take --baseline REV out of the arguments; pass the rest on.
baseline=
for arg; do
    shift
    if [ "$baseline" = - ]; then
        baseline=$arg
    elif [ "$arg" = --baseline ]; then
        baseline=-
    else
        set -- "$@" "$arg"
    fi
done
[ "$baseline" != - ] || { echo "bench/run.sh: --baseline needs a commit" >&2; exit 2; }

missing=
for tool in tini tini-static dumb-init runsvdir curl; do
    command -v "$tool" >/dev/null || missing=1
done
if [ -n "$missing" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tini dumb-init runit curl
fi

# The two builds of the README (and .ci/run), flags included, of the tree in
# the current directory into the target directory $1.
build() {
    CARGO_TARGET_DIR=$1 cargo build --release --quiet
    RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' \
        CARGO_TARGET_DIR=$1 cargo build --release --quiet --target x86_64-unknown-linux-gnu
}
build "$PWD/target"

# Item 13's second build: the same tree saying it is 0.1.1 (src/version.rs),
# made in the same target folder (only moltd itself is rebuilt) and kept
# aside, then the first is made again.
second=$PWD/target/bench-second/release
mkdir -p "$second"
MOLTD_BUILD_VERSION=0.1.1 cargo build --release --quiet
cp target/release/moltd "$second/moltd"
cargo build --release --quiet

if [ -n "$baseline" ]; then
    dir=$PWD/target/bench-baseline
    rev=$(git rev-parse --short "$baseline^{commit}")
    rm -rf "$dir/src"
    mkdir -p "$dir/src"
    git archive "$rev" | tar -x -C "$dir/src"
    (cd "$dir/src" && build "$dir/target")
    set -- --moltd-baseline "$dir/target/release/moltd" \
        --moltd-static-baseline "$dir/target/x86_64-unknown-linux-gnu/release/moltd" \
        --baseline-label "at $rev" "$@"
fi

exec python3 bench/bench.py "$@"
