"""The configuration's sections: every setting declared once (:func:`.declare.setting`),
with the checks across keys (``cross_check``) and across sections (:meth:`Config.validate`)."""
from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, fields
from typing import Any

from ..errors import ConfigError
from .declare import (
    Override,
    Setting,
    _check,
    check_value,
    coerce_value,
    override,
    section,
    setting,
)


@dataclass(frozen=True)
class SparkConfig:
    """The Spark session."""

    master: str | None = setting(
        None,
        "master when NOT started by spark-submit (null = local[*]); spark-submit's --master "
        "always wins",
        run_control=True,
    )
    driver_memory: str = setting(
        "4g",
        "driver heap when started directly (local mode); under spark-submit use --driver-memory",
        run_control=True,
    )
    shuffle_partitions: int = setting(
        0,
        "spark.sql.shuffle.partitions; 0 = 2 x cores in local mode, Spark's setting under "
        "spark-submit",
        ge=0,
    )
    log_level: str = setting(
        "WARN",
        "Spark's own log level (ours is INFO)",
        choices=("ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"), run_control=True,
    )
    blas_threads: int = setting(
        0,
        "> 0: OPENBLAS_NUM_THREADS of the executors and (local mode) the driver JVM, for where "
        "a native BLAS is installed (one thread per task instead of oversubscribing the cores);"
        " 0 = leave the environment as is (the default: a local run's numpy in the Python "
        "workers uses both cores, and evaluate + ann at 25M took 347 s with 1 against ~250 s). "
        "Native BLAS (e.g. libopenblas0-pthread) speeds ALS 1.45x but slows MLlib Word2Vec "
        "2.5x, so we do not install it (a run warns when it is there; "
        "bench/results/word2vec_blas.json)",
        ge=0, run_control=True,
    )


@dataclass(frozen=True)
class WarehouseConfig:
    """Where the tables go, how long they stay, the run lock."""

    path: str = setting(
        "./warehouse",
        "root of the output tables: <path>/<table>/dt=<run-date>/ (any Hadoop path: hdfs://, "
        "s3a://)",
        min_len=1,
    )
    retention_days: int = setting(
        0,
        "after a successful `recemb run`: delete dt partitions (every table) and manifests "
        "older than this many days before the run date; 0 = keep all",
        ge=0, run_control=True,
    )
    lock_max_age_hours: float = setting(
        24.0,
        "a run's lock (_manifests/dt=<date>/run.lock) older than this is stale and taken over "
        "(also when its process is gone)",
        gt=0, run_control=True,
    )


@dataclass(frozen=True)
class InputConfig:
    """The rating or event log to read (and its item metadata)."""

    path: str | None = setting(
        None,
        "ratings file or folder; null = the built-in synthetic sample"
    )
    format: str = setting(
        "auto",
        "auto | csv (header) | dat (ml-1m '::') | tsv (ml-100k u.data) | parquet | table "
        "(Spark/Hive table name)",
        choices=("auto", "csv", "dat", "tsv", "parquet", "table"),
    )
    items: str | None = setting(
        None,
        "optional item metadata: movies.csv, movies.dat, u.item, parquet or table (null: found "
        "beside a MovieLens ratings file)"
    )
    items_format: str = setting(
        "auto",
        "auto | csv | dat | uitem | parquet | table",
        choices=("auto", "csv", "dat", "uitem", "parquet", "table"),
    )
    user_col: str = setting("userId", "user column name (csv with header, parquet, table)")
    item_col: str = setting("movieId", "item column name")
    rating_col: str | None = setting(
        "rating",
        "rating column name; null = an implicit log without ratings (clicks, views): every "
        "event is an interaction of weight 1, all liked"
    )
    ts_col: str = setting("timestamp", "timestamp column name")
    ts_unit: str = setting(
        "seconds",
        "seconds | milliseconds (epoch numbers, fractions allowed) | iso (timestamp strings); "
        "timestamp-typed columns are used as they are",
        choices=("seconds", "milliseconds", "iso"),
    )
    event_col: str | None = setting(
        None,
        "implicit logs: column with the event type (pv, cart, ...), weighted by event_weights "
        "(needs rating_col: null)"
    )
    event_weights: dict[str, float] = setting(
        {},
        "event type -> weight, e.g. {pv: 1, cart: 2, fav: 2, buy: 3}; an event value not in the"
        " map is a reject (unknown_event)",
        gt=0,
    )
    event_signal: str = setting(
        "sum",
        "implicit logs: a (user, item) pair's ALS signal from its events: sum | max | count of "
        "their weights (its rating is the strongest event)",
        choices=("sum", "max", "count"),
    )
    session_col: str | None = setting(
        None,
        "column with the log's own session id: sequences are keyed by (user, session) instead "
        "of the gap split"
    )
    category_col: str | None = setting(
        None,
        "column with an item category (side information: written to the items table's genres)"
    )
    columns: list[str] | None = setting(
        None,
        "column names of a headerless csv/tsv file, in order (e.g. [user_id, item_id, "
        "category_id, behavior, timestamp]); null = names from the header",
        min_len=2,
    )
    header: str = setting(
        "auto",
        "auto | true | false: does a csv/tsv file start with a header line (auto: csv yes "
        "unless columns is set; tsv when its first line names user_col)",
        choices=("auto", "true", "false"),
    )
    csv_delimiter: str = setting(
        ",",
        "field delimiter of csv input (fields may be quoted: \"a\",\"b\" and \"\" inside quotes)",
        min_len=1,
    )
    rating_min: float = setting(0.5, "ratings below this are rejected (rating_out_of_range)")
    rating_max: float = setting(5.0, "ratings above this are rejected (rating_out_of_range)")
    max_reject_fraction: float = setting(
        0.01,
        "fail the run when more than this fraction of input rows is rejected",
        ge=0, le=1,
    )

    def cross_check(self, section: str) -> None:
        _check(self.rating_min <= self.rating_max, f"{section}.rating_min",
               f"must be <= {section}.rating_max ({self.rating_max})")
        _check(self.rating_col is None or self.event_col is None, f"{section}.event_col",
               "needs input.rating_col: null (an event log has weights instead of ratings)")
        _check(self.event_col is None or len(self.event_weights) >= 1,
               f"{section}.event_weights",
               "must map every event value to a weight when input.event_col is set, "
               "e.g. {pv: 1, cart: 2, fav: 2, buy: 3}")
        if self.columns is not None:
            named = [c for c in self.used_columns() if c not in self.columns]
            _check(not named, f"{section}.columns",
                   f"has no column(s) {named} (input.user_col/item_col/rating_col/ts_col/"
                   f"event_col/session_col/category_col); it lists {self.columns}")

    @property
    def implicit(self) -> bool:
        """True for a log without ratings (``rating_col: null``): every event is liked."""
        return self.rating_col is None

    def used_columns(self) -> list[str]:
        """The input columns the reader needs, in a fixed order: user, item, [rating], ts,
        [event], [session], [category]."""
        return [c for c in (self.user_col, self.item_col, self.rating_col, self.ts_col,
                            self.event_col, self.session_col, self.category_col)
                if c is not None]


@dataclass(frozen=True)
class SampleConfig:
    """The built-in synthetic data set (used when ``input.path`` is null)."""

    n_users: int = setting(2000, "users in the built-in synthetic data set", ge=1)
    n_items: int = setting(1500, "items in the catalogue", ge=2)
    n_ratings: int = setting(200000, "ratings in total (about; capped per user by the catalogue)")
    n_genres: int = setting(18, "genres (MovieLens names, at most 18)", ge=1, le=18)
    items_per_cluster: int = setting(
        15,
        "items per taste cluster (\"franchise\") that users browse in runs",
        ge=1,
    )
    stay_prob: float = setting(
        0.6,
        "probability that a user's next rating stays in the current cluster",
        ge=0, lt=1,
    )
    popularity_exponent: float = setting(
        1.2,
        "Zipf exponent of item popularity (1.2: top 10% of items get 38% of ratings; ml-100k: "
        "43%)",
        ge=0,
    )
    seed: int = setting(42, "seed: the same seed gives the same data set")

    def cross_check(self, section: str) -> None:
        _check(self.n_ratings >= self.n_users, f"{section}.n_ratings",
               f"must be >= {section}.n_users")


@dataclass(frozen=True)
class SequencesConfig:
    """Which ratings are liked, and how they become per-user sequences."""

    min_rating: float = setting(
        3.5,
        "a rating >= this is a \"liked\" item: queries, held-out targets, popularity, forward "
        "evaluation"
    )
    context_min_rating: float | None = setting(
        None,
        "a rating >= this enters the sequences (item2vec's sentences, DeepWalk's graph, user "
        "histories); null = every rated item (ml-100k item2vec HR@10 0.135 vs 0.113 with liked "
        "items only)"
    )
    session_gap_minutes: float = setting(
        0.0,
        "split a user's sequence where consecutive items are more than this apart; 0 = no split",
        ge=0,
    )
    max_length: int = setting(
        0,
        "keep only each user's latest N sequence items; 0 = keep all",
        ge=0,
    )
    min_length: int = setting(2, "drop sequences (sessions) shorter than this", ge=1)
    collapse_repeats: bool = setting(
        True,
        "consecutive repeats of one item in a sequence (re-clicks, reloads) become one token"
    )


@dataclass(frozen=True)
class Word2VecConfig:
    """The Word2Vec settings shared by item2vec and deepwalk."""

    vector_size: int = setting(32, "embedding dimension", ge=1)
    window_size: int = setting(10, "skip-gram context window", ge=1)
    min_count: int = setting(
        0,
        "items seen fewer times get no vector (counted in the manifest); 0 = auto: 1 when >= "
        "25% of the vocabulary is seen once (long tails: taobao 74%), else 2",
        ge=0,
    )
    max_iter: int = setting(
        0,
        "training epochs; 0 = auto: ~150k token updates, 5..25 (5 from 30k tokens up; "
        "yoochoose: 20 epochs lost 0.05 HR@10 against 5); fewer on corpora past 25M token "
        "updates (at least 1)",
        ge=0,
    )
    num_partitions: int = setting(
        0,
        "Word2Vec partitions (one core each; vectors averaged every epoch); 0 = auto: 2 from 5M"
        " token updates (tokens x epochs) up, else 1 (HR@10 with 2 / 1: 1.5M-rating log "
        "item2vec 0.394 / 0.393 in 69 / ~110 s, DeepWalk 0.398 / 0.398 in 68 / 129 s; 25M "
        "DeepWalk 0.399 / 0.400 in 72 / 138 s); only 1 gives the same vectors on a re-run "
        "(on 2 the partitions train one shared array in local mode: the manifest's "
        "word2vec_repeatable)",
        ge=0,
    )
    step_size: float = setting(
        0.0,
        "initial learning rate; 0 = auto: 0.1 from 30k training tokens up (ml-100k: HR@10 0.116"
        " vs 0.088), else 0.025 (0.1 halves HR@10 on small corpora)",
        ge=0,
    )
    max_sentence_length: int = setting(
        1000,
        "longer sequences are split into chunks of this length",
        ge=1,
    )
    sample: float = setting(
        0.0,
        "frequent-token subsampling threshold (word2vec's sample, e.g. 1e-3): a token above "
        "this share of the corpus is dropped with Mikolov's probability; 0 = off",
        ge=0, lt=1,
    )
    seed: int = setting(42, "random seed")


@dataclass(frozen=True)
class Word2VecStageConfig(Word2VecConfig):
    """A stage that trains Word2Vec (item2vec on the sequences, deepwalk on the walks)."""

    enabled: bool = setting(True, "run the item2vec stage in `recemb run`")
    tune: bool = setting(
        False,
        "choose step/window/epochs/min_count/sample from a small grid on a validation split "
        "(each user's second-to-last liked item), scores in the manifest"
    )
    tune_seconds: float = setting(
        300.0,
        "tune: time budget; grid points start while it lasts (the configured settings always "
        "run)"
    )


@dataclass(frozen=True)
class GraphConfig:
    """DeepWalk's item graph, from consecutive items of the sequences."""

    weighting: str = setting(
        "count",
        "edge weight per consecutive pair: count | rating (of the second item) | recency "
        "(decays with the sequence's age)",
        choices=("count", "rating", "recency"),
    )
    recency_half_life_days: float = setting(
        30.0,
        "recency weighting: a pair's weight halves every this many days before the newest "
        "sequence",
        gt=0,
    )
    undirected: bool = setting(False, "add every edge in both directions")
    min_edge_weight: float = setting(
        1.0,
        "drop edges lighter than this (counted in the manifest)",
        ge=0,
    )


@dataclass(frozen=True)
class WalksConfig:
    """DeepWalk / node2vec random walks over the item graph."""

    strategy: str = setting(
        "auto",
        "auto | broadcast (alias tables broadcast, numpy walkers) | join (partitioned "
        "adjacency, walkers move)",
        choices=("auto", "broadcast", "join"),
    )
    broadcast_max_mb: float = setting(
        512.0,
        "auto: broadcast when the alias tables are smaller than this, else join",
        gt=0,
    )
    start: str = setting(
        "per_node",
        "per_node: walks_per_node walks from every node (DeepWalk) | frequency: num_walks "
        "starts drawn by item frequency",
        choices=("per_node", "frequency"),
    )
    walks_per_node: int = setting(10, "walks started from each node (start: per_node)", ge=1)
    num_walks: int = setting(20000, "walks in total (start: frequency)", ge=1)
    max_tokens: int = setting(
        25_000_000,
        "cap on the walk corpus (walks x walk_length nodes): above it walks_per_node (or "
        "num_walks) drops to what fits, never below one walk per node. MLlib Word2Vec trains "
        "~60k-140k tokens/s per core and the corpus is cached: 10 walks x 20 nodes at 722k "
        "items are 144M tokens (driver out of memory in local mode, hours of training); 25M "
        "leaves every catalogue up to 125k items at the full 10 walks; 0 = no cap",
        ge=0,
    )
    walk_length: int = setting(
        20,
        "nodes per walk at most (a walk stops early at a node without out-edges)",
        ge=2,
    )
    p: float = setting(1.0, "node2vec return parameter (p = q = 1: DeepWalk)", gt=0)
    q: float = setting(1.0, "node2vec in-out parameter", gt=0)
    num_partitions: int = setting(0, "walk partitions; 0 = 2 x Spark's default parallelism", ge=0)
    checkpoint_every: int = setting(5, "join strategy: cut the lineage every this many steps", ge=1)
    write_walks: bool = setting(
        False,
        "also write the walks table (walk_id, items) for inspection"
    )
    seed: int = setting(42, "random seed (same seed and partitions: same walks)")

    def cross_check(self, section: str) -> None:
        _check(self.strategy != "join" or not self.second_order, f"{section}.strategy",
               "'join' walks are first-order: node2vec (p or q != 1) needs 'broadcast' or 'auto'")

    @property
    def second_order(self) -> bool:
        """True for node2vec walks (p or q differ from 1)."""
        return self.p != 1.0 or self.q != 1.0


@dataclass(frozen=True)
class AlsConfig:
    """MLlib ALS factors (item and user vectors)."""

    enabled: bool = setting(True, "run the als stage in `recemb run`")
    implicit_prefs: bool = setting(
        True,
        "true: implicit feedback (confidence 1 + alpha * signal; ranks far better: HR@10 0.121 "
        "vs 0.045 on ml-100k); false: explicit ratings (+ RMSE)"
    )
    implicit_signal: str = setting(
        "signal",
        "implicit mode's signal per (user, item): signal (the ratings table's: the rating, or "
        "an event log's summed weights, input.event_signal) | rating | count (1 per pair)",
        choices=("signal", "rating", "count"),
    )
    rank: int = setting(
        64,
        "number of latent factors (64 vs 32, item-query HR@10 at 10 iterations: 25M-rating log "
        "0.350 vs 0.216, 1.5M 0.347 vs 0.253, sample 0.404 vs 0.382, yoochoose 0.399 vs 0.391, "
        "ml-100k within noise; 2.2x the time per iteration, paid for by the auto iterations)",
        ge=1,
    )
    max_iter: int = setting(
        0,
        "ALS iterations; 0 = auto: implicit mode one per auto_iter_confidence of the mean "
        "observed pair's added confidence (alpha x mean signal), within [auto_min_iter, "
        "auto_max_iter] and at most auto_max_pair_iterations / pairs (sample, ml-100k, 1.5M "
        "log, 25M: 5; yoochoose: 10; 722k- and 3M-item Taobao-shaped logs: 5, by the pair "
        "bound); explicit mode 10",
        ge=0,
    )
    auto_iter_confidence: float = setting(
        8.0,
        "auto iterations: one per this much mean added confidence (rank 64, HR@10 at 5 / 10 / "
        "15 iterations: yoochoose, confidence 88, 0.350 / 0.399 / 0.408; sample, ml-100k, 1.5M "
        "log, confidence 5-15, equal within noise at 5 and 10)",
        gt=0,
    )
    auto_min_iter: int = setting(5, "auto iterations: at least", ge=1)
    auto_max_iter: int = setting(
        10,
        "auto iterations: at most (rank 64, HR@10 item / user query: 722k-item Taobao-shaped "
        "log, confidence ~700, 0.148 / 0.211 at 5 iterations, 0.127 / 0.202 at 8, 0.120 / "
        "0.198 at 15, each iteration ~30 s on 2 cores; yoochoose, confidence 88, 0.399 at 10 "
        "against 0.408 at 15)")
    auto_max_pair_iterations: int = setting(
        20_000_000,
        "auto iterations: at most this many divided by the observed (user, item) pairs, never "
        "below auto_min_iter; 0 = no such bound (each iteration costs in proportion to the "
        "pairs: ~33 s at the 722k-item log's 4.0M pairs on 2 cores, where it gives 5 "
        "iterations, the best measured there; below 2M pairs it never binds)",
        ge=0,
    )
    reg_param: float = setting(0.1, "L2 regularisation", ge=0)
    alpha: float = setting(
        0.0,
        "implicit mode: confidence 1 + alpha x signal; 0 = auto: alpha x mean signal = "
        "auto_alpha_scale x (users x items / pairs) ** auto_alpha_exponent (sample 1.4, ml-100k"
        " 1.4, 1.5M-rating log 4.6, 25M 11.3, yoochoose 65; HR@10 0.215 -> 0.253 at 1.5M, 0.167"
        " -> 0.216 at 25M, 0.236 -> 0.391 on yoochoose; bench/als_confidence.py)",
        ge=0,
    )
    auto_alpha_scale: float = setting(
        0.8,
        "auto alpha: scale (fitted to the best measured alphas: sample 1-2, 1.5M log 4-10, "
        "yoochoose 40-100; ml-100k flat 0.25-40)",
        gt=0,
    )
    auto_alpha_exponent: float = setting(
        0.65,
        "auto alpha: exponent of one over the density (unobserved cells per observed pair)",
        ge=0,
    )
    nonnegative: bool = setting(False, "non-negative factors")
    num_user_blocks: int = setting(4, "user blocks (parallelism of the solve)", ge=1)
    num_item_blocks: int = setting(4, "item blocks", ge=1)
    checkpoint_interval: int = setting(
        10,
        "checkpoint every N iterations (under <warehouse>/_checkpoints); 0 = never",
        ge=0,
    )
    rmse_test_fraction: float = setting(
        0.2,
        "explicit mode: share of ratings held out to measure RMSE",
        gt=0, lt=1,
    )
    candidates_k: int = setting(
        50,
        "user_candidates rows per user (method als, seen items excluded); 0 = none",
        ge=0,
    )
    seed: int = setting(42, "random seed")

    def cross_check(self, section: str) -> None:
        _check(self.auto_max_iter >= self.auto_min_iter, f"{section}.auto_max_iter",
               f"must be >= {section}.auto_min_iter")


@dataclass(frozen=True)
class UsersConfig:
    """User vectors pooled from item vectors (models that do not learn their own)."""

    pooling: str = setting(
        "recency",
        "user vector = mean | recency (weighted mean of the user's liked item vectors)",
        choices=("mean", "recency"),
    )
    half_life: float = setting(
        1.0,
        "recency pooling: weight halves every this many positions from the end (1.0: user HR@10"
        " 0.097 vs 0.051 for mean on ml-100k)",
        gt=0,
    )


@dataclass(frozen=True)
class SideInfoConfig:
    """Item features (genres, categories) as side tokens of item2vec and deepwalk."""

    enabled: bool = setting(
        True,
        "item2vec / deepwalk: item features (the items table's genres, or input.category_col) "
        "become side tokens in the sentences, and items without a learned vector get the mean "
        "of their features' vectors (source 'side')"
    )
    sample: float = setting(
        0.001,
        "subsampling threshold for side tokens (frequent categories are dropped more often); 0 "
        "= keep all",
        ge=0, lt=1,
    )
    once_from: int = setting(
        10,
        "an item seen at least this often in the sequences gets no side tokens where the item "
        "before it in the sentence has the same ones (a run of one category carries its token "
        "once); rarer items keep them at every occurrence; 0 = every item at every occurrence "
        "(HR@10 item / user query, generated 5M-event log: item2vec 0.213 / 0.204 -> 0.247 / "
        "0.240, DeepWalk 0.128 / 0.125 -> 0.153 / 0.139; taobao-head unchanged; 1 cost its "
        "cold items: DeepWalk user 0.166 -> 0.129)",
        ge=0,
    )


@dataclass(frozen=True)
class EvaluateConfig:
    """The evaluation: held-out pairs, cut-offs, popularity segments."""

    enabled: bool = setting(
        True,
        "run the leave-last-out evaluation in `recemb run` (false: nothing is held out)"
    )
    ks: list[int] = setting(
        [10, 50],
        "cut-offs for HR@K / NDCG@K (coverage is reported at the first)",
        min_len=1, ge=1,
    )
    user_query: bool = setting(
        True,
        "also evaluate user-vector queries (besides last-item queries)"
    )
    head_share: float = setting(
        0.2,
        "head items: the most liked items holding this share of the liked events; the rest is "
        "the tail (the evaluation's *_head / *_tail on the training events, ann's coverage and "
        "daily's overlap on the date's)",
        gt=0, lt=1,
    )
    cold_max_events: int = setting(
        5,
        "cold items: at most this many liked training events (metrics *_cold; "
        "popularity_category is the baseline)",
        ge=0,
    )
    protocol: str = setting(
        "auto",
        "auto: retrain up to evaluate.retrain_max_ratings rating rows (the published tables "
        "then use every event) unless the blend is enabled (its weights need held-out pairs "
        "no model saw), holdout otherwise | holdout: score the run's own tables on held-out "
        "pairs chosen by the tables stage (train once) | retrain: leave-last-out split, every "
        "model trained again (twice the training)",
        choices=("auto", "holdout", "retrain"),
    )
    retrain_max_ratings: int = setting(
        1_000_000,
        "auto: retrain up to this many rating rows (events merged per user and item). Training "
        "again costs on 2 cores ~95 s on ML-100K, ~140 s on the built-in sample, ~180 s at "
        "1.5M ratings, ~590 s at 25M; the held-out pairs cost a 2k-session log's DeepWalk a "
        "quarter of its HR@10 (0.062 -> 0.047)",
        ge=0,
    )
    holdout_users: int = setting(
        0,
        "holdout: users whose last liked item is held out of every model; 0 = auto: every "
        "eligible user up to 10,000, a seeded hash sample of 10,000 above",
        ge=0,
    )
    seed: int = setting(
        42,
        "holdout: seed of the user sample (the same seed holds out the same users)"
    )
    exclude_history: bool = setting(
        True,
        "rank only items outside the user's liked training history (false for repeat-heavy "
        "logs, where the held-out item is often one the user had before)"
    )

@dataclass(frozen=True)
class AnnConfig:
    """Nearest-neighbour tables: item_neighbors and user_candidates."""

    enabled: bool = setting(True, "run the ann stage in `recemb run` (after the evaluation)")
    models: list[str] = setting(
        ['item2vec', 'deepwalk', 'node2vec'],
        "models whose item embeddings get neighbour tables (those present for the run date)",
        min_len=1,
    )
    method: str = setting(
        "auto",
        "auto | exact | ivf (k-means lists, each query scored against its nearest lists) | "
        "lsh (banded BucketedRandomProjectionLSH) | spark_lsh (stock approxSimilarityJoin)",
        choices=("auto", "exact", "ivf", "lsh", "spark_lsh"),
    )
    k: int = setting(10, "neighbours per item in item_neighbors", ge=1)
    auto_exact_max_items: int = setting(
        100000,
        "auto: exact up to this many items; above, ivf and lsh are tuned and the cheapest of "
        "exact, ivf and lsh by estimated core-seconds is used, a method tuned short of "
        "target_recall counting double (at 722k Taobao-shaped items: exact 237 s at recall "
        "1.0 against lsh 291 s at 0.82; bench/ann.py: exact 5.5 s vs lsh 10 s at 50k)",
        ge=0,
    )
    tune: bool = setting(
        True,
        "lsh: choose hashes_per_band, bands and bucket width per run from a sample of exact "
        "neighbours (cheapest layout reaching target_recall); false = use the three below"
    )
    target_recall: float = setting(
        0.97,
        "lsh and ivf tune: recall@k the chosen layout (lsh) or number of probed lists (ivf) "
        "must reach on the sample",
        gt=0, le=1,
    )
    max_candidates_per_query: int = setting(
        20000,
        "lsh tune: layouts expected to score more items per query than this are not "
        "considered; when none within it reaches target_recall, the one with the best "
        "recall within it is used (and its recall reported). Caps the cost on catalogues "
        "where LSH separates items poorly: at 722k items (5M-event Taobao-shaped log) "
        "reaching 0.97 needed ~78k candidates per query",
        ge=1,
    )
    tune_sample: int = setting(
        300,
        "lsh and ivf tune: sampled queries whose exact top-k decide the layout or the probes",
        ge=1,
    )
    hashes_per_band: int = setting(
        6,
        "lsh without tune: hash functions ANDed in one band (more: fewer, purer candidates)",
        ge=1,
    )
    bands: int = setting(
        24,
        "lsh without tune: bands ORed (more: higher recall, more candidates)",
        ge=1,
    )
    bucket_length: float = setting(
        0.0,
        "lsh without tune: bucket width of one projection; 0 = auto (bucket_scale / sqrt(dim))",
        ge=0,
    )
    bucket_scale: float = setting(
        0.6,
        "lsh without tune: auto bucket width in standard deviations of a projection "
        "(1/sqrt(dim) for unit vectors)",
        gt=0,
    )
    ivf_tune_sample: int = setting(
        2000,
        "ivf tune: sampled queries whose exact top-k decide the probes (cheap: one pass over "
        "the items; 300 left the recall 0.02-0.04 under target on the 722k-item log)",
        ge=1,
    )
    ivf_items_per_list: int = setting(
        3000,
        "ivf: items per k-means list at the finest (lists = items / this, at most 4096; "
        "halved up to three times when the estimated cost is lower: each probe repeats the "
        "query's row); each query scores the items of its nearest lists, as many as "
        "target_recall needs on the tune sample",
        ge=1,
    )
    max_bucket_size: int = setting(
        2000,
        "lsh: larger buckets are split into random chunks of this size (counted)",
        ge=2,
    )
    spark_lsh_threshold: float = setting(
        1.0,
        "spark_lsh: Euclidean distance threshold of approxSimilarityJoin (unit vectors: 0..2)",
        gt=0, le=2,
    )
    spark_lsh_tables: int = setting(4, "spark_lsh: numHashTables", ge=1)
    user_candidates: bool = setting(
        True,
        "also write user_candidates (top unseen items per user vector)"
    )
    user_candidates_k: int = setting(50, "user_candidates rows per user", ge=1)
    recall_sample: int = setting(
        500,
        "queries sampled to measure recall@k against exact top-k on every run",
        ge=0,
    )
    broadcast_max_mb: float | None = setting(
        None,
        "exact top-k, ivf, ALS's norm bound, banded lsh, evaluation scoring and user pooling "
        "broadcast the item matrix when it weighs at most this (MiB per Python worker: items x "
        "(8 x dim + 100) B, plus 8 B per lsh band), else shard it; so do the side-token "
        "interleave its side table ((items + side tokens) x 100 B) and the blend its lists' "
        "catalogue (items x 132 B + 12 B per neighbour row); null = auto (1/8 of "
        "spark.executor.pyspark.memory / cores, else of spark.executor.memory / cores; local: of "
        "spark.driver.memory, at most 4g); "
        "0 = never broadcast",
        ge=0,
    )
    seed: int = setting(42, "random seed (hash functions, samples)")


#: the channel kinds of the blend stage (``blend.channels``)
BLEND_CHANNELS = ("user", "item", "graph", "popular", "recent", "category")


@dataclass(frozen=True)
class BlendConfig:
    """One candidate list per user merged from every channel (the ``blend`` stage)."""

    enabled: bool = setting(
        False,
        "run the blend stage in `recemb run` (after ann, which it needs): one user_candidates "
        "list per user (model blend) merged from every channel, evaluated beside the models "
        "(off by default: it costs about as much as ann)"
    )
    k: int = setting(
        10,
        "candidates per user in the published list (every user with an event gets k, "
        "popularity fills the gaps)",
        ge=1,
    )
    depth: int = setting(50, "items per channel and user merged", ge=1)
    channels: list[str] = setting(
        ["user", "item", "graph", "popular", "recent", "category"],
        "user: each model's user-vector candidates; item: neighbours of the last liked items; "
        "graph: the items that followed the last liked items in sessions (deepwalk's "
        "item_graph); popular / recent / category popularity (popular always fills)",
        min_len=1,
    )
    last_items: int = setting(
        3,
        "item and graph channels: the user's latest liked items whose neighbours are merged "
        "(the latest weighs 1, the one before 1/2, ...)",
        ge=1,
    )
    recent_days: int = setting(
        7, "recent channel: popularity over the last this many days of the log", ge=1)
    categories: int = setting(
        1,
        "category channel: the categories (items table genres) of the user's latest liked "
        "items whose popular items are listed",
        ge=1,
    )
    weights: str = setting(
        "auto",
        "auto: channel weights and rr_k chosen on a validation split (each user's last liked "
        "training item); fixed: fixed_weights and rr_k",
        choices=("auto", "fixed"),
    )
    fixed_weights: dict[str, float] = setting(
        {},
        "weights: fixed: weight per channel name (item2vec_user, deepwalk_item, als_user, "
        "popular, recent, category, ...); 1 for a channel not named",
        ge=0,
    )
    rr_k: float = setting(
        20.0,
        "reciprocal rank fusion: an item scores sum of weight / (rr_k + rank) over the "
        "channels listing it (auto: the search starts here)",
        ge=0,
    )
    rr_k_grid: list[float] = setting(
        [5.0, 60.0], "auto: further rr_k values the search tries", ge=0)
    weight_grid: list[float] = setting(
        [0.0, 0.25, 0.5, 1.0, 2.0, 4.0],
        "auto: the values each channel weight may take (coordinate search)",
        ge=0, min_len=1,
    )
    search_rounds: int = setting(
        2, "auto: passes over the coordinates (stops early when a pass changes nothing)", ge=1)
    validation_users: int = setting(
        3000, "auto: held-out users per half the weights are chosen on (seeded hash sample); "
        "without held-out pairs, users of the validation split", ge=1)
    seed: int = setting(42, "seed of the held-out halves and of the validation sample")

    def cross_check(self, section: str) -> None:
        _check(self.depth >= self.k, f"{section}.depth", f"must be >= {section}.k ({self.k})")
        bad = [c for c in self.channels if c not in BLEND_CHANNELS]
        _check(not bad, f"{section}.channels",
               f"must name channels of {list(BLEND_CHANNELS)}, got {bad}")
        _check(any(w > 0 for w in self.weight_grid), f"{section}.weight_grid",
               "must hold a weight > 0")


@dataclass(frozen=True)
class ReportConfig:
    """The HTML report (``recemb report``)."""

    sample_items: int = setting(
        2000,
        "items per model in the PCA plot, sampled on the executors (at most 50000 reach the "
        "driver)",
        ge=1, le=50000,
    )
    popular_items: int = setting(5, "most-liked items whose neighbours the report lists", ge=1)
    neighbors: int = setting(5, "neighbours shown per popular item and model", ge=1)
    max_genres: int = setting(
        8,
        "PCA colours: the most frequent genres get their own colour, the rest are \"other\"",
        ge=1,
    )
    seed: int = setting(42, "seed of the item sample")


@dataclass(frozen=True)
class DailyConfig:
    """Day-over-day checks: neighbour overlap and forward evaluation."""

    enabled: bool = setting(
        True,
        "run the daily stage in `recemb run` (after ann): overlap with the previous date, "
        "forward evaluation; logs \"no previous date\" on the first run"
    )
    k: int = setting(
        10,
        "top-k of the neighbour-overlap (|A∩B|/k) and of the forward HR@k / NDCG@k",
        ge=1,
    )
    forward: bool = setting(
        True,
        "score the previous date's item embeddings (and neighbours) on the liked events that "
        "arrived after its cutoff"
    )


@dataclass(frozen=True)
class AlignConfig:
    """Rotating today's vectors onto the previous date's."""

    enabled: bool = setting(
        False,
        "model stages: rotate today's item (and learned user) vectors onto the previous date's "
        "(orthogonal Procrustes on shared items); cosine neighbours are unchanged"
    )
    min_shared_items: int = setting(
        50,
        "fit only with at least this many items present on both dates (else unaligned, recorded"
        " in the manifest)",
        ge=1,
    )


@dataclass(frozen=True)
class ExportConfig:
    """Redis export (``recemb export``, stage ``export``): connection, what to write, versions."""

    enabled: bool = setting(
        False,
        "run the export stage (after ann) in `recemb run`; `recemb export` runs it whatever "
        "this says"
    )
    host: str = setting("127.0.0.1", "Redis host", min_len=1)
    port: int = setting(6379, "Redis port", ge=1, le=65535)
    db: int = setting(0, "Redis database number", ge=0)
    tls: bool = setting(False, "connect with TLS (rediss)")
    tls_ca_file: str | None = setting(
        None,
        "TLS: CA bundle to verify the server with (null = the system's)"
    )
    username: str | None = setting(None, "Redis ACL user (null = default user)")
    password_env: str | None = setting(
        None,
        "NAME of the environment variable holding the password (e.g. RECEMB_REDIS_PASSWORD); "
        "null = no AUTH. The password itself never goes in config, logs or manifests",
        pattern=r"\w+",
        pattern_doc="the NAME of an environment variable (letters, digits, '_'), not the password",
    )
    connect_timeout: float = setting(5.0, "seconds to wait for a connection", gt=0)
    socket_timeout: float = setting(30.0, "seconds to wait for one reply (a pipelined batch)", gt=0)
    retries: int = setting(
        3,
        "reconnect attempts per command after a dropped connection (short exponential back-off)",
        ge=0,
    )
    prefix: str = setting(
        "recemb",
        "key prefix: <prefix>:<model>:<version>:<kind>:<id>",
        pattern=r"[^:*?\[\]\\ ]+", pattern_doc="non-empty without ':', spaces or glob characters",
    )
    models: list[str] = setting(
        ['item2vec', 'deepwalk', 'node2vec', 'als', 'blend'],
        "models to export (those with item_embeddings for the run date; blend: its "
        "user_candidates, with user_candidates: true)",
        min_len=1, pattern=r"[^:]+", pattern_doc="a model name without ':'",
    )
    items: bool = setting(True, "write item vectors (<...>:item:<item_id>, float32 little-endian)")
    users: bool = setting(True, "write user vectors (<...>:user:<user_id>)")
    neighbors: bool = setting(
        True,
        "write each item's neighbour list from item_neighbors (<...>:nbr:<item_id>)"
    )
    user_candidates: bool = setting(
        False,
        "write each user's candidate list from user_candidates (<...>:cand:<user_id>)"
    )
    batch_size: int = setting(
        1000,
        "keys per MSET in one pipelined round trip from an executor",
        ge=1,
    )
    keep_days: int = setting(
        7,
        "versions of run dates at least this many days before the exported date are deleted "
        "after the switch; 0 = keep only the current one",
        ge=0,
    )
    retire_grace_seconds: int = setting(
        60,
        "retired versions' keys expire this long after the switch (readers holding the old "
        "version finish); 0 = delete at once",
        ge=0,
    )

    def cross_check(self, section: str) -> None:
        _check(self.items or self.users or self.neighbors or self.user_candidates,
               f"{section}.items", "nothing to write: items, users, neighbors and "
               "user_candidates are all false")


@dataclass(frozen=True)
class CatalogConfig:
    """Registering the tables in the Spark catalog."""

    enabled: bool = setting(
        False,
        "also register every table in the Spark catalog (external partitioned Parquet tables; "
        "Hive support, embedded Derby metastore under <warehouse>/_metastore unless "
        "spark-submit configures one)"
    )
    database: str = setting(
        "recemb",
        "catalog database of the tables (recemb.item_embeddings, ...)",
        pattern=r"[A-Za-z0-9_]+", pattern_doc="a plain name (letters, digits, _)",
    )


# --------------------------------------------------------------------------------------------
# the whole configuration


@dataclass(frozen=True)
class Config:
    """Every section, in the order of ``conf/default.yaml``."""

    spark: SparkConfig = section(SparkConfig)
    warehouse: WarehouseConfig = section(WarehouseConfig)
    input: InputConfig = section(InputConfig)
    sample: SampleConfig = section(SampleConfig)
    sequences: SequencesConfig = section(SequencesConfig)
    item2vec: Word2VecStageConfig = section(Word2VecStageConfig)
    graph: GraphConfig = section(GraphConfig)
    walks: WalksConfig = section(WalksConfig)
    deepwalk: Word2VecStageConfig = section(
        Word2VecStageConfig,
        enabled=override(
            True, "run the deepwalk stage in `recemb run` (model \"node2vec\" when p or q != 1)"),
        window_size=override(5),
        min_count=override(2, "nodes seen fewer times in the walks get no vector"),
        max_iter=override(
            0, "training epochs; 0 = auto as item2vec.max_iter (5 on every shared data set and "
            "the 1.5M scale run; 2 at 25M ratings)"),
        num_partitions=override(0, "Word2Vec partitions; 0 = auto as item2vec.num_partitions"),
        step_size=override(
            0.1, "initial learning rate (0.1: HR@10 0.117 vs 0.109 at 0.025 on ml-100k; equal "
            "on the sample)"),
        max_sentence_length=override(1000, "longer walks are split into chunks of this length"),
    )
    als: AlsConfig = section(AlsConfig)
    users: UsersConfig = section(UsersConfig)
    side_info: SideInfoConfig = section(SideInfoConfig)
    evaluate: EvaluateConfig = section(EvaluateConfig)
    ann: AnnConfig = section(AnnConfig)
    blend: BlendConfig = section(BlendConfig)
    report: ReportConfig = section(ReportConfig)
    daily: DailyConfig = section(DailyConfig)
    align: AlignConfig = section(AlignConfig)
    export: ExportConfig = section(ExportConfig)
    catalog: CatalogConfig = section(CatalogConfig)

    def validate(self) -> None:
        """Every declared per-key rule, each section's ``cross_check``, then the checks
        across sections; raises :class:`ConfigError` naming the first key that fails."""
        for s in settings():
            check_value(s, getattr(getattr(self, s.section), s.name))
        for f in fields(self):
            cross_check = getattr(getattr(self, f.name), "cross_check", None)
            if cross_check is not None:
                cross_check(f.name)
        inp, seq = self.input, self.sequences
        _check(inp.implicit or inp.rating_min <= seq.min_rating <= inp.rating_max,
               "sequences.min_rating",
               f"must lie within the rating range [{inp.rating_min}, {inp.rating_max}]")
        _check(seq.context_min_rating is None or seq.context_min_rating <= seq.min_rating,
               "sequences.context_min_rating",
               f"must be null or <= sequences.min_rating ({seq.min_rating}): liked items are "
               "always part of the context")

    @property
    def liked_min_rating(self) -> float:
        """The rating from which an interaction is "liked" (enters sequences, evaluation):
        ``sequences.min_rating`` for rated input; every event of an implicit log is liked."""
        return float("-inf") if self.input.implicit else self.sequences.min_rating

    @property
    def context_min_rating(self) -> float:
        """The rating from which an interaction enters the sequence table (the training
        context of item2vec, DeepWalk's graph and the user vectors):
        ``sequences.context_min_rating``, or every rated item when it is null; every event
        of an implicit log."""
        seq = self.sequences
        if self.input.implicit or seq.context_min_rating is None:
            return float("-inf")
        return seq.context_min_rating

    def to_dict(self) -> dict[str, Any]:
        """The effective parameters as plain data (for manifests)."""
        return dataclasses.asdict(self)

    def replace(self, section: str, **values: Any) -> Config:
        """A copy with some keys of one section changed (validated like any override)."""
        data = self.to_dict()
        for key, value in values.items():
            data[section][key] = value
        return config_from_dict(data)


_SECTION_TYPES: dict[str, type] = {
    f.name: typing.get_type_hints(Config)[f.name] for f in fields(Config)
}



# --------------------------------------------------------------------------------------------
# the declarations as data


def _declared() -> tuple[Setting, ...]:
    out = []
    for sf in fields(Config):
        cls = _SECTION_TYPES[sf.name]
        overrides: dict[str, Override] = sf.metadata.get("overrides", {})
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            o = overrides.get(f.name)
            if o is not None:
                default = o.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = f.default
            doc = o.doc if o is not None and o.doc else f.metadata["doc"]
            out.append(Setting(sf.name, f.name, hints[f.name], default, doc, f.metadata["rule"]))
    return tuple(out)


_SETTINGS = _declared()


def settings(section_name: str | None = None) -> tuple[Setting, ...]:
    """Every declared setting (of one section), in declaration order."""
    if section_name is None:
        return _SETTINGS
    return tuple(s for s in _SETTINGS if s.section == section_name)


def valid_keys() -> list[str]:
    """Every valid ``section.key`` name."""
    return [s.key for s in _SETTINGS]


def run_control_keys() -> set[str]:
    """The keys that steer how a run goes, not what it writes (``run_control=True``)."""
    return {s.key for s in _SETTINGS if s.rule.run_control}


def defaults() -> dict[str, dict[str, Any]]:
    """The declared defaults as a nested ``{section: {key: value}}`` dict (a fresh copy)."""
    out: dict[str, dict[str, Any]] = {name: {} for name in _SECTION_TYPES}
    for s in _SETTINGS:
        out[s.section][s.name] = copy.deepcopy(s.default)
    return out


def config_from_dict(data: dict[str, Any]) -> Config:
    """Type-check a complete nested dict and build the validated :class:`Config`."""
    unknown = set(data) - set(_SECTION_TYPES)
    if unknown:
        raise ConfigError(f"unknown config section(s) {sorted(unknown)}; "
                          f"valid sections: {sorted(_SECTION_TYPES)}")
    sections = {}
    for name, cls in _SECTION_TYPES.items():
        if name not in data:
            raise ConfigError(f"missing config section '{name}'")
        sections[name] = _build_section(cls, name, data[name])
    cfg = Config(**sections)
    cfg.validate()
    return cfg


def _build_section(cls: type, section_name: str, values: Any) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{section_name}' must be a mapping")
    declared = settings(section_name)
    names = [s.name for s in declared]
    unknown = set(values) - set(names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {sorted(f'{section_name}.{k}' for k in unknown)}; "
            f"valid keys: {', '.join(f'{section_name}.{n}' for n in names)}")
    missing = [n for n in names if n not in values]
    if missing:
        raise ConfigError(f"missing config key(s) {[f'{section_name}.{n}' for n in missing]}")
    return cls(**{s.name: coerce_value(s, values[s.name])
                  for s in declared})
