"""Banded LSH in numpy: band keys from random projections, hot-bucket chunks, bucket scoring.

The hash family is ``BucketedRandomProjectionLSH``'s: ``h_j(x) = floor(x . r_j / w)`` for
random unit vectors ``r_j`` (taken from a fitted Spark model, see
:func:`recemb_spark.neighbors.nearest.brp_projections`). ``k x L`` functions form ``L`` bands
of ``k``: a band key combines its ``k`` hashes (AND), and a query is scored against the items
that share its key in any band (OR). Buckets with more than ``cap`` items are cut into random
chunks of at most ``cap``; an item query is scored against its own chunk, any other query
against one chunk picked by a hash.

Everything is vectorised over buckets: buckets of similar size are padded to the same shape and
scored with one batched matrix multiply, so millions of tiny buckets cost no Python loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .topk import first_of, merge_candidates, run_positions

_MIX = np.uint64(0x9E3779B97F4A7C15)
# scores per batched multiply (batch x queries x items), ~32 MB of float32
BATCH_CELLS = 8_000_000
# vectors gathered per batched multiply (queries + items), ~32 MB at dim 32
GATHER_ROWS = 262_144
# a score must beat the k-th best by this much to enter (the same pair scored in another
# band can differ in the last bits: it must not count as new)
SCORE_EPS = np.float32(1e-5)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a well-spread uint64 per input."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def combine(h: np.ndarray, bands: int, k: int) -> np.ndarray:
    """Band keys from integer hashes ``h`` (``(..., >= bands*k)``): band ``b`` combines
    columns ``b*k .. b*k+k-1`` into one uint64 (``(..., bands)``). Different hash tuples collide
    only by 64-bit accident (which adds candidates, never loses them)."""
    lead = h.shape[:-1]
    with np.errstate(over="ignore"):
        hh = h[..., :bands * k].astype(np.int64).astype(np.uint64).reshape(*lead, bands, k)
        key = np.broadcast_to(np.arange(bands, dtype=np.uint64), (*lead, bands)).copy()
        for j in range(k):
            key = _mix(key * _MIX + hh[..., j])
    return key


def band_keys(x: np.ndarray, proj: np.ndarray, bucket_length: float, bands: int) -> np.ndarray:
    """``(n, bands)`` uint64 band keys of the rows of ``x``: band ``b`` combines the hashes
    ``floor(x . r_j / w)`` of projections ``j = b*k .. b*k+k-1`` (``proj``: ``(k*bands, dim)``)."""
    h = np.floor((x @ proj.T.astype(np.float32)) / np.float32(bucket_length))
    return combine(h, bands, len(proj) // bands)


@dataclass(frozen=True)
class BandLayout:
    """How the hash functions are used: ``bands`` bands of ``hashes_per_band`` functions with
    bucket width ``bucket_length``; the estimates come from :func:`tune_layout`."""

    hashes_per_band: int
    bands: int
    bucket_length: float
    est_recall: float = float("nan")
    est_pairs_per_query: float = float("nan")


# tune_layout's search space; MAX_HASHES projections cover every (k, L) in it
TUNE_HASHES = (2, 3, 4, 5, 6, 8)
TUNE_BANDS = (8, 12, 16, 24, 32)
TUNE_SCALES = (0.4, 0.6, 0.8, 1.0, 1.4, 2.0, 2.8)
MAX_HASHES = max(TUNE_HASHES) * max(TUNE_BANDS)
# items sampled for tune_layout's candidate-pair estimates
TUNE_ITEM_SAMPLE = 20_000


# the cost of banded LSH, fitted on bench/ann.py (core-seconds): per item and band (hashing,
# grouping, merging) and per scored candidate pair
BAND_ITEM_SECONDS = 5.5e-6
PAIR_SECONDS = 33e-9
# one scored candidate pair in units of one band's per-item overhead
PAIR_COST = PAIR_SECONDS / BAND_ITEM_SECONDS


def lsh_core_seconds(layout: BandLayout, n_queries: int) -> float:
    """Estimated core-seconds of banded LSH with ``layout`` for ``n_queries`` queries."""
    per_query = layout.bands * BAND_ITEM_SECONDS + layout.est_pairs_per_query * PAIR_SECONDS
    return n_queries * per_query


def tune_layout(sample: np.ndarray, n_items: int, q: np.ndarray, truth: np.ndarray,
                valid: np.ndarray, proj: np.ndarray, target: float,
                max_pairs: float = np.inf) -> BandLayout:
    """The cheapest band layout whose estimated recall reaches ``target`` (else the one with
    the highest estimate), among the layouts estimated to score at most ``max_pairs`` items
    per query (when none is, the one with the fewest).

    ``sample``: a uniform sample of the ``n_items`` item vectors (the pair estimates are
    scaled up by ``n_items / len(sample)``); ``q``: sample queries; ``truth``: the vectors of
    their exact top-k items (``(n_q, k, dim)``), ``valid`` (``(n_q, k)``) false where a query
    has fewer; ``proj``: at least :data:`MAX_HASHES` projections (a layout uses the first
    ``k x L``). For every (k, L, width) it computes, with the very hash functions the run will
    use, which true neighbours share a band key with their query (the candidate recall:
    scoring is exact, so this is the recall) and how many items share the query's keys
    (candidate pairs, from the item sample); cost = L + PAIR_COST x pairs per query. Needs
    only the samples: nothing proportional to the catalogue.
    """
    dim = q.shape[1]
    up = n_items / max(len(sample), 1)
    p_q, p_t, p_s = (m.astype(np.float32) @ proj.T.astype(np.float32)
                     for m in (q, truth, sample))
    best, best_cost, fallback, cheapest = None, np.inf, None, None
    for scale in TUNE_SCALES:
        w = np.float32(scale / np.sqrt(dim))
        h_q, h_t, h_s = (np.floor(p / w) for p in (p_q, p_t, p_s))
        for k in TUNE_HASHES:
            top = min(max(TUNE_BANDS), len(proj) // k)
            k_q, k_t, k_s = (combine(h, top, k) for h in (h_q, h_t, h_s))
            hit = np.logical_or.accumulate(k_t == k_q[:, None, :], axis=2)   # (n_q, k, bands)
            recall = (hit & valid[:, :, None]).sum(axis=(0, 1)) / max(valid.sum(), 1)
            sizes = np.empty(k_q.shape)
            for b in range(top):
                col = np.sort(k_s[:, b])
                sizes[:, b] = (np.searchsorted(col, k_q[:, b], "right")
                               - np.searchsorted(col, k_q[:, b], "left"))
            pairs = np.cumsum(sizes, axis=1).mean(axis=0) * up                # per query
            for bands in TUNE_BANDS:
                if bands > top:
                    continue
                layout = BandLayout(k, bands, float(w), float(recall[bands - 1]),
                                    float(pairs[bands - 1]))
                if cheapest is None or layout.est_pairs_per_query < cheapest.est_pairs_per_query:
                    cheapest = layout
                if layout.est_pairs_per_query > max_pairs:
                    continue
                cost = bands + PAIR_COST * layout.est_pairs_per_query
                if layout.est_recall >= target and cost < best_cost:
                    best, best_cost = layout, cost
                if fallback is None or layout.est_recall > fallback.est_recall:
                    fallback = layout
    assert cheapest is not None  # the search space is never empty
    return best or fallback or cheapest


@dataclass
class Buckets:
    """One band's items grouped by (key, chunk): ``order`` lists item indexes bucket by
    bucket; bucket ``b`` is ``order[start[b]:start[b]+count[b]]``; ``keys`` (sorted) are the
    chunked keys. ``item_bucket[i]`` is the bucket of item ``i``."""

    keys: np.ndarray
    start: np.ndarray
    count: np.ndarray
    order: np.ndarray
    item_bucket: np.ndarray
    split: int = 0          # buckets over the cap (cut into chunks)
    largest: int = 0        # items in the largest bucket before chunking
    chunks: dict[np.uint64, int] = field(default_factory=dict)


def group_items(keys: np.ndarray, cap: int, rng: np.random.Generator) -> Buckets:
    """Group items by band key; a bucket of more than ``cap`` items is cut into random chunks
    of at most ``cap`` (the chunk becomes part of the key)."""
    n = len(keys)
    perm = rng.permutation(n)
    order = perm[np.argsort(keys[perm], kind="stable")]  # by key, random within a key
    sk = keys[order]
    first = first0 = first_of(sk)
    sizes = np.diff(np.append(first0, n))
    pos = np.arange(n) - np.repeat(first0, sizes)
    chunk = (pos // cap).astype(np.uint64)
    big = sizes > cap
    chunked = np.where(chunk > 0, _mix(sk ^ _mix(chunk)), sk)
    # chunked keys are no longer sorted: regroup (cheap, only when something was split)
    if big.any():
        o2 = np.argsort(chunked, kind="stable")
        order, chunked = order[o2], chunked[o2]
        first = first_of(chunked)
    count = np.diff(np.append(first, n))
    item_bucket = np.empty(n, np.int64)
    item_bucket[order] = np.repeat(np.arange(len(first)), count)
    # chunks per original key, for queries that are not items
    chunks = dict(zip(sk[first0][big].tolist(), ((sizes[big] + cap - 1) // cap).tolist(),
                      strict=True))
    return Buckets(chunked[first], first, count, order, item_bucket, int(big.sum()),
                   int(sizes.max(initial=0)), chunks)


def query_buckets(keys: np.ndarray, buckets: Buckets, self_idx: np.ndarray, salt: np.ndarray,
                  band: int) -> np.ndarray:
    """The bucket of each query (-1 when no item shares its key): an item query (``self_idx``
    >= 0) goes to its own bucket; another query in a split key to one chunk chosen by a hash
    of (its ``salt``, band) — the same whichever task or position the query has."""
    keys = keys.copy()
    other = np.flatnonzero(self_idx < 0)
    if buckets.chunks and len(other):
        n_chunks = np.array([buckets.chunks.get(k, 1) for k in keys[other].tolist()], np.uint64)
        chunk = _mix(salt[other].astype(np.uint64) ^ np.uint64(band)) % n_chunks
        keys[other] = np.where(chunk > 0, _mix(keys[other] ^ _mix(chunk)), keys[other])
    pos = np.searchsorted(buckets.keys, keys)
    pos = np.minimum(pos, max(len(buckets.keys) - 1, 0))
    found = (buckets.keys[pos] == keys) if len(buckets.keys) else np.zeros(len(keys), bool)
    out = np.where(found, pos, -1)
    mine = self_idx >= 0
    out[mine] = buckets.item_bucket[self_idx[mine]]
    return out


def _pow2(x: np.ndarray) -> np.ndarray:
    return (1 << np.ceil(np.log2(np.maximum(x, 1))).astype(np.int64)).astype(np.int64)


def score_band(q: np.ndarray, x: np.ndarray, qb: np.ndarray, buckets: Buckets, k: int,
               ex_q: np.ndarray, ex_i: np.ndarray, thr: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Score every query against the items of its bucket: ``(query, item, score)`` candidates
    and the number of (query, item) scores computed. A query keeps the items scoring at least
    its threshold ``thr`` (its k-th best so far; -inf: its best ``k`` here). ``(ex_q, ex_i)``:
    pairs never returned.

    Buckets are batched by padded shape (queries, items rounded up to powers of two), so one
    ``matmul`` scores thousands of small buckets at once; selection is a comparison with the
    threshold, or a partial sort where most queries have none yet.
    """
    has = np.flatnonzero(qb >= 0)
    if len(has) == 0:
        return has, has, np.zeros(0, np.float32), 0
    qs = has[np.argsort(qb[has], kind="stable")]          # queries, bucket by bucket
    starts = first_of(qb[qs])
    bids = qb[qs][starts]                                 # one group per bucket with queries
    mq = np.diff(np.append(starts, len(qs)))
    mi = buckets.count[bids]
    group_of_q = np.repeat(np.arange(len(bids)), mq)      # per position in qs
    q_pos = np.arange(len(qs)) - np.repeat(starts, mq)
    q_rank = np.full(len(q), -1, np.int64)
    q_rank[qs] = np.arange(len(qs))
    i_pos = np.empty(len(x), np.int64)
    i_pos[buckets.order] = np.arange(len(x)) - np.repeat(buckets.start, buckets.count)
    inside = (qb[ex_q] >= 0) & (qb[ex_q] == buckets.item_bucket[ex_i])
    ex_r, ex_i = q_rank[ex_q[inside]], ex_i[inside]       # exclusions, as positions in qs
    pq, pi = _pow2(mq), _pow2(mi)
    shape_of = pq * (1 << 32) + pi
    out_q, out_i, out_v = [], [], []
    for shape in np.unique(shape_of).tolist():
        a, b = shape >> 32, shape & 0xFFFFFFFF
        groups = np.flatnonzero(shape_of == shape)        # increasing bucket order
        slot = np.full(len(bids), -1, np.int64)
        slot[groups] = np.arange(len(groups))
        q_sel = np.flatnonzero(slot[group_of_q] >= 0)     # positions in qs, slots ascending
        q_slot = slot[group_of_q[q_sel]]
        e_slot = slot[group_of_q[ex_r]]
        e_sel = np.flatnonzero(e_slot >= 0)
        e_sel = e_sel[np.argsort(e_slot[e_sel], kind="stable")]
        e_slot = e_slot[e_sel]
        step = max(1, min(BATCH_CELLS // (a * b), GATHER_ROWS // (a + b)))
        for g0 in range(0, len(groups), step):
            gs = groups[g0:g0 + step]
            lo, hi = np.searchsorted(q_slot, [g0, g0 + len(gs)])
            sel = q_sel[lo:hi]
            qidx = np.full((len(gs), a), -1, np.int64)
            qidx[q_slot[lo:hi] - g0, q_pos[sel]] = qs[sel]
            cnt = buckets.count[bids[gs]]
            rep = np.repeat(np.arange(len(gs)), cnt)
            within = run_positions(cnt)
            iidx = np.full((len(gs), b), -1, np.int64)
            iidx[rep, within] = buckets.order[np.repeat(buckets.start[bids[gs]], cnt) + within]
            s = np.matmul(q[np.maximum(qidx, 0)], x[np.maximum(iidx, 0)].transpose(0, 2, 1))
            s[np.broadcast_to((iidx < 0)[:, None, :], s.shape)] = -np.inf
            elo, ehi = np.searchsorted(e_slot, [g0, g0 + len(gs)])
            if ehi > elo:
                ee = e_sel[elo:ehi]
                s[e_slot[elo:ehi] - g0, q_pos[ex_r[ee]], i_pos[ex_i[ee]]] = -np.inf
            t = np.where(qidx >= 0, thr[np.maximum(qidx, 0)], np.inf)
            if b > k and np.isneginf(t).mean() > 0.5:  # mostly no threshold yet: best k
                part = np.argpartition(s, b - k, axis=2)[:, :, b - k:]
                vals = np.take_along_axis(s, part, axis=2)
                cols = np.take_along_axis(np.broadcast_to(iidx[:, None, :], s.shape), part, 2)
                ok = (vals >= t[:, :, None]) & np.isfinite(vals)
                g, r, _ = np.nonzero(ok)
                out_q.append(qidx[g, r])
                out_i.append(cols[ok])
                out_v.append(vals[ok])
            else:
                flat = np.flatnonzero(s > t[:, :, None] + SCORE_EPS)
                g, rest = np.divmod(flat, a * b)
                r, c = np.divmod(rest, b)
                v = s.ravel()[flat]
                fin = np.isfinite(v)
                out_q.append(qidx[g[fin], r[fin]])
                out_i.append(iidx[g[fin], c[fin]])
                out_v.append(v[fin])
    pairs = int((mq * mi).sum())
    return (np.concatenate(out_q), np.concatenate(out_i),
            np.concatenate(out_v).astype(np.float32), pairs)


def score_groups(q: np.ndarray, q_group: np.ndarray, x: np.ndarray, x_group: np.ndarray,
                 k: int, ex_q: np.ndarray, ex_i: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The best ``k`` items of its own group for every query: ``(query row, item row, score)``
    candidates and the number of (query, item) scores computed.

    ``x_group``: the group of each item row, non-decreasing (items arrive grouped);
    ``q_group``: the group of each query (any order; a group without items gives nothing).
    ``(ex_q, ex_i)``: pairs never returned. This is :func:`score_band` with the groups as
    the buckets, for rows that a keyed shuffle brought together already grouped."""
    first = first_of(x_group)
    count = np.diff(np.append(first, len(x_group)))
    gids = x_group[first]
    pos = np.searchsorted(gids, q_group)
    pos = np.minimum(pos, max(len(gids) - 1, 0))
    found = (gids[pos] == q_group) if len(gids) else np.zeros(len(q_group), bool)
    qb = np.where(found, pos, -1)
    buckets = Buckets(gids.astype(np.uint64), first, count, np.arange(len(x_group)),
                      np.repeat(np.arange(len(first)), count))
    thr = np.full(len(q), -np.inf, np.float32)
    return score_band(q, x, qb, buckets, k, np.asarray(ex_q, np.int64),
                      np.asarray(ex_i, np.int64), thr)


@dataclass
class BandedResult:
    idx: np.ndarray      # (n_queries, k) item indexes, -1 padded, best first
    score: np.ndarray    # (n_queries, k) float32, -inf padded
    pairs: int           # (query, item) scores computed over all bands
    split: int           # buckets over the cap, summed over bands
    largest: int         # the largest bucket of any band, before chunking


def banded_top_k(q: np.ndarray, x: np.ndarray, proj: np.ndarray, bucket_length: float,
                 bands: int, k: int, cap: int, seed: int, self_idx: np.ndarray,
                 exclude: tuple[np.ndarray, np.ndarray],
                 salt: np.ndarray | None = None) -> BandedResult:
    """Banded-LSH top-``k`` items of ``x`` for every row of ``q`` (both unit-length float32).

    ``self_idx[r]``: the item index of query ``r`` when queries are items (it is excluded and
    it decides the chunk), else -1. ``exclude``: ``(query row, item index)`` pairs never
    returned. ``salt``: a stable per-query number (a hash of its id) that picks the chunk of a
    split bucket for queries that are not items. Items' buckets depend only on ``(x, proj,
    seed)``, so every task that holds the same items builds the same buckets."""
    n = len(q)
    best_i = np.full((n, k), -1, np.int64)
    best_v = np.full((n, k), -np.inf, np.float32)
    ex_q = np.concatenate([np.asarray(exclude[0], np.int64), np.flatnonzero(self_idx >= 0)])
    ex_i = np.concatenate([np.asarray(exclude[1], np.int64), self_idx[self_idx >= 0]])
    salt = np.zeros(n, np.uint64) if salt is None else salt
    item_keys = band_keys(x, proj, bucket_length, bands)
    query_keys = band_keys(q, proj, bucket_length, bands)
    pairs = split = largest = 0
    for band in range(bands):
        buckets = group_items(item_keys[:, band], cap, np.random.default_rng([seed, band]))
        qb = query_buckets(query_keys[:, band], buckets, self_idx, salt, band)
        rows, idx, score, p = score_band(q, x, qb, buckets, k, ex_q, ex_i, best_v[:, k - 1])
        pairs += p
        split += buckets.split
        largest = max(largest, buckets.largest)
        merge_candidates(best_i, best_v, rows, idx, score)
    return BandedResult(best_i, best_v, pairs, split, largest)
