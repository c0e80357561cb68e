"""The run report as one self-contained HTML page: tables, and matplotlib figures inlined as
base64 PNG (Agg canvas, no pyplot state, no external resources). Every piece of text that
comes from the data (titles, ids, model and stage names, reject reasons, errors) is escaped.

Needs matplotlib (the ``report`` extra); import this module only after
:func:`recemb_spark.report.require_matplotlib` has passed.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .gather import (
    OTHER,
    Projection,
    ReportData,
    evaluation_table,
    headline,
    model_order,
    other_metrics,
    stage_timings,
)

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

STYLE: dict[RcKeyType, Any] = {
    "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10,
    "ytick.labelsize": 10, "legend.fontsize": 10, "axes.spines.top": False,
    "axes.spines.right": False, "figure.dpi": 100}
#: distinct colours for models and genres, all visible on white (Okabe-Ito without its yellow,
#: then Tol's muted); grey is kept for popularity and "other"
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#8C564B", "#332288",
           "#999933", "#56B4E9", "#44AA99", "#882255", "#117733"]
OTHER_COLOUR = "#C8C8C8"
POPULARITY_COLOUR = "#6E6E6E"

CSS = """
body{font-family:"DejaVu Sans",Arial,Helvetica,sans-serif;margin:0;background:#f4f5f7;
 color:#1d2330;font-size:15px;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:20px;margin:26px 0 8px;padding-top:8px;border-top:2px solid #e3e6ea}
h3{font-size:16px;margin:18px 0 6px}
.sub{color:#566070;margin:0 0 12px}
nav{margin:10px 0 0;font-size:14px}
nav a{margin-right:14px;color:#0b5cad;text-decoration:none}
table{border-collapse:collapse;margin:6px 0 10px;font-size:14px}
th,td{padding:5px 10px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr:nth-child(even) td{background:#fafbfc}
td.best{font-weight:700;color:#0b5cad}
.wide{overflow-x:auto;max-width:100%}
.missing{color:#8a5a00;background:#fff7e6;border-left:4px solid #f0b040;padding:6px 10px}
.note{color:#566070;font-size:13px}
img.fig{display:block;max-width:100%;height:auto;margin:6px 0}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.grid figure{margin:0;flex:0 1 372px;max-width:372px}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;margin:6px 0 4px;font-size:14px}
.legend span.sw{display:inline-block;width:13px;height:13px;border-radius:50%;
 margin-right:6px;vertical-align:-1px}
.cards{display:flex;flex-direction:column;gap:14px}
table.nb{width:100%;table-layout:fixed;margin:2px 0 4px}
table.nb td,table.nb th{overflow-wrap:anywhere;padding:3px 8px}
.cards h3{margin:8px 0 2px}
.genre{display:inline-block;font-size:11px;color:#3b4350;background:#eef1f5;border-radius:3px;
 padding:0 5px;margin-left:4px;white-space:nowrap}
td.bar{width:26%}
.bar div{background:#0072B2;height:14px;border-radius:2px;display:inline-block;
 vertical-align:-2px}
.bar div.failed{background:#b00020}
table.nb th.rank,table.nb td.rank{width:44px;text-align:right}
.sim{color:#566070;font-size:12px;white-space:nowrap}
.id{color:#566070;font-size:12px}
.bad{color:#b00020;font-weight:600}
.ok{color:#1a7f37}
"""


# --------------------------------------------------------------------------------------------
# small helpers


def esc(value: Any) -> str:
    """Text from the data, escaped for HTML (quotes too: it may land in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


#: metric names (or parts of them) whose values are counts, shown as integers
COUNT_NAMES = ("users", "misses", "items_with", "pairs", "count", "rows", "items", "vectors")


def fmt_metric(name: str, value: Any) -> str:
    """A metric by its name: counts as integers, seconds with two decimals, the rest
    (rates, recall, RMSE) with four."""
    base = name.split("@")[0]
    if any(part in base for part in COUNT_NAMES):
        return fmt(value)
    v, text = as_number(value)
    if v is None:
        return text
    return f"{v:,.2f}" if "seconds" in base else f"{v:.4f}"


def as_number(value: Any) -> tuple[float | None, str]:
    """``(number, "")``, or ``(None, the cell's text)`` for a value that is not a number
    (escaped) or is NaN (an en dash)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None, esc(value)
    if math.isnan(v):
        return None, "&ndash;"
    return v, ""


def fmt(value: Any, digits: int = 4) -> str:
    """A table number: integers with thousands separators, others with ``digits`` decimals
    (one decimal from 100 up); missing values as an en dash."""
    if value is None:
        return "&ndash;"
    v, text = as_number(value)
    if v is None:
        return text
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.{digits}f}"


def png(fig: Figure) -> str:
    """The figure as a ``data:`` URI of a PNG (rendered by the Agg canvas)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", pad_inches=0.15,
                facecolor="white", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img(fig: Figure, alt: str) -> str:
    return f'<img class="fig" src="{png(fig)}" alt="{esc(alt)}">'


def missing(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


def table(header: list[str], rows: Iterable[list[str]], num: Iterable[int] = ()) -> str:
    """An HTML table; cells are already-escaped HTML; columns in ``num`` align right."""
    num = set(num)
    head = "".join(f'<th{" class=num" if i in num else ""}>{h}</th>'
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(
        (cell if cell.startswith("<td") else
         f'<td{" class=num" if i in num else ""}>{cell}</td>') for i, cell in enumerate(row))
        + "</tr>" for row in rows)
    return (f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            f"</table></div>")


def model_colours(models: Iterable[str]) -> dict[str, str]:
    """One colour per model, by name (so every chart and every date agree), popularity grey."""
    names = sorted(set(models) - {"popularity"})
    out = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(names)}
    out["popularity"] = POPULARITY_COLOUR
    return out


def series_label(model: str, query: str) -> str:
    return model if query == "-" else f"{model} · {query} query"


# --------------------------------------------------------------------------------------------
# figures


def headline_figure(bars: pd.DataFrame, k: int) -> Figure:
    """HR@k and NDCG@k per model and query: two panels of horizontal bars, values printed."""
    labels = [series_label(m, q) for m, q in zip(bars["model"], bars["query"], strict=False)]
    colours = model_colours(bars["model"])
    y = np.arange(len(bars))[::-1]
    with rc_context(STYLE):
        fig = Figure(figsize=(11, 0.36 * len(bars) + 1.2))
        axes = fig.subplots(1, 2, sharey=True)
        for ax, col, title in zip(axes, ("hr", "ndcg"), (f"HR@{k}", f"NDCG@{k}"), strict=False):
            values = bars[col].astype(float).fillna(0.0).to_numpy()
            user = (bars["query"] == "user").to_numpy()
            colour = [colours[m] for m in bars["model"]]
            ax.barh(y[~user], values[~user],
                    color=[c for c, u in zip(colour, user, strict=False) if not u], height=0.72)
            # user queries: the model's colour, lighter and hatched (the trend draws them dashed)
            ax.barh(y[user], values[user],
                    color=[c for c, u in zip(colour, user, strict=False) if u],
                    alpha=0.45, hatch="///", edgecolor="white", linewidth=0, height=0.72)
            for yi, v in zip(y, values, strict=False):
                ax.text(v, yi, f" {v:.3f}", va="center", fontsize=10)
            ax.set_title(title, loc="left", fontweight="bold")
            ax.set_xlim(0, max(float(values.max()) if len(values) else 0.0, 1e-9) * 1.22)
            ax.grid(axis="x", color="#e3e6ea")
            ax.set_axisbelow(True)
        axes[0].set_yticks(y, labels)
        axes[1].tick_params(axis="y", left=False)
        fig.tight_layout()
    return fig


def trend_figure(trend: pd.DataFrame, k: int) -> Figure:
    """HR@k over the dates, one line per model and query (user queries dashed)."""
    dates = sorted(trend["dt"].unique())
    pos = {d: i for i, d in enumerate(dates)}
    colours = model_colours(trend["model"])
    with rc_context(STYLE):
        fig = Figure(figsize=(11, 3.3))
        ax = fig.subplots()
        series = sorted(trend.groupby(["model", "query"]), key=lambda kv: model_order(kv[0]))
        for (model, query), part in series:
            part = part.sort_values("dt")
            ax.plot([pos[d] for d in part["dt"]], part["value"], marker="o", markersize=5,
                    linewidth=2, color=colours[model],
                    linestyle="--" if query == "user" else "-",
                    label=series_label(model, query))
        step = max(1, math.ceil(len(dates) / 12))
        ticks = list(range(0, len(dates), step))
        ax.set_xticks(ticks, [dates[i] for i in ticks],
                      rotation=30 if len(ticks) > 6 else 0, ha="right" if len(ticks) > 6
                      else "center")
        ax.set_xlim(-0.5, len(dates) - 0.5)
        ax.set_ylim(0, max(float(trend["value"].max()), 1e-9) * 1.15)
        ax.set_ylabel(f"HR@{k}")
        ax.grid(color="#e3e6ea")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.tight_layout()
    return fig


def label_colours(projections: list[Projection]) -> dict[str, str]:
    """One colour per label over all projections (most frequent first), ``other`` grey."""
    counts = pd.Series([x for p in projections for x in p.labels], dtype="object").value_counts()
    ranked = sorted((name for name in counts.index if name != OTHER),
                    key=lambda n: (-counts[n], n))
    out = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(ranked)}
    if OTHER in counts.index:
        out[OTHER] = OTHER_COLOUR
    return out


def projection_figure(p: Projection, colours: dict[str, str]) -> Figure:
    """One model's PCA scatter (no legend: the page draws one shared legend)."""
    with rc_context({**STYLE, "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
                     "xtick.labelsize": 9, "ytick.labelsize": 9}):
        fig = Figure(figsize=(3.75, 3.3))
        ax = fig.subplots()
        labels = np.array(p.labels, dtype=object)
        order = [OTHER] + [x for x in colours if x != OTHER]  # grey underneath
        for name in order:
            mask = labels == name
            if mask.any():
                ax.scatter(p.coords[mask, 0], p.coords[mask, 1], s=9, alpha=0.8,
                           color=colours[name], linewidths=0)
        ax.set_title(f"{p.model}  ({len(p.labels):,} of {p.items:,} items)", loc="left",
                     fontweight="bold")
        ax.set_xlabel(f"PC1 ({p.explained[0]:.0%} of variance)")
        ax.set_ylabel(f"PC2 ({p.explained[1]:.0%})")
        ax.grid(color="#eef0f3")
        ax.set_axisbelow(True)
        fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# sections


#: a stage's metrics table with more metric columns than this is shown one row per metric
#: (the models as columns), so that it fits the page instead of scrolling sideways
MAX_METRIC_COLUMNS = 6


def metrics_section(data: ReportData) -> str:
    if data.metrics is None or data.metrics.empty:
        return missing(f"No metrics table for dt={data.run_date} (run the evaluate stage).")
    out = []
    ev = evaluation_table(data.metrics)
    if ev.empty:
        out.append(missing(f"No evaluation metrics for dt={data.run_date}."))
    else:
        cols = list(ev.columns)
        metric_cols = [c for c in cols if "@" in c]
        best = {c: ev[c].max() for c in metric_cols}
        header = [esc(c.upper().replace("COVERAGE", "Coverage")) if "@" in c else esc(c)
                  for c in cols]
        rows = []
        for r in ev.itertuples(index=False):
            row = []
            for c, v in zip(cols, r, strict=False):
                if c in metric_cols:
                    cls = "num best" if pd.notna(v) and v == best[c] and len(ev) > 1 else "num"
                    row.append(f'<td class="{cls}">{fmt_metric(c, v)}</td>')
                elif c in ("users", "misses"):
                    row.append(fmt(v))
                else:
                    row.append(esc(v))
            rows.append(row)
        out.append("<h3>Leave-last-out evaluation</h3>")
        out.append(table(header, rows, num=[i for i, c in enumerate(cols)
                                            if c not in ("model", "query")]))
        out.append('<p class="note">query: <b>item</b> = the vector of the user\'s last liked '
                   'training item, <b>user</b> = the user vector; misses = query or held-out '
                   'items without a vector. Best value per column in bold.</p>')
    for stage, wide in other_metrics(data.metrics).items():
        cols = list(wide.columns)
        out.append(f"<h3>Stage {esc(stage)}</h3>")
        if len(cols) - 1 > MAX_METRIC_COLUMNS:  # many metrics, few models: one row per metric
            models = [str(m) for m in wide["model"]]
            out.append(table(["metric"] + [esc(m) for m in models],
                             [[esc(c)] + [fmt_metric(c, v) for v in wide[c]] for c in cols[1:]],
                             num=range(1, len(models) + 1)))
            continue
        out.append(table([esc(c) for c in cols],
                         [[esc(v) if c == "model" else fmt_metric(c, v)
                           for c, v in zip(cols, r, strict=False)]
                          for r in wide.itertuples(index=False)],
                         num=range(1, len(cols))))
    return "".join(out)


def headline_section(data: ReportData) -> str:
    if data.metrics is None or data.k is None:
        return missing(f"No evaluation metrics for dt={data.run_date}: nothing to chart.")
    bars = headline(data.metrics, data.k)
    return img(headline_figure(bars, data.k),
               f"HR@{data.k} and NDCG@{data.k} per model and query")


def trend_section(data: ReportData) -> str:
    if data.trend is None or data.trend.empty:
        return missing("No evaluation metrics in the metrics table: no trend to draw.")
    dates = data.trend["dt"].nunique()
    note = (f'<p class="note">{dates} run date(s) up to {esc(data.run_date)} in the metrics '
            f'table.</p>')
    return note + img(trend_figure(data.trend, data.k or 10), f"HR@{data.k} over the run dates")


def projections_section(data: ReportData) -> str:
    if not data.projections:
        return missing(f"No item_embeddings for dt={data.run_date}.")
    colours = label_colours(data.projections)
    by = {p.colour_by for p in data.projections}
    what = ("first genre (items table)" if by == {"genre"} else
            "popularity bucket (number of ratings; no items table)" if by == {"popularity"}
            else "label")
    legend = "".join(f'<span><span class="sw" style="background:{c}"></span>{esc(name)}</span>'
                     for name, c in colours.items())
    figs = "".join(f"<figure>{img(projection_figure(p, colours), f'PCA of {p.model}')}</figure>"
                   for p in data.projections)
    return (f'<p class="note">Item vectors (unit length) projected on their first two principal '
            f'components; a seeded sample per model, coloured by {esc(what)}.</p>'
            f'<div class="legend">{legend}</div><div class="grid">{figs}</div>')


def item_label(item_id: str, title: str | None, genre: str | None = None) -> str:
    text = (f'{esc(title)} <span class="id">#{esc(item_id)}</span>' if title
            else f'<span class="id">item</span> {esc(item_id)}')
    return text + (f'<span class="genre">{esc(genre)}</span>' if genre else "")


def neighbors_section(data: ReportData) -> str:
    if data.neighbors is None:
        return missing(f"No item_neighbors (or no ratings) for dt={data.run_date} "
                       f"(run the ann stage).")
    models, items = data.neighbors
    if not items:
        return missing(f"No liked ratings for dt={data.run_date}.")
    cards = []
    for it in items:
        depth = max([len(v) for v in it.neighbors.values()] + [0])
        head = ['<th class="rank">#</th>'] + [f"<th>{esc(m)}</th>" for m in models]
        rows = []
        for i in range(depth):
            cells = [f'<td class="rank">{i + 1}</td>']
            for m in models:
                lst = it.neighbors.get(m, [])
                nb = lst[i] if i < len(lst) else None
                cells.append(f"<td>{item_label(nb.item_id, nb.title, nb.genre)} "
                             f'<span class="sim">cos {nb.similarity:.3f}</span></td>'
                             if nb is not None else "<td>&ndash;</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        body = ("".join(rows) if rows else
                f'<tr><td colspan="{len(models) + 1}">no neighbours stored</td></tr>')
        cards.append(f"<div><h3>{item_label(it.item_id, it.title, it.genre)} "
                     f'<span class="note">&middot; liked {it.likes:,} times</span></h3>'
                     f'<table class="nb"><thead><tr>{"".join(head)}</tr></thead>'
                     f"<tbody>{body}</tbody></table></div>")
    return ('<p class="note">The most-liked items of the ratings table and their nearest items '
            'in each model (item_neighbors, cosine).</p>'
            f'<div class="cards">{"".join(cards)}</div>')


def timings_section(data: ReportData) -> str:
    if not data.manifests:
        return missing(f"No stage manifests under _manifests/dt={data.run_date}.")
    t = stage_timings(data.manifests)
    longest = max(float(t["seconds"].max()), 1e-9)
    rows = []
    for r in t.itertuples(index=False):
        status = (f'<span class="ok">{esc(r.status)}</span>' if r.status == "ok" else
                  f'<span class="bad">{esc(r.status)}</span>')
        bar = (f'<td class="bar"><div class="{"" if r.status == "ok" else "failed"}" '
               f'style="width:{max(r.seconds / longest * 100, 0.5):.1f}%"></div></td>')
        steps = " &middot; ".join(f"{esc(n)}&nbsp;{s:.1f}&nbsp;s" for n, s in r.steps
                                  if s >= 0.05) or "&ndash;"
        if r.error:
            steps += f'<br><span class="bad">{esc(r.error)}</span>'
        rows.append([esc(r.stage), status, f"{r.seconds:.1f}", bar, steps])
    total = float(t["seconds"].sum())
    run = (f" The run: {esc(str(data.run.get('status')))} in "
           f"{float(data.run.get('seconds') or 0.0):.1f} s (run.json)." if data.run else "")
    return (f'<p class="note">{len(t)} stage(s), {total:.1f} s in all, in the order they '
            f'started; the timings inside a stage longest first.{run}</p>'
            + table(["stage", "status", "seconds", "", "timings inside the stage"], rows,
                    num=[2]))


def rejects_section(data: ReportData) -> str:
    tables_manifest = next((m for m in data.manifests if m.get("stage") == "tables"), None)
    read = (tables_manifest or {}).get("rows", {}).get("read")
    if data.rejects is None:
        return missing(f"No rejects partition for dt={data.run_date} (run the tables stage).")
    if data.rejects.empty:
        return (f"<p>No rejects: all {fmt(read)} input rows were accepted.</p>" if read
                else "<p>No rejects.</p>")
    total = int(data.rejects["rows"].sum())
    rows = [[esc(r.reason), fmt(r.rows), f"{r.rows / read:.2%}" if read else "&ndash;"]
            for r in data.rejects.itertuples(index=False)]
    intro = (f"<p>{total:,} of {fmt(read)} input rows rejected.</p>" if read
             else f"<p>{total:,} rows rejected.</p>")
    return intro + table(["reason", "rows", "share of input"], rows, num=[1, 2])


SECTIONS = [
    ("metrics", "Metrics", metrics_section),
    ("headline", "HR and NDCG per model", headline_section),
    ("trend", "HR trend over run dates", trend_section),
    ("embeddings", "Item embeddings (PCA)", projections_section),
    ("neighbors", "Neighbours of popular items", neighbors_section),
    ("timings", "Stage timings", timings_section),
    ("rejects", "Rejects by reason", rejects_section),
]


def summary(data: ReportData) -> str:
    """One line of row counts from the tables manifest and the stages' status."""
    parts = []
    tables_manifest = next((m for m in data.manifests if m.get("stage") == "tables"), None)
    if tables_manifest:
        rows = tables_manifest.get("rows", {})
        parts += [f"{esc(k)} {fmt(rows[k])}" for k in ("ratings", "items", "sequences")
                  if k in rows]
    failed = [m.get("stage") for m in data.manifests if m.get("status") != "ok"]
    if data.manifests:
        parts.append(f"{len(data.manifests)} stage(s) recorded" +
                     (f', <span class="bad">failed: {esc(", ".join(map(str, failed)))}</span>'
                      if failed else ", all ok"))
    return " &middot; ".join(parts)


def render_page(data: ReportData, generated_at: str | None = None) -> str:
    """The whole report as one HTML document (UTF-8 text, images inline)."""
    generated_at = generated_at or dt.datetime.now(dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title, _ in SECTIONS)
    body = "".join(f'<section id="{sid}"><h2>{esc(title)}</h2>{fn(data)}</section>'
                   for sid, title, fn in SECTIONS)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>recemb-spark report dt={esc(data.run_date)}</title>"
            f"<style>{CSS}</style></head><body><main>"
            f"<h1>recemb-spark run report &middot; dt={esc(data.run_date)}</h1>"
            f'<p class="sub">warehouse {esc(data.warehouse)} &middot; generated '
            f"{esc(generated_at)}</p><p>{summary(data)}</p><nav>{nav}</nav>"
            f"{body}</main></body></html>\n")
