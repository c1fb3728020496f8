"""``bench/lane_choice.py`` (issue 12's measurement of the lane's mechanism) runs, prints
every mechanism beside the yardstick, and leaves nothing behind, interrupted or not.

Timings are never asserted: only that the script works and cleans up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.gates import poll

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not hasattr(os, "eventfd") or not hasattr(os, "pidfd_open"),
        reason="the ring mechanisms need os.eventfd and os.pidfd_open (Python 3.10+ on Linux)",
    ),
]

SCRIPT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "lane_choice.py"
)
MECHANISMS = ("raw pyzmq", "unix socket", "ring, wake if asleep", "ring, always wake", "mp.Pipe")


def _shm() -> set:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def _servers(line: str) -> tuple[list[int], str]:
    """The server pids and temp dir of the script's ``servers: ... dir: ...`` line."""
    assert line.startswith("servers: "), line
    pids, directory = line[len("servers: ") :].split(" dir: ")
    return [int(p) for p in pids.split()], directory.strip()


def _gone(pid: int) -> bool:
    """True once ``pid`` is no server of the script (gone, a zombie, or reused by another)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return b"lane_choice.py" not in cmdline or state in (b"Z", b"X")


def _assert_nothing_left(pids: list[int], directory: str, shm_before: set) -> None:
    poll(lambda: all(_gone(p) for p in pids), timeout=30)
    assert not os.path.exists(directory)
    # Others' test suites make their own segments meanwhile: only ours would say lane-choice.
    assert not [n for n in _shm() - shm_before if "lane" in n or n.startswith("psm_")]


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, SCRIPT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_smoke_prints_every_mechanism_beside_the_yardstick_and_cleans_up():
    before = _shm()
    proc = _start("--smoke")
    out, err = proc.communicate(timeout=150)
    assert proc.returncode == 0, f"{out}\n--- stderr\n{err}"
    lines = out.splitlines()
    pids, directory = _servers(lines[0])
    assert len(pids) == len(MECHANISMS)
    for mechanism in MECHANISMS:
        row = [line for line in lines if line.startswith(mechanism + " ")]
        assert row, f"no row for {mechanism}:\n{out}"
        assert row[0].count("x") >= 3, row[0]  # each figure beside its ratio to raw pyzmq
    assert [line for line in lines if line.startswith("raw pyzmq ")][0].count("1.00x") == 3
    assert "stopped: all servers reaped" in out
    _assert_nothing_left(pids, directory, before)


def test_an_interrupted_run_stops_its_servers_and_removes_its_files():
    before = _shm()
    proc = _start("--rounds", "50")
    try:
        pids, directory = _servers(proc.stdout.readline())
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    _assert_nothing_left(pids, directory, before)


def _script_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("lane_choice", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("always_wake", [False, True])
def test_the_ring_delivers_every_message_in_order_across_its_wrap(always_wake):
    lc = _script_module()
    memfd, eventfd = os.memfd_create("lane-choice-test"), os.eventfd(0, os.EFD_NONBLOCK)
    os.ftruncate(memfd, lc.DATA + lc.RING_BYTES)
    writer = lc.RingWriter(memfd, eventfd, always_wake)
    reader = lc.RingReader(memfd, eventfd, always_wake)
    try:
        sent = 0
        # Lengths that do not divide the ring: records straddle its end at many offsets.
        for batch in range(3 * lc.RING_BYTES // (100 * 5000) + 1):
            messages = [bytes([(sent + i) % 251]) * (4000 + (sent + i) % 2001) for i in range(100)]
            for m in messages:
                writer.send(m)
            assert [bytes(reader.recv()) for _ in messages] == messages, f"batch {batch}"
            sent += len(messages)
        assert writer.head > 2 * lc.RING_BYTES  # it wrapped
        assert writer.full_waits == 0 and reader.lost_wakeups == 0
    finally:
        writer.close()
        reader.close()
        os.close(memfd)
        os.close(eventfd)
