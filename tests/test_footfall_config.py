from __future__ import annotations

import pytest
from pydantic import ValidationError

from device_configs.footfall import DetectorConfig, FootfallConfig, LineConfig


def test_defaults_are_valid_and_every_field_is_described() -> None:
    cfg = FootfallConfig(camera="door-1")
    assert cfg.window_s == 60.0
    assert cfg.detector.kind == "none"
    for model in (FootfallConfig, LineConfig, DetectorConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_in_direction_along_the_line_is_rejected() -> None:
    with pytest.raises(ValidationError, match="runs along the line"):
        LineConfig(x1=0.1, y1=0.5, x2=0.9, y2=0.5, in_direction="left")


def test_unknown_keys_and_out_of_range_values_are_rejected() -> None:
    with pytest.raises(ValidationError):
        FootfallConfig(camera="c", window_seconds=60)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        LineConfig(x1=1.5, y1=0.5, x2=0.9, y2=0.5)


def test_onnx_detector_needs_a_model_path() -> None:
    with pytest.raises(ValidationError, match="model_path"):
        DetectorConfig(kind="onnx")
