"""Seed 002 (Ray, chapter 4 "远程演员"), Examples 4-1 to 4-6, through
``zactor.compat.ray``: the ``Account`` actor, created with and without the
decorator, called, named, found by name, and detached.

Changed from the seed: its import line (``import ray``, which the chapter
does earlier) → ``import zactor.compat.ray as ray``. The seed's
``print(f"Oops! \\{e} occurred.")`` keeps its ``\\{``, a rendering artefact
of the translation (the book has ``{e}``): Python keeps the backslash, so
the line prints ``Oops! \\`` before the error. Scaffolding, marked:
``ray.init()``; Example 4-3's plain class (the seed applies ``ray.remote`` to
4-1's class without its decorator); printing what the seed only computes;
and killing 4-5's actor before 4-6 names another one ``'Account'``, which
Ray refuses too while the first lives.

Run it: ``python examples/compat/ray_account.py``.
"""

import zactor.compat.ray as ray  # was: import ray

ray.init()  # scaffolding: the chapter's setup

# -- seed 002, Example 4-1 -------------------------------------------------------------------

@ray.remote
class Account:
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

# -- seed 002, Example 4-2 -------------------------------------------------------------------

account_actor = Account.remote(balance = 100.,minimal_balance=20.)

# -- seed 002, Example 4-4 -------------------------------------------------------------------

print(f"Current balance {ray.get(account_actor.balance.remote())}")
print(f"New balance {ray.get(account_actor.withdraw.remote(40.))}")
print(f"New balance {ray.get(account_actor.deposit.remote(30.))}")

try:
  result = ray.get(account_actor.withdraw.remote(-40.))
except Exception as e:
  print(f"Oops! \{e} occurred.")

# -- seed 002, Example 4-3 -------------------------------------------------------------------

class Account:  # scaffolding: Example 4-1's class without its decorator
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

Account = ray.remote(Account)
account_actor = Account.remote(balance = 100.,minimal_balance=20.)

print(f"4-3 balance {ray.get(account_actor.balance.remote())}")  # scaffolding

# -- seed 002, Example 4-5 -------------------------------------------------------------------

account_actor = Account.options(name='Account')\
    .remote(balance = 100.,minimal_balance=20.)

ray.get_actor('Account')

found = ray.get_actor('Account')  # scaffolding
print(f"named actor found: {found == account_actor}, "
      f"balance {ray.get(found.deposit.remote(5.))}")
ray.kill(account_actor)  # scaffolding: frees the name 'Account' for 4-6

# -- seed 002, Example 4-6 -------------------------------------------------------------------

account_actor = Account.options(name='Account', lifetime='detached')\
    .remote(balance = 100.,minimal_balance=20.)

# -- scaffolding: the detached actor is found by name; a refused constructor ----------------------
print(f"detached actor balance {ray.get(ray.get_actor('Account').balance.remote())}")
try:
    ray.get(Account.remote(balance=10., minimal_balance=20.).balance.remote())
except Exception as e:
    print(f"refused: {e.args[0]}")
ray.shutdown()
