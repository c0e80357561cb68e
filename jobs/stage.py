"""spark-submit entry: one stage for one run date, named first (any stage declared in
``recemb_spark.stages.STAGES``); the other arguments are ``recemb``'s.

    spark-submit jobs/stage.py als --warehouse hdfs:///warehouse/recemb --run-date 2026-11-23
"""
import sys

from recemb_spark.cli import main
from recemb_spark.stages import STAGES

if __name__ == "__main__":
    names = [stage.name for stage in STAGES]
    if len(sys.argv) < 2 or sys.argv[1] not in names:
        print(f"usage: spark-submit jobs/stage.py STAGE [recemb options]; STAGE: "
              f"{', '.join(names)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
