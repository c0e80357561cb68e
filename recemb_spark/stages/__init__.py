"""Every stage of the pipeline, declared once, in the order ``recemb run`` runs them.

A declaration (:class:`~recemb_spark.runner.stage.Stage`) names the stage, says what it reads
and writes, which config sections its outputs depend on, where its ``run(ctx)`` lives and which
key switches it on. The pipeline order, ``--resume``'s comparison, the CLI's commands,
``jobs/stage.py`` and the stage table of ``docs/stages.md`` derive from :data:`STAGES` (a test
checks the docs). Each module of this package wires one stage: it reads its inputs from
``ctx.warehouse``, calls the pure functions, writes its outputs and records into
``ctx.result``. Importing this package imports no Spark.
"""
from __future__ import annotations

from ..runner.stage import Stage

#: the sections every table of a run derives from (where the data comes from, what is liked)
UPSTREAM = ("spark", "warehouse", "input", "sample", "sequences")
#: the sections of the models the evaluation and the neighbour tables score
MODELS = ("item2vec", "graph", "walks", "deepwalk", "als", "users", "side_info", "align")
#: what a model stage reads: the rating and sequence tables without the held-out pairs, item
#: features (side information) and the previous date's vectors (alignment)
MODEL_READS = ("ratings", "sequences", "holdout", "items", "item_embeddings", "user_embeddings")

STAGES: tuple[Stage, ...] = (
    Stage("tables", "input -> ratings, rejects, items, sequences (and the evaluation's holdout)",
          reads=(), writes=("rejects", "ratings", "items", "sequences", "holdout"),
          # evaluate.protocol auto holds out when the blend is on
          config=(*UPSTREAM, "evaluate", "blend.enabled"), module="tables"),
    Stage("item2vec", "sequences -> item2vec item and user embeddings (MLlib Word2Vec)",
          reads=MODEL_READS, writes=("item_embeddings", "user_embeddings"),
          config=(*UPSTREAM, "item2vec", "users", "side_info", "align"), module="embeddings",
          when="item2vec.enabled"),
    Stage("deepwalk",
          "sequences -> item graph -> distributed walks -> DeepWalk/node2vec embeddings",
          reads=MODEL_READS, writes=("item_graph", "walks", "item_embeddings", "user_embeddings"),
          config=(*UPSTREAM, "graph", "walks", "deepwalk", "users", "side_info", "align"),
          module="embeddings", when="deepwalk.enabled"),
    Stage("als", "ratings -> ALS user and item factors, RMSE, user candidates",
          reads=MODEL_READS,
          writes=("item_embeddings", "user_embeddings", "user_candidates", "metrics"),
          config=(*UPSTREAM, "als", "users", "side_info", "align", "ann"),
          module="embeddings", when="als.enabled"),
    Stage("evaluate", "HR@K / NDCG@K / coverage of every enabled model + popularity",
          reads=("ratings", "holdout", "items", "item_embeddings", "user_embeddings"),
          writes=("metrics",), config=(*UPSTREAM, *MODELS, "evaluate"), module="evaluate",
          when="evaluate.enabled"),
    Stage("ann", "item_neighbors and user_candidates per model (exact / ivf / banded LSH), recall",
          reads=("item_embeddings", "user_embeddings", "ratings"),
          writes=("item_neighbors", "user_candidates", "metrics"),
          config=(*UPSTREAM, *MODELS, "evaluate", "ann"), module="ann", when="ann.enabled"),
    Stage("blend", "one candidate list per user merged from every model and popularity channel",
          reads=("ratings", "holdout", "items", "item_embeddings", "user_embeddings",
                 "user_candidates", "item_neighbors", "item_graph"),
          writes=("user_candidates", "metrics"), config=(*UPSTREAM, *MODELS, "evaluate", "ann",
                                                         "blend"),
          module="blend", when="blend.enabled"),
    Stage("daily", "top-k overlap with the previous date, previous date's model on new events",
          reads=("ratings", "item_neighbors", "item_embeddings"), writes=("metrics",),
          config=(*UPSTREAM, "daily"), module="daily", when="daily.enabled"),
    Stage("export", "vectors and neighbour lists -> a new Redis version, then the pointer switch",
          reads=("item_embeddings", "user_embeddings", "item_neighbors", "user_candidates"),
          writes=(), config=(*UPSTREAM, "export"), module="export", when="export.enabled"),
    Stage("retention", "delete dt partitions and manifests older than warehouse.retention_days",
          reads=(), writes=(), config=("warehouse",), module="retention",
          when="warehouse.retention_days"),
)


def stage_named(name: str) -> Stage:
    """The declaration of stage ``name`` (KeyError naming the valid ones)."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def stages_markdown() -> str:
    """The stage table of ``docs/stages.md`` (between its ``<!-- stages -->`` markers)."""
    lines = ["| stage | what it does | reads | writes | runs in `recemb run` when | "
             "config sections |", "| --- | --- | --- | --- | --- | --- |"]
    for s in STAGES:
        reads, writes = ", ".join(s.reads) or "—", ", ".join(s.writes) or "—"
        when = f"`{s.when}`" if s.when else "always"
        lines.append(f"| `{s.name}` | {s.doc} | {reads} | {writes} | {when} | "
                     f"{', '.join(s.config)} |")
    return "\n".join(lines) + "\n"
