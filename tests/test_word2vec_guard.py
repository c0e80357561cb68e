"""The guard that stops a Word2Vec fit whose driver-side arrays cannot fit (small numbers)."""
import pytest

from recemb_spark.config import load_config
from recemb_spark.errors import ConfigError
from recemb_spark.models.word2vec_guard import (
    INT_MAX,
    check_limits,
    check_word2vec_fits,
    driver_bytes,
    driver_heap_bytes,
    parse_memory,
)


def test_parse_memory():
    assert parse_memory("4g") == 4 * 2**30 and parse_memory("512m") == 512 * 2**20
    assert parse_memory("1024k") == 2**20 and parse_memory("2048") == 2048
    assert parse_memory("1.5G") == int(1.5 * 2**30)
    with pytest.raises(ValueError):
        parse_memory("lots")


def test_limits_name_the_keys():
    heap = 2**30
    # 1,000 words x 32: ~1.6 MB, far below half a GiB
    assert check_limits(1000, 32, heap) == driver_bytes(1000, 32) < heap // 2
    with pytest.raises(ConfigError, match=r"Int.MaxValue.*item2vec.min_count.*item2vec.vector_size"):
        check_limits(INT_MAX // 100 + 1, 100, 2**50, section="item2vec")
    # just below the cell limit passes on a huge heap
    check_limits(INT_MAX // 100, 100, 2**50)
    # over half the heap: the estimate and the memory keys are named
    words = heap // 2 // driver_bytes(1, 64) + 1
    with pytest.raises(ConfigError, match=r"driver heap.*deepwalk.min_count.*spark.driver_memory"):
        check_limits(words, 64, heap, section="deepwalk")
    check_limits(words - 1, 64, heap)


def test_counts_the_corpus_and_checks_the_running_driver(spark):
    sentences = spark.createDataFrame([(["a", "b", "a"],), (["c", "a", "b"],), (["d"],)],
                                      "items array<string>")
    cfg = load_config(overrides=["item2vec.min_count=2", "item2vec.vector_size=8"]).item2vec
    size = check_word2vec_fits(sentences, cfg, section="item2vec")
    assert (size.tokens, size.vocabulary) == (7, 2)                # a x3, b x2 kept
    assert size.driver_bytes == driver_bytes(2, 8)
    assert size.heap_bytes == driver_heap_bytes(spark) > 2**30     # the tests' 2g driver
    with pytest.raises(ConfigError, match="spark.driver_memory"):
        check_word2vec_fits(sentences, cfg, heap_bytes=driver_bytes(2, 8))  # 2x too small
