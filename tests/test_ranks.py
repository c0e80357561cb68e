"""The evaluation's float32 scoring kernel against exact full-row scoring."""
from __future__ import annotations

import numpy as np
import pytest

from recemb_spark.evaluation.ranks import CategoryBonus, OrderRanks, heldout_targets, rank_block
from recemb_spark.evaluation.scoring import heldout_ranks
from recemb_spark.neighbors.topk import block_scores, top_k_rows


def full_rows(q, m, heldout, k, ex_rows, ex_cols, bonus):
    """What the evaluation computed before the kernel: every score of a row in float64,
    rounded, exclusions -inf, the held-out rank and the top k by full-row selection."""
    s = block_scores(q, m.T)
    if bonus is not None:
        s = s + bonus.tile(slice(0, len(q)), 0, len(m))
    s[ex_rows, ex_cols] = -np.inf
    return heldout_ranks(s, heldout), top_k_rows(s, k)


def case(seed):
    rng = np.random.default_rng(seed)
    n, dim, n_q = int(rng.integers(5, 2500)), int(rng.integers(1, 40)), int(rng.integers(1, 250))
    m = rng.standard_normal((n, dim)).astype(np.float32)
    if seed % 3 == 0:
        m = np.round(m, 1).astype(np.float32)  # exact ties
    m[rng.integers(0, n, n // 3)] = m[rng.integers(0, n, n // 3)]  # equal rows
    if seed % 5 == 0:  # popularity: one non-negative column
        m, dim = np.abs(m[:, :1]) * 100, 1
    q = m[rng.integers(0, n, n_q)]
    if seed % 2:  # queries near items: scores within float32's error of each other
        q = q + rng.standard_normal(q.shape).astype(np.float32) * 1e-6
    heldout = rng.integers(0, n, n_q)
    pairs = np.unique(np.stack([rng.integers(0, n_q, 4 * n_q), rng.integers(0, n, 4 * n_q)], 1),
                      axis=0)
    bonus = None
    if seed % 4 == 1:
        bonus = CategoryBonus(np.float32(np.abs(m).max() + 1), rng.integers(-1, 5, n),
                              rng.integers(-1, 5, n_q))
    return (rng, q.astype(np.float32), m, heldout, int(rng.integers(1, 20)), pairs[:, 0],
            pairs[:, 1], bonus)


@pytest.mark.parametrize("seed", range(40))
def test_rank_block_equals_full_row_scoring(seed):
    """Ranks (ties by item number, the held-out item excluded or not), top lists and their
    scores equal full-row exact scoring, whatever the tile and block sizes; with category
    bonuses, equal rows and near-equal scores."""
    rng, q, m, heldout, k, ex_rows, ex_cols, bonus = case(seed)
    want_ranks, (want_idx, want_best) = full_rows(q, m, heldout, k, ex_rows, ex_cols, bonus)
    mt = np.ascontiguousarray(m.T)
    target = heldout_targets(q, mt, heldout, bonus)
    target[ex_rows[ex_cols == heldout[ex_rows]]] = -np.inf
    ahead, idx, best = rank_block(q, mt, np.arange(len(m)), target, heldout, k, ex_rows,
                                  ex_cols, bonus, tile=int(rng.integers(3, 700)),
                                  block=int(rng.integers(1, 200)))
    kk = min(k, len(m))
    assert np.array_equal(ahead, want_ranks)
    assert np.array_equal(idx[:, :kk], want_idx)
    assert np.array_equal(best[:, :kk], want_best.astype(np.float32))
    assert (idx[:, kk:] == -1).all()


def test_rank_block_counts_by_item_number_not_column():
    """A tie goes to the smaller item *number* (the global order), not the column: the sharded
    path scores item blocks whose columns are numbered from anywhere."""
    m = np.ones((3, 2), np.float32)
    q = np.array([[1.0, 0.0]], np.float32)
    mt = np.ascontiguousarray(m.T)
    target = heldout_targets(q, mt, np.array([1]))
    numbers = np.array([50, 7, 3])  # column 1 is item 7; items 3 and 50 tie with it
    ahead, _, _ = rank_block(q, mt, numbers, target, np.array([7]), 2,
                             np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert ahead.tolist() == [1]  # only item 3


@pytest.mark.parametrize("seed", range(30))
def test_counted_popularity_ranks_equal_full_row_scoring(seed):
    """Popularity ranked by counting (:class:`OrderRanks`) gives full-row scoring's ranks
    and top lists: many tied counts, categories (some items and cases without one), the
    held-out item sometimes excluded, catalogues smaller than k."""
    rng = np.random.default_rng(seed)
    n, n_q = int(rng.integers(1, 300)), int(rng.integers(1, 60))
    m = rng.integers(0, 6 if seed % 2 else 400, (n, 1)).astype(np.float32)
    assert OrderRanks.applies(m)
    cats, qcats = rng.integers(-1, 4, n), rng.integers(-1, 4, n_q)
    bonus = CategoryBonus(np.float32(m.max() + 1), cats, qcats) if seed % 3 else None
    heldout = rng.integers(0, n, n_q)
    pairs = np.unique(np.stack([rng.integers(0, n_q, 3 * n_q), rng.integers(0, n, 3 * n_q)],
                               1), axis=0)
    ex_rows, ex_cols = pairs[:, 0], pairs[:, 1]
    k = int(rng.integers(1, 15))
    q = np.ones((n_q, 1), np.float32)
    want_ranks, (want_idx, _) = full_rows(q, m, heldout, k, ex_rows, ex_cols, bonus)
    counted = OrderRanks(m[:, 0], cats if bonus is not None else None)
    for r in range(n_q):
        ex = ex_cols[ex_rows == r]
        qc = int(qcats[r]) if bonus is not None else -1
        assert counted.rank(int(heldout[r]), ex, qc) == want_ranks[r]
        assert counted.top(k, ex, qc) == [i for i in want_idx[r].tolist() if i >= 0]


def test_counting_applies_only_to_exact_whole_counts():
    """Counting is used only where adding the category bonus stays exact in float32."""
    assert not OrderRanks.applies(np.array([[1.5], [2.0]], np.float32))
    assert not OrderRanks.applies(np.array([[1.0, 2.0]], np.float32))
    assert not OrderRanks.applies(np.array([[-1.0]], np.float32))
    assert not OrderRanks.applies(np.array([[2.0 ** 24]], np.float32))
    assert OrderRanks.applies(np.zeros((0, 1), np.float32))
