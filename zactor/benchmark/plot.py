"""``zactor bench --plot PATH``: a run's latency CDFs and throughput bars in one image.

The image has three panels, all from one run:

1. the cumulative distribution of the sync call round trips of row 1, zactor's
   ``h.inc.remote().result()`` beside the raw pyzmq yardstick, every call of
   every recorded round (the warm-up round left out);
2. the call rates (calls/s): zactor and the yardstick side by side, the bar
   the median over rounds and the whisker the range of the rounds;
3. the numpy update bandwidths (MB/s), drawn the same way.

matplotlib is an optional extra (``pip install "zactor[plot]"``). It is imported
only when a plot is asked for, and :func:`check` runs before the bench starts,
so a missing matplotlib (or a path that cannot be written) costs no bench run.
Figures are drawn on a :class:`~matplotlib.figure.Figure` of their own with the
Agg canvas: no display is needed and pyplot's global state is never touched.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: How a user gets matplotlib, as every error about it says.
INSTALL = 'pip install "zactor[plot]"'
#: The image's size in inches and its resolution (pixels = inches * DPI).
FIGSIZE = (13.0, 4.4)
DPI = 100
#: The two sides of every comparison: (key in the report, legend label, colour).
SIDES = (("zactor", "zactor", "#1f77b4"), ("raw", "raw pyzmq", "#999999"))


class PlotError(Exception):
    """``--plot`` cannot work (matplotlib missing, a bad path); raised before the bench runs."""


def check(path: str) -> None:
    """Fail now, not after the bench, if ``path`` cannot get a plot.

    Raises :class:`PlotError` when matplotlib is not installed, when the
    extension names no image format matplotlib writes, or when the directory
    does not exist or cannot be written.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError as exc:
        raise PlotError(
            f"--plot needs matplotlib, which is not installed here ({exc}): "
            f"run {INSTALL}, or leave out --plot"
        ) from None
    formats = FigureCanvasAgg.get_supported_filetypes()
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext not in formats:
        known = ", ".join(f".{f}" for f in sorted(formats))
        raise PlotError(
            f"--plot {path}: {'.' + ext if ext else 'no extension'} names no image format "
            f"matplotlib writes; end the path with one of {known} (e.g. bench.png)"
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise PlotError(f"--plot {path}: directory {directory} does not exist; create it first")
    if not os.access(directory, os.W_OK):
        raise PlotError(f"--plot {path}: directory {directory} is not writable; choose another")


def render(report: dict) -> Figure:
    """The figure of a bench run: ``report`` as :func:`zactor.benchmark.runner.run` returns it.

    Needs the report's ``latency_samples`` (the per-call round trips, which
    ``--json`` leaves out) besides its ``results`` and ``metadata``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    cdf, calls, bandwidth = fig.subplots(1, 3, width_ratios=[1.5, 1.0, 1.0])
    _latency_cdf(cdf, report)
    results = report["results"]
    _bars(calls, results, "calls/s", "call rates (calls/s)")
    _bars(bandwidth, results, "MB/s", "numpy updates (MB/s, MB = 10**6 bytes)")
    meta, cfg = report["metadata"], report["metadata"]["config"]
    if "--smoke" in meta["argv"]:
        size = "--smoke (too few calls for these figures to mean anything)"
    else:
        size = "--quick" if cfg["quick"] else "(full run)"
    fig.suptitle(
        f"zactor bench {size}, {meta['started_at']}\n"
        f"{meta['implementation']} hot path, {_plural(cfg['workers'], 'worker')}, "
        f"{_plural(cfg['rounds'], 'round')}; {meta['cpu_count']} CPUs, python {meta['python']}, "
        f"pyzmq {meta['pyzmq']} (libzmq {meta['libzmq']}), {meta['transport']}",
        fontsize=10,
    )
    return fig


def write(path: str, report: dict) -> None:
    """Render ``report`` (see :func:`render`) and save it to ``path`` (format by extension)."""
    render(report).savefig(path, dpi=DPI)


def _latency_cdf(ax: Any, report: dict) -> None:
    from matplotlib.ticker import FuncFormatter

    samples = report["latency_samples"]
    results = report["results"]
    top = 0.0
    for side, label, colour in SIDES:
        us = np.sort(np.concatenate(samples[side])) / 1e3
        fraction = np.arange(1, len(us) + 1) / len(us)
        p50 = results["latency_p50_us"][side]["median"]
        p99 = results["latency_p99_us"][side]["median"]
        ax.step(
            us,
            fraction,
            where="post",
            color=colour,
            label=f"{label}: p50 {p50:,.1f} µs, p99 {p99:,.1f} µs",
        )
        top = max(top, float(np.percentile(us, 99.9)))
    rounds = len(samples["zactor"])
    calls = sum(len(s) for s in samples["zactor"])
    ax.set_xscale("log")
    # Plain numbers at 1, 2 and 5 times a power of ten: µs read better than 10^2.
    ax.xaxis.set_major_formatter(FuncFormatter(_one_two_five))
    ax.xaxis.set_minor_formatter(FuncFormatter(_one_two_five))
    # The slowest 0.1 % would stretch the axis over decades of nothing.
    ax.set_xlim(right=top * 1.5)
    ax.set_ylim(0, 1)
    ax.set_xlabel("round trip (µs, log scale)")
    ax.set_ylabel("fraction of calls at most this long")
    ax.set_title(
        f"sync call latency: {calls:,} calls a side in {_plural(rounds, 'round')}, interleaved",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, title="p50/p99: median of rounds", title_fontsize=8)


def _bars(ax: Any, results: dict, unit: str, title: str) -> None:
    from matplotlib.ticker import StrMethodFormatter

    rows = [r for r in results.values() if r.get("unit") == unit and "raw" in r]
    x = np.arange(len(rows))
    width = 0.38
    for i, (side, label, colour) in enumerate(SIDES):
        medians = np.array([r[side]["median"] for r in rows])
        low = medians - np.array([min(r[side]["rounds"]) for r in rows])
        high = np.array([max(r[side]["rounds"]) for r in rows]) - medians
        ax.bar(
            x + (i - 0.5) * width,
            medians,
            width,
            yerr=[low, high],
            capsize=3,
            color=colour,
            label=label,
        )
    for xi, row in zip(x, rows):
        if row["ratio"] is not None:
            top = max(max(row["zactor"]["rounds"]), max(row["raw"]["rounds"]))
            ax.annotate(
                f"{row['ratio']:.2f}x",
                (xi, top),
                xytext=(0, 4),
                textcoords="offset points",
                ha="center",
                fontsize=8,
            )
    ax.set_xticks(x, [_short_label(r["label"]) for r in rows], fontsize=8)
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("median of rounds (whisker: range); above: zactor/raw", fontsize=8)
    ax.margins(y=0.12)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.06), ncol=2, frameon=False)


def _one_two_five(value: float, _position: int) -> str:
    if value <= 0:
        return ""
    leading = value / 10 ** np.floor(np.log10(value))
    return f"{value:g}" if any(abs(leading - d) < 1e-6 for d in (1, 2, 5)) else ""


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _short_label(label: str) -> str:
    """A row's label for a tick: the table's label without its unit, over two lines if long."""
    for unit in (", MB/s", " calls/s"):
        label = label.replace(unit, "")
    return label.replace(" (", "\n(")
