"""Immutable records: dataclasses whose comparison, hash, repr and immutability are shared functions.

Why not `@dataclass(frozen=True)` alone: Python 3.11's dataclasses compile
every method they generate from source, with an `exec` each: __init__,
__repr__, __eq__, __hash__, __setattr__ and __delattr__, ~0.8 ms a class
here. The daemon imports 54 such classes before it is ready, ~50 ms of its
~290 ms start-up CPU (bench.router_class), ten to twenty times that on a
router's CPU. A record lets dataclasses generate __init__ alone (its
signature, defaults and __post_init__ are dataclasses' own) and takes the
rest from closures built here, which need no compiling: ~0.2 ms a class.

What stays as `@dataclass(frozen=True)` promises (tests/unit/core/test_record.py
compares the two): fields are set once, by __init__; assigning or deleting a
field afterwards raises dataclasses.FrozenInstanceError; equality is
field-wise between instances of the same class; equal records hash alike;
repr shows the fields. dataclasses.replace, fields and asdict work as on
any dataclass. What a record would do differently it refuses when the class
is made: fields with init=False or hash=..., a dataclass base. (A dataclass
must not subclass a record either: dataclasses take it for a mutable one.)
"""

from __future__ import annotations

import dataclasses
import operator
import reprlib
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, dataclasses.Field))
def record(cls: type[T], /) -> type[T]:
    """`@record`: an immutable dataclass (see the module's docstring).

    No slots: a slotted record would have to ask each slot whether it is set
    (an exception per field), which costs more per instance than a frozen
    dataclass; the few slotted classes stay `@dataclass(frozen=True, slots=True)`.
    """
    if any(dataclasses.is_dataclass(base) for base in cls.__mro__[1:]):
        raise TypeError(f"record {cls.__qualname__}: a dataclass base is not supported")
    built = dataclasses.dataclass(cls, repr=False, eq=False)
    fields = dataclasses.fields(built)  # type: ignore[arg-type]
    for f in fields:
        if not f.init or f.hash is not None:
            raise TypeError(f"record {cls.__qualname__}: field {f.name} with init=False or hash= is not supported")
    names = frozenset(f.name for f in fields)
    compared = tuple(f.name for f in fields if f.compare)
    shown = tuple(f.name for f in fields if f.repr)
    # Always a tuple, as the dataclass compares and hashes (a lone NaN still equals itself).
    key: Callable[[Any], Any]
    if len(compared) > 1:
        key = operator.attrgetter(*compared)
    elif compared:
        single = operator.attrgetter(compared[0])
        key = lambda self: (single(self),)  # noqa: E731 - one closure per class
    else:
        key = lambda self: ()  # noqa: E731

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return key(self) == key(other)
        return NotImplemented

    def __hash__(self: Any) -> int:
        return hash(key(self))

    @reprlib.recursive_repr()
    def __repr__(self: Any) -> str:
        shown_fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{self.__class__.__qualname__}({shown_fields})"

    def __setattr__(self: Any, name: str, value: Any) -> None:
        # __init__ sets each field once (into the instance's dict, where a field lives); after
        # that a field is as frozen as a frozen dataclass's.
        attributes = self.__dict__
        if name in names and name not in attributes:
            attributes[name] = value
        elif type(self) is built or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
        else:
            object.__setattr__(self, name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is built or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
        object.__delattr__(self, name)

    own = dict(built.__dict__)  # the class's own methods, before any of these is set
    for method in (__eq__, __repr__, __setattr__, __delattr__):
        if method.__name__ not in own:  # a class's own method wins, as with dataclasses
            method.__qualname__ = f"{built.__qualname__}.{method.__name__}"
            setattr(built, method.__name__, method)
    # No __hash__ of its own, or the None `class` sets beside an __eq__ of its own; a None set alone stays.
    if "__hash__" not in own or (own["__hash__"] is None and "__eq__" in own):
        __hash__.__qualname__ = f"{built.__qualname__}.__hash__"
        built.__hash__ = __hash__  # type: ignore[method-assign]
    return built
