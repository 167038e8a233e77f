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
    "list": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
}


def _type_ok(value, annotation: str) -> bool:
    """Whether ``value`` fits an annotation string such as ``int``, ``dict | None`` or ``float |
    list[float]``; an alternative we have no check for (a dataclass, ``Any``) lets any value through,
    for its own validate() to judge."""
    for alt in (a.strip() for a in annotation.split("|")):
        base = alt.split("[")[0]
        if alt == "None" and value is None:
            return True
        if alt != "None" and (base not in _CHECKS or _CHECKS[base](value)):
            return True
    return False


def from_dict(cls: type[T], d: dict, section: str, validate: bool = True) -> T:
    """``cls(**d)`` after checking keys and scalar types; then ``validate()`` if ``cls`` has it and
    ``validate`` (a class whose checks name their section itself calls its own afterwards).

    Errors name ``section.key`` and list the valid keys, e.g. ``unknown data key(s) ['mutli']``.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {section} key(s) {unknown}; valid keys: {', '.join(fields)}")
    for k, v in d.items():
        want = str(fields[k].type)  # e.g. "int", "str | None" (annotations are strings)
        if not _type_ok(v, want):
            raise ConfigError(f"{section}.{k} must be {want}, got {v!r}")
    obj = cls(**d)
    if validate and hasattr(obj, "validate"):
        obj.validate()
    return obj
