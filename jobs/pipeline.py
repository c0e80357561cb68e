"""spark-submit entry: every enabled stage for one run date (the whole pipeline).

    spark-submit jobs/pipeline.py --input ratings.csv --run-date 2026-11-23
"""
import sys

from recemb_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
