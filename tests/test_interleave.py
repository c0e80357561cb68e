"""The streamed side-token interleave against the previous groupBy/collect_list version."""
import numpy as np
import pyarrow as pa
from chispa import assert_df_equality
from pyspark.sql import functions as F

from recemb_spark.models.side_info import (
    interleave_side_tokens,
    interleaved_token_counts,
    mark_once,
    rebuild_sentences,
)
from recemb_spark.models.word2vec import token_counts


def grouped_interleave(sentences, side, input_col="items"):
    """The interleave as it was (one collect_list per sentence after a broadcast join): the
    reference the new one must match."""
    numbered = (sentences.select(F.monotonically_increasing_id().alias("_s"), input_col)
                .select("_s", F.posexplode(input_col).alias("_p", "item_id")))
    joined = numbered.join(F.broadcast(side), "item_id", "left")
    tokens = F.concat(F.array("item_id"), F.coalesce("side", F.array().cast("array<string>")))
    return (joined.groupBy("_s")
            .agg(F.array_sort(F.collect_list(F.struct("_p", tokens.alias("_t")))).alias("_x"))
            .select(F.flatten(F.transform("_x", lambda e: e["_t"])).alias(input_col)))


def random_corpus(spark, seed, n_sentences=300, n_items=60):
    rng = np.random.default_rng(seed)
    sentences = [([f"i{v}" for v in rng.integers(0, n_items, rng.integers(1, 25))],)
                 for _ in range(n_sentences)]
    # some items without side tokens, some with one or three
    side = [(f"i{v}", [f"side:c{w}" for w in rng.integers(0, 7, rng.integers(1, 4))])
            for v in range(n_items) if v % 5]
    return (spark.createDataFrame(sentences, "items array<string>").repartition(3),
            spark.createDataFrame(side, "item_id string, side array<string>"))


def test_same_sentences_as_the_grouped_interleave(spark):
    sentences, side = random_corpus(spark, 7)
    got = interleave_side_tokens(sentences, side, 0.0, 1)
    assert_df_equality(got, grouped_interleave(sentences, side), ignore_row_order=True,
                       ignore_nullable=True)
    assert got.count() == sentences.count()


def test_the_broadcast_interleave_gives_the_same_sentences_in_their_order(spark):
    """With the side table broadcast: the keyed interleave's sentences, each in its input
    position (no shuffle), empty and null sentences left out as there; below the table's
    weight, or with an item on two side rows, the keyed path runs (the same rows)."""
    sentences, side = random_corpus(spark, 9, n_sentences=60)
    extra = spark.createDataFrame([([],), (None,), (["nope", "i1"],)], "items array<string>")
    sentences = sentences.unionByName(extra)
    want = grouped_interleave(sentences, side)
    got = interleave_side_tokens(sentences, side, 0.0, 1, broadcast_limit=10**9)
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)
    # the broadcast path keeps the input order: sentence by sentence, item tokens in place
    rows = [r["items"] for r in got.collect()]
    inputs = [r["items"] for r in sentences.collect() if r["items"]]
    assert [[t for t in r if not t.startswith("side:")] for r in rows] == inputs
    assert rows[-1] == ["nope", "i1", *side.filter("item_id = 'i1'").first()["side"]]
    small = interleave_side_tokens(sentences, side, 0.0, 1, broadcast_limit=1)  # too small
    assert_df_equality(small, want, ignore_row_order=True, ignore_nullable=True)
    twice = side.unionByName(side.limit(1))  # an item on two rows: the keyed path's result
    assert_df_equality(interleave_side_tokens(sentences, twice, 0.0, 1, broadcast_limit=10**9),
                       grouped_interleave(sentences, twice), ignore_row_order=True,
                       ignore_nullable=True)


def test_token_counts_without_building_the_sentences(spark):
    """The subsampling's counts: every token of the interleaved corpus (items, side tokens
    repeated within an item, items without side tokens), counted before interleaving."""
    sentences, side = random_corpus(spark, 11)
    walks = sentences.withColumnRenamed("items", "tokens")
    want = token_counts(interleave_side_tokens(walks, side, 0.0, 1, input_col="tokens"),
                        "tokens")
    assert_df_equality(interleaved_token_counts(walks, side, "tokens"), want,
                       ignore_row_order=True, ignore_nullable=True)


def test_other_column_name_and_subsampling_still_apply(spark):
    sentences, side = random_corpus(spark, 8)
    walks = sentences.withColumnRenamed("items", "tokens")
    got = interleave_side_tokens(walks, side, 0.0, 1, input_col="tokens")
    assert got.columns == ["tokens"]
    assert_df_equality(got, grouped_interleave(walks, side, "tokens"), ignore_row_order=True,
                       ignore_nullable=True)
    sub = interleave_side_tokens(walks, side, 1e-3, 1, input_col="tokens")
    full = sum(len(r["tokens"]) for r in got.collect())
    kept = [t for r in sub.collect() for t in r["tokens"]]
    items = [t for r in walks.collect() for t in r["tokens"]]
    assert len(kept) < full  # frequent side tokens dropped
    assert sorted(t for t in kept if not t.startswith("side:")) == sorted(items)


def test_rebuild_carries_a_sentence_across_batches():
    def batch(s, t):
        return pa.RecordBatch.from_arrays(
            [pa.array(s, pa.int64()), pa.array(range(len(s)), pa.int32()),
             pa.array(t, pa.list_(pa.string()))], names=["_s", "_p", "_t"])
    batches = [batch([1, 1, 2], [["a"], ["b", "x"], ["c"]]),
               batch([2, 2], [["d"], []]),
               batch([], []),
               batch([2, 5], [["e"], ["f", "y"]])]
    out = [r for b in rebuild_sentences(iter(batches), name="w") for r in b.to_pylist()]
    assert out == [{"w": ["a", "b", "x"]}, {"w": ["c", "d", "e"]}, {"w": ["f", "y"]}]


def runs_once(sentences, side):
    """The interleave with ``once`` marks, written out: an item's side tokens follow it unless
    it is marked once and the token before it in the sentence has the same side list."""
    rows = side.collect()
    lists = {r["item_id"]: r["side"] for r in rows}
    once = {r["item_id"] for r in rows if r["once"]}
    out = []
    for r in sentences.collect():
        previous, tokens = None, []
        for token in r["items"] or []:
            mine = lists.get(token)
            dropped = token in once and mine == previous
            tokens += [token, *(mine if mine and not dropped else [])]
            previous = mine
        if tokens:
            out.append(tokens)
    return sorted(out)


def test_items_marked_once_carry_a_run_of_one_side_list_once(spark):
    """Items marked ``once`` (:func:`mark_once`) lose their side tokens after a token with the
    same side list, on both paths (broadcast and keyed); unmarked items keep them, an item
    without side tokens breaks a run; subsampling then drops side tokens only."""
    rng = np.random.default_rng(5)
    side = spark.createDataFrame(
        [(f"i{v}", [f"side:c{v % 3}"] if v % 4 else [f"side:c{v % 3}", "side:x"], v % 5 > 0)
         for v in range(40) if v % 7], "item_id string, side array<string>, once boolean")
    sentences = spark.createDataFrame(
        [([f"i{v}" for v in 3 * rng.integers(0, 13, rng.integers(1, 20))
           + rng.integers(0, 2, 1)],) for _ in range(80)]
        + [([],), (None,), (["i3", "i3", "nope", "i3", "i15", "i3"],)], "items array<string>")
    want = runs_once(sentences, side)
    # i3 is marked once, i15 (same category) is not: it keeps its token after i3's
    assert ["i3", "side:c0", "i3", "nope", "i3", "side:c0", "i15", "side:c0", "i3"] in want
    for limit in (10**9, 0):
        got = interleave_side_tokens(sentences, side, 0.0, 1, broadcast_limit=limit)
        assert sorted(r["items"] for r in got.collect()) == want
    full = interleave_side_tokens(sentences, side.drop("once"), 0.0, 1)
    n_side = sum(t.startswith("side:") for r in full.collect() for t in r["items"])
    assert sum(t.startswith("side:") for r in want for t in r) < 0.7 * n_side
    sub = interleave_side_tokens(sentences, side, 1e-2, 1, broadcast_limit=10**9).collect()
    kept = [t for r in sub for t in r["items"]]
    assert sorted(t for t in kept if not t.startswith("side:")) == sorted(
        t for r in want for t in r if not t.startswith("side:"))
    assert len(kept) < sum(len(r) for r in want)


def test_mark_once_counts_the_items_in_the_sequences(spark):
    side = spark.createDataFrame([("a", ["side:x"]), ("b", ["side:x"]), ("c", ["side:y"])],
                                 "item_id string, side array<string>")
    sequences = spark.createDataFrame([(["a", "b", "a"],), (["a", "b"],)],
                                      "items array<string>")
    marked = mark_once(side, sequences, 2)
    assert sorted((r["item_id"], r["once"]) for r in marked.collect()) == [
        ("a", True), ("b", True), ("c", False)]
    assert sorted(r["item_id"] for r in mark_once(side, sequences, 3).collect()
                  if r["once"]) == ["a"]
    assert mark_once(side, sequences, 0) is side
