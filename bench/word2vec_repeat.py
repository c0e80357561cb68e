"""Is MLlib Word2Vec repeatable? The same persisted corpus fitted twice in one local session,
seed 42, on 1 and on 2 partitions: the largest coordinate difference between the two fits.

    python bench/word2vec_repeat.py

On 2 partitions local mode's tasks update one shared array (MLlib broadcasts the vectors and a
local broadcast hands every task the driver's own array), so the fits differ; on 1 they are
equal. Writes ``bench/results/word2vec_repeat.json``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from pyspark.ml.feature import Word2Vec
from pyspark.sql import SparkSession

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    spark = (SparkSession.builder.master("local[2]").config("spark.driver.memory", "2g")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    rng = np.random.default_rng(0)
    vocab, n_sentences, length = 5000, 20000, 40
    sentences = [[f"i{int(x)}" for x in rng.zipf(1.3, size=length) % vocab]
                 for _ in range(n_sentences)]
    corpus = spark.createDataFrame([(s,) for s in sentences], "items array<string>")
    corpus = corpus.repartition(4).persist()
    corpus.count()
    results = {}
    for parts in (1, 2):
        fits = []
        for _ in range(2):
            model = Word2Vec(vectorSize=16, windowSize=5, minCount=1, maxIter=2,
                             numPartitions=parts, seed=42, inputCol="items").fit(corpus)
            fits.append({r["word"]: np.asarray(r["vector"].toArray())
                         for r in model.getVectors().collect()})
        diff = max(float(np.abs(fits[0][w] - fits[1][w]).max()) for w in fits[0])
        results[str(parts)] = {"max_abs_difference": diff, "words": len(fits[0])}
        print(f"numPartitions={parts}: largest |difference| between two fits {diff:.4g}",
              flush=True)
    spark.stop()
    write_json(str(ROOT / "bench" / "results" / "word2vec_repeat.json"),
               {"corpus": {"sentences": n_sentences, "length": length, "vocabulary": vocab},
                "seed": 42, "fits": results})


if __name__ == "__main__":
    main()
