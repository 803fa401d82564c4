"""Replay real pedestrian trajectories (Oxford Town Centre) as a simulated camera.

The hand-labelled body boxes of a 1920x1080 street camera give real walking behaviour: couples
side by side, overtaking, stopping, groups. Each person is drawn as a silhouette filling their
box (their own look, gait and shadow), on a plain street background, at any output size. True
crossings come from the same boxes: the anchor is the bottom centre of the body box.

The file starts with a blank line and a header, and the copy in shared data ends with an
incomplete row; both are skipped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from edge_agent.sim.footfall_scene import U8, Look, Perturb, Scene, Walker

SOURCE_W, SOURCE_H, SOURCE_FPS = 1920, 1080, 25.0
Box = tuple[float, float, float, float]  # left, top, right, bottom (source pixels)


def load_boxes(path: Path) -> dict[int, dict[int, Box]]:
    """person id -> frame -> body box; malformed and incomplete rows are skipped."""
    out: dict[int, dict[int, Box]] = defaultdict(dict)
    with path.open() as f:
        for raw in f:
            parts = raw.strip().split(",")
            if len(parts) != 12 or not parts[0].isdigit():
                continue  # blank line, header, or the truncated last row
            try:
                pid, frame, _hv, body_valid = (int(p) for p in parts[:4])
                left, top, right, bottom = (float(p) for p in parts[8:12])
            except ValueError:
                continue
            if body_valid and right > left and bottom > top:
                out[pid][frame] = (left, top, right, bottom)
    return dict(out)


def _path(frames: dict[int, Box], first: int, scale: float) -> Callable[[float], tuple[float, float] | None]:
    """Feet position at clip time t; None when the person is not labelled in that frame."""

    def at(t: float) -> tuple[float, float] | None:
        b = frames.get(first + round(t * SOURCE_FPS))
        if b is None:
            return None
        return (b[0] + b[2]) / 2 * scale, b[3] * scale

    return at


def _height(frames: dict[int, Box], first: int, scale: float) -> Callable[[float], float | None]:
    def at(t: float) -> float | None:
        b = frames.get(first + round(t * SOURCE_FPS))
        return None if b is None else (b[3] - b[1]) * scale

    return at


def street_background(width: int, height: int, seed: int) -> U8:
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = np.linspace(110, 150, height, dtype=np.float32)[:, None, None] * np.array([0.95, 1.0, 1.05])
    for k in range(14):  # paving joints, kerbs, shop fronts: texture to make subtraction honest
        y = int(height * k / 14)
        cv2.line(img, (0, y), (width, y + int(0.05 * height)), (95, 100, 105), 1)
    for _ in range(8):
        x = int(rng.integers(0, width))
        w = int(rng.integers(width // 20, width // 6))
        c = tuple(int(v) for v in rng.integers(50, 200, 3))
        cv2.rectangle(img, (x, 0), (x + w, int(height * rng.uniform(0.08, 0.2))), c, -1)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def oxford_scene(
    boxes: dict[int, dict[int, Box]], first: int, last: int, *, width: int = 640, seed: int = 0,
    line_y: float = 540.0, perturb: Perturb | None = None, name: str | None = None,
) -> Scene:
    """Frames [first, last) of the ground truth as a Scene; line across the full width at line_y."""
    scale = width / SOURCE_W
    height = round(SOURCE_H * scale)
    rng = np.random.default_rng(seed)
    walkers: list[Walker] = []
    heights: list[tuple[float, float]] = []
    for _pid, frames in sorted(boxes.items()):
        inside = {f: b for f, b in frames.items() if first <= f < last}
        if not inside:
            continue
        look = Look.random(rng)
        # Real boxes already include each person's size; the silhouette fills its box.
        look = Look(look.shirt, look.trousers, look.skin, 1.0, look.girth, look.stride_hz)
        # Only the clip's own frames: the warm-up before it stays empty (the camera has learned its
        # background), and nobody crosses the line in frames the truth does not cover.
        walkers.append(Walker(_path(inside, first, scale), look, _height(inside, first, scale)))
        for b in inside.values():
            heights.append((b[3] * scale, (b[3] - b[1]) * scale))
    # Person height versus feet row, fitted on the labelled boxes (the renderer's perspective).
    hs = np.array(heights) if heights else np.array([[0.0, 100.0], [1.0, 100.0]])
    slope, icpt = (float(v) for v in np.polyfit(hs[:, 0], hs[:, 1], 1))

    def height_at(y: float) -> float:
        return max(4.0, icpt + slope * y)

    sc = Scene(
        name or f"oxford_{first:04d}_{last:04d}", width, height, SOURCE_FPS, (last - first) / SOURCE_FPS,
        walkers, (0.0, line_y * scale, float(width), line_y * scale), "up", height_at,
        perturb or Perturb(), seed=seed,
    )
    sc.background = street_background(width, height, seed)
    return sc
