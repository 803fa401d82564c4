"""A simulated camera that shows scripted QR codes, with the exact ground truth of what it shows.

A script is a list of ``Appearance``: a payload held up from ``start`` to ``end`` (media
seconds) at a position, size, angle and perspective, under blur, noise, glare and lighting.
Rendering is deterministic for a seed, so tests can assert exact scan events.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import segno

from edge_agent.camera.base import CameraError, Frame

U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Appearance:
    payload: str | bytes
    start: float  # seconds, inclusive
    end: float  # seconds, exclusive
    x: float = 0.5  # centre, fraction of frame width
    y: float = 0.5  # centre, fraction of frame height
    size: int = 160  # side of the symbol including its quiet zone, pixels
    angle: float = 0.0  # in-plane rotation, degrees
    perspective: float = 0.0  # 0..0.3: how far the far edge shrinks (code tilted away)
    blur: float = 0.0  # Gaussian sigma, pixels (defocus, motion)
    noise: float = 0.0  # sensor noise std, grey levels
    glare: float = 0.0  # 0..1: strength of a bright specular spot on the code
    light: float = 1.0  # brightness multiplier of the code (shadow < 1 < overexposed)
    invert: bool = False  # light-on-dark code (some app screens)
    error: str = "m"  # QR error-correction level: l, m, q, h

    def visible_at(self, t: float) -> bool:
        return self.start <= t < self.end


class SimulatedQrCamera:
    """A FrameSource playing a script at ``fps`` for ``duration`` seconds (default: script end + 1)."""

    def __init__(
        self,
        script: Sequence[Appearance],
        *,
        fps: float = 10.0,
        duration: float | None = None,
        width: int = 640,
        height: int = 480,
        seed: int = 0,
        name: str = "sim-qr",
        fail_at_frame: int | None = None,
    ) -> None:
        if fps <= 0:
            raise ValueError("fps must be > 0")
        self.script = tuple(script)
        self.fps = fps
        self.duration = (
            duration if duration is not None else max((a.end for a in self.script), default=0.0) + 1.0
        )
        self.width = width
        self.height = height
        self.seed = seed
        self.name = name
        self._fail_at = fail_at_frame
        self._index = 0
        self._open = False
        self._symbols = {i: _symbol(a) for i, a in enumerate(self.script)}
        self._background = _background(width, height, seed)

    @property
    def frame_count(self) -> int:
        return math.ceil(self.duration * self.fps - 1e-9)

    def frame_time(self, index: int) -> float:
        return index / self.fps

    def visible_frames(self, appearance: Appearance) -> list[int]:
        """Indices of the frames where ``appearance`` is on screen (ground truth for tests)."""
        return [i for i in range(self.frame_count) if appearance.visible_at(self.frame_time(i))]

    def expected_texts(self) -> list[str | bytes]:
        return [a.payload for a in self.script if self.visible_frames(a)]

    # -- FrameSource ---------------------------------------------------------------------
    def open(self) -> None:
        self._open = True

    def read(self) -> Frame | None:
        if not self._open:
            raise CameraError(f"{self.name} is not open")
        if self._fail_at is not None and self._index == self._fail_at:
            self._fail_at = None  # fail once, like a dropped stream, then recover
            raise CameraError(f"{self.name}: simulated stream drop")
        if self._index >= self.frame_count:
            return None
        frame = Frame(image=self.render(self._index), t=self.frame_time(self._index), index=self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        self._open = False

    # -- rendering -----------------------------------------------------------------------
    def render(self, index: int) -> U8:
        t = self.frame_time(index)
        rng = np.random.default_rng((self.seed, index))
        img = self._background.astype(np.float32)
        for i, a in enumerate(self.script):
            if a.visible_at(t):
                img = _draw(img, self._symbols[i], a, rng)
        out = np.clip(img, 0, 255).astype(np.uint8)
        return np.asarray(cv2.cvtColor(out, cv2.COLOR_GRAY2BGR), dtype=np.uint8)


def _symbol(a: Appearance) -> U8:
    """The code as a uint8 image, one pixel per module, quiet zone included (255 = light)."""
    qr = segno.make(a.payload, error=a.error, micro=False)
    modules = np.array([list(row) for row in qr.matrix], dtype=np.uint8)
    sym = np.where(modules > 0, 0, 255).astype(np.uint8)
    sym = np.pad(sym, 4, constant_values=255)
    return 255 - sym if a.invert else sym


def _background(width: int, height: int, seed: int) -> U8:
    # A smooth, slightly textured counter top: no accidental finder patterns.
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(70, 150, size=(max(2, height // 80), max(2, width // 80))).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.asarray(np.clip(smooth, 0, 255), dtype=np.uint8)


def _draw(
    img: npt.NDArray[np.float32], sym: U8, a: Appearance, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    h, w = img.shape
    s = float(a.size)
    cx, cy = a.x * w, a.y * h
    half = s / 2
    corners = np.array([[-half, -half], [half, -half], [half, half], [-half, half]], dtype=np.float32)
    # Perspective: the top edge recedes (shrinks), as when a phone is tilted back.
    corners[0, 0] *= 1 - a.perspective
    corners[1, 0] *= 1 - a.perspective
    rad = math.radians(a.angle)
    rot = np.array([[math.cos(rad), -math.sin(rad)], [math.sin(rad), math.cos(rad)]], dtype=np.float32)
    dst = corners @ rot.T + np.array([cx, cy], dtype=np.float32)
    n = sym.shape[0]
    src = np.array([[0, 0], [n, 0], [n, n], [0, n]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(src, dst)
    code = cv2.warpPerspective(sym.astype(np.float32), m, (w, h), flags=cv2.INTER_NEAREST)
    mask = cv2.warpPerspective(np.ones_like(sym, dtype=np.float32), m, (w, h), flags=cv2.INTER_NEAREST)
    code = code * a.light
    if a.glare > 0:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        gx, gy = cx + rng.uniform(-0.2, 0.2) * s, cy + rng.uniform(-0.2, 0.2) * s
        spot = np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * (0.25 * s) ** 2))
        code = code + a.glare * 200.0 * spot
    out = img * (1 - mask) + code * mask
    if a.blur > 0:
        out = cv2.GaussianBlur(out, (0, 0), a.blur)
    if a.noise > 0:
        out = out + np.asarray(rng.normal(0.0, a.noise, size=out.shape), dtype=np.float32)
    return np.asarray(out, dtype=np.float32)


def demo_script() -> list[Appearance]:
    """The ``qr_demo`` scenario: a product, a coupon and a member code, then the product again."""
    return [
        Appearance("https://shop.example/p/SKU-10042", 1.0, 4.0, x=0.4, size=180),
        Appearance("COUPON:SPRING-25", 6.0, 8.0, x=0.6, size=160, angle=12.0),
        Appearance("MEMBER:0012345678", 10.0, 12.0, size=170, perspective=0.1),
        Appearance("https://shop.example/p/SKU-10042", 15.0, 17.0, x=0.4, size=180, blur=0.8),
    ]
