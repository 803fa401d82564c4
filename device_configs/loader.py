"""Reading a device config file (TOML or JSON) into a validated DeviceConfig.

Documents of an older ``schema_version`` are migrated first (device_configs.migrations).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from device_configs.device import DeviceConfig
from device_configs.migrations import MigrationError, migrate


class ConfigError(Exception):
    """A config file that cannot be read or does not validate; the message lists every error."""


def read_document(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        doc = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be a table/object")
    return doc


def format_errors(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: {exc.error_count()} error(s)"]
    for e in exc.errors(include_url=False):
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def validate_document(doc: dict[str, Any], source: str = "config") -> DeviceConfig:
    """Migrate and validate one document; ConfigError lists every problem."""
    try:
        return DeviceConfig.model_validate(migrate(doc))
    except MigrationError as exc:
        raise ConfigError(f"{source}: schema_version: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(format_errors(source, exc)) from exc


def load_device_config(path: str | Path) -> DeviceConfig:
    p = Path(path)
    return validate_document(read_document(p), str(p))
