"""The omni-edge command line: check-config, stats and snapshot, as a technician runs them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from edge_agent.cli import main


def write_config(tmp_path: Path, **extra: object) -> Path:
    doc = {"store": "s1", "device": "d1", "state_dir": str(tmp_path / "state"), **extra}
    path = tmp_path / "device.json"
    path.write_text(json.dumps(doc))
    return path


def test_snapshot_draws_the_line_on_a_frame(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(
        tmp_path,
        cameras=[{"id": "door", "source": {"kind": "simulated", "scenario": "footfall_busy", "width": 320,
                                           "height": 240}}],
        footfall=[{"camera": "door", "lines": [{"x1": 0.1, "y1": 0.5, "x2": 0.9, "y2": 0.5}]}],
    )  # fmt: skip
    out = tmp_path / "door.png"
    assert main(["snapshot", "--config", str(cfg), "--out", str(out)]) == 0
    img = cv2.imread(str(out))
    assert img is not None and img.shape == (240, 320, 3)
    # The line is drawn in pure red across the middle row.
    row = img[120]
    red = (row[:, 2] > 200) & (row[:, 1] < 60) & (row[:, 0] < 60)
    assert red[40:280].mean() > 0.9


def test_snapshot_needs_a_footfall_camera(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    assert main(["snapshot", "--config", str(cfg), "--out", str(tmp_path / "x.png")]) == 2


def test_check_config_reports_the_field_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, sync={"batch_max_events": 0})
    assert main(["check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "sync.batch_max_events: Input should be greater than or equal to 1" in err


def test_stats_prints_the_backlog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    assert main(["stats", "--config", str(cfg)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["events"] == 0 and stats["next_seq"] == 1 and stats["evicted"] == {}
