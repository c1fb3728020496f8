#!/usr/bin/env bash
# Fuzzes the frame parsers and the payload decoder with atheris for SECONDS (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
python=${PYTHON:-python3}
if ! "$python" -c "import atheris" 2>/dev/null; then
    echo "atheris is missing: python3 -m pip install -e '.[fuzz]'" >&2
    exit 2
fi
corpus=$(mktemp -d /tmp/zactor-fuzz-corpus-XXXXXX)
trap 'rm -rf "$corpus"' EXIT
# Frame 0 of a few real calls, with arguments of each kind, to start from.
"$python" - "$corpus" <<'PY'
import os, sys
import numpy as np
from zactor.wire import hotpath, serialization
for i, args in enumerate([(), (1, "a"), ((1, (2,)),), ([1, {"k": b"v"}],), (np.arange(4),),
                          (np.zeros(3000),), (complex(1, 2),)]):
    payload, buffers = serialization.dumps_call(args, {})
    frames = [bytes(f) for f in hotpath.pack_one(1, 1, 0, i + 1, 7, payload, buffers)]
    head = bytes([len(frames) - 1]) + b"".join(bytes([len(b[:255])]) + b[:255] for b in frames[1:])
    with open(os.path.join(sys.argv[1], f"seed-{i}"), "wb") as f:  # see split_input
        f.write(head + frames[0])
PY
"$python" scripts/fuzz_wire.py -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix=/tmp/zactor-fuzz- "$@" "$corpus"
