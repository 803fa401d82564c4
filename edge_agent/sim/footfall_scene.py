"""A simulated door camera with exact footfall ground truth.

People are drawn as articulated silhouettes (head, torso, swinging arms and legs, a shadow) of
varying size, colour and gait on a fixed background, far to near so nearer people occlude those
behind. Their feet follow scripted paths (or real trajectories, see ``edge_agent.sim.oxford``), so
the true crossings of a line are computed from the same paths with the same anchor the counter
uses: the bottom centre of the body. Perturbations (lighting steps and drift, sensor noise, JPEG
compression, camera shake, dropped frames) are seeded, so every run renders the same video.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.camera.base import CameraError, Frame

U8 = npt.NDArray[np.uint8]
Waypoint = tuple[float, float, float]  # (t seconds, x, y) of the feet, in pixels


@dataclass(frozen=True)
class Look:
    shirt: tuple[int, int, int]
    trousers: tuple[int, int, int]
    skin: tuple[int, int, int]
    scale: float  # body height relative to the scene's average person at that row
    girth: float  # width/height of the body
    stride_hz: float  # steps per second
    # Something carried or pushed beside the body, which is not a person: ("bag" | "cart", colour,
    # side -1 / +1). Never drawn by Look.random (the benchmark renders stay as they were); training
    # scenes add it (bench/train_feet_points.py --carry).
    carry: tuple[str, tuple[int, int, int], int] | None = None

    @classmethod
    def random(cls, rng: np.random.Generator) -> Look:
        def colour() -> tuple[int, int, int]:
            # Mix of saturated, grey and dark clothes: dark-on-dark floor is the hard case.
            if rng.random() < 0.35:
                v = int(rng.integers(20, 90))
                return (v, v + int(rng.integers(-10, 10)), v)
            return tuple(int(c) for c in rng.integers(30, 230, 3))  # type: ignore[return-value]

        skin = [(60, 90, 140), (90, 130, 190), (120, 160, 210), (40, 60, 90)][int(rng.integers(0, 4))]
        return cls(colour(), colour(), skin, float(rng.uniform(0.88, 1.12)),
                   float(rng.uniform(0.33, 0.45)), float(rng.uniform(1.6, 2.2)))


@dataclass
class Walker:
    """One person: feet position over time (None when not in view) and a look."""

    path: Callable[[float], tuple[float, float] | None]
    look: Look
    # Body height in px at time t; None = the scene's average at that row times look.scale.
    height: Callable[[float], float | None] | None = None


def waypoints(points: Sequence[Waypoint]) -> Callable[[float], tuple[float, float] | None]:
    """Piecewise-linear path through (t, x, y); absent before the first and after the last point."""
    pts = sorted(points)

    def at(t: float) -> tuple[float, float] | None:
        if t < pts[0][0] or t > pts[-1][0]:
            return None
        for (t0, x0, y0), (t1, x1, y1) in itertools.pairwise(pts):
            if t0 <= t <= t1:
                a = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
                return x0 + a * (x1 - x0), y0 + a * (y1 - y0)
        return pts[-1][1], pts[-1][2]

    return at


@dataclass(frozen=True)
class Perturb:
    noise_sigma: float = 2.0
    jpeg_quality: int | None = None
    light_steps: tuple[tuple[float, float], ...] = ()  # (t, gain) from t on
    drift: float = 0.0  # amplitude of a slow sinusoidal gain drift (0.1 = +-10%)
    drift_period_s: float = 40.0
    jitter_px: float = 0.0
    drop_prob: float = 0.0


@dataclass
class Scene:
    """Everything needed to render a clip and to know its truth."""

    name: str
    width: int
    height: int
    fps: float
    duration_s: float
    walkers: list[Walker]
    line: tuple[float, float, float, float]  # pixels
    in_direction: str  # image direction meaning 'in'
    height_at: Callable[[float], float]  # average person height in px at feet row y
    perturb: Perturb = field(default_factory=Perturb)
    background: U8 | None = None
    seed: int = 0
    warmup_s: float = 1.0  # empty frames first, as a camera that has been running has learned its background

    def truth(self, line: tuple[float, float, float, float] | None = None, direction: str | None = None
              ) -> tuple[int, int]:
        """(in, out): net crossings of each walker's feet path through the line segment."""
        return true_counts(self, line or self.line, direction or self.in_direction)

    def body_height(self, w: Walker, t: float, feet_y: float) -> float:
        """How tall walker ``w`` is drawn at scene time ``t`` (camera time - warm-up), feet at ``feet_y``."""
        own = w.height(t) if w.height is not None else None
        return own if own is not None else self.height_at(feet_y) * w.look.scale

    def truth_events(self) -> list[TrueCrossing]:
        """Each walker's net crossing of the scene's line, with time and place (for event matching)."""
        return true_events(self, self.line, self.in_direction)


def _side(line: tuple[float, float, float, float], direction: str, x: float, y: float) -> float:
    x1, y1, x2, y2 = line
    nx, ny = -(y2 - y1), x2 - x1
    ux, uy = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}[direction]
    if nx * ux + ny * uy < 0:
        nx, ny = -nx, -ny
    return (x - x1) * nx + (y - y1) * ny


def _within(line: tuple[float, float, float, float], x: float, y: float) -> bool:
    x1, y1, x2, y2 = line
    dx, dy = x2 - x1, y2 - y1
    a = ((x - x1) * dx + (y - y1) * dy) / (dx * dx + dy * dy)
    return 0.0 <= a <= 1.0


@dataclass(frozen=True, slots=True)
class TrueCrossing:
    """One walker's net crossing of a line: when and where their feet last went through it that way."""

    t: float  # camera time of the frame just after the crossing
    x: float  # where the feet crossed (pixels)
    y: float
    h: float  # the walker's body height there (pixels): how far apart two people are, for matching
    direction: str  # "in" | "out"
    first_t: float  # their first crossing that way (earlier than ``t`` if they went back and forth)


def true_events(scene: Scene, line: tuple[float, float, float, float], direction: str) -> list[TrueCrossing]:
    """Net crossings per walker: the sum of signed crossings through the segment, clipped to +-1.

    Sampled at the frame times the camera sees, so the truth and the video agree exactly. A walker
    who crosses and comes back nets zero and has no event; the event of one who nets a crossing is
    their last crossing in that direction (and when they first crossed that way: someone lingering
    on the line goes back and forth over it).
    """
    out: list[TrueCrossing] = []
    times = [scene.warmup_s + i / scene.fps for i in range(int(scene.duration_s * scene.fps))]
    for w in scene.walkers:
        net = 0
        prev: tuple[float, float, float] | None = None
        last: dict[int, tuple[float, float, float]] = {}
        first: dict[int, float] = {}
        for t in times:
            p = w.path(t - scene.warmup_s)
            if p is None:
                continue
            s = _side(line, direction, *p)
            if prev is not None and (prev[2] > 0) != (s > 0):
                mx, my = (prev[0] + p[0]) / 2, (prev[1] + p[1]) / 2
                if _within(line, mx, my):
                    sign = 1 if s > 0 else -1
                    net += sign
                    last[sign] = (t, mx, my)
                    first.setdefault(sign, t)
            prev = (p[0], p[1], s)
        if net:
            sign = 1 if net > 0 else -1
            t, x, y = last[sign]
            h = scene.body_height(w, t - scene.warmup_s, y)
            out.append(TrueCrossing(t, x, y, h, "in" if sign > 0 else "out", first[sign]))
    return out


def true_counts(scene: Scene, line: tuple[float, float, float, float], direction: str) -> tuple[int, int]:
    """(in, out): how many walkers net a crossing each way (see ``true_events``)."""
    ev = true_events(scene, line, direction)
    return sum(e.direction == "in" for e in ev), sum(e.direction == "out" for e in ev)


def draw_person(img: U8, x: float, y: float, h: float, *, look: Look, phase: float) -> None:
    """Feet at (x, y), body height h: shadow first, then legs, torso, arms, head."""
    w = h * look.girth
    swing = math.sin(phase)
    # Shadow: the floor darkened by the same factor in every channel, offset to one side.
    sx0, sx1 = int(x - 0.1 * h), int(x + 0.6 * h)
    sy0, sy1 = int(y - 0.06 * h), int(y + 0.07 * h)
    H, W = img.shape[:2]
    if sx1 > 0 and sy1 > 0 and sx0 < W and sy0 < H:
        m = np.zeros((max(1, sy1 - sy0), max(1, sx1 - sx0)), np.float32)
        cv2.ellipse(m, ((m.shape[1] / 2, m.shape[0] / 2), (m.shape[1], m.shape[0]), 0), 0.35, -1)
        ox0, oy0 = max(0, sx0), max(0, sy0)
        ox1, oy1 = min(W, sx1), min(H, sy1)
        sub = m[oy0 - sy0 : oy1 - sy0, ox0 - sx0 : ox1 - sx0]
        roi = img[oy0:oy1, ox0:ox1].astype(np.float32)
        img[oy0:oy1, ox0:ox1] = (roi * (1 - sub[..., None])).astype(np.uint8)
    hip_y = y - 0.48 * h
    leg_t = max(1, int(0.16 * h))
    for sgn in (-1, 1):
        fx = x + sgn * 0.05 * h + 0.14 * h * swing * sgn
        cv2.line(img, (int(x + sgn * 0.06 * h), int(hip_y)), (int(fx), int(y - leg_t / 2)),
                 look.trousers, leg_t, cv2.LINE_AA)
    torso = np.array([[x - w / 2, y - 0.80 * h], [x + w / 2, y - 0.80 * h],
                      [x + w * 0.42, hip_y], [x - w * 0.42, hip_y]], np.int32)
    cv2.fillConvexPoly(img, torso, look.shirt, cv2.LINE_AA)
    arm_t = max(1, int(0.08 * h))
    for sgn in (-1, 1):
        cv2.line(img, (int(x + sgn * w / 2), int(y - 0.78 * h)),
                 (int(x + sgn * w * 0.55 - 0.12 * h * swing * sgn), int(y - 0.45 * h)),
                 look.shirt, arm_t, cv2.LINE_AA)
    cv2.circle(img, (int(x), int(y - 0.9 * h)), max(1, int(0.1 * h)), look.skin, -1, cv2.LINE_AA)
    if look.carry is not None:
        _draw_carried(img, x, y, h, w=w, swing=swing, carry=look.carry)


def _draw_carried(img: U8, x: float, y: float, h: float, *, w: float, swing: float,
                  carry: tuple[str, tuple[int, int, int], int]) -> None:
    """A bag hanging from one hand, or a cart (trolley, pushchair, bicycle) on wheels beside the body."""
    kind, colour, side = carry
    if kind == "bag":
        x0 = x + side * (w / 2 + 0.01 * h) - 0.04 * h * swing * side
        x1 = x0 + side * 0.2 * h
        cv2.line(img, (int(x + side * w * 0.5), int(y - 0.5 * h)), (int((x0 + x1) / 2), int(y - 0.42 * h)),
                 colour, max(1, int(0.02 * h)), cv2.LINE_AA)
        cv2.rectangle(img, (int(min(x0, x1)), int(y - 0.42 * h)), (int(max(x0, x1)), int(y - 0.2 * h)),
                      colour, -1, cv2.LINE_AA)
        return
    x0 = x + side * (w / 2 + 0.04 * h)
    x1 = x0 + side * 0.5 * h
    lo, hi = int(min(x0, x1)), int(max(x0, x1))
    cv2.rectangle(img, (lo, int(y - 0.5 * h)), (hi, int(y - 0.14 * h)), colour, -1, cv2.LINE_AA)
    cv2.line(img, (int(x0), int(y - 0.5 * h)), (int(x + side * w * 0.4), int(y - 0.55 * h)),
             colour, max(1, int(0.03 * h)), cv2.LINE_AA)  # the handle in the walker's hand
    r = max(1, int(0.07 * h))
    for wx in (lo + r, hi - r):
        cv2.circle(img, (wx, int(y - r)), r, (30, 30, 30), -1, cv2.LINE_AA)


def door_background(width: int, height: int, line_y: float, seed: int) -> U8:
    """A shop entrance: bright interior above the door line, tiled mall floor below."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    ly = int(line_y)
    grad = np.linspace(0.8, 1.0, ly)[:, None, None]
    img[:ly] = (np.array([150, 170, 185]) * grad).astype(np.uint8)
    grad = np.linspace(1.0, 0.7, height - ly)[:, None, None]
    img[ly:] = (np.array([95, 100, 110]) * grad).astype(np.uint8)
    for i in range(0, width, max(8, width // 12)):  # floor tile joints, so the floor has texture
        cv2.line(img, (i, ly), (int(width / 2 + (i - width / 2) * 1.8), height), (70, 72, 80), 1)
    for _ in range(12):  # shelves and racks inside the shop
        x, y = int(rng.integers(0, width)), int(rng.integers(0, max(1, ly - 20)))
        c = tuple(int(v) for v in rng.integers(40, 220, 3))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(10, 60)), y + int(rng.integers(5, 30))), c, -1)
    cv2.rectangle(img, (0, 0), (int(width * 0.22), ly), (120, 120, 125), -1)  # walls beside the door
    cv2.rectangle(img, (int(width * 0.78), 0), (width, ly), (120, 120, 125), -1)
    tex = rng.normal(0, 4, img.shape)
    return np.clip(img + tex, 0, 255).astype(np.uint8)


class SceneCamera:
    """Renders a Scene frame by frame; implements FrameSource."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.name = scene.name
        self._i = 0
        self._rng = np.random.default_rng(scene.seed)
        self._open = False
        self._phases = [float(k) * 1.7 for k in range(len(scene.walkers))]

    def open(self) -> None:
        if self.scene.background is None:
            raise CameraError("scene has no background")
        self._open = True
        self._i = 0

    def close(self) -> None:
        self._open = False

    @property
    def n_frames(self) -> int:
        return int((self.scene.duration_s + self.scene.warmup_s) * self.scene.fps)

    def read(self) -> Frame | None:
        if not self._open:
            raise CameraError("not open")
        sc = self.scene
        while True:
            if self._i >= self.n_frames:
                return None
            i = self._i
            self._i += 1
            if sc.perturb.drop_prob and i > 0 and self._rng.random() < sc.perturb.drop_prob:
                continue  # the camera skipped this frame: the index gap shows it
            t = i / sc.fps
            return Frame(self.render(t), t, i)

    def people(self, t: float) -> list[tuple[int, float, float, float, float]]:
        """(walker index, feet x, feet y, body height, gait phase) of everyone in view at camera
        time ``t``, in the order they are drawn: far (small y) first, so nearer people occlude them."""
        sc = self.scene
        here: list[tuple[float, float, int]] = []
        for k, w in enumerate(sc.walkers):
            p = w.path(t - sc.warmup_s)
            if p is not None:
                here.append((p[1], p[0], k))
        out = []
        for y, x, k in sorted(here):
            w = sc.walkers[k]
            h = sc.body_height(w, t - sc.warmup_s, y)
            out.append((k, x, y, h, 2 * math.pi * w.look.stride_hz * t + self._phases[k]))
        return out

    def render(self, t: float) -> U8:
        sc = self.scene
        assert sc.background is not None
        img = sc.background.copy()
        for k, x, y, h, phase in self.people(t):
            draw_person(img, x, y, h, look=sc.walkers[k].look, phase=phase)
        return self._perturb(img, t)

    def _perturb(self, img: U8, t: float) -> U8:
        p = self.scene.perturb
        gain = 1.0
        for t0, g in p.light_steps:
            if t >= t0:
                gain = g
        gain *= 1.0 + p.drift * math.sin(2 * math.pi * t / p.drift_period_s)
        if p.jitter_px:
            dx, dy = self._rng.normal(0, p.jitter_px, 2)
            m = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
            size = (img.shape[1], img.shape[0])
            img = np.asarray(cv2.warpAffine(img, m, size, borderMode=cv2.BORDER_REPLICATE), np.uint8)
        out = img.astype(np.float32) * gain
        if p.noise_sigma:
            out += self._rng.normal(0, p.noise_sigma, img.shape).astype(np.float32)
        res: U8 = np.asarray(np.clip(out, 0, 255), np.uint8)
        if p.jpeg_quality:
            ok, buf = cv2.imencode(".jpg", res, [cv2.IMWRITE_JPEG_QUALITY, p.jpeg_quality])
            if ok:
                res = np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), np.uint8)
        return res


# --- scripted door scenarios -------------------------------------------------------------------

SCENARIOS = (
    "single_in", "single_out", "pair_in", "pair_out", "group_in", "crossing_paths", "u_turn",
    "linger", "passers_by", "busy",
)


def door_scene(  # noqa: PLR0915 - one branch per scenario reads better than a table of lambdas
    scenario: str, *, width: int = 640, height: int = 360, fps: float = 25.0, seed: int = 0,
               perturb: Perturb | None = None) -> Scene:
    """A door seen from the front and above; the line is the threshold, 'in' = walking up (away)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    rng = np.random.default_rng(seed)
    ly = 0.5 * height
    horizon = -0.9 * height

    def height_at(y: float) -> float:
        return 0.28 * height * (y - horizon) / (ly - horizon)

    line = (0.25 * width, ly, 0.75 * width, ly)
    W, H = width, height
    far, near = ly - 0.28 * H, ly + 0.42 * H  # inside the shop / out on the mall floor
    cx = 0.5 * W

    def j(s: float) -> float:  # small random offsets, for variety between seeds
        return float(rng.uniform(-s, s))

    v = 3.2  # seconds to walk from near to far
    walkers: list[Walker] = []

    def add(points: Sequence[Waypoint]) -> None:
        walkers.append(Walker(waypoints(points), Look.random(rng)))

    def walk_in(t0: float, x: float, dx: float = 0.0) -> None:
        add([(t0, x, near), (t0 + v, x + dx, far)])

    def walk_out(t0: float, x: float, dx: float = 0.0) -> None:
        add([(t0, x, far), (t0 + v, x + dx, near)])

    duration = 6.0
    if scenario == "single_in":
        walk_in(0.3, cx + j(40), j(30))
    elif scenario == "single_out":
        walk_out(0.3, cx + j(40), j(30))
    elif scenario in ("pair_in", "pair_out", "group_in"):
        n = 3 if scenario == "group_in" else 2
        gap = 0.17 * height_at(ly)  # shoulder to shoulder
        for k in range(n):
            x = cx + (k - (n - 1) / 2) * (0.4 * height_at(ly) + gap * 0.3) + j(3)
            t0 = 0.3 + j(0.1) + (0.25 if scenario == "group_in" and k == 1 else 0.0)
            (walk_out if scenario == "pair_out" else walk_in)(t0, x)
    elif scenario == "crossing_paths":
        walk_in(0.3, cx - 0.08 * W, 0.12 * W)
        walk_out(0.5, cx + 0.08 * W, -0.12 * W)
    elif scenario == "u_turn":
        # Steps a little over the threshold, turns round and leaves: nobody entered.
        x = cx + j(30)
        add([(0.3, x, near), (2.0, x, ly - 0.05 * H), (2.6, x + 10, ly - 0.05 * H), (4.3, x + 20, near)])
    elif scenario == "linger":
        # Stops on the door mat for three seconds, then goes in.
        x = cx + j(30)
        add([(0.3, x, near), (1.8, x, ly + 0.02 * H), (4.8, x + 6, ly - 0.01 * H), (6.5, x + 10, far)])
        duration = 7.5
    elif scenario == "passers_by":
        # Walking along the mall just below the threshold, both ways: nobody crosses.
        add([(0.2, -20.0, ly + 0.12 * H), (4.2, W + 20.0, ly + 0.16 * H)])
        add([(1.0, W + 20.0, ly + 0.24 * H), (5.0, -20.0, ly + 0.22 * H)])
    elif scenario == "busy":
        duration = 16.0
        for k in range(7):
            t0 = 0.3 + 1.9 * k + j(0.3)
            x = cx + j(0.18 * W)
            (walk_in if k % 2 == 0 else walk_out)(t0, x, j(40))
        walk_in(4.0, cx - 0.1 * W)
        walk_in(4.1, cx - 0.1 * W + 0.5 * height_at(ly))
        add([(2.0, -20.0, ly + 0.2 * H), (6.0, W + 20.0, ly + 0.22 * H)])
        add([(9.0, W + 20.0, ly + 0.15 * H), (13.0, -20.0, ly + 0.13 * H)])
    sc = Scene(scenario, width, height, fps, duration, walkers, line, "up", height_at,
               perturb or Perturb(), seed=seed)
    sc.background = door_background(width, height, ly, seed)
    return sc


HARD = Perturb(noise_sigma=4.0, jpeg_quality=60, light_steps=((3.0, 1.35),), drift=0.08, jitter_px=0.6,
               drop_prob=0.05)
