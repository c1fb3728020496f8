"""Seed 000 (Dask, chapter 7 "使用 Dask Actors 添加可变状态"), Examples 7-1 and 7-2,
through ``zactor.compat.dask``. (Seed 001 is the same chapter in English, its code
only linked.)

Changed from the seed: its import line, ``from dask.distributed import Client``
(the chapter's earlier setup) → ``from zactor.compat.dask import Client``.
Around the seed's code, marked "scaffolding": creating the client, which the
chapter does earlier, and printing what the seed only computes.

``print(e)`` prints zactor's text of a remote exception: the seed's message,
then the actor's traceback (Dask prints the message alone).

Run it: ``python examples/compat/dask_bank_account.py``.
"""

from zactor.compat.dask import Client  # was: from dask.distributed import Client

client = Client()  # scaffolding: the chapter's client

# -- seed 000, Example 7-1 ("制作一个银行账户 actor") ---------------------------------------


class BankAccount:
    """ A bank account actor (similar to counter but with + and -)"""

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

# Create a BankAccount on a worker
account_future = client.submit(BankAccount, actor=True)
account = account_future.result()

# -- seed 000, Example 7-2 ("使用银行账户 actor") -------------------------------------------

# Non-blocking
balance_future = account.balance()
# Blocks
balance = balance_future.result()
try:
    f = account.withdrawal(100)
    f.result() # throws an exception
except Exception as e:
    print(e)

# -- scaffolding: what the seed computed ------------------------------------------------------
print(f"balance: {balance}")
print(f"after deposit(100): {account.deposit(100).result()}")
print(f"after withdrawal(100): {account.withdrawal(100).result()}")
client.close()
