"""spark-submit entry: the export stage (vectors and neighbour lists -> a new Redis version).

    spark-submit jobs/export.py --warehouse hdfs:///warehouse/recemb --run-date 2026-11-23 \
        --set export.host=redis.internal --set export.password_env=RECEMB_REDIS_PASSWORD
"""
import sys

from recemb_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
