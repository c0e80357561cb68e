"""Popularity's held-out ranks and top lists by counting, in Spark (the sharded path).

Popularity scores an item by one number (its liked count), and ``category`` mode adds the
same bonus to every item of the query item's category. So every case ranks the items in
one global order (score descending, ties by item number) with, in ``category`` mode, its
query's category moved first; its liked history is taken out. The held-out item's rank is
then a count of items ahead of it in that order less the excluded ones ahead of it — the
figures of :func:`~recemb_spark.evaluation.ranks.rank_block` (see
:class:`~recemb_spark.evaluation.ranks.OrderRanks`, the broadcast path's version), without
scoring the catalogue once per case.

Every count is a join or a window over small groups: "items with a higher score" comes from
a histogram of (group, score) (one row per distinct score per group), ties from counts per
block of item numbers, the rest from one block; a task never holds a group's catalogue.
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from .ranks import EXACT_COUNT_MAX

#: the sharded path counts popularity's ranks from this many (case, item) pairs up, and
#: scores every pair below it: counting has more Spark jobs, scoring a pass per case. On 2
#: cores (``score_model`` on the sharded path, both modes): 10k cases x 300k items counted
#: 46-50 s, scored 66 s; 200 cases x 2k items counted 11 s, scored 6-8 s
COUNT_MIN_PAIRS = 10**9
#: the group of the global order (categories are codes >= 0, -1 none)
ALL = -2
#: items per tie block: a window over one (group, score, block) holds at most this many
TIE_BLOCK = 4096


def counting_applies(items: DataFrame) -> bool:
    """Whether ``items (item_idx, s, cat)`` scores are non-negative whole numbers up to
    :data:`EXACT_COUNT_MAX` (where counting gives the scored figures; see ``OrderRanks``)."""
    row = items.agg(F.min("s").alias("lo"), F.max("s").alias("hi"),
                    F.sum(F.when(F.col("s") != F.floor("s"), 1).otherwise(0)).alias("frac"),
                    F.sum(F.when(F.isnan("s"), 1).otherwise(0)).alias("nan")).collect()[0]
    if row["lo"] is None:
        return True
    return (row["lo"] >= 0 and row["hi"] <= EXACT_COUNT_MAX and not row["frac"]
            and not row["nan"])


def ahead_counts(items: DataFrame, queries: DataFrame) -> DataFrame:
    """``(_q, ahead)``: for each query ``(_q, grp, s, idx)`` the items ``(grp, s, idx)`` of
    its group that come before ``(s, idx)`` in the order score descending, number ascending
    (the item at ``(s, idx)`` itself not counted). Three windows, none over a whole group:
    higher scores from the (group, score) histogram, equal scores in earlier blocks from
    (group, score, block) counts, and the query's own block."""
    blk = F.floor(F.col("idx") / F.lit(TIE_BLOCK))
    q = queries.select("_q", "grp", "s", "idx", blk.alias("blk"))
    running = F.sum("n").over  # items before a query row: it sorts first among equals

    by_score = items.groupBy("grp", "s").agg(F.count("*").alias("n"))
    higher = (by_score.withColumn("_q", F.lit(None).cast("long")).withColumn("kind", F.lit(1))
              .unionByName(q.select("grp", "s", F.lit(0).cast("long").alias("n"), "_q",
                                    F.lit(0).alias("kind")))
              .withColumn("c", running(Window.partitionBy("grp").orderBy(
                  F.desc("s"), "kind").rowsBetween(Window.unboundedPreceding, 0)))
              .filter(F.col("kind") == 0).select("_q", F.col("c").alias("higher")))

    by_block = items.groupBy("grp", "s", blk.alias("blk")).agg(F.count("*").alias("n"))
    blocks_before = (
        by_block.withColumn("_q", F.lit(None).cast("long")).withColumn("kind", F.lit(1))
        .unionByName(q.select("grp", "s", "blk", F.lit(0).cast("long").alias("n"), "_q",
                              F.lit(0).alias("kind")))
        .withColumn("c", running(Window.partitionBy("grp", "s").orderBy(
            "blk", "kind").rowsBetween(Window.unboundedPreceding, 0)))
        .filter(F.col("kind") == 0).select("_q", F.col("c").alias("tied_before")))

    in_block = (
        items.select("grp", "s", blk.alias("blk"), "idx", F.lit(1).cast("long").alias("n"),
                     F.lit(None).cast("long").alias("_q"), F.lit(1).alias("kind"))
        .unionByName(q.select("grp", "s", "blk", "idx", F.lit(0).cast("long").alias("n"), "_q",
                              F.lit(0).alias("kind")))
        .withColumn("c", running(Window.partitionBy("grp", "s", "blk").orderBy(
            "idx", "kind").rowsBetween(Window.unboundedPreceding, 0)))
        .filter(F.col("kind") == 0).select("_q", F.col("c").alias("tied_in_block")))

    return (higher.join(blocks_before, "_q").join(in_block, "_q")
            .select("_q", (F.col("higher") + F.col("tied_before") + F.col("tied_in_block"))
                    .alias("ahead")))


def _ahead(s1: Column, i1: Column, s2: Column, i2: Column) -> Column:
    """``(s1, i1)`` comes before ``(s2, i2)``: a higher score, or equal with a smaller
    number."""
    return (s1 > s2) | ((s1 == s2) & (i1 < i2))


def counted_ranks(cases: DataFrame, items: DataFrame, category: bool) -> DataFrame:
    """``(_case, rank)``: the 0-based rank of each scored case's held-out item.

    ``cases (_case, h_idx, h_excl, q_cat, history array<string>)`` (``q_cat`` -1: none);
    ``items (item_id, item_idx, s, cat)`` (``cat`` -1: none). ``category``: the query's
    category first (``category`` mode), else the global order (``constant`` mode)."""
    n_items = items.count()
    it = items.select(F.col("item_idx").alias("idx"), "s", "cat")
    q_cat = F.col("q_cat") if category else F.lit(-1)
    held = it.select(F.col("idx").alias("h_idx"), F.col("s").alias("h_s"),
                     F.col("cat").alias("h_cat"))
    c = (cases.select("_case", "h_idx", "h_excl", q_cat.alias("qc"), "history")
         .join(held, "h_idx"))
    # the excluded items: the distinct history items in the catalogue, with what they count
    hist = (c.select("_case", "h_idx", "h_s", "qc", F.explode("history").alias("item_id"))
            .distinct().join(items, "item_id")
            .groupBy("_case").agg(
                F.count("*").alias("n_ex"),
                F.sum(F.when(F.col("item_idx") < F.col("h_idx"), 1).otherwise(0))
                .alias("ex_smaller"),
                F.sum(F.when(_ahead(F.col("s"), F.col("item_idx"), F.col("h_s"),
                                    F.col("h_idx")), 1).otherwise(0)).alias("ex_ahead"),
                F.sum(F.when(F.col("cat") == F.col("qc"), 1).otherwise(0)).alias("ex_in"),
                F.sum(F.when((F.col("cat") == F.col("qc")) & _ahead(
                    F.col("s"), F.col("item_idx"), F.col("h_s"), F.col("h_idx")), 1)
                    .otherwise(0)).alias("ex_in_ahead")))
    groups = it.withColumn("grp", F.lit(ALL))
    asked = c.select(F.col("_case").alias("_q"), F.lit(ALL).alias("grp"),
                     F.col("h_s").alias("s"), F.col("h_idx").alias("idx"))
    ahead = ahead_counts(groups, asked).withColumnRenamed("ahead", "g_ahead")
    if category:  # the same counts within the query's category (cases with one)
        cat_items = it.filter(F.col("cat") >= 0).withColumnRenamed("cat", "grp")
        in_cat = ahead_counts(cat_items, c.filter(F.col("qc") >= 0).select(
            F.col("_case").alias("_q"), F.col("qc").alias("grp"), F.col("h_s").alias("s"),
            F.col("h_idx").alias("idx"))).withColumnRenamed("ahead", "c_ahead")
        sizes = cat_items.groupBy(F.col("grp").alias("qc")).agg(F.count("*").alias("n_cat"))
        ahead = ahead.join(in_cat, "_q", "left")
        c = c.join(sizes, "qc", "left")
    else:
        c = c.withColumn("n_cat", F.lit(0).cast("long"))
    z = F.lit(0)
    c = (c.join(ahead.withColumnRenamed("_q", "_case"), "_case")
         .join(hist, "_case", "left").fillna(0, ["n_ex", "ex_smaller", "ex_ahead", "ex_in",
                                                 "ex_in_ahead", "n_cat"]))
    if not category:
        c = c.withColumn("c_ahead", z)
    rank = (F.when(F.col("h_excl"), F.lit(n_items) - F.col("n_ex") + F.col("ex_smaller"))
            .when(F.col("qc") < 0, F.col("g_ahead") - F.col("ex_ahead"))
            .when(F.col("h_cat") == F.col("qc"), F.coalesce("c_ahead", z)
                  - F.col("ex_in_ahead"))
            .otherwise(F.col("n_cat") - F.col("ex_in") + F.col("g_ahead")
                       - F.coalesce("c_ahead", z) - (F.col("ex_ahead") - F.col("ex_in_ahead"))))
    return c.select("_case", rank.cast("long").alias("rank"))


def counted_coverage(cases: DataFrame, items: DataFrame, k: int, category: bool) -> int:
    """The number of distinct items in some scored case's top ``k`` (:func:`counted_top`)."""
    return int(counted_top(cases, items, k, category)
               .agg(F.countDistinct("item_id").alias("n")).collect()[0]["n"])


def counted_top(cases: DataFrame, items: DataFrame, k: int, category: bool) -> DataFrame:
    """``(_case, item_id, _r)``: each scored case's top ``k`` (``_r`` 1..k): the first ``k``
    of its order (its query's category first when ``category``) that are not in its
    history. A case needs at most ``k`` + its history's length items of each order: the
    global order's first items (one ordered take of the longest need, collected) and its
    category's (a per-category window cut at that length)."""
    it = items.select("item_id", F.col("item_idx").alias("idx"), "s", "cat")
    q_cat = F.col("q_cat") if category else F.lit(-1)
    c = cases.select("_case", q_cat.alias("qc"),
                     (F.size("history") + F.lit(k)).alias("need"), "history")
    need = c.agg(F.max("need").alias("m")).collect()[0]["m"]
    if need is None:
        need = 0
    first = it.orderBy(F.desc("s"), "idx").limit(int(need)).collect()  # <= need rows
    top = cases.sparkSession.createDataFrame(
        [(r["item_id"], r["cat"], pos) for pos, r in enumerate(first)],
        "item_id string, cat int, pos int")
    cand = (c.join(F.broadcast(top), (F.col("pos") < F.col("need"))
                   & ((F.col("qc") < 0) | (F.col("cat") != F.col("qc"))))
            .select("_case", "item_id", F.lit(1).alias("part"), "pos"))
    if category:
        per_cat = c.filter(F.col("qc") >= 0).groupBy(F.col("qc").alias("cat")).agg(
            F.max("need").alias("cut"))
        ranked = (it.join(per_cat, "cat")
                  .withColumn("pos", F.row_number().over(
                      Window.partitionBy("cat").orderBy(F.desc("s"), "idx")) - 1)
                  .filter(F.col("pos") < F.col("cut")))
        cand = cand.unionByName(
            c.join(ranked, (F.col("qc") == F.col("cat")) & (F.col("pos") < F.col("need")))
            .select("_case", "item_id", F.lit(0).alias("part"), "pos"))
    excluded = c.select("_case", F.explode("history").alias("item_id")).distinct()
    w = Window.partitionBy("_case").orderBy("part", "pos")
    return (cand.join(excluded, ["_case", "item_id"], "left_anti")
            .withColumn("_r", F.row_number().over(w)).filter(F.col("_r") <= k)
            .select("_case", "item_id", "_r"))
