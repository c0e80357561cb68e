"""spark-submit entry: the item2vec stage for one run date (reads its inputs from the warehouse).

    spark-submit jobs/item2vec.py --warehouse hdfs:///warehouse/recemb --run-date 2026-11-23
"""
import sys

from recemb_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["item2vec", *sys.argv[1:]]))
