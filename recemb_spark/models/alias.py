"""Alias tables for every row of a CSR matrix at once (O(1) sampling of ``P(column | row)``).

Vose's algorithm pairs "small" and "large" entries with a work list, one row and one entry at a
time: in Python that is ~2 s for a million edges. The same table comes out of the *sweep*
construction (Hübschle-Schneider & Sanders, "Parallel weighted random sampling", 2019), which
needs only prefix sums and binary searches, so all rows are built by a few numpy calls.

In a row of ``n`` entries scaled to mean 1 (``w_k = n * p_k``), the light entries (``w < 1``)
in order have deficits ``1 - w`` with running sum ``D``; the heavy ones (``w >= 1``) in order
have excesses ``w - 1`` with running sum ``E``. Sweeping lights and heavies together, the light
filled while ``D`` (before it) lies in ``[E_{j-1}, E_j)`` takes heavy ``j`` as its alias, and
heavy ``j`` turns light once ``D`` reaches ``E_j``: its own share is then ``1 + E_j - D`` and
the next heavy fills the rest. Weights are integers in units of ``2**-30`` so that every sum
is exact and comparisons across rows cannot be disturbed by rounding.
"""
from __future__ import annotations

import numpy as np

UNIT = 1 << 30  # weight resolution 2**-30: far below the float32 accept values' precision


def csr_rows(indptr: np.ndarray) -> np.ndarray:
    """The row (int64) of every entry of the CSR rows ``indptr``."""
    return np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))


def alias_tables(indptr: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(accept float32, alias int32)`` for every entry of the CSR rows ``indptr``/``prob``.

    Row ``r`` samples entry ``k = j if u < accept[lo + j] else alias[lo + j]`` (``j`` uniform
    in the row, ``u`` uniform in [0, 1), ``lo = indptr[r]``); ``alias`` is an offset within the
    row. ``prob`` need not be normalised per row; it must be >= 0 with a positive row sum.
    """
    n_rows = len(indptr) - 1
    deg = np.diff(indptr)
    row = csr_rows(indptr)
    total = np.bincount(row, weights=prob, minlength=n_rows)
    per_unit = deg * float(UNIT) / np.where(total > 0, total, 1.0)
    w = np.floor(np.asarray(prob, np.float64) * per_unit[row]).astype(np.int64)
    # each row's rounding shortfall (< deg units) goes to its first entry: rows sum exactly
    short = deg * UNIT - np.bincount(row, weights=w, minlength=n_rows).astype(np.int64)
    rows = np.flatnonzero(deg > 0)
    w[indptr[rows]] += short[rows]

    light, heavy = np.flatnonzero(w < UNIT), np.flatnonzero(w >= UNIT)
    l_row, h_row = row[light], row[heavy]
    l_count = np.bincount(l_row, minlength=n_rows)
    h_count = np.bincount(h_row, minlength=n_rows)
    l_end, h_end = np.cumsum(l_count), np.cumsum(h_count)  # lights (heavies) of rows <= r
    deficit = UNIT - w[light]
    d_run, e_run = np.cumsum(deficit), np.cumsum(w[heavy] - UNIT)  # across rows: exact ints
    d_base = np.concatenate([[0], d_run])[l_end - l_count]  # running sums before each row
    e_base = np.concatenate([[0], e_run])[h_end - h_count]

    accept = np.full(len(w), UNIT, np.int64)
    alias = np.arange(len(w), dtype=np.int64)
    # light: the first heavy of its row whose running excess exceeds the deficit before it
    before = d_run - deficit - d_base[l_row]
    j = np.searchsorted(e_run, before + e_base[l_row], side="right")
    ok = j < h_end[l_row]
    accept[light] = np.where(ok, w[light], UNIT)
    alias[light] = np.where(ok, heavy[np.minimum(j, max(len(heavy) - 1, 0))], light)
    # heavy: its own share when the running deficit first reaches its running excess
    e_local = e_run - e_base[h_row]
    m = np.searchsorted(d_run, e_local + d_base[h_row], side="left")
    reached = (m < l_end[h_row]) & (e_local > 0)
    d_at = (d_run[np.minimum(m, len(d_run) - 1)] - d_base[h_row]) if len(d_run) else 0
    own = np.where(reached, UNIT + e_local - d_at, UNIT)
    nxt = np.arange(1, len(heavy) + 1)
    has_next = nxt < h_end[h_row]
    accept[heavy] = np.where(has_next, own, UNIT)
    alias[heavy] = np.where(has_next, heavy[np.minimum(nxt, max(len(heavy) - 1, 0))], heavy)
    return (accept / UNIT).astype(np.float32), (alias - indptr[:-1][row]).astype(np.int32)


def alias_probabilities(indptr: np.ndarray, accept: np.ndarray,
                        alias: np.ndarray) -> np.ndarray:
    """The per-entry probabilities an alias table samples (for checking one): entry ``k`` of
    a row of ``n`` gets ``(accept[k] + sum of (1 - accept[j]) over j aliased to k) / n``."""
    deg = np.diff(indptr)
    row = csr_rows(indptr)
    n = np.maximum(deg[row], 1).astype(np.float64)
    out = accept / n
    out += np.bincount(indptr[:-1][row] + alias, weights=(1.0 - accept) / n,
                       minlength=len(accept))
    return out
