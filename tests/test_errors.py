"""Errors as DESIGN.md says: remote exceptions keep their class and carry the remote
traceback, unknown methods fail on the caller's side, constructors that raise, futures
that cannot travel, killed actors, unserializable return values.
"""

from __future__ import annotations

import threading

import pytest

import zactor
from zactor.caller.handle import worker_service_handle

pytestmark = pytest.mark.timeout(60)


class Overdrawn(Exception):
    """A custom exception whose ``__init__`` does not take ``args`` as given."""

    def __init__(self, account, amount):
        super().__init__(f"account {account} overdrawn by {amount}")
        self.account = account
        self.amount = amount


class WithLock(Exception):
    """An exception carrying an attribute that cannot be pickled."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


@zactor.remote
class Faulty:
    def __init__(self):
        self.calls = 0

    def ok(self):
        self.calls += 1
        return self.calls

    def fail_value(self, message):
        raise ValueError(message)

    def fail_key(self, key):
        return {}[key]

    def fail_custom(self, account, amount):
        raise Overdrawn(account, amount)

    def fail_file(self, path):
        with open(path):
            pass

    def fail_with_lock(self):
        raise WithLock("carries a lock")

    def fail_zero(self):
        return 1 / 0

    def fail_in_tell(self):
        raise RuntimeError("a tell that fails")

    def return_lock(self):
        return threading.Lock()

    def return_future(self, other):
        return other.ok.remote()


@zactor.remote
class BadInit:
    def __init__(self, value):
        if value < 0:
            raise ValueError(f"value must be >= 0, got {value}")
        self.value = value

    def get(self):
        return self.value


@zactor.remote
class BadInitCustom:
    def __init__(self):
        raise Overdrawn("init", 7)

    def get(self):
        return "never"


class PlainAccount:
    def __init__(self, balance: float, minimal_balance: float):
        self.minimal = minimal_balance
        if balance < minimal_balance:
            raise Exception("Starting balance is less than minimal balance")
        self.balance = balance

    def balance(self) -> float:
        return self.balance


Account = zactor.remote(PlainAccount)


@zactor.remote
class Target:
    def __init__(self):
        self.got = []

    def take(self, *args, **kwargs):
        self.got.append((args, kwargs))
        return len(self.got)

    def ok(self):
        return "ok"


# -- remote exceptions --------------------------------------------------------------------------


def test_remote_value_error_is_actor_error_and_value_error(cluster):
    h = Faulty.remote()
    f = h.fail_value.remote("bad input 42")
    with pytest.raises(ValueError) as info:
        f.result(timeout=30)
    e = info.value
    assert isinstance(e, zactor.ActorError)
    assert isinstance(e, zactor.ZactorError)
    assert e.args == ("bad input 42",)
    text = str(e)
    assert "bad input 42" in text
    assert "Traceback" in text and "fail_value" in text  # the remote traceback
    assert "raise ValueError(message)" in text
    assert "fail_value" in e.remote_traceback
    # The actor keeps working.
    assert h.ok.remote().result(timeout=30) == 1


def test_except_actor_error_also_catches(cluster):
    h = Faulty.remote()
    with pytest.raises(zactor.ActorError):
        zactor.get(h.fail_value.remote("x"), timeout=30)


def test_remote_key_error(cluster):
    h = Faulty.remote()
    with pytest.raises(KeyError) as info:
        zactor.get(h.fail_key.remote("missing-key"), timeout=30)
    assert isinstance(info.value, zactor.ActorError)
    assert info.value.args == ("missing-key",)
    assert "missing-key" in str(info.value) and "fail_key" in str(info.value)
    assert h.ok.remote().result(timeout=30) == 1


def test_remote_custom_exception_with_custom_init(cluster):
    h = Faulty.remote()
    with pytest.raises(Overdrawn) as info:
        h.fail_custom.remote("acct-1", 5).result(timeout=30)
    e = info.value
    assert isinstance(e, zactor.ActorError)
    assert e.account == "acct-1" and e.amount == 5
    assert "account acct-1 overdrawn by 5" in str(e)
    assert "fail_custom" in str(e)
    assert h.ok.remote().result(timeout=30) == 1


def test_remote_os_error_keeps_errno(cluster, tmp_path):
    h = Faulty.remote()
    with pytest.raises(FileNotFoundError) as info:
        h.fail_file.remote(str(tmp_path / "nope.txt")).result(timeout=30)
    assert isinstance(info.value, zactor.ActorError)
    assert info.value.errno == 2
    assert "nope.txt" in str(info.value)


def test_remote_exception_with_unpicklable_attribute(cluster):
    h = Faulty.remote()
    with pytest.raises(WithLock) as info:
        h.fail_with_lock.remote().result(timeout=30)
    assert isinstance(info.value, zactor.ActorError)
    assert "carries a lock" in str(info.value)


def test_remote_zero_division(cluster):
    h = Faulty.remote()
    e = h.fail_zero.remote().exception(timeout=30)
    assert isinstance(e, ZeroDivisionError) and isinstance(e, zactor.ActorError)
    assert "1 / 0" in str(e)


def test_many_errors_in_a_row_and_the_actor_keeps_working(cluster):
    h = Faulty.remote()
    futures = []
    for i in range(50):
        futures.append(h.fail_value.remote(f"error {i}"))
        futures.append(h.ok.remote())
    for i in range(50):
        with pytest.raises(ValueError, match=f"error {i}"):
            futures[2 * i].result(timeout=30)
        assert futures[2 * i + 1].result(timeout=30) == i + 1


def test_get_raises_the_first_error_in_list_order(cluster):
    h = Faulty.remote()
    futures = [h.ok.remote(), h.fail_key.remote("first"), h.fail_value.remote("second")]
    with pytest.raises(KeyError, match="first"):
        zactor.get(futures, timeout=30)


def test_a_failing_tell_is_counted_and_the_actor_keeps_working(cluster):
    h = Faulty.remote()
    h.fail_in_tell.tell()
    h.fail_in_tell.tell()
    assert h.ok.remote().result(timeout=30) == 1  # runs after both tells
    stats = worker_service_handle(h._address).stats.remote().result(timeout=30)
    (mine,) = [a for a in stats["actors"] if a["actor_id"] == h._actor_id]
    assert mine["tell_errors"] == 2
    assert mine["errors"] >= 2


# -- unknown methods ------------------------------------------------------------------------------


def test_unknown_method_raises_attribute_error_at_once_on_the_caller_side(cluster):
    h = Faulty.remote()
    with pytest.raises(AttributeError) as info:
        h.no_such_method.remote()
    text = str(info.value)
    assert "Faulty" in text and "no_such_method" in text
    with pytest.raises(AttributeError, match="no_such_method"):
        h.no_such_method  # noqa: B018 - the attribute access itself fails
    assert not hasattr(h, "__no_such_dunder__")
    assert h.ok.remote().result(timeout=30) == 1


def test_unknown_method_on_a_handle_from_get_actor(cluster, unique_name):
    name = unique_name("faulty")
    Faulty.options(name=name).remote()
    h = zactor.get_actor(name)
    with pytest.raises(AttributeError, match=r"Faulty[\s\S]*nope|nope[\s\S]*Faulty"):
        h.nope.remote()


# -- constructors that raise ------------------------------------------------------------------


def test_constructor_that_raises_makes_the_first_call_raise_the_original_type(cluster):
    h = BadInit.remote(-1)  # returns at once
    with pytest.raises(ValueError) as info:
        h.get.remote().result(timeout=30)
    assert isinstance(info.value, zactor.ActorError)
    assert "value must be >= 0, got -1" in str(info.value)
    assert "__init__" in str(info.value)
    with pytest.raises(ValueError):  # and every later call too
        h.get.remote().result(timeout=30)
    assert BadInit.remote(3).get.remote().result(timeout=30) == 3


def test_constructor_raising_a_custom_exception(cluster):
    h = BadInitCustom.remote()
    with pytest.raises(Overdrawn) as info:
        h.get.remote().result(timeout=30)
    assert isinstance(info.value, zactor.ActorError)
    assert info.value.amount == 7


def test_seed_account_constructor_raising_plain_exception(cluster):
    h = Account.remote(1.0, 10.0)
    with pytest.raises(Exception, match="Starting balance is less than minimal balance") as info:
        h.balance.remote().result(timeout=30)
    assert isinstance(info.value, zactor.ActorError)


# -- futures cannot travel ---------------------------------------------------------------------


def test_passing_a_future_as_an_argument_raises_type_error(cluster):
    source = Target.remote()
    target = Target.remote()
    f = source.ok.remote()
    for call in (
        lambda: target.take.remote(f),
        lambda: target.take.remote(k=f),
        lambda: target.take.remote([1, {"nested": f}]),
        lambda: target.take.tell(f),
    ):
        with pytest.raises(TypeError) as info:
            call()
        text = str(info.value)
        assert "value" in text and "handle" in text
    assert f.result(timeout=30) == "ok"
    # Nothing was sent and nothing leaked: the value works, and no call is in flight.
    assert target.take.remote(f.result()).result(timeout=30) == 1
    assert target._gate.inflight == 0


def test_returning_a_future_from_a_method_raises_type_error_on_the_caller(cluster):
    h = Faulty.remote()
    other = Faulty.remote()
    with pytest.raises(TypeError) as info:
        h.return_future.remote(other).result(timeout=30)
    assert isinstance(info.value, zactor.ActorError)
    assert h.ok.remote().result(timeout=30) == 1


def test_unserializable_return_value_raises_type_error_and_actor_keeps_working(cluster):
    h = Faulty.remote()
    with pytest.raises(TypeError) as info:
        h.return_lock.remote().result(timeout=30)
    assert isinstance(info.value, zactor.ActorError)
    assert "could not be sent back" in str(info.value)
    assert h.ok.remote().result(timeout=30) == 1


def test_get_of_something_that_is_not_a_future(cluster):
    with pytest.raises(TypeError, match="Future"):
        zactor.get([1, 2])
    with pytest.raises(TypeError, match="Future"):
        zactor.wait([object()])


# -- dead actors ---------------------------------------------------------------------------------


def test_calls_to_a_killed_actor_raise_actor_died_error_naming_it(cluster, unique_name):
    name = unique_name("victim")
    h = Faulty.options(name=name).remote()
    assert h.ok.remote().result(timeout=30) == 1
    zactor.kill(h)
    e = h.ok.remote().exception(timeout=30)
    assert isinstance(e, zactor.ActorDiedError)
    assert isinstance(e, zactor.ZactorError)
    assert not isinstance(e, zactor.ActorError)
    assert "Faulty" in str(e) and str(h._actor_id) in str(e)
    assert "kill" in str(e)


def test_actor_died_error_says_whether_a_restart_is_under_way(cluster):
    h = Faulty.remote()
    h.ok.remote().result(timeout=30)
    zactor.kill(h)
    e = h.ok.remote().exception(timeout=30)
    assert isinstance(e, zactor.ActorDiedError)
    assert "restart" in str(e).lower()


def test_get_timeout_error_is_a_timeout_error():
    assert issubclass(zactor.GetTimeoutError, TimeoutError)
    assert issubclass(zactor.GetTimeoutError, zactor.ZactorError)
    assert issubclass(zactor.ActorDiedError, zactor.ZactorError)


def test_errors_of_many_callers_do_not_mix(cluster):
    """Several threads calling one failing actor each get their own error."""
    h = Faulty.remote()
    results = {}

    def work(i):
        out = []
        for j in range(20):
            e = h.fail_value.remote(f"t{i}-{j}").exception(timeout=30)
            out.append(str(e.args[0]))
        results[i] = out

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == {i: [f"t{i}-{j}" for j in range(20)] for i in range(4)}
