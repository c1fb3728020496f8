"""Seed 002 (Ray, chapter 4), Examples 4-7 to 4-10, through ``zactor.compat.ray``:
an ``Account`` that persists its state by hand, first to files directly (4-7),
then through a pluggable persistence class (4-8 to 4-10).

Changed from the seed: its import line (``import ray``, earlier in the
chapter) → ``import zactor.compat.ray as ray``; ``ray.cloudpickle`` is there
as in Ray. Scaffolding, marked: ``ray.init()``, ``from os.path import
exists`` (the seed leaves its imports out), a temporary directory for the
files (the seed's default is the working directory), and using each account:
change it, end the actor, create it again with the same key, and read the
restored balance. (zactor can do this without code in the class:
``checkpoint=zactor.FileStore(dir)``, see examples/durable_account.py.)

Run it: ``python examples/compat/ray_persistence.py``.
"""

import shutil  # scaffolding
import tempfile  # scaffolding
from os.path import exists  # scaffolding: the seed's code uses exists()

import zactor.compat.ray as ray  # was: import ray

ray.init()  # scaffolding: the chapter's setup
basedir = tempfile.mkdtemp()  # scaffolding

# -- seed 002, Example 4-7 -------------------------------------------------------------------

@ray.remote
class Account:
    def __init__(self, balance: float, minimal_balance: float, account_key: str,
        basedir: str = '.'):
        self.basedir = basedir
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
        if exists(self.basedir + '/' + self.key):
            with open(self.basedir + '/' + self.key, "rb") as f:
                bytes = f.read()
            state = ray.cloudpickle.loads(bytes)
            self.balance = state['balance']
            self.minimal = state['minimal']
            return True
        else:
            return False

    def storestate(self):
        bytes = ray.cloudpickle.dumps(
            {'balance' : self.balance, 'minimal' : self.minimal})
        with open(self.basedir + '/' + self.key, "wb") as f:
            f.write(bytes)

# -- scaffolding: use 4-7's account, end it, and restore it ------------------------------------
account = Account.remote(100., 20., "acct-4-7", basedir)
ray.get(account.deposit.remote(50.))
ray.kill(account)
account = Account.remote(0., 0., "acct-4-7", basedir)  # restored: the arguments are ignored
print(f"4-7 restored balance {ray.get(account.balance.remote())}")

# -- seed 002, Example 4-8 -------------------------------------------------------------------

class BasePersitence:
    def exists(self, key:str) -> bool:
        pass
    def save(self, key: str, data: dict):
        pass
    def restore(self, key:str) -> dict:
        pass

# -- seed 002, Example 4-9 -------------------------------------------------------------------

class FilePersistence(BasePersitence):
    def __init__(self, basedir: str = '.'):
        self.basedir = basedir

    def exists(self, key:str) -> bool:
        return exists(self.basedir + '/' + key)

    def save(self, key: str, data: dict):
        bytes = ray.cloudpickle.dumps(data)
        with open(self.basedir + '/' + key, "wb") as f:
            f.write(bytes)

    def restore(self, key:str) -> dict:
        if not self.exists(key):
            return None
        else:
            with open(self.basedir + '/' + key, "rb") as f:
                bytes = f.read()
            return ray.cloudpickle.loads(bytes)

# -- seed 002, Example 4-10 ------------------------------------------------------------------

@ray.remote
class Account:
    def __init__(self, balance: float, minimal_balance: float, account_key: str,
                 persistence: BasePersitence):
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
        state = self.persistence.restore(self.key)
        if state != None:
            self.balance = state['balance']
            self.minimal = state['minimal']
            return True
        else:
            return False

    def storestate(self):
        self.persistence.save(self.key,
                    {'balance' : self.balance, 'minimal' : self.minimal})

# -- scaffolding: use 4-10's account, end it, and restore it -----------------------------------
account = Account.remote(100., 20., "acct-4-10", FilePersistence(basedir))
ray.get(account.withdraw.remote(30.))
ray.kill(account)
account = Account.remote(0., 0., "acct-4-10", FilePersistence(basedir))
print(f"4-10 restored balance {ray.get(account.balance.remote())}")
ray.shutdown()
shutil.rmtree(basedir)
