"""Seed 002 (Ray, chapter 4), Example 4-11, through ``zactor.compat.ray``: the
``Account`` persisting through an ``ActorPool`` of three ``FilePersistence``
actors, which it receives as a constructor argument.

Changed from the seed: its import lines (``import ray`` and ``from ray.util
import ActorPool``, earlier in the chapter). Scaffolding, marked:
``ray.init()`` in a temporary working directory (the pool's actors use the
seed's default ``basedir='.'``), Examples 4-8 and 4-9's classes that 4-11
builds on, made remote as the seed's ``FilePersistence.remote()`` needs, and
using the account.

Run as written, the seed's ``storestate`` passes ``(key, state)`` as one
argument to ``save(key, data)``, so every save fails in its pool actor with a
``TypeError`` that nobody collects, and nothing is written: the same happens
on Ray. The account itself works. (examples/ray_account_pool.py is the
version with that fixed.)

Run it: ``python examples/compat/ray_account_pool.py``.
"""

import os  # scaffolding
import shutil  # scaffolding
import tempfile  # scaffolding
from os.path import exists  # scaffolding: the seed's code uses exists()

import zactor.compat.ray as ray  # was: import ray
from zactor.compat.ray.util import ActorPool  # was: from ray.util import ActorPool

workdir = tempfile.mkdtemp()  # scaffolding: the pool's actors write to '.'
os.chdir(workdir)
ray.init()  # scaffolding: the chapter's setup

# -- scaffolding: seed 002's Examples 4-8 and 4-9, which 4-11 uses --------------------------

class BasePersitence:
    def exists(self, key:str) -> bool:
        pass
    def save(self, key: str, data: dict):
        pass
    def restore(self, key:str) -> dict:
        pass

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

FilePersistence = ray.remote(FilePersistence)  # scaffolding: 4-11 calls FilePersistence.remote()

# -- seed 002, Example 4-11 ------------------------------------------------------------------

pool = ActorPool([
    FilePersistence.remote(), FilePersistence.remote(), FilePersistence.remote()])

@ray.remote
class Account:
    def __init__(self, balance: float, minimal_balance: float,
            account_key: str, persistence: ActorPool):
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
        while(self.persistence.has_next()):
            self.persistence.get_next()
        self.persistence.submit(lambda a, v: a.restore.remote(v), self.key)
        state = self.persistence.get_next()
        if state != None:
            print(f'Restoring state {state}')
            self.balance = state['balance']
            self.minimal = state['minimal']
            return True
        else:
            return False

    def storestate(self):
        self.persistence.submit(
            lambda a, v: a.save.remote(v),
            (self.key,
             {'balance' : self.balance, 'minimal' : self.minimal}))

account_actor = Account.options(name='Account').remote(
    balance=100.,minimal_balance=20.,
    account_key='1234567', persistence=pool)

# -- scaffolding: use the account; then one of its saves, through the driver's pool ------------
print(f"balance {ray.get(account_actor.balance.remote())}")
print(f"after deposit(50) {ray.get(account_actor.deposit.remote(50.))}")
print(f"after withdraw(30) {ray.get(account_actor.withdraw.remote(30.))}")
pool.submit(lambda a, v: a.save.remote(v), ('1234567', {'balance': 120., 'minimal': 20.}))
try:
    pool.get_next()
except TypeError as e:
    print(f"the seed's save fails: {e.args[0]}")
ray.shutdown()
os.chdir(os.path.dirname(workdir))
shutil.rmtree(workdir)
