"""The seeds' SketchyBank behind a hashing actor pool (seed 000, Example 7-4), on zactor.

The seed extends the bank account to a "bank" in which one actor holds many
accounts, and routes each account's requests to its "branch" with a
``HashActorPool`` of 10 actors that picks ``self._actors[hash(key) % num]``.

How zactor spells it, and what it fixes:

* ``HashActorPool(SketchyBank, 10)`` → ``zactor.HashPool(SketchyBank, size=10)``
  (or ``zactor.HashPool(SketchyBank, 10)``); ``actor_for_key(key)`` →
  ``pool.for_key(key)`` (``actor_for_key`` works too). It returns the branch
  actor's own handle, so ``pool.for_key(k).deposit.remote(k, 42.0)`` is one
  message straight to that branch.
* ``hash(key) % num`` changes with ``PYTHONHASHSEED``: two processes of the
  same program send "timbit" to different branches. zactor hashes the key's
  bytes with XXH64 (the same everywhere) and maps the hash to a branch with
  jump consistent hashing, so growing the bank from 10 to 11 branches moves
  about 1/11 of the accounts instead of almost all of them
  (``resize`` below, with ``export_accounts`` moving the state).
* Dask's ``.deposit(...).result()`` → ``.deposit.remote(...).result()``.
* The seed's ``def __init__(self, accounts={})`` shares one dict between every
  branch created in the same process (Python's mutable default argument):
  this version starts each branch with its own dict.

Run it: ``python examples/sketchy_bank.py``.
"""

from __future__ import annotations

import zactor
from zactor.pool import shard_of

#: Branches (actors) of the bank, as in the seed.
NUM_BRANCHES = 10
#: Extra accounts opened to show how they spread over the branches.
NUM_ACCOUNTS = 2000


class SketchyBank:
    """A sketchy bank (handles multiple accounts in one actor)."""

    # 42 is a good start
    def __init__(self, accounts=None):
        self._accounts = dict(accounts or {})

    def create_account(self, key):
        if key in self._accounts:
            raise Exception(f"{key} is already an account.")
        self._accounts[key] = 0.0

    def deposit(self, key, amount):
        if amount < 0:
            raise Exception("Cannot deposit negative amount")
        if key not in self._accounts:
            raise Exception(f"Could not find account {key}")
        self._accounts[key] += amount
        return self._accounts[key]

    def withdrawal(self, key, amount):
        if key not in self._accounts:
            raise Exception(f"Could not find account {key}")
        if amount > self._accounts[key]:
            raise Exception("Please deposit more money first.")
        self._accounts[key] -= amount
        return self._accounts[key]

    def balance(self, key):
        if key not in self._accounts:
            raise Exception(f"Could not find account {key}")
        return self._accounts[key]

    # -- not in the seed: what a resize needs -----------------------------------------------

    def num_accounts(self):
        return len(self._accounts)

    def export_accounts(self, new_size, my_index):
        """Remove and return the accounts that belong to another branch among ``new_size``."""
        keys = list(self._accounts)
        shards = shard_of(keys, new_size).tolist()
        moving = {k: self._accounts[k] for k, s in zip(keys, shards) if s != my_index}
        for k in moving:
            del self._accounts[k]
        return moving

    def import_accounts(self, accounts):
        self._accounts.update(accounts)
        return len(self._accounts)


def grow(bank: zactor.HashPool, new_size: int) -> int:
    """Grow ``bank`` to ``new_size`` branches and move the accounts that changed branch."""
    old_size = bank.size
    bank.resize(new_size)
    exports = zactor.get(
        [a.export_accounts.remote(new_size, i) for i, a in enumerate(bank.actors[:old_size])]
    )
    moved = 0
    for accounts in exports:
        by_branch: dict[int, dict] = {}
        for key, balance in accounts.items():
            by_branch.setdefault(bank.shard_of_key(key), {})[key] = balance
        zactor.get([bank[s].import_accounts.remote(part) for s, part in by_branch.items()])
        moved += len(accounts)
    return moved


def main() -> dict:
    zactor.init(num_workers=2)
    try:
        holdens_questionable_bank = zactor.HashPool(SketchyBank, NUM_BRANCHES)
        holdens_questionable_bank.actor_for_key("timbit").create_account.remote("timbit")
        timbit = holdens_questionable_bank.actor_for_key("timbit").deposit.remote("timbit", 42.0)
        timbit = timbit.result()
        print(f"timbit balance: {timbit}")  # 42.0
        timbit_branch = holdens_questionable_bank.shard_of_key("timbit")
        print(f"timbit banks at branch {timbit_branch}")

        branch = holdens_questionable_bank.for_key("timbit")
        overdraft = duplicate = None
        try:
            branch.withdrawal.remote("timbit", 100.0).result()
        except Exception as e:
            overdraft = e.args[0]
            print(overdraft)  # Please deposit more money first.
        try:
            branch.create_account.remote("timbit").result()
        except Exception as e:
            duplicate = e.args[0]
            print(duplicate)  # timbit is already an account.

        # Many accounts: each call goes straight to the account's branch.
        keys = [f"customer-{i}" for i in range(NUM_ACCOUNTS)]
        bank = holdens_questionable_bank
        for k in keys:
            bank.for_key(k).create_account.tell(k)
        deposits = [bank.for_key(k).deposit.remote(k, float(i)) for i, k in enumerate(keys)]
        zactor.get(deposits)
        per_branch = zactor.get([a.num_accounts.remote() for a in bank])
        print(f"accounts per branch: {per_branch}")
        balances = zactor.get([bank.for_key(k).balance.remote(k) for k in keys])
        balances_ok = balances == [float(i) for i in range(NUM_ACCOUNTS)]

        # Grow to 11 branches: only the accounts that now belong to branch 10 move.
        moved = grow(bank, NUM_BRANCHES + 1)
        print(f"after growing to {bank.size} branches, {moved} of {sum(per_branch)} accounts moved")
        after = zactor.get([bank.for_key(k).balance.remote(k) for k in keys])
        after_timbit = zactor.get(bank.for_key("timbit").balance.remote("timbit"))
        after_ok = after == balances and after_timbit == 42.0
        return {
            "timbit": timbit,
            "timbit_branch": timbit_branch,
            "overdraft": overdraft,
            "duplicate": duplicate,
            "per_branch": per_branch,
            "accounts": sum(per_branch),
            "balances_ok": balances_ok,
            "after_resize": {"moved": moved, "balances_ok": bool(after_ok)},
        }
    finally:
        zactor.shutdown()


if __name__ == "__main__":
    main()
