"""The seeds' ``Account`` made durable in one line (seed 002, Examples 4-1 and 4-8 to 4-11).

In the seed, persistence is hand-written: the ``Account`` actor saves its
balance through a ``FilePersistence`` store after each change and restores it
in its constructor. With zactor the class stays the plain ``Account`` of
Example 4-1, and one option makes it durable::

    account = Account.options(name="acct", checkpoint=zactor.FileStore(dir)).remote(100.0, 20.0)

What that does (the worker side of issue 5):

* After every successful call (``checkpoint_every=1``, the default) the
  actor's state (its ``__dict__``, or ``__getstate__()``) is saved, *before*
  the caller gets the reply: a balance you have seen is on disk.
* A named actor created again (here after ``zactor.kill``), or any actor
  restarted after its worker died, is rebuilt from its checkpoint; the
  constructor does not run, so its arguments are ignored.
* Any store with the seeds' ``exists``/``save``/``restore`` methods works,
  the seed's own ``FilePersistence`` included (second half of this script),
  as do ``zactor.SQLiteStore(path)`` and ``"file:///dir"`` / ``"sqlite:///db"``.

Run it: ``python examples/durable_account.py``.
"""

from __future__ import annotations

import tempfile
import time
from os.path import exists

import cloudpickle

import zactor


class Account:
    """The seed's ``Account`` (Example 4-1), unchanged: no persistence code."""

    def __init__(self, balance: float, minimal_balance: float):
        self.minimal = minimal_balance
        if balance < minimal_balance:
            raise Exception("Starting balance is less than minimal balance")
        self.balance = balance

    def balance(self) -> float:
        return self.balance

    def deposit(self, amount: float) -> float:
        if amount < 0:
            raise Exception("Cannot deposit negative amount")
        self.balance = self.balance + amount
        return self.balance

    def withdraw(self, amount: float) -> float:
        if amount < 0:
            raise Exception("Cannot withdraw negative amount")
        balance = self.balance - amount
        if balance < self.minimal:
            raise Exception("Withdrawal is not supported by current balance")
        self.balance = balance
        return balance


class FilePersistence:
    """The seed's store (Example 4-9), unchanged (``ray.cloudpickle`` → ``cloudpickle``)."""

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


def _kill_and_wait(handle, name: str, timeout: float = 30.0) -> None:
    """``zactor.kill``, then wait until the head has freed the name."""
    zactor.kill(handle)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            zactor.get_actor(name)
        except ValueError:
            return
        time.sleep(0.02)
    raise TimeoutError(f"the name {name!r} was not freed within {timeout} s")


def _round(store, name: str) -> dict:
    """Use a durable account, kill it, create it again by name: the balance is back."""
    DurableAccount = zactor.remote(Account)
    account = DurableAccount.options(name=name, checkpoint=store).remote(100.0, 20.0)
    deposited = zactor.get(account.deposit.remote(50.0))
    withdrawn = zactor.get(account.withdraw.remote(30.0))
    print(f"{name}: deposited -> {deposited}, withdrew -> {withdrawn}")
    _kill_and_wait(account, name)

    # The constructor's arguments are ignored: the actor comes back from its checkpoint.
    again = DurableAccount.options(name=name, checkpoint=store).remote(100.0, 20.0)
    restored = zactor.get(again.balance.remote())
    print(f"{name}: after kill and re-creation, balance -> {restored}")
    zactor.kill(again)
    return {"deposited": deposited, "withdrawn": withdrawn, "restored": restored}


def main() -> dict:
    """Run both rounds (zactor's FileStore, then the seed's FilePersistence)."""
    zactor.init(num_workers=2)
    try:
        with tempfile.TemporaryDirectory() as directory:
            return {
                "filestore": _round(zactor.FileStore(directory + "/store"), "acct"),
                "seed": _round(FilePersistence(directory), "seed-acct"),
            }
    finally:
        zactor.shutdown()


if __name__ == "__main__":
    main()
