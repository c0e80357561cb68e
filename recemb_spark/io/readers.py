"""Readers for rating and item inputs: MovieLens csv/dat/u.data, any CSV, Parquet or table.

A rating reader returns :class:`ParsedRatings`: the valid rows as
``(user_id string, item_id string, rating double, ts timestamp)`` (plus ``session_id`` and
``category`` strings when ``input.session_col`` / ``input.category_col`` name them) and the
rejected rows as ``(source string, line string, reason string)`` with the raw line, plus
per-reason counts. An implicit log (``input.rating_col: null``) has no ratings: each row's
``rating`` is its event's weight (``input.event_weights`` of ``input.event_col``, else 1).
Text input may be quoted (RFC 4180) and headerless (``input.columns``).
Reject reasons are stable codes (see :data:`REJECT_REASONS`). Missing paths, missing columns,
undetectable formats and empty input raise :class:`InputError` with a clear message.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..config import InputConfig
from ..errors import InputError
from .warehouse import HadoopFS, join_path

#: Every reject reason, in the order the checks run (a row gets the first that applies).
REJECT_REASONS = ["empty_line", "wrong_field_count", "missing_user_id", "missing_item_id",
                  "unknown_event", "bad_rating", "rating_out_of_range", "bad_timestamp"]

RATINGS_SCHEMA = "user_id string, item_id string, rating double, ts timestamp"
REJECTS_SCHEMA = "source string, line string, reason string"
ITEMS_SCHEMA = "item_id string, title string, genres array<string>"

# ml-100k's u.genre order (used when u.genre is not beside u.item).
ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]

_RATING_FILES = {"ratings.csv": "csv", "ratings.dat": "dat", "u.data": "tsv"}
_ITEM_FILES = {"movies.csv": "csv", "movies.dat": "dat", "u.item": "uitem"}
# Plausible epoch range, 0001-01-01 .. year ~5138: outside it the value is a bad timestamp (a
# year before 1 cannot be read back by Python: the fuzz test found -1e11 s, year -1199).
_MIN_EPOCH_SECONDS = -62_135_596_800
_MAX_EPOCH_SECONDS = 10**11


@dataclass
class ParsedRatings:
    """Valid rows, rejected rows and counts from one rating input."""

    valid: DataFrame
    rejects: DataFrame
    read: int
    rejected_by_reason: dict[str, int]
    source: str
    format: str
    items_path: str | None = None
    cached: DataFrame | None = None

    def unpersist(self) -> None:
        """Release the cached parsed rows (call once both outputs are written)."""
        if self.cached is not None:
            self.cached.unpersist()

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())


@dataclass(frozen=True)
class ResolvedInput:
    path: str
    format: str
    items_path: str | None


def resolve_input(fs: HadoopFS, path: str, fmt: str) -> ResolvedInput:
    """Find the ratings file and its format (and a MovieLens items file beside it, if any).

    ``path`` may be a file or a folder (a MovieLens folder, or a folder of Parquet/CSV parts);
    ``fmt`` 'auto' detects the format from the file names.
    """
    if fmt == "table":
        return ResolvedInput(path, "table", None)
    if not fs.exists(path):
        raise InputError(f"input path not found: {path}")
    if fs.is_dir(path):
        names = fs.list_names(path)
        for name, name_fmt in _RATING_FILES.items():
            if name in names:
                return ResolvedInput(join_path(path, name), name_fmt if fmt == "auto" else fmt,
                                     _items_beside(names, path))
        data_files = [n for n in names if not n.startswith(("_", "."))]
        if not data_files:
            raise InputError(f"input folder {path} is empty")
        if fmt != "auto":
            return ResolvedInput(path, fmt, None)
        if any(n.endswith(".parquet") for n in data_files):
            return ResolvedInput(path, "parquet", None)
        if all(n.endswith(".csv") for n in data_files):
            return ResolvedInput(path, "csv", None)
        raise InputError(f"cannot tell the format of folder {path} (files: {data_files[:5]}); "
                         f"pass --format one of csv, dat, tsv, parquet")
    name = path.rstrip("/").rsplit("/", 1)[-1]
    parent = path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else "."
    items = _items_beside(fs.list_names(parent), parent) if name in _RATING_FILES else None
    if fmt != "auto":
        return ResolvedInput(path, fmt, items)
    detected = _detect_format(name)
    if detected is None:
        raise InputError(f"cannot tell the format of {path} from its name; pass --format "
                         f"one of csv, dat, tsv, parquet, table")
    return ResolvedInput(path, detected, items)


def _detect_format(name: str) -> str | None:
    if name in _RATING_FILES:
        return _RATING_FILES[name]
    for suffix, fmt in ((".csv", "csv"), (".dat", "dat"), (".tsv", "tsv"), (".data", "tsv"),
                        (".parquet", "parquet")):
        if name.endswith(suffix):
            return fmt
    return None


def _items_beside(names: list[str], folder: str) -> str | None:
    for name in _ITEM_FILES:
        if name in names:
            return join_path(folder, name)
    return None


# --------------------------------------------------------------------------------------------
# ratings


def read_ratings(spark: SparkSession, cfg: InputConfig, path: str | None = None,
                 fmt: str | None = None) -> ParsedRatings:
    """Read and validate a rating input; see the module doc for what comes back.

    Text input is parsed once and cached on disk (the caller reads both outputs); Parquet
    and tables are read again instead. Call ``unpersist()`` when done.
    """
    path = path or cfg.path
    if not path:
        raise InputError("no input path given")
    resolved = resolve_input(HadoopFS(spark), path, fmt or cfg.format)
    if resolved.format in ("csv", "dat", "tsv"):
        parsed = _parse_text(spark, resolved, cfg)
    elif resolved.format == "parquet":
        parsed = _parse_frame(spark.read.parquet(resolved.path), resolved.path, cfg)
    elif resolved.format == "table":
        try:
            frame = spark.table(resolved.path)
        except Exception as exc:  # AnalysisException: table or view not found
            raise InputError(f"input table not found: {resolved.path} ({exc})") from None
        parsed = _parse_frame(frame, resolved.path, cfg)
    else:
        raise InputError(f"unknown input format {resolved.format!r}")
    if resolved.format in ("csv", "dat", "tsv"):
        # text is parsed once and kept on local disk (log-sized: see stages/tables.LOG_SIZED);
        # a columnar input is cheaper to read again than to copy
        parsed = parsed.persist(StorageLevel.DISK_ONLY)
    counts = {r["reason"]: r["count"] for r in parsed.groupBy("reason").count().collect()}
    read = sum(counts.values())
    if read == 0:
        parsed.unpersist()
        raise InputError(f"input {resolved.path} is empty: no rating rows")
    rejected = {reason: n for reason, n in counts.items() if reason is not None}
    extras = [c for c in ("session_id", "category") if c in parsed.columns]
    valid = parsed.filter(F.col("reason").isNull()).select("user_id", "item_id", "rating", "ts",
                                                            *extras)
    rejects = parsed.filter(F.col("reason").isNotNull()).select("source", "line", "reason")
    return ParsedRatings(valid, rejects, read, dict(sorted(rejected.items())), resolved.path,
                         resolved.format, resolved.items_path,
                         cached=parsed if parsed.is_cached else None)


def check_reject_fraction(parsed: ParsedRatings, max_fraction: float) -> None:
    """Raise InputError when no row is valid or too many rows were rejected."""
    if parsed.rejected == parsed.read:
        raise InputError(f"input {parsed.source}: all {parsed.read} rows were rejected "
                         f"({_reasons(parsed)}); is --format / the column mapping right?")
    fraction = parsed.rejected / parsed.read
    if fraction > max_fraction:
        raise InputError(f"input {parsed.source}: {parsed.rejected} of {parsed.read} rows "
                         f"rejected ({fraction:.2%} > input.max_reject_fraction "
                         f"{max_fraction:.2%}): {_reasons(parsed)}; see the rejects table")


def _reasons(parsed: ParsedRatings) -> str:
    return ", ".join(f"{r}={n}" for r, n in parsed.rejected_by_reason.items())


def _parse_text(spark: SparkSession, resolved: ResolvedInput, cfg: InputConfig) -> DataFrame:
    lines = spark.read.text(resolved.path).select(
        F.input_file_name().alias("source"), F.col("value").alias("line"))
    delimiter = {"dat": "::", "tsv": "\t"}.get(resolved.format, cfg.csv_delimiter)
    quoted = resolved.format != "dat"  # MovieLens .dat titles hold quotes; its ids never do
    first = lines.limit(1).collect()
    if not first:
        raise InputError(f"input {resolved.path} is empty: no rating rows")
    header_line = first[0]["line"]
    first_fields = [_unquote_text(h) for h in _split_text(header_line, delimiter, quoted)]
    has_header = _has_header(resolved.format, cfg, first_fields)
    if has_header:
        names = first_fields
        # every file of a folder starts with the header: those lines are not data
        lines = lines.filter(F.col("line") != F.lit(header_line))
    elif cfg.columns is not None:
        names = list(cfg.columns)
    elif resolved.format in ("dat", "tsv"):  # MovieLens layout: user, item, rating, timestamp
        names = _movielens_names(cfg)
    else:
        raise InputError(f"input {resolved.path} has no header line naming "
                         f"{cfg.used_columns()}; give the column names of a headerless file "
                         f"with input.columns (e.g. --set 'input.columns=[user,item,ts]')")
    missing = [c for c in cfg.used_columns() if c not in names]
    if missing:
        where = "header has" if has_header else "input.columns are"
        raise InputError(f"input {resolved.path} has no column(s) {missing} "
                         f"(input.user_col/item_col/rating_col/ts_col/event_col/session_col/"
                         f"category_col); its {where} {names}")
    fields = F.split(F.col("line"), _split_pattern(delimiter, quoted), -1)

    def field(name: str) -> Column:
        value = F.trim(F.try_element_at(fields, F.lit(names.index(name) + 1)))
        return _unquote(value) if quoted else value

    columns = {name: field(name) for name in cfg.used_columns()}
    ts = _timestamp_from_string(columns[cfg.ts_col], cfg.ts_unit)
    return _parsed_rows(lines, columns, ts, cfg,
                        first=[(F.trim(F.col("line")) == "", "empty_line"),
                               (F.size(fields) != len(names), "wrong_field_count")])


def _movielens_names(cfg: InputConfig) -> list[str]:
    """The column names of a headerless MovieLens .dat / u.data file under this config."""
    rating = cfg.rating_col if cfg.rating_col is not None else "_rating"
    return [cfg.user_col, cfg.item_col, rating, cfg.ts_col]


def _has_header(fmt: str, cfg: InputConfig, first_fields: list[str]) -> bool:
    """Whether a text input's first line is a header: ``input.header`` when set; on auto a
    csv has one unless ``input.columns`` names them, a .dat/.tsv file when its first line
    names the user column (yoochoose's clicks.tsv does, MovieLens' u.data does not)."""
    if cfg.header != "auto":
        return cfg.header == "true"
    if fmt == "csv":
        return cfg.columns is None
    return cfg.user_col in first_fields


def _split_pattern(delimiter: str, quoted: bool) -> str:
    """A Java regex that splits a line at ``delimiter``, outside double quotes when
    ``quoted`` (RFC 4180: a quote inside a quoted field is doubled)."""
    sep = re.escape(delimiter)
    return f'{sep}(?=(?:[^"]*"[^"]*")*[^"]*$)' if quoted else sep


def _split_text(line: str, delimiter: str, quoted: bool) -> list[str]:
    """Python twin of the Spark split (for the header line)."""
    return re.split(_split_pattern(delimiter, quoted), line)


def _unquote(value: Column) -> Column:
    """Strip one pair of surrounding double quotes and undouble the quotes inside (RFC 4180:
    the field ``"a ""b"" c"`` is ``a "b" c``); unquoted values pass unchanged."""
    inner = F.regexp_extract(value, r'^"(.*)"$', 1)
    return F.when(value.rlike(r'^".*"$'), F.trim(F.replace(inner, F.lit('""'), F.lit('"')))
                  ).otherwise(value)


def _unquote_text(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('""', '"').strip()
    return value


def _parse_frame(frame: DataFrame, source: str, cfg: InputConfig) -> DataFrame:
    missing = [c for c in cfg.used_columns() if c not in frame.columns]
    if missing:
        raise InputError(f"input {source} has no column(s) {missing} "
                         f"(input.user_col/item_col/rating_col/ts_col/event_col/session_col/"
                         f"category_col); its columns are {frame.columns}")
    types = dict(frame.dtypes)
    columns = {name: F.trim(F.col(name).cast("string")) for name in cfg.used_columns()}
    if cfg.rating_col is not None:
        columns[cfg.rating_col] = F.col(cfg.rating_col)
    ts_type = types[cfg.ts_col]
    if ts_type.startswith("timestamp") or ts_type == "date":
        ts = F.col(cfg.ts_col).cast("timestamp")
    elif ts_type == "string":
        ts = _timestamp_from_string(columns[cfg.ts_col], cfg.ts_unit)
    else:
        ts = _timestamp_from_number(F.col(cfg.ts_col).try_cast("double"), cfg.ts_unit)
    line = F.to_json(F.struct(*[F.col(c) for c in frame.columns]))
    return _parsed_rows(frame.select(F.lit(source).alias("source"), line.alias("line"),
                                     *frame.columns),
                        columns, ts, cfg, first=[])


def _parsed_rows(frame: DataFrame, columns: dict[str, Column], ts: Column, cfg: InputConfig,
                 first: list[tuple[Column, str]]) -> DataFrame:
    """``(source, line, user_id, item_id, rating, ts[, session_id][, category], reason)``
    from the parsed ``columns`` (by input column name): the rating is the rating column, or
    for an implicit log the event's weight (1 without ``event_col``)."""
    user, item = columns[cfg.user_col], columns[cfg.item_col]
    event = columns[cfg.event_col] if cfg.event_col is not None else None
    if cfg.rating_col is not None:
        rating = columns[cfg.rating_col].try_cast("double")
    elif event is not None:
        weights = F.create_map(*[x for name, w in sorted(cfg.event_weights.items())
                                 for x in (F.lit(name), F.lit(float(w)))])
        rating = F.try_element_at(weights, event)
    else:
        rating = F.lit(1.0)
    reason = _classify(user, item, rating, ts, cfg, first=first, event=event)
    extras = []
    if cfg.session_col is not None:
        extras.append(columns[cfg.session_col].alias("session_id"))
    if cfg.category_col is not None:
        extras.append(columns[cfg.category_col].alias("category"))
    return frame.select("source", "line", user.alias("user_id"), item.alias("item_id"),
                        rating.alias("rating"), ts.alias("ts"), *extras, reason.alias("reason"))


def _timestamp_from_string(ts_s: Column, unit: str) -> Column:
    if unit == "iso":
        return F.try_to_timestamp(ts_s)
    return _timestamp_from_number(ts_s.try_cast("double"), unit)


def _timestamp_from_number(value: Column, unit: str) -> Column:
    seconds = value / 1000.0 if unit == "milliseconds" else value
    if unit == "iso":  # numbers given where iso strings were expected
        return F.lit(None).cast("timestamp")
    ok = (seconds.isNotNull() & ~F.isnan(seconds) & (seconds >= _MIN_EPOCH_SECONDS)
          & (seconds < _MAX_EPOCH_SECONDS))
    millis = F.when(ok, F.round(seconds * 1000.0).cast("long"))
    return F.timestamp_millis(millis)


def _classify(user: Column, item: Column, rating: Column, ts: Column, cfg: InputConfig,
              first: list[tuple[Column, str]], event: Column | None = None) -> Column:
    checks = first + [
        (user.isNull() | (user == ""), "missing_user_id"),
        (item.isNull() | (item == ""), "missing_item_id"),
    ]
    if event is not None:  # an event log: the weight comes from the event value
        checks.append((rating.isNull(), "unknown_event"))
    elif cfg.rating_col is not None:
        checks += [(rating.isNull(), "bad_rating"),
                   (F.isnan(rating) | (rating < cfg.rating_min) | (rating > cfg.rating_max),
                    "rating_out_of_range")]
    checks.append((ts.isNull(), "bad_timestamp"))
    expr = F.when(checks[0][0], F.lit(checks[0][1]))
    for cond, reason in checks[1:]:
        expr = expr.when(cond, F.lit(reason))
    return expr.otherwise(F.lit(None).cast("string"))


# --------------------------------------------------------------------------------------------
# items


def read_items(spark: SparkSession, path: str, fmt: str, item_col: str) -> DataFrame:
    """Item metadata as ``(item_id string, title string, genres array<string>)``.

    Formats: ``csv`` (MovieLens movies.csv: movieId,title,genres with '|'), ``dat`` (ml-1m
    movies.dat, '::', latin-1), ``uitem`` (ml-100k u.item, '|', latin-1, 19 genre flags),
    ``parquet``/``table`` (columns ``item_col`` or item_id, title, genres). Rows without an id
    are dropped (the caller counts them).
    """
    fs = HadoopFS(spark)
    if fmt != "table" and not fs.exists(path):
        raise InputError(f"items path not found: {path}")
    if fmt == "auto":
        name = path.rstrip("/").rsplit("/", 1)[-1]
        fmt = _ITEM_FILES.get(name) or ("csv" if name.endswith(".csv") else
                                        "dat" if name.endswith(".dat") else
                                        "uitem" if name.endswith(".item") else
                                        "parquet" if fs.is_dir(path) or name.endswith(".parquet")
                                        else "")
        if not fmt:
            raise InputError(f"cannot tell the format of items file {path}; "
                             f"pass --set input.items_format=csv|dat|uitem|parquet|table")
    if fmt == "csv":
        raw = (spark.read.option("header", True).option("quote", '"').option("escape", '"')
               .csv(path))
        id_col = item_col if item_col in raw.columns else raw.columns[0]
        out = raw.select(F.col(id_col).alias("item_id"), F.col("title"),
                         _genres_from_string(F.col("genres")).alias("genres"))
    elif fmt == "dat":
        raw = (spark.read.option("sep", "::").option("encoding", "ISO-8859-1")
               .option("quote", "").csv(path))
        out = raw.select(F.col("_c0").alias("item_id"), F.col("_c1").alias("title"),
                         _genres_from_string(F.col("_c2")).alias("genres"))
    elif fmt == "uitem":
        raw = (spark.read.option("sep", "|").option("encoding", "ISO-8859-1")
               .option("quote", "").csv(path))
        names = _uitem_genre_names(spark, path)
        flags = [F.when(F.col(f"_c{5 + i}") == "1", F.lit(g)) for i, g in enumerate(names)]
        out = raw.select(F.col("_c0").alias("item_id"), F.col("_c1").alias("title"),
                         F.filter(F.array(*flags), lambda g: g.isNotNull()).alias("genres"))
    elif fmt in ("parquet", "table"):
        raw = spark.read.parquet(path) if fmt == "parquet" else spark.table(path)
        id_col = item_col if item_col in raw.columns else "item_id"
        if id_col not in raw.columns or "title" not in raw.columns:
            raise InputError(f"items {path} needs columns {item_col} (or item_id) and title; "
                             f"it has {raw.columns}")
        if "genres" not in raw.columns:
            genres = F.array().cast("array<string>")
        elif dict(raw.dtypes)["genres"].startswith("array"):
            genres = F.col("genres").cast("array<string>")
        else:
            genres = _genres_from_string(F.col("genres"))
        out = raw.select(F.col(id_col).cast("string").alias("item_id"),
                         F.col("title").cast("string"), genres.alias("genres"))
    else:
        raise InputError(f"unknown items format {fmt!r}")
    return out.withColumn("item_id", F.trim("item_id")).filter(
        F.col("item_id").isNotNull() & (F.col("item_id") != ""))


def _genres_from_string(col: Column) -> Column:
    parts = F.split(F.coalesce(col, F.lit("")), r"\|")
    return F.filter(parts, lambda g: (g != "") & (g != "(no genres listed)"))


def _uitem_genre_names(spark: SparkSession, path: str) -> list[str]:
    folder = path.rstrip("/").rsplit("/", 1)[0]
    genre_file = join_path(folder, "u.genre")
    fs = HadoopFS(spark)
    if fs.exists(genre_file):
        pairs = [line.split("|") for line in fs.read_text(genre_file).splitlines() if "|" in line]
        names = [name for name, _ in sorted(pairs, key=lambda p: int(p[1]))]
        if names:
            return names
    return ML100K_GENRES


def empty_frame(spark: SparkSession, schema: str) -> DataFrame:
    struct = T._parse_datatype_string(schema)
    assert isinstance(struct, T.StructType), f"not a DDL column list: {schema!r}"
    return spark.createDataFrame([], struct)
