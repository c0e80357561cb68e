"""Shared set-up for the benchmarks: a session, a rating table, and the leave-last-out split."""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recemb_spark.config import Config, load_config
from recemb_spark.evaluation.popularity import popularity_segments
from recemb_spark.evaluation.scoring import (
    leave_last_out,
    popularity_vectors,
    score_model,
    segments_for_cases,
)
from recemb_spark.interactions import (
    aggregate_events,
    build_sequences,
    clean_ratings,
    items_from_categories,
)
from recemb_spark.io import readers, sample
from recemb_spark.models.side_info import side_tokens
from recemb_spark.session import build_session


@dataclass
class Prepared:
    spark: SparkSession
    cfg: Config
    name: str
    ratings: DataFrame
    train: DataFrame
    cases: DataFrame
    train_sequences: DataFrame
    catalogue: int
    users: int
    #: side tokens (items file genres or the log's categories) when side_info.enabled
    side: DataFrame | None = None
    #: the tutorial's corpus: liked items only (differs from ``train_sequences`` on rated
    #: input, whose sequences hold every rated item by default: sequences.context_min_rating)
    liked_sequences: DataFrame | None = None
    #: the held-out items' popularity segments (head / tail / cold), as the evaluate stage
    #: computes them: every score splits by them
    segments: DataFrame | None = None
    #: ``(item_id, category)``: each item's first genre / category (None without items)
    categories: DataFrame | None = None


def prepare(input_path: str | None, overrides: list[str] | None = None,
            name: str | None = None) -> Prepared:
    """Load ``input_path`` (None = the built-in sample) and split it once, cached.

    The split is the pipeline's leave-last-out (:func:`leave_last_out` on the rating table);
    an implicit log's training sequences are built from its events without the held-out
    (user, item) pairs, as the tables stage builds them from all events.
    """
    cfg = load_config(overrides=["spark.log_level=ERROR", *(overrides or [])])
    spark = build_session(cfg.spark, "recemb-bench")
    implicit = bool(input_path) and cfg.input.implicit
    if input_path:
        parsed = readers.read_ratings(spark, cfg.input, input_path)
        valid = parsed.valid
        items = (readers.read_items(spark, parsed.items_path, "auto", cfg.input.item_col)
                 if parsed.items_path else
                 items_from_categories(valid) if "category" in valid.columns else None)
        name = name or os.path.basename(input_path.rstrip("/"))
    else:
        valid, items = sample.generate(spark, cfg.sample)
        name = name or "builtin-sample"
    side = side_tokens(items).persist() if items is not None and cfg.side_info.enabled else None
    valid = valid.persist()
    ratings = (aggregate_events(valid, cfg.input.event_signal) if implicit
               else clean_ratings(valid)).persist()
    split = leave_last_out(ratings, cfg.liked_min_rating)
    train, cases = split.train.persist(), split.cases.persist()
    source = train
    if implicit:
        heldout = cases.select("user_id", F.col("heldout").alias("item_id"))
        source = valid.join(heldout, ["user_id", "item_id"], "left_anti")
    seqs = build_sequences(source, cfg.sequences, cfg.context_min_rating).persist()
    liked = (seqs if cfg.context_min_rating == cfg.liked_min_rating else
             build_sequences(source, cfg.sequences, cfg.liked_min_rating).persist())
    catalogue = train.select("item_id").distinct().count()
    ev = cfg.evaluate
    segments = segments_for_cases(cases, popularity_segments(
        train, cfg.liked_min_rating, ev.head_share, ev.cold_max_events)).persist()
    categories = None
    if items is not None:
        categories = (items.select("item_id", F.element_at("genres", 1).alias("category"))
                      .filter(F.col("category").isNotNull()).dropDuplicates(["item_id"])
                      .persist())
    return Prepared(spark, cfg, name, ratings, train, cases, seqs, catalogue, cases.count(),
                    side, liked, segments, categories)


def metrics_dict(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {(r["metric"] + (f"@{r['k']}" if r["k"] else "")): r["value"] for r in rows}


def popularity(p: Prepared, ks: list[int], within_category: bool = False) -> dict[str, float]:
    """Popularity's metrics (with the segment rows); ``within_category``: the items of the
    query item's category first (needs ``p.categories``)."""
    vectors = popularity_vectors(p.train, p.cfg.liked_min_rating)
    mode = "category" if within_category else "constant"
    return metrics_dict(score_model(p.spark, p.cases, vectors, ks, "popularity", p.catalogue,
                                    mode=mode, segments=p.segments,
                                    item_categories=p.categories))


def score_vectors(p: Prepared, vectors: DataFrame, ks: list[int], name: str) -> dict[str, float]:
    return metrics_dict(score_model(p.spark, p.cases, vectors, ks, name, p.catalogue))


def fit_and_score_als(p: Prepared, cfg, checkpoint_dir: str) -> dict[str, Any]:
    """One ALS fit of ``cfg`` (an ``AlsConfig``) on the split's training part, scored as the
    evaluate stage scores ALS: the query item's factor by cosine (with the segment rows) and
    the user's factor by dot product. Returns the fit seconds, the alpha and iterations used
    and HR@10 / NDCG@10 of both queries; unpersists what it cached."""
    from recemb_spark.models import als

    t0 = time.perf_counter()
    fitted = als.fit(p.spark, p.train, cfg, checkpoint_dir)
    user_f, item_f = als.factor_tables(fitted.model, fitted.users, fitted.items)
    item_f, user_f = item_f.persist(), user_f.persist()
    item_f.count()
    seconds = time.perf_counter() - t0
    m = metrics_dict(score_model(p.spark, p.cases, item_f, [10], "als", p.catalogue,
                                 segments=p.segments))
    u = metrics_dict(score_model(p.spark, p.cases, item_f, [10], "als", p.catalogue,
                                 mode="user", user_vectors=user_f, similarity="dot"))
    for df in (item_f, user_f, fitted.users, fitted.items):
        df.unpersist()
    row = {"alpha": fitted.alpha, "iterations": fitted.iterations, "fit_seconds": round(seconds, 2),
           "item_hr@10": m["hr@10"], "item_ndcg@10": m["ndcg@10"],
           "user_hr@10": u["user_hr@10"], "user_ndcg@10": u["user_ndcg@10"]}
    row.update({k: m[k] for k in m if k.startswith("hr_") and k.endswith("@10")})
    return row


def write_json(path: str, payload: dict[str, Any]) -> None:
    payload = dict(payload, machine={"cores": os.cpu_count(), "python": platform.python_version(),
                                     "platform": platform.platform()},
                   written_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    print(f"wrote {path}")


def mllib_item2vec(p: Prepared, params: dict[str, Any], seeds: int) -> dict[str, float]:
    """MLlib Word2Vec on the split's training sequences with ``params`` over the item2vec
    config, once per seed (42, 43, ...): mean train seconds, HR@10, NDCG@10 and misses."""
    from recemb_spark.models.word2vec import fit_word2vec

    runs = []
    for seed in range(seeds):
        w2v = p.cfg.replace("item2vec", seed=42 + seed, **params).item2vec
        t0 = time.perf_counter()
        vectors = fit_word2vec(p.train_sequences, w2v).persist()
        vectors.count()
        seconds = time.perf_counter() - t0
        m = score_vectors(p, vectors, [10], "item2vec")
        vectors.unpersist()
        runs.append({"seconds": seconds, "hr@10": m["hr@10"], "ndcg@10": m["ndcg@10"],
                     "misses": m["query_missing"] + m["heldout_missing"]})
    return {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
