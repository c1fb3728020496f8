"""What a Ray user asks the cluster: named actors, total and free resources."""

from __future__ import annotations

import textwrap

import pytest
from gates import poll
from scenario import run_scenario

import zactor

pytestmark = pytest.mark.timeout(60)


@zactor.remote
class Named:
    def hello(self) -> str:
        return "hi"


def test_list_named_actors_in_this_namespace_and_in_all(cluster, unique_name):
    here, there = unique_name("here"), unique_name("there")
    a = Named.options(name=here).remote()
    b = Named.options(name=there, namespace="elsewhere").remote()
    names = zactor.list_named_actors()
    assert here in names and there not in names
    everywhere = zactor.list_named_actors(all_namespaces=True)
    assert {"name": there, "namespace": "elsewhere"} in everywhere
    mine = zactor.get_runtime_context().namespace  # this driver's anonymous namespace
    assert {"name": here, "namespace": mine} in everywhere
    zactor.kill(a)
    zactor.kill(b)
    poll(lambda: here not in zactor.list_named_actors(), timeout=30)


def test_cluster_and_available_resources():
    # On a cluster of its own: actors other tests leave holding a CPU would make the
    # session's cluster have no whole CPU free.
    out = run_scenario(
        textwrap.dedent(
            """
            import json
            import zactor

            @zactor.remote
            class Named:
                def hello(self):
                    return "hi"

            zactor.init(num_workers=2)
            total = zactor.cluster_resources()
            free_before = zactor.available_resources()["CPU"]
            pinned = Named.options(num_cpus=1).remote()  # a worker of its own
            hello = zactor.get(pinned.hello.remote(), timeout=30)
            free_pinned = zactor.available_resources()["CPU"]
            zactor.kill(pinned)
            free_after = free_pinned
            for _ in range(3000):  # the head frees the CPU once the worker reports the end
                free_after = zactor.available_resources()["CPU"]
                if free_after == free_before:
                    break
            zactor.shutdown()
            print("RESULT " + json.dumps(dict(
                total=total, free_before=free_before, hello=hello,
                free_pinned=free_pinned, free_after=free_after,
            )))
            """
        )
    )
    assert out["total"]["CPU"] == 2
    assert out["free_before"] == 2 and out["hello"] == "hi"
    assert out["free_pinned"] == 1
    assert out["free_after"] == 2
