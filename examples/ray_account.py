"""Ray's ``Account`` actor (seed 002, Examples 4-1 to 4-6), on zactor.

The seed builds a bank account as a Ray actor: a constructor that refuses a
starting balance below the minimal balance (4-1), creating it (4-2) or
making the plain class remote without the decorator (4-3), calling
``balance``/``withdraw``/``deposit`` and catching the exception of a negative
withdrawal (4-4), a named actor found again by name (4-5) and a detached
named actor (4-6).

How zactor spells it:

* ``ray.remote(Account)`` → ``zactor.remote(Account)``; ``@ray.remote`` →
  ``@zactor.remote``; ``Account.remote(balance=100., minimal_balance=20.)``
  is the same.
* ``ray.get(account_actor.balance.remote())`` →
  ``zactor.get(account_actor.balance.remote())``.
* ``Account.options(name='Account')`` and
  ``Account.options(name='Account', lifetime='detached')`` are the same;
  ``ray.get_actor('Account')`` → ``zactor.get_actor('Account')``;
  ``ray.kill(actor)`` → ``zactor.kill(actor)``.
* The seed's ``Account`` sets ``self.balance`` (a float) beside its
  ``balance()`` method. On a plain object that attribute would hide the
  method; zactor looks methods up on the class, so
  ``account_actor.balance.remote()`` calls the method, which returns the
  attribute.
* A constructor that raises (4-1's validation) does not fail ``.remote()``,
  which returns at once: the first call on the handle raises the
  constructor's exception.
* The exception an actor raises is an instance of both ``zactor.ActorError``
  and the original class, so the seed's ``except Exception as e`` works. Its
  ``str()`` ends with the remote traceback; this script prints ``e.args[0]``,
  the seed's message.
* Ray would refuse 4-6's second actor named ``'Account'`` while 4-5's still
  lives; this script kills 4-5's actor first (``zactor.kill``), which frees
  its name.

Run it: ``python examples/ray_account.py``.
"""

from __future__ import annotations

import time

import zactor


class Account:
    """The seed's ``Account``, as a plain class (made remote in ``main``)."""

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


def _wait_until_name_is_free(name: str, timeout: float = 30.0) -> None:
    """After ``zactor.kill``, the head frees the name once the worker reports the end."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            zactor.get_actor(name)
        except ValueError:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the name {name!r} was not freed within {timeout} s")
        time.sleep(0.01)


def main() -> dict:
    zactor.init(num_workers=2)
    try:
        # Example 4-3: make the plain class an actor class without the decorator.
        RemoteAccount = zactor.remote(Account)

        # Example 4-1: the constructor checks the starting balance.
        rejected = None
        bad = RemoteAccount.remote(balance=10.0, minimal_balance=20.0)
        try:
            zactor.get(bad.balance.remote())
        except Exception as e:
            rejected = e.args[0]
            print(f"Oops! {rejected} occurred.")

        # Example 4-2.
        account_actor = RemoteAccount.remote(balance=100.0, minimal_balance=20.0)

        # Example 4-4.
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

        # Example 4-5: a named actor, found again by name.
        named = RemoteAccount.options(name="Account").remote(balance=100.0, minimal_balance=20.0)
        found = zactor.get_actor("Account")
        named_balance = zactor.get(found.withdraw.remote(10.0))
        print(f"Named actor found: {found == named}, balance {named_balance}")  # True, 90.0

        # Example 4-6: a detached named actor. Free the name of 4-5's actor first.
        zactor.kill(named)
        _wait_until_name_is_free("Account")
        detached = RemoteAccount.options(name="Account", lifetime="detached").remote(
            balance=100.0, minimal_balance=20.0
        )
        detached_found = zactor.get_actor("Account")
        detached_balance = zactor.get(detached_found.deposit.remote(5.0))
        print(
            f"Detached actor found: {detached_found == detached}, balance {detached_balance}"
        )  # True, 105.0

        return {
            "rejected": rejected,
            "current": current,
            "after_withdraw": after_withdraw,
            "after_deposit": after_deposit,
            "negative": negative,
            "named_found": found == named,
            "named_balance": named_balance,
            "detached_found": detached_found == detached,
            "detached_balance": detached_balance,
        }
    finally:
        zactor.shutdown()


if __name__ == "__main__":
    main()
