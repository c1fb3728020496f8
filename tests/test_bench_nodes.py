"""``zactor bench --nodes 2``: the cross-node bench runs, reports its shape, and leaves
nothing behind (issue 11).

The bench runs in its smallest mode (``--smoke``: one round of a few calls, whose
figures mean nothing) in a child process of its own, so its cluster is not this
session's. Nothing here looks at a figure's value: speed is measured by the bench.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from gates import alive

import zactor

pytestmark = pytest.mark.timeout(240)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDES = ("zactor", "raw_tcp", "raw_curve")
METRICS = ("p50_us", "p90_us", "p99_us", "lockstep_per_s", "pipelined_per_s")


def bench(*args: str, cluster_dir, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m zactor bench ARGS`` with this checkout's zactor, its cluster directory
    pointing at ``cluster_dir`` (the bench must use a private one of its own instead)."""
    env = dict(os.environ, ZACTOR_CLUSTER_DIR=str(cluster_dir))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "zactor", "bench", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_cross_node_bench_reports_every_side_and_stops_everything(tmp_path):
    out = tmp_path / "nodes.json"
    proc = bench("--nodes", "2", "--smoke", "--json", str(out), cluster_dir=tmp_path / "mine")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert set(report) == {"metadata", "cluster", "security", "rounds", "results", "targets"}
    assert report["metadata"]["transport"] == "tcp"
    assert report["metadata"]["config"]["nodes"] == 2

    # Every call crossed tcp: the counter's worker is the node's, and the driver's inbox too.
    cluster = report["cluster"]
    node_workers = [w for w in cluster["workers"] if w["node_id"] == cluster["node_id"]]
    assert node_workers and all(w["address"].startswith("tcp://127.0.0.1:") for w in node_workers)
    assert cluster["driver"].startswith("tcp://127.0.0.1:")
    assert report["security"]["raw_tcp"] == "NULL" and report["security"]["raw_curve"] == "CURVE"
    assert report["security"]["zactor"] in ("NULL", "CURVE")

    assert len(report["rounds"]) == 1 and set(report["rounds"][0]) == set(SIDES)
    for metric in METRICS:
        row = report["results"][metric]
        for side in SIDES:
            assert row[side]["median"] > 0 and len(row[side]["rounds"]) == 1
        assert row["ratio_raw_tcp"] > 0 and row["ratio_raw_curve"] > 0
    assert set(report["targets"]) == {"sync_p50", "pipelined"}
    assert all(isinstance(t["met"], bool) for t in report["targets"].values())
    assert "targets (issue 11):" in proc.stdout and "raw CURVE" in proc.stdout

    # Nothing outlives the bench: not the head, the node agent or their workers (all
    # stopped, none killed), nor the directories it made; the user's cluster directory
    # was never touched.
    assert len(cluster["pids"]) >= 4 and cluster["killed_at_end"] == []
    assert not [pid for pid in cluster["pids"] if alive(pid)]
    assert not [d for d in cluster["directories"] if os.path.exists(d)]
    assert not (tmp_path / "mine").exists()


def test_the_cross_node_bench_refuses_options_it_cannot_honour(tmp_path):
    proc = bench("--nodes", "3", "--smoke", cluster_dir=tmp_path)
    assert proc.returncode == 2 and "--nodes 2, not 3" in proc.stderr
    proc = bench("--nodes", "2", "--smoke", "--workers", "1", cluster_dir=tmp_path)
    assert proc.returncode == 1 and "--workers apply to the one-machine bench" in proc.stderr


def test_init_takes_a_host_only_to_join_and_never_a_wildcard():
    with pytest.raises(ValueError, match="host only applies to a driver joining"):
        zactor.init(host="127.0.0.1")
    with pytest.raises(ValueError, match="host 0.0.0.0 would listen on every interface"):
        zactor.init(address="tcp://127.0.0.1:1", host="0.0.0.0")
