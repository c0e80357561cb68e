"""The ``recemb`` command line (also what every ``jobs/*.py`` spark-submit entry calls)."""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys

from . import __version__
from .config import Config, load_config
from .errors import ConfigError
from .failures import Context, classify
from .logs import close_log_file, default_log_file, setup_logging
from .stages import STAGES

log = logging.getLogger("recemb_spark.cli")

#: every command: ``run``, one per declared stage (``recemb_spark.stages.STAGES``), and the
#: commands that are not stages
COMMANDS = {
    "run": "run every enabled stage for one run date (the whole pipeline)",
    **{stage.name: stage.doc for stage in STAGES},
    "sample": "write the built-in synthetic data set as MovieLens files and Parquet (--out)",
    "similar": "the items most similar to one item, from the stored tables",
    "report": "one self-contained HTML page about a run date (needs the 'report' extra)",
    "lookup": "one item's neighbours read back from the current Redis version (with titles)",
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run-date", help="partition date YYYY-MM-DD (default: today, UTC)")
    common.add_argument("--input", help="ratings file or folder (default: built-in sample)")
    common.add_argument("--format", help="input format: auto, csv, dat, tsv, parquet, table")
    common.add_argument("--items", help="item metadata file (movies.csv, movies.dat, u.item, ...)")
    common.add_argument("--warehouse", help="warehouse root (default ./warehouse)")
    common.add_argument("--conf", action="append", default=[], metavar="FILE",
                        help="YAML file overriding conf/default.yaml (repeatable)")
    common.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one parameter (repeatable)")
    common.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    common.add_argument("--log-file", metavar="FILE",
                        help="the full log: our records with tracebacks, Spark's own output "
                             "(default: <warehouse>/_logs/<command>-<date>-<time>-<pid>.log)")
    parser = argparse.ArgumentParser(
        prog="recemb", description="Embedding tables for recommenders on Apache Spark.")
    parser.add_argument("--version", action="version", version=f"recemb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        if name == "run":
            p.add_argument("--resume", action="store_true",
                           help="skip the stages already done for this date with the same "
                                "parameters and outputs present (see _manifests/dt=<date>/)")
        if name == "sample":
            p.add_argument("--out", required=True, help="folder to write the sample into")
        if name in ("similar", "lookup"):
            p.add_argument("--model", default="item2vec", help="embedding model (item2vec, ...)")
            p.add_argument("--item", required=True, help="item id to query")
            p.add_argument("-k", type=int, default=10, help="neighbours to show")
    return parser


def parse_run_date(value: str | None, default_today: bool = True) -> str | None:
    if value is None:
        if not default_today:
            return None
        return dt.datetime.now(dt.timezone.utc).date().isoformat()
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise ConfigError(f"--run-date must be a date YYYY-MM-DD, got {value!r}") from None


def config_from_args(args: argparse.Namespace) -> Config:
    flags = {"input": "input.path", "format": "input.format", "items": "input.items",
             "warehouse": "warehouse.path"}
    overrides = [f"{key}={getattr(args, flag)}" for flag, key in flags.items()
                 if getattr(args, flag) is not None]
    return load_config(args.conf, overrides + args.set)


def main(argv: list[str] | None = None) -> int:
    """Run one command; return the process exit code (codes: errors.EXIT_CODES).

    The terminal shows our log lines and, on failure, exactly one line: the stage, the
    cause, what to change and where the full log is (:mod:`recemb_spark.failures`); stack
    traces (Python's, and Spark's own output) go to the log file (:mod:`recemb_spark.logs`).
    """
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.quiet else logging.INFO
    setup_logging(level)
    try:
        cfg = config_from_args(args)
        run_date = parse_run_date(args.run_date,
                                  default_today=args.command not in ("similar", "lookup"))
        if args.command == "report":
            from .report import require_matplotlib
            require_matplotlib()  # before Spark starts
    except ConfigError as exc:
        print(f"recemb: config error: {exc}", file=sys.stderr)
        return exc.exit_code
    log_file = args.log_file or default_log_file(cfg.warehouse.path, args.command, run_date)
    setup_logging(level, log_file)
    try:
        return _run(cfg, run_date, args, log_file)
    finally:
        close_log_file()


def _run(cfg: Config, run_date: str | None, args: argparse.Namespace, log_file: str) -> int:
    """Start Spark, run the command, turn any failure into its one line and exit code."""
    from .session import build_session  # imports pyspark; only once the config is valid

    spark = None
    try:
        options = None
        if cfg.catalog.enabled:
            from .io import catalog
            options = catalog.session_options(cfg.warehouse.path, cfg.catalog.database)
        spark = build_session(cfg.spark, f"recemb-{args.command}", options, log_file=log_file)
        if cfg.catalog.enabled:
            catalog.prepare(spark)
        _dispatch(spark, cfg, run_date, args)
        return 0
    except KeyboardInterrupt:
        log.error("interrupted", exc_info=True)
        print(f"recemb: {args.command} interrupted (log: {log_file})", file=sys.stderr)
        return 130
    except Exception as exc:
        log.error("%s failed", args.command, exc_info=exc)  # the log file only
        error = classify(exc, _failure_context(cfg, spark))
        print(f"recemb: {args.command} failed{_in_stage(exc, args.command)}: {error} "
              f"(exit {error.exit_code}; log: {log_file})", file=sys.stderr)
        return error.exit_code
    finally:
        if spark is not None:
            try:
                spark.stop()
            except Exception:  # a JVM that died (out of memory) cannot stop: nothing to do
                log.debug("spark.stop() failed", exc_info=True)


def _failure_context(cfg: Config, spark) -> Context:
    """What the failure classifier needs to know about this job."""
    master = cfg.spark.master or "local[*]"
    driver_memory = cfg.spark.driver_memory
    submitted = False
    try:
        from .session import started_by_spark_submit

        submitted = started_by_spark_submit()
        if spark is not None:  # what the running JVM was started with, when it says
            master = spark.sparkContext.master
            driver_memory = spark.sparkContext.getConf().get("spark.driver.memory",
                                                             driver_memory)
    except Exception:  # the JVM is gone
        pass
    return Context(warehouse=cfg.warehouse.path, input_path=cfg.input.path, master=master,
                   driver_memory=driver_memory, submitted=submitted,
                   redis=f"{cfg.export.host}:{cfg.export.port}")


def _in_stage(exc: BaseException, command: str) -> str:
    """`` in stage X`` when the error came out of a pipeline stage (runs.run_stages sets it)
    other than the one the command names (``recemb export`` fails "in" export anyway)."""
    stage = getattr(exc, "recemb_stage", None)
    return f" in stage {stage}" if stage and stage != command else ""


def _dispatch(spark, cfg: Config, run_date: str | None, args: argparse.Namespace) -> None:
    """Run ``args.command``; ``run_date`` is None only for ``similar`` / ``lookup`` (the
    latest date) — every other command defaults to today."""
    from .evaluation.scoring import format_metrics
    from .io import sample
    from .runner import pipeline

    if args.command == "sample":
        paths = sample.write_sample(spark, cfg.sample, args.out)
        for name, path in paths.items():
            print(f"{name}: {path}")
        return
    if args.command == "similar":
        from .io.warehouse import Warehouse
        from .neighbors.similar import format_similar, similar_items

        date, method, rows = similar_items(spark, Warehouse(spark, cfg.warehouse.path),
                                           args.model, args.item, args.k, run_date)
        print("\n".join(format_similar(rows[0], rows[1:],
                                        f"model {args.model}, dt={date}, {method}")))
        return
    if args.command == "lookup":
        from .io.warehouse import Warehouse
        from .neighbors.similar import Neighbor, format_similar, item_titles
        from .serving.lookup import lookup_neighbors
        from .serving.redis_store import RedisTarget

        target = RedisTarget.from_config(cfg.export)
        found, pairs = lookup_neighbors(target, cfg.export.prefix, args.model, args.item,
                                        args.k, run_date)
        date = found.meta.get("run_date", "")
        titles = item_titles(Warehouse(spark, cfg.warehouse.path), date,
                             [args.item] + [i for i, _ in pairs]) if date else {}
        print("\n".join(format_similar(
            Neighbor(0, args.item, 1.0, titles.get(args.item)),
            [Neighbor(r, i, s, titles.get(i)) for r, (i, s) in enumerate(pairs, 1)],
            f"model {args.model}, redis version {found.version}")))
        return
    assert run_date is not None  # only similar / lookup go without one
    if args.command == "report":
        from .report import write_report
        print(write_report(spark, cfg, run_date))
        return
    stages = None if args.command == "run" else [args.command]
    results = pipeline.run_pipeline(spark, cfg, run_date, stages=stages,
                                    resume=getattr(args, "resume", False))
    if "evaluate" in results:
        print(f"leave-last-out evaluation, run date {run_date} "
              f"({results['evaluate'].details['eligible_users']} users):")
        print(format_metrics(results["evaluate"].metrics, cfg.evaluate.ks))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
