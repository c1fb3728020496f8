"""What a Ray user asks the cluster: named actors, total and free resources."""

from __future__ import annotations

import pytest
from gates import poll

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


def test_cluster_and_available_resources(cluster):
    total = zactor.cluster_resources()
    assert total["CPU"] == len(cluster["workers"])
    free_before = zactor.available_resources()["CPU"]
    pinned = Named.options(num_cpus=1).remote()  # a worker of its own
    assert zactor.get(pinned.hello.remote()) == "hi"
    assert zactor.available_resources()["CPU"] == free_before - 1
    zactor.kill(pinned)
    poll(lambda: zactor.available_resources()["CPU"] == free_before, timeout=30)
