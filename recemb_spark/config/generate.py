"""The files generated from the declarations: ``conf/default.yaml`` and
``docs/configuration.md`` (``python -m recemb_spark.config --write``)."""
from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .sections import _SECTION_TYPES, settings

YAML_HEADER = """\
# recemb-spark defaults: every parameter, with what it does. Override with `--conf FILE.yaml`
# (same shape, any subset of keys) or `--set section.key=value`. Unknown keys are errors.
# GENERATED from recemb_spark/config/sections.py by `python -m recemb_spark.config --write`:
# edit the declarations there, not this file (docs/configuration.md lists the allowed values).
"""

_PLAIN = re.compile(r"[A-Za-z0-9_./\-]+")


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        plain = _PLAIN.fullmatch(value) and yaml.safe_load(value) == value
        return value if plain else json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no YAML form for {value!r}")  # pragma: no cover


def defaults_yaml() -> str:
    """The text of ``conf/default.yaml``: every section and key with its default and doc."""
    lines = [YAML_HEADER.rstrip("\n")]
    for name in _SECTION_TYPES:
        lines += ["", f"{name}:"]
        for s in settings(name):
            entry = f"  {s.name}: {_yaml_value(s.default)}"
            lines.append(f"{entry}{' ' * max(29 - len(entry), 2)}# {s.doc}")
    return "\n".join(lines) + "\n"


def _type_name(typ: Any) -> str:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        return f"{_type_name(args[0])} or null"
    if origin is list:
        return f"list of {_type_name(typing.get_args(typ)[0])}"
    if origin is dict:
        k, v = typing.get_args(typ)
        return f"map {_type_name(k)} → {_type_name(v)}"
    return typ.__name__


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def configuration_markdown() -> str:
    """The text of ``docs/configuration.md``: one table per section."""
    lines = [
        "# Configuration",
        "",
        "<!-- GENERATED from recemb_spark/config/sections.py by `python -m recemb_spark.config "
        "--write`; do not edit -->",
        "",
        "Every setting, declared once in `recemb_spark/config/sections.py` (type, default, allowed "
        "values, doc). Layers merge in order: these defaults, each `--conf FILE.yaml` (same "
        "shape as [`conf/default.yaml`](../conf/default.yaml), any subset of keys), each "
        "`--set section.key=value` (values parsed as YAML: `4.0`, `true`, `null`, `[10, 50]`). "
        "An unknown key, a wrong type or a value outside the allowed ones stops the command "
        "with exit code 2 and one line naming the key, before Spark starts. Keys marked "
        "*run control* steer how a run goes, not what it writes: `recemb run --resume` ignores "
        "a change of them.",
    ]
    for name, cls in _SECTION_TYPES.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        lines += ["", f"## {name}", "", doc, "",
                  "| key | type | default | allowed | what it does |",
                  "| --- | --- | --- | --- | --- |"]
        for s in settings(name):
            allowed = "; ".join(filter(None, [s.rule.describe(),
                                              "run control" if s.rule.run_control else ""]))
            lines.append(f"| `{s.key}` | {_type_name(s.type)} | `{_yaml_value(s.default)}` | "
                         f"{_cell(allowed)} | {_cell(s.doc)} |")
    return "\n".join(lines) + "\n"


#: the generated files, relative to the repository root, and their text
GENERATED = {"conf/default.yaml": defaults_yaml, "docs/configuration.md": configuration_markdown}


def main(argv: list[str] | None = None) -> int:
    """``python -m recemb_spark.config``: print the defaults as YAML; ``--write`` (re)writes
    the generated files of a source checkout; ``--check`` exits 1 when one differs."""
    parser = argparse.ArgumentParser(prog="python -m recemb_spark.config",
                                     description=main.__doc__)
    parser.add_argument("--write", action="store_true", help="write " + ", ".join(GENERATED))
    parser.add_argument("--check", action="store_true", help="exit 1 when a file differs")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2]),
                        help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        sys.stdout.write(defaults_yaml())
        return 0
    stale = []
    for rel, render in GENERATED.items():
        path = Path(args.root) / rel
        text = render()
        if not path.is_file() or path.read_text() != text:
            stale.append(rel)
            if args.write:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    verb = "wrote" if args.write else "differ from the declarations"
    for rel in stale:
        print(f"{rel}: {verb}", file=sys.stderr)
    return 1 if stale and not args.write else 0
