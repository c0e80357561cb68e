"""Byte encodings of the values the Redis export writes (readers in any language decode them).

* **vector** (item and user vectors): the float32 components, little-endian, nothing else
  (``dim * 4`` bytes; numpy: ``np.frombuffer(b, "<f4")``).
* **ranked list** (an item's neighbours, a user's candidates), version 1::

      byte 0              format version (1)
      bytes 1-2           n, the number of entries (uint16 little-endian)
      next 4n bytes       n scores, float32 little-endian, in rank order (cosine similarity
                          for neighbours, the candidate score for users)
      next 2n bytes       n id lengths in bytes, uint16 little-endian
      rest                the n ids, UTF-8, concatenated in rank order

  Rank r (1-based) is entry r-1. Ids need no escaping (lengths, not separators).

The batch encoders take Arrow arrays (what ``mapInArrow`` hands an executor) and return one
``bytes`` per row; the decoders are what ``recemb lookup`` and tests use.
"""
from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa

RANKED_FORMAT = 1
_HEADER = struct.Struct("<BH")
MAX_LIST = 65535


def encode_vector(vector) -> bytes:
    """One vector as float32 little-endian bytes."""
    return np.asarray(vector, dtype="<f4").tobytes()


def decode_vector(value: bytes) -> np.ndarray:
    """The float32 vector stored by :func:`encode_vector`."""
    if len(value) % 4:
        raise ValueError(f"a vector value has {len(value)} bytes, not a multiple of 4")
    return np.frombuffer(value, dtype="<f4")


def encode_ranked(ids: list[str], scores) -> bytes:
    """A ranked list (ids in rank order with their scores) in the version-1 layout above."""
    if len(ids) != len(scores):
        raise ValueError(f"{len(ids)} ids but {len(scores)} scores")
    if len(ids) > MAX_LIST:
        raise ValueError(f"a ranked list holds at most {MAX_LIST} entries, got {len(ids)}")
    raw = [i.encode("utf-8") for i in ids]
    if any(len(r) > 65535 for r in raw):
        raise ValueError("an id is longer than 65535 bytes")
    return b"".join([_HEADER.pack(RANKED_FORMAT, len(ids)),
                     np.asarray(scores, dtype="<f4").tobytes(),
                     np.fromiter((len(r) for r in raw), dtype="<u2", count=len(raw)).tobytes(),
                     *raw])


def decode_ranked(value: bytes) -> list[tuple[str, float]]:
    """``[(id, score), ...]`` in rank order from a value written by :func:`encode_ranked`."""
    if len(value) < _HEADER.size:
        raise ValueError("a ranked-list value is shorter than its header")
    fmt, n = _HEADER.unpack_from(value)
    if fmt != RANKED_FORMAT:
        raise ValueError(f"unknown ranked-list format {fmt} (this reader knows {RANKED_FORMAT})")
    pos = _HEADER.size
    scores = np.frombuffer(value, dtype="<f4", count=n, offset=pos)
    pos += 4 * n
    lengths = np.frombuffer(value, dtype="<u2", count=n, offset=pos)
    pos += 2 * n
    out = []
    for length, score in zip(lengths.tolist(), scores.tolist(), strict=True):
        out.append((value[pos:pos + length].decode("utf-8"), score))
        pos += length
    if pos != len(value):
        raise ValueError(f"a ranked-list value has {len(value) - pos} bytes after its last id")
    return out


def _list_bounds(column: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end offsets (into ``column.flatten()``) of every row of a list column."""
    if column.null_count:
        raise ValueError("a list column to export holds nulls")
    offsets = column.offsets.to_numpy()
    offsets = offsets - offsets[0]
    return offsets[:-1], offsets[1:]


def encode_vectors(column: pa.ListArray) -> list[bytes]:
    """Every row of an ``array<float>`` Arrow column as :func:`encode_vector` bytes."""
    flat = column.flatten().to_numpy(zero_copy_only=False).astype("<f4", copy=False)
    buf = flat.tobytes()
    starts, ends = _list_bounds(column)
    return [buf[4 * s:4 * e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


def encode_ranked_lists(ids: pa.ListArray, scores: pa.ListArray) -> list[bytes]:
    """Every row of ``(ids array<string>, scores array<double>)`` Arrow columns as
    :func:`encode_ranked` bytes (rows of both columns must have the same lengths)."""
    starts, ends = _list_bounds(ids)
    s_starts, s_ends = _list_bounds(scores)
    if not (np.array_equal(starts, s_starts) and np.array_equal(ends, s_ends)):
        raise ValueError("ids and scores of a ranked list differ in length")
    if len(ends) and int((ends - starts).max()) > MAX_LIST:
        raise ValueError(f"a ranked list holds more than {MAX_LIST} entries")
    all_scores = scores.flatten().to_numpy(zero_copy_only=False).astype("<f4").tobytes()
    all_ids = [i.encode("utf-8") for i in ids.flatten().to_pylist()]
    lengths = np.fromiter((len(r) for r in all_ids), dtype="<u2", count=len(all_ids)).tobytes()
    out = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        out.append(b"".join([_HEADER.pack(RANKED_FORMAT, e - s), all_scores[4 * s:4 * e],
                             lengths[2 * s:2 * e], *all_ids[s:e]]))
    return out
