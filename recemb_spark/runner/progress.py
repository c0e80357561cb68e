"""Progress lines while long Spark work runs, so a run of many minutes never sits silent.

``with progress(spark, "item2vec"):`` starts a daemon thread that, every ``every`` seconds
(default :data:`EVERY_SECONDS`), logs one line: the label, the current step (what
:func:`set_step` last named, e.g. a ``StageResult.timed`` block), the elapsed time, how many
Spark jobs finished since the block began, and for each active Spark stage its tasks done /
running / total (from ``SparkContext.statusTracker()``; MLlib Word2Vec runs one job per
epoch, ALS one per iteration, so the job count is the epoch or iteration count). Leaving the
block stops the thread. Nothing is logged for blocks shorter than ``every``.

Each line also samples the driver JVM's garbage collection (JMX): when it spent at least
:data:`GC_WARN_SHARE` of the interval collecting, a warning says the driver is short of
memory and names the setting. A driver heap that fills does not fail at once: it collects
almost without pause and the run stalls (the 5M-event log's run g: 434 full collections,
469 s of GC in 12 minutes, no error).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the runner's declarations import this module before Spark is needed
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: seconds between two progress lines
EVERY_SECONDS = 45.0
#: warn when the driver JVM spent at least this share of an interval in garbage collection
GC_WARN_SHARE = 0.5

_step: str | None = None


def set_step(step: str | None) -> str | None:
    """Name the step the running stage is in (shown in progress lines; None clears it);
    return the previous one (to restore when a nested step ends)."""
    global _step
    previous, _step = _step, step
    return previous


class ProgressReporter:
    """The reporting thread behind :func:`progress` (start/stop; ``lines`` counts logs)."""

    def __init__(self, spark: SparkSession, label: str, every: float = EVERY_SECONDS,
                 logger: logging.Logger = log):
        self.spark, self.sc = spark, spark.sparkContext
        self.label, self.every, self.log = label, every, logger
        self.lines = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"progress-{label}",
                                        daemon=True)
        self._t0 = time.perf_counter()
        self._jobs_before: set[int] = set()
        #: (when, the driver's GC milliseconds then) at the last sample; set by start
        self._gc_before: tuple[float, float | None] = (self._t0, None)

    def start(self) -> ProgressReporter:
        self._t0 = time.perf_counter()
        self._jobs_before = self._known_jobs()
        self._gc_before = (self._t0, _driver_gc_ms(self.spark))
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _known_jobs(self) -> set[int]:
        try:
            tracker = self.sc.statusTracker()
            return set(tracker.getJobIdsForGroup(None)) | set(tracker.getActiveJobsIds())
        except Exception:  # the context is stopping
            return set()

    def line(self) -> str:
        """The progress line for now."""
        elapsed = time.perf_counter() - self._t0
        head = f"{self.label}{f' / {_step}' if _step else ''}: {_fmt(elapsed)} elapsed"
        try:
            tracker = self.sc.statusTracker()
            active = sorted(tracker.getActiveJobsIds())
            new = self._known_jobs() - self._jobs_before
            done = len(new - set(active))
            parts = []
            for sid in sorted(tracker.getActiveStageIds()):
                info = tracker.getStageInfo(sid)
                if info is not None:
                    parts.append(f"stage {sid} '{info.name}' tasks {info.numCompletedTasks}"
                                 f"/{info.numTasks} done, {info.numActiveTasks} running")
        except Exception as exc:  # the context is stopping: say so, never raise from here
            return f"{head}; Spark status unavailable ({type(exc).__name__})"
        if not active:
            return f"{head}; {done} Spark jobs done, none running (driver-side work)"
        return f"{head}; {done} Spark jobs done, running job {active}: " + "; ".join(parts)

    def gc_warning(self) -> str | None:
        """A warning when the driver JVM spent at least :data:`GC_WARN_SHARE` of the time
        since the last call collecting garbage, else None."""
        now, gc_ms = time.perf_counter(), _driver_gc_ms(self.spark)
        (then, before), self._gc_before = self._gc_before, (now, gc_ms)
        if gc_ms is None or before is None:
            return None
        share = gc_share(gc_ms - before, now - then)
        if share < GC_WARN_SHARE:
            return None
        return (f"the driver JVM spent {share:.0%} of the last {_fmt(now - then)} collecting "
                f"garbage{_heap_text(self.spark)}: it is short of memory and the run may stall; "
                "give it more (--set spark.driver_memory=..., or spark-submit --driver-memory)")

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.log.info("progress %s", self.line())
            warning = self.gc_warning()
            if warning:
                self.log.warning("%s: %s", self.label, warning)
            self.lines += 1


def gc_share(gc_ms: float, seconds: float) -> float:
    """The share (0..1) of ``seconds`` of wall time that ``gc_ms`` milliseconds of garbage
    collection took (collectors that run in parallel can sum past the wall time: capped)."""
    if seconds <= 0:
        return 0.0
    return min(1.0, max(0.0, gc_ms / 1000.0 / seconds))


def _management(spark: SparkSession) -> Any:
    """The driver JVM's ``java.lang.management.ManagementFactory`` (JMX); raises when the
    gateway is gone (imported here: this module loads before Spark is needed)."""
    from ..jvm import driver_jvm

    return driver_jvm(spark).java.lang.management.ManagementFactory


def _driver_gc_ms(spark: SparkSession) -> float | None:
    """Milliseconds the driver JVM's collectors have spent so far (JMX), None when the
    gateway cannot tell (a stopping context)."""
    try:
        beans = _management(spark).getGarbageCollectorMXBeans()
        return float(sum(max(0, b.getCollectionTime()) for b in beans))
    except Exception:
        return None


def _heap_text(spark: SparkSession) -> str:
    """`` (heap 3.9 of 4.0 GiB used)``, or nothing when the gateway cannot tell."""
    try:
        heap = _management(spark).getMemoryMXBean().getHeapMemoryUsage()
        return f" (heap {heap.getUsed() / 2**30:.1f} of {heap.getMax() / 2**30:.1f} GiB used)"
    except Exception:
        return ""


def _fmt(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.0f}s"


@contextmanager
def progress(spark: SparkSession, label: str,
             every: float | None = None) -> Iterator[ProgressReporter]:
    """Log a progress line every ``every`` seconds while the block runs (see the module doc)."""
    reporter = ProgressReporter(spark, label, EVERY_SECONDS if every is None else every)
    reporter.start()
    try:
        yield reporter
    finally:
        reporter.stop()
