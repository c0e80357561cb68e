"""Loading: declared defaults < ``--conf`` files < ``--set`` overrides, type-checked and
validated into a :class:`.sections.Config`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .sections import Config, config_from_dict, defaults, valid_keys


def load_config(conf_files: list[str] | None = None,
                overrides: list[str] | None = None) -> Config:
    """Build the validated :class:`Config`: declared defaults < ``conf_files`` < ``overrides``.

    ``overrides`` are ``section.key=value`` strings; values are parsed as YAML scalars or lists
    (``4.0``, ``true``, ``null``, ``[10, 50]``). Raises :class:`ConfigError` on any unknown key,
    wrong type, out-of-range value, unreadable file or malformed override.
    """
    data = defaults()
    for path in conf_files or []:
        _merge(data, _read_yaml_file(path), source=path)
    for item in overrides or []:
        key, value = _parse_override(item)
        _merge(data, _nest(key, value), source=f"--set {item}")
    return config_from_dict(data)


def _read_yaml_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return loaded


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects section.key=value, got '{item}'")
    key, raw = item.split("=", 1)
    key = key.strip()
    if key.count(".") != 1:
        raise ConfigError(f"--set key must be section.key, got '{key}'; "
                          f"valid keys: {', '.join(valid_keys())}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _nest(key: str, value: Any) -> dict[str, Any]:
    section_name, name = key.split(".", 1)
    return {section_name: {name: value}}


def _merge(base: dict[str, Any], extra: dict[str, Any], source: str) -> None:
    for section_name, values in extra.items():
        if section_name not in base:
            raise ConfigError(f"unknown config section '{section_name}' (from {source}); "
                              f"valid sections: {', '.join(sorted(base))}")
        if not isinstance(values, dict):
            raise ConfigError(f"config section '{section_name}' (from {source}) must be a "
                              "mapping")
        for key, value in values.items():
            if key not in base[section_name]:
                valid = ", ".join(f"{section_name}.{k}" for k in base[section_name])
                raise ConfigError(f"unknown config key '{section_name}.{key}' (from {source}); "
                                  f"valid keys: {valid}")
            base[section_name][key] = value
