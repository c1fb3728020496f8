"""Cost of the head's durable registry per actor creation (:mod:`zactor.control.head_store`).

Run it: ``PYTHONPATH=. python bench/head_store.py [--creations N]`` (from the repo root).

Each creation writes what ``Head.place`` writes for a named, non-detached
actor: its info dict, its name, the next actor id and its ledger entry (four
statements), into the store's open transaction; the store's flusher commits
every :data:`~zactor.control.head_store.COMMIT_INTERVAL_S`. It prints the
head thread's cost per creation (µs per creation and per statement) and the
implied ceiling of creations per second the store allows, then, for scale,
the same with a commit after every creation (what an unbatched store costs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from zactor.control.head_store import STORE_FILE, HeadStore

#: Statements per creation in the loop below.
WRITES_PER_CREATION = 4


def actor_info(actor_id: int) -> dict:
    """An info dict shaped as ``Head.place`` makes it."""
    return {
        "actor_id": actor_id,
        "address": "ipc:///tmp/zactor-abc/worker-0.sock",
        "worker_id": "worker-0",
        "class_name": "Counter",
        "methods": ["add", "get", "increment"],
        "name": f"counter-{actor_id}",
        "namespace": "bench",
        "lifetime": None,
        "max_pending_calls": 10_000,
        "num_cpus": 0.0,
        "resources": {},
        "owner": "ipc:///tmp/zactor-def/driver-1.sock",
        "max_restarts": 0,
        "max_task_retries": 0,
        "method_options": None,
        "restarts": 0,
        "incarnation": 0,
        "checkpoint_key": f"counter-{actor_id}",
        "state": "starting",
        "task_runner": False,
    }


def run(store: HeadStore, first: int, count: int, commit_each: bool) -> float:
    """Seconds the head's thread spends writing ``count`` creations."""
    infos = [actor_info(i) for i in range(first, first + count)]
    start = time.perf_counter()
    for info in infos:
        store.put_actor(info)
        store.put_name(info["namespace"], info["name"], info["actor_id"])
        store.set_next_actor_id(info["actor_id"] + 1)
        store.put_refs(info["actor_id"], {info["owner"]}, {})
        if commit_each:
            store.commit()
    store.commit()
    return time.perf_counter() - start


def main() -> None:
    """Print µs per creation write, batched and committed one by one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creations", type=int, default=20_000)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="zactor-bench-store-")
    try:
        store = HeadStore.open(os.path.join(directory, STORE_FILE))
        try:
            run(store, 10**9, 1_000, False)  # warm up: page cache, statement cache
            for label, commit_each, count in (
                ("batched (flusher commits)", False, args.creations),
                ("commit per creation", True, args.creations // 4),
            ):
                seconds = run(
                    store, 1 + (0 if not commit_each else args.creations), count, commit_each
                )
                per = seconds / count * 1e6
                print(
                    f"{label:28s} {per:8.1f} µs/creation  {per / WRITES_PER_CREATION:6.1f} µs/write"
                    f"  {count / seconds:10,.0f} creations/s  ({count} creations)"
                )
            snapshot = store.load()
            print(f"reloaded {len(snapshot.actors):,} actors, {len(snapshot.names):,} names")
        finally:
            store.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
