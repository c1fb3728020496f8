"""Polling for a message before sleeping (zactor.endpoint.spinning): the policy, the
inboxes' ``poll_for`` on each road, a cluster with polling off, and a bad setting.

Nothing here depends on how fast the machine is: a poll either finds a message
that was sent (its budget is seconds, far more than delivery takes) or, with
nothing sent, returns None once its budget is spent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest

import zactor
from zactor.endpoint import spinning
from zactor.endpoint.spinning import (
    BATCH_SLEEPS,
    MISSES_TO_STOP,
    PROBE_EVERY,
    SpinWait,
    spin_budget_ns,
)
from zactor.transport import LaneTransport, ZmqTransport, ipc_address, make_session_dir
from zactor.transport.lane import LaneInbox

pytestmark = pytest.mark.timeout(120)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: A budget no delivery on this machine comes near: a poll that should find a
#: message finds it long before this, and the test never waits for it to run out.
GENEROUS_NS = 10 * 10**9


def test_budget_comes_from_the_environment():
    assert spin_budget_ns({}) == int(spinning.DEFAULT_SPIN_US * 1000)
    assert spin_budget_ns({"ZACTOR_SPIN_US": "0"}) == 0
    assert spin_budget_ns({"ZACTOR_SPIN_US": "12.5"}) == 12_500
    for bad in ("fast", "-1", "20000", "nan"):
        with pytest.raises(ValueError, match="ZACTOR_SPIN_US=.*microseconds from 0 to 10000"):
            spin_budget_ns({"ZACTOR_SPIN_US": bad})


def test_a_reader_whose_polls_find_nothing_stops_polling_and_probes_now_and_then():
    spin = SpinWait(1_000)
    for _ in range(MISSES_TO_STOP):
        assert spin.budget() == 1_000
        spin.missed()
    # Stopped: it sleeps at once, but polls one wait in PROBE_EVERY.
    budgets = [spin.budget() for _ in range(2 * PROBE_EVERY)]
    assert budgets.count(1_000) == 2
    assert budgets[PROBE_EVERY - 1] == 1_000 and budgets[-1] == 1_000
    assert set(budgets) == {0, 1_000}
    spin.caught()  # a probe found a message: it polls on every wait again
    assert [spin.budget() for _ in range(MISSES_TO_STOP)] == [1_000] * MISSES_TO_STOP


def test_a_poll_that_finds_a_message_keeps_polling():
    spin = SpinWait(1_000)
    for _ in range(10 * MISSES_TO_STOP):
        spin.missed()
        spin.caught()
    assert spin.budget() == 1_000


def test_after_a_batch_a_reader_sleeps_at_once_and_after_a_single_record_polls_again():
    spin = SpinWait(1_000)
    spin.received(BATCH_SLEEPS)  # not more than the bound: still a round trip's message
    assert spin.budget() == 1_000
    spin.received(BATCH_SLEEPS + 1)
    assert [spin.budget() for _ in range(3 * PROBE_EVERY)] == [0] * (3 * PROBE_EVERY)
    spin.received(1)
    assert spin.budget() == 1_000
    # Sleeping after a batch is no miss: a reader polling before it still polls after.
    for _ in range(MISSES_TO_STOP - 1):
        spin.missed()
    spin.received(512)
    spin.budget()
    spin.received(1)
    assert spin.budget() == 1_000


@pytest.fixture
def session_dir():
    path = make_session_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["zmq-ipc", "zmq-tcp", "lane"])
def road(request, session_dir):
    """``(inbox, connection)`` of one road: ZeroMQ over ipc or tcp, or the lane."""
    if request.param == "lane":
        transport = LaneTransport()
        address = ipc_address(session_dir, "inbox.sock")
    else:
        transport = ZmqTransport()
        address = (
            ipc_address(session_dir, "inbox.sock")
            if request.param == "zmq-ipc"
            else "tcp://127.0.0.1:0"
        )
    try:
        inbox = transport.bind(address)
        if request.param == "lane" and not isinstance(inbox, LaneInbox):
            pytest.skip("ZACTOR_TRANSPORT=zmq: this run has no same-host lane")
        conn = transport.connect(inbox.address, ipc_address(session_dir, "sender.sock"))
        yield inbox, conn
    finally:
        transport.close()


def test_poll_for_returns_a_message_already_sent(road):
    inbox, conn = road
    conn.send([b"frame zero", b"buffer"])
    identity, frame0, buffers = inbox.poll_for(GENEROUS_NS)
    assert identity.endswith(b"sender.sock")
    assert bytes(frame0) == b"frame zero"
    assert [bytes(b) for b in buffers] == [b"buffer"]


def test_poll_for_returns_a_message_sent_while_it_polls(road):
    inbox, conn = road
    sender = threading.Timer(0.01, conn.send, ([b"late"],))
    sender.start()
    try:
        message = inbox.poll_for(GENEROUS_NS)
    finally:
        sender.join()
    assert message is not None and bytes(message[1]) == b"late"


def test_poll_for_gives_up_when_nothing_comes_and_receive_still_works(road):
    inbox, conn = road
    assert inbox.poll_for(1_000_000) is None  # 1 ms, nothing sent
    conn.send([b"after"])
    message = inbox.receive(int(GENEROUS_NS / 1e6))
    assert message is not None and bytes(message[1]) == b"after"


def test_a_bad_setting_fails_init_before_anything_starts(monkeypatch):
    monkeypatch.setenv("ZACTOR_SPIN_US", "fast")
    with pytest.raises(ValueError, match="ZACTOR_SPIN_US='fast'"):
        zactor.init(num_workers=1)


def test_a_bad_setting_fails_zactor_start(tmp_path):
    env = dict(os.environ, ZACTOR_SPIN_US="-5", ZACTOR_CLUSTER_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "zactor", "start", "--head", "--num-workers", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "ZACTOR_SPIN_US='-5'" in done.stderr
    assert not list(tmp_path.iterdir())  # no cluster file: nothing was started


def test_calls_tells_and_replies_flow_with_polling_off():
    script = textwrap.dedent(
        """
        import zactor

        @zactor.remote
        class Counter:
            def __init__(self):
                self.n = 0
            def add(self, k):
                self.n += k
                return self.n

        zactor.init(num_workers=2)
        a, b = Counter.remote(), Counter.remote()
        for _ in range(50):
            a.add.tell(1)
        assert a.add.remote(0).result(timeout=30) == 50
        assert zactor.get([b.add.remote(i) for i in range(100)], timeout=30)[-1] == 4950
        assert a.add.remote(1).result(timeout=30) == 51
        zactor.shutdown()
        print("ok")
        """
    )
    env = dict(os.environ, ZACTOR_SPIN_US="0", PYTHONPATH=REPO)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok", done.stdout
