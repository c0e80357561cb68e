"""JVM options of the short-lived JVMs the tests start (the drivers of their subprocesses,
spark-sql, the standalone cluster's daemons and executors): the client compiler only.

The tests' JVMs live seconds to minutes on tiny data, where HotSpot's optimising compiler
(C2) does not pay back its compile work: in a fresh driver running the pipeline fixture's
run, the compiler threads took 58 of the JVM's 133 CPU seconds; the blend test's run (its own
process) took 81 CPU seconds with C1 against 105 with C2, in the same wall time. On this
2-core machine ``python -m pytest -n 0 tests/test_cluster.py`` took 563 CPU seconds with
``-XX:TieredStopAtLevel=1`` instead of 787 (wall 403 s instead of 458); in the whole suite
(CPU-bound: its two xdist workers keep both cores busy) test_catalog went 228 -> 80 s,
test_cluster 587 -> 466 s, test_faults 191 -> 140 s, and the suite 1,579 -> 1,499 s.

The test session's own JVM (``conftest.py``) keeps the default tiered compilation, as
benchmarks and users' runs do: it lives the whole run and trains hundreds of tests' models.
Alone, the pipeline fixture's run in a fresh JVM took 77 s with C2 and 106 s with C1 (the same
CPU seconds: MLlib's training loops run slower); inside the suite the two choices came out
equal (2,754 and 2,730 CPU seconds).

C1's compiled frames are larger than C2's: deserialising ALS's long lineage (a task of a
later iteration) overflowed the default 1 MiB thread stack (StackOverflowError; found while
the session's JVM had these options too, which it went down with), hence the larger stacks."""

#: ``-XX:TieredStopAtLevel=1``: C1 only; ``-Xss4m``: 4 MiB thread stacks (see the module doc)
TEST_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -Xss4m"
