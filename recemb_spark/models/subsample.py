"""Word2vec's frequent-token subsampling (which MLlib lacks), applied to a sentence table
before the fit: Mikolov's keep probabilities, and a seeded, vectorised drop."""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ..neighbors.topk import list_positions, run_positions

_HASH = "_subsample_hash"


def keep_probabilities(counts: DataFrame, sample: float, total: int) -> dict[str, float]:
    """Mikolov's subsampling: a token seen ``c`` times in ``total`` is kept with probability
    ``(sqrt(c / (sample * total)) + 1) * sample * total / c`` (word2vec.c). Returns only the
    tokens kept with probability < 1: those seen more than ``sample * total`` times, at most
    ``1 / sample`` of them (bounded, collected). ``counts``: ``(item_id, count)``."""
    threshold = sample * total
    frequent = counts.filter(F.col("count") > F.lit(threshold)).collect()
    out = {}
    for row in frequent:
        c = row["count"]
        p = (math.sqrt(c / threshold) + 1.0) * threshold / c
        if p < 1.0:
            out[row["item_id"]] = p
    return out


def uniform(keys: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) float64 per uint64 key (the splitmix64 finaliser: every input bit
    reaches every output bit)."""
    z = keys + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def drop_tokens(lists: pa.Array, sentence_keys: np.ndarray, tokens: pa.Array,
                keep: np.ndarray) -> pa.Array:
    """``lists`` (``list<string>``) without the occurrences that lose their draw: the token at
    position ``p`` of row ``r`` stays when ``uniform(key[r] ^ p * odd) < keep[token]`` (1 for a
    token not in ``tokens``). Null rows stay null."""
    lengths, rows, idx = list_positions(lists, tokens)
    pos = run_positions(lengths)
    p = np.where(idx >= 0, keep[np.maximum(idx, 0)], 1.0)
    draw = uniform(sentence_keys[rows] ^ (pos.astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93)))
    kept = draw < p
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows[kept], minlength=len(lists)))])
    values = lists.flatten().filter(pa.array(kept))
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), pa.int32()), values,
                                    mask=lists.is_null() if lists.null_count else None)


def subsample_sentences(sentences: DataFrame, keep: dict[str, float], seed: int,
                        input_col: str = "items") -> DataFrame:
    """Drop each occurrence of a frequent token with probability ``1 - keep[token]``.

    The draw is a hash of (seed, sentence, position): the same corpus and seed drop the same
    tokens whatever the partitioning. Other columns pass unchanged. Vectorised over Arrow
    batches (one hash lookup per token, ``keep`` shipped with the function): a map lookup in
    SQL scans the map for every token, which took 4 minutes on a 25M-token corpus with 6,166
    frequent items."""
    if not keep:
        return sentences
    names = sorted(keep)
    tokens = pa.array(names, pa.string())
    probs = np.array([keep[t] for t in names], np.float64)
    schema = sentences.schema
    col = sentences.columns.index(input_col)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            keys = batch.column(batch.num_columns - 1).to_numpy(zero_copy_only=False)
            arrays = [batch.column(i) for i in range(batch.num_columns - 1)]
            arrays[col] = drop_tokens(arrays[col], keys.astype(np.int64).view(np.uint64),
                                      tokens, probs)
            yield pa.RecordBatch.from_arrays(arrays, names=schema.names)

    hashed = sentences.withColumn(_HASH, F.xxhash64(F.lit(seed), F.col(input_col)))
    return hashed.mapInArrow(run, schema)
