"""spark-submit entry: the evaluate stage for one run date (reads its inputs from the warehouse).

    spark-submit jobs/evaluate.py --warehouse hdfs:///warehouse/recemb --run-date 2026-11-23
"""
import sys

from recemb_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
