"""``python -m recemb_spark.config``: see :func:`.generate.main`."""
import sys

from .generate import main

sys.exit(main())
