"""``zactor bench --plot``, the bench's progress line, and ``--json``'s shape (issue 13);
issue 12's targets block and its ``multiprocessing.Pipe`` actor yardstick.

Every bench here is ``--smoke --workers 1`` (every row once with a few calls,
seconds) in a child process of its own (the session's cluster lives in this
one). Two runs serve all the tests that need one:

* the command itself, ``python -m zactor bench ... --json --plot``, with its
  standard error on a pseudo-terminal (:mod:`pty`): the progress line shows
  there, the PNG is written, the JSON has the shape it always had;
* a driver calling ``runner.run`` with both outputs on pipes, which also
  renders the figure again from the returned report and describes it: no
  progress reaches a pipe, and the figure has the panels, lines and bars
  that the run's own samples and medians call for; it also says whether the
  Pipe actor's process still runs once ``run`` returned.

Nothing here looks at a figure's value (the smoke run's mean nothing), only
at which figures there are and how they relate.

A missing matplotlib is simulated in a child whose import system refuses it.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time

import pytest

from zactor.benchmark import plot
from zactor.benchmark.progress import Progress

pytestmark = pytest.mark.timeout(240)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The key tree of ``zactor bench --json`` (see :func:`json_shape`): as before --plot
#: existed, with issue 12's additions (``issue12``, the rounds' ``pipe`` and ``creation``).
SHAPE_FILE = os.path.join(REPO, "tests", "data", "bench-json-shape.json")
SMOKE = ["--smoke", "--workers", "1"]
ERASE = "\r\x1b[K"


def child_env() -> dict:
    """The environment of a child bench: this checkout's zactor first on its path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    return env


def json_shape(value):
    """The key tree of a JSON value: dicts by key, lists as the union of their items' shapes,
    every other value ``"value"`` (figures differ run to run, and None stands for a missing
    figure). Made from a base-commit run, ``--quick --rounds 1 --workers 1``, with
    ``json.dump(json_shape(report), f, indent=1, sort_keys=True)``.
    """
    if isinstance(value, dict):
        return {k: json_shape(v) for k, v in value.items()}
    if isinstance(value, list):
        merged: dict = {}
        for item in value:
            shape = json_shape(item)
            if not isinstance(shape, dict):
                return ["value"]
            merged.update(shape)
        return [merged] if merged else []
    return "value"


def read_terminal(master: int, proc: subprocess.Popen, limit: float) -> str:
    """Everything written to the terminal ``master`` until every process holding it is gone."""
    out = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if not ready:
            continue
        try:
            data = os.read(master, 65536)
        except OSError as exc:  # EIO: the last holder of the terminal closed it
            if exc.errno != errno.EIO:
                raise
            return out.decode(errors="replace")
        if not data:
            return out.decode(errors="replace")
        out += data
    proc.kill()
    pytest.fail(f"the bench still held its terminal after {limit:.0f} s:\n{out.decode()}")


@pytest.fixture(scope="module")
def on_a_terminal(tmp_path_factory):
    """``zactor bench --smoke --json --plot`` with standard error on a pseudo-terminal."""
    tmp = tmp_path_factory.mktemp("bench-tty")
    paths = {"json": str(tmp / "bench.json"), "png": str(tmp / "bench.png")}
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    with open(tmp / "stdout.txt", "wb") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zactor", "bench", *SMOKE]
            + ["--json", paths["json"], "--plot", paths["png"]],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=slave,
            cwd=str(tmp),
            env=child_env(),
        )
        os.close(slave)
        try:
            terminal = read_terminal(master, proc, limit=200)
        finally:
            os.close(master)
            code = proc.wait(timeout=30)
    return dict(paths, code=code, terminal=terminal, stdout=(tmp / "stdout.txt").read_text())


DRIVER = textwrap.dedent(
    """
    import argparse, json, os, sys

    import numpy as np
    from matplotlib.container import BarContainer
    from matplotlib.image import imread

    from zactor.benchmark import plot, runner

    args = runner.add_arguments(argparse.ArgumentParser()).parse_args(sys.argv[1:])
    report = runner.run(args)
    try:  # the Pipe actor is our child: closed, it was reaped and its /proc entry is gone
        with open(f"/proc/{report['issue12']['pipe_actor']['pid']}/stat") as fh:
            pipe_state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        pipe_state = None
    fig = plot.render(report)
    samples = report["latency_samples"]
    axes = []
    for ax in fig.axes:
        axes.append({
            "title": ax.get_title(),
            "xscale": ax.get_xscale(),
            "lines": [
                {"label": line.get_label(), "x": [float(v) for v in line.get_xdata()]}
                for line in ax.get_lines()
            ],
            "bars": [
                {"label": bars.get_label(), "heights": [p.get_height() for p in bars.patches]}
                for bars in ax.containers
                if isinstance(bars, BarContainer)
            ],
            "ticks": [t.get_text() for t in ax.get_xticklabels()],
        })
    width, height = fig.get_size_inches() * fig.dpi
    print("DESCRIBED " + json.dumps({
        "axes": axes,
        "figure_pixels": [int(round(height)), int(round(width))],
        "png_shape": list(imread(args.plot).shape),
        "samples_us": {
            side: [[float(v) for v in np.asarray(a) / 1e3] for a in arrays]
            for side, arrays in samples.items()
        },
        "report": {k: v for k, v in report.items() if k != "latency_samples"},
        "pipe_state_after_run": pipe_state,
    }))
    """
)


@pytest.fixture(scope="module")
def in_a_pipe(tmp_path_factory):
    """The bench run by a driver, both outputs on pipes; its figure described."""
    tmp = tmp_path_factory.mktemp("bench-pipe")
    png = str(tmp / "bench.png")
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, *SMOKE, "--plot", png],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=str(tmp),
        env=child_env(),
        timeout=200,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    described = [line for line in proc.stdout.splitlines() if line.startswith("DESCRIBED ")]
    assert described, proc.stdout + proc.stderr
    return {
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "png": png,
        **json.loads(described[0][len("DESCRIBED ") :]),
    }


# -- the plot ---------------------------------------------------------------------------------


def test_plot_writes_an_image_matplotlib_reads_back(on_a_terminal):
    from matplotlib.image import imread

    assert on_a_terminal["code"] == 0, on_a_terminal["stdout"] + on_a_terminal["terminal"]
    assert f"wrote {on_a_terminal['png']}" in on_a_terminal["stdout"]
    image = imread(on_a_terminal["png"])
    width, height = (round(inches * plot.DPI) for inches in plot.FIGSIZE)
    assert image.shape == (height, width, 4)  # RGBA, the figure's size at its DPI


def test_the_figure_shows_the_runs_own_samples_and_medians(in_a_pipe):
    report = in_a_pipe["report"]
    results, cfg = report["results"], report["metadata"]["config"]
    assert in_a_pipe["png_shape"][:2] == in_a_pipe["figure_pixels"]
    cdf, calls, bandwidth = in_a_pipe["axes"]  # three panels, no more

    # The CDF: one line a side, every recorded call of the run (no warm-up), sorted.
    samples = in_a_pipe["samples_us"]
    assert [len(r) for r in samples["zactor"]] == [cfg["latency_calls"]] * cfg["rounds"]
    assert [len(r) for r in samples["raw"]] == [cfg["latency_calls"]] * cfg["rounds"]
    assert cdf["xscale"] == "log"
    assert [line["label"].split(":")[0] for line in cdf["lines"]] == ["zactor", "raw pyzmq"]
    for line, side in zip(cdf["lines"], ("zactor", "raw")):
        pooled = sorted(v for r in samples[side] for v in r)
        assert line["x"] == pytest.approx(pooled)
        assert f"p50 {results['latency_p50_us'][side]['median']:,.1f} µs" in line["label"]
    # The samples are the ones the table's percentiles came from.
    for r, round_ in enumerate(report["rounds"]):
        for side in ("zactor", "raw"):
            p50 = sorted(samples[side][r])
            assert round_["latency"][side]["p50"] == pytest.approx(
                (p50[len(p50) // 2 - 1] + p50[len(p50) // 2]) / 2
            )

    # The bars: zactor and raw side by side, one pair a row of the table, at its medians.
    for ax, unit in ((calls, "calls/s"), (bandwidth, "MB/s")):
        rows = [r for r in results.values() if r.get("unit") == unit]
        assert [b["label"] for b in ax["bars"]] == ["zactor", "raw pyzmq"]
        assert len(ax["ticks"]) == len(rows) == 2
        for bars, side in zip(ax["bars"], ("zactor", "raw")):
            assert bars["heights"] == pytest.approx([r[side]["median"] for r in rows])
    assert [t.split("\n")[0] for t in calls["ticks"]] == ["pipelined", "tell"]
    assert bandwidth["ticks"] == [f"numpy {mib} MiB add" for mib in cfg["numpy_updates"]]


def test_json_keeps_its_shape(on_a_terminal):
    with open(on_a_terminal["json"]) as fh:
        report = json.load(fh)
    with open(SHAPE_FILE) as fh:
        expected = json.load(fh)
    assert json_shape(report) == expected
    assert "latency_samples" not in report


# -- issue 12's targets ----------------------------------------------------------------------

#: Issue 12's targets: key -> (what is measured, yardstick or None, target, direction).
ISSUE12 = {
    "sync_p50_vs_raw": ("latency_p50_us", "raw pyzmq", {"ratio": 0.5}, "<="),
    "sync_p50_vs_pipe": ("latency_p50_us", "Pipe actor", {"ratio": 1.0}, "<="),
    "pipelined_vs_raw": ("pipelined_calls_per_s", "raw pyzmq", {"ratio": 5.0}, ">="),
    "tell_vs_raw": ("tell_calls_per_s", "raw pyzmq", {"ratio": 10.0}, ">="),
    "numpy_1mib_vs_raw": ("numpy_1mib_mb_per_s", "raw pyzmq", {"ratio": 1.5}, ">="),
    "numpy_16mib_vs_raw": ("numpy_16mib_mb_per_s", "raw pyzmq", {"ratio": 2.0}, ">="),
    "creation": ("creation", None, {"value": 10_000}, ">="),
}


def test_issue12_targets_are_reported_beside_their_yardsticks(on_a_terminal):
    with open(on_a_terminal["json"]) as fh:
        report = json.load(fh)
    issue12, results = report["issue12"], report["results"]
    rounds = report["metadata"]["config"]["rounds"]
    assert issue12["creation_actors"] == report["metadata"]["config"]["creation_actors"]
    assert list(issue12["targets"]) == list(ISSUE12)
    for key, (metric, yardstick, target, direction) in ISSUE12.items():
        entry = issue12["targets"][key]
        assert entry["target"] == dict(target, direction=direction), key
        z = entry["zactor"]
        assert len(z["rounds"]) == rounds and z["median"] > 0, key
        if yardstick is None:  # absolute: the figure itself against the target
            assert entry["yardstick"] is None and entry["ratio"] is None
            assert z["rounds"] == [r["creation"] for r in report["rounds"]]
            compared = z["median"]
        else:
            y = entry["yardstick"]
            assert y["name"] == yardstick and len(y["rounds"]) == rounds and y["median"] > 0
            assert entry["ratio"] == pytest.approx(z["median"] / y["median"])
            assert entry["ratio_rounds"] == pytest.approx(
                [a / b for a, b in zip(z["rounds"], y["rounds"])]
            )
            if yardstick == "raw pyzmq":  # the very figures of the main table
                assert z == results[metric]["zactor"], key
                assert {k: y[k] for k in ("rounds", "median")} == results[metric]["raw"], key
            compared = entry["ratio"]
        goal = target.get("ratio", target.get("value"))
        met = compared <= goal if direction == "<=" else compared >= goal
        assert entry["met"] is met, key
        if met:
            assert entry["short_by"] is None
        else:
            short = compared / goal if direction == "<=" else goal / compared
            assert entry["short_by"] == pytest.approx(short) and short > 1, key
    # The Pipe actor's own figures are the ones its sync target compares with.
    pipe = issue12["pipe_actor"]
    assert pipe["latency_p50_us"] == {
        k: issue12["targets"]["sync_p50_vs_pipe"]["yardstick"][k] for k in ("rounds", "median")
    }
    assert pipe["latency_p50_us"]["rounds"] == [
        r["latency"]["pipe"]["p50"] for r in report["rounds"]
    ]
    assert len(pipe["pipelined_calls_per_s"]["rounds"]) == rounds
    assert pipe["pipelined_calls_per_s"]["median"] > 0


def test_issue12_block_is_printed_with_every_target(on_a_terminal):
    stdout = on_a_terminal["stdout"]
    assert "issue 12 targets (same-host lane)" in stdout, stdout
    block = stdout[stdout.index("issue 12 targets") :].split("\n\n")[0]
    with open(on_a_terminal["json"]) as fh:
        targets = json.load(fh)["issue12"]["targets"]
    lines = block.splitlines()[3:]  # title, header, rule
    assert len(lines) == len(targets) + 1  # and the Pipe actor's own line
    for line, entry in zip(lines, targets.values()):
        assert line.strip().startswith(entry["label"]), line
        target = entry["target"]
        if "ratio" in target:
            assert f"{target['direction']}{target['ratio']:g}x" in line, line
            assert entry["yardstick"]["name"] in line, line
        else:
            assert f"{target['direction']}{target['value']:,}" in line, line
        assert (" ok " in line) if entry["met"] else ("MISS" in line), line
        if entry["short_by"] is not None:
            assert f"MISS: {entry['short_by']:.2f}x short" in line, line
    assert lines[-1].strip().startswith("the Pipe actor (multiprocessing.Pipe"), lines[-1]


def test_the_pipe_actor_is_gone_once_the_run_returns(in_a_pipe):
    report = in_a_pipe["report"]
    assert report["issue12"]["pipe_actor"]["pid"] > 0
    assert in_a_pipe["pipe_state_after_run"] is None, in_a_pipe  # not even a zombie


# -- the progress line ------------------------------------------------------------------------


def test_a_terminal_shows_where_the_bench_is_and_is_left_clean(on_a_terminal):
    terminal, stdout = on_a_terminal["terminal"], on_a_terminal["stdout"]
    for where in (
        "round 1/1: sync call latency",
        "round 1/1: actor creation",
        "isolation 1/1",
        "pools 1/1: routed calls",
    ):
        assert f"{ERASE}zactor bench: {where}  [0:" in terminal, terminal
    # The last line drawn was erased (the head may log a worker's death after that).
    assert terminal.rindex(ERASE) > terminal.rindex("elapsed]"), terminal[-300:]
    assert "\x1b" not in stdout and "elapsed]" not in stdout  # the table stays clean


def test_no_progress_when_standard_error_is_not_a_terminal(in_a_pipe):
    assert "elapsed]" not in in_a_pipe["stderr"], in_a_pipe["stderr"]
    assert "\x1b" not in in_a_pipe["stderr"] + in_a_pipe["stdout"]
    assert "\r" not in in_a_pipe["stderr"]


_END = "<end of output>"


def test_progress_line_is_cut_to_the_terminal_width():
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 30, 0, 0))
    try:
        with open(slave, "w", closefd=False) as stream:
            progress = Progress(stream)
            assert progress.enabled
            progress.phase("round 2/5")
            progress.step("a step whose name is far too long for thirty columns")
            with progress.above():
                pass
            progress.close()
            # The pty hands written bytes to the master side asynchronously, so one
            # read may miss the tail: read up to a marker written after everything else.
            stream.write(_END)
        written = ""
        while _END not in written:
            written += os.read(master, 4096).decode()
        written = written[: -len(_END)]
    finally:
        os.close(slave)
        os.close(master)
    drawn = [d for d in written.split(ERASE) if d]
    assert drawn == [
        "zactor bench: round 2/5  [0:0",
        "zactor bench: round 2/5: a st",
        "zactor bench: round 2/5: a st",
    ]
    assert written.endswith(ERASE)


def test_progress_writes_nothing_to_a_file():
    stream = io.StringIO()
    progress = Progress(stream)
    progress.phase("round 1/5")
    progress.step("latency")
    with progress.above():
        pass
    progress.close()
    assert not progress.enabled and stream.getvalue() == ""


# -- failing before the bench runs ------------------------------------------------------------

WITHOUT_MATPLOTLIB = textwrap.dedent(
    """
    import sys

    class NoMatplotlib:
        # Stands for an install without the plot extra: matplotlib cannot be imported.
        def find_spec(self, name, path=None, target=None):
            if name == "matplotlib" or name.startswith("matplotlib."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoMatplotlib())
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        del sys.modules[name]
    entry, argv = sys.argv[1], sys.argv[2:]
    if entry == "cli":
        from zactor.cli import main
        sys.exit(main(["bench", *argv]))
    from zactor.benchmark.runner import main
    sys.exit(main(argv))
    """
)


@pytest.mark.parametrize("entry", ["cli", "runner"])
def test_plot_without_matplotlib_fails_at_once_and_says_how_to_install(tmp_path, entry):
    png = tmp_path / "bench.png"
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_MATPLOTLIB, entry, *SMOKE, "--plot", str(png)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert proc.returncode == 1, proc
    assert 'pip install "zactor[plot]"' in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""  # not even the bench's first line: nothing ran
    assert not png.exists()


@pytest.mark.parametrize(
    "name, says",
    [
        (os.path.join("no-such-directory", "bench.png"), "does not exist; create it first"),
        ("bench.nosuchformat", "names no image format matplotlib writes"),
        ("bench", "no extension names no image format"),
    ],
)
def test_a_plot_path_that_cannot_work_fails_at_once(tmp_path, name, says):
    proc = subprocess.run(
        [sys.executable, "-m", "zactor", "bench", *SMOKE, "--plot", str(tmp_path / name)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert proc.returncode == 1, proc
    assert says in proc.stderr and ".png" in proc.stderr, proc.stderr
    assert proc.stdout == ""
