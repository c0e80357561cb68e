"""The embedding models the pipeline knows, behind one interface.

A model trains on a rating table and its sequence table and returns item vectors (and, when
it learns them itself, user vectors). The model stages train on the full tables; the
evaluation trains the same models, with the same config, on the leave-last-out split.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from pyspark.sql import DataFrame, SparkSession

from .config import Config
from .word2vec import fit_word2vec, vocabulary_report


@dataclass
class TrainedModel:
    """``item_vectors``: ``(item_id, vector array<float>)``; ``user_vectors`` the same for
    users when the model learns them (else they are pooled from item vectors); ``details``
    counts for the manifest."""

    item_vectors: DataFrame
    user_vectors: Optional[DataFrame] = None
    details: dict[str, Any] = field(default_factory=dict)
    #: other tables the model stage writes, by name, with whether they are per model
    tables: dict[str, tuple[DataFrame, bool]] = field(default_factory=dict)


TrainFn = Callable[[SparkSession, Config, DataFrame, DataFrame], TrainedModel]


@dataclass(frozen=True)
class ModelSpec:
    """``stage``: the stage name; ``model_name(cfg)``: the ``model`` the outputs carry."""

    stage: str
    enabled: Callable[[Config], bool]
    train: TrainFn
    name_for: Optional[Callable[[Config], str]] = None

    def model_name(self, cfg: Config) -> str:
        return self.name_for(cfg) if self.name_for else self.stage


def train_item2vec(spark: SparkSession, cfg: Config, ratings: DataFrame,
                   sequences: DataFrame) -> TrainedModel:
    """Item2vec: MLlib Word2Vec on the sequence table."""
    vectors = fit_word2vec(sequences, cfg.item2vec).persist()
    return TrainedModel(vectors, details=vocabulary_report(sequences, vectors,
                                                           cfg.item2vec.min_count))


def train_deepwalk(spark: SparkSession, cfg: Config, ratings: DataFrame,
                   sequences: DataFrame) -> TrainedModel:
    """DeepWalk / node2vec: item graph -> distributed random walks -> MLlib Word2Vec."""
    from . import deepwalk  # keeps the walk machinery out of item2vec-only imports

    return deepwalk.train(spark, cfg, ratings, sequences)


def model_specs() -> list[ModelSpec]:
    """Every embedding model, in pipeline order."""
    return [
        ModelSpec("item2vec", lambda c: c.item2vec.enabled, train_item2vec),
        ModelSpec("deepwalk", lambda c: c.deepwalk.enabled, train_deepwalk,
                  name_for=lambda c: "node2vec" if c.walks.second_order else "deepwalk"),
    ]


def enabled_models(cfg: Config) -> list[ModelSpec]:
    return [m for m in model_specs() if m.enabled(cfg)]
