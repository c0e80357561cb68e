"""The embedding models the pipeline knows, behind one interface.

A model trains on a rating table and its sequence table and returns item vectors (and, when
it learns them itself, user vectors). The model stages train on the tables without the
evaluation's held-out pairs; with ``evaluate.protocol: retrain`` the evaluation trains the
same models, with the same config, on its own leave-last-out split.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..config import Config, Word2VecConfig
from ..interactions import rated_items
from ..io.warehouse import checkpoint_dir
from ..neighbors.blocks import broadcast_limit
from ..stages import stage_named
from .side_info import interleave_side_tokens, mark_once, split_vectors, with_cold_items
from .tune import tune_word2vec
from .users import pool_user_vectors
from .word2vec import train_word2vec


@dataclass
class TrainedModel:
    """``item_vectors``: ``(item_id, vector array<float>)``; ``user_vectors`` the same for
    users when the model learns them (else they are pooled from item vectors); ``details``
    counts for the manifest."""

    item_vectors: DataFrame
    user_vectors: DataFrame | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: other tables the model stage writes, by name, with whether they are per model
    tables: dict[str, tuple[DataFrame, bool]] = field(default_factory=dict)
    #: how user vectors score items: cosine (pooled vectors) or dot (learned factors)
    user_similarity: str = "cosine"
    #: metric rows (model, metric, k, value) the model measured itself (e.g. ALS RMSE)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    #: further frames the trainer cached that the tables above are computed from (walks,
    #: id indexes): released with the rest by :meth:`release` once the stage wrote them
    cached: list[DataFrame] = field(default_factory=list)

    def release(self) -> None:
        """Unpersist every frame this model holds: a run's later stages (and a bench that
        trains again in the same session) get the memory back."""
        frames = [self.item_vectors, self.user_vectors, *self.cached,
                  *(df for df, _ in self.tables.values())]
        for df in frames:
            if df is not None:
                df.unpersist()


#: ``train(spark, cfg, ratings, sequences, side=None)``; ``side`` is the side-token table
#: (:func:`.side_info.side_tokens`) when side information is on (ALS ignores it)
TrainFn = Callable[..., TrainedModel]


@dataclass(frozen=True)
class ModelSpec:
    """``stage``: the stage that trains it (declared in :data:`recemb_spark.stages.STAGES`,
    which also says when it is enabled); ``model_name(cfg)``: the ``model`` the outputs
    carry."""

    stage: str
    train: TrainFn
    name_for: Callable[[Config], str] | None = None
    #: work only the model's own stage does (not the evaluation): gets the trained model, the
    #: rating table and the users' full histories; returns a TrainedModel of extra tables,
    #: metrics and details to merge
    stage_extras: Callable[..., TrainedModel] | None = None
    #: how the stored user vectors score items (the train-once evaluation reads them back):
    #: cosine (pooled vectors) or dot (learned factors); the same as TrainedModel's
    user_similarity: str = "cosine"

    def model_name(self, cfg: Config) -> str:
        return self.name_for(cfg) if self.name_for else self.stage


def train_item2vec(spark: SparkSession, cfg: Config, ratings: DataFrame,
                   sequences: DataFrame, side: DataFrame | None = None) -> TrainedModel:
    """Item2vec: MLlib Word2Vec on the sequence table (auto settings resolved for the corpus,
    frequent tokens subsampled; the manifest details record both). With ``side``
    (``(item_id, side array<string>)``, see :mod:`.side_info`) side tokens are interleaved and
    items without a learned vector get one from their side tokens."""
    w2v: Word2VecConfig = cfg.item2vec
    sample: float = cfg.item2vec.sample
    tuned: dict[str, Any] = {}
    if cfg.item2vec.tune:
        w2v, sample, tuned = tune_word2vec(spark, lambda s: s, sequences, w2v, sample,
                                           cfg.item2vec.tune_seconds, train_word2vec)
    if side is None:
        vectors, details = train_word2vec(sequences, w2v, sample, section="item2vec")
        return TrainedModel(vectors, details={**details, **tuned})
    side_marked = mark_once(side, sequences, cfg.side_info.once_from).persist()
    sentences = interleave_side_tokens(
        sequences.select("items"), side_marked, cfg.side_info.sample, w2v.seed,
        broadcast_limit=broadcast_limit(spark, cfg.ann.broadcast_max_mb)).persist()
    vectors, details = train_word2vec(sentences, w2v, sample, section="item2vec")
    side_marked.unpersist()
    items, side_vectors = split_vectors(vectors)
    marked, counts = with_cold_items(items, side_vectors, side)
    sentences.unpersist()
    return TrainedModel(marked.persist(), details={**details, **counts, **tuned})


def train_deepwalk(spark: SparkSession, cfg: Config, ratings: DataFrame,
                   sequences: DataFrame, side: DataFrame | None = None) -> TrainedModel:
    """DeepWalk / node2vec: item graph -> distributed random walks -> MLlib Word2Vec."""
    from . import deepwalk  # keeps the walk machinery out of item2vec-only imports

    vectors, details, tables, cached = deepwalk.train(spark, cfg, ratings, sequences, side)
    return TrainedModel(vectors, details=details, tables=tables, cached=cached)


def user_vectors(trained: TrainedModel, histories: DataFrame, items: DataFrame,
                 cfg: Config, path: str | None = None) -> DataFrame:
    """The model's own user vectors, or ``histories (user_id, items)`` pooled over ``items``
    as ``cfg.users`` says (``path``: see :func:`~recemb_spark.models.users.pool_user_vectors`;
    None = chosen by ``ann.broadcast_max_mb``)."""
    if trained.user_vectors is not None:
        return trained.user_vectors
    return pool_user_vectors(histories, items, cfg.users.pooling, cfg.users.half_life, path,
                             cfg.ann.broadcast_max_mb)


def train_als(spark: SparkSession, cfg: Config, ratings: DataFrame,
              sequences: DataFrame, side: DataFrame | None = None) -> TrainedModel:
    """ALS factors on the rating table (user factors are the user vectors, scored by dot)."""
    from . import als, blas

    fitted = als.fit(spark, ratings, cfg.als, checkpoint_dir(cfg.warehouse.path, "als"))
    users, items = fitted.users, fitted.items
    user_vectors, item_vectors = als.factor_tables(fitted.model, users, items)
    details = {"users": users.count(), "items": items.count(),
               "implicit_prefs": cfg.als.implicit_prefs, "blas": blas.implementation(spark),
               "iterations": fitted.iterations}
    if cfg.als.implicit_prefs:
        details["alpha"] = fitted.alpha  # auto: already rounded to 4 significant digits
    return TrainedModel(item_vectors.persist(), user_vectors.persist(), details=details,
                        user_similarity="dot", cached=[users, items])


def als_stage_extras(spark: SparkSession, cfg: Config, ratings: DataFrame,
                     trained: TrainedModel) -> TrainedModel:
    """RMSE on a held-out share (explicit mode) and top-K unseen items per user by dot."""
    from ..metrics import metric_row
    from . import als

    extra = TrainedModel(trained.item_vectors)
    if not cfg.als.implicit_prefs:
        report = als.rmse_report(spark, ratings, cfg.als,
                                 checkpoint_dir(cfg.warehouse.path, "als"))
        extra.details.update(report)
        extra.metrics += [metric_row("als", "rmse", 0, report["rmse"]),
                          metric_row("global_mean", "rmse", 0, report["rmse_global_mean"])]
    if cfg.als.candidates_k:
        assert trained.user_vectors is not None  # ALS learns its user vectors
        seen = rated_items(ratings)
        cands, details = als_candidates(spark, cfg, trained.user_vectors, trained.item_vectors,
                                        seen)
        extra.details.update(details)
        extra.tables["user_candidates"] = (cands.withColumn("method", F.lit("als")), True)
    return extra


def als_candidates(spark: SparkSession, cfg: Config, users: DataFrame, items: DataFrame,
                   seen: DataFrame) -> tuple[DataFrame, dict[str, Any]]:
    """ALS's top ``als.candidates_k`` unseen items per user by dot product, and the manifest
    details. Exact either way: with ``ann.method`` exact, or up to
    ``ann.auto_exact_max_items`` items, on the path
    :func:`~recemb_spark.neighbors.exact.exact_path` picks; otherwise pruned by the norm
    bound (:func:`~recemb_spark.neighbors.normbound.norm_top_k`: at a million users and 3M
    items the plain search would score 3e12 pairs; with the items broadcast below the
    broadcast threshold), with the share of the pairs it scored and its recall against the
    plain search on ``ann.recall_sample`` users."""
    from ..neighbors import blocks
    from ..neighbors import nearest as ann
    from ..neighbors.exact import exact_path, user_candidates, user_queries
    from ..neighbors.normbound import norm_top_k

    a, k = cfg.ann, cfg.als.candidates_k
    n_items, dim = blocks.table_shape(items)
    if a.method != "exact" and n_items > a.auto_exact_max_items:
        limit = blocks.broadcast_limit(spark, a.broadcast_max_mb)
        broadcast = blocks.choose_path(n_items, dim, None, limit, k=k) == "broadcast"
        out, info = norm_top_k(spark, user_queries(users, seen), items, k, broadcast=broadcast)
        cands, info = ann.materialise(out.withColumnRenamed("query_id", "user_id"), info)
        asked = ann.sample_ids(users, "user_id", a.recall_sample, a.seed)
        # the sample's histories only: the semi-join goes below the grouping of the ratings
        truth = user_candidates(spark, users.join(asked, "user_id"), items,
                                seen.join(asked, "user_id", "left_semi"), k, "dot")
        details = {f"candidates_{key}": value for key, value in info.items()
                   if isinstance(value, (int, float, str, list))}
        details.update(candidates_method="norm_bound",
                       candidates_recall=ann.recall_at_k(cands, truth, "user_id", "item_id"))
        return cands, details
    path = exact_path(spark, user_queries(users, seen), items, a.broadcast_max_mb, k)
    return (user_candidates(spark, users, items, seen, k, "dot", path),
            {"candidates_method": "exact", "candidates_path": path})


def model_specs() -> list[ModelSpec]:
    """Every embedding model, in pipeline order."""
    return [
        ModelSpec("item2vec", train_item2vec),
        ModelSpec("deepwalk", train_deepwalk,
                  name_for=lambda c: "node2vec" if c.walks.second_order else "deepwalk"),
        ModelSpec("als", train_als, stage_extras=als_stage_extras, user_similarity="dot"),
    ]


def model_spec(stage: str) -> ModelSpec:
    """The model trained by stage ``stage``."""
    (spec,) = [m for m in model_specs() if m.stage == stage]
    return spec


def enabled_models(cfg: Config) -> list[ModelSpec]:
    """The models whose stage ``recemb run`` runs under ``cfg``, in pipeline order."""
    return [m for m in model_specs() if stage_named(m.stage).enabled(cfg)]
