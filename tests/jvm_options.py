"""JVM options of every JVM the tests start (the session's, spark-submit's drivers and
executors, the standalone cluster's daemons, spark-sql): the client compiler only.

The tests' JVMs live seconds to minutes on tiny data, where HotSpot's optimising compiler
(C2) never pays back its compile work: in a fresh driver running the pipeline fixture's run,
the compiler threads took 58 of the JVM's 133 CPU seconds. Measured with
``-XX:TieredStopAtLevel=1`` on this 2-core machine, ``python -m pytest -n 0
tests/test_cluster.py`` took 563 CPU seconds instead of 787 (wall 403 s instead of 458), and
the suite is CPU-bound (its two xdist workers keep both cores busy). Benchmarks and users'
runs keep the default tiered compilation: their JVMs live long enough for C2.

C1's compiled frames are larger than C2's: deserialising ALS's long lineage (a task of a
later iteration) overflowed the default 1 MiB thread stack (StackOverflowError, and the
session's JVM went down), hence the larger stacks."""

#: ``-XX:TieredStopAtLevel=1``: C1 only; ``-Xss4m``: 4 MiB thread stacks (see the module doc)
TEST_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -Xss4m"
