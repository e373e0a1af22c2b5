#!/bin/sh
# The original self-updating container's order for an update, reproduced
# for items 7 and 12 of BENCHMARKS.md: the app runs; whenever an update is
# due (here: the file GO appears, in place of the loop's `sleep $SLEEP` and
# release check), the loop stops the app, downloads the release, unpacks it
# and starts the app again. The app is down from the stop to the start.
#
# Usage: original-update.sh APP_DIR PORT ASSET_URL GO
# APP_DIR/current holds the running release. GO may hold the URL of the
# asset to install this time (item 12 updates again and again); empty, it
# is ASSET_URL. The harness runs this script as PID 1 of a PID namespace and
# kills it when done.
set -eu
app_dir=$1 port=$2 url=$3 go=$4

"$app_dir/current/bin/app" "$port" &
pid=$!
while :; do
    while [ ! -e "$go" ]; do sleep 0.05; done
    next=$(cat "$go")
    rm "$go"

    kill "$pid"
    wait "$pid" || true
    curl -fsS -o "$app_dir/release.tar.gz" "${next:-$url}"
    rm -rf "$app_dir/current" "$app_dir/releases"
    mkdir "$app_dir/current"
    tar xzf "$app_dir/release.tar.gz" -C "$app_dir/current" --strip-components=1
    rm "$app_dir/release.tar.gz"
    "$app_dir/current/bin/app" "$port" &
    pid=$!
done
