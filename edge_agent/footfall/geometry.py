"""Line geometry in working-resolution pixels: which side of a door line a point is on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from device_configs.footfall import Direction, LineConfig

_UNIT = {"up": (0.0, -1.0), "down": (0.0, 1.0), "left": (-1.0, 0.0), "right": (1.0, 0.0)}


@dataclass(frozen=True)
class Line:
    """A segment with a unit normal pointing to the 'in' side (where entering people go)."""

    id: str
    ax: float
    ay: float
    bx: float
    by: float
    nx: float
    ny: float

    @classmethod
    def from_config(cls, cfg: LineConfig, width: int, height: int) -> Line:
        ax, ay, bx, by = cfg.x1 * width, cfg.y1 * height, cfg.x2 * width, cfg.y2 * height
        return cls.from_points(cfg.id, ax, ay, bx, by, direction=cfg.in_direction)

    @classmethod
    def from_points(
        cls, id: str, ax: float, ay: float, bx: float, by: float, *, direction: Direction
    ) -> Line:
        dx, dy = bx - ax, by - ay
        length = float(np.hypot(dx, dy))
        nx, ny = -dy / length, dx / length
        ux, uy = _UNIT[direction]
        if nx * ux + ny * uy < 0:  # orient the normal so moving 'in' increases the signed distance
            nx, ny = -nx, -ny
        return cls(id, ax, ay, bx, by, nx, ny)

    @property
    def length(self) -> float:
        return float(np.hypot(self.bx - self.ax, self.by - self.ay))

    def signed_distance(self, x: float, y: float) -> float:
        """Positive on the 'in' side, in pixels."""
        return (x - self.ax) * self.nx + (y - self.ay) * self.ny

    def along(self, x: float, y: float) -> float:
        """Position of the foot of the perpendicular: 0 at the first endpoint, 1 at the second."""
        dx, dy = self.bx - self.ax, self.by - self.ay
        return ((x - self.ax) * dx + (y - self.ay) * dy) / (dx * dx + dy * dy)


def polygon_mask(points: list[tuple[float, float]], width: int, height: int) -> npt.NDArray[np.uint8]:
    import cv2

    mask = np.zeros((height, width), np.uint8)
    pts = np.array([[x * width, y * height] for x, y in points], np.int32)
    cv2.fillPoly(mask, [pts], 255)
    return mask
