"""spark-submit entry: the ann stage (item_neighbors, user_candidates, recall).

    spark-submit jobs/ann.py --warehouse hdfs:///warehouse/recemb --run-date 2026-11-23
"""
import sys

from recemb_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["ann", *sys.argv[1:]]))
