"""Namespaces as Ray has them: a driver that gives none gets an anonymous one of its own.

Two drivers that each create ``name="Pinger"`` without a namespace both succeed
and each finds its own; drivers share named actors through an explicit
namespace; an actor's calls use the namespace of the driver that created it;
and a named actor with a checkpoint finds it again in a later run although
its anonymous namespace is new.

The second driver is a subprocess that joins the session's cluster by its
head's address (:func:`second_driver`); it imports its actor classes from this
module, as the workers do. Cluster restarts run in subprocesses with clusters
of their own (:func:`scenario.run_scenario`). Nothing here depends on timing:
every step waits for the one before it to answer.
"""

from __future__ import annotations

import textwrap

import pytest
from scenario import run_scenario

import zactor
from zactor.caller.handle import head_handle
from zactor.cli import format_status
from zactor.endpoint import runtime as runtime_mod
from zactor.endpoint.runtime import anonymous_namespace, is_anonymous_namespace

pytestmark = pytest.mark.timeout(120)


@zactor.remote
class Pinger:
    def __init__(self, owner: str) -> None:
        self.owner = owner

    def ping(self) -> str:
        return self.owner

    def namespace(self) -> str | None:
        return zactor.get_runtime_context().namespace


@zactor.remote
class Parent:
    """Creates a named child, and finds it by name, without giving a namespace."""

    def make_child(self, name: str) -> dict:
        self.child = Pinger.options(name=name).remote("child")  # kept: the child lives on
        found = zactor.get_actor(name)
        return {
            "same": found == self.child,
            "ping": zactor.get(found.ping.remote(), timeout=30),
            "child_namespace": zactor.get(found.namespace.remote(), timeout=30),
            "namespace": zactor.get_runtime_context().namespace,
            "names": zactor.list_named_actors(),
        }

    def make_grandchild(self, name: str) -> dict:
        """A tree two deep: a new Parent, created here, names the child."""
        self.parent = Parent.remote()
        return zactor.get(self.parent.make_child.remote(name), timeout=30)

    def lookup(self, name: str) -> str:
        return zactor.get(zactor.get_actor(name).ping.remote(), timeout=30)


@zactor.remote
class AsyncProbe:
    async def namespace(self) -> str | None:
        return zactor.get_runtime_context().namespace


@zactor.remote(max_concurrency=4)
class ThreadedProbe:
    def namespace(self) -> str | None:
        return zactor.get_runtime_context().namespace


@zactor.remote
class Account:
    def __init__(self, balance: int) -> None:
        self.balance = balance

    def deposit(self, amount: int) -> int:
        self.balance += amount
        return self.balance


def second_driver(body: str, namespace: str | None = None) -> dict:
    """Run ``body`` in another driver joined to the session's cluster; return what it
    reports with ``report(**values)``. ``namespace`` goes to its ``init``."""
    head = runtime_mod.current().head_address
    script = (
        "import json\n"
        "import zactor\n"
        "from test_namespaces import Account, Parent, Pinger\n"
        f"zactor.init(address={head!r}, namespace={namespace!r})\n"
        "def report(**values):\n"
        "    print('RESULT ' + json.dumps(values), flush=True)\n"
        + textwrap.dedent(body)
        + "\nzactor.shutdown()\n"
    )
    return run_scenario(script, timeout=90)


def info_of(handle) -> dict:
    """The head's record of ``handle``'s actor (its namespace, its checkpoint key)."""
    for info in head_handle().list_actors.remote().result(timeout=30):
        if info["actor_id"] == handle._actor_id:
            return info
    raise LookupError(f"the head does not know actor {handle!r}")


def missing(name: str, **kwargs) -> str:
    """The ``ValueError`` text of ``get_actor(name, ...)`` for a name that is not there."""
    with pytest.raises(ValueError) as caught:
        zactor.get_actor(name, **kwargs)
    return str(caught.value)


# -- a driver's namespace ------------------------------------------------------------------------


def test_a_driver_without_namespace_gets_an_anonymous_one_of_its_own(cluster):
    mine = zactor.get_runtime_context().namespace
    assert is_anonymous_namespace(mine), mine
    got = second_driver("report(namespace=zactor.get_runtime_context().namespace)")
    assert is_anonymous_namespace(got["namespace"]) and got["namespace"] != mine
    got = second_driver("report(namespace=zactor.get_runtime_context().namespace)", "team-x")
    assert got["namespace"] == "team-x"


def test_anonymous_namespaces_are_told_apart_from_chosen_ones():
    made = anonymous_namespace()
    assert is_anonymous_namespace(made) and made != anonymous_namespace()
    for chosen in (None, "bank", "anonymous-team", "anonymous-" + "g" * 32, made + "0"):
        assert not is_anonymous_namespace(chosen), chosen


@pytest.mark.parametrize(
    "namespace, error, text",
    [("", ValueError, "namespace must not be empty"), (7, TypeError, "namespace must be a str")],
)
def test_a_bad_namespace_fails_init_before_anything_starts(cluster, namespace, error, text):
    with pytest.raises(error, match=text):
        zactor.init(namespace=namespace)
    assert zactor.is_initialized()  # the session's cluster is untouched


# -- two drivers, one name -----------------------------------------------------------------------


def test_two_drivers_each_create_pinger_without_namespace(cluster):
    mine = Pinger.options(name="Pinger").remote("first")
    try:
        assert zactor.get(mine.ping.remote(), timeout=30) == "first"
        first_namespace = zactor.get_runtime_context().namespace
        got = second_driver(
            f"""
            theirs = Pinger.options(name="Pinger").remote("second")
            found = zactor.get_actor("Pinger")
            # Another driver's anonymous namespace is reachable by its name, as in Ray.
            other = zactor.get_actor("Pinger", namespace={first_namespace!r})
            report(
                found=zactor.get(found.ping.remote(), timeout=30),
                same=found == theirs,
                names=zactor.list_named_actors(),
                other=zactor.get(other.ping.remote(), timeout=30),
            )
            """
        )
        assert got == {"found": "second", "same": True, "names": ["Pinger"], "other": "first"}
        found = zactor.get_actor("Pinger")
        assert found == mine and zactor.get(found.ping.remote(), timeout=30) == "first"
        assert "Pinger" in zactor.list_named_actors()
    finally:
        zactor.kill(mine)


def test_an_explicit_namespace_is_shared_between_drivers(cluster, unique_name):
    shared = unique_name("team")
    mine = Pinger.options(name="Pinger", namespace=shared).remote("first")
    try:
        assert zactor.get(mine.ping.remote(), timeout=30) == "first"
        assert info_of(mine)["namespace"] == shared
        got = second_driver(
            """
            found = zactor.get_actor("Pinger")
            try:
                Pinger.options(name="Pinger").remote("second")
                taken = None
            except ValueError as exc:
                taken = str(exc)
            report(ping=zactor.get(found.ping.remote(), timeout=30),
                   names=zactor.list_named_actors(), taken=taken)
            """,
            namespace=shared,
        )
        assert got["ping"] == "first" and got["names"] == ["Pinger"]
        assert got["taken"] and "already exists" in got["taken"], got
        # A driver in an anonymous namespace finds it only by the namespace's name.
        got = second_driver(
            f"""
            try:
                zactor.get_actor("Pinger")
                unnamed = None
            except ValueError as exc:
                unnamed = str(exc)
            named = zactor.get_actor("Pinger", namespace={shared!r})
            report(unnamed=unnamed, named=zactor.get(named.ping.remote(), timeout=30))
            """
        )
        assert got["named"] == "first"
        assert "'Pinger'" in got["unnamed"] and "explicit namespace" in got["unnamed"]
        # This driver's own anonymous namespace does not hold it either.
        assert "no actor named 'Pinger' in namespace 'anonymous-" in missing("Pinger")
    finally:
        zactor.kill(mine)


# -- actors use their driver's namespace ---------------------------------------------------------


def test_an_actor_creates_and_finds_a_named_child_without_namespace(cluster, unique_name):
    name = unique_name("child")
    driver_namespace = zactor.get_runtime_context().namespace
    parent = Parent.remote()
    got = zactor.get(parent.make_child.remote(name), timeout=60)
    assert got["same"] is True and got["ping"] == "child"
    assert got["namespace"] == got["child_namespace"] == driver_namespace
    assert name in got["names"]
    # The child lives in the driver's namespace: the driver finds it by name too.
    child = zactor.get_actor(name)
    assert zactor.get(child.ping.remote(), timeout=30) == "child"
    assert info_of(child)["namespace"] == driver_namespace
    zactor.kill(parent)
    zactor.kill(child)


def test_an_actor_tree_stays_in_its_drivers_namespace(cluster, unique_name):
    """Two levels down, and under a parent named in another namespace: names still
    mean the driver's namespace (Ray's job namespace), not the parent's own."""
    name = unique_name("grandchild")
    driver_namespace = zactor.get_runtime_context().namespace
    elsewhere = unique_name("elsewhere")
    parent = Parent.options(name=unique_name("parent"), namespace=elsewhere).remote()
    got = zactor.get(parent.make_grandchild.remote(name), timeout=60)
    assert got["same"] is True and got["ping"] == "child"
    assert got["namespace"] == got["child_namespace"] == driver_namespace
    assert zactor.get(zactor.get_actor(name).ping.remote(), timeout=30) == "child"
    assert zactor.get(parent.lookup.remote(name), timeout=30) == "child"
    assert "no actor named" in missing(name, namespace=elsewhere)
    zactor.kill(parent)


def test_another_drivers_actors_use_that_drivers_namespace(cluster, unique_name):
    name = unique_name("child")
    got = second_driver(
        f"""
        parent = Parent.remote()
        made = zactor.get(parent.make_child.remote({name!r}), timeout=60)
        report(made=made, mine=zactor.get_runtime_context().namespace,
               found=zactor.get(zactor.get_actor({name!r}).ping.remote(), timeout=30))
        """
    )
    assert got["made"]["namespace"] == got["made"]["child_namespace"] == got["mine"]
    assert got["made"]["same"] is True and got["found"] == "child"
    assert got["mine"] != zactor.get_runtime_context().namespace
    assert "no actor named" in missing(name)  # not in this driver's namespace


@pytest.mark.parametrize("probe", [Pinger, AsyncProbe, ThreadedProbe], ids=lambda c: c.__name__)
def test_runtime_context_namespace_inside_every_kind_of_actor(cluster, probe):
    args = ("x",) if probe is Pinger else ()
    actor = probe.remote(*args)
    namespace = zactor.get(actor.namespace.remote(), timeout=30)
    assert namespace == zactor.get_runtime_context().namespace
    zactor.kill(actor)


# -- checkpoints of named actors in anonymous namespaces -----------------------------------------

RESTART = """
import json
import zactor
from zactor.caller.handle import head_handle
from test_namespaces import Account

zactor.init(num_workers=1)
acct = Account.options(name="acct", checkpoint=zactor.FileStore({store!r})).remote(100)
balance = zactor.get(acct.deposit.remote({amount}), timeout=30)
info = [i for i in head_handle().list_actors.remote().result(timeout=30)
        if i["actor_id"] == acct._actor_id][0]
print("RESULT " + json.dumps({{"balance": balance, "key": info["checkpoint_key"],
                               "namespace": zactor.get_runtime_context().namespace}}))
zactor.shutdown()
"""


def test_a_named_actor_finds_its_checkpoint_after_the_cluster_restarts(tmp_path):
    """Each run is a new cluster and a new anonymous namespace; the key is the name."""
    store = str(tmp_path / "store")
    first = run_scenario(RESTART.format(store=store, amount=5))
    second = run_scenario(RESTART.format(store=store, amount=1))
    assert first["namespace"] != second["namespace"]
    assert first["key"] == second["key"] == "acct"
    assert (first["balance"], second["balance"]) == (105, 106)  # the constructor did not run


def test_live_actors_in_two_anonymous_namespaces_never_share_a_checkpoint_key(
    cluster, tmp_path, unique_name
):
    name, team = unique_name("acct"), unique_name("team")
    store = zactor.FileStore(str(tmp_path / "store"))
    mine = Account.options(name=name, checkpoint=store).remote(100)
    try:
        assert zactor.get(mine.deposit.remote(1), timeout=30) == 101
        assert info_of(mine)["checkpoint_key"] == name
        got = second_driver(
            f"""
            store = zactor.FileStore({str(tmp_path / "store")!r})
            try:
                Account.options(name={name!r}, checkpoint=store).remote(0)
                refused = None
            except ValueError as exc:
                refused = str(exc)
            # Without a checkpoint the name is free in this driver's namespace ...
            plain = Account.options(name={name!r}).remote(0)
            # ... and with an explicit namespace the key names it.
            apart = Account.options(name={name!r}, namespace={team!r}, checkpoint=store)
            apart = apart.remote(7)
            report(refused=refused, plain=zactor.get(plain.deposit.remote(1), timeout=30),
                   apart=zactor.get(apart.deposit.remote(1), timeout=30))
            """
        )
        assert got["refused"] and f"key {name!r}" in got["refused"], got
        assert "same namespace" in got["refused"]
        assert (got["plain"], got["apart"]) == (1, 8)
        assert zactor.get(mine.deposit.remote(1), timeout=30) == 102  # untouched
        assert store.exists(f"{team}:{name}")
    finally:
        zactor.kill(mine)


# -- zactor status ------------------------------------------------------------------------------


def test_status_shows_each_named_actors_namespace():
    anonymous = anonymous_namespace()
    report = {
        "head": {"pid": 1, "address": "ipc:///h.sock", "started_at": None},
        "cluster": {"cluster_file": "/c.json"},
        "nodes": [],
        "workers": [],
        "drivers": [],
        "actors": [
            {"actor_id": 1, "name": "Pinger", "namespace": anonymous, "class_name": "Pinger"},
            {"actor_id": 2, "name": "Pinger", "namespace": "team", "class_name": "Pinger"},
            {"actor_id": 3, "name": None, "namespace": anonymous, "class_name": "Pinger"},
        ],
    }
    rows = {line.split()[0]: line.split() for line in format_status(report).splitlines()[-4:]}
    assert rows["ID"][:3] == ["ID", "NAME", "NAMESPACE"]
    assert rows["1"][1:3] == ["Pinger", anonymous[: len("anonymous-") + 8]]
    assert rows["2"][1:3] == ["Pinger", "team"]
    assert rows["3"][1:3] == ["-", "-"]
