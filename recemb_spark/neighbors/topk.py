"""Exact top-K kernels: query blocks scored against item tiles in numpy, ids and exclusions
as positions, and the broadcast item matrix (the Spark entry points that choose between the
broadcast and the sharded paths are in :mod:`recemb_spark.neighbors.exact`).

Used for ALS user candidates, the ``exact`` nearest-neighbour method, and the ground truth
that approximate methods' recall is measured against.

The kernel (:func:`stream_top_k`) never holds a full score row: it multiplies a block of
queries with one cache-sized tile of items at a time and keeps only the scores above each
query's running k-th best (a threshold that tightens as tiles pass), so selection costs a
comparison per score instead of a partial sort of the whole row.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession

from ..ids import natural_key

# at most this many (query, item) scores in memory at once per task (~80 MB of float32)
BLOCK_CELLS = 20_000_000
# stream_top_k: queries per block and items per tile (1024 x 1024 floats = 4 MB: fits in cache)
QUERY_BLOCK = 1024
ITEM_TILE = 1024
TOPK_SCHEMA = "query_id string, item_id string, rank int, score double"
# core-seconds per scored (query, item) pair and vector dimension of the exact kernel
# (stream_top_k, one BLAS thread): 2,048 item queries against the 722k item vectors of the
# Taobao-shaped 5M-event log in 1.27 s at dim 32 (2.7e-11) and 2.05 s at dim 64 (2.2e-11)
EXACT_PAIR_DIM_SECONDS = 2.5e-11


def exact_core_seconds(n_queries: int, n_items: int, dim: int) -> float:
    """Estimated core-seconds of the exact top-k of ``n_queries`` against ``n_items``."""
    return n_queries * n_items * dim * EXACT_PAIR_DIM_SECONDS


def collect_matrix(item_vectors: DataFrame, normalise: bool) -> tuple[list[str], np.ndarray]:
    """Item ids (in natural order, so ties rank by id) and their vectors as a float32 matrix,
    rows unit-length when ``normalise``. Collected to the driver through Arrow:
    O(catalogue x dim), the one thing we broadcast."""
    table = item_vectors.select("item_id", "vector").toArrow()
    ids = table.column("item_id").to_pylist()
    vectors = table.column("vector").combine_chunks()
    dim = int(vectors.value_lengths()[0].as_py()) if len(ids) else 1
    flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    matrix = flat.reshape(len(ids), dim) if len(ids) else np.zeros((0, dim), np.float32)
    order = sorted(range(len(ids)), key=lambda i: natural_key(ids[i]))
    ids = [ids[i] for i in order]
    matrix = np.ascontiguousarray(matrix[order])
    return ids, unit_rows(matrix) if normalise else matrix


def block_scores(q: np.ndarray, mt: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``q @ mt`` as float32, each entry the same whichever block computes it.

    A float32 BLAS product is not: OpenBLAS picks kernels (and summation orders) by the
    matrix shapes, so one score differs in the last bits between a 1-row and a 64-row block,
    or a 512- and a 1024-column tile (measured here) -- and the broadcast and sharded paths
    cut queries and items differently. Products of float32 numbers are exact in float64 and
    the float64 sum differs by ~1e-16 between orders, so rounding it to float32 gives one
    value (except within ~1e-16 of a float32 rounding boundary: ~dim x 2**-29 of the scores).
    """
    s = np.matmul(np.asarray(q, np.float64), np.asarray(mt, np.float64))
    if out is None:
        return s.astype(np.float32)
    out[...] = s
    return out


def unit_rows(m: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return (m / np.maximum(norms, 1e-12)).astype(np.float32)


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` best columns in descending score order (ties by column) and their
    scores; ``-inf`` entries are never returned (their slots hold index -1)."""
    k = min(k, scores.shape[1])
    if k <= 0:
        return np.zeros((len(scores), 0), np.int64), np.zeros((len(scores), 0))
    n = scores.shape[1]
    part = np.argpartition(scores, n - k, axis=1)[:, n - k:]  # largest k, no negated copy
    part_scores = np.take_along_axis(scores, part, axis=1)
    # argpartition takes any of the columns tied at the k-th score: where more tie than fit,
    # choose again by column (rare with float scores; one comparison pass to find them)
    kth = part_scores.min(axis=1)
    tied = np.flatnonzero(np.isfinite(kth) & ((scores == kth[:, None]).sum(axis=1)
                                              > (part_scores == kth[:, None]).sum(axis=1)))
    for r in tied:  # only the entries at or above the k-th score need sorting
        cand = np.flatnonzero(scores[r] >= kth[r])
        part[r] = cand[np.lexsort((cand, -scores[r, cand]))[:k]]
        part_scores[r] = scores[r, part[r]]
    order = np.lexsort((part, -part_scores), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    best = np.take_along_axis(part_scores, order, axis=1)
    idx = np.where(np.isfinite(best), idx, -1)
    return idx, best


def first_of(sorted_keys: np.ndarray) -> np.ndarray:
    """Positions where a new key starts in a sorted key array."""
    new = np.ones(len(sorted_keys), bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return np.flatnonzero(new)


def run_positions(lengths: np.ndarray) -> np.ndarray:
    """For runs of ``lengths`` elements laid end to end: each element's position within its
    run (0, 1, ... per run; int64)."""
    lengths = np.asarray(lengths, np.int64)
    return np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths,
                                                                     lengths)


def best_per_row(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """From scattered candidates ``(row, col, score)``, no ``(row, col)`` twice (as
    :class:`RunningTopK` gives them): per row the ``k`` best columns by score (ties by column)
    as ``(n_rows, k)`` arrays, padded with -1 / -inf. ``-inf`` candidates are never returned.
    One sort of ``(row, score)`` packed in a uint64 (:func:`row_score_keys`) with the column
    as the tie-break: 4x faster than sorting the three keys apart (at 125 candidates a row)."""
    out_i = np.full((n_rows, k), -1, np.int64)
    out_v = np.full((n_rows, k), -np.inf, np.float32)
    ok = np.isfinite(vals) & (cols >= 0)
    rows, cols, vals = rows[ok], cols[ok], vals[ok]
    if k == 0 or len(rows) == 0:
        return out_i, out_v
    order = np.lexsort((cols, row_score_keys(rows, vals)))
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, np.arange(n_rows))
    rank = np.arange(len(rows)) - starts[rows]
    keep = rank < k
    out_i[rows[keep], rank[keep]] = cols[keep]
    out_v[rows[keep], rank[keep]] = vals[keep]
    return out_i, out_v


def row_score_keys(rows: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """uint64 keys that sort rows ascending and, within a row, float32 scores descending: the
    row in the high half, the score's order-preserving bit pattern inverted in the low half
    (-0.0 counted as 0.0, as comparisons do)."""
    bits = (np.asarray(vals, np.float32) + np.float32(0.0)).view(np.uint32)
    ascending = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))
    return (rows.astype(np.uint64) << np.uint64(32)) | (~ascending).astype(np.uint64)


def merge_top_k(idx_a: np.ndarray, val_a: np.ndarray, idx_b: np.ndarray, val_b: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise union of two padded top lists (-1 / -inf padding; each list without repeats),
    an index in both counted once with its better score, best ``k`` kept (ties by index)."""
    idx = np.concatenate([idx_a, idx_b], axis=1)
    val = np.concatenate([val_a, val_b], axis=1).astype(np.float32)
    val[idx < 0] = -np.inf
    order = np.argsort(idx, axis=1, kind="stable")
    idx, val = np.take_along_axis(idx, order, 1), np.take_along_axis(val, order, 1)
    dup = (idx[:, 1:] == idx[:, :-1]) & (idx[:, 1:] >= 0)
    val[:, :-1] = np.where(dup, np.maximum(val[:, :-1], val[:, 1:]), val[:, :-1])
    val[:, 1:][dup] = -np.inf
    order = np.lexsort((idx, -val), axis=1)[:, :k]
    idx, val = np.take_along_axis(idx, order, 1), np.take_along_axis(val, order, 1)
    idx[~np.isfinite(val)] = -1
    if idx.shape[1] < k:
        pad = k - idx.shape[1]
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        val = np.pad(val, ((0, 0), (0, pad)), constant_values=-np.inf)
    return idx, val


def merge_candidates(best_i: np.ndarray, best_v: np.ndarray, rows: np.ndarray,
                     cols: np.ndarray, vals: np.ndarray) -> None:
    """Merge scattered candidates ``(row, col, score)`` (no ``(row, col)`` twice) into the
    padded top lists ``best_i``/``best_v`` in place, row-wise."""
    k = best_i.shape[1]
    if len(rows) == 0:
        return
    order = np.argsort(rows, kind="stable")
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = first_of(rows)
    count = np.diff(np.append(starts, len(rows)))
    touched = rows[starts]
    by_count = np.argsort(count, kind="stable")  # rows of similar length padded together
    lo = 0
    while lo < len(by_count):
        width = int(count[by_count[min(len(by_count), lo + 1024) - 1]])
        hi = min(len(by_count), lo + max(1024, BLOCK_CELLS // 4 // width))
        chunk = by_count[lo:hi]
        width = int(count[chunk[-1]])
        n = count[chunk]
        local = np.repeat(np.arange(len(chunk)), n)
        pos = run_positions(n)
        src = np.repeat(starts[chunk], n) + pos
        top_i = np.full((len(chunk), width), -1, np.int64)
        top_v = np.full(top_i.shape, -np.inf, np.float32)
        top_i[local, pos], top_v[local, pos] = cols[src], vals[src]
        if width > k:  # cut to the best k before merging
            part = np.argpartition(top_v, width - k, axis=1)[:, width - k:]
            top_i = np.take_along_axis(top_i, part, 1)
            top_v = np.take_along_axis(top_v, part, 1)
        rs = touched[chunk]
        best_i[rs], best_v[rs] = merge_top_k(best_i[rs], best_v[rs], top_i, top_v, k)
        lo = hi


def kth_per_row(rows: np.ndarray, vals: np.ndarray, n_rows: int, k: int) -> np.ndarray:
    """The k-th largest candidate score of every row (-inf where a row has fewer than k).

    One sort of uint64 keys (row in the high half, the score's order-preserving bit pattern
    inverted in the low half: rows ascending, scores descending) instead of a two-key lexsort:
    7x faster, and this runs every few tiles of every query block."""
    key = row_score_keys(rows, vals)
    key.sort()
    counts = np.bincount(rows, minlength=n_rows)
    starts = np.cumsum(counts) - counts
    out = np.full(n_rows, -np.inf, np.float32)
    full = counts >= k
    low = (~(key[starts[full] + k - 1] & np.uint64(0xFFFFFFFF))).astype(np.uint32)
    out[full] = np.where(low >> 31, low & np.uint32(0x7FFFFFFF), ~low).view(np.float32)
    return out


def pair_scores(q: np.ndarray, mt: np.ndarray, rows: np.ndarray, cols: np.ndarray
                ) -> np.ndarray:
    """``q[rows[i]] . mt[:, cols[i]]`` for each pair, summed in float64 and rounded to float32:
    the value :func:`block_scores` gives that entry (products of float32 numbers are exact in
    float64; the float64 sums differ by ~1e-16 between orders)."""
    if len(rows) == 0:
        return np.zeros(0, np.float32)
    a = q[rows].astype(np.float64)
    b = mt[:, cols].astype(np.float64)  # (dim, pairs): gathered along the rows of mt
    return np.einsum("ij,ji->i", a, b).astype(np.float32)


#: :class:`RunningTopK` (float32 mode) cuts a row holding more than this many times ``k``
#: entries to its exact top ``k``
CROWDED = 4


class RunningTopK:
    """The top-``k`` candidates of a block of ``n_q`` query rows scanned tile by tile: a
    per-row threshold (the k-th best so far, less ``slack``, float32's error bound per row)
    that tightens as candidates arrive; entries above it are :meth:`add`-ed. :meth:`result`
    is a superset of each row's top-k (cut by :func:`best_per_row`).

    Two modes. Exact (no ``rescore``): the caller rescores the passing entries exactly
    before adding them. Float32 (``rescore(rows, cols)`` gives exact scores): the caller adds
    the float32 tile scores, and only what :meth:`final` keeps is rescored. Every threshold
    then keeps a margin of twice the error (an entry of the exact top-k scores at least the
    float32 k-th best less ``2 x slack`` in float32), so a row rescores about ``k`` entries
    instead of every one that passed a tile (~2.5 x ``k`` at three tiles a block); rows
    crowded by float32 ties are cut early (:meth:`_uncrowd`)."""

    def __init__(self, n_q: int, k: int, slack: np.ndarray, floor: np.ndarray | None = None,
                 rescore: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None):
        self.n_q, self.k, self.slack, self.rescore = n_q, k, slack, rescore
        approx = rescore is not None
        # subtracted from a float32 tile's k-th best / a stored score's k-th best / a
        # threshold before comparing a tile's float32 scores with it
        self.tile_margin = 2 * slack if approx else slack
        self.kept_margin = 2 * slack if approx else np.zeros_like(slack)
        self.pass_margin = np.zeros_like(slack) if approx else slack
        self.thr = np.full(n_q, -np.inf, np.float32)
        if floor is not None:  # an entry scoring at least floor scores floor - slack in f32
            self.thr = self._below(np.asarray(floor, np.float32), slack)
        self.found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.since = 0

    @staticmethod
    def _below(score: np.ndarray, margin: np.ndarray) -> np.ndarray:
        """A threshold just under ``score`` less ``margin``."""
        return np.nextafter((score - margin).astype(np.float32), np.float32(-np.inf))

    def first_tile(self, s: np.ndarray) -> None:
        """Start the thresholds of the rows without a floor from the first tile's own k-th
        best (less the margin). A row with a floor skips this partial sort (the costliest
        step when few tiles follow: a floor from an earlier pass is usually tighter)."""
        w = s.shape[1]
        open_ = ~np.isfinite(self.thr)
        if w <= self.k or not open_.any():
            return
        sub = s if open_.all() else s[open_]
        kth = np.partition(sub, w - self.k, axis=1)[:, w - self.k]
        self.thr[open_] = self._below(kth, self.tile_margin[open_])

    def passing(self, s: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(row, column)`` of the tile ``s`` (float32 scores) that may beat the threshold
        (``mask``: a scratch array of ``s``'s shape)."""
        np.greater(s, (self.thr - self.pass_margin)[:, None], out=mask)
        return np.divmod(np.flatnonzero(mask), s.shape[1])

    def add(self, r: np.ndarray, c: np.ndarray, scores: np.ndarray) -> None:
        """Keep the entries (exact or, in float32 mode, float32 scores) above the threshold;
        tighten it now and then."""
        ok = scores > self.thr[r] if self.rescore is None else scores >= self.thr[r]
        self.found.append((r[ok], c[ok], scores[ok]))
        self.since += int(ok.sum())
        if self.since > self.n_q * self.k:  # tighten: the k-th best found so far, per row
            rr, cc, vv = self.result()
            kth = kth_per_row(rr, vv, self.n_q, self.k) - self.kept_margin
            self.thr = np.maximum(self.thr, kth.astype(np.float32))
            keep = vv >= self.thr[rr]
            self.found, self.since = [self._uncrowd(rr[keep], cc[keep], vv[keep])], 0

    def _uncrowd(self, rr: np.ndarray, cc: np.ndarray, vv: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Float32 mode: the rows holding more than :data:`CROWDED` x ``k`` entries (float32
        ties within the margin: items sharing one vector, as side-information vectors of
        cold items do) cut to their exact top-``k`` (rescored; ties by column, and the
        columns still to come are larger). An exact score is within the error of the
        float32 one, so the thresholds stay valid."""
        rescore = self.rescore
        if rescore is None or len(rr) <= CROWDED * self.k:
            return rr, cc, vv
        crowded = np.bincount(rr, minlength=self.n_q) > CROWDED * self.k
        if not crowded.any():
            return rr, cc, vv
        sel = crowded[rr]
        best_i, best_v = best_per_row(rr[sel], cc[sel], rescore(rr[sel], cc[sel]),
                                      self.n_q, self.k)
        rows, slot = np.nonzero(best_i >= 0)
        return (np.concatenate([rr[~sel], rows]), np.concatenate([cc[~sel], best_i[rows, slot]]),
                np.concatenate([vv[~sel], best_v[rows, slot]]))

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The kept candidates ``(row, column, score as added)``."""
        if not self.found:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros(0, np.float32)
        rr, cc, vv = (np.concatenate(x) for x in zip(*self.found, strict=True))
        return rr, cc, vv

    def final(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`result` with exact scores: in float32 mode, the entries within the margin
        of their row's float32 k-th best, rescored."""
        rr, cc, vv = self.result()
        if self.rescore is None or len(rr) == 0:
            return rr, cc, vv
        kth = kth_per_row(rr, vv, self.n_q, self.k) - self.kept_margin
        keep = vv >= kth[rr]
        rr, cc = rr[keep], cc[keep]
        return rr, cc, self.rescore(rr, cc)


def _scan(q: np.ndarray, mt: np.ndarray, k: int, ex_rows: np.ndarray, ex_cols: np.ndarray,
          tile: int, m_norm: float, floor: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates ``(row, col, score)`` of one query block that can still be in its top-k:
    everything above the running per-row threshold, tile by tile. ``ex_cols`` sorted.

    Tiles are scored by a float32 BLAS product (half the time of float64); an entry passes
    when its float32 score is above the threshold (:class:`RunningTopK` in float32 mode,
    margins from :func:`f32_error_bound`; ``m_norm``: the largest item norm), and the
    entries within the margin of the k-th best at the end are scored again exactly
    (:func:`pair_scores`): the candidates, their scores and so the top-k are those of exact
    scoring, whichever block or tile computes them."""
    n_q, n = len(q), mt.shape[1]
    q32 = np.ascontiguousarray(q, np.float32)
    top = RunningTopK(n_q, k, f32_error_bound(q32, m_norm), floor,
                      rescore=lambda r, c: pair_scores(q, mt, r, c))
    buf = np.empty((n_q, min(tile, n)), np.float32)
    mask = np.empty(buf.shape, bool)
    for lo in range(0, n, tile):
        w = min(tile, n - lo)
        s, m = buf[:, :w], mask[:, :w]
        np.matmul(q32, mt[:, lo:lo + w], out=s)
        a, b = np.searchsorted(ex_cols, [lo, lo + w])
        s[ex_rows[a:b], ex_cols[a:b] - lo] = -np.inf
        if lo == 0:
            top.first_tile(s)
        r, c = top.passing(s, m)
        if len(r):
            top.add(r, c + lo, s[r, c])
    return top.final()


def f32_error_bound(q: np.ndarray, m_norm: float) -> np.ndarray:
    """Per query row, a bound on ``|float32 q . m - exact|`` for every item ``m`` of norm at
    most ``m_norm``: a dot product of ``dim`` terms summed in float32 errs by at most about
    ``dim x 2**-24`` times the sum of the terms' magnitudes (Higham), which is at most ``|q| x
    |m|`` (Cauchy-Schwarz); taken as ``(dim + 2) x 2**-23`` (twice that, and the rounding of
    the products). float32, one per row of ``q``."""
    q_norm = np.linalg.norm(np.asarray(q, np.float64), axis=1)
    return ((q.shape[1] + 2) * 2.0 ** -23 * q_norm * m_norm).astype(np.float32)


def max_column_norm(mt: np.ndarray) -> float:
    """The largest L2 norm among the columns of ``mt`` (dim x items; 0 when empty)."""
    if mt.size == 0:
        return 0.0
    return float(np.sqrt(np.einsum("ij,ij->j", mt, mt, dtype=np.float64).max()))


def stream_top_k(q: np.ndarray, mt: np.ndarray, k: int,
                 exclude: tuple[np.ndarray, np.ndarray] | None = None,
                 tile: int = ITEM_TILE, block: int = QUERY_BLOCK,
                 floor: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` columns of ``q @ mt`` per query row: ``(idx, score)`` arrays of shape
    ``(len(q), k)``, best first, ties by column, padded with -1 / -inf.

    ``mt`` is the item matrix transposed (dim x items, C-contiguous). ``exclude``: ``(rows,
    cols)`` pairs that must not be returned (a user's history, the item itself). Never holds
    more than one ``block x tile`` score tile per step. ``floor``: per query row, a score
    below which nothing is wanted (e.g. the k-th best of an earlier pass; -inf: none):
    entries scoring under it may be missing from the result, and the rows with a floor skip
    the first tile's partial sort (the dominant cost when a block has few tiles).
    """
    n_q = len(q)
    out_i = np.full((n_q, k), -1, np.int64)
    out_v = np.full((n_q, k), -np.inf, np.float32)
    if k == 0 or n_q == 0 or mt.shape[1] == 0:
        return out_i, out_v
    ex_r, ex_c = exclude if exclude is not None else (np.zeros(0, np.int64),) * 2
    m_norm = max_column_norm(mt)
    for r0, r1, rows, cols in query_blocks(n_q, ex_r, ex_c, block):
        rr, cc, vv = _scan(q[r0:r1], mt, k, rows, cols, tile, m_norm,
                           None if floor is None else floor[r0:r1])
        out_i[r0:r1], out_v[r0:r1] = best_per_row(rr, cc, vv, r1 - r0, k)
    return out_i, out_v


def query_blocks(n_q: int, ex_rows: np.ndarray, ex_cols: np.ndarray, block: int
                 ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Blocks ``(r0, r1, rows, cols)`` of at most ``block`` of ``n_q`` query rows, with the
    excluded pairs ``(ex_rows, ex_cols)`` that fall in each: ``rows`` relative to ``r0``,
    ``cols`` sorted (as the tile scans need them)."""
    order = np.argsort(ex_cols, kind="stable")
    ex_r, ex_c = np.asarray(ex_rows, np.int64)[order], np.asarray(ex_cols, np.int64)[order]
    for r0 in range(0, n_q, block):
        r1 = min(n_q, r0 + block)
        sel = (ex_r >= r0) & (ex_r < r1)
        yield r0, r1, ex_r[sel] - r0, ex_c[sel]


def positions(values: pa.Array, ids: pa.Array) -> np.ndarray:
    """Position of each of ``values`` in the broadcast id list ``ids`` (-1 when absent) as
    int64: one vectorised hash lookup (``pyarrow.compute.index_in``), ~10x faster than a
    Python dict at MovieLens-25M's 25M history items."""
    found = pc.index_in(values, value_set=ids).fill_null(-1)
    return found.to_numpy(zero_copy_only=False).astype(np.int64)


def categories_of(categories: DataFrame, ids: pa.Array) -> tuple[np.ndarray, int]:
    """Each of ``ids``' category index (-1 for none; categories numbered in string order,
    null ones left out) from ``categories (item_id, category)``, collected through Arrow, and
    the number of categories. Assumes one category per item."""
    t = categories.select("item_id", "category").toArrow()
    item = positions(t.column("item_id").combine_chunks(), ids)
    names = t.column("category").combine_chunks().cast(pa.string())
    distinct = pc.drop_null(pc.unique(names))
    distinct = distinct.take(pc.sort_indices(distinct))
    code = positions(names, distinct)
    out = np.full(len(ids), -1, np.int64)
    out[item[item >= 0]] = code[item >= 0]
    return out, len(distinct)


def list_positions(lists: pa.Array, ids: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For an Arrow ``list<string>`` array: ``(lengths, rows, cols)`` as int64 — each list's
    length (0 for null), and for every value of ``lists.flatten()`` its row and its position
    in ``ids`` (-1 when absent)."""
    lengths = lists.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    rows = np.repeat(np.arange(len(lists), dtype=np.int64), lengths)
    return lengths, rows, positions(lists.flatten(), ids)


def exclusions(lists: pa.Array, ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(row, col)`` pairs of an Arrow ``list<string>`` column of excluded item ids (``col``:
    the position in ``ids``; ids outside the catalogue dropped)."""
    _, rows, cols = list_positions(lists, ids)
    return rows[cols >= 0], cols[cols >= 0]


def topk_batch(qids: pa.Array, idx: np.ndarray, vals: np.ndarray, ids: pa.Array,
               names: tuple[str, str, str, str] = ("query_id", "item_id", "rank", "score")
               ) -> pa.RecordBatch:
    """Rows ``(query, item, rank, score)`` of padded top lists (``idx`` -1 where empty)."""
    ok = idx >= 0
    rows, slot = np.nonzero(ok)
    return pa.RecordBatch.from_arrays(
        [qids.take(pa.array(rows)), ids.take(pa.array(idx[ok])),
         pa.array((slot + 1).astype(np.int32)), pa.array(vals[ok].astype(np.float64))],
        names=list(names))


def query_matrix(batch: pa.RecordBatch, col: int) -> np.ndarray:
    """The ``array<float>`` column ``col`` of ``batch`` as a float32 matrix (one row each)."""
    values = batch.column(col).flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float32).reshape(batch.num_rows, -1)


def broadcast_items(spark: SparkSession, item_vectors: DataFrame, normalise: bool) -> Any:
    """Broadcast ``(ids as an Arrow string array, float32 item matrix)``."""
    ids, matrix = collect_matrix(item_vectors, normalise)
    return spark.sparkContext.broadcast((pa.array(ids, pa.string()), matrix))
