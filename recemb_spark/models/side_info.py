"""Side information for Word2Vec models (the EGES idea with MLlib's trainer).

Item features (genres from an items file, a log's category column) become *side tokens*
(``side:<feature>``) interleaved in the training sentences after each item that has them
(Meta-Prod2Vec style): the skip-gram then learns vectors for the features in the same space
as the items. Frequent side tokens are subsampled (Mikolov's keep probability at
``side_info.sample``) so that a few big categories do not dominate the contexts. After
training, an item without a learned vector (too few events) gets the normalised mean of its
side tokens' vectors, marked ``source = 'side'`` in ``item_embeddings``.
"""
from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.stat import Summarizer
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from ..neighbors.topk import list_positions, run_positions
from ..rows import one_row
from ..vectors import unit_vectors
from .subsample import keep_probabilities, subsample_sentences
from .word2vec import token_counts

SIDE_PREFIX = "side:"


def side_tokens(items: DataFrame) -> DataFrame:
    """``(item_id, side array<string>)`` from the items table's ``genres``: one side token
    per feature, items without features left out."""
    return (items.select("item_id", F.transform(
        F.filter(F.coalesce("genres", F.array().cast("array<string>")),
                 lambda g: g.isNotNull() & (g != "")),
        lambda g: F.concat(F.lit(SIDE_PREFIX), g)).alias("side"))
        .filter(F.size("side") > 0))


#: what one side row (an item id and its tokens' strings) or one side token weighs in a
#: Python worker when the side table is broadcast (:func:`side_bytes`): ~100 B a string, as
#: :data:`~recemb_spark.neighbors.blocks.BYTES_PER_ID` counts an id
SIDE_STRING_BYTES = 100


def side_bytes(rows: int, tokens: int) -> int:
    """Bytes a broadcast side table of ``rows`` items and ``tokens`` side tokens weighs in a
    worker."""
    return (rows + tokens) * SIDE_STRING_BYTES


def interleave_side_tokens(sentences: DataFrame, side: DataFrame, sample: float, seed: int,
                           input_col: str = "items", broadcast_limit: int = 0) -> DataFrame:
    """Sentences with each item followed by its side tokens: ``(input_col array<string>)``.
    When ``side`` has a boolean ``once`` column (:func:`mark_once`), an item marked true
    whose side tokens equal those of the item just before it in the sentence gets none (a
    run of one category carries its token once; lists compared by ``xxhash64``,
    :func:`side_keys`).

    ``broadcast_limit`` (bytes; 0 = never): when ``side`` holds one row per item and weighs at
    most that (:func:`side_bytes`), it is collected and broadcast and each task interleaves
    its sentences where they are, in their order (:func:`interleave_batch`): no shuffle. On
    the 5M-event log's DeepWalk walks (13.7M tokens) the keyed path below shuffled 1.1 GB and
    took ~55 s of the stage.

    Otherwise distributed, with nothing proportional to the tokens or the catalogue in one
    task or on the driver: the sentences are numbered and exploded with positions, the side table is
    joined to the tokens (a shuffle join: Spark broadcasts it only below
    ``spark.sql.autoBroadcastJoinThreshold``), the token rows are repartitioned by sentence and
    sorted by (sentence, position) within partitions, and :func:`rebuild_sentences` streams
    them back into lists: a task holds one Arrow batch and the one sentence it is rebuilding
    (a sentence is never split across partitions nor merged with another). Side tokens are
    then subsampled at ``sample`` (0 = keep all); item tokens are never dropped here."""
    repeat = "once" not in side.columns
    keyed = side.select("item_id", "side") if repeat else side_keys(side)
    if broadcast_limit > 0 and _side_fits(side, broadcast_limit):
        table = keyed.toArrow()
        bc = sentences.sparkSession.sparkContext.broadcast(
            (table.column("item_id").combine_chunks(), table.column("side").combine_chunks(),
             None if repeat else (table.column("_key").to_numpy(),
                                  table.column("_once").to_numpy(zero_copy_only=False))))

        def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            ids, lists, keys = bc.value
            for batch in batches:
                if batch.num_rows:
                    yield interleave_batch(batch, ids, lists, input_col, keys)

        grouped = sentences.select(input_col).mapInArrow(run, f"{input_col} array<string>")
    else:
        numbered = (sentences.select(F.monotonically_increasing_id().alias("_s"), input_col)
                    .select("_s", F.posexplode(input_col).alias("_p", "item_id")))
        joined = numbered.join(keyed, "item_id", "left")
        none = F.array().cast("array<string>")
        side_col = F.coalesce("side", none)
        if repeat:
            rows = joined.repartition("_s")
        else:  # the window partitions by sentence and sorts by position: the same shuffle
            previous = F.lag("_key").over(Window.partitionBy("_s").orderBy("_p"))
            side_col = F.when(F.col("_once") & (previous == F.col("_key")), none).otherwise(
                side_col)
            rows = joined
        rows = (rows.select("_s", "_p", F.concat(F.array("item_id"), side_col).alias("_t"))
                .sortWithinPartitions("_s", "_p"))
        grouped = rows.mapInArrow(partial(rebuild_sentences, name=input_col),
                                  f"{input_col} array<string>")
    if sample <= 0:
        return grouped
    if repeat:
        counts = interleaved_token_counts(sentences, side, input_col).persist()
        total = one_row(counts.agg(F.sum("count")))[0] or 0
    else:  # which side tokens are written depends on their neighbours: counted as written
        only_side = F.filter(input_col, lambda t: t.startswith(SIDE_PREFIX))
        counts = token_counts(grouped.select(only_side.alias(input_col)), input_col).persist()
        items = one_row(sentences.agg(F.sum(F.coalesce(F.size(input_col), F.lit(0)))))[0]
        total = (items or 0) + (one_row(counts.agg(F.sum("count")))[0] or 0)
    keep = {t: p for t, p in keep_probabilities(counts, sample, total).items()
            if t.startswith(SIDE_PREFIX)}
    counts.unpersist()
    return subsample_sentences(grouped, keep, seed, input_col)


def mark_once(side: DataFrame, sequences: DataFrame, once_from: int) -> DataFrame:
    """``side`` with ``once``: whether the item occurs at least ``once_from`` times in
    ``sequences (items array<string>)`` (such an item's side tokens are written once per run
    of equal side lists, :func:`interleave_side_tokens`); ``side`` unchanged when
    ``once_from`` is 0 (every occurrence keeps its side tokens)."""
    if once_from <= 0:
        return side
    counts = token_counts(sequences.select("items"))
    return (side.join(counts, "item_id", "left")
            .select("item_id", "side", (F.coalesce("count", F.lit(0)) >= once_from)
                    .alias("once")))


def side_keys(side: DataFrame) -> DataFrame:
    """``(item_id, side, _key, _once)``: a side table marked by :func:`mark_once` with a
    64-bit hash of each item's side list (equal lists, equal keys; distinct lists collide
    with probability ~ lists^2 / 2^64) and its ``once`` mark (null as false)."""
    return side.select("item_id", "side", F.xxhash64("side").alias("_key"),
                       F.coalesce("once", F.lit(False)).alias("_once"))


def _side_fits(side: DataFrame, limit: int) -> bool:
    """Whether ``side`` has one row per item and :func:`side_bytes` of it is at most
    ``limit`` (one aggregate)."""
    row = one_row(side.agg(F.count("*").alias("rows"),
                           F.countDistinct("item_id").alias("items"),
                           F.sum(F.size("side")).alias("tokens")))
    rows, tokens = int(row["rows"]), int(row["tokens"] or 0)
    return rows == int(row["items"]) and side_bytes(rows, tokens) <= limit


def interleave_batch(batch: pa.RecordBatch, ids: pa.Array, lists: pa.Array,
                     name: str, keys: tuple[np.ndarray, np.ndarray] | None = None
                     ) -> pa.RecordBatch:
    """``batch``'s first column (``list<string>`` sentences) with each token followed by its
    side tokens: ``lists[i]`` for the token equal to ``ids[i]`` (ids distinct; a token not in
    ``ids`` gets none). With ``keys`` (``(key, once)``: :func:`side_keys`' key and mark of
    ``lists[i]``) a token marked once whose key equals the previous token's in the same
    sentence gets none. One ``list<string>`` column ``name``; empty and null sentences are
    left out (as the keyed interleave, which explodes them into no rows, leaves them)."""
    col = batch.column(0)
    col = col.filter(pc.greater(pc.list_value_length(col).fill_null(0), 0))
    lengths, rows, pos = list_positions(col, ids)
    flat = pc.list_flatten(col)
    n = len(flat)
    side_off = lists.offsets.to_numpy().astype(np.int64) - int(lists.offsets[0].as_py())
    found = pos >= 0
    s = np.zeros(n, np.int64)
    s[found] = side_off[pos[found] + 1] - side_off[pos[found]]
    if keys is not None and n > 1:
        at = np.maximum(pos, 0)
        key, once = keys[0][at], keys[1][at] & found
        repeated = (rows[1:] == rows[:-1]) & once[1:] & found[:-1] & (key[1:] == key[:-1])
        s[1:][repeated] = 0
    out_counts = 1 + s
    starts = np.cumsum(out_counts) - out_counts
    idx = np.empty(int(out_counts.sum()), np.int64)
    idx[starts] = np.arange(n)
    if s.sum():
        tok = np.repeat(np.arange(n), s)
        within = run_positions(s)
        idx[np.repeat(starts + 1, s) + within] = n + side_off[pos[tok]] + within
    values = pa.concat_arrays([flat.cast(pa.string()), pc.list_flatten(lists).cast(pa.string())])
    sums = np.concatenate([[0], np.cumsum(out_counts)])
    offsets = sums[np.concatenate([[0], np.cumsum(lengths)])].astype(np.int32)
    out = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values.take(pa.array(idx)))
    return pa.RecordBatch.from_arrays([out], names=[name])


def interleaved_token_counts(sentences: DataFrame, side: DataFrame,
                             input_col: str = "items") -> DataFrame:
    """``(item_id, count)``: what :func:`~.word2vec.token_counts` gives on
    :func:`interleave_side_tokens`' sentences (no subsampling), without building them — the
    item tokens counted in ``sentences``, joined to ``side`` (a row per item and side row,
    as the interleave joins), each side token counted as often as its item. The interleave
    sorts every token by sentence; counting first lets it run once, for the training."""
    items = token_counts(sentences, input_col)
    joined = items.join(side.select("item_id", "side"), "item_id", "left")
    per_item = joined.select("item_id", "count")
    per_side = joined.select(F.explode("side").alias("item_id"), "count")
    return (per_item.unionByName(per_side).groupBy("item_id")
            .agg(F.sum("count").alias("count")))


def rebuild_sentences(batches: Iterator[pa.RecordBatch],
                      name: str = "items") -> Iterator[pa.RecordBatch]:
    """Rows ``(_s long, _p int, _t list<string>)`` sorted by ``(_s, _p)`` -> one row per
    sentence ``_s``: the concatenation of its ``_t`` lists in order (one ``list<string>``
    column ``name``). A sentence whose rows straddle two batches is carried over to the next;
    memory is one batch plus that sentence."""
    carry_s: np.ndarray | None = None
    carry_t: pa.Array | None = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        s = batch.column(0).to_numpy(zero_copy_only=False)
        t = batch.column(2)
        if carry_s is not None and carry_t is not None:
            s = np.concatenate([carry_s, s])
            t = pa.concat_arrays([carry_t, t])
        last = int(np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))[-1])
        if last > 0:  # rows [0, last) are complete sentences
            yield _concat_runs(s[:last], t.slice(0, last), name)
        carry_s, carry_t = s[last:], t.slice(last)
    if carry_s is not None and carry_t is not None and len(carry_s):
        yield _concat_runs(carry_s, carry_t, name)


def _concat_runs(s: np.ndarray, t: pa.Array, name: str) -> pa.RecordBatch:
    """One ``list<string>`` row per run of equal ``s``: its rows' lists concatenated."""
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    lengths = pc.list_value_length(t).fill_null(0).to_numpy(zero_copy_only=False)
    per_run = np.add.reduceat(lengths.astype(np.int64), starts) if len(starts) else lengths
    offsets = np.concatenate([[0], np.cumsum(per_run)]).astype(np.int32)
    values = pc.list_flatten(t)
    out = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)
    return pa.RecordBatch.from_arrays([out], names=[name])


def split_vectors(vectors: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Trained vectors -> (item vectors, side-token vectors), both ``(item_id, vector)``."""
    is_side = F.col("item_id").startswith(SIDE_PREFIX)
    return vectors.filter(~is_side), vectors.filter(is_side)


def cold_item_vectors(side: DataFrame, side_vectors: DataFrame,
                      learned: DataFrame) -> DataFrame:
    """``(item_id, vector)`` for items of ``side`` without a learned vector: the normalised
    mean of the unit vectors of their side tokens (items whose tokens have no vector are
    left out)."""
    unit = side_vectors.select(
        F.col("item_id").alias("_token"),
        F.transform("vector", lambda x: x / F.sqrt(F.aggregate(
            "vector", F.lit(0.0), lambda acc, y: acc + y * y)))
        .alias("_v"))
    cold = side.join(learned.select("item_id"), "item_id", "left_anti")
    pooled = (cold.select("item_id", F.explode("side").alias("_token"))
              .join(unit, "_token")
              .groupBy("item_id")
              .agg(Summarizer.mean(array_to_vector(F.col("_v"))).alias("_m"))
              .select("item_id", vector_to_array(F.col("_m"), "float32").alias("vector")))
    return unit_vectors(pooled)


def with_cold_items(items: DataFrame, side_vectors: DataFrame,
                    side: DataFrame) -> tuple[DataFrame, dict[str, int]]:
    """The learned item vectors marked ``source = 'learned'`` plus side-information vectors
    for the items of ``side`` without one (``source = 'side'``), and counts for the
    manifest. ``items`` and ``side_vectors`` come from :func:`split_vectors` (after any
    mapping of walk nodes back to item ids)."""
    cold = cold_item_vectors(side, side_vectors, items).persist()
    out = (items.select("item_id", "vector", F.lit("learned").alias("source"))
           .unionByName(cold.select("item_id", "vector", F.lit("side").alias("source"))))
    return out, {"side_token_vectors": side_vectors.count(), "cold_item_vectors": cold.count()}
