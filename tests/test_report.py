"""`recemb report`: the data gathering on small tables, the page built from a real pipeline run
(two dates), and the page rendered by a real headless Chromium."""
from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from recemb_spark.cli import main
from recemb_spark.config import load_config
from recemb_spark.io.warehouse import Warehouse
from recemb_spark.metrics import metric_row, metrics_frame
from recemb_spark.report import gather

D1, D2 = "2026-10-31", "2026-11-01"
# tiny and fast: only item2vec (+ popularity) is trained; ann writes its neighbours exactly
TINY = ["sample.n_users=120", "sample.n_items=150", "sample.n_ratings=6000",
        "deepwalk.enabled=false", "als.enabled=false", "ann.method=exact",
        "ann.user_candidates=false", "ann.recall_sample=50", "item2vec.max_iter=2",
        "evaluate.protocol=holdout"]
HOSTILE = '<i>Film {}</i> & "friends" <script>alert(1)</script>'
SECTIONS = ["metrics", "headline", "trend", "embeddings", "neighbors", "timings", "rejects"]


def sets(*items):
    return [x for item in items for x in ("--set", item)]


def images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    """A warehouse from the real pipeline for D2, an extra date D1 of evaluation metrics
    (written with the Warehouse class, values lower), items retitled with HTML-hostile
    titles, and the report of D2 made by the CLI in-process."""
    import recemb_spark.session as session_module

    root = str(tmp_path_factory.mktemp("report") / "wh")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(session_module, "build_session", lambda *a, **k: spark)
        mp.setattr(spark, "stop", lambda: None)
        assert main(["run", "--run-date", D2, "--warehouse", root, "-q", *sets(*TINY)]) == 0
        wh = Warehouse(spark, root)
        d2 = wh.read("metrics", D2, stage="evaluate").collect()
        wh.write(metrics_frame(spark, [metric_row(r["model"], r["metric"], r["k"],
                                                  r["value"] * 0.8) for r in d2]),
                 "metrics", D1, stage="evaluate")
        items = wh.read("items", D2).collect()
        wh.write(spark.createDataFrame([(r["item_id"], HOSTILE.format(r["item_id"]), r["genres"])
                                        for r in items], "item_id string, title string, "
                                                         "genres array<string>"), "items", D2)
        out = io.StringIO()
        mp.setattr(sys, "stdout", out)
        rc = main(["report", "--run-date", D2, "--warehouse", root, "-q", *sets(*TINY)])
    assert rc == 0
    path = out.getvalue().strip().splitlines()[-1]
    return {"root": root, "path": path, "page": open(path, encoding="utf-8").read()}


# --------------------------------------------------------------------------------------------
# the page from a real run


def test_report_written_under_the_warehouse_with_every_section(built):
    assert built["path"] == os.path.join(built["root"], "_reports", f"dt={D2}", "report.html")
    page = built["page"]
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    assert 'class="missing"' not in page  # every input exists for D2
    # metrics table: popularity and item2vec, item and user query, the configured ks
    for text in ("<td>popularity</td>", "<td>item2vec</td>", "<td>user</td>", "HR@10", "HR@50",
                 "NDCG@10", "Coverage@10", "<h3>Stage ann</h3>", "item_recall@10"):
        assert text in page
    # stage timings from the manifests, with the timings inside a stage
    for stage in ("tables", "item2vec", "evaluate", "ann"):
        assert f"<td>{stage}</td>" in page
    # (the evaluate stage of the default train-once protocol: cases, then scoring per model)
    assert "score_item2vec&nbsp;" in page and "cases&nbsp;" in page
    assert "No rejects: all " in page and "input rows were accepted" in page
    assert "2 run date(s) up to 2026-11-01" in page


def test_report_is_self_contained_and_its_images_are_png(built):
    from PIL import Image

    page = built["page"]
    pngs = images(page)
    assert len(pngs) == 3  # bars, trend, one PCA (item2vec); timings are HTML bars
    for data in pngs:
        im = Image.open(io.BytesIO(data))
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 100
        assert len(set(im.convert("RGB").getdata())) > 20  # drawn, not blank
    assert not re.search(r'(src|href)="(https?:|//|file:)', page)
    assert "<link" not in page and "url(" not in page and "@import" not in page


def test_titles_are_escaped(built):
    page = built["page"]
    assert "<script" not in page and "<i>Film" not in page
    assert "&lt;i&gt;Film " in page and "&amp; &quot;friends&quot; &lt;script&gt;" in page


def test_neighbors_of_the_most_liked_items_match_the_tables(built, spark):
    cfg = load_config(overrides=[f"warehouse.path={built['root']}", *TINY])
    wh = Warehouse(spark, built["root"])
    models, items = gather.popular_neighbors(wh, D2, cfg)
    assert models == ["item2vec"] and len(items) == cfg.report.popular_items
    liked = (wh.read("ratings", D2).filter("rating >= 3.5").groupBy("item_id").count()
             .toPandas().sort_values(["count", "item_id"], ascending=[False, True]))
    assert [i.item_id for i in items] == list(liked["item_id"][:len(items)])
    assert [i.likes for i in items] == list(liked["count"][:len(items)])
    first = items[0]
    stored = (wh.read("item_neighbors", D2, "item2vec").filter(f"item_id = '{first.item_id}'")
              .orderBy("rank").limit(cfg.report.neighbors).collect())
    assert [(n[0], n[1]) for n in first.neighbors["item2vec"]] == \
        [(r["rank"], r["neighbor_id"]) for r in stored]
    assert first.neighbors["item2vec"][0][2] == HOSTILE.format(stored[0]["neighbor_id"])
    assert first.title == HOSTILE.format(first.item_id)
    genres = {r["item_id"]: r["genres"][0] for r in wh.read("items", D2).collect()}
    assert first.genre == genres[first.item_id]
    assert first.neighbors["item2vec"][0][4] == genres[stored[0]["neighbor_id"]]


def test_trend_holds_both_dates(built, spark):
    wh = Warehouse(spark, built["root"])
    trend = gather.hr_trend(wh, D2, 10)
    assert sorted(trend["dt"].unique()) == [D1, D2]
    wide = trend.pivot_table(index=["model", "query"], columns="dt", values="value")
    assert np.allclose(wide[D1], wide[D2] * 0.8)
    assert set(wide.index) == {("popularity", "-"), ("popularity_category", "-"),
                               ("item2vec", "item"), ("item2vec", "user")}
    assert sorted(gather.hr_trend(wh, D1, 10)["dt"].unique()) == [D1]  # nothing after the date


def test_sections_without_input_say_so_in_one_line(built, keep_spark, capsys):
    # D1 has evaluation metrics only: no manifests, embeddings, neighbours or rejects
    rc = main(["report", "--run-date", D1, "--warehouse", built["root"], "-q"])
    assert rc == 0
    page = open(capsys.readouterr().out.strip().splitlines()[-1], encoding="utf-8").read()
    notes = re.findall(r'<p class="missing">([^<]*)</p>', page)
    assert len(notes) == 4 and all("\n" not in n for n in notes)
    assert any("item_embeddings" in n for n in notes) and any("manifests" in n for n in notes)
    assert len(images(page)) == 2  # bars and trend still drawn
    # a date with nothing at all fails clearly (exit 4)
    assert main(["report", "--run-date", "2020-01-01", "--warehouse", built["root"]]) == 4
    assert "nothing in the warehouse" in capsys.readouterr().err


def test_without_matplotlib_report_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    rc = main(["report", "--run-date", D2, "--warehouse", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "matplotlib" in err and "recemb-spark[report]" in err


# --------------------------------------------------------------------------------------------
# gathering, on small generated tables


def metrics_df(rows):
    return pd.DataFrame(rows, columns=["stage", "model", "metric", "k", "value"])


def test_evaluation_table_and_other_metrics():
    m = metrics_df([
        ("evaluate", "popularity", "users", 0, 100), ("evaluate", "popularity", "hr", 10, 0.1),
        ("evaluate", "popularity", "ndcg", 10, 0.05), ("evaluate", "popularity", "coverage", 10,
                                                       0.02),
        ("evaluate", "popularity", "query_missing", 0, 0),
        ("evaluate", "w2v", "users", 0, 100), ("evaluate", "w2v", "hr", 10, 0.4),
        ("evaluate", "w2v", "ndcg", 10, 0.2), ("evaluate", "w2v", "hr", 50, 0.7),
        ("evaluate", "w2v", "ndcg", 50, 0.3), ("evaluate", "w2v", "query_missing", 0, 2),
        ("evaluate", "w2v", "heldout_missing", 0, 3), ("evaluate", "w2v", "user_hr", 10, 0.3),
        ("evaluate", "w2v", "user_ndcg", 10, 0.15),
        ("ann", "w2v", "item_recall", 10, 0.98), ("ann", "w2v", "item_seconds", 0, 1.5),
        ("als", "als", "rmse", 0, 0.9), ("als", "global_mean", "rmse", 0, 1.1)])
    t = gather.evaluation_table(m)
    assert list(t.columns) == ["model", "query", "users", "hr@10", "hr@50", "ndcg@10",
                               "ndcg@50", "coverage@10", "misses"]
    assert list(zip(t["model"], t["query"], strict=False)) == [("popularity", "-"), ("w2v", "item"),
                                                 ("w2v", "user")]
    assert t.loc[1, "hr@50"] == 0.7 and t.loc[1, "misses"] == 5 and t.loc[2, "misses"] == 0
    assert t.loc[2, "hr@10"] == 0.3 and t.loc[0, "users"] == 100
    other = gather.other_metrics(m)
    assert list(other) == ["ann", "als"]
    assert other["ann"].to_dict("records") == [{"model": "w2v", "item_recall@10": 0.98,
                                                "item_seconds": 1.5}]
    assert other["als"].set_index("model")["rmse"].to_dict() == {"als": 0.9, "global_mean": 1.1}
    assert gather.headline_k(m) == 10 and gather.headline_k(m, preferred=20) == 10
    assert gather.headline(m, 10)["hr"].tolist() == [0.1, 0.4, 0.3]
    assert gather.headline_k(metrics_df([])) is None


def test_pca_2d_finds_the_main_direction():
    rng = np.random.default_rng(0)
    t = rng.normal(size=200)
    m = np.outer(t, [3.0, 4.0, 0.0]) + rng.normal(scale=0.01, size=(200, 3))
    coords, explained = gather.pca_2d(m)
    assert coords.shape == (200, 2) and explained[0] > 0.99 and explained[1] < 0.01
    assert np.allclose(np.abs(coords[:, 0]), np.abs(5 * (t - t.mean())), atol=0.05)
    assert gather.pca_2d(np.zeros((0, 3)))[0].shape == (0, 2)


def test_keep_top_labels():
    labels = ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"]
    assert gather.keep_top_labels(labels, 2) == ["a"] * 5 + ["b"] * 3 + ["other"] * 4


def test_sample_is_bounded_and_deterministic(spark):
    df = spark.createDataFrame([(str(i), [float(i), 1.0]) for i in range(300)],
                               "item_id string, vector array<float>").repartition(3)
    a = [r["item_id"] for r in gather.sample_items(df, 40, seed=1).collect()]
    b = [r["item_id"] for r in gather.sample_items(df.repartition(5), 40, seed=1).collect()]
    c = [r["item_id"] for r in gather.sample_items(df, 40, seed=2).collect()]
    assert len(a) == 40 and sorted(a) == sorted(b) and sorted(a) != sorted(c)
    assert gather.sample_items(df, 1000, seed=1).count() == 300


def test_projection_without_items_colours_by_popularity(spark, tmp_path):
    wh = Warehouse(spark, str(tmp_path / "wh"))
    rng = np.random.default_rng(3)
    wh.write(spark.createDataFrame([(str(i), rng.normal(size=4).astype(float).tolist())
                                    for i in range(60)], "item_id string, vector array<float>"),
             "item_embeddings", D2, model="m")
    # item i gets i + 1 ratings: items 54..59 are the top 10%
    rated = [(f"u{j}", str(i), 4.0) for i in range(60) for j in range(i + 1)]
    wh.write(spark.createDataFrame(rated, "user_id string, item_id string, rating double"),
             "ratings", D2)
    cfg = load_config(overrides=["report.sample_items=25"])
    p = gather.projection(wh, D2, "m", cfg)
    assert p.colour_by == "popularity" and p.items == 60 and p.coords.shape == (25, 2)
    assert set(p.labels) <= {"top 10% most rated", "top 10-50%", "bottom 50%"}
    buckets = {r["item_id"]: r["label"] for r in
               gather.popularity_buckets(wh.read("ratings", D2)).collect()}
    assert buckets["59"] == "top 10% most rated" and buckets["40"] == "top 10-50%"
    assert buckets["3"] == "bottom 50%"


def test_rejects_and_stage_timings(spark, tmp_path):
    wh = Warehouse(spark, str(tmp_path / "wh"))
    assert gather.rejects_by_reason(wh, D2) is None and gather.manifests(wh, D2) == []
    wh.write(spark.createDataFrame([("f", "x", "bad_rating")] * 3 + [("f", "y", "empty_line")],
                                   "source string, line string, reason string"), "rejects", D2)
    assert gather.rejects_by_reason(wh, D2).values.tolist() == [["bad_rating", 3],
                                                                 ["empty_line", 1]]
    wh.write_manifest(D2, "b", {"stage": "b", "status": "failed", "seconds": 1.0,
                                "started_at": "2026-11-01T10:00:02", "error": "boom"})
    wh.write_manifest(D2, "a", {"stage": "a", "status": "ok", "seconds": 2.5,
                                "started_at": "2026-11-01T10:00:00",
                                "timings": {"read": 1.0, "write": 0.2},
                                "details": {"m": {"seconds": 0.5, "user_seconds": 0.7,
                                                  "items": 9}, "fit_seconds": 0.1}})
    wh.write_manifest(D2, "run", {"run_date": D2, "status": "failed", "seconds": 3.6,
                                  "started_at": "2026-11-01T09:59:59", "stages": []})
    t = gather.stage_timings(gather.manifests(wh, D2))  # run.json is the run's, not a stage
    assert t["stage"].tolist() == ["a", "b"] and t["seconds"].tolist() == [2.5, 1.0]
    assert gather.run_summary(wh, D2)["seconds"] == 3.6
    assert t["steps"][0] == [("read", 1.0), ("m user", 0.7), ("m", 0.5), ("write", 0.2),
                             ("fit_seconds", 0.1)]
    assert t["steps"][1] == [] and t["error"][1] == "boom"


# --------------------------------------------------------------------------------------------
# a real browser


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


def screenshot(page_path: str, png: str, profile: str, height: int = 4000) -> None:
    """Render a local HTML file with headless Chromium to a PNG of 1280 x ``height``."""
    browser = chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (Debian package 'chromium'): .ci/run must "
                        "install it")
        pytest.skip("chromium not installed (apt-get install chromium)")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
           f"--screenshot={png}", f"--window-size=1280,{height}", f"file://{page_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_chromium_renders_the_report(built, tmp_path):
    from PIL import Image

    png = str(tmp_path / "report.png")
    screenshot(built["path"], png, str(tmp_path / "profile"))
    im = Image.open(png).convert("RGB")
    assert im.size == (1280, 4000)
    colours = im.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 1000  # text, tables and charts drawn
    # the charts sit in the page: the top quarter (header, metrics, bars) is not empty either
    top = im.crop((0, 0, 1280, 1000)).getcolors(maxcolors=1 << 20)
    assert len(top) > 200
    keep = os.environ.get("RECEMB_REPORT_SCREENSHOT")
    if keep:  # for a person to look at: RECEMB_REPORT_SCREENSHOT=/some/file.png
        shutil.copy(png, keep)
        shutil.copy(built["path"], os.path.splitext(keep)[0] + ".html")
