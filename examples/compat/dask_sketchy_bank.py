"""Seed 000 (Dask, chapter 7), Example 7-4 ("用于银行的哈希 actor 池示例扩展"),
through ``zactor.compat.dask``.

The seed's ``HashActorPool`` makes ten ``SketchyBank`` actors and routes each
account to ``hash(key) % 10``. (``zactor.HashPool`` does this with a mapping
that is the same in every process: see examples/sketchy_bank.py.)

Changed from the seed: its import line (the chapter's earlier
``from dask.distributed import Client``). Scaffolding: the client, and
printing the balance the seed leaves in its last line's future.

Run it: ``python examples/compat/dask_sketchy_bank.py``.
"""

from zactor.compat.dask import Client  # was: from dask.distributed import Client

client = Client()  # scaffolding: the chapter's client

# -- seed 000, Example 7-4 -------------------------------------------------------------------

class SketchyBank:
    """ A sketchy bank (handles multiple accounts in one actor)."""

    # 42 is a good start
    def __init__(self, accounts={}):
        self._accounts = accounts

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

class HashActorPool:
    """A basic deterministic actor pool."""

    def __init__(self, actorClass, num):
        self._num = num
        # Make the request number of actors
        self._actors = list(
            map(lambda x: client.submit(SketchyBank, actor=True).result(),
                range(0, num)))

    def actor_for_key(self, key):
        return self._actors[hash(key) % self._num]

holdens_questionable_bank = HashActorPool(SketchyBank, 10)
holdens_questionable_bank.actor_for_key("timbit").create_account("timbit")
holdens_questionable_bank.actor_for_key(
    "timbit").deposit("timbit", 42.0).result()

# -- scaffolding: what the seed computed ------------------------------------------------------
print(f"branches: {len(holdens_questionable_bank._actors)}")
branch = holdens_questionable_bank.actor_for_key("timbit")
print(f"timbit's balance: {branch.balance('timbit').result()}")
client.close()
