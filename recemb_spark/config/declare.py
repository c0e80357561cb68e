"""Declaring a setting: :func:`setting` (one dataclass field with its default, doc and
allowed values), :func:`section` (one section of the configuration), and the per-key check
that every declaration implies (:func:`check_value`)."""
from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, fields
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """What a setting allows besides its type. Bounds apply to a number, to each item of a
    list and to each value of a mapping; ``min_len`` to a string's or a list's length;
    ``pattern`` (a full match) to a string or to each item of a list of strings."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] | None = None
    min_len: int | None = None
    pattern: str | None = None
    pattern_doc: str | None = None
    #: the key steers how a run goes, not what it writes (``--resume`` ignores a change)
    run_control: bool = False

    def describe(self) -> str:
        """The allowed values in words (``>= 0``, ``within (0, 1]``, ``one of [...]``)."""
        parts = []
        if self.choices is not None:
            parts.append(" | ".join(self.choices))
        low = (f"[{_num(self.ge)}" if self.ge is not None else
               f"({_num(self.gt)}" if self.gt is not None else None)
        high = (f"{_num(self.le)}]" if self.le is not None else
                f"{_num(self.lt)})" if self.lt is not None else None)
        if low and high:
            parts.append(f"within {low}, {high}")
        elif low:
            parts.append((">= " if low[0] == "[" else "> ") + low[1:])
        elif high:
            parts.append(("<= " if high[-1] == "]" else "< ") + high[:-1])
        if self.min_len:
            parts.append("non-empty" if self.min_len == 1 else f"at least {self.min_len} items")
        if self.pattern_doc:
            parts.append(self.pattern_doc)
        return "; ".join(parts)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def setting(default: Any, doc: str, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None,
            choices: tuple[str, ...] | None = None, min_len: int | None = None,
            pattern: str | None = None, pattern_doc: str | None = None,
            run_control: bool = False) -> Any:
    """Declare one setting: a dataclass field with its ``default``, one-line ``doc`` and the
    values it allows (``ge``/``gt``/``le``/``lt`` bounds, ``choices``, ``min_len``, a
    ``pattern`` described by ``pattern_doc``). Its type is the field's annotation."""
    rule = Rule(ge, gt, le, lt, choices, min_len, pattern, pattern_doc, run_control)
    meta = {"doc": doc, "rule": rule}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Override:
    """Another default (and doc) for one setting of a section class used twice."""

    default: Any
    doc: str | None = None


def override(default: Any, doc: str | None = None) -> Override:
    return Override(default, doc)


def section(cls: type, **overrides: Override) -> Any:
    """Declare one section of :class:`Config` (a section dataclass), with ``overrides`` of
    its declared defaults and docs (``deepwalk`` is ``item2vec``'s class with other ones)."""
    names = {f.name for f in fields(cls)}
    unknown = set(overrides) - names
    if unknown:  # pragma: no cover - a developer error in the declarations
        raise TypeError(f"{cls.__name__} has no setting(s) {sorted(unknown)}")
    return dataclasses.field(
        default_factory=lambda: cls(**{n: copy.deepcopy(o.default) for n, o in overrides.items()}),
        metadata={"overrides": overrides})


@dataclass(frozen=True)
class Setting:
    """One declared setting: where it lives, its type, default, doc and rule."""

    section: str
    name: str
    type: Any
    default: Any
    doc: str
    rule: Rule

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"


def check_value(s: Setting, value: Any) -> None:
    """ConfigError unless ``value`` (already of the declared type) obeys ``s.rule``."""
    r, key = s.rule, s.key
    if value is None:
        return
    if r.choices is not None and value not in r.choices:
        raise ConfigError(f"config key '{key}' must be one of {list(r.choices)}, got {value!r}")
    if r.min_len is not None and len(value) < r.min_len:
        raise ConfigError(f"config key '{key}' must not be empty" if r.min_len == 1 else
                          f"config key '{key}' must hold at least {r.min_len} items, "
                          f"got {value!r}")
    items: list[tuple[str, Any]] = (
        [(f" (item {v!r})", v) for v in value] if isinstance(value, list) else
        [(f" (value of {k!r})", v) for k, v in value.items()] if isinstance(value, dict) else
        [("", value)])
    bounds = Rule(ge=r.ge, gt=r.gt, le=r.le, lt=r.lt)
    for where, v in items:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not (
                (r.ge is None or v >= r.ge) and (r.gt is None or v > r.gt)
                and (r.le is None or v <= r.le) and (r.lt is None or v < r.lt)):
            raise ConfigError(f"config key '{key}'{where} must be {bounds.describe()}, "
                              f"got {v!r}")
        if r.pattern is not None and isinstance(v, str) and not re.fullmatch(r.pattern, v):
            raise ConfigError(f"config key '{key}'{where} must be {r.pattern_doc}, got {v!r}")




def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' {message}")


#: a decimal number in exponent notation without a dot, e.g. ``1e-5``, which YAML 1.1 (PyYAML)
#: reads as a string
_FLOAT_TEXT = re.compile(r"[+-]?\d+[eE][+-]?\d+")


def _coerce(value: Any, typ: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if origin is dict:
        key_type, value_type = typing.get_args(typ)
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return {_coerce(k, key_type, key): _coerce(v, value_type, key) for k, v in value.items()}
    if origin is list:
        (inner,) = typing.get_args(typ)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_coerce(v, inner, key) for v in value]
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
    elif typ is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    else:  # pragma: no cover - a developer error in the dataclasses
        raise TypeError(f"unsupported config type {typ} for {key}")
    raise ConfigError(f"config key '{key}' must be of type {typ.__name__}, got {value!r}")


def coerce_value(s: Setting, value: Any) -> Any:
    """``value`` as the declared type of ``s`` (an int for a float key becomes a float, ...);
    ConfigError naming the key when it is not one."""
    return _coerce(_as_choice(s, value), s.type, s.key)


def _as_choice(s: Setting, value: Any) -> Any:
    """A YAML boolean for a key whose choices include ``"true"``/``"false"`` (``input.header:
    false``) is that choice."""
    if isinstance(value, bool) and s.rule.choices and str(value).lower() in s.rule.choices:
        return str(value).lower()
    return value
