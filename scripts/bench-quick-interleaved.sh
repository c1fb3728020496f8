#!/usr/bin/env bash
# Runs `zactor bench --quick` alternately in two built checkouts and prints each run's ratios.
set -euo pipefail

usage() {
    echo "usage: $0 BEFORE_DIR AFTER_DIR [ROUNDS=3]" >&2
    echo "  each dir a checkout built in place (python setup.py build_ext --inplace);" >&2
    echo "  writes /tmp/zbench-{before,after}-{i}.json (and .log); PYTHON overrides the interpreter" >&2
    exit 2
}
[ $# -ge 2 ] && [ $# -le 3 ] || usage
before=$(cd "$1" && pwd)
after=$(cd "$2" && pwd)
rounds=${3:-3}
python=${PYTHON:-python}

failed=0
files=()
for i in $(seq 1 "$rounds"); do
    for side in before after; do
        if [ "$side" = before ]; then dir=$before; else dir=$after; fi
        out="/tmp/zbench-$side-$i.json"
        rm -f "$out"
        echo "round $i/$rounds: $side ($dir), log /tmp/zbench-$side-$i.log"
        if (cd "$dir" && PYTHONPATH="$dir" "$python" -m zactor bench --quick --json "$out") \
            </dev/null >"/tmp/zbench-$side-$i.log" 2>&1; then
            files+=("$side-$i=$out")
        else
            echo "  failed (exit $?): see /tmp/zbench-$side-$i.log" >&2
            failed=1
        fi
    done
done

[ ${#files[@]} -gt 0 ] || exit 1
"$python" - "${files[@]}" <<'PY'
import json
import statistics
import sys

runs = []  # (label, {ratio name: value})
for arg in sys.argv[1:]:
    label, path = arg.split("=", 1)
    with open(path) as fh:
        report = json.load(fh)
    ratios = {}
    for metric, res in report.get("results", {}).items():
        if res.get("ratio") is not None:
            ratios[res.get("label", metric)] = res["ratio"]
    routed = report.get("pools", {}).get("routed", {}).get("ratios", {})
    for name, res in routed.items():
        ratios[f"pool {name}"] = res["median"]
    runs.append((label, ratios))

names = []
for _label, ratios in runs:
    names += [n for n in ratios if n not in names]
sides = ("before", "after")
print()
print("ratios (zactor / raw pyzmq; pools: routed / base)")
header = f"{'':<38}" + "".join(f"{label:>10}" for label, _ in runs)
header += "".join(f"{'med ' + s:>12}" for s in sides)
print(header)
print("-" * len(header))
for name in names:
    line = f"{name:<38}"
    for _label, ratios in runs:
        value = ratios.get(name)
        line += f"{'-' if value is None else f'{value:.2f}x':>10}"
    for side in sides:
        values = [r[name] for label, r in runs if label.startswith(side) and name in r]
        line += f"{(f'{statistics.median(values):.2f}x' if values else '-'):>12}"
    print(line)
PY
exit "$failed"
