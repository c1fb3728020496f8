"""Whether a process still runs, read from ``/proc`` (Linux), with ``kill(pid, 0)``
where there is none.

The cluster commands, the head's supervisor and a standing cluster's workers
all ask it: a pid alone may have been reused, so :func:`process_start_time`
lets a caller tell the process it knew from a newer one with the same pid.
"""

from __future__ import annotations

import os


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain ") ".
    return data[data.rindex(b")") + 2 :].decode().split()


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), to tell a reused pid from ours."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def process_alive(pid: int, start_time: int | None = None) -> bool:
    """True while ``pid`` runs (a zombie counts as dead), and started at ``start_time`` if given."""
    if pid <= 0:
        return False
    if os.path.isdir("/proc/self"):
        fields = _proc_stat(pid)
        if fields is None or fields[0] in ("Z", "X", "x"):
            return False
        return start_time is None or int(fields[19]) == start_time
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def child_pids(pid: int) -> list[int]:
    """The live children of ``pid`` (Linux ``/proc``; empty elsewhere)."""
    children = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return children
    for entry in entries:
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields and fields[1] == str(pid) and fields[0] not in ("Z", "X", "x"):
                children.append(int(entry))
    return sorted(children)
