#!/usr/bin/env bash
# Profiles bench/pool_routing.py (driver and workers, native frames) with py-spy into a flame graph.
set -euo pipefail

out=${1:-/tmp/zactor-profile.svg}
rounds=${ROUNDS:-5}
repo=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v py-spy >/dev/null 2>&1; then
    echo "py-spy is not installed: pip install py-spy (profiling other processes may need" >&2
    echo "root or kernel.yama.ptrace_scope=0), then run: $0 [OUT.svg]" >&2
    exit 1
fi

cd "$repo"
# --subprocesses follows the head and worker processes the benchmark starts.
py-spy record --native --subprocesses -o "$out" -- python bench/pool_routing.py --rounds "$rounds"
echo "wrote $out"
