"""The Protocols checked at run time as mypy checks them statically: names, parameters and annotations, not
only the names that isinstance on a runtime_checkable Protocol looks at."""

from __future__ import annotations

import inspect
import typing
from typing import Any


def protocol_drift(implementation: object, protocol: type) -> list[str]:
    """Where an implementation differs from its Protocol: a missing member, a property that is not one,
    or a method whose parameters (names, kinds, defaults) or resolved annotations differ. isinstance on
    a runtime_checkable Protocol checks only that the names exist."""
    drift = []
    for name, expected in vars(protocol).items():
        if name.startswith("_"):
            continue
        actual = getattr(type(implementation), name, None)
        if isinstance(expected, property):  # read-only: a property or an instance attribute, of its type
            kind = typing.get_type_hints(expected.fget)["return"]
            value = getattr(implementation, name, None) if actual is None or isinstance(actual, property) else actual
            if not isinstance(value, typing.get_origin(kind) or kind) or callable(value):
                drift.append(f"{name}: {value!r} where the Protocol has a property of {kind}")
        elif actual is None:
            drift.append(f"{name}: missing")
        elif callable(expected):
            want, got = inspect.signature(expected), inspect.signature(actual)
            shape = [(p.name, p.kind, p.default) for p in want.parameters.values()]
            if shape != [(p.name, p.kind, p.default) for p in got.parameters.values()]:
                drift.append(f"{name}: parameters {got} instead of {want}")
            elif not _same_hints(typing.get_type_hints(expected), typing.get_type_hints(actual)):
                drift.append(f"{name}: annotations {typing.get_type_hints(actual)} instead of those of {protocol}")
    return drift


def _same_hints(wanted: dict[str, Any], got: dict[str, Any]) -> bool:
    """Parameters annotated alike; the return alike too, or (covariant) a class where the Protocol returns
    another Protocol, whose own members the caller checks on the returned object."""
    returns, returned = wanted.pop("return", None), got.pop("return", None)
    covariant = getattr(returns, "_is_protocol", False) and isinstance(returned, type)
    return wanted == got and (returns == returned or covariant)
