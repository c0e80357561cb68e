"""The exact top-K kernel: float32 scan + exact rescoring against the float64 scan it replaced.

    OPENBLAS_NUM_THREADS=1 python bench/topk_kernel.py     # one BLAS thread, as in a task

Times ``stream_top_k`` of this checkout and of commit 44907a0 (float64 scan; its source read
with ``git show``) on random item matrices, checks the lists and scores are identical, prints
a line per shape and writes ``bench/results/topk_kernel.json``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BASE = "44907a0"


def old_kernel() -> types.ModuleType:
    src = subprocess.run(["git", "show", f"{BASE}:recemb_spark/neighbors/topk.py"], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    mod = types.ModuleType("recemb_spark.neighbors._topk_base")
    mod.__package__ = "recemb_spark.neighbors"
    exec(compile(src, f"{BASE}:topk.py", "exec"), mod.__dict__)
    return mod


def main() -> None:
    from recemb_spark.neighbors import topk

    base = old_kernel()
    rng = np.random.default_rng(1)
    rows = []
    for n, dim, k in ((200_000, 32, 10), (200_000, 64, 10), (200_000, 32, 50)):
        items = rng.standard_normal((n, dim)).astype(np.float32)
        q = rng.standard_normal((2048, dim)).astype(np.float32)
        mt = np.ascontiguousarray(items.T)
        best: dict[str, float] = {}
        out = {}
        for _ in range(3):
            for name, mod in (("float32_scan", topk), ("float64_scan", base)):
                t = time.perf_counter()
                out[name] = mod.stream_top_k(q, mt, k)
                best[name] = min(best.get(name, np.inf), time.perf_counter() - t)
        same = all(np.array_equal(a, b) for a, b in zip(out["float32_scan"],
                                                          out["float64_scan"], strict=True))
        row = {"items": n, "dim": dim, "k": k, "queries": len(q), **{
            f"{m}_s": round(s, 3) for m, s in best.items()}, "identical": same}
        rows.append(row)
        print(f"{n:,} items x dim {dim}, {len(q)} queries, k={k}: float32 scan "
              f"{best['float32_scan']:.2f} s, float64 scan {best['float64_scan']:.2f} s, "
              f"identical lists and scores: {same}", flush=True)
    out_path = ROOT / "bench" / "results" / "topk_kernel.json"
    out_path.write_text(json.dumps({"base": BASE, "rows": rows}, indent=1))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
