#!/usr/bin/env bash
# The README's first command: build moltd, then watch it do its main job
# offline (demo/demo.py): install v1.0.0 from a loopback release feed,
# update to v1.1.0, roll back from a broken v1.2.0, shut down cleanly.
# Needs cargo, python3 and unshare (util-linux); exits 0 only if all of it
# happened, so CI runs it too.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
exec python3 demo/demo.py target/release/moltd
