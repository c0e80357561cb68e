"""Stage ``evaluate``: leave-last-out HR/NDCG/coverage for every enabled model + popularity."""
from __future__ import annotations

import logging
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from ..config import Config
from ..evaluation import format_metrics, leave_last_out, popularity_vectors, score_model
from ..io.warehouse import Warehouse
from ..models.registry import enabled_models, user_vectors
from ..stage import StageResult, metrics_frame
from ..tables import build_sequences

log = logging.getLogger(__name__)


def run(spark: SparkSession, cfg: Config, run_date: str) -> StageResult:
    """Split once, train every enabled model on the split, score all on the same cases."""
    wh = Warehouse(spark, cfg.warehouse.path)
    ks = cfg.evaluate.ks
    res = StageResult(inputs={"ratings": wh.partition_path("ratings", run_date)})
    ratings = wh.read("ratings", run_date, needed_by="evaluate")
    with res.timed("split"):
        split = leave_last_out(ratings, cfg.sequences.min_rating)
        train = split.train.persist()
        cases = split.cases.persist()
        train_sequences = build_sequences(train, cfg.sequences).persist()
        catalogue = train.select("item_id").distinct().count()
        res.details.update(eligible_users=cases.count(), catalogue=catalogue,
                           train_ratings=train.count())
    with res.timed("popularity"):
        res.metrics += score_model(spark, cases, popularity_vectors(train,
                                                                    cfg.sequences.min_rating),
                                   ks, "popularity", catalogue, mode="constant")
    histories = cases.select("user_id", F.col("history").alias("items"))
    for spec in enabled_models(cfg):
        name = spec.model_name(cfg)
        t0 = time.perf_counter()
        trained = spec.train(spark, cfg, train, train_sequences)
        items = trained.item_vectors.persist()
        n_vectors = items.count()
        res.timings[f"train_{name}"] = round(time.perf_counter() - t0, 3)
        with res.timed(f"score_{name}"):
            res.metrics += score_model(spark, cases, items, ks, name, catalogue)
            if cfg.evaluate.user_query:
                users = user_vectors(trained, histories, items, cfg)
                res.metrics += score_model(spark, cases, items, ks, name, catalogue,
                                           mode="user", user_vectors=users,
                                           similarity=trained.user_similarity)
        res.details[f"{name}_vectors"] = n_vectors
        items.unpersist()
    res.rows["metrics"] = wh.write(metrics_frame(spark, res.metrics), "metrics", run_date,
                                   stage="evaluate")
    for df in (train_sequences, cases, train):
        df.unpersist()
    log.info("evaluation (leave-last-out, %d users):\n%s", res.details["eligible_users"],
             format_metrics(res.metrics, ks))
    return res
