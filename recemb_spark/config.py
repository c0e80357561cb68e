"""Typed configuration: one dataclass per stage, loaded from YAML, validated once.

Defaults live in exactly one place, ``conf/default.yaml`` (shipped inside the package as
``recemb_spark/default.yaml``); the dataclasses below declare the type of every key and the
checks on its value. Layers are merged in order: defaults, each ``--conf FILE``, each
``--set section.key=value``. Any unknown key, wrong type or out-of-range value raises
:class:`ConfigError` naming the key — before any SparkSession exists.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import re
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import ConfigError


@dataclass(frozen=True)
class SparkConfig:
    master: Optional[str]
    driver_memory: str
    shuffle_partitions: int
    log_level: str
    blas_threads: int

    def validate(self) -> None:
        _check(self.shuffle_partitions >= 0, "spark.shuffle_partitions", "must be >= 0")
        _check(self.blas_threads >= 0, "spark.blas_threads", "must be >= 0 (0 = leave as is)")
        _choice("spark.log_level", self.log_level,
                ["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"])


@dataclass(frozen=True)
class WarehouseConfig:
    path: str
    retention_days: int
    lock_max_age_hours: float

    def validate(self) -> None:
        _check(bool(self.path), "warehouse.path", "must not be empty")
        _check(self.retention_days >= 0, "warehouse.retention_days", "must be >= 0 (0 = off)")
        _check(self.lock_max_age_hours > 0, "warehouse.lock_max_age_hours", "must be > 0")


INPUT_FORMATS = ["auto", "csv", "dat", "tsv", "parquet", "table"]
ITEM_FORMATS = ["auto", "csv", "dat", "uitem", "parquet", "table"]


@dataclass(frozen=True)
class InputConfig:
    path: Optional[str]
    format: str
    items: Optional[str]
    items_format: str
    user_col: str
    item_col: str
    rating_col: Optional[str]
    ts_col: str
    ts_unit: str
    event_col: Optional[str]
    event_weights: dict[str, float]
    event_signal: str
    session_col: Optional[str]
    category_col: Optional[str]
    columns: Optional[list[str]]
    header: str
    csv_delimiter: str
    rating_min: float
    rating_max: float
    max_reject_fraction: float

    def validate(self) -> None:
        _choice("input.format", self.format, INPUT_FORMATS)
        _choice("input.items_format", self.items_format, ITEM_FORMATS)
        _choice("input.ts_unit", self.ts_unit, ["seconds", "milliseconds", "iso"])
        _choice("input.event_signal", self.event_signal, ["sum", "max", "count"])
        _choice("input.header", self.header, ["auto", "true", "false"])
        _check(len(self.csv_delimiter) >= 1, "input.csv_delimiter", "must not be empty")
        _check(self.rating_min <= self.rating_max, "input.rating_min",
               f"must be <= input.rating_max ({self.rating_max})")
        _check(0.0 <= self.max_reject_fraction <= 1.0, "input.max_reject_fraction",
               "must be within [0, 1]")
        _check(self.rating_col is None or self.event_col is None, "input.event_col",
               "needs input.rating_col: null (an event log has weights instead of ratings)")
        _check(self.event_col is None or len(self.event_weights) >= 1, "input.event_weights",
               "must map every event value to a weight when input.event_col is set, "
               "e.g. {pv: 1, cart: 2, fav: 2, buy: 3}")
        for event, weight in self.event_weights.items():
            _check(weight > 0, "input.event_weights", f"weight of {event!r} must be > 0")
        _check(self.columns is None or len(self.columns) >= 2, "input.columns",
               "must name at least the user and item columns of a headerless file")
        if self.columns is not None:
            named = [c for c in self.used_columns() if c not in self.columns]
            _check(not named, "input.columns",
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
    n_users: int
    n_items: int
    n_ratings: int
    n_genres: int
    items_per_cluster: int
    stay_prob: float
    popularity_exponent: float
    seed: int

    def validate(self) -> None:
        _check(self.n_users >= 1, "sample.n_users", "must be >= 1")
        _check(self.n_items >= 2, "sample.n_items", "must be >= 2")
        _check(self.n_ratings >= self.n_users, "sample.n_ratings", "must be >= sample.n_users")
        _check(1 <= self.n_genres <= 18, "sample.n_genres", "must be within [1, 18]")
        _check(self.items_per_cluster >= 1, "sample.items_per_cluster", "must be >= 1")
        _check(0.0 <= self.stay_prob < 1.0, "sample.stay_prob", "must be within [0, 1)")
        _check(self.popularity_exponent >= 0.0, "sample.popularity_exponent", "must be >= 0")


@dataclass(frozen=True)
class SequencesConfig:
    min_rating: float
    context_min_rating: Optional[float]
    session_gap_minutes: float
    max_length: int
    min_length: int
    collapse_repeats: bool

    def validate(self) -> None:
        _check(self.session_gap_minutes >= 0, "sequences.session_gap_minutes", "must be >= 0")
        _check(self.max_length >= 0, "sequences.max_length", "must be >= 0")
        _check(self.min_length >= 1, "sequences.min_length", "must be >= 1")


@dataclass(frozen=True)
class Word2VecConfig:
    """The Word2Vec block shared by item2vec and deepwalk."""
    vector_size: int
    window_size: int
    min_count: int
    max_iter: int
    num_partitions: int
    step_size: float
    max_sentence_length: int
    sample: float
    seed: int

    def validate_as(self, section: str) -> None:
        for name in ("vector_size", "window_size", "max_sentence_length"):
            _check(getattr(self, name) >= 1, f"{section}.{name}", "must be >= 1")
        _check(self.num_partitions >= 0, f"{section}.num_partitions", "must be >= 0 (0 = auto)")
        _check(self.max_iter >= 0, f"{section}.max_iter", "must be >= 0 (0 = auto)")
        _check(self.min_count >= 0, f"{section}.min_count", "must be >= 0 (0 = auto)")
        _check(self.step_size >= 0, f"{section}.step_size", "must be >= 0 (0 = auto)")
        _check(0 <= self.sample < 1, f"{section}.sample", "must be within [0, 1) (0 = off)")


@dataclass(frozen=True)
class Word2VecStageConfig(Word2VecConfig):
    """The block of a stage that trains Word2Vec (item2vec, deepwalk): the same shape."""
    enabled: bool
    tune: bool
    tune_seconds: float


GRAPH_WEIGHTINGS = ["count", "rating", "recency"]


@dataclass(frozen=True)
class GraphConfig:
    weighting: str
    recency_half_life_days: float
    undirected: bool
    min_edge_weight: float

    def validate(self) -> None:
        _choice("graph.weighting", self.weighting, GRAPH_WEIGHTINGS)
        _check(self.recency_half_life_days > 0, "graph.recency_half_life_days", "must be > 0")
        _check(self.min_edge_weight >= 0, "graph.min_edge_weight", "must be >= 0")


@dataclass(frozen=True)
class WalksConfig:
    strategy: str
    broadcast_max_mb: float
    start: str
    walks_per_node: int
    num_walks: int
    walk_length: int
    p: float
    q: float
    num_partitions: int
    checkpoint_every: int
    write_walks: bool
    seed: int

    def validate(self) -> None:
        _choice("walks.strategy", self.strategy, ["auto", "broadcast", "join"])
        _choice("walks.start", self.start, ["per_node", "frequency"])
        _check(self.broadcast_max_mb > 0, "walks.broadcast_max_mb", "must be > 0")
        _check(self.walks_per_node >= 1, "walks.walks_per_node", "must be >= 1")
        _check(self.num_walks >= 1, "walks.num_walks", "must be >= 1")
        _check(self.walk_length >= 2, "walks.walk_length", "must be >= 2")
        _check(self.p > 0, "walks.p", "must be > 0")
        _check(self.q > 0, "walks.q", "must be > 0")
        _check(self.num_partitions >= 0, "walks.num_partitions", "must be >= 0")
        _check(self.checkpoint_every >= 1, "walks.checkpoint_every", "must be >= 1")
        _check(self.strategy != "join" or (self.p == 1.0 and self.q == 1.0), "walks.strategy",
               "'join' walks are first-order: node2vec (p or q != 1) needs 'broadcast' or 'auto'")

    @property
    def second_order(self) -> bool:
        """True for node2vec walks (p or q differ from 1)."""
        return self.p != 1.0 or self.q != 1.0


@dataclass(frozen=True)
class AlsConfig:
    enabled: bool
    implicit_prefs: bool
    implicit_signal: str
    rank: int
    max_iter: int
    reg_param: float
    alpha: float
    auto_alpha_scale: float
    auto_alpha_exponent: float
    auto_iter_confidence: float
    auto_min_iter: int
    auto_max_iter: int
    nonnegative: bool
    num_user_blocks: int
    num_item_blocks: int
    checkpoint_interval: int
    rmse_test_fraction: float
    candidates_k: int
    seed: int

    def validate(self) -> None:
        _choice("als.implicit_signal", self.implicit_signal, ["signal", "rating", "count"])
        for name in ("rank", "num_user_blocks", "num_item_blocks", "auto_min_iter"):
            _check(getattr(self, name) >= 1, f"als.{name}", "must be >= 1")
        _check(self.max_iter >= 0, "als.max_iter", "must be >= 0 (0 = auto)")
        _check(self.auto_max_iter >= self.auto_min_iter, "als.auto_max_iter",
               "must be >= als.auto_min_iter")
        _check(self.auto_iter_confidence > 0, "als.auto_iter_confidence", "must be > 0")
        _check(self.reg_param >= 0, "als.reg_param", "must be >= 0")
        _check(self.alpha >= 0, "als.alpha", "must be >= 0 (0 = auto)")
        _check(self.auto_alpha_scale > 0, "als.auto_alpha_scale", "must be > 0")
        _check(self.auto_alpha_exponent >= 0, "als.auto_alpha_exponent", "must be >= 0")
        _check(self.checkpoint_interval >= 0, "als.checkpoint_interval", "must be >= 0")
        _check(0.0 < self.rmse_test_fraction < 1.0, "als.rmse_test_fraction",
               "must be within (0, 1)")
        _check(self.candidates_k >= 0, "als.candidates_k", "must be >= 0")


@dataclass(frozen=True)
class AnnConfig:
    enabled: bool
    models: list[str]
    method: str
    k: int
    auto_exact_max_items: int
    tune: bool
    target_recall: float
    tune_sample: int
    hashes_per_band: int
    bands: int
    bucket_length: float
    bucket_scale: float
    max_bucket_size: int
    spark_lsh_threshold: float
    spark_lsh_tables: int
    user_candidates: bool
    user_candidates_k: int
    recall_sample: int
    seed: int

    def validate(self) -> None:
        _choice("ann.method", self.method, ["auto", "exact", "lsh", "spark_lsh"])
        _check(len(self.models) >= 1, "ann.models", "must name at least one model")
        for name in ("k", "hashes_per_band", "bands", "max_bucket_size", "spark_lsh_tables",
                     "user_candidates_k"):
            _check(getattr(self, name) >= 1, f"ann.{name}", "must be >= 1")
        _check(self.max_bucket_size >= 2, "ann.max_bucket_size", "must be >= 2")
        _check(self.bucket_length >= 0, "ann.bucket_length", "must be >= 0 (0 = auto)")
        _check(self.bucket_scale > 0, "ann.bucket_scale", "must be > 0")
        _check(0 < self.spark_lsh_threshold <= 2, "ann.spark_lsh_threshold",
               "must be within (0, 2] (Euclidean distance of unit vectors)")
        _check(self.recall_sample >= 0, "ann.recall_sample", "must be >= 0")
        _check(self.auto_exact_max_items >= 0, "ann.auto_exact_max_items", "must be >= 0")
        _check(0 < self.target_recall <= 1, "ann.target_recall", "must be within (0, 1]")
        _check(self.tune_sample >= 1, "ann.tune_sample", "must be >= 1")


@dataclass(frozen=True)
class UsersConfig:
    pooling: str
    half_life: float

    def validate(self) -> None:
        _choice("users.pooling", self.pooling, ["mean", "recency"])
        _check(self.half_life > 0, "users.half_life", "must be > 0")


@dataclass(frozen=True)
class SideInfoConfig:
    enabled: bool
    sample: float

    def validate(self) -> None:
        _check(0 <= self.sample < 1, "side_info.sample", "must be within [0, 1) (0 = keep all)")


@dataclass(frozen=True)
class EvaluateConfig:
    enabled: bool
    ks: list[int]
    user_query: bool
    head_share: float
    cold_max_events: int
    protocol: str
    holdout_users: int
    seed: int
    exclude_history: bool

    def validate(self) -> None:
        _check(len(self.ks) >= 1 and all(k >= 1 for k in self.ks), "evaluate.ks",
               "must be a non-empty list of integers >= 1")
        _check(0 < self.head_share < 1, "evaluate.head_share", "must be within (0, 1)")
        _check(self.cold_max_events >= 0, "evaluate.cold_max_events", "must be >= 0")
        _choice("evaluate.protocol", self.protocol, ["holdout", "retrain"])
        _check(self.holdout_users >= 0, "evaluate.holdout_users", "must be >= 0 (0 = auto)")

    @property
    def holds_out(self) -> bool:
        """True when the tables stage holds pairs out of training (the train-once protocol)."""
        return self.enabled and self.protocol == "holdout"


#: the channel kinds of the blend stage (``blend.channels``)
BLEND_CHANNELS = ["user", "item", "popular", "recent", "category"]


@dataclass(frozen=True)
class BlendConfig:
    enabled: bool
    k: int
    depth: int
    channels: list[str]
    last_items: int
    recent_days: int
    categories: int
    weights: str
    fixed_weights: dict[str, float]
    rr_k: float
    rr_k_grid: list[float]
    weight_grid: list[float]
    search_rounds: int
    validation_users: int
    seed: int

    def validate(self) -> None:
        _check(self.k >= 1, "blend.k", "must be >= 1")
        _check(self.depth >= self.k, "blend.depth", f"must be >= blend.k ({self.k})")
        for c in self.channels:
            _choice("blend.channels", c, BLEND_CHANNELS)
        for name in ("last_items", "recent_days", "categories", "validation_users"):
            _check(getattr(self, name) >= 1, f"blend.{name}", "must be >= 1")
        _choice("blend.weights", self.weights, ["auto", "fixed"])
        _check(all(w >= 0 for w in self.fixed_weights.values()), "blend.fixed_weights",
               "weights must be >= 0")
        _check(self.rr_k >= 0 and all(r >= 0 for r in self.rr_k_grid), "blend.rr_k",
               "rr_k and rr_k_grid must be >= 0")
        _check(len(self.weight_grid) >= 1 and all(w >= 0 for w in self.weight_grid)
               and any(w > 0 for w in self.weight_grid), "blend.weight_grid",
               "must be a non-empty list of weights >= 0, one of them > 0")
        _check(self.search_rounds >= 1, "blend.search_rounds", "must be >= 1")


@dataclass(frozen=True)
class ReportConfig:
    sample_items: int
    popular_items: int
    neighbors: int
    max_genres: int
    seed: int

    def validate(self) -> None:
        for name in ("sample_items", "popular_items", "neighbors", "max_genres"):
            _check(getattr(self, name) >= 1, f"report.{name}", "must be >= 1")
        _check(self.sample_items <= 50000, "report.sample_items",
               "must be <= 50000 (the sample is collected to the driver for the plot)")


@dataclass(frozen=True)
class DailyConfig:
    enabled: bool
    k: int
    head_share: float
    forward: bool

    def validate(self) -> None:
        _check(self.k >= 1, "daily.k", "must be >= 1")
        _check(0.0 < self.head_share < 1.0, "daily.head_share", "must be within (0, 1)")


@dataclass(frozen=True)
class AlignConfig:
    enabled: bool
    min_shared_items: int

    def validate(self) -> None:
        _check(self.min_shared_items >= 1, "align.min_shared_items", "must be >= 1")


@dataclass(frozen=True)
class ExportConfig:
    """Redis export (``recemb export``, stage ``export``): connection, what to write, versions."""
    enabled: bool
    host: str
    port: int
    db: int
    tls: bool
    tls_ca_file: Optional[str]
    username: Optional[str]
    password_env: Optional[str]
    connect_timeout: float
    socket_timeout: float
    retries: int
    prefix: str
    models: list[str]
    items: bool
    users: bool
    neighbors: bool
    user_candidates: bool
    batch_size: int
    keep_days: int
    retire_grace_seconds: int

    def validate(self) -> None:
        _check(bool(self.host), "export.host", "must not be empty")
        _check(1 <= self.port <= 65535, "export.port", "must be within [1, 65535]")
        _check(self.db >= 0, "export.db", "must be >= 0")
        _check(self.connect_timeout > 0, "export.connect_timeout", "must be > 0 (seconds)")
        _check(self.socket_timeout > 0, "export.socket_timeout", "must be > 0 (seconds)")
        _check(self.retries >= 0, "export.retries", "must be >= 0")
        _check(bool(self.prefix) and not any(c in self.prefix for c in ":*?[]\\ "),
               "export.prefix", "must be non-empty without ':', spaces or glob characters")
        _check(len(self.models) >= 1 and all(m and ":" not in m for m in self.models),
               "export.models", "must name at least one model (names without ':')")
        _check(self.items or self.users or self.neighbors or self.user_candidates,
               "export.items", "nothing to write: items, users, neighbors and "
               "user_candidates are all false")
        _check(self.batch_size >= 1, "export.batch_size", "must be >= 1")
        _check(self.keep_days >= 0, "export.keep_days", "must be >= 0")
        _check(self.retire_grace_seconds >= 0, "export.retire_grace_seconds", "must be >= 0")
        _check(self.password_env is None or
               (bool(self.password_env) and self.password_env.replace("_", "a").isalnum()),
               "export.password_env", "must be the NAME of an environment variable "
               "(letters, digits, '_'), not the password")


@dataclass(frozen=True)
class CatalogConfig:
    enabled: bool
    database: str

    def validate(self) -> None:
        _check(self.database.replace("_", "").isalnum() and self.database.isascii(),
               "catalog.database", "must be a plain name (letters, digits, _)")


@dataclass(frozen=True)
class Config:
    spark: SparkConfig
    warehouse: WarehouseConfig
    input: InputConfig
    sample: SampleConfig
    sequences: SequencesConfig
    item2vec: Word2VecStageConfig
    graph: GraphConfig
    walks: WalksConfig
    deepwalk: Word2VecStageConfig
    als: AlsConfig
    users: UsersConfig
    side_info: SideInfoConfig
    evaluate: EvaluateConfig
    ann: AnnConfig
    blend: BlendConfig
    report: ReportConfig
    daily: DailyConfig
    align: AlignConfig
    export: ExportConfig
    catalog: CatalogConfig

    def validate(self) -> None:
        for f in fields(self):
            section = getattr(self, f.name)
            if isinstance(section, Word2VecConfig):
                section.validate_as(f.name)
            else:
                section.validate()
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

    def replace(self, section: str, **values: Any) -> "Config":
        """A copy with some keys of one section changed (validated like any override)."""
        data = self.to_dict()
        for key, value in values.items():
            data[section][key] = value
        return config_from_dict(data)


# --------------------------------------------------------------------------------------------
# loading


def default_yaml_text() -> str:
    """The text of the packaged defaults (``conf/default.yaml``)."""
    return importlib.resources.files("recemb_spark").joinpath("default.yaml").read_text()


def load_config(conf_files: Optional[list[str]] = None,
                overrides: Optional[list[str]] = None) -> Config:
    """Build the validated :class:`Config`: packaged defaults < ``conf_files`` < ``overrides``.

    ``overrides`` are ``section.key=value`` strings; values are parsed as YAML scalars or lists
    (``4.0``, ``true``, ``null``, ``[10, 50]``). Raises :class:`ConfigError` on any unknown key,
    wrong type, out-of-range value, unreadable file or malformed override.
    """
    data = yaml.safe_load(default_yaml_text())
    for path in conf_files or []:
        _merge(data, _read_yaml_file(path), source=path)
    for item in overrides or []:
        key, value = _parse_override(item)
        _merge(data, _nest(key, value), source=f"--set {item}")
    return config_from_dict(data)


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


_SECTION_TYPES: dict[str, type] = {
    f.name: typing.get_type_hints(Config)[f.name] for f in fields(Config)
}


def valid_keys() -> list[str]:
    """Every valid ``section.key`` name."""
    return [f"{s}.{f.name}" for s, cls in _SECTION_TYPES.items() for f in fields(cls)]


def _read_yaml_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return loaded


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects section.key=value, got '{item}'")
    key, raw = item.split("=", 1)
    key = key.strip()
    if key.count(".") != 1:
        raise ConfigError(f"--set key must be section.key, got '{key}'; "
                          f"valid keys: {', '.join(valid_keys())}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _nest(key: str, value: Any) -> dict[str, Any]:
    section, name = key.split(".", 1)
    return {section: {name: value}}


def _merge(base: dict[str, Any], extra: dict[str, Any], source: str) -> None:
    for section, values in extra.items():
        if section not in base:
            raise ConfigError(f"unknown config section '{section}' (from {source}); "
                              f"valid sections: {', '.join(sorted(base))}")
        if not isinstance(values, dict):
            raise ConfigError(f"config section '{section}' (from {source}) must be a mapping")
        for key, value in values.items():
            if key not in base[section]:
                valid = ", ".join(f"{section}.{k}" for k in base[section])
                raise ConfigError(f"unknown config key '{section}.{key}' (from {source}); "
                                  f"valid keys: {valid}")
            base[section][key] = value


def _build_section(cls: type, section: str, values: Any) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{section}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = set(values) - set(names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(f'{section}.{k}' for k in unknown)}; "
                          f"valid keys: {', '.join(f'{section}.{n}' for n in names)}")
    missing = [n for n in names if n not in values]
    if missing:
        raise ConfigError(f"missing config key(s) {[f'{section}.{n}' for n in missing]}")
    return cls(**{n: _coerce(values[n], hints[n], f"{section}.{n}") for n in names})


#: a decimal number in exponent notation without a dot, e.g. ``1e-5``, which YAML 1.1 (PyYAML)
#: reads as a string
_FLOAT_TEXT = re.compile(r"[+-]?\d+[eE][+-]?\d+")


def _coerce(value: Any, typ: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if origin is dict:
        key_type, value_type = typing.get_args(typ)
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return {_coerce(k, key_type, key): _coerce(v, value_type, key) for k, v in value.items()}
    if origin is list:
        (inner,) = typing.get_args(typ)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_coerce(v, inner, key) for v in value]
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
    elif typ is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    else:  # pragma: no cover - a developer error in the dataclasses
        raise TypeError(f"unsupported config type {typ} for {key}")
    raise ConfigError(f"config key '{key}' must be of type {typ.__name__}, got {value!r}")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' {message}")


def _choice(key: str, value: str, choices: list[str]) -> None:
    if value not in choices:
        raise ConfigError(f"config key '{key}' must be one of {choices}, got {value!r}")
