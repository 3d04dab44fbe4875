"""Records keep what a frozen dataclass promises: each case is checked against @dataclass(frozen=True)."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loxgw.core.record import record


@record
class Grant:
    device: bytes
    ports: tuple[int, ...] = ()
    names: frozenset[str] = field(default_factory=frozenset)
    seen: float = field(default=0.0, compare=False)
    secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class FrozenGrant:
    device: bytes
    ports: tuple[int, ...] = ()
    names: frozenset[str] = field(default_factory=frozenset)
    seen: float = field(default=0.0, compare=False)
    secret: str = field(default="", repr=False)


@record
class Empty:
    pass


@record
class Derived:
    """A __post_init__ that stores a derived value, as frozen dataclasses do it."""

    name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "_folded", self.name.lower())


@record
class OwnMethods:
    value: int

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OwnMethods) and abs(self.value - other.value) < 2

    def __hash__(self) -> int:
        return 7

    def __repr__(self) -> str:
        return "own"


def pair(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    return Grant(*args, **kwargs), FrozenGrant(*args, **kwargs)


values = st.tuples(st.binary(max_size=4), st.lists(st.integers(0, 65535), max_size=3).map(tuple),
                   st.frozensets(st.sampled_from("abc")), st.floats(0, 10), st.text(max_size=3))


@given(values, values)
def test_equality_and_hash_follow_the_compared_fields_like_a_frozen_dataclass(a: Any, b: Any) -> None:
    (ra, fa), (rb, fb) = pair(*a), pair(*b)
    assert (ra == rb) == (fa == fb)
    assert (ra != rb) == (fa != fb)
    if ra == rb:
        assert hash(ra) == hash(rb)
    assert repr(ra) == repr(fa).replace("FrozenGrant", "Grant")


def test_records_of_different_classes_are_not_equal() -> None:
    record_, frozen = pair(b"\x01")
    assert record_ != frozen and frozen != record_
    assert Grant(b"\x01") != (b"\x01", (), frozenset(), 0.0, "")
    assert Empty() == Empty() and hash(Empty()) == hash(Empty()) and repr(Empty()) == "Empty()"


def test_fields_cannot_be_assigned_or_deleted_after_init() -> None:
    for grant in pair(b"\x01", (80,)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            grant.ports = (443,)
        with pytest.raises(dataclasses.FrozenInstanceError):
            del grant.ports
        with pytest.raises(dataclasses.FrozenInstanceError):
            grant.other = 1  # not a field: refused as by a frozen dataclass
        assert grant.ports == (80,)


def test_replace_fields_asdict_copy_and_pickle_work_as_on_a_frozen_dataclass() -> None:
    grant = Grant(b"\x01", (80,), frozenset({"a"}), 1.5, "s")
    assert dataclasses.is_dataclass(grant)
    assert [f.name for f in dataclasses.fields(grant)] == ["device", "ports", "names", "seen", "secret"]
    assert dataclasses.replace(grant, ports=(443,)) == Grant(b"\x01", (443,), frozenset({"a"}), 9.0, "s")
    assert dataclasses.asdict(grant) == dataclasses.asdict(FrozenGrant(b"\x01", (80,), frozenset({"a"}), 1.5, "s"))
    for clone in (copy.copy(grant), copy.deepcopy(grant), pickle.loads(pickle.dumps(grant))):
        assert clone == grant and clone.secret == "s" and clone.seen == 1.5
        with pytest.raises(dataclasses.FrozenInstanceError):
            clone.device = b""
    assert Grant(b"\x01").names == frozenset()  # the default factory ran


def test_post_init_may_store_derived_values_and_a_class_keeps_its_own_methods() -> None:
    derived = Derived("ABC")
    assert derived._folded == "abc"  # type: ignore[attr-defined]
    assert derived == Derived("ABC") and repr(derived) == "Derived(name='ABC')"
    assert OwnMethods(1) == OwnMethods(2) and hash(OwnMethods(1)) == 7 and repr(OwnMethods(5)) == "own"


def test_a_record_that_contains_itself_repr_does_not_recurse() -> None:
    @record
    class Box:
        items: list[Any]

    box = Box([])
    box.items.append(box)
    assert repr(box).endswith("Box(items=[...])")


def test_a_one_field_record_compares_and_hashes_as_a_one_field_dataclass() -> None:
    @record
    class Port:
        value: float

    @dataclass(frozen=True)
    class FrozenPort:
        value: float

    nan = float("nan")
    assert (Port(nan) == Port(nan)) == (FrozenPort(nan) == FrozenPort(nan))  # the same NaN object: equal
    assert hash(Port(7.0)) == hash(FrozenPort(7.0)) and Port(7.0) != Port(8.0)


def test_what_a_record_would_do_differently_is_refused_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match="init=False"):
        @record
        class Later:
            a: int
            b: int = field(init=False, default=0)
    with pytest.raises(TypeError, match="hash="):
        @record
        class Partly:
            a: int
            b: list[int] = field(hash=False, default_factory=list)
    with pytest.raises(TypeError, match="dataclass base"):
        @record
        class Child(FrozenGrant):
            extra: int = 0


def test_a_record_that_says_it_is_unhashable_stays_so() -> None:
    @record
    class Unhashable:
        a: int
        __hash__ = None  # type: ignore[assignment]

    assert Unhashable(1) == Unhashable(1)
    with pytest.raises(TypeError):
        hash(Unhashable(1))
