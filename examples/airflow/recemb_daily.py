"""Airflow 3 DAG: one ``recemb run --resume`` per day, retried the way its exit codes ask.

One task per DAG run runs ``recemb run --resume --run-date <ds> --warehouse <warehouse>``
(plus ``--input`` and ``--set`` overrides from the run's params) and maps its exit code
(README, "Scheduled runs and the warehouse"; ``recemb_spark/errors.py``) to what Airflow does:

====  ==========================================  =====================================
exit  meaning                                     Airflow
====  ==========================================  =====================================
0     ok                                          success
2     configuration error                         failed at once, no retry
3     bad or missing input (or too many rejects)  failed at once, no retry
5     another run holds the run date's lock       retried later (``retries``/``retry_delay``)
1, 4  unexpected error / a stage input missing    retried; ``--resume`` skips finished stages
====  ==========================================  =====================================

Why a Python task and not a ``BashOperator``: the BashOperator raises one and the same
``AirflowException`` for every non-zero exit code, so "fail without retry for 2 and 3" cannot
be said with it; a task that raises ``AirflowFailException`` fails at once whatever retries
are left (and a retry policy is never consulted for it). The command runs from an argument
list (no shell quoting), its output goes to the task log line by line.

Settings (environment of the Airflow worker; the DAG file reads them when it is parsed):

- ``RECEMB_CMD``: the command, split like a shell would (default ``recemb``; e.g.
  ``/opt/recemb/venv/bin/python -m recemb_spark.cli`` when Airflow has its own virtualenv);
- ``RECEMB_WAREHOUSE``: the warehouse root (default ``./warehouse``), also a run param;
- ``RECEMB_RETRIES`` (default 3) and ``RECEMB_RETRY_DELAY_SECONDS`` (default 900);
- ``RECEMB_SCHEDULE`` (default ``@daily``) and ``RECEMB_START_DATE`` (default 2026-01-01).

Run params (``airflow dags trigger -c '{...}'`` / ``airflow dags test -c '{...}'``):
``warehouse``, ``input`` (empty: the built-in sample) and ``sets``, a list of
``SECTION.KEY=VALUE`` overrides passed as ``--set``.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import shlex
import subprocess
from collections import deque

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException

log = logging.getLogger(__name__)

#: exit codes that a retry cannot fix: the run fails at once
NO_RETRY = {2: "configuration error", 3: "bad or missing input"}
#: exit code of a run that found the date locked by another run: try again later
LOCKED = 5


def recemb_argv(command: str, run_date: str, warehouse: str, input_path: str | None,
                sets: list[str]) -> list[str]:
    """The argument list of one resumable run of ``run_date``."""
    argv = [*shlex.split(command), "run", "--resume", "--run-date", run_date,
            "--warehouse", warehouse]
    if input_path:
        argv += ["--input", input_path]
    for item in sets:
        argv += ["--set", item]
    return argv


def raise_for_exit(code: int, last_line: str) -> None:
    """Nothing for exit 0; AirflowFailException (no retry) for 2 and 3; AirflowException
    (retried while retries are left) for anything else, the lock (5) included."""
    if code == 0:
        return
    if code in NO_RETRY:
        raise AirflowFailException(f"exit code {code} ({NO_RETRY[code]}), not retried: "
                                   f"{last_line}")
    if code == LOCKED:
        raise AirflowException(f"exit code {code}: the run date is locked by another run, "
                               f"retrying later: {last_line}")
    raise AirflowException(f"exit code {code}, retrying with --resume: {last_line}")


with DAG(
    dag_id="recemb_daily",
    description="recemb run --resume for each day: tables, embeddings, neighbours, metrics",
    schedule=os.environ.get("RECEMB_SCHEDULE", "@daily"),
    start_date=dt.datetime.fromisoformat(os.environ.get("RECEMB_START_DATE", "2026-01-01")
                                         ).replace(tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,  # the lock would stop a second one anyway (exit 5)
    default_args={
        "retries": int(os.environ.get("RECEMB_RETRIES", "3")),
        "retry_delay": dt.timedelta(seconds=float(os.environ.get("RECEMB_RETRY_DELAY_SECONDS",
                                                                 "900"))),
    },
    params={
        "warehouse": Param(os.environ.get("RECEMB_WAREHOUSE", "warehouse"), type="string"),
        "input": Param("", type="string", description="ratings file or folder; empty: sample"),
        "sets": Param([], type="array", description="SECTION.KEY=VALUE overrides (--set)"),
    },
    tags=["recemb"],
):

    @task
    def recemb_run(ds: str | None = None, params: dict | None = None) -> None:
        """Run ``recemb run --resume`` for the logical date ``ds``; raise per its exit code."""
        assert ds is not None and params is not None  # filled in by Airflow
        argv = recemb_argv(os.environ.get("RECEMB_CMD", "recemb"), ds, params["warehouse"],
                           params["input"] or None, list(params["sets"]))
        log.info("running %s", shlex.join(argv))
        tail: deque[str] = deque(maxlen=1)
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace") as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                log.info("%s", line)
                if line.strip():
                    tail.append(line)
        log.info("recemb exited %d", proc.returncode)
        raise_for_exit(proc.returncode, tail[0] if tail else "")

    recemb_run()
