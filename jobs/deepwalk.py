"""spark-submit entry: the deepwalk stage (item graph, walks, DeepWalk/node2vec embeddings).

    spark-submit jobs/deepwalk.py --warehouse hdfs:///warehouse/recemb --run-date 2026-11-23
"""
import sys

from recemb_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["deepwalk", *sys.argv[1:]]))
