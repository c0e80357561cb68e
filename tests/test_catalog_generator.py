"""The Taobao-shaped log generator of bench/catalog.py, on tiny sizes (numpy only, no Spark)."""
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from catalog import DAYS, T0, Shape, generate, item_counts, write_log  # noqa: E402

SHAPE = Shape.of(60_000, items=8_000, seed=3)


@pytest.fixture(scope="module")
def log():
    return pa.concat_tables(generate(SHAPE, chunk_events=15_000))


def test_columns_rows_and_ids(log):
    assert log.column_names == ["user_id", "item_id", "category_id", "behavior", "timestamp"]
    assert log.num_rows == SHAPE.events
    items = log.column("item_id").to_numpy()
    assert len(np.unique(items)) == SHAPE.items  # exactly the catalogue asked for
    assert items.min() >= 1 and items.max() <= SHAPE.items
    users = log.column("user_id").to_numpy()
    assert users.min() >= 1 and users.max() <= SHAPE.users
    assert len(np.unique(users)) > 0.8 * SHAPE.users
    ts = log.column("timestamp").to_numpy()
    assert ts.min() >= T0 and ts.max() < T0 + DAYS * 86400 + 86400


def test_behaviour_mix(log):
    beh = log.column("behavior").to_numpy(zero_copy_only=False)
    share = {b: float(np.mean(beh == b)) for b in ("pv", "cart", "fav", "buy")}
    assert abs(share["pv"] - 0.895) < 0.01 and abs(share["cart"] - 0.055) < 0.005
    assert abs(share["fav"] - 0.03) < 0.005 and abs(share["buy"] - 0.02) < 0.005
    assert sum(share.values()) == pytest.approx(1.0)


def test_long_tail_and_head(log):
    _, counts = np.unique(log.column("item_id").to_numpy(), return_counts=True)
    assert abs(np.mean(counts == 1) - 0.5) < 0.01          # about half the items seen once
    top = np.sort(counts)[::-1]
    assert top[: len(top) // 100].sum() > 0.1 * SHAPE.events  # the top 1% holds > 10%
    # each item in one category; categories of very different sizes
    pairs = np.unique(np.stack([log.column("item_id").to_numpy(),
                                log.column("category_id").to_numpy()]), axis=1)
    assert pairs.shape[1] == SHAPE.items
    _, per_cat = np.unique(pairs[1], return_counts=True)
    assert per_cat.max() > 5 * np.median(per_cat)


def test_users_browse_few_categories_in_sessions(log):
    user = log.column("user_id").to_numpy()
    cat = log.column("category_id").to_numpy()
    pairs = np.unique(np.stack([user, cat]), axis=1)
    _, cats_per_user = np.unique(pairs[0], return_counts=True)
    assert cats_per_user.max() <= 4 and np.mean(cats_per_user) < 3
    # in time order, a user's next event is mostly in the same category (sessions)
    order = np.lexsort((log.column("timestamp").to_numpy(), user))
    same_user = user[order][1:] == user[order][:-1]
    same_cat = cat[order][1:] == cat[order][:-1]
    assert same_cat[same_user].mean() > 0.7


def test_counts_add_up_even_when_events_barely_exceed_items():
    rng = np.random.default_rng(0)
    for events, items in [(1000, 1000), (1500, 1000), (10_000, 300)]:
        c = item_counts(Shape.of(events, items), rng)
        assert c.sum() == events and len(c) == items and c.min() >= 1
    with pytest.raises(ValueError, match="--items"):
        Shape.of(100, items=200)


def test_deterministic_by_seed(tmp_path, log):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert write_log(SHAPE, a, chunk_events=15_000) == SHAPE.events
    write_log(SHAPE, b, chunk_events=15_000)
    assert a.read_bytes() == b.read_bytes()
    other = pa.concat_tables(generate(Shape.of(60_000, items=8_000, seed=4), 15_000))
    assert not other.equals(log)
    first = a.read_text().splitlines()[0].split(",")
    assert len(first) == 5 and first[3] in ("pv", "cart", "fav", "buy")  # no header
    back = pacsv.read_csv(a, read_options=pacsv.ReadOptions(column_names=log.column_names))
    assert back.num_rows == SHAPE.events
