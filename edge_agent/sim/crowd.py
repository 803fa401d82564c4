"""Synthetic street crowds: random walkers and groups under a random perspective.

Training material for the learned feet-point detector (``bench/train_feet_points.py``) that never
replays the Oxford Town Centre trajectories, so those stay a held-out test. People walk in groups of
one to three (side by side or one behind the other), overtake, cross paths and sometimes stop; every
walker's feet and body height are known at every frame, as in ``door_scene``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from edge_agent.sim.footfall_scene import HARD, Look, Perturb, Scene, Walker, waypoints
from edge_agent.sim.oxford import street_background


def street_crowd_scene(
    *, width: int = 640, height: int = 360, fps: float = 25.0, seed: int = 0, duration_s: float = 24.0,
    people_per_s: float | None = None, hard: bool | None = None,
) -> Scene:
    rng = np.random.default_rng(seed)
    line_y = float(rng.uniform(0.35, 0.65) * height)
    h_line = float(rng.uniform(0.11, 0.28) * height)  # person height at the line
    far = float(rng.uniform(0.45, 0.8))  # height at the top row relative to the line's

    def height_at(y: float) -> float:
        top = h_line * far
        return max(4.0, top + (h_line - top) * y / line_y)

    rate = people_per_s if people_per_s is not None else float(rng.uniform(0.5, 1.8))  # groups per second
    main_angle = float(rng.uniform(-0.6, 0.6))  # the street's walking axis, radians from vertical
    walkers: list[Walker] = []
    t = -2.0
    while t < duration_s:
        t += float(rng.exponential(1.0 / rate))
        n = int(rng.choice([1, 1, 1, 2, 2, 3]))
        down = rng.random() < 0.5
        angle = main_angle + float(rng.normal(0, 0.25)) + (math.pi if not down else 0.0)
        speed = float(rng.uniform(0.55, 1.05))  # body heights per second
        x0 = float(rng.uniform(-0.1, 1.1) * width)
        stop = rng.random() < 0.12
        side_by_side = rng.random() < 0.6
        for k in range(n):
            if side_by_side:
                off_x, lag = (k - (n - 1) / 2) * float(rng.uniform(0.3, 0.5)), float(rng.normal(0, 0.1))
            else:
                off_x, lag = float(rng.normal(0, 0.12)), k * float(rng.uniform(0.6, 1.2))
            walkers.append(_walker(rng, t0=t + lag, x0=x0, off_x=off_x, down=down, angle=angle, speed=speed,
                                   stop=stop, size=(width, height), height_at=height_at))
    scene = Scene(
        f"crowd_s{seed}", width, height, fps, duration_s, walkers, (0.0, line_y, float(width), line_y),
        "up", height_at, seed=seed,
        perturb=(HARD if (hard if hard is not None else rng.random() < 0.5) else Perturb()),
    )
    scene.background = street_background(width, height, seed)
    return scene


def _walker(
    rng: np.random.Generator, *, t0: float, x0: float, off_x: float, down: bool, angle: float,
    speed: float, stop: bool, size: tuple[int, int], height_at: Callable[[float], float],
) -> Walker:
    """Walk across the frame from the top or bottom edge, stepping with the local body height."""
    width, height = size
    y = -0.05 * height if down else 1.15 * height
    x = x0 + off_x * height_at(y)
    dx, dy = math.sin(angle), math.cos(angle)
    pts: list[tuple[float, float, float]] = []
    t = t0
    dt = 0.2
    stop_at = float(rng.uniform(0.3, 0.7)) * height if stop else None
    stopped = False
    wobble = float(rng.uniform(0.0, 0.15))
    while -0.2 * height <= y <= 1.3 * height and -0.3 * width <= x <= 1.3 * width:
        pts.append((t, x, y))
        if stop_at is not None and not stopped and abs(y - stop_at) < 0.05 * height:
            stopped = True
            t += float(rng.uniform(1.0, 4.0))
            pts.append((t, x, y))
        step = speed * height_at(y) * dt
        x += step * (dx + wobble * math.sin(t * 1.3))
        y += step * dy
        t += dt
    pts.append((t, x, y))
    look = Look.random(rng)
    return Walker(waypoints(pts), look)
