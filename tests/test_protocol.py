"""The declared protocol: system actors answer only their tables, to the roles allowed.

See :mod:`zactor.wire.protocol`. Changing a table changes what an index means
on the wire, so it needs a new protocol version: record the new digest below
together with the bump.
"""

from __future__ import annotations

import inspect

import pytest

import zactor
from zactor.caller.handle import ActorHandle, head_handle, worker_service_handle
from zactor.control.head import Head
from zactor.endpoint.recovery import Notices
from zactor.wire import _fallback, hotpath
from zactor.wire.protocol import (
    DRIVER_TABLE,
    HEAD_TABLE,
    PROTOCOL_VERSION,
    WORKER_TABLE,
    tables_digest,
)
from zactor.worker.service import WorkerService

pytestmark = pytest.mark.timeout(60)

#: tables_digest() for each protocol version. A table changed without a version
#: bump fails below; after a bump, add the new version's digest here.
DIGESTS = {
    2: "028051451b3fd1c6d7d5c0513087973497ecc179de0b510c1943ffa4576c8920",
    3: "028051451b3fd1c6d7d5c0513087973497ecc179de0b510c1943ffa4576c8920",  # + ACK records
    4: "367e8bb9aa223444d9085d4c1d4cd19000bc4971beec3901819d377d849889b3",  # + 2 head methods
    # + Head.actor_failed; DIED_NOTICE_FOLLOWS; __zactor_terminate__ in every actor's table
    5: "ac7637762559d2d86d4b6bbf6f069dc1fa02923a66f34d636a34a24a4ac230e5",
    # + the node role: Head.register_node/node_heartbeat/node_stopping/node_lost,
    # driver_heartbeat, NODE_TABLE; Head.recover and rejoin_deadline, WorkerService.rejoin
    6: "aca79d41d84e608e7ceae79b2157f86f8fafe9f92a16c6a807d681d37a1fb1d3",
    # + the preamble's SHARED_BUFFERS flag (same-host buffers in shared memory), and
    # Head.lease_actor_ids and place_many, WorkerService.create_many
    7: "fa0435828aeb2a8943fdea14601c897e5654a67c8d5110219d6cfdd5cd1611a3",
    # + Head.node_replacement_late (a node's replacement worker that never registered)
    8: "91f5c383708af849b142671fa0ae333ac1505e7aa01c21994cc7617f0e093036",
}


def public_methods(cls: type) -> set[str]:
    return {
        name
        for name, attr in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


@pytest.mark.parametrize(
    "table, cls",
    [(HEAD_TABLE, Head), (WORKER_TABLE, WorkerService), (DRIVER_TABLE, Notices)],
    ids=["head", "worker", "driver"],
)
def test_each_table_is_its_class_public_methods(table, cls):
    """Every declared method exists; every public method is declared; no helper is."""
    assert set(table.names) == public_methods(cls)
    assert not [n for n in table.names if n.startswith("_")]
    assert len(set(table.names)) == len(table.names)
    for name in table.names:
        assert table.roles[table.index[name]], f"{table.service}.{name} allows no role"


def test_a_table_change_needs_a_protocol_version_bump():
    assert PROTOCOL_VERSION in DIGESTS, (
        f"protocol version {PROTOCOL_VERSION} has no recorded digest: add "
        f"{PROTOCOL_VERSION}: {tables_digest()!r} to DIGESTS in tests/test_protocol.py"
    )
    assert tables_digest() == DIGESTS[PROTOCOL_VERSION], (
        "a method table of zactor.wire.protocol changed without a protocol version bump: "
        "bump PROTOCOL_VERSION in zactor/wire/_fast.pyx and _fallback.py and record the "
        f"new digest {tables_digest()!r} here"
    )


def test_both_codecs_speak_the_declared_version():
    assert hotpath.PROTOCOL_VERSION == _fallback.PROTOCOL_VERSION == PROTOCOL_VERSION


def test_private_helpers_are_not_on_the_wire():
    """Indices come from the tables, not from dir(): the head's helpers are unreachable."""
    for helper in ("_restart", "_forget_actor", "_retire", "_owner_gone", "_notify_all"):
        assert hasattr(Head, helper) and helper not in HEAD_TABLE.index
    assert head_handle.__module__ == "zactor.caller.handle"


def _dropped(address: str) -> dict:
    return worker_service_handle(address).stats.remote().result(timeout=30)["dropped"]


def test_an_undeclared_index_is_refused_and_logged(cluster, caplog):
    address = cluster["workers"][0]["address"]
    bogus = ActorHandle(0, address, "WorkerService", (*WORKER_TABLE.names, "bogus"))
    before = _dropped(address).get("undeclared-method", 0)
    index, version = len(WORKER_TABLE.names), PROTOCOL_VERSION
    with pytest.raises(
        AttributeError, match=f"no method #{index} in zactor protocol version {version}"
    ):
        bogus.bogus.remote().result(timeout=30)
    assert _dropped(address).get("undeclared-method", 0) == before + 1
    assert worker_service_handle(address).ping.remote().result(timeout=30)


def test_a_head_only_method_refuses_a_driver(cluster):
    address = cluster["workers"][0]["address"]
    before = _dropped(address).get("wrong-role", 0)
    with pytest.raises(PermissionError, match="WorkerService.shutdown may only be called by head"):
        worker_service_handle(address).shutdown.remote().result(timeout=30)
    assert _dropped(address).get("wrong-role", 0) == before + 1
    # The worker still serves, and still belongs to the cluster.
    assert worker_service_handle(address).ping.remote().result(timeout=30)
    workers = head_handle().cluster_info.remote().result(timeout=30)["workers"]
    assert address in [w["address"] for w in workers]


def test_the_head_refuses_a_driver_its_supervisors_report(cluster):
    """``worker_died`` comes from the head's own supervisor; a driver may not say it."""
    worker = cluster["workers"][0]
    with pytest.raises(PermissionError, match="Head.worker_died may only be called by head"):
        head_handle().worker_died.remote(worker["worker_id"], "lies").result(timeout=30)
    workers = head_handle().cluster_info.remote().result(timeout=30)["workers"]
    assert worker["worker_id"] in [w["worker_id"] for w in workers]


def test_public_api_still_reaches_what_it_needs(cluster):
    """The roles allow every call the public API makes (create, kill, names, status)."""

    @zactor.remote
    class Named:
        def hello(self):
            return "hi"

    h = Named.options(name="protocol-named").remote()
    assert zactor.get(zactor.get_actor("protocol-named").hello.remote()) == "hi"
    zactor.kill(h)
    with pytest.raises(zactor.ActorDiedError):
        zactor.get(h.hello.remote(), timeout=30)
