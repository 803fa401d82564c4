"""Line flux: the area that crosses a line, per direction, whether or not bodies merge."""

from __future__ import annotations

import cv2
import numpy as np

from edge_agent.footfall.flux import FluxEvent, FluxLine
from edge_agent.footfall.geometry import Line

W, H = 160, 120
LINE_Y = 60


def textured(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    return rng.integers(40, 220, (h, w), dtype=np.uint8)


def run(bodies: list[tuple[int, int, int, list[int]]], frames: int) -> list[FluxEvent]:
    """bodies: (x, width, height, top row per frame); each a textured rectangle on a flat floor."""
    rng = np.random.default_rng(0)
    tex = [textured(rng, w, h) for _, w, h, _ in bodies]
    line = Line.from_points("door", 20, LINE_Y, 140, LINE_Y, direction="up")
    fl = FluxLine(line, (0, 0, W, H), margin=12)
    events: list[FluxEvent] = []
    for f in range(frames):
        grey = np.full((H, W), 128, np.uint8)
        mask = np.zeros((H, W), np.uint8)
        for (x, w, h, tops), t in zip(bodies, tex, strict=True):
            y = tops[f]
            y0, y1 = max(0, y), min(H, y + h)
            if y1 > y0:
                grey[y0:y1, x : x + w] = t[y0 - y : y1 - y]
                mask[y0:y1, x : x + w] = 255
        grey = np.asarray(cv2.GaussianBlur(grey, (3, 3), 0), np.uint8)
        events += fl.update(grey, mask, f / 25)
    return events + fl.flush()


def test_one_body_walking_in_sweeps_its_area() -> None:
    tops = [100 - 2 * f for f in range(60)]  # 2 px/frame upwards, starts below, ends above the line
    (ev,) = run([(60, 12, 30, tops)], 60)
    assert ev.neg < 0.1 * 12 * 30
    assert 0.7 * 12 * 30 < ev.pos < 1.3 * 12 * 30


def test_two_bodies_merged_side_by_side_sweep_twice_the_area() -> None:
    tops = [100 - 2 * f for f in range(60)]
    evs = run([(60, 12, 30, tops), (72, 12, 30, tops)], 60)  # touching: one blob
    assert len(evs) == 1
    assert 0.7 * 2 * 360 < evs[0].pos < 1.3 * 2 * 360


def test_stepping_over_and_back_nets_nothing() -> None:
    tops = [*range(70, 40, -2), *range(40, 72, 2)]  # the body rises over the line, then goes back
    evs = run([(60, 12, 30, tops)], len(tops))
    assert sum(e.pos for e in evs) < 0.3 * 360
    assert sum(e.neg for e in evs) < 0.3 * 360


def test_opposite_directions_at_different_places_stay_apart() -> None:
    up = [100 - 2 * f for f in range(60)]
    down = [-10 + 2 * f for f in range(60)]
    evs = run([(30, 12, 30, up), (110, 12, 30, down)], 60)
    ins = [e for e in evs if e.pos > 200]
    outs = [e for e in evs if e.neg > 200]
    assert len(ins) == 1 and len(outs) == 1 and ins[0] is not outs[0]
