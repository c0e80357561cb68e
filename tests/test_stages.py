"""The stage declarations (recemb_spark.stages.STAGES) and what derives from them: the
pipeline order, the CLI's commands, --resume's comparison, jobs/ and the docs' stage table."""
from pathlib import Path

from recemb_spark.cli import COMMANDS
from recemb_spark.config import load_config, valid_keys
from recemb_spark.runner.pipeline import enabled_stages
from recemb_spark.runner.runs import compared_parameters
from recemb_spark.stages import STAGES, stage_named, stages_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_docs_stage_table_is_the_declarations():
    text = (ROOT / "docs" / "stages.md").read_text()
    start, end = text.index("<!-- stages -->\n"), text.index("<!-- /stages -->")
    assert text[start + len("<!-- stages -->\n"):end] == stages_markdown(), (
        "docs/stages.md's stage table differs from recemb_spark/stages/__init__.py: paste "
        "python -c 'from recemb_spark.stages import stages_markdown as m; print(m())'")


def test_every_stage_is_a_command_and_declares_valid_config():
    sections = {key.split(".")[0] for key in valid_keys()}
    for stage in STAGES:
        assert COMMANDS[stage.name] == stage.doc
        assert set(stage.config) <= sections | set(valid_keys()), stage.name
        assert stage.when is None or stage.when in valid_keys(), stage.name
        assert callable(stage.load())  # its module has run(ctx)


def test_pipeline_order_and_switches_follow_the_declarations():
    default = [s.name for s in enabled_stages(load_config())]
    assert default == ["tables", "item2vec", "deepwalk", "als", "evaluate", "ann", "daily"]
    cfg = load_config(overrides=["export.enabled=true", "warehouse.retention_days=3",
                                 "als.enabled=false"])
    assert [s.name for s in enabled_stages(cfg)] == [
        "tables", "item2vec", "deepwalk", "evaluate", "ann", "daily", "export", "retention"]


def test_resume_compares_only_the_declared_sections_without_run_control_keys():
    params = load_config().to_dict()
    tables = compared_parameters(stage_named("tables"), params)
    assert "input.path" in tables and "evaluate.holdout_users" in tables
    assert not any(k.startswith(("item2vec.", "ann.", "report.", "catalog.")) for k in tables)
    # a single declared key: the blend's switch decides evaluate.protocol auto, its other
    # settings do not touch the tables
    assert [k for k in tables if k.startswith("blend.")] == ["blend.enabled"]
    assert "spark.driver_memory" not in tables and "spark.shuffle_partitions" in tables
    evaluate = compared_parameters(stage_named("evaluate"), params)
    assert "item2vec.max_iter" in evaluate and "walks.p" in evaluate


def test_jobs_entry_points_run_declared_stages():
    assert sorted(p.name for p in (ROOT / "jobs").glob("*.py")) == ["pipeline.py", "stage.py"]
    assert "STAGES" in (ROOT / "jobs" / "stage.py").read_text()
