"""Crossings matched one to one: the simulator's per-walker truth, the counter's crossing place and
time, and the benchmark's matching (a miss and an extra in one video are two errors, not none)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from edge_agent.footfall.counter import Crossing, MotionCounter
from edge_agent.sim.footfall_scene import SceneCamera, Walker, _side, door_scene, waypoints
from tests.test_footfall_counter import H, W, config

REPO = Path(__file__).resolve().parents[1]


def _bench(name: str) -> ModuleType:
    """A script of bench/ as a module."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_truth_events_give_when_and_where_each_walker_crossed() -> None:
    sc = door_scene("single_in", width=W, height=H, seed=1)
    (ev,) = sc.truth_events()
    assert ev.direction == "in"
    # The event's time is the first frame the feet are past the line; the frame before was not.
    before = sc.walkers[0].path(ev.t - 1 / sc.fps - sc.warmup_s)
    after = sc.walkers[0].path(ev.t - sc.warmup_s)
    assert before is not None and after is not None
    assert _side(sc.line, "up", *before) < 0 < _side(sc.line, "up", *after)
    assert ev.x == pytest.approx((before[0] + after[0]) / 2)
    assert ev.y == pytest.approx(sc.line[1], abs=2.0)
    assert ev.h == pytest.approx(sc.height_at(ev.y) * sc.walkers[0].look.scale)
    assert ev.first_t == ev.t  # crossed once


def test_truth_events_leave_out_a_u_turn_and_agree_with_the_counts() -> None:
    assert door_scene("u_turn", width=W, height=H, seed=0).truth_events() == []
    # Feet that go in, back out and in again: one 'in', first crossed 1 s and last 3.5 s into the walk.
    sc = door_scene("single_in", width=W, height=H, seed=0)
    y = sc.line[1]
    zigzag = [(0.0, 150.0, y + 30), (2.0, 150.0, y - 30), (3.0, 150.0, y + 30), (4.0, 150.0, y - 30)]
    sc.walkers = [Walker(waypoints(zigzag), sc.walkers[0].look)]
    (ev,) = sc.truth_events()
    assert ev.direction == "in"
    assert ev.first_t == pytest.approx(sc.warmup_s + 1.0, abs=0.05)
    assert ev.t == pytest.approx(sc.warmup_s + 3.5, abs=0.05)
    sc = door_scene("busy", width=W, height=H, seed=0)
    ev = sc.truth_events()
    assert (sum(e.direction == "in" for e in ev), sum(e.direction == "out" for e in ev)) == sc.truth()


def test_a_counted_crossing_says_where_and_when_the_track_went_over_the_line() -> None:
    sc = door_scene("single_in", width=W, height=H, seed=1)
    (ev,) = sc.truth_events()
    counter = MotionCounter(config(sc))
    cam = SceneCamera(sc)
    cam.open()
    got: list[Crossing] = []
    while (f := cam.read()) is not None:
        got += counter.process(f)
    got += counter.flush()
    (c,) = got
    assert c.direction == "in"
    # The track leaves the dead band (0.12 person heights) just after the feet cross the line,
    # and is made final later, once it is half a person height past it.
    assert ev.t <= c.crossed_t <= ev.t + 1.0
    assert c.crossed_t < c.t
    assert abs(c.x - ev.x) < 0.3 * ev.h
    assert 0 < sc.line[1] - c.y < 0.3 * ev.h  # 'in' is up: a little above the line


def _c(direction: str, t: float, x: float, y: float = 100.0) -> Crossing:
    return Crossing("door", direction, t + 0.5, 1, x, y, t)  # type: ignore[arg-type]


def test_matching_pairs_crossings_one_to_one_and_never_lets_errors_cancel() -> None:
    match = _bench("footfall").match_events
    true = [[10.0, 100.0, 100.0, 50.0, "in", 10.0], [12.0, 300.0, 100.0, 50.0, "in", 12.0]]
    assert match(true, [_c("in", 10.2, 105.0), _c("in", 12.5, 290.0)]) == (2, 0, 0)
    # Totals right (2 in), but both counted at the first walker: one miss, one extra.
    assert match(true, [_c("in", 10.2, 105.0), _c("in", 10.4, 95.0)]) == (1, 1, 1)
    # The wrong way, too far along the line (0.6 heights = 30 px), too early or too late: no match.
    assert match(true[:1], [_c("out", 10.2, 100.0)]) == (0, 1, 1)
    assert match(true[:1], [_c("in", 10.2, 131.0)]) == (0, 1, 1)
    assert match(true[:1], [_c("in", 8.4, 100.0)]) == (0, 1, 1)
    assert match(true[:1], [_c("in", 13.1, 100.0)]) == (0, 1, 1)
    # Late is allowed further than early (someone lingering on the line leaves its dead band later).
    assert match(true[:1], [_c("in", 12.9, 100.0)]) == (1, 0, 0)
    assert match([], [_c("in", 1.0, 1.0)]) == (0, 0, 1)
    # Someone lingering on the line first crossed that way at 5 s: a track leaving the dead band
    # then is theirs.
    assert match([[10.0, 100.0, 100.0, 50.0, "in", 5.0]], [_c("in", 4.0, 100.0)]) == (1, 0, 0)
    assert match([[10.0, 100.0, 100.0, 50.0, "in", 5.0]], [_c("in", 3.4, 100.0)]) == (0, 1, 1)
    # A row without first_t (a hand-written sidecar): first and last crossing are one.
    assert match([[10.0, 100.0, 100.0, 50.0, "in"]], [_c("in", 8.4, 100.0)]) == (0, 1, 1)
    assert match([[10.0, 100.0, 100.0, 50.0, "in"]], [_c("in", 9.0, 100.0)]) == (1, 0, 0)


def test_benchmark_reports_matched_events_of_rendered_scenes(tmp_path: Path) -> None:
    render = _bench("render_footfall_scenes")
    for name in ("single_in", "u_turn"):
        sc = door_scene(name, width=W, height=H, seed=1)
        render.write(sc, tmp_path)
    side = json.loads((tmp_path / "single_in.json").read_text())
    assert [e[4] for e in side["events"]] == ["in"]
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "footfall.py"), str(tmp_path), "--set", "person_height=0.28"],
        capture_output=True, text=True, check=True,
    ).stdout
    tot = json.loads(out.strip().splitlines()[-1])
    assert (tot["event_videos"], tot["event_true"]) == (2, 1)
    assert (tot["event_matched"], tot["event_missed"], tot["event_extra"]) == (1, 0, 0)
    assert "events missed 0 extra 0" in out


def test_trace_shows_the_tracks_round_a_missed_crossing_and_an_extra_one(tmp_path: Path) -> None:
    assert _bench("footfall_trace").unmatched(
        [[10.0, 100.0, 100.0, 50.0, "in", 10.0], [12.0, 300.0, 100.0, 50.0, "in", 12.0]],
        [_c("in", 10.2, 105.0), _c("out", 12.5, 290.0)],
    ) == ([1], [1])
    sc = door_scene("single_in", width=W, height=H, seed=1)
    _bench("render_footfall_scenes").write(sc, tmp_path)
    side_path = tmp_path / "single_in.json"
    side = json.loads(side_path.read_text())
    (real,) = side["events"]
    # The sidecar's one walker is moved 5 s later: the counted crossing matches nobody (an extra)
    # and the moved walker's crossing is missed.
    side["events"] = [[real[0] + 5.0, *real[1:5], real[5] + 5.0]]
    side_path.write_text(json.dumps(side))
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "footfall_trace.py"), str(tmp_path / "single_in.mp4"),
         "--set", "person_height=0.28"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "1 true crossings, 1 counted, missed 1, extra 1" in out
    assert f"MISSED in at t={real[0] + 5.0:.2f}" in out
    extra = [ln for ln in out.splitlines() if ln.startswith("EXTRA in track")]
    assert len(extra) == 1
    track = extra[0].split()[3]
    assert f"  track {track}: " in out and "counted in@" in out


def test_trace_window_lists_the_tracks_of_a_video_without_per_walker_events(tmp_path: Path) -> None:
    sc = door_scene("single_in", width=W, height=H, seed=1)
    _bench("render_footfall_scenes").write(sc, tmp_path)
    side_path = tmp_path / "single_in.json"
    side = json.loads(side_path.read_text())
    (real,) = side["events"]
    del side["events"]  # as the CAVIAR sidecars: counts only
    side_path.write_text(json.dumps(side))
    cmd = [sys.executable, str(REPO / "bench" / "footfall_trace.py"), str(tmp_path / "single_in.mp4"),
           "--set", "person_height=0.28"]
    refused = subprocess.run(cmd, check=False, capture_output=True, text=True)
    assert refused.returncode != 0 and "use --window T0 T1" in refused.stderr
    t = real[0]
    out = subprocess.run([*cmd, "--window", str(t - 0.5), str(t + 0.5)],
                         capture_output=True, text=True, check=True).stdout
    first = out.splitlines()[0]
    assert first.startswith("single_in.mp4: counted in@")  # the walker's one crossing, with its track
    track = first.split("(track ")[1].rstrip(")")
    assert f"  track {track}: " in out
    # a window before anyone is in view lists no track
    empty = subprocess.run([*cmd, "--window", "0", "0.2"], capture_output=True, text=True, check=True).stdout
    assert "  track " not in empty


def test_sheet_draws_what_the_counter_saw_on_the_frames_asked_for(tmp_path: Path) -> None:
    sc = door_scene("single_in", width=W, height=H, seed=1)
    _bench("render_footfall_scenes").write(sc, tmp_path)
    video = tmp_path / "single_in.mp4"
    side = json.loads((tmp_path / "single_in.json").read_text())
    ((t, x, y, h, *_),) = side["events"]
    n = round(t * sc.fps)  # the frame the walker's feet went over the line
    img, lines = _bench("footfall_sheet").sheet(
        video, side, {"person_height": 0.28}, [0, n], cols=2, whole=True)
    assert img.shape == (H, 2 * W, 3)
    assert lines[0] == "frame 0 t=0.00 mask 0 px, 0 found, tracks -"
    head, tracks = lines[1].split(", tracks ")
    assert head.startswith(f"frame {n} t={n / sc.fps:.2f} mask ") and head.endswith(", 1 found")
    ((_, pos),) = [tr.split("@") for tr in tracks.split()]  # one track, on the walker
    tx, ty = (float(v) for v in pos.strip("()").split(","))
    assert math.hypot(tx - x, ty - y) < 0.6 * h
    # The mask is tinted red on the frame itself: every tinted pixel is a mask pixel (at this size
    # the working image is the frame), and only the drawn line, dots and label cover a few of them.
    cap = cv2.VideoCapture(str(video))
    raw = [cap.read()[1] for _ in range(n + 1)]
    mask_px = int(head.split(" mask ")[1].split(" px")[0])
    for k, frame in ((0, raw[0]), (1, raw[n])):
        tile = img[:, k * W:(k + 1) * W].astype(np.int16)
        tint = (0.5 * frame + (0, 0, 127)).astype(np.uint8).astype(np.int16)
        tinted = int(np.count_nonzero((tile == tint).all(axis=2) & (tile != frame).any(axis=2)))
        if k == 0:
            assert tinted == 0
        else:
            assert 0.9 * mask_px <= tinted <= mask_px
    # From the command line: the sheet is written, and a frame past the end is refused.
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "footfall_sheet.py"), str(video), "--frames", f"0,{n}",
         "--set", "person_height=0.28", "--out", str(tmp_path / "s.png")],
        capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[:2] == lines  # the same counts, whatever the tiles show
    assert cv2.imread(str(tmp_path / "s.png")) is not None
    bad = subprocess.run(
        [sys.executable, str(REPO / "bench" / "footfall_sheet.py"), str(video), "--frames", "100000",
         "--out", str(tmp_path / "t.png")], capture_output=True, text=True, check=False)
    assert bad.returncode != 0 and "has no frame 100000" in bad.stderr
    assert not (tmp_path / "t.png").exists()
