"""The evaluation's scoring kernel: held-out ranks and top lists of a block of cases.

For each case (a query vector and its held-out item) :func:`rank_block` counts the items that
rank ahead of the held-out item and finds the case's top-``k`` items (for coverage), in one
pass over the item matrix, tile by tile, never holding more than a ``block x tile`` score
tile. Scores are float32 BLAS products; only entries within a bound of float32's error
(:func:`recemb_spark.neighbors.topk.f32_error_bound`) of the held-out score or of the top-k
threshold are scored again exactly (:func:`recemb_spark.neighbors.topk.pair_scores`), so the
ranks and top lists are those of exact scoring whichever block or tile computes them --
what makes the broadcast and the sharded evaluation paths give the same figures.

Measured on 27 cases x 722k items x dim 32, one core: the full-row kernel it replaces spent
~6 ns per score in a float64 product, ~1 ns counting and ~2 ns in a partial sort per row.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..neighbors.topk import (
    ITEM_TILE,
    QUERY_BLOCK,
    RunningTopK,
    best_per_row,
    f32_error_bound,
    max_column_norm,
    pair_scores,
    query_blocks,
)


@dataclass
class CategoryBonus:
    """``category`` mode: ``bonus`` is added to the score of every item whose category code
    (``items``, one per column, -1 none) equals the case's (``cases``, one per row, -1
    none)."""

    bonus: np.float32
    items: np.ndarray
    cases: np.ndarray

    def tile(self, rows: slice, lo: int, hi: int) -> np.ndarray:
        """The ``(rows, lo:hi)`` addend (float32)."""
        qc = self.cases[rows, None]
        same = (self.items[None, lo:hi] == qc) & (qc >= 0)
        return same * self.bonus

    def pairs(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        """The addend of each (row, column) pair (float32)."""
        same = (self.items[c] == self.cases[r]) & (self.cases[r] >= 0)
        return same * self.bonus

    def slack(self) -> np.float32:
        """Extra error of adding the bonus to an approximate score (a few ulps of the sum)."""
        return np.float32(4 * np.spacing(np.float32(2 * abs(self.bonus))))


def heldout_targets(q: np.ndarray, mt: np.ndarray, cols: np.ndarray,
                    bonus: CategoryBonus | None = None) -> np.ndarray:
    """The exact score of column ``cols[r]`` for query row ``r`` (float32, the value
    :func:`recemb_spark.neighbors.topk.block_scores` gives; plus the category bonus)."""
    rows = np.arange(len(q))
    t = pair_scores(q, mt, rows, cols)
    if bonus is not None:
        t = t + bonus.pairs(rows, cols)
    return t.astype(np.float32)


def rank_block(q: np.ndarray, mt: np.ndarray, numbers: np.ndarray, target: np.ndarray,
               heldout: np.ndarray, k: int, ex_rows: np.ndarray, ex_cols: np.ndarray,
               bonus: CategoryBonus | None = None, tile: int = ITEM_TILE,
               block: int = QUERY_BLOCK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each query row ``r`` of ``q`` against the items ``mt`` (dim x items):

    * how many items rank ahead of its held-out item: items scoring more than ``target[r]``,
      or as much with a smaller number (``numbers``: each column's item number; ``heldout[r]``:
      the held-out item's number, never counted itself). Excluded pairs ``(ex_rows,
      ex_cols)`` score ``-inf``; a ``target`` of ``-inf`` (the held-out item excluded) counts
      every other item that is not excluded, and the excluded ones of smaller number;
    * its top-``k`` columns (ties by column) and their scores, padded with -1 / -inf.

    Returns ``(ahead (n,), top_idx (n, k), top_score (n, k))``. ``target`` must be the exact
    score (:func:`heldout_targets`) or ``-inf``."""
    n_q, n = len(q), mt.shape[1]
    ahead = np.zeros(n_q, np.int64)
    top_i = np.full((n_q, k), -1, np.int64)
    top_v = np.full((n_q, k), -np.inf, np.float32)
    if n_q == 0 or n == 0:
        return ahead, top_i, top_v
    m_norm = max_column_norm(mt)
    for r0, r1, rows, cols in query_blocks(n_q, ex_rows, ex_cols, block):
        ahead[r0:r1], rr, cc, vv = _pass(
            q[r0:r1], mt, numbers, target[r0:r1], heldout[r0:r1], k, rows, cols,
            slice(r0, r1), bonus, tile, m_norm)
        top_i[r0:r1], top_v[r0:r1] = best_per_row(rr, cc, vv, r1 - r0, k)
    return ahead, top_i, top_v


def _pass(q: np.ndarray, mt: np.ndarray, numbers: np.ndarray, target: np.ndarray,
          heldout: np.ndarray, k: int, ex_rows: np.ndarray, ex_cols: np.ndarray, rows: slice,
          bonus: CategoryBonus | None, tile: int, m_norm: float
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`rank_block` for one query block (``ex_cols`` sorted): the ahead counts and the
    top-k candidates ``(row, col, exact score)`` (a superset, cut by the caller)."""
    n_q, n = len(q), mt.shape[1]
    q32 = np.ascontiguousarray(q, np.float32)
    slack = f32_error_bound(q32, m_norm)
    if bonus is not None:
        slack = slack + bonus.slack()
    t = np.asarray(target, np.float32)
    t_hi, t_lo = (t + slack)[:, None], (t - slack)[:, None]
    ahead = np.zeros(n_q, np.int64)
    top = RunningTopK(n_q, k, slack)
    buf = np.empty((n_q, min(tile, n)), np.float32)
    mask = np.empty(buf.shape, bool)

    def exact(r: np.ndarray, c: np.ndarray, approx: np.ndarray) -> np.ndarray:
        v = pair_scores(q, mt, r, c)
        if bonus is not None:
            v = (v + bonus.pairs(r + rows.start, c)).astype(np.float32)
        return np.where(np.isneginf(approx), np.float32(-np.inf), v)

    for lo in range(0, n, tile):
        w = min(tile, n - lo)
        s, m = buf[:, :w], mask[:, :w]
        np.matmul(q32, mt[:, lo:lo + w], out=s)
        if bonus is not None:
            s += bonus.tile(rows, lo, lo + w)
        a, b = np.searchsorted(ex_cols, [lo, lo + w])
        s[ex_rows[a:b], ex_cols[a:b] - lo] = -np.inf
        # ranks: surely ahead, and the entries too close to the held-out score to tell
        np.greater(s, t_hi, out=m)
        ahead += np.count_nonzero(m, axis=1)
        near = np.flatnonzero((s >= t_lo) & ~m)
        if len(near):
            r, c = np.divmod(near, w)
            v = exact(r, c + lo, s[r, c])
            num, h = numbers[c + lo], heldout[r]
            wins = ((v > t[r]) | ((v == t[r]) & (num < h))) & (num != h)
            ahead += np.bincount(r[wins], minlength=n_q)
        # top k: entries above the running threshold, rescored exactly
        if lo == 0:
            top.first_tile(s)
        r, c = top.passing(s, m)
        if len(r):
            top.add(r, c + lo, exact(r, c + lo, s[r, c]))
    return (ahead, *top.result())


#: counts up to this score keep ``count + bonus`` exact in float32 (bonus = max count + 1)
EXACT_COUNT_MAX = float(2 ** 23 - 1)


class OrderRanks:
    """Ranks and top lists of popularity by counting, not scoring: when every item's score is
    its one number (``constant`` mode over a one-column matrix) plus, in ``category`` mode,
    the bonus for the case's category, each case's ranking is the one global order (score
    descending, ties by item number) with the case's category moved first and its excluded
    items taken out. So a held-out item's rank is its position less the excluded items
    before it (and, with a category, a count within the category's sorted positions): a
    case costs O(excluded + k) and a search, not a pass over the catalogue.

    The figures are :func:`rank_block`'s: use it only where :meth:`applies` (non-negative
    whole numbers below :data:`EXACT_COUNT_MAX`, where adding the bonus in float32 is exact
    and keeps the order within a category)."""

    def __init__(self, scores: np.ndarray, categories: np.ndarray | None = None):
        n = len(scores)
        self.n = n
        self.order = np.lexsort((np.arange(n), -scores.astype(np.float64)))
        self.pos = np.empty(n, np.int64)
        self.pos[self.order] = np.arange(n)
        self.categories = categories
        if categories is not None:
            by_cat = np.lexsort((self.pos, categories))   # items by (category, position)
            self.cat_items = by_cat
            self.cat_pos = self.pos[by_cat]
            self.cat_of = categories[by_cat]

    @staticmethod
    def applies(matrix: np.ndarray) -> bool:
        """Whether counting gives :func:`rank_block`'s figures for this item matrix."""
        if matrix.ndim != 2 or matrix.shape[1] != 1:
            return False
        v = matrix[:, 0]
        return bool(np.all(np.isfinite(v)) and np.all(v >= 0) and np.all(v == np.round(v))
                    and (len(v) == 0 or float(v.max()) <= EXACT_COUNT_MAX))

    def _category(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Category ``c``'s items and their global positions, in position order."""
        lo, hi = np.searchsorted(self.cat_of, [c, c + 1])
        return self.cat_items[lo:hi], self.cat_pos[lo:hi]

    def rank(self, h: int, excluded: np.ndarray, qcat: int = -1) -> int:
        """How many items rank ahead of item ``h`` for a case excluding the distinct items
        ``excluded`` whose query is in category ``qcat`` (-1: none, or ``constant`` mode)."""
        if np.any(excluded == h):  # the held-out item excluded: every other item but the
            return int(self.n - len(excluded) + np.count_nonzero(excluded < h))  # excluded
        ph, pe = self.pos[h], self.pos[excluded]
        if qcat < 0 or self.categories is None:
            return int(ph - np.count_nonzero(pe < ph))
        _, cpos = self._category(qcat)
        in_cat = int(np.searchsorted(cpos, ph))  # the category's items before h
        ex_in = self.categories[excluded] == qcat
        if self.categories[h] == qcat:
            return in_cat - int(np.count_nonzero(pe[ex_in] < ph))
        return (len(cpos) - int(ex_in.sum()) + int(ph) - in_cat
                - int(np.count_nonzero(pe[~ex_in] < ph)))

    def top(self, k: int, excluded: np.ndarray, qcat: int = -1) -> list[int]:
        """The case's top ``k`` items (fewer when fewer are left), best first."""
        skip = set(excluded.tolist())
        out: list[int] = []
        first = None
        if qcat >= 0 and self.categories is not None:
            first, _ = self._category(qcat)
            out = _take(first, skip, k, out)
        if len(out) < k:
            rest = set(first.tolist()) if first is not None else set()
            out = _take(self.order, skip | rest, k, out)
        return out


def _take(items: np.ndarray, skip: set[int], k: int, out: list[int]) -> list[int]:
    """``out`` extended with the first of ``items`` not in ``skip`` until it has ``k``."""
    for i in items:
        if len(out) >= k:
            break
        if int(i) not in skip:
            out.append(int(i))
    return out
