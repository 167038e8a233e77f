"""Typed config sections: a frozen dataclass filled from a (Hydra) dict, with one-line errors."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from biolab.errors import ConfigError

T = TypeVar("T")

_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
}


def from_dict(cls: type[T], d: dict, section: str) -> T:
    """``cls(**d)`` after checking keys and scalar types; then ``validate()`` if ``cls`` has it.

    Errors name ``section.key`` and list the valid keys, e.g. ``unknown data key(s) ['mutli']``.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {section} key(s) {unknown}; valid keys: {', '.join(fields)}")
    for k, v in d.items():
        want = str(fields[k].type)  # e.g. "int", "str | None" (annotations are strings)
        if v is None and "None" in want:
            continue
        check = _CHECKS.get(want.split(" ")[0])
        if check is not None and not check(v):
            raise ConfigError(f"{section}.{k} must be {want}, got {v!r}")
    obj = cls(**d)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj
