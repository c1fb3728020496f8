"""Metrics and the status page: what the head serves over HTTP (docs/observability.md).

The clusters here are started by driver subprocesses (``zactor.init(metrics_port=0)``)
or by ``zactor start --head --metrics-port 0``: the test process already runs
the session's embedded cluster, and a process initialises zactor once. A
driver takes commands, one JSON object a line, on its standard input, and
answers each with a ``MARK {json}`` line, so a test decides when calls happen.
The page is read as Chromium renders it (``tests/headless.py``); the metrics
with prometheus_client's parser. Nothing asserts timing: every wait is a
bounded poll of what the page or the metrics show.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from gates import alive, poll
from headless import Browser
from prometheus_client.parser import text_string_to_metric_families

from zactor.control.metrics import CALLS, ERRORS, Totals
from zactor.worker.stats import SERVICE_BUCKETS, ServiceHistogram

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parent.parent
MARK = "ZACTOR-OBS "
#: How long a test waits for the page or the metrics to show something (seconds).
SHOWS_WITHIN_S = 30.0

DRIVER = f"""
import json, os, sys
import zactor

@zactor.remote
class Counter:
    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n

    def fail(self):
        raise ValueError("asked to fail")

def report(**values):
    print({MARK!r} + json.dumps(values), flush=True)

info = zactor.init(num_workers=2, metrics_port=0)
report(url=info["metrics_url"], workers={{w["worker_id"]: w["pid"] for w in info["workers"]}})
actors = {{}}
for line in sys.stdin:
    order = json.loads(line)
    do = order["do"]
    if do == "create":
        actors[order["name"]] = Counter.options(
            name=order["name"], max_restarts=order.get("max_restarts", 0)
        ).remote()
        report(first=zactor.get(actors[order["name"]].increment.remote()))
    elif do == "call":
        actor = actors[order["name"]]
        values = zactor.get([actor.increment.remote() for _ in range(order["calls"])])
        for _ in range(order.get("errors", 0)):
            try:
                zactor.get(actor.fail.remote())
            except ValueError:
                pass
        report(last=values[-1] if values else None)
    elif do == "restart":
        zactor.kill(actors[order["name"]], no_restart=False)
        report(killed=True)
    elif do == "exit":
        break
zactor.shutdown()
report(stopped=True)
"""


class Driver:
    """A driver process running an embedded cluster that serves metrics, and its orders."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        first = self._answer()
        self.url: str = first["url"]
        self.worker_pids: dict[str, int] = first["workers"]

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()  # bounded by the test's timeout mark
        if not line.startswith(MARK):
            self.proc.kill()
            rest = self.proc.communicate()[0]
            pytest.fail(f"the driver did not answer: {line}{rest}")
        return json.loads(line[len(MARK) :])

    def order(self, do: str, **values) -> dict:
        self.proc.stdin.write(json.dumps(dict(values, do=do)) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.order("exit")
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired, pytest.fail.Exception):
                self.proc.kill()
                self.proc.wait()
        for pid in self.worker_pids.values():  # continued, should a test have stopped one
            if alive(pid):
                os.kill(pid, signal.SIGCONT)


@pytest.fixture
def driver():
    d = Driver()
    try:
        yield d
    finally:
        d.close()


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def scrape(url: str) -> dict:
    """``/metrics`` as ``{(sample name, frozenset of label items): value}``."""
    samples = {}
    for family in text_string_to_metric_families(fetch(url + "metrics")):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, metric: str, /, **labels) -> float | None:
    """The sample ``metric`` with exactly ``labels``, or None."""
    return samples.get((metric, frozenset((k, str(v)) for k, v in labels.items())))


def actor_rows(browser: Browser) -> dict[str, dict]:
    """The actors table as the page shows it: each row's cells by column, by name."""
    rows = browser.evaluate(
        """[...document.querySelectorAll('#actors tbody tr[data-actor-id]')].map(
               (tr) => Object.fromEntries([...tr.cells].map((td) => [td.dataset.col,
                                                                    td.textContent])))"""
    )
    return {row["name"]: row for row in rows or ()}


def worker_rows(browser: Browser) -> dict[str, dict]:
    rows = browser.evaluate(
        """[...document.querySelectorAll('#workers tbody tr[data-worker]')].map(
               (tr) => Object.fromEntries([...tr.cells].map((td) => [td.dataset.col,
                                                                    td.textContent])))"""
    )
    return {row["worker"]: row for row in rows or ()}


def shows(predicate):
    return poll(predicate, timeout=SHOWS_WITHIN_S, interval=0.1)


# -- the page -------------------------------------------------------------------------------


def test_the_page_shows_a_running_actor_and_its_calls_live(driver, tmp_path):
    """Chromium renders the page; the actor's row shows its name and call count, and
    the count follows new calls without reloading the page."""
    driver.order("create", name="page-counter")
    driver.order("call", name="page-counter", calls=6, errors=1)  # 7 calls served, 1 error
    with Browser() as browser:
        browser.open(driver.url)
        row = shows(lambda: actor_rows(browser).get("page-counter"))
        row = shows(lambda: (r := actor_rows(browser)["page-counter"])["calls"] == "7" and r)
        assert row["class"] == "Counter"
        assert row["state"] == "alive"
        assert row["errors"] == "1"
        assert row["queued"] == "0"
        assert re.fullmatch(r"[\d.]+ (µs|ms)", row["p50"]), row
        assert row["worker"] in driver.worker_pids
        shot = tmp_path / "status-page.png"
        browser.screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 10_000  # tables drawn, not a blank page

        driver.order("call", name="page-counter", calls=5)
        shows(lambda: actor_rows(browser)["page-counter"]["calls"] == "12")  # no reload
        workers = worker_rows(browser)
        assert set(workers) == set(driver.worker_pids)
        assert all(w["state"] == "answering" for w in workers.values())
        assert {w["pid"] for w in workers.values()} == {str(p) for p in driver.worker_pids.values()}


def test_a_worker_that_does_not_answer_is_shown_as_such(driver):
    """A stopped worker process is shown as not answering, on the page and in the
    metrics (``zactor_worker_up`` 0), and as answering again once it runs."""
    worker, pid = sorted(driver.worker_pids.items())[0]
    with Browser() as browser:
        browser.open(driver.url)
        shows(lambda: worker_rows(browser).get(worker, {}).get("state") == "answering")
        os.kill(pid, signal.SIGSTOP)
        try:
            shows(lambda: worker_rows(browser)[worker]["state"].startswith("not answering"))
            samples = scrape(driver.url)
            assert value(samples, "zactor_worker_up", worker=worker, node="node-0") == 0
        finally:
            os.kill(pid, signal.SIGCONT)
        shows(lambda: worker_rows(browser)[worker]["state"] == "answering")
    assert value(scrape(driver.url), "zactor_worker_up", worker=worker, node="node-0") == 1


def test_the_page_needs_nothing_from_the_internet():
    """Every resource the page loads is served by the head itself."""
    static = REPO / "zactor" / "control" / "static"
    html = (static / "status.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert "/static/status.js" in links and "/static/status.css" in links
    assert all(link.startswith("/") and not link.startswith("//") for link in links), links
    for name in ("status.js", "status.css"):
        text = (static / name).read_text()
        assert not re.search(r"https?://|@import|url\(", text), name


# -- metrics --------------------------------------------------------------------------------


def test_metrics_count_calls_errors_and_service_times(driver):
    driver.order("create", name="metered")  # one call
    driver.order("call", name="metered", calls=9, errors=2)
    samples = scrape(driver.url)
    labels = {"class": "Counter", "name": "metered"}
    (actor_id,) = [
        dict(key)["actor_id"]
        for (name, key) in samples
        if name == "zactor_actor_calls_total" and dict(key).get("name") == "metered"
    ]
    labels["actor_id"] = actor_id
    assert value(samples, "zactor_actor_calls_total", **labels) == 10
    assert value(samples, "zactor_actor_errors_total", **labels) == 2
    assert value(samples, "zactor_actor_queued", **labels) == 0
    assert value(samples, "zactor_actor_restarts_total", **labels) == 0
    # Every one of an actor's first 64 calls is timed: 10 in the histogram.
    assert value(samples, "zactor_actor_service_seconds_count", **labels) == 10
    assert value(samples, "zactor_actor_service_seconds_bucket", le="+Inf", **labels) == 10
    assert value(samples, "zactor_actor_service_seconds_sum", **labels) > 0
    assert value(samples, "zactor_class_calls_total", **{"class": "Counter"}) >= 10
    assert value(samples, "zactor_actors_alive") >= 1
    assert value(samples, "zactor_actors_created_total") >= 1
    assert value(samples, "zactor_worker_deaths_total") == 0
    assert value(samples, "zactor_workers") == 2
    assert value(samples, "zactor_actor_series_capped") == 0
    for worker in driver.worker_pids:
        figures = {"worker": worker, "node": "node-0"}
        assert value(samples, "zactor_worker_up", **figures) == 1
        assert value(samples, "zactor_worker_cpu_seconds_total", **figures) > 0
        assert value(samples, "zactor_worker_rss_bytes", **figures) > 1_000_000
    assert value(samples, "zactor_node_calls_total", node="node-0") == sum(
        value(samples, "zactor_worker_calls_total", worker=w, node="node-0")
        for w in driver.worker_pids
    )
    assert value(samples, "process_cpu_seconds_total") is not None  # the head's own
    info = [
        dict(key)
        for (name, key) in samples
        if name == "zactor_actor_info" and dict(key)["actor_id"] == actor_id
    ]
    assert len(info) == 1 and info[0]["state"] == "alive"
    assert info[0]["worker"] in driver.worker_pids


def test_counters_survive_a_restart(driver):
    """A restarted actor's counters start again at zero in its worker; its series and
    its class's keep counting from where they were."""
    driver.order("create", name="phoenix", max_restarts=1)
    driver.order("call", name="phoenix", calls=4)  # 5 calls
    samples = scrape(driver.url)
    ((_, key),) = [
        (n, k)
        for (n, k) in samples
        if n == "zactor_actor_calls_total" and dict(k).get("name") == "phoenix"
    ]
    labels = dict(key)
    assert samples[("zactor_actor_calls_total", key)] == 5
    driver.order("restart", name="phoenix")
    driver.order("call", name="phoenix", calls=3)  # the first may wait for the restart
    after = shows(
        lambda: (
            (s := scrape(driver.url))
            and value(s, "zactor_actor_restarts_total", **labels) == 1
            and value(s, "zactor_actor_calls_total", **labels) == 8
            and s
        )
    )
    assert value(after, "zactor_class_restarts_total", **{"class": "Counter"}) == 1
    assert value(after, "zactor_class_calls_total", **{"class": "Counter"}) >= 8


def test_worker_deaths_are_counted_and_node_totals_keep_their_calls(driver):
    driver.order("create", name="on-a-doomed-worker")
    driver.order("call", name="on-a-doomed-worker", calls=19)  # 20 calls
    before = scrape(driver.url)
    node_calls = value(before, "zactor_node_calls_total", node="node-0")
    assert node_calls >= 20
    ((_, key),) = [
        (n, k)
        for (n, k) in before
        if n == "zactor_actor_info" and dict(k).get("name") == "on-a-doomed-worker"
    ]
    worker = dict(key)["worker"]
    os.kill(driver.worker_pids[worker], signal.SIGKILL)
    after = shows(
        lambda: (s := scrape(driver.url)) and value(s, "zactor_worker_deaths_total") == 1 and s
    )
    assert value(after, "zactor_node_calls_total", node="node-0") >= node_calls
    assert value(after, "zactor_class_calls_total", **{"class": "Counter"}) >= 20
    assert value(after, "zactor_worker_up", worker=worker, node="node-0") is None  # gone


def test_unknown_paths_say_what_is_served(driver):
    with pytest.raises(urllib.error.HTTPError) as caught:
        fetch(driver.url + "nope")
    assert caught.value.code == 404
    assert "/metrics" in caught.value.read().decode()


# -- a standing cluster ---------------------------------------------------------------------


STANDING_DRIVER = """
import zactor

@zactor.remote
class Counter:
    def increment(self):
        return 1

zactor.init(address="auto")
handles = [
    Counter.options(name=f"c{i}", lifetime="detached").remote() for i in range(3)
]
zactor.get([h.increment.remote() for h in handles for _ in range(4)])
zactor.shutdown()
"""


def test_a_standing_cluster_serves_metrics_with_capped_actor_series(tmp_path):
    """``zactor start --head --metrics-port 0 --metrics-max-actors 2``: two actors have
    series of their own, the third counts in its class; ``zactor stop`` ends the server."""
    env = dict(os.environ)
    env["ZACTOR_CLUSTER_DIR"] = str(tmp_path / "cluster")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )

    def zactor(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "zactor", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    started = zactor(
        "start", "--head", "--num-workers", "1", "--metrics-port", "0",
        "--metrics-max-actors", "2", "--json",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    record = json.loads(started.stdout)
    try:
        url = record["metrics_url"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url)
        driver = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(STANDING_DRIVER)],
            capture_output=True,
            text=True,
            env=env,
            timeout=90,
            stdin=subprocess.DEVNULL,
        )
        assert driver.returncode == 0, driver.stderr
        samples = scrape(url)
        series = [dict(k) for (n, k) in samples if n == "zactor_actor_calls_total"]
        assert sorted(s["name"] for s in series) == ["c0", "c1"]  # the first two to come
        assert value(samples, "zactor_actor_series_capped") == 1
        assert value(samples, "zactor_class_calls_total", **{"class": "Counter"}) == 12
        text = zactor("status")
        assert f"status page:  {url}" in text.stdout, text.stdout
    finally:
        stopped = zactor("stop")
        if stopped.returncode != 0 and alive(record["pid"]):
            os.kill(record["pid"], signal.SIGKILL)
    assert stopped.returncode == 0, stopped.stderr
    with pytest.raises(OSError):
        fetch(url + "metrics")


def test_a_metrics_port_in_use_fails_the_start_saying_so(tmp_path):
    env = dict(os.environ)
    env["ZACTOR_CLUSTER_DIR"] = str(tmp_path / "cluster")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "zactor", "start", "--head", "--num-workers", "1",
             "--metrics-port", str(port)],
            capture_output=True, text=True, env=env, timeout=90, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert proc.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in proc.stderr
    assert "choose another metrics port" in proc.stderr
    assert not (tmp_path / "cluster" / "cluster.json").exists()


# -- the pieces -----------------------------------------------------------------------------


def test_totals_never_go_down():
    """Sources that start again from zero, end, or vanish with their worker keep what
    they counted in their groups' totals."""
    totals = Totals(2)
    groups = (("actor", 1), ("class", "C"), ("worker", "w0"))
    totals.observe(("w0", 1, 0), groups, [5, 1])
    totals.observe(("w0", 1, 0), groups, [7, 1])
    assert totals.totals()[("class", "C")] == [7, 1]
    totals.observe(("w0", 1, 0), groups, [2, 0])  # restarted in place: from zero again
    assert totals.totals()[("actor", 1)] == [9, 1]
    totals.retire(("w0", 1, 0))  # ended
    totals.observe(("w1", 2, 0), (("actor", 2), ("class", "C"), ("worker", "w1")), [3, 0])
    assert totals.totals()[("class", "C")] == [12, 1]
    totals.forget_groups(lambda group: group == ("actor", 1))
    assert ("actor", 1) not in totals.totals()
    assert totals.totals()[("worker", "w0")] == [9, 1]
    assert CALLS == 0 and ERRORS == 1


def test_service_histogram_folds_new_samples_once_and_scales_an_overflow():
    histogram = ServiceHistogram()
    histogram.fold([2e-6, 3e-3], 2)
    histogram.fold([2e-6, 3e-3], 2)  # nothing new
    assert histogram.as_dict()["count"] == 2
    counts = histogram.as_dict()["counts"]
    assert counts[SERVICE_BUCKETS.index(2.5e-6)] == 1
    assert counts[SERVICE_BUCKETS.index(5e-3)] == 1
    # 1000 calls timed since, the ring holding the last 4: each stands for 250.
    histogram.fold([1e-5, 1e-5, 1e-5, 20.0], 1002)
    result = histogram.as_dict()
    assert result["count"] == 1002
    assert result["counts"][SERVICE_BUCKETS.index(1e-5)] == 750
    assert result["counts"][-1] == 250  # above 10 s
    assert result["sum"] == pytest.approx(3e-3 + 2e-6 + 250 * (3e-5 + 20.0))
