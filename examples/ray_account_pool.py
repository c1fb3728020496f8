"""Ray's ``Account`` persisting through an ``ActorPool`` (seed 002, Examples 4-8 to 4-11).

The seed separates persistence from the account: a ``BasePersitence``
interface, a ``FilePersistence`` that pickles a dict to a file per key, and
finally (Example 4-11) three ``FilePersistence`` actors in an ``ActorPool``
that the ``Account`` actor receives and submits its saves and restores to.

How zactor spells it:

* ``from ray.util import ActorPool`` → ``zactor.ActorPool``, with Ray's
  ``submit(fn, value)``, ``has_next()`` and ``get_next()``. An idle pool is
  picklable, so it is passed to the ``Account`` constructor as in the seed.
* ``ray.cloudpickle`` → ``cloudpickle``; ``@ray.remote`` → ``@zactor.remote``
  (here ``zactor.remote(cls)`` in ``main``, so the classes stay plain).
* The seed's ``Account`` sets ``self.balance`` (a float) beside its
  ``balance()`` method: zactor looks methods up on the class, so
  ``account.balance.remote()`` still calls the method.
* The files go to a temporary directory, not the working directory.
* One change to the seed's logic: its ``storestate`` submits a save and
  returns, so two saves of one account can run at once on two pool actors
  and finish in either order (the file could end with the older state).
  And as nothing collects the saves, each keeps its pool actor busy (in Ray
  as here, an actor is free once its result is taken): a fourth save would
  wait in the pool's queue until the next ``restorestate``.
  Here ``storestate`` first collects the previous save (``get_next``), as
  the seed's ``restorestate`` already does: at most one save is in flight,
  and the file always ends with the newest state.
* The seed's ``lambda a, v: a.save.remote(v)`` passes the ``(key, state)``
  tuple as one argument to ``save(key, data)``; this version unpacks it
  (``a.save.remote(*v)``).
* The driver reads the persisted state through its own copy of the pool,
  then creates a second ``Account`` with the same key, which restores it.

Run it: ``python examples/ray_account_pool.py``.
"""

from __future__ import annotations

import tempfile
from os.path import exists

import cloudpickle

import zactor
from zactor import ActorPool

ACCOUNT_KEY = "1234567"


class BasePersitence:
    def exists(self, key: str) -> bool:
        pass

    def save(self, key: str, data: dict):
        pass

    def restore(self, key: str) -> dict:
        pass


class FilePersistence(BasePersitence):
    def __init__(self, basedir: str = "."):
        self.basedir = basedir

    def exists(self, key: str) -> bool:
        return exists(self.basedir + "/" + key)

    def save(self, key: str, data: dict):
        bytes = cloudpickle.dumps(data)
        with open(self.basedir + "/" + key, "wb") as f:
            f.write(bytes)

    def restore(self, key: str) -> dict:
        if not self.exists(key):
            return None
        else:
            with open(self.basedir + "/" + key, "rb") as f:
                bytes = f.read()
            return cloudpickle.loads(bytes)


class Account:
    def __init__(
        self, balance: float, minimal_balance: float, account_key: str, persistence: ActorPool
    ):
        self.persistence = persistence
        self.key = account_key
        if not self.restorestate():
            if balance < minimal_balance:
                raise Exception("Starting balance is less than minimal balance")
            self.balance = balance
            self.minimal = minimal_balance
            self.storestate()

    def balance(self) -> float:
        return self.balance

    def deposit(self, amount: float) -> float:
        if amount < 0:
            raise Exception("Cannot deposit negative amount")
        self.balance = self.balance + amount
        self.storestate()
        return self.balance

    def withdraw(self, amount: float) -> float:
        if amount < 0:
            raise Exception("Cannot withdraw negative amount")
        balance = self.balance - amount
        if balance < self.minimal:
            raise Exception("Withdrawal is not supported by current balance")
        self.balance = balance
        self.storestate()
        return balance

    def restorestate(self) -> bool:
        while self.persistence.has_next():
            self.persistence.get_next()
        self.persistence.submit(lambda a, v: a.restore.remote(v), self.key)
        state = self.persistence.get_next()
        if state is not None:
            print(f"Restoring state {state}")
            self.balance = state["balance"]
            self.minimal = state["minimal"]
            return True
        else:
            return False

    def storestate(self):
        while self.persistence.has_next():  # not in the seed: see the module's docstring
            self.persistence.get_next()
        self.persistence.submit(
            lambda a, v: a.save.remote(*v),
            (self.key, {"balance": self.balance, "minimal": self.minimal}),
        )

    def flush(self) -> bool:
        """Wait for the last save (not in the seed: lets the driver read the file)."""
        while self.persistence.has_next():
            self.persistence.get_next()
        return True


def main() -> dict:
    zactor.init(num_workers=2)
    try:
        with tempfile.TemporaryDirectory(prefix="zactor-accounts-") as basedir:
            return run(basedir)
    finally:
        zactor.shutdown()


def run(basedir: str) -> dict:
    RemoteFilePersistence = zactor.remote(FilePersistence)
    RemoteAccount = zactor.remote(Account)

    pool = ActorPool(
        [
            RemoteFilePersistence.remote(basedir),
            RemoteFilePersistence.remote(basedir),
            RemoteFilePersistence.remote(basedir),
        ]
    )

    # Example 4-1's check, with a key nothing was saved under.
    rejected = None
    bad = RemoteAccount.remote(
        balance=10.0, minimal_balance=20.0, account_key="no-such-key", persistence=pool
    )
    try:
        zactor.get(bad.balance.remote())
    except Exception as e:
        rejected = e.args[0]
        print(f"Oops! {rejected} occurred.")

    # Example 4-11.
    account_actor = RemoteAccount.options(name="Account").remote(
        balance=100.0, minimal_balance=20.0, account_key=ACCOUNT_KEY, persistence=pool
    )
    current = zactor.get(account_actor.balance.remote())
    print(f"Current balance {current}")  # 100.0
    after_withdraw = zactor.get(account_actor.withdraw.remote(40.0))
    print(f"New balance {after_withdraw}")  # 60.0
    after_deposit = zactor.get(account_actor.deposit.remote(30.0))
    print(f"New balance {after_deposit}")  # 90.0
    negative = None
    try:
        zactor.get(account_actor.withdraw.remote(-40.0))
    except Exception as e:
        negative = e.args[0]
        print(f"Oops! {negative} occurred.")

    # What the pool persisted, read through the driver's own (idle) copy of the pool.
    zactor.get(account_actor.flush.remote())
    pool.submit(lambda a, v: a.restore.remote(v), ACCOUNT_KEY)
    persisted = pool.get_next(timeout=60)
    print(f"Persisted state {persisted}")

    # A new actor for the same account restores the saved state, not the balance passed.
    zactor.kill(account_actor)
    restored_actor = RemoteAccount.remote(
        balance=1000.0, minimal_balance=20.0, account_key=ACCOUNT_KEY, persistence=pool
    )
    restored = zactor.get(restored_actor.balance.remote())
    print(f"Restored balance {restored}")  # 90.0
    return {
        "rejected": rejected,
        "current": current,
        "after_withdraw": after_withdraw,
        "after_deposit": after_deposit,
        "negative": negative,
        "persisted": persisted,
        "restored": restored,
    }


if __name__ == "__main__":
    main()
