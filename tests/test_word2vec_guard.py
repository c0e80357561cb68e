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
    driver_memory_setting,
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
    with pytest.raises(ConfigError,
                       match=r"Int.MaxValue.*item2vec.min_count.*item2vec.vector_size"):
        check_limits(INT_MAX // 100 + 1, 100, 2**50, section="item2vec")
    # just below the cell limit passes on a huge heap
    check_limits(INT_MAX // 100, 100, 2**50)
    # over half the heap: the estimate and the memory keys are named
    words = heap // 2 // driver_bytes(1, 64) + 1
    with pytest.raises(ConfigError, match=r"driver heap.*spark.driver_memory.*deepwalk.min_count"):
        check_limits(words, 64, heap, section="deepwalk")
    check_limits(words - 1, 64, heap)


def test_the_collected_updates_must_fit_max_result_size():
    """The 20M-event log's item2vec: 3,003,910 words x 32 collected 1,058 MiB per epoch and
    failed past a 1 GiB spark.driver.maxResultSize after minutes of training; the guard says
    so before the fit, naming the setting and a value (0 = unlimited passes)."""
    from recemb_spark.models.word2vec_guard import collected_bytes
    words = 3_003_910
    assert abs(collected_bytes(words, 32) / 2**20 - 1058.3) < 30  # the measured figure
    with pytest.raises(ConfigError, match=r"spark.driver.maxResultSize=2g.*driver_memory=4g"):
        check_limits(words, 32, 2**40, section="item2vec", result_limit=2**30)
    check_limits(words, 32, 2**40, result_limit=0)
    check_limits(words, 32, 2**40, result_limit=2 * 2**30)


def test_heap_error_is_one_line_naming_the_driver_memory_to_set():
    heap = 4 * 2**30
    words = 3_000_000  # x 64: ~7.4 GiB estimated, 17 GiB of heap to keep it under half
    need = driver_bytes(words, 64)
    with pytest.raises(ConfigError) as err:
        check_limits(words, 64, heap, section="deepwalk")
    message = str(err.value)
    assert "\n" not in message
    value = driver_memory_setting(need)
    assert f"set spark.driver.memory={value} " in message
    assert f"--driver-memory {value}" in message and f"spark.driver_memory={value}" in message
    # the value suggested is enough: the same vocabulary passes on that heap
    assert parse_memory(value) * 0.95 >= need / 0.5
    check_limits(words, 64, int(parse_memory(value) * 0.95), section="deepwalk")
    assert driver_memory_setting(1) == "1g"


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


def test_local_mode_leaves_room_for_the_cached_blocks(spark):
    """In local mode the executors' caches share the driver heap: the 3M-item log's DeepWalk
    (2.85M words, estimate 4.3 GiB) died in a 10 GiB driver; the guard now stops it first
    and asks for 14g. The test session is local."""
    from recemb_spark.models.word2vec_guard import LOCAL_HEAP_SHARE, heap_share
    assert heap_share(spark) == LOCAL_HEAP_SHARE < 0.5
    with pytest.raises(ConfigError, match=r"more than 35% .*spark.driver.memory=14g"):
        check_limits(2_854_081, 32, 10 * 2**30, section="deepwalk", share=heap_share(spark))
    check_limits(2_854_081, 32, 10 * 2**30, section="deepwalk")  # half of 10g would pass

