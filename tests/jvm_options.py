"""JVM options of the short-lived JVMs the tests start (the drivers of their subprocesses,
spark-sql, the standalone cluster's daemons and executors): the client compiler only.

The tests' JVMs live seconds to minutes on tiny data, where HotSpot's optimising compiler
(C2) never pays back its compile work: in a fresh driver running the pipeline fixture's run,
the compiler threads took 58 of the JVM's 133 CPU seconds. Measured with
``-XX:TieredStopAtLevel=1`` on this 2-core machine, ``python -m pytest -n 0
tests/test_cluster.py`` took 563 CPU seconds instead of 787 (wall 403 s instead of 458), and
the suite is CPU-bound (its two xdist workers keep both cores busy). Benchmarks and users'
runs keep the default tiered compilation: their JVMs live long enough for C2, and so does
the test session's own JVM (``conftest.py``), which trains the models of hundreds of tests:
with C1 there too, the files that train in it took 20-60% longer (test_daily 139 -> 210 s,
test_holdout 104 -> 162 s in the suite) while the subprocess-heavy ones gained (test_catalog
228 -> 78 s, test_cluster 587 -> 471 s).

C1's compiled frames are larger than C2's: deserialising ALS's long lineage (a task of a
later iteration) overflowed the default 1 MiB thread stack (StackOverflowError, and the
session's JVM went down), hence the larger stacks."""

#: ``-XX:TieredStopAtLevel=1``: C1 only; ``-Xss4m``: 4 MiB thread stacks (see the module doc)
TEST_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -Xss4m"
