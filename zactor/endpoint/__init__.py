"""The per-process endpoint: one inbox, outboxes to peers, the calls awaiting replies.

- :mod:`~zactor.endpoint.runtime`: :class:`~zactor.endpoint.runtime.Runtime`,
  present in every zactor process, and its batching outboxes and reader role.
- :mod:`~zactor.endpoint.recovery`: the caller's side of actor failures.
- :mod:`~zactor.endpoint.refs`: this process's count of live handles (lifetime).

The endpoint sits on :mod:`zactor.transport` and :mod:`zactor.wire`; it imports
no socket library and nothing of the public API.
"""
