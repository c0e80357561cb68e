"""spark-submit entry: the daily stage (overlap with the previous date, forward evaluation).

    spark-submit jobs/daily.py --warehouse hdfs:///warehouse/recemb --run-date 2026-11-23
"""
import sys

from recemb_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["daily", *sys.argv[1:]]))
