"""The device config schema: strict, described, versioned, hashed; the example config directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from device_configs.content import config_document, config_hash, document_hash
from device_configs.device import SCHEMA_VERSION, DeviceConfig
from device_configs.hours import OpeningHours
from device_configs.loader import ConfigError, load_device_config, validate_document
from device_configs.migrations import MigrationError, migrate
from device_configs.repo import load_repo

EXAMPLES = Path(__file__).resolve().parents[1] / "device_configs" / "examples"


def models(root: type[BaseModel]) -> set[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    todo = [root]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for f in m.model_fields.values():
            stack: list[Any] = [f.annotation]
            while stack:
                t = stack.pop()
                if isinstance(t, type) and issubclass(t, BaseModel):
                    todo.append(t)
                stack.extend(getattr(t, "__args__", ()))
    return seen


def test_every_field_is_described_and_extra_keys_are_errors() -> None:
    for model in models(DeviceConfig):
        assert model.model_config.get("extra") == "forbid", model
        for name, f in model.model_fields.items():
            assert f.description, f"{model.__name__}.{name} has no description"


def test_unknown_key_is_an_error_with_its_path() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_document({"store": "s1", "device": "d1", "sync": {"heartbeat": 5}}, "x.toml")
    assert "sync.heartbeat: Extra inputs are not permitted" in str(exc.value)


def test_bounds_are_enforced() -> None:
    with pytest.raises(ValidationError):
        DeviceConfig.model_validate({"store": "s1", "device": "d1", "sync": {"heartbeat_s": 0}})


def test_v1_document_is_migrated_to_current() -> None:
    v1 = {"schema_version": 1, "store": "s1", "device": "d1", "sync": {"heartbeat_s": 5}}
    doc = migrate(v1)
    assert doc["schema_version"] == SCHEMA_VERSION == 2
    assert doc["opening_hours"] == {"timezone": "UTC", "always_open": True}
    assert v1["schema_version"] == 1  # the input is not modified
    cfg = validate_document(v1)
    assert cfg.schema_version == 2 and cfg.opening_hours.always_open and cfg.sync.heartbeat_s == 5
    # A document without schema_version predates the field: version 1.
    assert validate_document({"store": "s1", "device": "d1"}).schema_version == 2


def test_v1_is_refused_by_the_current_model_without_migration() -> None:
    with pytest.raises(ValidationError):
        DeviceConfig.model_validate({"schema_version": 1, "store": "s1", "device": "d1"})


def test_newer_schema_is_refused_with_a_clear_reason() -> None:
    with pytest.raises(MigrationError, match="newer than this software supports"):
        migrate({"schema_version": 3})
    with pytest.raises(ConfigError, match="schema_version"):
        validate_document({"schema_version": 99, "store": "s1", "device": "d1"})


def test_hash_is_of_the_validated_config() -> None:
    a = DeviceConfig.model_validate({"store": "s1", "device": "d1"})
    b = DeviceConfig.model_validate({"store": "s1", "device": "d1", "sync": {"heartbeat_s": 60}})  # default
    c = DeviceConfig.model_validate({"store": "s1", "device": "d1", "sync": {"heartbeat_s": 61}})
    assert config_hash(a) == config_hash(b) != config_hash(c)
    assert document_hash(config_document(a)) == config_hash(a)
    assert DeviceConfig.model_validate(config_document(a)) == a  # the pushed document round-trips


def test_opening_hours() -> None:
    from datetime import UTC, datetime

    h = OpeningHours(
        timezone="Europe/Paris",
        weekly={"mon": ["08:00-20:00"], "fri": ["22:00-02:00"]},
        closed_dates=["2025-03-10"],  # type: ignore[list-item]
        margin_min=0,
    )
    assert h.is_open(datetime(2025, 3, 3, 10, tzinfo=UTC))  # Monday 11:00 in Paris
    assert not h.is_open(datetime(2025, 3, 3, 19, 30, tzinfo=UTC))  # 20:30 in Paris
    assert h.is_open(datetime(2025, 3, 8, 0, 30, tzinfo=UTC))  # Saturday 01:30: Friday's night
    assert not h.is_open(datetime(2025, 3, 10, 10, tzinfo=UTC))  # a holiday Monday
    with pytest.raises(ValidationError):
        OpeningHours(timezone="Mars/Olympus", always_open=True)
    with pytest.raises(ValidationError):
        OpeningHours(weekly={"mon": ["8:00-20:00"]})
    with pytest.raises(ValidationError, match="always_open"):
        OpeningHours()


def test_examples_validate(tmp_path: Path) -> None:
    result = load_repo(EXAMPLES)
    assert result.errors == []
    assert sorted(result.configs) == [("s001", "door"), ("s001", "till"), ("s002", "door")]
    single = tmp_path / "d.toml"
    single.write_text('store = "s1"\ndevice = "d1"\nschema_version = 2\n')
    assert load_device_config(single).device == "d1"
