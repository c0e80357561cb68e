"""Vector columns scaled to unit length, in numpy over Arrow batches.

Why not Spark SQL's ``transform``/``aggregate``: their lambdas are interpreted row by row. On
the 722k x 64 item vectors of the Taobao-shaped log that took 10.3 s against 2.9 s here
(reading and caching the table alone: 2.4 s).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame


def unit_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` (an id column, then ``vector list<float>``) with every vector scaled to unit
    L2 norm (computed in float64, rounded to float32); rows whose vector is null, empty or
    zero are dropped. Assumes the vectors of a batch have one length."""
    ids, vectors = batch.column(0), batch.column(1)
    lengths = vectors.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    ok = lengths > 0
    dim = int(lengths[ok][0]) if ok.any() else 1
    kept = vectors.filter(pa.array(ok))
    m = kept.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, dim)
    norms = np.sqrt(np.einsum("ij,ij->i", m, m))
    nonzero = norms > 0
    unit = (m[nonzero] / norms[nonzero, None]).astype(np.float32)
    keep = np.flatnonzero(ok)[nonzero]
    offsets = pa.array(np.arange(0, unit.size + 1, dim, dtype=np.int32))
    return pa.RecordBatch.from_arrays(
        [ids.take(pa.array(keep)), pa.ListArray.from_arrays(offsets, pa.array(unit.ravel()))],
        names=batch.schema.names)


def unit_vectors(vectors: DataFrame, id_col: str = "item_id") -> DataFrame:
    """``(id_col, vector array<float>)`` with every vector scaled to unit length (null, empty
    and zero vectors dropped; :func:`unit_batch`)."""
    id_type = vectors.schema[id_col].dataType.simpleString()

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows:
                yield unit_batch(batch)

    return vectors.select(id_col, "vector").mapInArrow(
        run, f"`{id_col}` {id_type}, vector array<float>")
