"""Dask's ``BankAccount`` actor (seed 000, Examples 7-1 and 7-2), on zactor.

The seed defines a bank account actor with ``balance``, ``deposit`` and
``withdrawal``, creates it on a worker, reads the balance without blocking
and then blocking, and catches the failure of ``withdrawal(100)`` on a
balance of 42.

How zactor spells it:

* ``client.submit(BankAccount, actor=True).result()`` →
  ``BankAccount.remote()`` on a class decorated with ``@zactor.remote``; the
  handle comes back at once, no future to wait on.
* ``account.balance()`` (returns an ``ActorFuture``) →
  ``account.balance.remote()`` (returns a ``zactor.Future``);
  ``future.result()`` blocks as in Dask.
* The exception the actor raises reaches the caller as an instance of both
  ``zactor.ActorError`` and the original class, so ``except Exception`` (or a
  narrower ``except``) works as in the seed. Its ``str()`` ends with the
  remote traceback, so this script prints ``e.args[0]``, the seed's message.
* Futures are not picklable in Dask (seed Example 7-3) nor in zactor, where
  pickling one raises a ``TypeError`` that says to pass the value or the
  handle instead; the handle itself is picklable.

Run it: ``python examples/bank_account.py``.
"""

from __future__ import annotations

import zactor


@zactor.remote
class BankAccount:
    """A bank account actor (similar to counter but with + and -)"""

    # 42 is a good start
    def __init__(self, balance=42.0):
        self._balance = balance

    def deposit(self, amount):
        if amount < 0:
            raise Exception("Cannot deposit negative amount")
        self._balance += amount
        return self._balance

    def withdrawal(self, amount):
        if amount > self._balance:
            raise Exception("Please deposit more money first.")
        self._balance -= amount
        return self._balance

    def balance(self):
        return self._balance


def main() -> dict:
    zactor.init(num_workers=2)
    try:
        # Create a BankAccount on a worker (Dask: client.submit(BankAccount, actor=True)).
        account = BankAccount.remote()

        # Non-blocking
        balance_future = account.balance.remote()
        # Blocks
        balance = balance_future.result()
        print(f"balance: {balance}")  # 42.0

        error = None
        try:
            f = account.withdrawal.remote(100)
            f.result()  # throws an exception
        except Exception as e:
            error = e.args[0]
            print(error)  # Please deposit more money first.

        # The actor keeps running after a method raised.
        after_deposit = account.deposit.remote(100).result()
        print(f"after deposit(100): {after_deposit}")  # 142.0
        after_withdrawal = account.withdrawal.remote(100).result()
        print(f"after withdrawal(100): {after_withdrawal}")  # 42.0

        negative = None
        try:
            zactor.get(account.deposit.remote(-1))
        except Exception as e:
            negative = e.args[0]
            print(negative)  # Cannot deposit negative amount

        final = zactor.get(account.balance.remote())
        print(f"final balance: {final}")  # 42.0
        return {
            "balance": balance,
            "error": error,
            "after_deposit": after_deposit,
            "after_withdrawal": after_withdrawal,
            "negative": negative,
            "final": final,
        }
    finally:
        zactor.shutdown()


if __name__ == "__main__":
    main()
