"""Helpers shared by the tests and by the actors they define (workers import it too)."""

from __future__ import annotations

import os
import time


def wait_for_file(path: str, limit: float = 30.0) -> None:
    """Block until ``path`` exists (a gate a test opens); TimeoutError after ``limit`` s."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)


def alive(pid: int) -> bool:
    """True while ``pid`` runs and is a zactor process (zombies count as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X") and b"zactor" in cmdline
