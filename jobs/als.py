"""spark-submit entry: the als stage (ALS factors, RMSE, user candidates).

    spark-submit jobs/als.py --warehouse hdfs:///warehouse/recemb --run-date 2026-11-23
"""
import sys

from recemb_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["als", *sys.argv[1:]]))
