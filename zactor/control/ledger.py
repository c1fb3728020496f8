"""The head's half of reference-counted lifetime: which processes hold each actor.

Each process counts its own handles (:class:`zactor.endpoint.refs.HandleRefs`)
and reports *hold*, *release*, *sent* and *claimed* transitions; the
:class:`RefLedger` here applies those reports and says when an actor is no
longer held anywhere. The whole scheme is described in :mod:`zactor.endpoint.refs`.
"""

from __future__ import annotations

from typing import Callable

from zactor.endpoint.refs import CLAIMED, HOLD, RELEASE, SENT


class RefLedger:
    """The head's view: which processes hold each actor, and which copies are in transit."""

    def __init__(self) -> None:
        self.holders: dict[int, set] = {}
        self.transit: dict[int, dict[int, int]] = {}

    def track(self, actor_id: int, owner: str) -> None:
        """Start counting a new actor, held by the process that created it."""
        self.holders[actor_id] = {owner}

    def hold(self, actor_id: int, address: str | None) -> None:
        """``address`` holds the actor from now on (it looked the actor up by name)."""
        holders = self.holders.get(actor_id)
        if holders is not None and address is not None:
            holders.add(address)

    def forget(self, actor_id: int) -> None:
        """The actor ended: drop its entries."""
        self.holders.pop(actor_id, None)
        self.transit.pop(actor_id, None)

    def apply(self, address: str, report: list, on_unreferenced: Callable[[int], None]) -> None:
        """Apply one process's report; call ``on_unreferenced(actor_id)`` for actors it freed."""
        touched = set()
        for kind, actor_id, token in report:
            holders = self.holders.get(actor_id)
            if holders is None:  # not counted: ended, detached, or a system actor
                continue
            if kind == HOLD:
                holders.add(address)
            elif kind == RELEASE:
                holders.discard(address)
                touched.add(actor_id)
            elif kind in (SENT, CLAIMED):
                tokens = self.transit.setdefault(actor_id, {})
                count = tokens.get(token, 0) + (1 if kind == SENT else -1)
                if count:
                    tokens[token] = count
                else:
                    del tokens[token]
                    touched.add(actor_id)
        for actor_id in touched:
            if not self.in_use(actor_id):
                on_unreferenced(actor_id)

    def drop_process(self, address: str, on_unreferenced: Callable[[int], None]) -> None:
        """A process is gone: it holds nothing any more."""
        freed = []
        for actor_id, holders in self.holders.items():
            if address in holders:
                holders.discard(address)
                if not self.in_use(actor_id):
                    freed.append(actor_id)
        for actor_id in freed:
            on_unreferenced(actor_id)

    def in_use(self, actor_id: int) -> bool:
        """True while a process holds the actor or a copy of its handle is in transit."""
        if self.holders.get(actor_id):
            return True
        return any(count > 0 for count in self.transit.get(actor_id, {}).values())
