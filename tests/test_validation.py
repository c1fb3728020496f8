"""Actor classes as a Ray user expects them: class attributes, checks at creation."""

from __future__ import annotations

import pytest

import zactor

pytestmark = pytest.mark.timeout(60)


@zactor.remote
class Shop:
    """A class with a constant, a static and a class method, used inside methods."""

    CURRENCY = "EUR"

    def __init__(self, owner, stock=0):
        self.owner = owner
        self.stock = stock

    @staticmethod
    def price(n):
        return 2 * n

    @classmethod
    def label(cls):
        return f"{cls.__name__} in {Shop.CURRENCY}"

    def quote(self, n):
        return f"{Shop.price(n)} {Shop.CURRENCY}"

    def describe(self):
        return Shop.label()


def test_the_actor_class_shows_the_user_class_attributes():
    assert Shop.CURRENCY == "EUR"
    assert Shop.price(3) == 6
    assert Shop.label() == "Shop in EUR"
    with pytest.raises(AttributeError, match="actor class Shop has no attribute 'nothing'"):
        Shop.nothing  # noqa: B018


def test_class_attributes_and_static_methods_work_inside_methods(cluster):
    shop = Shop.remote("ann")
    assert zactor.get(shop.quote.remote(4)) == "8 EUR"
    assert zactor.get(shop.describe.remote()) == "Shop in EUR"


@pytest.mark.parametrize(
    "args, kwargs, problem",
    [
        ((), {}, "missing a required argument: 'owner'"),
        (("ann", 1, 2), {}, "too many positional arguments"),
        (("ann",), {"colour": "red"}, "unexpected keyword argument 'colour'"),
    ],
)
def test_wrong_constructor_arguments_fail_at_remote(cluster, args, kwargs, problem):
    with pytest.raises(TypeError, match=problem) as info:
        Shop.remote(*args, **kwargs)
    assert "Shop(owner, stock=0)" in str(info.value)  # says what it takes


@pytest.mark.parametrize(
    "option, value, error, text",
    [
        ("name", "", ValueError, "name must not be empty"),
        ("name", 5, TypeError, "name must be a str"),
        ("namespace", 123, TypeError, "namespace must be a str"),
        ("namespace", "", ValueError, "namespace must not be empty"),
    ],
)
def test_bad_names_and_namespaces_fail_at_once(option, value, error, text):
    with pytest.raises(error, match=text):
        Shop.options(**{option: value})
