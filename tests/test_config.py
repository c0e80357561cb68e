import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from recemb_spark.cli import main, parse_run_date
from recemb_spark.config import (
    GENERATED,
    Config,
    defaults,
    defaults_yaml,
    load_config,
    settings,
    valid_keys,
)
from recemb_spark.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("rel", sorted(GENERATED))
def test_generated_files_equal_the_declarations(rel):
    # conf/default.yaml and docs/configuration.md are generated from
    # recemb_spark/config/sections.py: after changing a declaration, run
    # `python -m recemb_spark.config --write`
    assert (ROOT / rel).read_text() == GENERATED[rel](), (
        f"{rel} differs from the declarations: python -m recemb_spark.config --write")


def test_default_yaml_reads_back_as_the_declared_defaults():
    text = defaults_yaml()
    assert yaml.safe_load(text) == defaults()
    for line in text.splitlines():
        if re.match(r"^  \w+:", line):
            assert "  # " in line, f"key without a doc: {line.strip()}"
    assert set(defaults()) == {f.name for f in fields(Config)}
    assert len(valid_keys()) == len(settings()) == sum(len(v) for v in defaults().values())


def test_every_setting_has_a_doc_and_a_default_it_allows():
    from recemb_spark.config import check_value
    for s in settings():
        assert s.doc.strip(), s.key
        if s.key != "input.event_weights":  # {} is fine until input.event_col is set
            check_value(s, s.default)
    assert Config() == load_config()  # the dataclass defaults are the declared ones


@pytest.mark.parametrize("text, expected", [("false", "false"), ("true", "true"),
                                            ("auto", "auto"), ("'false'", "false")])
def test_input_header_accepts_yaml_booleans(tmp_path, text, expected):
    f = tmp_path / "h.yaml"
    f.write_text(f"input:\n  header: {text}\n")
    assert load_config([str(f)]).input.header == expected
    assert load_config(overrides=[f"input.header={text}"]).input.header == expected


def test_a_section_used_twice_has_its_own_defaults():
    cfg = load_config()
    assert (cfg.item2vec.window_size, cfg.deepwalk.window_size) == (10, 5)
    assert (cfg.item2vec.step_size, cfg.deepwalk.step_size) == (0.0, 0.1)
    with pytest.raises(ConfigError, match="'deepwalk.window_size' must be >= 1"):
        load_config(overrides=["deepwalk.window_size=0"])


def test_defaults_load_with_types():
    cfg = load_config()
    assert cfg.sequences.min_rating == 3.5
    assert cfg.sequences.min_length == 2
    assert cfg.input.max_reject_fraction == 0.01
    assert cfg.warehouse.path == "./warehouse"
    assert isinstance(cfg.evaluate.ks, list)


def test_set_overrides_parse_yaml_values():
    cfg = load_config(overrides=["sequences.min_rating=4", "evaluate.ks=[5, 20]",
                                 "input.items=null", "item2vec.enabled=false"])
    assert cfg.sequences.min_rating == 4.0 and isinstance(cfg.sequences.min_rating, float)
    assert cfg.evaluate.ks == [5, 20]
    assert cfg.input.items is None
    assert cfg.item2vec.enabled is False


def test_exponent_notation_without_a_dot_is_a_float(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-5 as a string; float keys accept it from --set and files
    f = tmp_path / "my.yaml"
    f.write_text("item2vec:\n  sample: 3e-5\n")
    assert load_config([str(f)]).item2vec.sample == 3e-5
    assert load_config(overrides=["item2vec.sample=1e-5"]).item2vec.sample == 1e-5
    assert load_config(overrides=["input.rating_max=1E+1"]).input.rating_max == 10.0


def test_conf_file_then_set(tmp_path):
    f = tmp_path / "my.yaml"
    f.write_text("sequences:\n  min_rating: 4.0\n  min_length: 3\n")
    cfg = load_config([str(f)], ["sequences.min_length=5"])
    assert (cfg.sequences.min_rating, cfg.sequences.min_length) == (4.0, 5)


@pytest.mark.parametrize("override, fragment", [
    ("sequences.min_ratin=4", "unknown config key 'sequences.min_ratin'"),
    ("nosuch.key=1", "unknown config section 'nosuch'"),
    ("sequences.min_length=two", "'sequences.min_length' must be of type int"),
    ("sequences.min_length=1e3", "'sequences.min_length' must be of type int"),
    ("item2vec.sample=1e-5x", "'item2vec.sample' must be of type float"),
    ("sequences.min_length=0", "'sequences.min_length' must be >= 1"),
    ("input.format=xls", "'input.format' must be one of"),
    ("sequences.min_rating=9", "'sequences.min_rating' must lie within the rating range"),
    ("evaluate.ks=10", "'evaluate.ks' must be a list"),
    ("evaluate.ks=[10, 0]", "'evaluate.ks' (item 0) must be >= 1"),
    ("evaluate.ks=[]", "'evaluate.ks' must not be empty"),
    ("evaluate.head_share=1", "'evaluate.head_share' must be within (0, 1), got 1.0"),
    ("export.prefix=a:b", "'export.prefix' must be non-empty without ':'"),
    ("input.event_weights={pv: 0}", "'input.event_weights' (value of 'pv') must be > 0"),
    ("novalue", "--set expects section.key=value"),
])
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert fragment in str(err.value)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["sequences.gap=1"])
    assert "sequences.min_rating" in str(err.value) and "sequences.session_gap_minutes" in str(
        err.value)


def test_bad_conf_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("sequences:\n  bogus: 1\n")
    with pytest.raises(ConfigError, match="unknown config key 'sequences.bogus'"):
        load_config([str(f)])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([str(tmp_path / "missing.yaml")])


def test_cli_config_error_exits_2_before_spark(capsys):
    assert main(["tables", "--set", "sequences.nope=1"]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and "sequences.nope" in err and "Traceback" not in err


def test_run_date():
    assert parse_run_date("2026-01-05") == "2026-01-05"
    with pytest.raises(ConfigError, match="--run-date"):
        parse_run_date("05/01/2026")
    assert main(["tables", "--run-date", "yesterday"]) == 2
