"""The Oxford Town Centre replay reads the real (truncated) ground truth file correctly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_agent.sim.footfall_scene import SceneCamera
from edge_agent.sim.oxford import load_boxes, oxford_scene

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TOP = DATA / "footfall" / "oxford_towncentre" / "TownCentre-groundtruth.top"


@pytest.fixture
def top() -> Path:
    if not TOP.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{TOP} missing in CI")
        pytest.skip(f"shared data not present ({TOP}); see ../shared/data/README.md")
    return TOP


@pytest.mark.data
def test_oxford_boxes_skip_header_and_truncated_row(top: Path) -> None:
    boxes = load_boxes(top)
    frames = {f for fr in boxes.values() for f in fr}
    assert (min(frames), max(frames)) == (0, 3089)  # frame 3090's only row is incomplete
    assert boxes[0][0] == (235.925, 770.142, 371.546, 1101.029)


@pytest.mark.data
def test_oxford_replay_truth_on_first_clip(top: Path) -> None:
    # The derived file lists exactly two downward crossings of y=700 in frames 0..125.
    sc = oxford_scene(load_boxes(top), 0, 126, width=1920, line_y=700)
    sc.warmup_s = 0.0
    assert sc.truth() == (0, 2)


@pytest.mark.data
def test_oxford_replay_shows_nobody_before_the_clip(top: Path) -> None:
    # Frames 750.. start in a crowd: the warm-up second before them is empty, as the truth (which
    # starts after it) assumes; a person walking over the line in it would be a crossing no truth has.
    sc = oxford_scene(load_boxes(top), 750, 900, width=640)
    cam = SceneCamera(sc)
    warmup = [k / sc.fps for k in range(round(sc.warmup_s * sc.fps))]
    assert [p for t in warmup for p in cam.people(t)] == []
    assert len(cam.people(sc.warmup_s)) >= 10  # the crowd is there from the clip's first frame


@pytest.mark.data
def test_real_oxford_line_folder_links_the_clip_with_the_labelled_truth(top: Path, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "bench" / "oxford_real_lines.py"
    subprocess.run([sys.executable, str(script), str(tmp_path), "--rows", "650:701:50"], check=True,
                   capture_output=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "real_y650.json", "real_y650.mp4", "real_y700.json", "real_y700.mp4"]
    clip = top.parent / "TownCentre_first126frames_1080p.mp4"
    assert (tmp_path / "real_y700.mp4").resolve() == clip.resolve()
    side = json.loads((tmp_path / "real_y700.json").read_text())
    assert (side["line"], side["in"], side["true_in"], side["true_out"]) == ([0, 700, 1920, 700], "up", 0, 2)
    # the derived file's two crossings of y=700: frames 21 and 87 (25 fps), both down
    assert [(round(e[0] * 25), e[4]) for e in side["events"]] == [(21, "out"), (87, "out")]
