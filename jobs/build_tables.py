"""spark-submit entry: input -> ratings, rejects, items, sequences.

    spark-submit jobs/build_tables.py --input ratings.csv --run-date 2026-11-23
"""
import sys

from recemb_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["tables", *sys.argv[1:]]))
