#!/usr/bin/env bash
# Runs the CI script (.ci/run) on a fresh clone of this repository's HEAD (committed work only).
set -euo pipefail

repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
tmp=$(mktemp -d /tmp/zactor-ci-XXXXXX)
log="$tmp.log"

echo "cloning $(git -C "$repo" rev-parse --short HEAD) into $tmp/z"
git clone -q "$repo" "$tmp/z"
echo "log: $log"

rc=0
(cd "$tmp/z" && CI=true bash .ci/run) </dev/null >"$log" 2>&1 || rc=$?

echo "exit code: $rc"
if [ "$rc" -eq 0 ]; then
    rm -rf "$tmp"
else
    echo "kept the clone for inspection: $tmp/z"
fi
exit "$rc"
