"""Reading an exported version back from Redis (``recemb lookup``, and what a service does).

A reader resolves the version once (``P:M:current``, or the newest complete version of a given
run date) and then reads only that version's keys, so it never mixes two versions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import redis

from ..errors import StageError
from .codec import decode_ranked, decode_vector
from .redis_store import (
    KINDS,
    ExportError,
    RedisTarget,
    VersionStore,
    pointer_key,
    version_key,
)


@dataclass
class Resolved:
    """A version to read: its name and its meta hash (run_date, status, counts, dims)."""

    version: str
    meta: dict[str, str]


def resolve_version(store: VersionStore, model: str, run_date: str | None = None) -> Resolved:
    """The version ``P:M:current`` names or, with ``run_date``, the newest complete version of
    that date. StageError when there is none."""
    if run_date is None:
        version = store.current(model)
        if version is None:
            raise StageError(f"no exported version of model {model!r}: "
                             f"{pointer_key(store.prefix, model)} is not set; "
                             f"run `recemb export` first")
    else:
        complete = [v for v in store.versions(model)
                    if store.meta(model, v).get("run_date") == run_date
                    and store.meta(model, v).get("status") == "complete"]
        if not complete:
            raise StageError(f"no complete exported version of model {model!r} for run date "
                             f"{run_date}")
        version = complete[-1]
    return Resolved(version, store.meta(model, version))


def _raw_value(store: VersionStore, key: str) -> bytes | None:
    """The value stored at ``key``, undecoded (the store's client does not decode responses),
    or None."""
    raw = store.r.get(key)
    assert raw is None or isinstance(raw, bytes), "the store's client decodes responses"
    return raw


def read_ranked(store: VersionStore, model: str, version: str, kind: str,
                key_id: str) -> list[tuple[str, float]] | None:
    """The ranked list (``neighbors`` or ``user_candidates``) stored for ``key_id``, or None."""
    raw = _raw_value(store, version_key(store.prefix, model, version, KINDS[kind], key_id))
    return None if raw is None else decode_ranked(raw)


def read_vector(store: VersionStore, model: str, version: str, kind: str,
                key_id: str) -> np.ndarray | None:
    """The vector (``items`` or ``users``) stored for ``key_id``, or None."""
    raw = _raw_value(store, version_key(store.prefix, model, version, KINDS[kind], key_id))
    return None if raw is None else decode_vector(raw)


def lookup_neighbors(target: RedisTarget, prefix: str, model: str, item: str, k: int,
                     run_date: str | None = None
                     ) -> tuple[Resolved, list[tuple[str, float]]]:
    """``item``'s top-``k`` neighbours in the current (or ``run_date``'s) version of ``model``.

    StageError when the model has no version or the item no neighbour list in it;
    ExportError when Redis cannot be reached.
    """
    client = target.client()
    try:
        store = VersionStore(client, prefix)
        resolved = resolve_version(store, model, run_date)
        rows = read_ranked(store, model, resolved.version, "neighbors", item)
    except redis.RedisError as exc:
        raise ExportError(f"cannot read from redis at {target.describe()}: "
                          f"{target.scrub(str(exc))}") from None
    finally:
        client.close()
    if rows is None:
        has = "neighbors" in resolved.meta
        raise StageError(f"item {item!r} has no neighbour list in {model} version "
                         f"{resolved.version}" + ("" if has else
                                                  " (that version holds no neighbour lists)"))
    return resolved, rows[:k]
